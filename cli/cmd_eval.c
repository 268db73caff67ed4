/* cmd_eval.c: evaluation commands.
 *   dinoc eval knn    -m MODEL   weighted k-NN on frozen features (DINO's protocol)
 *   dinoc eval linear -m MODEL   linear probe on frozen features, lr chosen on held-out train rows
 *   dinoc eval classify -m RUN   accuracy of a classifier trained by `dinoc train supervised`
 *   dinoc eval segment -m MODEL  linear per-patch segmentation probe (mIoU; --data shapes:DIR or
 *                                fashion-mnist; src/eval/segment.c, tests/cli_dense_test.sh)
 * MODEL for knn and linear is anything dinoc_backbone_load accepts: a Hugging Face ViT folder, a
 * ResNet folder (config.json model_type "resnet", e.g. a `train dino --arch resnet_small` run), a
 * run folder. Data:
 * fashion-mnist (train split = bank / training rows, test split = evaluation) or a folder DIR with
 * DIR/train and DIR/test class subfolders. Results on stdout (--json: one object), progress on
 * stderr. Exit codes: 0 ok, 1 runtime error, 2 usage error. Tested by tests/cli_eval_test.sh. */
#include "cli.h"
#include "../src/eval/dense.h"
#include "../src/eval/eval.h"
#include "../src/internal.h"
#include "../src/train/supervised.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int eval_classify(int argc, char **argv) {
    const char    *model = NULL, *data = NULL, *data_dir = NULL;
    int            json = 0, threads = 0, batch = 256, train = 0;
    const opt_spec opts[] = {
        {"model", 'm', OPT_STR, &model, "run folder written by dinoc train supervised"},
        {"data", 'd', OPT_STR, &data, "fashion-mnist or an image folder (default: the run's)"},
        {"data-dir", 0, OPT_STR, &data_dir, "Fashion-MNIST IDX folder"},
        {"train-split", 0, OPT_FLAG, &train, "evaluate on the training split instead of the test split"},
        {"batch", 'b', OPT_INT, &batch, "images per forward"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"json", 0, OPT_FLAG, &json, "print one JSON object of metrics on stdout"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc eval classify --model RUN [options]";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    free(pos);
    if (rc) return rc == 1 ? 0 : 2;
    if (!model || npos || batch <= 0) {
        fprintf(stderr, "error: eval classify needs --model RUN (see --help)\n");
        return 2;
    }
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    double       top1;
    int64_t      n;
    double       t0 = cli_now();
    dinoc_status s  = dinoc_sup_eval(model, data, data_dir, train, batch, &top1, &n);
    if (s) return cli_fail("eval classify", s);
    if (json)
        printf("{\"top1\":%.5f,\"n\":%lld,\"split\":\"%s\",\"seconds\":%.2f}\n", top1, (long long)n,
               train ? "train" : "test", cli_now() - t0);
    else
        printf("top-1 %.2f%% on %lld %s images\n", 100 * top1, (long long)n, train ? "train" : "test");
    return 0;
}

/* ---- shared by knn and linear ------------------------------------------------------------------ */

#define MAX_LIST 32

typedef struct {
    const char  *cmd;                /* "eval knn", for messages */
    const char  *model, *data, *data_dir;
    int          batch, quiet;
    int          limit_train, limit_test;
    int          val;                /* > 0: score this many train images held out (no test split) */
    int          k_max;              /* knn: checked against the train rows before extracting */
    dinoc_feature_spec spec;
    /* results */
    dinoc_backbone bb;
    float       *xtr, *xte;
    int32_t     *ytr, *yte;
    int64_t      ntr, nte;
    int          dim, classes;
    double       feat_s;
} eval_run;

static dinoc_status open_split(dinoc_dataset **ds, const char *data, const char *data_dir, int train) {
    if (strcmp(data, "fashion-mnist") == 0) return dinoc_dataset_idx_open(ds, data_dir, train);
    char *sub = dinoc_path_join(data, train ? "train" : "test");
    if (!sub) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    /* evaluating on the rows the classifier was fit on would be meaningless: both must exist */
    dinoc_status s = dinoc_is_dir(sub) ? dinoc_dataset_folder_open(ds, sub)
                                       : dinoc_fail(DINOC_ERR_ARG, "%s: no such folder (an image folder for "
                                                                   "evaluation needs train/ and test/ class subfolders)",
                                                    sub);
    free(sub);
    return s;
}

static void on_progress(void *user, int64_t done, int64_t total) {
    cli_progress_update(user, (long)done, (long)total, done == total);
}

static dinoc_status extract(eval_run *r, const dinoc_dataset *ds, int64_t limit, const char *label, float **x,
                            int32_t **y, int64_t *n) {
    cli_progress p;
    cli_progress_start(&p, label);
    dinoc_status s = dinoc_backbone_features(&r->bb, ds, r->spec, r->batch, limit, x, y, &r->dim,
                                            r->quiet ? NULL : on_progress, &p);
    if (!s) *n = limit > 0 && limit < dinoc_dataset_size(ds) ? limit : dinoc_dataset_size(ds);
    return s;
}

/* --val N: N train rows (a draw fixed by VAL_SEED, whatever the data's order) become the scored
 * rows and leave the bank / the probe's training rows; the test split is not read. For choosing a
 * recipe without looking at the test set. */
#define VAL_SEED 0x76616cull
static dinoc_status split_val(eval_run *r) {
    const int64_t n = r->ntr, nv = r->val;
    int64_t      *perm = malloc(sizeof(int64_t) * (size_t)n);
    uint8_t      *is_val = calloc((size_t)n, 1);
    r->xte = malloc(sizeof(float) * (size_t)nv * r->dim), r->yte = malloc(sizeof(int32_t) * (size_t)nv);
    if (!perm || !is_val || !r->xte || !r->yte) {
        free(perm), free(is_val);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    }
    dinoc_rng g;
    dinoc_rng_seed(&g, VAL_SEED);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = 0; i < nv; i++) { /* partial Fisher-Yates: perm[0..nv) is the draw */
        int64_t j = i + (int64_t)(dinoc_rng_u64(&g) % (uint64_t)(n - i)), t = perm[i];
        perm[i] = perm[j], perm[j] = t, is_val[perm[i]] = 1;
    }
    int64_t q = 0, b = 0;
    for (int64_t i = 0; i < n; i++) { /* both keep the data's order */
        float *dst = is_val[i] ? r->xte + (size_t)q * r->dim : r->xtr + (size_t)b * r->dim;
        memmove(dst, r->xtr + (size_t)i * r->dim, sizeof(float) * r->dim);
        if (is_val[i]) r->yte[q++] = r->ytr[i];
        else r->ytr[b++] = r->ytr[i];
    }
    r->ntr = b, r->nte = q;
    free(perm), free(is_val);
    return DINOC_OK;
}

/* Loads the model, opens both splits and extracts their features. Returns an exit code. */
static int eval_prepare(eval_run *r) {
    dinoc_dataset *tr = NULL, *te = NULL;
    dinoc_status   s;
    double         t0 = cli_now();
    if ((s = dinoc_backbone_load(&r->bb, r->model, NULL)) || (s = open_split(&tr, r->data, r->data_dir, 1)) ||
        (!r->val && (s = open_split(&te, r->data, r->data_dir, 0))))
        goto done;
    r->classes = dinoc_dataset_num_classes(tr);
    if (r->classes < 2) {
        s = dinoc_fail(DINOC_ERR_ARG, "%s: needs labelled classes (found %d)", r->data, r->classes);
        goto done;
    }
    for (int k = 0; te && k < r->classes; k++)
        if (dinoc_dataset_num_classes(te) != r->classes ||
            strcmp(dinoc_dataset_class_name(tr, k), dinoc_dataset_class_name(te, k)) != 0) {
            s = dinoc_fail(DINOC_ERR_ARG, "%s: the train and test splits have different classes", r->data);
            goto done;
        }
    int64_t ntr = dinoc_dataset_size(tr);
    if (r->limit_train > 0 && r->limit_train < ntr) ntr = r->limit_train;
    if (r->val && r->val > ntr - 2) {
        s = dinoc_fail(DINOC_ERR_ARG, "--val %d must leave at least 2 of the %lld train rows", r->val, (long long)ntr);
        goto done;
    }
    if (r->k_max > ntr - r->val) {
        s = dinoc_fail(DINOC_ERR_ARG, "k = %d must be in 1..%lld (the train rows)", r->k_max, (long long)(ntr - r->val));
        goto done;
    }
    if ((s = extract(r, tr, r->limit_train, "train features", &r->xtr, &r->ytr, &r->ntr)) ||
        (r->val ? (s = split_val(r)) : (s = extract(r, te, r->limit_test, "test features", &r->xte, &r->yte, &r->nte))))
        goto done;
    r->feat_s = cli_now() - t0;
done:
    dinoc_dataset_free(tr);
    dinoc_dataset_free(te);
    return s ? cli_fail(r->cmd, s) : 0;
}

static void eval_release(eval_run *r) {
    dinoc_backbone_free(&r->bb);
    free(r->xtr), free(r->xte), free(r->ytr), free(r->yte);
}

/* "10,20,100" -> ints (each >= 1). Returns the count, or -1 on a malformed list. */
static int parse_ints(const char *s, int *out, int cap) {
    int n = 0;
    for (const char *p = s;; p++) {
        char *end;
        errno  = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > INT_MAX || n == cap || (*end && *end != ',')) return -1;
        out[n++] = (int)v;
        if (!*end) return n;
        p = end;
    }
}

/* "1e-3,0.01" -> doubles (each > 0). Returns the count, or -1. */
static int parse_doubles(const char *s, double *out, int cap) {
    int n = 0;
    for (const char *p = s;; p++) {
        char *end;
        errno    = 0;
        double v = strtod(p, &end);
        if (end == p || errno || !(v > 0) || !isfinite(v) || n == cap || (*end && *end != ',')) return -1;
        out[n++] = v;
        if (!*end) return n;
        p = end;
    }
}

/* Common option checks; returns 0 or 2 (usage error, message printed). */
static int check_common(const eval_run *r, int npos, const char *use) {
    if (!r->model || npos) {
        fprintf(stderr, "error: %s needs --model MODEL and no positional arguments\n%s\n", r->cmd, use);
        return 2;
    }
    if (r->batch < 1 || r->limit_train < 0 || r->limit_test < 0 || r->spec.n_last_blocks < 1 || r->val < 0) {
        fprintf(stderr, "error: --batch and --n-last-blocks must be >= 1, --limit-* and --val >= 0\n");
        return 2;
    }
    return 0;
}

/* ---- eval knn ------------------------------------------------------------------------------------- */

static int eval_knn(int argc, char **argv) {
    eval_run    r = {.cmd = "eval knn", .data = "fashion-mnist", .batch = 256, .spec = {1, 0}};
    const char *klist = "20";
    float       T = 0.07f;
    int         json = 0, threads = 0;
    const opt_spec opts[] = {
        {"model", 'm', OPT_STR, &r.model, "model folder (Hugging Face layout, or a training run)"},
        {"data", 'd', OPT_STR, &r.data, "fashion-mnist, or a folder with train/ and test/ class subfolders"},
        {"data-dir", 0, OPT_STR, &r.data_dir, "Fashion-MNIST IDX folder (default: Debian's)"},
        {"k", 'k', OPT_STR, &klist, "neighbours; a comma list (10,20,100,200) evaluates each"},
        {"temperature", 'T', OPT_FLOAT, &T, "vote weight exp(sim / T)"},
        {"n-last-blocks", 0, OPT_INT, &r.spec.n_last_blocks, "features: CLS of the last n blocks (normed; a ResNet: its pooled feature)"},
        {"avgpool", 0, OPT_FLAG, &r.spec.avgpool, "features: append the mean of the patch tokens (ViT only)"},
        {"batch", 'b', OPT_INT, &r.batch, "images per forward"},
        {"limit-train", 0, OPT_INT, &r.limit_train, "use only the first N train images (0: all)"},
        {"limit-test", 0, OPT_INT, &r.limit_test, "use only the first N test images (0: all)"},
        {"val", 0, OPT_INT, &r.val, "score N train images held out (a fixed draw) instead of the test split: for "
                                    "choosing a recipe without the test set (0: test split)"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"quiet", 'q', OPT_FLAG, &r.quiet, "no progress on stderr"},
        {"json", 0, OPT_FLAG, &json, "print one JSON object of metrics on stdout"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc eval knn --model MODEL [--data fashion-mnist|DIR] [options]";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    free(pos);
    if (rc) return rc == 1 ? 0 : 2;
    if ((rc = check_common(&r, npos, use))) return rc;
    int ks[MAX_LIST], nk = parse_ints(klist, ks, MAX_LIST);
    if (nk < 1) {
        fprintf(stderr, "error: bad --k '%s' (positive integers, comma separated, at most %d)\n", klist, MAX_LIST);
        return 2;
    }
    for (int i = 0; i < nk; i++) r.k_max = ks[i] > r.k_max ? ks[i] : r.k_max;
    if (!(T > 0) || !isfinite(T)) {
        fprintf(stderr, "error: --temperature must be > 0\n");
        return 2;
    }
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    double t0 = cli_now();
    if ((rc = eval_prepare(&r))) {
        eval_release(&r);
        return rc;
    }
    double       top1[MAX_LIST], top5[MAX_LIST], t1 = cli_now();
    dinoc_status s = dinoc_knn_eval(r.xtr, r.ytr, r.ntr, r.xte, r.yte, r.nte, r.dim, r.classes, ks, nk, T, top1, top5);
    double       knn_s = cli_now() - t1;
    if (s) {
        eval_release(&r);
        return cli_fail(r.cmd, s);
    }
    if (json) {
        printf("{");
        if (nk == 1) printf("\"top1\":%.6f,\"top5\":%.6f,\"k\":%d,", top1[0], top5[0], ks[0]);
        printf("\"results\":[");
        for (int i = 0; i < nk; i++)
            printf("%s{\"k\":%d,\"top1\":%.6f,\"top5\":%.6f}", i ? "," : "", ks[i], top1[i], top5[i]);
        printf("],\"T\":%g,\"split\":\"%s\",\"n_train\":%lld,\"n_test\":%lld,\"dim\":%d,\"classes\":%d,"
               "\"features_seconds\":%.2f,\"knn_seconds\":%.2f,\"seconds\":%.2f}\n",
               T, r.val ? "val" : "test", (long long)r.ntr, (long long)r.nte, r.dim, r.classes, r.feat_s, knn_s,
               cli_now() - t0);
    } else {
        printf("k-NN on %s: %lld train, %lld %s, %d classes, features %d wide, T %g\n", r.data, (long long)r.ntr,
               (long long)r.nte, r.val ? "held out of train (--val)" : "test", r.classes, r.dim, T);
        for (int i = 0; i < nk; i++)
            printf("k %4d: top-1 %6.2f%%  top-5 %6.2f%%\n", ks[i], 100 * top1[i], 100 * top5[i]);
        printf("features %.1f s, k-NN %.1f s\n", r.feat_s, knn_s);
    }
    eval_release(&r);
    return 0;
}

/* ---- eval linear ---------------------------------------------------------------------------------- */

static int eval_linear(int argc, char **argv) {
    dinoc_linear_config c = dinoc_linear_default();
    eval_run    r = {.cmd = "eval linear", .data = "fashion-mnist", .batch = 256, .spec = {4, 0}};
    const char *lrlist = NULL;
    float       val_fraction = (float)c.val_fraction;
    int         json = 0, threads = 0, seed = 0;
    const opt_spec opts[] = {
        {"model", 'm', OPT_STR, &r.model, "model folder (Hugging Face layout, or a training run)"},
        {"data", 'd', OPT_STR, &r.data, "fashion-mnist, or a folder with train/ and test/ class subfolders"},
        {"data-dir", 0, OPT_STR, &r.data_dir, "Fashion-MNIST IDX folder (default: Debian's)"},
        {"n-last-blocks", 0, OPT_INT, &r.spec.n_last_blocks, "features: CLS of the last n blocks (normed; a ResNet: its pooled feature)"},
        {"avgpool", 0, OPT_FLAG, &r.spec.avgpool, "features: append the mean of the patch tokens (ViT only)"},
        {"epochs", 'e', OPT_INT, &c.epochs, "epochs of SGD per probe"},
        {"lrs", 0, OPT_STR, &lrlist, "learning rates to try, comma separated, before the batch/256 scaling "
                                     "(default 1e-4,3e-4,1e-3,3e-3,0.01,0.03,0.1,0.3,1)"},
        {"batch", 'b', OPT_INT, &c.batch, "probe batch size"},
        {"val-fraction", 0, OPT_FLOAT, &val_fraction, "train rows held out to choose the lr"},
        {"seed", 0, OPT_INT, &seed, "seed of the split, the init and the order"},
        {"feature-batch", 0, OPT_INT, &r.batch, "images per forward"},
        {"limit-train", 0, OPT_INT, &r.limit_train, "use only the first N train images (0: all)"},
        {"limit-test", 0, OPT_INT, &r.limit_test, "use only the first N test images (0: all)"},
        {"val", 0, OPT_INT, &r.val, "score N train images held out (a fixed draw) instead of the test split: for "
                                    "choosing a recipe without the test set (0: test split)"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"quiet", 'q', OPT_FLAG, &r.quiet, "no progress on stderr"},
        {"json", 0, OPT_FLAG, &json, "print one JSON object of metrics on stdout"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc eval linear --model MODEL [--data fashion-mnist|DIR] [options]";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    free(pos);
    if (rc) return rc == 1 ? 0 : 2;
    if ((rc = check_common(&r, npos, use))) return rc;
    double lrs[MAX_LIST];
    if (lrlist) {
        if ((c.n_lrs = parse_doubles(lrlist, lrs, MAX_LIST)) < 1) {
            fprintf(stderr, "error: bad --lrs '%s' (positive numbers, comma separated, at most %d)\n", lrlist, MAX_LIST);
            return 2;
        }
        c.lrs = lrs;
    }
    if (c.epochs < 1 || c.batch < 1 || !(val_fraction > 0 && val_fraction < 1) || seed < 0) {
        fprintf(stderr, "error: --epochs and --batch must be >= 1, --val-fraction in (0, 1), --seed >= 0\n");
        return 2;
    }
    c.val_fraction = val_fraction, c.seed = (uint64_t)seed;
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    double t0 = cli_now();
    if ((rc = eval_prepare(&r))) {
        eval_release(&r);
        return rc;
    }
    dinoc_linear_result res;
    double              t1 = cli_now();
    dinoc_status        s  = dinoc_linear_probe(r.xtr, r.ytr, r.ntr, r.xte, r.yte, r.nte, r.dim, r.classes, &c, &res);
    double              probe_s = cli_now() - t1;
    if (s) {
        eval_release(&r);
        return cli_fail(r.cmd, s);
    }
    if (json) {
        printf("{\"top1\":%.6f,\"top5\":%.6f,\"best_lr\":%g,\"val_top1\":%.6f,\"val\":[", res.test_top1,
               res.test_top5, res.best_lr, res.val_top1);
        for (int j = 0; j < c.n_lrs; j++) printf("%s{\"lr\":%g,\"top1\":%.6f}", j ? "," : "", c.lrs[j], res.val_by_lr[j]);
        printf("],\"epochs\":%d,\"batch\":%d,\"val_fraction\":%g,\"seed\":%d,\"n_last_blocks\":%d,"
               "\"avgpool\":%s,\"split\":\"%s\",\"n_train\":%lld,\"n_test\":%lld,\"dim\":%d,\"classes\":%d,"
               "\"features_seconds\":%.2f,\"probe_seconds\":%.2f,\"seconds\":%.2f}\n",
               c.epochs, c.batch, c.val_fraction, seed, r.spec.n_last_blocks, r.spec.avgpool ? "true" : "false",
               r.val ? "val" : "test", (long long)r.ntr, (long long)r.nte, r.dim, r.classes, r.feat_s, probe_s, cli_now() - t0);
    } else {
        char what[64];
        if (r.bb.resnet) snprintf(what, sizeof what, "the ResNet's pooled feature");
        else snprintf(what, sizeof what, "CLS of the last %d blocks%s", r.spec.n_last_blocks,
                      r.spec.avgpool ? " + mean patch token" : "");
        printf("linear probe on %s: %lld train (%.0f%% held out to pick the lr), %lld %s, %d classes, "
               "features %d wide (%s)\n",
               r.data, (long long)r.ntr, 100 * c.val_fraction, (long long)r.nte,
               r.val ? "held out of train (--val)" : "test", r.classes, r.dim, what);
        for (int j = 0; j < c.n_lrs; j++)
            printf("lr %-8g (x %g): val top-1 %6.2f%%%s\n", c.lrs[j], c.batch / 256.0, 100 * res.val_by_lr[j],
                   c.lrs[j] == res.best_lr ? "  <- chosen" : "");
        printf("%s with lr %g retrained on all train rows: top-1 %.2f%%  top-5 %.2f%%\n",
               r.val ? "held-out train rows (--val)" : "test", res.best_lr, 100 * res.test_top1, 100 * res.test_top5);
        printf("features %.1f s, probe %.1f s (%d epochs)\n", r.feat_s, probe_s, c.epochs);
    }
    free(res.val_by_lr);
    eval_release(&r);
    return 0;
}

/* ---- eval segment --------------------------------------------------------------------------------- */

typedef struct {
    const char *data, *data_dir;
    int         quiet;
} seg_opts;

/* "shapes:DIR" or "fashion-mnist". */
static dinoc_status seg_open(dinoc_segset **set, const seg_opts *o, int train) {
    if (strcmp(o->data, "fashion-mnist") == 0) return dinoc_segset_open_fashion(set, o->data_dir, train);
    if (strncmp(o->data, "shapes:", 7) == 0) return dinoc_segset_open_shapes(set, o->data + 7, train);
    return dinoc_fail(DINOC_ERR_ARG, "--data %s: use shapes:DIR or fashion-mnist", o->data);
}

static dinoc_status seg_features(const dinoc_model *m, const dinoc_segset *set, dinoc_seg_spec spec, int64_t limit,
                                 int keep, const char *label, int quiet, dinoc_seg_features *f) {
    cli_progress p;
    cli_progress_start(&p, label);
    return dinoc_seg_extract(m, set, spec, limit, keep, f, quiet ? NULL : on_progress, &p);
}

/* The confusion matrix of the head's pixel predictions over every test image. */
static dinoc_status seg_score(const dinoc_seg_head *h, const dinoc_seg_features *te, int64_t *conf) {
    size_t need = 0;
    for (int64_t i = 0; i < te->n; i++) {
        size_t k = dinoc_seg_predict_scratch_floats(h, te->gh, te->gw, te->mask_w[i], te->mask_h[i]);
        need     = k > need ? k : need;
    }
    float   *scratch = malloc(sizeof(float) * need);
    uint8_t *pred    = malloc((size_t)need); /* >= W * H */
    if (!scratch || !pred) {
        free(scratch), free(pred);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for the predictions");
    }
    const int Np = te->gh * te->gw;
    for (int64_t i = 0; i < te->n; i++) {
        const int W = te->mask_w[i], H = te->mask_h[i];
        dinoc_seg_predict(h, te->feats + (size_t)i * Np * te->dim, te->gh, te->gw, W, H, pred, scratch);
        dinoc_seg_confusion_add(conf, te->masks + te->mask_off[i], pred, (size_t)W * H, h->K);
    }
    free(scratch), free(pred);
    return DINOC_OK;
}

static void seg_print_json(const dinoc_segset *set, const dinoc_seg_head *h, const dinoc_seg_config *c,
                           const dinoc_seg_spec *spec, const dinoc_seg_features *tr, const dinoc_seg_features *te,
                           const double *iou, double miou, double acc, double feat_s, double probe_s, double total_s) {
    cJSON *o = cJSON_CreateObject(), *io = cJSON_CreateObject(), *val = cJSON_CreateArray();
    cJSON_AddNumberToObject(o, "miou", miou);
    cJSON_AddNumberToObject(o, "pixel_acc", acc);
    for (int k = 0; k < h->K; k++) /* null: the class neither occurs nor is predicted */
        cJSON_AddItemToObject(io, dinoc_segset_class_name(set, k), isnan(iou[k]) ? cJSON_CreateNull() : cJSON_CreateNumber(iou[k]));
    cJSON_AddItemToObject(o, "iou", io);
    cJSON_AddNumberToObject(o, "best_lr", h->lr);
    cJSON_AddNumberToObject(o, "val_patch_acc", h->val_acc);
    for (int j = 0; j < c->n_lrs; j++) {
        cJSON *v = cJSON_CreateObject();
        cJSON_AddNumberToObject(v, "lr", c->lrs[j]);
        cJSON_AddNumberToObject(v, "patch_acc", h->val_by_lr[j]);
        cJSON_AddItemToArray(val, v);
    }
    cJSON_AddItemToObject(o, "val", val);
    const double nums[] = {c->epochs, c->batch, spec->n_last_blocks, spec->size, tr->gh, tr->gw, (double)tr->n,
                           (double)te->n, tr->dim, h->K, feat_s, probe_s, total_s};
    const char *keys[] = {"epochs", "batch", "n_last_blocks", "size", "grid_h", "grid_w", "n_train", "n_test", "dim",
                          "classes", "features_seconds", "probe_seconds", "seconds"};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) cJSON_AddNumberToObject(o, keys[i], nums[i]);
    char *txt = cJSON_PrintUnformatted(o);
    if (txt) printf("%s\n", txt);
    free(txt);
    cJSON_Delete(o);
}

static int eval_segment(int argc, char **argv) {
    dinoc_seg_config c = dinoc_seg_default();
    seg_opts         o = {.data = "fashion-mnist"};
    dinoc_seg_spec   spec = {1, 0, 64};
    const char      *model = NULL, *lrlist = NULL;
    float            val_fraction = (float)c.val_fraction;
    int              json = 0, threads = 0, seed = 0, limit_train = 2000, limit_test = 500;
    const opt_spec opts[] = {
        {"model", 'm', OPT_STR, &model, "model folder (Hugging Face layout, or a training run)"},
        {"data", 'd', OPT_STR, &o.data, "shapes:DIR (classes.txt, {train,test}/{images,masks}) or fashion-mnist "
                                        "(masks: pixel > 0.25*255 -> class + 1)"},
        {"data-dir", 0, OPT_STR, &o.data_dir, "Fashion-MNIST IDX folder (default: Debian's)"},
        {"size", 's', OPT_INT, &spec.size, "images resized to S x S (0: the model's image size, down to a multiple of the patch)"},
        {"n-last-blocks", 0, OPT_INT, &spec.n_last_blocks, "features: patch tokens of the last n blocks (normed), concatenated"},
        {"epochs", 'e', OPT_INT, &c.epochs, "epochs of SGD over the training patches"},
        {"lrs", 0, OPT_STR, &lrlist, "learning rates to try, before the batch/256 scaling (default 0.03,0.1,0.3,1,3)"},
        {"batch", 'b', OPT_INT, &c.batch, "patches per SGD step"},
        {"val-fraction", 0, OPT_FLOAT, &val_fraction, "training images held out to choose the lr"},
        {"seed", 0, OPT_INT, &seed, "seed of the init and the order"},
        {"feature-batch", 0, OPT_INT, &spec.batch, "images per forward"},
        {"limit-train", 0, OPT_INT, &limit_train, "use only the first N train images (0: all; every image gives a row per patch)"},
        {"limit-test", 0, OPT_INT, &limit_test, "use only the first N test images (0: all)"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"quiet", 'q', OPT_FLAG, &o.quiet, "no progress on stderr"},
        {"json", 0, OPT_FLAG, &json, "print one JSON object of metrics on stdout"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc eval segment --model MODEL [--data shapes:DIR|fashion-mnist] [options]";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    free(pos);
    if (rc) return rc == 1 ? 0 : 2;
    double lrs[MAX_LIST];
    if (lrlist && (c.n_lrs = parse_doubles(lrlist, lrs, MAX_LIST)) < 1) {
        fprintf(stderr, "error: bad --lrs '%s' (positive numbers, comma separated, at most %d)\n", lrlist, MAX_LIST);
        return 2;
    }
    if (lrlist) c.lrs = lrs;
    if (!model || npos || c.epochs < 1 || c.batch < 1 || spec.batch < 1 || spec.n_last_blocks < 1 || spec.size < 0 ||
        limit_train < 0 || limit_test < 0 || seed < 0 || !(val_fraction > 0 && val_fraction < 1)) {
        fprintf(stderr, "error: eval segment needs --model MODEL and no positional arguments; --epochs, --batch, "
                        "--feature-batch, --n-last-blocks >= 1; --size, --limit-*, --seed >= 0; --val-fraction in (0, 1)\n%s\n", use);
        return 2;
    }
    c.val_fraction = val_fraction, c.seed = (uint64_t)seed;
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    double             t0 = cli_now(), t1 = 0, t2 = 0;
    dinoc_model       *m  = NULL;
    dinoc_segset      *tr = NULL, *te = NULL;
    dinoc_seg_features ftr = {0}, fte = {0};
    dinoc_seg_head     h = {0};
    int64_t           *conf = NULL;
    dinoc_status       s;
    if ((s = dinoc_model_load(&m, model, NULL)) || (s = seg_open(&tr, &o, 1)) || (s = seg_open(&te, &o, 0))) goto done;
    const dinoc_vit_config *cfg = dinoc_model_config(m);
    const int               K   = dinoc_segset_num_classes(tr);
    if (!spec.size) spec.size = cfg->image_size - cfg->image_size % cfg->patch;
    for (int k = 0; k < K; k++)
        if (dinoc_segset_num_classes(te) != K || strcmp(dinoc_segset_class_name(tr, k), dinoc_segset_class_name(te, k))) {
            s = dinoc_fail(DINOC_ERR_ARG, "%s: the train and test splits have different classes", o.data);
            goto done;
        }
    if ((s = seg_features(m, tr, spec, limit_train, 0, "train features", o.quiet, &ftr)) ||
        (s = seg_features(m, te, spec, limit_test, 1, "test features", o.quiet, &fte)))
        goto done;
    t1 = cli_now();
    const int Np = ftr.gh * ftr.gw;
    if ((s = dinoc_seg_head_fit(&h, ftr.feats, ftr.labels, ftr.n * Np, Np, ftr.dim, K, &c))) goto done;
    if (!(conf = calloc((size_t)K * K, sizeof(int64_t)))) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((s = seg_score(&h, &fte, conf))) goto done;
    t2 = cli_now();
    double iou[256], miou, acc;
    dinoc_seg_scores(conf, K, iou, &miou, &acc);
    if (json) {
        seg_print_json(tr, &h, &c, &spec, &ftr, &fte, iou, miou, acc, t1 - t0, t2 - t1, cli_now() - t0);
    } else {
        printf("segmentation probe on %s: %lld train, %lld test images, %d classes, %d x %d input, %d x %d patches, "
               "features %d wide (patch tokens of the last %d block%s)\n", o.data, (long long)ftr.n, (long long)fte.n, K,
               spec.size, spec.size, ftr.gw, ftr.gh, ftr.dim, spec.n_last_blocks, spec.n_last_blocks > 1 ? "s" : "");
        for (int j = 0; j < c.n_lrs; j++)
            printf("lr %-8g (x %g): held-out patch accuracy %6.2f%%%s\n", c.lrs[j], c.batch / 256.0,
                   100 * h.val_by_lr[j], c.lrs[j] == h.lr ? "  <- chosen" : "");
        for (int k = 0; k < K; k++)
            if (isnan(iou[k])) printf("  %-20s IoU      - (absent)\n", dinoc_segset_class_name(tr, k));
            else printf("  %-20s IoU %6.2f%%\n", dinoc_segset_class_name(tr, k), 100 * iou[k]);
        printf("test: mIoU %.2f%%  pixel accuracy %.2f%%\n", 100 * miou, 100 * acc);
        printf("features %.1f s, probe %.1f s (%d epochs)\n", t1 - t0, t2 - t1, c.epochs);
    }
done:
    free(conf);
    dinoc_seg_head_free(&h);
    dinoc_seg_features_free(&ftr), dinoc_seg_features_free(&fte);
    dinoc_segset_free(tr), dinoc_segset_free(te);
    dinoc_model_free(m);
    return s ? cli_fail("eval segment", s) : 0;
}

int cmd_eval(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "knn") == 0) return eval_knn(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "linear") == 0) return eval_linear(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "classify") == 0) return eval_classify(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "segment") == 0) return eval_segment(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "zeroshot") || !strcmp(argv[1], "retrieval") || !strcmp(argv[1], "fewshot")))
        return cmd_eval_clip(argv[1], argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "mlm") == 0) return cmd_eval_mlm(argc - 1, argv + 1);
    FILE *f = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? stdout : stderr;
    fprintf(f, "usage: dinoc eval <knn|linear|classify|segment|zeroshot|retrieval|fewshot|mlm> --model MODEL [options]\n"
               "  knn       weighted k-NN on frozen features (DINO's protocol)\n"
               "  linear    linear probe on frozen features (lr chosen on held-out train rows)\n"
               "  classify  accuracy of a run of `dinoc train supervised`\n"
               "  segment   linear per-patch segmentation probe on frozen patch features (mIoU)\n"
               "  zeroshot  CLIP zero-shot classification with prompt ensembling\n"
               "  retrieval CLIP image-text retrieval recall at 1/5/10\n"
               "  fewshot   k-shot classification: class prototypes and a linear probe\n"
               "  mlm       masked-token accuracy and perplexity of an MLM text model\n"
               "'dinoc eval <command> --help' lists the options.\n");
    return f == stdout ? 0 : 2;
}
