/* Attribute decoding and the shape rules of the integer ops. */
#include "ir/int8.h"

#include <stdarg.h>
#include <stdio.h>

static int fail(char *err, int cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, int cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, (size_t)cap, fmt, ap);
    va_end(ap);
    return -1;
}

static int64_t attr_int(const ir_attr *attrs, const char *name)
{
    return attrs[ir_op_attr_index(IR_OP_Q_LINEAR, name)].i;
}

static int64_t op_attr_int(ir_op op, const ir_attr *attrs, const char *name)
{
    return attrs[ir_op_attr_index(op, name)].i;
}

int ir_qlinear_range(const ir_value *v, ir_quant_range *out)
{
    if (v->op != IR_OP_Q_LINEAR && v->op != IR_OP_Q_QUANTIZE && v->op != IR_OP_Q_REQUANTIZE)
        return -1;
    return ir_quant_range_of(ir_attr_int(v, "bits"), ir_attr_int(v, "symmetric") != 0,
                             ir_attr_int(v, "narrow") != 0, out);
}

static bool is_f32_scalar(const ir_type *t)
{
    return t->dtype == IR_F32 && ir_type_numel(t) == 1;
}

/* A weight scale or zero point: f32 with one element or N as a vector. */
static bool is_channel_param(const ir_type *t, int64_t n)
{
    return t->dtype == IR_F32 && (ir_type_numel(t) == 1 || (t->rank == 1 && t->dims[0] == n));
}

static bool is_8bit(ir_dtype t)
{
    return t == IR_U8 || t == IR_I8;
}

/* q.quantize: f32 x, f32 scale and zero point; q.requantize: i32 x, the
 * i32[3] multiplier and an f32 zero point. The result has x's shape and
 * is u8, or i8 with symmetric=1. */
static int infer_quantize(ir_op op, const ir_type *const *ops, const ir_attr *attrs, ir_type *out, char *err,
                          int cap)
{
    char s1[128], s2[128];
    ir_quant_range range;
    int64_t bits = op_attr_int(op, attrs, "bits");
    bool symmetric = op_attr_int(op, attrs, "symmetric") != 0;
    if (ir_quant_range_of(bits, symmetric, op_attr_int(op, attrs, "narrow") != 0, &range) != 0)
        return fail(err, cap, "bits must be %d to %d and narrow=1 needs symmetric=1, got bits=%lld",
                    IR_QUANT_MIN_BITS, IR_QUANT_MAX_BITS, (long long)bits);
    const ir_type *x = ops[IR_QQUANTIZE_X], *scale = ops[IR_QQUANTIZE_SCALE];
    if (op == IR_OP_Q_QUANTIZE) {
        if (x->dtype != IR_F32)
            return fail(err, cap, "input must be f32, got %s", ir_type_str(x, s1, 128));
        if (!is_f32_scalar(scale))
            return fail(err, cap, "the scale must be f32 with one element, got %s", ir_type_str(scale, s1, 128));
    } else {
        if (x->dtype != IR_I32)
            return fail(err, cap, "input must be i32 sums, got %s", ir_type_str(x, s1, 128));
        if (scale->dtype != IR_I32 || scale->rank != 1 || scale->dims[0] != IR_QMUL_COUNT)
            return fail(err, cap, "the multiplier must be i32[%d] {M0, left_shift, right_shift}, got %s",
                        IR_QMUL_COUNT, ir_type_str(scale, s1, 128));
    }
    if (!is_f32_scalar(ops[IR_QQUANTIZE_ZERO_POINT]))
        return fail(err, cap, "the zero point must be f32 with one element, got %s",
                    ir_type_str(ops[IR_QQUANTIZE_ZERO_POINT], s2, 128));
    *out = *x;
    out->dtype = symmetric ? IR_I8 : IR_U8;
    return 0;
}

static int infer_qmatmul(const ir_type *const *ops, const ir_attr *attrs, ir_type *out, char *err, int cap)
{
    char s1[128], s2[128];
    int64_t transpose_b = op_attr_int(IR_OP_Q_MATMUL, attrs, "transpose_b");
    if (transpose_b != 0 && transpose_b != 1)
        return fail(err, cap, "transpose_b must be 0 or 1, got %lld", (long long)transpose_b);
    const ir_type *a = ops[IR_QMATMUL_A], *b = ops[IR_QMATMUL_B];
    if (!is_8bit(a->dtype) || !is_8bit(b->dtype) || a->rank < 2 || a->rank != b->rank)
        return fail(err, cap, "operands must be u8 or i8 of one rank >= 2, got %s and %s", ir_type_str(a, s1, 128),
                    ir_type_str(b, s2, 128));
    for (int d = 0; d < a->rank - 2; d++)
        if (a->dims[d] != b->dims[d])
            return fail(err, cap, "the leading dims of %s and %s differ; q.matmul does not broadcast",
                        ir_type_str(a, s1, 128), ir_type_str(b, s2, 128));
    int64_t k = a->dims[a->rank - 1];
    int64_t k_b = transpose_b ? b->dims[b->rank - 1] : b->dims[b->rank - 2];
    int64_t n = transpose_b ? b->dims[b->rank - 2] : b->dims[b->rank - 1];
    if (k != k_b)
        return fail(err, cap, "inner dimensions differ: %s x %s%s (%lld vs %lld)", ir_type_str(a, s1, 128),
                    ir_type_str(b, s2, 128), transpose_b ? "^T" : "", (long long)k, (long long)k_b);
    if (k > IR_QMATMUL_MAX_K)
        return fail(err, cap, "inner dimension %lld is above %d, so the i32 sums could overflow", (long long)k,
                    IR_QMATMUL_MAX_K);
    if (!is_f32_scalar(ops[IR_QMATMUL_A_ZERO_POINT]) || !is_f32_scalar(ops[IR_QMATMUL_B_ZERO_POINT]))
        return fail(err, cap, "the zero points must be f32 with one element, got %s and %s",
                    ir_type_str(ops[IR_QMATMUL_A_ZERO_POINT], s1, 128),
                    ir_type_str(ops[IR_QMATMUL_B_ZERO_POINT], s2, 128));
    *out = *a;
    out->dtype = IR_I32;
    out->dims[a->rank - 1] = n;
    return 0;
}

static int infer_dequantize(const ir_type *const *ops, int nops, ir_type *out, char *err, int cap)
{
    char s1[128];
    const ir_type *x = ops[IR_QDEQUANTIZE_X];
    if (!is_8bit(x->dtype) && x->dtype != IR_I32)
        return fail(err, cap, "input must be u8, i8 or i32, got %s", ir_type_str(x, s1, 128));
    if (!is_f32_scalar(ops[IR_QDEQUANTIZE_SCALE]))
        return fail(err, cap, "the scale must be f32 with one element, got %s",
                    ir_type_str(ops[IR_QDEQUANTIZE_SCALE], s1, 128));
    if (nops > IR_QDEQUANTIZE_ZERO_POINT && !is_f32_scalar(ops[IR_QDEQUANTIZE_ZERO_POINT]))
        return fail(err, cap, "the zero point must be f32 with one element, got %s",
                    ir_type_str(ops[IR_QDEQUANTIZE_ZERO_POINT], s1, 128));
    *out = *x;
    out->dtype = IR_F32;
    return 0;
}

int ir_infer_int8_type(ir_op op, const ir_type *const *ops, int nops, const ir_attr *attrs, ir_type *out,
                       char *err, int cap)
{
    char s1[128], s2[128];
    if (op == IR_OP_Q_QUANTIZE || op == IR_OP_Q_REQUANTIZE)
        return infer_quantize(op, ops, attrs, out, err, cap);
    if (op == IR_OP_Q_MATMUL)
        return infer_qmatmul(ops, attrs, out, err, cap);
    if (op == IR_OP_Q_DEQUANTIZE)
        return infer_dequantize(ops, nops, out, err, cap);
    if (op != IR_OP_Q_LINEAR)
        return fail(err, cap, "op %d is not an integer op", (int)op);

    ir_quant_range range;
    int64_t bits = attr_int(attrs, "bits");
    if (ir_quant_range_of(bits, attr_int(attrs, "symmetric") != 0, attr_int(attrs, "narrow") != 0, &range) != 0)
        return fail(err, cap, "bits must be %d to %d and narrow=1 needs symmetric=1, got bits=%lld",
                    IR_QUANT_MIN_BITS, IR_QUANT_MAX_BITS, (long long)bits);
    int64_t transpose_b = attr_int(attrs, "transpose_b");
    if (transpose_b != 0 && transpose_b != 1)
        return fail(err, cap, "transpose_b must be 0 or 1, got %lld", (long long)transpose_b);

    const ir_type *x = ops[IR_QLINEAR_X], *w = ops[IR_QLINEAR_W];
    if (x->dtype != IR_F32 || x->rank < 1)
        return fail(err, cap, "input must be f32 of rank 1 or more, got %s", ir_type_str(x, s1, 128));
    if (w->dtype != IR_I8 || w->rank != 2)
        return fail(err, cap, "weight must be i8 of rank 2, got %s", ir_type_str(w, s1, 128));
    int64_t k = transpose_b ? w->dims[1] : w->dims[0];
    int64_t n = transpose_b ? w->dims[0] : w->dims[1];
    if (x->dims[x->rank - 1] != k)
        return fail(err, cap, "input %s and weight %s (transpose_b=%lld) disagree on the inner dimension",
                    ir_type_str(x, s1, 128), ir_type_str(w, s2, 128), (long long)transpose_b);
    if (!is_f32_scalar(ops[IR_QLINEAR_X_SCALE]) || !is_f32_scalar(ops[IR_QLINEAR_X_ZERO_POINT]))
        return fail(err, cap, "the input scale and zero point must be f32 with one element, got %s and %s",
                    ir_type_str(ops[IR_QLINEAR_X_SCALE], s1, 128), ir_type_str(ops[IR_QLINEAR_X_ZERO_POINT], s2, 128));
    const ir_type *ws = ops[IR_QLINEAR_W_SCALE], *wz = ops[IR_QLINEAR_W_ZERO_POINT];
    if (!is_channel_param(ws, n) || !is_channel_param(wz, n) || ir_type_numel(ws) != ir_type_numel(wz))
        return fail(err, cap, "the weight scale %s and zero point %s must be f32 of one shape, with one element or "
                    "%lld (one per output channel)", ir_type_str(ws, s1, 128), ir_type_str(wz, s2, 128),
                    (long long)n);
    if (nops > IR_QLINEAR_BIAS) {
        const ir_type *b = ops[IR_QLINEAR_BIAS];
        if (b->dtype != IR_F32 || b->rank != 1 || b->dims[0] != n)
            return fail(err, cap, "bias must be f32[%lld], got %s", (long long)n, ir_type_str(b, s1, 128));
    }

    *out = *x;
    out->dims[x->rank - 1] = n;
    return 0;
}
