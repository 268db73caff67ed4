/* test_multicrop.c: DINO's multi-crop augmentation (src/data/multicrop.c).
 *
 * Parity cases read fixtures written by tests/py/gen_multicrop.py into $DINOC_FIXTURES/multicrop
 * (run: /usr/bin/python3 tests/py/gen_multicrop.py <fixtures dir>); without them they fail and say
 * so. Every op runs with the fixture's fixed parameters on scikit-image photos, Fashion-MNIST
 * images, random colours and tiny images, and is compared with PIL 9.4 / torchvision's PIL path.
 * Tolerances: 0 differing bytes for every 8-bit op (each is integer or float arithmetic written the
 * way Pillow writes it) and 0 for the normalised floats (the same float32 operations in the same
 * order as torch). Beyond the fixtures, adjust_hue/saturation/brightness/contrast were checked
 * equal to PIL on all 2^24 RGB colours during development (6 hue shifts, 5 factors each).
 *
 * Other cases: the transform's layout (crop k = dinoc_mc_apply of the k-th sampled crop),
 * determinism (seed -> bytes; different seeds differ; two threads at once = one thread), config
 * errors naming the field, sampling statistics (probabilities, factor ranges, RandomResizedCrop
 * area and ratio), and a throughput report for Fashion-MNIST-sized inputs. */
#include "check.h"
#include "../src/data/multicrop.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <time.h>
#include <zlib.h>

/* ---- fixtures -------------------------------------------------------------------------------- */

static char *fixture_path(const char *name) {
    char *dir = dinoc_path_join(dinoc_test_fixtures(), "multicrop");
    char *p   = dinoc_path_join(dir, name);
    free(dir);
    return p;
}

static cJSON *load_manifest(void) {
    char  *path = fixture_path("manifest.json");
    cJSON *root = NULL;
    if (!dinoc_file_exists(path) || dinoc_json_load(&root, path) != DINOC_OK) {
        CHECK_MSG(0,
                  "missing multicrop fixtures %s: run /usr/bin/python3 "
                  "tests/py/gen_multicrop.py %s",
                  path, dinoc_test_fixtures());
        root = NULL;
    }
    free(path);
    return root;
}

/* A U8 [H, W, C] tensor as an image (data points into the mapped file). */
static int tensor_image(const dinoc_tensor *t, dinoc_image *img) {
    if (!t || t->dtype != DINOC_DTYPE_U8 || t->ndim != 3) return 0;
    img->h    = (int)t->shape[0];
    img->w    = (int)t->shape[1];
    img->c    = (int)t->shape[2];
    img->data = (uint8_t *)t->data;
    return 1;
}

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void num_array(const cJSON *o, const char *key, double *out, int n) {
    const cJSON *a = cJSON_GetObjectItem(o, key);
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetArrayItem(a, i);
        out[i]         = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    }
}

typedef struct {
    const char        *name;
    dinoc_safetensors *st;
    dinoc_image        input;
    const cJSON       *cases;
} fixture_image;

static int open_image(const cJSON *e, fixture_image *fi) {
    memset(fi, 0, sizeof *fi);
    const cJSON *name = cJSON_GetObjectItem(e, "name"), *file = cJSON_GetObjectItem(e, "file");
    fi->cases         = cJSON_GetObjectItem(e, "cases");
    if (!cJSON_IsString(name) || !cJSON_IsString(file) || !cJSON_IsArray(fi->cases)) {
        CHECK_MSG(0, "multicrop manifest entry malformed");
        return 0;
    }
    fi->name       = name->valuestring;
    char        *p = fixture_path(file->valuestring);
    dinoc_status s = dinoc_safetensors_open(&fi->st, p);
    free(p);
    CHECK_OK(s);
    if (s) return 0;
    if (!tensor_image(dinoc_safetensors_find(fi->st, "input"), &fi->input)) {
        CHECK_MSG(0, "%s: no U8 'input' tensor", fi->name);
        return 0;
    }
    return 1;
}

static const dinoc_tensor *case_out(const fixture_image *fi, const cJSON *c) {
    const cJSON *k = cJSON_GetObjectItem(c, "out");
    return cJSON_IsString(k) ? dinoc_safetensors_find(fi->st, k->valuestring) : NULL;
}

/* ---- parity of the 8-bit ops ----------------------------------------------------------------- */

static const char *k_ops[] = {"flip",  "brightness", "contrast", "saturation",   "hue", "jitter",
                              "gray",  "blur",       "solarize", "resized_crop", NULL};

DINOC_TEST(multicrop_parity_ops) {
    cJSON *man = load_manifest();
    if (!man) return;
    int          counts[16] = {0}, fails[16] = {0};
    const cJSON *e, *c;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(man, "images")) {
        fixture_image fi;
        if (!open_image(e, &fi)) {
            dinoc_safetensors_close(fi.st);
            continue;
        }
        const dinoc_image *in = &fi.input;
        cJSON_ArrayForEach(c, fi.cases) {
            const char *op = cJSON_GetObjectItem(c, "op")->valuestring;
            int         k  = 0;
            while (k_ops[k] && strcmp(k_ops[k], op) != 0) k++;
            if (!k_ops[k]) continue; /* the float cases are checked below */
            dinoc_image want;
            if (!tensor_image(case_out(&fi, c), &want)) {
                CHECK_MSG(0, "%s %s: missing output tensor", fi.name, op);
                continue;
            }
            size_t   n   = (size_t)want.w * want.h * want.c;
            uint8_t *got = malloc(n);
            dinoc_image img = {in->w, in->h, in->c, got};
            if (strcmp(op, "resized_crop") == 0) {
                int size = (int)num(c, "size");
                CHECK_OK(dinoc_mc_resized_crop(got, in, (int)num(c, "top"), (int)num(c, "left"),
                                               (int)num(c, "height"), (int)num(c, "width"), size));
                img.w = img.h = size;
            } else {
                memcpy(got, in->data, (size_t)in->w * in->h * in->c);
                float f = (float)num(c, "factor");
                if (strcmp(op, "flip") == 0) dinoc_mc_flip(&img);
                if (strcmp(op, "brightness") == 0) dinoc_mc_brightness(&img, f);
                if (strcmp(op, "contrast") == 0) dinoc_mc_contrast(&img, f);
                if (strcmp(op, "saturation") == 0) dinoc_mc_saturation(&img, f);
                if (strcmp(op, "hue") == 0) dinoc_mc_hue(&img, f);
                if (strcmp(op, "gray") == 0) dinoc_mc_grayscale(&img);
                if (strcmp(op, "solarize") == 0) dinoc_mc_solarize(&img);
                if (strcmp(op, "jitter") == 0) {
                    double o[4], fa[4];
                    num_array(c, "order", o, 4);
                    num_array(c, "factor", fa, 4);
                    int   order[4];
                    float factor[4];
                    for (int i = 0; i < 4; i++) order[i] = (int)o[i], factor[i] = (float)fa[i];
                    dinoc_mc_color_jitter(&img, order, factor);
                }
                if (strcmp(op, "blur") == 0) {
                    uint8_t *scratch = malloc(dinoc_mc_blur_scratch(img.w, img.h, img.c));
                    dinoc_mc_gaussian_blur(&img, (float)num(c, "radius"), scratch);
                    free(scratch);
                }
            }
            size_t nd = 0;
            int    md = 0;
            if (img.w != want.w || img.h != want.h || img.c != want.c) {
                nd = n;
            } else {
                for (size_t i = 0; i < n; i++) {
                    int d = abs((int)got[i] - (int)want.data[i]);
                    nd += d != 0;
                    md = d > md ? d : md;
                }
            }
            counts[k]++;
            if (nd) {
                fails[k]++;
                CHECK_MSG(0, "%s %s (%s): %zu of %zu bytes differ from PIL, max %d", fi.name, op,
                          cJSON_PrintUnformatted(c), nd, n, md);
            }
            free(got);
        }
        dinoc_safetensors_close(fi.st);
    }
    int total = 0;
    for (int k = 0; k_ops[k]; k++) {
        fprintf(stderr, "    %-12s %3d cases, %d differ from PIL\n", k_ops[k], counts[k], fails[k]);
        CHECK_MSG(counts[k] >= 10, "only %d %s fixtures", counts[k], k_ops[k]);
        total += counts[k];
    }
    CHECK_MSG(total >= 400, "only %d op fixtures found", total);
    cJSON_Delete(man);
}

/* ---- parity of the float outputs: ToTensor + Normalize, whole crops -------------------------- */

static void read_crop(const cJSON *j, dinoc_mc_crop *p) {
    memset(p, 0, sizeof *p);
    p->top         = (int)num(j, "top");
    p->left        = (int)num(j, "left");
    p->height      = (int)num(j, "height");
    p->width       = (int)num(j, "width");
    p->size        = (int)num(j, "size");
    p->flip        = (int)num(j, "flip");
    p->jitter      = (int)num(j, "jitter");
    p->gray        = (int)num(j, "gray");
    p->blur        = (int)num(j, "blur");
    p->blur_radius = (float)num(j, "blur_radius");
    p->solarize    = (int)num(j, "solarize");
    double o[4], f[4];
    num_array(j, "order", o, 4);
    num_array(j, "factor", f, 4);
    for (int i = 0; i < 4; i++) p->order[i] = (int)o[i], p->factor[i] = (float)f[i];
}

DINOC_TEST(multicrop_parity_tensors) {
    cJSON *man = load_manifest();
    if (!man) return;
    int          ntensor = 0, npipe = 0;
    const cJSON *e, *c;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(man, "images")) {
        fixture_image fi;
        if (!open_image(e, &fi)) {
            dinoc_safetensors_close(fi.st);
            continue;
        }
        cJSON_ArrayForEach(c, fi.cases) {
            const char *op    = cJSON_GetObjectItem(c, "op")->valuestring;
            int         is_tt = strcmp(op, "to_tensor") == 0, is_pipe = strcmp(op, "pipeline") == 0;
            if (!is_tt && !is_pipe) continue;
            const dinoc_tensor *want = case_out(&fi, c);
            if (!want || want->dtype != DINOC_DTYPE_F32 || want->ndim != 3) {
                CHECK_MSG(0, "%s %s: missing F32 output", fi.name, op);
                continue;
            }
            dinoc_multicrop_config cfg = dinoc_multicrop_default();
            cfg.channels               = (int)num(c, "channels");
            double m[3], s[3];
            num_array(c, "mean", m, 3);
            num_array(c, "std", s, 3);
            for (int k = 0; k < 3; k++) cfg.mean[k] = (float)m[k], cfg.std[k] = (float)s[k];
            size_t n   = (size_t)dinoc_tensor_numel(want);
            float *got = calloc(n, sizeof(float));
            char   label[160];
            if (is_tt) {
                dinoc_mc_to_tensor(got, &fi.input, cfg.channels, cfg.mean, cfg.std);
                snprintf(label, sizeof label, "%s to_tensor C=%d", fi.name, cfg.channels);
                ntensor++;
            } else {
                dinoc_mc_crop p;
                read_crop(cJSON_GetObjectItem(c, "crop"), &p);
                CHECK(want->shape[0] == cfg.channels && want->shape[1] == p.size &&
                      want->shape[2] == p.size);
                CHECK_OK(dinoc_mc_apply(got, &fi.input, &p, &cfg));
                snprintf(label, sizeof label, "%s pipeline C=%d box %d,%d %dx%d -> %d", fi.name,
                         cfg.channels, p.left, p.top, p.width, p.height, p.size);
                npipe++;
            }
            /* 0: the same float32 operations as torch's div(255), sub_(mean), div_(std). */
            CHECK_CLOSE(got, (const float *)want->data, n, 0.0, 0.0, label);
            free(got);
        }
        dinoc_safetensors_close(fi.st);
    }
    CHECK_MSG(ntensor >= 10 && npipe >= 60, "only %d to_tensor and %d pipeline fixtures", ntensor,
              npipe);
    cJSON_Delete(man);
}

/* ---- small inputs for the non-fixture cases -------------------------------------------------- */

/* A deterministic w x h x c test image: smooth gradients plus noise. */
static dinoc_image make_image(int w, int h, int c, uint32_t seed) {
    dinoc_image img = {w, h, c, malloc((size_t)w * h * c)};
    uint32_t    s   = seed * 2654435761u + 1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) {
                s = s * 1664525u + 1013904223u;
                int gx = x * 255 / (w > 1 ? w - 1 : 1), gy = y * 97 / (h > 1 ? h - 1 : 1);
                int v  = (gx + gy + k * 60) / 2 + (int)(s >> 27);
                img.data[((size_t)y * w + x) * c + k] = (uint8_t)(v > 255 ? 255 : v);
            }
    return img;
}

static dinoc_multicrop_config fmnist_config(void) {
    dinoc_multicrop_config c = dinoc_multicrop_default();
    c.n_global = 2, c.n_local = 6, c.global_size = 28, c.local_size = 14, c.channels = 1;
    c.mean[0] = 0.2860f, c.std[0] = 0.3530f;
    return c;
}

/* ---- layout, determinism, threads ------------------------------------------------------------ */

DINOC_TEST(multicrop_layout_and_sizes) {
    dinoc_multicrop_config c = dinoc_multicrop_default();
    CHECK(c.n_global == 2 && c.n_local == 8 && c.global_size == 224 && c.local_size == 96);
    CHECK(c.global_scale[0] == 0.4f && c.local_scale[1] == 0.4f && c.blur_p[0] == 1.0f &&
          c.blur_p[1] == 0.1f && c.blur_p[2] == 0.5f && c.solarize_p[1] == 0.2f);
    CHECK(dinoc_multicrop_floats(&c) == 2u * 3 * 224 * 224 + 8u * 3 * 96 * 96);
    CHECK_OK(dinoc_multicrop_check(&c));

    c = fmnist_config();
    CHECK(dinoc_multicrop_floats(&c) == 2u * 28 * 28 + 6u * 14 * 14);
    /* Crop k of the transform is dinoc_mc_apply of the crop sampled from the k-th draw of the
     * item's generator; crops follow each other, globals first. */
    for (int src_c = 1; src_c <= 3; src_c += 2)
        for (int ch = 1; ch <= 3; ch += 2) {
            c.channels      = ch;
            c.mean[1]       = c.mean[2] = c.mean[0];
            c.std[1]        = c.std[2]  = c.std[0];
            dinoc_image img = make_image(37, 29, src_c, 5);
            size_t      n   = dinoc_multicrop_floats(&c);
            float      *out = malloc(sizeof(float) * (n + 1)), *one = malloc(sizeof(float) * n);
            out[n]          = 12345.0f; /* guard */
            dinoc_rng r, r2;
            dinoc_rng_seed(&r, 99);
            r2 = r;
            CHECK_OK(dinoc_multicrop_transform(out, &img, &r, &c));
            CHECK(out[n] == 12345.0f);
            size_t off = 0;
            for (int k = 0; k < c.n_global + c.n_local; k++) {
                dinoc_rng cr;
                dinoc_rng_seed(&cr, dinoc_rng_u64(&r2));
                dinoc_mc_crop p;
                int kind = k == 0 ? DINOC_MC_GLOBAL0
                           : k < c.n_global ? DINOC_MC_GLOBAL1
                                            : DINOC_MC_LOCAL;
                dinoc_mc_sample(&p, &c, kind, img.w, img.h, &cr);
                CHECK(p.size == (k < c.n_global ? 28 : 14));
                CHECK_OK(dinoc_mc_apply(one, &img, &p, &c));
                size_t m = (size_t)ch * p.size * p.size;
                CHECK_MSG(memcmp(out + off, one, m * sizeof(float)) == 0,
                          "crop %d (source C=%d, channels %d) differs from dinoc_mc_apply", k,
                          src_c, ch);
                /* a grey source or a grey config: equal planes when mean/std agree */
                if (ch == 3 && src_c == 1)
                    CHECK(memcmp(one, one + (size_t)p.size * p.size,
                                 sizeof(float) * p.size * p.size) == 0);
                off += m;
            }
            CHECK(off == n);
            CHECK(memcmp(&r, &r2, sizeof r) == 0); /* one draw of the item's rng per crop */
            free(out);
            free(one);
            free(img.data);
        }
}

DINOC_TEST(multicrop_deterministic) {
    dinoc_multicrop_config cfgs[2] = {fmnist_config(), dinoc_multicrop_default()};
    cfgs[1].global_size = 64, cfgs[1].local_size = 32, cfgs[1].n_local = 3; /* RGB, kept small */
    for (int ci = 0; ci < 2; ci++) {
        const dinoc_multicrop_config *c   = &cfgs[ci];
        dinoc_image                   img = make_image(60, 45, ci ? 3 : 1, 11);
        size_t                        n   = dinoc_multicrop_floats(c);
        float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
        dinoc_rng r;
        dinoc_rng_seed(&r, 7);
        CHECK_OK(dinoc_multicrop_transform(a, &img, &r, (void *)c));
        dinoc_rng_seed(&r, 7);
        CHECK_OK(dinoc_multicrop_transform(b, &img, &r, (void *)c));
        CHECK_MSG(memcmp(a, b, sizeof(float) * n) == 0, "same seed, different output (config %d)",
                  ci);
        dinoc_rng_seed(&r, 8);
        CHECK_OK(dinoc_multicrop_transform(b, &img, &r, (void *)c));
        size_t same = 0;
        for (size_t i = 0; i < n; i++) same += a[i] == b[i];
        CHECK_MSG(same < n / 2, "seeds 7 and 8 agree on %zu of %zu values", same, n);
        for (size_t i = 0; i < n; i++) CHECK(isfinite(a[i]));
        free(a);
        free(b);
        free(img.data);
    }
}

typedef struct {
    const dinoc_multicrop_config *c;
    const dinoc_image            *img;
    float                        *out; /* [items, floats] */
    int                           first, items;
    dinoc_status                  st;
} mc_job;

static void *mc_worker(void *arg) {
    mc_job *j = arg;
    size_t  n = dinoc_multicrop_floats(j->c);
    for (int i = 0; i < j->items && !j->st; i++) {
        dinoc_rng r;
        dinoc_rng_seed(&r, 1000 + (uint64_t)(j->first + i));
        j->st = dinoc_multicrop_transform(j->out + (size_t)i * n, j->img, &r, (void *)j->c);
    }
    return NULL;
}

DINOC_TEST(multicrop_threads_agree) {
    /* Two threads transforming at once give the bytes one thread gives (no shared state). */
    dinoc_multicrop_config c = dinoc_multicrop_default();
    c.global_size = 48, c.local_size = 24, c.n_local = 4;
    dinoc_image img = make_image(80, 64, 3, 3);
    size_t      n = dinoc_multicrop_floats(&c);
    const int   items = 16;
    float      *serial = malloc(sizeof(float) * n * items);
    float      *par    = malloc(sizeof(float) * n * items);
    mc_job      all = {&c, &img, serial, 0, items, DINOC_OK};
    mc_worker(&all);
    CHECK_OK(all.st);
    mc_job    jobs[2] = {{&c, &img, par, 0, items / 2, DINOC_OK},
                         {&c, &img, par + n * (items / 2), items / 2, items / 2, DINOC_OK}};
    pthread_t th[2];
    for (int t = 0; t < 2; t++) pthread_create(&th[t], NULL, mc_worker, &jobs[t]);
    for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
    CHECK_OK(jobs[0].st);
    CHECK_OK(jobs[1].st);
    CHECK(memcmp(serial, par, sizeof(float) * n * items) == 0);
    free(serial);
    free(par);
    free(img.data);
}

/* ---- errors ---------------------------------------------------------------------------------- */

DINOC_TEST(multicrop_config_errors) {
    /* Each bad value gives DINOC_ERR_ARG and a message naming the field. */
    dinoc_multicrop_config c;
#define BAD(stmt, needle)                                                                         \
    do {                                                                                          \
        c = dinoc_multicrop_default();                                                            \
        stmt;                                                                                     \
        CHECK_ERR(dinoc_multicrop_check(&c), DINOC_ERR_ARG, needle);                             \
    } while (0)
    BAD(c.n_global = 0, "n_global");
    BAD(c.n_local = -1, "n_local");
    BAD(c.global_size = 0, "global_size");
    BAD(c.local_size = -3, "local_size");
    BAD(c.global_scale[0] = 0.0f, "global_scale");
    BAD(c.global_scale[1] = 1.5f, "global_scale");
    BAD((c.local_scale[0] = 0.5f, c.local_scale[1] = 0.2f), "local_scale");
    BAD(c.local_scale[0] = NAN, "local_scale");
    BAD(c.ratio[0] = -1.0f, "ratio");
    BAD((c.ratio[0] = 2.0f, c.ratio[1] = 1.0f), "ratio");
    BAD(c.flip_p = 1.5f, "flip_p");
    BAD(c.jitter_p = -0.1f, "jitter_p");
    BAD(c.gray_p = NAN, "gray_p");
    BAD(c.blur_p[2] = 2.0f, "blur_p[2]");
    BAD(c.solarize_p[1] = -1.0f, "solarize_p[1]");
    BAD(c.brightness = -0.4f, "brightness");
    BAD(c.contrast = INFINITY, "contrast");
    BAD(c.saturation = NAN, "saturation");
    BAD(c.hue = 0.6f, "hue");
    BAD((c.blur_sigma[0] = 2.0f, c.blur_sigma[1] = 1.0f), "blur_sigma");
    BAD(c.channels = 2, "channels");
    BAD(c.std[1] = 0.0f, "std[1]");
    BAD(c.mean[2] = NAN, "mean[2]");
#undef BAD
    /* A grey config ignores the unused channels' mean/std. */
    c          = dinoc_multicrop_default();
    c.channels = 1;
    c.std[2]   = 0.0f;
    CHECK_OK(dinoc_multicrop_check(&c));
    /* Zero strengths and probabilities are valid (the op is off). */
    c            = dinoc_multicrop_default();
    c.brightness = c.contrast = c.saturation = c.hue = 0.0f;
    c.flip_p = c.jitter_p = c.gray_p = 0.0f;
    c.n_local = 0;
    CHECK_OK(dinoc_multicrop_check(&c));
    CHECK_ERR(dinoc_multicrop_check(NULL), DINOC_ERR_ARG, "NULL");

    /* The transform checks its config and image. */
    c               = fmnist_config();
    dinoc_image img = make_image(10, 10, 3, 1);
    float      *out = malloc(sizeof(float) * dinoc_multicrop_floats(&c));
    dinoc_rng   r;
    dinoc_rng_seed(&r, 1);
    c.hue = -1.0f;
    CHECK_ERR(dinoc_multicrop_transform(out, &img, &r, &c), DINOC_ERR_ARG, "hue");
    c     = fmnist_config();
    img.c = 4;
    CHECK_ERR(dinoc_multicrop_transform(out, &img, &r, &c), DINOC_ERR_ARG, "4 channels");
    img.c = 3;
    dinoc_mc_crop p;
    dinoc_mc_sample(&p, &c, DINOC_MC_LOCAL, img.w, img.h, &r);
    p.left = 8, p.width = 3;
    CHECK_ERR(dinoc_mc_apply(out, &img, &p, &c), DINOC_ERR_ARG, "outside");
    free(out);
    free(img.data);
}

/* ---- sampling statistics --------------------------------------------------------------------- */

DINOC_TEST(multicrop_sampling_stats) {
    dinoc_multicrop_config c = dinoc_multicrop_default();
    c.flip_p = 0.5f, c.jitter_p = 0.8f, c.gray_p = 0.2f;
    const int N = 20000, W = 90, H = 70;
    dinoc_rng r;
    dinoc_rng_seed(&r, 2024);
    /* 4.5 sigma of a binomial proportion at N = 20000 is at most 0.016. */
    const double tol = 0.016;
    for (int kind = 0; kind < 3; kind++) {
        int    nflip = 0, njit = 0, ngray = 0, nblur = 0, nsol = 0, bad = 0;
        double area_sum = 0, fmin[4] = {9, 9, 9, 9}, fmax[4] = {-9, -9, -9, -9};
        int    first[4] = {0};
        const float *sc = kind == DINOC_MC_LOCAL ? c.local_scale : c.global_scale;
        for (int i = 0; i < N; i++) {
            dinoc_mc_crop p;
            dinoc_mc_sample(&p, &c, kind, W, H, &r);
            nflip += p.flip, njit += p.jitter, ngray += p.gray, nblur += p.blur, nsol += p.solarize;
            /* the box lies inside; area and aspect ratio within the ranges up to the rounding of
             * w and h (half a pixel each) */
            bad += p.top < 0 || p.left < 0 || p.top + p.height > H || p.left + p.width > W;
            double frac = (double)p.width * p.height / (W * H);
            double slack = (0.5 * (p.width + p.height) + 0.25) / (W * H);
            bad += frac < sc[0] - slack || frac > sc[1] + slack;
            double ar = (double)p.width / p.height;
            bad += ar < c.ratio[0] * (1 - 0.5 / p.height) / (1 + 0.5 / p.width) - 1e-9 ||
                   ar > c.ratio[1] * (1 + 0.5 / p.width) / (1 - 0.5 / p.height) + 1e-9;
            area_sum += frac;
            int seen = 0;
            for (int k = 0; k < 4; k++) seen |= 1 << p.order[k];
            bad += seen != 15; /* a permutation */
            first[p.order[0]]++;
            for (int k = 0; k < 4; k++) {
                fmin[k] = fmin[k] < p.factor[k] ? fmin[k] : p.factor[k];
                fmax[k] = fmax[k] > p.factor[k] ? fmax[k] : p.factor[k];
            }
            bad += !(p.blur_radius >= c.blur_sigma[0] && p.blur_radius <= c.blur_sigma[1]);
            bad += p.size != (kind == DINOC_MC_LOCAL ? c.local_size : c.global_size);
        }
        CHECK_MSG(bad == 0, "kind %d: %d crops out of range", kind, bad);
        CHECK_MSG(fabs(nflip / (double)N - 0.5) < tol, "flip rate %g", nflip / (double)N);
        CHECK_MSG(fabs(njit / (double)N - 0.8) < tol, "jitter rate %g", njit / (double)N);
        CHECK_MSG(fabs(ngray / (double)N - 0.2) < tol, "gray rate %g", ngray / (double)N);
        CHECK_MSG(fabs(nblur / (double)N - c.blur_p[kind]) < tol, "kind %d blur rate %g", kind,
                  nblur / (double)N);
        CHECK_MSG(fabs(nsol / (double)N - c.solarize_p[kind]) < tol, "kind %d solarize rate %g",
                  kind, nsol / (double)N);
        for (int k = 0; k < 4; k++)
            CHECK_MSG(fabs(first[k] / (double)N - 0.25) < tol, "op %d first with rate %g", k,
                      first[k] / (double)N);
        /* factors fill [1 - x, 1 + x] (hue [-h, h]) */
        const float x[4] = {c.brightness, c.contrast, c.saturation, c.hue};
        for (int k = 0; k < 4; k++) {
            double lo = k < 3 ? 1 - x[k] : -x[k], hi = k < 3 ? 1 + x[k] : x[k];
            CHECK_MSG(fmin[k] >= lo && fmax[k] <= hi && fmin[k] < lo + 0.01 && fmax[k] > hi - 0.01,
                      "factor %d spans [%g, %g], want [%g, %g]", k, fmin[k], fmax[k], lo, hi);
        }
        /* The mean area fraction. Local boxes always fit a 90 x 70 image, so it is U(scale)'s
         * mean (standard error 0.0007). Large global boxes often stick out (area near 1 with a
         * ratio other than 9/7), are redrawn, and the redraws favour smaller areas: torchvision's
         * mean is below U(scale)'s, so only the interval is checked. */
        double mean = area_sum / N, want = 0.5 * (sc[0] + sc[1]);
        fprintf(stderr, "    kind %d: mean area fraction %.4f (U(scale) mean %.4f)\n", kind, mean,
                want);
        if (kind == DINOC_MC_LOCAL)
            CHECK(fabs(mean - want) < 0.005);
        else
            CHECK(mean > sc[0] + 0.1 && mean < want);
    }
    /* Probability 0 never fires, 1 always; strength 0 disables the op (order entry -1). */
    c.flip_p = 0.0f, c.jitter_p = 1.0f, c.gray_p = 1.0f, c.hue = 0.0f, c.brightness = 0.0f;
    for (int i = 0; i < 1000; i++) {
        dinoc_mc_crop p;
        dinoc_mc_sample(&p, &c, DINOC_MC_GLOBAL0, W, H, &r);
        CHECK(!p.flip && p.jitter && p.gray && p.blur && !p.solarize);
        int skipped = 0;
        for (int k = 0; k < 4; k++) {
            skipped += p.order[k] == -1;
            CHECK(p.order[k] != DINOC_MC_HUE && p.order[k] != DINOC_MC_BRIGHTNESS);
        }
        CHECK(skipped == 2);
        if (p.flip || skipped != 2) break;
    }
}

DINOC_TEST(multicrop_rrc_fallback) {
    dinoc_rng r;
    dinoc_rng_seed(&r, 5);
    int top, left, h, w;
    /* Scale 1 with ratios far from the image's: never fits, center crop with the ratio clamped.
     * 100 x 50 (ratio 2 > 4/3): h = 50, w = round(50 * 4/3) = round(66.67) = 67. */
    const float scale1[2] = {1.0f, 1.0f}, ratio[2] = {3.0f / 4.0f, 4.0f / 3.0f};
    dinoc_mc_rrc_params(&top, &left, &h, &w, 100, 50, scale1, ratio, &r);
    CHECK(h == 50 && w == 67 && top == 0 && left == 16);
    /* 30 x 90 (ratio 1/3 < 3/4): w = 30, h = round(30 / 0.75) = 40, centered. */
    dinoc_mc_rrc_params(&top, &left, &h, &w, 30, 90, scale1, ratio, &r);
    CHECK(w == 30 && h == 40 && left == 0 && top == 25);
    /* A square image with scale 1 and ratio 1 fits at once: the whole image. */
    const float one[2] = {1.0f, 1.0f};
    dinoc_mc_rrc_params(&top, &left, &h, &w, 28, 28, scale1, one, &r);
    CHECK(w == 28 && h == 28 && top == 0 && left == 0);
    /* Ratios (2, 3) on a square: area 1 never fits (w > 28), fallback h = round(28 / 2) = 14. */
    const float wide[2] = {2.0f, 3.0f};
    dinoc_mc_rrc_params(&top, &left, &h, &w, 28, 28, scale1, wide, &r);
    CHECK(w == 28 && h == 14 && top == 7 && left == 0);
    /* A 1-pixel-wide image: never an empty box. */
    dinoc_mc_rrc_params(&top, &left, &h, &w, 1, 9, scale1, wide, &r);
    CHECK(w == 1 && h >= 1 && top + h <= 9);
    /* Half-to-even rounding of the fallback: 10 / (4/3) = 7.5 -> 8, 6 * 1.25 = 7.5 -> 8 (even),
     * 10 * 1.25 = 12.5 -> 12. */
    const float r125[2] = {1.25f, 1.25f};
    dinoc_mc_rrc_params(&top, &left, &h, &w, 20, 10, scale1, r125, &r);
    CHECK(h == 10 && w == 12);
    dinoc_mc_rrc_params(&top, &left, &h, &w, 20, 6, scale1, r125, &r);
    CHECK(h == 6 && w == 8);
}

/* ---- throughput ------------------------------------------------------------------------------ */

/* Seconds of this thread's CPU time (robust when other processes share the cores) and of wall
 * time. */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double wall_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Up to n Fashion-MNIST test images (28 x 28 grey) into px; returns how many (0 without the
 * dataset). */
static int read_fmnist(uint8_t *px, int n) {
    gzFile f = gzopen("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", "rb");
    if (!f) return 0;
    uint8_t hdr[16];
    int     got = 0;
    if (gzread(f, hdr, 16) == 16) got = gzread(f, px, (unsigned)(28 * 28 * n)) / (28 * 28);
    gzclose(f);
    return got > 0 ? got : 0;
}

DINOC_TEST(multicrop_throughput) {
    /* The main job's shape: 28 x 28 grey, 2 global crops of 28 and 6 local crops of 14, on real
     * images. One thread. The rate is printed, never asserted (timings belong to bench/); what is
     * checked is that every transform of many real images succeeds. */
    enum { NIMG = 256 };
    uint8_t *px = malloc(28 * 28 * NIMG);
    int      n  = read_fmnist(px, NIMG);
    for (int i = n; i < NIMG; i++) {
        dinoc_image g = make_image(28, 28, 1, (uint32_t)i);
        memcpy(px + (size_t)i * 784, g.data, 784);
        free(g.data);
    }
    dinoc_multicrop_config c   = fmnist_config();
    float                 *out = malloc(sizeof(float) * dinoc_multicrop_floats(&c));
    int                    done = 0;
    double                 t0 = cpu_s(), w0 = wall_s(), t;
    do {
        for (int i = 0; i < NIMG; i++, done++) {
            dinoc_image img = {28, 28, 1, px + (size_t)i * 784};
            dinoc_rng   r;
            dinoc_rng_seed(&r, (uint64_t)done);
            CHECK_OK(dinoc_multicrop_transform(out, &img, &r, &c));
        }
        t = cpu_s() - t0;
    } while (t < 0.5);
    double rate = done / t;
    fprintf(stderr,
            "    Fashion-MNIST (%s), 2x28 + 6x14 grey: %.0f source images/s per core of CPU "
            "time (%.1f us each); %.0f/s wall\n",
            n ? "real images" : "synthetic", rate, 1e6 / rate, done / (wall_s() - w0));

    /* For scale: DINO's ImageNet default (2 x 224 + 8 x 96, RGB) from a 256 x 256 image. */
    c                 = dinoc_multicrop_default();
    dinoc_image photo = make_image(256, 256, 3, 9);
    float      *o2    = malloc(sizeof(float) * dinoc_multicrop_floats(&c));
    done              = 0;
    t0                = cpu_s();
    do {
        dinoc_rng r;
        dinoc_rng_seed(&r, (uint64_t)done++);
        CHECK_OK(dinoc_multicrop_transform(o2, &photo, &r, &c));
        t = cpu_s() - t0;
    } while (t < 0.3);
    fprintf(stderr, "    ImageNet default, 2x224 + 8x96 RGB from 256x256: %.1f images/s per core\n",
            done / t);
    free(o2);
    free(photo.data);
    free(out);
    free(px);
}
