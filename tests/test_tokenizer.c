/* test_tokenizer.c: the CLIP BPE tokenizer (src/text/bpe.c, src/text/unicode.c).
 *   - the reference's test vectors (clip_mlm_and_c_peers.md A.6), hard-coded here;
 *   - every case of tests/py/gen_tokenizer.py (A.6 again, edge cases, random strings over tricky
 *     characters, 3000 fortunes) compared id for id, with both the OpenAI file and the same
 *     vocabulary in Hugging Face's layout;
 *   - clip.tokenize's padding and truncation, decoding, added tokens, errors (invalid UTF-8, bad
 *     vocabulary files, ids out of range), several threads on one tokenizer, and the time for all
 *     of Debian's fortunes.
 * All comparisons are exact: ids are integers, so there is no tolerance anywhere. */
#include "check.h"
#include "../src/internal.h"
#include "../src/text/tokenizer.h"
#include "../src/text/unicode.h"

#include <glob.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static dinoc_tokenizer *g_tok; /* loaded once, freed at exit */

static void free_tok(void) { dinoc_tokenizer_free(g_tok); }

/* The shipped vocabulary (data/ beside the build folder, as the CLI finds it). */
static const dinoc_tokenizer *tok(void) {
    if (g_tok) return g_tok;
    char path[4096];
    CHECK_OK(dinoc_tokenizer_find_vocab(path, sizeof path, NULL));
    CHECK_OK(dinoc_tokenizer_load(&g_tok, path));
    if (g_tok) atexit(free_tok);
    return g_tok;
}

/* ids of text must be want[0..n): returns 1 if so, else reports the difference. */
static int same_ids(const dinoc_tokenizer *t, const char *label, const char *text, size_t len,
                    const int32_t *want, int n) {
    static _Thread_local int32_t got[16384];
    int                          k = 0;
    dinoc_status s = dinoc_tokenize(t, text, len, got, 16384, &k);
    if (s != DINOC_OK) {
        CHECK_MSG(0, "%s: %s", label, dinoc_last_error());
        return 0;
    }
    int first = -1;
    for (int i = 0; i < n && i < k && i < 16384 && first < 0; i++)
        if (got[i] != want[i]) first = i;
    if (k == n && first < 0) return 1;
    if (first < 0) first = k < n ? k : n;
    CHECK_MSG(0, "%s: %d ids, wanted %d; first difference at %d: got %d wanted %d", label, k, n,
              first, first < k && first < 16384 ? (int)got[first] : -1, first < n ? (int)want[first] : -1);
    return 0;
}

DINOC_TEST(tokenizer_reference_vectors) {
    static const struct {
        const char *text;
        int32_t     ids[12];
        int         n;
    } v[] = {
        {"a diagram", {320, 22697}, 2},
        {"a dog", {320, 1929}, 2},
        {"a cat", {320, 2368}, 2},
        {"hello world", {3306, 1002}, 2},
        {"Hello, World!!", {3306, 267, 1002, 748}, 4},
        {"a photo of a cat", {320, 1125, 539, 320, 2368}, 5},
        {"a dog jumping", {320, 1929, 11476}, 3},
        {"an illustration", {550, 6052}, 2},
        {"2025", {273, 271, 273, 276}, 4},
        {"this is a test string of text", {589, 533, 320, 1628, 9696, 539, 4160}, 7},
        {"my", {607}, 1},
        {"it's a photo of the big dog's toy.", {585, 568, 320, 1125, 539, 518, 1205, 1929, 568, 5988, 269}, 11},
        {"coraz\xc3\xb3n", {851, 854, 13926}, 3},
        {"  multiple   spaces\tand\nnewlines  ", {6470, 9006, 537, 1218, 3418}, 5},
        {"&amp; html", {261, 18231}, 2},
        {"<|startoftext|>a<|endoftext|>", {49406, 320, 49407}, 3},
    };
    const dinoc_tokenizer *t = tok();
    if (!t) return;
    int ok = 0;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        ok += same_ids(t, v[i].text, v[i].text, strlen(v[i].text), v[i].ids, v[i].n);
    fprintf(stderr, "    A.6 vectors: %d/%zu exact\n", ok, sizeof v / sizeof v[0]);
    CHECK(dinoc_tokenizer_vocab_size(t) == 49408);
    CHECK(dinoc_tokenizer_sot(t) == 49406 && dinoc_tokenizer_eot(t) == 49407);
    CHECK(dinoc_tokenizer_token_id(t, "my") == 1152 && dinoc_tokenizer_token_id(t, "my</w>") == 607);
    CHECK(dinoc_tokenizer_token_id(t, "!") == 0 && dinoc_tokenizer_token_id(t, "a</w>") == 320);
    CHECK(strcmp(dinoc_tokenizer_token_str(t, 49407), "<|endoftext|>") == 0);
    CHECK(strcmp(dinoc_unicode_version, "14.0.0") == 0);
}

static int hexval(int c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; }

/* Runs every case of cases.txt through t; returns the number that matched (-1: no fixture). */
static int run_cases(const dinoc_tokenizer *t, const char *what, int *total) {
    char *path = dinoc_path_join(dinoc_test_fixtures(), "tokenizer/cases.txt"), *buf = NULL;
    size_t len = 0;
    *total     = 0;
    if (dinoc_read_file(path, (size_t)64 << 20, &buf, &len) != DINOC_OK) {
        CHECK_MSG(0, "fixture missing: %s (run tests/py/gen_tokenizer.py)", path);
        free(path);
        return -1;
    }
    int    ok   = 0;
    char  *text = malloc(len + 1);
    int32_t *want = malloc(sizeof(int32_t) * (len / 2 + 1));
    for (char *line = buf, *nl; line < buf + len; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) break;
        *nl = 0;
        char *tab1 = strchr(line, '\t'), *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
        if (!tab2) {
            CHECK_MSG(0, "%s: malformed fixture line '%.40s'", path, line);
            break;
        }
        *tab1 = *tab2 = 0;
        size_t tl = 0;
        for (char *h = tab1 + 1; h + 1 < tab2; h += 2) text[tl++] = (char)(hexval(h[0]) * 16 + hexval(h[1]));
        int   n = 0;
        for (char *p = tab2 + 1, *e; *p; p = e) {
            want[n++] = (int32_t)strtol(p, &e, 10);
            if (e == p) { n--; break; }
        }
        char label[96];
        snprintf(label, sizeof label, "%s %s", what, line);
        ok += same_ids(t, label, text, tl, want, n);
        (*total)++;
    }
    free(text), free(want), free(buf), free(path);
    return ok;
}

DINOC_TEST(tokenizer_python_parity) {
    const dinoc_tokenizer *t = tok();
    if (!t) return;
    int total = 0, ok = run_cases(t, "openai", &total);
    fprintf(stderr, "    OpenAI vocabulary: %d/%d cases exact\n", ok, total);
    CHECK(total > 3000 && ok == total);
}

DINOC_TEST(tokenizer_hf_layout) {
    char            *dir = dinoc_path_join(dinoc_test_fixtures(), "tokenizer/hf");
    char            *vj  = dinoc_path_join(dir, "vocab.json");
    dinoc_tokenizer *h = NULL, *h2 = NULL;
    CHECK_OK(dinoc_tokenizer_load(&h, dir));
    CHECK_OK(dinoc_tokenizer_load(&h2, vj)); /* the vocab.json path, merges.txt beside it */
    if (h && h2) {
        int total = 0, ok = run_cases(h, "hf", &total);
        fprintf(stderr, "    HF vocab.json + merges.txt: %d/%d cases exact\n", ok, total);
        CHECK(total > 3000 && ok == total);
        CHECK(dinoc_tokenizer_vocab_size(h2) == 49408 && dinoc_tokenizer_eot(h2) == 49407);
    }
    dinoc_tokenizer_free(h), dinoc_tokenizer_free(h2);
    free(dir), free(vj);
}

DINOC_TEST(tokenizer_clip_context) {
    const dinoc_tokenizer *t = tok();
    if (!t) return;
    int32_t ids[DINOC_CLIP_CONTEXT];
    int     n = -1;
    CHECK_OK(dinoc_tokenize_clip(t, "a photo of a cat", ids, DINOC_CLIP_CONTEXT, 0, &n));
    static const int32_t want[7] = {49406, 320, 1125, 539, 320, 2368, 49407};
    CHECK(n == 7 && memcmp(ids, want, sizeof want) == 0);
    for (int i = 7; i < DINOC_CLIP_CONTEXT; i++) CHECK(ids[i] == 0); /* OpenAI pads with 0 */
    CHECK_OK(dinoc_tokenize_clip(t, "", ids, 4, 0, &n));
    CHECK(n == 2 && ids[0] == 49406 && ids[1] == 49407 && ids[2] == 0 && ids[3] == 0);
    /* 100 words: 102 ids with start/end */
    char long_text[1024] = "";
    for (int i = 0; i < 100; i++) strcat(long_text, "cat ");
    CHECK_ERR(dinoc_tokenize_clip(t, long_text, ids, DINOC_CLIP_CONTEXT, 0, &n), DINOC_ERR_ARG,
              "102 tokens");
    CHECK_OK(dinoc_tokenize_clip(t, long_text, ids, DINOC_CLIP_CONTEXT, 1, &n));
    CHECK(n == DINOC_CLIP_CONTEXT && ids[0] == 49406 && ids[75] == 2368 && ids[76] == 49407);
    /* exactly 77 fits without truncation: 75 words */
    long_text[75 * 4] = 0;
    CHECK_OK(dinoc_tokenize_clip(t, long_text, ids, DINOC_CLIP_CONTEXT, 0, &n));
    CHECK(n == 77 && ids[76] == 49407);
    CHECK_OK(dinoc_tokenize_clip(t, "a cat", ids, 1, 1, &n)); /* tokens[:1], last = EOT */
    CHECK(n == 1 && ids[0] == 49407);
    /* counting only (max_ids 0) */
    CHECK_OK(dinoc_tokenize(t, "a photo of a cat", 16, NULL, 0, &n));
    CHECK(n == 5);
}

DINOC_TEST(tokenizer_decode) {
    const dinoc_tokenizer *t = tok();
    if (!t) return;
    int32_t ids[64];
    int     n = 0;
    char    out[256];
    size_t  len = 0;
    const char *s = "It's a Photo of 2 CATS, corazón!";
    CHECK_OK(dinoc_tokenize(t, s, strlen(s), ids, 64, &n));
    CHECK_OK(dinoc_detokenize(t, ids, n, out, sizeof out, &len));
    /* OpenAI's decode: "</w>" -> " " after every word piece */
    CHECK_MSG(strcmp(out, "it 's a photo of 2 cats , corazón ! ") == 0, "decoded '%s'", out);
    CHECK(len == strlen(out));
    /* a lone UTF-8 lead byte (0xC3 is its own byte symbol) decodes to U+FFFD */
    int32_t lone[2] = {dinoc_tokenizer_token_id(t, "\xc3\x83"), 320};
    CHECK_OK(dinoc_detokenize(t, lone, 2, out, sizeof out, &len));
    CHECK_MSG(strcmp(out, "\xef\xbf\xbd" "a ") == 0, "decoded '%s'", out);
    int32_t sp[3] = {49406, 320, 49407};
    CHECK_OK(dinoc_detokenize(t, sp, 3, out, sizeof out, &len));
    CHECK(strcmp(out, "<|startoftext|>a <|endoftext|>") == 0);
    /* truncated output: NUL-terminated, full length still reported */
    CHECK_OK(dinoc_detokenize(t, sp, 3, out, 5, &len));
    CHECK(strcmp(out, "<|st") == 0 && len == 30);
    int32_t badid[1] = {49408};
    CHECK_ERR(dinoc_detokenize(t, badid, 1, out, sizeof out, &len), DINOC_ERR_ARG, "id 49408");
}

DINOC_TEST(tokenizer_add_token) {
    char path[4096];
    CHECK_OK(dinoc_tokenizer_find_vocab(path, sizeof path, NULL));
    dinoc_tokenizer *t = NULL;
    CHECK_OK(dinoc_tokenizer_load(&t, path));
    if (!t) return;
    int32_t id = -1, id2 = -1;
    CHECK_OK(dinoc_tokenizer_add_token(t, "[MASK]", &id));
    CHECK(id == 49408 && dinoc_tokenizer_vocab_size(t) == 49409);
    CHECK_OK(dinoc_tokenizer_add_token(t, "[MASK]", &id2));
    CHECK(id2 == 49408 && dinoc_tokenizer_vocab_size(t) == 49409);
    CHECK_OK(dinoc_tokenizer_add_token(t, "a</w>", &id2)); /* already a token */
    CHECK(id2 == 320);
    CHECK(dinoc_tokenizer_token_id(t, "[MASK]") == 49408);
    int32_t ids[3] = {320, 49408, 2368};
    char    out[64];
    CHECK_OK(dinoc_detokenize(t, ids, 3, out, sizeof out, NULL));
    CHECK_MSG(strcmp(out, "a [MASK]cat ") == 0, "decoded '%s'", out);
    /* text is not searched for added tokens: "[MASK]" is punctuation + letters + punctuation */
    int n = 0;
    CHECK_OK(dinoc_tokenize(t, "[MASK]", 6, ids, 3, &n));
    CHECK(n == 3 && ids[0] != 49408);
    CHECK_ERR(dinoc_tokenizer_add_token(t, "", &id), DINOC_ERR_ARG, "empty");
    dinoc_tokenizer_free(t);
}

DINOC_TEST(tokenizer_invalid_utf8) {
    const dinoc_tokenizer *t = tok();
    if (!t) return;
    static const struct {
        const char *s;
        const char *where;
    } bad[] = {
        {"ab\x80", "byte 2"},             /* lone continuation byte */
        {"\xc0\xaf", "byte 0"},           /* overlong '/' */
        {"x\xed\xa0\x80", "byte 1"},      /* UTF-16 surrogate */
        {"\xe2\x82", "byte 0"},           /* truncated */
        {"ok \xf4\x90\x80\x80", "byte 3"}, /* above U+10FFFF */
        {"\xff", "byte 0"},
    };
    int32_t ids[8];
    int     n = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_ERR(dinoc_tokenize(t, bad[i].s, strlen(bad[i].s), ids, 8, &n), DINOC_ERR_ARG, bad[i].where);
    CHECK_ERR(dinoc_tokenize(t, NULL, 3, ids, 8, &n), DINOC_ERR_ARG, "NULL");
    CHECK_OK(dinoc_tokenize(t, "a\0b", 3, ids, 8, &n)); /* NUL is a character like any other */
    CHECK(n == 3);
}

/* Writes a gzip file of text to dir/name; returns the path (caller frees). */
static char *write_gz(const char *name, const char *text) {
    char  *p = dinoc_path_join(dinoc_test_tmpdir(), name);
    gzFile f = gzopen(p, "wb");
    gzwrite(f, text, (unsigned)strlen(text));
    gzclose(f);
    return p;
}

DINOC_TEST(tokenizer_bad_vocab) {
    dinoc_tokenizer *t = NULL;
    CHECK_ERR(dinoc_tokenizer_load(&t, "no/such/vocab.txt.gz"), DINOC_ERR_IO, "no/such/vocab.txt.gz");
    CHECK(t == NULL);
    char *p = write_gz("tok_bad1.txt.gz", "#version: 0.2\na b\nx y z\n");
    CHECK_ERR(dinoc_tokenizer_load(&t, p), DINOC_ERR_FORMAT, "line 3");
    free(p);
    /* a tiny but complete vocabulary: two merges */
    p = write_gz("tok_small.txt.gz", "#version: 0.2\nh i</w>\nh i\n");
    CHECK_OK(dinoc_tokenizer_load(&t, p));
    if (t) {
        int32_t ids[4];
        int     n = 0;
        CHECK_OK(dinoc_tokenize(t, "hi hih", 6, ids, 4, &n));
        /* "hi" -> "hi</w>" (512); "hih" -> "hi" (513) + "h</w>" */
        CHECK(n == 3 && ids[0] == 512 && ids[1] == 513 && ids[2] == 256 + 'h' - '!');
        CHECK(dinoc_tokenizer_sot(t) == 514 && dinoc_tokenizer_vocab_size(t) == 516);
        dinoc_tokenizer_free(t);
        t = NULL;
    }
    free(p);
    /* not gzip after the magic */
    p = dinoc_path_join(dinoc_test_tmpdir(), "tok_bad2.txt.gz");
    CHECK_OK(dinoc_write_file_atomic(p, "\x1f\x8b\x08garbage", 11));
    CHECK_ERR(dinoc_tokenizer_load(&t, p), DINOC_ERR_FORMAT, "gzip");
    free(p);
    /* HF folder without the specials */
    char *dir = dinoc_path_join(dinoc_test_tmpdir(), "tok_hf_bad");
    CHECK_OK(dinoc_mkdir(dir));
    char *vj = dinoc_path_join(dir, "vocab.json"), *mt = dinoc_path_join(dir, "merges.txt");
    CHECK_OK(dinoc_write_file_atomic(vj, "{\"a\": 0, \"b\": 2}", 16));
    CHECK_OK(dinoc_write_file_atomic(mt, "#version: 0.2\n", 14));
    CHECK_ERR(dinoc_tokenizer_load(&t, dir), DINOC_ERR_FORMAT, "no token has id 1");
    CHECK_OK(dinoc_write_file_atomic(vj, "{\"a\": 0, \"b\": 1}", 16));
    CHECK_ERR(dinoc_tokenizer_load(&t, dir), DINOC_ERR_FORMAT, "no token for byte");
    CHECK_OK(dinoc_write_file_atomic(vj, "[1, 2]", 6));
    CHECK_ERR(dinoc_tokenizer_load(&t, vj), DINOC_ERR_FORMAT, "vocab.json");
    unlink(mt);
    CHECK_ERR(dinoc_tokenizer_load(&t, dir), DINOC_ERR_IO, "merges.txt");
    CHECK(t == NULL);
    free(vj), free(mt), free(dir);
    char out[64];
    CHECK_ERR(dinoc_tokenizer_find_vocab(out, sizeof out, "no/such/file"), DINOC_ERR_IO, "no/such/file");
}

/* All of Debian's fortunes (files concatenated, as one text each) in one pass; returns bytes. */
static size_t fortunes_pass(const dinoc_tokenizer *t, long *ids_out) {
    glob_t g;
    size_t bytes = 0;
    long   total = 0;
    if (glob("/usr/share/games/fortunes/*", 0, NULL, &g) != 0) return 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        const char *p = g.gl_pathv[i];
        size_t      pl = strlen(p);
        if ((pl > 4 && strcmp(p + pl - 4, ".dat") == 0) || (pl > 3 && strcmp(p + pl - 3, ".u8") == 0))
            continue;
        char  *buf = NULL;
        size_t len = 0;
        if (dinoc_read_file(p, (size_t)64 << 20, &buf, &len) != DINOC_OK) continue;
        int n = 0;
        if (dinoc_tokenize(t, buf, len, NULL, 0, &n) == DINOC_OK) bytes += len, total += n;
        free(buf);
    }
    globfree(&g);
    *ids_out = total;
    return bytes;
}

DINOC_TEST(tokenizer_speed_fortunes) {
    const dinoc_tokenizer *t = tok();
    if (!t) return;
    struct timespec a, b;
    long            ids = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    size_t bytes = fortunes_pass(t, &ids);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    fprintf(stderr, "    fortunes: %.2f MB -> %ld ids in %.2f s (%.1f MB/s, one thread)\n", bytes / 1e6,
            ids, s, bytes / 1e6 / s);
    CHECK_MSG(bytes > 1000000, "fortunes not found under /usr/share/games/fortunes");
    /* the issue asks for "a second or two"; 10 s only guards against a quadratic regression on a
     * loaded shared machine (sanitizer builds are ~5x slower) */
    CHECK(s < 10.0);
}

DINOC_TEST(tokenizer_threads) {
    const dinoc_tokenizer *t = tok();
    if (!t) return;
    /* 64 texts tokenized by every thread at once must equal the serial ids */
    enum { NT = 64 };
    static char    texts[NT][128];
    static int32_t want[NT][64];
    int            nw[NT], bad = 0;
    for (int i = 0; i < NT; i++) {
        snprintf(texts[i], sizeof texts[i], "Text %d: ΑΣ caf\xc3\xa9 &amp; %d dogs' toys, supercalifragilistic #%d",
                 i, i * 7919, i);
        CHECK_OK(dinoc_tokenize(t, texts[i], strlen(texts[i]), want[i], 64, &nw[i]));
    }
#pragma omp parallel for schedule(dynamic) reduction(+ : bad)
    for (int i = 0; i < NT * 8; i++) {
        int k = i % NT;
        int32_t local[64];
        int     n = 0;
        if (dinoc_tokenize(t, texts[k], strlen(texts[k]), local, 64, &n) != DINOC_OK) bad++;
        else if (n != nw[k] || memcmp(local, want[k], sizeof(int32_t) * (size_t)(n < 64 ? n : 64)) != 0) bad++;
    }
    CHECK_MSG(bad == 0, "%d texts differed when tokenized from several threads", bad);
}
