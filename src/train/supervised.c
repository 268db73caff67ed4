/* supervised.c: supervised ViT classification: a linear head on the final normed CLS token,
 * softmax cross-entropy (optional label smoothing), AdamW with per-iteration cosine schedules for
 * lr (linear warmup) and weight decay, global-norm gradient clipping, stochastic depth (DINO's
 * linear rule over blocks), random-crop + flip augmentation on data threads, and checkpoints that
 * resume bit for bit (same thread count).
 *
 * Checkpoint (RUN/checkpoint.safetensors, written atomically):
 *   params [n]      the backbone's flat parameter buffer (dinoc_vit_carve layout)
 *   head [K*D + K]  head weight [K, D] then bias [K]
 *   adam.m, adam.v, head_adam.m, head_adam.v   AdamW moments
 *   rng U64 [4]     the training RNG (stochastic depth)
 *   metadata: step, adam_step, loader_epoch, loader_index, config (JSON of dinoc_sup_config),
 *             classes, format "dinoc-supervised-1"
 * Tested by tests/test_train.c (resume equals an uninterrupted run; NaN stops the run). */
#include "supervised.h"

#include "../data/data.h"
#include "../nn/vit_train.h"
#include "optim.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>
#include <time.h>

/* Fashion-MNIST pixel statistics over the training split (x / 255). */
#define FMNIST_MEAN 0.2860f
#define FMNIST_STD 0.3530f

dinoc_sup_config dinoc_sup_default(void) {
    dinoc_sup_config c;
    memset(&c, 0, sizeof c);
    c.data             = "fashion-mnist";
    c.out              = "runs/supervised";
    c.dim              = 128;
    c.depth            = 6;
    c.heads            = 4;
    c.patch            = 7;
    c.image            = 28;
    c.channels         = 1;
    c.epochs           = 8;
    c.batch            = 128;
    c.accum            = 1;
    c.warmup_epochs    = 1;
    c.lr               = 1e-3f;
    c.min_lr           = 1e-5f;
    c.wd               = 0.05f;
    c.wd_end           = 0.05f;
    c.label_smoothing  = 0.1f;
    c.drop_path        = 0.05f;
    c.clip_grad        = 1.0f;
    c.pad              = 2;
    c.flip             = 1;
    c.seed             = 0;
    c.workers          = 2;
    c.ckpt_every       = 500;
    c.eval_every_epoch = 1;
    return c;
}

/* ---- data transform -------------------------------------------------------------------------- */

typedef struct {
    int   size, channels, pad, flip;
    float mean[3], std[3];
} xform;

/* Resize (when needed) to size x size, random crop from a zero-padded canvas, flip, normalise. */
static dinoc_status transform(float *out, const dinoc_image *img, dinoc_rng *rng, void *user) {
    const xform *t   = user;
    dinoc_image  tmp = {0, 0, 0, NULL};
    const dinoc_image *src = img;
    if (img->w != t->size || img->h != t->size) {
        dinoc_status s = dinoc_image_resize(&tmp, img, t->size, t->size, DINOC_RESAMPLE_BILINEAR);
        if (s) return s;
        src = &tmp;
    }
    int dx = 0, dy = 0, fl = 0;
    if (t->pad > 0) {
        dx = (int)(dinoc_rng_u64(rng) % (uint64_t)(2 * t->pad + 1)) - t->pad;
        dy = (int)(dinoc_rng_u64(rng) % (uint64_t)(2 * t->pad + 1)) - t->pad;
    }
    if (t->flip) fl = dinoc_rng_uniform(rng) < 0.5f;
    const int S = t->size;
    for (int c = 0; c < t->channels; c++) {
        int sc = src->c == 1 ? 0 : c; /* grey sources feed every channel */
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                int   sx = (fl ? S - 1 - x : x) + dx, sy = y + dy;
                float v  = 0.0f;
                if (sx >= 0 && sx < S && sy >= 0 && sy < S) v = src->data[((size_t)sy * S + sx) * src->c + sc] / 255.0f;
                out[((size_t)c * S + y) * S + x] = (v - t->mean[c]) / t->std[c];
            }
    }
    free(tmp.data);
    return DINOC_OK;
}

void dinoc_train_preprocess(dinoc_preprocess *pp, const char *data, int image, int channels) {
    *pp = dinoc_preprocess_default();
    pp->do_convert_rgb = channels == 3;
    if (strcmp(data, "fashion-mnist") == 0) {
        /* 28 x 28 grey: resized only if the model's side differs; the training split's statistics */
        pp->resize_mode = DINOC_RESIZE_EXACT, pp->resize_w = pp->resize_h = image;
        pp->resample = DINOC_RESAMPLE_BICUBIC, pp->do_center_crop = 0;
        for (int i = 0; i < 3; i++) pp->mean[i] = FMNIST_MEAN, pp->std[i] = FMNIST_STD;
    } else {
        /* photos: DINO's evaluation transform scaled to the side (256 -> 224) */
        pp->shortest_edge = (int)(image * 256.0 / 224.0 + 0.5);
        pp->crop_w = pp->crop_h = image;
    }
}

int dinoc_train_has_test(const char *data) {
    if (strcmp(data, "fashion-mnist") == 0) return 1;
    char *sub = dinoc_path_join(data, "test");
    int   yes = sub && dinoc_is_dir(sub);
    free(sub);
    return yes;
}

dinoc_status dinoc_train_open_data(dinoc_dataset **ds, const char *data, const char *data_dir, int train) {
    if (strcmp(data, "fashion-mnist") == 0) return dinoc_dataset_idx_open(ds, data_dir, train);
    /* an image folder: DIR/train when present, else DIR, for training; DIR/test for the test split,
     * never DIR itself (its images are the training images: they would score themselves) */
    char *sub = dinoc_path_join(data, train ? "train" : "test");
    if (!sub) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    dinoc_status s = DINOC_OK;
    if (dinoc_is_dir(sub)) s = dinoc_dataset_folder_open(ds, sub);
    else if (train) s = dinoc_dataset_folder_open(ds, data);
    else s = dinoc_fail(DINOC_ERR_ARG, "%s: no test/ subfolder, so no test split (the images of %s are the training "
                        "images)", data, data);
    free(sub);
    return s;
}

static void fill_xform(xform *t, const dinoc_sup_config *c, int augment) {
    t->size = c->image, t->channels = c->channels;
    t->pad  = augment ? c->pad : 0;
    t->flip = augment ? c->flip : 0;
    for (int i = 0; i < 3; i++) {
        int fm = strcmp(c->data, "fashion-mnist") == 0;
        static const float im[3] = {0.485f, 0.456f, 0.406f}, is[3] = {0.229f, 0.224f, 0.225f};
        t->mean[i] = fm ? FMNIST_MEAN : im[i];
        t->std[i]  = fm ? FMNIST_STD : is[i];
    }
}

static dinoc_vit_config model_config(const dinoc_sup_config *c) {
    dinoc_vit_config v;
    memset(&v, 0, sizeof v);
    v.arch = DINOC_ARCH_VIT, v.dim = c->dim, v.depth = c->depth, v.heads = c->heads;
    v.ffn_hidden = 4 * c->dim, v.ffn = DINOC_FFN_MLP, v.patch = c->patch, v.channels = c->channels;
    v.image_size = c->image, v.qkv_bias = 1, v.ln_eps = 1e-6f, v.pos_interp = DINOC_POS_INTERP_SIZE;
    return v;
}

/* ---- config <-> JSON (stored in the checkpoint) ---------------------------------------------- */

static char *config_to_json(const dinoc_sup_config *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "data", c->data);
    if (c->data_dir) cJSON_AddStringToObject(o, "data_dir", c->data_dir);
#define NUM(f) cJSON_AddNumberToObject(o, #f, (double)c->f)
    NUM(dim), NUM(depth), NUM(heads), NUM(patch), NUM(image), NUM(channels), NUM(epochs), NUM(batch);
    NUM(accum);
    NUM(warmup_epochs), NUM(lr), NUM(min_lr), NUM(wd), NUM(wd_end), NUM(label_smoothing);
    NUM(drop_path), NUM(clip_grad), NUM(pad), NUM(flip), NUM(seed), NUM(workers), NUM(ckpt_every);
    NUM(eval_every_epoch);
#undef NUM
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* Reads the saved config over *c (strings are duplicated into *keep, freed by the caller). */
static dinoc_status config_from_json(dinoc_sup_config *c, const char *json, const char *where, char **keep) {
    cJSON *o = cJSON_Parse(json);
    if (!o) return dinoc_fail(DINOC_ERR_FORMAT, "%s: config metadata is not JSON", where);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "data");
    if (!cJSON_IsString(d)) {
        cJSON_Delete(o);
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: config metadata lacks 'data'", where);
    }
    keep[0] = strdup(d->valuestring);
    c->data = keep[0];
    const cJSON *dd = cJSON_GetObjectItemCaseSensitive(o, "data_dir");
    if (cJSON_IsString(dd)) keep[1] = strdup(dd->valuestring), c->data_dir = keep[1];
#define NUM(f, T)                                                                     \
    do {                                                                              \
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, #f);                    \
        if (!cJSON_IsNumber(it)) {                                                    \
            cJSON_Delete(o);                                                          \
            return dinoc_fail(DINOC_ERR_FORMAT, "%s: config metadata lacks '%s'", where, #f); \
        }                                                                             \
        c->f = (T)it->valuedouble;                                                    \
    } while (0)
    NUM(dim, int);
    NUM(depth, int);
    NUM(heads, int);
    NUM(patch, int);
    NUM(image, int);
    NUM(channels, int);
    NUM(epochs, int);
    NUM(accum, int);
    NUM(batch, int);
    NUM(warmup_epochs, int);
    NUM(lr, float);
    NUM(min_lr, float);
    NUM(wd, float);
    NUM(wd_end, float);
    NUM(label_smoothing, float);
    NUM(drop_path, float);
    NUM(clip_grad, float);
    NUM(pad, int);
    NUM(flip, int);
    NUM(seed, uint64_t);
    NUM(workers, int);
    NUM(ckpt_every, int);
    NUM(eval_every_epoch, int);
#undef NUM
    cJSON_Delete(o);
    return DINOC_OK;
}

/* ---- the run --------------------------------------------------------------------------------- */

typedef struct {
    dinoc_sup_config   cfg;
    dinoc_model       *m;
    int                K, D;
    size_t             nh;           /* head floats: K*D + K */
    float             *head, *ghead; /* [K*D + K] */
    float             *g;            /* [n_params] */
    dinoc_adamw        opt, hopt;
    dinoc_param_group *groups;
    int                ngroups;
    dinoc_param_group  hgroups[2];
    dinoc_train_state *ts;
    dinoc_dataset     *train;
    dinoc_loader      *ld;
    xform              xf;
    dinoc_rng          rng;
    int64_t            step;
    float             *cls, *dcls, *logits, *probs, *dlogits, *dout, *dpr;
} run;

static void run_free(run *r) {
    dinoc_model_free(r->m);
    dinoc_free(r->head), dinoc_free(r->ghead), dinoc_free(r->g);
    dinoc_adamw_free(&r->opt), dinoc_adamw_free(&r->hopt);
    free(r->groups);
    dinoc_train_state_free(r->ts);
    dinoc_loader_free(r->ld);
    dinoc_dataset_free(r->train);
    free(r->cls), free(r->dcls), free(r->logits), free(r->probs), free(r->dlogits), free(r->dout), free(r->dpr);
}

static dinoc_status save_checkpoint(run *r) {
    const dinoc_sup_config *c = &r->cfg;
    dinoc_status            s = dinoc_mkdir(c->out);
    if (s) return s;
    char *path = dinoc_path_join(c->out, "checkpoint.safetensors");
    char *cj   = config_to_json(c);
    if (!path || !cj) {
        free(path), free(cj);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    }
    dinoc_loader_pos pos = dinoc_loader_tell(r->ld);
    char step[32], astep[32], lep[32], lidx[32], classes[16];
    snprintf(step, sizeof step, "%lld", (long long)r->step);
    snprintf(astep, sizeof astep, "%lld", (long long)r->opt.step);
    snprintf(lep, sizeof lep, "%lld", (long long)pos.epoch);
    snprintf(lidx, sizeof lidx, "%lld", (long long)pos.index);
    snprintf(classes, sizeof classes, "%d", r->K);
    const char *meta[] = {"format", "dinoc-supervised-1", "step", step, "adam_step", astep, "loader_epoch", lep,
                          "loader_index", lidx, "classes", classes, "config", cj, NULL};
    const int64_t n = (int64_t)r->m->n_params, nh = (int64_t)r->nh;
    dinoc_tensor  t[7] = {
        {"params", DINOC_DTYPE_F32, 1, {n}, (size_t)n * 4, r->m->params},
        {"head", DINOC_DTYPE_F32, 1, {nh}, (size_t)nh * 4, r->head},
        {"adam.m", DINOC_DTYPE_F32, 1, {n}, (size_t)n * 4, r->opt.m},
        {"adam.v", DINOC_DTYPE_F32, 1, {n}, (size_t)n * 4, r->opt.v},
        {"head_adam.m", DINOC_DTYPE_F32, 1, {nh}, (size_t)nh * 4, r->hopt.m},
        {"head_adam.v", DINOC_DTYPE_F32, 1, {nh}, (size_t)nh * 4, r->hopt.v},
        {"rng", DINOC_DTYPE_U64, 1, {4}, 32, r->rng.s},
    };
    s = dinoc_safetensors_write(path, t, 7, meta);
    free(path), free(cj);
    if (!s) s = dinoc_model_save_hf(r->m, c->out);
    return s;
}

static dinoc_status read_f32_into(const dinoc_safetensors *st, const char *name, float *dst, int64_t n,
                                  const char *where) {
    const dinoc_tensor *t = dinoc_safetensors_find(st, name);
    if (!t) return dinoc_fail(DINOC_ERR_FORMAT, "%s: missing tensor '%s'", where, name);
    if (dinoc_tensor_numel(t) != n)
        return dinoc_fail(DINOC_ERR_SHAPE, "%s: tensor '%s' has %lld elements, expected %lld", where, name,
                          (long long)dinoc_tensor_numel(t), (long long)n);
    return dinoc_tensor_to_f32(t, dst, n);
}

/* Sets up model, head, optimiser, data; loads the checkpoint when resuming. */
static dinoc_status run_init(run *r, const dinoc_sup_config *cfg, char **keep) {
    memset(r, 0, sizeof *r);
    r->cfg                = *cfg;
    dinoc_safetensors *st = NULL;
    char              *ck = NULL;
    dinoc_status       s  = DINOC_OK;
    dinoc_loader_pos   pos = {0, 0};
    if (cfg->resume) {
        ck = dinoc_path_join(cfg->resume, "checkpoint.safetensors");
        if (!ck) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        if ((s = dinoc_safetensors_open(&st, ck))) goto done;
        const char *cj = dinoc_safetensors_metadata(st, "config");
        const char *fm = dinoc_safetensors_metadata(st, "format");
        if (!cj || !fm || strcmp(fm, "dinoc-supervised-1") != 0) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: not a dinoc supervised checkpoint", ck);
            goto done;
        }
        if ((s = config_from_json(&r->cfg, cj, ck, keep))) goto done;
        r->cfg.out = cfg->out ? cfg->out : cfg->resume, r->cfg.resume = cfg->resume;
        r->cfg.max_steps = cfg->max_steps, r->cfg.progress = cfg->progress;
        r->cfg.progress_user = cfg->progress_user;
    }
    const dinoc_sup_config *c = &r->cfg;
    if (c->batch <= 0 || c->epochs <= 0 || c->accum <= 0 || c->image <= 0 || c->image % c->patch) {
        s = dinoc_fail(DINOC_ERR_ARG, "batch %d, epochs %d, image %d (must be a multiple of the patch %d)",
                       c->batch, c->epochs, c->image, c->patch);
        goto done;
    }
    if ((s = dinoc_train_open_data(&r->train, c->data, c->data_dir, 1))) goto done;
    r->K = dinoc_dataset_num_classes(r->train);
    if (r->K < 2) {
        s = dinoc_fail(DINOC_ERR_ARG, "%s: supervised training needs labelled classes (found %d)", c->data, r->K);
        goto done;
    }
    dinoc_vit_config vc = model_config(c);
    if ((s = dinoc_model_init_random(&r->m, &vc, c->seed))) goto done;
    dinoc_train_preprocess(&r->m->pp, c->data, c->image, c->channels);
    r->D  = c->dim;
    r->nh = (size_t)r->K * r->D + r->K;
    r->head  = dinoc_calloc(r->nh, sizeof(float));
    r->ghead = dinoc_calloc(r->nh, sizeof(float));
    r->g     = dinoc_calloc(r->m->n_params, sizeof(float));
    if (!r->head || !r->ghead || !r->g) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    dinoc_rng_seed(&r->rng, c->seed ^ 0x5eedull);
    /* PyTorch's nn.Linear default: U(-1/sqrt(D), 1/sqrt(D)) for weight and bias */
    const float hb = 1.0f / sqrtf((float)r->D);
    for (size_t i = 0; i < r->nh; i++) r->head[i] = hb * (2 * dinoc_rng_uniform(&r->rng) - 1);
    dinoc_adamw_config ac = {0.9, 0.999, 1e-8};
    if ((s = dinoc_adamw_init(&r->opt, r->m->n_params, ac)) || (s = dinoc_adamw_init(&r->hopt, r->nh, ac))) goto done;
    /* parameter groups: one per tensor; no weight decay on biases, norms, tokens, positions */
    int                n = dinoc_vit_param_entries(r->m, DINOC_NAMES_ORIG, NULL);
    dinoc_param_entry *e = calloc((size_t)n, sizeof *e);
    r->groups            = calloc((size_t)n, sizeof *r->groups);
    if (!e || !r->groups) {
        free(e);
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    dinoc_vit_param_entries(r->m, DINOC_NAMES_ORIG, e);
    for (int i = 0; i < n; i++) {
        int64_t k = 1;
        for (int j = 0; j < e[i].ndim; j++) k *= e[i].shape[j];
        r->groups[i] = (dinoc_param_group){(size_t)(e[i].data - r->m->params), (size_t)k, 1.0f,
                                           e[i].decay ? 1.0f : 0.0f, 0, ""};
        snprintf(r->groups[i].name, sizeof r->groups[i].name, "%s", e[i].name);
    }
    free(e);
    r->ngroups    = n;
    r->hgroups[0] = (dinoc_param_group){0, (size_t)r->K * r->D, 1.0f, 1.0f, 0, "head.weight"};
    r->hgroups[1] = (dinoc_param_group){(size_t)r->K * r->D, (size_t)r->K, 1.0f, 0.0f, 0, "head.bias"};
    if (st) {
        int ok = 1;
        if ((s = read_f32_into(st, "params", r->m->params, (int64_t)r->m->n_params, ck)) ||
            (s = read_f32_into(st, "head", r->head, (int64_t)r->nh, ck)) ||
            (s = read_f32_into(st, "adam.m", r->opt.m, (int64_t)r->m->n_params, ck)) ||
            (s = read_f32_into(st, "adam.v", r->opt.v, (int64_t)r->m->n_params, ck)) ||
            (s = read_f32_into(st, "head_adam.m", r->hopt.m, (int64_t)r->nh, ck)) ||
            (s = read_f32_into(st, "head_adam.v", r->hopt.v, (int64_t)r->nh, ck)))
            goto done;
        const dinoc_tensor *rt = dinoc_safetensors_find(st, "rng");
        if (!rt || rt->dtype != DINOC_DTYPE_U64 || rt->nbytes != 32) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: missing or malformed 'rng'", ck);
            goto done;
        }
        memcpy(r->rng.s, rt->data, 32);
        r->step          = dinoc_train_meta_int(st, "step", &ok);
        r->opt.step      = r->hopt.step = dinoc_train_meta_int(st, "adam_step", &ok);
        pos.epoch        = dinoc_train_meta_int(st, "loader_epoch", &ok);
        pos.index        = dinoc_train_meta_int(st, "loader_index", &ok);
        if (!ok || dinoc_train_meta_int(st, "classes", &ok) != r->K) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: bad step/loader/classes metadata", ck);
            goto done;
        }
    }
    fill_xform(&r->xf, c, 1);
    dinoc_loader_config lc = {c->batch, 1, 1, c->seed, c->workers, 2,
                              (size_t)c->channels * c->image * c->image, transform, &r->xf, 0, 0};
    if ((s = dinoc_loader_init(&r->ld, r->train, &lc, pos))) goto done;
    if ((s = dinoc_train_state_init(&r->ts, r->m, c->batch, c->image, c->image))) goto done;
    int T, B = c->batch, D = r->D, K = r->K;
    dinoc_train_state_dims(r->ts, NULL, &T, NULL);
    r->cls     = malloc(sizeof(float) * B * D);
    r->dcls    = malloc(sizeof(float) * B * D);
    r->logits  = malloc(sizeof(float) * B * K);
    r->probs   = malloc(sizeof(float) * B * K);
    r->dlogits = malloc(sizeof(float) * B * K);
    r->dout    = calloc((size_t)B * T * D, sizeof(float));
    r->dpr     = malloc(sizeof(float) * c->depth);
    if (!r->cls || !r->dcls || !r->logits || !r->probs || !r->dlogits || !r->dout || !r->dpr) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    /* DINO's linear stochastic-depth rule: block l gets drop_path * l / (depth - 1) */
    for (int l = 0; l < c->depth; l++) r->dpr[l] = c->depth > 1 ? c->drop_path * l / (c->depth - 1) : 0;
done:
    dinoc_safetensors_close(st);
    free(ck);
    return s;
}

int64_t dinoc_train_meta_int(const dinoc_safetensors *st, const char *key, int *ok) {
    const char *v = dinoc_safetensors_metadata(st, key);
    char       *end;
    if (!v) return *ok = 0, 0;
    long long x = strtoll(v, &end, 10);
    if (*end || x < 0) *ok = 0;
    return x;
}

void dinoc_train_truncate_log(const char *path, int64_t step) {
    char  *buf = NULL;
    size_t len = 0;
    if (dinoc_read_file(path, (size_t)1 << 30, &buf, &len)) return;
    size_t keep = 0;
    for (char *line = buf; line < buf + len;) {
        char      *nl = memchr(line, '\n', (size_t)(buf + len - line));
        char      *sp = strstr(line, "\"step\":");
        long long  st = sp && (!nl || sp < nl) ? strtoll(sp + 7, NULL, 10) : 0;
        if (st > step || !nl) break;
        keep = (size_t)(nl + 1 - buf);
        line = nl + 1;
    }
    dinoc_write_file_atomic(path, buf, keep);
    free(buf);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

dinoc_status dinoc_sup_train(const dinoc_sup_config *cfg, dinoc_sup_result *res) {
    run          r;
    char        *keep[2] = {NULL, NULL};
    double       t0 = now_s();
    dinoc_status s  = run_init(&r, cfg, keep);
    FILE        *log = NULL;
    char        *log_path = NULL;
    memset(res, 0, sizeof *res);
    res->test_top1 = -1;
    if (s) goto done;
    const dinoc_sup_config *c = &r.cfg;
    /* without a test split the test top-1 is not measured (metrics.json: -1) */
    const int has_test = dinoc_train_has_test(c->data);
    if (!has_test) dinoc_log(DINOC_LOG_WARN, "%s has no test/ subfolder: no test accuracy is measured", c->data);
    if ((s = dinoc_mkdir(c->out))) goto done;
    log_path = dinoc_path_join(c->out, "log.jsonl");
    if (!log_path) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (cfg->resume) dinoc_train_truncate_log(log_path, r.step);
    log = fopen(log_path, cfg->resume ? "a" : "w");
    if (!log) {
        s = dinoc_fail(DINOC_ERR_IO, "%s: cannot write", log_path);
        goto done;
    }
    const int     B = c->batch, D = r.D, K = r.K;
    int           T;
    dinoc_train_state_dims(r.ts, NULL, &T, NULL);
    const int64_t spe   = dinoc_loader_batches_per_epoch(r.ld) / c->accum > 0 ? dinoc_loader_batches_per_epoch(r.ld) / c->accum : 1;
    const int64_t total = (int64_t)c->epochs * spe;
    const int64_t stop  = c->max_steps > 0 && c->max_steps < total ? c->max_steps : total;
    double        loss  = 0, tstep = now_s();
    while (r.step < stop) {
        const double   lr = dinoc_cosine_schedule(c->lr, c->min_lr, total, (int64_t)c->warmup_epochs * spe, 0, r.step);
        const double   wd = dinoc_cosine_schedule(c->wd, c->wd_end, total, 0, c->wd, r.step);
        /* accum micro-batches of `batch` images make one step; their gradients add up (every
         * backward accumulates) with the loss scaled by 1/accum, so a step equals one of the
         * accum * batch images (up to float summation order) */
        memset(r.g, 0, sizeof(float) * r.m->n_params);
        memset(r.ghead, 0, sizeof(float) * r.nh);
        int epoch_end = 0;
        loss          = 0;
        for (int micro = 0; micro < c->accum && !s; micro++) {
            const float   *x;
            const int32_t *y;
            int            n, ends;
            if ((s = dinoc_loader_next(r.ld, &x, &y, &n, &ends))) break;
            epoch_end |= ends;
            if ((s = dinoc_vit_forward_train(r.m, r.ts, x, NULL, r.dpr, &r.rng))) break;
            const float *out = dinoc_train_state_output(r.ts);
            for (int b = 0; b < B; b++) memcpy(r.cls + (size_t)b * D, out + (size_t)b * T * D, sizeof(float) * D);
            dinoc_linear_forward(r.logits, r.cls, r.head, r.head + (size_t)K * D, B, D, K);
            double l = dinoc_cross_entropy_forward(r.probs, r.logits, y, B, K, c->label_smoothing);
            if (!isfinite(l)) {
                s = dinoc_fail(DINOC_ERR_NUMERIC, "step %lld: loss is %g; stopping (the last checkpoint is intact)",
                               (long long)r.step, l);
                break;
            }
            loss += l / c->accum;
            memset(r.dlogits, 0, sizeof(float) * B * K);
            memset(r.dcls, 0, sizeof(float) * B * D);
            dinoc_cross_entropy_backward(r.dlogits, r.probs, y, B, K, c->label_smoothing, 1.0f / c->accum);
            dinoc_linear_backward(r.dcls, r.ghead, r.ghead + (size_t)K * D, r.dlogits, r.cls, r.head, B, D, K);
            for (int b = 0; b < B; b++) memcpy(r.dout + (size_t)b * T * D, r.dcls + (size_t)b * D, sizeof(float) * D);
            s = dinoc_vit_backward(r.m, r.ts, r.dout, r.g);
        }
        if (s) break;
        double nb = dinoc_grad_norm(r.g, r.groups, r.ngroups), nh = dinoc_grad_norm(r.ghead, r.hgroups, 2);
        double gn = sqrt(nb * nb + nh * nh);
        if (!isfinite(gn)) {
            s = dinoc_fail(DINOC_ERR_NUMERIC, "step %lld: gradient norm is %g; stopping (the last checkpoint is intact)",
                           (long long)r.step, gn);
            break;
        }
        if (c->clip_grad > 0 && gn > c->clip_grad) {
            /* torch.nn.utils.clip_grad_norm_ over backbone and head together */
            float coef = (float)(c->clip_grad / (gn + 1e-6));
            for (size_t i = 0; i < r.m->n_params; i++) r.g[i] *= coef;
            for (size_t i = 0; i < r.nh; i++) r.ghead[i] *= coef;
        }
        dinoc_adamw_step(&r.opt, r.m->params, r.g, r.groups, r.ngroups, lr, wd);
        dinoc_adamw_step(&r.hopt, r.head, r.ghead, r.hgroups, 2, lr, wd);
        r.step++;
        double tn = now_s(), img_s = (double)B * c->accum / fmax(tn - tstep, 1e-9);
        tstep     = tn;
        fprintf(log, "{\"step\":%lld,\"epoch\":%lld,\"loss\":%.6f,\"lr\":%.6g,\"wd\":%.6g,\"grad_norm\":%.6g,\"img_s\":%.1f}\n",
                (long long)r.step, (long long)((r.step - 1) / spe), loss, lr, wd, gn, img_s);
        if (c->progress) c->progress(c->progress_user, r.step, stop, (int)((r.step - 1) / spe), loss, lr, img_s);
        if (c->ckpt_every > 0 && r.step % c->ckpt_every == 0) {
            /* the log must hold every step up to the checkpoint's before the checkpoint exists: a
             * run killed later resumes from it and appends after those lines */
            fflush(log);
            if ((s = save_checkpoint(&r))) break;
        }
        if (epoch_end && c->eval_every_epoch && has_test && r.step < stop) {
            double  acc;
            int64_t nt;
            fflush(log);
            if ((s = save_checkpoint(&r))) break;
            if ((s = dinoc_sup_eval(c->out, c->data, c->data_dir, 0, 256, &acc, &nt))) break;
            fprintf(log, "{\"step\":%lld,\"epoch\":%lld,\"test_top1\":%.5f}\n", (long long)r.step,
                    (long long)((r.step - 1) / spe), acc);
            dinoc_log(DINOC_LOG_INFO, "epoch %lld: test top-1 %.2f%%", (long long)((r.step - 1) / spe), 100 * acc);
        }
    }
    if (s) goto done;
    fflush(log);
    if ((s = save_checkpoint(&r))) goto done;
    res->steps      = r.step;
    res->final_loss = loss;
    if (has_test && (r.step >= total || c->eval_every_epoch)) {
        int64_t nt;
        if ((s = dinoc_sup_eval(c->out, c->data, c->data_dir, 0, 256, &res->test_top1, &nt))) goto done;
    }
    res->seconds = now_s() - t0;
    char *cj = config_to_json(c), *mp = dinoc_path_join(c->out, "metrics.json"), buf[4096];
    if (cj && mp) {
        int len = snprintf(buf, sizeof buf, "{\"steps\":%lld,\"final_loss\":%.6f,\"test_top1\":%.5f,\"seconds\":%.1f,"
                           "\"threads\":%d,\"config\":%s}\n", (long long)res->steps, res->final_loss, res->test_top1,
                           res->seconds, dinoc_get_threads(), cj);
        if (len > 0 && len < (int)sizeof buf) s = dinoc_write_file_atomic(mp, buf, (size_t)len);
    }
    free(cj), free(mp);
done:
    if (log) fclose(log);
    free(log_path);
    run_free(&r);
    free(keep[0]), free(keep[1]);
    return s;
}

dinoc_status dinoc_sup_eval(const char *run_dir, const char *data, const char *data_dir, int train_split,
                            int batch, double *top1, int64_t *n_out) {
    char              *ck = dinoc_path_join(run_dir, "checkpoint.safetensors");
    dinoc_safetensors *st = NULL;
    dinoc_model       *m  = NULL;
    dinoc_dataset     *ds = NULL;
    dinoc_state       *s  = NULL;
    float             *head = NULL, *x = NULL, *logits = NULL;
    char              *keep[2] = {NULL, NULL};
    dinoc_status       err;
    if (!ck) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    if ((err = dinoc_safetensors_open(&st, ck))) goto done;
    dinoc_sup_config c = dinoc_sup_default();
    const char      *cj = dinoc_safetensors_metadata(st, "config");
    if (!cj) {
        err = dinoc_fail(DINOC_ERR_FORMAT, "%s: no training config in the metadata", ck);
        goto done;
    }
    if ((err = config_from_json(&c, cj, ck, keep))) goto done;
    int ok = 1, K = (int)dinoc_train_meta_int(st, "classes", &ok), D = c.dim;
    if (!ok || K < 2 || K > 100000) {
        err = dinoc_fail(DINOC_ERR_FORMAT, "%s: bad 'classes' metadata", ck);
        goto done;
    }
    dinoc_vit_config vc = model_config(&c);
    if ((err = dinoc_vit_alloc(&m, &vc))) goto done;
    head = malloc(sizeof(float) * ((size_t)K * D + K));
    if (!head) {
        err = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((err = read_f32_into(st, "params", m->params, (int64_t)m->n_params, ck)) ||
        (err = read_f32_into(st, "head", head, (int64_t)K * D + K, ck)))
        goto done;
    if ((err = dinoc_train_open_data(&ds, data ? data : c.data, data ? data_dir : c.data_dir, train_split))) goto done;
    if (dinoc_dataset_num_classes(ds) != K) {
        err = dinoc_fail(DINOC_ERR_ARG, "the data set has %d classes, the classifier %d", dinoc_dataset_num_classes(ds), K);
        goto done;
    }
    if ((err = dinoc_state_init(&s, m, batch, c.image, c.image, 0))) goto done;
    xform xf;
    fill_xform(&xf, &c, 0);
    const size_t per = (size_t)c.channels * c.image * c.image;
    const int64_t N  = dinoc_dataset_size(ds);
    x      = malloc(sizeof(float) * per * batch);
    logits = malloc(sizeof(float) * (size_t)batch * K);
    if (!x || !logits) {
        err = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    int64_t correct = 0;
    int     T;
    dinoc_state_dims(s, NULL, &T, NULL, NULL, NULL);
    int32_t *labels = malloc(sizeof(int32_t) * batch);
    for (int64_t i0 = 0; i0 < N && !err; i0 += batch) {
        int b = (int)(N - i0 < batch ? N - i0 : batch);
        for (int i = 0; i < batch && !err; i++) {
            dinoc_image img = {0, 0, 0, NULL};
            dinoc_rng   rr;
            dinoc_rng_seed(&rr, 0);
            if ((err = dinoc_dataset_get(ds, i0 + (i < b ? i : 0), &img, &labels[i]))) break;
            err = transform(x + i * per, &img, &rr, &xf);
            dinoc_image_free(&img);
        }
        if (err || (err = dinoc_forward(m, s, x, NULL))) break;
        const float *out = dinoc_state_output(s);
        for (int i = 0; i < b; i++) {
            const float *cls = out + (size_t)i * T * D;
            int          best = 0;
            float        bv   = -INFINITY;
            for (int k = 0; k < K; k++) {
                const float *w = head + (size_t)k * D;
                float        v = head[(size_t)K * D + k];
                for (int d = 0; d < D; d++) v += w[d] * cls[d];
                if (v > bv) bv = v, best = k;
            }
            correct += best == labels[i];
        }
    }
    free(labels);
    if (!err) {
        *top1 = N ? (double)correct / N : 0;
        if (n_out) *n_out = N;
    }
done:
    dinoc_state_free(s);
    dinoc_dataset_free(ds);
    dinoc_model_free(m);
    dinoc_safetensors_close(st);
    free(head), free(x), free(logits), free(ck), free(keep[0]), free(keep[1]);
    return err;
}
