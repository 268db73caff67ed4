/* conv.c: 2-D convolution (PyTorch's Conv2d: zero padding, square stride, groups, no dilation) as
 * im2col + GEMM, forward and backward. The products go through dinoc_gemm (src/ops/linear.c):
 * cblas_sgemm under DINOC_OPENBLAS, the plain loop with BLAS=none, so both builds share this file.
 * Tested in tests/test_cnn.c (finite differences, torch parity from tests/py/gen_cnn.py).
 *
 * Per image b and group g, with Cg = C / groups input and Kg = K / groups output channels:
 *   col [Cg*kh*kw, OH*OW]     row (c, i, j) holds input pixel (c, oh*s - p + i, ow*s - p + j), 0 off
 *                             the image (im2col, as Caffe / darknet lay it out)
 *   out_bg [Kg, OH*OW]        = w_g [Kg, Cg*kh*kw] @ col          (+ bias, pre-filled, beta = 1)
 *   dw_g                     += dout_bg @ col^T
 *   dcol                      = w_g^T @ dout_bg, scattered back with col2im (the adjoint of im2col)
 * A 1x1 convolution with stride 1 and no padding has col == the input itself, so it skips the copy
 * (most of a Bottleneck's FLOPs). Images go one at a time so the workspace stays one image's col,
 * not the batch's (ResNet-50's stem col alone is 1.2 MB per 224 image). */
#include "cnn.h"

#include <string.h>

int dinoc_conv2d_dims_set(dinoc_conv2d_dims *d) {
    if (d->B <= 0 || d->C <= 0 || d->H <= 0 || d->W <= 0 || d->K <= 0 || d->kh <= 0 ||
        d->kw <= 0 || d->stride <= 0 || d->pad < 0 || d->groups <= 0 || d->C % d->groups ||
        d->K % d->groups)
        return 0;
    d->OH = (d->H + 2 * d->pad - d->kh) / d->stride + 1;
    d->OW = (d->W + 2 * d->pad - d->kw) / d->stride + 1;
    return d->H + 2 * d->pad >= d->kh && d->W + 2 * d->pad >= d->kw && d->OH > 0 && d->OW > 0;
}

static int is_direct(const dinoc_conv2d_dims *d) {
    return d->kh == 1 && d->kw == 1 && d->stride == 1 && d->pad == 0;
}

size_t dinoc_conv2d_col_floats(const dinoc_conv2d_dims *d) {
    if (is_direct(d)) return 0;
    return (size_t)(d->C / d->groups) * d->kh * d->kw * d->OH * d->OW;
}

/* The output columns ow whose input column ow*s - p + j lies in [0, W): [*lo, *hi). */
static void valid_cols(int *lo, int *hi, int j, const dinoc_conv2d_dims *d) {
    const int s = d->stride, off = j - d->pad; /* iw = ow * s + off */
    int       l = off >= 0 ? 0 : (-off + s - 1) / s;
    int       h = d->W - 1 - off < 0 ? 0 : (d->W - 1 - off) / s + 1;
    *lo = l < d->OW ? l : d->OW;
    *hi = h < d->OW ? h : d->OW;
}

/* col [Cg*kh*kw, OH*OW] from one image's group of planes x [Cg, H, W]. */
static void im2col(float *col, const float *x, int Cg, const dinoc_conv2d_dims *d) {
    const int rows = Cg * d->kh * d->kw, OH = d->OH, OW = d->OW;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const int    c = r / (d->kh * d->kw), i = r / d->kw % d->kh, j = r % d->kw;
        const float *xp = x + (size_t)c * d->H * d->W;
        float       *cr = col + (size_t)r * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
            const int ih = oh * d->stride - d->pad + i;
            float    *o  = cr + (size_t)oh * OW;
            if (ih < 0 || ih >= d->H) {
                memset(o, 0, sizeof(float) * (size_t)OW);
                continue;
            }
            /* columns [lo, hi) read inside the row; the padding outside them is zero */
            const float *xr = xp + (size_t)ih * d->W;
            int          lo, hi;
            valid_cols(&lo, &hi, j, d);
            for (int ow = 0; ow < lo; ow++) o[ow] = 0.0f;
            if (d->stride == 1) {
                if (hi > lo) memcpy(o + lo, xr + lo - d->pad + j, sizeof(float) * (size_t)(hi - lo));
            } else {
                for (int ow = lo; ow < hi; ow++) o[ow] = xr[ow * d->stride - d->pad + j];
            }
            for (int ow = hi > lo ? hi : lo; ow < OW; ow++) o[ow] = 0.0f;
        }
    }
}

/* dx [Cg, H, W] += col2im(dcol): the adjoint of im2col. Parallel over input planes: the kh*kw rows
 * of plane c only touch plane c, so threads write disjoint memory and each pixel sums its
 * contributions in the same order whatever the thread count. */
static void col2im_add(float *dx, const float *dcol, int Cg, const dinoc_conv2d_dims *d) {
    const int OH = d->OH, OW = d->OW, kk = d->kh * d->kw;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < Cg; c++) {
        float *xp = dx + (size_t)c * d->H * d->W;
        for (int ij = 0; ij < kk; ij++) {
            const int    i = ij / d->kw, j = ij % d->kw;
            const float *cr = dcol + ((size_t)c * kk + ij) * OH * OW;
            for (int oh = 0; oh < OH; oh++) {
                const int ih = oh * d->stride - d->pad + i;
                if (ih < 0 || ih >= d->H) continue;
                float       *xr = xp + (size_t)ih * d->W;
                const float *g  = cr + (size_t)oh * OW;
                int          lo, hi;
                valid_cols(&lo, &hi, j, d);
                for (int ow = lo; ow < hi; ow++) xr[ow * d->stride - d->pad + j] += g[ow];
            }
        }
    }
}

void dinoc_conv2d_forward(float *out, float *col, const float *inp, const float *w,
                          const float *bias, const dinoc_conv2d_dims *d) {
    const int    G = d->groups, Cg = d->C / G, Kg = d->K / G, ohw = d->OH * d->OW;
    const int    ckk = Cg * d->kh * d->kw;
    const size_t hw  = (size_t)d->H * d->W;
    for (int b = 0; b < d->B; b++) {
        for (int g = 0; g < G; g++) {
            const float *x = inp + ((size_t)b * d->C + (size_t)g * Cg) * hw;
            float       *y = out + ((size_t)b * d->K + (size_t)g * Kg) * ohw;
            const float *src = x;
            if (!is_direct(d)) {
                im2col(col, x, Cg, d);
                src = col;
            }
            if (bias) {
#pragma omp parallel for schedule(static)
                for (int k = 0; k < Kg; k++)
                    for (int p = 0; p < ohw; p++) y[(size_t)k * ohw + p] = bias[g * Kg + k];
            }
            dinoc_gemm(0, 0, Kg, ohw, ckk, 1.0f, w + (size_t)g * Kg * ckk, ckk, src, ohw,
                       bias ? 1.0f : 0.0f, y, ohw);
        }
    }
}

void dinoc_conv2d_backward(float *dinp, float *dw, float *db, float *col, const float *dout,
                           const float *inp, const float *w, const dinoc_conv2d_dims *d) {
    const int    G = d->groups, Cg = d->C / G, Kg = d->K / G, ohw = d->OH * d->OW;
    const int    ckk = Cg * d->kh * d->kw, direct = is_direct(d);
    const size_t hw  = (size_t)d->H * d->W;
    for (int b = 0; b < d->B; b++) {
        for (int g = 0; g < G; g++) {
            const float *x  = inp + ((size_t)b * d->C + (size_t)g * Cg) * hw;
            const float *dy = dout + ((size_t)b * d->K + (size_t)g * Kg) * ohw;
            const float *wg = w + (size_t)g * Kg * ckk;
            if (dw) {
                const float *src = x;
                if (!direct) {
                    im2col(col, x, Cg, d);
                    src = col;
                }
                dinoc_gemm(0, 1, Kg, ckk, ohw, 1.0f, dy, ohw, src, ohw, 1.0f,
                           dw + (size_t)g * Kg * ckk, ckk);
            }
            if (dinp) {
                float *dx = dinp + ((size_t)b * d->C + (size_t)g * Cg) * hw;
                if (direct) {
                    /* col is the input itself: accumulate straight into dinp */
                    dinoc_gemm(1, 0, ckk, ohw, Kg, 1.0f, wg, ckk, dy, ohw, 1.0f, dx, ohw);
                } else {
                    dinoc_gemm(1, 0, ckk, ohw, Kg, 1.0f, wg, ckk, dy, ohw, 0.0f, col, ohw);
                    col2im_add(dx, col, Cg, d);
                }
            }
        }
    }
    if (db) {
        /* per output channel, summed over batch then pixels in a fixed order, in double (B*OH*OW
         * reaches 10^5 at 224 px); channels are independent, so threads never share a sum */
#pragma omp parallel for schedule(static)
        for (int k = 0; k < d->K; k++) {
            double acc = 0;
            for (int b = 0; b < d->B; b++) {
                const float *dy = dout + ((size_t)b * d->K + k) * ohw;
                for (int p = 0; p < ohw; p++) acc += dy[p];
            }
            db[k] += (float)acc;
        }
    }
}
