/* dino_head.h: DINO's projection head (DINOHead, reference dino_dinov2.md 2.3), forward and backward
 * over a flat parameter buffer (src/nn/dino_head.c):
 *   MLP  x[N,Din] -> Linear(Din,H) -> GELU -> [Linear(H,H) -> GELU] x (layers-2) -> Linear(H,Bn)
 *        (layers = 1: a single Linear(Din,Bn))
 *   z / max(|z|, 1e-12)                                      (F.normalize)
 *   last_layer = weight_norm(Linear(Bn, K, bias=False)):  W_k = g_k v_k / |v_k|   (dim 0)
 *   logits[N,K] = zn W^T  (cosines when g = 1, i.e. norm_last_layer)
 * Flat layout (also the tensor order of names()): mlp.0.weight, mlp.0.bias, mlp.2.weight, ...,
 * then last_layer.weight_g [K,1], last_layer.weight_v [K,Bn]. The last layer is one contiguous
 * range at the end so that an optimiser of its own can skip it (freeze_last_layer). */
#ifndef DINOC_DINO_HEAD_H
#define DINOC_DINO_HEAD_H

#include "../internal.h"

typedef struct {
    int in_dim, hidden, bottleneck, out_dim; /* Din, H, Bn, K: DINO 384/2048/256/65536 */
    int layers;                              /* Linear layers of the MLP: 3 */
} dinoc_dino_head_config;

#define DINOC_DINO_HEAD_MAX_LAYERS 8

typedef struct {
    dinoc_dino_head_config cfg;
    size_t n;                                   /* floats */
    size_t w_off[DINOC_DINO_HEAD_MAX_LAYERS];   /* per MLP layer: weight offset */
    size_t b_off[DINOC_DINO_HEAD_MAX_LAYERS];   /* bias offset */
    int    in[DINOC_DINO_HEAD_MAX_LAYERS], out[DINOC_DINO_HEAD_MAX_LAYERS];
    size_t g_off, v_off, last_off;              /* weight_g, weight_v; last_off = g_off */
} dinoc_dino_head_layout;

/* DINOC_ERR_ARG naming the field for sizes < 1 or layers outside 1..8. */
dinoc_status dinoc_dino_head_layout_init(dinoc_dino_head_layout *l, const dinoc_dino_head_config *c);
/* DINO's init: MLP weights trunc_normal(std 0.02, [-2, 2]), biases 0; weight_v as nn.Linear's
 * default (U(-1/sqrt(Bn), 1/sqrt(Bn))); weight_g = 1. */
void dinoc_dino_head_init(const dinoc_dino_head_layout *l, float *params, dinoc_rng *rng);
/* Tensor names ("mlp.0.weight", ..., "last_layer.weight_v"), shapes and ndims, in layout order;
 * returns the count (entries may be NULL to count). */
int dinoc_dino_head_names(const dinoc_dino_head_layout *l, char (*names)[48], int64_t (*shapes)[2],
                          int *ndims, size_t *offsets, size_t *counts);

/* Activations of a forward over at most max_rows rows, kept for the backward. */
typedef struct {
    const dinoc_dino_head_layout *l;
    int    max_rows, rows;
    float *x;                                    /* [N, Din] copy of the input */
    float *pre[DINOC_DINO_HEAD_MAX_LAYERS];      /* [N, out_i] linear outputs */
    float *act[DINOC_DINO_HEAD_MAX_LAYERS];      /* [N, out_i] GELU outputs (not the last) */
    float *nrm;                                  /* [N] max(|z|, eps) */
    float *zn;                                   /* [N, Bn] */
    float *w;                                    /* [K, Bn] effective last-layer weight */
    float *vnorm;                                /* [K] |v_k| */
    float *dz, *dh, *dh2, *dw;                   /* backward scratch */
} dinoc_dino_head_acts;

dinoc_status dinoc_dino_head_acts_init(dinoc_dino_head_acts *a, const dinoc_dino_head_layout *l,
                                       int max_rows);
void         dinoc_dino_head_acts_free(dinoc_dino_head_acts *a);
/* logits [N, K] of x [N, Din], N <= max_rows. */
void dinoc_dino_head_forward(dinoc_dino_head_acts *a, const float *params, const float *x, int N,
                             float *logits);
/* Backward of the last forward: ACCUMULATES parameter grads into grads (layout l) and, if dx is
 * not NULL, dL/dx into dx [N, Din]. dlogits [N, K]. weight_g's gradient is always formed (a frozen
 * g is the optimiser's business). */
void dinoc_dino_head_backward(dinoc_dino_head_acts *a, const float *params, const float *dlogits,
                              float *grads, float *dx);

#endif
