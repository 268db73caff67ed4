/* json.c: dinoc_json_load, reading a JSON file (config.json, preprocessor_config.json,
 * model.safetensors.index.json) into a cJSON tree with errors that name the file and the line and
 * column of a syntax error.
 *
 * Tested by tests/test_safetensors.c (sharded index files, including malformed ones). */
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
