/* test_fastops.c: the vectorised kernels of src/ops/ (vecmath.h's erf and exp, GELU, LayerNorm,
 * the small-T attention) against their references: double-precision math, and the scalar / BLAS
 * implementations they replaced (dinoc_*_ref). Every op case runs with each copy this CPU can run
 * (AVX-512, AVX2 + FMA, portable: dinoc_ops_force_level), so an AVX-512 machine checks all three;
 * the AVX-512 copies also give the AVX2 copies' bits. Plus: NaN and infinities, in-place calls, odd lengths,
 * results independent of the thread count, and the attention gradients against central finite
 * differences of a double-precision forward.
 *
 * Tolerances are derived next to each check from the error bounds stated in src/ops/vecmath.h
 * (erf 1.3 ulp, exp 2 ulp) and from float rounding of the few operations that differ (an FMA
 * instead of a multiply and an add; a different summation order). */
#include "check.h"
#include "../src/internal.h"
#include "../src/ops/vecmath.h"

#include <float.h>
#include <string.h>

static void fill(float *x, size_t n, uint64_t seed, float scale) {
    dinoc_rng r;
    dinoc_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * dinoc_rng_normal(&r);
}

static float *falloc(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static int same_float(float a, float b) { return (isnan(a) && isnan(b)) || a == b; }

/* the copies to test: variant v runs level (the CPU's highest) - v, down to the portable copy, so
 * an AVX-512 machine checks all three (vecmath.h); variant 0 lifts the cap */
static int n_variants(void) { return dinoc_cpu_ops_level() + 1; }
static void use_variant(int v) { dinoc_ops_force_level(dinoc_cpu_ops_level() - v); }
static const char *variant_name(int v) {
    static const char *const names[] = {"portable", "avx2", "avx512"};
    return names[dinoc_cpu_ops_level() - v];
}

/* The AVX-512 copies do per element what the AVX2 copies do (elementwise loops; LayerNorm's sums
 * over explicit lanes), so they give the same bits: f(level) run at both levels. */
static void check_avx512_same_bits(const char *what, void (*f)(float *out, size_t n, void *u), size_t n, void *u) {
    if (dinoc_cpu_ops_level() < DINOC_OPS_AVX512) return;
    float *a = falloc(n), *b = falloc(n);
    dinoc_ops_force_level(DINOC_OPS_AVX2);
    f(a, n, u);
    dinoc_ops_force_level(DINOC_OPS_AVX512);
    f(b, n, u);
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += !(same_float(a[i], b[i]) && signbit(a[i]) == signbit(b[i]));
    CHECK_MSG(diff == 0, "%s: the AVX-512 copy differs from the AVX2 copy in %zu of %zu values", what, diff, n);
    fprintf(stderr, "    %s: AVX-512 and AVX2 copies, %zu values, %zu differ\n", what, n, diff);
    free(a), free(b);
}

/* ulp of a double value seen as a float (the spacing of floats around |v|; denormal floor) */
static double float_ulp(double v) {
    double a = fabs(v);
    if (a < FLT_MIN) return ldexp(1.0, -149);
    int e;
    frexp(a, &e);
    return ldexp(1.0, e - 24);
}

/* ---- erf and exp over a dense sweep --------------------------------------------------------- */

static void erf_portable(float *o, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) o[i] = dinoc_vm_erf(x[i], 0);
}
static void exp_portable(float *o, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) o[i] = dinoc_vm_exp_neg(x[i], 0);
}
#if DINOC_HAVE_AVX2_VARIANT
DINOC_TARGET_AVX2 static void erf_avx2(float *o, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) o[i] = dinoc_vm_erf(x[i], 1);
}
DINOC_TARGET_AVX2 static void exp_avx2(float *o, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) o[i] = dinoc_vm_exp_neg(x[i], 1);
}
DINOC_TARGET_AVX512 static void erf_avx512(float *o, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) o[i] = dinoc_vm_erf(x[i], 1);
}
DINOC_TARGET_AVX512 static void exp_avx512(float *o, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) o[i] = dinoc_vm_exp_neg(x[i], 1);
}
#endif

/* Every 61st float of [lo_bits, hi_bits] (bit patterns of non-negative floats, or of negative ones
 * walking down) through f; returns the worst error in ulps against ref. */
static double sweep(void (*f)(float *, const float *, size_t), double (*ref)(double), uint32_t lo_bits,
                    uint32_t hi_bits, double *worst_x) {
    enum { CHUNK = 4096 };
    float  x[CHUNK], y[CHUNK];
    double worst = 0;
    for (uint64_t b = lo_bits; b <= hi_bits;) {
        size_t n = 0;
        for (; n < CHUNK && b <= hi_bits; n++, b += 61) {
            uint32_t u = (uint32_t)b;
            memcpy(&x[n], &u, sizeof u);
        }
        f(y, x, n);
        for (size_t i = 0; i < n; i++) {
            double want = ref(x[i]), e = fabs(y[i] - want) / float_ulp(want);
            if (!(e <= worst)) worst = e, *worst_x = x[i];
        }
    }
    return worst;
}

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

DINOC_TEST(test_fastops_erf_exp_sweep) {
    /* vecmath.h's bounds, measured over every float (see its header): erf 1.33 ulp (portable) and
     * 1.08 (FMA); exp 1.01. Checked here on every 61st float (~18 million points): erf <= 1.5,
     * exp <= 2. */
    for (int v = 0; v < n_variants(); v++) {
        void (*erf_f)(float *, const float *, size_t) = erf_portable;
        void (*exp_f)(float *, const float *, size_t) = exp_portable;
#if DINOC_HAVE_AVX2_VARIANT
        const int level = dinoc_cpu_ops_level() - v;
        if (level == DINOC_OPS_AVX512) erf_f = erf_avx512, exp_f = exp_avx512;
        if (level == DINOC_OPS_AVX2) erf_f = erf_avx2, exp_f = exp_avx2;
#endif
        double wx = 0, we = sweep(erf_f, erf, 0, bits_of(4.5f), &wx);
        fprintf(stderr, "    erf %-8s worst %.3f ulp at %.9g\n", variant_name(v), we, wx);
        CHECK_MSG(we <= 1.5, "erf (%s): %.3f ulp at %.9g", variant_name(v), we, wx);
        /* negative z: exactly -erf(|z|) (copysign), and the far tail saturates at 1 */
        float x[6] = {-0.3f, -0.921875f, -2.5f, -3.95f, 7.0f, 1e30f}, y[6], yp[6];
        erf_f(y, x, 6);
        for (int i = 0; i < 4; i++) {
            float p = -x[i];
            erf_f(&yp[i], &p, 1);
            CHECK_MSG(y[i] == -yp[i], "erf(%g) = %.9g, erf(%g) = %.9g", x[i], y[i], p, yp[i]);
        }
        CHECK(y[4] == 1.0f && y[5] == 1.0f);
        /* NaN propagates; the infinities saturate; signed zero and the smallest denormal keep
         * erf(z) ~ 2 z / sqrt(pi) */
        float sp[5] = {NAN, INFINITY, -INFINITY, -0.0f, 1e-45f}, so[5];
        erf_f(so, sp, 5);
        CHECK(isnan(so[0]) && so[1] == 1.0f && so[2] == -1.0f && so[3] == 0.0f && signbit(so[3]));
        CHECK(so[4] == erff(1e-45f));

        we = sweep(exp_f, exp, bits_of(-0.0f), bits_of(-87.3f), &wx);
        fprintf(stderr, "    exp %-8s worst %.3f ulp at %.9g\n", variant_name(v), we, wx);
        CHECK_MSG(we <= 2.0, "exp_neg (%s): %.3f ulp at %.9g", variant_name(v), we, wx);
        float ex[4] = {-88.0f, -INFINITY, NAN, 0.0f}, ey[4];
        exp_f(ey, ex, 4);
        CHECK(ey[0] == 0.0f && ey[1] == 0.0f && isnan(ey[2]) && ey[3] == 1.0f);
    }
}

/* ---- GELU --------------------------------------------------------------------------------------- */

/* Inputs: a dense sweep of [-12, 12], edges of the two erf pieces and of the saturation, and the
 * special values (the last 6). */
static float *gelu_inputs(size_t *n_out) {
    const size_t nsweep = 200001;
    size_t       n = nsweep + 12 + 6;
    float       *x = falloc(n);
    for (size_t i = 0; i < nsweep; i++) x[i] = -12.0f + 24.0f * (float)i / (float)(nsweep - 1);
    const float edges[12] = {0.921875f * 1.41421356f, -0.921875f * 1.41421356f, 1.3037f, -1.3037f,
                             5.5437f, -5.5437f, 5.66f, -5.66f, 13.2f, -13.2f, 1e-30f, -3e-38f};
    for (int i = 0; i < 12; i++) x[nsweep + i] = edges[i];
    const float sp[6] = {NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f};
    for (int i = 0; i < 6; i++) x[nsweep + 12 + i] = sp[i];
    *n_out = n;
    return x;
}

struct gelu_args {
    const float *x, *dout;
};
static void gelu_fwd_of(float *out, size_t n, void *u) { dinoc_gelu_forward(out, ((struct gelu_args *)u)->x, n); }
static void gelu_bwd_of(float *out, size_t n, void *u) {
    dinoc_gelu_backward(out, ((struct gelu_args *)u)->dout, ((struct gelu_args *)u)->x, n);
}

/* An activation's forward and backward (f(out, n, args), the backward accumulating into a zeroed
 * out): the AVX-512 copy gives the AVX2 copy's bits, and 1 and 3 threads give the same bits
 * (elementwise: any split). */
static void check_act_copies(const char *name, void (*fwd)(float *, size_t, void *), void (*bwd)(float *, size_t, void *),
                             size_t n, void *args) {
    char what[64];
    snprintf(what, sizeof what, "%s backward", name);
    check_avx512_same_bits(name, fwd, n, args);
    check_avx512_same_bits(what, bwd, n, args);
    float    *y1 = falloc(n), *g1 = falloc(n), *y3 = falloc(n), *g3 = falloc(n);
    const int prev = dinoc_get_threads();
    dinoc_set_threads(1);
    fwd(y1, n, args), bwd(g1, n, args);
    dinoc_set_threads(3);
    fwd(y3, n, args), bwd(g3, n, args);
    dinoc_set_threads(prev);
    CHECK_MSG(memcmp(y1, y3, sizeof(float) * n) == 0 && memcmp(g1, g3, sizeof(float) * n) == 0,
              "%s: 1 and 3 threads differ", name);
    free(y1), free(g1), free(y3), free(g3);
}

DINOC_TEST(test_fastops_gelu) {
    size_t n;
    float *x = gelu_inputs(&n);
    float *y = falloc(n), *yr = falloc(n), *g = falloc(n), *gr = falloc(n), *dout = falloc(n);
    fill(dout, n, 7, 1);
    const size_t nfinite = n - 6;
    for (int v = 0; v < n_variants(); v++) {
        use_variant(v);
        dinoc_gelu_forward(y, x, n);
        dinoc_gelu_forward_ref(yr, x, n);
        /* Forward: 0.5 x (1 + erf(x / sqrt 2)). erf's 1.3 ulp (<= 1.3 * 2^-24 absolute, |erf| < 1)
         * times 0.5 |x|, plus the float roundings of the product (~1.5 ulp of the result): bound
         * 2^-23 (|x| + |gelu|), about 2x the worst case. Same bound for the libm reference. */
        double worst = 0, worst_ref = 0;
        for (size_t i = 0; i < nfinite; i++) {
            double xd = x[i], exact = 0.5 * xd * (1.0 + erf(xd * (double)(float)M_SQRT1_2));
            double tol = ldexp(fabs(xd) + fabs(exact), -23);
            worst      = fmax(worst, fabs(y[i] - exact) / tol);
            worst_ref  = fmax(worst_ref, fabs(yr[i] - exact) / tol);
        }
        fprintf(stderr, "    gelu %-8s err/bound %.3f (libm erff reference %.3f)\n", variant_name(v), worst,
                worst_ref);
        CHECK_MSG(worst <= 1.0, "gelu (%s): error %.3f x the bound", variant_name(v), worst);
        /* special values as the reference: NaN -> NaN, inf -> inf, -inf -> NaN (-inf * 0), -0 -> -0 */
        for (size_t i = nfinite; i < n; i++)
            CHECK_MSG(same_float(y[i], yr[i]) && signbit(y[i]) == signbit(yr[i]),
                      "gelu(%g) = %g, reference %g", x[i], y[i], yr[i]);
        /* in place, odd lengths and unaligned starts give the same bits */
        float *z = falloc(n);
        memcpy(z, x, sizeof(float) * n);
        dinoc_gelu_forward(z, z, n);
        CHECK_MSG(memcmp(z, y, sizeof(float) * n) == 0, "gelu in place differs");
        for (size_t len = 1; len < 40; len += 3) {
            float o[40];
            dinoc_gelu_forward(o, x + 1001, len);
            CHECK_MSG(memcmp(o, y + 1001, sizeof(float) * len) == 0, "gelu n=%zu differs", len);
        }
        free(z);

        /* Backward: dinp += dout * (Phi(x) + x phi(x)). Phi's error 0.5 * 1.3 ulp(erf) <= 2^-24,
         * |x phi(x)| <= 0.25 with exp's 2 ulp: <= 2^-23; the sum (< 1.25) rounds to 2^-24 and the
         * product with dout to one more ulp. Bound 2^-21 |dout| (about 2x); the same for the libm
         * reference. */
        memset(g, 0, sizeof(float) * n), memset(gr, 0, sizeof(float) * n);
        dinoc_gelu_backward(g, dout, x, n);
        dinoc_gelu_backward_ref(gr, dout, x, n);
        worst = worst_ref = 0;
        for (size_t i = 0; i < nfinite; i++) {
            double xd = x[i];
            double d  = 0.5 * (1.0 + erf(xd / sqrt(2.0))) + xd * exp(-0.5 * xd * xd) / sqrt(2.0 * M_PI);
            double exact = dout[i] * d, tol = ldexp(fabs(dout[i]), -21);
            worst        = fmax(worst, fabs(g[i] - exact) / tol);
            worst_ref    = fmax(worst_ref, fabs(gr[i] - exact) / tol);
        }
        fprintf(stderr, "    gelu' %-7s err/bound %.3f (libm reference %.3f)\n", variant_name(v), worst,
                worst_ref);
        CHECK_MSG(worst <= 1.0, "gelu backward (%s): error %.3f x the bound", variant_name(v), worst);
        for (size_t i = nfinite; i < n; i++)
            CHECK_MSG(same_float(g[i], gr[i]), "gelu'(%g): %g, reference %g", x[i], g[i], gr[i]);
    }
    use_variant(0);
    struct gelu_args ga = {x, dout};
    check_act_copies("gelu", gelu_fwd_of, gelu_bwd_of, n, &ga);
    free(x), free(y), free(yr), free(g), free(gr), free(dout);
}

/* ---- QuickGELU ----------------------------------------------------------------------------------- */

static void qgelu_fwd_of(float *out, size_t n, void *u) { dinoc_quick_gelu_forward(out, ((struct gelu_args *)u)->x, n); }
static void qgelu_bwd_of(float *out, size_t n, void *u) {
    dinoc_quick_gelu_backward(out, ((struct gelu_args *)u)->dout, ((struct gelu_args *)u)->x, n);
}

/* x s(z), z = 1.702 x rounded to float as the kernels round it (so the check measures the sigmoid
 * and the products, not the constant's rounding), in double. */
static double qgelu_exact(float x, double *deriv) {
    const double z = (double)(1.702f * x), s = 1.0 / (1.0 + exp(-z)), c = 1.0 / (1.0 + exp(z));
    if (deriv) *deriv = s + z * s * c;
    return (double)x * s;
}

DINOC_TEST(test_fastops_quick_gelu) {
    size_t n;
    float *x = gelu_inputs(&n);
    float *y = falloc(n), *yr = falloc(n), *g = falloc(n), *gr = falloc(n), *dout = falloc(n);
    fill(dout, n, 7, 1);
    const size_t nfinite = n - 6;
    for (int v = 0; v < n_variants(); v++) {
        use_variant(v);
        dinoc_quick_gelu_forward(y, x, n);
        dinoc_quick_gelu_forward_ref(yr, x, n);
        /* Forward: exp's 2 ulp in e = exp(-|z|), the division and the products: a few ulp of the
         * result; bound 2^-21 |y| (8 ulp), with an absolute floor of 1e-35 where the result leaves
         * the normal range (vecmath's exp flushes below e^-87.3 to 0, libm's returns denormals). */
        double worst = 0, worst_ref = 0;
        for (size_t i = 0; i < nfinite; i++) {
            const double exact = qgelu_exact(x[i], NULL), tol = fmax(ldexp(fabs(exact), -21), 1e-35);
            worst     = fmax(worst, fabs(y[i] - exact) / tol);
            worst_ref = fmax(worst_ref, fabs(yr[i] - exact) / tol);
        }
        fprintf(stderr, "    quick_gelu %-8s err/bound %.3f (libm expf reference %.3f)\n", variant_name(v), worst,
                worst_ref);
        CHECK_MSG(worst <= 1.0, "quick_gelu (%s): error %.3f x the bound", variant_name(v), worst);
        /* NaN -> NaN (of either sign), inf -> inf, -inf -> NaN (-inf * 0), -0 -> -0: as the libm form */
        for (size_t i = nfinite; i < n; i++)
            CHECK_MSG(same_float(y[i], yr[i]) && (isnan(y[i]) || signbit(y[i]) == signbit(yr[i])),
                      "quick_gelu(%g) = %g, reference %g",
                      x[i], y[i], yr[i]);
        float *z = falloc(n);
        memcpy(z, x, sizeof(float) * n);
        dinoc_quick_gelu_forward(z, z, n);
        CHECK_MSG(memcmp(z, y, sizeof(float) * n) == 0, "quick_gelu in place differs");
        free(z);

        /* Backward: dinp += dout * (s + z s (1 - s)). The two terms cancel near z = -1.28 (the
         * derivative's zero), so the bound is absolute in the terms' size: 2^-20 |dout| (|s| +
         * |z s (1 - s)|). The libm form computes 1 - s by subtraction, which loses everything for
         * large z (its figure is printed, not checked). */
        memset(g, 0, sizeof(float) * n), memset(gr, 0, sizeof(float) * n);
        dinoc_quick_gelu_backward(g, dout, x, n);
        dinoc_quick_gelu_backward_ref(gr, dout, x, n);
        worst = worst_ref = 0;
        for (size_t i = 0; i < nfinite; i++) {
            double       d;
            const double zd = (double)(1.702f * x[i]), s = 1.0 / (1.0 + exp(-zd));
            qgelu_exact(x[i], &d);
            const double exact = dout[i] * d, tol = fmax(ldexp(fabs(dout[i]) * (s + fabs(zd) * s * (1 - s)), -20), 1e-35);
            worst     = fmax(worst, fabs(g[i] - exact) / tol);
            worst_ref = fmax(worst_ref, fabs(gr[i] - exact) / tol);
        }
        fprintf(stderr, "    quick_gelu' %-7s err/bound %.3f (libm reference %.3f)\n", variant_name(v), worst,
                worst_ref);
        CHECK_MSG(worst <= 1.0, "quick_gelu backward (%s): error %.3f x the bound", variant_name(v), worst);
        for (size_t i = nfinite; i < n; i++)
            CHECK_MSG(same_float(g[i], gr[i]), "quick_gelu'(%g): %g, reference %g", x[i], g[i], gr[i]);
    }
    use_variant(0);
    struct gelu_args ga = {x, dout};
    check_act_copies("quick_gelu", qgelu_fwd_of, qgelu_bwd_of, n, &ga);
    free(x), free(y), free(yr), free(g), free(gr), free(dout);
}

/* ---- LayerNorm ---------------------------------------------------------------------------------- */

/* every output of the forward and the backward, one after another: y, mean, rstd, dinp, dw, db */
struct ln_args {
    const float *x, *w, *b, *dy, *mean, *rstd;
    int          N, C;
};
static void ln_all_of(float *o, size_t n, void *u) {
    const struct ln_args *a = u;
    const size_t          nx = (size_t)a->N * a->C;
    (void)n;
    dinoc_layernorm_forward(o, o + nx, o + nx + a->N, a->x, a->w, a->b, a->N, a->C, 1e-5f);
    float *g = o + nx + 2 * a->N;
    dinoc_layernorm_backward(g, g + nx, g + nx + a->C, a->dy, a->x, a->w, a->mean, a->rstd, a->N, a->C);
}

DINOC_TEST(test_fastops_layernorm) {
    /* widths around the 8-lane blocks, the model widths, and one above the 64-channel dw blocks */
    static const int Cs[] = {1, 3, 8, 13, 64, 128, 192, 200, 384};
    const int        N    = 67;
    for (int v = 0; v < n_variants(); v++) {
        use_variant(v);
        for (size_t ci = 0; ci < sizeof Cs / sizeof Cs[0]; ci++) {
            const int C = Cs[ci];
            size_t    nx = (size_t)N * C;
            float *x = falloc(nx), *w = falloc(C), *b = falloc(C), *dy = falloc(nx);
            float *y = falloc(nx), *yr = falloc(nx), *m = falloc(N), *mr = falloc(N);
            float *r = falloc(N), *rr = falloc(N);
            float *dx = falloc(nx), *dxr = falloc(nx), *dw = falloc(C), *dwr = falloc(C);
            float *db = falloc(C), *dbr = falloc(C);
            fill(x, nx, 11 + ci, 2), fill(w, C, 12, 1), fill(b, C, 13, 1), fill(dy, nx, 14, 1);
            for (int c = 0; c < C; c++) {
                x[5 * C + c] += 1000.0f; /* a row with a large mean (deep residual streams) */
                x[6 * C + c] = 0.25f;    /* a constant row: variance 0, rstd = eps^-1/2 */
            }
            dinoc_layernorm_forward(y, m, r, x, w, b, N, C, 1e-5f);
            dinoc_layernorm_forward_ref(yr, mr, rr, x, w, b, N, C, 1e-5f);
            /* statistics: the same double sums in another order, rounded to float: equal up to a
             * rare last-bit difference */
            char label[64];
            snprintf(label, sizeof label, "ln[%s,C=%d].mean", variant_name(v), C);
            CHECK_CLOSE(m, mr, N, 0, 2e-7, label);
            snprintf(label, sizeof label, "ln[%s,C=%d].rstd", variant_name(v), C);
            CHECK_CLOSE(r, rr, N, 0, 2e-7, label);
            /* out = (x - mean) rstd w + b with one FMA instead of a multiply and an add (AVX2):
             * differs by <= 1 ulp of norm * w (|norm * w| < 16: 1e-6) plus 1 ulp of the result;
             * seen: 9.5e-7 */
            snprintf(label, sizeof label, "ln[%s,C=%d].out", variant_name(v), C);
            CHECK_CLOSE(y, yr, nx, 2e-6, 1e-6, label);
            fill(dx, nx, 15, 1), memcpy(dxr, dx, sizeof(float) * nx); /* accumulates onto this */
            dinoc_layernorm_backward(dx, dw, db, dy, x, w, mr, rr, N, C);
            dinoc_layernorm_backward_ref(dxr, dwr, dbr, dy, x, w, mr, rr, N, C);
            /* dinp: the two row means summed in another order (double, then rounded to float):
             * a rare last-bit difference in them moves dinp by ~1e-7 (seen: none) */
            snprintf(label, sizeof label, "ln[%s,C=%d].dinp", variant_name(v), C);
            CHECK_CLOSE(dx, dxr, nx, 2e-6, 1e-6, label);
            /* dw, db: the same per-channel double sums in the same row order: identical */
            CHECK_MSG(memcmp(dw, dwr, sizeof(float) * C) == 0 && memcmp(db, dbr, sizeof(float) * C) == 0,
                      "ln[%s,C=%d]: dw/db differ from the reference", variant_name(v), C);
            if (v == 0) {
                struct ln_args la = {x, w, b, dy, mr, rr, N, C};
                snprintf(label, sizeof label, "layernorm C=%d", C);
                check_avx512_same_bits(label, ln_all_of, 2 * nx + 2 * N + 2 * C, &la);
            }
            free(x), free(w), free(b), free(dy), free(y), free(yr), free(m), free(mr), free(r), free(rr);
            free(dx), free(dxr), free(dw), free(dwr), free(db), free(dbr);
        }
    }
    use_variant(0);
}

/* ---- attention ---------------------------------------------------------------------------------- */

typedef struct {
    int B, T, D, NH;
} att_shape;

/* T from 1 to past the forward's direct limit (128: T = 200 runs the BLAS forward and the direct
 * backward); HS 8, 32, 48, 64 (AVX2 row products of 1..8 vectors), 128 (two 64-column blocks),
 * 10 (not a multiple of 8: the portable copy even on AVX2). */
static const att_shape g_shapes[] = {{3, 1, 64, 2},   {2, 5, 128, 4},  {2, 17, 128, 4}, {2, 17, 192, 3},
                                     {1, 50, 192, 4},  {2, 64, 128, 4}, {2, 9, 24, 3},   {2, 7, 30, 3},
                                     {1, 33, 256, 2},  {1, 100, 64, 2}, {1, 200, 64, 2}, {2, 65, 128, 4}};

static void attention_run(const att_shape *s, int small, int nt, const float *qkv, const float *dout,
                          float *out, float *att, float *dqkv) {
    int    HS = s->D / s->NH;
    size_t sf = dinoc_attention_scratch_floats(s->T, HS), sb = dinoc_attention_backward_scratch_floats(s->T, HS);
    float *scratch = falloc((size_t)nt * (sf > sb ? sf : sb));
    if (small) {
        dinoc_attention_forward(out, att, qkv, s->B, s->T, s->D, s->NH, scratch, nt);
        if (dqkv) dinoc_attention_backward(dqkv, dout, qkv, att, s->B, s->T, s->D, s->NH, scratch, nt);
    } else {
        dinoc_attention_forward_ref(out, att, qkv, s->B, s->T, s->D, s->NH, scratch, nt);
        if (dqkv) dinoc_attention_backward_ref(dqkv, dout, qkv, att, s->B, s->T, s->D, s->NH, scratch, nt);
    }
    free(scratch);
}

DINOC_TEST(test_fastops_attention_vs_reference) {
    int nt = dinoc_get_threads();
    for (int v = 0; v < n_variants(); v++) {
        use_variant(v);
        for (size_t k = 0; k < sizeof g_shapes / sizeof g_shapes[0]; k++) {
            const att_shape *s  = &g_shapes[k];
            size_t           nq = (size_t)s->B * s->T * 3 * s->D, ny = (size_t)s->B * s->T * s->D;
            size_t           na = (size_t)s->B * s->NH * s->T * s->T;
            float *qkv = falloc(nq), *dout = falloc(ny), *y = falloc(ny), *yr = falloc(ny), *y0 = falloc(ny);
            float *att = falloc(na), *attr = falloc(na), *g = falloc(nq), *gr = falloc(nq);
            /* scale 1.5: scores of a few units, neither uniform nor one-hot */
            fill(qkv, nq, 21 + k, 1.5f), fill(dout, ny, 22 + k, 1);
            fill(g, nq, 23, 1), memcpy(gr, g, sizeof(float) * nq); /* the backward accumulates */
            attention_run(s, 1, nt, qkv, dout, y, att, g);
            attention_run(s, 0, nt, qkv, dout, yr, attr, gr);
            /* Values up to ~6; each output is a float sum of T (P V) or HS (scores) products,
             * here and in the BLAS / row-by-row reference in other orders. Largest differences
             * seen over these shapes: out 3.2e-6, dqkv 4.1e-6 (HS = 128), att 6.6e-7. Bounds:
             * out and dqkv atol 2e-5 + rtol 1e-4 (the ops default of STYLE.md 3.5 at twice the
             * atol for the larger values); att (in [0, 1]) 3e-6. A wrong term shows at 1e-2. */
            char label[80];
            snprintf(label, sizeof label, "attn[%s,T=%d,HS=%d].out", variant_name(v), s->T, s->D / s->NH);
            CHECK_CLOSE(y, yr, ny, 2e-5, 1e-4, label);
            snprintf(label, sizeof label, "attn[%s,T=%d,HS=%d].att", variant_name(v), s->T, s->D / s->NH);
            CHECK_CLOSE(att, attr, na, 3e-6, 1e-5, label);
            snprintf(label, sizeof label, "attn[%s,T=%d,HS=%d].dqkv", variant_name(v), s->T, s->D / s->NH);
            CHECK_CLOSE(g, gr, nq, 2e-5, 1e-4, label);
            /* without att (inference): the same bits, except past the direct kernels' limit,
             * where inference runs in query tiles (other BLAS shapes; the bound of out) */
            attention_run(s, 1, nt, qkv, dout, y0, NULL, NULL);
            if (s->T > DINOC_ATTN_FWD_DIRECT_T) CHECK_CLOSE(y0, y, ny, 2e-5, 1e-4, label);
            else CHECK_MSG(memcmp(y0, y, sizeof(float) * ny) == 0, "%s: att = NULL changes out", label);
            free(qkv), free(dout), free(y), free(yr), free(y0), free(att), free(attr), free(g), free(gr);
        }
    }
    use_variant(0);
}

/* The direct kernels' AVX-512 row products sum each element in the AVX2 copy's order (one FMA per
 * step, 16 lanes instead of 8, a masked half vector where a row ends in 8): the same bits for out,
 * the probabilities and the gradients, over every shape above (T = 65: score rows of 72, a half
 * vector at the end; HS = 128 and T = 200: several column blocks). */
static void attention_levels(float *out, size_t n, void *u) {
    const att_shape *s  = u;
    size_t           nq = (size_t)s->B * s->T * 3 * s->D, ny = (size_t)s->B * s->T * s->D;
    size_t           na = (size_t)s->B * s->NH * s->T * s->T;
    float           *qkv = falloc(nq), *dout = falloc(ny);
    fill(qkv, nq, 41, 1.5f), fill(dout, ny, 42, 1), fill(out + ny + na, nq, 43, 1);
    attention_run(s, 1, dinoc_get_threads(), qkv, dout, out, out + ny, out + ny + na);
    (void)n;
    free(qkv), free(dout);
}

DINOC_TEST(test_fastops_attention_avx512_same_bits) {
    for (size_t k = 0; k < sizeof g_shapes / sizeof g_shapes[0]; k++) {
        att_shape s = g_shapes[k];
        size_t    n = (size_t)s.B * s.T * s.D * 4 + (size_t)s.B * s.NH * s.T * s.T;
        char      what[64];
        snprintf(what, sizeof what, "attention T=%d HS=%d (out, att, dqkv)", s.T, s.D / s.NH);
        check_avx512_same_bits(what, attention_levels, n, &s);
    }
    use_variant(0);
}

DINOC_TEST(test_fastops_attention_threads) {
    /* pairs are split across threads, each pair computed alone: 1, 2 and 3 threads, same bits */
    const att_shape s  = {5, 17, 128, 4};
    size_t          nq = (size_t)s.B * s.T * 3 * s.D, ny = (size_t)s.B * s.T * s.D;
    size_t          na = (size_t)s.B * s.NH * s.T * s.T;
    float *qkv = falloc(nq), *dout = falloc(ny);
    fill(qkv, nq, 31, 1.5f), fill(dout, ny, 32, 1);
    float *y[3], *att[3], *g[3];
    int    prev = dinoc_get_threads();
    for (int t = 0; t < 3; t++) {
        y[t] = falloc(ny), att[t] = falloc(na), g[t] = falloc(nq);
        dinoc_set_threads(t + 1);
        attention_run(&s, 1, t + 1, qkv, dout, y[t], att[t], g[t]);
    }
    dinoc_set_threads(prev);
    for (int t = 1; t < 3; t++)
        CHECK_MSG(memcmp(y[t], y[0], sizeof(float) * ny) == 0 &&
                      memcmp(att[t], att[0], sizeof(float) * na) == 0 &&
                      memcmp(g[t], g[0], sizeof(float) * nq) == 0,
                  "attention: %d threads differ from 1", t + 1);
    for (int t = 0; t < 3; t++) free(y[t]), free(att[t]), free(g[t]);
    free(qkv), free(dout);
}

/* L = <dout, attention(qkv)> in double (the forward written out directly) */
static double att_loss(const att_shape *s, const float *qkv, const float *dout) {
    int     HS = s->D / s->NH, T = s->T, D = s->D;
    double *sc = malloc(sizeof(double) * (size_t)T), L = 0;
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->NH; h++)
            for (int t = 0; t < T; t++) {
                const float *q  = qkv + ((size_t)b * T + t) * 3 * D + h * HS;
                double       mx = -1e300, sum = 0;
                for (int u = 0; u < T; u++) {
                    const float *k = qkv + ((size_t)b * T + u) * 3 * D + D + h * HS;
                    double       d = 0;
                    for (int i = 0; i < HS; i++) d += (double)q[i] * k[i];
                    sc[u] = d / sqrt((double)HS);
                    mx    = fmax(mx, sc[u]);
                }
                for (int u = 0; u < T; u++) sum += (sc[u] = exp(sc[u] - mx));
                for (int i = 0; i < HS; i++) {
                    double o = 0;
                    for (int u = 0; u < T; u++)
                        o += sc[u] / sum * qkv[((size_t)b * T + u) * 3 * D + 2 * D + h * HS + i];
                    L += o * dout[((size_t)b * T + t) * D + h * HS + i];
                }
            }
    free(sc);
    return L;
}

DINOC_TEST(test_fastops_attention_grad_fd) {
    /* Central differences of the double loss on 40 random elements of each of q, k, v, against
     * the small kernels' backward; criterion of tests/test_grad.c: |fd - g| <= 1e-3 |g| +
     * 1e-4 max|g| (float rounding of g is ~1e-6 relative, the FD truncation ~1e-7). */
    static const att_shape shapes[] = {{2, 17, 128, 4}, {1, 5, 96, 3}, {1, 50, 64, 2}, {1, 100, 64, 2}};
    int nt = dinoc_get_threads();
    for (int v = 0; v < n_variants(); v++) {
        use_variant(v);
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
            const att_shape *s  = &shapes[k];
            size_t           nq = (size_t)s->B * s->T * 3 * s->D, ny = (size_t)s->B * s->T * s->D;
            float *qkv = falloc(nq), *dout = falloc(ny), *y = falloc(ny), *g = falloc(nq);
            float *att = falloc((size_t)s->B * s->NH * s->T * s->T);
            fill(qkv, nq, 41 + k, 1.5f), fill(dout, ny, 42 + k, 1);
            attention_run(s, 1, nt, qkv, dout, y, att, g);
            double gmax = 0;
            for (size_t i = 0; i < nq; i++) gmax = fmax(gmax, fabs(g[i]));
            dinoc_rng r;
            dinoc_rng_seed(&r, 43 + k);
            int bad = 0;
            double worst = 0;
            for (int part = 0; part < 3; part++)
                for (int smp = 0; smp < 40; smp++) {
                    size_t row = dinoc_rng_u64(&r) % ((size_t)s->B * s->T);
                    size_t i   = row * 3 * s->D + (size_t)part * s->D + dinoc_rng_u64(&r) % (size_t)s->D;
                    float  xi  = qkv[i];
                    double h   = 1e-3 * fmax(1.0, fabs(xi));
                    float  xp = (float)(xi + h), xm = (float)(xi - h);
                    qkv[i]    = xp;
                    double lp = att_loss(s, qkv, dout);
                    qkv[i]    = xm;
                    double lm = att_loss(s, qkv, dout);
                    qkv[i]    = xi;
                    double fd = (lp - lm) / ((double)xp - (double)xm);
                    double err = fabs(fd - g[i]), tol = 1e-3 * fabs(g[i]) + 1e-4 * gmax;
                    worst      = fmax(worst, err / tol);
                    if (!(err <= tol) && bad++ < 5)
                        fprintf(stderr, "    qkv[%zu] (part %d): fd %.8g analytic %.8g\n", i, part, fd, g[i]);
                }
            fprintf(stderr, "    fd attn[%s,T=%d,HS=%d] max|g|=%.3g err/tol=%.3f %s\n", variant_name(v), s->T,
                    s->D / s->NH, gmax, worst, bad ? "MISMATCH" : "ok");
            CHECK_MSG(!bad, "attention (%s, T=%d): finite differences disagree", variant_name(v), s->T);
            free(qkv), free(dout), free(y), free(g), free(att);
        }
    }
    use_variant(0);
}

/* The large-T inference path (query tiles of 256, no [T, T] matrix) against the reference that
 * keeps the probabilities, with no mask, a causal mask and key padding, at tile-boundary sizes
 * (257 = one tile + 1 row: ViT-S/14 at 224 px; 1370 = DINOv2 at 518 px), 1 and 2 threads.
 * Bound 2e-6 of the output's largest magnitude: the same products and softmax on the same rows, but
 * over a tile's columns instead of all T (BLAS may block the sums differently; measured ~1e-7).
 * Also checks that the scratch the path asks for is linear in T. */
DINOC_TEST(test_fastops_attention_tiled_vs_reference) {
    static const att_shape shapes[] = {{1, 129, 64, 2}, {2, 257, 384, 6}, {1, 600, 64, 2}, {1, 1370, 128, 2}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const att_shape *s  = &shapes[k];
        const int        HS = s->D / s->NH;
        const size_t     nq = (size_t)s->B * s->T * 3 * s->D, no = (size_t)s->B * s->T * s->D;
        const size_t     sf = dinoc_attention_scratch_floats(s->T, HS);
        CHECK_MSG(sf <= (size_t)256 * s->T + 64, "T %d: scratch %zu floats per thread, not a tile", s->T, sf);
        float   *qkv = falloc(nq), *o1 = falloc(no), *o2 = falloc(no);
        float   *att = falloc((size_t)s->B * s->NH * s->T * s->T), *scr = falloc(2 * sf);
        int32_t  klen[2] = {s->T - 37, s->T};
        fill(qkv, nq, 7 + k, 2.0f);
        for (int m = 0; m < 3; m++) {
            dinoc_attn_mask mk = {m == 1, m == 2 ? klen : NULL};
            for (int nt = 1; nt <= 2; nt++) {
                dinoc_attention_forward_masked(o1, NULL, qkv, m ? &mk : NULL, s->B, s->T, s->D, s->NH, scr, nt);
                dinoc_attention_forward_ref_masked(o2, att, qkv, m ? &mk : NULL, s->B, s->T, s->D, s->NH, scr, nt);
                double worst = 0, scale = 1e-30;
                for (size_t i = 0; i < no; i++) {
                    worst = fmax(worst, fabs((double)o1[i] - o2[i]));
                    scale = fmax(scale, fabs((double)o2[i]));
                }
                CHECK_MSG(worst <= 2e-6 * scale, "T %d mask %d threads %d: tiled vs reference %g of %g", s->T, m, nt,
                          worst, scale);
                if (m == 2 && nt == 2) dinoc_log(DINOC_LOG_INFO, "tiled attention T %d: worst %.2e of scale", s->T, worst / scale);
            }
        }
        free(qkv), free(o1), free(o2), free(att), free(scr);
    }
}

/* ---- bf16 conversions --------------------------------------------------------------------------- */

/* dinoc_bf16_round / _pack / _pack_colsum (src/ops/bf16.c) have a copy per level: integer rounding
 * and per-column double sums in row order, so every copy gives the portable copy's bits, ties,
 * NaN (-> 0x7FC0), infinities and odd widths included. */
DINOC_TEST(test_fastops_bf16_conversions) {
    const int M = 37, N = 203; /* three whole 64-column blocks and a partial one */
    const size_t n = (size_t)M * N;
    float *x = falloc(n), *r[2] = {falloc(n), falloc(n)}, *db[2] = {falloc(N), falloc(N)};
    uint16_t *p[2] = {calloc(n, 2), calloc(n, 2)};
    fill(x, n, 21, 3);
    const uint32_t special[] = {0x7fc00001u, 0xffa00000u, 0x7f800000u, 0xff800000u, 0x3f808000u, 0x3f818000u,
                                0x00000001u, 0x80000000u, 0x7f7fffffu};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) memcpy(&x[7 * i + 3], &special[i], 4);
    for (int v = n_variants() - 1; v >= 0; v--) { /* the portable copy first: index 0 */
        use_variant(v);
        const int k = v == n_variants() - 1 ? 0 : 1;
        memcpy(r[k], x, sizeof(float) * n);
        dinoc_bf16_round(r[k], n);
        memset(db[k], 0, sizeof(float) * N);
        dinoc_bf16_pack_colsum(p[k], x, M, N, db[k]);
        if (k == 1) {
            CHECK_MSG(memcmp(r[0], r[1], sizeof(float) * n) == 0, "bf16 round (%s) differs from portable", variant_name(v));
            CHECK_MSG(memcmp(p[0], p[1], 2 * n) == 0, "bf16 pack (%s) differs from portable", variant_name(v));
            CHECK_MSG(memcmp(db[0], db[1], sizeof(float) * N) == 0, "bf16 column sums (%s) differ", variant_name(v));
            fprintf(stderr, "    bf16 round/pack/colsum %s: the portable copy's bits\n", variant_name(v));
        }
    }
    use_variant(0);
    /* the pack is the round's bits; NaN packs as PyTorch's 0x7FC0; ties go to even */
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &r[0][i], 4);
        bad += (uint16_t)(u >> 16) != p[0][i] || (u & 0xffffu) != 0;
    }
    CHECK_MSG(bad == 0, "%zu packed values differ from the rounded ones", bad);
    CHECK(p[0][3] == 0x7fc0 && p[0][10] == 0x7fc0 && p[0][17] == 0x7f80 && p[0][24] == 0xff80);
    CHECK(p[0][31] == 0x3f80 && p[0][38] == 0x3f82); /* 1 + 2^-8 ties down to 1, 1 + 3 * 2^-8 up */
    /* column sums against a double sum of the rounded values */
    for (int c = 0; c < N; c++) {
        double s = 0;
        for (int m = 0; m < M; m++) s += r[0][(size_t)m * N + c];
        CHECK_MSG(isnan(s) ? isnan(db[0][c]) : db[0][c] == (float)s, "column %d: %g vs %g", c, db[0][c], s);
    }
    free(x), free(r[0]), free(r[1]), free(db[0]), free(db[1]), free(p[0]), free(p[1]);
}
