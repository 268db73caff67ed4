/* cmd_pca.c: `dinoc pca -m MODEL [options] IMAGE|DIR... -o OUT.png`
 *
 * DINOv2's PCA picture (paper Fig. 1/9; reference dino_dinov2.md 4.4): the normed last-layer patch
 * tokens of every input, stacked into one matrix (so related images share one colour code), a
 * first PCA whose component splits foreground from background, a second PCA on the foreground
 * patches only, its three components min-max scaled to RGB, background black (dinoc_pca_rgb).
 * Each patch's colour fills its P x P pixels (nearest upsampling: the picture shows exactly what
 * the model computed per patch; bilinear would invent colours between foreground and black).
 *
 * Inputs are preprocessed by the model's preprocessor_config.json or, with --size S, resized to
 * S x S (the DINOv2 demos feed large squares such as 448); either way cropped at the bottom/right
 * to a multiple of the patch (as `dinoc attn`). One input gives one picture of the input's size;
 * several give a grid, --cols per row, white 4-px gaps. Choices and figures: docs/dense.md.
 * Tested by tests/cli_dense_test.sh. */
#include "cli.h"
#include "../src/eval/dense.h"
#include "../src/viz/viz.h"

#include <math.h>
#include <string.h>

#define PCA_GAP 4

typedef struct {
    int     w, h, gh, gw;
    int64_t row0; /* first row of this input's patches in the stacked matrix */
} pca_item;

static dinoc_status lib(dinoc_status s) { return s ? (cli_fail("pca", s), s) : s; }

/* Patch tokens of one image appended to *tok (grown with realloc; *ntok rows of D). */
static dinoc_status pca_image(const dinoc_model *m, const dinoc_preprocess *pp, const char *path, dinoc_state **st,
                              pca_item *it, float **tok, int64_t *ntok) {
    const dinoc_vit_config *c = dinoc_model_config(m);
    const int               P = c->patch, C = c->channels, D = c->dim;
    dinoc_image             img;
    dinoc_status            s = lib(dinoc_image_load(&img, path));
    if (s) return s;
    int ow, oh;
    dinoc_preprocess_size(pp, img.w, img.h, &ow, &oh);
    it->w = ow - ow % P, it->h = oh - oh % P, it->gw = it->w / P, it->gh = it->h / P, it->row0 = *ntok;
    const int np = it->gw * it->gh;
    float    *full = NULL, *x = NULL, *grown = NULL;
    if (it->w <= 0 || it->h <= 0) {
        fprintf(stderr, "dinoc pca: %s preprocesses to %d x %d, smaller than the patch %d\n", path, ow, oh, P);
        s = DINOC_ERR_ARG;
        goto done;
    }
    full  = malloc(sizeof(float) * 3 * (size_t)ow * oh);
    x     = malloc(sizeof(float) * (size_t)C * it->w * it->h);
    grown = realloc(*tok, sizeof(float) * (size_t)(*ntok + np) * D);
    if (grown) *tok = grown;
    if (!full || !x || !grown) {
        fprintf(stderr, "dinoc pca: out of memory\n");
        s = DINOC_ERR_NOMEM;
        goto done;
    }
    if ((s = lib(dinoc_preprocess_image(pp, &img, full, ow, oh)))) goto done;
    for (int ch = 0; ch < C; ch++) /* the top-left w x h; a 1-channel model takes the first plane */
        for (int y = 0; y < it->h; y++)
            memcpy(x + ((size_t)ch * it->h + y) * it->w, full + ((size_t)ch * oh + y) * ow, sizeof(float) * it->w);
    int sh = 0, sw = 0;
    if (*st) dinoc_state_dims(*st, NULL, NULL, NULL, &sh, &sw);
    if (!*st || sh != it->gh || sw != it->gw) {
        dinoc_state_free(*st);
        *st = NULL;
        if ((s = lib(dinoc_state_init(st, m, 1, it->h, it->w, 0)))) goto done;
    }
    if ((s = lib(dinoc_forward(m, *st, x, NULL)))) goto done;
    int T;
    dinoc_state_dims(*st, NULL, &T, NULL, NULL, NULL);
    /* patches follow CLS and the registers */
    memcpy(*tok + (size_t)*ntok * D, dinoc_state_output(*st) + (size_t)(T - np) * D, sizeof(float) * (size_t)np * D);
    *ntok += np;
done:
    dinoc_image_free(&img);
    free(full), free(x);
    return s;
}

/* The picture: one cell per input (its patch colours, nearest-upsampled by P), a grid of cols. */
static dinoc_status pca_draw(const char *path, const pca_item *it, int n, int cols, int P, const uint8_t *rgb,
                             int *outw, int *outh) {
    int cw = 0, ch = 0;
    for (int i = 0; i < n; i++) cw = it[i].w > cw ? it[i].w : cw, ch = it[i].h > ch ? it[i].h : ch;
    const int     gap = n > 1 ? PCA_GAP : 0, rows = (n + cols - 1) / cols, nc = n < cols ? n : cols;
    const int64_t W = (int64_t)nc * cw + (nc + 1) * gap, H = (int64_t)rows * ch + (rows + 1) * gap;
    if (W * H > ((int64_t)1 << 28)) {
        fprintf(stderr, "dinoc pca: the picture would be %lld x %lld px; use fewer images or a smaller --size\n",
                (long long)W, (long long)H);
        return DINOC_ERR_ARG;
    }
    uint8_t *canvas = malloc((size_t)(W * H * 3));
    if (!canvas) {
        fprintf(stderr, "dinoc pca: out of memory\n");
        return DINOC_ERR_NOMEM;
    }
    memset(canvas, 255, (size_t)(W * H * 3));
    for (int i = 0; i < n; i++) {
        const int ox = gap + (i % cols) * (cw + gap), oy = gap + (i / cols) * (ch + gap);
        for (int y = 0; y < it[i].h; y++)
            for (int x = 0; x < it[i].w; x++)
                memcpy(canvas + ((size_t)(oy + y) * W + ox + x) * 3,
                       rgb + (size_t)(it[i].row0 + (y / P) * it[i].gw + x / P) * 3, 3);
    }
    dinoc_status s = lib(dinoc_viz_png_write(path, canvas, (int)W, (int)H, 3));
    free(canvas);
    *outw = (int)W, *outh = (int)H;
    return s;
}

int cmd_pca(int argc, char **argv) {
    const char          *model = NULL, *out = "pca.png", *sign = "auto";
    int                  size = 0, threads = 0, cols = 4, no_fg = 0;
    dinoc_pca_rgb_config cfg = dinoc_pca_rgb_default();
    const opt_spec       opts[] = {
        {"model", 'm', OPT_STR, &model, "model folder (Hugging Face layout; a training run folder)"},
        {"out", 'o', OPT_STR, &out, "output PNG (one input: its size; several: a grid)"},
        {"size", 's', OPT_INT, &size, "resize inputs to S x S (0: the model's preprocessing)"},
        {"threshold", 0, OPT_FLOAT, &cfg.threshold, "foreground: first-component score above this (scores are centred)"},
        {"sign", 0, OPT_STR, &sign, "first component's orientation: auto (foreground = the minority), pos, neg"},
        {"no-fg", 0, OPT_FLAG, &no_fg, "no foreground split: one PCA over every patch"},
        {"cols", 0, OPT_INT, &cols, "inputs per row of the grid"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc pca -m MODEL [options] IMAGE|DIR... -o OUT.png";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    if (rc) {
        free(pos);
        return rc == 1 ? 0 : 2;
    }
    cfg.foreground = !no_fg;
    cfg.sign       = !strcmp(sign, "auto") ? 0 : !strcmp(sign, "pos") ? 1 : !strcmp(sign, "neg") ? -1 : 2;
    if (!model || npos == 0 || size < 0 || cols < 1 || cfg.sign == 2 || !isfinite(cfg.threshold)) {
        fprintf(stderr, "error: pca needs -m MODEL and IMAGEs; --sign auto|pos|neg; --size >= 0; --cols >= 1 (see --help)\n");
        free(pos);
        return 2;
    }
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    char **files = NULL;
    int    nf    = 0;
    if (cli_collect_images(pos, npos, &files, &nf)) {
        free(pos);
        return 1;
    }
    free(pos);
    dinoc_model *m   = NULL;
    dinoc_state *st  = NULL;
    pca_item    *it  = NULL;
    float       *tok = NULL;
    uint8_t     *rgb = NULL;
    int64_t      ntok = 0, nfg = 0;
    dinoc_status s = lib(dinoc_model_load(&m, model, NULL));
    if (!s && nf == 0) {
        fprintf(stderr, "dinoc pca: no images found\n");
        s = DINOC_ERR_ARG;
    }
    if (!s && !(it = calloc((size_t)nf, sizeof *it))) {
        fprintf(stderr, "dinoc pca: out of memory\n");
        s = DINOC_ERR_NOMEM;
    }
    if (s) goto done;
    const dinoc_vit_config *c  = dinoc_model_config(m);
    dinoc_preprocess        pp = *dinoc_model_preprocess(m);
    if (size) pp.do_resize = 1, pp.resize_mode = DINOC_RESIZE_EXACT, pp.resize_w = pp.resize_h = size, pp.do_center_crop = 0;
    for (int i = 0; i < nf && !s; i++)
        if (!(s = pca_image(m, &pp, files[i], &st, &it[i], &tok, &ntok)))
            fprintf(stderr, "%s: %d x %d px, %d x %d patches\n", files[i], it[i].w, it[i].h, it[i].gw, it[i].gh);
    if (!s && !(rgb = malloc((size_t)ntok * 3))) {
        fprintf(stderr, "dinoc pca: out of memory\n");
        s = DINOC_ERR_NOMEM;
    }
    if (!s) s = lib(dinoc_pca_rgb(rgb, NULL, &nfg, tok, ntok, c->dim, &cfg));
    int w = 0, h = 0;
    if (!s && !(s = pca_draw(out, it, nf, cols, c->patch, rgb, &w, &h)))
        fprintf(stderr, "wrote %s: %d x %d px, %d image%s, %lld of %lld patches foreground\n", out, w, h, nf,
                nf == 1 ? "" : "s", (long long)nfg, (long long)ntok);
done:
    free(it), free(tok), free(rgb);
    dinoc_state_free(st);
    dinoc_model_free(m);
    cli_free_list(files, nf);
    return s ? 1 : 0;
}
