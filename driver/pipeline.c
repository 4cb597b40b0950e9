/* The pass-manager options shared by `compile` and `opt`, and the step
 * they share: run the pipeline, then write the IR text and the Graphviz
 * file. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "driver/driver.h"
#include "ir/text.h"

int driver_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "quadc %s: error: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nrun 'quadc %s --help' for its options\n", cmd);
    va_end(ap);
    return DRIVER_USAGE;
}

int driver_option_value(const char *cmd, int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *arg = argv[*i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0)
        return 0;
    if (arg[n] == '=') {
        *value = arg + n + 1;
        *i += 1;
        return 1;
    }
    if (arg[n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        driver_usage_error(cmd, "option '%s' needs a value", name);
        return -1;
    }
    *value = argv[*i + 1];
    *i += 2;
    return 1;
}

void driver_pipeline_args_init(driver_pipeline_args *a)
{
    memset(a, 0, sizeof *a);
    a->dump.print_locs = true;
    a->dump.dump_stream = stderr;
    a->dump.report_stream = stderr;
}

void driver_pipeline_args_free(driver_pipeline_args *a)
{
    pass_pipeline_free(&a->pipeline);
}

/* Stores the value of an option that takes one. A second use of the
 * option is an error rather than a silent override, because a user who
 * writes --passes twice most likely expects both lists to run. */
static int store_option_value(const char *cmd, const char *name, const char *value, const char **slot)
{
    if (*slot) {
        driver_usage_error(cmd, "option '%s' is given twice ('%s' and '%s'); give it once", name, *slot, value);
        return -1;
    }
    if (!*value && strcmp(name, "--passes") != 0) {
        driver_usage_error(cmd, "option '%s' needs a non-empty value", name);
        return -1;
    }
    *slot = value;
    return 1;
}

int driver_parse_pipeline_option(const char *cmd, int argc, char **argv, int *i, driver_pipeline_args *a)
{
    static const struct {
        const char *name;
        size_t offset;
    } flags[] = {
        {"--print-ir-after-all", offsetof(driver_pipeline_args, dump.print_after_all)},
        {"--verify-each", offsetof(driver_pipeline_args, dump.verify_each)},
        {"--time-passes", offsetof(driver_pipeline_args, dump.time_passes)},
    };
    static const struct {
        const char *name;
        size_t offset;
    } values[] = {
        {"--passes", offsetof(driver_pipeline_args, passes)},
        {"--print-ir-before", offsetof(driver_pipeline_args, dump.print_before)},
        {"--print-ir-after", offsetof(driver_pipeline_args, dump.print_after)},
        {"--print-ir-dir", offsetof(driver_pipeline_args, dump.print_dir)},
        {"--dump-dot", offsetof(driver_pipeline_args, dump_dot)},
        {"-o", offsetof(driver_pipeline_args, output)},
    };
    const char *arg = argv[*i];
    for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++) {
        if (strcmp(arg, flags[k].name) == 0) {
            *(bool *)((char *)a + flags[k].offset) = true;
            *i += 1;
            return 1;
        }
    }
    if (strcmp(arg, "--no-locs") == 0) {
        a->dump.print_locs = false;
        *i += 1;
        return 1;
    }
    for (size_t k = 0; k < sizeof values / sizeof values[0]; k++) {
        const char *value;
        int rc = driver_option_value(cmd, argc, argv, i, values[k].name, &value);
        if (rc > 0)
            return store_option_value(cmd, values[k].name, value, (const char **)((char *)a + values[k].offset));
        if (rc < 0)
            return rc;
    }
    /* -oFILE, as C compilers accept it. */
    if (strncmp(arg, "-o", 2) == 0 && arg[2] != '\0') {
        *i += 1;
        return store_option_value(cmd, "-o", arg + 2, &a->output);
    }
    return 0;
}

/* Checks that every name in a comma-separated list of a dump option is a
 * pass that the pipeline runs, since a dump of any other pass would
 * silently print nothing. */
static int check_pass_names(const char *cmd, const char *option, const char *list, const pass_pipeline *pipeline)
{
    if (!list)
        return 0;
    for (const char *p = list;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0) {
            driver_usage_error(cmd, "%s has an empty pass name in '%s'; separate pass names with single commas",
                               option, list);
            return -1;
        }
        char name[64];
        if (len >= sizeof name)
            len = sizeof name - 1;
        memcpy(name, p, len);
        name[len] = '\0';
        pass_id id = pass_from_name(name);
        if (id == PASS_COUNT) {
            driver_usage_error(cmd, "%s names unknown pass '%.*s'", option, (int)(end ? (size_t)(end - p) : strlen(p)),
                               p);
            return -1;
        }
        bool runs = false;
        for (int k = 0; k < pipeline->count && !runs; k++)
            runs = pipeline->entries[k].id == id;
        if (!runs) {
            driver_usage_error(cmd, "%s names pass '%s', which the pipeline does not run; add it to --passes",
                               option, name);
            return -1;
        }
        if (!end)
            return 0;
        p = end + 1;
    }
}

int driver_finish_pipeline_args(const char *cmd, driver_pipeline_args *a)
{
    char err[256];
    const char *text = a->passes ? a->passes : pass_default_pipeline;
    if (pass_pipeline_parse(text, &a->pipeline, err, sizeof err) != 0) {
        driver_usage_error(cmd, "invalid --passes value '%s': %s", text, err);
        return -1;
    }
    if (check_pass_names(cmd, "--print-ir-before", a->dump.print_before, &a->pipeline) != 0 ||
        check_pass_names(cmd, "--print-ir-after", a->dump.print_after, &a->pipeline) != 0)
        return -1;
    return 0;
}

void driver_print_pipeline_help(FILE *out)
{
    fprintf(out,
            "Pass options:\n"
            "  --passes=LIST           passes to run, in order, separated by commas. A pass may\n"
            "                          take key=value options in braces, separated by spaces or\n"
            "                          commas: 'canonicalize{max-iterations=4},cse' (quote LIST\n"
            "                          in the shell). An empty LIST runs no pass.\n"
            "                          Default: %s\n"
            "  --verify-each           run the IR verifier on the input and after every pass\n"
            "  --time-passes           print the wall-clock time of each pass, in milliseconds,\n"
            "                          and the value counts before and after it, on stderr\n"
            "Dump options:\n"
            "  --print-ir-after-all    print the IR after every pass on stderr\n"
            "  --print-ir-before=NAMES print the IR before each pass named (comma-separated) on stderr\n"
            "  --print-ir-after=NAMES  print the IR after each pass named (comma-separated) on stderr\n"
            "  --print-ir-dir=DIR      write the IR before all passes to DIR/00-input.qir and after\n"
            "                          pass N to DIR/NN-NAME.qir; DIR is created if missing\n"
            "  --dump-dot=FILE         write the final graph as a Graphviz digraph to FILE\n"
            "  --no-locs               leave loc(...) suffixes out of every IR text written\n"
            "Output:\n"
            "  -o FILE                 write the final IR text to FILE instead of stdout; FILE\n"
            "                          is replaced only when everything succeeded\n"
            "Passes:\n",
            pass_default_pipeline);
    int width = 14;
    for (int id = 0; id < PASS_COUNT; id++)
        if ((int)strlen(pass_get((pass_id)id)->name) > width)
            width = (int)strlen(pass_get((pass_id)id)->name);
    for (int id = 0; id < PASS_COUNT; id++) {
        const pass_info *info = pass_get((pass_id)id);
        fprintf(out, "  %-*s %s\n", width, info->name, info->description);
        if (*info->options)
            fprintf(out, "  %-*s   options: %s\n", width, "", info->options);
    }
}

typedef struct graph_writer {
    const ir_graph *g;
    ir_print_options opts;
} graph_writer;

static int write_ir(FILE *out, void *ctx)
{
    graph_writer *w = ctx;
    return ir_print(out, w->g, &w->opts);
}

static int write_dot(FILE *out, void *ctx)
{
    graph_writer *w = ctx;
    return ir_print_dot(out, w->g);
}

int driver_run_pipeline_and_write(driver_pipeline_args *a, ir_graph *g, ir_diag *d)
{
    pass_manager *pm = pass_manager_new(d);
    if (!pm || pass_manager_add_standard_instruments(pm, &a->dump) != 0) {
        pass_manager_free(pm);
        ir_diag_file_error(d, NULL, "out of memory");
        return DRIVER_ERROR;
    }
    int rc = pass_manager_run(pm, &a->pipeline, g);
    pass_manager_free(pm);
    if (rc != 0 || ir_diag_error_count(d) > 0)
        return DRIVER_ERROR;

    graph_writer w = {g, {.locs = a->dump.print_locs}};
    if (a->dump_dot && driver_write_atomic(a->dump_dot, write_dot, &w, d) != 0)
        return DRIVER_ERROR;
    if (driver_write_atomic(a->output, write_ir, &w, d) != 0)
        return DRIVER_ERROR;
    return DRIVER_OK;
}
