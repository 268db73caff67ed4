/* bf16_fake_native.c: a stand-in for src/ops/bf16.c's native backend (oneDNN on AMX or
 * AVX512-BF16), linked into build/dinoc_tests_fakebf16 in place of it. It honours the same
 * contract (dinoc_bf16_gemm_init_ex's operand layouts and flags, bf16 operands, fp32 output, bias,
 * accumulation) by sgemm on the operands unpacked to fp32, so the native dispatch of the
 * bf16 inference (src/nn/vit.c) and bf16 training (src/nn/vit_train.c) paths, which no CPU
 * without bf16 instructions reaches otherwise, runs under test_bf16.c and test_vit_train.c on
 * any machine. oneDNN's own calls are checked by bf16_dnnl_f32.c. Not part of the library. */
#include "../../src/internal.h"

static int g_force_emulation;
void       dinoc_bf16_force_emulation(int on) { g_force_emulation = on; }
int        dinoc_bf16_native(void) { return !g_force_emulation; }
const char *dinoc_bf16_backend(void) { return g_force_emulation ? "emulated (forced)" : "fake native (test stand-in)"; }

struct dinoc_bf16_gemm {
    int    M, K, N, has_bias, flags;
    float *a, *w; /* unpacked operands, [M,K] and [K,N] */
};

void dinoc_bf16_gemm_free(dinoc_bf16_gemm *g) {
    if (g) free(g->a), free(g->w), free(g);
}

dinoc_status dinoc_bf16_gemm_init_ex(dinoc_bf16_gemm **out, int M, int K, int N, int has_bias, int flags) {
    dinoc_bf16_gemm *g = calloc(1, sizeof *g);
    if (g) g->a = malloc(sizeof(float) * M * K), g->w = malloc(sizeof(float) * K * N);
    if (!g || !g->a || !g->w) {
        dinoc_bf16_gemm_free(g);
        return dinoc_fail(DINOC_ERR_NOMEM, "fake bf16 product");
    }
    g->M = M, g->K = K, g->N = N, g->has_bias = has_bias, g->flags = flags;
    *out = g;
    return DINOC_OK;
}

dinoc_status dinoc_bf16_gemm_run(dinoc_bf16_gemm *g, float *out, const uint16_t *a, const uint16_t *w,
                                 const float *bias) {
    const int M = g->M, K = g->K, N = g->N, at = g->flags & DINOC_BF16_A_T, wkn = g->flags & DINOC_BF16_W_KN;
    if (g->has_bias && !bias) /* as the oneDNN backend */
        return dinoc_fail(DINOC_ERR_ARG, "bf16 product [%d,%d] x [%d,%d] was made with a bias and run without one", M, K,
                          K, N);
    for (int m = 0; m < M; m++)
        for (int k = 0; k < K; k++) g->a[(size_t)m * K + k] = dinoc_f32_from_bf16(at ? a[(size_t)k * M + m] : a[(size_t)m * K + k]);
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) g->w[(size_t)k * N + n] = dinoc_f32_from_bf16(wkn ? w[(size_t)k * N + n] : w[(size_t)n * K + k]);
    const int acc = g->flags & DINOC_BF16_ACC;
    if (g->has_bias)
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) out[(size_t)m * N + n] = (acc ? out[(size_t)m * N + n] : 0) + bias[n];
    dinoc_gemm(0, 0, M, N, K, 1.0f, g->a, K, g->w, N, acc || g->has_bias ? 1.0f : 0.0f, out, N);
    return DINOC_OK;
}
