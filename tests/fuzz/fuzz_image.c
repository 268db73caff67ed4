/* fuzz_image.c: libFuzzer target for image decoding (dinoc_image_load_memory, src/io/image.c, on
 * stb_image) and the preprocessing pipeline (dinoc_preprocess_image, src/io/preprocess.c and
 * resize.c).
 *
 * A decoded image goes through the DINOv2 default pipeline (shorter side 256 bicubic, crop 224)
 * and two small ones (shorter side 9 bilinear + crop 8 x 6; exact 5 x 3 lanczos, no crop).
 * Inputs whose header claims more than FUZZ_MAX_PIXELS pixels are skipped so each run stays
 * fast: the library accepts up to 2^28 pixels, and decoding that much is slow, not wrong (the
 * size limits themselves are tested in tests/test_bad_inputs.c).
 *
 * stb_image's implementation is compiled into this harness from Debian's header (the same source
 * libstb.so is built from), so that libFuzzer sees coverage inside the decoders and ASan/UBSan
 * check them; the library's stbi_* calls bind to these instrumented copies. Define
 * FUZZ_SYSTEM_STB to fuzz against the uninstrumented libstb.so instead.
 *
 * Build and run: scripts/fuzz.sh 60 fuzz_image. */
#include "dinoc.h"
#include "../../src/internal.h"

#include <math.h>
#ifndef FUZZ_SYSTEM_STB
#define STB_IMAGE_IMPLEMENTATION
#endif
#include <stb/stb_image.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_PIXELS (1 << 20)

/* Findings F2 and F8 (docs/hardening.md): stb_image 2.27 overflows on some JPEG Huffman tables
 * and long PNM header numbers. The library refuses those before stb sees them; this harness calls
 * stbi_info itself first (to cap each run's pixel count), so it runs the library's own checks. */

static void run(const dinoc_preprocess *pp, const dinoc_image *img) {
    int ow, oh;
    dinoc_preprocess_size(pp, img->w, img->h, &ow, &oh);
    if (ow <= 0 || oh <= 0) abort();
    if ((long long)ow * oh > FUZZ_MAX_PIXELS) return;
    float *out = malloc(sizeof(float) * 3 * (size_t)ow * oh);
    if (!out) abort();
    dinoc_status s = dinoc_preprocess_image(pp, img, out, ow, oh);
    if (s != DINOC_OK) {
        /* Finding F7: resize.c refuses resize targets above 2^20 per side, so a 1 x 32443 image
         * under "shorter side 256" fails (PIL would resize it). Accept only that refusal. */
        double lo = img->w < img->h ? img->w : img->h, hi = img->w < img->h ? img->h : img->w;
        if (!(s == DINOC_ERR_ARG && pp->resize_mode == DINOC_RESIZE_SHORTEST_EDGE &&
              hi / lo * pp->shortest_edge > (1 << 20)))
            abort();
        free(out);
        return;
    }
    for (size_t i = 0; i < 3 * (size_t)ow * oh; i++)
        if (!isfinite(out[i])) abort();
    free(out);
}

/* Finding F8: stb_image 2.27's PNM header parser (stbi__pnm_getinteger) overflows a signed int on
 * a number of 10+ digits (UB; fixed upstream in 2.28). Proposed check for image.c, before any
 * stbi_* call: in a "P5"/"P6" file, refuse a width, height or maxval of more than 9 digits (the
 * header is magic, then three numbers separated by whitespace and '#' comments). */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
#ifndef FUZZ_NO_KNOWN_ISSUES
    if (!dinoc_jpeg_dht_ok(data, size)) return 0; /* before any stbi_* call: stbi_info overflows too */
    if (!dinoc_pnm_header_ok(data, size)) return 0;
#endif
    int w, h, c;
    if (size <= (size_t)0x7fffffff && stbi_info_from_memory(data, (int)size, &w, &h, &c) &&
        (long long)w * h > FUZZ_MAX_PIXELS)
        return 0;
    dinoc_image img;
    if (dinoc_image_load_memory(&img, data, size, "fuzz.img") != DINOC_OK) {
        if (img.data || !dinoc_last_error()[0]) abort();
        return 0;
    }
    if (img.c != 3 || img.w <= 0 || img.h <= 0 || img.w > 65535 || img.h > 65535 || !img.data) abort();
    dinoc_preprocess pp = dinoc_preprocess_default();
    run(&pp, &img);
    pp.shortest_edge = 9;
    pp.resample      = DINOC_RESAMPLE_BILINEAR;
    pp.crop_w = 8, pp.crop_h = 6;
    run(&pp, &img);
    pp.resize_mode    = DINOC_RESIZE_EXACT;
    pp.resize_w       = 5, pp.resize_h = 3;
    pp.resample       = DINOC_RESAMPLE_LANCZOS;
    pp.do_center_crop = 0;
    run(&pp, &img);
    dinoc_image_free(&img);
    return 0;
}
