/* Emitters for the quantization ops: fq.act and fq.weight, the
 * straight-through gradient grad.fq.input, the Quadapter scale qa.scale,
 * and the per-channel sums grad.fq.scale and grad.fq.zero_point. Each element reads x (and dy), plus the scale, zero point or
 * alpha of its channel. The math matches the interpreter's
 * (runtime/interp_quant.c): one f32 division x / s, round half to even
 * (llvm.roundeven), clamp, then (q - z) * s. Float values are stored as f32.
 * NOTE: the interpreter rejects a scale that is zero, negative or not
 * finite, but the generated code does not. Such a scale gives inf or NaN.
 *
 * A task covers `inner` contiguous elements. When the channel axis is the
 * last axis, a task is one row and the channel is the index in the row;
 * otherwise every element of a task shares one channel (the task's block
 * along the channel axis), and a per-tensor quantizer is one channel.
 * The gradient sums run one task per channel. */
#include "codegen/cg_internal.h"
#include "ir/quant.h"

#define CHUNK 4096 /* elements per task of a per-tensor quantizer */

typedef struct quant_layout {
    int64_t n;          /* elements of x */
    int64_t nchannels;  /* elements of the scale, zero point or alpha */
    int64_t inner;      /* elements per task */
    int64_t ntasks;
    bool channel_is_column; /* the channel is the index within the task */
} quant_layout;

static quant_layout layout_of(const ir_type *x, int axis, int64_t nchannels)
{
    quant_layout l = {ir_type_numel(x), nchannels, 1, 0, false};
    if (nchannels == 1) {
        l.inner = l.n < CHUNK ? l.n : CHUNK;
        l.ntasks = (l.n + l.inner - 1) / l.inner;
        return l;
    }
    for (int i = axis + 1; i < x->rank; i++)
        l.inner *= x->dims[i];
    if (axis == x->rank - 1) {
        l.inner = nchannels;
        l.channel_is_column = true;
    }
    l.ntasks = l.n / l.inner;
    return l;
}

/* Values the element body needs besides x. */
typedef struct quant_operands {
    LLVMValueRef x, dy;               /* buffers */
    LLVMValueRef scale, zero_point;   /* buffers of fq ops, or NULL */
    LLVMValueRef alpha;               /* buffer of qa.scale, or NULL */
    ir_quant_range range;
} quant_operands;

static LLVMValueRef round_even(cg_emit *e, LLVMValueRef x)
{
    return cg_intrinsic(e, "llvm.roundeven", e->f32, &x, 1);
}

static LLVMValueRef clamp(cg_emit *e, LLVMValueRef x, double lo, double hi)
{
    LLVMValueRef below = LLVMBuildFCmp(e->b, LLVMRealOLT, x, cg_constf(e, e->f32, lo), "");
    x = LLVMBuildSelect(e->b, below, cg_constf(e, e->f32, lo), x, "");
    LLVMValueRef above = LLVMBuildFCmp(e->b, LLVMRealOGT, x, cg_constf(e, e->f32, hi), "");
    return LLVMBuildSelect(e->b, above, cg_constf(e, e->f32, hi), x, "");
}

/* Computes element i of v, whose channel is c. */
static LLVMValueRef element(cg_emit *e, const ir_value *v, const quant_operands *o, LLVMValueRef i, LLVMValueRef c)
{
    if (v->op == IR_OP_QA_SCALE) {
        LLVMValueRef x = cg_load(e, e->f32, o->x, i, 1), a = cg_load(e, e->f32, o->alpha, c, 1);
        return ir_attr_int(v, "invert") ? LLVMBuildFDiv(e->b, x, a, "") : LLVMBuildFMul(e->b, x, a, "");
    }
    LLVMValueRef x = cg_load(e, e->f32, o->x, i, 1);
    LLVMValueRef s = cg_load(e, e->f32, o->scale, c, 1);
    LLVMValueRef z = round_even(e, cg_load(e, e->f32, o->zero_point, c, 1));
    LLVMValueRef position = LLVMBuildFDiv(e->b, x, s, "");
    if (v->op == IR_OP_GRAD_FQ_INPUT) {
        /* dy where qmin <= x / s + z <= qmax, else 0. */
        LLVMValueRef p = LLVMBuildFAdd(e->b, position, z, "");
        LLVMValueRef inside = LLVMBuildAnd(
            e->b, LLVMBuildFCmp(e->b, LLVMRealOGE, p, cg_constf(e, e->f32, (double)o->range.qmin), ""),
            LLVMBuildFCmp(e->b, LLVMRealOLE, p, cg_constf(e, e->f32, (double)o->range.qmax), ""), "");
        LLVMValueRef dy = cg_load(e, e->f32, o->dy, i, 1);
        return LLVMBuildSelect(e->b, inside, dy, cg_constf(e, e->f32, 0.0), "");
    }
    LLVMValueRef q = LLVMBuildFAdd(e->b, round_even(e, position), z, "");
    q = clamp(e, q, (double)o->range.qmin, (double)o->range.qmax);
    return LLVMBuildFMul(e->b, LLVMBuildFSub(e->b, q, z, ""), s, "");
}

int cg_emit_quant(cg_emit *e, const ir_value *v)
{
    bool grad = v->op == IR_OP_GRAD_FQ_INPUT;
    int x_id = v->ops[grad ? 1 : 0];
    const ir_type *xt = &e->g->values[x_id]->type;
    if (!cg_is_float(v->type.dtype)) {
        ir_diag_error(e->d, v->loc, "codegen: %s '%s' needs floating-point operands", ir_op_get(v->op)->name,
                      v->name);
        return -1;
    }

    quant_operands o = {0};
    int axis = -1;
    int64_t nchannels;
    if (v->op == IR_OP_QA_SCALE) {
        axis = (int)ir_attr_int(v, "axis");
        nchannels = ir_type_numel(&e->g->values[v->ops[1]]->type);
    } else {
        ir_quant_spec spec;
        if (ir_quant_spec_of(v, &spec) != 0) {
            ir_diag_error(e->d, v->loc, "codegen: %s '%s' has invalid quantizer attributes",
                          ir_op_get(v->op)->name, v->name);
            return -1;
        }
        o.range = spec.range;
        axis = spec.axis;
        nchannels = ir_type_numel(&e->g->values[v->ops[grad ? 2 : 1]]->type);
    }
    if (axis < 0)
        axis += xt->rank;
    quant_layout l = layout_of(xt, axis, nchannels);

    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, ir_op_get(v->op)->name, &begin, &end);
    LLVMValueRef out = cg_buf(e, e->plan->slot[v->id]);
    o.x = cg_buf(e, e->plan->slot[x_id]);
    if (grad)
        o.dy = cg_buf(e, e->plan->slot[v->ops[0]]);
    if (v->op == IR_OP_QA_SCALE) {
        o.alpha = cg_buf(e, e->plan->slot[v->ops[1]]);
    } else {
        o.scale = cg_buf(e, e->plan->slot[v->ops[grad ? 2 : 1]]);
        o.zero_point = cg_buf(e, e->plan->slot[v->ops[grad ? 3 : 2]]);
    }

    cg_loop tasks;
    LLVMValueRef t = cg_loop_begin(e, &tasks, begin, end, cg_i64(e, 1));
    LLVMValueRef first = LLVMBuildMul(e->b, t, cg_i64(e, l.inner), "");
    LLVMValueRef last = LLVMBuildAdd(e->b, first, cg_i64(e, l.inner), "");
    LLVMValueRef over = LLVMBuildICmp(e->b, LLVMIntSGT, last, cg_i64(e, l.n), "");
    last = LLVMBuildSelect(e->b, over, cg_i64(e, l.n), last, "");
    LLVMValueRef task_channel = l.nchannels == 1 ? cg_i64(e, 0) : LLVMBuildSRem(e->b, t, cg_i64(e, l.nchannels), "");

    cg_loop elems;
    LLVMValueRef i = cg_loop_begin(e, &elems, first, last, cg_i64(e, 1));
    LLVMValueRef c = l.channel_is_column ? LLVMBuildSub(e->b, i, first, "") : task_channel;
    cg_store(e, element(e, v, &o, i, c), e->f32, out, i);
    cg_loop_end(e, &elems, NULL);

    cg_loop_end(e, &tasks, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, l.ntasks, 1, l.n);
    return 0;
}

/* ---- grad.fq.scale and grad.fq.zero_point ---- */

/* The term that element x with upstream gradient dy adds to the scale or
 * zero-point gradient, as in ir/quant.h: below the range dy (qmin - z)
 * or dy * -s, above it dy (qmax - z) or dy * -s, inside it
 * dy (round(x/s) - x/s) or 0. */
static LLVMValueRef gradient_term(cg_emit *e, bool wrt_scale, const quant_operands *o, LLVMValueRef i,
                                  LLVMValueRef s, LLVMValueRef z)
{
    LLVMValueRef x = cg_load(e, e->f32, o->x, i, 1), dy = cg_load(e, e->f32, o->dy, i, 1);
    LLVMValueRef v = LLVMBuildFDiv(e->b, x, s, "");
    LLVMValueRef p = LLVMBuildFAdd(e->b, v, z, "");
    LLVMValueRef qmin = cg_constf(e, e->f32, (double)o->range.qmin);
    LLVMValueRef qmax = cg_constf(e, e->f32, (double)o->range.qmax);
    LLVMValueRef below = LLVMBuildFCmp(e->b, LLVMRealOLT, p, qmin, "");
    LLVMValueRef above = LLVMBuildFCmp(e->b, LLVMRealOGT, p, qmax, "");
    LLVMValueRef local;
    if (wrt_scale) {
        LLVMValueRef inside = LLVMBuildFSub(e->b, round_even(e, v), v, "");
        local = LLVMBuildSelect(e->b, above, LLVMBuildFSub(e->b, qmax, z, ""), inside, "");
        local = LLVMBuildSelect(e->b, below, LLVMBuildFSub(e->b, qmin, z, ""), local, "");
    } else {
        LLVMValueRef outside = LLVMBuildOr(e->b, below, above, "");
        local = LLVMBuildSelect(e->b, outside, LLVMBuildFNeg(e->b, s, ""), cg_constf(e, e->f32, 0.0), "");
    }
    return LLVMBuildFMul(e->b, LLVMBuildFPExt(e->b, dy, e->f64, ""), LLVMBuildFPExt(e->b, local, e->f64, ""), "");
}

/* Sums the terms of channel c over its elements i = (outer * nchannels + c)
 * * inner + k, in double as the interpreter does, one task per channel. */
int cg_emit_quant_grad_sum(cg_emit *e, const ir_value *v)
{
    ir_quant_spec spec;
    if (ir_quant_spec_of(v, &spec) != 0) {
        ir_diag_error(e->d, v->loc, "codegen: %s '%s' has invalid quantizer attributes", ir_op_get(v->op)->name,
                      v->name);
        return -1;
    }
    const ir_type *xt = &e->g->values[v->ops[1]]->type;
    int64_t n = ir_type_numel(xt), nchannels = ir_type_numel(&v->type), inner = 1;
    int axis = spec.axis < 0 ? spec.axis + xt->rank : spec.axis;
    for (int i = axis + 1; nchannels > 1 && i < xt->rank; i++)
        inner *= xt->dims[i];
    if (nchannels == 1)
        inner = n;
    int64_t outer = n / (nchannels * inner);
    quant_operands o = {.range = spec.range};

    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, ir_op_get(v->op)->name, &begin, &end);
    LLVMValueRef out = cg_buf(e, e->plan->slot[v->id]);
    o.dy = cg_buf(e, e->plan->slot[v->ops[0]]);
    o.x = cg_buf(e, e->plan->slot[v->ops[1]]);
    LLVMValueRef scales = cg_buf(e, e->plan->slot[v->ops[2]]);
    LLVMValueRef zero_points = cg_buf(e, e->plan->slot[v->ops[3]]);
    bool wrt_scale = v->op == IR_OP_GRAD_FQ_SCALE;

    cg_loop channels;
    LLVMValueRef c = cg_loop_begin(e, &channels, begin, end, cg_i64(e, 1));
    LLVMValueRef s = cg_load(e, e->f32, scales, c, 1);
    LLVMValueRef z = round_even(e, cg_load(e, e->f32, zero_points, c, 1));

    cg_loop outer_loop;
    LLVMValueRef r = cg_loop_begin(e, &outer_loop, cg_i64(e, 0), cg_i64(e, outer), cg_i64(e, 1));
    LLVMValueRef outer_sum = cg_loop_carry(e, &outer_loop, LLVMConstReal(e->f64, 0.0));
    LLVMValueRef block = LLVMBuildAdd(e->b, LLVMBuildMul(e->b, r, cg_i64(e, nchannels), ""), c, "");
    LLVMValueRef base = LLVMBuildMul(e->b, block, cg_i64(e, inner), "");

    cg_loop inner_loop;
    LLVMValueRef k = cg_loop_begin(e, &inner_loop, cg_i64(e, 0), cg_i64(e, inner), cg_i64(e, 1));
    LLVMValueRef sum = cg_loop_carry(e, &inner_loop, outer_sum);
    LLVMValueRef i = LLVMBuildAdd(e->b, base, k, "");
    LLVMValueRef next = LLVMBuildFAdd(e->b, sum, gradient_term(e, wrt_scale, &o, i, s, z), "");
    cg_loop_end(e, &inner_loop, &next);

    LLVMValueRef total = inner_loop.carry[0];
    cg_loop_end(e, &outer_loop, &total);
    cg_store(e, LLVMBuildFPTrunc(e->b, outer_loop.carry[0], e->f32, ""), e->f32, out, c);
    cg_loop_end(e, &channels, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, nchannels, 1, n);
    return 0;
}
