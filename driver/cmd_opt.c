/* `quadc opt`: reads IR text, runs passes and prints IR text. */
#include <stdlib.h>
#include <string.h>

#include "driver/driver.h"
#include "ir/text.h"

static void print_opt_help(FILE *out)
{
    fprintf(out,
            "usage: quadc opt FILE.qir [options]\n"
            "\n"
            "Reads a graph in IR text form (FILE '-' reads standard input), runs a pass\n"
            "pipeline on it and prints the resulting IR text.\n"
            "\n");
    driver_print_pipeline_help(out);
}

/* The frontend's limit on model files (FE_MAX_FILE_BYTES), so a larger
 * file named by a loc(...) cannot be the model source. */
#define MAX_LOC_SOURCE_BYTES ((size_t)16 << 20)

/* The most distinct loc(...) files read for quoting. A compiled model names
 * one file, and without a bound, IR text that names a different file on
 * every line would make the search below quadratic. */
enum { MAX_LOC_SOURCES = 64 };

/* Lets errors about values parsed from IR text quote the model source
 * their loc(...) points at, when that file can be read. */
static void load_loc_sources(const ir_graph *g, ir_diag *d)
{
    const char *tried[MAX_LOC_SOURCES];
    int ntried = 0;
    for (int i = 0; i < g->nvalues && ntried < MAX_LOC_SOURCES; i++) {
        const char *file = g->values[i]->loc.file; /* interned, so pointers compare */
        bool seen = !file;
        for (int k = 0; k < ntried && !seen; k++)
            seen = tried[k] == file;
        if (seen)
            continue;
        tried[ntried++] = file;
        size_t len;
        char *text = driver_try_read_file(file, MAX_LOC_SOURCE_BYTES, &len);
        if (text)
            ir_diag_add_source(d, file, text, len);
        free(text);
    }
}

int driver_opt(int argc, char **argv)
{
    const char *cmd = "opt";
    driver_pipeline_args args;
    driver_pipeline_args_init(&args);
    const char *input = NULL;
    int i = 1;
    while (i < argc) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_opt_help(stdout);
            return DRIVER_OK;
        }
        int rc = driver_parse_pipeline_option(cmd, argc, argv, &i, &args);
        if (rc < 0)
            return DRIVER_USAGE;
        if (rc > 0)
            continue;
        if (arg[0] == '-' && arg[1] != '\0')
            return driver_usage_error(cmd, "unknown option '%s'", arg);
        if (input)
            return driver_usage_error(cmd, "more than one input file given ('%s' and '%s'); opt reads one",
                                      input, arg);
        input = arg;
        i++;
    }
    if (!input)
        return driver_usage_error(cmd, "no input file; give FILE.qir, or '-' to read standard input");
    if (driver_finish_pipeline_args(cmd, &args) != 0) {
        driver_pipeline_args_free(&args);
        return DRIVER_USAGE;
    }

    ir_diag *d = ir_diag_new(stderr);
    int status = DRIVER_ERROR;
    size_t len;
    char *text = d ? driver_read_file_max(input, IR_MAX_TEXT_BYTES, &len, d) : NULL;
    ir_graph *g = text ? ir_parse_string(strcmp(input, "-") == 0 ? "<stdin>" : input, text, len, d) : NULL;
    if (g) {
        load_loc_sources(g, d);
        status = driver_run_pipeline_and_write(&args, g, d);
    }
    ir_graph_free(g);
    free(text);
    ir_diag_free(d);
    driver_pipeline_args_free(&args);
    return status;
}
