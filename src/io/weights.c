/* weights.c: a set of weights that may span files: one .safetensors file, a sharded checkpoint
 * (model.safetensors.index.json whose "weight_map" names a shard for every tensor), or a directory
 * holding either. Lookups by name go across every shard (names sorted once, then bsearch).
 *
 * The index is untrusted input like the shards: shard names must be plain file names in the
 * index's directory, every listed tensor must be in the shard the index names, and no tensor may
 * be in two shards.
 *
 * Tested by tests/test_safetensors.c (weights_* cases). */
#include "../internal.h"

#include <cjson/cJSON.h>
#include <string.h>

struct dinoc_weights {
    int                  nfiles;
    dinoc_safetensors  **files; /* [nfiles] */
    char               **paths; /* [nfiles] path of each file, for messages */
    int                  n;
    const dinoc_tensor **tensors; /* [n] file by file, each in offset order */
    int                 *file_of; /* [n] index into files */
    int                 *by_name; /* [n] indices into tensors, sorted by name */
};

void dinoc_weights_close(dinoc_weights *w) {
    if (!w) return;
    for (int i = 0; i < w->nfiles; i++) {
        dinoc_safetensors_close(w->files[i]);
        free(w->paths[i]);
    }
    free(w->files);
    free(w->paths);
    free(w->tensors);
    free(w->file_of);
    free(w->by_name);
    free(w);
}

/* qsort context (thread-local: two threads may open weights at once). */
static _Thread_local const dinoc_weights *g_sort_w;

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(g_sort_w->tensors[*(const int *)a]->name, g_sort_w->tensors[*(const int *)b]->name);
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Adds an opened file to w (takes ownership of st and path, even on failure). */
static dinoc_status add_file(dinoc_weights *w, dinoc_safetensors *st, char *path) {
    dinoc_safetensors **f = realloc(w->files, (size_t)(w->nfiles + 1) * sizeof *f);
    if (f) w->files = f;
    char **p = realloc(w->paths, (size_t)(w->nfiles + 1) * sizeof *p);
    if (p) w->paths = p;
    if (!f || !p) {
        dinoc_safetensors_close(st);
        free(path);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    }
    w->files[w->nfiles] = st;
    w->paths[w->nfiles] = path;
    w->nfiles++;
    return DINOC_OK;
}

/* Builds the flat tensor list and the name index; a name in two files is an error. */
static dinoc_status build_index(dinoc_weights *w) {
    size_t n = 0;
    for (int f = 0; f < w->nfiles; f++) n += (size_t)dinoc_safetensors_count(w->files[f]);
    if (n > (size_t)INT32_MAX) return dinoc_fail(DINOC_ERR_UNSUPPORTED, "too many tensors (%zu)", n);
    w->tensors = malloc((n + 1) * sizeof *w->tensors);
    w->file_of = malloc((n + 1) * sizeof *w->file_of);
    w->by_name = malloc((n + 1) * sizeof *w->by_name);
    if (!w->tensors || !w->file_of || !w->by_name) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    for (int f = 0; f < w->nfiles; f++)
        for (int i = 0; i < dinoc_safetensors_count(w->files[f]); i++) {
            w->tensors[w->n] = dinoc_safetensors_get(w->files[f], i);
            w->file_of[w->n] = f;
            w->by_name[w->n] = w->n;
            w->n++;
        }
    g_sort_w = w;
    qsort(w->by_name, (size_t)w->n, sizeof(int), cmp_by_name);
    g_sort_w = NULL;
    for (int i = 1; i < w->n; i++) {
        int a = w->by_name[i - 1], b = w->by_name[i];
        if (strcmp(w->tensors[a]->name, w->tensors[b]->name) == 0)
            return dinoc_fail(DINOC_ERR_FORMAT, "tensor '%s' is in two shards: %s and %s",
                              w->tensors[a]->name, w->paths[w->file_of[a]], w->paths[w->file_of[b]]);
    }
    return DINOC_OK;
}

/* A shard name from an index must name a file beside the index, nothing else. */
static int shard_name_ok(const char *s) {
    return s[0] && !strchr(s, '/') && !strchr(s, '\\') && !strstr(s, "..");
}

/* Opens the shards of a model.safetensors.index.json. */
static dinoc_status open_index(dinoc_weights *w, const char *index_path) {
    cJSON       *root = NULL;
    dinoc_status s    = dinoc_json_load(&root, index_path);
    if (s) return s;
    const char **shards = NULL, **keys = NULL;
    char        *dir    = NULL;

    const cJSON *map = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(map)) {
        s = dinoc_fail(DINOC_ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
        goto done;
    }
    int nmap = cJSON_GetArraySize(map);
    if (nmap == 0) {
        s = dinoc_fail(DINOC_ERR_FORMAT, "%s: weight_map is empty", index_path);
        goto done;
    }
    shards   = malloc(((size_t)nmap + 1) * sizeof *shards);
    keys     = malloc(((size_t)nmap + 1) * sizeof *keys);
    if (!shards || !keys) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", index_path);
        goto done;
    }
    int k = 0;
    for (const cJSON *e = map->child; e; e = e->next, k++) {
        if (!cJSON_IsString(e) || !e->valuestring) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: weight_map '%s' is not a file name", index_path,
                           e->string);
            goto done;
        }
        if (!shard_name_ok(e->valuestring)) {
            s = dinoc_fail(DINOC_ERR_FORMAT,
                           "%s: weight_map '%s': shard '%s' is not a plain file name beside the index",
                           index_path, e->string, e->valuestring);
            goto done;
        }
        shards[k] = e->valuestring;
        keys[k]   = e->string;
    }
    /* cJSON keeps repeated keys as separate items. */
    qsort(keys, (size_t)nmap, sizeof *keys, cmp_str_ptr);
    for (int i = 1; i < nmap; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: weight_map lists tensor '%s' twice", index_path, keys[i]);
            goto done;
        }

    /* Each distinct shard once, in name order. */
    qsort(shards, (size_t)nmap, sizeof *shards, cmp_str_ptr);
    dir = strdup(index_path);
    if (!dir) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        goto done;
    }
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = 0;
    else strcpy(dir, ".");
    for (int i = 0; i < nmap; i++) {
        if (i && strcmp(shards[i - 1], shards[i]) == 0) continue;
        char *p = dinoc_path_join(dir, shards[i]);
        if (!p) {
            s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
            goto done;
        }
        dinoc_safetensors *st = NULL;
        if ((s = dinoc_safetensors_open(&st, p))) {
            dinoc_fail_prefix(s, "%s", index_path);
            free(p);
            goto done;
        }
        if ((s = add_file(w, st, p))) goto done;
    }
    if ((s = build_index(w))) {
        dinoc_fail_prefix(s, "%s", index_path);
        goto done;
    }

    /* Every tensor of the map is in the shard the map names. */
    for (const cJSON *e = map->child; e; e = e->next) {
        const dinoc_tensor *t = dinoc_weights_find(w, e->string);
        if (!t) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: tensor '%s' is not in its shard %s", index_path,
                           e->string, e->valuestring);
            goto done;
        }
        const char *file = dinoc_weights_file_of(w, t), *base = strrchr(file, '/');
        base = base ? base + 1 : file;
        if (strcmp(base, e->valuestring) != 0) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: tensor '%s' is in %s, the index says %s", index_path,
                           e->string, file, e->valuestring);
            goto done;
        }
    }
    /* Extra tensors in a shard are kept (the model loader reports unexpected names) but noted. */
    if (w->n != nmap)
        dinoc_log(DINOC_LOG_WARN, "%s: shards hold %d tensors, weight_map lists %d", index_path,
                  w->n, nmap);
done:
    free(dir);
    free(shards);
    free(keys);
    cJSON_Delete(root);
    return s;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

dinoc_status dinoc_weights_open(dinoc_weights **out, const char *path) {
    *out             = NULL;
    dinoc_weights *w = calloc(1, sizeof *w);
    if (!w) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    dinoc_status s;
    char        *file = NULL;
    int          is_index;
    if (dinoc_is_dir(path)) {
        /* Prefer the single file when a folder holds both. */
        char *single = dinoc_path_join(path, "model.safetensors");
        char *index  = dinoc_path_join(path, "model.safetensors.index.json");
        if (!single || !index) {
            free(single);
            free(index);
            free(w);
            return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        }
        if (dinoc_file_exists(single)) {
            file = single, is_index = 0;
            free(index);
        } else if (dinoc_file_exists(index)) {
            file = index, is_index = 1;
            free(single);
        } else {
            free(single);
            free(index);
            free(w);
            return dinoc_fail(DINOC_ERR_IO,
                              "%s: no model.safetensors or model.safetensors.index.json in this folder",
                              path);
        }
    } else {
        file     = strdup(path);
        is_index = ends_with(path, ".json");
        if (!file) {
            free(w);
            return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        }
    }

    if (is_index) {
        s = open_index(w, file);
        free(file);
    } else {
        dinoc_safetensors *st = NULL;
        s = dinoc_safetensors_open(&st, file);
        if (s) free(file);
        else if (!(s = add_file(w, st, file))) s = build_index(w);
    }
    if (s) {
        dinoc_weights_close(w);
        return s;
    }
    *out = w;
    return DINOC_OK;
}

int dinoc_weights_count(const dinoc_weights *w) { return w ? w->n : 0; }

const dinoc_tensor *dinoc_weights_get(const dinoc_weights *w, int i) {
    return w && i >= 0 && i < w->n ? w->tensors[i] : NULL;
}

/* Position of name in by_name order, or -1. */
static int find_index(const dinoc_weights *w, const char *name) {
    int lo = 0, hi = w->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c   = strcmp(name, w->tensors[w->by_name[mid]]->name);
        if (c == 0) return w->by_name[mid];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return -1;
}

const dinoc_tensor *dinoc_weights_find(const dinoc_weights *w, const char *name) {
    if (!w || !name) return NULL;
    int i = find_index(w, name);
    return i < 0 ? NULL : w->tensors[i];
}

const char *dinoc_weights_file_of(const dinoc_weights *w, const dinoc_tensor *t) {
    if (!w || !t || !t->name) return NULL;
    int i = find_index(w, t->name);
    if (i >= 0 && w->tensors[i] == t) return w->paths[w->file_of[i]];
    /* Not from this set by pointer (a copy of a tensor, say): fall back to the name's file. */
    return i >= 0 ? w->paths[w->file_of[i]] : NULL;
}
