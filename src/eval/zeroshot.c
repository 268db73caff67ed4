/* zeroshot.c: zero-shot classification with CLIP (reference clip_mlm_and_c_peers.md A.9) and the
 * pieces the other CLIP uses share: labelled image sets, batched image/text encoding, row top-k.
 *
 * Prompt ensembling as openai/CLIP's zeroshot_classifier and open_clip's
 * build_zero_shot_classifier: every template x class text is encoded and L2-normalised, the
 * class's embeddings are averaged over templates and the mean renormalised. Image rows are
 * normalised and scored by logit_scale * cosine; top-1 / top-5 rank the true class with ties going
 * to the lower class index (a fixed rule so results never depend on sort stability).
 *
 * Tested by tests/test_clip_eval.c (ensembling and top-k against numpy, sets from labels files and
 * folders) and tests/cli_clip_eval_test.sh (end to end). */
#include "clip_eval.h"
#include "../data/shapes.h"

#include <math.h>
#include <string.h>

/* ---- labelled sets ---------------------------------------------------------------------------- */

/* Index of name in l, or -1. */
static int32_t find_name(const dinoc_strlist *l, const char *name) {
    for (int64_t k = 0; k < l->n; k++)
        if (strcmp(l->s[k], name) == 0) return (int32_t)k;
    return -1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A labels file: paths and label strings, mapped onto the class list. */
static dinoc_status open_tsv(dinoc_clip_set *out, const char *path, const char *classes_file) {
    dinoc_strlist names, uniq = {0};
    dinoc_status  s = dinoc_tsv_load(&out->paths, &names, path, 1, 2);
    if (s) return s;
    out->n        = names.n;
    int32_t *umap = malloc(sizeof(int32_t) * (size_t)names.n);
    out->labels   = malloc(sizeof(int32_t) * (size_t)names.n);
    if (!umap || !out->labels) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((s = dinoc_strings_unique(&uniq, umap, names.s, names.n))) goto done;
    char *beside = NULL;
    if (!classes_file) { /* label_names.txt beside the labels file (the shapes layout) */
        const char *slash = strrchr(path, '/');
        char       *dir   = slash ? strndup(path, (size_t)(slash - path + 1)) : strdup(".");
        beside            = dir ? dinoc_path_join(dir, "label_names.txt") : NULL;
        free(dir);
        if (!beside) {
            s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (dinoc_file_exists(beside)) classes_file = beside;
    }
    if (classes_file) {
        s = dinoc_lines_load(&out->classes, classes_file, "class names");
    } else { /* the distinct labels, sorted: the same classes whatever the row order */
        for (int64_t u = 0; u < uniq.n && !s; u++) s = dinoc_strlist_push(&out->classes, uniq.s[u]);
        if (!s) qsort(out->classes.s, (size_t)out->classes.n, sizeof(char *), cmp_str);
    }
    /* each distinct label once (n x K string compares would be slow on big sets) */
    int32_t *ucls = s ? NULL : malloc(sizeof(int32_t) * (size_t)uniq.n);
    if (!s && !ucls) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    for (int64_t u = 0; u < uniq.n && !s; u++)
        if ((ucls[u] = find_name(&out->classes, uniq.s[u])) < 0)
            s = dinoc_fail(DINOC_ERR_ARG, "%s: label '%s' is not among the %lld class names of %s", path, uniq.s[u],
                           (long long)out->classes.n, classes_file);
    for (int64_t i = 0; i < names.n && !s; i++) out->labels[i] = ucls[umap[i]];
    free(ucls), free(beside);
done:
    free(umap);
    dinoc_strlist_free(&names), dinoc_strlist_free(&uniq);
    return s;
}

/* A dinoc_dataset (folder or IDX): its own class names, or a remap onto classes_file. */
static dinoc_status open_ds(dinoc_clip_set *out, const char *classes_file, int fmnist) {
    const int    K = dinoc_dataset_num_classes(out->ds);
    dinoc_status s = DINOC_OK;
    if (K < 1) return dinoc_fail(DINOC_ERR_ARG, "the image folder has no class subfolders (flat folders have no labels)");
    out->n = dinoc_dataset_size(out->ds);
    if (!(out->labels = malloc(sizeof(int32_t) * (size_t)out->n))) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < out->n; i++) out->labels[i] = -1;
    dinoc_strlist native = {0};
    for (int k = 0; k < K && !s; k++) {
        /* Fashion-MNIST: the export's lower-case names; folders: '_' reads as a space in prompts */
        char *name = strdup(fmnist ? dinoc_fmnist_class_name(k) : dinoc_dataset_class_name(out->ds, k));
        if (!name) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        for (char *c = name; !s && *c; c++) *c = *c == '_' ? ' ' : *c;
        if (!s) s = dinoc_strlist_push(&native, name);
        free(name);
    }
    if (!s && classes_file) {
        if (!(s = dinoc_lines_load(&out->classes, classes_file, "class names")) &&
            !(out->remap = malloc(sizeof(int32_t) * K)))
            s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        for (int k = 0; k < K && !s; k++)
            if ((out->remap[k] = find_name(&out->classes, native.s[k])) < 0)
                s = dinoc_fail(DINOC_ERR_ARG, "class '%s' of the data is not among the %lld names of %s", native.s[k],
                               (long long)out->classes.n, classes_file);
        dinoc_strlist_free(&native);
    } else if (!s) {
        out->classes = native;
    }
    if (s) dinoc_strlist_free(&native);
    return s;
}

/* DIR/<split>/labels.tsv, DIR/<split>/ (class folders) when DIR holds train/ and test/ folders. */
static char *split_path(const char *data, int train, const char *file) {
    char *sub = dinoc_path_join(data, train ? "train" : "test");
    if (!sub || !file) return sub;
    char *p = dinoc_path_join(sub, file);
    free(sub);
    return p;
}

dinoc_status dinoc_clip_set_open(dinoc_clip_set *out, const char *data, const char *classes_file,
                                 const char *idx_dir, int train) {
    memset(out, 0, sizeof *out);
    dinoc_status s;
    if (strcmp(data, "fashion-mnist") == 0) {
        if (!(s = dinoc_dataset_idx_open(&out->ds, idx_dir, train))) s = open_ds(out, classes_file, 1);
    } else if (!dinoc_is_dir(data)) {
        s = dinoc_file_exists(data) ? open_tsv(out, data, classes_file)
                                    : dinoc_fail(DINOC_ERR_IO, "%s: no such file or folder", data);
    } else {
        char *own = dinoc_path_join(data, "labels.tsv"), *tsv = split_path(data, train, "labels.tsv");
        char *tr = split_path(data, 1, NULL), *te = split_path(data, 0, NULL);
        char *dir = split_path(data, train, NULL);
        if (!own || !tsv || !tr || !te || !dir) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        else if (dinoc_file_exists(own)) s = open_tsv(out, own, classes_file);
        else if (dinoc_file_exists(tsv)) s = open_tsv(out, tsv, classes_file);
        else {
            /* train/ and test/ side by side: a split layout; otherwise DIR holds the classes */
            const char *root = dinoc_is_dir(tr) && dinoc_is_dir(te) ? dir : data;
            if (!(s = dinoc_dataset_folder_open(&out->ds, root)) && (s = open_ds(out, classes_file, 0)))
                s = dinoc_fail_prefix(s, "%s", root);
        }
        free(own), free(tsv), free(tr), free(te), free(dir);
    }
    if (!s && out->classes.n < 2)
        s = dinoc_fail(DINOC_ERR_ARG, "%s: zero-shot needs at least 2 classes (found %lld)", data,
                       (long long)out->classes.n);
    if (s) dinoc_clip_set_free(out);
    return s;
}

void dinoc_clip_set_free(dinoc_clip_set *s) {
    if (!s) return;
    dinoc_strlist_free(&s->classes), dinoc_strlist_free(&s->paths);
    dinoc_dataset_free(s->ds);
    free(s->labels), free(s->remap);
    memset(s, 0, sizeof *s);
}

/* Replicates a grey image into RGB in place (CLIP towers take 3 channels). */
static dinoc_status to_rgb(dinoc_image *img) {
    if (img->c == 3) return DINOC_OK;
    const size_t np  = (size_t)img->w * img->h;
    uint8_t     *rgb = malloc(np * 3);
    if (!rgb) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory (%d x %d image)", img->w, img->h);
    for (size_t i = 0; i < np; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = img->data[i * img->c];
    dinoc_image_free(img);
    img->data = rgb, img->c = 3;
    return DINOC_OK;
}

dinoc_status dinoc_clip_set_image(const dinoc_clip_set *s, int64_t i, dinoc_image *img, int32_t *label) {
    memset(img, 0, sizeof *img);
    if (i < 0 || i >= s->n) return dinoc_fail(DINOC_ERR_ARG, "item %lld outside 0..%lld", (long long)i, (long long)s->n - 1);
    dinoc_status st;
    if (s->ds) {
        int32_t y = -1;
        if ((st = dinoc_dataset_get(s->ds, i, img, &y))) return st;
        s->labels[i] = s->remap && y >= 0 ? s->remap[y] : y;
        if ((st = to_rgb(img))) return st;
    } else if ((st = dinoc_image_load(img, s->paths.s[i]))) {
        return st;
    }
    if (label) *label = s->labels[i];
    return DINOC_OK;
}

/* ---- encoding ---------------------------------------------------------------------------------- */

dinoc_status dinoc_clip_embed_images(const dinoc_clip *m, dinoc_image_getter get, const void *user,
                                     int64_t n, int batch, float *out,
                                     void (*progress)(void *p, int64_t done, int64_t total), void *p) {
    const int P = dinoc_clip_embed_dim(m);
    if (batch < 1 || n < 0) return dinoc_fail(DINOC_ERR_ARG, "embed images: batch %d, n %lld", batch, (long long)n);
    dinoc_image *imgs = calloc((size_t)batch, sizeof(dinoc_image));
    char         msg[512];
    if (!imgs) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    dinoc_status s = DINOC_OK;
    for (int64_t i0 = 0; i0 < n && !s; i0 += batch) {
        const int bn = n - i0 < batch ? (int)(n - i0) : batch;
        /* decoding runs on the threads; a worker's message lives in its own thread-local slot, so
         * the first failure's text is copied out and re-raised here */
        int64_t bad = -1;
#pragma omp parallel for schedule(dynamic, 1)
        for (int j = 0; j < bn; j++) {
            dinoc_status sj = get(user, i0 + j, &imgs[j]);
            if (sj) {
#pragma omp critical(dinoc_embed_images)
                if (bad < 0 || i0 + j < bad) {
                    bad = i0 + j, s = sj;
                    snprintf(msg, sizeof msg, "%s", dinoc_last_error());
                }
            }
        }
        if (s) s = dinoc_fail(s, "%s", msg);
        else s = dinoc_clip_encode_images(m, imgs, bn, out + (size_t)i0 * P);
        for (int j = 0; j < bn; j++) dinoc_image_free(&imgs[j]);
        if (!s && progress) progress(p, i0 + bn, n);
    }
    free(imgs);
    return s;
}

static dinoc_status get_path(const void *user, int64_t i, dinoc_image *img) {
    return dinoc_image_load(img, ((char *const *)user)[i]);
}

dinoc_status dinoc_clip_embed_paths(const dinoc_clip *m, char *const *paths, int64_t n, int batch,
                                    float *out, void (*progress)(void *p, int64_t done, int64_t total),
                                    void *p) {
    return dinoc_clip_embed_images(m, get_path, paths, n, batch, out, progress, p);
}

static dinoc_status get_set_item(const void *user, int64_t i, dinoc_image *img) {
    return dinoc_clip_set_image(user, i, img, NULL);
}

dinoc_status dinoc_clip_set_embed(const dinoc_clip *m, const dinoc_clip_set *s, int64_t n, int batch,
                                  float *out, void (*progress)(void *p, int64_t done, int64_t total),
                                  void *p) {
    if (n > s->n) return dinoc_fail(DINOC_ERR_ARG, "%lld items asked of a set of %lld", (long long)n, (long long)s->n);
    return dinoc_clip_embed_images(m, get_set_item, s, n, batch, out, progress, p);
}

dinoc_status dinoc_clip_embed_texts(const dinoc_clip *m, char *const *texts, int64_t n, int batch,
                                    float *out) {
    const int P = dinoc_clip_embed_dim(m);
    if (batch < 1) return dinoc_fail(DINOC_ERR_ARG, "embed texts: batch %d", batch);
    for (int64_t i0 = 0; i0 < n; i0 += batch) {
        const int    bn = n - i0 < batch ? (int)(n - i0) : batch;
        dinoc_status s  = dinoc_clip_encode_texts(m, (const char *const *)texts + i0, bn, out + (size_t)i0 * P);
        if (s) return s;
    }
    return DINOC_OK;
}

/* ---- zero-shot --------------------------------------------------------------------------------- */

dinoc_status dinoc_prompt_ensemble(float *w, const float *emb, int T, int P) {
    if (T < 1 || P < 1) return dinoc_fail(DINOC_ERR_ARG, "prompt ensemble of %d templates x %d dims", T, P);
    double *acc = calloc((size_t)P, sizeof(double));
    if (!acc) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    dinoc_status s = DINOC_OK;
    for (int t = 0; t < T && !s; t++) {
        const float *e  = emb + (size_t)t * P;
        double       ss = 0;
        for (int d = 0; d < P; d++) ss += (double)e[d] * e[d];
        if (!(ss > 0) || !isfinite(ss)) s = dinoc_fail(DINOC_ERR_NUMERIC, "prompt ensemble: template %d's embedding "
                                                                          "is zero or not finite", t);
        for (int d = 0; d < P && !s; d++) acc[d] += e[d] / sqrt(ss);
    }
    double ss = 0;
    for (int d = 0; d < P && !s; d++) ss += acc[d] * acc[d]; /* the 1/T of the mean cancels here */
    if (!s && !(ss > 0)) s = dinoc_fail(DINOC_ERR_NUMERIC, "prompt ensemble: the template embeddings cancel out");
    for (int d = 0; d < P && !s; d++) w[d] = (float)(acc[d] / sqrt(ss));
    free(acc);
    return s;
}

dinoc_status dinoc_zeroshot_weights(const dinoc_clip *m, char *const *classes, int K,
                                    const char *const *templates, int T, float *W) {
    const int    P     = dinoc_clip_embed_dim(m);
    char       **texts = calloc((size_t)T, sizeof(char *));
    float       *emb   = malloc(sizeof(float) * (size_t)T * P);
    dinoc_status s     = texts && emb ? DINOC_OK : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    /* one class at a time: T texts in memory, not T x K (80 x 1000 ImageNet prompts = 160 MB) */
    for (int k = 0; k < K && !s; k++) {
        for (int t = 0; t < T && !s; t++) {
            free(texts[t]);
            s = dinoc_template_format(&texts[t], templates[t], classes[k]);
        }
        if (!s) s = dinoc_clip_embed_texts(m, texts, T, 256, emb);
        if (!s) s = dinoc_prompt_ensemble(W + (size_t)k * P, emb, T, P);
        if (s) s = dinoc_fail_prefix(s, "class '%s'", classes[k]);
    }
    for (int t = 0; texts && t < T; t++) free(texts[t]);
    free(texts), free(emb);
    return s;
}

dinoc_status dinoc_zeroshot_logits(float *logits, const float *x, const float *W, int64_t N, int K, int P,
                                   float scale) {
    enum { CH = 1024 }; /* rows per product: bounds the normalised copy */
    float *xn = malloc(sizeof(float) * (size_t)CH * P);
    if (!xn) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory (zero-shot logits)");
    for (int64_t i0 = 0; i0 < N; i0 += CH) {
        const int bn = N - i0 < CH ? (int)(N - i0) : CH;
        memcpy(xn, x + (size_t)i0 * P, sizeof(float) * (size_t)bn * P);
        dinoc_clip_normalize(xn, NULL, bn, P);
        dinoc_gemm(0, 1, bn, K, P, scale, xn, P, W, P, 0.0f, logits + (size_t)i0 * K, K);
    }
    free(xn);
    return DINOC_OK;
}

void dinoc_topk_rows(int32_t *idx, const float *scores, int64_t N, int K, int k) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const float *z   = scores + (size_t)i * K;
        int32_t     *out = idx + (size_t)i * k;
        int          m   = 0; /* out[0..m) sorted best first; insertion keeps the k best */
        for (int c = 0; c < K; c++) {
            if (m == k && !dinoc_ranks_before(z[c], c, z[out[k - 1]], out[k - 1])) continue;
            int j = m < k ? m++ : k - 1;
            for (; j > 0 && dinoc_ranks_before(z[c], c, z[out[j - 1]], out[j - 1]); j--) out[j] = out[j - 1];
            out[j] = c;
        }
    }
}

dinoc_status dinoc_topk_accuracy(const float *scores, const int32_t *labels, int64_t N, int K,
                                 double *top1, double *top5, double *per_class) {
    if (N < 1 || K < 1) return dinoc_fail(DINOC_ERR_ARG, "accuracy of %lld rows x %d classes", (long long)N, K);
    int64_t *hit = calloc((size_t)K * 2, sizeof(int64_t)), c1 = 0, c5 = 0;
    if (!hit) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    const int n5 = K < 5 ? K : 5;
    for (int64_t i = 0; i < N; i++) {
        const int32_t t = labels[i];
        if (t < 0 || t >= K) {
            free(hit);
            return dinoc_fail(DINOC_ERR_ARG, "row %lld: label %d outside 0..%d", (long long)i, t, K - 1);
        }
        const float *z    = scores + (size_t)i * K;
        int          rank = 0;
        for (int c = 0; c < K; c++) rank += dinoc_ranks_before(z[c], c, z[t], t);
        c1 += rank == 0, c5 += rank < n5;
        hit[t] += rank == 0, hit[K + t]++;
    }
    *top1 = (double)c1 / N, *top5 = (double)c5 / N;
    for (int c = 0; per_class && c < K; c++) per_class[c] = hit[K + c] ? (double)hit[c] / hit[K + c] : NAN;
    free(hit);
    return DINOC_OK;
}
