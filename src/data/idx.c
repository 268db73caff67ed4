/* idx.c: MNIST / Fashion-MNIST IDX files (dinoc_dataset_idx_open), gzipped or plain.
 *
 * Format (big-endian): images "00 00 08 03", count, rows, cols, then count*rows*cols bytes;
 * labels "00 00 08 01", count, then count bytes. Both files are read whole into memory (the
 * 60000-image training split is 47 MB) and validated before anything is returned: magic numbers,
 * dimensions (1..4096), counts agreeing, labels < 10 and the exact decompressed length.
 *
 * zlib's gz* reader opens gzip and plain files alike (it passes non-gzip input through), so one
 * path reads both. The buffer grows as data arrives rather than being sized from the header, so a
 * small file claiming billions of images fails on its length without a huge allocation; and reading
 * stops one byte past the expected length, so a gzip bomb is never inflated further than that;
 * an images header may declare at most IDX_PAYLOAD_MAX (16 GiB) of pixels.
 *
 * Tested by tests/test_data.c (the real Fashion-MNIST, and broken files written to the tmp dir). */
#include "data.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_SIDE_MAX     4096
/* More items than any IDX set in use (EMNIST has 814255); keeps count * rows * cols far from
 * overflow with the side limit. */
#define IDX_COUNT_MAX    ((uint32_t)1 << 30)
/* Most pixel bytes an images file may declare (Fashion-MNIST's training split has 47 MB, EMNIST
 * ~700 MB): the payload is inflated into memory, so a header claiming up to 2^54 bytes in front of
 * a gzip bomb would otherwise inflate until memory runs out. */
#define IDX_PAYLOAD_MAX  ((uint64_t)16 << 30)
#define IDX_CLASSES      10
#define IDX_DEFAULT_DIR  "/usr/share/datasets/fashion-mnist"

static const char *const fashion_names[IDX_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* An open IDX file: gz handle plus the path for messages. */
typedef struct {
    gzFile      gz;
    const char *path;
} idx_file;

static dinoc_status idx_open(idx_file *f, const char *path) {
    f->gz   = NULL;
    f->path = path;
    /* Open and check the type ourselves: gzopen on a FIFO would block, on a directory it would
     * fail with a less helpful message. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return dinoc_fail(DINOC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return dinoc_fail(DINOC_ERR_IO, "%s: not a regular file", path);
    }
    f->gz = gzdopen(fd, "rb");
    if (!f->gz) {
        close(fd);
        return dinoc_fail(DINOC_ERR_NOMEM, "%s: cannot start the gzip reader", path);
    }
    gzbuffer(f->gz, 1 << 17);
    return DINOC_OK;
}

static void idx_close(idx_file *f) {
    if (f->gz) gzclose(f->gz);
    f->gz = NULL;
}

/* Reads up to n bytes; *got is how many arrived (less only at the end of the data). A corrupt or
 * truncated gzip stream is an error naming the file and `what`. */
static dinoc_status idx_read(idx_file *f, void *dst, size_t n, size_t *got, const char *what) {
    size_t done = 0;
    while (done < n) {
        size_t   chunk = n - done;
        unsigned want  = chunk > (1u << 30) ? (1u << 30) : (unsigned)chunk;
        int      r     = gzread(f->gz, (uint8_t *)dst + done, want);
        if (r < 0) {
            int         errnum = 0;
            const char *msg    = gzerror(f->gz, &errnum);
            return dinoc_fail(errnum == Z_MEM_ERROR ? DINOC_ERR_NOMEM : DINOC_ERR_FORMAT,
                              "%s: %s: corrupt gzip data: %s", f->path, what,
                              errnum == Z_ERRNO ? strerror(errno) : msg);
        }
        if (r == 0) break;
        done += (size_t)r;
    }
    /* gzread reports a stream cut short as a short read plus an error state; check it so that a
     * truncated .gz is "truncated gzip", not a misleading count. */
    int errnum = 0;
    const char *msg = gzerror(f->gz, &errnum);
    if (errnum != Z_OK && errnum != Z_STREAM_END)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: %s: corrupt gzip data: %s", f->path, what,
                          errnum == Z_ERRNO ? strerror(errno) : msg);
    *got = done;
    return DINOC_OK;
}

/* Reads exactly `expected` payload bytes into a buffer grown as data arrives, then checks that
 * nothing follows (reading one byte more, never further). */
static dinoc_status idx_read_payload(idx_file *f, size_t expected, const char *what,
                                     uint8_t **out) {
    *out = NULL;
    size_t   cap = expected < ((size_t)1 << 20) ? expected : ((size_t)1 << 20);
    size_t   len = 0;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf) return dinoc_fail(DINOC_ERR_NOMEM, "%s: cannot allocate %zu bytes", f->path, cap);
    for (;;) {
        size_t       got = 0;
        dinoc_status s   = idx_read(f, buf + len, cap - len, &got, what);
        if (s != DINOC_OK) {
            free(buf);
            return s;
        }
        len += got;
        if (len < cap) break; /* end of data */
        if (cap == expected) break;
        size_t ncap = cap * 2 < expected ? cap * 2 : expected;
        uint8_t *nb = realloc(buf, ncap);
        if (!nb) {
            free(buf);
            return dinoc_fail(DINOC_ERR_NOMEM, "%s: cannot allocate %zu bytes", f->path, ncap);
        }
        buf = nb;
        cap = ncap;
    }
    if (len < expected) {
        free(buf);
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: %s: truncated: %zu bytes of %zu", f->path, what,
                          len, expected);
    }
    uint8_t extra;
    size_t  got = 0;
    dinoc_status s = idx_read(f, &extra, 1, &got, what);
    if (s != DINOC_OK || got != 0) {
        free(buf);
        if (s != DINOC_OK) return s;
        return dinoc_fail(DINOC_ERR_FORMAT,
                          "%s: %s: more data than the header's %zu bytes (trailing bytes)",
                          f->path, what, expected);
    }
    *out = buf;
    return DINOC_OK;
}

static dinoc_status idx_header(idx_file *f, uint8_t *hdr, size_t n) {
    size_t       got = 0;
    dinoc_status s   = idx_read(f, hdr, n, &got, "header");
    if (s != DINOC_OK) return s;
    if (got != n)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: header: truncated: %zu bytes of %zu", f->path,
                          got, n);
    return DINOC_OK;
}

static dinoc_status read_images(const char *path, uint32_t *count, int *rows, int *cols,
                                uint8_t **pixels) {
    idx_file     f;
    dinoc_status s = idx_open(&f, path);
    if (s != DINOC_OK) return s;
    uint8_t hdr[16];
    if ((s = idx_header(&f, hdr, sizeof hdr)) != DINOC_OK) goto done;
    uint32_t magic = be32(hdr), n = be32(hdr + 4), r = be32(hdr + 8), c = be32(hdr + 12);
    if (magic != IDX_MAGIC_IMAGES) {
        s = dinoc_fail(DINOC_ERR_FORMAT,
                       "%s: magic: 0x%08x, expected 0x%08x (IDX unsigned-byte 3-d images)", path,
                       magic, IDX_MAGIC_IMAGES);
        goto done;
    }
    if (n == 0 || n > IDX_COUNT_MAX) {
        s = dinoc_fail(DINOC_ERR_FORMAT, "%s: count: %u, expected 1..%u", path, n, IDX_COUNT_MAX);
        goto done;
    }
    if (r == 0 || r > IDX_SIDE_MAX || c == 0 || c > IDX_SIDE_MAX) {
        s = dinoc_fail(DINOC_ERR_FORMAT, "%s: dims: %u x %u, expected rows and cols in 1..%d",
                       path, r, c, IDX_SIDE_MAX);
        goto done;
    }
    uint64_t bytes = (uint64_t)n * r * c; /* < 2^54: no overflow */
    if (bytes > IDX_PAYLOAD_MAX || (size_t)bytes != bytes) {
        s = dinoc_fail(DINOC_ERR_FORMAT,
                       "%s: dims: %u images of %u x %u declare %llu pixel bytes, more than the "
                       "%llu GiB accepted", path, n, r, c, (unsigned long long)bytes,
                       (unsigned long long)(IDX_PAYLOAD_MAX >> 30));
        goto done;
    }
    if ((s = idx_read_payload(&f, (size_t)bytes, "pixels", pixels)) != DINOC_OK) goto done;
    *count = n;
    *rows  = (int)r;
    *cols  = (int)c;
done:
    idx_close(&f);
    return s;
}

static dinoc_status read_labels(const char *path, uint32_t *count, uint8_t **labels) {
    idx_file     f;
    dinoc_status s = idx_open(&f, path);
    if (s != DINOC_OK) return s;
    uint8_t hdr[8];
    if ((s = idx_header(&f, hdr, sizeof hdr)) != DINOC_OK) goto done;
    uint32_t magic = be32(hdr), n = be32(hdr + 4);
    if (magic != IDX_MAGIC_LABELS) {
        s = dinoc_fail(DINOC_ERR_FORMAT,
                       "%s: magic: 0x%08x, expected 0x%08x (IDX unsigned-byte 1-d labels)", path,
                       magic, IDX_MAGIC_LABELS);
        goto done;
    }
    if (n == 0 || n > IDX_COUNT_MAX) {
        s = dinoc_fail(DINOC_ERR_FORMAT, "%s: count: %u, expected 1..%u", path, n, IDX_COUNT_MAX);
        goto done;
    }
    if ((s = idx_read_payload(&f, n, "labels", labels)) != DINOC_OK) goto done;
    *count = n;
done:
    idx_close(&f);
    return s;
}

/* dir/base.gz if it exists, else dir/base (caller frees). The .gz wins because that is how the
 * files are distributed; an unpacked copy next to it is assumed to be the same data. */
static char *find_file(const char *dir, const char *base) {
    char gzname[64];
    snprintf(gzname, sizeof gzname, "%s.gz", base);
    char *p = dinoc_path_join(dir, gzname);
    if (p && dinoc_file_exists(p)) return p;
    free(p);
    p = dinoc_path_join(dir, base);
    if (p && dinoc_file_exists(p)) return p;
    free(p);
    return NULL;
}

dinoc_status dinoc_dataset_idx_open(dinoc_dataset **out, const char *dir, int train) {
    if (!out) return dinoc_fail(DINOC_ERR_ARG, "dinoc_dataset_idx_open: out is NULL");
    *out = NULL;
    if (!dir) {
        const char *env = getenv("DINOC_FASHION_MNIST");
        dir = env && env[0] ? env : IDX_DEFAULT_DIR;
    }
    const char *split = train ? "train" : "t10k";
    char        ibase[32], lbase[32];
    snprintf(ibase, sizeof ibase, "%s-images-idx3-ubyte", split);
    snprintf(lbase, sizeof lbase, "%s-labels-idx1-ubyte", split);
    char *ipath = find_file(dir, ibase);
    char *lpath = find_file(dir, lbase);
    if (!ipath || !lpath) {
        dinoc_status s = dinoc_fail(DINOC_ERR_IO, "%s: no %s[.gz] in this directory", dir,
                                    !ipath ? ibase : lbase);
        free(ipath);
        free(lpath);
        return s;
    }

    uint32_t      ni = 0, nl = 0;
    int           rows = 0, cols = 0;
    uint8_t      *pixels = NULL, *lab = NULL;
    dinoc_dataset *ds    = NULL;
    dinoc_status  s      = read_images(ipath, &ni, &rows, &cols, &pixels);
    if (s != DINOC_OK) goto fail;
    if ((s = read_labels(lpath, &nl, &lab)) != DINOC_OK) goto fail;
    if (ni != nl) {
        s = dinoc_fail(DINOC_ERR_FORMAT, "%s: count: %u labels, but %s has %u images", lpath, nl,
                       ipath, ni);
        goto fail;
    }
    for (uint32_t i = 0; i < nl; i++) {
        if (lab[i] >= IDX_CLASSES) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: label %u: value %u, expected 0..%d", lpath, i,
                           lab[i], IDX_CLASSES - 1);
            goto fail;
        }
    }
    ds = calloc(1, sizeof *ds);
    if (!ds || !(ds->labels = malloc(sizeof(int32_t) * nl))) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", ipath);
        goto fail;
    }
    for (uint32_t i = 0; i < nl; i++) ds->labels[i] = lab[i];
    free(lab);
    lab             = NULL;
    ds->kind        = DINOC_DATASET_IDX;
    ds->n           = ni;
    ds->num_classes = IDX_CLASSES;
    ds->class_names = (const char **)fashion_names;
    ds->owns_names  = 0;
    ds->rows        = rows;
    ds->cols        = cols;
    ds->pixels      = pixels;
    ds->label       = ipath;
    free(lpath);
    *out = ds;
    return DINOC_OK;
fail:
    if (ds) free(ds->labels);
    free(ds);
    free(pixels);
    free(lab);
    free(ipath);
    free(lpath);
    return s;
}

void dinoc_dataset_idx_release(dinoc_dataset *ds) {
    free(ds->pixels);
    free(ds->label);
    ds->pixels = NULL;
    ds->label  = NULL;
}

/* Item i as a fresh c = 1 image (the caller's dinoc_image_free frees it). */
dinoc_status dinoc_dataset_idx_get(const dinoc_dataset *ds, int64_t i, dinoc_image *img) {
    size_t   px  = (size_t)ds->rows * (size_t)ds->cols;
    uint8_t *buf = malloc(px);
    if (!buf)
        return dinoc_fail(DINOC_ERR_NOMEM, "%s: image %lld: cannot allocate %zu bytes", ds->label,
                          (long long)i, px);
    memcpy(buf, ds->pixels + (size_t)i * px, px);
    img->w    = ds->cols;
    img->h    = ds->rows;
    img->c    = 1;
    img->data = buf;
    return DINOC_OK;
}
