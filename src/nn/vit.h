/* vit.h: the ViT model's internals, shared by vit.c (layout, forward) and vit_io.c (Hugging Face
 * folders). Parameters live in one flat float buffer; the structs below are views into it, so an
 * optimizer, an EMA teacher or a gradient buffer can reuse the same layout (llm.c's rule). */
#ifndef DINOC_VIT_H
#define DINOC_VIT_H

#include "../internal.h"

/* CLIP's image tower (DINOC_ARCH_CLIP; HF CLIPVisionModel, openai/CLIP VisionTransformer):
 * pre_layrnorm after the embeddings, no patch-embedding bias, QuickGELU (OpenAI weights,
 * DINOC_FFN_MLP_QUICK_GELU) or GELU (hidden_act), and its final norm is post_layernorm (CLIP applies
 * it to the CLS token only; here to every token, which gives the same CLS row). */

typedef struct {
    float *ln1_w, *ln1_b;   /* [D] */
    float *qkv_w, *qkv_b;   /* [3D, D] [3D]: rows q | k | v */
    float *proj_w, *proj_b; /* [D, D] [D] */
    float *ls1;             /* [D] LayerScale gamma, NULL without LayerScale */
    float *ln2_w, *ln2_b;   /* [D] */
    float *fc1_w, *fc1_b;   /* [F1, D] [F1]: F1 = F (MLP) or 2F (SwiGLU w12) */
    float *fc2_w, *fc2_b;   /* [D, F] [D] */
    float *ls2;             /* [D] or NULL */
} dinoc_block_params;

typedef struct {
    float              *patch_w;    /* [D, C*P*P] (Conv2d weight [D, C, P, P] flattened) */
    float              *patch_b;    /* [D], NULL for CLIP (no bias) */
    float              *pre_w, *pre_b; /* [D] CLIP pre_layrnorm, NULL otherwise */
    float              *cls;        /* [D] */
    float              *pos;        /* [1 + M*M, D] */
    float              *mask_token; /* [D] or NULL */
    float              *reg;        /* [R, D] or NULL */
    dinoc_block_params *blocks;     /* [depth] */
    float              *norm_w, *norm_b; /* [D] */
} dinoc_vit_params;

/* One named parameter tensor of the model. `data` points into the flat buffer; for Hugging Face
 * names, q/k/v are three entries pointing at row blocks of the fused qkv. */
typedef struct {
    char    name[96];
    int     ndim;
    int64_t shape[4];
    float  *data;
    int     decay; /* 1 if weight decay applies by default (matrices, not biases/norms/gammas) */
} dinoc_param_entry;

typedef enum {
    DINOC_NAMES_ORIG = 0, /* facebookresearch/dinov2 and dino names: blocks.0.attn.qkv.weight */
    DINOC_NAMES_HF   = 1, /* Hugging Face names of the model's arch (CLIP: CLIPVisionTransformer's,
                           * without the "vision_model." prefix) */
} dinoc_names;

struct dinoc_model {
    dinoc_vit_config cfg;
    dinoc_preprocess pp;
    int              pos_m;    /* M: side of the position-embedding grid */
    size_t           n_params; /* floats in params */
    float           *params;   /* the flat buffer */
    dinoc_vit_params p;        /* views */
    dinoc_block_params *blocks_storage;
    dinoc_precision     precision; /* of the linear products (dinoc_model_set_precision) */
    uint16_t           *bf16;      /* params as bf16 when products run natively in bf16, else NULL */
};

/* Fills cfg-derived defaults and checks the config (names the field at fault). */
dinoc_status dinoc_vit_config_check(const dinoc_vit_config *cfg, const char *where);
/* Carves the parameter views of cfg out of base (a buffer of the model's n_params floats) into p,
 * whose p->blocks must point at cfg->depth block structs. Returns the number of floats; with base
 * NULL only counts (p may then be NULL too). The same layout serves params, grads and moments. */
size_t dinoc_vit_carve(const dinoc_vit_config *cfg, float *base, dinoc_vit_params *p);
/* Allocates a model with zeroed parameters laid out for cfg. */
dinoc_status dinoc_vit_alloc(dinoc_model **out, const dinoc_vit_config *cfg);
/* bf16 (vit_precision.c): rounds the five product matrices of p (patch embedding, qkv, proj, fc1,
 * fc2) in place; _prepare does it to a model and (re)packs its native bf16 copy. */
void         dinoc_vit_bf16_round_products(const dinoc_vit_config *c, dinoc_vit_params *p);
dinoc_status dinoc_vit_bf16_prepare(dinoc_model *m);
/* bf16 training's teacher: *dst (made on first use) becomes src's weights at bf16 precision. */
dinoc_status dinoc_vit_bf16_copy(dinoc_model **dst, const dinoc_model *src);
/* The MLP activation of cfg (GELU or QuickGELU): out = act(inp) (in place allowed);
 * dinp += dout * act'(inp). Not for SwiGLU. */
void dinoc_vit_act_forward(const dinoc_vit_config *cfg, float *out, const float *inp, size_t n);
void dinoc_vit_act_backward(const dinoc_vit_config *cfg, float *dinp, const float *dout,
                            const float *inp, size_t n);
/* Tests: 0 makes dinoc_forward run the blocks op by op even where the fused schedule applies
 * (vit.c), to check that the two give the same bits. Default 1. Not thread-safe: tests only. */
void dinoc_vit_set_fused(int on);
/* 1 if dinoc_forward runs s's blocks on the fused schedule (vit.c). */
int dinoc_vit_fused_applies(const dinoc_model *m, const dinoc_state *s);
/* Lists the parameter tensors under a naming scheme. entries may be NULL to count; returns count. */
int dinoc_vit_param_entries(const dinoc_model *m, dinoc_names names, dinoc_param_entry *entries);

/* Checks every tensor of w against m's parameter list (names, shapes, nothing missing, nothing
 * unexpected) and, with copy = 1, converts them into the parameters. tower NULL: the model's own
 * folder (naming scheme and a wrapper prefix such as "dinov2." detected); else the HF names under
 * that prefix (CLIP's "vision_model."), tensors outside it being another tower's and skipped. */

dinoc_status dinoc_vit_match_weights(dinoc_model *m, dinoc_weights *w, const char *where,
                                     const char *tower, int copy);
/* Writes pp as a preprocessor_config.json (image_processor_type `type`; NULL: BitImageProcessor
 * with a center crop, else ViTImageProcessor) atomically. */
dinoc_status dinoc_preprocess_save(const dinoc_preprocess *pp, const char *path, const char *type);

#endif
