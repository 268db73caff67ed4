/* resnet.h: ResNet backbones in torchvision's layout and CLIP's ModifiedResNet (src/nn/resnet.c:
 * workspace, forward, backward; src/nn/resnet_io.c: presets, layout, init, config.json +
 * safetensors). Tested by tests/test_resnet.c against a PyTorch
 * ResNet written in tests/py/gen_resnet.py.
 *
 * Usage (embed a batch with a trained model, then train a step):
 *
 *     dinoc_resnet *m = NULL;
 *     dinoc_resnet_load(&m, "runs/rn18");                  // config.json + model.safetensors
 *     dinoc_resnet_ws *ws = NULL;
 *     dinoc_resnet_ws_init(&ws, m, B, H, W, 0);            // 0: inference buffers only
 *     dinoc_resnet_forward(m, images, B, H, W, feats, ws); // feats [B, dinoc_resnet_feat_dim(m)]
 *
 *     dinoc_resnet_ws_init(&tws, m, B, H, W, 1);           // 1: keeps activations for backward
 *     dinoc_resnet_forward_train(m, images, B, H, W, feats, tws); // BN batch stats, running update
 *     dinoc_resnet_backward(m, dfeats, grads, tws);        // grads += dL/dparams (m->n_params)
 *
 * Model: stem (conv1 7x7 s2 + bn1 + ReLU + maxpool 3x3 s2 p1, or the small stem: conv1 3x3 s1 +
 * bn1 + ReLU, no pool), then stages layer1..layerS of BasicBlocks or Bottlenecks (v1.5: the stride
 * sits on the 3x3 conv), the first block of a stage with downsample = conv1x1(stride) + BN when
 * the shape changes; the feature is the global average of the last stage (fc dropped, as DINO
 * uses the backbone). fc (num_classes > 0) is kept for supervised use and checkpoints.
 * Parameters (conv weights, BN weights and biases, fc) live in one flat buffer; the BN running
 * statistics are buffers in a second flat buffer (not trained, not in the optimizer's list). */
#ifndef DINOC_RESNET_H
#define DINOC_RESNET_H

#include "../ops/cnn.h"

enum { DINOC_RESNET_BASIC = 0, DINOC_RESNET_BOTTLENECK = 1 };
/* Stems: IMAGENET conv 7x7 s2 + maxpool 3x3 s2 (torchvision); SMALL conv 3x3 s1, no pool (28x28
 * inputs); CLIP OpenAI's ModifiedResNet: three 3x3 convs (s2, 1, 1) + AvgPool2d(2), and with it
 * CLIP's blocks (stride as AvgPool2d after conv2, and before the downsample's stride-1 conv) and
 * attention pooling instead of the global average (inference only). */
enum { DINOC_RESNET_STEM_IMAGENET = 0, DINOC_RESNET_STEM_SMALL = 1, DINOC_RESNET_STEM_CLIP = 2 };
#define DINOC_RESNET_MAX_STAGES 4

typedef struct {
    char  arch[32];                       /* preset name, or "custom" */
    int   block;                          /* DINOC_RESNET_BASIC / _BOTTLENECK */
    int   stem;                           /* DINOC_RESNET_STEM_IMAGENET / _SMALL */
    int   n_stages;                       /* 1..4 */
    int   layers[DINOC_RESNET_MAX_STAGES]; /* blocks per stage */
    int   widths[DINOC_RESNET_MAX_STAGES]; /* planes per stage (output: x1 basic, x4 bottleneck) */
    int   stem_width;                     /* conv1's output channels */
    int   in_channels;                    /* image channels */
    int   num_classes;                    /* fc outputs; 0: no fc */
    float bn_eps, bn_momentum;            /* 1e-5, 0.1 (torch defaults) */
    /* CLIP stem only: attention pooling heads, its output width, and the input resolution that
     * fixes its positional embedding ((image_size / 32)^2 + 1 rows) */
    int   heads, out_dim, image_size;
} dinoc_resnet_config;

/* One conv + BN pair: its geometry, names and offsets into the flat buffers. */
typedef struct {
    char   conv[64], bn[64];          /* "layer1.0.conv1", "layer1.0.bn1"; stem "conv1", "bn1" */
    int    cin, cout, k, stride, pad;
    size_t w_off, bnw_off, bnb_off;   /* into params: w [cout, cin, k, k], bn w/b [cout] */
    size_t rm_off, rv_off;            /* into buffers: running mean / var [cout] */
} dinoc_resnet_unit;

/* A residual block: units u0 .. u0+nu-1 in order (conv1/bn1, conv2/bn2[, conv3/bn3]) and the
 * downsample unit (-1: identity shortcut). pool > 1 (CLIP): AvgPool2d(pool) after unit 1 and
 * before the downsample conv. */
typedef struct {
    int u0, nu, down, pool;
} dinoc_resnet_block;

/* A named tensor of the model. Parameters: offset into params; buffers (is_buffer = 1, the BN
 * running statistics): offset into buffers. */
typedef struct {
    char    name[96];
    int     ndim;
    int64_t shape[4];
    size_t  offset, count;
    int     decay;     /* 1 for conv and fc weights (weight decay applies), 0 for BN and biases */
    int     is_buffer;
} dinoc_resnet_param;

typedef struct dinoc_resnet {
    dinoc_resnet_config cfg;
    int                 n_units, n_blocks;
    dinoc_resnet_unit  *units;   /* [n_units]: the stem first, then blocks in order */
    dinoc_resnet_block *blocks;  /* [n_blocks] */
    int                 n_stem;  /* units of the stem: 1, or 3 (CLIP) */
    int                 feat_dim;          /* F: channels of the last stage (CLIP: out_dim) */
    size_t              ap_pos_off, ap_off[4][2]; /* CLIP attnpool: positional embedding
                                                   * [S*S+1, E]; q, k, v, c_proj weight, bias */
    size_t              fc_w_off, fc_b_off; /* fc weight [num_classes, F], bias */
    size_t              n_params, n_buffers;
    float              *params;  /* [n_params] */
    float              *buffers; /* [n_buffers] running means and variances */
    int64_t             num_batches_tracked; /* training forwards so far (saved for every BN) */
    int                 n_entries;
    dinoc_resnet_param *entries; /* parameters then buffers, in torchvision's state_dict order */
} dinoc_resnet;

typedef struct dinoc_resnet_ws dinoc_resnet_ws;

/* A preset's config: "resnet18", "resnet34", "resnet50", "resnet101" (torchvision; num_classes
 * 1000, in_channels 3), "resnet_small" (28x28 inputs; see docs/resnet.md) or CLIP's
 * "clip_rn50", "clip_rn101", "clip_rn50x4", "clip_rn50x16", "clip_rn50x64". DINOC_ERR_ARG lists
 * the names if unknown. */
dinoc_status dinoc_resnet_preset(dinoc_resnet_config *cfg, const char *arch);
/* Checks a config; errors name the field (where: file name for messages). */
dinoc_status dinoc_resnet_config_check(const dinoc_resnet_config *cfg, const char *where);
/* A model with zeroed parameters, running_var 1 (as freshly built torch BN) for cfg. */
dinoc_status dinoc_resnet_alloc(dinoc_resnet **out, const dinoc_resnet_config *cfg);
/* The two halves of dinoc_resnet_alloc: the layout (units, names, sizes; params and buffers
 * NULL), so a loader can check a file against it before allocating, then the buffers. */
dinoc_status dinoc_resnet_alloc_layout(dinoc_resnet **out, const dinoc_resnet_config *cfg);
dinoc_status dinoc_resnet_alloc_data(dinoc_resnet *m);
/* torchvision's init: conv kaiming_normal(fan_out, relu), BN weight 1 bias 0, fc as nn.Linear
 * (uniform +-1/sqrt(F)); running stats 0 / 1. */
dinoc_status dinoc_resnet_init_random(dinoc_resnet **out, const dinoc_resnet_config *cfg,
                                      uint64_t seed);
void         dinoc_resnet_free(dinoc_resnet *m);
/* F, the feature width (last stage's channels). */
int          dinoc_resnet_feat_dim(const dinoc_resnet *m);
/* The named tensors (parameters, then buffers); returns the count. Parameters come first:
 * entries[0 .. dinoc_resnet_n_param_entries(m)) have is_buffer 0. */
int          dinoc_resnet_entries(const dinoc_resnet *m, const dinoc_resnet_param **out);
int          dinoc_resnet_n_param_entries(const dinoc_resnet *m);

/* Loads a folder holding config.json (see resnet_io.c) and model.safetensors, or a .safetensors
 * file with a config.json beside it. Tensor names as torchvision's state_dict, optionally under a
 * "module." / "backbone." / "module.backbone." prefix (DINO checkpoints); every tensor is checked
 * for name and shape, unknown ones are an error, and fc.* may be absent only if num_classes = 0. */
dinoc_status dinoc_resnet_load(dinoc_resnet **out, const char *path);
/* Writes dir/config.json and dir/model.safetensors (torchvision names, num_batches_tracked as I64
 * scalars), atomically each. */
dinoc_status dinoc_resnet_save(const dinoc_resnet *m, const char *dir);

/* Buffers for B images of H x W. train = 1 keeps every activation for the backward (and needs
 * B * pixels > 1 at every BN, as torch); train = 0 keeps four rotating buffers. CLIP models:
 * inference only (DINOC_ERR_UNSUPPORTED for train), H = W = image_size (DINOC_ERR_ARG else: the
 * attention pool's positional embedding is not interpolated, as in OpenAI's code). */
dinoc_status dinoc_resnet_ws_init(dinoc_resnet_ws **out, const dinoc_resnet *m, int B, int H,
                                  int W, int train);
void         dinoc_resnet_ws_free(dinoc_resnet_ws *ws);
/* Inference (BN with running statistics): feats [B, F] = global average of the last stage.
 * DINOC_ERR_ARG if (B, H, W) differ from the workspace's. */
dinoc_status dinoc_resnet_forward(const dinoc_resnet *m, const float *images, int B, int H, int W,
                                  float *feats, dinoc_resnet_ws *ws);
/* Training forward (BN with batch statistics; updates the running statistics and
 * num_batches_tracked as torch's train mode). images must stay unchanged until the backward. */
dinoc_status dinoc_resnet_forward_train(dinoc_resnet *m, const float *images, int B, int H, int W,
                                        float *feats, dinoc_resnet_ws *ws);
/* Backward of the last training forward: dfeats [B, F]; ACCUMULATES dL/dparams into grads
 * (n_params floats, the params layout). No gradient for the images. */
dinoc_status dinoc_resnet_backward(const dinoc_resnet *m, const float *dfeats, float *grads,
                                   dinoc_resnet_ws *ws);
/* fc: logits [B, num_classes] = feats @ fc.w^T + fc.b; backward accumulates into grads (fc part)
 * and dfeats (may be NULL). DINOC_ERR_ARG without an fc. */
dinoc_status dinoc_resnet_fc_forward(const dinoc_resnet *m, const float *feats, float *logits,
                                     int B);
dinoc_status dinoc_resnet_fc_backward(const dinoc_resnet *m, const float *dlogits,
                                      const float *feats, float *dfeats, float *grads, int B);

#endif
