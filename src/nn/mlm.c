/* mlm.c: BERT masked-language modelling: token selection (HF's per-token Bernoulli rule, not
 * original BERT's exact count: both are in the reference; the collator is what current training
 * code uses) and the prediction head with its tied decoder, forward and backward.
 *
 * Dims: n selected rows, D width, V vocabulary. The head's parameters sit in the text model's
 * flat buffer (text.h, mlm_head = 1), so one optimizer step covers encoder and head, and the
 * decoder's gradient adds into the token-embedding rows like the input side's does.
 * Tested by tests/test_text.c (parity of loss and every gradient with tests/py/gen_text.py; the
 * selection statistics over many draws). */
#include "mlm.h"

#include <math.h>
#include <string.h>

dinoc_mlm_mask_params dinoc_mlm_mask_default(int32_t mask_id, int vocab) {
    dinoc_mlm_mask_params p = {0.15f, 0.8f, 0.1f, mask_id, vocab, NULL, 0};
    return p;
}

static int is_never(const dinoc_mlm_mask_params *mp, int32_t id) {
    for (int i = 0; i < mp->n_never; i++)
        if (mp->never[i] == id) return 1;
    return 0;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int dinoc_mlm_mask(int32_t *ids, int32_t *positions, int32_t *targets, int cap,
                   const int32_t *lengths, int B, int T, const dinoc_mlm_mask_params *mp,
                   dinoc_rng *rng) {
    int n = 0, seen = 0;
    /* selection; beyond cap, reservoir sampling keeps a uniform subset of the selected rows */
    for (int b = 0; b < B; b++) {
        const int len = lengths ? lengths[b] : T;
        for (int t = 0; t < len && t < T; t++) {
            const int32_t r = b * T + t;
            if (is_never(mp, ids[r]) || !(dinoc_rng_uniform(rng) < mp->select_p)) continue;
            if (n < cap) positions[n++] = r;
            else {
                uint64_t j = dinoc_rng_u64(rng) % (uint64_t)(seen + 1);
                if (j < (uint64_t)cap) positions[j] = r;
            }
            seen++;
        }
    }
    qsort(positions, (size_t)n, sizeof *positions, cmp_i32);
    /* replacement: mask_p -> [MASK], random_p -> a uniform id, the rest unchanged */
    for (int i = 0; i < n; i++) {
        const int32_t r = positions[i];
        const float   u = dinoc_rng_uniform(rng);
        targets[i]      = ids[r];
        if (u < mp->mask_p) ids[r] = mp->mask_id;
        else if (u < mp->mask_p + mp->random_p && mp->vocab > 0)
            ids[r] = (int32_t)(dinoc_rng_u64(rng) % (uint64_t)mp->vocab);
    }
    return n;
}

struct dinoc_mlm_state {
    int      cap, n, D, V;
    int32_t *pos, *tgt;      /* [cap] the last forward's rows and targets */
    float   *g;              /* [cap, D] gathered hidden rows */
    float   *h;              /* [cap, D] dense output (before the activation) */
    float   *a;              /* [cap, D] activation */
    float   *y, *ym, *yr;    /* [cap, D] LN output, its mean and rstd [cap] */
    float   *logits, *probs; /* [cap, V] */
    float   *dl;             /* [cap, V] dlogits */
    float   *d1, *d2;        /* [cap, D] backward scratch */
};

void dinoc_mlm_state_free(dinoc_mlm_state *s) {
    if (!s) return;
    void *bufs[] = {s->pos, s->tgt, s->g, s->h, s->a, s->y, s->ym, s->yr, s->logits, s->probs,
                    s->dl, s->d1, s->d2};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dinoc_free(bufs[i]);
    free(s);
}

dinoc_status dinoc_mlm_state_init(dinoc_mlm_state **out, const dinoc_text_model *m, int cap) {
    *out = NULL;
    if (!m->cfg.mlm_head) return dinoc_fail(DINOC_ERR_ARG, "this text model has no MLM head");
    if (cap <= 0 || cap > 1 << 24) return dinoc_fail(DINOC_ERR_ARG, "MLM capacity %d out of range", cap);
    dinoc_mlm_state *s = calloc(1, sizeof *s);
    if (!s) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    s->cap = cap, s->D = m->cfg.dim, s->V = m->cfg.vocab;
    const size_t N = (size_t)cap, D = s->D, V = s->V;
    int          ok = 1;
#define ALLOC(ptr, k, sz) ok &= ((ptr) = dinoc_calloc((k), (sz))) != NULL
    ALLOC(s->pos, N, sizeof(int32_t));
    ALLOC(s->tgt, N, sizeof(int32_t));
    float **nd[] = {&s->g, &s->h, &s->a, &s->y, &s->d1, &s->d2};
    for (size_t i = 0; i < sizeof nd / sizeof nd[0]; i++) ALLOC(*nd[i], N * D, sizeof(float));
    ALLOC(s->ym, N, sizeof(float));
    ALLOC(s->yr, N, sizeof(float));
    ALLOC(s->logits, N * V, sizeof(float));
    ALLOC(s->probs, N * V, sizeof(float));
    ALLOC(s->dl, N * V, sizeof(float));
#undef ALLOC
    if (!ok) {
        dinoc_mlm_state_free(s);
        return dinoc_fail(DINOC_ERR_NOMEM, "cannot allocate MLM logits for %d positions x %zu ids", cap, V);
    }
    *out = s;
    return DINOC_OK;
}

const float *dinoc_mlm_state_logits(const dinoc_mlm_state *s) { return s->logits; }

dinoc_status dinoc_mlm_forward(const dinoc_text_model *m, dinoc_mlm_state *s, const float *hidden,
                               int rows, const int32_t *positions, const int32_t *targets, int n,
                               double *loss, double *accuracy) {
    const dinoc_text_params *p = &m->p;
    const int                D = s->D, V = s->V;
    if (n < 0 || n > s->cap)
        return dinoc_fail(DINOC_ERR_ARG, "%d MLM positions for a state of capacity %d", n, s->cap);
    for (int i = 0; i < n; i++) {
        if (targets[i] < 0 || targets[i] >= V || positions[i] < 0 || positions[i] >= rows)
            return dinoc_fail(DINOC_ERR_ARG, "MLM position %d: row %d (of %d) or target %d (of %d) "
                              "out of range", i, positions[i], rows, targets[i], V);
        s->pos[i] = positions[i], s->tgt[i] = targets[i];
        memcpy(s->g + (size_t)i * D, hidden + (size_t)positions[i] * D, sizeof(float) * D);
    }
    s->n = n;
    if (loss) *loss = 0;
    if (accuracy) *accuracy = 0;
    if (!n) return DINOC_OK;
    dinoc_linear_forward(s->h, s->g, p->mlm_w, p->mlm_b, n, D, D);
    dinoc_text_act_forward(&m->cfg, s->a, s->h, (size_t)n * D);
    dinoc_layernorm_forward(s->y, s->ym, s->yr, s->a, p->mlm_ln_w, p->mlm_ln_b, n, D, m->cfg.ln_eps);
    dinoc_linear_forward(s->logits, s->y, p->tok, p->mlm_bias, n, D, V); /* tied decoder */
    const double l = dinoc_cross_entropy_forward(s->probs, s->logits, s->tgt, n, V, 0.0f);
    int          hit = 0;
    for (int i = 0; i < n; i++) {
        const float *r    = s->logits + (size_t)i * V;
        int          best = 0;
        for (int k = 1; k < V; k++) best = r[k] > r[best] ? k : best;
        hit += best == s->tgt[i];
    }
    if (loss) *loss = l;
    if (accuracy) *accuracy = (double)hit / n;
    return DINOC_OK;
}

dinoc_status dinoc_mlm_backward(const dinoc_text_model *m, dinoc_mlm_state *s, float *dhidden,
                                float *grads) {
    const dinoc_text_params *p = &m->p;
    const int                n = s->n, D = s->D, V = s->V;
    if (!n) return DINOC_OK;
    dinoc_text_params g; /* views of the head (and token table) in grads; blocks not needed */
    g.blocks = NULL;
    dinoc_text_carve(&m->cfg, grads, &g);
    memset(s->dl, 0, sizeof(float) * (size_t)n * V);
    dinoc_cross_entropy_backward(s->dl, s->probs, s->tgt, n, V, 0.0f, 1.0f);
    memset(s->d1, 0, sizeof(float) * (size_t)n * D);
    dinoc_linear_backward(s->d1, g.tok, g.mlm_bias, s->dl, s->y, p->tok, n, D, V);
    memset(s->d2, 0, sizeof(float) * (size_t)n * D);
    dinoc_layernorm_backward(s->d2, g.mlm_ln_w, g.mlm_ln_b, s->d1, s->a, p->mlm_ln_w, s->ym, s->yr, n, D);
    memset(s->d1, 0, sizeof(float) * (size_t)n * D);
    dinoc_text_act_backward(&m->cfg, s->d1, s->d2, s->h, (size_t)n * D);
    memset(s->d2, 0, sizeof(float) * (size_t)n * D);
    dinoc_linear_backward(s->d2, g.mlm_w, g.mlm_b, s->d1, s->g, p->mlm_w, n, D, D);
    /* scatter in order (a repeated row just adds twice) */
    for (int i = 0; i < n; i++) {
        float       *dst = dhidden + (size_t)s->pos[i] * D;
        const float *src = s->d2 + (size_t)i * D;
        for (int d = 0; d < D; d++) dst[d] += src[d];
    }
    return DINOC_OK;
}
