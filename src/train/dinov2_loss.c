/* dinov2_loss.c: DINOv2's teacher targets (centering, Sinkhorn-Knopp), DINO and iBOT
 * cross-entropies and KoLeo, forward and backward (see dinov2_loss.h). Tested by
 * tests/test_dinov2_loss.c. */
#include "dinov2_loss.h"
#include "../core/dist.h"

#include <math.h>
#include <string.h>

void dinoc_softmax_center(float *q, const float *t, const float *center, int N, int K, double temp) {
    const float ft = (float)temp;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        const float *tr = t + (size_t)r * K;
        float       *qr = q + (size_t)r * K;
        float        mx = -INFINITY;
        for (int k = 0; k < K; k++) qr[k] = (tr[k] - center[k]) / ft, mx = fmaxf(mx, qr[k]);
        double z = 0;
        for (int k = 0; k < K; k++) qr[k] = expf(qr[k] - mx), z += qr[k];
        for (int k = 0; k < K; k++) qr[k] = (float)(qr[k] / z);
    }
}

dinoc_status dinoc_center_update(float *center, const float *t, int N, int K, double momentum, double *scratch) {
    const float cm = (float)momentum, ocm = (float)(1.0 - momentum);
    double     *sum = scratch; /* [K] column sums, then [K] the row count */
#pragma omp parallel for schedule(static)
    for (int k = 0; k < K; k++) {
        double acc = 0;
        for (int r = 0; r < N; r++) acc += t[(size_t)r * K + k];
        sum[k] = acc;
    }
    sum[K] = N;
    dinoc_status s = dinoc_dist_sum_f64(sum, (size_t)K + 1); /* the global batch's sums and rows */
    if (s || sum[K] < 1) return s;
    for (int k = 0; k < K; k++) center[k] = center[k] * cm + (float)(sum[k] / sum[K]) * ocm;
    return DINOC_OK;
}

/* Each step mirrors one in-place torch division on float32 (Q /= sum, Q /= K, ...), so the
 * rounding follows the reference; the sums are formed in double. Data parallel: the max, the total,
 * the prototypes' sums and the sample count are the global batch's (the reference all-reduces
 * sum_Q and sum_of_rows and uses B = N * world); the rows stay local. */
dinoc_status dinoc_sinkhorn_knopp(float *q, const float *t, int N, int K, double temp, int iters, double *scratch) {
    const float ft = (float)temp;
    const size_t n = (size_t)N * K;
    float        mx = -INFINITY;
    for (size_t i = 0; i < n; i++) mx = fmaxf(mx, t[i] / ft);
    double      *ksum = scratch, *nsum = scratch + K + 1;
    dinoc_status s;
    double       NG = N; /* the global batch's rows */
    if ((s = dinoc_dist_max_f32(&mx, 1)) || (s = dinoc_dist_sum_f64(&NG, 1))) return s;
    if (NG < 1) return DINOC_OK;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        double acc = 0;
        for (int k = 0; k < K; k++) acc += q[(size_t)r * K + k] = expf(t[(size_t)r * K + k] / ft - mx);
        nsum[r] = acc;
    }
    double total = 0;
    for (int r = 0; r < N; r++) total += nsum[r];
    if ((s = dinoc_dist_sum_f64(&total, 1))) return s;
    const float ftot = (float)total, fN = (float)NG;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) q[i] /= ftot;
    for (int it = 0; it < iters; it++) {
        /* prototypes (rows of torch's Q [K, N]): mass 1/K each */
#pragma omp parallel for schedule(static)
        for (int k = 0; k < K; k++) {
            double acc = 0;
            for (int r = 0; r < N; r++) acc += q[(size_t)r * K + k];
            ksum[k] = acc;
        }
        if ((s = dinoc_dist_sum_f64(ksum, (size_t)K))) return s;
#pragma omp parallel for schedule(static)
        for (int r = 0; r < N; r++) {
            float *qr = q + (size_t)r * K;
            double acc = 0;
            for (int k = 0; k < K; k++) qr[k] = qr[k] / (float)ksum[k] / (float)K, acc += qr[k];
            nsum[r] = acc;
        }
        /* samples (columns): mass 1/N each; the last iteration's "*= N" makes each row sum to 1 */
#pragma omp parallel for schedule(static)
        for (int r = 0; r < N; r++) {
            float *qr = q + (size_t)r * K;
            for (int k = 0; k < K; k++) {
                qr[k] = qr[k] / (float)nsum[r] / fN;
                if (it == iters - 1) qr[k] *= fN;
            }
        }
    }
    return DINOC_OK;
}

/* One row's cross-entropy against the sum of nq target rows qs[j] [K] (summed on the fly, so no
 * scratch): returns -sum_k Q_k log_softmax(s / tau)_k with Q = sum_j qs[j], and writes
 * dr = coef * (sum(Q) p - Q) / tau (torch's log_softmax backward; sum(Q) = nq for softmax targets). */
static double ce_row(float *dr, const float *sr, const float *const *qs, int nq, int K, float fs, double tau,
                     double coef) {
    float mx = -INFINITY;
    for (int k = 0; k < K; k++) mx = fmaxf(mx, sr[k] / fs);
    double z = 0, qsum = 0;
    for (int k = 0; k < K; k++) {
        z += exp((double)(sr[k] / fs - mx));
        for (int j = 0; j < nq; j++) qsum += qs[j][k];
    }
    const double lz = mx + log(z);
    double       acc = 0;
    for (int k = 0; k < K; k++) {
        const double ls = sr[k] / fs - lz;
        double       qk = 0;
        for (int j = 0; j < nq; j++) qk += qs[j][k];
        acc -= qk * ls;
        dr[k] = (float)(coef * (qsum * exp(ls) - qk) / tau);
    }
    return acc;
}

double dinoc_dinov2_dino_loss(float *ds, double *row_loss, const float *q, const float *s, int nG, int nL,
                              int B, int K, double tau_s, double weight) {
    const int    NS = (nG + nL) * B;
    const int    denom = nG * (nG - 1) + (nG * nL > 1 ? nG * nL : 1);
    const double scale = 1.0 / ((double)B * denom);
    const float  fs    = (float)tau_s;
    DINOC_ASSERT(nG >= 1 && nG <= DINOC_DINOV2_MAX_GLOBAL);
#pragma omp parallel for schedule(static)
    for (int row = 0; row < NS; row++) {
        const int    v = row / B, b = row % B;
        const float *qs[DINOC_DINOV2_MAX_GLOBAL];
        int          nq = 0;
        for (int i = 0; i < nG; i++)
            if (i != v) qs[nq++] = q + ((size_t)i * B + b) * K;
        row_loss[row] = ce_row(ds + (size_t)row * K, s + (size_t)row * K, qs, nq, K, fs, tau_s, weight * scale);
    }
    double total = 0;
    for (int row = 0; row < NS; row++) total += row_loss[row];
    return total * scale;
}

double dinoc_ibot_loss(float *ds, double *row_loss, const float *q, const float *s, const float *w, int M,
                       int n_img, int K, double tau_s, double weight) {
    const float fs = (float)tau_s;
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        const float *qm = q + (size_t)m * K;
        row_loss[m]     = w[m] * ce_row(ds + (size_t)m * K, s + (size_t)m * K, &qm, 1, K, fs, tau_s, weight * w[m] / n_img);
    }
    double total = 0;
    for (int m = 0; m < M; m++) total += row_loss[m];
    return total / n_img;
}

void dinoc_koleo_free(dinoc_koleo *k) {
    dinoc_free(k->xn), dinoc_free(k->dots), dinoc_free(k->nrm), dinoc_free(k->dist), dinoc_free(k->nn), dinoc_free(k->g);
    memset(k, 0, sizeof *k);
}

dinoc_status dinoc_koleo_init(dinoc_koleo *k, int max_n, int D) {
    memset(k, 0, sizeof *k);
    if (max_n < 1 || D < 1) return dinoc_fail(DINOC_ERR_ARG, "KoLeo over %d rows of %d", max_n, D);
    k->max_n = max_n, k->D = D;
    k->xn   = dinoc_calloc((size_t)max_n * D, sizeof(float));
    k->dots = dinoc_calloc((size_t)max_n * max_n, sizeof(float));
    k->nrm  = dinoc_calloc((size_t)max_n, sizeof(float));
    k->dist = dinoc_calloc((size_t)max_n, sizeof(float));
    k->nn   = dinoc_calloc((size_t)max_n, sizeof(int));
    k->g    = dinoc_calloc((size_t)max_n * D, sizeof(float));
    if (!k->g || !k->xn || !k->dots || !k->nrm || !k->dist || !k->nn) {
        dinoc_koleo_free(k);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for KoLeo over %d rows", max_n);
    }
    return DINOC_OK;
}

double dinoc_koleo_loss(dinoc_koleo *k, float *dx, const float *x, int n, double weight) {
    const int   D   = k->D;
    const float eps = 1e-8f;
    DINOC_ASSERT(n <= k->max_n);
    /* F.normalize(x, eps=1e-8): x / max(|x|, eps) */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int d = 0; d < D; d++) ss += (double)x[(size_t)i * D + d] * x[(size_t)i * D + d];
        k->nrm[i] = fmaxf((float)sqrt(ss), eps);
        for (int d = 0; d < D; d++) k->xn[(size_t)i * D + d] = x[(size_t)i * D + d] / k->nrm[i];
    }
    dinoc_linear_forward(k->dots, k->xn, k->xn, NULL, n, D, n);
    double total = 0;
    for (int i = 0; i < n; i++) {
        /* the diagonal counts as -1 (the reference's trick); the first maximum wins, as torch.max */
        int   best = -1;
        float bv   = -INFINITY;
        for (int j = 0; j < n; j++) {
            const float v = j == i ? -1.0f : k->dots[(size_t)i * n + j];
            if (v > bv) bv = v, best = j;
        }
        k->nn[i]  = best;
        double ss = 0;
        for (int d = 0; d < D; d++) {
            const float u = k->xn[(size_t)i * D + d] - k->xn[(size_t)best * D + d] + eps;
            ss += (double)u * u;
        }
        k->dist[i] = (float)sqrt(ss);
        total -= log((double)k->dist[i] + eps);
    }
    if (dx) {
        /* dL/dxn: the distance of row i moves xn_i and xn_nn(i); gathered serially (a row can be
         * several rows' neighbour), then through the normalisation: (g - xn (xn . g)) / |x| */
        float *g = k->g;
        memset(g, 0, sizeof(float) * (size_t)n * D);
        for (int i = 0; i < n; i++) {
            const int    j  = k->nn[i];
            const double dd = k->dist[i];
            if (dd <= 0) continue; /* torch's norm backward gives 0 at 0 */
            const double c = -weight / (n * (dd + eps)) / dd;
            for (int d = 0; d < D; d++) {
                const float u  = k->xn[(size_t)i * D + d] - k->xn[(size_t)j * D + d] + eps;
                const float gu = (float)(c * u);
                g[(size_t)i * D + d] += gu, g[(size_t)j * D + d] -= gu;
            }
        }
        for (int i = 0; i < n; i++) {
            const float *gi = g + (size_t)i * D, *xi = k->xn + (size_t)i * D;
            double       dot = 0;
            for (int d = 0; d < D; d++) dot += (double)gi[d] * xi[d];
            const int below = k->nrm[i] <= eps; /* clamped norm: plain scaling */
            for (int d = 0; d < D; d++)
                dx[(size_t)i * D + d] += (float)((gi[d] - (below ? 0.0 : xi[d] * dot)) / k->nrm[i]);
        }
    }
    return total / n;
}
