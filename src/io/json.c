/* json.c: dinoc_json_load, reading a JSON file (config.json, preprocessor_config.json,
 * model.safetensors.index.json) into a cJSON tree with errors that name the file and the line and
 * column of a syntax error.
 *
 * Tested by tests/test_safetensors.c (sharded index files, including malformed ones). */
#include "../internal.h"

#include <cjson/cJSON.h>
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
