/* dinoc.h: the one public header of dinoc, a C library for image encoders
 * (ViTs trained with DINO and DINOv2, CLIP) for inference, training and evaluation.
 *
 * Usage (embed one photo with a Hugging Face DINOv2 folder):
 *
 *     dinoc_model *m = NULL;
 *     if (dinoc_model_load(&m, "dinov2-small", NULL) != DINOC_OK) {
 *         fprintf(stderr, "%s\n", dinoc_last_error());
 *         return 1;
 *     }
 *     dinoc_image img;
 *     dinoc_image_load(&img, "photo.jpg");
 *     int H, W;
 *     dinoc_preprocess_size(dinoc_model_preprocess(m), img.w, img.h, &W, &H);
 *     float *x = malloc(sizeof(float) * 3 * H * W);
 *     dinoc_preprocess_image(dinoc_model_preprocess(m), &img, x, W, H);
 *     dinoc_state *s = NULL;
 *     dinoc_state_init(&s, m, 1, H, W, 0);
 *     dinoc_forward(m, s, x, NULL);
 *     const float *tok = dinoc_state_output(s);   // [B, T, D]; token 0 is CLS
 *     ...
 *     dinoc_state_free(s); dinoc_model_free(m); dinoc_image_free(&img); free(x);
 *
 * Rules the whole library keeps:
 * - Every fallible call returns a dinoc_status. On failure dinoc_last_error() gives a thread-local
 *   message that names the file, tensor, field or shape at fault.
 * - The library never prints and never exits. Messages go to the log hook (dinoc_log_set).
 * - A dinoc_model is read-only after loading and may be shared by threads; a dinoc_state holds the
 *   activations of one forward pass and belongs to one thread at a time.
 * - Tensors are float32, row-major (C order). Images are [B, C, H, W]; tokens are [B, T, D].
 */
#ifndef DINOC_H
#define DINOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define DINOC_API __attribute__((visibility("default")))
#else
#define DINOC_API
#endif

#define DINOC_VERSION "0.1.0"

/* ------------------------------------------------------------------------------------------------
 * Status codes and errors
 * ---------------------------------------------------------------------------------------------- */

/* X(name, value, fixed text) */
#define DINOC_STATUS_MAP(X)                                   \
    X(OK, 0, "ok")                                            \
    X(ERR_IO, -1, "i/o error")                                \
    X(ERR_FORMAT, -2, "malformed input")                      \
    X(ERR_SHAPE, -3, "tensor shape mismatch")                 \
    X(ERR_NOMEM, -4, "out of memory")                         \
    X(ERR_ARG, -5, "invalid argument")                        \
    X(ERR_UNSUPPORTED, -6, "unsupported feature")             \
    X(ERR_NUMERIC, -7, "non-finite value")                    \
    X(ERR_CONFIG, -8, "invalid configuration")

typedef enum {
#define DINOC_STATUS_ENUM_(name, value, text) DINOC_##name = value,
    DINOC_STATUS_MAP(DINOC_STATUS_ENUM_)
#undef DINOC_STATUS_ENUM_
} dinoc_status;

/* Fixed text of a status code ("tensor shape mismatch"). Never NULL. */
DINOC_API const char *dinoc_status_str(dinoc_status s);
/* Detail of the last failure on this thread ("model.safetensors: tensor 'x': shape [3,4], expected
 * [4,4]"). Valid until the next failing call on the same thread. Empty string if none. */
DINOC_API const char *dinoc_last_error(void);

/* ------------------------------------------------------------------------------------------------
 * Logging and threads
 * ---------------------------------------------------------------------------------------------- */

typedef enum {
    DINOC_LOG_ERROR = 0,
    DINOC_LOG_WARN  = 1,
    DINOC_LOG_INFO  = 2,
    DINOC_LOG_DEBUG = 3,
} dinoc_log_level;

typedef void (*dinoc_log_fn)(dinoc_log_level level, const char *msg, void *user);

/* Installs the log hook. Messages above max_level are dropped. fn == NULL silences the library
 * (the default). The hook may be called from any thread. */
DINOC_API void dinoc_log_set(dinoc_log_fn fn, void *user, dinoc_log_level max_level);

/* Number of threads for OpenMP loops and BLAS. n <= 0 means "all cores". */
DINOC_API void dinoc_set_threads(int n);
DINOC_API int  dinoc_get_threads(void);

/* ------------------------------------------------------------------------------------------------
 * safetensors
 * ---------------------------------------------------------------------------------------------- */

#define DINOC_MAX_DIMS 8

typedef enum {
    DINOC_DTYPE_F32 = 0,
    DINOC_DTYPE_F16,
    DINOC_DTYPE_BF16,
    DINOC_DTYPE_F64,
    DINOC_DTYPE_I64,
    DINOC_DTYPE_I32,
    DINOC_DTYPE_I16,
    DINOC_DTYPE_I8,
    DINOC_DTYPE_U8,
    DINOC_DTYPE_U16,
    DINOC_DTYPE_U32,
    DINOC_DTYPE_U64,
    DINOC_DTYPE_BOOL,
    DINOC_DTYPE_F8_E4M3,
    DINOC_DTYPE_F8_E5M2,
    DINOC_DTYPE_COUNT
} dinoc_dtype;

/* "F32", "BF16", ... as written in safetensors headers. */
DINOC_API const char *dinoc_dtype_name(dinoc_dtype t);
/* Bytes per element. */
DINOC_API size_t      dinoc_dtype_size(dinoc_dtype t);

typedef struct {
    const char *name;
    dinoc_dtype dtype;
    int         ndim;
    int64_t     shape[DINOC_MAX_DIMS];
    size_t      nbytes;   /* = numel * dtype size */
    const void *data;     /* points into the mapped file (reader) or caller memory (writer) */
} dinoc_tensor;

/* Element count of a tensor (1 for a scalar). */
DINOC_API int64_t dinoc_tensor_numel(const dinoc_tensor *t);

/* Converts a floating tensor (F32, F16, BF16, F64) to float32. n must equal its element count. */
DINOC_API dinoc_status dinoc_tensor_to_f32(const dinoc_tensor *t, float *dst, int64_t n);

typedef struct dinoc_safetensors dinoc_safetensors;

/* Opens and fully validates one .safetensors file (mmap, read-only): 8-byte little-endian header
 * length (at most 100,000,000), a JSON object header, known dtypes, dtype x shape = byte length
 * (overflow-checked), offsets inside the buffer tiling it without holes or overlaps, no duplicate
 * names. The file stays mapped until dinoc_safetensors_close. */
DINOC_API dinoc_status dinoc_safetensors_open(dinoc_safetensors **out, const char *path);
/* Same checks on a caller buffer (not copied: it must outlive the handle). label names it in errors. */
DINOC_API dinoc_status dinoc_safetensors_open_memory(dinoc_safetensors **out, const void *buf,
                                                     size_t size, const char *label);
DINOC_API void         dinoc_safetensors_close(dinoc_safetensors *st);
DINOC_API int          dinoc_safetensors_count(const dinoc_safetensors *st);
/* Tensors in file order of their data offsets. NULL if i is out of range. */
DINOC_API const dinoc_tensor *dinoc_safetensors_get(const dinoc_safetensors *st, int i);
/* NULL if no tensor has that name. */
DINOC_API const dinoc_tensor *dinoc_safetensors_find(const dinoc_safetensors *st, const char *name);
/* Value of a "__metadata__" string entry, or NULL. */
DINOC_API const char *dinoc_safetensors_metadata(const dinoc_safetensors *st, const char *key);

/* Writes tensors to path atomically: path.tmp.<pid>, fsync, rename. metadata is a NULL-terminated list
 * of key, value, key, value, ... strings (or NULL). Names must be unique. An existing file at path is
 * only replaced once the new one is complete. */
DINOC_API dinoc_status dinoc_safetensors_write(const char *path, const dinoc_tensor *tensors, int n,
                                               const char *const *metadata);

/* A set of weights: one .safetensors file, a sharded checkpoint (model.safetensors.index.json and
 * its shards), or a directory holding either. Lookups go across every shard. */
typedef struct dinoc_weights dinoc_weights;
DINOC_API dinoc_status dinoc_weights_open(dinoc_weights **out, const char *path);
DINOC_API void         dinoc_weights_close(dinoc_weights *w);
DINOC_API int          dinoc_weights_count(const dinoc_weights *w);
DINOC_API const dinoc_tensor *dinoc_weights_get(const dinoc_weights *w, int i);
DINOC_API const dinoc_tensor *dinoc_weights_find(const dinoc_weights *w, const char *name);
/* The file (shard) a tensor came from, for messages. */
DINOC_API const char *dinoc_weights_file_of(const dinoc_weights *w, const dinoc_tensor *t);

/* ------------------------------------------------------------------------------------------------
 * Images and preprocessing
 * ---------------------------------------------------------------------------------------------- */

/* An 8-bit image, interleaved (HWC), c = 3 (RGB) after dinoc_image_load. */
typedef struct {
    int      w, h, c;
    uint8_t *data;
} dinoc_image;

/* Decodes JPEG, PNG, BMP, PGM/PPM, TGA, GIF (first frame) with stb_image and converts to RGB as PIL's
 * convert("RGB") does: grey is replicated, alpha is dropped. Limits: each side <= 65535 and at most
 * 2^28 pixels, else DINOC_ERR_FORMAT naming the file. */
DINOC_API dinoc_status dinoc_image_load(dinoc_image *out, const char *path);
DINOC_API dinoc_status dinoc_image_load_memory(dinoc_image *out, const void *buf, size_t size,
                                               const char *label);
DINOC_API void         dinoc_image_free(dinoc_image *img);

/* PIL's resampling filters, numbered as PIL numbers them (and as preprocessor_config.json's
 * "resample" stores them). */
typedef enum {
    DINOC_RESAMPLE_NEAREST  = 0,
    DINOC_RESAMPLE_LANCZOS  = 1,
    DINOC_RESAMPLE_BILINEAR = 2,
    DINOC_RESAMPLE_BICUBIC  = 3,
    DINOC_RESAMPLE_BOX      = 4,
    DINOC_RESAMPLE_HAMMING  = 5,
} dinoc_resample;

/* Resizes like PIL's Image.resize(size, filter) on an 8-bit image, bit for bit: separable
 * convolution with the filter support widened by the scale when shrinking (antialias), fixed-point
 * coefficients, rounding and clamping to 8 bits after each pass. dst->data is allocated. */
DINOC_API dinoc_status dinoc_image_resize(dinoc_image *dst, const dinoc_image *src, int w, int h,
                                          dinoc_resample filter);

typedef enum {
    DINOC_RESIZE_SHORTEST_EDGE = 0, /* shorter side to `shortest_edge`, aspect kept */
    DINOC_RESIZE_EXACT         = 1, /* to exactly width x height */
} dinoc_resize_mode;

/* Image preprocessing of the Hugging Face image processors (BitImageProcessor, ViTImageProcessor,
 * the legacy ViTFeatureExtractor) and torchvision's evaluation transforms. */
typedef struct {
    int               do_convert_rgb;
    int               do_resize;
    dinoc_resize_mode resize_mode;
    int               shortest_edge;         /* SHORTEST_EDGE */
    int               resize_w, resize_h;    /* EXACT */
    dinoc_resample    resample;
    int               do_center_crop;
    int               crop_w, crop_h;
    int               do_rescale;
    float             rescale_factor;        /* 1/255 */
    int               do_normalize;
    float             mean[3], std[3];
} dinoc_preprocess;

/* DINOv2's defaults: shorter side 256 bicubic, center crop 224, /255, ImageNet mean/std. */
DINOC_API dinoc_preprocess dinoc_preprocess_default(void);
/* Reads a preprocessor_config.json over *pp (keys absent from the file keep their values in *pp).
 * Accepts "size" as an int (legacy: square resize), {"shortest_edge"} or {"height","width"}, and
 * "crop_size" as an int or {"height","width"}. Unknown keys are an error naming the key. */
DINOC_API dinoc_status dinoc_preprocess_load(dinoc_preprocess *pp, const char *path);
/* Output size (after resize and crop) for an input of in_w x in_h. */
DINOC_API void dinoc_preprocess_size(const dinoc_preprocess *pp, int in_w, int in_h, int *out_w,
                                     int *out_h);
/* Runs the whole pipeline; out is [3, out_h, out_w] float32. out_w/out_h must equal what
 * dinoc_preprocess_size gives. */
DINOC_API dinoc_status dinoc_preprocess_image(const dinoc_preprocess *pp, const dinoc_image *img,
                                              float *out, int out_w, int out_h);

/* ------------------------------------------------------------------------------------------------
 * ViT models
 * ---------------------------------------------------------------------------------------------- */

typedef enum {
    DINOC_ARCH_DINOV2     = 0, /* HF model_type "dinov2" */
    DINOC_ARCH_DINOV2_REG = 1, /* HF model_type "dinov2_with_registers" */
    DINOC_ARCH_VIT        = 2, /* HF model_type "vit": the DINO v1 checkpoints (facebook/dino-vit*) */
    DINOC_ARCH_CLIP       = 3, /* CLIP's image tower (HF clip_vision_model inside a CLIPModel folder) */
} dinoc_arch;

typedef enum {
    DINOC_FFN_MLP    = 0, /* fc1, exact (erf) GELU, fc2 */
    DINOC_FFN_SWIGLU = 1, /* w12 -> SiLU(x1) * x2 -> w3 */
    DINOC_FFN_MLP_QUICK_GELU = 2, /* fc1, QuickGELU x*sigmoid(1.702x) (OpenAI CLIP), fc2 */
} dinoc_ffn;

/* How position embeddings are resized to another patch grid. The three bicubic variants of the
 * reference systems; see docs/design.md. */
typedef enum {
    DINOC_POS_INTERP_SIZE      = 0, /* bicubic A=-0.75 to size (h0, w0): HF Dinov2 and ViT today */
    DINOC_POS_INTERP_OFFSET    = 1, /* bicubic A=-0.75, scale factor (h0+0.1)/M: original DINO, DINOv2 */
    DINOC_POS_INTERP_ANTIALIAS = 2, /* antialiased bicubic A=-0.5 to size: DINOv2 with registers */
} dinoc_pos_interp;

typedef struct {
    dinoc_arch       arch;
    int              dim;          /* D */
    int              depth;        /* number of blocks */
    int              heads;        /* D / heads = head size */
    int              ffn_hidden;   /* MLP hidden width, or SwiGLU hidden (half of w12's rows) */
    dinoc_ffn        ffn;
    int              patch;        /* P */
    int              channels;     /* input channels, 3 */
    int              image_size;   /* pos-embed grid side = image_size / patch */
    int              n_registers;  /* R */
    int              layerscale;   /* 1 if blocks have LayerScale gammas */
    int              qkv_bias;
    int              mask_token;   /* 1 if the model has a mask token */
    float            ln_eps;
    dinoc_pos_interp pos_interp;
    float            interp_offset; /* 0.1 for DINOC_POS_INTERP_OFFSET */
} dinoc_vit_config;

typedef struct dinoc_model dinoc_model;

/* Named configurations: "vits14", "vitb14", "vitl14", "vitg14" (DINOv2, image 518), the same with
 * "-reg" (4 registers), "dino-vits16", "dino-vits8", "dino-vitb16", "dino-vitb8" (DINO v1 as HF
 * ViTModel, image 224), and "vit-tiny-dino" (D 192, 12 blocks, 3 heads, patch 4, 1 channel, 32 px:
 * the Fashion-MNIST model). DINOC_ERR_ARG lists the names if `name` is unknown. */
DINOC_API dinoc_status dinoc_vit_preset(dinoc_vit_config *out, const char *name);


/* Precision of the encoder's linear products (patch embedding, qkv, proj, MLP).
 * DINOC_PRECISION_BF16: operands rounded to bfloat16 (round to nearest even), fp32 accumulation
 * and outputs; LayerNorm, softmax, GELU, attention and the residual stream stay fp32. Runs on
 * oneDNN's bf16 kernels where the CPU has AMX or AVX512-BF16 (dinoc_bf16_backend says which),
 * emulated in fp32 elsewhere with the same numbers (no speed-up there). Switching to bf16 rounds
 * the model's matrix weights in place: switching back to fp32 keeps them rounded (reload the
 * model for its exact fp32 weights). Make states after switching: a state made for the other
 * precision is refused by dinoc_forward. */
typedef enum { DINOC_PRECISION_FP32 = 0, DINOC_PRECISION_BF16 = 1 } dinoc_precision;
DINOC_API dinoc_status    dinoc_model_set_precision(dinoc_model *m, dinoc_precision p);
DINOC_API dinoc_precision dinoc_model_precision(const dinoc_model *m);
/* "fp32" / "bf16" -> *out; DINOC_ERR_ARG names the accepted values otherwise. */
DINOC_API dinoc_status dinoc_precision_parse(const char *s, dinoc_precision *out);
DINOC_API const char  *dinoc_precision_name(dinoc_precision p);
/* Which backend bf16 products use on this machine, in words ("oneDNN brg:avx512_core_amx (AMX
 * tiles)", "emulated (this CPU has neither AVX512-BF16 nor AMX ...)"). */
DINOC_API const char *dinoc_bf16_backend(void);
/* Which library runs fp32 products on this machine ("oneDNN sgemm", "OpenBLAS sgemm", "reference
 * C loops" in a BLAS=none build): oneDNN where it is built in and the CPU has AVX-512, OpenBLAS
 * elsewhere; the environment variable DINOC_SGEMM=openblas|onednn overrides the choice (read
 * once, at the first product). */
DINOC_API const char *dinoc_fp32_backend(void);

typedef struct {
    int              set_pos_interp; /* 1: use pos_interp below instead of the arch's default */
    dinoc_pos_interp pos_interp;
    int              strict_config;  /* 1 (default): unknown config.json keys are an error */
    dinoc_precision  precision;      /* FP32 (default); BF16: dinoc_model_set_precision after loading */
} dinoc_load_params;

DINOC_API dinoc_load_params dinoc_load_default_params(void);

/* Loads a Hugging Face model folder: config.json, model.safetensors (or a sharded index) and, if
 * present, preprocessor_config.json. A path to a .safetensors file is also accepted if config.json
 * sits beside it. Every missing, unexpected or mis-shaped tensor is named in the error.
 * params may be NULL for the defaults. */
DINOC_API dinoc_status dinoc_model_load(dinoc_model **out, const char *path,
                                        const dinoc_load_params *params);
/* A model with random weights (timm/DINOv2 init), deterministic for the seed. */
DINOC_API dinoc_status dinoc_model_init_random(dinoc_model **out, const dinoc_vit_config *cfg,
                                               uint64_t seed);
/* Writes a Hugging Face folder (config.json, model.safetensors, preprocessor_config.json) under
 * the published tensor names of the model's arch. Creates dir if needed. */
DINOC_API dinoc_status dinoc_model_save_hf(const dinoc_model *m, const char *dir);
DINOC_API void         dinoc_model_free(dinoc_model *m);

DINOC_API const dinoc_vit_config *dinoc_model_config(const dinoc_model *m);
DINOC_API const dinoc_preprocess *dinoc_model_preprocess(const dinoc_model *m);
DINOC_API int64_t                 dinoc_model_num_params(const dinoc_model *m);
/* Overrides the position-embedding interpolation of a loaded model. */
DINOC_API void dinoc_model_set_pos_interp(dinoc_model *m, dinoc_pos_interp p);

/* Flags for dinoc_state_init. */
#define DINOC_STATE_ATTN   1u /* keep the last block's attention probabilities [B, heads, T, T] */
#define DINOC_STATE_HIDDEN 2u /* keep every block's output [depth, B, T, D] (before the final norm) */

typedef struct dinoc_state dinoc_state;

/* Activations for batches of exactly B images of H x W (multiples of the patch). All memory is
 * allocated here; dinoc_forward allocates nothing. */
DINOC_API dinoc_status dinoc_state_init(dinoc_state **out, const dinoc_model *m, int B, int H,
                                        int W, unsigned flags);
DINOC_API void         dinoc_state_free(dinoc_state *s);

/* Runs the encoder on images [B, C, H, W] (already normalised). mask, if not NULL, is [B, Np]
 * (Np = (H/P)*(W/P)) with 1 where a patch embedding is replaced by the mask token. */
DINOC_API dinoc_status dinoc_forward(const dinoc_model *m, dinoc_state *s, const float *images,
                                     const uint8_t *mask);

/* Token layout of a state: T = 1 + R + Np; token 0 is CLS, then R registers, then Np patches
 * (row-major over the patch grid gh x gw). */
DINOC_API void dinoc_state_dims(const dinoc_state *s, int *B, int *T, int *D, int *gh, int *gw);
/* Final normed tokens of the last forward [B, T, D]. */
DINOC_API const float *dinoc_state_output(const dinoc_state *s);
/* Output of block `layer` (0-based; negative counts from the end) [B, T, D]. Needs
 * DINOC_STATE_HIDDEN unless layer is the last. With norm = 1 the final LayerNorm is applied
 * into dst; dst holds B*T*D floats. */
DINOC_API dinoc_status dinoc_state_hidden(const dinoc_model *m, const dinoc_state *s, int layer,
                                          int norm, float *dst);
/* Last block's attention probabilities [B, heads, T, T]; NULL without DINOC_STATE_ATTN. */
DINOC_API const float *dinoc_state_attn(const dinoc_state *s);

/* ------------------------------------------------------------------------------------------------
 * Small file formats
 * ---------------------------------------------------------------------------------------------- */

/* Writes a float32 NumPy .npy file (version 1.0, little-endian, C order) atomically. */
DINOC_API dinoc_status dinoc_npy_write(const char *path, const float *data, int ndim,
                                       const int64_t *shape);

#ifdef __cplusplus
}
#endif
#endif /* DINOC_H */
