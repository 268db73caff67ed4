/* fuzz_model_config.c: libFuzzer target for the config.json of the text towers and the ResNet
 * (src/nn/text_io.c: HF CLIPTextModel and BertModel configs, read by dinoc_text_model_load and,
 * through it, by the CLIP loader's text_config; src/nn/resnet_io.c: dinoc_resnet_load).
 *
 * As fuzz_config.c does for the ViT: at start-up three tiny valid folders are written into a
 * per-process /tmp/dinoc-fuzz-XXXXXX (a CLIP text tower and a BERT, width 8, one layer, a 64-token
 * vocabulary; a resnet_small). Byte 0 of an input picks the folder (mod 3), the rest becomes its
 * config.json, and the loader runs on it. A config asking for tensors the small weights do not
 * hold must be refused (naming the file or tensor) before anything large is allocated; a model
 * that loads is freed. The library must never crash, leak or hang on any of them.
 *
 * Seeds: DINOC_FUZZ_DUMP_SEEDS=DIR makes start-up write the three valid configs there (each with
 * its selector byte), which is how tests/fuzz/corpus/fuzz_model_config/ was made.
 *
 * Build and run: scripts/fuzz.sh 60 fuzz_model_config. */
#include "dinoc.h"
#include "../../src/nn/resnet.h"
#include "../../src/nn/text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_root[64], g_dir[3][96];

static void cleanup(void) {
    static const char *names[] = {"config.json", "model.safetensors", "preprocessor_config.json"};
    char               p[192];
    for (int d = 0; d < 3; d++) {
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            snprintf(p, sizeof p, "%s/%s", g_dir[d], names[i]);
            unlink(p);
        }
        rmdir(g_dir[d]);
    }
    rmdir(g_root);
}

static void text_folder(const char *dir, int bert) {
    dinoc_text_config c;
    memset(&c, 0, sizeof c);
    c.kind = bert ? DINOC_TEXT_BERT : DINOC_TEXT_CLIP, c.vocab = 64, c.max_pos = 8, c.dim = 8, c.layers = 1;
    c.heads = 2, c.ffn = 16, c.act = bert ? DINOC_TEXT_GELU : DINOC_TEXT_QUICK_GELU;
    c.ln_eps = bert ? 1e-12f : 1e-5f, c.proj_dim = bert ? 0 : 4, c.type_vocab = bert ? 2 : 0;
    c.pad_id = bert ? 0 : 1, c.eot_id = bert ? -1 : 63;
    dinoc_text_model *m = NULL;
    if (dinoc_text_init_random(&m, &c, 1) != DINOC_OK || dinoc_text_model_save(m, dir) != DINOC_OK) {
        fprintf(stderr, "fuzz_model_config: %s\n", dinoc_last_error());
        abort();
    }
    dinoc_text_free(m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    snprintf(g_root, sizeof g_root, "/tmp/dinoc-fuzz-XXXXXX");
    if (!mkdtemp(g_root)) abort();
    static const char *sub[3] = {"clip_text", "bert", "resnet"};
    for (int d = 0; d < 3; d++) snprintf(g_dir[d], sizeof g_dir[d], "%s/%s", g_root, sub[d]);
    atexit(cleanup);
    text_folder(g_dir[0], 0);
    text_folder(g_dir[1], 1);
    dinoc_resnet_config rc;
    dinoc_resnet        *r = NULL;
    if (dinoc_resnet_preset(&rc, "resnet_small") != DINOC_OK || dinoc_resnet_init_random(&r, &rc, 1) != DINOC_OK ||
        dinoc_resnet_save(r, g_dir[2]) != DINOC_OK) {
        fprintf(stderr, "fuzz_model_config: %s\n", dinoc_last_error());
        abort();
    }
    dinoc_resnet_free(r);
    const char *dump = getenv("DINOC_FUZZ_DUMP_SEEDS");
    for (int d = 0; dump && d < 3; d++) {
        char  p[192], q[256], buf[8192];
        snprintf(p, sizeof p, "%s/config.json", g_dir[d]);
        snprintf(q, sizeof q, "%s/valid_%s", dump, sub[d]);
        FILE *in = fopen(p, "rb"), *out = fopen(q, "wb");
        if (!in || !out) abort();
        size_t n = fread(buf, 1, sizeof buf, in);
        fputc(d, out), fwrite(buf, 1, n, out);
        fclose(in), fclose(out);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int d = data[0] % 3;
    char      p[192];
    snprintf(p, sizeof p, "%s/config.json", g_dir[d]);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(data + 1, 1, size - 1, f) != size - 1) abort();
    fclose(f);
    dinoc_status s;
    if (d < 2) {
        dinoc_text_model *m = NULL;
        if ((s = dinoc_text_model_load(&m, g_dir[d]))) {
            if (m || !dinoc_last_error()[0]) abort();
        }
        dinoc_text_free(m);
    } else {
        dinoc_resnet *m = NULL;
        if ((s = dinoc_resnet_load(&m, g_dir[d]))) {
            if (m || !dinoc_last_error()[0]) abort();
        }
        dinoc_resnet_free(m);
    }
    return 0;
}
