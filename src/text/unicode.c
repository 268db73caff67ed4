/* unicode.c: UTF-8, character classes, str.lower() and html.unescape for the CLIP tokenizer
 * (contracts in unicode.h). The tables come from tools/gen_unicode.py; this file holds the rules
 * around them, each written to match CPython 3.11 + the `regex` module exactly.
 * Tested by tests/test_tokenizer.c against tests/py/gen_tokenizer.py. */
#include "unicode.h"

#include <stdlib.h>
#include <string.h>

/* bsearch comparators: a code point against a range, against a uint32_t (also the first field of
 * a {key, value} pair). */
static int cmp_range(const void *key, const void *elem) {
    uint32_t              cp = *(const uint32_t *)key;
    const dinoc_uc_range *r  = elem;
    return cp < r->first ? -1 : cp > r->last ? 1 : 0;
}

static int cmp_u32(const void *key, const void *elem) {
    uint32_t a = *(const uint32_t *)key, b = *(const uint32_t *)elem;
    return (a > b) - (a < b);
}

/* The range holding cp in a sorted, disjoint table, or NULL. */
static const dinoc_uc_range *range_find(const dinoc_uc_range *r, int n, uint32_t cp) {
    return bsearch(&cp, r, (size_t)n, sizeof *r, cmp_range);
}

static int in_sorted(const uint32_t *v, int n, uint32_t cp) {
    return bsearch(&cp, v, (size_t)n, sizeof *v, cmp_u32) != NULL;
}

dinoc_uc_class dinoc_uc_classify(uint32_t cp) {
    if (cp < 0x80) { /* ASCII fast path: most text */
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return DINOC_UC_LETTER;
        if (cp >= '0' && cp <= '9') return DINOC_UC_NUMBER;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return DINOC_UC_SPACE;
        return DINOC_UC_OTHER;
    }
    if (cp == 0x345) return DINOC_UC_SKIP;
    const dinoc_uc_range *r = range_find(dinoc_uc_class_ranges, dinoc_uc_class_nranges, cp);
    if (r) return (dinoc_uc_class)r->cls;
    if (in_sorted(dinoc_uc_regex_space, dinoc_uc_regex_nspace, cp)) return DINOC_UC_SPACE;
    return DINOC_UC_OTHER;
}

int dinoc_uc_py_isspace(uint32_t cp) {
    return in_sorted(dinoc_uc_py_space, dinoc_uc_py_nspace, cp);
}

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

int dinoc_utf8_decode(uint32_t *cps, size_t *n, const char *s, size_t len, size_t *bad) {
    const unsigned char *p = (const unsigned char *)s;
    size_t               i = 0, k = 0;
    while (i < len) {
        uint32_t c = p[i];
        int      extra;
        uint32_t min;
        if (c < 0x80) {
            cps[k++] = c, i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) extra = 1, min = 0x80, c &= 0x1F;
        else if (c >= 0xE0 && c <= 0xEF) extra = 2, min = 0x800, c &= 0x0F;
        else if (c >= 0xF0 && c <= 0xF4) extra = 3, min = 0x10000, c &= 0x07;
        else goto invalid; /* continuation byte, C0/C1 (overlong) or F5..FF */
        if (len - i <= (size_t)extra) goto invalid;
        for (int j = 1; j <= extra; j++) {
            if ((p[i + j] & 0xC0) != 0x80) goto invalid;
            c = (c << 6) | (p[i + j] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) goto invalid;
        cps[k++] = c;
        i += (size_t)extra + 1;
    }
    *n = k;
    return 0;
invalid:
    *n   = k;
    *bad = i;
    return -1;
}

int dinoc_utf8_encode(uint32_t cp, unsigned char *out) {
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

long dinoc_utf8_unit(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    if (c < 0x80) return 1;
    int      need;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return -1;
    for (int j = 1; j <= need; j++) {
        if ((size_t)j >= n) return -j;
        unsigned b = p[j];
        if (j == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) return -j;
    }
    return need + 1;
}

/* ---- byte symbols ---------------------------------------------------------------------------- */

static int printable_byte(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

void dinoc_uc_byte_symbols(uint32_t sym[256], int order[256]) {
    int k = 0, extra = 0;
    for (int b = 0; b < 256; b++)
        if (printable_byte(b)) sym[b] = (uint32_t)b, order[k++] = b;
    for (int b = 0; b < 256; b++)
        if (!printable_byte(b)) sym[b] = 256u + (uint32_t)extra++, order[k++] = b;
}

/* ---- str.lower() ---------------------------------------------------------------------------- */

static uint32_t lower_one(uint32_t cp) {
    if (cp < 0x80) return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
    const uint32_t *p = bsearch(&cp, dinoc_uc_lower_pairs, (size_t)dinoc_uc_lower_npairs,
                                sizeof dinoc_uc_lower_pairs[0], cmp_u32);
    return p ? p[1] : cp;
}

/* 1 cased, 2 case-ignorable, 0 neither (as the Final_Sigma scan sees a character). */
static int sigma_kind(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return 1;
        return cp == '\'' || cp == '.' || cp == ':' || cp == '^' || cp == '`' ? 2 : 0;
    }
    const dinoc_uc_range *r = range_find(dinoc_uc_sigma_ranges, dinoc_uc_sigma_nranges, cp);
    return r ? r->cls : 0;
}

/* CPython's handle_capital_sigma: final form iff a cased character precedes (skipping
 * case-ignorable ones) and none follows (same skipping). Each scan stops at the first character
 * that is not ignorable, so a run is scanned by at most the two sigmas around it: O(n) overall. */
static int final_sigma(const uint32_t *cps, size_t n, size_t i) {
    size_t j = i;
    while (j > 0 && sigma_kind(cps[j - 1]) == 2) j--;
    if (j == 0 || sigma_kind(cps[j - 1]) != 1) return 0;
    j = i + 1;
    while (j < n && sigma_kind(cps[j]) == 2) j++;
    return j == n || sigma_kind(cps[j]) != 1;
}

size_t dinoc_uc_lower(uint32_t *out, const uint32_t *cps, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = cps[i];
        if (c == 0x130) { /* SpecialCasing: capital I with dot above -> i + combining dot */
            out[k++] = 'i';
            out[k++] = 0x307;
        } else if (c == 0x3A3) {
            out[k++] = final_sigma(cps, n, i) ? 0x3C2 : 0x3C3;
        } else {
            out[k++] = lower_one(c);
        }
    }
    return k;
}

/* ---- html.unescape -------------------------------------------------------------------------- */

/* Python's _charref pattern: &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?) */
static int hexval(uint32_t c) {
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') return (int)((c | 0x20) - 'a' + 10);
    return -1;
}

/* Replacement of numeric reference `num` (saturated above 0x10FFFF): 0 or 1 code point. */
static size_t numeric_ref(uint32_t *out, uint32_t num) {
    for (int i = 0; i < dinoc_html_ncharref_fix; i++)
        if (dinoc_html_charref_fix[i][0] == num) {
            out[0] = dinoc_html_charref_fix[i][1];
            return 1;
        }
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
        out[0] = 0xFFFD;
        return 1;
    }
    if (in_sorted(dinoc_html_invalid_cp, dinoc_html_ninvalid_cp, num)) return 0;
    out[0] = num;
    return 1;
}

typedef struct {
    const char *name;
    size_t      len;
} name_key;

static int cmp_entity(const void *key, const void *elem) {
    const name_key *k = key;
    const char     *e = ((const dinoc_html_entity *)elem)->name;
    size_t          el = strlen(e);
    int             c  = memcmp(k->name, e, k->len < el ? k->len : el);
    return c ? c : (k->len > el) - (k->len < el);
}

/* Entity whose name is exactly name[0..len) (ASCII bytes), or NULL. */
static const dinoc_html_entity *entity_find(const char *name, size_t len) {
    name_key k = {name, len};
    return bsearch(&k, dinoc_html_entities, (size_t)dinoc_html_nentities, sizeof *dinoc_html_entities,
                   cmp_entity);
}

/* Tries a reference at cps[i] == '&'. On a match writes the replacement to out, sets *used to the
 * code points consumed and returns the count written; returns -1 if the pattern does not match. */
static long charref(uint32_t *out, const uint32_t *cps, size_t n, size_t i, size_t *used) {
    size_t j = i + 1;
    if (j < n && cps[j] == '#') {
        int hex = j + 1 < n && (cps[j + 1] | 0x20) == 'x';
        size_t d = j + 1 + (size_t)hex, e = d;
        uint32_t num = 0;
        while (e < n && (hex ? hexval(cps[e]) >= 0 : cps[e] >= '0' && cps[e] <= '9')) {
            uint32_t v = hex ? (uint32_t)hexval(cps[e]) : cps[e] - '0';
            num = num > 0x10FFFF ? num : num * (hex ? 16u : 10u) + v; /* saturates past the range */
            e++;
        }
        if (e == d) return -1; /* "&#" / "&#x" without digits: '#' cannot start a name either */
        if (e < n && cps[e] == ';') e++;
        *used = e - i;
        return (long)numeric_ref(out, num);
    }
    /* a name: 1..32 characters other than \t \n \f space < & # ;, then an optional ';' */
    size_t e = j;
    while (e < n && e - j < 32) {
        uint32_t c = cps[e];
        if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' ||
            c == ';')
            break;
        e++;
    }
    if (e == j) return -1;
    if (e < n && cps[e] == ';') e++;
    *used = e - i;
    /* The whole name (with its ';') or else its longest prefix of >= 2 characters: all entity
     * names are ASCII, so only the leading ASCII part of the name can match. */
    char   name[34];
    size_t m = 0;
    while (j + m < e && cps[j + m] < 0x80) name[m] = (char)cps[j + m], m++;
    size_t full = e - j;
    for (size_t x = full; x >= 2; x--) {
        if (x > m) continue;
        const dinoc_html_entity *ent = entity_find(name, x);
        if (!ent) continue;
        size_t k = 0;
        out[k++] = ent->cp[0];
        if (ent->cp[1]) out[k++] = ent->cp[1];
        for (size_t r = j + x; r < e; r++) out[k++] = cps[r]; /* the unmatched rest, as is */
        return (long)k;
    }
    /* no entity: '&' and the name stay */
    for (size_t r = i; r < e; r++) out[r - i] = cps[r];
    return (long)(e - i);
}

size_t dinoc_html_unescape(uint32_t *out, const uint32_t *cps, size_t n) {
    size_t k = 0, i = 0;
    while (i < n) {
        size_t used = 0;
        long   w    = cps[i] == '&' ? charref(out + k, cps, n, i, &used) : -1;
        if (w < 0) {
            out[k++] = cps[i++];
            continue;
        }
        k += (size_t)w;
        i += used;
    }
    return k;
}
