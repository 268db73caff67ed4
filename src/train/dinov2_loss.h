/* dinov2_loss.h: DINOv2's objectives besides the backbone and heads (reference dino_dinov2.md 3.3),
 * forward and backward (src/train/dinov2_loss.c):
 *   teacher targets   softmax centering softmax((t - c) / tau_t) with its center EMA, or
 *                     Sinkhorn-Knopp (3 iterations, no gradient);
 *   DINO loss         DINOv2's form: local student crops against every teacher crop, global ones
 *                     against the other global crop, over nG (nG-1) + max(nG nL, 1) terms;
 *   iBOT loss         per masked token CE(target, softmax(s / tau_s)) x 1 / (masked tokens of its
 *                     image), summed and divided by the number of global-crop images;
 *   KoLeo             -mean_i log(min_j!=i |x_i - x_j| + 1e-8) on L2-normalised rows, the nearest
 *                     neighbour found by the largest dot product (as the reference does).
 * Losses return a double and WRITE their input gradient scaled by `weight` (the caller's loss
 * weight), except KoLeo, which ACCUMULATES (it adds to gradients the heads already wrote).
 * Sums are in double in a fixed order, so results do not depend on the thread count.
 * Tested by tests/test_dinov2_loss.c against PyTorch (tests/py/gen_dinov2.py) and by finite
 * differences. */
#ifndef DINOC_DINOV2_LOSS_H
#define DINOC_DINOV2_LOSS_H

#include "../internal.h"

#define DINOC_DINOV2_MAX_GLOBAL 8 /* global crops a DINO loss accepts */

/* q [N, K] = softmax((t - center) / temp) per row, formed in float32 as torch forms it. */
void dinoc_softmax_center(float *q, const float *t, const float *center, int N, int K, double temp);
/* center <- center * momentum + mean over the N rows of t * (1 - momentum). Data parallel: the
 * mean over every rank's rows (N may differ by rank, and be 0). scratch: K + 1 doubles. Every rank
 * must call it (a collective). */
dinoc_status dinoc_center_update(float *center, const float *t, int N, int K, double momentum, double *scratch);
/* Sinkhorn-Knopp targets q [N, K] of logits t [N, K]: Q = exp(t / temp), Q /= sum(Q), then iters
 * times: each prototype's mass to 1/K, each sample's to 1/N; finally every row sums to 1.
 * exp's argument is shifted by the global max first (cancels in the first normalisation; the
 * reference does not shift, which is safe only for cosine logits). scratch: K + 1 + N doubles.
 * Data parallel: the N rows are this rank's; the sums over samples, the max and the count are the
 * global batch's (N may differ by rank, and be 0). Every rank must call it (a collective). */
dinoc_status dinoc_sinkhorn_knopp(float *q, const float *t, int N, int K, double temp, int iters, double *scratch);

/* DINOv2's DINO loss. q [nG*B, K] teacher targets and s [(nG+nL)*B, K] student logits, both
 * crop-major; student global crop v is paired with every teacher crop i != v, local crops with
 * all. Writes ds [(nG+nL)*B, K] = weight * dLoss/ds. row_loss: (nG+nL)*B doubles of scratch. */
double dinoc_dinov2_dino_loss(float *ds, double *row_loss, const float *q, const float *s, int nG, int nL,
                              int B, int K, double tau_s, double weight);
/* iBOT patch loss over M masked tokens: q, s [M, K], w [M] token weights (1 / count of the
 * token's image), n_img the number of global-crop images. Writes ds [M, K]; row_loss M doubles. */
double dinoc_ibot_loss(float *ds, double *row_loss, const float *q, const float *s, const float *w, int M,
                       int n_img, int K, double tau_s, double weight);

/* KoLeo workspace for up to max_n rows of D. */
typedef struct {
    int    max_n, D;
    float *xn;   /* [n, D] normalised rows */
    float *dots; /* [n, n] */
    float *nrm;  /* [n] max(|x|, 1e-8) */
    float *dist; /* [n] |xn_i - xn_nn(i) + 1e-8| (torch's pairwise_distance adds eps to the difference) */
    int   *nn;   /* [n] nearest neighbour */
    float *g;    /* [n, D] dLoss/dxn (backward scratch) */
} dinoc_koleo;

dinoc_status dinoc_koleo_init(dinoc_koleo *k, int max_n, int D);
void         dinoc_koleo_free(dinoc_koleo *k);
/* KoLeo of x [n, D] (n <= max_n); ACCUMULATES weight * dLoss/dx into dx (NULL: forward only). */
double dinoc_koleo_loss(dinoc_koleo *k, float *dx, const float *x, int n, double weight);

#endif
