/* cmd_train_clip.c: `dinoc train clip --pairs FILE.tsv|DIR [options]`: contrastive image-text
 * training of a CLIP model (src/train/clip_train.h), from scratch or LiT-style on a locked image
 * tower from `dinoc train dino` (--init-image). Progress on stderr (steps, loss, img/s, ETA); the
 * result as one JSON line on stdout; the run folder holds the CLIPModel folder (loadable by
 * dinoc_clip_load and the zero-shot / retrieval commands), checkpoint, log.jsonl, metrics.json. */
#include "cli.h"
#include "../src/core/dist.h"
#include "../src/train/clip_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double  t0, last;
    int64_t first;
} clip_progress;

/* One line at most twice a second; the rate counts from the first step this process ran. */
static void progress(void *user, int64_t step, int64_t total, double loss, double lr, double img_s) {
    clip_progress *p   = user;
    const double   now = cli_now();
    if (p->last == 0) p->first = step - 1, p->t0 = now - 1e-3;
    if (step != total && now - p->last < 0.5 && p->last != 0) return;
    p->last          = now;
    const double eta = (total - step) * (now - p->t0) / fmax((double)(step - p->first), 1);
    fprintf(stderr, "\rclip step %lld/%lld loss %.4f lr %.2e %.0f img/s ETA %d:%02d   ", (long long)step,
            (long long)total, loss, lr, img_s, (int)eta / 60, (int)eta % 60);
    if (step == total) fprintf(stderr, "\n");
    fflush(stderr);
}

int cmd_train_clip(int argc, char **argv) {
    dinoc_clip_train_config c = dinoc_clip_train_default();
    const char *resume = NULL;
    int         threads = 0, seed = 0, verbose = 0;
    float       budget = 0;
    const opt_spec opts[] = {
        {"pairs", 0, OPT_STR, &c.pairs, "image-caption pairs: a TSV (image<TAB>caption, paths relative to it), a "
                                        "folder with pairs.tsv or train/pairs.tsv, or a folder of images with .txt captions"},
        {"out", 'o', OPT_STR, &c.out, "run folder"},
        {"resume", 0, OPT_STR, &resume, "resume the run in this folder exactly where its checkpoint stopped"},
        {"init-image", 0, OPT_STR, &c.init_image, "LiT: lock this HF ViT/Dinov2 folder (dinoc train dino) as the image tower"},
        {"preset", 0, OPT_STR, &c.preset, "model size: shapes (64 px, width 128, 4+4 blocks, embed 128) or tiny"},
        {"batch", 'b', OPT_INT, &c.batch, "pairs per step (the contrastive batch)"},
        {"epochs", 'e', OPT_INT, &c.epochs, "schedule length in epochs (without --time-budget)"},
        {"lr", 0, OPT_FLOAT, &c.lr, "peak learning rate (AdamW, betas 0.9/0.98, eps 1e-6)"},
        {"min-lr", 0, OPT_FLOAT, &c.min_lr, "final learning rate of the cosine"},
        {"wd", 0, OPT_FLOAT, &c.wd, "weight decay (matrices and embeddings)"},
        {"warmup", 0, OPT_INT, &c.warmup_steps, "linear warmup steps"},
        {"time-budget", 0, OPT_FLOAT, &budget, "seconds for the run: the schedule is sized from the measured step time (0: off)"},
        {"max-steps", 0, OPT_INT, &c.max_steps, "stop after this many steps in total (0: no limit)"},
        {"precision", 0, OPT_STR, &c.precision, "the image tower's products: fp32, bf16 (bf16 operands, fp32 master weights), or auto: bf16 where the CPU has bf16 instructions (AMX, AVX512-BF16), else fp32; the text tower runs fp32"},
        {"caption-groups", 0, OPT_FLAG, &c.caption_groups, "pairs with equal captions are each other's positives "
                                                            "(soft targets; default: CLIP's diagonal)"},
        {"seed", 0, OPT_INT, &seed, "random seed"},
        {"threads", 't', OPT_INT, &threads, "compute threads (0: all cores)"},
        {"ckpt-every", 0, OPT_INT, &c.ckpt_every, "steps between checkpoints (0: at the end only)"},
        {"verbose", 'v', OPT_FLAG, &verbose, "print library info messages"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc train clip --pairs FILE.tsv|DIR [options]\n\nContrastive (symmetric InfoNCE) "
                      "training of a CLIP image-text model.";
    char **pos  = calloc((size_t)argc + 1, sizeof(char *));
    int    npos = 0, rc = pos ? cli_parse(argc, argv, opts, use, pos, &npos) : 2;
    free(pos);
    if (rc) return rc == 1 ? 0 : 2;
    if (npos) {
        fprintf(stderr, "error: train clip: unexpected argument (the data goes in --pairs)\n");
        return 2;
    }
    if (!c.pairs && !resume) {
        fprintf(stderr, "error: train clip: --pairs is required\n%s\n", use);
        return 2;
    }
    if (seed < 0) return cli_bad_seed(seed);
    cli_log_to_stderr(verbose);
    dinoc_set_threads(threads);
    c.seed = (uint64_t)seed, c.time_budget = budget;
    if (resume) c.out = resume, c.resume = 1;
    clip_progress ps = {0, 0, 0};
    c.progress = progress, c.progress_user = &ps;
    dinoc_clip_train_result res;
    dinoc_status            s = dinoc_clip_train(&c, &res);
    fprintf(stderr, "\n");
    if (s) return cli_fail("train clip", s);
    if (dinoc_dist_rank() == 0) /* one summary per job, not per rank */
        printf("{\"steps\":%lld,\"final_loss\":%.5f,\"seconds\":%.1f,\"threads\":%d,\"ranks\":%d,\"out\":\"%s\"}\n",
               (long long)res.steps, res.final_loss, res.seconds, dinoc_get_threads(), dinoc_dist_size(), c.out);
    return 0;
}
