/* run.c: the training run of the self-supervised methods (see run.h), written once over a table of
 * method functions: DINO (dino_run.c) and DINOv2 (dinov2_run.c) are its users. Tested by
 * tests/test_dino_run.c, tests/test_dinov2_run.c, tests/kill_resume.sh and tests/mpi_test.sh. */
#include "run.h"
#include "../core/dist.h"

#include "../eval/eval.h"
#include "supervised.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>
#include <time.h>

/* ---- config <-> JSON, from the method's field table -------------------------------------------- */

static cJSON *config_json(const dinoc_run_method *m, const void *c) {
    cJSON *o = cJSON_CreateObject();
    if (o && (!cJSON_AddStringToObject(o, "objective", m->name) || !dinoc_cfg_to_json(o, m->fields, m->n_fields, c))) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

#define MAX_KEEP 8

/* Reads a saved config over c; strings are duplicated into keep[] (freed by the caller). */
static dinoc_status config_from_json(const dinoc_run_method *m, void *c, const char *json, const char *where,
                                     char **keep) {
    cJSON *o = cJSON_Parse(json);
    if (!o) return dinoc_fail(DINOC_ERR_FORMAT, "%s: config metadata is not JSON", where);
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(o, "objective");
    dinoc_status s   = DINOC_OK;
    if (cJSON_IsString(obj) && strcmp(obj->valuestring, m->name) != 0)
        s = dinoc_fail(DINOC_ERR_FORMAT, "%s: a '%s' run, not %s", where, obj->valuestring, m->name);
    if (!s) s = dinoc_cfg_from_json(o, m->fields, m->n_fields, c, keep, MAX_KEEP, where);
    cJSON_Delete(o);
    return s;
}

/* ---- checkpoints ------------------------------------------------------------------------------ */

typedef struct {
    const dinoc_run_method *m;
    void                   *obj; /* the method object (m->obj_size bytes) */
    dinoc_run_view          v;   /* of the object's live config */
    dinoc_dataset          *train, *mon_train, *mon_test;
    dinoc_loader           *ld;
    int64_t                 step;
    char                   *keep[MAX_KEEP];
} run;

#define MAX_STATE 32

/* Rank 0 writes (atomically); the others hold the same state and write nothing. */
static dinoc_status save_checkpoint(run *r) {
    if (dinoc_dist_rank() != 0) return DINOC_OK;
    const dinoc_run_method *M   = r->m;
    const char             *out = *r->v.out;
    dinoc_status            s   = dinoc_mkdir(out);
    if (s) return s;
    cJSON *cj   = config_json(M, M->config(r->obj));
    char  *path = dinoc_path_join(out, "checkpoint.safetensors"), *js = cJSON_PrintUnformatted(cj);
    cJSON_Delete(cj);
    if (!path || !js) {
        free(path), free(js);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    }
    dinoc_loader_pos  pos = dinoc_loader_tell(r->ld);
    dinoc_run_counter cnt[MAX_STATE];
    const int         nc = M->state_counters(r->obj, cnt, MAX_STATE);
    char              v[MAX_STATE + 3][32];
    const char       *meta[2 * (MAX_STATE + 5) + 1];
    int               m = 0;
    meta[m++] = "format", meta[m++] = M->format;
    snprintf(v[0], 32, "%lld", (long long)r->step);
    snprintf(v[1], 32, "%lld", (long long)pos.epoch);
    snprintf(v[2], 32, "%lld", (long long)pos.index);
    meta[m++] = "step", meta[m++] = v[0], meta[m++] = "loader_epoch", meta[m++] = v[1];
    meta[m++] = "loader_index", meta[m++] = v[2];
    for (int i = 0; i < nc; i++) {
        snprintf(v[3 + i], 32, "%lld", (long long)*cnt[i].v);
        meta[m++] = cnt[i].name, meta[m++] = v[3 + i];
    }
    meta[m++] = "config", meta[m++] = js, meta[m] = NULL;
    dinoc_tensor t[MAX_STATE + 1];
    int          nt = M->state_tensors(r->obj, t, MAX_STATE);
    memset(&t[nt], 0, sizeof t[nt]);
    t[nt].name = "rng", t[nt].dtype = DINOC_DTYPE_U64, t[nt].ndim = 1, t[nt].shape[0] = 4, t[nt].nbytes = 32;
    t[nt].data = M->rng(r->obj)->s;
    s = dinoc_safetensors_write(path, t, nt + 1, meta);
    free(path), free(js);
    if (!s) s = M->save_teacher(r->obj, out);
    return s;
}

static dinoc_status load_checkpoint(run *r, const dinoc_safetensors *st, const char *ck, dinoc_loader_pos *pos) {
    dinoc_tensor want[MAX_STATE];
    const int    nt = r->m->state_tensors(r->obj, want, MAX_STATE);
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
    memcpy(r->m->rng(r->obj)->s, rt->data, 32);
    dinoc_run_counter cnt[MAX_STATE];
    const int         nc = r->m->state_counters(r->obj, cnt, MAX_STATE);
    int               ok = 1;
    for (int i = 0; i < nc; i++) *cnt[i].v = dinoc_train_meta_int(st, cnt[i].name, &ok);
    r->step    = dinoc_train_meta_int(st, "step", &ok);
    pos->epoch = dinoc_train_meta_int(st, "loader_epoch", &ok);
    pos->index = dinoc_train_meta_int(st, "loader_index", &ok);
    if (!ok) return dinoc_fail(DINOC_ERR_FORMAT, "%s: bad step/loader metadata", ck);
    return DINOC_OK;
}

/* ---- setup ------------------------------------------------------------------------------------ */

static void run_free(run *r) {
    dinoc_loader_free(r->ld);
    dinoc_dataset_free(r->train), dinoc_dataset_free(r->mon_train), dinoc_dataset_free(r->mon_test);
    if (r->obj) r->m->free(r->obj);
    free(r->obj);
    for (int i = 0; i < MAX_KEEP; i++) free(r->keep[i]);
}

/* The resumed config: the checkpoint's, with what may change on resume taken from the caller's
 * (where to write, when to stop, progress reporting). */
static dinoc_status resume_config(run *r, void *c, const dinoc_run_view *uv, dinoc_safetensors **st, char **ck) {
    const dinoc_run_method *M = r->m;
    if (!(*ck = dinoc_path_join(*uv->resume, "checkpoint.safetensors"))) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    dinoc_status s = dinoc_safetensors_open(st, *ck);
    if (s) return s;
    const char *cj = dinoc_safetensors_metadata(*st, "config"), *fm = dinoc_safetensors_metadata(*st, "format");
    if (!cj || !fm || strcmp(fm, M->format) != 0)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: not a dinoc %s checkpoint (format '%s', want '%s')", *ck, M->name,
                          fm ? fm : "none", M->format);
    const char        *out = *uv->out ? *uv->out : *uv->resume, *res = *uv->resume;
    const int          max_steps = *uv->max_steps;
    dinoc_run_progress pr = *uv->progress;
    void              *pu = *uv->progress_user;
    if ((s = config_from_json(M, c, cj, *ck, r->keep))) return s;
    dinoc_run_view v;
    M->view(c, &v);
    *v.out = out, *v.resume = res, *v.max_steps = max_steps, *v.progress = pr, *v.progress_user = pu;
    return DINOC_OK;
}

static dinoc_status run_init(run *r, const dinoc_run_method *M, const void *cfg) {
    memset(r, 0, sizeof *r);
    r->m                   = M;
    void              *c   = malloc(M->cfg_size);
    dinoc_safetensors *st  = NULL;
    char              *ck  = NULL;
    dinoc_status       s   = DINOC_OK;
    dinoc_loader_pos   pos = {0, 0};
    dinoc_run_view     v;
    if (!c || !(r->obj = calloc(1, M->obj_size))) {
        free(c);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    }
    memcpy(c, cfg, M->cfg_size);
    M->view(c, &v);
    if (!M->data_parallel && dinoc_dist_size() > 1) {
        s = dinoc_fail(DINOC_ERR_ARG, "%s does not run data-parallel yet (world size %d): start it without mpirun",
                       M->name, dinoc_dist_size());
        goto done;
    }
    if (*v.resume) {
        if ((s = resume_config(r, c, &v, &st, &ck))) goto done;
    } else {
        /* normalisation follows the data */
        dinoc_preprocess pp;
        dinoc_train_preprocess(&pp, *v.data, *v.image, *v.channels);
        for (int i = 0; i < 3; i++) v.crops->mean[i] = pp.mean[i], v.crops->std[i] = pp.std[i];
        v.crops->channels = *v.channels;
    }
    if ((s = M->init(r->obj, c))) goto done; /* a failed init leaves the object zeroed */
    M->view(M->config(r->obj), &r->v);
    if (st && (s = load_checkpoint(r, st, ck, &pos))) goto done;
    /* every rank starts from rank 0's generator (the checkpoint holds rank 0's); the others then
     * move to streams of their own, so their drop-path masks differ from rank 0's */
    dinoc_rng *g = M->rng(r->obj);
    if (dinoc_dist_rank() > 0) dinoc_rng_seed(g, dinoc_rng_u64(g) ^ (0x9e3779b97f4a7c15ull * (uint64_t)dinoc_dist_rank()));
    const dinoc_run_view *lv = &r->v;
    if ((s = dinoc_train_open_data(&r->train, *lv->data, *lv->data_dir, 1))) goto done;
    /* data parallel: this rank transforms only its part of each global batch (dist.h) */
    dinoc_loader_config lc = {*lv->batch, 1, 1, *lv->seed, *lv->workers, 2, dinoc_multicrop_floats(lv->crops),
                              dinoc_multicrop_transform, lv->crops, dinoc_dist_rank(), dinoc_dist_size()};
    if ((s = dinoc_loader_init(&r->ld, r->train, &lc, pos))) goto done;
    if (dinoc_loader_batches_per_epoch(r->ld) < 1) {
        s = dinoc_fail(DINOC_ERR_ARG, "%s: %lld images give no full batch of %d", *lv->data,
                       (long long)dinoc_dataset_size(r->train), *lv->batch);
        goto done;
    }
    if (*lv->knn_every_epoch && dinoc_dist_rank() == 0 && dinoc_dataset_num_classes(r->train) >= 2) {
        /* the monitor needs labelled train and test splits; without them it is off */
        if (dinoc_train_open_data(&r->mon_train, *lv->data, *lv->data_dir, 1) == DINOC_OK &&
            dinoc_train_open_data(&r->mon_test, *lv->data, *lv->data_dir, 0) == DINOC_OK &&
            dinoc_dataset_num_classes(r->mon_test) == dinoc_dataset_num_classes(r->mon_train)) {
        } else {
            dinoc_dataset_free(r->mon_train), dinoc_dataset_free(r->mon_test);
            r->mon_train = r->mon_test = NULL;
        }
    }
done:
    dinoc_safetensors_close(st);
    free(ck), free(c);
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
    const int ktr = *r->v.knn_train, kte = *r->v.knn_test;
    float    *ftr = NULL, *fte = NULL;
    int32_t  *ytr = NULL, *yte = NULL;
    int       dim = 0, k = 20;
    dinoc_status s = r->m->teacher_features(r->obj, r->mon_train, ktr, &ftr, &ytr, &dim);
    if (!s) s = r->m->teacher_features(r->obj, r->mon_test, kte, &fte, &yte, &dim);
    if (!s) {
        int64_t ntr = ktr > 0 && ktr < dinoc_dataset_size(r->mon_train) ? ktr : dinoc_dataset_size(r->mon_train);
        int64_t nte = kte > 0 && kte < dinoc_dataset_size(r->mon_test) ? kte : dinoc_dataset_size(r->mon_test);
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
static dinoc_status set_length(const dinoc_run_view *v, int64_t fit, int64_t *total, int64_t *stop) {
    dinoc_status s = dinoc_dist_bcast_i64(&fit, 1, 0);
    if (s) return s;
    *v->sched_steps = (int)fit, *total = fit;
    *stop = *v->max_steps > 0 && *v->max_steps < fit ? *v->max_steps : fit;
    return DINOC_OK;
}

dinoc_status dinoc_run_train(const dinoc_run_method *M, const void *cfg, dinoc_run_result *res) {
    run          r;
    double       t0 = now_s();
    dinoc_status s  = run_init(&r, M, cfg);
    FILE        *jl = NULL; /* log.jsonl */
    char        *log_path = NULL;
    memset(res, 0, sizeof *res);
    res->knn_top1 = -1;
    if (s) goto done;
    const dinoc_run_view *v    = &r.v;
    const int             lead = dinoc_dist_rank() == 0; /* rank 0 logs and writes; see dist.h */
    const int             resumed = r.v.resume && *r.v.resume;
    if (lead) {
        if ((s = dinoc_mkdir(*v->out))) goto done;
        if (!(log_path = dinoc_path_join(*v->out, "log.jsonl"))) {
            s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (resumed) dinoc_train_truncate_log(log_path, r.step);
        if (!(jl = fopen(log_path, resumed ? "a" : "w"))) {
            s = dinoc_fail(DINOC_ERR_IO, "%s: cannot write", log_path);
            goto done;
        }
    }
    /* an epoch: one pass over the data, or a fixed number of steps (the data cycles) */
    const int     fixed = v->iters_per_epoch && *v->iters_per_epoch > 0;
    const int64_t ipe   = fixed ? *v->iters_per_epoch : dinoc_loader_batches_per_epoch(r.ld);
    const int64_t most  = (int64_t)*v->epochs * ipe;
    const int     batch = *v->batch, knn_n = *v->knn_train + *v->knn_test;
    const double  budget = *v->time_budget;
    int64_t       total = *v->sched_steps > 0 && *v->sched_steps < most ? *v->sched_steps : most;
    int64_t       stop  = *v->max_steps > 0 && *v->max_steps < total ? *v->max_steps : total;
    /* time budget: fit the run's length on steps 3..CALIB (the first ones warm caches and
     * threads), then again every REFIT steps and after each epoch end */
    const int     CALIB = 12, REFIT = 64;
    const int     fitting = budget > 0 && !resumed && r.step == 0 && total > CALIB;
    double        fit_t = 0, t_teacher = 0, epoch_end_s = 0; /* window start; epoch-end seconds */
    int64_t       fit_n = 0;
    const double  lnK   = log((double)*v->out_dim);
    double        tstep = now_s(), epoch_loss = 0;
    int64_t       epoch_steps = 0;
    dinoc_run_stats stt;
    memset(&stt, 0, sizeof stt);
    while (r.step < stop) {
        const float *x;
        int          n, epoch_end;
        if ((s = dinoc_loader_next(r.ld, &x, NULL, &n, &epoch_end))) break;
        if ((s = M->step(r.obj, x, r.step, ipe, &stt))) {
            if (s == DINOC_ERR_NUMERIC)
                s = dinoc_fail(DINOC_ERR_NUMERIC, "step %lld: %s; stopping (the last checkpoint is intact)",
                               (long long)r.step, dinoc_last_error());
            break;
        }
        r.step++;
        if (fixed) epoch_end = r.step % ipe == 0;
        epoch_loss += stt.dino_loss, epoch_steps++;
        if (fitting && r.step == 3) fit_t = now_s(), fit_n = 3, t_teacher = 0;
        if (fitting && r.step > 3 && r.step <= CALIB) t_teacher += stt.t_teacher;
        if (fitting && r.step == CALIB && r.mon_train)
            /* first guess of an epoch end before one is seen: the monitor's teacher forward of its
             * images (2x for decoding and the k-NN), and 2 s for the checkpoint */
            epoch_end_s = 2.0 + 2 * t_teacher / (CALIB - 3) / ((double)v->crops->n_global * batch) * knn_n;
        if (fitting && !epoch_end && r.step < stop && (r.step == CALIB || (r.step > CALIB && r.step - fit_n >= REFIT))) {
            const double  per_step = (now_s() - fit_t) / (double)(r.step - fit_n);
            const int64_t fit      = fit_steps(budget - (now_s() - t0), per_step, epoch_end_s, r.step, ipe, most);
            if (r.step == CALIB && lead)
                dinoc_log(DINOC_LOG_INFO, "time budget %.0f s: %.3f s per step, %.0f s per epoch end: %lld steps "
                          "(%.2f epochs; at most %d)", budget, per_step, epoch_end_s, (long long)fit,
                          (double)fit / ipe, *v->epochs);
            if ((s = set_length(v, fit, &total, &stop))) break;
            fit_t = now_s(), fit_n = r.step;
        }
        const double tn = now_s(), img_s = batch / fmax(tn - tstep, 1e-9);
        const int    ep = (int)((r.step - 1) / ipe);
        tstep           = tn;
        if (jl)
            fprintf(jl, "{\"step\":%lld,\"epoch\":%d,\"loss\":%.6f,%s,\"img_s\":%.1f}\n", (long long)r.step, ep,
                    stt.loss, stt.log, img_s);
        if (*v->progress && lead) (*v->progress)(*v->progress_user, r.step, stop, ep, stt.loss, img_s);
        if (*v->ckpt_every > 0 && r.step % *v->ckpt_every == 0) {
            if (jl) fflush(jl);
            if ((s = save_checkpoint(&r))) break;
        }
        if (epoch_end || r.step == stop) {
            /* collapse watch: DINO collapses either to one dimension (the batch-mean teacher
             * distribution is one-hot: batch entropy ~ 0) or to uniform outputs (DINO loss ~ ln K) */
            const double mean_loss = epoch_loss / fmax(1, (double)epoch_steps);
            if (lead && ep >= *v->warmup_epochs && fabs(mean_loss - lnK) < 0.02 * lnK)
                dinoc_log(DINOC_LOG_WARN, "epoch %d: loss %.4f sits at ln K = %.4f: the outputs look collapsed to "
                          "uniform (try a lower teacher temperature or a larger batch)", ep, mean_loss, lnK);
            if (lead && ep >= *v->warmup_epochs && stt.batch_entropy >= 0 && stt.batch_entropy < 0.1 * lnK)
                dinoc_log(DINOC_LOG_WARN, "epoch %d: the teacher uses few of its %d outputs (batch entropy %.3f nats): "
                          "collapse to one dimension (raise the center momentum's effect or the teacher temperature)",
                          ep, *v->out_dim, stt.batch_entropy);
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
                dinoc_log(DINOC_LOG_INFO, "epoch %d: %s loss %.4f, k-NN top-1 %.2f%% (monitor: %d train / %d test "
                          "images)", ep, M->name, mean_loss, 100 * t1, *v->knn_train, *v->knn_test);
            }
            tstep = now_s();
            if (fitting && r.step >= CALIB && r.step < stop) {
                /* refit with a measured epoch end; the window restarts after it */
                const double  per_step = (t_end - fit_t) / (double)(r.step - fit_n > 0 ? r.step - fit_n : 1);
                epoch_end_s = tstep - t_end;
                const int64_t fit = fit_steps(budget - (tstep - t0), per_step, epoch_end_s, r.step, ipe, most);
                if (lead)
                    dinoc_log(DINOC_LOG_INFO, "time budget: %.0f s left, %.3f s per step, %.1f s per epoch end: %lld "
                              "steps (%.2f epochs)", budget - (tstep - t0), per_step, epoch_end_s,
                              (long long)fit, (double)fit / ipe);
                if ((s = set_length(v, fit, &total, &stop))) break;
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
        cJSON_AddNumberToObject(o, "images_per_second", (double)r.step * batch / fmax(res->seconds, 1e-9));
        cJSON_AddItemToObject(o, "config", config_json(M, M->config(r.obj)));
        char *js = cJSON_Print(o), *mp = dinoc_path_join(*v->out, "metrics.json");
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
