/* test_dino_run.c: DINO training runs end to end on Fashion-MNIST with a tiny ViT
 * (src/train/dino_run.c):
 * - resume: 2N steps straight, and N steps then a resume to 2N, give bitwise identical student,
 *   teacher, heads, center, AdamW moments and logged values (same thread count);
 * - a checkpoint whose weights hold inf stops at its first step with DINOC_ERR_NUMERIC naming the
 *   step, and the checkpoint stays as it was;
 * - the run folder holds a loadable teacher (config.json + model.safetensors) with the
 *   Fashion-MNIST preprocessing. */
#include "check.h"
#include "run_util.h"
#include "../src/train/dino.h"

static dinoc_dino_config tiny(const char *out) {
    dinoc_dino_config c = dinoc_dino_default();
    c.out = out, c.dim = 32, c.depth = 2, c.heads = 2, c.patch = 7, c.batch = 16, c.epochs = 1;
    c.out_dim = 64, c.head_hidden = 48, c.head_bottleneck = 16, c.crops.n_local = 2;
    c.workers = 2, c.knn_every_epoch = 0, c.warmup_epochs = 0, c.drop_path = 0.1, c.freeze_last_layer = 0;
    return c;
}

/* Shared with tests/test_dinov2_run.c (declared there): the run folders a (straight) and b
 * (resumed) hold bitwise equal checkpoint tensors `names` and equal logs (speed removed). */
void dinoc_test_same_runs(const char *a, const char *b, const char *const *names, int n) {
    for (int i = 0; i < n; i++) {
        int64_t na = 0, nb = 0;
        float  *xa = read_tensor(a, names[i], &na), *xb = read_tensor(b, names[i], &nb);
        CHECK_MSG(xa && xb && na == nb && memcmp(xa, xb, sizeof(float) * na) == 0,
                  "'%s' differs between the straight and the resumed run", names[i]);
        free(xa), free(xb);
    }
    char *la = read_text(a, "log.jsonl"), *lb = read_text(b, "log.jsonl");
    CHECK(la && lb);
    if (la && lb) {
        strip_speed(la), strip_speed(lb);
        CHECK_MSG(strcmp(la, lb) == 0, "logged values differ:\n%s\nvs\n%s", la, lb);
    }
    free(la), free(lb);
}

/* Writes DST/checkpoint.safetensors, a copy of DIR/checkpoint.safetensors with metadata `keys` (at
 * most 12), "config" replaced by `config` where that is not NULL, and, where poison is not NULL,
 * "student" holding an inf in its middle element (*poison: that student, malloc'ed, *np floats). */
static int rewrite_checkpoint(const char *dir, const char *dst, const char *const *keys, int nkeys, const char *config,
                              float **poison, int64_t *np) {
    char path[800];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", dir);
    dinoc_safetensors *st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, path));
    if (!st || nkeys > 12) return 0;
    int           n = dinoc_safetensors_count(st);
    dinoc_tensor *t = calloc((size_t)n, sizeof *t);
    for (int i = 0; t && i < n; i++) {
        t[i] = *dinoc_safetensors_get(st, i);
        if (poison && !strcmp(t[i].name, "student")) {
            *np     = dinoc_tensor_numel(&t[i]);
            *poison = malloc(sizeof(float) * *np);
            CHECK_OK(dinoc_tensor_to_f32(&t[i], *poison, *np));
            (*poison)[*np / 2] = INFINITY;
            t[i].data          = *poison;
        }
    }
    const char *meta[25];
    for (int i = 0; i < nkeys; i++) {
        meta[2 * i]     = keys[i];
        meta[2 * i + 1] = config && !strcmp(keys[i], "config") ? config : dinoc_safetensors_metadata(st, keys[i]);
    }
    meta[2 * nkeys] = NULL;
    CHECK_OK(dinoc_mkdir(dst));
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", dst);
    int ok = t != NULL;
    if (t) CHECK_OK(dinoc_safetensors_write(path, t, n, meta));
    dinoc_safetensors_close(st);
    free(t);
    return ok;
}

/* Shared with tests/test_dinov2_run.c: rewrite_checkpoint with the student poisoned; returns it
 * (malloc'ed, *np floats; NULL on failure). */
float *dinoc_test_poison_checkpoint(const char *dir, const char *dst, const char *const *keys, int nkeys, int64_t *np) {
    float *poison = NULL;
    rewrite_checkpoint(dir, dst, keys, nkeys, NULL, &poison, np);
    return poison;
}

/* 2N steps straight vs N steps and a resume (which takes the precision from the checkpoint) */
static void resume_case(const char *tag, const char *precision, char *a, char *b) {
    snprintf(a, 512, "%s/dino_a%s", dinoc_test_tmpdir(), tag);
    snprintf(b, 512, "%s/dino_b%s", dinoc_test_tmpdir(), tag);
    const int         N = 4;
    dinoc_dino_result res;
    dinoc_dino_config ca = tiny(a);
    ca.max_steps = 2 * N, ca.ckpt_every = N, ca.precision = precision;
    CHECK_OK(dinoc_dino_train(&ca, &res));
    dinoc_dino_config cb = tiny(b);
    cb.max_steps = N, cb.ckpt_every = N, cb.precision = precision;
    CHECK_OK(dinoc_dino_train(&cb, &res));
    CHECK(res.steps == N);
    dinoc_dino_config cr = dinoc_dino_default();
    cr.resume = b, cr.out = b, cr.max_steps = 2 * N;
    CHECK_OK(dinoc_dino_train(&cr, &res));
    CHECK(res.steps == 2 * N);
    const char *names[] = {"student", "teacher", "student_head", "teacher_head", "center", "adam.m", "adam.v",
                           "head_adam.m", "last_adam.v"};
    dinoc_test_same_runs(a, b, names, 9);
}

DINOC_TEST(dino_run_resume_is_exact_bf16) {
    char a[512], b[512], c[512], d[512];
    resume_case("_bf16", "bf16", a, b);
    resume_case("_fp32ref", NULL, c, d); /* a bf16 run that silently ran fp32 would equal this one */
    int64_t n1 = 0, n2 = 0;
    float  *t1 = read_tensor(a, "student", &n1), *t2 = read_tensor(c, "student", &n2);
    CHECK(t1 && t2 && n1 == n2 && memcmp(t1, t2, sizeof(float) * n1) != 0);
    free(t1), free(t2);
}

/* --precision auto: bf16 where its products run natively, fp32 elsewhere; the checkpoint stores the
 * resolved name (a resume on another machine keeps the run's precision), and the resume is exact. */
DINOC_TEST(dino_run_precision_auto) {
    char a[512], b[512], path[600];
    resume_case("_auto", "auto", a, b);
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", b);
    dinoc_safetensors *st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, path));
    const char *cfg  = st ? dinoc_safetensors_metadata(st, "config") : NULL;
    const char *want = dinoc_bf16_native() ? "\"precision\":\"bf16\"" : "\"precision\":\"fp32\"";
    CHECK_MSG(cfg && strstr(cfg, want), "config %s lacks %s", cfg ? cfg : "(none)", want);
    dinoc_safetensors_close(st);
}

DINOC_TEST(dino_run_resume_is_exact) {
    char a[512], b[512];
    resume_case("", NULL, a, b);
    /* the run folder's model is the teacher, loadable, with the Fashion-MNIST preprocessing */
    dinoc_model *m = NULL;
    CHECK_OK(dinoc_model_load(&m, a, NULL));
    if (m) {
        int64_t n  = 0;
        float  *tp = read_tensor(a, "teacher", &n);
        CHECK(tp && n == dinoc_model_num_params(m));
        const dinoc_preprocess *pp = dinoc_model_preprocess(m);
        CHECK(pp->resize_w == 28 && !pp->do_center_crop && fabsf(pp->mean[0] - 0.2860f) < 1e-6f);
        free(tp);
        dinoc_model_free(m);
    }
}

/* DIR = the scratch folder's `name`: a tiny run of 2 steps, checkpointed; k_keys: its metadata */
static const char *const k_keys[] = {"format", "step", "adam_step", "head_adam_step", "last_adam_step",
                                     "loader_epoch", "loader_index", "config"};
static void two_steps(char *dir, size_t size, const char *name) {
    snprintf(dir, size, "%s/%s", dinoc_test_tmpdir(), name);
    dinoc_dino_result res;
    dinoc_dino_config c = tiny(dir);
    c.max_steps = 2, c.ckpt_every = 2;
    CHECK_OK(dinoc_dino_train(&c, &res));
}

DINOC_TEST(dino_run_nan_stops_and_keeps_checkpoint) {
    char d[512], p2[600];
    two_steps(d, sizeof d, "dino_nan");
    snprintf(p2, sizeof p2, "%s/dino_nan2", dinoc_test_tmpdir());
    dinoc_dino_result res;
    int64_t           np     = 0;
    float            *poison = dinoc_test_poison_checkpoint(d, p2, k_keys, 8, &np);
    if (!poison) return;
    dinoc_dino_config r = dinoc_dino_default();
    r.resume = p2, r.out = p2, r.max_steps = 10;
    CHECK_ERR(dinoc_dino_train(&r, &res), DINOC_ERR_NUMERIC, "step 2");
    int64_t n1 = 0;
    float  *after = read_tensor(p2, "student", &n1);
    CHECK(after && n1 == np && isinf(after[np / 2]) && memcmp(after, poison, sizeof(float) * (np / 2)) == 0);
    free(after), free(poison);
}

/* A checkpoint written before bf16 training existed has no "precision" in its config: it ran in
 * fp32, and resumes in fp32 whatever precision the resuming command names (main.sh passes auto). */
DINOC_TEST(dino_run_resume_without_precision_is_fp32) {
    char a[512], b[512], path[600];
    two_steps(a, sizeof a, "dino_oldprec_a");
    snprintf(b, sizeof b, "%s/dino_oldprec_b", dinoc_test_tmpdir());
    dinoc_dino_result res;
    /* b: a's checkpoint with "precision" taken out of its config */
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", a);
    dinoc_safetensors *st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, path));
    char *cfg = st ? strdup(dinoc_safetensors_metadata(st, "config")) : NULL;
    if (st) dinoc_safetensors_close(st);
    char        *at  = cfg ? strstr(cfg, "\"precision\":\"fp32\",") : NULL;
    const size_t cut = strlen("\"precision\":\"fp32\",");
    CHECK_MSG(at != NULL, "config %s: no precision", cfg ? cfg : "(none)");
    if (!at) {
        free(cfg);
        return;
    }
    memmove(at, at + cut, strlen(at + cut) + 1);
    CHECK(rewrite_checkpoint(a, b, k_keys, 8, cfg, NULL, NULL));
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", b);
    dinoc_dino_config r = dinoc_dino_default();
    r.resume = b, r.out = b, r.max_steps = 4, r.precision = "bf16";
    CHECK_OK(dinoc_dino_train(&r, &res));
    CHECK(res.steps == 4);
    st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, path));
    const char *after = st ? dinoc_safetensors_metadata(st, "config") : NULL;
    CHECK_MSG(after && !strstr(after, "bf16"), "resumed config %s", after ? after : "(none)");
    if (st) dinoc_safetensors_close(st);
    free(cfg);
}
