/* vecmath.h: branch-free float exp and erf that GCC vectorises, and the run-time AVX2 + FMA /
 * AVX-512 dispatch the fast kernels in src/ops/ share (internal to src/ops/).
 *
 * Each helper takes `fused`, a constant at every call site: 1 inside a function compiled with
 * DINOC_TARGET_AVX2 (a*b + c becomes one FMA instruction), 0 elsewhere (a multiply and an add, so
 * the portable build never calls libm's software fmaf). The two variants round differently by
 * an ulp here and there; both stay within the error bounds below (tests/test_fastops.c checks the
 * portable one as well as the one this machine picks).
 *
 * Accuracy, measured over every float input against double-precision libm (tests/test_fastops.c
 * re-checks a dense sweep; glibc's erff is within 1 ulp):
 *   dinoc_vm_erf(_exp)  erf: 1.33 ulp (portable copy), 1.08 ulp (FMA copy), every float z in
 *                       [0, 13.3] (odd: the negatives mirror it; beyond, erf = 1);
 *                       exp(-z^2): 1.01 ulp of exp(-(z*z rounded to float))
 *   dinoc_vm_exp_neg    0.98 / 1.01 ulp on [-87.3, 0]; 0 below -87.3 (expf's underflow to
 *                       denormals is flushed); NaN stays NaN
 */
#ifndef DINOC_VECMATH_H
#define DINOC_VECMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The AVX2 + FMA variant of a kernel is a second copy of the same C compiled with this target
 * attribute; dinoc_cpu_avx2_fma() picks it at run time. An explicit check rather than GCC's
 * target_clones: target_clones resolves through an ifunc, which runs before ThreadSanitizer's
 * runtime is up and crashes under scripts/tsan.sh. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DINOC_HAVE_AVX2_VARIANT 1
#define DINOC_TARGET_AVX2 __attribute__((target("avx2,fma")))
static inline int dinoc_cpu_avx2_fma(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
/* A third copy for AVX-512 (F, VL, BW, DQ: Skylake-SP and later, Zen 4 and later): the same C,
 * vectorised over 16 floats. Elementwise loops and the explicit-lane sums (layernorm.c) do the
 * same operations per element as the AVX2 copy, so both give the same bits (tests/test_fastops.c).
 * __builtin_cpu_supports also checks that the OS saves the AVX-512 registers. */
#define DINOC_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
static inline int dinoc_cpu_avx512(void) {
    return dinoc_cpu_avx2_fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
}
#else
#define DINOC_HAVE_AVX2_VARIANT 0
#define DINOC_TARGET_AVX2
#define DINOC_TARGET_AVX512
static inline int dinoc_cpu_avx2_fma(void) { return 0; }
static inline int dinoc_cpu_avx512(void) { return 0; }
#endif

/* The copies a kernel may have, by level (dinoc_ops_level() in internal.h picks one). */
enum { DINOC_OPS_PORTABLE = 0, DINOC_OPS_AVX2 = 1, DINOC_OPS_AVX512 = 2 };

/* A kernel's copies, indexed by level: NAME_portable, NAME_avx2, NAME_avx512 (x86), or the
 * portable one alone. TYPE is the function-pointer type. */
#if DINOC_HAVE_AVX2_VARIANT
#define DINOC_LEVEL_TABLE(type, table, name) \
    static type const table[] = {name##_portable, name##_avx2, name##_avx512}
#else
#define DINOC_LEVEL_TABLE(type, table, name) static type const table[] = {name##_portable}
#endif
/* Instantiates a kernel's copies: COPY(name, target, fused) for the portable copy and, on x86, the
 * AVX2 + FMA and AVX-512 ones (the names DINOC_LEVEL_TABLE expects). */
#if DINOC_HAVE_AVX2_VARIANT
#define DINOC_LEVEL_COPIES(COPY) \
    COPY(portable, , 0)          \
    COPY(avx2, DINOC_TARGET_AVX2, 1) COPY(avx512, DINOC_TARGET_AVX512, 1)
#else
#define DINOC_LEVEL_COPIES(COPY) COPY(portable, , 0)
#endif
static inline int dinoc_cpu_ops_level(void) {
    return dinoc_cpu_avx512() ? DINOC_OPS_AVX512 : dinoc_cpu_avx2_fma() ? DINOC_OPS_AVX2 : DINOC_OPS_PORTABLE;
}

#if defined(__GNUC__)
#define DINOC_INLINE static inline __attribute__((always_inline))
#else
#define DINOC_INLINE static inline
#endif

/* a * b + c: one rounding when fused (only ever 1 inside a DINOC_TARGET_AVX2 function). */
DINOC_INLINE float dinoc_vm_madd(float a, float b, float c, int fused) {
    return fused ? __builtin_fmaf(a, b, c) : a * b + c;
}

/* exp(x) for x in [-87.3, 0] (no checks: the callers clamp): x = n ln2 + r with |r| <= ln2 / 2
 * (n rounded with the 1.5 * 2^23 trick, which needs no floorf and so vectorises on SSE2), exp(r)
 * by Cephes' degree-7 polynomial, 2^n from the exponent bits (n >= -126: a normal float). */
DINOC_INLINE float dinoc_vm_exp_core(float x, int fused) {
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    /* ln2 = 0.693359375 - 2.12194440e-4 (Cody-Waite): n * 0.693359375 is exact for |n| <= 126 */
    float r = dinoc_vm_madd(n, -0.693359375f, x, fused);
    r       = dinoc_vm_madd(n, 2.12194440e-4f, r, fused);
    float p = 1.9875691500e-4f;
    p       = dinoc_vm_madd(p, r, 1.3981999507e-3f, fused);
    p       = dinoc_vm_madd(p, r, 8.3334519073e-3f, fused);
    p       = dinoc_vm_madd(p, r, 4.1665795894e-2f, fused);
    p       = dinoc_vm_madd(p, r, 1.6666665459e-1f, fused);
    p       = dinoc_vm_madd(p, r, 5.0000001201e-1f, fused);
    p       = dinoc_vm_madd(p, r * r, r, fused) + 1.0f;
    int32_t bits = ((int32_t)n + 127) * (1 << 23);
    float   scale;
    memcpy(&scale, &bits, sizeof scale); /* 2^n */
    return p * scale;
}

/* exp(x) for x <= 0. The argument is clamped before the integer conversion, so NaN and -inf
 * never reach it; results below e^-87.3 (where 2^n would leave the normal range) are 0; NaN
 * stays NaN. */
DINOC_INLINE float dinoc_vm_exp_neg(float x, int fused) {
    float xc = x > -87.3f ? x : -87.3f; /* NaN -> -87.3 too */
    xc       = xc < 0.0f ? xc : 0.0f;
    float y  = dinoc_vm_exp_core(xc, fused);
    y        = x < -87.3f ? 0.0f : y;
    return x == x ? y : x;
}

/* erf(z), and exp(-z^2) into *e (GELU's backward needs both: with z = x / sqrt 2, exp(-z^2) is
 * exp(-x^2 / 2)). Two pieces, fitted here as minimax approximations (Lawson's iteration on
 * Chebyshev points, then rounded to float):
 *   |z| <  0.921875: erf(z) = z + z P(z^2), P of degree 5 (the z term stays exact)
 *   |z| >= 0.921875: erf(z) = sign(z) (1 - exp(-z^2) R(t)), R(t) ~ erfc(t) exp(t^2) of degree 8
 *                    in t - 2.4609375, t = min(|z|, 4) (beyond 4, exp(-z^2) R < 2^-26 and the
 *                    result rounds to 1, as erf does in float from 3.92 on)
 * Both pieces are computed and one is selected, so loops have no branch. The rounding of z^2
 * moves exp(-z^2) by <= 3 * 2^-24 z^2 relative, which erfc's size keeps below 0.2 ulp of erf.
 * NaN gives NaN (through the first piece, which the failed comparison selects); *e is 0 for
 * z^2 > 87.3 (where expf underflows) and for NaN. */
DINOC_INLINE float dinoc_vm_erf_exp(float z, float *e, int fused) {
    float t = fabsf(z), s = z * z;
    float p = -5.990879145e-04f;
    p       = dinoc_vm_madd(p, s, 4.993186332e-03f, fused);
    p       = dinoc_vm_madd(p, s, -2.676662058e-02f, fused);
    p       = dinoc_vm_madd(p, s, 1.128181666e-01f, fused);
    p       = dinoc_vm_madd(p, s, -3.761249483e-01f, fused);
    p       = dinoc_vm_madd(p, s, 1.283791512e-01f, fused);
    float small = dinoc_vm_madd(p, z, z, fused);
    float ez    = dinoc_vm_exp_core(-(s < 87.3f ? s : 87.3f), fused); /* NaN -> 87.3 too */
    ez          = s <= 87.3f ? ez : 0.0f;
    float u     = (t < 4.0f ? t : 4.0f) - 2.4609375f;
    float R     = 1.280081487e-04f;
    R           = dinoc_vm_madd(R, u, 2.978084667e-04f, fused);
    R           = dinoc_vm_madd(R, u, 6.767979357e-04f, fused);
    R           = dinoc_vm_madd(R, u, -6.601548521e-04f, fused);
    R           = dinoc_vm_madd(R, u, 2.408798318e-03f, fused);
    R           = dinoc_vm_madd(R, u, -8.580107242e-03f, fused);
    R           = dinoc_vm_madd(R, u, 2.586160414e-02f, fused);
    R           = dinoc_vm_madd(R, u, -7.632655650e-02f, fused);
    R           = dinoc_vm_madd(R, u, 2.137508690e-01f, fused);
    float large = copysignf(dinoc_vm_madd(-ez, R, 1.0f, fused), z);
    *e          = ez;
    return t >= 0.921875f ? large : small;
}

/* erf(z) alone */
DINOC_INLINE float dinoc_vm_erf(float z, int fused) {
    float e;
    return dinoc_vm_erf_exp(z, &e, fused);
}

#endif /* DINOC_VECMATH_H */
