/* fileio.c: whole-file reads, atomic writes (temp file, fsync, rename), small path helpers. */
#include "../internal.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

dinoc_status dinoc_read_file(const char *path, size_t max, char **out, size_t *len) {
    *out = NULL;
    /* O_NONBLOCK so that a FIFO is refused by the regular-file check instead of blocking open() */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return dinoc_fail(DINOC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return dinoc_fail(DINOC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return dinoc_fail(DINOC_ERR_IO, "%s: not a regular file", path);
    }
    if ((size_t)st.st_size > max) {
        fclose(f);
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: %lld bytes, more than the %zu accepted", path,
                          (long long)st.st_size, max);
    }
    size_t n   = (size_t)st.st_size;
    char  *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return dinoc_fail(DINOC_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
    }
    if (n && fread(buf, 1, n, f) != n) {
        free(buf);
        fclose(f);
        return dinoc_fail(DINOC_ERR_IO, "%s: short read", path);
    }
    fclose(f);
    buf[n] = 0;
    *out   = buf;
    if (len) *len = n;
    return DINOC_OK;
}

/* Removes PATH.tmp.<pid> files left beside path by writers that were killed (their pid no longer
 * runs on this host: kill(pid, 0) fails with ESRCH). A live writer's temp file is left alone. */
static void remove_stale_temps(const char *path) {
    const char *slash = strrchr(path, '/');
    const char *base  = slash ? slash + 1 : path;
    char       *dir   = slash ? strndup(path, (size_t)(slash - path + (slash == path))) : strdup(".");
    DIR        *d     = dir ? opendir(dir) : NULL;
    size_t      bl    = strlen(base);
    if (d) {
        for (struct dirent *e; (e = readdir(d));) {
            const char *n = e->d_name;
            if (strncmp(n, base, bl) != 0 || strncmp(n + bl, ".tmp.", 5) != 0) continue;
            char *end;
            long  pid = strtol(n + bl + 5, &end, 10);
            if (*end || pid <= 0 || end == n + bl + 5) continue;
            if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
            char *full = dinoc_path_join(dir, n);
            if (full) unlink(full);
            free(full);
        }
        closedir(d);
    }
    free(dir);
}

/* Creates the temp file: never through a symbolic link, never an existing file (O_EXCL). */
static int create_temp(const char *tmp) {
    return open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
}

dinoc_status dinoc_atomic_open(dinoc_atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    remove_stale_temps(path);
    size_t n = strlen(path) + 32;
    af->path = strdup(path);
    af->tmp  = malloc(n);
    if (!af->path || !af->tmp) {
        free(af->path);
        free(af->tmp);
        return dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(af->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    dinoc_status s  = DINOC_OK;
    int          fd = create_temp(af->tmp);
    if (fd < 0 && errno == EEXIST) {
        /* A file of our own temp name: left by a killed writer whose pid this process now has
         * (remove_stale_temps keeps it: our pid runs). A regular file is removed like any stale
         * temp; anything else (a symbolic link, a directory) is not ours to remove. */
        struct stat st;
        if (lstat(af->tmp, &st) == 0 && !S_ISREG(st.st_mode))
            s = dinoc_fail(DINOC_ERR_IO, "%s: cannot create: it exists and is not a regular file "
                           "(a symbolic link?)", af->tmp);
        else if (unlink(af->tmp) != 0 && errno != ENOENT)
            s = dinoc_fail(DINOC_ERR_IO, "%s: cannot remove the stale temp file: %s", af->tmp,
                           strerror(errno));
        else
            fd = create_temp(af->tmp);
    }
    if (!s && fd < 0) s = dinoc_fail(DINOC_ERR_IO, "%s: cannot create: %s", af->tmp, strerror(errno));
    if (!s && !(af->f = fdopen(fd, "wb"))) {
        s = dinoc_fail(DINOC_ERR_IO, "%s: cannot create: %s", af->tmp, strerror(errno));
        close(fd);
        unlink(af->tmp);
    }
    if (s) {
        free(af->path);
        free(af->tmp);
        memset(af, 0, sizeof *af);
    }
    return s;
}

dinoc_status dinoc_atomic_write(dinoc_atomic_file *af, const void *buf, size_t n) {
    if (n && fwrite(buf, 1, n, af->f) != n)
        return dinoc_fail(DINOC_ERR_IO, "%s: write failed: %s", af->tmp, strerror(errno));
    return DINOC_OK;
}

void dinoc_atomic_abort(dinoc_atomic_file *af) {
    if (af->f) fclose(af->f);
    if (af->tmp) unlink(af->tmp);
    free(af->path);
    free(af->tmp);
    memset(af, 0, sizeof *af);
}

dinoc_status dinoc_atomic_commit(dinoc_atomic_file *af) {
    dinoc_status s = DINOC_OK;
    if (fflush(af->f) != 0 || fsync(fileno(af->f)) != 0)
        s = dinoc_fail(DINOC_ERR_IO, "%s: flush failed: %s", af->tmp, strerror(errno));
    if (fclose(af->f) != 0 && s == DINOC_OK)
        s = dinoc_fail(DINOC_ERR_IO, "%s: close failed: %s", af->tmp, strerror(errno));
    af->f = NULL;
    if (s == DINOC_OK && rename(af->tmp, af->path) != 0)
        s = dinoc_fail(DINOC_ERR_IO, "%s: cannot rename over %s: %s", af->tmp, af->path,
                       strerror(errno));
    if (s != DINOC_OK) {
        dinoc_atomic_abort(af);
        return s;
    }
    /* Make the rename itself durable. */
    char *dir = strdup(af->path);
    if (dir) {
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0; else strcpy(dir, ".");
        int fd = open(slash && !dir[0] ? "/" : dir, O_RDONLY);
        if (fd >= 0) {
            fsync(fd);
            close(fd);
        }
        free(dir);
    }
    free(af->path);
    free(af->tmp);
    memset(af, 0, sizeof *af);
    return DINOC_OK;
}

dinoc_status dinoc_write_file_atomic(const char *path, const void *buf, size_t n) {
    dinoc_atomic_file af;
    dinoc_status      s = dinoc_atomic_open(&af, path);
    if (s) return s;
    if ((s = dinoc_atomic_write(&af, buf, n))) {
        dinoc_atomic_abort(&af);
        return s;
    }
    return dinoc_atomic_commit(&af);
}

dinoc_status dinoc_mkdir(const char *path) {
    /* mkdir -p: create missing parents first */
    char *p = strdup(path);
    if (!p) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
    for (char *q = p + 1; *q; q++) {
        if (*q != '/') continue;
        *q = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            dinoc_status s = dinoc_fail(DINOC_ERR_IO, "%s: cannot create directory: %s", p, strerror(errno));
            free(p);
            return s;
        }
        *q = '/';
    }
    free(p);
    if (mkdir(path, 0777) == 0 || (errno == EEXIST && dinoc_is_dir(path))) return DINOC_OK;
    return dinoc_fail(DINOC_ERR_IO, "%s: cannot create directory: %s", path, strerror(errno));
}

char *dinoc_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char  *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

int dinoc_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int dinoc_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}
