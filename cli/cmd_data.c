/* cmd_data.c: `dinoc data`, built-in data sets written as image-caption-mask folders.
 *   dinoc data shapes --out DIR -n N --seed S   coloured shapes with compositional captions, masks,
 *                                                and a test split of held-out colour-kind pairs
 *   dinoc data fashion-mnist --out DIR           Fashion-MNIST with templated captions and masks
 * The layout is described in src/data/shapes.h and docs/shapes.md. Progress on stderr; exit codes
 * 0 ok, 1 runtime error, 2 usage error. Tested by tests/cli_data_test.sh. */
#include "cli.h"
#include "../src/data/shapes.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void on_progress(void *user, int64_t done, int64_t total) {
    cli_progress_update(user, (long)done, (long)total, done == total);
}

/* Parses options; returns -1 to go on, else the exit code. */
static int parse(int argc, char **argv, const opt_spec *opts, const char *use) {
    char **pos = calloc((size_t)argc + 1, sizeof(char *));
    int    npos = 0, rc = pos ? cli_parse(argc, argv, opts, use, pos, &npos) : 2;
    if (!rc && npos) {
        fprintf(stderr, "error: unexpected argument '%s' (see --help)\n", pos[0]);
        rc = 2;
    }
    free(pos);
    return rc ? (rc == 1 ? 0 : 2) : -1;
}

/* "18446744073709551615" and smaller decimal seeds: digits only (strtoull would take " -1" as
 * 2^64 - 1), within range. */
static int parse_seed(const char *text, uint64_t *seed) {
    char *end = NULL;
    if (!text || !isdigit((unsigned char)*text)) return -1;
    errno = 0;
    *seed = strtoull(text, &end, 10);
    return *end || errno ? -1 : 0;
}

static int data_shapes(int argc, char **argv) {
    const char *out = NULL, *seed_s = "0", *preview = NULL;
    int         n = 10000, size = 64, single = 0, threads = 0, quiet = 0, preview_n = 16, parts = 0, negs = 0, negs_any = 0,
                negs_rel = 0;
    float       test_frac = 0.2f, pair_frac = 0.5f;
    const opt_spec opts[] = {
        {"out", 'o', OPT_STR, &out, "output folder (created; files in it are replaced)"},
        {"n", 'n', OPT_INT, &n, "items in all (train + test)"},
        {"seed", 's', OPT_STR, &seed_s, "random seed (same seed, same bytes)"},
        {"size", 0, OPT_INT, &size, "image side in px, 32..1024"},
        {"test-frac", 0, OPT_FLOAT, &test_frac, "fraction of items in test/ (held-out colour-kind pairs)"},
        {"pair-frac", 0, OPT_FLOAT, &pair_frac, "fraction of images with two shapes and a relation"},
        {"single", 0, OPT_FLAG, &single, "one shape per image (same as --pair-frac 0)"},
        {"part-captions", 0, OPT_FLAG, &parts,
         "train/pairs.tsv also pairs each two-shape image with each shape's phrase alone (more captions per image)"},
        {"hard-negatives", 0, OPT_FLAG, &negs,
         "train/pairs.tsv gets a third column on two-shape rows: a hard-negative caption with the shapes' "
         "colours swapped (a phrase row: the other shape's colour), for `dinoc train clip` (NegCLIP); only "
         "negatives made of colour-kind pairs seen in training"},
        {"hard-negatives-any", 0, OPT_FLAG, &negs_any,
         "as --hard-negatives, also negatives that name held-out pairs (they hurt: see docs/clip.md)"},
        {"relation-negatives", 0, OPT_FLAG, &negs_rel,
         "train/pairs.tsv gets a third column on two-shape rows: the caption with its relation reversed "
         "(above/below, left of/right of), a hard negative for `dinoc train clip`; phrase rows none"},
        {"preview", 0, OPT_STR, &preview, "also write a contact sheet PNG of the first training items (image | mask)"},
        {"preview-n", 0, OPT_INT, &preview_n, "items on the contact sheet, 1..256"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"quiet", 'q', OPT_FLAG, &quiet, "no progress on stderr"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc data shapes --out DIR [-n N] [--seed S] [options]\n\n"
                      "Writes DIR/classes.txt, DIR/label_names.txt, DIR/meta.json and DIR/{train,test}/ with\n"
                      "images/*.png, masks/*.png, pairs.tsv (image, caption), labels.tsv (image, \"colour kind\")\n"
                      "and label_names.txt. Test images show colour-kind pairs never seen in training.";
    int         rc  = parse(argc, argv, opts, use);
    uint64_t    seed;
    if (rc >= 0) return rc;
    if (!out || n < 1 || size < 32 || size > 1024 || !(test_frac >= 0 && test_frac <= 1) ||
        !(pair_frac >= 0 && pair_frac <= 1) || preview_n < 1 || preview_n > 256 || parse_seed(seed_s, &seed) ||
        negs + negs_any + negs_rel > 1) {
        fprintf(stderr, "error: data shapes needs --out DIR; -n >= 1; --size in [32, 1024]; --test-frac and "
                        "--pair-frac in [0, 1]; --seed a non-negative integer; --preview-n in [1, 256]; at most one "
                        "of --hard-negatives, --hard-negatives-any, --relation-negatives (see --help)\n");
        return 2;
    }
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    dinoc_shapes_config cfg = {size, seed, single ? 0.0f : pair_frac, parts,
                               negs_rel   ? DINOC_SHAPES_NEG_RELATION
                               : negs_any ? DINOC_SHAPES_NEG_ANY
                               : negs     ? DINOC_SHAPES_NEG_SEEN
                                          : DINOC_SHAPES_NEG_NONE};
    cli_progress        p;
    cli_progress_start(&p, "shapes");
    double       t0 = cli_now();
    dinoc_status s  = dinoc_shapes_write(out, &cfg, n, test_frac, quiet ? NULL : on_progress, &p);
    if (s) return cli_fail("data shapes", s);
    long n_test = lround((double)n * test_frac);
    if (!quiet)
        fprintf(stderr, "wrote %s: %ld train + %ld test items of %d x %d px in %.1f s\n", out, n - n_test, n_test,
                size, size, cli_now() - t0);
    if (preview) {
        if ((s = dinoc_shapes_preview(preview, &cfg, preview_n))) return cli_fail("data shapes", s);
        if (!quiet) fprintf(stderr, "wrote %s: the first %d training items (image | mask)\n", preview, preview_n);
    }
    return 0;
}

static int data_fmnist(int argc, char **argv) {
    const char *out = NULL, *split = "both", *data_dir = NULL, *seed_s = "0";
    int         n = 0, threads = 0, quiet = 0;
    const opt_spec opts[] = {
        {"out", 'o', OPT_STR, &out, "output folder (created; files in it are replaced)"},
        {"split", 0, OPT_STR, &split, "train, test or both"},
        {"n", 'n', OPT_INT, &n, "at most this many items per split, the first ones (0: all)"},
        {"seed", 's', OPT_STR, &seed_s, "seed of the caption template choice"},
        {"data-dir", 0, OPT_STR, &data_dir, "Fashion-MNIST IDX folder (none: $DINOC_FASHION_MNIST or Debian's)"},
        {"threads", 't', OPT_INT, &threads, "threads (0: all cores)"},
        {"quiet", 'q', OPT_FLAG, &quiet, "no progress on stderr"},
        {NULL, 0, 0, NULL, NULL},
    };
    const char *use = "usage: dinoc data fashion-mnist --out DIR [--split train|test|both] [-n N] [options]\n\n"
                      "Writes the shapes layout: grey 28 x 28 PNGs, captions such as \"a photo of an ankle boot\",\n"
                      "labels (lower-case class names) and masks (class + 1 where the pixel > 24, else 0).";
    int         rc  = parse(argc, argv, opts, use);
    uint64_t    seed;
    if (rc >= 0) return rc;
    int train = strcmp(split, "train") == 0 || strcmp(split, "both") == 0;
    int test  = strcmp(split, "test") == 0 || strcmp(split, "both") == 0;
    if (!out || n < 0 || (!train && !test) || parse_seed(seed_s, &seed)) {
        fprintf(stderr, "error: data fashion-mnist needs --out DIR; --split train, test or both; -n >= 0; --seed a "
                        "non-negative integer (see --help)\n");
        return 2;
    }
    cli_log_to_stderr(0);
    dinoc_set_threads(threads);
    cli_progress p;
    cli_progress_start(&p, "fashion-mnist");
    dinoc_status s = dinoc_fmnist_write(out, data_dir, train, test, n, seed, quiet ? NULL : on_progress, &p);
    if (s) return cli_fail("data fashion-mnist", s);
    if (!quiet) fprintf(stderr, "wrote %s\n", out);
    return 0;
}

int cmd_data(int argc, char **argv) {
    static const struct {
        const char *name;
        int (*fn)(int, char **);
        const char *help;
    } subs[] = {
        {"shapes", data_shapes, "coloured shapes: captions, masks, held-out compositions in test/"},
        {"fashion-mnist", data_fmnist, "Fashion-MNIST with templated captions and threshold masks"},
    };
    const int nsub = (int)(sizeof subs / sizeof subs[0]);
    if (argc >= 2)
        for (int i = 0; i < nsub; i++)
            if (strcmp(argv[1], subs[i].name) == 0) return subs[i].fn(argc - 1, argv + 1);
    int help = argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0);
    FILE *f  = help ? stdout : stderr;
    if (argc >= 2 && !help) fprintf(f, "dinoc data: unknown data set '%s'\n\n", argv[1]);
    fprintf(f, "usage: dinoc data <set> --out DIR [options]\n\nsets:\n");
    for (int i = 0; i < nsub; i++) fprintf(f, "  %-14s %s\n", subs[i].name, subs[i].help);
    fprintf(f, "\n'dinoc data <set> --help' shows its options and defaults.\n");
    return help ? 0 : 2;
}
