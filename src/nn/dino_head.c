/* dino_head.c: DINO's projection head (see dino_head.h for the maths and layout). Gradients are
 * checked against finite differences and PyTorch's DINOHead in tests/test_dino.c. */
#include "dino_head.h"

#include <math.h>
#include <string.h>

dinoc_status dinoc_dino_head_layout_init(dinoc_dino_head_layout *l, const dinoc_dino_head_config *c) {
    memset(l, 0, sizeof *l);
    if (c->in_dim < 1 || c->hidden < 1 || c->bottleneck < 1 || c->out_dim < 1)
        return dinoc_fail(DINOC_ERR_ARG, "DINO head: in_dim %d, hidden %d, bottleneck %d, out_dim %d must be >= 1",
                          c->in_dim, c->hidden, c->bottleneck, c->out_dim);
    if (c->layers < 1 || c->layers > DINOC_DINO_HEAD_MAX_LAYERS)
        return dinoc_fail(DINOC_ERR_ARG, "DINO head: layers %d outside 1..%d", c->layers, DINOC_DINO_HEAD_MAX_LAYERS);
    l->cfg   = *c;
    size_t o = 0;
    for (int i = 0; i < c->layers; i++) {
        l->in[i]    = i == 0 ? c->in_dim : c->hidden;
        l->out[i]   = i == c->layers - 1 ? c->bottleneck : c->hidden;
        l->w_off[i] = o, o += (size_t)l->in[i] * l->out[i];
        l->b_off[i] = o, o += (size_t)l->out[i];
    }
    l->g_off = l->last_off = o, o += (size_t)c->out_dim;
    l->v_off = o, o += (size_t)c->out_dim * c->bottleneck;
    l->n     = o;
    return DINOC_OK;
}

void dinoc_dino_head_init(const dinoc_dino_head_layout *l, float *p, dinoc_rng *rng) {
    const dinoc_dino_head_config *c = &l->cfg;
    memset(p, 0, sizeof(float) * l->n);
    for (int i = 0; i < c->layers; i++)
        for (size_t j = 0; j < (size_t)l->in[i] * l->out[i]; j++)
            p[l->w_off[i] + j] = dinoc_rng_trunc_normal(rng, 0.02f, -2.0f, 2.0f);
    const float bound = 1.0f / sqrtf((float)c->bottleneck);
    for (size_t j = 0; j < (size_t)c->out_dim * c->bottleneck; j++)
        p[l->v_off + j] = (2 * dinoc_rng_uniform(rng) - 1) * bound;
    for (int k = 0; k < c->out_dim; k++) p[l->g_off + k] = 1.0f;
}

int dinoc_dino_head_names(const dinoc_dino_head_layout *l, char (*names)[48], int64_t (*shapes)[2],
                          int *ndims, size_t *offsets, size_t *counts) {
    const dinoc_dino_head_config *c = &l->cfg;
    int                           n = 0;
#define ENTRY(fmt, idx, off, nd, s0, s1)                                                       \
    do {                                                                                       \
        if (names) snprintf(names[n], 48, fmt, idx);                                           \
        if (shapes) shapes[n][0] = (s0), shapes[n][1] = (s1);                                  \
        if (ndims) ndims[n] = (nd);                                                            \
        if (offsets) offsets[n] = (off);                                                       \
        if (counts) counts[n] = (size_t)(s0) * (size_t)((nd) == 2 ? (s1) : 1);                 \
        n++;                                                                                   \
    } while (0)
    for (int i = 0; i < c->layers; i++) {
        /* nn.Sequential(Linear, GELU, Linear, ...): Linear i sits at index 2i; a 1-layer head is
         * a bare nn.Linear named "mlp" */
        if (c->layers == 1) {
            ENTRY("mlp.weight%.0d", 0, l->w_off[i], 2, l->out[i], l->in[i]);
            ENTRY("mlp.bias%.0d", 0, l->b_off[i], 1, l->out[i], 1);
        } else {
            ENTRY("mlp.%d.weight", 2 * i, l->w_off[i], 2, l->out[i], l->in[i]);
            ENTRY("mlp.%d.bias", 2 * i, l->b_off[i], 1, l->out[i], 1);
        }
    }
    ENTRY("last_layer.weight_g%.0d", 0, l->g_off, 2, c->out_dim, 1);
    ENTRY("last_layer.weight_v%.0d", 0, l->v_off, 2, c->out_dim, c->bottleneck);
#undef ENTRY
    return n;
}

dinoc_status dinoc_dino_head_acts_init(dinoc_dino_head_acts *a, const dinoc_dino_head_layout *l, int max_rows) {
    memset(a, 0, sizeof *a);
    a->l = l, a->max_rows = max_rows;
    const dinoc_dino_head_config *c = &l->cfg;
    const size_t                  N = (size_t)max_rows;
    int                           ok = 1;
#define ALLOC(p, n) ok &= ((p) = dinoc_calloc((n), sizeof(float))) != NULL
    ALLOC(a->x, N * c->in_dim);
    for (int i = 0; i < c->layers; i++) {
        ALLOC(a->pre[i], N * l->out[i]);
        if (i < c->layers - 1) ALLOC(a->act[i], N * l->out[i]);
    }
    int widest = c->in_dim > c->hidden ? c->in_dim : c->hidden;
    if (c->bottleneck > widest) widest = c->bottleneck;
    ALLOC(a->nrm, N);
    ALLOC(a->zn, N * c->bottleneck);
    ALLOC(a->w, (size_t)c->out_dim * c->bottleneck);
    ALLOC(a->vnorm, (size_t)c->out_dim);
    ALLOC(a->dz, N * c->bottleneck);
    ALLOC(a->dh, N * widest);
    ALLOC(a->dh2, N * widest);
    ALLOC(a->dw, (size_t)c->out_dim * c->bottleneck);
#undef ALLOC
    if (!ok) {
        dinoc_dino_head_acts_free(a);
        return dinoc_fail(DINOC_ERR_NOMEM, "DINO head: out of memory for %d rows", max_rows);
    }
    return DINOC_OK;
}

void dinoc_dino_head_acts_free(dinoc_dino_head_acts *a) {
    dinoc_free(a->x);
    for (int i = 0; i < DINOC_DINO_HEAD_MAX_LAYERS; i++) dinoc_free(a->pre[i]), dinoc_free(a->act[i]);
    dinoc_free(a->nrm), dinoc_free(a->zn), dinoc_free(a->w), dinoc_free(a->vnorm);
    dinoc_free(a->dz), dinoc_free(a->dh), dinoc_free(a->dh2), dinoc_free(a->dw);
    memset(a, 0, sizeof *a);
}

void dinoc_dino_head_forward(dinoc_dino_head_acts *a, const float *p, const float *x, int N, float *logits) {
    const dinoc_dino_head_layout *l = a->l;
    const dinoc_dino_head_config *c = &l->cfg;
    const int                     Bn = c->bottleneck, K = c->out_dim, L = c->layers;
    a->rows = N;
    memcpy(a->x, x, sizeof(float) * (size_t)N * c->in_dim);
    const float *h = a->x;
    for (int i = 0; i < L; i++) {
        dinoc_linear_forward(a->pre[i], h, p + l->w_off[i], p + l->b_off[i], N, l->in[i], l->out[i]);
        if (i < L - 1) {
            dinoc_gelu_forward(a->act[i], a->pre[i], (size_t)N * l->out[i]);
            h = a->act[i];
        }
    }
    /* F.normalize(z, dim=-1): z / max(|z|, 1e-12) */
    const float *z = a->pre[L - 1];
    for (int n = 0; n < N; n++) {
        double ss = 0;
        for (int j = 0; j < Bn; j++) ss += (double)z[(size_t)n * Bn + j] * z[(size_t)n * Bn + j];
        float nr  = (float)sqrt(ss);
        a->nrm[n] = nr > 1e-12f ? nr : 1e-12f;
        for (int j = 0; j < Bn; j++) a->zn[(size_t)n * Bn + j] = z[(size_t)n * Bn + j] / a->nrm[n];
    }
    /* torch._weight_norm(v, g, 0) = v * (g / |v|) per output row */
    const float *g = p + l->g_off, *v = p + l->v_off;
    for (int k = 0; k < K; k++) {
        double ss = 0;
        for (int j = 0; j < Bn; j++) ss += (double)v[(size_t)k * Bn + j] * v[(size_t)k * Bn + j];
        a->vnorm[k]   = (float)sqrt(ss);
        const float s = g[k] / a->vnorm[k];
        for (int j = 0; j < Bn; j++) a->w[(size_t)k * Bn + j] = v[(size_t)k * Bn + j] * s;
    }
    dinoc_linear_forward(logits, a->zn, a->w, NULL, N, Bn, K);
}

void dinoc_dino_head_backward(dinoc_dino_head_acts *a, const float *p, const float *dlogits, float *grads,
                              float *dx) {
    const dinoc_dino_head_layout *l = a->l;
    const dinoc_dino_head_config *c = &l->cfg;
    const int                     N = a->rows, Bn = c->bottleneck, K = c->out_dim, L = c->layers;
    /* logits = zn W^T */
    memset(a->dz, 0, sizeof(float) * (size_t)N * Bn);
    memset(a->dw, 0, sizeof(float) * (size_t)K * Bn);
    dinoc_linear_backward(a->dz, a->dw, NULL, dlogits, a->zn, a->w, N, Bn, K);
    /* weight norm: dg = (dW . v) / |v|; dv = (g / |v|) dW - g (dW . v) / |v|^3 v */
    const float *g = p + l->g_off, *v = p + l->v_off;
    float       *dg = grads + l->g_off, *dv = grads + l->v_off;
    for (int k = 0; k < K; k++) {
        const float *dwk = a->dw + (size_t)k * Bn, *vk = v + (size_t)k * Bn;
        double       dot = 0;
        for (int j = 0; j < Bn; j++) dot += (double)dwk[j] * vk[j];
        const double nv = a->vnorm[k];
        dg[k] += (float)(dot / nv);
        const float s = g[k] / a->vnorm[k], t = (float)(g[k] * dot / (nv * nv * nv));
        for (int j = 0; j < Bn; j++) dv[(size_t)k * Bn + j] += s * dwk[j] - t * vk[j];
    }
    /* normalize: dz = (dzn - zn (zn . dzn)) / |z| (dzn / eps below eps, where the norm is clamped) */
    for (int n = 0; n < N; n++) {
        float       *d  = a->dz + (size_t)n * Bn;
        const float *zn = a->zn + (size_t)n * Bn;
        if (a->nrm[n] > 1e-12f) {
            double dot = 0;
            for (int j = 0; j < Bn; j++) dot += (double)zn[j] * d[j];
            for (int j = 0; j < Bn; j++) d[j] = (d[j] - zn[j] * (float)dot) / a->nrm[n];
        } else {
            for (int j = 0; j < Bn; j++) d[j] /= a->nrm[n];
        }
    }
    /* the MLP, last layer first; dh/dh2 alternate as the gradient of each layer's input */
    float *dout = a->dz;
    for (int i = L - 1; i >= 0; i--) {
        const float *inp  = i == 0 ? a->x : a->act[i - 1];
        float       *dinp = i == 0 ? dx : (dout == a->dh ? a->dh2 : a->dh);
        if (i > 0) memset(dinp, 0, sizeof(float) * (size_t)N * l->in[i]);
        dinoc_linear_backward(dinp, grads + l->w_off[i], grads + l->b_off[i], dout, inp, p + l->w_off[i], N,
                              l->in[i], l->out[i]);
        if (i == 0) break;
        /* through GELU of layer i-1: d pre = d act * gelu'(pre), into the other scratch */
        float *dpre = dinp == a->dh ? a->dh2 : a->dh;
        memset(dpre, 0, sizeof(float) * (size_t)N * l->out[i - 1]);
        dinoc_gelu_backward(dpre, dinp, a->pre[i - 1], (size_t)N * l->out[i - 1]);
        dout = dpre;
    }
}
