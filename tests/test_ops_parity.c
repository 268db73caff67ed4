/* test_ops_parity.c: every op's forward and backward against PyTorch 1.13 autograd.
 *
 * Fixtures: $DINOC_FIXTURES/ops/<case>.safetensors, written by
 * `/usr/bin/python3 tests/py/gen_ops.py <fixtures dir>` (see that file for the cases, sizes and
 * tensor names). Each holds the inputs, a random dout, torch's output and the gradients of
 * L = (out * dout).sum(); we run our forward and backward on the same inputs and compare.
 *
 * Tolerance everywhere: atol 1e-5, rtol 1e-4 (STYLE.md 3.5's fp32 op default). Values are O(1)
 * and every output or gradient element is a float sum of at most ~100 products, so float rounding
 * differences between our summation order and torch's (MKL/OpenBLAS, different blocking) are a few
 * ulps, ~1e-6 absolute; 1e-5 / 1e-4 leaves margin without hiding a wrong term (which shows up at
 * O(1e-2) or more). Missing fixtures fail the test with the command that makes them. */
#include "check.h"
#include "../src/internal.h"

#include <string.h>

#define ATOL 1e-5
#define RTOL 1e-4

typedef struct {
    dinoc_safetensors *st;
    const char        *name;
} fixture;

/* Opens ops/<name>.safetensors; fails the test (with the generator command) if absent. */
static int fixture_open(fixture *f, const char *name) {
    char fname[128];
    snprintf(fname, sizeof fname, "%s.safetensors", name);
    char *dir  = dinoc_path_join(dinoc_test_fixtures(), "ops");
    char *path = dinoc_path_join(dir, fname);
    f->st      = NULL;
    f->name    = name;
    if (!dinoc_file_exists(path)) {
        CHECK_MSG(0, "%s missing: run `/usr/bin/python3 tests/py/gen_ops.py %s` first", path,
                  dinoc_test_fixtures());
    } else {
        CHECK_OK(dinoc_safetensors_open(&f->st, path));
    }
    free(dir);
    free(path);
    return f->st != NULL;
}

/* A float tensor as a new float32 buffer; its element count into *n and shape into shape (if not
 * NULL). NULL (and a failed CHECK) if absent. */
static float *get(fixture *f, const char *tname, size_t *n, int64_t *shape) {
    const dinoc_tensor *t = dinoc_safetensors_find(f->st, tname);
    CHECK_MSG(t != NULL, "%s: tensor '%s' missing", f->name, tname);
    if (!t) return NULL;
    int64_t cnt = dinoc_tensor_numel(t);
    float  *buf = malloc(sizeof(float) * (size_t)(cnt > 0 ? cnt : 1));
    CHECK(buf != NULL);
    if (!buf) return NULL;
    CHECK_OK(dinoc_tensor_to_f32(t, buf, cnt));
    if (n) *n = (size_t)cnt;
    if (shape)
        for (int i = 0; i < t->ndim; i++) shape[i] = t->shape[i];
    return buf;
}

static const char *meta(fixture *f, const char *key) {
    const char *v = dinoc_safetensors_metadata(f->st, key);
    CHECK_MSG(v != NULL, "%s: metadata '%s' missing", f->name, key);
    return v ? v : "0";
}

static float *zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static void check(fixture *f, const float *got, const float *want, size_t n, const char *what) {
    char label[96];
    snprintf(label, sizeof label, "%s.%s", f->name, what);
    if (got && want) CHECK_CLOSE(got, want, n, ATOL, RTOL, label);
}

DINOC_TEST(parity_linear) {
    fixture f;
    if (!fixture_open(&f, "linear")) return;
    size_t  nx, nw, nb, ny;
    int64_t sx[2], sw[2];
    float  *inp = get(&f, "inp", &nx, sx), *w = get(&f, "w", &nw, sw), *b = get(&f, "b", &nb, NULL);
    float  *dout = get(&f, "dout", &ny, NULL), *out = get(&f, "out", NULL, NULL);
    float  *dinp = get(&f, "dinp", NULL, NULL), *dw = get(&f, "dw", NULL, NULL);
    float  *db = get(&f, "db", NULL, NULL);
    if (inp && w && b && dout && out && dinp && dw && db) {
        int    M = (int)sx[0], K = (int)sx[1], N = (int)sw[0];
        float *y = zeros(ny), *gx = zeros(nx), *gw = zeros(nw), *gb = zeros(nb);
        dinoc_linear_forward(y, inp, w, b, M, K, N);
        dinoc_linear_backward(gx, gw, gb, dout, inp, w, M, K, N);
        check(&f, y, out, ny, "out");
        check(&f, gx, dinp, nx, "dinp");
        check(&f, gw, dw, nw, "dw");
        check(&f, gb, db, nb, "db");
        free(y), free(gx), free(gw), free(gb);
    }
    free(inp), free(w), free(b), free(dout), free(out), free(dinp), free(dw), free(db);
    dinoc_safetensors_close(f.st);
}

DINOC_TEST(parity_layernorm) {
    fixture f;
    if (!fixture_open(&f, "layernorm")) return;
    size_t  nx, nc;
    int64_t sx[2];
    float  *inp = get(&f, "inp", &nx, sx), *w = get(&f, "w", &nc, NULL), *b = get(&f, "b", NULL, NULL);
    float  *dout = get(&f, "dout", NULL, NULL), *out = get(&f, "out", NULL, NULL);
    float  *dinp = get(&f, "dinp", NULL, NULL), *dw = get(&f, "dw", NULL, NULL);
    float  *db = get(&f, "db", NULL, NULL);
    float   eps = strtof(meta(&f, "eps"), NULL);
    if (inp && w && b && dout && out && dinp && dw && db) {
        int    N = (int)sx[0], C = (int)sx[1];
        float *y = zeros(nx), *gx = zeros(nx), *gw = zeros(nc), *gb = zeros(nc);
        float *mean = zeros((size_t)N), *rstd = zeros((size_t)N);
        dinoc_layernorm_forward(y, mean, rstd, inp, w, b, N, C, eps);
        dinoc_layernorm_backward(gx, gw, gb, dout, inp, w, mean, rstd, N, C);
        check(&f, y, out, nx, "out");
        check(&f, gx, dinp, nx, "dinp");
        check(&f, gw, dw, nc, "dw");
        check(&f, gb, db, nc, "db");
        free(y), free(gx), free(gw), free(gb), free(mean), free(rstd);
    }
    free(inp), free(w), free(b), free(dout), free(out), free(dinp), free(dw), free(db);
    dinoc_safetensors_close(f.st);
}

DINOC_TEST(parity_gelu_swiglu) {
    fixture f;
    if (fixture_open(&f, "gelu")) {
        size_t n;
        float *inp = get(&f, "inp", &n, NULL), *dout = get(&f, "dout", NULL, NULL);
        float *out = get(&f, "out", NULL, NULL), *dinp = get(&f, "dinp", NULL, NULL);
        if (inp && dout && out && dinp) {
            float *y = zeros(n), *gx = zeros(n);
            dinoc_gelu_forward(y, inp, n);
            dinoc_gelu_backward(gx, dout, inp, n);
            check(&f, y, out, n, "out");
            check(&f, gx, dinp, n, "dinp");
            free(y), free(gx);
        }
        free(inp), free(dout), free(out), free(dinp);
        dinoc_safetensors_close(f.st);
    }
    if (fixture_open(&f, "swiglu")) {
        size_t  nx, ny;
        int64_t sx[2];
        float  *inp = get(&f, "inp", &nx, sx), *dout = get(&f, "dout", &ny, NULL);
        float  *out = get(&f, "out", NULL, NULL), *dinp = get(&f, "dinp", NULL, NULL);
        if (inp && dout && out && dinp) {
            int    N = (int)sx[0], F = (int)sx[1] / 2;
            float *y = zeros(ny), *gx = zeros(nx);
            dinoc_swiglu_forward(y, inp, N, F);
            dinoc_swiglu_backward(gx, dout, inp, N, F);
            check(&f, y, out, ny, "out");
            check(&f, gx, dinp, nx, "dinp");
            free(y), free(gx);
        }
        free(inp), free(dout), free(out), free(dinp);
        dinoc_safetensors_close(f.st);
    }
}

static void attention_case(const char *name) {
    fixture f;
    if (!fixture_open(&f, name)) return;
    size_t  nq, ny;
    int64_t sq[3];
    float  *qkv = get(&f, "qkv", &nq, sq), *dout = get(&f, "dout", &ny, NULL);
    float  *out = get(&f, "out", NULL, NULL), *dqkv = get(&f, "dqkv", NULL, NULL);
    int     NH  = atoi(meta(&f, "NH"));
    if (qkv && dout && out && dqkv && NH > 0) {
        int    B = (int)sq[0], T = (int)sq[1], D = (int)sq[2] / 3, HS = D / NH;
        int    nt = dinoc_omp_max_threads();
        size_t sf = dinoc_attention_scratch_floats(T, HS);
        size_t sb = dinoc_attention_backward_scratch_floats(T, HS);
        float *scratch = zeros((size_t)nt * (sf > sb ? sf : sb));
        float *y = zeros(ny), *att = zeros((size_t)B * NH * T * T), *g = zeros(nq);
        /* the backward uses the probabilities the forward saved, as training does */
        dinoc_attention_forward(y, att, qkv, B, T, D, NH, scratch, nt);
        dinoc_attention_backward(g, dout, qkv, att, B, T, D, NH, scratch, nt);
        check(&f, y, out, ny, "out");
        check(&f, g, dqkv, nq, "dqkv");
        free(scratch), free(y), free(att), free(g);
    }
    free(qkv), free(dout), free(out), free(dqkv);
    dinoc_safetensors_close(f.st);
}

DINOC_TEST(parity_attention) {
    attention_case("attention_t17");
    attention_case("attention_t65");
}

DINOC_TEST(parity_bicubic_resize) {
    static const char *cases[] = {"resize_size_down",  "resize_size_up", "resize_scale_down",
                                  "resize_scale_up",   "resize_aa_down", "resize_aa_up",
                                  "resize_aa_scale_down", "resize_aa_scale_up"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fixture f;
        if (!fixture_open(&f, cases[c])) continue;
        size_t  nx, ny;
        int64_t sx[3], sy[3];
        float  *inp = get(&f, "inp", &nx, sx), *dout = get(&f, "dout", &ny, sy);
        float  *out = get(&f, "out", NULL, NULL), *dinp = get(&f, "dinp", NULL, NULL);
        int     aa   = atoi(meta(&f, "antialias"));
        double  sf_h = strtod(meta(&f, "sf_h"), NULL), sf_w = strtod(meta(&f, "sf_w"), NULL);
        if (inp && dout && out && dinp) {
            int    C = (int)sx[0];
            float *y = zeros(ny), *gx = zeros(nx);
            dinoc_bicubic_resize(y, inp, C, (int)sx[1], (int)sx[2], (int)sy[1], (int)sy[2], aa, sf_h,
                                 sf_w);
            dinoc_bicubic_resize_backward(gx, dout, C, (int)sx[1], (int)sx[2], (int)sy[1],
                                          (int)sy[2], aa, sf_h, sf_w);
            check(&f, y, out, ny, "out");
            check(&f, gx, dinp, nx, "dinp");
            free(y), free(gx);
        }
        free(inp), free(dout), free(out), free(dinp);
        dinoc_safetensors_close(f.st);
    }
}

DINOC_TEST(parity_cross_entropy) {
    static const char *cases[] = {"ce_ls0", "ce_ls01"};
    for (size_t c = 0; c < 2; c++) {
        fixture f;
        if (!fixture_open(&f, cases[c])) continue;
        size_t              nl;
        int64_t             sl[2];
        float              *logits = get(&f, "logits", &nl, sl), *loss = get(&f, "loss", NULL, NULL);
        float              *dlogits = get(&f, "dlogits", NULL, NULL);
        float               ls      = strtof(meta(&f, "label_smoothing"), NULL);
        const dinoc_tensor *tt      = dinoc_safetensors_find(f.st, "targets");
        CHECK_MSG(tt && tt->dtype == DINOC_DTYPE_I64 && logits &&
                      dinoc_tensor_numel(tt) == sl[0],
                  "%s: targets missing or not I64 [N]", f.name);
        if (logits && loss && dlogits && tt && tt->dtype == DINOC_DTYPE_I64 &&
            dinoc_tensor_numel(tt) == sl[0]) {
            int      N = (int)sl[0], K = (int)sl[1];
            int32_t *tg = malloc(sizeof(int32_t) * (size_t)N);
            for (int i = 0; i < N; i++) {
                int64_t v;
                memcpy(&v, (const char *)tt->data + 8 * (size_t)i, 8);
                tg[i] = (int32_t)v;
            }
            float *probs = zeros(nl), *g = zeros(nl);
            float  l     = (float)dinoc_cross_entropy_forward(probs, logits, tg, N, K, ls);
            dinoc_cross_entropy_backward(g, probs, tg, N, K, ls, 1.0f);
            check(&f, &l, loss, 1, "loss");
            check(&f, g, dlogits, nl, "dlogits");
            free(tg), free(probs), free(g);
        }
        free(logits), free(loss), free(dlogits);
        dinoc_safetensors_close(f.st);
    }
}
