/* multicrop.c: DINO's multi-crop augmentation (DataAugmentationDINO of facebookresearch/dino
 * main_dino.py; reference dino_dinov2.md 2.2) on 8-bit images, reproducing what torchvision 0.14
 * does on PIL 9.4 images bit for bit. Tested by tests/test_multicrop.c against PIL outputs written
 * by tests/py/gen_multicrop.py, plus sampling statistics and determinism.
 *
 * One crop = sample (dinoc_mc_sample: every random choice, from the crop's own rng) + apply
 * (dinoc_mc_apply: pixels). The PIL facts each op follows:
 * - RandomResizedCrop: img.crop(box).resize((S, S), BICUBIC) (dinoc_image_resize_region).
 * - ImageEnhance.{Brightness, Contrast, Color} = Image.blend(degenerate, img, factor), and
 *   ImagingBlend computes in float: out = (UINT8)(in1 + alpha * (in2 - in1)) (alpha is the factor
 *   cast to float), truncated, with clipping to [0, 255] only when alpha is outside [0, 1].
 *   Degenerates: black; the constant int(mean(L) + 0.5) (ImageStat's mean of the L histogram);
 *   the L conversion of the image.
 * - convert("L"): L = (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16 (Convert.c's L24 with
 *   rounding; checked equal to PIL for all 2^24 colours).
 * - adjust_hue (torchvision F_pil): convert("HSV"), H += uint8(hue * 255) with uint8 wraparound
 *   (numpy truncates the float toward zero, then wraps), convert back. Convert.c's rgb2hsv/hsv2rgb
 *   mix float variables with double constants; the expressions below keep their exact types.
 *   For L images torchvision returns the image unchanged (and Color is an identity).
 * - GaussianBlur(radius): BoxBlur.c's extended box blur (Gwosdek et al.), 3 passes horizontally
 *   then 3 vertically, each pass rounding to 8 bits; box radius from the float formula of
 *   _gaussian_blur_radius; weights in 24-bit fixed point; edges clamped.
 * - Solarize: v >= 128 -> 255 - v. ToTensor: float(v) / 255 (a division); Normalize: (x - m) / s.
 *
 * Channels: the work is done on 1 channel when the source or the configured output is grey (a grey
 * source as RGB goes through every op unchanged as three equal channels: L of (v, v, v) is v, its
 * saturation is 0, so hue/saturation/grayscale are identities), else on 3. */
#include "multicrop.h"

#include <math.h>
#include <string.h>

/* ---- config ---------------------------------------------------------------------------------- */

dinoc_multicrop_config dinoc_multicrop_default(void) {
    dinoc_multicrop_config c = {
        .n_global     = 2,
        .n_local      = 8,
        .global_size  = 224,
        .local_size   = 96,
        .global_scale = {0.4f, 1.0f},
        .local_scale  = {0.05f, 0.4f},
        .ratio        = {3.0f / 4.0f, 4.0f / 3.0f},
        .flip_p       = 0.5f,
        .jitter_p     = 0.8f,
        .brightness   = 0.4f,
        .contrast     = 0.4f,
        .saturation   = 0.2f,
        .hue          = 0.1f,
        .gray_p       = 0.2f,
        .blur_p       = {1.0f, 0.1f, 0.5f},
        .blur_sigma   = {0.1f, 2.0f},
        .solarize_p   = {0.0f, 0.2f, 0.0f},
        .channels     = 3,
        .mean         = {0.485f, 0.456f, 0.406f},
        .std          = {0.229f, 0.224f, 0.225f},
    };
    return c;
}

#define CROP_SIDE_MAX 8192 /* bounds size * size * 3 far below int overflow */

static dinoc_status check_prob(float p, const char *name) {
    if (!(p >= 0.0f && p <= 1.0f))
        return dinoc_fail(DINOC_ERR_ARG, "multicrop config: %s = %g is not a probability in [0, 1]",
                          name, p);
    return DINOC_OK;
}

static dinoc_status check_range(const float r[2], const char *name, int upto_one) {
    if (!(r[0] > 0.0f && r[0] <= r[1] && isfinite(r[1]) && (!upto_one || r[1] <= 1.0f)))
        return dinoc_fail(DINOC_ERR_ARG, "multicrop config: %s = [%g, %g]: need 0 < min <= max%s",
                          name, r[0], r[1], upto_one ? " <= 1" : "");
    return DINOC_OK;
}

dinoc_status dinoc_multicrop_check(const dinoc_multicrop_config *c) {
    if (!c) return dinoc_fail(DINOC_ERR_ARG, "multicrop config is NULL");
    if (c->n_global < 1)
        return dinoc_fail(DINOC_ERR_ARG, "multicrop config: n_global = %d (need >= 1)",
                          c->n_global);
    if (c->n_local < 0)
        return dinoc_fail(DINOC_ERR_ARG, "multicrop config: n_local = %d (need >= 0)", c->n_local);
    if (c->global_size < 1 || c->global_size > CROP_SIDE_MAX)
        return dinoc_fail(DINOC_ERR_ARG, "multicrop config: global_size = %d (need 1..%d)",
                          c->global_size, CROP_SIDE_MAX);
    if (c->local_size < 1 || c->local_size > CROP_SIDE_MAX)
        return dinoc_fail(DINOC_ERR_ARG, "multicrop config: local_size = %d (need 1..%d)",
                          c->local_size, CROP_SIDE_MAX);
    dinoc_status s;
    if ((s = check_range(c->global_scale, "global_scale", 1))) return s;
    if ((s = check_range(c->local_scale, "local_scale", 1))) return s;
    if ((s = check_range(c->ratio, "ratio", 0))) return s;
    if ((s = check_prob(c->flip_p, "flip_p"))) return s;
    if ((s = check_prob(c->jitter_p, "jitter_p"))) return s;
    if ((s = check_prob(c->gray_p, "gray_p"))) return s;
    static const char *const blur_names[3] = {"blur_p[0]", "blur_p[1]", "blur_p[2]"};
    static const char *const sol_names[3]  = {"solarize_p[0]", "solarize_p[1]", "solarize_p[2]"};
    for (int k = 0; k < 3; k++) {
        if ((s = check_prob(c->blur_p[k], blur_names[k]))) return s;
        if ((s = check_prob(c->solarize_p[k], sol_names[k]))) return s;
    }
    const float       jit[3]   = {c->brightness, c->contrast, c->saturation};
    const char *const jname[3] = {"brightness", "contrast", "saturation"};
    for (int k = 0; k < 3; k++)
        if (!(jit[k] >= 0.0f && isfinite(jit[k])))
            return dinoc_fail(DINOC_ERR_ARG, "multicrop config: %s = %g (need a finite value >= 0)",
                              jname[k], jit[k]);
    if (!(c->hue >= 0.0f && c->hue <= 0.5f))
        return dinoc_fail(DINOC_ERR_ARG, "multicrop config: hue = %g (need 0..0.5)", c->hue);
    if (!(c->blur_sigma[0] >= 0.0f && c->blur_sigma[0] <= c->blur_sigma[1] &&
          c->blur_sigma[1] <= 1000.0f))
        return dinoc_fail(DINOC_ERR_ARG,
                          "multicrop config: blur_sigma = [%g, %g]: need 0 <= min <= max <= 1000",
                          c->blur_sigma[0], c->blur_sigma[1]);
    if (c->channels != 1 && c->channels != 3)
        return dinoc_fail(DINOC_ERR_ARG, "multicrop config: channels = %d (need 1 or 3)",
                          c->channels);
    for (int k = 0; k < c->channels; k++) {
        if (!isfinite(c->mean[k]))
            return dinoc_fail(DINOC_ERR_ARG, "multicrop config: mean[%d] = %g is not finite", k,
                              c->mean[k]);
        if (!(c->std[k] > 0.0f && isfinite(c->std[k])))
            return dinoc_fail(DINOC_ERR_ARG, "multicrop config: std[%d] = %g (need > 0)", k,
                              c->std[k]);
    }
    return DINOC_OK;
}

size_t dinoc_multicrop_floats(const dinoc_multicrop_config *c) {
    size_t C = (size_t)c->channels, G = (size_t)c->global_size, L = (size_t)c->local_size;
    return (size_t)c->n_global * C * G * G + (size_t)c->n_local * C * L * L;
}

/* ---- sampling -------------------------------------------------------------------------------- */

static float uniform(dinoc_rng *r, float lo, float hi) {
    return lo + (hi - lo) * dinoc_rng_uniform(r);
}

/* Uniform integer in [0, n) (the modulo bias is below n / 2^64). */
static int randint(dinoc_rng *r, int n) { return (int)(dinoc_rng_u64(r) % (uint64_t)n); }

void dinoc_mc_rrc_params(int *top, int *left, int *height, int *width, int src_w, int src_h,
                         const float scale[2], const float ratio[2], dinoc_rng *rng) {
    double area = (double)src_w * src_h;
    double lr0 = log(ratio[0]), lr1 = log(ratio[1]);
    for (int t = 0; t < 10; t++) {
        double target = area * uniform(rng, scale[0], scale[1]);
        double ar     = exp(lr0 + (lr1 - lr0) * dinoc_rng_uniform(rng));
        /* nearbyint in the default rounding mode: half to even, as Python's round */
        int w = (int)nearbyint(sqrt(target * ar));
        int h = (int)nearbyint(sqrt(target / ar));
        if (w > 0 && w <= src_w && h > 0 && h <= src_h) {
            *top    = randint(rng, src_h - h + 1);
            *left   = randint(rng, src_w - w + 1);
            *height = h;
            *width  = w;
            return;
        }
    }
    /* Fallback: a center crop, the ratio clamped to the range. */
    double in_ratio = (double)src_w / src_h;
    int    w = src_w, h = src_h;
    if (in_ratio < ratio[0])
        h = (int)nearbyint(w / (double)ratio[0]);
    else if (in_ratio > ratio[1])
        w = (int)nearbyint(h * (double)ratio[1]);
    /* torchvision could ask for an empty crop on a 1-pixel-thin image; keep at least one pixel. */
    if (h < 1) h = 1;
    if (w < 1) w = 1;
    *height = h;
    *width  = w;
    *top    = (src_h - h) / 2;
    *left   = (src_w - w) / 2;
}

void dinoc_mc_sample(dinoc_mc_crop *p, const dinoc_multicrop_config *c, int kind, int src_w,
                     int src_h, dinoc_rng *rng) {
    memset(p, 0, sizeof *p);
    int global = kind != DINOC_MC_LOCAL;
    dinoc_mc_rrc_params(&p->top, &p->left, &p->height, &p->width, src_w, src_h,
                        global ? c->global_scale : c->local_scale, c->ratio, rng);
    p->size = global ? c->global_size : c->local_size;
    /* Everything below is drawn whether used or not: a fixed number of draws per crop. */
    p->flip   = dinoc_rng_uniform(rng) < c->flip_p;
    p->jitter = dinoc_rng_uniform(rng) < c->jitter_p;
    int perm[4] = {0, 1, 2, 3};
    for (int i = 3; i > 0; i--) { /* Fisher-Yates: a uniform permutation (torch.randperm(4)) */
        int j   = randint(rng, i + 1);
        int t   = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    /* torchvision's ranges: [max(0, 1 - x), 1 + x] for the factors, [-h, h] for the hue. */
    const float strength[3] = {c->brightness, c->contrast, c->saturation};
    for (int k = 0; k < 3; k++)
        p->factor[k] = uniform(rng, fmaxf(0.0f, 1.0f - strength[k]), 1.0f + strength[k]);
    p->factor[3] = uniform(rng, -c->hue, c->hue);
    /* An op of strength 0 is None in torchvision: skipped, not applied with factor 1 (which for
     * hue would still round-trip through HSV). */
    const float all[4] = {c->brightness, c->contrast, c->saturation, c->hue};
    for (int i = 0; i < 4; i++) p->order[i] = all[perm[i]] > 0.0f ? perm[i] : -1;
    p->gray        = dinoc_rng_uniform(rng) < c->gray_p;
    p->blur        = dinoc_rng_uniform(rng) < c->blur_p[kind];
    p->blur_radius = uniform(rng, c->blur_sigma[0], c->blur_sigma[1]);
    p->solarize    = dinoc_rng_uniform(rng) < c->solarize_p[kind];
}

/* ---- pixel ops ------------------------------------------------------------------------------- */

static size_t npix(const dinoc_image *img) { return (size_t)img->w * (size_t)img->h; }

/* PIL's convert("L"). */
static inline uint8_t luma(const uint8_t *px) {
    return (uint8_t)((px[0] * 19595 + px[1] * 38470 + px[2] * 7471 + 0x8000) >> 16);
}

/* ImagingBlend for one value: in1 = degenerate, in2 = image, alpha = factor (float). */
static inline uint8_t blend(int in1, int in2, float alpha) {
    if (alpha >= 0 && alpha <= 1.0) return (uint8_t)(in1 + alpha * (in2 - in1));
    float t = (float)(in1 + alpha * (in2 - in1));
    return t <= 0.0 ? 0 : t >= 255.0 ? 255 : (uint8_t)t;
}

void dinoc_mc_flip(dinoc_image *img) {
    int C = img->c;
    for (int y = 0; y < img->h; y++) {
        uint8_t *row = img->data + (size_t)y * img->w * C;
        if (C == 1) {
            for (int a = 0, b = img->w - 1; a < b; a++, b--) {
                uint8_t t = row[a];
                row[a]    = row[b];
                row[b]    = t;
            }
            continue;
        }
        for (int a = 0, b = img->w - 1; a < b; a++, b--)
            for (int k = 0; k < C; k++) {
                uint8_t t      = row[a * C + k];
                row[a * C + k] = row[b * C + k];
                row[b * C + k] = t;
            }
    }
}

/* blend(deg, v, f) over the image when the degenerate is a constant: through a 256-entry table
 * when the image has more values than that. */
static void blend_const(dinoc_image *img, int deg, float f) {
    size_t n = npix(img) * (size_t)img->c;
    if (n <= 512) {
        for (size_t i = 0; i < n; i++) img->data[i] = blend(deg, img->data[i], f);
        return;
    }
    uint8_t lut[256];
    for (int v = 0; v < 256; v++) lut[v] = blend(deg, v, f);
    for (size_t i = 0; i < n; i++) img->data[i] = lut[img->data[i]];
}

void dinoc_mc_brightness(dinoc_image *img, float factor) { blend_const(img, 0, factor); }

void dinoc_mc_contrast(dinoc_image *img, float factor) {
    /* ImageStat's mean of the L histogram: an exact integer sum divided in double. */
    size_t   n   = npix(img);
    uint64_t sum = 0;
    if (img->c == 3)
        for (size_t i = 0; i < n; i++) sum += luma(img->data + 3 * i);
    else
        for (size_t i = 0; i < n; i++) sum += img->data[i];
    int mean = (int)((double)sum / (double)n + 0.5);
    blend_const(img, mean, factor);
}

void dinoc_mc_saturation(dinoc_image *img, float factor) {
    if (img->c != 3) return; /* L -> L -> blend of an image with itself */
    size_t n = npix(img);
    for (size_t i = 0; i < n; i++) {
        uint8_t *px = img->data + 3 * i;
        int      l  = luma(px);
        px[0]       = blend(l, px[0], factor);
        px[1]       = blend(l, px[1], factor);
        px[2]       = blend(l, px[2], factor);
    }
}

static inline int clip8(int v) { return v <= 0 ? 0 : v < 256 ? v : 255; }

/* Convert.c rgb2hsv_row. The float/double mix is Pillow's: h = 2.0 + rc - bc is computed in double
 * and stored in a float, and so on. */
static inline void rgb_to_hsv(const uint8_t *in, uint8_t *oh, uint8_t *os, uint8_t *ov) {
    uint8_t r = in[0], g = in[1], b = in[2];
    uint8_t maxc = r > g ? (r > b ? r : b) : (g > b ? g : b);
    uint8_t minc = r < g ? (r < b ? r : b) : (g < b ? g : b);
    *ov          = maxc;
    if (minc == maxc) {
        *oh = 0;
        *os = 0;
        return;
    }
    float cr = (float)(maxc - minc);
    float s  = cr / (float)maxc;
    float rc = ((float)(maxc - r)) / cr;
    float gc = ((float)(maxc - g)) / cr;
    float bc = ((float)(maxc - b)) / cr;
    float h;
    if (r == maxc)
        h = bc - gc;
    else if (g == maxc)
        h = 2.0 + rc - bc;
    else
        h = 4.0 + gc - rc;
    h   = fmod((h / 6.0 + 1.0), 1.0);
    *oh = (uint8_t)clip8((int)(h * 255.0));
    *os = (uint8_t)clip8((int)(s * 255.0));
}

/* Convert.c hsv2rgb (round() is C's: half away from zero). */
static inline void hsv_to_rgb(uint8_t h, uint8_t s, uint8_t v, uint8_t *out) {
    if (s == 0) {
        out[0] = out[1] = out[2] = v;
        return;
    }
    int     i  = (int)floor((float)h * 6.0 / 255.0);
    float   f  = (float)h * 6.0 / 255.0 - (float)i;
    float   fs = ((float)s) / 255.0;
    uint8_t up = (uint8_t)clip8((int)round((float)v * (1.0 - fs)));
    uint8_t uq = (uint8_t)clip8((int)round((float)v * (1.0 - fs * f)));
    uint8_t ut = (uint8_t)clip8((int)round((float)v * (1.0 - fs * (1.0 - f))));
    switch (i % 6) {
    case 0: out[0] = v, out[1] = ut, out[2] = up; break;
    case 1: out[0] = uq, out[1] = v, out[2] = up; break;
    case 2: out[0] = up, out[1] = v, out[2] = ut; break;
    case 3: out[0] = up, out[1] = uq, out[2] = v; break;
    case 4: out[0] = ut, out[1] = up, out[2] = v; break;
    default: out[0] = v, out[1] = up, out[2] = uq; break;
    }
}

void dinoc_mc_hue(dinoc_image *img, float shift) {
    if (img->c != 3) return;
    /* np.uint8(hue * 255): the double truncated toward zero, then wrapped modulo 256. */
    uint8_t dh = (uint8_t)((int)((double)shift * 255) & 255);
    size_t  n  = npix(img);
    for (size_t i = 0; i < n; i++) {
        uint8_t *px = img->data + 3 * i, h, s, v;
        rgb_to_hsv(px, &h, &s, &v);
        hsv_to_rgb((uint8_t)(h + dh), s, v, px);
    }
}

void dinoc_mc_color_jitter(dinoc_image *img, const int order[4], const float factor[4]) {
    for (int k = 0; k < 4; k++) {
        switch (order[k]) {
        case DINOC_MC_BRIGHTNESS: dinoc_mc_brightness(img, factor[0]); break;
        case DINOC_MC_CONTRAST: dinoc_mc_contrast(img, factor[1]); break;
        case DINOC_MC_SATURATION: dinoc_mc_saturation(img, factor[2]); break;
        case DINOC_MC_HUE: dinoc_mc_hue(img, factor[3]); break;
        default: break; /* -1: skipped */
        }
    }
}

void dinoc_mc_grayscale(dinoc_image *img) {
    if (img->c != 3) return;
    size_t n = npix(img);
    for (size_t i = 0; i < n; i++) {
        uint8_t *px = img->data + 3 * i;
        px[0] = px[1] = px[2] = luma(px);
    }
}

void dinoc_mc_solarize(dinoc_image *img) {
    size_t n = npix(img) * (size_t)img->c;
    for (size_t i = 0; i < n; i++)
        if (img->data[i] >= 128) img->data[i] = (uint8_t)(255 - img->data[i]);
}

/* ---- Gaussian blur (Pillow 9.4 BoxBlur.c) ---------------------------------------------------- */

/* _gaussian_blur_radius(radius, 3): float variables, double sqrt/floor, as written there. */
static float box_radius(float radius) {
    const int passes = 3;
    float     sigma2, L, l, a;
    sigma2 = radius * radius / passes;
    L      = sqrt(12.0 * sigma2 + 1.0);
    l      = floor((L - 1.0) / 2.0);
    a      = (2 * l + 1) * (l * (l + 1) - 3 * sigma2);
    a /= 6 * (sigma2 - (l + 1) * (l + 1));
    return l + a;
}

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* One extended-box pass along n elements, each a vector of `lanes` independent bytes (element x,
 * lane l at x * lanes + l): out[x] = (ww * sum_{|k| <= r} in[x + k] + fw * (in[x - r - 1] +
 * in[x + r + 1]) + 2^23) >> 24, indices clamped to [0, n - 1]. That is what ImagingLineBoxBlur8/32
 * compute with their edge cases unrolled; the integer sums are exact, so the order does not
 * matter. acc holds `lanes` sums; the lane loops are contiguous (vectorised). */
static void box_pass(uint8_t *restrict dst, const uint8_t *restrict src, int n, int lanes, int r,
                     uint32_t ww, uint32_t fw, uint32_t *restrict acc) {
    int    last = n - 1;
    size_t L    = (size_t)lanes;
    for (size_t l = 0; l < L; l++) acc[l] = (uint32_t)src[l] * (uint32_t)(r + 1);
    for (int k = 1; k <= r; k++) {
        const uint8_t *e = src + (size_t)clampi(k, 0, last) * L;
        for (size_t l = 0; l < L; l++) acc[l] += e[l];
    }
    for (int x = 0; x < n; x++) {
        const uint8_t *fl = src + (size_t)clampi(x - r - 1, 0, last) * L;
        const uint8_t *fr = src + (size_t)clampi(x + r + 1, 0, last) * L;
        const uint8_t *sl = src + (size_t)clampi(x - r, 0, last) * L;
        uint8_t       *o  = dst + (size_t)x * L;
        for (size_t l = 0; l < L; l++) {
            uint32_t bulk = acc[l] * ww + ((uint32_t)fl[l] + fr[l]) * fw;
            o[l]          = (uint8_t)((bulk + (1u << 23)) >> 24);
            acc[l] += (uint32_t)fr[l] - sl[l]; /* the window of x + 1 (wraps back exactly) */
        }
    }
}

/* dst [W, H, C] = src [H, W, C] with rows and columns swapped (pixels of C bytes kept). */
static void transpose(uint8_t *restrict dst, const uint8_t *restrict src, int W, int H, int C) {
    if (C == 1) { /* spelled out: a C-byte inner loop becomes a memcpy call per pixel */
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) dst[(size_t)x * H + y] = src[(size_t)y * W + x];
        return;
    }
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const uint8_t *p = src + ((size_t)y * W + x) * 3;
            uint8_t       *q = dst + ((size_t)x * H + y) * 3;
            q[0] = p[0], q[1] = p[1], q[2] = p[2];
        }
}

size_t dinoc_mc_blur_scratch(int w, int h, int c) {
    size_t side = (size_t)(w > h ? w : h);
    return sizeof(uint32_t) * side * c + 2 * (size_t)w * h * c;
}

void dinoc_mc_gaussian_blur(dinoc_image *img, float radius, uint8_t *scratch) {
    float fr = box_radius(radius);
    int   r  = (int)fr;
    /* ImagingHorizontalBoxBlur: a float division truncated to an integer weight. */
    uint32_t ww = (uint32_t)((uint32_t)(1 << 24) / (fr * 2 + 1));
    uint32_t fw = ((1 << 24) - (r * 2 + 1) * ww) / 2;
    int      W = img->w, H = img->h, C = img->c;
    size_t   side = (size_t)(W > H ? W : H);
    uint32_t *acc = (uint32_t *)(void *)scratch; /* [side * C] sums, then two image buffers */
    uint8_t  *a   = scratch + sizeof(uint32_t) * side * C, *b = a + (size_t)W * H * C;
    /* Three passes along x, then three along y, each rounding to 8 bits (Pillow's order). Along x
     * the image is transposed first (as Pillow does for y), so that every pass runs over whole
     * rows of lanes: H * C lanes for x, W * C for y. */
    transpose(a, img->data, W, H, C);
    box_pass(b, a, W, H * C, r, ww, fw, acc);
    box_pass(a, b, W, H * C, r, ww, fw, acc);
    box_pass(b, a, W, H * C, r, ww, fw, acc);
    transpose(img->data, b, H, W, C);
    box_pass(a, img->data, H, W * C, r, ww, fw, acc);
    box_pass(b, a, H, W * C, r, ww, fw, acc);
    box_pass(img->data, b, H, W * C, r, ww, fw, acc);
}

/* ---- crop, tensor, one whole crop ------------------------------------------------------------ */

static int box_inside(const dinoc_image *src, int top, int left, int height, int width) {
    return top >= 0 && left >= 0 && height >= 1 && width >= 1 && top <= src->h - height &&
           left <= src->w - width;
}

/* Copies the box out of src into dst (width x height x out_c); out_c = 1 from a 3-channel source
 * converts to L on the way. */
static void copy_box(uint8_t *dst, const dinoc_image *src, int top, int left, int height, int width,
                     int out_c) {
    int C = src->c;
    for (int y = 0; y < height; y++) {
        const uint8_t *in = src->data + ((size_t)(top + y) * src->w + left) * C;
        uint8_t       *o  = dst + (size_t)y * width * out_c;
        if (out_c == C)
            memcpy(o, in, (size_t)width * C);
        else
            for (int x = 0; x < width; x++) o[x] = luma(in + 3 * x);
    }
}

dinoc_status dinoc_mc_resized_crop(uint8_t *dst, const dinoc_image *src, int top, int left,
                                   int height, int width, int size) {
    if (!src || !src->data || src->c < 1 || src->c > 4 ||
        !box_inside(src, top, left, height, width))
        return dinoc_fail(DINOC_ERR_ARG, "multicrop: crop box %d,%d %dx%d outside the image",
                          left, top, width, height);
    uint8_t *tmp = malloc((size_t)width * height * src->c);
    if (!tmp)
        return dinoc_fail(DINOC_ERR_NOMEM, "multicrop: cannot allocate a %dx%d crop", width,
                          height);
    copy_box(tmp, src, top, left, height, width, src->c);
    dinoc_image  crop = {width, height, src->c, tmp};
    dinoc_status s    = dinoc_image_resize_region(dst, &crop, size, size, DINOC_RESAMPLE_BICUBIC, 0,
                                                  0, size, size);
    free(tmp);
    return s;
}

void dinoc_mc_to_tensor(float *out, const dinoc_image *img, int out_c, const float *mean,
                        const float *std) {
    size_t n = npix(img);
    for (int k = 0; k < out_c; k++) {
        const uint8_t *in   = img->data + (img->c == 1 ? 0 : k);
        size_t         step = (size_t)img->c;
        float          m = mean[k], s = std[k];
        float         *o = out + (size_t)k * n;
        for (size_t i = 0; i < n; i++) o[i] = ((float)in[i * step] / 255.0f - m) / s;
    }
}

static dinoc_status check_image(const dinoc_image *img) {
    if (!img || !img->data || img->w < 1 || img->h < 1)
        return dinoc_fail(DINOC_ERR_ARG, "multicrop: empty source image");
    if (img->c != 1 && img->c != 3)
        return dinoc_fail(DINOC_ERR_ARG, "multicrop: source image has %d channels (need 1 or 3)",
                          img->c);
    return DINOC_OK;
}

dinoc_status dinoc_mc_apply(float *out, const dinoc_image *src, const dinoc_mc_crop *p,
                            const dinoc_multicrop_config *c) {
    dinoc_status s = check_image(src);
    if (s) return s;
    if (!box_inside(src, p->top, p->left, p->height, p->width))
        return dinoc_fail(DINOC_ERR_ARG, "multicrop: crop box %d,%d %dx%d outside the %dx%d image",
                          p->left, p->top, p->width, p->height, src->w, src->h);
    if (p->size < 1 || p->size > CROP_SIDE_MAX)
        return dinoc_fail(DINOC_ERR_ARG, "multicrop: crop size %d (need 1..%d)", p->size,
                          CROP_SIDE_MAX);
    int    C     = (c->channels == 1 || src->c == 1) ? 1 : 3; /* working channels */
    int    S     = p->size;
    size_t nbox  = (size_t)p->width * p->height * C;
    size_t nimg  = (size_t)S * S * C;
    size_t nblur = dinoc_mc_blur_scratch(S, S, C);
    /* One block per crop: [box | image | blur scratch]; the blur scratch holds uint32 sums, so it
     * starts at a multiple of 8. */
    size_t   off_img = nbox, off_blur = (nbox + nimg + 7) & ~(size_t)7;
    uint8_t *work = malloc(off_blur + nblur);
    if (!work)
        return dinoc_fail(DINOC_ERR_NOMEM, "multicrop: cannot allocate a %dx%d crop workspace", S,
                          S);
    copy_box(work, src, p->top, p->left, p->height, p->width, C);
    dinoc_image box = {p->width, p->height, C, work};
    dinoc_image img = {S, S, C, work + off_img};
    s = dinoc_image_resize_region(img.data, &box, S, S, DINOC_RESAMPLE_BICUBIC, 0, 0, S, S);
    if (s == DINOC_OK) {
        if (p->flip) dinoc_mc_flip(&img);
        if (p->jitter) dinoc_mc_color_jitter(&img, p->order, p->factor);
        if (p->gray) dinoc_mc_grayscale(&img);
        if (p->blur) dinoc_mc_gaussian_blur(&img, p->blur_radius, work + off_blur);
        if (p->solarize) dinoc_mc_solarize(&img);
        dinoc_mc_to_tensor(out, &img, c->channels, c->mean, c->std);
    }
    free(work);
    return s;
}

/* ---- the loader transform -------------------------------------------------------------------- */

dinoc_status dinoc_multicrop_transform(float *out, const dinoc_image *img, dinoc_rng *rng,
                                       void *user) {
    const dinoc_multicrop_config *c = user;
    dinoc_status                  s = dinoc_multicrop_check(c);
    if (s || (s = check_image(img))) return s;
    int n = c->n_global + c->n_local;
    for (int k = 0; k < n; k++) {
        int kind = k == 0 ? DINOC_MC_GLOBAL0 : k < c->n_global ? DINOC_MC_GLOBAL1 : DINOC_MC_LOCAL;
        /* Each crop draws from its own generator, seeded by one draw of the item's: a crop's
         * parameters do not depend on how many draws the crops before it made. */
        dinoc_rng cr;
        dinoc_rng_seed(&cr, dinoc_rng_u64(rng));
        dinoc_mc_crop p;
        dinoc_mc_sample(&p, c, kind, img->w, img->h, &cr);
        if ((s = dinoc_mc_apply(out, img, &p, c))) return s;
        out += (size_t)c->channels * p.size * p.size;
    }
    return DINOC_OK;
}
