/* check.h: the tiny test framework. Each tests/test_*.c registers its cases with DINOC_TEST;
 * tests/run.c runs them all (or those whose name contains argv[1]) and exits with the number of
 * failures. A case fails if any CHECK in it fails. */
#ifndef DINOC_CHECK_H
#define DINOC_CHECK_H

#include "dinoc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*dinoc_test_fn)(void);
void dinoc_test_register(const char *name, dinoc_test_fn fn);
void dinoc_test_fail_here(const char *file, int line, const char *fmt, ...);
/* Directory of generated fixtures ($DINOC_FIXTURES, default build/fixtures). */
const char *dinoc_test_fixtures(void);
/* Scratch directory for this run ($DINOC_TMP, default build/tmp); created by the runner. */
const char *dinoc_test_tmpdir(void);

#define DINOC_TEST(name)                                                          \
    static void name(void);                                                       \
    __attribute__((constructor)) static void name##_register(void) {              \
        dinoc_test_register(#name, name);                                         \
    }                                                                             \
    static void name(void)

#define CHECK(cond)                                                               \
    do {                                                                          \
        if (!(cond)) dinoc_test_fail_here(__FILE__, __LINE__, "CHECK(%s)", #cond); \
    } while (0)

#define CHECK_MSG(cond, ...)                                                      \
    do {                                                                          \
        if (!(cond)) dinoc_test_fail_here(__FILE__, __LINE__, __VA_ARGS__);       \
    } while (0)

/* Status must be DINOC_OK; prints dinoc_last_error() otherwise. */
#define CHECK_OK(expr)                                                            \
    do {                                                                          \
        dinoc_status s_ = (expr);                                                 \
        if (s_ != DINOC_OK)                                                       \
            dinoc_test_fail_here(__FILE__, __LINE__, "%s -> %s: %s", #expr,       \
                                 dinoc_status_str(s_), dinoc_last_error());       \
    } while (0)

/* Status must be `want` and the message must contain `needle` (NULL: any message). */
#define CHECK_ERR(expr, want, needle)                                             \
    do {                                                                          \
        dinoc_status s_ = (expr);                                                 \
        const char *n_ = (needle);                                                \
        if (s_ != (want) || (n_ && !strstr(dinoc_last_error(), n_)))              \
            dinoc_test_fail_here(__FILE__, __LINE__,                              \
                                 "%s -> %s '%s', wanted %s containing '%s'", #expr, \
                                 dinoc_status_str(s_), dinoc_last_error(),        \
                                 dinoc_status_str(want), n_ ? n_ : "");           \
    } while (0)

/* Compares n floats: passes iff |got - want| <= atol + rtol * |want| everywhere (and no NaN).
 * Prints max abs / rel error and the first mismatches; returns 1 if it passed. The max abs
 * error is stored in *max_abs if not NULL. */
/* Opens the fixture file rel (under dinoc_test_fixtures()); a missing one FAILS the calling test,
 * naming the generator that writes it (tests/py/<gen>), and gives NULL. */
dinoc_safetensors *dinoc_test_fixture_open(const char *rel, const char *gen);
/* A fixture tensor's raw bytes in its own dtype, malloc'ed (free()); *n its element count (n may be
 * NULL). A missing tensor fails the calling test and gives NULL. */
void *dinoc_test_fixture_tensor(const dinoc_safetensors *st, const char *name, int64_t *n);
int dinoc_check_close(const float *got, const float *want, size_t n, double atol, double rtol,
                      const char *label, double *max_abs);
#define CHECK_CLOSE(got, want, n, atol, rtol, label)                              \
    do {                                                                          \
        if (!dinoc_check_close((got), (want), (n), (atol), (rtol), (label), NULL)) \
            dinoc_test_fail_here(__FILE__, __LINE__, "%s not close", (label));    \
    } while (0)

#endif
