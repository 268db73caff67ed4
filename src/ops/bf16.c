/* bf16.c: the bf16 inference mode (dinoc_model_set_precision, used by src/nn/vit.c).
 *
 * What bf16 means here (the same on every machine):
 * - the operands of each linear product (patch embedding, qkv, proj, fc1, fc2) are rounded to
 *   bfloat16, round-to-nearest-even, as PyTorch's x.to(torch.bfloat16) rounds (NaN -> 0x7FC0);
 * - products accumulate in fp32 and give fp32 outputs; the bias is added in fp32;
 * - LayerNorm, softmax, GELU, the residual stream and attention's two products stay fp32.
 * PyTorch's CPU autocast also runs attention's products in bf16 and rounds every product's
 * output to bf16; keeping those in fp32 costs little (they are < 10 % of the FLOPs at 224 px)
 * and halves the error against fp32.
 *
 * Two backends compute exactly that:
 * - native: oneDNN's matmul on bf16 operands (Debian libdnnl-dev, build switch DNNL=1), used
 *   when the CPU has AVX512-BF16 or AMX (Sapphire Rapids tiles) and oneDNN offers a non-reference
 *   implementation. AMX needs the Linux permission request (arch_prctl ARCH_REQ_XCOMP_PERM,
 *   kernel >= 5.16), made here before oneDNN looks at the CPU.
 * - emulated everywhere else: the bf16-rounded values are kept as fp32 and multiplied by the
 *   fp32 sgemm. Same numbers as native up to the order of fp32 additions; no speed-up.
 * A prepared product (dinoc_bf16_gemm) is made once per shape (per dinoc_state), so a forward
 * pass allocates nothing: its oneDNN primitive, memory handles and scratchpad live with it. */
#include "../internal.h"
#include "vecmath.h"

#include <pthread.h>
#include <string.h>

#ifdef DINOC_DNNL
#include <oneapi/dnnl/dnnl.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* static inline bodies for the loops below: the exported functions cannot be inlined into them
 * in a -fPIC build (they may be interposed), and a call per element cost ~28 % of a bf16 DINO
 * training step on AVX512-BF16 (session 7 perf); inlined, the loops vectorise */
static inline uint16_t bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0; /* NaN: PyTorch's canonical quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                      /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

static inline float f32_of(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float    f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t dinoc_bf16_from_f32(float f) { return bf16_of(f); }
float    dinoc_f32_from_bf16(uint16_t h) { return f32_of(h); }

/* The conversion loops, one copy per level of vecmath.h's dispatch (integer operations and
 * per-column double sums in row order: every copy gives the same bits). colsum adds to db[n0, n1)
 * the sums of the rounded columns of the packed [M, N] matrix d. */
enum { COLSUM_CB = 64 };
#define BF16_COPY(name, target)                                                                        \
    target static void round_##name(float *x, size_t n) {                                              \
        for (size_t i = 0; i < n; i++) x[i] = f32_of(bf16_of(x[i]));                                   \
    }                                                                                                  \
    target static void pack_##name(uint16_t *dst, const float *src, size_t n) {                        \
        for (size_t i = 0; i < n; i++) dst[i] = bf16_of(src[i]);                                       \
    }                                                                                                  \
    target static void colsum_##name(const uint16_t *d, int M, int N, int n0, int n1, float *db) {     \
        double acc[COLSUM_CB] = {0};                                                                   \
        if (n1 - n0 == COLSUM_CB) { /* a whole block: a fixed trip count keeps acc in registers */     \
            for (int m = 0; m < M; m++)                                                                \
                for (int j = 0; j < COLSUM_CB; j++) acc[j] += f32_of(d[(size_t)m * N + n0 + j]);       \
        } else {                                                                                       \
            for (int m = 0; m < M; m++)                                                                \
                for (int n = n0; n < n1; n++) acc[n - n0] += f32_of(d[(size_t)m * N + n]);             \
        }                                                                                              \
        for (int n = n0; n < n1; n++) db[n] += (float)acc[n - n0];                                     \
    }
BF16_COPY(portable, )
typedef void round_fn(float *, size_t);
typedef void pack_fn(uint16_t *, const float *, size_t);
typedef void colsum_fn(const uint16_t *, int, int, int, int, float *);
#if DINOC_HAVE_AVX2_VARIANT
BF16_COPY(avx2, DINOC_TARGET_AVX2)
BF16_COPY(avx512, DINOC_TARGET_AVX512)
#endif
DINOC_LEVEL_TABLE(round_fn *, k_round, round);
DINOC_LEVEL_TABLE(pack_fn *, k_pack, pack);
DINOC_LEVEL_TABLE(colsum_fn *, k_colsum, colsum);
#undef BF16_COPY

void dinoc_bf16_round(float *x, size_t n) {
    round_fn *const f = k_round[dinoc_ops_level()];
#pragma omp parallel if (n > 65536)
    {
        size_t i0, i1;
        dinoc_omp_chunk(n, 64, &i0, &i1); /* elementwise: any split, the same bits */
        f(x + i0, i1 - i0);
    }
}

void dinoc_bf16_pack(uint16_t *dst, const float *src, size_t n) {
    pack_fn *const f = k_pack[dinoc_ops_level()];
#pragma omp parallel if (n > 65536)
    {
        size_t i0, i1;
        dinoc_omp_chunk(n, 64, &i0, &i1); /* elementwise: any split, the same bits */
        f(dst + i0, src + i0, i1 - i0);
    }
}

void dinoc_bf16_pack_colsum(uint16_t *dst, const float *src, int M, int N, float *db) {
    dinoc_bf16_pack(dst, src, (size_t)M * N);
    if (!db) return;
    /* the column sums read the packed values (half the bytes of src): threads take blocks of 64
     * columns, each summed over the rows in order (a fused pack-and-sum loop measured slower) */
    colsum_fn *const f    = k_colsum[dinoc_ops_level()];
    const int        nblk = (N + COLSUM_CB - 1) / COLSUM_CB;
#pragma omp parallel for schedule(static) if ((size_t)M * N > 65536)
    for (int bk = 0; bk < nblk; bk++) {
        const int n0 = bk * COLSUM_CB;
        f(dst, M, N, n0, n0 + COLSUM_CB < N ? n0 + COLSUM_CB : N, db);
    }
}

#ifdef DINOC_BF16_EXTERNAL_BACKEND
/* the backend (dinoc_bf16_force_emulation, _native, _backend, the dinoc_bf16_gemm functions) is
 * linked from elsewhere: tests/harness/bf16_fake_native.c, a plain-C stand-in that lets the
 * native dispatch of bf16 inference and training run on any CPU (make dinoc_tests_fakebf16) */
#else
static int g_force_emulation;
void dinoc_bf16_force_emulation(int on) { g_force_emulation = on; }
#endif

#if defined(DINOC_DNNL) && !defined(DINOC_BF16_EXTERNAL_BACKEND)
/* ---- native backend: oneDNN ------------------------------------------------------------------- */

/* (a test harness may build this file with DINOC_BF16_DT dnnl_f32 to run the oneDNN plumbing on
 * a CPU without bf16: same code, fp32 operands) */
#ifndef DINOC_BF16_DT
#define DINOC_BF16_DT dnnl_bf16
#endif

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t  g_engine;
static int            g_native;
static char           g_backend[160] = "emulated (no bf16 backend probed yet)";

/* out [M,N] f32 (+)= a [M,K] bf16 @ w [K,N] bf16 (+ bias [N] f32), the operands in the layouts
 * of dinoc_bf16_gemm_init_ex's flags. By default the weights stay in our [N,K] layout (oneDNN's
 * "ba" tag for a [K,N] operand): no per-model reorder, and oneDNN's copy of a weight panel costs
 * O(K N) against the product's O(M K N). DINOC_BF16_ACC is oneDNN's sum post-op. */
static dnnl_status_t make_pd(dnnl_primitive_desc_t *pd, int M, int K, int N, int has_bias, int flags,
                             int user_scratchpad) {
    dnnl_memory_desc_t a, w, b, c;
    dnnl_dims_t        da = {M, K}, dw = {K, N}, db = {1, N}, dc = {M, N};
    dnnl_status_t      st;
    if ((st = dnnl_memory_desc_init_by_tag(&a, 2, da, DINOC_BF16_DT, flags & DINOC_BF16_A_T ? dnnl_ba : dnnl_ab)) ||
        (st = dnnl_memory_desc_init_by_tag(&w, 2, dw, DINOC_BF16_DT, flags & DINOC_BF16_W_KN ? dnnl_ab : dnnl_ba)) ||
        (st = dnnl_memory_desc_init_by_tag(&b, 2, db, dnnl_f32, dnnl_ab)) ||
        (st = dnnl_memory_desc_init_by_tag(&c, 2, dc, dnnl_f32, dnnl_ab)))
        return st;
    dnnl_matmul_desc_t md;
    if ((st = dnnl_matmul_desc_init(&md, &a, &w, has_bias ? &b : NULL, &c))) return st;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t       po   = NULL;
    if ((user_scratchpad || (flags & DINOC_BF16_ACC)) && (st = dnnl_primitive_attr_create(&attr))) return st;
    if (user_scratchpad) st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (!st && (flags & DINOC_BF16_ACC)) {
        if (!(st = dnnl_post_ops_create(&po)) && !(st = dnnl_post_ops_append_sum(po, 1.0f)))
            st = dnnl_primitive_attr_set_post_ops(attr, po);
        if (po) dnnl_post_ops_destroy(po);
    }
    if (!st) st = dnnl_primitive_desc_create(pd, &md, attr, g_engine, NULL);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return st;
}

static void probe(void) {
#if defined(__x86_64__) && defined(SYS_arch_prctl)
    /* Linux >= 5.16 keeps AMX tile data off until the process asks (ARCH_REQ_XCOMP_PERM = 0x1023,
     * XFEATURE_XTILEDATA = 18). Elsewhere the call fails harmlessly and oneDNN sees no AMX. */
    syscall(SYS_arch_prctl, 0x1023, 18);
#endif
    if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) != dnnl_success) {
        snprintf(g_backend, sizeof g_backend, "emulated (oneDNN has no CPU engine)");
        return;
    }
#ifdef DINOC_BF16_HARNESS /* tests/bf16_dnnl_f32.c: this file's oneDNN calls on fp32 operands, any CPU */
    g_native = 1;
    snprintf(g_backend, sizeof g_backend, "oneDNN fp32 operands (harness)");
    return;
#endif
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    if ((isa & dnnl_cpu_isa_avx512_core_bf16) != dnnl_cpu_isa_avx512_core_bf16) {
        snprintf(g_backend, sizeof g_backend,
                 "emulated (this CPU has neither AVX512-BF16 nor AMX; oneDNN ISA 0x%x)", (unsigned)isa);
        return;
    }
    dnnl_primitive_desc_t pd;
    if (make_pd(&pd, 256, 384, 384, 1, 0, 0) != dnnl_success) {
        snprintf(g_backend, sizeof g_backend, "emulated (oneDNN offers no bf16 matmul here)");
        return;
    }
    const char *impl = "?";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    if (strncmp(impl, "ref", 3) == 0) {
        snprintf(g_backend, sizeof g_backend, "emulated (oneDNN's bf16 matmul is its reference loop)");
    } else {
        g_native = 1;
        snprintf(g_backend, sizeof g_backend, "oneDNN %s (%s)", impl,
                 isa == dnnl_cpu_isa_avx512_core_amx ? "AMX tiles" : "AVX512-BF16");
    }
    dnnl_primitive_desc_destroy(pd);
}

int dinoc_bf16_native(void) {
    pthread_once(&g_once, probe);
    return g_native && !g_force_emulation;
}

const char *dinoc_bf16_backend(void) {
    pthread_once(&g_once, probe);
    if (g_native && g_force_emulation) return "emulated (forced)";
    return g_backend;
}

struct dinoc_bf16_gemm {
    int              M, K, N, has_bias, flags;
    dnnl_primitive_t prim;
    dnnl_stream_t    stream;
    dnnl_memory_t    a, w, b, c, pad;
    void            *pad_buf;
};

void dinoc_bf16_gemm_free(dinoc_bf16_gemm *g) {
    if (!g) return;
    dnnl_memory_t mems[] = {g->a, g->w, g->b, g->c, g->pad};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
        if (mems[i]) dnnl_memory_destroy(mems[i]);
    if (g->prim) dnnl_primitive_destroy(g->prim);
    if (g->stream) dnnl_stream_destroy(g->stream);
    dinoc_free(g->pad_buf);
    free(g);
}

dinoc_status dinoc_bf16_gemm_init_ex(dinoc_bf16_gemm **out, int M, int K, int N, int has_bias, int flags) {
    *out = NULL;
    if (!dinoc_bf16_native())
        return dinoc_fail(DINOC_ERR_UNSUPPORTED, "no native bf16 products: %s", dinoc_bf16_backend());
    dinoc_bf16_gemm *g = calloc(1, sizeof *g);
    if (!g) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for a bf16 product");
    g->M = M, g->K = K, g->N = N, g->has_bias = has_bias, g->flags = flags;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t         st = make_pd(&pd, M, K, N, has_bias, flags, 1);
    const dnnl_memory_desc_t *md;
    if (!st) st = dnnl_primitive_create(&g->prim, pd);
    if (!st) st = dnnl_stream_create(&g->stream, g_engine, dnnl_stream_default_flags);
    /* memory handles made once with no data; each run points them at its buffers */
    struct { dnnl_memory_t *mem; dnnl_query_t what; } m[] = {
        {&g->a, dnnl_query_src_md}, {&g->w, dnnl_query_weights_md}, {&g->c, dnnl_query_dst_md},
        {&g->pad, dnnl_query_scratchpad_md}};
    for (size_t i = 0; !st && i < sizeof m / sizeof m[0]; i++) {
        md = dnnl_primitive_desc_query_md(pd, m[i].what, 0);
        st = md ? dnnl_memory_create(m[i].mem, md, g_engine, DNNL_MEMORY_NONE) : dnnl_invalid_arguments;
        if (!st && m[i].mem == &g->pad) {
            size_t bytes = dnnl_memory_desc_get_size(md);
            g->pad_buf   = dinoc_calloc(bytes ? bytes : 1, 1);
            st = g->pad_buf ? dnnl_memory_set_data_handle(g->pad, g->pad_buf) : dnnl_out_of_memory;
        }
    }
    if (!st && has_bias) {
        md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1);
        st = md ? dnnl_memory_create(&g->b, md, g_engine, DNNL_MEMORY_NONE) : dnnl_invalid_arguments;
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (st) {
        dinoc_bf16_gemm_free(g);
        return dinoc_fail(DINOC_ERR_UNSUPPORTED, "oneDNN cannot prepare a bf16 product [%d,%d] x [%d,%d] (flags %d, status %d)",
                          M, K, K, N, flags, (int)st);
    }
    *out = g;
    return DINOC_OK;
}

dinoc_status dinoc_bf16_gemm_run(dinoc_bf16_gemm *g, float *out, const uint16_t *a,
                                 const uint16_t *w, const float *bias) {
    if (g->has_bias && !bias)
        return dinoc_fail(DINOC_ERR_ARG, "bf16 product [%d,%d] x [%d,%d] was made with a bias and run without one",
                          g->M, g->K, g->K, g->N);
    dnnl_status_t st;
    if ((st = dnnl_memory_set_data_handle(g->a, (void *)a)) ||
        (st = dnnl_memory_set_data_handle(g->w, (void *)w)) ||
        (st = dnnl_memory_set_data_handle(g->c, out)) ||
        (g->has_bias && (st = dnnl_memory_set_data_handle(g->b, (void *)bias))))
        return dinoc_fail(DINOC_ERR_ARG, "oneDNN refused a buffer of a bf16 product (status %d)", (int)st);
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, g->a}, {DNNL_ARG_WEIGHTS, g->w}, {DNNL_ARG_DST, g->c},
                               {DNNL_ARG_SCRATCHPAD, g->pad}, {DNNL_ARG_BIAS, g->b}};
    st = dnnl_primitive_execute(g->prim, g->stream, g->has_bias ? 5 : 4, args);
    if (!st) st = dnnl_stream_wait(g->stream);
    if (st)
        return dinoc_fail(DINOC_ERR_UNSUPPORTED, "oneDNN bf16 product [%d,%d] x [%d,%d] (flags %d) failed (status %d)",
                          g->M, g->K, g->K, g->N, g->flags, (int)st);
    return DINOC_OK;
}

#elif !defined(DINOC_BF16_EXTERNAL_BACKEND) /* built without oneDNN (DNNL=0): always emulated */

int         dinoc_bf16_native(void) { return 0; }
const char *dinoc_bf16_backend(void) { return "emulated (built without oneDNN: DNNL=0)"; }
struct dinoc_bf16_gemm { int unused; };
void         dinoc_bf16_gemm_free(dinoc_bf16_gemm *g) { free(g); }
dinoc_status dinoc_bf16_gemm_init_ex(dinoc_bf16_gemm **out, int M, int K, int N, int has_bias, int flags) {
    (void)M, (void)K, (void)N, (void)has_bias, (void)flags;
    *out = NULL;
    return dinoc_fail(DINOC_ERR_UNSUPPORTED, "no native bf16 products: %s", dinoc_bf16_backend());
}
dinoc_status dinoc_bf16_gemm_run(dinoc_bf16_gemm *g, float *out, const uint16_t *a,
                                 const uint16_t *w, const float *bias) {
    return dinoc_fail(DINOC_ERR_UNSUPPORTED, "no native bf16 products: %s", dinoc_bf16_backend());
}
#endif

dinoc_status dinoc_bf16_gemm_init(dinoc_bf16_gemm **out, int M, int K, int N, int has_bias) {
    return dinoc_bf16_gemm_init_ex(out, M, K, N, has_bias, 0);
}
