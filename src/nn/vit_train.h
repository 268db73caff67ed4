/* vit_train.h: the ViT's training forward and backward (src/nn/vit_train.c). */
#ifndef DINOC_VIT_TRAIN_H
#define DINOC_VIT_TRAIN_H

#include "vit.h"

typedef struct dinoc_train_state dinoc_train_state;

/* Activations saved for the backward of a batch of B images of H x W. */
dinoc_status dinoc_train_state_init(dinoc_train_state **out, const dinoc_model *m, int B, int H, int W);
void         dinoc_train_state_free(dinoc_train_state *s);
/* bf16 training: the products of this state's forward and backward (patch embedding, qkv, proj,
 * fc1, fc2) take bf16-rounded operands (inputs, weights, and the gradients arriving at them) and
 * accumulate in fp32, as dinoc_model_set_precision's inference mode does; the model keeps its fp32
 * master weights (it must stay at FP32 precision) and gradients stay fp32. */
dinoc_status dinoc_train_state_set_precision(dinoc_train_state *s, const dinoc_model *m, dinoc_precision p);
/* bf16 training of a student / EMA-teacher pair (DINO, DINOv2): the student's states (tl may be
 * NULL) go bf16 and *tcopy becomes the teacher's bf16 copy, which each step refreshes with
 * dinoc_vit_bf16_copy before the teacher's forward. */
dinoc_status dinoc_bf16_pair_init(dinoc_train_state *tg, dinoc_train_state *tl, const dinoc_model *student,
                                  dinoc_model **tcopy, const dinoc_model *teacher);
void         dinoc_train_state_dims(const dinoc_train_state *s, int *B, int *T, int *D);
/* Final normed tokens [B, T, D] of the last training forward. */
const float *dinoc_train_state_output(const dinoc_train_state *s);
/* Last block output before the final norm [B, T, D]. */
const float *dinoc_train_state_prenorm(const dinoc_train_state *s);
/* Last block's attention probabilities [B, NH, T, T]. */
const float *dinoc_train_state_attn(const dinoc_train_state *s);

/* Forward keeping activations. mask [B, Np] or NULL; drop_path[l] is block l's stochastic-depth
 * rate (NULL: none); rng draws the drop-path masks. */
dinoc_status dinoc_vit_forward_train(const dinoc_model *m, dinoc_train_state *s, const float *images,
                                     const uint8_t *mask, const float *drop_path, dinoc_rng *rng);
/* Backward of the last dinoc_vit_forward_train: dout = dLoss/d(final normed tokens) [B, T, D].
 * ACCUMULATES parameter gradients into grads (m->n_params floats, the model's layout). */
dinoc_status dinoc_vit_backward(const dinoc_model *m, dinoc_train_state *s, const float *dout,
                                float *grads);

#endif
