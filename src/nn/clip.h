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

#endif
