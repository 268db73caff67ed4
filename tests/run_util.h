/* run_util.h: helpers for tests that read training run folders (tests/test_train.c,
 * tests/test_dino_run.c). Static: each test file gets its own copy. */
#ifndef DINOC_RUN_UTIL_H
#define DINOC_RUN_UTIL_H

#include "check.h"
#include "../src/internal.h"

/* Tensor `name` of DIR/checkpoint.safetensors as float32 (malloc'ed; *n elements), NULL if absent. */
static float *read_tensor(const char *dir, const char *name, int64_t *n) {
    char path[600];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", dir);
    dinoc_safetensors *st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, path));
    if (!st) return NULL;
    const dinoc_tensor *t = dinoc_safetensors_find(st, name);
    float              *x = NULL;
    if (t) {
        *n = dinoc_tensor_numel(t);
        x  = malloc(sizeof(float) * *n);
        CHECK_OK(dinoc_tensor_to_f32(t, x, *n));
    }
    dinoc_safetensors_close(st);
    return x;
}

/* DIR/name as a string (malloc'ed). */
static char *read_text(const char *dir, const char *name) {
    char   path[600], *buf = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    CHECK_OK(dinoc_read_file(path, 1 << 24, &buf, &len));
    return buf;
}

/* A log without its wall-clock field (img_s, last in each line). */
static void strip_speed(char *s) {
    for (char *p = s; (p = strstr(p, ",\"img_s\":"));) {
        char *e = strchr(p, '}');
        memmove(p, e, strlen(e) + 1);
    }
}

#endif
