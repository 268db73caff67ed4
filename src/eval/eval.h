/* eval.h: evaluation of frozen encoders (src/eval/): feature extraction, weighted k-NN (DINO's
 * eval_knn.py, reference dino_dinov2.md 4.1) and linear probing (4.2). Used by `dinoc eval knn`,
 * `dinoc eval linear` and the DINO trainer's per-epoch monitor. */
#ifndef DINOC_EVAL_H
#define DINOC_EVAL_H

#include "../data/data.h"
#include "../nn/resnet.h"

/* Which features of a ViT to take per image. */
typedef struct {
    int n_last_blocks; /* CLS tokens of the last n blocks, each through the final LayerNorm
                          (DINO's get_intermediate_layers), concatenated: n * D floats. 1 = the
                          normed CLS of the backbone output */
    int avgpool;       /* 1: append the mean of the last block's normed patch tokens (D floats) */
} dinoc_feature_spec;

/* A frozen encoder: a ViT or a ResNet (exactly one is set). pp is the ResNet's preprocessing; a
 * ViT uses its own (dinoc_model_preprocess). */
typedef struct {
    const dinoc_model  *vit;
    const dinoc_resnet *resnet;
    dinoc_preprocess    pp;
} dinoc_backbone;

/* Loads a model folder (or a .safetensors file with config.json beside it) by config.json's
 * "model_type": "resnet" through dinoc_resnet_load, with preprocessor_config.json read over
 * dinoc_preprocess_default() when the folder has one (without it: torchvision's evaluation
 * transform, shorter side 256, center crop 224, ImageNet mean/std, which the default equals);
 * anything else through dinoc_model_load with lp (NULL: its defaults). The backbone owns the
 * model: dinoc_backbone_free (also after a failed load). */
dinoc_status dinoc_backbone_load(dinoc_backbone *b, const char *path, const dinoc_load_params *lp);
void         dinoc_backbone_free(dinoc_backbone *b);
/* Input channels of the backbone's images (1 or 3). */
int          dinoc_backbone_channels(const dinoc_backbone *b);

/* dinoc_extract_features for either backbone. A ResNet's feature is its pooled last stage (fc
 * dropped: DINO's eval_knn / eval_linear take model(x) with fc = Identity) with eval-mode BN;
 * spec is the ViT's and is ignored for a ResNet (as DINO's eval_linear ignores n_last_blocks and
 * avgpool for ResNets). */
dinoc_status dinoc_backbone_features(const dinoc_backbone *b, const dinoc_dataset *ds,
                                     dinoc_feature_spec spec, int batch, int64_t limit,
                                     float **feats, int32_t **labels, int *dim,
                                     void (*progress)(void *user, int64_t done, int64_t total),
                                     void *user);

/* Features of every item of ds (in index order) with the model's own preprocessing
 * (preprocessor_config.json: resize, crop, normalise; grey images replicate into RGB; a
 * 1-channel model takes the first channel). Every item must preprocess to the first item's size
 * (else DINOC_ERR_SHAPE naming the item); a size above the model's image_size logs a warning (a
 * 28-px model under the default 224 crop is almost surely a missing preprocessor_config.json).
 * `batch` images per dinoc_forward; decoding runs on the OpenMP threads. feats [n, dim] and
 * labels [n] are malloc'ed; *dim is the feature width. limit > 0 takes only the first `limit`
 * items (for a folder: the first classes in path order). progress (may be NULL) is called as
 * (user, done, total) after each batch. */
dinoc_status dinoc_extract_features(const dinoc_model *m, const dinoc_dataset *ds,
                                    dinoc_feature_spec spec, int batch, int64_t limit,
                                    float **feats, int32_t **labels, int *dim,
                                    void (*progress)(void *user, int64_t done, int64_t total),
                                    void *user);

/* Weighted k-NN: rows are L2-normalised (copies; inputs untouched), similarity = cosine, each of
 * the k nearest train rows votes exp(sim / T) for its class; top-1 and top-5 accuracy on test
 * (top-5: the target among the first min(5, k, num_classes) classes, DINO's min(5, k)).
 * ks holds nk values of k, results top1[i], top5[i] for ks[i]. num_classes >= 2, 1 <= k <= ntrain,
 * labels in 0..num_classes-1 (else DINOC_ERR_ARG naming the problem; non-finite features:
 * DINOC_ERR_NUMERIC). Deterministic whatever the thread count (ties broken by lower train index,
 * then by lower class index). Memory: a normalised train copy plus <= 64 MB of similarities. */
dinoc_status dinoc_knn_eval(const float *train, const int32_t *ytrain, int64_t ntrain,
                            const float *test, const int32_t *ytest, int64_t ntest, int dim,
                            int num_classes, const int *ks, int nk, float T, double *top1,
                            double *top5);

/* Linear probe on frozen features: a linear layer (init normal std 0.01, bias 0) trained with SGD
 * momentum 0.9, wd 0, batch `batch`, cosine lr to 0 per iteration, for each learning rate of lrs
 * (each scaled by B / 256, B = min(batch, rows): the batch in use; all lrs train side by side on
 * the same batches, as DINOv2's
 * AllClassifiers); features standardised by nothing (as the references). The learning rate is
 * chosen on a held-out `val_fraction` of the training rows (split deterministic from seed; ties go
 * to the earlier lr); the chosen classifier is then retrained on all training rows from the same
 * initialisation and scored once on test. Results depend on the seed only, not on the threads. */
typedef struct {
    const double *lrs;
    int           n_lrs;
    int           epochs, batch;
    double        val_fraction; /* 0.1 */
    int           val_per_class; /* > 0: hold out this many rows of each class instead (at most all but
                                  * one of a class); when no row is held out (one row per class) the
                                  * first lr is used unchosen and val_top1 is -1. Few-shot uses 1. */
    uint64_t      seed;
} dinoc_linear_config;

typedef struct {
    double best_lr;       /* the chosen lr (before batch scaling) */
    double val_top1;      /* its held-out accuracy */
    double test_top1, test_top5;
    double *val_by_lr;    /* [n_lrs] malloc'ed; caller frees */
} dinoc_linear_result;

/* Defaults: lrs {1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1} (DINOv2's grid spans 1e-5..0.1
 * for 12.5 ImageNet epochs; fewer iterations here favour the top of it, so the grid reaches 1; the
 * lrs array is static), DINOC_LINEAR_EPOCHS epochs, batch 128, val_fraction 0.1, seed 0. The whole
 * probe on 60k x 768 features takes seconds on 2 cores. */
#define DINOC_LINEAR_EPOCHS 10
dinoc_linear_config dinoc_linear_default(void);

dinoc_status dinoc_linear_probe(const float *train, const int32_t *ytrain, int64_t ntrain,
                                const float *test, const int32_t *ytest, int64_t ntest, int dim,
                                int num_classes, const dinoc_linear_config *cfg,
                                dinoc_linear_result *res);

/* One SGD step of nl linear classifiers side by side on one batch (the probe's inner step; exposed
 * for tests): w [nl*K, D], b [nl*K] (classifier j owns rows j*K..j*K+K-1), momentum buffers mw, mb
 * (zeros before the first step), x [B, D], y [B] in 0..K-1. Mean softmax cross-entropy of each
 * classifier, then PyTorch's SGD (dampening 0, no Nesterov, wd 0): buf = momentum * buf + grad;
 * p -= lr[j] * buf; gradient and momentum entries below 1e-20 are flushed to zero (denormals
 * slowed the products 50x). loss [nl] (may be NULL) gets each loss before the step. scratch holds
 * dinoc_linear_sgd_scratch_floats(B, D, K, nl) floats. Allocates nothing. */
size_t dinoc_linear_sgd_scratch_floats(int B, int D, int K, int nl);
void   dinoc_linear_sgd_step(float *w, float *b, float *mw, float *mb, const float *x,
                             const int32_t *y, int B, int D, int K, int nl, const float *lr,
                             float momentum, float *scratch, double *loss);

#endif
