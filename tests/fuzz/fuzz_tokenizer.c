/* fuzz_tokenizer.c: libFuzzer target for the CLIP BPE tokenizer (src/text/bpe.c, unicode.c).
 *
 * At start-up it loads the shipped vocabulary, data/bpe_simple_vocab_16e6.txt.gz (relative to the
 * repository root, where scripts/fuzz.sh runs). Each input is then either
 *   - a vocabulary (inputs starting with "#version"): written to a per-process temp file and loaded
 *     (the merges-file parser); a vocabulary that loads must tokenize and decode its own bytes; or
 *   - a text: tokenized (invalid UTF-8 must give DINOC_ERR_ARG with a message, nothing else may
 *     fail), every id must lie in the vocabulary, clip.tokenize with truncation must frame the
 *     same ids with <|startoftext|> / <|endoftext|> and zero padding, and the ids must decode.
 *
 * Build and run: scripts/fuzz.sh 60 fuzz_tokenizer. */
#include "dinoc.h"
#include "../../src/text/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static dinoc_tokenizer *g_tok;
static char             g_vocab_tmp[64];

static void cleanup(void) {
    dinoc_tokenizer_free(g_tok);
    unlink(g_vocab_tmp);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    if (dinoc_tokenizer_load(&g_tok, "data/" DINOC_TOKENIZER_VOCAB) != DINOC_OK) {
        fprintf(stderr, "fuzz_tokenizer: %s (run from the repository root)\n", dinoc_last_error());
        abort();
    }
    snprintf(g_vocab_tmp, sizeof g_vocab_tmp, "/tmp/dinoc-fuzz-vocab-%d.txt", (int)getpid());
    atexit(cleanup);
    return 0;
}

/* Tokenizes text with t and checks the invariants above. */
static void check_text(const dinoc_tokenizer *t, const char *text, size_t len) {
    static int32_t ids[8192], clip[DINOC_CLIP_CONTEXT];
    int            n = -1;
    dinoc_status   s = dinoc_tokenize(t, text, len, ids, 8192, &n);
    if (s != DINOC_OK) {
        if (s != DINOC_ERR_ARG || !strstr(dinoc_last_error(), "invalid UTF-8") || n != 0) abort();
        return;
    }
    int V = dinoc_tokenizer_vocab_size(t), shown = n < 8192 ? n : 8192;
    for (int i = 0; i < shown; i++)
        if (ids[i] < 0 || ids[i] >= V) abort();
    /* at most one id per byte of the lower-cased text, which grows only by U+0130 (2 bytes) ->
     * "i" U+0307 (3 bytes) */
    if ((size_t)n > 2 * len) abort();
    char *z = malloc(len + 1); /* tokenize_clip takes a C string: stop at the first NUL */
    if (!z) abort();
    memcpy(z, text, len);
    z[len] = 0;
    if (strlen(z) == len) {
        int k = 0;
        if (dinoc_tokenize_clip(t, z, clip, DINOC_CLIP_CONTEXT, 1, &k) != DINOC_OK) abort();
        int want = n + 2 < DINOC_CLIP_CONTEXT ? n + 2 : DINOC_CLIP_CONTEXT;
        if (k != want || clip[0] != dinoc_tokenizer_sot(t) || clip[k - 1] != dinoc_tokenizer_eot(t)) abort();
        for (int i = 1; i < k - 1; i++)
            if (clip[i] != ids[i - 1]) abort();
        for (int i = k; i < DINOC_CLIP_CONTEXT; i++)
            if (clip[i] != 0) abort();
    }
    free(z);
    size_t dl = 0;
    if (dinoc_detokenize(t, ids, shown, NULL, 0, &dl) != DINOC_OK) abort();
    char *out = malloc(dl + 1);
    size_t dl2 = 0;
    if (!out || dinoc_detokenize(t, ids, shown, out, dl + 1, &dl2) != DINOC_OK || dl2 != dl ||
        strlen(out) > dl)
        abort();
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size >= 8 && memcmp(data, "#version", 8) == 0) {
        FILE *f = fopen(g_vocab_tmp, "wb");
        if (!f) abort();
        if (fwrite(data, 1, size, f) != size) abort();
        fclose(f);
        dinoc_tokenizer *t = NULL;
        if (dinoc_tokenizer_load(&t, g_vocab_tmp) != DINOC_OK) {
            if (t || !dinoc_last_error()[0]) abort();
            return 0;
        }
        check_text(t, (const char *)data, size);
        dinoc_tokenizer_free(t);
        return 0;
    }
    check_text(g_tok, (const char *)data, size);
    return 0;
}
