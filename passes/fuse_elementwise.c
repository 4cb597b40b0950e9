/* Elementwise fusion: merges chains of f32 elementwise ops (add, mul,
 * scale, gelu, ... with numpy broadcasting) into one fused.elementwise op
 * per chain, so code generation runs the chain in one loop and the
 * intermediate tensors are never stored. A value joins its user's chain
 * when the user is its only use and it is not a graph output. Both must
 * also depend on run-time inputs alike, because a chain over params alone
 * is computed once at bind time. Runs after autodiff, which has no
 * gradient rule for fused ops.
 * With the option epilogue (on by default), a matmul or linear that could
 * join a chain the same way takes the chain in as its epilogue. The chain
 * becomes a fused.matmul or fused.linear, whose kernel applies it to the
 * product's tiles before they are stored (a bias add, gelu and a residual
 * add in GPT-2). That needs the chain's result to have the product's
 * type. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "ir/fused.h"
#include "passes/manager.h"

static_assert(PASS_FUSE_ELEMENTWISE < PASS_COUNT, "pass_fuse_elementwise needs an entry in passes/passes.def");

/* The chain that ends at one value: a program over external inputs. */
typedef struct chain {
    bool valid;  /* the value is a fusable op */
    bool merged; /* the chain contains at least one other value */
    ir_fused_program program;
    int ninputs;
    int inputs[IR_FUSED_MAX_INPUTS]; /* value ids */
} chain;

typedef struct fuse_state {
    ir_graph *g;
    chain *chains;
    int *uses;
    bool *is_output;
    bool *runtime;  /* depends on a graph input */
    bool *absorbed; /* merged into its user's chain */
    int max_inputs;
    bool epilogue;  /* fold chains into the matrix product they start from */
} fuse_state;

static bool is_f32(const ir_graph *g, int id)
{
    return g->values[id]->type.dtype == IR_F32;
}

static bool fusable(const ir_graph *g, const ir_value *v)
{
    if (v->dead || !is_f32(g, v->id))
        return false;
    if (v->op != IR_OP_FUSED_ELEMENTWISE && !ir_fused_op_allowed(v->op))
        return false;
    for (int k = 0; k < v->nops; k++)
        if (!is_f32(g, v->ops[k]))
            return false;
    return true;
}

/* The program of v alone, with $k meaning operand k of v. */
static int local_program(const ir_value *v, ir_fused_program *p)
{
    if (v->op == IR_OP_FUSED_ELEMENTWISE) {
        char err[256];
        return ir_fused_parse(ir_attr_str(v, "program"), v->nops, p, err, sizeof err);
    }
    memset(p, 0, sizeof *p);
    for (int k = 0; k < v->nops; k++)
        p->steps[p->nsteps++] = (ir_fused_step){IR_OP_INPUT, k, 0.0};
    p->steps[p->nsteps++] = (ir_fused_step){v->op, 0, v->op == IR_OP_SCALE ? ir_attr_float(v, "factor") : 0.0};
    return 0;
}

/* Appends a push of value `id` to c; returns -1 when c has no room. */
static int push_input(chain *c, int id, int max_inputs)
{
    int k = 0;
    while (k < c->ninputs && c->inputs[k] != id)
        k++;
    if (k == c->ninputs) {
        if (c->ninputs == max_inputs)
            return -1;
        c->inputs[c->ninputs++] = id;
    }
    if (c->program.nsteps == IR_FUSED_MAX_STEPS)
        return -1;
    c->program.steps[c->program.nsteps++] = (ir_fused_step){IR_OP_INPUT, k, 0.0};
    return 0;
}

static bool absorbable(const fuse_state *s, const ir_value *user, int id)
{
    return s->chains[id].valid && s->uses[id] == 1 && !s->is_output[id] &&
           s->runtime[id] == s->runtime[user->id];
}

/* Builds the chain of v from its local program, expanding each operand
 * that may join. With `merge` false every operand stays an input. Returns
 * -1 when the chain exceeds the step or input limit. */
static int build_chain(const fuse_state *s, const ir_value *v, const ir_fused_program *local, bool merge, chain *c)
{
    memset(c, 0, sizeof *c);
    c->valid = true;
    for (int t = 0; t < local->nsteps; t++) {
        const ir_fused_step *step = &local->steps[t];
        if (step->op != IR_OP_INPUT) {
            if (c->program.nsteps == IR_FUSED_MAX_STEPS)
                return -1;
            c->program.steps[c->program.nsteps++] = *step;
            continue;
        }
        int id = v->ops[step->input];
        if (!merge || !absorbable(s, v, id)) {
            if (push_input(c, id, s->max_inputs) != 0)
                return -1;
            continue;
        }
        const chain *inner = &s->chains[id];
        for (int u = 0; u < inner->program.nsteps; u++) {
            const ir_fused_step *is = &inner->program.steps[u];
            if (is->op == IR_OP_INPUT) {
                if (push_input(c, inner->inputs[is->input], s->max_inputs) != 0)
                    return -1;
            } else {
                if (c->program.nsteps == IR_FUSED_MAX_STEPS)
                    return -1;
                c->program.steps[c->program.nsteps++] = *is;
            }
        }
        c->merged = true;
    }
    return 0;
}

/* Computes the chain of every fusable value, in topological order, and
 * marks the operands that joined a chain. */
static int plan_chains(fuse_state *s)
{
    ir_graph *g = s->g;
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        s->runtime[i] = v->op == IR_OP_INPUT;
        for (int k = 0; k < v->nops; k++)
            s->runtime[i] = s->runtime[i] || s->runtime[v->ops[k]];
        if (!fusable(g, v))
            continue;
        ir_fused_program local;
        if (local_program(v, &local) != 0)
            continue; /* an invalid program: leave it for the verifier */
        chain *c = &s->chains[i];
        if (build_chain(s, v, &local, true, c) != 0 && build_chain(s, v, &local, false, c) != 0) {
            c->valid = false;
            continue;
        }
        if (!c->merged)
            continue;
        for (int k = 0; k < v->nops; k++)
            if (absorbable(s, v, v->ops[k]))
                s->absorbed[v->ops[k]] = true;
    }
    return 0;
}

/* Moves the new value `fused` into the place of value i, which dies. The
 * new value takes over i's id, name and place in the order, so every use
 * of i reads it and the live ranges of the buffer plan stay as they were.
 * Its operands all precede i, so the order stays topological. The name
 * table is rebuilt when the pass manager compacts the graph. */
static int take_place(ir_graph *g, int i, int fused)
{
    ir_value *old = g->values[i], *now = g->values[fused];
    g->values[i] = now;
    g->values[fused] = old;
    now->id = i;
    old->id = fused;
    old->dead = true;
    char *name = old->name;
    old->name = now->name;
    now->name = name;
    return 0;
}

/* Replaces value i by a fused.elementwise op over its chain. */
static int materialize(fuse_state *s, int i, ir_diag *d)
{
    ir_graph *g = s->g;
    chain *c = &s->chains[i];
    char text[IR_FUSED_MAX_STEPS * 32];
    if (ir_fused_format(&c->program, text, sizeof text) < 0) {
        ir_diag_error(d, g->values[i]->loc, "the program of value '%s' is too long to print",
                      g->values[i]->name);
        return -1;
    }
    ir_attrs attrs = ir_attrs_for(IR_OP_FUSED_ELEMENTWISE);
    ir_attrs_str(&attrs, "program", text);
    int fused = ir_add(g, IR_OP_FUSED_ELEMENTWISE, g->values[i]->name, c->inputs, c->ninputs, &attrs,
                       g->values[i]->loc);
    ir_attrs_clear(&attrs);
    if (fused < 0)
        return -1;
    return take_place(g, i, fused);
}

/* ---- epilogues of matrix products ---- */

/* Returns true for a matmul whose attributes other than transpose_a and
 * transpose_b are at their defaults, so fused.matmul can express it. */
static bool plain_matmul(const ir_value *v)
{
    const ir_op_info *info = ir_op_get(v->op);
    for (int a = 0; a < info->nattrs; a++) {
        if (strcmp(info->attrs[a].name, "transpose_a") == 0 || strcmp(info->attrs[a].name, "transpose_b") == 0)
            continue;
        if (!info->attrs[a].has_default || info->attrs[a].kind != IR_ATTR_INT ||
            v->attrs[a].i != info->attrs[a].def.i)
            return false;
    }
    return true;
}

static bool is_product(const ir_graph *g, const ir_value *v)
{
    bool op_ok = v->op == IR_OP_LINEAR || v->op == IR_OP_FUSED_LINEAR || v->op == IR_OP_FUSED_MATMUL ||
                 (v->op == IR_OP_MATMUL && plain_matmul(v));
    if (v->dead || !op_ok || !is_f32(g, v->id))
        return false;
    for (int k = 0; k < v->nops; k++)
        if (!is_f32(g, v->ops[k]))
            return false;
    return true;
}

/* The epilogue a product already has, as a chain over its operands
 * after the factors, with input 0 standing for the product itself: "$0"
 * for matmul, "$0 $1 add" for a linear with bias. */
static int product_chain(const ir_value *v, chain *c)
{
    memset(c, 0, sizeof *c);
    c->valid = true;
    c->inputs[c->ninputs++] = -1;
    if (v->op == IR_OP_FUSED_LINEAR || v->op == IR_OP_FUSED_MATMUL) {
        char err[256];
        if (ir_fused_parse_value(v, &c->program, err, sizeof err) != 0)
            return -1;
        for (int k = 2; k < v->nops; k++)
            c->inputs[c->ninputs++] = v->ops[k];
        return 0;
    }
    c->program.steps[c->program.nsteps++] = (ir_fused_step){IR_OP_INPUT, 0, 0.0};
    if (v->op == IR_OP_LINEAR && v->nops == 3) {
        c->inputs[c->ninputs++] = v->ops[2];
        c->program.steps[c->program.nsteps++] = (ir_fused_step){IR_OP_INPUT, 1, 0.0};
        c->program.steps[c->program.nsteps++] = (ir_fused_step){IR_OP_ADD, 0, 0.0};
    }
    return 0;
}

/* Returns the chain input of value i that is a product it can absorb, or
 * -1. */
static int absorbable_product(const fuse_state *s, int i)
{
    const ir_graph *g = s->g;
    const chain *c = &s->chains[i];
    for (int k = 0; k < c->ninputs; k++) {
        int id = c->inputs[k];
        const ir_value *p = g->values[id];
        if (is_product(g, p) && s->uses[id] == 1 && !s->is_output[id] && s->runtime[id] == s->runtime[i] &&
            ir_type_equal(&p->type, &g->values[i]->type))
            return k;
    }
    return -1;
}

/* Builds in `out` the chain of value i with its product input `which`
 * replaced by the product's own epilogue, so input 0 of `out` is the
 * product. Returns -1 when it exceeds the step or input limit. */
static int fold_product(const fuse_state *s, int i, int which, chain *out)
{
    const chain *c = &s->chains[i];
    chain inner;
    if (product_chain(s->g->values[c->inputs[which]], &inner) != 0)
        return -1;
    memset(out, 0, sizeof *out);
    out->valid = true;
    out->inputs[out->ninputs++] = -1; /* the product */
    for (int t = 0; t < c->program.nsteps; t++) {
        const ir_fused_step *step = &c->program.steps[t];
        if (step->op != IR_OP_INPUT) {
            if (out->program.nsteps == IR_FUSED_MAX_STEPS)
                return -1;
            out->program.steps[out->program.nsteps++] = *step;
            continue;
        }
        if (step->input != which) {
            if (push_input(out, c->inputs[step->input], s->max_inputs) != 0)
                return -1;
            continue;
        }
        for (int u = 0; u < inner.program.nsteps; u++) {
            const ir_fused_step *is = &inner.program.steps[u];
            if (is->op != IR_OP_INPUT) {
                if (out->program.nsteps == IR_FUSED_MAX_STEPS)
                    return -1;
                out->program.steps[out->program.nsteps++] = *is;
            } else if (push_input(out, inner.inputs[is->input], s->max_inputs) != 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* Replaces value i by a fused product over product p's factors and the
 * epilogue inputs of c, in i's place, and kills p (its only use was in
 * the chain). */
static int materialize_product(fuse_state *s, int i, int p, const chain *c, ir_diag *d)
{
    ir_graph *g = s->g;
    const ir_value *pv = g->values[p];
    char text[IR_FUSED_MAX_STEPS * 32];
    if (ir_fused_format(&c->program, text, sizeof text) < 0) {
        ir_diag_error(d, g->values[i]->loc, "the program of value '%s' is too long to print",
                      g->values[i]->name);
        return -1;
    }
    bool is_matmul = pv->op == IR_OP_MATMUL || pv->op == IR_OP_FUSED_MATMUL;
    ir_op op = is_matmul ? IR_OP_FUSED_MATMUL : IR_OP_FUSED_LINEAR;
    ir_attrs attrs = ir_attrs_for(op);
    ir_attrs_str(&attrs, "program", text);
    if (is_matmul) {
        ir_attrs_int(&attrs, "transpose_a", ir_attr_int(pv, "transpose_a"));
        ir_attrs_int(&attrs, "transpose_b", ir_attr_int(pv, "transpose_b"));
    }
    int operands[IR_FUSED_MAX_INPUTS + 1] = {pv->ops[0], pv->ops[1]};
    for (int k = 1; k < c->ninputs; k++)
        operands[k + 1] = c->inputs[k];
    int fused = ir_add(g, op, g->values[i]->name, operands, c->ninputs + 1, &attrs, g->values[i]->loc);
    ir_attrs_clear(&attrs);
    if (fused < 0)
        return -1;
    g->values[p]->dead = true;
    return take_place(g, i, fused);
}

int pass_fuse_elementwise(ir_graph *g, const pass_options *opts, ir_diag *d)
{
    int n = g->nvalues;
    fuse_state s = {g, NULL, NULL, NULL, NULL, NULL, 0, pass_option_bool(opts, "epilogue", true)};
    int64_t max_inputs = pass_option_int(opts, "max-inputs", IR_FUSED_MAX_INPUTS);
    if (max_inputs < 1 || max_inputs > IR_FUSED_MAX_INPUTS) {
        ir_diag_error(d, (ir_loc){0}, "max-inputs=%lld is out of range; use 1 to %d",
                      (long long)max_inputs, IR_FUSED_MAX_INPUTS);
        return -1;
    }
    s.max_inputs = (int)max_inputs;
    s.chains = calloc((size_t)n + 1, sizeof *s.chains);
    s.uses = ir_use_counts(g);
    s.is_output = calloc((size_t)n + 1, sizeof *s.is_output);
    s.runtime = calloc((size_t)n + 1, sizeof *s.runtime);
    s.absorbed = calloc((size_t)n + 1, sizeof *s.absorbed);
    int rc = 0;
    if (!s.chains || !s.uses || !s.is_output || !s.runtime || !s.absorbed) {
        ir_diag_error(d, (ir_loc){0}, "out of memory for %d values", n);
        rc = -1;
    }
    for (int i = 0; rc == 0 && i < g->noutputs; i++)
        s.is_output[g->outputs[i]] = true;
    if (rc == 0)
        rc = plan_chains(&s);

    /* Only the last value of a chain becomes a fused op; the values that
     * joined it lose their only use and die. */
    for (int i = 0; rc == 0 && i < n; i++) {
        if (s.absorbed[i]) {
            g->values[i]->dead = true;
            continue;
        }
        if (!s.chains[i].valid)
            continue;
        int which = s.epilogue ? absorbable_product(&s, i) : -1;
        chain folded;
        if (which >= 0 && fold_product(&s, i, which, &folded) == 0)
            rc = materialize_product(&s, i, s.chains[i].inputs[which], &folded, d);
        else if (s.chains[i].merged)
            rc = materialize(&s, i, d);
    }
    free(s.chains);
    free(s.uses);
    free(s.is_output);
    free(s.runtime);
    free(s.absorbed);
    return rc;
}
