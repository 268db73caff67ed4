/* cli_util.c: option parsing, image path collection, progress lines, logging for the CLI. */
#include "cli.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

static const opt_spec *find_long(const opt_spec *o, const char *name, size_t len) {
    for (; o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0) return o;
    return NULL;
}

static const opt_spec *find_short(const opt_spec *o, char c) {
    for (; o->name; o++)
        if (o->short_name && o->short_name == c) return o;
    return NULL;
}

static void default_str(const opt_spec *o, char *buf, size_t n) {
    switch (o->kind) {
    case OPT_FLAG: snprintf(buf, n, "%s", *(int *)o->ptr ? "on" : "off"); break;
    case OPT_INT: snprintf(buf, n, "%d", *(int *)o->ptr); break;
    case OPT_FLOAT: snprintf(buf, n, "%g", *(float *)o->ptr); break;
    case OPT_STR: snprintf(buf, n, "%s", *(const char **)o->ptr ? *(const char **)o->ptr : "(none)"); break;
    }
}

void cli_print_help(FILE *f, const char *usage, const opt_spec *opts) {
    fprintf(f, "%s\n\noptions:\n", usage);
    for (const opt_spec *o = opts; o->name; o++) {
        char def[256], lhs[64];
        default_str(o, def, sizeof def);
        const char *arg = o->kind == OPT_FLAG ? "" : o->kind == OPT_STR ? " S" : o->kind == OPT_INT ? " N" : " X";
        if (o->short_name)
            snprintf(lhs, sizeof lhs, "-%c, --%s%s", o->short_name, o->name, arg);
        else
            snprintf(lhs, sizeof lhs, "    --%s%s", o->name, arg);
        fprintf(f, "  %-26s %s (default: %s)\n", lhs, o->help, def);
    }
    fprintf(f, "  %-26s %s\n", "-h, --help", "show this help");
}

/* Stores v into o's variable: 0, or -1 with *why a reason for the message ("" if none). */
static int set_value(const opt_spec *o, const char *v, const char **why) {
    char *end = NULL;
    errno     = 0;
    *why      = "";
    switch (o->kind) {
    case OPT_INT: {
        long x = strtol(v, &end, 10);
        if (!*v || *end) return -1;
        if (errno == ERANGE || x < INT_MIN || x > INT_MAX) {
            *why = " (out of range)";
            return -1;
        }
        if (errno) return -1;
        *(int *)o->ptr = (int)x;
        return 0;
    }
    case OPT_FLOAT: {
        float x = strtof(v, &end);
        if (!*v || *end) return -1;
        /* (ERANGE: beyond float's range, or so small it lost its precision) */
        if (errno == ERANGE || !isfinite(x)) {
            *why = errno == ERANGE ? " (out of range)" : " (not a finite number)";
            return -1;
        }
        if (errno) return -1;
        *(float *)o->ptr = x;
        return 0;
    }
    case OPT_STR: *(const char **)o->ptr = v; return 0;
    case OPT_FLAG: return -1;
    }
    return -1;
}

int cli_parse(int argc, char **argv, const opt_spec *opts, const char *usage, char **pos, int *npos) {
    *npos        = 0;
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == 0) {
            pos[(*npos)++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            cli_print_help(stdout, usage, opts);
            return 1;
        }
        const opt_spec *o;
        const char     *val = NULL;
        if (a[1] == '-') {
            const char *eq = strchr(a + 2, '=');
            size_t      len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
            o               = find_long(opts, a + 2, len);
            if (eq) val = eq + 1;
        } else {
            if (a[2] != 0) {
                fprintf(stderr, "error: unknown option '%s' (see --help)\n", a);
                return 2;
            }
            o = find_short(opts, a[1]);
        }
        if (!o) {
            fprintf(stderr, "error: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (o->kind == OPT_FLAG) {
            if (val) {
                fprintf(stderr, "error: option --%s takes no value\n", o->name);
                return 2;
            }
            *(int *)o->ptr = 1;
            continue;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "error: option --%s needs a value\n", o->name);
                return 2;
            }
            val = argv[++i];
        }
        const char *why;
        if (set_value(o, val, &why) != 0) {
            fprintf(stderr, "error: bad value '%s' for --%s%s\n", val, o->name, why);
            return 2;
        }
    }
    return 0;
}

static int has_image_ext(const char *name) {
    static const char *ext[] = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".pnm", ".tga", ".gif", NULL};
    const char        *dot   = strrchr(name, '.');
    if (!dot) return 0;
    for (int i = 0; ext[i]; i++)
        if (strcasecmp(dot, ext[i]) == 0) return 1;
    return 0;
}

typedef struct {
    char **v;
    int    n, cap;
} strvec;

static int push(strvec *sv, const char *s) {
    if (sv->n == sv->cap) {
        int    cap = sv->cap ? sv->cap * 2 : 64;
        char **nv  = realloc(sv->v, sizeof(char *) * (size_t)cap);
        if (!nv) return -1;
        sv->v = nv, sv->cap = cap;
    }
    if (!(sv->v[sv->n] = strdup(s))) return -1;
    sv->n++;
    return 0;
}

/* Deeper folders are an error (a real tree this deep is unlikely; links are walked once). */
#define WALK_DEPTH_MAX 32

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Directories already walked, by (st_dev, st_ino): a symbolic link back up the tree (a cycle) or
 * to a folder listed before is walked once, so no image is listed twice. */
typedef struct {
    dev_t *dev;
    ino_t *ino;
    int    n, cap;
} dirset;

/* 1 if st's directory is new (now recorded), 0 if walked before, -1 out of memory. */
static int dirset_add(dirset *ds, const struct stat *st) {
    for (int i = 0; i < ds->n; i++)
        if (ds->dev[i] == st->st_dev && ds->ino[i] == st->st_ino) return 0;
    if (ds->n == ds->cap) {
        int    cap = ds->cap ? ds->cap * 2 : 64;
        dev_t *nd  = realloc(ds->dev, sizeof(dev_t) * (size_t)cap);
        if (nd) ds->dev = nd;
        ino_t *ni = nd ? realloc(ds->ino, sizeof(ino_t) * (size_t)cap) : NULL;
        if (!ni) return -1;
        ds->ino = ni, ds->cap = cap;
    }
    ds->dev[ds->n] = st->st_dev, ds->ino[ds->n] = st->st_ino, ds->n++;
    return 1;
}

/* Walks dir (whose stat is st) unless it was walked before. 0 or -1 (message printed). */
static int walk(const char *dir, const struct stat *st, strvec *out, dirset *seen, int depth) {
    if (depth > WALK_DEPTH_MAX) {
        fprintf(stderr, "error: %s: directories nested deeper than %d\n", dir, WALK_DEPTH_MAX);
        return -1;
    }
    int added = dirset_add(seen, st);
    if (added < 0) {
        fprintf(stderr, "error: out of memory listing %s\n", dir);
        return -1;
    }
    if (!added) {
        fprintf(stderr, "note: %s: skipped, a folder already listed (a symbolic link?)\n", dir);
        return 0;
    }
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "error: cannot open directory %s: %s\n", dir, strerror(errno));
        return -1;
    }
    strvec         names = {0};
    struct dirent *de;
    int            rc = 0;
    for (errno = 0; (de = readdir(d)); errno = 0) {
        if (de->d_name[0] == '.') continue;
        if (push(&names, de->d_name)) {
            fprintf(stderr, "error: out of memory listing %s\n", dir);
            rc = -1;
            break;
        }
    }
    if (!rc && errno) {
        fprintf(stderr, "error: cannot read directory %s: %s\n", dir, strerror(errno));
        rc = -1;
    }
    closedir(d);
    if (names.n) qsort(names.v, (size_t)names.n, sizeof(char *), cmp_str); /* (qsort of NULL is undefined) */
    for (int i = 0; i < names.n && rc == 0; i++) {
        size_t len = strlen(dir) + strlen(names.v[i]) + 2;
        char  *p   = malloc(len);
        if (!p) {
            fprintf(stderr, "error: out of memory listing %s\n", dir);
            rc = -1;
            break;
        }
        snprintf(p, len, "%s/%s", dir, names.v[i]);
        struct stat sub;
        if (stat(p, &sub) == 0) { /* (a dangling link is skipped) */
            if (S_ISDIR(sub.st_mode))
                rc = walk(p, &sub, out, seen, depth + 1);
            else if (S_ISREG(sub.st_mode) && has_image_ext(names.v[i]) && push(out, p)) {
                fprintf(stderr, "error: out of memory listing %s\n", dir);
                rc = -1;
            }
        }
        free(p);
    }
    cli_free_list(names.v, names.n);
    return rc;
}

int cli_collect_images(char **inputs, int n, char ***out, int *nout) {
    strvec sv   = {0};
    dirset seen = {0};
    int    rc   = 0;
    for (int i = 0; i < n && !rc; i++) {
        struct stat st;
        if (stat(inputs[i], &st) != 0) {
            fprintf(stderr, "error: %s: %s\n", inputs[i], strerror(errno));
            rc = -1;
        } else if (S_ISDIR(st.st_mode))
            rc = walk(inputs[i], &st, &sv, &seen, 0);
        else if (push(&sv, inputs[i])) {
            fprintf(stderr, "error: out of memory\n");
            rc = -1;
        }
    }
    free(seen.dev);
    free(seen.ino);
    if (rc) {
        cli_free_list(sv.v, sv.n);
        return -1;
    }
    *out  = sv.v;
    *nout = sv.n;
    return 0;
}

void cli_free_list(char **list, int n) {
    for (int i = 0; i < n; i++) free(list[i]);
    free(list);
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_progress_start(cli_progress *p, const char *label) {
    p->t0 = p->last = cli_now();
    p->label        = label;
}

void cli_progress_update(cli_progress *p, long done, long total, int final) {
    double now = cli_now();
    if (!final && now - p->last < 0.25) return;
    p->last     = now;
    double el   = now - p->t0;
    double rate = el > 0 ? done / el : 0;
    double eta  = rate > 0 ? (total - done) / rate : 0;
    fprintf(stderr, "\r%s %ld/%ld (%d%%) %.1f img/s ETA %d:%02d   ", p->label, done, total,
            total ? (int)(100.0 * done / total) : 100, rate, (int)eta / 60, (int)eta % 60);
    if (final) fprintf(stderr, "\n");
    fflush(stderr);
}

static void log_hook(dinoc_log_level level, const char *msg, void *user) {
    static const char *names[] = {"error", "warning", "info", "debug"};
    fprintf(stderr, "dinoc: %s: %s\n", names[level], msg);
}

void cli_log_to_stderr(int verbose) {
    dinoc_log_set(log_hook, NULL, verbose ? DINOC_LOG_DEBUG : DINOC_LOG_WARN);
}

int cli_fail(const char *cmd, dinoc_status s) {
    const char *d = dinoc_last_error();
    fprintf(stderr, "dinoc %s: %s\n", cmd, d && d[0] ? d : dinoc_status_str(s));
    return 1;
}

int cli_bad_seed(int seed) {
    fprintf(stderr, "error: --seed %d: a seed is an integer >= 0\n", seed);
    return 2;
}

int cli_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
