/* Shape and dtype inference, one rule per op. The switch has no default
 * case, so -Wswitch (an error in CI builds) flags an op without a rule.
 * Messages show the shapes involved so a mismatch is easy to locate. */
#include "ir/ir.h"
#include "ir/fused.h"
#include "ir/int8.h"
#include "ir/quant.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int64_t ir_type_numel(const ir_type *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++)
        n *= t->dims[i];
    return n;
}

bool ir_type_equal(const ir_type *a, const ir_type *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank)
        return false;
    for (int i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i])
            return false;
    return true;
}

char *ir_type_str(const ir_type *t, char *buf, int cap)
{
    int n = snprintf(buf, (size_t)cap, "%s[", ir_dtype_name(t->dtype));
    for (int i = 0; i < t->rank && n < cap; i++)
        n += snprintf(buf + n, (size_t)(cap - n), i ? ",%lld" : "%lld", (long long)t->dims[i]);
    if (n < cap)
        snprintf(buf + n, (size_t)(cap - n), "]");
    return buf;
}

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

static bool is_int(ir_dtype t)
{
    return t == IR_I32 || t == IR_I64 || t == IR_I8 || t == IR_U8;
}

/* Resolves a possibly negative axis against rank; -1 when out of range. */
static int norm_axis(int64_t axis, int rank)
{
    if (axis < 0)
        axis += rank;
    return (axis < 0 || axis >= rank) ? -1 : (int)axis;
}

static int infer_broadcast(const ir_type *a, const ir_type *b, ir_type *out, char *err, int cap)
{
    char sa[128], sb[128];
    if (a->dtype != b->dtype)
        return fail(err, cap, "operand dtypes differ: %s and %s", ir_type_str(a, sa, 128), ir_type_str(b, sb, 128));
    int rank = a->rank > b->rank ? a->rank : b->rank;
    out->dtype = a->dtype;
    out->rank = rank;
    for (int i = 0; i < rank; i++) {
        int ia = i - (rank - a->rank), ib = i - (rank - b->rank);
        int64_t da = ia >= 0 ? a->dims[ia] : 1;
        int64_t db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return fail(err, cap, "shapes %s and %s do not broadcast (dimension %d: %lld vs %lld)",
                        ir_type_str(a, sa, 128), ir_type_str(b, sb, 128), i, (long long)da, (long long)db);
        out->dims[i] = da == 1 ? db : da;
    }
    return 0;
}

/* matmul{transpose_a, transpose_b}: op(a)[..., M, K] x op(b)[..., K, N],
 * where op swaps the last two dims of an operand whose flag is 1. */
static int infer_matmul(const ir_type *a, const ir_type *b, int64_t transpose_a, int64_t transpose_b, ir_type *out,
                        char *err, int cap)
{
    char sa[128], sb[128];
    if (transpose_a != 0 && transpose_a != 1)
        return fail(err, cap, "transpose_a must be 0 or 1, got %lld", (long long)transpose_a);
    if (transpose_b != 0 && transpose_b != 1)
        return fail(err, cap, "transpose_b must be 0 or 1, got %lld", (long long)transpose_b);
    if (a->rank < 2 || b->rank < 2)
        return fail(err, cap, "operands must have rank >= 2, got %s and %s", ir_type_str(a, sa, 128),
                    ir_type_str(b, sb, 128));
    if (a->dtype != b->dtype)
        return fail(err, cap, "operand dtypes differ: %s and %s", ir_type_str(a, sa, 128), ir_type_str(b, sb, 128));
    int64_t m = transpose_a ? a->dims[a->rank - 1] : a->dims[a->rank - 2];
    int64_t k_a = transpose_a ? a->dims[a->rank - 2] : a->dims[a->rank - 1];
    int64_t k_b = transpose_b ? b->dims[b->rank - 1] : b->dims[b->rank - 2];
    int64_t n = transpose_b ? b->dims[b->rank - 2] : b->dims[b->rank - 1];
    if (k_a != k_b)
        return fail(err, cap, "inner dimensions differ: %s%s x %s%s (%lld vs %lld)", ir_type_str(a, sa, 128),
                    transpose_a ? "^T" : "", ir_type_str(b, sb, 128), transpose_b ? "^T" : "", (long long)k_a,
                    (long long)k_b);
    ir_type ba = *a, bb = *b, batch;
    ba.rank -= 2;
    bb.rank -= 2;
    if (infer_broadcast(&ba, &bb, &batch, err, cap) != 0)
        return fail(err, cap, "batch dimensions of %s and %s do not broadcast", ir_type_str(a, sa, 128),
                    ir_type_str(b, sb, 128));
    *out = batch;
    out->dtype = a->dtype;
    out->dims[out->rank++] = m;
    out->dims[out->rank++] = n;
    return 0;
}

static int infer_reduce(const ir_type *x, const ir_attr *attrs, ir_type *out, char *err, int cap)
{
    char sx[128];
    bool reduced[IR_MAX_RANK] = {false};
    for (int i = 0; i < attrs[0].nints; i++) {
        int axis = norm_axis(attrs[0].ints[i], x->rank);
        if (axis < 0)
            return fail(err, cap, "axis %lld is out of range for %s", (long long)attrs[0].ints[i],
                        ir_type_str(x, sx, 128));
        if (reduced[axis])
            return fail(err, cap, "axis %lld is listed twice", (long long)attrs[0].ints[i]);
        reduced[axis] = true;
    }
    bool keep = attrs[1].i != 0;
    out->dtype = x->dtype;
    out->rank = 0;
    for (int i = 0; i < x->rank; i++) {
        if (!reduced[i])
            out->dims[out->rank++] = x->dims[i];
        else if (keep)
            out->dims[out->rank++] = 1;
    }
    return 0;
}

static int infer_reshape(const ir_type *x, const ir_attr *attrs, ir_type *out, char *err, int cap)
{
    char sx[128];
    int64_t known = 1;
    int infer_at = -1;
    out->dtype = x->dtype;
    out->rank = attrs[0].nints;
    for (int i = 0; i < attrs[0].nints; i++) {
        int64_t d = attrs[0].ints[i];
        if (d == -1) {
            if (infer_at >= 0)
                return fail(err, cap, "at most one dimension of the new shape may be -1");
            infer_at = i;
        } else if (d < 0) {
            return fail(err, cap, "dimension %d of the new shape is %lld; it must be >= 0 or -1", i, (long long)d);
        } else if (__builtin_mul_overflow(known, d, &known)) {
            return fail(err, cap, "the new shape has more than 2^63 elements");
        }
        out->dims[i] = d;
    }
    int64_t total = ir_type_numel(x);
    if (infer_at >= 0) {
        if (known == 0 || total % known != 0)
            return fail(err, cap, "cannot reshape %s (%lld elements) with a -1 dimension", ir_type_str(x, sx, 128),
                        (long long)total);
        out->dims[infer_at] = total / known;
        known = total;
    }
    if (known != total) {
        char so[128];
        return fail(err, cap, "cannot reshape %s (%lld elements) to %s (%lld elements)", ir_type_str(x, sx, 128),
                    (long long)total, ir_type_str(out, so, 128), (long long)known);
    }
    return 0;
}

static int infer_transpose(const ir_type *x, const ir_attr *attrs, ir_type *out, char *err, int cap)
{
    char sx[128];
    if (attrs[0].nints != x->rank)
        return fail(err, cap, "permutation has %d entries but %s has rank %d", attrs[0].nints,
                    ir_type_str(x, sx, 128), x->rank);
    bool seen[IR_MAX_RANK] = {false};
    out->dtype = x->dtype;
    out->rank = x->rank;
    for (int i = 0; i < x->rank; i++) {
        int axis = norm_axis(attrs[0].ints[i], x->rank);
        if (axis < 0 || seen[axis])
            return fail(err, cap, "perm is not a permutation of the %d axes of %s", x->rank, ir_type_str(x, sx, 128));
        seen[axis] = true;
        out->dims[i] = x->dims[axis];
    }
    return 0;
}

static int infer_slice(const ir_type *x, const ir_attr *attrs, ir_type *out, char *err, int cap)
{
    char sx[128];
    int axis = norm_axis(attrs[0].i, x->rank);
    if (axis < 0)
        return fail(err, cap, "axis %lld is out of range for %s", (long long)attrs[0].i, ir_type_str(x, sx, 128));
    int64_t start = attrs[1].i, end = attrs[2].i;
    if (start < 0 || end > x->dims[axis] || start >= end)
        return fail(err, cap, "range [%lld, %lld) is empty or outside dimension %d of %s (size %lld)",
                    (long long)start, (long long)end, axis, ir_type_str(x, sx, 128), (long long)x->dims[axis]);
    *out = *x;
    out->dims[axis] = end - start;
    return 0;
}

static int infer_concat(const ir_type *const *ops, int nops, const ir_attr *attrs, ir_type *out, char *err, int cap)
{
    char sa[128], sb[128];
    int axis = norm_axis(attrs[0].i, ops[0]->rank);
    if (axis < 0)
        return fail(err, cap, "axis %lld is out of range for %s", (long long)attrs[0].i, ir_type_str(ops[0], sa, 128));
    *out = *ops[0];
    for (int k = 1; k < nops; k++) {
        const ir_type *t = ops[k];
        bool ok = t->dtype == ops[0]->dtype && t->rank == ops[0]->rank;
        for (int i = 0; ok && i < t->rank; i++)
            if (i != axis && t->dims[i] != ops[0]->dims[i])
                ok = false;
        if (!ok)
            return fail(err, cap, "operand %d has type %s, which does not match %s outside axis %d", k,
                        ir_type_str(t, sb, 128), ir_type_str(ops[0], sa, 128), axis);
        if (__builtin_add_overflow(out->dims[axis], t->dims[axis], &out->dims[axis]))
            return fail(err, cap, "the concatenated axis %d has more than 2^63 elements", axis);
    }
    return 0;
}

static int infer_broadcast_to(const ir_type *x, const ir_attr *attrs, ir_type *out, char *err, int cap)
{
    char sx[128], so[128];
    ir_type target = {x->dtype, attrs[0].nints, {0}};
    for (int i = 0; i < attrs[0].nints; i++)
        if (attrs[0].ints[i] < 0)
            return fail(err, cap, "dimension %d of the target shape is %lld; it must be >= 0", i,
                        (long long)attrs[0].ints[i]);
    memcpy(target.dims, attrs[0].ints, sizeof(int64_t) * (size_t)attrs[0].nints);
    ir_type joined;
    if (x->rank > target.rank || infer_broadcast(x, &target, &joined, err, cap) != 0 ||
        !ir_type_equal(&joined, &target))
        return fail(err, cap, "%s does not broadcast to %s", ir_type_str(x, sx, 128), ir_type_str(&target, so, 128));
    *out = target;
    return 0;
}

static int infer_linear(const ir_type *const *ops, int nops, ir_type *out, char *err, int cap)
{
    char sx[128], sw[128], sb[128];
    const ir_type *x = ops[0], *w = ops[1];
    if (w->rank != 2)
        return fail(err, cap, "weight must be [in, out], got %s", ir_type_str(w, sw, 128));
    if (x->rank < 1 || x->dims[x->rank - 1] != w->dims[0])
        return fail(err, cap, "input %s does not match weight %s: last dimension must equal %lld",
                    ir_type_str(x, sx, 128), ir_type_str(w, sw, 128), (long long)w->dims[0]);
    if (x->dtype != w->dtype)
        return fail(err, cap, "input %s and weight %s differ in dtype", ir_type_str(x, sx, 128), ir_type_str(w, sw, 128));
    if (nops == 3 && (ops[2]->rank != 1 || ops[2]->dims[0] != w->dims[1] || ops[2]->dtype != w->dtype))
        return fail(err, cap, "bias must be %s[%lld], got %s", ir_dtype_name(w->dtype), (long long)w->dims[1],
                    ir_type_str(ops[2], sb, 128));
    *out = *x;
    out->dims[out->rank - 1] = w->dims[1];
    return 0;
}

static int infer_layernorm(const ir_type *const *ops, ir_type *out, char *err, int cap)
{
    char sx[128], sg[128];
    const ir_type *x = ops[0];
    if (!is_float(x->dtype) || x->rank < 1)
        return fail(err, cap, "input must be a floating tensor of rank >= 1, got %s", ir_type_str(x, sx, 128));
    for (int k = 1; k < 3; k++) {
        if (ops[k]->rank != 1 || ops[k]->dims[0] != x->dims[x->rank - 1] || ops[k]->dtype != x->dtype)
            return fail(err, cap, "%s must be %s[%lld] to match input %s, got %s", k == 1 ? "weight" : "bias",
                        ir_dtype_name(x->dtype), (long long)x->dims[x->rank - 1], ir_type_str(x, sx, 128),
                        ir_type_str(ops[k], sg, 128));
    }
    *out = *x;
    return 0;
}

static int infer_embedding(const ir_type *table, const ir_type *ids, ir_type *out, char *err, int cap)
{
    char st[128], si[128];
    if (table->rank != 2)
        return fail(err, cap, "table must be [rows, columns], got %s", ir_type_str(table, st, 128));
    if (!is_int(ids->dtype) || ids->rank + 1 > IR_MAX_RANK)
        return fail(err, cap, "ids must be an integer tensor, got %s", ir_type_str(ids, si, 128));
    *out = *ids;
    out->dtype = table->dtype;
    out->dims[out->rank++] = table->dims[1];
    return 0;
}

static int infer_cross_entropy(const ir_type *logits, const ir_type *targets, ir_type *out, char *err, int cap)
{
    char sl[128], st[128];
    bool ok = is_float(logits->dtype) && is_int(targets->dtype) && logits->rank == targets->rank + 1;
    for (int i = 0; ok && i < targets->rank; i++)
        ok = logits->dims[i] == targets->dims[i];
    if (!ok)
        return fail(err, cap, "logits %s and targets %s do not match: targets must be integer with the logits' "
                    "shape minus the last axis", ir_type_str(logits, sl, 128), ir_type_str(targets, st, 128));
    out->dtype = logits->dtype;
    out->rank = 0;
    return 0;
}

static int infer_unary(ir_op op, const ir_type *x, const ir_attr *attrs, ir_type *out, char *err, int cap)
{
    char sx[128];
    *out = *x;
    if (op == IR_OP_CAST) {
        ir_dtype to = ir_dtype_from_name(attrs[0].s ? attrs[0].s : "");
        if (to == IR_DTYPE_COUNT)
            return fail(err, cap, "unknown dtype '%s' (expected f32, f16, bf16, i8, u8, i32 or i64)", attrs[0].s);
        out->dtype = to;
        return 0;
    }
    if (!is_float(x->dtype) && op != IR_OP_NEG && op != IR_OP_ABS && op != IR_OP_RELU)
        return fail(err, cap, "operand must be floating point, got %s", ir_type_str(x, sx, 128));
    return 0;
}

/* ---- backward ops of the autodiff pass ---- */

/* The first operand is the upstream gradient; it must be floating and have
 * the type of `like` when `like` is given. */
static int check_dy(const ir_type *dy, const ir_type *like, char *err, int cap)
{
    char sd[128], sl[128];
    if (!is_float(dy->dtype))
        return fail(err, cap, "the gradient operand must be floating point, got %s", ir_type_str(dy, sd, 128));
    if (like && !ir_type_equal(dy, like))
        return fail(err, cap, "the gradient %s and the forward operand %s must have the same type",
                    ir_type_str(dy, sd, 128), ir_type_str(like, sl, 128));
    return 0;
}

static int infer_grad_minmax(const ir_type *const *ops, const ir_attr *attrs, ir_type *out, char *err, int cap)
{
    char sd[128];
    if (check_dy(ops[0], NULL, err, cap) != 0)
        return -1;
    if (attrs[0].i != 0 && attrs[0].i != 1)
        return fail(err, cap, "operand must be 0 or 1, got %lld", (long long)attrs[0].i);
    ir_type joined, all;
    if (infer_broadcast(ops[1], ops[2], &joined, err, cap) != 0 ||
        infer_broadcast(ops[0], &joined, &all, err, cap) != 0 || !ir_type_equal(&all, ops[0]))
        return fail(err, cap, "the forward operands must broadcast to the gradient's type %s",
                    ir_type_str(ops[0], sd, 128));
    *out = *ops[0];
    return 0;
}

static int infer_grad_embedding(const ir_type *dy, const ir_type *ids, const ir_attr *attrs, ir_type *out,
                                char *err, int cap)
{
    char sd[128], si[128];
    bool ok = is_float(dy->dtype) && is_int(ids->dtype) && dy->rank == ids->rank + 1;
    for (int i = 0; ok && i < ids->rank; i++)
        ok = dy->dims[i] == ids->dims[i];
    if (!ok)
        return fail(err, cap, "gradient %s and ids %s do not match: ids must be integer with the gradient's "
                    "shape minus the last axis", ir_type_str(dy, sd, 128), ir_type_str(ids, si, 128));
    if (attrs[0].i < 1)
        return fail(err, cap, "rows must be >= 1, got %lld", (long long)attrs[0].i);
    out->dtype = dy->dtype;
    out->rank = 2;
    out->dims[0] = attrs[0].i;
    out->dims[1] = dy->dims[dy->rank - 1];
    return 0;
}

static int infer_grad(ir_op op, const ir_type *const *ops, const ir_attr *attrs, ir_type *out, char *err, int cap)
{
    char sx[128];
    switch (op) {
    case IR_OP_GRAD_GELU:
    case IR_OP_GRAD_RELU:
    case IR_OP_GRAD_ABS:
        if (check_dy(ops[0], ops[1], err, cap) != 0)
            return -1;
        *out = *ops[0];
        return 0;
    case IR_OP_GRAD_MAXIMUM:
    case IR_OP_GRAD_MINIMUM:
        return infer_grad_minmax(ops, attrs, out, err, cap);
    case IR_OP_GRAD_LAYERNORM: {
        const ir_type *lops[3] = {ops[1], ops[2], ops[2]};
        if (check_dy(ops[0], ops[1], err, cap) != 0 || infer_layernorm(lops, out, err, cap) != 0)
            return -1;
        return 0;
    }
    case IR_OP_GRAD_LAYERNORM_WEIGHT:
        if (check_dy(ops[0], ops[1], err, cap) != 0)
            return -1;
        if (ops[1]->rank < 1)
            return fail(err, cap, "input must have rank >= 1, got %s", ir_type_str(ops[1], sx, 128));
        out->dtype = ops[1]->dtype;
        out->rank = 1;
        out->dims[0] = ops[1]->dims[ops[1]->rank - 1];
        return 0;
    case IR_OP_GRAD_SOFTMAX:
        if (check_dy(ops[0], ops[1], err, cap) != 0)
            return -1;
        if (norm_axis(attrs[0].i, ops[0]->rank) < 0)
            return fail(err, cap, "axis %lld is out of range for %s", (long long)attrs[0].i, ir_type_str(ops[0], sx, 128));
        *out = *ops[0];
        return 0;
    case IR_OP_GRAD_CAUSAL_MASK:
        if (check_dy(ops[0], NULL, err, cap) != 0)
            return -1;
        if (ops[0]->rank < 2)
            return fail(err, cap, "input must have rank >= 2 ([..., T, T]), got %s", ir_type_str(ops[0], sx, 128));
        *out = *ops[0];
        return 0;
    case IR_OP_GRAD_EMBEDDING:
        return infer_grad_embedding(ops[0], ops[1], attrs, out, err, cap);
    case IR_OP_GRAD_CROSS_ENTROPY:
        if (check_dy(ops[0], NULL, err, cap) != 0)
            return -1;
        if (ir_type_numel(ops[0]) != 1 || ops[0]->dtype != ops[1]->dtype)
            return fail(err, cap, "the loss gradient must be a one-element tensor of the logits' dtype, got %s",
                        ir_type_str(ops[0], sx, 128));
        if (infer_cross_entropy(ops[1], ops[2], out, err, cap) != 0)
            return -1;
        *out = *ops[1];
        return 0;
    default:
        break;
    }
    return fail(err, cap, "op %d is not a backward op", (int)op);
}

/* ---- key-value cache ---- */

/* A run-time position operand: an integer scalar. */
static int check_position(const ir_type *pos, char *err, int cap)
{
    char sp[128];
    if (!is_int(pos->dtype) || pos->rank != 0)
        return fail(err, cap, "the position must be an integer scalar such as i32[], got %s",
                    ir_type_str(pos, sp, 128));
    return 0;
}

/* cache[..., S, HS] and new[..., T, HS] agree in dtype and in every
 * dimension except axis -2, where T <= S. */
static int infer_cache_write(const ir_type *const *ops, ir_type *out, char *err, int cap)
{
    char sc[128], sn[128];
    const ir_type *cache = ops[0], *fresh = ops[1];
    bool ok = cache->rank >= 2 && cache->dtype == fresh->dtype && cache->rank == fresh->rank;
    for (int i = 0; ok && i < cache->rank; i++)
        ok = i == cache->rank - 2 ? fresh->dims[i] <= cache->dims[i] : fresh->dims[i] == cache->dims[i];
    if (!ok)
        return fail(err, cap, "cache %s and new rows %s do not match: both need the same dtype and rank >= 2, "
                    "and the same dimensions except axis -2, where new has at most as many rows as the cache",
                    ir_type_str(cache, sc, 128), ir_type_str(fresh, sn, 128));
    if (check_position(ops[2], err, cap) != 0)
        return -1;
    *out = *cache;
    return 0;
}

static int infer_by_rule(ir_op op, const ir_type *const *ops, int nops, const ir_attr *attrs, ir_type *out,
                         char *err, int cap)
{
    char sx[128];
    memset(out, 0, sizeof *out);
    switch (op) {
    case IR_OP_PARAM:
    case IR_OP_INPUT:
    case IR_OP_CONST:
        return fail(err, cap, "leaf ops have a given type");
    case IR_OP_ADD:
    case IR_OP_SUB:
    case IR_OP_MUL:
    case IR_OP_DIV:
    case IR_OP_MAXIMUM:
    case IR_OP_MINIMUM:
        return infer_broadcast(ops[0], ops[1], out, err, cap);
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
        return infer_unary(op, ops[0], attrs, out, err, cap);
    case IR_OP_MATMUL:
        return infer_matmul(ops[0], ops[1], attrs[0].i, attrs[1].i, out, err, cap);
    case IR_OP_LINEAR:
        return infer_linear(ops, nops, out, err, cap);
    case IR_OP_LAYERNORM:
        return infer_layernorm(ops, out, err, cap);
    case IR_OP_SOFTMAX:
        if (norm_axis(attrs[0].i, ops[0]->rank) < 0)
            return fail(err, cap, "axis %lld is out of range for %s", (long long)attrs[0].i, ir_type_str(ops[0], sx, 128));
        *out = *ops[0];
        return 0;
    case IR_OP_CAUSAL_MASK:
        if (ops[0]->rank < 2)
            return fail(err, cap, "input must have rank >= 2 ([..., T, T]), got %s", ir_type_str(ops[0], sx, 128));
        if (nops == 2 && check_position(ops[1], err, cap) != 0)
            return -1;
        *out = *ops[0];
        return 0;
    case IR_OP_CACHE_WRITE:
        return infer_cache_write(ops, out, err, cap);
    case IR_OP_RESHAPE:
        return infer_reshape(ops[0], attrs, out, err, cap);
    case IR_OP_TRANSPOSE:
        return infer_transpose(ops[0], attrs, out, err, cap);
    case IR_OP_SLICE:
        return infer_slice(ops[0], attrs, out, err, cap);
    case IR_OP_CONCAT:
        return infer_concat(ops, nops, attrs, out, err, cap);
    case IR_OP_BROADCAST:
        return infer_broadcast_to(ops[0], attrs, out, err, cap);
    case IR_OP_REDUCE_SUM:
    case IR_OP_REDUCE_MEAN:
    case IR_OP_REDUCE_MAX:
        return infer_reduce(ops[0], attrs, out, err, cap);
    case IR_OP_EMBEDDING:
        return infer_embedding(ops[0], ops[1], out, err, cap);
    case IR_OP_CROSS_ENTROPY:
        return infer_cross_entropy(ops[0], ops[1], out, err, cap);
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
        return infer_grad(op, ops, attrs, out, err, cap);
    case IR_OP_FQ_ACT:
    case IR_OP_FQ_WEIGHT:
    case IR_OP_GRAD_FQ_INPUT:
    case IR_OP_GRAD_FQ_SCALE:
    case IR_OP_GRAD_FQ_ZERO_POINT:
    case IR_OP_QA_SCALE:
        return ir_infer_quant_type(op, ops, nops, attrs, out, err, cap);
    case IR_OP_FUSED_ELEMENTWISE:
        return ir_infer_fused_type(ops, nops, attrs, out, err, cap);
    case IR_OP_FUSED_LINEAR:
    case IR_OP_FUSED_MATMUL:
        return ir_infer_fused_product_type(op, ops, nops, attrs, out, err, cap);
    case IR_OP_Q_LINEAR:
    case IR_OP_Q_QUANTIZE:
    case IR_OP_Q_MATMUL:
    case IR_OP_Q_REQUANTIZE:
    case IR_OP_Q_DEQUANTIZE:
        return ir_infer_int8_type(op, ops, nops, attrs, out, err, cap);
    case IR_OP_COUNT:
        break;
    }
    return fail(err, cap, "unknown op");
}

/* Applies the op's rule, then checks that the element count of the result
 * fits in int64_t, so that ir_type_numel cannot overflow on any inferred
 * type (broadcasting two large operands could exceed it otherwise). */
int ir_infer_type(ir_op op, const ir_type *const *ops, int nops, const ir_attr *attrs, ir_type *out,
                  char *err, int cap)
{
    if (infer_by_rule(op, ops, nops, attrs, out, err, cap) != 0)
        return -1;
    int64_t numel = 1;
    for (int i = 0; i < out->rank; i++)
        if (__builtin_mul_overflow(numel, out->dims[i], &numel))
            return fail(err, cap, "the result has more than 2^63 elements");
    return 0;
}
