/* vecmath.c: which copy of the fast kernels runs (see vecmath.h). The AVX2 + FMA copies when the
 * CPU has both, unless a test asked for the portable ones (dinoc_ops_force_portable). */
#include "../internal.h"
#include "vecmath.h"

#include <stdatomic.h>

static atomic_int g_force_portable;

void dinoc_ops_force_portable(int on) {
    atomic_store_explicit(&g_force_portable, on != 0, memory_order_relaxed);
}

int dinoc_ops_avx2(void) {
    return !atomic_load_explicit(&g_force_portable, memory_order_relaxed) && dinoc_cpu_avx2_fma();
}
