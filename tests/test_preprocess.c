/* test_preprocess.c: preprocessing (src/io/preprocess.c) and PIL parity of decode + resize +
 * the transformers pipeline.
 *
 * The parity cases read fixtures written by tests/py/gen_preprocess.py into
 * $DINOC_FIXTURES/preprocess (run: /usr/bin/python3 tests/py/gen_preprocess.py <fixtures dir>);
 * without them they fail and say so. Tolerances:
 * - decode of PNG sources: 0 differing bytes (stb and PIL's zlib decode are both exact).
 * - decode of JPEG sources: reported only (stb's IDCT/upsampling is not libjpeg's); mean abs
 *   difference must stay below 2 levels. Resize/pipeline of JPEGs take PIL's decoded pixels.
 * - resize: 0 differing bytes for every filter (the emulation is integer-exact).
 * - normalised floats: 1e-6 absolute (the pipeline is exact float32 arithmetic, measured 0). */
#include "check.h"
#include "../src/internal.h"

#include <cjson/cJSON.h>

/* ---- fixtures ------------------------------------------------------------------------------- */

static char *fixture_path(const char *name) {
    char *dir = dinoc_path_join(dinoc_test_fixtures(), "preprocess");
    char *p   = dinoc_path_join(dir, name);
    free(dir);
    return p;
}

/* The manifest, or NULL after failing the test with the command that makes it. */
static cJSON *load_manifest(void) {
    char  *path = fixture_path("manifest.json");
    cJSON *root = NULL;
    if (!dinoc_file_exists(path) || dinoc_json_load(&root, path) != DINOC_OK) {
        CHECK_MSG(0,
                  "missing preprocessing fixtures %s: run /usr/bin/python3 "
                  "tests/py/gen_preprocess.py %s",
                  path, dinoc_test_fixtures());
        free(path);
        return NULL;
    }
    free(path);
    return root;
}

/* A U8 [H, W, 3] tensor as an image (data points into the mapped file). */
static int tensor_image(const dinoc_tensor *t, dinoc_image *img) {
    if (!t || t->dtype != DINOC_DTYPE_U8 || t->ndim != 3 || t->shape[2] != 3) return 0;
    img->w    = (int)t->shape[1];
    img->h    = (int)t->shape[0];
    img->c    = 3;
    img->data = (uint8_t *)t->data;
    return 1;
}

static void byte_diff(const uint8_t *a, const uint8_t *b, size_t n, size_t *ndiff, int *maxd,
                      double *mean) {
    size_t nd = 0;
    int    md = 0;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        nd += d != 0;
        if (d > md) md = d;
        sum += d;
    }
    *ndiff = nd;
    *maxd  = md;
    if (mean) *mean = n ? sum / n : 0;
}

/* Opens images[i] of the manifest; sets *src to the decoded photo the resize checks start from:
 * stb's decode for lossless sources (checked equal to PIL's), PIL's pixels for JPEG. */
typedef struct {
    const char        *name;
    dinoc_safetensors *st;
    dinoc_image        stb;   /* stb's decode of the source file (owned) */
    dinoc_image        input; /* what resize starts from */
    int                lossless;
} fixture_image;

static int open_image(const cJSON *e, fixture_image *fi) {
    memset(fi, 0, sizeof *fi);
    const cJSON *name = cJSON_GetObjectItem(e, "name"), *file = cJSON_GetObjectItem(e, "file");
    const cJSON *src = cJSON_GetObjectItem(e, "source"), *ll = cJSON_GetObjectItem(e, "lossless");
    if (!cJSON_IsString(name) || !cJSON_IsString(file) || !cJSON_IsString(src)) {
        CHECK_MSG(0, "manifest entry malformed");
        return 0;
    }
    fi->name     = name->valuestring;
    fi->lossless = ll ? cJSON_IsTrue(ll) : 1;
    char *p      = fixture_path(file->valuestring);
    dinoc_status s = dinoc_safetensors_open(&fi->st, p);
    free(p);
    CHECK_OK(s);
    if (s) return 0;
    s = dinoc_image_load(&fi->stb, src->valuestring);
    CHECK_OK(s);
    if (s) return 0;
    dinoc_image pil = {0};
    if (!tensor_image(dinoc_safetensors_find(fi->st, "decoded"), &pil)) {
        CHECK_MSG(0, "%s: no U8 'decoded' tensor", fi->name);
        return 0;
    }
    fi->input = fi->lossless ? fi->stb : pil;
    return 1;
}

static void close_image(fixture_image *fi) {
    dinoc_image_free(&fi->stb);
    dinoc_safetensors_close(fi->st);
}

/* ---- parity with PIL -------------------------------------------------------------------------- */

DINOC_TEST(preprocess_parity_decode) {
    cJSON *man = load_manifest();
    if (!man) return;
    const char *lists[] = {"images", "decode_only"};
    for (int l = 0; l < 2; l++) {
        const cJSON *arr = cJSON_GetObjectItem(man, lists[l]), *e;
        cJSON_ArrayForEach(e, arr) {
            fixture_image fi;
            if (!open_image(e, &fi)) {
                close_image(&fi);
                continue;
            }
            dinoc_image pil = {0};
            tensor_image(dinoc_safetensors_find(fi.st, "decoded"), &pil);
            if (fi.stb.w != pil.w || fi.stb.h != pil.h) {
                CHECK_MSG(0, "%s: stb %dx%d, PIL %dx%d", fi.name, fi.stb.w, fi.stb.h, pil.w, pil.h);
            } else {
                size_t nd;
                int    md;
                double mean;
                byte_diff(fi.stb.data, pil.data, (size_t)pil.w * pil.h * 3, &nd, &md, &mean);
                fprintf(stderr, "    decode %-28s %4dx%-4d %s: %zu bytes differ, max %d, mean %.4f\n",
                        fi.name, pil.w, pil.h, fi.lossless ? "lossless" : "jpeg", nd, md, mean);
                if (fi.lossless)
                    CHECK_MSG(nd == 0, "%s: stb and PIL decodes differ", fi.name);
                else
                    CHECK_MSG(mean < 2.0, "%s: JPEG decodes differ by %.3f on average", fi.name, mean);
            }
            close_image(&fi);
        }
    }
    cJSON_Delete(man);
}

static const char *k_filter_names[] = {"nearest", "lanczos", "bilinear", "bicubic", "box", "hamming"};

DINOC_TEST(preprocess_parity_resize) {
    cJSON *man = load_manifest();
    if (!man) return;
    const cJSON *e;
    int          ncases = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(man, "images")) {
        fixture_image fi;
        if (!open_image(e, &fi)) {
            close_image(&fi);
            continue;
        }
        for (int i = 0; i < dinoc_safetensors_count(fi.st); i++) {
            const dinoc_tensor *t = dinoc_safetensors_get(fi.st, i);
            char fname[32];
            int  tw, th, f = -1;
            if (sscanf(t->name, "resize/%31[a-z]/%dx%d", fname, &tw, &th) != 3) continue;
            for (int k = 0; k < 6; k++)
                if (strcmp(fname, k_filter_names[k]) == 0) f = k;
            dinoc_image want, got;
            if (f < 0 || !tensor_image(t, &want) || want.w != tw || want.h != th) {
                CHECK_MSG(0, "%s: bad fixture tensor %s", fi.name, t->name);
                continue;
            }
            CHECK_OK(dinoc_image_resize(&got, &fi.input, tw, th, (dinoc_resample)f));
            if (!got.data) continue;
            size_t nd;
            int    md;
            byte_diff(got.data, want.data, (size_t)tw * th * 3, &nd, &md, NULL);
            fprintf(stderr, "    resize %-10s %4dx%-4d -> %4dx%-4d %-8s: %zu bytes differ, max %d\n",
                    fi.name, fi.input.w, fi.input.h, tw, th, fname, nd, md);
            CHECK_MSG(nd == 0, "%s %s: %zu bytes differ from PIL (max %d)", fi.name, t->name, nd, md);
            dinoc_image_free(&got);
            ncases++;
        }
        close_image(&fi);
    }
    CHECK_MSG(ncases >= 30, "only %d resize fixtures found", ncases);
    cJSON_Delete(man);
}

DINOC_TEST(preprocess_parity_pipeline) {
    cJSON *man = load_manifest();
    if (!man) return;
    const cJSON *pe, *e;
    int          ncases = 0;
    cJSON_ArrayForEach(pe, cJSON_GetObjectItem(man, "pipelines")) {
        const char *pname = cJSON_GetObjectItem(pe, "name")->valuestring;
        char       *cfg   = fixture_path(cJSON_GetObjectItem(pe, "config")->valuestring);
        dinoc_preprocess pp = dinoc_preprocess_default();
        dinoc_status     s  = dinoc_preprocess_load(&pp, cfg);
        free(cfg);
        CHECK_OK(s);
        if (s) continue;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(man, "images")) {
            fixture_image fi;
            if (!open_image(e, &fi)) {
                close_image(&fi);
                continue;
            }
            char key[64];
            snprintf(key, sizeof key, "pipe/%s/f32", pname);
            const dinoc_tensor *t = dinoc_safetensors_find(fi.st, key);
            int                 W, H;
            dinoc_preprocess_size(&pp, fi.input.w, fi.input.h, &W, &H);
            if (!t || t->dtype != DINOC_DTYPE_F32 || t->ndim != 3 || t->shape[0] != 3 ||
                t->shape[1] != H || t->shape[2] != W) {
                CHECK_MSG(0, "%s %s: missing or shape differs from dinoc_preprocess_size %dx%d",
                          fi.name, key, W, H);
                close_image(&fi);
                continue;
            }
            float *out = malloc(sizeof(float) * 3 * (size_t)W * H);
            CHECK_OK(dinoc_preprocess_image(&pp, &fi.input, out, W, H));
            char label[96];
            snprintf(label, sizeof label, "pipeline %s %s %dx%d", pname, fi.name, W, H);
            /* 1e-6: exact float32 arithmetic is expected (one uint8 level is 0.017 after
             * normalisation, so any resize or crop mistake is far above this). */
            CHECK_CLOSE(out, (const float *)t->data, (size_t)3 * W * H, 1e-6, 0, label);
            free(out);
            close_image(&fi);
            ncases++;
        }
    }
    CHECK_MSG(ncases >= 9, "only %d pipeline fixtures found", ncases);
    cJSON_Delete(man);
}

/* ---- sizes, crop, rescale ------------------------------------------------------------------- */

DINOC_TEST(preprocess_default_and_sizes) {
    dinoc_preprocess pp = dinoc_preprocess_default();
    CHECK(pp.do_resize && pp.resize_mode == DINOC_RESIZE_SHORTEST_EDGE && pp.shortest_edge == 256);
    CHECK(pp.resample == DINOC_RESAMPLE_BICUBIC && pp.do_center_crop && pp.crop_w == 224 &&
          pp.crop_h == 224);
    CHECK(pp.do_rescale && pp.rescale_factor == (float)(1.0 / 255) && pp.do_normalize);
    CHECK(pp.mean[0] == 0.485f && pp.mean[1] == 0.456f && pp.mean[2] == 0.406f);
    CHECK(pp.std[0] == 0.229f && pp.std[1] == 0.224f && pp.std[2] == 0.225f);

    int w, h;
    dinoc_preprocess_size(&pp, 640, 480, &w, &h);
    CHECK(w == 224 && h == 224);
    pp.do_center_crop = 0;
    /* int(256 * 640 / 480) = int(341.33) = 341; the short side is exactly 256. */
    dinoc_preprocess_size(&pp, 640, 480, &w, &h);
    CHECK(w == 341 && h == 256);
    dinoc_preprocess_size(&pp, 480, 640, &w, &h);
    CHECK(w == 256 && h == 341);
    dinoc_preprocess_size(&pp, 300, 300, &w, &h);
    CHECK(w == 256 && h == 256);
    /* int(256 * 1001 / 3) = int(85418.67) = 85418 (truncation, not rounding) */
    dinoc_preprocess_size(&pp, 1001, 3, &w, &h);
    CHECK(w == 85418 && h == 256);
    pp.resize_mode = DINOC_RESIZE_EXACT;
    pp.resize_w    = 200;
    pp.resize_h    = 100;
    dinoc_preprocess_size(&pp, 640, 480, &w, &h);
    CHECK(w == 200 && h == 100);
    pp.do_resize = 0;
    dinoc_preprocess_size(&pp, 640, 480, &w, &h);
    CHECK(w == 640 && h == 480);
    pp.do_center_crop = 1;
    pp.crop_w         = 700; /* larger than the image: padded, the output is the crop size */
    pp.crop_h         = 10;
    dinoc_preprocess_size(&pp, 640, 480, &w, &h);
    CHECK(w == 700 && h == 10);
}

DINOC_TEST(preprocess_crop_offsets_and_padding) {
    /* 5 x 3 image whose value encodes its position; no resize, no normalisation, rescale 1. */
    uint8_t px[3 * 5 * 3];
    for (int y = 0; y < 3; y++)
        for (int x = 0; x < 5; x++)
            for (int c = 0; c < 3; c++) px[(y * 5 + x) * 3 + c] = (uint8_t)(10 * (y + 1) + x + 1);
    dinoc_image      img = {5, 3, 3, px};
    dinoc_preprocess pp  = dinoc_preprocess_default();
    pp.do_resize         = 0;
    pp.do_normalize      = 0;
    pp.rescale_factor    = 1.0f;
    /* Crop 2 x 2: margins 3 and 1 are odd; transformers floors: left 1, top 0 (torchvision's
     * round-half-even would give left 2). */
    pp.crop_w = 2;
    pp.crop_h = 2;
    float out[3 * 8 * 6];
    CHECK_OK(dinoc_preprocess_image(&pp, &img, out, 2, 2));
    CHECK(out[0] == 12 && out[1] == 13 && out[2] == 22 && out[3] == 23);
    CHECK(out[4] == 12); /* channel 1 starts at plane 4 */
    /* Crop 8 wide (pad 3: ceil(3/2) = 2 zeros on the left, 1 on the right) x 2 high (crop). */
    pp.crop_w = 8;
    pp.crop_h = 2;
    CHECK_OK(dinoc_preprocess_image(&pp, &img, out, 8, 2));
    const float row0[8] = {0, 0, 11, 12, 13, 14, 15, 0};
    CHECK(memcmp(out, row0, sizeof row0) == 0);
    /* Padding with normalisation: zeros become (0 - mean) / std. */
    pp.do_normalize   = 1;
    pp.rescale_factor = (float)(1.0 / 255);
    pp.crop_w = 6;
    pp.crop_h = 5;
    CHECK_OK(dinoc_preprocess_image(&pp, &img, out, 6, 5));
    float pad = (0.0f - pp.mean[0]) / pp.std[0];
    CHECK(out[0] == pad);                      /* (0, 0): padded row */
    CHECK(out[6 * 1 + 1] != pad);              /* (1, 1): image pixel (0, 0) = 11 */
    CHECK(out[6 * 1 + 0] == pad);              /* (1, 0): pad column (ceil(1/2) = 1) */
    CHECK(out[6 * 4 + 3] == pad);              /* (4, 3): bottom pad row */
    /* Wrong output size is a shape error. */
    CHECK_ERR(dinoc_preprocess_image(&pp, &img, out, 5, 5), DINOC_ERR_SHAPE, "6 x 5");
}

DINOC_TEST(preprocess_rescale_matches_transformers) {
    /* transformers: float32(uint8 * float64(1/255)); every one of the 256 values must match, and
     * (float)(1/255) as a float factor alone would miss 126 of them by one ulp. */
    uint8_t px[256 * 3];
    for (int v = 0; v < 256; v++) px[3 * v] = px[3 * v + 1] = px[3 * v + 2] = (uint8_t)v;
    dinoc_image      img = {256, 1, 3, px};
    dinoc_preprocess pp  = dinoc_preprocess_default();
    pp.do_resize = pp.do_center_crop = pp.do_normalize = 0;
    float out[3 * 256];
    CHECK_OK(dinoc_preprocess_image(&pp, &img, out, 256, 1));
    int bad = 0;
    for (int v = 0; v < 256; v++) bad += out[v] != (float)((double)v * (1.0 / 255.0));
    CHECK_MSG(bad == 0, "%d rescaled values differ from float32(v * (1/255))", bad);
    /* Grey (c = 1) input is replicated to 3 channels. */
    uint8_t     grey[4] = {0, 51, 102, 255};
    dinoc_image g       = {4, 1, 1, grey};
    CHECK_OK(dinoc_preprocess_image(&pp, &g, out, 4, 1));
    CHECK(out[1] == (float)(51 / 255.0) && out[4 + 1] == out[1] && out[8 + 3] == 1.0f);
}

/* ---- preprocessor_config.json ---------------------------------------------------------------- */

static char *write_cfg(const char *name, const char *json) {
    char *p = dinoc_path_join(dinoc_test_tmpdir(), name);
    dinoc_write_file_atomic(p, json, strlen(json));
    return p;
}

DINOC_TEST(preprocess_config_size_forms) {
    dinoc_preprocess pp = dinoc_preprocess_default();
    char *p = write_cfg("pp_shortest.json",
                        "{\"size\": {\"shortest_edge\": 300}, \"crop_size\": {\"height\": 250, "
                        "\"width\": 260}, \"resample\": 2, \"image_processor_type\": "
                        "\"BitImageProcessor\", \"do_convert_rgb\": true}");
    CHECK_OK(dinoc_preprocess_load(&pp, p));
    CHECK(pp.resize_mode == DINOC_RESIZE_SHORTEST_EDGE && pp.shortest_edge == 300);
    CHECK(pp.crop_w == 260 && pp.crop_h == 250 && pp.resample == DINOC_RESAMPLE_BILINEAR);
    CHECK(pp.do_center_crop && pp.mean[0] == 0.485f); /* absent keys keep their values */
    free(p);

    pp = dinoc_preprocess_default();
    p  = write_cfg("pp_hw.json",
                   "{\"size\": {\"height\": 384, \"width\": 320}, \"crop_size\": 300, "
                   "\"do_center_crop\": false, \"image_mean\": [0.5, 0.25, 0.125], \"image_std\": "
                   "0.5, \"rescale_factor\": 0.5, \"do_rescale\": true, \"_processor_class\": null}");
    CHECK_OK(dinoc_preprocess_load(&pp, p));
    CHECK(pp.resize_mode == DINOC_RESIZE_EXACT && pp.resize_w == 320 && pp.resize_h == 384);
    CHECK(pp.crop_w == 300 && pp.crop_h == 300 && !pp.do_center_crop);
    CHECK(pp.mean[1] == 0.25f && pp.std[2] == 0.5f && pp.rescale_factor == 0.5f);
    free(p);

    /* Legacy ViTFeatureExtractor (DINO v1 on the hub): int size = square, and no crop step. */
    pp = dinoc_preprocess_default();
    p  = write_cfg("pp_legacy.json",
                   "{\"do_normalize\": true, \"do_resize\": true, \"feature_extractor_type\": "
                   "\"ViTFeatureExtractor\", \"image_mean\": [0.485, 0.456, 0.406], "
                   "\"image_std\": [0.229, 0.224, 0.225], \"resample\": 2, \"size\": 224}");
    CHECK_OK(dinoc_preprocess_load(&pp, p));
    CHECK(pp.resize_mode == DINOC_RESIZE_EXACT && pp.resize_w == 224 && pp.resize_h == 224);
    CHECK(!pp.do_center_crop);
    free(p);

    /* CLIP's processors read an int size as the shortest edge. */
    pp = dinoc_preprocess_default();
    p  = write_cfg("pp_clip.json", "{\"feature_extractor_type\": \"CLIPFeatureExtractor\", "
                                   "\"size\": 224, \"crop_size\": 224, \"do_center_crop\": true}");
    CHECK_OK(dinoc_preprocess_load(&pp, p));
    CHECK(pp.resize_mode == DINOC_RESIZE_SHORTEST_EDGE && pp.shortest_edge == 224 && pp.do_center_crop);
    free(p);
}

DINOC_TEST(preprocess_config_errors) {
    struct {
        const char  *json, *needle;
        dinoc_status want;
    } cases[] = {
        {"{\"do_resize\": true, \"crop_pct\": 0.875}", "unknown key 'crop_pct'", DINOC_ERR_CONFIG},
        {"{\"do_resize\": \"yes\"}", "'do_resize'", DINOC_ERR_CONFIG},
        {"{\"size\": \"224\"}", "'size'", DINOC_ERR_CONFIG},
        {"{\"size\": {\"height\": 224}}", "'size'", DINOC_ERR_CONFIG},
        {"{\"size\": {\"height\": 224, \"width\": 0}}", "'size.width'", DINOC_ERR_CONFIG},
        {"{\"size\": {\"shortest_edge\": 224.5}}", "'size.shortest_edge'", DINOC_ERR_CONFIG},
        {"{\"size\": {\"shortest_edge\": 224, \"longest_edge\": 1333}}", "longest_edge",
         DINOC_ERR_UNSUPPORTED},
        {"{\"size\": {\"height\": 2, \"width\": 2, \"depth\": 3}}", "'depth'", DINOC_ERR_CONFIG},
        {"{\"crop_size\": [224, 224]}", "'crop_size'", DINOC_ERR_CONFIG},
        {"{\"resample\": 7}", "'resample'", DINOC_ERR_CONFIG},
        {"{\"image_mean\": [0.5, 0.5]}", "'image_mean'", DINOC_ERR_CONFIG},
        {"{\"image_std\": [0.5, 0, 0.5]}", "'image_std'", DINOC_ERR_CONFIG},
        {"{\"rescale_factor\": -1}", "'rescale_factor'", DINOC_ERR_CONFIG},
        {"[1, 2]", "not a JSON object", DINOC_ERR_CONFIG},
        {"{\"size\": 224,", NULL, DINOC_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "pp_bad%zu.json", i);
        char            *p  = write_cfg(name, cases[i].json);
        dinoc_preprocess pp = dinoc_preprocess_default(), before = pp;
        CHECK_ERR(dinoc_preprocess_load(&pp, p), cases[i].want, cases[i].needle);
        CHECK_MSG(strstr(dinoc_last_error(), p) != NULL, "error does not name the file: %s",
                  dinoc_last_error());
        CHECK_MSG(memcmp(&pp, &before, sizeof pp) == 0, "case %zu: failed load changed *pp", i);
        free(p);
    }
}
