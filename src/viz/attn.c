/* attn.c: attention maps for pictures (DINO's visualize_attention.py, reference dino_dinov2.md
 * 4.4): the last block's CLS row over the patch columns per head, and the mask keeping a fraction
 * of the attention mass. Tested by tests/cli_attn_report_test.sh (maps against PyTorch). */
#include "viz.h"

#include <string.h>

dinoc_status dinoc_viz_cls_attention(const dinoc_model *m, const dinoc_state *s, float *maps) {
    const float *att = dinoc_state_attn(s); /* [B, NH, T, T] */
    if (!att)
        return dinoc_fail(DINOC_ERR_ARG, "dinoc_viz_cls_attention: the state keeps no attention "
                                         "(make it with DINOC_STATE_ATTN)");
    const dinoc_vit_config *c = dinoc_model_config(m);
    int B, T, gh, gw;
    dinoc_state_dims(s, &B, &T, NULL, &gh, &gw);
    const int NH = c->heads, R = c->n_registers, Np = gh * gw;
    DINOC_ASSERT(T == 1 + R + Np);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *row = att + (((size_t)b * NH + h) * T) * T; /* query 0 = CLS */
            memcpy(maps + ((size_t)b * NH + h) * Np, row + 1 + R, sizeof(float) * (size_t)Np);
        }
    return DINOC_OK;
}

typedef struct {
    float v;
    int   i;
} val_idx;

static int cmp_val_idx(const void *a, const void *b) {
    const val_idx *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

dinoc_status dinoc_viz_attn_mask(uint8_t *mask, const float *map, int n, float thr) {
    memset(mask, 0, (size_t)n);
    val_idx *v   = malloc(sizeof *v * (size_t)(n > 0 ? n : 1));
    double   sum = 0;
    if (!v) return dinoc_fail(DINOC_ERR_NOMEM, "dinoc_viz_attn_mask: out of memory");
    for (int i = 0; i < n; i++) v[i].v = map[i], v[i].i = i, sum += map[i];
    if (sum > 0) {
        qsort(v, (size_t)n, sizeof *v, cmp_val_idx);
        double cum = 0;
        for (int j = 0; j < n; j++) {
            cum += v[j].v / sum;
            if (cum > 1.0 - thr) mask[v[j].i] = 1;
        }
    }
    free(v);
    return DINOC_OK;
}
