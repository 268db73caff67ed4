/* masking.h: DINOv2's masks for the iBOT objective (reference dino_dinov2.md 3.2), from a dinoc_rng
 * (src/data/masking.c):
 *   - the block-wise mask generator (BEiT's MaskingGenerator as DINOv2 configures it): rectangles
 *     of log-uniform aspect ratio are added to an h x w patch grid until a target count is reached;
 *   - the collate step: of the n_img global-crop images, int(n_img * mask_prob) get a mask whose
 *     target ratio is stratified over [ratio_min, ratio_max]; the rest get none; each masked token
 *     weighs 1 / (masked tokens of its image).
 * The RNG differs from Python's, so tests/test_dinov2_masking.c compares distributions with the
 * Python generator (tests/py/gen_dinov2.py), not draws. */
#ifndef DINOC_MASKING_H
#define DINOC_MASKING_H

#include "../internal.h"

typedef struct {
    int    h, w;              /* patch grid (16 x 16 at 224/14) */
    int    min_patches;       /* smallest block area drawn: 4 */
    int    max_patches;       /* largest block a single draw may add: 0.5 * h * w */
    double log_aspect[2];     /* log(0.3), log(1/0.3) */
} dinoc_mask_generator;

/* Counters of what the generator did (for tests and logs); accumulate over calls. */
typedef struct {
    int64_t blocks;           /* accepted blocks */
    double  sum_h, sum_w;     /* over accepted blocks */
    double  sum_log_hw;       /* sum of log(h / w) */
} dinoc_mask_stats;

/* DINOv2's configuration for an h x w grid: min 4, max_patches = (0.5 * h) // 1 * w as train.py
 * computes 0.5 * img // patch * img // patch, aspect 0.3 .. 1/0.3. DINOC_ERR_ARG if h or w < 1. */
dinoc_status dinoc_mask_generator_init(dinoc_mask_generator *g, int h, int w);
/* Fills mask [h * w] (row-major, 1 = masked) with blocks until `target` patches are masked or a
 * block adds nothing after 10 tries. Returns the masked count (<= target). st may be NULL. */
int dinoc_mask_generate(const dinoc_mask_generator *g, uint8_t *mask, int target, dinoc_rng *rng,
                        dinoc_mask_stats *st);

/* One batch of masks for n_img global-crop images (crop-major, as the student sees them). */
typedef struct {
    int      n_img, Np;       /* images, patches per image */
    uint8_t *masks;           /* [n_img, Np] */
    int     *target;          /* [n_img] the count asked for (0: unmasked image) */
    int     *count;           /* [n_img] the count obtained */
    int     *index;           /* [n_img * Np] flat indices (img * Np + patch) of the masked tokens, in
                               * order; the first n_masked are valid */
    float   *weight;          /* [n_img * Np] weight of each listed token: 1 / count of its image */
    int      n_masked;        /* masked tokens in the batch */
    int      upperbound;      /* sum over masked images of int(Np * ratio_max_of_stratum) */
    int     *order;           /* [n_img] scratch for the shuffle */
} dinoc_mask_batch;

dinoc_status dinoc_mask_batch_init(dinoc_mask_batch *mb, int n_img, int Np);
void         dinoc_mask_batch_free(dinoc_mask_batch *mb);
/* DINOv2's collate_data_and_cast: n = int(n_img * mask_prob) images get targets
 * int(Np * U(p_i, p_{i+1})), p = linspace(ratio_min, ratio_max, n + 1), the others none, and the
 * image order is shuffled. Then index / weight / n_masked are filled (dinoc_mask_batch_index).
 * DINOC_ERR_ARG for a probability outside [0, 1], ratios outside [0, 1] or min > max, or a grid
 * that does not match mb->Np. */
dinoc_status dinoc_mask_collate(dinoc_mask_batch *mb, const dinoc_mask_generator *g, double mask_prob,
                                double ratio_min, double ratio_max, dinoc_rng *rng, dinoc_mask_stats *st);
/* The upper bound of masked tokens of dinoc_mask_collate for these settings (what a step sizes
 * its buffers with). */
int dinoc_mask_upperbound(int n_img, int Np, double mask_prob, double ratio_min, double ratio_max);
/* Recomputes count, index, weight and n_masked from mb->masks (for masks set by the caller). */
void dinoc_mask_batch_index(dinoc_mask_batch *mb);

#endif
