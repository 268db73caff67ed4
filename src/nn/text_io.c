/* text_io.c: text models by Hugging Face names: the tensor list (also the weight-decay groups),
 * random init, and folders of config.json + model.safetensors.
 *
 * Names (reference clip_mlm_and_c_peers.md A.5 and Part A'):
 *   CLIP  text_model.embeddings.{token,position}_embedding.weight,
 *         text_model.encoder.layers.{l}.self_attn.{q,k,v,out}_proj.*, .layer_norm1/2.*, .mlp.fc1/fc2.*,
 *         text_model.final_layer_norm.*, text_projection.weight (CLIPTextModelWithProjection)
 *   BERT  [bert.]embeddings.{word,position,token_type}_embeddings.weight, embeddings.LayerNorm.*,
 *         encoder.layer.{l}.attention.self.{query,key,value}.*, attention.output.dense/LayerNorm.*,
 *         intermediate.dense.*, output.dense/LayerNorm.*; with the MLM head (BertForMaskedLM, whose
 *         encoder names carry "bert.") cls.predictions.transform.dense/LayerNorm.* and
 *         cls.predictions.bias; the decoder weight is the word-embedding table (tied).
 * Loading checks every tensor's presence and shape before anything is allocated; tensors that are
 * not part of the text encoder (a full CLIPModel's vision tower and logit_scale, legacy
 * position_ids buffers, BERT's pooler and NSP head, the tied decoder copies) are skipped.
 * config.json: unknown keys are ignored (HF configs carry many generation/training fields);
 * missing keys take HF's defaults for the class. position_embedding_type "sinusoidal" is dinoc's
 * own value (no position table); HF BERT knows only "absolute" among the kinds supported here.
 * Tested by tests/test_text.c on folders written by tests/py/gen_text.py. */
#include "text.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

/* ---- the tensor list -------------------------------------------------------------------------- */

/* Appends one 1-D (cols 0) or 2-D tensor to e (NULL: counts only); matrices are decayed. */
static void put(dinoc_param_entry *e, int *n, const char *name, float *data, int64_t rows,
                int64_t cols) {
    if (e) {
        dinoc_param_entry *x = &e[*n];
        snprintf(x->name, sizeof x->name, "%.95s", name); /* names here are far shorter */
        x->ndim = cols ? 2 : 1, x->shape[0] = rows, x->shape[1] = cols;
        x->data = data, x->decay = cols != 0;
    }
    (*n)++;
}

/* Appends "<stem>.weight" [rows, cols] (cols 0: [rows]) and, with has_b, "<stem>.bias" [rows]
 * (the views may be NULL in a layout-only walk, so the flag, not b, says whether it exists). */
static void put_wb(dinoc_param_entry *e, int *n, const char *stem, float *w, int has_b, float *b,
                   int64_t rows, int64_t cols) {
    char nm[96 + 8]; /* a stem of up to 95 characters and the suffix (names here are far shorter) */
    snprintf(nm, sizeof nm, "%s.weight", stem);
    put(e, n, nm, w, rows, cols);
    snprintf(nm, sizeof nm, "%s.bias", stem);
    if (has_b) put(e, n, nm, b, rows, 0);
}

int dinoc_text_param_entries(const dinoc_text_model *m, dinoc_param_entry *e) {
    const dinoc_text_config *c = &m->cfg;
    const dinoc_text_params *p = &m->p;
    const int64_t D = c->dim, F = c->ffn, V = c->vocab;
    const int     bert = c->kind == DINOC_TEXT_BERT;
    const char   *pre  = bert ? (c->mlm_head ? "bert." : "") : "text_model.";
    char          nm[96];
    int           n = 0;
#define NM(...) (snprintf(nm, sizeof nm, __VA_ARGS__), nm)
    put_wb(e, &n, NM("%sembeddings.%s", pre, bert ? "word_embeddings" : "token_embedding"), p->tok, 0,
           NULL, V, D);
    if (c->pos == DINOC_TEXT_POS_LEARNED)
        put_wb(e, &n, NM("%sembeddings.%s", pre, bert ? "position_embeddings" : "position_embedding"),
               p->pos, 0, NULL, c->max_pos, D);
    if (c->type_vocab)
        put_wb(e, &n, NM("%sembeddings.token_type_embeddings", pre), p->type, 0, NULL, c->type_vocab, D);
    if (bert) put_wb(e, &n, NM("%sembeddings.LayerNorm", pre), p->emb_ln_w, 1, p->emb_ln_b, D, 0);
    /* per-block name fragments: [CLIP, BERT] */
    static const char *frag[2][8] = {
        {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
         "layer_norm1", "mlp.fc1", "mlp.fc2", "layer_norm2"},
        {"attention.self.query", "attention.self.key", "attention.self.value",
         "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense", "output.dense",
         "output.LayerNorm"}};
    const char *lay = bert ? "encoder.layer" : "encoder.layers";
    for (int l = 0; l < c->layers; l++) {
        const dinoc_text_block *b = &p->blocks[l];
        /* q, k, v: row blocks of the fused qkv (views may be NULL in a layout-only walk: no
         * arithmetic on a null pointer) */
        for (int i = 0; i < 3; i++)
            put_wb(e, &n, NM("%s%s.%d.%s", pre, lay, l, frag[bert][i]), b->qkv_w ? b->qkv_w + i * D * D : NULL, 1,
                   b->qkv_b ? b->qkv_b + i * D : NULL, D, D);
        float  *w[5]    = {b->proj_w, b->ln1_w, b->fc1_w, b->fc2_w, b->ln2_w};
        float  *bb[5]   = {b->proj_b, b->ln1_b, b->fc1_b, b->fc2_b, b->ln2_b};
        int64_t rows[5] = {D, D, F, D, D}, cols[5] = {D, 0, D, F, 0};
        for (int i = 0; i < 5; i++)
            put_wb(e, &n, NM("%s%s.%d.%s", pre, lay, l, frag[bert][3 + i]), w[i], 1, bb[i], rows[i], cols[i]);
    }
    if (!bert) put_wb(e, &n, NM("%sfinal_layer_norm", pre), p->fin_ln_w, 1, p->fin_ln_b, D, 0);
    if (c->proj_dim) put_wb(e, &n, "text_projection", p->proj, 0, NULL, c->proj_dim, D);
    if (c->mlm_head) {
        put_wb(e, &n, "cls.predictions.transform.dense", p->mlm_w, 1, p->mlm_b, D, D);
        put_wb(e, &n, "cls.predictions.transform.LayerNorm", p->mlm_ln_w, 1, p->mlm_ln_b, D, 0);
        put(e, &n, "cls.predictions.bias", p->mlm_bias, V, 0);
    }
#undef NM
    return n;
}

static int64_t entry_numel(const dinoc_param_entry *e) {
    int64_t k = 1;
    for (int i = 0; i < e->ndim; i++) k *= e->shape[i];
    return k;
}

/* entries of m, allocated (caller frees); NULL on allocation failure */
static dinoc_param_entry *entries_of(const dinoc_text_model *m, int *n) {
    *n                   = dinoc_text_param_entries(m, NULL);
    dinoc_param_entry *e = calloc((size_t)*n, sizeof *e);
    if (e) dinoc_text_param_entries(m, e);
    return e;
}

int dinoc_text_param_groups(const dinoc_text_model *m, dinoc_param_group *out) {
    int                n;
    dinoc_param_entry *e = entries_of(m, &n);
    if (!e) return -1;
    for (int i = 0; out && i < n; i++) {
        dinoc_param_group *g = &out[i];
        memset(g, 0, sizeof *g);
        g->offset  = (size_t)(e[i].data - m->params);
        g->count   = (size_t)entry_numel(&e[i]);
        g->lr_mult = 1.0;
        g->wd_mult = e[i].decay ? 1.0 : 0.0;
        snprintf(g->name, sizeof g->name, "%s", e[i].name);
    }
    free(e);
    return n;
}

/* ---- random init ------------------------------------------------------------------------------ */

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Standard deviation of a weight's normal init, 0 for "zeros", < 0 for LayerNorm gains (ones).
 * CLIP: openai/CLIP initialize_parameters (A.4): tokens 0.02, positions 0.01, q/k/v D^-1/2,
 * out_proj and fc2 D^-1/2 (2L)^-1/2, fc1 (2D)^-1/2, projection D^-1/2. BERT: HF _init_weights,
 * N(0, 0.02) for every matrix and table. Biases 0; LayerNorm (1, 0). */
static double init_std(const dinoc_text_config *c, const char *nm) {
    const double D = c->dim, L = c->layers;
    if (strstr(nm, "LayerNorm") || strstr(nm, "layer_norm")) return ends_with(nm, ".bias") ? 0 : -1;
    if (ends_with(nm, ".bias") || ends_with(nm, "predictions.bias")) return 0;
    if (c->kind == DINOC_TEXT_BERT) return 0.02;
    if (strstr(nm, "token_embedding")) return 0.02;
    if (strstr(nm, "position_embedding")) return 0.01;
    if (strstr(nm, "out_proj") || strstr(nm, "fc2")) return pow(D, -0.5) * pow(2 * L, -0.5);
    if (strstr(nm, "fc1")) return pow(2 * D, -0.5);
    return pow(D, -0.5); /* q/k/v and the projection */
}

dinoc_status dinoc_text_init_random(dinoc_text_model **out, const dinoc_text_config *cfg,
                                    uint64_t seed) {
    dinoc_status s = dinoc_text_alloc(out, cfg);
    if (s) return s;
    dinoc_text_model  *m = *out;
    int                n;
    dinoc_param_entry *e = entries_of(m, &n);
    if (!e) {
        dinoc_text_free(m);
        *out = NULL;
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    }
    dinoc_rng r;
    dinoc_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        const double  sd = init_std(cfg, e[i].name);
        const int64_t k  = entry_numel(&e[i]);
        for (int64_t j = 0; j < k; j++) e[i].data[j] = sd < 0 ? 1.0f : sd == 0 ? 0.0f : (float)sd * dinoc_rng_normal(&r);
    }
    /* HF BERT's nn.Embedding(padding_idx = pad_token_id) starts the padding row at zero */
    if (cfg->kind == DINOC_TEXT_BERT && cfg->pad_id >= 0 && cfg->pad_id < cfg->vocab)
        memset(m->p.tok + (size_t)cfg->pad_id * cfg->dim, 0, sizeof(float) * (size_t)cfg->dim);
    free(e);
    return DINOC_OK;
}

/* ---- config.json ------------------------------------------------------------------------------ */

/* An integer field (def when absent); DINOC_ERR_CONFIG naming it when it is not an integer. */
static dinoc_status cfg_int(const cJSON *o, const char *key, int def, int *v, const char *file) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    *v              = def;
    if (!it || cJSON_IsNull(it)) return DINOC_OK;
    const double x = it->valuedouble;
    if (!cJSON_IsNumber(it) || x != floor(x) || fabs(x) > 1e9)
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: field '%s' must be an integer", file, key);
    *v = (int)x;
    return DINOC_OK;
}

/* A string field compared against choices[0..]: index into *v (def when absent). */
static dinoc_status cfg_enum(const cJSON *o, const char *key, const char *const *choices, int def,
                             int *v, const char *file) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    *v              = def;
    if (!it) return DINOC_OK;
    for (int i = 0; cJSON_IsString(it) && choices[i]; i++)
        if (strcmp(it->valuestring, choices[i]) == 0) return (*v = i), DINOC_OK;
    return dinoc_fail(DINOC_ERR_UNSUPPORTED, "%s: %s %s is not supported", file, key,
                      cJSON_IsString(it) ? it->valuestring : "(not a string)");
}

static dinoc_status parse_config(dinoc_text_config *c, int *proj_cfg, const char *file) {
    cJSON       *root = NULL;
    dinoc_status s    = dinoc_json_load(&root, file);
    if (s) return s;
    memset(c, 0, sizeof *c);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    const cJSON *o  = root;
    const char  *t  = cJSON_IsString(mt) ? mt->valuestring : "";
    *proj_cfg       = 0;
    if (strcmp(t, "clip") == 0) {
        /* a full CLIPModel folder: the text tower's fields sit in text_config */
        o = cJSON_GetObjectItemCaseSensitive(root, "text_config");
        if (!cJSON_IsObject(o)) s = dinoc_fail(DINOC_ERR_CONFIG, "%s: model_type clip without text_config", file);
        if (!s) s = cfg_int(root, "projection_dim", 512, proj_cfg, file);
    } else if (strcmp(t, "clip_text_model") == 0) {
        s = cfg_int(root, "projection_dim", 512, proj_cfg, file);
    } else if (strcmp(t, "bert") != 0) {
        s = dinoc_fail(DINOC_ERR_UNSUPPORTED, "%s: model_type '%s' is not a text model "
                       "(clip_text_model, clip, bert)", file, t);
    }
    const int   bert = strcmp(t, "bert") == 0;
    double      eps  = bert ? 1e-12 : 1e-5;
    int         eos  = 0, act = 0, pos = 0;
    const cJSON *ep  = o ? cJSON_GetObjectItemCaseSensitive(o, "layer_norm_eps") : NULL;
    static const char *acts[] = {"gelu", "quick_gelu", NULL};
    static const char *poss[] = {"absolute", "sinusoidal", NULL};
    c->kind                   = bert ? DINOC_TEXT_BERT : DINOC_TEXT_CLIP;
    /* defaults: HF CLIPTextConfig / BertConfig */
    if (!s) s = cfg_int(o, "vocab_size", bert ? 30522 : 49408, &c->vocab, file);
    if (!s) s = cfg_int(o, "hidden_size", bert ? 768 : 512, &c->dim, file);
    if (!s) s = cfg_int(o, "intermediate_size", bert ? 3072 : 2048, &c->ffn, file);
    if (!s) s = cfg_int(o, "num_hidden_layers", 12, &c->layers, file);
    if (!s) s = cfg_int(o, "num_attention_heads", bert ? 12 : 8, &c->heads, file);
    if (!s) s = cfg_int(o, "max_position_embeddings", bert ? 512 : 77, &c->max_pos, file);
    if (!s) s = cfg_int(o, "pad_token_id", bert ? 0 : 1, &c->pad_id, file);
    if (!s) s = cfg_int(o, "eos_token_id", bert ? -1 : 49407, &eos, file);
    if (!s && bert) s = cfg_int(o, "type_vocab_size", 2, &c->type_vocab, file);
    if (!s) s = cfg_enum(o, "hidden_act", acts, bert ? 0 : 1, &act, file);
    if (!s && bert) s = cfg_enum(o, "position_embedding_type", poss, 0, &pos, file);
    if (!s && ep && !(cJSON_IsNumber(ep) && isfinite(ep->valuedouble)))
        s = dinoc_fail(DINOC_ERR_CONFIG, "%s: field 'layer_norm_eps' must be a number", file);
    if (ep && !s) eps = ep->valuedouble;
    cJSON_Delete(root);
    if (s) return s;
    c->act    = act ? DINOC_TEXT_QUICK_GELU : DINOC_TEXT_GELU;
    c->pos    = pos ? DINOC_TEXT_POS_SINUSOIDAL : DINOC_TEXT_POS_LEARNED;
    c->ln_eps = (float)eps;
    /* HF modeling_clip: eos_token_id 2 (the legacy published configs) means "argmax of the ids" */
    c->eot_id = bert || eos == 2 ? -1 : eos;
    return DINOC_OK;
}

/* ---- loading ---------------------------------------------------------------------------------- */

static int starts_with(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* Tensors a text folder may hold beside the encoder (see the file comment). */
static int skippable(const char *nm) {
    static const char *pre[] = {"vision_model.", "visual_projection.", "logit_scale", "pooler.",
                                "bert.pooler.", "cls.predictions.decoder.", "cls.seq_relationship.",
                                NULL};
    for (int i = 0; pre[i]; i++)
        if (starts_with(nm, pre[i])) return 1;
    return ends_with(nm, "position_ids");
}

static void shape_text(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = 0;
    buf[0]   = 0;
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)shape[i]);
}

/* Old TF-converted BERT files (bert-base-uncased's model.safetensors among them) name LayerNorm
 * parameters "LayerNorm.gamma" / "LayerNorm.beta"; transformers renames them on load. Writes the
 * current name ("LayerNorm.weight" / ".bias") of a legacy one into buf and returns buf, else nm. */
static const char *current_name(const char *nm, char *buf, size_t n) {
    static const char *from[2] = {"LayerNorm.gamma", "LayerNorm.beta"}, *to[2] = {"LayerNorm.weight", "LayerNorm.bias"};
    for (int i = 0; i < 2; i++)
        if (ends_with(nm, from[i]) && strlen(nm) - strlen(from[i]) + strlen(to[i]) < n) {
            snprintf(buf, n, "%.*s%s", (int)(strlen(nm) - strlen(from[i])), nm, to[i]);
            return buf;
        }
    return nm;
}

/* The tensor of an entry's name, or of its legacy name (gamma / beta). */
static const dinoc_tensor *find_entry(dinoc_weights *w, const char *name) {
    const dinoc_tensor *t = dinoc_weights_find(w, name);
    char                old[128];
    if (t || (!ends_with(name, "LayerNorm.weight") && !ends_with(name, "LayerNorm.bias"))) return t;
    snprintf(old, sizeof old, "%.*s%s", (int)(strrchr(name, '.') - name), name,
             ends_with(name, ".weight") ? ".gamma" : ".beta");
    return dinoc_weights_find(w, old);
}

/* A BERT MLM head's decoder is tied to the word embeddings (HF ties it and we keep one table): a
 * file that holds cls.predictions.decoder.weight must hold the same values. */
static dinoc_status check_tied_decoder(const dinoc_text_model *m, dinoc_weights *w, const char *where) {
    const dinoc_tensor *t = dinoc_weights_find(w, "cls.predictions.decoder.weight");
    if (!t || !m->cfg.mlm_head) return DINOC_OK;
    const int64_t n = (int64_t)m->cfg.vocab * m->cfg.dim;
    if (t->ndim != 2 || t->shape[0] != m->cfg.vocab || t->shape[1] != m->cfg.dim)
        return dinoc_fail(DINOC_ERR_SHAPE, "%s: cls.predictions.decoder.weight is not [vocab, hidden]", where);
    float *d = malloc(sizeof(float) * (size_t)n);
    if (!d) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    dinoc_status s = dinoc_tensor_to_f32(t, d, n);
    if (!s && memcmp(d, m->p.tok, sizeof(float) * (size_t)n) != 0)
        s = dinoc_fail(DINOC_ERR_FORMAT, "%s: cls.predictions.decoder.weight differs from the word embeddings: an "
                       "untied MLM decoder is not supported", dinoc_weights_file_of(w, t));
    free(d);
    return s;
}

/* Checks (copy = 0) or copies (copy = 1) every tensor of m's list from w. */
static dinoc_status match_weights(const dinoc_text_model *m, dinoc_weights *w, const char *where,
                                  int copy) {
    int                n;
    dinoc_param_entry *e = entries_of(m, &n);
    dinoc_status       s = e ? DINOC_OK : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n && !s; i++) {
        const dinoc_tensor *t = find_entry(w, e[i].name);
        int                 same = t && t->ndim == e[i].ndim;
        for (int k = 0; same && k < t->ndim; k++) same = t->shape[k] == e[i].shape[k];
        if (!t) {
            s = dinoc_fail(DINOC_ERR_SHAPE, "%s: missing tensor '%s'", where, e[i].name);
        } else if (!same) {
            char got[96], want[96];
            shape_text(got, sizeof got, t->ndim, t->shape);
            shape_text(want, sizeof want, e[i].ndim, e[i].shape);
            s = dinoc_fail(DINOC_ERR_SHAPE, "%s: tensor '%s' has shape [%s], expected [%s]",
                           dinoc_weights_file_of(w, t), e[i].name, got, want);
        } else if (copy && (s = dinoc_tensor_to_f32(t, e[i].data, dinoc_tensor_numel(t)))) {
            s = dinoc_fail_prefix(s, "%s", dinoc_weights_file_of(w, t));
        }
    }
    for (int j = 0; j < dinoc_weights_count(w) && !s && !copy; j++) {
        char        buf[128];
        const char *nm    = current_name(dinoc_weights_get(w, j)->name, buf, sizeof buf);
        int         found = skippable(nm);
        for (int i = 0; i < n && !found; i++) found = strcmp(nm, e[i].name) == 0;
        if (!found)
            s = dinoc_fail(DINOC_ERR_SHAPE, "%s: unexpected tensor '%s' (not in a %s text model of this config)",
                           dinoc_weights_file_of(w, dinoc_weights_get(w, j)), nm,
                           m->cfg.kind == DINOC_TEXT_BERT ? "bert" : "clip");
    }
    free(e);
    return s;
}

dinoc_status dinoc_text_model_load(dinoc_text_model **out, const char *path) {
    *out                = NULL;
    dinoc_text_model *m = NULL;
    dinoc_weights    *w = NULL;
    char *cfg_path      = dinoc_is_dir(path) ? dinoc_path_join(path, "config.json") : NULL;
    int   proj_cfg      = 0;
    dinoc_text_config cfg;
    dinoc_status      s;
    if (!dinoc_is_dir(path)) return dinoc_fail(DINOC_ERR_IO, "%s: not a model folder", path);
    if (!cfg_path) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    if ((s = parse_config(&cfg, &proj_cfg, cfg_path))) goto done;
    if ((s = dinoc_weights_open(&w, path))) goto done;
    /* what the files hold decides the optional parts: the projection (CLIPTextModel has none
     * though its config names a projection_dim) and BERT's MLM head */
    const dinoc_tensor *tp = dinoc_weights_find(w, "text_projection.weight");
    cfg.proj_dim           = cfg.kind == DINOC_TEXT_CLIP && tp ? (int)tp->shape[0] : 0;
    cfg.mlm_head           = cfg.kind == DINOC_TEXT_BERT && dinoc_weights_find(w, "cls.predictions.bias");
    if (tp && cfg.proj_dim != proj_cfg)
        dinoc_log(DINOC_LOG_WARN, "%s: text_projection has %d rows, config projection_dim %d", path,
                  cfg.proj_dim, proj_cfg);
    if ((s = dinoc_text_config_check(&cfg, cfg_path))) goto done;
    {
        /* names and shapes first, on a model without storage */
        dinoc_text_model shadow;
        memset(&shadow, 0, sizeof shadow);
        shadow.cfg      = cfg;
        shadow.p.blocks = calloc((size_t)cfg.layers, sizeof(dinoc_text_block));
        if (!shadow.p.blocks) {
            s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
            goto done;
        }
        dinoc_text_carve(&cfg, NULL, &shadow.p);
        s = match_weights(&shadow, w, path, 0);
        free(shadow.p.blocks);
        if (s) goto done;
    }
    if ((s = dinoc_text_alloc(&m, &cfg))) goto done;
    s = match_weights(m, w, path, 1);
    if (!s) s = check_tied_decoder(m, w, path);
done:
    dinoc_weights_close(w);
    free(cfg_path);
    if (s) dinoc_text_free(m);
    else *out = m;
    return s;
}

/* ---- saving ----------------------------------------------------------------------------------- */

static cJSON *config_json(const dinoc_text_config *c) {
    const int bert = c->kind == DINOC_TEXT_BERT;
    cJSON    *root = cJSON_CreateObject();
    cJSON    *arch = cJSON_AddArrayToObject(root, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(bert ? (c->mlm_head ? "BertForMaskedLM" : "BertModel")
                                                        : (c->proj_dim ? "CLIPTextModelWithProjection"
                                                                       : "CLIPTextModel")));
    cJSON_AddStringToObject(root, "model_type", bert ? "bert" : "clip_text_model");
    cJSON_AddNumberToObject(root, "vocab_size", c->vocab);
    cJSON_AddNumberToObject(root, "hidden_size", c->dim);
    cJSON_AddNumberToObject(root, "intermediate_size", c->ffn);
    cJSON_AddNumberToObject(root, "num_hidden_layers", c->layers);
    cJSON_AddNumberToObject(root, "num_attention_heads", c->heads);
    cJSON_AddNumberToObject(root, "max_position_embeddings", c->max_pos);
    cJSON_AddStringToObject(root, "hidden_act", c->act == DINOC_TEXT_QUICK_GELU ? "quick_gelu" : "gelu");
    cJSON_AddNumberToObject(root, "layer_norm_eps", c->ln_eps);
    cJSON_AddNumberToObject(root, "pad_token_id", c->pad_id);
    if (bert) {
        cJSON_AddNumberToObject(root, "type_vocab_size", c->type_vocab);
        cJSON_AddStringToObject(root, "position_embedding_type",
                                c->pos == DINOC_TEXT_POS_SINUSOIDAL ? "sinusoidal" : "absolute");
    } else {
        /* eot_id -1 (argmax pooling) is written as HF's legacy marker 2 */
        cJSON_AddNumberToObject(root, "eos_token_id", c->eot_id < 0 ? 2 : c->eot_id);
        if (c->proj_dim) cJSON_AddNumberToObject(root, "projection_dim", c->proj_dim);
    }
    cJSON_AddStringToObject(root, "torch_dtype", "float32");
    return root;
}

dinoc_status dinoc_text_model_save(const dinoc_text_model *m, const char *dir) {
    dinoc_status s = dinoc_mkdir(dir);
    if (s) return s;
    int                n;
    dinoc_param_entry *e       = entries_of(m, &n);
    dinoc_tensor      *ts      = calloc((size_t)n, sizeof *ts);
    char              *st_path = dinoc_path_join(dir, "model.safetensors");
    char              *cj_path = dinoc_path_join(dir, "config.json");
    cJSON             *cj      = config_json(&m->cfg);
    char              *txt     = cj ? cJSON_Print(cj) : NULL;
    if (!e || !ts || !st_path || !cj_path || !txt) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    for (int i = 0; i < n; i++)
        ts[i] = (dinoc_tensor){.name = e[i].name, .dtype = DINOC_DTYPE_F32, .ndim = e[i].ndim,
                               .shape = {e[i].shape[0], e[i].shape[1]},
                               .nbytes = (size_t)entry_numel(&e[i]) * sizeof(float), .data = e[i].data};
    static const char *meta[] = {"format", "pt", NULL};
    if (!(s = dinoc_safetensors_write(st_path, ts, n, meta)))
        s = dinoc_write_file_atomic(cj_path, txt, strlen(txt));
done:
    cJSON_Delete(cj);
    free(txt);
    free(e);
    free(ts);
    free(st_path);
    free(cj_path);
    return s;
}
