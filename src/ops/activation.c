/* activation.c: exact GELU (erf form, PyTorch nn.GELU() and HF "gelu") and SwiGLU (DINOv2 ViT-g:
 * SiLU(x1) * x2 over the two halves of the fused w12 projection), forward and backward. Tested in
 * tests/test_ops.c, tests/test_grad.c (finite differences) and tests/test_ops_parity.c (torch). */
#include "../internal.h"

#include <math.h>

void dinoc_gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i]  = 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
    }
}

void dinoc_swiglu_forward(float *out, const float *inp, int N, int F) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        const float *x1 = inp + (size_t)r * 2 * F; /* [F] gate half */
        const float *x2 = x1 + F;                  /* [F] value half */
        float       *y  = out + (size_t)r * F;
        for (int j = 0; j < F; j++) {
            float g = x1[j];
            y[j]    = g / (1.0f + expf(-g)) * x2[j];
        }
    }
}

/* Exact GELU backward: gelu(x) = x Phi(x), so gelu'(x) = Phi(x) + x phi(x) with
 * Phi(x) = (1 + erf(x / sqrt 2)) / 2 and phi(x) = exp(-x^2 / 2) / sqrt(2 pi). dinp += dout * gelu'.
 * In float: both terms are bounded (|x phi(x)| <= 0.25) and nothing cancels badly. */
void dinoc_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    const float inv_sqrt_2pi = 0.3989422804014327f;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x   = inp[i];
        float cdf = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
        float pdf = inv_sqrt_2pi * expf(-0.5f * x * x);
        dinp[i] += dout[i] * (cdf + x * pdf);
    }
}

/* SwiGLU backward, y = SiLU(g) v with s = sigmoid(g), SiLU(g) = g s:
 *   dv += dout * g s        dg += dout * v * s (1 + g (1 - s))     (SiLU'(g) = s + g s (1 - s)) */
void dinoc_swiglu_backward(float *dinp, const float *dout, const float *inp, int N, int F) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        const float *x1  = inp + (size_t)r * 2 * F;
        const float *x2  = x1 + F;
        float       *dx1 = dinp + (size_t)r * 2 * F;
        float       *dx2 = dx1 + F;
        const float *dy  = dout + (size_t)r * F;
        for (int j = 0; j < F; j++) {
            float g = x1[j];
            float s = 1.0f / (1.0f + expf(-g));
            dx2[j] += dy[j] * g * s;
            dx1[j] += dy[j] * x2[j] * s * (1.0f + g * (1.0f - s));
        }
    }
}
