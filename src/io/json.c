/* json.c: dinoc_json_load, reading a JSON file (config.json, preprocessor_config.json,
 * model.safetensors.index.json) into a cJSON tree with errors that name the file and the line and
 * column of a syntax error; 64-bit integers as decimal strings; and the one walker of the config
 * tables that training runs save in their checkpoints (dinoc_cfg_field, internal.h).
 *
 * Tested by tests/test_safetensors.c (sharded index files, including malformed ones) and, for the
 * config tables, by every resume test (tests/test_dino_run.c, test_clip.c, test_mlm_train.c) and
 * tests/test_core.c (json_config_table). */
#include "../internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Config and index files are small; 64 MiB bounds what a hostile path can make us allocate. */
#define JSON_MAX_BYTES (64u << 20)

dinoc_status dinoc_json_load(struct cJSON **out, const char *path) {
    *out      = NULL;
    char  *buf = NULL;
    size_t len = 0;
    dinoc_status s = dinoc_read_file(path, JSON_MAX_BYTES, &buf, &len);
    if (s) return s;
    /* The return_parse_end pointer is used rather than cJSON_GetErrorPtr, which is a global shared
     * by all threads. require_null_terminated = 1 also rejects trailing garbage. */
    const char *end  = NULL;
    cJSON      *root = cJSON_ParseWithLengthOpts(buf, len + 1, &end, 1);
    if (!root) {
        size_t at = end && end >= buf && end <= buf + len ? (size_t)(end - buf) : len;
        int    line = 1, col = 1;
        for (size_t i = 0; i < at; i++) {
            if (buf[i] == '\n') line++, col = 1;
            else col++;
        }
        s = dinoc_fail(DINOC_ERR_FORMAT, "%s: invalid JSON near line %d column %d (byte %zu)", path,
                       line, col, at);
        free(buf);
        return s;
    }
    free(buf);
    *out = root;
    return DINOC_OK;
}

int dinoc_json_add_u64(cJSON *obj, const char *name, uint64_t v) {
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return cJSON_AddStringToObject(obj, name, buf) != NULL;
}

dinoc_status dinoc_json_get_u64(const cJSON *obj, const char *name, uint64_t *out, const char *where) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (cJSON_IsString(it)) {
        const char *v = it->valuestring;
        char       *end;
        errno = 0;
        const unsigned long long x = strtoull(v, &end, 10);
        if (v[0] >= '0' && v[0] <= '9' && !*end && !errno) {
            *out = (uint64_t)x;
            return DINOC_OK;
        }
    } else if (cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble <= 9007199254740992.0 &&
               it->valuedouble == floor(it->valuedouble)) {
        *out = (uint64_t)it->valuedouble;
        return DINOC_OK;
    }
    if (!it) return dinoc_fail(DINOC_ERR_FORMAT, "%s: config metadata lacks '%s'", where, name);
    return dinoc_fail(DINOC_ERR_FORMAT, "%s: config metadata '%s' is not an unsigned 64-bit integer", where, name);
}

/* ---- config tables ---------------------------------------------------------------------------- */

static double cfg_number(const void *c, const dinoc_cfg_field *f) {
    const char *p = (const char *)c + f->off;
    switch (f->type) {
    case 'i': return *(const int *)p;
    case 'f': return *(const float *)p;
    default: return *(const double *)p;
    }
}

static void cfg_set_number(void *c, const dinoc_cfg_field *f, double v) {
    char *p = (char *)c + f->off;
    switch (f->type) {
    case 'i': *(int *)p = (int)v; break;
    case 'f': *(float *)p = (float)v; break;
    default: *(double *)p = v;
    }
}

int dinoc_cfg_to_json(cJSON *o, const dinoc_cfg_field *fields, int n, const void *c) {
    for (int i = 0; i < n; i++) {
        const dinoc_cfg_field *f = &fields[i];
        const char            *p = (const char *)c + f->off;
        if (f->type == 'u') {
            if (!dinoc_json_add_u64(o, f->name, *(const uint64_t *)p)) return 0;
        } else if (f->type == 's') {
            const char *v = *(const char *const *)p;
            if ((v || f->dflt) && !cJSON_AddStringToObject(o, f->name, v ? v : f->dflt)) return 0;
        } else if (!cJSON_AddNumberToObject(o, f->name, cfg_number(c, f))) {
            return 0;
        }
    }
    return 1;
}

dinoc_status dinoc_cfg_from_json(const cJSON *o, const dinoc_cfg_field *fields, int n, void *c, char **keep,
                                 int max_keep, const char *where) {
    int nk = 0;
    while (nk < max_keep && keep[nk]) nk++; /* slots already taken by the caller */
    for (int i = 0; i < n; i++) {
        const dinoc_cfg_field *f  = &fields[i];
        const cJSON           *it = cJSON_GetObjectItemCaseSensitive(o, f->name);
        char                  *p  = (char *)c + f->off;
        if (!it && (f->flags & DINOC_CFG_CLEAR)) { /* added after such checkpoints: they ran without it */
            if (f->type == 's') *(const char **)p = NULL;
            else if (f->type == 'u') *(uint64_t *)p = 0;
            else cfg_set_number(c, f, 0);
            continue;
        }
        if (f->type == 's') {
            if (!it && !(f->flags & DINOC_CFG_REQUIRED)) continue; /* absent: the caller's value stays */
            if (!cJSON_IsString(it))
                return dinoc_fail(DINOC_ERR_FORMAT, "%s: config metadata %s '%s'", where,
                                  it ? "has a non-string" : "lacks", f->name);
            if (nk == max_keep)
                return dinoc_fail(DINOC_ERR_ARG, "%s: more than %d strings in the config", where, max_keep);
            if (!(keep[nk] = strdup(it->valuestring))) return dinoc_fail(DINOC_ERR_NOMEM, "out of memory");
            *(const char **)p = keep[nk++];
            continue;
        }
        if (f->type == 'u') {
            dinoc_status s = dinoc_json_get_u64(o, f->name, (uint64_t *)p, where);
            if (s) return s;
            continue;
        }
        if (!cJSON_IsNumber(it))
            return dinoc_fail(DINOC_ERR_FORMAT, "%s: config metadata %s '%s'", where,
                              it ? "has a non-number" : "lacks", f->name);
        cfg_set_number(c, f, it->valuedouble);
    }
    return DINOC_OK;
}
