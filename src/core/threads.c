/* threads.c: one knob for OpenMP and BLAS threads. */
#include "../internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef DINOC_OPENBLAS
void openblas_set_num_threads(int n);
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

/* The thread count of every dinoc call, on any thread; 0 until set. Atomic because a user thread
 * may read it while another sets it, and the first use may come from several threads at once. */
static atomic_int     g_threads;
static pthread_once_t g_threads_once = PTHREAD_ONCE_INIT;

void dinoc_set_threads(int n) {
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    atomic_store_explicit(&g_threads, n, memory_order_relaxed);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
#ifdef DINOC_OPENBLAS
    /* OpenBLAS stays single-threaded: dinoc_gemm splits products across OpenMP threads itself */
    openblas_set_num_threads(1);
#endif
}

/* first use without dinoc_set_threads: all cores, and OpenBLAS set single-threaded */
static void threads_default(void) {
    if (atomic_load_explicit(&g_threads, memory_order_relaxed) <= 0) dinoc_set_threads(dinoc_omp_max_threads());
}

int dinoc_get_threads(void) {
    int n = atomic_load_explicit(&g_threads, memory_order_relaxed);
    if (n <= 0) {
        pthread_once(&g_threads_once, threads_default);
        n = atomic_load_explicit(&g_threads, memory_order_relaxed);
    }
#ifdef _OPENMP
    /* omp_set_num_threads only sets the calling thread's default team size: a user thread that did
     * not call dinoc_set_threads would run dinoc's loops without a num_threads clause on all cores.
     * Every entry point asks for the count first, so this keeps each thread's teams at n. */
    if (!omp_in_parallel() && omp_get_max_threads() != n) omp_set_num_threads(n);
#endif
    return n;
}

int dinoc_omp_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* Sets this thread's OpenMP team size (nothing without OpenMP). */
void dinoc_omp_set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

int dinoc_omp_num_threads(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

int dinoc_omp_thread_num(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

void dinoc_omp_chunk(size_t n, size_t align, size_t *i0, size_t *i1) {
    size_t t = (size_t)dinoc_omp_thread_num(), nt = (size_t)dinoc_omp_num_threads();
    size_t per = ((n + nt - 1) / nt + align - 1) / align * align;
    *i0 = t * per < n ? t * per : n;
    *i1 = *i0 + per < n ? *i0 + per : n;
}
