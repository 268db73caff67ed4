/* linear.c: linear probing of frozen features (reference dino_dinov2.md 4.2): a linear layer per
 * learning rate, trained side by side on the same batches (as DINOv2's AllClassifiers), mean
 * softmax cross-entropy, PyTorch's SGD (momentum 0.9, dampening 0, no Nesterov, wd 0) with the lr
 * scaled by batch / 256 and a per-iteration cosine to 0 (CosineAnnealingLR's closed form:
 * lr_t = lr * (1 + cos(pi t / total)) / 2, t = 0 .. total - 1).
 *
 * Honest selection: the learning rate is picked on a held-out part of the TRAINING rows (first
 * max val top-1, ties to the earlier lr of the list); the probe with that lr is then trained again
 * on every training row from the same initialisation and scored once on test.
 *
 * Threads: the learning rates are split over the OpenMP threads (one region for the whole
 * training); each classifier's steps run on one thread.
 * Determinism: the split, the initialisation (normal std 0.01, bias 0; the same draw for every
 * lr) and each epoch's order come from cfg->seed; each classifier's products are its own, so its
 * numbers do not depend on the thread count; every sum runs in a fixed order.
 *
 * Tested by tests/test_eval.c (SGD steps against torch.optim.SGD from tests/py/gen_eval.py,
 * separable data, determinism, the test set never steering the choice). */
#include "eval.h"

#include <math.h>
#include <string.h>

/* Gradients and momenta below this are flushed to zero: large lrs drive softmax probabilities to
 * 1e-40 and below, and denormal floats made the probe 50x slower (38 s instead of 0.8 s on 20k
 * rows); an update that small changes nothing measurable. */
#define PROBE_TINY       1e-20f
#define PROBE_MOMENTUM   0.9f
#define PROBE_EVAL_ROWS  1024
#define PROBE_SEED_SPLIT 0x5b1177e5ull
#define PROBE_SEED_INIT  0x1a17ull
#define PROBE_SEED_ORDER 0x0dd5ull

dinoc_linear_config dinoc_linear_default(void) {
    static const double lrs[] = {1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0};
    dinoc_linear_config c     = {.lrs = lrs, .n_lrs = (int)(sizeof lrs / sizeof lrs[0]), .epochs = DINOC_LINEAR_EPOCHS,
                                 .batch = 128, .val_fraction = 0.1, .val_per_class = 0, .seed = 0};
    return c;
}

size_t dinoc_linear_sgd_scratch_floats(int B, int D, int K, int nl) {
    const size_t NK = (size_t)nl * K;
    return (size_t)B * NK + NK * D + (size_t)B * nl;
}

void dinoc_linear_sgd_step(float *w, float *b, float *mw, float *mb, const float *x,
                           const int32_t *y, int B, int D, int K, int nl, const float *lr,
                           float momentum, float *scratch, double *loss) {
    const int NK     = nl * K;
    float    *logits = scratch;                         /* [B, NK], then dlogits in place */
    float    *gw     = scratch + (size_t)B * NK;        /* [NK, D] */
    float    *lrow   = gw + (size_t)NK * D;             /* [B, nl] per-row losses */
    dinoc_linear_forward(logits, x, w, b, B, D, NK);
    /* softmax cross-entropy per row and classifier; dlogits = (softmax - onehot) / B */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++)
        for (int j = 0; j < nl; j++) {
            float *z  = logits + (size_t)i * NK + (size_t)j * K;
            float  mx = z[0];
            for (int k = 1; k < K; k++) mx = z[k] > mx ? z[k] : mx;
            double sum = 0;
            for (int k = 0; k < K; k++) sum += exp((double)z[k] - mx);
            lrow[i * nl + j] = (float)(mx + log(sum) - z[y[i]]);
            for (int k = 0; k < K; k++) {
                double g = (exp((double)z[k] - mx) / sum - (k == y[i])) / B;
                z[k]     = fabs(g) < PROBE_TINY ? 0.0f : (float)g;
            }
        }
    if (loss)
        for (int j = 0; j < nl; j++) {
            double acc = 0;
            for (int i = 0; i < B; i++) acc += lrow[i * nl + j];
            loss[j] = acc / B;
        }
    dinoc_gemm(1, 0, NK, D, B, 1.0f, logits, NK, x, D, 0.0f, gw, D); /* dW = dlogits^T x */
    /* PyTorch SGD: buf = momentum * buf + grad; p -= lr * buf (the first buf is the grad itself,
     * the same as momentum * 0 + grad) */
#pragma omp parallel for schedule(static)
    for (int n = 0; n < NK; n++) {
        const float lj = lr[n / K];
        double      gb = 0;
        for (int i = 0; i < B; i++) gb += logits[(size_t)i * NK + n];
        float vb = momentum * mb[n] + (float)gb;
        mb[n]    = fabsf(vb) < PROBE_TINY ? 0.0f : vb;
        b[n] -= lj * mb[n];
        float       *wr = w + (size_t)n * D, *mr = mw + (size_t)n * D;
        const float *gr = gw + (size_t)n * D;
        for (int d = 0; d < D; d++) {
            float v = momentum * mr[d] + gr[d];
            mr[d]   = fabsf(v) < PROBE_TINY ? 0.0f : v;
            wr[d] -= lj * mr[d];
        }
    }
}

/* Trains ng classifiers w [ng*K, D], b [ng*K] with base learning rates lrs[0..ng) on rows[0..n)
 * of X for cfg->epochs epochs, all from the same initial draw on the same batches. Each batch is
 * gathered once, then each classifier takes its own step (nl = 1 products, so a classifier's
 * numbers do not depend on which others share its group). */
static dinoc_status fit_group(const float *X, const int32_t *y, int D, int K, const int64_t *rows,
                              int64_t n, const double *lrs, int ng, const dinoc_linear_config *cfg,
                              float *w, float *b) {
    const int     B = n < cfg->batch ? (int)n : cfg->batch;
    const size_t  KD = (size_t)K * D;
    const int64_t spe = (n + B - 1) / B, total = spe * cfg->epochs;
    float        *mw = dinoc_calloc(KD * ng, sizeof(float)), *mb = calloc((size_t)K * ng, sizeof(float));
    float        *xb = malloc(sizeof(float) * (size_t)B * D);
    float        *scratch = malloc(sizeof(float) * dinoc_linear_sgd_scratch_floats(B, D, K, 1));
    int32_t      *yb    = malloc(sizeof(int32_t) * B);
    int64_t      *order = malloc(sizeof(int64_t) * (size_t)n);
    dinoc_status  s     = DINOC_OK;
    if (!mw || !mb || !xb || !scratch || !yb || !order) {
        s = DINOC_ERR_NOMEM;
        goto done;
    }
    dinoc_rng rng;
    dinoc_rng_seed(&rng, cfg->seed ^ PROBE_SEED_INIT);
    for (size_t i = 0; i < KD; i++) w[i] = 0.01f * dinoc_rng_normal(&rng);
    for (int g = 1; g < ng; g++) memcpy(w + g * KD, w, sizeof(float) * KD);
    memset(b, 0, sizeof(float) * K * ng);
    int64_t t = 0;
    for (int e = 0; e < cfg->epochs; e++) {
        memcpy(order, rows, sizeof(int64_t) * (size_t)n);
        dinoc_rng_seed(&rng, (cfg->seed ^ PROBE_SEED_ORDER) + 0x9e3779b97f4a7c15ull * (uint64_t)(e + 1));
        for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
            int64_t j = (int64_t)(dinoc_rng_u64(&rng) % (uint64_t)(i + 1)), tmp = order[i];
            order[i] = order[j], order[j] = tmp;
        }
        for (int64_t i0 = 0; i0 < n; i0 += B, t++) {
            const int bn = n - i0 < B ? (int)(n - i0) : B;
            for (int i = 0; i < bn; i++) {
                memcpy(xb + (size_t)i * D, X + (size_t)order[i0 + i] * D, sizeof(float) * D);
                yb[i] = y[order[i0 + i]];
            }
            const double cosine = 0.5 * (1.0 + cos(M_PI * (double)t / (double)total));
            for (int g = 0; g < ng; g++) {
                const float lr = (float)(lrs[g] * B / 256.0 * cosine); /* the batch in use: fewer rows than --batch make it smaller */
                dinoc_linear_sgd_step(w + g * KD, b + (size_t)g * K, mw + g * KD, mb + (size_t)g * K, xb, yb,
                                      bn, D, K, 1, &lr, PROBE_MOMENTUM, scratch, NULL);
            }
        }
    }
done:
    dinoc_free(mw), free(mb), free(xb), free(scratch), free(yb), free(order);
    return s;
}

/* Trains nl classifiers w [nl*K, D], b [nl*K], one per learning rate, the lrs split over the
 * threads: one parallel region for the whole training rather than five per step, because a step's
 * products (a few MFLOP) are too small to split well and every barrier costs, most of all on a
 * busy machine. Inside the region the steps run on one thread (nested regions are inactive). */
static dinoc_status probe_fit(const float *X, const int32_t *y, int D, int K, const int64_t *rows,
                              int64_t n, const double *lrs, int nl, const dinoc_linear_config *cfg,
                              float *w, float *b) {
    const int    nt = dinoc_get_threads();
    dinoc_status st[nt], s = DINOC_OK;
    for (int t = 0; t < nt; t++) st[t] = DINOC_OK;
#pragma omp parallel num_threads(nt)
    {
        const int t = dinoc_omp_thread_num(), T = dinoc_omp_num_threads();
        const int j0 = t * nl / T, j1 = (t + 1) * nl / T;
        if (j0 < j1)
            st[t] = fit_group(X, y, D, K, rows, n, lrs + j0, j1 - j0, cfg, w + (size_t)j0 * K * D, b + (size_t)j0 * K);
    }
    for (int t = 0; t < nt && !s; t++)
        if (st[t]) s = dinoc_fail(st[t], "linear probe: out of memory (%lld rows of %d features)", (long long)n, D);
    return s;
}

/* Correct top-1 / top-5 counts of each classifier on rows[0..n) (rows NULL: 0..n-1). A row whose
 * logits are not all finite counts as wrong; ties rank the lower class first. */
static dinoc_status probe_score(const float *X, const int32_t *y, const int64_t *rows, int64_t n, int D,
                                int K, int nl, const float *w, const float *b, int64_t *c1, int64_t *c5) {
    const int NK = nl * K, CH = PROBE_EVAL_ROWS, n5 = K < 5 ? K : 5;
    float    *xb = malloc(sizeof(float) * (size_t)CH * D), *lg = malloc(sizeof(float) * (size_t)CH * NK);
    if (!xb || !lg) {
        free(xb), free(lg);
        return dinoc_fail(DINOC_ERR_NOMEM, "linear probe: out of memory");
    }
    memset(c1, 0, sizeof(int64_t) * nl), memset(c5, 0, sizeof(int64_t) * nl);
    for (int64_t i0 = 0; i0 < n; i0 += CH) {
        const int    bn = n - i0 < CH ? (int)(n - i0) : CH;
        const float *xs = X + (size_t)i0 * D;
        if (rows) {
            for (int i = 0; i < bn; i++) memcpy(xb + (size_t)i * D, X + (size_t)rows[i0 + i] * D, sizeof(float) * D);
            xs = xb;
        }
        dinoc_linear_forward(lg, xs, w, b, bn, D, NK);
        for (int i = 0; i < bn; i++) {
            const int32_t t = y[rows ? rows[i0 + i] : i0 + i];
            for (int j = 0; j < nl; j++) {
                const float *z    = lg + (size_t)i * NK + (size_t)j * K;
                int          rank = 0, finite = 1;
                for (int k = 0; k < K; k++) {
                    finite &= isfinite(z[k]) != 0;
                    rank += z[k] > z[t] || (z[k] == z[t] && k < t);
                }
                c1[j] += finite && rank == 0;
                c5[j] += finite && rank < n5;
            }
        }
    }
    free(xb), free(lg);
    return DINOC_OK;
}

static dinoc_status check_set(const char *what, const float *x, const int32_t *y, int64_t n, int dim, int K) {
    for (int64_t i = 0; i < n; i++) {
        if (y[i] < 0 || y[i] >= K)
            return dinoc_fail(DINOC_ERR_ARG, "%s label %d of row %lld is outside 0..%d", what, y[i], (long long)i, K - 1);
        for (int d = 0; d < dim; d++)
            if (!isfinite(x[(size_t)i * dim + d]))
                return dinoc_fail(DINOC_ERR_NUMERIC, "%s feature row %lld holds a non-finite value", what, (long long)i);
    }
    return DINOC_OK;
}

static dinoc_status check_args(const float *train, const int32_t *ytrain, int64_t ntrain, const float *test,
                               const int32_t *ytest, int64_t ntest, int dim, int K, const dinoc_linear_config *c) {
    if (!train || !ytrain || !test || !ytest || !c || !c->lrs)
        return dinoc_fail(DINOC_ERR_ARG, "dinoc_linear_probe: NULL argument");
    if (K < 2) return dinoc_fail(DINOC_ERR_ARG, "linear probe needs num_classes >= 2 (got %d)", K);
    if (dim < 1 || ntest < 1 || ntrain < 2 || ntrain > INT32_MAX)
        return dinoc_fail(DINOC_ERR_ARG, "linear probe: dim %d, %lld train rows (>= 2), %lld test rows (>= 1)",
                          dim, (long long)ntrain, (long long)ntest);
    if (c->n_lrs < 1 || c->epochs < 1 || c->batch < 1)
        return dinoc_fail(DINOC_ERR_ARG, "linear probe: %d learning rates, %d epochs, batch %d (each must be >= 1)",
                          c->n_lrs, c->epochs, c->batch);
    for (int j = 0; j < c->n_lrs; j++)
        if (!(c->lrs[j] > 0) || !isfinite(c->lrs[j]))
            return dinoc_fail(DINOC_ERR_ARG, "linear probe: learning rate %g must be > 0", c->lrs[j]);
    if (!(c->val_fraction > 0 && c->val_fraction < 1))
        return dinoc_fail(DINOC_ERR_ARG, "linear probe: val_fraction %g must be in (0, 1)", c->val_fraction);
    dinoc_status s = check_set("train", train, ytrain, ntrain, dim, K);
    return s ? s : check_set("test", test, ytest, ntest, dim, K);
}

dinoc_status dinoc_linear_probe(const float *train, const int32_t *ytrain, int64_t ntrain,
                                const float *test, const int32_t *ytest, int64_t ntest, int dim,
                                int num_classes, const dinoc_linear_config *cfg,
                                dinoc_linear_result *res) {
    if (!res) return dinoc_fail(DINOC_ERR_ARG, "dinoc_linear_probe: NULL result");
    memset(res, 0, sizeof *res);
    const int    K = num_classes;
    dinoc_status s = check_args(train, ytrain, ntrain, test, ytest, ntest, dim, K, cfg);
    if (s) return s;
    const int     nl   = cfg->n_lrs;
    int64_t       nval = (int64_t)llround((double)ntrain * cfg->val_fraction);
    nval               = nval < 1 ? 1 : nval > ntrain - 1 ? ntrain - 1 : nval;
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)ntrain), c1[1], c5[1], *cnt = NULL;
    int64_t *v1 = malloc(sizeof(int64_t) * nl), *v5 = malloc(sizeof(int64_t) * nl);
    float   *w = malloc(sizeof(float) * (size_t)nl * K * dim), *b = malloc(sizeof(float) * (size_t)nl * K);
    res->val_by_lr = malloc(sizeof(double) * nl);
    if (!perm || !v1 || !v5 || !w || !b || !res->val_by_lr) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "linear probe: out of memory");
        goto done;
    }
    /* the held-out split: the first nval rows of a seeded permutation */
    dinoc_rng rng;
    dinoc_rng_seed(&rng, cfg->seed ^ PROBE_SEED_SPLIT);
    for (int64_t i = 0; i < ntrain; i++) perm[i] = i;
    for (int64_t i = ntrain - 1; i > 0; i--) {
        int64_t j = (int64_t)(dinoc_rng_u64(&rng) % (uint64_t)(i + 1)), tmp = perm[i];
        perm[i] = perm[j], perm[j] = tmp;
    }
    if (cfg->val_per_class > 0) {
        /* stratified: the first val_per_class rows of each class in the permutation's order (all
         * but one at most) move to the front, in order; the rest keep theirs. cnt[c]: rows of
         * class c; cnt[K + c]: those of them moved to the front */
        cnt           = calloc((size_t)2 * K, sizeof(int64_t));
        int64_t *rest = malloc(sizeof(int64_t) * (size_t)ntrain);
        if (!cnt || !rest) {
            free(rest);
            s = dinoc_fail(DINOC_ERR_NOMEM, "linear probe: out of memory");
            goto done;
        }
        for (int64_t i = 0; i < ntrain; i++) cnt[ytrain[i]]++;
        int64_t nr = 0;
        nval = 0;
        for (int64_t i = 0; i < ntrain; i++) {
            const int32_t c = ytrain[perm[i]];
            if (cnt[K + c] < cfg->val_per_class && cnt[K + c] < cnt[c] - 1) perm[nval++] = perm[i], cnt[K + c]++;
            else rest[nr++] = perm[i];
        }
        memcpy(perm + nval, rest, sizeof(int64_t) * (size_t)nr);
        free(rest);
    }
    int best = 0;
    if (nval > 0) {
        if ((s = probe_fit(train, ytrain, dim, K, perm + nval, ntrain - nval, cfg->lrs, nl, cfg, w, b)) ||
            (s = probe_score(train, ytrain, perm, nval, dim, K, nl, w, b, v1, v5)))
            goto done;
        for (int j = 0; j < nl; j++) {
            res->val_by_lr[j] = (double)v1[j] / nval;
            if (v1[j] > v1[best]) best = j;
        }
    } else {
        for (int j = 0; j < nl; j++) res->val_by_lr[j] = -1; /* one row per class: nothing to hold out */
    }
    res->best_lr  = cfg->lrs[best];
    res->val_top1 = res->val_by_lr[best];
    /* retrain on every training row with the chosen lr, score once on test */
    for (int64_t i = 0; i < ntrain; i++) perm[i] = i;
    if ((s = probe_fit(train, ytrain, dim, K, perm, ntrain, &cfg->lrs[best], 1, cfg, w, b)) ||
        (s = probe_score(test, ytest, NULL, ntest, dim, K, 1, w, b, c1, c5)))
        goto done;
    res->test_top1 = (double)c1[0] / ntest;
    res->test_top5 = (double)c5[0] / ntest;
done:
    free(perm), free(cnt), free(v1), free(v5), free(w), free(b);
    if (s) {
        free(res->val_by_lr);
        res->val_by_lr = NULL;
    }
    return s;
}
