/* dino.h: DINO self-supervised pretraining (Caron et al. 2021; reference dino_dinov2.md 2):
 * a student ViT + DINOHead learns to match a momentum (EMA) teacher across multi-crop views, with
 * teacher centering and sharpening (src/train/dino.c).
 *
 * One step, as facebookresearch/dino main_dino.py train_one_epoch does it:
 *   teacher (no grad) on the global crops -> t [G*B, K]
 *   student on the global crops and on the local crops (one pass per crop size) -> s [(G+L)*B, K]
 *   loss  = mean over pairs (t_i, s_v), v != i, of the batch mean of
 *           -sum_k softmax((t_i - center)/tau_t)_k log_softmax(s_v / tau_s)_k
 *   backward; per-parameter gradient clipping (each tensor's norm to clip_grad); while
 *   epoch < freeze_last_layer the head's last layer gets no gradient (no update, no decay, and its
 *   Adam step count stays back, as torch's grad None does); AdamW (wd only on the "regularized"
 *   tensors: ndim > 1 and not biases); teacher <- m teacher + (1 - m) student over backbone and
 *   head; center <- cm center + (1 - cm) mean(t) over the batch.
 * Schedules per iteration: lr cosine with linear warmup (peak lr * batch / 256), wd cosine
 * wd -> wd_end, momentum cosine momentum_teacher -> 1; teacher temperature linear warmup per epoch.
 *
 * Choice: position embeddings of local crops are resized like Hugging Face's ViTModel (bicubic to
 * the target size, DINOC_POS_INTERP_SIZE) rather than DINO's scale-factor form, so the saved model
 * behaves the same under Hugging Face; at the training resolution the two are the same.
 *
 * ResNet backbones (cfg.arch = a preset of src/nn/resnet.h; docs/resnet.md): the same step with
 * the pooled feature in place of the CLS, both crop sizes through the one network; BN in
 * training mode for the student and the teacher (DINO never calls teacher.eval()), so the teacher's
 * running statistics follow its own forwards while the EMA covers parameters only (main_dino.py);
 * BN statistics are per rank (DINO converts to SyncBatchNorm: not done). Kept from the ViT recipe:
 * AdamW (DINO's ResNet-50 recipe uses SGD or LARS) and a head without BN (use_bn_in_head). */
#ifndef DINOC_DINO_H
#define DINOC_DINO_H

#include "../data/data.h"
#include "../data/multicrop.h"
#include "../nn/dino_head.h"
#include "../nn/resnet.h"
#include "../nn/vit_train.h"
#include "optim.h"

typedef struct {
    const char *data;        /* "fashion-mnist" or an image folder (labels unused for training) */
    const char *data_dir;    /* IDX directory override for fashion-mnist */
    const char *arch;        /* backbone: NULL or "vit" (dim, depth, heads, patch below), or a ResNet
                              * preset of src/nn/resnet.h (resnet18, resnet50, resnet_small) */
    const char *out;         /* run folder */
    const char *resume;      /* run folder to resume from (NULL: fresh) */
    /* backbone: a ViT (DINO v1 / HF "vit" arch) on C x image x image */
    int   dim, depth, heads, patch, image, channels, mlp_ratio;
    /* head */
    int   out_dim, head_hidden, head_bottleneck, head_layers, norm_last_layer;
    /* crops (sizes, counts, scales, augmentation probabilities; mean/std are set from the data) */
    dinoc_multicrop_config crops;
    /* optimisation */
    int   epochs, batch, warmup_epochs, freeze_last_layer;
    /* doubles, as the Python floats of the reference (see optim.h) */
    double lr;               /* peak lr for batch 256; the run uses lr * batch / 256 */
    double min_lr, wd, wd_end, clip_grad, drop_path;
    const char *precision;   /* NULL or "fp32"; "bf16": bf16 products with fp32 master weights
                              * (ViT only; dinoc_train_state_set_precision, docs/design.md) */
    double momentum_teacher, teacher_temp, warmup_teacher_temp, student_temp, center_momentum;
    int   warmup_teacher_temp_epochs;
    int   max_steps;         /* stop after this many steps in total (0: all epochs); for tests */
    /* > 0: a wall-clock budget in seconds for the whole run (monitor included). The run's length
     * in steps (sched_steps) is fitted after 12 calibration steps and fitted again every 64 steps
     * and after each epoch's checkpoint and monitor, from the measured seconds per step and per
     * epoch end; it never exceeds epochs x steps per epoch and may end inside an epoch. Schedules
     * follow the latest length (a refit moves the cosine by a few per cent at most; measured in
     * docs/design.md), and lengths given in epochs (warmups, freeze) shrink by the fit's share of
     * epochs x ipe (dinoc_recipe_steps). A resumed run keeps the saved length and does not refit. */
    double time_budget;
    int   sched_steps;       /* > 0: schedule length in steps (set by time_budget); 0: epochs x ipe */
    uint64_t seed;
    int   workers;           /* data threads */
    int   ckpt_every;        /* steps between checkpoints (0: epoch ends only) */
    int   knn_every_epoch;   /* 1: k-NN monitor of the teacher after each epoch (logged) */
    int   knn_train, knn_test; /* monitor subset sizes (first items of each split) */
    void (*progress)(void *user, int64_t step, int64_t total, int epoch, double loss, double img_s);
    void *progress_user;
} dinoc_dino_config;

/* The Fashion-MNIST default (the README's main job). */
dinoc_dino_config dinoc_dino_default(void);

/* The values of the schedules at one step. */
typedef struct {
    double lr, wd, momentum, teacher_temp;
    int    freeze_last_layer; /* 1: the head's last layer is left untouched this step */
} dinoc_dino_sched;

typedef struct {
    double loss;
    double grad_norm;        /* global student gradient norm before clipping */
    double teacher_entropy;  /* mean entropy of the teacher's softmax rows (nats) */
    double batch_entropy;    /* entropy of the batch-mean teacher distribution: ln K = uniform use */
    double center_norm;
    double feat_std;         /* mean over dims of the std over the batch of the teacher's CLS */
    /* wall seconds of the step's phases: teacher forward, student forward, heads + loss, backward,
     * clip + AdamW + EMA + center */
    double t_teacher, t_student, t_loss, t_backward, t_update;
} dinoc_dino_stats;

/* Everything one DINO step touches (allocated once; a step allocates nothing). */
typedef struct {
    dinoc_dino_config      cfg;
    dinoc_model           *student, *teacher;
    dinoc_dino_head_layout hl;
    float                 *shead, *thead;     /* [hl.n] student and teacher head parameters */
    float                 *g, *ghead;         /* gradients */
    float                 *center;            /* [K] */
    dinoc_adamw            opt, hopt, lopt;   /* backbone, head MLP, head last layer */
    dinoc_param_group     *groups, *hgroups, lgroups[2];
    int                    ngroups, nhgroups;
    int                    B, nG, nL, G, L;   /* batch, crop counts and sides */
    dinoc_train_state     *tsg, *tsl;         /* student activations: globals, locals */
    dinoc_state           *tst;               /* teacher inference state (globals) */
    dinoc_precision        prec;              /* cfg.precision parsed */
    dinoc_model           *tbf;               /* bf16: the teacher's products' copy (rounded from the
                                               * fp32 teacher before each teacher forward), else NULL */
    dinoc_dino_head_acts   sha, tha;          /* head activations: student, teacher */
    float                 *xg, *xl;           /* crops regrouped crop-major */
    float                 *cls, *dcls, *s_logits, *t_logits, *dlogits, *t_probs, *doutg, *doutl, *dpr;
    double                *row_loss;          /* per-row sums of the loss (fixed-order reduction) */
    double                *red;               /* [2K + 2] summed over ranks: teacher prob and logit
                                               * column sums, loss, entropy sum (see dist.h) */
    int                    world;             /* ranks sharing each batch (B = batch / world) */
    dinoc_rng              rng;
    /* The backbone: a ViT (student, teacher above) or, when cfg.arch names a ResNet preset, a
     * ResNet (rs, rt; student and teacher are then NULL). The step reaches either through sp/tp. */
    dinoc_resnet          *rs, *rt;           /* ResNet student, teacher (NULL for a ViT) */
    dinoc_resnet_ws       *rwg, *rwl, *rwt;   /* their training workspaces: student globals, locals;
                                               * teacher globals (batch-statistics BN, see dino.c) */
    float                 *sp, *tp;           /* student / teacher flat parameters, either backbone */
    size_t                 np;                /* floats in sp, tp and g */
    int                    D;                 /* backbone feature width: ViT dim, ResNet F */
    dinoc_preprocess       pp;                /* evaluation preprocessing saved with the teacher
                                               * (dinoc_train_preprocess of cfg's data) */
} dinoc_dino;

/* Builds student (random init from seed), teacher (a copy), heads, optimisers and buffers for
 * batches of cfg->batch source images. */
dinoc_status dinoc_dino_init(dinoc_dino *d, const dinoc_dino_config *cfg);
void         dinoc_dino_free(dinoc_dino *d);
/* One step on a batch laid out as the multi-crop transform writes it: x [B, item_floats] (each
 * item: global crops, then local crops, each [C, side, side]). */
dinoc_status dinoc_dino_step(dinoc_dino *d, const float *x, const dinoc_dino_sched *sc, dinoc_dino_stats *st);
/* The schedules at step `it` of a run of `epochs` epochs of `iters_per_epoch` steps. */
dinoc_dino_sched dinoc_dino_schedule(const dinoc_dino_config *c, int64_t it, int64_t iters_per_epoch);

/* What a checkpoint holds of the method's state, so the run loop (dino_run.c) saves and restores it
 * without knowing the method: F32 tensors (weights, heads, centers, optimiser moments) by name, and
 * integer counters (optimiser steps). Returns the count written (at most max). The pointers stay
 * valid while d lives; loading writes through them. */
typedef struct {
    const char *name;
    int64_t    *v;
} dinoc_counter;
int dinoc_dino_state_tensors(dinoc_dino *d, dinoc_tensor *t, int max);
int dinoc_dino_state_counters(dinoc_dino *d, dinoc_counter *c, int max);
/* Writes the teacher backbone, the model DINO evaluates, as a model folder (config.json +
 * model.safetensors + preprocessor_config.json): a Hugging Face ViT, or a ResNet folder
 * (dinoc_resnet_save: torchvision names, BN running statistics included) for a ResNet. */
dinoc_status dinoc_dino_save_teacher(const dinoc_dino *d, const char *dir);
/* Features of the teacher over the first `limit` items of ds (k-NN monitor): the normed CLS of a
 * ViT, the pooled feature of a ResNet (eval-mode BN: running statistics). */
dinoc_status dinoc_dino_teacher_features(const dinoc_dino *d, const dinoc_dataset *ds, int64_t limit, float **feats,
                                         int32_t **labels, int *dim);

typedef struct {
    int64_t steps;
    double  final_loss;
    double  knn_top1;        /* last k-NN monitor (-1 if none) */
    double  seconds;
} dinoc_dino_result;

/* Trains (or resumes) and writes the run folder: config.json + model.safetensors +
 * preprocessor_config.json (the TEACHER backbone as a Hugging Face ViT, what DINO evaluates),
 * checkpoint.safetensors (student, teacher, heads, center, AdamW moments and steps, RNG, data
 * position, config: resumes bit for bit on the same thread count), log.jsonl, metrics.json. */
dinoc_status dinoc_dino_train(const dinoc_dino_config *cfg, dinoc_dino_result *res);

#endif
