/* fuzz_preprocess_config.c: libFuzzer target for preprocessor_config.json parsing
 * (dinoc_preprocess_load in src/io/preprocess.c).
 *
 * Each input is written to a per-process temp file and loaded over the DINOv2 defaults. A config
 * that loads has its output size computed for extreme input shapes (1 x 65535 ...; pure
 * arithmetic) and, when the output is small, is run on a 7 x 5 RGB and a 3 x 9 grey image.
 *
 * Build and run: scripts/fuzz.sh 60 fuzz_preprocess_config. */
#include "dinoc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[64], g_path[128];

static void cleanup(void) {
    unlink(g_path);
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    strcpy(g_dir, "/tmp/dinoc-fuzz-XXXXXX");
    if (!mkdtemp(g_dir)) abort();
    snprintf(g_path, sizeof g_path, "%s/preprocessor_config.json", g_dir);
    atexit(cleanup);
    return 0;
}

static void run_image(const dinoc_preprocess *pp, int w, int h, int c) {
    int ow, oh;
    dinoc_preprocess_size(pp, w, h, &ow, &oh);
    if (ow <= 0 || oh <= 0 || (long long)ow * oh > 64 * 64) return; /* keep each run fast */
    /* the resize itself must stay small too: its cost grows with the resized width/height */
    if (pp->do_resize && !pp->do_center_crop) return; /* ow x oh is the resized size: covered */
    dinoc_image img = {w, h, c, malloc((size_t)w * h * c)};
    for (int i = 0; i < w * h * c; i++) img.data[i] = (uint8_t)(i * 37 + 11);
    float *out = malloc(sizeof(float) * 3 * (size_t)ow * oh);
    dinoc_status s = dinoc_preprocess_image(pp, &img, out, ow, oh);
    if (s == DINOC_OK)
        for (int i = 0; i < 3 * ow * oh; i++)
            if (isnan(out[i])) abort(); /* finite mean and std > 0: no NaN */
    /* a wrong output size is refused */
    if (dinoc_preprocess_image(pp, &img, out, ow + 1, oh) == DINOC_OK) abort();
    free(out);
    free(img.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(g_path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    dinoc_preprocess pp = dinoc_preprocess_default(), before = pp;
    if (dinoc_preprocess_load(&pp, g_path) != DINOC_OK) {
        if (memcmp(&pp, &before, sizeof pp) != 0) abort(); /* untouched on failure */
        if (!dinoc_last_error()[0]) abort();
        return 0;
    }
    static const int shapes[][2] = {{1, 1}, {1, 65535}, {65535, 1}, {2, 65535}, {65535, 65535}, {7, 5}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int ow, oh;
        dinoc_preprocess_size(&pp, shapes[i][0], shapes[i][1], &ow, &oh);
        if (ow < 0 || oh < 0) abort();
    }
    run_image(&pp, 7, 5, 3);
    run_image(&pp, 3, 9, 1);
    return 0;
}
