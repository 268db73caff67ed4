/* dino_run.c: a DINO training run around dinoc_dino_step (dino.c): data with the multi-crop
 * transform on worker threads, schedules, logs, the k-NN monitor, the collapse watch, and
 * checkpoints that resume bit for bit.
 *
 * Checkpoint (RUN/checkpoint.safetensors, written atomically):
 *   student, teacher [n]            backbone flat buffers (dinoc_vit_carve layout)
 *   student_head, teacher_head [nh] DINO head flat buffers (dino_head.h layout)
 *   center [K]
 *   adam.{m,v}, head_adam.{m,v}, last_adam.{m,v}   AdamW moments (backbone, head MLP, last layer)
 *   rng U64 [4]                     stochastic depth
 *   metadata: format "dinoc-dino-1", step, adam_step, head_adam_step, last_adam_step,
 *             loader_epoch, loader_index, config (JSON of dinoc_dino_config)
 * The run folder also holds the TEACHER backbone as a Hugging Face ViT (config.json,
 * model.safetensors, preprocessor_config.json): what DINO evaluates and what `dinoc eval` loads. */
#include "dino.h"
#include "../core/dist.h"

#include "../eval/eval.h"
#include "supervised.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

/* ---- config <-> JSON ------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    char        type; /* i int, d double, f float, u uint64 */
    size_t      off;
} field;

#define F_(n, t, m) {n, t, offsetof(dinoc_dino_config, m)}
static const field k_fields[] = {
    F_("dim", 'i', dim), F_("depth", 'i', depth), F_("heads", 'i', heads), F_("patch", 'i', patch),
    F_("image", 'i', image), F_("channels", 'i', channels), F_("mlp_ratio", 'i', mlp_ratio),
    F_("out_dim", 'i', out_dim), F_("head_hidden", 'i', head_hidden), F_("head_bottleneck", 'i', head_bottleneck),
    F_("head_layers", 'i', head_layers), F_("norm_last_layer", 'i', norm_last_layer),
    F_("crops.n_global", 'i', crops.n_global), F_("crops.n_local", 'i', crops.n_local),
    F_("crops.global_size", 'i', crops.global_size), F_("crops.local_size", 'i', crops.local_size),
    F_("crops.global_scale_min", 'f', crops.global_scale[0]), F_("crops.global_scale_max", 'f', crops.global_scale[1]),
    F_("crops.local_scale_min", 'f', crops.local_scale[0]), F_("crops.local_scale_max", 'f', crops.local_scale[1]),
    F_("crops.ratio_min", 'f', crops.ratio[0]), F_("crops.ratio_max", 'f', crops.ratio[1]),
    F_("crops.flip_p", 'f', crops.flip_p), F_("crops.jitter_p", 'f', crops.jitter_p),
    F_("crops.brightness", 'f', crops.brightness), F_("crops.contrast", 'f', crops.contrast),
    F_("crops.saturation", 'f', crops.saturation), F_("crops.hue", 'f', crops.hue), F_("crops.gray_p", 'f', crops.gray_p),
    F_("crops.blur_p0", 'f', crops.blur_p[0]), F_("crops.blur_p1", 'f', crops.blur_p[1]),
    F_("crops.blur_p_local", 'f', crops.blur_p[2]), F_("crops.blur_sigma_min", 'f', crops.blur_sigma[0]),
    F_("crops.blur_sigma_max", 'f', crops.blur_sigma[1]), F_("crops.solarize_p0", 'f', crops.solarize_p[0]),
    F_("crops.solarize_p1", 'f', crops.solarize_p[1]), F_("crops.solarize_p_local", 'f', crops.solarize_p[2]),
    F_("crops.channels", 'i', crops.channels),
    F_("crops.mean0", 'f', crops.mean[0]), F_("crops.mean1", 'f', crops.mean[1]), F_("crops.mean2", 'f', crops.mean[2]),
    F_("crops.std0", 'f', crops.std[0]), F_("crops.std1", 'f', crops.std[1]), F_("crops.std2", 'f', crops.std[2]),
    F_("epochs", 'i', epochs), F_("batch", 'i', batch), F_("warmup_epochs", 'i', warmup_epochs),
    F_("freeze_last_layer", 'i', freeze_last_layer), F_("lr", 'd', lr), F_("min_lr", 'd', min_lr), F_("wd", 'd', wd),
    F_("wd_end", 'd', wd_end), F_("clip_grad", 'd', clip_grad), F_("drop_path", 'd', drop_path),
    F_("momentum_teacher", 'd', momentum_teacher), F_("teacher_temp", 'd', teacher_temp),
    F_("warmup_teacher_temp", 'd', warmup_teacher_temp), F_("student_temp", 'd', student_temp),
    F_("center_momentum", 'd', center_momentum), F_("warmup_teacher_temp_epochs", 'i', warmup_teacher_temp_epochs),
    F_("seed", 'u', seed), F_("workers", 'i', workers), F_("ckpt_every", 'i', ckpt_every),
    F_("time_budget", 'd', time_budget), F_("sched_steps", 'i', sched_steps), F_("knn_every_epoch", 'i', knn_every_epoch), F_("knn_train", 'i', knn_train), F_("knn_test", 'i', knn_test),
};
#undef F_
#define N_FIELDS (int)(sizeof k_fields / sizeof k_fields[0])

static double field_get(const dinoc_dino_config *c, const field *f) {
    const char *p = (const char *)c + f->off;
    switch (f->type) {
    case 'i': return *(const int *)p;
    case 'f': return *(const float *)p;
    case 'u': return (double)*(const uint64_t *)p;
    default: return *(const double *)p;
    }
}

static void field_set(dinoc_dino_config *c, const field *f, double v) {
    char *p = (char *)c + f->off;
    switch (f->type) {
    case 'i': *(int *)p = (int)v; break;
    case 'f': *(float *)p = (float)v; break;
    case 'u': *(uint64_t *)p = (uint64_t)v; break;
    default: *(double *)p = v;
    }
}

static cJSON *config_json(const dinoc_dino_config *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "objective", "dino");
    cJSON_AddStringToObject(o, "data", c->data);
    if (c->data_dir) cJSON_AddStringToObject(o, "data_dir", c->data_dir);
    cJSON_AddStringToObject(o, "arch", c->arch ? c->arch : "vit");
    for (int i = 0; i < N_FIELDS; i++) cJSON_AddNumberToObject(o, k_fields[i].name, field_get(c, &k_fields[i]));
    return o;
}

static char *config_to_json(const dinoc_dino_config *c) {
    cJSON *o = config_json(c);
    char  *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* Reads a saved config over *c; strings are duplicated into keep[0..2] (freed by the caller). */
static dinoc_status config_from_json(dinoc_dino_config *c, const char *json, const char *where, char **keep) {
    cJSON *o = cJSON_Parse(json);
    if (!o) return dinoc_fail(DINOC_ERR_FORMAT, "%s: config metadata is not JSON", where);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "data");
    if (!cJSON_IsString(d)) {
        cJSON_Delete(o);
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: config metadata lacks 'data'", where);
    }
    c->data = keep[0] = strdup(d->valuestring);
    const cJSON *dd = cJSON_GetObjectItemCaseSensitive(o, "data_dir");
    if (cJSON_IsString(dd)) c->data_dir = keep[1] = strdup(dd->valuestring);
    const cJSON *ar = cJSON_GetObjectItemCaseSensitive(o, "arch");
    c->arch = cJSON_IsString(ar) ? (keep[2] = strdup(ar->valuestring)) : NULL;
    for (int i = 0; i < N_FIELDS; i++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k_fields[i].name);
        if (!cJSON_IsNumber(it)) {
            cJSON_Delete(o);
            return dinoc_fail(DINOC_ERR_FORMAT, "%s: config metadata lacks '%s'", where, k_fields[i].name);
        }
        field_set(c, &k_fields[i], it->valuedouble);
    }
    cJSON_Delete(o);
    return DINOC_OK;
}

/* ---- checkpoints ------------------------------------------------------------------------------ */

typedef struct {
    dinoc_dino     d;
    dinoc_dataset *train, *mon_train, *mon_test;
    dinoc_loader  *ld;
    int64_t        step;
    char          *keep[3];
} run;

#define MAX_STATE 32

/* Rank 0 writes (atomically); the others hold the same state and write nothing. The method's
 * tensors and counters come from dinoc_dino_state_tensors/counters; the run adds its step, the
 * loader position, the generator and the config. */
static dinoc_status save_checkpoint(run *r) {
    if (dinoc_dist_rank() != 0) return DINOC_OK;
    dinoc_dino *d = &r->d;
    const char *out = d->cfg.out;
    dinoc_status s  = dinoc_mkdir(out);
    if (s) return s;
    char *path = dinoc_path_join(out, "checkpoint.safetensors"), *cj = config_to_json(&d->cfg);
    if (!path || !cj) {
        free(path), free(cj);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    }
    dinoc_loader_pos pos = dinoc_loader_tell(r->ld);
    dinoc_counter    cnt[MAX_STATE];
    const int        nc = dinoc_dino_state_counters(d, cnt, MAX_STATE);
    char             v[MAX_STATE + 3][32];
    const char      *meta[2 * (MAX_STATE + 5) + 1];
    int              m = 0;
    meta[m++] = "format", meta[m++] = "dinoc-dino-1";
    snprintf(v[0], 32, "%lld", (long long)r->step);
    snprintf(v[1], 32, "%lld", (long long)pos.epoch);
    snprintf(v[2], 32, "%lld", (long long)pos.index);
    meta[m++] = "step", meta[m++] = v[0], meta[m++] = "loader_epoch", meta[m++] = v[1];
    meta[m++] = "loader_index", meta[m++] = v[2];
    for (int i = 0; i < nc; i++) {
        snprintf(v[3 + i], 32, "%lld", (long long)*cnt[i].v);
        meta[m++] = cnt[i].name, meta[m++] = v[3 + i];
    }
    meta[m++] = "config", meta[m++] = cj, meta[m] = NULL;
    dinoc_tensor t[MAX_STATE + 1];
    int          nt = dinoc_dino_state_tensors(d, t, MAX_STATE);
    memset(&t[nt], 0, sizeof t[nt]);
    t[nt].name = "rng", t[nt].dtype = DINOC_DTYPE_U64, t[nt].ndim = 1, t[nt].shape[0] = 4, t[nt].nbytes = 32;
    t[nt].data = d->rng.s;
    s = dinoc_safetensors_write(path, t, nt + 1, meta);
    free(path), free(cj);
    if (!s) s = dinoc_dino_save_teacher(d, out);
    return s;
}

static int64_t meta_int(const dinoc_safetensors *st, const char *key, int *ok) {
    const char *v = dinoc_safetensors_metadata(st, key);
    char       *end;
    if (!v) return *ok = 0, 0;
    long long x = strtoll(v, &end, 10);
    if (*end || x < 0) *ok = 0;
    return x;
}

static dinoc_status load_checkpoint(run *r, const dinoc_safetensors *st, const char *ck, dinoc_loader_pos *pos) {
    dinoc_dino  *d = &r->d;
    dinoc_tensor want[MAX_STATE];
    const int    nt = dinoc_dino_state_tensors(d, want, MAX_STATE);
    for (int i = 0; i < nt; i++) {
        const dinoc_tensor *t = dinoc_safetensors_find(st, want[i].name);
        const int64_t       n = want[i].shape[0];
        if (!t) return dinoc_fail(DINOC_ERR_FORMAT, "%s: missing tensor '%s'", ck, want[i].name);
        if (t->dtype != DINOC_DTYPE_F32 || dinoc_tensor_numel(t) != n)
            return dinoc_fail(DINOC_ERR_SHAPE, "%s: tensor '%s' is not F32 [%lld]", ck, want[i].name, (long long)n);
        dinoc_status s = dinoc_tensor_to_f32(t, (float *)want[i].data, n);
        if (s) return s;
    }
    const dinoc_tensor *rt = dinoc_safetensors_find(st, "rng");
    if (!rt || rt->dtype != DINOC_DTYPE_U64 || rt->nbytes != 32)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: missing or malformed 'rng'", ck);
    memcpy(d->rng.s, rt->data, 32);
    dinoc_counter cnt[MAX_STATE];
    const int     nc = dinoc_dino_state_counters(d, cnt, MAX_STATE);
    int           ok = 1;
    for (int i = 0; i < nc; i++) *cnt[i].v = meta_int(st, cnt[i].name, &ok);
    r->step    = meta_int(st, "step", &ok);
    pos->epoch = meta_int(st, "loader_epoch", &ok);
    pos->index = meta_int(st, "loader_index", &ok);
    if (!ok) return dinoc_fail(DINOC_ERR_FORMAT, "%s: bad step/loader metadata", ck);
    return DINOC_OK;
}

/* ---- setup ------------------------------------------------------------------------------------ */

static void run_free(run *r) {
    dinoc_loader_free(r->ld);
    dinoc_dataset_free(r->train), dinoc_dataset_free(r->mon_train), dinoc_dataset_free(r->mon_test);
    dinoc_dino_free(&r->d);
    free(r->keep[0]), free(r->keep[1]), free(r->keep[2]);
}

static dinoc_status run_init(run *r, const dinoc_dino_config *cfg) {
    memset(r, 0, sizeof *r);
    dinoc_dino_config  c  = *cfg;
    dinoc_safetensors *st = NULL;
    char              *ck = NULL;
    dinoc_status       s  = DINOC_OK;
    dinoc_loader_pos   pos = {0, 0};
    if (cfg->resume) {
        if (!(ck = dinoc_path_join(cfg->resume, "checkpoint.safetensors"))) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        if ((s = dinoc_safetensors_open(&st, ck))) goto done;
        const char *cj = dinoc_safetensors_metadata(st, "config"), *fm = dinoc_safetensors_metadata(st, "format");
        if (!cj || !fm || strcmp(fm, "dinoc-dino-1") != 0) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: not a dinoc DINO checkpoint", ck);
            goto done;
        }
        if ((s = config_from_json(&c, cj, ck, r->keep))) goto done;
        /* what may change on resume: where to write, when to stop, progress reporting */
        c.out = cfg->out ? cfg->out : cfg->resume, c.resume = cfg->resume, c.max_steps = cfg->max_steps;
        c.progress = cfg->progress, c.progress_user = cfg->progress_user;
    } else {
        /* normalisation follows the data */
        dinoc_preprocess pp;
        dinoc_train_preprocess(&pp, c.data, c.image, c.channels);
        for (int i = 0; i < 3; i++) c.crops.mean[i] = pp.mean[i], c.crops.std[i] = pp.std[i];
        c.crops.channels = c.channels;
    }
    if ((s = dinoc_dino_init(&r->d, &c))) goto done;
    dinoc_train_preprocess(&r->d.teacher->pp, c.data, c.image, c.channels);
    r->d.student->pp = r->d.teacher->pp;
    if (st && (s = load_checkpoint(r, st, ck, &pos))) goto done;
    /* every rank starts from rank 0's generator (the checkpoint holds rank 0's); the others then
     * move to streams of their own, so their drop-path masks differ from rank 0's */
    if (dinoc_dist_rank() > 0) dinoc_rng_seed(&r->d.rng, dinoc_rng_u64(&r->d.rng) ^ (0x9e3779b97f4a7c15ull * (uint64_t)dinoc_dist_rank()));
    if ((s = dinoc_train_open_data(&r->train, c.data, c.data_dir, 1))) goto done;
    /* data parallel: this rank transforms only its part of each global batch (dist.h) */
    dinoc_loader_config lc = {c.batch, 1, 1, c.seed, c.workers, 2, dinoc_multicrop_floats(&r->d.cfg.crops),
                              dinoc_multicrop_transform, &r->d.cfg.crops, dinoc_dist_rank(), dinoc_dist_size()};
    if ((s = dinoc_loader_init(&r->ld, r->train, &lc, pos))) goto done;
    if (dinoc_loader_batches_per_epoch(r->ld) < 1) {
        s = dinoc_fail(DINOC_ERR_ARG, "%s: %lld images give no full batch of %d", c.data,
                       (long long)dinoc_dataset_size(r->train), c.batch);
        goto done;
    }
    if (c.knn_every_epoch && dinoc_dist_rank() == 0 && dinoc_dataset_num_classes(r->train) >= 2) {
        /* the monitor needs labelled train and test splits; without them it is off */
        if (dinoc_train_open_data(&r->mon_train, c.data, c.data_dir, 1) == DINOC_OK &&
            dinoc_train_open_data(&r->mon_test, c.data, c.data_dir, 0) == DINOC_OK &&
            dinoc_dataset_num_classes(r->mon_test) == dinoc_dataset_num_classes(r->mon_train)) {
        } else {
            dinoc_dataset_free(r->mon_train), dinoc_dataset_free(r->mon_test);
            r->mon_train = r->mon_test = NULL;
        }
    }
done:
    dinoc_safetensors_close(st);
    free(ck);
    return s;
}

/* ---- the run ---------------------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Weighted k-NN (k 20, T 0.07) of the teacher's normed CLS on the monitor subsets. */
static dinoc_status knn_monitor(run *r, double *top1, double *top5) {
    const dinoc_dino_config *c = &r->d.cfg;
    float   *ftr = NULL, *fte = NULL;
    int32_t *ytr = NULL, *yte = NULL;
    int      dim = 0, k = 20;
    dinoc_status s = dinoc_dino_teacher_features(&r->d, r->mon_train, c->knn_train, &ftr, &ytr, &dim);
    if (!s) s = dinoc_dino_teacher_features(&r->d, r->mon_test, c->knn_test, &fte, &yte, &dim);
    if (!s) {
        int64_t ntr = c->knn_train > 0 && c->knn_train < dinoc_dataset_size(r->mon_train) ? c->knn_train : dinoc_dataset_size(r->mon_train);
        int64_t nte = c->knn_test > 0 && c->knn_test < dinoc_dataset_size(r->mon_test) ? c->knn_test : dinoc_dataset_size(r->mon_test);
        if (k > ntr) k = (int)ntr;
        s = dinoc_knn_eval(ftr, ytr, ntr, fte, yte, nte, dim, dinoc_dataset_num_classes(r->mon_train), &k, 1, 0.07f,
                           top1, top5);
    }
    free(ftr), free(fte), free(ytr), free(yte);
    return s;
}

/* Steps that fit in `left` seconds after `done` steps: per_step seconds a step, end_s seconds at
 * each epoch end (checkpoint, monitor) and at the last step; whole epochs while they fit, then the
 * part of one that does. Never more than `most`, never fewer than done + 1. */
static int64_t fit_steps(double left, double per_step, double end_s, int64_t done, int64_t ipe, int64_t most) {
    int64_t n = done;
    left -= 5.0; /* the final save and metrics */
    while (n < most) {
        const int64_t next = (n / ipe + 1) * ipe, chunk = next - n;
        if (chunk * per_step + end_s <= left) {
            left -= chunk * per_step + end_s, n = next;
            continue;
        }
        const double k = floor((left - end_s) / per_step);
        if (k > 0) n += (int64_t)k;
        break;
    }
    if (n > most) n = most;
    return n > done ? n : done + 1;
}

/* Sets the run's length to rank 0's fit: every rank calls it at the same step, and all must agree
 * (timings differ between ranks). */
static dinoc_status set_length(dinoc_dino *d, int64_t fit, int64_t *total, int64_t *stop) {
    dinoc_status s = dinoc_dist_bcast_i64(&fit, 1, 0);
    if (s) return s;
    d->cfg.sched_steps = (int)fit, *total = fit;
    *stop = d->cfg.max_steps > 0 && d->cfg.max_steps < fit ? d->cfg.max_steps : fit;
    return DINOC_OK;
}

dinoc_status dinoc_dino_train(const dinoc_dino_config *cfg, dinoc_dino_result *res) {
    run          r;
    double       t0 = now_s();
    dinoc_status s  = run_init(&r, cfg);
    FILE        *jl = NULL; /* log.jsonl */
    char        *log_path = NULL;
    memset(res, 0, sizeof *res);
    res->knn_top1 = -1;
    if (s) goto done;
    dinoc_dino              *d = &r.d;
    const dinoc_dino_config *c = &d->cfg;
    const int lead = dinoc_dist_rank() == 0; /* rank 0 logs and writes; see dist.h */
    if (lead) {
        if ((s = dinoc_mkdir(c->out))) goto done;
        if (!(log_path = dinoc_path_join(c->out, "log.jsonl"))) {
            s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (cfg->resume) dinoc_train_truncate_log(log_path, r.step);
        if (!(jl = fopen(log_path, cfg->resume ? "a" : "w"))) {
            s = dinoc_fail(DINOC_ERR_IO, "%s: cannot write", log_path);
            goto done;
        }
    }
    const int64_t ipe   = dinoc_loader_batches_per_epoch(r.ld);
    const int64_t most  = (int64_t)c->epochs * ipe;
    int64_t       total = c->sched_steps > 0 && c->sched_steps < most ? c->sched_steps : most;
    int64_t       stop  = c->max_steps > 0 && c->max_steps < total ? c->max_steps : total;
    /* time budget: fit the run's length on steps 3..CALIB (the first ones warm caches and
     * threads), then again every REFIT steps and after each epoch end */
    const int     CALIB = 12, REFIT = 64;
    const int     fitting = c->time_budget > 0 && !cfg->resume && r.step == 0 && total > CALIB;
    double        fit_t = 0, t_teacher = 0, epoch_end_s = 0; /* window start; epoch-end seconds */
    int64_t       fit_n = 0;
    const double  lnK   = log((double)c->out_dim);
    double        tstep = now_s(), epoch_loss = 0;
    int64_t       epoch_steps = 0;
    dinoc_dino_stats stt;
    memset(&stt, 0, sizeof stt);
    while (r.step < stop) {
        const dinoc_dino_sched sc = dinoc_dino_schedule(c, r.step, ipe);
        const float           *x;
        int                    n, epoch_end;
        if ((s = dinoc_loader_next(r.ld, &x, NULL, &n, &epoch_end))) break;
        if ((s = dinoc_dino_step(d, x, &sc, &stt))) {
            if (s == DINOC_ERR_NUMERIC)
                s = dinoc_fail(DINOC_ERR_NUMERIC, "step %lld: %s; stopping (the last checkpoint is intact)",
                               (long long)r.step, dinoc_last_error());
            break;
        }
        r.step++;
        epoch_loss += stt.loss, epoch_steps++;
        if (fitting && r.step == 3) fit_t = now_s(), fit_n = 3, t_teacher = 0;
        if (fitting && r.step > 3 && r.step <= CALIB) t_teacher += stt.t_teacher;
        if (fitting && r.step == CALIB && r.mon_train)
            /* first guess of an epoch end before one is seen: the monitor's teacher forward of its
             * images (2x for decoding and the k-NN), and 2 s for the checkpoint */
            epoch_end_s = 2.0 + 2 * t_teacher / (CALIB - 3) / ((double)d->nG * c->batch) * (c->knn_train + c->knn_test);
        if (fitting && !epoch_end && r.step < stop && (r.step == CALIB || (r.step > CALIB && r.step - fit_n >= REFIT))) {
            const double  per_step = (now_s() - fit_t) / (double)(r.step - fit_n);
            const int64_t fit      = fit_steps(c->time_budget - (now_s() - t0), per_step, epoch_end_s, r.step, ipe, most);
            if (r.step == CALIB && lead)
                dinoc_log(DINOC_LOG_INFO, "time budget %.0f s: %.3f s per step, %.0f s per epoch end: %lld steps "
                          "(%.2f epochs; at most %d)", c->time_budget, per_step, epoch_end_s, (long long)fit,
                          (double)fit / ipe, c->epochs);
            if ((s = set_length(d, fit, &total, &stop))) break;
            fit_t = now_s(), fit_n = r.step;
        }
        const double tn = now_s(), img_s = c->batch / fmax(tn - tstep, 1e-9);
        const int    ep = (int)((r.step - 1) / ipe);
        tstep           = tn;
        if (jl)
            fprintf(jl,
                "{\"step\":%lld,\"epoch\":%d,\"loss\":%.6f,\"lr\":%.6g,\"wd\":%.6g,\"momentum\":%.8g,\"teacher_temp\":%.5g,"
                "\"grad_norm\":%.6g,\"teacher_entropy\":%.5f,\"batch_entropy\":%.5f,\"center_norm\":%.5g,\"feat_std\":%.5g,"
                "\"img_s\":%.1f}\n",
                (long long)r.step, ep, stt.loss, sc.lr, sc.wd, sc.momentum, sc.teacher_temp, stt.grad_norm,
                stt.teacher_entropy, stt.batch_entropy, stt.center_norm, stt.feat_std, img_s);
        if (c->progress && lead) c->progress(c->progress_user, r.step, stop, ep, stt.loss, img_s);
        if (c->ckpt_every > 0 && r.step % c->ckpt_every == 0) {
            if (jl) fflush(jl);
            if ((s = save_checkpoint(&r))) break;
        }
        if (epoch_end || r.step == stop) {
            /* collapse watch: DINO collapses either to one dimension (the batch-mean teacher
             * distribution is one-hot: batch entropy ~ 0) or to uniform outputs (loss ~ ln K) */
            const double mean_loss = epoch_loss / fmax(1, (double)epoch_steps);
            if (lead && ep >= c->warmup_epochs && fabs(mean_loss - lnK) < 0.02 * lnK)
                dinoc_log(DINOC_LOG_WARN, "epoch %d: loss %.4f sits at ln K = %.4f: the outputs look collapsed to "
                          "uniform (try a lower teacher temperature or a larger batch)", ep, mean_loss, lnK);
            if (lead && ep >= c->warmup_epochs && stt.batch_entropy < 0.1 * lnK)
                dinoc_log(DINOC_LOG_WARN, "epoch %d: the teacher uses few of its %d outputs (batch entropy %.3f nats): "
                          "collapse to one dimension (raise the center momentum's effect or the teacher temperature)",
                          ep, c->out_dim, stt.batch_entropy);
            epoch_loss = 0, epoch_steps = 0;
            const double t_end = now_s();
            if (jl) fflush(jl);
            if ((s = save_checkpoint(&r))) break;
            if (r.mon_train) {
                double t1, t5;
                if ((s = knn_monitor(&r, &t1, &t5))) break;
                res->knn_top1 = t1;
                fprintf(jl, "{\"step\":%lld,\"epoch\":%d,\"knn_top1\":%.5f,\"knn_top5\":%.5f}\n", (long long)r.step, ep,
                        t1, t5);
                fflush(jl);
                dinoc_log(DINOC_LOG_INFO, "epoch %d: loss %.4f, k-NN top-1 %.2f%% (monitor: %d train / %d test images)",
                          ep, mean_loss, 100 * t1, c->knn_train, c->knn_test);
            }
            tstep = now_s();
            if (fitting && r.step >= CALIB && r.step < stop) {
                /* refit with a measured epoch end; the window restarts after it */
                const double  per_step = (t_end - fit_t) / (double)(r.step - fit_n > 0 ? r.step - fit_n : 1);
                epoch_end_s = tstep - t_end;
                const int64_t fit = fit_steps(c->time_budget - (tstep - t0), per_step, epoch_end_s, r.step, ipe, most);
                if (lead)
                    dinoc_log(DINOC_LOG_INFO, "time budget: %.0f s left, %.3f s per step, %.1f s per epoch end: %lld "
                              "steps (%.2f epochs)", c->time_budget - (tstep - t0), per_step, epoch_end_s,
                              (long long)fit, (double)fit / ipe);
                if ((s = set_length(d, fit, &total, &stop))) break;
                fit_t = tstep, fit_n = r.step;
            }
        }
    }
    if (s) goto done;
    if (jl) fflush(jl);
    if ((s = save_checkpoint(&r))) goto done;
    res->steps      = r.step;
    res->final_loss = stt.loss;
    res->seconds    = now_s() - t0;
    if (lead) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "steps", (double)r.step);
        cJSON_AddNumberToObject(o, "final_loss", stt.loss);
        cJSON_AddNumberToObject(o, "knn_monitor_top1", res->knn_top1);
        cJSON_AddNumberToObject(o, "seconds", res->seconds);
        cJSON_AddNumberToObject(o, "threads", dinoc_get_threads());
        cJSON_AddNumberToObject(o, "images_per_second", (double)r.step * c->batch / fmax(res->seconds, 1e-9));
        cJSON_AddItemToObject(o, "config", config_json(c));
        char *js = cJSON_Print(o), *mp = dinoc_path_join(c->out, "metrics.json");
        cJSON_Delete(o);
        if (js && mp) s = dinoc_write_file_atomic(mp, js, strlen(js));
        free(js), free(mp);
    }
done:
    if (jl) fclose(jl);
    free(log_path);
    run_free(&r);
    return s;
}
