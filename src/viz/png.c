/* png.c: the viridis colour map and atomic PNG writing (dinoc_viz_viridis, dinoc_viz_png_write).
 *
 * PNG encoding is stb_image_write; Debian's libstb.so already holds its implementation (so
 * STB_IMAGE_WRITE_IMPLEMENTATION is not defined here). The encoder streams into a
 * dinoc_atomic_file through stbi_write_png_to_func, so a reader never sees half a picture.
 * Tested by tests/cli_attn_report_test.sh (the PNGs `dinoc attn` writes are decoded by PIL). */
#include "viz.h"

#include <limits.h>
#include <math.h>
#include <stb/stb_image_write.h>

/* matplotlib's viridis sampled at t = 0, 1/16, ..., 1 (rounded to 8 bits). */
static const uint8_t k_viridis[17][3] = {
    {68, 1, 84},    {72, 24, 106},  {71, 45, 123},  {66, 64, 134},  {59, 82, 139},  {51, 99, 141},
    {44, 114, 142}, {38, 130, 142}, {33, 145, 140}, {31, 160, 136}, {40, 174, 128}, {63, 188, 115},
    {94, 201, 98},  {132, 212, 75}, {173, 220, 48}, {216, 226, 25}, {253, 231, 37},
};

void dinoc_viz_viridis(float t, uint8_t rgb[3]) {
    if (!(t > 0.0f)) t = 0.0f; /* also NaN */
    if (t > 1.0f) t = 1.0f;
    float u = t * 16.0f;
    int   i = (int)u;
    if (i > 15) i = 15;
    float f = u - (float)i;
    for (int c = 0; c < 3; c++)
        rgb[c] = (uint8_t)lrintf((1.0f - f) * k_viridis[i][c] + f * k_viridis[i + 1][c]);
}

typedef struct {
    dinoc_atomic_file af;
    dinoc_status      err;
} png_sink;

static void png_out(void *ctx, void *data, int size) {
    png_sink *p = ctx;
    if (!p->err && size > 0) p->err = dinoc_atomic_write(&p->af, data, (size_t)size);
}

dinoc_status dinoc_viz_png_write(const char *path, const uint8_t *pix, int w, int h, int c) {
    if (!path || !pix || w <= 0 || h <= 0 || (c != 1 && c != 3 && c != 4))
        return dinoc_fail(DINOC_ERR_ARG, "%s: cannot write a %d x %d x %d PNG", path ? path : "(null)", w, h, c);
    /* stb uses int sizes: the row stride and the filtered buffer (h * (w * c + 1)) must fit */
    if ((int64_t)w * c + 1 > INT_MAX / h)
        return dinoc_fail(DINOC_ERR_ARG, "%s: a %d x %d PNG is too large", path, w, h);
    png_sink     p = {.err = DINOC_OK};
    dinoc_status s = dinoc_atomic_open(&p.af, path);
    if (s) return s;
    if (!stbi_write_png_to_func(png_out, &p, w, h, c, pix, w * c)) {
        dinoc_atomic_abort(&p.af);
        return p.err ? p.err : dinoc_fail(DINOC_ERR_NOMEM, "%s: PNG encoding failed", path);
    }
    if (p.err) {
        dinoc_atomic_abort(&p.af);
        return p.err;
    }
    return dinoc_atomic_commit(&p.af);
}
