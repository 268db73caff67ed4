/* mlm.h: BERT's masked-language-modelling objective (src/nn/mlm.c; reference
 * clip_mlm_and_c_peers.md Part A'): the token selection with 80/10/10 replacement, and the
 * prediction head of a text model built with mlm_head = 1:
 *   h = LN(act(dense(hidden[selected])));  logits = h @ tok^T + bias  (decoder tied to the token
 *   embeddings, so its gradient lands in their rows);  loss = mean cross-entropy over selected.
 * Usage per step:
 *   n = dinoc_mlm_mask(ids, pos, tgt, cap, lengths, B, T, &mp, &rng);   // edits ids in place
 *   dinoc_text_forward(m, ts, ids, lengths);
 *   dinoc_mlm_forward(m, ms, dinoc_text_state_hidden(ts), B * T, pos, tgt, n, &loss, &acc);
 *   memset(dhidden, 0, ...); dinoc_mlm_backward(m, ms, dhidden, grads);
 *   dinoc_text_backward(m, ts, dhidden, NULL, grads); */
#ifndef DINOC_MLM_H
#define DINOC_MLM_H

#include "text.h"

typedef struct {
    float          select_p;  /* share of eligible tokens selected (0.15) */
    float          mask_p;    /* of the selected: replaced by mask_id (0.8) */
    float          random_p;  /* of the selected: replaced by a uniform id in [0, vocab) (0.1) */
    int32_t        mask_id;   /* [MASK] ([MASK] = 103 in bert-base-uncased) */
    int            vocab;     /* range of the random replacements */
    const int32_t *never;     /* ids never selected: [CLS], [SEP], [PAD], ... (n_never of them) */
    int            n_never;
} dinoc_mlm_mask_params;

/* 0.15 / 0.8 / 0.1 with the given mask id and vocabulary, no never-mask ids. */
dinoc_mlm_mask_params dinoc_mlm_mask_default(int32_t mask_id, int vocab);

/* HF DataCollatorForLanguageModeling's rule on ids [B, T] in place: each position t < lengths[b]
 * (lengths NULL: all T) whose id is not in never is selected with probability select_p; a
 * selected token becomes mask_id with probability mask_p, a uniform id in [0, vocab) with
 * probability random_p (none if vocab <= 0), else stays. At most cap positions are kept (a
 * uniform subset of the selection when it is larger; BERT's max_predictions_per_seq plays this
 * role). Writes the selected rows b*T + t in increasing order into positions[] and their original
 * ids into targets[]; returns their count. Draws from rng in a fixed order (deterministic for a
 * seed). */
int dinoc_mlm_mask(int32_t *ids, int32_t *positions, int32_t *targets, int cap,
                   const int32_t *lengths, int B, int T, const dinoc_mlm_mask_params *mp,
                   dinoc_rng *rng);

typedef struct dinoc_mlm_state dinoc_mlm_state;
/* Workspace for up to cap selected positions (logits are [cap, vocab]). */
dinoc_status dinoc_mlm_state_init(dinoc_mlm_state **out, const dinoc_text_model *m, int cap);
void         dinoc_mlm_state_free(dinoc_mlm_state *s);
/* Head and loss on hidden [rows, D] (B*T rows; the selected ones are positions[n], each in
 * [0, rows)); targets [n] in [0, vocab). DINOC_ERR_ARG names the first entry out of range.
 * *loss = mean cross-entropy (0 when n = 0), *accuracy = share of argmax == target (either may
 * be NULL). The logits [n, vocab] stay readable through dinoc_mlm_state_logits. */
dinoc_status dinoc_mlm_forward(const dinoc_text_model *m, dinoc_mlm_state *s, const float *hidden,
                               int rows, const int32_t *positions, const int32_t *targets, int n,
                               double *loss, double *accuracy);
const float *dinoc_mlm_state_logits(const dinoc_mlm_state *s);
/* Backward of the last forward (gradient of the mean loss): head and tied-decoder gradients
 * ACCUMULATE into grads (the model's layout; the decoder's into the token-embedding rows), and
 * dhidden [*, D] += the gradient at the selected rows. */
dinoc_status dinoc_mlm_backward(const dinoc_text_model *m, dinoc_mlm_state *s, float *dhidden,
                                float *grads);

#endif
