/* cmd_report.c: `dinoc report RUN`: RUN/report.md plus SVG charts from what a run folder holds.
 *
 * Reads RUN/log.jsonl (required; per-step lines with "loss", per-epoch monitor lines such as
 * {"epoch":0,"knn_top1":0.81}; malformed lines are skipped and counted), and when present
 * RUN/metrics.json (training summary with its "config"), RUN/knn.json and RUN/linear.json (from
 * `dinoc eval knn|linear --json`), RUN/config.json (the model) and RUN/attn*.png. Writes:
 *   loss.svg       raw loss (faint) and its EMA, with a dashed ln K line when out_dim K is known
 *   lr.svg         the learning rate
 *   <key>.svg      every other per-step number that varies (teacher_entropy, grad_norm, img_s...)
 *   accuracy.svg   per-epoch accuracies (top1, knn_top5, val_acc, ...); other per-epoch numbers
 *                  get epoch_<key>.svg
 *   report.md      headline results, training time and throughput, tables of every numeric
 *                  field found, the charts, the attention maps, notes (collapse, skipped lines).
 * Every file is written atomically. Exit 1 if RUN or its log is missing.
 * Tested by tests/cli_attn_report_test.sh. */
#include "cli.h"
#include "../src/viz/viz.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <string.h>

#define REPORT_MAX_CHARTS 16
#define REPORT_MAX_ATTN 16

static const char *k_colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

typedef struct {
    const char   *run;
    dinoc_strbuf  md;
    char          charts[REPORT_MAX_CHARTS][96]; /* files written, for the Curves section */
    int           ncharts;
    int           smooth; /* EMA span in steps; 0: auto */
} report;

/* ---- small formatting helpers ----------------------------------------------------------------- */

/* Accuracy-like keys: top1, knn_top5, test_top1, acc, val_acc, accuracy (not "accum"). */
static int is_accuracy(const char *key) {
    size_t n = strlen(key);
    for (const char *p = strstr(key, "top"); p; p = strstr(p + 1, "top"))
        if (isdigit((unsigned char)p[3])) return 1;
    return strstr(key, "accuracy") || (n >= 3 && !strcmp(key + n - 3, "acc"));
}

/* Accuracies in [0, 1] as percentages, integers without decimals, the rest with 6 digits. */
static void fmt_num(char *buf, size_t n, const char *key, double v) {
    if (is_accuracy(key) && v >= 0 && v <= 1) snprintf(buf, n, "%.2f%%", 100 * v);
    else if (v == floor(v) && fabs(v) < 1e15) snprintf(buf, n, "%.0f", v);
    else snprintf(buf, n, "%.6g", v);
}

/* Appends text for a Markdown table cell: '|' escaped, line breaks as spaces. */
static void md_cell(dinoc_strbuf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '|') dinoc_strbuf_printf(b, "\\|");
        else dinoc_strbuf_printf(b, "%c", *s == '\n' || *s == '\r' ? ' ' : *s);
    }
}

/* Rows "| key | value |" for every scalar of a JSON object, nested objects flattened with dots;
 * arrays printed compactly. skip names one top-level key left out (or NULL). */
static void md_json_rows(dinoc_strbuf *b, const cJSON *o, const char *prefix, const char *skip) {
    for (const cJSON *it = o ? o->child : NULL; it; it = it->next) {
        if (!it->string || (skip && !prefix[0] && !strcmp(it->string, skip))) continue;
        char key[256], val[128];
        snprintf(key, sizeof key, "%s%s%s", prefix, prefix[0] ? "." : "", it->string);
        if (cJSON_IsObject(it)) {
            md_json_rows(b, it, key, NULL);
            continue;
        }
        if (cJSON_IsNumber(it)) fmt_num(val, sizeof val, it->string, it->valuedouble);
        else if (cJSON_IsString(it)) snprintf(val, sizeof val, "%s", it->valuestring);
        else if (cJSON_IsBool(it)) snprintf(val, sizeof val, "%s", cJSON_IsTrue(it) ? "true" : "false");
        else {
            char *p = cJSON_PrintUnformatted(it);
            snprintf(val, sizeof val, "%s", p ? p : "?");
            if (p && strlen(p) >= sizeof val) strcpy(val + sizeof val - 4, "...");
            cJSON_free(p);
        }
        dinoc_strbuf_printf(b, "| ");
        md_cell(b, key);
        dinoc_strbuf_printf(b, " | ");
        md_cell(b, val);
        dinoc_strbuf_printf(b, " |\n");
    }
}

static void md_json_table(dinoc_strbuf *b, const char *level, const char *title, const char *file, const cJSON *o,
                          const char *skip) {
    if (!o) return;
    dinoc_strbuf_printf(b, "\n%s %s (`%s`)\n\n| field | value |\n|---|---|\n", level, title, file);
    md_json_rows(b, o, "", skip);
}

static double json_num(const cJSON *o, const char *key) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* RUN/name as JSON, or NULL: absent silently, malformed with a warning (also in the report). */
static cJSON *load_optional(report *r, const char *name, dinoc_strbuf *notes) {
    char *p = dinoc_path_join(r->run, name);
    cJSON *o = NULL;
    if (p && dinoc_file_exists(p) && dinoc_json_load(&o, p) != DINOC_OK) {
        fprintf(stderr, "dinoc report: warning: %s\n", dinoc_last_error());
        dinoc_strbuf_printf(notes, "- `%s` could not be read (%s); it was left out.\n", name, dinoc_last_error());
    }
    free(p);
    return o;
}

/* ---- charts ----------------------------------------------------------------------------------- */

/* Writes RUN/file; on success remembers it for the Curves section. */
static void chart(report *r, const char *file, const dinoc_svg_chart *c, const dinoc_svg_series *s, int n) {
    if (r->ncharts == REPORT_MAX_CHARTS) return;
    char        *p  = dinoc_path_join(r->run, file);
    dinoc_status st = p ? dinoc_svg_chart_write(p, c, s, n) : DINOC_ERR_NOMEM;
    if (st) fprintf(stderr, "dinoc report: warning: %s: %s\n", file, p ? dinoc_last_error() : "out of memory");
    else snprintf(r->charts[r->ncharts++], sizeof r->charts[0], "%s", file);
    free(p);
}

/* The EMA span: --smooth, else a 50th of the series (1 to 200 steps). */
static int ema_span(const report *r, int n) {
    if (r->smooth > 0) return r->smooth;
    return n / 50 < 1 ? 1 : n / 50 > 200 ? 200 : n / 50;
}

/* A per-step series: raw (faint) under its EMA when smooth, else one line. */
static void step_chart(report *r, const dinoc_runlog_col *col, const char *file, const char *title, int smooth,
                       int has_hline, double hline, const char *hline_label) {
    dinoc_svg_chart c = {.title = title, .xlabel = "step", .ylabel = col->name, .x_integer = 1,
                         .has_hline = has_hline, .hline = hline, .hline_label = hline_label};
    double         *sm = NULL;
    const int       span = ema_span(r, col->n);
    if (smooth && span > 1 && (sm = malloc(sizeof(double) * (size_t)col->n))) {
        dinoc_viz_ema(sm, col->y, col->n, span);
        char lab[64];
        snprintf(lab, sizeof lab, "EMA (span %d steps)", span);
        dinoc_svg_series s[2] = {{"raw", col->x, col->y, col->n, k_colors[0], 0.25, 1, 0},
                                 {lab, col->x, sm, col->n, k_colors[0], 1, 2, 0}};
        chart(r, file, &c, s, 2);
    } else {
        dinoc_svg_series s = {NULL, col->x, col->y, col->n, k_colors[0], 1, 1.5, col->n <= 30};
        chart(r, file, &c, &s, 1);
    }
    free(sm);
}

static int constant(const dinoc_runlog_col *c) {
    for (int i = 1; i < c->n; i++)
        if (c->y[i] != c->y[0]) return 0;
    return 1;
}

/* File names from JSON keys: letters, digits, '_' and '-' only. */
static void safe_name(char *dst, size_t n, const char *prefix, const char *key) {
    size_t k = (size_t)snprintf(dst, n, "%s", prefix);
    for (; *key && k + 5 < n; key++) dst[k++] = (isalnum((unsigned char)*key) || *key == '-') ? *key : '_';
    snprintf(dst + k, n - k, ".svg");
}

static void all_charts(report *r, const dinoc_runlog *log, double lnK, dinoc_strbuf *consts) {
    static const char *schedules[] = {"lr", "wd", "momentum", "teacher_temp", NULL};
    const dinoc_runlog_col *loss = dinoc_runlog_find(log, "loss", 0), *lr = dinoc_runlog_find(log, "lr", 0);
    char hl[64];
    snprintf(hl, sizeof hl, "ln K = %.3f (uniform output)", lnK);
    if (loss) step_chart(r, loss, "loss.svg", "training loss", 1, isfinite(lnK), lnK, hl);
    if (lr) step_chart(r, lr, "lr.svg", "learning rate", 0, 0, 0, NULL);
    for (int i = 0; i < log->ncols; i++) { /* every other varying per-step number */
        const dinoc_runlog_col *c = &log->cols[i];
        if (c->epoch || c == loss || c == lr) continue;
        if (constant(c)) {
            char v[64];
            fmt_num(v, sizeof v, c->name, c->y[0]);
            dinoc_strbuf_printf(consts, "%s`%s` = %s", consts->len ? ", " : "", c->name, v);
            continue;
        }
        int sched = 0;
        for (int k = 0; schedules[k]; k++) sched |= !strcmp(c->name, schedules[k]);
        char file[96], title[128];
        safe_name(file, sizeof file, "", c->name);
        if (!strcmp(file, "accuracy.svg")) safe_name(file, sizeof file, "step_", c->name); /* keep the epoch chart's name */
        snprintf(title, sizeof title, "%s per step", c->name);
        step_chart(r, c, file, title, !sched, 0, 0, NULL);
    }
    /* per-epoch numbers: accuracies together, the rest one chart each */
    dinoc_svg_series acc[8];
    int              nacc = 0;
    for (int i = 0; i < log->ncols; i++) {
        const dinoc_runlog_col *c = &log->cols[i];
        if (!c->epoch) continue;
        dinoc_svg_series s = {c->name, c->x, c->y, c->n, k_colors[nacc % 8], 1, 2, 1};
        if (is_accuracy(c->name) && nacc < 8) {
            acc[nacc++] = s;
        } else {
            char file[96], title[128];
            safe_name(file, sizeof file, "epoch_", c->name);
            snprintf(title, sizeof title, "%s per epoch", c->name);
            dinoc_svg_chart ch = {.title = title, .xlabel = "epoch", .ylabel = c->name, .x_integer = 1};
            s.color = k_colors[0];
            chart(r, file, &ch, &s, 1);
        }
    }
    dinoc_svg_chart ch = {.title = "evaluation per epoch", .xlabel = "epoch", .ylabel = "accuracy", .x_integer = 1};
    if (nacc) chart(r, "accuracy.svg", &ch, acc, nacc);
}

/* ---- the report ------------------------------------------------------------------------------- */

static void attn_images(report *r) {
    DIR *d = opendir(r->run);
    if (!d) return;
    char          *names[REPORT_MAX_ATTN];
    int            n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < REPORT_MAX_ATTN) {
        size_t len = strlen(de->d_name);
        if (!strncmp(de->d_name, "attn", 4) && len > 4 && !strcmp(de->d_name + len - 4, ".png") && !strchr(de->d_name, '>'))
            if ((names[n] = strdup(de->d_name))) n++;
    }
    closedir(d);
    for (int i = 0; i < n; i++) /* sorted by name */
        for (int j = i + 1; j < n; j++)
            if (strcmp(names[j], names[i]) < 0) { char *t = names[i]; names[i] = names[j]; names[j] = t; }
    if (n) dinoc_strbuf_printf(&r->md, "\n## Attention maps\n\nLast block, CLS token to patches: a row per image of "
                                       "[input, one map per head, mean of the heads] (`dinoc attn`).\n");
    for (int i = 0; i < n; i++) {
        dinoc_strbuf_printf(&r->md, "\n![%s](<%s>)\n", names[i], names[i]);
        free(names[i]);
    }
}

static void headline(report *r, const cJSON *metrics, const cJSON *knn, const cJSON *lin, const dinoc_runlog *log) {
    dinoc_strbuf *b = &r->md;
    char          v[64];
    dinoc_strbuf_printf(b, "\n## Results\n\n| | |\n|---|---|\n");
    const size_t empty = b->len;
    const char *knn_keys[] = {"top1", "top5"}, *knn_names[] = {"k-NN top-1", "k-NN top-5"};
    for (int i = 0; i < 2; i++) {
        double x = json_num(knn, knn_keys[i]), k = json_num(knn, "k"), T = json_num(knn, "T");
        if (!isfinite(x)) continue;
        fmt_num(v, sizeof v, "top1", x);
        dinoc_strbuf_printf(b, "| %s", knn_names[i]);
        if (isfinite(k)) dinoc_strbuf_printf(b, " (k = %g%s%g)", k, isfinite(T) ? ", T = " : "", isfinite(T) ? T : 0.0);
        dinoc_strbuf_printf(b, " | **%s** |\n", v);
    }
    double lt = json_num(lin, "test_top1");
    if (!isfinite(lt)) lt = json_num(lin, "top1");
    if (isfinite(lt)) fmt_num(v, sizeof v, "top1", lt), dinoc_strbuf_printf(b, "| linear probe top-1 | **%s** |\n", v);
    for (const cJSON *it = metrics ? metrics->child : NULL; it; it = it->next) /* e.g. test_top1, knn_top1 */
        if (cJSON_IsNumber(it) && it->string && is_accuracy(it->string)) {
            fmt_num(v, sizeof v, it->string, it->valuedouble);
            dinoc_strbuf_printf(b, "| `%s` at the end of training | **%s** |\n", it->string, v);
        }
    const dinoc_runlog_col *loss = dinoc_runlog_find(log, "loss", 0);
    double fl = json_num(metrics, "final_loss");
    if (!isfinite(fl) && loss && loss->n) fl = loss->y[loss->n - 1];
    if (isfinite(fl)) dinoc_strbuf_printf(b, "| final loss | %.4f |\n", fl);
    double secs = json_num(metrics, "seconds"), steps = json_num(metrics, "steps"), thr = json_num(metrics, "threads");
    double batch = json_num(cJSON_GetObjectItemCaseSensitive(metrics, "config"), "batch");
    if (!isfinite(steps) && loss && loss->n) steps = loss->x[loss->n - 1];
    if (isfinite(secs)) {
        long t = lround(secs);
        dinoc_strbuf_printf(b, "| training time | %ld:%02ld:%02ld (%.0f s)", t / 3600, t / 60 % 60, t % 60, secs);
        if (isfinite(thr)) dinoc_strbuf_printf(b, " on %.0f threads", thr);
        dinoc_strbuf_printf(b, " |\n");
    }
    if (isfinite(steps)) dinoc_strbuf_printf(b, "| steps | %.0f |\n", steps);
    double ips = json_num(metrics, "images_per_second");
    if (isfinite(ips))
        dinoc_strbuf_printf(b, "| throughput | %.1f img/s overall |\n", ips);
    else if (isfinite(secs) && secs > 0 && isfinite(steps) && isfinite(batch))
        dinoc_strbuf_printf(b, "| throughput | %.1f img/s overall (%.0f steps x batch %.0f / time) |\n", steps * batch / secs,
                            steps, batch);
    const dinoc_runlog_col *ims = dinoc_runlog_find(log, "img_s", 0);
    if (ims && ims->n) {
        double *t = malloc(sizeof(double) * (size_t)ims->n);
        if (t) {
            memcpy(t, ims->y, sizeof(double) * (size_t)ims->n);
            for (int i = 1; i < ims->n; i++) /* insertion sort is fine for a median of a log */
                for (int j = i; j > 0 && t[j] < t[j - 1]; j--) { double u = t[j]; t[j] = t[j - 1]; t[j - 1] = u; }
            dinoc_strbuf_printf(b, "| step throughput (median of `img_s`) | %.1f img/s |\n", t[ims->n / 2]);
            free(t);
        }
    }
    if (b->len == empty) dinoc_strbuf_printf(b, "| (no results found) | |\n");
}

/* The collapse note: DINO's loss is a cross-entropy over K = out_dim prototypes, so a student
 * output that became uniform gives exactly ln K whatever the teacher does. */
static void collapse_note(report *r, const dinoc_runlog *log, double lnK, dinoc_strbuf *notes) {
    if (!isfinite(lnK)) return;
    const dinoc_runlog_col *loss = dinoc_runlog_find(log, "loss", 0), *ent = dinoc_runlog_find(log, "teacher_entropy", 0);
    if (loss && loss->n) {
        double *sm = malloc(sizeof(double) * (size_t)loss->n);
        if (!sm) return;
        dinoc_viz_ema(sm, loss->y, loss->n, ema_span(r, loss->n));
        double f = sm[loss->n - 1];
        free(sm);
        if (fabs(f - lnK) <= 0.02 * lnK)
            dinoc_strbuf_printf(notes, "- **Possible collapse**: the final (smoothed) loss %.4f sits at ln K = %.4f "
                                       "(K = %.0f): a uniform student output gives exactly that.\n", f, lnK, exp(lnK));
        else
            dinoc_strbuf_printf(notes, "- The final (smoothed) loss %.4f is %.1f%% of ln K = %.4f (K = %.0f), the loss "
                                       "of a uniform (collapsed) output.\n", f, 100 * f / lnK, lnK, exp(lnK));
    }
    if (ent && ent->n) {
        double e = ent->y[ent->n - 1];
        dinoc_strbuf_printf(notes, "- Final teacher entropy %.4f nats (ln K = %.4f)%s\n", e, lnK,
                            e >= 0.98 * lnK ? ": near uniform, a sign of collapse." : ".");
    }
    /* the entropy of the batch-mean teacher distribution: ~0 when every image picks one output */
    const dinoc_runlog_col *be = dinoc_runlog_find(log, "batch_entropy", 0);
    if (be && be->n && be->y[be->n - 1] < 0.1 * lnK)
        dinoc_strbuf_printf(notes, "- **Possible collapse**: the final batch entropy %.4f nats is under 10%% of ln K: the "
                                   "teacher puts every image on few of its K outputs (collapse to one dimension).\n",
                            be->y[be->n - 1]);
}

int cmd_report(int argc, char **argv) {
    const char    *title = NULL;
    int            smooth = 0;
    const opt_spec opts[] = {
        {"title", 0, OPT_STR, &title, "report title (none: the run folder's name)"},
        {"smooth", 0, OPT_INT, &smooth, "EMA span in steps for noisy per-step curves (0: steps / 50, at most 200)"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc report RUN [options]\n\nwrites RUN/report.md and RUN/*.svg from RUN/log.jsonl, "
                      "metrics.json, knn.json, linear.json, config.json and attn*.png";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    report      r    = {.run = npos == 1 ? pos[0] : NULL, .smooth = smooth};
    free(pos);
    if (rc) return rc == 1 ? 0 : 2;
    if (!r.run || smooth < 0) {
        fprintf(stderr, "error: report needs exactly one RUN folder; --smooth >= 0 (see --help)\n");
        return 2;
    }
    if (!dinoc_is_dir(r.run)) {
        fprintf(stderr, "dinoc report: %s: no such run folder\n", r.run);
        return 1;
    }
    dinoc_runlog rl;
    char        *lp = dinoc_path_join(r.run, "log.jsonl");
    dinoc_status s  = lp ? dinoc_runlog_load(&rl, lp) : DINOC_ERR_NOMEM;
    if (s) fprintf(stderr, "dinoc report: %s (a training run folder holds log.jsonl)\n", lp ? dinoc_last_error() : "out of memory");
    free(lp);
    if (s) return 1;
    dinoc_strbuf notes = {0}, consts = {0};
    cJSON       *metrics = load_optional(&r, "metrics.json", &notes), *knn = load_optional(&r, "knn.json", &notes);
    cJSON       *lin = load_optional(&r, "linear.json", &notes), *model = load_optional(&r, "config.json", &notes);
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(metrics, "config");
    double       K   = json_num(cfg, "out_dim");
    double       lnK = isfinite(K) && K >= 2 ? log(K) : NAN;
    if (rl.bad) {
        fprintf(stderr, "dinoc report: warning: %ld of %ld lines of log.jsonl are not JSON objects (first: line %ld); skipped\n",
                rl.bad, rl.lines, rl.first_bad);
        dinoc_strbuf_printf(&notes, "- %ld of %ld lines of `log.jsonl` were malformed and skipped (first: line %ld).\n",
                            rl.bad, rl.lines, rl.first_bad);
    }
    if (!metrics) dinoc_strbuf_printf(&notes, "- No `metrics.json`: the run may still be going.\n");
    if (!rl.lines) dinoc_strbuf_printf(&notes, "- `log.jsonl` is empty.\n");

    char name[256]; /* the folder's last path component */
    snprintf(name, sizeof name, "%s", r.run);
    for (size_t k = strlen(name); k > 1 && name[k - 1] == '/';) name[--k] = 0;
    const char *base = strrchr(name, '/') && strrchr(name, '/')[1] ? strrchr(name, '/') + 1 : name;
    dinoc_strbuf_printf(&r.md, "# Run report: %s\n\nRun folder `%s`; `log.jsonl` holds %ld lines.\n", title ? title : base, r.run, rl.lines);
    md_json_table(&r.md, "##", "Training configuration", "metrics.json config", cfg, NULL);
    headline(&r, metrics, knn, lin, &rl);
    all_charts(&r, &rl, lnK, &consts);
    if (r.ncharts) dinoc_strbuf_printf(&r.md, "\n## Curves\n");
    for (int i = 0; i < r.ncharts; i++) dinoc_strbuf_printf(&r.md, "\n![%.*s](%s)\n", (int)strlen(r.charts[i]) - 4, r.charts[i], r.charts[i]);
    if (consts.len) dinoc_strbuf_printf(&r.md, "\nConstant over the run: %s.\n", consts.s);
    attn_images(&r);
    if (knn || lin || metrics || model) dinoc_strbuf_printf(&r.md, "\n## Details\n");
    md_json_table(&r.md, "###", "k-NN evaluation", "knn.json", knn, NULL);
    md_json_table(&r.md, "###", "Linear probe", "linear.json", lin, NULL);
    md_json_table(&r.md, "###", "Training summary", "metrics.json", metrics, "config");
    md_json_table(&r.md, "###", "Model", "config.json", model, NULL);
    collapse_note(&r, &rl, lnK, &notes);
    if (notes.len) dinoc_strbuf_printf(&r.md, "\n## Notes\n\n%s", notes.s);

    char *mp = dinoc_path_join(r.run, "report.md");
    if (!mp || r.md.oom || notes.oom || consts.oom) s = DINOC_ERR_NOMEM, fprintf(stderr, "dinoc report: out of memory\n");
    else if ((s = dinoc_write_file_atomic(mp, r.md.s, r.md.len))) cli_fail("report", s);
    else fprintf(stderr, "wrote %s and %d charts\n", mp, r.ncharts);
    free(mp);
    dinoc_strbuf_free(&r.md);
    dinoc_strbuf_free(&notes);
    dinoc_strbuf_free(&consts);
    cJSON_Delete(metrics), cJSON_Delete(knn), cJSON_Delete(lin), cJSON_Delete(model);
    dinoc_runlog_free(&rl);
    return s ? 1 : 0;
}
