/* run.c: test runner. ./build/dinoc_tests [substring]; prints one line per case and a final
 * "N passed, N failed"; the exit status is 0 only if nothing failed. */
#include "check.h"
#include "../src/internal.h"

#include <stdarg.h>
#include <sys/stat.h>

#define MAX_TESTS 1024
static struct {
    const char   *name;
    dinoc_test_fn fn;
} g_tests[MAX_TESTS];
static int g_ntests;
static int g_failed_here;

void dinoc_test_register(const char *name, dinoc_test_fn fn) {
    if (g_ntests < MAX_TESTS) {
        g_tests[g_ntests].name = name;
        g_tests[g_ntests].fn   = fn;
        g_ntests++;
    }
}

void dinoc_test_fail_here(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "    %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    g_failed_here++;
}

const char *dinoc_test_fixtures(void) {
    const char *d = getenv("DINOC_FIXTURES");
    return d && d[0] ? d : "build/fixtures";
}

const char *dinoc_test_tmpdir(void) {
    const char *d = getenv("DINOC_TMP");
    return d && d[0] ? d : "build/tmp";
}

dinoc_safetensors *dinoc_test_fixture_open(const char *rel, const char *gen) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dinoc_test_fixtures(), rel);
    dinoc_safetensors *st = NULL;
    if (!dinoc_file_exists(path)) {
        dinoc_test_fail_here(__FILE__, __LINE__, "fixture %s missing: run /usr/bin/python3 tests/py/%s %s", path, gen,
                             dinoc_test_fixtures());
        return NULL;
    }
    if (dinoc_safetensors_open(&st, path) != DINOC_OK) {
        dinoc_test_fail_here(__FILE__, __LINE__, "%s", dinoc_last_error());
        return NULL;
    }
    return st;
}

void *dinoc_test_fixture_tensor(const dinoc_safetensors *st, const char *name, int64_t *n) {
    const dinoc_tensor *t = st ? dinoc_safetensors_find(st, name) : NULL;
    if (!t) {
        dinoc_test_fail_here(__FILE__, __LINE__, "fixture tensor '%s' missing", name);
        return NULL;
    }
    if (n) *n = dinoc_tensor_numel(t);
    void *p = malloc(t->nbytes ? t->nbytes : 1);
    if (p) memcpy(p, t->data, t->nbytes);
    return p;
}

int dinoc_check_close(const float *got, const float *want, size_t n, double atol, double rtol,
                      const char *label, double *max_abs_out) {
    double max_abs = 0, max_rel = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], w = want[i], d = fabs(g - w);
        int    nan = isnan(g) != isnan(w) || isinf(g) != isinf(w);
        if (!isnan(d) && d > max_abs) max_abs = d;
        if (!isnan(d) && fabs(w) > 1e-12 && d / fabs(w) > max_rel) max_rel = d / fabs(w);
        if (nan || d > atol + rtol * fabs(w)) {
            if (bad < 5) fprintf(stderr, "    %s[%zu]: got %.8g want %.8g\n", label, i, g, w);
            bad++;
        }
    }
    fprintf(stderr, "    %s: n=%zu max_abs=%.3g max_rel=%.3g (atol %.1g rtol %.1g) %s\n", label, n,
            max_abs, max_rel, atol, rtol, bad ? "MISMATCH" : "ok");
    if (max_abs_out) *max_abs_out = max_abs;
    return bad == 0;
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    mkdir("build", 0777);
    mkdir(dinoc_test_tmpdir(), 0777);
    int passed = 0, failed = 0;
    for (int i = 0; i < g_ntests; i++) {
        if (filter && !strstr(g_tests[i].name, filter)) continue;
        g_failed_here = 0;
        fprintf(stderr, "[ RUN  ] %s\n", g_tests[i].name);
        g_tests[i].fn();
        if (g_failed_here) {
            failed++;
            fprintf(stderr, "[ FAIL ] %s\n", g_tests[i].name);
        } else {
            passed++;
            fprintf(stderr, "[  OK  ] %s\n", g_tests[i].name);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
