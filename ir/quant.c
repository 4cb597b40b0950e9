/* Integer ranges, attribute decoding and shape rules of the quantization
 * ops. The op contracts are in ir/ops.def and the quantizer formula in
 * ir/quant.h. */
#include "ir/quant.h"

#include <stdarg.h>
#include <stdio.h>

int ir_quant_range_of(int64_t bits, bool symmetric, bool narrow, ir_quant_range *out)
{
    if (bits < IR_QUANT_MIN_BITS || bits > IR_QUANT_MAX_BITS || (narrow && !symmetric))
        return -1;
    if (symmetric) {
        out->qmax = ((int64_t)1 << (bits - 1)) - 1;
        out->qmin = narrow ? -out->qmax : -out->qmax - 1;
    } else {
        out->qmin = 0;
        out->qmax = ((int64_t)1 << bits) - 1;
    }
    return 0;
}

bool ir_is_fake_quant(ir_op op)
{
    return op == IR_OP_FQ_ACT || op == IR_OP_FQ_WEIGHT;
}

static bool is_grad_fake_quant(ir_op op)
{
    return op == IR_OP_GRAD_FQ_INPUT || op == IR_OP_GRAD_FQ_SCALE || op == IR_OP_GRAD_FQ_ZERO_POINT;
}

/* Reads attribute `name` of op from a slot array, or `fallback` when the op
 * has no such attribute. */
static int64_t attr_int(ir_op op, const ir_attr *attrs, const char *name, int64_t fallback)
{
    int slot = ir_op_attr_index(op, name);
    return slot < 0 ? fallback : attrs[slot].i;
}

static int normalize_axis(int64_t axis, int rank)
{
    if (axis < 0)
        axis += rank;
    return axis < 0 || axis >= rank ? -1 : (int)axis;
}

int ir_quant_spec_of(const ir_value *v, ir_quant_spec *out)
{
    *out = (ir_quant_spec){0};
    out->axis = -1;
    if (is_grad_fake_quant(v->op)) {
        out->range.qmin = ir_attr_int(v, "qmin");
        out->range.qmax = ir_attr_int(v, "qmax");
        out->axis = (int)ir_attr_int(v, "axis");
        return out->range.qmin < out->range.qmax ? 0 : -1;
    }
    if (!ir_is_fake_quant(v->op))
        return -1;
    out->bits = (int)ir_attr_int(v, "bits");
    out->symmetric = ir_attr_int(v, "symmetric") != 0;
    out->narrow = ir_attr_int(v, "narrow") != 0;
    if (v->op == IR_OP_FQ_WEIGHT) {
        out->axis = normalize_axis(ir_attr_int(v, "axis"), v->type.rank);
        if (out->axis < 0)
            return -1;
    }
    return ir_quant_range_of(out->bits, out->symmetric, out->narrow, &out->range);
}

/* ---- shape rules ---- */

static int fail(char *err, int cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, int cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, (size_t)cap, fmt, ap);
    va_end(ap);
    return -1;
}

static bool is_float(ir_dtype t)
{
    return t == IR_F32 || t == IR_F16 || t == IR_BF16;
}

/* Checks the scale and zero-point operands of a quantizer of x: both of
 * x's dtype and one type, with one element (per tensor) or, when axis >= 0,
 * rank 1 with x's size along axis (per channel). */
static int check_quant_params(const ir_type *x, const ir_type *scale, const ir_type *zero_point, int axis, char *err,
                              int cap)
{
    char sx[128], ss[128], sz[128];
    if (!is_float(x->dtype))
        return fail(err, cap, "input must be floating point, got %s", ir_type_str(x, sx, 128));
    if (scale->dtype != x->dtype || !ir_type_equal(scale, zero_point))
        return fail(err, cap, "scale %s and zero point %s must have one type with the input's dtype %s",
                    ir_type_str(scale, ss, 128), ir_type_str(zero_point, sz, 128), ir_dtype_name(x->dtype));
    if (ir_type_numel(scale) == 1)
        return 0;
    if (axis < 0)
        return fail(err, cap, "scale %s must have one element (per-tensor quantization)", ir_type_str(scale, ss, 128));
    if (scale->rank != 1 || scale->dims[0] != x->dims[axis])
        return fail(err, cap, "scale %s must have one element or %lld (one per channel along axis %d of %s)",
                    ir_type_str(scale, ss, 128), (long long)x->dims[axis], axis, ir_type_str(x, sx, 128));
    return 0;
}

static int infer_fake_quant(ir_op op, const ir_type *const *ops, const ir_attr *attrs, ir_type *out, char *err,
                            int cap)
{
    char sx[128];
    const ir_type *x = ops[0];
    int64_t bits = attr_int(op, attrs, "bits", 8);
    bool symmetric = attr_int(op, attrs, "symmetric", 0) != 0;
    bool narrow = attr_int(op, attrs, "narrow", 0) != 0;
    ir_quant_range range;
    if (bits < IR_QUANT_MIN_BITS || bits > IR_QUANT_MAX_BITS)
        return fail(err, cap, "bits must be %d to %d, got %lld", IR_QUANT_MIN_BITS, IR_QUANT_MAX_BITS,
                    (long long)bits);
    if (ir_quant_range_of(bits, symmetric, narrow, &range) != 0)
        return fail(err, cap, "narrow=1 needs symmetric=1");
    int axis = -1;
    if (op == IR_OP_FQ_WEIGHT) {
        int64_t given = attr_int(op, attrs, "axis", -1);
        axis = normalize_axis(given, x->rank);
        if (axis < 0)
            return fail(err, cap, "axis %lld is out of range for %s", (long long)given, ir_type_str(x, sx, 128));
    }
    if (check_quant_params(x, ops[1], ops[2], axis, err, cap) != 0)
        return -1;
    *out = *x;
    return 0;
}

/* grad.fq.*(dy, x, scale, zero_point): dy has x's type, and the result has
 * the type of the operand that the op differentiates. */
static int infer_grad_fake_quant(ir_op op, const ir_type *const *ops, const ir_attr *attrs, ir_type *out, char *err,
                                 int cap)
{
    char sd[128], sx[128];
    const ir_type *dy = ops[0], *x = ops[1];
    if (!ir_type_equal(dy, x))
        return fail(err, cap, "the gradient %s and the input %s must have the same type", ir_type_str(dy, sd, 128),
                    ir_type_str(x, sx, 128));
    int64_t qmin = attr_int(op, attrs, "qmin", 0), qmax = attr_int(op, attrs, "qmax", 0);
    if (qmin >= qmax)
        return fail(err, cap, "qmin %lld must be below qmax %lld", (long long)qmin, (long long)qmax);
    int axis = -1;
    if (ir_type_numel(ops[2]) != 1) {
        int64_t given = attr_int(op, attrs, "axis", -1);
        axis = normalize_axis(given, x->rank);
        if (axis < 0)
            return fail(err, cap, "axis %lld is out of range for %s", (long long)given, ir_type_str(x, sx, 128));
    }
    if (check_quant_params(x, ops[2], ops[3], axis, err, cap) != 0)
        return -1;
    *out = op == IR_OP_GRAD_FQ_INPUT ? *x : *ops[2];
    return 0;
}

/* qa.scale(x, alpha){axis, invert}: alpha is rank 1 with x's size along
 * axis, and the result has x's type. */
static int infer_qa_scale(const ir_type *const *ops, const ir_attr *attrs, ir_type *out, char *err, int cap)
{
    char sx[128], sa[128];
    const ir_type *x = ops[0], *alpha = ops[1];
    int64_t given = attr_int(IR_OP_QA_SCALE, attrs, "axis", -1);
    int axis = normalize_axis(given, x->rank);
    if (!is_float(x->dtype) || axis < 0)
        return fail(err, cap, "input must be floating point with axis %lld in range, got %s", (long long)given,
                    ir_type_str(x, sx, 128));
    if (alpha->dtype != x->dtype || alpha->rank != 1 || alpha->dims[0] != x->dims[axis])
        return fail(err, cap, "alpha must be %s[%lld] to match axis %d of %s, got %s", ir_dtype_name(x->dtype),
                    (long long)x->dims[axis], axis, ir_type_str(x, sx, 128), ir_type_str(alpha, sa, 128));
    int64_t invert = attr_int(IR_OP_QA_SCALE, attrs, "invert", 0);
    if (invert != 0 && invert != 1)
        return fail(err, cap, "invert must be 0 or 1, got %lld", (long long)invert);
    *out = *x;
    return 0;
}

int ir_infer_quant_type(ir_op op, const ir_type *const *ops, int nops, const ir_attr *attrs, ir_type *out,
                        char *err, int errcap)
{
    (void)nops;
    if (ir_is_fake_quant(op))
        return infer_fake_quant(op, ops, attrs, out, err, errcap);
    if (is_grad_fake_quant(op))
        return infer_grad_fake_quant(op, ops, attrs, out, err, errcap);
    if (op == IR_OP_QA_SCALE)
        return infer_qa_scale(ops, attrs, out, err, errcap);
    return fail(err, errcap, "op %d is not a quantization op", (int)op);
}
