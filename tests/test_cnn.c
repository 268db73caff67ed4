/* test_cnn.c: the CNN ops (src/ops/conv.c, batchnorm.c, pool.c) against PyTorch 1.13 and against
 * finite differences.
 *
 * Parity: fixtures $DINOC_FIXTURES/cnn/<case>.safetensors from
 * `/usr/bin/python3 tests/py/gen_cnn.py <fixtures dir>` (cases and tensor names listed there).
 * Tolerance atol 1e-5, rtol 1e-4 (STYLE.md 3.5's fp32 op default): values are O(1) and each
 * output or gradient is a float sum of at most ~400 products (the 7x7 stem conv's dw), so a
 * different summation order than torch's costs a few ulps (~1e-6); a wrong term shows at 1e-2.
 * Gradients are accumulated onto buffers pre-filled with 1 and compared after subtracting it, which
 * also checks that every backward adds (+=) rather than overwrites.
 *
 * Finite differences (as tests/test_grad.c): L = <out, dout> in double, central differences on
 * up to NSAMPLE elements per tensor, pass if |fd - g| <= FD_RTOL |g| + FD_ATOL max|g|.
 * Conv (linear in x and in w separately), average pooling and global pooling are linear, so L goes
 * through the C float forward with step h = 1: no truncation error, and the float rounding of out
 * (~1e-7 relative) is divided by 2h. Max pooling is linear between ties: inputs are distinct
 * multiples of 0.01 and the step is 1e-3, so no window's maximum changes. BatchNorm is nonlinear:
 * L goes through a double forward written here (checked against the C forward first), h = 1e-3,
 * truncation ~h^2 ~ 1e-6 relative. FD_RTOL 1e-3 is 1000x those errors and far below a wrong
 * factor; FD_ATOL covers gradients near 0 (float cancellation in the analytic sums). */
#include "check.h"
#include "../src/ops/cnn.h"

#include <string.h>

#define ATOL    1e-5
#define RTOL    1e-4
#define NSAMPLE 40
#define FD_RTOL 1e-3
#define FD_ATOL 1e-4

/* ---- fixtures: every tensor of a case file loaded as float32 ----------------------------------- */

typedef struct {
    char    name[16];
    float  *d;
    size_t  n;
    int     ndim;
    int64_t sh[4];
} tens;

typedef struct {
    dinoc_safetensors *st;
    const char        *cname;
    int                nt;
    tens               t[16];
} cnn_case;

static void case_close(cnn_case *c) {
    for (int i = 0; i < c->nt; i++) free(c->t[i].d);
    dinoc_safetensors_close(c->st);
}

/* Loads cnn/<name>.safetensors; a missing file fails the test with the command that makes it. */
static int case_load(cnn_case *c, const char *name) {
    memset(c, 0, sizeof *c);
    c->cname = name;
    char rel[96];
    snprintf(rel, sizeof rel, "cnn/%s.safetensors", name);
    char *path = dinoc_path_join(dinoc_test_fixtures(), rel);
    int   ok   = dinoc_file_exists(path);
    CHECK_MSG(ok, "%s missing: run `/usr/bin/python3 tests/py/gen_cnn.py %s` first", path,
              dinoc_test_fixtures());
    if (ok) CHECK_OK(dinoc_safetensors_open(&c->st, path));
    free(path);
    if (!c->st) return 0;
    c->nt = dinoc_safetensors_count(c->st);
    for (int i = 0; i < c->nt && i < 16; i++) {
        const dinoc_tensor *t = dinoc_safetensors_get(c->st, i);
        tens               *o = &c->t[i];
        snprintf(o->name, sizeof o->name, "%s", t->name);
        o->n    = (size_t)dinoc_tensor_numel(t);
        o->ndim = t->ndim;
        for (int k = 0; k < t->ndim && k < 4; k++) o->sh[k] = t->shape[k];
        o->d = calloc(o->n, sizeof(float));
        CHECK_OK(dinoc_tensor_to_f32(t, o->d, (int64_t)o->n));
    }
    return 1;
}

static tens *T(cnn_case *c, const char *name) {
    for (int i = 0; i < c->nt; i++)
        if (!strcmp(c->t[i].name, name)) return &c->t[i];
    return NULL;
}

static int imeta(cnn_case *c, const char *key) {
    const char *v = dinoc_safetensors_metadata(c->st, key);
    CHECK_MSG(v != NULL, "%s: metadata '%s' missing", c->cname, key);
    return v ? atoi(v) : 0;
}

/* A buffer of n ones (gradients accumulate onto it). */
static float *ones(size_t n) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = 1.0f;
    return x;
}

/* Compares got - 1 with want: the op added its gradient to a buffer of ones. */
static void check_acc(cnn_case *c, float *got, const char *want_name) {
    tens *w = T(c, want_name);
    CHECK_MSG(w != NULL, "%s: tensor '%s' missing", c->cname, want_name);
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) got[i] -= 1.0f;
    char label[64];
    snprintf(label, sizeof label, "%s.%s", c->cname, want_name);
    CHECK_CLOSE(got, w->d, w->n, ATOL, RTOL, label);
}

static void check_out(cnn_case *c, const float *got, const char *want_name) {
    tens *w = T(c, want_name);
    CHECK_MSG(w != NULL, "%s: tensor '%s' missing", c->cname, want_name);
    char label[64];
    snprintf(label, sizeof label, "%s.%s", c->cname, want_name);
    if (w) CHECK_CLOSE(got, w->d, w->n, ATOL, RTOL, label);
}

/* ---- parity ------------------------------------------------------------------------------------ */

static void conv_case(const char *name) {
    cnn_case c;
    if (!case_load(&c, name)) return;
    tens *x = T(&c, "inp"), *w = T(&c, "w"), *b = T(&c, "b"), *dy = T(&c, "dout");
    CHECK(x && w && dy);
    if (x && w && dy) {
        dinoc_conv2d_dims d = {.B = (int)x->sh[0], .C = (int)x->sh[1], .H = (int)x->sh[2],
                               .W = (int)x->sh[3], .K = (int)w->sh[0], .kh = (int)w->sh[2],
                               .kw = (int)w->sh[3], .stride = imeta(&c, "stride"),
                               .pad = imeta(&c, "pad"), .groups = imeta(&c, "groups")};
        CHECK(dinoc_conv2d_dims_set(&d));
        CHECK(dy->n == (size_t)d.B * d.K * d.OH * d.OW);
        float *col = calloc(dinoc_conv2d_col_floats(&d) + 1, sizeof(float));
        float *y = calloc(dy->n, sizeof(float)), *gx = ones(x->n), *gw = ones(w->n);
        float *gb = ones((size_t)d.K);
        dinoc_conv2d_forward(y, col, x->d, w->d, b ? b->d : NULL, &d);
        dinoc_conv2d_backward(gx, gw, b ? gb : NULL, col, dy->d, x->d, w->d, &d);
        check_out(&c, y, "out");
        check_acc(&c, gx, "dinp");
        check_acc(&c, gw, "dw");
        if (b) check_acc(&c, gb, "db");
        free(col), free(y), free(gx), free(gw), free(gb);
    }
    case_close(&c);
}

DINOC_TEST(cnn_parity_conv) {
    conv_case("conv_k3s2p1");
    conv_case("conv_g2");
    conv_case("conv_1x1");
    conv_case("conv_1x1s2");
    conv_case("conv_k7s2p3");
}

DINOC_TEST(cnn_parity_batchnorm) {
    cnn_case c;
    if (case_load(&c, "bn_train")) {
        tens *x = T(&c, "inp"), *w = T(&c, "w"), *b = T(&c, "b"), *dy = T(&c, "dout");
        tens *rm0 = T(&c, "rm0"), *rv0 = T(&c, "rv0");
        CHECK(x && w && b && dy && rm0 && rv0);
        if (x && w && b && dy && rm0 && rv0) {
            int    B = (int)x->sh[0], C = (int)x->sh[1], HW = (int)(x->sh[2] * x->sh[3]);
            float *y = calloc(x->n, sizeof(float)), *mean = calloc(C, 4), *rstd = calloc(C, 4);
            float *rm = malloc(4 * C), *rv = malloc(4 * C);
            memcpy(rm, rm0->d, 4 * C), memcpy(rv, rv0->d, 4 * C);
            float *gx = ones(x->n), *gw = ones(C), *gb = ones(C);
            dinoc_batchnorm_forward_train(y, mean, rstd, rm, rv, x->d, w->d, b->d, B, C, HW, 1e-5f, 0.1f);
            dinoc_batchnorm_backward(gx, gw, gb, dy->d, x->d, w->d, mean, rstd, B, C, HW);
            check_out(&c, y, "out");
            check_out(&c, rm, "rm");
            check_out(&c, rv, "rv");
            check_acc(&c, gx, "dinp");
            check_acc(&c, gw, "dw");
            check_acc(&c, gb, "db");
            free(y), free(mean), free(rstd), free(rm), free(rv), free(gx), free(gw), free(gb);
        }
        case_close(&c);
    }
    if (case_load(&c, "bn_eval")) {
        tens *x = T(&c, "inp"), *w = T(&c, "w"), *b = T(&c, "b"), *rm = T(&c, "rm"), *rv = T(&c, "rv");
        CHECK(x && w && b && rm && rv);
        if (x && w && b && rm && rv) {
            float *y = calloc(x->n, sizeof(float));
            dinoc_batchnorm_forward_eval(y, x->d, w->d, b->d, rm->d, rv->d, (int)x->sh[0],
                                         (int)x->sh[1], (int)(x->sh[2] * x->sh[3]), 1e-5f);
            check_out(&c, y, "out");
            free(y);
        }
        case_close(&c);
    }
}

/* op: 0 maxpool 3x3 s2 p1, 1 avgpool 2, 2 global average, 3 relu */
static void pool_case(const char *name, int op) {
    cnn_case c;
    if (!case_load(&c, name)) return;
    tens *x = T(&c, "inp"), *dy = T(&c, "dout");
    CHECK(x && dy);
    if (x && dy) {
        int      N = (int)(x->sh[0] * x->sh[1]), H = (int)x->sh[2], W = (int)x->sh[3];
        float   *y = calloc(dy->n, sizeof(float)), *gx = ones(x->n);
        int32_t *arg = calloc(dy->n, sizeof(int32_t));
        if (op == 0) {
            dinoc_maxpool2d_forward(y, arg, x->d, N, H, W, 3, 2, 1);
            dinoc_maxpool2d_backward(gx, dy->d, arg, N, H, W, dinoc_pool_out_size(H, 3, 2, 1),
                                     dinoc_pool_out_size(W, 3, 2, 1));
        } else if (op == 1) {
            dinoc_avgpool2d_forward(y, x->d, N, H, W, 2, 2);
            dinoc_avgpool2d_backward(gx, dy->d, N, H, W, 2, 2);
        } else if (op == 2) {
            dinoc_global_avgpool_forward(y, x->d, N, H * W);
            dinoc_global_avgpool_backward(gx, dy->d, N, H * W);
        } else {
            dinoc_relu_forward(y, x->d, x->n);
            dinoc_relu_backward(gx, dy->d, y, x->n);
        }
        check_out(&c, y, "out");
        check_acc(&c, gx, "dinp");
        free(y), free(gx), free(arg);
    }
    case_close(&c);
}

DINOC_TEST(cnn_parity_pool_relu) {
    pool_case("maxpool", 0);
    pool_case("avgpool", 1);
    pool_case("gap", 2);
    pool_case("relu", 3);
}

/* ---- finite differences ------------------------------------------------------------------------ */

typedef double (*loss_fn)(void *ctx);

static void fill(float *x, size_t n, uint64_t seed) {
    dinoc_rng r;
    dinoc_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = dinoc_rng_normal(&r);
}

static double dotd(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Central differences at up to NSAMPLE random elements of x against grad g. */
static void fd(const char *label, float *x, size_t n, const float *g, loss_fn f, void *ctx, double h0) {
    double gmax = 0, worst = 0;
    for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(g[i]));
    dinoc_rng r;
    dinoc_rng_seed(&r, 7);
    int bad = 0;
    for (int s = 0; s < NSAMPLE; s++) {
        size_t i  = n <= NSAMPLE ? (size_t)s % n : (size_t)(dinoc_rng_u64(&r) % n);
        float  xi = x[i], xp = (float)(xi + h0), xm = (float)(xi - h0);
        x[i]      = xp;
        double lp = f(ctx);
        x[i]      = xm;
        double lm = f(ctx);
        x[i]      = xi;
        double d = (lp - lm) / ((double)xp - xm), err = fabs(d - g[i]);
        double tol = FD_RTOL * fabs(g[i]) + FD_ATOL * gmax;
        worst      = fmax(worst, err / tol);
        if (!(err <= tol) && bad++ < 5)
            fprintf(stderr, "    %s[%zu]: fd %.8g analytic %.8g\n", label, i, d, g[i]);
    }
    fprintf(stderr, "    fd %-12s n=%-5zu max|g|=%.3g err/tol=%.3f %s\n", label, n, gmax, worst,
            bad ? "MISMATCH" : "ok");
    CHECK_MSG(!bad, "%s: finite differences disagree", label);
}

typedef struct {
    dinoc_conv2d_dims d;
    float            *x, *w, *b, *dy, *y, *col;
    int               op; /* 0 conv, 1 avgpool, 2 global, 3 maxpool */
} lin_ctx;

static double lin_loss(void *p) {
    lin_ctx *c = p;
    size_t   ny;
    if (c->op == 0) {
        dinoc_conv2d_forward(c->y, c->col, c->x, c->w, c->b, &c->d);
        ny = (size_t)c->d.B * c->d.K * c->d.OH * c->d.OW;
    } else if (c->op == 1) {
        dinoc_avgpool2d_forward(c->y, c->x, c->d.B * c->d.C, c->d.H, c->d.W, 3, 3);
        ny = (size_t)c->d.B * c->d.C * (c->d.H / 3) * (c->d.W / 3);
    } else if (c->op == 2) {
        dinoc_global_avgpool_forward(c->y, c->x, c->d.B * c->d.C, c->d.H * c->d.W);
        ny = (size_t)c->d.B * c->d.C;
    } else {
        dinoc_maxpool2d_forward(c->y, NULL, c->x, c->d.B * c->d.C, c->d.H, c->d.W, 3, 2, 1);
        ny = (size_t)c->d.B * c->d.C * dinoc_pool_out_size(c->d.H, 3, 2, 1) *
             dinoc_pool_out_size(c->d.W, 3, 2, 1);
    }
    return dotd(c->y, c->dy, ny);
}

DINOC_TEST(cnn_fd_conv) {
    /* strided, padded, grouped, with bias: every index path of im2col / col2im */
    lin_ctx c = {.d = {.B = 2, .C = 4, .H = 7, .W = 6, .K = 6, .kh = 3, .kw = 3, .stride = 2,
                       .pad = 1, .groups = 2}};
    CHECK(dinoc_conv2d_dims_set(&c.d));
    const size_t nx = 2 * 4 * 7 * 6, nw = 6 * 2 * 9, ny = (size_t)2 * 6 * c.d.OH * c.d.OW;
    c.x = malloc(4 * nx), c.w = malloc(4 * nw), c.b = malloc(4 * 6), c.dy = malloc(4 * ny);
    c.y = malloc(4 * ny), c.col = malloc(4 * dinoc_conv2d_col_floats(&c.d));
    fill(c.x, nx, 1), fill(c.w, nw, 2), fill(c.b, 6, 3), fill(c.dy, ny, 4);
    float *gx = calloc(nx, 4), *gw = calloc(nw, 4), *gb = calloc(6, 4);
    dinoc_conv2d_backward(gx, gw, gb, c.col, c.dy, c.x, c.w, &c.d);
    fd("conv.dinp", c.x, nx, gx, lin_loss, &c, 1.0);
    fd("conv.dw", c.w, nw, gw, lin_loss, &c, 1.0);
    fd("conv.db", c.b, 6, gb, lin_loss, &c, 1.0);
    free(c.x), free(c.w), free(c.b), free(c.dy), free(c.y), free(c.col), free(gx), free(gw), free(gb);
}

DINOC_TEST(cnn_fd_pool) {
    /* H, W not multiples of the window: the avgpool drops the remainder, the maxpool pads */
    lin_ctx c = {.d = {.B = 2, .C = 3, .H = 8, .W = 7}};
    const size_t nx = 2 * 3 * 8 * 7;
    c.x = malloc(4 * nx), c.y = calloc(nx, 4), c.dy = malloc(4 * nx);
    fill(c.x, nx, 5), fill(c.dy, nx, 6);
    /* distinct values 0.01 apart in random order: no max changes under a 1e-3 step */
    for (size_t i = 0; i < nx; i++) c.x[i] = (float)i * 0.01f;
    dinoc_rng r;
    dinoc_rng_seed(&r, 9);
    for (size_t i = nx - 1; i > 0; i--) {
        size_t j = (size_t)(dinoc_rng_u64(&r) % (i + 1));
        float  t = c.x[i];
        c.x[i] = c.x[j], c.x[j] = t;
    }
    float   *g   = calloc(nx, 4);
    int32_t *arg = calloc(nx, 4);
    const int N = 6, OH = dinoc_pool_out_size(8, 3, 2, 1), OW = dinoc_pool_out_size(7, 3, 2, 1);
    dinoc_maxpool2d_forward(c.y, arg, c.x, N, 8, 7, 3, 2, 1);
    dinoc_maxpool2d_backward(g, c.dy, arg, N, 8, 7, OH, OW);
    c.op = 3;
    fd("maxpool", c.x, nx, g, lin_loss, &c, 1e-3);
    memset(g, 0, 4 * nx);
    dinoc_avgpool2d_backward(g, c.dy, N, 8, 7, 3, 3);
    c.op = 1;
    fd("avgpool", c.x, nx, g, lin_loss, &c, 1.0);
    memset(g, 0, 4 * nx);
    dinoc_global_avgpool_backward(g, c.dy, N, 56);
    c.op = 2;
    fd("gap", c.x, nx, g, lin_loss, &c, 1.0);
    free(c.x), free(c.y), free(c.dy), free(g), free(arg);
}

typedef struct {
    float *x, *w, *b, *dy;
    int    B, C, HW;
} bn_ctx;

/* Training-mode BatchNorm in double: out = (x - mean) / sqrt(var + eps) * w + b; returns <out, dy>
 * and fills out (if not NULL). */
static double bn_ref(bn_ctx *c, double *out) {
    double L = 0;
    for (int ch = 0; ch < c->C; ch++) {
        double s = 0, ss = 0, n = (double)c->B * c->HW;
        for (int b = 0; b < c->B; b++)
            for (int p = 0; p < c->HW; p++) s += c->x[((size_t)b * c->C + ch) * c->HW + p];
        for (int b = 0; b < c->B; b++)
            for (int p = 0; p < c->HW; p++) {
                double v = c->x[((size_t)b * c->C + ch) * c->HW + p] - s / n;
                ss += v * v;
            }
        double rs = 1.0 / sqrt(ss / n + 1e-5);
        for (int b = 0; b < c->B; b++)
            for (int p = 0; p < c->HW; p++) {
                size_t i = ((size_t)b * c->C + ch) * c->HW + p;
                double o = (c->x[i] - s / n) * rs * c->w[ch] + c->b[ch];
                if (out) out[i] = o;
                L += o * c->dy[i];
            }
    }
    return L;
}
static double bn_loss(void *p) { return bn_ref(p, NULL); }

DINOC_TEST(cnn_fd_batchnorm) {
    bn_ctx       c  = {.B = 3, .C = 4, .HW = 10};
    const size_t nx = 120;
    c.x = malloc(4 * nx), c.w = malloc(16), c.b = malloc(16), c.dy = malloc(4 * nx);
    fill(c.x, nx, 11), fill(c.w, 4, 12), fill(c.b, 4, 13), fill(c.dy, nx, 14);
    for (size_t i = 0; i < nx; i++) c.x[i] = 2 * c.x[i] + 1; /* non-zero mean, non-unit var */
    float  *y = calloc(nx, 4), mean[4], rstd[4];
    double *yd = calloc(nx, sizeof(double));
    float  *gx = calloc(nx, 4), gw[4] = {0}, gb[4] = {0};
    dinoc_batchnorm_forward_train(y, mean, rstd, NULL, NULL, c.x, c.w, c.b, 3, 4, 10, 1e-5f, 0.1f);
    bn_ref(&c, yd);
    float *ydf = calloc(nx, 4);
    for (size_t i = 0; i < nx; i++) ydf[i] = (float)yd[i];
    /* float forward vs double: O(1) outputs, a few ulps */
    CHECK_CLOSE(y, ydf, nx, 1e-5, 1e-5, "bn forward vs double");
    dinoc_batchnorm_backward(gx, gw, gb, c.dy, c.x, c.w, mean, rstd, 3, 4, 10);
    fd("bn.dinp", c.x, nx, gx, bn_loss, &c, 1e-3);
    fd("bn.dw", c.w, 4, gw, bn_loss, &c, 1e-3);
    fd("bn.db", c.b, 4, gb, bn_loss, &c, 1e-3);
    free(c.x), free(c.w), free(c.b), free(c.dy), free(y), free(yd), free(gx), free(ydf);
}

DINOC_TEST(cnn_conv_dims) {
    /* invalid geometries are refused, not computed */
    dinoc_conv2d_dims d = {.B = 1, .C = 3, .H = 2, .W = 2, .K = 4, .kh = 3, .kw = 3, .stride = 1,
                           .pad = 0, .groups = 1};
    CHECK(!dinoc_conv2d_dims_set(&d)); /* 3x3 kernel on 2x2 without padding */
    d.pad = 1;
    CHECK(dinoc_conv2d_dims_set(&d) && d.OH == 2 && d.OW == 2);
    d.groups = 2;
    CHECK(!dinoc_conv2d_dims_set(&d)); /* 3 channels into 2 groups */
    d.groups = 1, d.kh = d.kw = 1, d.pad = 0;
    CHECK(dinoc_conv2d_dims_set(&d) && dinoc_conv2d_col_floats(&d) == 0); /* direct path */
}
