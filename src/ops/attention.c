/* attention.c: scaled dot-product multi-head self-attention over a packed qkv tensor.
 *
 * qkv [B, T, 3D]: columns [0, D) are q, [D, 2D) k, [2D, 3D) v; head h owns columns h*HS .. h*HS+HS-1
 * of each part (the layout of DINO/DINOv2's fused qkv Linear and of HF's query/key/value stacked).
 * out [B, T, D]: heads concatenated. Scores are scaled by HS^-1/2 and softmaxed in float with the
 * row maximum subtracted. Each (b, h, query row) is independent, so the loop is parallel over them
 * and a thread only needs one row of scores as scratch (memory linear in T).
 * Tested in tests/test_ops.c against a naive version and in the model parity tests; the backward
 * (parallel over (b, h) pairs, see below) in tests/test_grad.c and tests/test_ops_parity.c. */
#include "../internal.h"

#include <math.h>
#include <string.h>

size_t dinoc_attention_scratch_floats(int T, int HS) {
    /* one score row + one output accumulator row, padded to a cache line */
    return (size_t)(T + HS + 32);
}

void dinoc_attention_forward(float *out, float *att, const float *qkv, int B, int T, int D, int NH,
                             float *scratch, int nthreads) {
    const int    HS    = D / NH;
    const float  scale = 1.0f / sqrtf((float)HS);
    const size_t per   = dinoc_attention_scratch_floats(T, HS);
    const size_t ld    = (size_t)3 * D; /* row stride of qkv */
#pragma omp parallel for collapse(3) schedule(static) num_threads(nthreads)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int t = 0; t < T; t++) {
                float       *s    = scratch + per * (size_t)dinoc_omp_thread_num();
                float       *acc  = s + T;
                const float *base = qkv + (size_t)b * T * ld;
                const float *q    = base + (size_t)t * ld + h * HS;
                float        mx   = -INFINITY;
                for (int u = 0; u < T; u++) {
                    const float *k = base + (size_t)u * ld + D + h * HS;
                    float        d = 0.0f;
                    for (int i = 0; i < HS; i++) d += q[i] * k[i];
                    d *= scale;
                    s[u] = d;
                    if (d > mx) mx = d;
                }
                float sum = 0.0f;
                for (int u = 0; u < T; u++) {
                    s[u] = expf(s[u] - mx);
                    sum += s[u];
                }
                float inv = 1.0f / sum;
                memset(acc, 0, sizeof(float) * HS);
                for (int u = 0; u < T; u++) {
                    float        p = s[u] * inv;
                    const float *v = base + (size_t)u * ld + 2 * D + h * HS;
                    s[u]           = p;
                    for (int i = 0; i < HS; i++) acc[i] += p * v[i];
                }
                memcpy(out + ((size_t)b * T + t) * D + h * HS, acc, sizeof(float) * HS);
                if (att) memcpy(att + (((size_t)b * NH + h) * T + t) * T, s, sizeof(float) * T);
            }
        }
    }
}

size_t dinoc_attention_backward_scratch_floats(int T, int HS) {
    /* one dP row [T], one dQ accumulator [HS], dK and dV of one (b, h) [T, HS] each, padded so
     * that threads' slices start on different cache lines */
    return (size_t)T + (size_t)HS + 2 * (size_t)T * HS + 32;
}

/* Attention backward for one (b, h), with S = Q K^T * scale, P = softmax_rows(S), O = P V and the
 * saved P:
 *   dV = P^T dO        dP = dO V^T        dS = P * (dP - rowsum(dP * P))
 *   dQ = dS K * scale  dK = dS^T Q * scale
 * Written per query row t: row t of dP, then dS[t, :], then dQ[t] = scale * sum_u dS[t,u] K[u],
 * and the rank-one updates dK[u] += scale * dS[t,u] Q[t], dV[u] += P[t,u] dO[t] into this
 * thread's scratch. The loop is parallel over (b, h) pairs only and runs t in order inside one, so
 * every sum has a fixed order whatever the thread count; dK and dV of the pair are then added to
 * dqkv once (dqkv += result, so two calls give exactly twice one call). Memory O(T * HS) a thread.
 * rowsum(dP * P) is accumulated in double: it is subtracted from every dP[t, u] and so sets the
 * absolute error of the whole dS row. */
void dinoc_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                              int B, int T, int D, int NH, float *scratch, int nthreads) {
    const int    HS    = D / NH;
    const float  scale = 1.0f / sqrtf((float)HS);
    const size_t per   = dinoc_attention_backward_scratch_floats(T, HS);
    const size_t ld    = (size_t)3 * D;
#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            float       *dp   = scratch + per * (size_t)dinoc_omp_thread_num(); /* [T] */
            float       *dq   = dp + T;                                           /* [HS] */
            float       *dk   = dq + HS;                                          /* [T, HS] */
            float       *dv   = dk + (size_t)T * HS;                              /* [T, HS] */
            const float *base = qkv + (size_t)b * T * ld;
            float       *dbase = dqkv + (size_t)b * T * ld;
            memset(dk, 0, sizeof(float) * 2 * (size_t)T * HS);
            for (int t = 0; t < T; t++) {
                const float *p  = att + (((size_t)b * NH + h) * T + t) * T;
                const float *q  = base + (size_t)t * ld + h * HS;
                const float *go = dout + ((size_t)b * T + t) * D + h * HS;
                double       rs = 0.0;
                for (int u = 0; u < T; u++) {
                    const float *v = base + (size_t)u * ld + 2 * D + h * HS;
                    float        d = 0.0f;
                    for (int i = 0; i < HS; i++) d += go[i] * v[i];
                    dp[u] = d;
                    rs += (double)d * p[u];
                }
                float rsf = (float)rs;
                memset(dq, 0, sizeof(float) * HS);
                for (int u = 0; u < T; u++) {
                    const float *k   = base + (size_t)u * ld + D + h * HS;
                    float        ds  = p[u] * (dp[u] - rsf) * scale;
                    float       *dku = dk + (size_t)u * HS;
                    float       *dvu = dv + (size_t)u * HS;
                    for (int i = 0; i < HS; i++) {
                        dq[i] += ds * k[i];
                        dku[i] += ds * q[i];
                        dvu[i] += p[u] * go[i];
                    }
                }
                float *dqt = dbase + (size_t)t * ld + h * HS;
                for (int i = 0; i < HS; i++) dqt[i] += dq[i];
            }
            for (int u = 0; u < T; u++) {
                float *dku = dbase + (size_t)u * ld + D + h * HS;
                float *dvu = dbase + (size_t)u * ld + 2 * D + h * HS;
                for (int i = 0; i < HS; i++) {
                    dku[i] += dk[(size_t)u * HS + i];
                    dvu[i] += dv[(size_t)u * HS + i];
                }
            }
        }
    }
}
