/* attention.c: scaled dot-product multi-head self-attention over a packed qkv tensor.
 *
 * qkv [B, T, 3D]: columns [0, D) are q, [D, 2D) k, [2D, 3D) v; head h owns columns h*HS .. h*HS+HS-1
 * of each part (the layout of DINO/DINOv2's fused qkv Linear and of HF's query/key/value stacked).
 * out [B, T, D]: heads concatenated. Scores are scaled by HS^-1/2 and softmaxed in float with the
 * row maximum subtracted. Each (b, h, query row) is independent, so the loop is parallel over them
 * and a thread only needs one row of scores as scratch (memory linear in T).
 * Tested in tests/test_ops.c against a naive version and in the model parity tests. */
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
