/* test_dense.c: dense features (src/eval/pca.c, src/eval/segment.c).
 *   - PCA against numpy.linalg.eigh (fixtures from `/usr/bin/python3 tests/py/gen_dense.py
 *     <fixtures>`), with more rows than features and fewer;
 *   - the PCA picture on planted features: the foreground split finds the planted object;
 *   - mIoU / pixel accuracy against numpy on fixed predictions; bilinear upsampling against torch;
 *   - majority-vote patch labels on hand-made masks;
 *   - the probe learns a planted segmentation (mIoU > 0.9);
 *   - extraction from a shapes-layout folder equals the model's own forward, and bad masks fail
 *     naming the file; Fashion-MNIST masks follow the pixel > 24 rule (shapes.h). */
#include "check.h"

#include "../src/eval/dense.h"
#include "../src/viz/viz.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

static dinoc_safetensors *open_fixture(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/dense/%s", dinoc_test_fixtures(), name);
    dinoc_safetensors *st = NULL;
    if (!dinoc_file_exists(path)) {
        CHECK_MSG(0, "fixture %s missing: run /usr/bin/python3 tests/py/gen_dense.py %s", path, dinoc_test_fixtures());
        return NULL;
    }
    CHECK_OK(dinoc_safetensors_open(&st, path));
    return st;
}

/* A fixture tensor's bytes (its own dtype), or NULL after a failed CHECK. */
static const void *tensor(dinoc_safetensors *st, const char *name, int64_t *n) {
    const dinoc_tensor *t = dinoc_safetensors_find(st, name);
    CHECK_MSG(t != NULL, "fixture tensor '%s' missing", name);
    if (t && n) *n = dinoc_tensor_numel(t);
    return t ? t->data : NULL;
}

/* ---- PCA ------------------------------------------------------------------------------------- */

static void pca_case(dinoc_safetensors *st, const char *c) {
    char          nm[64];
    const dinoc_tensor *tx;
    snprintf(nm, sizeof nm, "X.%s", c);
    if (!(tx = dinoc_safetensors_find(st, nm))) {
        CHECK_MSG(0, "fixture tensor %s missing", nm);
        return;
    }
    const int    n = (int)tx->shape[0], D = (int)tx->shape[1], k = 3;
    const float *X = tx->data;
    float       *mean = malloc(sizeof(float) * D), *comp = malloc(sizeof(float) * k * D);
    float       *want = malloc(sizeof(float) * k * D), *wmean = malloc(sizeof(float) * D);
    double       var[3], tot;
    CHECK_OK(dinoc_pca_fit(X, n, D, k, mean, comp, var, &tot));
    snprintf(nm, sizeof nm, "comp.%s", c);
    const double *rc = tensor(st, nm, NULL);
    snprintf(nm, sizeof nm, "var.%s", c);
    const double *rv = tensor(st, nm, NULL);
    snprintf(nm, sizeof nm, "ratio.%s", c);
    const double *rr = tensor(st, nm, NULL);
    snprintf(nm, sizeof nm, "mean.%s", c);
    const double *rm = tensor(st, nm, NULL);
    if (!rc || !rv || !rr || !rm) goto done;
    for (int j = 0; j < k; j++) { /* numpy's sign is arbitrary: align each reference row with ours */
        double dot = 0;
        for (int d = 0; d < D; d++) dot += rc[j * D + d] * comp[j * D + d];
        for (int d = 0; d < D; d++) want[j * D + d] = (float)(dot < 0 ? -rc[j * D + d] : rc[j * D + d]);
        /* variances: float32 covariance (sgemm) against float64; relative 1e-5 is 10x the rounding seen */
        CHECK_MSG(fabs(var[j] - rv[j]) <= 1e-5 * rv[j], "%s var[%d] %.9g vs numpy %.9g", c, j, var[j], rv[j]);
        /* explained variance ratio: the bound */
        CHECK_MSG(fabs(var[j] / tot - rr[j]) <= 1e-4, "%s ratio[%d] %.9g vs numpy %.9g", c, j, var[j] / tot, rr[j]);
        fprintf(stderr, "    %s component %d: var %.6g (numpy %.6g), ratio err %.2g\n", c, j, var[j], rv[j],
                fabs(var[j] / tot - rr[j]));
    }
    for (int d = 0; d < D; d++) wmean[d] = (float)rm[d];
    /* mean: float32 data summed in double, so float rounding only */
    CHECK_CLOSE(mean, wmean, (size_t)D, 1e-5, 1e-5, c);
    /* unit components: eigenvalue gaps >= 1.5x here, so float32 covariance rounding moves them ~1e-6 */
    CHECK_CLOSE(comp, want, (size_t)k * D, 1e-4, 0, c);
done:
    free(mean), free(comp), free(want), free(wmean);
}

DINOC_TEST(dense_pca_matches_numpy) {
    dinoc_safetensors *st = open_fixture("pca.safetensors");
    if (!st) return;
    pca_case(st, "tall");
    pca_case(st, "wide");
    /* bad arguments name the problem */
    float x[6] = {0};
    float m[3], c[9];
    double v[3], t;
    CHECK_ERR(dinoc_pca_fit(x, 1, 3, 1, m, c, v, &t), DINOC_ERR_ARG, ">= 2 rows");
    CHECK_ERR(dinoc_pca_fit(x, 2, 3, 4, m, c, v, &t), DINOC_ERR_ARG, "components");
    dinoc_safetensors_close(st);
}

/* n rows of D features: rows with i % 10 < 3 are the "object" (30%): centre a, the others centre
 * b, plus small noise; the object rows also vary along 3 directions (what the second PCA shows). */
static float *planted(int n, int D, uint64_t seed) {
    float    *X = malloc(sizeof(float) * n * D);
    dinoc_rng r;
    dinoc_rng_seed(&r, seed);
    for (int i = 0; i < n; i++)
        for (int d = 0; d < D; d++) {
            const int obj = i % 10 < 3;
            float     v   = 0.1f * dinoc_rng_normal(&r) + (obj ? (d == 0 ? 4.0f : 0.0f) : (d == 1 ? 1.0f : 0.0f));
            if (obj && d >= 2 && d < 5) v += (float)((i * (d + 1)) % 7) * 0.2f;
            X[i * D + d] = v;
        }
    return X;
}

DINOC_TEST(dense_pca_rgb_finds_planted_foreground) {
    const int n = 200, D = 16;
    float    *X = planted(n, D, 7);
    uint8_t   rgb[200 * 3], fg[200];
    int64_t   nf = 0;
    dinoc_pca_rgb_config cfg = dinoc_pca_rgb_default();
    CHECK_OK(dinoc_pca_rgb(rgb, fg, &nf, X, n, D, &cfg));
    int wrong = 0, bg_lit = 0, lo[3] = {255, 255, 255}, hi[3] = {0, 0, 0};
    for (int i = 0; i < n; i++) {
        wrong += fg[i] != (i % 10 < 3);
        if (!fg[i]) bg_lit += rgb[i * 3] | rgb[i * 3 + 1] | rgb[i * 3 + 2];
        else
            for (int c = 0; c < 3; c++) lo[c] = rgb[i * 3 + c] < lo[c] ? rgb[i * 3 + c] : lo[c], hi[c] = rgb[i * 3 + c] > hi[c] ? rgb[i * 3 + c] : hi[c];
    }
    CHECK_MSG(wrong == 0 && nf == 60, "foreground: %d rows misplaced, %lld kept (want the 60 planted)", wrong, (long long)nf);
    CHECK_MSG(bg_lit == 0, "background rows must be black");
    for (int c = 0; c < 3; c++) CHECK_MSG(lo[c] == 0 && hi[c] == 255, "channel %d spans %d..%d, want 0..255", c, lo[c], hi[c]);
    /* sign -1 flips the auto choice (the majority becomes the foreground); no split keeps all */
    cfg.sign = -1;
    CHECK_OK(dinoc_pca_rgb(rgb, fg, &nf, X, n, D, &cfg));
    CHECK_MSG(nf == 140 && fg[0] == 0 && fg[5] == 1, "flipped sign keeps %lld rows", (long long)nf);
    cfg.foreground = 0;
    CHECK_OK(dinoc_pca_rgb(rgb, fg, &nf, X, n, D, &cfg));
    CHECK(nf == n);
    free(X);
}

/* ---- segmentation scores and upsampling ------------------------------------------------------- */

DINOC_TEST(dense_seg_scores_match_numpy) {
    dinoc_safetensors *st = open_fixture("seg.safetensors");
    if (!st) return;
    int64_t        n = 0;
    const uint8_t *truth = tensor(st, "truth", &n), *pred = tensor(st, "pred", NULL);
    const double  *iou = tensor(st, "iou", NULL), *miou = tensor(st, "miou", NULL), *acc = tensor(st, "pixel_acc", NULL);
    if (!truth || !pred || !iou || !miou || !acc) goto done;
    int64_t conf[36] = {0};
    double  got[6], gm, ga;
    dinoc_seg_confusion_add(conf, truth, pred, (size_t)n, 6);
    dinoc_seg_scores(conf, 6, got, &gm, &ga);
    for (int k = 0; k < 6; k++) /* counts are exact; 1e-12 leaves room for the order of one division */
        CHECK_MSG(isnan(iou[k]) ? isnan(got[k]) : fabs(got[k] - iou[k]) <= 1e-12, "iou[%d] %.12g vs %.12g", k, got[k], iou[k]);
    CHECK_MSG(fabs(gm - miou[0]) <= 1e-12 && fabs(ga - acc[0]) <= 1e-12, "miou %.12g vs %.12g, acc %.12g vs %.12g", gm,
              miou[0], ga, acc[0]);
    fprintf(stderr, "    miou %.6f (numpy %.6f), pixel acc %.6f\n", gm, miou[0], ga);
done:
    dinoc_safetensors_close(st);
}

DINOC_TEST(dense_seg_upsample_matches_torch) {
    dinoc_safetensors *st = open_fixture("seg.safetensors");
    if (!st) return;
    for (const char *c = "ab"; *c; c++) {
        char nm[32];
        snprintf(nm, sizeof nm, "up_in.%c", *c);
        const dinoc_tensor *ti = dinoc_safetensors_find(st, nm);
        snprintf(nm, sizeof nm, "up_out.%c", *c);
        const dinoc_tensor *to = dinoc_safetensors_find(st, nm);
        CHECK_MSG(ti && to, "fixture tensors %s missing", nm);
        if (!ti || !to) continue;
        const int C = (int)ti->shape[2], oh = (int)to->shape[0], ow = (int)to->shape[1];
        float    *out = malloc(sizeof(float) * oh * ow * C);
        dinoc_seg_upsample(out, ti->data, C, (int)ti->shape[0], (int)ti->shape[1], oh, ow);
        /* same float formula as torch's CPU kernel; 1e-5 covers a different order of the 4 taps */
        CHECK_CLOSE(out, (const float *)to->data, (size_t)oh * ow * C, 1e-5, 1e-5, nm);
        free(out);
    }
    dinoc_safetensors_close(st);
}

DINOC_TEST(dense_seg_patch_labels_majority) {
    /* 4 x 4 mask, 2 x 2 grid: each cell 2 x 2; the top-right cell is a 2-2 tie -> lower class */
    const uint8_t m[16] = {1, 1, 2, 0,
                           1, 0, 2, 0,
                           0, 0, 2, 2,
                           0, 0, 2, 1};
    int32_t lab[4];
    dinoc_seg_patch_labels(lab, m, 4, 4, 2, 2, 3);
    CHECK_MSG(lab[0] == 1 && lab[1] == 0 && lab[2] == 0 && lab[3] == 2, "labels %d %d %d %d, want 1 0 0 2", lab[0],
              lab[1], lab[2], lab[3]);
    /* a grid finer than the mask: every cell still reads one pixel (3 x 1 mask, 3 x 3 grid) */
    const uint8_t m2[3] = {0, 1, 2};
    int32_t       l2[9];
    dinoc_seg_patch_labels(l2, m2, 3, 1, 3, 3, 3);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++) CHECK_MSG(l2[r * 3 + c] == c, "cell (%d,%d) = %d, want %d", r, c, l2[r * 3 + c], c);
}

/* ---- the probe on planted features ------------------------------------------------------------ */

/* Image i's patch labels on a g x g grid: background, a class-1 rectangle and a class-2 one. */
static void planted_grid(int32_t *lab, int g, int i) {
    for (int p = 0; p < g * g; p++) {
        const int r = p / g, c = p % g;
        const int a = i % 3, bq = (i / 3) % 3;
        lab[p] = r >= a && r < a + 3 && c < 3 ? 1 : (r >= bq && c >= g - 2 ? 2 : 0);
    }
}

DINOC_TEST(dense_seg_probe_learns_planted_segmentation) {
    const int g = 6, Np = g * g, D = 24, K = 3, ntr = 40, nte = 12, up = 4;
    float    *X = malloc(sizeof(float) * (ntr + nte) * Np * D), centre[3][24];
    int32_t  *y = malloc(sizeof(int32_t) * (ntr + nte) * Np);
    dinoc_rng r;
    dinoc_rng_seed(&r, 11);
    for (int k = 0; k < K; k++)
        for (int d = 0; d < D; d++) centre[k][d] = dinoc_rng_normal(&r);
    for (int i = 0; i < ntr + nte; i++) {
        planted_grid(y + i * Np, g, i);
        for (int p = 0; p < Np; p++)
            for (int d = 0; d < D; d++) /* noise as large as the centres' spread, per feature */
                X[((size_t)i * Np + p) * D + d] = centre[y[i * Np + p]][d] + 1.0f * dinoc_rng_normal(&r) + 3.0f;
    }
    dinoc_seg_config cfg = dinoc_seg_default();
    dinoc_seg_head   h;
    CHECK_OK(dinoc_seg_head_fit(&h, X, y, (int64_t)ntr * Np, Np, D, K, &cfg));
    if (!h.w) goto done;
    const int W = g * up;
    uint8_t  *mask = malloc((size_t)W * W), *pred = malloc((size_t)W * W);
    float    *scr  = malloc(sizeof(float) * dinoc_seg_predict_scratch_floats(&h, g, g, W, W));
    int64_t   conf[9] = {0};
    for (int i = ntr; i < ntr + nte; i++) {
        for (int p = 0; p < W * W; p++) mask[p] = (uint8_t)y[i * Np + (p / W / up) * g + (p % W) / up];
        dinoc_seg_predict(&h, X + (size_t)i * Np * D, g, g, W, W, pred, scr);
        dinoc_seg_confusion_add(conf, mask, pred, (size_t)W * W, K);
    }
    double iou[3], miou, acc;
    dinoc_seg_scores(conf, K, iou, &miou, &acc);
    fprintf(stderr, "    planted: lr %g (val patch acc %.3f), test mIoU %.4f (IoU %.3f %.3f %.3f), pixel acc %.4f\n", h.lr,
            h.val_acc, miou, iou[0], iou[1], iou[2], acc);
    /* the bar; bilinear logits blur block edges a little, so not 1 */
    CHECK_MSG(miou > 0.9, "planted segmentation mIoU %.4f <= 0.9", miou);
    /* determinism: the same fit at 1 and at 2 threads gives the same weights, bit for bit */
    dinoc_seg_head h2;
    const int      nt = dinoc_get_threads();
    for (int t = 1; t <= 2; t++) {
        dinoc_set_threads(t);
        CHECK_OK(dinoc_seg_head_fit(&h2, X, y, (int64_t)ntr * Np, Np, D, K, &cfg));
        CHECK_MSG(h2.w && memcmp(h.w, h2.w, sizeof(float) * K * D) == 0 && h.lr == h2.lr &&
                      memcmp(h.val_by_lr, h2.val_by_lr, sizeof(double) * cfg.n_lrs) == 0,
                  "the fit at %d threads differs", t);
        dinoc_seg_head_free(&h2);
    }
    dinoc_set_threads(nt);
    free(mask), free(pred), free(scr);
    /* labels out of range are refused, naming the row */
    y[5] = 7;
    CHECK_ERR(dinoc_seg_head_fit(&h2, X, y, (int64_t)ntr * Np, Np, D, K, &cfg), DINOC_ERR_ARG, "row 5");
done:
    dinoc_seg_head_free(&h);
    free(X), free(y);
}

/* ---- data and extraction ---------------------------------------------------------------------- */

/* dir/classes.txt and n 16 x 16 images in dir/<split>/{images,masks}: a grey square of class 1 at
 * a position set by the index on black. bad >= 0: that item's mask holds class 9. */
static void write_shapes(const char *dir, const char *split, int n, int bad) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s/images", dir, split);
    CHECK_OK(dinoc_mkdir(p));
    snprintf(p, sizeof p, "%s/%s/masks", dir, split);
    CHECK_OK(dinoc_mkdir(p));
    snprintf(p, sizeof p, "%s/classes.txt", dir);
    CHECK_OK(dinoc_write_file_atomic(p, "background\r\nsquare\n\n", 20));
    for (int i = 0; i < n; i++) {
        uint8_t rgb[16 * 16 * 3], m[16 * 16];
        for (int q = 0; q < 256; q++) {
            const int y = q / 16, x = q % 16, in = y >= i % 8 && y < i % 8 + 8 && x >= 4 && x < 12;
            m[q] = (uint8_t)(in ? 1 : 0);
            rgb[3 * q] = rgb[3 * q + 1] = rgb[3 * q + 2] = (uint8_t)(in ? 200 : 10);
        }
        if (i == bad) m[17] = 9;
        snprintf(p, sizeof p, "%s/%s/images/%06d.png", dir, split, i);
        CHECK_OK(dinoc_viz_png_write(p, rgb, 16, 16, 3));
        snprintf(p, sizeof p, "%s/%s/masks/%06d.png", dir, split, i);
        CHECK_OK(dinoc_viz_png_write(p, m, 16, 16, 1));
    }
}

DINOC_TEST(dense_seg_extract_equals_forward) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/dense_shapes", dinoc_test_tmpdir());
    write_shapes(dir, "train", 5, -1);
    write_shapes(dir, "test", 2, 1);
    dinoc_vit_config c;
    CHECK_OK(dinoc_vit_preset(&c, "vit-tiny-dino"));
    c.channels = 3, c.depth = 2, c.image_size = 16, c.dim = 48, c.heads = 2, c.ffn_hidden = 96;
    dinoc_model  *m   = NULL;
    dinoc_segset *set = NULL;
    CHECK_OK(dinoc_model_init_random(&m, &c, 3));
    CHECK_OK(dinoc_segset_open_shapes(&set, dir, 1));
    if (!m || !set) goto done;
    CHECK(dinoc_segset_num_classes(set) == 2 && strcmp(dinoc_segset_class_name(set, 1), "square") == 0);
    dinoc_seg_spec     spec = {2, 16, 2}; /* batch 2 over 5 items: a short last batch */
    dinoc_seg_features f;
    CHECK_OK(dinoc_seg_extract(m, set, spec, 0, 1, &f, NULL, NULL));
    if (!f.feats) goto done;
    CHECK(f.n == 5 && f.gh == 4 && f.gw == 4 && f.dim == 96 && f.mask_w[4] == 16);
    /* item 3 by hand: preprocess (exact 16 x 16, no crop), forward, normed last tokens */
    dinoc_image img;
    uint8_t    *mask = NULL;
    CHECK_OK(dinoc_segset_get(set, 3, &img, &mask));
    dinoc_preprocess pp = *dinoc_model_preprocess(m);
    pp.do_resize = 1, pp.resize_mode = DINOC_RESIZE_EXACT, pp.resize_w = pp.resize_h = 16, pp.do_center_crop = 0;
    float       x[3 * 256], hid[17 * 48], want[16 * 48], got[16 * 48];
    dinoc_state *s = NULL;
    CHECK_OK(dinoc_preprocess_image(&pp, &img, x, 16, 16));
    CHECK_OK(dinoc_state_init(&s, m, 1, 16, 16, DINOC_STATE_HIDDEN));
    CHECK_OK(dinoc_forward(m, s, x, NULL));
    CHECK_OK(dinoc_state_hidden(m, s, 0, 1, hid));
    for (int p = 0; p < 16; p++) /* columns: block 0 (normed) then the output */
        for (int d = 0; d < 48; d++) {
            want[p * 48 + d] = dinoc_state_output(s)[(1 + p) * 48 + d];
            got[p * 48 + d]  = f.feats[(3 * 16 + p) * 96 + 48 + d];
        }
    /* the same forward on the same input in another batch: only BLAS blocking differs */
    CHECK_CLOSE(got, want, 16 * 48, 1e-5, 1e-5, "last block patch tokens");
    for (int p = 0; p < 16; p++)
        for (int d = 0; d < 48; d++) want[p * 48 + d] = hid[(1 + p) * 48 + d], got[p * 48 + d] = f.feats[(3 * 16 + p) * 96 + d];
    CHECK_CLOSE(got, want, 16 * 48, 1e-5, 1e-5, "block 0 patch tokens");
    int32_t lab[16];
    dinoc_seg_patch_labels(lab, mask, 16, 16, 4, 4, 2);
    CHECK(memcmp(lab, f.labels + 3 * 16, sizeof lab) == 0);
    CHECK(memcmp(mask, f.masks + f.mask_off[3], 256) == 0);
    dinoc_state_free(s), dinoc_image_free(&img), free(mask);
    dinoc_seg_features_free(&f);
    /* a mask value beyond classes.txt fails naming the mask file */
    dinoc_segset_free(set);
    set = NULL;
    CHECK_OK(dinoc_segset_open_shapes(&set, dir, 0));
    if (set) CHECK_ERR(dinoc_seg_extract(m, set, spec, 0, 1, &f, NULL, NULL), DINOC_ERR_FORMAT, "masks/000001.png");
    dinoc_segset *none = NULL;
    CHECK_ERR(dinoc_segset_open_shapes(&none, "/nonexistent-dense", 1), DINOC_ERR_IO, "classes.txt");
    CHECK(none == NULL);
done:
    dinoc_segset_free(set);
    dinoc_model_free(m);
}

DINOC_TEST(dense_fashion_masks_threshold) {
    dinoc_segset  *set = NULL;
    dinoc_dataset *ds  = NULL;
    CHECK_OK(dinoc_segset_open_fashion(&set, FMNIST_DIR, 0));
    CHECK_OK(dinoc_dataset_idx_open(&ds, FMNIST_DIR, 0));
    if (!set || !ds) goto done;
    CHECK(dinoc_segset_num_classes(set) == 11 && strcmp(dinoc_segset_class_name(set, 0), "background") == 0);
    CHECK(strcmp(dinoc_segset_class_name(set, 10), dinoc_dataset_class_name(ds, 9)) == 0);
    for (int64_t i = 0; i < 3; i++) {
        dinoc_image img, raw;
        uint8_t    *mask = NULL;
        int32_t     label = -1;
        CHECK_OK(dinoc_segset_get(set, i, &img, &mask));
        CHECK_OK(dinoc_dataset_get(ds, i, &raw, &label));
        if (!mask || !raw.data) continue;
        int fg = 0, bad = 0;
        for (int p = 0; p < raw.w * raw.h; p++) {
            const int want = raw.data[p] > 24 ? label + 1 : 0;
            fg += want != 0, bad += mask[p] != want;
        }
        CHECK_MSG(bad == 0 && fg > 20, "item %lld: %d foreground pixels, %d off the > 0.25 * 255 rule", (long long)i, fg, bad);
        dinoc_image_free(&img), dinoc_image_free(&raw), free(mask);
    }
done:
    dinoc_dataset_free(ds);
    dinoc_segset_free(set);
}
