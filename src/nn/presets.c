/* presets.c: named ViT configurations (the published DINO / DINOv2 sizes, CLIP image towers). */
#include "vit.h"

#include <string.h>

typedef struct {
    const char *name;
    dinoc_arch  arch;
    int         dim, depth, heads, patch, image, channels, regs;
    dinoc_ffn   ffn;
} preset;

static const preset k_presets[] = {
    {"vits14", DINOC_ARCH_DINOV2, 384, 12, 6, 14, 518, 3, 0, DINOC_FFN_MLP},
    {"vitb14", DINOC_ARCH_DINOV2, 768, 12, 12, 14, 518, 3, 0, DINOC_FFN_MLP},
    {"vitl14", DINOC_ARCH_DINOV2, 1024, 24, 16, 14, 518, 3, 0, DINOC_FFN_MLP},
    {"vitg14", DINOC_ARCH_DINOV2, 1536, 40, 24, 14, 518, 3, 0, DINOC_FFN_SWIGLU},
    {"vits14-reg", DINOC_ARCH_DINOV2_REG, 384, 12, 6, 14, 518, 3, 4, DINOC_FFN_MLP},
    {"vitb14-reg", DINOC_ARCH_DINOV2_REG, 768, 12, 12, 14, 518, 3, 4, DINOC_FFN_MLP},
    {"vitl14-reg", DINOC_ARCH_DINOV2_REG, 1024, 24, 16, 14, 518, 3, 4, DINOC_FFN_MLP},
    {"vitg14-reg", DINOC_ARCH_DINOV2_REG, 1536, 40, 24, 14, 518, 3, 4, DINOC_FFN_SWIGLU},
    {"dino-vits16", DINOC_ARCH_VIT, 384, 12, 6, 16, 224, 3, 0, DINOC_FFN_MLP},
    {"dino-vits8", DINOC_ARCH_VIT, 384, 12, 6, 8, 224, 3, 0, DINOC_FFN_MLP},
    {"dino-vitb16", DINOC_ARCH_VIT, 768, 12, 12, 16, 224, 3, 0, DINOC_FFN_MLP},
    {"dino-vitb8", DINOC_ARCH_VIT, 768, 12, 12, 8, 224, 3, 0, DINOC_FFN_MLP},
    {"vit-tiny-dino", DINOC_ARCH_VIT, 192, 12, 3, 4, 32, 1, 0, DINOC_FFN_MLP},
    /* CLIP image towers (reference A.1): OpenAI ViT-B/32, B/16, L/14, and the shapes model */
    {"clip-vitb32", DINOC_ARCH_CLIP, 768, 12, 12, 32, 224, 3, 0, DINOC_FFN_MLP_QUICK_GELU},
    {"clip-vitb16", DINOC_ARCH_CLIP, 768, 12, 12, 16, 224, 3, 0, DINOC_FFN_MLP_QUICK_GELU},
    {"clip-vitl14", DINOC_ARCH_CLIP, 1024, 24, 16, 14, 224, 3, 0, DINOC_FFN_MLP_QUICK_GELU},
    {"clip-shapes", DINOC_ARCH_CLIP, 128, 4, 4, 8, 64, 3, 0, DINOC_FFN_MLP_QUICK_GELU},
};

dinoc_status dinoc_vit_preset(dinoc_vit_config *c, const char *name) {
    for (size_t i = 0; i < sizeof k_presets / sizeof k_presets[0]; i++) {
        const preset *p = &k_presets[i];
        if (strcmp(p->name, name) != 0) continue;
        memset(c, 0, sizeof *c);
        c->arch        = p->arch;
        c->dim         = p->dim;
        c->depth       = p->depth;
        c->heads       = p->heads;
        c->patch       = p->patch;
        c->image_size  = p->image;
        c->channels    = p->channels;
        c->n_registers = p->regs;
        c->ffn         = p->ffn;
        /* SwiGLU hidden as DINOv2 sizes it: 2/3 of 4D rounded up to a multiple of 8 */
        c->ffn_hidden  = p->ffn == DINOC_FFN_SWIGLU ? ((int)(4 * p->dim * 2 / 3) + 7) / 8 * 8 : 4 * p->dim;
        c->layerscale  = p->arch == DINOC_ARCH_DINOV2 || p->arch == DINOC_ARCH_DINOV2_REG;
        c->mask_token  = c->layerscale;
        c->qkv_bias    = 1;
        c->ln_eps      = p->arch == DINOC_ARCH_CLIP ? 1e-5f : 1e-6f; /* CLIP: PyTorch's default */
        c->pos_interp  = p->arch == DINOC_ARCH_DINOV2_REG ? DINOC_POS_INTERP_ANTIALIAS : DINOC_POS_INTERP_SIZE;
        return DINOC_OK;
    }
    char list[640] = "";
    for (size_t i = 0; i < sizeof k_presets / sizeof k_presets[0]; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", k_presets[i].name);
    return dinoc_fail(DINOC_ERR_ARG, "unknown model preset '%s' (known: %s)", name, list);
}
