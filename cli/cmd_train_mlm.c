/* cmd_train_mlm.c: `dinoc train mlm [--text FILE [FILE...]] [options]`: masked-language-model
 * pretraining of a BERT-style encoder (src/train/mlm_train.h) on text files, by default the text of
 * Debian's fortunes package. Progress on stderr (steps, loss, masked accuracy, tokens/s, ETA), the
 * result as one JSON line on stdout; the run folder holds the HF BERT model, mlm_vocab.json,
 * checkpoint, log.jsonl and metrics.json. Tested by tests/cli_mlm_test.sh. */
#include "cli.h"
#include "../src/train/mlm_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double  t0;
    int64_t first;
    double  last;
} mlm_progress;

/* One line at most twice a second; the rate counts from the first step this process ran. */
static void progress(void *user, int64_t step, int64_t total, double loss, double acc, double lr, double tok_s) {
    mlm_progress *p   = user;
    const double  now = cli_now();
    if (p->last == 0) p->first = step - 1, p->t0 = now - 1e-3;
    if (step != total && now - p->last < 0.5 && p->last != 0) return;
    p->last = now;
    double eta = total > 0 ? (total - step) * (now - p->t0) / fmax((double)(step - p->first), 1) : 0;
    char   tot[32] = "?";
    if (total > 0) snprintf(tot, sizeof tot, "%lld", (long long)total);
    fprintf(stderr, "\rmlm step %lld/%s loss %.4f acc %.3f lr %.2e %.0f tok/s ETA %d:%02d   ", (long long)step, tot,
            loss, acc, lr, tok_s, (int)eta / 60, (int)eta % 60);
    if (step == total) fprintf(stderr, "\n");
    fflush(stderr);
}

int cmd_train_mlm(int argc, char **argv) {
    dinoc_mlm_train_config c = dinoc_mlm_train_default();
    const char *text = NULL, *resume = NULL;
    int         threads = 0, seed = 0, verbose = 0, no_eval = 0;
    float       budget = 0;
    const opt_spec opts[] = {
        {"text", 0, OPT_STR, &text, "text file (more may follow as arguments); default: the fortunes corpus"},
        {"fortunes-dir", 0, OPT_STR, &c.fortunes_dir, "fortunes folder (default " DINOC_FORTUNES_DIR ")"},
        {"vocab", 0, OPT_STR, &c.vocab, "CLIP BPE vocabulary (default: $DINOC_VOCAB or data/)"},
        {"out", 'o', OPT_STR, &c.out, "run folder"},
        {"resume", 0, OPT_STR, &resume, "resume the run in this folder exactly where its checkpoint stopped"},
        {"dim", 0, OPT_INT, &c.dim, "width"},
        {"layers", 0, OPT_INT, &c.layers, "encoder layers"},
        {"heads", 0, OPT_INT, &c.heads, "attention heads"},
        {"ffn", 0, OPT_INT, &c.ffn, "FFN hidden width"},
        {"ctx", 0, OPT_INT, &c.ctx, "sequence length (packed; also the model's positions)"},
        {"batch", 'b', OPT_INT, &c.batch, "sequences per step"},
        {"holdout", 0, OPT_INT, &c.holdout, "every N-th entry is held out for evaluation (0: none)"},
        {"lr", 0, OPT_FLOAT, &c.lr, "peak learning rate (AdamW)"},
        {"min-lr", 0, OPT_FLOAT, &c.min_lr, "final learning rate of the cosine"},
        {"wd", 0, OPT_FLOAT, &c.wd, "weight decay (matrices and embeddings)"},
        {"clip-grad", 0, OPT_FLOAT, &c.clip_grad, "global gradient-norm clip (0: off)"},
        {"warmup", 0, OPT_INT, &c.warmup, "linear warmup steps"},
        {"epochs", 'e', OPT_INT, &c.epochs, "schedule length in epochs (without --steps / --time-budget)"},
        {"steps", 0, OPT_INT, &c.steps, "schedule length in steps (0: --epochs or the budget)"},
        {"time-budget", 0, OPT_FLOAT, &budget, "seconds for the run: the schedule is sized from the measured step time (0: off)"},
        {"max-steps", 0, OPT_INT, &c.max_steps, "stop after this many steps in total (0: no limit)"},
        {"seed", 0, OPT_INT, &seed, "random seed"},
        {"threads", 't', OPT_INT, &threads, "compute threads (0: all cores)"},
        {"ckpt-every", 0, OPT_INT, &c.ckpt_every, "steps between checkpoints (0: at the end only)"},
        {"no-eval", 0, OPT_FLAG, &no_eval, "skip the held-out evaluation at the end"},
        {"verbose", 'v', OPT_FLAG, &verbose, "print library info messages"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc train mlm [--text FILE [FILE...]] [options]\n\nMasked-language-model pretraining "
                      "of a BERT-style text encoder (CLIP BPE + [MASK]).\nText files: fortune format (entries split at "
                      "'%' lines) or paragraphs split at blank lines.";
    char **pos  = calloc((size_t)argc + 1, sizeof(char *));
    int    npos = 0, rc = pos ? cli_parse(argc, argv, opts, use, pos, &npos) : 2;
    if (rc) {
        free(pos);
        return rc == 1 ? 0 : 2;
    }
    if (npos && !text) {
        fprintf(stderr, "error: train mlm: positional arguments are text files and follow --text\n");
        free(pos);
        return 2;
    }
    if (seed < 0) {
        free(pos);
        return cli_bad_seed(seed);
    }
    /* --text FILE then the positional files */
    const char **files = calloc((size_t)npos + 1, sizeof(char *));
    if (!files) {
        free(pos);
        return cli_fail("train mlm", DINOC_ERR_NOMEM);
    }
    int nf = 0;
    if (text) files[nf++] = text;
    for (int i = 0; i < npos; i++) files[nf++] = pos[i];
    cli_log_to_stderr(verbose);
    dinoc_set_threads(threads);
    c.text = files, c.n_text = nf, c.seed = (uint64_t)seed, c.time_budget = budget, c.eval = !no_eval;
    if (resume) {
        int has_out = 0;
        for (int i = 1; i < argc; i++) has_out |= !strcmp(argv[i], "-o") || !strncmp(argv[i], "--out", 5);
        c.resume = resume, c.out = has_out ? c.out : NULL; /* NULL: write into the resumed folder */
    }
    mlm_progress ps = {0, 0, 0};
    c.progress = progress, c.progress_user = &ps;
    dinoc_mlm_train_result res;
    dinoc_status           s = dinoc_mlm_train(&c, &res);
    free(files), free(pos);
    if (s) {
        fprintf(stderr, "\n");
        return cli_fail("train mlm", s);
    }
    const dinoc_mlm_eval_result *e = &res.eval;
    fprintf(stderr, "\n");
    printf("{\"steps\":%lld,\"final_loss\":%.5f,\"seconds\":%.1f,\"threads\":%d,\"vocab\":%d,\"masked\":%lld,"
           "\"accuracy\":%.5f,\"perplexity\":%.3f,\"unigram_accuracy\":%.5f,\"unigram_perplexity\":%.3f,"
           "\"mask_accuracy\":%.5f,\"unigram_mask_accuracy\":%.5f,\"out\":\"%s\"}\n",
           (long long)res.steps, res.final_loss, res.seconds, dinoc_get_threads(), res.vocab, (long long)e->n_masked,
           e->accuracy, e->perplexity, e->unigram_accuracy, e->unigram_perplexity, e->mask_accuracy,
           e->unigram_mask_accuracy, resume && !c.out ? resume : c.out);
    return 0;
}
