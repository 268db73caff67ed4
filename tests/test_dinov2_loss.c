/* test_dinov2_loss.c: DINOv2's targets and losses (src/train/dinov2_loss.c).
 *   - parity with PyTorch on fixed inputs (tests/py/gen_dinov2.py): softmax-centered and
 *     Sinkhorn-Knopp targets, the center EMA, the DINO and iBOT losses and their gradients for both
 *     kinds of target, KoLeo and its gradient: max abs error <= 1e-5 of each tensor's largest value
 *     (the bound; float32 on both sides, sums in double here);
 *   - central finite differences of the three backward passes. */
#include "check.h"
#include "../src/train/dinov2_loss.h"

/* the fixture tensor `name` as floats (caller frees); NULL (and a failed check) if absent */
static float *get(const dinoc_safetensors *st, const char *name, int64_t n) {
    const dinoc_tensor *t = dinoc_safetensors_find(st, name);
    CHECK_MSG(t && dinoc_tensor_numel(t) == n, "fixture '%s' missing or not %lld elements", name, (long long)n);
    if (!t || dinoc_tensor_numel(t) != n) return NULL;
    float *v = malloc(sizeof(float) * (size_t)n);
    dinoc_tensor_to_f32(t, v, n);
    return v;
}

/* max |got - want| <= 1e-5 * max(|want|) (the bound, relative to the tensor's scale) */
static void close_rel(const float *got, const float *want, int64_t n, const char *what) {
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)got[i] - want[i]));
        s = fmax(s, fabs((double)want[i]));
        if (isnan(got[i])) d = INFINITY;
    }
    CHECK_MSG(d <= 1e-5 * s, "%s: max abs error %.3g vs scale %.3g", what, d, s);
    printf("  %-22s max abs err %.2e (scale %.2e)\n", what, d, s);
}

static double scalar(const dinoc_safetensors *st, const char *name) {
    const dinoc_tensor *t = dinoc_safetensors_find(st, name);
    CHECK_MSG(t && t->dtype == DINOC_DTYPE_F64, "fixture '%s' missing", name);
    return t && t->dtype == DINOC_DTYPE_F64 ? ((const double *)t->data)[0] : NAN;
}

static dinoc_safetensors *open_fixture(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/dinov2/loss.safetensors", dinoc_test_fixtures());
    dinoc_safetensors *st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, path));
    return st;
}

static double cfg_at(const dinoc_safetensors *st, const char *name, int i) {
    const dinoc_tensor *t = dinoc_safetensors_find(st, name);
    CHECK_MSG(t && t->dtype == DINOC_DTYPE_F64 && dinoc_tensor_numel(t) > i, "fixture '%s' missing", name);
    return t && t->dtype == DINOC_DTYPE_F64 && dinoc_tensor_numel(t) > i ? ((const double *)t->data)[i] : 0;
}

/* targets, center and loss + gradient of one objective ("dino" or "ibot") */
static void objective_case(const dinoc_safetensors *st, const char *obj) {
    char key[64];
#define K_(s) (snprintf(key, sizeof key, "%s.%s", obj, s), key)
    const int    is_dino = strcmp(obj, "dino") == 0;
    const int    a = (int)cfg_at(st, K_("cfg"), 0), b = (int)cfg_at(st, K_("cfg"), 1), K = (int)cfg_at(st, K_("cfg"), 2);
    const double temp = cfg_at(st, K_("cfg"), 3), cm = cfg_at(st, K_("cfg"), 4);
    /* dino: a = B, b = nL; ibot: a = M tokens, b = images */
    const int NT = is_dino ? 2 * a : a, NS = is_dino ? (2 + b) * a : a;
    if (K < 1 || NT < 1) return;
    float *t = get(st, K_("t"), (int64_t)NT * K), *s = get(st, K_("s"), (int64_t)NS * K);
    float *c = get(st, K_("center"), K), *w = is_dino ? NULL : get(st, K_("w"), NT);
    float *q = calloc((size_t)NT * K, sizeof(float)), *ds = calloc((size_t)NS * K, sizeof(float));
    double *rl = calloc((size_t)(NS + NT + K + 1), sizeof(double));
    if (!t || !s || !c || (!is_dino && !w)) goto done;
    const char *kinds[2] = {"center", "sk"};
    for (int kind = 0; kind < 2; kind++) {
        char qn[32], ln[32], dn[32], label[64];
        snprintf(qn, sizeof qn, "q_%s", kinds[kind]), snprintf(ln, sizeof ln, "loss_%s", kinds[kind]);
        snprintf(dn, sizeof dn, "ds_%s", kinds[kind]);
        if (kind == 0) dinoc_softmax_center(q, t, c, NT, K, temp);
        else CHECK_OK(dinoc_sinkhorn_knopp(q, t, NT, K, temp, 3, rl));
        float *wq = get(st, K_(qn), (int64_t)NT * K);
        snprintf(label, sizeof label, "%s %s", obj, qn);
        if (wq) close_rel(q, wq, (int64_t)NT * K, label);
        free(wq);
        double loss = is_dino ? dinoc_dinov2_dino_loss(ds, rl, q, s, 2, b, a, K, 0.1, 1.0)
                              : dinoc_ibot_loss(ds, rl, q, s, w, a, b, K, 0.1, 1.0);
        double want = scalar(st, K_(ln));
        /* the loss: relative 1e-5 (the bound) */
        CHECK_MSG(fabs(loss - want) <= 1e-5 * fabs(want), "%s %s: %.8f vs torch %.8f", obj, ln, loss, want);
        float *wd = get(st, K_(dn), (int64_t)NS * K);
        snprintf(label, sizeof label, "%s %s", obj, dn);
        if (wd) close_rel(ds, wd, (int64_t)NS * K, label);
        free(wd);
    }
    CHECK_OK(dinoc_center_update(c, t, NT, K, cm, rl));
    float *wc = get(st, K_("new_center"), K);
    snprintf(key, sizeof key, "%s new center", obj);
    if (wc) close_rel(c, wc, K, key);
    free(wc);
#undef K_
done:
    free(t), free(s), free(c), free(w), free(q), free(ds), free(rl);
}

DINOC_TEST(dinov2_loss_parity) {
    dinoc_safetensors *st = open_fixture();
    if (!st) return;
    objective_case(st, "dino");
    objective_case(st, "ibot");
    const int n = 9, D = 7;
    float    *x = get(st, "koleo.x", n * D), *want = get(st, "koleo.dx", n * D);
    float     dx[63] = {0};
    if (x && want) {
        dinoc_koleo k;
        CHECK_OK(dinoc_koleo_init(&k, n, D));
        double loss = dinoc_koleo_loss(&k, dx, x, n, 1.0), wl = scalar(st, "koleo.loss");
        CHECK_MSG(fabs(loss - wl) <= 1e-5 * fabs(wl), "KoLeo %.8f vs torch %.8f", loss, wl); /* issue's bound */
        close_rel(dx, want, n * D, "koleo dx");
        dinoc_koleo_free(&k);
    }
    free(x), free(want);
    dinoc_safetensors_close(st);
}

/* ---- finite differences ------------------------------------------------------------------------ */

enum { FD_DINO, FD_IBOT, FD_KOLEO };

static double fd_loss(int which, float *ds, double *rl, const float *q, const float *s, const float *w,
                      dinoc_koleo *k) {
    switch (which) {
    case FD_DINO: return dinoc_dinov2_dino_loss(ds, rl, q, s, 2, 2, 3, 6, 0.1, 0.7);
    case FD_IBOT: return dinoc_ibot_loss(ds, rl, q, s, w, 12, 4, 6, 0.1, 0.7);
    default: return dinoc_koleo_loss(k, ds, s, 12, 0.7);
    }
}

DINOC_TEST(dinov2_loss_gradcheck) {
    /* dino: 2 globals + 2 locals of batch 3 (12 student rows, 6 teacher rows); ibot: 12 tokens of 4
     * images; koleo: 12 rows of 6 */
    const int K = 6, N = 12;
    float     q[72], s[72], w[12], g[72], scratch[72];
    double    rl[32];
    dinoc_rng r;
    dinoc_rng_seed(&r, 11);
    for (int i = 0; i < 72; i++) q[i] = dinoc_rng_normal(&r), s[i] = 2 * dinoc_rng_normal(&r);
    dinoc_softmax_center(q, q, (const float[6]){0}, N, K, 0.5);
    for (int i = 0; i < N; i++) w[i] = 1.0f / (1 + i % 4);
    dinoc_koleo k;
    CHECK_OK(dinoc_koleo_init(&k, N, K));
    const char *names[3] = {"DINO", "iBOT", "KoLeo"};
    for (int which = 0; which < 3; which++) {
        memset(g, 0, sizeof g);
        fd_loss(which, g, rl, q, s, w, &k);
        double worst = 0, gmax = 0;
        for (int i = 0; i < N * K; i++) {
            const float keep = s[i], h = 1e-2f;
            s[i]             = keep + h;
            double lp        = fd_loss(which, scratch, rl, q, s, w, which == FD_KOLEO ? &k : NULL);
            s[i]             = keep - h;
            double lm        = fd_loss(which, scratch, rl, q, s, w, which == FD_KOLEO ? &k : NULL);
            s[i]             = keep;
            worst            = fmax(worst, fabs(0.7 * (lp - lm) / (2 * h) - g[i])); /* gradients carry weight 0.7 */
            gmax             = fmax(gmax, fabs(g[i]));
        }
        /* h = 1e-2 in float: truncation O(h^2) times third derivatives plus float rounding of the
         * inputs (~1e-7 / h); 2e-3 of the largest gradient covers both */
        CHECK_MSG(worst <= 2e-3 * gmax, "%s gradient vs finite differences: worst %.3g (largest %.3g)", names[which],
                  worst, gmax);
        printf("  %-6s finite differences: worst %.2e of largest %.2e\n", names[which], worst, gmax);
    }
    dinoc_koleo_free(&k);
}
