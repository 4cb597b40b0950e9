/* Code generation of the integer ops of ir/int8.h (q.linear). */
#ifndef QUADC_CODEGEN_EMIT_INT8_H
#define QUADC_CODEGEN_EMIT_INT8_H

#include "codegen/cg_internal.h"

/* Emits q.linear value v. Returns 0, or -1 after reporting through e->d. */
int cg_emit_qlinear(cg_emit *e, const ir_value *v);

#endif
