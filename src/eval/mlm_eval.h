/* mlm_eval.h: masked-token accuracy and perplexity of an MLM text model on packed held-out text,
 * beside a unigram-frequency baseline (src/eval/mlm_eval.c).
 *
 * Masking: sequence s is masked on its own with a generator seeded by (seed, s), HF's rule
 * (15% of the tokens that are not [PAD]/[UNK]/[CLS]/[SEP]; 80% [MASK], 10% random, 10% kept), so
 * the numbers repeat for a seed whatever the batch size or thread count.
 * Model: accuracy = share of masked (selected) positions whose argmax is the original token, as
 * HF's MLM accuracy counts them; perplexity = exp(mean cross-entropy over them).
 * Baseline: the training counts of the ordinary tokens (ids >= DINOC_TV_N_SPECIAL); accuracy of
 * always predicting the most frequent one; perplexity of the add-one smoothed unigram
 * p(v) = (c_v + 1) / (N + V_ordinary), which is finite for every target.
 * Tested by tests/test_mlm_train.c against a direct computation. */
#ifndef DINOC_MLM_EVAL_H
#define DINOC_MLM_EVAL_H

#include "../data/textdata.h"
#include "../nn/mlm.h"

typedef struct {
    int64_t n_seq, n_tokens, n_masked;
    double  accuracy, loss, perplexity;
    double  unigram_accuracy, unigram_perplexity;
    int32_t unigram_top; /* model id of the most frequent ordinary token */
    /* the same accuracies over the positions whose input became [MASK] (80% of them): the 10%
     * left unchanged show the answer, which a model learns to copy early on */
    int64_t n_mask_input;
    double  mask_accuracy, unigram_mask_accuracy;
} dinoc_mlm_eval_result;

/* data: packed with the model's vocabulary; counts [m->cfg.vocab]: training counts (vocab file). */
dinoc_status dinoc_mlm_evaluate(const dinoc_text_model *m, const dinoc_text_packed *data,
                                const int64_t *counts, int batch, uint64_t seed,
                                dinoc_mlm_eval_result *r);

/* The eval's never-masked ids and mask parameters for a model vocabulary of V ids (training uses
 * the same). */
dinoc_mlm_mask_params dinoc_mlm_eval_mask_params(int V);

/* The whole evaluation of a model folder (config.json + model.safetensors of a BertForMaskedLM
 * with mlm_vocab.json beside them, as dinoc_mlm_train writes) on text files (n_text 0: the
 * fortunes): the held-out split (every holdout-th entry; 0: every entry) packed at ctx tokens
 * (0: the model's positions). */
typedef struct {
    const char *const *text;
    int                n_text;
    const char        *fortunes_dir, *bpe; /* NULL: defaults (textdata.h, tokenizer.h) */
    int                holdout, ctx, batch;
    uint64_t           seed;
} dinoc_mlm_eval_config;
dinoc_status dinoc_mlm_eval_folder(const char *model_dir, const dinoc_mlm_eval_config *c,
                                   dinoc_mlm_eval_result *r);

#endif
