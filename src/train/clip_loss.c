/* clip_loss.c: CLIP's symmetric InfoNCE loss, forward and backward (clip_train.h).
 *
 * Forward: In = I / |I|, Tn = T / |T|, S = In Tn^T, logits = s S with s = exp(logit_scale);
 *   L = (CE(logits, y) + CE(logits^T, y)) / 2 with y the diagonal, CE the row mean (loss.c).
 * Hard negatives (NegCLIP, Yuksekgonul et al. 2023): T has M = 2N rows, the N captions then one
 *   negative caption per pair; the image-to-text term's softmax runs over all M texts (a negative
 *   flagged invalid gets logit -1e30: weight 0), the text-to-image term over the N true captions
 *   only (a negative caption describes no image of the batch).
 * Equal captions (ws->group): each row's target is uniform over its group's pairs (clip_train.h).
 * Backward: dlogits = (dCE(logits) + dCE(logits^T)^T) / 2; d logit_scale = sum(dlogits * logits)
 *   (logits = e^ls S); dIn = s dlogits Tn, dTn = s dlogits^T In; through the normalisation
 *   dI = (dIn - In (In . dIn)) / |I|. No clamp in the forward (HF, open_clip): the trainer clamps
 *   logit_scale to [0, ln 100] after each optimizer step. */
#include "clip_train.h"

#include <math.h>
#include <string.h>

void dinoc_clip_loss_free(dinoc_clip_loss_ws *ws) {
    float *b[] = {ws->in, ws->tn, ws->nrm_i, ws->nrm_t, ws->logits, ws->logits_t, ws->probs, ws->probs_t,
                  ws->dlog, ws->dlog_t, ws->din, ws->dtn};
    
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) dinoc_free(b[i]);
    dinoc_free(ws->target), dinoc_free(ws->group_n);
    memset(ws, 0, sizeof *ws);
}

dinoc_status dinoc_clip_loss_init(dinoc_clip_loss_ws *ws, int N, int M, int E) {
    memset(ws, 0, sizeof *ws);
    if (N < 1 || E < 1 || (M != N && M != 2 * N))
        return dinoc_fail(DINOC_ERR_ARG, "contrastive loss of %d pairs, %d texts, width %d", N, M, E);
    ws->N = N, ws->M = M, ws->E = E;
    const size_t NE = (size_t)N * E, ME = (size_t)M * E, NM = (size_t)N * M, NN = (size_t)N * N;
    int          ok = 1;
#define ALLOC(p, n) ok &= ((p) = dinoc_calloc((n), sizeof(float))) != NULL
    ALLOC(ws->in, NE);
    ALLOC(ws->tn, ME);
    ALLOC(ws->nrm_i, N);
    ALLOC(ws->nrm_t, M);
    ALLOC(ws->logits, NM);
    ALLOC(ws->logits_t, NN);
    ALLOC(ws->probs, NM);
    ALLOC(ws->probs_t, NN);
    ALLOC(ws->dlog, NM);
    ALLOC(ws->dlog_t, NN);
    ALLOC(ws->din, NE);
    ALLOC(ws->dtn, ME);
#undef ALLOC
    ok &= (ws->target = dinoc_calloc((size_t)N, sizeof(int32_t))) != NULL;
    ok &= (ws->group_n = dinoc_calloc((size_t)N, sizeof(int32_t))) != NULL;
    if (!ok) {
        dinoc_clip_loss_free(ws);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for the contrastive loss of %d pairs", N);
    }
    for (int i = 0; i < N; i++) ws->target[i] = i;
    return DINOC_OK;
}

/* dx += (dy - y (y . dy)) / |x| for rows of y = x / |x| (a zero row gets no gradient). */
static void normalize_backward(float *dx, const float *dy, const float *y, const float *nrm, int N, int E) {
    for (int i = 0; i < N; i++) {
        const float *yr = y + (size_t)i * E, *gr = dy + (size_t)i * E;
        double       dot = 0;
        for (int k = 0; k < E; k++) dot += (double)yr[k] * gr[k];
        if (nrm[i] <= 0) continue;
        const float inv = 1.0f / nrm[i];
        for (int k = 0; k < E; k++) dx[(size_t)i * E + k] += (gr[k] - yr[k] * (float)dot) * inv;
    }
}

/* Soft-target cross-entropy of rows [N, M] of logits: row i's target is 1 / n_i on the columns
 * j < N of its group (n_i of them). probs = the row softmax; dlog += scale (probs - target) / N.
 * Returns the mean over rows of -sum_j target_ij log p_ij (log p from the row's log-sum-exp). */
static double group_cross_entropy(float *probs, float *dlog, const float *logits, const int32_t *grp,
                                  const int32_t *gn, int N, int M, float scale) {
    double total = 0;
    for (int i = 0; i < N; i++) {
        const float *l  = logits + (size_t)i * M;
        float       *p  = probs + (size_t)i * M, *d = dlog + (size_t)i * M;
        float        mx = l[0];
        for (int j = 1; j < M; j++) mx = l[j] > mx ? l[j] : mx;
        double sum = 0;
        for (int j = 0; j < M; j++) sum += exp((double)l[j] - mx);
        const double lse = mx + log(sum), t = 1.0 / gn[i];
        double       li  = 0;
        for (int j = 0; j < M; j++) {
            const int pos = j < N && grp[j] == grp[i];
            p[j]          = (float)exp((double)l[j] - lse);
            if (pos) li -= t * ((double)l[j] - lse);
            d[j] += scale * (float)((p[j] - (pos ? t : 0.0)) / N);
        }
        total += li;
    }
    return total / N;
}

double dinoc_clip_loss(dinoc_clip_loss_ws *ws, float *dimg, float *dtxt, float *dscale, const float *img,
                       const float *txt, const float *neg_valid, float logit_scale, double *acc) {
    const int    N = ws->N, M = ws->M, E = ws->E;
    const size_t NE = (size_t)N * E;
    const float  s  = expf(logit_scale);
    memcpy(ws->in, img, sizeof(float) * NE);
    memcpy(ws->tn, txt, sizeof(float) * (size_t)M * E);
    dinoc_clip_normalize(ws->in, ws->nrm_i, N, E);
    dinoc_clip_normalize(ws->tn, ws->nrm_t, M, E);
    dinoc_gemm(0, 1, N, M, E, s, ws->in, E, ws->tn, E, 0.0f, ws->logits, M);
    /* an invalid negative drops out of every softmax: a logit of -1e30 has probability 0 and so an
     * exactly-0 gradient (finite, not -inf: the cross-entropy's smoothing term sums the logits) */
    if (M > N && neg_valid)
        for (int j = 0; j < N; j++)
            if (neg_valid[j] == 0.0f)
                for (int i = 0; i < N; i++) ws->logits[(size_t)i * M + N + j] = -1e30f;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) ws->logits_t[(size_t)j * N + i] = ws->logits[(size_t)i * M + j];
    const int32_t *grp = ws->group;
    memset(ws->dlog, 0, sizeof(float) * (size_t)N * M);
    memset(ws->dlog_t, 0, sizeof(float) * (size_t)N * N);
    double l_img, l_txt;
    if (grp) { /* equal captions: one group of positives (the relation is symmetric: one count) */
        for (int i = 0; i < N; i++) {
            int n = 0;
            for (int j = 0; j < N; j++) n += grp[j] == grp[i];
            ws->group_n[i] = n;
        }
        l_img = group_cross_entropy(ws->probs, ws->dlog, ws->logits, grp, ws->group_n, N, M, 0.5f);
        l_txt = group_cross_entropy(ws->probs_t, ws->dlog_t, ws->logits_t, grp, ws->group_n, N, N, 0.5f);
    } else {
        l_img = dinoc_cross_entropy_forward(ws->probs, ws->logits, ws->target, N, M, 0.0f);
        l_txt = dinoc_cross_entropy_forward(ws->probs_t, ws->logits_t, ws->target, N, N, 0.0f);
        dinoc_cross_entropy_backward(ws->dlog, ws->probs, ws->target, N, M, 0.0f, 0.5f);
        dinoc_cross_entropy_backward(ws->dlog_t, ws->probs_t, ws->target, N, N, 0.0f, 0.5f);
    }
    if (acc) {
        int hit = 0;
        for (int i = 0; i < N; i++) {
            int best = 0;
            for (int j = 1; j < M; j++)
                if (ws->logits[(size_t)i * M + j] > ws->logits[(size_t)i * M + best]) best = j;
            hit += grp ? best < N && grp[best] == grp[i] : best == i;
        }
        *acc = (double)hit / N;
    }
    double ds = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < M; j++) {
            float *d = &ws->dlog[(size_t)i * M + j];
            if (j < N) *d += ws->dlog_t[(size_t)j * N + i];
            ds += (double)*d * ws->logits[(size_t)i * M + j]; /* a masked column adds 0 * -1e30 = 0 */
        }
    if (dscale) *dscale += (float)ds;
    /* dIn = s dlog Tn, dTn = s dlog^T In */
    dinoc_gemm(0, 0, N, E, M, s, ws->dlog, M, ws->tn, E, 0.0f, ws->din, E);
    dinoc_gemm(1, 0, M, E, N, s, ws->dlog, M, ws->in, E, 0.0f, ws->dtn, E);
    if (dimg) normalize_backward(dimg, ws->din, ws->in, ws->nrm_i, N, E);
    if (dtxt) normalize_backward(dtxt, ws->dtn, ws->tn, ws->nrm_t, M, E);
    return 0.5 * (l_img + l_txt);
}
