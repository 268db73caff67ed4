/* optim.c: AdamW (torch.optim.AdamW, torch 1.13 single-tensor path), global and per-parameter
 * gradient clipping (torch.nn.utils.clip_grad_norm_, DINO utils.clip_gradients) and DINO/DINOv2
 * parameter-group rules. Tested by tests/test_optim.c: 10 steps replayed against PyTorch fixtures
 * (tests/py/gen_optim.py) compared per step, thread-count determinism, frozen groups, group rules.
 *
 * Float rounding follows what torch 1.13's CPU kernels (AVX2 build, where GCC fuses a*b+c in the
 * Vectorized<float> lambdas) do for each statement of _single_tensor_adamw, so results match bit
 * for bit (tests/test_optim.c measures 0 differing bits over 2 x 10 steps):
 *   param.mul_(1 - lr*wd)                 p = p * (float)(1 - lr*wd)          (scalar made float)
 *   exp_avg.mul_(b1).add_(g, alpha=1-b1)  m = fmaf(g, (float)(1-b1), m*(float)b1)
 *   exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2)
 *                                         v = fmaf((float)(1-b2) * g, g, v*(float)b2)
 *   denom = (v.sqrt() / sqrt(bc2)).add_(eps)
 *                                         d = sqrtf(v) / (float)sqrt(bc2) + (float)eps
 *   param.addcdiv_(m, denom, value=-lr/bc1)  p = p + ((float)(-lr/bc1) * m) / d
 * The double scalars (1 - lr*wd, bias corrections, lr/bc1) are formed in double as Python does.
 * This file is compiled with -std=c11 (GCC then does not contract a*b+c on its own), so the only
 * fused operations are the explicit fmaf calls. */
#include "optim.h"

#include <math.h>
#include <string.h>

/* Chunk size of the norm reduction: partial sums per chunk in double, chunks combined in index
 * order, so the sum is the same for any thread count. */
#define NORM_CHUNK 4096

dinoc_status dinoc_adamw_init(dinoc_adamw *opt, size_t n, dinoc_adamw_config cfg) {
    memset(opt, 0, sizeof(*opt));
    if (!(cfg.beta1 >= 0 && cfg.beta1 < 1) || !(cfg.beta2 >= 0 && cfg.beta2 < 1) || !(cfg.eps >= 0))
        return dinoc_fail(DINOC_ERR_ARG, "adamw: betas (%g, %g) must be in [0, 1) and eps %g >= 0",
                          cfg.beta1, cfg.beta2, cfg.eps);
    size_t alloc = n ? n : 1; /* dinoc_calloc(0) may return NULL; keep m/v valid pointers */
    opt->m = dinoc_calloc(alloc, sizeof(float));
    opt->v = dinoc_calloc(alloc, sizeof(float));
    if (!opt->m || !opt->v) {
        dinoc_free(opt->m);
        dinoc_free(opt->v);
        memset(opt, 0, sizeof(*opt));
        return dinoc_fail(DINOC_ERR_NOMEM, "adamw: cannot allocate moments for %zu floats", n);
    }
    opt->n   = n;
    opt->cfg = cfg;
    return DINOC_OK;
}

void dinoc_adamw_free(dinoc_adamw *opt) {
    if (!opt) return;
    dinoc_free(opt->m);
    dinoc_free(opt->v);
    memset(opt, 0, sizeof(*opt));
}

void dinoc_adamw_step(dinoc_adamw *opt, float *params, const float *grads,
                      const dinoc_param_group *groups, int n_groups, double lr, double wd) {
    opt->step++;
    const double b1 = opt->cfg.beta1, b2 = opt->cfg.beta2;
    /* Python evaluates these in double: 1 - beta1 ** step with an integer step. */
    const double bc1      = 1.0 - pow(b1, (double)opt->step);
    const double bc2      = 1.0 - pow(b2, (double)opt->step);
    const float  b1f      = (float)b1, omb1f = (float)(1.0 - b1);
    const float  b2f      = (float)b2, omb2f = (float)(1.0 - b2);
    const float  bc2sf    = (float)sqrt(bc2);
    const float  epsf     = (float)opt->cfg.eps;
    float *const m        = opt->m, *const v = opt->v;
    for (int gi = 0; gi < n_groups; gi++) {
        const dinoc_param_group *g = &groups[gi];
        if (g->frozen || g->count == 0) continue;
        DINOC_ASSERT(g->offset <= opt->n && g->count <= opt->n - g->offset);
        /* torch: group['lr'] = lr * lr_multiplier, group['weight_decay'] = wd * wd_multiplier
         * (doubles), then 1 - lr * weight_decay and -lr / bias_correction1 in double. */
        const double glr    = lr * g->lr_mult;
        const double gwd    = wd * g->wd_mult;
        const float  decayf = (float)(1.0 - glr * gwd);
        const float  nstepf = (float)(-(glr / bc1));
        float *const       p   = params + g->offset;
        const float *const gr  = grads + g->offset;
        float *const       mg  = m + g->offset;
        float *const       vg  = v + g->offset;
        const long long    cnt = (long long)g->count;
        /* Elementwise, so any schedule gives the same bits. */
#pragma omp parallel for schedule(static) if (cnt > 32768)
        for (long long i = 0; i < cnt; i++) {
            const float gi_ = gr[i];
            float       pi  = p[i] * decayf;
            const float mi  = fmaf(gi_, omb1f, mg[i] * b1f);
            const float vi  = fmaf(omb2f * gi_, gi_, vg[i] * b2f);
            const float den = sqrtf(vi) / bc2sf + epsf;
            pi              = pi + (nstepf * mi) / den;
            mg[i]           = mi;
            vg[i]           = vi;
            p[i]            = pi;
        }
    }
}

/* Sum of squares of x[0..n) in double: fixed chunks, each summed sequentially, chunk sums added in
 * order. Threads only split the chunks, so the bits do not depend on the thread count. */
static double sumsq_fixed(const float *x, size_t n) {
    if (n == 0) return 0.0;
    const long long nchunks = (long long)((n + NORM_CHUNK - 1) / NORM_CHUNK);
    if (nchunks == 1) {
        double s = 0;
        for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
        return s;
    }
    double *part = malloc((size_t)nchunks * sizeof(double));
    DINOC_ASSERT(part != NULL);
#pragma omp parallel for schedule(static) if (nchunks > 8)
    for (long long c = 0; c < nchunks; c++) {
        size_t b = (size_t)c * NORM_CHUNK, e = b + NORM_CHUNK < n ? b + NORM_CHUNK : n;
        double s = 0;
        for (size_t i = b; i < e; i++) s += (double)x[i] * x[i];
        part[c] = s;
    }
    double s = 0;
    for (long long c = 0; c < nchunks; c++) s += part[c];
    free(part);
    return s;
}

static void scale_floats(float *x, size_t n, float c) {
    const long long cnt = (long long)n;
#pragma omp parallel for schedule(static) if (cnt > 32768)
    for (long long i = 0; i < cnt; i++) x[i] *= c;
}

double dinoc_grad_norm(const float *grads, const dinoc_param_group *groups, int n_groups) {
    double s = 0;
    for (int gi = 0; gi < n_groups; gi++)
        s += sumsq_fixed(grads + groups[gi].offset, groups[gi].count);
    return sqrt(s);
}

/* torch forms clip coefficients from float32 tensors: `max_norm / (total_norm + 1e-6)` with
 * total_norm a float tensor is Tensor.__rtruediv__, i.e. (total_norm + 1e-6f).reciprocal() *
 * (float)max_norm; we do the same float operations. torch's float32 norm reduction is not
 * correctly rounded (off by one ulp in 6 of 40 fixture norms) and clip_grad_norm_ also rounds each
 * tensor's norm to float before combining; we use the correctly rounded double norm, so the
 * coefficient can differ from torch's by an ulp (relative 6e-8). */
static float torch_clip_coef(double max_norm, double norm) {
    const float r = 1.0f / ((float)norm + 1e-6f);
    return r * (float)max_norm;
}

double dinoc_clip_grad_norm(float *grads, const dinoc_param_group *groups, int n_groups,
                            double max_norm) {
    const double norm = dinoc_grad_norm(grads, groups, n_groups);
    const float  coef = torch_clip_coef(max_norm, norm);
    /* torch 1.13 multiplies by clamp(coef, max=1) unconditionally; * 1.0f changes nothing, so we
     * skip it. A NaN norm gives a NaN coefficient, which torch also multiplies in. */
    if (coef < 1.0f || isnan(coef)) {
        for (int gi = 0; gi < n_groups; gi++)
            scale_floats(grads + groups[gi].offset, groups[gi].count, coef);
    }
    return norm;
}

double dinoc_clip_grad_per_param(float *grads, const dinoc_param_group *groups, int n_groups,
                                 double clip) {
    double total = 0;
    for (int gi = 0; gi < n_groups; gi++) {
        float *const x  = grads + groups[gi].offset;
        const double s  = sumsq_fixed(x, groups[gi].count);
        total          += s;
        /* DINO: clip_coef = clip / (param_norm + 1e-6); if clip_coef < 1: grad.mul_(clip_coef),
         * with param_norm a float tensor. */
        const float coef = torch_clip_coef(clip, sqrt(s));
        if (coef < 1.0f) scale_floats(x, groups[gi].count, coef);
    }
    return sqrt(total);
}

/* ---- parameter groups ------------------------------------------------------------------------ */

static int ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && memcmp(s + ls - lx, suffix, lx) == 0;
}

/* Finds `key` (e.g. "blocks.") at the start of name or right after a '.'; returns the text after
 * it or NULL. */
static const char *find_component(const char *name, const char *key) {
    size_t      lk = strlen(key);
    const char *p  = name;
    while ((p = strstr(p, key)) != NULL) {
        if (p == name || p[-1] == '.') return p + lk;
        p += 1;
    }
    return NULL;
}

/* Parses "<digits>." at s; returns the number (or -1) and sets *next past the dot. */
static long parse_index(const char *s, const char **next) {
    if (*s < '0' || *s > '9') return -1;
    long v = 0;
    while (*s >= '0' && *s <= '9') {
        if (v > 100000000L) return -1;
        v = v * 10 + (*s - '0');
        s++;
    }
    if (*s != '.') return -1;
    *next = s + 1;
    return v;
}

/* DINOv2 get_vit_lr_decay_rate's layer id (with force_is_backbone: the name may carry any prefix):
 * 0 for embeddings, i + 1 for block i, depth + 1 otherwise; -2 - i for a block index i out of
 * range. */
static long layer_id_of(const char *name, int depth) {
    if (strstr(name, "pos_embed") || strstr(name, "patch_embed") || strstr(name, "cls_token") ||
        strstr(name, "mask_token") || strstr(name, "register_tokens") ||
        find_component(name, "embeddings."))
        return 0;
    const char *rest = find_component(name, "blocks.");
    if (!rest) rest = find_component(name, "encoder.layer.");
    if (rest) {
        const char *after = NULL, *after2 = NULL;
        long        i     = parse_index(rest, &after);
        if (i >= 0) {
            /* Chunked blocks (FSDP BlockChunk): "blocks.<chunk>.<i>." names block i. */
            long j = parse_index(after, &after2);
            if (j >= 0) i = j;
            return i < depth ? i + 1 : -2 - i;
        }
    }
    return (long)depth + 1;
}

dinoc_status dinoc_param_groups_default(dinoc_param_group *out, const char *const *names,
                                        const size_t *offsets, const size_t *counts,
                                        const int *ndims, int n, double layer_decay, int depth,
                                        double patch_embed_lr_mult, int dino_v1_rule) {
    if (n < 0 || (n > 0 && (!out || !names || !offsets || !counts)))
        return dinoc_fail(DINOC_ERR_ARG, "param groups: n = %d or NULL arrays", n);
    if (depth < 0 || !(layer_decay > 0))
        return dinoc_fail(DINOC_ERR_ARG, "param groups: depth %d, layer_decay %g", depth,
                          layer_decay);
    if (dino_v1_rule && n > 0 && !ndims)
        return dinoc_fail(DINOC_ERR_ARG, "param groups: DINO v1 rule needs ndims");
    for (int i = 0; i < n; i++) {
        const char *nm = names[i];
        if (!nm) return dinoc_fail(DINOC_ERR_ARG, "param groups: name %d is NULL", i);
        long lid = layer_id_of(nm, depth);
        if (lid < 0)
            return dinoc_fail(DINOC_ERR_ARG, "param groups: tensor '%s': block %ld but depth %d",
                              nm, -2 - lid, depth);
        dinoc_param_group *g = &out[i];
        memset(g, 0, sizeof(*g));
        g->offset  = offsets[i];
        g->count   = counts[i];
        g->lr_mult = pow(layer_decay, (double)(depth + 1 - lid));
        if (strstr(nm, "patch_embed")) g->lr_mult *= patch_embed_lr_mult;
        int no_wd;
        if (dino_v1_rule)
            no_wd = ends_with(nm, ".bias") || ndims[i] == 1;
        else
            no_wd = ends_with(nm, ".bias") || strstr(nm, "norm") || strstr(nm, "gamma") ||
                    ends_with(nm, ".lambda1");
        g->wd_mult = no_wd ? 0.0 : 1.0;
        snprintf(g->name, sizeof(g->name), "%s", nm);
    }
    return DINOC_OK;
}
