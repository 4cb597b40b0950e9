/* The integer ops that the lower-int8 pass introduces (q.linear, and
 * q.quantize, q.matmul, q.requantize and q.dequantize for attention):
 * operand slots, attribute decoding and the shape rules. ir/ops.def states
 * the arithmetic. */
#ifndef QUADC_IR_INT8_H
#define QUADC_IR_INT8_H

#include "ir/ir.h"
#include "ir/quant.h"

/* Operand slots of q.linear. */
enum {
    IR_QLINEAR_X,            /* f32 [..., K] */
    IR_QLINEAR_W,            /* i8 [K, N], or [N, K] with transpose_b=1 */
    IR_QLINEAR_X_SCALE,      /* f32, one element */
    IR_QLINEAR_X_ZERO_POINT, /* f32, one element, rounded half to even */
    IR_QLINEAR_W_SCALE,      /* f32, one element or N */
    IR_QLINEAR_W_ZERO_POINT, /* f32, shaped like w_scale */
    IR_QLINEAR_BIAS,         /* f32 [N], optional */
};

/* Operand slots of q.quantize and q.requantize. */
enum {
    IR_QQUANTIZE_X,          /* f32 (q.quantize) or i32 sums (q.requantize) */
    IR_QQUANTIZE_SCALE,      /* q.quantize: f32 scale; q.requantize: i32[3] multiplier */
    IR_QQUANTIZE_ZERO_POINT, /* f32, one element, rounded half to even */
};

/* Operand slots of q.matmul. */
enum {
    IR_QMATMUL_A,            /* u8 or i8 [..., M, K] */
    IR_QMATMUL_B,            /* u8 or i8 [..., K, N], or [..., N, K] with transpose_b=1 */
    IR_QMATMUL_A_ZERO_POINT, /* f32, one element */
    IR_QMATMUL_B_ZERO_POINT, /* f32, one element */
};

/* Operand slots of q.dequantize. */
enum {
    IR_QDEQUANTIZE_X,          /* u8, i8 or i32 */
    IR_QDEQUANTIZE_SCALE,      /* f32, one element */
    IR_QDEQUANTIZE_ZERO_POINT, /* f32, one element, optional */
};

/* Elements of q.requantize's i32[3] multiplier operand. */
enum {
    IR_QMUL_M0,
    IR_QMUL_LEFT_SHIFT,
    IR_QMUL_RIGHT_SHIFT,
    IR_QMUL_COUNT,
};

/* Largest K of q.matmul: K products of two 8-bit differences, each at
 * most 255 · 255 in magnitude, must fit in an int32 sum. */
#define IR_QMATMUL_MAX_K 33025

/* Returns the integer range of q.linear value v's activation quantizer,
 * or of q.quantize or q.requantize value v's output, or -1 for an invalid
 * attribute set or another op. */
int ir_qlinear_range(const ir_value *v, ir_quant_range *out);

/* Shape rule of the integer ops, called by ir_infer_type. Same contract. */
int ir_infer_int8_type(ir_op op, const ir_type *const *operands, int nops, const ir_attr *attrs, ir_type *out,
                       char *err, int errcap);

#endif
