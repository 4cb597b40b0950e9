/* Gradient rules, one per differentiable op. A rule reads the forward value
 * v = op(x_0, x_1, ...) and its gradient dy, and adds to each needed operand
 * x_k the contribution dy * dv/dx_k, reduced back to x_k's shape where the
 * op broadcast it. The driver (passes/autodiff.c) sums the contributions. */
#include <stdio.h>
#include <string.h>

#include "passes/autodiff.h"

/* ---- emitting values ---- */

static int emit(ad_context *c, ir_op op, const char *name, const int *operands, int n, const ir_attrs *attrs,
                ir_loc loc)
{
    for (int k = 0; k < n; k++)
        if (operands[k] < 0)
            return -1;
    return ir_add(c->g, op, name, operands, n, attrs, loc);
}

static int emit1(ad_context *c, ir_op op, const char *name, int a, const ir_attrs *attrs, ir_loc loc)
{
    return emit(c, op, name, &a, 1, attrs, loc);
}

static int emit2(ad_context *c, ir_op op, const char *name, int a, int b, const ir_attrs *attrs, ir_loc loc)
{
    int operands[2] = {a, b};
    return emit(c, op, name, operands, 2, attrs, loc);
}

static int emit_scale(ad_context *c, const char *name, int a, double factor, ir_loc loc)
{
    ir_attrs attrs = ir_attrs_for(IR_OP_SCALE);
    ir_attrs_float(&attrs, "factor", factor);
    return emit1(c, IR_OP_SCALE, name, a, &attrs, loc);
}

static int emit_reduce_sum(ad_context *c, const char *name, int a, const int64_t *axes, int naxes, ir_loc loc)
{
    ir_attrs attrs = ir_attrs_for(IR_OP_REDUCE_SUM);
    ir_attrs_ints(&attrs, "axes", axes, naxes);
    return emit1(c, IR_OP_REDUCE_SUM, name, a, &attrs, loc);
}

/* matmul{transpose_a, transpose_b}(a, b). */
static int emit_matmul(ad_context *c, const char *name, int a, int b, bool transpose_a, bool transpose_b,
                       ir_loc loc)
{
    ir_attrs attrs = ir_attrs_for(IR_OP_MATMUL);
    ir_attrs_int(&attrs, "transpose_a", transpose_a);
    ir_attrs_int(&attrs, "transpose_b", transpose_b);
    return emit2(c, IR_OP_MATMUL, name, a, b, &attrs, loc);
}

static int scalar(ad_context *c, double value, ir_dtype dtype, ir_loc loc)
{
    ir_type type = {dtype, 0, {0}};
    return ad_const(c, value, &type, NULL, loc);
}

static const ir_type *type_of(const ad_context *c, int id)
{
    return &c->g->values[id]->type;
}

/* ---- broadcasting ---- */

/* Lists in axes[] the axes of `from` that broadcasting `to` up to `from`
 * created or stretched: the leading axes `to` lacks and the axes where `to`
 * has size 1 and `from` does not. Returns their count. */
static int broadcast_axes(const ir_type *from, const ir_type *to, int64_t *axes)
{
    int n = 0, lead = from->rank - to->rank;
    for (int i = 0; i < from->rank; i++)
        if (i < lead || (to->dims[i - lead] == 1 && from->dims[i] != 1))
            axes[n++] = i;
    return n;
}

/* Sums dy over the axes along which x was broadcast and reshapes the sum to
 * x's shape, naming the result `name`. Returns dy unchanged when x was not
 * broadcast. */
static int unbroadcast(ad_context *c, int dy, int x, const char *name, ir_loc loc)
{
    if (dy < 0)
        return -1;
    int64_t axes[IR_MAX_RANK];
    int naxes = broadcast_axes(type_of(c, dy), type_of(c, x), axes);
    if (naxes == 0)
        return dy;
    char sum_name[512];
    ad_name(c, x, "sum", sum_name, sizeof sum_name);
    ir_type summed = *type_of(c, dy);
    summed.rank -= naxes;
    bool reshaped = summed.rank != type_of(c, x)->rank;
    int sum = emit_reduce_sum(c, reshaped ? sum_name : name, dy, axes, naxes, loc);
    return reshaped ? ad_reshape(c, sum, type_of(c, x), name, loc) : sum;
}

/* Returns true when a value of type `full` must be reduced to reach x. */
static bool is_broadcast(const ad_context *c, const ir_type *full, int x)
{
    int64_t axes[IR_MAX_RANK];
    return broadcast_axes(full, type_of(c, x), axes) > 0;
}

/* Adds contribution `full` (of the forward result's shape) to x, reduced to
 * x's shape. `full` must already carry the name from full_name(). */
static int contribute_reduced(ad_context *c, int x, int full, ir_loc loc)
{
    char name[512];
    ad_contribution_name(c, x, name, sizeof name);
    return ad_contribute(c, x, unbroadcast(c, full, x, name, loc));
}

/* Names a value of the forward result's shape on its way to x: the final
 * contribution name when no reduction follows, else "<x>.grad.full". */
static void full_name(const ad_context *c, int x, const ir_type *full, char *buf, size_t cap)
{
    if (is_broadcast(c, full, x))
        ad_name(c, x, "full", buf, cap);
    else
        ad_contribution_name(c, x, buf, cap);
}

/* ---- elementwise ---- */

/* add, sub, mul, div, maximum, minimum with numpy broadcasting: each
 * operand's share has the result's shape and is summed over the axes the
 * operand was broadcast along. For y = a / b: dy/db = -a / b^2 = -y / b. */
static int rule_binary(ad_context *c, const ir_value *v, int dy)
{
    const ir_type *full = &v->type;
    char name[512], tmp[512];
    for (int k = 0; k < 2; k++) {
        int x = v->ops[k], other = v->ops[1 - k];
        if (!c->needed[x])
            continue;
        full_name(c, x, full, name, sizeof name);
        int share = -1;
        switch (v->op) {
        case IR_OP_ADD:
            share = dy;
            break;
        case IR_OP_SUB:
            share = k == 0 ? dy : emit1(c, IR_OP_NEG, name, dy, NULL, v->loc);
            break;
        case IR_OP_MUL:
            share = emit2(c, IR_OP_MUL, name, dy, other, NULL, v->loc);
            break;
        case IR_OP_DIV:
            if (k == 0) {
                share = emit2(c, IR_OP_DIV, name, dy, other, NULL, v->loc);
            } else {
                ad_name(c, x, "dy_y", tmp, sizeof tmp);
                int dy_y = emit2(c, IR_OP_MUL, tmp, dy, v->id, NULL, v->loc);
                ad_name(c, x, "neg", tmp, sizeof tmp);
                share = emit2(c, IR_OP_DIV, name, emit1(c, IR_OP_NEG, tmp, dy_y, NULL, v->loc), x, NULL, v->loc);
            }
            break;
        case IR_OP_MAXIMUM:
        case IR_OP_MINIMUM: {
            ir_attrs attrs = ir_attrs_for(v->op == IR_OP_MAXIMUM ? IR_OP_GRAD_MAXIMUM : IR_OP_GRAD_MINIMUM);
            ir_attrs_int(&attrs, "operand", k);
            int operands[3] = {dy, v->ops[0], v->ops[1]};
            share = emit(c, attrs.op, name, operands, 3, &attrs, v->loc);
            break;
        }
        default:
            break;
        }
        if (share < 0 || contribute_reduced(c, x, share, v->loc) != 0)
            return -1;
    }
    return 0;
}

/* Unary ops, with y = f(x):
 *   exp: dx = dy * y          log: dx = dy / x
 *   sqrt: dx = dy * 0.5 / y   rsqrt: y = x^(-1/2), dx = dy * (-0.5) * y / x
 *   tanh: dx = dy * (1 - y^2) scale: dx = factor * dy
 * gelu, relu and abs use their grad.* ops, and a cast between floating
 * types casts the gradient back. */
static int rule_unary(ad_context *c, const ir_value *v, int dy)
{
    int x = v->ops[0], y = v->id;
    if (!c->needed[x])
        return 0;
    char name[512], tmp[512];
    ad_contribution_name(c, x, name, sizeof name);
    ad_name(c, x, "local", tmp, sizeof tmp);
    int dx = -1;
    switch (v->op) {
    case IR_OP_NEG:
        dx = emit1(c, IR_OP_NEG, name, dy, NULL, v->loc);
        break;
    case IR_OP_EXP:
        dx = emit2(c, IR_OP_MUL, name, dy, y, NULL, v->loc);
        break;
    case IR_OP_LOG:
        dx = emit2(c, IR_OP_DIV, name, dy, x, NULL, v->loc);
        break;
    case IR_OP_SQRT:
        dx = emit2(c, IR_OP_DIV, name, emit_scale(c, tmp, dy, 0.5, v->loc), y, NULL, v->loc);
        break;
    case IR_OP_RSQRT:
        dx = emit2(c, IR_OP_MUL, name, emit_scale(c, tmp, dy, -0.5, v->loc),
                   emit2(c, IR_OP_DIV, tmp, y, x, NULL, v->loc), NULL, v->loc);
        break;
    case IR_OP_TANH: {
        int y2 = emit2(c, IR_OP_MUL, tmp, y, y, NULL, v->loc);
        int slope = emit2(c, IR_OP_SUB, tmp, scalar(c, 1.0, v->type.dtype, v->loc), y2, NULL, v->loc);
        dx = emit2(c, IR_OP_MUL, name, dy, slope, NULL, v->loc);
        break;
    }
    case IR_OP_SCALE:
        dx = emit_scale(c, name, dy, ir_attr_float(v, "factor"), v->loc);
        break;
    case IR_OP_GELU:
        dx = emit2(c, IR_OP_GRAD_GELU, name, dy, x, NULL, v->loc);
        break;
    case IR_OP_RELU:
        dx = emit2(c, IR_OP_GRAD_RELU, name, dy, x, NULL, v->loc);
        break;
    case IR_OP_ABS:
        dx = emit2(c, IR_OP_GRAD_ABS, name, dy, x, NULL, v->loc);
        break;
    case IR_OP_CAST: {
        ir_attrs attrs = ir_attrs_for(IR_OP_CAST);
        ir_attrs_str(&attrs, "to", ir_dtype_name(type_of(c, x)->dtype));
        dx = emit1(c, IR_OP_CAST, name, dy, &attrs, v->loc);
        ir_attrs_clear(&attrs);
        break;
    }
    default:
        break;
    }
    return ad_contribute(c, x, dx);
}

/* ---- linear algebra ---- */

/* The type of a matmul gradient before its reduction to operand x: the
 * batch dims of dy with x's last two dims. */
static ir_type full_type_for(const ad_context *c, int dy, int x)
{
    ir_type full = *type_of(c, dy);
    const ir_type *tx = type_of(c, x);
    full.dims[full.rank - 2] = tx->dims[tx->rank - 2];
    full.dims[full.rank - 1] = tx->dims[tx->rank - 1];
    return full;
}

/* matmul: y = A B with A = a [..., M, K] (a^T when transpose_a) and
 * B = b [..., K, N] (b^T when transpose_b). From dA = dy B^T and
 * dB = A^T dy, and da = dA^T when a is stored transposed (likewise b):
 *   transpose_a = 0: da = dy B^T = matmul{0, !tb}(dy, b)
 *   transpose_a = 1: da = B dy^T = matmul{tb, 1}(b, dy)
 *   transpose_b = 0: db = A^T dy = matmul{!ta, 0}(a, dy)
 *   transpose_b = 1: db = dy^T A = matmul{1, ta}(dy, a)
 * each summed over the batch axes its operand was broadcast along. When b
 * is a plain matrix shared by every batch of an untransposed a, a and dy
 * are flattened to [rows, K] and [rows, N]. One 2-D matmul then sums db
 * over all of a's leading axes, in place of a batched product and a
 * reduction. */
static int rule_matmul(ad_context *c, const ir_value *v, int dy)
{
    int a = v->ops[0], b = v->ops[1];
    bool ta = ir_attr_int(v, "transpose_a") != 0;
    bool tb = ir_attr_int(v, "transpose_b") != 0;
    char name[512], tmp[512];
    if (c->needed[a]) {
        ir_type full = full_type_for(c, dy, a);
        full_name(c, a, &full, name, sizeof name);
        int da = ta ? emit_matmul(c, name, b, dy, tb, true, v->loc) : emit_matmul(c, name, dy, b, false, !tb, v->loc);
        if (contribute_reduced(c, a, da, v->loc) != 0)
            return -1;
    }
    if (!c->needed[b])
        return 0;

    const ir_type *a_type = type_of(c, a);
    if (type_of(c, b)->rank == 2 && a_type->rank > 2 && !ta) {
        int64_t K = a_type->dims[a_type->rank - 1], N = v->type.dims[v->type.rank - 1];
        int64_t rows = ir_type_numel(a_type) / (K ? K : 1);
        ir_type a2 = {a_type->dtype, 2, {rows, K}}, dy2 = {a_type->dtype, 2, {rows, N}};
        ad_name(c, b, "a2", tmp, sizeof tmp);
        int a_flat = ad_reshape(c, a, &a2, tmp, v->loc);
        ad_name(c, v->id, "flat", tmp, sizeof tmp);
        int dy_flat = ad_reshape(c, dy, &dy2, tmp, v->loc);
        ad_contribution_name(c, b, name, sizeof name);
        int db = tb ? emit_matmul(c, name, dy_flat, a_flat, true, false, v->loc)
                    : emit_matmul(c, name, a_flat, dy_flat, true, false, v->loc);
        return ad_contribute(c, b, db);
    }

    ir_type full = full_type_for(c, dy, b);
    full_name(c, b, &full, name, sizeof name);
    int db = tb ? emit_matmul(c, name, dy, a, true, ta, v->loc) : emit_matmul(c, name, a, dy, !ta, false, v->loc);
    return contribute_reduced(c, b, db, v->loc);
}

/* linear: y = x W + bias with x [..., in], W [in, out]. With x and dy
 * flattened to [rows, in] and [rows, out]:
 *   dx = dy W^T,  dW = x^T dy (summed over every leading axis),
 *   dbias = the sum of dy over rows. */
static int rule_linear(ad_context *c, const ir_value *v, int dy)
{
    int x = v->ops[0], w = v->ops[1];
    const ir_type *tx = type_of(c, x), *tw = type_of(c, w);
    int64_t in = tw->dims[0], out = tw->dims[1];
    int64_t rows = ir_type_numel(tx) / (in ? in : 1);
    ir_type x2 = {tx->dtype, 2, {rows, in}}, dy2 = {tx->dtype, 2, {rows, out}};
    char name[512], tmp[512];
    ad_name(c, v->id, "flat", tmp, sizeof tmp);
    int dy_flat = ad_reshape(c, dy, &dy2, tmp, v->loc);

    if (c->needed[x]) {
        ad_contribution_name(c, x, name, sizeof name);
        ad_name(c, x, "flat", tmp, sizeof tmp);
        bool flat = tx->rank == 2;
        int dx = emit_matmul(c, flat ? name : tmp, dy_flat, w, false, true, v->loc);
        if (ad_contribute(c, x, ad_reshape(c, dx, tx, name, v->loc)) != 0)
            return -1;
    }
    if (c->needed[w]) {
        ad_name(c, w, "x2", tmp, sizeof tmp);
        int x_flat = ad_reshape(c, x, &x2, tmp, v->loc);
        ad_contribution_name(c, w, name, sizeof name);
        int dw = emit_matmul(c, name, x_flat, dy_flat, true, false, v->loc);
        if (ad_contribute(c, w, dw) != 0)
            return -1;
    }
    if (v->nops == 3 && c->needed[v->ops[2]]) {
        int64_t axis0 = 0;
        ad_contribution_name(c, v->ops[2], name, sizeof name);
        if (ad_contribute(c, v->ops[2], emit_reduce_sum(c, name, dy_flat, &axis0, 1, v->loc)) != 0)
            return -1;
    }
    return 0;
}

/* ---- normalization, attention and loss ---- */

/* layernorm: dx and dweight come from grad.layernorm and
 * grad.layernorm_weight (the derivation is at their interpreter kernels),
 * and dbias is the sum of dy over every axis but the last. */
static int rule_layernorm(ad_context *c, const ir_value *v, int dy)
{
    int x = v->ops[0], w = v->ops[1], bias = v->ops[2];
    ir_attrs attrs = ir_attrs_for(IR_OP_GRAD_LAYERNORM);
    ir_attrs_float(&attrs, "eps", ir_attr_float(v, "eps"));
    char name[512];
    if (c->needed[x]) {
        int operands[3] = {dy, x, w};
        ad_contribution_name(c, x, name, sizeof name);
        if (ad_contribute(c, x, emit(c, IR_OP_GRAD_LAYERNORM, name, operands, 3, &attrs, v->loc)) != 0)
            return -1;
    }
    if (c->needed[w]) {
        ir_attrs wattrs = ir_attrs_for(IR_OP_GRAD_LAYERNORM_WEIGHT);
        ir_attrs_float(&wattrs, "eps", ir_attr_float(v, "eps"));
        ad_contribution_name(c, w, name, sizeof name);
        if (ad_contribute(c, w, emit2(c, IR_OP_GRAD_LAYERNORM_WEIGHT, name, dy, x, &wattrs, v->loc)) != 0)
            return -1;
    }
    if (c->needed[bias]) {
        ad_contribution_name(c, bias, name, sizeof name);
        if (ad_contribute(c, bias, unbroadcast(c, dy, bias, name, v->loc)) != 0)
            return -1;
    }
    return 0;
}

/* Rules whose result has the operand's type and which need one op:
 * softmax, causal_mask, reshape and transpose (by the inverse permutation). */
static int rule_same_shape(ad_context *c, const ir_value *v, int dy)
{
    int x = v->ops[0];
    if (!c->needed[x])
        return 0;
    char name[512];
    ad_contribution_name(c, x, name, sizeof name);
    int dx = -1;
    ir_attrs attrs;
    switch (v->op) {
    case IR_OP_SOFTMAX:
        attrs = ir_attrs_for(IR_OP_GRAD_SOFTMAX);
        ir_attrs_int(&attrs, "axis", ir_attr_int(v, "axis"));
        dx = emit2(c, IR_OP_GRAD_SOFTMAX, name, dy, v->id, &attrs, v->loc);
        break;
    case IR_OP_CAUSAL_MASK:
        if (v->nops != 1) {
            ir_diag_error(c->d, v->loc, "'causal_mask' %%%s has a run-time position operand, which the gradient "
                          "rule does not support; differentiate a graph without a key-value cache", v->name);
            return -1;
        }
        attrs = ir_attrs_for(IR_OP_GRAD_CAUSAL_MASK);
        ir_attrs_int(&attrs, "offset", ir_attr_int(v, "offset"));
        dx = emit1(c, IR_OP_GRAD_CAUSAL_MASK, name, dy, &attrs, v->loc);
        break;
    case IR_OP_RESHAPE:
        dx = ad_reshape(c, dy, type_of(c, x), name, v->loc);
        break;
    case IR_OP_TRANSPOSE: {
        int n;
        const int64_t *perm = ir_attr_ints(v, "perm", &n);
        int64_t inverse[IR_MAX_RANK];
        for (int i = 0; i < n; i++)
            inverse[perm[i] < 0 ? perm[i] + n : perm[i]] = i;
        attrs = ir_attrs_for(IR_OP_TRANSPOSE);
        ir_attrs_ints(&attrs, "perm", inverse, n);
        dx = emit1(c, IR_OP_TRANSPOSE, name, dy, &attrs, v->loc);
        break;
    }
    default:
        break;
    }
    return ad_contribute(c, x, dx);
}

/* slice: the driver pads dy with zeros, or joins the slices of one value.
 * concat: operand k gets the slice of dy at its offset along the axis. */
static int rule_slice_concat(ad_context *c, const ir_value *v, int dy)
{
    const ir_type *t0 = type_of(c, v->ops[0]);
    int64_t axis = ir_attr_int(v, "axis");
    if (axis < 0)
        axis += t0->rank;
    if (v->op == IR_OP_SLICE) {
        if (!c->needed[v->ops[0]])
            return 0;
        return ad_contribute_slice(c, v->ops[0], dy, (int)axis, ir_attr_int(v, "start"), ir_attr_int(v, "end"));
    }
    int64_t offset = 0;
    for (int k = 0; k < v->nops; k++) {
        int x = v->ops[k];
        int64_t size = type_of(c, x)->dims[axis];
        if (c->needed[x]) {
            char name[512];
            ad_contribution_name(c, x, name, sizeof name);
            ir_attrs attrs = ir_attrs_for(IR_OP_SLICE);
            ir_attrs_int(&attrs, "axis", axis);
            ir_attrs_int(&attrs, "start", offset);
            ir_attrs_int(&attrs, "end", offset + size);
            if (ad_contribute(c, x, emit1(c, IR_OP_SLICE, name, dy, &attrs, v->loc)) != 0)
                return -1;
        }
        offset += size;
    }
    return 0;
}

/* reduce_max: dx = dy where x equals the max of its group, else 0. This is
 * grad.maximum(dy, x, max){operand=0} (dy broadcast to x's shape, max kept
 * as size-1 axes), which gives dy / 2 on the tie x == max and 0 elsewhere,
 * scaled by 2.
 * NOTE: every element that ties for the max gets all of dy, so a group with
 * k tied maxima passes k * dy back, where PyTorch's amax passes dy / k to
 * each. The gradient is only defined without ties. */
static int rule_reduce_max(ad_context *c, const ir_value *v, int dy_kept, int x, const char *name)
{
    const ir_type *tx = type_of(c, x);
    char tmp[512];
    ad_name(c, x, "max", tmp, sizeof tmp);
    int max_kept = ad_reshape(c, v->id, type_of(c, dy_kept), tmp, v->loc);
    ir_attrs battrs = ir_attrs_for(IR_OP_BROADCAST);
    ir_attrs_ints(&battrs, "shape", tx->dims, tx->rank);
    ad_name(c, x, "full", tmp, sizeof tmp);
    int dy_full = emit1(c, IR_OP_BROADCAST, tmp, dy_kept, &battrs, v->loc);
    ir_attrs attrs = ir_attrs_for(IR_OP_GRAD_MAXIMUM);
    ir_attrs_int(&attrs, "operand", 0);
    int operands[3] = {dy_full, x, max_kept};
    ad_name(c, x, "half", tmp, sizeof tmp);
    int half = emit(c, IR_OP_GRAD_MAXIMUM, tmp, operands, 3, &attrs, v->loc);
    return ad_contribute(c, x, emit_scale(c, name, half, 2.0, v->loc));
}

/* broadcast: dy summed over the broadcast axes. reduce_sum and reduce_mean:
 * dy reshaped to keep the reduced axes as size 1, then broadcast back to
 * x's shape. reduce_mean also divides by the number of reduced elements,
 * and reduce_max continues in rule_reduce_max. */
static int rule_broadcast_reduce(ad_context *c, const ir_value *v, int dy)
{
    int x = v->ops[0];
    if (!c->needed[x])
        return 0;
    char name[512], tmp[512];
    ad_contribution_name(c, x, name, sizeof name);
    const ir_type *tx = type_of(c, x);
    if (v->op == IR_OP_BROADCAST)
        return ad_contribute(c, x, unbroadcast(c, dy, x, name, v->loc));

    int naxes;
    const int64_t *axes = ir_attr_ints(v, "axes", &naxes);
    ir_type kept = *tx;
    int64_t count = 1;
    for (int i = 0; i < naxes; i++) {
        int axis = (int)(axes[i] < 0 ? axes[i] + tx->rank : axes[i]);
        count *= tx->dims[axis];
        kept.dims[axis] = 1;
    }
    int g = dy;
    if (v->op == IR_OP_REDUCE_MEAN) {
        ad_name(c, x, "mean", tmp, sizeof tmp);
        g = emit_scale(c, tmp, dy, count ? 1.0 / (double)count : 0.0, v->loc);
    }
    ad_name(c, x, "kept", tmp, sizeof tmp);
    g = ad_reshape(c, g, &kept, tmp, v->loc);
    if (v->op == IR_OP_REDUCE_MAX)
        return rule_reduce_max(c, v, g, x, name);
    if (ir_type_equal(&kept, tx))
        return ad_contribute(c, x, g); /* reduced only size-1 axes */
    ir_attrs attrs = ir_attrs_for(IR_OP_BROADCAST);
    ir_attrs_ints(&attrs, "shape", tx->dims, tx->rank);
    return ad_contribute(c, x, emit1(c, IR_OP_BROADCAST, name, g, &attrs, v->loc));
}

/* embedding: the table gets grad.embedding, a scatter-add of dy into the
 * rows of the ids. cross_entropy: the logits get grad.cross_entropy,
 * dloss * (softmax(logits) - onehot(targets)) / (counted positions). */
static int rule_lookup_loss(ad_context *c, const ir_value *v, int dy)
{
    int x = v->ops[0];
    if (!c->needed[x])
        return 0;
    char name[512];
    ad_contribution_name(c, x, name, sizeof name);
    if (v->op == IR_OP_EMBEDDING) {
        ir_attrs attrs = ir_attrs_for(IR_OP_GRAD_EMBEDDING);
        ir_attrs_int(&attrs, "rows", type_of(c, x)->dims[0]);
        return ad_contribute(c, x, emit2(c, IR_OP_GRAD_EMBEDDING, name, dy, v->ops[1], &attrs, v->loc));
    }
    ir_attrs attrs = ir_attrs_for(IR_OP_GRAD_CROSS_ENTROPY);
    ir_attrs_int(&attrs, "ignore_index", ir_attr_int(v, "ignore_index"));
    int operands[3] = {dy, x, v->ops[1]};
    return ad_contribute(c, x, emit(c, IR_OP_GRAD_CROSS_ENTROPY, name, operands, 3, &attrs, v->loc));
}

/* ---- dispatch ---- */

bool ad_has_rule(ir_op op)
{
    switch (op) {
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
    case IR_OP_MATMUL:
    case IR_OP_LINEAR:
    case IR_OP_LAYERNORM:
    case IR_OP_SOFTMAX:
    case IR_OP_CAUSAL_MASK:
    case IR_OP_RESHAPE:
    case IR_OP_TRANSPOSE:
    case IR_OP_SLICE:
    case IR_OP_CONCAT:
    case IR_OP_BROADCAST:
    case IR_OP_REDUCE_SUM:
    case IR_OP_REDUCE_MEAN:
    case IR_OP_REDUCE_MAX:
    case IR_OP_EMBEDDING:
    case IR_OP_CROSS_ENTROPY:
    case IR_OP_FQ_ACT:
    case IR_OP_FQ_WEIGHT:
    case IR_OP_QA_SCALE:
        return true;
    default:
        /* NOTE: the backward ops themselves (second derivatives) and ops
         * that are not pure have no rule, and the driver reports them when
         * a gradient must cross one. The default case keeps ops added later
         * rejected until they get a rule. */
        break;
    }
    return false;
}

int ad_apply_rule(ad_context *c, const ir_value *v, int dy)
{
    switch (v->op) {
    case IR_OP_ADD:
    case IR_OP_SUB:
    case IR_OP_MUL:
    case IR_OP_DIV:
    case IR_OP_MAXIMUM:
    case IR_OP_MINIMUM:
        return rule_binary(c, v, dy);
    case IR_OP_MATMUL:
        return rule_matmul(c, v, dy);
    case IR_OP_LINEAR:
        return rule_linear(c, v, dy);
    case IR_OP_LAYERNORM:
        return rule_layernorm(c, v, dy);
    case IR_OP_SOFTMAX:
    case IR_OP_CAUSAL_MASK:
    case IR_OP_RESHAPE:
    case IR_OP_TRANSPOSE:
        return rule_same_shape(c, v, dy);
    case IR_OP_SLICE:
    case IR_OP_CONCAT:
        return rule_slice_concat(c, v, dy);
    case IR_OP_BROADCAST:
    case IR_OP_REDUCE_SUM:
    case IR_OP_REDUCE_MEAN:
    case IR_OP_REDUCE_MAX:
        return rule_broadcast_reduce(c, v, dy);
    case IR_OP_EMBEDDING:
    case IR_OP_CROSS_ENTROPY:
        return rule_lookup_loss(c, v, dy);
    case IR_OP_FQ_ACT:
    case IR_OP_FQ_WEIGHT:
        return ad_rule_fake_quant(c, v, dy);
    case IR_OP_QA_SCALE:
        return ad_rule_qa_scale(c, v, dy);
    default:
        if (ad_has_rule(v->op))
            return rule_unary(c, v, dy);
        break;
    }
    ir_diag_error(c->d, v->loc, "'%s' %%%s has no gradient rule", ir_op_get(v->op)->name, v->name);
    return -1;
}
