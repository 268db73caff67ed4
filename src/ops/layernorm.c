/* layernorm.c: LayerNorm over the last dimension (PyTorch nn.LayerNorm semantics: biased variance,
 * eps inside the square root). Statistics are accumulated in double so that rows with a large mean
 * (the residual stream of deep ViTs) keep their precision.
 *
 * The ops run vectorised kernels: the double sums use 8 explicit lanes (two AVX2 vectors of 4,
 * added in a fixed order at the end, so the result does not depend on the compiler's vector
 * width: the AVX-512 copy gives the AVX2 copy's bits), the float parts are plain loops GCC
 * vectorises; an AVX-512 or AVX2 + FMA copy runs where the CPU has them (vecmath.h). dinoc_layernorm_*_ref keep the scalar form as the oracle.
 * Tested in tests/test_ops.c; the backward in tests/test_grad.c (finite differences) and
 * tests/test_ops_parity.c (torch); fast against reference in tests/test_fastops.c. */
#include "../internal.h"
#include "vecmath.h"

#include <math.h>

void dinoc_layernorm_forward_ref(float *out, float *mean, float *rstd, const float *inp,
                                 const float *w, const float *b, int N, int C, float eps) {
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
void dinoc_layernorm_backward_ref(float *dinp, float *dw, float *db, const float *dout,
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

/* ---- vectorised kernels ---------------------------------------------------------------------- */

enum { LANES = 8 };

/* sum of the lanes in a fixed order (pairs, then pairs of pairs) */
DINOC_INLINE double lanes_sum(const double *a) {
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

/* Rows [i0, i1): the reference's statistics (sum, then sum of squared deviations from the double
 * mean) with 8 lanes; the normalisation in float. */
DINOC_INLINE void ln_fwd_rows(float *out, float *mean, float *rstd, const float *inp, const float *w,
                              const float *b, int i0, int i1, int C, float eps, int fused) {
    for (int i = i0; i < i1; i++) {
        const float *x = inp + (size_t)i * C;
        float       *y = out + (size_t)i * C;
        double       a[LANES] = {0};
        int          c = 0;
        for (; c + LANES <= C; c += LANES)
            for (int j = 0; j < LANES; j++) a[j] += x[c + j];
        for (int j = 0; c + j < C; j++) a[j] += x[c + j];
        const double m = lanes_sum(a) / C;
        double       v[LANES] = {0};
        for (c = 0; c + LANES <= C; c += LANES)
            for (int j = 0; j < LANES; j++) {
                double d = x[c + j] - m;
                v[j] += d * d;
            }
        for (int j = 0; c + j < C; j++) {
            double d = x[c + j] - m;
            v[j] += d * d;
        }
        const float mf = (float)m;
        const float r  = (float)(1.0 / sqrt(lanes_sum(v) / C + (double)eps));
        for (c = 0; c < C; c++) y[c] = dinoc_vm_madd((x[c] - mf) * r, w[c], b[c], fused);
        if (mean) mean[i] = mf;
        if (rstd) rstd[i] = r;
    }
}

/* dinp of rows [i0, i1), as the reference with the two row sums over 8 lanes. */
DINOC_INLINE void ln_bwd_rows(float *dinp, const float *dout, const float *inp, const float *w,
                              const float *mean, const float *rstd, int i0, int i1, int C) {
    for (int i = i0; i < i1; i++) {
        const float *x  = inp + (size_t)i * C;
        const float *dy = dout + (size_t)i * C;
        float       *dx = dinp + (size_t)i * C;
        const float  m = mean[i], r = rstd[i];
        double       a1[LANES] = {0}, a2[LANES] = {0};
        int          c = 0;
        for (; c + LANES <= C; c += LANES)
            for (int j = 0; j < LANES; j++) {
                float norm = (x[c + j] - m) * r;
                float dn   = dy[c + j] * w[c + j];
                a1[j] += dn;
                a2[j] += (double)dn * norm;
            }
        for (int j = 0; c + j < C; j++) {
            float norm = (x[c + j] - m) * r;
            float dn   = dy[c + j] * w[c + j];
            a1[j] += dn;
            a2[j] += (double)dn * norm;
        }
        const float mdn = (float)(lanes_sum(a1) / C), mdnn = (float)(lanes_sum(a2) / C);
        for (c = 0; c < C; c++) {
            float norm = (x[c] - m) * r;
            float dn   = dy[c] * w[c];
            dx[c] += (dn - mdn - norm * mdnn) * r;
        }
    }
}

/* dw/db of channels [c0, c1) (at most 64), summed over all rows in row order in double. */
DINOC_INLINE void ln_bwd_params(float *dw, float *db, const float *dout, const float *inp,
                                const float *mean, const float *rstd, int N, int C, int c0, int c1) {
    double aw[64] = {0}, ab[64] = {0};
    const int nc = c1 - c0;
    for (int i = 0; i < N; i++) {
        const float *x  = inp + (size_t)i * C + c0;
        const float *dy = dout + (size_t)i * C + c0;
        const float  m = mean[i], r = rstd[i];
        for (int c = 0; c < nc; c++) {
            float norm = (x[c] - m) * r;
            aw[c] += (double)dy[c] * norm;
            ab[c] += dy[c];
        }
    }
    for (int c = 0; c < nc; c++) {
        if (dw) dw[c0 + c] += (float)aw[c];
        if (db) db[c0 + c] += (float)ab[c];
    }
}

/* one copy of each per level (vecmath.h); only the forward's FMA use differs between them */
#define LN_COPY(name, target, fused)                                                                       \
    target static void ln_fwd_##name(float *out, float *mean, float *rstd, const float *inp, const float *w, \
                                     const float *b, int i0, int i1, int C, float eps) {                    \
        ln_fwd_rows(out, mean, rstd, inp, w, b, i0, i1, C, eps, fused);                                   \
    }                                                                                                      \
    target static void ln_bwd_##name(float *dinp, const float *dout, const float *inp, const float *w,     \
                                     const float *mean, const float *rstd, int i0, int i1, int C) {        \
        ln_bwd_rows(dinp, dout, inp, w, mean, rstd, i0, i1, C);                                           \
    }                                                                                                      \
    target static void ln_par_##name(float *dw, float *db, const float *dout, const float *inp,            \
                                     const float *mean, const float *rstd, int N, int C, int c0, int c1) { \
        ln_bwd_params(dw, db, dout, inp, mean, rstd, N, C, c0, c1);                                       \
    }
LN_COPY(portable, , 0)
typedef void ln_fwd_fn(float *, float *, float *, const float *, const float *, const float *, int, int, int, float);
typedef void ln_bwd_fn(float *, const float *, const float *, const float *, const float *, const float *, int, int,
                       int);
typedef void ln_par_fn(float *, float *, const float *, const float *, const float *, const float *, int, int, int,
                       int);
#if DINOC_HAVE_AVX2_VARIANT
LN_COPY(avx2, DINOC_TARGET_AVX2, 1)
LN_COPY(avx512, DINOC_TARGET_AVX512, 1)
#endif
DINOC_LEVEL_TABLE(ln_fwd_fn *, k_ln_fwd, ln_fwd);
DINOC_LEVEL_TABLE(ln_bwd_fn *, k_ln_bwd, ln_bwd);
DINOC_LEVEL_TABLE(ln_par_fn *, k_ln_par, ln_par);
#undef LN_COPY

/* rows [i0, i1) of N for this thread: contiguous equal shares */
static void row_chunk(int N, int *i0, int *i1) {
    int t = dinoc_omp_thread_num(), nt = dinoc_omp_num_threads();
    int per = (N + nt - 1) / nt;
    *i0 = t * per < N ? t * per : N;
    *i1 = *i0 + per < N ? *i0 + per : N;
}

void dinoc_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                             const float *b, int N, int C, float eps) {
    ln_fwd_fn *const f = k_ln_fwd[dinoc_ops_level()];
#pragma omp parallel if ((size_t)N * C >= 4096)
    {
        int i0, i1;
        row_chunk(N, &i0, &i1);
        f(out, mean, rstd, inp, w, b, i0, i1, C, eps);
    }
}

/* Rows [i0, i1) on this thread only (the fused ViT forward's row blocks): the same kernel, so the
 * same bits as any split of dinoc_layernorm_forward. */
void dinoc_layernorm_forward_rows(float *out, const float *inp, const float *w, const float *b, int i0, int i1,
                                  int C, float eps) {
    k_ln_fwd[dinoc_ops_level()](out, NULL, NULL, inp, w, b, i0, i1, C, eps);
}

/* Same formulas and summation rules as dinoc_layernorm_backward_ref. */
void dinoc_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, const float *mean,
                              const float *rstd, int N, int C) {
    const int        lv = dinoc_ops_level();
    ln_bwd_fn *const fb = k_ln_bwd[lv];
    ln_par_fn *const fp = k_ln_par[lv];
    enum { CB = 64 };
    const int nblk = (dw || db) ? (C + CB - 1) / CB : 0;
#pragma omp parallel if ((size_t)N * C >= 4096)
    {
        int i0, i1;
        row_chunk(N, &i0, &i1);
        fb(dinp, dout, inp, w, mean, rstd, i0, i1, C);
#pragma omp for schedule(static) nowait
        for (int bk = 0; bk < nblk; bk++) {
            int c0 = bk * CB, c1 = c0 + CB < C ? c0 + CB : C;
            fp(dw, db, dout, inp, mean, rstd, N, C, c0, c1);
        }
    }
}
