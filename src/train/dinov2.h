/* dinov2.h: DINOv2 pretraining (Oquab et al. 2023; reference dino_dinov2.md 3): DINO's image-level
 * loss plus iBOT's masked patch loss and the KoLeo regulariser, with DINOv2's optimisation
 * (src/train/dinov2.c; objectives in dinov2_loss.h, masks in ../data/masking.h).
 *
 * One step, as SSLMetaArch.forward_backward does it:
 *   teacher (no grad, no mask) on the 2 global crops -> normed CLS and patch tokens;
 *   student on the masked global crops (mask token in masked patches) and on the local crops;
 *   heads: DINOHead on CLS rows; iBOT on the masked patch tokens through the same head (shared,
 *   default) or a separate one; teacher targets by softmax centering or Sinkhorn-Knopp;
 *   loss = dino_w * DINO + koleo_w * sum over global crops of KoLeo(student CLS) + ibot_w * iBOT;
 *   backward; global-norm clipping (clip_grad) per submodule (backbone, DINO head, iBOT head);
 *   AdamW with per-tensor lr multipliers layer_decay^(L+1-layer_id) (x patch_embed_lr_mult for
 *   the patch embedding) and wd multipliers (0 for biases, norms, LayerScale gammas), the head's
 *   last layer at lr 0 during the first freeze_last_layer_epochs (its moments still move, as
 *   torch's AdamW at lr 0 does); EMA of every teacher tensor; center EMAs (centering only).
 * Schedules per iteration (CosineScheduler): lr = lr * sqrt(batch_total / 1024) with linear
 * warmup then cosine to min_lr; wd cosine wd -> wd_end; momentum cosine -> 1; teacher temperature
 * linear warmup_teacher_temp -> teacher_temp over warmup_teacher_temp_epochs, then constant.
 * Under a time budget the lengths given in epochs (both warmups, the freeze) shrink by the fitted
 * run's share of epochs x ipe (dinoc_recipe_steps), as the cosines follow the fitted length.
 *
 * Differences from the released code, chosen on purpose (see docs/dinov2.md):
 *   - stochastic depth is the per-sample form of src/nn/vit_train.c at a uniform rate (DINOv2
 *     uses batch-subset residuals; same expectation, different variance);
 *   - the iBOT center and Sinkhorn-Knopp use only the real masked tokens (the reference pads them
 *     to `upperbound` rows with head(0) outputs);
 *   - the position embedding is resized like Hugging Face's Dinov2 (DINOC_POS_INTERP_SIZE). */
#ifndef DINOC_DINOV2_H
#define DINOC_DINOV2_H

#include "../data/masking.h"
#include "../data/multicrop.h"
#include "../nn/dino_head.h"
#include "../nn/vit_train.h"
#include "dinov2_loss.h"
#include "optim.h"
#include "run.h"

typedef enum {
    DINOC_TARGETS_CENTERING = 0, /* softmax((t - center) / tau_t), center EMA */
    DINOC_TARGETS_SINKHORN  = 1, /* Sinkhorn-Knopp, 3 iterations */
} dinoc_targets;

typedef struct {
    const char *data, *data_dir, *out, *resume; /* as dinoc_dino_config (for a run loop) */
    const char *precision;   /* NULL or "fp32"; "bf16" as dinoc_dino_config's */
    /* backbone: a DINOv2 ViT (LayerScale, mask token, optional registers) on C x image x image */
    int    dim, depth, heads, patch, image, channels, mlp_ratio, n_registers;
    /* DINO head (K prototypes) and iBOT head (used only when ibot_separate_head) */
    int    out_dim, head_hidden, head_bottleneck, head_layers;
    int    ibot_separate_head, ibot_out_dim, ibot_hidden, ibot_bottleneck, ibot_layers;
    dinoc_multicrop_config crops;
    /* masking (collate) */
    double mask_prob, mask_ratio_min, mask_ratio_max;
    dinoc_targets targets;
    double dino_weight, koleo_weight, ibot_weight;
    /* optimisation */
    int    epochs, batch, warmup_epochs, freeze_last_layer_epochs;
    int    iters_per_epoch; /* 0: one pass over the data (DINOv2 fixes 1250) */
    double lr;              /* base lr for a total batch of 1024 (sqrt scaling) */
    double min_lr, wd, wd_end, clip_grad, drop_path, layer_decay, patch_embed_lr_mult;
    double momentum_teacher, final_momentum_teacher, teacher_temp, warmup_teacher_temp, student_temp;
    double center_momentum;
    int    warmup_teacher_temp_epochs;
    int    max_steps;       /* stop after this many steps in total (0: all epochs) */
    double time_budget;     /* > 0: wall-clock seconds for the run (as dinoc_dino_config) */
    int    sched_steps;     /* > 0: schedule length in steps (set by time_budget); 0: epochs x ipe */
    uint64_t seed;
    int    workers, ckpt_every, knn_every_epoch, knn_train, knn_test;
    void (*progress)(void *user, int64_t step, int64_t total, int epoch, double loss, double img_s);
    void  *progress_user;
} dinoc_dinov2_config;

/* DINOv2's values sized for the Fashion-MNIST main job (the model and crops of
 * dinoc_dino_default(); see dinov2.c for each departure from ssl_default_config.yaml). */
dinoc_dinov2_config dinoc_dinov2_default(void);

typedef struct {
    double lr, last_layer_lr, wd, momentum, teacher_temp;
} dinoc_dinov2_sched;

typedef struct {
    double loss, dino_loss, ibot_loss, koleo_loss;
    double grad_norm;     /* backbone gradient norm before clipping */
    double head_grad_norm, ibot_head_grad_norm;
    int    n_masked;      /* masked tokens this step */
    double t_teacher;     /* wall seconds of the teacher forward */
} dinoc_dinov2_stats;

typedef struct {
    dinoc_dino_head_layout l;
    float                 *sp, *tp, *g;  /* student, teacher params; student grads */
    dinoc_adamw            opt;
    dinoc_param_group     *groups;
    int                    ngroups, last_first; /* groups >= last_first are the last layer */
    dinoc_dino_head_acts   sa, ta;       /* activations: student, teacher */
} dinoc_dinov2_head;

typedef struct {
    dinoc_dinov2_config cfg;
    dinoc_model        *student, *teacher;
    float              *g;                 /* backbone grads */
    dinoc_adamw         opt;
    dinoc_param_group  *groups;
    int                 ngroups;
    dinoc_dinov2_head   dh, ih;            /* DINO head; iBOT head (separate only) */
    int                 B, nG, nL, G, L, Np, Tg, Tl, max_masked;
    dinoc_train_state  *tsg, *tsl;
    dinoc_state        *tst;
    dinoc_precision     prec;              /* cfg.precision parsed */
    dinoc_model        *tbf;               /* bf16: the teacher's per-step bf16 copy (as dinoc_dino's) */
    dinoc_mask_generator mgen;
    dinoc_mask_batch    mb;                /* the step's masks, weights and token list (this rank's) */
    dinoc_mask_batch    mbg;               /* data parallel: the global batch's masks */
    int                 world, rank;       /* data parallel: B = batch / world images per rank */
    float              *kx, *kdx;          /* KoLeo over the global batch: rows and gradients [Bg, D] */
    float              *center, *icenter;  /* DINO [K] and iBOT [Ki] centers (centering only) */
    dinoc_koleo         koleo;
    float *xg, *xl;                        /* crops, crop-major */
    float *hin, *dhin;                     /* student head input rows [NS + M, D] and grads */
    float *tin;                            /* teacher head input rows [nG B + M, D] */
    float *s_logits, *t_logits, *ds;       /* [rows, Kmax] */
    float *q_dino, *q_ibot;                /* targets */
    float *doutg, *doutl, *dpr;
    double *row_loss, *sk_scratch;
    dinoc_rng rng;
} dinoc_dinov2;

dinoc_status dinoc_dinov2_init(dinoc_dinov2 *d, const dinoc_dinov2_config *cfg);
void         dinoc_dinov2_free(dinoc_dinov2 *d);
/* One step on x [B, item] (the multi-crop layout of dinoc_dino_step) with masks [nG*B, Np] of the
 * global crops, crop-major (NULL: no masking, no iBOT term). DINOC_ERR_ARG if the masks hold more
 * than max_masked tokens (dinoc_mask_upperbound of the config). */
dinoc_status dinoc_dinov2_step(dinoc_dinov2 *d, const float *x, const uint8_t *masks, const dinoc_dinov2_sched *sc,
                               dinoc_dinov2_stats *st);
/* Masks for step `step` from the config and a stream seeded by (seed, step) (a run loop's helper;
 * writes d->mb.masks, which dinoc_dinov2_step accepts as its masks argument). Data parallel: this
 * rank's rows of the global batch's draw, so masks do not depend on the world size. */
dinoc_status dinoc_dinov2_draw_masks(dinoc_dinov2 *d, int64_t step);
/* The schedules at step `it`: cosine over sched_steps when set, else epochs x iters_per_epoch. */
dinoc_dinov2_sched dinoc_dinov2_schedule(const dinoc_dinov2_config *c, int64_t it, int64_t iters_per_epoch);

/* ---- the run (src/train/dinov2_run.c over src/train/run.c) --------------------------------------
 * Trains (or resumes from cfg->resume) and writes the run folder as dinoc_dino_train does: the
 * TEACHER backbone as a Hugging Face Dinov2 folder (LayerScale, mask token, registers), log.jsonl,
 * metrics.json and checkpoint.safetensors (format "dinoc-dinov2-1": the tensors and counters below,
 * the generator drop path draws from (masks come from a per-step stream), the loader position, the
 * config): resumes bit for bit on the same thread count. Data parallel under mpirun (dinov2.c). */
typedef dinoc_run_result dinoc_dinov2_result;
dinoc_status dinoc_dinov2_train(const dinoc_dinov2_config *cfg, dinoc_dinov2_result *res);
/* What a checkpoint holds: student, teacher, {dino,ibot}_head.{student,teacher,adam.m,adam.v},
 * center, ibot_center, adam.{m,v} (F32 tensors; the iBOT head's only when separate), and the AdamW
 * step counters. Returns the count written (at most max); pointers stay valid while d lives. */
int dinoc_dinov2_state_tensors(dinoc_dinov2 *d, dinoc_tensor *t, int max);
int dinoc_dinov2_state_counters(dinoc_dinov2 *d, dinoc_run_counter *c, int max);

#endif
