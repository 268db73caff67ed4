/* clip_train.c: one contrastive training step of a CLIP model (clip_train.h): both towers'
 * training forwards, the symmetric InfoNCE loss (clip_loss.c), and the backward into the three
 * flat gradient buffers (image tower, text tower, head = visual_projection + logit_scale).
 *
 * The image embedding is visual_projection applied to the CLS row of the tower's final normed
 * tokens, so its gradient enters the tower's backward as a [N, T, Dv] tensor that is zero except on
 * the CLS rows. With the image tower locked (LiT, Zhai et al. 2022) the tower runs its inference
 * forward (no activations kept) and only the new projection behind it learns. */
#include "clip_train.h"

#include <math.h>
#include <string.h>

struct dinoc_clip_step {
    int                N, S, ctx, locked, T;
    dinoc_train_state *vts; /* image tower, training (NULL when locked) */
    dinoc_state       *vis; /* image tower, inference (locked only) */
    dinoc_text_state  *tts;
    float             *img, *dimg, *dtxt; /* [N, E] */
    float             *dtok;              /* [N, T, Dv] gradient of the image tower's output */
    dinoc_clip_loss_ws loss;
};

void dinoc_clip_step_free(dinoc_clip_step *w) {
    if (!w) return;
    dinoc_train_state_free(w->vts);
    dinoc_state_free(w->vis);
    dinoc_text_state_free(w->tts);
    dinoc_free(w->img);
    dinoc_free(w->dimg);
    dinoc_free(w->dtxt);
    dinoc_free(w->dtok);
    dinoc_clip_loss_free(&w->loss);
    free(w);
}

dinoc_status dinoc_clip_step_init(dinoc_clip_step **out, const dinoc_clip *m, int N, int S, int ctx,
                                  int locked) {
    *out               = NULL;
    dinoc_clip_step *w = calloc(1, sizeof *w);
    if (!w) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    w->N = N, w->S = S, w->ctx = ctx, w->locked = locked;
    const int    E = m->embed_dim, Dv = m->vision->cfg.dim;
    dinoc_status s = locked ? dinoc_state_init(&w->vis, m->vision, N, S, S, 0)
                            : dinoc_train_state_init(&w->vts, m->vision, N, S, S);
    if (!s) s = dinoc_text_state_init(&w->tts, m->text, N, ctx, 1);
    if (!s) s = dinoc_clip_loss_init(&w->loss, N, E);
    if (!s) {
        if (locked) dinoc_state_dims(w->vis, NULL, &w->T, NULL, NULL, NULL);
        else dinoc_train_state_dims(w->vts, NULL, &w->T, NULL);
        w->img  = dinoc_calloc((size_t)N * E, sizeof(float));
        w->dimg = dinoc_calloc((size_t)N * E, sizeof(float));
        w->dtxt = dinoc_calloc((size_t)N * E, sizeof(float));
        w->dtok = locked ? NULL : dinoc_calloc((size_t)N * w->T * Dv, sizeof(float));
        if (!w->img || !w->dimg || !w->dtxt || (!locked && !w->dtok))
            s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory for a CLIP step of %d pairs", N);
    }
    if (s) dinoc_clip_step_free(w);
    else *out = w;
    return s;
}

dinoc_status dinoc_clip_step_run(dinoc_clip_step *w, const dinoc_clip *m, const float *images,
                                 const int32_t *ids, const int32_t *lengths, float *gv, float *gt,
                                 float *gh, double *loss, double *acc) {
    const int    N = w->N, E = m->embed_dim, Dv = m->vision->cfg.dim, T = w->T;
    dinoc_status s = w->locked ? dinoc_forward(m->vision, w->vis, images, NULL)
                               : dinoc_vit_forward_train(m->vision, w->vts, images, NULL, NULL, NULL);
    if (!s) s = dinoc_text_forward(m->text, w->tts, ids, lengths);
    if (s) return s;
    const float *tok = w->locked ? dinoc_state_output(w->vis) : dinoc_train_state_output(w->vts);
    dinoc_clip_project_images(m, w->img, tok, N, T);
    memset(w->dimg, 0, sizeof(float) * (size_t)N * E);
    memset(w->dtxt, 0, sizeof(float) * (size_t)N * E);
    const float ls = m->head[m->n_head - 1];
    *loss = dinoc_clip_loss(&w->loss, w->dimg, w->dtxt, gh + m->n_head - 1, w->img,
                            dinoc_text_state_pooled(w->tts), ls, acc);
    if (!isfinite(*loss)) return dinoc_fail(DINOC_ERR_NUMERIC, "contrastive loss is %g", *loss);
    /* projection: emb = cls @ Wp^T -> dWp += demb^T cls, dcls = demb Wp (CLS rows are strided) */
    dinoc_gemm(1, 0, E, Dv, N, 1.0f, w->dimg, E, tok, T * Dv, 1.0f, gh, Dv);
    s = dinoc_text_backward(m->text, w->tts, NULL, w->dtxt, gt);
    if (s || w->locked) return s;
    memset(w->dtok, 0, sizeof(float) * (size_t)N * T * Dv);
    dinoc_gemm(0, 0, N, Dv, E, 1.0f, w->dimg, E, m->head, Dv, 0.0f, w->dtok, T * Dv);
    return dinoc_vit_backward(m->vision, w->vts, w->dtok, gv);
}
