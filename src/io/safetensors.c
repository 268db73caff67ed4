/* safetensors.c: the safetensors reader (mmap or caller memory, full validation of the header
 * against the format's rules, see docs / reference §1.7), the atomic writer, and dtype helpers
 * (names, sizes, conversion of F32/F16/BF16/F64 data to float32).
 *
 * Everything here reads untrusted bytes and must never crash: lengths are checked before any
 * access, sizes are multiplied with overflow checks, numbers from the JSON header are checked to
 * be exact non-negative integers below 2^53 before they become integers, and tensor data (which
 * need not be aligned) is only read byte by byte.
 *
 * Tested by tests/test_safetensors.c (round trips, dtype conversion, a table of malformed files);
 * the reader is also meant to run under libFuzzer + ASan/UBSan. */
#include "../internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The reference implementation (safetensors/src/tensor.rs) refuses headers above 100 MB. */
#define HEADER_MAX 100000000ull
/* JSON numbers are doubles: above 2^53 they are no longer exact integers. */
#define EXACT_INT_LIMIT 9007199254740992.0

struct dinoc_safetensors {
    char         *label;
    void         *map;      /* mmap base (dinoc_safetensors_open), NULL for caller memory */
    size_t        map_size;
    int           n;
    dinoc_tensor *tensors;  /* [n], ordered by data offset; names owned (strdup) */
    int          *by_name;  /* [n] indices into tensors, ordered by strcmp of the names */
    int           n_meta;
    char        **meta;     /* [2 * n_meta]: key, value, key, value, ... */
};

/* ---- dtypes -------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t      size;
} k_dtypes[DINOC_DTYPE_COUNT] = {
    [DINOC_DTYPE_F32] = {"F32", 4},         [DINOC_DTYPE_F16] = {"F16", 2},
    [DINOC_DTYPE_BF16] = {"BF16", 2},       [DINOC_DTYPE_F64] = {"F64", 8},
    [DINOC_DTYPE_I64] = {"I64", 8},         [DINOC_DTYPE_I32] = {"I32", 4},
    [DINOC_DTYPE_I16] = {"I16", 2},         [DINOC_DTYPE_I8] = {"I8", 1},
    [DINOC_DTYPE_U8] = {"U8", 1},           [DINOC_DTYPE_U16] = {"U16", 2},
    [DINOC_DTYPE_U32] = {"U32", 4},         [DINOC_DTYPE_U64] = {"U64", 8},
    [DINOC_DTYPE_BOOL] = {"BOOL", 1},       [DINOC_DTYPE_F8_E4M3] = {"F8_E4M3", 1},
    [DINOC_DTYPE_F8_E5M2] = {"F8_E5M2", 1},
};

/* dtypes the format defines (newer safetensors versions) that dinoc has no enum value for. */
static const char *const k_unsupported_dtypes[] = {"F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F4",
                                                   "F6_E2M3", "F6_E3M2", "C64"};

const char *dinoc_dtype_name(dinoc_dtype t) {
    return (unsigned)t < DINOC_DTYPE_COUNT ? k_dtypes[t].name : "?";
}

size_t dinoc_dtype_size(dinoc_dtype t) {
    return (unsigned)t < DINOC_DTYPE_COUNT ? k_dtypes[t].size : 0;
}

/* Element count; -1 if a dimension is negative, ndim is out of range or the product overflows
 * (only possible for tensors built by hand: the reader checks all of this). */
int64_t dinoc_tensor_numel(const dinoc_tensor *t) {
    if (t->ndim < 0 || t->ndim > DINOC_MAX_DIMS) return -1;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        int64_t d = t->shape[i];
        if (d < 0) return -1;
        if (d != 0 && n > INT64_MAX / d) return -1;
        n *= d;
    }
    return n;
}

/* Little-endian loads from possibly unaligned bytes (no pointer casts: those would be UB). */
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (unsigned)p[1] << 8); }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

static float f32_from_bits(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* IEEE half -> float, exact for every half value. */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp  = (h >> 10) & 0x1fu;
    uint32_t man  = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in float */
        float f = ldexpf((float)man, -24);
        return sign ? -f : f;
    }
    if (exp == 31) return f32_from_bits(sign | 0x7f800000u | man << 13); /* inf / nan */
    return f32_from_bits(sign | (exp + 112) << 23 | man << 13);          /* rebias 15 -> 127 */
}

/* double -> float without the UB of converting an out-of-range value: beyond the midpoint between
 * FLT_MAX and 2^128 IEEE rounding gives infinity, so that is what we return. */
static float f64_to_f32(double d) {
    if (isnan(d)) return (float)d;
    if (fabs(d) >= 0x1.ffffffp+127) return d < 0 ? -INFINITY : INFINITY;
    return (float)d;
}

dinoc_status dinoc_tensor_to_f32(const dinoc_tensor *t, float *dst, int64_t n) {
    const char *name = t->name ? t->name : "?";
    if ((unsigned)t->dtype >= DINOC_DTYPE_COUNT)
        return dinoc_fail(DINOC_ERR_ARG, "tensor '%s': invalid dtype %d", name, (int)t->dtype);
    int64_t numel = dinoc_tensor_numel(t);
    if (numel < 0) return dinoc_fail(DINOC_ERR_ARG, "tensor '%s': invalid shape", name);
    if (n != numel)
        return dinoc_fail(DINOC_ERR_SHAPE, "tensor '%s': %lld elements, destination holds %lld", name,
                          (long long)numel, (long long)n);
    size_t need;
    if (!dinoc_mul_size((size_t)numel, dinoc_dtype_size(t->dtype), &need) || t->nbytes < need ||
        (need && !t->data))
        return dinoc_fail(DINOC_ERR_ARG, "tensor '%s': %zu data bytes for %lld %s elements", name,
                          t->nbytes, (long long)numel, dinoc_dtype_name(t->dtype));
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case DINOC_DTYPE_F32:
        for (int64_t i = 0; i < n; i++) dst[i] = f32_from_bits(le32(p + 4 * i));
        break;
    case DINOC_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = f16_to_f32(le16(p + 2 * i));
        break;
    case DINOC_DTYPE_BF16:
        /* bfloat16 is the top half of a float32 */
        for (int64_t i = 0; i < n; i++) dst[i] = f32_from_bits((uint32_t)le16(p + 2 * i) << 16);
        break;
    case DINOC_DTYPE_F64:
        for (int64_t i = 0; i < n; i++) {
            uint64_t b = le64(p + 8 * i);
            double   d;
            memcpy(&d, &b, sizeof d);
            dst[i] = f64_to_f32(d);
        }
        break;
    default:
        return dinoc_fail(DINOC_ERR_UNSUPPORTED, "tensor '%s': dtype %s cannot be converted to F32",
                          name, dinoc_dtype_name(t->dtype));
    }
    return DINOC_OK;
}

/* ---- header scanning ------------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s[i..n) (1-4), or 0 if invalid: rejects overlong forms,
 * surrogates and code points above U+10FFFF, as Rust's str::from_utf8 does. */
static size_t utf8_seq(const uint8_t *s, size_t i, size_t n) {
    uint8_t c = s[i];
    if (c < 0x80) return 1;
    size_t   len;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0) len = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0) len = 3, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0) len = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (n - i < len) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[i + k] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

static int utf8_valid(const char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq((const uint8_t *)s, i, n);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

/* The header must be UTF-8 with no raw control bytes other than JSON whitespace, and no "\u0000"
 * escape inside a string: cJSON hands out C strings, so an embedded NUL would silently shorten a
 * tensor name. Returns the offset of the first bad byte, or n if all is well. */
static size_t header_scan(const uint8_t *h, size_t n, const char **why) {
    int in_string = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = h[i];
        if (c < 0x20 && c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            *why = "control character";
            return i;
        }
        if (in_string && c == '\\') {
            if (i + 1 < n && h[i + 1] == 'u' && n - i >= 6 && memcmp(h + i + 2, "0000", 4) == 0) {
                *why = "\\u0000 escape";
                return i;
            }
            i += 2; /* skip the escaped character (an ASCII letter or symbol if valid JSON) */
            continue;
        }
        if (c == '"') in_string = !in_string;
        size_t k = utf8_seq(h, i, n);
        if (!k) {
            *why = "invalid UTF-8";
            return i;
        }
        i += k;
    }
    return n;
}

/* A JSON number that is an exact integer in [0, 2^53). */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0 && d < EXACT_INT_LIMIT) || d != floor(d)) return 0;
    *out = (uint64_t)d;
    return 1;
}

/* ---- the reader ----------------------------------------------------------------------------- */

/* qsort has no context argument, so the name sort finds the tensor array through this pointer;
 * thread-local because two threads may open files at once. */
static _Thread_local const dinoc_safetensors *g_sort_st;

static int cmp_offsets(const void *a, const void *b) {
    const dinoc_tensor *x = a, *y = b;
    /* data pointers point into one buffer, so comparing them orders by begin offset */
    uintptr_t xa = (uintptr_t)x->data, ya = (uintptr_t)y->data;
    if (xa != ya) return xa < ya ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_by_name(const void *a, const void *b) {
    const dinoc_tensor *t = g_sort_st->tensors;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

static void sort_by_name(dinoc_safetensors *st) {
    for (int i = 0; i < st->n; i++) st->by_name[i] = i;
    g_sort_st = st;
    qsort(st->by_name, (size_t)st->n, sizeof(int), cmp_by_name);
    g_sort_st = NULL;
}

void dinoc_safetensors_close(dinoc_safetensors *st) {
    if (!st) return;
    for (int i = 0; st->tensors && i < st->n; i++) free((char *)st->tensors[i].name);
    for (int i = 0; st->meta && i < 2 * st->n_meta; i++) free(st->meta[i]);
    free(st->tensors);
    free(st->by_name);
    free(st->meta);
    if (st->map) munmap(st->map, st->map_size);
    free(st->label);
    free(st);
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A string that appears twice among names[0..n) (sorted in place), or NULL: O(n log n), so a
 * hostile header with millions of keys costs seconds, not hours. */
static const char *first_duplicate(const char **names, int n) {
    qsort(names, (size_t)n, sizeof *names, cmp_str_ptr);
    for (int i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

/* Reads "__metadata__": an object of string -> string (null is accepted as "none", as serde's
 * Option does in the reference). */
static dinoc_status parse_metadata(dinoc_safetensors *st, const cJSON *m, const char *label) {
    if (cJSON_IsNull(m)) return DINOC_OK;
    if (!cJSON_IsObject(m))
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: __metadata__ is not an object", label);
    int k = cJSON_GetArraySize(m);
    st->meta = calloc((size_t)k * 2 + 1, sizeof(char *));
    if (!st->meta) return dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", label);
    for (const cJSON *e = m->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->valuestring)
            return dinoc_fail(DINOC_ERR_FORMAT, "%s: __metadata__ '%s' is not a string", label,
                              e->string);
        char *key = strdup(e->string), *val = strdup(e->valuestring);
        st->meta[2 * st->n_meta]     = key;
        st->meta[2 * st->n_meta + 1] = val;
        st->n_meta++;
        if (!key || !val) return dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", label);
    }
    const char **keys = malloc(((size_t)st->n_meta + 1) * sizeof *keys);
    if (!keys) return dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", label);
    for (int i = 0; i < st->n_meta; i++) keys[i] = st->meta[2 * i];
    const char  *dup = first_duplicate(keys, st->n_meta);
    dinoc_status s   = dup ? dinoc_fail(DINOC_ERR_FORMAT, "%s: __metadata__ key '%s' appears twice", label, dup)
                           : DINOC_OK;
    free(keys);
    return s;
}

/* Fills t from one header entry. data/data_len: the byte buffer after the header. */
static dinoc_status parse_entry(dinoc_tensor *t, const cJSON *e, const uint8_t *data,
                                uint64_t data_len, const char *label) {
    const char *name = t->name;
    if (!cJSON_IsObject(e))
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: tensor '%s': entry is not an object", label, name);
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
    for (const cJSON *f = e->child; f; f = f->next) {
        const cJSON **slot = strcmp(f->string, "dtype") == 0          ? &dtype
                             : strcmp(f->string, "shape") == 0        ? &shape
                             : strcmp(f->string, "data_offsets") == 0 ? &offs
                                                                      : NULL;
        if (!slot) continue; /* unknown fields are ignored, as serde does in the reference */
        if (*slot)
            return dinoc_fail(DINOC_ERR_FORMAT, "%s: tensor '%s': field '%s' appears twice", label,
                              name, f->string);
        *slot = f;
    }
    if (!dtype || !shape || !offs)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: tensor '%s': missing field '%s'", label, name,
                          !dtype ? "dtype" : !shape ? "shape" : "data_offsets");

    if (!cJSON_IsString(dtype) || !dtype->valuestring)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: tensor '%s': dtype is not a string", label, name);
    int dt = -1;
    for (int i = 0; i < DINOC_DTYPE_COUNT; i++)
        if (strcmp(dtype->valuestring, k_dtypes[i].name) == 0) dt = i;
    if (dt < 0) {
        for (size_t i = 0; i < sizeof k_unsupported_dtypes / sizeof *k_unsupported_dtypes; i++)
            if (strcmp(dtype->valuestring, k_unsupported_dtypes[i]) == 0)
                return dinoc_fail(DINOC_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s is not supported",
                                  label, name, dtype->valuestring);
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%.32s'", label, name,
                          dtype->valuestring);
    }
    t->dtype = (dinoc_dtype)dt;

    if (!cJSON_IsArray(shape))
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: tensor '%s': shape is not an array", label, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > DINOC_MAX_DIMS)
        return dinoc_fail(DINOC_ERR_UNSUPPORTED, "%s: tensor '%s': %d dimensions, at most %d supported",
                          label, name, ndim, DINOC_MAX_DIMS);
    t->ndim        = 0;
    uint64_t numel = 1; /* checked product: stays below 2^64 */
    for (const cJSON *d = shape->child; d; d = d->next) {
        uint64_t v;
        if (!json_uint(d, &v))
            return dinoc_fail(DINOC_ERR_FORMAT,
                              "%s: tensor '%s': shape[%d] is not a non-negative integer below 2^53",
                              label, name, t->ndim);
        t->shape[t->ndim++] = (int64_t)v;
        if (v != 0 && numel > UINT64_MAX / v)
            return dinoc_fail(DINOC_ERR_FORMAT, "%s: tensor '%s': shape product overflows", label,
                              name);
        numel *= v;
    }

    uint64_t b, en;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_uint(offs->child, &b) ||
        !json_uint(offs->child->next, &en))
        return dinoc_fail(DINOC_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets is not [begin, end] of non-negative integers",
                          label, name);
    if (en < b)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu,%llu] end before begin",
                          label, name, (unsigned long long)b, (unsigned long long)en);
    if (en > data_len)
        return dinoc_fail(DINOC_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets [%llu,%llu] past the end of the %llu-byte data buffer",
                          label, name, (unsigned long long)b, (unsigned long long)en,
                          (unsigned long long)data_len);
    size_t sz = k_dtypes[dt].size;
    if (numel > UINT64_MAX / sz)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: tensor '%s': byte size overflows", label, name);
    if (numel * sz != en - b) {
        char sh[DINOC_MAX_DIMS * 21 + 3];
        int  k = snprintf(sh, sizeof sh, "[");
        for (int i = 0; i < t->ndim; i++)
            k += snprintf(sh + k, sizeof sh - (size_t)k, "%s%lld", i ? "," : "", (long long)t->shape[i]);
        snprintf(sh + k, sizeof sh - (size_t)k, "]");
        return dinoc_fail(DINOC_ERR_FORMAT,
                          "%s: tensor '%s': dtype %s x shape %s = %llu bytes but data_offsets span %llu",
                          label, name, k_dtypes[dt].name, sh, (unsigned long long)(numel * sz),
                          (unsigned long long)(en - b));
    }
    t->nbytes = (size_t)(en - b); /* <= data_len, which fits size_t */
    t->data   = data + b;
    return DINOC_OK;
}

/* Validates buf[0..size) and fills st. */
static dinoc_status parse(dinoc_safetensors *st, const uint8_t *buf, size_t size) {
    const char *label = st->label;
    if (size < 8)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: %zu bytes, too short for the 8-byte header length",
                          label, size);
    uint64_t hlen = le64(buf);
    if (hlen > HEADER_MAX)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: header length %llu is over the limit of %llu bytes",
                          label, (unsigned long long)hlen, HEADER_MAX);
    if (hlen > size - 8)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)",
                          label, (unsigned long long)hlen, size);
    const uint8_t *hdr = buf + 8;
    if (hlen == 0 || hdr[0] != '{')
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: header does not start with '{'", label);
    const char *why = NULL;
    size_t      bad = header_scan(hdr, (size_t)hlen, &why);
    if (bad != hlen)
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: header: %s at byte %zu", label, why, 8 + bad);

    /* cJSON gets a NUL-terminated copy: some cJSON versions read past the given length on
     * malformed input, and a NUL stops every such scan. */
    char *text = malloc((size_t)hlen + 1);
    if (!text) return dinoc_fail(DINOC_ERR_NOMEM, "%s: cannot allocate the header", label);
    memcpy(text, hdr, (size_t)hlen);
    text[hlen] = 0;
    const char  *end  = NULL;
    cJSON       *root = cJSON_ParseWithLengthOpts(text, (size_t)hlen, &end, 0);
    dinoc_status s    = DINOC_OK;
    if (!root) {
        size_t at = end && end >= text && end <= text + hlen ? (size_t)(end - text) : 0;
        s = dinoc_fail(DINOC_ERR_FORMAT, "%s: header is not valid JSON (near byte %zu)", label, 8 + at);
        goto done;
    }
    /* Only whitespace (the writer's space padding) may follow the object. */
    for (const char *p = end; p < text + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: header has trailing characters at byte %zu", label,
                           8 + (size_t)(p - text));
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        s = dinoc_fail(DINOC_ERR_FORMAT, "%s: header is not a JSON object", label);
        goto done;
    }

    const uint8_t *data     = hdr + hlen;
    uint64_t       data_len = size - 8 - hlen;
    const cJSON   *meta     = NULL;
    int            n        = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (meta) {
                s = dinoc_fail(DINOC_ERR_FORMAT, "%s: __metadata__ appears twice", label);
                goto done;
            }
            meta = e;
        } else {
            n++;
        }
    }
    if (meta && (s = parse_metadata(st, meta, label))) goto done;

    st->tensors = calloc((size_t)n + 1, sizeof(dinoc_tensor));
    st->by_name = calloc((size_t)n + 1, sizeof(int));
    if (!st->tensors || !st->by_name) {
        s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory for %d tensors", label, n);
        goto done;
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        if (e == meta) continue;
        if (!e->string[0]) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: a tensor has an empty name", label);
            goto done;
        }
        if (!utf8_valid(e->string)) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: tensor name is not valid UTF-8", label);
            goto done;
        }
        dinoc_tensor *t = &st->tensors[st->n];
        if (!(t->name = strdup(e->string))) {
            s = dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", label);
            goto done;
        }
        st->n++;
        if ((s = parse_entry(t, e, data, data_len, label))) goto done;
    }

    /* Duplicate names (cJSON keeps both items of a repeated key). */
    sort_by_name(st);
    for (int i = 1; i < n; i++) {
        const char *a = st->tensors[st->by_name[i - 1]].name, *b = st->tensors[st->by_name[i]].name;
        if (strcmp(a, b) == 0) {
            s = dinoc_fail(DINOC_ERR_FORMAT, "%s: tensor '%s' appears twice", label, a);
            goto done;
        }
    }

    /* The tensors must tile [0, data_len) exactly once each. */
    qsort(st->tensors, (size_t)n, sizeof(dinoc_tensor), cmp_offsets);
    uint64_t pos = 0;
    for (int i = 0; i < n; i++) {
        const dinoc_tensor *t = &st->tensors[i];
        uint64_t b = (uint64_t)((const uint8_t *)t->data - data), en = b + t->nbytes;
        if (b != pos) {
            if (b < pos)
                s = dinoc_fail(DINOC_ERR_FORMAT,
                               "%s: tensor '%s': data_offsets [%llu,%llu] overlap tensor '%s' ending at %llu",
                               label, t->name, (unsigned long long)b, (unsigned long long)en,
                               st->tensors[i - 1].name, (unsigned long long)pos);
            else
                s = dinoc_fail(DINOC_ERR_FORMAT,
                               "%s: tensor '%s': hole of %llu bytes before data_offsets [%llu,%llu]",
                               label, t->name, (unsigned long long)(b - pos), (unsigned long long)b,
                               (unsigned long long)en);
            goto done;
        }
        pos = en;
    }
    if (pos != data_len) {
        s = dinoc_fail(DINOC_ERR_FORMAT,
                       "%s: tensors end at byte %llu of a %llu-byte data buffer (trailing unused bytes)",
                       label, (unsigned long long)pos, (unsigned long long)data_len);
        goto done;
    }
    sort_by_name(st); /* the offset sort moved the tensors */
done:
    cJSON_Delete(root);
    free(text);
    return s;
}

static dinoc_safetensors *alloc_handle(const char *label) {
    dinoc_safetensors *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    if (!(st->label = strdup(label))) {
        free(st);
        return NULL;
    }
    return st;
}

dinoc_status dinoc_safetensors_open_memory(dinoc_safetensors **out, const void *buf, size_t size,
                                           const char *label) {
    *out = NULL;
    if (!label) label = "<memory>";
    if (!buf && size) return dinoc_fail(DINOC_ERR_ARG, "%s: NULL buffer", label);
    dinoc_safetensors *st = alloc_handle(label);
    if (!st) return dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", label);
    dinoc_status s = parse(st, buf, size);
    if (s) {
        dinoc_safetensors_close(st);
        return s;
    }
    *out = st;
    return DINOC_OK;
}

dinoc_status dinoc_safetensors_open(dinoc_safetensors **out, const char *path) {
    *out   = NULL;
    /* O_NONBLOCK: opening a FIFO must not block before fstat can reject it */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return dinoc_fail(DINOC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return dinoc_fail(DINOC_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return dinoc_fail(DINOC_ERR_FORMAT, "%s: %lld bytes, too short for the 8-byte header length",
                          path, (long long)sb.st_size);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return dinoc_fail(DINOC_ERR_UNSUPPORTED, "%s: too large to map", path);
    }
    size_t size = (size_t)sb.st_size;
    void  *map  = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int    err  = errno;
    close(fd); /* the mapping keeps the file */
    if (map == MAP_FAILED) return dinoc_fail(DINOC_ERR_IO, "%s: mmap failed: %s", path, strerror(err));
    dinoc_safetensors *st = alloc_handle(path);
    if (!st) {
        munmap(map, size);
        return dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", path);
    }
    st->map      = map;
    st->map_size = size;
    dinoc_status s = parse(st, map, size);
    if (s) {
        dinoc_safetensors_close(st);
        return s;
    }
    *out = st;
    return DINOC_OK;
}

int dinoc_safetensors_count(const dinoc_safetensors *st) { return st ? st->n : 0; }

const dinoc_tensor *dinoc_safetensors_get(const dinoc_safetensors *st, int i) {
    return st && i >= 0 && i < st->n ? &st->tensors[i] : NULL;
}

const dinoc_tensor *dinoc_safetensors_find(const dinoc_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    int lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const dinoc_tensor *t = &st->tensors[st->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

const char *dinoc_safetensors_metadata(const dinoc_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[2 * i], key) == 0) return st->meta[2 * i + 1];
    return NULL;
}

/* ---- the writer ----------------------------------------------------------------------------- */

typedef struct {
    char  *p;
    size_t len, cap;
    int    oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p   = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* A JSON string literal: quotes, backslashes and control bytes escaped; UTF-8 passes through. */
static void sb_json(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\', esc[1] = (char)*p;
            sb_put(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}


/* Checks names (non-empty, UTF-8, not "__metadata__", unique), dtypes and byte sizes. */
static dinoc_status validate_for_write(const char *path, const dinoc_tensor *ts, int n,
                                       const char *const *metadata) {
    for (int i = 0; i < n; i++) {
        const dinoc_tensor *t = &ts[i];
        if (!t->name || !t->name[0] || !utf8_valid(t->name) || strcmp(t->name, "__metadata__") == 0)
            return dinoc_fail(DINOC_ERR_ARG, "%s: tensor %d: invalid name '%s'", path, i,
                              t->name ? t->name : "(null)");
        if ((unsigned)t->dtype >= DINOC_DTYPE_COUNT)
            return dinoc_fail(DINOC_ERR_ARG, "%s: tensor '%s': invalid dtype %d", path, t->name,
                              (int)t->dtype);
        int64_t numel = dinoc_tensor_numel(t);
        size_t  need;
        if (numel < 0 || !dinoc_mul_size((size_t)numel, k_dtypes[t->dtype].size, &need))
            return dinoc_fail(DINOC_ERR_ARG, "%s: tensor '%s': invalid shape", path, t->name);
        if (need != t->nbytes)
            return dinoc_fail(DINOC_ERR_ARG, "%s: tensor '%s': nbytes %zu, dtype x shape gives %zu",
                              path, t->name, t->nbytes, need);
        if (need && !t->data)
            return dinoc_fail(DINOC_ERR_ARG, "%s: tensor '%s': NULL data", path, t->name);
    }
    const char **names = malloc(((size_t)n + 1) * sizeof *names);
    if (!names) return dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < n; i++) names[i] = ts[i].name;
    const char *dup = first_duplicate(names, n);
    if (dup) {
        dinoc_status s = dinoc_fail(DINOC_ERR_ARG, "%s: tensor '%s' appears twice", path, dup);
        free(names);
        return s;
    }
    free(names);
    for (int i = 0; metadata && metadata[i]; i += 2) {
        if (!metadata[i + 1])
            return dinoc_fail(DINOC_ERR_ARG, "%s: metadata key '%s' has no value", path, metadata[i]);
        if (!utf8_valid(metadata[i]) || !utf8_valid(metadata[i + 1]))
            return dinoc_fail(DINOC_ERR_ARG, "%s: metadata '%s' is not valid UTF-8", path, metadata[i]);
        for (int j = 0; j < i; j += 2)
            if (strcmp(metadata[j], metadata[i]) == 0)
                return dinoc_fail(DINOC_ERR_ARG, "%s: metadata key '%s' appears twice", path,
                                  metadata[i]);
    }
    return DINOC_OK;
}

dinoc_status dinoc_safetensors_write(const char *path, const dinoc_tensor *tensors, int n,
                                     const char *const *metadata) {
    if (n < 0 || (n && !tensors)) return dinoc_fail(DINOC_ERR_ARG, "%s: invalid tensor list", path);
    dinoc_status s = validate_for_write(path, tensors, n, metadata);
    if (s) return s;

    /* Header: tensors in the given order, laid out back to back. */
    sbuf     h   = {0};
    uint64_t off = 0;
    char     num[64];
    sb_str(&h, "{");
    if (metadata && metadata[0]) {
        sb_str(&h, "\"__metadata__\":{");
        for (int i = 0; metadata[i]; i += 2) {
            if (i) sb_str(&h, ",");
            sb_json(&h, metadata[i]);
            sb_str(&h, ":");
            sb_json(&h, metadata[i + 1]);
        }
        sb_str(&h, "}");
    }
    for (int i = 0; i < n; i++) {
        const dinoc_tensor *t = &tensors[i];
        if (i || (metadata && metadata[0])) sb_str(&h, ",");
        sb_json(&h, t->name);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, k_dtypes[t->dtype].name);
        sb_str(&h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            sb_str(&h, num);
        }
        if (off > UINT64_MAX - t->nbytes) {
            free(h.p);
            return dinoc_fail(DINOC_ERR_ARG, "%s: total size overflows", path);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + t->nbytes));
        sb_str(&h, num);
        off += t->nbytes;
    }
    sb_str(&h, "}");
    while (h.len % 8) sb_str(&h, " "); /* readers may then align the data buffer to 8 bytes */
    if (h.oom) {
        free(h.p);
        return dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory for the header", path);
    }
    if (h.len > HEADER_MAX) {
        free(h.p);
        return dinoc_fail(DINOC_ERR_ARG, "%s: header of %zu bytes is over the format's limit", path,
                          h.len);
    }

    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    dinoc_atomic_file af;
    if ((s = dinoc_atomic_open(&af, path))) {
        free(h.p);
        return s;
    }
    s = dinoc_atomic_write(&af, lenbuf, 8);
    if (!s) s = dinoc_atomic_write(&af, h.p, h.len);
    for (int i = 0; i < n && !s; i++) s = dinoc_atomic_write(&af, tensors[i].data, tensors[i].nbytes);
    free(h.p);
    if (s) {
        dinoc_atomic_abort(&af);
        return s;
    }
    return dinoc_atomic_commit(&af);
}
