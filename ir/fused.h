/* The program of a fused.elementwise op: a chain of elementwise f32 ops
 * evaluated per output element in postfix order. The fuse-elementwise pass
 * builds it, and the shape rule, the interpreter and the LLVM backend read
 * it.
 *
 * Text form (the op's `program` attribute): tokens separated by one space.
 * `$N` pushes operand N of the op, read with numpy broadcasting against the
 * result. A binary op name (add, sub, mul, div, maximum, minimum) pops two
 * values and pushes the result. A unary op name (neg, exp, log, sqrt,
 * rsqrt, tanh, gelu, relu, abs) replaces the top value, and so does
 * `scale:F`, which multiplies it by the factor F printed with %.17g.
 * Exactly one value remains at the end, and every operand is used.
 * Example: "$0 $1 add gelu $2 mul". */
#ifndef QUADC_IR_FUSED_H
#define QUADC_IR_FUSED_H

#include "ir/ir.h"

/* The maximum program length in steps, and the maximum operand count of a
 * fused.elementwise op. The LLVM kernel keeps a pointer and a stride set
 * per operand, which bounds the count. */
#define IR_FUSED_MAX_STEPS 64
#define IR_FUSED_MAX_INPUTS 7

typedef struct ir_fused_step {
    ir_op op;      /* IR_OP_INPUT for a push of operand `input` */
    int input;
    double factor; /* of IR_OP_SCALE */
} ir_fused_step;

typedef struct ir_fused_program {
    int nsteps;
    ir_fused_step steps[IR_FUSED_MAX_STEPS];
    int max_depth; /* the largest stack depth the program reaches */
} ir_fused_program;

/* Returns true for the ops that a fused program may contain. */
bool ir_fused_op_allowed(ir_op op);

/* Parses `text` for an op with `nops` operands. On error writes a message
 * into err and returns -1. */
int ir_fused_parse(const char *text, int nops, ir_fused_program *p, char *err, int errcap);

/* Formats p into buf (NUL-terminated). Returns the length, or -1 when buf
 * is too small. */
int ir_fused_format(const ir_fused_program *p, char *buf, int cap);

/* The shape rule of fused.elementwise: every operand has the same float
 * dtype, the program is valid, and the result is all operands broadcast
 * together. */
int ir_infer_fused_type(const ir_type *const *operands, int nops, const ir_attr *attrs, ir_type *out, char *err,
                        int errcap);

/* Returns the number of inputs that the program of fused value v reads:
 * its operand count for fused.elementwise, and for fused.linear and
 * fused.matmul one for the product plus one per operand after the two
 * factors. */
int ir_fused_program_inputs(const ir_value *v);

/* Parses the program of a fused.elementwise, fused.linear or fused.matmul
 * value. On error writes a message into err and returns -1. */
int ir_fused_parse_value(const ir_value *v, ir_fused_program *p, char *err, int errcap);

/* The shape rule of fused.linear and fused.matmul: the product's rule,
 * then a valid program over the product and the epilogue operands, which
 * are f32 like the product and broadcast to its type without changing it.
 * The result has the product's type. */
int ir_infer_fused_product_type(ir_op op, const ir_type *const *operands, int nops, const ir_attr *attrs,
                                ir_type *out, char *err, int errcap);

#endif
