/* supervised.h: supervised ViT classification training (a linear head on the normed CLS token) on
 * Fashion-MNIST or an image folder, with AdamW, cosine schedules, checkpoints that resume exactly,
 * and evaluation (src/train/supervised.c). The training engine every objective reuses. */
#ifndef DINOC_SUPERVISED_H
#define DINOC_SUPERVISED_H

#include "../internal.h"
#include "../data/data.h"

typedef struct {
    const char *data;        /* "fashion-mnist" or an image folder with class subfolders */
    const char *data_dir;    /* IDX directory override for fashion-mnist (NULL: Debian's) */
    const char *out;         /* run folder */
    const char *resume;      /* run folder to resume from (NULL: fresh) */
    /* model: a ViT on C x S x S inputs */
    int   dim, depth, heads, patch, image, channels;
    /* optimisation */
    int   epochs, batch, warmup_epochs;
    int   accum;             /* micro-batches of `batch` images per optimizer step (gradient accumulation) */
    float lr, min_lr, wd, wd_end, label_smoothing, drop_path, clip_grad;
    int   max_steps;         /* stop after this many steps in total (0: run all epochs); for tests */
    /* augmentation: random crop with `pad` pixels of zero padding, horizontal flip */
    int   pad, flip;
    uint64_t seed;
    int   workers;           /* data threads */
    int   ckpt_every;        /* steps between checkpoints (0: only at the end) */
    int   eval_every_epoch;  /* 1: test accuracy after each epoch (logged) */
    /* progress callback (the library never prints): called after every step */
    void (*progress)(void *user, int64_t step, int64_t total, int epoch, double loss, double lr,
                     double img_s);
    void *progress_user;
} dinoc_sup_config;

dinoc_sup_config dinoc_sup_default(void);

typedef struct {
    int64_t steps;
    double  final_loss;
    double  test_top1;       /* accuracy on the test split after training, -1 if not evaluated */
    double  seconds;
} dinoc_sup_result;

/* Trains (or resumes) and writes the run folder: config.json + model.safetensors +
 * preprocessor_config.json (the backbone, loadable by dinoc_model_load), checkpoint.safetensors
 * (everything needed to resume bit for bit: weights, head, AdamW moments, step, RNG, data position,
 * training config), log.jsonl (one JSON object per step) and metrics.json. A non-finite loss or
 * gradient stops the run with DINOC_ERR_NUMERIC naming the step; the last checkpoint stays. */
dinoc_status dinoc_sup_train(const dinoc_sup_config *cfg, dinoc_sup_result *res);

/* Top-1 accuracy of a run's classifier on a data set split (train = 0: test split). */
dinoc_status dinoc_sup_eval(const char *run, const char *data, const char *data_dir, int train_split,
                            int batch, double *top1, int64_t *n);

/* Shared by the trainers: "fashion-mnist" (DIR NULL: Debian's) or an image folder: training
 * reads DIR/train when present, else DIR; the test split is DIR/test, and a folder without one
 * has no test split (DINOC_ERR_ARG: never the training images scored against themselves). */
dinoc_status dinoc_train_open_data(dinoc_dataset **ds, const char *data, const char *data_dir, int train);
int          dinoc_train_has_test(const char *data); /* 1: fashion-mnist, or DIR/test exists */
/* The preprocessing a trained model is saved with (preprocessor_config.json): Fashion-MNIST: an
 * exact resize to image x image (none at 28) and the training split's mean/std; photos: shorter
 * side image * 256/224 bicubic, center crop, ImageNet mean/std. */
void dinoc_train_preprocess(dinoc_preprocess *pp, const char *data, int image, int channels);
/* Keeps the lines of a log.jsonl whose "step" is <= step: a resumed run rewrites what came after
 * its checkpoint. */
void dinoc_train_truncate_log(const char *path, int64_t step);
/* A checkpoint's integer metadata (step, optimiser steps, loader position): a missing, malformed or
 * negative value clears *ok. */
int64_t dinoc_train_meta_int(const dinoc_safetensors *st, const char *key, int *ok);

#endif
