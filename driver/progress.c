/* Progress bars and progress lines on standard error (driver/progress.h). */
#include "driver/progress.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Redraws of the bar are at least this far apart, so that a fast loop
 * does not spend its time writing to the terminal. */
#define REDRAW_SECONDS 0.1
#define BAR_WIDTH 24
/* Plain lines are printed at the start and at the end of each of this many
 * equal parts of the step: every quarter. */
#define PLAIN_PARTS 4

double driver_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void driver_progress_start(driver_progress *p, const char *label, long long total)
{
    memset(p, 0, sizeof *p);
    p->terminal = isatty(STDERR_FILENO) != 0;
    snprintf(p->label, sizeof p->label, "%s", label);
    p->total = total > 0 ? total : 1;
    p->printed_part = -1;
    p->start = driver_now_seconds();
    driver_progress_update(p, 0, NULL);
}

void driver_progress_start_uncounted(driver_progress *p, const char *label)
{
    memset(p, 0, sizeof *p);
    p->terminal = isatty(STDERR_FILENO) != 0;
    snprintf(p->label, sizeof p->label, "%s", label);
    p->start = driver_now_seconds();
    if (p->terminal) {
        fprintf(stderr, "\r%s ...\033[K", p->label);
        fflush(stderr);
        p->drawn = true;
    } else {
        fprintf(stderr, "%s: started\n", p->label);
    }
}

static void draw_bar(driver_progress *p, long long done, const char *detail)
{
    char bar[BAR_WIDTH + 1];
    int filled = (int)((double)BAR_WIDTH * (double)done / (double)p->total);
    for (int i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[BAR_WIDTH] = '\0';
    /* \033[K clears what a longer previous line left on the right. */
    fprintf(stderr, "\r%s [%s] %lld/%lld%s%s\033[K", p->label, bar, done, p->total, detail ? "  " : "",
            detail ? detail : "");
    fflush(stderr);
    p->drawn = true;
}

void driver_progress_update(driver_progress *p, long long done, const char *detail)
{
    if (p->total == 0)
        return;
    if (done > p->total)
        done = p->total;
    if (p->terminal) {
        double now = driver_now_seconds();
        if (done == 0 || done == p->total || now - p->last_draw >= REDRAW_SECONDS) {
            draw_bar(p, done, detail);
            p->last_draw = now;
        }
        return;
    }
    int part = (int)(PLAIN_PARTS * done / p->total);
    if (part <= p->printed_part)
        return;
    p->printed_part = part;
    fprintf(stderr, "%s: %lld/%lld%s%s\n", p->label, done, p->total, detail ? ", " : "", detail ? detail : "");
}

void driver_progress_finish(driver_progress *p, const char *summary)
{
    double seconds = driver_now_seconds() - p->start;
    if (p->terminal && p->drawn)
        fprintf(stderr, "\r\033[K");
    fprintf(stderr, "%s: %s (%.1f s)\n", p->label, summary, seconds);
    p->drawn = false;
}

void driver_progress_abort(driver_progress *p)
{
    if (p->terminal && p->drawn)
        fprintf(stderr, "\n");
    p->drawn = false;
}
