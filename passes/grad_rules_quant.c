/* Gradient rules of the quantization ops: fq.act and fq.weight (the
 * straight-through estimator for the input, the LSQ step-size gradient for
 * the scale) and the Quadapter scale qa.scale. The autodiff driver calls
 * them through ad_apply_rule in passes/grad_rules.c. */
#include <stdio.h>

#include "ir/quant.h"
#include "passes/autodiff.h"

static int emit(ad_context *c, ir_op op, const char *name, const int *operands, int n, const ir_attrs *attrs,
                ir_loc loc)
{
    for (int k = 0; k < n; k++)
        if (operands[k] < 0)
            return -1;
    return ir_add(c->g, op, name, operands, n, attrs, loc);
}

/* fq.act and fq.weight, x_hat = fq(x, s, z). Each needed operand gets the
 * matching grad.fq.* op of (dy, x, s, z), whose per-element derivatives are
 * in ir/quant.h:
 *   dx = dy where x is inside the clipping range, else 0 (straight-through)
 *   ds = sum of dy * (round(x/s) - x/s) inside, dy * (qmin - z) below and
 *        dy * (qmax - z) above (LSQ), per channel of s
 *   dz = sum of dy * -s outside the range, per channel of z
 * LSQ also multiplies ds by 1 / sqrt(numel(x) * qmax); that factor is a
 * learning-rate choice and is left to the optimizer. */
int ad_rule_fake_quant(ad_context *c, const ir_value *v, int dy)
{
    ir_quant_spec spec;
    if (ir_quant_spec_of(v, &spec) != 0) {
        ir_diag_error(c->d, v->loc, "'%s' %%%s has invalid quantizer attributes", ir_op_get(v->op)->name, v->name);
        return -1;
    }
    static const ir_op grad_ops[3] = {IR_OP_GRAD_FQ_INPUT, IR_OP_GRAD_FQ_SCALE, IR_OP_GRAD_FQ_ZERO_POINT};
    int operands[4] = {dy, v->ops[0], v->ops[1], v->ops[2]};
    for (int k = 0; k < 3; k++) {
        int x = v->ops[k];
        if (!c->needed[x])
            continue;
        ir_attrs attrs = ir_attrs_for(grad_ops[k]);
        ir_attrs_int(&attrs, "axis", spec.axis);
        ir_attrs_int(&attrs, "qmin", spec.range.qmin);
        ir_attrs_int(&attrs, "qmax", spec.range.qmax);
        char name[512];
        ad_contribution_name(c, x, name, sizeof name);
        if (ad_contribute(c, x, emit(c, grad_ops[k], name, operands, 4, &attrs, v->loc)) != 0)
            return -1;
    }
    return 0;
}

/* Sums t over every axis except `axis`, giving a rank-1 value. */
static int sum_except(ad_context *c, int t, int axis, const char *name, ir_loc loc)
{
    if (t < 0)
        return -1;
    int rank = c->g->values[t]->type.rank;
    if (rank == 1)
        return t;
    int64_t axes[IR_MAX_RANK];
    int naxes = 0;
    for (int i = 0; i < rank; i++)
        if (i != axis)
            axes[naxes++] = i;
    ir_attrs attrs = ir_attrs_for(IR_OP_REDUCE_SUM);
    ir_attrs_ints(&attrs, "axes", axes, naxes);
    return emit(c, IR_OP_REDUCE_SUM, name, &t, 1, &attrs, loc);
}

/* qa.scale{axis, invert}(x, alpha), y = x * alpha or y = x / alpha along
 * axis. It is mul or div with alpha broadcast along one axis, so the rule is
 * theirs:
 *   dx = dy * alpha (or dy / alpha): qa.scale of dy with the same attributes
 *   y = x * alpha:  dalpha_c = sum over the other axes of dy * x
 *   y = x / alpha:  dy/dalpha = -x / alpha^2 = -y / alpha, so
 *                   dalpha_c = -(sum of dy * y) / alpha_c */
int ad_rule_qa_scale(ad_context *c, const ir_value *v, int dy)
{
    int x = v->ops[0], alpha = v->ops[1];
    int axis = (int)ir_attr_int(v, "axis");
    if (axis < 0)
        axis += v->type.rank;
    bool invert = ir_attr_int(v, "invert") != 0;
    char name[512], tmp[512];

    if (c->needed[x]) {
        ir_attrs attrs = ir_attrs_for(IR_OP_QA_SCALE);
        ir_attrs_int(&attrs, "axis", axis);
        ir_attrs_int(&attrs, "invert", invert);
        int operands[2] = {dy, alpha};
        ad_contribution_name(c, x, name, sizeof name);
        if (ad_contribute(c, x, emit(c, IR_OP_QA_SCALE, name, operands, 2, &attrs, v->loc)) != 0)
            return -1;
    }
    if (!c->needed[alpha])
        return 0;

    ad_contribution_name(c, alpha, name, sizeof name);
    int product_operands[2] = {dy, invert ? v->id : x};
    ad_name(c, alpha, "product", tmp, sizeof tmp);
    int product = emit(c, IR_OP_MUL, tmp, product_operands, 2, NULL, v->loc);
    if (!invert)
        return ad_contribute(c, alpha, sum_except(c, product, axis, name, v->loc));

    ad_name(c, alpha, "sum", tmp, sizeof tmp);
    int sum = sum_except(c, product, axis, tmp, v->loc);
    ir_attrs attrs = ir_attrs_for(IR_OP_QA_SCALE);
    ir_attrs_int(&attrs, "axis", 0);
    ir_attrs_int(&attrs, "invert", 1);
    int quotient_operands[2] = {sum, alpha};
    ad_name(c, alpha, "quotient", tmp, sizeof tmp);
    int quotient = emit(c, IR_OP_QA_SCALE, tmp, quotient_operands, 2, &attrs, v->loc);
    return ad_contribute(c, alpha, emit(c, IR_OP_NEG, name, &quotient, 1, NULL, v->loc));
}
