/* image.c: image decoding (dinoc_image_load, dinoc_image_load_memory, dinoc_image_free).
 *
 * JPEG is decoded by libjpeg-turbo (Debian's libjpeg62-turbo), everything else by stb_image from
 * Debian's libstb (the implementation is compiled into libstb.so, so this file only includes the
 * header). Why libjpeg for JPEG: stb's JPEG decoder reads out of bounds on crafted progressive
 * files (docs/hardening.md, finding F18), and libjpeg-turbo is what PIL decodes with, so JPEG
 * pixels now match PIL's (same islow IDCT and fancy upsampling, libjpeg's defaults). A JPEG whose
 * data is corrupt or truncated (libjpeg's "corrupt data" warnings) is refused, as PIL refuses a
 * truncated file; CMYK JPEGs are refused (libjpeg has no CMYK -> RGB conversion). The decoded image is converted to 3-channel RGB the way
 * PIL's Image.convert("RGB") does it: grey is replicated into R, G and B; grey+alpha keeps the grey
 * and drops the alpha; RGBA drops the alpha (no compositing onto a background, as PIL).
 *
 * Where stb and PIL disagree (known, not emulated):
 * - 16-bit PNG: stb keeps the high byte; PIL opens 16-bit grey as mode "I;16" and clips on
 *   convert("RGB"). 8-bit PNG, BMP, PGM/PPM, TGA and GIF decode identically.
 *
 * stbi_failure_reason() is thread-local in stb_image 2.27 as built by Debian (STBI_THREAD_LOCAL);
 * with an stb built without thread locals the reason could come from another thread's failure,
 * which would only garble the message, never the result.
 *
 * Tested by tests/test_image.c (in-memory PNG/BMP/PGM written with stb_image_write, grey and
 * grey+alpha conversion, corrupt, empty, absurd-size and non-image inputs) and, for parity with
 * PIL's decoder, by tests/test_preprocess.c. */
#include "../internal.h"

#include <jpeglib.h>
#include <setjmp.h>
#include <stb/stb_image.h>
#include <stdio.h>
#include <string.h>

/* Largest encoded file read from disk. Larger than any sane photo, small enough that a stray
 * path to a disk image fails fast. */
#define IMAGE_FILE_MAX ((size_t)512 << 20)
/* Decoded size limits of dinoc.h: each side <= 65535 and at most 2^28 pixels (768 MiB as RGB). */
#define IMAGE_SIDE_MAX   65535
#define IMAGE_PIXELS_MAX ((int64_t)1 << 28)

static const char *stb_reason(void) {
    const char *r = stbi_failure_reason();
    return r ? r : "unknown error";
}

/* stb_image 2.27 (Debian's libstb) writes past its Huffman tables when a JPEG DHT table declares
 * more than 256 codes (fixed upstream in 2.28), in stbi_info as in stbi_load. Walk the JPEG's
 * marker segments as stb does (fill bytes, stuffed 0xFF00 and restart markers skipped; reads past
 * the end give 0) and refuse such a table before stb sees the file. Found by tests/fuzz/fuzz_image. */
int dinoc_jpeg_dht_ok(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n && p[i] == 0xFF) i++;
    if (i == 0 || i >= n || p[i] != 0xD8) return 1; /* stb's SOI test: FF.. D8 */
    for (i++; i + 1 < n;) {
        if (p[i] != 0xFF) { i++; continue; }
        uint8_t m = p[i + 1];
        if (m == 0xFF) { i++; continue; }
        if (m == 0x00 || m == 0x01 || m == 0xD8 || (m >= 0xD0 && m <= 0xD7)) { i += 2; continue; }
        if (m == 0xD9) return 1;
        size_t len = i + 3 < n ? (size_t)p[i + 2] << 8 | p[i + 3] : 0;
        if (m == 0xC4) {
            long   L = (long)len - 2;
            size_t q = i + 4;
            while (L > 0) {
                size_t cnt = 0;
                for (size_t k = 1; k <= 16; k++) cnt += q + k < n ? p[q + k] : 0;
                if (cnt > 256) return 0;
                L -= 17 + (long)cnt;
                q += 17 + cnt;
            }
        }
        i += 2 + (len < 2 ? 2 : len);
    }
    return 1;
}

/* stb pads a truncated binary PGM/PPM with zeros and reports success; PIL refuses it. */
/* stb_image 2.27 parses a binary PNM header's numbers into an int without an overflow check
 * (undefined behaviour for 10+ digits). Refuse such headers before stb sees them. */
int dinoc_pnm_header_ok(const uint8_t *p, size_t n) {
    if (n < 2 || p[0] != 'P' || (p[1] != '5' && p[1] != '6')) return 1;
    size_t i = 2;
    for (int field = 0; field < 3; field++) {
        for (;;) {
            while (i < n && (p[i] == ' ' || (p[i] >= '\t' && p[i] <= '\r'))) i++;
            if (i < n && p[i] == '#') {
                while (i < n && p[i] != '\n' && p[i] != '\r') i++;
                continue;
            }
            break;
        }
        size_t digits = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9') i++, digits++;
        if (digits > 9) return 0;
    }
    return 1;
}

/* stb_image grows its IDAT buffer to a chunk's declared length before reading it: a 99-byte PNG
 * whose chunk claims 1.2 GB made stb ask for 2 GiB (finding F19). Every chunk must fit in the
 * file (length, type, data, CRC), up to IEND; PIL refuses such files too ("truncated"). */
int dinoc_png_chunks_ok(const uint8_t *p, size_t n) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n < 8 || memcmp(p, sig, 8) != 0) return 1;
    for (size_t i = 8; i < n;) {
        if (n - i < 12) return 0;
        const uint64_t len = (uint64_t)p[i] << 24 | (uint64_t)p[i + 1] << 16 | (uint64_t)p[i + 2] << 8 | p[i + 3];
        if (len > n - i - 12) return 0;
        if (memcmp(p + i + 4, "IEND", 4) == 0) return 1;
        i += 12 + (size_t)len;
    }
    return 0; /* no IEND */
}

static int pnm_truncated(const uint8_t *p, size_t n, int w, int h, int comp) {
    if (n < 2 || p[0] != 'P' || (p[1] != '5' && p[1] != '6')) return 0;
    /* header: magic, width, height, maxval, each after whitespace/comments, then one byte */
    size_t i = 2;
    int    maxval = 0;
    for (int field = 0; field < 3; field++) {
        for (;;) {
            while (i < n && (p[i] == ' ' || (p[i] >= '\t' && p[i] <= '\r'))) i++;
            if (i < n && p[i] == '#') { while (i < n && p[i] != '\n' && p[i] != '\r') i++; continue; }
            break;
        }
        int v = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9' && v < 1000000) v = v * 10 + (p[i++] - '0');
        if (field == 2) maxval = v;
    }
    i++; /* the single whitespace byte */
    size_t need = (size_t)w * h * (size_t)comp * (maxval > 255 ? 2 : 1);
    return i > n || n - i < need;
}

/* libjpeg reports errors through error_exit (which must not return: longjmp back) and warnings
 * through emit_message(-1); both keep libjpeg's text for our message. */
typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf               jb;
    int                   warnings;
    char                  msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_err_exit(j_common_ptr c) {
    jpeg_err *e = (jpeg_err *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}

static void jpeg_err_emit(j_common_ptr c, int level) {
    jpeg_err *e = (jpeg_err *)c->err;
    if (level < 0 && !e->warnings++) (*c->err->format_message)(c, e->msg); /* the first warning */
}

static dinoc_status load_jpeg(dinoc_image *out, const uint8_t *buf, size_t size, const char *label) {
    struct jpeg_decompress_struct cinfo;
    jpeg_err                      je;
    uint8_t *volatile             rgb = NULL;
    memset(&je, 0, sizeof je);
    cinfo.err             = jpeg_std_error(&je.pub);
    je.pub.error_exit     = jpeg_err_exit;
    je.pub.emit_message   = jpeg_err_emit;
    if (setjmp(je.jb)) {
        jpeg_destroy_decompress(&cinfo);
        free(rgb);
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: cannot decode JPEG: %s", label, je.msg);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, buf, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    const int w = (int)cinfo.image_width, h = (int)cinfo.image_height;
    if (w <= 0 || h <= 0 || w > IMAGE_SIDE_MAX || h > IMAGE_SIDE_MAX || (int64_t)w * h > IMAGE_PIXELS_MAX) {
        jpeg_destroy_decompress(&cinfo);
        return dinoc_fail(DINOC_ERR_FORMAT,
                          "%s: image size %d x %d exceeds the limits (each side <= %d, at most %lld pixels)", label,
                          w, h, IMAGE_SIDE_MAX, (long long)IMAGE_PIXELS_MAX);
    }
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: CMYK JPEG, not supported (convert it to RGB)", label);
    }
    cinfo.out_color_space = JCS_RGB; /* grey is replicated into R, G, B, as PIL's convert("RGB") */
    jpeg_start_decompress(&cinfo);
    if (cinfo.output_components != 3 || (int)cinfo.output_width != w || (int)cinfo.output_height != h) {
        snprintf(je.msg, sizeof je.msg, "decoder gave %u x %u x %d", cinfo.output_width, cinfo.output_height,
                 cinfo.output_components);
        longjmp(je.jb, 1);
    }
    rgb = malloc((size_t)w * h * 3);
    if (!rgb) {
        snprintf(je.msg, sizeof je.msg, "out of memory for %d x %d RGB", w, h);
        longjmp(je.jb, 1);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = rgb + (size_t)cinfo.output_scanline * w * 3;
        if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) break;
        if (je.warnings) break; /* corrupt or truncated data: refused below */
    }
    if (!je.warnings) jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    if (je.warnings) {
        free(rgb);
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: corrupt JPEG data: %s", label, je.msg);
    }
    out->w = w, out->h = h, out->c = 3, out->data = rgb;
    return DINOC_OK;
}

dinoc_status dinoc_image_load_memory(dinoc_image *out, const void *buf, size_t size,
                                     const char *label) {
    if (!out) return dinoc_fail(DINOC_ERR_ARG, "dinoc_image_load_memory: out is NULL");
    memset(out, 0, sizeof *out);
    if (!label) label = "<memory>";
    if (!buf && size) return dinoc_fail(DINOC_ERR_ARG, "%s: buffer is NULL", label);
    if (size == 0) return dinoc_fail(DINOC_ERR_FORMAT, "%s: empty file, not an image", label);
    if (size > (size_t)INT32_MAX)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: %zu bytes, too large to decode", label, size);

    /* JPEG: stb takes any run of 0xFF fill bytes before the SOI marker as a JPEG, so every such
     * file goes to libjpeg (which wants FF D8 at offset 0 and refuses the rest, as PIL does) and
     * none reaches stb's JPEG decoder (finding F18) */
    const uint8_t *b8 = buf;
    size_t         ff = 0;
    while (ff < size && b8[ff] == 0xFF) ff++;
    if (ff >= 1 && ff < size && b8[ff] == 0xD8) return load_jpeg(out, b8, size, label);
    /* Read the header first so that a file claiming 100000 x 100000 is refused before stb tries
     * to allocate for it. */
    if (!dinoc_pnm_header_ok(buf, size))
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: PNM header with an out-of-range number", label);
    int w = 0, h = 0, comp = 0;
    if (!stbi_info_from_memory(buf, (int)size, &w, &h, &comp))
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: not a decodable image: %s", label, stb_reason());
    if (w <= 0 || h <= 0 || w > IMAGE_SIDE_MAX || h > IMAGE_SIDE_MAX ||
        (int64_t)w * h > IMAGE_PIXELS_MAX)
        return dinoc_fail(DINOC_ERR_FORMAT,
                          "%s: image size %d x %d exceeds the limits (each side <= %d, at most "
                          "%lld pixels)",
                          label, w, h, IMAGE_SIDE_MAX, (long long)IMAGE_PIXELS_MAX);
    if (pnm_truncated(buf, size, w, h, comp))
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: truncated PGM/PPM image (%d x %d)", label, w, h);
    /* (after the size check, which reads only the header: a huge header is named as such) */
    if (!dinoc_png_chunks_ok(buf, size))
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: truncated or corrupt PNG (a chunk runs past the end of the file)",
                          label);

    int      dw = 0, dh = 0, dc = 0;
    uint8_t *px = stbi_load_from_memory(buf, (int)size, &dw, &dh, &dc, 0);
    if (!px) return dinoc_fail(DINOC_ERR_FORMAT, "%s: cannot decode: %s", label, stb_reason());
    if (dw != w || dh != h || dc < 1 || dc > 4) {
        stbi_image_free(px);
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: decoder returned %d x %d x %d, header said %d x %d",
                          label, dw, dh, dc, w, h);
    }

    size_t   n   = (size_t)w * (size_t)h;
    uint8_t *rgb = malloc(n * 3);
    if (!rgb) {
        stbi_image_free(px);
        return dinoc_fail(DINOC_ERR_NOMEM, "%s: cannot allocate %zu bytes for %d x %d RGB", label,
                          n * 3, w, h);
    }
    /* PIL convert("RGB"): L -> (L, L, L); LA -> (L, L, L); RGB as is; RGBA -> (R, G, B). */
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = px + i * (size_t)dc;
        uint8_t       *d = rgb + i * 3;
        if (dc <= 2) {
            d[0] = d[1] = d[2] = s[0];
        } else {
            d[0] = s[0];
            d[1] = s[1];
            d[2] = s[2];
        }
    }
    stbi_image_free(px);
    out->w    = w;
    out->h    = h;
    out->c    = 3;
    out->data = rgb;
    return DINOC_OK;
}

dinoc_status dinoc_image_load(dinoc_image *out, const char *path) {
    if (!out) return dinoc_fail(DINOC_ERR_ARG, "dinoc_image_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return dinoc_fail(DINOC_ERR_ARG, "dinoc_image_load: path is NULL");
    char  *buf = NULL;
    size_t len = 0;
    dinoc_status s = dinoc_read_file(path, IMAGE_FILE_MAX, &buf, &len);
    if (s != DINOC_OK) return s;
    s = dinoc_image_load_memory(out, buf, len, path);
    free(buf);
    return s;
}

void dinoc_image_free(dinoc_image *img) {
    if (!img) return;
    free(img->data);
    memset(img, 0, sizeof *img);
}
