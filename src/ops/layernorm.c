/* layernorm.c: LayerNorm over the last dimension (PyTorch nn.LayerNorm semantics: biased variance,
 * eps inside the square root). Statistics are accumulated in double so that rows with a large mean
 * (the residual stream of deep ViTs) keep their precision. Tested in tests/test_ops.c. */
#include "../internal.h"

#include <math.h>

void dinoc_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                             const float *b, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float       *y = out + (size_t)i * C;
        double       s = 0.0;
        for (int c = 0; c < C; c++) s += x[c];
        double m = s / C, v = 0.0;
        for (int c = 0; c < C; c++) {
            double d = x[c] - m;
            v += d * d;
        }
        float mf = (float)m;
        float r  = (float)(1.0 / sqrt(v / C + (double)eps));
        for (int c = 0; c < C; c++) y[c] = (x[c] - mf) * r * w[c] + b[c];
        if (mean) mean[i] = mf;
        if (rstd) rstd[i] = r;
    }
}
