/* cmd_tokenize.c: `dinoc tokenize [options] TEXT...` (or `-`: one text per line of stdin).
 *
 * Prints one line per text: the ids clip.tokenize gives (<|startoftext|> ... <|endoftext|>; with
 * --pad zero-padded to --context), or with --raw the bare BPE ids; --tokens prints the vocabulary
 * spellings instead of ids; --json prints one JSON object per line ({"text", "ids", "n"}).
 * A text longer than --context is an error (exit 1) unless --truncate (last id <|endoftext|>, as
 * OpenAI's truncate=True). --decode turns ids (positional, or per line of stdin) back into text.
 * The vocabulary: --vocab, else $DINOC_VOCAB, else data/ beside the build folder, else ./data/
 * (dinoc_tokenizer_find_vocab). Exit codes 0 ok, 1 runtime error, 2 usage error.
 * Tested by tests/cli_tokenize_test.sh. */
#include "cli.h"
#include "../src/text/tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int context, pad, truncate, json, raw, tokens;
} tok_opts;

/* Prints one text's ids (or spellings) as a line of stdout; 1 on a library error. */
static int print_text(const dinoc_tokenizer *t, const tok_opts *o, const char *text, int32_t **buf,
                      int *cap) {
    size_t len = strlen(text);
    int    n = 0, shown;
    dinoc_status s;
    if (o->raw) {
        s = dinoc_tokenize(t, text, len, *buf, *cap, &n);
        if (s == DINOC_OK && n > *cap) { /* grow and run again */
            int32_t *nb = realloc(*buf, sizeof(int32_t) * (size_t)n);
            if (!nb) return cli_fail("tokenize", DINOC_ERR_NOMEM);
            *buf = nb, *cap = n;
            s = dinoc_tokenize(t, text, len, *buf, *cap, &n);
        }
    } else {
        s = dinoc_tokenize_clip(t, text, *buf, o->context, o->truncate, &n);
    }
    if (s != DINOC_OK) return cli_fail("tokenize", s);
    shown = o->pad ? o->context : n;
    if (o->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "text", text);
        cJSON *ids = cJSON_AddArrayToObject(j, "ids");
        for (int i = 0; i < shown; i++)
            cJSON_AddItemToArray(ids, o->tokens ? cJSON_CreateString(dinoc_tokenizer_token_str(t, (*buf)[i]))
                                                : cJSON_CreateNumber((*buf)[i]));
        cJSON_AddNumberToObject(j, "n", n);
        char *str = cJSON_PrintUnformatted(j);
        printf("%s\n", str ? str : "{}");
        free(str);
        cJSON_Delete(j);
        return 0;
    }
    for (int i = 0; i < shown; i++) {
        if (o->tokens) printf("%s%s", i ? " " : "", dinoc_tokenizer_token_str(t, (*buf)[i]));
        else printf("%s%d", i ? " " : "", (int)(*buf)[i]);
    }
    printf("\n");
    return 0;
}

/* Decodes whitespace-separated ids in `line`; prints the text (1 on error). */
static int print_decoded(const dinoc_tokenizer *t, const char *line, int json) {
    int      n = 0, cap = 16;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    for (const char *p = line; ids;) {
        while (*p == ' ' || *p == '\t' || *p == ',' || *p == '\r' || *p == '\n') p++;
        if (!*p) break;
        char *e;
        errno  = 0;
        long v = strtol(p, &e, 10);
        if (e == p || errno || v < 0 || v > 0x7fffffff) {
            int w = (int)strcspn(p, " \t,\r\n");
            fprintf(stderr, "dinoc tokenize: --decode: '%.*s' is not a token id\n", w < 40 ? w : 40, p);
            free(ids);
            return 1;
        }
        if (n == cap) {
            int32_t *nb = realloc(ids, sizeof(int32_t) * (size_t)(cap *= 2));
            if (!nb) free(ids);
            ids = nb;
            if (!ids) break;
        }
        ids[n++] = (int32_t)v;
        p        = e;
    }
    if (!ids) return cli_fail("tokenize", DINOC_ERR_NOMEM);
    size_t       len = 0;
    dinoc_status s   = dinoc_detokenize(t, ids, n, NULL, 0, &len);
    char        *out = s == DINOC_OK ? malloc(len + 1) : NULL;
    if (s == DINOC_OK && out) s = dinoc_detokenize(t, ids, n, out, len + 1, &len);
    free(ids);
    if (s != DINOC_OK || !out) {
        free(out);
        return cli_fail("tokenize", s ? s : DINOC_ERR_NOMEM);
    }
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "text", out);
        char *str = cJSON_PrintUnformatted(j);
        printf("%s\n", str ? str : "{}");
        free(str);
        cJSON_Delete(j);
    } else {
        printf("%s\n", out);
    }
    free(out);
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    const char *vocab  = NULL;
    tok_opts    o      = {DINOC_CLIP_CONTEXT, 0, 0, 0, 0, 0};
    int         decode = 0;
    const opt_spec opts[] = {
        {"vocab", 0, OPT_STR, &vocab, "OpenAI .txt.gz, HF folder or vocab.json (none: $DINOC_VOCAB, "
                                      "then data/ beside the build folder, then ./data/)"},
        {"context", 'c', OPT_INT, &o.context, "context length (ids incl. start/end)"},
        {"pad", 0, OPT_FLAG, &o.pad, "zero-pad every line to --context ids (clip.tokenize)"},
        {"truncate", 0, OPT_FLAG, &o.truncate, "cut texts longer than --context (last id <|endoftext|>)"},
        {"raw", 0, OPT_FLAG, &o.raw, "bare BPE ids: no start/end tokens, no context limit"},
        {"tokens", 0, OPT_FLAG, &o.tokens, "print vocabulary spellings instead of ids"},
        {"json", 0, OPT_FLAG, &o.json, "one JSON object per line: {\"text\", \"ids\", \"n\": ids before padding}"},
        {"decode", 'd', OPT_FLAG, &decode, "arguments (or stdin lines) are ids: print their text"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc tokenize [options] TEXT...   (TEXT '-': one text per line of stdin)\n"
                      "       dinoc tokenize --decode ID...       (or '-': one list of ids per line)";
    char **pos  = calloc((size_t)argc + 1, sizeof(char *));
    int    npos = 0, rc = pos ? cli_parse(argc, argv, opts, use, pos, &npos) : 2;
    if (rc) {
        free(pos);
        return rc == 1 ? 0 : 2;
    }
    if (npos == 0 || o.context < 1 || (o.pad && o.raw)) {
        fprintf(stderr, "error: tokenize needs TEXTs (or '-'); --context >= 1; --pad and --raw exclude "
                        "each other (see --help)\n");
        free(pos);
        return 2;
    }
    cli_log_to_stderr(0);
    char             path[4096];
    dinoc_tokenizer *t = NULL;
    dinoc_status     s = dinoc_tokenizer_find_vocab(path, sizeof path, vocab);
    if (s == DINOC_OK) s = dinoc_tokenizer_load(&t, path);
    if (s != DINOC_OK) {
        free(pos);
        return cli_fail("tokenize", s);
    }
    int      cap = o.context > 256 ? o.context : 256;
    int32_t *buf = malloc(sizeof(int32_t) * (size_t)cap);
    rc           = buf ? 0 : cli_fail("tokenize", DINOC_ERR_NOMEM);
    if (decode) { /* all positional ids form one sequence, unless '-' */
        if (!rc && !(npos == 1 && strcmp(pos[0], "-") == 0)) {
            size_t total = 1;
            for (int i = 0; i < npos; i++) total += strlen(pos[i]) + 1;
            char *line = calloc(total, 1);
            for (int i = 0; line && i < npos; i++) strcat(strcat(line, pos[i]), " ");
            rc = line ? print_decoded(t, line, o.json) : cli_fail("tokenize", DINOC_ERR_NOMEM);
            free(line);
            npos = 0;
        }
    }
    for (int i = 0; !rc && i < npos; i++) {
        if (strcmp(pos[i], "-") != 0) {
            rc = print_text(t, &o, pos[i], &buf, &cap);
            continue;
        }
        char   *line = NULL;
        size_t  lcap = 0;
        ssize_t got;
        while (!rc && (got = getline(&line, &lcap, stdin)) >= 0) {
            if (got > 0 && line[got - 1] == '\n') line[--got] = 0;
            if ((size_t)got != strlen(line)) { /* a NUL inside the line */
                fprintf(stderr, "dinoc tokenize: stdin: a line holds a NUL byte\n");
                rc = 1;
                break;
            }
            rc = decode ? print_decoded(t, line, o.json) : print_text(t, &o, line, &buf, &cap);
        }
        free(line);
    }
    if (fflush(stdout) != 0 && !rc) {
        fprintf(stderr, "dinoc tokenize: cannot write to stdout\n");
        rc = 1;
    }
    free(buf);
    free(pos);
    dinoc_tokenizer_free(t);
    return rc;
}
