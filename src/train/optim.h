/* optim.h: AdamW over flat parameter buffers, parameter groups, schedules and gradient clipping
 * (src/train/optim.c, src/train/schedule.c). Tested by tests/test_optim.c against PyTorch's
 * torch.optim.AdamW (fixtures: tests/py/gen_optim.py).
 *
 * Hyperparameters (betas, eps, lr, wd, multipliers, clip thresholds) are doubles because PyTorch
 * keeps them as Python floats (doubles): bias corrections, lr * lr_multiplier and 1 - lr * wd are
 * formed in double there and only rounded to float32 when they meet a tensor. Taking them as double
 * lets the step reproduce torch.optim.AdamW bit for bit (tests/test_optim.c checks it). Callers that
 * pass floats still compile unchanged. */
#ifndef DINOC_OPTIM_H
#define DINOC_OPTIM_H

#include "../internal.h"

/* A contiguous range of the flat buffer that shares optimiser settings (usually one tensor). */
typedef struct {
    size_t offset, count; /* floats */
    double lr_mult;       /* learning-rate multiplier (layer-wise decay, patch-embed 0.2, ...) */
    double wd_mult;       /* weight-decay multiplier (0 for biases, norms, gammas by default) */
    int    frozen;        /* 1: no update at all this step (e.g. DINO's freeze_last_layer) */
    char   name[96];      /* the tensor's name, for messages and per-parameter clipping */
} dinoc_param_group;

typedef struct {
    double beta1, beta2, eps; /* 0.9, 0.999, 1e-8 (torch defaults) */
} dinoc_adamw_config;

typedef struct {
    size_t             n;      /* floats in params / grads */
    float             *m, *v;  /* [n] first and second moments (owned, dinoc_calloc'd) */
    int64_t            step;   /* number of updates taken (bias correction uses step after ++) */
    dinoc_adamw_config cfg;
} dinoc_adamw;

/* Zeroed moments for n floats, step 0. DINOC_ERR_ARG for betas outside [0, 1) or eps < 0,
 * DINOC_ERR_NOMEM if the moments cannot be allocated. opt is zeroed on failure. */
dinoc_status dinoc_adamw_init(dinoc_adamw *opt, size_t n, dinoc_adamw_config cfg);
void         dinoc_adamw_free(dinoc_adamw *opt);
/* One AdamW step exactly as torch.optim.AdamW (decoupled decay: p -= lr * wd * p before the Adam
 * update; bias-corrected moments; eps added to sqrt(v_hat)). Each group uses lr * lr_mult and
 * wd * wd_mult; frozen groups are left untouched (moments too). Ranges not covered by any group
 * are not updated. Deterministic and independent of the thread count.
 * opt->step counts calls (one shared step, as torch's per-parameter steps are when every parameter
 * takes every step); a group frozen for some steps still gets the global step's bias correction
 * afterwards, whereas torch (grad None) would keep that parameter's own step count back. */
void dinoc_adamw_step(dinoc_adamw *opt, float *params, const float *grads,
                      const dinoc_param_group *groups, int n_groups, double lr, double wd);

/* Global L2 norm of grads over the groups, frozen ones included (DINO clips before it cancels the
 * last layer's grads). Accumulated in double in a fixed order: groups in order, each group in
 * fixed 4096-float chunks summed in order, so the result does not depend on the thread count. */
double dinoc_grad_norm(const float *grads, const dinoc_param_group *groups, int n_groups);
/* torch.nn.utils.clip_grad_norm_: scales all grads by max_norm / (norm + 1e-6) when that is < 1.
 * Returns the norm before clipping (double). The coefficient is formed in float32 as torch forms it,
 * but from the correctly rounded norm, so it may differ from torch's by one float ulp. */
double dinoc_clip_grad_norm(float *grads, const dinoc_param_group *groups, int n_groups,
                            double max_norm);
/* DINO's utils.clip_gradients: each group's grad norm is clipped to `clip` on its own
 * (coef = clip / (norm + 1e-6) if < 1). Returns the global norm before clipping. */
double dinoc_clip_grad_per_param(float *grads, const dinoc_param_group *groups, int n_groups,
                                 double clip);

/* Builds one group per named tensor i (offset offsets[i], count counts[i], frozen 0) with
 * DINOv2's rules (dinov2/utils/param_groups.py, reference dino_dinov2.md 3.3):
 *   layer_id = 0    for names containing pos_embed, patch_embed, cls_token, mask_token,
 *                   register_tokens, or an "embeddings." component (Hugging Face);
 *            = i+1  for block i: "blocks.i." (also chunked "blocks.c.i.") or "encoder.layer.i.";
 *            = L+1  for everything else (final norm, heads); L = depth.
 *   lr_mult  = layer_decay ^ (L + 1 - layer_id), times patch_embed_lr_mult for names containing
 *              "patch_embed" (HF's "patch_embeddings" too).
 *   wd_mult  = 0 for names ending ".bias" or containing "norm", "gamma" or ending ".lambda1"
 *              (HF layer scale), else 1. So cls_token, pos_embed, mask_token and
 *              head.last_layer.weight_g are decayed.
 * dino_v1_rule = 1 switches wd_mult to DINO v1's rule (main_dino.py get_params_groups): 0 for
 * names ending ".bias" and for every 1-D tensor (ndims[i] == 1), else 1; ndims may be NULL only
 * when dino_v1_rule is 0. DINO v1 has no layer decay: pass layer_decay = patch_embed_lr_mult = 1.
 * Names longer than 95 characters are truncated in out[i].name. DINOC_ERR_ARG (naming the tensor)
 * for n < 0, NULL names, depth < 0, layer_decay <= 0, or a block index >= depth. */
dinoc_status dinoc_param_groups_default(dinoc_param_group *out, const char *const *names,
                                        const size_t *offsets, const size_t *counts,
                                        const int *ndims, int n, double layer_decay, int depth,
                                        double patch_embed_lr_mult, int dino_v1_rule);

/* Per-iteration cosine schedule with linear warmup, DINO's cosine_scheduler(base, final, epochs,
 * niter_per_ep, warmup_epochs, start_warmup_value) evaluated at iteration it (0-based) of total
 * iterations; warmup_iters iterations follow np.linspace(start_warmup, base, warmup_iters) (so the
 * last warmup value equals base when warmup_iters > 1; a single warmup iteration is start_warmup),
 * then final + 0.5 (base - final)(1 + cos(pi i / (total - warmup))) for i = it - warmup.
 * Past the end (it >= total_iters) it returns final; it < 0 is treated as 0. */
double dinoc_cosine_schedule(double base, double final, int64_t total_iters, int64_t warmup_iters,
                             double start_warmup, int64_t it);

/* Lengths a recipe gives in epochs under a time budget. A budget fits the run's length in steps
 * (sched_steps) and it may come out shorter than the recipe's epochs x ipe (recipe_steps); every
 * length the recipe counts in epochs (lr warmup, teacher-temperature warmup, last-layer freeze)
 * then shrinks by the same factor sched_steps / recipe_steps, so the budget runs the whole recipe
 * faster instead of its first part (a 6-epoch fit of a 20-epoch recipe with a 6-epoch warmup
 * would otherwise end before the warmup does). Without a budget (sched_steps <= 0) or when the
 * fit is the whole recipe, lengths are epochs x ipe as in DINO / DINOv2.
 * dinoc_recipe_steps: `epochs` epochs in steps of this run (rounded to the nearest step).
 * dinoc_recipe_epoch: the recipe's epoch that step `it` falls in (it / ipe without a budget). */
int64_t dinoc_recipe_steps(double epochs, int64_t ipe, int64_t sched_steps, int64_t recipe_steps);
int64_t dinoc_recipe_epoch(int64_t it, int64_t ipe, int64_t sched_steps, int64_t recipe_steps);

#endif
