/* textdata.c: text corpora for MLM (textdata.h): entries, tokenisation, split, the compact
 * vocabulary and its file, packing, shuffled batches. Tested by tests/test_mlm_train.c. */
#include "textdata.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <string.h>

/* ---- reading ---------------------------------------------------------------------------------- */

typedef struct {
    dinoc_text_corpus *c;
    int64_t            cap_ids, cap_entries;
} builder;

static dinoc_status add_entry(builder *b, const dinoc_tokenizer *tok, const char *s, size_t len,
                              const char *where) {
    dinoc_text_corpus *c = b->c;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == '\t')) len--;
    if (!len) return DINOC_OK;
    if (c->n_entries + 1 >= b->cap_entries) {
        int64_t  nc = b->cap_entries * 2 + 1024;
        int64_t *no = realloc(c->off, sizeof(int64_t) * (size_t)nc);
        if (!no) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory reading %s", where);
        c->off = no, b->cap_entries = nc;
    }
    const int64_t at = c->off[c->n_entries];
    /* a BPE token covers at least one byte, so the buffer (sized to the files' bytes) nearly always
     * has room; lower-casing can lengthen a text, so a longer result grows it and tokenises again */
    int          n = 0, room = (int)(b->cap_ids - at < (int64_t)INT32_MAX ? b->cap_ids - at : INT32_MAX);
    dinoc_status st = dinoc_tokenize(tok, s, len, c->ids + at, room, &n);
    if (!st && n > room) {
        int32_t *ni = realloc(c->ids, sizeof(int32_t) * (size_t)(at + 2 * (int64_t)n));
        if (!ni) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory reading %s", where);
        c->ids = ni, b->cap_ids = at + 2 * (int64_t)n;
        st = dinoc_tokenize(tok, s, len, c->ids + at, n, &n);
    }
    if (st) return dinoc_fail_prefix(st, "%s, entry %lld", where, (long long)c->n_entries);
    c->off[++c->n_entries] = at + n;
    return DINOC_OK;
}

/* Splits text into entries (fortune "%" lines, else blank-line paragraphs) and tokenises them. */
static dinoc_status add_text(builder *b, const dinoc_tokenizer *tok, const char *t, size_t len,
                             const char *where) {
    /* memmem, not strstr: t holds len bytes and need not end in 0 (fuzz_textfiles finding F17) */
    int fortune = (len >= 2 && t[0] == '%' && (t[1] == '\n' || t[1] == '\r')) || memmem(t, len, "\n%\n", 3) ||
                  memmem(t, len, "\n%\r\n", 4);
    size_t start = 0, i = 0;
    while (i <= len) {
        size_t e = i;
        while (e < len && t[e] != '\n') e++;
        /* the line is t[i..e) */
        size_t ll = e - i;
        if (ll && t[i + ll - 1] == '\r') ll--;
        int sep;
        if (fortune) sep = ll == 1 && t[i] == '%';
        else {
            sep = 1;
            for (size_t k = i; k < i + ll; k++) sep &= t[k] == ' ' || t[k] == '\t';
        }
        if (sep || e >= len) {
            size_t stop = sep ? i : len;
            dinoc_status s = add_entry(b, tok, t + start, stop - start, where);
            if (s) return s;
            start = e + 1;
        }
        i = e + 1;
    }
    b->c->n_bytes += (int64_t)len;
    return DINOC_OK;
}

static dinoc_status corpus_begin(builder *b, size_t bytes) {
    b->c = calloc(1, sizeof *b->c);
    if (!b->c) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    b->cap_entries = 1024, b->cap_ids = (int64_t)bytes + 1;
    b->c->off = calloc((size_t)b->cap_entries, sizeof(int64_t));
    b->c->ids = malloc(sizeof(int32_t) * (size_t)b->cap_ids);
    if (!b->c->off || !b->c->ids) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for %zu bytes of text", bytes);
    return DINOC_OK;
}

static dinoc_status corpus_end(dinoc_text_corpus **out, builder *b, dinoc_status s, const char *what) {
    if (!s && b->c->n_entries == 0) s = dinoc_fail(DINOC_ERR_ARG, "%s: no text entries", what);
    if (s) {
        dinoc_text_corpus_free(b->c);
        return s;
    }
    *out = b->c;
    return DINOC_OK;
}

dinoc_status dinoc_text_corpus_from_text(dinoc_text_corpus **out, const dinoc_tokenizer *tok,
                                         const char *text, size_t len) {
    builder      b;
    dinoc_status s = corpus_begin(&b, len);
    if (!s) s = add_text(&b, tok, text, len, "text");
    return corpus_end(out, &b, s, "text");
}

dinoc_status dinoc_text_corpus_read(dinoc_text_corpus **out, const dinoc_tokenizer *tok,
                                    const char *const *paths, int n_paths) {
    *out = NULL;
    if (n_paths <= 0) return dinoc_fail(DINOC_ERR_ARG, "no text files given");
    char  **bufs = calloc((size_t)n_paths, sizeof(char *));
    size_t *lens = calloc((size_t)n_paths, sizeof(size_t)), total = 0;
    builder b = {NULL, 0, 0};
    dinoc_status s = bufs && lens ? DINOC_OK : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n_paths && !s; i++) {
        s = dinoc_read_file(paths[i], (size_t)1 << 30, &bufs[i], &lens[i]);
        total += lens[i];
    }
    if (!s) s = corpus_begin(&b, total);
    for (int i = 0; i < n_paths && !s; i++) s = add_text(&b, tok, bufs[i], lens[i], paths[i]);
    for (int i = 0; bufs && i < n_paths; i++) free(bufs[i]);
    free(bufs), free(lens);
    if (!b.c) return s;
    return corpus_end(out, &b, s, n_paths == 1 ? paths[0] : "the text files");
}

void dinoc_text_corpus_free(dinoc_text_corpus *c) {
    if (!c) return;
    free(c->off), free(c->ids), free(c);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

dinoc_status dinoc_text_fortunes_paths(char ***paths, int *n, const char *dir) {
    *paths = NULL, *n = 0;
    if (!dir) dir = DINOC_FORTUNES_DIR;
    DIR *d = opendir(dir);
    if (!d) return dinoc_fail(DINOC_ERR_IO, "%s: cannot open the fortunes folder (apt install fortunes)", dir);
    char **list = NULL;
    int    cnt = 0, cap = 0;
    dinoc_status s = DINOC_OK;
    for (struct dirent *e; (e = readdir(d)) && !s;) {
        if (e->d_name[0] == '.' || ends_with(e->d_name, ".dat") || ends_with(e->d_name, ".u8")) continue;
        char *p = dinoc_path_join(dir, e->d_name);
        if (!p) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        else if (dinoc_is_dir(p) || !dinoc_file_exists(p)) free(p);
        else {
            if (cnt == cap) {
                char **nl = realloc(list, sizeof(char *) * (size_t)(cap = cap * 2 + 16));
                if (!nl) {
                    free(p);
                    s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
                    break;
                }
                list = nl;
            }
            list[cnt++] = p;
        }
    }
    closedir(d);
    if (!s && !cnt) s = dinoc_fail(DINOC_ERR_IO, "%s: no fortune text files", dir);
    if (s) {
        dinoc_text_free_paths(list, cnt);
        return s;
    }
    qsort(list, (size_t)cnt, sizeof(char *), cmp_str);
    *paths = list, *n = cnt;
    return DINOC_OK;
}

void dinoc_text_free_paths(char **paths, int n) {
    for (int i = 0; paths && i < n; i++) free(paths[i]);
    free(paths);
}

dinoc_status dinoc_text_corpus_open(dinoc_text_corpus **out, dinoc_tokenizer **tok, const char *bpe,
                                    const char *const *paths, int n_paths, const char *fortunes_dir,
                                    char *name, size_t cap) {
    char         vpath[4096];
    int32_t      mask;
    dinoc_status s = dinoc_tokenizer_find_vocab(vpath, sizeof vpath, bpe);
    *out = NULL, *tok = NULL;
    if (!s) s = dinoc_tokenizer_load(tok, vpath);
    if (!s) s = dinoc_tokenizer_add_token(*tok, "[MASK]", &mask);
    if (s) return s;
    const char *base = strrchr(vpath, '/');
    if (name) snprintf(name, cap, "openai-clip-bpe %s + [MASK]=%d", base ? base + 1 : vpath, mask);
    if (n_paths > 0) return dinoc_text_corpus_read(out, *tok, paths, n_paths);
    char **list;
    int    n;
    if ((s = dinoc_text_fortunes_paths(&list, &n, fortunes_dir))) return s;
    s = dinoc_text_corpus_read(out, *tok, (const char *const *)list, n);
    dinoc_text_free_paths(list, n);
    return s;
}

dinoc_status dinoc_text_corpus_split(dinoc_text_corpus **out, const dinoc_text_corpus *c,
                                     int holdout, int heldout) {
    *out = NULL;
    builder b;
    dinoc_status s = corpus_begin(&b, (size_t)c->off[c->n_entries]);
    for (int64_t i = 0; i < c->n_entries && !s; i++) {
        int held = holdout > 0 && i % holdout == holdout - 1;
        if (held != (heldout != 0)) continue;
        if (b.c->n_entries + 1 >= b.cap_entries) {
            int64_t *no = realloc(b.c->off, sizeof(int64_t) * (size_t)(b.cap_entries = c->n_entries + 1));
            if (!no) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
            else b.c->off = no;
            if (s) break;
        }
        const int64_t at = b.c->off[b.c->n_entries], k = c->off[i + 1] - c->off[i];
        memcpy(b.c->ids + at, c->ids + c->off[i], sizeof(int32_t) * (size_t)k);
        b.c->off[++b.c->n_entries] = at + k;
    }
    if (b.c) b.c->n_bytes = c->n_bytes;
    if (!b.c) return s;
    return corpus_end(out, &b, s, heldout ? "held-out split" : "training split");
}

/* ---- vocabulary ------------------------------------------------------------------------------- */

void dinoc_text_vocab_free(dinoc_text_vocab *v) {
    free(v->to_tok), free(v->to_model), free(v->counts);
    memset(v, 0, sizeof *v);
}

/* to_model from to_tok (tokenizer ids outside [0, tok_vocab), and one given twice, are refused). */
static dinoc_status vocab_index(dinoc_text_vocab *v, const char *where) {
    v->to_model = malloc(sizeof(int32_t) * (size_t)v->tok_vocab);
    if (!v->to_model) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    for (int i = 0; i < v->tok_vocab; i++) v->to_model[i] = DINOC_TV_UNK;
    for (int i = DINOC_TV_MASK; i < v->n; i++) {
        if (v->to_tok[i] < 0 || v->to_tok[i] >= v->tok_vocab)
            return dinoc_fail(DINOC_ERR_FORMAT, "%s: model id %d maps to tokenizer id %d, outside the "
                              "tokenizer's %d", where, i, v->to_tok[i], v->tok_vocab);
        if (v->to_model[v->to_tok[i]] != DINOC_TV_UNK)
            return dinoc_fail(DINOC_ERR_FORMAT, "%s: model ids %d and %d both map to tokenizer id %d "
                              "(a duplicate id)", where, v->to_model[v->to_tok[i]], i, v->to_tok[i]);
        v->to_model[v->to_tok[i]] = i;
    }
    return DINOC_OK;
}

dinoc_status dinoc_text_vocab_build(dinoc_text_vocab *v, const dinoc_text_corpus *train,
                                    const dinoc_tokenizer *tok) {
    memset(v, 0, sizeof *v);
    const int32_t mask = dinoc_tokenizer_token_id(tok, "[MASK]");
    if (mask < 0) return dinoc_fail(DINOC_ERR_ARG, "the tokenizer has no [MASK] token (add it first)");
    v->tok_vocab = dinoc_tokenizer_vocab_size(tok);
    int64_t *seen = calloc((size_t)v->tok_vocab, sizeof(int64_t));
    if (!seen) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    const int32_t sot = dinoc_tokenizer_sot(tok), eot = dinoc_tokenizer_eot(tok);
    for (int64_t i = 0; i < train->off[train->n_entries]; i++) seen[train->ids[i]]++;
    int n = DINOC_TV_N_SPECIAL;
    for (int i = 0; i < v->tok_vocab; i++) n += seen[i] && i != sot && i != eot && i != mask;
    v->n      = n;
    v->to_tok = malloc(sizeof(int32_t) * (size_t)n);
    v->counts = calloc((size_t)n, sizeof(int64_t));
    dinoc_status s = v->to_tok && v->counts ? DINOC_OK : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    if (!s) {
        v->to_tok[DINOC_TV_PAD] = -1, v->to_tok[DINOC_TV_UNK] = -2, v->to_tok[DINOC_TV_MASK] = mask;
        v->to_tok[DINOC_TV_CLS] = sot, v->to_tok[DINOC_TV_SEP] = eot;
        v->counts[DINOC_TV_SEP] = train->n_entries;
        v->counts[DINOC_TV_CLS] = seen[sot], v->counts[DINOC_TV_SEP] += seen[eot];
        int k = DINOC_TV_N_SPECIAL;
        for (int i = 0; i < v->tok_vocab; i++)
            if (seen[i] && i != sot && i != eot && i != mask) v->counts[k] = seen[i], v->to_tok[k++] = i;
        s = vocab_index(v, "vocabulary");
    }
    free(seen);
    if (s) dinoc_text_vocab_free(v);
    return s;
}

dinoc_status dinoc_text_vocab_save(const dinoc_text_vocab *v, const char *dir, const char *tokenizer) {
    cJSON *o = cJSON_CreateObject(), *ids = cJSON_CreateArray(), *cnt = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "tokenizer", tokenizer ? tokenizer : "openai-clip-bpe");
    cJSON_AddStringToObject(o, "mask_token", "[MASK]");
    cJSON_AddStringToObject(o, "note", "model id i is tokenizer id ids[i]; -1 [PAD], -2 [UNK]; counts: "
                                       "occurrences in the training split");
    for (int i = 0; i < v->n; i++) {
        cJSON_AddItemToArray(ids, cJSON_CreateNumber(v->to_tok[i]));
        cJSON_AddItemToArray(cnt, cJSON_CreateNumber((double)v->counts[i]));
    }
    cJSON_AddItemToObject(o, "ids", ids);
    cJSON_AddItemToObject(o, "counts", cnt);
    char *txt = cJSON_PrintUnformatted(o), *path = dinoc_path_join(dir, DINOC_TEXT_VOCAB_FILE);
    cJSON_Delete(o);
    dinoc_status s = txt && path ? dinoc_write_file_atomic(path, txt, strlen(txt))
                                 : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    free(txt), free(path);
    return s;
}

/* d is an integer in [lo, hi] (NaN and infinities are not). */
static int exact_int(double d, double lo, double hi) { return d >= lo && d <= hi && d == floor(d); }

dinoc_status dinoc_text_vocab_load(dinoc_text_vocab *v, const char *dir, int tok_vocab) {
    memset(v, 0, sizeof *v);
    char *path = dinoc_path_join(dir, DINOC_TEXT_VOCAB_FILE);
    if (!path) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    cJSON       *o = NULL;
    dinoc_status s = dinoc_json_load(&o, path);
    if (s) {
        free(path);
        return s;
    }
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(o, "ids");
    const cJSON *cnt = cJSON_GetObjectItemCaseSensitive(o, "counts");
    int          n   = cJSON_IsArray(ids) ? cJSON_GetArraySize(ids) : 0;
    if (n <= DINOC_TV_N_SPECIAL || !cJSON_IsArray(cnt) || cJSON_GetArraySize(cnt) != n)
        s = dinoc_fail(DINOC_ERR_FORMAT, "%s: 'ids' and 'counts' must be arrays of the same length > %d",
                       path, DINOC_TV_N_SPECIAL);
    if (!s) {
        v->n = n, v->tok_vocab = tok_vocab;
        v->to_tok = malloc(sizeof(int32_t) * (size_t)n);
        v->counts = malloc(sizeof(int64_t) * (size_t)n);
        if (!v->to_tok || !v->counts) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    }
    /* exact integers in range before any cast (an out-of-range double cast to an integer is UB;
     * 7.5 must not become 7): ids in the int32 range (the tokenizer's range is checked after),
     * counts in 0..2^53 (what a double holds exactly) */
    for (int i = 0; i < n && !s; i++) {
        const cJSON *a = cJSON_GetArrayItem(ids, i), *c = cJSON_GetArrayItem(cnt, i);
        if (!cJSON_IsNumber(a) || !exact_int(a->valuedouble, INT32_MIN, INT32_MAX))
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: ids[%d] is not an integer in the int32 range", path, i);
        else if (!cJSON_IsNumber(c) || !exact_int(c->valuedouble, 0, 9007199254740992.0))
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: counts[%d] is not an integer in 0..2^53", path, i);
        else v->to_tok[i] = (int32_t)a->valuedouble, v->counts[i] = (int64_t)c->valuedouble;
    }
    if (!s && (v->to_tok[DINOC_TV_PAD] != -1 || v->to_tok[DINOC_TV_UNK] != -2))
        s = dinoc_fail(DINOC_ERR_FORMAT, "%s: ids[0] and ids[1] must be -1 ([PAD]) and -2 ([UNK])", path);
    if (!s) s = vocab_index(v, path);
    cJSON_Delete(o);
    free(path);
    if (s) dinoc_text_vocab_free(v);
    return s;
}

/* ---- packing and batches ---------------------------------------------------------------------- */

dinoc_status dinoc_text_pack(dinoc_text_packed *p, const dinoc_text_corpus *c,
                             const dinoc_text_vocab *v, int T) {
    memset(p, 0, sizeof *p);
    if (T < 2) return dinoc_fail(DINOC_ERR_ARG, "context length %d (need at least 2)", T);
    const int64_t stream = c->off[c->n_entries] + c->n_entries; /* ids + one [SEP] per entry */
    p->T     = T;
    p->n_seq = (stream + T - 2) / (T - 1);
    p->ids   = calloc((size_t)p->n_seq * T, sizeof(int32_t)); /* calloc: [PAD] = 0 */
    p->len   = malloc(sizeof(int32_t) * (size_t)p->n_seq);
    if (!p->ids || !p->len) {
        dinoc_text_packed_free(p);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory packing %lld sequences", (long long)p->n_seq);
    }
    int64_t k = 0; /* position in the stream */
    for (int64_t e = 0; e < c->n_entries; e++)
        for (int64_t i = c->off[e]; i <= c->off[e + 1]; i++, k++) {
            const int32_t t  = c->ids[i];
            const int32_t id = i == c->off[e + 1] ? DINOC_TV_SEP : t >= 0 && t < v->tok_vocab ? v->to_model[t] : DINOC_TV_UNK;
            int32_t      *row = p->ids + (k / (T - 1)) * T;
            row[0]            = DINOC_TV_CLS;
            row[1 + k % (T - 1)] = id;
        }
    for (int64_t s = 0; s < p->n_seq; s++) {
        p->len[s] = s + 1 < p->n_seq ? T : (int32_t)(1 + stream - s * (T - 1));
        p->n_tokens += p->len[s];
    }
    return DINOC_OK;
}

void dinoc_text_packed_free(dinoc_text_packed *p) {
    free(p->ids), free(p->len);
    memset(p, 0, sizeof *p);
}

dinoc_status dinoc_text_loader_init(dinoc_text_loader *l, const dinoc_text_packed *p, int B,
                                    uint64_t seed, int64_t epoch, int64_t index) {
    memset(l, 0, sizeof *l);
    if (B <= 0 || B > p->n_seq)
        return dinoc_fail(DINOC_ERR_ARG, "batch %d: the training text packs into only %lld sequences of %d "
                          "tokens", B, (long long)p->n_seq, p->T);
    if (epoch < 0 || index < 0 || index % B || index + B > p->n_seq)
        return dinoc_fail(DINOC_ERR_ARG, "loader position %lld/%lld does not fit %lld sequences in batches of %d",
                          (long long)epoch, (long long)index, (long long)p->n_seq, B);
    l->p = p, l->B = B, l->seed = seed, l->epoch = epoch, l->index = index, l->perm_epoch = -1;
    l->perm = malloc(sizeof(int64_t) * (size_t)p->n_seq);
    return l->perm ? DINOC_OK : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
}

void dinoc_text_loader_free(dinoc_text_loader *l) {
    free(l->perm);
    l->perm = NULL;
}

int64_t dinoc_text_loader_batches_per_epoch(const dinoc_text_loader *l) { return l->p->n_seq / l->B; }

void dinoc_text_loader_next(dinoc_text_loader *l, int32_t *ids, int32_t *lengths, int *epoch_end) {
    const int64_t N = l->p->n_seq;
    const int     T = l->p->T;
    if (l->perm_epoch != l->epoch) {
        /* Fisher-Yates from a generator seeded by (seed, epoch): any epoch's order is rebuilt alone */
        dinoc_rng r;
        dinoc_rng_seed(&r, l->seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(l->epoch + 1)));
        for (int64_t i = 0; i < N; i++) l->perm[i] = i;
        for (int64_t i = N - 1; i > 0; i--) {
            int64_t j = (int64_t)(dinoc_rng_u64(&r) % (uint64_t)(i + 1)), t = l->perm[i];
            l->perm[i] = l->perm[j], l->perm[j] = t;
        }
        l->perm_epoch = l->epoch;
    }
    for (int b = 0; b < l->B; b++) {
        const int64_t s = l->perm[l->index + b];
        memcpy(ids + (size_t)b * T, l->p->ids + s * T, sizeof(int32_t) * T);
        lengths[b] = l->p->len[s];
    }
    l->index += l->B;
    int end = l->index + l->B > N;
    if (end) l->epoch++, l->index = 0;
    if (epoch_end) *epoch_end = end;
}
