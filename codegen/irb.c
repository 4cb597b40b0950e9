/* IR-building helpers shared by the op emitters: constants, intrinsics,
 * loads and stores of scalars or vectors, counted loops with carried
 * values, kernels and their launch from the entry functions. */
#include <stdio.h>
#include <string.h>

#include "codegen/cg_internal.h"

LLVMTypeRef cg_elem_type(cg_emit *e, ir_dtype t)
{
    switch (t) {
    case IR_F32:
    case IR_F16:
    case IR_BF16:
        return e->f32;
    case IR_I8:
    case IR_U8:
        return e->i8;
    case IR_I32:
        return e->i32;
    case IR_I64:
        return e->i64;
    case IR_DTYPE_COUNT:
        break;
    }
    return e->f32;
}

LLVMTypeRef cg_vec_type(LLVMTypeRef elem, int lanes)
{
    return lanes > 1 ? LLVMVectorType(elem, (unsigned)lanes) : elem;
}

LLVMValueRef cg_i64(cg_emit *e, int64_t v)
{
    return LLVMConstInt(e->i64, (unsigned long long)v, 1);
}

LLVMValueRef cg_i32(cg_emit *e, int32_t v)
{
    return LLVMConstInt(e->i32, (unsigned long long)(int64_t)v, 1);
}

static LLVMValueRef splat_const(LLVMTypeRef ty, LLVMValueRef scalar)
{
    if (LLVMGetTypeKind(ty) != LLVMVectorTypeKind)
        return scalar;
    unsigned n = LLVMGetVectorSize(ty);
    LLVMValueRef elems[64];
    for (unsigned i = 0; i < n; i++)
        elems[i] = scalar;
    return LLVMConstVector(elems, n);
}

static LLVMTypeRef scalar_of(LLVMTypeRef ty)
{
    return LLVMGetTypeKind(ty) == LLVMVectorTypeKind ? LLVMGetElementType(ty) : ty;
}

LLVMValueRef cg_constf(cg_emit *e, LLVMTypeRef ty, double v)
{
    return splat_const(ty, LLVMConstReal(scalar_of(ty), v));
}

LLVMValueRef cg_consti(cg_emit *e, LLVMTypeRef ty, int64_t v)
{
    return splat_const(ty, LLVMConstInt(scalar_of(ty), (unsigned long long)v, 1));
}

LLVMValueRef cg_splat(cg_emit *e, LLVMValueRef scalar, int lanes)
{
    if (lanes <= 1)
        return scalar;
    LLVMTypeRef vty = LLVMVectorType(LLVMTypeOf(scalar), (unsigned)lanes);
    LLVMValueRef one = LLVMBuildInsertElement(e->b, LLVMGetPoison(vty), scalar, cg_i32(e, 0), "");
    LLVMValueRef mask = LLVMConstNull(LLVMVectorType(e->i32, (unsigned)lanes));
    return LLVMBuildShuffleVector(e->b, one, LLVMGetPoison(vty), mask, "");
}

LLVMValueRef cg_intrinsic2(cg_emit *e, const char *name, LLVMTypeRef *tys, int ntys, LLVMValueRef *args,
                           int nargs)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(e->mod, id, tys, (size_t)ntys);
    LLVMTypeRef fty = LLVMIntrinsicGetType(e->ctx, id, tys, (size_t)ntys);
    return LLVMBuildCall2(e->b, fty, fn, args, (unsigned)nargs, "");
}

LLVMValueRef cg_intrinsic(cg_emit *e, const char *name, LLVMTypeRef ty, LLVMValueRef *args, int nargs)
{
    return cg_intrinsic2(e, name, &ty, 1, args, nargs);
}

LLVMValueRef cg_gep(cg_emit *e, LLVMTypeRef elem, LLVMValueRef base, LLVMValueRef index)
{
    return LLVMBuildInBoundsGEP2(e->b, elem, base, &index, 1, "");
}

LLVMValueRef cg_load(cg_emit *e, LLVMTypeRef elem, LLVMValueRef base, LLVMValueRef index, int lanes)
{
    LLVMValueRef p = cg_gep(e, elem, base, index);
    LLVMValueRef v = LLVMBuildLoad2(e->b, cg_vec_type(elem, lanes), p, "");
    LLVMSetAlignment(v, (unsigned)LLVMABISizeOfType(LLVMGetModuleDataLayout(e->mod), elem));
    return v;
}

void cg_store(cg_emit *e, LLVMValueRef v, LLVMTypeRef elem, LLVMValueRef base, LLVMValueRef index)
{
    LLVMValueRef p = cg_gep(e, elem, base, index);
    LLVMValueRef s = LLVMBuildStore(e->b, v, p);
    LLVMSetAlignment(s, (unsigned)LLVMABISizeOfType(LLVMGetModuleDataLayout(e->mod), elem));
}

LLVMValueRef cg_reassoc(LLVMValueRef inst)
{
    if (LLVMCanValueUseFastMathFlags(inst))
        LLVMSetFastMathFlags(inst, LLVMFastMathAllowReassoc);
    return inst;
}

LLVMValueRef cg_hsum(cg_emit *e, LLVMValueRef v)
{
    LLVMTypeRef ty = LLVMTypeOf(v);
    if (LLVMGetTypeKind(ty) != LLVMVectorTypeKind)
        return v;
    LLVMValueRef args[2] = {LLVMConstReal(LLVMGetElementType(ty), -0.0), v};
    return cg_reassoc(cg_intrinsic(e, "llvm.vector.reduce.fadd", ty, args, 2));
}

LLVMValueRef cg_hmax(cg_emit *e, LLVMValueRef v)
{
    LLVMTypeRef ty = LLVMTypeOf(v);
    if (LLVMGetTypeKind(ty) != LLVMVectorTypeKind)
        return v;
    return cg_intrinsic(e, "llvm.vector.reduce.fmax", ty, &v, 1);
}

LLVMValueRef cg_loop_begin(cg_emit *e, cg_loop *l, LLVMValueRef start, LLVMValueRef end, LLVMValueRef step)
{
    LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(e->b));
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(e->b);
    l->header = LLVMAppendBasicBlockInContext(e->ctx, fn, "loop");
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(e->ctx, fn, "body");
    l->exit = LLVMAppendBasicBlockInContext(e->ctx, fn, "done");
    l->step = step;
    l->ncarry = 0;
    LLVMBuildBr(e->b, l->header);

    LLVMPositionBuilderAtEnd(e->b, l->header);
    l->iv = LLVMBuildPhi(e->b, e->i64, "i");
    LLVMAddIncoming(l->iv, &start, &pre, 1);
    LLVMValueRef more = LLVMBuildICmp(e->b, LLVMIntSLT, l->iv, end, "");
    LLVMBuildCondBr(e->b, more, body, l->exit);
    LLVMPositionBuilderAtEnd(e->b, body);
    return l->iv;
}

LLVMValueRef cg_loop_carry(cg_emit *e, cg_loop *l, LLVMValueRef init)
{
    LLVMBasicBlockRef body = LLVMGetInsertBlock(e->b);
    LLVMBasicBlockRef pre = LLVMGetIncomingBlock(l->iv, 0);
    /* Phis go at the top of the header, before the compare. */
    LLVMPositionBuilderBefore(e->b, LLVMGetFirstInstruction(l->header));
    LLVMValueRef phi = LLVMBuildPhi(e->b, LLVMTypeOf(init), "acc");
    LLVMAddIncoming(phi, &init, &pre, 1);
    LLVMPositionBuilderAtEnd(e->b, body);
    l->carry[l->ncarry++] = phi;
    return phi;
}

void cg_loop_end(cg_emit *e, cg_loop *l, LLVMValueRef *next)
{
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(e->b);
    LLVMValueRef iv_next = LLVMBuildAdd(e->b, l->iv, l->step, "");
    LLVMAddIncoming(l->iv, &iv_next, &latch, 1);
    for (int i = 0; i < l->ncarry; i++)
        LLVMAddIncoming(l->carry[i], &next[i], &latch, 1);
    LLVMBuildBr(e->b, l->header);
    LLVMPositionBuilderAtEnd(e->b, l->exit);
}

static void add_vector_width_attrs(cg_emit *e, LLVMValueRef fn)
{
    char width[16];
    snprintf(width, sizeof width, "%d", e->gs.vw * 32);
    LLVMAttributeRef a = LLVMCreateStringAttribute(e->ctx, "min-legal-vector-width", 22, width,
                                                   (unsigned)strlen(width));
    LLVMAttributeRef p = LLVMCreateStringAttribute(e->ctx, "prefer-vector-width", 19, width,
                                                   (unsigned)strlen(width));
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, a);
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, p);
}

void cg_function_attrs(cg_emit *e, LLVMValueRef fn)
{
    add_vector_width_attrs(e, fn);
    unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(e->ctx, nounwind, 0));
}

LLVMValueRef cg_kernel_begin(cg_emit *e, const char *what, LLVMValueRef *begin, LLVMValueRef *end)
{
    char name[160];
    snprintf(name, sizeof name, "k%d.%s", e->kernel_count++, what);
    LLVMValueRef fn = LLVMAddFunction(e->mod, name, e->task_ty);
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    LLVMSetUnnamedAddress(fn, LLVMGlobalUnnamedAddr);
    cg_function_attrs(e, fn);
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(e->ctx, fn, "entry");
    LLVMPositionBuilderAtEnd(e->b, entry);
    e->kctx = LLVMGetParam(fn, 0);
    e->nkslots = 0;
    *begin = LLVMGetParam(fn, 1);
    *end = LLVMGetParam(fn, 2);
    return fn;
}

void cg_kernel_end(cg_emit *e)
{
    LLVMBuildRetVoid(e->b);
}

LLVMValueRef cg_buf(cg_emit *e, int slot)
{
    int arg = 0;
    while (arg < e->nkslots && e->kslots[arg] != slot)
        arg++;
    if (arg == e->nkslots) {
        if (e->nkslots == CG_MAX_KERNEL_ARGS) {
            e->errors++;
            arg = 0;
        } else {
            e->kslots[e->nkslots++] = slot;
        }
    }
    LLVMValueRef idx = cg_i64(e, arg);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(e->b, e->ptr, e->kctx, &idx, 1, "");
    LLVMValueRef v = LLVMBuildLoad2(e->b, e->ptr, p, "buf");
    LLVMSetMetadata(v, LLVMGetMDKindIDInContext(e->ctx, "invariant.load", 14),
                    LLVMMetadataAsValue(e->ctx, LLVMMDNodeInContext2(e->ctx, NULL, 0)));
    return v;
}

/* Parallel launches below this many touched elements run on the calling
 * thread, because handing tasks to the pool costs more than the work
 * (a 128 x 768 copy takes tens of microseconds on one core). */
#define CG_PARALLEL_MIN_WORK (1 << 17)

/* Fills an args array for the kernel built last: args[i] = bufs[kslots[i]]. */
static LLVMValueRef build_kernel_args(cg_emit *e)
{
    LLVMBuilderRef b = e->entry_b;
    LLVMTypeRef arr = LLVMArrayType(e->ptr, (unsigned)(e->nkslots ? e->nkslots : 1));
    /* The alloca goes in the entry block so it is allocated once. */
    LLVMBuilderRef at_top = LLVMCreateBuilderInContext(e->ctx);
    LLVMBasicBlockRef top = LLVMGetEntryBasicBlock(e->entry_fn);
    LLVMValueRef first = LLVMGetFirstInstruction(top);
    if (first)
        LLVMPositionBuilderBefore(at_top, first);
    else
        LLVMPositionBuilderAtEnd(at_top, top);
    LLVMValueRef args = LLVMBuildAlloca(at_top, arr, "args");
    LLVMDisposeBuilder(at_top);
    for (int i = 0; i < e->nkslots; i++) {
        LLVMValueRef sidx = cg_i64(e, e->kslots[i]);
        LLVMValueRef p = LLVMBuildLoad2(b, e->ptr, LLVMBuildInBoundsGEP2(b, e->ptr, e->entry_bufs, &sidx, 1, ""), "");
        LLVMValueRef aidx = cg_i64(e, i);
        LLVMBuildStore(b, p, LLVMBuildInBoundsGEP2(b, e->ptr, args, &aidx, 1, ""));
    }
    return args;
}

void cg_launch(cg_emit *e, LLVMValueRef fn, int64_t ntasks, int64_t grain, int64_t work)
{
    if (ntasks <= 0)
        return;
    LLVMValueRef kargs = build_kernel_args(e);
    if (ntasks == 1 || work < CG_PARALLEL_MIN_WORK) {
        LLVMValueRef args[3] = {kargs, cg_i64(e, 0), cg_i64(e, ntasks)};
        LLVMBuildCall2(e->entry_b, e->task_ty, fn, args, 3, "");
        return;
    }
    LLVMValueRef args[5] = {e->entry_pool, fn, kargs, cg_i64(e, ntasks), cg_i64(e, grain)};
    LLVMBuildCall2(e->entry_b, e->pfor_ty, e->pfor, args, 5, "");
}

void cg_check_status(cg_emit *e)
{
    LLVMBuilderRef b = e->entry_b;
    LLVMValueRef idx = cg_i64(e, e->plan->status_slot);
    LLVMValueRef sp = LLVMBuildLoad2(b, e->ptr, LLVMBuildInBoundsGEP2(b, e->ptr, e->entry_bufs, &idx, 1, ""), "");
    LLVMValueRef code = LLVMBuildLoad2(b, e->i64, sp, "status");
    LLVMValueRef failed = LLVMBuildICmp(b, LLVMIntNE, code, cg_i64(e, 0), "");
    LLVMBasicBlockRef fail = LLVMAppendBasicBlockInContext(e->ctx, e->entry_fn, "fail");
    LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(e->ctx, e->entry_fn, "ok");
    LLVMBuildCondBr(b, failed, fail, ok);
    LLVMPositionBuilderAtEnd(b, fail);
    LLVMBuildRet(b, LLVMBuildTrunc(b, code, e->i32, ""));
    LLVMPositionBuilderAtEnd(b, ok);
}

void cg_report_range_error(cg_emit *e, int value_id, LLVMValueRef position, LLVMValueRef bad_id)
{
    LLVMValueRef status = cg_buf(e, e->plan->status_slot);
    /* The first failing thread claims the slot, so the four words always
     * describe one error. */
    LLVMValueRef xchg = LLVMBuildAtomicCmpXchg(e->b, status, cg_i64(e, 0), cg_i64(e, -1),
                                               LLVMAtomicOrderingSequentiallyConsistent,
                                               LLVMAtomicOrderingSequentiallyConsistent, 0);
    LLVMValueRef won = LLVMBuildExtractValue(e->b, xchg, 1, "");
    LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(e->b));
    LLVMBasicBlockRef write = LLVMAppendBasicBlockInContext(e->ctx, fn, "report");
    LLVMBasicBlockRef after = LLVMAppendBasicBlockInContext(e->ctx, fn, "reported");
    LLVMBuildCondBr(e->b, won, write, after);
    LLVMPositionBuilderAtEnd(e->b, write);
    cg_store(e, cg_i64(e, value_id), e->i64, status, cg_i64(e, 1));
    cg_store(e, position, e->i64, status, cg_i64(e, 2));
    cg_store(e, bad_id, e->i64, status, cg_i64(e, 3));
    LLVMValueRef code = LLVMBuildStore(e->b, cg_i64(e, CG_STATUS_INDEX_RANGE), status);
    LLVMSetOrdering(code, LLVMAtomicOrderingSequentiallyConsistent);
    LLVMSetAlignment(code, 8);
    LLVMBuildBr(e->b, after);
    LLVMPositionBuilderAtEnd(e->b, after);
}
