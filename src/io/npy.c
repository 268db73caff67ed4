/* npy.c: dinoc_npy_write, float32 arrays as NumPy .npy files (format version 1.0), written
 * atomically so a reader never sees half a file.
 *
 * Layout: "\x93NUMPY", version 1 0, u16 little-endian header length, then the header
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces and ended by '\n' so that the data starts at a multiple of 64 bytes (what
 * numpy's own writer does), then the raw little-endian floats in C order.
 *
 * Tested by tests/test_npy.c (header bytes and data read back). */
#include "../internal.h"

#include <inttypes.h>
#include <string.h>

/* Writes n floats as little-endian bytes; on a big-endian host they are swapped in chunks. */
static dinoc_status write_f32_le(dinoc_atomic_file *af, const float *data, size_t n) {
    const uint32_t one = 1;
    uint8_t        first;
    memcpy(&first, &one, 1);
    if (first == 1) return dinoc_atomic_write(af, data, n * sizeof(float));
    uint8_t chunk[4096];
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        for (; i < n && k < sizeof chunk; i++, k += 4) {
            uint32_t b;
            memcpy(&b, &data[i], 4);
            for (int j = 0; j < 4; j++) chunk[k + (size_t)j] = (uint8_t)(b >> (8 * j));
        }
        dinoc_status s = dinoc_atomic_write(af, chunk, k);
        if (s) return s;
    }
    return DINOC_OK;
}

dinoc_status dinoc_npy_write(const char *path, const float *data, int ndim, const int64_t *shape) {
    /* numpy allows at most 64 dimensions (NPY_MAXDIMS in numpy 2) */
    if (ndim < 0 || ndim > 64 || (ndim && !shape))
        return dinoc_fail(DINOC_ERR_ARG, "%s: invalid ndim %d", path, ndim);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (uint64_t)shape[i] > SIZE_MAX ||
            !dinoc_mul_size(numel, (size_t)shape[i], &numel))
            return dinoc_fail(DINOC_ERR_ARG, "%s: invalid shape[%d] = %lld", path, i,
                              (long long)shape[i]);
    }
    size_t bytes;
    if (!dinoc_mul_size(numel, sizeof(float), &bytes))
        return dinoc_fail(DINOC_ERR_ARG, "%s: array too large", path);
    if (numel && !data) return dinoc_fail(DINOC_ERR_ARG, "%s: NULL data", path);

    /* 10-byte preamble + dict + padding + '\n' fits easily: each dim is at most 21 characters. */
    char   hdr[64 * 24 + 128];
    size_t k = 10;
    k += (size_t)snprintf(hdr + k, sizeof hdr - k, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < ndim; i++)
        k += (size_t)snprintf(hdr + k, sizeof hdr - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    /* a 1-tuple needs its trailing comma: (5,) */
    k += (size_t)snprintf(hdr + k, sizeof hdr - k, "%s), }", ndim == 1 ? "," : "");
    size_t total = (k + 1 + 63) / 64 * 64; /* + '\n', rounded up to 64 */
    memset(hdr + k, ' ', total - 1 - k);
    hdr[total - 1] = '\n';
    size_t hlen    = total - 10;
    memcpy(hdr, "\x93NUMPY\x01\x00", 8);
    hdr[8] = (char)(hlen & 0xff);
    hdr[9] = (char)(hlen >> 8);

    dinoc_atomic_file af;
    dinoc_status      s = dinoc_atomic_open(&af, path);
    if (s) return s;
    if (!(s = dinoc_atomic_write(&af, hdr, total))) s = write_f32_le(&af, data, numel);
    if (s) {
        dinoc_atomic_abort(&af);
        return s;
    }
    return dinoc_atomic_commit(&af);
}
