/* fuzz_clip_index.c: libFuzzer target for the retrieval index file (src/eval/retrieval.c,
 * `dinoc retrieve index` writes it, `dinoc retrieve query` / `eval retrieval --index` read it): a
 * safetensors file with embeddings, pairs and JSON name lists in its metadata. Each input is
 * written to a per-process temp file and loaded; an index that loads must be self-consistent
 * (pair indices in range, name lists as long as the embedding rows, unit-norm rows) and pass
 * dinoc_clip_index_check against its own probe; one that does not load must leave a message.
 *
 * Build and run: scripts/fuzz.sh 60 fuzz_clip_index. */
#include "dinoc.h"
#include "../../src/eval/clip_eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char g_file[64];

static void cleanup(void) { unlink(g_file); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    snprintf(g_file, sizeof g_file, "/tmp/dinoc-fuzz-index-%d.safetensors", (int)getpid());
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(g_file, "wb");
    if (!f || fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    dinoc_clip_index ix;
    if (dinoc_clip_index_load(&ix, g_file) != DINOC_OK) {
        if (!dinoc_last_error()[0]) abort();
        return 0;
    }
    if (ix.dim < 1 || ix.n_images < 0 || ix.paths.n != ix.n_images || ix.captions.n != ix.n_texts) abort();
    for (int64_t q = 0; q < ix.n_pairs; q++) {
        const int32_t i = ix.pairs[2 * q], t = ix.pairs[2 * q + 1];
        if (i < 0 || i >= ix.n_images || t < 0 || t >= ix.n_texts) abort();
    }
    for (int64_t i = 0; i < ix.n_images * ix.dim; i++)
        if (!isfinite(ix.image_embeds[i])) abort();
    if (ix.probe && dinoc_clip_index_check(&ix, g_file, ix.dim, ix.probe) != DINOC_OK) {
        /* its own probe matches unless the probe is zero (cosine undefined): that must be a message */
        if (!dinoc_last_error()[0]) abort();
    }
    dinoc_clip_index_free(&ix);
    return 0;
}
