/* multicrop.h: DINO's multi-crop augmentation (DataAugmentationDINO, reference dino_dinov2.md 2.2)
 * as a loader transform (src/data/multicrop.c). Each source image gives n_global crops of
 * global_size and n_local crops of local_size, every crop with its own random RandomResizedCrop
 * (bicubic), flip, colour jitter (random op order), grayscale, Gaussian blur, solarisation, then
 * ToTensor + Normalize. Pixel work follows PIL on 8-bit images (what torchvision does on PIL
 * images), so each op is checked against PIL with fixed parameters (tests/test_multicrop.c).
 *
 * Deterministic for the item's rng (the loader seeds it from seed, epoch and index), so a batch
 * does not depend on the number of worker threads. */
#ifndef DINOC_MULTICROP_H
#define DINOC_MULTICROP_H

#include "../internal.h"

/* Per-crop-kind probabilities: index 0 = first global crop, 1 = second (and later) global crops,
 * 2 = local crops. */
typedef struct {
    int   n_global, n_local;        /* 2, 8 */
    int   global_size, local_size;  /* output sides: 224, 96 */
    float global_scale[2];          /* RandomResizedCrop area fraction: 0.4, 1.0 */
    float local_scale[2];           /* 0.05, 0.4 */
    float ratio[2];                 /* aspect ratio range, sampled log-uniform: 3/4, 4/3 */
    float flip_p;                   /* 0.5 */
    float jitter_p;                 /* 0.8: apply ColorJitter with this probability */
    float brightness, contrast, saturation, hue; /* 0.4, 0.4, 0.2, 0.1 */
    float gray_p;                   /* 0.2 */
    float blur_p[3];                /* 1.0, 0.1, 0.5 */
    float blur_sigma[2];            /* PIL GaussianBlur radius ~ U(0.1, 2.0) */
    float solarize_p[3];            /* 0, 0.2, 0 (threshold 128) */
    int   channels;                 /* output channels: 3, or 1 for grey data (Fashion-MNIST) */
    float mean[3], std[3];          /* Normalize */
} dinoc_multicrop_config;

/* DINO's defaults (224 / 96 px, 2 + 8 crops, ImageNet mean/std, 3 channels). */
dinoc_multicrop_config dinoc_multicrop_default(void);
/* DINOC_ERR_ARG naming the field for counts < 0 (n_global < 1), sizes < 1, scales outside (0, 1]
 * or min > max, ratios <= 0, probabilities outside [0, 1], channels not 1 or 3, std <= 0. */
dinoc_status dinoc_multicrop_check(const dinoc_multicrop_config *c);
/* Floats per item: n_global * C * G * G + n_local * C * L * L. */
size_t dinoc_multicrop_floats(const dinoc_multicrop_config *c);
/* A dinoc_transform_fn (data.h): user is a const dinoc_multicrop_config *. out holds the crops one
 * after another: global 0, global 1, ..., local 0, local 1, ... each [C, size, size]. The source
 * may have 1 or 3 channels; a grey source feeds every output channel, and a 3-channel output of a
 * 1-channel config is averaged as PIL's convert("L") does (L = (R*299 + G*587 + B*114) / 1000). */
dinoc_status dinoc_multicrop_transform(float *out, const dinoc_image *img, dinoc_rng *rng, void *user);

#endif
