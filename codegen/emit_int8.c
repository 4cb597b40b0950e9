/* Code generation of q.linear. */
#include "codegen/emit_int8.h"

int cg_emit_qlinear(cg_emit *e, const ir_value *v)
{
    /* TODO: generate q.linear with the int8 GEMM (codegen/gemm_i8.h): a
     * quantizing loop to u8, the GEMM with an int32 output, and an f32
     * epilogue, with the weights packed at bind time. Until then the JIT
     * and AOT backends reject lowered graphs, and only the interpreter
     * runs them. */
    ir_diag_error(e->d, v->loc, "codegen: q.linear '%s' is not supported by the JIT yet; run the lowered graph "
                  "with the interpreter, or compile the fake-quant graph without lower-int8", v->name);
    return -1;
}
