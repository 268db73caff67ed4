/* dense.h: dense (per-patch) features of frozen encoders (src/eval/), reference dino_dinov2.md 4.4:
 *   pca.c      PCA of patch tokens (subspace iteration on the covariance) and DINOv2's PCA
 *              picture: foreground from the first component, a second PCA on the foreground
 *              patches, three components as RGB. Used by `dinoc pca`.
 *   segment.c  segmentation data (the shapes layout, Fashion-MNIST foreground masks), patch
 *              features with per-patch targets, a linear per-patch probe (BNHead-like: features
 *              standardised, then a linear softmax layer), bilinear upsampling of its logits to
 *              pixels, mIoU and pixel accuracy. Used by `dinoc eval segment`.
 * Library code: nothing prints; failures return a status with dinoc_last_error() set.
 * Tested by tests/test_dense.c (fixtures from tests/py/gen_dense.py) and tests/cli_dense_test.sh.
 * Choices and measured figures: docs/dense.md. */
#ifndef DINOC_DENSE_H
#define DINOC_DENSE_H

#include "eval.h"

/* ---- PCA (pca.c) -------------------------------------------------------------------------------- */

/* Principal components of the n rows of X [n, D]: mean [D], comp [k, D] (unit rows, by decreasing
 * variance), var [k] the variance along each (eigenvalues of the covariance with divisor n - 1,
 * as numpy/sklearn), *total_var its trace (var / total_var = sklearn's explained_variance_ratio_).
 * Signs: each component's entry of largest magnitude is positive (lowest index on ties), so the
 * result is deterministic. Needs n >= 2, 1 <= k <= D. Subspace iteration with k + 8 vectors in
 * double, stopped when every residual |C v - var v| <= 1e-7 var_0 (at most 300 rounds; a warning
 * is logged if that is reached). Every output is required. */
dinoc_status dinoc_pca_fit(const float *X, int64_t n, int D, int k, float *mean, float *comp,
                           double *var, double *total_var);
/* scores [n, k] = (X - mean) comp^T. */
void dinoc_pca_project(float *scores, const float *X, int64_t n, int D, int k, const float *mean,
                       const float *comp);

typedef struct {
    int   foreground; /* 1: split foreground / background on the first component; 0: all patches */
    float threshold;  /* foreground = score on the first component > threshold (scores are centred) */
    int   sign;       /* 0: orient the first component so the foreground is the minority (objects
                         usually cover less than half of a picture); 1: keep the fitted sign; -1: flip */
} dinoc_pca_rgb_config;

dinoc_pca_rgb_config dinoc_pca_rgb_default(void); /* {1, 0, 0} */

/* DINOv2's PCA picture of n patch tokens X [n, D] (those of several images stacked: one PCA for
 * all): foreground split (above), a second PCA fitted on the foreground rows only, their 3 scores
 * min-max scaled per channel over the foreground to 0..255 into rgb [n, 3]; background rows black.
 * fg [n] (may be NULL) gets 1 for foreground rows. Fewer than 2 foreground rows: every row is used
 * (a warning is logged). *n_fg (may be NULL) gets the foreground count used. D >= 3, n >= 2. */
dinoc_status dinoc_pca_rgb(uint8_t *rgb, uint8_t *fg, int64_t *n_fg, const float *X, int64_t n,
                           int D, const dinoc_pca_rgb_config *cfg);

/* ---- segmentation data (segment.c) -------------------------------------------------------------- */

/* Images with per-pixel class masks (value = class, 0 background). */
typedef struct dinoc_segset dinoc_segset;

/* The shapes layout: dir/classes.txt (line i names mask value i), dir/{train,test}/images/NAME.png
 * (RGB) and dir/{train,test}/masks/ with a file of the same name each (8-bit grey, value = class).
 * Images are sorted by name. */
dinoc_status dinoc_segset_open_shapes(dinoc_segset **out, const char *dir, int train);
/* Fashion-MNIST (dinoc_dataset_idx_open's dir rules) with foreground masks made on the fly:
 * pixel > 0.25 * 255 gets label + 1, the rest 0: 11 classes, "background" first. */
dinoc_status dinoc_segset_open_fashion(dinoc_segset **out, const char *dir, int train);
void         dinoc_segset_free(dinoc_segset *s);
int64_t      dinoc_segset_size(const dinoc_segset *s);
int          dinoc_segset_num_classes(const dinoc_segset *s);
const char  *dinoc_segset_class_name(const dinoc_segset *s, int k);
/* Item i: the image (8-bit, interleaved) and its mask [h * w] (malloc'ed; img->w x img->h; values
 * checked < num_classes, else DINOC_ERR_FORMAT naming the file). Thread-safe. */
dinoc_status dinoc_segset_get(const dinoc_segset *s, int64_t i, dinoc_image *img, uint8_t **mask);

/* ---- patch features and targets (segment.c) ----------------------------------------------------- */

typedef struct {
    int n_last_blocks; /* patch tokens of the last n blocks, each through the final LayerNorm,
                          concatenated (DINOv2's "ms" head takes 4); 1: the normed output */
    int size;          /* every image is resized to size x size (a multiple of the patch) */
    int batch;         /* images per forward */
} dinoc_seg_spec;

typedef struct {
    int64_t  n;          /* images */
    int      gh, gw;     /* patch grid: size / patch */
    int      dim;        /* feature width: n_last_blocks * D */
    float   *feats;      /* [n * gh * gw, dim], image-major, patches row-major */
    int32_t *labels;     /* [n * gh * gw] majority class of each patch's pixels */
    uint8_t *masks;      /* all pixel masks back to back (keep_masks), else NULL */
    int64_t *mask_off;   /* [n] offset of item i's mask in masks */
    int     *mask_w, *mask_h; /* [n] */
} dinoc_seg_features;

/* Features of items [0, min(limit, size)) (limit <= 0: all) of s: each image resized to
 * spec.size^2 with the model's resample filter, then its rescale and normalise (crops would cut
 * labelled pixels off, so none); decoding runs on the OpenMP threads. progress may be NULL. */
dinoc_status dinoc_seg_extract(const dinoc_model *m, const dinoc_segset *s, dinoc_seg_spec spec,
                               int64_t limit, int keep_masks, dinoc_seg_features *out,
                               void (*progress)(void *user, int64_t done, int64_t total), void *user);
void dinoc_seg_features_free(dinoc_seg_features *f);

/* Per-patch targets: cell (r, c) of a gh x gw grid covers mask rows [r h / gh, (r + 1) h / gh) and
 * columns [c w / gw, (c + 1) w / gw) (at least one pixel); its label is the most frequent class
 * there, ties to the lower class. mask values must be < K. */
void dinoc_seg_patch_labels(int32_t *labels, const uint8_t *mask, int w, int h, int gh, int gw, int K);

/* ---- the probe and its scores (segment.c) ------------------------------------------------------- */

typedef struct {
    const double *lrs;   /* tried side by side (each scaled by min(batch, rows) / 256) */
    int           n_lrs;
    int           epochs, batch;
    double        val_fraction; /* the last images' patches held out to choose the lr */
    uint64_t      seed;
} dinoc_seg_config;

/* lrs {0.03, 0.1, 0.3, 1, 3} (static), 5 epochs, batch 256, val_fraction 0.1, seed 0. */
dinoc_seg_config dinoc_seg_default(void);

/* A linear per-patch classifier on standardised features (BNHead: BatchNorm then a 1x1 conv; at
 * test time BatchNorm applies the training statistics, so it is a fixed standardisation). */
typedef struct {
    int    D, K;
    float *mean, *istd; /* [D]: training mean and 1 / sqrt(var + 1e-5) */
    float *w, *b;       /* [K, D], [K] */
    double lr;          /* the chosen lr (before batch scaling) */
    double val_acc;     /* its held-out patch accuracy */
    double *val_by_lr;  /* [n_lrs] */
} dinoc_seg_head;

/* Fits h on rows X [n, D] with labels y [n] in 0..K-1: SGD momentum 0.9 with a per-iteration
 * cosine (dinoc_linear_sgd_step), each lr of cfg trained on the first rows, scored on the last
 * round(n_img * val_fraction) images' rows (rows_per_image rows each), then the best retrained on
 * every row. rows_per_image = 1 treats rows as images. Deterministic from cfg->seed. */
dinoc_status dinoc_seg_head_fit(dinoc_seg_head *h, const float *X, const int32_t *y, int64_t n,
                                int rows_per_image, int D, int K, const dinoc_seg_config *cfg);
void         dinoc_seg_head_free(dinoc_seg_head *h);
/* Pixel classes pred [H * W] of one image from its patch features [gh * gw, D]: logits per patch,
 * bilinearly upsampled to H x W (dinoc_seg_upsample), argmax (ties to the lower class). scratch
 * holds dinoc_seg_predict_scratch_floats floats. */
size_t dinoc_seg_predict_scratch_floats(const dinoc_seg_head *h, int gh, int gw, int W, int H);
void   dinoc_seg_predict(const dinoc_seg_head *h, const float *feats, int gh, int gw, int W, int H,
                         uint8_t *pred, float *scratch);

/* Bilinear resize of channels-last maps in [ih, iw, C] to out [oh, ow, C] as PyTorch's
 * F.interpolate(mode="bilinear", align_corners=False) (source coordinate (o + 0.5) * in / out - 0.5,
 * clamped at 0; the upper neighbour clamped to the edge). */
void dinoc_seg_upsample(float *out, const float *in, int C, int ih, int iw, int oh, int ow);

/* Confusion counts conf [K, K] (row = truth, column = prediction) += n pixels. Values must be < K. */
void dinoc_seg_confusion_add(int64_t *conf, const uint8_t *truth, const uint8_t *pred, size_t n,
                             int K);
/* From a confusion matrix: iou [K] = TP / (TP + FP + FN), NaN where the union is 0 (a class
 * neither present nor predicted); *miou their mean over classes with union > 0 (NaN if none);
 * *pixel_acc = trace / total. */
void dinoc_seg_scores(const int64_t *conf, int K, double *iou, double *miou, double *pixel_acc);

#endif
