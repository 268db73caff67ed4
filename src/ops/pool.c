/* pool.c: ReLU and the pooling ops of CNNs over NCHW planes (N = B * C planes of H x W): max
 * pooling (ResNet's 3x3 stride-2 pad-1 stem pool), average pooling (CLIP ResNet's AvgPool2d(stride)
 * anti-aliased downsampling) and global average pooling (the ResNet feature). Forward and backward;
 * tested in tests/test_cnn.c (finite differences, torch parity from tests/py/gen_cnn.py).
 * Every loop is parallel over planes, which never share outputs: results do not depend on the
 * thread count. */
#include "cnn.h"

#include <math.h>

void dinoc_relu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void dinoc_relu_backward(float *dinp, const float *dout, const float *out, size_t n) {
    if (dinp == dout) {
        /* in place: masking is the whole gradient */
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++)
            if (!(out[i] > 0.0f)) dinp[i] = 0.0f;
        return;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        if (out[i] > 0.0f) dinp[i] += dout[i];
}

int dinoc_pool_out_size(int H, int k, int s, int p) { return (H + 2 * p - k) / s + 1; }

/* torch keeps the first maximum in row-major window order and lets a NaN win (it propagates);
 * `v > best || isnan(v)` does both, the same test as torch's kernel. */
void dinoc_maxpool2d_forward(float *out, int32_t *argmax, const float *inp, int N, int H, int W,
                             int k, int s, int p) {
    const int OH = dinoc_pool_out_size(H, k, s, p), OW = dinoc_pool_out_size(W, k, s, p);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * H * W;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float best = -INFINITY;
                int   arg  = -1;
                for (int i = 0; i < k; i++) {
                    const int ih = oh * s - p + i;
                    if (ih < 0 || ih >= H) continue;
                    for (int j = 0; j < k; j++) {
                        const int iw = ow * s - p + j;
                        if (iw < 0 || iw >= W) continue;
                        const float v = x[ih * W + iw];
                        if (arg < 0 || v > best || isnan(v)) {
                            best = v;
                            arg  = ih * W + iw;
                        }
                    }
                }
                const size_t o = ((size_t)n * OH + oh) * OW + ow;
                out[o]         = best;
                if (argmax) argmax[o] = arg;
            }
    }
}

void dinoc_maxpool2d_backward(float *dinp, const float *dout, const int32_t *argmax, int N, int H,
                              int W, int OH, int OW) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float         *dx = dinp + (size_t)n * H * W;
        const float   *dy = dout + (size_t)n * OH * OW;
        const int32_t *a  = argmax + (size_t)n * OH * OW;
        for (int o = 0; o < OH * OW; o++)
            if (a[o] >= 0) dx[a[o]] += dy[o];
    }
}

void dinoc_avgpool2d_forward(float *out, const float *inp, int N, int H, int W, int k, int s) {
    const int   OH = dinoc_pool_out_size(H, k, s, 0), OW = dinoc_pool_out_size(W, k, s, 0);
    const float inv = 1.0f / (float)(k * k);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * H * W;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float acc = 0.0f;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++) acc += x[(oh * s + i) * W + ow * s + j];
                out[((size_t)n * OH + oh) * OW + ow] = acc * inv;
            }
    }
}

void dinoc_avgpool2d_backward(float *dinp, const float *dout, int N, int H, int W, int k, int s) {
    const int   OH = dinoc_pool_out_size(H, k, s, 0), OW = dinoc_pool_out_size(W, k, s, 0);
    const float inv = 1.0f / (float)(k * k);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float       *dx = dinp + (size_t)n * H * W;
        const float *dy = dout + (size_t)n * OH * OW;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                const float g = dy[oh * OW + ow] * inv;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++) dx[(oh * s + i) * W + ow * s + j] += g;
            }
    }
}

void dinoc_global_avgpool_forward(float *out, const float *inp, int N, int HW) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x   = inp + (size_t)n * HW;
        double       acc = 0;
        for (int p = 0; p < HW; p++) acc += x[p];
        out[n] = (float)(acc / HW);
    }
}

void dinoc_global_avgpool_backward(float *dinp, const float *dout, int N, int HW) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float      *dx = dinp + (size_t)n * HW;
        const float g  = dout[n] / (float)HW;
        for (int p = 0; p < HW; p++) dx[p] += g;
    }
}

/* ---- CLIP attention pooling ---------------------------------------------------------------------- */

size_t dinoc_attnpool_scratch_floats(int B, int HW, int E, int NH) {
    const size_t T = (size_t)HW + 1;
    /* tokens, keys, values [B, T, E]; query input and query, head outputs [B, E]; scores */
    return 3 * (size_t)B * T * E + 3 * (size_t)B * E + (size_t)B * NH * T;
}

/* As OpenAI's clip/model.py AttentionPool2d through F.multi_head_attention_forward: the query is
 * scaled by HS^-1/2 before the dot products (torch's order), softmax over the HW+1 keys. */
void dinoc_attnpool_forward(float *out, float *scratch, const float *x, const float *pos,
                            const float *const w[4], const float *const b[4], int B, int HW,
                            int E, int NH, int O) {
    const int    T = HW + 1, HS = E / NH;
    const size_t bte = (size_t)B * T * E;
    float *tok = scratch, *k = tok + bte, *v = k + bte, *qin = v + bte, *q = qin + (size_t)B * E;
    float *o = q + (size_t)B * E, *sc = o + (size_t)B * E;
    /* tokens [B, T, E] from NCHW: token 0 the spatial mean, then the pixels; plus pos */
#pragma omp parallel for schedule(static)
    for (int bi = 0; bi < B; bi++) {
        for (int e = 0; e < E; e++) {
            const float *xp  = x + ((size_t)bi * E + e) * HW;
            double       acc = 0;
            for (int p = 0; p < HW; p++) acc += xp[p];
            float *t = tok + (size_t)bi * T * E;
            t[e]     = (float)(acc / HW) + pos[e];
            for (int p = 0; p < HW; p++) t[(size_t)(p + 1) * E + e] = xp[p] + pos[(size_t)(p + 1) * E + e];
            qin[(size_t)bi * E + e] = t[e];
        }
    }
    dinoc_linear_forward(q, qin, w[0], b[0], B, E, E);
    dinoc_linear_forward(k, tok, w[1], b[1], B * T, E, E);
    dinoc_linear_forward(v, tok, w[2], b[2], B * T, E, E);
    const float scale = 1.0f / sqrtf((float)HS);
#pragma omp parallel for collapse(2) schedule(static)
    for (int bi = 0; bi < B; bi++)
        for (int h = 0; h < NH; h++) {
            const float *qh = q + (size_t)bi * E + (size_t)h * HS;
            float       *s  = sc + ((size_t)bi * NH + h) * T;
            float        mx = -INFINITY;
            for (int t = 0; t < T; t++) {
                const float *kh  = k + ((size_t)bi * T + t) * E + (size_t)h * HS;
                float        acc = 0.0f;
                for (int d = 0; d < HS; d++) acc += (qh[d] * scale) * kh[d];
                s[t] = acc;
                mx   = acc > mx ? acc : mx;
            }
            double sum = 0;
            for (int t = 0; t < T; t++) sum += (s[t] = expf(s[t] - mx));
            float *oh = o + (size_t)bi * E + (size_t)h * HS;
            for (int d = 0; d < HS; d++) oh[d] = 0.0f;
            for (int t = 0; t < T; t++) {
                const float  p  = (float)(s[t] / sum);
                const float *vh = v + ((size_t)bi * T + t) * E + (size_t)h * HS;
                for (int d = 0; d < HS; d++) oh[d] += p * vh[d];
            }
        }
    dinoc_linear_forward(out, o, w[3], b[3], B, E, O);
}
