/* cmd_bench.c: `dinoc bench`: forward-pass throughput on random weights, and with --train the
 * throughput of full supervised training steps (bench/run_train.sh compares it with PyTorch). */
#include "cli.h"
#include "../src/nn/vit_train.h"
#include "../src/train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* Peak resident memory of this process so far, in MB (Linux reports ru_maxrss in KB). */
static double peak_rss_mb(void) {
    struct rusage u;
    return getrusage(RUSAGE_SELF, &u) == 0 ? u.ru_maxrss / 1024.0 : -1;
}

/* The --train default: the Fashion-MNIST classifier of tests/test_train_steps.c scaled to the
 * trainer's width and depth (D 128, 6 blocks, 4 heads, patch 7, 28x28x1, 10 classes). */
#define TRAIN_DIM 128
#define TRAIN_DEPTH 6
#define TRAIN_HEADS 4
#define TRAIN_PATCH 7
#define TRAIN_IMAGE 28
#define TRAIN_CHANNELS 1
#define TRAIN_LR 1e-3
#define TRAIN_WD 0.05
#define TRAIN_CLIP 1.0
#define TRAIN_MAX_RUNS 100000

/* Everything one supervised step touches, allocated before the timed loop. */
typedef struct {
    dinoc_model       *m;
    dinoc_train_state *ts;
    dinoc_adamw        opt, hopt;
    dinoc_param_group *groups, hgroups[2];
    int                ngroups, B, T, D, K;
    size_t             nh;
    float             *g, *head, *ghead, *x, *cls, *dcls, *logits, *probs, *dlogits, *dout;
    int32_t           *y;
} train_bench;

static void train_bench_free(train_bench *b) {
    dinoc_train_state_free(b->ts);
    dinoc_adamw_free(&b->opt), dinoc_adamw_free(&b->hopt);
    free(b->groups);
    dinoc_free(b->g), dinoc_free(b->head), dinoc_free(b->ghead), dinoc_free(b->x);
    dinoc_free(b->cls), dinoc_free(b->dcls), dinoc_free(b->logits), dinoc_free(b->probs);
    dinoc_free(b->dlogits), dinoc_free(b->dout), dinoc_free(b->y);
    dinoc_model_free(b->m);
}

static dinoc_status train_bench_init(train_bench *b, dinoc_model *m, int B, int size, int K) {
    memset(b, 0, sizeof *b);
    b->m = m, b->B = B, b->K = K, b->D = m->cfg.dim;
    dinoc_status s;
    if ((s = dinoc_train_state_init(&b->ts, m, B, size, size))) return s;
    dinoc_train_state_dims(b->ts, NULL, &b->T, NULL);
    const int    D = b->D, T = b->T, C = m->cfg.channels;
    const size_t n = m->n_params, nx = (size_t)B * C * size * size;
    b->nh          = (size_t)K * D + K;
    dinoc_adamw_config ac = {0.9, 0.999, 1e-8};
    if ((s = dinoc_adamw_init(&b->opt, n, ac)) || (s = dinoc_adamw_init(&b->hopt, b->nh, ac))) return s;
    int                ne = dinoc_vit_param_entries(m, DINOC_NAMES_ORIG, NULL);
    dinoc_param_entry *e  = calloc((size_t)ne, sizeof *e);
    b->groups             = calloc((size_t)ne, sizeof *b->groups);
    b->g       = dinoc_calloc(n, sizeof(float));
    b->head    = dinoc_calloc(b->nh, sizeof(float));
    b->ghead   = dinoc_calloc(b->nh, sizeof(float));
    b->x       = dinoc_calloc(nx, sizeof(float));
    b->cls     = dinoc_calloc((size_t)B * D, sizeof(float));
    b->dcls    = dinoc_calloc((size_t)B * D, sizeof(float));
    b->logits  = dinoc_calloc((size_t)B * K, sizeof(float));
    b->probs   = dinoc_calloc((size_t)B * K, sizeof(float));
    b->dlogits = dinoc_calloc((size_t)B * K, sizeof(float));
    b->dout    = dinoc_calloc((size_t)B * T * D, sizeof(float));
    b->y       = dinoc_calloc((size_t)B, sizeof(int32_t));
    if (!e || !b->groups || !b->g || !b->head || !b->ghead || !b->x || !b->cls || !b->dcls ||
        !b->logits || !b->probs || !b->dlogits || !b->dout || !b->y) {
        free(e);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    }
    /* one group per tensor, weight decay as the supervised trainer sets it */
    dinoc_vit_param_entries(m, DINOC_NAMES_ORIG, e);
    for (int i = 0; i < ne; i++) {
        int64_t k = 1;
        for (int j = 0; j < e[i].ndim; j++) k *= e[i].shape[j];
        b->groups[i] = (dinoc_param_group){(size_t)(e[i].data - m->params), (size_t)k, 1.0,
                                           e[i].decay ? 1.0 : 0.0, 0, ""};
        snprintf(b->groups[i].name, sizeof b->groups[i].name, "%s", e[i].name);
    }
    free(e);
    b->ngroups    = ne;
    b->hgroups[0] = (dinoc_param_group){0, (size_t)K * D, 1.0, 1.0, 0, "head.weight"};
    b->hgroups[1] = (dinoc_param_group){(size_t)K * D, (size_t)K, 1.0, 0.0, 0, "head.bias"};
    /* random head, images and labels, fixed for every step */
    dinoc_rng rng;
    dinoc_rng_seed(&rng, 7);
    for (size_t i = 0; i < (size_t)K * D; i++) b->head[i] = 0.01f * dinoc_rng_normal(&rng);
    for (size_t i = 0; i < nx; i++) b->x[i] = dinoc_rng_normal(&rng);
    for (int i = 0; i < B; i++) b->y[i] = (int32_t)(dinoc_rng_u64(&rng) % (uint64_t)K);
    return DINOC_OK;
}

/* One step of src/train/supervised.c's loop (no augmentation, drop path or label smoothing):
 * forward, CLS -> linear head -> cross-entropy, backward, global-norm clip, AdamW. No allocation. */
static dinoc_status train_step(train_bench *b, double *loss) {
    const int    B = b->B, T = b->T, D = b->D, K = b->K;
    dinoc_model *m = b->m;
    dinoc_status s;
    memset(b->g, 0, sizeof(float) * m->n_params);
    memset(b->ghead, 0, sizeof(float) * b->nh);
    if ((s = dinoc_vit_forward_train(m, b->ts, b->x, NULL, NULL, NULL))) return s;
    const float *out = dinoc_train_state_output(b->ts);
    for (int i = 0; i < B; i++) memcpy(b->cls + (size_t)i * D, out + (size_t)i * T * D, sizeof(float) * D);
    dinoc_linear_forward(b->logits, b->cls, b->head, b->head + (size_t)K * D, B, D, K);
    *loss = dinoc_cross_entropy_forward(b->probs, b->logits, b->y, B, K, 0.0f);
    memset(b->dlogits, 0, sizeof(float) * B * K);
    memset(b->dcls, 0, sizeof(float) * B * D);
    dinoc_cross_entropy_backward(b->dlogits, b->probs, b->y, B, K, 0.0f, 1.0f);
    dinoc_linear_backward(b->dcls, b->ghead, b->ghead + (size_t)K * D, b->dlogits, b->cls, b->head, B, D, K);
    for (int i = 0; i < B; i++) memcpy(b->dout + (size_t)i * T * D, b->dcls + (size_t)i * D, sizeof(float) * D);
    if ((s = dinoc_vit_backward(m, b->ts, b->dout, b->g))) return s;
    double nb = dinoc_grad_norm(b->g, b->groups, b->ngroups), nh = dinoc_grad_norm(b->ghead, b->hgroups, 2);
    double gn = sqrt(nb * nb + nh * nh);
    if (gn > TRAIN_CLIP) { /* torch.nn.utils.clip_grad_norm_ over backbone and head together */
        float coef = (float)(TRAIN_CLIP / (gn + 1e-6));
        for (size_t i = 0; i < m->n_params; i++) b->g[i] *= coef;
        for (size_t i = 0; i < b->nh; i++) b->ghead[i] *= coef;
    }
    dinoc_adamw_step(&b->opt, m->params, b->g, b->groups, b->ngroups, TRAIN_LR, TRAIN_WD);
    dinoc_adamw_step(&b->hopt, b->head, b->ghead, b->hgroups, 2, TRAIN_LR, TRAIN_WD);
    return DINOC_OK;
}

static int bench_train(const char *model, int dims[6], int classes, int batch, int size, int iters,
                       float min_time, int json) {
    static const int defaults[6] = {TRAIN_DIM, TRAIN_DEPTH, TRAIN_HEADS, TRAIN_PATCH, TRAIN_IMAGE, TRAIN_CHANNELS};
    int custom = 0;
    for (int i = 0; i < 6; i++) custom |= dims[i] != 0;
    if (model && custom) {
        fprintf(stderr, "error: give --model or --dim/--depth/--heads/--patch/--image/--channels, not both\n");
        return 2;
    }
    if (classes < 2) {
        fprintf(stderr, "error: --classes must be at least 2\n");
        return 2;
    }
    dinoc_model     *m = NULL;
    dinoc_vit_config cfg;
    dinoc_status     s;
    if (!model) {
        for (int i = 0; i < 6; i++)
            if (!dims[i]) dims[i] = defaults[i];
        memset(&cfg, 0, sizeof cfg); /* as src/train/supervised.c's model_config */
        cfg.arch = DINOC_ARCH_VIT, cfg.dim = dims[0], cfg.depth = dims[1], cfg.heads = dims[2];
        cfg.patch = dims[3], cfg.image_size = dims[4], cfg.channels = dims[5];
        cfg.ffn_hidden = 4 * cfg.dim, cfg.ffn = DINOC_FFN_MLP, cfg.qkv_bias = 1, cfg.ln_eps = 1e-6f;
        cfg.pos_interp = DINOC_POS_INTERP_SIZE;
        s = dinoc_model_init_random(&m, &cfg, 0);
    } else if (dinoc_vit_preset(&cfg, model) == DINOC_OK)
        s = dinoc_model_init_random(&m, &cfg, 0);
    else
        s = dinoc_model_load(&m, model, NULL);
    if (s) return cli_fail("bench", s);
    const dinoc_vit_config *c = dinoc_model_config(m);
    if (!size) size = c->image_size;
    train_bench b;
    double     *times = malloc(sizeof(double) * TRAIN_MAX_RUNS);
    /* train_bench_init owns m from here on (train_bench_free frees it) */
    if ((s = train_bench_init(&b, m, batch, size, classes)) || !times) {
        train_bench_free(&b);
        free(times);
        return s ? cli_fail("bench", s) : (fprintf(stderr, "error: out of memory\n"), 1);
    }
    double loss0 = 0, loss = 0, total = 0;
    int    done  = 0;
    for (int w = 0; w < 2 && !s; w++) s = train_step(&b, w ? &loss : &loss0); /* warm-up */
    while (!s && done < TRAIN_MAX_RUNS && (iters ? done < iters : (total < min_time || done < 5))) {
        double t0 = cli_now();
        if ((s = train_step(&b, &loss))) break;
        double dt = cli_now() - t0;
        total += dt;
        times[done++] = dt;
    }
    if (s || !done) {
        train_bench_free(&b);
        free(times);
        return cli_fail("bench", s ? s : DINOC_ERR_ARG);
    }
    qsort(times, (size_t)done, sizeof(double), cli_cmp_double);
    double med  = done % 2 ? times[done / 2] : 0.5 * (times[done / 2 - 1] + times[done / 2]);
    double best = times[0], mean = total / done;
    char   name[160];
    if (model)
        snprintf(name, sizeof name, "%s", model);
    else
        snprintf(name, sizeof name, "vit-d%d-l%d-h%d-p%d-i%d-c%d", c->dim, c->depth, c->heads, c->patch,
                 c->image_size, c->channels);
    if (!isfinite(loss)) fprintf(stderr, "dinoc bench: warning: the loss became %g\n", loss);
    if (json)
        printf("{\"impl\":\"dinoc\",\"mode\":\"train\",\"model\":\"%s\",\"batch\":%d,\"threads\":%d,\"size\":%d,"
               "\"classes\":%d,\"params\":%lld,\"img_s\":%.3f,\"ms_per_batch\":%.3f,\"ms_per_batch_mean\":%.3f,"
               "\"ms_per_batch_best\":%.3f,\"runs\":%d,\"loss_first\":%.6f,\"loss_last\":%.6f}\n",
               name, batch, dinoc_get_threads(), size, classes, (long long)(m->n_params + b.nh), batch / med,
               med * 1e3, mean * 1e3, best * 1e3, done, loss0, loss);
    else
        printf("dinoc train %s batch=%d threads=%d size=%d img_s=%.2f ms_per_batch=%.2f (mean %.2f, best %.2f, "
               "%d steps; loss %.4f -> %.4f)\n",
               name, batch, dinoc_get_threads(), size, batch / med, med * 1e3, mean * 1e3, best * 1e3, done,
               loss0, loss);
    train_bench_free(&b);
    free(times);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "dino") == 0) return cmd_bench_dino(argc - 1, argv + 1);
    const char    *model = NULL, *precision = "fp32";
    int            batch = 0, threads = 0, size = 0, iters = 0, json = 0, train = 0, classes = 10;
    int            dims[6] = {0, 0, 0, 0, 0, 0}; /* dim, depth, heads, patch, image, channels */
    float          min_time = 2.0f;
    const opt_spec opts[] = {
        {"model", 'm', OPT_STR, &model,
         "preset name (see dinoc init --help) or a model folder (none: vits14; with --train the "
         "Fashion-MNIST classifier below)"},
        {"batch", 'b', OPT_INT, &batch, "images per step (0: 8, with --train 128)"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"size", 's', OPT_INT, &size,
         "input side in pixels, a multiple of the patch (0: 224, with --train the model's image size)"},
        {"iters", 'n', OPT_INT, &iters, "timed steps (0: until --min-time)"},
        {"min-time", 0, OPT_FLOAT, &min_time, "seconds to keep timing when --iters is 0"},
        {"json", 0, OPT_FLAG, &json, "print one JSON object"},
        {"precision", 'p', OPT_STR, &precision,
         "fp32 or bf16 (bf16 products, fp32 accumulation: see `dinoc embed --help`; the backend "
         "used goes to stderr and the JSON)"},
        {"train", 0, OPT_FLAG, &train,
         "time supervised training steps (forward, linear head, cross-entropy, backward, "
         "grad-norm clip 1.0, AdamW) on random data instead of forwards"},
        {"dim", 0, OPT_INT, &dims[0], "--train without --model: embedding width (0: 128)"},
        {"depth", 0, OPT_INT, &dims[1], "--train without --model: blocks (0: 6)"},
        {"heads", 0, OPT_INT, &dims[2], "--train without --model: attention heads (0: 4)"},
        {"patch", 0, OPT_INT, &dims[3], "--train without --model: patch size (0: 7)"},
        {"image", 0, OPT_INT, &dims[4], "--train without --model: image side (0: 28)"},
        {"channels", 0, OPT_INT, &dims[5], "--train without --model: input channels (0: 1)"},
        {"classes", 0, OPT_INT, &classes, "--train: classes of the linear head"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc bench [options]\n       dinoc bench dino [options]   (DINO training steps; see its --help)";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    free(pos);
    if (rc) return rc == 1 ? 0 : 2;
    int bad_dims = 0;
    for (int i = 0; i < 6; i++) bad_dims |= dims[i] < 0 || (dims[i] && !train);
    if (!batch) batch = train ? 128 : 8;
    if (npos || batch <= 0 || size < 0 || iters < 0 || bad_dims) {
        fprintf(stderr, "error: bad arguments (see --help)\n");
        return 2;
    }
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    if (train && strcmp(precision, "fp32") != 0) {
        fprintf(stderr, "error: --train runs fp32 only (bf16 training is not built)\n");
        return 2;
    }
    if (train) return bench_train(model, dims, classes, batch, size, iters, min_time, json);
    if (!model) model = "vits14";
    if (!size) size = 224;
    dinoc_model     *m = NULL;
    dinoc_vit_config cfg;
    dinoc_precision  prec;
    dinoc_status     s;
    if (dinoc_precision_parse(precision, &prec)) {
        fprintf(stderr, "error: --precision %s: expected fp32 or bf16\n", precision);
        return 2;
    }
    if (dinoc_vit_preset(&cfg, model) == DINOC_OK)
        s = dinoc_model_init_random(&m, &cfg, 0);
    else
        s = dinoc_model_load(&m, model, NULL);
    if (!s) s = dinoc_model_set_precision(m, prec);
    if (s) {
        dinoc_model_free(m);
        return cli_fail("bench", s);
    }
    const char *backend = prec == DINOC_PRECISION_BF16 ? dinoc_bf16_backend() : dinoc_fp32_backend();
    if (prec == DINOC_PRECISION_BF16) fprintf(stderr, "dinoc bench: bf16 products: %s\n", backend);
    const dinoc_vit_config *c = dinoc_model_config(m);
    dinoc_state            *st = NULL;
    if ((s = dinoc_state_init(&st, m, batch, size, size, 0))) {
        dinoc_model_free(m);
        return cli_fail("bench", s);
    }
    size_t n   = (size_t)batch * c->channels * size * size;
    float *img = malloc(n * sizeof(float));
    if (!img) return fprintf(stderr, "error: out of memory\n"), 1;
    for (size_t i = 0; i < n; i++) img[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    dinoc_forward(m, st, img, NULL); /* warm-up */
    double best = 1e30, total = 0;
    int    done = 0;
    while (iters ? done < iters : (total < min_time || done < 3)) {
        double t0 = cli_now();
        if ((s = dinoc_forward(m, st, img, NULL))) break;
        double dt = cli_now() - t0;
        total += dt;
        if (dt < best) best = dt;
        done++;
    }
    free(img);
    dinoc_state_free(st);
    dinoc_model_free(m);
    if (s) return cli_fail("bench", s);
    double mean = total / done;
    if (json)
        printf("{\"impl\":\"dinoc\",\"model\":\"%s\",\"batch\":%d,\"threads\":%d,\"size\":%d,"
               "\"precision\":\"%s\",\"backend\":\"%s\",\"img_s\":%.3f,\"ms_per_batch\":%.3f,\"ms_per_batch_best\":%.3f,"
               "\"runs\":%d,\"rss_mb\":%.1f}\n",
               model, batch, dinoc_get_threads(), size, precision, backend, batch / mean, mean * 1e3, best * 1e3, done,
               peak_rss_mb());
    else
        printf("dinoc %s %s batch=%d threads=%d size=%d img_s=%.2f ms_per_batch=%.2f (best %.2f, %d runs) peak RSS %.0f MB\n",
               model, precision, batch, dinoc_get_threads(), size, batch / mean, mean * 1e3, best * 1e3, done,
               peak_rss_mb());
    return 0;
}
