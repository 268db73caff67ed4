/* cmd_info.c: `dinoc info MODEL`: the model's config, preprocessing and tensor table. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *arch_name(dinoc_arch a) {
    return a == DINOC_ARCH_VIT ? "vit (DINO v1)" : a == DINOC_ARCH_DINOV2_REG ? "dinov2_with_registers" : "dinov2";
}

static const char *interp_name(dinoc_pos_interp p) {
    return p == DINOC_POS_INTERP_OFFSET ? "offset" : p == DINOC_POS_INTERP_ANTIALIAS ? "antialias" : "size";
}

int cmd_info(int argc, char **argv) {
    int            lenient = 0, verbose = 0;
    const opt_spec opts[]  = {
        {"lenient-config", 0, OPT_FLAG, &lenient, "ignore unknown config.json fields"},
        {"verbose", 'v', OPT_FLAG, &verbose, "print library info messages"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc info [options] MODEL\n\nMODEL: a Hugging Face folder (config.json + "
                      "safetensors) or a .safetensors file.";
    char **pos = calloc((size_t)argc + 1, sizeof(char *));
    int    npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    if (rc || npos != 1) {
        if (!rc) fprintf(stderr, "error: info takes exactly one MODEL\n");
        free(pos);
        return rc == 1 ? 0 : 2;
    }
    cli_log_to_stderr(verbose);
    const char *path = pos[0];
    free(pos);
    struct stat st;
    int         is_dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    char        cfgp[4096];
    snprintf(cfgp, sizeof cfgp, "%s/config.json", path);
    if (is_dir || stat(cfgp, &st) == 0) {
        dinoc_load_params lp = dinoc_load_default_params();
        lp.strict_config     = !lenient;
        dinoc_model *m       = NULL;
        dinoc_status s       = dinoc_model_load(&m, path, &lp);
        if (s) return cli_fail("info", s);
        const dinoc_vit_config *c  = dinoc_model_config(m);
        const dinoc_preprocess *pp = dinoc_model_preprocess(m);
        printf("model        %s\n", path);
        printf("arch         %s\n", arch_name(c->arch));
        printf("width        %d\ndepth        %d\nheads        %d (head size %d)\n", c->dim, c->depth,
               c->heads, c->dim / c->heads);
        printf("ffn          %s, hidden %d\n", c->ffn == DINOC_FFN_SWIGLU ? "SwiGLU" : "MLP (exact GELU)",
               c->ffn_hidden);
        printf("patch        %d (grid %dx%d at %d px)\n", c->patch, c->image_size / c->patch,
               c->image_size / c->patch, c->image_size);
        printf("registers    %d\nlayerscale   %s\nmask token   %s\nln eps       %g\n", c->n_registers,
               c->layerscale ? "yes" : "no", c->mask_token ? "yes" : "no", c->ln_eps);
        printf("pos interp   %s\nparameters   %lld\n", interp_name(c->pos_interp),
               (long long)dinoc_model_num_params(m));
        if (pp->resize_mode == DINOC_RESIZE_SHORTEST_EDGE)
            printf("preprocess   resize shorter side to %d (filter %d)", pp->shortest_edge, pp->resample);
        else
            printf("preprocess   resize to %dx%d (filter %d)", pp->resize_w, pp->resize_h, pp->resample);
        if (pp->do_center_crop) printf(", center crop %dx%d", pp->crop_w, pp->crop_h);
        printf(", mean [%g %g %g] std [%g %g %g]\n", pp->mean[0], pp->mean[1], pp->mean[2], pp->std[0],
               pp->std[1], pp->std[2]);
        dinoc_model_free(m);
    }
    dinoc_weights *w = NULL;
    dinoc_status   s = dinoc_weights_open(&w, path);
    if (s) return cli_fail("info", s);
    printf("\n%-60s %-5s %-22s %12s\n", "tensor", "dtype", "shape", "bytes");
    size_t total = 0;
    for (int i = 0; i < dinoc_weights_count(w); i++) {
        const dinoc_tensor *t = dinoc_weights_get(w, i);
        char                shape[64] = "[";
        for (int k = 0; k < t->ndim; k++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", k ? "," : "",
                     (long long)t->shape[k]);
        strncat(shape, "]", sizeof shape - strlen(shape) - 1);
        printf("%-60s %-5s %-22s %12zu\n", t->name, dinoc_dtype_name(t->dtype), shape, t->nbytes);
        total += t->nbytes;
    }
    printf("%d tensors, %zu bytes\n", dinoc_weights_count(w), total);
    dinoc_weights_close(w);
    return 0;
}
