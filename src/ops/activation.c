/* activation.c: exact GELU (erf form, PyTorch nn.GELU() and HF "gelu") and SwiGLU (DINOv2 ViT-g:
 * SiLU(x1) * x2 over the two halves of the fused w12 projection), forward and backward.
 *
 * GELU runs on the branch-free erf of vecmath.h (within 1.33 ulp of the true value over all
 * floats; glibc's erff within 1), vectorised: an AVX-512 or AVX2 + FMA copy of each loop where the
 * CPU has them, the portable copy elsewhere (4-15x faster than erff on the 2-core EPYC, depending on how
 * many inputs take erff's slow paths). dinoc_gelu_*_ref keep the scalar libm form as the oracle.
 * Tested in tests/test_ops.c, tests/test_grad.c (finite differences), tests/test_ops_parity.c
 * (torch) and tests/test_fastops.c (fast against reference, both variants, edge values). */
#include "../internal.h"
#include "vecmath.h"

#include <math.h>

void dinoc_gelu_forward_ref(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i]  = 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
    }
}

/* Exact GELU backward: gelu(x) = x Phi(x), so gelu'(x) = Phi(x) + x phi(x) with
 * Phi(x) = (1 + erf(x / sqrt 2)) / 2 and phi(x) = exp(-x^2 / 2) / sqrt(2 pi). dinp += dout * gelu'.
 * In float: both terms are bounded (|x phi(x)| <= 0.25) and nothing cancels badly. */
void dinoc_gelu_backward_ref(float *dinp, const float *dout, const float *inp, size_t n) {
    const float inv_sqrt_2pi = 0.3989422804014327f;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x   = inp[i];
        float cdf = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
        float pdf = inv_sqrt_2pi * expf(-0.5f * x * x);
        dinp[i] += dout[i] * (cdf + x * pdf);
    }
}

/* One element of each, the same expressions as the references with vecmath.h's erf and exp. */
DINOC_INLINE float gelu1(float x, int fused) {
    return 0.5f * x * (1.0f + dinoc_vm_erf(x * (float)M_SQRT1_2, fused));
}

/* phi(x) = exp(-x^2 / 2) / sqrt(2 pi) from the exp(-z^2) that erf computes anyway. z = x / sqrt 2
 * is rounded, so z^2 is x^2 / 2 within about 3 * 2^-24 relative and phi moves by that times
 * x^2 / 2: x phi(x) by at most 3 * 2^-25 * x^3 phi(x) <= 4.2e-8 (at |x| = sqrt 3), a third of an
 * ulp of gelu'(x) there. */
DINOC_INLINE float gelu_grad1(float x, int fused) {
    float e, cdf = 0.5f * (1.0f + dinoc_vm_erf_exp(x * (float)M_SQRT1_2, &e, fused));
    float pdf = 0.3989422804014327f * e;
    return dinoc_vm_madd(x, pdf, cdf, fused);
}

/* Plain loops GCC vectorises. The forward's out and inp are either the same array (in place: the
 * inference forward) or disjoint (restrict), so no run-time overlap check sends an in-place call
 * down a scalar path. The backward's dinp += dout * g adds one rounded product, so two calls give
 * exactly twice one call. */
DINOC_INLINE void gelu_fwd_body(float *restrict out, const float *restrict inp, size_t n, int fused) {
    for (size_t i = 0; i < n; i++) out[i] = gelu1(inp[i], fused);
}
DINOC_INLINE void gelu_fwd_body_inplace(float *x, size_t n, int fused) {
    for (size_t i = 0; i < n; i++) x[i] = gelu1(x[i], fused);
}
DINOC_INLINE void gelu_bwd_body(float *dinp, const float *dout, const float *inp, size_t n,
                                int fused) {
    for (size_t i = 0; i < n; i++) dinp[i] += dout[i] * gelu_grad1(inp[i], fused);
}

/* QuickGELU: x s(1.702 x), s(z) = 1 / (1 + e^-z), and its derivative s + 1.702 x s (1 - s).
 * s and 1 - s both come from e = exp(-|z|) <= 1, which never overflows: for z >= 0, s = 1 / (1 + e)
 * and 1 - s = e / (1 + e); for z < 0 the two swap. So 1 - s carries no cancellation (it is
 * tiny where s ~ 1), and the branch-free select vectorises. */
DINOC_INLINE void sigmoid_pair(float z, float *s, float *c, int fused) {
    const float e = dinoc_vm_exp_neg(-fabsf(z), fused), r = 1.0f / (1.0f + e), er = e * r;
    *s = z >= 0.0f ? r : er;
    *c = z >= 0.0f ? er : r;
}
DINOC_INLINE float qgelu1(float x, int fused) {
    float s, c;
    sigmoid_pair(1.702f * x, &s, &c, fused);
    return x * s;
}
DINOC_INLINE void qgelu_fwd_body(float *restrict out, const float *restrict inp, size_t n, int fused) {
    for (size_t i = 0; i < n; i++) out[i] = qgelu1(inp[i], fused);
}
DINOC_INLINE void qgelu_fwd_body_inplace(float *x, size_t n, int fused) {
    for (size_t i = 0; i < n; i++) x[i] = qgelu1(x[i], fused);
}
DINOC_INLINE void qgelu_bwd_body(float *dinp, const float *dout, const float *inp, size_t n, int fused) {
    for (size_t i = 0; i < n; i++) {
        const float x = inp[i];
        float       s, c;
        sigmoid_pair(1.702f * x, &s, &c, fused);
        dinp[i] += dout[i] * dinoc_vm_madd(1.702f * x, s * c, s, fused);
    }
}

/* one copy of each per level (vecmath.h) */
#define ACT_COPY(name, target, fused)                                                                  \
    target static void gelu_fwd_##name(float *out, const float *inp, size_t n) {                       \
        if (out == inp) gelu_fwd_body_inplace(out, n, fused);                                         \
        else gelu_fwd_body(out, inp, n, fused);                                                       \
    }                                                                                                  \
    target static void gelu_bwd_##name(float *dinp, const float *dout, const float *inp, size_t n) { \
        gelu_bwd_body(dinp, dout, inp, n, fused);                                                     \
    }                                                                                                  \
    target static void qgelu_fwd_##name(float *out, const float *inp, size_t n) {                      \
        if (out == inp) qgelu_fwd_body_inplace(out, n, fused);                                        \
        else qgelu_fwd_body(out, inp, n, fused);                                                      \
    }                                                                                                  \
    target static void qgelu_bwd_##name(float *dinp, const float *dout, const float *inp, size_t n) {\
        qgelu_bwd_body(dinp, dout, inp, n, fused);                                                    \
    }
DINOC_LEVEL_COPIES(ACT_COPY)
#undef ACT_COPY
typedef void (*unary_fn)(float *, const float *, size_t);
typedef void (*binary_fn)(float *, const float *, const float *, size_t);
DINOC_LEVEL_TABLE(unary_fn, k_gelu_fwd, gelu_fwd);
DINOC_LEVEL_TABLE(binary_fn, k_gelu_bwd, gelu_bwd);
DINOC_LEVEL_TABLE(unary_fn, k_qgelu_fwd, qgelu_fwd);
DINOC_LEVEL_TABLE(binary_fn, k_qgelu_bwd, qgelu_bwd);

/* Elementwise, so any split over the threads gives the same bits. */
static void run_unary(const unary_fn *table, float *out, const float *inp, size_t n) {
    const unary_fn f = table[dinoc_ops_level()];
#pragma omp parallel if (n >= 4096)
    {
        size_t i0, i1;
        dinoc_omp_chunk(n, 16, &i0, &i1);
        f(out + i0, inp + i0, i1 - i0);
    }
}
static void run_binary(const binary_fn *table, float *dinp, const float *dout, const float *inp, size_t n) {
    const binary_fn f = table[dinoc_ops_level()];
#pragma omp parallel if (n >= 4096)
    {
        size_t i0, i1;
        dinoc_omp_chunk(n, 16, &i0, &i1);
        f(dinp + i0, dout + i0, inp + i0, i1 - i0);
    }
}

void dinoc_gelu_forward(float *out, const float *inp, size_t n) { run_unary(k_gelu_fwd, out, inp, n); }
/* On this thread only (the fused ViT forward's row blocks). */
void dinoc_gelu_forward_serial(float *out, const float *inp, size_t n) { k_gelu_fwd[dinoc_ops_level()](out, inp, n); }
void dinoc_quick_gelu_forward_serial(float *out, const float *inp, size_t n) {
    k_qgelu_fwd[dinoc_ops_level()](out, inp, n);
}
void dinoc_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    run_binary(k_gelu_bwd, dinp, dout, inp, n);
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

/* ---- QuickGELU (OpenAI CLIP, HF "quick_gelu"): x * sigmoid(1.702 x) ----------------------------
 * Shared by the CLIP text tower (src/nn/text.c) and CLIP's image tower (src/nn/vit.c); the
 * vectorised copies above (vecmath.h's exp). The _ref pair is the plain libm form, the oracle of
 * tests/test_fastops.c. Declared in src/nn/vit.h. */
void dinoc_quick_gelu_forward(float *out, const float *inp, size_t n) { run_unary(k_qgelu_fwd, out, inp, n); }
void dinoc_quick_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    run_binary(k_qgelu_bwd, dinp, dout, inp, n);
}

void dinoc_quick_gelu_forward_ref(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = inp[i] / (1.0f + expf(-1.702f * inp[i]));
}

/* d/dx x s(1.702 x) = s + 1.702 x s (1 - s); dinp += dout * that. */
void dinoc_quick_gelu_backward_ref(float *dinp, const float *dout, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float x = inp[i], sg = 1.0f / (1.0f + expf(-1.702f * x));
        dinp[i] += dout[i] * (sg + 1.702f * x * sg * (1.0f - sg));
    }
}
