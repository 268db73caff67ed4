/* interp.c: bicubic resize of [C, H, W] grids as PyTorch 1.13's CPU kernels behind
 * torch.nn.functional.interpolate(mode="bicubic", align_corners=False[, antialias=True]) compute it
 * for float32 (the Debian build, whose kernels run in the AVX2 dispatch: g++ fuses a * b + c into
 * FMAs there, so the roundings below are the ones that build makes). The models use it to resize
 * the position-embedding grid (reference/dino_dinov2.md 1.4).
 *
 * antialias = 0 (aten upsample_bicubic2d, generic N-d kernel, interp_size 4), per axis:
 *   scale = (float)(1 / sf) with a scale factor, else (float)in / out; src = scale * (i + 0.5)
 *   - 0.5 in double, never clamped; x0 = floorf((float)src); t = (float)(src - x0); Keys weights
 *   A = -0.75 in float; taps x0-1 .. x0+2 clamped to [0, in-1]; out = sum over 4 H taps of
 *   wy * (sum over 4 W taps of wx * v), each sum fma(t3, w3, fma(t2, w2, fma(t0, w0, t1 * w1))).
 * antialias = 1 (aten _upsample_bicubic2d_aa, separable): W pass into a [C, in_h, out_w] temporary,
 *   then H; both passes always run (a same-size axis is resampled too: identity in size mode, a
 *   shift with a scale factor). Per output i: center = scale * (i + 0.5), support = 2 * max(scale,
 *   1), span [(int)(center - support + 0.5), (int)(center + support + 0.5)) clipped to the input,
 *   weights filter((j + xmin - center + 0.5) / max(scale, 1)) with the a = -0.5 Keys filter,
 *   normalised by their float sum; the sum over the span runs from tap 0 in float (FMA chain
 *   on a growing axis, plain chain on a shrinking one).
 *
 * Tested by tests/test_interp.c against tests/py/gen_interp.py (torch 1.13 outputs, 24 cases):
 * bit-exact everywhere except antialiased shrinking (37 -> 16, 37 -> 24), where about 9 % (16 x 16)
 * / 11 % (16 x 24) of the values differ by one rounding (max 2.4e-7): torch's tap sums there match
 * a plain multiply-add chain in the interior columns but not at the clipped edge columns, and the
 * exact rounding pattern was not pinned down.
 */
#include "../internal.h"

#include <math.h>

/* Per-axis scale as aten's area_pixel_compute_scale<float>(in, out, align_corners=false, sf):
 * given a scale factor, (float)(1.0 / sf) -- the factor the user passed, not out/in (this is what
 * makes DINO's "+0.1" offset change the result); else (float)in / out in float; out == 1 gives
 * 0. */
static float axis_scale(int in, int out, double sf) {
    if (out <= 1) return 0.0f;
    if (sf > 0.0) return (float)(1.0 / sf);
    return (float)in / (float)out;
}

/* ---- antialias = 0 -------------------------------------------------------------------------- */

/* The Keys polynomials (A = -0.75) as torch 1.13's AVX2 kernel evaluates them: g++ contracts the
 * inner multiply-adds into FMAs and leaves the last step as a rounded product plus a constant. */
static float keys1(float x) { /* (A + 2) x^3 - (A + 3) x^2 + 1 */
    float u = fmaf(1.25f, x, -2.25f);
    return (u * x) * x + 1.0f;
}
static float keys2(float x) { /* A x^3 - 5A x^2 + 8A x - 4A */
    float v = fmaf(fmaf(-0.75f, x, 3.75f), x, -6.0f);
    return v * x + 3.0f;
}

/* 4 clamped tap indices and Keys weights (A = -0.75) for output index i of one axis. */
static void cubic_taps(int i, float scale, int in, int idx[4], float w[4]) {
    /* torch 1.13 keeps the source coordinate in double (scale is a float, i + 0.5 a double):
     * src = scale * (i + 0.5) - 0.5. The integer part comes from floorf((float)src) (floorf takes a
     * float) while t = src - x0 is taken from the double and rounded once; so near integers x0 can
     * be src rounded up and t slightly negative (e.g. 37 -> 21: src = 17.9999995, x0 = 18). */
    double src = (double)scale * ((double)i + 0.5) - 0.5;
    int    x0  = (int)floorf((float)src);
    float  t   = (float)(src - (double)x0);
    float  x2  = 1.0f - t;
    w[0] = keys2(t + 1.0f);
    w[1] = keys1(t);
    w[2] = keys1(x2);
    w[3] = keys2(x2 + 1.0f);
    for (int j = 0; j < 4; j++) {
        int k = x0 - 1 + j;
        idx[j] = k < 0 ? 0 : (k > in - 1 ? in - 1 : k);
    }
}

static void resize_cubic(float *out, const float *inp, int C, int in_h, int in_w, int out_h,
                         int out_w, double sf_h, double sf_w) {
    float sh = axis_scale(in_h, out_h, sf_h), sw = axis_scale(in_w, out_w, sf_w);
    /* Small tables (out_h + out_w entries): tap rows/columns and their weights. */
    int   *yi = malloc(sizeof(int) * 4 * (size_t)(out_h + out_w));
    float *yw = malloc(sizeof(float) * 4 * (size_t)(out_h + out_w));
    DINOC_ASSERT(yi && yw);
    int   *xi = yi + 4 * out_h;
    float *xw = yw + 4 * out_h;
    for (int i = 0; i < out_h; i++) cubic_taps(i, sh, in_h, yi + 4 * i, yw + 4 * i);
    for (int i = 0; i < out_w; i++) cubic_taps(i, sw, in_w, xi + 4 * i, xw + 4 * i);

    size_t in_plane = (size_t)in_h * in_w, out_plane = (size_t)out_h * out_w;
    int    par = (double)C * out_plane >= 32768.0;
    (void)par; /* read only by the OpenMP if clause (unused with OMP=0) */
#pragma omp parallel for schedule(static) if (par)
    for (int c = 0; c < C; c++) {
        const float *src = inp + (size_t)c * in_plane;
        float       *dst = out + (size_t)c * out_plane;
        for (int oy = 0; oy < out_h; oy++) {
            const int   *ry = yi + 4 * oy;
            const float *wy = yw + 4 * oy;
            for (int ox = 0; ox < out_w; ox++) {
                const int   *cx = xi + 4 * ox;
                const float *wx = xw + 4 * ox;
                /* aten's Interpolate<2, float, int64, 4>::eval: outer sum over the 4 H taps of
                 * wy * (inner sum over the 4 W taps of wx * v), both unrolled as
                 *   out = t0 * w0 + t1 * w1;  out += t2 * w2;  out += t3 * w3;
                 * which g++ (fp-contract=fast, -mfma in the AVX2 build torch dispatches to) emits
                 * as fma(t3, w3, fma(t2, w2, fma(t0, w0, t1 * w1))): the tap-1 product is the
                 * rounded one. Found by matching torch bit for bit (tests/py/gen_interp.py). */
                float r[4];
                for (int a = 0; a < 4; a++) {
                    const float *row = src + (size_t)ry[a] * in_w;
                    float        s   = fmaf(row[cx[0]], wx[0], row[cx[1]] * wx[1]);
                    s                = fmaf(row[cx[2]], wx[2], s);
                    r[a]             = fmaf(row[cx[3]], wx[3], s);
                }
                float acc = fmaf(r[0], wy[0], r[1] * wy[1]);
                acc       = fmaf(r[2], wy[2], acc);
                acc       = fmaf(r[3], wy[3], acc);
                dst[(size_t)oy * out_w + ox] = acc;
            }
        }
    }
    free(yi);
    free(yw);
}

/* ---- antialias = 1 -------------------------------------------------------------------------- */

/* aten 1.13's HelperInterpCubic::aa_filter (Keys, a = -0.5), evaluated as torch's AVX2 build does:
 * the inner piece ((a + 2.0) x - (a + 3.0)) x x + 1 has double literals, so it runs in double; the
 * outer piece (((x - 5) x + 8) x - 4) a runs in float with the two multiply-adds fused, and the
 * final * a (exact, a = -0.5) in double. */
static float aa_cubic(float x) {
    if (x < 0.0f) x = -x;
    if (x < 1.0f) {
        double xd = x, u = fma(1.5, xd, -2.5);
        return (float)((u * xd) * xd + 1.0);
    }
    if (x < 2.0f) {
        float v = fmaf(fmaf(x - 5.0f, x, 8.0f), x, -4.0f);
        return (float)((double)v * -0.5);
    }
    return 0.0f;
}

/* Spans and normalised weights for one axis, as aten 1.13's _compute_indices_weights_aa with
 * scalar_t = float. Returns the per-output stride of w (max taps); xmin/xsize get out entries. */
static int aa_weights(int in, int out, double sf, int **xmin_out, int **xsize_out, float **w_out) {
    float scale   = axis_scale(in, out, sf);
    /* support = (interp_size / 2) * scale when downscaling (the kernel widens to cover every input
     * pixel), else interp_size / 2; interp_size = 4 for cubic. Doubles rounded to float. */
    float support = scale >= 1.0f ? (float)(2.0 * (double)scale) : 2.0f;
    int   taps    = (int)ceilf(support) * 2 + 1;
    float invscale = scale >= 1.0f ? (float)(1.0 / (double)scale) : 1.0f;

    int   *xmin  = malloc(sizeof(int) * (size_t)out);
    int   *xsize = malloc(sizeof(int) * (size_t)out);
    float *w     = calloc((size_t)out * taps, sizeof(float));
    DINOC_ASSERT(xmin && xsize && w);
    for (int i = 0; i < out; i++) {
        /* center = scale * (i + 0.5): double product, rounded to float. */
        float center = (float)((double)scale * ((double)i + 0.5));
        /* (int64)(center - support + 0.5): float difference, + 0.5 in double, truncated. */
        long lo = (long)((double)(center - support) + 0.5);
        long hi = (long)((double)(center + support) + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        int   n     = (int)(hi - lo);
        float total = 0.0f;
        float *wi   = w + (size_t)i * taps;
        DINOC_ASSERT(n <= taps);
        for (int j = 0; j < n; j++) {
            /* filter((j + xmin - center + 0.5) * invscale): (j + xmin) - center in float, then
             * + 0.5 and * invscale in double (exact), rounded once to float for the filter. */
            float d = (float)(j + lo) - center;
            float v = aa_cubic((float)(((double)d + 0.5) * (double)invscale));
            wi[j]   = v;
            total += v;
        }
        if (total != 0.0f)
            for (int j = 0; j < n; j++) wi[j] /= total;
        xmin[i]  = (int)lo;
        xsize[i] = n;
    }
    *xmin_out  = xmin;
    *xsize_out = xsize;
    *w_out     = w;
    return taps;
}

/* One output value of a separable AA pass: taps s[0], s[stride], ... with weights w[0..n-1], summed
 * from tap 0 in float. torch 1.13's sums match a plain multiply-then-add chain when the axis
 * shrinks and an FMA chain (acc = fma(s_j, w_j, acc)) when it grows; see the file-top note. */
static inline float aa_dot(const float *s, size_t stride, const float *w, int n, int fused) {
    float acc = s[0] * w[0];
    if (fused)
        for (int j = 1; j < n; j++) acc = fmaf(s[(size_t)j * stride], w[j], acc);
    else
        for (int j = 1; j < n; j++) acc += s[(size_t)j * stride] * w[j];
    return acc;
}

/* One separable pass along W (rows of length in_w -> out_w) for `rows` rows. */
static void aa_pass_w(float *out, const float *inp, size_t rows, int in_w, int out_w, double sf) {
    int   *xmin, *xsize;
    float *w;
    int    taps  = aa_weights(in_w, out_w, sf, &xmin, &xsize, &w);
    int    fused = axis_scale(in_w, out_w, sf) < 1.0f;
    int    par   = (double)rows * out_w >= 32768.0;
    (void)par; /* read only by the OpenMP if clause (unused with OMP=0) */
#pragma omp parallel for schedule(static) if (par)
    for (long r = 0; r < (long)rows; r++) {
        const float *src = inp + (size_t)r * in_w;
        float       *dst = out + (size_t)r * out_w;
        for (int o = 0; o < out_w; o++)
            dst[o] = aa_dot(src + xmin[o], 1, w + (size_t)o * taps, xsize[o], fused);
    }
    free(xmin);
    free(xsize);
    free(w);
}

/* One separable pass along H ([C, in_h, W] -> [C, out_h, W]). */
static void aa_pass_h(float *out, const float *inp, int C, int in_h, int out_h, int W, double sf) {
    int   *ymin, *ysize;
    float *w;
    int    taps  = aa_weights(in_h, out_h, sf, &ymin, &ysize, &w);
    int    fused = axis_scale(in_h, out_h, sf) < 1.0f;
    int    par   = (double)C * out_h * W >= 32768.0;
    (void)par; /* read only by the OpenMP if clause (unused with OMP=0) */
#pragma omp parallel for schedule(static) if (par)
    for (int c = 0; c < C; c++) {
        const float *src = inp + (size_t)c * in_h * W;
        float       *dst = out + (size_t)c * out_h * W;
        for (int o = 0; o < out_h; o++) {
            const float *s  = src + (size_t)ymin[o] * W;
            const float *wo = w + (size_t)o * taps;
            for (int x = 0; x < W; x++)
                dst[(size_t)o * W + x] = aa_dot(s + x, (size_t)W, wo, ysize[o], fused);
        }
    }
    free(ymin);
    free(ysize);
    free(w);
}

/* aten separable_upsample_generic_Nd_kernel_impl: W (the contiguous axis) first into a
 * [C, in_h, out_w] temporary, then H. torch 1.13 resamples an axis even when its size does not
 * change (a scale factor such as 37.1/37 that keeps 37 still moves the samples); in size mode such
 * an axis gets the exact weights (0, 1, 0, 0) and comes out unchanged. */
static void resize_aa(float *out, const float *inp, int C, int in_h, int in_w, int out_h, int out_w,
                      double sf_h, double sf_w) {
    float *tmp = malloc(sizeof(float) * (size_t)C * in_h * out_w);
    DINOC_ASSERT(tmp);
    aa_pass_w(tmp, inp, (size_t)C * in_h, in_w, out_w, sf_w);
    aa_pass_h(out, tmp, C, in_h, out_h, out_w, sf_h);
    free(tmp);
}

void dinoc_bicubic_resize(float *out, const float *inp, int C, int in_h, int in_w, int out_h,
                          int out_w, int antialias, double sf_h, double sf_w) {
    DINOC_ASSERT(C > 0 && in_h > 0 && in_w > 0 && out_h > 0 && out_w > 0);
    if (antialias)
        resize_aa(out, inp, C, in_h, in_w, out_h, out_w, sf_h, sf_w);
    else
        resize_cubic(out, inp, C, in_h, in_w, out_h, out_w, sf_h, sf_w);
}

/* ---- backward ------------------------------------------------------------------------------- */

#include <string.h>

/* One axis of the forward as a sparse matrix: output i reads inputs idx[i*ntap + j] with weights
 * w[i*ntap + j], j < ntap (unused AA taps get weight 0 and a valid index). The taps and weights are
 * the forward's own (cubic_taps, aa_weights), so the backward is the adjoint of the same map. */
typedef struct {
    int    ntap;
    int   *idx;
    float *w;
} axis_map;

static void axis_map_build(axis_map *m, int in, int out, int antialias, double sf) {
    if (!antialias) {
        float scale = axis_scale(in, out, sf);
        m->ntap     = 4;
        m->idx      = malloc(sizeof(int) * 4 * (size_t)out);
        m->w        = malloc(sizeof(float) * 4 * (size_t)out);
        DINOC_ASSERT(m->idx && m->w);
        for (int i = 0; i < out; i++) cubic_taps(i, scale, in, m->idx + 4 * i, m->w + 4 * i);
        return;
    }
    int   *xmin, *xsize;
    float *w;
    int    taps = aa_weights(in, out, sf, &xmin, &xsize, &w);
    m->ntap     = taps;
    m->w        = w; /* calloc'ed: taps j >= xsize[i] are already 0 */
    m->idx      = malloc(sizeof(int) * (size_t)taps * out);
    DINOC_ASSERT(m->idx);
    for (int i = 0; i < out; i++)
        for (int j = 0; j < taps; j++)
            m->idx[(size_t)i * taps + j] = j < xsize[i] ? xmin[i] + j : xmin[i];
    free(xmin);
    free(xsize);
}

/* Adjoint of dinoc_bicubic_resize. Both modes compute, per channel, out = Wy X Wx^T with the
 * sparse per-axis matrices above (antialias = 0 folds the 4 x 4 taps the same way: out[oy, ox] =
 * sum_a wy[a] sum_b wx[b] X[ry[a], cx[b]]), so
 *   dX += Wy^T dOut Wx:   A = Wy^T dOut  [in_h, out_w] (scatter of each dOut row onto its tap rows),
 *                         then each row of A scattered through Wx onto a row of in_w values.
 * Clamped taps that repeat an index (edges) add up, as the adjoint must. This is the exact adjoint
 * of the linear map up to float rounding (the forward's FMA roundings are not mirrored). Parallel
 * over channels with per-thread scratch (A and one row), each channel's sums in a fixed order, and
 * dinp += the finished result: identical for any thread count. */
void dinoc_bicubic_resize_backward(float *dinp, const float *dout, int C, int in_h, int in_w,
                                   int out_h, int out_w, int antialias, double sf_h, double sf_w) {
    DINOC_ASSERT(C > 0 && in_h > 0 && in_w > 0 && out_h > 0 && out_w > 0);
    axis_map my, mx;
    axis_map_build(&my, in_h, out_h, antialias, sf_h);
    axis_map_build(&mx, in_w, out_w, antialias, sf_w);
    int    nt  = dinoc_omp_max_threads();
    size_t per = (size_t)in_h * out_w + (size_t)in_w + 16;
    float *scratch = malloc(sizeof(float) * per * (size_t)nt);
    DINOC_ASSERT(scratch);
    size_t in_plane = (size_t)in_h * in_w, out_plane = (size_t)out_h * out_w;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int c = 0; c < C; c++) {
        float       *A   = scratch + per * (size_t)dinoc_omp_thread_num();
        float       *row = A + (size_t)in_h * out_w;
        const float *g   = dout + (size_t)c * out_plane;
        float       *dx  = dinp + (size_t)c * in_plane;
        memset(A, 0, sizeof(float) * (size_t)in_h * out_w);
        for (int oy = 0; oy < out_h; oy++) {
            const float *gr = g + (size_t)oy * out_w;
            for (int a = 0; a < my.ntap; a++) {
                float wy = my.w[(size_t)oy * my.ntap + a];
                if (wy == 0.0f) continue;
                float *ar = A + (size_t)my.idx[(size_t)oy * my.ntap + a] * out_w;
                for (int ox = 0; ox < out_w; ox++) ar[ox] += wy * gr[ox];
            }
        }
        for (int iy = 0; iy < in_h; iy++) {
            const float *ar = A + (size_t)iy * out_w;
            memset(row, 0, sizeof(float) * (size_t)in_w);
            for (int ox = 0; ox < out_w; ox++) {
                const int   *ix = mx.idx + (size_t)ox * mx.ntap;
                const float *wx = mx.w + (size_t)ox * mx.ntap;
                for (int b = 0; b < mx.ntap; b++) row[ix[b]] += wx[b] * ar[ox];
            }
            float *dr = dx + (size_t)iy * in_w;
            for (int ix = 0; ix < in_w; ix++) dr[ix] += row[ix];
        }
    }
    free(scratch);
    free(my.idx);
    free(my.w);
    free(mx.idx);
    free(mx.w);
}
