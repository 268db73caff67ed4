/* test_optim.c: AdamW, gradient clipping, cosine schedules and parameter-group rules
 * (src/train/optim.c, src/train/schedule.c).
 *
 * optim_adamw_matches_torch and optim_schedule_matches_numpy read
 * $DINOC_FIXTURES/optim/adamw.safetensors, written by
 * `/usr/bin/python3 tests/py/gen_optim.py <fixtures dir>` (layout in that file): two runs of 10
 * torch.optim.AdamW steps with two param groups and per-step lr/wd from DINO's cosine_scheduler,
 * clipped globally (clip_grad_norm_) or per parameter (DINO's clip_gradients) before each step.
 * The C side replays the raw gradients through its own clipping and step and compares clipped
 * grads, params, exp_avg and exp_avg_sq after every step; it prints the max errors and the
 * number of values that are not bit-identical. The other cases need no fixtures. */
#include "check.h"
#include "../src/train/optim.h"

#include <stdint.h>

#define NPARAM 4

/* Tolerances for the replay. optim.c reproduces each torch 1.13 kernel's float32 rounding (see
 * its file comment) and measures 0 differing bits here; the bound leaves room for 1-ulp differences
 * of sqrtf/fmaf/pow or a torch built without AVX2 (no FMAs), compounded over 10 steps: params are
 * O(1) and move by ~lr per step, so rtol 1e-6 (8 ulp) / atol 1e-7 still catches any wrong formula
 * (a wrong bias correction or eps placement changes params by >= 1e-5 here). */
#define REPLAY_RTOL 1e-6
#define REPLAY_ATOL 1e-7
/* Clipped gradients: torch's float32 norm is not correctly rounded, dinoc's is, so the float clip
 * coefficient may differ by one ulp (relative 6e-8) plus the product's rounding; 4 ulp of slack. */
#define CLIP_RTOL 5e-7
#define CLIP_ATOL 1e-12

static size_t count_bit_diff(const float *a, const float *b, size_t n) {
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return d;
}

/* Copies tensor `name` (any float dtype) into dst[n]; 0 (and a failed CHECK) if absent or of
 * another size. */
static int get_f32(const dinoc_safetensors *st, const char *name, float *dst, size_t n) {
    const dinoc_tensor *t = dinoc_safetensors_find(st, name);
    CHECK_MSG(t != NULL, "fixture tensor '%s' missing", name);
    if (!t) return 0;
    CHECK_MSG((size_t)dinoc_tensor_numel(t) == n, "'%s': %lld values, expected %zu", name,
              (long long)dinoc_tensor_numel(t), n);
    if ((size_t)dinoc_tensor_numel(t) != n) return 0;
    CHECK_OK(dinoc_tensor_to_f32(t, dst, (int64_t)n));
    return 1;
}

/* F64 tensor `name` as a new array (count in *n), or NULL with a failed CHECK. memcpy: the
 * mapped data need not be 8-byte aligned. */
static double *get_f64(const dinoc_safetensors *st, const char *name, size_t *n) {
    const dinoc_tensor *t = dinoc_safetensors_find(st, name);
    CHECK_MSG(t && t->dtype == DINOC_DTYPE_F64, "fixture tensor '%s' missing or not F64", name);
    if (!t || t->dtype != DINOC_DTYPE_F64) return NULL;
    *n        = (size_t)dinoc_tensor_numel(t);
    double *d = malloc(t->nbytes ? t->nbytes : 1);
    CHECK(d != NULL);
    if (d) memcpy(d, t->data, t->nbytes);
    return d;
}

static dinoc_safetensors *open_fixture(void) {
    char *dir  = dinoc_path_join(dinoc_test_fixtures(), "optim");
    char *path = dinoc_path_join(dir, "adamw.safetensors");
    free(dir);
    dinoc_safetensors *st = NULL;
    if (!dinoc_file_exists(path)) {
        CHECK_MSG(0, "%s missing: run `/usr/bin/python3 tests/py/gen_optim.py %s` first", path,
                  dinoc_test_fixtures());
    } else {
        CHECK_OK(dinoc_safetensors_open(&st, path));
    }
    free(path);
    return st;
}

static int meta_int(const dinoc_safetensors *st, const char *key) {
    const char *v = dinoc_safetensors_metadata(st, key);
    CHECK_MSG(v != NULL, "metadata '%s' missing", key);
    return v ? atoi(v) : 0;
}

/* Compares a whole flat buffer against the fixture tensors prefix.s.k (k = 0..NPARAM-1); returns
 * the max abs error and adds the bit differences to *bits. */
static double compare_step(const dinoc_safetensors *st, const char *prefix, int s,
                           const float *got, const dinoc_param_group *g, float *want,
                           double atol, double rtol, size_t *bits) {
    double worst = 0;
    for (int k = 0; k < NPARAM; k++) {
        char name[96], label[96];
        snprintf(name, sizeof name, "%s.%d.%d", prefix, s, k);
        if (!get_f32(st, name, want, g[k].count)) return INFINITY;
        const float *x   = got + g[k].offset;
        double       err = 0;
        size_t       bad = 0;
        for (size_t i = 0; i < g[k].count; i++) {
            double d = fabs((double)x[i] - (double)want[i]);
            if (isnan(d)) d = INFINITY;
            if (d > err) err = d;
            if (!(d <= atol + rtol * fabs((double)want[i]))) bad++;
        }
        *bits += count_bit_diff(x, want, g[k].count);
        if (bad) {
            snprintf(label, sizeof label, "%s", name);
            dinoc_check_close(x, want, g[k].count, atol, rtol, label, NULL);
            CHECK_MSG(0, "%s: %zu values outside atol %g rtol %g (max abs %.3g)", name, bad, atol,
                      rtol, err);
        }
        if (err > worst) worst = err;
    }
    return worst;
}

static void replay_run(const dinoc_safetensors *st, int r, int steps) {
    char name[96];
    /* Layout: one group per parameter, concatenated in order. */
    dinoc_param_group g[NPARAM];
    size_t            total = 0;
    for (int k = 0; k < NPARAM; k++) {
        snprintf(name, sizeof name, "run.%d.init.%d", r, k);
        const dinoc_tensor *t = dinoc_safetensors_find(st, name);
        CHECK_MSG(t != NULL, "fixture tensor '%s' missing", name);
        if (!t) return;
        memset(&g[k], 0, sizeof g[k]);
        g[k].offset = total;
        g[k].count  = (size_t)dinoc_tensor_numel(t);
        snprintf(g[k].name, sizeof g[k].name, "p%d", k);
        total += g[k].count;
    }
    size_t  n_lr = 0, n_wd = 0, n_lm = 0, n_wm = 0, n_h = 0, n_norm = 0;
    snprintf(name, sizeof name, "run.%d.lr", r);
    double *lr = get_f64(st, name, &n_lr);
    snprintf(name, sizeof name, "run.%d.wd", r);
    double *wd = get_f64(st, name, &n_wd);
    snprintf(name, sizeof name, "run.%d.lr_mult", r);
    double *lm = get_f64(st, name, &n_lm);
    snprintf(name, sizeof name, "run.%d.wd_mult", r);
    double *wm = get_f64(st, name, &n_wm);
    snprintf(name, sizeof name, "run.%d.hyper", r);
    double *hy = get_f64(st, name, &n_h);
    snprintf(name, sizeof name, "run.%d.norm64", r);
    double *norm64 = get_f64(st, name, &n_norm);
    snprintf(name, sizeof name, "run.%d.clip", r);
    const char *clip_mode = dinoc_safetensors_metadata(st, name);
    float      *params = malloc(sizeof(float) * total), *grads = malloc(sizeof(float) * total);
    float      *want   = malloc(sizeof(float) * total);
    dinoc_adamw opt;
    memset(&opt, 0, sizeof opt);
    int ok = lr && wd && lm && wm && hy && norm64 && clip_mode && params && grads && want &&
             n_lr >= (size_t)steps && n_wd >= (size_t)steps && n_lm == NPARAM && n_wm == NPARAM &&
             n_h == 4 && n_norm >= (size_t)steps;
    CHECK_MSG(ok, "run %d: fixture arrays missing or of the wrong size", r);
    if (!ok) goto done;
    for (int k = 0; k < NPARAM; k++) {
        g[k].lr_mult = lm[k];
        g[k].wd_mult = wm[k];
        snprintf(name, sizeof name, "run.%d.init.%d", r, k);
        if (!get_f32(st, name, params + g[k].offset, g[k].count)) goto done;
    }
    CHECK_OK(dinoc_adamw_init(&opt, total, (dinoc_adamw_config){hy[0], hy[1], hy[2]}));
    if (!opt.m) goto done;
    const int per_param = strcmp(clip_mode, "per_param") == 0;
    double    e_p = 0, e_m = 0, e_v = 0, e_c = 0, e_norm = 0;
    size_t    b_p = 0, b_m = 0, b_v = 0, b_c = 0;
    for (int s = 0; s < steps; s++) {
        for (int k = 0; k < NPARAM; k++) {
            snprintf(name, sizeof name, "run.%d.grad.%d.%d", r, s, k);
            if (!get_f32(st, name, grads + g[k].offset, g[k].count)) goto done;
        }
        double norm = per_param ? dinoc_clip_grad_per_param(grads, g, NPARAM, hy[3])
                                : dinoc_clip_grad_norm(grads, g, NPARAM, hy[3]);
        /* Both sides are float64 sums of squares in different orders: ~1e-16 relative. */
        double rel = fabs(norm - norm64[s]) / norm64[s];
        if (rel > e_norm) e_norm = rel;
        CHECK_MSG(rel <= 1e-12, "run %d step %d: grad norm %.17g, numpy %.17g", r, s, norm,
                  norm64[s]);
        snprintf(name, sizeof name, "run.%d.clipped", r);
        double e = compare_step(st, name, s, grads, g, want, CLIP_ATOL, CLIP_RTOL, &b_c);
        if (e > e_c) e_c = e;
        /* Step with torch's clipped grads so the AdamW comparison measures the step alone. */
        for (int k = 0; k < NPARAM; k++) {
            snprintf(name, sizeof name, "run.%d.clipped.%d.%d", r, s, k);
            if (!get_f32(st, name, grads + g[k].offset, g[k].count)) goto done;
        }
        dinoc_adamw_step(&opt, params, grads, g, NPARAM, lr[s], wd[s]);
        snprintf(name, sizeof name, "run.%d.param", r);
        e = compare_step(st, name, s, params, g, want, REPLAY_ATOL, REPLAY_RTOL, &b_p);
        if (e > e_p) e_p = e;
        snprintf(name, sizeof name, "run.%d.exp_avg", r);
        e = compare_step(st, name, s, opt.m, g, want, REPLAY_ATOL, REPLAY_RTOL, &b_m);
        if (e > e_m) e_m = e;
        snprintf(name, sizeof name, "run.%d.exp_avg_sq", r);
        /* exp_avg_sq is ~(1 - beta2) g^2 ~ 1e-7 here: atol scaled down with it. */
        e = compare_step(st, name, s, opt.v, g, want, REPLAY_ATOL * 1e-3, REPLAY_RTOL, &b_v);
        if (e > e_v) e_v = e;
    }
    CHECK(opt.step == steps);
    fprintf(stderr,
            "    run %d (%s clip, %d steps, %zu floats): max abs err params %.3g (%zu values not "
            "bit-identical), exp_avg %.3g (%zu), exp_avg_sq %.3g (%zu), clipped grads %.3g (%zu), "
            "grad norm rel %.3g\n",
            r, clip_mode, steps, total, e_p, b_p, e_m, b_m, e_v, b_v, e_c, b_c, e_norm);
    if (!per_param) {
        /* torch's own (float32) norm: only loosely equal to the double one. */
        const dinoc_tensor *t = dinoc_safetensors_find(st, "run.0.norm_torch");
        CHECK(t != NULL);
        if (t && (int)dinoc_tensor_numel(t) == steps) {
            float nt[64];
            CHECK_OK(dinoc_tensor_to_f32(t, nt, steps));
            for (int s = 0; s < steps && s < 64; s++)
                CHECK_MSG(fabs(nt[s] - norm64[s]) <= 1e-6 * norm64[s], "step %d: torch norm %g vs %g",
                          s, nt[s], norm64[s]);
        }
    }
done:
    dinoc_adamw_free(&opt);
    free(lr);
    free(wd);
    free(lm);
    free(wm);
    free(hy);
    free(norm64);
    free(params);
    free(grads);
    free(want);
}

DINOC_TEST(optim_adamw_matches_torch) {
    dinoc_safetensors *st = open_fixture();
    if (!st) return;
    int runs = meta_int(st, "runs"), steps = meta_int(st, "steps");
    CHECK(runs >= 2 && steps >= 1);
    for (int r = 0; r < runs; r++) replay_run(st, r, steps);
    dinoc_safetensors_close(st);
}

DINOC_TEST(optim_schedule_matches_numpy) {
    dinoc_safetensors *st = open_fixture();
    if (!st) return;
    int    n     = meta_int(st, "scheds");
    double worst = 0;
    CHECK(n > 0);
    for (int j = 0; j < n; j++) {
        char   name[64];
        size_t na = 0, nv = 0;
        snprintf(name, sizeof name, "sched.%d.args", j);
        double *a = get_f64(st, name, &na);
        snprintf(name, sizeof name, "sched.%d.values", j);
        double *v = get_f64(st, name, &nv);
        if (a && v && na == 5) {
            int64_t total = (int64_t)a[2], warm = (int64_t)a[3];
            CHECK_MSG((size_t)total == nv, "sched %d: %zu values for total %lld", j, nv,
                      (long long)total);
            size_t bad = 0;
            for (int64_t it = 0; it < (int64_t)nv; it++) {
                double got = dinoc_cosine_schedule(a[0], a[1], total, warm, a[4], it);
                double d   = fabs(got - v[it]) / fmax(fabs(v[it]), 1e-300);
                if (d > worst) worst = d;
                if (!(d <= 1e-12) && bad++ < 3)
                    fprintf(stderr, "    sched %d it %lld: got %.17g want %.17g\n", j,
                            (long long)it, got, v[it]);
            }
            CHECK_MSG(bad == 0, "sched %d: %zu values differ by more than 1e-12 relative", j, bad);
            /* Past the end: final. */
            CHECK(dinoc_cosine_schedule(a[0], a[1], total, warm, a[4], total) == a[1]);
            CHECK(dinoc_cosine_schedule(a[0], a[1], total, warm, a[4], total + 1000) == a[1]);
        }
        free(a);
        free(v);
    }
    fprintf(stderr, "    %d schedules: max rel err %.3g\n", n, worst);
    dinoc_safetensors_close(st);
}

/* Small deterministic problem for the fixture-free cases. */
static void fill(float *x, size_t n, uint64_t seed, float scale) {
    dinoc_rng r;
    dinoc_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = dinoc_rng_normal(&r) * scale;
}

DINOC_TEST(optim_frozen_group_untouched) {
    enum { N0 = 300, N1 = 70, N = N0 + N1 + 10 };
    dinoc_param_group g[2];
    memset(g, 0, sizeof g);
    g[0] = (dinoc_param_group){.offset = 0, .count = N0, .lr_mult = 1, .wd_mult = 1};
    g[1] = (dinoc_param_group){.offset = N0, .count = N1, .lr_mult = 1, .wd_mult = 1, .frozen = 1};
    float p[N], p0[N], gr[N];
    fill(p, N, 1, 1.0f);
    memcpy(p0, p, sizeof p);
    dinoc_adamw opt;
    CHECK_OK(dinoc_adamw_init(&opt, N, (dinoc_adamw_config){0.9, 0.999, 1e-8}));
    if (!opt.m) return;
    for (int s = 0; s < 3; s++) {
        fill(gr, N, 10 + (uint64_t)s, 0.1f);
        dinoc_adamw_step(&opt, p, gr, g, 2, 1e-2, 0.05);
    }
    /* The frozen group and the 10 floats covered by no group keep their values and zero moments. */
    CHECK(memcmp(p + N0, p0 + N0, sizeof(float) * (N - N0)) == 0);
    int moments_zero = 1;
    for (int i = N0; i < N; i++) moments_zero &= opt.m[i] == 0 && opt.v[i] == 0;
    CHECK(moments_zero);
    CHECK(memcmp(p, p0, sizeof(float) * N0) != 0);
    CHECK(opt.step == 3);
    dinoc_adamw_free(&opt);
    CHECK(opt.m == NULL && opt.v == NULL);
    /* Bad configuration is an argument error. */
    CHECK_ERR(dinoc_adamw_init(&opt, 4, (dinoc_adamw_config){1.0, 0.999, 1e-8}), DINOC_ERR_ARG,
              "betas");
}

DINOC_TEST(optim_threads_deterministic) {
    /* Big enough to take the parallel paths (> 32768 floats per group, > 8 norm chunks). */
    const size_t      N  = 200003;
    dinoc_param_group g[3];
    memset(g, 0, sizeof g);
    g[0] = (dinoc_param_group){.offset = 0, .count = 150000, .lr_mult = 0.5, .wd_mult = 1};
    g[1] = (dinoc_param_group){.offset = 150000, .count = 50000, .lr_mult = 1, .wd_mult = 0};
    g[2] = (dinoc_param_group){.offset = 200000, .count = 3, .lr_mult = 1, .wd_mult = 1};
    float *p[2], *gr = malloc(sizeof(float) * N), *gc = malloc(sizeof(float) * N);
    p[0] = malloc(sizeof(float) * N);
    p[1] = malloc(sizeof(float) * N);
    CHECK(gr && gc && p[0] && p[1]);
    if (!gr || !gc || !p[0] || !p[1]) goto out;
    dinoc_adamw opt[2];
    double      norms[2][4];
    int         saved = dinoc_get_threads();
    for (int t = 0; t < 2; t++) {
        dinoc_set_threads(t + 1);
        fill(p[t], N, 7, 1.0f);
        CHECK_OK(dinoc_adamw_init(&opt[t], N, (dinoc_adamw_config){0.9, 0.999, 1e-8}));
        if (!opt[t].m) goto out;
        for (int s = 0; s < 4; s++) {
            fill(gr, N, 100 + (uint64_t)s, s == 2 ? 10.0f : 0.01f);
            memcpy(gc, gr, sizeof(float) * N);
            norms[t][s] = s % 2 ? dinoc_clip_grad_per_param(gc, g, 3, 0.5)
                                : dinoc_clip_grad_norm(gc, g, 3, 1.0);
            dinoc_adamw_step(&opt[t], p[t], gc, g, 3, 1e-3, 0.04);
        }
    }
    dinoc_set_threads(saved);
    CHECK(memcmp(norms[0], norms[1], sizeof norms[0]) == 0);
    CHECK_MSG(count_bit_diff(p[0], p[1], N) == 0, "params differ between 1 and 2 threads");
    CHECK(count_bit_diff(opt[0].m, opt[1].m, N) == 0);
    CHECK(count_bit_diff(opt[0].v, opt[1].v, N) == 0);
    /* The global norm equals the group-wise double sum. */
    fill(gr, N, 5, 1.0f);
    double s = 0;
    for (size_t i = 0; i < N; i++) s += (double)gr[i] * gr[i];
    CHECK(fabs(dinoc_grad_norm(gr, g, 3) - sqrt(s)) <= 1e-12 * sqrt(s));
    dinoc_adamw_free(&opt[0]);
    dinoc_adamw_free(&opt[1]);
out:
    free(p[0]);
    free(p[1]);
    free(gr);
    free(gc);
}

DINOC_TEST(optim_clip_semantics) {
    /* Groups (3, 4) and (5, 12): norms 5 and 13, global sqrt(194). */
    float             x[4] = {3, 4, 5, 12};
    dinoc_param_group g[2];
    memset(g, 0, sizeof g);
    g[0] = (dinoc_param_group){.offset = 0, .count = 2};
    g[1] = (dinoc_param_group){.offset = 2, .count = 2};
    double n = dinoc_clip_grad_norm(x, g, 2, 100.0); /* below the threshold: untouched */
    CHECK(fabs(n - sqrt(194.0)) < 1e-12);
    CHECK(x[0] == 3 && x[3] == 12);
    n = dinoc_clip_grad_norm(x, g, 2, 1.0);
    CHECK(fabs(n - sqrt(194.0)) < 1e-12);
    CHECK(fabs(dinoc_grad_norm(x, g, 2) - 1.0) < 1e-6);
    /* Per parameter: group 0 (norm 5) clipped to 6 stays, group 1 (norm 13) goes to 6. */
    float y[4] = {3, 4, 5, 12};
    n          = dinoc_clip_grad_per_param(y, g, 2, 6.0);
    CHECK(fabs(n - sqrt(194.0)) < 1e-12);
    CHECK(y[0] == 3 && y[1] == 4);
    CHECK(fabs(dinoc_grad_norm(y + 2, &(dinoc_param_group){.offset = 0, .count = 2}, 1) - 6.0) <
          1e-5);
}

/* Finds the group built for `name`. */
static const dinoc_param_group *group_named(const dinoc_param_group *g, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(g[i].name, name) == 0) return &g[i];
    CHECK_MSG(0, "no group '%s'", name);
    return NULL;
}

static int near(double a, double b) { return fabs(a - b) <= 1e-15 * fabs(b); }

DINOC_TEST(optim_param_group_rules) {
    const char *names[] = {
        "pos_embed", "cls_token", "mask_token", "register_tokens", "patch_embed.proj.weight",
        "patch_embed.proj.bias", "blocks.0.norm1.weight", "blocks.3.attn.qkv.weight",
        "blocks.3.attn.qkv.bias", "blocks.3.norm1.weight", "blocks.3.ls1.gamma",
        "blocks.11.mlp.fc2.weight", "blocks.0.5.mlp.fc1.weight" /* chunked: block 5 */,
        "norm.weight", "head.last_layer.weight_g", "head.last_layer.weight_v",
        "head.mlp.0.weight", "backbone.blocks.2.attn.proj.weight",
    };
    enum { N = sizeof names / sizeof names[0] };
    size_t off[N], cnt[N];
    int    nd[N];
    for (int i = 0; i < N; i++) off[i] = (size_t)i * 10, cnt[i] = 10, nd[i] = 2;
    nd[6] = nd[9] = nd[13] = nd[5] = nd[8] = nd[10] = 1;
    const int    L = 12;
    const double d = 0.9;
    dinoc_param_group g[N];
    CHECK_OK(dinoc_param_groups_default(g, names, off, cnt, nd, N, d, L, 0.2, 0));
    const dinoc_param_group *x;
#define RULE(nm, layer, extra, wdm)                                                             \
    do {                                                                                        \
        x = group_named(g, N, nm);                                                              \
        if (x) {                                                                                \
            CHECK_MSG(near(x->lr_mult, pow(d, L + 1 - (layer)) * (extra)), "%s: lr_mult %.17g", \
                      nm, x->lr_mult);                                                          \
            CHECK_MSG(x->wd_mult == (wdm), "%s: wd_mult %g", nm, x->wd_mult);                   \
            CHECK(x->frozen == 0);                                                              \
        }                                                                                       \
    } while (0)
    RULE("pos_embed", 0, 1.0, 1.0);
    RULE("cls_token", 0, 1.0, 1.0);
    RULE("mask_token", 0, 1.0, 1.0);
    RULE("register_tokens", 0, 1.0, 1.0);
    RULE("patch_embed.proj.weight", 0, 0.2, 1.0);
    RULE("patch_embed.proj.bias", 0, 0.2, 0.0);
    RULE("blocks.0.norm1.weight", 1, 1.0, 0.0);
    RULE("blocks.3.attn.qkv.weight", 4, 1.0, 1.0); /* decay^(L-3) */
    RULE("blocks.3.attn.qkv.bias", 4, 1.0, 0.0);
    RULE("blocks.3.norm1.weight", 4, 1.0, 0.0);
    RULE("blocks.3.ls1.gamma", 4, 1.0, 0.0);
    RULE("blocks.11.mlp.fc2.weight", 12, 1.0, 1.0);
    RULE("blocks.0.5.mlp.fc1.weight", 6, 1.0, 1.0);
    RULE("norm.weight", 13, 1.0, 0.0);
    RULE("head.last_layer.weight_g", 13, 1.0, 1.0); /* decayed under DINOv2's rule */
    RULE("head.last_layer.weight_v", 13, 1.0, 1.0);
    RULE("head.mlp.0.weight", 13, 1.0, 1.0);
    RULE("backbone.blocks.2.attn.proj.weight", 3, 1.0, 1.0);
    CHECK(near(group_named(g, N, "blocks.3.attn.qkv.weight")->lr_mult, pow(d, L - 3)));
    CHECK(g[4].offset == 40 && g[4].count == 10);

    /* DINO v1's rule: biases and 1-D tensors undecayed, everything else (even gamma) decayed. */
    nd[14] = 2; /* weight_g [K, 1] */
    CHECK_OK(dinoc_param_groups_default(g, names, off, cnt, nd, N, 1.0, L, 1.0, 1));
    CHECK(group_named(g, N, "blocks.3.norm1.weight")->wd_mult == 0);
    CHECK(group_named(g, N, "blocks.3.attn.qkv.bias")->wd_mult == 0);
    CHECK(group_named(g, N, "blocks.3.attn.qkv.weight")->wd_mult == 1);
    CHECK(group_named(g, N, "pos_embed")->wd_mult == 1);
    CHECK(group_named(g, N, "head.last_layer.weight_g")->wd_mult == 1);
    CHECK(group_named(g, N, "blocks.3.ls1.gamma")->wd_mult == 0); /* 1-D */
    CHECK(group_named(g, N, "blocks.3.attn.qkv.weight")->lr_mult == 1.0);

    /* Hugging Face names. */
    const char *hf[] = {
        "embeddings.cls_token", "embeddings.mask_token", "embeddings.position_embeddings",
        "embeddings.patch_embeddings.projection.weight", "embeddings.register_tokens",
        "encoder.layer.3.attention.attention.query.weight",
        "encoder.layer.3.attention.attention.query.bias", "encoder.layer.3.norm1.weight",
        "encoder.layer.3.layer_scale1.lambda1", "layernorm.weight",
    };
    enum { NH = sizeof hf / sizeof hf[0] };
    dinoc_param_group h[NH];
    CHECK_OK(dinoc_param_groups_default(h, hf, off, cnt, NULL, NH, d, L, 0.2, 0));
#undef RULE
#define RULE(nm, layer, extra, wdm)                                                             \
    do {                                                                                        \
        x = group_named(h, NH, nm);                                                             \
        if (x) {                                                                                \
            CHECK_MSG(near(x->lr_mult, pow(d, L + 1 - (layer)) * (extra)), "%s: lr_mult %.17g", \
                      nm, x->lr_mult);                                                          \
            CHECK_MSG(x->wd_mult == (wdm), "%s: wd_mult %g", nm, x->wd_mult);                   \
        }                                                                                       \
    } while (0)
    RULE("embeddings.cls_token", 0, 1.0, 1.0);
    RULE("embeddings.mask_token", 0, 1.0, 1.0);
    RULE("embeddings.position_embeddings", 0, 1.0, 1.0);
    RULE("embeddings.patch_embeddings.projection.weight", 0, 0.2, 1.0);
    RULE("embeddings.register_tokens", 0, 1.0, 1.0);
    RULE("encoder.layer.3.attention.attention.query.weight", 4, 1.0, 1.0);
    RULE("encoder.layer.3.attention.attention.query.bias", 4, 1.0, 0.0);
    RULE("encoder.layer.3.norm1.weight", 4, 1.0, 0.0);
    RULE("encoder.layer.3.layer_scale1.lambda1", 4, 1.0, 0.0);
    RULE("layernorm.weight", 13, 1.0, 0.0);
#undef RULE

    /* Errors: a block beyond depth, v1 rule without ndims. */
    const char *bad[] = {"blocks.12.attn.qkv.weight"};
    CHECK_ERR(dinoc_param_groups_default(g, bad, off, cnt, NULL, 1, d, L, 0.2, 0), DINOC_ERR_ARG,
              "blocks.12.attn.qkv.weight");
    CHECK_ERR(dinoc_param_groups_default(g, names, off, cnt, NULL, N, d, L, 0.2, 1),
              DINOC_ERR_ARG, "ndims");
}
