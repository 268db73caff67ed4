/* cmd_zeroshot.c: `dinoc zeroshot -m MODEL (--classes FILE | --labels "a,b,c") IMAGE|DIR...`
 *
 * Zero-shot classification with a CLIP model (reference clip_mlm_and_c_peers.md A.9): each class
 * name is put into every prompt template (the 80 ImageNet templates by default, --simple for the 7
 * of open_clip's SIMPLE_IMAGENET_TEMPLATES, --templates FILE for one template per line with "{}"),
 * the texts are encoded, normalised, averaged and renormalised (the prompt ensemble), and each
 * image gets softmax(logit_scale * cosine) over the classes; the top k are printed (--json: one
 * object). Exit codes: 0 ok, 1 runtime error, 2 usage error. Tested by
 * tests/cli_clip_eval_test.sh; the library side is src/eval/zeroshot.c. */
#include "cli.h"
#include "../src/eval/clip_eval.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void on_progress(void *user, int64_t done, int64_t total) {
    cli_progress_update(user, (long)done, (long)total, done == total);
}

/* Softmax of one row of logits into probs (max-subtracted, double sums). */
static void softmax_row(float *probs, const float *z, int K) {
    float mx = z[0];
    for (int k = 1; k < K; k++) mx = z[k] > mx ? z[k] : mx;
    double sum = 0;
    for (int k = 0; k < K; k++) sum += exp((double)z[k] - mx);
    for (int k = 0; k < K; k++) probs[k] = (float)(exp((double)z[k] - mx) / sum);
}

static void print_results(int json, char **paths, int n, const dinoc_strlist *cls, const float *logits,
                          const int32_t *top, int k, float scale, int T) {
    const int K     = (int)cls->n;
    float    *probs = malloc(sizeof(float) * K);
    cJSON    *root = json ? cJSON_CreateObject() : NULL, *arr = json ? cJSON_AddArrayToObject(root, "results") : NULL;
    for (int i = 0; probs && i < n; i++) {
        const float *z = logits + (size_t)i * K;
        softmax_row(probs, z, K);
        cJSON *item = json ? cJSON_CreateObject() : NULL, *best = NULL;
        if (json) {
            cJSON_AddStringToObject(item, "image", paths[i]);
            best = cJSON_AddArrayToObject(item, "top");
            cJSON_AddItemToArray(arr, item);
        } else {
            printf("%s\n", paths[i]);
        }
        for (int j = 0; j < k; j++) {
            const int c = top[(size_t)i * k + j];
            if (json) {
                cJSON *e = cJSON_CreateObject();
                cJSON_AddStringToObject(e, "label", cls->s[c]);
                cJSON_AddNumberToObject(e, "prob", probs[c]);
                cJSON_AddNumberToObject(e, "cosine", z[c] / scale);
                cJSON_AddItemToArray(best, e);
            } else {
                printf("  %2d. %-30s %6.2f%%  (cosine %.4f)\n", j + 1, cls->s[c], 100.0 * probs[c], z[c] / scale);
            }
        }
    }
    if (json) {
        cJSON_AddNumberToObject(root, "classes", K);
        cJSON_AddNumberToObject(root, "templates", T);
        cJSON_AddNumberToObject(root, "logit_scale", scale);
        char *txt = cJSON_PrintUnformatted(root);
        if (txt) printf("%s\n", txt);
        free(txt);
        cJSON_Delete(root);
    }
    free(probs);
}

int cmd_zeroshot(int argc, char **argv) {
    const char    *model = NULL, *classes = NULL, *labels = NULL, *templates = NULL;
    int            simple = 0, k = 5, batch = 16, threads = 0, json = 0, quiet = 0;
    const opt_spec opts[] = {
        {"model", 'm', OPT_STR, &model, "CLIP model folder (Hugging Face CLIPModel layout)"},
        {"classes", 'c', OPT_STR, &classes, "file of class names, one per line"},
        {"labels", 'l', OPT_STR, &labels, "class names, comma separated (instead of --classes)"},
        {"templates", 0, OPT_STR, &templates, "prompt templates, one per line with {} (default: the 80 ImageNet ones)"},
        {"simple", 0, OPT_FLAG, &simple, "use the 7 SIMPLE_IMAGENET_TEMPLATES instead of the 80"},
        {"top", 'k', OPT_INT, &k, "classes to print per image"},
        {"batch", 'b', OPT_INT, &batch, "images per forward"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"quiet", 'q', OPT_FLAG, &quiet, "no progress on stderr"},
        {"json", 0, OPT_FLAG, &json, "print one JSON object on stdout"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc zeroshot -m MODEL (--classes FILE | --labels \"a,b,c\") [options] IMAGE|DIR...";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    if (rc) {
        free(pos);
        return rc == 1 ? 0 : 2;
    }
    if (!model || !npos || !classes == !labels || k < 1 || batch < 1 || (simple && templates)) {
        fprintf(stderr, "error: zeroshot needs --model, exactly one of --classes / --labels, at least one image, "
                        "--top and --batch >= 1, and not both --simple and --templates\n%s\n", use);
        free(pos);
        return 2;
    }
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    dinoc_clip   *m = NULL;
    dinoc_strlist cls = {0}, tmpl = {0};
    char        **paths = NULL;
    int           n = 0;
    float        *W = NULL, *emb = NULL, *logits = NULL;
    int32_t      *top = NULL;
    dinoc_status  s;
    if ((s = classes ? dinoc_lines_load(&cls, classes, "class names") : dinoc_split_list(&cls, labels)) ||
        (s = dinoc_templates_choose(&tmpl, templates, simple)))
        goto done;
    if (cls.n < 2) {
        s = dinoc_fail(DINOC_ERR_ARG, "zero-shot needs at least 2 classes (got %lld)", (long long)cls.n);
        goto done;
    }
    if (cli_collect_images(pos, npos, &paths, &n) || n == 0) {
        s = dinoc_fail(DINOC_ERR_IO, "no images found among the %d input(s)", npos);
        goto done;
    }
    if ((s = dinoc_clip_load(&m, model))) goto done;
    const int   P = dinoc_clip_embed_dim(m), K = (int)cls.n;
    const float scale = dinoc_clip_logit_scale(m);
    if (k > K) k = K;
    W = malloc(sizeof(float) * (size_t)K * P), emb = malloc(sizeof(float) * (size_t)n * P);
    logits = malloc(sizeof(float) * (size_t)n * K), top = malloc(sizeof(int32_t) * (size_t)n * k);
    if (!W || !emb || !logits || !top) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((s = dinoc_zeroshot_weights(m, cls.s, K, (const char *const *)tmpl.s, (int)tmpl.n, W))) goto done;
    cli_progress p;
    cli_progress_start(&p, "images");
    if ((s = dinoc_clip_embed_paths(m, paths, n, batch, emb, quiet ? NULL : on_progress, &p))) goto done;
    if ((s = dinoc_zeroshot_logits(logits, emb, W, n, K, P, scale))) goto done;
    dinoc_topk_rows(top, logits, n, K, k);
    print_results(json, paths, n, &cls, logits, top, k, scale, (int)tmpl.n);
done:
    dinoc_clip_free(m);
    dinoc_strlist_free(&cls), dinoc_strlist_free(&tmpl);
    cli_free_list(paths, n);
    free(pos), free(W), free(emb), free(logits), free(top);
    return s ? cli_fail("zeroshot", s) : 0;
}
