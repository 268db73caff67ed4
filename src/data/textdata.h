/* textdata.h: text corpora for masked-language-model training (src/data/textdata.c): reading and
 * tokenising files once, a deterministic train / held-out split by entry, the model's compact
 * vocabulary, packing into fixed-length sequences, and shuffled batches that resume exactly.
 *
 *   dinoc_text_corpus *all;   dinoc_text_corpus_read(&all, tok, paths, n);
 *   dinoc_text_corpus *tr;    dinoc_text_corpus_split(&tr, all, 10, 0);   // entries i % 10 != 9
 *   dinoc_text_vocab   v;     dinoc_text_vocab_build(&v, tr, tok);
 *   dinoc_text_packed  p;     dinoc_text_pack(&p, tr, &v, 128);
 *   dinoc_text_loader  ld;    dinoc_text_loader_init(&ld, &p, 32, seed, 0, 0);
 *   dinoc_text_loader_next(&ld, ids, lengths);                            // [32, 128], [32]
 *
 * Entries: a file holding a line that is exactly "%" is in the fortune(6) format and splits at
 * those lines; any other file splits into paragraphs at blank lines. Empty entries are dropped.
 * Tested by tests/test_mlm_train.c. */
#ifndef DINOC_TEXTDATA_H
#define DINOC_TEXTDATA_H

#include "../internal.h"
#include "../text/tokenizer.h"

/* Entries as tokenizer ids (no start/end tokens), in file order then entry order. */
typedef struct {
    int64_t  n_entries;
    int64_t *off;     /* [n_entries + 1]: entry i is ids[off[i] .. off[i+1]) */
    int32_t *ids;     /* [off[n_entries]] */
    int64_t  n_bytes; /* text bytes read */
} dinoc_text_corpus;

/* Reads and tokenises the files (errors name the file and, for bad UTF-8, the entry). */
dinoc_status dinoc_text_corpus_read(dinoc_text_corpus **out, const dinoc_tokenizer *tok,
                                    const char *const *paths, int n_paths);
/* The same from one in-memory text (fortune format if it holds a "%" line); for tests. */
dinoc_status dinoc_text_corpus_from_text(dinoc_text_corpus **out, const dinoc_tokenizer *tok,
                                         const char *text, size_t len);
/* The built-in corpus: the text files of Debian's fortunes package in dir (NULL:
 * DINOC_FORTUNES_DIR), names without .dat / .u8, sorted. *paths (and each string) are malloc'ed:
 * free them with dinoc_text_free_paths. DINOC_ERR_IO if there are none. */
#define DINOC_FORTUNES_DIR "/usr/share/games/fortunes"
dinoc_status dinoc_text_fortunes_paths(char ***paths, int *n, const char *dir);
void         dinoc_text_free_paths(char **paths, int n);
void         dinoc_text_corpus_free(dinoc_text_corpus *c);
/* Both steps of a run: the CLIP BPE tokenizer from bpe (NULL: dinoc_tokenizer_find_vocab) with
 * "[MASK]" added, then the files (n_paths 0: the fortunes in fortunes_dir). name (cap bytes, may be
 * NULL) receives a description of the tokenizer for the run's records. */
dinoc_status dinoc_text_corpus_open(dinoc_text_corpus **out, dinoc_tokenizer **tok, const char *bpe,
                                    const char *const *paths, int n_paths, const char *fortunes_dir,
                                    char *name, size_t cap);
/* Entry i is held out iff holdout > 0 and i % holdout == holdout - 1 (every holdout-th entry,
 * spread over every file); heldout = 1 keeps those, 0 the others. */
dinoc_status dinoc_text_corpus_split(dinoc_text_corpus **out, const dinoc_text_corpus *c,
                                     int holdout, int heldout);

/* The model's vocabulary: the special ids below, then every tokenizer id seen in the training
 * corpus in increasing order. Restricting the output layer to these (about 20k of CLIP's 49408
 * on the fortunes) makes the tied decoder and its softmax 2.2x cheaper; ids the training text
 * never showed map to [UNK], which is never masked. */
enum {
    DINOC_TV_PAD  = 0, /* padding (never attended, never masked) */
    DINOC_TV_UNK  = 1, /* a tokenizer id outside the vocabulary */
    DINOC_TV_MASK = 2, /* [MASK]: tokenizer id of dinoc_tokenizer_add_token("[MASK]") (49408) */
    DINOC_TV_CLS  = 3, /* <|startoftext|> (49406), first token of every sequence */
    DINOC_TV_SEP  = 4, /* <|endoftext|> (49407), after every entry */
    DINOC_TV_N_SPECIAL = 5
};
typedef struct {
    int      n;         /* model vocabulary size */
    int      tok_vocab; /* tokenizer vocabulary size (to_model's length) */
    int32_t *to_tok;    /* [n] tokenizer id of each model id (-1: [PAD], -2: [UNK]) */
    int32_t *to_model;  /* [tok_vocab] model id of each tokenizer id (DINOC_TV_UNK if absent) */
    int64_t *counts;    /* [n] occurrences in the training corpus (its [SEP]s included) */
} dinoc_text_vocab;

/* tok must already hold "[MASK]" (dinoc_tokenizer_add_token). */
dinoc_status dinoc_text_vocab_build(dinoc_text_vocab *v, const dinoc_text_corpus *train,
                                    const dinoc_tokenizer *tok);
void         dinoc_text_vocab_free(dinoc_text_vocab *v);
/* RUN/mlm_vocab.json: {"tokenizer": ..., "mask_token": "[MASK]", "ids": [...to_tok],
 * "counts": [...]}, written atomically; load checks it against the tokenizer's size. */
#define DINOC_TEXT_VOCAB_FILE "mlm_vocab.json"
dinoc_status dinoc_text_vocab_save(const dinoc_text_vocab *v, const char *dir, const char *tokenizer);
dinoc_status dinoc_text_vocab_load(dinoc_text_vocab *v, const char *dir, int tok_vocab);

/* Packing (BERT packs sentences up to max_seq_length): the entries' ids, mapped to the model
 * vocabulary with [SEP] after each, form one stream cut into chunks of T - 1; each sequence is
 * [CLS] + a chunk. Every sequence has length T except possibly the last. */
typedef struct {
    int      T;
    int64_t  n_seq;
    int32_t *ids; /* [n_seq, T] model ids, [PAD] after the length */
    int32_t *len; /* [n_seq] in [2, T] */
    int64_t  n_tokens; /* sum of len */
} dinoc_text_packed;
dinoc_status dinoc_text_pack(dinoc_text_packed *p, const dinoc_text_corpus *c,
                             const dinoc_text_vocab *v, int T);
void         dinoc_text_packed_free(dinoc_text_packed *p);

/* Batches of B packed sequences; epoch e visits them in a permutation drawn from (seed, e), and
 * a batch never straddles epochs (the last n_seq % B of an order are skipped). The position
 * (epoch, index) is all a checkpoint needs to resume. */
typedef struct {
    const dinoc_text_packed *p;
    int      B;
    uint64_t seed;
    int64_t  epoch, index; /* next batch: order(epoch)[index .. index + B) */
    int64_t *perm;         /* [n_seq] the order of perm_epoch */
    int64_t  perm_epoch;
} dinoc_text_loader;
dinoc_status dinoc_text_loader_init(dinoc_text_loader *l, const dinoc_text_packed *p, int B,
                                    uint64_t seed, int64_t epoch, int64_t index);
void         dinoc_text_loader_free(dinoc_text_loader *l);
int64_t      dinoc_text_loader_batches_per_epoch(const dinoc_text_loader *l);
/* ids [B, T], lengths [B]; *epoch_end (may be NULL) = 1 when the batch was an epoch's last. */
void dinoc_text_loader_next(dinoc_text_loader *l, int32_t *ids, int32_t *lengths, int *epoch_end);

#endif
