/* dino_run.c: DINO as a method of the self-supervised run (run.h): its config field table (saved
 * in the checkpoint as JSON), the view of the fields the loop uses, and thin wrappers over the
 * dinoc_dino API (dino.h). The run itself is src/train/run.c.
 *
 * Checkpoint format "dinoc-dino-1" (RUN/checkpoint.safetensors):
 *   student, teacher [n]            backbone flat buffers (dinoc_vit_carve layout)
 *   student_head, teacher_head [nh] DINO head flat buffers (dino_head.h layout)
 *   center [K]
 *   adam.{m,v}, head_adam.{m,v}, last_adam.{m,v}   AdamW moments (backbone, head MLP, last layer)
 *   rng U64 [4]                     stochastic depth
 *   metadata: format, step, adam_step, head_adam_step, last_adam_step, loader_epoch, loader_index,
 *             config (JSON of dinoc_dino_config)
 * The run folder also holds the TEACHER backbone as a Hugging Face ViT (config.json,
 * model.safetensors, preprocessor_config.json): what DINO evaluates and what `dinoc eval` loads. */
#include "dino.h"
#include "run.h"

#include <stddef.h>
#include <string.h>

#define F_(n, t, m) DINOC_RUN_F(dinoc_dino_config, n, t, m)
static const dinoc_run_field k_fields[] = {
    {"data", 's', offsetof(dinoc_dino_config, data), NULL, DINOC_CFG_REQUIRED}, {"data_dir", 's', offsetof(dinoc_dino_config, data_dir), NULL, 0},
    {"arch", 's', offsetof(dinoc_dino_config, arch), "vit", 0},
    {"precision", 's', offsetof(dinoc_dino_config, precision), "fp32", DINOC_CFG_CLEAR} /* absent: before bf16, fp32 */,
    F_("dim", 'i', dim), F_("depth", 'i', depth), F_("heads", 'i', heads), F_("patch", 'i', patch),
    F_("image", 'i', image), F_("channels", 'i', channels), F_("mlp_ratio", 'i', mlp_ratio),
    F_("out_dim", 'i', out_dim), F_("head_hidden", 'i', head_hidden), F_("head_bottleneck", 'i', head_bottleneck),
    F_("head_layers", 'i', head_layers), F_("norm_last_layer", 'i', norm_last_layer),
    DINOC_RUN_CROP_FIELDS(dinoc_dino_config),
    F_("epochs", 'i', epochs), F_("batch", 'i', batch), F_("warmup_epochs", 'i', warmup_epochs),
    F_("freeze_last_layer", 'i', freeze_last_layer), F_("lr", 'd', lr), F_("min_lr", 'd', min_lr), F_("wd", 'd', wd),
    F_("wd_end", 'd', wd_end), F_("clip_grad", 'd', clip_grad), F_("drop_path", 'd', drop_path),
    F_("momentum_teacher", 'd', momentum_teacher), F_("teacher_temp", 'd', teacher_temp),
    F_("warmup_teacher_temp", 'd', warmup_teacher_temp), F_("student_temp", 'd', student_temp),
    F_("center_momentum", 'd', center_momentum), F_("warmup_teacher_temp_epochs", 'i', warmup_teacher_temp_epochs),
    DINOC_RUN_LOOP_FIELDS(dinoc_dino_config),
};
#undef F_

static void view(void *cfg, dinoc_run_view *v) {
    dinoc_dino_config *c = cfg;
    DINOC_RUN_VIEW_COMMON(v, c);
}

/* dinoc_dino_init gives student and teacher the data's preprocessing (saved with the teacher) */
static dinoc_status init(void *obj, const void *cfg) { return dinoc_dino_init(obj, cfg); }
static void        release(void *obj) { dinoc_dino_free(obj); }
static void       *config(void *obj) { return &((dinoc_dino *)obj)->cfg; }
static dinoc_rng  *rng(void *obj) { return &((dinoc_dino *)obj)->rng; }

static dinoc_status step(void *obj, const float *x, int64_t it, int64_t ipe, dinoc_run_stats *rs) {
    dinoc_dino            *d  = obj;
    const dinoc_dino_sched sc = dinoc_dino_schedule(&d->cfg, it, ipe);
    dinoc_dino_stats       st;
    dinoc_status           s = dinoc_dino_step(d, x, &sc, &st);
    if (s) return s;
    rs->loss = rs->dino_loss = st.loss, rs->batch_entropy = st.batch_entropy, rs->t_teacher = st.t_teacher;
    snprintf(rs->log, sizeof rs->log,
             "\"lr\":%.6g,\"wd\":%.6g,\"momentum\":%.8g,\"teacher_temp\":%.5g,\"grad_norm\":%.6g,"
             "\"teacher_entropy\":%.5f,\"batch_entropy\":%.5f,\"center_norm\":%.5g,\"feat_std\":%.5g",
             sc.lr, sc.wd, sc.momentum, sc.teacher_temp, st.grad_norm, st.teacher_entropy, st.batch_entropy,
             st.center_norm, st.feat_std);
    return DINOC_OK;
}

static int state_tensors(void *obj, dinoc_tensor *t, int max) { return dinoc_dino_state_tensors(obj, t, max); }

static int state_counters(void *obj, dinoc_run_counter *c, int max) {
    dinoc_counter k[16];
    const int     n = dinoc_dino_state_counters(obj, k, max < 16 ? max : 16);
    for (int i = 0; i < n; i++) c[i].name = k[i].name, c[i].v = k[i].v;
    return n;
}

static dinoc_status save_teacher(void *obj, const char *dir) { return dinoc_dino_save_teacher(obj, dir); }

static dinoc_status teacher_features(void *obj, const dinoc_dataset *ds, int64_t limit, float **f, int32_t **y,
                                     int *dim) {
    return dinoc_dino_teacher_features(obj, ds, limit, f, y, dim);
}

static const dinoc_run_method k_dino = {
    "dino", "dinoc-dino-1", sizeof(dinoc_dino_config), sizeof(dinoc_dino), k_fields,
    (int)(sizeof k_fields / sizeof k_fields[0]), 1, view, init, release, config, rng, step, state_tensors,
    state_counters, save_teacher, teacher_features,
};

dinoc_status dinoc_dino_train(const dinoc_dino_config *cfg, dinoc_dino_result *res) {
    dinoc_run_result r;
    dinoc_status     s = dinoc_run_train(&k_dino, cfg, &r);
    res->steps = r.steps, res->final_loss = r.final_loss, res->knn_top1 = r.knn_top1, res->seconds = r.seconds;
    return s;
}
