/* The reference interpreter: runs an IR graph op by op in plain C on host
 * tensors. It is the reference for the fast paths (JIT code, INT8 kernels,
 * object files), so it is written for exact, documented semantics, not speed.
 *
 * Numerics, which the fast paths are compared against with a tolerance:
 *   - Floating ops compute in f32. An f16 or bf16 operand of an arithmetic
 *     op widens to f32, and an f16 or bf16 result rounds to nearest even
 *     once, after the op. Layout ops (reshape, transpose, slice, concat,
 *     broadcast, embedding) copy elements of any dtype unchanged.
 *   - Sums over many elements accumulate in double and round to f32 once:
 *     matmul and linear dot products, layernorm mean and variance, the
 *     softmax denominator, the cross-entropy log-sum-exp and mean, and
 *     reduce_sum / reduce_mean.
 *   - Each op's exact contract is the comment above its kernel in one of
 *     the runtime/interp_*.c files. */
#ifndef QUADC_RUNTIME_INTERP_H
#define QUADC_RUNTIME_INTERP_H

#include "ir/ir.h"
#include "runtime/tensor.h"

/* Runs every value of g. Params are looked up by name in `weights`, where
 * any floating dtype converts to the param's dtype, and a missing or wrongly
 * shaped weight is an error naming it and both shapes. Inputs are looked up
 * by name in `inputs`, and their dtype and shape must match. Either map may be NULL when the graph has no
 * value of that kind. On success returns 0 and stores one new tensor per graph
 * output in outputs[0 .. g->noutputs), which the caller frees with
 * rt_tensor_free. On failure reports through d, sets every outputs[] entry to
 * NULL and returns -1. Intermediate tensors are freed after their last use. */
int rt_interp_run(const ir_graph *g, const rt_weights *weights, const rt_weights *inputs,
                  rt_tensor **outputs, ir_diag *d);

/* Runs g like rt_interp_run but keeps every value, for debugging and for
 * comparing single ops. On success *values is a new array of g->nvalues
 * tensors in which values[i] is value id i. Free it with
 * rt_interp_free_values. On failure *values is NULL. */
int rt_interp_run_all(const ir_graph *g, const rt_weights *weights, const rt_weights *inputs,
                      rt_tensor ***values, ir_diag *d);

/* Frees an array returned by rt_interp_run_all and every tensor in it. */
void rt_interp_free_values(rt_tensor **values, int nvalues);

#endif
