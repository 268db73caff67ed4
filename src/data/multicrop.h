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

/* ---- the pieces, exposed for tests/test_multicrop.c ---------------------------------------------
 * Sampling (rng -> dinoc_mc_crop) is separate from applying (dinoc_mc_crop -> pixels), so the pixel
 * work is checked against PIL with fixed parameters and the sampling with statistics. Images are
 * 8-bit HWC (dinoc_image) with c = 1 (PIL "L") or 3 ("RGB"); the ops work in place. */

/* Which crop: selects the scale range (global/local) and blur_p / solarize_p entries. */
enum { DINOC_MC_GLOBAL0 = 0, DINOC_MC_GLOBAL1 = 1, DINOC_MC_LOCAL = 2 };

/* Colour-jitter ops, numbered as torchvision's ColorJitter numbers them. */
enum { DINOC_MC_BRIGHTNESS = 0, DINOC_MC_CONTRAST = 1, DINOC_MC_SATURATION = 2, DINOC_MC_HUE = 3 };

/* Everything random about one crop. */
typedef struct {
    int   top, left, height, width; /* RandomResizedCrop box in source pixels (torchvision's i,
                                     * j, h, w) */
    int   size;                     /* output side */
    int   flip;                     /* horizontal flip */
    int   jitter;                   /* ColorJitter applied */
    int   order[4];                 /* jitter ops in the order applied; -1 = skipped (strength 0) */
    float factor[4];                /* brightness, contrast, saturation factors; hue [-0.5, 0.5] */
    int   gray;                     /* RandomGrayscale applied */
    int   blur;                     /* GaussianBlur applied, with blur_radius */
    float blur_radius;
    int   solarize;                 /* Solarization applied */
} dinoc_mc_crop;

/* torchvision's RandomResizedCrop.get_params on a src_w x src_h image: up to 10 tries of area
 * fraction ~ U(scale) and log-uniform aspect ratio, w = round(sqrt(area * r)),
 * h = round(sqrt(area / r)) (half to even, as Python's round), accepted if it fits, at a uniform
 * position; otherwise a center crop with the ratio clamped to the range. */
void dinoc_mc_rrc_params(int *top, int *left, int *height, int *width, int src_w, int src_h,
                         const float scale[2], const float ratio[2], dinoc_rng *rng);
/* Draws every parameter of one crop of the given kind (DINOC_MC_*) from rng. */
void dinoc_mc_sample(dinoc_mc_crop *p, const dinoc_multicrop_config *c, int kind, int src_w,
                     int src_h, dinoc_rng *rng);
/* Runs one crop: RandomResizedCrop (crop, then PIL bicubic resize), flip, jitter, grayscale, blur,
 * solarize, ToTensor + Normalize into out [c->channels, size, size]. Allocates its per-crop
 * scratch. The box must lie inside src (DINOC_ERR_ARG otherwise). */
dinoc_status dinoc_mc_apply(float *out, const dinoc_image *src, const dinoc_mc_crop *p,
                            const dinoc_multicrop_config *c);

/* PIL's img.crop((left, top, left + width, top + height)).resize((size, size), BICUBIC) into dst
 * (size * size * src->c bytes). */
dinoc_status dinoc_mc_resized_crop(uint8_t *dst, const dinoc_image *src, int top, int left,
                                   int height, int width, int size);
void dinoc_mc_flip(dinoc_image *img);                     /* FLIP_LEFT_RIGHT */
void dinoc_mc_brightness(dinoc_image *img, float factor); /* ImageEnhance.Brightness */
void dinoc_mc_contrast(dinoc_image *img, float factor);   /* ImageEnhance.Contrast */
void dinoc_mc_saturation(dinoc_image *img, float factor); /* ImageEnhance.Color; c = 1: identity */
void dinoc_mc_hue(dinoc_image *img, float shift);         /* F_pil.adjust_hue; c = 1: identity */
/* The four ops in order[] (entries -1 skipped) with factor[] indexed by op. */
void dinoc_mc_color_jitter(dinoc_image *img, const int order[4], const float factor[4]);
void dinoc_mc_grayscale(dinoc_image *img);                /* convert("L"), kept as c channels */
void dinoc_mc_solarize(dinoc_image *img);                 /* ImageOps.solarize(threshold 128) */
/* ImageFilter.GaussianBlur(radius) of Pillow 9.4; scratch: dinoc_mc_blur_scratch(w, h, c) bytes,
 * 4-byte aligned. */
void dinoc_mc_gaussian_blur(dinoc_image *img, float radius, uint8_t *scratch);
size_t dinoc_mc_blur_scratch(int w, int h, int c);
/* ToTensor + Normalize: out [out_c, h, w] = (v / 255 - mean[k]) / std[k] in float32; a c = 1 image
 * feeds every output channel. */
void dinoc_mc_to_tensor(float *out, const dinoc_image *img, int out_c, const float *mean,
                        const float *std);

#endif
