/* Module building: creates the entry points qc_bind and qc_run and walks
 * the graph in topological order, sending each value to its op's emitter
 * and each launch to the entry point its storage class names. */
#include <string.h>

#include "codegen/cg_internal.h"
#include "codegen/emit_int8.h"
#include "codegen/emit_qmatmul.h"

void cg_emit_init(cg_emit *e, LLVMContextRef ctx, LLVMModuleRef mod, const cg_gemm_shape *gs)
{
    e->ctx = ctx;
    e->mod = mod;
    e->gs = *gs;
    e->b = LLVMCreateBuilderInContext(ctx);
    LLVMContextRef c = ctx;
    e->i1 = LLVMInt1TypeInContext(c);
    e->i8 = LLVMInt8TypeInContext(c);
    e->i16 = LLVMInt16TypeInContext(c);
    e->i32 = LLVMInt32TypeInContext(c);
    e->i64 = LLVMInt64TypeInContext(c);
    e->f32 = LLVMFloatTypeInContext(c);
    e->f64 = LLVMDoubleTypeInContext(c);
    e->ptr = LLVMPointerTypeInContext(c, 0);
    e->void_ty = LLVMVoidTypeInContext(c);
    e->vf = LLVMVectorType(e->f32, (unsigned)e->gs.vw);
    LLVMTypeRef task_params[3] = {e->ptr, e->i64, e->i64};
    e->task_ty = LLVMFunctionType(e->void_ty, task_params, 3, 0);
    LLVMTypeRef pfor_params[5] = {e->ptr, e->ptr, e->ptr, e->i64, e->i64};
    e->pfor_ty = LLVMFunctionType(e->void_ty, pfor_params, 5, 0);
}

static LLVMValueRef add_entry(cg_emit *e, const char *name, LLVMBuilderRef *b)
{
    LLVMTypeRef params[2] = {e->ptr, e->ptr};
    LLVMValueRef fn = LLVMAddFunction(e->mod, name, LLVMFunctionType(e->i32, params, 2, 0));
    cg_function_attrs(e, fn);
    *b = LLVMCreateBuilderInContext(e->ctx);
    LLVMPositionBuilderAtEnd(*b, LLVMAppendBasicBlockInContext(e->ctx, fn, "entry"));
    return fn;
}

static void select_entry(cg_emit *e, bool bind, LLVMValueRef *fns, LLVMBuilderRef *builders)
{
    int i = bind ? 0 : 1;
    e->entry_fn = fns[i];
    e->entry_b = builders[i];
    e->entry_bufs = LLVMGetParam(fns[i], 0);
    e->entry_pool = LLVMGetParam(fns[i], 1);
}

static const cg_gemm_plan *gemm_plan_of(const cg_plan *plan, int value)
{
    for (int i = 0; i < plan->ngemms; i++)
        if (plan->gemms[i].value == value)
            return &plan->gemms[i];
    return NULL;
}

/* Emits a matrix product: the GEMV kernel for a few rows, else B packing
 * (at bind time for weights) and the GEMM. An epilogue runs in the
 * product's kernel when its operands allow, else as a pass after it. */
static int emit_product(cg_emit *e, const ir_value *v, LLVMValueRef *fns, LLVMBuilderRef *builders)
{
    if (!cg_is_float(v->type.dtype)) {
        ir_diag_error(e->d, v->loc, "codegen: %s '%s' on %s operands is not supported; cast them to f32",
                      ir_op_get(v->op)->name, v->name, ir_dtype_name(v->type.dtype));
        return -1;
    }
    cg_epilogue ep, none;
    if (cg_epilogue_init(e, v, &ep) != 0)
        return -1;
    memset(&none, 0, sizeof none);
    const cg_epilogue *in_kernel = ep.in_registers ? &ep : &none;
    int rc;
    if (cg_use_gemv(e->g, v)) {
        rc = cg_emit_gemv(e, v, in_kernel);
    } else {
        const cg_gemm_plan *gp = gemm_plan_of(e->plan, v->id);
        LLVMValueRef saved_fn = e->entry_fn;
        if (gp->pack_at_bind)
            select_entry(e, true, fns, builders);
        cg_emit_pack(e, gp);
        select_entry(e, saved_fn == fns[0], fns, builders);
        rc = cg_emit_gemm(e, gp, in_kernel);
    }
    if (rc == 0 && ep.active && !ep.in_registers)
        rc = cg_emit_epilogue_pass(e, v);
    return rc;
}

static int emit_value(cg_emit *e, const ir_value *v, LLVMValueRef *fns, LLVMBuilderRef *builders)
{
    switch (v->op) {
    case IR_OP_PARAM:
    case IR_OP_INPUT:
    case IR_OP_RESHAPE:
        return 0; /* bound from outside, or sharing the operand's buffer */
    case IR_OP_CONST:
        return cg_emit_const(e, v);
    case IR_OP_ADD:
    case IR_OP_SUB:
    case IR_OP_MUL:
    case IR_OP_DIV:
    case IR_OP_MAXIMUM:
    case IR_OP_MINIMUM:
    case IR_OP_NEG:
    case IR_OP_EXP:
    case IR_OP_LOG:
    case IR_OP_SQRT:
    case IR_OP_RSQRT:
    case IR_OP_TANH:
    case IR_OP_GELU:
    case IR_OP_RELU:
    case IR_OP_ABS:
    case IR_OP_SCALE:
    case IR_OP_CAST:
        return cg_emit_elementwise(e, v);
    case IR_OP_MATMUL:
    case IR_OP_LINEAR:
    case IR_OP_FUSED_MATMUL:
    case IR_OP_FUSED_LINEAR:
        return emit_product(e, v, fns, builders);
    case IR_OP_LAYERNORM:
        return cg_emit_layernorm(e, v);
    case IR_OP_SOFTMAX:
        return cg_emit_softmax(e, v);
    case IR_OP_CAUSAL_MASK:
        return v->nops == 2 ? cg_emit_causal_mask_at(e, v) : cg_emit_causal_mask(e, v);
    case IR_OP_CACHE_WRITE:
        return cg_emit_cache_write(e, v);
    case IR_OP_TRANSPOSE:
    case IR_OP_SLICE:
    case IR_OP_CONCAT:
    case IR_OP_BROADCAST:
        return cg_emit_layout(e, v);
    case IR_OP_REDUCE_SUM:
    case IR_OP_REDUCE_MEAN:
    case IR_OP_REDUCE_MAX:
        return cg_emit_reduce(e, v);
    case IR_OP_EMBEDDING:
        return cg_emit_embedding(e, v);
    case IR_OP_CROSS_ENTROPY:
        return cg_emit_cross_entropy(e, v);
    case IR_OP_GRAD_GELU:
    case IR_OP_GRAD_RELU:
    case IR_OP_GRAD_ABS:
    case IR_OP_GRAD_MAXIMUM:
    case IR_OP_GRAD_MINIMUM:
        return cg_emit_grad_pointwise(e, v);
    case IR_OP_GRAD_LAYERNORM:
        return cg_emit_grad_layernorm(e, v);
    case IR_OP_GRAD_LAYERNORM_WEIGHT:
        return cg_emit_grad_layernorm_weight(e, v);
    case IR_OP_GRAD_SOFTMAX:
        return cg_emit_grad_softmax(e, v);
    case IR_OP_GRAD_CAUSAL_MASK:
        return cg_emit_grad_causal_mask(e, v);
    case IR_OP_GRAD_EMBEDDING:
        return cg_emit_grad_embedding(e, v);
    case IR_OP_GRAD_CROSS_ENTROPY:
        return cg_emit_grad_cross_entropy(e, v);
    case IR_OP_FQ_ACT:
    case IR_OP_FQ_WEIGHT:
    case IR_OP_GRAD_FQ_INPUT:
    case IR_OP_QA_SCALE:
        return cg_emit_quant(e, v);
    case IR_OP_FUSED_ELEMENTWISE:
        return cg_emit_fused_elementwise(e, v);
    case IR_OP_GRAD_FQ_SCALE:
    case IR_OP_GRAD_FQ_ZERO_POINT:
        return cg_emit_quant_grad_sum(e, v);
    case IR_OP_Q_LINEAR: {
        LLVMValueRef saved_fn = e->entry_fn;
        select_entry(e, true, fns, builders);
        int packed = cg_emit_qlinear_pack(e, v);
        select_entry(e, saved_fn == fns[0], fns, builders);
        return packed != 0 ? packed : cg_emit_qlinear(e, v);
    }
    case IR_OP_Q_QUANTIZE:
        return cg_emit_qquantize(e, v);
    case IR_OP_Q_MATMUL:
        return cg_emit_qmatmul(e, v);
    case IR_OP_Q_REQUANTIZE:
        return cg_emit_qrequantize(e, v);
    case IR_OP_Q_DEQUANTIZE:
        return cg_emit_qdequantize(e, v);
    case IR_OP_COUNT:
        break;
    }
    ir_diag_error(e->d, v->loc, "codegen: value '%s' has an invalid op", v->name);
    return -1;
}

/* Returns whether v's kernels leave an f16 or bf16 result unrounded in
 * f32. Elementwise ops round in their kernel, and layout ops copy values
 * that are already rounded. */
static bool rounds_result(const ir_value *v)
{
    if (v->type.dtype != IR_F16 && v->type.dtype != IR_BF16)
        return false;
    switch (v->op) {
    case IR_OP_CONST:
    case IR_OP_MATMUL:
    case IR_OP_LINEAR:
    case IR_OP_LAYERNORM:
    case IR_OP_SOFTMAX:
    case IR_OP_REDUCE_SUM:
    case IR_OP_REDUCE_MEAN:
    case IR_OP_REDUCE_MAX:
    case IR_OP_CROSS_ENTROPY:
    case IR_OP_GRAD_GELU:
    case IR_OP_GRAD_RELU:
    case IR_OP_GRAD_ABS:
    case IR_OP_GRAD_MAXIMUM:
    case IR_OP_GRAD_MINIMUM:
    case IR_OP_GRAD_LAYERNORM:
    case IR_OP_GRAD_LAYERNORM_WEIGHT:
    case IR_OP_GRAD_SOFTMAX:
    case IR_OP_GRAD_CAUSAL_MASK:
    case IR_OP_GRAD_EMBEDDING:
    case IR_OP_GRAD_CROSS_ENTROPY:
        return true;
    default:
        return false;
    }
}

static void emit_profile_tick(cg_emit *e, int value)
{
    LLVMBuilderRef b = e->entry_b;
    LLVMValueRef idx = cg_i64(e, e->plan->profile_slot);
    LLVMValueRef state = LLVMBuildLoad2(b, e->ptr, LLVMBuildInBoundsGEP2(b, e->ptr, e->entry_bufs, &idx, 1, ""), "");
    LLVMValueRef args[2] = {state, cg_i64(e, value)};
    LLVMBuildCall2(b, e->tick_ty, e->tick, args, 2, "");
}

LLVMModuleRef cg_build_module(LLVMContextRef ctx, LLVMTargetMachineRef tm, const ir_graph *g, const cg_plan *plan,
                              const cg_gemm_shape *gs, ir_diag *d)
{
    cg_emit e;
    memset(&e, 0, sizeof e);
    LLVMModuleRef mod = cg_module_create(ctx, tm, g->name ? g->name : "quadc");
    cg_emit_init(&e, ctx, mod, gs);
    e.g = g;
    e.d = d;
    e.tm = tm;
    e.plan = (cg_plan *)plan;
    e.pfor = LLVMAddFunction(e.mod, "rt_pool_parallel_for", e.pfor_ty);
    LLVMTypeRef tick_params[2] = {e.ptr, e.i64};
    e.tick_ty = LLVMFunctionType(e.void_ty, tick_params, 2, 0);
    if (plan->profile_slot >= 0)
        e.tick = LLVMAddFunction(e.mod, "cg_profile_tick", e.tick_ty);

    LLVMValueRef fns[2];
    LLVMBuilderRef builders[2];
    fns[0] = add_entry(&e, "qc_bind", &builders[0]);
    fns[1] = add_entry(&e, "qc_run", &builders[1]);

    int failed = 0;
    for (int i = 0; i < g->nvalues && !failed; i++) {
        const ir_value *v = g->values[i];
        if (v->dead)
            continue;
        select_entry(&e, plan->storage[i] == CG_STORE_BIND, fns, builders);
        failed = emit_value(&e, v, fns, builders) != 0;
        if (!failed && rounds_result(v))
            failed = cg_emit_round_result(&e, v) != 0;
        if (e.tick && plan->storage[i] == CG_STORE_RUN)
            emit_profile_tick(&e, i);
    }
    for (int i = 0; i < 2; i++) {
        LLVMBuildRet(builders[i], LLVMConstInt(e.i32, 0, 0));
        LLVMDisposeBuilder(builders[i]);
    }
    LLVMDisposeBuilder(e.b);
    if (e.errors && !failed) {
        ir_diag_file_error(d, NULL, "codegen: internal error, a kernel of graph '%s' uses more than %d buffers",
                           g->name, CG_MAX_KERNEL_ARGS);
        failed = 1;
    }
    if (failed) {
        LLVMDisposeModule(e.mod);
        return NULL;
    }
    return e.mod;
}
