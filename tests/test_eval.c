/* test_eval.c: evaluation of frozen encoders (src/eval/).
 * - k-NN against DINO's knn_classifier (torch) and a float64 numpy version with dinoc's tie rule on
 *   clustered random features (fixtures from `/usr/bin/python3 tests/py/gen_eval.py <fixtures>`):
 *   top-1 equal to both exactly (rows within 1e-5 of a tie are left out of the fixture); top-5
 *   equal to numpy's exactly and to torch's up to the rows where classes of zero votes tie (torch's
 *   sort does not promise their order; in practice they agree too); same results at 1 and 2 threads;
 * - k-NN ties go to the lower train index, then the lower class;
 * - one-to-three steps of the probe's SGD against torch.optim.SGD (momentum 0.9);
 * - the probe on separable data: accuracy, determinism across runs and thread counts, the lr chosen
 *   on held-out train rows (scrambling the test labels changes nothing but the test score);
 * - features equal what dinoc_forward gives image by image (1-channel 28-px model through the
 *   table fast path, 3-channel 224-px model through dinoc_preprocess_image);
 * - a ResNet folder (random resnet_small, 1 channel) loads by its config.json as a backbone; its
 *   features equal dinoc_resnet_forward image by image, and k-NN on 300 + 100 Fashion-MNIST
 *   images runs on them; without preprocessor_config.json it takes the 256/224 default;
 * - bad inputs name the problem. */
#include "check.h"
#include "../src/eval/eval.h"
#include "../src/nn/vit.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

/* fixtures of tests/py/gen_eval.py */
static dinoc_safetensors *open_fixture(const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "eval/%s", name);
    return dinoc_test_fixture_open(rel, "gen_eval.py");
}
#define tensor dinoc_test_fixture_tensor

/* ---- k-NN -------------------------------------------------------------------------------------- */

DINOC_TEST(eval_knn_matches_dino_reference) {
    dinoc_safetensors *st = open_fixture("knn.safetensors");
    if (!st) return;
    int64_t  ntr, nte, nk, ndim;
    float   *tr = tensor(st, "train", &ndim), *te = tensor(st, "test", NULL);
    int32_t *ytr = tensor(st, "ytrain", &ntr), *yte = tensor(st, "ytest", &nte), *ks = tensor(st, "ks", &nk);
    double  *T = tensor(st, "T", NULL);
    int64_t *t1 = tensor(st, "torch_top1", NULL), *t5 = tensor(st, "torch_top5", NULL);
    int64_t *r1 = tensor(st, "ref_top1", NULL), *r5 = tensor(st, "ref_top5", NULL), *amb = tensor(st, "ambiguous5", NULL);
    const int dim = (int)(ndim / ntr);
    double    top1[8], top5[8], top1b[8], top5b[8];
    CHECK_OK(dinoc_knn_eval(tr, ytr, ntr, te, yte, nte, dim, 10, ks, (int)nk, (float)T[0], top1, top5));
    for (int i = 0; i < nk; i++) {
        int64_t c1 = llround(top1[i] * nte), c5 = llround(top5[i] * nte);
        fprintf(stderr, "    k %d: top-1 %lld (torch %lld, numpy %lld), top-5 %lld (torch %lld, numpy %lld, ambiguous %lld)\n",
                ks[i], (long long)c1, (long long)t1[i], (long long)r1[i], (long long)c5, (long long)t5[i],
                (long long)r5[i], (long long)amb[i]);
        CHECK(c1 == t1[i] && c1 == r1[i]);
        CHECK(c5 == r5[i]);
        CHECK(llabs(c5 - t5[i]) <= amb[i]);
    }
    /* one thread: the same numbers (395 test rows: two chunks of 256) */
    int nt = dinoc_get_threads();
    dinoc_set_threads(1);
    CHECK_OK(dinoc_knn_eval(tr, ytr, ntr, te, yte, nte, dim, 10, ks, (int)nk, (float)T[0], top1b, top5b));
    dinoc_set_threads(nt);
    CHECK(memcmp(top1, top1b, sizeof(double) * nk) == 0 && memcmp(top5, top5b, sizeof(double) * nk) == 0);
    free(tr), free(te), free(ytr), free(yte), free(ks), free(T), free(t1), free(t5), free(r1), free(r5), free(amb);
    dinoc_safetensors_close(st);
}

DINOC_TEST(eval_knn_ties_are_deterministic) {
    /* rows 0 and 1 are the same vector with labels 2 and 1; row 2 is orthogonal, label 0 */
    const float tr[3 * 2] = {1, 0, 1, 0, 0, 1}, te[1 * 2] = {3, 0};
    int32_t     ytr[3] = {2, 1, 0}, yte[1];
    int         k1 = 1, k2 = 2;
    double      a1, a5;
    yte[0] = 2; /* k = 1: the lower index (row 0, label 2) wins the tie */
    CHECK_OK(dinoc_knn_eval(tr, ytr, 3, te, yte, 1, 2, 3, &k1, 1, 0.07f, &a1, &a5));
    CHECK(a1 == 1.0);
    yte[0] = 1; /* k = 2: classes 1 and 2 tie on score; the lower class (1) is predicted */
    CHECK_OK(dinoc_knn_eval(tr, ytr, 3, te, yte, 1, 2, 3, &k2, 1, 0.07f, &a1, &a5));
    CHECK(a1 == 1.0 && a5 == 1.0);
    yte[0] = 0; /* class 0 has no vote: ranked after the tied classes; top-5 = min(5, k = 2) misses it */
    CHECK_OK(dinoc_knn_eval(tr, ytr, 3, te, yte, 1, 2, 3, &k2, 1, 0.07f, &a1, &a5));
    CHECK(a1 == 0.0 && a5 == 0.0);
    /* T = 1e-4: exp(sim / T) overflows to inf for both classes (a false tie won by class 0); with
     * the best similarity subtracted, the nearest row (class 1, sim 1) outweighs two rows of class
     * 0 at sim 0.99 by e^100 / 2 */
    const float tr3[3 * 2] = {1, 0, 0.99f, 0.14107f, 0.99f, 0.14107f}, te1[2] = {1, 0};
    int32_t     y3[3] = {1, 0, 0}, y1[1] = {1};
    int         k3 = 3;
    CHECK_OK(dinoc_knn_eval(tr3, y3, 3, te1, y1, 1, 2, 2, &k3, 1, 1e-4f, &a1, &a5));
    CHECK(a1 == 1.0);
}

DINOC_TEST(eval_knn_bad_input) {
    const float tr[4] = {1, 0, 0, 1}, te[2] = {1, 0}, nan_te[2] = {NAN, 0};
    int32_t     ytr[2] = {0, 1}, yte[1] = {0}, bad[2] = {0, 5};
    int         k = 1, k3 = 3, k0 = 0;
    double      a1, a5;
    CHECK_ERR(dinoc_knn_eval(tr, ytr, 2, te, yte, 1, 2, 1, &k, 1, 0.07f, &a1, &a5), DINOC_ERR_ARG, "num_classes");
    CHECK_ERR(dinoc_knn_eval(tr, ytr, 2, te, yte, 1, 2, 2, &k3, 1, 0.07f, &a1, &a5), DINOC_ERR_ARG, "k = 3");
    CHECK_ERR(dinoc_knn_eval(tr, ytr, 2, te, yte, 1, 2, 2, &k0, 1, 0.07f, &a1, &a5), DINOC_ERR_ARG, "k = 0");
    CHECK_ERR(dinoc_knn_eval(tr, bad, 2, te, yte, 1, 2, 2, &k, 1, 0.07f, &a1, &a5), DINOC_ERR_ARG, "train label 5");
    CHECK_ERR(dinoc_knn_eval(tr, ytr, 2, te, bad + 1, 1, 2, 2, &k, 1, 0.07f, &a1, &a5), DINOC_ERR_ARG, "test label 5");
    CHECK_ERR(dinoc_knn_eval(tr, ytr, 2, te, yte, 1, 2, 2, &k, 1, 0.0f, &a1, &a5), DINOC_ERR_ARG, "temperature");
    CHECK_ERR(dinoc_knn_eval(tr, ytr, 2, nan_te, yte, 1, 2, 2, &k, 1, 0.07f, &a1, &a5), DINOC_ERR_NUMERIC, "test feature row 0");
    CHECK_ERR(dinoc_knn_eval(tr, ytr, 2, te, yte, 1, 2, 2, NULL, 1, 0.07f, &a1, &a5), DINOC_ERR_ARG, "NULL");
}

/* ---- linear probe -------------------------------------------------------------------------------- */

DINOC_TEST(eval_linear_sgd_matches_torch) {
    dinoc_safetensors *st = open_fixture("sgd.safetensors");
    if (!st) return;
    const char *Ds = dinoc_safetensors_metadata(st, "D"), *Ks = dinoc_safetensors_metadata(st, "K");
    const char *Bs = dinoc_safetensors_metadata(st, "B"), *Ss = dinoc_safetensors_metadata(st, "steps");
    CHECK(Ds && Ks && Bs && Ss);
    if (!Ds || !Ks || !Bs || !Ss) return;
    const int D = atoi(Ds), K = atoi(Ks), B = atoi(Bs), steps = atoi(Ss), nl = 2;
    float    *w0 = tensor(st, "w0", NULL), *b0 = tensor(st, "b0", NULL);
    double   *lr64 = tensor(st, "lr", NULL);
    float    *w = malloc(sizeof(float) * nl * K * D), *b = malloc(sizeof(float) * nl * K);
    float    *mw = calloc((size_t)nl * K * D, sizeof(float)), *mb = calloc((size_t)nl * K, sizeof(float));
    float    *scratch = malloc(sizeof(float) * dinoc_linear_sgd_scratch_floats(B, D, K, nl));
    float     lr[2] = {(float)lr64[0], (float)lr64[1]};
    for (int j = 0; j < nl; j++) {
        memcpy(w + (size_t)j * K * D, w0, sizeof(float) * K * D);
        memcpy(b + (size_t)j * K, b0, sizeof(float) * K);
    }
    for (int s = 0; s < steps; s++) {
        char name[32];
        snprintf(name, sizeof name, "x.%d", s);
        float *x = tensor(st, name, NULL);
        snprintf(name, sizeof name, "y.%d", s);
        int32_t *y = tensor(st, name, NULL);
        double   loss[2];
        dinoc_linear_sgd_step(w, b, mw, mb, x, y, B, D, K, nl, lr, 0.9f, scratch, loss);
        snprintf(name, sizeof name, "loss.%d", s);
        double *want = tensor(st, name, NULL);
        for (int j = 0; j < nl; j++)
            CHECK_MSG(fabs(loss[j] - want[j]) <= 1e-6 * fabs(want[j]), "step %d loss %d: %.9g vs torch %.9g", s, j, loss[j], want[j]);
        /* float32 products summed in other orders (sgemm vs torch's mm): a few ulps */
        snprintf(name, sizeof name, "w.%d", s);
        float *ww = tensor(st, name, NULL);
        CHECK_CLOSE(w, ww, (size_t)nl * K * D, 1e-6, 1e-5, name);
        snprintf(name, sizeof name, "b.%d", s);
        float *wb = tensor(st, name, NULL);
        CHECK_CLOSE(b, wb, (size_t)nl * K, 1e-6, 1e-5, name);
        free(x), free(y), free(want), free(ww), free(wb);
    }
    free(w0), free(b0), free(lr64), free(w), free(b), free(mw), free(mb), free(scratch);
    dinoc_safetensors_close(st);
}

/* K Gaussian clusters at 3 x one-hot, noise 0.5: linearly separable in practice. */
static void clusters(float *x, int32_t *y, int n, int D, int K, uint64_t seed) {
    dinoc_rng r;
    dinoc_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        y[i] = (int32_t)(dinoc_rng_u64(&r) % K);
        for (int d = 0; d < D; d++) x[i * D + d] = 3.0f * (d == y[i]) + 0.5f * dinoc_rng_normal(&r);
    }
}

enum { LTR = 2000, LTE = 500, LD = 16, LK = 4 };

DINOC_TEST(eval_linear_separable_and_deterministic) {
    float   *xtr = malloc(sizeof(float) * LTR * LD), *xte = malloc(sizeof(float) * LTE * LD);
    int32_t  ytr[LTR], yte[LTE];
    clusters(xtr, ytr, LTR, LD, LK, 1);
    clusters(xte, yte, LTE, LD, LK, 2);
    dinoc_linear_config c = dinoc_linear_default();
    c.batch               = 64;
    dinoc_linear_result a, b2, c1;
    CHECK_OK(dinoc_linear_probe(xtr, ytr, LTR, xte, yte, LTE, LD, LK, &c, &a));
    fprintf(stderr, "    best lr %g val %.4f test top-1 %.4f top-5 %.4f\n", a.best_lr, a.val_top1, a.test_top1, a.test_top5);
    CHECK(a.test_top1 >= 0.99 && a.test_top5 == 1.0 && a.val_top1 >= 0.99);
    int best = 0;
    for (int j = 0; j < c.n_lrs; j++) {
        fprintf(stderr, "    lr %g: val %.4f\n", c.lrs[j], a.val_by_lr[j]);
        if (a.val_by_lr[j] > a.val_by_lr[best]) best = j;
    }
    CHECK(a.best_lr == c.lrs[best] && a.val_top1 == a.val_by_lr[best]);
    /* again, and at one thread: identical */
    CHECK_OK(dinoc_linear_probe(xtr, ytr, LTR, xte, yte, LTE, LD, LK, &c, &b2));
    int nt = dinoc_get_threads();
    dinoc_set_threads(1);
    CHECK_OK(dinoc_linear_probe(xtr, ytr, LTR, xte, yte, LTE, LD, LK, &c, &c1));
    dinoc_set_threads(nt);
    CHECK(b2.test_top1 == a.test_top1 && b2.test_top5 == a.test_top5 && b2.best_lr == a.best_lr);
    CHECK(c1.test_top1 == a.test_top1 && c1.best_lr == a.best_lr);
    CHECK(memcmp(a.val_by_lr, b2.val_by_lr, sizeof(double) * c.n_lrs) == 0);
    CHECK(memcmp(a.val_by_lr, c1.val_by_lr, sizeof(double) * c.n_lrs) == 0);
    free(a.val_by_lr), free(b2.val_by_lr), free(c1.val_by_lr);
    free(xtr), free(xte);
}

DINOC_TEST(eval_linear_lr_chosen_on_held_out_train_rows) {
    float   *xtr = malloc(sizeof(float) * LTR * LD), *xte = malloc(sizeof(float) * LTE * LD);
    int32_t  ytr[LTR], yte[LTE], scrambled[LTE];
    clusters(xtr, ytr, LTR, LD, LK, 3);
    clusters(xte, yte, LTE, LD, LK, 4);
    for (int i = 0; i < LTE; i++) scrambled[i] = (yte[i] + 1) % LK;
    /* 1e-7 learns nothing in 2 epochs, 0.1 separates the clusters */
    const double        lrs[2] = {1e-7, 0.1};
    dinoc_linear_config c      = {.lrs = lrs, .n_lrs = 2, .epochs = 2, .batch = 32, .val_fraction = 0.2, .seed = 5};
    dinoc_linear_result a, s;
    CHECK_OK(dinoc_linear_probe(xtr, ytr, LTR, xte, yte, LTE, LD, LK, &c, &a));
    CHECK_OK(dinoc_linear_probe(xtr, ytr, LTR, xte, scrambled, LTE, LD, LK, &c, &s));
    fprintf(stderr, "    val %.4f / %.4f, test %.4f, scrambled test %.4f\n", a.val_by_lr[0], a.val_by_lr[1], a.test_top1, s.test_top1);
    CHECK(a.best_lr == 0.1 && a.val_by_lr[0] < 0.5 && a.val_by_lr[1] > 0.95);
    /* the test labels steer nothing: same choice, same val numbers, only the test score moves */
    CHECK(s.best_lr == a.best_lr && memcmp(s.val_by_lr, a.val_by_lr, sizeof(double) * 2) == 0);
    CHECK(a.test_top1 > 0.95 && s.test_top1 < 0.05);
    free(a.val_by_lr), free(s.val_by_lr);
    /* one held-out row per class (few-shot's split): the same choice on LK rows; with one row per
     * class nothing can be held out, so the first lr is used unchosen (val -1) */
    c.val_per_class = 1;
    CHECK_OK(dinoc_linear_probe(xtr, ytr, LTR, xte, yte, LTE, LD, LK, &c, &a));
    CHECK(a.best_lr == 0.1 && a.val_by_lr[1] == 1.0 && a.test_top1 > 0.95);
    free(a.val_by_lr);
    int32_t one[LK];
    float  *x1 = malloc(sizeof(float) * LK * LD);
    for (int k = 0, n = 0; k < LK; k++) /* the first row of each class */
        for (int i = 0; i < LTR && n == k; i++)
            if (ytr[i] == k) memcpy(x1 + (size_t)n * LD, xtr + (size_t)i * LD, sizeof(float) * LD), one[n++] = k;
    CHECK_OK(dinoc_linear_probe(x1, one, LK, xte, yte, LTE, LD, LK, &c, &a));
    CHECK(a.best_lr == 1e-7 && a.val_top1 == -1 && a.val_by_lr[1] == -1);
    free(a.val_by_lr), free(x1), free(xtr), free(xte);
}

DINOC_TEST(eval_linear_bad_input) {
    float               x[4 * 2] = {1, 0, 0, 1, 1, 0, 0, 1};
    int32_t             y[4] = {0, 1, 0, 1}, bad[4] = {0, 1, 7, 1};
    const double        lrs[1] = {0.1}, neg[1] = {-1};
    dinoc_linear_config c = {.lrs = lrs, .n_lrs = 1, .epochs = 1, .batch = 2, .val_fraction = 0.25, .seed = 0};
    dinoc_linear_result r;
    CHECK_ERR(dinoc_linear_probe(x, y, 4, x, y, 4, 2, 1, &c, &r), DINOC_ERR_ARG, "num_classes");
    CHECK_ERR(dinoc_linear_probe(x, bad, 4, x, y, 4, 2, 2, &c, &r), DINOC_ERR_ARG, "train label 7");
    CHECK_ERR(dinoc_linear_probe(x, y, 4, x, bad, 4, 2, 2, &c, &r), DINOC_ERR_ARG, "test label 7");
    dinoc_linear_config c2 = c;
    c2.val_fraction        = 1.0;
    CHECK_ERR(dinoc_linear_probe(x, y, 4, x, y, 4, 2, 2, &c2, &r), DINOC_ERR_ARG, "val_fraction");
    c2 = c, c2.lrs = neg;
    CHECK_ERR(dinoc_linear_probe(x, y, 4, x, y, 4, 2, 2, &c2, &r), DINOC_ERR_ARG, "learning rate");
    c2 = c, c2.epochs = 0;
    CHECK_ERR(dinoc_linear_probe(x, y, 4, x, y, 4, 2, 2, &c2, &r), DINOC_ERR_ARG, "epochs");
    CHECK(r.val_by_lr == NULL);
}

/* ---- features ------------------------------------------------------------------------------------ */

static dinoc_model *tiny_model(int channels, int image, int patch, int depth) {
    dinoc_vit_config v;
    memset(&v, 0, sizeof v);
    v.arch = DINOC_ARCH_DINOV2_REG, v.dim = 32, v.depth = depth, v.heads = 2, v.ffn_hidden = 64;
    v.ffn = DINOC_FFN_MLP, v.patch = patch, v.channels = channels, v.image_size = image;
    v.n_registers = 2, v.layerscale = 1, v.qkv_bias = 1, v.mask_token = 1, v.ln_eps = 1e-6f;
    v.pos_interp = DINOC_POS_INTERP_SIZE;
    dinoc_model *m = NULL;
    CHECK_OK(dinoc_model_init_random(&m, &v, 42));
    return m;
}

/* Features of items 0..n-1 computed one image at a time: preprocess, forward (batch 1), CLS of the
 * last n blocks normed, mean of the normed patch tokens. */
static float *reference_features(const dinoc_model *m, const dinoc_dataset *ds, int n, dinoc_feature_spec sp, int *dim) {
    const dinoc_vit_config *c  = dinoc_model_config(m);
    const dinoc_preprocess *pp = dinoc_model_preprocess(m);
    const int               D  = c->dim;
    *dim                       = (sp.n_last_blocks + sp.avgpool) * D;
    float       *out = calloc((size_t)n * *dim, sizeof(float)), *x = NULL, *tok = NULL;
    dinoc_state *st  = NULL;
    for (int i = 0; i < n; i++) {
        dinoc_image img;
        int32_t     lab;
        CHECK_OK(dinoc_dataset_get(ds, i, &img, &lab));
        int W, H, T, gh, gw;
        dinoc_preprocess_size(pp, img.w, img.h, &W, &H);
        if (!st) {
            CHECK_OK(dinoc_state_init(&st, m, 1, H, W, DINOC_STATE_HIDDEN));
            x   = malloc(sizeof(float) * 3 * W * H);
            dinoc_state_dims(st, NULL, &T, NULL, &gh, &gw);
            tok = malloc(sizeof(float) * T * D);
        }
        dinoc_state_dims(st, NULL, &T, NULL, &gh, &gw);
        CHECK_OK(dinoc_preprocess_image(pp, &img, x, W, H)); /* [3, H, W]; a 1-channel model reads plane 0 */
        dinoc_image_free(&img);
        CHECK_OK(dinoc_forward(m, st, x, NULL));
        float *f = out + (size_t)i * *dim;
        for (int j = 0; j < sp.n_last_blocks; j++) {
            CHECK_OK(dinoc_state_hidden(m, st, c->depth - sp.n_last_blocks + j, 1, tok));
            memcpy(f + j * D, tok, sizeof(float) * D);
        }
        if (sp.n_last_blocks == 1) CHECK(memcmp(f, dinoc_state_output(st), sizeof(float) * D) == 0);
        if (sp.avgpool) {
            const float *o = dinoc_state_output(st);
            for (int d = 0; d < D; d++) {
                double acc = 0;
                for (int k = T - gh * gw; k < T; k++) acc += o[(size_t)k * D + d];
                f[sp.n_last_blocks * D + d] = (float)(acc / (gh * gw));
            }
        }
    }
    dinoc_state_free(st);
    free(x), free(tok);
    return out;
}

static void compare_features(dinoc_model *m, const dinoc_dataset *ds, dinoc_feature_spec sp, int n, int batch,
                             const char *label) {
    float   *f = NULL;
    int32_t *y = NULL;
    int      dim = 0, rdim = 0;
    CHECK_OK(dinoc_extract_features(m, ds, sp, batch, n, &f, &y, &dim, NULL, NULL));
    float *want = reference_features(m, ds, n, sp, &rdim);
    CHECK(dim == rdim);
    if (f && dim == rdim) CHECK_CLOSE(f, want, (size_t)n * dim, 2e-5, 1e-4, label); /* batch 1 vs batch B sgemm */
    for (int i = 0; y && i < n; i++) {
        dinoc_image img;
        int32_t     lab;
        CHECK_OK(dinoc_dataset_get(ds, i, &img, &lab));
        dinoc_image_free(&img);
        CHECK(y[i] == lab);
    }
    free(f), free(y), free(want);
}

DINOC_TEST(eval_features_match_forward_1ch_28px) {
    dinoc_dataset *ds = NULL;
    CHECK_OK(dinoc_dataset_idx_open(&ds, FMNIST_DIR, 0));
    if (!ds) return;
    dinoc_model *m = tiny_model(1, 28, 7, 3);
    /* the Fashion-MNIST processor: no resize, no crop, /255, FMNIST mean/std: the table fast path */
    m->pp.do_resize = 0, m->pp.do_center_crop = 0, m->pp.do_convert_rgb = 0;
    for (int c = 0; c < 3; c++) m->pp.mean[c] = 0.2860f, m->pp.std[c] = 0.3530f;
    compare_features(m, ds, (dinoc_feature_spec){1, 0}, 10, 4, "cls"); /* batches 4, 4, 2 */
    compare_features(m, ds, (dinoc_feature_spec){3, 1}, 10, 4, "cls x3 + avgpool");
    /* an exact resize to the image's own size is no resize at all (Pillow copies): same path */
    m->pp.do_resize = 1, m->pp.resize_mode = DINOC_RESIZE_EXACT, m->pp.resize_w = m->pp.resize_h = 28;
    compare_features(m, ds, (dinoc_feature_spec){2, 0}, 5, 8, "resize 28");
    dinoc_model_free(m);
    dinoc_dataset_free(ds);
}

DINOC_TEST(eval_features_match_forward_3ch_224px) {
    dinoc_dataset *ds = NULL;
    CHECK_OK(dinoc_dataset_idx_open(&ds, FMNIST_DIR, 0));
    if (!ds) return;
    /* DINOv2's processor (shorter side 256 bicubic, crop 224): grey 28-px images through
     * dinoc_preprocess_image, replicated to RGB */
    dinoc_model *m = tiny_model(3, 224, 16, 2);
    compare_features(m, ds, (dinoc_feature_spec){2, 1}, 3, 2, "3ch 224");
    dinoc_model_free(m);
    dinoc_dataset_free(ds);
}

DINOC_TEST(eval_features_bad_input) {
    dinoc_dataset *ds = NULL;
    CHECK_OK(dinoc_dataset_idx_open(&ds, FMNIST_DIR, 0));
    if (!ds) return;
    dinoc_model *m = tiny_model(1, 28, 7, 2);
    float       *f;
    int32_t     *y;
    int          dim;
    CHECK_ERR(dinoc_extract_features(m, ds, (dinoc_feature_spec){0, 0}, 4, 4, &f, &y, &dim, NULL, NULL), DINOC_ERR_ARG,
              "n_last_blocks 0");
    CHECK_ERR(dinoc_extract_features(m, ds, (dinoc_feature_spec){3, 0}, 4, 4, &f, &y, &dim, NULL, NULL), DINOC_ERR_ARG,
              "n_last_blocks 3");
    CHECK_ERR(dinoc_extract_features(m, ds, (dinoc_feature_spec){1, 0}, 0, 4, &f, &y, &dim, NULL, NULL), DINOC_ERR_ARG,
              "batch");
    /* the default processor crops 224 x 224 from 28-px images: the 28-px model interpolates its
     * position embeddings, which works (slowly); a crop that is not a multiple of the patch fails */
    m->pp.crop_w = m->pp.crop_h = 30;
    CHECK_ERR(dinoc_extract_features(m, ds, (dinoc_feature_spec){1, 0}, 4, 4, &f, &y, &dim, NULL, NULL), DINOC_ERR_SHAPE,
              "multiple of the patch");
    dinoc_model_free(m);
    dinoc_dataset_free(ds);
}

/* ---- ResNet backbones ------------------------------------------------------------------------------ */

/* A random resnet_small folder (1 channel, no fc) under the test's tmp dir; with_pp adds the
 * Fashion-MNIST processor (no resize, no crop, FMNIST mean/std). */
static void resnet_folder(const char *dir, int with_pp) {
    dinoc_resnet_config c;
    CHECK_OK(dinoc_resnet_preset(&c, "resnet_small"));
    c.in_channels = 1, c.num_classes = 0;
    dinoc_resnet *m = NULL;
    CHECK_OK(dinoc_resnet_init_random(&m, &c, 3));
    if (m) CHECK_OK(dinoc_resnet_save(m, dir));
    dinoc_resnet_free(m);
    if (!with_pp) return;
    const char *pp = "{\"do_resize\": false, \"do_center_crop\": false, \"do_normalize\": true, "
                     "\"image_mean\": [0.286, 0.286, 0.286], \"image_std\": [0.353, 0.353, 0.353]}";
    char path[700];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    CHECK_OK(dinoc_write_file_atomic(path, pp, strlen(pp)));
}

DINOC_TEST(eval_features_resnet_folder) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/eval_resnet", dinoc_test_tmpdir());
    resnet_folder(dir, 1);
    dinoc_backbone b;
    CHECK_OK(dinoc_backbone_load(&b, dir, NULL));
    dinoc_dataset *tr = NULL, *te = NULL;
    CHECK_OK(dinoc_dataset_idx_open(&tr, FMNIST_DIR, 1));
    CHECK_OK(dinoc_dataset_idx_open(&te, FMNIST_DIR, 0));
    if (!b.resnet || !tr || !te) {
        dinoc_backbone_free(&b), dinoc_dataset_free(tr), dinoc_dataset_free(te);
        return;
    }
    CHECK(!b.vit && dinoc_backbone_channels(&b) == 1 && !b.pp.do_resize && fabsf(b.pp.std[0] - 0.353f) < 1e-6f);
    float   *ftr = NULL, *fte = NULL;
    int32_t *ytr = NULL, *yte = NULL;
    int      dim = 0, dim2 = 0;
    /* the ViT's spec is ignored (DINO's eval_linear does the same for ResNets): pooled, 64 wide */
    CHECK_OK(dinoc_backbone_features(&b, tr, (dinoc_feature_spec){4, 1}, 64, 300, &ftr, &ytr, &dim, NULL, NULL));
    CHECK_OK(dinoc_backbone_features(&b, te, (dinoc_feature_spec){1, 0}, 64, 100, &fte, &yte, &dim2, NULL, NULL));
    CHECK(dim == 64 && dim2 == 64);
    /* image by image: preprocess (first plane), batch-1 eval forward */
    dinoc_resnet_ws *ws = NULL;
    CHECK_OK(dinoc_resnet_ws_init(&ws, b.resnet, 1, 28, 28, 0));
    float  x[3 * 28 * 28], want[64 * 5];
    for (int i = 0; ws && i < 5; i++) {
        dinoc_image img;
        CHECK_OK(dinoc_dataset_get(tr, i, &img, NULL));
        CHECK_OK(dinoc_preprocess_image(&b.pp, &img, x, 28, 28));
        CHECK_OK(dinoc_resnet_forward(b.resnet, x, 1, 28, 28, want + 64 * i, ws));
        dinoc_image_free(&img);
    }
    /* batch 64 against batch 1: the same per-image sums, rows blocked differently in sgemm */
    if (ftr) CHECK_CLOSE(ftr, want, 64 * 5, 1e-5, 1e-4, "resnet features");
    dinoc_resnet_ws_free(ws);
    if (ftr && fte) {
        const int ks[1] = {20};
        double    top1, top5;
        CHECK_OK(dinoc_knn_eval(ftr, ytr, 300, fte, yte, 100, dim, 10, ks, 1, 0.07f, &top1, &top5));
        /* random conv features already sort Fashion-MNIST well above chance (0.1): measured 0.50 */
        CHECK_MSG(top1 > 0.3 && top5 >= top1, "k-NN on random resnet_small features: top-1 %.3f top-5 %.3f", top1, top5);
        printf("  random resnet_small k-NN (300 train, 100 test, k 20): top-1 %.3f top-5 %.3f\n", top1, top5);
    }
    free(ftr), free(fte), free(ytr), free(yte);
    dinoc_backbone_free(&b);
    /* without preprocessor_config.json: torchvision's evaluation transform (256 / 224) */
    snprintf(dir, sizeof dir, "%s/eval_resnet_nopp", dinoc_test_tmpdir());
    resnet_folder(dir, 0);
    CHECK_OK(dinoc_backbone_load(&b, dir, NULL));
    CHECK(b.resnet && b.pp.do_center_crop && b.pp.crop_w == 224 && b.pp.shortest_edge == 256);
    dinoc_backbone_free(&b);
    /* a broken ResNet config names the field */
    char path[700];
    snprintf(path, sizeof path, "%s/config.json", dir);
    const char *bad = "{\"model_type\": \"resnet\", \"arch\": \"resnet_small\", \"frob\": 1}";
    CHECK_OK(dinoc_write_file_atomic(path, bad, strlen(bad)));
    CHECK_ERR(dinoc_backbone_load(&b, dir, NULL), DINOC_ERR_CONFIG, "frob");
    CHECK(!b.resnet && !b.vit);
    dinoc_dataset_free(tr), dinoc_dataset_free(te);
}
