/* batchnorm.c: BatchNorm2d over NCHW tensors, training mode (batch statistics, running-stat
 * update) and eval mode (running statistics), and the training-mode backward. Tested in
 * tests/test_cnn.c (finite differences against a double forward, torch parity from
 * tests/py/gen_cnn.py).
 *
 * Choices, following torch 1.13's CPU kernel (aten/src/ATen/native/Normalization.cpp):
 * - Statistics are summed in double (torch's accumulate type for float on the CPU), two passes
 *   (mean, then squared deviations), so large or offset activations lose nothing to cancellation.
 * - Normalisation uses the biased variance (divide by n = B*H*W); the running variance is updated
 *   with the unbiased one (n / (n - 1)), momentum 0.1 by default: running = (1-m) running + m stat.
 *   With n == 1 torch raises ("Expected more than 1 value per channel"); the caller (resnet.c)
 *   refuses such batches, and here the unbiased factor falls back to 1.
 * - Every loop is parallel over channels: one thread owns a channel's sums, so the results do not
 *   depend on the thread count. */
#include "cnn.h"

#include <math.h>

void dinoc_batchnorm_forward_train(float *out, float *mean, float *rstd, float *running_mean,
                                   float *running_var, const float *inp, const float *w,
                                   const float *b, int B, int C, int HW, float eps,
                                   float momentum) {
    const double n = (double)B * HW;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int bi = 0; bi < B; bi++) {
            const float *x = inp + ((size_t)bi * C + c) * HW;
            for (int p = 0; p < HW; p++) s += x[p];
        }
        const double mu = s / n;
        double       ss = 0;
        for (int bi = 0; bi < B; bi++) {
            const float *x = inp + ((size_t)bi * C + c) * HW;
            for (int p = 0; p < HW; p++) ss += (x[p] - mu) * (x[p] - mu);
        }
        const double var = ss / n, rs = 1.0 / sqrt(var + eps);
        mean[c] = (float)mu;
        rstd[c] = (float)rs;
        if (running_mean)
            running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
        if (running_var)
            running_var[c] = (float)((1.0 - momentum) * running_var[c] +
                                     momentum * (n > 1 ? ss / (n - 1) : var));
        /* y = x * scale + shift, as torch folds it */
        const float scale = (float)(w[c] * rs), shift = (float)(b[c] - mu * w[c] * rs);
        for (int bi = 0; bi < B; bi++) {
            const float *x = inp + ((size_t)bi * C + c) * HW;
            float       *y = out + ((size_t)bi * C + c) * HW;
            for (int p = 0; p < HW; p++) y[p] = x[p] * scale + shift;
        }
    }
}

void dinoc_batchnorm_forward_eval(float *out, const float *inp, const float *w, const float *b,
                                  const float *running_mean, const float *running_var, int B,
                                  int C, int HW, float eps) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int bi = 0; bi < B; bi++)
        for (int c = 0; c < C; c++) {
            const double rs    = 1.0 / sqrt((double)running_var[c] + eps);
            const float  scale = (float)(w[c] * rs);
            const float  shift = (float)(b[c] - running_mean[c] * (w[c] * rs));
            const float *x     = inp + ((size_t)bi * C + c) * HW;
            float       *y     = out + ((size_t)bi * C + c) * HW;
            for (int p = 0; p < HW; p++) y[p] = x[p] * scale + shift;
        }
}

/* With xhat = (x - mean) rstd and n = B*HW values per channel:
 *   db += sum dy        dw += sum dy xhat
 *   dx += w rstd (dy - sum(dy) / n - xhat sum(dy xhat) / n)
 * (the batch mean and variance depend on every x, hence the two correction terms). */
void dinoc_batchnorm_backward(float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, const float *mean,
                              const float *rstd, int B, int C, int HW) {
    const double n = (double)B * HW;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const double mu = mean[c], rs = rstd[c];
        double       sdy = 0, sdyx = 0;
        for (int bi = 0; bi < B; bi++) {
            const float *x  = inp + ((size_t)bi * C + c) * HW;
            const float *dy = dout + ((size_t)bi * C + c) * HW;
            for (int p = 0; p < HW; p++) {
                sdy += dy[p];
                sdyx += dy[p] * ((x[p] - mu) * rs);
            }
        }
        if (db) db[c] += (float)sdy;
        if (dw) dw[c] += (float)sdyx;
        if (!dinp) continue;
        const double k = w[c] * rs, mdy = sdy / n, mdyx = sdyx / n;
        for (int bi = 0; bi < B; bi++) {
            const float *x  = inp + ((size_t)bi * C + c) * HW;
            const float *dy = dout + ((size_t)bi * C + c) * HW;
            float       *dx = dinp + ((size_t)bi * C + c) * HW;
            for (int p = 0; p < HW; p++)
                dx[p] += (float)(k * (dy[p] - mdy - (x[p] - mu) * rs * mdyx));
        }
    }
}
