/* Fixtures shared by the unit tests: seeded random numbers, random tensors
 * and weight sets, pass pipelines and op counts. Each test keeps its own
 * generator state, so its values do not depend on the other tests. The
 * helpers run no CHECK because check.h keeps its counters per translation
 * unit. They return NULL or -1 and leave the checks to the caller. */
#ifndef QUADC_TESTS_FIXTURES_H
#define QUADC_TESTS_FIXTURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "frontend/frontend.h"
#include "ir/ir.h"
#include "passes/manager.h"
#include "runtime/tensor.h"

/* ---- random numbers ---- */

typedef enum fx_rng_kind {
    FX_RNG_XORSHIFT, /* xorshift64 with shifts 13, 7, 17 */
    FX_RNG_LCG,      /* 64-bit LCG with Knuth's MMIX constants */
} fx_rng_kind;

typedef struct fx_rng {
    fx_rng_kind kind;
    uint64_t state;
} fx_rng;

/* Advances the generator and returns its new 64-bit state. */
uint64_t fx_next(fx_rng *rng);
/* Uniform in [lo, hi), from the top 53 bits of the next state. */
double fx_uniform(fx_rng *rng, double lo, double hi);
/* Uniform in the open interval (0, 1), so its logarithm is finite. */
double fx_uniform_open(fx_rng *rng);
/* Standard normal by Box-Muller from two fx_uniform_open draws. */
double fx_normal(fx_rng *rng);

/* An f32 tensor of N(0, stddev) values (stddev is the standard deviation). */
rt_tensor *fx_normal_tensor(fx_rng *rng, int rank, const int64_t *dims, double stddev);
/* A tensor of uniform [lo, hi) values. Integer dtypes get floor(x). */
rt_tensor *fx_uniform_tensor(fx_rng *rng, ir_dtype dtype, int rank, const int64_t *dims, double lo, double hi);

/* ---- weight sets ---- */

/* Random weights for every param of a GPT-2 graph: N(0, matrix_stddev)
 * matrices (rank 2), 1 + N(0, 0.1) for params with init "ones" (layernorm
 * gains) and N(0, 0.1) for the rest, quantizer params included. */
rt_weights *fx_gpt2_weights(fx_rng *rng, const ir_graph *g, double matrix_stddev);
/* Random weights with outlier channels: N(0, 0.1) matrices (rank 2),
 * N(0, 0.05) biases, and layernorm gains (init "ones") of 1 + N(0, 0.1)
 * with every 8th channel (i % 8 == 3) times 20. */
rt_weights *fx_outlier_gpt2_weights(fx_rng *rng, const ir_graph *g);
/* Sets a tensor in out for every param of a GPT-2 graph: uniform in
 * [-0.1, 0.1), but layernorm params (names with "ln_") uniform in
 * [-ln_range, ln_range) and their weights shifted by +1. */
void fx_set_uniform_gpt2_weights(fx_rng *rng, const ir_graph *g, double ln_range, rt_weights *out);
/* A deep copy of every tensor in w. */
rt_weights *fx_copy_weights(const rt_weights *w);

/* ---- graphs ---- */

/* A test graph under construction with its weights and inputs. Its
 * diagnostics go to stderr. */
typedef struct fx_fixture {
    ir_diag *diag;
    ir_graph *g;
    rt_weights *weights;
    rt_weights *inputs;
} fx_fixture;

fx_fixture fx_fixture_new(const char *graph_name);
void fx_fixture_free(fx_fixture *f);

/* Compiles examples/gpt2.qd (relative to the working directory) with
 * defines plus B = batch and T = seq. At most 14 defines. */
ir_graph *fx_compile_gpt2(const fe_define *defines, int ndefines, int64_t batch, int64_t seq, ir_diag *d);
/* Number of values of g with the given op, dead ones included. */
int fx_count_ops(const ir_graph *g, ir_op op);
/* Number of values of g with the given op that passes have not marked dead. */
int fx_count_live_ops(const ir_graph *g, ir_op op);

/* Uniform in [-1, 1) in f32, from a 32-bit LCG (Numerical Recipes
 * constants) kept in *state. */
float fx_lcg32_uniform(uint32_t *state);
/* An f32 tensor of fx_lcg32_uniform values, of dims [d0] (rank 1) or
 * [d0, d1] (rank 2). */
rt_tensor *fx_lcg32_tensor(uint32_t *state, int rank, int64_t d0, int64_t d1);

/* ---- files and commands ---- */

/* A C program to link with an AOT bundle named "tiny". Usage: main
 * WEIGHTS|- NTHREADS INPUTS OUTPUTS. It reads idx and targets from INPUTS,
 * writes the logits and the loss to OUTPUTS and exits with the init or run
 * status, or with 90 to 93 when its arguments or files fail. */
extern const char fx_tiny_bundle_main[];

/* Writes a then b (bn may be 0) to path. Returns 0 or -1. */
int fx_write_file(const char *path, const void *a, size_t an, const void *b, size_t bn);
/* Runs a shell command and returns its exit status, or -1 when it did not
 * exit normally. */
int fx_run_command(const char *command);
/* Counts the files in dir whose names contain ".tmp.", as the temporary
 * files of the runtime's atomic writes do. Returns -1 when dir cannot be
 * opened. */
int fx_count_temp_files(const char *dir);
/* Removes the files directly inside dir, then dir itself. */
void fx_remove_dir(const char *dir);
/* Reads the whole file at path into a new buffer with a NUL byte after
 * the data, and stores its size in *size (0 when reading fails). Returns
 * NULL when path cannot be opened. */
unsigned char *fx_read_bytes(const char *path, size_t *size);
/* Reads exactly count floats from path into a new array, or returns NULL. */
float *fx_read_floats(const char *path, size_t count);

/* ---- diagnostics capture ---- */

/* A diagnostics sink whose output goes to a memory buffer. */
typedef struct fx_capture {
    char *text;
    size_t len;
    FILE *stream;
    ir_diag *diag;
} fx_capture;

void fx_capture_open(fx_capture *c);
/* Returns everything reported so far, "" when nothing was. */
const char *fx_capture_text(fx_capture *c);
/* Frees the sink but not c->text, which the caller frees. Graphs parsed
 * with the sink point into it, so free them first. */
void fx_capture_end(fx_capture *c);
/* Frees the sink and its text. */
void fx_capture_close(fx_capture *c);

/* ---- comparisons ---- */

/* Returns whether a and b have the same dtype, dims and bytes. */
bool fx_same_tensor(const rt_tensor *a, const rt_tensor *b);
/* Returns max |got - want| / max |want| over want's elements, or INFINITY
 * when either tensor is missing. */
double fx_relative_difference(const rt_tensor *got, const rt_tensor *want);

#endif
