/* Shared pieces of the quadc driver: the subcommand table entry, command
 * line helpers, the pass-manager options that several subcommands accept,
 * and file input and atomic output. Only the driver exits; these functions
 * return a status. */
#ifndef QUADC_DRIVER_DRIVER_H
#define QUADC_DRIVER_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "codegen/aot.h"
#include "frontend/frontend.h"
#include "ir/ir.h"
#include "passes/manager.h"

/* Exit statuses of every subcommand. */
enum {
    DRIVER_OK = 0,
    DRIVER_ERROR = 1, /* an error was reported about the input */
    DRIVER_USAGE = 2, /* the command line is invalid */
};

typedef struct driver_command {
    const char *name;
    const char *summary;
    /* argv[0] is the subcommand name. Returns a DRIVER_ status. */
    int (*run)(int argc, char **argv);
} driver_command;

int driver_build_command(int argc, char **argv);
int driver_compile(int argc, char **argv);
int driver_convert(int argc, char **argv);
int driver_opt(int argc, char **argv);
int driver_eval(int argc, char **argv);
int driver_generate(int argc, char **argv);
int driver_train(int argc, char **argv);
int driver_quantize(int argc, char **argv);
int driver_run(int argc, char **argv);
int driver_outliers(int argc, char **argv);
int driver_plot_log(int argc, char **argv);

/* One ahead-of-time build, as `quadc build` runs it (docs/aot.md). */
typedef struct driver_build_request {
    const char *model;            /* the .qd file */
    const char *weights;          /* float or quantized (quadc quantize) safetensors */
    const fe_define *defines; int ndefines;
    const char *obj, *header, *exe, *weights_out; /* NULL = not written */
    const char *weights_mode;     /* "embed" or "file" */
    const char *prefix, *tokenizer;
    const char *print_ir_dir;     /* write the IR after every pass there, or NULL */
    bool quiet;                   /* no progress lines on stderr */
    cg_aot_options aot;
    /* Pass list run on the graph before code generation, or NULL. */
    const char *passes;
    /* Require a quantized weights file. Without it, a file written by
     * quadc quantize still gives an INT8 build, and float weights a float
     * one. */
    bool int8;
} driver_build_request;

/* Compiles r->model with r->weights and writes the requested object,
 * header, weights file and executable, each atomically: a failure leaves
 * none of them half written. r->aot supplies the target and code options;
 * its prefix, source, weights_source and embed_weights are set from the
 * other fields. Returns 0, or -1 after reporting through d. */
int driver_build(const driver_build_request *r, ir_diag *d);

/* Prints "quadc CMD: error: MESSAGE" and a hint to run --help on stderr and
 * returns DRIVER_USAGE. */
int driver_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Matches argv[*i] against an option that takes a value, written either as
 * "NAME=VALUE" or as "NAME VALUE". On a match, stores the value, advances
 * *i past what it used and returns 1. Returns 0 when argv[*i] is another
 * option, and -1 (after a usage message) when the value is missing. */
int driver_option_value(const char *cmd, int argc, char **argv, int *i, const char *name, const char **value);

/* True when the n bytes at s form a C identifier (letters, digits and '_',
 * not starting with a digit). */
bool driver_is_identifier(const char *s, size_t n);

/* Matches argv[*i] against -D, written "-D name=value" or "-Dname=value",
 * and appends the define to defines[*ndefines], whose name points into
 * argv. Returns 1 when it consumed the option, 0 when argv[*i] is another
 * option, and -1 (after a usage message) on a missing or invalid value or
 * more than max_defines defines. A later -D for the same name is kept too,
 * and the frontend applies the last one. */
int driver_define_option(const char *cmd, int argc, char **argv, int *i, fe_define *defines, int *ndefines,
                         int max_defines);

/* Pass-manager options shared by `compile` and `opt`. */
typedef struct driver_pipeline_args {
    const char *passes; /* NULL: the default pipeline */
    pass_pipeline pipeline;
    pass_dump_options dump;
    const char *dump_dot; /* Graphviz file for the final graph, or NULL */
    const char *output;   /* -o, or NULL for standard output */
} driver_pipeline_args;

void driver_pipeline_args_init(driver_pipeline_args *a);
void driver_pipeline_args_free(driver_pipeline_args *a);
/* Consumes argv[*i] when it is a pass-manager option or -o. Returns 1 when
 * it consumed it, 0 when argv[*i] is not one of them, -1 on a usage error
 * (already printed). */
int driver_parse_pipeline_option(const char *cmd, int argc, char **argv, int *i, driver_pipeline_args *a);
/* Parses the pass list and checks the pass names given to the dump
 * options; prints a usage error and returns -1 when one is invalid. */
int driver_finish_pipeline_args(const char *cmd, driver_pipeline_args *a);
/* Prints the help lines of the shared options and the list of passes. */
void driver_print_pipeline_help(FILE *out);
/* Runs the pipeline on g, then writes the IR text to the output and the
 * Graphviz file if requested. Returns a DRIVER_ status. */
int driver_run_pipeline_and_write(driver_pipeline_args *a, ir_graph *g, ir_diag *d);
/* Prints the memory of g under the LLVM buffer plan (`compile --stats`)
 * to out. Returns DRIVER_OK, or DRIVER_ERROR after reporting through d. */
int driver_print_compile_stats(const ir_graph *g, FILE *out, ir_diag *d);

/* Reads a whole file, or standard input when path is "-". Reports a
 * failure through d and returns NULL. The caller frees the buffer, which
 * has a NUL after the `len` bytes. */
char *driver_read_file(const char *path, size_t *len, ir_diag *d);

/* Reads a whole file like driver_read_file, but reports an error and
 * returns NULL when it contains more than max_len bytes. Reading stops there,
 * so an endless input such as /dev/zero ends with that error. */
char *driver_read_file_max(const char *path, size_t max_len, size_t *len, ir_diag *d);

/* Reads a whole regular file of at most max_len bytes, and reports
 * nothing: returns NULL when the file cannot be read, is larger, or is not
 * a regular file (a FIFO would block, /dev/zero would never end). */
char *driver_try_read_file(const char *path, size_t max_len, size_t *len);

/* Writes through `write` to path atomically: to a temporary file in the
 * same directory that is renamed over path only when every write
 * succeeded, so an error never leaves a partial file. A NULL path or "-"
 * writes to standard output. A symbolic link is followed, and a path that
 * is not a regular file (a FIFO, /dev/null) is written in place, without
 * that guarantee. Returns 0, or -1 after reporting through d. */
int driver_write_atomic(const char *path, int (*write)(FILE *out, void *ctx), void *ctx, ir_diag *d);

#endif
