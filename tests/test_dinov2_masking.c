/* test_dinov2_masking.c: DINOv2's mask generator and collate (src/data/masking.c).
 *   - invariants on every draw: count <= target <= int(Np * stratum max), unmasked images empty,
 *     a block never exceeds the generator's max, token weights sum to 1 per masked image,
 *     n_masked <= upperbound, the flat index list matches the masks;
 *   - statistics over many collates against the Python generator written from the reference
 *     (tests/py/gen_dinov2.py, Python's random: the draws differ, the distributions must not): mean
 *     masked ratio per stratum, accepted blocks per batch (mean and quantiles), block sides and
 *     log aspect, masked tokens per batch. Every mean must agree within 5 standard errors of the
 *     difference of two independent sample means (a false alarm has odds ~ 1e-6 per check). */
#include "check.h"
#include "../src/data/masking.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* numpy's default (linear) quantile of sorted v[n] */
static double quantile(const double *v, int n, double q) {
    double pos = q * (n - 1);
    int    i   = (int)pos;
    return i + 1 < n ? v[i] + (pos - i) * (v[i + 1] - v[i]) : v[n - 1];
}

/* |a - b| within 5 standard errors of a difference of two means of n draws each */
static void check_mean(double a, double sa, double b, double sb, double n, double slack, const char *what) {
    double se = sqrt(sa * sa / n + sb * sb / n);
    CHECK_MSG(fabs(a - b) <= 5 * se + slack, "%s: C %.4f vs Python %.4f (5 SE = %.4f)", what, a, b, 5 * se);
}

static const double *fx(const dinoc_safetensors *st, const char *case_, const char *name, int n) {
    char key[64];
    snprintf(key, sizeof key, "%s/%s", case_, name);
    const dinoc_tensor *t = dinoc_safetensors_find(st, key);
    CHECK_MSG(t && t->dtype == DINOC_DTYPE_F64 && dinoc_tensor_numel(t) == n, "fixture '%s' missing or wrong", key);
    return t && t->dtype == DINOC_DTYPE_F64 && dinoc_tensor_numel(t) == n ? (const double *)t->data : NULL;
}

static void stats_case(const dinoc_safetensors *st, const char *case_) {
    const double *meta = fx(st, case_, "meta", 7);
    if (!meta) return;
    const int    h = (int)meta[0], w = (int)meta[1], n_img = (int)meta[2], draws = (int)meta[3];
    const double prob = meta[4], rmin = meta[5], rmax = meta[6];
    const int    S = (int)(n_img * prob), N = h * w;
    const double *rm = fx(st, case_, "ratio_mean", S), *rs = fx(st, case_, "ratio_std", S);
    const double *bl = fx(st, case_, "blocks", 5), *hw = fx(st, case_, "hw", 6), *nm = fx(st, case_, "n_masked", 2);
    if (!rm || !rs || !bl || !hw || !nm) return;
    dinoc_mask_generator g;
    dinoc_mask_batch     mb;
    CHECK_OK(dinoc_mask_generator_init(&g, h, w));
    CHECK_OK(dinoc_mask_batch_init(&mb, n_img, N));
    dinoc_rng rng;
    dinoc_rng_seed(&rng, 77);
    double *r1 = calloc((size_t)S, sizeof(double)), *r2 = calloc((size_t)S, sizeof(double));
    double *blocks = calloc((size_t)draws, sizeof(double)), nm1 = 0, nm2 = 0;
    dinoc_mask_stats ms = {0};
    int              bad = 0;
    for (int d = 0; d < draws; d++) {
        int64_t before = ms.blocks;
        CHECK_OK(dinoc_mask_collate(&mb, &g, prob, rmin, rmax, &rng, &ms));
        blocks[d] = (double)(ms.blocks - before);
        nm1 += mb.n_masked, nm2 += (double)mb.n_masked * mb.n_masked;
        bad += mb.n_masked > mb.upperbound;
        for (int i = 0; i < n_img; i++) {
            int b = mb.order[i];
            if (i < S) {
                double r = (double)mb.count[b] / N;
                r1[i] += r, r2[i] += r * r;
                bad += mb.count[b] > mb.target[b];
            } else {
                bad += mb.count[b] != 0 || mb.target[b] != 0;
            }
        }
        /* weights: 1 / count for each listed token, so each masked image sums to 1 */
        double wsum[64] = {0};
        for (int m = 0; m < mb.n_masked; m++) {
            int b = mb.index[m] / N;
            bad += !mb.masks[mb.index[m]] || (m > 0 && mb.index[m] <= mb.index[m - 1]);
            if (b < 64) wsum[b] += mb.weight[m];
        }
        for (int b = 0; b < n_img && b < 64; b++)
            bad += mb.count[b] > 0 && fabs(wsum[b] - 1) > 1e-5; /* float sums of count terms */
    }
    CHECK_MSG(bad == 0, "%s: %d invariant violations", case_, bad);
    for (int i = 0; i < S; i++) {
        double m = r1[i] / draws, sd = sqrt(fmax(r2[i] / draws - m * m, 0));
        char   what[64];
        snprintf(what, sizeof what, "%s stratum %d masked ratio", case_, i);
        check_mean(m, sd, rm[i], rs[i], draws, 0.0, what);
    }
    double bm = 0, bs = 0;
    for (int d = 0; d < draws; d++) bm += blocks[d];
    bm /= draws;
    for (int d = 0; d < draws; d++) bs += (blocks[d] - bm) * (blocks[d] - bm);
    bs = sqrt(bs / draws);
    check_mean(bm, bs, bl[0], bl[1], draws, 0.0, "accepted blocks per batch");
    qsort(blocks, (size_t)draws, sizeof(double), cmp_double);
    const double qs[3] = {0.1, 0.5, 0.9}, phi[3] = {0.175, 0.399, 0.175};
    for (int k = 0; k < 3; k++) {
        /* quantile SE ~ sqrt(q(1-q)/n) * std / phi(z_q) (normal approximation), for a difference x sqrt 2;
         * +1: the counts are integers */
        double se = sqrt(qs[k] * (1 - qs[k]) / draws) * bs / phi[k] * sqrt(2.0);
        double got = quantile(blocks, draws, qs[k]);
        CHECK_MSG(fabs(got - bl[2 + k]) <= 5 * se + 1, "%s blocks per batch q%.0f: C %.2f vs Python %.2f (bound %.2f)",
                  case_, qs[k] * 100, got, bl[2 + k], 5 * se + 1);
    }
    const double nb = (double)ms.blocks;
    /* block sides: the SE uses Python's std for both sides (same distribution under the null) and
     * the C block count (the two counts agree within a few percent) */
    check_mean(ms.sum_h / nb, hw[1], hw[0], hw[1], nb, 0.0, "block height");
    check_mean(ms.sum_w / nb, hw[3], hw[2], hw[3], nb, 0.0, "block width");
    check_mean(ms.sum_log_hw / nb, hw[5], hw[4], hw[5], nb, 0.0, "block log(h/w)");
    double nmm = nm1 / draws, nms = sqrt(fmax(nm2 / draws - nmm * nmm, 0));
    check_mean(nmm, nms, nm[0], nm[1], draws, 0.0, "masked tokens per batch");
    printf("  %s: blocks/batch C %.2f Python %.2f; masked/batch C %.1f Python %.1f; h C %.3f Python %.3f\n", case_,
           bm, bl[0], nmm, nm[0], ms.sum_h / nb, hw[0]);
    free(r1), free(r2), free(blocks);
    dinoc_mask_batch_free(&mb);
}

DINOC_TEST(dinov2_mask_statistics) {
    char path[1024];
    snprintf(path, sizeof path, "%s/dinov2/masks.safetensors", dinoc_test_fixtures());
    dinoc_safetensors *st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, path));
    if (!st) return;
    stats_case(st, "g4");
    stats_case(st, "g16");
    dinoc_safetensors_close(st);
}

DINOC_TEST(dinov2_mask_generator_edges) {
    dinoc_mask_generator g;
    CHECK_ERR(dinoc_mask_generator_init(&g, 0, 4), DINOC_ERR_ARG, "grid");
    CHECK_OK(dinoc_mask_generator_init(&g, 4, 4));
    CHECK(g.max_patches == 8);
    uint8_t   m[16];
    dinoc_rng r;
    dinoc_rng_seed(&r, 3);
    for (int t = 0; t <= 16; t++) {
        int c = dinoc_mask_generate(&g, m, t, &r, NULL), s = 0;
        for (int i = 0; i < 16; i++) s += m[i];
        CHECK(c == s && c <= t);
    }
    dinoc_mask_batch mb;
    CHECK_OK(dinoc_mask_batch_init(&mb, 4, 16));
    CHECK_ERR(dinoc_mask_collate(&mb, &g, 1.5, 0.1, 0.5, &r, NULL), DINOC_ERR_ARG, "probability");
    CHECK_ERR(dinoc_mask_collate(&mb, &g, 0.5, 0.6, 0.5, &r, NULL), DINOC_ERR_ARG, "ratios");
    dinoc_mask_generator g2;
    CHECK_OK(dinoc_mask_generator_init(&g2, 3, 3));
    CHECK_ERR(dinoc_mask_collate(&mb, &g2, 0.5, 0.1, 0.5, &r, NULL), DINOC_ERR_ARG, "grid");
    /* probability 0: no masks at all */
    CHECK_OK(dinoc_mask_collate(&mb, &g, 0.0, 0.1, 0.5, &r, NULL));
    CHECK(mb.n_masked == 0 && mb.upperbound == 0);
    dinoc_mask_batch_free(&mb);
}
