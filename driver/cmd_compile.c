/* `quadc compile`: parses a model file with the DSL frontend, runs a pass
 * pipeline and prints IR text. */
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

/* Rejects a -D that gives an hparam a second, different value: a silent
 * "last one wins" would hide a typo or a script that sets the same hparam
 * in two places. Repeating the same value is harmless. */
static int check_repeated_define(const char *cmd, const fe_define *defines, int ndefines)
{
    const fe_define *added = &defines[ndefines];
    for (int k = 0; k < ndefines; k++) {
        if (strcmp(defines[k].name, added->name) != 0 || defines[k].value == added->value)
            continue;
        return driver_usage_error(cmd, "-D %s=%lld conflicts with the earlier -D %s=%lld; give each hparam once",
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
        int rc = driver_define_option(cmd, argc, argv, &i, defines, &ndefines, argc);
        if (rc < 0 || (rc > 0 && check_repeated_define(cmd, defines, ndefines - 1) != DRIVER_OK))
            goto done;
        if (rc > 0)
            continue;
        if (strcmp(arg, "--stats") == 0) {
            stats = true;
            i++;
            continue;
        }
        rc = driver_parse_pipeline_option(cmd, argc, argv, &i, &args);
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
