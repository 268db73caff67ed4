/* fuzz_weights_index.c: libFuzzer target for sharded checkpoints (src/io/weights.c).
 *
 * At start-up a per-process folder /tmp/dinoc-fuzz-XXXXXX gets two small valid shards,
 * model-00001-of-00002.safetensors (tensors "a.weight", "a.bias") and
 * model-00002-of-00002.safetensors ("b.weight"). Each input is written as
 * model.safetensors.index.json in that folder and opened with dinoc_weights_open on the folder;
 * on success every tensor is looked up by name and by file. Shard names the index may use are
 * restricted to plain names beside the index, so the fuzzer cannot reach other files.
 *
 * Build and run: scripts/fuzz.sh 60 fuzz_weights_index. */
#include "dinoc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[64];
static char g_index[128];

static void cleanup(void) {
    static const char *names[] = {"model-00001-of-00002.safetensors",
                                  "model-00002-of-00002.safetensors",
                                  "model.safetensors.index.json"};
    char p[192];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, names[i]);
        unlink(p);
    }
    rmdir(g_dir);
}

static void write_shard(const char *name, const dinoc_tensor *t, int n) {
    char p[192];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    if (dinoc_safetensors_write(p, t, n, NULL) != DINOC_OK) {
        fprintf(stderr, "fuzz_weights_index: %s\n", dinoc_last_error());
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    strcpy(g_dir, "/tmp/dinoc-fuzz-XXXXXX");
    if (!mkdtemp(g_dir)) abort();
    atexit(cleanup);
    snprintf(g_index, sizeof g_index, "%s/model.safetensors.index.json", g_dir);
    static const float w[6] = {1, 2, 3, 4, 5, 6}, b[2] = {7, 8}, v[3] = {9, 10, 11};
    dinoc_tensor s1[2] = {
        {.name = "a.weight", .dtype = DINOC_DTYPE_F32, .ndim = 2, .shape = {2, 3}, .nbytes = 24, .data = w},
        {.name = "a.bias", .dtype = DINOC_DTYPE_F32, .ndim = 1, .shape = {2}, .nbytes = 8, .data = b},
    };
    dinoc_tensor s2[1] = {
        {.name = "b.weight", .dtype = DINOC_DTYPE_F32, .ndim = 1, .shape = {3}, .nbytes = 12, .data = v},
    };
    write_shard("model-00001-of-00002.safetensors", s1, 2);
    write_shard("model-00002-of-00002.safetensors", s2, 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(g_index, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    dinoc_weights *w = NULL;
    if (dinoc_weights_open(&w, g_dir) != DINOC_OK) {
        if (w || !dinoc_last_error()[0]) abort();
        return 0;
    }
    int n = dinoc_weights_count(w);
    for (int i = 0; i < n; i++) {
        const dinoc_tensor *t = dinoc_weights_get(w, i);
        if (!t || dinoc_weights_find(w, t->name) != t) abort();
        const char *file = dinoc_weights_file_of(w, t);
        if (!file || strncmp(file, g_dir, strlen(g_dir)) != 0) abort(); /* never outside the folder */
    }
    (void)dinoc_weights_find(w, "missing");
    dinoc_weights_close(w);
    return 0;
}
