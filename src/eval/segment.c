/* segment.c: a linear segmentation probe on frozen patch features (reference dino_dinov2.md 4.4,
 * DINOv2's "linear" BNHead: BatchNorm + 1x1 conv on the last layer's patch tokens, logits
 * bilinearly upsampled to the label size).
 *
 * Choices, where the references give none or cost too much on 2 cores:
 *   - geometry: every image is resized to S x S (the model's resample filter) and the patch grid
 *     covers the whole image; no crop, so every labelled pixel is predicted;
 *   - targets: the mask is reduced to the patch grid by majority vote (ties to the lower class):
 *     one hard label per patch row fits the linear probe's existing SGD step
 *     (dinoc_linear_sgd_step) and keeps training at rows = patches, not pixels;
 *   - BatchNorm at test time is a fixed per-channel standardisation with the training statistics;
 *     it is folded into the linear layer once trained;
 *   - training: softmax cross-entropy, SGD momentum 0.9, cosine per iteration, several lrs side
 *     by side, the lr chosen on the patches of held-out training images, then retrained on all;
 *   - scoring: logits bilinearly upsampled (PyTorch align_corners=False) to the mask's own size,
 *     argmax, one confusion matrix over the whole test set; IoU per class, mIoU over the classes
 *     with a non-empty union (mmseg's nanmean), pixel accuracy.
 *
 * Tested by tests/test_dense.c (scores and upsampling vs numpy/torch, planted features, patch
 * labels) and tests/cli_dense_test.sh. */
#include "dense.h"
#include "../data/shapes.h"

#include <math.h>
#include <string.h>

/* Fashion-MNIST foreground: one rule with the masks `dinoc data fashion-mnist` writes (shapes.h) */
#define SEG_FMNIST_FG    DINOC_FMNIST_MASK_THRESHOLD
#define SEG_MOMENTUM     0.9f
#define SEG_BN_EPS       1e-5
#define SEG_SEED_INIT    0x5e61ull
#define SEG_SEED_ORDER   0x5e60ull
#define SEG_SCORE_ROWS   1024
#define SEG_MAX_CLASSES  256

struct dinoc_segset {
    dinoc_dataset *ds;     /* images: an IDX set or the flat images/ folder */
    int            fashion;
    char          *mask_dir;
    int            K;
    char         **names;  /* K class names */
};

void dinoc_segset_free(dinoc_segset *s) {
    if (!s) return;
    dinoc_dataset_free(s->ds);
    for (int k = 0; s->names && k < s->K; k++) free(s->names[k]);
    free(s->names), free(s->mask_dir), free(s);
}

int64_t     dinoc_segset_size(const dinoc_segset *s) { return dinoc_dataset_size(s->ds); }
int         dinoc_segset_num_classes(const dinoc_segset *s) { return s->K; }
const char *dinoc_segset_class_name(const dinoc_segset *s, int k) { return k >= 0 && k < s->K ? s->names[k] : NULL; }

/* Class names from classes.txt: one per line ('\r' dropped), trailing empty lines ignored. */
static dinoc_status read_classes(dinoc_segset *s, const char *path) {
    char        *text = NULL;
    size_t       len;
    dinoc_status st = dinoc_read_file(path, 1 << 20, &text, &len);
    if (st) return st;
    int n = 0;
    for (size_t i = 0; i < len; i++) n += text[i] == '\n';
    s->names = calloc((size_t)n + 1, sizeof(char *));
    if (!s->names) st = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    for (char *p = text, *end; !st && *p; p = *end ? end + 1 : end) {
        end = strchr(p, '\n');
        if (!end) end = p + strlen(p);
        size_t l = (size_t)(end - p);
        while (l && (p[l - 1] == '\r' || p[l - 1] == ' ')) l--;
        if (!(s->names[s->K] = strndup(p, l))) st = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        else s->K++;
    }
    while (!st && s->K > 0 && !s->names[s->K - 1][0]) free(s->names[--s->K]);
    free(text);
    if (!st && (s->K < 2 || s->K > SEG_MAX_CLASSES))
        st = dinoc_fail(DINOC_ERR_FORMAT, "%s: %d classes (line i names mask value i: background and at least "
                                          "one class, at most %d)", path, s->K, SEG_MAX_CLASSES);
    return st;
}

dinoc_status dinoc_segset_open_shapes(dinoc_segset **out, const char *dir, int train) {
    *out            = NULL;
    dinoc_segset *s = calloc(1, sizeof *s);
    char         *classes = dinoc_path_join(dir, "classes.txt"), *split = dinoc_path_join(dir, train ? "train" : "test");
    char         *images = split ? dinoc_path_join(split, "images") : NULL;
    if (s && split) s->mask_dir = dinoc_path_join(split, "masks");
    dinoc_status st = DINOC_OK;
    if (!s || !classes || !split || !images || !s->mask_dir) st = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    else if (!dinoc_file_exists(classes))
        st = dinoc_fail(DINOC_ERR_IO, "%s: missing (a segmentation set needs classes.txt, {train,test}/images "
                                      "and {train,test}/masks; `dinoc data shapes` writes one)", classes);
    else if (!dinoc_is_dir(images) || !dinoc_is_dir(s->mask_dir))
        st = dinoc_fail(DINOC_ERR_IO, "%s: needs images/ and masks/ folders", split);
    else if (!(st = read_classes(s, classes)))
        st = dinoc_dataset_folder_open(&s->ds, images);
    free(classes), free(split), free(images);
    if (st) dinoc_segset_free(s);
    else *out = s;
    return st;
}

dinoc_status dinoc_segset_open_fashion(dinoc_segset **out, const char *dir, int train) {
    *out            = NULL;
    dinoc_segset *s = calloc(1, sizeof *s);
    if (!s || !(s->names = calloc(11, sizeof(char *)))) {
        free(s);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    }
    s->fashion      = 1;
    dinoc_status st = dinoc_dataset_idx_open(&s->ds, dir, train);
    for (int k = 0; !st && k < 11; k++, s->K++)
        if (!(s->names[k] = strdup(k ? dinoc_dataset_class_name(s->ds, k - 1) : "background")))
            st = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    if (st) dinoc_segset_free(s);
    else *out = s;
    return st;
}

dinoc_status dinoc_segset_get(const dinoc_segset *s, int64_t i, dinoc_image *img, uint8_t **mask) {
    int32_t      label = -1;
    dinoc_status st    = dinoc_dataset_get(s->ds, i, img, &label);
    if (st) return st;
    const size_t np = (size_t)img->w * img->h;
    uint8_t     *m  = malloc(np);
    dinoc_image  mi = {0, 0, 0, NULL};
    char        *mp = NULL;
    if (!m) {
        st = dinoc_fail(DINOC_ERR_NOMEM, "out of memory for a %d x %d mask", img->w, img->h);
    } else if (s->fashion) {
        for (size_t p = 0; p < np; p++) m[p] = img->data[p * img->c] > SEG_FMNIST_FG ? (uint8_t)(label + 1) : 0;
    } else {
        const char *ip = dinoc_dataset_path(s->ds, i), *base = strrchr(ip, '/');
        if (!(mp = dinoc_path_join(s->mask_dir, base ? base + 1 : ip))) st = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        else if (!(st = dinoc_image_load(&mi, mp)) && (mi.w != img->w || mi.h != img->h))
            st = dinoc_fail(DINOC_ERR_SHAPE, "%s is %d x %d, its image %s is %d x %d", mp, mi.w, mi.h, ip, img->w, img->h);
        for (size_t p = 0; !st && p < np; p++) /* grey masks decode as R = G = B: take R */
            if ((m[p] = mi.data[p * mi.c]) >= s->K)
                st = dinoc_fail(DINOC_ERR_FORMAT, "%s: pixel %zu has class %d, classes.txt names %d classes", mp,
                                p, m[p], s->K);
    }
    dinoc_image_free(&mi);
    free(mp);
    if (st) {
        free(m);
        dinoc_image_free(img);
        return st;
    }
    *mask = m;
    return DINOC_OK;
}

void dinoc_seg_patch_labels(int32_t *labels, const uint8_t *mask, int w, int h, int gh, int gw, int K) {
    int64_t count[SEG_MAX_CLASSES];
    for (int r = 0; r < gh; r++)
        for (int c = 0; c < gw; c++) {
            int y0 = (int)((int64_t)r * h / gh), y1 = (int)((int64_t)(r + 1) * h / gh);
            int x0 = (int)((int64_t)c * w / gw), x1 = (int)((int64_t)(c + 1) * w / gw);
            if (y1 <= y0) y1 = y0 + 1; /* a grid finer than the mask: at least one pixel (y0 < h) */
            if (x1 <= x0) x1 = x0 + 1;
            memset(count, 0, sizeof(int64_t) * K);
            for (int y = y0; y < y1; y++)
                for (int x = x0; x < x1; x++) count[mask[(size_t)y * w + x]]++;
            int best = 0;
            for (int k = 1; k < K; k++) best = count[k] > count[best] ? k : best;
            labels[r * gw + c] = best;
        }
}

void dinoc_seg_features_free(dinoc_seg_features *f) {
    if (!f) return;
    free(f->feats), free(f->labels), free(f->masks), free(f->mask_off), free(f->mask_w), free(f->mask_h);
    memset(f, 0, sizeof *f);
}

/* Item i of a batch: decode, preprocess into x [C, S, S] (pre: this thread's [3, S, S] when the
 * model has one channel), patch labels, and the mask kept in *mask. */
static dinoc_status seg_load(const dinoc_segset *set, const dinoc_preprocess *pp, int64_t i, int C, int S, int P,
                             float *x, float *pre, int32_t *labels, uint8_t **mask, int *mw, int *mh) {
    dinoc_image  img;
    dinoc_status st = dinoc_segset_get(set, i, &img, mask);
    if (st) return st;
    float *dst = C == 3 ? x : pre;
    if (!(st = dinoc_preprocess_image(pp, &img, dst, S, S))) {
        if (dst != x) memcpy(x, pre, sizeof(float) * S * S);
        dinoc_seg_patch_labels(labels, *mask, img.w, img.h, S / P, S / P, set->K);
        *mw = img.w, *mh = img.h;
    } else {
        free(*mask);
        *mask = NULL;
    }
    dinoc_image_free(&img);
    return st;
}

/* Patch tokens of the batch's rows [0, b) into feats (rows of F = n * D floats). */
static dinoc_status seg_take(const dinoc_model *m, const dinoc_state *st, int n, int b, float *tok, float *feats) {
    int T, D, gh, gw;
    dinoc_state_dims(st, NULL, &T, &D, &gh, &gw);
    const int depth = dinoc_model_config(m)->depth, Np = gh * gw, p0 = T - Np, F = n * D;
    for (int j = 0; j < n; j++) {
        const float *src = dinoc_state_output(st);
        if (j < n - 1) {
            dinoc_status s = dinoc_state_hidden(m, st, depth - n + j, 1, tok);
            if (s) return s;
            src = tok;
        }
        for (int i = 0; i < b; i++)
            for (int p = 0; p < Np; p++)
                memcpy(feats + ((size_t)i * Np + p) * F + (size_t)j * D, src + ((size_t)i * T + p0 + p) * D,
                       sizeof(float) * D);
    }
    return DINOC_OK;
}

/* Appends the batch's masks to f (keep_masks) and frees them. */
static dinoc_status seg_keep_masks(dinoc_seg_features *f, int64_t i0, int b, uint8_t **masks, int64_t *used) {
    for (int i = 0; i < b; i++) {
        const size_t sz = (size_t)f->mask_w[i0 + i] * f->mask_h[i0 + i];
        uint8_t     *nm = realloc(f->masks, (size_t)*used + sz);
        if (!nm) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for the test masks");
        f->masks = nm;
        memcpy(f->masks + *used, masks[i], sz);
        f->mask_off[i0 + i] = *used;
        *used += (int64_t)sz;
    }
    return DINOC_OK;
}

dinoc_status dinoc_seg_extract(const dinoc_model *m, const dinoc_segset *set, dinoc_seg_spec spec,
                               int64_t limit, int keep_masks, dinoc_seg_features *f,
                               void (*progress)(void *user, int64_t done, int64_t total), void *user) {
    if (!m || !set || !f) return dinoc_fail(DINOC_ERR_ARG, "dinoc_seg_extract: NULL argument");
    memset(f, 0, sizeof *f);
    const dinoc_vit_config *cfg = dinoc_model_config(m);
    const int               P = cfg->patch, C = cfg->channels, S = spec.size, D = cfg->dim, n = spec.n_last_blocks;
    if (S < P || S % P || S > 4096)
        return dinoc_fail(DINOC_ERR_ARG, "segmentation size %d: must be a multiple of the patch %d (<= 4096)", S, P);
    if (n < 1 || n > cfg->depth || spec.batch < 1)
        return dinoc_fail(DINOC_ERR_ARG, "n_last_blocks %d (1..%d), batch %d (>= 1)", n, cfg->depth, spec.batch);
    if (C != 1 && C != 3) return dinoc_fail(DINOC_ERR_UNSUPPORTED, "models of %d input channels (1 or 3 supported)", C);
    int64_t N = dinoc_segset_size(set);
    if (limit > 0 && limit < N) N = limit;
    if (N < 1) return dinoc_fail(DINOC_ERR_ARG, "the segmentation set is empty");
    dinoc_preprocess pp = *dinoc_model_preprocess(m);
    pp.do_resize = 1, pp.resize_mode = DINOC_RESIZE_EXACT, pp.resize_w = pp.resize_h = S, pp.do_center_crop = 0;
    const int    B = N < spec.batch ? (int)N : spec.batch, g = S / P, Np = g * g, nt = dinoc_get_threads();
    const size_t plane = (size_t)S * S;
    f->n = N, f->gh = f->gw = g, f->dim = n * D;
    dinoc_state   *st = NULL;
    float         *x = malloc(sizeof(float) * plane * C * B), *pre = malloc(sizeof(float) * plane * 3 * nt), *tok = NULL;
    uint8_t      **masks = calloc((size_t)B, sizeof(uint8_t *));
    dinoc_status  *errs  = calloc((size_t)B, sizeof(dinoc_status)), s;
    int64_t        used  = 0;
    f->feats    = malloc(sizeof(float) * (size_t)N * Np * f->dim);
    f->labels   = malloc(sizeof(int32_t) * (size_t)N * Np);
    f->mask_off = calloc((size_t)N, sizeof(int64_t));
    f->mask_w = calloc((size_t)N, sizeof(int)), f->mask_h = calloc((size_t)N, sizeof(int));
    if (!x || !pre || !masks || !errs || !f->feats || !f->labels || !f->mask_off || !f->mask_w || !f->mask_h) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory for %lld images x %d patches x %d features", (long long)N, Np, f->dim);
        goto done;
    }
    if ((s = dinoc_state_init(&st, m, B, S, S, n > 1 ? DINOC_STATE_HIDDEN : 0))) goto done;
    int T;
    dinoc_state_dims(st, NULL, &T, NULL, NULL, NULL);
    if (n > 1 && !(tok = malloc(sizeof(float) * (size_t)B * T * D))) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int64_t i0 = 0; i0 < N && !s; i0 += B) {
        const int b = N - i0 < B ? (int)(N - i0) : B;
#pragma omp parallel for schedule(dynamic, 2) num_threads(nt)
        for (int i = 0; i < b; i++)
            errs[i] = seg_load(set, &pp, i0 + i, C, S, P, x + i * plane * C, pre + dinoc_omp_thread_num() * plane * 3,
                               f->labels + (i0 + i) * Np, &masks[i], &f->mask_w[i0 + i], &f->mask_h[i0 + i]);
        for (int i = 0; i < b && !s; i++)
            if (errs[i]) { /* again on this thread, for dinoc_last_error's message */
                uint8_t *mk = NULL;
                int      w_, h_;
                s = seg_load(set, &pp, i0 + i, C, S, P, x + i * plane * C, pre, f->labels + (i0 + i) * Np, &mk, &w_, &h_);
                free(mk);
                if (!s) s = dinoc_fail(errs[i], "item %lld: %s", (long long)(i0 + i), dinoc_status_str(errs[i]));
            }
        if (!s && keep_masks) s = seg_keep_masks(f, i0, b, masks, &used);
        for (int i = 0; i < B; i++) free(masks[i]), masks[i] = NULL;
        /* a short last batch: the state's other rows keep their old inputs, their outputs unused */
        if (!s) s = dinoc_forward(m, st, x, NULL);
        if (!s) s = seg_take(m, st, n, b, tok, f->feats + (size_t)i0 * Np * f->dim);
        if (!s && progress) progress(user, i0 + b, N);
    }
done:
    dinoc_state_free(st);
    free(x), free(pre), free(tok), free(masks), free(errs);
    if (s) dinoc_seg_features_free(f);
    return s;
}

/* ---- the probe -------------------------------------------------------------------------------- */

dinoc_seg_config dinoc_seg_default(void) {
    static const double lrs[] = {0.03, 0.1, 0.3, 1.0, 3.0};
    dinoc_seg_config    c     = {lrs, (int)(sizeof lrs / sizeof lrs[0]), 5, 256, 0.1, 0};
    return c;
}

void dinoc_seg_head_free(dinoc_seg_head *h) {
    if (!h) return;
    free(h->mean), free(h->istd), free(h->w), free(h->b), free(h->val_by_lr);
    memset(h, 0, sizeof *h);
}

/* Trains nl classifiers w [nl*K, D], b [nl*K] on rows [0, n) of X, standardised on the fly, from
 * the same initial draw (normal std 0.01, bias 0) on the same shuffled batches. Each classifier
 * takes its own step (nl = 1 products), so its numbers do not depend on which others share its
 * group, hence not on the thread count. */
static dinoc_status seg_sgd(const float *X, const int32_t *y, int64_t n, int D, int K, const dinoc_seg_head *h,
                            const double *lrs, int nl, const dinoc_seg_config *cfg, float *w, float *b) {
    const int     B = n < cfg->batch ? (int)n : cfg->batch;
    const size_t  KD = (size_t)K * D;
    const int64_t total = (n + B - 1) / B * cfg->epochs;
    float        *mw = dinoc_calloc(KD * nl, sizeof(float)), *mb = calloc((size_t)K * nl, sizeof(float));
    float        *xb = malloc(sizeof(float) * (size_t)B * D);
    float        *scratch = malloc(sizeof(float) * dinoc_linear_sgd_scratch_floats(B, D, K, 1));
    int32_t      *yb = malloc(sizeof(int32_t) * B);
    int64_t      *order = malloc(sizeof(int64_t) * (size_t)n), t = 0;
    dinoc_status  s = DINOC_OK;
    if (!mw || !mb || !xb || !scratch || !yb || !order) {
        s = DINOC_ERR_NOMEM;
        goto done;
    }
    dinoc_rng rng;
    dinoc_rng_seed(&rng, cfg->seed ^ SEG_SEED_INIT);
    for (size_t i = 0; i < KD; i++) w[i] = 0.01f * dinoc_rng_normal(&rng);
    for (int j = 1; j < nl; j++) memcpy(w + j * KD, w, sizeof(float) * KD);
    memset(b, 0, sizeof(float) * K * nl);
    for (int64_t i = 0; i < n; i++) order[i] = i;
    for (int e = 0; e < cfg->epochs; e++) {
        dinoc_rng_seed(&rng, (cfg->seed ^ SEG_SEED_ORDER) + 0x9e3779b97f4a7c15ull * (uint64_t)(e + 1));
        for (int64_t i = n - 1; i > 0; i--) { /* a fresh shuffle of the previous order */
            int64_t j = (int64_t)(dinoc_rng_u64(&rng) % (uint64_t)(i + 1)), o = order[i];
            order[i] = order[j], order[j] = o;
        }
        for (int64_t i0 = 0; i0 < n; i0 += B, t++) {
            const int bn = n - i0 < B ? (int)(n - i0) : B;
            for (int i = 0; i < bn; i++) {
                const float *src = X + (size_t)order[i0 + i] * D;
                float       *dst = xb + (size_t)i * D;
                for (int d = 0; d < D; d++) dst[d] = (src[d] - h->mean[d]) * h->istd[d];
                yb[i] = y[order[i0 + i]];
            }
            const double cosine = 0.5 * (1.0 + cos(M_PI * (double)t / (double)total));
            for (int j = 0; j < nl; j++) {
                const float lr = (float)(lrs[j] * B / 256.0 * cosine); /* the batch in use (as the linear probe) */
                dinoc_linear_sgd_step(w + j * KD, b + (size_t)j * K, mw + j * KD, mb + (size_t)j * K, xb, yb, bn, D,
                                      K, 1, &lr, SEG_MOMENTUM, scratch, NULL);
            }
        }
    }
done:
    dinoc_free(mw), free(mb), free(xb), free(scratch), free(yb), free(order);
    return s;
}

/* seg_sgd with the lrs split over the OpenMP threads, one region for the whole training: a step's
 * products are too small to split well, and on a busy machine every barrier of a per-step region
 * costs (the probe took 10x longer at 2 threads than at 1 under load). */
static dinoc_status seg_sgd_all(const float *X, const int32_t *y, int64_t n, int D, int K, const dinoc_seg_head *h,
                                const double *lrs, int nl, const dinoc_seg_config *cfg, float *w, float *b) {
    const int    nt = nl == 1 ? 1 : dinoc_get_threads();
    dinoc_status st[nt], s = DINOC_OK;
    for (int t = 0; t < nt; t++) st[t] = DINOC_OK;
    if (nt == 1) {
        st[0] = seg_sgd(X, y, n, D, K, h, lrs, nl, cfg, w, b);
    } else {
#pragma omp parallel num_threads(nt)
        {
            const int t = dinoc_omp_thread_num(), T = dinoc_omp_num_threads(), j0 = t * nl / T, j1 = (t + 1) * nl / T;
            if (j0 < j1) st[t] = seg_sgd(X, y, n, D, K, h, lrs + j0, j1 - j0, cfg, w + (size_t)j0 * K * D, b + (size_t)j0 * K);
        }
    }
    for (int t = 0; t < nt && !s; t++)
        if (st[t]) s = dinoc_fail(st[t], "segmentation probe: out of memory (%lld rows of %d features)", (long long)n, D);
    return s;
}

/* Correct argmax counts of nl classifiers (standardised inputs) on rows [r0, r1). */
static dinoc_status seg_count(const float *X, const int32_t *y, int64_t r0, int64_t r1, int D, int K, int nl,
                              const dinoc_seg_head *h, const float *w, const float *b, int64_t *correct) {
    const int NK = nl * K;
    float    *xb = malloc(sizeof(float) * SEG_SCORE_ROWS * D), *lg = malloc(sizeof(float) * SEG_SCORE_ROWS * NK);
    if (!xb || !lg) {
        free(xb), free(lg);
        return dinoc_fail(DINOC_ERR_NOMEM, "segmentation probe: out of memory");
    }
    memset(correct, 0, sizeof(int64_t) * nl);
    for (int64_t i0 = r0; i0 < r1; i0 += SEG_SCORE_ROWS) {
        const int bn = r1 - i0 < SEG_SCORE_ROWS ? (int)(r1 - i0) : SEG_SCORE_ROWS;
        for (int i = 0; i < bn; i++)
            for (int d = 0; d < D; d++) xb[(size_t)i * D + d] = (X[(size_t)(i0 + i) * D + d] - h->mean[d]) * h->istd[d];
        dinoc_linear_forward(lg, xb, w, b, bn, D, NK);
        for (int i = 0; i < bn; i++)
            for (int j = 0; j < nl; j++) {
                const float *z = lg + (size_t)i * NK + (size_t)j * K;
                int          a = 0;
                for (int k = 1; k < K; k++) a = z[k] > z[a] ? k : a;
                correct[j] += a == y[i0 + i];
            }
    }
    free(xb), free(lg);
    return DINOC_OK;
}

dinoc_status dinoc_seg_head_fit(dinoc_seg_head *h, const float *X, const int32_t *y, int64_t n,
                                int rows_per_image, int D, int K, const dinoc_seg_config *cfg) {
    if (!h || !X || !y || !cfg || !cfg->lrs) return dinoc_fail(DINOC_ERR_ARG, "dinoc_seg_head_fit: NULL argument");
    memset(h, 0, sizeof *h);
    const int64_t nimg = rows_per_image > 0 ? n / rows_per_image : 0;
    if (D < 1 || K < 2 || K > SEG_MAX_CLASSES || nimg < 2 || n % rows_per_image || n > INT32_MAX)
        return dinoc_fail(DINOC_ERR_ARG, "segmentation probe: %lld rows (%d per image, >= 2 images), %d features, "
                                         "%d classes (2..%d)", (long long)n, rows_per_image, D, K, SEG_MAX_CLASSES);
    if (cfg->n_lrs < 1 || cfg->n_lrs > 64 || cfg->epochs < 1 || cfg->batch < 1 ||
        !(cfg->val_fraction > 0 && cfg->val_fraction < 1))
        return dinoc_fail(DINOC_ERR_ARG, "segmentation probe: %d lrs (1..64), %d epochs, batch %d (>= 1), "
                                         "val_fraction %g (in (0, 1))", cfg->n_lrs, cfg->epochs, cfg->batch, cfg->val_fraction);
    for (int64_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= K)
            return dinoc_fail(DINOC_ERR_ARG, "segmentation probe: label %d of row %lld outside 0..%d", y[i], (long long)i, K - 1);
    const int nl = cfg->n_lrs;
    h->D = D, h->K = K;
    h->mean = malloc(sizeof(float) * D), h->istd = malloc(sizeof(float) * D);
    h->w = malloc(sizeof(float) * (size_t)nl * K * D), h->b = malloc(sizeof(float) * (size_t)nl * K);
    h->val_by_lr = malloc(sizeof(double) * nl);
    int64_t     *ok = malloc(sizeof(int64_t) * nl);
    dinoc_status s  = DINOC_OK;
    if (!h->mean || !h->istd || !h->w || !h->b || !h->val_by_lr || !ok) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "segmentation probe: out of memory");
        goto done;
    }
    for (int d = 0; d < D; d++) { /* BatchNorm's statistics over every training row (biased variance) */
        double m = 0, v = 0;
        for (int64_t i = 0; i < n; i++) m += X[(size_t)i * D + d];
        m /= n;
        for (int64_t i = 0; i < n; i++) v += (X[(size_t)i * D + d] - m) * (X[(size_t)i * D + d] - m);
        if (!isfinite(m) || !isfinite(v)) {
            s = dinoc_fail(DINOC_ERR_NUMERIC, "segmentation probe: feature %d is not finite", d);
            goto done;
        }
        h->mean[d] = (float)m, h->istd[d] = (float)(1.0 / sqrt(v / n + SEG_BN_EPS));
    }
    int64_t nval = (int64_t)llround((double)nimg * cfg->val_fraction);
    nval               = nval < 1 ? 1 : nval > nimg - 1 ? nimg - 1 : nval;
    const int64_t ntr  = (nimg - nval) * rows_per_image;
    if ((s = seg_sgd_all(X, y, ntr, D, K, h, cfg->lrs, nl, cfg, h->w, h->b)) ||
        (s = seg_count(X, y, ntr, n, D, K, nl, h, h->w, h->b, ok)))
        goto done;
    int best = 0;
    for (int j = 0; j < nl; j++) {
        h->val_by_lr[j] = (double)ok[j] / (double)(n - ntr);
        best            = ok[j] > ok[best] ? j : best;
    }
    h->lr = cfg->lrs[best], h->val_acc = h->val_by_lr[best];
    if ((s = seg_sgd_all(X, y, n, D, K, h, &cfg->lrs[best], 1, cfg, h->w, h->b))) goto done;
    /* fold the standardisation in: w' = w * istd, b' = b - sum_d w'_d mean_d */
    for (int k = 0; k < K; k++) {
        double acc = 0;
        for (int d = 0; d < D; d++) {
            h->w[(size_t)k * D + d] *= h->istd[d];
            acc += (double)h->w[(size_t)k * D + d] * h->mean[d];
        }
        h->b[k] -= (float)acc;
    }
done:
    free(ok);
    if (s) dinoc_seg_head_free(h);
    return s;
}

void dinoc_seg_upsample(float *out, const float *in, int C, int ih, int iw, int oh, int ow) {
    const float sy = (float)ih / (float)oh, sx = (float)iw / (float)ow;
    for (int y = 0; y < oh; y++) {
        float fy = fmaxf(sy * (y + 0.5f) - 0.5f, 0.0f);
        int   y0 = (int)fy, y1 = y0 + (y0 < ih - 1);
        float ly = fy - y0;
        for (int x = 0; x < ow; x++) {
            float fx = fmaxf(sx * (x + 0.5f) - 0.5f, 0.0f);
            int   x0 = (int)fx, x1 = x0 + (x0 < iw - 1);
            float lx = fx - x0;
            const float *a = in + ((size_t)y0 * iw + x0) * C, *b = in + ((size_t)y0 * iw + x1) * C;
            const float *c = in + ((size_t)y1 * iw + x0) * C, *d = in + ((size_t)y1 * iw + x1) * C;
            float       *o = out + ((size_t)y * ow + x) * C;
            for (int k = 0; k < C; k++)
                o[k] = (1 - ly) * ((1 - lx) * a[k] + lx * b[k]) + ly * ((1 - lx) * c[k] + lx * d[k]);
        }
    }
}

size_t dinoc_seg_predict_scratch_floats(const dinoc_seg_head *h, int gh, int gw, int W, int H) {
    return (size_t)h->K * ((size_t)gh * gw + (size_t)W * H);
}

void dinoc_seg_predict(const dinoc_seg_head *h, const float *feats, int gh, int gw, int W, int H,
                       uint8_t *pred, float *scratch) {
    const int K  = h->K;
    float    *lg = scratch, *up = scratch + (size_t)gh * gw * K;
    dinoc_linear_forward(lg, feats, h->w, h->b, gh * gw, h->D, K);
    dinoc_seg_upsample(up, lg, K, gh, gw, H, W);
    for (size_t p = 0; p < (size_t)W * H; p++) {
        const float *z = up + p * K;
        int          a = 0;
        for (int k = 1; k < K; k++) a = z[k] > z[a] ? k : a;
        pred[p] = (uint8_t)a;
    }
}

void dinoc_seg_confusion_add(int64_t *conf, const uint8_t *truth, const uint8_t *pred, size_t n,
                             int K) {
    for (size_t i = 0; i < n; i++) conf[(size_t)truth[i] * K + pred[i]]++;
}

void dinoc_seg_scores(const int64_t *conf, int K, double *iou, double *miou, double *pixel_acc) {
    int64_t tp_all = 0, total = 0;
    double  sum    = 0;
    int     nk     = 0;
    for (int k = 0; k < K; k++) {
        int64_t row = 0, col = 0;
        for (int j = 0; j < K; j++) row += conf[(size_t)k * K + j], col += conf[(size_t)j * K + k];
        const int64_t tp = conf[(size_t)k * K + k], uni = row + col - tp;
        iou[k] = uni > 0 ? (double)tp / (double)uni : NAN;
        if (uni > 0) sum += iou[k], nk++;
        tp_all += tp, total += row;
    }
    *miou      = nk ? sum / nk : NAN;
    *pixel_acc = total ? (double)tp_all / (double)total : NAN;
}
