/* Emission of the int8 weight-packing kernel: the generated counterpart
 * of cg_gemm_i8_pack_b (gemm_i8.c) for weights bound at run time. It runs
 * once per bind, so it is plain scalar code. */
#include <stdio.h>

#include "codegen/gemm_i8.h"

static LLVMValueRef load_arg(cg_emit *e, int index)
{
    LLVMValueRef idx = cg_i64(e, index);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(e->b, e->ptr, e->kctx, &idx, 1, "");
    return LLVMBuildLoad2(e->b, e->ptr, p, "");
}

int64_t cg_gemm_i8_pack_tasks(const cg_gemm_i8_desc *d)
{
    return (d->n + d->shape.nr - 1) / d->shape.nr;
}

LLVMValueRef cg_emit_pack_b_i8(cg_emit *e, const cg_gemm_i8_desc *d)
{
    const cg_gemm_i8_shape *s = &d->shape;
    if (d->k < 1 || d->n < 1 || s->nr < 1) {
        ir_diag_file_error(e->d, NULL, "codegen: int8 weight packing '%s': K=%lld, N=%lld and the panel width %d must "
                           "be at least 1", d->name, (long long)d->k, (long long)d->n, s->nr);
        e->errors++;
        return NULL;
    }
    LLVMBuilderRef b = e->b;
    int64_t groups = (d->k + 3) / 4;
    char name[160];
    snprintf(name, sizeof name, "pack_b_i8.%s", d->name);
    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, name, &begin, &end);
    LLVMValueRef src = load_arg(e, CG_PACK_I8_ARG_B);
    LLVMValueRef dst = load_arg(e, CG_PACK_I8_ARG_PACKED);
    LLVMValueRef sums = load_arg(e, CG_PACK_I8_ARG_COLSUM);

    cg_loop pl;
    LLVMValueRef p = cg_loop_begin(e, &pl, begin, end, cg_i64(e, 1));
    cg_loop jl;
    LLVMValueRef j = cg_loop_begin(e, &jl, cg_i64(e, 0), cg_i64(e, s->nr), cg_i64(e, 1));
    LLVMValueRef col = LLVMBuildAdd(b, LLVMBuildMul(b, p, cg_i64(e, s->nr), ""), j, "col");
    LLVMValueRef col_valid = LLVMBuildICmp(b, LLVMIntSLT, col, cg_i64(e, d->n), "");
    LLVMValueRef safe_col = LLVMBuildSelect(b, col_valid, col, cg_i64(e, 0), "");

    /* Every k of the padded K, so the padding bytes are written as zeros
     * and the loads are clamped to index 0 where they would leave B. */
    cg_loop kl;
    LLVMValueRef k = cg_loop_begin(e, &kl, cg_i64(e, 0), cg_i64(e, groups * 4), cg_i64(e, 1));
    LLVMValueRef sum = cg_loop_carry(e, &kl, cg_i32(e, 0));
    LLVMValueRef k_valid = LLVMBuildICmp(b, LLVMIntSLT, k, cg_i64(e, d->k), "");
    LLVMValueRef safe_k = LLVMBuildSelect(b, k_valid, k, cg_i64(e, 0), "");
    LLVMValueRef sidx = d->b_transposed
                            ? LLVMBuildAdd(b, LLVMBuildMul(b, safe_col, cg_i64(e, d->k), ""), safe_k, "")
                            : LLVMBuildAdd(b, LLVMBuildMul(b, safe_k, cg_i64(e, d->n), ""), safe_col, "");
    LLVMValueRef w = cg_load(e, e->i8, src, sidx, 1);
    w = LLVMBuildSelect(b, LLVMBuildAnd(b, col_valid, k_valid, ""), w, LLVMConstInt(e->i8, 0, 0), "");
    LLVMValueRef group = LLVMBuildSDiv(b, k, cg_i64(e, 4), "");
    LLVMValueRef panel_group = LLVMBuildAdd(b, LLVMBuildMul(b, p, cg_i64(e, groups), ""), group, "");
    LLVMValueRef quad = LLVMBuildAdd(b, LLVMBuildMul(b, panel_group, cg_i64(e, s->nr), ""), j, "");
    LLVMValueRef didx = LLVMBuildAdd(b, LLVMBuildMul(b, quad, cg_i64(e, 4), ""), LLVMBuildSRem(b, k, cg_i64(e, 4), ""), "");
    cg_store(e, w, e->i8, dst, didx);
    LLVMValueRef next = LLVMBuildAdd(b, sum, LLVMBuildSExt(b, w, e->i32, ""), "");
    cg_loop_end(e, &kl, &next);

    cg_store(e, kl.carry[0], e->i32, sums, col);
    cg_loop_end(e, &jl, NULL);
    cg_loop_end(e, &pl, NULL);
    cg_kernel_end(e);
    return fn;
}
