/* text.c: the text transformers of text.h (CLIP's causal pre-norm tower, BERT's post-norm encoder):
 * layout, activations, the forward pass (inference and training) and its backward.
 *
 * Dims: B sequences, T tokens, D width, NH heads, F FFN width, V vocabulary, P pooled width.
 * One forward serves both uses: an inference state keeps one slot per saved activation (and two
 * for the residual stream, used in turn); a training state keeps one per layer, which the
 * backward (the forward read bottom-up, llm.c style) reads. Backward ACCUMULATES into the flat
 * grads buffer, so a caller zeroes it once per step.
 *
 * Choices where the reference systems differ (docs/text.md):
 * - EOT pooling: eot_id < 0 pools at the first maximum of the ids (openai/CLIP, and HF for the
 *   legacy configs whose eos_token_id is 2); eot_id >= 0 at its first occurrence within the length
 *   (HF with a current config), the last real token if it is absent.
 * - CLIP gets the key-padding mask too when lengths are given (HF with attention_mask); rows before
 *   the EOT are unchanged by it, since the causal mask already hides later keys.
 * - BERT adds token type 0's embedding everywhere (single-segment input, HF's default).
 * - Sinusoidal positions: PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(same), computed in
 *   double and rounded to float (Vaswani et al.; interleaved, not concatenated halves).
 * Tested by tests/test_text.c against tests/py/gen_text.py. */
#include "text.h"

#include <math.h>
#include <string.h>

/* ---- configuration and layout ----------------------------------------------------------------- */

dinoc_status dinoc_text_config_check(const dinoc_text_config *c, const char *where) {
    /* each failed requirement names the field, prefixed by where */
#define REQ(cond, ...) do { if (!(cond)) return dinoc_fail_prefix(dinoc_fail(DINOC_ERR_CONFIG, __VA_ARGS__), "%s", where); } while (0)
    REQ(c->kind == DINOC_TEXT_CLIP || c->kind == DINOC_TEXT_BERT, "unknown text kind %d", c->kind);
    REQ(c->vocab > 0 && c->vocab <= 1 << 22, "vocab_size %d out of range", c->vocab);
    REQ(c->max_pos > 0 && c->max_pos <= 1 << 16, "max_position_embeddings %d out of range", c->max_pos);
    REQ(c->dim > 0 && c->dim <= 65536, "hidden_size %d out of range", c->dim);
    REQ(c->layers > 0 && c->layers <= 1024, "num_hidden_layers %d out of range", c->layers);
    REQ(c->heads > 0 && c->dim % c->heads == 0, "%d heads do not divide hidden_size %d", c->heads,
        c->dim);
    REQ(c->ffn > 0 && c->ffn <= 1 << 20, "intermediate_size %d out of range", c->ffn);
    REQ(c->act == DINOC_TEXT_GELU || c->act == DINOC_TEXT_QUICK_GELU, "unknown activation %d", c->act);
    REQ(c->pos == DINOC_TEXT_POS_LEARNED || c->pos == DINOC_TEXT_POS_SINUSOIDAL,
        "unknown position kind %d", c->pos);
    REQ(c->ln_eps > 0 && c->ln_eps < 1, "layer_norm_eps %g out of range", c->ln_eps);
    REQ(c->proj_dim >= 0 && c->proj_dim <= 65536, "projection_dim %d out of range", c->proj_dim);
    REQ(c->type_vocab >= 0 && c->type_vocab <= 1024, "type_vocab_size %d out of range", c->type_vocab);
    REQ(c->kind == DINOC_TEXT_BERT || (!c->type_vocab && !c->mlm_head),
        "token types and the MLM head belong to BERT models");
    REQ(c->kind == DINOC_TEXT_CLIP || !c->proj_dim, "text_projection belongs to CLIP models");
    REQ(c->eot_id < c->vocab, "eos_token_id %d outside the vocabulary of %d", c->eot_id, c->vocab);
#undef REQ
    return DINOC_OK;
}

size_t dinoc_text_carve(const dinoc_text_config *c, float *base, dinoc_text_params *p) {
    /* the one place that fixes the order of parameters in the flat buffer */
    const size_t      D = c->dim, F = c->ffn, V = c->vocab;
    const int         bert = c->kind == DINOC_TEXT_BERT;
    size_t            off  = 0;
    dinoc_text_params dummy;
    dinoc_text_block  bdummy;
    if (!p) p = &dummy, p->blocks = NULL;
#define TAKE(n) (off += (n), base ? base + off - (n) : NULL)
    p->tok      = TAKE(V * D);
    p->pos      = c->pos == DINOC_TEXT_POS_LEARNED ? TAKE((size_t)c->max_pos * D) : NULL;
    p->type     = c->type_vocab ? TAKE((size_t)c->type_vocab * D) : NULL;
    p->emb_ln_w = bert ? TAKE(D) : NULL;
    p->emb_ln_b = bert ? TAKE(D) : NULL;
    for (int l = 0; l < c->layers; l++) {
        dinoc_text_block *b = p->blocks ? &p->blocks[l] : &bdummy;
        b->qkv_w  = TAKE(3 * D * D);
        b->qkv_b  = TAKE(3 * D);
        b->proj_w = TAKE(D * D);
        b->proj_b = TAKE(D);
        b->ln1_w  = TAKE(D);
        b->ln1_b  = TAKE(D);
        b->fc1_w  = TAKE(F * D);
        b->fc1_b  = TAKE(F);
        b->fc2_w  = TAKE(D * F);
        b->fc2_b  = TAKE(D);
        b->ln2_w  = TAKE(D);
        b->ln2_b  = TAKE(D);
    }
    p->fin_ln_w = bert ? NULL : TAKE(D);
    p->fin_ln_b = bert ? NULL : TAKE(D);
    p->proj     = c->proj_dim ? TAKE((size_t)c->proj_dim * D) : NULL;
    p->mlm_w    = c->mlm_head ? TAKE(D * D) : NULL;
    p->mlm_b    = c->mlm_head ? TAKE(D) : NULL;
    p->mlm_ln_w = c->mlm_head ? TAKE(D) : NULL;
    p->mlm_ln_b = c->mlm_head ? TAKE(D) : NULL;
    p->mlm_bias = c->mlm_head ? TAKE(V) : NULL;
#undef TAKE
    return off;
}

dinoc_status dinoc_text_alloc(dinoc_text_model **out, const dinoc_text_config *cfg) {
    *out           = NULL;
    dinoc_status s = dinoc_text_config_check(cfg, "text model config");
    if (s) return s;
    dinoc_text_model *m = calloc(1, sizeof *m);
    if (!m) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for the text model");
    m->cfg            = *cfg;
    m->blocks_storage = calloc((size_t)cfg->layers, sizeof(dinoc_text_block));
    const size_t n    = dinoc_text_carve(cfg, NULL, NULL);
    m->n_params       = n;
    m->params         = dinoc_calloc(n, sizeof(float));
    if (!m->blocks_storage || !m->params) {
        dinoc_text_free(m);
        return dinoc_fail(DINOC_ERR_NOMEM, "cannot allocate %zu text-model parameters", n);
    }
    m->p.blocks = m->blocks_storage;
    dinoc_text_carve(cfg, m->params, &m->p);
    *out = m;
    return DINOC_OK;
}

void dinoc_text_free(dinoc_text_model *m) {
    if (!m) return;
    dinoc_free(m->params);
    free(m->blocks_storage);
    free(m);
}

/* QuickGELU lives in src/ops/activation.c (shared with CLIP's image tower). */
void dinoc_text_act_forward(const dinoc_text_config *c, float *out, const float *inp, size_t n) {
    if (c->act == DINOC_TEXT_QUICK_GELU) dinoc_quick_gelu_forward(out, inp, n);
    else dinoc_gelu_forward(out, inp, n);
}

void dinoc_text_act_backward(const dinoc_text_config *c, float *dinp, const float *dout,
                             const float *inp, size_t n) {
    if (c->act == DINOC_TEXT_QUICK_GELU) dinoc_quick_gelu_backward(dinp, dout, inp, n);
    else dinoc_gelu_backward(dinp, dout, inp, n);
}

/* ---- state ------------------------------------------------------------------------------------ */

struct dinoc_text_state {
    int     B, T, D, F, NH, L, P, nthreads, train;
    size_t  BT;
    int32_t *ids, *len, *pool; /* [BT] [B] [B]: the last forward's inputs and pooled positions */
    float   *emb, *emb_m, *emb_r; /* BERT: [BT, D] embedding sum before LN_emb, its stats [BT] */
    float   *x;              /* [Lx, BT, D] residual stream: block inputs (train Lx = L + 1, else 2) */
    /* per layer (train: L slots, else 1). CLIP: n1 = LN1(x), pre2 = x + attn, n2 = LN2(pre2);
     * BERT: pre1 = x + attn, n1 = LN1(pre1), pre2 = n1 + FFN (its LN2 is the next block input) */
    float   *n1, *m1, *r1;   /* [.., BT, D], [.., BT], [.., BT] */
    float   *pre1;           /* BERT only */
    float   *qkv;            /* [.., BT, 3D] */
    float   *att;            /* [.., B, NH, T, T] (train only) */
    float   *ctx;            /* [.., BT, D] heads concatenated */
    float   *pre2, *m2, *r2;
    float   *n2;             /* CLIP only */
    float   *h1;             /* [.., BT, F] fc1 output (before the activation) */
    float   *act;            /* [BT, F] activation (recomputed in the backward) */
    float   *br;             /* [BT, D] branch output */
    float   *fin, *mf, *rf;  /* CLIP: [BT, D] final LN output and its stats */
    float   *pooled_in;      /* [B, D] rows at the pooled positions */
    float   *pooled;         /* [B, P] */
    float   *sin_pos;        /* [T, D] sinusoidal positions or NULL */
    float   *att_scratch;
    /* backward scratch (train only) */
    float *dx, *dln, *dbr, *dqkv, *dctx, *dh1, *dact, *dpin, *attb_scratch;
};

void dinoc_text_state_free(dinoc_text_state *s) {
    if (!s) return;
    void *bufs[] = {s->ids, s->len, s->pool, s->emb, s->emb_m, s->emb_r, s->x, s->n1, s->m1, s->r1,
                    s->pre1, s->qkv, s->att, s->ctx, s->pre2, s->m2, s->r2, s->n2, s->h1, s->act,
                    s->br, s->fin, s->mf, s->rf, s->pooled_in, s->pooled, s->sin_pos,
                    s->att_scratch, s->dx, s->dln, s->dbr, s->dqkv, s->dctx, s->dh1, s->dact,
                    s->dpin, s->attb_scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dinoc_free(bufs[i]);
    free(s);
}

dinoc_status dinoc_text_state_init(dinoc_text_state **out, const dinoc_text_model *m, int B, int T,
                                   int train) {
    *out                       = NULL;
    const dinoc_text_config *c = &m->cfg;
    if (B <= 0 || B > 1 << 20 || T <= 0 || T > c->max_pos)
        return dinoc_fail(DINOC_ERR_ARG, "text batch %d x %d tokens: need B >= 1 and 1 <= T <= %d",
                          B, T, c->max_pos);
    /* every size below is a product of B*T (or B*NH*T*T) and a config factor: bound them first so
     * none can wrap around */
    size_t natt = 0;
    if ((size_t)B * T > (1u << 26) ||
        !dinoc_mul_size((size_t)B * c->heads * T, (size_t)T * (train ? c->layers : 1), &natt))
        return dinoc_fail(DINOC_ERR_ARG, "text batch %d x %d tokens is too large", B, T);
    dinoc_text_state *s = calloc(1, sizeof *s);
    if (!s) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for the text state");
    s->B = B, s->T = T, s->D = c->dim, s->F = c->ffn, s->NH = c->heads, s->L = c->layers;
    s->P = c->proj_dim ? c->proj_dim : c->dim, s->train = train != 0, s->BT = (size_t)B * T;
    s->nthreads = dinoc_get_threads();
    const int    bert = c->kind == DINOC_TEXT_BERT;
    const size_t BT = s->BT, D = s->D, F = s->F, NL = train ? (size_t)s->L : 1, HS = D / s->NH;
    int          ok = 1;
#define ALLOC(ptr, n, sz) ok &= ((ptr) = dinoc_calloc((n), (sz))) != NULL
#define ALLOCF(ptr, n) ALLOC(ptr, n, sizeof(float))
    ALLOC(s->ids, BT, sizeof(int32_t));
    ALLOC(s->len, (size_t)B, sizeof(int32_t));
    ALLOC(s->pool, (size_t)B, sizeof(int32_t));
    if (bert) {
        ALLOCF(s->emb, BT * D);
        ALLOCF(s->emb_m, BT);
        ALLOCF(s->emb_r, BT);
        ALLOCF(s->pre1, NL * BT * D);
    } else {
        ALLOCF(s->n2, NL * BT * D);
        ALLOCF(s->fin, BT * D);
        ALLOCF(s->mf, BT);
        ALLOCF(s->rf, BT);
    }
    ALLOCF(s->x, (train ? (size_t)s->L + 1 : 2) * BT * D);
    ALLOCF(s->n1, NL * BT * D);
    ALLOCF(s->m1, NL * BT);
    ALLOCF(s->r1, NL * BT);
    ALLOCF(s->qkv, NL * BT * 3 * D);
    if (train) ALLOCF(s->att, natt);
    ALLOCF(s->ctx, NL * BT * D);
    ALLOCF(s->pre2, NL * BT * D);
    ALLOCF(s->m2, NL * BT);
    ALLOCF(s->r2, NL * BT);
    ALLOCF(s->h1, NL * BT * F);
    ALLOCF(s->act, BT * F);
    ALLOCF(s->br, BT * D);
    ALLOCF(s->pooled_in, (size_t)B * D);
    ALLOCF(s->pooled, (size_t)B * s->P);
    if (c->pos == DINOC_TEXT_POS_SINUSOIDAL) ALLOCF(s->sin_pos, (size_t)T * D);
    ALLOCF(s->att_scratch, (size_t)s->nthreads * dinoc_attention_scratch_floats(T, (int)HS));
    if (train) {
        ALLOCF(s->dx, BT * D);
        ALLOCF(s->dln, BT * D);
        ALLOCF(s->dbr, BT * D);
        ALLOCF(s->dqkv, BT * 3 * D);
        ALLOCF(s->dctx, BT * D);
        ALLOCF(s->dh1, BT * F);
        ALLOCF(s->dact, BT * F);
        ALLOCF(s->dpin, (size_t)B * D);
        ALLOCF(s->attb_scratch,
               (size_t)s->nthreads * dinoc_attention_backward_scratch_floats(T, (int)HS));
    }
#undef ALLOCF
#undef ALLOC
    if (!ok) {
        dinoc_text_state_free(s);
        return dinoc_fail(DINOC_ERR_NOMEM, "cannot allocate text activations for %d x %d tokens", B, T);
    }
    if (s->sin_pos)
        for (int t = 0; t < T; t++)
            for (size_t i = 0; i < D; i += 2) {
                const double a = t / pow(10000.0, (double)i / (double)D);
                s->sin_pos[(size_t)t * D + i] = (float)sin(a);
                if (i + 1 < D) s->sin_pos[(size_t)t * D + i + 1] = (float)cos(a);
            }
    *out = s;
    return DINOC_OK;
}

/* The residual stream's slot l, and the per-layer slot of layer l. */
static float *xs(const dinoc_text_state *s, int l) {
    return s->x + (size_t)(s->train ? l : l % 2) * s->BT * s->D;
}
static size_t slot(const dinoc_text_state *s, int l) { return s->train ? (size_t)l : 0; }

const float *dinoc_text_state_hidden(const dinoc_text_state *s) { return s->fin ? s->fin : xs(s, s->L); }
const float *dinoc_text_state_pooled(const dinoc_text_state *s) { return s->pooled; }
const int32_t *dinoc_text_state_pool_index(const dinoc_text_state *s) { return s->pool; }

/* ---- forward ---------------------------------------------------------------------------------- */

/* x[r] = a[r] + b[r] over n floats (the residual adds) */
static void add_into(float *x, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = a[i] + b[i];
}

/* Position of the pooled row of sequence b (see the file comment). */
static int32_t pool_position(const dinoc_text_config *c, const int32_t *ids, int len) {
    if (c->kind == DINOC_TEXT_BERT) return 0;
    int32_t best = 0;
    for (int t = 0; t < len; t++) {
        if (c->eot_id >= 0 && ids[t] == c->eot_id) return t;
        if (c->eot_id < 0 && ids[t] > ids[best]) best = t;
    }
    return c->eot_id >= 0 ? len - 1 : best;
}

dinoc_status dinoc_text_forward(const dinoc_text_model *m, dinoc_text_state *s, const int32_t *ids,
                                const int32_t *lengths) {
    const dinoc_text_config *c = &m->cfg;
    const dinoc_text_params *p = &m->p;
    const int B = s->B, T = s->T, D = s->D, F = s->F, BT = (int)s->BT, bert = c->kind == DINOC_TEXT_BERT;
    const size_t BTD = s->BT * D;
    if (s->nthreads < dinoc_get_threads())
        return dinoc_fail(DINOC_ERR_ARG, "the thread count grew after the text state was made");
    for (int b = 0; b < B; b++) {
        const int n = lengths ? lengths[b] : T;
        if (n < 1 || n > T)
            return dinoc_fail(DINOC_ERR_ARG, "sequence %d: length %d outside [1, %d]", b, n, T);
        s->len[b] = n;
    }
    for (size_t i = 0; i < s->BT; i++) {
        if (ids[i] < 0 || ids[i] >= c->vocab)
            return dinoc_fail(DINOC_ERR_ARG, "sequence %zu, position %zu: token id %d outside [0, %d)",
                              i / T, i % T, ids[i], c->vocab);
        s->ids[i] = ids[i];
    }
    /* embeddings: token + position (+ type 0, then LN_emb for BERT) */
    const float *pos = p->pos ? p->pos : s->sin_pos;
    float       *e   = bert ? s->emb : xs(s, 0);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < BT; r++) {
        const float *tk = p->tok + (size_t)s->ids[r] * D, *ps = pos + (size_t)(r % T) * D;
        float       *er = e + (size_t)r * D;
        for (int d = 0; d < D; d++) er[d] = tk[d] + ps[d] + (p->type ? p->type[d] : 0.0f);
    }
    if (bert)
        dinoc_layernorm_forward(xs(s, 0), s->emb_m, s->emb_r, e, p->emb_ln_w, p->emb_ln_b, BT, D,
                                c->ln_eps);
    const dinoc_attn_mask mask = {!bert, s->len};
    for (int l = 0; l < s->L; l++) {
        const dinoc_text_block *bp = &p->blocks[l];
        const size_t            k = slot(s, l);
        float *x = xs(s, l), *xo = xs(s, l + 1), *n1 = s->n1 + k * BTD, *qkv = s->qkv + k * 3 * BTD;
        float *ctx = s->ctx + k * BTD, *pre2 = s->pre2 + k * BTD, *h1 = s->h1 + k * s->BT * F;
        float *att = s->att ? s->att + k * (size_t)B * s->NH * T * T : NULL;
        float *m1 = s->m1 + k * s->BT, *r1 = s->r1 + k * s->BT, *m2 = s->m2 + k * s->BT, *r2 = s->r2 + k * s->BT;
        if (!bert) {
            /* pre-norm: x + attn(LN1 x), then + fc2(act(fc1(LN2 .))) */
            float *n2 = s->n2 + k * BTD;
            dinoc_layernorm_forward(n1, m1, r1, x, bp->ln1_w, bp->ln1_b, BT, D, c->ln_eps);
            dinoc_linear_forward(qkv, n1, bp->qkv_w, bp->qkv_b, BT, D, 3 * D);
            dinoc_attention_forward_masked(ctx, att, qkv, &mask, B, T, D, s->NH, s->att_scratch, s->nthreads);
            dinoc_linear_forward(s->br, ctx, bp->proj_w, bp->proj_b, BT, D, D);
            add_into(pre2, x, s->br, BTD);
            dinoc_layernorm_forward(n2, m2, r2, pre2, bp->ln2_w, bp->ln2_b, BT, D, c->ln_eps);
            dinoc_linear_forward(h1, n2, bp->fc1_w, bp->fc1_b, BT, D, F);
            dinoc_text_act_forward(c, s->act, h1, s->BT * F);
            dinoc_linear_forward(s->br, s->act, bp->fc2_w, bp->fc2_b, BT, F, D);
            add_into(xo, pre2, s->br, BTD);
        } else {
            /* post-norm: LN1(x + attn x), then LN2(. + fc2(act(fc1 .))) */
            float *pre1 = s->pre1 + k * BTD;
            dinoc_linear_forward(qkv, x, bp->qkv_w, bp->qkv_b, BT, D, 3 * D);
            dinoc_attention_forward_masked(ctx, att, qkv, &mask, B, T, D, s->NH, s->att_scratch, s->nthreads);
            dinoc_linear_forward(s->br, ctx, bp->proj_w, bp->proj_b, BT, D, D);
            add_into(pre1, x, s->br, BTD);
            dinoc_layernorm_forward(n1, m1, r1, pre1, bp->ln1_w, bp->ln1_b, BT, D, c->ln_eps);
            dinoc_linear_forward(h1, n1, bp->fc1_w, bp->fc1_b, BT, D, F);
            dinoc_text_act_forward(c, s->act, h1, s->BT * F);
            dinoc_linear_forward(s->br, s->act, bp->fc2_w, bp->fc2_b, BT, F, D);
            add_into(pre2, n1, s->br, BTD);
            dinoc_layernorm_forward(xo, m2, r2, pre2, bp->ln2_w, bp->ln2_b, BT, D, c->ln_eps);
        }
    }
    if (!bert)
        dinoc_layernorm_forward(s->fin, s->mf, s->rf, xs(s, s->L), p->fin_ln_w, p->fin_ln_b, BT, D,
                                c->ln_eps);
    const float *hid = dinoc_text_state_hidden(s);
    for (int b = 0; b < B; b++) {
        s->pool[b] = pool_position(c, s->ids + (size_t)b * T, s->len[b]);
        memcpy(s->pooled_in + (size_t)b * D, hid + ((size_t)b * T + s->pool[b]) * D, sizeof(float) * D);
    }
    if (p->proj)
        dinoc_linear_forward(s->pooled, s->pooled_in, p->proj, NULL, B, D, c->proj_dim);
    else
        memcpy(s->pooled, s->pooled_in, sizeof(float) * (size_t)B * D);
    return DINOC_OK;
}

/* ---- backward --------------------------------------------------------------------------------- */

dinoc_status dinoc_text_backward(const dinoc_text_model *m, dinoc_text_state *s,
                                 const float *dhidden, const float *dpooled, float *grads) {
    const dinoc_text_config *c = &m->cfg;
    const dinoc_text_params *p = &m->p;
    if (!s->train) return dinoc_fail(DINOC_ERR_ARG, "text backward needs a state made with train = 1");
    dinoc_text_block  gstack[64];
    dinoc_text_block *gb = c->layers <= 64 ? gstack : calloc((size_t)c->layers, sizeof *gb);
    if (!gb) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    dinoc_text_params g;
    g.blocks = gb;
    dinoc_text_carve(c, grads, &g);
    const int B = s->B, T = s->T, D = s->D, F = s->F, BT = (int)s->BT, bert = c->kind == DINOC_TEXT_BERT;
    const size_t BTD = s->BT * D, BTF = s->BT * F;

    /* d(hidden): the caller's, plus the pooled rows' share (through the projection) */
    float *dh = bert ? s->dx : s->dln;
    if (dhidden) memcpy(dh, dhidden, sizeof(float) * BTD);
    else memset(dh, 0, sizeof(float) * BTD);
    if (dpooled) {
        const float *dpin = dpooled;
        if (p->proj) {
            memset(s->dpin, 0, sizeof(float) * (size_t)B * D);
            dinoc_linear_backward(s->dpin, g.proj, NULL, dpooled, s->pooled_in, p->proj, B, D, c->proj_dim);
            dpin = s->dpin;
        }
        for (int b = 0; b < B; b++)
            for (int d = 0; d < D; d++) dh[((size_t)b * T + s->pool[b]) * D + d] += dpin[(size_t)b * D + d];
    }
    if (!bert) {
        memset(s->dx, 0, sizeof(float) * BTD);
        dinoc_layernorm_backward(s->dx, g.fin_ln_w, g.fin_ln_b, dh, xs(s, s->L), p->fin_ln_w, s->mf,
                                 s->rf, BT, D);
    }
    /* dx holds d(block output); each layer turns it into d(block input) */
    for (int l = s->L - 1; l >= 0; l--) {
        const dinoc_text_block *bp = &p->blocks[l];
        dinoc_text_block       *gl = &g.blocks[l];
        const size_t            k  = (size_t)l;
        const float *x = xs(s, l), *n1 = s->n1 + k * BTD, *qkv = s->qkv + k * 3 * BTD;
        const float *ctx = s->ctx + k * BTD, *pre2 = s->pre2 + k * BTD, *h1 = s->h1 + k * BTF;
        const float *att = s->att + k * (size_t)B * s->NH * T * T;
        const float *m1 = s->m1 + k * s->BT, *r1 = s->r1 + k * s->BT, *m2 = s->m2 + k * s->BT, *r2 = s->r2 + k * s->BT;
        /* the FFN branch: its input is n2 (CLIP) or n1 (BERT); dbr = d(pre-residual-sum) */
        const float *ffn_in = bert ? n1 : s->n2 + k * BTD;
        const float *dbr    = s->dx;
        if (bert) { /* xo = LN2(pre2) */
            memset(s->dbr, 0, sizeof(float) * BTD);
            dinoc_layernorm_backward(s->dbr, gl->ln2_w, gl->ln2_b, s->dx, pre2, bp->ln2_w, m2, r2, BT, D);
            dbr = s->dbr;
        }
        dinoc_text_act_forward(c, s->act, h1, BTF); /* recomputed rather than kept per layer */
        memset(s->dact, 0, sizeof(float) * BTF);
        dinoc_linear_backward(s->dact, gl->fc2_w, gl->fc2_b, dbr, s->act, bp->fc2_w, BT, F, D);
        memset(s->dh1, 0, sizeof(float) * BTF);
        dinoc_text_act_backward(c, s->dh1, s->dact, h1, BTF);
        if (bert) { /* pre2 = n1 + FFN(n1); n1 = LN1(pre1) */
            memcpy(s->dln, dbr, sizeof(float) * BTD);
            dinoc_linear_backward(s->dln, gl->fc1_w, gl->fc1_b, s->dh1, ffn_in, bp->fc1_w, BT, D, F);
            memset(s->dx, 0, sizeof(float) * BTD);
            dinoc_layernorm_backward(s->dx, gl->ln1_w, gl->ln1_b, s->dln, s->pre1 + k * BTD, bp->ln1_w,
                                     m1, r1, BT, D);
        } else { /* xo = pre2 + FFN(LN2(pre2)) */
            memset(s->dln, 0, sizeof(float) * BTD);
            dinoc_linear_backward(s->dln, gl->fc1_w, gl->fc1_b, s->dh1, ffn_in, bp->fc1_w, BT, D, F);
            dinoc_layernorm_backward(s->dx, gl->ln2_w, gl->ln2_b, s->dln, pre2, bp->ln2_w, m2, r2, BT, D);
        }
        /* dx = d(x + attention branch); the branch's input is LN1(x) (CLIP) or x (BERT) */
        memset(s->dctx, 0, sizeof(float) * BTD);
        dinoc_linear_backward(s->dctx, gl->proj_w, gl->proj_b, s->dx, ctx, bp->proj_w, BT, D, D);
        memset(s->dqkv, 0, sizeof(float) * BTD * 3);
        dinoc_attention_backward(s->dqkv, s->dctx, qkv, att, B, T, D, s->NH, s->attb_scratch, s->nthreads);
        if (bert) {
            dinoc_linear_backward(s->dx, gl->qkv_w, gl->qkv_b, s->dqkv, x, bp->qkv_w, BT, D, 3 * D);
        } else {
            memset(s->dln, 0, sizeof(float) * BTD);
            dinoc_linear_backward(s->dln, gl->qkv_w, gl->qkv_b, s->dqkv, n1, bp->qkv_w, BT, D, 3 * D);
            dinoc_layernorm_backward(s->dx, gl->ln1_w, gl->ln1_b, s->dln, x, bp->ln1_w, m1, r1, BT, D);
        }
    }
    /* embeddings: de = d(token + position + type) */
    const float *de = s->dx;
    if (bert) {
        memset(s->dbr, 0, sizeof(float) * BTD);
        dinoc_layernorm_backward(s->dbr, g.emb_ln_w, g.emb_ln_b, s->dx, s->emb, p->emb_ln_w, s->emb_m,
                                 s->emb_r, BT, D);
        de = s->dbr;
    }
    /* channel-parallel: each thread owns whole columns of every table, so repeated token ids
     * need no atomics and the sums have a fixed order */
#pragma omp parallel for schedule(static)
    for (int d = 0; d < D; d++) {
        double ty = 0;
        for (int t = 0; t < T; t++) {
            double ps = 0;
            for (int b = 0; b < B; b++) {
                const size_t r = (size_t)b * T + t;
                g.tok[(size_t)s->ids[r] * D + d] += de[r * D + d];
                ps += de[r * D + d];
            }
            if (g.pos) g.pos[(size_t)t * D + d] += (float)ps;
            ty += ps;
        }
        if (g.type) g.type[d] += (float)ty;
    }
    if (gb != gstack) free(gb);
    return DINOC_OK;
}
