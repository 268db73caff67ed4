/* cmd_train.c: `dinoc train supervised ...`: ViT classification training with progress on stderr
 * and results in the run folder. */
#include "cli.h"
#include "../src/train/supervised.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double t0;
    double last;
} progress_state;

static void progress(void *user, int64_t step, int64_t total, int epoch, double loss, double lr, double img_s) {
    progress_state *p   = user;
    double          now = cli_now();
    if (step < total && now - p->last < 0.5) return;
    p->last     = now;
    double rate = step / fmax(now - p->t0, 1e-9);
    double eta  = (total - step) / fmax(rate, 1e-9);
    fprintf(stderr, "\rtrain step %lld/%lld epoch %d loss %.4f lr %.2e %.0f img/s ETA %d:%02d   ",
            (long long)step, (long long)total, epoch, loss, lr, img_s, (int)eta / 60, (int)eta % 60);
    if (step == total) fprintf(stderr, "\n");
    fflush(stderr);
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
    cli_log_to_stderr(1);
    dinoc_set_threads(threads);
    c.seed     = (uint64_t)seed;
    c.data_dir = data_dir;
    if (resume) {
        c.resume = resume;
        /* --out defaults to the resumed folder */
        int out_given = 0;
        for (int i = 1; i < argc; i++) out_given |= !strcmp(argv[i], "-o") || !strncmp(argv[i], "--out", 5);
        if (!out_given) c.out = resume;
    }
    progress_state ps = {cli_now(), 0};
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

int cmd_train(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "supervised") == 0) return train_supervised(argc - 1, argv + 1);
    fprintf(stderr, "usage: dinoc train supervised [options]   (see --help of the objective)\n");
    return argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? 0 : 2;
}
