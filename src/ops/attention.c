/* attention.c: scaled dot-product multi-head self-attention over a packed qkv tensor.
 *
 * qkv [B, T, 3D]: columns [0, D) are q, [D, 2D) k, [2D, 3D) v; head h owns columns h*HS .. h*HS+HS-1
 * of each part (the layout of DINO/DINOv2's fused qkv Linear and of HF's query/key/value stacked).
 * out [B, T, D]: heads concatenated. Scores are scaled by HS^-1/2 and softmaxed in float with the
 * row maximum subtracted.
 *
 * Masks (text encoders): query t of sample b sees key u iff (!causal || u <= t) and u < key_len[b]
 * (CLIP's causal tower; BERT's key padding). Only the forward takes the mask: a masked key's
 * probability is written as exactly 0 (never exp(-huge)), so the backward, which reads the saved
 * probabilities, gives masked entries dS = P * (...) = 0 and dV += 0 * dO: no mask is needed
 * there, and tests/test_text.c checks it by finite differences.
 *
 * Two implementations, chosen by T:
 *   direct kernels, for T <= DINOC_ATTN_FWD_DIRECT_T (128) forward and DINOC_ATTN_BWD_DIRECT_T
 *     (512) backward: one (b, h) pair at a time per thread, pairs in parallel, no BLAS call (at
 *     these sizes a call costs more than its arithmetic). K and V are transposed into scratch, so
 *     every product is a sum of scaled rows; the AVX2 + FMA copy (vecmath.h's dispatch) keeps two
 *     rows' accumulators in registers, the portable copy is plain C. The next pair's rows are
 *     prefetched while a pair runs. Measured on the 2-core EPYC, t = 1, B = 128, D = 128, 4
 *     heads: T = 17 forward 2.2x, backward 8x faster than the reference; at T = 197 (ViT-S/16)
 *     the forward ties with BLAS (so it stops at 128) and the backward is 11x faster.
 *   larger T, inference (att NULL): query tiles. Tasks (b, h, block of ATT_QB = 256 queries) run
 *     in parallel, each with two BLAS products on its tile: S = Q_tile K^T [256, T], the row
 *     softmax, O_tile = P V. Only a [256, T] tile of scores exists per thread, so memory is linear
 *     in T (ViT-S/14 at 2048 px, T = 21,317: 22 MB per thread, where one [T, T] matrix would be
 *     1.8 GB). Measured on the 2-core EPYC, 2 threads, batch 1: speed within noise of the [T, T]
 *     path at 224 and 518 px (tiles of 64 and 128 were up to 10 % slower at 518: K is repacked
 *     per tile); peak RSS at 1036 px 476 -> 244 MB;
 *   larger T, training (att kept for the backward): dinoc_attention_forward_ref / _backward_ref, two
 *     BLAS products per (b, h) and a row-by-row backward whose memory is linear in T (DINOv2 at
 *     518 px: T = 1370).
 * Tested in tests/test_ops.c against a naive version and in the model parity tests; the backward
 * (parallel over (b, h) pairs, see below) in tests/test_grad.c and tests/test_ops_parity.c; the
 * small kernels against the reference ones in tests/test_fastops.c. */
#include "../internal.h"
#include "vecmath.h"

#include <math.h>
#include <string.h>

/* rounds a per-thread slice up to whole cache lines (16 floats) */
static size_t slice_floats(size_t n) { return (n + 15) / 16 * 16; }
/* T rounded up to whole 8-float vectors: the small kernels' score rows */
static int pad8(int T) { return (T + 7) / 8 * 8; }

enum { ATT_QB = 256 }; /* query rows per tile of the large-T inference path */

size_t dinoc_attention_scratch_floats(int T, int HS) {
    /* large T: one [ATT_QB, T] score tile per thread (the training path writes its scores into
     * att). Small kernel, per thread: K^T [HS, Tp] and the scores [T, Tp] (the portable copy uses
     * one row), or the reference's [T, T]. Callers allocate nthreads times this. */
    if (T > DINOC_ATTN_FWD_DIRECT_T) return slice_floats((size_t)ATT_QB * T) + 32;
    size_t ref = (size_t)T * T + 32;
    size_t small = slice_floats((size_t)HS * pad8(T) + (size_t)T * pad8(T));
    return small > ref ? small : ref;
}

/* Keys visible to query t: [0, key_limit) (see the mask rule at the top; kv >= 1). */
static inline int key_limit(int t, int causal, int kv) { return causal && t + 1 < kv ? t + 1 : kv; }

/* One score row r[0, len) of the [T, T] and query-tile paths: softmax over its first n entries
 * (the keys the query sees), the rest exactly 0. Maximum and sum run over 16 explicit lanes, so
 * the AVX2 and AVX-512 copies give the same bits (the portable copy differs by its unfused
 * multiply-adds, as vecmath.h says). Until session 11 this was a plain loop left to the compiler
 * (target_clones for AVX2): it kept the maximum scalar, and its code was 10 % of ViT-S/14's
 * batch-1 forward; these copies cost a quarter of that. */
DINOC_INLINE void softmax_row_lanes(float *r, int n, int len, int fused) {
    float mx[16], sum[16] = {0};
    int   u = 0;
    for (int j = 0; j < 16; j++) mx[j] = -INFINITY;
    for (; u + 16 <= n; u += 16)
        for (int j = 0; j < 16; j++) mx[j] = r[u + j] > mx[j] ? r[u + j] : mx[j];
    for (int j = 0; u + j < n; j++) mx[j] = r[u + j] > mx[j] ? r[u + j] : mx[j];
    for (int w = 8; w >= 1; w /= 2)
        for (int j = 0; j < w; j++) mx[j] = mx[j + w] > mx[j] ? mx[j + w] : mx[j];
    const float m = mx[0];
    for (u = 0; u + 16 <= n; u += 16)
        for (int j = 0; j < 16; j++) {
            const float e = dinoc_vm_exp_neg(r[u + j] - m, fused);
            r[u + j]      = e;
            sum[j] += e;
        }
    for (int j = 0; u + j < n; j++) {
        const float e = dinoc_vm_exp_neg(r[u + j] - m, fused);
        r[u + j]      = e;
        sum[j] += e;
    }
    for (int w = 8; w >= 1; w /= 2)
        for (int j = 0; j < w; j++) sum[j] += sum[j + w];
    const float inv = 1.0f / sum[0];
    for (u = 0; u < n; u++) r[u] *= inv;
    for (; u < len; u++) r[u] = 0.0f;
}
#define SOFTMAX_COPY(name, target, fused) \
    target static void softmax_lanes_##name(float *r, int n, int len) { softmax_row_lanes(r, n, len, fused); }
DINOC_LEVEL_COPIES(SOFTMAX_COPY)
#undef SOFTMAX_COPY
typedef void (*softmax_fn)(float *, int, int);
DINOC_LEVEL_TABLE(softmax_fn, k_softmax_lanes, softmax_lanes);

/* Softmax of each row of s [T, T] (scaled scores) in place, rows in parallel; row t runs over its
 * visible keys only and the masked tail is set to exactly 0. */
static void softmax_rows(float *s, int T, int causal, int kv, int nthreads) {
    const softmax_fn sm = k_softmax_lanes[dinoc_ops_level()];
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int t = 0; t < T; t++) sm(s + (size_t)t * T, key_limit(t, causal, kv), T);
}

/* Per (b, h), in turn: S = (Q * scale) K^T and O = P V as two BLAS products that read q, k and v in
 * place (leading dimension 3D) and write O into its head's columns of out (leading dimension D),
 * with the row softmax between them. S is one [T, T] buffer (the caller's att slice when the
 * probabilities are kept), so memory stays O(T^2) for one head, not for the batch. */
void dinoc_attention_forward_ref(float *out, float *att, const float *qkv, int B, int T, int D,
                                 int NH, float *scratch, int nthreads) {
    dinoc_attention_forward_ref_masked(out, att, qkv, NULL, B, T, D, NH, scratch, nthreads);
}

/* The large-T inference path (see the top): tasks of (b, h, query tile), two BLAS products per
 * tile (dinoc_gemm runs single-threaded inside a parallel region). One task on this thread: */
static void attention_tile(float *out, const float *qkv, const dinoc_attn_mask *mask, int T, int D, int NH,
                           float *scratch, int task) {
    const int    causal = mask && mask->causal, HS = D / NH, nqb = (T + ATT_QB - 1) / ATT_QB;
    const float  scale  = 1.0f / sqrtf((float)HS);
    const size_t ld = (size_t)3 * D, per = dinoc_attention_scratch_floats(T, HS);
    const int    b = task / (NH * nqb), h = task / nqb % NH, t0 = task % nqb * ATT_QB;
    const int    nq = T - t0 < ATT_QB ? T - t0 : ATT_QB;
    const int    kv = mask && mask->key_len ? mask->key_len[b] : T;
    const int    nk = causal && t0 + nq < kv ? t0 + nq : kv; /* keys any row of the tile sees */
    const float *base = qkv + (size_t)b * T * ld;
    float       *s    = scratch + per * (size_t)dinoc_omp_thread_num();
    dinoc_gemm(0, 1, nq, nk, HS, scale, base + (size_t)t0 * ld + h * HS, (int)ld, base + D + h * HS, (int)ld, 0.0f,
               s, nk);
    const softmax_fn sm = k_softmax_lanes[dinoc_ops_level()];
    for (int i = 0; i < nq; i++) sm(s + (size_t)i * nk, key_limit(t0 + i, causal, kv), nk);
    dinoc_gemm(0, 0, nq, HS, nk, 1.0f, s, nk, base + 2 * D + h * HS, (int)ld, 0.0f,
               out + ((size_t)b * T + t0) * D + h * HS, D);
}
static int attention_tiles(int B, int T, int NH) { return B * NH * ((T + ATT_QB - 1) / ATT_QB); }

static void attention_forward_tiled(float *out, const float *qkv, const dinoc_attn_mask *mask, int B, int T,
                                    int D, int NH, float *scratch, int nthreads) {
#pragma omp parallel for schedule(dynamic) num_threads(nthreads)
    for (int task = 0; task < attention_tiles(B, T, NH); task++)
        attention_tile(out, qkv, mask, T, D, NH, scratch, task);
}

void dinoc_attention_forward_ref_masked(float *out, float *att, const float *qkv,
                                        const dinoc_attn_mask *mask, int B, int T, int D, int NH,
                                        float *scratch, int nthreads) {
    if (!att && T > DINOC_ATTN_FWD_DIRECT_T) { /* the scratch holds a tile, not [T, T] */
        attention_forward_tiled(out, qkv, mask, B, T, D, NH, scratch, nthreads);
        return;
    }
    const int causal = mask && mask->causal;
    const int    HS    = D / NH;
    const float  scale = 1.0f / sqrtf((float)HS);
    const size_t ld    = (size_t)3 * D; /* row stride of qkv */
    for (int b = 0; b < B; b++) {
        const float *base = qkv + (size_t)b * T * ld;
        for (int h = 0; h < NH; h++) {
            float *s = att ? att + ((size_t)b * NH + h) * T * T : scratch;
            dinoc_gemm(0, 1, T, T, HS, scale, base + h * HS, (int)ld, base + D + h * HS, (int)ld, 0.0f, s, T);
            softmax_rows(s, T, causal, mask && mask->key_len ? mask->key_len[b] : T, nthreads);
            dinoc_gemm(0, 0, T, HS, T, 1.0f, s, T, base + 2 * D + h * HS, (int)ld, 0.0f,
                       out + (size_t)b * T * D + h * HS, D);
        }
    }
}

/* per-thread scratch of the reference backward: one dP row [T], one dQ accumulator [HS], dK and dV
 * of one (b, h) [T, HS] each, padded so that threads' slices start on different cache lines */
static size_t bwd_ref_floats(int T, int HS) { return (size_t)T + (size_t)HS + 2 * (size_t)T * HS + 32; }
/* per-thread scratch of the small backward: V^T [HS, Tp], dS [T, Tp], then either two accumulators
 * [HS] (portable) or dS^T and P^T [T, Tp] (AVX2) */
static size_t bwd_small_floats(int T, int HS) {
    size_t w = 2 * (size_t)HS > 2 * (size_t)T * pad8(T) ? 2 * (size_t)HS : 2 * (size_t)T * pad8(T);
    return slice_floats((size_t)HS * pad8(T) + (size_t)T * pad8(T) + w);
}

size_t dinoc_attention_backward_scratch_floats(int T, int HS) {
    size_t ref = bwd_ref_floats(T, HS);
    if (T > DINOC_ATTN_BWD_DIRECT_T) return ref;
    size_t small = bwd_small_floats(T, HS);
    return small > ref ? small : ref;
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
void dinoc_attention_backward_ref(float *dqkv, const float *dout, const float *qkv,
                                  const float *att, int B, int T, int D, int NH, float *scratch,
                                  int nthreads) {
    const int    HS    = D / NH;
    const float  scale = 1.0f / sqrtf((float)HS);
    const size_t per   = bwd_ref_floats(T, HS);
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

/* ---- direct kernels ----------------------------------------------------------------------------
 * One (b, h) pair at a time on one thread, pairs in parallel; each pair's arithmetic is the same
 * whatever the thread count, so results are too. Tp = T rounded up to 8: score rows are padded
 * with zeros (K^T, V^T) or -inf (before the softmax), so every row loop runs over whole vectors.
 * The formulas (the reference's, see above):
 *   S[t, :] = scale * sum_i Q[t, i] K^T[i, :]    P[t, :] = softmax(S[t, :])    O[t] = sum_u P[t, u] V[u]
 *   dP[t, :] = sum_i dO[t, i] V^T[i, :]          dS[t, u] = P[t, u] (dP[t, u] - rowsum(dP * P)[t]) scale
 *   dQ[t] = sum_u dS[t, u] K[u]     dK[u] = sum_t dS[t, u] Q[t]     dV[u] = sum_t P[t, u] dO[t]
 * Every sum over i, u or t runs in index order; a softmax row's max and sum and rowsum(dP * P)
 * (in double, as the reference) use 8 lanes combined in a fixed order. Two copies: a portable one
 * in plain C, and an AVX2 + FMA one whose row products keep their accumulators in registers. */

/* The next pair's tensors (NULL: none or not needed). A pair reads its q, k, v (and in the
 * backward dO, P and dqkv) rows once, at a stride the hardware prefetchers follow poorly; at these
 * sizes the misses cost more than the arithmetic. So while a pair works on its row t, row t of
 * the next pair is requested: a few lines at a time, long before they are needed. */
typedef struct {
    const float *qkv, *dout, *att;
    float       *dqkv;
} next_pair;

DINOC_INLINE void prefetch_span(const float *p, int n, int write) {
#if defined(__GNUC__)
    for (int i = 0; i < n; i += 16) {
        if (write) __builtin_prefetch(p + i, 1, 3);
        else __builtin_prefetch(p + i, 0, 3);
    }
    if (write) __builtin_prefetch(p + n - 1, 1, 3);
    else __builtin_prefetch(p + n - 1, 0, 3);
#else
    (void)p, (void)n, (void)write;
#endif
}

/* row t of the next pair: q, k, v [HS] at stride ld (columns D apart), dqkv the same, dO [HS] at
 * stride D, P [T] */
DINOC_INLINE void prefetch_next(const next_pair *nx, int t, int T, int HS, int D) {
    const size_t ld = (size_t)3 * D, r = (size_t)t * ld;
    if (nx->qkv)
        for (int j = 0; j < 3; j++) prefetch_span(nx->qkv + r + (size_t)j * D, HS, 0);
    if (nx->dqkv)
        for (int j = 0; j < 3; j++) prefetch_span(nx->dqkv + r + (size_t)j * D, HS, 1);
    if (nx->dout) prefetch_span(nx->dout + (size_t)t * D, HS, 0);
    if (nx->att) prefetch_span(nx->att + (size_t)t * T, T, 0);
}

/* Softmax of one padded score row s [Tp] in place (entries >= T are -inf and come out 0). */
DINOC_INLINE void softmax_row(float *s, int Tp, int fused) {
    float mx[8];
    for (int j = 0; j < 8; j++) mx[j] = s[j];
    for (int u = 8; u < Tp; u += 8)
        for (int j = 0; j < 8; j++) mx[j] = s[u + j] > mx[j] ? s[u + j] : mx[j];
    for (int j = 0; j < 4; j++) mx[j] = mx[j + 4] > mx[j] ? mx[j + 4] : mx[j];
    for (int j = 0; j < 2; j++) mx[j] = mx[j + 2] > mx[j] ? mx[j + 2] : mx[j];
    const float m = mx[1] > mx[0] ? mx[1] : mx[0];
    float       sum[8] = {0};
    for (int u = 0; u < Tp; u += 8)
        for (int j = 0; j < 8; j++) {
            float e  = dinoc_vm_exp_neg(s[u + j] - m, fused); /* padding: exp(-inf) = 0 */
            s[u + j] = e;
            sum[j] += e;
        }
    const float tot = ((sum[0] + sum[4]) + (sum[2] + sum[6])) + ((sum[1] + sum[5]) + (sum[3] + sum[7]));
    const float inv = 1.0f / tot;
    for (int u = 0; u < Tp; u++) s[u] *= inv;
}

/* rowsum(dP * P) of one row, in double over 8 lanes, rounded to float */
DINOC_INLINE float rowsum_dp_p(const float *dp, const float *p, int T) {
    double rs[8] = {0};
    int    u = 0;
    for (; u + 8 <= T; u += 8)
        for (int j = 0; j < 8; j++) rs[j] += (double)dp[u + j] * p[u + j];
    for (int j = 0; u + j < T; j++) rs[j] += (double)dp[u + j] * p[u + j];
    return (float)(((rs[0] + rs[4]) + (rs[2] + rs[6])) + ((rs[1] + rs[5]) + (rs[3] + rs[7])));
}

/* src [n, m] (row stride lds) into dst [m, ldd] transposed, columns n .. ldd-1 of dst zeroed.
 * Reads src row by row (it comes from memory; dst is small and stays in L1). */
DINOC_INLINE void transpose_pad(float *dst, size_t ldd, const float *src, size_t lds, int n, int m) {
    for (int u = 0; u < n; u++) {
        const float *r = src + (size_t)u * lds;
        for (int i = 0; i < m; i++) dst[(size_t)i * ldd + u] = r[i];
    }
    for (int i = 0; i < m; i++)
        for (size_t u = (size_t)n; u < ldd; u++) dst[(size_t)i * ldd + u] = 0.0f;
}

/* Portable forward of one pair: q, k, v [T, HS] with row stride ld; o [T, HS] with row stride
 * ldo; p_out [T, T] (the probabilities, NULL in inference). Scratch kt [HS, Tp], s [Tp]. */
static void attn_fwd_pair(float *o, float *p_out, const float *q, const float *k, const float *v,
                          int T, int HS, size_t ld, size_t ldo, float scale, int causal, int kv,
                          float *kt, float *s, const next_pair *nx) {
    const int Tp = pad8(T);
    transpose_pad(kt, (size_t)Tp, k, ld, T, HS);
    for (int t = 0; t < T; t++) {
        prefetch_next(nx, t, T, HS, (int)(ld / 3));
        const float *qt = q + (size_t)t * ld;
        for (int u = 0; u < Tp; u++) s[u] = 0.0f;
        for (int i = 0; i < HS; i++) {
            const float  qi = qt[i];
            const float *kr = kt + (size_t)i * Tp;
            for (int u = 0; u < Tp; u++) s[u] += qi * kr[u];
        }
        const int n = key_limit(t, causal, kv);
        for (int u = 0; u < Tp; u++) s[u] = u < n ? s[u] * scale : -INFINITY;
        softmax_row(s, Tp, 0);
        if (p_out)
            for (int u = 0; u < T; u++) p_out[(size_t)t * T + u] = s[u];
        float *ot = o + (size_t)t * ldo;
        for (int i = 0; i < HS; i++) ot[i] = 0.0f;
        for (int u = 0; u < T; u++) {
            const float  pu = s[u];
            const float *vr = v + (size_t)u * ld;
            for (int i = 0; i < HS; i++) ot[i] += pu * vr[i];
        }
    }
}

/* Portable backward of one pair: dq, dk, dv [T, HS] (row stride ld) each += its result once; go
 * [T, HS] (stride ldo) is dO, p [T, T] the saved P. Scratch vt [HS, Tp], ds [T, Tp], acc [2 HS]. */
static void attn_bwd_pair(float *dq, float *dk, float *dv, const float *go, const float *p,
                          const float *q, const float *k, const float *v, int T, int HS, size_t ld,
                          size_t ldo, float scale, float *vt, float *ds, float *acc,
                          const next_pair *nx) {
    const int Tp = pad8(T);
    transpose_pad(vt, (size_t)Tp, v, ld, T, HS);
    float *aq = acc, *av = acc + HS;
    for (int t = 0; t < T; t++) {
        prefetch_next(nx, t, T, HS, (int)(ld / 3));
        const float *got = go + (size_t)t * ldo;
        const float *pt  = p + (size_t)t * T;
        float       *dst = ds + (size_t)t * Tp;
        for (int u = 0; u < Tp; u++) dst[u] = 0.0f;
        for (int i = 0; i < HS; i++) {
            const float  gi = got[i];
            const float *vr = vt + (size_t)i * Tp;
            for (int u = 0; u < Tp; u++) dst[u] += gi * vr[u];
        }
        const float rsf = rowsum_dp_p(dst, pt, T);
        for (int u = 0; u < T; u++) dst[u] = pt[u] * (dst[u] - rsf) * scale;
        for (int i = 0; i < HS; i++) aq[i] = 0.0f;
        for (int u = 0; u < T; u++) {
            const float  d  = dst[u];
            const float *kr = k + (size_t)u * ld;
            for (int i = 0; i < HS; i++) aq[i] += d * kr[i];
        }
        float *dqt = dq + (size_t)t * ld;
        for (int i = 0; i < HS; i++) dqt[i] += aq[i];
    }
    float *ak = acc; /* dQ's accumulator is free again */
    for (int u = 0; u < T; u++) {
        for (int i = 0; i < HS; i++) ak[i] = 0.0f, av[i] = 0.0f;
        for (int t = 0; t < T; t++) {
            const float  d = ds[(size_t)t * Tp + u], pu = p[(size_t)t * T + u];
            const float *qt = q + (size_t)t * ld, *got = go + (size_t)t * ldo;
            for (int i = 0; i < HS; i++) {
                ak[i] += d * qt[i];
                av[i] += pu * got[i];
            }
        }
        float *dku = dk + (size_t)u * ld, *dvu = dv + (size_t)u * ld;
        for (int i = 0; i < HS; i++) dku[i] += ak[i];
        for (int i = 0; i < HS; i++) dvu[i] += av[i];
    }
}

#if DINOC_HAVE_AVX2_VARIANT
#include <immintrin.h>

/* The AVX2 copy is built from one product, rows of Y = scale * A X:
 *   y_r [8 nv] (=, or += when add) scale * sum_{i<n} a_r[i] X[i]     (X's rows [8 nv] at stride ldx)
 * for R = 1 or 2 rows r at once (two rows share each load of X), the R * nv accumulators in
 * registers (constant R and nv after inlining, loops unrolled), each summed over i in order with
 * one FMA per step: a row's result does not depend on R. */
DINOC_INLINE DINOC_TARGET_AVX2 void rowcomb_nv(float *y0, float *y1, const float *a0, const float *a1,
                                               const float *X, size_t ldx, int n, float scale, int add,
                                               const int R, const int nv) {
    __m256 acc0[8], acc1[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        if (j < nv) acc0[j] = _mm256_setzero_ps(), acc1[j] = _mm256_setzero_ps();
    for (int i = 0; i < n; i++) {
        const __m256 b0 = _mm256_broadcast_ss(a0 + i);
        const __m256 b1 = R == 2 ? _mm256_broadcast_ss(a1 + i) : b0;
        const float *x  = X + (size_t)i * ldx;
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            if (j < nv) {
                const __m256 xv = _mm256_loadu_ps(x + 8 * j);
                acc0[j]         = _mm256_fmadd_ps(b0, xv, acc0[j]);
                if (R == 2) acc1[j] = _mm256_fmadd_ps(b1, xv, acc1[j]);
            }
    }
    const __m256 sc = _mm256_set1_ps(scale);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        if (j < nv) {
            __m256 r0 = _mm256_mul_ps(acc0[j], sc);
            if (add) r0 = _mm256_add_ps(_mm256_loadu_ps(y0 + 8 * j), r0);
            _mm256_storeu_ps(y0 + 8 * j, r0);
            if (R == 2) {
                __m256 r1 = _mm256_mul_ps(acc1[j], sc);
                if (add) r1 = _mm256_add_ps(_mm256_loadu_ps(y1 + 8 * j), r1);
                _mm256_storeu_ps(y1 + 8 * j, r1);
            }
        }
}

/* The AVX-512 copy of rowcomb_nv: nv 16-float vectors, the last one's lanes masked by `last`
 * (0xff where the block ends in half a vector). Each element is summed over i in the same order
 * with one FMA per step, so it gives the AVX2 copy's bits (test_fastops_attention_avx512_same_bits). */
DINOC_INLINE DINOC_TARGET_AVX512 void rowcomb16_nv(float *y0, float *y1, const float *a0, const float *a1,
                                                   const float *X, size_t ldx, int n, float scale, int add,
                                                   const int R, const int nv, __mmask16 last) {
    __m512 acc0[8], acc1[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        if (j < nv) acc0[j] = _mm512_setzero_ps(), acc1[j] = _mm512_setzero_ps();
    for (int i = 0; i < n; i++) {
        const __m512 b0 = _mm512_set1_ps(a0[i]);
        const __m512 b1 = R == 2 ? _mm512_set1_ps(a1[i]) : b0;
        const float *x  = X + (size_t)i * ldx;
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            if (j < nv) {
                const __m512 xv = _mm512_maskz_loadu_ps(j == nv - 1 ? last : 0xffff, x + 16 * j);
                acc0[j]         = _mm512_fmadd_ps(b0, xv, acc0[j]);
                if (R == 2) acc1[j] = _mm512_fmadd_ps(b1, xv, acc1[j]);
            }
    }
    const __m512 sc = _mm512_set1_ps(scale);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        if (j < nv) {
            const __mmask16 k  = j == nv - 1 ? last : 0xffff;
            __m512          r0 = _mm512_mul_ps(acc0[j], sc);
            if (add) r0 = _mm512_add_ps(_mm512_maskz_loadu_ps(k, y0 + 16 * j), r0);
            _mm512_mask_storeu_ps(y0 + 16 * j, k, r0);
            if (R == 2) {
                __m512 r1 = _mm512_mul_ps(acc1[j], sc);
                if (add) r1 = _mm512_add_ps(_mm512_maskz_loadu_ps(k, y1 + 16 * j), r1);
                _mm512_mask_storeu_ps(y1 + 16 * j, k, r1);
            }
        }
}

/* rows_product's AVX-512 copy: pairs of rows in column blocks of up to 96 (12 accumulators), a
 * last odd row in blocks of up to 128. */
DINOC_TARGET_AVX512 static void rows_product16(float *Y, size_t ldy, const float *A, size_t lda, int nr,
                                               const float *X, size_t ldx, int n, int m, float scale, int add) {
    int r = 0;
    for (; r + 2 <= nr; r += 2) {
        float       *y0 = Y + (size_t)r * ldy, *y1 = y0 + ldy;
        const float *a0 = A + (size_t)r * lda, *a1 = a0 + lda;
        for (int c = 0; c < m; c += 96) {
            const int       w    = m - c >= 96 ? 96 : m - c; /* a multiple of 8 */
            const __mmask16 last = w % 16 ? 0xff : 0xffff;
            switch ((w + 15) / 16) {
            case 1: rowcomb16_nv(y0 + c, y1 + c, a0, a1, X + c, ldx, n, scale, add, 2, 1, last); break;
            case 2: rowcomb16_nv(y0 + c, y1 + c, a0, a1, X + c, ldx, n, scale, add, 2, 2, last); break;
            case 3: rowcomb16_nv(y0 + c, y1 + c, a0, a1, X + c, ldx, n, scale, add, 2, 3, last); break;
            case 4: rowcomb16_nv(y0 + c, y1 + c, a0, a1, X + c, ldx, n, scale, add, 2, 4, last); break;
            case 5: rowcomb16_nv(y0 + c, y1 + c, a0, a1, X + c, ldx, n, scale, add, 2, 5, last); break;
            default: rowcomb16_nv(y0 + c, y1 + c, a0, a1, X + c, ldx, n, scale, add, 2, 6, last); break;
            }
        }
    }
    if (r < nr) {
        float       *y0 = Y + (size_t)r * ldy;
        const float *a0 = A + (size_t)r * lda;
        for (int c = 0; c < m; c += 128) {
            const int       w    = m - c >= 128 ? 128 : m - c;
            const __mmask16 last = w % 16 ? 0xff : 0xffff;
            switch ((w + 15) / 16) {
            case 1: rowcomb16_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 1, last); break;
            case 2: rowcomb16_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 2, last); break;
            case 3: rowcomb16_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 3, last); break;
            case 4: rowcomb16_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 4, last); break;
            case 5: rowcomb16_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 5, last); break;
            case 6: rowcomb16_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 6, last); break;
            case 7: rowcomb16_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 7, last); break;
            default: rowcomb16_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 8, last); break;
            }
        }
    }
}

/* Y [nr, m] (row stride ldy) = or += scale * A [nr, n] (stride lda) X [n, m] (stride ldx), m a
 * multiple of 8: pairs of rows in column blocks of up to 48 (12 accumulators), a last odd row in
 * blocks of up to 64; on AVX-512 machines the 16-lane copy above (same bits). */
DINOC_TARGET_AVX2 static void rows_product(float *Y, size_t ldy, const float *A, size_t lda, int nr,
                                           const float *X, size_t ldx, int n, int m, float scale, int add) {
    if (dinoc_ops_level() >= DINOC_OPS_AVX512) {
        rows_product16(Y, ldy, A, lda, nr, X, ldx, n, m, scale, add);
        return;
    }
    int r = 0;
    for (; r + 2 <= nr; r += 2) {
        float       *y0 = Y + (size_t)r * ldy, *y1 = y0 + ldy;
        const float *a0 = A + (size_t)r * lda, *a1 = a0 + lda;
        for (int c = 0; c < m; c += 48) {
            switch ((m - c >= 48 ? 48 : m - c) / 8) {
            case 1: rowcomb_nv(y0 + c, y1 + c, a0, a1, X + c, ldx, n, scale, add, 2, 1); break;
            case 2: rowcomb_nv(y0 + c, y1 + c, a0, a1, X + c, ldx, n, scale, add, 2, 2); break;
            case 3: rowcomb_nv(y0 + c, y1 + c, a0, a1, X + c, ldx, n, scale, add, 2, 3); break;
            case 4: rowcomb_nv(y0 + c, y1 + c, a0, a1, X + c, ldx, n, scale, add, 2, 4); break;
            case 5: rowcomb_nv(y0 + c, y1 + c, a0, a1, X + c, ldx, n, scale, add, 2, 5); break;
            default: rowcomb_nv(y0 + c, y1 + c, a0, a1, X + c, ldx, n, scale, add, 2, 6); break;
            }
        }
    }
    if (r < nr) {
        float       *y0 = Y + (size_t)r * ldy;
        const float *a0 = A + (size_t)r * lda;
        for (int c = 0; c < m; c += 64) {
            switch ((m - c >= 64 ? 64 : m - c) / 8) {
            case 1: rowcomb_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 1); break;
            case 2: rowcomb_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 2); break;
            case 3: rowcomb_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 3); break;
            case 4: rowcomb_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 4); break;
            case 5: rowcomb_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 5); break;
            case 6: rowcomb_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 6); break;
            case 7: rowcomb_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 7); break;
            default: rowcomb_nv(y0 + c, NULL, a0, NULL, X + c, ldx, n, scale, add, 1, 8); break;
            }
        }
    }
}

/* AVX2 forward of one pair (arguments as attn_fwd_pair; HS a multiple of 8; s holds [T, Tp]):
 * all score rows, then their softmax, then all output rows. */
DINOC_TARGET_AVX2 static void attn_fwd_pair_avx2(float *o, float *p_out, const float *q, const float *k,
                                                 const float *v, int T, int HS, size_t ld, size_t ldo,
                                                 float scale, int causal, int kv, float *kt, float *s,
                                                 const next_pair *nx) {
    const int Tp = pad8(T);
    transpose_pad(kt, (size_t)Tp, k, ld, T, HS);
    rows_product(s, (size_t)Tp, q, ld, T, kt, (size_t)Tp, HS, Tp, scale, 0);
    for (int t = 0; t < T; t++) {
        prefetch_next(nx, t, T, HS, (int)(ld / 3));
        float *st = s + (size_t)t * Tp;
        for (int u = key_limit(t, causal, kv); u < Tp; u++) st[u] = -INFINITY;
        softmax_row(st, Tp, 1);
        if (p_out) memcpy(p_out + (size_t)t * T, st, sizeof(float) * (size_t)T);
    }
    rows_product(o, ldo, s, (size_t)Tp, T, v, ld, T, HS, 1.0f, 0);
}

/* AVX2 backward of one pair (arguments as attn_bwd_pair; HS a multiple of 8). Scratch vt [HS, Tp],
 * ds [T, Tp], dsT and pT [T, Tp] (dS and P transposed, so dK and dV are row products too). */
DINOC_TARGET_AVX2 static void attn_bwd_pair_avx2(float *dq, float *dk, float *dv, const float *go,
                                                 const float *p, const float *q, const float *k,
                                                 const float *v, int T, int HS, size_t ld, size_t ldo,
                                                 float scale, float *vt, float *ds, float *dsT,
                                                 float *pT, const next_pair *nx) {
    const int Tp = pad8(T);
    transpose_pad(vt, (size_t)Tp, v, ld, T, HS);
    rows_product(ds, (size_t)Tp, go, ldo, T, vt, (size_t)Tp, HS, Tp, 1.0f, 0); /* dP */
    for (int t = 0; t < T; t++) {
        prefetch_next(nx, t, T, HS, (int)(ld / 3));
        const float *pt  = p + (size_t)t * T;
        float       *dst = ds + (size_t)t * Tp;
        const float  rsf = rowsum_dp_p(dst, pt, T);
        for (int u = 0; u < T; u++) dst[u] = pt[u] * (dst[u] - rsf) * scale;
    }
    rows_product(dq, ld, ds, (size_t)Tp, T, k, ld, T, HS, 1.0f, 1);
    transpose_pad(dsT, (size_t)Tp, ds, (size_t)Tp, T, T);
    transpose_pad(pT, (size_t)Tp, p, (size_t)T, T, T);
    rows_product(dk, ld, dsT, (size_t)Tp, T, q, ld, T, HS, 1.0f, 1);
    rows_product(dv, ld, pT, (size_t)Tp, T, go, ldo, T, HS, 1.0f, 1);
}
#endif

void dinoc_attention_forward(float *out, float *att, const float *qkv, int B, int T, int D, int NH,
                             float *scratch, int nthreads) {
    dinoc_attention_forward_masked(out, att, qkv, NULL, B, T, D, NH, scratch, nthreads);
}

/* One (b, h) pair of the direct kernels on this thread (scratch: this thread's slice). */
static void attention_pair(float *out, float *att, const float *qkv, const dinoc_attn_mask *mask, int B, int T,
                           int D, int NH, float *scratch, int bh) {
    const int    causal = mask && mask->causal;
    const int    HS = D / NH, Tp = pad8(T), avx2 = dinoc_ops_avx2() && HS % 8 == 0;
    const float  scale = 1.0f / sqrtf((float)HS);
    const size_t ld = (size_t)3 * D, per = dinoc_attention_scratch_floats(T, HS);
    const int    b = bh / NH, h = bh % NH;
    float       *kt = scratch + per * (size_t)dinoc_omp_thread_num(), *s = kt + (size_t)HS * Tp;
    const float *qb = qkv + (size_t)b * T * ld + (size_t)h * HS;
    float       *o  = out + (size_t)b * T * D + (size_t)h * HS;
    float       *pa = att ? att + (size_t)bh * T * T : NULL;
    const int    kv = mask && mask->key_len ? mask->key_len[b] : T;
    next_pair    nx = {NULL, NULL, NULL, NULL};
    (void)avx2;
    if (bh + 1 < B * NH) nx.qkv = qkv + (size_t)((bh + 1) / NH) * T * ld + (size_t)((bh + 1) % NH) * HS;
#if DINOC_HAVE_AVX2_VARIANT
    if (avx2)
        attn_fwd_pair_avx2(o, pa, qb, qb + D, qb + 2 * D, T, HS, ld, (size_t)D, scale, causal, kv, kt, s, &nx);
    else
#endif
        attn_fwd_pair(o, pa, qb, qb + D, qb + 2 * D, T, HS, ld, (size_t)D, scale, causal, kv, kt, s, &nx);
}

void dinoc_attention_forward_masked(float *out, float *att, const float *qkv,
                                    const dinoc_attn_mask *mask, int B, int T, int D, int NH,
                                    float *scratch, int nthreads) {
    if (T > DINOC_ATTN_FWD_DIRECT_T) {
        if (att) dinoc_attention_forward_ref_masked(out, att, qkv, mask, B, T, D, NH, scratch, nthreads);
        else attention_forward_tiled(out, qkv, mask, B, T, D, NH, scratch, nthreads);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int bh = 0; bh < B * NH; bh++) attention_pair(out, att, qkv, mask, B, T, D, NH, scratch, bh);
}

int dinoc_attention_team_ok(int T, int keep_att) { return T <= DINOC_ATTN_FWD_DIRECT_T || !keep_att; }

/* The same work shared out by orphaned worksharing loops, so the caller's own parallel region runs
 * it (the pairs or tiles go to the region's threads as dinoc_attention_forward would give them to
 * its own) without opening another: the fused ViT forward (vit.c). */
void dinoc_attention_forward_team(float *out, float *att, const float *qkv, int B, int T, int D, int NH,
                                  float *scratch) {
    if (T > DINOC_ATTN_FWD_DIRECT_T) {
#pragma omp for schedule(dynamic)
        for (int task = 0; task < attention_tiles(B, T, NH); task++)
            attention_tile(out, qkv, NULL, T, D, NH, scratch, task);
        return;
    }
#pragma omp for schedule(static)
    for (int bh = 0; bh < B * NH; bh++) attention_pair(out, att, qkv, NULL, B, T, D, NH, scratch, bh);
}

void dinoc_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                              int B, int T, int D, int NH, float *scratch, int nthreads) {
    if (T > DINOC_ATTN_BWD_DIRECT_T) {
        dinoc_attention_backward_ref(dqkv, dout, qkv, att, B, T, D, NH, scratch, nthreads);
        return;
    }
    const int    HS = D / NH, Tp = pad8(T), avx2 = dinoc_ops_avx2() && HS % 8 == 0;
    const float  scale = 1.0f / sqrtf((float)HS);
    const size_t ld = (size_t)3 * D, per = dinoc_attention_backward_scratch_floats(T, HS);
    (void)avx2;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int bh = 0; bh < B * NH; bh++) {
        const int    b = bh / NH, h = bh % NH;
        float       *vt = scratch + per * (size_t)dinoc_omp_thread_num();
        float       *ds = vt + (size_t)HS * Tp, *w = ds + (size_t)T * Tp;
        const size_t off = (size_t)b * T * ld + (size_t)h * HS;
        const float *qb = qkv + off, *go = dout + (size_t)b * T * D + (size_t)h * HS;
        const float *pa = att + (size_t)bh * T * T;
        float       *db = dqkv + off;
        next_pair nx = {NULL, NULL, NULL, NULL};
        if (bh + 1 < B * NH) {
            const size_t offn = (size_t)((bh + 1) / NH) * T * ld + (size_t)((bh + 1) % NH) * HS;
            nx.qkv = qkv + offn, nx.dqkv = dqkv + offn, nx.att = pa + (size_t)T * T;
            nx.dout = dout + (size_t)((bh + 1) / NH) * T * D + (size_t)((bh + 1) % NH) * HS;
        }
#if DINOC_HAVE_AVX2_VARIANT
        if (avx2)
            attn_bwd_pair_avx2(db, db + D, db + 2 * D, go, pa, qb, qb + D, qb + 2 * D, T, HS, ld,
                               (size_t)D, scale, vt, ds, w, w + (size_t)T * Tp, &nx);
        else
#endif
            attn_bwd_pair(db, db + D, db + 2 * D, go, pa, qb, qb + D, qb + 2 * D, T, HS, ld,
                          (size_t)D, scale, vt, ds, w, &nx);
    }
}
