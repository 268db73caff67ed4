/* test_resnet.c: the ResNet backbones (src/nn/resnet.c, resnet_io.c) against the PyTorch ResNet of
 * tests/py/gen_resnet.py (fixtures $DINOC_FIXTURES/resnet/, made by
 * `/usr/bin/python3 tests/py/gen_resnet.py <fixtures dir>`; a missing fixture fails).
 *
 * Cases: resnet18 (torchvision preset, eval), resnet50_narrow (ResNet-50's Bottleneck layout at
 * narrow widths, eval + train), small (resnet_small on 28x28, eval + train, fc), clip_narrow
 * (OpenAI CLIP's ModifiedResNet at narrow widths, eval). References are float64 torch runs.
 * Tolerances:
 * - eval features: atol 1e-4 (the bound), rtol 1e-4. Features are O(1) averages after 8-16
 *   layers; float rounding differs from torch's (different GEMM blocking, BN folding) by ~1e-6
 *   per layer and grows through the stack to a few 1e-6 here.
 * - training features and running stats: same bound.
 * - parameter gradients: rtol 1e-3 (STYLE.md 3.5's model-gradient default) plus atol 1e-4 x the
 *   tensor's max |grad|: a gradient is a sum over the whole batch and image, and the ~1e-6 relative
 *   rounding of each term leaves absolute errors proportional to the tensor's scale on elements
 *   that cancel to near 0. A wrong term shows up at 1e-2 relative or more. */
#include "check.h"
#include "../src/nn/resnet.h"

#include <string.h>

#define FEAT_ATOL 1e-4
#define FEAT_RTOL 1e-4
#define GRAD_RTOL 1e-3
#define GRAD_ATOL_FRAC 1e-4

static char *fixture_path(const char *rel) {
    char *dir  = dinoc_path_join(dinoc_test_fixtures(), "resnet");
    char *path = dinoc_path_join(dir, rel);
    free(dir);
    return path;
}

/* Loads resnet/<name> and its io file; fails the test if either is missing. */
static int open_case(const char *name, dinoc_resnet **m, dinoc_safetensors **io) {
    char  rel[96];
    char *model = fixture_path(name);
    snprintf(rel, sizeof rel, "%s_io.safetensors", name);
    char *iop = fixture_path(rel);
    *m = NULL, *io = NULL;
    CHECK_MSG(dinoc_file_exists(iop), "%s missing: run `/usr/bin/python3 tests/py/gen_resnet.py %s`",
              iop, dinoc_test_fixtures());
    if (dinoc_file_exists(iop)) {
        CHECK_OK(dinoc_resnet_load(m, model));
        CHECK_OK(dinoc_safetensors_open(io, iop));
    }
    free(model);
    free(iop);
    if (*m && *io) return 1;
    dinoc_resnet_free(*m);
    dinoc_safetensors_close(*io);
    return 0;
}

/* A tensor of the io file as floats (caller frees); NULL and a failed CHECK if absent. */
static float *io_get(dinoc_safetensors *io, const char *name, int64_t *shape) {
    const dinoc_tensor *t = dinoc_safetensors_find(io, name);
    CHECK_MSG(t != NULL, "io tensor '%s' missing", name);
    if (!t) return NULL;
    float *d = malloc(sizeof(float) * (size_t)dinoc_tensor_numel(t));
    CHECK_OK(dinoc_tensor_to_f32(t, d, dinoc_tensor_numel(t)));
    if (shape)
        for (int i = 0; i < t->ndim; i++) shape[i] = t->shape[i];
    return d;
}

static void eval_case(const char *name) {
    dinoc_resnet      *m;
    dinoc_safetensors *io;
    if (!open_case(name, &m, &io)) return;
    int64_t sh[4];
    float  *x = io_get(io, "images", sh), *want = io_get(io, "feats_eval", NULL);
    const int B = (int)sh[0], H = (int)sh[2], W = (int)sh[3], F = dinoc_resnet_feat_dim(m);
    dinoc_resnet_ws *ws = NULL;
    CHECK_OK(dinoc_resnet_ws_init(&ws, m, B, H, W, 0));
    float *feats = calloc((size_t)B * F, sizeof(float));
    if (x && want && ws) {
        CHECK_OK(dinoc_resnet_forward(m, x, B, H, W, feats, ws));
        char label[64];
        snprintf(label, sizeof label, "%s.feats_eval", name);
        CHECK_CLOSE(feats, want, (size_t)B * F, FEAT_ATOL, FEAT_RTOL, label);
        if (m->cfg.num_classes) {
            float *lw = io_get(io, "logits", NULL), *lg = calloc((size_t)B * m->cfg.num_classes, 4);
            CHECK_OK(dinoc_resnet_fc_forward(m, feats, lg, B));
            snprintf(label, sizeof label, "%s.logits", name);
            if (lw) CHECK_CLOSE(lg, lw, (size_t)B * m->cfg.num_classes, FEAT_ATOL, FEAT_RTOL, label);
            free(lw), free(lg);
        }
    }
    free(x), free(want), free(feats);
    dinoc_resnet_ws_free(ws);
    dinoc_resnet_free(m);
    dinoc_safetensors_close(io);
}

DINOC_TEST(resnet_parity_eval) {
    eval_case("resnet18");
    eval_case("resnet50_narrow");
    eval_case("small");
    eval_case("clip_narrow"); /* CLIP ModifiedResNet under "visual." names, text tensors skipped */
}

/* CLIP's ModifiedResNet is inference-only and bound to its image size. */
DINOC_TEST(resnet_clip_limits) {
    dinoc_resnet_config cfg;
    dinoc_resnet       *m  = NULL;
    dinoc_resnet_ws    *ws = NULL;
    CHECK_OK(dinoc_resnet_preset(&cfg, "clip_rn50"));
    CHECK(cfg.heads == 32 && cfg.out_dim == 1024 && cfg.image_size == 224);
    CHECK_OK(dinoc_resnet_alloc_layout(&m, &cfg));
    if (!m) return;
    CHECK(m->feat_dim == 1024 && m->n_stem == 3);
    CHECK_ERR(dinoc_resnet_ws_init(&ws, m, 2, 224, 224, 1), DINOC_ERR_UNSUPPORTED, "training CLIP");
    CHECK_ERR(dinoc_resnet_ws_init(&ws, m, 2, 256, 256, 0), DINOC_ERR_ARG, "224x224");
    dinoc_resnet_free(m);
    cfg.heads = 30; /* 2048 channels do not split into 30 heads */
    CHECK_ERR(dinoc_resnet_alloc_layout(&m, &cfg), DINOC_ERR_CONFIG, "attn_heads");
}

static void train_case(const char *name) {
    dinoc_resnet      *m;
    dinoc_safetensors *io;
    if (!open_case(name, &m, &io)) return;
    int64_t sh[4];
    float  *x = io_get(io, "images", sh), *want = io_get(io, "feats_train", NULL);
    float  *dfeats = io_get(io, "dfeats", NULL);
    const int B = (int)sh[0], H = (int)sh[2], W = (int)sh[3], F = dinoc_resnet_feat_dim(m);
    dinoc_resnet_ws *ws = NULL;
    CHECK_OK(dinoc_resnet_ws_init(&ws, m, B, H, W, 1));
    float *feats = calloc((size_t)B * F, sizeof(float)), *grads = calloc(m->n_params, sizeof(float));
    char   label[128];
    if (x && want && dfeats && ws) {
        CHECK_OK(dinoc_resnet_forward_train(m, x, B, H, W, feats, ws));
        snprintf(label, sizeof label, "%s.feats_train", name);
        CHECK_CLOSE(feats, want, (size_t)B * F, FEAT_ATOL, FEAT_RTOL, label);
        CHECK_OK(dinoc_resnet_backward(m, dfeats, grads, ws));
        CHECK(m->num_batches_tracked == 8); /* 7 in the file, + 1 training forward */
        const dinoc_resnet_param *e;
        const int                 n = dinoc_resnet_entries(m, &e);
        int                       checked = 0;
        for (int i = 0; i < n; i++) {
            if (!strncmp(e[i].name, "fc.", 3)) continue; /* fc is not on the feature path */
            snprintf(label, sizeof label, "%s%s", e[i].is_buffer ? "after." : "grad.", e[i].name);
            float *g = io_get(io, label, NULL);
            if (!g) continue;
            const float *got = e[i].is_buffer ? m->buffers + e[i].offset : grads + e[i].offset;
            double       gmax = 0;
            for (size_t k = 0; k < e[i].count; k++) gmax = fmax(gmax, fabs(g[k]));
            double atol = e[i].is_buffer ? FEAT_ATOL : GRAD_ATOL_FRAC * gmax;
            double rtol = e[i].is_buffer ? FEAT_RTOL : GRAD_RTOL;
            if (!dinoc_check_close(got, g, e[i].count, atol, rtol, label, NULL))
                CHECK_MSG(0, "%s: %s not close", name, label);
            checked++;
            free(g);
        }
        CHECK(checked == n - (m->cfg.num_classes ? 2 : 0));
    }
    free(x), free(want), free(dfeats), free(feats), free(grads);
    dinoc_resnet_ws_free(ws);
    dinoc_resnet_free(m);
    dinoc_safetensors_close(io);
}

DINOC_TEST(resnet_parity_train) {
    train_case("resnet50_narrow");
    train_case("small");
}

DINOC_TEST(resnet_presets) {
    /* parameter counts of torchvision's models (sum of numel over named_parameters) */
    static const struct {
        const char *arch;
        size_t      n;
        int         feat;
    } want[] = {{"resnet18", 11689512, 512}, {"resnet34", 21797672, 512},
                {"resnet50", 25557032, 2048}, {"resnet101", 44549160, 2048}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        dinoc_resnet_config cfg;
        dinoc_resnet       *m = NULL;
        CHECK_OK(dinoc_resnet_preset(&cfg, want[i].arch));
        CHECK_OK(dinoc_resnet_alloc_layout(&m, &cfg));
        if (!m) continue;
        CHECK_MSG(m->n_params == want[i].n && m->feat_dim == want[i].feat,
                  "%s: %zu params, F %d; want %zu, %d", want[i].arch, m->n_params, m->feat_dim,
                  want[i].n, want[i].feat);
        dinoc_resnet_free(m);
    }
    dinoc_resnet_config cfg;
    CHECK_ERR(dinoc_resnet_preset(&cfg, "resnet19"), DINOC_ERR_ARG, "resnet19");
}

/* save -> load gives the same tensors and the same features; then the error paths. */
DINOC_TEST(resnet_save_load) {
    dinoc_resnet_config cfg;
    dinoc_resnet       *m = NULL, *m2 = NULL;
    CHECK_OK(dinoc_resnet_preset(&cfg, "resnet_small"));
    cfg.num_classes = 3;
    CHECK_OK(dinoc_resnet_init_random(&m, &cfg, 42));
    if (!m) return;
    for (size_t i = 0; i < m->n_buffers; i++) m->buffers[i] += 0.01f * (float)(i % 7);
    m->num_batches_tracked = 5;
    char *dir = dinoc_path_join(dinoc_test_tmpdir(), "resnet_small_rt");
    CHECK_OK(dinoc_resnet_save(m, dir));
    CHECK_OK(dinoc_resnet_load(&m2, dir));
    if (m2) {
        CHECK(m2->n_params == m->n_params && m2->n_buffers == m->n_buffers);
        CHECK(!memcmp(m2->params, m->params, sizeof(float) * m->n_params));
        CHECK(!memcmp(m2->buffers, m->buffers, sizeof(float) * m->n_buffers));
        CHECK(m2->num_batches_tracked == 5 && m2->cfg.num_classes == 3);
        dinoc_resnet_ws *ws = NULL;
        CHECK_OK(dinoc_resnet_ws_init(&ws, m2, 2, 28, 28, 0));
        float x[2 * 28 * 28], f1[64 * 2], f2[64 * 2];
        for (int i = 0; i < 2 * 28 * 28; i++) x[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
        CHECK_OK(dinoc_resnet_forward(m, x, 2, 28, 28, f1, ws));
        CHECK_OK(dinoc_resnet_forward(m2, x, 2, 28, 28, f2, ws));
        CHECK(!memcmp(f1, f2, sizeof f1));
        /* a workspace of another shape or mode is refused */
        CHECK_ERR(dinoc_resnet_forward(m2, x, 1, 28, 28, f2, ws), DINOC_ERR_ARG, "workspace");
        CHECK_ERR(dinoc_resnet_forward_train(m2, x, 2, 28, 28, f2, ws), DINOC_ERR_ARG, "workspace");
        CHECK_ERR(dinoc_resnet_backward(m2, f2, m2->params, ws), DINOC_ERR_ARG, "training");
        dinoc_resnet_ws_free(ws);
        /* too small for the 3 stages / one value per channel in training */
        CHECK_ERR(dinoc_resnet_ws_init(&ws, m2, 1, 1, 1, 1), DINOC_ERR_ARG, "1 value per channel");
        /* a workspace beyond any memory fails cleanly (no size_t wrap) */
        CHECK_ERR(dinoc_resnet_ws_init(&ws, m2, 1 << 20, 1 << 15, 1 << 15, 1), DINOC_ERR_NOMEM, "workspace");
        dinoc_resnet_free(m2);
    }
    dinoc_resnet_free(m);
    free(dir);
}

/* Writes dir/config.json with the given text next to a saved resnet_small model. */
static void write_config(const char *dir, const char *json) {
    char *p = dinoc_path_join(dir, "config.json");
    CHECK_OK(dinoc_write_file_atomic(p, json, strlen(json)));
    free(p);
}

DINOC_TEST(resnet_load_errors) {
    dinoc_resnet_config cfg;
    dinoc_resnet       *m = NULL, *m2 = NULL;
    CHECK_OK(dinoc_resnet_preset(&cfg, "resnet_small"));
    CHECK_OK(dinoc_resnet_init_random(&m, &cfg, 1));
    if (!m) return;
    char *dir = dinoc_path_join(dinoc_test_tmpdir(), "resnet_small_bad");
    CHECK_OK(dinoc_resnet_save(m, dir));
    write_config(dir, "{\"arch\": \"resnet_small\", \"width\": [8]}");
    CHECK_ERR(dinoc_resnet_load(&m2, dir), DINOC_ERR_CONFIG, "unknown field 'width'");
    write_config(dir, "{\"arch\": \"custom\", \"layers\": [2]}");
    CHECK_ERR(dinoc_resnet_load(&m2, dir), DINOC_ERR_CONFIG, "needs 'block'");
    write_config(dir, "{\"arch\": \"resnet_small\", \"layers\": [2, 2], \"widths\": [16, 32, 64]}");
    CHECK_ERR(dinoc_resnet_load(&m2, dir), DINOC_ERR_CONFIG, "'layers' has 2 stages");
    /* the file has no fc: a config asking for one names the missing tensor */
    write_config(dir, "{\"arch\": \"resnet_small\", \"num_classes\": 10}");
    CHECK_ERR(dinoc_resnet_load(&m2, dir), DINOC_ERR_SHAPE, "missing tensor 'fc.weight'");
    /* wider stage 3 than the file: shape error naming the tensor and both shapes */
    write_config(dir, "{\"arch\": \"resnet_small\", \"widths\": [16, 32, 128]}");
    CHECK_ERR(dinoc_resnet_load(&m2, dir), DINOC_ERR_SHAPE, "layer3.0.conv1.weight' has shape [64,32,3,3], expected [128,32,3,3]");
    /* fewer blocks than the file: its extra tensors are reported */
    write_config(dir, "{\"arch\": \"resnet_small\", \"layers\": [2, 2, 1]}");
    CHECK_ERR(dinoc_resnet_load(&m2, dir), DINOC_ERR_SHAPE, "unexpected tensor 'layer3.1.conv1.weight'");
    write_config(dir, "{\"model_type\": \"resnet\", \"arch\": \"resnet_small\"}");
    CHECK_OK(dinoc_resnet_load(&m2, dir));
    dinoc_resnet_free(m2);
    dinoc_resnet_free(m);
    free(dir);
}

/* Training forward + backward: bit-identical when repeated (a reused workspace carries nothing
 * over), and within float rounding between 1 and 3 threads. Not bit-identical across thread
 * counts: dinoc_gemm (src/ops/linear.c) splits rows across OpenMP threads and OpenBLAS rounds a
 * block of rows differently from the whole (measured; see docs/resnet.md). The CNN ops themselves
 * split work by channel or plane and add no thread-dependent sum. */
DINOC_TEST(resnet_repeatable) {
    dinoc_resnet_config cfg;
    CHECK_OK(dinoc_resnet_preset(&cfg, "resnet_small"));
    const int B = 3, F = 64, old = dinoc_get_threads();
    float     x[3 * 28 * 28], dfeats[3 * 64], *feats[3], *grads[3];
    for (int i = 0; i < B * 28 * 28; i++) x[i] = (float)((i * 53) % 17) / 17.0f - 0.4f;
    for (int i = 0; i < B * F; i++) dfeats[i] = (float)((i * 29) % 13) / 13.0f - 0.5f;
    dinoc_resnet    *m  = NULL;
    dinoc_resnet_ws *ws = NULL;
    CHECK_OK(dinoc_resnet_init_random(&m, &cfg, 3));
    if (!m) return;
    CHECK_OK(dinoc_resnet_ws_init(&ws, m, B, 28, 28, 1));
    for (int t = 0; t < 3; t++) {
        dinoc_set_threads(t == 2 ? 3 : 1);
        feats[t] = calloc((size_t)B * F, 4), grads[t] = calloc(m->n_params, 4);
        CHECK_OK(dinoc_resnet_forward_train(m, x, B, 28, 28, feats[t], ws));
        CHECK_OK(dinoc_resnet_backward(m, dfeats, grads[t], ws));
    }
    dinoc_set_threads(old);
    CHECK(!memcmp(feats[0], feats[1], 4 * (size_t)B * F));
    CHECK(!memcmp(grads[0], grads[1], 4 * m->n_params));
    /* 1 vs 3 threads: a few ulps per GEMM, as in the parity tests */
    CHECK_CLOSE(feats[2], feats[0], (size_t)B * F, 1e-5, 1e-4, "feats 3 vs 1 threads");
    double gmax = 0;
    for (size_t i = 0; i < m->n_params; i++) gmax = fmax(gmax, fabs(grads[0][i]));
    CHECK_CLOSE(grads[2], grads[0], m->n_params, 1e-4 * gmax, 1e-3, "grads 3 vs 1 threads");
    for (int t = 0; t < 3; t++) free(feats[t]), free(grads[t]);
    dinoc_resnet_ws_free(ws);
    dinoc_resnet_free(m);
}
