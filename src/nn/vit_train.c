/* vit_train.c: the ViT's training forward (every activation the backward needs is kept) and its
 * backward, which is the forward read bottom-up. Gradients ACCUMULATE into a flat buffer with the
 * model's parameter layout (dinoc_vit_carve), so one memset per step clears them and gradient
 * accumulation over micro-batches is free.
 *
 * Stochastic depth is DINO's per-sample form: each block branch of sample b is multiplied by
 * keep_b / (1 - p) with keep_b ~ Bernoulli(1 - p), drawn per block and branch from the caller's rng
 * (the same rate for every block here; DINO's linear rule is the caller's choice via rates[]).
 *
 * Tested by tests/test_vit_train.c: a whole-model random-direction finite-difference check and
 * parity of every parameter gradient with PyTorch (fixtures by tests/py/gen_train.py). */
#include "vit_train.h"

#include <math.h>
#include <string.h>

struct dinoc_train_state {
    int    B, H, W, gh, gw, Np, T, D, F, F1, NH, L, nthreads;
    size_t BT;
    /* saved per layer l (offsets l * size) */
    float *x_in;              /* [L+1, BT, D] block inputs; x_in[L] = last block output */
    float *ln1, *ln1_m, *ln1_r; /* [L, BT, D], [L, BT], [L, BT] */
    float *qkv;               /* [L, BT, 3D] */
    float *att;               /* [L, B, NH, T, T] */
    float *ctx;               /* [L, BT, D] */
    float *br1;               /* [L, BT, D] attention branch before LayerScale / drop path */
    float *x_mid;             /* [L, BT, D] */
    float *ln2, *ln2_m, *ln2_r;
    float *h1;                /* [L, BT, F1] */
    float *act;               /* [L, BT, F] */
    float *br2;               /* [L, BT, D] */
    float *dp;                /* [L, 2, B] drop-path factors (0 or 1/(1-p)), 1 without drop path */
    float *out, *out_m, *out_r; /* [BT, D] final norm */
    float *x_emb, *pre_m, *pre_r; /* CLIP: [BT, D] tokens before pre_layrnorm, its [BT] stats */
    float *patches;           /* [B*Np, K] */
    float *emb;               /* [B*Np, D] patch embeddings */
    float *pos, *pos_a, *pos_b; /* resized patch pos [Np, D] and staging */
    const uint8_t *mask;      /* the last forward's mask (caller memory) */
    /* backward scratch */
    float *dx, *dln, *dbr, *dqkv, *dctx, *dh1, *dact, *dpos, *dpos_a, *dpos_b, *demb;
    float *att_scratch, *attb_scratch;
    /* bf16 training (dinoc_train_state_set_precision): the model's weights with the five product
     * matrices rounded to bf16, refreshed at each forward (the model keeps fp32 master weights),
     * carved as wp; NULL in fp32 */
    dinoc_precision  precision;
    float           *wr;
    dinoc_vit_params wp;
    /* where bf16 products run natively (oneDNN): per product (patch embedding, qkv, proj, fc1,
     * fc2) the forward, input-gradient and weight-gradient products, the packed weights and two
     * bf16 staging buffers; all NULL when emulated */
    dinoc_bf16_gemm *gf[5], *gdx[5], *gdw[5];
    uint16_t        *wb, *ba, *bb;
};

enum { P_PATCH, P_QKV, P_PROJ, P_FC1, P_FC2 };

static void free_native(dinoc_train_state *s) {
    for (int i = 0; i < 5; i++) {
        dinoc_bf16_gemm_free(s->gf[i]), dinoc_bf16_gemm_free(s->gdx[i]), dinoc_bf16_gemm_free(s->gdw[i]);
        s->gf[i] = s->gdx[i] = s->gdw[i] = NULL;
    }
    dinoc_free(s->wb), dinoc_free(s->ba), dinoc_free(s->bb);
    s->wb = s->ba = s->bb = NULL;
}

void dinoc_train_state_free(dinoc_train_state *s) {
    if (!s) return;
    float *bufs[] = {s->x_in, s->ln1, s->ln1_m, s->ln1_r, s->qkv, s->att, s->ctx, s->br1, s->x_mid,
                     s->ln2, s->ln2_m, s->ln2_r, s->h1, s->act, s->br2, s->dp, s->out, s->out_m,
                     s->out_r, s->x_emb, s->pre_m, s->pre_r, s->patches, s->emb, s->pos, s->pos_a, s->pos_b, s->dx, s->dln, s->dbr,
                     s->dqkv, s->dctx, s->dh1, s->dact, s->dpos, s->dpos_a, s->dpos_b, s->demb,
                     s->att_scratch, s->attb_scratch, s->wr};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dinoc_free(bufs[i]);
    free(s->wp.blocks);
    free_native(s);
    free(s);
}

dinoc_status dinoc_train_state_init(dinoc_train_state **out, const dinoc_model *m, int B, int H,
                                    int W) {
    *out                      = NULL;
    const dinoc_vit_config *c = &m->cfg;
    if (B <= 0 || H <= 0 || W <= 0 || H % c->patch || W % c->patch)
        return dinoc_fail(DINOC_ERR_SHAPE, "training batch %d of %dx%d images: sizes must be positive "
                          "multiples of the patch %d", B, H, W, c->patch);
    dinoc_train_state *s = calloc(1, sizeof *s);
    if (!s) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    s->B = B, s->H = H, s->W = W;
    s->gh = H / c->patch, s->gw = W / c->patch, s->Np = s->gh * s->gw;
    s->T = 1 + c->n_registers + s->Np, s->D = c->dim, s->F = c->ffn_hidden;
    s->F1 = c->ffn == DINOC_FFN_SWIGLU ? 2 * s->F : s->F;
    s->NH = c->heads, s->L = c->depth, s->BT = (size_t)B * s->T;
    s->nthreads = dinoc_get_threads();
    const size_t BT = s->BT, D = s->D, L = s->L, M = m->pos_m, HS = D / s->NH;
    const size_t K  = (size_t)c->channels * c->patch * c->patch;
    int          ok = 1;
#define ALLOC(ptr, n) ok &= ((ptr) = dinoc_calloc((n), sizeof(float))) != NULL
    ALLOC(s->x_in, (L + 1) * BT * D);
    ALLOC(s->ln1, L * BT * D);
    ALLOC(s->ln1_m, L * BT);
    ALLOC(s->ln1_r, L * BT);
    ALLOC(s->qkv, L * BT * 3 * D);
    ALLOC(s->att, L * (size_t)B * s->NH * s->T * s->T);
    ALLOC(s->ctx, L * BT * D);
    ALLOC(s->br1, L * BT * D);
    ALLOC(s->x_mid, L * BT * D);
    ALLOC(s->ln2, L * BT * D);
    ALLOC(s->ln2_m, L * BT);
    ALLOC(s->ln2_r, L * BT);
    ALLOC(s->h1, L * BT * s->F1);
    ALLOC(s->act, c->ffn == DINOC_FFN_SWIGLU ? L * BT * s->F : 1);
    ALLOC(s->br2, L * BT * D);
    ALLOC(s->dp, L * 2 * (size_t)B);
    ALLOC(s->out, BT * D);
    ALLOC(s->out_m, BT);
    ALLOC(s->out_r, BT);
    if (c->arch == DINOC_ARCH_CLIP) {
        ALLOC(s->x_emb, BT * D);
        ALLOC(s->pre_m, BT);
        ALLOC(s->pre_r, BT);
    }
    ALLOC(s->patches, (size_t)B * s->Np * K);
    ALLOC(s->emb, (size_t)B * s->Np * D);
    ALLOC(s->pos, (size_t)s->Np * D);
    ALLOC(s->pos_a, M * M * D);
    ALLOC(s->pos_b, (size_t)s->Np * D);
    ALLOC(s->dx, BT * D);
    ALLOC(s->dln, BT * D);
    ALLOC(s->dbr, BT * D);
    ALLOC(s->dqkv, BT * 3 * D);
    ALLOC(s->dctx, BT * D);
    ALLOC(s->dh1, BT * s->F1);
    ALLOC(s->dact, BT * s->F);
    ALLOC(s->dpos, (size_t)s->Np * D);
    ALLOC(s->dpos_a, M * M * D);
    ALLOC(s->dpos_b, (size_t)s->Np * D);
    ALLOC(s->demb, (size_t)B * s->Np * D);
    ALLOC(s->att_scratch, (size_t)s->nthreads * dinoc_attention_scratch_floats(s->T, (int)HS));
    ALLOC(s->attb_scratch, (size_t)s->nthreads * dinoc_attention_backward_scratch_floats(s->T, (int)HS));
#undef ALLOC
    if (!ok) {
        dinoc_train_state_free(s);
        return dinoc_fail(DINOC_ERR_NOMEM, "cannot allocate training activations for batch %d at %dx%d",
                          B, H, W);
    }
    *out = s;
    return DINOC_OK;
}

/* The native products of the five linear layers at this state's shapes. */
static dinoc_status init_native(dinoc_train_state *s, const dinoc_model *m) {
    const int    K = m->cfg.channels * m->cfg.patch * m->cfg.patch, D = s->D, BT = (int)s->BT;
    const int    shape[5][3] = {{s->B * s->Np, K, D}, {BT, D, 3 * D}, {BT, D, D}, {BT, D, s->F1}, {BT, s->F, D}};
    const int    acc = DINOC_BF16_ACC;
    size_t       most = 0;
    dinoc_status st   = DINOC_OK;
    for (int i = 0; i < 5 && !st; i++) {
        const int M = shape[i][0], Ki = shape[i][1], N = shape[i][2];
        /* out = x @ w^T + b; dx += dy @ w (w [N,K] is [K',N'] row-major); dw += dy^T @ x */
        st = dinoc_bf16_gemm_init(&s->gf[i], M, Ki, N, i != P_PATCH || m->p.patch_b != NULL); /* CLIP: no patch bias */
        if (!st && i != P_PATCH) st = dinoc_bf16_gemm_init_ex(&s->gdx[i], M, N, Ki, 0, DINOC_BF16_W_KN | acc);
        if (!st) st = dinoc_bf16_gemm_init_ex(&s->gdw[i], N, M, Ki, 0, DINOC_BF16_A_T | DINOC_BF16_W_KN | acc);
        most = (size_t)M * Ki > most ? (size_t)M * Ki : most;
        most = (size_t)M * N > most ? (size_t)M * N : most;
    }
    if (st) return st;
    s->wb = dinoc_calloc(m->n_params, sizeof(uint16_t));
    s->ba = dinoc_calloc(most, sizeof(uint16_t));
    s->bb = dinoc_calloc(most, sizeof(uint16_t));
    if (!s->wb || !s->ba || !s->bb) return dinoc_fail(DINOC_ERR_NOMEM, "cannot allocate bf16 training buffers");
    return DINOC_OK;
}

/* out = in @ w^T + b: oneDNN's bf16 product where prepared (the pack rounds the input; the weights
 * were packed by bf16_weights), else fp32 sgemm (in emulated bf16 its operands were rounded
 * already). w points into the model's weights or the state's copy (only its offset, natively). */
static dinoc_status prod_forward(dinoc_train_state *s, int which, float *out, const float *in, const float *w,
                                 const float *b, int M, int K, int N) {
    if (s->precision == DINOC_PRECISION_BF16 && s->gf[which]) {
        dinoc_bf16_pack(s->ba, in, (size_t)M * K);
        return dinoc_bf16_gemm_run(s->gf[which], out, s->ba, s->wb + (w - s->wr), b);
    }
    dinoc_linear_forward(out, in, w, b, M, K, N);
    return DINOC_OK;
}

/* dinoc_linear_backward (dx, dw, db accumulate) on the same choice of backend. */
static dinoc_status prod_backward(dinoc_train_state *s, int which, float *dx, float *dw, float *db, const float *dy,
                                  const float *x, const float *w, int M, int K, int N) {
    if (!(s->precision == DINOC_PRECISION_BF16 && s->gdw[which])) {
        dinoc_linear_backward(dx, dw, db, dy, x, w, M, K, N);
        return DINOC_OK;
    }
    dinoc_status st = DINOC_OK;
    dinoc_bf16_pack_colsum(s->bb, dy, M, N, db); /* the bias sum stays fp32, of the rounded dy */
    if (dx) st = dinoc_bf16_gemm_run(s->gdx[which], dx, s->bb, s->wb + (w - s->wr), NULL);
    if (!st) {
        dinoc_bf16_pack(s->ba, x, (size_t)M * K);
        st = dinoc_bf16_gemm_run(s->gdw[which], dw, s->bb, s->ba, NULL);
    }
    return st;
}

dinoc_status dinoc_train_state_set_precision(dinoc_train_state *s, const dinoc_model *m, dinoc_precision p) {
    if (p != DINOC_PRECISION_FP32 && p != DINOC_PRECISION_BF16)
        return dinoc_fail(DINOC_ERR_ARG, "training precision %d: expected fp32 or bf16", (int)p);
    if (m->precision != DINOC_PRECISION_FP32)
        return dinoc_fail(DINOC_ERR_ARG, "bf16 training keeps fp32 master weights: the model must stay fp32");
    if (p == DINOC_PRECISION_BF16 && !s->wr) {
        s->wr       = dinoc_calloc(m->n_params, sizeof(float));
        s->wp.blocks = calloc((size_t)m->cfg.depth, sizeof *s->wp.blocks);
        if (!s->wr || !s->wp.blocks) return dinoc_fail(DINOC_ERR_NOMEM, "cannot allocate bf16 training weights (%zu)", m->n_params);
        dinoc_vit_carve(&m->cfg, s->wr, &s->wp);
        if (dinoc_bf16_native()) {
            dinoc_status st = init_native(s, m);
            if (st) {
                dinoc_log(DINOC_LOG_WARN, "bf16 training: %s; this state's products are emulated", dinoc_last_error());
                free_native(s);
            }
        }
    }
    s->precision = p;
    return DINOC_OK;
}

dinoc_status dinoc_bf16_pair_init(dinoc_train_state *tg, dinoc_train_state *tl, const dinoc_model *student,
                                  dinoc_model **tcopy, const dinoc_model *teacher) {
    dinoc_status s;
    if ((s = dinoc_train_state_set_precision(tg, student, DINOC_PRECISION_BF16)) ||
        (tl && (s = dinoc_train_state_set_precision(tl, student, DINOC_PRECISION_BF16))))
        return s;
    return dinoc_vit_bf16_copy(tcopy, teacher);
}

/* bf16: the weights the products use this step, rounded from the master weights. */
static void bf16_weights(const dinoc_model *m, dinoc_train_state *s) {
    memcpy(s->wr, m->params, sizeof(float) * m->n_params);
    if (s->wb) dinoc_bf16_pack(s->wb, s->wr, m->n_params); /* native: the pack rounds */
    else dinoc_vit_bf16_round_products(&m->cfg, &s->wp);
}

/* In emulated bf16 a product's operand (an input, or a gradient arriving at a product) is rounded
 * in place: each one is read only by its product(s) and, for a gradient, the bias sum. Native
 * products round as they pack (prod_forward, prod_backward: the same values), so they skip it. */
static void bf16_operand(const dinoc_train_state *s, float *x, size_t n) {
    if (s->precision == DINOC_PRECISION_BF16 && !s->wb) dinoc_bf16_round(x, n);
}

void dinoc_train_state_dims(const dinoc_train_state *s, int *B, int *T, int *D) {
    if (B) *B = s->B;
    if (T) *T = s->T;
    if (D) *D = s->D;
}

const float *dinoc_train_state_output(const dinoc_train_state *s) { return s->out; }
const float *dinoc_train_state_prenorm(const dinoc_train_state *s) { return s->x_in + (size_t)s->L * s->BT * s->D; }
const float *dinoc_train_state_attn(const dinoc_train_state *s) {
    return s->att + (size_t)(s->L - 1) * s->B * s->NH * s->T * s->T;
}

/* Position-embedding resize parameters for this state (the same rule as the inference forward). */
static int pos_resize_args(const dinoc_model *m, const dinoc_train_state *s, int *aa, double *sf_h,
                           double *sf_w) {
    const int M = m->pos_m;
    if (s->Np == M * M && s->H == s->W) return 0; /* no resize */
    *aa   = m->cfg.pos_interp == DINOC_POS_INTERP_ANTIALIAS;
    *sf_h = *sf_w = -1;
    if (m->cfg.pos_interp == DINOC_POS_INTERP_OFFSET) {
        *sf_h = ((double)s->gh + (double)m->cfg.interp_offset) / M;
        *sf_w = ((double)s->gw + (double)m->cfg.interp_offset) / M;
    }
    return 1;
}

/* x[r] += dp[b] * gamma * y[r] over rows r of sample b = r / T. */
static void add_branch(float *x, const float *y, const float *gamma, const float *dp, int B, int T,
                       int D) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < B * T; r++) {
        const float f  = dp[r / T];
        float      *xr = x + (size_t)r * D;
        const float *yr = y + (size_t)r * D;
        if (f == 0.0f) continue;
        for (int d = 0; d < D; d++) xr[d] += f * (gamma ? gamma[d] : 1.0f) * yr[d];
    }
}

dinoc_status dinoc_vit_forward_train(const dinoc_model *m, dinoc_train_state *s, const float *images,
                                     const uint8_t *mask, const float *drop_path, dinoc_rng *rng) {
    const dinoc_vit_config *c = &m->cfg;
    if (s->precision == DINOC_PRECISION_BF16) bf16_weights(m, s);
    const dinoc_vit_params *p = s->precision == DINOC_PRECISION_BF16 ? &s->wp : &m->p;
    const int B = s->B, T = s->T, D = s->D, P = c->patch, C = c->channels, R = c->n_registers;
    const int gw = s->gw, Np = s->Np, H = s->H, W = s->W, K = C * P * P, BT = (int)s->BT;
    if (mask && !p->mask_token)
        return dinoc_fail(DINOC_ERR_ARG, "a mask was given but this model has no mask token");
    if (s->nthreads < dinoc_get_threads())
        return dinoc_fail(DINOC_ERR_ARG, "the thread count grew after the training state was made");
    s->mask = mask;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < B * Np; r++) {
        int    b = r / Np, gy = (r % Np) / gw, gx = r % gw;
        float *row = s->patches + (size_t)r * K;
        for (int ch = 0; ch < C; ch++)
            for (int ky = 0; ky < P; ky++)
                memcpy(row + (ch * P + ky) * P,
                       images + (((size_t)b * C + ch) * H + (size_t)gy * P + ky) * W + (size_t)gx * P,
                       sizeof(float) * P);
    }
    bf16_operand(s, s->patches, (size_t)B * Np * K);
    dinoc_status st = prod_forward(s, P_PATCH, s->emb, s->patches, p->patch_w, p->patch_b, B * Np, K, D);
    if (st) return st;
    int    aa;
    double sfh, sfw;
    const int M = m->pos_m;
    if (pos_resize_args(m, s, &aa, &sfh, &sfw)) {
        for (int i = 0; i < M * M; i++)
            for (int d = 0; d < D; d++) s->pos_a[(size_t)d * M * M + i] = p->pos[(size_t)(1 + i) * D + d];
        dinoc_bicubic_resize(s->pos_b, s->pos_a, D, M, M, s->gh, s->gw, aa, sfh, sfw);
        for (int i = 0; i < Np; i++)
            for (int d = 0; d < D; d++) s->pos[(size_t)i * D + d] = s->pos_b[(size_t)d * Np + i];
    } else {
        memcpy(s->pos, p->pos + D, sizeof(float) * (size_t)Np * D);
    }
    float *x = p->pre_w ? s->x_emb : s->x_in; /* CLIP: pre_layrnorm maps x_emb to x_in[0] */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        float *xb = x + (size_t)b * T * D;
        for (int d = 0; d < D; d++) xb[d] = p->cls[d] + p->pos[d];
        if (R) memcpy(xb + D, p->reg, sizeof(float) * (size_t)R * D);
        for (int i = 0; i < Np; i++) {
            const float *e = (mask && mask[(size_t)b * Np + i]) ? p->mask_token : s->emb + ((size_t)b * Np + i) * D;
            float       *t = xb + (size_t)(1 + R + i) * D;
            for (int d = 0; d < D; d++) t[d] = e[d] + s->pos[(size_t)i * D + d];
        }
    }
    if (p->pre_w)
        dinoc_layernorm_forward(s->x_in, s->pre_m, s->pre_r, s->x_emb, p->pre_w, p->pre_b, BT, D, c->ln_eps);
    /* drop-path factors, drawn in a fixed order so a seed gives the same run */
    for (int l = 0; l < s->L; l++) {
        float rate = drop_path ? drop_path[l] : 0.0f;
        for (int k = 0; k < 2 * B; k++) {
            float f = 1.0f;
            if (rate > 0) f = dinoc_rng_uniform(rng) < 1.0f - rate ? 1.0f / (1.0f - rate) : 0.0f;
            s->dp[(size_t)l * 2 * B + k] = f;
        }
    }
    const size_t BTD = s->BT * D;
    for (int l = 0; l < s->L; l++) {
        const dinoc_block_params *bp  = &p->blocks[l];
        float                    *xi  = s->x_in + l * BTD, *xo = s->x_in + (l + 1) * BTD;
        float                    *ln1 = s->ln1 + l * BTD, *qkv = s->qkv + l * BTD * 3;
        float *att = s->att + (size_t)l * B * s->NH * T * T, *ctx = s->ctx + l * BTD;
        float *br1 = s->br1 + l * BTD, *xm = s->x_mid + l * BTD, *ln2 = s->ln2 + l * BTD;
        float *h1 = s->h1 + l * s->BT * s->F1, *br2 = s->br2 + l * BTD;
        float *act = c->ffn == DINOC_FFN_SWIGLU ? s->act + l * s->BT * s->F : h1;
        dinoc_layernorm_forward(ln1, s->ln1_m + l * s->BT, s->ln1_r + l * s->BT, xi, bp->ln1_w, bp->ln1_b,
                                BT, D, c->ln_eps);
        bf16_operand(s, ln1, BTD);
        if ((st = prod_forward(s, P_QKV, qkv, ln1, bp->qkv_w, bp->qkv_b, BT, D, 3 * D))) return st;
        dinoc_attention_forward(ctx, att, qkv, B, T, D, s->NH, s->att_scratch, s->nthreads);
        bf16_operand(s, ctx, BTD);
        if ((st = prod_forward(s, P_PROJ, br1, ctx, bp->proj_w, bp->proj_b, BT, D, D))) return st;
        memcpy(xm, xi, sizeof(float) * BTD);
        add_branch(xm, br1, bp->ls1, s->dp + (size_t)l * 2 * B, B, T, D);
        dinoc_layernorm_forward(ln2, s->ln2_m + l * s->BT, s->ln2_r + l * s->BT, xm, bp->ln2_w, bp->ln2_b,
                                BT, D, c->ln_eps);
        bf16_operand(s, ln2, BTD);
        if ((st = prod_forward(s, P_FC1, h1, ln2, bp->fc1_w, bp->fc1_b, BT, D, s->F1))) return st;
        /* keep the pre-activation h1 for the backward; GELU's output is only needed for fc2 and
         * is recomputed in the backward, so it goes to scratch (SwiGLU's output is kept) */
        const float *a = act;
        if (c->ffn == DINOC_FFN_SWIGLU)
            dinoc_swiglu_forward(act, h1, BT, s->F);
        else {
            dinoc_vit_act_forward(c, s->dact, h1, s->BT * s->F);
            a = s->dact;
        }
        bf16_operand(s, (float *)a, s->BT * s->F);
        if ((st = prod_forward(s, P_FC2, br2, a, bp->fc2_w, bp->fc2_b, BT, s->F, D))) return st;
        memcpy(xo, xm, sizeof(float) * BTD);
        add_branch(xo, br2, bp->ls2, s->dp + (size_t)l * 2 * B + B, B, T, D);
    }
    dinoc_layernorm_forward(s->out, s->out_m, s->out_r, s->x_in + (size_t)s->L * BTD, p->norm_w, p->norm_b,
                            BT, D, c->ln_eps);
    return DINOC_OK;
}

/* Branch backward: dbr[r] = dp[b] * gamma * dx[r]; dgamma += sum_r dp[b] * dx[r] * br[r]. */
static void branch_backward(float *dbr, float *dgamma, const float *dx, const float *br,
                            const float *gamma, const float *dp, int B, int T, int D) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < B * T; r++) {
        const float f = dp[r / T];
        for (int d = 0; d < D; d++) dbr[(size_t)r * D + d] = f * (gamma ? gamma[d] : 1.0f) * dx[(size_t)r * D + d];
    }
    if (!dgamma) return;
    /* parallel over channels: each thread owns whole columns, so the sums are deterministic */
#pragma omp parallel for schedule(static)
    for (int d = 0; d < D; d++) {
        double acc = 0;
        for (int r = 0; r < B * T; r++) acc += (double)dp[r / T] * dx[(size_t)r * D + d] * br[(size_t)r * D + d];
        dgamma[d] += (float)acc;
    }
}

dinoc_status dinoc_vit_backward(const dinoc_model *m, dinoc_train_state *s, const float *dout,
                                float *grads) {
    const dinoc_vit_config *c = &m->cfg;
    /* bf16: the weights rounded by the forward (the same values elsewhere) */
    const dinoc_vit_params *p = s->precision == DINOC_PRECISION_BF16 ? &s->wp : &m->p;
    dinoc_block_params      gblocks_stack[64];
    dinoc_block_params     *gblocks = c->depth <= 64 ? gblocks_stack : calloc((size_t)c->depth, sizeof *gblocks);
    if (!gblocks) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    dinoc_vit_params g;
    g.blocks = gblocks;
    dinoc_vit_carve(c, grads, &g);
    const int B = s->B, T = s->T, D = s->D, R = c->n_registers, Np = s->Np, BT = (int)s->BT;
    const int K = c->channels * c->patch * c->patch, M = m->pos_m;
    const size_t BTD = s->BT * D;

    dinoc_status st = DINOC_OK;
    memset(s->dx, 0, sizeof(float) * BTD);
    dinoc_layernorm_backward(s->dx, g.norm_w, g.norm_b, dout, s->x_in + (size_t)s->L * BTD, p->norm_w,
                             s->out_m, s->out_r, BT, D);
    for (int l = s->L - 1; l >= 0; l--) {
        const dinoc_block_params *bp = &p->blocks[l];
        dinoc_block_params       *gb = &g.blocks[l];
        const float *dp1 = s->dp + (size_t)l * 2 * B, *dp2 = dp1 + B;
        float *h1 = s->h1 + l * s->BT * s->F1;
        /* MLP branch: x_out = x_mid + dp2 * ls2 * fc2(act(fc1(LN2(x_mid)))) */
        branch_backward(s->dbr, gb->ls2, s->dx, s->br2 + l * BTD, bp->ls2, dp2, B, T, D);
        const float *a = NULL;
        if (c->ffn == DINOC_FFN_SWIGLU)
            a = s->act + l * s->BT * s->F;
        else {
            dinoc_vit_act_forward(c, s->dh1, h1, s->BT * s->F); /* recompute act(h1) into scratch */
            a = s->dh1;
            bf16_operand(s, s->dh1, s->BT * s->F);
        }
        bf16_operand(s, s->dbr, BTD);
        memset(s->dact, 0, sizeof(float) * s->BT * s->F);
        if ((st = prod_backward(s, P_FC2, s->dact, gb->fc2_w, gb->fc2_b, s->dbr, a, bp->fc2_w, BT, s->F, D))) break;
        memset(s->dh1, 0, sizeof(float) * s->BT * s->F1);
        if (c->ffn == DINOC_FFN_SWIGLU)
            dinoc_swiglu_backward(s->dh1, s->dact, h1, BT, s->F);
        else
            dinoc_vit_act_backward(c, s->dh1, s->dact, h1, s->BT * s->F);
        bf16_operand(s, s->dh1, s->BT * s->F1);
        memset(s->dln, 0, sizeof(float) * BTD);
        if ((st = prod_backward(s, P_FC1, s->dln, gb->fc1_w, gb->fc1_b, s->dh1, s->ln2 + l * BTD, bp->fc1_w, BT, D, s->F1)))
            break;
        dinoc_layernorm_backward(s->dx, gb->ln2_w, gb->ln2_b, s->dln, s->x_mid + l * BTD, bp->ln2_w,
                                 s->ln2_m + l * s->BT, s->ln2_r + l * s->BT, BT, D);
        /* attention branch: x_mid = x_in + dp1 * ls1 * proj(attn(LN1(x_in))) */
        branch_backward(s->dbr, gb->ls1, s->dx, s->br1 + l * BTD, bp->ls1, dp1, B, T, D);
        bf16_operand(s, s->dbr, BTD);
        memset(s->dctx, 0, sizeof(float) * BTD);
        if ((st = prod_backward(s, P_PROJ, s->dctx, gb->proj_w, gb->proj_b, s->dbr, s->ctx + l * BTD, bp->proj_w, BT, D, D)))
            break;
        memset(s->dqkv, 0, sizeof(float) * BTD * 3);
        dinoc_attention_backward(s->dqkv, s->dctx, s->qkv + l * BTD * 3, s->att + (size_t)l * B * s->NH * T * T,
                                 B, T, D, s->NH, s->attb_scratch, s->nthreads);
        bf16_operand(s, s->dqkv, BTD * 3);
        memset(s->dln, 0, sizeof(float) * BTD);
        if ((st = prod_backward(s, P_QKV, s->dln, gb->qkv_w, gb->qkv_b, s->dqkv, s->ln1 + l * BTD, bp->qkv_w, BT, D, 3 * D)))
            break;
        dinoc_layernorm_backward(s->dx, gb->ln1_w, gb->ln1_b, s->dln, s->x_in + l * BTD, bp->ln1_w,
                                 s->ln1_m + l * s->BT, s->ln1_r + l * s->BT, BT, D);
    }
    if (st) {
        if (gblocks != gblocks_stack) free(gblocks);
        return st;
    }
    if (p->pre_w) { /* CLIP: through pre_layrnorm to d(x_emb) */
        memset(s->dln, 0, sizeof(float) * BTD);
        dinoc_layernorm_backward(s->dln, g.pre_w, g.pre_b, s->dx, s->x_emb, p->pre_w, s->pre_m, s->pre_r,
                                 BT, D);
        memcpy(s->dx, s->dln, sizeof(float) * BTD);
    }
    /* embeddings: dx is now d(x_in[0]) (CLIP: d(x_emb)). Sums over the batch go channel-parallel (deterministic). */
    memset(s->dpos, 0, sizeof(float) * (size_t)Np * D);
#pragma omp parallel for schedule(static)
    for (int d = 0; d < D; d++) {
        double dc = 0;
        for (int b = 0; b < B; b++) dc += s->dx[(size_t)b * T * D + d];
        g.cls[d] += (float)dc;
        g.pos[d] += (float)dc;
        for (int r = 0; r < R; r++) {
            double acc = 0;
            for (int b = 0; b < B; b++) acc += s->dx[((size_t)b * T + 1 + r) * D + d];
            g.reg[(size_t)r * D + d] += (float)acc;
        }
        double dm = 0;
        for (int i = 0; i < Np; i++) {
            double acc = 0;
            for (int b = 0; b < B; b++) {
                float v = s->dx[((size_t)b * T + 1 + R + i) * D + d];
                acc += v;
                int masked = s->mask && s->mask[(size_t)b * Np + i];
                s->demb[((size_t)b * Np + i) * D + d] = masked ? 0.0f : v;
                if (masked) dm += v;
            }
            s->dpos[(size_t)i * D + d] = (float)acc;
        }
        if (g.mask_token) g.mask_token[d] += (float)dm;
    }
    int    aa;
    double sfh, sfw;
    if (pos_resize_args(m, s, &aa, &sfh, &sfw)) {
        for (int i = 0; i < Np; i++)
            for (int d = 0; d < D; d++) s->dpos_b[(size_t)d * Np + i] = s->dpos[(size_t)i * D + d];
        memset(s->dpos_a, 0, sizeof(float) * (size_t)M * M * D);
        dinoc_bicubic_resize_backward(s->dpos_a, s->dpos_b, D, M, M, s->gh, s->gw, aa, sfh, sfw);
        for (int i = 0; i < M * M; i++)
            for (int d = 0; d < D; d++) g.pos[(size_t)(1 + i) * D + d] += s->dpos_a[(size_t)d * M * M + i];
    } else {
        for (size_t i = 0; i < (size_t)Np * D; i++) g.pos[D + i] += s->dpos[i];
    }
    bf16_operand(s, s->demb, (size_t)B * Np * D);
    st = prod_backward(s, P_PATCH, NULL, g.patch_w, g.patch_b, s->demb, s->patches, p->patch_w, B * Np, K, D);
    if (gblocks != gblocks_stack) free(gblocks);
    return st;
}
