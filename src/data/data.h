/* data.h: datasets and the batch loader (src/data/). Images come out as float32 [C, H, W] after
 * a transform, labels as int32. Tested by tests/test_data.c. */
#ifndef DINOC_DATA_H
#define DINOC_DATA_H

#include "../internal.h"

/* An in-memory or on-disk labelled image set. Items are addressed by index 0..n-1. */
typedef struct dinoc_dataset dinoc_dataset;

/* Fashion-MNIST / MNIST IDX files (gzipped or not): dir holds
 * {train,t10k}-images-idx3-ubyte[.gz] and {train,t10k}-labels-idx1-ubyte[.gz]. train = 1 for the
 * 60000-image split, 0 for the 10000-image test split. dir NULL: $DINOC_FASHION_MNIST or
 * /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist). Everything is validated:
 * magic numbers, dimensions, counts agreeing between images and labels, labels < 10, file length. */
dinoc_status dinoc_dataset_idx_open(dinoc_dataset **out, const char *dir, int train);
/* An image folder: class subfolders (sorted names = labels 0..K-1) or a flat folder of images
 * (unlabelled: label -1). Files are listed (recursively inside each class), sorted by path; they are
 * decoded on demand. */
dinoc_status dinoc_dataset_folder_open(dinoc_dataset **out, const char *dir);
void         dinoc_dataset_free(dinoc_dataset *ds);
int64_t      dinoc_dataset_size(const dinoc_dataset *ds);
int          dinoc_dataset_num_classes(const dinoc_dataset *ds); /* 0 if unlabelled */
/* The class name of label k ("T-shirt/top" ... for Fashion-MNIST, the subfolder name for folders). */
const char  *dinoc_dataset_class_name(const dinoc_dataset *ds, int k);
/* Decodes item i into *img (8-bit, c = 1 for IDX, 3 for folders) and its label (-1 if none).
 * Thread-safe: several threads may call it at once. */
dinoc_status dinoc_dataset_get(const dinoc_dataset *ds, int64_t i, dinoc_image *img, int32_t *label);
/* The path of item i (folders) or NULL. */
const char  *dinoc_dataset_path(const dinoc_dataset *ds, int64_t i);

/* ---- inside src/data only: the dataset record shared by idx.c, folder.c and loader.c ---------- */

typedef enum { DINOC_DATASET_IDX = 0, DINOC_DATASET_FOLDER = 1 } dinoc_dataset_kind;

struct dinoc_dataset {
    dinoc_dataset_kind kind;
    int64_t            n;
    int                num_classes;
    const char       **class_names; /* num_classes entries */
    int                owns_names;  /* 1: class_names and its strings are malloc'ed (folders) */
    int32_t           *labels;      /* n entries, -1 for unlabelled items */
    /* IDX: every image in memory, n x rows x cols bytes. */
    int                rows, cols;
    uint8_t           *pixels;
    char              *label;       /* the images file, for messages */
    /* folders: n malloc'ed paths. */
    char             **paths;
};

/* The kind-specific halves of dinoc_dataset_free and dinoc_dataset_get (i already checked). */
void         dinoc_dataset_idx_release(dinoc_dataset *ds);
void         dinoc_dataset_folder_release(dinoc_dataset *ds);
dinoc_status dinoc_dataset_idx_get(const dinoc_dataset *ds, int64_t i, dinoc_image *img);
dinoc_status dinoc_dataset_folder_get(const dinoc_dataset *ds, int64_t i, dinoc_image *img);

/* Turns an 8-bit image into the model input [C, H, W] float32. rng is the item's own generator
 * (seeded from the loader seed, epoch and item index, so results do not depend on threads). */
typedef dinoc_status (*dinoc_transform_fn)(float *out, const dinoc_image *img, dinoc_rng *rng,
                                           void *user);

typedef struct {
    int      batch;        /* images per batch */
    int      shuffle;      /* 1: a new permutation per epoch, from seed and epoch */
    int      drop_last;    /* 1: skip the last incomplete batch of an epoch */
    uint64_t seed;
    int      workers;      /* decode/transform threads running ahead of the consumer (0: inline) */
    int      prefetch;     /* batches prepared ahead (>= 1) */
    size_t   item_floats;  /* floats per transformed item (C*H*W) */
    /* NULL: the image as float [C, H, W] scaled by 1/255 (item_floats must equal C*H*W). */
    dinoc_transform_fn transform;
    void    *transform_user;
    /* Data parallelism: with shards > 1 this loader returns only part `shard` (0-based) of every
     * global batch of `batch` items: items [m*shard/shards, m*(shard+1)/shards) of a batch of m, so
     * the shards of all ranks together are exactly the 1-process batch. Positions, epochs and
     * batches per epoch stay those of the global stream. 0 or 1: the whole batch. */
    int      shard, shards;
} dinoc_loader_config;

/* Where the loader is: restoring it resumes the exact same stream of batches. */
typedef struct {
    int64_t epoch;
    int64_t index; /* position inside the epoch's permutation, in items */
} dinoc_loader_pos;

typedef struct dinoc_loader dinoc_loader;

/* ds must outlive the loader. start may be any position with 0 <= index <= dataset size (the end
 * of an epoch means the start of the next); batches start there. The only allocation per item in
 * steady state is the decoded image. */
dinoc_status dinoc_loader_init(dinoc_loader **out, const dinoc_dataset *ds,
                               const dinoc_loader_config *cfg, dinoc_loader_pos start);
void         dinoc_loader_free(dinoc_loader *ld);
/* Next batch: x [batch, item_floats], labels [batch]; *n is the number of items in it (less than
 * batch only for the last batch of an epoch when drop_last is 0), *epoch_end set to 1 when this
 * batch ends an epoch. The batch stays valid until the next call. Errors name the item's path;
 * an error sticks (later calls return it again; tell() stays at the failed batch). Any of the
 * output pointers may be NULL. Batches never span epochs. */
dinoc_status dinoc_loader_next(dinoc_loader *ld, const float **x, const int32_t **labels, int *n,
                               int *epoch_end);
/* Position of the NEXT batch the loader will return (what a checkpoint stores). */
dinoc_loader_pos dinoc_loader_tell(const dinoc_loader *ld);
/* Batches per epoch for this dataset and config. */
int64_t dinoc_loader_batches_per_epoch(const dinoc_loader *ld);

#endif
