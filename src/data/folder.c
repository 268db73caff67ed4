/* folder.c: image-folder datasets (dinoc_dataset_folder_open), torchvision's ImageFolder layout.
 *
 * dir/<class>/.../<file> with the class subfolders sorted by name (label = rank), or a flat dir of
 * images (label -1, no classes). Only the listing is done at open; images are decoded on demand by
 * dinoc_dataset_get through dinoc_image_load (RGB), so opening a million-image folder costs the
 * directory walk only.
 *
 * Rules: names starting with '.' are skipped (editor and OS droppings such as .DS_Store); files
 * count if their extension is an image one (.jpg .jpeg .png .bmp .pgm .ppm .pnm .tga .gif, any
 * case); inside each class the files are sorted by their full path with strcmp (byte order, not
 * locale), so the order, and with it every seeded shuffle, is the same on every machine. A class
 * folder without images, or a flat folder without images, is an error naming it (as ImageFolder).
 * Symbolic links are followed; the walk stops at depth FOLDER_DEPTH_MAX so a link cycle cannot
 * recurse forever.
 *
 * Tested by tests/test_data.c (class and flat folders of PNGs written to the tmp dir). */
#include "data.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define FOLDER_DEPTH_MAX 32

static const char *const image_exts[] = {"jpg", "jpeg", "png", "bmp", "pgm", "ppm",
                                         "pnm", "tga",  "gif"};

static int is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return 0;
    for (size_t i = 0; i < sizeof image_exts / sizeof image_exts[0]; i++)
        if (strcasecmp(dot + 1, image_exts[i]) == 0) return 1;
    return 0;
}

/* A growable array of malloc'ed strings. */
typedef struct {
    char **v;
    size_t n, cap;
} strvec;

static int strvec_push(strvec *sv, char *s) {
    if (!s) return 0;
    if (sv->n == sv->cap) {
        size_t ncap = sv->cap ? sv->cap * 2 : 64;
        char **nv   = realloc(sv->v, ncap * sizeof *nv);
        if (!nv) {
            free(s);
            return 0;
        }
        sv->v   = nv;
        sv->cap = ncap;
    }
    sv->v[sv->n++] = s;
    return 1;
}

static void strvec_free(strvec *sv) {
    for (size_t i = 0; i < sv->n; i++) free(sv->v[i]);
    free(sv->v);
    memset(sv, 0, sizeof *sv);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* qsort must not be given a NULL array, even for zero elements. */
static void sort_strs(char **v, size_t n) {
    if (n > 1) qsort(v, n, sizeof *v, cmp_str);
}

/* The visible entry names of dir (not sorted). */
static dinoc_status list_names(const char *dir, strvec *names) {
    DIR *d = opendir(dir);
    if (!d) return dinoc_fail(DINOC_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    struct dirent *e;
    /* errno is cleared before every readdir: NULL with errno set is a read error, not the end */
    for (errno = 0; (e = readdir(d)) != NULL; errno = 0) {
        if (e->d_name[0] == '.') continue; /* ".", "..", hidden files */
        if (!strvec_push(names, strdup(e->d_name))) {
            closedir(d);
            return dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory listing the directory", dir);
        }
    }
    int err = errno;
    closedir(d);
    if (err) return dinoc_fail(DINOC_ERR_IO, "%s: cannot read directory: %s", dir, strerror(err));
    return DINOC_OK;
}

/* Appends the image files below dir (recursively) to files. */
static dinoc_status walk(const char *dir, int depth, strvec *files) {
    if (depth > FOLDER_DEPTH_MAX)
        return dinoc_fail(DINOC_ERR_FORMAT,
                          "%s: directories nested deeper than %d (a symbolic link cycle?)", dir,
                          FOLDER_DEPTH_MAX);
    strvec       names = {0};
    dinoc_status s     = list_names(dir, &names);
    for (size_t i = 0; s == DINOC_OK && i < names.n; i++) {
        char *p = dinoc_path_join(dir, names.v[i]);
        if (!p) {
            s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", dir);
            break;
        }
        struct stat st;
        if (stat(p, &st) != 0) { /* a dangling link: not an image we could read */
            free(p);
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            s = walk(p, depth + 1, files);
            free(p);
        } else if (S_ISREG(st.st_mode) && is_image_name(names.v[i])) {
            if (!strvec_push(files, p)) s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", dir);
        } else {
            free(p);
        }
    }
    strvec_free(&names);
    return s;
}

dinoc_status dinoc_dataset_folder_open(dinoc_dataset **out, const char *dir) {
    if (!out) return dinoc_fail(DINOC_ERR_ARG, "dinoc_dataset_folder_open: out is NULL");
    *out = NULL;
    if (!dir) return dinoc_fail(DINOC_ERR_ARG, "dinoc_dataset_folder_open: dir is NULL");
    if (!dinoc_is_dir(dir)) return dinoc_fail(DINOC_ERR_IO, "%s: not a directory", dir);

    strvec         top = {0}, classes = {0}, files = {0};
    int32_t       *labels = NULL;
    dinoc_dataset *ds     = NULL;
    dinoc_status   s      = list_names(dir, &top);
    if (s != DINOC_OK) goto fail;
    sort_strs(top.v, top.n);
    for (size_t i = 0; i < top.n; i++) {
        char *p = dinoc_path_join(dir, top.v[i]);
        if (!p) {
            s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", dir);
            goto fail;
        }
        int isdir = dinoc_is_dir(p);
        free(p);
        if (isdir && !strvec_push(&classes, strdup(top.v[i]))) {
            s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", dir);
            goto fail;
        }
    }

    size_t lab_cap = 0;
    if (classes.n == 0) {
        /* Flat folder: unlabelled images. */
        if ((s = walk(dir, 0, &files)) != DINOC_OK) goto fail;
        if (files.n == 0) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: no image files (.jpg .jpeg .png .bmp .pgm .ppm "
                           ".pnm .tga .gif) and no class subfolders", dir);
            goto fail;
        }
        sort_strs(files.v, files.n);
        if (!(labels = malloc(files.n * sizeof *labels))) {
            s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", dir);
            goto fail;
        }
        for (size_t i = 0; i < files.n; i++) labels[i] = -1;
    } else {
        if (classes.n > (size_t)INT32_MAX) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: too many class folders", dir);
            goto fail;
        }
        for (size_t k = 0; k < classes.n; k++) {
            char *cdir = dinoc_path_join(dir, classes.v[k]);
            if (!cdir) {
                s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", dir);
                goto fail;
            }
            size_t first = files.n;
            s            = walk(cdir, 1, &files);
            if (s == DINOC_OK && files.n == first)
                s = dinoc_fail(DINOC_ERR_FORMAT,
                               "%s: class folder without image files (.jpg .jpeg .png .bmp .pgm "
                               ".ppm .pnm .tga .gif)", cdir);
            free(cdir);
            if (s != DINOC_OK) goto fail;
            /* Sort inside the class only: across classes the order is the class order. */
            sort_strs(files.v + first, files.n - first);
            if (files.n > lab_cap) {
                size_t   ncap = files.n * 2;
                int32_t *nl   = realloc(labels, ncap * sizeof *nl);
                if (!nl) {
                    s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", dir);
                    goto fail;
                }
                labels  = nl;
                lab_cap = ncap;
            }
            for (size_t i = first; i < files.n; i++) labels[i] = (int32_t)k;
        }
        size_t skipped = 0;
        for (size_t i = 0; i < top.n; i++) skipped += is_image_name(top.v[i]);
        if (skipped)
            dinoc_log(DINOC_LOG_WARN, "%s: %zu image files beside the class folders are ignored",
                      dir, skipped);
    }

    if (!(ds = calloc(1, sizeof *ds))) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", dir);
        goto fail;
    }
    ds->kind        = DINOC_DATASET_FOLDER;
    ds->n           = (int64_t)files.n;
    ds->num_classes = (int)classes.n;
    ds->class_names = (const char **)classes.v;
    ds->owns_names  = 1;
    ds->labels      = labels;
    ds->paths       = files.v;
    strvec_free(&top);
    *out = ds;
    return DINOC_OK;
fail:
    strvec_free(&top);
    strvec_free(&classes);
    strvec_free(&files);
    free(labels);
    free(ds);
    return s;
}

void dinoc_dataset_folder_release(dinoc_dataset *ds) {
    for (int64_t i = 0; i < ds->n; i++) free(ds->paths[i]);
    free(ds->paths);
    if (ds->owns_names) {
        for (int k = 0; k < ds->num_classes; k++) free((char *)ds->class_names[k]);
        free((void *)ds->class_names);
    }
    ds->paths       = NULL;
    ds->class_names = NULL;
}

dinoc_status dinoc_dataset_folder_get(const dinoc_dataset *ds, int64_t i, dinoc_image *img) {
    /* dinoc_image_load's messages already start with the path. */
    return dinoc_image_load(img, ds->paths[i]);
}
