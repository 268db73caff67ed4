/* test_ops.c: forward ops against plain references: the BLAS product against the double-precision
 * loop, LayerNorm against a double implementation, GELU against erf in double, SwiGLU, and the
 * attention kernel against a direct three-loop version. */
#include "check.h"
#include "../src/internal.h"

static void fill(float *x, size_t n, uint64_t seed, float scale) {
    dinoc_rng r;
    dinoc_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * dinoc_rng_normal(&r);
}

DINOC_TEST(ops_linear_matches_reference) {
    const int M = 37, K = 70, N = 53;
    float    *x = malloc(sizeof(float) * M * K), *w = malloc(sizeof(float) * N * K), *b = malloc(sizeof(float) * N);
    float    *y = malloc(sizeof(float) * M * N), *r = malloc(sizeof(float) * M * N);
    fill(x, (size_t)M * K, 1, 1), fill(w, (size_t)N * K, 2, 0.1f), fill(b, N, 3, 1);
    dinoc_linear_forward(y, x, w, b, M, K, N);
    dinoc_linear_forward_ref(r, x, w, b, M, K, N);
    /* float accumulation of K=70 products of size ~0.1 against double: |err| ~ K * eps * |terms| */
    CHECK_CLOSE(y, r, (size_t)M * N, 1e-5, 1e-5, "linear");
    dinoc_linear_forward(y, x, w, NULL, M, K, N);
    dinoc_linear_forward_ref(r, x, w, NULL, M, K, N);
    CHECK_CLOSE(y, r, (size_t)M * N, 1e-5, 1e-5, "linear_nobias");
    free(x), free(w), free(b), free(y), free(r);
}

DINOC_TEST(ops_layernorm_matches_double) {
    const int N = 9, C = 384;
    float     x[N * C], w[C], b[C], y[N * C], want[N * C], mean[N], rstd[N];
    fill(x, N * C, 4, 3), fill(w, C, 5, 1), fill(b, C, 6, 1);
    for (int i = 0; i < N * C; i++) x[i] += 100.0f; /* a large mean, as in deep residual streams */
    dinoc_layernorm_forward(y, mean, rstd, x, w, b, N, C, 1e-6f);
    for (int i = 0; i < N; i++) {
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[i * C + c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[i * C + c] - m) * (x[i * C + c] - m);
        v /= C;
        for (int c = 0; c < C; c++) want[i * C + c] = (float)((x[i * C + c] - m) / sqrt(v + 1e-6) * w[c] + b[c]);
    }
    /* outputs O(1..3); float rounding of (x - mean) at |x| ~ 100 is ~1e-5 relative to the std 3 */
    CHECK_CLOSE(y, want, N * C, 2e-5, 1e-5, "layernorm");
}

DINOC_TEST(ops_gelu_swiglu) {
    float x[64], y[64], want[64];
    for (int i = 0; i < 64; i++) x[i] = -8.0f + 0.25f * i;
    dinoc_gelu_forward(y, x, 64);
    for (int i = 0; i < 64; i++) want[i] = (float)(0.5 * x[i] * (1 + erf(x[i] / sqrt(2.0))));
    CHECK_CLOSE(y, want, 64, 1e-6, 1e-6, "gelu");
    float in[2 * 8], out[2 * 4], w2[2 * 4];
    fill(in, 16, 7, 2);
    dinoc_swiglu_forward(out, in, 2, 4);
    for (int r = 0; r < 2; r++)
        for (int j = 0; j < 4; j++) {
            double g = in[r * 8 + j];
            w2[r * 4 + j] = (float)(g / (1 + exp(-g)) * in[r * 8 + 4 + j]);
        }
    CHECK_CLOSE(out, w2, 8, 1e-6, 1e-6, "swiglu");
}

DINOC_TEST(ops_attention_matches_naive) {
    const int B = 2, T = 11, D = 24, NH = 3, HS = D / NH;
    float     qkv[B * T * 3 * D], out[B * T * D], att[B * NH * T * T], want[B * T * D];
    fill(qkv, sizeof qkv / sizeof qkv[0], 8, 1.5f);
    int    nt      = dinoc_omp_max_threads();
    float *scratch = malloc(sizeof(float) * nt * dinoc_attention_scratch_floats(T, HS));
    dinoc_attention_forward(out, att, qkv, B, T, D, NH, scratch, nt);
    double maxrow = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                double s[T], mx = -1e300, sum = 0;
                for (int u = 0; u < T; u++) {
                    double d = 0;
                    for (int i = 0; i < HS; i++)
                        d += (double)qkv[(b * T + t) * 3 * D + h * HS + i] * qkv[(b * T + u) * 3 * D + D + h * HS + i];
                    s[u] = d / sqrt((double)HS);
                    if (s[u] > mx) mx = s[u];
                }
                for (int u = 0; u < T; u++) sum += (s[u] = exp(s[u] - mx));
                double rowsum = 0;
                for (int u = 0; u < T; u++) rowsum += att[((b * NH + h) * T + t) * T + u];
                if (fabs(rowsum - 1) > maxrow) maxrow = fabs(rowsum - 1);
                for (int i = 0; i < HS; i++) {
                    double acc = 0;
                    for (int u = 0; u < T; u++) acc += s[u] / sum * qkv[(b * T + u) * 3 * D + 2 * D + h * HS + i];
                    want[(b * T + t) * D + h * HS + i] = (float)acc;
                }
            }
    CHECK_CLOSE(out, want, B * T * D, 1e-5, 1e-5, "attention");
    CHECK_MSG(maxrow < 1e-5, "attention rows sum to 1 within 1e-5, worst %g", maxrow);
    free(scratch);
}
