/* shapes_io.c: writing the shapes set to disk (dinoc_shapes_write), its contact sheet
 * (dinoc_shapes_preview) and the file helpers shared with shapes_fmnist.c.
 *
 * Items are rendered and PNG-encoded in blocks of SHAPES_BLOCK on all threads (each thread owns
 * its pixel buffers); the text lines of a block are then appended in item order, so every file is
 * byte-identical whatever the thread count. Index files (pairs.tsv, labels.tsv, the name lists)
 * are written atomically once their split is done, and meta.json last: a set is complete iff
 * meta.json exists. Tested by tests/test_shapes.c and tests/cli_data_test.sh. */
#include "shapes.h"
#include "../viz/viz.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stb/stb_image_write.h>
#include <string.h>
#include <unistd.h>

#define SHAPES_BLOCK 256

/* ---- file helpers ------------------------------------------------------------------------------ */

typedef struct {
    FILE *f;
    int   err;
} png_file;

static void png_to_file(void *ctx, void *data, int size) {
    png_file *p = ctx;
    if (!p->err && size > 0 && fwrite(data, 1, (size_t)size, p->f) != (size_t)size) p->err = errno ? errno : EIO;
}

dinoc_status dinoc_shapes_png(const char *path, const uint8_t *pix, int w, int h, int c) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return dinoc_fail(DINOC_ERR_ARG, "%s: path too long", path);
    png_file p = {fopen(tmp, "wb"), 0};
    if (!p.f) return dinoc_fail(DINOC_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    int ok = stbi_write_png_to_func(png_to_file, &p, w, h, c, pix, w * c);
    if (fclose(p.f) != 0 && !p.err) p.err = errno ? errno : EIO;
    if (!ok || p.err || rename(tmp, path) != 0) {
        int e = p.err ? p.err : errno;
        unlink(tmp);
        return dinoc_fail(DINOC_ERR_IO, "%s: cannot write PNG: %s", path, ok ? strerror(e) : "encoding failed");
    }
    return DINOC_OK;
}

dinoc_status dinoc_shapes_split_dir(char **out, const char *dir, const char *split) {
    *out       = dinoc_path_join(dir, split);
    char *img  = *out ? dinoc_path_join(*out, "images") : NULL;
    char *mask = *out ? dinoc_path_join(*out, "masks") : NULL;
    dinoc_status s = !img || !mask ? dinoc_fail(DINOC_ERR_NOMEM, "out of memory") : dinoc_mkdir(img);
    if (!s) s = dinoc_mkdir(mask);
    free(img);
    free(mask);
    if (s) {
        free(*out);
        *out = NULL;
    }
    return s;
}

dinoc_status dinoc_shapes_begin(const char *dir) {
    char        *meta = dinoc_path_join(dir, "meta.json");
    dinoc_status s    = meta ? dinoc_mkdir(dir) : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    if (!s && unlink(meta) != 0 && errno != ENOENT)
        s = dinoc_fail(DINOC_ERR_IO, "%s: cannot remove the old set's meta.json: %s", meta, strerror(errno));
    free(meta);
    return s;
}

dinoc_status dinoc_shapes_write_lines(const char *path, const char *const *lines, int n) {
    dinoc_strbuf b = {0};
    for (int i = 0; i < n; i++) dinoc_strbuf_printf(&b, "%s\n", lines[i]);
    dinoc_status s = b.oom ? dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", path)
                           : dinoc_write_file_atomic(path, b.s ? b.s : "", b.len);
    dinoc_strbuf_free(&b);
    return s;
}

dinoc_status dinoc_shapes_write_meta(const char *dir, struct cJSON *j) {
    char        *text = j ? cJSON_Print(j) : NULL, *path = dinoc_path_join(dir, "meta.json");
    dinoc_status s    = !text || !path ? dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory for meta.json", dir)
                                       : dinoc_write_file_atomic(path, text, strlen(text));
    cJSON_free(text);
    cJSON_Delete(j);
    free(path);
    return s;
}

/* ---- the set ------------------------------------------------------------------------------------ */

/* One item's text, kept until its block's lines are appended in order. */
typedef struct {
    char caption[DINOC_SHAPES_TEXT], label[DINOC_SHAPES_TEXT];
    int  label_id;
} item_text;

/* Index of word w (n bytes) in a vocabulary list, or -1. */
static int word_index(const char *w, int n, const char *(*name)(int), int count) {
    for (int i = 0; i < count; i++)
        if ((int)strlen(name(i)) == n && memcmp(name(i), w, (size_t)n) == 0) return i;
    return -1;
}

/* Hard negatives of a two-shape caption "a S1 C1 K1 REL a S2 C2 K2" (words: 4, 1-2, 4). The
 * caption's: the two colour words swapped ("a small blue circle above a large red square"); where
 * the colours are equal, the kind words; where both are, none. A phrase's (which = 1, 2: the first
 * or the last four words alone): its colour replaced by the other shape's, or else its kind.
 * any = 0 keeps only negatives whose colour-kind phrases are training compositions: a negative
 * naming a held-out composition would teach that composition only ever as wrong (measured: it
 * sinks the held-out classes, docs/clip.md). Writes into out (cap bytes) and returns 1, or
 * returns 0 (no negative, or not that pattern). */
/* Word i after swapping words x and y. */
static int swapped(int i, int x, int y) { return i == x ? y : i == y ? x : i; }

static int swap_negative(const char *cap, int which, int any, char *out, size_t cap_n) {
    const char *w[12];
    int         wl[12], nw = 0;
    for (const char *c = cap; *c && nw < 12;) {
        while (*c == ' ') c++;
        if (!*c) break;
        w[nw] = c;
        while (*c && *c != ' ') c++;
        wl[nw] = (int)(c - w[nw]), nw++;
    }
    if (nw < 9 || nw > 10 || wl[0] != 1 || w[0][0] != 'a' || wl[nw - 4] != 1 || w[nw - 4][0] != 'a') return 0;
    const int c1 = 2, k1 = 3, c2 = nw - 2, k2 = nw - 1;
#define SAME(i, j) (wl[i] == wl[j] && memcmp(w[i], w[j], (size_t)wl[i]) == 0)
    int x = c1, y = c2; /* the pair of words that differ: colours, else kinds */
    if (SAME(c1, c2)) x = k1, y = k2;
    if (SAME(x, y)) return 0;
#undef SAME
    int lo = which == 2 ? nw - 4 : 0, hi = which == 1 ? 4 : nw; /* words written */
    if (!any) { /* every phrase of the negative must be a training composition */
        for (int ph = 0; ph < 2; ph++) {
            if ((which == 1 && ph == 1) || (which == 2 && ph == 0)) continue;
            const int ci = ph ? c2 : c1, ki = ph ? k2 : k1; /* the words this phrase will hold */
            const int cj = swapped(ci, x, y), kj = swapped(ki, x, y);
            const int col  = word_index(w[cj], wl[cj], dinoc_shapes_colour_name, DINOC_SHAPES_COLOURS);
            const int kind = word_index(w[kj], wl[kj], dinoc_shapes_kind_name, DINOC_SHAPES_KINDS);
            if (col < 0 || kind < 0 || dinoc_shapes_held_out(col, kind)) return 0;
        }
    }
    size_t n = 0;
    for (int i = lo; i < hi; i++) {
        const int j = swapped(i, x, y); /* in a phrase: the other shape's word */
        if (n + (size_t)wl[j] + 2 > cap_n) return 0;
        if (i > lo) out[n++] = ' ';
        memcpy(out + n, w[j], (size_t)wl[j]), n += (size_t)wl[j];
    }
    out[n] = 0;
    return 1;
}

/* The relation negative of a two-shape caption: the same two phrases with the relation reversed
 * ("a small red circle above a large blue square" -> "... below ..."; "left of" <-> "right of"),
 * so it describes the same shapes placed the other way round. A phrase alone has no relation and
 * so no such negative. Random batches almost never hold two images with the same shapes in other
 * places, so without these nothing makes the towers encode the relation (measured, docs/clip.md).
 * Writes into out (cap bytes) and returns 1, or returns 0 (not a two-shape caption). */
static int relation_negative(const char *cap, char *out, size_t cap_n) {
    static const char *const from[4] = {" above a ", " below a ", " left of a ", " right of a "};
    static const char *const to[4]   = {" below a ", " above a ", " right of a ", " left of a "};
    for (int r = 0; r < 4; r++) {
        const char *at = strstr(cap, from[r]);
        if (!at) continue;
        int n = snprintf(out, cap_n, "%.*s%s%s", (int)(at - cap), cap, to[r], at + strlen(from[r]));
        return n > 0 && (size_t)n < cap_n;
    }
    return 0;
}

/* The hard negative of a caption row (phrase: 0 the whole caption, 1 or 2 one shape's phrase) for
 * hard_negatives mode m (dinoc_shapes_config); 0 where the row has none. */
static int row_negative(const char *cap, int phrase, int m, char *out, size_t cap_n) {
    if (m == DINOC_SHAPES_NEG_RELATION) return phrase == 0 && relation_negative(cap, out, cap_n);
    return m && swap_negative(cap, phrase, m == DINOC_SHAPES_NEG_ANY, out, cap_n);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

dinoc_status dinoc_shapes_write_split(const char *dir, const char *name, int64_t n, const dinoc_split_items *it,
                                      int64_t done0, int64_t total, dinoc_shapes_progress_fn progress, void *user,
                                      int64_t *distinct_captions) {
    const int     nt   = dinoc_get_threads();
    const size_t  npx  = (size_t)it->w * it->h;
    char         *sub  = NULL;
    item_text    *txt  = dinoc_calloc(SHAPES_BLOCK, sizeof *txt);
    uint8_t      *pix  = dinoc_calloc((size_t)nt * npx, (size_t)it->c + 1); /* per thread: image + mask */
    uint64_t     *hash = dinoc_calloc(n > 0 ? (size_t)n : 1, sizeof *hash);
    char        (*names)[DINOC_SHAPES_TEXT] = dinoc_calloc((size_t)it->nlabels, sizeof *names);
    dinoc_strbuf  pairs = {0}, labels = {0};
    char          err[512] = "";
    int64_t       err_at   = -1;
    dinoc_status  err_s    = DINOC_OK;
    dinoc_status  s = !txt || !pix || !hash || !names ? dinoc_fail(DINOC_ERR_NOMEM, "out of memory") : DINOC_OK;
    if (!s) s = dinoc_shapes_split_dir(&sub, dir, name);
    for (int64_t b0 = 0; !s && b0 < n; b0 += SHAPES_BLOCK) {
        int nb = (int)(n - b0 < SHAPES_BLOCK ? n - b0 : SHAPES_BLOCK);
#pragma omp parallel for schedule(dynamic, 4) num_threads(nt)
        for (int i = 0; i < nb; i++) {
            uint8_t     *img = pix + (size_t)dinoc_omp_thread_num() * npx * (it->c + 1), *mask = img + npx * it->c;
            char         path[4096];
            item_text   *t = &txt[i];
            dinoc_status e = it->item(it->user, b0 + i, img, mask, t->caption, t->label, &t->label_id);
            if (!e && (t->label_id < 0 || t->label_id >= it->nlabels))
                e = dinoc_fail(DINOC_ERR_ARG, "%s: item %lld: label id %d out of range", name, (long long)(b0 + i),
                               t->label_id);
            if (!e) {
                snprintf(path, sizeof path, "%s/images/%06lld.png", sub, (long long)(b0 + i));
                e = dinoc_shapes_png(path, img, it->w, it->h, it->c);
            }
            if (!e) {
                snprintf(path, sizeof path, "%s/masks/%06lld.png", sub, (long long)(b0 + i));
                e = dinoc_shapes_png(path, mask, it->w, it->h, 1);
            }
            if (e) {
#pragma omp critical(shapes_err)
                if (err_at < 0 || b0 + i < err_at) { /* keep the first item's message: deterministic */
                    err_at = b0 + i;
                    err_s  = e;
                    snprintf(err, sizeof err, "%s", dinoc_last_error());
                }
            }
        }
        if (err_at >= 0) {
            s = dinoc_fail(err_s, "%s", err); /* the worker's message, on this thread */
            break;
        }
        for (int i = 0; i < nb; i++) {
            const item_text *t = &txt[i];
            char neg[DINOC_SHAPES_TEXT];
            int  hn = row_negative(t->caption, 0, it->hard_negatives, neg, sizeof neg);
            dinoc_strbuf_printf(&pairs, "images/%06lld.png\t%s%s%s\n", (long long)(b0 + i), t->caption, hn ? "\t" : "",
                                hn ? neg : "");
            int nw = 1; /* two-shape captions have 4 + relation + 4 words: their phrases alone too */
            for (const char *c = t->caption; *c; c++) nw += *c == ' ';
            if (it->part_captions && nw >= 9) {
                /* the first phrase: the words before the 4th space; the second: after the 4th
                 * space from the end */
                int len = (int)strlen(t->caption), end1 = 0, start2 = len;
                for (int sp = 0; end1 < len && (sp += t->caption[end1] == ' ') < 4;) end1++;
                for (int sp = 0; start2 > 0 && (sp += t->caption[start2 - 1] == ' ') < 4;) start2--;
                for (int ph = 1; ph <= 2; ph++) {
                    hn = row_negative(t->caption, ph, it->hard_negatives, neg, sizeof neg);
                    dinoc_strbuf_printf(&pairs, "images/%06lld.png\t%.*s%s%s\n", (long long)(b0 + i),
                                        ph == 1 ? end1 : len - start2, t->caption + (ph == 1 ? 0 : start2),
                                        hn ? "\t" : "", hn ? neg : "");
                }
            }
            dinoc_strbuf_printf(&labels, "images/%06lld.png\t%s\n", (long long)(b0 + i), t->label);
            hash[b0 + i] = fnv1a(t->caption);
            if (!names[t->label_id][0]) snprintf(names[t->label_id], sizeof names[0], "%s", t->label);
        }
        if (pairs.oom || labels.oom) s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory for pairs.tsv", sub);
        if (progress) progress(user, done0 + b0 + nb, total);
    }
    /* the split's label names: those occurring, in label id order */
    const char **present = s ? NULL : dinoc_calloc((size_t)it->nlabels, sizeof *present);
    int          np      = 0;
    for (int k = 0; present && k < it->nlabels; k++)
        if (names[k][0]) present[np++] = names[k];
    char *pp = NULL, *lp = NULL, *nf = NULL;
    if (!s && (!present || !(pp = dinoc_path_join(sub, "pairs.tsv")) || !(lp = dinoc_path_join(sub, "labels.tsv")) ||
               !(nf = dinoc_path_join(sub, "label_names.txt"))))
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    if (!s) s = dinoc_write_file_atomic(pp, pairs.s ? pairs.s : "", pairs.len);
    if (!s) s = dinoc_write_file_atomic(lp, labels.s ? labels.s : "", labels.len);
    if (!s) s = dinoc_shapes_write_lines(nf, present, np);
    if (!s && distinct_captions) { /* distinct 64-bit caption hashes: collisions are negligible */
        qsort(hash, (size_t)n, sizeof *hash, cmp_u64);
        *distinct_captions = n > 0;
        for (int64_t i = 1; i < n; i++) *distinct_captions += hash[i] != hash[i - 1];
    }
    free(pp), free(lp), free(nf), free(sub);
    dinoc_strbuf_free(&pairs);
    dinoc_strbuf_free(&labels);
    dinoc_free(txt), dinoc_free(pix), dinoc_free(hash), dinoc_free(names), dinoc_free(present);
    return s;
}

/* The shapes set as a dinoc_split_items source. */
typedef struct {
    const dinoc_shapes_config *cfg;
    dinoc_shapes_split         split;
} shapes_src;

static dinoc_status shapes_item(void *user, int64_t i, uint8_t *img, uint8_t *mask, char *caption, char *label,
                                int *label_id) {
    const shapes_src   *src = user;
    dinoc_shapes_sample smp;
    dinoc_status        s = dinoc_shapes_render(&smp, img, mask, src->cfg, src->split, i);
    if (s) return s;
    memcpy(caption, smp.caption, DINOC_SHAPES_TEXT);
    memcpy(label, smp.label, DINOC_SHAPES_TEXT);
    *label_id = smp.shapes[0].colour * DINOC_SHAPES_KINDS + smp.shapes[0].kind;
    return DINOC_OK;
}

/* What meta.json records about one split. */
typedef struct {
    int64_t n, distinct_captions;
} split_stats;

static cJSON *str_array(const char *(*name)(int), int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(name(i)));
    return a;
}

static const char *size_name_i(int i) { return dinoc_shapes_size_name(i); }

static dinoc_status write_meta(const char *dir, const dinoc_shapes_config *cfg, int64_t n, float test_frac,
                               const split_stats st[2]) {
    cJSON *j = cJSON_CreateObject(), *sp = cJSON_CreateObject(), *ho = cJSON_CreateArray(), *voc = cJSON_CreateArray();
    char   buf[64];
    cJSON_AddStringToObject(j, "generator", "dinoc data shapes");
    cJSON_AddNumberToObject(j, "version", DINOC_SHAPES_VERSION);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)cfg->seed); /* exact even above 2^53 */
    cJSON_AddStringToObject(j, "seed", buf);
    cJSON_AddNumberToObject(j, "n", (double)n);
    cJSON_AddNumberToObject(j, "size", cfg->size);
    /* the float options as the decimals they were given as (0.2f prints as 0.200000003 in double) */
    cJSON_AddNumberToObject(j, "test_frac", round(test_frac * 1e6) / 1e6);
    cJSON_AddNumberToObject(j, "pair_frac", round(cfg->pair_frac * 1e6) / 1e6);
    cJSON_AddBoolToObject(j, "part_captions", cfg->part_captions != 0);
    static const char *const neg_names[] = {"none", "seen", "any", "relation"};
    cJSON_AddStringToObject(j, "hard_negatives", neg_names[cfg->hard_negatives]);
    for (int k = 0; k < 2; k++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "n", (double)st[k].n);
        cJSON_AddNumberToObject(o, "distinct_captions", (double)st[k].distinct_captions);
        cJSON_AddItemToObject(sp, k ? "test" : "train", o);
    }
    cJSON_AddItemToObject(j, "splits", sp);
    cJSON *mc = cJSON_CreateArray();
    cJSON_AddItemToArray(mc, cJSON_CreateString("background"));
    for (int k = 0; k < DINOC_SHAPES_KINDS; k++) cJSON_AddItemToArray(mc, cJSON_CreateString(dinoc_shapes_kind_name(k)));
    cJSON_AddItemToObject(j, "mask_classes", mc);
    cJSON_AddItemToObject(j, "kinds", str_array(dinoc_shapes_kind_name, DINOC_SHAPES_KINDS));
    cJSON_AddItemToObject(j, "colours", str_array(dinoc_shapes_colour_name, DINOC_SHAPES_COLOURS));
    cJSON_AddItemToObject(j, "sizes", str_array(size_name_i, 2));
    cJSON_AddItemToObject(j, "relations", str_array(dinoc_shapes_relation_name, DINOC_SHAPES_RELATIONS));
    int pairs[DINOC_SHAPES_HELD_OUT];
    dinoc_shapes_split_pairs(DINOC_SHAPES_TEST, pairs);
    for (int i = 0; i < DINOC_SHAPES_HELD_OUT; i++) {
        snprintf(buf, sizeof buf, "%s %s", dinoc_shapes_colour_name(pairs[i] / DINOC_SHAPES_KINDS),
                 dinoc_shapes_kind_name(pairs[i] % DINOC_SHAPES_KINDS));
        cJSON_AddItemToArray(ho, cJSON_CreateString(buf));
    }
    cJSON_AddItemToObject(j, "held_out", ho);
    /* every word a caption can hold, in a fixed order */
    const char *words[] = {"a", "small", "large", "of", "above", "below", "left", "right"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++) cJSON_AddItemToArray(voc, cJSON_CreateString(words[i]));
    for (int i = 0; i < DINOC_SHAPES_COLOURS; i++) cJSON_AddItemToArray(voc, cJSON_CreateString(dinoc_shapes_colour_name(i)));
    for (int i = 0; i < DINOC_SHAPES_KINDS; i++) cJSON_AddItemToArray(voc, cJSON_CreateString(dinoc_shapes_kind_name(i)));
    cJSON_AddItemToObject(j, "vocab", voc);
    cJSON_AddStringToObject(j, "label", "colour and kind of the caption's first shape");
    cJSON_AddStringToObject(j, "retrieval_ties", "items sharing a caption are equivalent: a text-to-image hit is any "
                                                 "image whose caption equals the query");
    return dinoc_shapes_write_meta(dir, j);
}

/* classes.txt, the root label_names.txt (all colour-kind pairs) and templates.txt: the set's own
 * zero-shot prompts, in its caption style (one shape's phrase, either size), as CLIP gives each of
 * its evaluation sets its own templates (openai/CLIP data/prompts.md); `dinoc eval zeroshot
 * --templates DIR/templates.txt` uses them (its default stays the 80 ImageNet templates). */
static dinoc_status write_names(const char *dir) {
    static const char *const templates[] = {"a small {}", "a large {}"};
    const char *classes[DINOC_SHAPES_KINDS + 1] = {"background"};
    const char *labels[DINOC_SHAPES_COLOURS * DINOC_SHAPES_KINDS];
    char        text[DINOC_SHAPES_COLOURS * DINOC_SHAPES_KINDS][32];
    for (int k = 0; k < DINOC_SHAPES_KINDS; k++) classes[k + 1] = dinoc_shapes_kind_name(k);
    for (int p = 0; p < DINOC_SHAPES_COLOURS * DINOC_SHAPES_KINDS; p++) {
        snprintf(text[p], sizeof text[p], "%s %s", dinoc_shapes_colour_name(p / DINOC_SHAPES_KINDS),
                 dinoc_shapes_kind_name(p % DINOC_SHAPES_KINDS));
        labels[p] = text[p];
    }
    char *cp = dinoc_path_join(dir, "classes.txt"), *lp = dinoc_path_join(dir, "label_names.txt");
    char *tp = dinoc_path_join(dir, "templates.txt");
    dinoc_status s = !cp || !lp || !tp ? dinoc_fail(DINOC_ERR_NOMEM, "out of memory") : dinoc_shapes_begin(dir);
    if (!s) s = dinoc_shapes_write_lines(cp, classes, DINOC_SHAPES_KINDS + 1);
    if (!s) s = dinoc_shapes_write_lines(lp, labels, DINOC_SHAPES_COLOURS * DINOC_SHAPES_KINDS);
    if (!s) s = dinoc_shapes_write_lines(tp, templates, 2);
    free(cp), free(lp), free(tp);
    return s;
}

dinoc_status dinoc_shapes_write(const char *dir, const dinoc_shapes_config *cfg, int64_t n, float test_frac,
                                dinoc_shapes_progress_fn progress, void *user) {
    if (!dir || !cfg || n < 1 || n > 100000000 || !(test_frac >= 0 && test_frac <= 1))
        return dinoc_fail(DINOC_ERR_ARG, "shapes: n %lld must be in [1, 1e8] and test_frac %g in [0, 1]",
                          (long long)n, (double)test_frac);
    if (cfg->hard_negatives < DINOC_SHAPES_NEG_NONE || cfg->hard_negatives > DINOC_SHAPES_NEG_RELATION)
        return dinoc_fail(DINOC_ERR_ARG, "shapes: hard_negatives %d must be one of DINOC_SHAPES_NEG_* (0..3)",
                          cfg->hard_negatives);
    dinoc_shapes_sample probe; /* checks size and pair_frac before anything is created */
    dinoc_status        s = dinoc_shapes_render(&probe, NULL, NULL, cfg, DINOC_SHAPES_TRAIN, 0);
    if (s) return s;
    int64_t     n_test = llround((double)n * test_frac), n_train = n - n_test;
    split_stats st[2] = {{n_train, 0}, {n_test, 0}};
    if ((s = write_names(dir))) return s;
    for (int k = 0; k < 2; k++) {
        shapes_src        src = {cfg, k ? DINOC_SHAPES_TEST : DINOC_SHAPES_TRAIN};
        dinoc_split_items it  = {cfg->size, cfg->size, 3, DINOC_SHAPES_COLOURS * DINOC_SHAPES_KINDS, shapes_item, &src,
                                 k == 0 && cfg->part_captions, k == 0 ? cfg->hard_negatives : 0}; /* training only */
        s = dinoc_shapes_write_split(dir, k ? "test" : "train", st[k].n, &it, k ? n_train : 0, n, progress, user,
                                     &st[k].distinct_captions);
        if (s) return s;
    }
    return write_meta(dir, cfg, n, test_frac, st);
}

/* ---- contact sheet ----------------------------------------------------------------------------- */

/* Mask colours: background dark grey, then one per kind. */
static const uint8_t k_class_rgb[DINOC_SHAPES_KINDS + 1][3] = {
    {40, 40, 40}, {230, 25, 75}, {60, 180, 75}, {255, 225, 25}, {0, 130, 200}, {245, 130, 48}, {145, 30, 180},
};

dinoc_status dinoc_shapes_preview(const char *path, const dinoc_shapes_config *cfg, int count) {
    if (!path || !cfg || count < 1 || count > 256)
        return dinoc_fail(DINOC_ERR_ARG, "shapes preview: count %d must be in [1, 256]", count);
    const int S = cfg->size, pad = 2, cols = count < 4 ? count : 4, rows = (count + cols - 1) / cols;
    const int cw = 2 * S + pad, W = cols * cw + pad, H = rows * (S + pad) + pad;
    uint8_t  *sheet = dinoc_calloc((size_t)W * H, 3), *rgb = dinoc_calloc((size_t)S * S, 4);
    if (!sheet || !rgb) {
        dinoc_free(sheet), dinoc_free(rgb);
        return dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory for a %d x %d sheet", path, W, H);
    }
    memset(sheet, 255, (size_t)W * H * 3);
    uint8_t     *mask = rgb + (size_t)S * S * 3;
    dinoc_status s    = DINOC_OK;
    for (int i = 0; i < count && !s; i++) {
        dinoc_shapes_sample smp;
        if ((s = dinoc_shapes_render(&smp, rgb, mask, cfg, DINOC_SHAPES_TRAIN, i))) break;
        int x0 = pad + (i % cols) * cw, y0 = pad + (i / cols) * (S + pad);
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                uint8_t *d = sheet + ((size_t)(y0 + y) * W + x0 + x) * 3;
                memcpy(d, rgb + ((size_t)y * S + x) * 3, 3);
                memcpy(d + (size_t)S * 3, k_class_rgb[mask[(size_t)y * S + x]], 3);
            }
    }
    if (!s) s = dinoc_viz_png_write(path, sheet, W, H, 3);
    dinoc_free(sheet), dinoc_free(rgb);
    return s;
}
