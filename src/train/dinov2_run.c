/* dinov2_run.c: DINOv2 as a method of the self-supervised run (run.h, run.c): its config field
 * table (the checkpoint's JSON), the state a checkpoint holds, and the step with its schedules and
 * masks. tests/test_dinov2_run.c checks resume, the NaN stop and the saved teacher.
 *
 * Checkpoint format "dinoc-dinov2-1" (RUN/checkpoint.safetensors):
 *   student, teacher [n]                         backbone flat buffers (dinoc_vit_carve layout)
 *   dino_head.{student,teacher,adam.m,adam.v}    DINO head and its AdamW moments
 *   ibot_head.{...}                              the same for a separate iBOT head
 *   center [K], ibot_center [Ki]                 softmax-centering EMAs
 *   adam.{m,v}                                   backbone AdamW moments
 *   rng U64 [4]                                  stochastic depth (rank 0)
 *   metadata: format, step, loader_epoch, loader_index, adam_step, dino_head_adam_step,
 *             ibot_head_adam_step, config (JSON of dinoc_dinov2_config)
 * The masks of a step are drawn just before it from a stream seeded by (seed, step), so a resumed
 * run draws the same ones. */
#include "dinov2.h"
#include "../eval/eval.h"
#include "supervised.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* targets is saved as an int field */
_Static_assert(sizeof(dinoc_targets) == sizeof(int), "dinoc_targets must be int-sized");

#define F_(n, t, m) DINOC_RUN_F(dinoc_dinov2_config, n, t, m)
static const dinoc_run_field k_fields[] = {
    {"data", 's', offsetof(dinoc_dinov2_config, data), NULL, DINOC_CFG_REQUIRED},
    {"data_dir", 's', offsetof(dinoc_dinov2_config, data_dir), NULL, 0},
    {"precision", 's', offsetof(dinoc_dinov2_config, precision), "fp32", DINOC_CFG_CLEAR} /* absent: before bf16, fp32 */,
    F_("dim", 'i', dim), F_("depth", 'i', depth), F_("heads", 'i', heads), F_("patch", 'i', patch),
    F_("image", 'i', image), F_("channels", 'i', channels), F_("mlp_ratio", 'i', mlp_ratio),
    F_("n_registers", 'i', n_registers), F_("out_dim", 'i', out_dim), F_("head_hidden", 'i', head_hidden),
    F_("head_bottleneck", 'i', head_bottleneck), F_("head_layers", 'i', head_layers),
    F_("ibot_separate_head", 'i', ibot_separate_head), F_("ibot_out_dim", 'i', ibot_out_dim),
    F_("ibot_hidden", 'i', ibot_hidden), F_("ibot_bottleneck", 'i', ibot_bottleneck),
    F_("ibot_layers", 'i', ibot_layers), DINOC_RUN_CROP_FIELDS(dinoc_dinov2_config),
    F_("mask_prob", 'd', mask_prob), F_("mask_ratio_min", 'd', mask_ratio_min),
    F_("mask_ratio_max", 'd', mask_ratio_max), F_("targets", 'i', targets), F_("dino_weight", 'd', dino_weight),
    F_("koleo_weight", 'd', koleo_weight), F_("ibot_weight", 'd', ibot_weight), F_("epochs", 'i', epochs),
    F_("batch", 'i', batch), F_("warmup_epochs", 'i', warmup_epochs),
    F_("freeze_last_layer_epochs", 'i', freeze_last_layer_epochs), F_("iters_per_epoch", 'i', iters_per_epoch),
    F_("lr", 'd', lr), F_("min_lr", 'd', min_lr), F_("wd", 'd', wd), F_("wd_end", 'd', wd_end),
    F_("clip_grad", 'd', clip_grad), F_("drop_path", 'd', drop_path), F_("layer_decay", 'd', layer_decay),
    F_("patch_embed_lr_mult", 'd', patch_embed_lr_mult), F_("momentum_teacher", 'd', momentum_teacher),
    F_("final_momentum_teacher", 'd', final_momentum_teacher), F_("teacher_temp", 'd', teacher_temp),
    F_("warmup_teacher_temp", 'd', warmup_teacher_temp), F_("student_temp", 'd', student_temp),
    F_("center_momentum", 'd', center_momentum), F_("warmup_teacher_temp_epochs", 'i', warmup_teacher_temp_epochs),
    DINOC_RUN_LOOP_FIELDS(dinoc_dinov2_config),
};
#undef F_

/* ---- what a checkpoint holds ------------------------------------------------------------------ */

static int put(dinoc_tensor *t, int c, int max, const char *name, float *p, size_t n) {
    if (c >= max) return c;
    memset(&t[c], 0, sizeof t[c]);
    t[c].name = name, t[c].dtype = DINOC_DTYPE_F32, t[c].ndim = 1, t[c].shape[0] = (int64_t)n;
    t[c].nbytes = n * sizeof(float), t[c].data = p;
    return c + 1;
}

int dinoc_dinov2_state_tensors(dinoc_dinov2 *d, dinoc_tensor *t, int max) {
    static const char *hn[2][4] = {{"dino_head.student", "dino_head.teacher", "dino_head.adam.m", "dino_head.adam.v"},
                                   {"ibot_head.student", "ibot_head.teacher", "ibot_head.adam.m", "ibot_head.adam.v"}};
    const size_t n = d->student->n_params;
    const int    sep = d->cfg.ibot_separate_head;
    int          c = 0;
    c = put(t, c, max, "student", d->student->params, n);
    c = put(t, c, max, "teacher", d->teacher->params, n);
    c = put(t, c, max, "adam.m", d->opt.m, n);
    c = put(t, c, max, "adam.v", d->opt.v, n);
    for (int h = 0; h < 1 + sep; h++) {
        dinoc_dinov2_head *hd = h ? &d->ih : &d->dh;
        c = put(t, c, max, hn[h][0], hd->sp, hd->l.n);
        c = put(t, c, max, hn[h][1], hd->tp, hd->l.n);
        c = put(t, c, max, hn[h][2], hd->opt.m, hd->l.n);
        c = put(t, c, max, hn[h][3], hd->opt.v, hd->l.n);
    }
    c = put(t, c, max, "center", d->center, (size_t)d->cfg.out_dim);
    c = put(t, c, max, "ibot_center", d->icenter, (size_t)(sep ? d->cfg.ibot_out_dim : d->cfg.out_dim));
    return c;
}

int dinoc_dinov2_state_counters(dinoc_dinov2 *d, dinoc_run_counter *c, int max) {
    const dinoc_run_counter k[] = {{"adam_step", &d->opt.step}, {"dino_head_adam_step", &d->dh.opt.step},
                                   {"ibot_head_adam_step", &d->ih.opt.step}};
    const int               nk = d->cfg.ibot_separate_head ? 3 : 2;
    int                     n  = 0;
    for (int i = 0; i < nk && n < max; i++) c[n++] = k[i];
    return n;
}

/* ---- the method ------------------------------------------------------------------------------- */

static void view(void *cfg, dinoc_run_view *v) {
    dinoc_dinov2_config *c = cfg;
    DINOC_RUN_VIEW_COMMON(v, c);
    v->iters_per_epoch = &c->iters_per_epoch;
}

static dinoc_status init(void *obj, const void *cfg) {
    dinoc_dinov2 *d = obj;
    dinoc_status  s = dinoc_dinov2_init(d, cfg);
    if (s) return s;
    /* the saved teacher carries the data's preprocessing */
    dinoc_train_preprocess(&d->teacher->pp, d->cfg.data, d->cfg.image, d->cfg.channels);
    d->student->pp = d->teacher->pp;
    return DINOC_OK;
}

static void       release(void *obj) { dinoc_dinov2_free(obj); }
static void      *config(void *obj) { return &((dinoc_dinov2 *)obj)->cfg; }
static dinoc_rng *rng(void *obj) { return &((dinoc_dinov2 *)obj)->rng; }

/* Entropy of the batch-mean DINO target distribution (ln K: every prototype used evenly); data
 * parallel: of rank 0's share of the batch (a monitor, not part of the step). */
static double batch_entropy(const float *q, int rows, int K) {
    double h = 0;
    for (int k = 0; k < K; k++) {
        double p = 0;
        for (int r = 0; r < rows; r++) p += q[(size_t)r * K + k];
        p /= rows;
        if (p > 0) h -= p * log(p);
    }
    return h;
}

static dinoc_status step(void *obj, const float *x, int64_t it, int64_t ipe, dinoc_run_stats *rs) {
    dinoc_dinov2            *d  = obj;
    const dinoc_dinov2_sched sc = dinoc_dinov2_schedule(&d->cfg, it, ipe);
    dinoc_dinov2_stats       st;
    /* no masks when iBOT is off: the step then skips the patch loss */
    const int    ibot = d->cfg.ibot_weight > 0 && d->cfg.mask_prob > 0;
    dinoc_status s    = ibot ? dinoc_dinov2_draw_masks(d, it) : DINOC_OK;
    if (!s) s = dinoc_dinov2_step(d, x, ibot ? d->mb.masks : NULL, &sc, &st);
    if (s) return s;
    rs->loss = st.loss, rs->dino_loss = st.dino_loss, rs->t_teacher = st.t_teacher;
    rs->batch_entropy = batch_entropy(d->q_dino, d->nG * d->B, d->cfg.out_dim);
    snprintf(rs->log, sizeof rs->log,
             "\"dino_loss\":%.6f,\"ibot_loss\":%.6f,\"koleo_loss\":%.6f,\"lr\":%.6g,\"last_layer_lr\":%.6g,"
             "\"wd\":%.6g,\"momentum\":%.8g,\"teacher_temp\":%.5g,\"grad_norm\":%.6g,\"head_grad_norm\":%.6g,"
             "\"ibot_head_grad_norm\":%.6g,\"n_masked\":%d,\"batch_entropy\":%.5f",
             st.dino_loss, st.ibot_loss, st.koleo_loss, sc.lr, sc.last_layer_lr, sc.wd, sc.momentum, sc.teacher_temp,
             st.grad_norm, st.head_grad_norm, st.ibot_head_grad_norm, st.n_masked, rs->batch_entropy);
    return DINOC_OK;
}

static int state_tensors(void *obj, dinoc_tensor *t, int max) { return dinoc_dinov2_state_tensors(obj, t, max); }
static int state_counters(void *obj, dinoc_run_counter *c, int max) { return dinoc_dinov2_state_counters(obj, c, max); }

/* The teacher as a Hugging Face Dinov2 folder (dinov2 / dinov2_with_registers model type). */
static dinoc_status save_teacher(void *obj, const char *dir) {
    return dinoc_model_save_hf(((dinoc_dinov2 *)obj)->teacher, dir);
}

static dinoc_status teacher_features(void *obj, const dinoc_dataset *ds, int64_t limit, float **f, int32_t **y,
                                     int *dim) {
    dinoc_feature_spec spec = {1, 0}; /* the last block's CLS through the final norm */
    return dinoc_extract_features(((dinoc_dinov2 *)obj)->teacher, ds, spec, 256, limit, f, y, dim, NULL, NULL);
}

static const dinoc_run_method k_dinov2 = {
    "dinov2", "dinoc-dinov2-1", sizeof(dinoc_dinov2_config), sizeof(dinoc_dinov2), k_fields,
    (int)(sizeof k_fields / sizeof k_fields[0]), 1, view, init, release, config, rng, step, state_tensors,
    state_counters, save_teacher, teacher_features,
};

dinoc_status dinoc_dinov2_train(const dinoc_dinov2_config *cfg, dinoc_dinov2_result *res) {
    return dinoc_run_train(&k_dinov2, cfg, res);
}
