/* Code generation of the integer attention ops of ir/int8.h: q.quantize,
 * q.matmul, q.requantize and q.dequantize. */
#ifndef QUADC_CODEGEN_EMIT_QMATMUL_H
#define QUADC_CODEGEN_EMIT_QMATMUL_H

#include "codegen/cg_internal.h"

/* Each emits the run-time kernel of value v and its launch. Returns 0, or
 * -1 after reporting. */
int cg_emit_qquantize(cg_emit *e, const ir_value *v);
int cg_emit_qmatmul(cg_emit *e, const ir_value *v);
int cg_emit_qrequantize(cg_emit *e, const ir_value *v);
int cg_emit_qdequantize(cg_emit *e, const ir_value *v);

#endif
