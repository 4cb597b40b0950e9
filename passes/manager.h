/* The pass registry and the pass manager. Every pass runs through
 * pass_manager_run, which compacts the graph after each pass and calls the
 * registered instruments around it. Printing, timing and verification are
 * instruments, not copies of the loop. */
#ifndef QUADC_PASSES_MANAGER_H
#define QUADC_PASSES_MANAGER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ir/ir.h"

/* One key=value option given to a pass, as in cse{key=value}. */
typedef struct pass_option {
    char *key;
    char *value;
} pass_option;

/* The options given to one pass in a pipeline. Keys and value kinds have
 * been checked against the pass's entry in passes.def. */
typedef struct pass_options {
    int count;
    pass_option *items;
} pass_options;

/* Return the option's value, or `fallback` when the option is not given. */
const char *pass_option_str(const pass_options *opts, const char *key, const char *fallback);
int64_t pass_option_int(const pass_options *opts, const char *key, int64_t fallback);
double pass_option_float(const pass_options *opts, const char *key, double fallback);
bool pass_option_bool(const pass_options *opts, const char *key, bool fallback);

/* A pass returns 0, or -1 after reporting at least one error through d. */
typedef int (*pass_fn)(ir_graph *g, const pass_options *opts, ir_diag *d);

typedef enum pass_id {
#define PASS(id, name, function, options, description) PASS_##id,
#include "passes/passes.def"
#undef PASS
    PASS_COUNT
} pass_id;

#define PASS(id, name, function, options, description) \
    int function(ir_graph *g, const pass_options *opts, ir_diag *d);
#include "passes/passes.def"
#undef PASS

typedef struct pass_info {
    const char *name;
    pass_fn run;
    const char *options; /* "key:kind,..." */
    const char *description;
} pass_info;

const pass_info *pass_get(pass_id id);
/* Returns PASS_COUNT when no pass has this name. */
pass_id pass_from_name(const char *name);

/* The pipeline that runs when the command line names none. */
extern const char pass_default_pipeline[];

typedef struct pass_pipeline_entry {
    pass_id id;
    pass_options opts;
} pass_pipeline_entry;

typedef struct pass_pipeline {
    int count;
    pass_pipeline_entry *entries;
} pass_pipeline;

/* Parses a pass list: names separated by commas, each optionally followed
 * by options in braces, separated by spaces or commas:
 *   canonicalize{max-iterations=4},cse,dce
 * An empty text is an empty pipeline. On error writes a message naming the
 * offending pass or option into err and returns -1. */
int pass_pipeline_parse(const char *text, pass_pipeline *out, char *err, int errcap);
void pass_pipeline_free(pass_pipeline *pipeline);

/* Where a pass sits in the running pipeline. */
typedef struct pass_run_info {
    const char *pass;
    int index; /* 1-based */
    int count;
} pass_run_info;

/* Hooks called by the pass manager. Any hook may be NULL. A hook that
 * returns -1 stops the pipeline; it reports its own errors. */
typedef struct pass_instrument {
    void *ctx;
    int (*before_pipeline)(void *ctx, const ir_graph *g, int npasses);
    void (*before_pass)(void *ctx, const pass_run_info *run, const ir_graph *g);
    /* `failed` is set when the pass returned an error; g is then the graph
     * as the pass left it, not compacted. */
    int (*after_pass)(void *ctx, const pass_run_info *run, const ir_graph *g, bool failed);
    void (*after_pipeline)(void *ctx);
    void (*free_ctx)(void *ctx);
} pass_instrument;

typedef struct pass_manager pass_manager;

pass_manager *pass_manager_new(ir_diag *d);
/* Frees the manager and the context of every instrument added to it. */
void pass_manager_free(pass_manager *pm);
ir_diag *pass_manager_diag(const pass_manager *pm);
/* Adds an instrument. Before-hooks run in the order instruments were added
 * and after-hooks in reverse order, so the last instrument added sits
 * closest to the pass (the timer, for instance, times only the pass). */
int pass_manager_add_instrument(pass_manager *pm, pass_instrument instrument);
/* Runs the pipeline on g. Returns 0, or -1 when a pass or an instrument
 * failed; the errors name the pass. */
int pass_manager_run(pass_manager *pm, const pass_pipeline *pipeline, ir_graph *g);
/* Parses the pipeline `text` and runs it on g with a manager without
 * instruments. Returns 0, or -1 after reporting an invalid pipeline or a
 * failed pass. */
int pass_run_text(ir_graph *g, const char *text, ir_diag *d);

/* Settings of the standard instruments, set from the command line. */
typedef struct pass_dump_options {
    bool print_after_all;
    const char *print_before; /* comma-separated pass names, or NULL */
    const char *print_after;  /* comma-separated pass names, or NULL */
    const char *print_dir;    /* one numbered .qir file per pass, or NULL */
    bool verify_each;
    bool time_passes;
    bool print_locs;
    FILE *dump_stream;   /* where --print-ir-* dumps go */
    FILE *report_stream; /* where the --time-passes table goes */
} pass_dump_options;

/* Adds the printing, verification and timing instruments that `opts`
 * turns on. Returns 0, or -1 when out of memory. */
int pass_manager_add_standard_instruments(pass_manager *pm, const pass_dump_options *opts);

#endif
