/* unicode.h: the Unicode and HTML pieces of the CLIP tokenizer (src/text/unicode.c and the
 * generated src/text/unicode_tables.c, written by tools/gen_unicode.py from Python's unicodedata).
 *
 * Each function reproduces one step of the Python reference (openai/CLIP simple_tokenizer.py run
 * by CPython 3.11 with the `regex` module): UTF-8 decoding, html.unescape, str.strip, the regex
 * \s / \p{L} / \p{N} classes, and str.lower() with its Final_Sigma rule. Code points are uint32_t;
 * every function here is pure (no state), so it is safe from any thread. */
#ifndef DINOC_TEXT_UNICODE_H
#define DINOC_TEXT_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* Classes of the pre-tokenisation pattern
 *   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * (regex, IGNORECASE). SKIP is U+0345 alone: under IGNORECASE the regex module lets it match
 * neither [\p{L}] (it is a mark, Mn) nor [^\s\p{L}\p{N}] (its case variant iota is a letter), so
 * it is dropped like whitespace. */
typedef enum {
    DINOC_UC_OTHER  = 0,
    DINOC_UC_LETTER = 1,
    DINOC_UC_NUMBER = 2,
    DINOC_UC_SPACE  = 3, /* regex-module \s */
    DINOC_UC_SKIP   = 4,
} dinoc_uc_class;

dinoc_uc_class dinoc_uc_classify(uint32_t cp);
/* str.isspace(): what str.strip() removes (\s plus U+001C..U+001F). */
int dinoc_uc_py_isspace(uint32_t cp);

/* Decodes UTF-8 strictly (no overlong forms, no surrogates, nothing above U+10FFFF) into
 * cps[0..*n) (room for len code points). Returns 0, or -1 with *bad set to the byte offset of the
 * first invalid sequence. */
int dinoc_utf8_decode(uint32_t *cps, size_t *n, const char *s, size_t len, size_t *bad);
/* Encodes one code point (<= U+10FFFF); returns the byte count (1..4). */
int dinoc_utf8_encode(uint32_t cp, unsigned char *out);

/* Length of the valid UTF-8 sequence at p[0..n) (n >= 1), or minus the length of its maximal
 * invalid prefix: the unit that CPython's decode(errors="replace") turns into one U+FFFD. */
long dinoc_utf8_unit(const unsigned char *p, size_t n);

/* CLIP's bytes_to_unicode(): the printable bytes ! .. ~, U+00A1 .. U+00AC, U+00AE .. U+00FF stand
 * for themselves, the other 68 bytes map to U+0100, U+0101, ... in byte order. sym[b] is the code
 * point of byte b; order[] lists the bytes in vocabulary order (ids 0..255). */
void dinoc_uc_byte_symbols(uint32_t sym[256], int order[256]);

/* html.unescape (Python 3.11) on cps[0..n) into out (room for n: no reference lengthens the text
 * in code points); returns the output length. Decimal references of more than 4300 digits, which
 * make Python's int() raise, give U+FFFD like every other out-of-range number. */
size_t dinoc_html_unescape(uint32_t *out, const uint32_t *cps, size_t n);

/* str.lower() of cps[0..n) into out (room for 2n: U+0130 becomes "i" U+0307); capital sigma
 * becomes final sigma where Python's Final_Sigma rule says so. Returns the output length. */
size_t dinoc_uc_lower(uint32_t *out, const uint32_t *cps, size_t n);

/* ---- generated tables (src/text/unicode_tables.c) ------------------------------------------- */
typedef struct {
    uint32_t first, last;
    int      cls;
} dinoc_uc_range;
typedef struct {
    const char *name;  /* without the '&'; with the ';' where the standard has one */
    uint32_t    cp[2]; /* the replacement: one or two code points (cp[1] == 0: one) */
} dinoc_html_entity;

extern const char              dinoc_unicode_version[];
extern const dinoc_uc_range    dinoc_uc_class_ranges[];
extern const int               dinoc_uc_class_nranges;
extern const uint32_t          dinoc_uc_regex_space[];
extern const int               dinoc_uc_regex_nspace;
extern const uint32_t          dinoc_uc_py_space[];
extern const int               dinoc_uc_py_nspace;
extern const uint32_t          dinoc_uc_lower_pairs[][2];
extern const int               dinoc_uc_lower_npairs;
extern const dinoc_uc_range    dinoc_uc_sigma_ranges[];
extern const int               dinoc_uc_sigma_nranges;
extern const dinoc_html_entity dinoc_html_entities[];
extern const int               dinoc_html_nentities;
extern const uint32_t          dinoc_html_charref_fix[][2];
extern const int               dinoc_html_ncharref_fix;
extern const uint32_t          dinoc_html_invalid_cp[];
extern const int               dinoc_html_ninvalid_cp;

#endif /* DINOC_TEXT_UNICODE_H */
