/* resnet.c: the ResNet workspace, inference and training forward, backward, fc. Presets, layout
 * (units, names, offsets), init, loading and saving are in resnet_io.c. Tested by
 * tests/test_resnet.c.
 *
 * Dims: B batch, C channels, H x W pixels; F feature width (last stage's channels). Every conv is
 * followed by a BN, so the model is a list of conv+BN "units" (stem, then each block's units in
 * torchvision's registration order conv1, bn1, conv2, bn2[, conv3, bn3], downsample.0, .1), and
 * the flat parameters follow that order: unit u's conv weight, BN weight, BN bias; fc (or CLIP's
 * attention pool) last. CLIP's ModifiedResNet adds AvgPool2d steps (stem, inside strided blocks,
 * before their downsample) and runs in the inference workspace only.
 *
 * Activations (training workspace): per unit x = conv output (BN's input, kept for its backward),
 * y = BN output (after ReLU in place for inner units; for a block's last unit y is the block output
 * relu(bn + shortcut)), mean / rstd. ReLU's backward only needs its output (> 0 where the input
 * was). The inference workspace keeps four rotating buffers instead: block input X, inner outputs,
 * block output, with the downsample computed last into a buffer that is free by then. */
#include "resnet.h"

#include <math.h>
#include <string.h>

struct dinoc_resnet_ws {
    int                B, H, W, train;
    dinoc_conv2d_dims *dims;      /* [n_units] */
    float            **x, **y;    /* [n_units]: train only (views into mem) */
    float            **mean, **rstd;
    const float      **in;        /* [n_units]: each unit's conv input, set by the forward */
    float             *pool;      /* stem maxpool output (train) */
    int32_t           *argmax;    /* stem maxpool argmax (train) */
    int                pool_h, pool_w;
    float             *rot[4];    /* inference buffers / backward gradient buffers (train) */
    float             *col;       /* im2col scratch */
    float             *ap;        /* CLIP attention-pool scratch */
    int                out_h, out_w; /* last stage's map */
    size_t             max_act;   /* floats of the largest activation */
    float             *mem;       /* one allocation for everything above */
};

/* ---- workspace --------------------------------------------------------------------------------- */

void dinoc_resnet_ws_free(dinoc_resnet_ws *ws) {
    if (!ws) return;
    dinoc_free(ws->dims);
    dinoc_free(ws->x);
    dinoc_free(ws->y);
    dinoc_free(ws->mean);
    dinoc_free(ws->rstd);
    dinoc_free(ws->in);
    dinoc_free(ws->mem);
    dinoc_free(ws);
}

/* Geometry of unit u on an input of h x w; an error names the layer if the image is too small. */
static dinoc_status unit_dims(dinoc_conv2d_dims *d, const dinoc_resnet_unit *un, int B, int h,
                              int w, int train) {
    memset(d, 0, sizeof *d);
    d->B = B, d->C = un->cin, d->H = h, d->W = w, d->K = un->cout, d->kh = d->kw = un->k;
    d->stride = un->stride, d->pad = un->pad, d->groups = 1;
    if (!dinoc_conv2d_dims_set(d))
        return dinoc_fail(DINOC_ERR_ARG, "ResNet: %dx%d input to '%s' is too small for its %dx%d "
                          "stride-%d conv", h, w, un->conv, un->k, un->k, un->stride);
    if (train && (size_t)B * d->OH * d->OW < 2)
        return dinoc_fail(DINOC_ERR_ARG, "ResNet: '%s' would normalise 1 value per channel in "
                          "training (batch %d, %dx%d output); use a larger batch or image",
                          un->bn, B, d->OH, d->OW);
    return DINOC_OK;
}

dinoc_status dinoc_resnet_ws_init(dinoc_resnet_ws **out, const dinoc_resnet *m, int B, int H,
                                  int W, int train) {
    *out = NULL;
    if (B < 1 || B > (1 << 20) || H < 1 || H > (1 << 15) || W < 1 || W > (1 << 15))
        return dinoc_fail(DINOC_ERR_ARG, "ResNet: batch %d of %dx%d images is out of range", B, H, W);
    dinoc_resnet_ws *ws = dinoc_calloc(1, sizeof *ws);
    if (!ws) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    const int nu = m->n_units;
    ws->B = B, ws->H = H, ws->W = W, ws->train = train;
    ws->dims = dinoc_calloc((size_t)nu, sizeof *ws->dims);
    ws->x    = dinoc_calloc((size_t)nu, sizeof *ws->x);
    ws->y    = dinoc_calloc((size_t)nu, sizeof *ws->y);
    ws->mean = dinoc_calloc((size_t)nu, sizeof *ws->mean);
    ws->rstd = dinoc_calloc((size_t)nu, sizeof *ws->rstd);
    ws->in   = dinoc_calloc((size_t)nu, sizeof *ws->in);
    dinoc_status s    = DINOC_OK;
    const int    clip = m->cfg.stem == DINOC_RESNET_STEM_CLIP;
    if (!ws->dims || !ws->x || !ws->y || !ws->mean || !ws->rstd || !ws->in) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (clip && train) {
        s = dinoc_fail(DINOC_ERR_UNSUPPORTED, "ResNet '%s': training CLIP's ModifiedResNet is not "
                       "implemented (inference only)", m->cfg.arch);
        goto fail;
    }
    if (clip && (H != m->cfg.image_size || W != m->cfg.image_size)) {
        s = dinoc_fail(DINOC_ERR_ARG, "ResNet '%s': CLIP's attention pool needs %dx%d inputs, got "
                       "%dx%d", m->cfg.arch, m->cfg.image_size, m->cfg.image_size, H, W);
        goto fail;
    }
    /* geometry, walking the network as the forward does */
    int h = H, w = W;
    for (int u = 0; u < m->n_stem; u++) {
        if ((s = unit_dims(&ws->dims[u], &m->units[u], B, h, w, train))) goto fail;
        h = ws->dims[u].OH, w = ws->dims[u].OW;
    }
    if (m->cfg.stem == DINOC_RESNET_STEM_IMAGENET)
        h = dinoc_pool_out_size(h, 3, 2, 1), w = dinoc_pool_out_size(w, 3, 2, 1);
    if (clip) h = dinoc_pool_out_size(h, 2, 2, 0), w = dinoc_pool_out_size(w, 2, 2, 0);
    ws->pool_h = h, ws->pool_w = w;
    for (int b = 0; b < m->n_blocks; b++) {
        const dinoc_resnet_block *blk = &m->blocks[b];
        int                       h0 = h, w0 = w;
        for (int j = 0; j < blk->nu; j++) {
            if ((s = unit_dims(&ws->dims[blk->u0 + j], &m->units[blk->u0 + j], B, h, w, train)))
                goto fail;
            h = ws->dims[blk->u0 + j].OH, w = ws->dims[blk->u0 + j].OW;
            if (j == 1 && blk->pool > 1)
                h = dinoc_pool_out_size(h, blk->pool, blk->pool, 0),
                w = dinoc_pool_out_size(w, blk->pool, blk->pool, 0);
        }
        if (blk->pool > 1)
            h0 = dinoc_pool_out_size(h0, blk->pool, blk->pool, 0),
            w0 = dinoc_pool_out_size(w0, blk->pool, blk->pool, 0);
        if (blk->down >= 0 && (s = unit_dims(&ws->dims[blk->down], &m->units[blk->down], B, h0, w0, train)))
            goto fail;
    }
    ws->out_h = h, ws->out_w = w;
    /* sizes: every activation, the largest one, the largest im2col */
    /* the same sums in double first: a huge batch or image must fail cleanly, not wrap size_t */
    double dtotal = 0, dmax = 0;
    for (int u = 0; u < nu; u++) {
        const double act = (double)B * ws->dims[u].K * ws->dims[u].OH * ws->dims[u].OW;
        dmax = act > dmax ? act : dmax;
        dtotal += 3.0 * act + (double)ws->dims[u].C * ws->dims[u].kh * ws->dims[u].kw *
                                  ws->dims[u].OH * ws->dims[u].OW;
    }
    /* the ops count planes (B * C) and elements of one activation in int */
    if (dtotal > 1e12 || dmax > 2147483647.0) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "ResNet: a batch of %d %dx%d images needs ~%.3g floats of "
                       "workspace", B, H, W, dtotal);
        goto fail;
    }
    const int    sc  = m->units[m->n_stem - 1].cout;
    size_t total = 0, max_act = (size_t)B * sc * ws->pool_h * ws->pool_w, col = 0;
    for (int u = 0; u < nu; u++) {
        const dinoc_conv2d_dims *d = &ws->dims[u];
        size_t act = (size_t)B * d->K * d->OH * d->OW;
        max_act    = act > max_act ? act : max_act;
        total += 2 * act + 2 * (size_t)d->K;
        size_t c = dinoc_conv2d_col_floats(d);
        col      = c > col ? c : col;
    }
    const size_t pool = m->cfg.stem == DINOC_RESNET_STEM_IMAGENET
                            ? (size_t)B * m->units[0].cout * ws->pool_h * ws->pool_w : 0;
    ws->max_act = max_act;
    /* train: activations + pool + argmax (int32, one float slot each) + 4 gradient buffers;
     * inference: 4 rotating buffers */
    const int    E  = clip ? m->cfg.widths[3] * 4 : 0;
    const size_t ap = clip ? dinoc_attnpool_scratch_floats(B, h * w, E, m->cfg.heads) : 0;
    size_t n = 4 * max_act + col + ap + (train ? total + 2 * pool : 0);
    ws->mem  = dinoc_calloc(n ? n : 1, sizeof(float));
    if (!ws->mem) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "ResNet: out of memory for a %zu-float workspace "
                       "(batch %d, %dx%d)", n, B, H, W);
        goto fail;
    }
    float *p = ws->mem;
    for (int i = 0; i < 4; i++) ws->rot[i] = p, p += max_act;
    ws->col = p, p += col;
    ws->ap = p, p += ap;
    if (train) {
        for (int u = 0; u < nu; u++) {
            const dinoc_conv2d_dims *d   = &ws->dims[u];
            size_t                   act = (size_t)B * d->K * d->OH * d->OW;
            ws->x[u] = p, p += act;
            ws->y[u] = p, p += act;
            ws->mean[u] = p, p += d->K;
            ws->rstd[u] = p, p += d->K;
        }
        ws->pool   = p, p += pool;
        ws->argmax = (int32_t *)p;
    }
    *out = ws;
    return DINOC_OK;
fail:
    dinoc_resnet_ws_free(ws);
    return s;
}

/* ---- forward ----------------------------------------------------------------------------------- */

/* conv -> BN (batch or running statistics) -> optional ReLU, for unit u: in -> x -> y. */
static void unit_forward(dinoc_resnet *mm, const dinoc_resnet *m, dinoc_resnet_ws *ws, int u,
                         const float *in, float *x, float *y, int relu) {
    const dinoc_resnet_unit *un = &m->units[u];
    const dinoc_conv2d_dims *d  = &ws->dims[u];
    const int                hw = d->OH * d->OW;
    ws->in[u]                   = in;
    dinoc_conv2d_forward(x, ws->col, in, m->params + un->w_off, NULL, d);
    if (mm)
        dinoc_batchnorm_forward_train(y, ws->mean[u], ws->rstd[u], mm->buffers + un->rm_off,
                                      mm->buffers + un->rv_off, x, m->params + un->bnw_off,
                                      m->params + un->bnb_off, d->B, d->K, hw, m->cfg.bn_eps,
                                      m->cfg.bn_momentum);
    else
        dinoc_batchnorm_forward_eval(y, x, m->params + un->bnw_off, m->params + un->bnb_off,
                                     m->buffers + un->rm_off, m->buffers + un->rv_off, d->B, d->K,
                                     hw, m->cfg.bn_eps);
    if (relu) dinoc_relu_forward(y, y, (size_t)d->B * d->K * hw);
}

/* mm != NULL: training (BN batch statistics, running update, saved activations); else inference
 * through the rotating buffers. */
static dinoc_status forward(dinoc_resnet *mm, const dinoc_resnet *m, const float *images, int B,
                            int H, int W, float *feats, dinoc_resnet_ws *ws) {
    if (!ws || ws->B != B || ws->H != H || ws->W != W || ws->train != (mm != NULL))
        return dinoc_fail(DINOC_ERR_ARG, "ResNet: workspace made for %s batch %d of %dx%d, "
                          "called with %s batch %d of %dx%d", ws && ws->train ? "a training" : "an inference",
                          ws ? ws->B : 0, ws ? ws->H : 0, ws ? ws->W : 0,
                          mm ? "a training" : "an inference", B, H, W);
    const int train = mm != NULL;
#define ACT(u, which, r) (train ? ws->which[u] : ws->rot[(r) & 3])
    const float *cur = images;
    for (int u = 0; u < m->n_stem; u++) {
        unit_forward(mm, m, ws, u, cur, ACT(u, x, u), ACT(u, y, u), 1);
        cur = ACT(u, y, u);
    }
    int                      ri = m->n_stem - 1; /* inference: rot[ri] holds the current block input */
    const dinoc_conv2d_dims *ds = &ws->dims[m->n_stem - 1];
    if (m->cfg.stem == DINOC_RESNET_STEM_IMAGENET) {
        float *pool = train ? ws->pool : ws->rot[1];
        dinoc_maxpool2d_forward(pool, train ? ws->argmax : NULL, cur, B * ds->K, ds->OH, ds->OW, 3, 2, 1);
        cur = pool, ri = 1;
    } else if (m->cfg.stem == DINOC_RESNET_STEM_CLIP) {
        dinoc_avgpool2d_forward(ws->rot[3], cur, B * ds->K, ds->OH, ds->OW, 2, 2);
        cur = ws->rot[3], ri = 3;
    }
    for (int b = 0; b < m->n_blocks; b++) {
        const dinoc_resnet_block *blk = &m->blocks[b];
        const float              *in  = cur;
        for (int j = 0; j < blk->nu; j++) {
            const int u = blk->u0 + j;
            /* inference: inner units use rot[ri+1], rot[ri+2]; the block output rot[ri+nu] */
            unit_forward(mm, m, ws, u, in, ACT(u, x, ri + 1 + j), ACT(u, y, ri + 1 + j), j < blk->nu - 1);
            in = ACT(u, y, ri + 1 + j);
            if (j == 1 && blk->pool > 1) {
                /* CLIP (inference only): AvgPool2d(stride) into the free rot[ri+1] */
                const dinoc_conv2d_dims *d = &ws->dims[u];
                dinoc_avgpool2d_forward(ws->rot[(ri + 1) & 3], in, B * d->K, d->OH, d->OW,
                                        blk->pool, blk->pool);
                in = ws->rot[(ri + 1) & 3];
            }
        }
        const int          last = blk->u0 + blk->nu - 1;
        float             *out  = ACT(last, y, ri + blk->nu);
        const float       *sc   = cur;
        if (blk->down >= 0) {
            /* computed last, so in inference rot[ri+1] and rot[ri+2] (inner outputs) are free */
            const float *din = cur;
            int          r   = ri + 1;
            if (blk->pool > 1) {
                const dinoc_conv2d_dims *d = &ws->dims[blk->u0];
                dinoc_avgpool2d_forward(ws->rot[r & 3], cur, B * d->C, d->H, d->W, blk->pool, blk->pool);
                din = ws->rot[r & 3], r = ri + 2;
            }
            unit_forward(mm, m, ws, blk->down, din, ACT(blk->down, x, r), ACT(blk->down, y, r), 0);
            sc = ACT(blk->down, y, r);
        }
        const size_t n = (size_t)B * ws->dims[last].K * ws->dims[last].OH * ws->dims[last].OW;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) out[i] = out[i] + sc[i] > 0.0f ? out[i] + sc[i] : 0.0f;
        cur = out, ri = (ri + blk->nu) & 3;
    }
#undef ACT
    const dinoc_conv2d_dims *d = &ws->dims[m->blocks[m->n_blocks - 1].u0 + m->blocks[m->n_blocks - 1].nu - 1];
    if (m->cfg.stem == DINOC_RESNET_STEM_CLIP) {
        const float *w[4], *b[4];
        for (int i = 0; i < 4; i++) w[i] = m->params + m->ap_off[i][0], b[i] = m->params + m->ap_off[i][1];
        dinoc_attnpool_forward(feats, ws->ap, cur, m->params + m->ap_pos_off, w, b, B,
                               d->OH * d->OW, d->K, m->cfg.heads, m->cfg.out_dim);
    } else {
        dinoc_global_avgpool_forward(feats, cur, B * d->K, d->OH * d->OW);
    }
    if (mm) mm->num_batches_tracked++;
    return DINOC_OK;
}

dinoc_status dinoc_resnet_forward(const dinoc_resnet *m, const float *images, int B, int H, int W,
                                  float *feats, dinoc_resnet_ws *ws) {
    return forward(NULL, m, images, B, H, W, feats, ws);
}

dinoc_status dinoc_resnet_forward_train(dinoc_resnet *m, const float *images, int B, int H, int W,
                                        float *feats, dinoc_resnet_ws *ws) {
    return forward(m, m, images, B, H, W, feats, ws);
}

/* ---- backward ---------------------------------------------------------------------------------- */

/* BN then conv backward of unit u: dout (d of its BN output, after any ReLU mask) -> tmp (d of its
 * conv output) -> dinp += d of its input (NULL: not needed). tmp is zeroed here; with zero_dinp
 * so is dinp, after the BN backward has consumed dout, so dinp may be dout's buffer. */
static void unit_backward(const dinoc_resnet *m, dinoc_resnet_ws *ws, int u, const float *dout,
                          float *tmp, float *dinp, int zero_dinp, float *grads) {
    const dinoc_resnet_unit *un = &m->units[u];
    const dinoc_conv2d_dims *d  = &ws->dims[u];
    const int                hw = d->OH * d->OW;
    memset(tmp, 0, sizeof(float) * (size_t)d->B * d->K * hw);
    dinoc_batchnorm_backward(tmp, grads + un->bnw_off, grads + un->bnb_off, dout, ws->x[u],
                             m->params + un->bnw_off, ws->mean[u], ws->rstd[u], d->B, d->K, hw);
    if (zero_dinp) memset(dinp, 0, sizeof(float) * (size_t)d->B * d->C * d->H * d->W);
    dinoc_conv2d_backward(dinp, grads + un->w_off, NULL, ws->col, tmp, ws->in[u],
                          m->params + un->w_off, d);
}

static size_t act_size(const dinoc_conv2d_dims *d) { return (size_t)d->B * d->K * d->OH * d->OW; }

/* Gradient buffers: g[0] d(block output), g[1] d(block input), g[2] and g[3] inner scratch; each
 * holds the largest activation. Blocks run in reverse; g[0] and g[1] swap after each. */
dinoc_status dinoc_resnet_backward(const dinoc_resnet *m, const float *dfeats, float *grads,
                                   dinoc_resnet_ws *ws) {
    if (!ws || !ws->train)
        return dinoc_fail(DINOC_ERR_ARG, "ResNet backward needs a training workspace");
    float *g[4] = {ws->rot[0], ws->rot[1], ws->rot[2], ws->rot[3]};
    const dinoc_resnet_block *lb   = &m->blocks[m->n_blocks - 1];
    const dinoc_conv2d_dims  *dl   = &ws->dims[lb->u0 + lb->nu - 1];
    memset(g[0], 0, sizeof(float) * act_size(dl));
    dinoc_global_avgpool_backward(g[0], dfeats, ws->B * dl->K, dl->OH * dl->OW);
    for (int b = m->n_blocks - 1; b >= 0; b--) {
        const dinoc_resnet_block *blk  = &m->blocks[b];
        const int                 last = blk->u0 + blk->nu - 1;
        /* through out = relu(main + shortcut): g[0] becomes d(sum), shared by both branches */
        dinoc_relu_backward(g[0], g[0], ws->y[last], act_size(&ws->dims[last]));
        const dinoc_conv2d_dims *d0 = &ws->dims[blk->u0];
        const size_t             nin = (size_t)d0->B * d0->C * d0->H * d0->W;
        if (blk->down >= 0) {
            memset(g[1], 0, sizeof(float) * nin);
            unit_backward(m, ws, blk->down, g[0], g[2], g[1], 0, grads);
        } else {
            memcpy(g[1], g[0], sizeof(float) * nin);
        }
        const float *dcur = g[0];
        for (int j = blk->nu - 1; j >= 0; j--) {
            const int u = blk->u0 + j;
            if (j == 0) {
                unit_backward(m, ws, u, dcur, g[2], g[1], 0, grads);
                break;
            }
            /* d of the previous unit's (ReLU'd) output, then through that ReLU */
            unit_backward(m, ws, u, dcur, g[2], g[3], 1, grads);
            dinoc_relu_backward(g[3], g[3], ws->y[u - 1], act_size(&ws->dims[u - 1]));
            dcur = g[3];
        }
        float *t = g[0];
        g[0] = g[1], g[1] = t;
    }
    /* stem: maxpool, ReLU, BN, conv (no gradient for the images) */
    const dinoc_conv2d_dims *d = &ws->dims[0];
    float                   *dstem = g[0];
    if (m->cfg.stem == DINOC_RESNET_STEM_IMAGENET) {
        memset(g[2], 0, sizeof(float) * act_size(d));
        dinoc_maxpool2d_backward(g[2], g[0], ws->argmax, ws->B * d->K, d->OH, d->OW, ws->pool_h,
                                 ws->pool_w);
        dstem = g[2];
    }
    dinoc_relu_backward(dstem, dstem, ws->y[0], act_size(d));
    unit_backward(m, ws, 0, dstem, dstem == g[2] ? g[3] : g[2], NULL, 0, grads);
    return DINOC_OK;
}

/* ---- fc ------------------------------------------------------------------------------------------ */

dinoc_status dinoc_resnet_fc_forward(const dinoc_resnet *m, const float *feats, float *logits,
                                     int B) {
    if (!m->cfg.num_classes) return dinoc_fail(DINOC_ERR_ARG, "ResNet '%s' has no fc", m->cfg.arch);
    dinoc_linear_forward(logits, feats, m->params + m->fc_w_off, m->params + m->fc_b_off, B,
                         m->feat_dim, m->cfg.num_classes);
    return DINOC_OK;
}

dinoc_status dinoc_resnet_fc_backward(const dinoc_resnet *m, const float *dlogits,
                                      const float *feats, float *dfeats, float *grads, int B) {
    if (!m->cfg.num_classes) return dinoc_fail(DINOC_ERR_ARG, "ResNet '%s' has no fc", m->cfg.arch);
    dinoc_linear_backward(dfeats, grads + m->fc_w_off, grads + m->fc_b_off, dlogits, feats,
                          m->params + m->fc_w_off, B, m->feat_dim, m->cfg.num_classes);
    return DINOC_OK;
}
