/* vit_precision.c: switching a ViT's linear products between fp32 and bf16 (see dinoc.h and the
 * head of src/ops/bf16.c for what bf16 means here). */
#include "../internal.h"
#include "vit.h"

#include <string.h>

const char *dinoc_precision_name(dinoc_precision p) { return p == DINOC_PRECISION_BF16 ? "bf16" : "fp32"; }

dinoc_status dinoc_precision_parse(const char *s, dinoc_precision *out) {
    if (s && strcmp(s, "fp32") == 0) *out = DINOC_PRECISION_FP32;
    else if (s && strcmp(s, "bf16") == 0) *out = DINOC_PRECISION_BF16;
    else return dinoc_fail(DINOC_ERR_ARG, "precision '%s': expected fp32 or bf16", s ? s : "(null)");
    return DINOC_OK;
}

/* Training's "auto": bf16 where its products run natively (AMX or AVX512-BF16: there bf16 steps
 * are faster: 1.4x for the main job's DINO step over OpenBLAS's fp32, 1.2x over oneDNN's AVX-512
 * sgemm, session 10), fp32 elsewhere (emulated bf16 would be slower).
 * Runs store the resolved name, so a resumed run keeps its precision on any machine. can_bf16 0:
 * the model has no bf16 training (a ResNet), so auto is fp32. */
const char *dinoc_precision_resolve(const char *s, int can_bf16) {
    if (!s || strcmp(s, "auto") != 0) return s;
    const char *r = can_bf16 && dinoc_bf16_native() ? "bf16" : "fp32";
    dinoc_log(DINOC_LOG_INFO, "precision auto: %s (bf16 products: %s; fp32 products: %s)", r, dinoc_bf16_backend(),
              dinoc_fp32_backend());
    return r;
}

dinoc_precision dinoc_model_precision(const dinoc_model *m) { return m->precision; }

/* Rounds the five product matrices of m in place and, where products run natively, (re)packs the
 * bf16 copy of the flat buffer. Also used by bf16 training on each step's copy of the teacher. */
void dinoc_vit_bf16_round_products(const dinoc_vit_config *c, dinoc_vit_params *p) {
    const size_t D = (size_t)c->dim, K = (size_t)c->channels * c->patch * c->patch;
    const size_t F = (size_t)c->ffn_hidden, F1 = c->ffn == DINOC_FFN_SWIGLU ? 2 * F : F;
    dinoc_bf16_round(p->patch_w, D * K);
    for (int l = 0; l < c->depth; l++) {
        dinoc_block_params *b = &p->blocks[l];
        dinoc_bf16_round(b->qkv_w, 3 * D * D);
        dinoc_bf16_round(b->proj_w, D * D);
        dinoc_bf16_round(b->fc1_w, F1 * D);
        dinoc_bf16_round(b->fc2_w, D * F);
    }
}

dinoc_status dinoc_vit_bf16_prepare(dinoc_model *m) {
    dinoc_vit_bf16_round_products(&m->cfg, &m->p);
    if (dinoc_bf16_native()) {
        /* a bf16 copy of the whole flat buffer keeps each weight at its params offset */
        if (!m->bf16 && !(m->bf16 = dinoc_calloc(m->n_params, sizeof(uint16_t))))
            return dinoc_fail(DINOC_ERR_NOMEM, "cannot allocate the bf16 weights (%zu)", m->n_params);
        dinoc_bf16_pack(m->bf16, m->params, m->n_params);
    } else if (m->bf16) {
        dinoc_free(m->bf16);
        m->bf16 = NULL;
    }
    m->precision = DINOC_PRECISION_BF16;
    return DINOC_OK;
}

dinoc_status dinoc_vit_bf16_copy(dinoc_model **dst, const dinoc_model *src) {
    dinoc_status s;
    if (!*dst && (s = dinoc_vit_alloc(dst, &src->cfg))) return s;
    memcpy((*dst)->params, src->params, sizeof(float) * src->n_params);
    return dinoc_vit_bf16_prepare(*dst);
}

dinoc_status dinoc_model_set_precision(dinoc_model *m, dinoc_precision p) {
    if (p != DINOC_PRECISION_FP32 && p != DINOC_PRECISION_BF16)
        return dinoc_fail(DINOC_ERR_ARG, "precision %d: expected DINOC_PRECISION_FP32 or _BF16", (int)p);
    if (p == DINOC_PRECISION_FP32) {
        dinoc_free(m->bf16);
        m->bf16      = NULL;
        m->precision = p;
        return DINOC_OK;
    }
    /* the weights of the five products, rounded once; their inputs are rounded at each product */
    dinoc_status s = dinoc_vit_bf16_prepare(m);
    if (!s) dinoc_log(DINOC_LOG_INFO, "bf16 products: %s", dinoc_bf16_backend());
    return s;
}
