/* fuzz_textfiles.c: libFuzzer target for the small text formats users hand to the CLIP and MLM
 * commands: class-name lists and prompt-template files (src/eval/templates.c: dinoc_lines_load,
 * dinoc_templates_load, dinoc_template_format), two-column TSVs (labels.tsv, pairs.tsv:
 * dinoc_tsv_load), comma lists (dinoc_split_list) and the MLM text corpus
 * (src/data/textdata.c: dinoc_text_corpus_from_text, with the shipped CLIP BPE vocabulary loaded at
 * start-up from data/, where scripts/fuzz.sh runs).
 * Byte 0 picks the parser (mod 5); the rest is the file. File-based readers read a per-process temp
 * file. Whatever parses must hold what its contract says (non-empty lists, one "{}" per template,
 * equal TSV columns); whatever fails must fail with a message.
 *
 * Build and run: scripts/fuzz.sh 60 fuzz_textfiles. */
#include "dinoc.h"
#include "../../src/data/textdata.h"
#include "../../src/eval/clip_eval.h"
#include "../../src/text/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static dinoc_tokenizer *g_tok;
static char             g_file[64];

static void cleanup(void) {
    dinoc_tokenizer_free(g_tok);
    unlink(g_file);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    if (dinoc_tokenizer_load(&g_tok, "data/" DINOC_TOKENIZER_VOCAB) != DINOC_OK) {
        fprintf(stderr, "fuzz_textfiles: %s (run from the repository root)\n", dinoc_last_error());
        abort();
    }
    snprintf(g_file, sizeof g_file, "/tmp/dinoc-fuzz-text-%d.txt", (int)getpid());
    atexit(cleanup);
    return 0;
}

static void write_file(const uint8_t *p, size_t n) {
    FILE *f = fopen(g_file, "wb");
    if (!f || fwrite(p, 1, n, f) != n) abort();
    fclose(f);
}

static void failed_with_message(void) {
    if (!dinoc_last_error()[0]) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int      kind = data[0] % 5;
    const uint8_t *p    = data + 1;
    const size_t   n    = size - 1;
    dinoc_strlist  a = {0}, b = {0};
    dinoc_status   s;
    switch (kind) {
    case 0: /* class names */
        write_file(p, n);
        if ((s = dinoc_lines_load(&a, g_file, "class names"))) failed_with_message();
        else if (a.n < 1) abort();
        break;
    case 1: /* templates, then each formatted with a name */
        write_file(p, n);
        if ((s = dinoc_templates_load(&a, g_file))) {
            failed_with_message();
            break;
        }
        for (int64_t i = 0; i < a.n; i++) {
            char *t = NULL;
            if (dinoc_template_format(&t, a.s[i], "red circle") != DINOC_OK || !t || !strstr(t, "red circle")) abort();
            free(t);
        }
        break;
    case 2: /* labels.tsv / pairs.tsv */
        write_file(p, n);
        if ((s = dinoc_tsv_load(&a, &b, g_file, n & 1, 2 + ((n >> 1) & 1)))) failed_with_message();
        else if (a.n != b.n) abort();
        break;
    case 3: { /* a comma list (a C string: up to the first 0 byte) */
        char *z = malloc(n + 1);
        if (!z) abort();
        memcpy(z, p, n), z[n] = 0;
        if ((s = dinoc_split_list(&a, z))) failed_with_message();
        else
            for (int64_t i = 0; i < a.n; i++)
                if (!a.s[i][0]) abort();
        free(z);
        break;
    }
    default: { /* the MLM corpus */
        dinoc_text_corpus *c = NULL;
        if ((s = dinoc_text_corpus_from_text(&c, g_tok, (const char *)p, n))) {
            failed_with_message();
            if (c) abort();
        }
        dinoc_text_corpus_free(c);
        break;
    }
    }
    dinoc_strlist_free(&a), dinoc_strlist_free(&b);
    return 0;
}
