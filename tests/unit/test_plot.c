/* Tests for runtime/plot. Figures are written as PNG and decoded again with
 * libpng. The checks cover their size, the background, where each series'
 * color appears and bar heights proportional to their values. A failed
 * write must leave no file and no temporary file. */
#include <dirent.h>
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "runtime/plot.h"
#include "runtime/plot_internal.h"

#define RED 0xD62728u
#define BLUE 0x1F77B4u
#define GREEN 0x2CA02Cu

typedef struct decoded {
    int width, height;
    uint8_t *rgb;
} decoded;

static bool decode_png(const char *path, decoded *out)
{
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&image, path))
        return false;
    image.format = PNG_FORMAT_RGB;
    out->width = (int)image.width;
    out->height = (int)image.height;
    out->rgb = malloc(PNG_IMAGE_SIZE(image));
    if (!out->rgb || !png_image_finish_read(&image, NULL, out->rgb, 0, NULL)) {
        png_image_free(&image);
        free(out->rgb);
        return false;
    }
    return true;
}

static uint32_t pixel(const decoded *img, int x, int y)
{
    const uint8_t *p = img->rgb + ((size_t)y * (size_t)img->width + (size_t)x) * 3;
    return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}

/* Counts the pixels of exactly `color` in columns [x0, x1). */
static int count_color(const decoded *img, int x0, int x1, uint32_t color)
{
    int n = 0;
    for (int y = 0; y < img->height; y++)
        for (int x = x0; x < x1; x++)
            n += pixel(img, x, y) == color;
    return n;
}

static char temp_dir[] = "/tmp/quadc_test_plot_XXXXXX";

static void path_in_temp(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", temp_dir, name);
}

/* Counts the entries of the temporary directory other than . and ..,
 * so leftover temporary files show up. */
static int count_entries(void)
{
    DIR *dir = opendir(temp_dir);
    int n = 0;
    for (struct dirent *e; dir && (e = readdir(dir));)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    if (dir)
        closedir(dir);
    return n;
}

static void test_text_width(void)
{
    CHECK_EQ_INT(rt_plot_text_width("", 2), 0);
    /* Three 6-pixel cells at scale 2 without the last blank column. */
    CHECK_EQ_INT(rt_plot_text_width("abc", 2), 3 * 12 - 2);
    CHECK_EQ_INT(rt_plot_text_width("1e-5", 1), 4 * 6 - 1);
}

/* Two panels side by side: red bars on the left, a blue line on the right. */
static void test_two_panels(ir_diag *d)
{
    double bars[4] = {1, 2, 3, 4};
    double line_x[3] = {0, 50, 100}, line_y[3] = {0.5, NAN, 0.5};
    double line2_x[2] = {0, 100}, line2_y[2] = {0.25, 0.25};
    rt_plot_series left = {.label = "bars", .y = bars, .n = 4, .style = RT_PLOT_BAR, .color = RED};
    rt_plot_series right[2] = {
        {.label = "flat", .x = line2_x, .y = line2_y, .n = 2, .color = BLUE},
        {.label = "broken", .x = line_x, .y = line_y, .n = 3, .color = GREEN, .markers = true},
    };
    rt_plot_panel panels[2] = {
        {.title = "bars", .x_label = "channel", .y_label = "value", .series = &left, .nseries = 1},
        {.title = "lines", .x_label = "step", .series = right, .nseries = 2},
    };
    rt_plot_figure f = {.panels = panels, .npanels = 2, .columns = 2, .panel_width = 400, .panel_height = 300};
    char path[256];
    path_in_temp(path, sizeof path, "two.png");
    CHECK_EQ_INT(rt_plot_write_png(&f, path, d), 0);

    decoded img = {0};
    CHECK(decode_png(path, &img));
    if (!img.rgb)
        return;
    CHECK_EQ_INT(img.width, 800);
    CHECK_EQ_INT(img.height, 300);
    CHECK_EQ_INT(pixel(&img, 0, 0), 0xFFFFFF);
    CHECK_EQ_INT(pixel(&img, 799, 299), 0xFFFFFF);

    /* The red bars and their legend swatch are in the left panel only,
     * the blue and green lines in the right one. */
    CHECK(count_color(&img, 0, 400, RED) > 1000);
    CHECK_EQ_INT(count_color(&img, 400, 800, RED), 0);
    CHECK(count_color(&img, 400, 800, BLUE) > 300);
    CHECK_EQ_INT(count_color(&img, 0, 400, BLUE), 0);
    CHECK(count_color(&img, 400, 800, GREEN) > 40);

    /* The bars: four runs of red columns below the legend, each as tall
     * as its value times the height of value 1. The height of value 1 is
     * rounded to a pixel, which bar k scales k times, and the frame may
     * cover one row, hence the tolerance of k + 2 pixels. */
    int runs = 0, heights[8] = {0}, widths[8] = {0};
    bool in_run = false;
    for (int x = 0; x < 400; x++) {
        int h = 0;
        for (int y = 60; y < 300; y++)
            h += pixel(&img, x, y) == RED;
        if (h > 0 && !in_run && runs < 8)
            runs++;
        in_run = h > 0;
        if (h > 0 && runs <= 8) {
            heights[runs - 1] = h > heights[runs - 1] ? h : heights[runs - 1];
            widths[runs - 1]++;
        }
    }
    CHECK_EQ_INT(runs, 4);
    for (int k = 1; k < 4; k++) {
        CHECK_CLOSE(heights[k], heights[0] * (k + 1), k + 2, 0);
        CHECK_CLOSE(widths[k], widths[0], 1, 0);
    }
    CHECK(heights[3] > 100);
    free(img.rgb);
}

/* A figure title adds a band of text above the panels. */
static void test_title_band(ir_diag *d)
{
    double y[2] = {1, 2};
    rt_plot_series s = {.y = y, .n = 2};
    rt_plot_panel p = {.series = &s, .nseries = 1};
    rt_plot_figure f = {.title = "Title 1.5e-3", .panels = &p, .npanels = 1, .panel_width = 300,
                        .panel_height = 200};
    rt_plot_image img;
    CHECK_EQ_INT(rt_plot_render(&f, &img, d), 0);
    CHECK_EQ_INT(img.width, 300);
    CHECK(img.height > 200);
    int dark = 0;
    for (int y0 = 0; y0 < img.height - 200; y0++)
        for (int x = 0; x < img.width; x++) {
            const uint8_t *px = img.rgb + ((size_t)y0 * (size_t)img.width + (size_t)x) * 3;
            dark += px[0] < 80 && px[1] < 80 && px[2] < 80;
        }
    CHECK(dark > 100);
    /* The series without a color takes the first palette color. */
    int palette = 0;
    for (int i = 0; i < img.width * img.height; i++) {
        const uint8_t *px = img.rgb + (size_t)i * 3;
        palette += ((uint32_t)px[0] << 16 | (uint32_t)px[1] << 8 | px[2]) == rt_plot_palette(0);
    }
    CHECK(palette > 100);
    rt_plot_image_free(&img);
}

static void test_errors(ir_diag *d)
{
    double y[1] = {1};
    rt_plot_series s = {.y = y, .n = 1};
    rt_plot_panel p = {.series = &s, .nseries = 1};
    rt_plot_figure small = {.panels = &p, .npanels = 1, .panel_width = 100, .panel_height = 100};
    rt_plot_image img;
    CHECK_EQ_INT(rt_plot_render(&small, &img, d), -1);
    rt_plot_figure none = {.panels = &p, .npanels = 0};
    CHECK_EQ_INT(rt_plot_render(&none, &img, d), -1);
    rt_plot_figure huge = {.panels = &p, .npanels = 1, .panel_width = RT_PLOT_MAX_SIDE + 1};
    CHECK_EQ_INT(rt_plot_render(&huge, &img, d), -1);

    /* A missing directory and a directory as the path fail and leave
     * nothing behind. */
    rt_plot_figure ok = {.panels = &p, .npanels = 1};
    int before = count_entries();
    char path[256];
    path_in_temp(path, sizeof path, "missing/x.png");
    CHECK_EQ_INT(rt_plot_write_png(&ok, path, d), -1);
    CHECK(access(path, F_OK) != 0);
    path_in_temp(path, sizeof path, "a_dir");
    CHECK_EQ_INT(mkdir(path, 0755), 0);
    CHECK_EQ_INT(rt_plot_write_png(&ok, path, d), -1);
    struct stat st;
    CHECK_EQ_INT(stat(path, &st), 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK_EQ_INT(count_entries(), before + 1);
    rmdir(path);

    /* Writing over an existing file replaces it with the whole PNG. */
    path_in_temp(path, sizeof path, "over.png");
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("not a png", f);
        fclose(f);
    }
    CHECK_EQ_INT(rt_plot_write_png(&ok, path, d), 0);
    decoded out = {0};
    CHECK(decode_png(path, &out));
    CHECK_EQ_INT(out.width, 800);
    CHECK_EQ_INT(out.height, 450);
    free(out.rgb);
}

int main(void)
{
    if (!mkdtemp(temp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    FILE *sink = tmpfile();
    ir_diag *d = ir_diag_new(sink ? sink : stderr);
    test_text_width();
    test_two_panels(d);
    test_title_band(d);
    test_errors(d);
    ir_diag_free(d);
    if (sink)
        fclose(sink);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", temp_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", temp_dir);
    return check_finish();
}
