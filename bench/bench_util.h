/* Helpers shared by the benchmarks: clocks, medians, command-line flags
 * and random weights. The weights are uniform draws from a fixed xorshift
 * seed because only their magnitude matters for timing. */
#ifndef QUADC_BENCH_UTIL_H
#define QUADC_BENCH_UTIL_H

#include <stdint.h>

#include "ir/ir.h"
#include "runtime/tensor.h"

/* The xorshift seed the GPT-2 benchmarks start their random weights from. */
#define BENCH_SEED 0x2545f4914f6cdd1dull

/* Wall-clock seconds from CLOCK_MONOTONIC. */
double bench_wall_seconds(void);
/* CPU seconds of all threads of the process (CLOCK_PROCESS_CPUTIME_ID). On
 * a shared machine it counts only the time this process ran. */
double bench_cpu_seconds(void);

/* Orders doubles ascending, for qsort. */
int bench_compare_doubles(const void *a, const void *b);
/* Sorts x[0..n) in place and returns its median, the mean of the middle
 * two when n is even. */
double bench_median(double *x, int n);

/* Returns the value after `flag` in argv as an int, or fallback when the
 * flag is absent. */
int bench_int_flag(int argc, char **argv, const char *flag, int fallback);
/* Returns the value after `flag` in argv, or fallback when it is absent. */
const char *bench_str_flag(int argc, char **argv, const char *flag, const char *fallback);

/* Prints the mean time per forward of each op kind of g, largest first,
 * from the per-value times of cg_profile_seconds summed over nforwards
 * forwards. The lines start with indent and the times have `decimals`
 * digits after the point. */
void bench_print_profile(const ir_graph *g, const double *seconds, int nforwards, const char *indent, int decimals);

/* Fills an f32 tensor with uniform values in [-scale, scale) from the
 * xorshift64 generator in *state. */
void bench_fill_uniform(rt_tensor *t, float scale, uint64_t *state);
/* Returns a tensor for every param of g, filled by bench_fill_uniform in
 * the order of g's values. */
rt_weights *bench_uniform_weights(const ir_graph *g, float scale, uint64_t *state);

#endif
