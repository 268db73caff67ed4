/* clip_run.c: the CLIP training run (dinoc_clip_train, clip_train.h): pairs from a TSV or a
 * captioned folder, the step of clip_train.c, AdamW on the three buffers, checkpoints, log.jsonl.
 *
 * Choices (docs/clip.md):
 * - Data: every image is decoded once (8-bit images stay in memory, captions are tokenised once);
 *   each epoch visits a permutation of the distinct images drawn from (seed, epoch), so a resumed
 *   run needs only the step. An image listed with several captions (rows with the same image path,
 *   as COCO's five captions per image) is one item: each epoch pairs it with one of its captions,
 *   drawn from (seed, epoch, image), the way CLIP trainers sample one caption per image.
 *   No augmentation: captions of the shapes data name positions, so flips would lie.
 * - Optimiser: AdamW with open_clip's ViT settings (betas 0.9/0.98, eps 1e-6); weight decay on
 *   matrices and embedding tables only (not biases, norms, logit_scale); linear warmup then cosine
 *   to min_lr; logit_scale clamped to [0, ln 100] after every step (open_clip, the CLIP paper).
 * - Length: epochs x batches per epoch, or with a time budget fitted once from the measured time of
 *   steps 2-4 (warmup does not depend on it); the budget also stops the run outright.
 * - Data parallel (mpirun, src/core/dist.h): rank r of W takes rows r*B/W .. (r+1)*B/W - 1 of every
 *   global batch of B (the same permutation on every rank, so the union is the 1-process batch);
 *   the loss is the global batch's (clip_train.c gathers the embeddings); one allreduce sums the
 *   three gradient buffers, which sit back to back in one allocation. Rank 0 alone writes the
 *   checkpoint, the model folder, log.jsonl and metrics.json, and decides the fitted length and the
 *   time-budget stop (broadcast, so every rank runs the same number of steps). With no random
 *   augmentation the batch of a step does not depend on W: a run may resume at another world size. */
#include "clip_train.h"
#include "supervised.h" /* dinoc_train_truncate_log */
#include "../data/pairs.h"
#include "../core/dist.h"

#include <math.h>
#include <string.h>
#include <cjson/cJSON.h>
#include <stddef.h>
#include <time.h>

dinoc_clip_train_config dinoc_clip_train_default(void) {
    dinoc_clip_train_config c;
    memset(&c, 0, sizeof c);
    c.out = "runs/clip", c.preset = "shapes";
    c.epochs = 30, c.batch = 128, c.warmup_steps = 100, c.ckpt_every = 200;
    c.lr = 5e-4f, c.min_lr = 1e-5f, c.wd = 0.2f;
    return c;
}

/* Model sizes: "shapes" is the small model of the shapes task (64 px, patch 8, width 128, 4 blocks
 * per tower, context 32, embedding 128); "tiny" is for tests. */
static dinoc_status preset_configs(const char *name, dinoc_vit_config *v, dinoc_text_config *t, int *embed) {
    const int tiny = strcmp(name, "tiny") == 0;
    if (!tiny && strcmp(name, "shapes") != 0)
        return dinoc_fail(DINOC_ERR_ARG, "unknown CLIP preset '%s' (known: shapes, tiny)", name);
    const int D = tiny ? 32 : 128, L = tiny ? 1 : 4;
    dinoc_status st = dinoc_vit_preset(v, "clip-shapes");
    if (st) return st;
    memset(t, 0, sizeof *t);
    if (tiny) v->dim = D, v->depth = L, v->heads = 1, v->ffn_hidden = 4 * D, v->image_size = 32;
    t->kind = DINOC_TEXT_CLIP, t->vocab = 49408, t->max_pos = tiny ? 16 : 32, t->dim = D, t->layers = L;
    t->heads = D / 32, t->ffn = 4 * D, t->act = DINOC_TEXT_QUICK_GELU, t->ln_eps = 1e-5f;
    t->pad_id = 1, t->eot_id = 49407;
    *embed = tiny ? 16 : 128;
    return DINOC_OK;
}

typedef struct {
    dinoc_clip_train_config cfg;
    char                   *keep[4]; /* strings restored from a checkpoint */
    dinoc_clip             *m;
    dinoc_clip_step        *step_ws;
    int                     n, S, ctx, locked;
    int                     T;       /* tokens per step: the longest caption (<= ctx) */
    dinoc_image            *imgs;    /* [n] distinct images */
    int                     ncap;    /* captions in all */
    int32_t                *cap_off; /* [n + 1]: image k's captions are rows cap_off[k] .. cap_off[k+1]-1 */
    int32_t                *ids, *len; /* [ncap, ctx], [ncap] */
    int                     neg;        /* 1: the pairs file has hard-negative captions */
    int32_t                *nids, *nlen; /* [ncap, ctx], [ncap]: each caption row's negative (length 0: none) */
    uint8_t                *bvalid;     /* [nloc] the batch's rows with a negative */
    float                  *g;          /* one allocation: gv | gt | gh (one allreduce) */
    float                  *gv, *gt, *gh, *x;
    size_t                  ng;
    int                     nloc, rank; /* this rank's pairs per step (batch / world size) */
    dinoc_adamw             ov, ot, oh;
    dinoc_param_group      *grp[3];
    int                     ngrp[3];
    int32_t                *perm, *bids, *blen;
    int32_t                *cap_grp, *bgrp; /* [ncap] equal captions share a group; [nloc] the batch's */
    int64_t                 step, total, perm_epoch;
    double                  seconds;
} run;

static void run_free(run *r) {
    for (int i = 0; i < r->n && r->imgs; i++) dinoc_image_free(&r->imgs[i]);
    free(r->imgs);
    dinoc_free(r->ids), dinoc_free(r->len), dinoc_free(r->cap_off), dinoc_free(r->g);
    dinoc_free(r->nids), dinoc_free(r->nlen), dinoc_free(r->bvalid);
    dinoc_free(r->x), dinoc_free(r->perm), dinoc_free(r->bids), dinoc_free(r->blen);
    dinoc_free(r->cap_grp), dinoc_free(r->bgrp);
    dinoc_adamw_free(&r->ov), dinoc_adamw_free(&r->ot), dinoc_adamw_free(&r->oh);
    for (int i = 0; i < 3; i++) free(r->grp[i]);
    for (int i = 0; i < 4; i++) free(r->keep[i]);
    dinoc_clip_step_free(r->step_ws);
    dinoc_clip_free(r->m);
}

/* ---- data: the pair list (src/data/pairs.c), decoded and tokenised once -------------------- */

/* rows by image path, then by row (glibc's qsort_r: the list rides along, no global) */
static int cmp_pair_image(const void *a, const void *b, void *user) {
    const dinoc_pair_list *l = user;
    const int x = *(const int *)a, y = *(const int *)b;
    const int c = strcmp(l->image[x], l->image[y]);
    return c ? c : (x > y) - (x < y);
}

/* caption rows x and y by token sequence (length first): <0, 0 (the same caption), >0 */
static int caption_order(const run *r, int x, int y) {
    if (r->len[x] != r->len[y]) return r->len[x] < r->len[y] ? -1 : 1;
    return memcmp(r->ids + (size_t)x * r->ctx, r->ids + (size_t)y * r->ctx, sizeof(int32_t) * r->len[x]);
}

/* caption rows by token sequence, then by row */
static int cmp_caption(const void *a, const void *b, void *user) {
    const int x = *(const int32_t *)a, y = *(const int32_t *)b;
    const int c = caption_order(user, x, y);
    return c ? c : (x > y) - (x < y);
}

/* cap_grp[row]: one id per distinct tokenised caption (in sorted order: the same on every rank).
 * The loss takes pairs of one group as each other's positives (clip_train.h). */
static dinoc_status caption_groups(run *r) {
    int32_t *ord = dinoc_calloc((size_t)r->ncap, sizeof(int32_t));
    r->cap_grp   = dinoc_calloc((size_t)r->ncap, sizeof(int32_t));
    if (!ord || !r->cap_grp) {
        dinoc_free(ord);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for %d captions", r->ncap);
    }
    for (int i = 0; i < r->ncap; i++) ord[i] = i;
    qsort_r(ord, (size_t)r->ncap, sizeof *ord, cmp_caption, r);
    int g = -1;
    for (int i = 0; i < r->ncap; i++) {
        if (i == 0 || caption_order(r, ord[i], ord[i - 1]) != 0) g++;
        r->cap_grp[ord[i]] = g;
    }
    dinoc_free(ord);
    if (g + 1 < r->ncap)
        dinoc_log(DINOC_LOG_INFO, "%d distinct captions of %d: pairs of equal captions are positives of each other",
                  g + 1, r->ncap);
    return DINOC_OK;
}

static dinoc_status load_pairs(run *r, const char *p) {
    dinoc_pair_list l;
    dinoc_status    s = dinoc_pairs_load(&l, p);
    if (s) return s;
    /* group rows by image path: image ids in order of first appearance, captions in file order */
    int32_t *ord = dinoc_calloc((size_t)l.n, sizeof(int32_t)), *img_of = dinoc_calloc((size_t)l.n, sizeof(int32_t));
    int32_t *first = dinoc_calloc((size_t)l.n, sizeof(int32_t)), *rank = dinoc_calloc((size_t)l.n, sizeof(int32_t));
    r->cap_off = dinoc_calloc((size_t)l.n + 1, sizeof(int32_t));
    r->imgs    = calloc((size_t)l.n, sizeof *r->imgs);
    r->ids     = dinoc_calloc((size_t)l.n * r->ctx, sizeof(int32_t));
    r->len     = dinoc_calloc((size_t)l.n, sizeof(int32_t));
    r->neg     = l.n_negative > 0;
    if (r->neg) {
        r->nids = dinoc_calloc((size_t)l.n * r->ctx, sizeof(int32_t));
        r->nlen = dinoc_calloc((size_t)l.n, sizeof(int32_t));
    }
    if (!ord || !img_of || !first || !rank || !r->cap_off || !r->imgs || !r->ids || !r->len ||
        (r->neg && (!r->nids || !r->nlen)))
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory for %d pairs", l.n);
    int n_img = 0;
    if (!s) {
        for (int i = 0; i < l.n; i++) ord[i] = i;
        qsort_r(ord, (size_t)l.n, sizeof *ord, cmp_pair_image, &l);
        /* groups of equal paths; a group's first row (sorted by row) is its first appearance */
        for (int i = 0, gid = -1; i < l.n; i++) {
            if (i == 0 || strcmp(l.image[ord[i]], l.image[ord[i - 1]]) != 0) first[++gid] = ord[i], n_img = gid + 1;
            img_of[ord[i]] = gid;
        }
        /* group ids -> image ids by first appearance */
        for (int g = 0; g < n_img; g++) ord[g] = g;
        for (int i = 0, k = 0; i < l.n; i++) /* rows in file order: a group's first row names it */
            if (first[img_of[i]] == i) rank[img_of[i]] = k++;
        for (int i = 0; i < l.n; i++) img_of[i] = rank[img_of[i]];
        for (int i = 0; i < l.n; i++) r->cap_off[img_of[i] + 1]++;
        memset(rank, 0, sizeof(int32_t) * (size_t)l.n);
        for (int k = 0; k < n_img; k++) r->cap_off[k + 1] += r->cap_off[k];
    }
    /* decode each image once (at its first row), tokenise every caption into its image's block */
    for (int i = 0; i < l.n && !s; i++) {
        const int   k   = img_of[i];
        const char *cap = l.caption[i];
        int32_t     row = r->cap_off[k]++; /* fill pointer; restored below */
        if (!rank[k] && (s = dinoc_image_load(&r->imgs[k], l.image[i]))) /* rank[]: "decoded" flags now */
            s = dinoc_fail_prefix(s, "%s: pair %d", p, i + 1);
        rank[k] = 1;
        if (!s && (s = dinoc_clip_tokenize(r->m, &cap, 1, r->ids + (size_t)row * r->ctx, r->len + row)))
            s = dinoc_fail_prefix(s, "%s: pair %d", p, i + 1);
        const char *neg = l.negative[i];
        if (!s && neg && (s = dinoc_clip_tokenize(r->m, &neg, 1, r->nids + (size_t)row * r->ctx, r->nlen + row)))
            s = dinoc_fail_prefix(s, "%s: pair %d: the negative caption", p, i + 1);
    }
    if (!s) { /* the fill pointers now sit at each block's end: shift back */
        for (int k = n_img; k > 0; k--) r->cap_off[k] = r->cap_off[k - 1];
        r->cap_off[0] = 0;
        r->n = n_img, r->ncap = l.n;
        if (r->cfg.caption_groups) s = caption_groups(r);
        if (r->ncap > r->n)
            dinoc_log(DINOC_LOG_INFO, "%s: %d captions of %d images (one caption per image and epoch)", p, r->ncap, r->n);
        if (r->neg)
            dinoc_log(DINOC_LOG_INFO, "%s: %d of %d captions have a hard-negative caption", p, l.n_negative, r->ncap);
    } else {
        r->n = n_img; /* every image decoded so far is freed by run_free */
    }
    dinoc_free(ord), dinoc_free(img_of), dinoc_free(first), dinoc_free(rank);
    dinoc_pairs_free(&l);
    return s;
}

/* ---- optimiser groups ------------------------------------------------------------------------- */

/* One group per named tensor of a list (wd_mult = the entry's decay flag). */
static dinoc_param_group *groups_of(const dinoc_param_entry *e, int n, const float *base) {
    dinoc_param_group *g = calloc((size_t)n, sizeof *g);
    for (int i = 0; g && i < n; i++) {
        int64_t k = 1;
        for (int d = 0; d < e[i].ndim; d++) k *= e[i].shape[d];
        g[i].offset = (size_t)(e[i].data - base), g[i].count = (size_t)k;
        g[i].lr_mult = 1.0, g[i].wd_mult = e[i].decay;
        snprintf(g[i].name, sizeof g[i].name, "%s", e[i].name);
    }
    return g;
}

static dinoc_status make_groups(run *r) {
    dinoc_clip *m  = r->m;
    int         nv = dinoc_vit_param_entries(m->vision, DINOC_NAMES_HF, NULL);
    dinoc_param_entry *ev = calloc((size_t)nv, sizeof *ev);
    if (ev) {
        dinoc_vit_param_entries(m->vision, DINOC_NAMES_HF, ev);
        r->grp[0] = groups_of(ev, nv, m->vision->params), r->ngrp[0] = r->grp[0] ? nv : 0;
    }
    free(ev);
    const int nt = dinoc_text_param_groups(m->text, NULL);
    r->grp[1]    = nt > 0 ? calloc((size_t)nt, sizeof(dinoc_param_group)) : NULL;
    if (r->grp[1] && dinoc_text_param_groups(m->text, r->grp[1]) == nt) r->ngrp[1] = nt;
    /* head: the projection is decayed, logit_scale is not (open_clip's exclude rule) */
    r->grp[2] = calloc(2, sizeof(dinoc_param_group));
    if (r->grp[2]) {
        r->grp[2][0] = (dinoc_param_group){0, m->n_head - 1, 1.0, 1.0, 0, "visual_projection.weight"};
        r->grp[2][1] = (dinoc_param_group){m->n_head - 1, 1, 1.0, 0.0, 0, "logit_scale"};
        r->ngrp[2]   = 2;
    }
    if (!r->ngrp[0] || !r->ngrp[1] || !r->ngrp[2]) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    return DINOC_OK;
}

/* ---- checkpoints ------------------------------------------------------------------------------ */

#define CFG_F(name, type) DINOC_CFG_F(dinoc_clip_train_config, #name, type, name)
/* Strings and caption_groups (session 7) read as NULL / 0 when absent: the run went without them. */
static const dinoc_cfg_field k_fields[] = {
    CFG_F(epochs, 'i'), CFG_F(batch, 'i'), CFG_F(warmup_steps, 'i'), CFG_F(lr, 'f'), CFG_F(min_lr, 'f'),
    CFG_F(wd, 'f'), CFG_F(time_budget, 'd'), CFG_F(seed, 'u'),
    {"caption_groups", 'i', offsetof(dinoc_clip_train_config, caption_groups), NULL, DINOC_CFG_CLEAR},
    {"pairs", 's', offsetof(dinoc_clip_train_config, pairs), NULL, DINOC_CFG_CLEAR},
    {"init_image", 's', offsetof(dinoc_clip_train_config, init_image), NULL, DINOC_CFG_CLEAR},
    {"preset", 's', offsetof(dinoc_clip_train_config, preset), NULL, DINOC_CFG_CLEAR},
    {"precision", 's', offsetof(dinoc_clip_train_config, precision), NULL, DINOC_CFG_CLEAR} /* absent: fp32 */};
#undef CFG_F
#define N_FIELDS (int)(sizeof k_fields / sizeof k_fields[0])

static char *config_json(dinoc_clip_train_config *c) {
    cJSON *o   = cJSON_CreateObject();
    char  *txt = o && dinoc_cfg_to_json(o, k_fields, N_FIELDS, c) ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return txt;
}

/* The checkpoint's config over r->cfg (the run continues as it was started). */
static dinoc_status config_restore(run *r, const char *json, const char *where) {
    cJSON *o = cJSON_Parse(json);
    if (!o) return dinoc_fail(DINOC_ERR_FORMAT, "%s: config metadata is not JSON", where);
    dinoc_status s = dinoc_cfg_from_json(o, k_fields, N_FIELDS, &r->cfg, r->keep, 4, where);
    r->cfg.caption_groups = r->cfg.caption_groups != 0;
    cJSON_Delete(o);
    return s;
}

/* Tensors of the checkpoint: each buffer's parameters and AdamW moments (a locked image tower has
 * none: its weights are those of --init-image, saved in the model folder). */
static int ckpt_tensors(run *r, dinoc_tensor *t) {
    float *bufs[3][3] = {{r->m->vision->params, r->ov.m, r->ov.v},
                         {r->m->text->params, r->ot.m, r->ot.v},
                         {r->m->head, r->oh.m, r->oh.v}};
    const size_t n[3] = {r->m->vision->n_params, r->m->text->n_params, r->m->n_head};
    static const char *names[3][3] = {{"vision.params", "vision.adam.m", "vision.adam.v"},
                                      {"text.params", "text.adam.m", "text.adam.v"},
                                      {"head.params", "head.adam.m", "head.adam.v"}};
    int k = 0;
    for (int b = 0; b < 3; b++) {
        if (b == 0 && r->locked) continue;
        for (int j = 0; j < 3; j++)
            t[k++] = (dinoc_tensor){names[b][j], DINOC_DTYPE_F32, 1, {(int64_t)n[b]}, n[b] * sizeof(float), bufs[b][j]};
    }
    return k;
}

static dinoc_status save_checkpoint(run *r) {
    const dinoc_clip_train_config *c = &r->cfg;
    if (r->rank != 0) return DINOC_OK; /* rank 0 writes; every rank holds the same weights */
    dinoc_tensor t[9];
    const int    nt = ckpt_tensors(r, t);
    char        *path = dinoc_path_join(c->out, "checkpoint.safetensors"), *cj = config_json(&r->cfg);
    char         num[4][32];
    snprintf(num[0], sizeof num[0], "%lld", (long long)r->step);
    snprintf(num[1], sizeof num[1], "%lld", (long long)r->oh.step);
    snprintf(num[2], sizeof num[2], "%lld", (long long)r->total);
    snprintf(num[3], sizeof num[3], "%.3f", r->seconds);
    const char *meta[] = {"format", "dinoc-clip-1", "step", num[0], "adam_step", num[1], "total_steps", num[2],
                          "seconds", num[3], "config", cj, NULL};
    dinoc_status s = path && cj ? dinoc_mkdir(c->out) : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    if (!s) s = dinoc_safetensors_write(path, t, nt, meta);
    if (!s) s = dinoc_clip_save(r->m, c->out); /* the model folder beside it */
    free(path), free(cj);
    return s;
}

static dinoc_status load_state(run *r, const dinoc_safetensors *st, const char *ck) {
    dinoc_tensor t[9];
    const int    nt = ckpt_tensors(r, t);
    for (int i = 0; i < nt; i++) {
        const dinoc_tensor *f = dinoc_safetensors_find(st, t[i].name);
        if (!f || dinoc_tensor_numel(f) != t[i].shape[0])
            return dinoc_fail(DINOC_ERR_SHAPE, "%s: tensor '%s' missing or not of %lld floats (the model's)", ck,
                              t[i].name, (long long)t[i].shape[0]);
        dinoc_status s = dinoc_tensor_to_f32(f, (float *)t[i].data, t[i].shape[0]);
        if (s) return s;
    }
    int ok   = 1;
    r->step  = dinoc_train_meta_int(st, "step", &ok);
    r->total = dinoc_train_meta_int(st, "total_steps", &ok);
    r->ov.step = r->ot.step = r->oh.step = dinoc_train_meta_int(st, "adam_step", &ok);
    const char *sec = dinoc_safetensors_metadata(st, "seconds");
    r->seconds      = sec ? atof(sec) : 0;
    if (!ok || r->step < 0 || r->total < r->step) return dinoc_fail(DINOC_ERR_FORMAT, "%s: bad step metadata", ck);
    return DINOC_OK;
}

/* ---- setup ------------------------------------------------------------------------------------ */

static dinoc_status run_init(run *r, const dinoc_clip_train_config *cfg) {
    memset(r, 0, sizeof *r);
    r->cfg                = *cfg;
    dinoc_safetensors *st = NULL;
    char              *ck = dinoc_path_join(cfg->out ? cfg->out : ".", "checkpoint.safetensors");
    dinoc_status       s  = ck ? DINOC_OK : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    if (!s && cfg->resume) {
        if ((s = dinoc_safetensors_open(&st, ck))) goto done;
        const char *cj = dinoc_safetensors_metadata(st, "config"), *fm = dinoc_safetensors_metadata(st, "format");
        if (!cj || !fm || strcmp(fm, "dinoc-clip-1") != 0) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: not a dinoc CLIP checkpoint", ck);
            goto done;
        }
        if ((s = config_restore(r, cj, ck))) goto done;
    }
    const dinoc_clip_train_config *c = &r->cfg;
    /* (written so that NaN fails every comparison; a budget past 1e9 s would overflow the fit) */
    if (s || c->batch < 2 || c->epochs <= 0 || c->warmup_steps < 0 || !(c->time_budget >= 0 && c->time_budget < 1e9) ||
        !(c->lr > 0 && c->lr < 1e6) || !(c->min_lr >= 0 && c->min_lr < 1e6) || !(c->wd >= 0 && c->wd < 1e6)) {
        if (!s) s = dinoc_fail(DINOC_ERR_ARG, "batch %d (>= 2: the loss contrasts pairs), epochs %d, warmup %d, "
                               "time budget %g, lr %g, min lr %g, wd %g: out of range", c->batch, c->epochs,
                               c->warmup_steps, c->time_budget, c->lr, c->min_lr, c->wd);
        goto done;
    }
    dinoc_vit_config  vc;
    dinoc_text_config tc;
    int               embed = 0;
    if ((s = preset_configs(c->preset ? c->preset : "shapes", &vc, &tc, &embed))) goto done;
    if (c->init_image) {
        /* LiT: a DINO/DINOv2 tower, frozen; its own preprocessing and image size */
        dinoc_model *v = NULL;
        if ((s = dinoc_model_load(&v, c->init_image, NULL))) goto done;
        if ((s = dinoc_clip_init_lit(&r->m, v, &tc, embed, c->seed))) goto done;
        r->locked = 1;
    } else if ((s = dinoc_clip_init_random(&r->m, &vc, &tc, embed, c->seed))) {
        goto done;
    }
    r->S = r->m->vision->cfg.image_size, r->ctx = tc.max_pos;
    if ((s = load_pairs(r, c->pairs))) goto done;
    const int world = dinoc_dist_size();
    r->rank = dinoc_dist_rank();
    if (c->batch % world) {
        s = dinoc_fail(DINOC_ERR_ARG, "batch %d does not divide among %d ranks", c->batch, world);
        goto done;
    }
    r->nloc = c->batch / world;
    if (r->n < c->batch) {
        s = dinoc_fail(DINOC_ERR_ARG, "%s: %d pairs, fewer than one batch of %d", c->pairs, r->n, c->batch);
        goto done;
    }
    /* the causal mask hides padding from every pooled row, so a step runs only as many positions
     * as the longest caption needs (shapes captions: ~16 of 32) */
    r->T = 1;
    for (int i = 0; i < r->ncap; i++) r->T = r->len[i] > r->T ? r->len[i] : r->T;
    for (int i = 0; r->neg && i < r->ncap; i++) r->T = r->nlen[i] > r->T ? r->nlen[i] : r->T;
    if ((s = make_groups(r))) goto done;
    const dinoc_adamw_config ac = {0.9, 0.98, 1e-6}; /* open_clip's ViT settings (reference A.8) */
    if (!r->locked && (s = dinoc_adamw_init(&r->ov, r->m->vision->n_params, ac))) goto done;
    if ((s = dinoc_adamw_init(&r->ot, r->m->text->n_params, ac))) goto done;
    if ((s = dinoc_adamw_init(&r->oh, r->m->n_head, ac))) goto done;
    const size_t nv = r->locked ? 0 : r->m->vision->n_params, ntx = r->m->text->n_params;
    r->ng   = nv + ntx + r->m->n_head;
    r->g    = dinoc_calloc(r->ng, sizeof(float));
    r->gv   = r->locked || !r->g ? NULL : r->g;
    r->gt   = r->g ? r->g + nv : NULL;
    r->gh   = r->g ? r->g + nv + ntx : NULL;
    r->x    = dinoc_calloc((size_t)r->nloc * 3 * r->S * r->S, sizeof(float));
    r->perm = dinoc_calloc((size_t)r->n, sizeof(int32_t));
    r->bids   = dinoc_calloc((size_t)(1 + r->neg) * r->nloc * r->T, sizeof(int32_t));
    r->blen   = dinoc_calloc((size_t)(1 + r->neg) * r->nloc, sizeof(int32_t));
    r->bvalid = dinoc_calloc((size_t)r->nloc, 1);
    r->bgrp   = dinoc_calloc((size_t)r->nloc, sizeof(int32_t));
    if (!r->g || !r->x || !r->perm || !r->bids || !r->blen || !r->bvalid || !r->bgrp) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory for the training buffers");
        goto done;
    }
    r->perm_epoch = -1;
    r->total      = (int64_t)c->epochs * (r->n / c->batch);
    if ((s = dinoc_clip_step_init(&r->step_ws, r->m, r->nloc, r->S, r->T, r->locked, r->neg))) goto done;
    /* "auto" resolves once, and the run saves the name it resolved to (a resume keeps it) */
    r->cfg.precision = dinoc_precision_resolve(r->cfg.precision, !r->locked);
    dinoc_precision prec = DINOC_PRECISION_FP32;
    if (r->cfg.precision && (s = dinoc_precision_parse(r->cfg.precision, &prec))) {
        s = dinoc_fail_prefix(s, "CLIP");
        goto done;
    }
    if ((s = dinoc_clip_step_set_precision(r->step_ws, r->m, prec))) goto done;
    if (st) s = load_state(r, st, ck);
done:
    dinoc_safetensors_close(st);
    free(ck);
    return s;
}

/* ---- the loop --------------------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The batch of step `step`: epoch e = step / spe visits the permutation drawn from (seed, e). */
static dinoc_status load_batch(run *r, int64_t step) {
    const int     B = r->cfg.batch, spe = r->n / B;
    const int64_t e = step / spe;
    if (e != r->perm_epoch) {
        dinoc_rng g;
        dinoc_rng_seed(&g, r->cfg.seed * 0x9E3779B97F4A7C15ull + (uint64_t)e + 1);
        for (int i = 0; i < r->n; i++) r->perm[i] = i;
        for (int i = r->n - 1; i > 0; i--) { /* Fisher-Yates */
            int j = (int)(dinoc_rng_u64(&g) % (uint64_t)(i + 1)), t = r->perm[i];
            r->perm[i] = r->perm[j], r->perm[j] = t;
        }
        r->perm_epoch = e;
    }
    const size_t px = (size_t)3 * r->S * r->S;
    for (int b = 0; b < r->nloc; b++) { /* this rank's rows of the global batch */
        const int k = r->perm[(step % spe) * B + r->rank * r->nloc + b];
        int       w, h;
        dinoc_preprocess_size(&r->m->vision->pp, r->imgs[k].w, r->imgs[k].h, &w, &h);
        if (w != r->S || h != r->S)
            return dinoc_fail(DINOC_ERR_SHAPE, "pair %d: the image preprocesses to %dx%d, the model takes %dx%d",
                              k + 1, w, h, r->S, r->S);
        dinoc_status s = dinoc_preprocess_image(&r->m->vision->pp, &r->imgs[k], r->x + b * px, w, h);
        if (s) return s;
        /* one of the image's captions, drawn from (seed, epoch, image): the same on every rank */
        const int nc = r->cap_off[k + 1] - r->cap_off[k];
        int       j  = r->cap_off[k];
        if (nc > 1) {
            dinoc_rng g;
            dinoc_rng_seed(&g, (r->cfg.seed ^ 0x63617073ull) + 0x9E3779B97F4A7C15ull * (uint64_t)(e + 1) +
                                   0xBF58476D1CE4E5B9ull * (uint64_t)(k + 1));
            j += (int)(dinoc_rng_u64(&g) % (uint64_t)nc);
        }
        memcpy(r->bids + (size_t)b * r->T, r->ids + (size_t)j * r->ctx, sizeof(int32_t) * r->T);
        r->blen[b] = r->len[j];
        if (r->cap_grp) r->bgrp[b] = r->cap_grp[j];
        if (r->neg) { /* the drawn caption's negative (rows nloc..); a row without one is flagged */
            const int nb = r->nloc + b, has = r->nlen[j] > 0;
            memcpy(r->bids + (size_t)nb * r->T, (has ? r->nids : r->ids) + (size_t)j * r->ctx, sizeof(int32_t) * r->T);
            r->blen[nb]  = has ? r->nlen[j] : r->len[j];
            r->bvalid[b] = (uint8_t)has;
        }
    }
    return DINOC_OK;
}

static dinoc_status train_step(run *r, double lr, double *loss, double *acc) {
    dinoc_clip *m = r->m;
    dinoc_status s = load_batch(r, r->step);
    if (s) return s;
    memset(r->g, 0, sizeof(float) * r->ng);
    if ((s = dinoc_clip_step_run(r->step_ws, m, r->x, r->bids, r->blen, r->neg ? r->bvalid : NULL,
                                 r->cap_grp ? r->bgrp : NULL, r->gv,
                                 r->gt, r->gh, loss, acc)) ||
        (s = dinoc_dist_sum_f32(r->g, r->ng))) /* the ranks' shares sum to the global batch's gradient */
        return dinoc_fail_prefix(s, "step %lld (the last checkpoint is intact)", (long long)r->step + 1);
    const double wd = r->cfg.wd;
    if (!r->locked) dinoc_adamw_step(&r->ov, m->vision->params, r->gv, r->grp[0], r->ngrp[0], lr, wd);
    dinoc_adamw_step(&r->ot, m->text->params, r->gt, r->grp[1], r->ngrp[1], lr, wd);
    dinoc_adamw_step(&r->oh, m->head, r->gh, r->grp[2], r->ngrp[2], lr, wd);
    float *ls = &m->head[m->n_head - 1]; /* the temperature clamp: s = exp(ls) in [1, 100] */
    *ls       = fminf(fmaxf(*ls, 0.0f), logf(100.0f));
    return DINOC_OK;
}

dinoc_status dinoc_clip_train(const dinoc_clip_train_config *cfg, dinoc_clip_train_result *res) {
    run          r;
    const double t0 = now_s();
    dinoc_status s  = run_init(&r, cfg);
    FILE        *log = NULL;
    char        *log_path = NULL, *met = NULL;
    memset(res, 0, sizeof *res);
    if (s) goto done;
    const dinoc_clip_train_config *c = &r.cfg;
    if ((s = dinoc_mkdir(c->out))) goto done;
    log_path = dinoc_path_join(c->out, "log.jsonl");
    met      = dinoc_path_join(c->out, "metrics.json");
    if (!log_path || !met) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    const int lead = r.rank == 0; /* rank 0 logs and writes */
    if (lead && c->resume) dinoc_train_truncate_log(log_path, r.step);
    if (lead && !(log = fopen(log_path, c->resume ? "a" : "w"))) {
        s = dinoc_fail(DINOC_ERR_IO, "%s: cannot write", log_path);
        goto done;
    }
    const double  base = r.seconds;
    double        loss = 0, acc = 0, t_fit = 0;
    const int64_t first = r.step;
    /* --max-steps stops early (tests); the schedule still spans r.total */
    while (r.step < (c->max_steps > 0 && c->max_steps < r.total ? c->max_steps : r.total)) {
        const double ts = now_s();
        const double lr = dinoc_cosine_schedule(c->lr, c->min_lr, r.total, c->warmup_steps, 0.0, r.step);
        if ((s = train_step(&r, lr, &loss, &acc))) break;
        r.step++;
        const double dt = now_s() - ts, el = base + now_s() - t0;
        r.seconds       = el;
        /* time budget: fit the schedule once from steps 2-4 of this process (step 1 warms caches) */
        if (c->time_budget > 0 && r.step - first == 1) t_fit = now_s();
        if (c->time_budget > 0 && r.step - first == 4 && !c->resume) {
            const double per = (now_s() - t_fit) / 3;
            int64_t      fit = r.step + (int64_t)((c->time_budget - el) * 0.97 / per);
            if ((s = dinoc_dist_bcast_i64(&fit, 1, 0))) break; /* rank 0's fit for all */
            r.total = fit < r.step + 1 ? r.step + 1 : fit;
            dinoc_log(DINOC_LOG_INFO, "time budget %.0f s at %.3f s/step: %lld steps", c->time_budget, per,
                      (long long)r.total);
        }
        if (log) fprintf(log, "{\"step\":%lld,\"epoch\":%lld,\"loss\":%.6f,\"batch_acc\":%.4f,\"lr\":%.6g,"
                     "\"logit_scale\":%.5f,\"img_s\":%.1f,\"seconds\":%.2f}\n",
                (long long)r.step, (long long)((r.step - 1) / (r.n / c->batch)), loss, acc, lr,
                expf(r.m->head[r.m->n_head - 1]), c->batch / fmax(dt, 1e-9), el);
        if (log) fflush(log);
        if (lead && c->progress) c->progress(c->progress_user, r.step, r.total, loss, lr, c->batch / fmax(dt, 1e-9));
        int64_t budget_over = c->time_budget > 0 && el >= c->time_budget;
        if (c->time_budget > 0 && (s = dinoc_dist_bcast_i64(&budget_over, 1, 0))) break; /* rank 0 decides */
        if ((c->ckpt_every > 0 && r.step % c->ckpt_every == 0) || budget_over)
            if ((s = save_checkpoint(&r))) break;
        if (budget_over) break;
    }
    if (!s) s = save_checkpoint(&r);
    if (!s && lead) {
        char buf[512]; /* written atomically, as every file of the run folder */
        int  len = snprintf(buf, sizeof buf, "{\"steps\":%lld,\"total_steps\":%lld,\"final_loss\":%.6f,\"seconds\":%.2f,"
                            "\"images\":%d,\"captions\":%d,\"hard_negatives\":%s,\"locked_image_tower\":%s,"
                            "\"precision\":\"%s\"}\n",
                            (long long)r.step, (long long)r.total, loss, r.seconds, r.n, r.ncap, r.neg ? "true" : "false",
                            r.locked ? "true" : "false", r.cfg.precision ? r.cfg.precision : "fp32");
        s = dinoc_write_file_atomic(met, buf, (size_t)len);
    }
    res->steps = r.step, res->final_loss = loss, res->seconds = r.seconds;
done:
    if (log) fclose(log);
    free(log_path), free(met);
    run_free(&r);
    return s;
}
