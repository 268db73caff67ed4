/* loader.c: the dataset accessors shared by both kinds, and the batch loader (dinoc_loader_*).
 *
 * Determinism. Everything a batch holds is a function of (seed, position) only:
 * - the order of epoch e is a Fisher-Yates shuffle driven by a dinoc_rng seeded from (seed, e)
 *   (identity without shuffle);
 * - item i of epoch e is transformed with its own dinoc_rng seeded from (seed, e, i);
 * - batches never span epochs: an epoch's last batch is short (or dropped with drop_last).
 * So the number of workers, their timing and where a run was resumed change nothing, bit for bit.
 *
 * Threads. Batches are numbered in the order they will be returned (seq). A ring of prefetch + 1
 * slots holds them: one is the batch the consumer was last given (valid until its next call), the
 * others are filled ahead. Workers take single items, not whole batches, so that several workers
 * fill one batch at once: under the mutex a worker claims the next item of the oldest batch with
 * unclaimed items, or, if every opened batch is claimed and a slot is free, opens the next batch
 * (fixes its item list from the plan cursor); it decodes and transforms outside the lock, then
 * counts the item done. The consumer waits for the batch at the head of the ring to be complete.
 * Batches are opened in order and returned in order, whatever order items finish in.
 *
 * Errors. A failing item records its status and message in its batch (the lowest failing item of
 * the batch wins, so the message does not depend on timing) and stops the opening of new batches.
 * The consumer gets the error when it reaches that batch; it then sticks (every later call returns
 * it), and tell() still points at the failed batch. dinoc_loader_free sets a stop flag and joins:
 * a worker finishes at most the item in hand, so freeing never waits for more than one item per
 * worker, whatever state the loader is in.
 *
 * Memory. The slots' buffers and the permutation are allocated once in dinoc_loader_init; in
 * steady state the only allocation per item is the decoded image made by dinoc_dataset_get.
 *
 * Tested by tests/test_data.c (determinism across seeds and worker counts, resumption from
 * tell(), drop_last, errors naming the file, early free). */
#include "data.h"

#include <limits.h>
#include <pthread.h>
#include <string.h>

#define LOADER_MSG_CAP      1024
#define LOADER_WORKERS_MAX  256
#define LOADER_PREFETCH_MAX 256

/* ---- dataset accessors ----------------------------------------------------------------------- */

void dinoc_dataset_free(dinoc_dataset *ds) {
    if (!ds) return;
    if (ds->kind == DINOC_DATASET_IDX) dinoc_dataset_idx_release(ds);
    else dinoc_dataset_folder_release(ds);
    free(ds->labels);
    free(ds);
}

int64_t dinoc_dataset_size(const dinoc_dataset *ds) { return ds ? ds->n : 0; }

int dinoc_dataset_num_classes(const dinoc_dataset *ds) { return ds ? ds->num_classes : 0; }

const char *dinoc_dataset_class_name(const dinoc_dataset *ds, int k) {
    if (!ds || k < 0 || k >= ds->num_classes) return NULL;
    return ds->class_names[k];
}

const char *dinoc_dataset_path(const dinoc_dataset *ds, int64_t i) {
    if (!ds || ds->kind != DINOC_DATASET_FOLDER || i < 0 || i >= ds->n) return NULL;
    return ds->paths[i];
}

dinoc_status dinoc_dataset_get(const dinoc_dataset *ds, int64_t i, dinoc_image *img,
                               int32_t *label) {
    if (!ds || !img) return dinoc_fail(DINOC_ERR_ARG, "dinoc_dataset_get: dataset or img is NULL");
    memset(img, 0, sizeof *img);
    if (i < 0 || i >= ds->n)
        return dinoc_fail(DINOC_ERR_ARG, "dinoc_dataset_get: item %lld outside 0..%lld",
                          (long long)i, (long long)ds->n - 1);
    if (label) *label = ds->labels[i];
    return ds->kind == DINOC_DATASET_IDX ? dinoc_dataset_idx_get(ds, i, img)
                                         : dinoc_dataset_folder_get(ds, i, img);
}

/* ---- seeds ------------------------------------------------------------------------------------ */

/* splitmix64's finaliser: a bijective mix, so distinct inputs give distinct seeds. */
static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Distinct domains so the permutation stream of epoch e and the transform stream of item e are
 * never the same generator. */
#define SEED_DOMAIN_PERM 0x7065726d75746531ull /* "permute1" */
#define SEED_DOMAIN_ITEM 0x6974656d7866726dull /* "itemxfrm" */

static uint64_t perm_seed(uint64_t seed, int64_t epoch) {
    return mix64(mix64(seed ^ SEED_DOMAIN_PERM) ^ (uint64_t)epoch);
}

static uint64_t item_seed(uint64_t seed, int64_t epoch, int64_t item) {
    return mix64(mix64(mix64(seed ^ SEED_DOMAIN_ITEM) ^ (uint64_t)epoch) ^ (uint64_t)item);
}

/* Uniform in [0, bound) without modulo bias (rejection below 2^64 mod bound). */
static uint64_t rng_below(dinoc_rng *r, uint64_t bound) {
    uint64_t threshold = (0 - bound) % bound;
    for (;;) {
        uint64_t x = dinoc_rng_u64(r);
        if (x >= threshold) return x % bound;
    }
}

/* ---- the loader ------------------------------------------------------------------------------- */

typedef struct {
    float           *x;       /* [batch, item_floats] */
    int32_t         *labels;  /* [batch] */
    int64_t         *items;   /* dataset index of each entry */
    int              n;       /* entries in this batch */
    int              claimed; /* entries handed to workers */
    int              done;    /* entries finished (ok or failed) */
    int              epoch_end;
    int64_t          epoch;
    dinoc_loader_pos next_pos; /* where the stream stands after this batch */
    dinoc_status     err;
    int              err_j;
    char             err_msg[LOADER_MSG_CAP];
} loader_slot;

struct dinoc_loader {
    const dinoc_dataset *ds;
    dinoc_loader_config  cfg;
    int64_t              n;
    int64_t              bpe;

    /* Producer side (guarded by mu when workers run). */
    dinoc_loader_pos plan;       /* start of the next batch to open */
    int64_t         *perm;       /* order of perm_epoch (shuffle only) */
    int64_t          perm_epoch;
    loader_slot     *slots;
    int              nslots;
    uint64_t         open_seq;   /* batches opened so far */
    uint64_t         claim_seq;  /* oldest batch that may have unclaimed items */
    uint64_t         free_seq;   /* batches the consumer has handed back */
    int              failed;     /* an item failed: open no more batches */
    int              stop;

    pthread_t       *threads;
    int              nthreads;
    pthread_mutex_t  mu;
    pthread_cond_t   cv_work;    /* workers: an item or a free slot may be available, or stop */
    pthread_cond_t   cv_ready;   /* consumer: a batch may be complete */
    int              sync_init;

    /* Consumer side (the thread calling dinoc_loader_next). */
    uint64_t         head_seq;   /* next batch to return */
    int              held;       /* the consumer holds batch head_seq - 1 */
    dinoc_loader_pos pos;        /* tell() */
    dinoc_status     sticky;
    char             sticky_msg[LOADER_MSG_CAP + 64]; /* err_msg plus the epoch prefix */
};

/* The start of the batch at or after pos: an exhausted epoch (or one with fewer than batch items
 * left under drop_last) rolls over to the next. */
static dinoc_loader_pos normalize(const dinoc_loader *ld, dinoc_loader_pos p) {
    int64_t left = ld->n - p.index;
    if (left <= 0 || (ld->cfg.drop_last && left < ld->cfg.batch)) {
        p.epoch++;
        p.index = 0;
    }
    return p;
}

static void build_perm(dinoc_loader *ld, int64_t epoch) {
    dinoc_rng r;
    dinoc_rng_seed(&r, perm_seed(ld->cfg.seed, epoch));
    for (int64_t i = 0; i < ld->n; i++) ld->perm[i] = i;
    for (int64_t i = ld->n - 1; i > 0; i--) {
        int64_t j   = (int64_t)rng_below(&r, (uint64_t)i + 1);
        int64_t t   = ld->perm[i];
        ld->perm[i] = ld->perm[j];
        ld->perm[j] = t;
    }
    ld->perm_epoch = epoch;
}

/* Fixes the items of the next batch into s and advances the plan. */
static void open_batch(dinoc_loader *ld, loader_slot *s) {
    dinoc_loader_pos p = ld->plan;
    if (ld->cfg.shuffle && ld->perm_epoch != p.epoch) build_perm(ld, p.epoch);
    int64_t left = ld->n - p.index;
    int     m    = left < ld->cfg.batch ? (int)left : ld->cfg.batch;
    /* this shard's contiguous part of the global batch (all of it without sharding) */
    const int R = ld->cfg.shards > 1 ? ld->cfg.shards : 1, r = R > 1 ? ld->cfg.shard : 0;
    const int lo = (int)((int64_t)m * r / R), hi = (int)((int64_t)m * (r + 1) / R);
    for (int j = lo; j < hi; j++)
        s->items[j - lo] = ld->cfg.shuffle ? ld->perm[p.index + j] : p.index + j;
    s->n          = hi - lo;
    s->claimed    = 0;
    s->done       = 0;
    s->epoch      = p.epoch;
    s->err        = DINOC_OK;
    s->err_j      = INT_MAX;
    s->err_msg[0] = 0;
    dinoc_loader_pos next = {p.epoch, p.index + m};
    s->next_pos           = normalize(ld, next);
    s->epoch_end          = s->next_pos.epoch != p.epoch;
    ld->plan              = s->next_pos;
}

/* The default transform: [C, H, W] floats scaled by 1/255. */
static dinoc_status to_float(float *out, size_t n, const dinoc_image *img) {
    size_t hw = (size_t)img->w * (size_t)img->h, c = (size_t)img->c;
    if (hw * c != n)
        return dinoc_fail(DINOC_ERR_SHAPE, "image %d x %d x %d is %zu values, item_floats is %zu",
                          img->w, img->h, img->c, hw * c, n);
    /* A true division, as torchvision's ToTensor (x.float().div(255)): multiplying by 1/255
     * differs in the last bit for some values. */
    for (size_t k = 0; k < c; k++)
        for (size_t i = 0; i < hw; i++) out[k * hw + i] = img->data[i * c + k] / 255.0f;
    return DINOC_OK;
}

/* Decodes and transforms entry j of s. On failure msg gets a message naming the item. */
static dinoc_status process_item(const dinoc_loader *ld, loader_slot *s, int j, char *msg) {
    int64_t   item = s->items[j];
    float    *out  = s->x + (size_t)j * ld->cfg.item_floats;
    dinoc_rng r;
    dinoc_rng_seed(&r, item_seed(ld->cfg.seed, s->epoch, item));
    dinoc_image  img   = {0};
    int32_t      label = -1;
    dinoc_status st    = dinoc_dataset_get(ld->ds, item, &img, &label);
    if (st == DINOC_OK)
        st = ld->cfg.transform ? ld->cfg.transform(out, &img, &r, ld->cfg.transform_user)
                               : to_float(out, ld->cfg.item_floats, &img);
    dinoc_image_free(&img);
    s->labels[j] = label;
    if (st != DINOC_OK) {
        const char *path = dinoc_dataset_path(ld->ds, item);
        const char *err  = dinoc_last_error();
        if (!path)
            snprintf(msg, LOADER_MSG_CAP, "item %lld: %s", (long long)item, err);
        else if (strstr(err, path))
            snprintf(msg, LOADER_MSG_CAP, "item %lld: %s", (long long)item, err);
        else
            snprintf(msg, LOADER_MSG_CAP, "item %lld (%s): %s", (long long)item, path, err);
    }
    return st;
}

static void *worker_main(void *arg) {
    dinoc_loader *ld = arg;
    char          msg[LOADER_MSG_CAP];
    pthread_mutex_lock(&ld->mu);
    while (!ld->stop) {
        loader_slot *s = NULL;
        while (ld->claim_seq < ld->open_seq) {
            loader_slot *c = &ld->slots[ld->claim_seq % (uint64_t)ld->nslots];
            if (c->claimed < c->n) {
                s = c;
                break;
            }
            ld->claim_seq++;
        }
        if (!s) {
            if (!ld->failed && ld->open_seq < ld->free_seq + (uint64_t)ld->nslots) {
                open_batch(ld, &ld->slots[ld->open_seq % (uint64_t)ld->nslots]);
                ld->open_seq++;
            } else {
                pthread_cond_wait(&ld->cv_work, &ld->mu);
            }
            continue;
        }
        int j = s->claimed++;
        pthread_mutex_unlock(&ld->mu);
        dinoc_status st = process_item(ld, s, j, msg);
        pthread_mutex_lock(&ld->mu);
        if (st != DINOC_OK) {
            if (j < s->err_j) {
                s->err   = st;
                s->err_j = j;
                memcpy(s->err_msg, msg, LOADER_MSG_CAP);
            }
            ld->failed = 1;
        }
        if (++s->done == s->n) pthread_cond_broadcast(&ld->cv_ready);
    }
    pthread_mutex_unlock(&ld->mu);
    return NULL;
}

static void loader_release(dinoc_loader *ld) {
    if (ld->nthreads > 0) {
        pthread_mutex_lock(&ld->mu);
        ld->stop = 1;
        pthread_cond_broadcast(&ld->cv_work);
        pthread_mutex_unlock(&ld->mu);
        for (int t = 0; t < ld->nthreads; t++) pthread_join(ld->threads[t], NULL);
    }
    if (ld->sync_init) {
        pthread_mutex_destroy(&ld->mu);
        pthread_cond_destroy(&ld->cv_work);
        pthread_cond_destroy(&ld->cv_ready);
    }
    if (ld->slots) {
        for (int i = 0; i < ld->nslots; i++) {
            dinoc_free(ld->slots[i].x);
            free(ld->slots[i].labels);
            free(ld->slots[i].items);
        }
    }
    free(ld->slots);
    free(ld->threads);
    free(ld->perm);
    free(ld);
}

dinoc_status dinoc_loader_init(dinoc_loader **out, const dinoc_dataset *ds,
                               const dinoc_loader_config *cfg, dinoc_loader_pos start) {
    if (!out) return dinoc_fail(DINOC_ERR_ARG, "dinoc_loader_init: out is NULL");
    *out = NULL;
    if (!ds || !cfg) return dinoc_fail(DINOC_ERR_ARG, "dinoc_loader_init: dataset or config is NULL");
    if (cfg->batch < 1)
        return dinoc_fail(DINOC_ERR_CONFIG, "loader: batch %d, expected >= 1", cfg->batch);
    if (cfg->workers < 0 || cfg->workers > LOADER_WORKERS_MAX)
        return dinoc_fail(DINOC_ERR_CONFIG, "loader: workers %d, expected 0..%d", cfg->workers,
                          LOADER_WORKERS_MAX);
    if (cfg->prefetch < 1 || cfg->prefetch > LOADER_PREFETCH_MAX)
        return dinoc_fail(DINOC_ERR_CONFIG, "loader: prefetch %d, expected 1..%d", cfg->prefetch,
                          LOADER_PREFETCH_MAX);
    if (cfg->item_floats == 0)
        return dinoc_fail(DINOC_ERR_CONFIG, "loader: item_floats is 0");
    if (cfg->shards < 0 || (cfg->shards > 1 && (cfg->shard < 0 || cfg->shard >= cfg->shards)))
        return dinoc_fail(DINOC_ERR_CONFIG, "loader: shard %d of %d", cfg->shard, cfg->shards);
    int64_t n = ds->n;
    if (n < 1) return dinoc_fail(DINOC_ERR_CONFIG, "loader: the dataset is empty");
    if (cfg->drop_last && n < cfg->batch)
        return dinoc_fail(DINOC_ERR_CONFIG,
                          "loader: drop_last with %lld items leaves no batch of %d",
                          (long long)n, cfg->batch);
    if (start.epoch < 0 || start.index < 0 || start.index > n)
        return dinoc_fail(DINOC_ERR_ARG,
                          "loader: start position epoch %lld index %lld outside the dataset of "
                          "%lld items", (long long)start.epoch, (long long)start.index,
                          (long long)n);
    size_t floats;
    if (!dinoc_mul_size((size_t)cfg->batch, cfg->item_floats, &floats) ||
        floats > SIZE_MAX / sizeof(float))
        return dinoc_fail(DINOC_ERR_CONFIG, "loader: batch %d x item_floats %zu overflows",
                          cfg->batch, cfg->item_floats);

    dinoc_loader *ld = calloc(1, sizeof *ld);
    if (!ld) return dinoc_fail(DINOC_ERR_NOMEM, "loader: out of memory");
    ld->ds         = ds;
    ld->cfg        = *cfg;
    ld->n          = n;
    ld->bpe        = cfg->drop_last ? n / cfg->batch : (n + cfg->batch - 1) / cfg->batch;
    ld->perm_epoch = -1;
    ld->pos        = normalize(ld, start);
    ld->plan       = ld->pos;
    /* Inline: one slot. Threads: the consumer's batch plus `prefetch` being filled. */
    ld->nslots = cfg->workers > 0 ? cfg->prefetch + 1 : 1;
    ld->slots  = calloc((size_t)ld->nslots, sizeof *ld->slots);
    if (cfg->shuffle) ld->perm = malloc((size_t)n * sizeof *ld->perm);
    if (!ld->slots || (cfg->shuffle && !ld->perm)) goto nomem;
    for (int i = 0; i < ld->nslots; i++) {
        loader_slot *s = &ld->slots[i];
        s->x           = dinoc_calloc(floats, sizeof(float));
        s->labels      = calloc((size_t)cfg->batch, sizeof *s->labels);
        s->items       = calloc((size_t)cfg->batch, sizeof *s->items);
        if (!s->x || !s->labels || !s->items) goto nomem;
    }
    if (cfg->workers > 0) {
        if (pthread_mutex_init(&ld->mu, NULL) != 0) goto nomem;
        if (pthread_cond_init(&ld->cv_work, NULL) != 0) {
            pthread_mutex_destroy(&ld->mu);
            goto nomem;
        }
        if (pthread_cond_init(&ld->cv_ready, NULL) != 0) {
            pthread_cond_destroy(&ld->cv_work);
            pthread_mutex_destroy(&ld->mu);
            goto nomem;
        }
        ld->sync_init = 1;
        ld->threads   = calloc((size_t)cfg->workers, sizeof *ld->threads);
        if (!ld->threads) goto nomem;
        for (int t = 0; t < cfg->workers; t++) {
            if (pthread_create(&ld->threads[t], NULL, worker_main, ld) != 0) {
                loader_release(ld);
                return dinoc_fail(DINOC_ERR_NOMEM, "loader: cannot start worker thread %d of %d",
                                  t + 1, cfg->workers);
            }
            ld->nthreads++;
        }
    }
    *out = ld;
    return DINOC_OK;
nomem:
    loader_release(ld);
    return dinoc_fail(DINOC_ERR_NOMEM, "loader: cannot allocate %d batch buffers of %zu floats",
                      cfg->workers > 0 ? cfg->prefetch + 1 : 1, floats);
}

void dinoc_loader_free(dinoc_loader *ld) {
    if (ld) loader_release(ld);
}

static dinoc_status fail_sticky(dinoc_loader *ld, const loader_slot *s) {
    ld->sticky = s->err;
    snprintf(ld->sticky_msg, sizeof ld->sticky_msg, "loader: epoch %lld: %s",
             (long long)s->epoch, s->err_msg);
    return dinoc_fail(ld->sticky, "%s", ld->sticky_msg);
}

dinoc_status dinoc_loader_next(dinoc_loader *ld, const float **x, const int32_t **labels, int *n,
                               int *epoch_end) {
    if (!ld) return dinoc_fail(DINOC_ERR_ARG, "dinoc_loader_next: loader is NULL");
    if (ld->sticky != DINOC_OK) return dinoc_fail(ld->sticky, "%s", ld->sticky_msg);
    loader_slot *s;
    if (ld->nthreads == 0) {
        s = &ld->slots[0];
        open_batch(ld, s);
        for (int j = 0; j < s->n; j++) {
            dinoc_status st = process_item(ld, s, j, s->err_msg);
            if (st != DINOC_OK) {
                s->err   = st;
                s->err_j = j;
                break;
            }
        }
    } else {
        pthread_mutex_lock(&ld->mu);
        if (ld->held) {
            ld->free_seq++;
            ld->held = 0;
            pthread_cond_broadcast(&ld->cv_work);
        }
        s = &ld->slots[ld->head_seq % (uint64_t)ld->nslots];
        /* head_seq < open_seq: the slot holds this batch, not the one it held before. */
        while (!(ld->head_seq < ld->open_seq && s->done == s->n))
            pthread_cond_wait(&ld->cv_ready, &ld->mu);
        ld->head_seq++;
        ld->held = 1;
        pthread_mutex_unlock(&ld->mu);
    }
    if (s->err != DINOC_OK) return fail_sticky(ld, s);
    if (x) *x = s->x;
    if (labels) *labels = s->labels;
    if (n) *n = s->n;
    if (epoch_end) *epoch_end = s->epoch_end;
    ld->pos = s->next_pos;
    return DINOC_OK;
}

dinoc_loader_pos dinoc_loader_tell(const dinoc_loader *ld) {
    dinoc_loader_pos p = {0, 0};
    return ld ? ld->pos : p;
}

int64_t dinoc_loader_batches_per_epoch(const dinoc_loader *ld) { return ld ? ld->bpe : 0; }
