/* preprocess.c: the image preprocessing of the Hugging Face image processors and torchvision's
 * evaluation transforms (dinoc_preprocess_default, dinoc_preprocess_load, dinoc_preprocess_size,
 * dinoc_preprocess_image).
 *
 * Pipeline, in the order of transformers' BitImageProcessor (DINOv2) and ViTImageProcessor:
 *   convert to RGB -> resize (PIL, 8-bit, src/io/resize.c) -> center crop (8-bit, zero padding)
 *   -> rescale -> normalize -> [3, H, W] float32.
 *
 * Conventions chosen (transformers' rather than torchvision's where they differ):
 * - Shortest-edge resize: short side -> n, long side -> int(n * long / short) (truncation), as
 *   transformers' get_resize_output_image_size(default_to_square=False) and torchvision's Resize.
 * - Center crop: top = floor((h - ch) / 2), left = floor((w - cw) / 2), as transformers'
 *   center_crop. torchvision's CenterCrop uses int(round((h - ch) / 2.0)) with Python's round
 *   half to even, so for odd margins it is one pixel further down/right whenever margin / 2 rounds
 *   up (margin 3 -> 2 vs 1, 7 -> 4 vs 3) and the same otherwise (margin 1 -> 0, 5 -> 2).
 *   Where the crop is larger than the image, transformers pads with zeros: the image sits at
 *   offset ceil((ch - h) / 2) in a zero canvas (per dimension; one dimension may be cropped while
 *   the other is padded). Padding happens on the 8-bit image, so padded pixels normalise to
 *   (0 - mean) / std.
 * - Rescale: transformers computes uint8 -> float64 * rescale_factor -> float32. The struct keeps
 *   rescale_factor as a float, and (float)(1/255) is not 1/255: 126 of the 256 products would
 *   land one float ulp off. So when 1/rescale_factor is an integer k to float precision (the
 *   1/255 of every real config), the double 1.0 / k is used, which is what the JSON held.
 * - Normalize: (x - mean) / std in float32 with mean and std cast to float32 first (numpy in
 *   transformers' normalize). No fused multiply-add: -std=c11 keeps -ffp-contract=off.
 * - Both steps depend only on the 8-bit value and the channel, so they are a 3 x 256 table.
 *
 * Only the part of the resized image that survives the crop is computed (resize.c's window
 * function gives the same bytes as resizing everything and cropping).
 *
 * Tested by tests/test_preprocess.c: size rules, config parsing, and parity with PIL + the
 * transformers pipeline on scikit-image's sample photos (fixtures from tests/py/gen_preprocess.py). */
#include "../internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

/* Bounds on sizes read from a config (a resize target above this is a typo, not a photo). */
#define PP_SIDE_MAX 65535

dinoc_preprocess dinoc_preprocess_default(void) {
    dinoc_preprocess p;
    memset(&p, 0, sizeof p);
    p.do_convert_rgb = 1;
    p.do_resize      = 1;
    p.resize_mode    = DINOC_RESIZE_SHORTEST_EDGE;
    p.shortest_edge  = 256;
    p.resize_w = p.resize_h = 256;
    p.resample       = DINOC_RESAMPLE_BICUBIC;
    p.do_center_crop = 1;
    p.crop_w = p.crop_h = 224;
    p.do_rescale     = 1;
    p.rescale_factor = (float)(1.0 / 255.0);
    p.do_normalize   = 1;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    memcpy(p.mean, mean, sizeof mean);
    memcpy(p.std, std, sizeof std);
    return p;
}

/* ---- preprocessor_config.json --------------------------------------------------------------- */

/* Keys that carry no preprocessing meaning. */
static const char *const k_ignored_keys[] = {
    "image_processor_type", "feature_extractor_type", "processor_class", "_processor_class",
    "auto_map",             "_valid_processor_keys",
};

static int is_ignored_key(const char *k) {
    for (size_t i = 0; i < sizeof k_ignored_keys / sizeof k_ignored_keys[0]; i++)
        if (strcmp(k, k_ignored_keys[i]) == 0) return 1;
    return 0;
}

static dinoc_status get_bool(const char *path, const cJSON *it, int *out) {
    if (!cJSON_IsBool(it))
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: '%s' must be true or false", path, it->string);
    *out = cJSON_IsTrue(it) ? 1 : 0;
    return DINOC_OK;
}

static int is_int_value(const cJSON *it) {
    return cJSON_IsNumber(it) && it->valuedouble == floor(it->valuedouble);
}

/* A positive integer size (1..PP_SIDE_MAX). `what` names the field in messages. */
static dinoc_status get_side(const char *path, const cJSON *it, const char *what, int *out) {
    if (!is_int_value(it) || it->valuedouble < 1 || it->valuedouble > PP_SIDE_MAX)
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: '%s' must be an integer in 1..%d", path, what,
                          PP_SIDE_MAX);
    *out = (int)it->valuedouble;
    return DINOC_OK;
}

/* {"height": h, "width": w} (both required, nothing else). */
static dinoc_status get_hw(const char *path, const cJSON *obj, const char *key, int *w, int *h) {
    int got_h = 0, got_w = 0;
    char what[64];
    for (const cJSON *c = obj->child; c; c = c->next) {
        snprintf(what, sizeof what, "%s.%s", key, c->string);
        dinoc_status s;
        if (strcmp(c->string, "height") == 0) {
            if ((s = get_side(path, c, what, h))) return s;
            got_h = 1;
        } else if (strcmp(c->string, "width") == 0) {
            if ((s = get_side(path, c, what, w))) return s;
            got_w = 1;
        } else {
            return dinoc_fail(DINOC_ERR_CONFIG, "%s: unknown key '%s' in '%s'", path, c->string,
                              key);
        }
    }
    if (!got_h || !got_w)
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: '%s' needs both \"height\" and \"width\"", path,
                          key);
    return DINOC_OK;
}

/* image_mean / image_std: 3 numbers, or one number for all channels (as transformers allows). */
static dinoc_status get_triple(const char *path, const cJSON *it, float out[3], int positive) {
    double v[3];
    if (cJSON_IsNumber(it)) {
        v[0] = v[1] = v[2] = it->valuedouble;
    } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 3) {
        for (int i = 0; i < 3; i++) {
            const cJSON *e = cJSON_GetArrayItem(it, i);
            if (!cJSON_IsNumber(e))
                return dinoc_fail(DINOC_ERR_CONFIG, "%s: '%s'[%d] is not a number", path,
                                  it->string, i);
            v[i] = e->valuedouble;
        }
    } else {
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: '%s' must be a number or an array of 3 numbers",
                          path, it->string);
    }
    for (int i = 0; i < 3; i++) {
        if (!isfinite(v[i]) || (positive && !(v[i] > 0)))
            return dinoc_fail(DINOC_ERR_CONFIG, "%s: '%s'[%d] = %g is not %s", path, it->string,
                              i, v[i], positive ? "a positive number" : "finite");
        out[i] = (float)v[i]; /* transformers casts mean/std to the float32 image dtype */
    }
    return DINOC_OK;
}

/* transformers' processors that read an integer "size" as the shortest edge
 * (get_size_dict(default_to_square=False)); the others (ViT, the legacy ViTFeatureExtractor)
 * read it as a square. */
static int int_size_is_shortest_edge(const char *type) {
    return type && (strncmp(type, "BitImageProcessor", 17) == 0 ||
                    strncmp(type, "CLIPImageProcessor", 18) == 0 ||
                    strncmp(type, "CLIPFeatureExtractor", 20) == 0);
}

/* ViTImageProcessor has no center crop step at all. */
static int type_never_crops(const char *type) {
    return type && (strncmp(type, "ViTImageProcessor", 17) == 0 ||
                    strncmp(type, "ViTFeatureExtractor", 19) == 0);
}

static dinoc_status parse_config(dinoc_preprocess *pp, const cJSON *root, const char *path) {
    if (!cJSON_IsObject(root))
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: top level is not a JSON object", path);
    const char  *type = NULL;
    const cJSON *t    = cJSON_GetObjectItemCaseSensitive(root, "image_processor_type");
    if (!cJSON_IsString(t)) t = cJSON_GetObjectItemCaseSensitive(root, "feature_extractor_type");
    if (cJSON_IsString(t)) type = t->valuestring;

    dinoc_preprocess p = *pp;
    dinoc_status     s = DINOC_OK;
    for (const cJSON *it = root->child; it; it = it->next) {
        const char *k = it->string ? it->string : "";
        if (is_ignored_key(k)) continue;
        if (cJSON_IsNull(it)) continue; /* null = not set: the current value stays */
        if (strcmp(k, "do_resize") == 0) {
            s = get_bool(path, it, &p.do_resize);
        } else if (strcmp(k, "do_center_crop") == 0) {
            s = get_bool(path, it, &p.do_center_crop);
        } else if (strcmp(k, "do_rescale") == 0) {
            s = get_bool(path, it, &p.do_rescale);
        } else if (strcmp(k, "do_normalize") == 0) {
            s = get_bool(path, it, &p.do_normalize);
        } else if (strcmp(k, "do_convert_rgb") == 0) {
            s = get_bool(path, it, &p.do_convert_rgb);
        } else if (strcmp(k, "size") == 0) {
            if (cJSON_IsNumber(it)) {
                int n = 0;
                if ((s = get_side(path, it, "size", &n))) break;
                if (int_size_is_shortest_edge(type)) {
                    p.resize_mode   = DINOC_RESIZE_SHORTEST_EDGE;
                    p.shortest_edge = n;
                } else {
                    p.resize_mode = DINOC_RESIZE_EXACT;
                    p.resize_w = p.resize_h = n;
                }
            } else if (cJSON_IsObject(it)) {
                const cJSON *se = cJSON_GetObjectItemCaseSensitive(it, "shortest_edge");
                if (se) {
                    if (cJSON_GetArraySize(it) != 1) {
                        const cJSON *o = it->child;
                        while (o && strcmp(o->string, "shortest_edge") == 0) o = o->next;
                        s = dinoc_fail(DINOC_ERR_UNSUPPORTED,
                                       "%s: 'size' with \"shortest_edge\" and \"%s\" is not "
                                       "supported",
                                       path, o ? o->string : "?");
                        break;
                    }
                    if ((s = get_side(path, se, "size.shortest_edge", &p.shortest_edge))) break;
                    p.resize_mode = DINOC_RESIZE_SHORTEST_EDGE;
                } else {
                    if ((s = get_hw(path, it, "size", &p.resize_w, &p.resize_h))) break;
                    p.resize_mode = DINOC_RESIZE_EXACT;
                }
            } else {
                s = dinoc_fail(DINOC_ERR_CONFIG,
                               "%s: 'size' must be an integer, {\"shortest_edge\": n} or "
                               "{\"height\": h, \"width\": w}",
                               path);
            }
        } else if (strcmp(k, "crop_size") == 0) {
            if (cJSON_IsNumber(it)) {
                if ((s = get_side(path, it, "crop_size", &p.crop_w))) break;
                p.crop_h = p.crop_w;
            } else if (cJSON_IsObject(it)) {
                s = get_hw(path, it, "crop_size", &p.crop_w, &p.crop_h);
            } else {
                s = dinoc_fail(DINOC_ERR_CONFIG,
                               "%s: 'crop_size' must be an integer or {\"height\": h, \"width\": w}",
                               path);
            }
        } else if (strcmp(k, "resample") == 0) {
            if (!is_int_value(it) || it->valuedouble < 0 || it->valuedouble > 5)
                s = dinoc_fail(DINOC_ERR_CONFIG,
                               "%s: 'resample' must be a PIL filter number 0..5 (0 nearest, 1 "
                               "lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)",
                               path);
            else
                p.resample = (dinoc_resample)(int)it->valuedouble;
        } else if (strcmp(k, "rescale_factor") == 0) {
            if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || !(it->valuedouble > 0))
                s = dinoc_fail(DINOC_ERR_CONFIG, "%s: 'rescale_factor' must be a positive number",
                               path);
            else
                p.rescale_factor = (float)it->valuedouble;
        } else if (strcmp(k, "image_mean") == 0) {
            s = get_triple(path, it, p.mean, 0);
        } else if (strcmp(k, "image_std") == 0) {
            s = get_triple(path, it, p.std, 1);
        } else {
            s = dinoc_fail(DINOC_ERR_CONFIG, "%s: unknown key '%s'", path, k);
        }
        if (s != DINOC_OK) break;
    }
    if (s != DINOC_OK) return s;
    if (type_never_crops(type)) p.do_center_crop = 0;
    *pp = p;
    return DINOC_OK;
}

dinoc_status dinoc_preprocess_load(dinoc_preprocess *pp, const char *path) {
    if (!pp || !path) return dinoc_fail(DINOC_ERR_ARG, "dinoc_preprocess_load: NULL argument");
    cJSON       *root = NULL;
    dinoc_status s    = dinoc_json_load(&root, path);
    if (s != DINOC_OK) return s;
    s = parse_config(pp, root, path);
    cJSON_Delete(root);
    return s;
}

/* ---- sizes ---------------------------------------------------------------------------------- */

static void resize_dims(const dinoc_preprocess *pp, int in_w, int in_h, int *rw, int *rh) {
    *rw = in_w;
    *rh = in_h;
    if (!pp->do_resize) return;
    if (pp->resize_mode == DINOC_RESIZE_EXACT) {
        *rw = pp->resize_w;
        *rh = pp->resize_h;
        return;
    }
    /* int(n * long / short): the product is exact in int64 and in double (< 2^53), the division
     * is Python's correctly rounded true division, the cast truncates like int(). */
    int64_t n = pp->shortest_edge;
    /* the long side can exceed INT_MAX (65535 x 65535 / 1): clamp, and let the caller refuse it */
    double  l = in_w <= in_h ? (double)(n * in_h) / in_w : (double)(n * in_w) / in_h;
    int     li = l >= (double)INT32_MAX ? INT32_MAX : (int)l;
    if (in_w <= in_h) {
        *rw = (int)n;
        *rh = li;
    } else {
        *rh = (int)n;
        *rw = li;
    }
}

void dinoc_preprocess_size(const dinoc_preprocess *pp, int in_w, int in_h, int *out_w,
                           int *out_h) {
    int w = 0, h = 0;
    if (pp && in_w > 0 && in_h > 0) {
        resize_dims(pp, in_w, in_h, &w, &h);
        if (pp->do_center_crop) {
            w = pp->crop_w;
            h = pp->crop_h;
        }
    }
    if (out_w) *out_w = w;
    if (out_h) *out_h = h;
}

/* One dimension of transformers' center_crop: of an image side n cropped/padded to c, the
 * source range [src0, src0 + len) lands at [dst0, dst0 + len) of the output. */
static void crop_axis(int n, int c, int *src0, int *dst0, int *len) {
    if (n >= c) {
        *src0 = (n - c) / 2; /* floor: n - c >= 0 */
        *dst0 = 0;
        *len  = c;
    } else {
        *src0 = 0;
        *dst0 = (c - n + 1) / 2; /* ceil((c - n) / 2) */
        *len  = n;
    }
}

/* The double the config most likely held: 1/k for an integer k when rescale_factor is the float
 * nearest 1/k, else the float itself. */
static double rescale_as_double(float f) {
    double inv = 1.0 / (double)f;
    double k   = floor(inv + 0.5);
    if (k >= 1 && k <= 65536 && (float)(1.0 / k) == f) return 1.0 / k;
    return (double)f;
}

dinoc_status dinoc_preprocess_image(const dinoc_preprocess *pp, const dinoc_image *img,
                                    float *out, int out_w, int out_h) {
    if (!pp || !img || !out)
        return dinoc_fail(DINOC_ERR_ARG, "dinoc_preprocess_image: NULL argument");
    if (!img->data || img->w <= 0 || img->h <= 0 || img->c < 1 || img->c > 4)
        return dinoc_fail(DINOC_ERR_ARG, "dinoc_preprocess_image: invalid image %d x %d x %d",
                          img->w, img->h, img->c);
    int ew, eh;
    dinoc_preprocess_size(pp, img->w, img->h, &ew, &eh);
    if (out_w != ew || out_h != eh)
        return dinoc_fail(DINOC_ERR_SHAPE,
                          "dinoc_preprocess_image: output %d x %d, the pipeline gives %d x %d for "
                          "a %d x %d image",
                          out_w, out_h, ew, eh, img->w, img->h);
    if (pp->do_resize && (pp->resize_mode == DINOC_RESIZE_EXACT
                              ? (pp->resize_w <= 0 || pp->resize_h <= 0)
                              : pp->shortest_edge <= 0))
        return dinoc_fail(DINOC_ERR_ARG, "dinoc_preprocess_image: resize size is not positive");
    int rw0, rh0;
    resize_dims(pp, img->w, img->h, &rw0, &rh0);
    if (rw0 > (1 << 24) || rh0 > (1 << 24))
        return dinoc_fail(DINOC_ERR_ARG,
                          "dinoc_preprocess_image: resize of a %d x %d image to %d x %d is out of range",
                          img->w, img->h, rw0, rh0);
    if (ew <= 0 || eh <= 0 || (int64_t)ew * eh > ((int64_t)1 << 28))
        return dinoc_fail(DINOC_ERR_ARG, "dinoc_preprocess_image: output size %d x %d out of range",
                          ew, eh);
    for (int c = 0; c < 3; c++)
        if (pp->do_normalize && !(pp->std[c] != 0.0f))
            return dinoc_fail(DINOC_ERR_ARG, "dinoc_preprocess_image: std[%d] is zero", c);

    /* To RGB as PIL's convert("RGB"): grey replicated, alpha dropped. The model needs 3 channels
     * whatever do_convert_rgb says. */
    dinoc_image rgb = *img, conv = {0};
    if (img->c != 3) {
        size_t n  = (size_t)img->w * img->h;
        conv.data = malloc(n * 3);
        if (!conv.data)
            return dinoc_fail(DINOC_ERR_NOMEM, "dinoc_preprocess_image: out of memory (%d x %d)",
                              img->w, img->h);
        conv.w = img->w, conv.h = img->h, conv.c = 3;
        for (size_t i = 0; i < n; i++) {
            const uint8_t *s = img->data + i * img->c;
            uint8_t       *d = conv.data + i * 3;
            if (img->c <= 2) {
                d[0] = d[1] = d[2] = s[0];
            } else {
                d[0] = s[0], d[1] = s[1], d[2] = s[2];
            }
        }
        rgb = conv;
    }

    int rw, rh;
    resize_dims(pp, rgb.w, rgb.h, &rw, &rh);
    int sx = 0, dx = 0, lw = rw, sy = 0, dy = 0, lh = rh;
    if (pp->do_center_crop) {
        crop_axis(rw, pp->crop_w, &sx, &dx, &lw);
        crop_axis(rh, pp->crop_h, &sy, &dy, &lh);
    }
    /* The kept window [sx, sx + lw) x [sy, sy + lh) of the resized image, 8-bit RGB. */
    uint8_t     *win = malloc((size_t)lw * lh * 3);
    dinoc_status s   = DINOC_OK;
    if (!win) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "dinoc_preprocess_image: out of memory (%d x %d)", lw, lh);
        goto done;
    }
    if (pp->do_resize) {
        s = dinoc_image_resize_region(win, &rgb, rw, rh, pp->resample, sx, sy, lw, lh);
        if (s != DINOC_OK) goto done;
    } else {
        for (int y = 0; y < lh; y++)
            memcpy(win + (size_t)y * lw * 3, rgb.data + ((size_t)(sy + y) * rgb.w + sx) * 3,
                   (size_t)lw * 3);
    }

    /* value table [3][256]: rescale in double then float32, normalise in float32 (see top). */
    float  lut[3][256];
    double r = rescale_as_double(pp->rescale_factor);
    for (int c = 0; c < 3; c++) {
        for (int v = 0; v < 256; v++) {
            float x = pp->do_rescale ? (float)((double)v * r) : (float)v;
            if (pp->do_normalize) x = (x - pp->mean[c]) / pp->std[c];
            lut[c][v] = x;
        }
    }
    size_t plane = (size_t)out_w * out_h;
    for (int y = 0; y < out_h; y++) {
        int iny = y - dy;
        for (int x = 0; x < out_w; x++) {
            int            inx = x - dx;
            const uint8_t *p   = NULL;
            if (iny >= 0 && iny < lh && inx >= 0 && inx < lw)
                p = win + ((size_t)iny * lw + inx) * 3;
            size_t o = (size_t)y * out_w + x;
            for (int c = 0; c < 3; c++) out[c * plane + o] = lut[c][p ? p[c] : 0];
        }
    }
done:
    free(win);
    free(conv.data);
    return s;
}
