/* The attention matmuls of lower-int8: matmul(fq.act(a), fq.act(b))
 * between two activations (q · kᵀ, and the softmax output · v) becomes
 *   q.quantize(a), q.quantize(b) -> q.matmul -> i32 sums
 * followed by one of two output stages (ir/ops.def has the op formulas):
 *   - requantization, when the sums reach another activation quantizer
 *     through single-use transposes and reshapes only (att · v, then
 *     c_proj's input quantizer): q.requantize to that quantizer's integers
 *     with the fixed-point multiplier s_a · s_b / s_out, the transposes
 *     and reshapes on the integers, then q.dequantize with s_out and z_out.
 *     That dequantized value equals the quantizer's output, which q.linear
 *     quantizes back to the same integers.
 *   - dequantization, when a float op follows (q · kᵀ, then scale and
 *     softmax): q.dequantize with the scale s_a · s_b, a bind-time mul.
 * The multiplier is an i32[3] param "<matmul>.requant" computed once from
 * the calibrated scales by pass_int8_convert_weights
 * (pass_int8_store_multiplier), so it is a constant of the compiled model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/quant_arith.h"
#include "ir/int8.h"
#include "ir/quant.h"
#include "passes/int8.h"
#include "passes/quant_graph.h"

static bool is_act_quantizer(const ir_value *v)
{
    return v->op == IR_OP_FQ_ACT && v->type.dtype == IR_F32;
}

/* Fills the requantization target of s: the quantizer that the matmul's
 * result reaches through single-use transposes and reshapes. */
static void find_requant_target(const ir_graph *g, pass_int8_attention *s)
{
    s->consumer = -1;
    s->nchain = 0;
    int at = s->op;
    for (;;) {
        int slot = 0;
        int user = ir_only_user(g, at, &slot);
        if (user < 0)
            return;
        const ir_value *u = g->values[user];
        if ((u->op == IR_OP_TRANSPOSE || u->op == IR_OP_RESHAPE) && s->nchain < PASS_INT8_MAX_CHAIN) {
            s->chain[s->nchain++] = user;
            at = user;
            continue;
        }
        if (is_act_quantizer(u) && slot == 0) {
            ir_quant_spec spec;
            if (ir_quant_spec_of(u, &spec) != 0)
                return;
            s->out_bits = spec.bits;
            s->out_symmetric = spec.symmetric;
            s->out_narrow = spec.narrow;
            s->out_scale = u->ops[1];
            s->out_zero_point = u->ops[2];
        } else if (u->op == IR_OP_Q_LINEAR && slot == IR_QLINEAR_X) {
            s->out_bits = (int)ir_attr_int(u, "bits");
            s->out_symmetric = ir_attr_int(u, "symmetric") != 0;
            s->out_narrow = ir_attr_int(u, "narrow") != 0;
            s->out_scale = u->ops[IR_QLINEAR_X_SCALE];
            s->out_zero_point = u->ops[IR_QLINEAR_X_ZERO_POINT];
        } else {
            return;
        }
        s->consumer = user;
        return;
    }
}

bool pass_int8_match_attention(const ir_graph *g, int id, pass_int8_attention *out)
{
    const ir_value *v = g->values[id];
    if (v->dead || v->op != IR_OP_MATMUL || v->nops != 2)
        return false;
    /* A matmul that transposes its first operand is not an attention matmul. */
    if (ir_op_attr_index(IR_OP_MATMUL, "transpose_a") >= 0 && ir_attr_int(v, "transpose_a") != 0)
        return false;
    const ir_value *a = g->values[v->ops[0]], *b = g->values[v->ops[1]];
    if (!is_act_quantizer(a) || !is_act_quantizer(b))
        return false;
    const ir_type *at = &a->type, *bt = &b->type;
    if (at->rank < 2 || at->rank != bt->rank || at->dims[at->rank - 1] > IR_QMATMUL_MAX_K)
        return false;
    for (int d = 0; d < at->rank - 2; d++)
        if (at->dims[d] != bt->dims[d])
            return false;
    ir_quant_spec sa, sb;
    if (ir_quant_spec_of(a, &sa) != 0 || ir_quant_spec_of(b, &sb) != 0)
        return false;

    memset(out, 0, sizeof *out);
    out->op = id;
    out->act_a = v->ops[0];
    out->act_b = v->ops[1];
    out->transpose_b = ir_attr_int(v, "transpose_b") != 0;
    find_requant_target(g, out);
    return true;
}

int pass_int8_multiplier_name(const ir_graph *g, const pass_int8_attention *s, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s%s", g->values[s->op]->name, PASS_INT8_MULTIPLIER_SUFFIX);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* ---- the multiplier, computed from the weights ---- */

static int scalar_param(const ir_graph *g, const rt_weights *w, int id, float *out, ir_diag *d)
{
    const ir_value *p = g->values[id];
    const rt_tensor *t = p->op == IR_OP_PARAM ? rt_weights_get(w, p->name) : NULL;
    if (!t || t->dtype != IR_F32 || rt_tensor_numel(t) != 1) {
        ir_diag_error(d, p->loc, "int8 weights: quantizer param @%s must be an f32 weight with one element",
                      p->name);
        return -1;
    }
    *out = *(const float *)t->data;
    if (!(*out > 0.0f) || !isfinite(*out)) {
        ir_diag_error(d, p->loc, "int8 weights: @%s is %.9g; scales must be positive and finite (run calibration "
                      "first)", p->name, (double)*out);
        return -1;
    }
    return 0;
}

int pass_int8_store_multiplier(const ir_graph *g, const pass_int8_attention *s, rt_weights *w, ir_diag *d)
{
    const ir_value *v = g->values[s->op];
    float sa, sb, so;
    if (scalar_param(g, w, g->values[s->act_a]->ops[1], &sa, d) != 0 ||
        scalar_param(g, w, g->values[s->act_b]->ops[1], &sb, d) != 0 ||
        scalar_param(g, w, s->out_scale, &so, d) != 0)
        return -1;
    double real = (double)sa * (double)sb / (double)so;
    cg_qmul m;
    if (cg_qmul_from_real(real, &m) != 0) {
        ir_diag_error(d, v->loc, "int8 weights: the requantization multiplier of %%%s, %.9g, is not below 2^%d",
                      v->name, real, CG_QMUL_MAX_LEFT_SHIFT);
        return -1;
    }
    char name[512];
    int64_t dims[1] = {IR_QMUL_COUNT};
    rt_tensor *t = pass_int8_multiplier_name(g, s, name, sizeof name) == 0 ? rt_tensor_new(IR_I32, 1, dims) : NULL;
    if (!t) {
        ir_diag_error(d, v->loc, "int8 weights: cannot store the multiplier of %%%s", v->name);
        return -1;
    }
    int32_t *x = t->data;
    x[IR_QMUL_M0] = m.m0;
    x[IR_QMUL_LEFT_SHIFT] = m.left_shift;
    x[IR_QMUL_RIGHT_SHIFT] = m.right_shift;
    if (rt_weights_set(w, name, t) != 0) {
        rt_tensor_free(t);
        ir_diag_error(d, v->loc, "int8 weights: could not store @%s", name);
        return -1;
    }
    return 0;
}

/* ---- the rewrite ---- */

/* Adds value `op` named <base><suffix>. Returns its id or -1. */
static int add_named(ir_graph *g, ir_op op, const char *base, const char *suffix, const int *operands, int nops,
                     const ir_attrs *attrs, ir_loc loc, ir_diag *d)
{
    char name[512];
    int n = snprintf(name, sizeof name, "%s%s", base, suffix);
    if (n < 0 || (size_t)n >= sizeof name) {
        ir_diag_error(d, loc, "the name of value %%%s is too long", base);
        return -1;
    }
    return ir_add(g, op, name, operands, nops, attrs, loc);
}

static ir_attrs quantizer_attrs(ir_op op, int bits, bool symmetric, bool narrow)
{
    ir_attrs a = ir_attrs_for(op);
    ir_attrs_int(&a, "bits", bits);
    ir_attrs_int(&a, "symmetric", symmetric);
    ir_attrs_int(&a, "narrow", narrow);
    return a;
}

/* q.quantize of fq.act value act. */
static int add_quantize(ir_graph *g, int act, const char *base, const char *suffix, ir_diag *d)
{
    const ir_value *fq = g->values[act];
    ir_quant_spec spec;
    if (ir_quant_spec_of(fq, &spec) != 0)
        return -1;
    ir_attrs a = quantizer_attrs(IR_OP_Q_QUANTIZE, spec.bits, spec.symmetric, spec.narrow);
    int operands[3] = {fq->ops[0], fq->ops[1], fq->ops[2]};
    return add_named(g, IR_OP_Q_QUANTIZE, base, suffix, operands, 3, &a, fq->loc, d);
}

/* Copies transpose or reshape value `layout` onto operand x. */
static int copy_layout(ir_graph *g, int layout, int x, ir_diag *d)
{
    const ir_value *v = g->values[layout];
    ir_attrs a = ir_attrs_for(v->op);
    int n = 0;
    const char *key = v->op == IR_OP_TRANSPOSE ? "perm" : "shape";
    const int64_t *values = ir_attr_ints(v, key, &n);
    ir_attrs_ints(&a, key, values, n);
    int id = add_named(g, v->op, v->name, ".q", &x, 1, &a, v->loc, d);
    ir_attrs_clear(&a);
    return id;
}

/* Requantizes the sums and replays the layout chain on the integers; the
 * consumer then reads their dequantized values. */
static int lower_requantized(ir_graph *g, const pass_int8_attention *s, int acc, ir_diag *d)
{
    const ir_value *v = g->values[s->op];
    char name[512];
    if (pass_int8_multiplier_name(g, s, name, sizeof name) != 0) {
        ir_diag_error(d, v->loc, "the name of value %%%s is too long", v->name);
        return -1;
    }
    int multiplier = ir_find(g, name);
    if (multiplier < 0) {
        ir_type t = {.dtype = IR_I32, .rank = 1, .dims = {IR_QMUL_COUNT}};
        multiplier = qg_add_param(g, name, t, "zeros", v->loc, d);
    }
    if (multiplier < 0)
        return -1;
    ir_attrs a = quantizer_attrs(IR_OP_Q_REQUANTIZE, s->out_bits, s->out_symmetric, s->out_narrow);
    int operands[3] = {acc, multiplier, s->out_zero_point};
    int x = add_named(g, IR_OP_Q_REQUANTIZE, v->name, ".requantize", operands, 3, &a, v->loc, d);
    for (int k = 0; k < s->nchain && x >= 0; k++)
        x = copy_layout(g, s->chain[k], x, d);
    if (x < 0)
        return -1;
    int last = s->nchain > 0 ? s->chain[s->nchain - 1] : s->op;
    int deq_operands[3] = {x, s->out_scale, s->out_zero_point};
    int deq = add_named(g, IR_OP_Q_DEQUANTIZE, g->values[last]->name, ".dequantize", deq_operands, 3, NULL,
                        g->values[last]->loc, d);
    if (deq < 0)
        return -1;
    ir_value *consumer = g->values[s->consumer];
    if (consumer->op == IR_OP_Q_LINEAR) {
        consumer->ops[IR_QLINEAR_X] = deq;
    } else {
        ir_replace_uses(g, s->consumer, deq);
        consumer->dead = true;
    }
    return 0;
}

/* Scales the sums by s_a · s_b to f32 and replaces the matmul with them. */
static int lower_dequantized(ir_graph *g, const pass_int8_attention *s, int acc, ir_diag *d)
{
    const ir_value *v = g->values[s->op];
    int scales[2] = {g->values[s->act_a]->ops[1], g->values[s->act_b]->ops[1]};
    int scale = add_named(g, IR_OP_MUL, v->name, ".scale", scales, 2, NULL, v->loc, d);
    if (scale < 0)
        return -1;
    int operands[2] = {acc, scale};
    int deq = add_named(g, IR_OP_Q_DEQUANTIZE, v->name, ".dequantize", operands, 2, NULL, v->loc, d);
    if (deq < 0)
        return -1;
    ir_replace_uses(g, s->op, deq);
    g->values[s->op]->dead = true;
    return 0;
}

int pass_int8_lower_attention(ir_graph *g, const pass_int8_attention *s, ir_diag *d)
{
    const ir_value *v = g->values[s->op];
    char *base = strdup(v->name);
    if (!base) {
        ir_diag_error(d, v->loc, "out of memory");
        return -1;
    }
    int qa = add_quantize(g, s->act_a, base, ".a", d);
    int qb = qa >= 0 ? add_quantize(g, s->act_b, base, ".b", d) : -1;
    int rc = -1;
    if (qb >= 0) {
        ir_attrs a = ir_attrs_for(IR_OP_Q_MATMUL);
        ir_attrs_int(&a, "transpose_b", s->transpose_b);
        int operands[4] = {qa, qb, g->values[s->act_a]->ops[2], g->values[s->act_b]->ops[2]};
        int acc = add_named(g, IR_OP_Q_MATMUL, base, ".acc", operands, 4, &a, g->values[s->op]->loc, d);
        if (acc >= 0)
            rc = s->consumer >= 0 ? lower_requantized(g, s, acc, d) : lower_dequantized(g, s, acc, d);
    }
    free(base);
    return rc;
}
