/* Emission of the int8 GEMM kernel (see gemm_i8.h for the math, the
 * packed layout and the calling convention).
 *
 * The microkernel keeps an MR x NR tile of int32 accumulators in
 * registers over all of K and applies the output stage before it stores,
 * so integer and requantized outputs need no partial sums in memory. K is
 * not blocked: at GPT-2 sizes a packed panel is K x NR bytes (at most
 * 3072 x 48 = 144 KiB) and stays in L2 while the strips of a task's MC
 * rows reuse it. Tasks are (MC-row block, NC-column block) tiles. Each
 * task walks its NR panels, then MR-row strips. One microkernel is built
 * per (rows, valid columns) variant, so an M tail of M % MR rows and an
 * N edge panel of N % NR columns get their own code. Products of at most
 * CG_GEMV_I8_MAX_M rows go to the GEMV kernel of emit_gemv_i8.c. */
#include <stdio.h>
#include <string.h>

#include "codegen/gemm_i8_internal.h"

/* ---- microkernel ---- */

/* Multiplies group g of `rows` rows by nv vectors of the panel into acc
 * (rows x nvec accumulators, row-major). */
static void emit_group(cg_i8_gen *gen, LLVMValueRef bp, LLVMValueRef *arow, int rows, int nv, LLVMValueRef g,
                       bool partial, LLVMValueRef *acc)
{
    int nvec = gen->s->nvec;
    LLVMValueRef bvec[CG_I8_MAX_NVEC];
    for (int j = 0; j < nv; j++)
        bvec[j] = cg_i8_load_b(gen, bp, g, j);
    for (int r = 0; r < rows; r++) {
        LLVMValueRef quad = cg_i8_load_quad(gen, arow[r], g, partial);
        for (int j = 0; j < nv; j++)
            acc[r * nvec + j] = cg_i8_madd(gen, acc[r * nvec + j], quad, bvec[j]);
    }
}

/* Builds void mk(ptr args, ptr a, ptr bp, ptr c, i64 row, i64 col), once
 * per (rows, nvalid). It multiplies rows [row, row + rows) of A (at a,
 * row stride lda) by the panel at bp. Then it stores the output stage of
 * columns [col, col + nvalid) at c + col (row stride ldc), which reads
 * its other buffers from args. */
static LLVMValueRef microkernel(cg_i8_gen *gen, int rows, int nvalid)
{
    cg_emit *e = gen->e;
    const cg_gemm_i8_shape *s = gen->s;
    char name[192];
    snprintf(name, sizeof name, "%s.mk%dx%d", gen->prefix, rows, nvalid);
    LLVMValueRef fn = LLVMGetNamedFunction(e->mod, name);
    if (fn)
        return fn;
    LLVMBasicBlockRef caller_block = LLVMGetInsertBlock(e->b);
    LLVMTypeRef params[6] = {e->ptr, e->ptr, e->ptr, e->ptr, e->i64, e->i64};
    fn = LLVMAddFunction(e->mod, name, LLVMFunctionType(e->void_ty, params, 6, 0));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    cg_function_attrs(e, fn);
    unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
    for (unsigned i = 1; i < 4; i++)
        LLVMAddAttributeAtIndex(fn, i + 1, LLVMCreateEnumAttribute(e->ctx, noalias, 0));
    LLVMValueRef args = LLVMGetParam(fn, 0), a = LLVMGetParam(fn, 1), bp = LLVMGetParam(fn, 2);
    LLVMValueRef c = LLVMGetParam(fn, 3), row = LLVMGetParam(fn, 4), col = LLVMGetParam(fn, 5);
    LLVMPositionBuilderAtEnd(e->b, LLVMAppendBasicBlockInContext(e->ctx, fn, "entry"));

    int vw = s->vw, nvec = s->nvec;
    int nv = (nvalid + vw - 1) / vw;
    int partial_lanes = nvalid % vw;
    LLVMValueRef arow[CG_I8_MAX_MR];
    for (int r = 0; r < rows; r++)
        arow[r] = cg_gep(e, e->i8, a, cg_i64(e, r * gen->lda));

    LLVMValueRef acc[CG_I8_MAX_MR * CG_I8_MAX_NVEC], next[CG_I8_MAX_MR * CG_I8_MAX_NVEC];
    cg_loop l;
    LLVMValueRef g = cg_loop_begin(e, &l, cg_i64(e, 0), cg_i64(e, gen->groups), cg_i64(e, 1));
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < nv; j++) {
            acc[r * nvec + j] = cg_loop_carry(e, &l, LLVMConstNull(cg_i8_acc_type(gen)));
            next[r * nvec + j] = acc[r * nvec + j];
        }
    }
    emit_group(gen, bp, arow, rows, nv, g, false, next);
    LLVMValueRef carried[CG_I8_MAX_MR * CG_I8_MAX_NVEC];
    int ncarried = 0;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < nv; j++)
            carried[ncarried++] = next[r * nvec + j];
    cg_loop_end(e, &l, carried);
    ncarried = 0;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < nv; j++)
            acc[r * nvec + j] = l.carry[ncarried++];
    if (gen->ktail)
        emit_group(gen, bp, arow, rows, nv, cg_i64(e, gen->groups), true, acc);

    cg_i8_out out;
    cg_i8_out_begin(gen, &out, args, c, row, col);
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < nv; j++) {
            LLVMValueRef mask = partial_lanes && j == nv - 1 ? cg_i8_lane_mask(e, vw, partial_lanes) : NULL;
            cg_i8_out_store(gen, &out, cg_i8_acc_finish(gen, acc[r * nvec + j]), r, j, mask);
        }
    }
    LLVMBuildRetVoid(e->b);
    LLVMPositionBuilderAtEnd(e->b, caller_block);
    return fn;
}

/* ---- the tiled product ---- */

/* Base pointers of the current task, loaded from the args array. */
typedef struct task_ptrs {
    LLVMValueRef args, a, packed, c;
} task_ptrs;

static void call_mk(cg_i8_gen *gen, LLVMValueRef mk, const task_ptrs *t, LLVMValueRef row, LLVMValueRef bp,
                    LLVMValueRef col)
{
    cg_emit *e = gen->e;
    LLVMBuilderRef b = e->b;
    LLVMValueRef a = cg_gep(e, e->i8, t->a, LLVMBuildMul(b, row, cg_i64(e, gen->lda), ""));
    LLVMValueRef c = cg_gep(e, gen->out_elem, t->c, LLVMBuildMul(b, row, cg_i64(e, gen->ldc), ""));
    LLVMValueRef args[6] = {t->args, a, bp, c, row, col};
    LLVMBuildCall2(b, LLVMGlobalGetValueType(mk), mk, args, 6, "");
}

/* Emits the MR-row strips of rows [m0, m1) for the panel at bp. */
static void emit_strips(cg_i8_gen *gen, const task_ptrs *t, LLVMValueRef m0, LLVMValueRef m1, LLVMValueRef bp,
                        LLVMValueRef col, int nvalid)
{
    cg_emit *e = gen->e;
    LLVMBuilderRef b = e->b;
    int mr = gen->s->mr;
    LLVMValueRef rows = LLVMBuildSub(b, m1, m0, "");
    LLVMValueRef full = LLVMBuildMul(b, LLVMBuildSDiv(b, rows, cg_i64(e, mr), ""), cg_i64(e, mr), "");
    LLVMValueRef full_end = LLVMBuildAdd(b, m0, full, "");
    LLVMValueRef mk = microkernel(gen, mr, nvalid);
    cg_loop l;
    LLVMValueRef row = cg_loop_begin(e, &l, m0, full_end, cg_i64(e, mr));
    call_mk(gen, mk, t, row, bp, col);
    cg_loop_end(e, &l, NULL);
    /* MC is a multiple of MR, so only the last row block ends in a
     * partial strip, of M % MR rows. */
    int tail = (int)(gen->d->m % mr);
    if (tail) {
        LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(b));
        LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(e->ctx, fn, "tail_rows");
        LLVMBasicBlockRef after = LLVMAppendBasicBlockInContext(e->ctx, fn, "after_tail");
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, full_end, m1, ""), then, after);
        LLVMPositionBuilderAtEnd(b, then);
        call_mk(gen, microkernel(gen, tail, nvalid), t, full_end, bp, col);
        LLVMBuildBr(b, after);
        LLVMPositionBuilderAtEnd(b, after);
    }
}

int64_t cg_gemm_i8_tasks(const cg_gemm_i8_desc *d)
{
    if (d->m <= CG_GEMV_I8_MAX_M)
        return cg_gemv_i8_tasks(d);
    int64_t mblocks = (d->m + d->shape.mc - 1) / d->shape.mc;
    int64_t nblocks = (d->n + d->shape.nc - 1) / d->shape.nc;
    return mblocks * nblocks;
}

LLVMValueRef cg_emit_gemm_i8(cg_emit *e, const cg_gemm_i8_desc *d)
{
    if (d->m >= 1 && d->m <= CG_GEMV_I8_MAX_M)
        return cg_emit_gemv_i8(e, d);
    cg_i8_gen gen;
    if (!cg_i8_gen_init(&gen, e, d, "gemm_i8"))
        return NULL;
    const cg_gemm_i8_shape *s = gen.s;
    int64_t nblocks = (d->n + s->nc - 1) / s->nc;
    int64_t full_panels = d->n / s->nr;
    int edge = (int)(d->n % s->nr);

    char kernel_name[160];
    snprintf(kernel_name, sizeof kernel_name, "gemm_i8.%s", d->name);
    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, kernel_name, &begin, &end);
    LLVMBuilderRef b = e->b;
    task_ptrs t = {e->kctx, cg_i8_arg(e, e->kctx, CG_GEMM_I8_ARG_A), cg_i8_arg(e, e->kctx, CG_GEMM_I8_ARG_PACKED),
                   cg_i8_arg(e, e->kctx, CG_GEMM_I8_ARG_C)};

    cg_loop tl;
    LLVMValueRef task = cg_loop_begin(e, &tl, begin, end, cg_i64(e, 1));
    LLVMValueRef mb = LLVMBuildSDiv(b, task, cg_i64(e, nblocks), "");
    LLVMValueRef nb = LLVMBuildSRem(b, task, cg_i64(e, nblocks), "");
    LLVMValueRef m0 = LLVMBuildMul(b, mb, cg_i64(e, s->mc), "m0");
    LLVMValueRef m1 = cg_i8_min_i64(e, LLVMBuildAdd(b, m0, cg_i64(e, s->mc), ""), d->m);
    LLVMValueRef p0 = LLVMBuildMul(b, nb, cg_i64(e, s->nc / s->nr), "p0");
    LLVMValueRef p1 = cg_i8_min_i64(e, LLVMBuildAdd(b, p0, cg_i64(e, s->nc / s->nr), ""), gen.panels);

    cg_loop pl;
    LLVMValueRef p = cg_loop_begin(e, &pl, p0, p1, cg_i64(e, 1));
    LLVMValueRef bp = cg_gep(e, e->i8, t.packed, LLVMBuildMul(b, p, cg_i64(e, gen.panel_bytes), ""));
    LLVMValueRef col = LLVMBuildMul(b, p, cg_i64(e, s->nr), "col");
    if (edge) {
        LLVMValueRef kfn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(b));
        LLVMBasicBlockRef full = LLVMAppendBasicBlockInContext(e->ctx, kfn, "full_panel");
        LLVMBasicBlockRef part = LLVMAppendBasicBlockInContext(e->ctx, kfn, "edge_panel");
        LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(e->ctx, kfn, "panel_done");
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, p, cg_i64(e, full_panels), ""), full, part);
        LLVMPositionBuilderAtEnd(b, full);
        emit_strips(&gen, &t, m0, m1, bp, col, s->nr);
        LLVMBuildBr(b, join);
        LLVMPositionBuilderAtEnd(b, part);
        emit_strips(&gen, &t, m0, m1, bp, col, edge);
        LLVMBuildBr(b, join);
        LLVMPositionBuilderAtEnd(b, join);
    } else {
        emit_strips(&gen, &t, m0, m1, bp, col, s->nr);
    }
    cg_loop_end(e, &pl, NULL);
    cg_loop_end(e, &tl, NULL);
    cg_kernel_end(e);
    return fn;
}
