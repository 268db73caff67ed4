/* text.h: text transformers (src/nn/text.c forward/backward, src/nn/text_io.c files) and, in
 * src/nn/mlm.h, the BERT masked-language-modelling head that shares their parameter buffer.
 *
 * Two kinds in one model type:
 *   CLIP  causal pre-norm tower (HF CLIPTextModel[WithProjection], openai/CLIP encode_text):
 *           x = tok[ids] + pos;  block: x += attn(LN1(x)) (causal);  x += fc2(act(fc1(LN2(x))))
 *           hidden = LN_final(x);  pooled = hidden[b, eot_b];  projected = pooled @ Wp^T
 *   BERT  bidirectional post-norm encoder (HF BertModel / BertForMaskedLM; the seed's order):
 *           x = LN_emb(tok[ids] + pos + type[0]);  block: x = LN1(x + attn(x)) (key padding);
 *           x = LN2(x + fc2(act(fc1(x))));  hidden = x;  pooled = hidden[b, 0] ([CLS], no pooler)
 * Positions learned (a table) or sinusoidal (fixed, no parameter). Parameters live in one flat
 * buffer; grads and optimizer moments use the same layout (dinoc_text_carve).
 *
 * Usage:
 *   dinoc_text_model *m;  dinoc_text_model_load(&m, "clip-text-folder");
 *   dinoc_text_state *s;  dinoc_text_state_init(&s, m, B, T, 0);
 *   dinoc_text_forward(m, s, ids, lengths);          // ids [B, T], lengths [B] (NULL: all T)
 *   const float *emb = dinoc_text_state_pooled(s);   // [B, proj_dim or dim]
 * Training: a state made with train = 1 keeps activations; dinoc_text_backward after the forward
 * accumulates into a grads buffer of m->n_params floats. */
#ifndef DINOC_TEXT_H
#define DINOC_TEXT_H

#include "../train/optim.h" /* dinoc_param_group */
#include "vit.h"            /* dinoc_param_entry */

typedef enum { DINOC_TEXT_CLIP = 0, DINOC_TEXT_BERT = 1 } dinoc_text_kind;
typedef enum { DINOC_TEXT_GELU = 0, DINOC_TEXT_QUICK_GELU = 1 } dinoc_text_act;
typedef enum { DINOC_TEXT_POS_LEARNED = 0, DINOC_TEXT_POS_SINUSOIDAL = 1 } dinoc_text_pos;

typedef struct {
    dinoc_text_kind kind;
    int             vocab;      /* V */
    int             max_pos;    /* longest sequence: CLIP context 77, BERT 512 */
    int             dim;        /* D */
    int             layers;     /* L */
    int             heads;      /* NH, dividing D */
    int             ffn;        /* F */
    dinoc_text_act  act;        /* CLIP (OpenAI) quick_gelu, LAION and BERT gelu (exact erf) */
    dinoc_text_pos  pos;
    float           ln_eps;     /* CLIP 1e-5, BERT 1e-12 */
    int             proj_dim;   /* CLIP text_projection rows (0: none; BERT: 0) */
    int             type_vocab; /* BERT token types (2; 0: none; CLIP: 0) */
    int             mlm_head;   /* 1: the buffer also holds the MLM head (BERT only) */
    int             pad_id;     /* padding id (never masked by MLM) */
    int             eot_id;     /* CLIP pooling: first position holding eot_id; -1: argmax of ids */
} dinoc_text_config;

typedef struct {
    float *qkv_w, *qkv_b;   /* [3D, D] [3D]: rows q | k | v (HF q_proj/k_proj/v_proj, query/key/value) */
    float *proj_w, *proj_b; /* [D, D] [D]: out_proj / attention.output.dense */
    float *ln1_w, *ln1_b;   /* [D] CLIP layer_norm1 (before attention); BERT attention.output.LayerNorm */
    float *fc1_w, *fc1_b;   /* [F, D] [F]: mlp.fc1 / intermediate.dense */
    float *fc2_w, *fc2_b;   /* [D, F] [D]: mlp.fc2 / output.dense */
    float *ln2_w, *ln2_b;   /* [D] CLIP layer_norm2 (before the MLP); BERT output.LayerNorm */
} dinoc_text_block;

typedef struct {
    float            *tok;              /* [V, D] token embeddings (tied MLM decoder) */
    float            *pos;              /* [max_pos, D] or NULL (sinusoidal) */
    float            *type;             /* [type_vocab, D] or NULL */
    float            *emb_ln_w, *emb_ln_b; /* [D] BERT embeddings.LayerNorm, NULL for CLIP */
    dinoc_text_block *blocks;           /* [L] */
    float            *fin_ln_w, *fin_ln_b; /* [D] CLIP final_layer_norm, NULL for BERT */
    float            *proj;             /* [P, D] CLIP text_projection (no bias) or NULL */
    float *mlm_w, *mlm_b;               /* [D, D] [D] cls.predictions.transform.dense */
    float *mlm_ln_w, *mlm_ln_b;         /* [D] cls.predictions.transform.LayerNorm */
    float *mlm_bias;                    /* [V] cls.predictions.bias (the decoder's own bias) */
} dinoc_text_params;

typedef struct {
    dinoc_text_config cfg;
    size_t            n_params; /* floats in params */
    float            *params;   /* the flat buffer */
    dinoc_text_params p;        /* views */
    dinoc_text_block *blocks_storage;
} dinoc_text_model;

typedef struct dinoc_text_state dinoc_text_state;

/* Checks a config (names the field at fault, prefixed by where). */
dinoc_status dinoc_text_config_check(const dinoc_text_config *c, const char *where);
/* Carves the views of cfg out of base (NULL: count only; p may be NULL then) in the one layout of
 * params, grads and moments; p->blocks must hold cfg->layers entries. Returns the float count. */
size_t       dinoc_text_carve(const dinoc_text_config *cfg, float *base, dinoc_text_params *p);
/* Zeroed parameters for cfg. */
dinoc_status dinoc_text_alloc(dinoc_text_model **out, const dinoc_text_config *cfg);
void         dinoc_text_free(dinoc_text_model *m);
/* Random init (the reference systems' rules; see text_io.c): deterministic for a seed. */
dinoc_status dinoc_text_init_random(dinoc_text_model **out, const dinoc_text_config *cfg,
                                    uint64_t seed);

/* The tensors under their Hugging Face names (CLIP: text_model.* + text_projection.weight; BERT:
 * BertModel names, "bert."-prefixed + cls.predictions.* with the MLM head). entries NULL: count.
 * Each entry is a contiguous range of the buffer; decay is 1 for matrices (ndim > 1: projections
 * and the embedding tables, as HF Trainer and BERT do), 0 for biases and LayerNorm. */
int dinoc_text_param_entries(const dinoc_text_model *m, dinoc_param_entry *entries);
/* One optimiser group per tensor (lr_mult 1, wd_mult = decay, offsets into the flat buffer), for
 * dinoc_adamw_step; out NULL counts. Returns the number of groups, -1 on allocation failure. */
int dinoc_text_param_groups(const dinoc_text_model *m, dinoc_param_group *out);

/* Folder I/O: config.json (model_type clip_text_model, clip (its text_config) or bert) and
 * model.safetensors (or shards) by HF names; vision tensors, position_ids, logit_scale, pooler
 * and the tied cls.predictions.decoder.* copies are skipped. Every listed tensor must be present
 * with its shape. Save writes the same layout (the tied decoder is not duplicated). */
dinoc_status dinoc_text_model_load(dinoc_text_model **out, const char *path);
dinoc_status dinoc_text_model_save(const dinoc_text_model *m, const char *dir);

/* Activations for batches of B sequences of T <= max_pos tokens; train = 1 keeps every layer's
 * activations for dinoc_text_backward (and its scratch). */
dinoc_status dinoc_text_state_init(dinoc_text_state **out, const dinoc_text_model *m, int B, int T,
                                   int train);
void         dinoc_text_state_free(dinoc_text_state *s);
/* Forward of ids [B, T] (0 <= id < vocab) with lengths [B] in [1, T] (NULL: all T; BERT masks keys
 * past a length, CLIP's causal mask already hides them from earlier rows). */
dinoc_status dinoc_text_forward(const dinoc_text_model *m, dinoc_text_state *s, const int32_t *ids,
                                const int32_t *lengths);
const float *dinoc_text_state_hidden(const dinoc_text_state *s); /* [B, T, D] last hidden state */
const float *dinoc_text_state_pooled(const dinoc_text_state *s); /* [B, P] (P = proj_dim or D) */
const int32_t *dinoc_text_state_pool_index(const dinoc_text_state *s); /* [B] pooled position */
/* Backward of the last forward of a train state: dhidden [B, T, D] and dpooled [B, P] (either
 * NULL) are the loss's gradients; parameter gradients ACCUMULATE into grads (n_params floats). */
dinoc_status dinoc_text_backward(const dinoc_text_model *m, dinoc_text_state *s,
                                 const float *dhidden, const float *dpooled, float *grads);

/* The config's FFN activation (also the MLM transform's): out = act(inp); dinp += dout * act'(inp). */
void dinoc_text_act_forward(const dinoc_text_config *c, float *out, const float *inp, size_t n);
void dinoc_text_act_backward(const dinoc_text_config *c, float *dinp, const float *dout,
                             const float *inp, size_t n);

#endif
