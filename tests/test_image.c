/* test_image.c: image decoding (src/io/image.c) and resize invariants (src/io/resize.c).
 * Small images are written with stb_image_write into the tmp dir or into memory; malformed
 * inputs (corrupt, empty, absurd header sizes, text) must fail with DINOC_ERR_FORMAT naming the
 * file. Bit-exact parity with PIL is in test_preprocess.c. */
#include "check.h"
#include "../src/internal.h"

#include <stb/stb_image_write.h>

/* A deterministic w x h x c pattern. */
static uint8_t *pattern(int w, int h, int c, unsigned seed) {
    uint8_t *p = malloc((size_t)w * h * c);
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < (size_t)w * h * c; i++) {
        s    = s * 1664525u + 1013904223u;
        p[i] = (uint8_t)(s >> 24);
    }
    return p;
}

static char *tmp_path(const char *name) { return dinoc_path_join(dinoc_test_tmpdir(), name); }

typedef struct {
    uint8_t *buf;
    size_t   n, cap;
} membuf;

static void mem_write(void *ctx, void *data, int size) {
    membuf *m = ctx;
    if (m->n + (size_t)size > m->cap) {
        m->cap = (m->n + (size_t)size) * 2;
        m->buf = realloc(m->buf, m->cap);
    }
    memcpy(m->buf + m->n, data, (size_t)size);
    m->n += (size_t)size;
}

/* Expected RGB of a c-channel pixel under PIL's convert("RGB"). */
static void to_rgb(const uint8_t *s, int c, uint8_t d[3]) {
    if (c <= 2) d[0] = d[1] = d[2] = s[0];
    else d[0] = s[0], d[1] = s[1], d[2] = s[2];
}

static int rgb_matches(const dinoc_image *img, const uint8_t *src, int w, int h, int c) {
    if (img->w != w || img->h != h || img->c != 3) return 0;
    for (int i = 0; i < w * h; i++) {
        uint8_t e[3];
        to_rgb(src + (size_t)i * c, c, e);
        if (memcmp(img->data + (size_t)i * 3, e, 3) != 0) return 0;
    }
    return 1;
}

DINOC_TEST(image_decode_png_every_channel_count) {
    /* 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA: grey replicated, alpha dropped (no compositing). */
    for (int c = 1; c <= 4; c++) {
        int      w = 7, h = 5;
        uint8_t *p = pattern(w, h, c, (unsigned)c);
        char     name[32];
        snprintf(name, sizeof name, "img_c%d.png", c);
        char *path = tmp_path(name);
        CHECK(stbi_write_png(path, w, h, c, p, w * c));
        dinoc_image img;
        CHECK_OK(dinoc_image_load(&img, path));
        CHECK_MSG(rgb_matches(&img, p, w, h, c), "png with %d channels decoded wrong", c);
        dinoc_image_free(&img);
        CHECK(img.data == NULL);
        free(path);
        free(p);
    }
}

DINOC_TEST(image_decode_bmp_and_pgm) {
    int      w = 6, h = 4;
    uint8_t *p    = pattern(w, h, 3, 11);
    char    *path = tmp_path("img.bmp");
    CHECK(stbi_write_bmp(path, w, h, 3, p));
    dinoc_image img;
    CHECK_OK(dinoc_image_load(&img, path));
    CHECK(rgb_matches(&img, p, w, h, 3));
    dinoc_image_free(&img);
    free(path);

    /* binary PGM written by hand: grey -> RGB replicated */
    char hdr[] = "P5\n6 4\n255\n";
    size_t hn  = strlen(hdr);
    uint8_t buf[64];
    memcpy(buf, hdr, hn);
    memcpy(buf + hn, p, (size_t)w * h);
    CHECK_OK(dinoc_image_load_memory(&img, buf, hn + (size_t)w * h, "mem.pgm"));
    CHECK(rgb_matches(&img, p, w, h, 1));
    dinoc_image_free(&img);
    free(p);
}

DINOC_TEST(image_decode_png_from_memory) {
    int      w = 9, h = 3;
    uint8_t *p = pattern(w, h, 3, 5);
    membuf   m = {0};
    CHECK(stbi_write_png_to_func(mem_write, &m, w, h, 3, p, w * 3));
    dinoc_image img;
    CHECK_OK(dinoc_image_load_memory(&img, m.buf, m.n, "in-memory.png"));
    CHECK(rgb_matches(&img, p, w, h, 3));
    dinoc_image_free(&img);

    /* Corrupt: damage the IDAT payload (keeps the header readable, so decoding itself fails). */
    uint8_t *bad = malloc(m.n);
    memcpy(bad, m.buf, m.n);
    for (size_t i = 60; i < m.n - 16; i++) bad[i] ^= 0x5a;
    CHECK_ERR(dinoc_image_load_memory(&img, bad, m.n, "corrupt.png"), DINOC_ERR_FORMAT,
              "corrupt.png");
    CHECK(img.data == NULL);
    /* Truncated after the header. */
    CHECK_ERR(dinoc_image_load_memory(&img, m.buf, 40, "truncated.png"), DINOC_ERR_FORMAT,
              "truncated.png");
    free(bad);
    free(m.buf);
    free(p);
}

DINOC_TEST(image_reject_empty_text_and_missing) {
    char *empty = tmp_path("empty.png");
    CHECK_OK(dinoc_write_file_atomic(empty, "", 0));
    dinoc_image img;
    CHECK_ERR(dinoc_image_load(&img, empty), DINOC_ERR_FORMAT, empty);
    free(empty);

    char       *txt  = tmp_path("notes.jpg");
    const char *text = "this is a text file, not an image\n";
    CHECK_OK(dinoc_write_file_atomic(txt, text, strlen(text)));
    CHECK_ERR(dinoc_image_load(&img, txt), DINOC_ERR_FORMAT, txt);
    CHECK(strstr(dinoc_last_error(), "not a decodable image") != NULL);
    free(txt);

    CHECK_ERR(dinoc_image_load(&img, "/nonexistent-dir/x.png"), DINOC_ERR_IO, "/nonexistent-dir/x.png");
}

DINOC_TEST(image_reject_absurd_header_size) {
    /* PGM header claiming 100000 x 100000: refused from the header, before any allocation. */
    const char *pgm = "P5\n100000 100000\n255\n\x01\x02\x03";
    dinoc_image img;
    CHECK_ERR(dinoc_image_load_memory(&img, pgm, strlen(pgm), "huge.pgm"), DINOC_ERR_FORMAT,
              "huge.pgm: image size 100000 x 100000");

    /* BMP (BITMAPINFOHEADER) claiming 100000 x 100000 x 24 bit. */
    uint8_t bmp[54 + 16] = {0};
    bmp[0] = 'B', bmp[1] = 'M';
    uint32_t v;
#define PUT32(off, x) (v = (uint32_t)(x), memcpy(bmp + (off), &v, 4))
    PUT32(2, sizeof bmp);
    PUT32(10, 54);      /* pixel data offset */
    PUT32(14, 40);      /* header size */
    PUT32(18, 100000);  /* width */
    PUT32(22, 100000);  /* height */
    bmp[26] = 1;        /* planes */
    bmp[28] = 24;       /* bits per pixel */
#undef PUT32
    char *path = tmp_path("huge.bmp");
    CHECK_OK(dinoc_write_file_atomic(path, bmp, sizeof bmp));
    CHECK_ERR(dinoc_image_load(&img, path), DINOC_ERR_FORMAT, "100000 x 100000");
    CHECK(strstr(dinoc_last_error(), path) != NULL);
    free(path);

    /* 70000 x 1: one side above 65535 is refused too. */
    const char *wide = "P5\n70000 1\n255\n";
    CHECK_ERR(dinoc_image_load_memory(&img, wide, strlen(wide), "wide.pgm"), DINOC_ERR_FORMAT,
              "70000 x 1");
}

DINOC_TEST(image_resize_invariants) {
    int         w = 13, h = 9;
    uint8_t    *p   = pattern(w, h, 3, 3);
    dinoc_image src = {w, h, 3, p}, dst;
    /* Same size: a copy, for every filter. */
    for (int f = 0; f <= 5; f++) {
        CHECK_OK(dinoc_image_resize(&dst, &src, w, h, (dinoc_resample)f));
        CHECK(dst.w == w && dst.h == h && dst.c == 3 && memcmp(dst.data, p, (size_t)w * h * 3) == 0);
        dinoc_image_free(&dst);
    }
    /* A constant image stays constant: weights are normalised, and the fixed-point rounding
     * error (a few units of 2^-22) is far below half a level. */
    uint8_t    *flat = malloc((size_t)w * h * 3);
    memset(flat, 173, (size_t)w * h * 3);
    dinoc_image fsrc = {w, h, 3, flat};
    const int   sizes[][2] = {{5, 4}, {31, 20}, {13, 3}, {2, 9}, {1, 1}};
    for (int f = 0; f <= 5; f++) {
        for (int k = 0; k < 5; k++) {
            CHECK_OK(dinoc_image_resize(&dst, &fsrc, sizes[k][0], sizes[k][1], (dinoc_resample)f));
            int ok = 1;
            for (size_t i = 0; i < (size_t)dst.w * dst.h * 3; i++) ok &= dst.data[i] == 173;
            CHECK_MSG(ok, "filter %d to %dx%d: constant image changed", f, sizes[k][0], sizes[k][1]);
            dinoc_image_free(&dst);
        }
    }
    free(flat);
    /* NEAREST x2: every pixel repeated twice in each direction. */
    CHECK_OK(dinoc_image_resize(&dst, &src, 2 * w, 2 * h, DINOC_RESAMPLE_NEAREST));
    int ok = 1;
    for (int y = 0; y < 2 * h; y++)
        for (int x = 0; x < 2 * w; x++)
            ok &= memcmp(dst.data + ((size_t)y * 2 * w + x) * 3, p + ((size_t)(y / 2) * w + x / 2) * 3,
                         3) == 0;
    CHECK(ok);
    dinoc_image_free(&dst);
    /* A window of the output is the same bytes as the full output cropped: both passes, only
     * the vertical one (width kept), only the horizontal one (height kept). */
    const int tgt[3][2] = {{29, 7}, {13, 6}, {8, 9}};
    for (int f = 0; f <= 5; f++) {
        for (int t = 0; t < 3; t++) {
            int tw = tgt[t][0], th = tgt[t][1];
            CHECK_OK(dinoc_image_resize(&dst, &src, tw, th, (dinoc_resample)f));
            uint8_t win[6 * 4 * 3];
            CHECK_OK(dinoc_image_resize_region(win, &src, tw, th, (dinoc_resample)f, 2, 1, 6, 4));
            int same = 1;
            for (int y = 0; y < 4; y++)
                same &= memcmp(win + (size_t)y * 6 * 3, dst.data + ((size_t)(y + 1) * tw + 2) * 3,
                               6 * 3) == 0;
            CHECK_MSG(same, "filter %d to %dx%d: window differs from the cropped full resize", f,
                      tw, th);
            dinoc_image_free(&dst);
        }
    }
    /* Bad arguments. */
    CHECK_ERR(dinoc_image_resize(&dst, &src, 0, 5, DINOC_RESAMPLE_BICUBIC), DINOC_ERR_ARG, NULL);
    CHECK_ERR(dinoc_image_resize(&dst, &src, 5, 5, (dinoc_resample)9), DINOC_ERR_ARG, "filter 9");
    free(p);
}
