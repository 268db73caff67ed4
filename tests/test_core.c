/* test_core.c: status text, error messages, atomic writes, rng determinism. */
#include "check.h"
#include "../src/internal.h"

#include <cjson/cJSON.h>

#include <sys/wait.h>
#include <unistd.h>

DINOC_TEST(core_status_text) {
    CHECK(strcmp(dinoc_status_str(DINOC_OK), "ok") == 0);
    CHECK(strcmp(dinoc_status_str(DINOC_ERR_SHAPE), "tensor shape mismatch") == 0);
    CHECK_ERR(dinoc_fail(DINOC_ERR_ARG, "field '%s' bad", "x"), DINOC_ERR_ARG, "field 'x' bad");
    dinoc_fail_prefix(DINOC_ERR_ARG, "ctx");
    CHECK(strcmp(dinoc_last_error(), "ctx: field 'x' bad") == 0);
}

DINOC_TEST(core_atomic_write_keeps_old_on_abort) {
    char *p = dinoc_path_join(dinoc_test_tmpdir(), "atomic.txt");
    CHECK_OK(dinoc_write_file_atomic(p, "old", 3));
    dinoc_atomic_file af;
    CHECK_OK(dinoc_atomic_open(&af, p));
    CHECK_OK(dinoc_atomic_write(&af, "new-partial", 11));
    dinoc_atomic_abort(&af);
    char  *buf = NULL;
    size_t n   = 0;
    CHECK_OK(dinoc_read_file(p, 100, &buf, &n));
    CHECK(n == 3 && memcmp(buf, "old", 3) == 0);
    free(buf);
    CHECK_ERR(dinoc_write_file_atomic("/nonexistent-dir/x", "a", 1), DINOC_ERR_IO, "/nonexistent-dir/x");
    free(p);
}

/* A write removes the temp files of killed writers beside its target (their pid is gone) and
 * leaves a live writer's alone. */
DINOC_TEST(core_atomic_write_removes_stale_temps) {
    char path[512], dead[600], live[600];
    snprintf(path, sizeof path, "%s/stale.bin", dinoc_test_tmpdir());
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0); /* child's pid is now free: a writer that died */
    snprintf(dead, sizeof dead, "%s.tmp.%ld", path, (long)child);
    snprintf(live, sizeof live, "%s.tmp.%ld", path, (long)getppid());
    CHECK_OK(dinoc_write_file_atomic(dead, "x", 1));
    CHECK_OK(dinoc_write_file_atomic(live, "y", 1));
    CHECK_OK(dinoc_write_file_atomic(path, "new", 3));
    CHECK_MSG(access(dead, F_OK) != 0, "%s (a dead writer's) is still there", dead);
    CHECK_MSG(access(live, F_OK) == 0, "%s (a live process's) was removed", live);
    unlink(live), unlink(path);
}

/* The temp file is created exclusively and never through a symbolic link: a link planted at
 * this process's temp name fails the write and leaves its target alone; a regular file there
 * (a killed writer that had this pid) is replaced like any stale temp. */
DINOC_TEST(core_atomic_write_refuses_temp_symlink) {
    char path[512], tmp[600], victim[600];
    snprintf(path, sizeof path, "%s/excl.bin", dinoc_test_tmpdir());
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    snprintf(victim, sizeof victim, "%s/excl_victim.txt", dinoc_test_tmpdir());
    unlink(path), unlink(tmp);
    CHECK_OK(dinoc_write_file_atomic(victim, "victim", 6));
    CHECK(symlink("excl_victim.txt", tmp) == 0); /* (relative to the link's folder) */
    CHECK_ERR(dinoc_write_file_atomic(path, "new", 3), DINOC_ERR_IO, "not a regular file");
    CHECK(strstr(dinoc_last_error(), tmp) != NULL);
    char  *buf = NULL;
    size_t n   = 0;
    CHECK_OK(dinoc_read_file(victim, 100, &buf, &n));
    CHECK_MSG(n == 6 && buf && memcmp(buf, "victim", 6) == 0, "the link's target was written");
    free(buf);
    CHECK(access(path, F_OK) != 0);
    unlink(tmp);
    /* a stale regular file of our pid's name */
    CHECK_OK(dinoc_write_file_atomic(tmp, "stale", 5));
    CHECK_OK(dinoc_write_file_atomic(path, "new", 3));
    CHECK_MSG(access(tmp, F_OK) != 0, "%s is still there", tmp);
    buf = NULL;
    CHECK_OK(dinoc_read_file(path, 100, &buf, &n));
    CHECK(n == 3 && buf && memcmp(buf, "new", 3) == 0);
    free(buf);
    unlink(path), unlink(victim);
}

DINOC_TEST(core_rng_deterministic) {
    dinoc_rng a, b;
    dinoc_rng_seed(&a, 42);
    dinoc_rng_seed(&b, 42);
    int    same = 1;
    double sum = 0, sq = 0;
    for (int i = 0; i < 100000; i++) {
        float x = dinoc_rng_normal(&a), y = dinoc_rng_normal(&b);
        same &= x == y;
        sum += x;
        sq += (double)x * x;
    }
    CHECK(same);
    /* N(0,1) moments with 1e5 samples: mean within ~5 sigma = 0.016, variance within 0.03. */
    CHECK(fabs(sum / 1e5) < 0.016);
    CHECK(fabs(sq / 1e5 - 1) < 0.03);
}

/* Seeds in saved configs (internal.h: dinoc_json_add_u64 / dinoc_json_get_u64): every 64-bit value
 * comes back exactly (a JSON number would keep 53 bits: 2^64 - 1 read back as 2^64 is out of range
 * for uint64); old checkpoints' integer numbers still read; anything else is refused by name. */
DINOC_TEST(json_u64_round_trip) {
    cJSON         *o = cJSON_CreateObject();
    const uint64_t vals[] = {0, 1, 9007199254740993ull, 18446744073709551615ull};
    for (int i = 0; i < 4; i++) {
        uint64_t back = 7;
        CHECK(dinoc_json_add_u64(o, "seed", vals[i]));
        CHECK_OK(dinoc_json_get_u64(o, "seed", &back, "ckpt"));
        CHECK(back == vals[i]);
        cJSON_DeleteItemFromObject(o, "seed");
    }
    uint64_t v = 0;
    cJSON_AddNumberToObject(o, "old", 12345);
    CHECK_OK(dinoc_json_get_u64(o, "old", &v, "ckpt"));
    CHECK(v == 12345);
    cJSON_AddNumberToObject(o, "neg", -1), cJSON_AddNumberToObject(o, "frac", 2.5);
    cJSON_AddNumberToObject(o, "huge", 1.8446744073709552e19);
    cJSON_AddStringToObject(o, "minus", "-1"), cJSON_AddStringToObject(o, "space", " 1");
    cJSON_AddStringToObject(o, "over", "18446744073709551616"), cJSON_AddStringToObject(o, "tail", "12x");
    const char *bad[] = {"neg", "frac", "huge", "minus", "space", "over", "tail"};
    for (int i = 0; i < 7; i++) CHECK_ERR(dinoc_json_get_u64(o, bad[i], &v, "ckpt"), DINOC_ERR_FORMAT, bad[i]);
    CHECK_ERR(dinoc_json_get_u64(o, "absent", &v, "ckpt"), DINOC_ERR_FORMAT, "lacks 'absent'");
    cJSON_Delete(o);
}

/* The config-table walker every training run saves its config with (internal.h dinoc_cfg_field):
 * each type round-trips; on read a missing number is an error naming it, an absent string keeps the
 * caller's value unless DINOC_CFG_REQUIRED (an error) or DINOC_CFG_CLEAR (NULL / 0), and strings
 * read land in the caller's keep[] slots. */
typedef struct {
    int         i;
    float       f;
    double      d;
    uint64_t    u;
    const char *keep_me, *must, *cleared;
    int         added;
} cfg_t;

DINOC_TEST(json_config_table) {
    const dinoc_cfg_field F[] = {
        DINOC_CFG_F(cfg_t, "i", 'i', i), DINOC_CFG_F(cfg_t, "f", 'f', f), DINOC_CFG_F(cfg_t, "d", 'd', d),
        DINOC_CFG_F(cfg_t, "u", 'u', u), {"keep_me", 's', offsetof(cfg_t, keep_me), "dflt", 0},
        {"must", 's', offsetof(cfg_t, must), NULL, DINOC_CFG_REQUIRED},
        {"cleared", 's', offsetof(cfg_t, cleared), NULL, DINOC_CFG_CLEAR},
        {"added", 'i', offsetof(cfg_t, added), NULL, DINOC_CFG_CLEAR}};
    const cfg_t a = {-3, 0.25f, 1e-300, 18446744073709551615ull, NULL, "data", "x", 1};
    cJSON      *o = cJSON_CreateObject();
    CHECK(dinoc_cfg_to_json(o, F, 8, &a));
    CHECK(!strcmp(cJSON_GetObjectItem(o, "keep_me")->valuestring, "dflt")); /* NULL writes dflt */
    cfg_t b    = {0};
    char *keep[4] = {0};
    CHECK_OK(dinoc_cfg_from_json(o, F, 8, &b, keep, 4, "ckpt"));
    CHECK(b.i == -3 && b.f == 0.25f && b.d == 1e-300 && b.u == a.u && b.added == 1);
    CHECK(b.must && !strcmp(b.must, "data") && b.cleared && !strcmp(b.cleared, "x"));
    CHECK(b.keep_me == keep[0] && !strcmp(keep[0], "dflt") && keep[2] == b.cleared);
    for (int k = 0; k < 4; k++) free(keep[k]), keep[k] = NULL;

    /* absent fields: the caller's string stays, CLEAR ones read as NULL / 0 */
    cJSON_DeleteItemFromObject(o, "keep_me"), cJSON_DeleteItemFromObject(o, "cleared");
    cJSON_DeleteItemFromObject(o, "added");
    cfg_t c = {.keep_me = "callers", .cleared = "callers", .added = 5};
    CHECK_OK(dinoc_cfg_from_json(o, F, 8, &c, keep, 4, "ckpt"));
    CHECK(!strcmp(c.keep_me, "callers") && c.cleared == NULL && c.added == 0);
    for (int k = 0; k < 4; k++) free(keep[k]), keep[k] = NULL;
    /* too few keep slots: refused, not silently dropped */
    CHECK_ERR(dinoc_cfg_from_json(o, F, 8, &c, keep, 0, "ckpt"), DINOC_ERR_ARG, "strings");

    cJSON_DeleteItemFromObject(o, "must");
    CHECK_ERR(dinoc_cfg_from_json(o, F, 8, &c, keep, 4, "ckpt"), DINOC_ERR_FORMAT, "lacks 'must'");
    cJSON_DeleteItemFromObject(o, "d");
    CHECK_ERR(dinoc_cfg_from_json(o, F, 3, &c, keep, 4, "ckpt"), DINOC_ERR_FORMAT, "ckpt: config metadata lacks 'd'");
    cJSON_ReplaceItemInObject(o, "i", cJSON_CreateString("3"));
    CHECK_ERR(dinoc_cfg_from_json(o, F, 1, &c, keep, 4, "ckpt"), DINOC_ERR_FORMAT, "non-number 'i'");
    for (int k = 0; k < 4; k++) free(keep[k]);
    cJSON_Delete(o);
}
