/* shapes_fmnist.c: Fashion-MNIST written in the shapes layout (dinoc_fmnist_write), so the CLIP
 * trainer and the segmentation probe read it like the shapes set.
 *
 * Images are the 28 x 28 grey originals (PNG, 1 channel; dinoc_image_load makes them RGB as PIL
 * does). Captions fill one of DINOC_FMNIST_TEMPLATES templates, picked per item from (seed, split,
 * index), with a lower-case class name and its article ("an ankle boot"). Labels are those names,
 * so zero-shot prompts built from label_names.txt read like the captions. Masks: class + 1 where
 * the pixel is above DINOC_FMNIST_MASK_THRESHOLD (24 of 255, about 10%: half of all pixels are
 * exactly 0, and the faint halo of values 1..24 around garments is resampling blur, not cloth),
 * else 0. Tested by tests/cli_data_test.sh. */
#include "shapes.h"
#include "data.h"

#include <cjson/cJSON.h>
#include <string.h>

static const char *const k_names[10] = {"t-shirt", "trouser", "pullover", "dress",   "coat",
                                        "sandal",  "shirt",   "sneaker",  "bag",     "ankle boot"};
/* CLIP-style prompts; "%s %s" is the article and the name. */
static const char *const k_templates[DINOC_FMNIST_TEMPLATES] = {
    "a photo of %s %s",       "a picture of %s %s",          "%s %s",
    "a black and white photo of %s %s", "a low resolution photo of %s %s", "a product photo of %s %s",
};

const char *dinoc_fmnist_class_name(int k) { return k >= 0 && k < 10 ? k_names[k] : NULL; }

void dinoc_fmnist_caption(char *out, size_t cap, int t, const char *name) {
    const char *article = name[0] && strchr("aeiou", name[0]) ? "an" : "a";
    if (t < 0 || t >= DINOC_FMNIST_TEMPLATES) t = 0;
    /* the template index is a table entry, never user text */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(out, cap, k_templates[t], article, name);
#pragma GCC diagnostic pop
}

typedef struct {
    const dinoc_dataset *ds;
    uint64_t             seed;
    int                  split; /* 0 train, 1 test: part of the caption template's seed */
} fmnist_src;

static dinoc_status fmnist_item(void *user, int64_t i, uint8_t *img, uint8_t *mask, char *caption, char *label,
                                int *label_id) {
    const fmnist_src *src = user;
    const size_t      npx = (size_t)src->ds->rows * src->ds->cols;
    const uint8_t    *p   = src->ds->pixels + (size_t)i * npx;
    int               k   = src->ds->labels[i];
    dinoc_rng         r;
    dinoc_rng_seed(&r, src->seed ^ ((uint64_t)src->split << 62) ^ (uint64_t)i * 0x9e3779b97f4a7c15ull);
    memcpy(img, p, npx);
    for (size_t j = 0; j < npx; j++) mask[j] = p[j] > DINOC_FMNIST_MASK_THRESHOLD ? (uint8_t)(k + 1) : 0;
    dinoc_fmnist_caption(caption, DINOC_SHAPES_TEXT, (int)(dinoc_rng_u64(&r) % DINOC_FMNIST_TEMPLATES), k_names[k]);
    snprintf(label, DINOC_SHAPES_TEXT, "%s", k_names[k]);
    *label_id = k;
    return DINOC_OK;
}

/* meta.json, written last as for shapes: the set is complete iff it exists. */
static dinoc_status write_meta(const char *dir, uint64_t seed, const int64_t n[2], const dinoc_dataset *ds) {
    cJSON *j = cJSON_CreateObject(), *sp = cJSON_CreateObject(), *tp = cJSON_CreateArray();
    char   buf[64];
    cJSON_AddStringToObject(j, "generator", "dinoc data fashion-mnist");
    cJSON_AddNumberToObject(j, "version", DINOC_SHAPES_VERSION);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)seed);
    cJSON_AddStringToObject(j, "seed", buf);
    cJSON_AddNumberToObject(j, "size", ds->rows);
    for (int k = 0; k < 2; k++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "n", (double)n[k]);
        cJSON_AddItemToObject(sp, k ? "test" : "train", o);
    }
    cJSON_AddItemToObject(j, "splits", sp);
    cJSON_AddNumberToObject(j, "mask_threshold", DINOC_FMNIST_MASK_THRESHOLD);
    for (int t = 0; t < DINOC_FMNIST_TEMPLATES; t++) {
        dinoc_fmnist_caption(buf, sizeof buf, t, "{}");
        cJSON_AddItemToArray(tp, cJSON_CreateString(buf));
    }
    cJSON_AddItemToObject(j, "templates", tp);
    return dinoc_shapes_write_meta(dir, j);
}

dinoc_status dinoc_fmnist_write(const char *dir, const char *idx_dir, int train, int test, int64_t limit,
                                uint64_t seed, dinoc_shapes_progress_fn progress, void *user) {
    if (!dir || (!train && !test)) return dinoc_fail(DINOC_ERR_ARG, "fashion-mnist: no split asked for");
    dinoc_dataset *ds[2] = {NULL, NULL};
    int64_t        n[2]  = {0, 0};
    dinoc_status   s     = DINOC_OK;
    for (int k = 0; k < 2 && !s; k++)
        if (k ? test : train) {
            s    = dinoc_dataset_idx_open(&ds[k], idx_dir, !k);
            n[k] = s ? 0 : limit > 0 && limit < ds[k]->n ? limit : ds[k]->n;
        }
    const char *classes[11] = {"background"};
    for (int k = 0; k < 10; k++) classes[k + 1] = k_names[k];
    char *cp = s ? NULL : dinoc_path_join(dir, "classes.txt"), *lp = s ? NULL : dinoc_path_join(dir, "label_names.txt");
    if (!s && (!cp || !lp)) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    if (!s) s = dinoc_shapes_begin(dir);
    if (!s) s = dinoc_shapes_write_lines(cp, classes, 11);
    if (!s) s = dinoc_shapes_write_lines(lp, classes + 1, 10);
    for (int k = 0; k < 2 && !s; k++)
        if (ds[k]) {
            fmnist_src        src = {ds[k], seed, k};
            dinoc_split_items it  = {ds[k]->cols, ds[k]->rows, 1, 10, fmnist_item, &src, 0, 0};
            s = dinoc_shapes_write_split(dir, k ? "test" : "train", n[k], &it, k ? n[0] : 0, n[0] + n[1], progress,
                                         user, NULL);
        }
    if (!s) s = write_meta(dir, seed, n, ds[0] ? ds[0] : ds[1]);
    free(cp), free(lp);
    dinoc_dataset_free(ds[0]), dinoc_dataset_free(ds[1]);
    return s;
}
