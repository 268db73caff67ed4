/* fuzz_pairs.c: libFuzzer target for image-caption pair lists (src/data/pairs.c): each input is a
 * pairs TSV, parsed in memory by dinoc_pairs_parse_tsv (relative paths joined to a folder name).
 * A list that parses must hold n > 0 pairs, each with a non-empty image path and a caption without
 * a line break; a list that does not must leave nothing allocated and a message.
 *
 * Build and run: scripts/fuzz.sh 60 fuzz_pairs. */
#include "dinoc.h"
#include "../../src/data/pairs.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dinoc_pair_list l;
    dinoc_status    s = dinoc_pairs_parse_tsv(&l, (const char *)data, size, (size & 1) ? "root/dir" : NULL, "fuzz.tsv");
    if (s) {
        if (l.n != 0 || l.image || l.caption || l.negative || !dinoc_last_error()[0]) abort();
        return 0;
    }
    if (l.n < 1) abort();
    int nneg = 0;
    for (int i = 0; i < l.n; i++) {
        if (!l.image[i] || !l.image[i][0] || !l.caption[i]) abort();
        if (strchr(l.caption[i], '\n') || strchr(l.image[i], '\n') || strchr(l.image[i], '\t')) abort();
        if (strchr(l.caption[i], '\t')) abort(); /* a third column is the negative caption */
        if (l.negative[i] && (!l.negative[i][0] || strchr(l.negative[i], '\t') || strchr(l.negative[i], '\n'))) abort();
        nneg += l.negative[i] != NULL;
    }
    if (nneg != l.n_negative) abort();
    dinoc_pairs_free(&l);
    return 0;
}
