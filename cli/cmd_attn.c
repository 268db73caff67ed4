/* cmd_attn.c: `dinoc attn -m MODEL [IMAGE|DIR...] [--data fashion-mnist --index 0-3] -o OUT.png`
 *
 * DINO's visualize_attention.py (reference dino_dinov2.md 4.4): the last block's attention from
 * the CLS token to the patches, one map per head (register columns dropped), nearest-upsampled by
 * the patch size. One PNG grid, one row per input: the preprocessed input as the model saw it,
 * then one viridis heat map per head (each scaled to its own min..max), then the mean over heads.
 * Panels are scaled up (nearest) to at least --panel px so 28-px Fashion-MNIST items are visible.
 * --threshold T shows DINO's mask instead: the patches holding the fraction T of the head's
 * attention mass are blended half with yellow (as DINO's display_instances blends its masks),
 * the rest of the input is dimmed to a quarter. --npy writes the raw maps [N, heads, gh, gw].
 *
 * Preprocessing is the model's (preprocessor_config.json) or, with --size S, DINO's script: an
 * S x S resize. Either way the result is cropped at the bottom/right to a multiple of the patch
 * (as the script does). Dataset items (8-bit grey) go through the same pipeline; a 1-channel model
 * takes the first channel. Tested by tests/cli_attn_report_test.sh. */
#include "cli.h"
#include "../src/data/data.h"
#include "../src/viz/viz.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#define ATTN_MAX_ITEMS 1024
#define ATTN_GAP 4 /* px between panels */

typedef struct {
    int      w, h;   /* input as fed to the model (multiples of the patch) */
    uint8_t *rgb;    /* [h, w, 3] that input shown as 8-bit RGB */
    float   *maps;   /* [NH + 1, gh, gw]: heads, then their mean */
    int      gh, gw;
} attn_item;

/* Every failure is reported where it happens: lib() for library statuses, oom() for allocations. */
static dinoc_status lib(dinoc_status s) { return s ? (cli_fail("attn", s), s) : s; }
static dinoc_status oom(void) {
    fprintf(stderr, "dinoc attn: out of memory\n");
    return DINOC_ERR_NOMEM;
}

/* "0,1,2,3", "0-3", "5,10-12": sorted as given, duplicates kept. Returns the count, -1 if bad
 * (a number not made of digits only, one out of range, more than cap items). */
static int parse_index(const char *s, int64_t *out, int cap) {
    int n = 0;
    while (*s) {
        char     *end;
        long long a, b;
        if (!isdigit((unsigned char)*s)) return -1; /* (strtoll would take " 1", "+1", "-1") */
        errno = 0;
        a = b = strtoll(s, &end, 10);
        if (errno) return -1;
        if (*end == '-') {
            const char *t = end + 1;
            if (!isdigit((unsigned char)*t)) return -1;
            b = strtoll(t, &end, 10);
            if (errno || b < a) return -1;
        }
        if (b - a >= cap - n) return -1; /* (a >= 0: b - a cannot overflow) */
        for (long long k = 0; k <= b - a; k++) out[n++] = a + k;
        if (*end == ',') end++;
        else if (*end) return -1;
        s = end;
    }
    return n;
}

/* Preprocesses img, runs the model and fills it (maps, shown input). *st is reused while the
 * input size stays the same. */
static dinoc_status run_item(const dinoc_model *m, const dinoc_preprocess *pp, const dinoc_image *img,
                             dinoc_state **st, attn_item *it) {
    const dinoc_vit_config *c = dinoc_model_config(m);
    const int               P = c->patch, C = c->channels, NH = c->heads;
    int                     ow, oh;
    dinoc_preprocess_size(pp, img->w, img->h, &ow, &oh);
    const int W = ow - ow % P, H = oh - oh % P;
    if (W <= 0 || H <= 0) {
        fprintf(stderr, "dinoc attn: a %d x %d image preprocesses to %d x %d, smaller than the patch %d\n",
                img->w, img->h, ow, oh, P);
        return DINOC_ERR_ARG;
    }
    float       *full = malloc(sizeof(float) * 3 * (size_t)ow * oh), *x = malloc(sizeof(float) * (size_t)C * W * H);
    dinoc_status s    = DINOC_OK;
    it->w = W, it->h = H, it->gh = H / P, it->gw = W / P;
    it->rgb  = malloc((size_t)W * H * 3);
    it->maps = malloc(sizeof(float) * (size_t)(NH + 1) * it->gh * it->gw);
    if (!full || !x || !it->rgb || !it->maps) {
        s = oom();
        goto done;
    }
    if ((s = lib(dinoc_preprocess_image(pp, img, full, ow, oh)))) goto done;
    for (int ch = 0; ch < C; ch++) /* top-left W x H of channel ch (a 1-channel model takes the first) */
        for (int y = 0; y < H; y++)
            memcpy(x + ((size_t)ch * H + y) * W, full + ((size_t)ch * oh + y) * ow, sizeof(float) * W);
    for (int y = 0; y < H; y++) /* undo normalise and rescale for the picture */
        for (int xx = 0; xx < W; xx++)
            for (int k = 0; k < 3; k++) {
                int   ch = C == 1 ? 0 : k;
                float v  = full[((size_t)ch * oh + y) * ow + xx];
                if (pp->do_normalize) v = v * pp->std[ch] + pp->mean[ch];
                if (pp->do_rescale && pp->rescale_factor > 0) v /= pp->rescale_factor;
                it->rgb[((size_t)y * W + xx) * 3 + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lrintf(v));
            }
    int sh = 0, sw = 0;
    if (*st) dinoc_state_dims(*st, NULL, NULL, NULL, &sh, &sw);
    if (!*st || sh != it->gh || sw != it->gw) {
        dinoc_state_free(*st);
        *st = NULL;
        if ((s = lib(dinoc_state_init(st, m, 1, H, W, DINOC_STATE_ATTN)))) goto done;
    }
    if ((s = lib(dinoc_forward(m, *st, x, NULL))) || (s = lib(dinoc_viz_cls_attention(m, *st, it->maps)))) goto done;
    const size_t np = (size_t)it->gh * it->gw;
    for (size_t p = 0; p < np; p++) { /* the mean over heads, after the heads */
        double acc = 0;
        for (int h = 0; h < NH; h++) acc += it->maps[h * np + p];
        it->maps[NH * np + p] = (float)(acc / NH);
    }
done:
    free(full);
    free(x);
    return s;
}

/* Draws one panel at (ox, oy) of a canvas cw px wide: the map nearest-upsampled by P * k, as
 * viridis over its min..max, or (thr > 0) the input blended with yellow where DINO's mask keeps
 * it and dimmed elsewhere. */
static dinoc_status draw_map(uint8_t *canvas, int cw, int ox, int oy, const attn_item *it, const float *map,
                             int P, int k, float thr) {
    const int n  = it->gh * it->gw;
    float     lo = map[0], hi = map[0];
    for (int i = 1; i < n; i++) lo = fminf(lo, map[i]), hi = fmaxf(hi, map[i]);
    uint8_t *mask = NULL;
    if (thr > 0) {
        if (!(mask = malloc((size_t)n))) return oom();
        dinoc_status s = lib(dinoc_viz_attn_mask(mask, map, n, thr));
        if (s) {
            free(mask);
            return s;
        }
    }
    for (int y = 0; y < it->h * k; y++)
        for (int x = 0; x < it->w * k; x++) {
            int      iy = y / k, ix = x / k, p = (iy / P) * it->gw + ix / P;
            uint8_t *o  = canvas + ((size_t)(oy + y) * cw + ox + x) * 3;
            if (mask) {
                static const uint8_t hl[3] = {253, 231, 37}; /* viridis' top */
                const uint8_t       *src   = it->rgb + ((size_t)iy * it->w + ix) * 3;
                for (int c = 0; c < 3; c++) o[c] = (uint8_t)(mask[p] ? (src[c] + hl[c]) / 2 : src[c] / 4);
            } else {
                dinoc_viz_viridis(hi > lo ? (map[p] - lo) / (hi - lo) : 0.0f, o);
            }
        }
    free(mask);
    return DINOC_OK;
}

/* The whole-number scale that brings an item's longer side to at least panel px. */
static int panel_scale(const attn_item *it, int panel) {
    int side = it->w > it->h ? it->w : it->h, k = (panel + side - 1) / side;
    return k < 1 ? 1 : k;
}

/* The whole grid: rows of [input, head 0..NH-1, mean], panels scaled by k >= 1 to >= panel px. */
static dinoc_status write_grid(const char *path, const attn_item *it, int n, int NH, int P, int panel, float thr,
                               int *outw, int *outh) {
    int cell_w = 1, cell_h = 1;
    for (int i = 0; i < n; i++) {
        const int k = panel_scale(&it[i], panel);
        if (it[i].w * k > cell_w) cell_w = it[i].w * k;
        if (it[i].h * k > cell_h) cell_h = it[i].h * k;
    }
    const int     cols = NH + 2;
    const int64_t W = (int64_t)cols * cell_w + (cols + 1) * ATTN_GAP, H = (int64_t)n * cell_h + (n + 1) * ATTN_GAP;
    if (W * H > ((int64_t)1 << 28)) {
        fprintf(stderr, "dinoc attn: the grid would be %lld x %lld px; use fewer images or a smaller --size/--panel\n",
                (long long)W, (long long)H);
        return DINOC_ERR_ARG;
    }
    uint8_t *canvas = malloc((size_t)(W * H * 3));
    if (!canvas) return oom();
    memset(canvas, 255, (size_t)(W * H * 3));
    dinoc_status s = DINOC_OK;
    for (int i = 0; i < n && !s; i++) {
        const int k = panel_scale(&it[i], panel);
        const int oy = ATTN_GAP + i * (cell_h + ATTN_GAP), np = it[i].gh * it[i].gw;
        for (int y = 0; y < it[i].h * k; y++) /* the input */
            for (int x = 0; x < it[i].w * k; x++)
                memcpy(canvas + ((size_t)(oy + y) * W + ATTN_GAP + x) * 3, it[i].rgb + ((size_t)(y / k) * it[i].w + x / k) * 3, 3);
        for (int h = 0; h <= NH && !s; h++)
            s = draw_map(canvas, (int)W, ATTN_GAP + (h + 1) * (cell_w + ATTN_GAP), oy, &it[i], it[i].maps + (size_t)h * np, P, k, thr);
    }
    if (!s) s = lib(dinoc_viz_png_write(path, canvas, (int)W, (int)H, 3));
    free(canvas);
    *outw = (int)W, *outh = (int)H;
    return s;
}

static dinoc_status write_npy(const char *path, const attn_item *it, int n, int NH) {
    for (int i = 1; i < n; i++)
        if (it[i].gh != it[0].gh || it[i].gw != it[0].gw) {
            fprintf(stderr, "dinoc attn: --npy needs one patch grid for every input (%dx%d and %dx%d); use --size\n",
                    it[0].gh, it[0].gw, it[i].gh, it[i].gw);
            return DINOC_ERR_SHAPE;
        }
    const size_t per  = (size_t)NH * it[0].gh * it[0].gw;
    float       *all  = malloc(sizeof(float) * per * n);
    if (!all) return oom();
    for (int i = 0; i < n; i++) memcpy(all + i * per, it[i].maps, sizeof(float) * per);
    int64_t      shape[4] = {n, NH, it[0].gh, it[0].gw};
    dinoc_status s        = lib(dinoc_npy_write(path, all, 4, shape));
    free(all);
    return s;
}

int cmd_attn(int argc, char **argv) {
    const char *model = NULL, *out = "attn.png", *npy = NULL, *data = NULL, *data_dir = NULL, *index_s = "0-3";
    int         size = 0, threads = 0, panel = 112, train = 0;
    float       thr  = 0;
    const opt_spec opts[] = {
        {"model", 'm', OPT_STR, &model, "model folder (Hugging Face layout; a training run folder)"},
        {"out", 'o', OPT_STR, &out, "output PNG: a row per input of [input, one map per head, mean of the heads]"},
        {"data", 'd', OPT_STR, &data, "also draw items of a data set: fashion-mnist or an image folder"},
        {"index", 'i', OPT_STR, &index_s, "data set items: 0,1,2 or 0-3 (with --data)"},
        {"data-dir", 0, OPT_STR, &data_dir, "Fashion-MNIST IDX folder (none: $DINOC_FASHION_MNIST or Debian's)"},
        {"train-split", 0, OPT_FLAG, &train, "take Fashion-MNIST items from the training split, not the test split"},
        {"size", 's', OPT_INT, &size, "resize inputs to S x S (DINO's script; 0: the model's preprocessing)"},
        {"threshold", 0, OPT_FLOAT, &thr, "show masks of the patches holding this fraction of each head's attention mass (0: heat maps)"},
        {"panel", 0, OPT_INT, &panel, "scale panels up (nearest) to at least this many px"},
        {"npy", 0, OPT_STR, &npy, "also write the raw maps [N, heads, gh, gw] as .npy"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc attn -m MODEL [options] [IMAGE|DIR...] [--data fashion-mnist --index 0-3]";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    int64_t     idx[ATTN_MAX_ITEMS];
    int         nidx = data ? parse_index(index_s, idx, ATTN_MAX_ITEMS) : 0;
    if (rc) {
        free(pos);
        return rc == 1 ? 0 : 2;
    }
    if (!model || (npos == 0 && !data) || nidx < 0 || size < 0 || panel < 1 || panel > 4096 || !(thr >= 0 && thr <= 1)) {
        fprintf(stderr, "error: attn needs -m MODEL and IMAGEs or --data; --index like 0,1,2 or 0-3 (at most %d); "
                        "--threshold in [0, 1]; --size >= 0; --panel in [1, 4096] (see --help)\n", ATTN_MAX_ITEMS);
        free(pos);
        return 2;
    }
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    char **files = NULL;
    int    nf = 0, n = 0;
    if (cli_collect_images(pos, npos, &files, &nf)) {
        free(pos);
        return 1;
    }
    free(pos);
    dinoc_model   *m  = NULL;
    dinoc_dataset *ds = NULL;
    dinoc_state   *st = NULL;
    attn_item     *it = NULL;
    dinoc_status   s  = lib(dinoc_model_load(&m, model, NULL));
    if (!s && data)
        s = lib(strcmp(data, "fashion-mnist") == 0 ? dinoc_dataset_idx_open(&ds, data_dir, train)
                                                    : dinoc_dataset_folder_open(&ds, data));
    if (!s && nf + nidx == 0) {
        fprintf(stderr, "dinoc attn: no images found\n");
        s = DINOC_ERR_ARG;
    }
    if (!s && nf + nidx > ATTN_MAX_ITEMS) {
        fprintf(stderr, "dinoc attn: %d inputs, at most %d\n", nf + nidx, ATTN_MAX_ITEMS);
        s = DINOC_ERR_ARG;
    }
    if (!s && !(it = calloc((size_t)(nf + nidx), sizeof *it))) s = oom();
    if (s) goto done;
    const dinoc_vit_config *c  = dinoc_model_config(m);
    dinoc_preprocess        pp = *dinoc_model_preprocess(m);
    if (size) pp.do_resize = 1, pp.resize_mode = DINOC_RESIZE_EXACT, pp.resize_w = pp.resize_h = size, pp.do_center_crop = 0;
    for (; n < nf + nidx && !s; n++) {
        dinoc_image img   = {0, 0, 0, NULL};
        int32_t     label = -1;
        if (n < nf) {
            s = lib(dinoc_image_load(&img, files[n]));
        } else if (idx[n - nf] >= dinoc_dataset_size(ds)) {
            fprintf(stderr, "dinoc attn: --index %lld: %s has %lld items\n", (long long)idx[n - nf], data,
                    (long long)dinoc_dataset_size(ds));
            s = DINOC_ERR_ARG;
        } else {
            s = lib(dinoc_dataset_get(ds, idx[n - nf], &img, &label));
        }
        if (!s) s = run_item(m, &pp, &img, &st, &it[n]);
        dinoc_image_free(&img);
        if (s) break;
        if (n < nf)
            fprintf(stderr, "row %d: %s (%dx%d px, %dx%d patches)\n", n + 1, files[n], it[n].w, it[n].h, it[n].gw, it[n].gh);
        else
            fprintf(stderr, "row %d: %s item %lld%s%s%s (%dx%d px)\n", n + 1, data, (long long)idx[n - nf],
                    label >= 0 ? " (" : "", label >= 0 ? dinoc_dataset_class_name(ds, label) : "",
                    label >= 0 ? ")" : "", it[n].w, it[n].h);
    }
    int gw_px = 0, gh_px = 0;
    if (!s && !(s = write_grid(out, it, n, c->heads, c->patch, panel, thr, &gw_px, &gh_px)))
        fprintf(stderr, "wrote %s: %d x %d px, %d row%s of [input, %d heads, mean]\n", out, gw_px, gh_px, n, n == 1 ? "" : "s", c->heads);
    if (!s && npy && !(s = write_npy(npy, it, n, c->heads)))
        fprintf(stderr, "wrote %s: [%d, %d, %d, %d]\n", npy, n, c->heads, it[0].gh, it[0].gw);
done:
    for (int i = 0; it && i < nf + nidx; i++) free(it[i].rgb), free(it[i].maps);
    free(it);
    dinoc_state_free(st);
    dinoc_dataset_free(ds);
    dinoc_model_free(m);
    cli_free_list(files, nf);
    return s ? 1 : 0;
}
