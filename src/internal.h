/* internal.h: declarations shared by the library's source files (not installed).
 *
 * Dims glossary used across src/: B batch, T tokens (1 + R registers + Np patches), D model width,
 * NH heads, HS head size (D / NH), P patch side, gh x gw patch grid, F FFN hidden width.
 */
#ifndef DINOC_INTERNAL_H
#define DINOC_INTERNAL_H

#include "dinoc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__GNUC__)
#define DINOC_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DINOC_PRINTF(a, b)
#endif

/* ---- errors and logging (src/core/status.c) --------------------------------------------------- */

/* Records a thread-local message for dinoc_last_error() and returns s, so callers write
 * `return dinoc_fail(DINOC_ERR_FORMAT, "%s: tensor '%s' ...", path, name);`. */
dinoc_status dinoc_fail(dinoc_status s, const char *fmt, ...) DINOC_PRINTF(2, 3);
/* Prefixes the current thread's message with "prefix: " (adds context on the way up). */
dinoc_status dinoc_fail_prefix(dinoc_status s, const char *fmt, ...) DINOC_PRINTF(2, 3);
void dinoc_log(dinoc_log_level level, const char *fmt, ...) DINOC_PRINTF(2, 3);

/* Programmer errors (internal shape disagreements): stays on in release builds. Not for bad
 * input, which gets a status. */
#define DINOC_ASSERT(x)                                                                         \
    do {                                                                                        \
        if (!(x)) dinoc_assert_fail(__FILE__, __LINE__, #x);                                    \
    } while (0)
void dinoc_assert_fail(const char *file, int line, const char *expr);

/* ---- memory (src/core/mem.c) ------------------------------------------------------------------ */

/* 64-byte aligned, zeroed allocation; NULL on failure or size overflow (n * size). */
void *dinoc_calloc(size_t n, size_t size);
void  dinoc_free(void *p);
/* a * b into *out unless it overflows (returns 0 then). */
int dinoc_mul_size(size_t a, size_t b, size_t *out);

/* ---- files (src/core/fileio.c) ---------------------------------------------------------------- */

/* Reads a whole file (NUL-terminated for convenience). max bounds the size accepted. */
dinoc_status dinoc_read_file(const char *path, size_t max, char **out, size_t *len);
/* Atomic file writing: open writes to "<path>.tmp.<pid>" (created with O_EXCL, never through a
 * symbolic link); commit fsyncs, closes and renames over path; abort closes and deletes the temp
 * file. Nothing at path changes unless commit succeeds. */
typedef struct {
    FILE *f;
    char *path;
    char *tmp;
} dinoc_atomic_file;
dinoc_status dinoc_atomic_open(dinoc_atomic_file *af, const char *path);
dinoc_status dinoc_atomic_write(dinoc_atomic_file *af, const void *buf, size_t n);
dinoc_status dinoc_atomic_commit(dinoc_atomic_file *af);
void         dinoc_atomic_abort(dinoc_atomic_file *af);
/* Writes a whole buffer atomically. */
dinoc_status dinoc_write_file_atomic(const char *path, const void *buf, size_t n);
/* Creates a directory and its missing parents (mkdir -p). */
dinoc_status dinoc_mkdir(const char *path);
/* Joins a directory and a file name into a new string (caller frees). */
char *dinoc_path_join(const char *dir, const char *name);
int   dinoc_is_dir(const char *path);
int   dinoc_file_exists(const char *path);

/* ---- random numbers (src/core/rng.c) ---------------------------------------------------------- */

typedef struct {
    uint64_t s[4];
} dinoc_rng; /* xoshiro256** */
void     dinoc_rng_seed(dinoc_rng *r, uint64_t seed);
uint64_t dinoc_rng_u64(dinoc_rng *r);
float    dinoc_rng_uniform(dinoc_rng *r);              /* [0, 1) */
float    dinoc_rng_normal(dinoc_rng *r);               /* N(0, 1) */
float    dinoc_rng_trunc_normal(dinoc_rng *r, float std, float a, float b);

/* ---- ops (src/ops/) ----------------------------------------------------------------------------
 * Order of arguments: outputs, saved-for-backward, inputs, params, sizes. */

/* out[M,N] = inp[M,K] @ w[N,K]^T + bias[N] (bias may be NULL): PyTorch's Linear. BLAS when built with
 * it, else the reference loop. */
void dinoc_linear_forward(float *out, const float *inp, const float *w, const float *bias, int M,
                          int K, int N);
/* The plain C reference of the same product (kept for tests). */
void dinoc_linear_forward_ref(float *out, const float *inp, const float *w, const float *bias,
                              int M, int K, int N);
/* General row-major sgemm: C[M,N] = alpha * op(A) op(B) + beta * C (linear.c: OpenBLAS, or oneDNN
 * on AVX-512; dinoc_fp32_backend() names the one in use). */
void dinoc_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc);

/* Row blocks for a caller's own parallel region (the fused ViT forward, vit.c): if a product of M
 * rows (N outputs, K inputs) is split by dinoc_gemm among n threads (n the thread count set), gives
 * thread t's rows [*m0, *m1) of that split (possibly empty) and returns 1; returns 0 when dinoc_gemm
 * would not split it (too small, one thread, or no BLAS). dinoc_linear_forward_rows computes rows
 * [m0, m1) of dinoc_linear_forward on this thread only: with the split above, the same bits. */
int  dinoc_linear_rows(int M, int N, int K, int t, int n, int *m0, int *m1);
void dinoc_linear_forward_rows(float *out, const float *inp, const float *w, const float *bias, int K, int N,
                               int m0, int m1);

/* LayerNorm over the last dim: out[N,C]; mean/rstd [N] may be NULL in inference. */
void dinoc_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                             const float *b, int N, int C, float eps);

/* Exact GELU 0.5 x (1 + erf(x / sqrt 2)), in place allowed. */
void dinoc_gelu_forward(float *out, const float *inp, size_t n);
/* Single-threaded forms for a caller's parallel region: LayerNorm of rows [i0, i1) (no mean/rstd),
 * GELU and QuickGELU of n elements. Same kernels, same bits. */
void dinoc_layernorm_forward_rows(float *out, const float *inp, const float *w, const float *b, int i0, int i1,
                                  int C, float eps);
void dinoc_gelu_forward_serial(float *out, const float *inp, size_t n);
void dinoc_quick_gelu_forward_serial(float *out, const float *inp, size_t n);
/* SwiGLU: inp [N, 2F] = [x1 | x2] per row; out [N, F] = SiLU(x1) * x2. */
void dinoc_swiglu_forward(float *out, const float *inp, int N, int F);

/* Multi-head self-attention core on packed qkv [B, T, 3D] (q | k | v, head h at columns h*HS).
 * out [B, T, D] (heads concatenated); att [B, NH, T, T] keeps the softmax probabilities if not NULL.
 * scratch must hold nthreads * dinoc_attention_scratch_floats(T, HS) floats; at most nthreads
 * threads are used. */
void   dinoc_attention_forward(float *out, float *att, const float *qkv, int B, int T, int D, int NH,
                               float *scratch, int nthreads);
size_t dinoc_attention_scratch_floats(int T, int HS);
/* dinoc_attention_forward for a caller's own parallel region: every thread of the region calls it
 * (orphaned `omp for` loops share the (b, h) pairs or query tiles; their closing barrier ends the
 * call). No mask; att only where dinoc_attention_team_ok(T, 1). */
void dinoc_attention_forward_team(float *out, float *att, const float *qkv, int B, int T, int D, int NH,
                                  float *scratch);
int  dinoc_attention_team_ok(int T, int keep_att);
/* Attention masks of the text encoders: query t of sample b attends to key u iff
 * (!causal || u <= t) && (!key_len || u < key_len[b]); key_len[b] in [1, T] (the caller checks).
 * causal: CLIP's text tower; key_len: BERT's padding (keys past a sequence's length). */
typedef struct {
    int            causal;
    const int32_t *key_len; /* [B] or NULL */
} dinoc_attn_mask;
/* dinoc_attention_forward under a mask (NULL: none). Masked probabilities in att are exactly 0, so
 * dinoc_attention_backward (which reads att) needs no mask and gives masked keys no gradient. */
void dinoc_attention_forward_masked(float *out, float *att, const float *qkv,
                                    const dinoc_attn_mask *mask, int B, int T, int D, int NH,
                                    float *scratch, int nthreads);

/* Bicubic resize of a [C, in_h, in_w] grid to [C, out_h, out_w] exactly as PyTorch's CPU
 * torch.nn.functional.interpolate(mode="bicubic", align_corners=False, antialias=...) does:
 *   antialias = 0: Keys cubic convolution A = -0.75, 4 taps, indices clamped to the edge
 *   antialias = 1: separable antialiased filter, A = -0.5, support widened when shrinking
 * sf_h/sf_w > 0: the scale factors were given (interpolate(scale_factor=...)), so the source
 * coordinate uses 1/sf; sf <= 0: size mode, in/out. Roundings follow PyTorch 1.13's AVX2 CPU
 * kernel (source index in double, FMAs); see src/ops/interp.c. */
void dinoc_bicubic_resize(float *out, const float *inp, int C, int in_h, int in_w, int out_h,
                          int out_w, int antialias, double sf_h, double sf_w);

/* ---- backward ops (src/ops/, same files as the forwards) ----------------------------------------
 * Every backward ACCUMULATES (+=) into its gradient outputs (parameter grads and input grads), so a
 * caller zeroes grads once per step and gradient accumulation is free (llm.c's rule). Arguments:
 * gradient outputs first, then dout, then what the forward saved and its inputs, then sizes. */

/* Linear: dinp[M,K] += dout[M,N] @ w[N,K]; dw[N,K] += dout^T @ inp; db[N] += sum_m dout. Any of
 * dinp/dw/db may be NULL (not needed). */
void dinoc_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                           const float *w, int M, int K, int N);
/* LayerNorm: uses the mean/rstd saved by the forward. dw/db may be NULL. */
void dinoc_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, const float *mean,
                              const float *rstd, int N, int C);
/* QuickGELU x * sigmoid(1.702 x) (CLIP): out may alias inp; the backward accumulates
 * dinp += dout * act'(inp). */
void dinoc_quick_gelu_forward(float *out, const float *inp, size_t n);
void dinoc_quick_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n);
/* Exact GELU: dinp += dout * gelu'(inp). */
void dinoc_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n);
/* SwiGLU: dinp [N, 2F] += d/d[x1|x2] of SiLU(x1) * x2. */
void dinoc_swiglu_backward(float *dinp, const float *dout, const float *inp, int N, int F);
/* Attention: dqkv [B,T,3D] += gradient through softmax(q k^T * HS^-1/2) v, given dout [B,T,D], the
 * forward's qkv and its saved probabilities att [B,NH,T,T]. scratch: nthreads *
 * dinoc_attention_backward_scratch_floats(T, HS) floats. */
void   dinoc_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                                int B, int T, int D, int NH, float *scratch, int nthreads);
size_t dinoc_attention_backward_scratch_floats(int T, int HS);
/* Adjoint of dinoc_bicubic_resize (same arguments): dinp [C, in_h, in_w] += J^T dout. */
void dinoc_bicubic_resize_backward(float *dinp, const float *dout, int C, int in_h, int in_w,
                                   int out_h, int out_w, int antialias, double sf_h, double sf_w);

/* Softmax cross-entropy over rows (src/ops/loss.c): logits [N, K], targets [N] class indices.
 * Returns the mean loss over the N rows (accumulated in double); probs [N, K] (may alias nothing)
 * keeps the softmax for the backward. label_smoothing in [0, 1) as torch's. */
double dinoc_cross_entropy_forward(float *probs, const float *logits, const int32_t *targets, int N,
                                   int K, float label_smoothing);
/* dlogits [N, K] += scale * d(mean loss)/dlogits (scale 1 for the plain mean). */
void   dinoc_cross_entropy_backward(float *dlogits, const float *probs, const int32_t *targets, int N,
                                    int K, float label_smoothing, float scale);

/* ---- images (src/io/resize.c) ----------------------------------------------------------------- */

/* The window [x0, x0 + rw) x [y0, y0 + rh) of the PIL resize of src to w x h, into dst
 * (rw * rh * src->c bytes, caller memory); the same bytes as resizing everything and cropping. */
dinoc_status dinoc_image_resize_region(uint8_t *dst, const dinoc_image *src, int w, int h,
                                       dinoc_resample filter, int x0, int y0, int rw, int rh);

/* Pre-checks run before stb_image sees a file (src/io/image.c): 0 if a JPEG declares a Huffman
 * table of more than 256 codes (stb 2.27 overflows) or a binary PNM header holds a number of more
 * than 9 digits (stb 2.27 int overflow); 1 otherwise. Also used by tests/fuzz/fuzz_image.c. */
int dinoc_jpeg_dht_ok(const uint8_t *p, size_t n); /* (fuzz_image guards its direct stbi_info call; JPEG decoding is libjpeg's) */
int dinoc_pnm_header_ok(const uint8_t *p, size_t n);
/* 0 if a PNG has a chunk running past the end of the file or no IEND (stb would allocate for the
 * declared length first: finding F19); 1 otherwise, and for non-PNG data. */
int dinoc_png_chunks_ok(const uint8_t *p, size_t n);

/* ---- bf16 products (src/ops/bf16.c) ------------------------------------------------------------ */
uint16_t dinoc_bf16_from_f32(float f); /* round to nearest even; NaN -> 0x7FC0 (PyTorch's) */
float    dinoc_f32_from_bf16(uint16_t h);
void     dinoc_bf16_round(float *x, size_t n); /* x = bf16(x), in place */
void     dinoc_bf16_pack(uint16_t *dst, const float *src, size_t n);
/* dst = bf16(src) for an [M, N] matrix, and (db not NULL) db[n] += the sum of the rounded column n:
 * a double sum in row order, dinoc_linear_backward's bias rule, so the same bits as rounding src in
 * place and calling it (one pass over the gradient instead of three). */
void     dinoc_bf16_pack_colsum(uint16_t *dst, const float *src, int M, int N, float *db);
/* 1 when bf16 products run natively (oneDNN on AVX512-BF16 / AMX) and not forced off. */
int  dinoc_bf16_native(void);
/* Tests: on != 0 makes models switched to bf16 afterwards use the emulated backend. */
void dinoc_bf16_force_emulation(int on);
/* A native product prepared for one shape: out[M,N] f32 = a[M,K] bf16 @ w[N,K]^T bf16 (+ bias f32).
 * Fails with DINOC_ERR_UNSUPPORTED where dinoc_bf16_native() is 0. run allocates nothing. */
typedef struct dinoc_bf16_gemm dinoc_bf16_gemm;
dinoc_status dinoc_bf16_gemm_init(dinoc_bf16_gemm **out, int M, int K, int N, int has_bias);
/* The general form (bf16 training's backward products): out [M,N] f32 (+)= A @ W (+ bias) with
 * A [M,K] given as [M,K] row-major, or [K,M] with DINOC_BF16_A_T; W [K,N] given as [N,K] row-major
 * (our weights, the default), or [K,N] with DINOC_BF16_W_KN; DINOC_BF16_ACC adds to out. */
enum { DINOC_BF16_A_T = 1, DINOC_BF16_W_KN = 2, DINOC_BF16_ACC = 4 };
dinoc_status dinoc_bf16_gemm_init_ex(dinoc_bf16_gemm **out, int M, int K, int N, int has_bias, int flags);
dinoc_status dinoc_bf16_gemm_run(dinoc_bf16_gemm *g, float *out, const uint16_t *a,
                                 const uint16_t *w, const float *bias);
void         dinoc_bf16_gemm_free(dinoc_bf16_gemm *g);

/* Training precision "auto" -> "bf16" where can_bf16 and dinoc_bf16_native(), else "fp32"; other
 * names as given (src/nn/vit_precision.c). */
const char *dinoc_precision_resolve(const char *s, int can_bf16);

/* ---- JSON helpers (src/io/json.c) -------------------------------------------------------------- */

struct cJSON;
/* Parses a JSON file into a cJSON tree (caller cJSON_Delete's it). */
dinoc_status dinoc_json_load(struct cJSON **out, const char *path);
/* A uint64 (a seed) in saved configs: written as a decimal string (a JSON number is a double and
 * keeps only 53 bits); read back from such a string (digits only) or, for checkpoints written
 * before session 7, from an exact integer number in [0, 2^53]. Errors name `where` and `name`. */
int          dinoc_json_add_u64(struct cJSON *obj, const char *name, uint64_t v); /* 0: out of memory */
dinoc_status dinoc_json_get_u64(const struct cJSON *obj, const char *name, uint64_t *out, const char *where);

/* A config struct's fields saved in a checkpoint's JSON, by a table (one walker for every training
 * run): type 'i' int, 'f' float, 'd' double, 'u' uint64 (a decimal string, above), 's' string
 * (const char *; dflt is written when it is NULL). On read every number must be there; an absent
 * string leaves the caller's value (a data folder given again on resume). flags change that:
 * DINOC_CFG_REQUIRED (a string must be there), DINOC_CFG_CLEAR (absent reads as 0 / NULL: a field
 * added after checkpoints existed, whose runs went without it, or a string the run did not use). */
enum { DINOC_CFG_REQUIRED = 1, DINOC_CFG_CLEAR = 2 };
typedef struct {
    const char *name;
    char        type;
    size_t      off;
    const char *dflt;
    int         flags;
} dinoc_cfg_field;
#define DINOC_CFG_F(T, name, type, member) {name, type, offsetof(T, member), NULL, 0}
/* Adds the fields to o; 0 when out of memory. */
int dinoc_cfg_to_json(struct cJSON *o, const dinoc_cfg_field *fields, int n, const void *c);
/* Reads the fields from o over c. Strings read are duplicated into keep[max_keep] from its first
 * NULL slot on (the slots after it must be NULL too), which the caller frees (and which c then
 * points into). Errors name where. */
dinoc_status dinoc_cfg_from_json(const struct cJSON *o, const dinoc_cfg_field *fields, int n, void *c, char **keep,
                                 int max_keep, const char *where);

/* ---- threads (src/core/threads.c) -------------------------------------------------------------- */
int dinoc_omp_max_threads(void);
void dinoc_omp_set_threads(int n);
int dinoc_omp_thread_num(void);
int dinoc_omp_num_threads(void); /* threads of the current parallel region (1 outside) */
/* Inside a parallel region: this thread's contiguous share [*i0, *i1) of n elements, shares rounded
 * up to whole runs of `align` (so each starts on a whole vector). For elementwise kernels, where any
 * split gives the same bits. */
void dinoc_omp_chunk(size_t n, size_t align, size_t *i0, size_t *i1);

/* ---- fast kernels and their references (src/ops/) -------------------------------------------
 * The ops above pick vectorised kernels (an AVX-512 or AVX2 + FMA copy where the CPU has them, a
 * portable copy elsewhere; attention: direct kernels for T <= DINOC_ATTN_FWD_DIRECT_T (forward) and
 * T <= DINOC_ATTN_BWD_DIRECT_T (backward)). The references below are the plain forms they
 * replaced, kept as oracles for tests/test_fastops.c. */

/* The copy of the kernels that runs: 2 AVX-512 (GELU, LayerNorm; the attention kernels have no
 * AVX-512 copy and run their AVX2 one), 1 AVX2 + FMA, 0 portable: the CPU's highest, capped by
 * dinoc_ops_force_level. dinoc_ops_avx2(): level >= 1. */
int  dinoc_ops_level(void);
int  dinoc_ops_avx2(void);
/* Tests: the highest level any op may run (process-wide; 2 lifts the cap). force_portable(1) is
 * force_level(0), force_portable(0) force_level(2). */
void dinoc_ops_force_level(int max);
void dinoc_ops_force_portable(int on);
/* GELU with libm's erff / expf, element by element. */
void dinoc_gelu_forward_ref(float *out, const float *inp, size_t n);
void dinoc_gelu_backward_ref(float *dinp, const float *dout, const float *inp, size_t n);
/* QuickGELU with libm's expf, element by element. */
void dinoc_quick_gelu_forward_ref(float *out, const float *inp, size_t n);
void dinoc_quick_gelu_backward_ref(float *dinp, const float *dout, const float *inp, size_t n);
/* LayerNorm with scalar double statistics. */
void dinoc_layernorm_forward_ref(float *out, float *mean, float *rstd, const float *inp,
                                 const float *w, const float *b, int N, int C, float eps);
void dinoc_layernorm_backward_ref(float *dinp, float *dw, float *db, const float *dout,
                                  const float *inp, const float *w, const float *mean,
                                  const float *rstd, int N, int C);
/* Attention through BLAS products per (b, h) (forward) and the row-by-row backward (scratch linear
 * in T): what dinoc_attention_forward runs for T > DINOC_ATTN_FWD_DIRECT_T and
 * dinoc_attention_backward for T > DINOC_ATTN_BWD_DIRECT_T. Same arguments and scratch. The
 * direct kernels' scratch is O(T^2) per thread: 0.1 MB at T = 128, 3.3 MB at T = 512, HS = 64. */
#define DINOC_ATTN_FWD_DIRECT_T 128
#define DINOC_ATTN_BWD_DIRECT_T 512
void dinoc_attention_forward_ref(float *out, float *att, const float *qkv, int B, int T, int D,
                                 int NH, float *scratch, int nthreads);
void dinoc_attention_forward_ref_masked(float *out, float *att, const float *qkv,
                                        const dinoc_attn_mask *mask, int B, int T, int D, int NH,
                                        float *scratch, int nthreads);
void dinoc_attention_backward_ref(float *dqkv, const float *dout, const float *qkv,
                                  const float *att, int B, int T, int D, int NH, float *scratch,
                                  int nthreads);

#endif /* DINOC_INTERNAL_H */
