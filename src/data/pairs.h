/* pairs.h: image-caption pair lists (src/data/pairs.c), the input of `dinoc train clip --pairs`.
 *
 * Three layouts: a TSV ("image<TAB>caption" per line, or "image<TAB>caption<TAB>negative" where
 * negative is a hard-negative caption for that pair: a caption the image does NOT match, as
 * NegCLIP's attribute swaps; relative image paths are taken from the TSV's folder; blank lines
 * and a trailing \r are ignored), a folder holding pairs.tsv or
 * train/pairs.tsv (the `dinoc data` layout), or a folder of images each with NAME.txt beside it
 * (sorted by name; the caption's line breaks and tabs become spaces). Only the list is read here:
 * the images are decoded by the caller. */
#ifndef DINOC_PAIRS_H
#define DINOC_PAIRS_H

#include "../internal.h"

typedef struct {
    int    n;
    char **image;   /* [n] full paths */
    char **caption; /* [n] */
    char **negative; /* [n] the row's hard-negative caption, NULL where the row has none */
    int    n_negative; /* rows with one */
} dinoc_pair_list;

/* Parses TSV text (len bytes, need not end in 0; a 0 byte inside is an error). dir: the folder
 * relative paths are joined to; where: the name used in messages (the TSV's path). */
dinoc_status dinoc_pairs_parse_tsv(dinoc_pair_list *out, const char *text, size_t len, const char *dir,
                                   const char *where);
/* --pairs PATH: a TSV file, a folder with pairs.tsv / train/pairs.tsv, or a captioned folder. */
dinoc_status dinoc_pairs_load(dinoc_pair_list *out, const char *path);
void         dinoc_pairs_free(dinoc_pair_list *l);

#endif
