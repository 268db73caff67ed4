/* status.c: status codes, the thread-local error message, and the log hook.
 * Tested by tests/test_core.c. */
#include "../internal.h"

#include <string.h>

#define MSG_CAP 1024
static _Thread_local char g_msg[MSG_CAP];

static dinoc_log_fn    g_log_fn;
static void           *g_log_user;
static dinoc_log_level g_log_max = DINOC_LOG_WARN;

const char *dinoc_status_str(dinoc_status s) {
    switch (s) {
#define DINOC_STATUS_CASE_(name, value, text) \
    case DINOC_##name:                        \
        return text;
        DINOC_STATUS_MAP(DINOC_STATUS_CASE_)
#undef DINOC_STATUS_CASE_
    }
    return "unknown status";
}

const char *dinoc_last_error(void) { return g_msg; }

dinoc_status dinoc_fail(dinoc_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, MSG_CAP, fmt, ap);
    va_end(ap);
    return s;
}

dinoc_status dinoc_fail_prefix(dinoc_status s, const char *fmt, ...) {
    char prefix[MSG_CAP], old[MSG_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, MSG_CAP, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, MSG_CAP);
    char   both[2 * MSG_CAP + 4];
    snprintf(both, sizeof both, "%s: %s", prefix, old[0] ? old : dinoc_status_str(s));
    size_t n = strlen(both);
    if (n >= MSG_CAP) n = MSG_CAP - 1;
    memcpy(g_msg, both, n);
    g_msg[n] = 0;
    return s;
}

void dinoc_log_set(dinoc_log_fn fn, void *user, dinoc_log_level max_level) {
    g_log_fn   = fn;
    g_log_user = user;
    g_log_max  = max_level;
}

void dinoc_log(dinoc_log_level level, const char *fmt, ...) {
    if (!g_log_fn || level > g_log_max) return;
    char    buf[MSG_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_log_fn(level, buf, g_log_user);
}

void dinoc_assert_fail(const char *file, int line, const char *expr) {
    /* A broken internal invariant: the library's one abort. Reported through the hook first. */
    dinoc_log(DINOC_LOG_ERROR, "internal assertion failed at %s:%d: %s", file, line, expr);
    fprintf(stderr, "dinoc: internal assertion failed at %s:%d: %s\n", file, line, expr);
    abort();
}
