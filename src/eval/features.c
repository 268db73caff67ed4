/* features.c: frozen-encoder features of a whole data set (dinoc_backbone_features): decode and
 * preprocess a batch on the OpenMP threads, one forward, then for a ViT take the CLS tokens of the
 * last n blocks through the final LayerNorm (DINO's get_intermediate_layers, concatenated in block
 * order) and optionally the mean of the last block's normed patch tokens (registers excluded, as
 * DINOv2's create_linear_input); for a ResNet the pooled feature of the eval-mode network.
 * dinoc_backbone_load picks the loader from config.json's model_type.
 *
 * Preprocessing is the model's own (preprocessor_config.json) through dinoc_preprocess_image,
 * which yields [3, H, W]; a 1-channel model takes the first plane. When the pipeline leaves the
 * geometry alone (no resize or a resize to the image's own size, no crop or a crop to it: a 28-px
 * Fashion-MNIST model on 28-px images) only rescale + normalise remain; they depend on the byte
 * and the channel alone, so a 3 x 256 table made once by dinoc_preprocess_image itself replaces
 * the call (no allocation per image, same numbers). All buffers are made before the loop.
 *
 * Tested by tests/test_eval.c (features equal the states of dinoc_forward; the fast path equals
 * dinoc_preprocess_image). */
#include "eval.h"

#include <cjson/cJSON.h>
#include <string.h>

/* ---- loading either backbone ------------------------------------------------------------------ */

dinoc_status dinoc_backbone_load(dinoc_backbone *b, const char *path, const dinoc_load_params *lp) {
    memset(b, 0, sizeof *b);
    /* the folder holding config.json: path itself, or a weights file's folder */
    char *dir = NULL;
    if (dinoc_is_dir(path)) {
        dir = strdup(path);
    } else if ((dir = strdup(path))) {
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else strcpy(dir, ".");
    }
    char        *cfg = dir ? dinoc_path_join(dir, "config.json") : NULL;
    char        *ppj = dir ? dinoc_path_join(dir, "preprocessor_config.json") : NULL;
    cJSON       *root = NULL;
    dinoc_status s    = DINOC_OK;
    int          resnet = 0;
    if (!cfg || !ppj) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (dinoc_file_exists(cfg)) { /* a missing config.json is dinoc_model_load's error to give */
        if ((s = dinoc_json_load(&root, cfg))) goto done;
        const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
        resnet          = cJSON_IsString(mt) && strcmp(mt->valuestring, "resnet") == 0;
    }
    if (!resnet) {
        dinoc_model *m = NULL;
        s = dinoc_model_load(&m, path, lp);
        b->vit = m;
        goto done;
    }
    dinoc_resnet *r = NULL;
    if ((s = dinoc_resnet_load(&r, path))) goto done;
    b->resnet = r;
    b->pp     = dinoc_preprocess_default();
    b->pp.do_convert_rgb = r->cfg.in_channels == 3;
    if (dinoc_file_exists(ppj)) s = dinoc_preprocess_load(&b->pp, ppj);
done:
    cJSON_Delete(root);
    free(dir), free(cfg), free(ppj);
    if (s) dinoc_backbone_free(b);
    return s;
}

void dinoc_backbone_free(dinoc_backbone *b) {
    dinoc_model_free((dinoc_model *)b->vit);
    dinoc_resnet_free((dinoc_resnet *)b->resnet);
    memset(b, 0, sizeof *b);
}

int dinoc_backbone_channels(const dinoc_backbone *b) {
    return b->resnet ? b->resnet->cfg.in_channels : dinoc_model_config(b->vit)->channels;
}

/* ---- features --------------------------------------------------------------------------------- */

typedef struct {
    const dinoc_dataset    *ds;
    const dinoc_preprocess *pp;
    int                     C, H, W; /* model input */
    float                   lut[3][256];
    float                  *pre; /* [nthreads, 3, H, W] for the general path */
} extractor;

/* 1 when preprocessing an w x h image changes no pixel position. */
static int geometry_is_identity(const dinoc_preprocess *pp, int w, int h) {
    if (pp->do_resize) {
        if (pp->resize_mode == DINOC_RESIZE_EXACT && (pp->resize_w != w || pp->resize_h != h)) return 0;
        if (pp->resize_mode == DINOC_RESIZE_SHORTEST_EDGE && pp->shortest_edge != (w < h ? w : h)) return 0;
    }
    return !pp->do_center_crop || (pp->crop_w == w && pp->crop_h == h);
}

/* The value table of rescale + normalise, computed by the library's own pipeline on a 256 x 1
 * image whose pixel v is (v, v, v). */
static dinoc_status make_lut(extractor *ex) {
    dinoc_preprocess p = *ex->pp;
    p.do_resize = 0, p.do_center_crop = 0;
    uint8_t px[256 * 3];
    for (int v = 0; v < 256; v++) px[3 * v] = px[3 * v + 1] = px[3 * v + 2] = (uint8_t)v;
    dinoc_image img = {256, 1, 3, px};
    return dinoc_preprocess_image(&p, &img, &ex->lut[0][0], 256, 1);
}

/* Item i into x [C, H, W]; thread t owns ex->pre's slot t. *label may be NULL. */
static dinoc_status load_item(const extractor *ex, int64_t i, int t, float *x, int32_t *label) {
    dinoc_image  img;
    dinoc_status s = dinoc_dataset_get(ex->ds, i, &img, label);
    if (s) return s;
    const size_t plane = (size_t)ex->H * ex->W;
    if (geometry_is_identity(ex->pp, img.w, img.h)) {
        if (img.w != ex->W || img.h != ex->H) {
            s = dinoc_fail(DINOC_ERR_SHAPE, "item %lld is %d x %d, the first item %d x %d (give the "
                                            "model a preprocessor_config.json that resizes or crops)",
                           (long long)i, img.w, img.h, ex->W, ex->H);
        } else {
            for (int c = 0; c < ex->C; c++) {
                const int      sc  = img.c <= 2 ? 0 : c; /* grey (+ alpha) feeds every channel */
                const uint8_t *src = img.data + sc;
                float         *dst = x + c * plane;
                for (size_t k = 0; k < plane; k++) dst[k] = ex->lut[c][src[k * img.c]];
            }
        }
    } else {
        int ow, oh;
        dinoc_preprocess_size(ex->pp, img.w, img.h, &ow, &oh);
        if (ow != ex->W || oh != ex->H) {
            s = dinoc_fail(DINOC_ERR_SHAPE,
                           "item %lld (%d x %d) preprocesses to %d x %d, the first item to %d x %d",
                           (long long)i, img.w, img.h, ow, oh, ex->W, ex->H);
        } else {
            float *pre = ex->C == 3 ? x : ex->pre + (size_t)t * 3 * plane;
            s = dinoc_preprocess_image(ex->pp, &img, pre, ex->W, ex->H);
            if (!s && pre != x) memcpy(x, pre, sizeof(float) * plane * ex->C);
        }
    }
    dinoc_image_free(&img);
    return s;
}

/* Input size of the first item. */
static dinoc_status input_size(extractor *ex) {
    dinoc_image  img;
    dinoc_status s = dinoc_dataset_get(ex->ds, 0, &img, NULL);
    if (s) return s;
    if (geometry_is_identity(ex->pp, img.w, img.h))
        ex->W = img.w, ex->H = img.h;
    else
        dinoc_preprocess_size(ex->pp, img.w, img.h, &ex->W, &ex->H);
    dinoc_image_free(&img);
    return DINOC_OK;
}

/* Rows [0, b) of a batch's outputs into feats. tok: scratch [B, T, D]. */
static dinoc_status take_features(const dinoc_model *m, const dinoc_state *st, dinoc_feature_spec spec,
                                  int b, float *tok, float *feats, int dim) {
    int B, T, D, gh, gw;
    dinoc_state_dims(st, &B, &T, &D, &gh, &gw);
    const int    depth = dinoc_model_config(m)->depth, n = spec.n_last_blocks;
    const float *out   = dinoc_state_output(st);
    for (int j = 0; j < n; j++) {
        const float *src = out;
        if (j < n - 1) {
            dinoc_status s = dinoc_state_hidden(m, st, depth - n + j, 1, tok);
            if (s) return s;
            src = tok;
        }
        for (int i = 0; i < b; i++)
            memcpy(feats + (size_t)i * dim + (size_t)j * D, src + (size_t)i * T * D, sizeof(float) * D);
    }
    if (spec.avgpool) {
        const int Np = gh * gw, p0 = T - Np; /* patches follow CLS and the registers */
#pragma omp parallel for schedule(static)
        for (int i = 0; i < b; i++) {
            float *dst = feats + (size_t)i * dim + (size_t)n * D;
            for (int d = 0; d < D; d++) {
                double acc = 0;
                for (int k = p0; k < T; k++) acc += out[((size_t)i * T + k) * D + d];
                dst[d] = (float)(acc / Np);
            }
        }
    }
    return DINOC_OK;
}

dinoc_status dinoc_extract_features(const dinoc_model *m, const dinoc_dataset *ds,
                                    dinoc_feature_spec spec, int batch, int64_t limit,
                                    float **feats, int32_t **labels, int *dim,
                                    void (*progress)(void *user, int64_t done, int64_t total),
                                    void *user) {
    dinoc_backbone b;
    memset(&b, 0, sizeof b);
    b.vit = m;
    if (!m) return dinoc_fail(DINOC_ERR_ARG, "dinoc_extract_features: NULL argument");
    return dinoc_backbone_features(&b, ds, spec, batch, limit, feats, labels, dim, progress, user);
}

dinoc_status dinoc_backbone_features(const dinoc_backbone *bb, const dinoc_dataset *ds,
                                     dinoc_feature_spec spec, int batch, int64_t limit,
                                     float **feats, int32_t **labels, int *dim,
                                     void (*progress)(void *user, int64_t done, int64_t total),
                                     void *user) {
    if (!bb || (!bb->vit == !bb->resnet) || !ds || !feats || !labels || !dim)
        return dinoc_fail(DINOC_ERR_ARG, "dinoc_backbone_features: NULL argument (or not exactly one model)");
    *feats = NULL, *labels = NULL, *dim = 0;
    const dinoc_model      *m   = bb->vit;
    const dinoc_resnet     *rn  = bb->resnet;
    const dinoc_vit_config *cfg = m ? dinoc_model_config(m) : NULL;
    if (m && (spec.n_last_blocks < 1 || spec.n_last_blocks > cfg->depth))
        return dinoc_fail(DINOC_ERR_ARG, "n_last_blocks %d: must be in 1..%d (the model's depth)",
                          spec.n_last_blocks, cfg->depth);
    if (rn) spec.n_last_blocks = 1, spec.avgpool = 0; /* the pooled feature is the only one */
    if (batch < 1) return dinoc_fail(DINOC_ERR_ARG, "feature batch %d: must be >= 1", batch);
    const int C = dinoc_backbone_channels(bb);
    if (C != 1 && C != 3)
        return dinoc_fail(DINOC_ERR_UNSUPPORTED, "models of %d input channels (1 or 3 supported)", C);
    int64_t N = dinoc_dataset_size(ds);
    if (limit > 0 && limit < N) N = limit;
    if (N < 1) return dinoc_fail(DINOC_ERR_ARG, "the data set is empty");
    const int B = N < batch ? (int)N : batch, D = m ? cfg->dim : dinoc_resnet_feat_dim(rn);
    const int F = (spec.n_last_blocks + (spec.avgpool ? 1 : 0)) * D;

    extractor ex = {.ds = ds, .pp = m ? dinoc_model_preprocess(m) : &bb->pp, .C = C};
    dinoc_status s;
    if ((s = make_lut(&ex)) || (s = input_size(&ex))) return s;
    if (m && (ex.W > cfg->image_size || ex.H > cfg->image_size))
        dinoc_log(DINOC_LOG_WARN, "preprocessing gives %d x %d images, larger than the model's %d "
                                  "(position embeddings are interpolated); check preprocessor_config.json",
                  ex.W, ex.H, cfg->image_size);
    const int        nt    = dinoc_get_threads();
    const size_t     plane = (size_t)ex.H * ex.W, per = plane * ex.C;
    dinoc_state     *st    = NULL;
    dinoc_resnet_ws *ws    = NULL;
    float           *x = NULL, *tok = NULL, *out = NULL;
    int32_t         *lab = NULL;
    dinoc_status    *errs = NULL;
    size_t           nf;
    int              T = 0;
    if (m && (s = dinoc_state_init(&st, m, B, ex.H, ex.W, spec.n_last_blocks > 1 ? DINOC_STATE_HIDDEN : 0)))
        goto done;
    if (rn && (s = dinoc_resnet_ws_init(&ws, rn, B, ex.H, ex.W, 0))) goto done;
    if (m) dinoc_state_dims(st, NULL, &T, NULL, NULL, NULL);
    if (!dinoc_mul_size((size_t)N, (size_t)F, &nf)) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "%lld x %d features overflow", (long long)N, F);
        goto done;
    }
    x      = malloc(sizeof(float) * per * B);
    ex.pre = ex.C == 3 ? NULL : malloc(sizeof(float) * 3 * plane * nt);
    /* scratch: the ViT's hidden tokens of earlier blocks, or the ResNet's batch of features */
    const size_t ntok = m ? (spec.n_last_blocks > 1 ? (size_t)B * T * D : 0) : (size_t)B * F;
    tok    = ntok ? malloc(sizeof(float) * ntok) : NULL;
    out    = malloc(sizeof(float) * nf);
    lab    = malloc(sizeof(int32_t) * (size_t)N);
    errs   = malloc(sizeof(dinoc_status) * B);
    if (!x || (ex.C != 3 && !ex.pre) || (ntok && !tok) || !out || !lab || !errs) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory for %lld x %d features", (long long)N, F);
        goto done;
    }
    for (int64_t i0 = 0; i0 < N && !s; i0 += B) {
        const int b = N - i0 < B ? (int)(N - i0) : B;
#pragma omp parallel for schedule(dynamic, 4) num_threads(nt)
        for (int i = 0; i < b; i++)
            errs[i] = load_item(&ex, i0 + i, dinoc_omp_thread_num(), x + i * per, &lab[i0 + i]);
        for (int i = 0; i < b && !s; i++)
            if (errs[i]) { /* again on this thread, for dinoc_last_error's message */
                s = load_item(&ex, i0 + i, 0, x + i * per, NULL);
                if (!s) s = dinoc_fail(errs[i], "item %lld: %s", (long long)(i0 + i), dinoc_status_str(errs[i]));
            }
        if (s) break;
        /* a short last batch: the other rows keep their old inputs, their outputs unused (each
         * row's output depends on its own input alone: eval-mode BN, per-image attention) */
        if (rn) {
            if ((s = dinoc_resnet_forward(rn, x, B, ex.H, ex.W, tok, ws))) break;
            memcpy(out + (size_t)i0 * F, tok, sizeof(float) * (size_t)b * F);
        } else {
            if ((s = dinoc_forward(m, st, x, NULL))) break;
            s = take_features(m, st, spec, b, tok, out + (size_t)i0 * F, F);
        }
        if (!s && progress) progress(user, i0 + b, N);
    }
done:
    dinoc_state_free(st);
    dinoc_resnet_ws_free(ws);
    free(x), free(ex.pre), free(tok), free(errs);
    if (s) {
        free(out), free(lab);
        return s;
    }
    /* a limit takes the first N items: on a folder (listed class by class) that can be a few
     * classes only; said, since an accuracy over them reads like one over all */
    const int K = dinoc_dataset_num_classes(ds);
    if (N < dinoc_dataset_size(ds) && K > 1) {
        uint8_t *seen = calloc((size_t)K, 1);
        int      k    = 0;
        for (int64_t i = 0; seen && i < N; i++)
            if (lab[i] >= 0 && lab[i] < K && !seen[lab[i]]) seen[lab[i]] = 1, k++;
        if (seen && k < K)
            dinoc_log(DINOC_LOG_WARN, "the first %lld of %lld images hold %d of the %d classes (an image folder is "
                      "listed class by class): results cover those classes only", (long long)N,
                      (long long)dinoc_dataset_size(ds), k, K);
        free(seen);
    }
    *feats = out, *labels = lab, *dim = F;
    return DINOC_OK;
}
