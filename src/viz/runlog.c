/* runlog.c: a training run's log.jsonl as numeric series (dinoc_runlog_*), and EMA smoothing
 * (dinoc_viz_ema) for the loss curves of `dinoc report`.
 * Tested by tests/cli_attn_report_test.sh (a synthetic log with malformed and repeated lines). */
#include "viz.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <string.h>

static dinoc_runlog_col *find_or_add(dinoc_runlog *log, const char *name, int epoch) {
    for (int i = 0; i < log->ncols; i++)
        if (log->cols[i].epoch == epoch && strcmp(log->cols[i].name, name) == 0) return &log->cols[i];
    if (log->ncols == log->cap) {
        int               cap = log->cap ? 2 * log->cap : 16;
        dinoc_runlog_col *nc  = realloc(log->cols, sizeof *nc * (size_t)cap);
        if (!nc) return NULL;
        log->cols = nc, log->cap = cap;
    }
    dinoc_runlog_col *c = &log->cols[log->ncols];
    memset(c, 0, sizeof *c);
    if (!(c->name = strdup(name))) return NULL;
    c->epoch = epoch;
    log->ncols++;
    return c;
}

static int push(dinoc_runlog_col *c, double x, double y) {
    if (c->n == c->cap) {
        int     cap = c->cap ? 2 * c->cap : 256;
        double *nx  = realloc(c->x, sizeof(double) * (size_t)cap);
        if (!nx) return -1;
        c->x       = nx;
        double *ny = realloc(c->y, sizeof(double) * (size_t)cap);
        if (!ny) return -1;
        c->y = ny, c->cap = cap;
    }
    c->x[c->n] = x, c->y[c->n] = y, c->n++;
    return 0;
}

/* Adds one parsed line. Returns 0, or -1 when out of memory. */
static int add_line(dinoc_runlog *log, const cJSON *o, long lineno) {
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(o, "step");
    const cJSON *ep   = cJSON_GetObjectItemCaseSensitive(o, "epoch");
    int          per_epoch = !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "loss"));
    /* where the point sits: step for per-step lines, epoch (else step) for the others, else the line */
    double x = (double)lineno;
    if (per_epoch && cJSON_IsNumber(ep)) x = ep->valuedouble;
    else if (cJSON_IsNumber(step)) x = step->valuedouble;
    for (const cJSON *it = o->child; it; it = it->next) {
        if (!cJSON_IsNumber(it) || !it->string || !strcmp(it->string, "step") || !strcmp(it->string, "epoch")) continue;
        dinoc_runlog_col *c = find_or_add(log, it->string, per_epoch);
        if (!c || push(c, x, it->valuedouble)) return -1;
    }
    return 0;
}

typedef struct {
    double x, y;
    int    i;
} pt;

static int cmp_pt(const void *a, const void *b) {
    const pt *p = a, *q = b;
    if (p->x != q->x) return p->x < q->x ? -1 : 1;
    return (p->i > q->i) - (p->i < q->i);
}

/* Sorts a series by x (stable) and keeps the last of each run of equal x. */
static int sort_dedupe(dinoc_runlog_col *c) {
    int sorted = 1;
    for (int i = 1; i < c->n && sorted; i++) sorted = c->x[i] > c->x[i - 1];
    if (sorted) return 0;
    pt *p = malloc(sizeof *p * (size_t)c->n);
    if (!p) return -1;
    for (int i = 0; i < c->n; i++) p[i].x = c->x[i], p[i].y = c->y[i], p[i].i = i;
    qsort(p, (size_t)c->n, sizeof *p, cmp_pt);
    int m = 0;
    for (int i = 0; i < c->n; i++) {
        if (m && c->x[m - 1] == p[i].x) m--; /* a later line for the same x replaces the earlier */
        c->x[m] = p[i].x, c->y[m] = p[i].y, m++;
    }
    c->n = m;
    free(p);
    return 0;
}

dinoc_status dinoc_runlog_load(dinoc_runlog *log, const char *path) {
    memset(log, 0, sizeof *log);
    FILE *f = fopen(path, "r");
    if (!f) return dinoc_fail(DINOC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char        *line = NULL;
    size_t       cap  = 0;
    ssize_t      len;
    long         lineno = 0;
    dinoc_status s      = DINOC_OK;
    while (!s && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ')) line[--len] = 0;
        if (len == 0) continue;
        log->lines++;
        const char *end = NULL;
        cJSON      *o   = cJSON_ParseWithLengthOpts(line, (size_t)len + 1, &end, 1);
        if (!cJSON_IsObject(o)) {
            log->bad++;
            if (!log->first_bad) log->first_bad = lineno;
        } else if (add_line(log, o, lineno)) {
            s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory at line %ld", path, lineno);
        }
        cJSON_Delete(o);
    }
    if (!s && ferror(f)) s = dinoc_fail(DINOC_ERR_IO, "%s: read error: %s", path, strerror(errno));
    free(line);
    fclose(f);
    for (int i = 0; !s && i < log->ncols; i++)
        if (sort_dedupe(&log->cols[i])) s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", path);
    if (s) dinoc_runlog_free(log);
    return s;
}

void dinoc_runlog_free(dinoc_runlog *log) {
    for (int i = 0; i < log->ncols; i++) {
        free(log->cols[i].name);
        free(log->cols[i].x);
        free(log->cols[i].y);
    }
    free(log->cols);
    memset(log, 0, sizeof *log);
}

const dinoc_runlog_col *dinoc_runlog_find(const dinoc_runlog *log, const char *name, int epoch) {
    for (int i = 0; i < log->ncols; i++)
        if (log->cols[i].epoch == epoch && strcmp(log->cols[i].name, name) == 0) return &log->cols[i];
    return NULL;
}

void dinoc_viz_ema(double *out, const double *y, int n, double span) {
    const double a = span > 1 ? 2.0 / (span + 1) : 1.0;
    double       m = 0, w = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(y[i])) {
            out[i] = NAN;
            continue;
        }
        m      = (1 - a) * m + a * y[i];
        w      = (1 - a) * w + a; /* 1 - (1 - a)^k: the weight the zero start still lacks */
        out[i] = m / w;
    }
}
