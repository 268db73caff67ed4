/* loss.c: softmax cross-entropy over rows of logits, as torch.nn.functional.cross_entropy with
 * integer targets, reduction="mean" and label_smoothing. Per row, with lse = log sum_k exp(x_k):
 *   loss_i = (1 - eps) (lse - x_t) + eps * mean_k (lse - x_k)
 * (torch: (1 - eps) * nll + eps * the mean over classes of -log p). Tested in tests/test_grad.c
 * (finite differences) and tests/test_ops_parity.c (torch fixtures). */
#include "../internal.h"

#include <math.h>

/* Rows per block of the loss sum: blocks are summed in parallel, then the block sums in order, so
 * the total is the same for any thread count. */
#define CE_ROWS 64

double dinoc_cross_entropy_forward(float *probs, const float *logits, const int32_t *targets, int N,
                                   int K, float label_smoothing) {
    DINOC_ASSERT(N > 0 && K > 0);
    int     nblk = (N + CE_ROWS - 1) / CE_ROWS;
    double *part = malloc(sizeof(double) * (size_t)nblk);
    DINOC_ASSERT(part);
    const double eps = label_smoothing;
#pragma omp parallel for schedule(static)
    for (int bk = 0; bk < nblk; bk++) {
        int    r0 = bk * CE_ROWS, r1 = r0 + CE_ROWS < N ? r0 + CE_ROWS : N;
        double acc = 0.0;
        for (int i = r0; i < r1; i++) {
            const float *x = logits + (size_t)i * K;
            int          t = targets[i];
            DINOC_ASSERT(t >= 0 && t < K);
            /* Max subtraction keeps exp() in range; the sum of exps and the log-sum-exp are in
             * double so that the loss (lse - x_t) keeps its digits when p_t is near 1. */
            float mx = x[0];
            for (int k = 1; k < K; k++)
                if (x[k] > mx) mx = x[k];
            double sum = 0.0, sx = 0.0;
            for (int k = 0; k < K; k++) {
                sum += exp((double)x[k] - mx);
                sx += x[k];
            }
            double lse = mx + log(sum);
            if (probs) {
                float *p   = probs + (size_t)i * K;
                double inv = 1.0 / sum;
                for (int k = 0; k < K; k++) p[k] = (float)(exp((double)x[k] - mx) * inv);
            }
            acc += (1.0 - eps) * (lse - x[t]) + eps * (lse - sx / K);
        }
        part[bk] = acc;
    }
    double total = 0.0;
    for (int bk = 0; bk < nblk; bk++) total += part[bk];
    free(part);
    return total / N;
}

/* Cross-entropy backward: d loss_i / d x_k = p_k - (1 - eps) [k == t] - eps / K, and the mean over
 * N rows divides by N: dlogits += scale / N * (p - onehot_smoothed). Elementwise, parallel over
 * rows. */
void dinoc_cross_entropy_backward(float *dlogits, const float *probs, const int32_t *targets, int N,
                                  int K, float label_smoothing, float scale) {
    const float s   = scale / (float)N;
    const float off = label_smoothing / (float)K;
    const float on  = 1.0f - label_smoothing;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *p = probs + (size_t)i * K;
        float       *d = dlogits + (size_t)i * K;
        int          t = targets[i];
        DINOC_ASSERT(t >= 0 && t < K);
        for (int k = 0; k < K; k++) d[k] += s * (p[k] - off - (k == t ? on : 0.0f));
    }
}
