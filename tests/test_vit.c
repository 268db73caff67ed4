/* test_vit.c: the ViT forward pass against PyTorch, and model loading.
 *
 * Parity: tests/py/gen_vit.py writes Hugging Face folders with random weights under the published
 * tensor names (DINOv2-S, DINOv2-S with registers, a 2-block SwiGLU ViT-g-width model, DINO ViT-S/16
 * as HF ViTModel) and, per input size and position-interpolation mode, the reference outputs:
 * every block's output, the final normed tokens and the last block's attention.
 * Tolerances: final tokens max abs <= 1e-4 (the bound; LayerNorm output is O(1) so this is
 * ~1e-4 relative); block outputs (the residual stream, values up to ~10-100) abs 1e-4 + rel 1e-4;
 * attention probabilities abs 1e-5. The float32 differences come from summation order in the
 * products (OpenBLAS vs PyTorch's kernels) and grow with depth; measured values are printed.
 *
 * Loading: round trip through dinoc_model_save_hf, and folders with a missing, unexpected or
 * mis-shaped tensor or an unknown config key must fail with a message that names it. */
#include "check.h"
#include "../src/nn/vit.h"

#include <dirent.h>

static int endswith(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Reads a float tensor of a fixture file into a new buffer. */
static float *read_f32(const dinoc_safetensors *st, const char *name, const dinoc_tensor **tout) {
    const dinoc_tensor *t = dinoc_safetensors_find(st, name);
    if (tout) *tout = t;
    if (!t) return NULL;
    int64_t n = dinoc_tensor_numel(t);
    float  *x = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (x && dinoc_tensor_to_f32(t, x, n) != DINOC_OK) {
        free(x);
        return NULL;
    }
    return x;
}

static int parse_interp(const char *s, dinoc_pos_interp *p) {
    if (!s) return -1;
    if (strcmp(s, "size") == 0) *p = DINOC_POS_INTERP_SIZE;
    else if (strcmp(s, "offset") == 0) *p = DINOC_POS_INTERP_OFFSET;
    else if (strcmp(s, "antialias") == 0) *p = DINOC_POS_INTERP_ANTIALIAS;
    else return -1;
    return 0;
}

/* One reference file: returns the number of comparisons made. */
static int check_case(const char *model_dir, const char *case_path, double *worst) {
    dinoc_safetensors *st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, case_path));
    if (!st) return 0;
    dinoc_pos_interp  interp;
    dinoc_load_params lp = dinoc_load_default_params();
    if (parse_interp(dinoc_safetensors_metadata(st, "pos_interp"), &interp) == 0)
        lp.set_pos_interp = 1, lp.pos_interp = interp;
    else
        CHECK_MSG(0, "%s: metadata pos_interp missing", case_path);
    dinoc_model *m = NULL;
    CHECK_OK(dinoc_model_load(&m, model_dir, &lp));
    const dinoc_tensor *px = NULL, *mk = NULL;
    float              *x  = read_f32(st, "pixel_values", &px);
    int                 ncmp = 0;
    if (!m || !x || px->ndim != 4) {
        CHECK_MSG(0, "%s: cannot set up the case", case_path);
        goto done;
    }
    const dinoc_vit_config *c = dinoc_model_config(m);
    int B = (int)px->shape[0], H = (int)px->shape[2], W = (int)px->shape[3];
    uint8_t *mask = NULL;
    if ((mk = dinoc_safetensors_find(st, "bool_masked_pos"))) {
        mask = malloc((size_t)dinoc_tensor_numel(mk));
        memcpy(mask, mk->data, (size_t)dinoc_tensor_numel(mk));
    }
    dinoc_state *s = NULL;
    CHECK_OK(dinoc_state_init(&s, m, B, H, W, DINOC_STATE_HIDDEN | DINOC_STATE_ATTN));
    if (!s) {
        free(mask);
        goto done;
    }
    CHECK_OK(dinoc_forward(m, s, x, mask));
    int T, D;
    dinoc_state_dims(s, NULL, &T, &D, NULL, NULL);
    size_t n = (size_t)B * T * D;
    char   label[4096];
    const char *base = strrchr(case_path, '/');
    base             = base ? base + 1 : case_path;
    const char *mdl  = strrchr(model_dir, '/');
    mdl              = mdl ? mdl + 1 : model_dir;

    const dinoc_tensor *t;
    float *want = read_f32(st, "last_hidden_state", &t);
    CHECK_MSG(want && (size_t)dinoc_tensor_numel(t) == n, "%s: last_hidden_state missing or wrong size", case_path);
    if (want && (size_t)dinoc_tensor_numel(t) == n) {
        double ma;
        snprintf(label, sizeof label, "%s/%s last_hidden_state", mdl, base);
        if (!dinoc_check_close(dinoc_state_output(s), want, n, 1e-4, 0, label, &ma))
            CHECK_MSG(0, "%s exceeds 1e-4", label);
        if (ma > *worst) *worst = ma;
        ncmp++;
    }
    free(want);
    float *buf = malloc(sizeof(float) * n);
    for (int k = 1; k <= c->depth; k++) {
        char name[64];
        snprintf(name, sizeof name, "hidden_states.%d", k);
        want = read_f32(st, name, &t);
        if (!want) continue;
        CHECK_OK(dinoc_state_hidden(m, s, k - 1, 0, buf));
        snprintf(label, sizeof label, "%s/%s %s", mdl, base, name);
        if (!dinoc_check_close(buf, want, n, 1e-4, 1e-4, label, NULL)) CHECK_MSG(0, "%s not close", label);
        free(want);
        ncmp++;
    }
    free(buf);
    want = read_f32(st, "attentions.last", &t);
    if (want) {
        size_t na = (size_t)B * c->heads * T * T;
        CHECK(dinoc_state_attn(s) && (size_t)dinoc_tensor_numel(t) == na);
        snprintf(label, sizeof label, "%s/%s attentions.last", mdl, base);
        if ((size_t)dinoc_tensor_numel(t) == na && !dinoc_check_close(dinoc_state_attn(s), want, na, 1e-5, 0, label, NULL))
            CHECK_MSG(0, "%s not close", label);
        free(want);
        ncmp++;
    }
    free(mask);
    dinoc_state_free(s);
done:
    free(x);
    dinoc_model_free(m);
    dinoc_safetensors_close(st);
    return ncmp;
}

DINOC_TEST(vit_parity_pytorch) {
    char root[1024];
    snprintf(root, sizeof root, "%s/vit", dinoc_test_fixtures());
    DIR *d = opendir(root);
    CHECK_MSG(d, "no fixtures at %s: run /usr/bin/python3 tests/py/gen_vit.py %s (scripts/test.sh does)",
              root, dinoc_test_fixtures());
    if (!d) return;
    int            models = 0, cases = 0, cmps = 0;
    double         worst  = 0;
    struct dirent *de;
    char          *names[64];
    int            nn = 0;
    /* DINOC_VIT_CASES=N limits the run to N cases per model (the sanitizer pass uses it: full-depth
     * models under ASan are slow); the default runs all of them */
    const char *lim = getenv("DINOC_VIT_CASES");
    int         max_cases = lim && atoi(lim) > 0 ? atoi(lim) : 1 << 30;
    while ((de = readdir(d)) && nn < 64)
        if (de->d_name[0] != '.' && !endswith(de->d_name, ".safetensors")) names[nn++] = strdup(de->d_name);
    closedir(d);
    for (int i = 0; i < nn; i++) {
        char mdir[1100];
        snprintf(mdir, sizeof mdir, "%s/%s", root, names[i]);
        DIR *md = opendir(mdir);
        free(names[i]);
        if (!md) continue;
        models++;
        int model_cases = 0;
        while ((de = readdir(md))) {
            if (strncmp(de->d_name, "ref_", 4) != 0 || !endswith(de->d_name, ".safetensors")) continue;
            if (model_cases++ >= max_cases) break;
            char cpath[1400];
            snprintf(cpath, sizeof cpath, "%s/%s", mdir, de->d_name);
            cmps += check_case(mdir, cpath, &worst);
            cases++;
        }
        closedir(md);
    }
    fprintf(stderr, "    %d models, %d cases, %d tensors compared; worst final-token max abs error %.3g\n",
            models, cases, cmps, worst);
    /* the generator writes 4 models; a silently empty fixture set must not pass */
    CHECK_MSG(models >= 4 && cases >= (max_cases < 3 ? 4 * max_cases : 10),
              "expected >= 4 models and >= 10 cases, found %d and %d", models, cases);
}

/* ---- loading ------------------------------------------------------------------------------------- */

static dinoc_vit_config tiny_config(dinoc_arch arch) {
    dinoc_vit_config c;
    dinoc_vit_preset(&c, arch == DINOC_ARCH_VIT ? "dino-vits16" : arch == DINOC_ARCH_DINOV2_REG ? "vits14-reg" : "vits14");
    c.dim = 32, c.heads = 2, c.depth = 2, c.ffn_hidden = 64, c.image_size = c.patch * 4;
    return c;
}

DINOC_TEST(vit_save_load_round_trip) {
    dinoc_arch archs[3] = {DINOC_ARCH_DINOV2, DINOC_ARCH_DINOV2_REG, DINOC_ARCH_VIT};
    for (int a = 0; a < 3; a++) {
        dinoc_vit_config c = tiny_config(archs[a]);
        dinoc_model     *m = NULL, *m2 = NULL;
        CHECK_OK(dinoc_model_init_random(&m, &c, 7 + a));
        char dir[512];
        snprintf(dir, sizeof dir, "%s/rt_%d", dinoc_test_tmpdir(), a);
        CHECK_OK(dinoc_model_save_hf(m, dir));
        CHECK_OK(dinoc_model_load(&m2, dir, NULL));
        if (!m || !m2) continue;
        CHECK(dinoc_model_num_params(m) == dinoc_model_num_params(m2));
        CHECK(dinoc_model_config(m2)->arch == archs[a]);
        CHECK(dinoc_model_config(m2)->n_registers == c.n_registers);
        CHECK(memcmp(m->params, m2->params, sizeof(float) * m->n_params) == 0);
        /* same forward, non-square input so the position embeddings are resized */
        dinoc_state *s1 = NULL, *s2 = NULL;
        int          H = c.patch * 3, W = c.patch * 5;
        float       *x = malloc(sizeof(float) * 2 * 3 * H * W);
        dinoc_rng    r;
        dinoc_rng_seed(&r, 1);
        for (int i = 0; i < 2 * 3 * H * W; i++) x[i] = dinoc_rng_normal(&r);
        CHECK_OK(dinoc_state_init(&s1, m, 2, H, W, 0));
        CHECK_OK(dinoc_state_init(&s2, m2, 2, H, W, 0));
        CHECK_OK(dinoc_forward(m, s1, x, NULL));
        CHECK_OK(dinoc_forward(m2, s2, x, NULL));
        int T, D;
        dinoc_state_dims(s1, NULL, &T, &D, NULL, NULL);
        CHECK(T == 1 + c.n_registers + 15);
        CHECK(memcmp(dinoc_state_output(s1), dinoc_state_output(s2), sizeof(float) * 2 * T * D) == 0);
        dinoc_state_free(s1), dinoc_state_free(s2), free(x);
        dinoc_model_free(m), dinoc_model_free(m2);
    }
}

/* The fused schedule of the blocks (one parallel region, row blocks kept from one attention to the
 * next: vit.c) must give the op-by-op schedule's bits: same kernels on the same row blocks. Cases:
 * DINOv2 (LayerScale, GELU) with the last attention and every block's output kept (direct
 * attention kernels, T = 37); registers with QuickGELU; DINO ViT at T = 145 (the query-tile
 * attention path); at 2 and 3 threads. Exact comparison: any difference is a schedule bug. */
DINOC_TEST(vit_fused_schedule_same_bits) {
    struct {
        dinoc_arch arch;
        int        quick, side, B;
        unsigned   flags;
    } cases[3] = {{DINOC_ARCH_DINOV2, 0, 6, 3, DINOC_STATE_ATTN | DINOC_STATE_HIDDEN},
                  {DINOC_ARCH_DINOV2_REG, 1, 5, 2, DINOC_STATE_HIDDEN},
                  {DINOC_ARCH_VIT, 0, 12, 1, 0}};
    const int was = dinoc_get_threads();
    for (int k = 0; k < 3; k++)
        for (int nt = 2; nt <= 3; nt++) {
            dinoc_vit_config c = tiny_config(cases[k].arch);
            c.dim = 64, c.heads = 4, c.depth = 3, c.ffn_hidden = 128;
            if (cases[k].quick) c.ffn = DINOC_FFN_MLP_QUICK_GELU;
            dinoc_set_threads(nt);
            dinoc_model *m = NULL;
            dinoc_state *s1 = NULL, *s2 = NULL;
            const int    B = cases[k].B, H = c.patch * cases[k].side, W = H;
            float       *x = malloc(sizeof(float) * B * 3 * H * W);
            dinoc_rng    r;
            dinoc_rng_seed(&r, 3 + k);
            for (int i = 0; i < B * 3 * H * W; i++) x[i] = dinoc_rng_normal(&r);
            CHECK_OK(dinoc_model_init_random(&m, &c, 11 + k));
            CHECK_OK(dinoc_state_init(&s1, m, B, H, W, cases[k].flags));
            CHECK_OK(dinoc_state_init(&s2, m, B, H, W, cases[k].flags));
            if (!m || !s1 || !s2) break;
            /* BLAS=none builds (reference loops) have no row-block products, so no fused schedule */
            if (strcmp(dinoc_fp32_backend(), "reference C loops") != 0)
                CHECK_MSG(dinoc_vit_fused_applies(m, s1), "case %d, %d threads: the fused schedule was not taken", k,
                          nt);
            dinoc_vit_set_fused(1);
            CHECK_OK(dinoc_forward(m, s1, x, NULL));
            dinoc_vit_set_fused(0);
            CHECK_OK(dinoc_forward(m, s2, x, NULL));
            dinoc_vit_set_fused(1);
            int T, D;
            dinoc_state_dims(s1, NULL, &T, &D, NULL, NULL);
            size_t n = (size_t)B * T * D;
            CHECK_MSG(memcmp(dinoc_state_output(s1), dinoc_state_output(s2), sizeof(float) * n) == 0,
                      "case %d, %d threads: final tokens differ", k, nt);
            for (int l = 0; l < c.depth && (cases[k].flags & DINOC_STATE_HIDDEN); l++) {
                float *h1 = malloc(sizeof(float) * n), *h2 = malloc(sizeof(float) * n);
                CHECK_OK(dinoc_state_hidden(m, s1, l, 0, h1));
                CHECK_OK(dinoc_state_hidden(m, s2, l, 0, h2));
                CHECK_MSG(memcmp(h1, h2, sizeof(float) * n) == 0, "case %d, %d threads: block %d differs", k, nt, l);
                free(h1), free(h2);
            }
            if (cases[k].flags & DINOC_STATE_ATTN)
                CHECK(memcmp(dinoc_state_attn(s1), dinoc_state_attn(s2), sizeof(float) * B * c.heads * T * T) == 0);
            dinoc_state_free(s1), dinoc_state_free(s2), dinoc_model_free(m), free(x);
        }
    dinoc_set_threads(was);
}

/* Writes a copy of model.safetensors with tensor `drop` removed, `rename` renamed to `to` (or, with
 * rename NULL, an extra copy of the first tensor named `to`), or the tensor `reshape` given a wrong
 * shape. */
static void tamper(const char *src_dir, const char *dst_dir, const char *drop, const char *rename,
                   const char *to, const char *reshape) {
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", src_dir);
    dinoc_safetensors *st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, p));
    if (!st) return;
    int           n  = dinoc_safetensors_count(st), k = 0;
    dinoc_tensor *ts = calloc((size_t)n + 1, sizeof *ts);
    for (int i = 0; i < n; i++) {
        const dinoc_tensor *t = dinoc_safetensors_get(st, i);
        if (drop && strcmp(t->name, drop) == 0) continue;
        ts[k] = *t;
        if (rename && strcmp(t->name, rename) == 0) ts[k].name = to;
        if (reshape && strcmp(t->name, reshape) == 0 && t->ndim == 2) {
            /* same bytes, transposed-looking shape */
            int64_t a = ts[k].shape[0];
            ts[k].shape[0] = ts[k].shape[1], ts[k].shape[1] = a;
            if (ts[k].shape[0] == ts[k].shape[1]) ts[k].ndim = 1, ts[k].shape[0] = a * a;
        }
        k++;
    }
    if (to && !rename) {
        ts[k]      = *dinoc_safetensors_get(st, 0);
        ts[k].name = to;
        k++;
    }
    CHECK_OK(dinoc_mkdir(dst_dir));
    snprintf(p, sizeof p, "%s/model.safetensors", dst_dir);
    CHECK_OK(dinoc_safetensors_write(p, ts, k, NULL));
    free(ts);
    dinoc_safetensors_close(st);
    char src[600], dst[600], *buf = NULL;
    size_t len = 0;
    snprintf(src, sizeof src, "%s/config.json", src_dir);
    snprintf(dst, sizeof dst, "%s/config.json", dst_dir);
    CHECK_OK(dinoc_read_file(src, 1 << 20, &buf, &len));
    if (buf) CHECK_OK(dinoc_write_file_atomic(dst, buf, len));
    free(buf);
}

DINOC_TEST(vit_load_errors_name_the_tensor) {
    dinoc_vit_config c = tiny_config(DINOC_ARCH_DINOV2);
    dinoc_model     *m = NULL, *m2 = NULL;
    CHECK_OK(dinoc_model_init_random(&m, &c, 3));
    char good[512], bad[512];
    snprintf(good, sizeof good, "%s/err_good", dinoc_test_tmpdir());
    CHECK_OK(dinoc_model_save_hf(m, good));
    dinoc_model_free(m);

    snprintf(bad, sizeof bad, "%s/err_missing", dinoc_test_tmpdir());
    tamper(good, bad, "encoder.layer.1.mlp.fc2.bias", NULL, NULL, NULL);
    CHECK_ERR(dinoc_model_load(&m2, bad, NULL), DINOC_ERR_SHAPE, "missing tensor 'encoder.layer.1.mlp.fc2.bias'");

    snprintf(bad, sizeof bad, "%s/err_unexpected", dinoc_test_tmpdir());
    tamper(good, bad, NULL, NULL, "encoder.layer.0.norm9.bias", NULL);
    CHECK_ERR(dinoc_model_load(&m2, bad, NULL), DINOC_ERR_SHAPE, "unexpected tensor 'encoder.layer.0.norm9.bias'");
    snprintf(bad, sizeof bad, "%s/err_renamed", dinoc_test_tmpdir());
    tamper(good, bad, NULL, "encoder.layer.0.norm1.bias", "encoder.layer.0.norm9.bias", NULL);
    CHECK_ERR(dinoc_model_load(&m2, bad, NULL), DINOC_ERR_SHAPE, "missing tensor 'encoder.layer.0.norm1.bias'");

    snprintf(bad, sizeof bad, "%s/err_shape", dinoc_test_tmpdir());
    tamper(good, bad, NULL, NULL, NULL, "encoder.layer.0.mlp.fc1.weight");
    CHECK_ERR(dinoc_model_load(&m2, bad, NULL), DINOC_ERR_SHAPE, "'encoder.layer.0.mlp.fc1.weight' has shape [32,64], expected [64,32]");

    /* unknown config key: strict by default, accepted when lenient */
    char cfg[600];
    snprintf(bad, sizeof bad, "%s/err_key", dinoc_test_tmpdir());
    tamper(good, bad, NULL, NULL, NULL, NULL);
    snprintf(cfg, sizeof cfg, "%s/config.json", bad);
    const char *json = "{\"model_type\":\"dinov2\",\"hidden_size\":32,\"num_hidden_layers\":2,"
                       "\"num_attention_heads\":2,\"mlp_ratio\":2,\"image_size\":56,\"patch_size\":14,"
                       "\"hidden_act\":\"gelu\",\"layer_norm_eps\":1e-6,\"frobnicate\":3}";
    CHECK_OK(dinoc_write_file_atomic(cfg, json, strlen(json)));
    CHECK_ERR(dinoc_model_load(&m2, bad, NULL), DINOC_ERR_CONFIG, "unknown field 'frobnicate'");
    dinoc_load_params lp = dinoc_load_default_params();
    lp.strict_config     = 0;
    CHECK_OK(dinoc_model_load(&m2, bad, &lp));
    dinoc_model_free(m2);
    m2 = NULL;

    json = "{\"model_type\":\"dinov2\",\"hidden_size\":32,\"num_attention_heads\":2}";
    CHECK_OK(dinoc_write_file_atomic(cfg, json, strlen(json)));
    CHECK_ERR(dinoc_model_load(&m2, bad, NULL), DINOC_ERR_CONFIG, "missing field 'num_hidden_layers'");
    json = "{\"model_type\":\"clip_vision_model\"}";
    CHECK_OK(dinoc_write_file_atomic(cfg, json, strlen(json)));
    CHECK_ERR(dinoc_model_load(&m2, bad, NULL), DINOC_ERR_UNSUPPORTED, "clip_vision_model");
    json = "{\"model_type\":\"dinov2\",\"hidden_size\":30,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
           "\"image_size\":56,\"patch_size\":14}";
    CHECK_OK(dinoc_write_file_atomic(cfg, json, strlen(json)));
    CHECK_ERR(dinoc_model_load(&m2, bad, NULL), DINOC_ERR_CONFIG, "4 heads do not divide hidden size 30");
    CHECK_ERR(dinoc_model_load(&m2, "/nonexistent/model", NULL), DINOC_ERR_IO, "/nonexistent/model");
    CHECK(m2 == NULL);
}

DINOC_TEST(vit_state_rejects_bad_sizes) {
    dinoc_vit_config c = tiny_config(DINOC_ARCH_DINOV2);
    dinoc_model     *m = NULL;
    dinoc_state     *s = NULL;
    CHECK_OK(dinoc_model_init_random(&m, &c, 3));
    CHECK_ERR(dinoc_state_init(&s, m, 1, 30, 28, 0), DINOC_ERR_SHAPE, "not a multiple of the patch 14");
    CHECK_ERR(dinoc_state_init(&s, m, 0, 28, 28, 0), DINOC_ERR_ARG, NULL);
    CHECK_OK(dinoc_state_init(&s, m, 1, 28, 28, 0));
    float out[2 * 32];
    CHECK_ERR(dinoc_state_hidden(m, s, 0, 1, out), DINOC_ERR_ARG, "DINOC_STATE_HIDDEN");
    CHECK_ERR(dinoc_state_hidden(m, s, 5, 1, out), DINOC_ERR_ARG, "out of range");
    dinoc_state_free(s);
    dinoc_model_free(m);
}
