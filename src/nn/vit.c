/* vit.c: the Vision Transformer of DINO, DINOv2 (with and without registers) and DINO v1 as
 * published on Hugging Face: parameter layout, random init, and the inference forward pass.
 *
 * Also CLIP's image tower (DINOC_ARCH_CLIP, vit.h): no patch bias, pre-LN, QuickGELU or GELU.
 * Forward, for images [B, C, H, W] with a gh x gw patch grid (Np = gh*gw):
 *   patches = im2col(images)                      [B*Np, C*P*P]
 *   e       = patches @ patch_w^T + patch_b       [B*Np, D]   (Conv2d with stride P)
 *   e[mask] = mask_token                          (DINOv2: before the position add)
 *   x       = [cls + pos[0], e + pos[1:]]         (pos resized to gh x gw, see pos_embed below)
 *   x       = [x[:, :1], registers, x[:, 1:]]     (registers get no position embedding)
 *   x       = LN_pre(x)                           (CLIP only: pre_layrnorm)
 *   block:  x += ls1 * proj(attn(LN1(x)));  x += ls2 * fc2(act(fc1(LN2(x))))
 *   out     = LN(x)
 * Tested against PyTorch reference modules in tests/test_vit.c (fixtures by tests/py/gen_vit.py). */
#include "vit.h"

#include <math.h>
#include <string.h>

/* ---- configuration and layout ----------------------------------------------------------------- */

dinoc_status dinoc_vit_config_check(const dinoc_vit_config *c, const char *where) {
#define REQ(cond, ...)                                                  \
    do {                                                                \
        if (!(cond)) {                                                  \
            dinoc_fail(DINOC_ERR_CONFIG, __VA_ARGS__);                  \
            return dinoc_fail_prefix(DINOC_ERR_CONFIG, "%s", where);    \
        }                                                               \
    } while (0)
    REQ(c->dim > 0 && c->dim <= 65536, "hidden size %d out of range", c->dim);
    REQ(c->depth > 0 && c->depth <= 1024, "depth %d out of range", c->depth);
    REQ(c->heads > 0 && c->dim % c->heads == 0, "%d heads do not divide hidden size %d", c->heads,
        c->dim);
    REQ(c->ffn_hidden > 0 && c->ffn_hidden <= 1 << 20, "FFN hidden size %d out of range",
        c->ffn_hidden);
    REQ(c->patch > 0 && c->patch <= 1024, "patch size %d out of range", c->patch);
    REQ(c->channels > 0 && c->channels <= 16, "num_channels %d out of range", c->channels);
    REQ(c->image_size >= c->patch && c->image_size <= 65536, "image size %d out of range",
        c->image_size);
    REQ(c->image_size % c->patch == 0, "image size %d is not a multiple of the patch %d",
        c->image_size, c->patch);
    REQ(c->n_registers >= 0 && c->n_registers <= 1024, "%d register tokens out of range",
        c->n_registers);
    REQ(c->ln_eps > 0 && c->ln_eps < 1, "layer_norm_eps %g out of range", c->ln_eps);
    REQ(c->ffn == DINOC_FFN_MLP || c->ffn == DINOC_FFN_SWIGLU || c->ffn == DINOC_FFN_MLP_QUICK_GELU,
        "unknown FFN kind %d", c->ffn);
    REQ(c->arch >= DINOC_ARCH_DINOV2 && c->arch <= DINOC_ARCH_CLIP, "unknown architecture %d", c->arch);
    REQ(c->arch != DINOC_ARCH_CLIP || (c->ffn != DINOC_FFN_SWIGLU && !c->n_registers && !c->mask_token &&
                                       !c->layerscale),
        "a CLIP image tower has no SwiGLU, registers, mask token or LayerScale");
    REQ(c->pos_interp >= DINOC_POS_INTERP_SIZE && c->pos_interp <= DINOC_POS_INTERP_ANTIALIAS,
        "unknown position interpolation %d", c->pos_interp);
    size_t m = (size_t)(c->image_size / c->patch);
    REQ(m * m <= (1u << 22), "position grid %zux%zu too large", m, m);
#undef REQ
    return DINOC_OK;
}

void dinoc_vit_act_forward(const dinoc_vit_config *c, float *out, const float *inp, size_t n) {
    if (c->ffn == DINOC_FFN_MLP_QUICK_GELU) dinoc_quick_gelu_forward(out, inp, n);
    else dinoc_gelu_forward(out, inp, n);
}

void dinoc_vit_act_backward(const dinoc_vit_config *c, float *dinp, const float *dout,
                            const float *inp, size_t n) {
    if (c->ffn == DINOC_FFN_MLP_QUICK_GELU) dinoc_quick_gelu_backward(dinp, dout, inp, n);
    else dinoc_gelu_backward(dinp, dout, inp, n);
}

/* Appends one entry (name, data view, decay flag, shape) to e[n++] of the walk below (counts only
 * when e is NULL). */
#define ADD(nm, data_, decay_, nd, ...)                                                  \
    do {                                                                                 \
        if (e) {                                                                         \
            int64_t sh_[] = {__VA_ARGS__};                                               \
            snprintf(e[n].name, sizeof e[n].name, "%s", nm);                             \
            e[n].ndim = nd;                                                              \
            memcpy(e[n].shape, sh_, sizeof(int64_t) * (nd));                             \
            e[n].data  = (data_);                                                        \
            e[n].decay = (decay_);                                                       \
        }                                                                                \
        n++;                                                                             \
    } while (0)

/* Name of tensor `what` of a CLIP image tower: HF CLIPVisionTransformer names (without the
 * "vision_model." prefix) or timm's vit_*_clip names (the ORIG scheme, used for random init).
 * layer < 0 for the non-block tensors. */
static const char *clip_name(char *buf, size_t n, int hf, int layer, const char *what) {
    static const char *map[][3] = {/* key, HF, timm */
        {"cls", "embeddings.class_embedding", "cls_token"},
        {"pos", "embeddings.position_embedding.weight", "pos_embed"},
        {"patch", "embeddings.patch_embedding.weight", "patch_embed.proj.weight"},
        {"pre.weight", "pre_layrnorm.weight", "norm_pre.weight"}, /* sic: HF's spelling */
        {"pre.bias", "pre_layrnorm.bias", "norm_pre.bias"},
        {"post.weight", "post_layernorm.weight", "norm.weight"},
        {"post.bias", "post_layernorm.bias", "norm.bias"},
        {"ln1", "layer_norm1", "norm1"}, {"ln2", "layer_norm2", "norm2"},
        {"proj", "self_attn.out_proj", "attn.proj"}, {"fc1", "mlp.fc1", "mlp.fc1"},
        {"fc2", "mlp.fc2", "mlp.fc2"},
    };
    const char *nm = what;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i][0], what) == 0) nm = map[i][hf ? 1 : 2];
    if (layer < 0) snprintf(buf, n, "%s", nm);
    else snprintf(buf, n, "%s.%d.%s", hf ? "encoder.layers" : "blocks", layer, nm);
    return buf;
}

/* The CLIP tower's tensors in layout order (see dinoc_vit_param_entries). */
static int clip_entries(const dinoc_model *m, int hf, dinoc_param_entry *e) {
    const dinoc_vit_config *c = &m->cfg;
    const dinoc_vit_params *p = &m->p;
    const int64_t           D = c->dim, F = c->ffn_hidden, P = c->patch, C = c->channels;
    const int64_t           T = 1 + (int64_t)m->pos_m * m->pos_m;
    int                     n = 0;
    char                    nm[96], full[96];
#define NM(l, what) clip_name(nm, sizeof nm, hf, l, what)
#define BADD(what, sfx, ...)                                                             \
    do {                                                                                 \
        snprintf(full, sizeof full, "%s.%s", NM(l, what), sfx);                          \
        ADD(full, __VA_ARGS__);                                                          \
    } while (0)
    /* HF keeps class_embedding [D] and position_embedding [T, D]; timm [1, 1, D] and [1, T, D] */
    if (hf) ADD(NM(-1, "cls"), p->cls, 0, 1, D);
    else ADD(NM(-1, "cls"), p->cls, 0, 3, 1, 1, D);
    ADD(NM(-1, "patch"), p->patch_w, 1, 4, D, C, P, P);
    /* the position table is decayed as open_clip does (its rule: no decay for tensors of fewer
     * than 2 dims and for ln / bn / bias / logit_scale names; positional_embedding is [T, D]) */
    if (hf) ADD(NM(-1, "pos"), p->pos, 1, 2, T, D);
    else ADD(NM(-1, "pos"), p->pos, 1, 3, 1, T, D);
    ADD(NM(-1, "pre.weight"), p->pre_w, 0, 1, D);
    ADD(NM(-1, "pre.bias"), p->pre_b, 0, 1, D);
    for (int l = 0; l < c->depth; l++) {
        const dinoc_block_params *b = &p->blocks[l];
        BADD("ln1", "weight", b->ln1_w, 0, 1, D);
        BADD("ln1", "bias", b->ln1_b, 0, 1, D);
        if (hf) {
            static const char *qkv[3] = {"q", "k", "v"};
            for (int i = 0; i < 3; i++) {
                snprintf(full, sizeof full, "encoder.layers.%d.self_attn.%s_proj.weight", l, qkv[i]);
                ADD(full, b->qkv_w ? b->qkv_w + i * D * D : NULL, 1, 2, D, D);
                snprintf(full, sizeof full, "encoder.layers.%d.self_attn.%s_proj.bias", l, qkv[i]);
                ADD(full, b->qkv_b ? b->qkv_b + i * D : NULL, 0, 1, D);
            }
        } else {
            BADD("attn.qkv", "weight", b->qkv_w, 1, 2, 3 * D, D);
            BADD("attn.qkv", "bias", b->qkv_b, 0, 1, 3 * D);
        }
        BADD("proj", "weight", b->proj_w, 1, 2, D, D);
        BADD("proj", "bias", b->proj_b, 0, 1, D);
        BADD("ln2", "weight", b->ln2_w, 0, 1, D);
        BADD("ln2", "bias", b->ln2_b, 0, 1, D);
        BADD("fc1", "weight", b->fc1_w, 1, 2, F, D);
        BADD("fc1", "bias", b->fc1_b, 0, 1, F);
        BADD("fc2", "weight", b->fc2_w, 1, 2, D, F);
        BADD("fc2", "bias", b->fc2_b, 0, 1, D);
    }
    ADD(NM(-1, "post.weight"), p->norm_w, 0, 1, D);
    ADD(NM(-1, "post.bias"), p->norm_b, 0, 1, D);
#undef BADD
#undef NM
    return n;
}

/* Walks the parameters in layout order. With `entries` NULL it only counts. Shapes are those of
 * the published tensors. */
int dinoc_vit_param_entries(const dinoc_model *m, dinoc_names names, dinoc_param_entry *e) {
    const dinoc_vit_config *c  = &m->cfg;
    const dinoc_vit_params *p  = &m->p;
    const int64_t           D  = c->dim, F = c->ffn_hidden, P = c->patch, C = c->channels;
    const int64_t           F1 = c->ffn == DINOC_FFN_SWIGLU ? 2 * F : F;
    const int               hf = names == DINOC_NAMES_HF;
    const int               v1 = c->arch == DINOC_ARCH_VIT;
    int                     n  = 0;
    if (c->arch == DINOC_ARCH_CLIP) return clip_entries(m, hf, e);

    char nm[96];
    ADD(hf ? "embeddings.cls_token" : "cls_token", p->cls, 0, 3, 1, 1, D);
    if (c->mask_token) ADD(hf ? "embeddings.mask_token" : "mask_token", p->mask_token, 0, 2, 1, D);
    ADD(hf ? "embeddings.position_embeddings" : "pos_embed", p->pos, 0, 3, 1,
        1 + (int64_t)m->pos_m * m->pos_m, D);
    if (c->n_registers)
        ADD(hf ? "embeddings.register_tokens" : "register_tokens", p->reg, 0, 3, 1,
            (int64_t)c->n_registers, D);
    ADD(hf ? "embeddings.patch_embeddings.projection.weight" : "patch_embed.proj.weight",
        p->patch_w, 1, 4, D, C, P, P);
    ADD(hf ? "embeddings.patch_embeddings.projection.bias" : "patch_embed.proj.bias", p->patch_b, 0,
        1, D);
    for (int l = 0; l < c->depth; l++) {
        const dinoc_block_params *b = &p->blocks[l];
        /* name fragments per scheme: [orig, hf dinov2, hf vit] */
        const char *ln1  = hf ? (v1 ? "layernorm_before" : "norm1") : "norm1";
        const char *ln2  = hf ? (v1 ? "layernorm_after" : "norm2") : "norm2";
        const char *pre  = hf ? "encoder.layer" : "blocks";
        const char *fc1  = hf ? (v1 ? "intermediate.dense" : (c->ffn ? "mlp.weights_in" : "mlp.fc1"))
                              : (c->ffn ? "mlp.w12" : "mlp.fc1");
        const char *fc2  = hf ? (v1 ? "output.dense" : (c->ffn ? "mlp.weights_out" : "mlp.fc2"))
                              : (c->ffn ? "mlp.w3" : "mlp.fc2");
        const char *proj = hf ? "attention.output.dense" : "attn.proj";
#define NM(fmt, ...) (snprintf(nm, sizeof nm, "%s.%d." fmt, pre, l, __VA_ARGS__), nm)
        ADD(NM("%s.weight", ln1), b->ln1_w, 0, 1, D);
        ADD(NM("%s.bias", ln1), b->ln1_b, 0, 1, D);
        if (hf) {
            static const char *qkv[3] = {"query", "key", "value"};
            for (int i = 0; i < 3; i++) {
                /* views may be NULL (a layout-only walk): no arithmetic on a null pointer */
                ADD(NM("attention.attention.%s.weight", qkv[i]), b->qkv_w ? b->qkv_w + i * D * D : NULL, 1, 2, D, D);
                ADD(NM("attention.attention.%s.bias", qkv[i]), b->qkv_b ? b->qkv_b + i * D : NULL, 0, 1, D);
            }
        } else {
            ADD(NM("%s", "attn.qkv.weight"), b->qkv_w, 1, 2, 3 * D, D);
            ADD(NM("%s", "attn.qkv.bias"), b->qkv_b, 0, 1, 3 * D);
        }
        ADD(NM("%s.weight", proj), b->proj_w, 1, 2, D, D);
        ADD(NM("%s.bias", proj), b->proj_b, 0, 1, D);
        if (c->layerscale) ADD(hf ? NM("%s", "layer_scale1.lambda1") : NM("%s", "ls1.gamma"), b->ls1, 0, 1, D);
        ADD(NM("%s.weight", ln2), b->ln2_w, 0, 1, D);
        ADD(NM("%s.bias", ln2), b->ln2_b, 0, 1, D);
        ADD(NM("%s.weight", fc1), b->fc1_w, 1, 2, F1, D);
        ADD(NM("%s.bias", fc1), b->fc1_b, 0, 1, F1);
        ADD(NM("%s.weight", fc2), b->fc2_w, 1, 2, D, F);
        ADD(NM("%s.bias", fc2), b->fc2_b, 0, 1, D);
        if (c->layerscale) ADD(hf ? NM("%s", "layer_scale2.lambda1") : NM("%s", "ls2.gamma"), b->ls2, 0, 1, D);
#undef NM
    }
    ADD(hf ? "layernorm.weight" : "norm.weight", p->norm_w, 0, 1, D);
    ADD(hf ? "layernorm.bias" : "norm.bias", p->norm_b, 0, 1, D);
#undef ADD
    return n;
}

size_t dinoc_vit_carve(const dinoc_vit_config *cfg, float *base, dinoc_vit_params *p) {
    /* The one place that fixes the order of parameters in the flat buffer. */
    const size_t D = cfg->dim, F = cfg->ffn_hidden, P = cfg->patch, C = cfg->channels;
    const size_t F1 = cfg->ffn == DINOC_FFN_SWIGLU ? 2 * F : F, M = cfg->image_size / cfg->patch;
    const int    ls = cfg->layerscale, clip = cfg->arch == DINOC_ARCH_CLIP;
    size_t       off = 0;
    dinoc_vit_params dummy;
    dinoc_block_params bdummy;
    if (!p) p = &dummy;
#define TAKE(n) (off += (n), base ? base + off - (n) : NULL)
    p->patch_w    = TAKE(D * C * P * P);
    p->patch_b    = clip ? NULL : TAKE(D);
    p->cls        = TAKE(D);
    p->pos        = TAKE((1 + M * M) * D);
    p->pre_w      = clip ? TAKE(D) : NULL;
    p->pre_b      = clip ? TAKE(D) : NULL;
    p->mask_token = cfg->mask_token ? TAKE(D) : NULL;
    p->reg        = cfg->n_registers ? TAKE((size_t)cfg->n_registers * D) : NULL;
    for (int l = 0; l < cfg->depth; l++) {
        dinoc_block_params *b = p != &dummy && p->blocks ? &p->blocks[l] : &bdummy;
        b->ln1_w  = TAKE(D);
        b->ln1_b  = TAKE(D);
        b->qkv_w  = TAKE(3 * D * D);
        b->qkv_b  = TAKE(3 * D);
        b->proj_w = TAKE(D * D);
        b->proj_b = TAKE(D);
        b->ls1    = ls ? TAKE(D) : NULL;
        b->ln2_w  = TAKE(D);
        b->ln2_b  = TAKE(D);
        b->fc1_w  = TAKE(F1 * D);
        b->fc1_b  = TAKE(F1);
        b->fc2_w  = TAKE(D * F);
        b->fc2_b  = TAKE(D);
        b->ls2    = ls ? TAKE(D) : NULL;
    }
    p->norm_w = TAKE(D);
    p->norm_b = TAKE(D);
#undef TAKE
    return off;
}

dinoc_status dinoc_vit_alloc(dinoc_model **out, const dinoc_vit_config *cfg) {
    *out = NULL;
    dinoc_status s = dinoc_vit_config_check(cfg, "model config");
    if (s) return s;
    dinoc_model *m = calloc(1, sizeof *m);
    if (!m) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for the model");
    m->cfg   = *cfg;
    m->pp    = dinoc_preprocess_default();
    m->pos_m = cfg->image_size / cfg->patch;
    m->blocks_storage = calloc((size_t)cfg->depth, sizeof(dinoc_block_params));
    if (!m->blocks_storage) {
        free(m);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for the model");
    }
    m->p.blocks = m->blocks_storage;

    m->n_params = dinoc_vit_carve(cfg, NULL, NULL);
    m->params   = dinoc_calloc(m->n_params, sizeof(float));
    if (!m->params) {
        free(m->blocks_storage);
        free(m);
        return dinoc_fail(DINOC_ERR_NOMEM, "cannot allocate %zu parameters", (size_t)dinoc_vit_carve(cfg, NULL, NULL));
    }
    dinoc_vit_carve(cfg, m->params, &m->p);
    *out = m;
    return DINOC_OK;
}

void dinoc_model_free(dinoc_model *m) {
    if (!m) return;
    dinoc_free(m->params);
    dinoc_free(m->bf16);
    free(m->blocks_storage);
    free(m);
}

const dinoc_vit_config *dinoc_model_config(const dinoc_model *m) { return &m->cfg; }
const dinoc_preprocess *dinoc_model_preprocess(const dinoc_model *m) { return &m->pp; }
int64_t dinoc_model_num_params(const dinoc_model *m) { return (int64_t)m->n_params; }
void    dinoc_model_set_pos_interp(dinoc_model *m, dinoc_pos_interp p) {
    m->cfg.pos_interp    = p;
    m->cfg.interp_offset = p == DINOC_POS_INTERP_OFFSET ? 0.1f : 0.0f;
}

dinoc_status dinoc_model_init_random(dinoc_model **out, const dinoc_vit_config *cfg, uint64_t seed) {
    dinoc_status s = dinoc_vit_alloc(out, cfg);
    if (s) return s;
    dinoc_model *m = *out;
    dinoc_rng    r;
    dinoc_rng_seed(&r, seed);
    /* DINOv2's init: trunc_normal(0.02) for Linear weights and pos_embed, normal(1e-6) for CLS and
     * registers, zeros for biases and the mask token, LayerNorm (1, 0), LayerScale 1e-5, and
     * PyTorch's Conv2d default (uniform +-1/sqrt(fan_in)) for the patch embedding. */
    int                n = dinoc_vit_param_entries(m, DINOC_NAMES_ORIG, NULL);
    dinoc_param_entry *e = calloc((size_t)n, sizeof *e);
    if (!e) {
        dinoc_model_free(m);
        *out = NULL;
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    }
    dinoc_vit_param_entries(m, DINOC_NAMES_ORIG, e);
    for (int i = 0; i < n; i++) {
        int64_t numel = 1;
        for (int k = 0; k < e[i].ndim; k++) numel *= e[i].shape[k];
        const char *nm   = e[i].name;
        float      *d    = e[i].data;
        size_t      len  = strlen(nm);
        int         bias = len > 5 && strcmp(nm + len - 5, ".bias") == 0;
        if (strstr(nm, "patch_embed")) {
            float bound = 1.0f / sqrtf((float)(cfg->channels * cfg->patch * cfg->patch));
            for (int64_t j = 0; j < numel; j++) d[j] = (2 * dinoc_rng_uniform(&r) - 1) * bound;
        } else if (strstr(nm, "norm")) {
            for (int64_t j = 0; j < numel; j++) d[j] = bias ? 0.0f : 1.0f;
        } else if (strstr(nm, "gamma")) {
            for (int64_t j = 0; j < numel; j++) d[j] = 1e-5f;
        } else if (strcmp(nm, "cls_token") == 0 || strcmp(nm, "register_tokens") == 0) {
            for (int64_t j = 0; j < numel; j++) d[j] = 1e-6f * dinoc_rng_normal(&r);
        } else if (bias || strcmp(nm, "mask_token") == 0) {
            for (int64_t j = 0; j < numel; j++) d[j] = 0.0f;
        } else {
            for (int64_t j = 0; j < numel; j++) d[j] = dinoc_rng_trunc_normal(&r, 0.02f, -2.0f, 2.0f);
        }
    }
    free(e);
    return DINOC_OK;
}

/* ---- state ------------------------------------------------------------------------------------ */

struct dinoc_state {
    int      B, H, W, gh, gw, Np, T, D, F1, F, nthreads;
    unsigned flags;
    float   *patches; /* [B*Np, C*P*P] */
    float   *x;       /* [B, T, D] residual stream */
    float   *ln;      /* [B, T, D] */
    float   *qkv;     /* [B, T, 3D] */
    float   *ctx;     /* [B, T, D] attention output (heads concatenated) */
    float   *proj;    /* [B, T, D] */
    float   *h1;      /* [B, T, F1] */
    float   *h2;      /* [B, T, F] SwiGLU output (NULL for MLP: GELU runs in place on h1) */
    float   *out;     /* [B, T, D] final normed tokens */
    float   *pos;     /* [Np, D] resized patch position embeddings */
    float   *pos_a;   /* [D, M*M] staging for the resize (channels first) */
    float   *pos_b;   /* [D, Np] */
    float   *hidden;  /* [depth, B, T, D] with DINOC_STATE_HIDDEN */
    float   *attn;    /* [B, NH, T, T] with DINOC_STATE_ATTN */
    float   *scratch; /* attention scratch, nthreads rows */
    /* bf16 products (dinoc_model_set_precision): the precision the state was made for and, when
     * they run natively, the bf16 copy of a product's input and one prepared product per shape */
    dinoc_precision  precision;
    uint16_t        *bf_in;   /* [B*T, max(C*P*P, D, F)] */
    dinoc_bf16_gemm *gemm[5]; /* patch embedding, qkv, proj, fc1, fc2 */
};

enum { G_PATCH, G_QKV, G_PROJ, G_FC1, G_FC2 };

void dinoc_state_free(dinoc_state *s) {
    if (!s) return;
    float *bufs[] = {s->patches, s->x,   s->ln,    s->qkv,   s->ctx,    s->proj,  s->h1, s->h2,
                     s->out,     s->pos, s->pos_a, s->pos_b, s->hidden, s->attn, s->scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dinoc_free(bufs[i]);
    dinoc_free(s->bf_in);
    for (int i = 0; i < 5; i++) dinoc_bf16_gemm_free(s->gemm[i]);
    free(s);
}

dinoc_status dinoc_state_init(dinoc_state **out, const dinoc_model *m, int B, int H, int W,
                              unsigned flags) {
    *out                      = NULL;
    const dinoc_vit_config *c = &m->cfg;
    if (B <= 0 || H <= 0 || W <= 0)
        return dinoc_fail(DINOC_ERR_ARG, "batch %d and image size %dx%d must be positive", B, H, W);
    if (H % c->patch || W % c->patch)
        return dinoc_fail(DINOC_ERR_SHAPE, "image size %dx%d (HxW) is not a multiple of the patch %d",
                          H, W, c->patch);
    if (H > 16384 || W > 16384 || B > 1 << 20)
        return dinoc_fail(DINOC_ERR_ARG, "batch %d of %dx%d images is too large", B, H, W);
    dinoc_state *s = calloc(1, sizeof *s);
    if (!s) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for the state");
    s->B = B, s->H = H, s->W = W, s->flags = flags;
    s->gh = H / c->patch, s->gw = W / c->patch, s->Np = s->gh * s->gw;
    s->T  = 1 + c->n_registers + s->Np;
    s->D  = c->dim;
    s->F  = c->ffn_hidden;
    s->F1 = c->ffn == DINOC_FFN_SWIGLU ? 2 * c->ffn_hidden : c->ffn_hidden;
    s->nthreads = dinoc_get_threads();
    const size_t BT = (size_t)B * s->T, D = c->dim, M = m->pos_m;
    const size_t K  = (size_t)c->channels * c->patch * c->patch;
    int          ok = 1;
#define ALLOC(ptr, n) ok &= ((ptr) = dinoc_calloc((n), sizeof(float))) != NULL
    ALLOC(s->patches, (size_t)B * s->Np * K);
    ALLOC(s->x, BT * D);
    ALLOC(s->ln, BT * D);
    ALLOC(s->qkv, BT * 3 * D);
    ALLOC(s->ctx, BT * D);
    ALLOC(s->proj, BT * D);
    ALLOC(s->h1, BT * s->F1);
    if (c->ffn == DINOC_FFN_SWIGLU) ALLOC(s->h2, BT * s->F);
    ALLOC(s->out, BT * D);
    ALLOC(s->pos, (size_t)s->Np * D);
    ALLOC(s->pos_a, M * M * D);
    ALLOC(s->pos_b, (size_t)s->Np * D);
    if (flags & DINOC_STATE_HIDDEN) ALLOC(s->hidden, (size_t)c->depth * BT * D);
    if (flags & DINOC_STATE_ATTN) ALLOC(s->attn, (size_t)B * c->heads * s->T * s->T);
    ALLOC(s->scratch, (size_t)s->nthreads * dinoc_attention_scratch_floats(s->T, c->dim / c->heads));
    s->precision = m->precision;
    if (m->bf16) {
        size_t kmax = K > D ? K : D;
        kmax        = (size_t)s->F > kmax ? (size_t)s->F : kmax;
        ok &= (s->bf_in = dinoc_calloc(BT * kmax, sizeof(uint16_t))) != NULL;
    }
#undef ALLOC
    if (!ok) {
        dinoc_state_free(s);
        return dinoc_fail(DINOC_ERR_NOMEM, "cannot allocate activations for batch %d at %dx%d", B,
                          H, W);
    }
    if (m->bf16) {
        const int    bt = (int)BT, d = (int)D;
        const int    shape[5][3] = {{B * s->Np, (int)K, d}, {bt, d, 3 * d}, {bt, d, d}, {bt, d, s->F1}, {bt, s->F, d}};
        dinoc_status st = DINOC_OK;
        for (int i = 0; i < 5 && !st; i++) {
            /* every product has a bias except CLIP's patch embedding */
            int has_bias = i != G_PATCH || m->p.patch_b != NULL;
            st = dinoc_bf16_gemm_init(&s->gemm[i], shape[i][0], shape[i][1], shape[i][2], has_bias);
        }
        if (st) { /* the products run emulated in this state (same numbers, fp32 speed) */
            dinoc_log(DINOC_LOG_WARN, "bf16: %s; this state's products are emulated", dinoc_last_error());
            for (int i = 0; i < 5; i++) dinoc_bf16_gemm_free(s->gemm[i]), s->gemm[i] = NULL;
        }
    }
    *out = s;
    return DINOC_OK;
}

void dinoc_state_dims(const dinoc_state *s, int *B, int *T, int *D, int *gh, int *gw) {
    if (B) *B = s->B;
    if (T) *T = s->T;
    if (D) *D = s->D;
    if (gh) *gh = s->gh;
    if (gw) *gw = s->gw;
}

const float *dinoc_state_output(const dinoc_state *s) { return s->out; }
const float *dinoc_state_attn(const dinoc_state *s) { return s->attn; }

dinoc_status dinoc_state_hidden(const dinoc_model *m, const dinoc_state *s, int layer, int norm,
                                float *dst) {
    const int    L  = m->cfg.depth;
    const size_t BT = (size_t)s->B * s->T, D = s->D;
    int          l  = layer < 0 ? L + layer : layer;
    if (l < 0 || l >= L) return dinoc_fail(DINOC_ERR_ARG, "layer %d out of range for depth %d", layer, L);
    const float *src;
    if (s->hidden)
        src = s->hidden + (size_t)l * BT * D;
    else if (l == L - 1)
        src = s->x;
    else
        return dinoc_fail(DINOC_ERR_ARG,
                          "layer %d needs a state made with DINOC_STATE_HIDDEN", layer);
    if (norm)
        dinoc_layernorm_forward(dst, NULL, NULL, src, m->p.norm_w, m->p.norm_b, (int)BT, (int)D,
                                m->cfg.ln_eps);
    else
        memcpy(dst, src, BT * D * sizeof(float));
    return DINOC_OK;
}

/* ---- forward ---------------------------------------------------------------------------------- */

/* Resizes the patch position embeddings to the state's grid (s->pos [Np, D]). The skip rule of
 * every reference: no resize when the grid has as many patches as the table and the image is
 * square. Otherwise the three variants of docs/design.md. */
static void pos_embed(const dinoc_model *m, dinoc_state *s) {
    const int    M = m->pos_m, D = s->D;
    const float *table = m->p.pos + D; /* skip the CLS row */
    if (s->Np == M * M && s->H == s->W) {
        memcpy(s->pos, table, sizeof(float) * (size_t)s->Np * D);
        return;
    }
    /* [M*M, D] -> [D, M, M] */
    for (int i = 0; i < M * M; i++)
        for (int d = 0; d < D; d++) s->pos_a[(size_t)d * M * M + i] = table[(size_t)i * D + d];
    double sf_h = -1, sf_w = -1;
    int    aa   = m->cfg.pos_interp == DINOC_POS_INTERP_ANTIALIAS;
    if (m->cfg.pos_interp == DINOC_POS_INTERP_OFFSET) {
        /* (h0 + 0.1) / M in double, as Python computes it in the original repos */
        sf_h = ((double)s->gh + (double)m->cfg.interp_offset) / M;
        sf_w = ((double)s->gw + (double)m->cfg.interp_offset) / M;
    }
    dinoc_bicubic_resize(s->pos_b, s->pos_a, D, M, M, s->gh, s->gw, aa, sf_h, sf_w);
    for (int i = 0; i < s->Np; i++)
        for (int d = 0; d < D; d++) s->pos[(size_t)i * D + d] = s->pos_b[(size_t)d * s->Np + i];
}

/* x[r] += gamma * y[r] (gamma NULL: 1) for rows [r0, r1): the residual adds, LayerScale'd */
static void add_rows(float *x, const float *y, const float *gamma, size_t r0, size_t r1, int D) {
    for (size_t r = r0; r < r1; r++) {
        float       *xr = x + r * D;
        const float *yr = y + r * D;
        if (gamma)
            for (int d = 0; d < D; d++) xr[d] += gamma[d] * yr[d];
        else
            for (int d = 0; d < D; d++) xr[d] += yr[d];
    }
}

static void add_scaled(float *x, const float *y, const float *gamma, size_t rows, int D) {
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) add_rows(x, y, gamma, r, r + 1, D);
}

/* out = inp @ w^T + b at the model's precision. In emulated bf16 the input is rounded in place:
 * every product input of the forward (patches, ln, ctx, the MLP activation) is dead after it. */
static dinoc_status linear(const dinoc_model *m, dinoc_state *s, int which, float *out, float *inp,
                           const float *w, const float *b, int M, int K, int N) {
    if (m->precision == DINOC_PRECISION_BF16) {
        if (s->gemm[which] && m->bf16) {
            dinoc_bf16_pack(s->bf_in, inp, (size_t)M * K);
            return dinoc_bf16_gemm_run(s->gemm[which], out, s->bf_in, m->bf16 + (w - m->params), b);
        }
        dinoc_bf16_round(inp, (size_t)M * K); /* the weights were rounded by set_precision */
    }
    dinoc_linear_forward(out, inp, w, b, M, K, N);
    return DINOC_OK;
}

/* The transformer blocks and the final norm, op after op, each op its own parallel region. */
static dinoc_status blocks(const dinoc_model *m, dinoc_state *s) {
    const dinoc_vit_config *c = &m->cfg;
    const dinoc_vit_params *p = &m->p;
    const int               B = s->B, T = s->T, D = s->D, BT = B * T;
    dinoc_status            st;
    for (int l = 0; l < c->depth; l++) {
        const dinoc_block_params *bp   = &p->blocks[l];
        const int                 last = l == c->depth - 1;
        dinoc_layernorm_forward(s->ln, NULL, NULL, s->x, bp->ln1_w, bp->ln1_b, BT, D, c->ln_eps);
        if ((st = linear(m, s, G_QKV, s->qkv, s->ln, bp->qkv_w, bp->qkv_b, BT, D, 3 * D))) return st;
        dinoc_attention_forward(s->ctx, last ? s->attn : NULL, s->qkv, B, T, D, c->heads,
                                s->scratch, s->nthreads);
        if ((st = linear(m, s, G_PROJ, s->proj, s->ctx, bp->proj_w, bp->proj_b, BT, D, D))) return st;
        add_scaled(s->x, s->proj, bp->ls1, (size_t)BT, D);
        dinoc_layernorm_forward(s->ln, NULL, NULL, s->x, bp->ln2_w, bp->ln2_b, BT, D, c->ln_eps);
        if ((st = linear(m, s, G_FC1, s->h1, s->ln, bp->fc1_w, bp->fc1_b, BT, D, s->F1))) return st;
        float *act = s->h1;
        if (c->ffn == DINOC_FFN_SWIGLU) {
            dinoc_swiglu_forward(s->h2, s->h1, BT, s->F);
            act = s->h2;
        } else {
            dinoc_vit_act_forward(c, s->h1, s->h1, (size_t)BT * s->F);
        }
        if ((st = linear(m, s, G_FC2, s->proj, act, bp->fc2_w, bp->fc2_b, BT, s->F, D))) return st;
        add_scaled(s->x, s->proj, bp->ls2, (size_t)BT, D);
        if (s->hidden) memcpy(s->hidden + (size_t)l * BT * D, s->x, sizeof(float) * (size_t)BT * D);
    }
    dinoc_layernorm_forward(s->out, NULL, NULL, s->x, p->norm_w, p->norm_b, BT, D, c->ln_eps);
    return DINOC_OK;
}

/* The fused schedule of the same blocks (fp32): one parallel region for the whole stack. Every op
 * but attention works row by row, so each thread keeps the same block of rows (dinoc_gemm's split
 * of B*T rows) from one attention to the next: projection, residual, LayerNorm, MLP, residual,
 * the next block's LayerNorm and qkv product, with no barrier between them; only attention, which
 * reads every row's keys and values, needs one on each side. That is 2 synchronisations per block
 * where the op-by-op schedule has about 14, which is what batch 1 pays for (thread wake-ups under
 * OMP_WAIT_POLICY=PASSIVE). Same kernels on the same row blocks, so the same bits as blocks()
 * (tests/test_vit.c checks it). Taken where every product of the block is split by dinoc_gemm
 * (fp32, BLAS, 2+ threads, 32+ rows), the MLP is GELU or QuickGELU and attention can run inside
 * a region (dinoc_attention_team_ok). */
static int g_fused = 1;
void       dinoc_vit_set_fused(int on) { g_fused = on; }

int dinoc_vit_fused_applies(const dinoc_model *m, const dinoc_state *s) {
    const dinoc_vit_config *c = &m->cfg;
    const int               BT = s->B * s->T, D = s->D, n = dinoc_get_threads();
    int                     r0, r1;
    return g_fused && m->precision == DINOC_PRECISION_FP32 && c->ffn != DINOC_FFN_SWIGLU &&
           dinoc_linear_rows(BT, 3 * D, D, 0, n, &r0, &r1) && dinoc_linear_rows(BT, D, D, 0, n, &r0, &r1) &&
           dinoc_linear_rows(BT, s->F1, D, 0, n, &r0, &r1) && dinoc_linear_rows(BT, D, s->F, 0, n, &r0, &r1) &&
           dinoc_attention_team_ok(s->T, s->attn != NULL);
}

static void blocks_fused(const dinoc_model *m, dinoc_state *s) {
    const dinoc_vit_config *c = &m->cfg;
    const dinoc_vit_params *p = &m->p;
    const int               B = s->B, T = s->T, D = s->D, F = s->F, BT = B * T, nt = dinoc_get_threads();
    const float             eps = c->ln_eps;
#pragma omp parallel num_threads(nt)
    {
        int r0, r1;
        if (!dinoc_linear_rows(BT, D, D, dinoc_omp_thread_num(), dinoc_omp_num_threads(), &r0, &r1)) {
            /* fewer threads than asked (a nested call, a thread limit): the op-by-op schedule on one
             * thread (fp32 products cannot fail) */
            if (dinoc_omp_thread_num() == 0) (void)blocks(m, s);
        } else {
            const size_t rows = (size_t)(r1 - r0);
            for (int l = 0; l < c->depth; l++) {
                const dinoc_block_params *bp = &p->blocks[l];
                /* this thread's rows of the block's qkv (block l - 1's attention has ended: its
                 * closing barrier), then every row's before attention reads them */
                dinoc_layernorm_forward_rows(s->ln, s->x, bp->ln1_w, bp->ln1_b, r0, r1, D, eps);
                dinoc_linear_forward_rows(s->qkv, s->ln, bp->qkv_w, bp->qkv_b, D, 3 * D, r0, r1);
#pragma omp barrier
                dinoc_attention_forward_team(s->ctx, l == c->depth - 1 ? s->attn : NULL, s->qkv, B, T, D, c->heads,
                                             s->scratch);
                dinoc_linear_forward_rows(s->proj, s->ctx, bp->proj_w, bp->proj_b, D, D, r0, r1);
                add_rows(s->x, s->proj, bp->ls1, r0, r1, D);
                dinoc_layernorm_forward_rows(s->ln, s->x, bp->ln2_w, bp->ln2_b, r0, r1, D, eps);
                dinoc_linear_forward_rows(s->h1, s->ln, bp->fc1_w, bp->fc1_b, D, F, r0, r1);
                if (c->ffn == DINOC_FFN_MLP_QUICK_GELU)
                    dinoc_quick_gelu_forward_serial(s->h1 + (size_t)r0 * F, s->h1 + (size_t)r0 * F, rows * F);
                else dinoc_gelu_forward_serial(s->h1 + (size_t)r0 * F, s->h1 + (size_t)r0 * F, rows * F);
                dinoc_linear_forward_rows(s->proj, s->h1, bp->fc2_w, bp->fc2_b, F, D, r0, r1);
                add_rows(s->x, s->proj, bp->ls2, r0, r1, D);
                if (s->hidden)
                    memcpy(s->hidden + ((size_t)l * BT + r0) * D, s->x + (size_t)r0 * D, sizeof(float) * rows * D);
            }
            dinoc_layernorm_forward_rows(s->out, s->x, p->norm_w, p->norm_b, r0, r1, D, eps);
        }
    }
}

dinoc_status dinoc_forward(const dinoc_model *m, dinoc_state *s, const float *images,
                           const uint8_t *mask) {
    const dinoc_vit_config *c = &m->cfg;
    const dinoc_vit_params *p = &m->p;
    const int B = s->B, T = s->T, D = s->D, P = c->patch, C = c->channels, R = c->n_registers;
    const int gh = s->gh, gw = s->gw, Np = s->Np, H = s->H, W = s->W;
    const int K  = C * P * P;
    const int BT = B * T;
    if (mask && !p->mask_token)
        return dinoc_fail(DINOC_ERR_ARG, "a mask was given but this model has no mask token");
    if (s->nthreads < dinoc_get_threads())
        return dinoc_fail(DINOC_ERR_ARG, "the thread count grew to %d after the state was made for %d",
                          dinoc_get_threads(), s->nthreads);
    if (s->precision != m->precision)
        return dinoc_fail(DINOC_ERR_ARG, "the state was made for %s products and the model now runs %s: "
                          "make a new state after dinoc_model_set_precision",
                          dinoc_precision_name(s->precision), dinoc_precision_name(m->precision));
    dinoc_status st;

    /* im2col: row (b, gy, gx), column (c, ky, kx) matches Conv2d weight [D, C, P, P] flattened. */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < gh; gy++)
            for (int gx = 0; gx < gw; gx++) {
                float *row = s->patches + ((size_t)b * Np + (size_t)gy * gw + gx) * K;
                for (int ch = 0; ch < C; ch++)
                    for (int ky = 0; ky < P; ky++) {
                        const float *src =
                            images + (((size_t)b * C + ch) * H + (size_t)gy * P + ky) * W + (size_t)gx * P;
                        memcpy(row + (ch * P + ky) * P, src, sizeof(float) * P);
                    }
            }
    float *emb = s->ln; /* [B*Np, D] fits in [B*T, D] */
    if ((st = linear(m, s, G_PATCH, emb, s->patches, p->patch_w, p->patch_b, B * Np, K, D))) return st;
    pos_embed(m, s);

    /* tokens: CLS + pos[0], registers (no position), patches (or mask token) + pos */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        float *xb = s->x + (size_t)b * T * D;
        for (int d = 0; d < D; d++) xb[d] = p->cls[d] + p->pos[d];
        if (R) memcpy(xb + D, p->reg, sizeof(float) * (size_t)R * D);
        for (int i = 0; i < Np; i++) {
            const float *e = (mask && mask[(size_t)b * Np + i]) ? p->mask_token
                                                                 : emb + ((size_t)b * Np + i) * D;
            float       *t = xb + (size_t)(1 + R + i) * D;
            const float *q = s->pos + (size_t)i * D;
            for (int d = 0; d < D; d++) t[d] = e[d] + q[d];
        }
    }

    if (p->pre_w) { /* CLIP's pre_layrnorm; the LN reads s->ln while writing x */
        memcpy(s->ln, s->x, sizeof(float) * (size_t)BT * D);
        dinoc_layernorm_forward(s->x, NULL, NULL, s->ln, p->pre_w, p->pre_b, BT, D, c->ln_eps);
    }
    if (dinoc_vit_fused_applies(m, s)) {
        blocks_fused(m, s);
        return DINOC_OK;
    }
    if ((st = blocks(m, s))) return st;
    dinoc_layernorm_forward(s->out, NULL, NULL, s->x, p->norm_w, p->norm_b, BT, D, c->ln_eps);
    return DINOC_OK;
}
