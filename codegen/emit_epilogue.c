/* Elementwise epilogues of matrix products. A fused.linear or fused.matmul
 * value carries a fused program that the GEMM microkernel and the GEMV
 * kernels apply to result elements while they are still in registers,
 * right before the store. That works for operands that the kernels can
 * address from a tile's row and column: the result's own shape, a vector
 * over the columns (a bias) and a single element. Other broadcasts take an
 * in-place pass over the stored result instead (cg_emit_epilogue_pass). */
#include <string.h>

#include "codegen/cg_internal.h"

bool cg_is_product(const ir_value *v)
{
    return v->op == IR_OP_MATMUL || v->op == IR_OP_LINEAR || v->op == IR_OP_FUSED_MATMUL ||
           v->op == IR_OP_FUSED_LINEAR;
}

bool cg_is_linear(const ir_value *v)
{
    return v->op == IR_OP_LINEAR || v->op == IR_OP_FUSED_LINEAR;
}

static cg_epilogue_kind classify(const ir_type *t, const ir_type *result)
{
    int64_t n = result->dims[result->rank - 1];
    int64_t numel = ir_type_numel(t);
    if (numel == 1)
        return CG_EPILOGUE_SCALAR;
    /* The shape rule guarantees that t broadcasts to the result without
     * changing it, so with as many elements it reads them in order. */
    if (numel == ir_type_numel(result))
        return CG_EPILOGUE_FULL;
    if (numel == n && t->rank >= 1 && t->dims[t->rank - 1] == n)
        return CG_EPILOGUE_ROW;
    return CG_EPILOGUE_OTHER;
}

int cg_epilogue_init(cg_emit *e, const ir_value *v, cg_epilogue *ep)
{
    memset(ep, 0, sizeof *ep);
    if (v->op != IR_OP_FUSED_LINEAR && v->op != IR_OP_FUSED_MATMUL)
        return 0;
    char err[256];
    if (v->nops - 1 > IR_FUSED_MAX_INPUTS || ir_fused_parse_value(v, &ep->program, err, sizeof err) != 0) {
        ir_diag_error(e->d, v->loc, "codegen: invalid %s value '%s'; run the verifier on the graph",
                      ir_op_get(v->op)->name, v->name);
        return -1;
    }
    ep->active = true;
    ep->in_registers = true;
    ep->ninputs = v->nops - 1;
    ep->kind[0] = CG_EPILOGUE_FULL;
    ep->slot[0] = e->plan->slot[v->id];
    for (int k = 1; k < ep->ninputs; k++) {
        int id = v->ops[k + 1];
        ep->slot[k] = e->plan->slot[id];
        ep->kind[k] = classify(&e->g->values[id]->type, &v->type);
        if (ep->kind[k] == CG_EPILOGUE_OTHER)
            ep->in_registers = false;
    }
    return 0;
}

void cg_epilogue_bases(cg_emit *e, const cg_epilogue *ep, LLVMValueRef full_offset, LLVMValueRef col,
                       LLVMValueRef *bases)
{
    bases[0] = NULL; /* the product itself, in registers */
    for (int k = 1; k < ep->ninputs; k++) {
        LLVMValueRef buf = cg_buf(e, ep->slot[k]);
        if (ep->kind[k] == CG_EPILOGUE_FULL)
            bases[k] = cg_gep(e, e->f32, buf, full_offset);
        else if (ep->kind[k] == CG_EPILOGUE_ROW)
            bases[k] = cg_gep(e, e->f32, buf, col);
        else
            bases[k] = buf;
    }
}

/* Loads `lanes` elements at base[index], masked when mask is not NULL. */
static LLVMValueRef load_lanes(cg_emit *e, LLVMValueRef base, LLVMValueRef index, int lanes, LLVMValueRef mask)
{
    if (!mask)
        return cg_load(e, e->f32, base, index, lanes);
    LLVMTypeRef vty = LLVMVectorType(e->f32, (unsigned)lanes);
    LLVMTypeRef tys[2] = {vty, e->ptr};
    LLVMValueRef args[4] = {cg_gep(e, e->f32, base, index), cg_i32(e, 4), mask, cg_constf(e, vty, 0.0)};
    return cg_intrinsic2(e, "llvm.masked.load", tys, 2, args, 4);
}

LLVMValueRef cg_epilogue_apply(cg_emit *e, const cg_epilogue *ep, const LLVMValueRef *bases, LLVMValueRef acc,
                               LLVMValueRef row_offset, LLVMValueRef col_offset, int lanes, LLVMValueRef mask)
{
    LLVMValueRef in[IR_FUSED_MAX_INPUTS];
    in[0] = acc;
    for (int k = 1; k < ep->ninputs; k++) {
        switch (ep->kind[k]) {
        case CG_EPILOGUE_FULL:
            in[k] = load_lanes(e, bases[k], LLVMBuildAdd(e->b, row_offset, col_offset, ""), lanes, mask);
            break;
        case CG_EPILOGUE_ROW:
            in[k] = load_lanes(e, bases[k], col_offset, lanes, mask);
            break;
        default: /* a scalar; OTHER never reaches here */
            in[k] = cg_splat(e, cg_load(e, e->f32, bases[k], cg_i64(e, 0), 1), lanes);
            break;
        }
    }
    return cg_fused_eval(e, &ep->program, in);
}
