/* vecmath.c: which copy of the fast kernels runs (see vecmath.h): the highest level the CPU has
 * (AVX-512, AVX2 + FMA, portable), capped by tests (dinoc_ops_force_level) to check every copy. */
#include "../internal.h"
#include "vecmath.h"

#include <stdatomic.h>

static atomic_int g_level_cap = DINOC_OPS_AVX512;

void dinoc_ops_force_level(int max) {
    max = max < DINOC_OPS_PORTABLE ? DINOC_OPS_PORTABLE : max > DINOC_OPS_AVX512 ? DINOC_OPS_AVX512 : max;
    atomic_store_explicit(&g_level_cap, max, memory_order_relaxed);
}

void dinoc_ops_force_portable(int on) { dinoc_ops_force_level(on ? DINOC_OPS_PORTABLE : DINOC_OPS_AVX512); }

int dinoc_ops_level(void) {
    const int cap = atomic_load_explicit(&g_level_cap, memory_order_relaxed), cpu = dinoc_cpu_ops_level();
    return cpu < cap ? cpu : cap;
}

int dinoc_ops_avx2(void) { return dinoc_ops_level() >= DINOC_OPS_AVX2; }
