/* test_interp.c: dinoc_bicubic_resize (src/ops/interp.c) against PyTorch 1.13.
 *
 * interp_matches_torch reads $DINOC_FIXTURES/interp/cases.safetensors, written by
 * `/usr/bin/python3 tests/py/gen_interp.py <fixtures dir>` (see that file for the case list and
 * layout), and demands max abs error <= 1e-6 per case; it prints the max abs error and the number
 * of values that are not bit-identical (0 except antialiased shrinking, see src/ops/interp.c).
 * interp_identity_and_finite needs no fixtures. */
#include "check.h"
#include "../src/internal.h"

#include <stdint.h>

/* Bits-level comparison: returns the number of values whose bits differ; *max_abs gets the largest
 * |got - want| (NaN anywhere counts as infinite). */
static size_t count_diff(const float *got, const float *want, size_t n, double *max_abs) {
    size_t diff = 0;
    double m    = 0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0) diff++;
        double d = fabs((double)got[i] - (double)want[i]);
        if (isnan(d)) d = INFINITY;
        if (d > m) m = d;
    }
    *max_abs = m;
    return diff;
}

/* Loads a float tensor of rank 3 into a new buffer; shape into s[3]. NULL (and a failed CHECK) if
 * absent or of another rank. */
static float *load3(const dinoc_safetensors *st, const char *name, int64_t s[3]) {
    const dinoc_tensor *t = dinoc_safetensors_find(st, name);
    CHECK_MSG(t != NULL, "fixture tensor '%s' missing", name);
    if (!t) return NULL;
    CHECK_MSG(t->ndim == 3, "fixture tensor '%s' has rank %d, expected 3", name, t->ndim);
    if (t->ndim != 3) return NULL;
    int64_t n   = dinoc_tensor_numel(t);
    float  *buf = malloc(sizeof(float) * (size_t)n);
    CHECK(buf != NULL);
    if (!buf) return NULL;
    CHECK_OK(dinoc_tensor_to_f32(t, buf, n));
    for (int i = 0; i < 3; i++) s[i] = t->shape[i];
    return buf;
}

DINOC_TEST(interp_matches_torch) {
    char *dir  = dinoc_path_join(dinoc_test_fixtures(), "interp");
    char *path = dinoc_path_join(dir, "cases.safetensors");
    if (!dinoc_file_exists(path)) {
        CHECK_MSG(0, "%s missing: run `/usr/bin/python3 tests/py/gen_interp.py %s` first", path,
                  dinoc_test_fixtures());
        free(dir);
        free(path);
        return;
    }
    dinoc_safetensors *st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, path));
    free(dir);
    free(path);
    if (!st) return;

    const char *ncases = dinoc_safetensors_metadata(st, "cases");
    CHECK_MSG(ncases != NULL, "metadata 'cases' missing");
    int n = ncases ? atoi(ncases) : 0;
    CHECK(n > 0);
    for (int k = 0; k < n; k++) {
        char key[64], oname[64], pname[64];
        snprintf(key, sizeof key, "case.%d.input", k);
        snprintf(oname, sizeof oname, "case.%d.out", k);
        snprintf(pname, sizeof pname, "case.%d.params", k);
        const char *in_name = dinoc_safetensors_metadata(st, key);
        snprintf(key, sizeof key, "case.%d.name", k);
        const char *label = dinoc_safetensors_metadata(st, key);
        CHECK_MSG(in_name && label, "metadata for case %d missing", k);
        if (!in_name || !label) continue;

        /* The scale factors stay F64 end to end: a float round trip would change them. */
        const dinoc_tensor *p = dinoc_safetensors_find(st, pname);
        CHECK_MSG(p && p->dtype == DINOC_DTYPE_F64 && dinoc_tensor_numel(p) == 3,
                  "'%s' missing or not F64[3]", pname);
        if (!p || p->dtype != DINOC_DTYPE_F64 || dinoc_tensor_numel(p) != 3) continue;
        double prm[3];
        memcpy(prm, p->data, sizeof prm);

        int64_t si[3], so[3];
        float  *in   = load3(st, in_name, si);
        float  *want = load3(st, oname, so);
        if (in && want && si[0] == so[0]) {
            size_t cnt = (size_t)so[0] * so[1] * so[2];
            float *got = malloc(sizeof(float) * cnt);
            CHECK(got != NULL);
            if (got) {
                dinoc_bicubic_resize(got, in, (int)si[0], (int)si[1], (int)si[2], (int)so[1],
                                     (int)so[2], prm[0] != 0.0, prm[1], prm[2]);
                double max_abs;
                size_t diff = count_diff(got, want, cnt, &max_abs);
                fprintf(stderr, "    case %2d %-32s max_abs=%.3g non-identical=%zu/%zu\n", k, label,
                        max_abs, diff, cnt);
                CHECK_MSG(max_abs <= 1e-6, "case %d (%s): max abs error %.3g > 1e-6", k, label,
                          max_abs);
                free(got);
            }
        } else {
            CHECK_MSG(0, "case %d (%s): bad fixture shapes", k, label);
        }
        free(in);
        free(want);
    }
    dinoc_safetensors_close(st);
}

DINOC_TEST(interp_identity_and_finite) {
    enum { C = 7, H = 9, W = 13 };
    static float in[C * H * W], out[C * 40 * 40];
    dinoc_rng    r;
    dinoc_rng_seed(&r, 3);
    for (int i = 0; i < C * H * W; i++) in[i] = dinoc_rng_normal(&r);

    /* Same size in size mode: the Keys weights at t = 0 are exactly (0, 1, 0, 0) and the AA path
     * copies, so both must give the input back bit for bit. */
    for (int aa = 0; aa <= 1; aa++) {
        memset(out, 0xff, sizeof out);
        dinoc_bicubic_resize(out, in, C, H, W, H, W, aa, -1.0, -1.0);
        CHECK_MSG(memcmp(out, in, sizeof(float) * C * H * W) == 0, "identity (antialias=%d)", aa);
    }
    /* A scale factor that keeps the size still moves the samples (torch resamples such axes too):
     * the output must differ from the input (checked against torch in interp_matches_torch). */
    dinoc_bicubic_resize(out, in, C, H, W, H, W, 1, (H + 0.1) / H, (W + 0.1) / W);
    CHECK_MSG(memcmp(out, in, sizeof(float) * C * H * W) != 0, "AA with scale factors copied");

    /* Shrinking, growing, mixed and 1-pixel outputs stay finite and within the cubic overshoot
     * bound (sum of |weights| <= 1.5 per axis for A = -0.75, so |out| <= 2.25 max|in|). */
    static const int shapes[][2] = {{4, 6}, {40, 40}, {1, 1}, {9, 40}, {3, 13}, {1, 25}};
    float            maxin       = 0;
    for (int i = 0; i < C * H * W; i++) maxin = fmaxf(maxin, fabsf(in[i]));
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int oh = shapes[s][0], ow = shapes[s][1];
        for (int aa = 0; aa <= 1; aa++) {
            dinoc_bicubic_resize(out, in, C, H, W, oh, ow, aa, -1.0, -1.0);
            int ok = 1;
            for (int i = 0; i < C * oh * ow; i++)
                ok &= isfinite(out[i]) && fabsf(out[i]) <= 2.25f * maxin;
            CHECK_MSG(ok, "%dx%d -> %dx%d antialias=%d: non-finite or out of bound", H, W, oh, ow,
                      aa);
        }
    }
}
