/* fuzz_idx.c: libFuzzer target for the IDX (MNIST / Fashion-MNIST) reader, src/data/idx.c.
 *
 * dinoc_dataset_idx_open reads a folder, so the harness works on files: at start-up it makes a
 * per-process /tmp/dinoc-fuzz-XXXXXX, and each input becomes the image and label files of one split
 * there. Input layout:
 *   byte 0      bits 0-1: how the images file is written, bits 2-3: the labels file:
 *                 0 plain (name without .gz), 1 gzip-compressed by the harness (name .gz),
 *                 2 the bytes as they are under the .gz name (corrupt / hand-made gzip streams; zlib
 *                   passes non-gzip data through), 3 gzip at level 0 (stored blocks);
 *               bit 4: the train split (train-*), else the test split (t10k-*)
 *   bytes 1-2   little-endian length of the images file's bytes (cut to what is there)
 *   then        the images file's bytes, then the labels file's bytes
 * A set that opens is checked: sizes and labels in range, a few items decoded (first, last, some
 * in between) with the expected shape, and out-of-range indices refused with DINOC_ERR_ARG. A set
 * that does not open must leave no dataset and a message. The reader never allocates more than the
 * data present (+1 MiB), so no size filter is needed: a gzip bomb of the 4 KB input cap inflates
 * to at most ~4 MB.
 *
 * Build and run: scripts/fuzz.sh 60 fuzz_idx (needs -lz in scripts/fuzz.sh's LIBS). */
#include "dinoc.h"
#include "../../src/data/data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static char g_root[64];
static const char *const k_names[] = {
    "train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte",
    "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz",
};
#define NNAMES (sizeof k_names / sizeof k_names[0])

static void remove_all(void) {
    char p[160];
    for (size_t i = 0; i < NNAMES; i++) {
        snprintf(p, sizeof p, "%s/%s", g_root, k_names[i]);
        unlink(p);
    }
}

static void cleanup(void) {
    remove_all();
    rmdir(g_root);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    strcpy(g_root, "/tmp/dinoc-fuzz-XXXXXX");
    if (!mkdtemp(g_root)) abort();
    atexit(cleanup);
    return 0;
}

/* Writes one file of the split in the given mode. */
static void put(const char *split, const char *kind, int mode, const uint8_t *data, size_t n) {
    char p[160];
    snprintf(p, sizeof p, "%s/%s-%s%s", g_root, split, kind, mode ? ".gz" : "");
    if (mode == 1 || mode == 3) {
        gzFile gz = gzopen(p, mode == 1 ? "wb6" : "wb0");
        if (!gz) abort();
        if (n && gzwrite(gz, data, (unsigned)n) != (int)n) abort();
        if (gzclose(gz) != Z_OK) abort();
        return;
    }
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    if (n && fwrite(data, 1, n, f) != n) abort();
    if (fclose(f) != 0) abort();
}

static void check_item(const dinoc_dataset *ds, int64_t i) {
    dinoc_image img = {0, 0, 0, NULL};
    int32_t     y   = -2;
    if (dinoc_dataset_get(ds, i, &img, &y) != DINOC_OK) abort(); /* the data was validated at open */
    if (img.c != 1 || img.w < 1 || img.w > 4096 || img.h < 1 || img.h > 4096 || !img.data) abort();
    if (y < 0 || y >= dinoc_dataset_num_classes(ds)) abort();
    volatile unsigned sum = 0; /* reads every pixel (ASan checks the bounds) */
    for (size_t k = 0; k < (size_t)img.w * img.h; k++) sum += img.data[k];
    (void)sum;
    dinoc_image_free(&img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    const int   imode = data[0] & 3, lmode = (data[0] >> 2) & 3, train = (data[0] >> 4) & 1;
    size_t      ilen  = (size_t)data[1] | (size_t)data[2] << 8;
    const uint8_t *rest = data + 3;
    size_t      nrest = size - 3;
    if (ilen > nrest) ilen = nrest;
    const char *split = train ? "train" : "t10k";
    remove_all();
    put(split, "images-idx3-ubyte", imode, rest, ilen);
    put(split, "labels-idx1-ubyte", lmode, rest + ilen, nrest - ilen);

    dinoc_dataset *ds = NULL;
    if (dinoc_dataset_idx_open(&ds, g_root, train) != DINOC_OK) {
        if (ds || !dinoc_last_error()[0]) abort();
        return 0;
    }
    int64_t n = dinoc_dataset_size(ds);
    if (n < 1 || (size_t)n > size) abort(); /* every item has at least a pixel and a label byte */
    if (dinoc_dataset_num_classes(ds) != 10) abort();
    for (int k = 0; k < 10; k++)
        if (!dinoc_dataset_class_name(ds, k)) abort();
    check_item(ds, 0);
    check_item(ds, n - 1);
    for (int64_t i = 1; i < n - 1 && i < 6; i++) check_item(ds, (i * 7919) % n);
    dinoc_image img;
    if (dinoc_dataset_get(ds, n, &img, NULL) != DINOC_ERR_ARG) abort();
    if (dinoc_dataset_get(ds, -1, &img, NULL) != DINOC_ERR_ARG) abort();
    dinoc_dataset_free(ds);
    return 0;
}
