/* Progress of a long step on standard error. On a terminal, a bar is
 * redrawn in place. Otherwise a plain line is printed at the start, at
 * every quarter of the way and at the end, so that logs stay short. */
#ifndef QUADC_DRIVER_PROGRESS_H
#define QUADC_DRIVER_PROGRESS_H

#include <stdbool.h>

typedef struct driver_progress {
    bool terminal;
    char label[128];
    long long total;  /* 0 for a step without a count */
    int printed_part; /* plain lines: the last quarter printed, -1 before the first */
    double start;      /* seconds, monotonic clock */
    double last_draw;  /* terminal: when the bar was last drawn */
    bool drawn;        /* terminal: a bar is on the current line */
} driver_progress;

/* Returns the time of the monotonic clock in seconds. */
double driver_now_seconds(void);

/* Starts a step of `total` units (total >= 1) named by label. */
void driver_progress_start(driver_progress *p, const char *label, long long total);
/* Starts a step whose amount of work is unknown, such as running another
 * program: one line "LABEL: started" (or "LABEL ..." on a terminal) and no
 * count. End it with driver_progress_finish or driver_progress_abort. */
void driver_progress_start_uncounted(driver_progress *p, const char *label);
/* Reports that `done` of the total units are done. detail, which may be
 * NULL, follows the count (a loss, for example). */
void driver_progress_update(driver_progress *p, long long done, const char *detail);
/* Ends the step with one line: the label, summary and the elapsed time. */
void driver_progress_finish(driver_progress *p, const char *summary);
/* Clears an unfinished bar, so that an error message starts on its own line. */
void driver_progress_abort(driver_progress *p);

#endif
