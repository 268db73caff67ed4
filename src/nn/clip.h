/* clip.h: CLIP image-text models (src/nn/clip.c, clip_io.c): a ViT image tower (class embedding,
 * pre-LN, ln_post on the CLS token, projection) and the causal text tower of text.h, with the logit
 * scale. Loads Hugging Face CLIPModel folders (openai/clip-vit-base-patch32 layout; reference
 * clip_mlm_and_c_peers.md A.2-A.5, A.7). This header is the interface the uses (zero-shot,
 * retrieval, few-shot: src/eval/) build on. */
#ifndef DINOC_CLIP_H
#define DINOC_CLIP_H

#include "../internal.h"

typedef struct dinoc_clip dinoc_clip;

/* A CLIPModel folder: config.json (model_type "clip", text_config + vision_config), model.safetensors
 * (HF names), preprocessor_config.json (CLIPImageProcessor) and the tokenizer (vocab.json + merges.txt in
 * the folder, else the OpenAI vocabulary found by dinoc_tokenizer_find_vocab). */
dinoc_status dinoc_clip_load(dinoc_clip **out, const char *dir);
void         dinoc_clip_free(dinoc_clip *m);
/* Width of the joint embedding (projection_dim). */
int          dinoc_clip_embed_dim(const dinoc_clip *m);
/* exp(logit_scale): the factor on cosine similarities in CLIP's logits. */
float        dinoc_clip_logit_scale(const dinoc_clip *m);
/* L2-normalised image embeddings out [n, embed_dim] of decoded 8-bit images, through the model's own
 * preprocessing. Thread-safe for one model (const use). */
dinoc_status dinoc_clip_encode_images(const dinoc_clip *m, const dinoc_image *imgs, int n, float *out);
/* L2-normalised text embeddings out [n, embed_dim] of UTF-8 texts (tokenised to the model's context,
 * truncated with EOT last as OpenAI's tokenize(truncate=True)). */
dinoc_status dinoc_clip_encode_texts(const dinoc_clip *m, const char *const *texts, int n, float *out);

/* ---- internals and training (src/nn/clip.c, clip_io.c, src/train/clip_train.c) -------------------
 * The model is two towers plus a small "head" buffer holding the image projection and the logit
 * scale, so each of the three flat buffers gets its own gradients and AdamW moments:
 *   image:  vision (a ViT: DINOC_ARCH_CLIP, or a DINO/DINOv2 tower for LiT) -> final norm -> CLS
 *           row -> head[0 .. E*Dv) as visual_projection.weight [E, Dv] (no bias)
 *   text:   text (dinoc_text_model, CLIP kind, proj_dim = E): EOT pooling + text_projection
 *   scale:  head[E*Dv] = logit_scale (the log of the factor on cosine similarities) */
#include "text.h"
#include "../text/tokenizer.h"

struct dinoc_clip {
    dinoc_model      *vision;     /* image tower */
    dinoc_text_model *text;       /* text tower with its projection */
    float            *head;       /* [E*Dv + 1]: visual_projection.weight, logit_scale */
    size_t            n_head;     /* floats in head */
    int               embed_dim;  /* E */
    dinoc_tokenizer  *tok;        /* NULL until first needed by dinoc_clip_encode_texts / tokenize */
    char             *vision_dir; /* LiT: the image tower's own folder name (relative), else NULL */
};

/* A model from configs: a vision tower of vcfg, a CLIP text tower of tcfg (its proj_dim is set to
 * embed_dim), the OpenAI init (reference A.4) and logit_scale ln(1/0.07); deterministic for seed. */
dinoc_status dinoc_clip_init_random(dinoc_clip **out, const dinoc_vit_config *vcfg,
                                    const dinoc_text_config *tcfg, int embed_dim, uint64_t seed);
/* LiT: wraps an already loaded image tower (ownership moves to the model, also on failure) with a
 * new random text tower and projection. vision_dir names the subfolder that saves it. */
dinoc_status dinoc_clip_init_lit(dinoc_clip **out, dinoc_model *vision, const dinoc_text_config *tcfg,
                                 int embed_dim, uint64_t seed);
/* Allocates the zeroed head buffer (E*Dv + 1 floats) once m->vision exists; sets embed_dim. */
dinoc_status dinoc_clip_alloc_head(dinoc_clip *m, int embed_dim);
/* HF CLIPImageProcessor's defaults at side `image`: shortest edge bicubic, center crop, 1/255,
 * OpenAI mean/std (reference A.7). */
void dinoc_clip_default_preprocess(dinoc_preprocess *pp, int image);
/* Writes a CLIPModel folder (config.json with text_config / vision_config, model.safetensors under
 * HF names, preprocessor_config.json). A LiT model's image tower goes to dir/vision as its own HF
 * folder and config.json names it ("dinoc_vision_folder"). */
dinoc_status dinoc_clip_save(const dinoc_clip *m, const char *dir);
/* Tokenises texts to ids [n, ctx] (clip.tokenize(truncate=True), ctx = the text tower's context)
 * and lengths [n] (through <|endoftext|>). Loads the tokenizer on first use (not thread-safe then). */
dinoc_status dinoc_clip_tokenize(dinoc_clip *m, const char *const *texts, int n, int32_t *ids,
                                 int32_t *lengths);
/* Unnormalised image embeddings of a vision tower's final normed tokens [B, T, Dv]: CLS row times
 * visual_projection^T into emb [B, E]. */
void dinoc_clip_project_images(const dinoc_clip *m, float *emb, const float *tokens, int B, int T);
/* L2-normalises rows of x [n, d] in place; norms [n] (may be NULL) receives the norms. */
void dinoc_clip_normalize(float *x, float *norms, int n, int d);

#endif
