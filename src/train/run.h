/* run.h: the self-supervised training run shared by DINO and DINOv2 (src/train/run.c): data with
 * the multi-crop transform on worker threads, schedules by step, log.jsonl, the k-NN monitor of the
 * teacher, the collapse watch, the wall-clock budget (the run's length fitted and refitted),
 * checkpoints that resume bit for bit, metrics.json, MPI data parallelism (methods that support it).
 *
 * A method is a small table of functions over an opaque method object (dinoc_dino, dinoc_dinov2)
 * and its config struct; the loop never sees either type. Users: dino_run.c (dinoc_dino_train,
 * checkpoint format "dinoc-dino-1") and dinov2_run.c (dinoc_dinov2_train, "dinoc-dinov2-1").
 *
 * Checkpoint (RUN/checkpoint.safetensors, written atomically by rank 0):
 *   the method's F32 state tensors by name (state_tensors), "rng" U64 [4] (the method's generator);
 *   metadata: format, step, loader_epoch, loader_index, the method's counters (state_counters),
 *   config (JSON from the method's field table, with "objective": the method's name). */
#ifndef DINOC_RUN_H
#define DINOC_RUN_H

#include "../data/data.h"
#include "../data/multicrop.h"
#include "../internal.h"

#include <stddef.h>

/* One config field saved in the checkpoint's JSON (the shared table walker, internal.h). */
typedef dinoc_cfg_field dinoc_run_field;

/* An integer of the method's state (an optimiser's step count), saved as checkpoint metadata. */
typedef struct {
    const char *name;
    int64_t    *v;
} dinoc_run_counter;

/* The entries every method's table shares, for a config type T with the fields of these names:
 * the multi-crop transform (T.crops) and the run's own settings. */
#define DINOC_RUN_F(T, n, t, m) DINOC_CFG_F(T, n, t, m)
#define DINOC_RUN_CROP_FIELDS(T)                                                                            \
    DINOC_RUN_F(T, "crops.n_global", 'i', crops.n_global), DINOC_RUN_F(T, "crops.n_local", 'i', crops.n_local),     \
    DINOC_RUN_F(T, "crops.global_size", 'i', crops.global_size),                                            \
    DINOC_RUN_F(T, "crops.local_size", 'i', crops.local_size),                                              \
    DINOC_RUN_F(T, "crops.global_scale_min", 'f', crops.global_scale[0]),                                   \
    DINOC_RUN_F(T, "crops.global_scale_max", 'f', crops.global_scale[1]),                                   \
    DINOC_RUN_F(T, "crops.local_scale_min", 'f', crops.local_scale[0]),                                     \
    DINOC_RUN_F(T, "crops.local_scale_max", 'f', crops.local_scale[1]),                                     \
    DINOC_RUN_F(T, "crops.ratio_min", 'f', crops.ratio[0]), DINOC_RUN_F(T, "crops.ratio_max", 'f', crops.ratio[1]), \
    DINOC_RUN_F(T, "crops.flip_p", 'f', crops.flip_p), DINOC_RUN_F(T, "crops.jitter_p", 'f', crops.jitter_p),       \
    DINOC_RUN_F(T, "crops.brightness", 'f', crops.brightness), DINOC_RUN_F(T, "crops.contrast", 'f', crops.contrast), \
    DINOC_RUN_F(T, "crops.saturation", 'f', crops.saturation), DINOC_RUN_F(T, "crops.hue", 'f', crops.hue),         \
    DINOC_RUN_F(T, "crops.gray_p", 'f', crops.gray_p), DINOC_RUN_F(T, "crops.blur_p0", 'f', crops.blur_p[0]),       \
    DINOC_RUN_F(T, "crops.blur_p1", 'f', crops.blur_p[1]), DINOC_RUN_F(T, "crops.blur_p_local", 'f', crops.blur_p[2]), \
    DINOC_RUN_F(T, "crops.blur_sigma_min", 'f', crops.blur_sigma[0]),                                       \
    DINOC_RUN_F(T, "crops.blur_sigma_max", 'f', crops.blur_sigma[1]),                                       \
    DINOC_RUN_F(T, "crops.solarize_p0", 'f', crops.solarize_p[0]),                                          \
    DINOC_RUN_F(T, "crops.solarize_p1", 'f', crops.solarize_p[1]),                                          \
    DINOC_RUN_F(T, "crops.solarize_p_local", 'f', crops.solarize_p[2]),                                     \
    DINOC_RUN_F(T, "crops.channels", 'i', crops.channels), DINOC_RUN_F(T, "crops.mean0", 'f', crops.mean[0]),       \
    DINOC_RUN_F(T, "crops.mean1", 'f', crops.mean[1]), DINOC_RUN_F(T, "crops.mean2", 'f', crops.mean[2]),           \
    DINOC_RUN_F(T, "crops.std0", 'f', crops.std[0]), DINOC_RUN_F(T, "crops.std1", 'f', crops.std[1]),               \
    DINOC_RUN_F(T, "crops.std2", 'f', crops.std[2])
#define DINOC_RUN_LOOP_FIELDS(T)                                                                            \
    DINOC_RUN_F(T, "seed", 'u', seed), DINOC_RUN_F(T, "workers", 'i', workers),                             \
    DINOC_RUN_F(T, "ckpt_every", 'i', ckpt_every), DINOC_RUN_F(T, "time_budget", 'd', time_budget),         \
    DINOC_RUN_F(T, "sched_steps", 'i', sched_steps), DINOC_RUN_F(T, "knn_every_epoch", 'i', knn_every_epoch), \
    DINOC_RUN_F(T, "knn_train", 'i', knn_train), DINOC_RUN_F(T, "knn_test", 'i', knn_test)

/* Fills the view entries every method shares from a config type with these field names. */
#define DINOC_RUN_VIEW_COMMON(v, c)                                                                          \
    do {                                                                                                    \
        memset(v, 0, sizeof *(v));                                                                          \
        (v)->data = &(c)->data, (v)->data_dir = &(c)->data_dir, (v)->out = &(c)->out;                      \
        (v)->resume = &(c)->resume, (v)->image = &(c)->image, (v)->channels = &(c)->channels;              \
        (v)->epochs = &(c)->epochs, (v)->batch = &(c)->batch, (v)->warmup_epochs = &(c)->warmup_epochs;    \
        (v)->max_steps = &(c)->max_steps, (v)->sched_steps = &(c)->sched_steps;                            \
        (v)->workers = &(c)->workers, (v)->ckpt_every = &(c)->ckpt_every;                                  \
        (v)->knn_every_epoch = &(c)->knn_every_epoch, (v)->knn_train = &(c)->knn_train;                    \
        (v)->knn_test = &(c)->knn_test, (v)->out_dim = &(c)->out_dim, (v)->time_budget = &(c)->time_budget; \
        (v)->seed = &(c)->seed, (v)->crops = &(c)->crops, (v)->progress = &(c)->progress;                  \
        (v)->progress_user = &(c)->progress_user;                                                           \
    } while (0)

typedef void (*dinoc_run_progress)(void *user, int64_t step, int64_t total, int epoch, double loss, double img_s);

/* Pointers to the fields of a method's config that the loop reads or writes (NULL: the method has
 * no such field). Filled by the method's view() for one config struct. */
typedef struct {
    const char            **data, **data_dir, **out, **resume;
    int                    *image, *channels, *epochs, *batch, *warmup_epochs, *max_steps, *sched_steps;
    int                    *iters_per_epoch; /* > 0: fixed steps per epoch, the data cycles (DINOv2) */
    int                    *workers, *ckpt_every, *knn_every_epoch, *knn_train, *knn_test, *out_dim;
    double                 *time_budget;
    uint64_t               *seed;
    dinoc_multicrop_config *crops;
    dinoc_run_progress     *progress;
    void                  **progress_user;
} dinoc_run_view;

/* What the loop needs of one step. */
typedef struct {
    double loss;
    double dino_loss;     /* the term comparable to ln K (uniform collapse) */
    double batch_entropy; /* entropy of the batch-mean teacher distribution (< 0: not measured) */
    double t_teacher;     /* seconds of the teacher forward (time-budget calibration) */
    char   log[768];      /* the step's log fields, JSON members without braces */
} dinoc_run_stats;

typedef struct {
    const char *name;     /* "dino": objective in the config JSON, messages */
    const char *format;   /* checkpoint format string */
    size_t      cfg_size, obj_size;
    const dinoc_run_field *fields;
    int                    n_fields;
    int                    data_parallel; /* 0: refuses world size > 1 */
    void         (*view)(void *cfg, dinoc_run_view *v);
    dinoc_status (*init)(void *obj, const void *cfg); /* the run folder's preprocessing included */
    void         (*free)(void *obj);
    void        *(*config)(void *obj);                /* the object's live config */
    dinoc_rng   *(*rng)(void *obj);
    /* schedules at step `it`, then one step on x [B, item] (multi-crop layout) */
    dinoc_status (*step)(void *obj, const float *x, int64_t it, int64_t ipe, dinoc_run_stats *st);
    int          (*state_tensors)(void *obj, dinoc_tensor *t, int max);
    int          (*state_counters)(void *obj, dinoc_run_counter *c, int max);
    dinoc_status (*save_teacher)(void *obj, const char *dir);
    dinoc_status (*teacher_features)(void *obj, const dinoc_dataset *ds, int64_t limit, float **feats,
                                     int32_t **labels, int *dim);
} dinoc_run_method;

typedef struct {
    int64_t steps;
    double  final_loss;
    double  knn_top1; /* last k-NN monitor (-1 if none) */
    double  seconds;
} dinoc_run_result;

/* Trains (or resumes, cfg's resume field) with method m from its config struct cfg. */
dinoc_status dinoc_run_train(const dinoc_run_method *m, const void *cfg, dinoc_run_result *res);

#endif
