/* Charts as PNG files for quadc's diagnostics (`quadc outliers`,
 * `quadc plot-log`): panels of line, stem and bar series with axes, tick
 * labels, titles and a legend, drawn into an RGB image with a built-in
 * 5x7 bitmap font and written with libpng. */
#ifndef QUADC_RUNTIME_PLOT_H
#define QUADC_RUNTIME_PLOT_H

#include <stdbool.h>
#include <stdint.h>

#include "ir/diag.h"

/* The largest width or height of a figure, in pixels. */
#define RT_PLOT_MAX_SIDE 16384

typedef enum rt_plot_style {
    RT_PLOT_LINE, /* points joined by straight segments */
    RT_PLOT_STEM, /* a vertical line from y = 0 to each point */
    RT_PLOT_BAR,  /* a filled bar from y = 0 to each point, as wide as the x spacing allows */
} rt_plot_style;

/* One data series of a panel. Points with a non-finite x or y are not
 * drawn, and a line breaks at them. */
typedef struct rt_plot_series {
    const char *label; /* legend entry, or NULL for none */
    const double *x;   /* n values, or NULL for x = 0, 1, ..., n - 1 */
    const double *y;   /* n values */
    int64_t n;
    rt_plot_style style;
    uint32_t color;    /* 0xRRGGBB, or 0 for the palette color of the series' index */
    bool faint;        /* drawn at 30% opacity, for raw data behind a smoothed series */
    bool markers;      /* also a filled square at every point */
} rt_plot_series;

typedef struct rt_plot_panel {
    const char *title;   /* may be NULL */
    const char *x_label; /* may be NULL */
    const char *y_label; /* may be NULL */
    const rt_plot_series *series;
    int nseries;
} rt_plot_panel;

/* Panels fill a grid row by row, each panel_width x panel_height pixels,
 * below the figure title. */
typedef struct rt_plot_figure {
    const char *title; /* may be NULL */
    const rt_plot_panel *panels;
    int npanels;
    int columns;      /* panels per row; 0 means 1 */
    int panel_width;  /* pixels; 0 means 800 */
    int panel_height; /* pixels; 0 means 450 */
} rt_plot_figure;

/* An 8-bit RGB image, rows top to bottom, 3 bytes per pixel. */
typedef struct rt_plot_image {
    int width;
    int height;
    uint8_t *rgb;
} rt_plot_image;

/* Draws the figure into a new image. Fails when a panel is smaller than
 * 200 x 120 pixels or too small for its labels, and when the figure
 * exceeds RT_PLOT_MAX_SIDE on a side. Returns 0, or -1 after reporting
 * through d. */
int rt_plot_render(const rt_plot_figure *f, rt_plot_image *out, ir_diag *d);
void rt_plot_image_free(rt_plot_image *img);

/* Encodes the image as PNG and writes it to a temporary file beside path
 * that is renamed over path only when complete, so a failure never leaves
 * a partial file. Returns 0, or -1 after reporting an error naming path. */
int rt_plot_image_write_png(const rt_plot_image *img, const char *path, ir_diag *d);

/* Renders the figure and writes it as PNG to path. Returns 0 or -1. */
int rt_plot_write_png(const rt_plot_figure *f, const char *path, ir_diag *d);

/* Returns the palette color of series index i, 0xRRGGBB. */
uint32_t rt_plot_palette(int i);

#endif
