/* cmd_retrieve.c: image-text retrieval over a saved CLIP embedding index.
 *   dinoc retrieve index -m MODEL -o INDEX (--pairs FILE | IMAGE|DIR...)
 *       embeds the images once (and, with a pairs file "image<TAB>caption", its distinct captions)
 *       into INDEX (safetensors, written atomically; src/eval/retrieval.c describes the layout)
 *   dinoc retrieve query -i INDEX -m MODEL [--image] [-k K] QUERY...
 *       text queries (default) -> the top K images; --image: image files -> the top K captions of
 *       the index (or images, with --target images or when the index has no captions)
 * The model is checked against the index (embedding width, and the embedding of a fixed probe text).
 * Results on stdout (--json: one object), progress on stderr. Exit codes: 0 ok, 1 runtime error,
 * 2 usage error. Tested by tests/cli_clip_eval_test.sh. */
#include "cli.h"
#include "../src/eval/clip_eval.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static void on_progress(void *user, int64_t done, int64_t total) {
    cli_progress_update(user, (long)done, (long)total, done == total);
}

static int retrieve_index(int argc, char **argv) {
    const char    *model = NULL, *out = NULL, *pairs = NULL;
    int            batch = 16, threads = 0, quiet = 0, limit = 0;
    const opt_spec opts[] = {
        {"model", 'm', OPT_STR, &model, "CLIP model folder"},
        {"output", 'o', OPT_STR, &out, "index file to write (.safetensors)"},
        {"pairs", 'p', OPT_STR, &pairs, "pairs file image<TAB>caption, a folder holding pairs.tsv, or a shapes root (test/)"},
        {"limit", 0, OPT_INT, &limit, "read only the first N rows of the pairs file (0: all)"},
        {"batch", 'b', OPT_INT, &batch, "images per forward"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"quiet", 'q', OPT_FLAG, &quiet, "no progress on stderr"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc retrieve index -m MODEL -o INDEX (--pairs FILE | IMAGE|DIR...)";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    if (rc || !model || !out || !npos == !pairs || batch < 1 || limit < 0) {
        if (!rc) fprintf(stderr, "error: retrieve index needs --model, --output, and either --pairs or images\n%s\n", use);
        free(pos);
        return rc == 1 ? 0 : 2;
    }
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    dinoc_clip      *m = NULL;
    dinoc_clip_index ix = {0};
    char           **paths = NULL, *pfile = NULL;
    int              n = 0;
    dinoc_status     s = DINOC_OK;
    if (pairs) s = dinoc_pairs_path(&pfile, pairs, 0);
    if (!s && !pairs && (cli_collect_images(pos, npos, &paths, &n) || n == 0))
        s = dinoc_fail(DINOC_ERR_IO, "no images found among the %d input(s)", npos);
    double       t0 = cli_now();
    cli_progress p;
    cli_progress_start(&p, "images");
    if (!s && !(s = dinoc_clip_load(&m, model)) &&
        !(s = dinoc_clip_index_build(&ix, m, model, paths, n, pfile, limit, batch,
                                     quiet ? NULL : on_progress, &p)) &&
        !(s = dinoc_clip_index_save(&ix, out)))
        printf("indexed %lld images, %lld captions, %lld pairs (%d-dim) in %.1f s -> %s\n", (long long)ix.n_images,
               (long long)ix.n_texts, (long long)ix.n_pairs, ix.dim, cli_now() - t0, out);
    dinoc_clip_index_free(&ix);
    dinoc_clip_free(m);
    cli_free_list(paths, n);
    free(pos), free(pfile);
    return s ? cli_fail("retrieve index", s) : 0;
}

static void print_hits(cJSON *arr, const char *query, const int32_t *idx, const float *sc, int k,
                       const dinoc_strlist *names) {
    cJSON *q = arr ? cJSON_CreateObject() : NULL, *hits = NULL;
    if (q) {
        cJSON_AddStringToObject(q, "query", query);
        hits = cJSON_AddArrayToObject(q, "hits");
        cJSON_AddItemToArray(arr, q);
    } else {
        printf("%s\n", query);
    }
    for (int j = 0; j < k; j++) {
        if (q) {
            cJSON *h = cJSON_CreateObject();
            cJSON_AddNumberToObject(h, "index", idx[j]);
            cJSON_AddStringToObject(h, "match", names->s[idx[j]]);
            cJSON_AddNumberToObject(h, "cosine", sc[j]);
            cJSON_AddItemToArray(hits, h);
        } else {
            printf("  %2d. %.4f  %s\n", j + 1, sc[j], names->s[idx[j]]);
        }
    }
}

static int retrieve_query(int argc, char **argv) {
    const char    *model = NULL, *index = NULL, *target = NULL;
    int            image = 0, k = 5, threads = 0, json = 0;
    const opt_spec opts[] = {
        {"index", 'i', OPT_STR, &index, "index file written by dinoc retrieve index"},
        {"model", 'm', OPT_STR, &model, "CLIP model folder (the one that built the index)"},
        {"image", 0, OPT_FLAG, &image, "the queries are image files (default: texts)"},
        {"target", 0, OPT_STR, &target, "images or texts (default: images for text queries, texts for image queries)"},
        {"top", 'k', OPT_INT, &k, "results per query"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"json", 0, OPT_FLAG, &json, "print one JSON object on stdout"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc retrieve query -i INDEX -m MODEL [--image] [-k K] QUERY...";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    if (rc || !model || !index || !npos || k < 1 || (target && strcmp(target, "images") && strcmp(target, "texts"))) {
        if (!rc) fprintf(stderr, "error: retrieve query needs --index, --model, --top >= 1, --target images|texts "
                                 "and at least one query\n%s\n", use);
        free(pos);
        return rc == 1 ? 0 : 2;
    }
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    dinoc_clip      *m = NULL;
    dinoc_clip_index ix = {0};
    float           *q = NULL, *sc = NULL, *pr = NULL;
    int32_t         *idx = NULL;
    dinoc_status     s;
    char            *probe_text[1] = {DINOC_INDEX_PROBE};
    if ((s = dinoc_clip_index_load(&ix, index)) || (s = dinoc_clip_load(&m, model))) goto done;
    const int P = dinoc_clip_embed_dim(m);
    if (!(pr = malloc(sizeof(float) * P)) || !(q = malloc(sizeof(float) * (size_t)npos * P))) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (P == ix.dim && (s = dinoc_clip_embed_texts(m, probe_text, 1, 1, pr))) goto done;
    if ((s = dinoc_clip_index_check(&ix, index, P, pr))) goto done;
    const int to_texts = target ? !strcmp(target, "texts") : image && ix.n_texts > 0;
    if (to_texts && !ix.n_texts) {
        s = dinoc_fail(DINOC_ERR_ARG, "%s holds no captions (build it with --pairs to search texts)", index);
        goto done;
    }
    const float   *db = to_texts ? ix.text_embeds : ix.image_embeds;
    const int64_t  nd = to_texts ? ix.n_texts : ix.n_images;
    if (k > nd) k = (int)nd;
    s = image ? dinoc_clip_embed_paths(m, pos, npos, 16, q, NULL, NULL) : dinoc_clip_embed_texts(m, pos, npos, 64, q);
    if (s) goto done;
    idx = malloc(sizeof(int32_t) * (size_t)npos * k), sc = malloc(sizeof(float) * (size_t)npos * k);
    if (!idx || !sc) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((s = dinoc_retrieve_topk(idx, sc, q, npos, db, nd, P, k))) goto done;
    cJSON *root = json ? cJSON_CreateObject() : NULL, *arr = json ? cJSON_AddArrayToObject(root, "results") : NULL;
    for (int i = 0; i < npos; i++)
        print_hits(arr, pos[i], idx + (size_t)i * k, sc + (size_t)i * k, k, to_texts ? &ix.captions : &ix.paths);
    if (root) {
        cJSON_AddStringToObject(root, "target", to_texts ? "texts" : "images");
        char *txt = cJSON_PrintUnformatted(root);
        if (txt) printf("%s\n", txt);
        free(txt);
        cJSON_Delete(root);
    }
done:
    dinoc_clip_index_free(&ix);
    dinoc_clip_free(m);
    free(pos), free(q), free(sc), free(idx), free(pr);
    return s ? cli_fail("retrieve query", s) : 0;
}

int cmd_retrieve(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "index") == 0) return retrieve_index(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "query") == 0) return retrieve_query(argc - 1, argv + 1);
    FILE *f = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? stdout : stderr;
    fprintf(f, "usage: dinoc retrieve <index|query> [options]\n"
               "  index  embed images (and the captions of a pairs file) once into an index file\n"
               "  query  top-K images for texts, or captions for images, from an index\n"
               "'dinoc retrieve <command> --help' lists the options.\n");
    return f == stdout ? 0 : 2;
}
