/* cmd_embed.c: `dinoc embed -m MODEL [-o OUT.npy] IMAGE|DIR...`
 *
 * Decodes and preprocesses each image as the model's preprocessor_config.json says, runs the
 * encoder in batches and writes float32 rows in input order (directories expanded, sorted by name)
 * to OUT.npy, with the list of files, one per line, in OUT.txt beside it.
 * Pools: cls [N, D]; mean of the patch tokens [N, D]; cls+mean [N, 2D] (the input of HF's
 * Dinov2ForImageClassification head); patch [N, Np, D]; reg: the register tokens [N, R, D].
 * Registers are never part of the mean.
 * --size S evaluates at S x S: shorter side resized to round(S * 256 / 224) and an S x S center crop
 * for processors that crop (DINOv2's 224/256 ratio), an S x S resize for those that do not.
 * A ResNet folder (config.json model_type "resnet") gives its pooled feature [N, F] (eval-mode BN,
 * fc dropped) for --pool cls or mean; the token pools, --layer and --no-norm are the ViT's. */
#include "cli.h"
#include "../src/eval/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* --batch and --size limits (the library's state takes at most 2^20 images of 16384 x 16384) */
#define EMBED_BATCH_MAX (1 << 20)
#define EMBED_SIZE_MAX  16384

typedef enum { POOL_CLS, POOL_MEAN, POOL_CLS_MEAN, POOL_PATCH, POOL_REG } pool_kind;

static int parse_pool(const char *s, pool_kind *p) {
    if (strcmp(s, "cls") == 0) *p = POOL_CLS;
    else if (strcmp(s, "mean") == 0) *p = POOL_MEAN;
    else if (strcmp(s, "cls+mean") == 0) *p = POOL_CLS_MEAN;
    else if (strcmp(s, "patch") == 0) *p = POOL_PATCH;
    else if (strcmp(s, "reg") == 0) *p = POOL_REG;
    else return -1;
    return 0;
}

static int parse_interp(const char *s, dinoc_pos_interp *p) {
    if (strcmp(s, "size") == 0) *p = DINOC_POS_INTERP_SIZE;
    else if (strcmp(s, "offset") == 0) *p = DINOC_POS_INTERP_OFFSET;
    else if (strcmp(s, "antialias") == 0) *p = DINOC_POS_INTERP_ANTIALIAS;
    else return -1;
    return 0;
}

/* Pools one batch of tokens [b, T, D] into rows of out. */
static void pool_rows(float *out, const float *tok, int b, int T, int D, int R, pool_kind pool) {
    const int Np = T - 1 - R;
    for (int i = 0; i < b; i++) {
        const float *t = tok + (size_t)i * T * D;
        switch (pool) {
        case POOL_CLS: memcpy(out + (size_t)i * D, t, sizeof(float) * D); break;
        case POOL_PATCH:
            memcpy(out + (size_t)i * Np * D, t + (size_t)(1 + R) * D, sizeof(float) * (size_t)Np * D);
            break;
        case POOL_REG: memcpy(out + (size_t)i * R * D, t + D, sizeof(float) * (size_t)R * D); break;
        case POOL_MEAN:
        case POOL_CLS_MEAN: {
            float *o = pool == POOL_MEAN ? out + (size_t)i * D : out + (size_t)i * 2 * D;
            if (pool == POOL_CLS_MEAN) {
                memcpy(o, t, sizeof(float) * D);
                o += D;
            }
            for (int d = 0; d < D; d++) {
                double acc = 0;
                for (int p = 0; p < Np; p++) acc += t[(size_t)(1 + R + p) * D + d];
                o[d] = (float)(acc / Np);
            }
        } break;
        }
    }
}

int cmd_embed(int argc, char **argv) {
    const char *model = NULL, *out = "embeddings.npy", *pool_s = "cls", *interp_s = NULL, *prec_s = "fp32";
    int         layer = -1, size = 0, batch = 8, threads = 0, no_norm = 0, lenient = 0, quiet = 0,
        verbose = 0;
    const opt_spec opts[] = {
        {"model", 'm', OPT_STR, &model, "model folder (Hugging Face layout)"},
        {"out", 'o', OPT_STR, &out, "output .npy (the file list goes to the same name with .txt)"},
        {"pool", 'p', OPT_STR, &pool_s, "cls | mean | cls+mean | patch | reg (register tokens)"},
        {"layer", 'l', OPT_INT, &layer, "block whose output is used (0-based; negative from the end)"},
        {"no-norm", 0, OPT_FLAG, &no_norm, "do not apply the final LayerNorm to that block's output"},
        {"size", 's', OPT_INT, &size, "evaluate at S x S pixels (0: the preprocessor's size)"},
        {"batch", 'b', OPT_INT, &batch, "images per forward pass"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"interp", 0, OPT_STR, &interp_s, "position-embedding resize: size | offset | antialias (default: the model type's HF behaviour)"},
        {"lenient-config", 0, OPT_FLAG, &lenient, "ignore unknown config.json fields"},
        {"precision", 0, OPT_STR, &prec_s,
         "fp32 | bf16: bf16 rounds the operands of the ViT's linear products to bfloat16 and "
         "accumulates in fp32 (LayerNorm, softmax, GELU, attention stay fp32); oneDNN on AMX / "
         "AVX512-BF16 CPUs, emulated elsewhere (same numbers, no speed-up)"},
        {"quiet", 'q', OPT_FLAG, &quiet, "no progress line"},
        {"verbose", 'v', OPT_FLAG, &verbose, "print library info messages"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc embed -m MODEL [options] IMAGE|DIR...";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    pool_kind   pool;
    dinoc_pos_interp interp = DINOC_POS_INTERP_SIZE;
    dinoc_precision  prec   = DINOC_PRECISION_FP32;
    if (rc) {
        free(pos);
        return rc == 1 ? 0 : 2;
    }
    if (!model || npos == 0 || parse_pool(pool_s, &pool) || (interp_s && parse_interp(interp_s, &interp)) ||
        dinoc_precision_parse(prec_s, &prec)) {
        fprintf(stderr, "error: embed needs -m MODEL and at least one IMAGE|DIR; --pool cls|mean|cls+mean|patch|reg; "
                        "--interp size|offset|antialias; --precision fp32|bf16 (see --help)\n");
        free(pos);
        return 2;
    }
    if (batch < 1 || batch > EMBED_BATCH_MAX || size < 0 || size > EMBED_SIZE_MAX) {
        if (batch < 1 || batch > EMBED_BATCH_MAX)
            fprintf(stderr, "error: --batch %d: expected 1..%d images per forward pass\n", batch, EMBED_BATCH_MAX);
        else
            fprintf(stderr, "error: --size %d: expected 0 (the preprocessor's size) or 1..%d\n", size, EMBED_SIZE_MAX);
        free(pos);
        return 2;
    }
    cli_log_to_stderr(verbose);
    dinoc_set_threads(threads);
    char **files = NULL;
    int    n     = 0;
    if (cli_collect_images(pos, npos, &files, &n)) {
        free(pos);
        return 1;
    }
    free(pos);
    if (n == 0) {
        fprintf(stderr, "dinoc embed: no images found\n");
        cli_free_list(files, n);
        return 1;
    }
    dinoc_load_params lp = dinoc_load_default_params();
    lp.strict_config     = !lenient;
    if (interp_s) lp.set_pos_interp = 1, lp.pos_interp = interp;
    lp.precision = prec;
    dinoc_backbone      bb;
    dinoc_status        s  = dinoc_backbone_load(&bb, model, &lp);
    const dinoc_model  *m  = bb.vit;
    const dinoc_resnet *rn = bb.resnet;
    if (!s && rn && (layer != -1 || no_norm || (pool != POOL_CLS && pool != POOL_MEAN))) {
        fprintf(stderr, "error: %s is a ResNet: it has one pooled feature (--pool cls or mean); --pool "
                        "cls+mean|patch|reg, --layer and --no-norm are for ViTs\n", model);
        dinoc_backbone_free(&bb);
        cli_free_list(files, n);
        return 2;
    }
    if (!s && rn && prec != DINOC_PRECISION_FP32) {
        fprintf(stderr, "error: %s is a ResNet: --precision bf16 is for ViTs\n", model);
        dinoc_backbone_free(&bb);
        cli_free_list(files, n);
        return 2;
    }
    if (!s && m && prec != DINOC_PRECISION_FP32 && !quiet)
        fprintf(stderr, "dinoc embed: bf16 products: %s\n", dinoc_bf16_backend());
    if (s) {
        cli_free_list(files, n);
        return cli_fail("embed", s);
    }
    const dinoc_vit_config *c  = m ? dinoc_model_config(m) : NULL;
    dinoc_preprocess        pp = m ? *dinoc_model_preprocess(m) : bb.pp;
    const int               C  = m ? c->channels : rn->cfg.in_channels;
    dinoc_resnet_ws        *ws = NULL;
    if (size) {
        if (pp.do_center_crop) {
            pp.resize_mode   = DINOC_RESIZE_SHORTEST_EDGE;
            pp.shortest_edge = (int)lround(size * 256.0 / 224.0);
            pp.crop_w = pp.crop_h = size;
        } else {
            pp.resize_mode = DINOC_RESIZE_EXACT;
            pp.resize_w = pp.resize_h = size;
        }
    }
    const int D = m ? c->dim : dinoc_resnet_feat_dim(rn), R = m ? c->n_registers : 0;
    int       ow = 0, oh = 0;
    float    *x = NULL, *rows = NULL, *tok = NULL, *pre = NULL; /* pre: [batch, 3, oh, ow] (1-channel models) */
    int      *sizes = calloc((size_t)n * 2, sizeof(int));
    dinoc_image *imgs  = calloc((size_t)batch, sizeof(dinoc_image));
    /* per image of a batch: its decoding, then preprocessing, status and the decoder's message
     * (on the heap: a VLA sized by --batch overflowed the stack) */
    dinoc_status *errs = calloc((size_t)batch, sizeof(dinoc_status));
    char        **msgs = calloc((size_t)batch, sizeof(char *));
    dinoc_state *st    = NULL;
    size_t       row_w = 0; /* floats per output row */
    cli_progress prog;
    cli_progress_start(&prog, "embed");
    if (!sizes || !imgs || !errs || !msgs) {
        s = DINOC_ERR_NOMEM;
        goto done;
    }
    for (int i0 = 0; i0 < n && !s; i0 += batch) {
        int b = n - i0 < batch ? n - i0 : batch;
        /* decode in parallel; each image's failure is kept and the first one reported */
#pragma omp parallel for schedule(dynamic)
        for (int i = 0; i < b; i++) {
            errs[i] = dinoc_image_load(&imgs[i], files[i0 + i]);
            if (errs[i]) msgs[i] = strdup(dinoc_last_error());
        }
        for (int i = 0; i < b; i++) {
            if (errs[i] && !s) {
                if (msgs[i]) fprintf(stderr, "dinoc embed: %s\n", msgs[i]);
                else fprintf(stderr, "dinoc embed: %s: %s\n", files[i0 + i], dinoc_status_str(errs[i]));
                s = errs[i];
            }
            free(msgs[i]);
            msgs[i] = NULL;
        }
        if (s) break;
        /* all images of a batch must preprocess to one size (they do whenever the processor crops or
         * resizes to a fixed size) */
        dinoc_preprocess_size(&pp, imgs[0].w, imgs[0].h, &ow, &oh);
        for (int i = 1; i < b && !s; i++) {
            int w2, h2;
            dinoc_preprocess_size(&pp, imgs[i].w, imgs[i].h, &w2, &h2);
            if (w2 != ow || h2 != oh) {
                fprintf(stderr, "dinoc embed: %s preprocesses to %dx%d but %s to %dx%d; use --batch 1 or --size\n",
                        files[i0], ow, oh, files[i0 + i], w2, h2);
                s = DINOC_ERR_SHAPE;
            }
        }
        if (s) break;
        if (!x || ow != sizes[0] || oh != sizes[1]) {
            int same = x && ow == sizes[0] && oh == sizes[1];
            if (!same) {
                if (rows && (pool == POOL_PATCH || pool == POOL_REG)) {
                    fprintf(stderr, "dinoc embed: --pool patch needs every image at one size (use --size)\n");
                    s = DINOC_ERR_SHAPE;
                    break;
                }
                dinoc_state_free(st);
                dinoc_resnet_ws_free(ws);
                st = NULL, ws = NULL;
                free(x);
                free(tok);
                free(pre);
                x   = malloc(sizeof(float) * (size_t)batch * C * ow * oh);
                /* tokens of a batch; a ResNet's batch of pooled features */
                tok = malloc(sizeof(float) * (size_t)batch * (m ? 1 + R + (ow / c->patch) * (oh / c->patch) : 1) * D);
                /* dinoc_preprocess_image always writes 3 planes: a 1-channel model's images go
                 * through this buffer and keep the first plane (writing 3 planes into x's one
                 * overran it: the "double free or corruption" abort after the .npy was written) */
                pre = C == 3 ? NULL : malloc(sizeof(float) * (size_t)batch * 3 * ow * oh);
                if (!x || !tok || (C != 3 && !pre)) {
                    s = DINOC_ERR_NOMEM;
                    break;
                }
                if (rn ? (s = dinoc_resnet_ws_init(&ws, rn, batch, oh, ow, 0))
                       : (s = dinoc_state_init(&st, m, batch, oh, ow, layer == -1 || layer == c->depth - 1 ? 0 : DINOC_STATE_HIDDEN))) {
                    cli_fail("embed", s);
                    break;
                }
                sizes[0] = ow, sizes[1] = oh;
            }
        }
        int T = 1, gh = 1, gw = 1; /* a ResNet: one pooled row per image */
        if (st) dinoc_state_dims(st, NULL, &T, NULL, &gh, &gw);
        if (!rows) {
            row_w = pool == POOL_PATCH      ? (size_t)gh * gw * D
                    : pool == POOL_REG      ? (size_t)R * D
                    : pool == POOL_CLS_MEAN ? 2 * (size_t)D
                                            : (size_t)D;
            if (row_w == 0) {
                fprintf(stderr, "dinoc embed: --pool reg: this model has no register tokens\n");
                s = DINOC_ERR_ARG;
                break;
            }
            rows  = calloc((size_t)n * row_w, sizeof(float));
            if (!rows) {
                s = DINOC_ERR_NOMEM;
                break;
            }
        }
        const size_t per = (size_t)C * ow * oh;
#pragma omp parallel for schedule(dynamic)
        for (int i = 0; i < b; i++) {
            float *dst = pre ? pre + (size_t)i * 3 * ow * oh : x + i * per;
            errs[i]    = dinoc_preprocess_image(&pp, &imgs[i], dst, ow, oh);
            if (pre) memcpy(x + i * per, dst, sizeof(float) * per);
        }
        for (int i = 0; i < b && !s; i++)
            if (errs[i]) {
                fprintf(stderr, "dinoc embed: %s: preprocessing failed\n", files[i0 + i]);
                s = errs[i];
            }
        for (int i = 0; i < b; i++) dinoc_image_free(&imgs[i]);
        if (s) break;
        /* a short last batch: pad with copies of the first image so the state's batch size holds */
        for (int i = b; i < batch; i++) memcpy(x + i * per, x, per * sizeof(float));
        if (rn) {
            if ((s = dinoc_resnet_forward(rn, x, batch, oh, ow, tok, ws))) {
                cli_fail("embed", s);
                break;
            }
            memcpy(rows + (size_t)i0 * D, tok, sizeof(float) * (size_t)b * D);
            if (!quiet) cli_progress_update(&prog, i0 + b, n, i0 + b == n);
            continue;
        }
        if ((s = dinoc_forward(m, st, x, NULL))) {
            cli_fail("embed", s);
            break;
        }
        const float *t = dinoc_state_output(st);
        if (layer != -1 && layer != c->depth - 1) {
            if ((s = dinoc_state_hidden(m, st, layer, !no_norm, tok))) {
                cli_fail("embed", s);
                break;
            }
            t = tok;
        } else if (no_norm) {
            dinoc_state_hidden(m, st, -1, 0, tok);
            t = tok;
        }
        pool_rows(rows + (size_t)i0 * row_w, t, b, T, D, R, pool);
        if (!quiet) cli_progress_update(&prog, i0 + b, n, i0 + b == n);
    }
    if (!s) {
        int64_t shape[3] = {n, (int64_t)row_w, 0};
        int     ndim     = 2;
        if (pool == POOL_PATCH || pool == POOL_REG) {
            shape[1] = (int64_t)(row_w / D), shape[2] = D, ndim = 3;
        }
        /* The file list beside the array (OUT.npy -> OUT.txt), written atomically too: its temp
         * file is complete before the .npy is written and renamed right after it, so the pair
         * changes together (but for a crash between the two renames); if the list fails, the
         * new .npy is removed and no half pair is left. */
        size_t            len  = strlen(out);
        char             *list = malloc(len + 5);
        dinoc_atomic_file lf;
        if (!list) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        else {
            memcpy(list, out, len + 1);
            if (len > 4 && strcmp(list + len - 4, ".npy") == 0) list[len - 4] = 0;
            strcat(list, ".txt");
            s = dinoc_atomic_open(&lf, list);
            for (int i = 0; !s && i < n; i++)
                if (!(s = dinoc_atomic_write(&lf, files[i], strlen(files[i])))) s = dinoc_atomic_write(&lf, "\n", 1);
            if (s && lf.f) dinoc_atomic_abort(&lf);
            if (s) dinoc_fail_prefix(s, "%s: the file list beside it", out);
        }
        if (!s && (s = dinoc_npy_write(out, rows, ndim, shape))) dinoc_atomic_abort(&lf);
        if (!s && (s = dinoc_atomic_commit(&lf))) { /* (a failed commit removes its temp) */
            dinoc_fail_prefix(s, "%s: the file list beside it", out);
            remove(out);
        }
        if (s) cli_fail("embed", s);
        else fprintf(stderr, "wrote %s: %d x %zu\n", out, n, row_w);
        free(list);
    } else if (s == DINOC_ERR_NOMEM) {
        fprintf(stderr, "dinoc embed: out of memory\n");
    }
done:
    for (int i = 0; imgs && i < batch; i++) dinoc_image_free(&imgs[i]);
    free(imgs);
    free(errs);
    free(msgs);
    free(sizes);
    free(x);
    free(tok);
    free(pre);
    free(rows);
    dinoc_state_free(st);
    dinoc_resnet_ws_free(ws);
    dinoc_backbone_free(&bb);
    cli_free_list(files, n);
    return s ? 1 : 0;
}
