/* tokenizer.h: OpenAI CLIP's byte-level BPE tokenizer (src/text/bpe.c), identical in its ids to
 * openai/CLIP clip/simple_tokenizer.py + clip.tokenize (reference clip_mlm_and_c_peers.md A.6),
 * with ftfy.fix_text left out (docs/tokenizer.md lists what that changes).
 *
 *     dinoc_tokenizer *tok = NULL;
 *     char path[4096];
 *     if (dinoc_tokenizer_find_vocab(path, sizeof path, NULL) != DINOC_OK ||
 *         dinoc_tokenizer_load(&tok, path) != DINOC_OK) { ...dinoc_last_error()... }
 *     int32_t ids[DINOC_CLIP_CONTEXT];
 *     dinoc_tokenize_clip(tok, "a photo of a cat", ids, DINOC_CLIP_CONTEXT, 1, NULL);
 *     // ids = 49406 320 1125 539 320 2368 49407 0 0 ...
 *     dinoc_tokenizer_free(tok);
 *
 * Encoding: html.unescape twice, strip, collapse whitespace runs to one space, lower-case (Python's
 * str.lower, final sigma included), split with CLIP's pattern (letters runs, single digits,
 * punctuation runs, 's 't 're 've 'm 'll 'd, <|startoftext|> and <|endoftext|>), UTF-8 bytes ->
 * byte symbols with "</w>" on the last, then BPE merges by rank. Text must be valid UTF-8
 * (DINOC_ERR_ARG naming the byte offset otherwise). Unicode classes are those of Unicode 14.0
 * (src/text/unicode_tables.c); a code point assigned later counts as punctuation.
 *
 * Threads: after loading (and after any dinoc_tokenizer_add_token), a tokenizer is read-only and
 * may be used from several threads at once; every call keeps its working memory to itself. */
#ifndef DINOC_TEXT_TOKENIZER_H
#define DINOC_TEXT_TOKENIZER_H

#include "dinoc.h"

#define DINOC_CLIP_CONTEXT    77 /* clip.tokenize's context_length */
#define DINOC_TOKENIZER_VOCAB "bpe_simple_vocab_16e6.txt.gz"
#define DINOC_TOKENIZER_MAX_ADDED 64 /* extra tokens (dinoc_tokenizer_add_token) at most */

typedef struct dinoc_tokenizer dinoc_tokenizer;

/* Loads a vocabulary from
 *  - OpenAI's bpe_simple_vocab_16e6.txt.gz (gzip or plain text): line 0 skipped, merges from lines
 *    1..48894; ids = 256 byte symbols, the same with "</w>", one per merge, then
 *    <|startoftext|> (49406) and <|endoftext|> (49407);
 *  - a Hugging Face tokenizer: a folder holding vocab.json and merges.txt, or the path of a
 *    vocab.json with merges.txt beside it (ids from vocab.json, merges lines 1..48894 as HF's
 *    CLIPTokenizer reads them; both special tokens must be in vocab.json).
 * Errors name the file and line or token at fault. */
dinoc_status dinoc_tokenizer_load(dinoc_tokenizer **out, const char *path);
void         dinoc_tokenizer_free(dinoc_tokenizer *t);

/* The vocabulary file to use: `path` if not NULL, else $DINOC_VOCAB, else
 * <folder of the executable>/../data/DINOC_TOKENIZER_VOCAB (build/dinoc -> data/), else
 * ./data/DINOC_TOKENIZER_VOCAB. The first candidate that exists is copied to out (cap bytes);
 * DINOC_ERR_IO lists the places tried if none does (an explicit path or $DINOC_VOCAB that does not
 * exist is an error at once, not skipped). */
dinoc_status dinoc_tokenizer_find_vocab(char *out, size_t cap, const char *path);

/* Raw BPE ids of text[0..len) (no start/end tokens). *n receives the full count; ids[0..max_ids)
 * holds the first min(*n, max_ids) of them (ids may be NULL when max_ids is 0, to count). Invalid
 * UTF-8 or a text over 256 MiB: DINOC_ERR_ARG. */
dinoc_status dinoc_tokenize(const dinoc_tokenizer *t, const char *text, size_t len, int32_t *ids,
                            int max_ids, int *n);

/* clip.tokenize for one NUL-terminated text: ids[0..ctx) = <|startoftext|>, the BPE ids,
 * <|endoftext|>, then zeros. Longer than ctx: DINOC_ERR_ARG unless truncate, which keeps the first
 * ctx ids and makes the last one <|endoftext|> (OpenAI's truncate=True). *n (may be NULL) receives
 * the count before padding (the position of <|endoftext|> plus one). ctx >= 1. */
dinoc_status dinoc_tokenize_clip(const dinoc_tokenizer *t, const char *text, int32_t *ids, int ctx,
                                 int truncate, int *n);

/* Text of ids as OpenAI's decode gives it: the tokens' bytes joined, invalid UTF-8 replaced by
 * U+FFFD (one per maximal invalid subsequence, as Python's errors="replace"), every "</w>" turned
 * into a space (so the text usually ends with a space). Specials decode as their names, added
 * tokens as their text. Writes at most cap - 1 bytes and a NUL to out (cap may be 0); *len (may be
 * NULL) receives the full length. An id outside the vocabulary: DINOC_ERR_ARG naming it. */
dinoc_status dinoc_detokenize(const dinoc_tokenizer *t, const int32_t *ids, int n, char *out,
                              size_t cap, size_t *len);

/* Appends a token after the vocabulary (e.g. "[MASK]" for masked language modelling) and gives its
 * id (49408 for the first one on the OpenAI vocabulary). A string that is already a token gives
 * its existing id. Added tokens are never produced by dinoc_tokenize (text is not searched for
 * them); they exist for ids built by the caller and decode as their text. Not thread-safe: call it
 * before sharing the tokenizer. */
dinoc_status dinoc_tokenizer_add_token(dinoc_tokenizer *t, const char *token, int32_t *id);

int dinoc_tokenizer_vocab_size(const dinoc_tokenizer *t); /* including added tokens */
int dinoc_tokenizer_sot(const dinoc_tokenizer *t);        /* <|startoftext|>: 49406 */
int dinoc_tokenizer_eot(const dinoc_tokenizer *t);        /* <|endoftext|>:   49407 */
/* Id of a token given in its vocabulary spelling ("a</w>", "<|endoftext|>", "[MASK]"), or -1. */
int dinoc_tokenizer_token_id(const dinoc_tokenizer *t, const char *token);
/* Vocabulary spelling of an id (byte symbols, "</w>"), or NULL if out of range. */
const char *dinoc_tokenizer_token_str(const dinoc_tokenizer *t, int id);

#endif /* DINOC_TEXT_TOKENIZER_H */
