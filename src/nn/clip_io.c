/* clip_io.c: CLIP models from and to Hugging Face CLIPModel folders (reference A.5):
 *   config.json               model_type "clip", projection_dim, text_config, vision_config
 *   model.safetensors         text_model.* + text_projection.weight (text.c's loader),
 *                             vision_model.* (vit.c's CLIP names), visual_projection.weight [E, Dv],
 *                             logit_scale []; legacy position_ids buffers are skipped
 *   preprocessor_config.json  CLIPImageProcessor (defaults when absent: dinoc_clip_default_preprocess)
 *   tokenizer                 vocab.json + merges.txt in the folder, else the OpenAI vocabulary
 * vision_config.hidden_act picks QuickGELU ("quick_gelu", OpenAI weights, HF's default) or exact GELU
 * ("gelu", LAION/open_clip conversions): the wrong one degrades quietly, so it is never guessed.
 * dinoc's LiT models (an image tower from DINO/DINOv2) keep that tower as its own HF folder in a
 * subfolder named by config.json's "dinoc_vision_folder"; model.safetensors then has no
 * vision_model.* tensors. */
#include "clip.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

/* An integer field of o (def when absent). */
static dinoc_status json_int(const cJSON *o, const char *key, int def, int *v, const char *file) {
    const cJSON *it = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    *v              = def;
    if (!it || cJSON_IsNull(it)) return DINOC_OK;
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || fabs(it->valuedouble) > 1e9)
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: field '%s' must be an integer", file, key);
    *v = (int)it->valuedouble;
    return DINOC_OK;
}

/* vision_config of a CLIPConfig into a ViT config (defaults: HF CLIPVisionConfig, ViT-B/32). */
static dinoc_status vision_config(dinoc_vit_config *c, const cJSON *o, const char *file) {
    memset(c, 0, sizeof *c);
    c->arch = DINOC_ARCH_CLIP, c->channels = 3, c->qkv_bias = 1, c->pos_interp = DINOC_POS_INTERP_SIZE;
    dinoc_status s = json_int(o, "hidden_size", 768, &c->dim, file);
    if (!s) s = json_int(o, "intermediate_size", 3072, &c->ffn_hidden, file);
    if (!s) s = json_int(o, "num_hidden_layers", 12, &c->depth, file);
    if (!s) s = json_int(o, "num_attention_heads", 12, &c->heads, file);
    if (!s) s = json_int(o, "image_size", 224, &c->image_size, file);
    if (!s) s = json_int(o, "patch_size", 32, &c->patch, file);
    if (!s) s = json_int(o, "num_channels", 3, &c->channels, file);
    if (s) return s;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(o, "hidden_act");
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(o, "layer_norm_eps");
    const char  *a   = cJSON_IsString(act) ? act->valuestring : act ? "(not a string)" : "quick_gelu";
    if (strcmp(a, "quick_gelu") == 0) c->ffn = DINOC_FFN_MLP_QUICK_GELU;
    else if (strcmp(a, "gelu") == 0) c->ffn = DINOC_FFN_MLP;
    else return dinoc_fail(DINOC_ERR_UNSUPPORTED, "%s: vision_config.hidden_act '%s' is not supported "
                           "(quick_gelu, gelu)", file, a);
    if (eps && !(cJSON_IsNumber(eps) && isfinite(eps->valuedouble)))
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: field 'vision_config.layer_norm_eps' must be a number", file);
    c->ln_eps = eps ? (float)eps->valuedouble : 1e-5f;
    return dinoc_vit_config_check(c, file);
}

/* Reads one of the head tensors (visual_projection.weight or logit_scale) with its shape. */
static dinoc_status head_tensor(dinoc_weights *w, const char *dir, const char *name, float *dst,
                                int ndim, int64_t rows, int64_t cols) {
    const dinoc_tensor *t = dinoc_weights_find(w, name);
    if (!t) return dinoc_fail(DINOC_ERR_SHAPE, "%s: missing tensor '%s'", dir, name);
    int ok = t->ndim == ndim && (ndim < 1 || t->shape[0] == rows) && (ndim < 2 || t->shape[1] == cols);
    if (!ok && ndim == 0) ok = dinoc_tensor_numel(t) == 1; /* some saves keep logit_scale as [1] */
    if (!ok)
        return dinoc_fail(DINOC_ERR_SHAPE, "%s: tensor '%s' has %d dims, expected [%lld, %lld] (%d dims)",
                          dinoc_weights_file_of(w, t), name, t->ndim, (long long)rows, (long long)cols, ndim);
    dinoc_status s = dinoc_tensor_to_f32(t, dst, dinoc_tensor_numel(t));
    return s ? dinoc_fail_prefix(s, "%s", dinoc_weights_file_of(w, t)) : DINOC_OK;
}

/* The image tower of a CLIPModel folder, checked against the files before it is allocated. */
static dinoc_status load_vision(dinoc_model **out, const dinoc_vit_config *cfg, dinoc_weights *w,
                                const char *dir) {
    dinoc_model shadow;
    memset(&shadow, 0, sizeof shadow);
    shadow.cfg      = *cfg;
    shadow.pos_m    = cfg->image_size / cfg->patch;
    shadow.p.blocks = calloc((size_t)cfg->depth, sizeof(dinoc_block_params));
    if (!shadow.p.blocks) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    dinoc_vit_carve(cfg, NULL, &shadow.p);
    dinoc_status s = dinoc_vit_match_weights(&shadow, w, dir, "vision_model.", 0);
    free(shadow.p.blocks);
    if (!s) s = dinoc_vit_alloc(out, cfg);
    if (!s) s = dinoc_vit_match_weights(*out, w, dir, "vision_model.", 1);
    return s;
}

dinoc_status dinoc_clip_load(dinoc_clip **out, const char *dir) {
    *out             = NULL;
    cJSON        *root = NULL;
    dinoc_weights *w   = NULL;
    dinoc_clip   *m    = NULL;
    char *cfg_path = dinoc_path_join(dir, "config.json"), *pp_path = dinoc_path_join(dir, "preprocessor_config.json");
    char *vdir = NULL;
    dinoc_status s = DINOC_OK;
    if (!cfg_path || !pp_path) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    else if (!dinoc_is_dir(dir)) s = dinoc_fail(DINOC_ERR_IO, "%s: not a model folder", dir);
    else if (!dinoc_file_exists(cfg_path)) s = dinoc_fail(DINOC_ERR_IO, "%s: no config.json", dir);
    if (!s) s = dinoc_json_load(&root, cfg_path);
    const cJSON *mt = root ? cJSON_GetObjectItemCaseSensitive(root, "model_type") : NULL;
    if (!s && !(cJSON_IsString(mt) && strcmp(mt->valuestring, "clip") == 0))
        s = dinoc_fail(DINOC_ERR_UNSUPPORTED, "%s: model_type is not \"clip\" (a CLIPModel folder)", cfg_path);
    if (!s && !(m = calloc(1, sizeof *m))) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    /* the text tower and its projection: text_io.c reads text_config and text_model.* itself */
    if (!s) s = dinoc_text_model_load(&m->text, dir);
    if (!s && !m->text->cfg.proj_dim) s = dinoc_fail(DINOC_ERR_SHAPE, "%s: no text_projection.weight", dir);
    if (!s) s = dinoc_weights_open(&w, dir);
    const cJSON *vf = root ? cJSON_GetObjectItemCaseSensitive(root, "dinoc_vision_folder") : NULL;
    if (!s && vf) {
        /* LiT: the image tower is a DINO/DINOv2 HF folder of its own */
        if (!cJSON_IsString(vf) || strchr(vf->valuestring, '/') || strcmp(vf->valuestring, "..") == 0)
            s = dinoc_fail(DINOC_ERR_CONFIG, "%s: dinoc_vision_folder must name a subfolder", cfg_path);
        if (!s && !((m->vision_dir = strdup(vf->valuestring)) && (vdir = dinoc_path_join(dir, vf->valuestring))))
            s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        if (!s) s = dinoc_model_load(&m->vision, vdir, NULL);
    } else if (!s) {
        dinoc_vit_config vc;
        s = vision_config(&vc, cJSON_GetObjectItemCaseSensitive(root, "vision_config"), cfg_path);
        if (!s) s = load_vision(&m->vision, &vc, w, dir);
        if (!s) dinoc_clip_default_preprocess(&m->vision->pp, vc.image_size);
        if (!s && dinoc_file_exists(pp_path)) s = dinoc_preprocess_load(&m->vision->pp, pp_path);
    }
    if (!s) s = dinoc_clip_alloc_head(m, m->text->cfg.proj_dim);
    if (!s) s = head_tensor(w, dir, "visual_projection.weight", m->head, 2, m->embed_dim, m->vision->cfg.dim);
    if (!s) s = head_tensor(w, dir, "logit_scale", m->head + m->n_head - 1, 0, 0, 0);
    if (!s) {
        /* the tokenizer: the folder's HF files, else the OpenAI vocabulary */
        char  path[4096];
        char *vj = dinoc_path_join(dir, "vocab.json");
        if (!vj) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        else if (dinoc_file_exists(vj)) s = dinoc_tokenizer_load(&m->tok, dir);
        else if (!(s = dinoc_tokenizer_find_vocab(path, sizeof path, NULL))) s = dinoc_tokenizer_load(&m->tok, path);
        free(vj);
    }
    dinoc_weights_close(w);
    cJSON_Delete(root);
    free(cfg_path);
    free(pp_path);
    free(vdir);
    if (s) dinoc_clip_free(m);
    else *out = m;
    return s;
}

/* ---- saving ----------------------------------------------------------------------------------- */

static cJSON *config_json(const dinoc_clip *m) {
    const dinoc_text_config *t    = &m->text->cfg;
    const dinoc_vit_config  *v    = &m->vision->cfg;
    cJSON                   *root = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("CLIPModel"));
    cJSON_AddStringToObject(root, "model_type", "clip");
    cJSON_AddNumberToObject(root, "projection_dim", m->embed_dim);
    cJSON_AddNumberToObject(root, "logit_scale_init_value", 2.6592);
    cJSON *tc = cJSON_AddObjectToObject(root, "text_config");
    cJSON_AddStringToObject(tc, "model_type", "clip_text_model");
    cJSON_AddNumberToObject(tc, "vocab_size", t->vocab);
    cJSON_AddNumberToObject(tc, "hidden_size", t->dim);
    cJSON_AddNumberToObject(tc, "intermediate_size", t->ffn);
    cJSON_AddNumberToObject(tc, "num_hidden_layers", t->layers);
    cJSON_AddNumberToObject(tc, "num_attention_heads", t->heads);
    cJSON_AddNumberToObject(tc, "max_position_embeddings", t->max_pos);
    cJSON_AddStringToObject(tc, "hidden_act", t->act == DINOC_TEXT_QUICK_GELU ? "quick_gelu" : "gelu");
    cJSON_AddNumberToObject(tc, "layer_norm_eps", t->ln_eps);
    cJSON_AddNumberToObject(tc, "pad_token_id", t->pad_id);
    cJSON_AddNumberToObject(tc, "eos_token_id", t->eot_id < 0 ? 2 : t->eot_id);
    cJSON_AddNumberToObject(tc, "projection_dim", m->embed_dim);
    if (m->vision_dir) {
        cJSON_AddStringToObject(root, "dinoc_vision_folder", m->vision_dir);
    } else {
        cJSON *vc = cJSON_AddObjectToObject(root, "vision_config");
        cJSON_AddStringToObject(vc, "model_type", "clip_vision_model");
        cJSON_AddNumberToObject(vc, "hidden_size", v->dim);
        cJSON_AddNumberToObject(vc, "intermediate_size", v->ffn_hidden);
        cJSON_AddNumberToObject(vc, "num_hidden_layers", v->depth);
        cJSON_AddNumberToObject(vc, "num_attention_heads", v->heads);
        cJSON_AddNumberToObject(vc, "image_size", v->image_size);
        cJSON_AddNumberToObject(vc, "patch_size", v->patch);
        cJSON_AddNumberToObject(vc, "num_channels", v->channels);
        cJSON_AddStringToObject(vc, "hidden_act", v->ffn == DINOC_FFN_MLP_QUICK_GELU ? "quick_gelu" : "gelu");
        cJSON_AddNumberToObject(vc, "layer_norm_eps", v->ln_eps);
        cJSON_AddNumberToObject(vc, "projection_dim", m->embed_dim);
    }
    cJSON_AddStringToObject(root, "torch_dtype", "float32");
    return root;
}

/* One safetensors entry over a parameter view. */
static void to_tensor(dinoc_tensor *t, const char *name, int ndim, const int64_t *shape, const float *d) {
    int64_t numel = 1;
    memset(t, 0, sizeof *t);
    t->name  = name;
    t->dtype = DINOC_DTYPE_F32;
    t->ndim  = ndim;
    for (int k = 0; k < ndim; k++) numel *= (t->shape[k] = shape[k]);
    t->nbytes = (size_t)numel * sizeof(float);
    t->data   = d;
}

dinoc_status dinoc_clip_save(const dinoc_clip *m, const char *dir) {
    dinoc_status s = dinoc_mkdir(dir);
    if (s) return s;
    const int nt = dinoc_text_param_entries(m->text, NULL);
    const int nv = m->vision_dir ? 0 : dinoc_vit_param_entries(m->vision, DINOC_NAMES_HF, NULL);
    dinoc_param_entry *e  = calloc((size_t)(nt + nv), sizeof *e);
    dinoc_tensor      *ts = calloc((size_t)(nt + nv + 2), sizeof *ts);
    char             **nm = calloc((size_t)nv + 1, sizeof *nm);
    char *st = dinoc_path_join(dir, "model.safetensors"), *cj = dinoc_path_join(dir, "config.json");
    char *pj = dinoc_path_join(dir, "preprocessor_config.json"), *vd = NULL, *txt = NULL;
    cJSON *root = NULL;
    if (!e || !ts || !nm || !st || !cj || !pj) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    dinoc_text_param_entries(m->text, e);
    if (nv) dinoc_vit_param_entries(m->vision, DINOC_NAMES_HF, e + nt);
    for (int i = 0; i < nt + nv; i++) {
        const char *name = e[i].name;
        if (i >= nt) { /* the vision tower's names take the CLIPModel prefix */
            size_t len = strlen(e[i].name) + 16;
            if (!(nm[i - nt] = malloc(len))) {
                s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
                goto done;
            }
            snprintf(nm[i - nt], len, "vision_model.%s", e[i].name);
            name = nm[i - nt];
        }
        to_tensor(&ts[i], name, e[i].ndim, e[i].shape, e[i].data);
    }
    const int64_t vp[2] = {m->embed_dim, m->vision->cfg.dim};
    to_tensor(&ts[nt + nv], "visual_projection.weight", 2, vp, m->head);
    to_tensor(&ts[nt + nv + 1], "logit_scale", 0, vp, m->head + m->n_head - 1);
    static const char *meta[] = {"format", "pt", NULL};
    if ((s = dinoc_safetensors_write(st, ts, nt + nv + 2, meta))) goto done;
    if (m->vision_dir) {
        if (!(vd = dinoc_path_join(dir, m->vision_dir))) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        if (!s) s = dinoc_model_save_hf(m->vision, vd);
    } else {
        s = dinoc_preprocess_save(&m->vision->pp, pj, "CLIPImageProcessor");
    }
    if (s) goto done;
    root = config_json(m);
    txt  = root ? cJSON_Print(root) : NULL;
    s    = txt ? dinoc_write_file_atomic(cj, txt, strlen(txt)) : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
done:
    for (int i = 0; nm && i < nv; i++) free(nm[i]);
    free(nm);
    free(e);
    free(ts);
    free(st);
    free(cj);
    free(pj);
    free(vd);
    free(txt);
    cJSON_Delete(root);
    return s;
}
