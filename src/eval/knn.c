/* knn.c: DINO's weighted k-NN classifier (eval_knn.py knn_classifier; reference dino_dinov2.md 4.1)
 * on L2-normalised features.
 *
 * Test rows go in chunks of at most KNN_CHUNK rows (and at most KNN_SIMS floats of similarities):
 * sims [rows, ntrain] = test_chunk @ train^T by dinoc_gemm (rows split over the OpenMP threads),
 * then per row, in parallel, a partial selection of the kmax best train rows (a bounded heap:
 * O(ntrain log kmax), most rows rejected by one compare with the heap's worst), sorted best first.
 * Each k of the list uses the first k of them: class score += exp(sim / T) (double), prediction
 * = highest score. Ties are broken towards the lower index everywhere: a train row beats another
 * of equal similarity when its index is lower, a class beats another of equal score likewise.
 * Top-5 counts the target within the first min(5, k, num_classes) classes (DINO: min(5, k)).
 *
 * Memory: normalised train copy [ntrain, dim] + one chunk of sims. Tested by tests/test_eval.c
 * against tests/py/gen_eval.py (DINO's torch code and a numpy version with the same tie rule). */
#include "eval.h"

#include <math.h>
#include <string.h>

#define KNN_CHUNK 256
#define KNN_SIMS  ((size_t)1 << 24) /* 64 MB of similarities per chunk */

static int imin(int a, int b) { return a < b ? a : b; }

typedef struct {
    float   sim;
    int64_t idx;
} knn_hit;

/* a ranks below b: lower similarity, or equal similarity and a higher index */
static int worse(knn_hit a, knn_hit b) { return a.sim < b.sim || (a.sim == b.sim && a.idx > b.idx); }

/* min-heap on `worse`: h[0] is the worst of the n kept */
static void sift_down(knn_hit *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && worse(h[l], h[w])) w = l;
        if (r < n && worse(h[r], h[w])) w = r;
        if (w == i) return;
        knn_hit t = h[i];
        h[i] = h[w], h[w] = t, i = w;
    }
}

/* The k best of sims[0..n) into h, sorted best first. */
static void top_k(knn_hit *h, int k, const float *sims, int64_t n) {
    int m = 0;
    for (int64_t j = 0; j < n; j++) {
        knn_hit c = {sims[j], j};
        if (m < k) {
            h[m++] = c;
            if (m == k)
                for (int i = k / 2 - 1; i >= 0; i--) sift_down(h, k, i);
        } else if (worse(h[0], c)) {
            h[0] = c;
            sift_down(h, k, 0);
        }
    }
    /* heapsort: move the worst to the end, repeatedly */
    for (int e = k - 1; e > 0; e--) {
        knn_hit t = h[0];
        h[0] = h[e], h[e] = t;
        sift_down(h, e, 0);
    }
}

/* Rows of x [n, dim] divided by max(|row|, 1e-12) (torch.nn.functional.normalize) into y. */
static void normalize_rows(float *y, const float *x, int64_t n, int dim) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *a = x + (size_t)i * dim;
        double       ss = 0;
        for (int d = 0; d < dim; d++) ss += (double)a[d] * a[d];
        float nrm = (float)sqrt(ss);
        if (nrm < 1e-12f) nrm = 1e-12f;
        for (int d = 0; d < dim; d++) y[(size_t)i * dim + d] = a[d] / nrm;
    }
}

static dinoc_status check_rows(const char *what, const float *x, const int32_t *y, int64_t n, int dim,
                               int num_classes) {
    for (int64_t i = 0; i < n; i++) {
        if (y[i] < 0 || y[i] >= num_classes)
            return dinoc_fail(DINOC_ERR_ARG, "%s label %d of row %lld is outside 0..%d", what, y[i],
                              (long long)i, num_classes - 1);
        for (int d = 0; d < dim; d++)
            if (!isfinite(x[(size_t)i * dim + d]))
                return dinoc_fail(DINOC_ERR_NUMERIC, "%s feature row %lld holds a non-finite value", what,
                                  (long long)i);
    }
    return DINOC_OK;
}

/* Scores of the first k hits into score [num_classes]; 1 if the target is first, *in5 if within
 * the first n5 classes. Weights exp((sim - best) / T): DINO's exp(sim / T) times one factor per
 * query (the same ranking), which cannot overflow for a small T (1/T > 709 did: inf ties). */
static int vote(const knn_hit *h, int k, const int32_t *ytrain, int32_t target, int num_classes, double T,
                double *score, int n5, int *in5) {
    memset(score, 0, sizeof(double) * num_classes);
    for (int j = 0; j < k; j++) score[ytrain[h[j].idx]] += exp(((double)h[j].sim - (double)h[0].sim) / T);
    int rank = 0; /* classes ranked before the target */
    for (int c = 0; c < num_classes; c++)
        if (score[c] > score[target] || (score[c] == score[target] && c < target)) rank++;
    *in5 = rank < n5;
    return rank == 0;
}

dinoc_status dinoc_knn_eval(const float *train, const int32_t *ytrain, int64_t ntrain,
                            const float *test, const int32_t *ytest, int64_t ntest, int dim,
                            int num_classes, const int *ks, int nk, float T, double *top1,
                            double *top5) {
    if (!train || !ytrain || !test || !ytest || !ks || !top1 || !top5)
        return dinoc_fail(DINOC_ERR_ARG, "dinoc_knn_eval: NULL argument");
    if (num_classes < 2) return dinoc_fail(DINOC_ERR_ARG, "k-NN needs num_classes >= 2 (got %d)", num_classes);
    if (ntrain < 1 || ntest < 1 || dim < 1 || nk < 1)
        return dinoc_fail(DINOC_ERR_ARG, "k-NN needs train and test rows, dim >= 1 and a k (ntrain %lld, ntest "
                                         "%lld, dim %d, %d values of k)",
                          (long long)ntrain, (long long)ntest, dim, nk);
    if (!(T > 0) || !isfinite(T)) return dinoc_fail(DINOC_ERR_ARG, "k-NN temperature %g must be > 0", T);
    if (ntrain > INT32_MAX) return dinoc_fail(DINOC_ERR_ARG, "k-NN: %lld train rows (at most %d)", (long long)ntrain, INT32_MAX);
    int kmax = 0;
    for (int i = 0; i < nk; i++) {
        if (ks[i] < 1 || ks[i] > ntrain)
            return dinoc_fail(DINOC_ERR_ARG, "k = %d must be in 1..%lld (the train rows)", ks[i], (long long)ntrain);
        if (ks[i] > kmax) kmax = ks[i];
    }
    dinoc_status s;
    if ((s = check_rows("train", train, ytrain, ntrain, dim, num_classes)) ||
        (s = check_rows("test", test, ytest, ntest, dim, num_classes)))
        return s;

    const int64_t rows_max = KNN_SIMS / (size_t)ntrain;
    const int     R  = (int)(rows_max < 1 ? 1 : rows_max < KNN_CHUNK ? rows_max : KNN_CHUNK);
    const int     nt = dinoc_get_threads();
    size_t        ntd;
    if (!dinoc_mul_size((size_t)ntrain, (size_t)dim, &ntd))
        return dinoc_fail(DINOC_ERR_NOMEM, "k-NN: %lld x %d train features overflow", (long long)ntrain, dim);
    float   *tn    = malloc(sizeof(float) * ntd);
    float   *q     = malloc(sizeof(float) * (size_t)R * dim);
    float   *sims  = malloc(sizeof(float) * (size_t)R * ntrain);
    knn_hit *hits  = malloc(sizeof(knn_hit) * (size_t)nt * kmax);
    double  *score = malloc(sizeof(double) * (size_t)nt * num_classes);
    int64_t *c1 = calloc((size_t)nk, sizeof(int64_t)), *c5 = calloc((size_t)nk, sizeof(int64_t));
    uint8_t *ok1 = malloc((size_t)R * nk), *ok5 = malloc((size_t)R * nk); /* [rows, nk] hits */
    if (!tn || !q || !sims || !hits || !score || !c1 || !c5 || !ok1 || !ok5) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "k-NN: out of memory (%lld train rows of %d)", (long long)ntrain, dim);
        goto done;
    }
    normalize_rows(tn, train, ntrain, dim);
    for (int64_t r0 = 0; r0 < ntest; r0 += R) {
        const int rows = ntest - r0 < R ? (int)(ntest - r0) : R;
        normalize_rows(q, test + (size_t)r0 * dim, rows, dim);
        dinoc_gemm(0, 1, rows, (int)ntrain, dim, 1.0f, q, dim, tn, dim, 0.0f, sims, (int)ntrain);
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int i = 0; i < rows; i++) {
            const int t = dinoc_omp_thread_num();
            knn_hit  *h = hits + (size_t)t * kmax;
            top_k(h, kmax, sims + (size_t)i * ntrain, ntrain);
            for (int ki = 0; ki < nk; ki++) {
                const int k = ks[ki], n5 = imin(imin(5, k), num_classes);
                int       in5;
                ok1[(size_t)i * nk + ki] = (uint8_t)vote(h, k, ytrain, ytest[r0 + i], num_classes, T,
                                                         score + (size_t)t * num_classes, n5, &in5);
                ok5[(size_t)i * nk + ki] = (uint8_t)in5;
            }
        }
        for (int i = 0; i < rows; i++) /* in row order: the same whatever the thread split */
            for (int ki = 0; ki < nk; ki++) c1[ki] += ok1[(size_t)i * nk + ki], c5[ki] += ok5[(size_t)i * nk + ki];
    }
    for (int i = 0; i < nk; i++) top1[i] = (double)c1[i] / ntest, top5[i] = (double)c5[i] / ntest;
done:
    free(tn), free(q), free(sims), free(hits), free(score), free(c1), free(c5), free(ok1), free(ok5);
    return s;
}
