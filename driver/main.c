/* The quadc command: dispatches to one subcommand from a table. Only this
 * layer exits; exit status 0 is success, 1 means errors were reported about
 * the input, 2 means the command line was invalid. */
#include <stdio.h>
#include <string.h>

#include "driver/driver.h"

/* Kept equal to the VERSION in the top-level CMakeLists.txt project(). */
#define QUADC_VERSION "0.1.0"

static int run_version(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: quadc version\n\nPrints the quadc version.\n");
        return DRIVER_OK;
    }
    if (argc > 1)
        return driver_usage_error("version", "unexpected argument '%s'", argv[1]);
    printf("quadc %s\n", QUADC_VERSION);
    return DRIVER_OK;
}

static const driver_command commands[] = {
    {"compile", "compile a model file (.qd) to IR text, running a pass pipeline", driver_compile},
    {"opt", "run a pass pipeline on IR text (.qir) and print the result", driver_opt},
    {"train", "train a model file on text files with AdamW", driver_train},
    {"quantize", "quantize a model with PTQ, SmoothQuant, QAT or Quadapter and write it", driver_quantize},
    {"outliers", "print and plot the per-channel max |activation| at every quantizer site", driver_outliers},
    {"plot-log", "plot the training and held-out loss of a quadc train log as PNG", driver_plot_log},
    {"build", "compile a model ahead of time to an object file, a C header and an executable", driver_build_command},
    {"convert", "rewrite a weight file as safetensors (f32, f16, bf16) or an llm.c checkpoint", driver_convert},
    {"run", "run float evaluation, PTQ, Quadapter, the INT8 build and the executable's evaluation", driver_run},
    {"eval", "measure a model's perplexity on texts and its LAMBADA accuracy", driver_eval},
    {"generate", "continue a text prompt with a model", driver_generate},
    {"version", "print the quadc version", run_version},
};

static void print_help(FILE *out)
{
    fprintf(out, "usage: quadc COMMAND [options]\n\nCommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nRun 'quadc COMMAND --help' for the options of one command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_help(stderr);
        return DRIVER_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        print_help(stdout);
        return DRIVER_OK;
    }
    if (strcmp(name, "--version") == 0)
        name = "version";
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "quadc: error: unknown command '%s'\nrun 'quadc --help' for the list of commands\n", name);
    return DRIVER_USAGE;
}
