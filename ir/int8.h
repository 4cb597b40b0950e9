/* The integer ops that the lower-int8 pass introduces (q.linear): operand
 * slots, attribute decoding and the shape rule. ir/ops.def states the
 * arithmetic. */
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

/* Returns the integer range of q.linear value v's activation quantizer,
 * or -1 for an invalid attribute set. */
int ir_qlinear_range(const ir_value *v, ir_quant_range *out);

/* Shape rule of q.linear, called by ir_infer_type. Same contract. */
int ir_infer_int8_type(ir_op op, const ir_type *const *operands, int nops, const ir_attr *attrs, ir_type *out,
                       char *err, int errcap);

#endif
