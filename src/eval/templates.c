/* templates.c: the prompt templates of zero-shot CLIP (reference clip_mlm_and_c_peers.md A.9) and
 * the small text-file readers the CLIP uses share: line lists (class names, templates), two-column
 * TSVs (labels.tsv, pairs.tsv) and string de-duplication.
 *
 * The 80 templates are OpenAI's ImageNet set (openai/CLIP notebooks/Prompt_Engineering_for_ImageNet,
 * copied verbatim into open_clip's OPENAI_IMAGENET_TEMPLATES), in the same order, with the same
 * quirks kept ("a origami {}.", "a embroidered {}.", "itap of a {}."): the reference's numbers were
 * measured with exactly these strings. Tested by tests/test_clip_eval.c. */
#include "clip_eval.h"

#include <string.h>

const char *const dinoc_imagenet_templates[DINOC_IMAGENET_TEMPLATES] = {
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.",
    "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.",
    "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.",
    "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.",
    "art of a {}.", "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.",
    "itap of the {}.", "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.",
    "a photo of the nice {}.", "a photo of the small {}.", "a photo of the weird {}.",
    "the cartoon {}.", "art of the {}.", "a drawing of the {}.", "a photo of the large {}.",
    "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.", "itap of a {}.",
    "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
};

const char *const dinoc_simple_templates[DINOC_SIMPLE_TEMPLATES] = {
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
};

/* Text files read here are lists and indexes, never bulk data: 1 GB is far beyond any of them. */
#define TEXT_MAX_BYTES (1ull << 30)

void dinoc_strlist_free(dinoc_strlist *l) {
    if (!l) return;
    for (int64_t i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    l->s = NULL, l->n = 0;
}

dinoc_status dinoc_strlist_push(dinoc_strlist *l, const char *s) {
    /* capacity doubles at powers of two, so it is implied by n */
    if ((l->n & (l->n - 1)) == 0) {
        char **g = realloc(l->s, sizeof(char *) * (size_t)(l->n ? 2 * l->n : 1));
        if (!g) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory (list of %lld strings)", (long long)l->n);
        l->s = g;
    }
    if (!(l->s[l->n] = strdup(s))) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    l->n++;
    return DINOC_OK;
}

/* Calls line(user, text, lineno) for each non-blank line of path ('\r' dropped, '#' comments
 * skipped unless keep_hash). */
static dinoc_status for_lines(const char *path, int keep_hash,
                              dinoc_status (*line)(void *user, char *text, int64_t lineno), void *user) {
    char        *buf;
    size_t       len;
    dinoc_status s = dinoc_read_file(path, TEXT_MAX_BYTES, &buf, &len);
    if (s) return s;
    if (memchr(buf, 0, len)) s = dinoc_fail(DINOC_ERR_FORMAT, "%s: holds a NUL byte (not a text file)", path);
    int64_t lineno = 0;
    for (char *p = buf; !s && p < buf + len;) {
        char *e = memchr(p, '\n', (size_t)(buf + len - p));
        if (!e) e = buf + len;
        *e = 0, lineno++;
        if (e > p && e[-1] == '\r') e[-1] = 0;
        if (*p && (keep_hash || *p != '#')) s = line(user, p, lineno);
        p = e + 1;
    }
    free(buf);
    return s;
}

typedef struct {
    dinoc_strlist *out;
    const char    *path;
    int            templates; /* 1: each line must hold "{}" exactly once */
} lines_ctx;

static dinoc_status on_line(void *user, char *text, int64_t lineno) {
    lines_ctx  *c = user;
    const char *b = strstr(text, "{}");
    if (c->templates && (!b || strstr(b + 2, "{}")))
        return dinoc_fail(DINOC_ERR_FORMAT, "%s:%lld: a template must hold \"{}\" exactly once: '%s'", c->path,
                          (long long)lineno, text);
    return dinoc_strlist_push(c->out, text);
}

static dinoc_status load_list(dinoc_strlist *out, const char *path, const char *what, int templates) {
    memset(out, 0, sizeof *out);
    lines_ctx    c = {out, path, templates};
    dinoc_status s = for_lines(path, 0, on_line, &c);
    if (!s && out->n == 0) s = dinoc_fail(DINOC_ERR_FORMAT, "%s: no %s in the file", path, what);
    if (s) dinoc_strlist_free(out);
    return s;
}

dinoc_status dinoc_lines_load(dinoc_strlist *out, const char *path, const char *what) {
    return load_list(out, path, what, 0);
}

dinoc_status dinoc_templates_load(dinoc_strlist *out, const char *path) {
    return load_list(out, path, "templates", 1);
}

dinoc_status dinoc_templates_choose(dinoc_strlist *out, const char *path, int simple) {
    if (path) return dinoc_templates_load(out, path);
    memset(out, 0, sizeof *out);
    const char *const *t = simple ? dinoc_simple_templates : dinoc_imagenet_templates;
    const int          n = simple ? DINOC_SIMPLE_TEMPLATES : DINOC_IMAGENET_TEMPLATES;
    dinoc_status       s = DINOC_OK;
    for (int i = 0; i < n && !s; i++) s = dinoc_strlist_push(out, t[i]);
    if (s) dinoc_strlist_free(out);
    return s;
}

dinoc_status dinoc_template_format(char **out, const char *tmpl, const char *name) {
    const char *b = strstr(tmpl, "{}");
    if (!b) return dinoc_fail(DINOC_ERR_ARG, "template '%s' has no \"{}\"", tmpl);
    size_t a = (size_t)(b - tmpl), nl = strlen(name), r = strlen(b + 2);
    if (!(*out = malloc(a + nl + r + 1))) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    memcpy(*out, tmpl, a), memcpy(*out + a, name, nl), memcpy(*out + a + nl, b + 2, r + 1);
    return DINOC_OK;
}

dinoc_status dinoc_split_list(dinoc_strlist *out, const char *csv) {
    memset(out, 0, sizeof *out);
    dinoc_status s = DINOC_OK;
    for (const char *p = csv; !s;) {
        const char *e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        while (p < e && *p == ' ') p++;
        const char *q = e;
        while (q > p && q[-1] == ' ') q--;
        if (q == p) {
            s = dinoc_fail(DINOC_ERR_ARG, "empty name in the list '%s'", csv);
            break;
        }
        char *name = strndup(p, (size_t)(q - p));
        s = name ? dinoc_strlist_push(out, name) : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        free(name);
        if (!*e) break;
        p = e + 1;
    }
    if (s) dinoc_strlist_free(out);
    return s;
}

typedef struct {
    dinoc_strlist *c0, *c1;
    const char    *path;
    char          *dir; /* relative paths are joined to it; NULL: kept as written */
    int            max_cols;
} tsv_ctx;

static dinoc_status on_tsv_line(void *user, char *text, int64_t lineno) {
    tsv_ctx *c   = user;
    char    *tab = strchr(text, '\t');
    if (!tab || tab == text || !tab[1])
        return dinoc_fail(DINOC_ERR_FORMAT, "%s:%lld: expected \"path<TAB>text\" with both fields non-empty",
                          c->path, (long long)lineno);
    *tab = 0;
    char *third = strchr(tab + 1, '\t');
    if (third && (c->max_cols < 3 || third == tab + 1))
        return dinoc_fail(DINOC_ERR_FORMAT, "%s:%lld: expected %s", c->path, (long long)lineno,
                          c->max_cols < 3 ? "2 columns, found another TAB" : "a non-empty second column");
    if (third) *third = 0; /* a pairs file's negative caption: not a caption of the image */
    if (c->dir && text[0] != '/') {
        char        *full = dinoc_path_join(c->dir, text);
        dinoc_status s    = full ? dinoc_strlist_push(c->c0, full) : dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
        free(full);
        if (s) return s;
    } else {
        dinoc_status s = dinoc_strlist_push(c->c0, text);
        if (s) return s;
    }
    return dinoc_strlist_push(c->c1, tab + 1);
}

dinoc_status dinoc_tsv_load(dinoc_strlist *col0, dinoc_strlist *col1, const char *path, int relative, int max_cols) {
    memset(col0, 0, sizeof *col0), memset(col1, 0, sizeof *col1);
    tsv_ctx c = {col0, col1, path, NULL, max_cols};
    if (relative) {
        const char *slash = strrchr(path, '/');
        c.dir             = slash ? strndup(path, (size_t)(slash - path + 1)) : strdup(".");
        if (!c.dir) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    }
    /* '#' may start a file name, so no comments in TSVs */
    dinoc_status s = for_lines(path, 1, on_tsv_line, &c);
    if (!s && col0->n == 0) s = dinoc_fail(DINOC_ERR_FORMAT, "%s: no rows", path);
    free(c.dir);
    if (s) dinoc_strlist_free(col0), dinoc_strlist_free(col1);
    return s;
}

typedef struct {
    const char *s;
    int64_t     i;
} keyed;

static int cmp_keyed(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    int          c = strcmp(x->s, y->s);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

dinoc_status dinoc_strings_unique(dinoc_strlist *uniq, int32_t *map, char *const *in, int64_t n) {
    memset(uniq, 0, sizeof *uniq);
    if (n > INT32_MAX) return dinoc_fail(DINOC_ERR_ARG, "%lld strings: at most 2^31 - 1", (long long)n);
    keyed   *ord   = malloc(sizeof(keyed) * (size_t)(n ? n : 1));
    int64_t *first = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    if (!ord || !first) {
        free(ord), free(first);
        return dinoc_fail(DINOC_ERR_NOMEM, "out of memory (%lld strings)", (long long)n);
    }
    /* sort by (string, index): each run of equal strings starts at its first occurrence */
    for (int64_t i = 0; i < n; i++) ord[i] = (keyed){in[i], i};
    qsort(ord, (size_t)n, sizeof(keyed), cmp_keyed);
    for (int64_t r = 0; r < n; r++) /* first[i]: the first occurrence of in[i] */
        first[ord[r].i] = r > 0 && strcmp(ord[r].s, ord[r - 1].s) == 0 ? first[ord[r - 1].i] : ord[r].i;
    dinoc_status s = DINOC_OK;
    for (int64_t i = 0; i < n && !s; i++) {
        if (first[i] == i) {
            map[i] = (int32_t)uniq->n;
            s      = dinoc_strlist_push(uniq, in[i]);
        } else {
            map[i] = map[first[i]];
        }
    }
    free(ord), free(first);
    if (s) dinoc_strlist_free(uniq);
    return s;
}
