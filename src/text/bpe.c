/* bpe.c: OpenAI CLIP's byte-level BPE tokenizer: vocabulary loading (OpenAI .txt.gz or HF
 * vocab.json + merges.txt), encoding (clean, lower-case, pre-tokenise, BPE) and decoding.
 * Contracts in tokenizer.h; the character rules live in unicode.c. Tested by
 * tests/test_tokenizer.c against tests/py/gen_tokenizer.py (a Python copy of simple_tokenizer.py).
 *
 * Ids rather than strings: every symbol is kept as its vocabulary id and a merge as the pair
 * (left id, right id) -> (rank, merged id) in one hash table, so BPE never builds strings. This is
 * the same as Python's string-keyed dicts because the map string -> id is one-to-one on the
 * strings a merge can produce.
 *
 * BPE order: Python merges, again and again, every occurrence (left to right, non-overlapping) of
 * the lowest-ranked adjacent pair. A min-heap of candidate pairs keyed by (rank, position) pops
 * the same merges in the same order in O(m log m) for a piece of m bytes (the Python loop is
 * O(m^2), which matters for long runs of letters): a merge never creates a pair of its own rank
 * (the merged symbol is longer than both halves), so the pops of one rank are exactly Python's
 * left-to-right pass; stale heap entries are recognised by their recorded ids. */
#include "tokenizer.h"

#include "../internal.h"
#include "unicode.h"

#include <cjson/cJSON.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define N_MERGES_MAX (49152 - 256 - 2) /* merges[1 : 49152-256-2+1]: 48894, OpenAI and HF alike */
#define TEXT_MAX     ((size_t)256 << 20)
#define FILE_MAX     ((size_t)512 << 20)

typedef struct {
    uint64_t key; /* (left id << 32) | right id; UINT64_MAX: empty */
    int32_t  rank, merged;
} pair_slot;

struct dinoc_tokenizer {
    int       n_base, n_tokens;   /* vocabulary; plus added tokens */
    char     *pool;               /* spellings, NUL-terminated, at off[id] */
    uint32_t *off;                /* [n_base] */
    char     *dec;                /* decoded bytes of each token at dec_off[id] */
    uint32_t *dec_off;            /* [n_base + 1] */
    char     *added[DINOC_TOKENIZER_MAX_ADDED];
    int32_t  *smap;               /* spelling -> id, open addressing; -1 empty */
    uint32_t  smap_mask;
    pair_slot *pairs;
    uint32_t  pairs_mask;
    int32_t   byte_id[256], byte_eow_id[256];
    int32_t   sot, eot;
};

/* ---- hash tables ---------------------------------------------------------------------------- */

static uint32_t hash_str(const char *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static const char *spelling(const dinoc_tokenizer *t, int id) {
    return id < t->n_base ? t->pool + t->off[id] : t->added[id - t->n_base];
}

static int smap_find(const dinoc_tokenizer *t, const char *s, size_t n) {
    for (uint32_t i = hash_str(s, n) & t->smap_mask;; i = (i + 1) & t->smap_mask) {
        int32_t id = t->smap[i];
        if (id < 0) return -1;
        const char *sp = spelling(t, id);
        if (strncmp(sp, s, n) == 0 && sp[n] == 0) return id;
    }
}

/* Inserts id under its spelling; a later id replaces an earlier one of the same spelling (as
 * Python's dict(zip(vocab, range(len(vocab))))). */
static void smap_put(dinoc_tokenizer *t, int32_t id) {
    const char *s = spelling(t, id);
    size_t      n = strlen(s);
    for (uint32_t i = hash_str(s, n) & t->smap_mask;; i = (i + 1) & t->smap_mask) {
        if (t->smap[i] < 0 || strcmp(spelling(t, t->smap[i]), s) == 0) {
            t->smap[i] = id;
            return;
        }
    }
}

static uint32_t hash_pair(uint64_t key) {
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 40);
}

static const pair_slot *pair_find(const dinoc_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (uint32_t i = hash_pair(key) & t->pairs_mask;; i = (i + 1) & t->pairs_mask) {
        if (t->pairs[i].key == key) return &t->pairs[i];
        if (t->pairs[i].key == UINT64_MAX) return NULL;
    }
}

/* A repeated merge takes the later rank (Python's bpe_ranks dict). */
static void pair_put(dinoc_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t i   = hash_pair(key) & t->pairs_mask;
    while (t->pairs[i].key != UINT64_MAX && t->pairs[i].key != key) i = (i + 1) & t->pairs_mask;
    t->pairs[i] = (pair_slot){key, rank, merged};
}

static uint32_t pow2_at_least(size_t n) {
    uint32_t c = 1024;
    while (c < n) c <<= 1;
    return c;
}

/* ---- loading -------------------------------------------------------------------------------- */

/* Whole file, gunzipped if it starts with the gzip magic; NUL-terminated, dinoc_free'd. */
static dinoc_status read_text(const char *path, char **out, size_t *len) {
    char  *raw = NULL;
    size_t n   = 0;
    dinoc_status s = dinoc_read_file(path, FILE_MAX, &raw, &n);
    if (s != DINOC_OK) return s;
    int gz = n >= 2 && (unsigned char)raw[0] == 0x1f && (unsigned char)raw[1] == 0x8b;
    size_t cap = gz ? 4 * n + 64 : n + 1;
    char  *buf = dinoc_calloc(cap, 1);
    if (!buf) {
        free(raw);
        return dinoc_fail(DINOC_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, cap);
    }
    if (!gz) {
        memcpy(buf, raw, n);
        free(raw);
        *out = buf, *len = n;
        return DINOC_OK;
    }
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {
        free(raw), dinoc_free(buf);
        return dinoc_fail(DINOC_ERR_NOMEM, "%s: zlib initialisation failed", path);
    }
    z.next_in  = (Bytef *)raw;
    z.avail_in = (uInt)n;
    size_t used = 0;
    int    rc   = Z_OK;
    while (rc == Z_OK) {
        if (cap - used < 2) { /* grow by doubling; keep one byte for the NUL */
            char *nb = cap * 2 <= FILE_MAX ? dinoc_calloc(cap * 2, 1) : NULL;
            if (!nb) break;
            memcpy(nb, buf, used);
            dinoc_free(buf);
            buf = nb, cap *= 2;
        }
        z.next_out  = (Bytef *)buf + used;
        z.avail_out = (uInt)(cap - used - 1);
        rc          = inflate(&z, Z_NO_FLUSH);
        used        = cap - 1 - z.avail_out;
        if (rc == Z_BUF_ERROR && z.avail_in) rc = Z_OK; /* only out of room */
    }
    inflateEnd(&z);
    free(raw);
    if (rc != Z_STREAM_END) {
        dinoc_free(buf);
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: not a valid gzip stream (or over %zu bytes inflated)",
                          path, FILE_MAX);
    }
    buf[used] = 0;
    *out = buf, *len = used;
    return DINOC_OK;
}

/* Allocates the tables for n tokens whose spellings need pool_bytes bytes (NULs included) and nm
 * merges. */
static dinoc_status tok_alloc(dinoc_tokenizer *t, int n, int nm, size_t pool_bytes) {
    t->n_base = t->n_tokens = n;
    t->pool       = dinoc_calloc(pool_bytes, 1);
    t->off        = dinoc_calloc((size_t)n, sizeof *t->off);
    t->dec        = dinoc_calloc(pool_bytes, 1);
    t->dec_off    = dinoc_calloc((size_t)n + 1, sizeof *t->dec_off);
    uint32_t sc   = pow2_at_least(2 * ((size_t)n + DINOC_TOKENIZER_MAX_ADDED));
    t->smap       = dinoc_calloc(sc, sizeof *t->smap);
    t->smap_mask  = sc - 1;
    uint32_t pc   = pow2_at_least(2 * (size_t)nm);
    t->pairs      = dinoc_calloc(pc, sizeof *t->pairs);
    t->pairs_mask = pc - 1;
    if (!t->pool || !t->off || !t->dec || !t->dec_off || !t->smap || !t->pairs)
        return dinoc_fail(DINOC_ERR_NOMEM, "tokenizer: cannot allocate tables for %d tokens", n);
    memset(t->smap, 0xff, sc * sizeof *t->smap);
    memset(t->off, 0xff, (size_t)n * sizeof *t->off);
    for (uint32_t i = 0; i < pc; i++) t->pairs[i].key = UINT64_MAX;
    return DINOC_OK;
}

/* Appends a spelling at *pos for token id. */
static void tok_set(dinoc_tokenizer *t, size_t *pos, int id, const char *a, size_t na,
                    const char *b, size_t nb) {
    t->off[id] = (uint32_t)*pos;
    memcpy(t->pool + *pos, a, na);
    memcpy(t->pool + *pos + na, b, nb);
    *pos += na + nb;
    t->pool[(*pos)++] = 0;
}

/* Next line of text (without '\n'); 0 at the end. */
static int next_line(const char **p, const char *end, const char **line, size_t *n) {
    if (*p >= end) return 0;
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    *line = *p;
    *n    = (size_t)((nl ? nl : end) - *p);
    *p    = nl ? nl + 1 : end;
    return 1;
}

/* Splits a merges line into its two fields (Python's str.split(): runs of whitespace). 0 if the
 * line does not hold exactly two. */
static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

static int split_merge(const char *s, size_t n, const char **a, size_t *na, const char **b,
                       size_t *nb) {
    const char *f[2];
    size_t      fl[2], i = 0;
    int         k = 0;
    for (;;) {
        while (i < n && is_blank(s[i])) i++;
        if (i >= n) break;
        size_t j = i;
        while (j < n && !is_blank(s[j])) j++;
        if (k == 2) return 0;
        f[k] = s + i, fl[k] = j - i, k++;
        i = j;
    }
    if (k != 2) return 0;
    *a = f[0], *na = fl[0], *b = f[1], *nb = fl[1];
    return 1;
}

/* The merge lines used: lines 1 .. N_MERGES_MAX of the file (a blank last line is the file's end). */
static int count_merges(const char *text, size_t len) {
    const char *p = text, *end = text + len, *line;
    size_t      n;
    int         k = -1;
    while (k < N_MERGES_MAX && next_line(&p, end, &line, &n)) k++;
    return k < 0 ? 0 : k;
}

static dinoc_status load_openai(dinoc_tokenizer *t, const char *text, size_t len, int nm) {
    uint32_t sym[256];
    int      order[256];
    dinoc_uc_byte_symbols(sym, order);
    dinoc_status s = tok_alloc(t, 512 + nm + 2, nm, len + 256 * 12 + 64);
    if (s != DINOC_OK) return s;
    size_t        pos = 0;
    unsigned char u[4];
    for (int i = 0; i < 256; i++) {
        int k = dinoc_utf8_encode(sym[order[i]], u);
        tok_set(t, &pos, i, (const char *)u, (size_t)k, "", 0);
        tok_set(t, &pos, 256 + i, (const char *)u, (size_t)k, "</w>", 4);
    }
    const char *p = text, *end = text + len, *line = "", *a, *b;
    size_t      n = 0, na, nb;
    next_line(&p, end, &line, &n); /* the "#version" header */
    for (int i = 0; i < nm; i++) {
        next_line(&p, end, &line, &n);
        if (!split_merge(line, n, &a, &na, &b, &nb))
            return dinoc_fail(DINOC_ERR_FORMAT, "line %d: expected two symbols 'left right', got '%.*s'",
                              i + 2, (int)(n < 60 ? n : 60), line);
        tok_set(t, &pos, 512 + i, a, na, b, nb);
    }
    tok_set(t, &pos, 512 + nm, "<|startoftext|>", 15, "", 0);
    tok_set(t, &pos, 513 + nm, "<|endoftext|>", 13, "", 0);
    return DINOC_OK;
}

static dinoc_status load_hf_vocab(dinoc_tokenizer *t, const char *vocab_path, int nm) {
    cJSON       *root = NULL;
    dinoc_status s    = dinoc_json_load(&root, vocab_path);
    if (s != DINOC_OK) return s;
    int    n     = 0;
    size_t bytes = 0;
    const cJSON *e;
    if (!cJSON_IsObject(root)) s = dinoc_fail(DINOC_ERR_FORMAT, "not a JSON object of token -> id");
    cJSON_ArrayForEach(e, root) {
        if (s != DINOC_OK) break;
        double v = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (v < 0 || v >= (1 << 24) || v != (int)v)
            s = dinoc_fail(DINOC_ERR_FORMAT, "token '%.40s': id is not an integer in [0, 2^24)", e->string);
        else if ((int)v + 1 > n)
            n = (int)v + 1;
        bytes += strlen(e->string) + 1;
    }
    if (s == DINOC_OK) s = tok_alloc(t, n, nm, bytes + 1);
    size_t pos = 0;
    cJSON_ArrayForEach(e, root) {
        if (s != DINOC_OK) break;
        int id = (int)e->valuedouble;
        if (t->off[id] != UINT32_MAX)
            s = dinoc_fail(DINOC_ERR_FORMAT, "id %d given to both '%.40s' and '%.40s'", id,
                           t->pool + t->off[id], e->string);
        else
            tok_set(t, &pos, id, e->string, strlen(e->string), "", 0);
    }
    for (int id = 0; s == DINOC_OK && id < n; id++)
        if (t->off[id] == UINT32_MAX) s = dinoc_fail(DINOC_ERR_FORMAT, "no token has id %d", id);
    cJSON_Delete(root);
    return s;
}

/* Spelling map, byte symbols, specials, merges and decoded bytes: shared by both formats.
 * merges = the text whose lines 1..nm are the merges. */
static dinoc_status finish(dinoc_tokenizer *t, const char *merges, size_t len, int nm) {
    for (int id = 0; id < t->n_base; id++) smap_put(t, id);
    uint32_t sym[256];
    int      order[256];
    dinoc_uc_byte_symbols(sym, order);
    for (int b = 0; b < 256; b++) {
        char s[8];
        int  k = dinoc_utf8_encode(sym[b], (unsigned char *)s);
        memcpy(s + k, "</w>", 5);
        t->byte_eow_id[b] = smap_find(t, s, (size_t)k + 4);
        t->byte_id[b]     = smap_find(t, s, (size_t)k);
        if (t->byte_id[b] < 0 || t->byte_eow_id[b] < 0)
            return dinoc_fail(DINOC_ERR_FORMAT, "no token for byte 0x%02X ('%.*s' or with </w>)", b, k, s);
    }
    t->sot = smap_find(t, "<|startoftext|>", 15);
    t->eot = smap_find(t, "<|endoftext|>", 13);
    if (t->sot < 0 || t->eot < 0)
        return dinoc_fail(DINOC_ERR_FORMAT, "the vocabulary lacks <|startoftext|> or <|endoftext|>");
    const char *p = merges, *end = merges + len, *line = "", *a, *b;
    size_t      n = 0, na, nb;
    char        joined[1024];
    next_line(&p, end, &line, &n);
    for (int r = 0; r < nm; r++) {
        next_line(&p, end, &line, &n);
        if (!split_merge(line, n, &a, &na, &b, &nb) || na + nb >= sizeof joined)
            return dinoc_fail(DINOC_ERR_FORMAT, "merges line %d: expected two symbols 'left right' "
                              "(under 1 KiB), got '%.*s'", r + 2, (int)(n < 60 ? n : 60), line);
        memcpy(joined, a, na);
        memcpy(joined + na, b, nb);
        int ia = smap_find(t, a, na), ib = smap_find(t, b, nb), im = smap_find(t, joined, na + nb);
        if (im < 0)
            return dinoc_fail(DINOC_ERR_FORMAT, "merges line %d: '%.*s' is not in the vocabulary",
                              r + 2, (int)(na + nb), joined);
        if (ia >= 0 && ib >= 0) pair_put(t, ia, ib, r, im); /* else it can never apply */
    }
    /* decoded bytes: each byte symbol back to its byte; anything else (the specials' and "</w>"'s
     * ASCII is its own symbol) is kept as UTF-8 */
    int32_t back[512];
    memset(back, 0xff, sizeof back);
    for (int by = 0; by < 256; by++) back[sym[by]] = by;
    size_t pos = 0;
    for (int id = 0; id < t->n_base; id++) {
        const char *sp = spelling(t, id);
        size_t      sl = strlen(sp), ncp = 0, bad = 0;
        t->dec_off[id] = (uint32_t)pos;
        uint32_t cps[1024];
        if (sl <= 1024 && dinoc_utf8_decode(cps, &ncp, sp, sl, &bad) == 0) {
            for (size_t i = 0; i < ncp; i++) {
                if (cps[i] < 512 && back[cps[i]] >= 0) t->dec[pos++] = (char)back[cps[i]];
                else pos += (size_t)dinoc_utf8_encode(cps[i], (unsigned char *)t->dec + pos);
            }
        } else { /* not UTF-8 or very long: raw */
            memcpy(t->dec + pos, sp, sl);
            pos += sl;
        }
    }
    t->dec_off[t->n_base] = (uint32_t)pos;
    return DINOC_OK;
}

dinoc_status dinoc_tokenizer_load(dinoc_tokenizer **out, const char *path) {
    if (!out || !path) return dinoc_fail(DINOC_ERR_ARG, "tokenizer_load: NULL argument");
    *out = NULL;
    dinoc_tokenizer *t = dinoc_calloc(1, sizeof *t);
    if (!t) return dinoc_fail(DINOC_ERR_NOMEM, "tokenizer: out of memory");
    char       *vocab = NULL, *mpath = NULL, *text = NULL;
    size_t       len   = 0, pl = strlen(path);
    dinoc_status s;
    int hf = 0;
    if (dinoc_is_dir(path)) {
        hf    = 1;
        vocab = dinoc_path_join(path, "vocab.json");
        mpath = dinoc_path_join(path, "merges.txt");
    } else if (pl >= 5 && strcmp(path + pl - 5, ".json") == 0) {
        hf = 1;
        const char *slash = strrchr(path, '/');
        char        dir[4096];
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path + (slash == path)) : 1,
                 slash ? path : ".");
        vocab = dinoc_path_join(dir, slash ? slash + 1 : path);
        mpath = dinoc_path_join(dir, "merges.txt");
    }
    const char *mp = mpath ? mpath : path;
    s = hf && (!vocab || !mpath) ? dinoc_fail(DINOC_ERR_NOMEM, "out of memory") : read_text(mp, &text, &len);
    int nm = s == DINOC_OK ? count_merges(text, len) : 0;
    /* messages of read_text and dinoc_json_load name their file; the parsers' get it here */
    if (s == DINOC_OK && hf) s = load_hf_vocab(t, vocab, nm);
    else if (s == DINOC_OK) s = load_openai(t, text, len, nm);
    if (s == DINOC_ERR_FORMAT && hf && !strstr(dinoc_last_error(), vocab)) dinoc_fail_prefix(s, "%s", vocab);
    else if (s == DINOC_ERR_FORMAT && !hf && !strstr(dinoc_last_error(), mp)) dinoc_fail_prefix(s, "%s", mp);
    if (s == DINOC_OK && (s = finish(t, text, len, nm)) != DINOC_OK) {
        if (hf) dinoc_fail_prefix(s, "%s + %s", vocab, mp);
        else dinoc_fail_prefix(s, "%s", mp);
    }
    if (s != DINOC_OK) {
        dinoc_tokenizer_free(t);
        t = NULL;
    }
    dinoc_free(text);
    free(vocab);
    free(mpath);
    *out = t;
    return s;
}

void dinoc_tokenizer_free(dinoc_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_tokens - t->n_base; i++) dinoc_free(t->added[i]);
    dinoc_free(t->pool), dinoc_free(t->off), dinoc_free(t->dec), dinoc_free(t->dec_off);
    dinoc_free(t->smap), dinoc_free(t->pairs);
    dinoc_free(t);
}

/* ---- encoding ------------------------------------------------------------------------------- */

typedef struct {
    int32_t rank, pos, a, b; /* candidate merge of the symbols at pos and next[pos], ids a and b */
} bpe_item;

/* Per-call working memory: grown to the longest piece, freed at the end of the call. */
typedef struct {
    size_t         cap; /* bytes of the longest piece it holds */
    unsigned char *bytes;
    int32_t       *sym, *prev, *next;
    bpe_item      *heap;
} bpe_ws;

static void ws_free(bpe_ws *w) {
    dinoc_free(w->bytes), dinoc_free(w->sym), dinoc_free(w->prev), dinoc_free(w->next);
    dinoc_free(w->heap);
    memset(w, 0, sizeof *w);
}

static int ws_reserve(bpe_ws *w, size_t m) {
    if (m <= w->cap) return 1;
    ws_free(w);
    size_t c = m < 256 ? 256 : m;
    w->bytes = dinoc_calloc(c, 1);
    w->sym   = dinoc_calloc(c, sizeof *w->sym);
    w->prev  = dinoc_calloc(c, sizeof *w->prev);
    w->next  = dinoc_calloc(c, sizeof *w->next);
    w->heap  = dinoc_calloc(3 * c, sizeof *w->heap); /* m - 1 pairs + 2 per merge */
    w->cap   = c;
    return w->bytes && w->sym && w->prev && w->next && w->heap;
}

static int item_less(const bpe_item *x, const bpe_item *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void heap_push(bpe_item *h, int *n, bpe_item it) {
    int i = (*n)++;
    while (i > 0 && item_less(&it, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i    = (i - 1) / 2;
    }
    h[i] = it;
}

static bpe_item heap_pop(bpe_item *h, int *n) {
    bpe_item top = h[0], last = h[--(*n)];
    int      i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && item_less(&h[c + 1], &h[c])) c++;
        if (!item_less(&h[c], &last)) break;
        h[i] = h[c];
        i    = c;
    }
    h[i] = last;
    return top;
}

static void push_pair(const dinoc_tokenizer *t, bpe_ws *w, int *nh, int pos) {
    if (pos < 0 || w->next[pos] < 0) return;
    const pair_slot *p = pair_find(t, w->sym[pos], w->sym[w->next[pos]]);
    if (p) heap_push(w->heap, nh, (bpe_item){p->rank, pos, w->sym[pos], w->sym[w->next[pos]]});
}

/* Output sink: ids[0..max) gets the first ids, *n counts them all. */
typedef struct {
    int32_t *ids;
    int      max;
    long     n;
} id_sink;

static void emit(id_sink *o, int32_t id) {
    if (o->n < o->max) o->ids[o->n] = id;
    o->n++;
}

/* BPE of one piece of m bytes (in w->bytes). */
static void bpe_piece(const dinoc_tokenizer *t, bpe_ws *w, size_t m, id_sink *o) {
    int n = (int)m, nh = 0;
    for (int i = 0; i < n; i++) {
        w->sym[i]  = i == n - 1 ? t->byte_eow_id[w->bytes[i]] : t->byte_id[w->bytes[i]];
        w->prev[i] = i - 1;
        w->next[i] = i + 1 < n ? i + 1 : -1;
    }
    for (int i = 0; i + 1 < n; i++) push_pair(t, w, &nh, i);
    while (nh > 0) {
        bpe_item it = heap_pop(w->heap, &nh);
        int      j  = w->next[it.pos];
        /* stale: the left symbol was absorbed (its next is then -2) or either side changed */
        if (w->prev[it.pos] < -1 || j < 0 || w->sym[it.pos] != it.a || w->sym[j] != it.b) continue;
        w->sym[it.pos]  = pair_find(t, it.a, it.b)->merged;
        w->next[it.pos] = w->next[j];
        if (w->next[j] >= 0) w->prev[w->next[j]] = it.pos;
        w->prev[j] = -2, w->next[j] = -2; /* dead */
        push_pair(t, w, &nh, w->prev[it.pos]);
        push_pair(t, w, &nh, it.pos);
    }
    for (int i = 0; i >= 0; i = w->next[i]) emit(o, w->sym[i]);
}

/* Length of "<|startoftext|>" / "<|endoftext|>" at s[0..n) (0 if neither), matched as the
 * reference's IGNORECASE pattern does on lower-cased text: 's' also matches U+017F (long s, whose
 * simple case fold is 's'); no other code point folds to the letters of these names. Such a
 * match is one piece of the split, but only the exact ASCII names become special ids. */
static size_t special_at(const uint32_t *s, size_t n, int *which) {
    static const char *names[2] = {"<|startoftext|>", "<|endoftext|>"};
    for (int k = 0; k < 2; k++) {
        size_t L = strlen(names[k]), i = 0;
        for (; i < L && i < n; i++)
            if (s[i] != (uint32_t)names[k][i] && !(names[k][i] == 's' && s[i] == 0x17F)) break;
        if (i == L) {
            *which = k;
            return L;
        }
    }
    return 0;
}

/* Length of 's 't 're 've 'm 'll 'd at s[0] == '\'' (0 if none); 's also with U+017F. */
static size_t contraction_at(const uint32_t *s, size_t n) {
    if (n < 2) return 0;
    uint32_t c = s[1];
    if (c == 's' || c == 0x17F || c == 't' || c == 'm' || c == 'd') return 2;
    if (n < 3) return 0;
    if ((c == 'r' || c == 'v') && s[2] == 'e') return 3;
    if (c == 'l' && s[2] == 'l') return 3;
    return 0;
}

/* UTF-8 of cps[0..k) into the workspace and BPE it. */
static int encode_piece(const dinoc_tokenizer *t, bpe_ws *w, const uint32_t *cps, size_t k,
                        id_sink *o) {
    size_t m = 0;
    for (size_t i = 0; i < k; i++) m += cps[i] < 0x80 ? 1 : cps[i] < 0x800 ? 2 : cps[i] < 0x10000 ? 3 : 4;
    /* sized by the piece's UTF-8 bytes (61 bytes of workspace per byte), not 4 per code point */
    if (!ws_reserve(w, m)) return 0;
    m = 0;
    for (size_t i = 0; i < k; i++) m += (size_t)dinoc_utf8_encode(cps[i], w->bytes + m);
    bpe_piece(t, w, m, o);
    return 1;
}

/* whitespace_clean(basic_clean(text)) after unescaping: strip (str.isspace), every run of regex
 * \s -> one space, strip again; in place, returns the new length. */
static size_t clean_spaces(uint32_t *a, size_t n) {
    size_t s = 0, e = n, k = 0;
    while (s < e && dinoc_uc_py_isspace(a[s])) s++;
    while (e > s && dinoc_uc_py_isspace(a[e - 1])) e--;
    int in_run = 0;
    for (size_t i = s; i < e; i++) {
        int sp = dinoc_uc_classify(a[i]) == DINOC_UC_SPACE;
        if (!sp) a[k++] = a[i];
        else if (!in_run) a[k++] = ' ';
        in_run = sp;
    }
    s = 0;
    while (s < k && dinoc_uc_py_isspace(a[s])) s++;
    while (k > s && dinoc_uc_py_isspace(a[k - 1])) k--;
    memmove(a, a + s, (k - s) * sizeof *a);
    return k - s;
}

/* The pattern, run over the cleaned, lower-cased text. */
static int pretokenize(const dinoc_tokenizer *t, bpe_ws *w, const uint32_t *s, size_t n,
                       id_sink *o) {
    size_t i = 0;
    while (i < n) {
        int    which;
        size_t k = s[i] == '<' ? special_at(s + i, n - i, &which) : 0;
        if (k) {
            /* the reference's BPE cache maps only the exact names to the special ids; a name
             * matched through long s is an ordinary piece */
            int exact = 1;
            for (size_t j = 0; j < k; j++) exact &= s[i + j] < 0x80;
            if (exact) emit(o, which == 0 ? t->sot : t->eot);
            else if (!encode_piece(t, w, s + i, k, o)) return 0;
            i += k;
            continue;
        }
        k = s[i] == '\'' ? contraction_at(s + i, n - i) : 0;
        dinoc_uc_class c = dinoc_uc_classify(s[i]);
        if (!k && (c == DINOC_UC_LETTER || c == DINOC_UC_OTHER)) { /* a run of the same class */
            k = 1;
            while (i + k < n && dinoc_uc_classify(s[i + k]) == c) k++;
        } else if (!k && c == DINOC_UC_NUMBER) {
            k = 1; /* [\p{N}]: one digit per piece */
        }
        if (!k) { /* \s and U+0345 belong to no alternative */
            i++;
            continue;
        }
        if (!encode_piece(t, w, s + i, k, o)) return 0;
        i += k;
    }
    return 1;
}

dinoc_status dinoc_tokenize(const dinoc_tokenizer *t, const char *text, size_t len, int32_t *ids,
                            int max_ids, int *n) {
    if (n) *n = 0;
    if (!t || !n || (!text && len) || max_ids < 0 || (max_ids > 0 && !ids))
        return dinoc_fail(DINOC_ERR_ARG, "tokenize: NULL or negative argument");
    if (len > TEXT_MAX)
        return dinoc_fail(DINOC_ERR_ARG, "tokenize: text of %zu bytes, more than the %zu accepted",
                          len, TEXT_MAX);
    uint32_t *a = dinoc_calloc(len + 1, sizeof *a), *b = dinoc_calloc(2 * len + 1, sizeof *b);
    bpe_ws    w = {0};
    id_sink   o = {ids, max_ids, 0};
    dinoc_status s = DINOC_OK;
    size_t    na = 0, bad = 0;
    if (!a || !b) s = dinoc_fail(DINOC_ERR_NOMEM, "tokenize: cannot allocate for %zu bytes", len);
    else if (len && dinoc_utf8_decode(a, &na, text, len, &bad) != 0)
        s = dinoc_fail(DINOC_ERR_ARG, "tokenize: invalid UTF-8 at byte %zu (0x%02X)", bad,
                       (unsigned char)text[bad]);
    if (s == DINOC_OK) {
        if (len && memchr(text, '&', len)) { /* html.unescape twice; never lengthens the text */
            na = dinoc_html_unescape(b, a, na);
            na = dinoc_html_unescape(a, b, na);
        }
        na        = clean_spaces(a, na);
        size_t nb = dinoc_uc_lower(b, a, na);
        if (!pretokenize(t, &w, b, nb, &o))
            s = dinoc_fail(DINOC_ERR_NOMEM, "tokenize: cannot allocate the BPE workspace");
    }
    if (s == DINOC_OK && o.n > 0x7fffffff) s = dinoc_fail(DINOC_ERR_ARG, "tokenize: over 2^31 ids");
    ws_free(&w);
    dinoc_free(a);
    dinoc_free(b);
    if (s == DINOC_OK) *n = (int)o.n;
    return s;
}

dinoc_status dinoc_tokenize_clip(const dinoc_tokenizer *t, const char *text, int32_t *ids, int ctx,
                                 int truncate, int *n) {
    if (n) *n = 0;
    if (!t || !text || !ids || ctx < 1)
        return dinoc_fail(DINOC_ERR_ARG, "tokenize_clip: NULL text/ids or context %d < 1", ctx);
    int          k = 0;
    dinoc_status s = dinoc_tokenize(t, text, strlen(text), ids + 1, ctx - 1, &k);
    if (s != DINOC_OK) return s;
    long total = (long)k + 2;
    if (total > ctx && !truncate)
        return dinoc_fail(DINOC_ERR_ARG, "tokenize_clip: %ld tokens with <|startoftext|> and "
                          "<|endoftext|>, more than the context of %d (truncate to cut)", total, ctx);
    ids[0] = t->sot;
    int used = total > ctx ? ctx : (int)total;
    ids[used - 1] = t->eot; /* truncate=True: the last kept token becomes <|endoftext|> */
    for (int i = used; i < ctx; i++) ids[i] = 0;
    if (n) *n = used;
    return DINOC_OK;
}

/* ---- decoding and the vocabulary ------------------------------------------------------------ */

dinoc_status dinoc_detokenize(const dinoc_tokenizer *t, const int32_t *ids, int n, char *out,
                              size_t cap, size_t *len) {
    if (len) *len = 0;
    if (!t || n < 0 || (n > 0 && !ids) || (cap > 0 && !out))
        return dinoc_fail(DINOC_ERR_ARG, "detokenize: NULL or negative argument");
    size_t raw_len = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_tokens)
            return dinoc_fail(DINOC_ERR_ARG, "detokenize: id %d at position %d is outside the "
                              "vocabulary (0..%d)", (int)ids[i], i, t->n_tokens - 1);
        raw_len += ids[i] < t->n_base ? t->dec_off[ids[i] + 1] - t->dec_off[ids[i]]
                                      : strlen(t->added[ids[i] - t->n_base]);
    }
    unsigned char *raw = dinoc_calloc(raw_len + 1, 1);
    if (!raw) return dinoc_fail(DINOC_ERR_NOMEM, "detokenize: cannot allocate %zu bytes", raw_len);
    size_t r = 0;
    for (int i = 0; i < n; i++) {
        int         id = ids[i];
        const char *src = id < t->n_base ? t->dec + t->dec_off[id] : t->added[id - t->n_base];
        size_t      l   = id < t->n_base ? t->dec_off[id + 1] - t->dec_off[id] : strlen(src);
        memcpy(raw + r, src, l);
        r += l;
    }
    /* bytes -> text with U+FFFD for invalid UTF-8, then "</w>" -> " " (Python's order; "</w>" is
     * ASCII, so the order does not change the result) */
    size_t k = 0;
    for (size_t i = 0; i < raw_len;) {
        const char *piece;
        size_t      pl;
        long        u = dinoc_utf8_unit(raw + i, raw_len - i);
        if (u > 0 && raw_len - i >= 4 && memcmp(raw + i, "</w>", 4) == 0)
            piece = " ", pl = 1, u = 4;
        else if (u > 0)
            piece = (const char *)raw + i, pl = (size_t)u;
        else
            piece = "\xEF\xBF\xBD", pl = 3, u = -u;
        for (size_t j = 0; j < pl; j++, k++)
            if (k + 1 < cap) out[k] = piece[j];
        i += (size_t)u;
    }
    if (cap > 0) out[k < cap ? k : cap - 1] = 0;
    if (len) *len = k;
    dinoc_free(raw);
    return DINOC_OK;
}

dinoc_status dinoc_tokenizer_add_token(dinoc_tokenizer *t, const char *token, int32_t *id) {
    if (!t || !token || !token[0] || !id)
        return dinoc_fail(DINOC_ERR_ARG, "tokenizer_add_token: NULL or empty token");
    int have = smap_find(t, token, strlen(token));
    if (have >= 0) {
        *id = have;
        return DINOC_OK;
    }
    int k = t->n_tokens - t->n_base;
    if (k >= DINOC_TOKENIZER_MAX_ADDED)
        return dinoc_fail(DINOC_ERR_ARG, "tokenizer_add_token: '%.40s': already %d added tokens",
                          token, DINOC_TOKENIZER_MAX_ADDED);
    size_t l = strlen(token);
    t->added[k] = dinoc_calloc(l + 1, 1);
    if (!t->added[k]) return dinoc_fail(DINOC_ERR_NOMEM, "tokenizer_add_token: out of memory");
    memcpy(t->added[k], token, l);
    *id = t->n_tokens++;
    smap_put(t, *id);
    return DINOC_OK;
}

int dinoc_tokenizer_vocab_size(const dinoc_tokenizer *t) { return t ? t->n_tokens : 0; }
int dinoc_tokenizer_sot(const dinoc_tokenizer *t) { return t ? t->sot : -1; }
int dinoc_tokenizer_eot(const dinoc_tokenizer *t) { return t ? t->eot : -1; }

int dinoc_tokenizer_token_id(const dinoc_tokenizer *t, const char *token) {
    return t && token ? smap_find(t, token, strlen(token)) : -1;
}

const char *dinoc_tokenizer_token_str(const dinoc_tokenizer *t, int id) {
    return t && id >= 0 && id < t->n_tokens ? spelling(t, id) : NULL;
}

/* ---- where the vocabulary lives ------------------------------------------------------------- */

static int take_path(char *out, size_t cap, const char *p) {
    if (!dinoc_file_exists(p) && !dinoc_is_dir(p)) return 0;
    snprintf(out, cap, "%s", p);
    return strlen(p) < cap;
}

dinoc_status dinoc_tokenizer_find_vocab(char *out, size_t cap, const char *path) {
    if (!out || cap == 0) return dinoc_fail(DINOC_ERR_ARG, "tokenizer_find_vocab: no output buffer");
    out[0] = 0;
    if (path) {
        if (take_path(out, cap, path)) return DINOC_OK;
        return dinoc_fail(DINOC_ERR_IO, "vocabulary %s: no such file", path);
    }
    const char *env = getenv("DINOC_VOCAB");
    if (env && env[0]) {
        if (take_path(out, cap, env)) return DINOC_OK;
        return dinoc_fail(DINOC_ERR_IO, "$DINOC_VOCAB=%s: no such file", env);
    }
    char    exe[4096], cand[4200] = "";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n]      = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(cand, sizeof cand, "%s/../data/%s", exe, DINOC_TOKENIZER_VOCAB);
        if (take_path(out, cap, cand)) return DINOC_OK;
    }
    if (take_path(out, cap, "data/" DINOC_TOKENIZER_VOCAB)) return DINOC_OK;
    return dinoc_fail(DINOC_ERR_IO, "no CLIP vocabulary: tried $DINOC_VOCAB (unset), %s and ./data/%s; "
                      "pass --vocab FILE", cand[0] ? cand : "(no /proc/self/exe)",
                      DINOC_TOKENIZER_VOCAB);
}
