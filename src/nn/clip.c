/* clip.c: CLIP image-text models (see clip.h): construction, random init, and the encoders.
 *
 *   image embedding  = normalize(visual_projection @ LN_post(tower(x))[CLS])
 *   text embedding   = normalize(text_projection @ LN_final(text(ids))[EOT])
 *   logits_per_image = exp(logit_scale) * I T^T
 * The image tower is the ViT of vit.c: DINOC_ARCH_CLIP for CLIP weights (pre-LN, QuickGELU from
 * hidden_act), or a DINO / DINOv2 tower for LiT (its final norm's CLS row feeds the projection).
 * The text tower, its EOT pooling and text_projection are text.c's. File I/O is clip_io.c.
 * Tested by tests/test_clip.c against a PyTorch reference (tests/py/gen_clip.py). */
#include "clip.h"

#include <math.h>
#include <string.h>

/* Images per forward of the encoder: bounds the activations (B * T * 4D floats). */
#define CLIP_IMAGE_CHUNK 32
#define CLIP_TEXT_CHUNK  64

void dinoc_clip_free(dinoc_clip *m) {
    if (!m) return;
    dinoc_model_free(m->vision);
    dinoc_text_free(m->text);
    dinoc_free(m->head);
    dinoc_tokenizer_free(m->tok);
    free(m->vision_dir);
    free(m);
}

int   dinoc_clip_embed_dim(const dinoc_clip *m) { return m->embed_dim; }
float dinoc_clip_logit_scale(const dinoc_clip *m) { return expf(m->head[m->n_head - 1]); }

void dinoc_clip_normalize(float *x, float *norms, int n, int d) {
    for (int i = 0; i < n; i++) {
        double ss = 0;
        float *r  = x + (size_t)i * d;
        for (int k = 0; k < d; k++) ss += (double)r[k] * r[k];
        /* torch's x / x.norm(dim=-1): no epsilon; a zero row stays zero here instead of NaN */
        const float nr = (float)sqrt(ss), inv = nr > 0 ? 1.0f / nr : 0.0f;
        for (int k = 0; k < d; k++) r[k] *= inv;
        if (norms) norms[i] = nr;
    }
}

void dinoc_clip_project_images(const dinoc_clip *m, float *emb, const float *tokens, int B, int T) {
    const int Dv = m->vision->cfg.dim;
    /* the CLS row of each image is row b*T: a strided view, so one product with lda = T*Dv */
    dinoc_gemm(0, 1, B, m->embed_dim, Dv, 1.0f, tokens, T * Dv, m->head, Dv, 0.0f, emb, m->embed_dim);
}

dinoc_status dinoc_clip_alloc_head(dinoc_clip *m, int embed_dim) {
    m->embed_dim = embed_dim;
    m->n_head    = (size_t)embed_dim * m->vision->cfg.dim + 1;
    m->head      = dinoc_calloc(m->n_head, sizeof(float));
    if (!m->head) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for the CLIP projection");
    return DINOC_OK;
}

/* OpenAI's init of the projection (width^-0.5) and logit_scale ln(1/0.07) (reference A.4). */
static void init_head(dinoc_clip *m, dinoc_rng *r) {
    const float sd = 1.0f / sqrtf((float)m->vision->cfg.dim);
    for (size_t i = 0; i + 1 < m->n_head; i++) m->head[i] = sd * dinoc_rng_normal(r);
    m->head[m->n_head - 1] = logf(1.0f / 0.07f);
}

static dinoc_status new_clip(dinoc_clip **out, dinoc_model *vision, const dinoc_text_config *tcfg,
                             int embed_dim, uint64_t seed) {
    *out          = NULL;
    dinoc_clip *m = calloc(1, sizeof *m);
    if (!m) {
        dinoc_model_free(vision);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    }
    m->vision = vision;
    if (embed_dim <= 0 || embed_dim > 65536) {
        dinoc_clip_free(m);
        return dinoc_fail(DINOC_ERR_CONFIG, "CLIP embedding width %d out of range", embed_dim);
    }
    dinoc_text_config tc = *tcfg;
    tc.kind              = DINOC_TEXT_CLIP;
    tc.proj_dim          = embed_dim;
    dinoc_status s       = dinoc_text_init_random(&m->text, &tc, seed ^ 0x7465787475ull);
    if (!s) s = dinoc_clip_alloc_head(m, embed_dim);
    if (s) {
        dinoc_clip_free(m);
        return s;
    }
    dinoc_rng r;
    dinoc_rng_seed(&r, seed ^ 0x68656164ull);
    init_head(m, &r);
    *out = m;
    return DINOC_OK;
}

dinoc_status dinoc_clip_init_random(dinoc_clip **out, const dinoc_vit_config *vcfg,
                                    const dinoc_text_config *tcfg, int embed_dim, uint64_t seed) {
    *out = NULL;
    dinoc_model *v;
    dinoc_status s = dinoc_model_init_random(&v, vcfg, seed);
    if (s) return s;
    if (vcfg->arch == DINOC_ARCH_CLIP) {
        /* OpenAI's init (reference A.4): class and position embeddings width^-0.5 randn; per
         * block qkv w^-0.5, out_proj and fc2 w^-0.5 (2L)^-0.5, fc1 (2w)^-0.5. The ViT's 0.02 would
         * leave the CLS token blind to the image at small widths (attention near uniform, a tiny
         * branch), so every image would start with the same embedding. CLIP's preprocessing. */
        dinoc_rng r;
        dinoc_rng_seed(&r, seed ^ 0x636c6970ull);
        const int    D  = vcfg->dim;
        const float  sd = 1.0f / sqrtf((float)D), sd_out = sd / sqrtf(2.0f * vcfg->depth);
        const float  sd_fc1 = 1.0f / sqrtf(2.0f * D);
        const size_t np = (size_t)(1 + v->pos_m * v->pos_m) * D, F = (size_t)vcfg->ffn_hidden;
        for (int d = 0; d < D; d++) v->p.cls[d] = sd * dinoc_rng_normal(&r);
        for (size_t i = 0; i < np; i++) v->p.pos[i] = sd * dinoc_rng_normal(&r);
        for (int l = 0; l < vcfg->depth; l++) {
            const dinoc_block_params *b = &v->p.blocks[l];
            for (size_t i = 0; i < (size_t)3 * D * D; i++) b->qkv_w[i] = sd * dinoc_rng_normal(&r);
            for (size_t i = 0; i < (size_t)D * D; i++) b->proj_w[i] = sd_out * dinoc_rng_normal(&r);
            for (size_t i = 0; i < F * D; i++) b->fc1_w[i] = sd_fc1 * dinoc_rng_normal(&r);
            for (size_t i = 0; i < F * D; i++) b->fc2_w[i] = sd_out * dinoc_rng_normal(&r);
        }
        dinoc_clip_default_preprocess(&v->pp, vcfg->image_size);
    }
    return new_clip(out, v, tcfg, embed_dim, seed);
}

dinoc_status dinoc_clip_init_lit(dinoc_clip **out, dinoc_model *vision, const dinoc_text_config *tcfg,
                                 int embed_dim, uint64_t seed) {
    dinoc_status s = new_clip(out, vision, tcfg, embed_dim, seed);
    if (s) return s;
    (*out)->vision_dir = strdup("vision");
    if (!(*out)->vision_dir) {
        dinoc_clip_free(*out);
        *out = NULL;
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    }
    return DINOC_OK;
}

void dinoc_clip_default_preprocess(dinoc_preprocess *pp, int image) {
    /* HF CLIPImageProcessor: shortest edge, bicubic, center crop, 1/255, OpenAI mean/std (A.7) */
    static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    static const float std[3]  = {0.26862954f, 0.26130258f, 0.27577711f};
    *pp                = dinoc_preprocess_default();
    pp->resize_mode    = DINOC_RESIZE_SHORTEST_EDGE;
    pp->shortest_edge  = image;
    pp->resample       = DINOC_RESAMPLE_BICUBIC;
    pp->do_center_crop = 1;
    pp->crop_w = pp->crop_h = image;
    memcpy(pp->mean, mean, sizeof mean);
    memcpy(pp->std, std, sizeof std);
}

/* ---- encoders --------------------------------------------------------------------------------- */

dinoc_status dinoc_clip_encode_images(const dinoc_clip *m, const dinoc_image *imgs, int n, float *out) {
    if (n <= 0) return n == 0 ? DINOC_OK : dinoc_fail(DINOC_ERR_ARG, "negative image count %d", n);
    const dinoc_preprocess *pp = &m->vision->pp;
    int                     w, h;
    dinoc_preprocess_size(pp, imgs[0].w, imgs[0].h, &w, &h);
    const int    B  = n < CLIP_IMAGE_CHUNK ? n : CLIP_IMAGE_CHUNK;
    const size_t px = (size_t)3 * w * h;
    float       *x  = dinoc_calloc((size_t)B * px, sizeof(float));
    dinoc_state *st = NULL;
    dinoc_status s  = x ? dinoc_state_init(&st, m->vision, B, h, w, 0)
                        : dinoc_fail(DINOC_ERR_NOMEM, "out of memory for %d images", B);
    for (int i0 = 0; i0 < n && !s; i0 += B) {
        const int nb = n - i0 < B ? n - i0 : B;
        for (int b = 0; b < nb && !s; b++) {
            int wi, hi;
            dinoc_preprocess_size(pp, imgs[i0 + b].w, imgs[i0 + b].h, &wi, &hi);
            if (wi != w || hi != h)
                s = dinoc_fail(DINOC_ERR_SHAPE, "image %d preprocesses to %dx%d, image 0 to %dx%d "
                               "(one size per call)", i0 + b, wi, hi, w, h);
            else
                s = dinoc_preprocess_image(pp, &imgs[i0 + b], x + (size_t)b * px, w, h);
        }
        /* a short last chunk runs the full batch (the state's size); only nb rows are kept */
        if (!s) s = dinoc_forward(m->vision, st, x, NULL);
        if (s) break;
        int T;
        dinoc_state_dims(st, NULL, &T, NULL, NULL, NULL);
        dinoc_clip_project_images(m, out + (size_t)i0 * m->embed_dim, dinoc_state_output(st), nb, T);
        dinoc_clip_normalize(out + (size_t)i0 * m->embed_dim, NULL, nb, m->embed_dim);
    }
    dinoc_state_free(st);
    dinoc_free(x);
    return s;
}

dinoc_status dinoc_clip_tokenize(dinoc_clip *m, const char *const *texts, int n, int32_t *ids,
                                 int32_t *lengths) {
    dinoc_status s = DINOC_OK;
    if (!m->tok) {
        char path[4096];
        if ((s = dinoc_tokenizer_find_vocab(path, sizeof path, NULL))) return s;
        if ((s = dinoc_tokenizer_load(&m->tok, path))) return s;
    }
    const int ctx = m->text->cfg.max_pos;
    for (int i = 0; i < n && !s; i++) {
        int len = 0;
        s       = dinoc_tokenize_clip(m->tok, texts[i], ids + (size_t)i * ctx, ctx, 1, &len);
        if (s) s = dinoc_fail_prefix(s, "text %d", i);
        lengths[i] = len;
    }
    return s;
}

dinoc_status dinoc_clip_encode_texts(const dinoc_clip *m, const char *const *texts, int n, float *out) {
    if (n <= 0) return n == 0 ? DINOC_OK : dinoc_fail(DINOC_ERR_ARG, "negative text count %d", n);
    /* the tokenizer is loaded lazily into the model; encode_texts is const for its callers, so the
     * first call loads it (clip_io.c loads it with the model, so this is a fallback) */
    dinoc_clip     *mm  = (dinoc_clip *)m;
    const int       ctx = m->text->cfg.max_pos, B = n < CLIP_TEXT_CHUNK ? n : CLIP_TEXT_CHUNK;
    int32_t        *ids = dinoc_calloc((size_t)B * ctx, sizeof(int32_t));
    int32_t        *len = dinoc_calloc((size_t)B, sizeof(int32_t));
    dinoc_text_state *st = NULL;
    dinoc_status    s   = ids && len ? dinoc_text_state_init(&st, m->text, B, ctx, 0)
                                     : dinoc_fail(DINOC_ERR_NOMEM, "out of memory for %d texts", B);
    const int       E   = m->embed_dim;
    for (int i0 = 0; i0 < n && !s; i0 += B) {
        const int nb = n - i0 < B ? n - i0 : B;
        memset(ids, 0, sizeof(int32_t) * (size_t)B * ctx);
        for (int b = nb; b < B; b++) len[b] = 1; /* rows past a short last chunk: one id 0 */
        if ((s = dinoc_clip_tokenize(mm, texts + i0, nb, ids, len))) {
            s = dinoc_fail_prefix(s, "texts from %d", i0);
            break;
        }
        if ((s = dinoc_text_forward(m->text, st, ids, len))) break;
        memcpy(out + (size_t)i0 * E, dinoc_text_state_pooled(st), sizeof(float) * (size_t)nb * E);
        dinoc_clip_normalize(out + (size_t)i0 * E, NULL, nb, E);
    }
    dinoc_text_state_free(st);
    dinoc_free(ids);
    dinoc_free(len);
    return s;
}
