/* mem.c: aligned allocation with overflow checks. */
#include "../internal.h"

#include <stdint.h>
#include <string.h>

int dinoc_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

void *dinoc_calloc(size_t n, size_t size) {
    size_t bytes;
    if (!dinoc_mul_size(n, size, &bytes)) return NULL;
    if (bytes == 0) bytes = 64;
    bytes = (bytes + 63) & ~(size_t)63;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
}

void dinoc_free(void *p) { free(p); }
