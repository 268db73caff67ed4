/* cmd_train.c: `dinoc train dino ...` and `dinoc train dinov2 ...` (self-supervised pretraining;
 * one option table with the entries they share) and `dinoc train supervised ...` (ViT
 * classification), with progress on stderr and results in the run folder. */
#include "cli.h"
#include "../src/core/dist.h"
#include "../src/train/dino.h"
#include "../src/train/dinov2.h"
#include "../src/train/supervised.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double  t0;
    double  last;
    int64_t first; /* step the rate counts from (a resumed run's start) */
} progress_state;

/* One progress line on stderr, at most twice a second; lr < 0 leaves it out. The rate counts from
 * the first step this process saw (a resumed run starts later). */
static void show_progress(progress_state *p, const char *label, int64_t step, int64_t total, int epoch,
                          double loss, double lr, double img_s) {
    double now = cli_now();
    if (p->last == 0) p->first = step - 1, p->t0 = now - 1e-3;
    if (step < total && now - p->last < 0.5 && p->last != 0) return;
    p->last     = now;
    double rate = (step - p->first) / fmax(now - p->t0, 1e-9);
    double eta  = (total - step) / fmax(rate, 1e-9);
    char   lrs[32] = "";
    if (lr >= 0) snprintf(lrs, sizeof lrs, " lr %.2e", lr);
    fprintf(stderr, "\r%s step %lld/%lld epoch %d loss %.4f%s %.0f img/s ETA %d:%02d   ", label, (long long)step,
            (long long)total, epoch, loss, lrs, img_s, (int)eta / 60, (int)eta % 60);
    if (step == total) fprintf(stderr, "\n");
    fflush(stderr);
}

/* --resume RUN writes into RUN unless --out is given. */
static const char *resume_out(int argc, char **argv, const char *resume, const char *out) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-o") || !strncmp(argv[i], "--out", 5)) return out;
    return resume;
}

static void progress(void *user, int64_t step, int64_t total, int epoch, double loss, double lr, double img_s) {
    show_progress(user, "train", step, total, epoch, loss, lr, img_s);
}

static int train_supervised(int argc, char **argv) {
    dinoc_sup_config c       = dinoc_sup_default();
    const char      *resume  = NULL, *data_dir = NULL;
    int              threads = 0, seed = 0, verbose = 0;
    const opt_spec   opts[]  = {
        {"data", 'd', OPT_STR, &c.data, "fashion-mnist, or an image folder (class subfolders; DIR/train + DIR/test if present)"},
        {"data-dir", 0, OPT_STR, &data_dir, "Fashion-MNIST IDX folder (default: Debian's /usr/share/datasets/fashion-mnist)"},
        {"out", 'o', OPT_STR, &c.out, "run folder"},
        {"resume", 0, OPT_STR, &resume, "resume the run in this folder exactly where its checkpoint stopped"},
        {"dim", 0, OPT_INT, &c.dim, "ViT width"},
        {"depth", 0, OPT_INT, &c.depth, "blocks"},
        {"heads", 0, OPT_INT, &c.heads, "attention heads"},
        {"patch", 0, OPT_INT, &c.patch, "patch size"},
        {"image", 0, OPT_INT, &c.image, "input side in pixels"},
        {"channels", 0, OPT_INT, &c.channels, "input channels (1 for Fashion-MNIST, 3 for photos)"},
        {"epochs", 'e', OPT_INT, &c.epochs, "epochs"},
        {"batch", 'b', OPT_INT, &c.batch, "batch size (of one micro-batch with --accum)"},
        {"accum", 0, OPT_INT, &c.accum, "micro-batches accumulated per optimizer step"},
        {"lr", 0, OPT_FLOAT, &c.lr, "peak learning rate (AdamW)"},
        {"min-lr", 0, OPT_FLOAT, &c.min_lr, "final learning rate of the cosine schedule"},
        {"warmup-epochs", 0, OPT_INT, &c.warmup_epochs, "linear warmup epochs"},
        {"wd", 0, OPT_FLOAT, &c.wd, "weight decay (start of its cosine schedule)"},
        {"wd-end", 0, OPT_FLOAT, &c.wd_end, "weight decay at the end"},
        {"label-smoothing", 0, OPT_FLOAT, &c.label_smoothing, "cross-entropy label smoothing"},
        {"drop-path", 0, OPT_FLOAT, &c.drop_path, "stochastic depth of the last block (linear over blocks)"},
        {"clip-grad", 0, OPT_FLOAT, &c.clip_grad, "global gradient-norm clip (0: off)"},
        {"pad", 0, OPT_INT, &c.pad, "random-crop padding in pixels (0: no crop)"},
        {"flip", 0, OPT_INT, &c.flip, "random horizontal flip (1/0)"},
        {"seed", 0, OPT_INT, &seed, "random seed"},
        {"workers", 0, OPT_INT, &c.workers, "data threads"},
        {"threads", 't', OPT_INT, &threads, "compute threads (0: all cores)"},
        {"ckpt-every", 0, OPT_INT, &c.ckpt_every, "steps between checkpoints (0: at epoch ends only)"},
        {"max-steps", 0, OPT_INT, &c.max_steps, "stop after this many steps in total (0: all epochs)"},
        {"eval-every-epoch", 0, OPT_INT, &c.eval_every_epoch, "test accuracy after each epoch (1/0)"},
        {"verbose", 'v', OPT_FLAG, &verbose, "print library info messages (per-epoch accuracy)"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc train supervised [options]\n\nTrains a ViT classifier (linear head on the CLS token).";
    char      **pos = calloc((size_t)argc + 1, sizeof(char *));
    int         npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    free(pos);
    if (rc) return rc == 1 ? 0 : 2;
    if (npos) {
        fprintf(stderr, "error: train supervised takes no positional arguments\n");
        return 2;
    }
    if (seed < 0) return cli_bad_seed(seed);
    if (dinoc_dist_size() > 1) {
        fprintf(stderr, "error: train supervised does not run data-parallel; start it without mpirun\n");
        return 2;
    }
    cli_log_to_stderr(1);
    dinoc_set_threads(threads);
    c.seed     = (uint64_t)seed;
    c.data_dir = data_dir;
    if (resume) c.resume = resume, c.out = resume_out(argc, argv, resume, c.out);
    progress_state ps = {cli_now(), 0, 0};
    c.progress        = progress;
    c.progress_user   = &ps;
    dinoc_sup_result res;
    dinoc_status     s = dinoc_sup_train(&c, &res);
    if (s) {
        fprintf(stderr, "\n");
        return cli_fail("train supervised", s);
    }
    printf("{\"steps\":%lld,\"final_loss\":%.5f,\"test_top1\":%.5f,\"seconds\":%.1f,\"threads\":%d,\"out\":\"%s\"}\n",
           (long long)res.steps, res.final_loss, res.test_top1, res.seconds, dinoc_get_threads(), c.out);
    return 0;
}

static void dino_progress(void *user, int64_t step, int64_t total, int epoch, double loss, double img_s) {
    show_progress(user, "dino", step, total, epoch, loss, -1, img_s);
}

static void dinov2_progress(void *user, int64_t step, int64_t total, int epoch, double loss, double img_s) {
    show_progress(user, "dinov2", step, total, epoch, loss, -1, img_s);
}

/* ---- DINO and DINOv2: one option table with the entries they share --------------------------- */

/* What `train dino` and `train dinov2` parse outside their config: the config's doubles go
 * through floats (the parser's type), plus the run's own settings. */
typedef struct {
    const char *resume, *data_dir;
    int         threads, seed, verbose;
    float       lr, min_lr, wd, wd_end, clip, dp, mom, tt, wtt, stemp, cm, budget;
} ssl_opts;

/* Both configs name these fields alike, so one macro serves either (c: the config, x: ssl_opts). */
#define SSL_GET(x, c)                                                                                   \
    ((x).lr = (float)(c).lr, (x).min_lr = (float)(c).min_lr, (x).wd = (float)(c).wd,                    \
     (x).wd_end = (float)(c).wd_end, (x).clip = (float)(c).clip_grad, (x).dp = (float)(c).drop_path,    \
     (x).mom = (float)(c).momentum_teacher, (x).tt = (float)(c).teacher_temp,                           \
     (x).wtt = (float)(c).warmup_teacher_temp, (x).stemp = (float)(c).student_temp,                     \
     (x).cm = (float)(c).center_momentum)
#define SSL_PUT(x, c)                                                                                   \
    ((c).lr = (x).lr, (c).min_lr = (x).min_lr, (c).wd = (x).wd, (c).wd_end = (x).wd_end,                \
     (c).clip_grad = (x).clip, (c).drop_path = (x).dp, (c).momentum_teacher = (x).mom,                  \
     (c).teacher_temp = (x).tt, (c).warmup_teacher_temp = (x).wtt, (c).student_temp = (x).stemp,        \
     (c).center_momentum = (x).cm, (c).seed = (uint64_t)(x).seed, (c).data_dir = (x).data_dir,          \
     (c).time_budget = (x).budget, (c).crops.channels = (c).channels)
#define SSL_OPTS(c, x)                                                                                                \
    {"data", 'd', OPT_STR, &(c).data, "fashion-mnist, or an image folder (DIR/train used if present; labels unused)"}, \
    {"data-dir", 0, OPT_STR, &(x).data_dir, "Fashion-MNIST IDX folder (default: Debian's /usr/share/datasets/fashion-mnist)"}, \
    {"out", 'o', OPT_STR, &(c).out, "run folder"},                                                                    \
    {"resume", 0, OPT_STR, &(x).resume, "resume the run in this folder exactly where its checkpoint stopped"},        \
    {"dim", 0, OPT_INT, &(c).dim, "ViT width"}, {"depth", 0, OPT_INT, &(c).depth, "blocks"},                         \
    {"heads", 0, OPT_INT, &(c).heads, "attention heads"}, {"patch", 0, OPT_INT, &(c).patch, "patch size"},           \
    {"image", 0, OPT_INT, &(c).image, "input side the model is built for (its position grid)"},                     \
    {"channels", 0, OPT_INT, &(c).channels, "input channels (1 for Fashion-MNIST, 3 for photos)"},                  \
    {"out-dim", 0, OPT_INT, &(c).out_dim, "DINO head output dimension K"},                                           \
    {"head-hidden", 0, OPT_INT, &(c).head_hidden, "DINO head hidden width"},                                         \
    {"head-bottleneck", 0, OPT_INT, &(c).head_bottleneck, "DINO head bottleneck width"},                             \
    {"head-layers", 0, OPT_INT, &(c).head_layers, "DINO head MLP layers"},                                           \
    {"global-crops", 0, OPT_INT, &(c).crops.n_global, "global crops per image"},                                     \
    {"local-crops", 0, OPT_INT, &(c).crops.n_local, "local crops per image"},                                        \
    {"global-size", 0, OPT_INT, &(c).crops.global_size, "global crop side"},                                         \
    {"local-size", 0, OPT_INT, &(c).crops.local_size, "local crop side"},                                            \
    {"global-scale-min", 0, OPT_FLOAT, &(c).crops.global_scale[0], "global crop minimum area fraction"},             \
    {"local-scale-min", 0, OPT_FLOAT, &(c).crops.local_scale[0], "local crop minimum area fraction"},                \
    {"local-scale-max", 0, OPT_FLOAT, &(c).crops.local_scale[1], "local crop maximum area fraction (= global minimum in DINO)"}, \
    {"jitter-p", 0, OPT_FLOAT, &(c).crops.jitter_p, "colour jitter probability"},                                    \
    {"blur-sigma-max", 0, OPT_FLOAT, &(c).crops.blur_sigma[1], "largest Gaussian blur radius"},                      \
    {"solarize-p", 0, OPT_FLOAT, &(c).crops.solarize_p[1], "solarisation probability of the second global crop"},   \
    {"epochs", 'e', OPT_INT, &(c).epochs, "epochs"}, {"batch", 'b', OPT_INT, &(c).batch, "source images per step"},   \
    {"min-lr", 0, OPT_FLOAT, &(x).min_lr, "final learning rate"},                                                    \
    {"warmup-epochs", 0, OPT_INT, &(c).warmup_epochs, "linear lr warmup epochs"},                                     \
    {"wd", 0, OPT_FLOAT, &(x).wd, "weight decay at the start (cosine schedule)"},                                    \
    {"wd-end", 0, OPT_FLOAT, &(x).wd_end, "weight decay at the end"},                                                \
    {"drop-path", 0, OPT_FLOAT, &(x).dp, "stochastic depth rate"},                                                   \
    {"momentum-teacher", 0, OPT_FLOAT, &(x).mom, "teacher EMA momentum at the start (cosine to 1)"},                 \
    {"teacher-temp", 0, OPT_FLOAT, &(x).tt, "teacher temperature after warmup"},                                     \
    {"warmup-teacher-temp", 0, OPT_FLOAT, &(x).wtt, "teacher temperature at the start"},                             \
    {"warmup-teacher-temp-epochs", 0, OPT_INT, &(c).warmup_teacher_temp_epochs, "teacher temperature warmup epochs"}, \
    {"student-temp", 0, OPT_FLOAT, &(x).stemp, "student temperature"},                                               \
    {"center-momentum", 0, OPT_FLOAT, &(x).cm, "center EMA momentum"},                                               \
    {"seed", 0, OPT_INT, &(x).seed, "random seed"}, {"workers", 0, OPT_INT, &(c).workers, "data threads"},           \
    {"threads", 't', OPT_INT, &(x).threads, "compute threads (0: all cores)"},                                       \
    {"ckpt-every", 0, OPT_INT, &(c).ckpt_every, "steps between checkpoints (0: at epoch ends only)"},                \
    {"max-steps", 0, OPT_INT, &(c).max_steps, "stop after this many steps in total (0: all epochs)"},                \
    {"time-budget", 0, OPT_FLOAT, &(x).budget, "seconds for the whole run (monitor included): its length in steps is " \
                                                "fitted and refitted as it runs, at most --epochs (0: off)"},         \
    {"knn-every-epoch", 0, OPT_INT, &(c).knn_every_epoch, "k-NN monitor of the teacher after each epoch (1/0)"},     \
    {"knn-train", 0, OPT_INT, &(c).knn_train, "monitor: training images in the k-NN bank"},                          \
    {"knn-test", 0, OPT_INT, &(c).knn_test, "monitor: test images scored"},                                          \
    {"verbose", 'v', OPT_FLAG, &(x).verbose, "print library info messages"}

/* Parses argv; 0 to go on, else the exit code (help 0, usage error 2). Then sets up logging,
 * threads and the image-folder note. */
static int ssl_parse(int argc, char **argv, const opt_spec *opts, const char *use, const char *cmd, ssl_opts *x,
                     const char *data, int channels) {
    char **pos = calloc((size_t)argc + 1, sizeof(char *));
    int    npos = 0, rc = cli_parse(argc, argv, opts, use, pos, &npos);
    free(pos);
    if (rc) return rc == 1 ? -1 : 2;
    if (npos) {
        fprintf(stderr, "error: train %s takes no positional arguments\n", cmd);
        return 2;
    }
    if (x->seed < 0) return cli_bad_seed(x->seed);
    cli_log_to_stderr(1);
    dinoc_set_threads(x->threads);
    if (strcmp(data, "fashion-mnist") != 0 && channels == 1)
        fprintf(stderr, "note: image folders train 3-channel models; use --channels 3 (and a larger --image)\n");
    return 0;
}

/* The run's outcome: the error, or one JSON summary per job on stdout. */
static int ssl_report(const char *cmd, dinoc_status s, const dinoc_run_result *res, const char *out) {
    if (s) {
        fprintf(stderr, "\n");
        char what[32];
        snprintf(what, sizeof what, "train %s", cmd);
        return cli_fail(what, s);
    }
    if (dinoc_dist_rank() == 0) /* one summary per job, not per rank */
        printf("{\"steps\":%lld,\"final_loss\":%.5f,\"knn_monitor_top1\":%.5f,\"seconds\":%.1f,\"threads\":%d,"
               "\"ranks\":%d,\"out\":\"%s\"}\n", (long long)res->steps, res->final_loss, res->knn_top1, res->seconds,
               dinoc_get_threads(), dinoc_dist_size(), out);
    return 0;
}

static int train_dino(int argc, char **argv) {
    dinoc_dino_config c = dinoc_dino_default();
    ssl_opts          x;
    memset(&x, 0, sizeof x);
    SSL_GET(x, c);
    const opt_spec opts[] = {
        SSL_OPTS(c, x),
        {"arch", 0, OPT_STR, &c.arch, "backbone: vit (--dim --depth --heads --patch), or resnet18, resnet50, resnet_small"},
        {"norm-last-layer", 0, OPT_INT, &c.norm_last_layer, "freeze the last layer's weight norm to 1 (1/0)"},
        {"lr", 0, OPT_FLOAT, &x.lr, "peak learning rate for batch 256 (scaled by batch/256)"},
        {"clip-grad", 0, OPT_FLOAT, &x.clip, "per-tensor gradient norm clip (0: off)"},
        {"freeze-last-layer", 0, OPT_INT, &c.freeze_last_layer, "epochs during which the head's last layer is frozen"},
        {"precision", 0, OPT_STR, &c.precision, "fp32, bf16 (the ViT's products on bf16 operands, fp32 master weights), or auto: bf16 where the CPU has bf16 instructions (AMX, AVX512-BF16), else fp32"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc train dino [options]\n\nSelf-supervised DINO pretraining of a ViT or a ResNet (student, EMA "
                      "teacher, multi-crop).\nThe run folder gets the teacher backbone (an HF ViT or a torchvision-named "
                      "ResNet folder), checkpoint, log.jsonl "
                      "and metrics.json.";
    int rc = ssl_parse(argc, argv, opts, use, "dino", &x, c.data, c.channels);
    if (rc) return rc < 0 ? 0 : rc;
    SSL_PUT(x, c);
    if (x.resume) c.resume = x.resume, c.out = resume_out(argc, argv, x.resume, c.out);
    progress_state ps = {cli_now(), 0, 0};
    c.progress = dino_progress, c.progress_user = &ps;
    dinoc_dino_result r;
    dinoc_status      s   = dinoc_dino_train(&c, &r);
    dinoc_run_result  res = {r.steps, r.final_loss, r.knn_top1, r.seconds};
    return ssl_report("dino", s, &res, c.out);
}

static int train_dinov2(int argc, char **argv) {
    dinoc_dinov2_config c = dinoc_dinov2_default();
    ssl_opts            x;
    memset(&x, 0, sizeof x);
    SSL_GET(x, c);
    float       mp = (float)c.mask_prob, mr0 = (float)c.mask_ratio_min, mr1 = (float)c.mask_ratio_max;
    float       wdino = (float)c.dino_weight, wkoleo = (float)c.koleo_weight, wibot = (float)c.ibot_weight;
    float       ld = (float)c.layer_decay, pem = (float)c.patch_embed_lr_mult, fmom = (float)c.final_momentum_teacher;
    const char *targets = "centering";
    const opt_spec opts[] = {
        SSL_OPTS(c, x),
        {"lr", 0, OPT_FLOAT, &x.lr, "base learning rate for a batch of 1024 (scaled by sqrt(batch/1024))"},
        {"clip-grad", 0, OPT_FLOAT, &x.clip, "global gradient-norm clip per submodule: backbone, each head (0: off)"},
        {"freeze-last-layer", 0, OPT_INT, &c.freeze_last_layer_epochs, "epochs during which the heads' last layers get lr 0"},
        {"iters-per-epoch", 0, OPT_INT, &c.iters_per_epoch, "steps per epoch (0: one pass over the data; DINOv2: 1250)"},
        {"registers", 0, OPT_INT, &c.n_registers, "register tokens (0: plain Dinov2; > 0: Dinov2 with registers)"},
        {"mask-prob", 0, OPT_FLOAT, &mp, "fraction of global crops that get an iBOT mask"},
        {"mask-ratio-min", 0, OPT_FLOAT, &mr0, "smallest masked fraction of patches"},
        {"mask-ratio-max", 0, OPT_FLOAT, &mr1, "largest masked fraction of patches"},
        {"targets", 0, OPT_STR, &targets, "teacher targets: centering (softmax, center EMA) or sinkhorn (Sinkhorn-Knopp)"},
        {"ibot-separate-head", 0, OPT_INT, &c.ibot_separate_head, "a separate iBOT head (1) or the DINO head shared (0)"},
        {"ibot-out-dim", 0, OPT_INT, &c.ibot_out_dim, "separate iBOT head: output dimension"},
        {"ibot-hidden", 0, OPT_INT, &c.ibot_hidden, "separate iBOT head: hidden width"},
        {"ibot-bottleneck", 0, OPT_INT, &c.ibot_bottleneck, "separate iBOT head: bottleneck width"},
        {"ibot-layers", 0, OPT_INT, &c.ibot_layers, "separate iBOT head: MLP layers"},
        {"dino-weight", 0, OPT_FLOAT, &wdino, "weight of the DINO (CLS) loss"},
        {"koleo-weight", 0, OPT_FLOAT, &wkoleo, "weight of the KoLeo regulariser (0: off)"},
        {"ibot-weight", 0, OPT_FLOAT, &wibot, "weight of the iBOT masked patch loss (0: off, no masks)"},
        {"layer-decay", 0, OPT_FLOAT, &ld, "layer-wise lr decay (1: off)"},
        {"patch-embed-lr-mult", 0, OPT_FLOAT, &pem, "lr multiplier of the patch embedding"},
        {"final-momentum-teacher", 0, OPT_FLOAT, &fmom, "teacher EMA momentum at the end"},
        {"precision", 0, OPT_STR, &c.precision, "fp32, bf16 (the ViT's products on bf16 operands, fp32 master weights), or auto: bf16 where the CPU has bf16 instructions (AMX, AVX512-BF16), else fp32"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc train dinov2 [options]\n\nSelf-supervised DINOv2 pretraining of a ViT: DINO's CLS loss, "
                      "iBOT's masked patch loss, KoLeo.\nThe run folder gets the teacher backbone as a Hugging Face "
                      "Dinov2 model, checkpoint, log.jsonl and metrics.json.";
    int rc = ssl_parse(argc, argv, opts, use, "dinov2", &x, c.data, c.channels);
    if (rc) return rc < 0 ? 0 : rc;
    if (strcmp(targets, "centering") && strcmp(targets, "sinkhorn")) {
        fprintf(stderr, "error: --targets %s: centering or sinkhorn\n", targets);
        return 2;
    }
    SSL_PUT(x, c);
    c.targets   = strcmp(targets, "sinkhorn") ? DINOC_TARGETS_CENTERING : DINOC_TARGETS_SINKHORN;
    c.mask_prob = mp, c.mask_ratio_min = mr0, c.mask_ratio_max = mr1, c.dino_weight = wdino;
    c.koleo_weight = wkoleo, c.ibot_weight = wibot, c.layer_decay = ld, c.patch_embed_lr_mult = pem;
    c.final_momentum_teacher = fmom;
    if (x.resume) c.resume = x.resume, c.out = resume_out(argc, argv, x.resume, c.out);
    progress_state ps = {cli_now(), 0, 0};
    c.progress = dinov2_progress, c.progress_user = &ps;
    dinoc_run_result res;
    return ssl_report("dinov2", dinoc_dinov2_train(&c, &res), &res, c.out);
}

int cmd_train(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "supervised") == 0) return train_supervised(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "dino") == 0) return train_dino(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "dinov2") == 0) return train_dinov2(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "clip") == 0) return cmd_train_clip(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "mlm") == 0) return cmd_train_mlm(argc - 1, argv + 1);
    fprintf(stderr, "usage: dinoc train dino|dinov2|clip|mlm|supervised [options]   (see --help of the objective)\n");
    return argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? 0 : 2;
}
