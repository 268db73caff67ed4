/* test_shapes.c: the shapes data set (src/data/shapes*.c).
 *   determinism      same (seed, split, index) -> same bytes; a written set is byte-identical at 1
 *                    and 2 threads; descriptions do not depend on whether pixels are asked for
 *   geometry         every mask pixel of class k is covered (>= half) by a shape of kind k - 1 and
 *                    by no later shape; pixels fully inside a shape have its exact colour; single
 *                    shapes' mask areas and centroids agree with the analytic ones
 *   held out         the table (2 per kind), never in train; in test always the first shape and
 *                    never the second
 *   captions         parse back to the sample (size, colour, kind, relation, second shape) and the
 *                    relation holds geometrically, shapes inside the image
 *   balance          label counts floor/ceil(n / pairs); sizes, relations, two-shape share binomial
 *   files            a written set read back: meta.json, tsv lines, PNGs equal to the renderer's
 *   fashion-mnist    articles, templates, threshold masks of the written split
 *   errors           bad sizes, unwritable folders (the message names the path) */
#include "check.h"
#include "../src/data/data.h"
#include "../src/data/shapes.h"

#include <cjson/cJSON.h>
#include <string.h>

static const dinoc_shapes_config k_cfg = {64, 7, 0.5f, 0, 0};

DINOC_TEST(shapes_determinism) {
    const int           S = 64;
    uint8_t             a[64 * 64 * 4], b[64 * 64 * 4];
    dinoc_shapes_sample sa, sb, sd;
    dinoc_shapes_config other = k_cfg;
    other.seed                = 8;
    for (int split = 0; split < 2; split++)
        for (int64_t i = 0; i < 40; i++) {
            CHECK_OK(dinoc_shapes_render(&sa, a, a + S * S * 3, &k_cfg, split, i));
            CHECK_OK(dinoc_shapes_render(&sb, b, b + S * S * 3, &k_cfg, split, i));
            CHECK_OK(dinoc_shapes_render(&sd, NULL, NULL, &k_cfg, split, i));
            CHECK(memcmp(a, b, sizeof a) == 0);
            CHECK(memcmp(&sa, &sb, sizeof sa) == 0 && memcmp(&sa, &sd, sizeof sa) == 0);
            CHECK_OK(dinoc_shapes_render(&sb, b, b + S * S * 3, &other, split, i));
            CHECK(memcmp(a, b, S * S * 3) != 0); /* another seed: another image */
        }
}

/* Analytic area / r^2 of each kind (see dinoc_shapes_inside): circle pi, square 1.4^2, triangle
 * 3 sqrt(3) / 4, star 5 * 0.45 * sin 36deg, cross 2 * 1.9 * 0.6 - 0.6^2, ring pi (1 - 0.55^2);
 * and perimeter / r: 2 pi, 4 * 1.4, 3 sqrt(3), 10 * |(1,0) - 0.45 (cos 36, sin 36)|, 8 * 0.65 + 4 *
 * 0.6, 2 pi (1 + 0.55). */
static const double k_area[DINOC_SHAPES_KINDS]  = {3.14159265, 1.96, 1.29903811, 1.32251816, 1.92, 2.19130513};
static const double k_perim[DINOC_SHAPES_KINDS] = {6.28318531, 5.6, 5.19615242, 6.88777, 7.6, 9.73893723};

DINOC_TEST(shapes_mask_geometry) {
    const int S = 64;
    uint8_t   rgb[64 * 64 * 3], mask[64 * 64];
    double    worst_area = 0, worst_centroid = 0, bias = 0;
    int       singles = 0, mismatches = 0, colour_bad = 0;
    for (int split = 0; split < 2; split++)
        for (int64_t i = 0; i < 150; i++) {
            dinoc_shapes_sample smp;
            CHECK_OK(dinoc_shapes_render(&smp, rgb, mask, &k_cfg, split, i));
            double n = 0, sx = 0, sy = 0;
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++) {
                    int want = 0;
                    for (int k = 0; k < smp.nshapes; k++) {
                        float cov = dinoc_shapes_coverage(&smp.shapes[k], x, y);
                        if (cov >= 0.5f) want = smp.shapes[k].kind + 1; /* the last drawn wins */
                        if (cov == 1.0f && memcmp(rgb + (y * S + x) * 3, smp.shapes[k].rgb, 3) != 0) colour_bad++;
                    }
                    mismatches += mask[y * S + x] != want;
                    if (mask[y * S + x]) n++, sx += x + 0.5, sy += y + 0.5;
                }
            if (smp.nshapes != 1) continue;
            /* an independent check of the geometry: area and centroid of the mask */
            const dinoc_shape *s    = &smp.shapes[0];
            double             area = k_area[s->kind] * s->r * s->r;
            /* error in units of half the perimeter: each boundary pixel is kept or not by whether
             * the edge passes its middle, so the count is off by at most half a pixel per unit of
             * edge (the worst case being an axis-aligned edge through the middle) */
            double             e    = fabs(n - area) / (0.5 * k_perim[s->kind] * s->r);
            bias += (n - area) / area;
            double             c    = fmax(fabs(sx / n - s->cx), fabs(sy / n - s->cy));
            worst_area              = e > worst_area ? e : worst_area;
            worst_centroid          = c > worst_centroid ? c : worst_centroid;
            singles++;
        }
    bias /= singles > 0 ? singles : 1;
    printf("    %d singles: mask area error worst %.3f half-perimeters, mean %+.4f of the area; worst "
           "centroid offset per axis %.3f px\n", singles, worst_area, bias, worst_centroid);
    CHECK(mismatches == 0 && colour_bad == 0);
    CHECK(singles > 100);
    CHECK(worst_area < 1.0);
    /* the edge roundings cancel on average (odd sub-pixel grid): 1% of the area; the 4 x 4 grid
     * this replaced was biased by +1 to +4% depending on the kind */
    CHECK(fabs(bias) < 0.01);
    /* every kind's centroid is (cx, cy) (point symmetry, or 3-/5-fold symmetry); pixelisation
     * moves it per axis by at most half a pixel (both edges of a square rounding the same way);
     * +0.05 for the residue of curved and slanted edges */
    CHECK(worst_centroid < 0.55);
}

DINOC_TEST(shapes_held_out) {
    int per_kind[DINOC_SHAPES_KINDS] = {0}, per_colour[DINOC_SHAPES_COLOURS] = {0}, total = 0;
    for (int c = 0; c < DINOC_SHAPES_COLOURS; c++)
        for (int k = 0; k < DINOC_SHAPES_KINDS; k++)
            if (dinoc_shapes_held_out(c, k)) per_kind[k]++, per_colour[c]++, total++;
    CHECK(total == DINOC_SHAPES_HELD_OUT);
    CHECK(dinoc_shapes_split_pairs(DINOC_SHAPES_TEST, NULL) == DINOC_SHAPES_HELD_OUT);
    CHECK(dinoc_shapes_split_pairs(DINOC_SHAPES_TRAIN, NULL) == DINOC_SHAPES_COLOURS * DINOC_SHAPES_KINDS - DINOC_SHAPES_HELD_OUT);
    for (int k = 0; k < DINOC_SHAPES_KINDS; k++) CHECK(per_kind[k] == 2);
    for (int c = 0; c < DINOC_SHAPES_COLOURS; c++) CHECK(per_colour[c] >= 1 && per_colour[c] <= 2);
    int train_bad = 0, test_bad = 0, test_two = 0;
    for (int64_t i = 0; i < 3000; i++) {
        dinoc_shapes_sample smp;
        CHECK_OK(dinoc_shapes_render(&smp, NULL, NULL, &k_cfg, DINOC_SHAPES_TRAIN, i));
        for (int k = 0; k < smp.nshapes; k++) train_bad += dinoc_shapes_held_out(smp.shapes[k].colour, smp.shapes[k].kind);
        CHECK_OK(dinoc_shapes_render(&smp, NULL, NULL, &k_cfg, DINOC_SHAPES_TEST, i));
        test_bad += !dinoc_shapes_held_out(smp.shapes[0].colour, smp.shapes[0].kind);
        test_bad += smp.nshapes == 2 && dinoc_shapes_held_out(smp.shapes[1].colour, smp.shapes[1].kind);
        test_two += smp.nshapes == 2;
    }
    /* train: no held-out pair anywhere; test: the first shape is held out and the second is not */
    CHECK(train_bad == 0 && test_bad == 0);
    CHECK(test_two > 1000);
}

/* Index of word w in names[0..n), or -1. */
static int find(const char *w, const char *(*name)(int), int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(w, name(i)) == 0) return i;
    return -1;
}

/* Parses "a SIZE COLOUR KIND" at *p into a shape (kind, colour, large); 0 on success. */
static int parse_shape(char **save, dinoc_shape *s) {
    const char *a = strtok_r(NULL, " ", save), *sz = strtok_r(NULL, " ", save);
    const char *c = strtok_r(NULL, " ", save), *k = strtok_r(NULL, " ", save);
    if (!a || !sz || !c || !k || strcmp(a, "a") != 0) return -1;
    s->large  = strcmp(sz, "large") == 0 ? 1 : strcmp(sz, "small") == 0 ? 0 : -1;
    s->colour = find(c, dinoc_shapes_colour_name, DINOC_SHAPES_COLOURS);
    s->kind   = find(k, dinoc_shapes_kind_name, DINOC_SHAPES_KINDS);
    return s->large < 0 || s->colour < 0 || s->kind < 0 ? -1 : 0;
}

DINOC_TEST(shapes_captions_parse) {
    int bad = 0, relation_bad = 0, outside = 0;
    for (int split = 0; split < 2; split++)
        for (int64_t i = 0; i < 1000; i++) {
            dinoc_shapes_sample smp;
            CHECK_OK(dinoc_shapes_render(&smp, NULL, NULL, &k_cfg, split, i));
            char text[DINOC_SHAPES_TEXT + 2], *save = NULL;
            snprintf(text, sizeof text, "x %s", smp.caption); /* strtok_r wants a first token */
            strtok_r(text, " ", &save);
            dinoc_shape p[2];
            int         rel = -1, n = 1;
            if (parse_shape(&save, &p[0])) bad++;
            char *w = strtok_r(NULL, " ", &save);
            if (w) {
                char rw[24];
                snprintf(rw, sizeof rw, "%s", w);
                if (strcmp(w, "left") == 0 || strcmp(w, "right") == 0) {
                    char *of = strtok_r(NULL, " ", &save);
                    snprintf(rw, sizeof rw, "%s %s", w, of ? of : "");
                }
                rel = find(rw, dinoc_shapes_relation_name, DINOC_SHAPES_RELATIONS);
                n   = 2;
                if (rel < 0 || parse_shape(&save, &p[1]) || strtok_r(NULL, " ", &save)) bad++;
            }
            char label[64];
            snprintf(label, sizeof label, "%s %s", dinoc_shapes_colour_name(smp.shapes[0].colour),
                     dinoc_shapes_kind_name(smp.shapes[0].kind));
            bad += n != smp.nshapes || rel != smp.relation || strcmp(label, smp.label) != 0;
            for (int k = 0; k < n && k < smp.nshapes; k++) {
                const dinoc_shape *s = &smp.shapes[k];
                bad += p[k].kind != s->kind || p[k].colour != s->colour || p[k].large != s->large;
                outside += s->cx - s->r < 1 - 1e-4f || s->cy - s->r < 1 - 1e-4f || s->cx + s->r > 63 + 1e-4f ||
                           s->cy + s->r > 63 + 1e-4f;
            }
            if (smp.nshapes == 2) {
                const dinoc_shape *a = &smp.shapes[0], *b = &smp.shapes[1];
                /* along: signed offset of b from a on the relation's axis; across: the other axis */
                float along  = smp.relation < 2 ? b->cy - a->cy : b->cx - a->cx;
                float across = smp.relation < 2 ? b->cx - a->cx : b->cy - a->cy;
                if (smp.relation == 1 || smp.relation == 3) along = -along; /* below / right of */
                relation_bad += !(along >= a->r + b->r + 1) || fabsf(across) > along / 2 + 1e-3f;
            }
        }
    CHECK(bad == 0 && relation_bad == 0 && outside == 0);
}

DINOC_TEST(shapes_balance) {
    for (int split = 0; split < 2; split++) {
        int     pairs[DINOC_SHAPES_COLOURS * DINOC_SHAPES_KINDS], np = dinoc_shapes_split_pairs(split, pairs);
        int     count[DINOC_SHAPES_COLOURS * DINOC_SHAPES_KINDS] = {0}, rel[DINOC_SHAPES_RELATIONS] = {0};
        int64_t n = 17 * np + 5, large = 0, two = 0;
        for (int64_t i = 0; i < n; i++) {
            dinoc_shapes_sample smp;
            CHECK_OK(dinoc_shapes_render(&smp, NULL, NULL, &k_cfg, split, i));
            count[smp.shapes[0].colour * DINOC_SHAPES_KINDS + smp.shapes[0].kind]++;
            large += smp.shapes[0].large;
            two += smp.nshapes == 2;
            if (smp.nshapes == 2) rel[smp.relation]++;
        }
        for (int k = 0; k < np; k++) CHECK(count[pairs[k]] == 17 || count[pairs[k]] == 18); /* exact by design */
        /* binomial draws: within 4.5 standard deviations (a false alarm about once in 10^5 runs,
         * and the seed is fixed anyway) */
        double sd = sqrt(n * 0.25);
        CHECK(fabs(large - n * 0.5) < 4.5 * sd && fabs(two - n * 0.5) < 4.5 * sd);
        for (int r = 0; r < DINOC_SHAPES_RELATIONS; r++)
            CHECK(fabs(rel[r] - two * 0.25) < 4.5 * sqrt(two * 0.25 * 0.75));
    }
    dinoc_shapes_config single = k_cfg;
    single.pair_frac           = 0;
    for (int64_t i = 0; i < 100; i++) {
        dinoc_shapes_sample smp;
        CHECK_OK(dinoc_shapes_render(&smp, NULL, NULL, &single, 0, i));
        CHECK(smp.nshapes == 1 && smp.relation == -1);
    }
}

/* Reads a text file into lines (counts them); returns the buffer (caller frees) or NULL. */
static char *read_text(const char *dir, const char *name, int *lines) {
    char   path[1024], *buf = NULL;
    size_t len              = 0;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (dinoc_read_file(path, (size_t)1 << 26, &buf, &len) != DINOC_OK) return NULL;
    *lines = 0;
    for (size_t i = 0; i < len; i++) *lines += buf[i] == '\n';
    return buf;
}

static int same_file(const char *a, const char *b) {
    char  *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int    same = dinoc_read_file(a, (size_t)1 << 26, &x, &nx) == DINOC_OK &&
               dinoc_read_file(b, (size_t)1 << 26, &y, &ny) == DINOC_OK && nx == ny && memcmp(x, y, nx) == 0;
    free(x), free(y);
    return same;
}

DINOC_TEST(shapes_files) {
    char d1[512], d2[512];
    snprintf(d1, sizeof d1, "%s/shapes_t1", dinoc_test_tmpdir());
    snprintf(d2, sizeof d2, "%s/shapes_t2", dinoc_test_tmpdir());
    int threads = dinoc_get_threads();
    dinoc_set_threads(1);
    CHECK_OK(dinoc_shapes_write(d1, &k_cfg, 50, 0.2f, NULL, NULL));
    dinoc_set_threads(2);
    CHECK_OK(dinoc_shapes_write(d2, &k_cfg, 50, 0.2f, NULL, NULL));
    dinoc_set_threads(threads);
    const char *files[] = {"meta.json", "classes.txt", "label_names.txt", "templates.txt", "train/pairs.tsv", "train/labels.tsv",
                           "test/pairs.tsv", "test/labels.tsv", "test/label_names.txt", "train/images/000039.png",
                           "train/masks/000000.png", "test/images/000009.png", "test/masks/000005.png"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char a[1024], b[1024];
        snprintf(a, sizeof a, "%s/%s", d1, files[i]);
        snprintf(b, sizeof b, "%s/%s", d2, files[i]);
        CHECK_MSG(same_file(a, b), "%s differs between 1 and 2 threads", files[i]);
    }
    int   nl = 0;
    char *t  = read_text(d1, "train/pairs.tsv", &nl);
    CHECK(t && nl == 40);
    dinoc_shapes_sample smp;
    CHECK_OK(dinoc_shapes_render(&smp, NULL, NULL, &k_cfg, DINOC_SHAPES_TRAIN, 0));
    char want[256];
    snprintf(want, sizeof want, "images/000000.png\t%s\n", smp.caption);
    CHECK(t && strncmp(t, want, strlen(want)) == 0);
    free(t);
    t = read_text(d1, "test/labels.tsv", &nl);
    CHECK(t && nl == 10);
    free(t);
    t = read_text(d1, "classes.txt", &nl);
    CHECK(t && nl == 7 && strncmp(t, "background\ncircle\nsquare\n", 25) == 0);
    free(t);
    t = read_text(d1, "label_names.txt", &nl);
    CHECK(t && nl == DINOC_SHAPES_COLOURS * DINOC_SHAPES_KINDS);
    free(t);
    t = read_text(d1, "templates.txt", &nl); /* the set's zero-shot prompts, in its caption style */
    CHECK(t && nl == 2 && strcmp(t, "a small {}\na large {}\n") == 0);
    free(t);
    /* meta.json: sizes and the held-out list */
    char   path[1024];
    cJSON *j = NULL;
    snprintf(path, sizeof path, "%s/meta.json", d1);
    CHECK_OK(dinoc_json_load(&j, path));
    cJSON *sp = cJSON_GetObjectItem(j, "splits"), *ho = cJSON_GetObjectItem(j, "held_out");
    CHECK(cJSON_GetObjectItem(j, "n") && cJSON_GetObjectItem(j, "n")->valuedouble == 50);
    CHECK(sp && cJSON_GetObjectItem(cJSON_GetObjectItem(sp, "train"), "n")->valuedouble == 40);
    CHECK(cJSON_GetArraySize(ho) == DINOC_SHAPES_HELD_OUT);
    for (int i = 0; i < cJSON_GetArraySize(ho); i++) {
        char c[32], k[32];
        CHECK(sscanf(cJSON_GetArrayItem(ho, i)->valuestring, "%31s %31s", c, k) == 2);
        CHECK(dinoc_shapes_held_out(find(c, dinoc_shapes_colour_name, DINOC_SHAPES_COLOURS),
                                    find(k, dinoc_shapes_kind_name, DINOC_SHAPES_KINDS)));
    }
    cJSON_Delete(j);
    /* PNGs decode to the renderer's pixels (masks come back grey -> RGB) */
    uint8_t rgb[64 * 64 * 3], mask[64 * 64];
    CHECK_OK(dinoc_shapes_render(&smp, rgb, mask, &k_cfg, DINOC_SHAPES_TEST, 9));
    dinoc_image im = {0}, mk = {0};
    snprintf(path, sizeof path, "%s/test/images/000009.png", d1);
    CHECK_OK(dinoc_image_load(&im, path));
    snprintf(path, sizeof path, "%s/test/masks/000009.png", d1);
    CHECK_OK(dinoc_image_load(&mk, path));
    CHECK(im.w == 64 && im.h == 64 && im.c == 3 && im.data && memcmp(im.data, rgb, sizeof rgb) == 0);
    int mask_ok = mk.data != NULL;
    for (int i = 0; mask_ok && i < 64 * 64; i++) mask_ok = mk.data[i * 3] == mask[i];
    CHECK(mask_ok);
    dinoc_image_free(&im), dinoc_image_free(&mk);
}

DINOC_TEST(shapes_errors) {
    dinoc_shapes_sample smp;
    dinoc_shapes_config c = k_cfg;
    c.size                = 16;
    CHECK_ERR(dinoc_shapes_render(&smp, NULL, NULL, &c, 0, 0), DINOC_ERR_ARG, "size 16");
    c = k_cfg, c.pair_frac = 1.5f;
    CHECK_ERR(dinoc_shapes_write("unused", &c, 10, 0.2f, NULL, NULL), DINOC_ERR_ARG, "pair_frac");
    CHECK_ERR(dinoc_shapes_write("unused", &k_cfg, 0, 0.2f, NULL, NULL), DINOC_ERR_ARG, "n 0");
    /* a folder below a regular file cannot be created: the message names it */
    char file[512], dir[600];
    snprintf(file, sizeof file, "%s/shapes_file", dinoc_test_tmpdir());
    snprintf(dir, sizeof dir, "%s/sub", file);
    CHECK_OK(dinoc_write_file_atomic(file, "x", 1));
    CHECK_ERR(dinoc_shapes_write(dir, &k_cfg, 10, 0.2f, NULL, NULL), DINOC_ERR_IO, "shapes_file");
    CHECK_ERR(dinoc_shapes_preview(file, &k_cfg, 0), DINOC_ERR_ARG, "count 0");
    /* rewriting a set in place and failing half-way (an item's PNG path is taken by a folder):
     * the error names that file, and the old meta.json is gone, so the set does not look complete */
    char set[512], blocker[700], meta[700];
    snprintf(set, sizeof set, "%s/shapes_rewrite", dinoc_test_tmpdir());
    snprintf(blocker, sizeof blocker, "%s/train/images/000003.png", set);
    snprintf(meta, sizeof meta, "%s/meta.json", set);
    CHECK_OK(dinoc_shapes_write(set, &k_cfg, 10, 0.2f, NULL, NULL));
    CHECK(dinoc_file_exists(meta));
    CHECK(remove(blocker) == 0);
    CHECK_OK(dinoc_mkdir(blocker));
    CHECK_ERR(dinoc_shapes_write(set, &k_cfg, 10, 0.2f, NULL, NULL), DINOC_ERR_IO, "000003.png");
    CHECK(!dinoc_file_exists(meta));
    CHECK(remove(blocker) == 0);
}

DINOC_TEST(shapes_fmnist) {
    char cap[128];
    dinoc_fmnist_caption(cap, sizeof cap, 0, "ankle boot");
    CHECK(strcmp(cap, "a photo of an ankle boot") == 0);
    dinoc_fmnist_caption(cap, sizeof cap, 2, "bag");
    CHECK(strcmp(cap, "a bag") == 0);
    char d[512], rm[600];
    snprintf(d, sizeof d, "%s/fmnist_out", dinoc_test_tmpdir());
    snprintf(rm, sizeof rm, "rm -rf '%s'", d);
    CHECK(system(rm) == 0); /* a fresh folder: train/ must not appear */
    /* Debian's dataset-fashion-mnist must be installed (scripts/test.sh installs it): no skipping */
    CHECK_OK(dinoc_fmnist_write(d, NULL, 0, 1, 20, 3, NULL, NULL));
    int   nl = 0;
    char *t  = read_text(d, "test/pairs.tsv", &nl);
    CHECK(t && nl == 20);
    free(t);
    t = read_text(d, "classes.txt", &nl);
    CHECK(t && nl == 11 && strncmp(t, "background\nt-shirt\n", 19) == 0);
    free(t);
    dinoc_dataset *ds = NULL;
    CHECK_OK(dinoc_dataset_idx_open(&ds, NULL, 0));
    if (!ds) return;
    for (int64_t i = 0; i < 20; i++) {
        dinoc_image im = {0}, mk = {0}, src = {0};
        int32_t     label = -1;
        char        path[1024];
        snprintf(path, sizeof path, "%s/test/images/%06lld.png", d, (long long)i);
        CHECK_OK(dinoc_image_load(&im, path));
        snprintf(path, sizeof path, "%s/test/masks/%06lld.png", d, (long long)i);
        CHECK_OK(dinoc_image_load(&mk, path));
        CHECK_OK(dinoc_dataset_get(ds, i, &src, &label));
        int ok = im.data && mk.data && src.data && im.w == 28 && mk.h == 28;
        for (int p = 0; ok && p < 28 * 28; p++)
            ok = im.data[p * 3] == src.data[p] &&
                 mk.data[p * 3] == (src.data[p] > DINOC_FMNIST_MASK_THRESHOLD ? label + 1 : 0);
        CHECK_MSG(ok, "item %lld: image or mask differs from the IDX pixels", (long long)i);
        dinoc_image_free(&im), dinoc_image_free(&mk), dinoc_image_free(&src);
    }
    dinoc_dataset_free(ds);
    char train[600];
    snprintf(train, sizeof train, "%s/train", d);
    CHECK(!dinoc_is_dir(train)); /* only the test split was asked for */
}
