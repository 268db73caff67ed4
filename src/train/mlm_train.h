/* mlm_train.h: masked-language-model pretraining of a BERT-style text encoder
 * (src/train/mlm_train.c) on text files or Debian's fortunes, with the CLIP BPE tokenizer plus a
 * [MASK] token, AdamW with warmup + cosine, checkpoints that resume bit for bit (same thread count),
 * log.jsonl, a wall-clock budget, and the held-out evaluation of src/eval/mlm_eval.h at the end.
 *
 * The run folder gets: config.json + model.safetensors (HF BertForMaskedLM names, loadable by
 * dinoc_text_model_load), mlm_vocab.json (model id -> tokenizer id, training counts),
 * checkpoint.safetensors, log.jsonl (one JSON object per step), metrics.json.
 *
 * Checkpoint (RUN/checkpoint.safetensors, written atomically):
 *   params, adam.m, adam.v [n]   the model's flat buffer (dinoc_text_carve layout) and moments
 *   rng U64 [4]                  the masking generator
 *   metadata: format "dinoc-mlm-1", step, adam_step, loader_epoch, loader_index, total_steps
 *             (the schedule's length, fixed once), seconds (training time so far), config (JSON). */
#ifndef DINOC_MLM_TRAIN_H
#define DINOC_MLM_TRAIN_H

#include "../eval/mlm_eval.h"

typedef struct {
    const char *const *text;   /* text files (fortune "%" format or paragraphs) */
    int         n_text;        /* 0: the fortunes corpus */
    const char *fortunes_dir;  /* NULL: DINOC_FORTUNES_DIR */
    const char *vocab;         /* BPE vocabulary file (NULL: dinoc_tokenizer_find_vocab) */
    const char *out;           /* run folder (dinoc_mlm_train_default: "runs/mlm"; with resume, set it
                                * to NULL or to the resumed folder: NULL writes into `resume`) */
    const char *resume;        /* run folder to resume (NULL: fresh) */
    /* model: BERT post-norm encoder, exact GELU, learned positions (max_pos = ctx) */
    int   dim, layers, heads, ffn, ctx;
    /* data */
    int   batch, holdout;      /* holdout: every holdout-th entry is held out (0: none) */
    /* optimisation: AdamW (0.9, 0.999, 1e-8), linear warmup then cosine to min_lr */
    float lr, min_lr, wd, clip_grad;
    int   warmup;              /* steps */
    int   epochs;              /* schedule length in epochs when steps and time_budget are 0 */
    int   steps;               /* schedule length in steps (0: epochs or the budget) */
    double time_budget;        /* seconds: the schedule is sized from the measured step time */
    int   max_steps;           /* stop after this many steps in total (tests; 0: none) */
    uint64_t seed;
    int   ckpt_every;          /* steps between checkpoints (0: only at the end) */
    int   eval;                /* 1: held-out evaluation at the end (metrics.json) */
    /* called after every step (the library never prints) */
    void (*progress)(void *user, int64_t step, int64_t total, double loss, double acc, double lr,
                     double tok_s);
    void *progress_user;
} dinoc_mlm_train_config;

dinoc_mlm_train_config dinoc_mlm_train_default(void);

typedef struct {
    int64_t steps, total_steps;
    double  final_loss, seconds;
    int     vocab;                 /* model vocabulary */
    dinoc_mlm_eval_result eval;    /* n_masked 0 when not evaluated */
} dinoc_mlm_train_result;

dinoc_status dinoc_mlm_train(const dinoc_mlm_train_config *cfg, dinoc_mlm_train_result *res);

/* The BERT config of a training config and vocabulary size (also for tests). */
dinoc_text_config dinoc_mlm_model_config(const dinoc_mlm_train_config *c, int vocab);

#endif
