/* mlm_eval.c: held-out masked-token accuracy and perplexity, and the unigram baseline
 * (mlm_eval.h). The head runs on chunks of at most CHUNK masked rows, so the [rows, V] logits stay
 * small whatever the batch. Tested by tests/test_mlm_train.c. */
#include "mlm_eval.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <string.h>

#define CHUNK 256

static const int32_t never_ids[] = {DINOC_TV_PAD, DINOC_TV_UNK, DINOC_TV_CLS, DINOC_TV_SEP};

dinoc_mlm_mask_params dinoc_mlm_eval_mask_params(int V) {
    dinoc_mlm_mask_params p = dinoc_mlm_mask_default(DINOC_TV_MASK, V);
    p.never = never_ids, p.n_never = (int)(sizeof never_ids / sizeof never_ids[0]);
    return p;
}

dinoc_status dinoc_mlm_evaluate(const dinoc_text_model *m, const dinoc_text_packed *data,
                                const int64_t *counts, int batch, uint64_t seed,
                                dinoc_mlm_eval_result *r) {
    memset(r, 0, sizeof *r);
    const int T = data->T, V = m->cfg.vocab;
    if (T > m->cfg.max_pos) return dinoc_fail(DINOC_ERR_ARG, "context %d exceeds the model's %d positions", T, m->cfg.max_pos);
    if (data->n_seq <= 0) return dinoc_fail(DINOC_ERR_ARG, "no held-out sequences to evaluate");
    const int B = (int64_t)batch < data->n_seq ? batch : (int)data->n_seq;
    if (B <= 0) return dinoc_fail(DINOC_ERR_ARG, "eval batch %d", batch);
    /* the baseline from the training counts of ordinary tokens */
    int64_t N = 0;
    int32_t top = DINOC_TV_N_SPECIAL;
    for (int v = DINOC_TV_N_SPECIAL; v < V; v++) {
        N += counts[v];
        if (counts[v] > counts[top]) top = v;
    }
    const double denom = (double)N + (V - DINOC_TV_N_SPECIAL);
    dinoc_text_state     *ts  = NULL;
    dinoc_mlm_state      *ms  = NULL;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T), *len = malloc(sizeof(int32_t) * (size_t)B);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)B * T), *tgt = malloc(sizeof(int32_t) * (size_t)B * T);
    dinoc_status s = ids && len && pos && tgt ? DINOC_OK : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    if (!s) s = dinoc_text_state_init(&ts, m, B, T, 0);
    if (!s) s = dinoc_mlm_state_init(&ms, m, CHUNK);
    const dinoc_mlm_mask_params mp = dinoc_mlm_eval_mask_params(V);
    double  ce = 0, ce_u = 0;
    int64_t hits = 0, hits_u = 0, hits_m = 0, hits_mu = 0;
    for (int64_t s0 = 0; s0 < data->n_seq && !s; s0 += B) {
        const int nb = data->n_seq - s0 < B ? (int)(data->n_seq - s0) : B;
        int       n  = 0;
        for (int b = 0; b < B; b++) {
            int32_t *row = ids + (size_t)b * T;
            if (b >= nb) { /* filler rows of the last batch: [CLS] alone, nothing masked */
                memset(row, 0, sizeof(int32_t) * T);
                row[0] = DINOC_TV_CLS, len[b] = 1;
                continue;
            }
            memcpy(row, data->ids + (s0 + b) * T, sizeof(int32_t) * T);
            len[b] = data->len[s0 + b];
            dinoc_rng rng;
            dinoc_rng_seed(&rng, seed ^ (0xd1b54a32d192ed03ull * (uint64_t)(s0 + b + 1)));
            int k = dinoc_mlm_mask(row, pos + n, tgt + n, T, &len[b], 1, T, &mp, &rng);
            for (int i = 0; i < k; i++) pos[n + i] += b * T;
            n += k;
        }
        if ((s = dinoc_text_forward(m, ts, ids, len))) break;
        const float *hidden = dinoc_text_state_hidden(ts);
        for (int c0 = 0; c0 < n && !s; c0 += CHUNK) {
            const int k = n - c0 < CHUNK ? n - c0 : CHUNK;
            double    l, a;
            if ((s = dinoc_mlm_forward(m, ms, hidden, B * T, pos + c0, tgt + c0, k, &l, &a))) break;
            ce += l * k, hits += llround(a * k);
            /* the [MASK]-input subset: argmax per row (the first maximum, as dinoc_mlm_forward) */
            const float *lg = dinoc_mlm_state_logits(ms);
            for (int i = 0; i < k; i++) {
                if (ids[pos[c0 + i]] != DINOC_TV_MASK) continue;
                const float *row  = lg + (size_t)i * V;
                int          best = 0;
                for (int j = 1; j < V; j++) best = row[j] > row[best] ? j : best;
                r->n_mask_input++, hits_m += best == tgt[c0 + i], hits_mu += tgt[c0 + i] == top;
            }
        }
        for (int i = 0; i < n; i++) {
            hits_u += tgt[i] == top;
            ce_u -= log(((double)counts[tgt[i]] + 1) / denom);
        }
        r->n_masked += n;
    }
    if (!s && r->n_masked == 0) s = dinoc_fail(DINOC_ERR_ARG, "the held-out text gave no maskable tokens");
    if (!s) {
        const double k = (double)r->n_masked;
        r->n_seq = data->n_seq, r->n_tokens = data->n_tokens;
        r->accuracy = hits / k, r->loss = ce / k, r->perplexity = exp(ce / k);
        r->unigram_accuracy = hits_u / k, r->unigram_perplexity = exp(ce_u / k), r->unigram_top = top;
        const double km = r->n_mask_input ? (double)r->n_mask_input : 1;
        r->mask_accuracy = hits_m / km, r->unigram_mask_accuracy = hits_mu / km;
    }
    dinoc_text_state_free(ts);
    dinoc_mlm_state_free(ms);
    free(ids), free(len), free(pos), free(tgt);
    return s;
}

/* A `dinoc train mlm` run folder records its held-out split in checkpoint.safetensors (config
 * "holdout" and "text"). Scoring the same text with another --holdout would score training
 * entries: refused. Other text, or a folder without our checkpoint (an HF model), is not checked. */
static dinoc_status check_split(const char *model_dir, const dinoc_mlm_eval_config *c) {
    char              *ck = dinoc_path_join(model_dir, "checkpoint.safetensors");
    dinoc_safetensors *st = NULL;
    dinoc_status       s  = DINOC_OK;
    if (!ck) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    if (!dinoc_file_exists(ck) || dinoc_safetensors_open(&st, ck) != DINOC_OK) {
        free(ck);
        return DINOC_OK; /* not a run folder (or an unreadable checkpoint: the model load speaks) */
    }
    const char *cj = dinoc_safetensors_metadata(st, "config");
    cJSON      *o  = cj ? cJSON_Parse(cj) : NULL;
    const cJSON *ho = cJSON_GetObjectItemCaseSensitive(o, "holdout"), *tx = cJSON_GetObjectItemCaseSensitive(o, "text");
    int same_text = cJSON_IsArray(tx) && cJSON_GetArraySize(tx) == c->n_text;
    for (int i = 0; same_text && i < c->n_text; i++) {
        const cJSON *e = cJSON_GetArrayItem(tx, i);
        same_text = cJSON_IsString(e) && strcmp(e->valuestring, c->text[i]) == 0;
    }
    if (same_text && cJSON_IsNumber(ho) && (int)ho->valuedouble != c->holdout)
        s = dinoc_fail(DINOC_ERR_ARG, "%s: the run held out one text entry in %d of this text (its checkpoint's "
                       "config); --holdout %d would score entries it trained on", model_dir, (int)ho->valuedouble,
                       c->holdout);
    cJSON_Delete(o);
    dinoc_safetensors_close(st);
    free(ck);
    return s;
}

dinoc_status dinoc_mlm_eval_folder(const char *model_dir, const dinoc_mlm_eval_config *c,
                                   dinoc_mlm_eval_result *r) {
    memset(r, 0, sizeof *r);
    dinoc_text_model  *m    = NULL;
    dinoc_tokenizer   *tok  = NULL;
    dinoc_text_corpus *all  = NULL, *held = NULL;
    dinoc_text_vocab   v    = {0, 0, NULL, NULL, NULL};
    dinoc_text_packed  data = {0, 0, NULL, NULL, 0};
    dinoc_status       s    = check_split(model_dir, c);
    if (!s) s = dinoc_text_model_load(&m, model_dir);
    if (!s && !m->cfg.mlm_head) s = dinoc_fail(DINOC_ERR_ARG, "%s: the model has no MLM head (cls.predictions.*)", model_dir);
    if (!s) s = dinoc_text_corpus_open(&all, &tok, c->bpe, c->text, c->n_text, c->fortunes_dir, NULL, 0);
    if (!s) s = dinoc_text_vocab_load(&v, model_dir, dinoc_tokenizer_vocab_size(tok));
    if (!s && v.n != m->cfg.vocab)
        s = dinoc_fail(DINOC_ERR_SHAPE, "%s: %s lists %d ids, the model's vocab_size is %d", model_dir,
                       DINOC_TEXT_VOCAB_FILE, v.n, m->cfg.vocab);
    if (!s && c->holdout > 0 && all->n_entries < c->holdout)
        s = dinoc_fail(DINOC_ERR_ARG, "%lld text entries: none held out at one in %d", (long long)all->n_entries, c->holdout);
    if (!s && c->holdout > 0) s = dinoc_text_corpus_split(&held, all, c->holdout, 1);
    if (!s) s = dinoc_text_pack(&data, held ? held : all, &v, c->ctx > 0 ? c->ctx : m->cfg.max_pos);
    if (!s) s = dinoc_mlm_evaluate(m, &data, v.counts, c->batch, c->seed, r);
    dinoc_text_packed_free(&data);
    dinoc_text_vocab_free(&v);
    dinoc_text_corpus_free(all), dinoc_text_corpus_free(held);
    dinoc_tokenizer_free(tok);
    dinoc_text_free(m);
    return s;
}
