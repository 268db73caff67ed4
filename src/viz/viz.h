/* viz.h: pictures and charts (src/viz/), used by `dinoc attn` and `dinoc report`:
 *   png.c   the viridis colour map and atomic PNG writing (stb_image_write from Debian's libstb)
 *   attn.c  CLS-to-patch attention maps out of a forward state, DINO's attention-mass mask
 *   svg.c   a growable string buffer and hand-written SVG line charts
 *   runlog.c a training run's log.jsonl as numeric series, and EMA smoothing
 * Library code: nothing prints; failures return a status with dinoc_last_error() set.
 * Tested by tests/cli_attn_report_test.sh (through the CLI). */
#ifndef DINOC_VIZ_H
#define DINOC_VIZ_H

#include "../internal.h"

/* ---- colours and PNG (png.c) ------------------------------------------------------------------ */

/* matplotlib's viridis at t in [0, 1] (clamped; NaN gives 0): 17 tabulated stops, linear between. */
void dinoc_viz_viridis(float t, uint8_t rgb[3]);

/* Writes an 8-bit interleaved image (c = 1 grey, 3 RGB, 4 RGBA; rows of w * c bytes) as a PNG,
 * atomically (temp file, fsync, rename): an existing file at path is only replaced when the new
 * one is complete. */
dinoc_status dinoc_viz_png_write(const char *path, const uint8_t *pix, int w, int h, int c);

/* ---- attention maps (attn.c) ------------------------------------------------------------------ */

/* The last block's attention from the CLS token to every patch token, per head: maps
 * [B, NH, gh, gw] = att[b, h, 0, 1 + R + p] (register columns skipped; each row sums to at most 1,
 * the rest of the mass going to CLS and the registers). s must have been made for m with
 * DINOC_STATE_ATTN and run by dinoc_forward. */
dinoc_status dinoc_viz_cls_attention(const dinoc_model *m, const dinoc_state *s, float *maps);

/* DINO's visualize_attention.py mask: keeps the largest values of map[n] that together hold the
 * fraction thr of its mass (sort ascending, normalise by the sum, cumulative sum, keep where it
 * exceeds 1 - thr). mask[n] gets 1 (kept) or 0. Ties are ordered by index; a map summing to <= 0
 * keeps nothing. */
dinoc_status dinoc_viz_attn_mask(uint8_t *mask, const float *map, int n, float thr);

/* ---- text buffer and SVG charts (svg.c) ------------------------------------------------------- */

/* A growable NUL-terminated string. Zero-initialise; a failed append sets oom and stops growing. */
typedef struct {
    char  *s;
    size_t len, cap;
    int    oom;
} dinoc_strbuf;

void dinoc_strbuf_printf(dinoc_strbuf *b, const char *fmt, ...) DINOC_PRINTF(2, 3);
/* Appends text with &, <, >, " escaped for XML. */
void dinoc_strbuf_xml(dinoc_strbuf *b, const char *text);
void dinoc_strbuf_free(dinoc_strbuf *b);

/* One line of a chart. Points with a non-finite x or y break the line. */
typedef struct {
    const char   *label;   /* legend text; NULL: not in the legend */
    const double *x, *y;   /* n points, x ascending */
    int           n;
    const char   *color;   /* "#1f77b4" */
    double        opacity; /* 1: solid; about 0.25 for a faint raw series under its smoothed line */
    double        width;   /* stroke width in px */
    int           markers; /* 1: a dot at every point (few-point series such as per-epoch metrics) */
} dinoc_svg_series;

typedef struct {
    const char *title, *xlabel, *ylabel;
    int         width, height;  /* whole picture in px; <= 0: 640 x 360 */
    int         x_integer;      /* 1: x ticks on whole numbers only (epochs) */
    int         has_hline;      /* 1: a dashed horizontal reference line at hline */
    double      hline;
    const char *hline_label;
} dinoc_svg_chart;

/* Draws the series (axes with "nice" ticks covering every finite point and the reference line,
 * grid, title, axis labels, legend) into an SVG document and writes it atomically to path. A
 * series of more than ~4 points per pixel column is thinned to each column's first, lowest,
 * highest and last points, which keeps its envelope. DINOC_ERR_ARG if no series has a finite
 * point. */
dinoc_status dinoc_svg_chart_write(const char *path, const dinoc_svg_chart *c,
                                   const dinoc_svg_series *s, int n);

/* ---- training logs (runlog.c) ----------------------------------------------------------------- */

/* One numeric field of log.jsonl as a series. Lines with a "loss" field are per-step lines (x =
 * their "step"); the others are per-epoch lines (x = their "epoch", else "step"): the trainers'
 * monitor lines such as {"step":469,"epoch":0,"knn_top1":0.81}. */
typedef struct {
    char   *name;  /* the JSON key */
    int     epoch; /* 1: from per-epoch lines, 0: from per-step lines */
    double *x, *y; /* n points sorted by x; a repeated x (a resumed run) keeps the later value */
    int     n, cap;
} dinoc_runlog_col;

typedef struct {
    dinoc_runlog_col *cols; /* in order of first appearance */
    int               ncols, cap;
    long              lines;     /* non-blank lines read */
    long              bad;       /* lines that are not a JSON object (skipped) */
    long              first_bad; /* 1-based number of the first bad line; 0 if none */
} dinoc_runlog;

/* Reads a JSON-lines log: every number-valued field of every object line (except "step" and
 * "epoch", which place it) becomes a point. Blank lines are ignored; malformed lines are counted
 * and skipped. DINOC_ERR_IO if the file cannot be read. Free with dinoc_runlog_free. */
dinoc_status dinoc_runlog_load(dinoc_runlog *log, const char *path);
void         dinoc_runlog_free(dinoc_runlog *log);
/* The series of that key and kind, or NULL. */
const dinoc_runlog_col *dinoc_runlog_find(const dinoc_runlog *log, const char *name, int epoch);

/* Debiased exponential moving average (as TensorBoard's smoothing): alpha = 2 / (span + 1),
 * out[i] = m_i / (1 - (1 - alpha)^k) over the k finite values so far; a non-finite y gives a NaN
 * out[i] and leaves the average unchanged. span <= 1 copies y. */
void dinoc_viz_ema(double *out, const double *y, int n, double span);

#endif
