/* test_data.c: datasets and the batch loader (src/data/).
 *
 * IDX: the real Fashion-MNIST of Debian's dataset-fashion-mnist (sizes, 6000/1000 images per class,
 * first labels and pixel sums checked against numpy), and small broken IDX files written to the
 * tmp dir (bad magic, counts, dims, labels, truncation, trailing bytes, garbage, a gzip bomb).
 * Folders: class and flat folders of PNG/BMP/TGA/JPEG written with stb_image_write.
 * Loader: same seed -> same batches, workers 0/1/3 bitwise identical, resumption from tell() equal
 * to the uninterrupted stream, every epoch a permutation, drop_last and the short last batch, a
 * corrupt image reported with its path, a failing transform, bad configs, early free. */
#include "check.h"
#include "../src/data/data.h"
#include "../src/train/supervised.h"

#include <ftw.h>
#include <stb/stb_image_write.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

/* ---- helpers ---------------------------------------------------------------------------------- */

static char *tmp_path(const char *name) { return dinoc_path_join(dinoc_test_tmpdir(), name); }

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

/* A fresh empty directory tmp/name (what an earlier run left there is removed). */
static char *fresh_dir(const char *name) {
    char *d = tmp_path(name);
    nftw(d, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    dinoc_mkdir(d);
    return d;
}

static void write_bytes(const char *dir, const char *name, const void *buf, size_t n) {
    char *p = dinoc_path_join(dir, name);
    FILE *f = fopen(p, "wb");
    CHECK_MSG(f != NULL, "cannot write %s", p);
    if (f) {
        if (n) fwrite(buf, 1, n, f);
        fclose(f);
    }
    free(p);
}

static void write_gz(const char *dir, const char *name, const void *buf, size_t n) {
    char  *p = dinoc_path_join(dir, name);
    gzFile g = gzopen(p, "wb6");
    CHECK_MSG(g != NULL, "cannot write %s", p);
    if (g) {
        if (n) CHECK(gzwrite(g, buf, (unsigned)n) == (int)n);
        gzclose(g);
    }
    free(p);
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* An IDX images file: magic, n, rows, cols, then n*rows*cols bytes of pixel pattern. */
static uint8_t *idx_images(uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols, size_t *len) {
    size_t   px  = (size_t)n * rows * cols;
    uint8_t *buf = malloc(16 + px);
    put_be32(buf, magic), put_be32(buf + 4, n), put_be32(buf + 8, rows), put_be32(buf + 12, cols);
    for (size_t i = 0; i < px; i++) buf[16 + i] = (uint8_t)(i * 7 + 3);
    *len = 16 + px;
    return buf;
}

static uint8_t *idx_labels(uint32_t magic, uint32_t n, size_t *len) {
    uint8_t *buf = malloc(8 + n);
    put_be32(buf, magic), put_be32(buf + 4, n);
    for (uint32_t i = 0; i < n; i++) buf[8 + i] = (uint8_t)(i % 10);
    *len = 8 + n;
    return buf;
}

#define IMG_NAME "train-images-idx3-ubyte"
#define LAB_NAME "train-labels-idx1-ubyte"

/* tmp/name with a train split; gz chooses the .gz names. Returns the dir (caller frees). */
static char *idx_case(const char *name, const void *img, size_t ilen, const void *lab, size_t llen,
                      int gz) {
    char *d = fresh_dir(name);
    if (gz) {
        write_gz(d, IMG_NAME ".gz", img, ilen);
        write_gz(d, LAB_NAME ".gz", lab, llen);
    } else {
        write_bytes(d, IMG_NAME, img, ilen);
        write_bytes(d, LAB_NAME, lab, llen);
    }
    return d;
}

/* Opening tmp/name must fail with `want` and a message holding both needles. */
static void expect_idx_error(const char *name, const void *img, size_t ilen, const void *lab,
                             size_t llen, int gz, dinoc_status want, const char *file,
                             const char *field) {
    char          *d  = idx_case(name, img, ilen, lab, llen, gz);
    dinoc_dataset *ds = (dinoc_dataset *)1;
    CHECK_ERR(dinoc_dataset_idx_open(&ds, d, 1), want, field);
    CHECK_MSG(strstr(dinoc_last_error(), file) != NULL, "%s: message '%s' lacks '%s'", name,
              dinoc_last_error(), file);
    CHECK(ds == NULL);
    free(d);
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* The test transform: uint8 -> float / 255 as [C, H, W], mirrored left-right with probability 1/2
 * drawn from the item's rng. */
static dinoc_status xf_flip(float *out, const dinoc_image *img, dinoc_rng *rng, void *user) {
    size_t want = *(const size_t *)user;
    if ((size_t)img->w * img->h * img->c != want)
        return dinoc_fail(DINOC_ERR_SHAPE, "xf_flip: image %d x %d x %d, want %zu floats", img->w,
                          img->h, img->c, want);
    int flip = dinoc_rng_uniform(rng) < 0.5f;
    int w = img->w, h = img->h, c = img->c;
    for (int k = 0; k < c; k++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int sx = flip ? w - 1 - x : x;
                out[((size_t)k * h + y) * w + x] = img->data[((size_t)y * w + sx) * c + k] / 255.0f;
            }
    return DINOC_OK;
}

static dinoc_loader_config cfg_of(int batch, int shuffle, int drop_last, uint64_t seed, int workers,
                                  int prefetch, size_t *item_floats) {
    dinoc_loader_config c;
    memset(&c, 0, sizeof c);
    c.batch          = batch;
    c.shuffle        = shuffle;
    c.drop_last      = drop_last;
    c.seed           = seed;
    c.workers        = workers;
    c.prefetch       = prefetch;
    c.item_floats    = *item_floats;
    c.transform      = xf_flip;
    c.transform_user = item_floats;
    return c;
}

/* Runs `nb` batches from `start` and stores a hash of each (x, labels, n, epoch_end) and the tell()
 * after it. Returns the number of batches obtained. */
static int run_hashes(const dinoc_dataset *ds, const dinoc_loader_config *cfg,
                      dinoc_loader_pos start, int nb, uint64_t *hash, dinoc_loader_pos *tells) {
    dinoc_loader *ld = NULL;
    CHECK_OK(dinoc_loader_init(&ld, ds, cfg, start));
    if (!ld) return 0;
    int k = 0;
    for (; k < nb; k++) {
        const float   *x;
        const int32_t *y;
        int            n = 0, ee = 0;
        dinoc_status   s = dinoc_loader_next(ld, &x, &y, &n, &ee);
        if (s != DINOC_OK) {
            CHECK_MSG(0, "batch %d: %s", k, dinoc_last_error());
            break;
        }
        uint64_t h = 0xcbf29ce484222325ull;
        h          = fnv1a(h, x, sizeof(float) * cfg->item_floats * (size_t)n);
        h          = fnv1a(h, y, sizeof(int32_t) * (size_t)n);
        h          = fnv1a(h, &n, sizeof n);
        h          = fnv1a(h, &ee, sizeof ee);
        hash[k]    = h;
        if (tells) tells[k] = dinoc_loader_tell(ld);
    }
    dinoc_loader_free(ld);
    return k;
}

/* A flat folder of n uniform 3 x 2 RGB PNGs, image i filled with value 5 * i (so a transformed
 * item tells which item it was). */
static char *index_folder(const char *name, int n) {
    char *d = fresh_dir(name);
    for (int i = 0; i < n; i++) {
        uint8_t px[3 * 2 * 3];
        memset(px, 5 * i, sizeof px);
        char fname[64];
        snprintf(fname, sizeof fname, "img_%03d.png", i);
        char *p = dinoc_path_join(d, fname);
        CHECK(stbi_write_png(p, 3, 2, 3, px, 3 * 3));
        free(p);
    }
    return d;
}

static int item_of(const float *x) { return (int)lrintf(x[0] * 255.0f / 5.0f); }

/* ---- IDX -------------------------------------------------------------------------------------- */

DINOC_TEST(data_idx_fashion_mnist) {
    static const struct {
        int      train;
        int64_t  n, per_class;
        int      first_label;
        long     sum0, sum_last;
        uint64_t sum_all;
    } want[2] = {
        {1, 60000, 6000, 9, 76247, 16684, 3431114169ull},
        {0, 10000, 1000, 9, 33456, 24390, 573469082ull},
    };
    for (int t = 0; t < 2; t++) {
        dinoc_dataset *ds = NULL;
        CHECK_OK(dinoc_dataset_idx_open(&ds, FMNIST_DIR, want[t].train));
        if (!ds) continue;
        CHECK(dinoc_dataset_size(ds) == want[t].n);
        CHECK(dinoc_dataset_num_classes(ds) == 10);
        CHECK(strcmp(dinoc_dataset_class_name(ds, 0), "T-shirt/top") == 0);
        CHECK(strcmp(dinoc_dataset_class_name(ds, 9), "Ankle boot") == 0);
        CHECK(dinoc_dataset_class_name(ds, 10) == NULL);
        CHECK(dinoc_dataset_path(ds, 0) == NULL);
        int64_t  count[10] = {0};
        uint64_t sum_all   = 0;
        for (int64_t i = 0; i < want[t].n; i++) {
            dinoc_image img;
            int32_t     y = -2;
            dinoc_status s = dinoc_dataset_get(ds, i, &img, &y);
            if (s != DINOC_OK) {
                CHECK_OK(s);
                break;
            }
            if (y >= 0 && y < 10) count[y]++;
            long sum = 0;
            for (int p = 0; p < 28 * 28; p++) sum += img.data[p];
            sum_all += (uint64_t)sum;
            if (i == 0) {
                CHECK(img.w == 28 && img.h == 28 && img.c == 1);
                CHECK(y == want[t].first_label);
                CHECK(sum == want[t].sum0);
            }
            if (i == want[t].n - 1) CHECK(sum == want[t].sum_last);
            dinoc_image_free(&img);
        }
        for (int k = 0; k < 10; k++)
            CHECK_MSG(count[k] == want[t].per_class, "split %d class %d: %lld images", t, k,
                      (long long)count[k]);
        CHECK(sum_all == want[t].sum_all);
        dinoc_image img;
        CHECK_ERR(dinoc_dataset_get(ds, want[t].n, &img, NULL), DINOC_ERR_ARG, "outside");
        CHECK_ERR(dinoc_dataset_get(ds, -1, &img, NULL), DINOC_ERR_ARG, "outside");
        dinoc_dataset_free(ds);
    }
    /* The default directory (dir NULL) is Debian's, unless $DINOC_FASHION_MNIST says otherwise. */
    const char *env = getenv("DINOC_FASHION_MNIST");
    if (!env || !env[0]) {
        dinoc_dataset *ds = NULL;
        CHECK_OK(dinoc_dataset_idx_open(&ds, NULL, 0));
        CHECK(dinoc_dataset_size(ds) == 10000);
        dinoc_dataset_free(ds);
    }
}

DINOC_TEST(data_idx_small_valid) {
    size_t   il, ll;
    uint8_t *img = idx_images(0x803, 5, 3, 4, &il);
    uint8_t *lab = idx_labels(0x801, 5, &ll);
    for (int gz = 0; gz < 2; gz++) {
        char          *d  = idx_case(gz ? "idx_valid_gz" : "idx_valid_plain", img, il, lab, ll, gz);
        dinoc_dataset *ds = NULL;
        CHECK_OK(dinoc_dataset_idx_open(&ds, d, 1));
        if (ds) {
            CHECK(dinoc_dataset_size(ds) == 5);
            dinoc_image im;
            int32_t     y;
            CHECK_OK(dinoc_dataset_get(ds, 2, &im, &y));
            CHECK(im.w == 4 && im.h == 3 && im.c == 1 && y == 2);
            CHECK(im.data && memcmp(im.data, img + 16 + 2 * 12, 12) == 0);
            dinoc_image_free(&im);
            dinoc_dataset_free(ds);
        }
        /* The test split is not there. */
        CHECK_ERR(dinoc_dataset_idx_open(&ds, d, 0), DINOC_ERR_IO, "t10k-images-idx3-ubyte");
        free(d);
    }
    /* Any side up to 4096 is accepted. */
    free(img);
    img       = idx_images(0x803, 2, 1, 4096, &il);
    char *d   = idx_case("idx_wide", img, il, lab, 8 + 2, 1);
    uint8_t l2[10];
    memcpy(l2, lab, 10);
    put_be32(l2 + 4, 2);
    write_gz(d, LAB_NAME ".gz", l2, 10);
    dinoc_dataset *ds = NULL;
    CHECK_OK(dinoc_dataset_idx_open(&ds, d, 1));
    dinoc_dataset_free(ds);
    free(d);
    free(img);
    free(lab);
}

DINOC_TEST(data_idx_corrupt) {
    size_t   il, ll;
    uint8_t *img = idx_images(0x803, 5, 3, 4, &il);
    uint8_t *lab = idx_labels(0x801, 5, &ll);

    /* Bad magic numbers (images, then labels; the labels magic on the images file). */
    uint8_t *bad = idx_images(0x801, 5, 3, 4, &il);
    expect_idx_error("idx_magic_img", bad, il, lab, ll, 1, DINOC_ERR_FORMAT, IMG_NAME, "magic");
    free(bad);
    bad = idx_labels(0x803, 5, &ll);
    expect_idx_error("idx_magic_lab", img, il, bad, ll, 1, DINOC_ERR_FORMAT, LAB_NAME, "magic");
    free(bad);

    /* Counts that disagree. */
    bad = idx_labels(0x801, 4, &ll);
    expect_idx_error("idx_count", img, il, bad, ll, 1, DINOC_ERR_FORMAT, LAB_NAME, "count");
    free(bad);
    ll = 8 + 5;

    /* Zero count, zero and oversized dims. */
    bad = idx_images(0x803, 0, 3, 4, &il);
    expect_idx_error("idx_zero", bad, il, lab, ll, 0, DINOC_ERR_FORMAT, IMG_NAME, "count");
    free(bad);
    bad = idx_images(0x803, 5, 0, 4, &il);
    expect_idx_error("idx_rows0", bad, il, lab, ll, 0, DINOC_ERR_FORMAT, IMG_NAME, "dims");
    free(bad);
    bad = idx_images(0x803, 1, 2, 5000, &il);
    expect_idx_error("idx_cols", bad, il, lab, ll, 0, DINOC_ERR_FORMAT, IMG_NAME, "dims");
    free(bad);
    il = 16 + 60;

    /* A label out of range. */
    uint8_t lab10[13];
    memcpy(lab10, lab, 13);
    lab10[8 + 3] = 10;
    expect_idx_error("idx_label10", img, il, lab10, 13, 1, DINOC_ERR_FORMAT, LAB_NAME, "label 3");

    /* Truncated pixels (plain and gzipped), truncated header, trailing bytes. */
    expect_idx_error("idx_trunc_plain", img, il - 1, lab, ll, 0, DINOC_ERR_FORMAT, IMG_NAME,
                     "truncated");
    expect_idx_error("idx_trunc_gz", img, il - 7, lab, ll, 1, DINOC_ERR_FORMAT, IMG_NAME,
                     "truncated");
    expect_idx_error("idx_trunc_hdr", img, 11, lab, ll, 0, DINOC_ERR_FORMAT, IMG_NAME, "header");
    expect_idx_error("idx_trunc_lab", img, il, lab, ll - 2, 0, DINOC_ERR_FORMAT, LAB_NAME,
                     "truncated");
    uint8_t *longer = malloc(il + 3);
    memcpy(longer, img, il);
    memset(longer + il, 0, 3);
    expect_idx_error("idx_trailing", longer, il + 3, lab, ll, 1, DINOC_ERR_FORMAT, IMG_NAME,
                     "trailing");
    free(longer);

    /* A gzip stream cut in the middle. */
    {
        char *d = idx_case("idx_cut_gz", img, il, lab, ll, 1);
        char *p = dinoc_path_join(d, IMG_NAME ".gz");
        char *buf = NULL;
        size_t n = 0;
        CHECK_OK(dinoc_read_file(p, 1 << 20, &buf, &n));
        write_bytes(d, IMG_NAME ".gz", buf, n / 2);
        dinoc_dataset *ds = NULL;
        CHECK_ERR(dinoc_dataset_idx_open(&ds, d, 1), DINOC_ERR_FORMAT, IMG_NAME ".gz");
        free(buf);
        free(p);
        free(d);
    }

    /* Garbage: not gzip at all (read as a plain file: bad magic), and a gzip magic followed by
     * garbage (a corrupt stream). */
    {
        char *d = fresh_dir("idx_garbage");
        const char text[] = "this is certainly not an IDX file, nor gzip\n";
        write_bytes(d, IMG_NAME ".gz", text, sizeof text - 1);
        write_gz(d, LAB_NAME ".gz", lab, ll);
        dinoc_dataset *ds = NULL;
        CHECK_ERR(dinoc_dataset_idx_open(&ds, d, 1), DINOC_ERR_FORMAT, IMG_NAME ".gz: magic");
        uint8_t junk[64];
        for (int i = 0; i < 64; i++) junk[i] = (uint8_t)(i * 37 + 11);
        junk[0] = 0x1f, junk[1] = 0x8b, junk[2] = 8, junk[3] = 0;
        write_bytes(d, IMG_NAME ".gz", junk, sizeof junk);
        CHECK_ERR(dinoc_dataset_idx_open(&ds, d, 1), DINOC_ERR_FORMAT, IMG_NAME ".gz");
        free(d);
    }

    /* A gzip bomb: the header promises one 28 x 28 image, the stream inflates to 64 MiB. The
     * reader must stop one byte past 16 + 784 and fail. */
    {
        size_t   big  = (size_t)64 << 20;
        uint8_t *bomb = calloc(1, big);
        put_be32(bomb, 0x803), put_be32(bomb + 4, 1), put_be32(bomb + 8, 28), put_be32(bomb + 12, 28);
        uint8_t l1[9];
        memcpy(l1, lab, 9);
        put_be32(l1 + 4, 1);
        char *d = idx_case("idx_bomb", bomb, big, l1, 9, 1);
        free(bomb);
        dinoc_dataset *ds = NULL;
        CHECK_ERR(dinoc_dataset_idx_open(&ds, d, 1), DINOC_ERR_FORMAT, "trailing");
        CHECK(strstr(dinoc_last_error(), IMG_NAME ".gz") != NULL);
        free(d);
    }

    /* A header declaring more pixels than the reader accepts (2^30 images of 4096 x 4096 =
     * 2^54 bytes): refused from the header, before inflating anything (a gzip bomb behind such a
     * header would otherwise be inflated until memory runs out). */
    {
        uint8_t hdr[16];
        put_be32(hdr, 0x803), put_be32(hdr + 4, 1u << 30), put_be32(hdr + 8, 4096), put_be32(hdr + 12, 4096);
        expect_idx_error("idx_huge_decl", hdr, sizeof hdr, lab, ll, 1, DINOC_ERR_FORMAT, IMG_NAME,
                         "1073741824 images of 4096 x 4096");
        CHECK(strstr(dinoc_last_error(), "16 GiB") != NULL);
    }

    /* A missing directory, a directory where a file should be. */
    dinoc_dataset *ds = NULL;
    char          *d  = tmp_path("idx_no_such_dir");
    CHECK_ERR(dinoc_dataset_idx_open(&ds, d, 1), DINOC_ERR_IO, "idx_no_such_dir");
    free(d);
    d       = fresh_dir("idx_dir_as_file");
    char *p = dinoc_path_join(d, IMG_NAME);
    dinoc_mkdir(p);
    write_bytes(d, LAB_NAME, lab, ll);
    CHECK_ERR(dinoc_dataset_idx_open(&ds, d, 1), DINOC_ERR_IO, IMG_NAME);
    free(p);
    free(d);
    free(img);
    free(lab);
}

/* ---- folders ---------------------------------------------------------------------------------- */

DINOC_TEST(data_folder_classes) {
    char *d = fresh_dir("folder_cls");
    char *cat = dinoc_path_join(d, "cat"), *dog = dinoc_path_join(d, "dog");
    char *sub = dinoc_path_join(cat, "sub");
    dinoc_mkdir(sub);
    dinoc_mkdir(dog);
    uint8_t grey[4 * 3], rgb[5 * 2 * 3];
    for (int i = 0; i < 12; i++) grey[i] = (uint8_t)(i * 20);
    for (int i = 0; i < 30; i++) rgb[i] = (uint8_t)(i * 8 + 1);
    char *p;
    p = dinoc_path_join(cat, "b.png");
    CHECK(stbi_write_png(p, 4, 3, 1, grey, 4));
    free(p);
    p = dinoc_path_join(cat, "a.PNG");
    CHECK(stbi_write_png(p, 5, 2, 3, rgb, 15));
    free(p);
    p = dinoc_path_join(sub, "c.jpg");
    CHECK(stbi_write_jpg(p, 5, 2, 3, rgb, 90));
    free(p);
    p = dinoc_path_join(cat, ".hidden.png");
    CHECK(stbi_write_png(p, 5, 2, 3, rgb, 15));
    free(p);
    write_bytes(cat, "notes.txt", "hello", 5);
    p = dinoc_path_join(dog, "y.tga");
    CHECK(stbi_write_tga(p, 5, 2, 3, rgb));
    free(p);
    p = dinoc_path_join(dog, "x.bmp");
    CHECK(stbi_write_bmp(p, 5, 2, 3, rgb));
    free(p);
    p = dinoc_path_join(d, "stray.png");
    CHECK(stbi_write_png(p, 5, 2, 3, rgb, 15));
    free(p);

    dinoc_dataset *ds = NULL;
    CHECK_OK(dinoc_dataset_folder_open(&ds, d));
    if (ds) {
        static const char *names[] = {"cat/a.PNG", "cat/b.png", "cat/sub/c.jpg", "dog/x.bmp",
                                      "dog/y.tga"};
        static const int32_t labels[] = {0, 0, 0, 1, 1};
        CHECK(dinoc_dataset_size(ds) == 5);
        CHECK(dinoc_dataset_num_classes(ds) == 2);
        CHECK(strcmp(dinoc_dataset_class_name(ds, 0), "cat") == 0);
        CHECK(strcmp(dinoc_dataset_class_name(ds, 1), "dog") == 0);
        for (int i = 0; i < 5 && i < dinoc_dataset_size(ds); i++) {
            char *want = dinoc_path_join(d, names[i]);
            CHECK_MSG(strcmp(dinoc_dataset_path(ds, i), want) == 0, "item %d: %s, want %s", i,
                      dinoc_dataset_path(ds, i), want);
            free(want);
            dinoc_image im;
            int32_t     y = -2;
            CHECK_OK(dinoc_dataset_get(ds, i, &im, &y));
            CHECK(y == labels[i] && im.c == 3);
            if (i == 0) CHECK(im.w == 5 && im.h == 2 && memcmp(im.data, rgb, 30) == 0);
            if (i == 1) {
                CHECK(im.w == 4 && im.h == 3);
                for (int k = 0; k < 12 && im.data; k++)
                    CHECK(im.data[3 * k] == grey[k] && im.data[3 * k + 2] == grey[k]);
            }
            if (i >= 3) CHECK(im.w == 5 && im.h == 2 && memcmp(im.data, rgb, 30) == 0);
            dinoc_image_free(&im);
        }
        dinoc_dataset_free(ds);
    }
    /* the trainers' data: a folder without test/ trains on itself and has no test split (its
     * images scored against themselves gave k-NN monitors of ~100 % before session 7) */
    CHECK(!dinoc_train_has_test(d) && dinoc_train_has_test("fashion-mnist"));
    ds = NULL;
    CHECK_OK(dinoc_train_open_data(&ds, d, NULL, 1));
    CHECK(ds && dinoc_dataset_size(ds) == 5);
    dinoc_dataset_free(ds), ds = NULL;
    CHECK_ERR(dinoc_train_open_data(&ds, d, NULL, 0), DINOC_ERR_ARG, "no test/ subfolder");
    free(sub), free(cat), free(dog), free(d);
}

DINOC_TEST(data_folder_flat_and_empty) {
    char          *d  = index_folder("folder_flat", 12);
    dinoc_dataset *ds = NULL;
    CHECK_OK(dinoc_dataset_folder_open(&ds, d));
    if (ds) {
        CHECK(dinoc_dataset_size(ds) == 12);
        CHECK(dinoc_dataset_num_classes(ds) == 0);
        CHECK(dinoc_dataset_class_name(ds, 0) == NULL);
        for (int i = 0; i < 12; i++) {
            dinoc_image im;
            int32_t     y = 0;
            CHECK_OK(dinoc_dataset_get(ds, i, &im, &y));
            CHECK(y == -1 && im.w == 3 && im.h == 2 && im.c == 3 && im.data[0] == 5 * i);
            dinoc_image_free(&im);
        }
        dinoc_dataset_free(ds);
    }
    free(d);

    /* An empty folder, one with only non-images, an empty class folder, a missing folder. */
    d = fresh_dir("folder_empty");
    CHECK_ERR(dinoc_dataset_folder_open(&ds, d), DINOC_ERR_FORMAT, "folder_empty");
    write_bytes(d, "readme.txt", "x", 1);
    CHECK_ERR(dinoc_dataset_folder_open(&ds, d), DINOC_ERR_FORMAT, "folder_empty");
    CHECK(ds == NULL);
    free(d);
    d          = fresh_dir("folder_emptycls");
    char *a    = dinoc_path_join(d, "a"), *b = dinoc_path_join(d, "b");
    dinoc_mkdir(a), dinoc_mkdir(b);
    uint8_t px[3] = {1, 2, 3};
    char   *p     = dinoc_path_join(a, "one.png");
    CHECK(stbi_write_png(p, 1, 1, 3, px, 3));
    CHECK_ERR(dinoc_dataset_folder_open(&ds, d), DINOC_ERR_FORMAT, "folder_emptycls/b");
    free(p), free(a), free(b), free(d);
    d = tmp_path("folder_missing");
    CHECK_ERR(dinoc_dataset_folder_open(&ds, d), DINOC_ERR_IO, "folder_missing");
    free(d);
}

/* ---- loader ----------------------------------------------------------------------------------- */

DINOC_TEST(data_loader_determinism) {
    dinoc_dataset *ds = NULL;
    CHECK_OK(dinoc_dataset_idx_open(&ds, FMNIST_DIR, 0));
    if (!ds) return;
    size_t   floats = 28 * 28;
    enum { NB = 100 }; /* 10000 / 128: 79 batches per epoch, so this crosses into epoch 1 */
    uint64_t ref[NB], got[NB];
    dinoc_loader_config cfg = cfg_of(128, 1, 0, 42, 0, 2, &floats);
    CHECK(run_hashes(ds, &cfg, (dinoc_loader_pos){0, 0}, NB, ref, NULL) == NB);
    static const int workers[] = {0, 1, 3};
    for (int w = 0; w < 3; w++) {
        cfg.workers  = workers[w];
        cfg.prefetch = 1 + w;
        CHECK(run_hashes(ds, &cfg, (dinoc_loader_pos){0, 0}, NB, got, NULL) == NB);
        CHECK_MSG(memcmp(ref, got, sizeof ref) == 0, "workers %d differ from the inline run",
                  workers[w]);
    }
    /* Another seed gives another stream. */
    cfg.seed = 43;
    CHECK(run_hashes(ds, &cfg, (dinoc_loader_pos){0, 0}, 3, got, NULL) == 3);
    CHECK(got[0] != ref[0] && got[1] != ref[1]);

    /* The flip happens about half of the time and only through the item's rng. */
    dinoc_loader *ld = NULL;
    cfg.seed         = 42;
    cfg.shuffle      = 0;
    cfg.workers      = 2;
    CHECK_OK(dinoc_loader_init(&ld, ds, &cfg, (dinoc_loader_pos){0, 0}));
    const float   *x;
    const int32_t *y;
    int            n = 0, ee = 0, flips = 0, same = 0;
    CHECK_OK(dinoc_loader_next(ld, &x, &y, &n, &ee));
    CHECK(n == 128 && ee == 0);
    for (int i = 0; i < n; i++) {
        dinoc_image im;
        int32_t     lab;
        CHECK_OK(dinoc_dataset_get(ds, i, &im, &lab));
        CHECK(lab == y[i]);
        int is_same = 1, is_flip = 1;
        for (int r = 0; r < 28; r++)
            for (int c = 0; c < 28; c++) {
                float v = x[(size_t)i * floats + r * 28 + c];
                if (v != im.data[r * 28 + c] / 255.0f) is_same = 0;
                if (v != im.data[r * 28 + 27 - c] / 255.0f) is_flip = 0;
            }
        CHECK(is_same || is_flip);
        flips += is_flip && !is_same;
        same += is_same;
        dinoc_image_free(&im);
    }
    CHECK_MSG(flips > 32 && flips < 96, "%d of 128 flipped", flips);
    dinoc_loader_free(ld);
    dinoc_dataset_free(ds);
}

DINOC_TEST(data_loader_resume) {
    dinoc_dataset *ds = NULL;
    CHECK_OK(dinoc_dataset_idx_open(&ds, FMNIST_DIR, 0));
    if (!ds) return;
    size_t floats = 28 * 28;
    enum { NB = 90, TAIL = 12 };
    for (int drop = 0; drop < 2; drop++) {
        uint64_t            ref[NB + TAIL], got[TAIL];
        dinoc_loader_pos    tells[NB + TAIL];
        dinoc_loader_config cfg = cfg_of(128, 1, drop, 7, 2, 3, &floats);
        CHECK(run_hashes(ds, &cfg, (dinoc_loader_pos){0, 0}, NB + TAIL, ref, tells) ==
              NB + TAIL);
        /* 10000 = 78 * 128 + 16: tell() after batch 78 (0-based 77) of drop_last is epoch 1. */
        CHECK(tells[77].epoch == drop && tells[77].index == (drop ? 0 : 78 * 128));
        CHECK(tells[78].epoch == 1 && tells[78].index == (drop ? 128 : 0));
        static const int at[] = {1, 2, 40, 77, 78, 79, 89};
        for (int a = 0; a < 7; a++) {
            int k = at[a];
            /* Resume with another worker count: nothing may depend on it. */
            cfg.workers = a % 3;
            CHECK(run_hashes(ds, &cfg, tells[k - 1], TAIL, got, NULL) == TAIL);
            CHECK_MSG(memcmp(got, ref + k, sizeof got) == 0,
                      "drop_last %d: resume after %d batches (epoch %lld index %lld) differs",
                      drop, k, (long long)tells[k - 1].epoch, (long long)tells[k - 1].index);
        }
        cfg.workers = 2;
    }
    dinoc_dataset_free(ds);
}

DINOC_TEST(data_loader_epochs_drop_last) {
    char          *d  = index_folder("loader_index", 37);
    dinoc_dataset *ds = NULL;
    CHECK_OK(dinoc_dataset_folder_open(&ds, d));
    free(d);
    if (!ds) return;
    size_t floats = 3 * 2 * 3;
    for (int shuffle = 0; shuffle < 2; shuffle++) {
        for (int drop = 0; drop < 2; drop++) {
            dinoc_loader_config cfg = cfg_of(8, shuffle, drop, 99, shuffle ? 2 : 0, 2, &floats);
            dinoc_loader       *ld  = NULL;
            CHECK_OK(dinoc_loader_init(&ld, ds, &cfg, (dinoc_loader_pos){0, 0}));
            if (!ld) continue;
            int64_t bpe = dinoc_loader_batches_per_epoch(ld);
            CHECK(bpe == (drop ? 4 : 5));
            int order[3][37];
            for (int e = 0; e < 3; e++) {
                int seen[37] = {0}, k = 0;
                for (int b = 0; b < bpe; b++) {
                    const float   *x;
                    const int32_t *y;
                    int            n = 0, ee = -1;
                    CHECK_OK(dinoc_loader_next(ld, &x, &y, &n, &ee));
                    int want_n = (!drop && b == 4) ? 5 : 8;
                    CHECK_MSG(n == want_n, "epoch %d batch %d: n %d, want %d", e, b, n, want_n);
                    CHECK(ee == (b == bpe - 1));
                    for (int i = 0; i < n; i++) {
                        int it = item_of(x + (size_t)i * floats);
                        CHECK(y[i] == -1);
                        if (it >= 0 && it < 37) seen[it]++;
                        if (k < 37) order[e][k++] = it;
                    }
                    dinoc_loader_pos t = dinoc_loader_tell(ld);
                    if (b == bpe - 1) CHECK(t.epoch == e + 1 && t.index == 0);
                    else CHECK(t.epoch == e && t.index == 8 * (b + 1));
                }
                int total = 0;
                for (int i = 0; i < 37; i++) {
                    CHECK(seen[i] <= 1);
                    total += seen[i];
                }
                CHECK(total == (drop ? 32 : 37));
                if (!shuffle)
                    for (int i = 0; i < k; i++) CHECK(order[e][i] == i);
            }
            /* Shuffled epochs differ from each other. */
            if (shuffle) CHECK(memcmp(order[0], order[1], sizeof(int) * 32) != 0);
            dinoc_loader_free(ld);
        }
    }
    /* Resuming in the middle of a batch-aligned stream at an odd index still works: the batch
     * starts there. */
    dinoc_loader_config cfg = cfg_of(8, 0, 0, 1, 1, 1, &floats);
    dinoc_loader       *ld  = NULL;
    CHECK_OK(dinoc_loader_init(&ld, ds, &cfg, (dinoc_loader_pos){2, 33}));
    const float *x;
    int          n = 0, ee = 0;
    CHECK_OK(dinoc_loader_next(ld, &x, NULL, &n, &ee));
    CHECK(n == 4 && ee == 1 && item_of(x) == 33);
    CHECK(dinoc_loader_tell(ld).epoch == 3 && dinoc_loader_tell(ld).index == 0);
    dinoc_loader_free(ld);
    /* The end of an epoch as start position means the next epoch. */
    CHECK_OK(dinoc_loader_init(&ld, ds, &cfg, (dinoc_loader_pos){5, 37}));
    CHECK(dinoc_loader_tell(ld).epoch == 6 && dinoc_loader_tell(ld).index == 0);
    dinoc_loader_free(ld);
    dinoc_dataset_free(ds);
}

DINOC_TEST(data_loader_bad_config) {
    char          *d  = index_folder("loader_cfg", 5);
    dinoc_dataset *ds = NULL;
    CHECK_OK(dinoc_dataset_folder_open(&ds, d));
    free(d);
    if (!ds) return;
    size_t              floats = 18;
    dinoc_loader       *ld     = NULL;
    dinoc_loader_pos    zero   = {0, 0};
    dinoc_loader_config cfg    = cfg_of(0, 0, 0, 0, 0, 1, &floats);
    CHECK_ERR(dinoc_loader_init(&ld, ds, &cfg, zero), DINOC_ERR_CONFIG, "batch");
    cfg = cfg_of(2, 0, 0, 0, 0, 0, &floats);
    CHECK_ERR(dinoc_loader_init(&ld, ds, &cfg, zero), DINOC_ERR_CONFIG, "prefetch");
    cfg = cfg_of(2, 0, 0, 0, -1, 1, &floats);
    CHECK_ERR(dinoc_loader_init(&ld, ds, &cfg, zero), DINOC_ERR_CONFIG, "workers");
    cfg = cfg_of(8, 0, 1, 0, 0, 1, &floats);
    CHECK_ERR(dinoc_loader_init(&ld, ds, &cfg, zero), DINOC_ERR_CONFIG, "drop_last");
    cfg = cfg_of(2, 0, 0, 0, 0, 1, &floats);
    CHECK_ERR(dinoc_loader_init(&ld, ds, &cfg, (dinoc_loader_pos){0, 6}), DINOC_ERR_ARG, "start");
    CHECK_ERR(dinoc_loader_init(&ld, ds, &cfg, (dinoc_loader_pos){-1, 0}), DINOC_ERR_ARG, "start");
    CHECK(ld == NULL);
    /* The default transform (NULL) with a wrong item size fails naming the item. */
    cfg.transform   = NULL;
    cfg.item_floats = 17;
    CHECK_OK(dinoc_loader_init(&ld, ds, &cfg, zero));
    CHECK_ERR(dinoc_loader_next(ld, NULL, NULL, NULL, NULL), DINOC_ERR_SHAPE, "img_000.png");
    dinoc_loader_free(ld);
    /* ... and with the right one gives [C, H, W] / 255. */
    cfg.item_floats = 18;
    CHECK_OK(dinoc_loader_init(&ld, ds, &cfg, zero));
    const float *x = NULL;
    CHECK_OK(dinoc_loader_next(ld, &x, NULL, NULL, NULL));
    CHECK_OK(dinoc_loader_next(ld, &x, NULL, NULL, NULL));
    CHECK(x && x[0] == 10 / 255.0f && x[17] == 10 / 255.0f && x[18] == 15 / 255.0f);
    dinoc_loader_free(ld);
    dinoc_dataset_free(ds);
}

/* A corrupt image in a class folder: the loader fails at the batch holding it, naming its path,
 * after the same number of good batches whatever the worker count; the error sticks. */
DINOC_TEST(data_loader_corrupt_image) {
    char *d  = fresh_dir("loader_corrupt");
    char *ca = dinoc_path_join(d, "a"), *cb = dinoc_path_join(d, "b");
    dinoc_mkdir(ca), dinoc_mkdir(cb);
    uint8_t px[4 * 4 * 3];
    for (int i = 0; i < 20; i++) {
        memset(px, i * 10, sizeof px);
        char name[32];
        snprintf(name, sizeof name, "%02d.png", i);
        char *p = dinoc_path_join(i % 2 ? cb : ca, name);
        CHECK(stbi_write_png(p, 4, 4, 3, px, 12));
        free(p);
    }
    static const char junk[] = "\x89PNG\r\n\x1a\n garbage garbage";
    write_bytes(cb, "07_bad.png", junk, sizeof junk - 1);
    dinoc_dataset *ds = NULL;
    CHECK_OK(dinoc_dataset_folder_open(&ds, d));
    free(ca), free(cb), free(d);
    if (!ds) return;
    CHECK(dinoc_dataset_size(ds) == 21);
    size_t floats  = 48;
    int    good[3] = {-1, -1, -1};
    for (int w = 0; w < 3; w++) {
        dinoc_loader_config cfg = cfg_of(4, 1, 0, 5, w * 2, 2, &floats);
        dinoc_loader       *ld  = NULL;
        CHECK_OK(dinoc_loader_init(&ld, ds, &cfg, (dinoc_loader_pos){0, 0}));
        if (!ld) continue;
        dinoc_status s = DINOC_OK;
        int          k = 0;
        for (; k < 20 && (s = dinoc_loader_next(ld, NULL, NULL, NULL, NULL)) == DINOC_OK; k++) {}
        CHECK_MSG(s == DINOC_ERR_FORMAT && strstr(dinoc_last_error(), "b/07_bad.png"),
                  "workers %d: %s '%s'", w * 2, dinoc_status_str(s), dinoc_last_error());
        good[w]               = k;
        dinoc_loader_pos told = dinoc_loader_tell(ld);
        CHECK(told.epoch == 0 && told.index == 4 * k);
        /* Sticky: the next call fails the same way. */
        CHECK_ERR(dinoc_loader_next(ld, NULL, NULL, NULL, NULL), DINOC_ERR_FORMAT, "07_bad.png");
        dinoc_loader_free(ld);
    }
    CHECK(good[0] >= 0 && good[0] <= 5 && good[0] == good[1] && good[0] == good[2]);
    dinoc_dataset_free(ds);
}

/* A transform failing on one image (pixel sum 33456: item 0 of the test split), to test the
 * error path of items without a path. */
static dinoc_status xf_fail_one(float *out, const dinoc_image *img, dinoc_rng *rng, void *user) {
    (void)out, (void)rng, (void)user;
    long sum = 0;
    for (int i = 0; i < img->w * img->h; i++) sum += img->data[i];
    if (sum == 33456) return dinoc_fail(DINOC_ERR_NUMERIC, "xf: refusing this image");
    return DINOC_OK;
}

DINOC_TEST(data_loader_transform_error_and_early_free) {
    dinoc_dataset *ds = NULL;
    CHECK_OK(dinoc_dataset_idx_open(&ds, FMNIST_DIR, 0));
    if (!ds) return;
    size_t              floats = 784;
    dinoc_loader_config cfg    = cfg_of(64, 0, 0, 1, 2, 2, &floats);
    cfg.transform              = xf_fail_one;
    dinoc_loader *ld           = NULL;
    CHECK_OK(dinoc_loader_init(&ld, ds, &cfg, (dinoc_loader_pos){0, 0}));
    /* Item 0 of the test split has pixel sum 33456: the first batch fails naming item 0. */
    CHECK_ERR(dinoc_loader_next(ld, NULL, NULL, NULL, NULL), DINOC_ERR_NUMERIC,
              "item 0: xf: refusing");
    dinoc_loader_free(ld);

    /* Early free: never asked, asked once, with many workers racing ahead. */
    cfg           = cfg_of(256, 1, 0, 3, 4, 4, &floats);
    CHECK_OK(dinoc_loader_init(&ld, ds, &cfg, (dinoc_loader_pos){0, 0}));
    dinoc_loader_free(ld);
    CHECK_OK(dinoc_loader_init(&ld, ds, &cfg, (dinoc_loader_pos){0, 0}));
    CHECK_OK(dinoc_loader_next(ld, NULL, NULL, NULL, NULL));
    dinoc_loader_free(ld);
    CHECK_OK(dinoc_loader_init(&ld, ds, &cfg, (dinoc_loader_pos){3, 5000}));
    for (int i = 0; i < 5; i++) CHECK_OK(dinoc_loader_next(ld, NULL, NULL, NULL, NULL));
    usleep(2000);
    dinoc_loader_free(ld);
    dinoc_loader_free(NULL);
    dinoc_dataset_free(ds);
}
