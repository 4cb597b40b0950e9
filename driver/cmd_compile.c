/* `quadc compile`: parses a model file with the DSL frontend, runs a pass
 * pipeline and prints IR text. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "driver/driver.h"
#include "frontend/frontend.h"

static void print_compile_help(FILE *out)
{
    fprintf(out,
            "usage: quadc compile FILE.qd [-D name=value]... [options]\n"
            "\n"
            "Parses a model file (FILE '-' reads standard input), binds its\n"
            "hyperparameters, runs a pass pipeline and prints the graph as IR text.\n"
            "\n"
            "  -D name=value           set hyperparameter `name` to the integer `value`,\n"
            "                          overriding the default in the model file; repeatable\n"
            "  --stats                 print on stderr the bytes of params, inputs, outputs and\n"
            "                          intermediates, and the intermediates' buffers after reuse\n"
            "                          in the LLVM backend's plan of the final graph\n");
    driver_print_pipeline_help(out);
}

static bool is_identifier(const char *s, size_t n)
{
    if (n == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_'))
            return false;
    return true;
}

/* Parses "name=value" into a define whose name points into text. The name
 * is cut at the '=' in place. */
static int parse_define(char *text, fe_define *out)
{
    const char *cmd = "compile";
    char *eq = strchr(text, '=');
    if (!eq)
        return driver_usage_error(cmd, "invalid -D value '%s': write -D name=INTEGER", text);
    if (!is_identifier(text, (size_t)(eq - text)))
        return driver_usage_error(cmd, "invalid -D value '%s': '%.*s' is not a hyperparameter name; "
                                  "write -D name=INTEGER", text, (int)(eq - text), text);
    const char *value = eq + 1;
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    /* strtoll also skips leading spaces and takes a '+' sign. */
    bool digits = (value[0] >= '0' && value[0] <= '9') || (value[0] == '-' && value[1] >= '0' && value[1] <= '9');
    if (!digits || *end != '\0')
        return driver_usage_error(cmd, "invalid -D value '%s': '%s' is not an integer", text, value);
    if (errno == ERANGE)
        return driver_usage_error(cmd, "invalid -D value '%s': '%s' does not fit in 64 bits", text, value);
    *eq = '\0';
    out->name = text;
    out->value = v;
    return DRIVER_OK;
}

/* Rejects a -D that gives an hparam a second, different value: a silent
 * "last one wins" would hide a typo or a script that sets the same hparam
 * in two places. Repeating the same value is harmless. */
static int check_repeated_define(const fe_define *defines, int ndefines)
{
    const fe_define *added = &defines[ndefines];
    for (int k = 0; k < ndefines; k++) {
        if (strcmp(defines[k].name, added->name) != 0 || defines[k].value == added->value)
            continue;
        return driver_usage_error("compile", "-D %s=%lld conflicts with the earlier -D %s=%lld; give each hparam once",
                                  added->name, (long long)added->value, defines[k].name, (long long)defines[k].value);
    }
    return DRIVER_OK;
}

/* The frontend's limit on model files (FE_MAX_FILE_BYTES); reading
 * standard input stops there. */
#define MAX_MODEL_BYTES ((size_t)16 << 20)

/* Compiles the model file at path, or standard input when path is "-". */
static ir_graph *compile_input(const char *path, const fe_define *defines, int ndefines, ir_diag *d)
{
    if (strcmp(path, "-") != 0)
        return fe_compile_file(path, defines, ndefines, d);
    size_t len;
    char *text = driver_read_file_max(path, MAX_MODEL_BYTES, &len, d);
    ir_graph *g = text ? fe_compile_string("<stdin>", text, len, defines, ndefines, d) : NULL;
    free(text);
    return g;
}

int driver_compile(int argc, char **argv)
{
    const char *cmd = "compile";
    driver_pipeline_args args;
    driver_pipeline_args_init(&args);
    fe_define *defines = calloc((size_t)argc, sizeof *defines);
    int ndefines = 0, status = DRIVER_USAGE;
    const char *input = NULL;
    bool stats = false;
    if (!defines)
        return DRIVER_ERROR;

    int i = 1;
    while (i < argc) {
        char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_compile_help(stdout);
            free(defines);
            return DRIVER_OK;
        }
        if (strncmp(arg, "-D", 2) == 0) {
            char *text = arg[2] ? arg + 2 : (i + 1 < argc ? argv[i + 1] : NULL);
            if (!text) {
                driver_usage_error(cmd, "-D needs a value: write -D name=INTEGER");
                goto done;
            }
            if (parse_define(text, &defines[ndefines]) != DRIVER_OK)
                goto done;
            if (check_repeated_define(defines, ndefines) != DRIVER_OK)
                goto done;
            ndefines++;
            i += arg[2] ? 1 : 2;
            continue;
        }
        if (strcmp(arg, "--stats") == 0) {
            stats = true;
            i++;
            continue;
        }
        int rc = driver_parse_pipeline_option(cmd, argc, argv, &i, &args);
        if (rc < 0)
            goto done;
        if (rc > 0)
            continue;
        if (arg[0] == '-' && arg[1] != '\0') {
            driver_usage_error(cmd, "unknown option '%s'", arg);
            goto done;
        }
        if (input) {
            driver_usage_error(cmd, "more than one input file given ('%s' and '%s'); compile reads one", input, arg);
            goto done;
        }
        input = arg;
        i++;
    }
    if (!input) {
        driver_usage_error(cmd, "no input file; give a model file such as examples/gpt2.qd");
        goto done;
    }
    if (driver_finish_pipeline_args(cmd, &args) != 0)
        goto done;

    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = d ? compile_input(input, defines, ndefines, d) : NULL;
    status = g ? driver_run_pipeline_and_write(&args, g, d) : DRIVER_ERROR;
    if (status == DRIVER_OK && stats)
        status = driver_print_compile_stats(g, stderr, d);
    ir_graph_free(g);
    ir_diag_free(d);
done:
    free(defines);
    driver_pipeline_args_free(&args);
    return status;
}
