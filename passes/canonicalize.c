/* Canonicalization: local rewrites that give equal computations one form,
 * so that cse finds them and later passes see fewer cases. Every rewrite is
 * exact (bit for bit, NaN payloads aside):
 *   - operands of commutative ops sorted by value id;
 *   - reshape(reshape(x)) -> reshape(x), transpose(transpose(x)) -> one
 *     transpose with the composed permutation, neg(neg(x)) -> x;
 *   - identity ops removed: a reshape, broadcast, cast or slice whose type
 *     equals its operand's, an identity transpose, scale{factor=1}, a
 *     one-operand concat, x*1, 1*x, x/1, x-0 and x+(-0).
 * A removed value is marked dead; values it used stay for dce. The pass
 * repeats until nothing changes, at most max-iterations times (default 8). */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "passes/manager.h"

static_assert(PASS_CANONICALIZE < PASS_COUNT, "pass_canonicalize needs an entry in passes/passes.def");

static const ir_value *operand(const ir_graph *g, const ir_value *v, int k)
{
    return g->values[v->ops[k]];
}

/* Returns true when value id is a constant splat equal to `value`, with the
 * same sign when value is zero. */
static bool is_const(const ir_graph *g, int id, double value)
{
    const ir_value *c = g->values[id];
    return c->op == IR_OP_CONST && c->attrs[0].f == value && signbit(c->attrs[0].f) == signbit(value);
}

static int normalize_axis(int64_t axis, int rank)
{
    return (int)(axis < 0 ? axis + rank : axis);
}

static bool is_identity_perm(const ir_value *v)
{
    for (int i = 0; i < v->attrs[0].nints; i++)
        if (normalize_axis(v->attrs[0].ints[i], v->type.rank) != i)
            return false;
    return true;
}

/* For an arithmetic op with a neutral constant on one side, returns the
 * other operand, or -1. The result must keep the other operand's type: a
 * constant that broadcasts it to a larger shape is not neutral. */
static int neutral_operand(const ir_graph *g, const ir_value *v)
{
    int a = v->ops[0], b = v->ops[1];
    int kept = -1;
    switch (v->op) {
    case IR_OP_MUL:
        kept = is_const(g, b, 1.0) ? a : is_const(g, a, 1.0) ? b : -1;
        break;
    case IR_OP_DIV:
        kept = is_const(g, b, 1.0) ? a : -1;
        break;
    case IR_OP_SUB:
        kept = is_const(g, b, 0.0) ? a : -1; /* x - (+0) == x, also for x = -0 */
        break;
    case IR_OP_ADD:
        kept = is_const(g, b, -0.0) ? a : is_const(g, a, -0.0) ? b : -1; /* x + (-0) == x, but -0 + 0 == +0 */
        break;
    default:
        break;
    }
    if (kept >= 0 && !ir_type_equal(&g->values[kept]->type, &v->type))
        return -1;
    return kept;
}

/* Returns the value that v is equal to, or -1. */
static int find_replacement(const ir_graph *g, const ir_value *v)
{
    switch (v->op) {
    case IR_OP_RESHAPE:
    case IR_OP_BROADCAST:
    case IR_OP_CAST:
    case IR_OP_SLICE:
        return ir_type_equal(&operand(g, v, 0)->type, &v->type) ? v->ops[0] : -1;
    case IR_OP_CONCAT:
        return v->nops == 1 ? v->ops[0] : -1;
    case IR_OP_TRANSPOSE:
        return is_identity_perm(v) ? v->ops[0] : -1;
    case IR_OP_SCALE:
        return v->attrs[0].f == 1.0 ? v->ops[0] : -1;
    case IR_OP_NEG:
        return operand(g, v, 0)->op == IR_OP_NEG ? operand(g, v, 0)->ops[0] : -1;
    case IR_OP_MUL:
    case IR_OP_DIV:
    case IR_OP_SUB:
    case IR_OP_ADD:
        return neutral_operand(g, v);
    default:
        return -1;
    }
}

/* Rewrites v in place; returns true when it changed. */
static bool rewrite_in_place(const ir_graph *g, ir_value *v)
{
    const ir_op_info *info = ir_op_get(v->op);
    if ((info->flags & IR_OPF_COMMUTATIVE) && v->nops == 2 && v->ops[0] > v->ops[1]) {
        int first = v->ops[0];
        v->ops[0] = v->ops[1];
        v->ops[1] = first;
        return true;
    }
    const ir_value *x = v->nops == 1 ? operand(g, v, 0) : NULL;
    if (v->op == IR_OP_RESHAPE && x->op == IR_OP_RESHAPE) {
        v->ops[0] = x->ops[0];
        return true;
    }
    if (v->op == IR_OP_TRANSPOSE && x->op == IR_OP_TRANSPOSE) {
        /* y = transpose(x, p) has y.dims[i] = x.dims[p[i]], so
         * transpose(transpose(x, p), q) reads x at axis p[q[i]]. */
        int rank = v->type.rank;
        int64_t composed[IR_MAX_RANK];
        for (int i = 0; i < rank; i++)
            composed[i] = normalize_axis(x->attrs[0].ints[normalize_axis(v->attrs[0].ints[i], rank)], rank);
        memcpy(v->attrs[0].ints, composed, sizeof(int64_t) * (size_t)rank);
        v->ops[0] = x->ops[0];
        return true;
    }
    return false;
}

int pass_canonicalize(ir_graph *g, const pass_options *opts, ir_diag *d)
{
    int64_t max_iterations = pass_option_int(opts, "max-iterations", 8);
    for (int64_t iteration = 0; iteration < max_iterations; iteration++) {
        bool changed = false;
        for (int i = 0; i < g->nvalues; i++) {
            ir_value *v = g->values[i];
            if (v->dead || (ir_op_get(v->op)->flags & IR_OPF_LEAF))
                continue;
            int replacement = find_replacement(g, v);
            if (replacement >= 0) {
                ir_replace_uses(g, v->id, replacement);
                v->dead = true;
                changed = true;
            } else if (rewrite_in_place(g, v)) {
                changed = true;
            }
        }
        if (!changed)
            break;
    }
    return 0;
}
