/* resnet_io.c: ResNet presets, config checks and the layout of a model (units, blocks, named
 * tensors and their offsets in the flat buffers), random init, and models from and to a folder of
 * config.json + model.safetensors.
 *
 * config.json (our design; torchvision has no config file):
 *   {"model_type": "resnet", "arch": "resnet50"}                     a preset, or
 *   {"model_type": "resnet", "arch": "custom", "block": "bottleneck", "stem": "imagenet",
 *    "layers": [3, 4, 6, 3], "widths": [64, 128, 256, 512], "stem_width": 64,
 *    "in_channels": 3, "num_classes": 0, "bn_eps": 1e-5, "bn_momentum": 0.1}
 * With a preset, every other field is optional and overrides it; "custom" needs block, layers and
 * widths. Unknown fields are an error (a misspelt key must not silently build another network).
 * Tensor names are torchvision's state_dict names; num_batches_tracked (I64 scalar per BN) is read
 * from the first BN that has one and written to all. Tested by tests/test_resnet.c. */
#include "resnet.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

/* ---- configs and layout ------------------------------------------------------------------------ */

dinoc_status dinoc_resnet_preset(dinoc_resnet_config *cfg, const char *arch) {
    static const struct {
        const char *name;
        int         block, stem, n, layers[4], widths[4], classes, out_dim, image_size;
    } presets[] = {
        {"resnet18", DINOC_RESNET_BASIC, DINOC_RESNET_STEM_IMAGENET, 4, {2, 2, 2, 2}, {64, 128, 256, 512}, 1000, 0, 0},
        {"resnet34", DINOC_RESNET_BASIC, DINOC_RESNET_STEM_IMAGENET, 4, {3, 4, 6, 3}, {64, 128, 256, 512}, 1000, 0, 0},
        {"resnet50", DINOC_RESNET_BOTTLENECK, DINOC_RESNET_STEM_IMAGENET, 4, {3, 4, 6, 3}, {64, 128, 256, 512}, 1000, 0, 0},
        {"resnet101", DINOC_RESNET_BOTTLENECK, DINOC_RESNET_STEM_IMAGENET, 4, {3, 4, 23, 3}, {64, 128, 256, 512}, 1000, 0, 0},
        /* He et al.'s CIFAR ResNet-14 widths and depth (6n + 2, n = 2) with torchvision blocks
         * (conv downsample): 28 -> 28 -> 14 -> 7, F = 64, 0.17M parameters */
        {"resnet_small", DINOC_RESNET_BASIC, DINOC_RESNET_STEM_SMALL, 3, {2, 2, 2, 0}, {16, 32, 64, 0}, 0, 0, 0},
        /* OpenAI CLIP visual towers (clip/model.py build_model: width = stem width, heads =
         * width * 32 / 64, embed_dim = output width) */
#define CLIP_RN(name, l0, l1, l2, l3, w, out, res) \
    {name, DINOC_RESNET_BOTTLENECK, DINOC_RESNET_STEM_CLIP, 4, {l0, l1, l2, l3}, {w, 2 * w, 4 * w, 8 * w}, 0, out, res}
        CLIP_RN("clip_rn50", 3, 4, 6, 3, 64, 1024, 224),
        CLIP_RN("clip_rn101", 3, 4, 23, 3, 64, 512, 224),
        CLIP_RN("clip_rn50x4", 4, 6, 10, 6, 80, 640, 288),
        CLIP_RN("clip_rn50x16", 6, 8, 18, 8, 96, 768, 384),
        CLIP_RN("clip_rn50x64", 3, 15, 36, 10, 128, 1024, 448),
#undef CLIP_RN
    };
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (strcmp(arch, presets[i].name)) continue;
        memset(cfg, 0, sizeof *cfg);
        snprintf(cfg->arch, sizeof cfg->arch, "%s", arch);
        cfg->block    = presets[i].block;
        cfg->stem     = presets[i].stem;
        cfg->n_stages = presets[i].n;
        for (int s = 0; s < 4; s++) {
            cfg->layers[s] = presets[i].layers[s];
            cfg->widths[s] = presets[i].widths[s];
        }
        cfg->stem_width  = cfg->widths[0];
        cfg->in_channels = presets[i].stem == DINOC_RESNET_STEM_SMALL ? 1 : 3;
        cfg->num_classes = presets[i].classes;
        cfg->bn_eps      = 1e-5f;
        cfg->bn_momentum = 0.1f;
        cfg->out_dim     = presets[i].out_dim;
        cfg->image_size  = presets[i].image_size;
        cfg->heads       = presets[i].stem == DINOC_RESNET_STEM_CLIP ? cfg->widths[0] / 2 : 0;
        return DINOC_OK;
    }
    return dinoc_fail(DINOC_ERR_ARG,
                      "unknown ResNet arch '%s' (resnet18, resnet34, resnet50, resnet101, "
                      "resnet_small, clip_rn50, clip_rn101, clip_rn50x4, clip_rn50x16, "
                      "clip_rn50x64)", arch);
}

dinoc_status dinoc_resnet_config_check(const dinoc_resnet_config *c, const char *where) {
    if (c->block != DINOC_RESNET_BASIC && c->block != DINOC_RESNET_BOTTLENECK)
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: field 'block' must be basic or bottleneck", where);
    if (c->stem != DINOC_RESNET_STEM_IMAGENET && c->stem != DINOC_RESNET_STEM_SMALL &&
        c->stem != DINOC_RESNET_STEM_CLIP)
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: field 'stem' must be imagenet, small or clip", where);
    if (c->stem == DINOC_RESNET_STEM_CLIP) {
        /* ModifiedResNet: Bottlenecks only, 4 stages (the attention pool sits at stride 32) */
        const int E = c->widths[c->n_stages - 1] * 4;
        if (c->block != DINOC_RESNET_BOTTLENECK || c->n_stages != 4 || c->num_classes)
            return dinoc_fail(DINOC_ERR_CONFIG, "%s: stem \"clip\" needs block bottleneck, 4 stages "
                              "and num_classes 0", where);
        if (c->stem_width < 2 || c->stem_width % 2)
            return dinoc_fail(DINOC_ERR_CONFIG, "%s: stem \"clip\" needs an even stem_width", where);
        if (c->heads < 1 || E % c->heads || c->out_dim < 1 || c->out_dim > 65536 ||
            c->image_size < 32 || c->image_size > 4096 || c->image_size % 32)
            return dinoc_fail(DINOC_ERR_CONFIG, "%s: stem \"clip\" needs attn_heads dividing %d, "
                              "output_dim in 1..65536 and image_size a multiple of 32", where, E);
    }
    if (c->n_stages < 1 || c->n_stages > DINOC_RESNET_MAX_STAGES)
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: 'layers' must list 1 to %d stages, got %d", where,
                          DINOC_RESNET_MAX_STAGES, c->n_stages);
    for (int s = 0; s < c->n_stages; s++) {
        if (c->layers[s] < 1 || c->layers[s] > 64)
            return dinoc_fail(DINOC_ERR_CONFIG, "%s: layers[%d] = %d is not in 1..64", where, s,
                              c->layers[s]);
        if (c->widths[s] < 1 || c->widths[s] > 8192)
            return dinoc_fail(DINOC_ERR_CONFIG, "%s: widths[%d] = %d is not in 1..8192", where, s,
                              c->widths[s]);
    }
    if (c->stem_width < 1 || c->stem_width > 8192)
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: stem_width %d is not in 1..8192", where, c->stem_width);
    if (c->in_channels < 1 || c->in_channels > 64)
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: in_channels %d is not in 1..64", where, c->in_channels);
    if (c->num_classes < 0 || c->num_classes > 1000000)
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: num_classes %d is not in 0..1000000", where,
                          c->num_classes);
    if (!(c->bn_eps > 0 && c->bn_eps < 1) || !(c->bn_momentum >= 0 && c->bn_momentum <= 1))
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: bn_eps must be in (0, 1) and bn_momentum in [0, 1]",
                          where);
    return DINOC_OK;
}

static void add_entry(dinoc_resnet *m, const char *prefix, const char *suffix, int ndim,
                      const int64_t *shape, size_t offset, int decay, int is_buffer) {
    dinoc_resnet_param *e = &m->entries[m->n_entries++];
    snprintf(e->name, sizeof e->name, "%s%s", prefix, suffix);
    e->ndim  = ndim;
    e->count = 1;
    for (int i = 0; i < ndim; i++) e->count *= (size_t)(e->shape[i] = shape[i]);
    e->offset    = offset;
    e->decay     = decay;
    e->is_buffer = is_buffer;
}

static void set_unit(dinoc_resnet_unit *u, const char *conv, const char *bn, int cin, int cout,
                     int k, int stride) {
    snprintf(u->conv, sizeof u->conv, "%s", conv);
    snprintf(u->bn, sizeof u->bn, "%s", bn);
    u->cin = cin, u->cout = cout, u->k = k, u->stride = stride, u->pad = k / 2;
}

/* Lists the units and blocks of cfg (torchvision's _make_layer), then lays out the buffers. */
static dinoc_status build_layout(dinoc_resnet *m) {
    const dinoc_resnet_config *c = &m->cfg;
    const int exp = c->block == DINOC_RESNET_BOTTLENECK ? 4 : 1, per = c->block ? 3 : 2;
    m->n_blocks = 0;
    for (int s = 0; s < c->n_stages; s++) m->n_blocks += c->layers[s];
    const int max_units = 3 + m->n_blocks * (per + 1), clip = c->stem == DINOC_RESNET_STEM_CLIP;
    m->units   = dinoc_calloc((size_t)max_units, sizeof *m->units);
    m->blocks  = dinoc_calloc((size_t)m->n_blocks, sizeof *m->blocks);
    m->entries = dinoc_calloc((size_t)max_units * 5 + 9, sizeof *m->entries);
    if (!m->units || !m->blocks || !m->entries) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    const int stem_small = c->stem == DINOC_RESNET_STEM_SMALL, half = c->stem_width / 2;
    if (clip) {
        /* ModifiedResNet's stem: 3x3 s2 to width/2, 3x3 to width/2, 3x3 to width */
        set_unit(&m->units[0], "conv1", "bn1", c->in_channels, half, 3, 2);
        set_unit(&m->units[1], "conv2", "bn2", half, half, 3, 1);
        set_unit(&m->units[2], "conv3", "bn3", half, c->stem_width, 3, 1);
        m->n_stem = 3;
    } else {
        set_unit(&m->units[0], "conv1", "bn1", c->in_channels, c->stem_width, stem_small ? 3 : 7,
                 stem_small ? 1 : 2);
        m->n_stem = 1;
    }
    int nu = m->n_stem, nb = 0, inplanes = c->stem_width;
    for (int s = 0; s < c->n_stages; s++) {
        for (int i = 0; i < c->layers[s]; i++) {
            const int planes = c->widths[s], stride = s > 0 && i == 0 ? 2 : 1;
            char      p[32], cn[64], bn[64];
            dinoc_resnet_block *blk = &m->blocks[nb++];
            snprintf(p, sizeof p, "layer%d.%d.", s + 1, i);
            blk->u0 = nu, blk->nu = per, blk->down = -1, blk->pool = clip ? stride : 1;
            for (int j = 0; j < per; j++) {
                snprintf(cn, sizeof cn, "%sconv%d", p, j + 1);
                snprintf(bn, sizeof bn, "%sbn%d", p, j + 1);
                int cin = j == 0 ? inplanes : planes, cout = j == per - 1 ? planes * exp : planes;
                /* the stride sits on the 3x3 conv: conv1 of a BasicBlock, conv2 of a Bottleneck
                 * (torchvision's v1.5) */
                int k = per == 3 && j != 1 ? 1 : 3, st = j == (per == 3 ? 1 : 0) ? stride : 1;
                if (clip) st = 1; /* CLIP strides by AvgPool2d after conv2 instead */
                set_unit(&m->units[nu++], cn, bn, cin, cout, k, st);
            }
            if (stride != 1 || inplanes != planes * exp) {
                snprintf(cn, sizeof cn, "%sdownsample.0", p);
                snprintf(bn, sizeof bn, "%sdownsample.1", p);
                blk->down = nu;
                set_unit(&m->units[nu++], cn, bn, inplanes, planes * exp, 1, clip ? 1 : stride);
            }
            inplanes = planes * exp;
        }
    }
    m->n_units  = nu;
    m->feat_dim = clip ? c->out_dim : inplanes;
    /* parameters: per unit conv weight, bn weight, bn bias; then fc. Buffers: running mean, var. */
    size_t off = 0, boff = 0;
    for (int u = 0; u < nu; u++) {
        dinoc_resnet_unit *un = &m->units[u];
        un->w_off             = off;
        off += (size_t)un->cout * un->cin * un->k * un->k;
        un->bnw_off = off, off += (size_t)un->cout;
        un->bnb_off = off, off += (size_t)un->cout;
        un->rm_off = boff, boff += (size_t)un->cout;
        un->rv_off = boff, boff += (size_t)un->cout;
    }
    m->fc_w_off = off, off += (size_t)c->num_classes * m->feat_dim;
    m->fc_b_off = off, off += (size_t)c->num_classes;
    const int E = inplanes, S = c->image_size / 32;
    if (clip) {
        /* AttentionPool2d: positional_embedding [S*S+1, E]; q, k, v [E, E] + [E]; c_proj [out, E] */
        m->ap_pos_off = off, off += (size_t)(S * S + 1) * E;
        for (int i = 0; i < 4; i++) {
            const size_t rows = i == 3 ? (size_t)c->out_dim : (size_t)E;
            m->ap_off[i][0]   = off, off += rows * E;
            m->ap_off[i][1]   = off, off += rows;
        }
    }
    m->n_params = off, m->n_buffers = boff;
    /* named tensors: parameters first, in state_dict order, then the buffers */
    for (int u = 0; u < nu; u++) {
        const dinoc_resnet_unit *un = &m->units[u];
        int64_t wsh[4] = {un->cout, un->cin, un->k, un->k}, csh[1] = {un->cout};
        add_entry(m, un->conv, ".weight", 4, wsh, un->w_off, 1, 0);
        add_entry(m, un->bn, ".weight", 1, csh, un->bnw_off, 0, 0);
        add_entry(m, un->bn, ".bias", 1, csh, un->bnb_off, 0, 0);
    }
    if (c->num_classes) {
        int64_t fsh[2] = {c->num_classes, m->feat_dim};
        add_entry(m, "fc", ".weight", 2, fsh, m->fc_w_off, 1, 0);
        add_entry(m, "fc", ".bias", 1, fsh, m->fc_b_off, 0, 0);
    }
    if (clip) {
        static const char *proj[4] = {"attnpool.q_proj", "attnpool.k_proj", "attnpool.v_proj",
                                      "attnpool.c_proj"};
        int64_t psh[2] = {S * S + 1, E};
        add_entry(m, "attnpool.positional_embedding", "", 2, psh, m->ap_pos_off, 0, 0);
        for (int i = 0; i < 4; i++) {
            int64_t wsh[2] = {i == 3 ? c->out_dim : E, E};
            add_entry(m, proj[i], ".weight", 2, wsh, m->ap_off[i][0], 1, 0);
            add_entry(m, proj[i], ".bias", 1, wsh, m->ap_off[i][1], 0, 0);
        }
    }
    for (int u = 0; u < nu; u++) {
        const dinoc_resnet_unit *un = &m->units[u];
        int64_t csh[1] = {un->cout};
        add_entry(m, un->bn, ".running_mean", 1, csh, un->rm_off, 0, 1);
        add_entry(m, un->bn, ".running_var", 1, csh, un->rv_off, 0, 1);
    }
    return DINOC_OK;
}

dinoc_status dinoc_resnet_alloc_layout(dinoc_resnet **out, const dinoc_resnet_config *cfg) {
    *out           = NULL;
    dinoc_status s = dinoc_resnet_config_check(cfg, "ResNet config");
    if (s) return s;
    dinoc_resnet *m = dinoc_calloc(1, sizeof *m);
    if (!m) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    m->cfg = *cfg;
    if ((s = build_layout(m))) {
        dinoc_resnet_free(m);
        return s;
    }
    *out = m;
    return DINOC_OK;
}

dinoc_status dinoc_resnet_alloc_data(dinoc_resnet *m) {
    m->params  = dinoc_calloc(m->n_params ? m->n_params : 1, sizeof(float));
    m->buffers = dinoc_calloc(m->n_buffers ? m->n_buffers : 1, sizeof(float));
    if (!m->params || !m->buffers)
        return dinoc_fail(DINOC_ERR_NOMEM, "ResNet: out of memory for %zu parameters", m->n_params);
    /* a fresh torch BatchNorm2d: weight 1, bias 0, running mean 0, running var 1 */
    for (int u = 0; u < m->n_units; u++)
        for (int i = 0; i < m->units[u].cout; i++) {
            m->params[m->units[u].bnw_off + i]  = 1.0f;
            m->buffers[m->units[u].rv_off + i] = 1.0f;
        }
    return DINOC_OK;
}

dinoc_status dinoc_resnet_alloc(dinoc_resnet **out, const dinoc_resnet_config *cfg) {
    dinoc_status s = dinoc_resnet_alloc_layout(out, cfg);
    if (!s && (s = dinoc_resnet_alloc_data(*out))) {
        dinoc_resnet_free(*out);
        *out = NULL;
    }
    return s;
}

dinoc_status dinoc_resnet_init_random(dinoc_resnet **out, const dinoc_resnet_config *cfg,
                                      uint64_t seed) {
    dinoc_status s = dinoc_resnet_alloc(out, cfg);
    if (s) return s;
    dinoc_resnet *m = *out;
    dinoc_rng     r;
    dinoc_rng_seed(&r, seed);
    for (int u = 0; u < m->n_units; u++) {
        const dinoc_resnet_unit *un = &m->units[u];
        /* kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / (cout k k)) */
        const size_t n   = (size_t)un->cout * un->cin * un->k * un->k;
        const float  std = sqrtf(2.0f / (float)(un->cout * un->k * un->k));
        for (size_t i = 0; i < n; i++) m->params[un->w_off + i] = std * dinoc_rng_normal(&r);
    }
    if (m->cfg.stem == DINOC_RESNET_STEM_CLIP) {
        /* OpenAI's initialize_parameters: positional embedding and the four projections
         * N(0, E^-1/2), biases 0 */
        const size_t E = (size_t)m->cfg.widths[3] * 4, S = (size_t)m->cfg.image_size / 32;
        const float  std = 1.0f / sqrtf((float)E);
        for (size_t i = 0; i < (S * S + 1) * E; i++) m->params[m->ap_pos_off + i] = std * dinoc_rng_normal(&r);
        for (int j = 0; j < 4; j++)
            for (size_t i = 0; i < (j == 3 ? (size_t)m->cfg.out_dim : E) * E; i++)
                m->params[m->ap_off[j][0] + i] = std * dinoc_rng_normal(&r);
    }
    /* nn.Linear's default: weight and bias uniform in +-1/sqrt(fan_in) */
    const float  bound = 1.0f / sqrtf((float)m->feat_dim);
    const size_t nfc   = (size_t)m->cfg.num_classes * (m->feat_dim + 1);
    for (size_t i = 0; i < nfc; i++)
        m->params[m->fc_w_off + i] = bound * (2.0f * dinoc_rng_uniform(&r) - 1.0f);
    return DINOC_OK;
}

void dinoc_resnet_free(dinoc_resnet *m) {
    if (!m) return;
    dinoc_free(m->units);
    dinoc_free(m->blocks);
    dinoc_free(m->entries);
    dinoc_free(m->params);
    dinoc_free(m->buffers);
    dinoc_free(m);
}

int dinoc_resnet_feat_dim(const dinoc_resnet *m) { return m->feat_dim; }

int dinoc_resnet_entries(const dinoc_resnet *m, const dinoc_resnet_param **out) {
    if (out) *out = m->entries;
    return m->n_entries;
}

int dinoc_resnet_n_param_entries(const dinoc_resnet *m) {
    int n = 0;
    while (n < m->n_entries && !m->entries[n].is_buffer) n++;
    return n;
}

/* ---- config.json ------------------------------------------------------------------------------ */

static const char *k_keys[] = {"model_type", "arch", "block", "stem", "layers", "widths",
                               "stem_width", "in_channels", "num_classes", "bn_eps",
                               "bn_momentum", "attn_heads", "output_dim", "image_size", NULL};

/* A number field in [lo, hi] (integer if integral); absent leaves *v unchanged. */
static dinoc_status num_field(const cJSON *root, const char *key, double lo, double hi,
                              int integral, double *v, const char *file) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it) return DINOC_OK;
    double x = it->valuedouble;
    if (!cJSON_IsNumber(it) || !isfinite(x) || x < lo || x > hi || (integral && x != floor(x)))
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: field '%s' must be %s in [%g, %g]", file, key,
                          integral ? "an integer" : "a number", lo, hi);
    *v = x;
    return DINOC_OK;
}

/* An integer array of 1..4 entries (layers, widths); returns its length in *n. */
static dinoc_status int_list(const cJSON *root, const char *key, int *out, int *n, const char *file) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it) return DINOC_OK;
    int len = cJSON_IsArray(it) ? cJSON_GetArraySize(it) : -1;
    if (len < 1 || len > DINOC_RESNET_MAX_STAGES)
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: field '%s' must be an array of 1 to %d integers",
                          file, key, DINOC_RESNET_MAX_STAGES);
    for (int i = 0; i < len; i++) {
        const cJSON *e = cJSON_GetArrayItem(it, i);
        if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) ||
            e->valuedouble < 1 || e->valuedouble > 8192)
            return dinoc_fail(DINOC_ERR_CONFIG, "%s: %s[%d] must be an integer in 1..8192", file,
                              key, i);
        out[i] = (int)e->valuedouble;
    }
    *n = len;
    return DINOC_OK;
}

static dinoc_status parse_config(dinoc_resnet_config *cfg, const cJSON *root, const char *file) {
    if (!cJSON_IsObject(root)) return dinoc_fail(DINOC_ERR_CONFIG, "%s: not a JSON object", file);
    for (const cJSON *it = root->child; it; it = it->next) {
        int known = 0;
        for (int i = 0; k_keys[i] && !known; i++) known = strcmp(it->string, k_keys[i]) == 0;
        if (!known) return dinoc_fail(DINOC_ERR_CONFIG, "%s: unknown field '%s'", file, it->string);
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (mt && !(cJSON_IsString(mt) && strcmp(mt->valuestring, "resnet") == 0))
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: model_type must be \"resnet\"", file);
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(root, "arch");
    if (!cJSON_IsString(arch)) return dinoc_fail(DINOC_ERR_CONFIG, "%s: missing string field 'arch'", file);
    const int    custom = strcmp(arch->valuestring, "custom") == 0;
    dinoc_status s      = DINOC_OK;
    if (custom) {
        memset(cfg, 0, sizeof *cfg);
        snprintf(cfg->arch, sizeof cfg->arch, "custom");
        cfg->in_channels = 3, cfg->bn_eps = 1e-5f, cfg->bn_momentum = 0.1f;
        cfg->block = -1;
    } else if ((s = dinoc_resnet_preset(cfg, arch->valuestring))) {
        return dinoc_fail_prefix(s, "%s", file);
    }
    const cJSON *blk = cJSON_GetObjectItemCaseSensitive(root, "block");
    if (blk) {
        const char *b = cJSON_IsString(blk) ? blk->valuestring : "";
        cfg->block    = !strcmp(b, "basic") ? DINOC_RESNET_BASIC : !strcmp(b, "bottleneck") ? DINOC_RESNET_BOTTLENECK : -2;
        if (cfg->block == -2)
            return dinoc_fail(DINOC_ERR_CONFIG, "%s: field 'block' must be \"basic\" or \"bottleneck\"", file);
    }
    const cJSON *stem = cJSON_GetObjectItemCaseSensitive(root, "stem");
    if (stem) {
        const char *b = cJSON_IsString(stem) ? stem->valuestring : "";
        cfg->stem     = !strcmp(b, "imagenet") ? DINOC_RESNET_STEM_IMAGENET
                        : !strcmp(b, "small")  ? DINOC_RESNET_STEM_SMALL
                        : !strcmp(b, "clip")   ? DINOC_RESNET_STEM_CLIP : -1;
        if (cfg->stem < 0)
            return dinoc_fail(DINOC_ERR_CONFIG, "%s: field 'stem' must be \"imagenet\", \"small\" or "
                              "\"clip\"", file);
    }
    int nl = custom ? 0 : cfg->n_stages, nw = nl;
    if ((s = int_list(root, "layers", cfg->layers, &nl, file)) ||
        (s = int_list(root, "widths", cfg->widths, &nw, file)))
        return s;
    if (custom && (cfg->block < 0 || !nl || !nw))
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: arch \"custom\" needs 'block', 'layers' and 'widths'", file);
    if (nl != nw)
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: 'layers' has %d stages but 'widths' %d", file, nl, nw);
    cfg->n_stages = nl;
    double sw = cJSON_GetObjectItemCaseSensitive(root, "widths") || custom ? cfg->widths[0] : cfg->stem_width;
    double ic = cfg->in_channels, nc = cfg->num_classes, eps = cfg->bn_eps, mom = cfg->bn_momentum;
    double hd = cfg->heads, od = cfg->out_dim, is = cfg->image_size;
    if ((s = num_field(root, "attn_heads", 1, 4096, 1, &hd, file)) ||
        (s = num_field(root, "output_dim", 1, 65536, 1, &od, file)) ||
        (s = num_field(root, "image_size", 32, 4096, 1, &is, file)))
        return s;
    cfg->heads = (int)hd, cfg->out_dim = (int)od, cfg->image_size = (int)is;
    if ((s = num_field(root, "stem_width", 1, 8192, 1, &sw, file)) ||
        (s = num_field(root, "in_channels", 1, 64, 1, &ic, file)) ||
        (s = num_field(root, "num_classes", 0, 1000000, 1, &nc, file)) ||
        (s = num_field(root, "bn_eps", 1e-12, 0.5, 0, &eps, file)) ||
        (s = num_field(root, "bn_momentum", 0, 1, 0, &mom, file)))
        return s;
    cfg->stem_width = (int)sw, cfg->in_channels = (int)ic, cfg->num_classes = (int)nc;
    cfg->bn_eps = (float)eps, cfg->bn_momentum = (float)mom;
    return dinoc_resnet_config_check(cfg, file);
}

static int has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* "<bn>.num_batches_tracked" of one of the model's BNs? */
static int is_nbt(const dinoc_resnet *m, const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || strcmp(dot, ".num_batches_tracked")) return 0;
    for (int u = 0; u < m->n_units; u++)
        if (strlen(m->units[u].bn) == (size_t)(dot - name) && has_prefix(name, m->units[u].bn)) return 1;
    return 0;
}

static const char *fmt_shape(char *buf, const int64_t *shape, int ndim) {
    buf[0] = 0;
    for (int k = 0; k < ndim && k < DINOC_MAX_DIMS; k++)
        snprintf(buf + strlen(buf), 128 - strlen(buf), "%s%lld", k ? "," : "", (long long)shape[k]);
    return buf;
}

/* Checks every tensor of w against the model's list (copy = 0), or copies them in (copy = 1). */
static dinoc_status match_weights(dinoc_resnet *m, const dinoc_weights *w, const char *prefix,
                                  int copy) {
    char full[192];
    for (int i = 0; i < m->n_entries; i++) {
        const dinoc_resnet_param *e = &m->entries[i];
        snprintf(full, sizeof full, "%s%s", prefix, e->name);
        const dinoc_tensor *t = dinoc_weights_find(w, full);
        if (!t)
            return dinoc_fail(DINOC_ERR_SHAPE, "missing tensor '%s' (a %s ResNet%s)", full,
                              m->cfg.arch, m->cfg.num_classes ? " with an fc" : "");
        int same = t->ndim == e->ndim;
        for (int k = 0; same && k < e->ndim; k++) same = t->shape[k] == e->shape[k];
        if (!same) {
            char got[128], want[128];
            return dinoc_fail(DINOC_ERR_SHAPE, "%s: tensor '%s' has shape [%s], expected [%s]",
                              dinoc_weights_file_of(w, t), full, fmt_shape(got, t->shape, t->ndim),
                              fmt_shape(want, e->shape, e->ndim));
        }
        if (!copy) continue;
        float       *dst = (e->is_buffer ? m->buffers : m->params) + e->offset;
        dinoc_status s   = dinoc_tensor_to_f32(t, dst, (int64_t)e->count);
        if (s) return dinoc_fail_prefix(s, "%s: '%s'", dinoc_weights_file_of(w, t), full);
    }
    int have_nbt = 0;
    for (int j = 0; j < dinoc_weights_count(w); j++) {
        const dinoc_tensor *t  = dinoc_weights_get(w, j);
        const char         *nm = has_prefix(t->name, prefix) ? t->name + strlen(prefix) : NULL;
        int                 found = 0;
        if (!nm) {
            /* outside the backbone's prefix: a CLIP text tower, a DINO head */
            if (!copy) dinoc_log(DINOC_LOG_INFO, "skipping '%s' (not under '%s')", t->name, prefix);
            continue;
        }
        for (int i = 0; nm && i < m->n_entries && !found; i++) found = !strcmp(nm, m->entries[i].name);
        if (found) continue;
        if (!is_nbt(m, nm) || t->ndim > 1 || dinoc_tensor_numel(t) != 1)
            return dinoc_fail(DINOC_ERR_SHAPE, "%s: unexpected tensor '%s' (not in a %s ResNet%s)",
                              dinoc_weights_file_of(w, t), t->name, m->cfg.arch,
                              m->cfg.num_classes ? "" : " without fc");
        if (copy && !have_nbt && t->dtype == DINOC_DTYPE_I64) {
            memcpy(&m->num_batches_tracked, t->data, sizeof(int64_t));
            have_nbt = 1;
        }
    }
    return DINOC_OK;
}

dinoc_status dinoc_resnet_load(dinoc_resnet **out, const char *path) {
    *out          = NULL;
    const int dir = dinoc_is_dir(path);
    if (!dir && !dinoc_file_exists(path))
        return dinoc_fail(DINOC_ERR_IO, "%s: no such model folder or file", path);
    char *folder = strdup(path);
    if (!folder) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    if (!dir) {
        char *slash = strrchr(folder, '/');
        if (slash)
            *slash = 0;
        else
            strcpy(folder, ".");
    }
    char               *cfg_path = dinoc_path_join(folder, "config.json");
    cJSON              *root     = NULL;
    dinoc_weights      *w        = NULL;
    dinoc_resnet       *m        = NULL;
    dinoc_resnet_config cfg;
    dinoc_status        s;
    if (!cfg_path) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((s = dinoc_json_load(&root, cfg_path)) || (s = parse_config(&cfg, root, cfg_path))) goto done;
    if ((s = dinoc_weights_open(&w, path))) goto done;
    /* DINO checkpoints keep the backbone under "module.backbone." / "backbone." / "module.", OpenAI
     * CLIP's state dict under "visual."; with a prefix, tensors outside it (text tower, heads) are
     * skipped */
    static const char *prefixes[] = {"", "backbone.", "module.backbone.", "module.", "visual.", NULL};
    const char        *prefix     = "";
    for (int i = 0; prefixes[i]; i++) {
        char probe[64];
        snprintf(probe, sizeof probe, "%sconv1.weight", prefixes[i]);
        if (dinoc_weights_find(w, probe)) {
            prefix = prefixes[i];
            break;
        }
    }
    /* names and shapes first, so a config that asks for a huge model cannot make us allocate more
     * than the file can fill */
    if ((s = dinoc_resnet_alloc_layout(&m, &cfg)) || (s = match_weights(m, w, prefix, 0)) ||
        (s = dinoc_resnet_alloc_data(m)) || (s = match_weights(m, w, prefix, 1)))
        s = dinoc_fail_prefix(s, "%s", path);
done:
    cJSON_Delete(root);
    dinoc_weights_close(w);
    free(cfg_path);
    free(folder);
    if (s) {
        dinoc_resnet_free(m);
        m = NULL;
    }
    *out = m;
    return s;
}

static cJSON *config_json(const dinoc_resnet_config *c) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model_type", "resnet");
    cJSON_AddStringToObject(root, "arch", "custom");
    cJSON_AddStringToObject(root, "block", c->block == DINOC_RESNET_BASIC ? "basic" : "bottleneck");
    cJSON_AddStringToObject(root, "stem", c->stem == DINOC_RESNET_STEM_SMALL ? "small"
                                          : c->stem == DINOC_RESNET_STEM_CLIP ? "clip" : "imagenet");
    if (c->stem == DINOC_RESNET_STEM_CLIP) {
        cJSON_AddNumberToObject(root, "attn_heads", c->heads);
        cJSON_AddNumberToObject(root, "output_dim", c->out_dim);
        cJSON_AddNumberToObject(root, "image_size", c->image_size);
    }
    cJSON_AddItemToObject(root, "layers", cJSON_CreateIntArray(c->layers, c->n_stages));
    cJSON_AddItemToObject(root, "widths", cJSON_CreateIntArray(c->widths, c->n_stages));
    cJSON_AddNumberToObject(root, "stem_width", c->stem_width);
    cJSON_AddNumberToObject(root, "in_channels", c->in_channels);
    cJSON_AddNumberToObject(root, "num_classes", c->num_classes);
    char buf[32];
    /* the float's shortest decimal form, not its double expansion (1e-05, not 9.99999974738e-06) */
    snprintf(buf, sizeof buf, "%.9g", c->bn_eps);
    cJSON_AddNumberToObject(root, "bn_eps", strtod(buf, NULL));
    snprintf(buf, sizeof buf, "%.9g", c->bn_momentum);
    cJSON_AddNumberToObject(root, "bn_momentum", strtod(buf, NULL));
    return root;
}

dinoc_status dinoc_resnet_save(const dinoc_resnet *m, const char *dir) {
    dinoc_status s = dinoc_mkdir(dir);
    if (s) return s;
    const int      nu = m->n_units, n = m->n_entries + nu;
    dinoc_tensor  *ts = dinoc_calloc((size_t)n, sizeof *ts);
    char          *nbt = dinoc_calloc((size_t)nu, 96);
    char          *st_path = dinoc_path_join(dir, "model.safetensors");
    char          *cfg_path = dinoc_path_join(dir, "config.json");
    char          *txt = NULL;
    if (!ts || !nbt || !st_path || !cfg_path) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < m->n_entries; i++) {
        const dinoc_resnet_param *e = &m->entries[i];
        ts[i].name  = e->name;
        ts[i].dtype = DINOC_DTYPE_F32;
        ts[i].ndim  = e->ndim;
        for (int k = 0; k < e->ndim; k++) ts[i].shape[k] = e->shape[k];
        ts[i].nbytes = e->count * sizeof(float);
        ts[i].data   = (e->is_buffer ? m->buffers : m->params) + e->offset;
    }
    for (int u = 0; u < nu; u++) {
        dinoc_tensor *t = &ts[m->n_entries + u];
        snprintf(nbt + (size_t)u * 96, 96, "%s.num_batches_tracked", m->units[u].bn);
        t->name   = nbt + (size_t)u * 96;
        t->dtype  = DINOC_DTYPE_I64;
        t->ndim   = 0;
        t->nbytes = sizeof(int64_t);
        t->data   = &m->num_batches_tracked;
    }
    static const char *meta[] = {"format", "pt", NULL};
    if ((s = dinoc_safetensors_write(st_path, ts, n, meta))) goto done;
    cJSON *root = config_json(&m->cfg);
    txt         = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!txt) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", cfg_path);
        goto done;
    }
    s = dinoc_write_file_atomic(cfg_path, txt, strlen(txt));
done:
    free(txt);
    dinoc_free(ts);
    dinoc_free(nbt);
    free(st_path);
    free(cfg_path);
    return s;
}
