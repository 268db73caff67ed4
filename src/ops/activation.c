/* activation.c: exact GELU (erf form, PyTorch nn.GELU() and HF "gelu") and SwiGLU (DINOv2 ViT-g:
 * SiLU(x1) * x2 over the two halves of the fused w12 projection). Tested in tests/test_ops.c. */
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
