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
    openblas_set_num_threads(n);
#endif
}

int dinoc_get_threads(void) {
    if (g_threads <= 0) return dinoc_omp_max_threads();
    return g_threads;
}

int dinoc_omp_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
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
