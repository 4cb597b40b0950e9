/* The standard pass instruments: IR dumps before and after passes (to a
 * stream or to one numbered file per pass), the verifier after each pass,
 * and a timing table. Each is a pass_instrument the manager calls. */
#include "passes/manager.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ir/text.h"

/* ---- printing ---- */

typedef struct print_ctx {
    pass_dump_options opts;
    ir_diag *diag;
    int width; /* digits of the pass number in file names */
} print_ctx;

/* Returns true when `name` is one of the comma-separated names in list. */
static bool list_has(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && memcmp(p, name, n) == 0)
            return true;
        p += len + (end ? 1 : 0);
    }
    return false;
}

static void print_dump(const print_ctx *c, FILE *out, const char *when, const pass_run_info *run,
                       const ir_graph *g)
{
    ir_print_options popts = {.locs = c->opts.print_locs};
    if (run)
        fprintf(out, "// ----- IR %s %s (%d/%d) ----- //\n", when, run->pass, run->index, run->count);
    else
        fprintf(out, "// ----- IR %s ----- //\n", when);
    ir_print(out, g, &popts);
    fflush(out);
}

/* Creates dir and its missing parents, like mkdir -p. */
static int make_dirs(const char *dir)
{
    char *path = strdup(dir);
    if (!path)
        return -1;
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            free(path);
            return -1;
        }
        *p = '/';
    }
    int rc = mkdir(path, 0777) != 0 && errno != EEXIST ? -1 : 0;
    free(path);
    return rc;
}

/* Writes DIR/NN-name.qir; NN is the pass number, 00 for the input. */
static int write_dump_file(print_ctx *c, int index, const char *name, const char *when,
                           const pass_run_info *run, const ir_graph *g)
{
    size_t cap = strlen(c->opts.print_dir) + strlen(name) + 32;
    char *path = malloc(cap);
    if (!path)
        return -1;
    snprintf(path, cap, "%s/%0*d-%s.qir", c->opts.print_dir, c->width, index, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        ir_diag_file_error(c->diag, path, "cannot write the IR dump: %s", strerror(errno));
        free(path);
        return -1;
    }
    print_dump(c, f, when, run, g);
    int rc = ferror(f) ? -1 : 0;
    if (fclose(f) != 0)
        rc = -1;
    if (rc != 0)
        ir_diag_file_error(c->diag, path, "writing the IR dump failed");
    free(path);
    return rc;
}

static int print_before_pipeline(void *ctx, const ir_graph *g, int npasses)
{
    print_ctx *c = ctx;
    c->width = 2;
    for (int n = npasses; n >= 100; n /= 10)
        c->width++;
    if (!c->opts.print_dir)
        return 0;
    if (make_dirs(c->opts.print_dir) != 0) {
        ir_diag_file_error(c->diag, c->opts.print_dir, "cannot create the IR dump directory: %s", strerror(errno));
        return -1;
    }
    /* mkdir reports EEXIST for a file too; the dumps would then fail one by
     * one with "Not a directory". */
    struct stat st;
    if (stat(c->opts.print_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        ir_diag_file_error(c->diag, c->opts.print_dir,
                           "cannot write the IR dumps here: it exists and is not a directory; give a directory name");
        return -1;
    }
    return write_dump_file(c, 0, "input", "before all passes", NULL, g);
}

static void print_before_pass(void *ctx, const pass_run_info *run, const ir_graph *g)
{
    print_ctx *c = ctx;
    if (list_has(c->opts.print_before, run->pass))
        print_dump(c, c->opts.dump_stream, "before", run, g);
}

static int print_after_pass(void *ctx, const pass_run_info *run, const ir_graph *g, bool failed)
{
    print_ctx *c = ctx;
    if (failed)
        return 0;
    if (c->opts.print_after_all || list_has(c->opts.print_after, run->pass))
        print_dump(c, c->opts.dump_stream, "after", run, g);
    if (c->opts.print_dir)
        return write_dump_file(c, run->index, run->pass, "after", run, g);
    return 0;
}

/* ---- verification ---- */

static int verify_before_pipeline(void *ctx, const ir_graph *g, int npasses)
{
    return ir_verify(g, NULL) == 0 ? 0 : -1;
}

static int verify_after_pass(void *ctx, const pass_run_info *run, const ir_graph *g, bool failed)
{
    if (failed)
        return 0;
    return ir_verify(g, run->pass) == 0 ? 0 : -1;
}

/* ---- timing ---- */

typedef struct timing_row {
    const char *pass; /* from the static pass table */
    double ms;
    int values_in;
    int values_out;
} timing_row;

typedef struct timing_ctx {
    FILE *out;
    struct timespec start;
    timing_row *rows;
    int nrows;
} timing_ctx;

static void timing_before_pass(void *ctx, const pass_run_info *run, const ir_graph *g)
{
    timing_ctx *c = ctx;
    timing_row *grown = realloc(c->rows, sizeof *grown * (size_t)(c->nrows + 1));
    if (!grown)
        return;
    c->rows = grown;
    c->rows[c->nrows++] = (timing_row){run->pass, 0.0, g->nvalues, g->nvalues};
    clock_gettime(CLOCK_MONOTONIC, &c->start);
}

static int timing_after_pass(void *ctx, const pass_run_info *run, const ir_graph *g, bool failed)
{
    timing_ctx *c = ctx;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (c->nrows == 0)
        return 0;
    timing_row *row = &c->rows[c->nrows - 1];
    row->ms = (double)(now.tv_sec - c->start.tv_sec) * 1e3 + (double)(now.tv_nsec - c->start.tv_nsec) / 1e6;
    row->values_out = g->nvalues;
    return 0;
}

static void timing_after_pipeline(void *ctx)
{
    timing_ctx *c = ctx;
    double total = 0.0;
    for (int i = 0; i < c->nrows; i++)
        total += c->rows[i].ms;
    fprintf(c->out, "===== pass timing (wall clock) =====\n");
    fprintf(c->out, "  %3s  %-16s %12s %7s %14s %13s\n", "#", "pass", "time (ms)", "share", "values before",
            "values after");
    for (int i = 0; i < c->nrows; i++) {
        const timing_row *r = &c->rows[i];
        fprintf(c->out, "  %3d  %-16s %12.3f %6.1f%% %14d %13d\n", i + 1, r->pass, r->ms,
                total > 0 ? 100.0 * r->ms / total : 0.0, r->values_in, r->values_out);
    }
    fprintf(c->out, "       %-16s %12.3f %6.1f%%\n", "total", total, 100.0);
    fflush(c->out);
}

static void timing_free(void *ctx)
{
    timing_ctx *c = ctx;
    free(c->rows);
    free(c);
}

/* ---- setup ---- */

int pass_manager_add_standard_instruments(pass_manager *pm, const pass_dump_options *opts)
{
    bool printing = opts->print_after_all || opts->print_before || opts->print_after || opts->print_dir;
    if (printing) {
        print_ctx *c = calloc(1, sizeof *c);
        if (!c)
            return -1;
        c->opts = *opts;
        if (!c->opts.dump_stream)
            c->opts.dump_stream = stderr;
        c->diag = pass_manager_diag(pm);
        pass_instrument inst = {c, print_before_pipeline, print_before_pass, print_after_pass, NULL, free};
        if (pass_manager_add_instrument(pm, inst) != 0) {
            free(c);
            return -1;
        }
    }
    if (opts->verify_each) {
        pass_instrument inst = {NULL, verify_before_pipeline, NULL, verify_after_pass, NULL, NULL};
        if (pass_manager_add_instrument(pm, inst) != 0)
            return -1;
    }
    if (opts->time_passes) {
        timing_ctx *c = calloc(1, sizeof *c);
        if (!c)
            return -1;
        c->out = opts->report_stream ? opts->report_stream : stderr;
        pass_instrument inst = {c, NULL, timing_before_pass, timing_after_pass, timing_after_pipeline, timing_free};
        if (pass_manager_add_instrument(pm, inst) != 0) {
            free(c);
            return -1;
        }
    }
    return 0;
}
