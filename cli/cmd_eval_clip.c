/* cmd_eval_clip.c: the CLIP evaluations of `dinoc eval` (dispatched from cmd_eval.c).
 *   eval zeroshot  -m MODEL --data D   top-1 / top-5 of zero-shot classification with the prompt
 *                                      ensemble (reference A.9); per-class accuracy in --json
 *   eval retrieval -m MODEL --data D   recall at 1/5/10 text->image and image->text (A.10) on a
 *                  | --index FILE      pairs file; or on an index built with --pairs (no model)
 *   eval fewshot   -m MODEL --data D   k-shot accuracy (class prototypes and a linear probe, mean
 *                                      and std over seeds) on CLIP image features or, for a ViT
 *                                      (DINO, DINOv2), its normed CLS features
 * Data (zeroshot, fewshot with CLIP): a labels file "path<TAB>label", a folder holding labels.tsv,
 * a shapes root (its test/ or train/ split), a folder of class subfolders (or train/ and test/
 * ones), or fashion-mnist. Retrieval: a pairs file, a folder holding pairs.tsv, or a shapes root
 * (test/pairs.tsv). Results on stdout (--json: one object), progress on stderr. Exit codes: 0 ok,
 * 1 runtime error, 2 usage error. Tested by tests/cli_clip_eval_test.sh. */
#include "cli.h"
#include "../src/eval/clip_eval.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void on_progress(void *user, int64_t done, int64_t total) {
    cli_progress_update(user, (long)done, (long)total, done == total);
}

/* Parses argv; returns -1 to go on, else the exit code (0 after --help, 2 on a usage error). */
static int parse(int argc, char **argv, const opt_spec *opts, const char *use) {
    char **pos = calloc((size_t)argc + 1, sizeof(char *));
    int    npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    free(pos);
    if (rc) return rc == 1 ? 0 : 2;
    if (npos) {
        fprintf(stderr, "error: no positional arguments expected\n%s\n", use);
        return 2;
    }
    return -1;
}

static void print_json(cJSON *root) {
    char *txt = cJSON_PrintUnformatted(root);
    if (txt) printf("%s\n", txt);
    free(txt);
    cJSON_Delete(root);
}

/* The images of a set embedded by a CLIP model (the first `limit` if > 0). */
static dinoc_status embed_set(const dinoc_clip *m, const dinoc_clip_set *set, int64_t limit, int batch, int quiet,
                              const char *label, float **out, int64_t *n) {
    *n = limit > 0 && limit < set->n ? limit : set->n;
    if (!(*out = malloc(sizeof(float) * (size_t)*n * dinoc_clip_embed_dim(m))))
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory (%lld embeddings)", (long long)*n);
    cli_progress p;
    cli_progress_start(&p, label);
    return dinoc_clip_set_embed(m, set, *n, batch, *out, quiet ? NULL : on_progress, &p);
}

/* ---- eval zeroshot ------------------------------------------------------------------------------- */

static int eval_zeroshot(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *data_dir = NULL, *classes = NULL, *templates = NULL;
    int         simple = 0, train = 0, limit = 0, batch = 16, threads = 0, quiet = 0, json = 0;
    const opt_spec opts[] = {
        {"model", 'm', OPT_STR, &model, "CLIP model folder"},
        {"data", 'd', OPT_STR, &data, "labels file, folder (labels.tsv, shapes root, class subfolders) or fashion-mnist"},
        {"data-dir", 0, OPT_STR, &data_dir, "Fashion-MNIST IDX folder (default: Debian's)"},
        {"classes", 'c', OPT_STR, &classes, "class names, one per line (default: the data's)"},
        {"templates", 0, OPT_STR, &templates, "prompt templates, one per line with {} (default: the 80 ImageNet ones)"},
        {"simple", 0, OPT_FLAG, &simple, "use the 7 SIMPLE_IMAGENET_TEMPLATES"},
        {"train-split", 0, OPT_FLAG, &train, "evaluate the train split of a split layout (default: test)"},
        {"limit", 0, OPT_INT, &limit, "use only the first N images (0: all)"},
        {"batch", 'b', OPT_INT, &batch, "images per forward"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"quiet", 'q', OPT_FLAG, &quiet, "no progress on stderr"},
        {"json", 0, OPT_FLAG, &json, "print one JSON object of metrics on stdout"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc eval zeroshot --model MODEL --data DATA [options]";
    int         rc  = parse(argc, argv, opts, use);
    if (rc >= 0) return rc;
    if (!model || !data || batch < 1 || limit < 0 || (simple && templates)) {
        fprintf(stderr, "error: eval zeroshot needs --model and --data, --batch >= 1, --limit >= 0, and not both "
                        "--simple and --templates\n%s\n", use);
        return 2;
    }
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    double         t0 = cli_now();
    dinoc_clip    *m  = NULL;
    dinoc_clip_set set = {0};
    dinoc_strlist  tmpl = {0};
    float         *W = NULL, *emb = NULL, *logits = NULL;
    double        *per = NULL, top1 = 0, top5 = 0;
    int64_t        n = 0;
    dinoc_status   s;
    if ((s = dinoc_templates_choose(&tmpl, templates, simple)) ||
        (s = dinoc_clip_set_open(&set, data, classes, data_dir, train)) || (s = dinoc_clip_load(&m, model)))
        goto done;
    const int P = dinoc_clip_embed_dim(m), K = (int)set.classes.n;
    W = malloc(sizeof(float) * (size_t)K * P), per = malloc(sizeof(double) * K);
    if (!W || !per) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((s = dinoc_zeroshot_weights(m, set.classes.s, K, (const char *const *)tmpl.s, (int)tmpl.n, W))) goto done;
    const double t1 = cli_now();
    if ((s = embed_set(m, &set, limit, batch, quiet, "images", &emb, &n))) goto done;
    if (!(logits = malloc(sizeof(float) * (size_t)n * K))) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((s = dinoc_zeroshot_logits(logits, emb, W, n, K, P, dinoc_clip_logit_scale(m))) ||
        (s = dinoc_topk_accuracy(logits, set.labels, n, K, &top1, &top5, per))) goto done;
    if (json) {
        cJSON *root = cJSON_CreateObject(), *pc = NULL;
        cJSON_AddNumberToObject(root, "top1", top1);
        cJSON_AddNumberToObject(root, "top5", top5);
        cJSON_AddNumberToObject(root, "n", (double)n);
        cJSON_AddNumberToObject(root, "classes", K);
        cJSON_AddNumberToObject(root, "templates", (double)tmpl.n);
        pc = cJSON_AddArrayToObject(root, "per_class");
        for (int k = 0; k < K; k++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "class", set.classes.s[k]);
            if (isnan(per[k])) cJSON_AddNullToObject(e, "top1");
            else cJSON_AddNumberToObject(e, "top1", per[k]);
            cJSON_AddItemToArray(pc, e);
        }
        cJSON_AddNumberToObject(root, "text_seconds", t1 - t0);
        cJSON_AddNumberToObject(root, "seconds", cli_now() - t0);
        print_json(root);
    } else {
        printf("zero-shot on %s: %lld images, %d classes, %lld templates\n", data, (long long)n, K, (long long)tmpl.n);
        for (int k = 0; k < K; k++)
            if (!isnan(per[k])) printf("  %-24s top-1 %6.2f%%\n", set.classes.s[k], 100 * per[k]);
        printf("top-1 %.2f%%  top-5 %.2f%%\n", 100 * top1, 100 * top5);
    }
done:
    dinoc_clip_free(m);
    dinoc_clip_set_free(&set);
    dinoc_strlist_free(&tmpl);
    free(W), free(emb), free(logits), free(per);
    return s ? cli_fail("eval zeroshot", s) : 0;
}

/* ---- eval retrieval ---------------------------------------------------------------------------- */

static int eval_retrieval(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *index = NULL, *save = NULL;
    int         train = 0, limit = 0, batch = 16, threads = 0, quiet = 0, json = 0;
    const opt_spec opts[] = {
        {"model", 'm', OPT_STR, &model, "CLIP model folder"},
        {"data", 'd', OPT_STR, &data, "pairs file image<TAB>caption, a folder holding pairs.tsv, or a shapes root"},
        {"index", 'i', OPT_STR, &index, "score an index built with --pairs instead (no model needed)"},
        {"save-index", 0, OPT_STR, &save, "also write the embeddings as an index file"},
        {"train-split", 0, OPT_FLAG, &train, "a shapes root's train split (default: test)"},
        {"limit", 0, OPT_INT, &limit, "use only the first N pairs (0: all)"},
        {"batch", 'b', OPT_INT, &batch, "images per forward"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"quiet", 'q', OPT_FLAG, &quiet, "no progress on stderr"},
        {"json", 0, OPT_FLAG, &json, "print one JSON object of metrics on stdout"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc eval retrieval (--model MODEL --data PAIRS | --index FILE) [options]";
    int         rc  = parse(argc, argv, opts, use);
    if (rc >= 0) return rc;
    if (!index == !(model && data) || (index && (model || data || save)) || batch < 1 || limit < 0) {
        fprintf(stderr, "error: eval retrieval needs either --model and --data, or --index alone\n%s\n", use);
        return 2;
    }
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    double           t0 = cli_now();
    dinoc_clip      *m  = NULL;
    dinoc_clip_index ix = {0};
    char            *pf = NULL;
    dinoc_status     s  = data ? dinoc_pairs_path(&pf, data, train) : DINOC_OK;
    dinoc_recall     r;
    const int        ks[3] = {1, 5, 10};
    cli_progress     p;
    cli_progress_start(&p, "images");
    if (!s && index) s = dinoc_clip_index_load(&ix, index);
    else if (!s && !(s = dinoc_clip_load(&m, model)))
        s = dinoc_clip_index_build(&ix, m, model, NULL, 0, pf, limit, batch, quiet ? NULL : on_progress, &p);
    if (!s && save) s = dinoc_clip_index_save(&ix, save);
    if (!s && (!ix.n_pairs || !ix.n_texts))
        s = dinoc_fail(DINOC_ERR_ARG, "%s holds no captions and pairs (build it with --pairs)", index);
    if (!s) s = dinoc_retrieval_recall(ix.image_embeds, ix.n_images, ix.text_embeds, ix.n_texts, ix.dim, ix.pairs,
                                       ix.n_pairs, ks, 3, &r);
    if (!s && json) {
        cJSON *root = cJSON_CreateObject(), *t2i = cJSON_AddObjectToObject(root, "text_to_image"),
              *i2t = cJSON_AddObjectToObject(root, "image_to_text");
        for (int j = 0; j < 3; j++) {
            char key[16];
            snprintf(key, sizeof key, "R@%d", ks[j]);
            cJSON_AddNumberToObject(t2i, key, r.t2i[j]);
            cJSON_AddNumberToObject(i2t, key, r.i2t[j]);
        }
        cJSON_AddNumberToObject(t2i, "mean_rank", r.t2i_mean_rank);
        cJSON_AddNumberToObject(i2t, "mean_rank", r.i2t_mean_rank);
        cJSON_AddNumberToObject(t2i, "queries", (double)r.t2i_queries);
        cJSON_AddNumberToObject(i2t, "queries", (double)r.i2t_queries);
        cJSON_AddNumberToObject(root, "images", (double)ix.n_images);
        cJSON_AddNumberToObject(root, "texts", (double)ix.n_texts);
        cJSON_AddNumberToObject(root, "pairs", (double)ix.n_pairs);
        cJSON_AddNumberToObject(root, "seconds", cli_now() - t0);
        print_json(root);
    } else if (!s) {
        printf("retrieval on %s: %lld images, %lld distinct captions, %lld pairs\n", index ? index : pf,
               (long long)ix.n_images, (long long)ix.n_texts, (long long)ix.n_pairs);
        printf("text -> image: R@1 %6.2f%%  R@5 %6.2f%%  R@10 %6.2f%%  mean rank %.1f\n", 100 * r.t2i[0],
               100 * r.t2i[1], 100 * r.t2i[2], r.t2i_mean_rank);
        printf("image -> text: R@1 %6.2f%%  R@5 %6.2f%%  R@10 %6.2f%%  mean rank %.1f\n", 100 * r.i2t[0],
               100 * r.i2t[1], 100 * r.i2t[2], r.i2t_mean_rank);
    }
    dinoc_clip_index_free(&ix);
    dinoc_clip_free(m);
    free(pf);
    return s ? cli_fail("eval retrieval", s) : 0;
}

/* ---- eval fewshot ------------------------------------------------------------------------------ */

/* 1 for fashion-mnist and folders holding train/ and test/. */
static int has_splits(const char *data) {
    if (!strcmp(data, "fashion-mnist")) return 1;
    char *tr = dinoc_path_join(data, "train"), *te = dinoc_path_join(data, "test");
    int   yes = tr && te && dinoc_is_dir(tr) && dinoc_is_dir(te);
    free(tr), free(te);
    return yes;
}

/* 1 if dir/config.json says model_type "clip". */
static int is_clip_folder(const char *dir) {
    char  *cfg = dinoc_path_join(dir, "config.json");
    cJSON *root = NULL;
    int    yes  = cfg && dinoc_file_exists(cfg) && dinoc_json_load(&root, cfg) == DINOC_OK;
    const cJSON *mt = yes ? cJSON_GetObjectItemCaseSensitive(root, "model_type") : NULL;
    yes             = cJSON_IsString(mt) && strcmp(mt->valuestring, "clip") == 0;
    cJSON_Delete(root);
    free(cfg);
    return yes;
}

typedef struct {
    float   *x;
    int32_t *y;
    int64_t  n;
    int      dim;
    dinoc_strlist classes;
} feats;

static void feats_free(feats *f) {
    free(f->x), free(f->y);
    dinoc_strlist_free(&f->classes);
}

/* CLIP image features and labels of one split. */
static dinoc_status clip_feats(const dinoc_clip *m, const char *data, const char *data_dir, int train, int64_t limit,
                               int batch, int quiet, feats *f) {
    dinoc_clip_set set;
    dinoc_status   s = dinoc_clip_set_open(&set, data, NULL, data_dir, train);
    if (!s) s = embed_set(m, &set, limit, batch, quiet, train ? "pool images" : "test images", &f->x, &f->n);
    if (!s && !(f->y = malloc(sizeof(int32_t) * (size_t)f->n))) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    if (!s) {
        memcpy(f->y, set.labels, sizeof(int32_t) * (size_t)f->n);
        f->classes = set.classes, set.classes = (dinoc_strlist){0};
        f->dim     = dinoc_clip_embed_dim(m);
    }
    dinoc_clip_set_free(&set);
    return s;
}

/* ViT features (normed CLS) of one split: fashion-mnist or DIR/<split> class folders. */
static dinoc_status vit_feats(const dinoc_model *m, const char *data, const char *data_dir, int train, int64_t limit,
                              int batch, int quiet, feats *f) {
    dinoc_dataset *ds = NULL;
    dinoc_status   s;
    if (!strcmp(data, "fashion-mnist")) {
        s = dinoc_dataset_idx_open(&ds, data_dir, train);
    } else {
        char *sub = dinoc_path_join(data, train ? "train" : "test");
        s = !sub ? DINOC_ERR_NOMEM : dinoc_is_dir(sub) ? dinoc_dataset_folder_open(&ds, sub)
                 : dinoc_fail(DINOC_ERR_ARG, "%s: no such folder (a ViT's few-shot data needs train/ and test/ class "
                                             "subfolders, or fashion-mnist)", sub);
        free(sub);
    }
    cli_progress p;
    cli_progress_start(&p, train ? "pool features" : "test features");
    const dinoc_feature_spec spec = {1, 0};
    if (!s) s = dinoc_extract_features(m, ds, spec, batch, limit, &f->x, &f->y, &f->dim, quiet ? NULL : on_progress, &p);
    if (!s) f->n = limit > 0 && limit < dinoc_dataset_size(ds) ? limit : dinoc_dataset_size(ds);
    for (int k = 0; !s && k < dinoc_dataset_num_classes(ds); k++)
        s = dinoc_strlist_push(&f->classes, dinoc_dataset_class_name(ds, k));
    dinoc_dataset_free(ds);
    return s;
}

/* Relabels the pool onto the test classes by name; pool rows of other classes are dropped. */
static dinoc_status align_classes(feats *pool, const feats *test) {
    int32_t *map = malloc(sizeof(int32_t) * (size_t)(pool->classes.n ? pool->classes.n : 1));
    if (!map) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    for (int64_t k = 0; k < pool->classes.n; k++) {
        map[k] = -1;
        for (int64_t j = 0; j < test->classes.n; j++)
            if (!strcmp(pool->classes.s[k], test->classes.s[j])) map[k] = (int32_t)j;
    }
    int64_t n = 0;
    for (int64_t i = 0; i < pool->n; i++)
        if (pool->y[i] >= 0 && map[pool->y[i]] >= 0) {
            memmove(pool->x + (size_t)n * pool->dim, pool->x + (size_t)i * pool->dim, sizeof(float) * pool->dim);
            pool->y[n++] = map[pool->y[i]];
        }
    pool->n = n;
    dinoc_status s = DINOC_OK;
    for (int64_t j = 0; j < test->classes.n && !s; j++) {
        int found = 0;
        for (int64_t k = 0; k < pool->classes.n; k++) found |= map[k] == j;
        if (!found)
            s = dinoc_fail(DINOC_ERR_ARG, "class '%s' of the test split is absent from the train split (held-out "
                                          "classes, as in the shapes set? use --same-split)", test->classes.s[j]);
    }
    free(map);
    return s;
}

static int eval_fewshot(int argc, char **argv) {
    dinoc_fewshot_config c = dinoc_fewshot_default(5);
    const char *model = NULL, *data = NULL, *data_dir = NULL;
    int         seed = 0, same = 0, limit_pool = 0, limit_test = 0, batch = 16, threads = 0, quiet = 0, json = 0;
    const opt_spec opts[] = {
        {"model", 'm', OPT_STR, &model, "CLIP model folder, or any ViT model dinoc_model_load accepts"},
        {"data", 'd', OPT_STR, &data, "fashion-mnist, a folder with train/ and test/ (class folders; CLIP also "
                                      "labels.tsv), or (CLIP, --same-split) one labelled set"},
        {"data-dir", 0, OPT_STR, &data_dir, "Fashion-MNIST IDX folder (default: Debian's)"},
        {"shots", 'k', OPT_INT, &c.shots, "labelled images per class"},
        {"seeds", 0, OPT_INT, &c.n_seeds, "draws of the shots (mean and std over them)"},
        {"seed", 0, OPT_INT, &seed, "first seed"},
        {"same-split", 0, OPT_FLAG, &same, "draw the shots from the test split and score the rest of it"},
        {"no-probe", 0, OPT_FLAG, &c.no_probe, "class prototypes only"},
        {"epochs", 'e', OPT_INT, &c.probe.epochs, "linear probe epochs"},
        {"limit-pool", 0, OPT_INT, &limit_pool, "use only the first N train images (0: all)"},
        {"limit-test", 0, OPT_INT, &limit_test, "use only the first N test images (0: all)"},
        {"batch", 'b', OPT_INT, &batch, "images per forward"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"quiet", 'q', OPT_FLAG, &quiet, "no progress on stderr"},
        {"json", 0, OPT_FLAG, &json, "print one JSON object of metrics on stdout"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc eval fewshot --model MODEL --data DATA [--shots K] [options]";
    int         rc  = parse(argc, argv, opts, use);
    if (rc >= 0) return rc;
    if (!model || !data || c.shots < 1 || c.n_seeds < 1 || c.probe.epochs < 1 || seed < 0 || batch < 1 ||
        limit_pool < 0 || limit_test < 0) {
        fprintf(stderr, "error: eval fewshot needs --model and --data; --shots, --seeds, --epochs, --batch >= 1; "
                        "--seed, --limit-* >= 0\n%s\n", use);
        return 2;
    }
    c.seed = (uint64_t)seed;
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    double               t0 = cli_now();
    dinoc_clip          *cm = NULL;
    dinoc_model         *vm = NULL;
    feats                pool = {0}, test = {0};
    dinoc_fewshot_result res = {0};
    const int            clip = dinoc_is_dir(model) && is_clip_folder(model);
    dinoc_status         s    = DINOC_OK;
    if (!same && !has_splits(data)) /* else the shots would be drawn from the very rows scored */
        s = dinoc_fail(DINOC_ERR_ARG, "%s has no train/ and test/ splits: use --same-split", data);
    else if (clip) {
        if (!(s = dinoc_clip_load(&cm, model)) &&
            !(s = clip_feats(cm, data, data_dir, 0, limit_test, batch, quiet, &test)) && !same)
            s = clip_feats(cm, data, data_dir, 1, limit_pool, batch, quiet, &pool);
    } else if (same) {
        s = dinoc_fail(DINOC_ERR_ARG, "--same-split is for CLIP models (a ViT reads train/ and test/ splits)");
    } else if (!(s = dinoc_model_load(&vm, model, NULL)) &&
               !(s = vit_feats(vm, data, data_dir, 0, limit_test, batch, quiet, &test))) {
        s = vit_feats(vm, data, data_dir, 1, limit_pool, batch, quiet, &pool);
    }
    if (!s && !same) s = align_classes(&pool, &test);
    const double t1 = cli_now();
    const int    K = (int)test.classes.n;
    if (!s) s = same ? dinoc_fewshot_eval(test.x, test.y, test.n, NULL, NULL, 0, test.dim, K, &c, &res)
                     : dinoc_fewshot_eval(pool.x, pool.y, pool.n, test.x, test.y, test.n, test.dim, K, &c, &res);
    if (!s && json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddNumberToObject(root, "shots", c.shots);
        cJSON_AddNumberToObject(root, "seeds", c.n_seeds);
        cJSON_AddNumberToObject(root, "proto_top1", res.proto_mean);
        cJSON_AddNumberToObject(root, "proto_std", res.proto_std);
        if (!c.no_probe) {
            cJSON_AddNumberToObject(root, "probe_top1", res.probe_mean);
            cJSON_AddNumberToObject(root, "probe_std", res.probe_std);
        }
        cJSON_AddItemToObject(root, "proto_by_seed", cJSON_CreateDoubleArray(res.proto_by_seed, c.n_seeds));
        if (!c.no_probe) cJSON_AddItemToObject(root, "probe_by_seed", cJSON_CreateDoubleArray(res.probe_by_seed, c.n_seeds));
        cJSON_AddStringToObject(root, "features", clip ? "clip" : "vit-cls");
        cJSON_AddNumberToObject(root, "dim", test.dim);
        cJSON_AddNumberToObject(root, "classes", K);
        cJSON_AddNumberToObject(root, "n_pool", (double)(same ? test.n : pool.n));
        cJSON_AddNumberToObject(root, "n_test", (double)test.n);
        cJSON_AddBoolToObject(root, "same_split", same);
        cJSON_AddNumberToObject(root, "features_seconds", t1 - t0);
        cJSON_AddNumberToObject(root, "seconds", cli_now() - t0);
        print_json(root);
    } else if (!s) {
        printf("%d-shot on %s: %d classes, %s features %d wide, %d draws\n", c.shots, data, K,
               clip ? "CLIP image" : "ViT CLS", test.dim, c.n_seeds);
        printf("prototypes:   top-1 %6.2f%% +- %.2f\n", 100 * res.proto_mean, 100 * res.proto_std);
        if (!c.no_probe) printf("linear probe: top-1 %6.2f%% +- %.2f\n", 100 * res.probe_mean, 100 * res.probe_std);
    }
    free(res.proto_by_seed), free(res.probe_by_seed);
    feats_free(&pool), feats_free(&test);
    dinoc_clip_free(cm);
    dinoc_model_free(vm);
    return s ? cli_fail("eval fewshot", s) : 0;
}

int cmd_eval_clip(const char *sub, int argc, char **argv) {
    if (!strcmp(sub, "zeroshot")) return eval_zeroshot(argc, argv);
    if (!strcmp(sub, "retrieval")) return eval_retrieval(argc, argv);
    return eval_fewshot(argc, argv);
}
