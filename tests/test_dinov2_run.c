/* test_dinov2_run.c: DINOv2 training runs end to end on Fashion-MNIST with a tiny ViT
 * (src/train/dinov2_run.c over src/train/run.c):
 * - resume: 2N steps straight, and N steps then a resume to 2N, give bitwise identical student,
 *   teacher, heads, centers, AdamW moments and logged values (masks drawn from the saved generator);
 * - a checkpoint whose student weights hold inf stops at its first step with DINOC_ERR_NUMERIC
 *   naming the step, and the checkpoint stays as it was;
 * - the run folder's teacher (a Hugging Face Dinov2 folder with registers, LayerScale and mask
 *   token) loads with dinoc_model_load, and its forward equals the checkpoint's teacher run in a
 *   freshly built DINOv2 object. */
#include "check.h"
#include "run_util.h"
#include "../src/train/dino.h"
#include "../src/train/dinov2.h"

/* in tests/test_dino_run.c */
void   dinoc_test_same_runs(const char *a, const char *b, const char *const *names, int n);
float *dinoc_test_poison_checkpoint(const char *dir, const char *dst, const char *const *keys, int nkeys, int64_t *np);

static dinoc_dinov2_config tiny(const char *out) {
    dinoc_dinov2_config c = dinoc_dinov2_default();
    c.out = out, c.dim = 32, c.depth = 2, c.heads = 2, c.patch = 7, c.batch = 16, c.epochs = 1;
    c.out_dim = 64, c.head_hidden = 48, c.head_bottleneck = 16, c.crops.n_local = 2;
    c.ibot_out_dim = 32, c.ibot_hidden = 48, c.ibot_bottleneck = 16;
    c.workers = 2, c.knn_every_epoch = 0, c.warmup_epochs = 0, c.drop_path = 0.1, c.freeze_last_layer_epochs = 0;
    c.warmup_teacher_temp_epochs = 0;
    return c;
}

DINOC_TEST(dinov2_run_resume_is_exact) {
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/dinov2_a", dinoc_test_tmpdir());
    snprintf(b, sizeof b, "%s/dinov2_b", dinoc_test_tmpdir());
    const int           N = 3;
    dinoc_dinov2_result res;
    /* registers and a separate iBOT head: every piece of state the checkpoint holds */
    dinoc_dinov2_config ca = tiny(a);
    ca.n_registers = 1, ca.ibot_separate_head = 1, ca.max_steps = 2 * N, ca.ckpt_every = N;
    CHECK_OK(dinoc_dinov2_train(&ca, &res));
    dinoc_dinov2_config cb = ca;
    cb.out = b, cb.max_steps = N;
    CHECK_OK(dinoc_dinov2_train(&cb, &res));
    CHECK(res.steps == N);
    dinoc_dinov2_config cr = dinoc_dinov2_default();
    cr.resume = b, cr.out = b, cr.max_steps = 2 * N;
    CHECK_OK(dinoc_dinov2_train(&cr, &res));
    CHECK(res.steps == 2 * N);
    const char *names[] = {"student",          "teacher",          "adam.m",           "adam.v",
                           "dino_head.student", "dino_head.teacher", "dino_head.adam.v", "ibot_head.student",
                           "ibot_head.teacher", "ibot_head.adam.m",  "center",           "ibot_center"};
    dinoc_test_same_runs(a, b, names, 12);
    char *la = read_text(a, "log.jsonl");
    CHECK(la && strstr(la, "\"ibot_loss\":") && strstr(la, "\"n_masked\":"));
    if (la) strip_speed(la);
    CHECK(la && !strstr(la, "img_s"));
    free(la);

    /* the saved teacher: loadable, and the same function as the checkpoint's teacher */
    dinoc_model *m = NULL;
    CHECK_OK(dinoc_model_load(&m, a, NULL));
    if (!m) return;
    dinoc_dinov2 d;
    CHECK_OK(dinoc_dinov2_init(&d, &ca));
    int64_t n  = 0;
    float  *tp = read_tensor(a, "teacher", &n);
    CHECK(tp && n == (int64_t)d.teacher->n_params && n == dinoc_model_num_params(m));
    const dinoc_preprocess *pp = dinoc_model_preprocess(m);
    CHECK(pp->resize_w == 28 && fabsf(pp->mean[0] - 0.2860f) < 1e-6f);
    if (tp && n == (int64_t)d.teacher->n_params) {
        memcpy(d.teacher->params, tp, sizeof(float) * n);
        const int B = 2, T = 1 + 1 + 16, D = 32;
        float     x[2 * 28 * 28];
        dinoc_rng r;
        dinoc_rng_seed(&r, 7);
        for (int i = 0; i < B * 28 * 28; i++) x[i] = dinoc_rng_normal(&r);
        dinoc_state *s1 = NULL, *s2 = NULL;
        CHECK_OK(dinoc_state_init(&s1, m, B, 28, 28, 0));
        CHECK_OK(dinoc_state_init(&s2, d.teacher, B, 28, 28, 0));
        if (s1 && s2) {
            CHECK_OK(dinoc_forward(m, s1, x, NULL));
            CHECK_OK(dinoc_forward(d.teacher, s2, x, NULL));
            /* same weights through the same kernels: equal to the bit */
            CHECK_CLOSE(dinoc_state_output(s1), dinoc_state_output(s2), (size_t)B * T * D, 0, 0, "saved teacher");
        }
        dinoc_state_free(s1), dinoc_state_free(s2);
    }
    free(tp);
    dinoc_dinov2_free(&d);
    dinoc_model_free(m);
}

DINOC_TEST(dinov2_run_nan_stops_and_keeps_checkpoint) {
    char d[512], p2[600];
    snprintf(d, sizeof d, "%s/dinov2_nan", dinoc_test_tmpdir());
    snprintf(p2, sizeof p2, "%s/dinov2_nan2", dinoc_test_tmpdir());
    dinoc_dinov2_result res;
    dinoc_dinov2_config c = tiny(d);
    c.max_steps = 2, c.ckpt_every = 2;
    CHECK_OK(dinoc_dinov2_train(&c, &res));
    const char *keys[] = {"format", "step", "adam_step", "dino_head_adam_step", "loader_epoch", "loader_index",
                          "config"};
    int64_t     np     = 0;
    float      *poison = dinoc_test_poison_checkpoint(d, p2, keys, 7, &np);
    if (!poison) return;
    dinoc_dinov2_config r = dinoc_dinov2_default();
    r.resume = p2, r.out = p2, r.max_steps = 10;
    CHECK_ERR(dinoc_dinov2_train(&r, &res), DINOC_ERR_NUMERIC, "step 2");
    int64_t n1 = 0;
    float  *after = read_tensor(p2, "student", &n1);
    CHECK(after && n1 == np && isinf(after[np / 2]) && memcmp(after, poison, sizeof(float) * (np / 2)) == 0);
    free(after), free(poison);
    /* a DINO run refuses a DINOv2 checkpoint by its format */
    dinoc_dino_config dc = dinoc_dino_default();
    dinoc_dino_result dr;
    dc.resume = d, dc.out = d;
    CHECK_ERR(dinoc_dino_train(&dc, &dr), DINOC_ERR_FORMAT, "dinoc-dinov2-1");
}
