/* linear.c: matrix products. dinoc_linear_forward is PyTorch's Linear (out = inp @ w^T + b) over
 * CBLAS (OpenBLAS) when built with BLAS=openblas, and dinoc_linear_forward_ref is the plain C loop
 * kept as the oracle for tests (tests/test_ops.c compares the two). dinoc_linear_backward is at the
 * end; tested in tests/test_grad.c (finite differences) and tests/test_ops_parity.c (torch). */
#include "../internal.h"

#ifdef DINOC_OPENBLAS
#include <cblas.h>
#endif

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

void dinoc_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc) {
#ifdef DINOC_OPENBLAS
    /* Threads come from OpenMP only: OpenBLAS runs single-threaded (dinoc_set_threads) and each
     * OpenMP thread computes a block of C's rows. Two thread pools on the same cores (OpenMP's
     * spinning waiters and OpenBLAS's workers) slowed a 2-core machine several times over. Each
     * element's K-loop is the same whatever block it lands in, so results do not depend on the
     * thread count. */
    const int nt = dinoc_get_threads();
    if (nt <= 1 || M < 2 * nt || (double)M * N * K < 2e5) {
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                    M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
        const int t = dinoc_omp_thread_num(), n = dinoc_omp_num_threads();
        /* rows split in multiples of 8 so blocks start on whole micro-tiles */
        int per = ((M + n - 1) / n + 7) / 8 * 8;
        int m0 = t * per, m1 = m0 + per < M ? m0 + per : M;
        if (m0 < m1) {
            const float *Ab = trans_a ? A + m0 : A + (size_t)m0 * lda;
            cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                        m1 - m0, N, K, alpha, Ab, lda, B, ldb, beta, C + (size_t)m0 * ldc, ldc);
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
