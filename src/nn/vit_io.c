/* vit_io.c: ViT models from and to Hugging Face folders (config.json + model.safetensors or a
 * sharded index + preprocessor_config.json).
 *
 * model_type "dinov2", "dinov2_with_registers" and "vit" (the DINO v1 checkpoints) are read by their
 * published tensor names; safetensors files under the original repos' names (blocks.0.attn.qkv.*,
 * as in the DINOv2 hub .pth files) are recognised too. Choices written down here and in
 * docs/design.md:
 * - layer_norm_eps comes from config.json as Hugging Face uses it (1e-12 in the DINO v1 configs,
 *   where the original code used 1e-6; the difference is below float resolution for real inputs).
 * - Position-embedding interpolation defaults to what the HF class of that model_type does today:
 *   size-mode bicubic for dinov2 and vit, antialiased size-mode for dinov2_with_registers; the
 *   original repos' "+0.1 offset" form is DINOC_POS_INTERP_OFFSET (dinoc_load_params / --interp).
 * - Unknown config.json keys are an error (strict) unless params->strict_config = 0; keys that every
 *   HF config carries (architectures, torch_dtype, label maps, ...) are known and ignored.
 * Tested by tests/test_vit.c on folders written by tests/py/gen_vit.py. */
#include "vit.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

dinoc_load_params dinoc_load_default_params(void) {
    dinoc_load_params p;
    memset(&p, 0, sizeof p);
    p.strict_config = 1;
    return p;
}

/* Keys of PretrainedConfig and of the three config classes that do not change the encoder's math
 * (dropouts and init ranges only matter for training; out_features etc. for the Backbone class). */
static const char *k_ignored_keys[] = {
    "architectures", "torch_dtype", "dtype", "transformers_version", "_name_or_path", "_commit_hash",
    "id2label", "label2id", "num_labels", "problem_type", "return_dict", "output_hidden_states",
    "output_attentions", "torchscript", "use_bfloat16", "pruned_heads", "tie_word_embeddings",
    "is_encoder_decoder", "is_decoder", "add_cross_attention", "chunk_size_feed_forward",
    "tf_padding", "finetuning_task", "tokenizer_class", "prefix", "bos_token_id", "pad_token_id",
    "eos_token_id", "sep_token_id", "decoder_start_token_id", "task_specific_params",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "drop_path_rate",
    "out_features", "out_indices", "stage_names", "apply_layernorm", "reshape_hidden_states",
    "encoder_stride", "pooler_output_size", "pooler_act", "model_type", "cross_attention_hidden_size",
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
    "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens", "_attn_implementation_autoset", NULL};

static const char *k_used_keys[] = {
    "hidden_size", "num_hidden_layers", "num_attention_heads", "mlp_ratio", "intermediate_size",
    "hidden_act", "layer_norm_eps", "image_size", "patch_size", "num_channels", "qkv_bias",
    "layerscale_value", "use_swiglu_ffn", "num_register_tokens", "use_mask_token", NULL};

static int in_list(const char *k, const char **list) {
    for (int i = 0; list[i]; i++)
        if (strcmp(k, list[i]) == 0) return 1;
    return 0;
}

static dinoc_status get_int(const cJSON *root, const char *key, int required, int def, int *out,
                            const char *file) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it) {
        if (required) return dinoc_fail(DINOC_ERR_CONFIG, "%s: missing field '%s'", file, key);
        *out = def;
        return DINOC_OK;
    }
    double v = it->valuedouble;
    if (!cJSON_IsNumber(it) || v != floor(v) || v < -1e9 || v > 1e9)
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: field '%s' must be an integer", file, key);
    *out = (int)v;
    return DINOC_OK;
}

static dinoc_status get_num(const cJSON *root, const char *key, double def, double *out,
                            const char *file) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it) {
        *out = def;
        return DINOC_OK;
    }
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: field '%s' must be a number", file, key);
    *out = it->valuedouble;
    return DINOC_OK;
}

static dinoc_status get_bool(const cJSON *root, const char *key, int def, int *out, const char *file) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it) {
        *out = def;
        return DINOC_OK;
    }
    if (!cJSON_IsBool(it))
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: field '%s' must be true or false", file, key);
    *out = cJSON_IsTrue(it);
    return DINOC_OK;
}

/* Reads config.json into cfg. */
static dinoc_status parse_config(dinoc_vit_config *cfg, const char *file, int strict) {
    cJSON       *root = NULL;
    dinoc_status s    = dinoc_json_load(&root, file);
    if (s) return s;
    memset(cfg, 0, sizeof *cfg);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: not a JSON object", file);
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt)) {
        cJSON_Delete(root);
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: missing field 'model_type'", file);
    }
    if (strcmp(mt->valuestring, "dinov2") == 0)
        cfg->arch = DINOC_ARCH_DINOV2;
    else if (strcmp(mt->valuestring, "dinov2_with_registers") == 0)
        cfg->arch = DINOC_ARCH_DINOV2_REG;
    else if (strcmp(mt->valuestring, "vit") == 0)
        cfg->arch = DINOC_ARCH_VIT;
    else {
        s = dinoc_fail(DINOC_ERR_UNSUPPORTED,
                       "%s: model_type '%s' is not supported (dinov2, dinov2_with_registers, vit)",
                       file, mt->valuestring);
        cJSON_Delete(root);
        return s;
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        if (in_list(it->string, k_used_keys) || in_list(it->string, k_ignored_keys)) continue;
        if (strict) {
            s = dinoc_fail(DINOC_ERR_CONFIG,
                           "%s: unknown field '%s' (pass --lenient-config to ignore it)", file,
                           it->string);
            cJSON_Delete(root);
            return s;
        }
        dinoc_log(DINOC_LOG_WARN, "%s: ignoring unknown field '%s'", file, it->string);
    }
    const int dinov2 = cfg->arch != DINOC_ARCH_VIT;
    double    eps = 0, mlp_ratio = 4;
    int       use_swiglu = 0, use_mask = dinov2, inter = 0;
    if ((s = get_int(root, "hidden_size", 1, 0, &cfg->dim, file)) ||
        (s = get_int(root, "num_hidden_layers", 1, 0, &cfg->depth, file)) ||
        (s = get_int(root, "num_attention_heads", 1, 0, &cfg->heads, file)) ||
        (s = get_int(root, "patch_size", 1, 0, &cfg->patch, file)) ||
        (s = get_int(root, "image_size", 1, 0, &cfg->image_size, file)) ||
        (s = get_int(root, "num_channels", 0, 3, &cfg->channels, file)) ||
        (s = get_int(root, "num_register_tokens", 0, cfg->arch == DINOC_ARCH_DINOV2_REG ? 4 : 0,
                     &cfg->n_registers, file)) ||
        (s = get_num(root, "layer_norm_eps", dinov2 ? 1e-6 : 1e-12, &eps, file)) ||
        (s = get_num(root, "mlp_ratio", 4, &mlp_ratio, file)) ||
        (s = get_bool(root, "qkv_bias", 1, &cfg->qkv_bias, file)) ||
        (s = get_bool(root, "use_swiglu_ffn", 0, &use_swiglu, file)) ||
        (s = get_bool(root, "use_mask_token", use_mask, &use_mask, file)) ||
        (s = get_int(root, "intermediate_size", !dinov2, 0, &inter, file))) {
        cJSON_Delete(root);
        return s;
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && !(cJSON_IsString(act) && strcmp(act->valuestring, "gelu") == 0)) {
        s = dinoc_fail(DINOC_ERR_UNSUPPORTED, "%s: hidden_act %s is not supported (only \"gelu\")",
                       file, cJSON_IsString(act) ? act->valuestring : "(not a string)");
        cJSON_Delete(root);
        return s;
    }
    cJSON_Delete(root);
    if (dinov2) {
        /* range-check before the (int) conversions below: out-of-range double -> int is UB */
        double h = cfg->dim * mlp_ratio;
        if (!(h >= 1 && h <= (1 << 20)))
            return dinoc_fail(DINOC_ERR_CONFIG,
                              "%s: mlp_ratio %g x hidden_size %d = %g is not an FFN width in 1..%d",
                              file, mlp_ratio, cfg->dim, h, 1 << 20);
    }
    if (cfg->arch == DINOC_ARCH_DINOV2 && cfg->n_registers)
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: model_type dinov2 has no register tokens", file);
    if (cfg->arch == DINOC_ARCH_VIT && use_swiglu)
        return dinoc_fail(DINOC_ERR_CONFIG, "%s: use_swiglu_ffn is not a ViTModel field", file);
    if (!cfg->qkv_bias)
        return dinoc_fail(DINOC_ERR_UNSUPPORTED, "%s: qkv_bias false is not supported", file);
    cfg->ln_eps     = (float)eps;
    cfg->layerscale = dinov2;
    cfg->mask_token = use_mask;
    cfg->ffn        = use_swiglu ? DINOC_FFN_SWIGLU : DINOC_FFN_MLP;
    if (!dinov2)
        cfg->ffn_hidden = inter;
    else if (use_swiglu) {
        /* HF Dinov2SwiGLUFFN: int(D * mlp_ratio), then 2/3 of it rounded up to a multiple of 8 */
        int h           = (int)(cfg->dim * mlp_ratio);
        cfg->ffn_hidden = ((int)(h * 2 / 3.0) + 7) / 8 * 8;
    } else
        cfg->ffn_hidden = (int)(cfg->dim * mlp_ratio);
    cfg->pos_interp    = cfg->arch == DINOC_ARCH_DINOV2_REG ? DINOC_POS_INTERP_ANTIALIAS
                                                            : DINOC_POS_INTERP_SIZE;
    cfg->interp_offset = 0.0f;
    return dinoc_vit_config_check(cfg, file);
}

static int has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* Tensors that may sit in a published folder without being part of the encoder: the ViTModel
 * pooler and classification heads. They are skipped with a note. */
static int ignorable_tensor(const char *name) {
    return has_prefix(name, "pooler.") || has_prefix(name, "classifier.");
}

/* Checks every tensor of the files against the model's parameter list (names, shapes, nothing
 * missing, nothing unexpected) and, with copy = 1, converts them into the parameters. The check
 * runs first on a model whose views are NULL, so a config.json that asks for a huge model with
 * files that cannot fill it fails before anything is allocated. */
dinoc_status dinoc_vit_match_weights(dinoc_model *m, dinoc_weights *w, const char *where,
                                     const char *tower, int copy) {
    /* Which naming scheme, and is there a wrapper prefix ("dinov2." / "vit." in *ForImageClassification)? */
    const char *prefix = tower ? tower : "";
    dinoc_names names  = DINOC_NAMES_HF;
    if (tower)
        ; /* a tower of a larger model (CLIP's vision_model.): HF names under that prefix */
    else if (dinoc_weights_find(w, "blocks.0.attn.qkv.weight") || dinoc_weights_find(w, "blocks.0.norm1.weight"))
        names = DINOC_NAMES_ORIG;
    else if (dinoc_weights_find(w, "dinov2.embeddings.cls_token"))
        prefix = "dinov2.";
    else if (dinoc_weights_find(w, "vit.embeddings.cls_token"))
        prefix = "vit.";
    int                n = dinoc_vit_param_entries(m, names, NULL);
    dinoc_param_entry *e = calloc((size_t)n, sizeof *e);
    if (!e) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    dinoc_vit_param_entries(m, names, e);
    dinoc_status s = DINOC_OK;
    char         full[160];
    for (int i = 0; i < n && !s; i++) {
        snprintf(full, sizeof full, "%s%s", prefix, e[i].name);
        const dinoc_tensor *t = dinoc_weights_find(w, full);
        if (!t) {
            s = dinoc_fail(DINOC_ERR_SHAPE, "%s: missing tensor '%s'", where, full);
            break;
        }
        int same = t->ndim == e[i].ndim;
        for (int k = 0; same && k < t->ndim; k++) same = t->shape[k] == e[i].shape[k];
        if (!same) {
            char got[128] = "", want[128] = "";
            for (int k = 0; k < t->ndim; k++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", k ? "," : "",
                         (long long)t->shape[k]);
            for (int k = 0; k < e[i].ndim; k++)
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", k ? "," : "",
                         (long long)e[i].shape[k]);
            s = dinoc_fail(DINOC_ERR_SHAPE, "%s: tensor '%s' has shape [%s], expected [%s]",
                           dinoc_weights_file_of(w, t), full, got, want);
            break;
        }
        if (!copy) continue;
        int64_t numel = dinoc_tensor_numel(t);
        if ((s = dinoc_tensor_to_f32(t, e[i].data, numel)))
            s = dinoc_fail_prefix(s, "%s", dinoc_weights_file_of(w, t));
    }
    /* Every tensor in the files must have been consumed. */
    for (int j = 0; j < dinoc_weights_count(w) && !s && !copy; j++) {
        const char *nm = dinoc_weights_get(w, j)->name;
        const char *un = has_prefix(nm, prefix) ? nm + strlen(prefix) : nm;
        int         found = 0;
        for (int i = 0; i < n && !found; i++) found = has_prefix(nm, prefix) && strcmp(un, e[i].name) == 0;
        if (found || (tower && !has_prefix(nm, tower))) continue; /* the other towers' tensors */
        if (ignorable_tensor(un) || (tower && strstr(un, "position_ids"))) {
            dinoc_log(DINOC_LOG_INFO, "%s: skipping '%s' (not part of the encoder)", where, nm);
            continue;
        }
        s = dinoc_fail(DINOC_ERR_SHAPE, "%s: unexpected tensor '%s' (not in a %s model of this config)",
                       dinoc_weights_file_of(w, dinoc_weights_get(w, j)), nm,
                       m->cfg.arch == DINOC_ARCH_VIT ? "vit" : m->cfg.arch == DINOC_ARCH_CLIP ? "clip" : "dinov2");
    }
    free(e);
    return s;
}

dinoc_status dinoc_model_load(dinoc_model **out, const char *path, const dinoc_load_params *params) {
    *out                   = NULL;
    dinoc_load_params lp   = params ? *params : dinoc_load_default_params();
    char             *dir  = NULL;
    dinoc_status      s    = DINOC_OK;
    if (!dinoc_is_dir(path) && !dinoc_file_exists(path))
        return dinoc_fail(DINOC_ERR_IO, "%s: no such model folder or file", path);
    if (dinoc_is_dir(path))
        dir = strdup(path);
    else {
        dir         = strdup(path);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        if (slash)
            *slash = 0;
        else if (dir)
            strcpy(dir, ".");
    }
    if (!dir) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    char *cfg_path = dinoc_path_join(dir, "config.json");
    char *pp_path  = dinoc_path_join(dir, "preprocessor_config.json");
    dinoc_vit_config cfg;
    dinoc_weights   *w = NULL;
    dinoc_model     *m = NULL;
    if (!cfg_path || !pp_path) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (!dinoc_file_exists(cfg_path)) {
        s = dinoc_fail(DINOC_ERR_IO, "%s: no config.json (expected a Hugging Face model folder)", dir);
        goto done;
    }
    if ((s = parse_config(&cfg, cfg_path, lp.strict_config))) goto done;
    if (lp.set_pos_interp) {
        cfg.pos_interp    = lp.pos_interp;
        cfg.interp_offset = lp.pos_interp == DINOC_POS_INTERP_OFFSET ? 0.1f : 0.0f;
    }
    /* Open the weights and check names and shapes before allocating: the config alone must not
     * make us allocate (and zero) more than the files can fill. */
    if ((s = dinoc_weights_open(&w, dinoc_is_dir(path) ? dir : path))) goto done;
    {
        dinoc_model shadow;
        memset(&shadow, 0, sizeof shadow);
        shadow.cfg            = cfg;
        shadow.pos_m          = cfg.image_size / cfg.patch;
        shadow.blocks_storage = calloc((size_t)cfg.depth, sizeof(dinoc_block_params));
        if (!shadow.blocks_storage) {
            s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
            goto done;
        }
        shadow.p.blocks = shadow.blocks_storage;
        dinoc_vit_carve(&cfg, NULL, &shadow.p);
        s = dinoc_vit_match_weights(&shadow, w, path, NULL, 0);
        free(shadow.blocks_storage);
        if (s) goto done;
    }
    if ((s = dinoc_vit_alloc(&m, &cfg))) goto done;
    if (cfg.arch == DINOC_ARCH_VIT) {
        /* HF's ViTImageProcessor defaults: 224x224 bilinear, mean/std 0.5 unless the file says */
        m->pp              = dinoc_preprocess_default();
        m->pp.resize_mode  = DINOC_RESIZE_EXACT;
        m->pp.resize_w     = m->pp.resize_h = 224;
        m->pp.resample     = DINOC_RESAMPLE_BILINEAR;
        m->pp.do_center_crop = 0;
        for (int i = 0; i < 3; i++) m->pp.mean[i] = m->pp.std[i] = 0.5f;
    }
    if (dinoc_file_exists(pp_path) && (s = dinoc_preprocess_load(&m->pp, pp_path))) goto done;
    s = dinoc_vit_match_weights(m, w, path, NULL, 1);
    if (!s && lp.precision != DINOC_PRECISION_FP32) s = dinoc_model_set_precision(m, lp.precision);
done:
    dinoc_weights_close(w);
    if (s) {
        dinoc_model_free(m);
        m = NULL;
    }
    free(dir);
    free(cfg_path);
    free(pp_path);
    *out = m;
    return s;
}

/* ---- saving ----------------------------------------------------------------------------------- */

static dinoc_status write_json(const char *path, cJSON *root) {
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    if (!txt) return dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", path);
    dinoc_status s = dinoc_write_file_atomic(path, txt, strlen(txt));
    free(txt);
    return s;
}

static cJSON *config_json(const dinoc_model *m) {
    const dinoc_vit_config *c    = &m->cfg;
    cJSON                  *root = cJSON_CreateObject();
    const char *arch = c->arch == DINOC_ARCH_VIT ? "ViTModel"
                       : c->arch == DINOC_ARCH_DINOV2_REG ? "Dinov2WithRegistersModel" : "Dinov2Model";
    const char *type = c->arch == DINOC_ARCH_VIT ? "vit"
                       : c->arch == DINOC_ARCH_DINOV2_REG ? "dinov2_with_registers" : "dinov2";
    cJSON *archs = cJSON_AddArrayToObject(root, "architectures");
    cJSON_AddItemToArray(archs, cJSON_CreateString(arch));
    cJSON_AddStringToObject(root, "model_type", type);
    cJSON_AddNumberToObject(root, "hidden_size", c->dim);
    cJSON_AddNumberToObject(root, "num_hidden_layers", c->depth);
    cJSON_AddNumberToObject(root, "num_attention_heads", c->heads);
    if (c->arch == DINOC_ARCH_VIT) {
        cJSON_AddNumberToObject(root, "intermediate_size", c->ffn_hidden);
    } else {
        /* mlp_ratio reproduces ffn_hidden for MLPs; SwiGLU uses the standard ratio 4 */
        cJSON_AddNumberToObject(root, "mlp_ratio",
                                c->ffn == DINOC_FFN_SWIGLU ? 4.0 : (double)c->ffn_hidden / c->dim);
        cJSON_AddBoolToObject(root, "use_swiglu_ffn", c->ffn == DINOC_FFN_SWIGLU);
        cJSON_AddNumberToObject(root, "layerscale_value", 1.0);
        cJSON_AddBoolToObject(root, "use_mask_token", c->mask_token);
    }
    if (c->arch == DINOC_ARCH_DINOV2_REG) cJSON_AddNumberToObject(root, "num_register_tokens", c->n_registers);
    cJSON_AddStringToObject(root, "hidden_act", "gelu");
    cJSON_AddNumberToObject(root, "layer_norm_eps", c->ln_eps);
    cJSON_AddNumberToObject(root, "image_size", c->image_size);
    cJSON_AddNumberToObject(root, "patch_size", c->patch);
    cJSON_AddNumberToObject(root, "num_channels", c->channels);
    cJSON_AddBoolToObject(root, "qkv_bias", 1);
    cJSON_AddStringToObject(root, "torch_dtype", "float32");
    return root;
}

static cJSON *preprocess_json(const dinoc_preprocess *pp, const char *type) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddBoolToObject(root, "do_convert_rgb", pp->do_convert_rgb);
    cJSON_AddBoolToObject(root, "do_resize", pp->do_resize);
    cJSON *size = cJSON_AddObjectToObject(root, "size");
    if (pp->resize_mode == DINOC_RESIZE_SHORTEST_EDGE)
        cJSON_AddNumberToObject(size, "shortest_edge", pp->shortest_edge);
    else {
        cJSON_AddNumberToObject(size, "height", pp->resize_h);
        cJSON_AddNumberToObject(size, "width", pp->resize_w);
    }
    cJSON_AddNumberToObject(root, "resample", pp->resample);
    cJSON_AddBoolToObject(root, "do_center_crop", pp->do_center_crop);
    cJSON *crop = cJSON_AddObjectToObject(root, "crop_size");
    cJSON_AddNumberToObject(crop, "height", pp->crop_h);
    cJSON_AddNumberToObject(crop, "width", pp->crop_w);
    cJSON_AddBoolToObject(root, "do_rescale", pp->do_rescale);
    cJSON_AddNumberToObject(root, "rescale_factor", pp->rescale_factor);
    cJSON_AddBoolToObject(root, "do_normalize", pp->do_normalize);
    cJSON *mean = cJSON_AddArrayToObject(root, "image_mean");
    cJSON *std  = cJSON_AddArrayToObject(root, "image_std");
    for (int i = 0; i < 3; i++) {
        /* print the float's shortest decimal form rather than its double expansion */
        char buf[32];
        snprintf(buf, sizeof buf, "%.9g", pp->mean[i]);
        cJSON_AddItemToArray(mean, cJSON_CreateNumber(strtod(buf, NULL)));
        snprintf(buf, sizeof buf, "%.9g", pp->std[i]);
        cJSON_AddItemToArray(std, cJSON_CreateNumber(strtod(buf, NULL)));
    }
    cJSON_AddStringToObject(root, "image_processor_type",
                            type ? type : pp->do_center_crop ? "BitImageProcessor" : "ViTImageProcessor");
    return root;
}

dinoc_status dinoc_preprocess_save(const dinoc_preprocess *pp, const char *path, const char *type) {
    cJSON *root = preprocess_json(pp, type);
    return root ? write_json(path, root) : dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", path);
}

dinoc_status dinoc_model_save_hf(const dinoc_model *m, const char *dir) {
    if (m->cfg.arch == DINOC_ARCH_CLIP) /* its names only make sense inside a CLIPModel folder */
        return dinoc_fail(DINOC_ERR_UNSUPPORTED, "%s: a CLIP image tower is saved with its CLIP model "
                          "(dinoc_clip_save), not as a ViT folder", dir);
    dinoc_status s = dinoc_mkdir(dir);
    if (s) return s;
    int                n  = dinoc_vit_param_entries(m, DINOC_NAMES_HF, NULL);
    dinoc_param_entry *e  = calloc((size_t)n, sizeof *e);
    dinoc_tensor      *ts = calloc((size_t)n, sizeof *ts);
    char *st_path = dinoc_path_join(dir, "model.safetensors");
    char *cfg     = dinoc_path_join(dir, "config.json");
    char *ppj     = dinoc_path_join(dir, "preprocessor_config.json");
    if (!e || !ts || !st_path || !cfg || !ppj) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    dinoc_vit_param_entries(m, DINOC_NAMES_HF, e);
    for (int i = 0; i < n; i++) {
        int64_t numel = 1;
        ts[i].name    = e[i].name;
        ts[i].dtype   = DINOC_DTYPE_F32;
        ts[i].ndim    = e[i].ndim;
        for (int k = 0; k < e[i].ndim; k++) numel *= (ts[i].shape[k] = e[i].shape[k]);
        ts[i].nbytes = (size_t)numel * sizeof(float);
        ts[i].data   = e[i].data;
    }
    static const char *meta[] = {"format", "pt", NULL};
    if ((s = dinoc_safetensors_write(st_path, ts, n, meta))) goto done;
    if ((s = write_json(cfg, config_json(m)))) goto done;
    s = dinoc_preprocess_save(&m->pp, ppj, NULL);
done:
    free(e);
    free(ts);
    free(st_path);
    free(cfg);
    free(ppj);
    return s;
}
