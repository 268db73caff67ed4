/* cmd_eval_mlm.c: `dinoc eval mlm --model RUN [--text FILE [FILE...]] [options]`: masked-token
 * accuracy and perplexity of an MLM text model on held-out text, beside the unigram baseline
 * (src/eval/mlm_eval.h). The held-out entries are those dinoc train mlm left out with the same
 * --holdout and text (default: the fortunes). Tested by tests/cli_mlm_test.sh. */
#include "cli.h"
#include "../src/eval/mlm_eval.h"

#include <stdlib.h>

int cmd_eval_mlm(int argc, char **argv) {
    dinoc_mlm_eval_config c = {NULL, 0, NULL, NULL, 10, 0, 32, 0};
    const char *model = NULL, *text = NULL;
    int         threads = 0, seed = 0, json = 0;
    const opt_spec opts[] = {
        {"model", 'm', OPT_STR, &model, "model folder (a dinoc train mlm run: config.json, model.safetensors, mlm_vocab.json)"},
        {"text", 0, OPT_STR, &text, "text file (more may follow as arguments); default: the fortunes corpus"},
        {"fortunes-dir", 0, OPT_STR, &c.fortunes_dir, "fortunes folder (default " DINOC_FORTUNES_DIR ")"},
        {"vocab", 0, OPT_STR, &c.bpe, "CLIP BPE vocabulary (default: $DINOC_VOCAB or data/)"},
        {"holdout", 0, OPT_INT, &c.holdout, "evaluate every N-th entry (the training run's held-out split; 0: all text)"},
        {"ctx", 0, OPT_INT, &c.ctx, "sequence length (0: the model's positions)"},
        {"batch", 'b', OPT_INT, &c.batch, "sequences per forward"},
        {"seed", 0, OPT_INT, &seed, "masking seed (the numbers repeat for a seed)"},
        {"threads", 't', OPT_INT, &threads, "compute threads (0: all cores)"},
        {"json", 0, OPT_FLAG, &json, "print one JSON object"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc eval mlm --model RUN [--text FILE [FILE...]] [options]\n\nMasked-token accuracy and "
                      "perplexity on held-out text, and the unigram baseline (most frequent training token;\n"
                      "add-one unigram perplexity).";
    char **pos  = calloc((size_t)argc + 1, sizeof(char *));
    int    npos = 0, rc = pos ? cli_parse(argc, argv, opts, use, pos, &npos) : 2;
    if (!rc && (!model || (npos && !text) || c.holdout < 0 || c.holdout == 1)) {
        fprintf(stderr, "error: eval mlm needs --model; extra arguments are text files after --text; --holdout is 0 or >= 2\n");
        rc = 2;
    }
    if (!rc && seed < 0) rc = cli_bad_seed(seed);
    const char **files = rc ? NULL : calloc((size_t)npos + 1, sizeof(char *));
    if (!rc && !files) rc = cli_fail("eval mlm", DINOC_ERR_NOMEM);
    if (rc) {
        free(pos);
        return rc == 1 && !model ? 0 : rc;
    }
    if (text) files[c.n_text++] = text;
    for (int i = 0; i < npos; i++) files[c.n_text++] = pos[i];
    c.text = files, c.seed = (uint64_t)seed;
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    dinoc_mlm_eval_result r;
    dinoc_status          s = dinoc_mlm_eval_folder(model, &c, &r);
    free(files), free(pos);
    if (s) return cli_fail("eval mlm", s);
    if (json)
        printf("{\"model\":\"%s\",\"sequences\":%lld,\"tokens\":%lld,\"masked\":%lld,\"accuracy\":%.5f,\"loss\":%.5f,"
               "\"perplexity\":%.3f,\"unigram_accuracy\":%.5f,\"unigram_perplexity\":%.3f,\"unigram_top\":%d,"
               "\"mask_input\":%lld,\"mask_accuracy\":%.5f,\"unigram_mask_accuracy\":%.5f,\"seed\":%d}\n", model,
               (long long)r.n_seq, (long long)r.n_tokens, (long long)r.n_masked, r.accuracy, r.loss, r.perplexity,
               r.unigram_accuracy, r.unigram_perplexity, (int)r.unigram_top, (long long)r.n_mask_input, r.mask_accuracy,
               r.unigram_mask_accuracy, seed);
    else
        printf("masked tokens: %lld (of %lld in %lld sequences; %lld shown as [MASK])\n"
               "model:   accuracy %.2f%%  perplexity %.2f  ([MASK] inputs: %.2f%%)\n"
               "unigram: accuracy %.2f%%  perplexity %.2f  ([MASK] inputs: %.2f%%; most frequent training token: model id %d)\n",
               (long long)r.n_masked, (long long)r.n_tokens, (long long)r.n_seq, (long long)r.n_mask_input,
               100 * r.accuracy, r.perplexity, 100 * r.mask_accuracy, 100 * r.unigram_accuracy, r.unigram_perplexity,
               100 * r.unigram_mask_accuracy, (int)r.unigram_top);
    return 0;
}
