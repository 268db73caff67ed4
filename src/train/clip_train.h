/* clip_train.h: CLIP's contrastive training: the loss (src/train/clip_loss.c), one step of both
 * towers (clip_train.c) and the training run (clip_run.c).
 *
 * Loss (reference A.8): with I, T the L2-normalised embeddings of N pairs and s = exp(logit_scale),
 *   L = 1/2 [ CE(s I T^T, y) + CE(s T I^T, y) ],  y = (0, .., N-1),  CE the mean over rows.
 * Gradients go back through the normalisation to the unnormalised embeddings and to logit_scale.
 * Tested by tests/test_clip.c (a whole step's gradients against PyTorch, tests/py/gen_clip.py). */
#ifndef DINOC_CLIP_TRAIN_H
#define DINOC_CLIP_TRAIN_H

#include "../nn/clip.h"
#include "../nn/vit_train.h"

/* Workspace of the loss for N pairs of E-wide embeddings and M texts (M = N, or M = 2N with one
 * hard-negative caption per pair; allocated once, reused every step). */
typedef struct {
    int      N, M, E;
    float   *in, *tn;           /* [N, E], [M, E] normalised copies */
    float   *nrm_i, *nrm_t;     /* [N], [M] norms */
    float   *logits, *logits_t; /* [N, M] s I T^T; [N, N] the true captions' block, transposed */
    float   *probs, *probs_t;   /* row softmaxes of those */
    float   *dlog, *dlog_t;     /* [N, M], [N, N] */
    float   *din, *dtn;         /* [N, E], [M, E] */
    int32_t *target;            /* [N] 0..N-1 */
    /* [N] or NULL: pairs whose captions are equal share a group (set by the caller before
     * dinoc_clip_loss); each row's positives are then all pairs of its group (below) */
    const int32_t *group;
    int32_t       *group_n;     /* [N] size of each row's group */
} dinoc_clip_loss_ws;

dinoc_status dinoc_clip_loss_init(dinoc_clip_loss_ws *ws, int N, int M, int E);
void         dinoc_clip_loss_free(dinoc_clip_loss_ws *ws);
/* Symmetric InfoNCE of unnormalised img [N, E] and txt [M, E] at logit_scale (the log of s).
 * With M = 2N, txt rows N.. are hard negatives (row N + j: pair j's): they join the image-to-text
 * softmax only (NegCLIP); neg_valid [N] (NULL: all valid) drops pair j's negative when 0.0f.
 * Returns the loss; dimg [N, E], dtxt [M, E] and *dscale ACCUMULATE its gradients (any may be NULL).
 * *acc (may be NULL) receives the image-to-text top-1 accuracy within the batch (over all M texts).
 * With ws->group set, equal captions are not negatives of each other: in both directions the
 * target of row i is uniform over the pairs of i's group (a soft-target cross-entropy; with all
 * groups distinct it is the diagonal loss above). A batch of a set with repeated captions (the
 * shapes set: ~40 images per single-shape caption) would otherwise push apart images that the
 * same caption describes. A hit of *acc is then any text of the image's group. */
double dinoc_clip_loss(dinoc_clip_loss_ws *ws, float *dimg, float *dtxt, float *dscale, const float *img,
                       const float *txt, const float *neg_valid, float logit_scale, double *acc);

/* Activations and gradients scratch of one training step on N pairs of S x S images and
 * sequences of ctx tokens. locked = 1: the image tower runs in inference mode (LiT, no gradient).
 * Data parallel (dist.h, W ranks): N is this rank's share; the loss contrasts the gathered global
 * batch of W*N pairs (clip_train.c). */
typedef struct dinoc_clip_step dinoc_clip_step;
dinoc_status dinoc_clip_step_init(dinoc_clip_step **out, const dinoc_clip *m, int N, int S, int ctx,
                                  int locked, int negatives);
void         dinoc_clip_step_free(dinoc_clip_step *w);
/* The image tower's training precision (fp32 or bf16; a locked tower stays fp32). */
dinoc_status dinoc_clip_step_set_precision(dinoc_clip_step *w, const dinoc_clip *m, dinoc_precision p);
/* Forward of both towers, the loss, and the backward: gradients ACCUMULATE into gv (vision,
 * m->vision->n_params floats; ignored when locked), gt (text) and gh (head: projection and
 * logit_scale). images [N, 3, S, S] normalised, ids [N, ctx], lengths [N] (with negatives:
 * [2N, ctx], [2N], rows N.. the pairs' hard-negative captions, neg_valid [N] flagging those
 * present; NULL: all). groups [N] (NULL: none): each pair's caption group, ids that are the same
 * on every rank for equal captions and < 2^24 (gathered as floats; dinoc_clip_loss). *loss and *acc are
 * the global batch's. With W > 1 ranks each rank's gradients are its share: their sum over the
 * ranks is the gradient of the global batch's loss (the caller allreduces). */
dinoc_status dinoc_clip_step_run(dinoc_clip_step *w, const dinoc_clip *m, const float *images,
                                 const int32_t *ids, const int32_t *lengths, const uint8_t *neg_valid,
                                 const int32_t *groups, float *gv, float *gt, float *gh, double *loss,
                                 double *acc);

/* ---- the training run ----------------------------------------------------------------------- */

typedef struct {
    const char *pairs;      /* a TSV (image path <TAB> caption, paths relative to its folder) or a
                             * folder of images with a .txt caption beside each */
    const char *out;        /* run folder */
    int         resume;     /* 1: continue from out/checkpoint.safetensors */
    const char *init_image; /* LiT: an HF ViT/Dinov2 folder (dinoc train dino) whose tower is locked */
    const char *preset;     /* model size: "shapes" (default) or "tiny" (tests) */
    int         epochs, batch, warmup_steps, max_steps, ckpt_every, workers;
    float       lr, min_lr, wd;
    double      time_budget; /* seconds (0: none): the run's length is fitted to it */
    int         caption_groups; /* 1: pairs with equal captions are each other's positives
                                 * (dinoc_clip_loss); 0 (default): CLIP's diagonal targets */
    const char *precision;  /* the image tower's products: "fp32" (NULL), "bf16" (bf16 operands, fp32
                             * master weights and AdamW, as DINO's bf16 training) or "auto" (bf16
                             * where the CPU has bf16 instructions); the text tower stays fp32 */
    uint64_t    seed;
    void (*progress)(void *user, int64_t step, int64_t total, double loss, double lr, double img_s);
    void       *progress_user;
} dinoc_clip_train_config;

dinoc_clip_train_config dinoc_clip_train_default(void);

typedef struct {
    int64_t steps;
    double  final_loss, seconds;
} dinoc_clip_train_result;

/* Trains (or resumes) and writes the run folder: the model as a CLIPModel folder (config.json,
 * model.safetensors, preprocessor_config.json; LiT: its image tower in vision/), checkpoint.safetensors
 * (weights, AdamW moments, step, total steps: resumes bit for bit), log.jsonl and metrics.json. */
dinoc_status dinoc_clip_train(const dinoc_clip_train_config *cfg, dinoc_clip_train_result *res);

#endif
