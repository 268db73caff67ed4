/* linear.c: matrix products. dinoc_linear_forward is PyTorch's Linear (out = inp @ w^T + b) over
 * CBLAS (OpenBLAS) when built with BLAS=openblas, and dinoc_linear_forward_ref is the plain C loop
 * kept as the oracle for tests (tests/test_ops.c compares the two). dinoc_linear_backward is at the
 * end; tested in tests/test_grad.c (finite differences) and tests/test_ops_parity.c (torch). */
#include "../internal.h"

#ifdef DINOC_OPENBLAS
#include <cblas.h>
#endif
#ifdef DINOC_DNNL
#include <dnnl.h>
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

void dinoc_linear_forward_ref(float *out, const float *inp, const float *w, const float *bias,
                              int M, int K, int N) {
    /* out [M,N], inp [M,K], w [N,K], bias [N]. Accumulate in double: this is the reference. */
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        const float *x = inp + (size_t)m * K;
        for (int n = 0; n < N; n++) {
            const float *wr  = w + (size_t)n * K;
            double       acc = bias ? bias[n] : 0.0;
            for (int k = 0; k < K; k++) acc += (double)x[k] * wr[k];
            out[(size_t)m * N + n] = (float)acc;
        }
    }
}

/* Which library runs the fp32 products. OpenBLAS as Debian ships it is the default; where oneDNN is
 * built in (DNNL=1) and the CPU has AVX-512, oneDNN's sgemm runs them instead: its AVX-512 kernels
 * measured 1.8-2.0x OpenBLAS's products on 2 Zen 5 cores (ViT-S shapes, both libraries
 * single-threaded per row block as below; OpenBLAS's AVX-512 kernels are not used there, since
 * OPENBLAS_CORETYPE pins Haswell's). DINOC_SGEMM=openblas or =onednn overrides the choice (benches
 * compare the two); dinoc_fp32_backend() (dinoc.h) names it. BLAS=none keeps the reference C
 * loops below whatever DNNL is. */
#ifdef DINOC_OPENBLAS
enum { GEMM_OPENBLAS, GEMM_ONEDNN };
static int            g_gemm = GEMM_OPENBLAS;
static pthread_once_t g_gemm_once = PTHREAD_ONCE_INIT;

static void gemm_pick(void) {
#ifdef DINOC_DNNL
    const char *env = getenv("DINOC_SGEMM");
    if (env && !strcmp(env, "openblas")) g_gemm = GEMM_OPENBLAS;
    else if (env && !strcmp(env, "onednn")) g_gemm = GEMM_ONEDNN;
    else g_gemm = (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core ? GEMM_ONEDNN
                                                                                                     : GEMM_OPENBLAS;
#endif
}
#endif

const char *dinoc_fp32_backend(void) {
#ifdef DINOC_OPENBLAS
    pthread_once(&g_gemm_once, gemm_pick);
    return g_gemm == GEMM_ONEDNN ? "oneDNN sgemm" : "OpenBLAS sgemm";
#else
    return "reference C loops";
#endif
}

#ifdef DINOC_OPENBLAS
/* One library call on a block of rows, on this thread only. */
static void gemm_block(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc) {
#ifdef DINOC_DNNL /* (g_gemm is never GEMM_ONEDNN without it) */
    if (g_gemm == GEMM_ONEDNN) {
        dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#endif
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K,
                alpha, A, lda, B, ldb, beta, C, ldc);
}
#endif

#ifdef DINOC_OPENBLAS
/* How dinoc_gemm shares a product's rows among the threads. Each OpenMP thread computes a block of
 * C's rows with one single-threaded library call. Two thread pools on the same cores (OpenMP's
 * spinning waiters and OpenBLAS's workers) slowed a 2-core machine several times over. With
 * oneDNN, results do not depend on the thread count: each element's K-loop is the same whatever
 * block it lands in, provided a block has at least MIN_ROWS rows (oneDNN's sgemm takes another
 * kernel below 16 rows, and a different sum order with it: measured), so blocks start on
 * multiples of 8 rows and the last block swallows a short remainder; a product too small to split
 * is one call everywhere. (Measured bit-identical for ViT-S's shapes cut into 16 to 1000 rows;
 * oneDNN also picks packed or unpacked kernels by shape, which could split a rare shape's bits.
 * OpenBLAS 0.3.21 rounds row blocks differently: docs/resnet.md.) */
enum { MIN_ROWS = 16 };
static int gemm_splits(int M, int N, int K, int nt) { return nt > 1 && M >= 2 * MIN_ROWS && (double)M * N * K >= 2e5; }

/* rows [*m0, *m1) of M for thread t of n (possibly empty) */
static void gemm_rows(int M, int t, int n, int *m0, int *m1) {
    int per = ((M + n - 1) / n + 7) / 8 * 8;
    if (per < MIN_ROWS) per = MIN_ROWS;
    *m0 = t * per < M ? t * per : M;
    *m1 = *m0 + per < M ? *m0 + per : M;
    if (M - *m1 < MIN_ROWS) *m1 = M;             /* a short remainder joins this block */
    if (*m0 > 0 && M - *m0 < MIN_ROWS) *m0 = M; /* ... and is not a block of its own */
}
#endif

int dinoc_linear_rows(int M, int N, int K, int t, int n, int *m0, int *m1) {
#ifdef DINOC_OPENBLAS
    if (!gemm_splits(M, N, K, n) || n != dinoc_get_threads()) return 0;
    gemm_rows(M, t, n, m0, m1);
    return 1;
#else
    (void)M, (void)N, (void)K, (void)t, (void)n, (void)m0, (void)m1;
    return 0;
#endif
}

void dinoc_linear_forward_rows(float *out, const float *inp, const float *w, const float *bias, int K, int N,
                               int m0, int m1) {
    if (m0 >= m1) return;
    if (bias)
        for (int m = m0; m < m1; m++) memcpy(out + (size_t)m * N, bias, sizeof(float) * (size_t)N);
#ifdef DINOC_OPENBLAS
    pthread_once(&g_gemm_once, gemm_pick);
    gemm_block(0, 1, m1 - m0, N, K, 1.0f, inp + (size_t)m0 * K, K, w, K, bias ? 1.0f : 0.0f, out + (size_t)m0 * N, N);
#else
    (void)inp, (void)w, (void)K; /* never called: dinoc_linear_rows says no split */
#endif
}

void dinoc_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc) {
#ifdef DINOC_OPENBLAS
    pthread_once(&g_gemm_once, gemm_pick);
    const int nt = dinoc_get_threads();
    if (!gemm_splits(M, N, K, nt)) {
        /* oneDNN would thread a lone call itself (and split differently per thread count): one
         * thread here, as OpenBLAS is (dinoc_set_threads) */
        const int was = dinoc_omp_max_threads();
        if (g_gemm == GEMM_ONEDNN && was > 1) dinoc_omp_set_threads(1);
        gemm_block(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        if (g_gemm == GEMM_ONEDNN && was > 1) dinoc_omp_set_threads(was);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
        int m0, m1;
        gemm_rows(M, dinoc_omp_thread_num(), dinoc_omp_num_threads(), &m0, &m1);
        if (m0 < m1) {
            const float *Ab = trans_a ? A + m0 : A + (size_t)m0 * lda;
            gemm_block(trans_a, trans_b, m1 - m0, N, K, alpha, Ab, lda, B, ldb, beta, C + (size_t)m0 * ldc, ldc);
        }
    }
#else
    /* Reference: C = alpha op(A) op(B) + beta C, row-major. */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++) {
                float a = trans_a ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = trans_b ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                acc += a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            *c       = alpha * acc + (beta == 0.0f ? 0.0f : beta * *c);
        }
    }
#endif
}

void dinoc_linear_forward(float *out, const float *inp, const float *w, const float *bias, int M,
                          int K, int N) {
    if (bias) {
        /* Pre-fill with the bias and let the product accumulate onto it (beta = 1). */
#pragma omp parallel for schedule(static)
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) out[(size_t)m * N + n] = bias[n];
    }
    dinoc_gemm(0, 1, M, N, K, 1.0f, inp, K, w, K, bias ? 1.0f : 0.0f, out, N);
}

/* Linear backward, for out = inp @ w^T + b:
 *   dinp[M,K] += dout[M,N] @ w[N,K]      dw[N,K] += dout^T @ inp[M,K]      db[N] += sum_m dout[m,:]
 * The products go through dinoc_gemm with beta = 1, so they accumulate onto what the caller holds.
 * db is parallel over blocks of 64 columns; each column is summed over m in row order, so its sum
 * never depends on how the threads split the work (no float reduction across threads). */
void dinoc_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                           const float *w, int M, int K, int N) {
    if (dinp) dinoc_gemm(0, 0, M, K, N, 1.0f, dout, N, w, K, 1.0f, dinp, K);
    if (dw) dinoc_gemm(1, 0, N, K, M, 1.0f, dout, N, inp, K, 1.0f, dw, K);
    if (db) {
        enum { CB = 64 };
        int nblk = (N + CB - 1) / CB;
#pragma omp parallel for schedule(static)
        for (int bk = 0; bk < nblk; bk++) {
            int n0 = bk * CB, n1 = n0 + CB < N ? n0 + CB : N;
            /* double: M = B*T rows reaches 10^4 and more; a float sum would drift by ~sqrt(M) ulps. */
            double acc[CB] = {0};
            for (int m = 0; m < M; m++) {
                const float *d = dout + (size_t)m * N;
                for (int n = n0; n < n1; n++) acc[n - n0] += d[n];
            }
            for (int n = n0; n < n1; n++) db[n] += (float)acc[n - n0];
        }
    }
}
