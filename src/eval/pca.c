/* pca.c: principal components of patch tokens and DINOv2's PCA picture (reference
 * dino_dinov2.md 4.4; the paper's Fig. 1/9, no released code).
 *
 * Eigen-decomposition: only the top k (<= 3 here) eigenvectors of a D x D covariance (D up to
 * 1536) are needed, so a full Jacobi sweep (O(D^3) per sweep, a minute at D = 1536) is wasted.
 * Subspace iteration instead: a block of b = k + 8 vectors is multiplied by C, a Rayleigh-Ritz
 * step (Jacobi on the b x b projection) rotates it to the best approximations, and the block is
 * re-orthonormalised. The Ritz vector i converges like (lambda_{b+1} / lambda_i)^iterations; the 8
 * extra vectors keep that ratio small when the leading eigenvalues are close. Vectors, products
 * C V and the projection are in double; C itself comes from one float sgemm (X^T X, which is
 * where the time goes). The start block is a fixed pseudo-random draw, every loop runs in a fixed
 * order: results do not depend on threads.
 *
 * Tested by tests/test_dense.c against numpy.linalg.eigh (tests/py/gen_dense.py). */
#include "dense.h"

#include <math.h>
#include <string.h>

#define PCA_EXTRA     8      /* block vectors beyond k */
#define PCA_MAX_ITERS 300
#define PCA_TOL       1e-7   /* residual |C v - l v| relative to the largest eigenvalue */
#define PCA_SEED      0x9ca5eedull

/* Cyclic Jacobi on the symmetric b x b matrix A (destroyed): eigenvalues ev [b], eigenvectors as
 * the columns of Q [b, b], sorted by decreasing eigenvalue. */
static void jacobi_eig(double *A, int b, double *ev, double *Q) {
    for (int i = 0; i < b * b; i++) Q[i] = i % (b + 1) == 0;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0, diag = 0;
        for (int p = 0; p < b; p++) {
            diag += A[p * b + p] * A[p * b + p];
            for (int q = p + 1; q < b; q++) off += A[p * b + q] * A[p * b + q];
        }
        if (off <= 1e-30 * diag || off == 0) break;
        for (int p = 0; p < b; p++)
            for (int q = p + 1; q < b; q++) {
                const double apq = A[p * b + q];
                if (apq == 0) continue;
                /* the rotation that zeroes A[p][q] (Golub & Van Loan 8.5.2) */
                const double theta = (A[q * b + q] - A[p * b + p]) / (2 * apq);
                const double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                const double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int r = 0; r < b; r++) { /* A <- A J (columns p, q) */
                    const double x = A[r * b + p], y = A[r * b + q];
                    A[r * b + p] = c * x - s * y, A[r * b + q] = s * x + c * y;
                }
                for (int r = 0; r < b; r++) { /* A <- J^T A (rows p, q) */
                    const double x = A[p * b + r], y = A[q * b + r];
                    A[p * b + r] = c * x - s * y, A[q * b + r] = s * x + c * y;
                }
                for (int r = 0; r < b; r++) {
                    const double x = Q[r * b + p], y = Q[r * b + q];
                    Q[r * b + p] = c * x - s * y, Q[r * b + q] = s * x + c * y;
                }
            }
    }
    for (int i = 0; i < b; i++) ev[i] = A[i * b + i];
    for (int i = 0; i < b; i++) { /* selection sort, descending; stable for equal values */
        int best = i;
        for (int j = i + 1; j < b; j++)
            if (ev[j] > ev[best]) best = j;
        if (best == i) continue;
        double t = ev[i];
        ev[i] = ev[best], ev[best] = t;
        for (int r = 0; r < b; r++) t = Q[r * b + i], Q[r * b + i] = Q[r * b + best], Q[r * b + best] = t;
    }
}

/* Modified Gram-Schmidt, twice, on the b rows of V [b, D] (b <= D). A row that (nearly) lies in
 * the span of the rows before it (C's rank below b) is replaced by the next unit vector that does
 * not. */
static void orthonormalise(double *V, int b, int D) {
    for (int i = 0; i < b; i++) {
        double *v = V + (size_t)i * D;
        for (int t = 0; t <= D; t++) {
            double before = 0, nrm = 0;
            for (int d = 0; d < D; d++) before += v[d] * v[d];
            for (int pass = 0; pass < 2; pass++)
                for (int j = 0; j < i; j++) {
                    const double *u   = V + (size_t)j * D;
                    double        dot = 0;
                    for (int d = 0; d < D; d++) dot += u[d] * v[d];
                    for (int d = 0; d < D; d++) v[d] -= dot * u[d];
                }
            for (int d = 0; d < D; d++) nrm += v[d] * v[d];
            if (nrm > 1e-20 * before && nrm > 0) {
                nrm = sqrt(nrm);
                for (int d = 0; d < D; d++) v[d] /= nrm;
                break;
            }
            memset(v, 0, sizeof(double) * D);
            v[(i + t) % D] = 1;
        }
    }
}

/* W [b, D] = V [b, D] C (C symmetric [D, D] float). Parallel over the D columns of the result. */
static void mul_cov(double *W, const double *V, const float *C, int b, int D) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < D; i++) {
        const float *ci = C + (size_t)i * D;
        for (int j = 0; j < b; j++) {
            const double *v   = V + (size_t)j * D;
            double        acc = 0;
            for (int l = 0; l < D; l++) acc += ci[l] * v[l];
            W[(size_t)j * D + i] = acc;
        }
    }
}

/* out [b, D] = Q^T in: row j of out = sum_a Q[a][j] in[a]. */
static void rotate(double *out, const double *in, const double *Q, int b, int D) {
    for (int j = 0; j < b; j++) {
        double *o = out + (size_t)j * D;
        memset(o, 0, sizeof(double) * D);
        for (int a = 0; a < b; a++) {
            const double q = Q[a * b + j], *r = in + (size_t)a * D;
            for (int d = 0; d < D; d++) o[d] += q * r[d];
        }
    }
}

/* Top-k eigenpairs of C [D, D] by subspace iteration into comp [k, D] and var [k]. */
static dinoc_status top_eigen(const float *C, int D, int k, float *comp, double *var) {
    const int b = k + PCA_EXTRA < D ? k + PCA_EXTRA : D;
    double   *V = malloc(sizeof(double) * (size_t)b * D * 3), *W = V + (size_t)b * D, *T = W + (size_t)b * D;
    double   *H = malloc(sizeof(double) * (size_t)b * (2 * b + 1)), *Q = H + b * b, *ev = Q + b * b;
    if (!V || !H) {
        free(V), free(H);
        return dinoc_fail(DINOC_ERR_NOMEM, "pca: out of memory for %d x %d vectors", b, D);
    }
    dinoc_rng rng;
    dinoc_rng_seed(&rng, PCA_SEED);
    for (size_t i = 0; i < (size_t)b * D; i++) V[i] = dinoc_rng_normal(&rng);
    orthonormalise(V, b, D);
    int    it;
    double worst = 0;
    for (it = 0; it < PCA_MAX_ITERS; it++) {
        mul_cov(W, V, C, b, D);
        for (int p = 0; p < b; p++) /* H = V C V^T, symmetrised */
            for (int q = 0; q <= p; q++) {
                double a = 0, a2 = 0;
                for (int d = 0; d < D; d++) a += V[(size_t)p * D + d] * W[(size_t)q * D + d], a2 += V[(size_t)q * D + d] * W[(size_t)p * D + d];
                H[p * b + q] = H[q * b + p] = 0.5 * (a + a2);
            }
        jacobi_eig(H, b, ev, Q);
        rotate(T, V, Q, b, D); /* Ritz vectors */
        rotate(V, W, Q, b, D); /* C times them */
        worst = 0;
        for (int j = 0; j < k; j++) {
            double r = 0;
            for (int d = 0; d < D; d++) {
                const double e = V[(size_t)j * D + d] - ev[j] * T[(size_t)j * D + d];
                r += e * e;
            }
            worst = fmax(worst, sqrt(r));
        }
        if (worst <= PCA_TOL * fabs(ev[0]) || b == D) break;
        orthonormalise(V, b, D); /* the next block: C times the Ritz vectors */
    }
    if (it == PCA_MAX_ITERS)
        dinoc_log(DINOC_LOG_WARN, "pca: subspace iteration stopped after %d rounds with residual %.3g "
                                  "(largest eigenvalue %.3g)", it, worst, ev[0]);
    for (int j = 0; j < k; j++) {
        const double *t   = T + (size_t)j * D;
        int           big = 0;
        for (int d = 1; d < D; d++)
            if (fabs(t[d]) > fabs(t[big])) big = d;
        const double sg = t[big] < 0 ? -1 : 1;
        for (int d = 0; d < D; d++) comp[(size_t)j * D + d] = (float)(sg * t[d]);
        var[j] = ev[j] > 0 ? ev[j] : 0; /* a covariance has no negative eigenvalue; rounding can */
    }
    free(V), free(H);
    return DINOC_OK;
}

dinoc_status dinoc_pca_fit(const float *X, int64_t n, int D, int k, float *mean, float *comp,
                           double *var, double *total_var) {
    if (!X || !mean || !comp || !var || !total_var) return dinoc_fail(DINOC_ERR_ARG, "dinoc_pca_fit: NULL argument");
    if (n < 2 || D < 1 || k < 1 || k > D || n > INT32_MAX)
        return dinoc_fail(DINOC_ERR_ARG, "pca of %lld rows of %d features into %d components: needs >= 2 rows "
                                         "and 1 <= components <= features", (long long)n, D, k);
    float *Xc = malloc(sizeof(float) * (size_t)n * D), *C = malloc(sizeof(float) * (size_t)D * D);
    if (!Xc || !C) {
        free(Xc), free(C);
        return dinoc_fail(DINOC_ERR_NOMEM, "pca: out of memory for %lld x %d features", (long long)n, D);
    }
    double tot = 0;
    for (int d = 0; d < D; d++) { /* column means in double, then the centred copy */
        double acc = 0;
        for (int64_t i = 0; i < n; i++) acc += X[(size_t)i * D + d];
        mean[d] = (float)(acc / n);
        double ss = 0;
        for (int64_t i = 0; i < n; i++) {
            const double c        = X[(size_t)i * D + d] - acc / n;
            Xc[(size_t)i * D + d] = (float)c;
            ss += c * c;
        }
        tot += ss / (n - 1);
    }
    for (int64_t i = 0; i < n * D; i++)
        if (!isfinite(Xc[i])) {
            free(Xc), free(C);
            return dinoc_fail(DINOC_ERR_NUMERIC, "pca: row %lld holds a non-finite feature", (long long)(i / D));
        }
    /* C = Xc^T Xc / (n - 1): numpy's cov / sklearn's explained_variance_ divisor */
    dinoc_gemm(1, 0, D, D, (int)n, 1.0f / (float)(n - 1), Xc, D, Xc, D, 0.0f, C, D);
    free(Xc);
    dinoc_status s = top_eigen(C, D, k, comp, var);
    free(C);
    *total_var = tot;
    return s;
}

void dinoc_pca_project(float *scores, const float *X, int64_t n, int D, int k, const float *mean,
                       const float *comp) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < k; j++) {
            double acc = 0;
            for (int d = 0; d < D; d++) acc += ((double)X[(size_t)i * D + d] - mean[d]) * comp[(size_t)j * D + d];
            scores[(size_t)i * k + j] = (float)acc;
        }
}

dinoc_pca_rgb_config dinoc_pca_rgb_default(void) {
    dinoc_pca_rgb_config c = {1, 0.0f, 0};
    return c;
}

/* One PCA of the rows [n, D] into k components and their scores [n, k]. */
static dinoc_status fit_project(const float *X, int64_t n, int D, int k, float *scores) {
    float       *mean = malloc(sizeof(float) * D), *comp = malloc(sizeof(float) * (size_t)k * D);
    double       var[3], tot;
    dinoc_status s = DINOC_OK;
    if (!mean || !comp) s = dinoc_fail(DINOC_ERR_NOMEM, "pca: out of memory");
    if (!s && !(s = dinoc_pca_fit(X, n, D, k, mean, comp, var, &tot))) dinoc_pca_project(scores, X, n, D, k, mean, comp);
    free(mean), free(comp);
    return s;
}

dinoc_status dinoc_pca_rgb(uint8_t *rgb, uint8_t *fg, int64_t *n_fg, const float *X, int64_t n,
                           int D, const dinoc_pca_rgb_config *cfg) {
    if (!rgb || !X || !cfg) return dinoc_fail(DINOC_ERR_ARG, "dinoc_pca_rgb: NULL argument");
    if (D < 3 || n < 2)
        return dinoc_fail(DINOC_ERR_ARG, "pca picture of %lld patches of %d features: needs >= 2 patches and "
                                         ">= 3 features", (long long)n, D);
    uint8_t *keep = malloc((size_t)n);
    float   *sc   = malloc(sizeof(float) * (size_t)n * 3), *Xf = NULL;
    int64_t  nf   = n;
    dinoc_status s = DINOC_OK;
    if (!keep || !sc) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "pca: out of memory for %lld patches", (long long)n);
        goto done;
    }
    memset(keep, 1, (size_t)n);
    if (cfg->foreground) {
        if ((s = fit_project(X, n, D, 1, sc))) goto done;
        int64_t pos = 0, neg = 0;
        for (int64_t i = 0; i < n; i++) pos += sc[i] > cfg->threshold, neg += -sc[i] > cfg->threshold;
        /* auto: the side with fewer patches is the object; equal counts keep the fitted sign */
        const float sg = cfg->sign < 0 || (cfg->sign == 0 && neg < pos) ? -1.0f : 1.0f;
        nf             = 0;
        for (int64_t i = 0; i < n; i++) nf += keep[i] = sg * sc[i] > cfg->threshold;
        if (nf < 2) {
            dinoc_log(DINOC_LOG_WARN, "pca: %lld foreground patch%s of %lld at threshold %g; using every patch",
                      (long long)nf, nf == 1 ? "" : "es", (long long)n, cfg->threshold);
            memset(keep, 1, (size_t)n);
            nf = n;
        }
    }
    if (!(Xf = malloc(sizeof(float) * (size_t)nf * D))) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "pca: out of memory for %lld patches", (long long)nf);
        goto done;
    }
    for (int64_t i = 0, j = 0; i < n; i++)
        if (keep[i]) memcpy(Xf + (size_t)j++ * D, X + (size_t)i * D, sizeof(float) * D);
    if ((s = fit_project(Xf, nf, D, 3, sc))) goto done;
    float lo[3], hi[3];
    for (int c = 0; c < 3; c++) {
        lo[c] = hi[c] = sc[c];
        for (int64_t j = 1; j < nf; j++) lo[c] = fminf(lo[c], sc[j * 3 + c]), hi[c] = fmaxf(hi[c], sc[j * 3 + c]);
    }
    for (int64_t i = 0, j = 0; i < n; i++) {
        uint8_t *o = rgb + (size_t)i * 3;
        for (int c = 0; c < 3; c++) /* min-max per channel over the foreground; a flat channel is 0 */
            o[c] = keep[i] && hi[c] > lo[c] ? (uint8_t)lrintf(255.0f * (sc[j * 3 + c] - lo[c]) / (hi[c] - lo[c])) : 0;
        j += keep[i];
    }
    if (fg) memcpy(fg, keep, (size_t)n);
    if (n_fg) *n_fg = nf;
done:
    free(keep), free(sc), free(Xf);
    return s;
}
