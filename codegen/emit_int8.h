/* Code generation of the integer ops of ir/int8.h (q.linear) with the
 * int8 GEMM of codegen/gemm_i8.h. */
#ifndef QUADC_CODEGEN_EMIT_INT8_H
#define QUADC_CODEGEN_EMIT_INT8_H

#include "codegen/cg_internal.h"

/* Scratch buffers of one q.linear, in consecutive plan slots starting at
 * plan->scratch_slot[value]. */
enum {
    CG_QLINEAR_PACKED, /* packed i8 weights, written by qc_bind */
    CG_QLINEAR_COLSUM, /* int32 column sums of the weights, written by qc_bind */
    CG_QLINEAR_A,      /* the quantized input, u8 or s8 [M, K] */
    CG_QLINEAR_ROWSUM, /* int32 [M]: Σ_k (q[m, k] - z_x), for the weight zero point */
    CG_QLINEAR_NSCRATCH,
};

/* Fills bytes[CG_QLINEAR_NSCRATCH] with the size of each scratch buffer
 * of q.linear value v, large enough for every int8 GEMM shape. */
void cg_qlinear_scratch_bytes(const ir_graph *g, const ir_value *v, int64_t *bytes);

/* Emits the bind-time part of q.linear value v: packing its weights.
 * Call it with qc_bind selected. Returns 0, or -1 after reporting. */
int cg_emit_qlinear_pack(cg_emit *e, const ir_value *v);

/* Emits the run-time part of q.linear value v: quantizing the input and
 * the int8 GEMM with its dequantizing output stage. Returns 0, or -1
 * after reporting. */
int cg_emit_qlinear(cg_emit *e, const ir_value *v);

#endif
