/* test_npy.c: dinoc_npy_write (src/io/npy.c). Reads the written bytes back and checks the
 * NumPy 1.0 layout byte for byte: magic, version, header length, the header dict with numpy's own
 * spelling (a 1-tuple keeps its comma), padding to a multiple of 64 ending in '\n', and the data.
 * Scratch files live under dinoc_test_tmpdir() with an "st_" prefix. */
#include "check.h"
#include "../src/internal.h"

/* Writes, reads back and checks one array; dict is the expected header text before padding. */
static void check_npy(const char *file, const float *data, int ndim, const int64_t *shape,
                      size_t numel, const char *dict) {
    char *p = dinoc_path_join(dinoc_test_tmpdir(), file);
    CHECK_OK(dinoc_npy_write(p, data, ndim, shape));
    char  *buf = NULL;
    size_t len = 0;
    CHECK_OK(dinoc_read_file(p, 1 << 20, &buf, &len));
    free(p);
    if (!buf) return;
    CHECK(len >= 10 && memcmp(buf, "\x93NUMPY\x01\x00", 8) == 0);
    size_t hlen  = (size_t)(uint8_t)buf[8] | (size_t)(uint8_t)buf[9] << 8;
    size_t total = 10 + hlen;
    CHECK_MSG(total % 64 == 0 && len == total + 4 * numel, "%s: header %zu, file %zu", file, total, len);
    if (total > len) {
        free(buf);
        return;
    }
    size_t dl = strlen(dict);
    CHECK_MSG(memcmp(buf + 10, dict, dl) == 0, "%s: header '%.*s', want '%s'", file, (int)dl, buf + 10, dict);
    for (size_t i = 10 + dl; i < total - 1; i++) CHECK(buf[i] == ' ');
    CHECK(buf[total - 1] == '\n');
    /* data: little-endian float32 (the test host is little-endian, as the library's build targets) */
    CHECK(numel == 0 || memcmp(buf + total, data, 4 * numel) == 0);
    free(buf);
}

DINOC_TEST(npy_write_layout) {
    float x[6] = {1, -2.5f, 3, 4e-40f, INFINITY, 0};
    check_npy("st_2d.npy", x, 2, (int64_t[]){2, 3}, 6,
              "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
    check_npy("st_1d.npy", x, 1, (int64_t[]){5}, 5,
              "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }");
    check_npy("st_0d.npy", x, 0, NULL, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }");
    check_npy("st_empty.npy", NULL, 2, (int64_t[]){0, 4}, 0,
              "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }");
    /* a long shape makes the header cross 64 bytes more than once */
    int64_t big[8] = {1, 1, 1, 1, 1, 1, 0, 1000000000000};
    check_npy("st_8d.npy", NULL, 8, big, 0,
              "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 0, 1000000000000), }");
}

DINOC_TEST(npy_write_errors) {
    float x[2] = {1, 2};
    char *p    = dinoc_path_join(dinoc_test_tmpdir(), "st_err.npy");
    CHECK_OK(dinoc_write_file_atomic(p, "old", 3));
    CHECK_ERR(dinoc_npy_write(p, x, 1, (int64_t[]){-1}), DINOC_ERR_ARG, "shape[0] = -1");
    CHECK_ERR(dinoc_npy_write(p, x, -1, NULL), DINOC_ERR_ARG, "invalid ndim");
    CHECK_ERR(dinoc_npy_write(p, NULL, 1, (int64_t[]){2}), DINOC_ERR_ARG, "NULL data");
    CHECK_ERR(dinoc_npy_write(p, x, 2, (int64_t[]){INT64_MAX, INT64_MAX}), DINOC_ERR_ARG, "st_err.npy");
    char  *buf = NULL;
    size_t len = 0;
    CHECK_OK(dinoc_read_file(p, 100, &buf, &len));
    CHECK(len == 3 && memcmp(buf, "old", 3) == 0);
    free(buf);
    free(p);
    CHECK_ERR(dinoc_npy_write("/nonexistent-dir/x.npy", x, 1, (int64_t[]){2}), DINOC_ERR_IO, "/nonexistent-dir/x.npy");
}
