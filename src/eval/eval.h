/* eval.h: evaluation of frozen encoders (src/eval/): feature extraction, weighted k-NN (DINO's
 * eval_knn.py, reference dino_dinov2.md 4.1) and linear probing (4.2). Used by `dinoc eval knn`,
 * `dinoc eval linear` and the DINO trainer's per-epoch monitor. */
#ifndef DINOC_EVAL_H
#define DINOC_EVAL_H

#include "../data/data.h"

/* Which features of a ViT to take per image. */
typedef struct {
    int n_last_blocks; /* CLS tokens of the last n blocks, each through the final LayerNorm
                          (DINO's get_intermediate_layers), concatenated: n * D floats. 1 = the
                          normed CLS of the backbone output */
    int avgpool;       /* 1: append the mean of the last block's normed patch tokens (D floats) */
} dinoc_feature_spec;

/* Features of every item of ds (in index order) with the model's own preprocessing
 * (preprocessor_config.json: resize, crop, normalise; grey images replicate into RGB; a
 * 1-channel model takes the first channel). feats [n, dim] and labels [n] are malloc'ed; *dim is
 * the feature width. limit > 0 takes only the first `limit` items. progress (may be NULL) is
 * called as (user, done, total). */
dinoc_status dinoc_extract_features(const dinoc_model *m, const dinoc_dataset *ds,
                                    dinoc_feature_spec spec, int batch, int64_t limit,
                                    float **feats, int32_t **labels, int *dim,
                                    void (*progress)(void *user, int64_t done, int64_t total),
                                    void *user);

/* Weighted k-NN: rows are L2-normalised (copies; inputs untouched), similarity = cosine, each of
 * the k nearest train rows votes exp(sim / T) for its class; top-1 and top-5 accuracy on test.
 * ks holds nk values of k, results top1[i], top5[i] for ks[i]. num_classes >= 2. Deterministic
 * (ties broken by lower train index). */
dinoc_status dinoc_knn_eval(const float *train, const int32_t *ytrain, int64_t ntrain,
                            const float *test, const int32_t *ytest, int64_t ntest, int dim,
                            int num_classes, const int *ks, int nk, float T, double *top1,
                            double *top5);

/* Linear probe on frozen features: a linear layer (init normal std 0.01, bias 0) trained with SGD
 * momentum 0.9, wd 0, batch `batch`, cosine lr to 0, for each learning rate of lrs (each scaled by
 * batch / 256); features standardised by nothing (as the references). The learning rate is chosen
 * on a held-out `val_fraction` of the training rows (split deterministic from seed); the chosen
 * classifier is then retrained on all training rows and scored on test. */
typedef struct {
    const double *lrs;
    int           n_lrs;
    int           epochs, batch;
    double        val_fraction; /* 0.1 */
    uint64_t      seed;
} dinoc_linear_config;

typedef struct {
    double best_lr;       /* the chosen lr (before batch scaling) */
    double val_top1;      /* its held-out accuracy */
    double test_top1, test_top5;
    double *val_by_lr;    /* [n_lrs] malloc'ed; caller frees */
} dinoc_linear_result;

dinoc_status dinoc_linear_probe(const float *train, const int32_t *ytrain, int64_t ntrain,
                                const float *test, const int32_t *ytest, int64_t ntest, int dim,
                                int num_classes, const dinoc_linear_config *cfg,
                                dinoc_linear_result *res);

#endif
