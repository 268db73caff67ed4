/* test_safetensors.c: the safetensors reader and writer (src/io/safetensors.c), sharded weight
 * sets (src/io/weights.c) and dinoc_json_load (src/io/json.c).
 *
 * - round trips through a file and through memory: every dtype of interest, a scalar, a zero-size
 *   tensor, metadata with characters that need escaping, an F32 tensor at an unaligned offset;
 * - F16 / BF16 / F64 to float32 against known bit patterns (subnormals, infinities, NaN);
 * - a table of malformed files, each expecting one status and a message substring;
 * - writer failures (unwritable path, invalid input) leave an existing file untouched;
 * - sharded checkpoints opened by folder and by index path, and hostile index files.
 * Scratch files live under dinoc_test_tmpdir() with an "st_" prefix. */
#include "check.h"
#include "../src/internal.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char *tmp_path(const char *name) { return dinoc_path_join(dinoc_test_tmpdir(), name); }

/* A file image: 8-byte little-endian header length, the header text, data_len bytes of data. */
static uint8_t *make_image(const char *header, size_t data_len, size_t *size) {
    size_t   h   = strlen(header);
    uint8_t *buf = calloc(1, 8 + h + data_len + 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    *size = 8 + h + data_len;
    return buf;
}

static int file_equals(const char *path, const void *want, size_t n) {
    char  *buf = NULL;
    size_t len = 0;
    if (dinoc_read_file(path, 1 << 20, &buf, &len) != DINOC_OK) return 0;
    int ok = len == n && memcmp(buf, want, n) == 0;
    free(buf);
    return ok;
}

/* ---- round trips -------------------------------------------------------------------------- */

static const uint8_t  k_u8[3]     = {1, 2, 250};
static const float    k_f32[6]    = {1.5f, -2.25f, 3e-39f /* subnormal */, 1e30f, -0.0f, 7.0f};
static const uint16_t k_f16[4]    = {0x3c00, 0xc000, 0x0001, 0x7bff}; /* 1, -2, 2^-24, 65504 */
static const uint16_t k_bf16[2]   = {0x3f80, 0xc040};                 /* 1, -3 */
static const double   k_f64[2]    = {0.1, -1e300};
static const int64_t  k_i64[1]    = {-5};
static const uint8_t  k_bool[2]   = {0, 1};
static const float    k_scalar[1] = {42.0f};

/* The tensors in file order. U8 of odd length first so that every later tensor sits at an
 * offset that is not a multiple of 4. The zero-size tensor goes before a non-empty one: at equal
 * offsets the reader orders the empty tensor first, so the file order is preserved. */
static int make_tensors(dinoc_tensor *t) {
    int n = 0;
    t[n++] = (dinoc_tensor){.name = "u8", .dtype = DINOC_DTYPE_U8, .ndim = 1, .shape = {3}, .nbytes = 3, .data = k_u8};
    t[n++] = (dinoc_tensor){.name = "blocks.0.w", .dtype = DINOC_DTYPE_F32, .ndim = 2, .shape = {2, 3}, .nbytes = 24, .data = k_f32};
    t[n++] = (dinoc_tensor){.name = "empty", .dtype = DINOC_DTYPE_F32, .ndim = 2, .shape = {0, 5}, .nbytes = 0, .data = NULL};
    t[n++] = (dinoc_tensor){.name = "half", .dtype = DINOC_DTYPE_F16, .ndim = 1, .shape = {4}, .nbytes = 8, .data = k_f16};
    t[n++] = (dinoc_tensor){.name = "bf", .dtype = DINOC_DTYPE_BF16, .ndim = 3, .shape = {1, 2, 1}, .nbytes = 4, .data = k_bf16};
    t[n++] = (dinoc_tensor){.name = "dbl", .dtype = DINOC_DTYPE_F64, .ndim = 1, .shape = {2}, .nbytes = 16, .data = k_f64};
    t[n++] = (dinoc_tensor){.name = "idx", .dtype = DINOC_DTYPE_I64, .ndim = 1, .shape = {1}, .nbytes = 8, .data = k_i64};
    t[n++] = (dinoc_tensor){.name = "mask \"q\"\\ \xc3\xa9", .dtype = DINOC_DTYPE_BOOL, .ndim = 1, .shape = {2}, .nbytes = 2, .data = k_bool};
    t[n++] = (dinoc_tensor){.name = "scalar", .dtype = DINOC_DTYPE_F32, .ndim = 0, .nbytes = 4, .data = k_scalar};
    return n;
}

static void check_roundtrip(const dinoc_safetensors *st, const dinoc_tensor *want, int n) {
    CHECK(dinoc_safetensors_count(st) == n);
    for (int i = 0; i < n; i++) {
        const dinoc_tensor *g = dinoc_safetensors_get(st, i);
        CHECK_MSG(g && strcmp(g->name, want[i].name) == 0, "tensor %d: '%s' want '%s'", i,
                  g ? g->name : "(null)", want[i].name);
        if (!g) continue;
        CHECK(g == dinoc_safetensors_find(st, want[i].name));
        CHECK(g->dtype == want[i].dtype && g->ndim == want[i].ndim && g->nbytes == want[i].nbytes);
        for (int d = 0; d < g->ndim; d++) CHECK(g->shape[d] == want[i].shape[d]);
        CHECK(g->nbytes == 0 || memcmp(g->data, want[i].data, g->nbytes) == 0);
        CHECK(dinoc_tensor_numel(g) == dinoc_tensor_numel(&want[i]));
    }
    CHECK(dinoc_safetensors_get(st, n) == NULL && dinoc_safetensors_get(st, -1) == NULL);
    CHECK(dinoc_safetensors_find(st, "nope") == NULL);
    CHECK(strcmp(dinoc_safetensors_metadata(st, "format"), "pt") == 0);
    CHECK(strcmp(dinoc_safetensors_metadata(st, "note"), "a \"b\" \\ c\nd") == 0);
    CHECK(dinoc_safetensors_metadata(st, "missing") == NULL);

    /* The F32 tensor really is unaligned, and converts exactly through byte loads. */
    const dinoc_tensor *w = dinoc_safetensors_find(st, "blocks.0.w");
    CHECK(w && (uintptr_t)w->data % 4 != 0);
    float f[6];
    CHECK_OK(dinoc_tensor_to_f32(w, f, 6));
    CHECK(memcmp(f, k_f32, sizeof f) == 0);
    const dinoc_tensor *s = dinoc_safetensors_find(st, "scalar");
    CHECK(s && s->ndim == 0 && dinoc_tensor_numel(s) == 1);
    CHECK_OK(dinoc_tensor_to_f32(s, f, 1));
    CHECK(f[0] == 42.0f);
    const dinoc_tensor *e = dinoc_safetensors_find(st, "empty");
    CHECK(e && dinoc_tensor_numel(e) == 0);
    CHECK_OK(dinoc_tensor_to_f32(e, f, 0));
}

DINOC_TEST(safetensors_roundtrip) {
    dinoc_tensor t[16];
    int          n    = make_tensors(t);
    const char  *meta[] = {"format", "pt", "note", "a \"b\" \\ c\nd", NULL};
    char        *p    = tmp_path("st_roundtrip.safetensors");
    CHECK_OK(dinoc_safetensors_write(p, t, n, meta));

    /* header length is a multiple of 8 (writers pad with spaces) */
    char  *buf = NULL;
    size_t len = 0;
    CHECK_OK(dinoc_read_file(p, 1 << 20, &buf, &len));
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)(uint8_t)buf[i] << (8 * i);
    CHECK(hlen % 8 == 0 && 8 + hlen + 3 + 24 + 8 + 4 + 16 + 8 + 2 + 4 == len);
    CHECK(buf[8] == '{' && buf[8 + hlen - 1] == ' ');

    dinoc_safetensors *st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, p));
    if (st) check_roundtrip(st, t, n);
    dinoc_safetensors_close(st);

    /* the same bytes from memory */
    st = NULL;
    CHECK_OK(dinoc_safetensors_open_memory(&st, buf, len, "mem"));
    if (st) check_roundtrip(st, t, n);
    dinoc_safetensors_close(st);
    free(buf);
    free(p);
}

DINOC_TEST(safetensors_empty_and_padding) {
    /* no tensors at all, padded header with no metadata */
    size_t             n;
    uint8_t           *img = make_image("{}      ", 0, &n);
    dinoc_safetensors *st  = NULL;
    CHECK_OK(dinoc_safetensors_open_memory(&st, img, n, "empty"));
    CHECK(st && dinoc_safetensors_count(st) == 0 && dinoc_safetensors_find(st, "x") == NULL);
    dinoc_safetensors_close(st);
    free(img);
    /* writer with no tensors and no metadata */
    char *p = tmp_path("st_none.safetensors");
    CHECK_OK(dinoc_safetensors_write(p, NULL, 0, NULL));
    st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, p));
    CHECK(st && dinoc_safetensors_count(st) == 0);
    dinoc_safetensors_close(st);
    free(p);
    /* tensors written in an order other than by name, metadata null, unknown fields ignored */
    img = make_image("{\"__metadata__\":null,\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2],"
                     "\"extra\":1},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}}",
                     3, &n);
    st = NULL;
    CHECK_OK(dinoc_safetensors_open_memory(&st, img, n, "order"));
    CHECK(st && strcmp(dinoc_safetensors_get(st, 0)->name, "b") == 0);
    CHECK(st && dinoc_safetensors_find(st, "a") == dinoc_safetensors_get(st, 1));
    dinoc_safetensors_close(st);
    free(img);
}

/* ---- conversion --------------------------------------------------------------------------- */

static int same_float(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return a == b && signbit(a) == signbit(b);
}

DINOC_TEST(safetensors_f16_bf16_f64_conversion) {
    static const struct {
        uint16_t h;
        float    f;
    } f16[] = {
        {0x3c00, 1.0f},        {0xc000, -2.0f},        {0x7bff, 65504.0f},
        {0x0001, 0x1p-24f},    {0x03ff, 1023 * 0x1p-24f}, {0x8001, -0x1p-24f},
        {0x0400, 0x1p-14f},    {0x3555, 0.333251953125f}, {0x0000, 0.0f},
        {0x8000, -0.0f},       {0x7c00, INFINITY},     {0xfc00, -INFINITY},
        {0x7e00, NAN},
    };
    enum { N16 = sizeof f16 / sizeof f16[0] };
    uint8_t raw[N16 * 2 + 1];
    float   out[N16];
    for (int i = 0; i < N16; i++) {
        raw[1 + 2 * i] = (uint8_t)f16[i].h; /* +1: unaligned on purpose */
        raw[2 + 2 * i] = (uint8_t)(f16[i].h >> 8);
    }
    dinoc_tensor t = {.name = "h", .dtype = DINOC_DTYPE_F16, .ndim = 1, .shape = {N16}, .nbytes = N16 * 2, .data = raw + 1};
    CHECK_OK(dinoc_tensor_to_f32(&t, out, N16));
    for (int i = 0; i < N16; i++)
        CHECK_MSG(same_float(out[i], f16[i].f), "f16 %04x -> %g, want %g", f16[i].h, out[i], f16[i].f);

    static const struct {
        uint16_t h;
        float    f;
    } bf[] = {{0x3f80, 1.0f}, {0xc040, -3.0f}, {0x7f80, INFINITY}, {0xff80, -INFINITY},
              {0x7fc0, NAN},  {0x0001, 0x1p-133f}, {0x8000, -0.0f}, {0x4049, 3.140625f}};
    enum { NB = sizeof bf / sizeof bf[0] };
    uint8_t rb[NB * 2];
    for (int i = 0; i < NB; i++) rb[2 * i] = (uint8_t)bf[i].h, rb[2 * i + 1] = (uint8_t)(bf[i].h >> 8);
    t = (dinoc_tensor){.name = "b", .dtype = DINOC_DTYPE_BF16, .ndim = 1, .shape = {NB}, .nbytes = sizeof rb, .data = rb};
    CHECK_OK(dinoc_tensor_to_f32(&t, out, NB));
    for (int i = 0; i < NB; i++)
        CHECK_MSG(same_float(out[i], bf[i].f), "bf16 %04x -> %g, want %g", bf[i].h, out[i], bf[i].f);

    /* F64: values beyond float range become infinities (IEEE rounding, no UB) */
    static const double d[] = {0.1, 1e300, -1e300, FLT_MAX, 0x1.ffffffp+127, 0x1.fffffefffffffp+127, 1e-50};
    static const float  w[] = {0.1f, INFINITY, -INFINITY, FLT_MAX, INFINITY, FLT_MAX, 0.0f};
    enum { ND = sizeof d / sizeof d[0] };
    t = (dinoc_tensor){.name = "d", .dtype = DINOC_DTYPE_F64, .ndim = 1, .shape = {ND}, .nbytes = sizeof d, .data = d};
    CHECK_OK(dinoc_tensor_to_f32(&t, out, ND));
    for (int i = 0; i < ND; i++) CHECK_MSG(same_float(out[i], w[i]), "f64 %d -> %g, want %g", i, out[i], w[i]);

    /* element count mismatch, non-float dtype */
    CHECK_ERR(dinoc_tensor_to_f32(&t, out, ND - 1), DINOC_ERR_SHAPE, "tensor 'd'");
    int32_t ints[2] = {1, 2};
    t = (dinoc_tensor){.name = "ids", .dtype = DINOC_DTYPE_I32, .ndim = 1, .shape = {2}, .nbytes = 8, .data = ints};
    CHECK_ERR(dinoc_tensor_to_f32(&t, out, 2), DINOC_ERR_UNSUPPORTED, "tensor 'ids': dtype I32");
    CHECK(strcmp(dinoc_dtype_name(DINOC_DTYPE_BF16), "BF16") == 0 && dinoc_dtype_size(DINOC_DTYPE_F64) == 8);
    CHECK(strcmp(dinoc_dtype_name(DINOC_DTYPE_F8_E5M2), "F8_E5M2") == 0 && dinoc_dtype_size(DINOC_DTYPE_BOOL) == 1);
}

/* ---- malformed files ---------------------------------------------------------------------- */

#define T4(name, off) "\"" name "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":" off "}"

static const struct {
    const char  *what;
    const char  *header;
    size_t       data_len;
    dinoc_status want;
    const char  *needle;
} k_bad[] = {
    {"not an object", "[1,2]", 0, DINOC_ERR_FORMAT, "does not start with '{'"},
    {"leading space", " {}", 0, DINOC_ERR_FORMAT, "does not start with '{'"},
    {"invalid JSON", "{\"a\":", 0, DINOC_ERR_FORMAT, "not valid JSON"},
    {"trailing text", "{} x", 0, DINOC_ERR_FORMAT, "trailing characters"},
    {"two objects", "{}{}", 0, DINOC_ERR_FORMAT, "trailing characters"},
    {"missing dtype", "{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, DINOC_ERR_FORMAT, "tensor 'x': missing field 'dtype'"},
    {"missing shape", "{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, DINOC_ERR_FORMAT, "tensor 'x': missing field 'shape'"},
    {"missing offsets", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, DINOC_ERR_FORMAT, "tensor 'x': missing field 'data_offsets'"},
    {"entry not object", "{\"x\":[1]}", 0, DINOC_ERR_FORMAT, "tensor 'x': entry is not an object"},
    {"dtype not string", "{\"x\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, DINOC_ERR_FORMAT, "dtype is not a string"},
    {"unknown dtype", "{\"x\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, DINOC_ERR_FORMAT, "tensor 'x': unknown dtype 'F33'"},
    {"unsupported dtype", "{\"x\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, DINOC_ERR_UNSUPPORTED, "dtype C64 is not supported"},
    {"field twice", "{\"x\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, DINOC_ERR_FORMAT, "field 'dtype' appears twice"},
    {"shape not array", "{\"x\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, DINOC_ERR_FORMAT, "shape is not an array"},
    {"negative dim", "{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, DINOC_ERR_FORMAT, "tensor 'x': shape[0] is not a non-negative integer"},
    {"fractional dim", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1.5],\"data_offsets\":[0,4]}}", 4, DINOC_ERR_FORMAT, "shape[1] is not a non-negative integer"},
    {"string dim", "{\"x\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, DINOC_ERR_FORMAT, "shape[0] is not"},
    {"dim 2^53", "{\"x\":{\"dtype\":\"F32\",\"shape\":[9007199254740992],\"data_offsets\":[0,4]}}", 4, DINOC_ERR_FORMAT, "below 2^53"},
    {"dim 1e400", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1e400],\"data_offsets\":[0,4]}}", 4, DINOC_ERR_FORMAT, "below 2^53"},
    {"too many dims", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, DINOC_ERR_UNSUPPORTED, "9 dimensions"},
    {"shape overflow", "{\"x\":{\"dtype\":\"U8\",\"shape\":[4503599627370496,4503599627370496],\"data_offsets\":[0,4]}}", 4, DINOC_ERR_FORMAT, "shape product overflows"},
    {"bytes overflow", "{\"x\":{\"dtype\":\"F64\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,4]}}", 4, DINOC_ERR_FORMAT, "byte size overflows"},
    {"size mismatch", "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,40]}}", 40, DINOC_ERR_FORMAT,
     "tensor 'x.weight': dtype F32 x shape [3,4] = 48 bytes but data_offsets span 40"},
    {"offsets one value", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", 4, DINOC_ERR_FORMAT, "data_offsets is not [begin, end]"},
    {"offsets negative", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, DINOC_ERR_FORMAT, "data_offsets is not [begin, end]"},
    {"offsets fractional", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.5]}}", 4, DINOC_ERR_FORMAT, "data_offsets is not [begin, end]"},
    {"offsets out of range", "{" T4("x", "[0,4]") "," T4("y", "[4,8]") "}", 4, DINOC_ERR_FORMAT, "tensor 'y': data_offsets [4,8] past the end"},
    {"end before begin", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, DINOC_ERR_FORMAT, "end before begin"},
    {"overlap", "{" T4("a", "[0,4]") ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}}", 10, DINOC_ERR_FORMAT, "tensor 'b': data_offsets [2,10] overlap tensor 'a'"},
    {"same offsets", "{" T4("a", "[0,4]") "," T4("b", "[0,4]") "}", 4, DINOC_ERR_FORMAT, "overlap"},
    {"hole", "{" T4("a", "[0,4]") "," T4("b", "[8,12]") "}", 12, DINOC_ERR_FORMAT, "tensor 'b': hole of 4 bytes"},
    {"hole at start", "{" T4("a", "[4,8]") "}", 8, DINOC_ERR_FORMAT, "tensor 'a': hole of 4 bytes"},
    {"trailing bytes", "{" T4("a", "[0,4]") "}", 8, DINOC_ERR_FORMAT, "tensors end at byte 4 of a 8-byte data buffer"},
    {"data but no tensors", "{}", 1, DINOC_ERR_FORMAT, "trailing unused bytes"},
    {"duplicate name", "{" T4("a", "[0,4]") "," T4("a", "[4,8]") "}", 8, DINOC_ERR_FORMAT, "tensor 'a' appears twice"},
    {"empty name", "{" T4("", "[0,4]") "}", 4, DINOC_ERR_FORMAT, "empty name"},
    {"non-UTF-8 name", "{" T4("a\xff", "[0,4]") "}", 4, DINOC_ERR_FORMAT, "invalid UTF-8"},
    {"overlong UTF-8", "{" T4("a\xc0\xaf", "[0,4]") "}", 4, DINOC_ERR_FORMAT, "invalid UTF-8"},
    {"surrogate UTF-8", "{" T4("a\xed\xa0\x80", "[0,4]") "}", 4, DINOC_ERR_FORMAT, "invalid UTF-8"},
    {"escaped NUL in name", "{" T4("a\\u0000b", "[0,4]") "}", 4, DINOC_ERR_FORMAT, "\\u0000"},
    {"control byte", "{\x01}", 0, DINOC_ERR_FORMAT, "control character"},
    {"metadata non-string", "{\"__metadata__\":{\"format\":1}}", 0, DINOC_ERR_FORMAT, "__metadata__ 'format' is not a string"},
    {"metadata not object", "{\"__metadata__\":[\"pt\"]}", 0, DINOC_ERR_FORMAT, "__metadata__ is not an object"},
    {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, DINOC_ERR_FORMAT, "__metadata__ appears twice"},
    {"metadata key twice", "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, DINOC_ERR_FORMAT, "key 'k' appears twice"},
};

DINOC_TEST(safetensors_malformed_headers) {
    for (size_t i = 0; i < sizeof k_bad / sizeof k_bad[0]; i++) {
        size_t             n;
        uint8_t           *img = make_image(k_bad[i].header, k_bad[i].data_len, &n);
        dinoc_safetensors *st  = NULL;
        dinoc_status       s   = dinoc_safetensors_open_memory(&st, img, n, "bad.safetensors");
        const char        *msg = dinoc_last_error();
        CHECK_MSG(s == k_bad[i].want && strstr(msg, k_bad[i].needle) && strstr(msg, "bad.safetensors"),
                  "%s: got %s '%s', want %s containing '%s'", k_bad[i].what, dinoc_status_str(s), msg,
                  dinoc_status_str(k_bad[i].want), k_bad[i].needle);
        CHECK(st == NULL);
        dinoc_safetensors_close(st);
        free(img);
    }
}

/* Header length field and file size problems (not expressible as a header string). */
DINOC_TEST(safetensors_malformed_lengths) {
    dinoc_safetensors *st = NULL;
    uint8_t            b[32];
    memset(b, 0, sizeof b);
    CHECK_ERR(dinoc_safetensors_open_memory(&st, b, 7, "short"), DINOC_ERR_FORMAT, "short: 7 bytes");
    CHECK_ERR(dinoc_safetensors_open_memory(&st, NULL, 0, "null"), DINOC_ERR_FORMAT, "0 bytes");
    /* 2^63 */
    b[7] = 0x80;
    b[8] = '{', b[9] = '}';
    CHECK_ERR(dinoc_safetensors_open_memory(&st, b, 10, "huge"), DINOC_ERR_FORMAT, "header length 9223372036854775808 is over the limit");
    /* 100,000,001 = 0x05F5E101 */
    memset(b, 0, 8);
    b[0] = 0x01, b[1] = 0xe1, b[2] = 0xf5, b[3] = 0x05;
    CHECK_ERR(dinoc_safetensors_open_memory(&st, b, 10, "big"), DINOC_ERR_FORMAT, "header length 100000001 is over the limit");
    /* within the limit but beyond the file */
    memset(b, 0, 8);
    b[0] = 3;
    CHECK_ERR(dinoc_safetensors_open_memory(&st, b, 10, "past"), DINOC_ERR_FORMAT, "header length 3 runs past the end");
    /* zero header length */
    memset(b, 0, 8);
    CHECK_ERR(dinoc_safetensors_open_memory(&st, b, 8, "zero"), DINOC_ERR_FORMAT, "does not start with '{'");
    /* a very deep header must fail cleanly (cJSON's nesting limit), not overflow the stack */
    size_t deep = 5000;
    char  *h    = malloc(deep * 2 + 16);
    strcpy(h, "{\"a\":");
    size_t k = 5;
    for (size_t i = 0; i < deep; i++) h[k++] = '[';
    for (size_t i = 0; i < deep; i++) h[k++] = ']';
    h[k++] = '}', h[k] = 0;
    size_t   n;
    uint8_t *img = make_image(h, 0, &n);
    CHECK_ERR(dinoc_safetensors_open_memory(&st, img, n, "deep"), DINOC_ERR_FORMAT, "not valid JSON");
    free(img);
    free(h);
    CHECK(st == NULL);

    /* through the file API: a 5-byte file, a folder, a missing file */
    char *p = tmp_path("st_short.safetensors");
    CHECK_OK(dinoc_write_file_atomic(p, "12345", 5));
    CHECK_ERR(dinoc_safetensors_open(&st, p), DINOC_ERR_FORMAT, "st_short.safetensors: 5 bytes");
    free(p);
    CHECK_ERR(dinoc_safetensors_open(&st, dinoc_test_tmpdir()), DINOC_ERR_IO, "not a regular file");
    CHECK_ERR(dinoc_safetensors_open(&st, "/nonexistent-dir/x.safetensors"), DINOC_ERR_IO, "x.safetensors: cannot open");
    CHECK(st == NULL);
}

/* ---- writer failures ---------------------------------------------------------------------- */

DINOC_TEST(safetensors_write_failures) {
    float        x[4] = {1, 2, 3, 4};
    dinoc_tensor t[2] = {
        {.name = "a", .dtype = DINOC_DTYPE_F32, .ndim = 1, .shape = {4}, .nbytes = 16, .data = x},
        {.name = "b", .dtype = DINOC_DTYPE_F32, .ndim = 2, .shape = {2, 2}, .nbytes = 16, .data = x},
    };
    CHECK_ERR(dinoc_safetensors_write("/nonexistent-dir/x.safetensors", t, 2, NULL), DINOC_ERR_IO,
              "/nonexistent-dir/x.safetensors");

    char *p = tmp_path("st_keep.safetensors");
    CHECK_OK(dinoc_write_file_atomic(p, "old contents", 12));
    t[1].name = "a";
    CHECK_ERR(dinoc_safetensors_write(p, t, 2, NULL), DINOC_ERR_ARG, "tensor 'a' appears twice");
    t[1].name   = "b";
    t[1].nbytes = 12;
    CHECK_ERR(dinoc_safetensors_write(p, t, 2, NULL), DINOC_ERR_ARG, "tensor 'b': nbytes 12");
    t[1].nbytes = 16;
    t[1].dtype  = DINOC_DTYPE_COUNT;
    CHECK_ERR(dinoc_safetensors_write(p, t, 2, NULL), DINOC_ERR_ARG, "invalid dtype");
    t[1].dtype = DINOC_DTYPE_F32;
    t[1].name  = "";
    CHECK_ERR(dinoc_safetensors_write(p, t, 2, NULL), DINOC_ERR_ARG, "invalid name");
    t[1].name = "__metadata__";
    CHECK_ERR(dinoc_safetensors_write(p, t, 2, NULL), DINOC_ERR_ARG, "invalid name");
    t[1].name = "b";
    t[1].shape[0] = -2;
    CHECK_ERR(dinoc_safetensors_write(p, t, 2, NULL), DINOC_ERR_ARG, "invalid shape");
    t[1].shape[0] = 2;
    const char *dup_meta[] = {"k", "1", "k", "2", NULL};
    CHECK_ERR(dinoc_safetensors_write(p, t, 2, dup_meta), DINOC_ERR_ARG, "metadata key 'k' appears twice");
    const char *odd_meta[] = {"k", NULL};
    CHECK_ERR(dinoc_safetensors_write(p, t, 2, odd_meta), DINOC_ERR_ARG, "has no value");
    CHECK(file_equals(p, "old contents", 12));

    /* and a valid write does replace it */
    CHECK_OK(dinoc_safetensors_write(p, t, 2, NULL));
    dinoc_safetensors *st = NULL;
    CHECK_OK(dinoc_safetensors_open(&st, p));
    CHECK(st && dinoc_safetensors_count(st) == 2 && dinoc_safetensors_metadata(st, "format") == NULL);
    dinoc_safetensors_close(st);
    free(p);
}

/* ---- sharded weights ---------------------------------------------------------------------- */

static const float k_wa[2] = {1, 2}, k_wb[3] = {3, 4, 5}, k_wc[1] = {6};

static void write_shard(const char *dir, const char *file, const char *const *names,
                        const float *const *data, const int *len, int n) {
    dinoc_tensor t[4];
    for (int i = 0; i < n; i++)
        t[i] = (dinoc_tensor){.name = names[i], .dtype = DINOC_DTYPE_F32, .ndim = 1,
                              .shape = {len[i]}, .nbytes = (size_t)len[i] * 4, .data = data[i]};
    char *p = dinoc_path_join(dir, file);
    CHECK_OK(dinoc_safetensors_write(p, t, n, NULL));
    free(p);
}

static void write_text(const char *dir, const char *file, const char *text) {
    char *p = dinoc_path_join(dir, file);
    CHECK_OK(dinoc_write_file_atomic(p, text, strlen(text)));
    free(p);
}

#define S1 "model-00001-of-00002.safetensors"
#define S2 "model-00002-of-00002.safetensors"

/* A folder with two shards (a, b | c) and a correct index. */
static char *make_sharded_dir(const char *name) {
    char *dir = tmp_path(name);
    CHECK_OK(dinoc_mkdir(dir));
    /* a model.safetensors left by an earlier run would take precedence over the index */
    char *single = dinoc_path_join(dir, "model.safetensors");
    unlink(single);
    free(single);
    write_shard(dir, S1, (const char *[]){"a", "b"}, (const float *[]){k_wa, k_wb}, (int[]){2, 3}, 2);
    write_shard(dir, S2, (const char *[]){"c"}, (const float *[]){k_wc}, (int[]){1}, 1);
    write_text(dir, "model.safetensors.index.json",
               "{\"metadata\":{\"total_size\":24},\n \"weight_map\":{\"a\":\"" S1 "\",\"b\":\"" S1
               "\",\"c\":\"" S2 "\"}}");
    return dir;
}

static void check_sharded(const dinoc_weights *w) {
    CHECK(dinoc_weights_count(w) == 3);
    const char *names[3] = {"a", "b", "c"};
    const char *files[3] = {S1, S1, S2};
    for (int i = 0; i < 3; i++) {
        const dinoc_tensor *t = dinoc_weights_find(w, names[i]);
        CHECK_MSG(t != NULL, "tensor %s not found", names[i]);
        if (!t) continue;
        const char *f = dinoc_weights_file_of(w, t);
        CHECK(f && strstr(f, files[i]));
    }
    CHECK(dinoc_weights_find(w, "d") == NULL);
    CHECK(dinoc_weights_get(w, 3) == NULL && dinoc_weights_get(w, -1) == NULL);
    for (int i = 0; i < 3; i++) {
        const dinoc_tensor *t = dinoc_weights_get(w, i);
        CHECK(t && dinoc_weights_find(w, t->name) == t);
    }
    const dinoc_tensor *b = dinoc_weights_find(w, "b");
    float               f[3];
    if (b) {
        CHECK_OK(dinoc_tensor_to_f32(b, f, 3));
        CHECK(f[0] == 3 && f[2] == 5);
    }
}

DINOC_TEST(weights_sharded_open) {
    char          *dir = make_sharded_dir("st_sharded");
    dinoc_weights *w   = NULL;
    CHECK_OK(dinoc_weights_open(&w, dir));
    if (w) check_sharded(w);
    dinoc_weights_close(w);

    char *index = dinoc_path_join(dir, "model.safetensors.index.json");
    w           = NULL;
    CHECK_OK(dinoc_weights_open(&w, index));
    if (w) check_sharded(w);
    dinoc_weights_close(w);
    free(index);

    /* one shard file on its own */
    char *one = dinoc_path_join(dir, S2);
    w         = NULL;
    CHECK_OK(dinoc_weights_open(&w, one));
    CHECK(w && dinoc_weights_count(w) == 1 && dinoc_weights_find(w, "c"));
    CHECK(w && strcmp(dinoc_weights_file_of(w, dinoc_weights_find(w, "c")), one) == 0);
    dinoc_weights_close(w);
    free(one);

    /* a folder with both: the single file wins */
    write_shard(dir, "model.safetensors", (const char *[]){"single"}, (const float *[]){k_wc}, (int[]){1}, 1);
    w = NULL;
    CHECK_OK(dinoc_weights_open(&w, dir));
    CHECK(w && dinoc_weights_count(w) == 1 && dinoc_weights_find(w, "single"));
    dinoc_weights_close(w);
    free(dir);
}

DINOC_TEST(weights_hostile_index) {
    char *dir = make_sharded_dir("st_hostile");
    /* a third shard that repeats tensor "a" */
    write_shard(dir, "dup.safetensors", (const char *[]){"a"}, (const float *[]){k_wa}, (int[]){2}, 1);
    static const struct {
        const char  *json;
        dinoc_status want;
        const char  *needle;
    } cases[] = {
        {"{\"weight_map\":{\"a\":\"nope.safetensors\"}}", DINOC_ERR_IO, "nope.safetensors: cannot open"},
        {"{\"weight_map\":{\"a\":\"../x.safetensors\"}}", DINOC_ERR_FORMAT, "shard '../x.safetensors' is not a plain file name"},
        {"{\"weight_map\":{\"a\":\"/etc/passwd\"}}", DINOC_ERR_FORMAT, "not a plain file name"},
        {"{\"weight_map\":{\"a\":\"..\"}}", DINOC_ERR_FORMAT, "not a plain file name"},
        {"{\"weight_map\":{\"a\":\"\"}}", DINOC_ERR_FORMAT, "not a plain file name"},
        {"{\"weight_map\":{\"a\":\"" S1 "\",\"zzz\":\"" S1 "\"}}", DINOC_ERR_FORMAT, "tensor 'zzz' is not in its shard"},
        {"{\"weight_map\":{\"a\":\"" S2 "\",\"c\":\"" S2 "\"}}", DINOC_ERR_FORMAT, "tensor 'a' is not in its shard"},
        {"{\"weight_map\":{\"a\":\"" S1 "\",\"c\":\"" S1 "\",\"b\":\"" S2 "\"}}", DINOC_ERR_FORMAT, "the index says"},
        {"{\"weight_map\":{\"a\":\"" S1 "\",\"x\":\"dup.safetensors\"}}", DINOC_ERR_FORMAT, "tensor 'a' is in two shards"},
        {"{\"weight_map\":{\"a\":\"" S1 "\",\"a\":\"" S1 "\"}}", DINOC_ERR_FORMAT, "lists tensor 'a' twice"},
        {"{\"weight_map\":{\"a\":1}}", DINOC_ERR_FORMAT, "weight_map 'a' is not a file name"},
        {"{\"weight_map\":{}}", DINOC_ERR_FORMAT, "weight_map is empty"},
        {"{\"metadata\":{}}", DINOC_ERR_FORMAT, "no \"weight_map\" object"},
        {"[1]", DINOC_ERR_FORMAT, "no \"weight_map\" object"},
        {"{\"weight_map\":\n{\"a\": }}", DINOC_ERR_FORMAT, "invalid JSON near line 2 column 7"},
        {"{} trailing", DINOC_ERR_FORMAT, "invalid JSON near line 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_text(dir, "bad.index.json", cases[i].json);
        char          *p = dinoc_path_join(dir, "bad.index.json");
        dinoc_weights *w = NULL;
        dinoc_status   s = dinoc_weights_open(&w, p);
        CHECK_MSG(s == cases[i].want && strstr(dinoc_last_error(), cases[i].needle) &&
                      strstr(dinoc_last_error(), "bad.index.json"),
                  "index %zu: got %s '%s', want %s containing '%s'", i, dinoc_status_str(s),
                  dinoc_last_error(), dinoc_status_str(cases[i].want), cases[i].needle);
        CHECK(w == NULL);
        free(p);
    }
    free(dir);

    /* a folder with neither file */
    char *empty = tmp_path("st_empty_dir");
    CHECK_OK(dinoc_mkdir(empty));
    dinoc_weights *w = NULL;
    CHECK_ERR(dinoc_weights_open(&w, empty), DINOC_ERR_IO, "no model.safetensors");
    CHECK_ERR(dinoc_weights_open(&w, "/nonexistent-dir/model.safetensors"), DINOC_ERR_IO, "cannot open");
    free(empty);
}

DINOC_TEST(weights_json_load) {
    char *p = tmp_path("st_json.json");
    CHECK_OK(dinoc_write_file_atomic(p, "{\"a\": [1, 2]}\n", 14));
    cJSON *root = NULL;
    CHECK_OK(dinoc_json_load(&root, p));
    CHECK(root && cJSON_GetArraySize(cJSON_GetObjectItem(root, "a")) == 2);
    cJSON_Delete(root);
    CHECK_OK(dinoc_write_file_atomic(p, "{\n\n  \"a\": [1, 2,]\n}", 19));
    root = NULL;
    CHECK_ERR(dinoc_json_load(&root, p), DINOC_ERR_FORMAT, "st_json.json: invalid JSON near line 3");
    CHECK(root == NULL);
    CHECK_ERR(dinoc_json_load(&root, "/nonexistent-dir/c.json"), DINOC_ERR_IO, "c.json");
    free(p);
}
