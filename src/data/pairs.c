/* pairs.c: image-caption pair lists (pairs.h). Tested in tests/test_clip.c (through the CLIP run),
 * tests/test_bad_inputs.c and fuzzed by tests/fuzz/fuzz_pairs.c. */
#include "pairs.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

void dinoc_pairs_free(dinoc_pair_list *l) {
    for (int i = 0; i < l->n; i++) free(l->image[i]), free(l->caption[i]), free(l->negative ? l->negative[i] : NULL);
    free(l->image), free(l->caption), free(l->negative);
    memset(l, 0, sizeof *l);
}

/* n bytes of p (not 0-terminated) as a new string; strndup may look at p[n] (fuzz_pairs finding F16) */
static char *dup_n(const char *p, size_t n) {
    char *s = malloc(n + 1);
    if (s) memcpy(s, p, n), s[n] = 0;
    return s;
}

static dinoc_status reserve(dinoc_pair_list *l, size_t cap) {
    if (cap > (size_t)1 << 30) return dinoc_fail(DINOC_ERR_ARG, "more than 2^30 pairs");
    l->image   = calloc(cap ? cap : 1, sizeof *l->image);
    l->caption = calloc(cap ? cap : 1, sizeof *l->caption);
    l->negative = calloc(cap ? cap : 1, sizeof *l->negative);
    if (!l->image || !l->caption || !l->negative) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory for %zu pairs", cap);
    return DINOC_OK;
}

dinoc_status dinoc_pairs_parse_tsv(dinoc_pair_list *out, const char *text, size_t len, const char *dir,
                                   const char *where) {
    memset(out, 0, sizeof *out);
    if (memchr(text, 0, len)) return dinoc_fail(DINOC_ERR_FORMAT, "%s: a 0 byte (not a text file)", where);
    size_t cap = 1;
    for (size_t i = 0; i < len; i++) cap += text[i] == '\n';
    dinoc_status s = reserve(out, cap);
    int          lineno = 0;
    for (size_t pos = 0; !s && pos < len;) {
        const char *line = text + pos, *nl = memchr(line, '\n', len - pos);
        size_t      l    = nl ? (size_t)(nl - line) : len - pos;
        pos += l + (nl != NULL);
        lineno++;
        if (l && line[l - 1] == '\r') l--;
        if (!l) continue;
        const char *tab = memchr(line, '\t', l);
        if (!tab || tab == line) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s:%d: expected \"image<TAB>caption\"", where, lineno);
            break;
        }
        size_t      il   = (size_t)(tab - line);
        const char *c0   = tab + 1, *end = line + l;
        const char *tab2 = memchr(c0, '\t', (size_t)(end - c0)); /* optional third column */
        if (tab2 && memchr(tab2 + 1, '\t', (size_t)(end - tab2 - 1))) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s:%d: more than 3 columns (image, caption, negative caption)", where,
                           lineno);
            break;
        }
        char *img = dup_n(line, il), *cap_ = dup_n(c0, (size_t)((tab2 ? tab2 : end) - c0));
        char *neg = tab2 && tab2 + 1 < end ? dup_n(tab2 + 1, (size_t)(end - tab2 - 1)) : NULL;
        char *full = NULL;
        if (img) full = img[0] == '/' || !dir ? strdup(img) : dinoc_path_join(dir, img);
        if (!full || !cap_ || (tab2 && tab2 + 1 < end && !neg)) {
            free(img), free(full), free(cap_), free(neg);
            s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
            break;
        }
        free(img);
        out->n_negative += neg != NULL;
        out->image[out->n] = full, out->caption[out->n] = cap_, out->negative[out->n] = neg, out->n++;
    }
    if (!s && !out->n) s = dinoc_fail(DINOC_ERR_FORMAT, "%s: no pairs", where);
    if (s) dinoc_pairs_free(out);
    return s;
}

static dinoc_status load_tsv(dinoc_pair_list *out, const char *path) {
    char  *buf = NULL, *dir = strdup(path);
    size_t len;
    dinoc_status s = dir ? dinoc_read_file(path, (size_t)1 << 30, &buf, &len) : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    if (!s) {
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else strcpy(dir, ".");
        s = dinoc_pairs_parse_tsv(out, buf, len, dir, path);
    }
    free(buf), free(dir);
    return s;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int is_image_name(const char *n) {
    const char *e = strrchr(n, '.');
    static const char *ext[] = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".PNG", ".JPG", ".JPEG", NULL};
    for (int i = 0; e && ext[i]; i++)
        if (strcmp(e, ext[i]) == 0) return 1;
    return 0;
}

/* A folder of images, each with NAME.txt (the image name without its extension) beside it. */
static dinoc_status load_folder(dinoc_pair_list *out, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return dinoc_fail(DINOC_ERR_IO, "%s: cannot open the folder", dir);
    char        **names = NULL;
    int           n = 0, capn = 0;
    dinoc_status  s = DINOC_OK;
    for (struct dirent *e; !s && (e = readdir(d));) {
        if (!is_image_name(e->d_name)) continue;
        if (n == capn) {
            char **nn = realloc(names, sizeof *names * (size_t)(capn = capn ? 2 * capn : 256));
            if (!nn) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
            else names = nn;
        }
        if (!s && !(names[n++] = strdup(e->d_name))) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    }
    closedir(d);
    if (!s && !n) s = dinoc_fail(DINOC_ERR_ARG, "%s: no images (.png/.jpg/...) with .txt captions", dir);
    if (!s) qsort(names, (size_t)n, sizeof *names, cmp_str); /* readdir order is not stable */
    if (!s) s = reserve(out, (size_t)n);
    for (int i = 0; i < n && !s; i++) {
        char  *img = dinoc_path_join(dir, names[i]), *txt = NULL, *cap = NULL;
        size_t len;
        if (img) txt = malloc(strlen(img) + 5);
        if (!img || !txt) s = dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        if (!s) {
            strcpy(txt, img);
            strcpy(strrchr(txt, '.'), ".txt");
            s = dinoc_read_file(txt, 1 << 20, &cap, &len);
        }
        if (!s) {
            for (char *c = cap; *c; c++) /* one caption: line breaks become spaces */
                if (*c == '\n' || *c == '\r' || *c == '\t') *c = ' ';
            out->image[out->n] = img, out->caption[out->n] = cap, out->n++;
            img = cap = NULL;
        }
        free(img), free(txt), free(cap);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    if (s) dinoc_pairs_free(out);
    return s;
}

dinoc_status dinoc_pairs_load(dinoc_pair_list *out, const char *p) {
    memset(out, 0, sizeof *out);
    if (!p) return dinoc_fail(DINOC_ERR_ARG, "no --pairs given");
    if (!dinoc_is_dir(p)) {
        if (!dinoc_file_exists(p)) return dinoc_fail(DINOC_ERR_IO, "%s: no such file or folder", p);
        return load_tsv(out, p);
    }
    static const char *cand[] = {"pairs.tsv", "train/pairs.tsv", NULL};
    for (int i = 0; cand[i]; i++) {
        char *t = dinoc_path_join(p, cand[i]);
        if (!t) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        if (dinoc_file_exists(t)) {
            dinoc_status s = load_tsv(out, t);
            free(t);
            return s;
        }
        free(t);
    }
    return load_folder(out, p);
}
