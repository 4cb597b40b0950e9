/* Command-line options shared by `quadc eval` and `quadc generate`: the
 * model file, -D overrides, the weights, the engine, the thread count and
 * the tokenizer directory, and integer and float option values. */
#ifndef QUADC_DRIVER_MODEL_ARGS_H
#define QUADC_DRIVER_MODEL_ARGS_H

#include <stdio.h>

#include "driver/driver.h"
#include "runtime/model.h"

typedef struct driver_model_args {
    const char *model;   /* the .qd file, the one positional argument */
    const char *weights; /* --weights */
    fe_define *defines;  /* -D, names point into argv */
    int ndefines;
    rt_model_engine engine; /* --engine */
    int threads;            /* --threads, 0 = one per core */
    const char *tokenizer;  /* --tokenizer directory */
} driver_model_args;

/* Allocates room for the -D defines of argc arguments. Returns 0 or -1. */
int driver_model_args_init(driver_model_args *a, int argc);
void driver_model_args_free(driver_model_args *a);

/* Consumes argv[*i] when it is one of the shared options or the model
 * file. Returns 1 when it consumed it, 0 when argv[*i] is another option,
 * and -1 after printing a usage error. */
int driver_parse_model_option(const char *cmd, int argc, char **argv, int *i, driver_model_args *a);
/* Checks that the model file and --weights were given. Returns 0 or -1
 * after printing a usage error. */
int driver_finish_model_args(const char *cmd, const driver_model_args *a);
/* Prints the help lines of the shared options. */
void driver_print_model_help(FILE *out);

/* Parses a decimal integer option value in [min, max]. Returns 0, or -1
 * after printing a usage error naming the option. */
int driver_parse_int_value(const char *cmd, const char *option, const char *text, long long min, long long max,
                           long long *out);
/* Parses a finite float option value > min_exclusive. Returns 0 or -1. */
int driver_parse_float_value(const char *cmd, const char *option, const char *text, double min_exclusive,
                             double *out);

/* Opens the session described by a, after filling the engine, threads and
 * the given cache length. Returns NULL after reporting. */
rt_model *driver_open_model(const driver_model_args *a, int cache_len, ir_diag *d);

#endif
