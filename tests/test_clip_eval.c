/* test_clip_eval.c: the CLIP uses of src/eval/ (clip_eval.h) without a model:
 *   templates and text lists; prompt ensembling, zero-shot logits, top-k and accuracy against
 *   numpy (fixtures from `/usr/bin/python3 tests/py/gen_clip_eval.py <fixtures>`); recall at K both
 *   ways on float embeddings and on integer embeddings full of exact ties; top-k search; the index
 *   file round trip and every corrupt-index error; labelled sets from labels files and folders;
 *   few-shot on planted clusters. */
#include "check.h"
#include "../src/eval/clip_eval.h"

#include <stb/stb_image_write.h>

static dinoc_safetensors *open_fixture(void) {
    return dinoc_test_fixture_open("clip_eval/clip_eval.safetensors", "gen_clip_eval.py");
}
#define tensor dinoc_test_fixture_tensor

static int64_t dim0(dinoc_safetensors *st, const char *name) {
    const dinoc_tensor *t = dinoc_safetensors_find(st, name);
    return t ? t->shape[0] : 0;
}

static char *tmp_path(const char *name) {
    static char buf[4][1024];
    static int  k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/clip_eval_%s", dinoc_test_tmpdir(), name);
    return buf[k];
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* ---- text lists ---------------------------------------------------------------------------------- */

DINOC_TEST(clip_eval_templates_and_lists) {
    for (int i = 0; i < DINOC_IMAGENET_TEMPLATES; i++) {
        const char *b = strstr(dinoc_imagenet_templates[i], "{}");
        CHECK_MSG(b && !strstr(b + 2, "{}"), "template %d", i);
        for (int j = 0; j < i; j++) CHECK(strcmp(dinoc_imagenet_templates[i], dinoc_imagenet_templates[j]) != 0);
    }
    CHECK(strcmp(dinoc_imagenet_templates[0], "a bad photo of a {}.") == 0);
    CHECK(strcmp(dinoc_imagenet_templates[79], "a tattoo of the {}.") == 0);
    CHECK(strcmp(dinoc_simple_templates[2], "a origami {}.") == 0);
    /* the 7 simple templates are a subset of the 80 */
    for (int i = 0; i < DINOC_SIMPLE_TEMPLATES; i++) {
        int found = 0;
        for (int j = 0; j < DINOC_IMAGENET_TEMPLATES; j++) found |= !strcmp(dinoc_simple_templates[i], dinoc_imagenet_templates[j]);
        CHECK_MSG(found, "simple template '%s'", dinoc_simple_templates[i]);
    }
    char *s = NULL;
    CHECK_OK(dinoc_template_format(&s, "a {} in a video game.", "red circle"));
    CHECK(s && strcmp(s, "a red circle in a video game.") == 0);
    free(s);
    CHECK_ERR(dinoc_template_format(&s, "no slot", "x"), DINOC_ERR_ARG, "no \"{}\"");

    dinoc_strlist l;
    CHECK_OK(dinoc_split_list(&l, " cat, dog ,red circle"));
    CHECK(l.n == 3 && !strcmp(l.s[0], "cat") && !strcmp(l.s[1], "dog") && !strcmp(l.s[2], "red circle"));
    dinoc_strlist_free(&l);
    CHECK_ERR(dinoc_split_list(&l, "cat,,dog"), DINOC_ERR_ARG, "empty name");

    const char *p = tmp_path("templates.txt");
    write_text(p, "# comment\r\na photo of a {}.\r\n\r\nitap of a {}.\n");
    CHECK_OK(dinoc_templates_load(&l, p));
    CHECK(l.n == 2 && !strcmp(l.s[0], "a photo of a {}.") && !strcmp(l.s[1], "itap of a {}."));
    dinoc_strlist_free(&l);
    write_text(p, "a photo of a {}.\na {} and a {}.\n");
    CHECK_ERR(dinoc_templates_load(&l, p), DINOC_ERR_FORMAT, "templates.txt:2");
    write_text(p, "# only a comment\n\n");
    CHECK_ERR(dinoc_lines_load(&l, p, "class names"), DINOC_ERR_FORMAT, "no class names");
    CHECK_ERR(dinoc_lines_load(&l, tmp_path("absent.txt"), "class names"), DINOC_ERR_IO, "absent.txt");

    /* de-duplication keeps first-occurrence order */
    char   *in[] = {"b", "a", "b", "c", "a"};
    int32_t map[5];
    CHECK_OK(dinoc_strings_unique(&l, map, in, 5));
    CHECK(l.n == 3 && !strcmp(l.s[0], "b") && !strcmp(l.s[1], "a") && !strcmp(l.s[2], "c"));
    CHECK(map[0] == 0 && map[1] == 1 && map[2] == 0 && map[3] == 2 && map[4] == 1);
    dinoc_strlist_free(&l);

    dinoc_strlist c0, c1;
    p = tmp_path("pairs.tsv");
    write_text(p, "images/0.png\ta red circle\n/abs/1.png\ta blue star\r\n");
    CHECK_OK(dinoc_tsv_load(&c0, &c1, p, 1, 2));
    CHECK(c0.n == 2 && strstr(c0.s[0], "/clip_eval_pairs.tsv") == NULL);
    CHECK(c0.n == 2 && !strcmp(c0.s[1], "/abs/1.png") && !strcmp(c1.s[1], "a blue star"));
    char want[1100];
    snprintf(want, sizeof want, "%s/images/0.png", dinoc_test_tmpdir());
    CHECK_MSG(c0.n == 2 && !strcmp(c0.s[0], want), "relative path joined: '%s'", c0.n ? c0.s[0] : "");
    dinoc_strlist_free(&c0), dinoc_strlist_free(&c1);
    write_text(p, "images/0.png\ta red circle\nimages/1.png no tab\n");
    CHECK_ERR(dinoc_tsv_load(&c0, &c1, p, 1, 2), DINOC_ERR_FORMAT, "pairs.tsv:2");
    /* a third column: a training pairs file's negative caption, dropped where allowed (retrieval
     * reads such files), an error for a two-column file (labels) */
    write_text(p, "0.png\ta red circle\ta blue circle\n1.png\ta star\n");
    CHECK_OK(dinoc_tsv_load(&c0, &c1, p, 1, 3));
    CHECK(c1.n == 2 && !strcmp(c1.s[0], "a red circle") && !strcmp(c1.s[1], "a star"));
    dinoc_strlist_free(&c0), dinoc_strlist_free(&c1);
    CHECK_ERR(dinoc_tsv_load(&c0, &c1, p, 1, 2), DINOC_ERR_FORMAT, "pairs.tsv:1: expected 2 columns");
    write_text(p, "0.png\t\ta blue circle\n");
    CHECK_ERR(dinoc_tsv_load(&c0, &c1, p, 1, 3), DINOC_ERR_FORMAT, "pairs.tsv:1");
}

/* ---- zero-shot ------------------------------------------------------------------------------------- */

DINOC_TEST(clip_eval_ensemble_matches_numpy) {
    dinoc_safetensors *st = open_fixture();
    if (!st) return;
    int64_t ne, nw;
    float  *emb = tensor(st, "ens.emb", &ne), *W = tensor(st, "ens.W", &nw);
    const int K = (int)dim0(st, "ens.W"), P = (int)(nw / K), T = (int)(ne / nw);
    float    *got = malloc(sizeof(float) * nw);
    for (int k = 0; k < K; k++) CHECK_OK(dinoc_prompt_ensemble(got + k * P, emb + (size_t)k * T * P, T, P));
    /* float32 inputs, double sums: only the final rounding to float differs from numpy's float64 */
    CHECK_CLOSE(got, W, (size_t)nw, 1e-6, 1e-6, "ensemble W");
    float zero[3 * 4] = {1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0};
    CHECK_ERR(dinoc_prompt_ensemble(got, zero, 3, 4), DINOC_ERR_NUMERIC, "template 1");
    float opposite[2 * 2] = {1, 0, -2, 0};
    CHECK_ERR(dinoc_prompt_ensemble(got, opposite, 2, 2), DINOC_ERR_NUMERIC, "cancel");
    free(emb), free(W), free(got);
    dinoc_safetensors_close(st);
}

DINOC_TEST(clip_eval_zeroshot_logits_topk_accuracy) {
    dinoc_safetensors *st = open_fixture();
    if (!st) return;
    int64_t nx, nl, nw;
    float  *x = tensor(st, "zs.x", &nx), *want = tensor(st, "zs.logits", &nl), *W = tensor(st, "ens.W", &nw);
    int32_t *y = tensor(st, "zs.y", NULL), *top5 = tensor(st, "zs.top5", NULL);
    double  *acc = tensor(st, "zs.acc", NULL);
    const int64_t N = dim0(st, "zs.x");
    const int     K = (int)(nl / N), P = (int)(nx / N);
    float        *logits = malloc(sizeof(float) * nl);
    CHECK_OK(dinoc_zeroshot_logits(logits, x, W, N, K, P, 100.0f));
    /* |logits| <= 100 from float32 sgemm vs float64: a few float ulps of 100 */
    CHECK_CLOSE(logits, want, (size_t)nl, 1e-4, 1e-6, "zero-shot logits");
    int32_t *idx = malloc(sizeof(int32_t) * N * 5);
    dinoc_topk_rows(idx, logits, N, K, 5);
    int same = 1;
    for (int64_t i = 0; i < N * 5; i++) same &= idx[i] == top5[i];
    CHECK_MSG(same, "top-5 classes differ from numpy's argsort (the fixture has no near-ties)");
    double t1, t5, per[16];
    CHECK_OK(dinoc_topk_accuracy(logits, y, N, K, &t1, &t5, per));
    CHECK_MSG(t1 == acc[0] && t5 == acc[1], "accuracy %g %g, numpy %g %g", t1, t5, acc[0], acc[1]);
    /* ties go to the lower index; NaN ranks last */
    const float tie[6] = {1, 2, 2, NAN, 0, 2};
    int32_t     ti[4], lab[2] = {2, 5};
    dinoc_topk_rows(ti, tie, 1, 6, 4);
    CHECK(ti[0] == 1 && ti[1] == 2 && ti[2] == 5 && ti[3] == 0);
    CHECK_OK(dinoc_topk_accuracy(tie, lab, 1, 6, &t1, &t5, NULL));
    CHECK(t1 == 0 && t5 == 1);
    lab[0] = 6;
    CHECK_ERR(dinoc_topk_accuracy(tie, lab, 1, 6, &t1, &t5, NULL), DINOC_ERR_ARG, "label 6");
    free(x), free(want), free(W), free(y), free(top5), free(acc), free(logits), free(idx);
    dinoc_safetensors_close(st);
}

/* ---- retrieval ------------------------------------------------------------------------------------- */

static void check_recall(dinoc_safetensors *st, const char *pre) {
    char name[64];
    snprintf(name, sizeof name, "%s.img", pre);
    int64_t ni_el, nt_el, np_el;
    float  *img = tensor(st, name, &ni_el);
    const int64_t ni = dim0(st, name);
    snprintf(name, sizeof name, "%s.txt", pre);
    float        *txt = tensor(st, name, &nt_el);
    const int64_t nt = dim0(st, name);
    snprintf(name, sizeof name, "%s.pairs", pre);
    int32_t *pairs = tensor(st, name, &np_el);
    snprintf(name, sizeof name, "%s.recall", pre);
    double *want = tensor(st, name, NULL);
    snprintf(name, sizeof name, "%s.mrank", pre);
    double *mrank = tensor(st, name, NULL);
    const int    ks[3] = {1, 5, 10};
    dinoc_recall r;
    CHECK_OK(dinoc_retrieval_recall(img, ni, txt, nt, (int)(ni_el / ni), pairs, np_el / 2, ks, 3, &r));
    for (int j = 0; j < 3; j++) {
        /* counts over the same queries: both sides compute count / n in double */
        CHECK_MSG(fabs(r.t2i[j] - want[j]) < 1e-12, "%s t2i R@%d %g, numpy %g", pre, ks[j], r.t2i[j], want[j]);
        CHECK_MSG(fabs(r.i2t[j] - want[3 + j]) < 1e-12, "%s i2t R@%d %g, numpy %g", pre, ks[j], r.i2t[j], want[3 + j]);
    }
    CHECK_MSG(fabs(r.t2i_mean_rank - mrank[0]) < 1e-9 && fabs(r.i2t_mean_rank - mrank[1]) < 1e-9,
              "%s mean ranks %g %g, numpy %g %g", pre, r.t2i_mean_rank, r.i2t_mean_rank, mrank[0], mrank[1]);
    CHECK(r.t2i_queries == nt && r.i2t_queries == ni);
    free(img), free(txt), free(pairs), free(want), free(mrank);
}

DINOC_TEST(clip_eval_recall_matches_numpy) {
    dinoc_safetensors *st = open_fixture();
    if (!st) return;
    check_recall(st, "rf"); /* float scores, no near-ties */
    check_recall(st, "ri"); /* integer scores: ties everywhere */
    float   e[4]     = {1, 0, 0, 1};
    int32_t bad[2]   = {0, 2};
    int     ks[1]    = {1};
    dinoc_recall r;
    CHECK_ERR(dinoc_retrieval_recall(e, 2, e, 2, 2, bad, 1, ks, 1, &r), DINOC_ERR_ARG, "text 2");
    dinoc_safetensors_close(st);
}

static const float *g_scores;
static int cmp_rank(const void *a, const void *b) {
    const int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    return dinoc_ranks_before(g_scores[i], i, g_scores[j], j) ? -1 : 1;
}

DINOC_TEST(clip_eval_topk_search_with_ties) {
    dinoc_safetensors *st = open_fixture();
    if (!st) return;
    int64_t ni_el;
    float  *img = tensor(st, "ri.img", &ni_el), *txt = tensor(st, "ri.txt", NULL);
    const int64_t ni = dim0(st, "ri.img"), nt = dim0(st, "ri.txt");
    const int     P = (int)(ni_el / ni), k = 7;
    int32_t      *idx = malloc(sizeof(int32_t) * nt * k), order[64];
    float        *sc = malloc(sizeof(float) * nt * k), row[64];
    CHECK_OK(dinoc_retrieve_topk(idx, sc, txt, nt, img, ni, P, k));
    int same = 1;
    for (int64_t q = 0; q < nt; q++) {
        for (int64_t i = 0; i < ni; i++) {
            double d = 0;
            for (int p = 0; p < P; p++) d += (double)txt[q * P + p] * img[i * P + p];
            row[i] = (float)d, order[i] = (int32_t)i;
        }
        g_scores = row;
        qsort(order, (size_t)ni, sizeof(int32_t), cmp_rank);
        for (int j = 0; j < k; j++) same &= idx[q * k + j] == order[j] && sc[q * k + j] == row[order[j]];
    }
    CHECK_MSG(same, "top-7 differs from a full sort with the tie rule (integer scores are exact)");
    CHECK_ERR(dinoc_retrieve_topk(idx, sc, txt, 1, img, ni, P, (int)ni + 1), DINOC_ERR_ARG, "k must be");
    free(img), free(txt), free(idx), free(sc);
    dinoc_safetensors_close(st);
}

/* A small valid index: 3 images (2 dims), 2 captions, 3 pairs, a probe. */
static void small_index(dinoc_clip_index *ix, float *img, float *txt, int32_t *pairs, float *probe) {
    static const float   I[6] = {1, 0, 0, 1, 0.6f, 0.8f}, T[4] = {0.8f, 0.6f, 0, 1}, R[2] = {0.6f, -0.8f};
    static const int32_t Q[6] = {0, 0, 1, 1, 2, 0};
    memcpy(img, I, sizeof I), memcpy(txt, T, sizeof T), memcpy(pairs, Q, sizeof Q), memcpy(probe, R, sizeof R);
    memset(ix, 0, sizeof *ix);
    ix->dim = 2, ix->n_images = 3, ix->n_texts = 2, ix->n_pairs = 3;
    ix->image_embeds = img, ix->text_embeds = txt, ix->pairs = pairs, ix->probe = probe;
    ix->model = "tiny \"clip\"";
    dinoc_strlist_push(&ix->paths, "a/1.png"), dinoc_strlist_push(&ix->paths, "b\tc/ü.png");
    dinoc_strlist_push(&ix->paths, "\"quoted\".jpg");
    dinoc_strlist_push(&ix->captions, "a red circle"), dinoc_strlist_push(&ix->captions, "line\nbreak");
}

DINOC_TEST(clip_eval_index_round_trip) {
    float            img[6], txt[4], probe[2];
    int32_t          pairs[6];
    dinoc_clip_index ix, back;
    small_index(&ix, img, txt, pairs, probe);
    const char *p = tmp_path("index.safetensors");
    CHECK_OK(dinoc_clip_index_save(&ix, p));
    CHECK_OK(dinoc_clip_index_load(&back, p));
    CHECK(back.dim == 2 && back.n_images == 3 && back.n_texts == 2 && back.n_pairs == 3);
    CHECK(back.image_embeds && !memcmp(back.image_embeds, img, sizeof img));
    CHECK(back.text_embeds && !memcmp(back.text_embeds, txt, sizeof txt));
    CHECK(back.pairs && !memcmp(back.pairs, pairs, sizeof pairs));
    CHECK(back.probe && !memcmp(back.probe, probe, sizeof probe));
    CHECK(back.model && !strcmp(back.model, ix.model));
    for (int i = 0; i < 3 && back.paths.n == 3; i++) CHECK(!strcmp(back.paths.s[i], ix.paths.s[i]));
    for (int i = 0; i < 2 && back.captions.n == 2; i++) CHECK(!strcmp(back.captions.s[i], ix.captions.s[i]));
    /* the model check: width, then the probe fingerprint */
    float other[2] = {0.8f, 0.6f}, same[2] = {0.6f, -0.8f};
    CHECK_OK(dinoc_clip_index_check(&back, p, 2, same));
    CHECK_ERR(dinoc_clip_index_check(&back, p, 3, same), DINOC_ERR_SHAPE, "2 wide, the model's 3");
    CHECK_ERR(dinoc_clip_index_check(&back, p, 2, other), DINOC_ERR_ARG, "another model");
    dinoc_clip_index_free(&back);
    /* images only: no texts, no pairs, no probe */
    ix.n_texts = 0, ix.n_pairs = 0, ix.text_embeds = NULL, ix.pairs = NULL, ix.probe = NULL;
    dinoc_strlist caps = ix.captions;
    ix.captions = (dinoc_strlist){0};
    CHECK_OK(dinoc_clip_index_save(&ix, p));
    CHECK_OK(dinoc_clip_index_load(&back, p));
    CHECK(back.n_texts == 0 && !back.text_embeds && !back.pairs && !back.probe && back.n_images == 3);
    dinoc_clip_index_free(&back);
    /* saving validates first */
    ix.captions = caps, ix.n_texts = 2, ix.text_embeds = txt, ix.n_pairs = 3, ix.pairs = pairs;
    pairs[5] = 2;
    CHECK_ERR(dinoc_clip_index_save(&ix, p), DINOC_ERR_FORMAT, "text 2");
    dinoc_strlist_free(&ix.paths), dinoc_strlist_free(&ix.captions);
}

/* Writes an index-like file with the given tensors / metadata and expects load to fail. */
static void corrupt_case(const char *label, const dinoc_tensor *t, int nt, const char *const *meta,
                         dinoc_status want, const char *needle) {
    const char *p = tmp_path("corrupt.safetensors");
    CHECK_OK(dinoc_safetensors_write(p, t, nt, meta));
    dinoc_clip_index ix;
    dinoc_status     s = dinoc_clip_index_load(&ix, p);
    CHECK_MSG(s == want && strstr(dinoc_last_error(), needle), "%s: got %s '%s', wanted %s with '%s'", label,
              dinoc_status_str(s), dinoc_last_error(), dinoc_status_str(want), needle);
    CHECK(ix.image_embeds == NULL && ix.paths.n == 0); /* nothing left allocated */
}

DINOC_TEST(clip_eval_index_corrupt_files) {
    float         img[6] = {1, 0, 0, 1, 1, 1}, nan6[6] = {1, 0, NAN, 1, 1, 1};
    int32_t       pr[2]  = {0, 5};
    dinoc_tensor  ok   = {"image_embeds", DINOC_DTYPE_F32, 2, {3, 2}, sizeof img, img};
    dinoc_tensor  wide = {"image_embeds", DINOC_DTYPE_F32, 2, {2, 3}, sizeof img, img};
    dinoc_tensor  bad  = {"image_embeds", DINOC_DTYPE_F32, 2, {3, 2}, sizeof nan6, nan6};
    dinoc_tensor  prs[2] = {ok, {"pairs", DINOC_DTYPE_I32, 2, {1, 2}, sizeof pr, pr}};
    const char   *paths3 = "[\"a\",\"b\",\"c\"]";
#define META(fmt, ver, dim, paths) {"format", fmt, "version", ver, "embed_dim", dim, "paths", paths, "captions", "[]", NULL}
    const char *good[]  = META(DINOC_INDEX_FORMAT, "1", "2", paths3);
    const char *fmt[]   = META("something-else", "1", "2", paths3);
    const char *ver[]   = META(DINOC_INDEX_FORMAT, "2", "2", paths3);
    const char *dim[]   = META(DINOC_INDEX_FORMAT, "1", "2x", paths3);
    const char *two[]   = META(DINOC_INDEX_FORMAT, "1", "2", "[\"a\",\"b\"]");
    const char *notarr[] = META(DINOC_INDEX_FORMAT, "1", "2", "{\"a\":1}");
    const char *notstr[] = META(DINOC_INDEX_FORMAT, "1", "2", "[\"a\",2,\"c\"]");
#undef META
    corrupt_case("format", &ok, 1, fmt, DINOC_ERR_FORMAT, "not a dinoc CLIP index");
    corrupt_case("no metadata", &ok, 1, NULL, DINOC_ERR_FORMAT, "not a dinoc CLIP index");
    corrupt_case("version", &ok, 1, ver, DINOC_ERR_UNSUPPORTED, "version '2'");
    corrupt_case("embed_dim", &ok, 1, dim, DINOC_ERR_FORMAT, "embed_dim '2x'");
    corrupt_case("width", &wide, 1, good, DINOC_ERR_SHAPE, "'image_embeds' must be F32 [N, 2]");
    corrupt_case("paths count", &ok, 1, two, DINOC_ERR_FORMAT, "2 paths for 3 images");
    corrupt_case("paths not an array", &ok, 1, notarr, DINOC_ERR_FORMAT, "'paths' is not a JSON array");
    corrupt_case("path not a string", &ok, 1, notstr, DINOC_ERR_FORMAT, "'paths' entry 1");
    corrupt_case("non-finite", &bad, 1, good, DINOC_ERR_NUMERIC, "non-finite");
    corrupt_case("pair out of range", prs, 2, good, DINOC_ERR_FORMAT, "text 5");
    dinoc_tensor other = {"features", DINOC_DTYPE_F32, 2, {3, 2}, sizeof img, img};
    corrupt_case("no image_embeds", &other, 1, good, DINOC_ERR_FORMAT, "'image_embeds' is missing");
    /* a truncated file: the safetensors reader names it */
    const char *p = tmp_path("corrupt.safetensors");
    write_text(p, "\x10\0\0\0\0\0\0\0{\"a\"");
    dinoc_clip_index ix;
    CHECK_ERR(dinoc_clip_index_load(&ix, p), DINOC_ERR_FORMAT, "corrupt.safetensors");
    CHECK_ERR(dinoc_clip_index_load(&ix, tmp_path("missing.safetensors")), DINOC_ERR_IO, "missing.safetensors");
}

/* ---- labelled sets ----------------------------------------------------------------------------------- */

DINOC_TEST(clip_eval_sets_from_labels_and_folders) {
    char dir[1024], sub[1200], p[1300];
    snprintf(dir, sizeof dir, "%s/clip_eval_set", dinoc_test_tmpdir());
    snprintf(sub, sizeof sub, "%s/images", dir);
    CHECK_OK(dinoc_mkdir(sub));
    uint8_t px[4 * 3 * 3];
    for (int i = 0; i < 36; i++) px[i] = (uint8_t)(7 * i);
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%d.png", sub, i);
        CHECK(stbi_write_png(p, 4, 3, 3, px, 12));
    }
    snprintf(p, sizeof p, "%s/label_names.txt", dir);
    remove(p); /* left by an earlier run */
    snprintf(p, sizeof p, "%s/labels.tsv", dir);
    write_text(p, "images/0.png\tblue star\nimages/1.png\tred circle\nimages/2.png\tblue star\n");
    dinoc_clip_set s;
    /* no label_names.txt: the sorted distinct labels */
    CHECK_OK(dinoc_clip_set_open(&s, dir, NULL, NULL, 0));
    CHECK(s.n == 3 && s.classes.n == 2 && !strcmp(s.classes.s[0], "blue star") && s.labels[1] == 1 && s.labels[2] == 0);
    dinoc_image img;
    int32_t     y = -1;
    CHECK_OK(dinoc_clip_set_image(&s, 1, &img, &y));
    CHECK(img.w == 4 && img.h == 3 && img.c == 3 && y == 1 && img.data && img.data[5] == 35);
    dinoc_image_free(&img);
    dinoc_clip_set_free(&s);
    /* label_names.txt beside it sets the classes and their order */
    snprintf(p, sizeof p, "%s/label_names.txt", dir);
    write_text(p, "red circle\ngreen square\nblue star\n");
    snprintf(p, sizeof p, "%s/labels.tsv", dir);
    CHECK_OK(dinoc_clip_set_open(&s, p, NULL, NULL, 0));
    CHECK(s.classes.n == 3 && s.labels[0] == 2 && s.labels[1] == 0);
    dinoc_clip_set_free(&s);
    /* --classes without one of the labels */
    char cls[1300];
    snprintf(cls, sizeof cls, "%s/classes.txt", dir);
    write_text(cls, "red circle\ngreen square\n");
    CHECK_ERR(dinoc_clip_set_open(&s, p, cls, NULL, 0), DINOC_ERR_ARG, "label 'blue star'");
    CHECK_ERR(dinoc_clip_set_open(&s, tmp_path("nowhere"), NULL, NULL, 0), DINOC_ERR_IO, "nowhere");

    /* class subfolders, '_' read as a space; a grey PNG comes back RGB */
    char root[1024];
    snprintf(root, sizeof root, "%s/clip_eval_folder", dinoc_test_tmpdir());
    const char *names[2] = {"ankle_boot", "bag"};
    for (int k = 0; k < 2; k++) {
        snprintf(sub, sizeof sub, "%s/%s", root, names[k]);
        CHECK_OK(dinoc_mkdir(sub));
        snprintf(p, sizeof p, "%s/x.png", sub);
        CHECK(stbi_write_png(p, 4, 3, 1, px, 4));
    }
    CHECK_OK(dinoc_clip_set_open(&s, root, NULL, NULL, 0));
    CHECK(s.n == 2 && s.classes.n == 2 && !strcmp(s.classes.s[0], "ankle boot") && s.labels[1] == -1);
    CHECK_OK(dinoc_clip_set_image(&s, 1, &img, &y));
    CHECK(y == 1 && s.labels[1] == 1 && img.c == 3 && img.data && img.data[3] == px[1] && img.data[4] == px[1]);
    dinoc_image_free(&img);
    dinoc_clip_set_free(&s);
    snprintf(cls, sizeof cls, "%s/classes.txt", dir);
    write_text(cls, "bag\nankle boot\nshirt\n");
    CHECK_OK(dinoc_clip_set_open(&s, root, cls, NULL, 0));
    CHECK_OK(dinoc_clip_set_image(&s, 0, &img, &y));
    CHECK(s.classes.n == 3 && y == 1);
    dinoc_image_free(&img);
    dinoc_clip_set_free(&s);
}

/* ---- few-shot ------------------------------------------------------------------------------------------ */

/* K clusters in D dims: centre k = `sep` on axis k, unit Gaussian noise; n rows per class,
 * classes interleaved. */
static void planted(float *x, int32_t *y, int n, int K, int D, float sep, uint64_t seed) {
    dinoc_rng r;
    dinoc_rng_seed(&r, seed);
    for (int i = 0; i < n * K; i++) {
        y[i] = i % K;
        for (int d = 0; d < D; d++) x[i * D + d] = dinoc_rng_normal(&r) + (d == y[i] ? sep : 0.0f);
    }
}

DINOC_TEST(clip_eval_fewshot_planted) {
    enum { K = 4, D = 16, NP = 30, NT = 20 };
    float   pool[NP * K * D], test[NT * K * D];
    int32_t yp[NP * K], yt[NT * K];
    planted(pool, yp, NP, K, D, 6.0f, 1), planted(test, yt, NT, K, D, 6.0f, 2);
    dinoc_fewshot_config c = dinoc_fewshot_default(3);
    c.n_seeds              = 3;
    dinoc_fewshot_result r, r2;
    CHECK_OK(dinoc_fewshot_eval(pool, yp, NP * K, test, yt, NT * K, D, K, &c, &r));
    /* clusters 6 sigma apart on orthogonal axes: 3 shots separate them all but by chance */
    fprintf(stderr, "    3-shot planted: prototypes %.3f +- %.3f, probe %.3f +- %.3f\n", r.proto_mean, r.proto_std,
            r.probe_mean, r.probe_std);
    CHECK_MSG(r.proto_mean >= 0.97 && r.probe_mean >= 0.9, "prototypes %.3f probe %.3f", r.proto_mean, r.probe_mean);
    CHECK(r.proto_std >= 0 && r.proto_by_seed && r.probe_by_seed);
    CHECK_OK(dinoc_fewshot_eval(pool, yp, NP * K, test, yt, NT * K, D, K, &c, &r2));
    int same = r.proto_mean == r2.proto_mean && r.probe_mean == r2.probe_mean;
    for (int s = 0; s < 3; s++) same &= r.probe_by_seed[s] == r2.probe_by_seed[s];
    CHECK_MSG(same, "few-shot is not deterministic for a seed");
    free(r.proto_by_seed), free(r.probe_by_seed), free(r2.proto_by_seed), free(r2.probe_by_seed);
    /* no separation: near chance (1/K), far from the planted case */
    planted(pool, yp, NP, K, D, 0.0f, 3), planted(test, yt, NT, K, D, 0.0f, 4);
    c.no_probe = 1;
    CHECK_OK(dinoc_fewshot_eval(pool, yp, NP * K, test, yt, NT * K, D, K, &c, &r));
    CHECK_MSG(r.proto_mean < 0.5, "prototypes on noise %.3f", r.proto_mean);
    free(r.proto_by_seed), free(r.probe_by_seed);
    /* the same split: shots drawn from the pool, the rest scored */
    planted(pool, yp, NP, K, D, 6.0f, 5);
    CHECK_OK(dinoc_fewshot_eval(pool, yp, NP * K, NULL, NULL, 0, D, K, &c, &r));
    CHECK_MSG(r.proto_mean >= 0.97, "same-split prototypes %.3f", r.proto_mean);
    free(r.proto_by_seed), free(r.probe_by_seed);
    c.shots = NP;
    CHECK_ERR(dinoc_fewshot_eval(pool, yp, NP * K, NULL, NULL, 0, D, K, &c, &r), DINOC_ERR_ARG, "class 0 has 30 rows");
    yp[5] = K;
    c.shots = 2;
    CHECK_ERR(dinoc_fewshot_eval(pool, yp, NP * K, test, yt, NT * K, D, K, &c, &r), DINOC_ERR_ARG, "row 5");

    /* prototypes: the renormalised mean of normalised rows */
    float   f[3 * 2] = {3, 4, 0, 2, 5, 0}, pr[2 * 2];
    int32_t fy[3]    = {0, 0, 1};
    CHECK_OK(dinoc_class_prototypes(pr, f, fy, NULL, 3, 2, 2));
    const float s = 1.6f / sqrtf(0.6f * 0.6f + 1.8f * 1.8f), want[4] = {0.6f * s / 1.6f, 1.8f * s / 1.6f, 1, 0};
    CHECK_CLOSE(pr, want, 4, 1e-6, 1e-6, "prototypes"); /* float rounding of a 2-row mean */
    CHECK_ERR(dinoc_class_prototypes(pr, f, fy, NULL, 3, 2, 3), DINOC_ERR_ARG, "class 2 has no rows");
}
