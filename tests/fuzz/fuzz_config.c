/* fuzz_config.c: libFuzzer target for config.json parsing and model loading (src/nn/vit_io.c).
 *
 * There is no entry point that parses config text from memory, so the harness works on files: at
 * start-up it writes two tiny valid model folders into a per-process /tmp/dinoc-fuzz-XXXXXX (a
 * DINOv2 one and a DINO v1 "vit" one: D 8, depth 1, 2 heads, patch 2, image 4, random weights,
 * no preprocessor_config.json). Each input becomes the config.json of one of them (the vit folder
 * if the input mentions "vit", else the dinov2 one) and dinoc_model_load runs on the folder,
 * strict for even-length inputs and lenient for odd ones. A config that loads is run through one
 * forward pass at the native size and at a 1 x 1 patch grid (position-embedding interpolation).
 *
 * Findings F1 (allocation before the weights were checked) and F3 (int overflow of
 * hidden_size x mlp_ratio) are fixed in the library, so every input is fuzzed: a config that asks
 * for more than the tiny weights hold must be refused before anything is allocated.
 *
 * Build and run: scripts/fuzz.sh 60 fuzz_config. */
#include "dinoc.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static char g_root[64], g_dir[2][96], g_cfg[2][128];

static void cleanup(void) {
    static const char *names[] = {"config.json", "model.safetensors", "preprocessor_config.json"};
    char p[192];
    for (int d = 0; d < 2; d++) {
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            snprintf(p, sizeof p, "%s/%s", g_dir[d], names[i]);
            unlink(p);
        }
        rmdir(g_dir[d]);
    }
    rmdir(g_root);
}

static void make_model(int which) {
    dinoc_vit_config c;
    if (dinoc_vit_preset(&c, which ? "dino-vits16" : "vits14") != DINOC_OK) abort();
    c.dim = 8, c.depth = 1, c.heads = 2, c.ffn_hidden = 16, c.patch = 2, c.image_size = 4;
    dinoc_model *m = NULL;
    if (dinoc_model_init_random(&m, &c, 1) != DINOC_OK ||
        dinoc_model_save_hf(m, g_dir[which]) != DINOC_OK) {
        fprintf(stderr, "fuzz_config: %s\n", dinoc_last_error());
        abort();
    }
    dinoc_model_free(m);
    char p[192];
    snprintf(p, sizeof p, "%s/preprocessor_config.json", g_dir[which]);
    unlink(p);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    strcpy(g_root, "/tmp/dinoc-fuzz-XXXXXX");
    if (!mkdtemp(g_root)) abort();
    atexit(cleanup);
    for (int d = 0; d < 2; d++) {
        snprintf(g_dir[d], sizeof g_dir[d], "%s/%s", g_root, d ? "vit" : "dinov2");
        snprintf(g_cfg[d], sizeof g_cfg[d], "%s/config.json", g_dir[d]);
        make_model(d);
    }
    return 0;
}

static void run_forward(const dinoc_model *m, int H, int W) {
    const dinoc_vit_config *c = dinoc_model_config(m);
    dinoc_state *s = NULL;
    if (dinoc_state_init(&s, m, 1, H, W, DINOC_STATE_ATTN | DINOC_STATE_HIDDEN) != DINOC_OK) abort();
    size_t n = (size_t)c->channels * H * W;
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)((int)(i % 7) - 3) * 0.25f;
    if (dinoc_forward(m, s, x, NULL) != DINOC_OK) abort();
    int B, T, D, gh, gw;
    dinoc_state_dims(s, &B, &T, &D, &gh, &gw);
    const float *o = dinoc_state_output(s);
    for (int i = 0; i < T * D; i++)
        if (!isfinite(o[i])) abort(); /* finite weights and inputs give finite tokens */
    free(x);
    dinoc_state_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int which = memmem(data, size, "\"vit\"", 5) != NULL;
    FILE *f = fopen(g_cfg[which], "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    dinoc_load_params lp = dinoc_load_default_params();
    lp.strict_config = !(size & 1);
    dinoc_model *m = NULL;
    if (dinoc_model_load(&m, g_dir[which], &lp) != DINOC_OK) {
        if (m || !dinoc_last_error()[0]) abort();
        return 0;
    }
    const dinoc_vit_config *c = dinoc_model_config(m);
    if (c->dim != 8 || c->depth != 1 || c->patch != 2) abort(); /* the weights fixed these */
    run_forward(m, c->image_size, c->image_size);
    run_forward(m, c->patch, c->patch);
    dinoc_model_free(m);
    return 0;
}
