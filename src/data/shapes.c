/* shapes.c: the "shapes" data set's vocabulary and the renderer of one sample (dinoc_shapes_render).
 *
 * A sample is one or two flat-coloured shapes on a muted background, a caption naming each shape's
 * size, colour and kind and, with two shapes, their spatial relation ("a small red circle above a
 * large blue square"), and a mask of shape kinds. Every random choice comes from a generator seeded
 * by (seed, split, index), so any item can be regenerated alone and items render in parallel.
 *
 * Choices (docs/shapes.md has the reasons at length):
 *  - Shape colours are saturated palette entries with a +-18 jitter per channel; backgrounds are
 *    desaturated (HSV s <= 0.3) mid-tones (v in [0.3, 0.7]), so white and black shapes stay apart
 *    from every background and no background reads as a palette colour.
 *  - No rotation: a triangle points up, a star has a point up. Rotated squares read as diamonds.
 *  - Two shapes never overlap: they are separated along the relation's axis by a gap, and their
 *    offset across that axis is at most half the offset along it, so "above" never also looks like
 *    "left of". The mask's "last drawn wins" rule therefore only matters at anti-aliased edges.
 *  - Anti-aliasing: 5 x 5 sub-pixel points per pixel; colour = coverage-weighted blend; the mask
 *    takes a pixel when at least 13 of its 25 points are inside. An odd grid makes that rule
 *    unbiased: a straight edge crossing a pixel row keeps it iff the edge passes its middle (a 4 x 4
 *    grid with ">= 8 of 16" kept pixels 3/8 covered: masks were 1-4% too large).
 * Tested by tests/test_shapes.c. */
#include "shapes.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const k_kinds[DINOC_SHAPES_KINDS] = {"circle", "square", "triangle", "star", "cross", "ring"};
static const char *const k_colours[DINOC_SHAPES_COLOURS] = {"red",    "green",  "blue",  "yellow",
                                                           "purple", "orange", "white", "black"};
static const uint8_t k_palette[DINOC_SHAPES_COLOURS][3] = {
    {220, 40, 40}, {40, 175, 60}, {45, 85, 230}, {240, 215, 40},
    {150, 60, 200}, {250, 140, 25}, {245, 245, 245}, {20, 20, 20},
};
static const char *const k_relations[DINOC_SHAPES_RELATIONS] = {"above", "below", "left of", "right of"};

#define COLOUR_JITTER 18    /* per channel, uniform; palette entries differ by >= 75 somewhere */
#define SMALL_R       0.10f /* small shapes: r in [0.10, 0.13] x size */
#define LARGE_R       0.17f /* large shapes: r in [0.17, 0.21] x size */
#define R_SPREAD_S    0.03f
#define R_SPREAD_L    0.04f
#define SUB           5     /* sub-pixel grid side for coverage (odd: see dinoc_shapes_coverage) */

const char *dinoc_shapes_kind_name(int k) { return k >= 0 && k < DINOC_SHAPES_KINDS ? k_kinds[k] : NULL; }
const char *dinoc_shapes_colour_name(int c) { return c >= 0 && c < DINOC_SHAPES_COLOURS ? k_colours[c] : NULL; }
const char *dinoc_shapes_size_name(int large) { return large ? "large" : "small"; }
const char *dinoc_shapes_relation_name(int r) {
    return r >= 0 && r < DINOC_SHAPES_RELATIONS ? k_relations[r] : NULL;
}

/* Kind k holds out colours k and k + 3 (mod 8): two per kind, every colour held out for one or two
 * kinds, and each kind still seen with 6 colours (and each colour with >= 4 kinds) in training. */
int dinoc_shapes_held_out(int colour, int kind) {
    if (colour < 0 || colour >= DINOC_SHAPES_COLOURS || kind < 0 || kind >= DINOC_SHAPES_KINDS) return 0;
    return colour == kind || colour == (kind + 3) % DINOC_SHAPES_COLOURS;
}

int dinoc_shapes_split_pairs(dinoc_shapes_split split, int *pairs) {
    int n = 0;
    for (int c = 0; c < DINOC_SHAPES_COLOURS; c++)
        for (int k = 0; k < DINOC_SHAPES_KINDS; k++)
            if (dinoc_shapes_held_out(c, k) == (split == DINOC_SHAPES_TEST)) {
                if (pairs) pairs[n] = c * DINOC_SHAPES_KINDS + k;
                n++;
            }
    return n;
}

/* ---- geometry ------------------------------------------------------------------------------- */

/* A five-pointed star, point up, on the unit circle: outer points at radius 1, inner corners at
 * 0.45 (fatter than the regular pentagram's 0.38, so small stars keep their inner corners). */
#define STAR_INNER 0.45
static const double k_star[10][2] = {
    {0.0, -1.0},
    {0.587785 * STAR_INNER, -0.809017 * STAR_INNER},
    {0.951057, -0.309017},
    {0.951057 * STAR_INNER, 0.309017 * STAR_INNER},
    {0.587785, 0.809017},
    {0.0, 1.0 * STAR_INNER},
    {-0.587785, 0.809017},
    {-0.951057 * STAR_INNER, 0.309017 * STAR_INNER},
    {-0.951057, -0.309017},
    {-0.587785 * STAR_INNER, -0.809017 * STAR_INNER},
};

static int in_star(double x, double y) { /* even-odd crossing test, unit coordinates */
    int in = 0;
    for (int i = 0, j = 9; i < 10; j = i++) {
        double xi = k_star[i][0], yi = k_star[i][1], xj = k_star[j][0], yj = k_star[j][1];
        if ((yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) in = !in;
    }
    return in;
}

int dinoc_shapes_inside(const dinoc_shape *s, float px, float py) {
    /* unit coordinates around the centre, y pointing down as in the image */
    double x = (px - s->cx) / s->r, y = (py - s->cy) / s->r, ax = fabs(x), ay = fabs(y), d2 = x * x + y * y;
    switch (s->kind) {
    case 0: return d2 <= 1.0;                                  /* circle */
    case 1: return ax <= 0.7 && ay <= 0.7;                     /* square, corners at 0.99 */
    case 2: return y <= 0.5 && ax * 1.7320508 <= y + 1.0;      /* triangle, circumradius 1 */
    case 3: return d2 <= 1.0 && in_star(x, y);                 /* star */
    case 4: return (ax <= 0.3 && ay <= 0.95) || (ay <= 0.3 && ax <= 0.95); /* plus-shaped cross */
    case 5: return d2 <= 1.0 && d2 >= 0.55 * 0.55;              /* ring, hole radius 0.55 */
    }
    return 0;
}

float dinoc_shapes_coverage(const dinoc_shape *s, int x, int y) {
    int in = 0;
    for (int j = 0; j < SUB; j++)
        for (int i = 0; i < SUB; i++)
            in += dinoc_shapes_inside(s, x + (i + 0.5f) / SUB, y + (j + 0.5f) / SUB);
    return (float)in / (SUB * SUB);
}

/* ---- randomness ------------------------------------------------------------------------------ */

static uint64_t mix64(uint64_t z) { /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Independent streams per (seed, stream tag, split, index). */
static void item_rng(dinoc_rng *r, uint64_t seed, uint64_t tag, int split, int64_t index) {
    uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ull * (tag + 1));
    h          = mix64(h ^ ((uint64_t)split << 56) ^ (uint64_t)index);
    dinoc_rng_seed(r, h);
}

static float uni(dinoc_rng *r, float lo, float hi) { return lo + (hi - lo) * dinoc_rng_uniform(r); }
static int   below(dinoc_rng *r, int n) { return (int)(dinoc_rng_u64(r) % (uint64_t)n); }

static uint8_t clamp8(float v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lrintf(v)); }

/* A muted background colour: any hue, saturation <= 0.3, value in [0.3, 0.7]. */
static void muted(dinoc_rng *r, float rgb[3]) {
    float h = uni(r, 0, 6), s = uni(r, 0.05f, 0.3f), v = uni(r, 0.3f, 0.7f) * 255;
    int   i = (int)h % 6;
    float f = h - (float)(int)h, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
    const float tab[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
    memcpy(rgb, tab[i], sizeof tab[i]);
}

/* Background kinds: solid, linear gradient, solid + per-pixel noise, faint stripes. */
static void draw_background(uint8_t *img, int S, dinoc_rng *r) {
    float a[3], b[3];
    muted(r, a);
    int   kind = below(r, 4);
    muted(r, b); /* drawn for every kind, so later draws do not depend on the kind */
    float ang = uni(r, 0, 6.2831853f), ca = cosf(ang), sa = sinf(ang);
    float amp = uni(r, 6, 14), period = uni(r, 5, 12);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            uint8_t *p = img + ((size_t)y * S + x) * 3;
            /* position along the gradient / stripe direction, in [0, 1] over the image for gradients */
            float  u = ((x + 0.5f - S / 2.0f) * ca + (y + 0.5f - S / 2.0f) * sa) / (S * 1.4142136f) + 0.5f;
            float  n = kind == 2 ? uni(r, -amp, amp) : 0;
            float  st = kind == 3 ? (fmodf(u * S * 1.4142136f, period) < period / 2 ? amp : -amp) * 0.6f : 0;
            for (int c = 0; c < 3; c++)
                p[c] = clamp8(kind == 1 ? a[c] + (b[c] - a[c]) * u : a[c] + n + st);
        }
}

/* Blends shape s into img (may be NULL) by coverage and marks its mask pixels (mask may be NULL). */
static void draw_shape(uint8_t *img, uint8_t *mask, int S, const dinoc_shape *s) {
    int x0 = (int)floorf(s->cx - s->r) - 1, x1 = (int)ceilf(s->cx + s->r) + 1;
    int y0 = (int)floorf(s->cy - s->r) - 1, y1 = (int)ceilf(s->cy + s->r) + 1;
    x0 = x0 < 0 ? 0 : x0, y0 = y0 < 0 ? 0 : y0, x1 = x1 > S ? S : x1, y1 = y1 > S ? S : y1;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) {
            float cov = dinoc_shapes_coverage(s, x, y);
            if (cov <= 0) continue;
            uint8_t *p = img ? img + ((size_t)y * S + x) * 3 : NULL;
            for (int c = 0; p && c < 3; c++) p[c] = clamp8(p[c] + (s->rgb[c] - p[c]) * cov);
            if (mask && cov >= 0.5f) mask[(size_t)y * S + x] = (uint8_t)(s->kind + 1);
        }
}

/* Picks size and colour jitter of shape s (kind and colour already set). */
static void shape_style(dinoc_shape *s, int S, dinoc_rng *r) {
    s->large = below(r, 2);
    s->r     = S * (s->large ? uni(r, LARGE_R, LARGE_R + R_SPREAD_L) : uni(r, SMALL_R, SMALL_R + R_SPREAD_S));
    for (int c = 0; c < 3; c++)
        s->rgb[c] = clamp8(k_palette[s->colour][c] + (float)(below(r, 2 * COLOUR_JITTER + 1) - COLOUR_JITTER));
}

/* Places two shapes so that `rel` (a of b) holds unambiguously: along the axis they are apart by at
 * least gap beyond their radii; across it the offset is at most half the offset along it. Both
 * stay inside [1, S - 1]. Feasible for every size pair: dmin <= dmax needs 2 (r_a + r_b) + gap + 2 <= S,
 * and 2 (0.21 + 0.21) S + (1 + 0.02 S) + 2 <= S holds for S >= 22. */
static void place_pair(dinoc_shape *a, dinoc_shape *b, int rel, int S, dinoc_rng *r) {
    int          vertical = rel < 2, a_first = rel == 0 || rel == 2; /* a above / left of b */
    dinoc_shape *lo = a_first ? a : b, *hi = a_first ? b : a;         /* lo: smaller coordinate */
    float        gap = 1.0f + 0.02f * S;
    float        dmin = lo->r + hi->r + gap, dmax = (S - 1 - hi->r) - (lo->r + 1);
    float        d  = dmax > dmin ? uni(r, dmin, dmax) : dmin;
    float        p0 = uni(r, lo->r + 1, S - 1 - hi->r - d > lo->r + 1 ? S - 1 - hi->r - d : lo->r + 1);
    /* across the axis: lo anywhere inside, hi within +-d/2 of it and inside */
    float        q0 = uni(r, lo->r + 1, S - 1 - lo->r);
    float        qa = fmaxf(hi->r + 1, q0 - d / 2), qb = fminf(S - 1 - hi->r, q0 + d / 2);
    float        q1 = qb > qa ? uni(r, qa, qb) : qa;
    if (vertical) lo->cy = p0, hi->cy = p0 + d, lo->cx = q0, hi->cx = q1;
    else lo->cx = p0, hi->cx = p0 + d, lo->cy = q0, hi->cy = q1;
}

dinoc_status dinoc_shapes_render(dinoc_shapes_sample *out, uint8_t *rgb, uint8_t *mask,
                                 const dinoc_shapes_config *cfg, dinoc_shapes_split split, int64_t index) {
    if (!out || !cfg || cfg->size < 32 || cfg->size > 1024 || index < 0 ||
        (split != DINOC_SHAPES_TRAIN && split != DINOC_SHAPES_TEST) || !(cfg->pair_frac >= 0 && cfg->pair_frac <= 1))
        return dinoc_fail(DINOC_ERR_ARG, "shapes: bad arguments (size %d must be in [32, 1024], pair_frac %g in "
                                         "[0, 1], index %lld >= 0)",
                          cfg ? cfg->size : 0, cfg ? cfg->pair_frac : 0.0, (long long)index);
    const int S = cfg->size;
    int       pairs[DINOC_SHAPES_COLOURS * DINOC_SHAPES_KINDS], np = dinoc_shapes_split_pairs(split, pairs);
    /* balanced labels: item index walks a permutation of the split's pairs drawn per block */
    dinoc_rng r;
    item_rng(&r, cfg->seed, 1, split, index / np);
    for (int i = np - 1; i > 0; i--) {
        int j = below(&r, i + 1), t = pairs[i];
        pairs[i] = pairs[j], pairs[j] = t;
    }
    int first = pairs[index % np];

    memset(out, 0, sizeof *out);
    item_rng(&r, cfg->seed, 0, split, index);
    dinoc_shape *a = &out->shapes[0], *b = &out->shapes[1];
    a->colour = first / DINOC_SHAPES_KINDS, a->kind = first % DINOC_SHAPES_KINDS;
    shape_style(a, S, &r);
    out->nshapes  = dinoc_rng_uniform(&r) < cfg->pair_frac ? 2 : 1;
    out->relation = -1;
    if (out->nshapes == 2) {
        /* the second shape: a training pair other than the first's, in both splits. In test images
         * the labelled first shape is then the only held-out pair, so a zero-shot classifier over
         * the held-out labels has exactly one right answer (a second held-out shape would make the
         * label ambiguous). */
        int all = DINOC_SHAPES_COLOURS * DINOC_SHAPES_KINDS, second;
        do {
            second = below(&r, all);
        } while (second == first || dinoc_shapes_held_out(second / DINOC_SHAPES_KINDS, second % DINOC_SHAPES_KINDS));
        b->colour = second / DINOC_SHAPES_KINDS, b->kind = second % DINOC_SHAPES_KINDS;
        shape_style(b, S, &r);
        out->relation = below(&r, DINOC_SHAPES_RELATIONS);
        place_pair(a, b, out->relation, S, &r);
    } else {
        a->cx = uni(&r, a->r + 1, S - 1 - a->r);
        a->cy = uni(&r, a->r + 1, S - 1 - a->r);
    }
    int n = snprintf(out->caption, sizeof out->caption, "a %s %s %s", dinoc_shapes_size_name(a->large),
                     k_colours[a->colour], k_kinds[a->kind]);
    if (out->nshapes == 2)
        snprintf(out->caption + n, sizeof out->caption - (size_t)n, " %s a %s %s %s", k_relations[out->relation],
                 dinoc_shapes_size_name(b->large), k_colours[b->colour], k_kinds[b->kind]);
    snprintf(out->label, sizeof out->label, "%s %s", k_colours[a->colour], k_kinds[a->kind]);

    /* the background has its own stream, so the shapes do not depend on whether pixels are asked */
    item_rng(&r, cfg->seed, 2, split, index);
    if (rgb) draw_background(rgb, S, &r);
    if (mask) memset(mask, 0, (size_t)S * S);
    for (int i = 0; i < out->nshapes; i++) draw_shape(rgb, mask, S, &out->shapes[i]);
    return DINOC_OK;
}
