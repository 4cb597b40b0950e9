/* The lower-int8 pass: rewrites each fake-quantized linear layer,
 *   linear(fq.act(x, s_x, z_x), fq.weight(w, s_w, z_w), b)
 * and the LM head matmul{transpose_b=1} of the same form, into
 *   q.linear(x, @w.q, s_x, z_x, s_w, z_w, b){transpose_b, bits, symmetric, narrow}
 * that quantizes x with the fq.act attributes, multiplies by the i8 weight
 * with exact integer sums and dequantizes to f32 (ir/ops.def). The result
 * stays f32, so layernorm, softmax, GELU and the residual adds that follow
 * are unchanged. The i8 weights come from pass_int8_convert_weights
 * (passes/int8.h). Matmuls between two fake-quantized activations (the
 * attention's q · kᵀ and att · v) become q.matmul with integer output
 * stages (passes/int8_attention.c). Sites that do not match are left
 * fake-quantized. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/int8.h"
#include "ir/quant.h"
#include "passes/int8.h"
#include "passes/manager.h"
#include "passes/quant_graph.h"

static_assert(PASS_LOWER_INT8 < PASS_COUNT, "pass_lower_int8 needs an entry in passes/passes.def");

/* The weight quantizer must be symmetric, so every q fits in i8, and per
 * tensor or per output channel, so the scale factors out of the sum. */
static bool lowerable_weight(const ir_graph *g, int fq, bool transpose_b)
{
    const ir_value *q = g->values[fq];
    ir_quant_spec spec;
    if (q->op != IR_OP_FQ_WEIGHT || ir_quant_spec_of(q, &spec) != 0 || !spec.symmetric)
        return false;
    const ir_value *w = g->values[q->ops[0]];
    if (w->op != IR_OP_PARAM || w->type.dtype != IR_F32 || w->type.rank != 2)
        return false;
    int out_axis = transpose_b ? 0 : 1;
    return ir_type_numel(&g->values[q->ops[1]]->type) == 1 || spec.axis == out_axis;
}

bool pass_int8_match(const ir_graph *g, int id, pass_int8_site *out)
{
    const ir_value *v = g->values[id];
    bool transpose_b;
    if (v->dead)
        return false;
    if (v->op == IR_OP_LINEAR)
        transpose_b = false;
    else if (v->op == IR_OP_MATMUL && ir_attr_int(v, "transpose_a") == 0 && ir_attr_int(v, "transpose_b") == 1)
        transpose_b = true;
    else
        return false;
    const ir_value *act = g->values[v->ops[0]];
    if (act->op != IR_OP_FQ_ACT || act->type.dtype != IR_F32)
        return false;
    if (!lowerable_weight(g, v->ops[1], transpose_b))
        return false;
    *out = (pass_int8_site){
        .op = id,
        .act = v->ops[0],
        .weight_fq = v->ops[1],
        .weight = g->values[v->ops[1]]->ops[0],
        .transpose_b = transpose_b,
    };
    return true;
}

/* Returns the i8 param <w>.q for weight param w, adding it on first use. */
static int int8_weight_param(ir_graph *g, int weight, ir_diag *d)
{
    char name[512];
    const ir_value *w = g->values[weight];
    int n = snprintf(name, sizeof name, "%s%s", w->name, PASS_INT8_WEIGHT_SUFFIX);
    if (n < 0 || (size_t)n >= sizeof name) {
        ir_diag_error(d, w->loc, "the name of weight @%s is too long", w->name);
        return -1;
    }
    int id = ir_find(g, name);
    if (id >= 0) {
        if (g->values[id]->op == IR_OP_PARAM && g->values[id]->type.dtype == IR_I8)
            return id;
        ir_diag_error(d, w->loc, "value '%s' exists but is not an i8 param; rename it", name);
        return -1;
    }
    ir_type type = w->type;
    type.dtype = IR_I8;
    return qg_add_param(g, name, type, "zeros", w->loc, d);
}

static int lower_site(ir_graph *g, const pass_int8_site *s, ir_diag *d)
{
    int wq = int8_weight_param(g, s->weight, d);
    if (wq < 0)
        return -1;
    const ir_value *v = g->values[s->op];
    const ir_value *act = g->values[s->act];
    const ir_value *wfq = g->values[s->weight_fq];
    int operands[7] = {
        [IR_QLINEAR_X] = act->ops[0],
        [IR_QLINEAR_W] = wq,
        [IR_QLINEAR_X_SCALE] = act->ops[1],
        [IR_QLINEAR_X_ZERO_POINT] = act->ops[2],
        [IR_QLINEAR_W_SCALE] = wfq->ops[1],
        [IR_QLINEAR_W_ZERO_POINT] = wfq->ops[2],
    };
    int nops = IR_QLINEAR_BIAS;
    if (v->op == IR_OP_LINEAR && v->nops == 3)
        operands[nops++] = v->ops[2];

    ir_attrs attrs = ir_attrs_for(IR_OP_Q_LINEAR);
    ir_attrs_int(&attrs, "transpose_b", s->transpose_b);
    ir_attrs_int(&attrs, "bits", ir_attr_int(act, "bits"));
    ir_attrs_int(&attrs, "symmetric", ir_attr_int(act, "symmetric"));
    ir_attrs_int(&attrs, "narrow", ir_attr_int(act, "narrow"));
    int lowered = ir_add(g, IR_OP_Q_LINEAR, v->name, operands, nops, &attrs, v->loc);
    ir_attrs_clear(&attrs);
    if (lowered < 0)
        return -1;

    /* Keep the original name on the new value. The name table is rebuilt
     * when the pass manager compacts the graph. */
    ir_replace_uses(g, s->op, lowered);
    ir_value *old = g->values[s->op], *now = g->values[lowered];
    old->dead = true;
    char *name = old->name;
    old->name = now->name;
    now->name = name;
    return 0;
}

/* Marks dead the candidates (the fq ops and f32 weights of rewritten
 * sites) that nothing uses any more. */
static int remove_unused(ir_graph *g, const bool *candidate, int ncandidates)
{
    int *uses = calloc((size_t)g->nvalues, sizeof *uses);
    if (!uses)
        return -1;
    for (int i = 0; i < g->nvalues; i++)
        for (int k = 0; !g->values[i]->dead && k < g->values[i]->nops; k++)
            uses[g->values[i]->ops[k]]++;
    for (int i = 0; i < g->noutputs; i++)
        uses[g->outputs[i]]++;
    /* Walking backwards sees every user before the values it reads. */
    for (int i = g->nvalues - 1; i >= 0; i--) {
        ir_value *v = g->values[i];
        if (v->dead || i >= ncandidates || !candidate[i] || uses[i] > 0)
            continue;
        v->dead = true;
        for (int k = 0; k < v->nops; k++)
            uses[v->ops[k]]--;
    }
    free(uses);
    return 0;
}

int pass_lower_int8(ir_graph *g, const pass_options *opts, ir_diag *d)
{
    (void)opts;
    int n = g->nvalues;
    bool *candidate = calloc((size_t)n + 1, sizeof *candidate);
    if (!candidate) {
        ir_diag_error(d, (ir_loc){0}, "out of memory");
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        pass_int8_site site;
        if (!pass_int8_match(g, i, &site))
            continue;
        candidate[site.act] = candidate[site.weight_fq] = candidate[site.weight] = true;
        rc = lower_site(g, &site, d);
    }
    /* After the linears, and after removing the fq ops they no longer
     * read, so that a requantized attention result finds the q.linear
     * that reads it as its only user. */
    if (rc == 0 && remove_unused(g, candidate, n) != 0) {
        ir_diag_error(d, (ir_loc){0}, "out of memory");
        rc = -1;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        pass_int8_attention site;
        if (!pass_int8_match_attention(g, i, &site))
            continue;
        candidate[site.act_a] = candidate[site.act_b] = candidate[site.op] = true;
        for (int k = 0; k < site.nchain; k++)
            candidate[site.chain[k]] = true;
        rc = pass_int8_lower_attention(g, &site, d);
    }
    if (rc == 0 && remove_unused(g, candidate, n) != 0) {
        ir_diag_error(d, (ir_loc){0}, "out of memory");
        rc = -1;
    }
    free(candidate);
    return rc;
}
