/* bf16_dnnl_f32.c: the oneDNN plumbing of src/ops/bf16.c on any CPU. Built with
 * -DDINOC_BF16_DT=dnnl_f32 -DDINOC_BF16_HARNESS (scripts/test.sh), the same make_pd / init / run
 * code runs on fp32 operands, so every operand layout (DINOC_BF16_A_T, DINOC_BF16_W_KN), the sum
 * post-op (DINOC_BF16_ACC), the bias, the user scratchpad and handle reuse are checked against a
 * double product where the CPU lacks bf16 instructions (as on the CI machine). The bf16 kernels
 * themselves need AVX512-BF16 or AMX: test_bf16.c compares them with emulation where present.
 * Bound: 1e-5 of the largest |reference| (fp32 products of K <= 600 terms; measured ~1e-6). */
#include "../../src/internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int check(int M, int K, int N, int has_bias, int flags) {
    float *a = malloc(sizeof(float) * M * K), *w = malloc(sizeof(float) * K * N), *b = malloc(sizeof(float) * N);
    float *out = malloc(sizeof(float) * M * N);
    double *ref = malloc(sizeof(double) * M * N);
    dinoc_rng r;
    dinoc_rng_seed(&r, (uint64_t)(M * 131 + K * 7 + N + flags));
    for (int i = 0; i < M * K; i++) a[i] = dinoc_rng_normal(&r);
    for (int i = 0; i < K * N; i++) w[i] = dinoc_rng_normal(&r);
    for (int i = 0; i < N; i++) b[i] = dinoc_rng_normal(&r);
    for (int i = 0; i < M * N; i++) out[i] = dinoc_rng_normal(&r); /* what ACC adds to */
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double acc = (flags & DINOC_BF16_ACC ? out[m * N + n] : 0) + (has_bias ? b[n] : 0);
            for (int k = 0; k < K; k++) {
                float av = flags & DINOC_BF16_A_T ? a[k * M + m] : a[m * K + k];
                float wv = flags & DINOC_BF16_W_KN ? w[k * N + n] : w[n * K + k];
                acc += (double)av * wv;
            }
            ref[m * N + n] = acc;
        }
    dinoc_bf16_gemm *g = NULL;
    int              bad = 0;
    if (dinoc_bf16_gemm_init_ex(&g, M, K, N, has_bias, flags)) {
        fprintf(stderr, "init [%d,%d]x[%d,%d] flags %d: %s\n", M, K, K, N, flags, dinoc_last_error());
        bad = 1;
    }
    /* twice: the second run reuses the handles (ACC adds onto the first result, so reset) */
    float *first = malloc(sizeof(float) * M * N);
    memcpy(first, out, sizeof(float) * M * N);
    for (int rep = 0; rep < 2 && !bad; rep++) {
        memcpy(out, first, sizeof(float) * M * N);
        if (dinoc_bf16_gemm_run(g, out, (const uint16_t *)a, (const uint16_t *)w, has_bias ? b : NULL)) {
            fprintf(stderr, "run: %s\n", dinoc_last_error());
            bad = 1;
            break;
        }
        double err = 0, scale = 0;
        for (int i = 0; i < M * N; i++) err = fmax(err, fabs(out[i] - ref[i])), scale = fmax(scale, fabs(ref[i]));
        if (!(err <= 1e-5 * scale)) {
            fprintf(stderr, "[%d,%d]x[%d,%d] bias %d flags %d: max err %.3g of %.3g\n", M, K, K, N, has_bias, flags, err, scale);
            bad = 1;
        } else if (rep == 1) {
            printf("ok [%d,%d]x[%d,%d] bias %d flags %d: max err %.2g of %.3g\n", M, K, K, N, has_bias, flags, err, scale);
        }
    }
    dinoc_bf16_gemm_free(g);
    free(a), free(w), free(b), free(out), free(ref), free(first);
    return bad;
}

int main(void) {
    printf("backend: %s\n", dinoc_bf16_backend());
    int bad = 0, n = 0;
    const int shapes[][3] = {{37, 48, 64}, {130, 64, 192}, {64, 600, 96}, {5, 16, 3}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int flags = 0; flags < 8; flags++)
            for (int bias = 0; bias < 2; bias++, n++) bad += check(shapes[s][0], shapes[s][1], shapes[s][2], bias, flags);
    printf("%d passed, %d failed\n", n - bad, bad);
    return bad != 0;
}
