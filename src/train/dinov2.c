/* dinov2.c: one DINOv2 step (see dinov2.h): setup of student, teacher, heads, optimisers and
 * buffers, the step, the schedules. tests/test_dinov2.c checks a step against PyTorch
 * (tests/py/gen_dinov2_step.py).
 *
 * Data parallel (src/core/dist.h; W ranks, each with B = batch / W images of every global batch):
 * - masks: every rank draws the GLOBAL batch's masks from a stream seeded by (seed, step) and
 *   keeps its own images' rows, so the masks do not depend on W (nor on the drop-path stream);
 * - targets: Sinkhorn-Knopp's sums, max and counts and both centers' means are the global
 *   batch's (dinov2_loss.c all-reduces them; the iBOT ones over the global masked tokens);
 * - DINO and iBOT losses are per-rank means over equal shares, so the average of the ranks'
 *   gradients is the global batch's gradient: one allreduce per flat buffer, then / W;
 * - KoLeo over the GLOBAL batch of each global crop (the official code takes each GPU's local
 *   batch; the issue asks for the global one, and only that makes W ranks equal one process):
 *   the backbone CLS rows of all ranks are gathered, every rank computes the same global loss
 *   and its backward, and keeps its own rows' gradient times W (undone by the / W above);
 * - the logged losses are the global batch's (all-reduced before the finiteness check, so every
 *   rank fails together). */
#include "dinov2.h"
#include "../core/dist.h"

#include <math.h>
#include <time.h>
#include <string.h>

dinoc_dinov2_config dinoc_dinov2_default(void) {
    dinoc_dinov2_config c;
    memset(&c, 0, sizeof c);
    c.data = "fashion-mnist", c.out = "runs/dinov2";
    /* the DINO main job's model and heads (dinoc_dino_default), so the two compare directly */
    c.dim = 96, c.depth = 4, c.heads = 3, c.patch = 7, c.image = 28, c.channels = 1, c.mlp_ratio = 4;
    c.out_dim = 1024, c.head_hidden = 512, c.head_bottleneck = 128, c.head_layers = 3;
    c.ibot_separate_head = 0, c.ibot_out_dim = 1024, c.ibot_hidden = 512, c.ibot_bottleneck = 128, c.ibot_layers = 3;
    dinoc_multicrop_config m = dinoc_multicrop_default();
    m.n_global = 2, m.n_local = 4, m.global_size = 28, m.local_size = 14, m.channels = 1;
    /* DINOv2's split point 0.32 between local and global scales; local min 0.1 instead of 0.05
     * (5% of a 28 px image is a 6 px square) */
    m.global_scale[0] = 0.32f, m.global_scale[1] = 1.0f, m.local_scale[0] = 0.1f, m.local_scale[1] = 0.32f;
    m.blur_sigma[0] = 0.1f, m.blur_sigma[1] = 0.5f;
    c.crops = m;
    c.mask_prob = 0.5, c.mask_ratio_min = 0.1, c.mask_ratio_max = 0.5; /* ibot.* of the yaml */
    c.targets = DINOC_TARGETS_CENTERING, c.dino_weight = 1.0, c.koleo_weight = 0.1, c.ibot_weight = 1.0;
    c.epochs = 20, c.batch = 256, c.warmup_epochs = 1, c.freeze_last_layer_epochs = 1, c.iters_per_epoch = 0;
    /* 2e-3 per 1024 with sqrt scaling = 1e-3 at batch 256, the DINO job's lr (yaml: 4e-3) */
    c.lr = 2e-3, c.min_lr = 1e-6, c.wd = 0.04, c.wd_end = 0.4, c.clip_grad = 3.0;
    c.drop_path = 0.0; /* yaml 0.3; none for a 4-block model, as the DINO job */
    c.layer_decay = 0.9, c.patch_embed_lr_mult = 0.2;
    /* a faster teacher for short runs (yaml 0.992), the yaml's temperatures with the warmup
     * scaled to 30% of the run as in the yaml (30 of 100 epochs) */
    c.momentum_teacher = 0.99, c.final_momentum_teacher = 1.0, c.teacher_temp = 0.07, c.warmup_teacher_temp = 0.04;
    c.warmup_teacher_temp_epochs = 6, c.student_temp = 0.1, c.center_momentum = 0.9;
    c.seed = 0, c.workers = 2, c.ckpt_every = 200, c.knn_every_epoch = 1, c.knn_train = 10000, c.knn_test = 2000;
    return c;
}

dinoc_dinov2_sched dinoc_dinov2_schedule(const dinoc_dinov2_config *c, int64_t it, int64_t ipe) {
    dinoc_dinov2_sched s;
    /* under a time budget the epoch-counted lengths shrink with the fitted run (optim.h) */
    const int64_t      recipe = (int64_t)c->epochs * ipe, sched = c->sched_steps;
    const int64_t      total  = sched > 0 ? sched : recipe;
    const int64_t      W      = dinoc_recipe_steps(c->warmup_teacher_temp_epochs, ipe, sched, recipe);
    /* sqrt_wrt_1024 scaling of the base lr */
    s.lr = dinoc_cosine_schedule(c->lr * sqrt(c->batch / 1024.0), c->min_lr, total,
                                 dinoc_recipe_steps(c->warmup_epochs, ipe, sched, recipe), 0, it);
    s.last_layer_lr = it < dinoc_recipe_steps(c->freeze_last_layer_epochs, ipe, sched, recipe) ? 0.0 : s.lr;
    s.wd            = dinoc_cosine_schedule(c->wd, c->wd_end, total, 0, 0, it);
    s.momentum      = dinoc_cosine_schedule(c->momentum_teacher, c->final_momentum_teacher, total, 0, 0, it);
    /* CosineScheduler(tt, tt, W, warmup_iters=W, start=warmup): linspace per iteration, then tt */
    s.teacher_temp = dinoc_cosine_schedule(c->teacher_temp, c->teacher_temp, W, W, c->warmup_teacher_temp, it);
    return s;
}

/* ---- setup ------------------------------------------------------------------------------------ */

/* One AdamW group for the tensor `name` at [off, off + cnt) with DINOv2's lr / wd multipliers
 * (dinoc_param_groups_default on a single tensor). */
static dinoc_status make_group(dinoc_param_group *out, const char *name, size_t off, size_t cnt,
                               const dinoc_dinov2_config *c) {
    return dinoc_param_groups_default(out, &name, &off, &cnt, NULL, 1, c->layer_decay, c->depth,
                                      c->patch_embed_lr_mult, 0);
}

static dinoc_status backbone_groups(dinoc_dinov2 *d) {
    const dinoc_model *m = d->student;
    const int          n = dinoc_vit_param_entries(m, DINOC_NAMES_ORIG, NULL);
    dinoc_param_entry *e = calloc((size_t)n, sizeof *e);
    d->groups            = calloc((size_t)n, sizeof *d->groups);
    dinoc_status s       = e && d->groups ? DINOC_OK : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    if (!s) dinoc_vit_param_entries(m, DINOC_NAMES_ORIG, e);
    for (int i = 0; i < n && !s; i++) {
        size_t numel = 1;
        for (int j = 0; j < e[i].ndim; j++) numel *= (size_t)e[i].shape[j];
        s = make_group(&d->groups[i], e[i].name, (size_t)(e[i].data - m->params), numel, &d->cfg);
    }
    d->ngroups = n;
    free(e);
    return s;
}

static void head_free(dinoc_dinov2_head *h) {
    dinoc_free(h->sp), dinoc_free(h->tp), dinoc_free(h->g);
    dinoc_adamw_free(&h->opt);
    free(h->groups);
    dinoc_dino_head_acts_free(&h->sa), dinoc_dino_head_acts_free(&h->ta);
    memset(h, 0, sizeof *h);
}

/* A head (student, teacher copy, grads, AdamW, groups named prefix.<tensor>) for at most s_rows
 * student and t_rows teacher rows. The last layer's tensors come last in the layout. */
static dinoc_status head_init(dinoc_dinov2_head *h, const dinoc_dino_head_config *hc, const char *prefix,
                              int s_rows, int t_rows, const dinoc_dinov2_config *c, dinoc_rng *rng) {
    dinoc_status s;
    if ((s = dinoc_dino_head_layout_init(&h->l, hc))) return dinoc_fail_prefix(s, "%s", prefix);
    const size_t n = h->l.n;
    h->sp = dinoc_calloc(n, sizeof(float)), h->tp = dinoc_calloc(n, sizeof(float)), h->g = dinoc_calloc(n, sizeof(float));
    if (!h->sp || !h->tp || !h->g) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for the %s", prefix);
    /* DINOv2's head: weight_g filled with 1 and trainable (no norm_last_layer) */
    dinoc_dino_head_init(&h->l, h->sp, rng);
    memcpy(h->tp, h->sp, sizeof(float) * n);
    dinoc_adamw_config ac = {0.9, 0.999, 1e-8};
    if ((s = dinoc_adamw_init(&h->opt, n, ac))) return s;
    char      names[2 * DINOC_DINO_HEAD_MAX_LAYERS + 2][48], full[96];
    size_t    off[2 * DINOC_DINO_HEAD_MAX_LAYERS + 2], cnt[2 * DINOC_DINO_HEAD_MAX_LAYERS + 2];
    const int k = dinoc_dino_head_names(&h->l, names, NULL, NULL, off, cnt);
    if (!(h->groups = calloc((size_t)k, sizeof *h->groups))) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    h->ngroups = k, h->last_first = k;
    for (int i = 0; i < k; i++) {
        snprintf(full, sizeof full, "%.40s.%.47s", prefix, names[i]);
        if ((s = make_group(&h->groups[i], full, off[i], cnt[i], c))) return s;
        if (off[i] >= h->l.last_off && i < h->last_first) h->last_first = i;
    }
    if ((s = dinoc_dino_head_acts_init(&h->sa, &h->l, s_rows)) || (s = dinoc_dino_head_acts_init(&h->ta, &h->l, t_rows)))
        return s;
    return DINOC_OK;
}

void dinoc_dinov2_free(dinoc_dinov2 *d) {
    dinoc_model_free(d->student), dinoc_model_free(d->teacher), dinoc_model_free(d->tbf);
    dinoc_free(d->g), dinoc_adamw_free(&d->opt), free(d->groups);
    head_free(&d->dh), head_free(&d->ih);
    dinoc_train_state_free(d->tsg), dinoc_train_state_free(d->tsl), dinoc_state_free(d->tst);
    dinoc_mask_batch_free(&d->mb), dinoc_mask_batch_free(&d->mbg), dinoc_koleo_free(&d->koleo);
    dinoc_free(d->kx), dinoc_free(d->kdx);
    float *bufs[] = {d->center, d->icenter, d->xg, d->xl, d->hin, d->dhin, d->tin, d->s_logits, d->t_logits,
                     d->ds, d->q_dino, d->q_ibot, d->doutg, d->doutl, d->dpr};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dinoc_free(bufs[i]);
    dinoc_free(d->row_loss), dinoc_free(d->sk_scratch);
    memset(d, 0, sizeof *d);
}

static dinoc_status check_config(const dinoc_dinov2_config *c) {
    const dinoc_multicrop_config *m = &c->crops;
    dinoc_status                  s = dinoc_multicrop_check(m);
    if (s) return s;
    if (c->batch < 1 || c->epochs < 1) return dinoc_fail(DINOC_ERR_ARG, "batch %d and epochs %d must be >= 1", c->batch, c->epochs);
    if (c->patch < 1 || c->image % c->patch || m->global_size % c->patch || (m->n_local && m->local_size % c->patch))
        return dinoc_fail(DINOC_ERR_ARG, "image %d, global crop %d and local crop %d: each a multiple of the patch %d",
                          c->image, m->global_size, m->local_size, c->patch);
    if (m->channels != c->channels || m->n_global > DINOC_DINOV2_MAX_GLOBAL)
        return dinoc_fail(DINOC_ERR_ARG, "crops: %d channels (model %d), %d global crops (at most %d)", m->channels,
                          c->channels, m->n_global, DINOC_DINOV2_MAX_GLOBAL);
    if (!(c->student_temp > 0 && c->teacher_temp > 0 && c->warmup_teacher_temp > 0 && c->layer_decay > 0))
        return dinoc_fail(DINOC_ERR_ARG, "student_temp %g, teacher_temp %g, warmup_teacher_temp %g, layer_decay %g: "
                          "each must be > 0", c->student_temp, c->teacher_temp, c->warmup_teacher_temp, c->layer_decay);
    if (c->dino_weight != 0 && m->n_global < 2 && m->n_local < 1)
        return dinoc_fail(DINOC_ERR_ARG, "%d global and %d local crops: the DINO term pairs each teacher crop with "
                          "the student's other crops, so it needs 2 global crops or a local one (or dino_weight 0)",
                          m->n_global, m->n_local);
    if (c->targets != DINOC_TARGETS_CENTERING && c->targets != DINOC_TARGETS_SINKHORN)
        return dinoc_fail(DINOC_ERR_ARG, "targets %d: centering (0) or sinkhorn (1)", (int)c->targets);
    if (c->n_registers < 0) return dinoc_fail(DINOC_ERR_ARG, "n_registers %d must be >= 0", c->n_registers);
    return DINOC_OK;
}

dinoc_status dinoc_dinov2_init(dinoc_dinov2 *d, const dinoc_dinov2_config *cfg) {
    memset(d, 0, sizeof *d);
    d->cfg                       = *cfg;
    const dinoc_dinov2_config *c = &d->cfg;
    dinoc_status               s;
    if ((s = check_config(c))) return s;
    d->cfg.precision = dinoc_precision_resolve(c->precision, 1); /* "auto": the name the run saves */
    if (c->precision && (s = dinoc_precision_parse(c->precision, &d->prec))) return dinoc_fail_prefix(s, "DINOv2");
    d->world = dinoc_dist_size(), d->rank = dinoc_dist_rank();
    if (c->batch % d->world)
        return dinoc_fail(DINOC_ERR_ARG, "batch %d is not a multiple of the %d ranks", c->batch, d->world);
    d->B = c->batch / d->world, d->nG = c->crops.n_global, d->nL = c->crops.n_local;
    d->G = c->crops.global_size, d->L = c->crops.local_size;
    const int gh = d->G / c->patch, B = d->B, NT = d->nG * B, NS = (d->nG + d->nL) * B, D = c->dim;
    d->Np         = gh * gh;
    /* this rank's share of the global draw holds at most the global bound, and at most every token */
    d->max_masked = dinoc_mask_upperbound(NT * d->world, d->Np, c->mask_prob, c->mask_ratio_min, c->mask_ratio_max);
    if (d->max_masked > NT * d->Np) d->max_masked = NT * d->Np;
    dinoc_vit_config v;
    memset(&v, 0, sizeof v);
    v.arch = c->n_registers ? DINOC_ARCH_DINOV2_REG : DINOC_ARCH_DINOV2, v.dim = D, v.depth = c->depth;
    v.heads = c->heads, v.ffn_hidden = c->mlp_ratio * D, v.ffn = DINOC_FFN_MLP, v.patch = c->patch;
    v.channels = c->channels, v.image_size = c->image, v.n_registers = c->n_registers, v.layerscale = 1;
    v.qkv_bias = 1, v.mask_token = 1, v.ln_eps = 1e-6f, v.pos_interp = DINOC_POS_INTERP_SIZE;
    if ((s = dinoc_model_init_random(&d->student, &v, c->seed)) || (s = dinoc_vit_alloc(&d->teacher, &v))) goto fail;
    memcpy(d->teacher->params, d->student->params, sizeof(float) * d->student->n_params);
    d->student->pp.do_convert_rgb = d->teacher->pp.do_convert_rgb = c->channels == 3;
    dinoc_rng_seed(&d->rng, c->seed ^ 0xd1a02ull);
    const int M = d->max_masked, sep = c->ibot_separate_head;
    dinoc_dino_head_config hc = {D, c->head_hidden, c->head_bottleneck, c->out_dim, c->head_layers};
    dinoc_dino_head_config ic = {D, c->ibot_hidden, c->ibot_bottleneck, c->ibot_out_dim, c->ibot_layers};
    if ((s = head_init(&d->dh, &hc, "dino_head", sep ? NS : NS + M, sep ? NT : NT + M, c, &d->rng))) goto fail;
    if (sep && (s = head_init(&d->ih, &ic, "ibot_head", M > 0 ? M : 1, M > 0 ? M : 1, c, &d->rng))) goto fail;
    const int K = c->out_dim, Ki = sep ? c->ibot_out_dim : K;
    d->g = dinoc_calloc(d->student->n_params, sizeof(float));
    if (!d->g) goto nomem;
    if ((s = dinoc_adamw_init(&d->opt, d->student->n_params, (dinoc_adamw_config){0.9, 0.999, 1e-8})) ||
        (s = backbone_groups(d)))
        goto fail;
    if ((s = dinoc_train_state_init(&d->tsg, d->student, NT, d->G, d->G))) goto fail;
    if (d->nL && (s = dinoc_train_state_init(&d->tsl, d->student, d->nL * B, d->L, d->L))) goto fail;
    if (d->prec == DINOC_PRECISION_BF16 && (s = dinoc_bf16_pair_init(d->tsg, d->tsl, d->student, &d->tbf, d->teacher)))
        goto fail;
    if ((s = dinoc_state_init(&d->tst, d->tbf ? d->tbf : d->teacher, NT, d->G, d->G, 0))) goto fail;
    dinoc_train_state_dims(d->tsg, NULL, &d->Tg, NULL);
    if (d->tsl) dinoc_train_state_dims(d->tsl, NULL, &d->Tl, NULL);
    if ((s = dinoc_mask_generator_init(&d->mgen, gh, gh)) || (s = dinoc_mask_batch_init(&d->mb, NT, d->Np)) ||
        (d->world > 1 && (s = dinoc_mask_batch_init(&d->mbg, NT * d->world, d->Np))) ||
        (s = dinoc_koleo_init(&d->koleo, B * d->world, D)))
        goto fail;
    d->kx  = dinoc_calloc((size_t)B * d->world * D, sizeof(float));
    d->kdx = dinoc_calloc((size_t)B * d->world * D, sizeof(float));
    if (!d->kx || !d->kdx) goto nomem;
    const size_t C = (size_t)c->channels, Ks = (size_t)NS * K + (size_t)M * Ki, Kt = (size_t)NT * K + (size_t)M * Ki;
    d->center     = dinoc_calloc((size_t)K, sizeof(float));
    d->icenter    = dinoc_calloc((size_t)Ki, sizeof(float));
    d->xg         = dinoc_calloc((size_t)NT * C * d->G * d->G, sizeof(float));
    d->xl         = dinoc_calloc((size_t)d->nL * B * C * d->L * d->L + 1, sizeof(float));
    d->hin        = dinoc_calloc((size_t)(NS + M) * D, sizeof(float));
    d->dhin       = dinoc_calloc((size_t)(NS + M) * D, sizeof(float));
    d->tin        = dinoc_calloc((size_t)(NT + M) * D, sizeof(float));
    d->s_logits   = dinoc_calloc(Ks, sizeof(float));
    d->ds         = dinoc_calloc(Ks, sizeof(float));
    d->t_logits   = dinoc_calloc(Kt, sizeof(float));
    d->q_dino     = dinoc_calloc((size_t)NT * K, sizeof(float));
    d->q_ibot     = dinoc_calloc((size_t)M * Ki + 1, sizeof(float));
    d->doutg      = dinoc_calloc((size_t)NT * d->Tg * D, sizeof(float));
    d->doutl      = dinoc_calloc((size_t)d->nL * B * d->Tl * D + 1, sizeof(float));
    d->dpr        = dinoc_calloc((size_t)c->depth, sizeof(float));
    d->row_loss   = dinoc_calloc((size_t)(NS + M), sizeof(double));
    d->sk_scratch = dinoc_calloc((size_t)(K > Ki ? K : Ki) + 1 + (NT > M ? NT : M), sizeof(double));
    if (!d->center || !d->icenter || !d->xg || !d->xl || !d->hin || !d->dhin || !d->tin || !d->s_logits || !d->ds ||
        !d->t_logits || !d->q_dino || !d->q_ibot || !d->doutg || !d->doutl || !d->dpr || !d->row_loss || !d->sk_scratch)
        goto nomem;
    /* drop_path_uniform: every block at the same rate */
    for (int l = 0; l < c->depth; l++) d->dpr[l] = (float)c->drop_path;
    return DINOC_OK;
nomem:
    s = dinoc_fail(DINOC_ERR_NOMEM, "DINOv2: out of memory for batch %d", c->batch);
fail:
    dinoc_dinov2_free(d);
    return s;
}

dinoc_status dinoc_dinov2_draw_masks(dinoc_dinov2 *d, int64_t step) {
    const dinoc_dinov2_config *c = &d->cfg;
    dinoc_rng                  g; /* the step's own stream: the same on every rank, nothing to save */
    dinoc_rng_seed(&g, (c->seed ^ 0x6d61736b73ull) + 0x9e3779b97f4a7c15ull * (uint64_t)(step + 1));
    if (d->world == 1)
        return dinoc_mask_collate(&d->mb, &d->mgen, c->mask_prob, c->mask_ratio_min, c->mask_ratio_max, &g, NULL);
    /* the global batch's masks (crop-major rows v * Bg + image); this rank keeps its images */
    dinoc_status s = dinoc_mask_collate(&d->mbg, &d->mgen, c->mask_prob, c->mask_ratio_min, c->mask_ratio_max, &g, NULL);
    if (s) return s;
    const int B = d->B, Bg = B * d->world;
    for (int v = 0; v < d->nG; v++)
        memcpy(d->mb.masks + (size_t)v * B * d->Np, d->mbg.masks + ((size_t)v * Bg + (size_t)d->rank * B) * d->Np,
               (size_t)B * d->Np);
    dinoc_mask_batch_index(&d->mb);
    return DINOC_OK;
}

/* The global batch's KoLeo on rows x [B, D] of this rank: the rows of all ranks are gathered, the
 * loss and its backward run on all of them (the same on every rank), and this rank's rows of the
 * gradient, times W (see the top), are added to dx. One process: KoLeo of x. */
static dinoc_status koleo_global(dinoc_dinov2 *d, float *dx, const float *x, double weight, double *loss) {
    const int    B = d->B, D = d->cfg.dim, W = d->world;
    dinoc_status s = dinoc_dist_allgather_f32(x, d->kx, (size_t)B * D);
    if (s) return s;
    memset(d->kdx, 0, sizeof(float) * (size_t)B * W * D);
    *loss += dinoc_koleo_loss(&d->koleo, d->kdx, d->kx, B * W, weight);
    const float *mine = d->kdx + (size_t)d->rank * B * D;
    for (size_t i = 0; i < (size_t)B * D; i++) dx[i] += (float)W * mine[i];
    return DINOC_OK;
}

/* ---- the step --------------------------------------------------------------------------------- */

/* dst [N, D] = token 0 (CLS) of each of the N sequences of tokens [N, T, D]. */
static void gather_cls(float *dst, const float *tok, int N, int T, int D) {
    for (int n = 0; n < N; n++) memcpy(dst + (size_t)n * D, tok + (size_t)n * T * D, sizeof(float) * D);
}

/* Row of token `flat` (image * Np + patch) in tokens [n_img, T, D] with R registers after CLS. */
static size_t patch_row(int flat, int Np, int T, int R) {
    return (size_t)(flat / Np) * T + 1 + R + flat % Np;
}

/* teacher <- m teacher + (1 - m) student, in float32 as torch's _foreach_mul_ / _foreach_add_ */
static void ema(float *t, const float *s, size_t n, double m) {
    const float mf = (float)m, omf = (float)(1.0 - m);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < (int64_t)n; i++) t[i] = t[i] * mf + omf * s[i];
}

/* AdamW on a head: its last layer at last_layer_lr (0 while frozen), expressed as a multiplier of
 * lr (exactly 1 or 0 in practice, so lr * mult is the scheduled value bit for bit). */
static void head_update(dinoc_dinov2_head *h, const dinoc_dinov2_sched *sc) {
    const double mult = sc->last_layer_lr == sc->lr ? 1.0 : (sc->lr > 0 ? sc->last_layer_lr / sc->lr : 0.0);
    for (int i = h->last_first; i < h->ngroups; i++) h->groups[i].lr_mult = mult;
    dinoc_adamw_step(&h->opt, h->sp, h->g, h->groups, h->ngroups, sc->lr, sc->wd);
}

static double clip_or_norm(float *g, const dinoc_param_group *gr, int n, double clip) {
    return clip > 0 ? dinoc_clip_grad_norm(g, gr, n, clip) : dinoc_grad_norm(g, gr, n);
}

dinoc_status dinoc_dinov2_step(dinoc_dinov2 *d, const float *x, const uint8_t *masks, const dinoc_dinov2_sched *sc,
                               dinoc_dinov2_stats *st) {
    const dinoc_dinov2_config *c = &d->cfg;
    const int B = d->B, nG = d->nG, nL = d->nL, D = c->dim, R = c->n_registers, Np = d->Np, Tg = d->Tg, Tl = d->Tl;
    const int NT = nG * B, NS = (nG + nL) * B, K = c->out_dim, sep = c->ibot_separate_head;
    const int Ki = sep ? c->ibot_out_dim : K;
    dinoc_status s;
    memset(st, 0, sizeof *st);
    /* crop-major regrouping: [crop v of every image] for v = 0.. (collate_data_and_cast) */
    const size_t C = (size_t)c->channels, gsz = C * d->G * d->G, lsz = C * d->L * d->L, item = nG * gsz + nL * lsz;
    for (int b = 0; b < B; b++)
        for (int v = 0; v < nG + nL; v++) {
            const float *src = x + b * item + (v < nG ? v * gsz : nG * gsz + (v - nG) * lsz);
            float       *dst = v < nG ? d->xg + ((size_t)v * B + b) * gsz : d->xl + ((size_t)(v - nG) * B + b) * lsz;
            memcpy(dst, src, sizeof(float) * (v < nG ? gsz : lsz));
        }
    int M = 0;
    if (masks) {
        if (masks != d->mb.masks) memcpy(d->mb.masks, masks, (size_t)NT * Np);
        dinoc_mask_batch_index(&d->mb);
        M = d->mb.n_masked;
        if (M > d->max_masked)
            return dinoc_fail(DINOC_ERR_ARG, "masks hold %d tokens, more than the %d the step was sized for "
                              "(mask_prob %g, mask_ratio_max %g)", M, d->max_masked, c->mask_prob, c->mask_ratio_max);
    }
    double Mg = M; /* masked tokens of the global batch: its iBOT sums are collectives */
    if ((s = dinoc_dist_sum_f64(&Mg, 1))) return s;
    st->n_masked = (int)Mg;
    const int *idx = d->mb.index;
    /* teacher: no mask, no drop path; CLS rows then the masked patch rows */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (d->tbf && (s = dinoc_vit_bf16_copy(&d->tbf, d->teacher))) return s; /* bf16: this step's teacher */
    if ((s = dinoc_forward(d->tbf ? d->tbf : d->teacher, d->tst, d->xg, NULL))) return s;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    st->t_teacher = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    const float *tout = dinoc_state_output(d->tst);
    gather_cls(d->tin, tout, NT, Tg, D);
    for (int m = 0; m < M; m++)
        memcpy(d->tin + (size_t)(NT + m) * D, tout + patch_row(idx[m], Np, Tg, R) * D, sizeof(float) * D);
    float *t_cls = d->t_logits, *t_patch = d->t_logits + (size_t)NT * K;
    if (!sep) {
        dinoc_dino_head_forward(&d->dh.ta, d->dh.tp, d->tin, NT + M, d->t_logits);
    } else {
        dinoc_dino_head_forward(&d->dh.ta, d->dh.tp, d->tin, NT, t_cls);
        if (M) dinoc_dino_head_forward(&d->ih.ta, d->ih.tp, d->tin + (size_t)NT * D, M, t_patch);
    }
    const double temp = sc->teacher_temp;
    if (c->targets == DINOC_TARGETS_CENTERING) {
        dinoc_softmax_center(d->q_dino, t_cls, d->center, NT, K, temp);
        if (M) dinoc_softmax_center(d->q_ibot, t_patch, d->icenter, M, Ki, temp);
    } else {
        if ((s = dinoc_sinkhorn_knopp(d->q_dino, t_cls, NT, K, temp, 3, d->sk_scratch))) return s;
        if (Mg > 0 && (s = dinoc_sinkhorn_knopp(d->q_ibot, t_patch, M, Ki, temp, 3, d->sk_scratch))) return s;
    }
    /* student: masked globals, locals; head rows = [global CLS, local CLS, masked patches] */
    if ((s = dinoc_vit_forward_train(d->student, d->tsg, d->xg, M ? d->mb.masks : NULL, d->dpr, &d->rng))) return s;
    const float *sout = dinoc_train_state_output(d->tsg);
    gather_cls(d->hin, sout, NT, Tg, D);
    if (nL) {
        if ((s = dinoc_vit_forward_train(d->student, d->tsl, d->xl, NULL, d->dpr, &d->rng))) return s;
        gather_cls(d->hin + (size_t)NT * D, dinoc_train_state_output(d->tsl), nL * B, Tl, D);
    }
    for (int m = 0; m < M; m++)
        memcpy(d->hin + (size_t)(NS + m) * D, sout + patch_row(idx[m], Np, Tg, R) * D, sizeof(float) * D);
    float *s_cls = d->s_logits, *s_patch = d->s_logits + (size_t)NS * K, *ds_patch = d->ds + (size_t)NS * K;
    if (!sep) {
        dinoc_dino_head_forward(&d->dh.sa, d->dh.sp, d->hin, NS + M, d->s_logits);
    } else {
        dinoc_dino_head_forward(&d->dh.sa, d->dh.sp, d->hin, NS, s_cls);
        if (M) dinoc_dino_head_forward(&d->ih.sa, d->ih.sp, d->hin + (size_t)NS * D, M, s_patch);
    }
    /* losses, each writing its weighted gradient; then the heads' backward into dhin */
    st->dino_loss = dinoc_dinov2_dino_loss(d->ds, d->row_loss, d->q_dino, s_cls, nG, nL, B, K, c->student_temp,
                                           c->dino_weight);
    if (M)
        st->ibot_loss = dinoc_ibot_loss(ds_patch, d->row_loss, d->q_ibot, s_patch, d->mb.weight, M, NT, Ki,
                                        c->student_temp, c->ibot_weight);
    memset(d->g, 0, sizeof(float) * d->student->n_params);
    memset(d->dh.g, 0, sizeof(float) * d->dh.l.n);
    if (sep) memset(d->ih.g, 0, sizeof(float) * d->ih.l.n);
    memset(d->dhin, 0, sizeof(float) * (size_t)(NS + M) * D);
    dinoc_dino_head_backward(&d->dh.sa, d->dh.sp, d->ds, d->dh.g, d->dhin);
    if (sep && M) dinoc_dino_head_backward(&d->ih.sa, d->ih.sp, ds_patch, d->ih.g, d->dhin + (size_t)NS * D);
    /* KoLeo on each global crop's backbone CLS (one chunk per crop, as the reference) */
    if (c->koleo_weight > 0)
        for (int v = 0; v < nG; v++)
            if ((s = koleo_global(d, d->dhin + (size_t)v * B * D, d->hin + (size_t)v * B * D, c->koleo_weight,
                                  &st->koleo_loss)))
                return s;
    /* the global batch's DINO and iBOT losses (means of the ranks' equal shares) */
    double red[2] = {st->dino_loss, st->ibot_loss};
    if ((s = dinoc_dist_sum_f64(red, 2))) return s;
    st->dino_loss = red[0] / d->world, st->ibot_loss = red[1] / d->world;
    st->loss = c->dino_weight * st->dino_loss + c->koleo_weight * st->koleo_loss + c->ibot_weight * st->ibot_loss;
    if (!isfinite(st->loss))
        return dinoc_fail(DINOC_ERR_NUMERIC, "DINOv2 loss is %g (DINO %g, iBOT %g, KoLeo %g)", st->loss, st->dino_loss,
                          st->ibot_loss, st->koleo_loss);
    /* backbone backward: CLS rows and masked patch rows of the token gradients */
    memset(d->doutg, 0, sizeof(float) * (size_t)NT * Tg * D);
    for (int r = 0; r < NT; r++) memcpy(d->doutg + (size_t)r * Tg * D, d->dhin + (size_t)r * D, sizeof(float) * D);
    for (int m = 0; m < M; m++)
        memcpy(d->doutg + patch_row(idx[m], Np, Tg, R) * D, d->dhin + (size_t)(NS + m) * D, sizeof(float) * D);
    if ((s = dinoc_vit_backward(d->student, d->tsg, d->doutg, d->g))) return s;
    if (nL) {
        memset(d->doutl, 0, sizeof(float) * (size_t)nL * B * Tl * D);
        for (int r = 0; r < nL * B; r++)
            memcpy(d->doutl + (size_t)r * Tl * D, d->dhin + (size_t)(NT + r) * D, sizeof(float) * D);
        if ((s = dinoc_vit_backward(d->student, d->tsl, d->doutl, d->g))) return s;
    }
    /* data parallel: the average of the ranks' gradients is the global batch's */
    if (d->world > 1) {
        if ((s = dinoc_dist_sum_f32(d->g, d->student->n_params)) || (s = dinoc_dist_sum_f32(d->dh.g, d->dh.l.n)) ||
            (sep && (s = dinoc_dist_sum_f32(d->ih.g, d->ih.l.n))))
            return s;
        const float inv = 1.0f / (float)d->world;
        for (size_t i = 0; i < d->student->n_params; i++) d->g[i] *= inv;
        for (size_t i = 0; i < d->dh.l.n; i++) d->dh.g[i] *= inv;
        if (sep)
            for (size_t i = 0; i < d->ih.l.n; i++) d->ih.g[i] *= inv;
    }
    /* clip_grad_norm_ per student submodule, then AdamW, EMA and the centers */
    st->grad_norm      = clip_or_norm(d->g, d->groups, d->ngroups, c->clip_grad);
    st->head_grad_norm = clip_or_norm(d->dh.g, d->dh.groups, d->dh.ngroups, c->clip_grad);
    if (sep) st->ibot_head_grad_norm = clip_or_norm(d->ih.g, d->ih.groups, d->ih.ngroups, c->clip_grad);
    if (!isfinite(st->grad_norm) || !isfinite(st->head_grad_norm) || !isfinite(st->ibot_head_grad_norm))
        return dinoc_fail(DINOC_ERR_NUMERIC, "DINOv2 gradient norm is not finite (backbone %g, head %g, iBOT head %g)",
                          st->grad_norm, st->head_grad_norm, st->ibot_head_grad_norm);
    dinoc_adamw_step(&d->opt, d->student->params, d->g, d->groups, d->ngroups, sc->lr, sc->wd);
    head_update(&d->dh, sc);
    if (sep) head_update(&d->ih, sc);
    ema(d->teacher->params, d->student->params, d->student->n_params, sc->momentum);
    ema(d->dh.tp, d->dh.sp, d->dh.l.n, sc->momentum);
    if (sep) ema(d->ih.tp, d->ih.sp, d->ih.l.n, sc->momentum);
    if (c->targets == DINOC_TARGETS_CENTERING) {
        if ((s = dinoc_center_update(d->center, t_cls, NT, K, c->center_momentum, d->sk_scratch))) return s;
        if (Mg > 0 && (s = dinoc_center_update(d->icenter, t_patch, M, Ki, c->center_momentum, d->sk_scratch)))
            return s;
    }
    return DINOC_OK;
}
