/* svg.c: a growable string buffer and SVG line charts written by hand (dinoc_strbuf_*,
 * dinoc_svg_chart_write): axes with 1-2-5 "nice" ticks, a light grid, title, axis labels, legend,
 * optional dashed reference line. Coordinates are printed with one decimal, so a chart of a long
 * run stays small; long series are thinned per pixel column keeping their envelope.
 * Tested by tests/cli_attn_report_test.sh (charts of `dinoc report` parsed as XML). */
#include "viz.h"

#include <math.h>
#include <string.h>

void dinoc_strbuf_printf(dinoc_strbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int    k    = vsnprintf(b->cap ? b->s + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)k < room) {
            b->len += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len <= (size_t)k) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns, b->cap = cap;
    }
}

void dinoc_strbuf_xml(dinoc_strbuf *b, const char *text) {
    for (const char *p = text ? text : ""; *p; p++) {
        switch (*p) {
        case '&': dinoc_strbuf_printf(b, "&amp;"); break;
        case '<': dinoc_strbuf_printf(b, "&lt;"); break;
        case '>': dinoc_strbuf_printf(b, "&gt;"); break;
        case '"': dinoc_strbuf_printf(b, "&quot;"); break;
        default:
            /* control characters are not allowed in XML 1.0 */
            if ((unsigned char)*p >= 0x20 || *p == '\t' || *p == '\n') dinoc_strbuf_printf(b, "%c", *p);
        }
    }
}

void dinoc_strbuf_free(dinoc_strbuf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

/* ---- axes ------------------------------------------------------------------------------------- */

typedef struct {
    double lo, hi, step; /* range widened to whole ticks */
} axis;

/* 1, 2 or 5 times a power of ten, about range / 5; the range is widened to multiples of it. */
static axis nice_axis(double lo, double hi) {
    if (!(hi > lo)) {
        double pad = lo != 0 ? fabs(lo) * 0.1 : 1.0;
        lo -= pad, hi += pad;
    }
    double raw = hi / 5 - lo / 5;
    if (!(raw > 0) || !isfinite(raw) || raw < fabs(lo) * 1e-12) { /* degenerate: plain ends */
        axis a = {lo, hi > lo ? hi : lo + 1, hi > lo ? (hi - lo) / 5 : 0.2};
        return a;
    }
    double p = pow(10, floor(log10(raw))), f = raw / p;
    double step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
    axis   a    = {floor(lo / step + 1e-9) * step, ceil(hi / step - 1e-9) * step, step};
    return a;
}

static void tick_label(char *buf, size_t n, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0; /* -0 and 1e-17 print as 0 */
    snprintf(buf, n, "%.6g", v);
}

typedef struct {
    double x0, y0, w, h; /* plot area in px */
    axis   ax, ay;
} frame;

static double px(const frame *f, double x) { return f->x0 + (x - f->ax.lo) / (f->ax.hi - f->ax.lo) * f->w; }
static double py(const frame *f, double y) { return f->y0 + f->h - (y - f->ay.lo) / (f->ay.hi - f->ay.lo) * f->h; }

static void draw_axes(dinoc_strbuf *b, const frame *f, const dinoc_svg_chart *c, int W, int H) {
    char lab[64];
    dinoc_strbuf_printf(b, "<g font-family=\"sans-serif\" font-size=\"11\" fill=\"#333\">\n");
    for (int k = 0; k <= 20; k++) {
        double v = f->ax.lo + k * f->ax.step;
        if (v > f->ax.hi + f->ax.step * 1e-6) break;
        double x = px(f, v);
        tick_label(lab, sizeof lab, v, f->ax.step);
        dinoc_strbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", x, f->y0, x, f->y0 + f->h);
        dinoc_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x, f->y0 + f->h + 15, lab);
    }
    for (int k = 0; k <= 20; k++) {
        double v = f->ay.lo + k * f->ay.step;
        if (v > f->ay.hi + f->ay.step * 1e-6) break;
        double y = py(f, v);
        tick_label(lab, sizeof lab, v, f->ay.step);
        dinoc_strbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", f->x0, y, f->x0 + f->w, y);
        dinoc_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", f->x0 - 5, y + 4, lab);
    }
    dinoc_strbuf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n",
                        f->x0, f->y0, f->w, f->h);
    dinoc_strbuf_printf(b, "<text x=\"%d\" y=\"20\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">", W / 2);
    dinoc_strbuf_xml(b, c->title);
    dinoc_strbuf_printf(b, "</text>\n<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", f->x0 + f->w / 2, H - 8);
    dinoc_strbuf_xml(b, c->xlabel);
    dinoc_strbuf_printf(b, "</text>\n<text transform=\"translate(14,%.1f) rotate(-90)\" text-anchor=\"middle\">", f->y0 + f->h / 2);
    dinoc_strbuf_xml(b, c->ylabel);
    dinoc_strbuf_printf(b, "</text>\n</g>\n");
}

/* ---- series ----------------------------------------------------------------------------------- */

static int finite_pt(const dinoc_svg_series *s, int i) { return isfinite(s->x[i]) && isfinite(s->y[i]); }

/* Indices of the points to draw: all of them, or per pixel column its first, lowest, highest and
 * last finite points (in index order) when the series is dense. Non-finite points are kept as
 * line breaks only when not thinning. Returns the count; idx holds n entries. */
static int thin(const dinoc_svg_series *s, const frame *f, int *idx) {
    int m = 0;
    if (s->n <= 4 * (int)f->w) {
        for (int i = 0; i < s->n; i++) idx[m++] = i;
        return m;
    }
    int col = -1, first = -1, lo = -1, hi = -1, last = -1;
    for (int i = 0; i <= s->n; i++) {
        int c = i < s->n && finite_pt(s, i) ? (int)floor(px(f, s->x[i])) : -2;
        if (i < s->n && c == -2) continue;
        if (c != col || i == s->n) {
            if (first >= 0) {
                int pick[4] = {first, lo, hi, last};
                /* sort the four picks (index order) and drop repeats */
                for (int a = 0; a < 4; a++)
                    for (int z = a + 1; z < 4; z++)
                        if (pick[z] < pick[a]) { int t = pick[a]; pick[a] = pick[z]; pick[z] = t; }
                for (int a = 0; a < 4; a++)
                    if (a == 0 || pick[a] != pick[a - 1]) idx[m++] = pick[a];
            }
            if (i == s->n) break;
            col = c, first = lo = hi = last = i;
            continue;
        }
        if (s->y[i] < s->y[lo]) lo = i;
        if (s->y[i] > s->y[hi]) hi = i;
        last = i;
    }
    return m;
}

static void draw_series(dinoc_strbuf *b, const dinoc_svg_series *s, const frame *f, int *idx) {
    int m = thin(s, f, idx), pen = 0;
    dinoc_strbuf_printf(b, "<path fill=\"none\" stroke=\"%s\" stroke-opacity=\"%.2f\" stroke-width=\"%.1f\" "
                           "stroke-linejoin=\"round\" d=\"", s->color, s->opacity, s->width);
    for (int j = 0; j < m; j++) {
        int i = idx[j];
        if (!finite_pt(s, i)) {
            pen = 0;
            continue;
        }
        dinoc_strbuf_printf(b, "%s%.1f %.1f", pen ? " L" : " M", px(f, s->x[i]), py(f, s->y[i]));
        pen = 1;
    }
    dinoc_strbuf_printf(b, "\"/>\n");
    if (s->markers)
        for (int i = 0; i < s->n; i++)
            if (finite_pt(s, i))
                dinoc_strbuf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\" fill-opacity=\"%.2f\"/>\n",
                                    px(f, s->x[i]), py(f, s->y[i]), s->color, s->opacity);
}

/* How much of the drawn lines falls inside the box [x0, x0 + w] x [y0, y0 + h] (px): points and
 * 8 samples along each segment. */
static long points_in(const frame *f, const dinoc_svg_series *s, int n, double x0, double y0, double w, double h) {
    long k = 0;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < s[j].n; i++) {
            if (!finite_pt(&s[j], i)) continue;
            int    seg = i + 1 < s[j].n && finite_pt(&s[j], i + 1);
            double xa = px(f, s[j].x[i]), ya = py(f, s[j].y[i]);
            double xb = seg ? px(f, s[j].x[i + 1]) : xa, yb = seg ? py(f, s[j].y[i + 1]) : ya;
            for (int t = 0; t < (seg ? 8 : 1); t++) {
                double x = xa + (xb - xa) * t / 8, y = ya + (yb - ya) * t / 8;
                k += x >= x0 && x <= x0 + w && y >= y0 && y <= y0 + h;
            }
        }
    return k;
}

/* The legend goes in the corner of the plot that covers the fewest points. */
static void draw_legend(dinoc_strbuf *b, const frame *f, const dinoc_svg_series *s, int n) {
    int    rows = 0;
    size_t chars = 0;
    for (int i = 0; i < n; i++)
        if (s[i].label) rows++, chars = strlen(s[i].label) > chars ? strlen(s[i].label) : chars;
    if (!rows) return;
    double w = 42 + 6.5 * (double)chars, h = rows * 16 + 6, x = 0, y = 0;
    if (w > f->w - 16) w = f->w - 16;
    long best = -1;
    for (int corner = 0; corner < 4; corner++) { /* top right, top left, bottom right, bottom left */
        double cx = corner % 2 ? f->x0 + 8 : f->x0 + f->w - w - 8, cy = corner < 2 ? f->y0 + 8 : f->y0 + f->h - h - 8;
        long   k  = points_in(f, s, n, cx - 6, cy - 6, w + 12, h + 12); /* a margin around the box */
        if (best < 0 || k < best) best = k, x = cx, y = cy;
    }
    dinoc_strbuf_printf(b, "<g font-family=\"sans-serif\" font-size=\"11\" fill=\"#333\">\n"
                           "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n",
                        x, y, w, h);
    for (int i = 0, r = 0; i < n; i++) {
        if (!s[i].label) continue;
        double ly = y + 14 + 16 * r++, op = s[i].opacity < 0.4 ? 0.4 : s[i].opacity;
        dinoc_strbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-opacity=\"%.2f\" stroke-width=\"2.5\"/>\n",
                            x + 6, ly - 4, x + 26, ly - 4, s[i].color, op);
        dinoc_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\">", x + 32, ly);
        dinoc_strbuf_xml(b, s[i].label);
        dinoc_strbuf_printf(b, "</text>\n");
    }
    dinoc_strbuf_printf(b, "</g>\n");
}

dinoc_status dinoc_svg_chart_write(const char *path, const dinoc_svg_chart *c, const dinoc_svg_series *s, int n) {
    const int W = c->width > 0 ? c->width : 640, H = c->height > 0 ? c->height : 360;
    double    xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    int       nmax = 1;
    for (int k = 0; k < n; k++) {
        if (s[k].n > nmax) nmax = s[k].n;
        for (int i = 0; i < s[k].n; i++)
            if (finite_pt(&s[k], i)) {
                xlo = fmin(xlo, s[k].x[i]), xhi = fmax(xhi, s[k].x[i]);
                ylo = fmin(ylo, s[k].y[i]), yhi = fmax(yhi, s[k].y[i]);
            }
    }
    if (!(xlo <= xhi)) return dinoc_fail(DINOC_ERR_ARG, "%s: chart '%s' has no finite point", path, c->title ? c->title : "");
    if (c->has_hline && isfinite(c->hline)) ylo = fmin(ylo, c->hline), yhi = fmax(yhi, c->hline);
    /* 3% of headroom so that no line runs along the frame, never below a zero baseline */
    double pad = (yhi - ylo) * 0.03;
    ylo = ylo >= 0 && ylo - pad < 0 ? 0 : ylo - pad, yhi += pad;
    frame f = {70, 32, W - 70 - 20, H - 32 - 44, nice_axis(xlo, xhi), nice_axis(ylo, yhi)};
    if (c->x_integer && f.ax.step < 1) f.ax = (axis){floor(f.ax.lo), ceil(f.ax.hi), 1};
    if (f.w < 10 || f.h < 10) return dinoc_fail(DINOC_ERR_ARG, "%s: chart size %d x %d is too small", path, W, H);
    int *idx = malloc(sizeof(int) * (size_t)nmax);
    if (!idx) return dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", path);

    dinoc_strbuf b = {0};
    dinoc_strbuf_printf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">\n"
                            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                        W, H, W, H);
    draw_axes(&b, &f, c, W, H);
    /* the clip leaves room for markers on the frame */
    dinoc_strbuf_printf(&b, "<clipPath id=\"plot\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/></clipPath>\n"
                            "<g clip-path=\"url(#plot)\">\n", f.x0 - 4, f.y0 - 4, f.w + 8, f.h + 8);
    if (c->has_hline && isfinite(c->hline)) {
        double y = py(&f, c->hline);
        dinoc_strbuf_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#d62728\" stroke-dasharray=\"6 4\"/>\n",
                            f.x0, y, f.x0 + f.w, y);
        dinoc_strbuf_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" font-family=\"sans-serif\" font-size=\"11\" fill=\"#d62728\">",
                            f.x0 + 6, y - 4);
        dinoc_strbuf_xml(&b, c->hline_label);
        dinoc_strbuf_printf(&b, "</text>\n");
    }
    for (int k = 0; k < n; k++) draw_series(&b, &s[k], &f, idx);
    dinoc_strbuf_printf(&b, "</g>\n");
    draw_legend(&b, &f, s, n);
    dinoc_strbuf_printf(&b, "</svg>\n");
    free(idx);
    dinoc_status st = b.oom ? dinoc_fail(DINOC_ERR_NOMEM, "%s: out of memory", path)
                            : dinoc_write_file_atomic(path, b.s, b.len);
    dinoc_strbuf_free(&b);
    return st;
}
