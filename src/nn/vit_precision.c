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

dinoc_precision dinoc_model_precision(const dinoc_model *m) { return m->precision; }

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
    const dinoc_vit_config *c  = &m->cfg;
    const size_t            D  = (size_t)c->dim, K = (size_t)c->channels * c->patch * c->patch;
    const size_t            F  = (size_t)c->ffn_hidden;
    const size_t            F1 = c->ffn == DINOC_FFN_SWIGLU ? 2 * F : F;
    dinoc_bf16_round(m->p.patch_w, D * K);
    for (int l = 0; l < c->depth; l++) {
        dinoc_block_params *b = &m->p.blocks[l];
        dinoc_bf16_round(b->qkv_w, 3 * D * D);
        dinoc_bf16_round(b->proj_w, D * D);
        dinoc_bf16_round(b->fc1_w, F1 * D);
        dinoc_bf16_round(b->fc2_w, D * F);
    }
    if (dinoc_bf16_native() && !m->bf16) {
        /* a bf16 copy of the whole flat buffer keeps each weight at its params offset */
        m->bf16 = dinoc_calloc(m->n_params, sizeof(uint16_t));
        if (!m->bf16) return dinoc_fail(DINOC_ERR_NOMEM, "cannot allocate the bf16 weights (%zu)", m->n_params);
        dinoc_bf16_pack(m->bf16, m->params, m->n_params);
    } else if (!dinoc_bf16_native() && m->bf16) {
        dinoc_free(m->bf16);
        m->bf16 = NULL;
    }
    m->precision = p;
    dinoc_log(DINOC_LOG_INFO, "bf16 products: %s", dinoc_bf16_backend());
    return DINOC_OK;
}
