/* shapes.h: the built-in "shapes" image-caption-mask data set, and the Fashion-MNIST export in the
 * same on-disk layout (src/data/shapes*.c; docs/shapes.md).
 *
 *   shapes.c         the vocabulary, held-out compositions, and rendering one sample from
 *                    (seed, split, index): RGB pixels, a class mask, caption and label
 *   shapes_io.c      writing a whole set (PNGs, pairs.tsv, labels.tsv, meta.json) and a preview
 *   shapes_fmnist.c  Fashion-MNIST written as PNGs + templated captions + threshold masks
 *
 * Layout written (what the CLIP trainer and the segmentation probe read):
 *   DIR/classes.txt                 mask class names, line i = pixel value i (0 = background)
 *   DIR/label_names.txt             every label of the set (zero-shot over all of them)
 *   DIR/{train,test}/images/NNNNNN.png   RGB (Fashion-MNIST: 8-bit grey)
 *   DIR/{train,test}/masks/NNNNNN.png    8-bit grey, pixel = class index, 0 background
 *   DIR/{train,test}/pairs.tsv      "images/NNNNNN.png<TAB>caption"
 *   DIR/{train,test}/labels.tsv     "images/NNNNNN.png<TAB>label"
 *   DIR/{train,test}/label_names.txt the labels occurring in that split
 *   DIR/meta.json                   written last: a set is complete iff meta.json exists
 * Library code: nothing prints; failures return a status naming the path at fault.
 * Tested by tests/test_shapes.c and tests/cli_data_test.sh. */
#ifndef DINOC_SHAPES_H
#define DINOC_SHAPES_H

#include "../internal.h"

#define DINOC_SHAPES_VERSION   1
#define DINOC_SHAPES_KINDS     6  /* circle square triangle star cross ring */
#define DINOC_SHAPES_COLOURS   8  /* red green blue yellow purple orange white black */
#define DINOC_SHAPES_RELATIONS 4  /* above below "left of" "right of" */
#define DINOC_SHAPES_HELD_OUT  12 /* (colour, kind) pairs seen only in the test split: 2 per kind */
#define DINOC_SHAPES_MAX       2  /* shapes per image */
#define DINOC_SHAPES_TEXT      128 /* bytes for a caption (the longest is 62 characters) */

typedef enum { DINOC_SHAPES_TRAIN = 0, DINOC_SHAPES_TEST = 1 } dinoc_shapes_split;

typedef struct {
    int      size;      /* image side in px, 32..1024 (default 64) */
    uint64_t seed;      /* everything random derives from (seed, split, index) */
    float    pair_frac; /* probability of a second shape and a relation (default 0.5; 0: single) */
    int      part_captions; /* 1: train/pairs.tsv also lists each two-shape image with each shape's
                             * phrase alone ("a small red circle"): partial captions, as real
                             * captions often are (CLIP training samples one caption per image) */
    int      hard_negatives; /* DINOC_SHAPES_NEG_*: train/pairs.tsv rows of two-shape images get a
                              * third column, a hard-negative caption (NegCLIP). SEEN: the two
                              * shapes' colours swapped, a phrase row's the other shape's colour,
                              * only negatives made of training compositions; ANY: every swap,
                              * held-out compositions included; RELATION: the whole caption with
                              * its relation reversed ("above" <-> "below", "left of" <-> "right
                              * of"), phrase rows none */
} dinoc_shapes_config;
enum { DINOC_SHAPES_NEG_NONE = 0, DINOC_SHAPES_NEG_SEEN = 1, DINOC_SHAPES_NEG_ANY = 2, DINOC_SHAPES_NEG_RELATION = 3 };

/* One drawn shape. (cx, cy, r) in pixel units, pixel (x, y) covering [x, x+1) x [y, y+1). */
typedef struct {
    int     kind;   /* 0..KINDS-1; its mask value is kind + 1 */
    int     colour; /* 0..COLOURS-1 */
    int     large;  /* 0 small, 1 large */
    float   cx, cy; /* centre */
    float   r;      /* half extent: every kind fits in the disc of radius r around the centre */
    uint8_t rgb[3]; /* the colour drawn: the palette entry with a per-shape jitter */
} dinoc_shape;

typedef struct {
    int         nshapes;  /* 1 or 2 */
    dinoc_shape shapes[DINOC_SHAPES_MAX]; /* drawn in order; shapes[0] is the caption's subject */
    int         relation; /* of shapes[0] to shapes[1] (-1 with one shape) */
    char        caption[DINOC_SHAPES_TEXT]; /* "a small red circle above a large blue square" */
    char        label[DINOC_SHAPES_TEXT];   /* "red circle": shapes[0]'s colour and kind */
} dinoc_shapes_sample;

/* Vocabulary (static strings). Class names for masks: dinoc_shapes_kind_name(k) is class k + 1. */
const char *dinoc_shapes_kind_name(int kind);
const char *dinoc_shapes_colour_name(int colour);
const char *dinoc_shapes_size_name(int large);
const char *dinoc_shapes_relation_name(int relation);
/* 1 if the (colour, kind) composition is held out of the training split. A fixed table, the same
 * for every seed: kind k holds out colours k and (k + 3) mod 8. */
int dinoc_shapes_held_out(int colour, int kind);
/* The (colour, kind) pairs a split's first shapes are drawn from: COLOURS*KINDS - HELD_OUT pairs
 * for train, the HELD_OUT pairs for test, encoded colour * KINDS + kind, ascending. Returns their
 * number; pairs may be NULL. */
int dinoc_shapes_split_pairs(dinoc_shapes_split split, int *pairs);

/* Coverage of pixel (x, y) by a shape, in [0, 1]: the fraction of a 5 x 5 grid of sub-pixel
 * points inside it (the anti-aliasing used for both the colour and the mask). */
float dinoc_shapes_coverage(const dinoc_shape *s, int x, int y);
/* 1 if the point (px, py) (pixel units) is inside the shape. */
int dinoc_shapes_inside(const dinoc_shape *s, float px, float py);

/* Renders item `index` of a split: rgb [size, size, 3] and mask [size, size] (either may be NULL),
 * and its description. Depends only on (cfg, split, index), so items can be made in any order and
 * on any thread. Labels are balanced: the first shape's (colour, kind) walks a fresh random
 * permutation of the split's pairs every len(pairs) items, so each pair occurs floor(n/P) or
 * ceil(n/P) times among any n consecutive-from-zero items. Mask pixel = kind + 1 of the last-drawn
 * shape covering at least half the pixel, else 0. */
dinoc_status dinoc_shapes_render(dinoc_shapes_sample *out, uint8_t *rgb, uint8_t *mask,
                                 const dinoc_shapes_config *cfg, dinoc_shapes_split split,
                                 int64_t index);

/* ---- writing sets (shapes_io.c, shapes_fmnist.c) -------------------------------------------- */

/* Called after each block of items with the items written so far (may be NULL). */
typedef void (*dinoc_shapes_progress_fn)(void *user, int64_t done, int64_t total);

/* Writes n items (n_test = round(n * test_frac) of them in test/, the rest in train/) into dir,
 * creating it. Images are rendered and encoded on all threads; the result is byte-identical for
 * any thread count. A failure names the file at fault. */
dinoc_status dinoc_shapes_write(const char *dir, const dinoc_shapes_config *cfg, int64_t n,
                                float test_frac, dinoc_shapes_progress_fn progress, void *user);
/* A contact sheet of `count` training items (a grid, 4 per row; each cell is the image and its
 * mask in a fixed colour per class, side by side) written as a PNG. */
dinoc_status dinoc_shapes_preview(const char *path, const dinoc_shapes_config *cfg, int count);

/* Fashion-MNIST (IDX files in idx_dir; NULL: $DINOC_FASHION_MNIST or Debian's) in the same layout:
 * the first `limit` items of each split asked for (limit <= 0: all), grey PNGs, captions from one of
 * DINOC_FMNIST_TEMPLATES templates chosen by (seed, split, index), label = the class name in lower
 * case, mask = class + 1 where the pixel > DINOC_FMNIST_MASK_THRESHOLD, else 0. */
#define DINOC_FMNIST_TEMPLATES      6
#define DINOC_FMNIST_MASK_THRESHOLD 24
dinoc_status dinoc_fmnist_write(const char *dir, const char *idx_dir, int train, int test,
                                int64_t limit, uint64_t seed, dinoc_shapes_progress_fn progress,
                                void *user);
/* Caption template t (0..TEMPLATES-1) with the article fitted: "a photo of an ankle boot". */
void        dinoc_fmnist_caption(char *out, size_t cap, int template_id, const char *name);
const char *dinoc_fmnist_class_name(int k); /* "t-shirt", "trouser", ... "ankle boot" */

/* ---- inside src/data/shapes*.c only ------------------------------------------------------------ */

/* Writes an 8-bit image (c = 1 or 3) as PNG to "<path>.tmp.<pid>", then renames it over path.
 * No fsync: per-image fsyncs would cost ~4 ms each (80 s for 20k files), so durability comes from
 * meta.json, written last with a full atomic commit. */
dinoc_status dinoc_shapes_png(const char *path, const uint8_t *pix, int w, int h, int c);
/* A source of items for dinoc_shapes_write_split: item(user, i, ...) fills image [h, w, c], mask
 * [h, w], caption and label (DINOC_SHAPES_TEXT bytes each) and a label id in [0, nlabels). It is
 * called from several threads at once. */
typedef struct {
    int   w, h, c;
    int   nlabels;
    dinoc_status (*item)(void *user, int64_t i, uint8_t *img, uint8_t *mask, char *caption, char *label,
                         int *label_id);
    void *user;
    int   part_captions; /* also a pairs.tsv row per phrase of a "PHRASE RELATION PHRASE" caption */
    int   hard_negatives; /* a third pairs.tsv column: DINOC_SHAPES_NEG_* (dinoc_shapes_config) */
} dinoc_split_items;
/* Writes items [0, n) into DIR/<split>/ (images/, masks/, pairs.tsv, labels.tsv, label_names.txt =
 * the labels occurring, by id). Items are made on all threads in blocks; files are byte-identical
 * for any thread count. progress gets done0 + items done of total. *distinct_captions (may be NULL)
 * gets the number of different captions. */
dinoc_status dinoc_shapes_write_split(const char *dir, const char *split, int64_t n, const dinoc_split_items *it,
                                      int64_t done0, int64_t total, dinoc_shapes_progress_fn progress, void *user,
                                      int64_t *distinct_captions);
/* Creates dir and removes an older set's meta.json from it, so that a set rewritten in place and
 * interrupted does not look complete. */
dinoc_status dinoc_shapes_begin(const char *dir);
/* Writes DIR/meta.json (atomically) from j and deletes j (NULL: out of memory). */
dinoc_status dinoc_shapes_write_meta(const char *dir, struct cJSON *j);
/* "DIR/split" with images/ and masks/ created in it; caller frees. NULL and a status on failure. */
dinoc_status dinoc_shapes_split_dir(char **out, const char *dir, const char *split);
/* The text file path (one line per entry, '\n' after each) written atomically. */
dinoc_status dinoc_shapes_write_lines(const char *path, const char *const *lines, int n);

#endif
