/* clip_eval.h: uses of CLIP-style embeddings (src/eval/): zero-shot classification with prompt
 * ensembling (zeroshot.c, the 80 ImageNet templates in templates.c), image-text retrieval over a
 * saved embedding index and its recall at K (retrieval.c), and k-shot classification from class
 * prototypes and a linear probe (fewshot.c). Reference: clip_mlm_and_c_peers.md A.9, A.10.
 *
 * The math works on plain float arrays (rows of embeddings), so it is tested without a model
 * (tests/test_clip_eval.c against tests/py/gen_clip_eval.py); the model enters only through
 * dinoc_clip_encode_images / dinoc_clip_encode_texts (src/nn/clip.h) in the *_clip functions.
 * Used by `dinoc zeroshot`, `dinoc retrieve` and `dinoc eval zeroshot|retrieval|fewshot`. */
#ifndef DINOC_CLIP_EVAL_H
#define DINOC_CLIP_EVAL_H

#include "eval.h"
#include "../nn/clip.h"

/* ---- text lists (templates.c) ------------------------------------------------------------------ */

/* OpenAI's 80 ImageNet prompt templates (openai/CLIP notebook, open_clip OPENAI_IMAGENET_TEMPLATES)
 * and the 7-template subset found by forward selection (SIMPLE_IMAGENET_TEMPLATES), in the
 * reference's order; "{}" marks the class name. */
#define DINOC_IMAGENET_TEMPLATES 80
#define DINOC_SIMPLE_TEMPLATES   7
extern const char *const dinoc_imagenet_templates[DINOC_IMAGENET_TEMPLATES];
extern const char *const dinoc_simple_templates[DINOC_SIMPLE_TEMPLATES];

/* A list of malloc'ed strings. */
typedef struct {
    char  **s;
    int64_t n;
} dinoc_strlist;
void dinoc_strlist_free(dinoc_strlist *l);
/* Appends a copy of s. */
dinoc_status dinoc_strlist_push(dinoc_strlist *l, const char *s);

/* The non-empty lines of a UTF-8 text file (a trailing '\r' is dropped; lines starting with '#'
 * are comments). what names the content in errors ("class names"). An empty list is an error. */
dinoc_status dinoc_lines_load(dinoc_strlist *out, const char *path, const char *what);
/* A templates file: dinoc_lines_load, and every line must hold "{}" exactly once (else
 * DINOC_ERR_FORMAT naming the line). */
dinoc_status dinoc_templates_load(dinoc_strlist *out, const char *path);
/* tmpl with its "{}" replaced by name, into a new string (*out, caller frees). */
dinoc_status dinoc_template_format(char **out, const char *tmpl, const char *name);
/* The templates to use: a file's (path not NULL), else the 7 simple ones (simple = 1), else the 80.
 * The list holds copies. */
dinoc_status dinoc_templates_choose(dinoc_strlist *out, const char *path, int simple);
/* "a,b,c" -> three names (spaces around each trimmed; empty names are an error). */
dinoc_status dinoc_split_list(dinoc_strlist *out, const char *csv);

/* A two-column TSV ("key<TAB>value" per line: labels.tsv, pairs.tsv): col0[i], col1[i]. Blank
 * lines are skipped; a line without a TAB or with an empty field is DINOC_ERR_FORMAT naming
 * file:line. max_cols 2: a second TAB on a line is that error too; max_cols 3: a third column
 * is allowed and dropped (a pairs file's NegCLIP negative, "image<TAB>caption<TAB>negative",
 * which describes no image). With relative = 1, col0 entries that are not absolute are joined
 * to the file's folder (the shapes layout: paths relative to the split folder). */
dinoc_status dinoc_tsv_load(dinoc_strlist *col0, dinoc_strlist *col1, const char *path, int relative, int max_cols);

/* Distinct strings of in[0..n) in first-occurrence order: map[i] = index of in[i] in *uniq
 * (uniq holds copies). */
dinoc_status dinoc_strings_unique(dinoc_strlist *uniq, int32_t *map, char *const *in, int64_t n);

/* ---- labelled image sets and encoding (zeroshot.c) --------------------------------------------- */

/* Images with class labels from one of: a labels file "path<TAB>label" (paths relative to its
 * folder; class names from --classes, else label_names.txt beside it, else the sorted distinct
 * labels), a folder holding labels.tsv, a shapes set root (its test/labels.tsv), a folder of
 * class subfolders (names with '_' read as spaces), or "fashion-mnist" (test split; the lower-case
 * names of the Fashion-MNIST export: "t-shirt", ..., "ankle boot"). */
typedef struct {
    int64_t        n;
    dinoc_strlist  classes;  /* class names (prompts are built from them) */
    int32_t       *labels;   /* [n] in 0..classes.n-1 (folder and IDX sets: -1 until an item is read
                                by dinoc_clip_set_image or dinoc_clip_set_embed) */
    dinoc_strlist  paths;    /* labels-file sets: [n] image paths; else empty */
    dinoc_dataset *ds;       /* folder and IDX sets; else NULL */
    int32_t       *remap;    /* ds label -> class index (--classes given), or NULL */
} dinoc_clip_set;

/* data as above; classes_file (may be NULL) overrides the class names: every label of the set
 * must then be one of them (else DINOC_ERR_ARG naming the label). idx_dir: Fashion-MNIST IDX
 * folder (NULL: the default). train = 1 takes the train split of a set with train/ and test/
 * (a shapes root, fashion-mnist), else the test split. */
dinoc_status dinoc_clip_set_open(dinoc_clip_set *out, const char *data, const char *classes_file,
                                 const char *idx_dir, int train);
void         dinoc_clip_set_free(dinoc_clip_set *s);
/* Item i as an 8-bit RGB image (grey is replicated) and its class in *label (may be NULL); also
 * records the label in s->labels (distinct items may be read from several threads at once). */
dinoc_status dinoc_clip_set_image(const dinoc_clip_set *s, int64_t i, dinoc_image *img, int32_t *label);

/* Encodes n images fetched by get(user, i, img) (decoded on the OpenMP threads, `batch` at a
 * time) into out [n, embed_dim]. progress may be NULL. */
typedef dinoc_status (*dinoc_image_getter)(const void *user, int64_t i, dinoc_image *img);
/* The first n items of a set (n <= s->n) into out [n, embed_dim]; fills s->labels[0..n). */
dinoc_status dinoc_clip_set_embed(const dinoc_clip *m, const dinoc_clip_set *s, int64_t n, int batch,
                                  float *out, void (*progress)(void *p, int64_t done, int64_t total),
                                  void *p);
dinoc_status dinoc_clip_embed_images(const dinoc_clip *m, dinoc_image_getter get, const void *user,
                                     int64_t n, int batch, float *out,
                                     void (*progress)(void *p, int64_t done, int64_t total), void *p);
/* dinoc_clip_embed_images over image files. */
dinoc_status dinoc_clip_embed_paths(const dinoc_clip *m, char *const *paths, int64_t n, int batch,
                                    float *out, void (*progress)(void *p, int64_t done, int64_t total),
                                    void *p);
/* Encodes n texts into out [n, embed_dim], `batch` at a time. */
dinoc_status dinoc_clip_embed_texts(const dinoc_clip *m, char *const *texts, int64_t n, int batch,
                                    float *out);

/* ---- zero-shot (zeroshot.c) -------------------------------------------------------------------- */

/* Prompt ensemble of one class (A.9): w [P] = normalise(mean_t normalise(emb[t])) over the T
 * template embeddings emb [T, P]. A zero mean (or a zero row) is DINOC_ERR_NUMERIC. */
dinoc_status dinoc_prompt_ensemble(float *w, const float *emb, int T, int P);
/* Class weights W [K, P]: each class's templates formatted, encoded, ensembled. */
dinoc_status dinoc_zeroshot_weights(const dinoc_clip *m, char *const *classes, int K,
                                    const char *const *templates, int T, float *W);
/* logits [N, K] = scale * x [N, P] . W [K, P]^T (x rows L2-normalised first, as A.9 step 3). */
dinoc_status dinoc_zeroshot_logits(float *logits, const float *x, const float *W, int64_t N, int K, int P,
                                   float scale);
/* The k best columns of each row of scores [N, K], best first: idx [N, k]; ties go to the lower
 * column; a NaN score ranks last. k <= K. */
void dinoc_topk_rows(int32_t *idx, const float *scores, int64_t N, int K, int k);
/* Top-1 / top-5 accuracy of scores [N, K] against labels [N] (ties to the lower class; top-5 is
 * top-min(5, K)). Labels outside 0..K-1 are DINOC_ERR_ARG. per_class (may be NULL) [K]: top-1 per
 * class (NaN for a class with no rows). */
dinoc_status dinoc_topk_accuracy(const float *scores, const int32_t *labels, int64_t N, int K,
                                 double *top1, double *top5, double *per_class);

/* ---- retrieval (retrieval.c) ------------------------------------------------------------------- */

/* An embedding index: image embeddings, optionally caption embeddings and (image, caption) pairs,
 * saved as one safetensors file:
 *   image_embeds F32 [N, P], text_embeds F32 [M, P] (M > 0 only), pairs I32 [Q, 2] (Q > 0 only),
 *   probe F32 [P] (the model's embedding of DINOC_INDEX_PROBE: a fingerprint of the model);
 *   metadata: format "dinoc-clip-index", version "1", model (a label), embed_dim,
 *   paths (JSON array of N strings), captions (JSON array of M strings). */
#define DINOC_INDEX_FORMAT "dinoc-clip-index"
#define DINOC_INDEX_PROBE  "a photo of a dog."
typedef struct {
    int            dim;           /* P */
    int64_t        n_images, n_texts, n_pairs;
    float         *image_embeds;  /* [n_images, P] L2-normalised */
    float         *text_embeds;   /* [n_texts, P] or NULL */
    int32_t       *pairs;         /* [n_pairs, 2]: (image, text) or NULL */
    dinoc_strlist  paths;         /* n_images */
    dinoc_strlist  captions;      /* n_texts */
    float         *probe;         /* [P] or NULL */
    char          *model;         /* label of the model that built it */
} dinoc_clip_index;

/* Writes atomically (dinoc_safetensors_write). Validates sizes and pair indices first. */
dinoc_status dinoc_clip_index_save(const dinoc_clip_index *ix, const char *path);
/* Reads and validates everything (format, version, shapes against embed_dim and the name lists,
 * pair indices, finite values); errors name the file and the part at fault. */
dinoc_status dinoc_clip_index_load(dinoc_clip_index *ix, const char *path);
void         dinoc_clip_index_free(dinoc_clip_index *ix);
/* Checks that the index was built by a model with this embed dim (DINOC_ERR_SHAPE) and probe
 * embedding (cosine >= 0.999, else DINOC_ERR_ARG naming the index's model). path: for messages. */
dinoc_status dinoc_clip_index_check(const dinoc_clip_index *ix, const char *path, int dim,
                                    const float *probe);

/* The pairs file of data: data itself if it is a file, else data/pairs.tsv, else
 * data/<train|test>/pairs.tsv (a shapes root). *out is malloc'ed. */
dinoc_status dinoc_pairs_path(char **out, const char *data, int train);
/* Builds an index with model m: the images of paths[0..n) (pairs NULL), or those of a pairs file
 * ("image<TAB>caption", paths relative to its folder; several captions per image and repeated
 * captions allowed): its distinct images in first-occurrence order, its distinct captions (each
 * string embedded once) and the pairs between them. limit > 0 reads only the first `limit` rows
 * of the pairs file. The probe is the model's embedding of DINOC_INDEX_PROBE. model_label names
 * the model in the file. progress (may be NULL) follows the image encoding. */
dinoc_status dinoc_clip_index_build(dinoc_clip_index *ix, const dinoc_clip *m, const char *model_label,
                                    char *const *paths, int64_t n, const char *pairs, int64_t limit,
                                    int batch, void (*progress)(void *p, int64_t done, int64_t total),
                                    void *p);

/* Top-k search: for each query q [nq, P], the k rows of db [n, P] with the highest dot product,
 * best first (ties to the lower row): idx [nq, k], score [nq, k] (may be NULL). k <= n. */
dinoc_status dinoc_retrieve_topk(int32_t *idx, float *score, const float *q, int64_t nq,
                                 const float *db, int64_t n, int P, int k);

/* Recall at K both ways (A.10, CLIP_benchmark's definitions) on images img [ni, P] and texts
 * txt [nt, P] related by pairs [np, 2] (image, text); several texts per image and several images
 * per text allowed (a duplicate pair counts once). S = txt . img^T.
 *   text -> image: over the texts that have a pair, the fraction with a paired image among their
 *                  top K images;
 *   image -> text: over the images that have a pair, the fraction with at least one paired text
 *                  among their top K texts.
 * Ties: candidates are ordered by score, then by lower index, so the rank of a query is the number
 * of unpaired candidates that score higher than its best pair, or equal with a lower index.
 * ks [nk]; t2i [nk], i2t [nk]; t2i_mrank / i2t_mrank (may be NULL): mean rank (1 = first). */
typedef struct {
    double t2i[8], i2t[8];
    double t2i_mean_rank, i2t_mean_rank;
    int64_t t2i_queries, i2t_queries;
} dinoc_recall;
dinoc_status dinoc_retrieval_recall(const float *img, int64_t ni, const float *txt, int64_t nt,
                                    int P, const int32_t *pairs, int64_t np, const int *ks, int nk,
                                    dinoc_recall *out);

/* ---- few-shot (fewshot.c) ---------------------------------------------------------------------- */

/* k-shot classification on frozen features: for each of n_seeds seeds, `shots` rows per class are
 * drawn (without replacement, from the seed) from the pool; then
 *   prototypes: class mean of the L2-normalised shots, cosine to each L2-normalised test row;
 *   linear probe: dinoc_linear_probe (src/eval/linear.c) on the L2-normalised shots.
 * The test rows are test [ntest, D] (test NULL: the pool rows not drawn as shots that seed).
 * Every class of 0..K-1 needs >= shots pool rows (+1 when test is NULL, so that something is left
 * to score), else DINOC_ERR_ARG naming the class. */
typedef struct {
    int                 shots, n_seeds;
    uint64_t            seed;
    dinoc_linear_config probe;  /* lrs, epochs, batch, val_fraction; its seed is set per draw */
    int                 no_probe; /* 1: prototypes only */
} dinoc_fewshot_config;
typedef struct {
    double proto_mean, proto_std;  /* top-1 over seeds (std: sample, n - 1; 0 for one seed) */
    double probe_mean, probe_std;
    double *proto_by_seed, *probe_by_seed; /* [n_seeds] malloc'ed; caller frees */
} dinoc_fewshot_result;
/* Defaults: 5 seeds from 0, probe: dinoc_linear_default() with DINOC_FEWSHOT_EPOCHS epochs and
 * batch 32 (a few-shot pool is tens of rows: enough steps need many epochs), val_fraction 0.2. */
#define DINOC_FEWSHOT_EPOCHS 100
dinoc_fewshot_config dinoc_fewshot_default(int shots);
dinoc_status dinoc_fewshot_eval(const float *pool, const int32_t *ypool, int64_t npool,
                                const float *test, const int32_t *ytest, int64_t ntest, int D,
                                int K, const dinoc_fewshot_config *cfg, dinoc_fewshot_result *res);
/* Class prototypes (rows of feats L2-normalised, averaged per class, renormalised): protos [K, D]
 * from rows[0..n) of feats [., D] with labels y. A class without rows is DINOC_ERR_ARG. */
dinoc_status dinoc_class_prototypes(float *protos, const float *feats, const int32_t *y,
                                    const int64_t *rows, int64_t n, int D, int K);

/* a before b in a ranking of (score, index) candidates: higher score first, then lower index;
 * NaN ranks below everything. The one tie rule of every top-k, accuracy and recall here. */
static inline int dinoc_ranks_before(float a, int64_t ia, float b, int64_t ib) {
    if (a != a || b != b) return b != b && (a == a || ia < ib);
    return a > b || (a == b && ia < ib);
}

#endif
