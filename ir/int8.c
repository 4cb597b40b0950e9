/* Attribute decoding and the shape rule of q.linear. */
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

int ir_qlinear_range(const ir_value *v, ir_quant_range *out)
{
    if (v->op != IR_OP_Q_LINEAR)
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

int ir_infer_int8_type(ir_op op, const ir_type *const *ops, int nops, const ir_attr *attrs, ir_type *out,
                       char *err, int cap)
{
    char s1[128], s2[128];
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
