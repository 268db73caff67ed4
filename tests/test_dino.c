/* test_dino.c: the DINO head and step (src/nn/dino_head.c, src/train/dino.c).
 *   - head gradients against central finite differences (double-checked in float with a bound
 *     set by the step size);
 *   - one full DINO step against PyTorch (tests/py/gen_dino.py, two cases: last layer frozen with
 *     norm_last_layer; and a trained weight_g, no freeze, clipping active): the loss (relative
 *     1e-5), the student's clipped gradients of every tensor (max abs error <= 1e-4 of the tensor's
 *     largest gradient: the bound), the teacher and center after the update (abs <= 1e-6,
 *     the bound), and the student after its AdamW step (abs <= 1e-5); the key bias, whose
 *     gradient is analytically zero, is handled apart (see step_case);
 *   - the schedules (teacher temperature warmup per epoch, momentum to 1, freeze). */
#include "check.h"
#include "../src/nn/vit.h"
#include "../src/train/dino.h"

/* ---- head: finite differences ------------------------------------------------------------------ */

DINOC_TEST(dino_head_gradcheck) {
    dinoc_dino_head_config c = {6, 10, 5, 7, 3};
    dinoc_dino_head_layout l;
    CHECK_OK(dinoc_dino_head_layout_init(&l, &c));
    const int N = 3;
    float    *p = calloc(l.n, sizeof(float)), *g = calloc(l.n, sizeof(float));
    float     x[18], dx[18] = {0}, logits[21], w[21];
    dinoc_rng r;
    dinoc_rng_seed(&r, 5);
    for (size_t i = 0; i < l.n; i++) p[i] = dinoc_rng_normal(&r) * 0.5f;
    for (int k = 0; k < c.out_dim; k++) p[l.g_off + k] = 0.5f + dinoc_rng_uniform(&r);
    for (int i = 0; i < 18; i++) x[i] = dinoc_rng_normal(&r);
    for (int i = 0; i < 21; i++) w[i] = dinoc_rng_normal(&r);
    dinoc_dino_head_acts a;
    CHECK_OK(dinoc_dino_head_acts_init(&a, &l, N));
    /* loss = sum(w * logits) */
    dinoc_dino_head_forward(&a, p, x, N, logits);
    dinoc_dino_head_backward(&a, p, w, g, dx);
    double worst = 0;
    for (size_t i = 0; i < l.n + 18; i++) {
        float *v = i < l.n ? &p[i] : &x[i - l.n];
        float  h = 1e-2f, keep = *v;
        double lp = 0, lm = 0;
        *v = keep + h;
        dinoc_dino_head_forward(&a, p, x, N, logits);
        for (int j = 0; j < 21; j++) lp += (double)w[j] * logits[j];
        *v = keep - h;
        dinoc_dino_head_forward(&a, p, x, N, logits);
        for (int j = 0; j < 21; j++) lm += (double)w[j] * logits[j];
        *v         = keep;
        double fd  = (lp - lm) / (2 * h), an = i < l.n ? g[i] : dx[i - l.n];
        double err = fabs(fd - an) / fmax(1.0, fabs(fd));
        if (err > worst) worst = err;
    }
    /* central differences with h = 1e-2 in float: truncation O(h^2) ~ 1e-4 times third derivatives */
    CHECK_MSG(worst < 2e-3, "DINO head gradient vs finite differences: worst %.3g", worst);
    dinoc_dino_head_acts_free(&a);
    free(p), free(g);
}

/* ---- one step vs PyTorch ----------------------------------------------------------------------- */

/* Copies fixture tensor `name` into dst (n floats). */
static int load_into(const dinoc_safetensors *st, const char *name, float *dst, int64_t n) {
    const dinoc_tensor *t = dinoc_safetensors_find(st, name);
    CHECK_MSG(t && dinoc_tensor_numel(t) == n, "fixture: '%s' missing or not %lld elements", name, (long long)n);
    return t && dinoc_tensor_numel(t) == n && dinoc_tensor_to_f32(t, dst, n) == DINOC_OK;
}

/* max |got - want| over a tensor; *scale = max |want|. -1 if the tensor is missing. */
static double max_diff(const dinoc_safetensors *st, const char *name, const float *got, int64_t n, double *scale) {
    const dinoc_tensor *t = dinoc_safetensors_find(st, name);
    if (!t || dinoc_tensor_numel(t) != n) return -1;
    float *w = malloc(sizeof(float) * (size_t)n);
    dinoc_tensor_to_f32(t, w, n);
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)got[i] - w[i]));
        s = fmax(s, fabs((double)w[i]));
        if (isnan(got[i])) d = INFINITY;
    }
    free(w);
    if (scale) *scale = s;
    return d;
}

typedef struct {
    char    name[96];
    size_t  off;
    int64_t n;
} named_range;

/* The backbone's HF tensors (q/k/v as row blocks of the fused qkv) and the head's, as offsets. */
static int backbone_ranges(const dinoc_model *m, named_range *out) {
    int                n = dinoc_vit_param_entries(m, DINOC_NAMES_HF, NULL);
    dinoc_param_entry *e = calloc((size_t)n, sizeof *e);
    dinoc_vit_param_entries(m, DINOC_NAMES_HF, e);
    for (int i = 0; i < n; i++) {
        int64_t k = 1;
        for (int j = 0; j < e[i].ndim; j++) k *= e[i].shape[j];
        snprintf(out[i].name, sizeof out[i].name, "%.95s", e[i].name);
        out[i].off = (size_t)(e[i].data - m->params), out[i].n = k;
    }
    free(e);
    return n;
}

static int head_ranges(const dinoc_dino_head_layout *l, named_range *out) {
    char    names[32][48];
    size_t  off[32], cnt[32];
    int     n = dinoc_dino_head_names(l, names, NULL, NULL, off, cnt);
    for (int i = 0; i < n; i++) {
        snprintf(out[i].name, sizeof out[i].name, "%.47s", names[i]);
        out[i].off = off[i], out[i].n = (int64_t)cnt[i];
    }
    return n;
}

static void step_case(const char *name) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/dino/%s", dinoc_test_fixtures(), name);
    snprintf(path, sizeof path, "%s/step.safetensors", dir);
    dinoc_safetensors *st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, path));
    if (!st) {
        CHECK_MSG(0, "run /usr/bin/python3 tests/py/gen_dino.py %s", dinoc_test_fixtures());
        return;
    }
    double cf[13], sc[5], want_loss;
    memcpy(cf, dinoc_safetensors_find(st, "cfg")->data, sizeof cf);
    memcpy(sc, dinoc_safetensors_find(st, "sched")->data, sizeof sc);
    memcpy(&want_loss, dinoc_safetensors_find(st, "loss")->data, sizeof want_loss);

    dinoc_dino_config c = dinoc_dino_default();
    c.dim = 32, c.depth = 2, c.heads = 2, c.patch = 4, c.image = 16, c.channels = 3, c.mlp_ratio = 4;
    c.crops.n_global = (int)cf[0], c.crops.n_local = (int)cf[1], c.batch = (int)cf[2];
    c.crops.global_size = (int)cf[3], c.crops.local_size = (int)cf[4], c.crops.channels = 3;
    c.out_dim = (int)cf[5], c.head_hidden = (int)cf[6], c.head_bottleneck = (int)cf[7], c.head_layers = (int)cf[8];
    c.norm_last_layer = (int)cf[9], c.clip_grad = cf[10], c.student_temp = cf[11], c.center_momentum = cf[12];
    c.drop_path = 0;
    dinoc_dino d;
    CHECK_OK(dinoc_dino_init(&d, &c));
    if (!d.student) {
        dinoc_safetensors_close(st);
        return;
    }
    dinoc_model *m = NULL;
    snprintf(path, sizeof path, "%s/model", dir);
    CHECK_OK(dinoc_model_load(&m, path, NULL));
    CHECK(m && m->n_params == d.student->n_params);
    if (m && m->n_params == d.student->n_params) memcpy(d.student->params, m->params, sizeof(float) * m->n_params);
    dinoc_model_free(m);
    named_range *br = calloc(256, sizeof *br), hr[32];
    int          nb = backbone_ranges(d.student, br), nh = head_ranges(&d.hl, hr);
    char         key[200];
    for (int i = 0; i < nb; i++) {
        snprintf(key, sizeof key, "teacher.%.95s", br[i].name);
        load_into(st, key, d.teacher->params + br[i].off, br[i].n);
    }
    for (int i = 0; i < nh; i++) {
        snprintf(key, sizeof key, "shead.%.95s", hr[i].name);
        load_into(st, key, d.shead + hr[i].off, hr[i].n);
        snprintf(key, sizeof key, "thead.%.95s", hr[i].name);
        load_into(st, key, d.thead + hr[i].off, hr[i].n);
    }
    load_into(st, "center", d.center, c.out_dim);
    const dinoc_tensor *xt = dinoc_safetensors_find(st, "x");
    float              *x  = malloc(xt->nbytes);
    CHECK_OK(dinoc_tensor_to_f32(xt, x, dinoc_tensor_numel(xt)));
    CHECK(dinoc_tensor_numel(xt) == (int64_t)(c.batch * dinoc_multicrop_floats(&c.crops)));

    dinoc_dino_sched s = {sc[0], sc[1], sc[2], sc[3], (int)sc[4]};
    dinoc_dino_stats stats;
    CHECK_OK(dinoc_dino_step(&d, x, &s, &stats));
    CHECK_MSG(fabs(stats.loss - want_loss) <= 1e-5 * fabs(want_loss), "%s: loss %.8f, torch %.8f", name, stats.loss,
              want_loss);
    double worst_g = 0, worst_t = 0, worst_s = 0, scale;
    int    compared = 0;
    for (int i = 0; i < nb + nh; i++) {
        const int   head = i >= nb;
        named_range r    = head ? hr[i - nb] : br[i];
        snprintf(key, sizeof key, head ? "grad.head.%.95s" : "grad.%.95s", r.name);
        double e = max_diff(st, key, (head ? d.ghead : d.g) + r.off, r.n, &scale);
        /* The key bias cannot change the softmax: its gradient is zero up to rounding on both
         * sides (~1e-8), so it is checked against an absolute bound, and AdamW turns that noise
         * into a step of up to lr in either direction (torch's own result depends on its summation
         * order): after the update it may differ by 2 lr (student) and 2 lr (1 - m) (teacher). */
        const int kb = strstr(r.name, "attention.key.bias") != NULL;
        if (e >= 0) {
            compared++;
            CHECK_MSG(e <= (kb ? 1e-6 : 1e-4 * scale), "%s: %s max abs error %.3g (largest %.3g)", name, key, e, scale);
            if (!kb) worst_g = fmax(worst_g, e / fmax(scale, 1e-30));
        } else if (!(head && (strstr(r.name, "last_layer") && (s.freeze_last_layer || (c.norm_last_layer && strstr(r.name, "weight_g")))))) {
            CHECK_MSG(0, "%s: fixture lacks %s", name, key);
        }
        snprintf(key, sizeof key, head ? "after.thead.%.95s" : "after.teacher.%.95s", r.name);
        e = max_diff(st, key, (head ? d.thead : d.teacher->params) + r.off, r.n, NULL);
        CHECK_MSG(e >= 0 && e <= (kb ? 2 * s.lr * (1 - s.momentum) + 1e-7 : 1e-6), "%s: %s max abs error %.3g", name, key, e);
        if (!kb) worst_t = fmax(worst_t, e);
        snprintf(key, sizeof key, head ? "after.shead.%.95s" : "after.student.%.95s", r.name);
        e = max_diff(st, key, (head ? d.shead : d.student->params) + r.off, r.n, NULL);
        /* AdamW divides by sqrt(v) + 1e-8: a gradient element of ~1e-8 with a relative rounding
         * difference moves by a visible fraction of lr, hence 1e-5 (lr is 3e-4 here) */
        CHECK_MSG(e >= 0 && e <= (kb ? 2 * s.lr + 1e-6 : 1e-5), "%s: %s max abs error %.3g", name, key, e);
        if (!kb) worst_s = fmax(worst_s, e);
    }
    double ec = max_diff(st, "after.center", d.center, c.out_dim, NULL);
    CHECK_MSG(ec >= 0 && ec <= 1e-6, "%s: center max abs error %.3g", name, ec);
    CHECK(compared >= nb);
    printf("  dino step %s: loss %.7f (torch %.7f), worst grad error %.2g of scale over %d tensors, teacher %.2g, "
           "student %.2g, center %.2g\n", name, stats.loss, want_loss, worst_g, compared, worst_t, worst_s, ec);
    free(br), free(x);
    dinoc_dino_free(&d);
    dinoc_safetensors_close(st);
}

DINOC_TEST(dino_step_parity_frozen) { step_case("frozen"); }
DINOC_TEST(dino_step_parity_trained) { step_case("trained"); }

DINOC_TEST(dino_schedule) {
    dinoc_dino_config c = dinoc_dino_default();
    c.epochs = 10, c.warmup_teacher_temp = 0.04, c.teacher_temp = 0.07, c.warmup_teacher_temp_epochs = 4;
    c.freeze_last_layer = 1, c.momentum_teacher = 0.996, c.batch = 256, c.lr = 5e-4, c.warmup_epochs = 2;
    const int64_t ipe = 7;
    dinoc_dino_sched s0 = dinoc_dino_schedule(&c, 0, ipe), s6 = dinoc_dino_schedule(&c, 6, ipe);
    dinoc_dino_sched s7 = dinoc_dino_schedule(&c, 7, ipe), s21 = dinoc_dino_schedule(&c, 21, ipe);
    dinoc_dino_sched s28 = dinoc_dino_schedule(&c, 28, ipe), sl = dinoc_dino_schedule(&c, 69, ipe);
    CHECK(s0.freeze_last_layer && s6.freeze_last_layer && !s7.freeze_last_layer);
    /* np.linspace(0.04, 0.07, 4)[e] for epochs 0..3, then 0.07 */
    CHECK(fabs(s0.teacher_temp - 0.04) < 1e-12 && fabs(s7.teacher_temp - 0.05) < 1e-12);
    CHECK(fabs(s21.teacher_temp - 0.07) < 1e-12 && fabs(s28.teacher_temp - 0.07) < 1e-12);
    CHECK(s0.momentum == 0.996 && sl.momentum > 0.99999 && sl.momentum <= 1.0);
    const dinoc_dino_sched s13 = dinoc_dino_schedule(&c, 13, ipe);
    CHECK(s0.lr == 0 && fabs(s13.lr - 5e-4) < 1e-12);
    CHECK(fabs(s0.wd - 0.04) < 1e-12 && sl.wd > 0.39);
    /* a time budget that fits half the recipe (35 of 70 steps): the warmups and the freeze, given
     * in epochs, shrink by half with it (optim.h: dinoc_recipe_steps) */
    c.sched_steps = 35;
    CHECK(dinoc_dino_schedule(&c, 3, ipe).freeze_last_layer && !dinoc_dino_schedule(&c, 4, ipe).freeze_last_layer);
    CHECK(fabs(dinoc_dino_schedule(&c, 6, ipe).lr - 5e-4) < 1e-12 && dinoc_dino_schedule(&c, 5, ipe).lr < 5e-4);
    /* recipe epoch 1 of the temperature's linspace starts at step ceil(3.5) = 4, epoch 3 at 11 */
    CHECK(fabs(dinoc_dino_schedule(&c, 4, ipe).teacher_temp - 0.05) < 1e-12);
    CHECK(fabs(dinoc_dino_schedule(&c, 10, ipe).teacher_temp - 0.06) < 1e-12);
    CHECK(fabs(dinoc_dino_schedule(&c, 11, ipe).teacher_temp - 0.07) < 1e-12);
    CHECK(dinoc_dino_schedule(&c, 35, ipe).lr == c.min_lr);
    /* one global crop and no local one: the loss has no pair (it divided by 0 pairs before) */
    dinoc_dino        d;
    dinoc_dino_config one = dinoc_dino_default();
    one.crops.n_global = 1, one.crops.n_local = 0;
    CHECK_ERR(dinoc_dino_init(&d, &one), DINOC_ERR_ARG, "1 global and 0 local crops");
    /* a fit at or above the recipe changes nothing */
    c.sched_steps = 70;
    CHECK(dinoc_dino_schedule(&c, 6, ipe).freeze_last_layer && dinoc_dino_schedule(&c, 13, ipe).lr == s13.lr);
}

/* bf16 training (cfg.precision "bf16"): the student's products and the teacher's forward round
 * their operands (the ViT-level parity with PyTorch is test_vit_train.c's); here one whole step
 * against the same step in fp32 from the same weights and crops: the loss differs (bf16 is on)
 * by at most 1e-2 relative (measured ~1e-4: bf16's 2^-8 relative rounding, averaged), the student
 * gradient by at most 5 % of its norm (measured 0.26 %), the fp32 master weights stay fp32 (the
 * update is not rounded), and a ResNet backbone is refused. */
DINOC_TEST(dino_step_bf16_near_fp32) {
    dinoc_dino_config c = dinoc_dino_default();
    c.dim = 32, c.depth = 2, c.heads = 2, c.patch = 4, c.image = 16, c.channels = 1, c.batch = 4;
    c.crops.n_global = 2, c.crops.n_local = 2, c.crops.global_size = 16, c.crops.local_size = 8, c.crops.channels = 1;
    c.out_dim = 64, c.head_hidden = 32, c.head_bottleneck = 16;
    dinoc_dino d[2];
    CHECK_OK(dinoc_dino_init(&d[0], &c));
    c.precision = "bf16";
    CHECK_OK(dinoc_dino_init(&d[1], &c));
    if (!d[0].student || !d[1].student) return;
    CHECK(d[1].prec == DINOC_PRECISION_BF16 && d[1].tbf != NULL && d[0].tbf == NULL);
    const size_t n = (size_t)c.batch * dinoc_multicrop_floats(&c.crops);
    float       *x = malloc(sizeof(float) * n);
    dinoc_rng    r;
    dinoc_rng_seed(&r, 3);
    for (size_t i = 0; i < n; i++) x[i] = dinoc_rng_normal(&r);
    dinoc_dino_sched s = {1e-3, 0.04, 0.99, 0.04, 0};
    dinoc_dino_stats st[2];
    for (int k = 0; k < 2; k++) CHECK_OK(dinoc_dino_step(&d[k], x, &s, &st[k]));
    double dg = 0, g2 = 0;
    for (size_t i = 0; i < d[0].np; i++) dg += pow((double)d[1].g[i] - d[0].g[i], 2), g2 += pow(d[0].g[i], 2);
    const double rel_loss = fabs(st[1].loss - st[0].loss) / st[0].loss, rel_g = sqrt(dg / fmax(g2, 1e-300));
    CHECK_MSG(rel_loss > 0 && rel_loss <= 1e-2, "bf16 loss %.7f vs fp32 %.7f", st[1].loss, st[0].loss);
    CHECK_MSG(rel_g > 0 && rel_g <= 0.05, "bf16 gradient differs by %.3g of its norm", rel_g);
    int rounded = 1; /* a master weight off the bf16 grid shows the update was kept in fp32 */
    for (size_t i = 0; i < d[1].np && rounded; i++)
        rounded = d[1].student->params[i] == dinoc_f32_from_bf16(dinoc_bf16_from_f32(d[1].student->params[i]));
    CHECK_MSG(!rounded, "every bf16-run master weight lies on the bf16 grid");
    printf("  dino step bf16 vs fp32: loss %.7f vs %.7f (rel %.2g), gradient rel %.2g\n", st[1].loss, st[0].loss,
           rel_loss, rel_g);
    free(x);
    dinoc_dino_free(&d[0]), dinoc_dino_free(&d[1]);
    c.arch = "resnet_small";
    dinoc_dino bad;
    CHECK(dinoc_dino_init(&bad, &c) == DINOC_ERR_ARG && strstr(dinoc_last_error(), "bf16") != NULL);
    c.arch = NULL, c.precision = "fp16";
    CHECK(dinoc_dino_init(&bad, &c) == DINOC_ERR_ARG && strstr(dinoc_last_error(), "fp16") != NULL);
}
