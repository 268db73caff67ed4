/* retrieval.c: image-text retrieval with CLIP embeddings (reference clip_mlm_and_c_peers.md A.10):
 * the embedding index file (built once by `dinoc retrieve index`, queried many times), top-k
 * search, and recall at K both ways.
 *
 * Recall follows LAION-AI/CLIP_benchmark's zeroshot_retrieval (the CLIP paper's protocol): a
 * text query hits at K if one of its images is among its top K images; an image query hits if
 * AT LEAST ONE of its captions is among its top K captions. Captions that are the same string are
 * one text (dinoc eval retrieval de-duplicates them before calling here), so on a set where many
 * images share a caption (the shapes set: "a small red ring" has ~40 images) any of those images
 * is a hit, instead of capping R@1 by the number of duplicates. Ties are broken by the lower
 * index (open_clip's get_clip_metrics rule), never by sort order.
 *
 * Scores are computed in blocks of queries (<= 64 MB of similarities) with one sgemm each.
 * Tested by tests/test_clip_eval.c (recall and top-k against numpy, the index round trip and
 * every corrupt-index error). */
#include "clip_eval.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#define SIM_BLOCK_FLOATS (16u << 20) /* 64 MB of float similarities per block */

/* ---- the index file ----------------------------------------------------------------------------- */

static dinoc_status check_index(const dinoc_clip_index *ix, const char *path) {
    if (ix->dim < 1 || ix->n_images < 1 || ix->n_images > INT32_MAX || ix->n_texts < 0 || ix->n_texts > INT32_MAX ||
        ix->n_pairs < 0)
        return dinoc_fail(DINOC_ERR_ARG, "%s: index of %lld images, %lld texts, dim %d", path,
                          (long long)ix->n_images, (long long)ix->n_texts, ix->dim);
    if (ix->paths.n != ix->n_images || ix->captions.n != ix->n_texts)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: %lld paths for %lld images, %lld captions for %lld texts", path,
                          (long long)ix->paths.n, (long long)ix->n_images, (long long)ix->captions.n,
                          (long long)ix->n_texts);
    if ((ix->n_texts > 0) != (ix->text_embeds != NULL))
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: %lld texts but %s text embeddings", path, (long long)ix->n_texts,
                          ix->text_embeds ? "some" : "no");
    for (int64_t q = 0; q < ix->n_pairs; q++) {
        const int32_t i = ix->pairs[2 * q], t = ix->pairs[2 * q + 1];
        if (i < 0 || i >= ix->n_images || t < 0 || t >= ix->n_texts)
            return dinoc_fail(DINOC_ERR_FORMAT, "%s: pair %lld = (image %d, text %d) outside %lld images x %lld texts",
                              path, (long long)q, i, t, (long long)ix->n_images, (long long)ix->n_texts);
    }
    return DINOC_OK;
}

static char *json_strings(const dinoc_strlist *l) {
    cJSON *a = cJSON_CreateArray();
    for (int64_t i = 0; a && i < l->n; i++) {
        cJSON *v = cJSON_CreateString(l->s[i]);
        if (!v || !cJSON_AddItemToArray(a, v)) {
            cJSON_Delete(v);
            cJSON_Delete(a);
            return NULL;
        }
    }
    char *txt = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    return txt;
}

dinoc_status dinoc_clip_index_save(const dinoc_clip_index *ix, const char *path) {
    dinoc_status s = check_index(ix, path);
    if (s) return s;
    dinoc_tensor t[4];
    int          nt = 0;
    const size_t P  = (size_t)ix->dim;
    t[nt++] = (dinoc_tensor){"image_embeds", DINOC_DTYPE_F32, 2, {ix->n_images, ix->dim}, 4 * P * ix->n_images,
                             ix->image_embeds};
    if (ix->n_texts)
        t[nt++] = (dinoc_tensor){"text_embeds", DINOC_DTYPE_F32, 2, {ix->n_texts, ix->dim}, 4 * P * ix->n_texts,
                                 ix->text_embeds};
    if (ix->n_pairs)
        t[nt++] = (dinoc_tensor){"pairs", DINOC_DTYPE_I32, 2, {ix->n_pairs, 2}, 8 * (size_t)ix->n_pairs, ix->pairs};
    if (ix->probe) t[nt++] = (dinoc_tensor){"probe", DINOC_DTYPE_F32, 1, {ix->dim}, 4 * P, ix->probe};
    char  dim[32];
    char *paths = json_strings(&ix->paths), *caps = json_strings(&ix->captions);
    snprintf(dim, sizeof dim, "%d", ix->dim);
    const char *meta[] = {"format", DINOC_INDEX_FORMAT, "version", "1", "model", ix->model ? ix->model : "",
                          "embed_dim", dim, "paths", paths, "captions", caps, NULL};
    s = paths && caps ? dinoc_safetensors_write(path, t, nt, meta) : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    free(paths), free(caps);
    return s;
}

/* A metadata entry holding a JSON array of strings, into *out. */
static dinoc_status meta_strings(dinoc_strlist *out, const dinoc_safetensors *st, const char *key, const char *path) {
    memset(out, 0, sizeof *out);
    const char *txt = dinoc_safetensors_metadata(st, key);
    if (!txt) return dinoc_fail(DINOC_ERR_FORMAT, "%s: metadata '%s' is missing", path, key);
    cJSON       *a = cJSON_Parse(txt);
    dinoc_status s = cJSON_IsArray(a) ? DINOC_OK
                                      : dinoc_fail(DINOC_ERR_FORMAT, "%s: metadata '%s' is not a JSON array", path, key);
    int64_t i = 0;
    for (cJSON *v = a ? a->child : NULL; v && !s; v = v->next, i++)
        s = cJSON_IsString(v) ? dinoc_strlist_push(out, v->valuestring)
                              : dinoc_fail(DINOC_ERR_FORMAT, "%s: metadata '%s' entry %lld is not a string", path, key,
                                           (long long)i);
    cJSON_Delete(a);
    if (s) dinoc_strlist_free(out);
    return s;
}

/* Tensor name as F32 [rows, P] (rows < 0: 1-D [P]) into a new buffer; finite values only. */
static dinoc_status read_f32(float **out, const dinoc_safetensors *st, const char *name, int64_t *rows, int P,
                             const char *path) {
    const dinoc_tensor *t = dinoc_safetensors_find(st, name);
    const int           two = *rows >= 0;
    if (!t) return dinoc_fail(DINOC_ERR_FORMAT, "%s: tensor '%s' is missing", path, name);
    if (t->dtype != DINOC_DTYPE_F32 || t->ndim != (two ? 2 : 1) || t->shape[t->ndim - 1] != P || (two && t->shape[0] < 1))
        return dinoc_fail(DINOC_ERR_SHAPE, "%s: tensor '%s' must be F32 [%s%d], got %s with %d dims (last %lld)", path,
                          name, two ? "N, " : "", P, dinoc_dtype_name(t->dtype), t->ndim,
                          (long long)t->shape[t->ndim - 1]);
    const int64_t n = dinoc_tensor_numel(t);
    if (two) *rows = t->shape[0];
    if (!(*out = malloc(sizeof(float) * (size_t)n))) return dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", path);
    dinoc_status s = dinoc_tensor_to_f32(t, *out, n);
    for (int64_t i = 0; i < n && !s; i++)
        if (!isfinite((*out)[i]))
            s = dinoc_fail(DINOC_ERR_NUMERIC, "%s: tensor '%s' holds a non-finite value at %lld", path, name, (long long)i);
    return s;
}

dinoc_status dinoc_clip_index_load(dinoc_clip_index *ix, const char *path) {
    memset(ix, 0, sizeof *ix);
    dinoc_safetensors *st = NULL;
    dinoc_status       s  = dinoc_safetensors_open(&st, path);
    if (s) return s;
    const char *fmt = dinoc_safetensors_metadata(st, "format"), *ver = dinoc_safetensors_metadata(st, "version");
    const char *dim = dinoc_safetensors_metadata(st, "embed_dim"), *model = dinoc_safetensors_metadata(st, "model");
    char       *end = NULL;
    long        P   = dim ? strtol(dim, &end, 10) : 0;
    if (!fmt || strcmp(fmt, DINOC_INDEX_FORMAT) != 0) {
        s = dinoc_fail(DINOC_ERR_FORMAT, "%s: not a dinoc CLIP index (metadata format '%s', expected '%s')", path,
                       fmt ? fmt : "(none)", DINOC_INDEX_FORMAT);
    } else if (!ver || strcmp(ver, "1") != 0) {
        s = dinoc_fail(DINOC_ERR_UNSUPPORTED, "%s: index version '%s' (this build reads 1)", path, ver ? ver : "(none)");
    } else if (!dim || *end || P < 1 || P > (1 << 20)) {
        s = dinoc_fail(DINOC_ERR_FORMAT, "%s: metadata embed_dim '%s' is not a positive integer", path,
                       dim ? dim : "(none)");
    }
    if (s) goto done;
    ix->dim = (int)P;
    if (!(ix->model = strdup(model ? model : ""))) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    int64_t one = -1;
    if ((s = read_f32(&ix->image_embeds, st, "image_embeds", &ix->n_images, ix->dim, path)) ||
        (s = meta_strings(&ix->paths, st, "paths", path)) || (s = meta_strings(&ix->captions, st, "captions", path)))
        goto done;
    if (dinoc_safetensors_find(st, "text_embeds") &&
        (s = read_f32(&ix->text_embeds, st, "text_embeds", &ix->n_texts, ix->dim, path)))
        goto done;
    if (dinoc_safetensors_find(st, "probe") && (s = read_f32(&ix->probe, st, "probe", &one, ix->dim, path))) goto done;
    const dinoc_tensor *pt = dinoc_safetensors_find(st, "pairs");
    if (pt) {
        if (pt->dtype != DINOC_DTYPE_I32 || pt->ndim != 2 || pt->shape[1] != 2 || pt->shape[0] < 1) {
            s = dinoc_fail(DINOC_ERR_SHAPE, "%s: tensor 'pairs' must be I32 [Q, 2]", path);
            goto done;
        }
        ix->n_pairs = pt->shape[0];
        if (!(ix->pairs = malloc(pt->nbytes))) {
            s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
            goto done;
        }
        memcpy(ix->pairs, pt->data, pt->nbytes); /* little-endian int32 on the platforms we build for */
    }
    s = check_index(ix, path);
done:
    dinoc_safetensors_close(st);
    if (s) dinoc_clip_index_free(ix);
    return s;
}

void dinoc_clip_index_free(dinoc_clip_index *ix) {
    if (!ix) return;
    free(ix->image_embeds), free(ix->text_embeds), free(ix->pairs), free(ix->probe), free(ix->model);
    dinoc_strlist_free(&ix->paths), dinoc_strlist_free(&ix->captions);
    memset(ix, 0, sizeof *ix);
}

dinoc_status dinoc_clip_index_check(const dinoc_clip_index *ix, const char *path, int dim, const float *probe) {
    if (ix->dim != dim)
        return dinoc_fail(DINOC_ERR_SHAPE, "%s: index embeddings are %d wide, the model's %d (built with model '%s')",
                          path, ix->dim, dim, ix->model);
    if (!ix->probe || !probe) return DINOC_OK;
    double dot = 0, a = 0, b = 0;
    for (int d = 0; d < dim; d++) dot += (double)ix->probe[d] * probe[d], a += (double)ix->probe[d] * ix->probe[d],
                                  b += (double)probe[d] * probe[d];
    /* the same model and tokenizer give the same probe up to thread-count rounding (~1e-6) */
    if (!(dot >= 0.999 * sqrt(a * b)))
        return dinoc_fail(DINOC_ERR_ARG, "%s: the index was built with another model ('%s'; probe cosine %.4f)", path,
                          ix->model, a > 0 && b > 0 ? dot / sqrt(a * b) : 0.0);
    return DINOC_OK;
}

/* ---- search and recall ---------------------------------------------------------------------------- */

dinoc_status dinoc_retrieve_topk(int32_t *idx, float *score, const float *q, int64_t nq,
                                 const float *db, int64_t n, int P, int k) {
    if (k < 1 || k > n || n > INT32_MAX || P < 1)
        return dinoc_fail(DINOC_ERR_ARG, "top-%d of %lld rows (k must be in 1..rows)", k, (long long)n);
    const int64_t bq = n >= SIM_BLOCK_FLOATS ? 1 : SIM_BLOCK_FLOATS / n;
    const int64_t rows = nq < bq ? nq : bq;
    float        *S    = malloc(sizeof(float) * (size_t)(rows ? rows : 1) * n);
    if (!S) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory (%lld x %lld similarities)", (long long)rows, (long long)n);
    for (int64_t i0 = 0; i0 < nq; i0 += bq) {
        const int64_t bn = nq - i0 < bq ? nq - i0 : bq;
        dinoc_gemm(0, 1, (int)bn, (int)n, P, 1.0f, q + (size_t)i0 * P, P, db, P, 0.0f, S, (int)n);
        dinoc_topk_rows(idx + (size_t)i0 * k, S, bn, (int)n, k);
        for (int64_t i = 0; score && i < bn; i++)
            for (int j = 0; j < k; j++) score[(size_t)(i0 + i) * k + j] = S[(size_t)i * n + idx[(size_t)(i0 + i) * k + j]];
    }
    free(S);
    return DINOC_OK;
}

/* Compressed rows: positives of query q are pos[off[q] .. off[q+1]). */
typedef struct {
    int64_t *off;
    int32_t *pos;
} csr;

/* CSR of pairs grouped by column `by` (0: image, 1: text) over nq queries; duplicates dropped. */
static dinoc_status build_csr(csr *c, const int32_t *pairs, int64_t np, int by, int64_t nq) {
    c->off = calloc((size_t)nq + 1, sizeof(int64_t));
    c->pos = malloc(sizeof(int32_t) * (size_t)(np ? np : 1));
    if (!c->off || !c->pos) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    for (int64_t p = 0; p < np; p++) c->off[pairs[2 * p + by] + 1]++;
    for (int64_t q = 0; q < nq; q++) c->off[q + 1] += c->off[q];
    int64_t *fill = malloc(sizeof(int64_t) * (size_t)(nq ? nq : 1));
    if (!fill) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    memcpy(fill, c->off, sizeof(int64_t) * (size_t)nq);
    for (int64_t p = 0; p < np; p++) c->pos[fill[pairs[2 * p + by]]++] = pairs[2 * p + 1 - by];
    free(fill);
    return DINOC_OK;
}

/* Ranks every query of Q [nq, P] that has positives among candidates C [nc, P]: rank = number of
 * candidates ordered before its best positive (all of them negatives). */
static dinoc_status rank_queries(const float *Q, int64_t nq, const float *C, int64_t nc, int P, const csr *c,
                                 int64_t *rank) {
    const int64_t bq = nc >= SIM_BLOCK_FLOATS ? 1 : SIM_BLOCK_FLOATS / nc;
    float        *S  = malloc(sizeof(float) * (size_t)(nq < bq ? nq : bq) * nc);
    if (!S) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory (similarities)");
    for (int64_t i0 = 0; i0 < nq; i0 += bq) {
        const int64_t bn = nq - i0 < bq ? nq - i0 : bq;
        dinoc_gemm(0, 1, (int)bn, (int)nc, P, 1.0f, Q + (size_t)i0 * P, P, C, P, 0.0f, S, (int)nc);
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < bn; i++) {
            const int64_t q = i0 + i;
            const float  *z = S + (size_t)i * nc;
            rank[q]         = -1;
            if (c->off[q] == c->off[q + 1]) continue;
            int32_t best = c->pos[c->off[q]];
            for (int64_t j = c->off[q] + 1; j < c->off[q + 1]; j++)
                if (dinoc_ranks_before(z[c->pos[j]], c->pos[j], z[best], best)) best = c->pos[j];
            int64_t r = 0;
            for (int64_t k = 0; k < nc; k++) r += dinoc_ranks_before(z[k], k, z[best], best);
            rank[q] = r;
        }
    }
    free(S);
    return DINOC_OK;
}

/* recall[j] and mean rank (1-based) over the queries with a rank. */
static void summarise(const int64_t *rank, int64_t nq, const int *ks, int nk, double *recall, double *mean_rank,
                      int64_t *count) {
    int64_t n = 0, hits[8] = {0};
    double  sum = 0;
    for (int64_t q = 0; q < nq; q++) {
        if (rank[q] < 0) continue;
        n++, sum += (double)rank[q] + 1;
        for (int j = 0; j < nk; j++) hits[j] += rank[q] < ks[j];
    }
    for (int j = 0; j < nk; j++) recall[j] = n ? (double)hits[j] / n : 0;
    *mean_rank = n ? sum / n : 0, *count = n;
}

dinoc_status dinoc_retrieval_recall(const float *img, int64_t ni, const float *txt, int64_t nt,
                                    int P, const int32_t *pairs, int64_t np, const int *ks, int nk,
                                    dinoc_recall *out) {
    memset(out, 0, sizeof *out);
    if (ni < 1 || nt < 1 || np < 1 || ni > INT32_MAX || nt > INT32_MAX || P < 1 || nk < 1 || nk > 8)
        return dinoc_fail(DINOC_ERR_ARG, "recall on %lld images, %lld texts, %lld pairs, %d values of K (1..8)",
                          (long long)ni, (long long)nt, (long long)np, nk);
    for (int j = 0; j < nk; j++)
        if (ks[j] < 1) return dinoc_fail(DINOC_ERR_ARG, "recall at K = %d (K must be >= 1)", ks[j]);
    for (int64_t p = 0; p < np; p++)
        if (pairs[2 * p] < 0 || pairs[2 * p] >= ni || pairs[2 * p + 1] < 0 || pairs[2 * p + 1] >= nt)
            return dinoc_fail(DINOC_ERR_ARG, "pair %lld = (image %d, text %d) outside %lld images x %lld texts",
                              (long long)p, pairs[2 * p], pairs[2 * p + 1], (long long)ni, (long long)nt);
    csr          ci = {0}, ct = {0};
    int64_t     *ri = malloc(sizeof(int64_t) * (size_t)ni), *rt = malloc(sizeof(int64_t) * (size_t)nt);
    dinoc_status s  = ri && rt ? DINOC_OK : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    /* duplicate pairs only repeat a positive: the best positive and so the rank are unchanged */
    if (!s && !(s = build_csr(&ct, pairs, np, 1, nt)) && !(s = build_csr(&ci, pairs, np, 0, ni)) &&
        !(s = rank_queries(txt, nt, img, ni, P, &ct, rt)) && !(s = rank_queries(img, ni, txt, nt, P, &ci, ri))) {
        summarise(rt, nt, ks, nk, out->t2i, &out->t2i_mean_rank, &out->t2i_queries);
        summarise(ri, ni, ks, nk, out->i2t, &out->i2t_mean_rank, &out->i2t_queries);
    }
    free(ci.off), free(ci.pos), free(ct.off), free(ct.pos), free(ri), free(rt);
    return s;
}

/* ---- building an index ----------------------------------------------------------------------------- */

/* Images, captions and pairs of a pairs file (first `limit` rows if > 0). */
static dinoc_status read_pairs(dinoc_clip_index *ix, const char *path, int64_t limit) {
    dinoc_strlist imgs, caps;
    dinoc_status  s = dinoc_tsv_load(&imgs, &caps, path, 1, 3); /* negatives dropped */
    if (s) return s;
    const int64_t n    = limit > 0 && limit < imgs.n ? limit : imgs.n;
    int32_t      *mi   = malloc(sizeof(int32_t) * (size_t)n), *mt = malloc(sizeof(int32_t) * (size_t)n);
    ix->pairs          = malloc(sizeof(int32_t) * 2 * (size_t)n);
    if (!mi || !mt || !ix->pairs) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory (%lld pairs)", (long long)n);
    if (!s && !(s = dinoc_strings_unique(&ix->paths, mi, imgs.s, n)) &&
        !(s = dinoc_strings_unique(&ix->captions, mt, caps.s, n))) {
        for (int64_t q = 0; q < n; q++) ix->pairs[2 * q] = mi[q], ix->pairs[2 * q + 1] = mt[q];
        ix->n_pairs = n, ix->n_images = ix->paths.n, ix->n_texts = ix->captions.n;
    }
    free(mi), free(mt);
    dinoc_strlist_free(&imgs), dinoc_strlist_free(&caps);
    return s;
}

dinoc_status dinoc_pairs_path(char **out, const char *data, int train) {
    if (!dinoc_is_dir(data)) {
        *out = strdup(data);
    } else if ((*out = dinoc_path_join(data, "pairs.tsv")) && !dinoc_file_exists(*out)) {
        free(*out);
        char *sub = dinoc_path_join(data, train ? "train" : "test");
        *out      = sub ? dinoc_path_join(sub, "pairs.tsv") : NULL;
        free(sub);
    }
    return *out ? DINOC_OK : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
}

dinoc_status dinoc_clip_index_build(dinoc_clip_index *ix, const dinoc_clip *m, const char *model_label,
                                    char *const *paths, int64_t n, const char *pairs, int64_t limit,
                                    int batch, void (*progress)(void *p, int64_t done, int64_t total),
                                    void *p) {
    memset(ix, 0, sizeof *ix);
    const int    P = ix->dim = dinoc_clip_embed_dim(m);
    dinoc_status s = DINOC_OK;
    if (pairs) {
        s = read_pairs(ix, pairs, limit);
    } else {
        for (int64_t i = 0; i < n && !s; i++) s = dinoc_strlist_push(&ix->paths, paths[i]);
        ix->n_images = ix->paths.n;
    }
    if (!s && ix->n_images < 1) s = dinoc_fail(DINOC_ERR_ARG, "an index needs at least one image");
    if (s) goto done;
    ix->image_embeds = malloc(sizeof(float) * (size_t)ix->n_images * P);
    ix->text_embeds  = ix->n_texts ? malloc(sizeof(float) * (size_t)ix->n_texts * P) : NULL;
    ix->probe        = malloc(sizeof(float) * P);
    ix->model        = strdup(model_label ? model_label : "");
    if (!ix->image_embeds || (ix->n_texts && !ix->text_embeds) || !ix->probe || !ix->model) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory (index of %lld images)", (long long)ix->n_images);
        goto done;
    }
    char *probe_text[1] = {DINOC_INDEX_PROBE};
    if ((s = dinoc_clip_embed_texts(m, probe_text, 1, 1, ix->probe)) ||
        (ix->n_texts && (s = dinoc_clip_embed_texts(m, ix->captions.s, ix->n_texts, 256, ix->text_embeds))))
        goto done;
    s = dinoc_clip_embed_paths(m, ix->paths.s, ix->n_images, batch, ix->image_embeds, progress, p);
done:
    if (s) dinoc_clip_index_free(ix);
    return s;
}
