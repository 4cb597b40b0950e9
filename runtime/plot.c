/* Rendering of rt_plot figures (runtime/plot.h): panel layout, axes with
 * "nice" ticks, anti-aliased series and the PNG encoding. Each series is
 * first drawn into a coverage mask of its panel's plot area and then mixed
 * into the image once, so overlapping segments of one translucent series
 * do not darken where they meet. */
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/plot.h"
#include "runtime/plot_internal.h"
#include "runtime/safetensors.h"

#define TEXT_SCALE 2
#define TITLE_SCALE 3
#define LINE_H (RT_PLOT_CELL_H * TEXT_SCALE) /* height of one line of text */
#define DIGIT_H (7 * TEXT_SCALE)              /* height of a digit or capital above the baseline */
#define TICK_LEN 5
#define GAP 6
#define MIN_PANEL_W 200
#define MIN_PANEL_H 120

#define COLOR_TEXT 0x222222u
#define COLOR_FRAME 0x444444u
#define COLOR_GRID 0xE4E4E4u
#define COLOR_ZERO 0x999999u
#define COLOR_BACKGROUND 0xFFFFFFu

uint32_t rt_plot_palette(int i)
{
    /* The Tableau "tab10" palette, matplotlib's default color cycle since
     * version 2.0 (matplotlib documentation, "Specifying colors"). */
    static const uint32_t colors[] = {0x1F77B4, 0xFF7F0E, 0x2CA02C, 0xD62728, 0x9467BD,
                                      0x8C564B, 0xE377C2, 0x7F7F7F, 0xBCBD22, 0x17BECF};
    int n = (int)(sizeof colors / sizeof colors[0]);
    return colors[((i % n) + n) % n];
}

/* ---- canvas ---- */

void rt_plot_blend(rt_plot_canvas *c, int x, int y, uint32_t color, double alpha)
{
    if (x < c->clip_x0 || x >= c->clip_x1 || y < c->clip_y0 || y >= c->clip_y1 || alpha <= 0)
        return;
    if (alpha > 1)
        alpha = 1;
    uint8_t *p = c->rgb + ((size_t)y * (size_t)c->width + (size_t)x) * 3;
    for (int k = 0; k < 3; k++) {
        double src = (double)((color >> (16 - 8 * k)) & 0xFF);
        p[k] = (uint8_t)lrint((double)p[k] + alpha * (src - (double)p[k]));
    }
}

void rt_plot_fill(rt_plot_canvas *c, int x0, int y0, int x1, int y1, uint32_t color)
{
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
            rt_plot_blend(c, x, y, color, 1.0);
}

static void set_clip(rt_plot_canvas *c, int x0, int y0, int x1, int y1)
{
    c->clip_x0 = x0 < 0 ? 0 : x0;
    c->clip_y0 = y0 < 0 ? 0 : y0;
    c->clip_x1 = x1 > c->width ? c->width : x1;
    c->clip_y1 = y1 > c->height ? c->height : y1;
}

/* ---- coverage masks ---- */

/* Coverage in [0, 1] per pixel of a plot area. Pixel (i, j) has its
 * center at (i + 0.5, j + 0.5) in area coordinates. */
typedef struct mask {
    int width, height;
    float *cover;
} mask;

static void mask_put(mask *m, int x, int y, double coverage)
{
    if (x < 0 || y < 0 || x >= m->width || y >= m->height || coverage <= 0)
        return;
    float *p = &m->cover[(size_t)y * (size_t)m->width + (size_t)x];
    if (coverage > *p)
        *p = (float)(coverage > 1 ? 1 : coverage);
}

/* Fills the pixels whose centers lie in [x0, x1) x [y0, y1). */
static void mask_rect(mask *m, double x0, double y0, double x1, double y1)
{
    int i0 = (int)fmax(ceil(x0 - 0.5), 0), i1 = (int)fmin(ceil(x1 - 0.5), m->width);
    int j0 = (int)fmax(ceil(y0 - 0.5), 0), j1 = (int)fmin(ceil(y1 - 0.5), m->height);
    for (int j = j0; j < j1; j++)
        for (int i = i0; i < i1; i++)
            mask_put(m, i, j, 1.0);
}

static double distance_to_segment(double px, double py, double x0, double y0, double x1, double y1)
{
    double dx = x1 - x0, dy = y1 - y0;
    double len2 = dx * dx + dy * dy;
    double t = len2 > 0 ? ((px - x0) * dx + (py - y0) * dy) / len2 : 0;
    t = fmin(fmax(t, 0), 1);
    return hypot(px - (x0 + t * dx), py - (y0 + t * dy));
}

/* Draws a segment of width 2 * half_width with a one-pixel soft edge.
 * Long segments are visited in pieces of at most 8 pixels, so the pixels
 * examined stay proportional to the length, not to the bounding box. */
static void mask_segment(mask *m, double x0, double y0, double x1, double y1, double half_width)
{
    double reach = half_width + 1;
    int pieces = (int)ceil(hypot(x1 - x0, y1 - y0) / 8);
    if (pieces < 1)
        pieces = 1;
    for (int k = 0; k < pieces; k++) {
        double ax = x0 + (x1 - x0) * k / pieces, ay = y0 + (y1 - y0) * k / pieces;
        double bx = x0 + (x1 - x0) * (k + 1) / pieces, by = y0 + (y1 - y0) * (k + 1) / pieces;
        int i0 = (int)floor(fmin(ax, bx) - reach), i1 = (int)ceil(fmax(ax, bx) + reach);
        int j0 = (int)floor(fmin(ay, by) - reach), j1 = (int)ceil(fmax(ay, by) + reach);
        i0 = i0 < 0 ? 0 : i0;
        j0 = j0 < 0 ? 0 : j0;
        i1 = i1 > m->width ? m->width : i1;
        j1 = j1 > m->height ? m->height : j1;
        for (int j = j0; j < j1; j++)
            for (int i = i0; i < i1; i++) {
                double dist = distance_to_segment(i + 0.5, j + 0.5, x0, y0, x1, y1);
                mask_put(m, i, j, half_width + 0.5 - dist);
            }
    }
}

/* Mixes the mask into the canvas at (left, top) and clears it. */
static void mask_composite(mask *m, rt_plot_canvas *c, int left, int top, uint32_t color, double opacity)
{
    for (int j = 0; j < m->height; j++)
        for (int i = 0; i < m->width; i++) {
            float *p = &m->cover[(size_t)j * (size_t)m->width + (size_t)i];
            if (*p > 0)
                rt_plot_blend(c, left + i, top + j, color, opacity * *p);
            *p = 0;
        }
}

/* ---- axes ---- */

/* Returns a "nice" number 1, 2, 5 or 10 times a power of ten: the nearest
 * to x when round_to_nearest, else the smallest at or above x. */
static double nice_number(double x, bool round_to_nearest)
{
    static const double mantissas[3] = {1, 2, 5};
    /* Each threshold lies near the geometric mean of two neighboring
     * mantissas (1.41, 3.16, 7.07). */
    static const double round_up_from[3] = {1.5, 3, 7};
    double exponent = floor(log10(x));
    double fraction = x / pow(10, exponent);
    for (int i = 0; i < 3; i++) {
        bool fits = round_to_nearest ? fraction < round_up_from[i] : fraction <= mantissas[i];
        if (fits)
            return mantissas[i] * pow(10, exponent);
    }
    return 10 * pow(10, exponent);
}

/* An axis range [lo, hi] with ticks at first + k * step inside it. */
typedef struct axis {
    double lo, hi;
    double step;
    double first;
    int nticks;
} axis;

/* Picks about `target` ticks over [lo, hi], at least min_step apart (0 for
 * no minimum). With `extend`, the range grows to the ticks just outside
 * it. A range of zero width is widened first. */
static axis make_axis(double lo, double hi, int target, bool extend, double min_step)
{
    axis a;
    if (!(hi > lo)) {
        double pad = lo == 0 ? 1 : fabs(lo) * 0.5;
        lo -= pad;
        hi += pad;
    }
    if (target < 2)
        target = 2;
    a.step = nice_number(nice_number(hi - lo, false) / (target - 1), true);
    if (a.step < min_step)
        a.step = min_step;
    if (extend) {
        lo = floor(lo / a.step + 1e-9) * a.step;
        hi = ceil(hi / a.step - 1e-9) * a.step;
    }
    a.lo = lo;
    a.hi = hi;
    double k0 = ceil(lo / a.step - 1e-9);
    a.first = k0 * a.step;
    a.nticks = (int)floor((hi - a.first) / a.step + 1e-9) + 1;
    if (a.nticks < 0)
        a.nticks = 0;
    return a;
}

static double tick_value(const axis *a, int k)
{
    double v = a->first + k * a->step;
    /* Snap values that float error leaves near zero, so no "-0" label. */
    return fabs(v) < a->step * 1e-9 ? 0 : v;
}

/* Formats a tick value with just enough digits for the axis step: fixed
 * point, or "1.5e6" style when the magnitudes are very large or small. */
static void format_tick(const axis *a, double v, char *buf, size_t cap)
{
    double magnitude = fmax(fabs(a->lo), fabs(a->hi));
    int step_exponent = (int)floor(log10(a->step) + 1e-9);
    if (v == 0) {
        snprintf(buf, cap, "0");
        return;
    }
    if (magnitude >= 1e6 || magnitude < 1e-3) {
        int exponent = (int)floor(log10(magnitude) + 1e-9);
        int digits = exponent - step_exponent;
        char mantissa[32];
        if (digits < 0)
            digits = 0;
        if (digits > 12)
            digits = 12;
        snprintf(mantissa, sizeof mantissa, "%.*e", digits, v);
        /* C writes "1.5e+06"; the label reads "1.5e6". */
        char *e = strchr(mantissa, 'e');
        int printed_exponent = e ? atoi(e + 1) : 0;
        if (e)
            *e = '\0';
        snprintf(buf, cap, "%se%d", mantissa, printed_exponent);
        return;
    }
    int decimals = step_exponent < 0 ? -step_exponent : 0;
    snprintf(buf, cap, "%.*f", decimals, v);
}

/* ---- one panel ---- */

typedef struct data_range {
    double x_lo, x_hi, y_lo, y_hi;
    bool any;
    bool has_zero_base; /* a stem or bar series, which starts at y = 0 */
    bool integer_x;     /* every x is a whole number, such as a step or a channel */
} data_range;

static double series_x(const rt_plot_series *s, int64_t i)
{
    return s->x ? s->x[i] : (double)i;
}

/* The mean gap between consecutive x values of a series, or 1. */
static double series_spacing(const rt_plot_series *s)
{
    if (s->n < 2)
        return 1;
    double span = series_x(s, s->n - 1) - series_x(s, 0);
    return span > 0 ? span / (double)(s->n - 1) : 1;
}

static data_range find_range(const rt_plot_panel *p)
{
    data_range r = {INFINITY, -INFINITY, INFINITY, -INFINITY, false, false, true};
    for (int k = 0; k < p->nseries; k++) {
        const rt_plot_series *s = &p->series[k];
        double pad = s->style == RT_PLOT_LINE ? 0 : 0.5 * series_spacing(s);
        r.has_zero_base |= s->style != RT_PLOT_LINE;
        for (int64_t i = 0; i < s->n; i++) {
            double x = series_x(s, i), y = s->y[i];
            if (!isfinite(x) || !isfinite(y))
                continue;
            r.any = true;
            r.integer_x &= x == floor(x);
            r.x_lo = fmin(r.x_lo, x - pad);
            r.x_hi = fmax(r.x_hi, x + pad);
            r.y_lo = fmin(r.y_lo, y);
            r.y_hi = fmax(r.y_hi, y);
        }
    }
    if (!r.any) {
        r.x_lo = r.y_lo = 0;
        r.x_hi = r.y_hi = 1;
    }
    if (r.has_zero_base) {
        r.y_lo = fmin(r.y_lo, 0);
        r.y_hi = fmax(r.y_hi, 0);
    }

    /* Margins keep markers and line ends at the extremes off the frame.
     * Stems and bars keep their base at y = 0 on the frame. */
    double x_margin = r.has_zero_base ? 0 : 0.02 * (r.x_hi - r.x_lo);
    double y_margin = 0.03 * (r.y_hi - r.y_lo);
    r.x_lo -= x_margin;
    r.x_hi += x_margin;
    if (!r.has_zero_base || r.y_lo < 0)
        r.y_lo -= y_margin;
    if (!r.has_zero_base || r.y_hi > 0)
        r.y_hi += y_margin;
    return r;
}

/* Where a panel's parts go, in canvas pixels. */
typedef struct panel_layout {
    int x, y, width, height;  /* the whole panel */
    int title_y;
    int legend_y;             /* first legend row */
    int legend_rows;
    int left, top, right, bottom; /* the plot area [left, right) x [top, bottom) */
    axis xa, ya;
} panel_layout;

#define SWATCH_W 24

static int legend_entry_width(const rt_plot_series *s)
{
    return SWATCH_W + GAP + rt_plot_text_width(s->label, TEXT_SCALE) + 3 * GAP;
}

static bool has_label(const rt_plot_series *s)
{
    return s->label && s->label[0];
}

/* Counts the rows the legend needs when entries wrap at `width`. */
static int count_legend_rows(const rt_plot_panel *p, int width)
{
    int rows = 0, used = 0;
    for (int k = 0; k < p->nseries; k++) {
        if (!has_label(&p->series[k]))
            continue;
        int w = legend_entry_width(&p->series[k]);
        if (rows == 0 || (used > 0 && used + w > width)) {
            rows++;
            used = 0;
        }
        used += w;
    }
    return rows;
}

static int layout_panel(const rt_plot_panel *p, int x, int y, int width, int height, panel_layout *l, ir_diag *d)
{
    memset(l, 0, sizeof *l);
    l->x = x;
    l->y = y;
    l->width = width;
    l->height = height;
    data_range r = find_range(p);

    int top = y + GAP;
    l->title_y = top;
    if (p->title && p->title[0])
        top += LINE_H + GAP;
    l->legend_y = top;
    l->legend_rows = count_legend_rows(p, width - 2 * GAP);
    top += l->legend_rows * (LINE_H + GAP);
    top += DIGIT_H / 2; /* room for the top tick label, centered on its tick */

    int bottom = y + height - GAP - LINE_H - GAP - TICK_LEN;
    if (p->x_label && p->x_label[0])
        bottom -= LINE_H + GAP;

    l->ya = make_axis(r.y_lo, r.y_hi, (bottom - top) / 50 + 2, true, 0);
    int label_w = 0;
    for (int k = 0; k < l->ya.nticks; k++) {
        char text[64];
        format_tick(&l->ya, tick_value(&l->ya, k), text, sizeof text);
        int w = rt_plot_text_width(text, TEXT_SCALE);
        label_w = w > label_w ? w : label_w;
    }
    int left = x + GAP + label_w + GAP + TICK_LEN;
    if (p->y_label && p->y_label[0])
        left += LINE_H + 2 * GAP;
    int right = x + width - 3 * GAP;

    /* Labels about 7 characters wide need about 110 pixels each. */
    l->xa = make_axis(r.x_lo, r.x_hi, (right - left) / 110 + 2, false, r.integer_x ? 1 : 0);
    char last[64];
    format_tick(&l->xa, tick_value(&l->xa, l->xa.nticks - 1), last, sizeof last);
    int overhang = rt_plot_text_width(last, TEXT_SCALE) / 2 + GAP;
    if (x + width - overhang < right)
        right = x + width - overhang;

    if (right - left < 40 || bottom - top < 30) {
        ir_diag_file_error(d, NULL, "plot panel '%s' of %d x %d pixels is too small for its labels; use a larger "
                           "panel", p->title ? p->title : "", width, height);
        return -1;
    }
    l->left = left;
    l->top = top;
    l->right = right;
    l->bottom = bottom;
    return 0;
}

static double to_px(const panel_layout *l, double x)
{
    return (x - l->xa.lo) / (l->xa.hi - l->xa.lo) * (l->right - l->left);
}

static double to_py(const panel_layout *l, double y)
{
    return (l->ya.hi - y) / (l->ya.hi - l->ya.lo) * (l->bottom - l->top);
}

static void draw_axes(rt_plot_canvas *c, const rt_plot_panel *p, const panel_layout *l, bool zero_line)
{
    char text[64];
    for (int k = 0; k < l->ya.nticks; k++) {
        double v = tick_value(&l->ya, k);
        int py = l->top + (int)lrint(to_py(l, v));
        if (py > l->top && py < l->bottom - 1)
            rt_plot_fill(c, l->left + 1, py, l->right - 1, py + 1, COLOR_GRID);
        rt_plot_fill(c, l->left - TICK_LEN, py, l->left, py + 1, COLOR_FRAME);
        format_tick(&l->ya, v, text, sizeof text);
        int w = rt_plot_text_width(text, TEXT_SCALE);
        rt_plot_draw_text(c, l->left - TICK_LEN - GAP - w, py - DIGIT_H / 2, text, TEXT_SCALE,
                          COLOR_TEXT);
    }
    for (int k = 0; k < l->xa.nticks; k++) {
        double v = tick_value(&l->xa, k);
        int px = l->left + (int)lrint(to_px(l, v));
        if (px > l->left && px < l->right - 1)
            rt_plot_fill(c, px, l->top + 1, px + 1, l->bottom - 1, COLOR_GRID);
        rt_plot_fill(c, px, l->bottom, px + 1, l->bottom + TICK_LEN, COLOR_FRAME);
        format_tick(&l->xa, v, text, sizeof text);
        int w = rt_plot_text_width(text, TEXT_SCALE);
        rt_plot_draw_text(c, px - w / 2, l->bottom + TICK_LEN + GAP, text, TEXT_SCALE, COLOR_TEXT);
    }
    if (zero_line && l->ya.lo < 0 && l->ya.hi > 0) {
        int py = l->top + (int)lrint(to_py(l, 0));
        rt_plot_fill(c, l->left, py, l->right, py + 1, COLOR_ZERO);
    }
    if (p->x_label && p->x_label[0]) {
        int w = rt_plot_text_width(p->x_label, TEXT_SCALE);
        rt_plot_draw_text(c, (l->left + l->right - w) / 2, l->bottom + TICK_LEN + GAP + LINE_H + GAP, p->x_label,
                          TEXT_SCALE, COLOR_TEXT);
    }
    if (p->y_label && p->y_label[0]) {
        int h = rt_plot_text_width(p->y_label, TEXT_SCALE);
        rt_plot_draw_text_up(c, l->x + GAP, (l->top + l->bottom - h) / 2, p->y_label, TEXT_SCALE, COLOR_TEXT);
    }
}

static void draw_frame(rt_plot_canvas *c, const panel_layout *l)
{
    rt_plot_fill(c, l->left - 1, l->top - 1, l->right + 1, l->top, COLOR_FRAME);
    rt_plot_fill(c, l->left - 1, l->bottom, l->right + 1, l->bottom + 1, COLOR_FRAME);
    rt_plot_fill(c, l->left - 1, l->top - 1, l->left, l->bottom + 1, COLOR_FRAME);
    rt_plot_fill(c, l->right, l->top - 1, l->right + 1, l->bottom + 1, COLOR_FRAME);
}

static uint32_t series_color(const rt_plot_series *s, int index)
{
    return s->color ? s->color : rt_plot_palette(index);
}

static void mask_marker(mask *m, double px, double py)
{
    mask_rect(m, px - 2.5, py - 2.5, px + 2.5, py + 2.5);
}

static void mask_line_series(mask *m, const panel_layout *l, const rt_plot_series *s)
{
    double half_width = s->faint ? 0.75 : 1.0;
    for (int64_t i = 0; i < s->n; i++) {
        double x = series_x(s, i), y = s->y[i];
        if (!isfinite(x) || !isfinite(y))
            continue;
        double px = to_px(l, x), py = to_py(l, y);
        bool prev = i > 0 && isfinite(series_x(s, i - 1)) && isfinite(s->y[i - 1]);
        bool next = i + 1 < s->n && isfinite(series_x(s, i + 1)) && isfinite(s->y[i + 1]);
        if (prev)
            mask_segment(m, to_px(l, series_x(s, i - 1)), to_py(l, s->y[i - 1]), px, py, half_width);
        if (s->markers || (!prev && !next))
            mask_marker(m, px, py);
    }
}

/* Stems are one or two pixels wide, and bars 80% of the x spacing; both
 * run from y = 0 to the value. */
static void mask_zero_based_series(mask *m, const panel_layout *l, const rt_plot_series *s)
{
    double spacing = series_spacing(s) / (l->xa.hi - l->xa.lo) * (l->right - l->left);
    double width = s->style == RT_PLOT_BAR ? fmax(1, 0.8 * spacing) : (spacing < 4 ? 1 : 2);
    double zero = to_py(l, 0);
    for (int64_t i = 0; i < s->n; i++) {
        double x = series_x(s, i), y = s->y[i];
        if (!isfinite(x) || !isfinite(y))
            continue;
        double px = to_px(l, x), py = to_py(l, y);
        double x0 = s->style == RT_PLOT_BAR ? px - width / 2 : floor(px - width / 2) + 0.5;
        double y0 = fmin(py, zero), y1 = fmax(py, zero);
        /* Every point is at least one pixel tall, so zeros stay visible. */
        if (y1 - y0 < 1)
            y1 = y0 + 1;
        mask_rect(m, x0, y0, x0 + width, y1);
        if (s->markers || (s->style == RT_PLOT_STEM && spacing >= 8))
            mask_marker(m, px, py);
    }
}

static void draw_legend(rt_plot_canvas *c, const rt_plot_panel *p, const panel_layout *l)
{
    int x = l->x + GAP, y = l->legend_y, row_end = l->x + l->width - GAP;
    for (int k = 0; k < p->nseries; k++) {
        const rt_plot_series *s = &p->series[k];
        if (!has_label(s))
            continue;
        int w = legend_entry_width(s);
        if (x > l->x + GAP && x + w > row_end) {
            x = l->x + GAP;
            y += LINE_H + GAP;
        }
        uint32_t color = series_color(s, k);
        double opacity = s->faint ? 0.3 : 1.0;
        int mid = y + DIGIT_H / 2;
        for (int py = mid - 6; py < mid + 6; py++)
            for (int px = x; px < x + SWATCH_W; px++) {
                bool inside = s->style == RT_PLOT_LINE ? (py >= mid - 1 && py <= mid) : (px >= x + 6 && px < x + 18);
                if (inside)
                    rt_plot_blend(c, px, py, color, opacity);
            }
        rt_plot_draw_text(c, x + SWATCH_W + GAP, y, s->label, TEXT_SCALE, COLOR_TEXT);
        x += w;
    }
}

static int draw_panel(rt_plot_canvas *c, const rt_plot_panel *p, int x, int y, int width, int height, ir_diag *d)
{
    panel_layout l;
    if (layout_panel(p, x, y, width, height, &l, d) != 0)
        return -1;
    set_clip(c, x, y, x + width, y + height);
    if (p->title && p->title[0])
        rt_plot_draw_text(c, x + GAP, l.title_y, p->title, TEXT_SCALE, COLOR_TEXT);
    draw_legend(c, p, &l);
    bool zero_line = false;
    for (int k = 0; k < p->nseries; k++)
        zero_line |= p->series[k].style != RT_PLOT_LINE;
    draw_axes(c, p, &l, zero_line);

    mask m = {l.right - l.left, l.bottom - l.top, NULL};
    m.cover = calloc((size_t)m.width * (size_t)m.height, sizeof *m.cover);
    if (!m.cover) {
        ir_diag_file_error(d, NULL, "out of memory for a plot panel of %d x %d pixels", width, height);
        return -1;
    }
    set_clip(c, l.left, l.top, l.right, l.bottom);
    for (int k = 0; k < p->nseries; k++) {
        const rt_plot_series *s = &p->series[k];
        if (s->style == RT_PLOT_LINE)
            mask_line_series(&m, &l, s);
        else
            mask_zero_based_series(&m, &l, s);
        mask_composite(&m, c, l.left, l.top, series_color(s, k), s->faint ? 0.3 : 1.0);
    }
    free(m.cover);
    set_clip(c, 0, 0, c->width, c->height);
    draw_frame(c, &l);
    return 0;
}

/* ---- the figure ---- */

int rt_plot_render(const rt_plot_figure *f, rt_plot_image *out, ir_diag *d)
{
    memset(out, 0, sizeof *out);
    int columns = f->columns > 0 ? f->columns : 1;
    int panel_w = f->panel_width > 0 ? f->panel_width : 800;
    int panel_h = f->panel_height > 0 ? f->panel_height : 450;
    if (f->npanels < 1) {
        ir_diag_file_error(d, NULL, "the figure has no panels; give at least one");
        return -1;
    }
    if (columns > f->npanels)
        columns = f->npanels;
    if (panel_w < MIN_PANEL_W || panel_h < MIN_PANEL_H) {
        ir_diag_file_error(d, NULL, "plot panels of %d x %d pixels are too small; use at least %d x %d", panel_w,
                           panel_h, MIN_PANEL_W, MIN_PANEL_H);
        return -1;
    }
    int rows = (f->npanels + columns - 1) / columns;
    int title_h = f->title && f->title[0] ? RT_PLOT_CELL_H * TITLE_SCALE + 2 * GAP : 0;
    long long width = (long long)columns * panel_w, height = (long long)rows * panel_h + title_h;
    if (width > RT_PLOT_MAX_SIDE || height > RT_PLOT_MAX_SIDE) {
        ir_diag_file_error(d, NULL, "the figure would be %lld x %lld pixels, more than %d on a side; use fewer "
                           "or smaller panels", width, height, RT_PLOT_MAX_SIDE);
        return -1;
    }
    rt_plot_canvas c = {(int)width, (int)height, malloc((size_t)width * (size_t)height * 3), 0, 0, 0, 0};
    if (!c.rgb) {
        ir_diag_file_error(d, NULL, "out of memory for a %lld x %lld image", width, height);
        return -1;
    }
    set_clip(&c, 0, 0, c.width, c.height);
    rt_plot_fill(&c, 0, 0, c.width, c.height, COLOR_BACKGROUND);
    if (title_h > 0) {
        /* A title too wide for the large font takes the text font, and
         * one too wide for that is cut at the right edge. */
        int scale = rt_plot_text_width(f->title, TITLE_SCALE) + 2 * GAP <= c.width ? TITLE_SCALE : TEXT_SCALE;
        int w = rt_plot_text_width(f->title, scale);
        int x = w + 2 * GAP <= c.width ? (c.width - w) / 2 : GAP;
        rt_plot_draw_text(&c, x, GAP, f->title, scale, COLOR_TEXT);
    }
    for (int k = 0; k < f->npanels; k++) {
        int x = (k % columns) * panel_w, y = title_h + (k / columns) * panel_h;
        if (draw_panel(&c, &f->panels[k], x, y, panel_w, panel_h, d) != 0) {
            free(c.rgb);
            return -1;
        }
    }
    out->width = c.width;
    out->height = c.height;
    out->rgb = c.rgb;
    return 0;
}

void rt_plot_image_free(rt_plot_image *img)
{
    free(img->rgb);
    img->rgb = NULL;
    img->width = img->height = 0;
}

/* ---- PNG output ---- */

int rt_plot_image_write_png(const rt_plot_image *img, const char *path, ir_diag *d)
{
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    image.width = (png_uint_32)img->width;
    image.height = (png_uint_32)img->height;
    image.format = PNG_FORMAT_RGB;
    png_alloc_size_t size = 0;
    /* The first call measures the encoded size, the second encodes. */
    if (!png_image_write_to_memory(&image, NULL, &size, 0, img->rgb, 0, NULL)) {
        ir_diag_file_error(d, path, "PNG encoding failed: %s", image.message);
        png_image_free(&image);
        return -1;
    }
    void *buffer = malloc(size);
    if (!buffer) {
        ir_diag_file_error(d, path, "out of memory for a PNG of %zu bytes", (size_t)size);
        return -1;
    }
    if (!png_image_write_to_memory(&image, buffer, &size, 0, img->rgb, 0, NULL)) {
        ir_diag_file_error(d, path, "PNG encoding failed: %s", image.message);
        png_image_free(&image);
        free(buffer);
        return -1;
    }
    rt_atomic_file f;
    int rc = rt_atomic_file_open(&f, path, d);
    if (rc == 0) {
        rt_atomic_file_write(&f, buffer, size);
        rc = rt_atomic_file_commit(&f);
    }
    free(buffer);
    return rc;
}

int rt_plot_write_png(const rt_plot_figure *f, const char *path, ir_diag *d)
{
    rt_plot_image img;
    if (rt_plot_render(f, &img, d) != 0)
        return -1;
    int rc = rt_plot_image_write_png(&img, path, d);
    rt_plot_image_free(&img);
    return rc;
}
