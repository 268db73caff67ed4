/* threads.c: one knob for OpenMP and BLAS threads. */
#include "../internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef DINOC_OPENBLAS
void openblas_set_num_threads(int n);
#endif
#include <unistd.h>

static int g_threads = 0;

void dinoc_set_threads(int n) {
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    g_threads = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
#ifdef DINOC_OPENBLAS
    /* OpenBLAS stays single-threaded: dinoc_gemm splits products across OpenMP threads itself */
    openblas_set_num_threads(1);
#endif
}

int dinoc_get_threads(void) {
    /* first use without dinoc_set_threads: all cores, and OpenBLAS set single-threaded */
    if (g_threads <= 0) dinoc_set_threads(dinoc_omp_max_threads());
    return g_threads;
}

int dinoc_omp_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
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
