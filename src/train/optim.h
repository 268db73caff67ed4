/* optim.h: AdamW over flat parameter buffers, parameter groups, schedules and gradient clipping
 * (src/train/optim.c, src/train/schedule.c). Tested by tests/test_optim.c against PyTorch's
 * torch.optim.AdamW (fixtures: tests/py/gen_optim.py). */
#ifndef DINOC_OPTIM_H
#define DINOC_OPTIM_H

#include "../internal.h"

/* A contiguous range of the flat buffer that shares optimiser settings (usually one tensor). */
typedef struct {
    size_t offset, count; /* floats */
    float  lr_mult;       /* learning-rate multiplier (layer-wise decay, patch-embed 0.2, ...) */
    float  wd_mult;       /* weight-decay multiplier (0 for biases, norms, gammas by default) */
    int    frozen;        /* 1: no update at all this step (e.g. DINO's freeze_last_layer) */
    char   name[96];      /* the tensor's name, for messages and per-parameter clipping */
} dinoc_param_group;

typedef struct {
    float beta1, beta2, eps; /* 0.9, 0.999, 1e-8 (torch defaults) */
} dinoc_adamw_config;

typedef struct {
    size_t             n;      /* floats in params / grads */
    float             *m, *v;  /* [n] first and second moments (owned) */
    int64_t            step;   /* number of updates taken (bias correction uses step after ++) */
    dinoc_adamw_config cfg;
} dinoc_adamw;

dinoc_status dinoc_adamw_init(dinoc_adamw *opt, size_t n, dinoc_adamw_config cfg);
void         dinoc_adamw_free(dinoc_adamw *opt);
/* One AdamW step exactly as torch.optim.AdamW (decoupled decay: p -= lr * wd * p before the Adam
 * update; bias-corrected moments; eps added to sqrt(v_hat)). Each group uses lr * lr_mult and
 * wd * wd_mult; frozen groups are left untouched (moments too). Ranges not covered by any group
 * are not updated. Deterministic and independent of the thread count. */
void dinoc_adamw_step(dinoc_adamw *opt, float *params, const float *grads,
                      const dinoc_param_group *groups, int n_groups, float lr, float wd);

/* Global L2 norm of grads over the groups (accumulated in double, fixed order). */
double dinoc_grad_norm(const float *grads, const dinoc_param_group *groups, int n_groups);
/* Scales all grads by max_norm / (norm + 1e-6) when norm > max_norm (torch.nn.utils.clip_grad_norm_).
 * Returns the norm before clipping. */
double dinoc_clip_grad_norm(float *grads, const dinoc_param_group *groups, int n_groups,
                            float max_norm);
/* DINO's per-parameter clipping: each group's grad norm is clipped to `clip` on its own
 * (coef = clip / (norm + 1e-6) if < 1). Returns the global norm before clipping. */
double dinoc_clip_grad_per_param(float *grads, const dinoc_param_group *groups, int n_groups,
                                 float clip);

/* Per-iteration cosine schedule with linear warmup, DINO's cosine_scheduler(base, final, epochs,
 * niter_per_ep, warmup_epochs, start_warmup_value) evaluated at iteration it (0-based) of total
 * iterations; warmup_iters iterations go linearly from start_warmup to base (np.linspace, so the last
 * warmup value equals base), then final + 0.5 (base - final)(1 + cos(pi i / (total - warmup))).
 * Past the end it returns final. */
double dinoc_cosine_schedule(double base, double final, int64_t total_iters, int64_t warmup_iters,
                             double start_warmup, int64_t it);

#endif
