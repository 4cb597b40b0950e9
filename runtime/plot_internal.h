/* Drawing helpers shared by runtime/plot.c and runtime/plot_font.c: an RGB
 * canvas with a clip rectangle, and text in the built-in bitmap font. */
#ifndef QUADC_RUNTIME_PLOT_INTERNAL_H
#define QUADC_RUNTIME_PLOT_INTERNAL_H

#include <stdint.h>

/* A glyph is 5 pixels wide and 7 tall above the baseline, with one more
 * row for descenders, in a cell of RT_PLOT_CELL_W x RT_PLOT_CELL_H that
 * leaves one blank column and row between characters. */
#define RT_PLOT_GLYPH_ROWS 8
#define RT_PLOT_CELL_W 6
#define RT_PLOT_CELL_H 9

typedef struct rt_plot_canvas {
    int width, height;
    uint8_t *rgb;
    /* Pixels outside [clip_x0, clip_x1) x [clip_y0, clip_y1) are never
     * written. */
    int clip_x0, clip_y0, clip_x1, clip_y1;
} rt_plot_canvas;

/* Mixes color (0xRRGGBB) into pixel (x, y) with weight alpha in [0, 1]. */
void rt_plot_blend(rt_plot_canvas *c, int x, int y, uint32_t color, double alpha);
/* Fills [x0, x1) x [y0, y1) with color. */
void rt_plot_fill(rt_plot_canvas *c, int x0, int y0, int x1, int y1, uint32_t color);

/* Returns the width in pixels of text drawn at an integer scale. */
int rt_plot_text_width(const char *text, int scale);
/* Draws text with its top-left corner at (x, y). Characters outside
 * printable ASCII are drawn as '?'. */
void rt_plot_draw_text(rt_plot_canvas *c, int x, int y, const char *text, int scale, uint32_t color);
/* Draws text turned 90 degrees counterclockwise, reading from bottom to
 * top, with the top-left corner of its box at (x, y). The box is
 * RT_PLOT_CELL_H * scale wide and rt_plot_text_width(text, scale) tall. */
void rt_plot_draw_text_up(rt_plot_canvas *c, int x, int y, const char *text, int scale, uint32_t color);

#endif
