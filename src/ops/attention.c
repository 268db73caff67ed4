/* attention.c: scaled dot-product multi-head self-attention over a packed qkv tensor.
 *
 * qkv [B, T, 3D]: columns [0, D) are q, [D, 2D) k, [2D, 3D) v; head h owns columns h*HS .. h*HS+HS-1
 * of each part (the layout of DINO/DINOv2's fused qkv Linear and of HF's query/key/value stacked).
 * out [B, T, D]: heads concatenated. Scores are scaled by HS^-1/2 and softmaxed in float with the
 * row maximum subtracted. The two products of each head are BLAS calls; a fused kernel that never
 * holds a whole [T, T] score matrix is the Speed issue's work.
 * Tested in tests/test_ops.c against a naive version and in the model parity tests; the backward
 * (parallel over (b, h) pairs, see below) in tests/test_grad.c and tests/test_ops_parity.c. */
#include "../internal.h"

#include <math.h>
#include <string.h>

size_t dinoc_attention_scratch_floats(int T, int HS) {
    /* the [T, T] scores of one (b, h); callers allocate nthreads times this, only one is used */
    (void)HS;
    return (size_t)T * T + 32;
}

/* exp(x) for x <= 0 (softmax after max subtraction), written so the compiler vectorises it:
 * x = n ln2 + r with |r| <= ln2/2, n rounded with the 1.5 * 2^23 trick (no floorf, which SSE2
 * cannot vectorise), exp(r) by Cephes' degree-6 polynomial, 2^n by building the float's exponent
 * bits. Relative error about 2 ulp; results below e^-87 flush to 0 like expf's underflow. */
static inline float exp_neg(float xin) {
    /* clamp (NaN goes to -87 here, so the integer conversion below is always defined) */
    float x = xin > -87.0f ? xin : -87.0f;
    x       = x < 0.0f ? x : 0.0f;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f - n * -2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p       = p * r + 1.3981999507E-3f;
    p       = p * r + 8.3334519073E-3f;
    p       = p * r + 4.1665795894E-2f;
    p       = p * r + 1.6666665459E-1f;
    p       = p * r + 5.0000001201E-1f;
    p       = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) * (1 << 23);
    float   scale;
    memcpy(&scale, &bits, sizeof scale); /* 2^n */
    float y = p * scale;
    return xin == xin ? y : xin; /* a NaN score stays NaN, so the loss check sees it */
}

/* The AVX2 clone is chosen by an ifunc resolver that runs while the executable is being relocated,
 * before ThreadSanitizer's runtime is up; instrumented, it crashes there (scripts/tsan.sh). */
#if defined(__SANITIZE_THREAD__)
#define DINOC_SOFTMAX_CLONES
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DINOC_SOFTMAX_CLONES
#endif
#endif
#ifndef DINOC_SOFTMAX_CLONES
#define DINOC_SOFTMAX_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#endif

/* Softmax of each row of s [T, T] (scaled scores) in place, rows in parallel. */
DINOC_SOFTMAX_CLONES
static void softmax_rows(float *s, int T, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int t = 0; t < T; t++) {
        float *r  = s + (size_t)t * T;
        float  mx = -INFINITY;
        for (int u = 0; u < T; u++) mx = r[u] > mx ? r[u] : mx;
        for (int u = 0; u < T; u++) r[u] = exp_neg(r[u] - mx);
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int u = 0; u < T; u++) sum += r[u];
        const float inv = 1.0f / sum;
#pragma omp simd
        for (int u = 0; u < T; u++) r[u] *= inv;
    }
}

/* Per (b, h), in turn: S = (Q * scale) K^T and O = P V as two BLAS products that read q, k and v in
 * place (leading dimension 3D) and write O into its head's columns of out (leading dimension D),
 * with the row softmax between them. S is one [T, T] buffer (the caller's att slice when the
 * probabilities are kept), so memory stays O(T^2) for one head, not for the batch. */
void dinoc_attention_forward(float *out, float *att, const float *qkv, int B, int T, int D, int NH,
                             float *scratch, int nthreads) {
    const int    HS    = D / NH;
    const float  scale = 1.0f / sqrtf((float)HS);
    const size_t ld    = (size_t)3 * D; /* row stride of qkv */
    for (int b = 0; b < B; b++) {
        const float *base = qkv + (size_t)b * T * ld;
        for (int h = 0; h < NH; h++) {
            float *s = att ? att + ((size_t)b * NH + h) * T * T : scratch;
            dinoc_gemm(0, 1, T, T, HS, scale, base + h * HS, (int)ld, base + D + h * HS, (int)ld, 0.0f, s, T);
            softmax_rows(s, T, nthreads);
            dinoc_gemm(0, 0, T, HS, T, 1.0f, s, T, base + 2 * D + h * HS, (int)ld, 0.0f,
                       out + (size_t)b * T * D + h * HS, D);
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
