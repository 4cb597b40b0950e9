/* `quadc plot-log`: reads the progress lines that `quadc train` writes to
 * standard error and draws the training loss per step (optionally with a
 * moving average) and the held-out loss against the step as a PNG. */
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "driver/model_args.h"
#include "runtime/plot.h"

#define CMD "plot-log"
/* Far above any real log: quadc train writes about 85 bytes per step. */
#define MAX_LOG_BYTES ((size_t)1 << 30)

typedef struct plot_log_args {
    const char *log;
    const char *out;
    const char *title;
    long long smooth; /* moving-average window in logged steps; 0 or 1: none */
} plot_log_args;

static void print_help(FILE *out)
{
    fprintf(out,
            "usage: quadc plot-log TRAIN.log -o LOSS.png [options]\n"
            "\n"
            "Draws the training loss of every step and the held-out loss against the step,\n"
            "from the progress lines that quadc train writes to standard error:\n"
            "  step 10/4000: loss 10.435379, lr 5e-05, ...\n"
            "  step 250/4000: held-out loss 5.123456\n"
            "The redrawn progress bar of a terminal ('[###...] step 10/4000  loss 10.4354')\n"
            "is read too, and other lines are skipped. When a resumed run repeats steps,\n"
            "its losses replace the earlier ones from that step on.\n"
            "\n"
            "  -o, --out FILE          the PNG to write (required)\n"
            "  --smooth N              also draw the mean of the last N training losses, with\n"
            "                          the raw losses faint behind it (default 0: raw only)\n"
            "  --title TEXT            the figure title (default: the log's file name)\n");
}

/* Returns DRIVER_OK, DRIVER_USAGE, or -1 after printing the help. */
static int parse_args(int argc, char **argv, plot_log_args *a)
{
    for (int i = 1; i < argc;) {
        const char *arg = argv[i], *value = NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_help(stdout);
            return -1;
        }
        int rc = driver_option_value(CMD, argc, argv, &i, "-o", &value);
        if (rc == 0)
            rc = driver_option_value(CMD, argc, argv, &i, "--out", &value);
        if (rc > 0)
            a->out = value;
        if (rc == 0 && (rc = driver_option_value(CMD, argc, argv, &i, "--title", &value)) > 0)
            a->title = value;
        if (rc == 0 && (rc = driver_option_value(CMD, argc, argv, &i, "--smooth", &value)) > 0 &&
            driver_parse_int_value(CMD, "--smooth", value, 0, 1 << 24, &a->smooth) != 0)
            rc = -1;
        if (rc < 0)
            return DRIVER_USAGE;
        if (rc > 0)
            continue;
        if (arg[0] == '-' && arg[1] != '\0')
            return driver_usage_error(CMD, "unknown option '%s'", arg);
        if (a->log)
            return driver_usage_error(CMD, "more than one log file given ('%s' and '%s')", a->log, arg);
        a->log = arg;
        i++;
    }
    if (!a->log)
        return driver_usage_error(CMD, "no log file; give the standard error output of quadc train");
    if (!a->out)
        return driver_usage_error(CMD, "missing -o: give the PNG file to write");
    return DRIVER_OK;
}

/* ---- reading the log ---- */

/* Losses against the step, in log order. */
typedef struct loss_series {
    double *step;
    double *loss;
    size_t n, cap;
} loss_series;

static void series_free(loss_series *s)
{
    free(s->step);
    free(s->loss);
    memset(s, 0, sizeof *s);
}

static int series_push(loss_series *s, double step, double loss)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        double *steps = realloc(s->step, cap * sizeof *steps);
        if (steps)
            s->step = steps;
        double *losses = steps ? realloc(s->loss, cap * sizeof *losses) : NULL;
        if (!losses)
            return -1;
        s->loss = losses;
        s->cap = cap;
    }
    s->step[s->n] = step;
    s->loss[s->n] = loss;
    s->n++;
    return 0;
}

/* Drops the points at `step` and after, which a resumed run repeats. */
static void series_cut(loss_series *s, double step)
{
    while (s->n > 0 && s->step[s->n - 1] >= step)
        s->n--;
}

typedef struct train_log {
    loss_series train;
    loss_series heldout;
    int nonfinite; /* losses read as nan or inf, kept but not drawn */
} train_log;

static const char *skip_spaces(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Parses the loss at p, which must end at a ',', a space or the end of
 * the record. Returns 0, or -1 after reporting. */
static int parse_loss(const char *p, const char *path, int line, double *out, ir_diag *d)
{
    char *end;
    errno = 0;
    *out = strtod(p, &end);
    if (end == p || errno == ERANGE || (*end != '\0' && *end != ',' && *end != ' ')) {
        int len = (int)strcspn(p, ", ");
        ir_diag_file_error(d, path, "line %d: invalid loss '%.*s'; expected a number as quadc train prints it", line,
                           len > 40 ? 40 : len, p);
        return -1;
    }
    return 0;
}

/* Reads one record (a line, or a part of one between carriage returns).
 * Records that are not step losses are skipped. Returns 0 or -1. */
static int read_record(train_log *log, const char *record, const char *path, int line, ir_diag *d)
{
    const char *p = record;
    if (*p == '[') {
        const char *close = strstr(p, "] ");
        if (!close)
            return 0;
        p = close + 2;
    }
    if (strncmp(p, "step ", 5) != 0)
        return 0;
    char *end;
    long step = strtol(p + 5, &end, 10);
    if (end == p + 5 || *end != '/' || step < 0)
        return 0;
    strtol(end + 1, &end, 10);
    if (*end == ':')
        end++;
    p = skip_spaces(end);

    bool heldout = strncmp(p, "held-out loss ", 14) == 0;
    if (!heldout && strncmp(p, "loss ", 5) != 0)
        return 0; /* "wrote checkpoint ..." */
    double loss;
    if (parse_loss(p + (heldout ? 14 : 5), path, line, &loss, d) != 0)
        return -1;
    if (!isfinite(loss))
        log->nonfinite++;
    if (!heldout && log->train.n > 0 && log->train.step[log->train.n - 1] >= (double)step) {
        series_cut(&log->train, (double)step);
        series_cut(&log->heldout, (double)step);
    }
    if (series_push(heldout ? &log->heldout : &log->train, (double)step, loss) != 0) {
        ir_diag_file_error(d, path, "out of memory reading the log");
        return -1;
    }
    return 0;
}

static int read_log(const char *path, train_log *log, ir_diag *d)
{
    size_t len;
    char *text = driver_read_file_max(path, MAX_LOG_BYTES, &len, d);
    if (!text)
        return -1;
    int rc = 0, line = 1;
    char *record = text;
    for (size_t i = 0; i <= len && rc == 0; i++) {
        if (i < len && text[i] != '\n' && text[i] != '\r')
            continue;
        char ended_by = i < len ? text[i] : '\0';
        text[i] = '\0';
        rc = read_record(log, record, path, line, d);
        record = text + i + 1;
        if (ended_by == '\n')
            line++;
    }
    free(text);
    if (rc == 0 && log->train.n == 0) {
        ir_diag_file_error(d, path, "no training loss lines such as 'step 1/100: loss 10.9, ...'; give the "
                                    "standard error output of quadc train");
        rc = -1;
    }
    return rc;
}

/* ---- drawing ---- */

/* The mean of the last `window` losses at each step, skipping non-finite
 * ones. A window without a finite loss gives NaN. */
static double *moving_average(const loss_series *s, size_t window)
{
    double *out = malloc(sizeof *out * (s->n ? s->n : 1));
    double sum = 0;
    size_t count = 0;
    for (size_t i = 0; out && i < s->n; i++) {
        if (isfinite(s->loss[i])) {
            sum += s->loss[i];
            count++;
        }
        if (i >= window && isfinite(s->loss[i - window])) {
            sum -= s->loss[i - window];
            count--;
        }
        out[i] = count ? sum / (double)count : NAN;
    }
    return out;
}

static int draw(const plot_log_args *a, const train_log *log, ir_diag *d)
{
    rt_plot_series series[3];
    int n = 0;
    bool smooth = a->smooth > 1;
    double *averaged = smooth ? moving_average(&log->train, (size_t)a->smooth) : NULL;
    if (smooth && !averaged) {
        ir_diag_file_error(d, a->out, "out of memory for the moving average");
        return -1;
    }
    char smooth_label[96];
    snprintf(smooth_label, sizeof smooth_label, "training loss, mean of %lld steps", a->smooth);
    series[n++] = (rt_plot_series){.label = "training loss", .x = log->train.step, .y = log->train.loss,
                                   .n = (int64_t)log->train.n, .color = 0x1F77B4, .faint = smooth};
    if (smooth)
        series[n++] = (rt_plot_series){.label = smooth_label, .x = log->train.step, .y = averaged,
                                       .n = (int64_t)log->train.n, .color = 0x1F77B4};
    if (log->heldout.n > 0)
        series[n++] = (rt_plot_series){.label = "held-out loss", .x = log->heldout.step, .y = log->heldout.loss,
                                       .n = (int64_t)log->heldout.n, .color = 0xD62728, .markers = true};

    /* basename may modify its argument, so it gets a copy. */
    char *copy = strdup(a->log);
    const char *title = a->log;
    if (a->title)
        title = a->title;
    else if (copy)
        title = basename(copy);
    rt_plot_panel panel = {.x_label = "step", .y_label = "loss (nats per token)", .series = series, .nseries = n};
    rt_plot_figure f = {.title = title, .panels = &panel, .npanels = 1, .panel_width = 1000, .panel_height = 560};
    int rc = rt_plot_write_png(&f, a->out, d);
    free(copy);
    free(averaged);
    return rc;
}

static void print_summary(const plot_log_args *a, const train_log *log)
{
    const loss_series *t = &log->train, *h = &log->heldout;
    printf("%s: %zu training loss%s (steps %.0f to %.0f, last %.6g)", a->log, t->n, t->n == 1 ? "" : "es",
           t->step[0], t->step[t->n - 1], t->loss[t->n - 1]);
    if (h->n > 0)
        printf(", %zu held-out loss%s (steps %.0f to %.0f, last %.6g)", h->n, h->n == 1 ? "" : "es", h->step[0],
               h->step[h->n - 1], h->loss[h->n - 1]);
    printf("\n");
    if (log->nonfinite == 1)
        printf("1 loss is nan or inf and is not drawn\n");
    else if (log->nonfinite > 1)
        printf("%d losses are nan or inf and are not drawn\n", log->nonfinite);
}

int driver_plot_log(int argc, char **argv)
{
    plot_log_args a = {0};
    int status = parse_args(argc, argv, &a);
    if (status < 0)
        return DRIVER_OK; /* --help */
    if (status != DRIVER_OK)
        return status;
    ir_diag *d = ir_diag_new(stderr);
    if (!d)
        return DRIVER_ERROR;
    train_log log = {0};
    status = DRIVER_ERROR;
    if (read_log(a.log, &log, d) == 0 && draw(&a, &log, d) == 0) {
        print_summary(&a, &log);
        fprintf(stderr, "wrote %s\n", a.out);
        status = DRIVER_OK;
    }
    series_free(&log.train);
    series_free(&log.heldout);
    ir_diag_free(d);
    return status;
}
