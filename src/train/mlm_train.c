/* mlm_train.c: the MLM pretraining run (mlm_train.h). One step: a shuffled batch of packed
 * sequences -> dinoc_mlm_mask (HF's 15% / 80-10-10 rule, [PAD] [UNK] [CLS] [SEP] never masked) ->
 * text forward -> MLM head and loss -> head and encoder backward -> global-norm clip -> AdamW.
 *
 * Choices (docs/mlm.md):
 * - Vocabulary: the CLIP BPE ids seen in the training split plus 5 specials (textdata.h), not all
 *   49409: the tied decoder's product and softmax shrink 2.2x on the fortunes (22,529 of 49,409 ids).
 * - Schedule: linear warmup then cosine to min_lr over total_steps, which is epochs x batches per
 *   epoch, --steps, or, with a time budget, fitted from the measured time of steps 2-4 (the
 *   warmup's lr does not depend on the length, so fixing it then changes nothing done before) and
 *   refitted every 100 steps from the running step time, outside the last tenth.
 *   The budget also stops the run outright should later steps slow down (the machine is shared).
 * - The decoder bias starts at the training split's log unigram frequencies (init_output_bias).
 * - Weight decay: every matrix and embedding table, not biases or LayerNorm (BERT's rule,
 *   dinoc_text_param_groups).
 * Tested by tests/test_mlm_train.c (loss falls; resume equals an uninterrupted run bit for bit). */
#include "mlm_train.h"
#include "supervised.h" /* dinoc_train_truncate_log */

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

dinoc_mlm_train_config dinoc_mlm_train_default(void) {
    dinoc_mlm_train_config c;
    memset(&c, 0, sizeof c);
    c.out = "runs/mlm";
    /* sized for 20 minutes on 2 shared cores (docs/mlm.md): at equal steps D 256 x 4 layers x
     * batch 32 learned no faster than this, which takes 5x less time per step */
    c.dim = 128, c.layers = 2, c.heads = 2, c.ffn = 512, c.ctx = 64;
    c.batch = 16, c.holdout = 10;
    c.lr = 2e-3f, c.min_lr = 1e-5f, c.wd = 0.01f, c.clip_grad = 1.0f, c.warmup = 50, c.epochs = 10;
    c.ckpt_every = 200, c.eval = 1;
    return c;
}

dinoc_text_config dinoc_mlm_model_config(const dinoc_mlm_train_config *c, int vocab) {
    dinoc_text_config t;
    memset(&t, 0, sizeof t);
    t.kind = DINOC_TEXT_BERT, t.vocab = vocab, t.max_pos = c->ctx, t.dim = c->dim;
    t.layers = c->layers, t.heads = c->heads, t.ffn = c->ffn, t.act = DINOC_TEXT_GELU;
    t.pos = DINOC_TEXT_POS_LEARNED, t.ln_eps = 1e-12f, t.type_vocab = 2, t.mlm_head = 1;
    t.pad_id = DINOC_TV_PAD, t.eot_id = -1;
    return t;
}

/* ---- the config in the checkpoint: numbers from a table, the text list as an array ------------- */

#define F(name, type) DINOC_CFG_F(dinoc_mlm_train_config, #name, type, name)
static const dinoc_cfg_field fields[] = {
    F(dim, 'i'), F(layers, 'i'), F(heads, 'i'), F(ffn, 'i'), F(ctx, 'i'), F(batch, 'i'), F(holdout, 'i'),
    F(lr, 'f'), F(min_lr, 'f'), F(wd, 'f'), F(clip_grad, 'f'), F(warmup, 'i'), F(epochs, 'i'), F(steps, 'i'),
    F(time_budget, 'd'), F(seed, 'u'), F(ckpt_every, 'i'), F(eval, 'i'),
    /* absent: the run did not use them */
    {"fortunes_dir", 's', offsetof(dinoc_mlm_train_config, fortunes_dir), NULL, DINOC_CFG_CLEAR},
    {"vocab", 's', offsetof(dinoc_mlm_train_config, vocab), NULL, DINOC_CFG_CLEAR}};
#undef F
#define N_FIELDS (int)(sizeof fields / sizeof fields[0])

static char *config_to_json(const dinoc_mlm_train_config *c) {
    cJSON *o = cJSON_CreateObject(), *t = cJSON_CreateArray();
    int    ok = o && t && dinoc_cfg_to_json(o, fields, N_FIELDS, c);
    for (int i = 0; ok && i < c->n_text; i++) ok = cJSON_AddItemToArray(t, cJSON_CreateString(c->text[i]));
    if (ok && (ok = cJSON_AddItemToObject(o, "text", t))) t = NULL; /* o owns it */
    char *s = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o), cJSON_Delete(t);
    return s;
}

/* Strings the resumed config points at (text paths; fortunes_dir and vocab). */
typedef struct {
    char **text;
    int    n;
    char  *str[2];
} kept;

static dinoc_status config_from_json(dinoc_mlm_train_config *c, const char *json, const char *where, kept *k) {
    cJSON *o = cJSON_Parse(json);
    if (!o) return dinoc_fail(DINOC_ERR_FORMAT, "%s: config metadata is not JSON", where);
    dinoc_status s = dinoc_cfg_from_json(o, fields, N_FIELDS, c, k->str, 2, where);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "text");
    int          n = cJSON_IsArray(t) ? cJSON_GetArraySize(t) : 0;
    k->text = n ? calloc((size_t)n, sizeof(char *)) : NULL;
    for (int i = 0; i < n && !s; i++) {
        const cJSON *e = cJSON_GetArrayItem(t, i);
        if (!k->text || !cJSON_IsString(e) || !(k->text[i] = strdup(e->valuestring)))
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: bad 'text' entry %d in the config metadata", where, i);
        else k->n = i + 1;
    }
    c->text = (const char *const *)k->text, c->n_text = k->n;
    cJSON_Delete(o);
    return s;
}

static void kept_free(kept *k) {
    dinoc_text_free_paths(k->text, k->n);
    free(k->str[0]), free(k->str[1]);
}

/* ---- the run ---------------------------------------------------------------------------------- */

typedef struct {
    dinoc_mlm_train_config cfg;
    kept               keep;
    char               tok_name[160];
    dinoc_tokenizer   *tok;
    dinoc_text_corpus *train_c, *held_c;
    dinoc_text_vocab   vocab;
    dinoc_text_packed  train, held;
    dinoc_text_loader  ld;
    dinoc_text_model  *m;
    dinoc_param_group *groups;
    int                ngroups;
    dinoc_adamw        opt;
    dinoc_text_state  *ts;
    dinoc_mlm_state   *ms;
    float             *g, *dh;              /* [n_params] [B, T, D] */
    int32_t           *ids, *len, *pos, *tgt; /* [B, T] [B] [cap] [cap] */
    int                cap;
    dinoc_rng          rng;
    int64_t            step, total;
    double             seconds;             /* training time of earlier processes (resume) */
} run;

static void run_free(run *r) {
    dinoc_tokenizer_free(r->tok);
    dinoc_text_corpus_free(r->train_c), dinoc_text_corpus_free(r->held_c);
    dinoc_text_vocab_free(&r->vocab);
    dinoc_text_packed_free(&r->train), dinoc_text_packed_free(&r->held);
    dinoc_text_loader_free(&r->ld);
    dinoc_text_free(r->m);
    free(r->groups);
    dinoc_adamw_free(&r->opt);
    dinoc_text_state_free(r->ts);
    dinoc_mlm_state_free(r->ms);
    dinoc_free(r->g), dinoc_free(r->dh);
    free(r->ids), free(r->len), free(r->pos), free(r->tgt);
    kept_free(&r->keep);
}

/* Tokenizer + [MASK], corpus, split, vocabulary, packing. */
static dinoc_status load_data(run *r) {
    const dinoc_mlm_train_config *c   = &r->cfg;
    dinoc_text_corpus            *all = NULL;
    dinoc_status s = dinoc_text_corpus_open(&all, &r->tok, c->vocab, c->text, c->n_text, c->fortunes_dir,
                                            r->tok_name, sizeof r->tok_name);
    if (!s) s = dinoc_text_corpus_split(&r->train_c, all, c->holdout, 0);
    if (!s && c->holdout > 0 && all->n_entries >= c->holdout) s = dinoc_text_corpus_split(&r->held_c, all, c->holdout, 1);
    dinoc_text_corpus_free(all);
    if (!s) s = dinoc_text_vocab_build(&r->vocab, r->train_c, r->tok);
    if (!s) s = dinoc_text_pack(&r->train, r->train_c, &r->vocab, c->ctx);
    if (!s && r->held_c) s = dinoc_text_pack(&r->held, r->held_c, &r->vocab, c->ctx);
    return s;
}

/* Reads the checkpoint's tensors and counters into the run (its config was read before). */
static dinoc_status load_state(run *r, const dinoc_safetensors *st, const char *ck) {
    const int64_t n = (int64_t)r->m->n_params;
    float *dst[] = {r->m->params, r->opt.m, r->opt.v};
    const char *names[] = {"params", "adam.m", "adam.v"};
    for (int i = 0; i < 3; i++) {
        const dinoc_tensor *t = dinoc_safetensors_find(st, names[i]);
        if (!t || dinoc_tensor_numel(t) != n)
            return dinoc_fail(DINOC_ERR_SHAPE, "%s: tensor '%s' missing or not of %lld floats (the model's)", ck,
                              names[i], (long long)n);
        dinoc_status s = dinoc_tensor_to_f32(t, dst[i], n);
        if (s) return s;
    }
    const dinoc_tensor *rt = dinoc_safetensors_find(st, "rng");
    if (!rt || rt->dtype != DINOC_DTYPE_U64 || rt->nbytes != 32)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: missing or malformed 'rng'", ck);
    memcpy(r->rng.s, rt->data, 32);
    int ok = 1;
    r->step     = dinoc_train_meta_int(st, "step", &ok);
    r->opt.step = dinoc_train_meta_int(st, "adam_step", &ok);
    r->total    = dinoc_train_meta_int(st, "total_steps", &ok);
    r->ld.epoch = dinoc_train_meta_int(st, "loader_epoch", &ok);
    r->ld.index = dinoc_train_meta_int(st, "loader_index", &ok);
    const char *sec = dinoc_safetensors_metadata(st, "seconds");
    r->seconds      = sec ? atof(sec) : 0;
    if (!ok || r->step < 0 || r->ld.index % r->cfg.batch || r->ld.index + r->cfg.batch > r->train.n_seq)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: bad step/loader metadata", ck);
    return DINOC_OK;
}

/* The decoder's own bias starts at the log of the add-one unigram frequencies of the training
 * split (specials, never targets, at the floor), so the first step already predicts as well as
 * the unigram baseline. From HF's zero init the bias moves about lr per step: at lr 1e-3 the ~10
 * nats between frequent and rare tokens take thousands of steps, a 20-minute budget's whole length
 * (measured in docs/mlm.md). A resumed run overwrites it with the checkpoint's. */
static void init_output_bias(run *r) {
    const dinoc_text_vocab *v = &r->vocab;
    double                  N = v->n - DINOC_TV_N_SPECIAL;
    for (int k = DINOC_TV_N_SPECIAL; k < v->n; k++) N += (double)v->counts[k];
    for (int k = 0; k < v->n; k++)
        r->m->p.mlm_bias[k] = (float)log(((k < DINOC_TV_N_SPECIAL ? 0 : (double)v->counts[k]) + 1) / N);
}

static dinoc_status run_init(run *r, const dinoc_mlm_train_config *cfg) {
    memset(r, 0, sizeof *r);
    r->cfg                = *cfg;
    dinoc_safetensors *st = NULL;
    char              *ck = NULL;
    dinoc_status       s  = DINOC_OK;
    if (cfg->resume) {
        if (!(ck = dinoc_path_join(cfg->resume, "checkpoint.safetensors"))) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        if ((s = dinoc_safetensors_open(&st, ck))) goto done;
        const char *cj = dinoc_safetensors_metadata(st, "config"), *fm = dinoc_safetensors_metadata(st, "format");
        if (!cj || !fm || strcmp(fm, "dinoc-mlm-1") != 0) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: not a dinoc MLM checkpoint", ck);
            goto done;
        }
        if ((s = config_from_json(&r->cfg, cj, ck, &r->keep))) goto done;
        r->cfg.out = cfg->out ? cfg->out : cfg->resume, r->cfg.resume = cfg->resume;
        r->cfg.max_steps = cfg->max_steps, r->cfg.progress = cfg->progress;
        r->cfg.progress_user = cfg->progress_user;
    }
    const dinoc_mlm_train_config *c = &r->cfg;
    if (c->batch <= 0 || c->ctx < 4 || c->epochs <= 0 || c->steps < 0 || c->warmup < 0 || c->holdout < 0 ||
        c->holdout == 1 || c->time_budget < 0) {
        s = dinoc_fail(DINOC_ERR_ARG, "batch %d, ctx %d (>= 4), epochs %d, steps %d, warmup %d, holdout %d "
                       "(0 or >= 2), time budget %g: out of range", c->batch, c->ctx, c->epochs, c->steps,
                       c->warmup, c->holdout, c->time_budget);
        goto done;
    }
    if ((s = load_data(r))) goto done;
    dinoc_text_config tc = dinoc_mlm_model_config(c, r->vocab.n);
    if ((s = dinoc_text_init_random(&r->m, &tc, c->seed))) goto done;
    init_output_bias(r);
    const int n = dinoc_text_param_groups(r->m, NULL);
    r->groups   = n > 0 ? calloc((size_t)n, sizeof *r->groups) : NULL;
    if (!r->groups || dinoc_text_param_groups(r->m, r->groups) != n) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    r->ngroups = n;
    if ((s = dinoc_adamw_init(&r->opt, r->m->n_params, (dinoc_adamw_config){0.9, 0.999, 1e-8}))) goto done;
    dinoc_rng_seed(&r->rng, c->seed ^ 0x6d6c6dull);
    if ((s = dinoc_text_loader_init(&r->ld, &r->train, c->batch, c->seed, 0, 0))) goto done;
    if (st && (s = load_state(r, st, ck))) goto done;
    /* the masked rows of a batch: binomial(B*T, 0.15) stays under its mean + 6 sd; more are cut by
     * dinoc_mlm_mask's uniform subsampling (BERT's max_predictions_per_seq) */
    const double bt = (double)c->batch * c->ctx;
    r->cap = (int)ceil(0.15 * bt + 6 * sqrt(bt * 0.15 * 0.85)) + 8;
    const size_t BT = (size_t)c->batch * c->ctx;
    r->g   = dinoc_calloc(r->m->n_params, sizeof(float));
    r->dh  = dinoc_calloc(BT * c->dim, sizeof(float));
    r->ids = malloc(sizeof(int32_t) * BT), r->len = malloc(sizeof(int32_t) * c->batch);
    r->pos = malloc(sizeof(int32_t) * r->cap), r->tgt = malloc(sizeof(int32_t) * r->cap);
    if (!r->g || !r->dh || !r->ids || !r->len || !r->pos || !r->tgt) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory for the training buffers");
        goto done;
    }
    if ((s = dinoc_text_state_init(&r->ts, r->m, c->batch, c->ctx, 1))) goto done;
    s = dinoc_mlm_state_init(&r->ms, r->m, r->cap);
done:
    dinoc_safetensors_close(st);
    free(ck);
    return s;
}

static dinoc_status save_checkpoint(run *r, double seconds) {
    const dinoc_mlm_train_config *c = &r->cfg;
    dinoc_status                  s = dinoc_mkdir(c->out);
    if (s) return s;
    char *path = dinoc_path_join(c->out, "checkpoint.safetensors"), *cj = config_to_json(c);
    char  num[6][32];
    const int64_t v[5] = {r->step, r->opt.step, r->ld.epoch, r->ld.index, r->total};
    for (int i = 0; i < 5; i++) snprintf(num[i], sizeof num[i], "%lld", (long long)v[i]);
    snprintf(num[5], sizeof num[5], "%.3f", seconds);
    const char *meta[] = {"format", "dinoc-mlm-1", "step", num[0], "adam_step", num[1], "loader_epoch", num[2],
                          "loader_index", num[3], "total_steps", num[4], "seconds", num[5], "config", cj, NULL};
    const int64_t n = (int64_t)r->m->n_params;
    dinoc_tensor  t[4] = {
        {"params", DINOC_DTYPE_F32, 1, {n}, (size_t)n * 4, r->m->params},
        {"adam.m", DINOC_DTYPE_F32, 1, {n}, (size_t)n * 4, r->opt.m},
        {"adam.v", DINOC_DTYPE_F32, 1, {n}, (size_t)n * 4, r->opt.v},
        {"rng", DINOC_DTYPE_U64, 1, {4}, 32, r->rng.s},
    };
    s = path && cj ? dinoc_safetensors_write(path, t, 4, meta) : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    /* the model folder beside it: HF BertForMaskedLM files and the vocabulary map */
    if (!s) s = dinoc_text_model_save(r->m, c->out);
    if (!s) s = dinoc_text_vocab_save(&r->vocab, c->out, r->tok_name);
    free(path), free(cj);
    return s;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One optimizer step on the next batch; *loss, *acc, *gn, *ntok of it. */
static dinoc_status train_step(run *r, double lr, double *loss, double *acc, double *gn, int64_t *ntok) {
    const dinoc_mlm_train_config *c  = &r->cfg;
    const int                     B  = c->batch, T = c->ctx;
    const dinoc_mlm_mask_params   mp = dinoc_mlm_eval_mask_params(r->m->cfg.vocab);
    dinoc_text_loader_next(&r->ld, r->ids, r->len, NULL);
    *ntok = 0, *gn = 0;
    for (int b = 0; b < B; b++) *ntok += r->len[b];
    const int n = dinoc_mlm_mask(r->ids, r->pos, r->tgt, r->cap, r->len, B, T, &mp, &r->rng);
    dinoc_status s = dinoc_text_forward(r->m, r->ts, r->ids, r->len);
    if (!s) s = dinoc_mlm_forward(r->m, r->ms, dinoc_text_state_hidden(r->ts), B * T, r->pos, r->tgt, n, loss, acc);
    if (s) return s;
    if (!isfinite(*loss))
        return dinoc_fail(DINOC_ERR_NUMERIC, "step %lld: loss is %g; stopping (the last checkpoint is intact)",
                          (long long)r->step, *loss);
    memset(r->g, 0, sizeof(float) * r->m->n_params);
    memset(r->dh, 0, sizeof(float) * (size_t)B * T * c->dim);
    if ((s = dinoc_mlm_backward(r->m, r->ms, r->dh, r->g)) || (s = dinoc_text_backward(r->m, r->ts, r->dh, NULL, r->g)))
        return s;
    *gn = c->clip_grad > 0 ? dinoc_clip_grad_norm(r->g, r->groups, r->ngroups, c->clip_grad)
                           : dinoc_grad_norm(r->g, r->groups, r->ngroups);
    if (!isfinite(*gn))
        return dinoc_fail(DINOC_ERR_NUMERIC, "step %lld: gradient norm is %g; stopping (the last checkpoint is "
                          "intact)", (long long)r->step, *gn);
    dinoc_adamw_step(&r->opt, r->m->params, r->g, r->groups, r->ngroups, lr, c->wd);
    r->step++;
    return DINOC_OK;
}

dinoc_status dinoc_mlm_train(const dinoc_mlm_train_config *cfg, dinoc_mlm_train_result *res) {
    run          r;
    const double t0 = now_s();
    memset(res, 0, sizeof *res);
    dinoc_status s = run_init(&r, cfg);
    FILE        *log = NULL;
    char        *log_path = NULL;
    if (s) goto done;
    const dinoc_mlm_train_config *c = &r.cfg;
    if ((s = dinoc_mkdir(c->out))) goto done;
    if (!(log_path = dinoc_path_join(c->out, "log.jsonl"))) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (cfg->resume) dinoc_train_truncate_log(log_path, r.step);
    if (!(log = fopen(log_path, cfg->resume ? "a" : "w"))) {
        s = dinoc_fail(DINOC_ERR_IO, "%s: cannot write", log_path);
        goto done;
    }
    const int64_t spe = dinoc_text_loader_batches_per_epoch(&r.ld);
    /* the budget sizes the schedule unless --steps does (then it only stops the run) */
    const int fit = c->time_budget > 0 && c->steps == 0;
    if (!r.total && !fit) r.total = c->steps > 0 ? c->steps : (int64_t)c->epochs * spe;
    /* the end-of-run evaluation, reserved out of the budget: a forward and the head over every
     * held-out batch, measured at about a training step's time per batch at the default size */
    const double held_steps = c->eval ? (double)r.held.n_tokens / ((double)c->batch * c->ctx) : 0;
    double       loss = 0, acc = 0, tstep = now_s(), tcal = 0, per_step = 0;
    int64_t      first = r.step;
    while (1) {
        const int64_t stop = r.total ? r.total : INT64_MAX;
        if (r.step >= stop || (c->max_steps > 0 && r.step >= c->max_steps)) break;
        const double elapsed = r.seconds + now_s() - t0;
        if (c->time_budget > 0 && per_step > 0 && elapsed + per_step * (1 + held_steps) > c->time_budget) break;
        /* before the length is known (budget calibration) the cosine is at its start */
        const double lr = dinoc_cosine_schedule(c->lr, c->min_lr, r.total ? r.total : INT64_MAX / 4, c->warmup, 0, r.step);
        double       gn = 0;
        int64_t      ntok = 0;
        if ((s = train_step(&r, lr, &loss, &acc, &gn, &ntok))) break;
        const double tn = now_s(), dt = tn - tstep;
        tstep = tn;
        if (r.step - first == 1) tcal = tn; /* steps 2-4 time the step (the first warms caches) */
        if (r.step - first == 4) per_step = (tn - tcal) / 3;
        if (r.step - first > 4) per_step = 0.9 * per_step + 0.1 * dt;
        /* fitted after step 4, refitted every 100 steps from the running step time (the machine's
         * load changes), but not in the last tenth, where the cosine is nearly done */
        const int refit = r.total && r.step - first > 4 && r.step % 100 == 0 && r.step < r.total - r.total / 10;
        if (fit && ((!r.total && r.step - first == 4) || refit)) {
            const double  left = c->time_budget - (r.seconds + tn - t0);
            const int64_t was  = r.total;
            r.total            = r.step + (int64_t)fmax(1, left / per_step - 1 - held_steps);
            if (r.total != was)
                dinoc_log(DINOC_LOG_INFO, "time budget: %.3f s per step -> %lld steps", per_step, (long long)r.total);
        }
        fprintf(log, "{\"step\":%lld,\"epoch\":%lld,\"loss\":%.6f,\"acc\":%.5f,\"lr\":%.6g,\"grad_norm\":%.6g,"
                "\"tok_s\":%.1f}\n", (long long)r.step, (long long)r.ld.epoch, loss, acc, lr, gn, ntok / fmax(dt, 1e-9));
        if (c->progress) c->progress(c->progress_user, r.step, r.total, loss, acc, lr, ntok / fmax(dt, 1e-9));
        if (c->ckpt_every > 0 && r.step % c->ckpt_every == 0) {
            fflush(log); /* the log holds every step up to the checkpoint's before it exists */
            if ((s = save_checkpoint(&r, r.seconds + now_s() - t0))) break;
        }
    }
    if (s) goto done;
    fflush(log);
    res->seconds = r.seconds + now_s() - t0;
    if ((s = save_checkpoint(&r, res->seconds))) goto done;
    res->steps = r.step, res->total_steps = r.total, res->final_loss = loss, res->vocab = r.vocab.n;
    if (c->eval && r.held.n_seq > 0 &&
        (s = dinoc_mlm_evaluate(r.m, &r.held, r.vocab.counts, c->batch, c->seed, &res->eval)))
        goto done;
    char  *cj = config_to_json(c), *mp = dinoc_path_join(c->out, "metrics.json");
    size_t cap = cj ? strlen(cj) + 4096 : 0;
    char  *buf = cj ? malloc(cap) : NULL;
    const dinoc_mlm_eval_result *e = &res->eval;
    if (!buf || !mp) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    else {
        int len = snprintf(buf, cap, "{\"steps\":%lld,\"total_steps\":%lld,\"final_loss\":%.6f,\"seconds\":%.1f,"
                           "\"threads\":%d,\"vocab\":%d,\"train_tokens\":%lld,\"heldout_tokens\":%lld,\"masked\":%lld,"
                           "\"accuracy\":%.5f,\"perplexity\":%.3f,\"unigram_accuracy\":%.5f,\"unigram_perplexity\":%.3f,"
                           "\"mask_input\":%lld,\"mask_accuracy\":%.5f,\"unigram_mask_accuracy\":%.5f,\"tokenizer\":\"%s\",\"config\":%s}\n", (long long)res->steps, (long long)res->total_steps,
                           res->final_loss, res->seconds, dinoc_get_threads(), r.vocab.n, (long long)r.train.n_tokens,
                           (long long)r.held.n_tokens, (long long)e->n_masked, e->accuracy, e->perplexity,
                           e->unigram_accuracy, e->unigram_perplexity, (long long)e->n_mask_input, e->mask_accuracy,
                           e->unigram_mask_accuracy, r.tok_name, cj);
        if (len > 0 && (size_t)len < cap) s = dinoc_write_file_atomic(mp, buf, (size_t)len);
    }
    free(cj), free(mp), free(buf);
done:
    if (log) fclose(log);
    free(log_path);
    run_free(&r);
    return s;
}
