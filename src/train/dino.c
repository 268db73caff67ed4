/* dino.c: one DINO step (see dino.h): setup of student, teacher, heads and optimisers, the step
 * itself, and the schedules. The run around it (data, checkpoints, logs) is in dino_run.c.
 * tests/test_dino.c checks a step against PyTorch (tests/py/gen_dino.py). */
#include "dino.h"

#include "../core/dist.h"
#include "../eval/eval.h"
#include "supervised.h"

#include <math.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

dinoc_dino_config dinoc_dino_default(void) {
    dinoc_dino_config c;
    memset(&c, 0, sizeof c);
    c.data = "fashion-mnist", c.out = "runs/dino";
    /* The main job's model: small enough for several epochs in 14 minutes on 2 cores (measured
     * k-NN per epoch in README); DINO's values elsewhere unless noted */
    c.dim = 96, c.depth = 4, c.heads = 3, c.patch = 7, c.image = 28, c.channels = 1, c.mlp_ratio = 4;
    c.out_dim = 1024, c.head_hidden = 512, c.head_bottleneck = 128, c.head_layers = 3, c.norm_last_layer = 1;
    dinoc_multicrop_config m = dinoc_multicrop_default();
    /* 2 local crops, not DINO's 8 (or the 4 used until session 11): each one costs a sixth of the
     * student's step, and at 14 minutes the steps they buy are worth more than the views. 7-minute
     * runs, k-NN on held-out training rows (README): 4 locals 82.4 / 82.9 % (seeds 0 / 1; 83.1 in
     * session 10), 2 locals 83.9 / 83.9 %, none 83.1 %, 8 locals 81.6 %. */
    m.n_global = 2, m.n_local = 2, m.global_size = 28, m.local_size = 14, m.channels = 1;
    m.global_scale[0] = 0.4f, m.global_scale[1] = 1.0f, m.local_scale[0] = 0.1f, m.local_scale[1] = 0.4f;
    m.blur_sigma[0] = 0.1f, m.blur_sigma[1] = 0.5f; /* DINO's 0.1..2 px at 224 is 0.1..0.25 px here */
    c.crops = m;
    /* Short runs want steps: DINO's teacher (EMA), center and temperature sharpening move once per
     * step, and at batch 256 a short run ends with the loss still near ln K. Measured on 7-minute
     * runs (k-NN top-1, full test set; README's table): batch 256 71.0 %, + no last-layer freeze
     * 72.5 %, batch 128 73.6 %, batch 64 76.1 %, batch 32 77.4 %, batch 16 76.6 % (step lr 1e-3 at
     * 256, 5e-4 below: DINO's lr per 256 images scaled linearly, 4e-3 x 32 / 256); images/s fall
     * only 330 -> 280 from batch 256 to 32. freeze_last_layer 0: DINO freezes 1 of its 100+
     * epochs, here 1 epoch is a fifth of the run. Also: a faster teacher (0.99, DINO 0.996) and no
     * stochastic depth for a 4-block model. */
    c.epochs = 20, c.batch = 32, c.warmup_epochs = 1, c.freeze_last_layer = 0;
    c.lr = 4e-3, c.min_lr = 1e-6, c.wd = 0.04, c.wd_end = 0.4, c.clip_grad = 3.0, c.drop_path = 0.0;
    c.momentum_teacher = 0.99, c.teacher_temp = 0.04, c.warmup_teacher_temp = 0.04;
    c.warmup_teacher_temp_epochs = 0, c.student_temp = 0.1, c.center_momentum = 0.9;
    c.seed = 0, c.workers = 2, c.ckpt_every = 200, c.knn_every_epoch = 1, c.knn_train = 10000, c.knn_test = 2000;
    return c;
}

dinoc_dino_sched dinoc_dino_schedule(const dinoc_dino_config *c, int64_t it, int64_t ipe) {
    dinoc_dino_sched s;
    /* under a time budget the epoch-counted lengths shrink with the fitted run (optim.h) */
    const int64_t    recipe = (int64_t)c->epochs * ipe, sched = c->sched_steps;
    const int64_t    total  = sched > 0 ? sched : recipe;
    const int64_t    epoch  = dinoc_recipe_epoch(it, ipe, sched, recipe);
    s.lr       = dinoc_cosine_schedule(c->lr * c->batch / 256.0, c->min_lr, total,
                                       dinoc_recipe_steps(c->warmup_epochs, ipe, sched, recipe), 0, it);
    s.wd       = dinoc_cosine_schedule(c->wd, c->wd_end, total, 0, 0, it);
    s.momentum = dinoc_cosine_schedule(c->momentum_teacher, 1.0, total, 0, 0, it);
    /* np.linspace(warmup_teacher_temp, teacher_temp, W) then teacher_temp, indexed by epoch */
    const int W = c->warmup_teacher_temp_epochs;
    if (epoch < W)
        s.teacher_temp = W > 1 ? c->warmup_teacher_temp + (c->teacher_temp - c->warmup_teacher_temp) * epoch / (W - 1)
                               : c->warmup_teacher_temp;
    else
        s.teacher_temp = c->teacher_temp;
    s.freeze_last_layer = epoch < c->freeze_last_layer;
    return s;
}

/* ---- setup ------------------------------------------------------------------------------------ */

static dinoc_vit_config backbone_config(const dinoc_dino_config *c) {
    dinoc_vit_config v;
    memset(&v, 0, sizeof v);
    v.arch = DINOC_ARCH_VIT, v.dim = c->dim, v.depth = c->depth, v.heads = c->heads;
    v.ffn_hidden = c->mlp_ratio * c->dim, v.ffn = DINOC_FFN_MLP, v.patch = c->patch, v.channels = c->channels;
    v.image_size = c->image, v.qkv_bias = 1, v.ln_eps = 1e-6f, v.pos_interp = DINOC_POS_INTERP_SIZE;
    return v;
}

/* One group per backbone tensor with DINO v1's weight-decay rule (no decay for biases and 1-D):
 * the ViT's tensors under DINO's names, or the ResNet's parameters (BN running statistics are
 * buffers, outside the optimiser, as torch's named_parameters leaves them out). */
static dinoc_status backbone_groups(dinoc_dino *d) {
    const dinoc_model        *m  = d->student;
    const dinoc_resnet_param *re = NULL;
    const int          n = m ? dinoc_vit_param_entries(m, DINOC_NAMES_ORIG, NULL) : dinoc_resnet_n_param_entries(d->rs);
    dinoc_param_entry *e = m ? calloc((size_t)n, sizeof *e) : NULL;
    const char       **names = calloc((size_t)n, sizeof *names);
    size_t            *off = calloc((size_t)n, sizeof *off), *cnt = calloc((size_t)n, sizeof *cnt);
    int               *nd = calloc((size_t)n, sizeof *nd);
    d->groups          = calloc((size_t)n, sizeof *d->groups);
    dinoc_status s     = DINOC_OK;
    if ((m && !e) || !names || !off || !cnt || !nd || !d->groups) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (m) dinoc_vit_param_entries(m, DINOC_NAMES_ORIG, e);
    else dinoc_resnet_entries(d->rs, &re);
    for (int i = 0; i < n; i++) {
        if (m) {
            int64_t k = 1;
            for (int j = 0; j < e[i].ndim; j++) k *= e[i].shape[j];
            names[i] = e[i].name, off[i] = (size_t)(e[i].data - m->params), cnt[i] = (size_t)k, nd[i] = e[i].ndim;
        } else {
            names[i] = re[i].name, off[i] = re[i].offset, cnt[i] = re[i].count, nd[i] = re[i].ndim;
        }
    }
    s          = dinoc_param_groups_default(d->groups, names, off, cnt, nd, n, 1.0, m ? m->cfg.depth : 0, 1.0, 1);
    d->ngroups = n;
done:
    free(e), free(names), free(off), free(cnt), free(nd);
    return s;
}

/* Head groups: the MLP (weights decayed, biases not) in hgroups; the last layer (g, v) in
 * lgroups, offsets relative to hl.last_off. g is frozen for good under norm_last_layer. */
static dinoc_status head_groups(dinoc_dino *d) {
    const dinoc_dino_head_layout *l = &d->hl;
    char    names[2 * DINOC_DINO_HEAD_MAX_LAYERS + 2][48];
    int64_t shapes[2 * DINOC_DINO_HEAD_MAX_LAYERS + 2][2];
    int     nd[2 * DINOC_DINO_HEAD_MAX_LAYERS + 2];
    size_t  off[2 * DINOC_DINO_HEAD_MAX_LAYERS + 2], cnt[2 * DINOC_DINO_HEAD_MAX_LAYERS + 2];
    int     n = dinoc_dino_head_names(l, names, shapes, nd, off, cnt);
    d->hgroups = calloc((size_t)n, sizeof *d->hgroups);
    if (!d->hgroups) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    d->nhgroups = 0;
    for (int i = 0; i < n; i++) {
        dinoc_param_group g = {off[i], cnt[i], 1.0, nd[i] > 1 ? 1.0 : 0.0, 0, ""};
        snprintf(g.name, sizeof g.name, "head.%.47s", names[i]);
        if (off[i] >= l->last_off) {
            g.offset -= l->last_off;
            if (off[i] == l->g_off) g.frozen = d->cfg.norm_last_layer;
            d->lgroups[off[i] == l->g_off ? 0 : 1] = g;
        } else {
            d->hgroups[d->nhgroups++] = g;
        }
    }
    return DINOC_OK;
}

void dinoc_dino_free(dinoc_dino *d) {
    dinoc_model_free(d->student), dinoc_model_free(d->teacher), dinoc_model_free(d->tbf);
    dinoc_resnet_free(d->rs), dinoc_resnet_free(d->rt);
    dinoc_resnet_ws_free(d->rwg), dinoc_resnet_ws_free(d->rwl), dinoc_resnet_ws_free(d->rwt);
    dinoc_free(d->shead), dinoc_free(d->thead), dinoc_free(d->g), dinoc_free(d->ghead), dinoc_free(d->center);
    dinoc_adamw_free(&d->opt), dinoc_adamw_free(&d->hopt), dinoc_adamw_free(&d->lopt);
    free(d->groups), free(d->hgroups);
    dinoc_train_state_free(d->tsg), dinoc_train_state_free(d->tsl);
    dinoc_state_free(d->tst);
    dinoc_dino_head_acts_free(&d->sha), dinoc_dino_head_acts_free(&d->tha);
    dinoc_free(d->xg), dinoc_free(d->xl), dinoc_free(d->cls), dinoc_free(d->dcls);
    dinoc_free(d->s_logits), dinoc_free(d->t_logits), dinoc_free(d->dlogits), dinoc_free(d->t_probs);
    dinoc_free(d->doutg), dinoc_free(d->doutl), dinoc_free(d->dpr), dinoc_free(d->row_loss), dinoc_free(d->red);
    memset(d, 0, sizeof *d);
}

/* The student and teacher backbones. ViT: DINO v1's (backbone_config). ResNet: the preset on the
 * data's channels without fc (DINO sets fc to Identity), torchvision's init; the teacher starts
 * as the student's copy, BN running statistics included (DINO loads the student's state_dict). */
static dinoc_status backbone_init(dinoc_dino *d) {
    const dinoc_dino_config *c = &d->cfg;
    dinoc_status             s;
    if (!c->arch || strcmp(c->arch, "vit") == 0) {
        dinoc_vit_config vc = backbone_config(c);
        if ((s = dinoc_model_init_random(&d->student, &vc, c->seed)) || (s = dinoc_vit_alloc(&d->teacher, &vc)))
            return s;
        memcpy(d->teacher->params, d->student->params, sizeof(float) * d->student->n_params);
        d->student->pp = d->teacher->pp = d->pp;
        d->sp = d->student->params, d->tp = d->teacher->params, d->np = d->student->n_params, d->D = c->dim;
    } else {
        dinoc_resnet_config rc;
        if ((s = dinoc_resnet_preset(&rc, c->arch))) return dinoc_fail_prefix(s, "DINO backbone (vit or a ResNet)");
        if (rc.stem == DINOC_RESNET_STEM_CLIP)
            return dinoc_fail(DINOC_ERR_UNSUPPORTED, "DINO backbone '%s': CLIP's ResNets are inference only", c->arch);
        rc.in_channels = c->channels, rc.num_classes = 0;
        if ((s = dinoc_resnet_init_random(&d->rs, &rc, c->seed)) || (s = dinoc_resnet_alloc(&d->rt, &rc))) return s;
        memcpy(d->rt->params, d->rs->params, sizeof(float) * d->rs->n_params);
        memcpy(d->rt->buffers, d->rs->buffers, sizeof(float) * d->rs->n_buffers);
        d->sp = d->rs->params, d->tp = d->rt->params, d->np = d->rs->n_params, d->D = dinoc_resnet_feat_dim(d->rs);
    }
    return DINOC_OK;
}

/* Activation buffers of the three backbone passes. A ResNet's teacher runs BN in training mode
 * (batch statistics): DINO never calls teacher.eval(), so torch's default train mode holds, and
 * its forward under no_grad still updates the teacher's running statistics. The EMA covers
 * parameters only (main_dino.py zips parameters()), so the teacher's running statistics follow
 * its own forwards, not the student's. That needs the training workspace (it keeps activations
 * that no backward reads: memory traded for using the tested forward_train as it is). */
static dinoc_status backbone_states(dinoc_dino *d) {
    const int    B = d->B, NT = d->nG * B;
    dinoc_status s;
    if (d->rs) {
        if ((s = dinoc_resnet_ws_init(&d->rwg, d->rs, NT, d->G, d->G, 1)) ||
            (d->nL && (s = dinoc_resnet_ws_init(&d->rwl, d->rs, d->nL * B, d->L, d->L, 1))))
            return s;
        return dinoc_resnet_ws_init(&d->rwt, d->rt, NT, d->G, d->G, 1);
    }
    if ((s = dinoc_train_state_init(&d->tsg, d->student, NT, d->G, d->G))) return s;
    if (d->nL && (s = dinoc_train_state_init(&d->tsl, d->student, d->nL * B, d->L, d->L))) return s;
    if (d->prec == DINOC_PRECISION_BF16) {
        /* bf16 training: student products round their operands (fp32 master weights and AdamW);
         * the teacher forward runs on a bf16 copy of the EMA teacher, refreshed each step */
        if ((s = dinoc_bf16_pair_init(d->tsg, d->tsl, d->student, &d->tbf, d->teacher))) return s;
    }
    return dinoc_state_init(&d->tst, d->tbf ? d->tbf : d->teacher, NT, d->G, d->G, 0);
}

dinoc_status dinoc_dino_init(dinoc_dino *d, const dinoc_dino_config *cfg) {
    memset(d, 0, sizeof *d);
    d->cfg                     = *cfg;
    const dinoc_dino_config *c = &d->cfg;
    dinoc_status             s;
    const int                vit = !c->arch || strcmp(c->arch, "vit") == 0;
    /* a ResNet takes any crop size (global pooling); the patch rules are the ViT's */
    if (c->batch < 1 || c->epochs < 1 || c->image < 1 || (vit && (c->patch < 1 || c->image % c->patch)))
        return dinoc_fail(DINOC_ERR_ARG, "batch %d, epochs %d, image %d (a multiple of the patch %d)", c->batch,
                          c->epochs, c->image, c->patch);
    d->cfg.precision = dinoc_precision_resolve(c->precision, vit); /* "auto": the name the run saves */
    if (c->precision && (s = dinoc_precision_parse(c->precision, &d->prec))) return dinoc_fail_prefix(s, "DINO");
    if (d->prec == DINOC_PRECISION_BF16 && !vit)
        return dinoc_fail(DINOC_ERR_ARG, "precision bf16: bf16 training is for ViT backbones, not '%s'", c->arch);
    if (c->crops.channels != c->channels)
        return dinoc_fail(DINOC_ERR_ARG, "crops have %d channels, the model %d", c->crops.channels, c->channels);
    if ((s = dinoc_multicrop_check(&c->crops))) return s;
    if (c->crops.n_global < 2 && c->crops.n_local < 1)
        return dinoc_fail(DINOC_ERR_ARG, "%d global and %d local crops: the DINO loss pairs each teacher crop with "
                          "the student's other crops, so it needs 2 global crops or a local one",
                          c->crops.n_global, c->crops.n_local);
    if (vit && (c->crops.global_size % c->patch || (c->crops.n_local > 0 && c->crops.local_size % c->patch)))
        return dinoc_fail(DINOC_ERR_ARG, "crop sizes %d and %d must be multiples of the patch %d",
                          c->crops.global_size, c->crops.local_size, c->patch);
    if (!(c->student_temp > 0) || !(c->teacher_temp > 0) || !(c->warmup_teacher_temp > 0))
        return dinoc_fail(DINOC_ERR_ARG, "temperatures must be > 0 (student %g, teacher %g, warmup %g)",
                          c->student_temp, c->teacher_temp, c->warmup_teacher_temp);
    /* data parallel: each rank runs batch / world images of every global batch */
    d->world = dinoc_dist_size();
    if (c->batch % d->world)
        return dinoc_fail(DINOC_ERR_ARG, "batch %d is not a multiple of the %d ranks", c->batch, d->world);
    d->B = c->batch / d->world, d->nG = c->crops.n_global, d->nL = c->crops.n_local;
    d->G = c->crops.global_size, d->L = c->crops.local_size;
    dinoc_train_preprocess(&d->pp, c->data ? c->data : "", c->image, c->channels);
    if ((s = backbone_init(d))) goto fail;
    dinoc_dino_head_config hc = {d->D, c->head_hidden, c->head_bottleneck, c->out_dim, c->head_layers};
    if ((s = dinoc_dino_head_layout_init(&d->hl, &hc))) goto fail;
    const size_t np = d->np, nh = d->hl.n;
    const int    K = c->out_dim, D = d->D, B = d->B, NS = (d->nG + d->nL) * B, NT = d->nG * B;
    d->shead  = dinoc_calloc(nh, sizeof(float));
    d->thead  = dinoc_calloc(nh, sizeof(float));
    d->g      = dinoc_calloc(np, sizeof(float));
    d->ghead  = dinoc_calloc(nh, sizeof(float));
    d->center = dinoc_calloc((size_t)K, sizeof(float));
    if (!d->shead || !d->thead || !d->g || !d->ghead || !d->center) goto nomem;
    dinoc_rng_seed(&d->rng, c->seed ^ 0xd1a0ull);
    dinoc_dino_head_init(&d->hl, d->shead, &d->rng);
    memcpy(d->thead, d->shead, sizeof(float) * nh);
    dinoc_adamw_config ac = {0.9, 0.999, 1e-8};
    if ((s = dinoc_adamw_init(&d->opt, np, ac)) || (s = dinoc_adamw_init(&d->hopt, d->hl.last_off, ac)) ||
        (s = dinoc_adamw_init(&d->lopt, nh - d->hl.last_off, ac)))
        goto fail;
    if ((s = backbone_groups(d)) || (s = head_groups(d))) goto fail;
    if ((s = backbone_states(d))) goto fail;
    if ((s = dinoc_dino_head_acts_init(&d->sha, &d->hl, NS)) || (s = dinoc_dino_head_acts_init(&d->tha, &d->hl, NT)))
        goto fail;
    int Tg = 0, Tl = 0; /* ViT tokens per crop (the ResNet needs no token buffers) */
    if (d->tsg) dinoc_train_state_dims(d->tsg, NULL, &Tg, NULL);
    if (d->tsl) dinoc_train_state_dims(d->tsl, NULL, &Tl, NULL);
    const size_t C = (size_t)c->channels;
    d->xg       = dinoc_calloc((size_t)NT * C * d->G * d->G, sizeof(float));
    d->xl       = dinoc_calloc((size_t)d->nL * B * C * d->L * d->L + 1, sizeof(float));
    d->cls      = dinoc_calloc((size_t)NS * D, sizeof(float));
    d->dcls     = dinoc_calloc((size_t)NS * D, sizeof(float));
    d->s_logits = dinoc_calloc((size_t)NS * K, sizeof(float));
    d->dlogits  = dinoc_calloc((size_t)NS * K, sizeof(float));
    d->t_logits = dinoc_calloc((size_t)NT * K, sizeof(float));
    d->t_probs  = dinoc_calloc((size_t)NT * K, sizeof(float));
    d->doutg    = dinoc_calloc((size_t)NT * Tg * D + 1, sizeof(float));
    d->doutl    = dinoc_calloc((size_t)d->nL * B * Tl * D + 1, sizeof(float));
    d->dpr      = dinoc_calloc((size_t)c->depth + 1, sizeof(float));
    d->row_loss = dinoc_calloc((size_t)(NS + NT), sizeof(double));
    d->red      = dinoc_calloc(2 * (size_t)K + 2, sizeof(double));
    if (!d->xg || !d->xl || !d->cls || !d->dcls || !d->s_logits || !d->dlogits || !d->t_logits || !d->t_probs ||
        !d->doutg || !d->doutl || !d->dpr || !d->row_loss || !d->red)
        goto nomem;
    /* DINO's stochastic depth: linspace(0, drop_path, depth) over the blocks */
    for (int l = 0; vit && l < c->depth; l++) d->dpr[l] = c->depth > 1 ? (float)(c->drop_path * l / (c->depth - 1)) : 0;
    return DINOC_OK;
nomem:
    s = dinoc_fail(DINOC_ERR_NOMEM, "DINO: out of memory for batch %d", c->batch);
fail:
    dinoc_dino_free(d);
    return s;
}

/* ---- the step --------------------------------------------------------------------------------- */

/* Copies the CLS rows of tokens [N, T, D] into dst [N, D]. */
static void take_cls(float *dst, const float *tokens, int N, int T, int D) {
    for (int n = 0; n < N; n++) memcpy(dst + (size_t)n * D, tokens + (size_t)n * T * D, sizeof(float) * D);
}

/* The backbone passes of a step, for either backbone; feats are [rows, D] (the ViT's normed CLS,
 * the ResNet's pooled feature). Pass p: 0 the global crops, 1 the local crops; each crop size
 * goes through the network once (MultiCropWrapper), both sizes through the same ResNet. */
static dinoc_status teacher_forward(dinoc_dino *d, float *feats) {
    const int NT = d->nG * d->B;
    if (d->rt) return dinoc_resnet_forward_train(d->rt, d->xg, NT, d->G, d->G, feats, d->rwt);
    int          T;
    /* bf16: this step's teacher, rounded (and packed where products run natively) */
    dinoc_status s = d->tbf ? dinoc_vit_bf16_copy(&d->tbf, d->teacher) : DINOC_OK;
    if (s) return s;
    s = dinoc_forward(d->tbf ? d->tbf : d->teacher, d->tst, d->xg, NULL);
    dinoc_state_dims(d->tst, NULL, &T, NULL, NULL, NULL);
    if (!s) take_cls(feats, dinoc_state_output(d->tst), NT, T, d->D);
    return s;
}

static dinoc_status student_forward(dinoc_dino *d, int p, float *feats) {
    const int    n = (p ? d->nL : d->nG) * d->B, side = p ? d->L : d->G;
    const float *x = p ? d->xl : d->xg;
    if (d->rs) return dinoc_resnet_forward_train(d->rs, x, n, side, side, feats, p ? d->rwl : d->rwg);
    dinoc_train_state *ts = p ? d->tsl : d->tsg;
    int                T;
    dinoc_status       s = dinoc_vit_forward_train(d->student, ts, x, NULL, d->dpr, &d->rng);
    dinoc_train_state_dims(ts, NULL, &T, NULL);
    if (!s) take_cls(feats, dinoc_train_state_output(ts), n, T, d->D);
    return s;
}

/* Accumulates the student's parameter gradients of pass p into d->g from dfeats [rows, D]. */
static dinoc_status student_backward(dinoc_dino *d, int p, const float *dfeats) {
    const int n = (p ? d->nL : d->nG) * d->B, D = d->D;
    if (d->rs) return dinoc_resnet_backward(d->rs, dfeats, d->g, p ? d->rwl : d->rwg);
    dinoc_train_state *ts   = p ? d->tsl : d->tsg;
    float             *dout = p ? d->doutl : d->doutg; /* [n, T, D], zero outside the CLS rows */
    int                T;
    dinoc_train_state_dims(ts, NULL, &T, NULL);
    for (int r = 0; r < n; r++) memcpy(dout + (size_t)r * T * D, dfeats + (size_t)r * D, sizeof(float) * D);
    return dinoc_vit_backward(d->student, ts, dout, d->g);
}

/* DINOLoss on this rank's rows: teacher rows t [nG*B, K] (raw), student rows s [(nG+nL)*B, K], of
 * a global batch of Bg = B x ranks images. Writes the teacher's softmax into q and dL/ds of the
 * global mean loss into ds, and into red the column sums of q and of t and the teacher entropy
 * sum (summed over ranks by the caller); returns this rank's share of the loss. Rows run in
 * parallel; each row's sums are in double, and totals are summed in row order (independent of the
 * thread count). */
static double dino_loss(float *q, float *ds, double *row_loss, double *red, const float *t, const float *sl,
                        const float *center, int nG, int nS, int B, int Bg, int K, double tau_t, double tau_s) {
    const float ft = (float)tau_t, fs = (float)tau_s;
    const int   NT = nG * B, NS = nS * B;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < NT; r++) {
        const float *tr = t + (size_t)r * K;
        float       *qr = q + (size_t)r * K;
        float        mx = -INFINITY;
        for (int k = 0; k < K; k++) qr[k] = (tr[k] - center[k]) / ft, mx = fmaxf(mx, qr[k]);
        double z = 0, e = 0;
        for (int k = 0; k < K; k++) qr[k] = expf(qr[k] - mx), z += qr[k];
        for (int k = 0; k < K; k++) {
            qr[k] = (float)(qr[k] / z);
            if (qr[k] > 0) e -= qr[k] * log((double)qr[k]);
        }
        row_loss[r] = e;
    }
    double ent = 0;
    for (int r = 0; r < NT; r++) ent += row_loss[r];
    red[2 * K + 1] = ent;
#pragma omp parallel for schedule(static)
    for (int k = 0; k < K; k++) {
        double p = 0, l = 0;
        for (int r = 0; r < NT; r++) p += q[(size_t)r * K + k], l += t[(size_t)r * K + k];
        red[k] = p, red[K + k] = l;
    }
    const int    n_terms = nG * nS - nG; /* pairs (i, v) with v != i */
    const double scale   = 1.0 / ((double)Bg * n_terms);
#pragma omp parallel for schedule(static)
    for (int row = 0; row < NS; row++) {
        const int    v = row / B, b = row % B;
        const float *sr = sl + (size_t)row * K;
        float       *dr = ds + (size_t)row * K;
        float        mx = -INFINITY;
        for (int k = 0; k < K; k++) mx = fmaxf(mx, sr[k] / fs);
        double z = 0;
        for (int k = 0; k < K; k++) z += expf(sr[k] / fs - mx);
        const double lz = mx + log(z);
        int          m  = 0; /* teacher views paired with v */
        for (int i = 0; i < nG; i++) m += i != v;
        double acc = 0;
        for (int k = 0; k < K; k++) {
            const double ls = sr[k] / fs - lz, p = exp(ls);
            double       qs = 0;
            for (int i = 0; i < nG; i++)
                if (i != v) qs += q[((size_t)i * B + b) * K + k];
            acc -= qs * ls;
            dr[k] = (float)((m * p - qs) * scale / tau_s);
        }
        row_loss[NT + row] = acc;
    }
    double total = 0;
    for (int row = 0; row < NS; row++) total += row_loss[NT + row];
    return total * scale;
}

dinoc_status dinoc_dino_step(dinoc_dino *d, const float *x, const dinoc_dino_sched *sc, dinoc_dino_stats *st) {
    const dinoc_dino_config *c = &d->cfg;
    const int    B = d->B, nG = d->nG, nL = d->nL, nS = nG + nL, D = d->D, K = c->out_dim;
    const size_t C = (size_t)c->channels, gsz = C * d->G * d->G, lsz = C * d->L * d->L;
    const size_t item = nG * gsz + nL * lsz;
    dinoc_status s;
    memset(st, 0, sizeof *st);
    double t0 = now_s(), t1;
    /* regroup crop-major: [g0 of every image, g1 of every image, ...] as MultiCropWrapper does */
    for (int b = 0; b < B; b++) {
        const float *xi = x + (size_t)b * item;
        for (int i = 0; i < nG; i++) memcpy(d->xg + ((size_t)i * B + b) * gsz, xi + i * gsz, sizeof(float) * gsz);
        for (int i = 0; i < nL; i++)
            memcpy(d->xl + ((size_t)i * B + b) * lsz, xi + nG * gsz + i * lsz, sizeof(float) * lsz);
    }
    /* teacher on the global crops */
    if ((s = teacher_forward(d, d->cls))) return s;
    {   /* feature spread of the teacher's features */
        double acc = 0;
        for (int j = 0; j < D; j++) {
            double m1 = 0, m2 = 0;
            for (int r = 0; r < nG * B; r++) m1 += d->cls[(size_t)r * D + j], m2 += (double)d->cls[(size_t)r * D + j] * d->cls[(size_t)r * D + j];
            m1 /= nG * B;
            acc += sqrt(fmax(m2 / (nG * B) - m1 * m1, 0));
        }
        st->feat_std = acc / D;
    }
    dinoc_dino_head_forward(&d->tha, d->thead, d->cls, nG * B, d->t_logits);
    t1 = now_s(), st->t_teacher = t1 - t0, t0 = t1;
    /* student on every crop, one pass per crop size */
    if ((s = student_forward(d, 0, d->cls)) || (nL && (s = student_forward(d, 1, d->cls + (size_t)nG * B * D))))
        return s;
    t1 = now_s(), st->t_student = t1 - t0, t0 = t1;
    dinoc_dino_head_forward(&d->sha, d->shead, d->cls, nS * B, d->s_logits);
    /* the loss and the teacher's statistics of the global batch: this rank's sums, summed over ranks */
    const int NTg = nG * B * d->world;
    d->red[2 * K] = dino_loss(d->t_probs, d->dlogits, d->row_loss, d->red, d->t_logits, d->s_logits, d->center, nG, nS,
                              B, B * d->world, K, sc->teacher_temp, c->student_temp);
    if ((s = dinoc_dist_sum_f64(d->red, 2 * (size_t)K + 2))) return s;
    st->loss            = d->red[2 * K];
    st->teacher_entropy = d->red[2 * K + 1] / NTg;
    st->batch_entropy   = 0;
    for (int k = 0; k < K; k++) {
        const double p = d->red[k] / NTg;
        if (p > 0) st->batch_entropy -= p * log(p);
    }
    if (!isfinite(st->loss)) return dinoc_fail(DINOC_ERR_NUMERIC, "DINO loss is %g", st->loss);
    t1 = now_s(), st->t_loss = t1 - t0, t0 = t1;
    /* backward: head, then the two backbone passes */
    memset(d->g, 0, sizeof(float) * d->np);
    memset(d->ghead, 0, sizeof(float) * d->hl.n);
    memset(d->dcls, 0, sizeof(float) * (size_t)nS * B * D);
    dinoc_dino_head_backward(&d->sha, d->shead, d->dlogits, d->ghead, d->dcls);
    if ((s = student_backward(d, 0, d->dcls)) || (nL && (s = student_backward(d, 1, d->dcls + (size_t)nG * B * D))))
        return s;
    /* data parallel: the global batch's gradient is the sum of the ranks' (each scaled by 1/Bg) */
    if ((s = dinoc_dist_sum_f32(d->g, d->np)) || (s = dinoc_dist_sum_f32(d->ghead, d->hl.n))) return s;
    t1 = now_s(), st->t_backward = t1 - t0, t0 = t1;
    /* global norm for the log (frozen weight_g excluded: torch has no grad for it) */
    const size_t lo = d->hl.last_off;
    double       n1 = dinoc_grad_norm(d->g, d->groups, d->ngroups), n2 = dinoc_grad_norm(d->ghead, d->hgroups, d->nhgroups);
    double       n3 = dinoc_grad_norm(d->ghead + lo, d->lgroups + 1, 1);
    double       n4 = c->norm_last_layer ? 0 : dinoc_grad_norm(d->ghead + lo, d->lgroups, 1);
    st->grad_norm = sqrt(n1 * n1 + n2 * n2 + n3 * n3 + n4 * n4);
    if (!isfinite(st->grad_norm)) return dinoc_fail(DINOC_ERR_NUMERIC, "DINO gradient norm is %g", st->grad_norm);
    if (c->clip_grad > 0) {
        dinoc_clip_grad_per_param(d->g, d->groups, d->ngroups, c->clip_grad);
        dinoc_clip_grad_per_param(d->ghead, d->hgroups, d->nhgroups, c->clip_grad);
        dinoc_clip_grad_per_param(d->ghead + lo, d->lgroups, 2, c->clip_grad);
    }
    dinoc_adamw_step(&d->opt, d->sp, d->g, d->groups, d->ngroups, sc->lr, sc->wd);
    dinoc_adamw_step(&d->hopt, d->shead, d->ghead, d->hgroups, d->nhgroups, sc->lr, sc->wd);
    if (!sc->freeze_last_layer) dinoc_adamw_step(&d->lopt, d->shead + lo, d->ghead + lo, d->lgroups, 2, sc->lr, sc->wd);
    /* EMA teacher: param_k.mul_(m).add_((1 - m) * param_q), each in float32 as torch does; over
     * parameters only (a ResNet teacher's BN running statistics follow its own forwards) */
    const float mf = (float)sc->momentum, omf = (float)(1.0 - sc->momentum);
    float      *tp = d->tp;
    const float *sp = d->sp;
    const int64_t np = (int64_t)d->np, nh = (int64_t)d->hl.n;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < np; i++) tp[i] = tp[i] * mf + omf * sp[i];
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < nh; i++) d->thead[i] = d->thead[i] * mf + omf * d->shead[i];
    /* center <- cm center + (1 - cm) mean over the global batch's teacher rows */
    const float cm = (float)c->center_momentum, ocm = (float)(1.0 - c->center_momentum);
    double      cn = 0;
#pragma omp parallel for schedule(static) reduction(+ : cn)
    for (int k = 0; k < K; k++) {
        const float bc = (float)(d->red[K + k] / NTg);
        d->center[k]   = d->center[k] * cm + bc * ocm;
        cn += (double)d->center[k] * d->center[k];
    }
    st->center_norm = sqrt(cn);
    st->t_update    = now_s() - t0;
    return DINOC_OK;
}

/* ---- what a checkpoint holds ------------------------------------------------------------------ */

int dinoc_dino_state_tensors(dinoc_dino *d, dinoc_tensor *t, int max) {
    const int64_t n = (int64_t)d->np, nh = (int64_t)d->hl.n, nm = (int64_t)d->hl.last_off;
    const int64_t nb = d->rs ? (int64_t)d->rs->n_buffers : 0;
    const struct {
        const char *name;
        float      *p;
        int64_t     cnt;
    } k[] = {
        {"student", d->sp, n}, {"teacher", d->tp, n}, {"student_head", d->shead, nh},
        {"teacher_head", d->thead, nh},     {"center", d->center, d->cfg.out_dim}, {"adam.m", d->opt.m, n},
        {"adam.v", d->opt.v, n},            {"head_adam.m", d->hopt.m, nm},       {"head_adam.v", d->hopt.v, nm},
        {"last_adam.m", d->lopt.m, nh - nm}, {"last_adam.v", d->lopt.v, nh - nm},
        /* a ResNet's BN running statistics (its buffers layout), the student's and the teacher's */
        {"student_bn", d->rs ? d->rs->buffers : NULL, nb}, {"teacher_bn", d->rt ? d->rt->buffers : NULL, nb},
    };
    int c = 0;
    for (size_t i = 0; i < sizeof k / sizeof k[0] && c < max; i++) {
        if (!k[i].p) continue; /* the ViT has no buffers */
        memset(&t[c], 0, sizeof t[c]);
        t[c].name = k[i].name, t[c].dtype = DINOC_DTYPE_F32, t[c].ndim = 1, t[c].shape[0] = k[i].cnt;
        t[c].nbytes = (size_t)k[i].cnt * sizeof(float), t[c].data = k[i].p;
        c++;
    }
    return c;
}

int dinoc_dino_state_counters(dinoc_dino *d, dinoc_counter *c, int max) {
    const dinoc_counter k[] = {{"adam_step", &d->opt.step}, {"head_adam_step", &d->hopt.step},
                               {"last_adam_step", &d->lopt.step},
                               {"student_bn_batches", d->rs ? &d->rs->num_batches_tracked : NULL},
                               {"teacher_bn_batches", d->rt ? &d->rt->num_batches_tracked : NULL}};
    int n = 0;
    for (size_t i = 0; i < sizeof k / sizeof k[0] && n < max; i++)
        if (k[i].v) c[n++] = k[i];
    return n;
}

dinoc_status dinoc_dino_save_teacher(const dinoc_dino *d, const char *dir) {
    if (!d->rt) return dinoc_model_save_hf(d->teacher, dir);
    dinoc_status s = dinoc_resnet_save(d->rt, dir);
    if (s) return s;
    char *path = dinoc_path_join(dir, "preprocessor_config.json");
    if (!path) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    s = dinoc_preprocess_save(&d->pp, path, NULL);
    free(path);
    return s;
}

dinoc_status dinoc_dino_teacher_features(const dinoc_dino *d, const dinoc_dataset *ds, int64_t limit, float **feats,
                                         int32_t **labels, int *dim) {
    dinoc_feature_spec spec = {1, 0}; /* the last block's CLS through the final norm; a ResNet's pooled feature */
    dinoc_backbone     bb   = {d->teacher, d->rt, d->pp};
    return dinoc_backbone_features(&bb, ds, spec, 256, limit, feats, labels, dim, NULL, NULL);
}
