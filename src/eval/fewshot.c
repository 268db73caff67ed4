/* fewshot.c: k-shot classification on frozen image features (CLIP's image tower, or any ViT
 * through dinoc_extract_features): `shots` labelled rows per class are drawn, then the test rows
 * are classified two ways:
 *   prototypes    the class mean of the L2-normalised shots, cosine nearest (a nearest-class-mean
 *                 classifier: no training, no hyper-parameters);
 *   linear probe  dinoc_linear_probe (src/eval/linear.c) on the L2-normalised shots, its lr chosen
 *                 on one held-out shot of each class (never on the test rows); at 1 shot the
 *                 first lr, unchosen.
 * Several draws (seeds) give a mean and a sample standard deviation, since with a handful of
 * shots the draw moves accuracy by points. Features are normalised for both classifiers so one lr
 * grid fits CLIP (unit rows) and DINO features (norms in the tens) alike; CLIP's paper probes with
 * L-BFGS logistic regression instead (not reproduced here).
 * Determinism: the draws come from cfg->seed and the seed index only; the probe is deterministic
 * for its seed (linear.c), so results do not depend on the thread count.
 * Tested by tests/test_clip_eval.c (planted clusters, draws, errors). */
#include "clip_eval.h"

#include <math.h>
#include <string.h>

#define FEWSHOT_SEED_STRIDE 0x9e3779b97f4a7c15ull

dinoc_fewshot_config dinoc_fewshot_default(int shots) {
    /* Largest first: a held-out part of a few shots is a handful of rows, so several lrs often tie
     * on it, and linear.c gives ties to the earlier lr. On unit-norm features, with the few hundred
     * steps a few-shot pool allows, the small lrs barely move the init, so the tie goes to the
     * largest. */
    static const double lrs[] = {3.0, 1.0, 0.3, 0.1, 0.03, 0.01};
    dinoc_fewshot_config c    = {.shots = shots, .n_seeds = 5, .seed = 0, .probe = dinoc_linear_default()};
    c.probe.lrs = lrs, c.probe.n_lrs = (int)(sizeof lrs / sizeof lrs[0]);
    /* one shot of each class held out to choose the lr (a random 20 % left some classes with no
     * training shot at 2-3 shots and held out only untrainable classes at 1 shot); at 1 shot
     * nothing is held out and the first lr (3) is used */
    c.probe.epochs = DINOC_FEWSHOT_EPOCHS, c.probe.batch = 32, c.probe.val_fraction = 0.2, c.probe.val_per_class = 1;
    return c;
}

dinoc_status dinoc_class_prototypes(float *protos, const float *feats, const int32_t *y,
                                    const int64_t *rows, int64_t n, int D, int K) {
    int64_t *count = calloc((size_t)K, sizeof(int64_t));
    double  *acc   = calloc((size_t)K * D, sizeof(double));
    if (!count || !acc) {
        free(count), free(acc);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory (%d prototypes of %d)", K, D);
    }
    dinoc_status s = DINOC_OK;
    for (int64_t i = 0; i < n && !s; i++) {
        const int64_t r = rows ? rows[i] : i;
        const int32_t k = y[r];
        if (k < 0 || k >= K) {
            s = dinoc_fail(DINOC_ERR_ARG, "prototypes: row %lld has label %d outside 0..%d", (long long)r, k, K - 1);
            break;
        }
        const float *x  = feats + (size_t)r * D;
        double       ss = 0;
        for (int d = 0; d < D; d++) ss += (double)x[d] * x[d];
        const double inv = ss > 0 ? 1.0 / sqrt(ss) : 0.0;
        for (int d = 0; d < D; d++) acc[(size_t)k * D + d] += x[d] * inv;
        count[k]++;
    }
    for (int k = 0; k < K && !s; k++) {
        if (!count[k]) {
            s = dinoc_fail(DINOC_ERR_ARG, "prototypes: class %d has no rows", k);
            break;
        }
        double ss = 0; /* the mean's 1/count cancels in the renormalisation */
        for (int d = 0; d < D; d++) ss += acc[(size_t)k * D + d] * acc[(size_t)k * D + d];
        const double inv = ss > 0 ? 1.0 / sqrt(ss) : 0.0;
        for (int d = 0; d < D; d++) protos[(size_t)k * D + d] = (float)(acc[(size_t)k * D + d] * inv);
    }
    free(count), free(acc);
    return s;
}

static dinoc_status check_rows(const char *what, const float *x, const int32_t *y, int64_t n, int D, int K) {
    for (int64_t i = 0; i < n; i++) {
        if (y[i] < 0 || y[i] >= K)
            return dinoc_fail(DINOC_ERR_ARG, "few-shot: %s row %lld has label %d outside 0..%d", what, (long long)i, y[i],
                              K - 1);
        for (int d = 0; d < D; d++)
            if (!isfinite(x[(size_t)i * D + d]))
                return dinoc_fail(DINOC_ERR_NUMERIC, "few-shot: %s row %lld holds a non-finite value", what, (long long)i);
    }
    return DINOC_OK;
}

static void mean_std(const double *v, int n, double *mean, double *std) {
    double m = 0, ss = 0;
    for (int i = 0; i < n; i++) m += v[i];
    m /= n;
    for (int i = 0; i < n; i++) ss += (v[i] - m) * (v[i] - m);
    *mean = m, *std = n > 1 ? sqrt(ss / (n - 1)) : 0.0;
}

/* Working memory of one evaluation. */
typedef struct {
    int64_t *cls_off, *cls_rows; /* pool rows grouped by class (CSR over K) */
    int64_t *perm, *shots;       /* a class's rows, shuffled; the drawn rows [K * shots] */
    uint8_t *taken;              /* [npool] 1 if drawn this seed */
    float   *xs, *xe, *protos, *logits;
    int32_t *ys, *ye;
} fewshot_mem;

static void mem_free(fewshot_mem *m) {
    free(m->cls_off), free(m->cls_rows), free(m->perm), free(m->shots), free(m->taken);
    free(m->xs), free(m->xe), free(m->protos), free(m->logits), free(m->ys), free(m->ye);
}

/* One draw: the shots of every class (partial Fisher-Yates per class, from rng). */
static void draw(fewshot_mem *m, const dinoc_fewshot_config *c, int K, int64_t npool, dinoc_rng *rng) {
    memset(m->taken, 0, (size_t)npool);
    for (int k = 0; k < K; k++) {
        const int64_t n0 = m->cls_off[k], nk = m->cls_off[k + 1] - n0;
        memcpy(m->perm, m->cls_rows + n0, sizeof(int64_t) * (size_t)nk);
        for (int j = 0; j < c->shots; j++) {
            const int64_t r = j + (int64_t)(dinoc_rng_u64(rng) % (uint64_t)(nk - j)), t = m->perm[j];
            m->perm[j] = m->perm[r], m->perm[r] = t;
            m->shots[(size_t)k * c->shots + j] = m->perm[j];
            m->taken[m->perm[j]]               = 1;
        }
    }
}

dinoc_status dinoc_fewshot_eval(const float *pool, const int32_t *ypool, int64_t npool,
                                const float *test, const int32_t *ytest, int64_t ntest, int D,
                                int K, const dinoc_fewshot_config *cfg, dinoc_fewshot_result *res) {
    memset(res, 0, sizeof *res);
    if (!pool || !ypool || !cfg || D < 1 || K < 2 || cfg->shots < 1 || cfg->n_seeds < 1 || npool < 1 ||
        (test && (!ytest || ntest < 1)))
        return dinoc_fail(DINOC_ERR_ARG, "few-shot: %d classes (>= 2), %d shots, %d seeds (>= 1), %lld pool rows, "
                                         "dim %d", K, cfg ? cfg->shots : 0, cfg ? cfg->n_seeds : 0, (long long)npool, D);
    dinoc_status s = check_rows("pool", pool, ypool, npool, D, K);
    if (!s && test) s = check_rows("test", test, ytest, ntest, D, K);
    if (s) return s;
    const int     S = cfg->n_seeds, need = cfg->shots + (test ? 0 : 1);
    const int64_t nshot = (int64_t)K * cfg->shots, ne_max = test ? ntest : npool - nshot;
    fewshot_mem   m = {0};
    m.cls_off = calloc((size_t)K + 1, sizeof(int64_t)), m.cls_rows = malloc(sizeof(int64_t) * (size_t)npool);
    m.perm = malloc(sizeof(int64_t) * (size_t)npool), m.shots = malloc(sizeof(int64_t) * (size_t)nshot);
    m.taken = malloc((size_t)npool), m.xs = malloc(sizeof(float) * (size_t)nshot * D);
    m.ys = malloc(sizeof(int32_t) * (size_t)nshot), m.protos = malloc(sizeof(float) * (size_t)K * D);
    res->proto_by_seed = calloc((size_t)S, sizeof(double)), res->probe_by_seed = calloc((size_t)S, sizeof(double));
    if (!m.cls_off || !m.cls_rows || !m.perm || !m.shots || !m.taken || !m.xs || !m.ys || !m.protos ||
        !res->proto_by_seed || !res->probe_by_seed) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "few-shot: out of memory");
        goto done;
    }
    for (int64_t i = 0; i < npool; i++) m.cls_off[ypool[i] + 1]++;
    for (int k = 0; k < K && !s; k++)
        if (m.cls_off[k + 1] < need)
            s = dinoc_fail(DINOC_ERR_ARG, "few-shot: class %d has %lld rows, %d-shot needs %d%s", k,
                           (long long)m.cls_off[k + 1], cfg->shots, need, test ? "" : " (shots + 1 left to score)");
    if (s) goto done;
    for (int k = 0; k < K; k++) m.cls_off[k + 1] += m.cls_off[k];
    memcpy(m.perm, m.cls_off, sizeof(int64_t) * (size_t)K); /* fill cursors */
    for (int64_t i = 0; i < npool; i++) m.cls_rows[m.perm[ypool[i]]++] = i;
    /* the scored rows, normalised once (test given) or per draw (the pool rest) */
    m.xe = malloc(sizeof(float) * (size_t)ne_max * D), m.ye = malloc(sizeof(int32_t) * (size_t)ne_max);
    m.logits = malloc(sizeof(float) * (size_t)ne_max * K);
    if (!m.xe || !m.ye || !m.logits) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "few-shot: out of memory (%lld rows to score)", (long long)ne_max);
        goto done;
    }
    if (test) {
        memcpy(m.xe, test, sizeof(float) * (size_t)ntest * D), memcpy(m.ye, ytest, sizeof(int32_t) * (size_t)ntest);
        dinoc_clip_normalize(m.xe, NULL, (int)ntest, D);
    }
    for (int si = 0; si < S && !s; si++) {
        const uint64_t seed = cfg->seed + FEWSHOT_SEED_STRIDE * (uint64_t)si;
        dinoc_rng      rng;
        dinoc_rng_seed(&rng, seed);
        draw(&m, cfg, K, npool, &rng);
        for (int64_t j = 0; j < nshot; j++) {
            memcpy(m.xs + (size_t)j * D, pool + (size_t)m.shots[j] * D, sizeof(float) * D);
            m.ys[j] = ypool[m.shots[j]];
        }
        dinoc_clip_normalize(m.xs, NULL, (int)nshot, D);
        int64_t ne = ntest;
        if (!test) {
            ne = 0;
            for (int64_t i = 0; i < npool; i++)
                if (!m.taken[i]) {
                    memcpy(m.xe + (size_t)ne * D, pool + (size_t)i * D, sizeof(float) * D);
                    m.ye[ne++] = ypool[i];
                }
            dinoc_clip_normalize(m.xe, NULL, (int)ne, D);
        }
        double top5;
        if ((s = dinoc_class_prototypes(m.protos, m.xs, m.ys, NULL, nshot, D, K))) break;
        dinoc_gemm(0, 1, (int)ne, K, D, 1.0f, m.xe, D, m.protos, D, 0.0f, m.logits, K);
        if ((s = dinoc_topk_accuracy(m.logits, m.ye, ne, K, &res->proto_by_seed[si], &top5, NULL))) break;
        if (!cfg->no_probe) {
            dinoc_linear_config pc = cfg->probe;
            dinoc_linear_result lr;
            pc.seed = seed;
            if ((s = dinoc_linear_probe(m.xs, m.ys, nshot, m.xe, m.ye, ne, D, K, &pc, &lr))) break;
            res->probe_by_seed[si] = lr.test_top1;
            free(lr.val_by_lr);
        }
    }
    if (!s) {
        mean_std(res->proto_by_seed, S, &res->proto_mean, &res->proto_std);
        mean_std(res->probe_by_seed, S, &res->probe_mean, &res->probe_std);
    }
done:
    mem_free(&m);
    if (s) {
        free(res->proto_by_seed), free(res->probe_by_seed);
        res->proto_by_seed = res->probe_by_seed = NULL;
    }
    return s;
}
