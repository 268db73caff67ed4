/* clip_train.c: one contrastive training step of a CLIP model (clip_train.h): both towers'
 * training forwards, the symmetric InfoNCE loss (clip_loss.c), and the backward into the three
 * flat gradient buffers (image tower, text tower, head = visual_projection + logit_scale).
 *
 * The image embedding is visual_projection applied to the CLS row of the tower's final normed
 * tokens, so its gradient enters the tower's backward as a [N, T, Dv] tensor that is zero except on
 * the CLS rows. With the image tower locked (LiT, Zhai et al. 2022) the tower runs its inference
 * forward (no activations kept) and only the new projection behind it learns.
 *
 * Data parallel (src/core/dist.h): each of W ranks runs its towers on its N local pairs, the
 * embeddings of all ranks are gathered into the global batch of W*N rows (rank r's at rows r*N..),
 * and every rank computes the same loss over that global batch, with every global row contrasted
 * against every other (the 1-process loss of the same batch). Each rank back-propagates only its
 * own rows' embedding gradients through its towers; the ranks' gradients then SUM to the
 * 1-process gradient (the trainer allreduces them). The gradient of logit_scale is already the
 * whole batch's on every rank, so only rank 0 adds it. One process: W = 1, the gather is a copy.
 *
 * Hard negatives (negatives = 1, clip_loss.c): the text tower also encodes one negative caption
 * per pair (ids rows N..2N-1); the global text matrix is [all ranks' captions; all ranks'
 * negatives], and the flags of missing negatives are gathered with them.
 *
 * Caption groups (groups != NULL): pairs with equal captions are each other's positives in the
 * loss (clip_train.h); the groups are gathered like the flags. */
#include "clip_train.h"
#include "../core/dist.h"

#include <math.h>
#include <string.h>

struct dinoc_clip_step {
    int                N, S, ctx, locked, T, neg; /* neg: 1 with a hard negative per pair */
    int                world, rank;         /* data parallel: W ranks of N pairs each */
    dinoc_train_state *vts; /* image tower, training (NULL when locked) */
    dinoc_state       *vis; /* image tower, inference (locked only) */
    dinoc_text_state  *tts;
    float             *img, *txt;         /* [N, E] this rank's embeddings */
    float             *gimg, *gtxt;       /* [W N, E] the global batch's */
    float             *dimg, *dtxt;       /* [W N, E], [(1 + neg) W N, E] the loss's gradients */
    float             *dtxt_loc;          /* [(1 + neg) N, E] this rank's rows of dtxt */
    float             *valid, *gvalid;    /* [N], [W N] negatives present (1) or not (0) */
    float             *fgrp, *gfgrp;      /* [N], [W N] caption groups as floats (exact below 2^24) */
    int32_t           *ggrp;              /* [W N] the global batch's caption groups */
    float             *dtok;              /* [N, T, Dv] gradient of the image tower's output */
    dinoc_clip_loss_ws loss;
};

void dinoc_clip_step_free(dinoc_clip_step *w) {
    if (!w) return;
    dinoc_train_state_free(w->vts);
    dinoc_state_free(w->vis);
    dinoc_text_state_free(w->tts);
    dinoc_free(w->img);
    dinoc_free(w->txt);
    dinoc_free(w->gimg);
    dinoc_free(w->gtxt);
    dinoc_free(w->dimg);
    dinoc_free(w->dtxt);
    dinoc_free(w->dtok);
    dinoc_free(w->dtxt_loc);
    dinoc_free(w->valid);
    dinoc_free(w->gvalid);
    dinoc_free(w->fgrp), dinoc_free(w->gfgrp), dinoc_free(w->ggrp);
    dinoc_clip_loss_free(&w->loss);
    free(w);
}

dinoc_status dinoc_clip_step_init(dinoc_clip_step **out, const dinoc_clip *m, int N, int S, int ctx,
                                  int locked, int negatives) {
    *out               = NULL;
    dinoc_clip_step *w = calloc(1, sizeof *w);
    if (!w) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    w->N = N, w->S = S, w->ctx = ctx, w->locked = locked, w->neg = negatives != 0;
    w->world = dinoc_dist_size(), w->rank = dinoc_dist_rank();
    const int    E = m->embed_dim, Dv = m->vision->cfg.dim, NG = N * w->world, NT = (1 + w->neg) * N;
    dinoc_status s = locked ? dinoc_state_init(&w->vis, m->vision, N, S, S, 0)
                            : dinoc_train_state_init(&w->vts, m->vision, N, S, S);
    if (!s) s = dinoc_text_state_init(&w->tts, m->text, NT, ctx, 1);
    if (!s) s = dinoc_clip_loss_init(&w->loss, NG, (1 + w->neg) * NG, E);
    if (!s) {
        if (locked) dinoc_state_dims(w->vis, NULL, &w->T, NULL, NULL, NULL);
        else dinoc_train_state_dims(w->vts, NULL, &w->T, NULL);
        w->img  = dinoc_calloc((size_t)N * E, sizeof(float));
        w->txt  = dinoc_calloc((size_t)NT * E, sizeof(float));
        w->gimg = dinoc_calloc((size_t)NG * E, sizeof(float));
        w->gtxt = dinoc_calloc((size_t)(1 + w->neg) * NG * E, sizeof(float));
        w->dimg = dinoc_calloc((size_t)NG * E, sizeof(float));
        w->dtxt = dinoc_calloc((size_t)(1 + w->neg) * NG * E, sizeof(float));
        w->dtxt_loc = dinoc_calloc((size_t)NT * E, sizeof(float));
        w->valid    = dinoc_calloc((size_t)N, sizeof(float));
        w->gvalid   = dinoc_calloc((size_t)NG, sizeof(float));
        w->fgrp     = dinoc_calloc((size_t)N, sizeof(float));
        w->gfgrp    = dinoc_calloc((size_t)NG, sizeof(float));
        w->ggrp     = dinoc_calloc((size_t)NG, sizeof(int32_t));
        w->dtok = locked ? NULL : dinoc_calloc((size_t)N * w->T * Dv, sizeof(float));
        if (!w->img || !w->txt || !w->gimg || !w->gtxt || !w->dimg || !w->dtxt || !w->dtxt_loc || !w->valid ||
            !w->gvalid || !w->fgrp || !w->gfgrp || !w->ggrp || (!locked && !w->dtok))
            s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory for a CLIP step of %d pairs", N);
    }
    if (s) dinoc_clip_step_free(w);
    else *out = w;
    return s;
}

dinoc_status dinoc_clip_step_set_precision(dinoc_clip_step *w, const dinoc_clip *m, dinoc_precision p) {
    if (w->locked && p != DINOC_PRECISION_FP32)
        return dinoc_fail(DINOC_ERR_ARG, "precision %s: a locked (LiT) image tower is not trained; use fp32",
                          dinoc_precision_name(p));
    return w->locked ? DINOC_OK : dinoc_train_state_set_precision(w->vts, m->vision, p);
}

dinoc_status dinoc_clip_step_run(dinoc_clip_step *w, const dinoc_clip *m, const float *images,
                                 const int32_t *ids, const int32_t *lengths, const uint8_t *neg_valid,
                                 const int32_t *groups, float *gv, float *gt, float *gh, double *loss,
                                 double *acc) {
    const int    N = w->N, E = m->embed_dim, Dv = m->vision->cfg.dim, T = w->T, NG = N * w->world;
    dinoc_status s = w->locked ? dinoc_forward(m->vision, w->vis, images, NULL)
                               : dinoc_vit_forward_train(m->vision, w->vts, images, NULL, NULL, NULL);
    if (!s) s = dinoc_text_forward(m->text, w->tts, ids, lengths);
    if (s) return s;
    const float *tok = w->locked ? dinoc_state_output(w->vis) : dinoc_train_state_output(w->vts);
    dinoc_clip_project_images(m, w->img, tok, N, T);
    const size_t NE = (size_t)N * E, NGE = (size_t)NG * E;
    memcpy(w->txt, dinoc_text_state_pooled(w->tts), sizeof(float) * (1 + w->neg) * NE);
    if ((s = dinoc_dist_allgather_f32(w->img, w->gimg, NE)) || (s = dinoc_dist_allgather_f32(w->txt, w->gtxt, NE)))
        return s;
    if (w->neg) {
        for (int i = 0; i < N; i++) w->valid[i] = neg_valid ? (neg_valid[i] != 0) : 1.0f;
        if ((s = dinoc_dist_allgather_f32(w->txt + NE, w->gtxt + NGE, NE)) ||
            (s = dinoc_dist_allgather_f32(w->valid, w->gvalid, (size_t)N)))
            return s;
    }
    w->loss.group = NULL;
    if (groups) { /* caption groups of the global batch (ids < 2^24 travel exactly as floats) */
        for (int i = 0; i < N; i++) {
            if (groups[i] < 0 || groups[i] >= (1 << 24))
                return dinoc_fail(DINOC_ERR_ARG, "caption group %d of pair %d: must be in [0, 2^24)", (int)groups[i], i);
            w->fgrp[i] = (float)groups[i];
        }
        if ((s = dinoc_dist_allgather_f32(w->fgrp, w->gfgrp, (size_t)N))) return s;
        for (int i = 0; i < NG; i++) w->ggrp[i] = (int32_t)w->gfgrp[i];
        w->loss.group = w->ggrp;
    }
    memset(w->dimg, 0, sizeof(float) * NGE);
    memset(w->dtxt, 0, sizeof(float) * (1 + w->neg) * NGE);
    const float ls = m->head[m->n_head - 1];
    float       dls = 0; /* the whole batch's d loss / d logit_scale, the same on every rank */
    *loss = dinoc_clip_loss(&w->loss, w->dimg, w->dtxt, &dls, w->gimg, w->gtxt, w->neg ? w->gvalid : NULL, ls, acc);
    if (!isfinite(*loss)) return dinoc_fail(DINOC_ERR_NUMERIC, "contrastive loss is %g", *loss);
    if (w->rank == 0) gh[m->n_head - 1] += dls;
    const float *dimg = w->dimg + (size_t)w->rank * NE;
    /* this rank's caption rows (and negative rows) of the global text gradient, side by side */
    memcpy(w->dtxt_loc, w->dtxt + (size_t)w->rank * NE, sizeof(float) * NE);
    if (w->neg) memcpy(w->dtxt_loc + NE, w->dtxt + NGE + (size_t)w->rank * NE, sizeof(float) * NE);
    const float *dtxt = w->dtxt_loc;
    /* projection: emb = cls @ Wp^T -> dWp += demb^T cls, dcls = demb Wp (CLS rows are strided) */
    dinoc_gemm(1, 0, E, Dv, N, 1.0f, dimg, E, tok, T * Dv, 1.0f, gh, Dv);
    s = dinoc_text_backward(m->text, w->tts, NULL, dtxt, gt);
    if (s || w->locked) return s;
    memset(w->dtok, 0, sizeof(float) * (size_t)N * T * Dv);
    dinoc_gemm(0, 0, N, Dv, E, 1.0f, dimg, E, m->head, Dv, 0.0f, w->dtok, T * Dv);
    return dinoc_vit_backward(m->vision, w->vts, w->dtok, gv);
}
