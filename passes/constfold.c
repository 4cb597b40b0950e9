/* Constant folding: a value whose operands are all constant splats becomes
 * a constant splat of its result type. Folded ops: elementwise arithmetic,
 * unary math, scale and cast, and the layout ops (reshape, broadcast,
 * transpose, slice, concat of equal splats) and reduce_max, which keep the
 * value of a splat.
 *
 * f32 values are computed in double from operands rounded to f32, then
 * rounded to f32. For + - * / and sqrt that equals f32 arithmetic. For exp,
 * log, tanh and gelu it gives the correctly rounded result, which a
 * runtime's single-precision libm may miss by an ulp. Integer dtypes fold exact
 * results that fit the dtype. Sums and means are not folded because their
 * value depends on the summation order of the runtime. */
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "passes/manager.h"

static_assert(PASS_CONSTFOLD < PASS_COUNT, "pass_constfold needs an entry in passes/passes.def");

static bool is_int_dtype(ir_dtype t)
{
    return t == IR_I8 || t == IR_U8 || t == IR_I32 || t == IR_I64;
}

/* Returns true when x is an integer that dtype t can hold exactly (for i64,
 * within +-2^53, where the double that stores constants is still exact). */
static bool fits_int_dtype(double x, ir_dtype t)
{
    if (x != floor(x))
        return false;
    switch (t) {
    case IR_I8: return x >= INT8_MIN && x <= INT8_MAX;
    case IR_U8: return x >= 0 && x <= UINT8_MAX;
    case IR_I32: return x >= INT32_MIN && x <= INT32_MAX;
    case IR_I64: return fabs(x) <= 9007199254740992.0;
    default: return false;
    }
}

/* GPT-2's GELU, the tanh approximation:
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
static double gelu(double x)
{
    const double sqrt_2_over_pi = 0.7978845608028654;
    return 0.5 * x * (1.0 + tanh(sqrt_2_over_pi * (x + 0.044715 * x * x * x)));
}

static bool fold_binary(ir_op op, double a, double b, double *out)
{
    switch (op) {
    case IR_OP_ADD: *out = a + b; return true;
    case IR_OP_SUB: *out = a - b; return true;
    case IR_OP_MUL: *out = a * b; return true;
    case IR_OP_DIV: *out = a / b; return true;
    /* NaN handling of maximum and minimum is the runtime's choice, and
     * max(-0, +0) is either zero: leave those unfolded. */
    case IR_OP_MAXIMUM:
    case IR_OP_MINIMUM:
        if (isnan(a) || isnan(b) || (a == 0 && b == 0 && signbit(a) != signbit(b)))
            return false;
        *out = (op == IR_OP_MAXIMUM) == (a > b) ? a : b;
        return true;
    default:
        return false;
    }
}

static bool fold_unary(const ir_value *v, double x, double *out)
{
    switch (v->op) {
    case IR_OP_NEG: *out = -x; return true;
    case IR_OP_ABS: *out = fabs(x); return true;
    case IR_OP_RELU: *out = x > 0 ? x : 0.0; return !isnan(x);
    case IR_OP_EXP: *out = exp(x); return true;
    case IR_OP_LOG: *out = log(x); return true;
    case IR_OP_SQRT: *out = sqrt(x); return true;
    case IR_OP_RSQRT: *out = 1.0 / sqrt(x); return true;
    case IR_OP_TANH: *out = tanh(x); return true;
    case IR_OP_GELU: *out = gelu(x); return true;
    case IR_OP_SCALE: *out = x * (double)(float)v->attrs[0].f; return true;
    default: return false;
    }
}

/* Ops that only move or pick elements, so a splat keeps its value. */
static bool keeps_splat_value(ir_op op)
{
    return op == IR_OP_RESHAPE || op == IR_OP_BROADCAST || op == IR_OP_TRANSPOSE || op == IR_OP_SLICE ||
           op == IR_OP_CONCAT || op == IR_OP_REDUCE_MAX;
}

/* Computes the splat value of v from its constant operands. */
static bool fold_value(const ir_graph *g, const ir_value *v, double *out)
{
    ir_dtype result = v->type.dtype;
    ir_dtype source = g->values[v->ops[0]]->type.dtype;
    double x = g->values[v->ops[0]]->attrs[0].f;

    if (keeps_splat_value(v->op)) {
        for (int k = 1; k < v->nops; k++)
            if (g->values[v->ops[k]]->attrs[0].f != x)
                return false;
        *out = x;
        return true;
    }
    if (v->op == IR_OP_CAST) {
        if (result == IR_F32 && (source == IR_F32 || is_int_dtype(source)))
            *out = (double)(float)x;
        else if (is_int_dtype(result) && is_int_dtype(source) && fits_int_dtype(x, result))
            *out = x;
        else
            return false; /* float-to-int rounding is the runtime's choice */
        return true;
    }

    bool ok;
    if (result == IR_F32) {
        x = (double)(float)x;
        if (v->nops == 2)
            ok = fold_binary(v->op, x, (double)(float)g->values[v->ops[1]]->attrs[0].f, out);
        else
            ok = v->nops == 1 && fold_unary(v, x, out);
        *out = (double)(float)*out;
        return ok;
    }
    if (is_int_dtype(result)) {
        /* An integer constant written with a fraction has no agreed value. */
        for (int k = 0; k < v->nops; k++)
            if (!fits_int_dtype(g->values[v->ops[k]]->attrs[0].f, result))
                return false;
        if (v->op == IR_OP_DIV || v->op == IR_OP_SCALE || (v->nops == 1 && v->op != IR_OP_NEG &&
                                                          v->op != IR_OP_ABS && v->op != IR_OP_RELU))
            return false;
        if (v->nops == 2)
            ok = fold_binary(v->op, x, g->values[v->ops[1]]->attrs[0].f, out);
        else
            ok = fold_unary(v, x, out);
        return ok && fits_int_dtype(*out, result);
    }
    /* NOTE: f16 and bf16 results are not folded, because rounding to those
     * formats needs a conversion routine that the passes do not have. */
    return false;
}

static bool all_operands_const(const ir_graph *g, const ir_value *v)
{
    if (v->nops == 0)
        return false;
    for (int k = 0; k < v->nops; k++)
        if (g->values[v->ops[k]]->op != IR_OP_CONST)
            return false;
    return true;
}

/* Turns v into const{value} in place; its name, type and location stay. */
static void make_const(ir_value *v, double value)
{
    for (int a = 0; a < IR_MAX_ATTRS; a++) {
        free(v->attrs[a].s);
        v->attrs[a] = (ir_attr){0};
    }
    v->op = IR_OP_CONST;
    v->nops = 0;
    v->attrs[0].set = true;
    v->attrs[0].f = value;
}

int pass_constfold(ir_graph *g, const pass_options *opts, ir_diag *d)
{
    /* Topological order means operands are folded before their users. */
    for (int i = 0; i < g->nvalues; i++) {
        ir_value *v = g->values[i];
        double value;
        if (!v->dead && (ir_op_get(v->op)->flags & IR_OPF_PURE) && all_operands_const(g, v) &&
            fold_value(g, v, &value))
            make_const(v, value);
    }
    return 0;
}
