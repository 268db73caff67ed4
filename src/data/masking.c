/* masking.c: DINOv2's block-wise mask generator and mask collate (see masking.h).
 * Tested by tests/test_dinov2_masking.c (statistics vs tests/py/gen_dinov2.py's Python generator,
 * and invariants). */
#include "masking.h"

#include <math.h>
#include <string.h>

/* Python's random.random(): 53 random bits in [0, 1). */
static double uniform01(dinoc_rng *r) { return (double)(dinoc_rng_u64(r) >> 11) * 0x1.0p-53; }
/* random.uniform(a, b) = a + (b - a) * random() (b < a allowed, as in Python) */
static double uniform(dinoc_rng *r, double a, double b) { return a + (b - a) * uniform01(r); }
/* random.randint(0, n): inclusive, n >= 0 (the modulo bias of a 64-bit draw is negligible) */
static int randint0(dinoc_rng *r, int n) { return (int)(dinoc_rng_u64(r) % (uint64_t)(n + 1)); }

dinoc_status dinoc_mask_generator_init(dinoc_mask_generator *g, int h, int w) {
    if (h < 1 || w < 1) return dinoc_fail(DINOC_ERR_ARG, "mask generator: patch grid %dx%d must be at least 1x1", h, w);
    g->h = h, g->w = w, g->min_patches = 4;
    /* train.py: max_num_patches = 0.5 * img // patch * img // patch, i.e. floor(0.5 * h) * w */
    g->max_patches   = (int)floor(0.5 * h) * w;
    if (g->max_patches < 1) g->max_patches = 1;
    g->log_aspect[0] = log(0.3), g->log_aspect[1] = log(1 / 0.3);
    return DINOC_OK;
}

/* MaskingGenerator._mask: up to 10 tries of one block adding at most max_add new patches;
 * returns the patches added by the first try that adds any. */
static int add_block(const dinoc_mask_generator *g, uint8_t *mask, int max_add, dinoc_rng *rng, dinoc_mask_stats *st) {
    for (int attempt = 0; attempt < 10; attempt++) {
        const double area = uniform(rng, g->min_patches, max_add);
        const double ar   = exp(uniform(rng, g->log_aspect[0], g->log_aspect[1]));
        /* Python's round() rounds halves to even, as rint() in the default rounding mode */
        const int h = (int)rint(sqrt(area * ar)), w = (int)rint(sqrt(area / ar));
        if (!(w < g->w && h < g->h)) continue;
        const int top = randint0(rng, g->h - h), left = randint0(rng, g->w - w);
        int       already = 0;
        for (int i = top; i < top + h; i++)
            for (int j = left; j < left + w; j++) already += mask[i * g->w + j];
        const int added = h * w - already;
        if (added > 0 && added <= max_add) {
            for (int i = top; i < top + h; i++)
                for (int j = left; j < left + w; j++) mask[i * g->w + j] = 1;
            if (st) st->blocks++, st->sum_h += h, st->sum_w += w, st->sum_log_hw += log((double)h / w);
            return added;
        }
    }
    return 0;
}

int dinoc_mask_generate(const dinoc_mask_generator *g, uint8_t *mask, int target, dinoc_rng *rng,
                        dinoc_mask_stats *st) {
    memset(mask, 0, (size_t)g->h * g->w);
    int count = 0;
    while (count < target) {
        int max_add = target - count;
        if (max_add > g->max_patches) max_add = g->max_patches;
        const int delta = add_block(g, mask, max_add, rng, st);
        if (delta == 0) break;
        count += delta;
    }
    return count;
}

void dinoc_mask_batch_free(dinoc_mask_batch *mb) {
    dinoc_free(mb->masks), dinoc_free(mb->target), dinoc_free(mb->count), dinoc_free(mb->index);
    dinoc_free(mb->weight), dinoc_free(mb->order);
    memset(mb, 0, sizeof *mb);
}

dinoc_status dinoc_mask_batch_init(dinoc_mask_batch *mb, int n_img, int Np) {
    memset(mb, 0, sizeof *mb);
    if (n_img < 1 || Np < 1) return dinoc_fail(DINOC_ERR_ARG, "mask batch of %d images x %d patches", n_img, Np);
    const size_t n = (size_t)n_img * Np;
    mb->n_img = n_img, mb->Np = Np;
    mb->masks  = dinoc_calloc(n, 1);
    mb->target = dinoc_calloc((size_t)n_img, sizeof(int));
    mb->count  = dinoc_calloc((size_t)n_img, sizeof(int));
    mb->order  = dinoc_calloc((size_t)n_img, sizeof(int));
    mb->index  = dinoc_calloc(n, sizeof(int));
    mb->weight = dinoc_calloc(n, sizeof(float));
    if (!mb->masks || !mb->target || !mb->count || !mb->order || !mb->index || !mb->weight) {
        dinoc_mask_batch_free(mb);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for masks of %d images x %d patches", n_img, Np);
    }
    return DINOC_OK;
}

void dinoc_mask_batch_index(dinoc_mask_batch *mb) {
    int m = 0;
    for (int b = 0; b < mb->n_img; b++) {
        const uint8_t *mk = mb->masks + (size_t)b * mb->Np;
        int            c  = 0;
        for (int i = 0; i < mb->Np; i++) c += mk[i] != 0;
        mb->count[b] = c;
        /* masks_weight = 1 / clamp(count, min 1), formed in float32 as torch does */
        const float w = 1.0f / (float)(c > 0 ? c : 1);
        for (int i = 0; i < mb->Np; i++)
            if (mk[i]) mb->index[m] = b * mb->Np + i, mb->weight[m] = w, m++;
    }
    mb->n_masked = m;
}

/* torch.linspace(lo, hi, n)[i] in float32 (the first half counts up from lo, the second down
 * from hi, as torch's CPU kernel does) */
static float linspace_f(float lo, float hi, int n, int i) {
    if (n == 1) return lo;
    const float step = (hi - lo) / (float)(n - 1);
    return i < n / 2 ? lo + step * (float)i : hi - step * (float)(n - 1 - i);
}

int dinoc_mask_upperbound(int n_img, int Np, double mask_prob, double ratio_min, double ratio_max) {
    const int n  = (int)(n_img * mask_prob);
    int       ub = 0;
    for (int i = 0; i < n; i++) ub += (int)((float)Np * linspace_f((float)ratio_min, (float)ratio_max, n + 1, i + 1));
    return ub;
}

dinoc_status dinoc_mask_collate(dinoc_mask_batch *mb, const dinoc_mask_generator *g, double mask_prob,
                                double ratio_min, double ratio_max, dinoc_rng *rng, dinoc_mask_stats *st) {
    if (!(mask_prob >= 0 && mask_prob <= 1))
        return dinoc_fail(DINOC_ERR_ARG, "mask probability %g outside [0, 1]", mask_prob);
    if (!(ratio_min >= 0 && ratio_min <= ratio_max && ratio_max <= 1))
        return dinoc_fail(DINOC_ERR_ARG, "mask ratios (%g, %g): need 0 <= min <= max <= 1", ratio_min, ratio_max);
    if (g->h * g->w != mb->Np)
        return dinoc_fail(DINOC_ERR_ARG, "mask generator grid %dx%d does not match %d patches per image", g->h,
                          g->w, mb->Np);
    const int n = (int)(mb->n_img * mask_prob), N = mb->Np;
    mb->upperbound = dinoc_mask_upperbound(mb->n_img, N, mask_prob, ratio_min, ratio_max);
    /* random.shuffle of the list of masks == drawing the image each mask lands on (Fisher-Yates) */
    for (int b = 0; b < mb->n_img; b++) mb->order[b] = b;
    for (int b = mb->n_img - 1; b > 0; b--) {
        const int j = randint0(rng, b), t = mb->order[b];
        mb->order[b] = mb->order[j], mb->order[j] = t;
    }
    for (int i = 0; i < mb->n_img; i++) {
        const int b = mb->order[i];
        int       target = 0;
        if (i < n) { /* stratum i of the ratio range, all in float32 as the torch tensors are */
            const float lo = linspace_f((float)ratio_min, (float)ratio_max, n + 1, i);
            const float hi = linspace_f((float)ratio_min, (float)ratio_max, n + 1, i + 1);
            target         = (int)((float)N * (lo + (hi - lo) * (float)uniform01(rng)));
        }
        mb->target[b] = target;
        dinoc_mask_generate(g, mb->masks + (size_t)b * N, target, rng, st);
    }
    dinoc_mask_batch_index(mb);
    return DINOC_OK;
}
