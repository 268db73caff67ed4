/* layernorm.c: LayerNorm over the last dimension (PyTorch nn.LayerNorm semantics: biased variance,
 * eps inside the square root). Statistics are accumulated in double so that rows with a large mean
 * (the residual stream of deep ViTs) keep their precision. Tested in tests/test_ops.c; the backward
 * in tests/test_grad.c (finite differences) and tests/test_ops_parity.c (torch). */
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

/* LayerNorm backward (llm.c's formula), with norm = (x - mean) * rstd from the saved statistics,
 * y = norm * w + b and dnorm = dout * w:
 *   dinp += rstd * (dnorm - mean_c(dnorm) - norm * mean_c(dnorm * norm))
 *   dw   += sum_rows dout * norm          db += sum_rows dout
 * dinp: parallel over rows, the two row means accumulated in double (they are subtracted from
 * dnorm, so their error would show up in every element of the row). dw/db: parallel over blocks
 * of 64 channels, each channel summed over the rows in row order in double: no float reduction
 * across threads, so the result is the same for any thread count. */
void dinoc_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, const float *mean,
                              const float *rstd, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *x  = inp + (size_t)i * C;
        const float *dy = dout + (size_t)i * C;
        float       *dx = dinp + (size_t)i * C;
        float        m = mean[i], r = rstd[i];
        double       s1 = 0.0, s2 = 0.0;
        for (int c = 0; c < C; c++) {
            float norm = (x[c] - m) * r;
            float dn   = dy[c] * w[c];
            s1 += dn;
            s2 += (double)dn * norm;
        }
        float mdn = (float)(s1 / C), mdnn = (float)(s2 / C);
        for (int c = 0; c < C; c++) {
            float norm = (x[c] - m) * r;
            float dn   = dy[c] * w[c];
            dx[c] += (dn - mdn - norm * mdnn) * r;
        }
    }
    if (!dw && !db) return;
    enum { CB = 64 };
    int nblk = (C + CB - 1) / CB;
#pragma omp parallel for schedule(static)
    for (int bk = 0; bk < nblk; bk++) {
        int    c0 = bk * CB, c1 = c0 + CB < C ? c0 + CB : C;
        double aw[CB] = {0}, ab[CB] = {0};
        for (int i = 0; i < N; i++) {
            const float *x  = inp + (size_t)i * C;
            const float *dy = dout + (size_t)i * C;
            float        m = mean[i], r = rstd[i];
            for (int c = c0; c < c1; c++) {
                float norm = (x[c] - m) * r;
                aw[c - c0] += (double)dy[c] * norm;
                ab[c - c0] += dy[c];
            }
        }
        for (int c = c0; c < c1; c++) {
            if (dw) dw[c] += (float)aw[c - c0];
            if (db) db[c] += (float)ab[c - c0];
        }
    }
}
