/* Reverse-mode symbolic differentiation. The pass appends the backward graph
 * of a scalar loss to the same graph and adds one output `<param>.grad` per
 * selected parameter, in parameter order, after the existing outputs. Only
 * values that lie on a path from a selected parameter to the loss get
 * backward code. The per-op rules live in passes/grad_rules.c.
 *
 * Options: loss=NAME picks the graph output to differentiate (default: the
 * first output). wrt=all (the default), wrt=none, or a list of glob patterns
 * (fnmatch(3), where '*' also matches '.') such as wrt=h.*.ln_1.*;wte.weight
 * selects the parameters. Patterns are separated by ';' or ',', and spaces
 * around them are ignored; inside a pass's {...} options the pipeline parser
 * keeps "a,b" as one value, so both separators work in pipeline text. */
#include <assert.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes/autodiff.h"
#include "passes/manager.h"

static_assert(PASS_AUTODIFF < PASS_COUNT, "pass_autodiff needs an entry in passes/passes.def");

static bool is_float(ir_dtype t)
{
    return t == IR_F32 || t == IR_F16 || t == IR_BF16;
}

/* ---- helpers shared with the rules ---- */

void ad_name(const ad_context *c, int x, const char *tag, char *buf, size_t cap)
{
    const char *name = c->g->values[x]->name;
    if (tag)
        snprintf(buf, cap, "%s.grad.%s", name, tag);
    else
        snprintf(buf, cap, "%s.grad", name);
}

void ad_contribution_name(const ad_context *c, int x, char *buf, size_t cap)
{
    ad_name(c, x, c->needed_uses[x] > 1 ? "part" : NULL, buf, cap);
}

static int push_contribution(ad_context *c, int x, ad_contribution item)
{
    if (item.value < 0)
        return -1;
    ad_contributions *list = &c->contribs[x];
    if (list->count == list->cap) {
        int cap = list->cap ? list->cap * 2 : 4;
        ad_contribution *grown = realloc(list->items, sizeof *grown * (size_t)cap);
        if (!grown) {
            ir_diag_error(c->d, c->g->values[x]->loc, "out of memory");
            return -1;
        }
        list->items = grown;
        list->cap = cap;
    }
    list->items[list->count++] = item;
    return 0;
}

int ad_contribute(ad_context *c, int x, int value)
{
    return push_contribution(c, x, (ad_contribution){value, false, 0, 0, 0});
}

int ad_contribute_slice(ad_context *c, int x, int value, int axis, int64_t start, int64_t end)
{
    return push_contribution(c, x, (ad_contribution){value, true, axis, start, end});
}

int ad_const(ad_context *c, double value, const ir_type *type, const char *name, ir_loc loc)
{
    ir_attrs attrs = ir_attrs_for(IR_OP_CONST);
    ir_attrs_float(&attrs, "value", value);
    return ir_add_leaf(c->g, IR_OP_CONST, name, *type, &attrs, loc);
}

int ad_reshape(ad_context *c, int x, const ir_type *type, const char *name, ir_loc loc)
{
    if (x < 0)
        return -1;
    ir_type have = c->g->values[x]->type;
    have.dtype = type->dtype;
    if (ir_type_equal(&have, type))
        return x;
    ir_attrs attrs = ir_attrs_for(IR_OP_RESHAPE);
    ir_attrs_ints(&attrs, "shape", type->dims, type->rank);
    return ir_add(c->g, IR_OP_RESHAPE, name, &x, 1, &attrs, loc);
}

/* ---- summing the contributions ---- */

static int cmp_slice_start(const void *a, const void *b)
{
    const ad_contribution *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* Adds concat(zeros, pieces..., zeros) along `axis` for slice contributions
 * sorted by start that do not overlap, filling the gaps with zeros. */
static int join_slices(ad_context *c, int x, ad_contribution *pieces, int n, const char *name)
{
    const ir_value *xv = c->g->values[x];
    int axis = pieces[0].axis;
    int *operands = malloc(sizeof(int) * (size_t)(2 * n + 1));
    if (!operands) {
        ir_diag_error(c->d, xv->loc, "out of memory");
        return -1;
    }
    int count = 0;
    int64_t at = 0;
    char zero_name[512];
    ad_name(c, x, "zeros", zero_name, sizeof zero_name);
    for (int i = 0; i <= n; i++) {
        int64_t next = i < n ? pieces[i].start : xv->type.dims[axis];
        if (next > at) {
            ir_type gap = xv->type;
            gap.dims[axis] = next - at;
            operands[count++] = ad_const(c, 0.0, &gap, zero_name, xv->loc);
        }
        if (i < n) {
            operands[count++] = pieces[i].value;
            at = pieces[i].end;
        }
    }
    ir_attrs attrs = ir_attrs_for(IR_OP_CONCAT);
    ir_attrs_int(&attrs, "axis", axis);
    int id = -1;
    bool ok = true;
    for (int i = 0; i < count; i++)
        ok = ok && operands[i] >= 0;
    if (ok)
        id = ir_add(c->g, IR_OP_CONCAT, name, operands, count, &attrs, xv->loc);
    free(operands);
    return id;
}

/* True when every contribution is a slice along one axis and no two of them
 * overlap, so that one concat gives the whole gradient. */
static bool slices_tile(ad_contributions *list)
{
    for (int i = 0; i < list->count; i++)
        if (!list->items[i].is_slice || list->items[i].axis != list->items[0].axis)
            return false;
    qsort(list->items, (size_t)list->count, sizeof *list->items, cmp_slice_start);
    for (int i = 1; i < list->count; i++)
        if (list->items[i].start < list->items[i - 1].end)
            return false;
    return true;
}

/* Returns the gradient of forward value x: the sum of its contributions (the
 * one accumulate step is add), named "<x>.grad". Returns -2 when x received
 * no contribution and -1 after an error. */
static int sum_contributions(ad_context *c, int x)
{
    ad_contributions *list = &c->contribs[x];
    char name[512], part[512];
    ad_name(c, x, NULL, name, sizeof name);
    if (list->count == 0)
        return -2;
    if (slices_tile(list))
        return join_slices(c, x, list->items, list->count, name);

    int acc = -1;
    ad_name(c, x, "acc", part, sizeof part);
    for (int i = 0; i < list->count; i++) {
        int term = list->items[i].value;
        if (list->items[i].is_slice) {
            char padded[512];
            ad_name(c, x, "part", padded, sizeof padded);
            term = join_slices(c, x, &list->items[i], 1, padded);
        }
        if (term < 0)
            return -1;
        if (acc < 0) {
            acc = term;
            continue;
        }
        int operands[2] = {acc, term};
        acc = ir_add(c->g, IR_OP_ADD, i + 1 == list->count ? name : part, operands, 2, NULL,
                     c->g->values[x]->loc);
        if (acc < 0)
            return -1;
    }
    return acc;
}

/* ---- selecting the loss and the parameters ---- */

static int find_loss(ir_graph *g, const char *loss_name, ir_diag *d)
{
    ir_loc none = {0};
    if (g->noutputs == 0) {
        ir_diag_error(d, none, "graph @%s has no output to differentiate; it needs a scalar loss output", g->name);
        return -1;
    }
    int loss = g->outputs[0];
    if (loss_name) {
        loss = -1;
        for (int i = 0; i < g->noutputs && loss < 0; i++)
            if (strcmp(g->values[g->outputs[i]]->name, loss_name) == 0)
                loss = g->outputs[i];
        if (loss < 0) {
            char list[512] = "";
            int n = 0;
            for (int i = 0; i < g->noutputs && n < (int)sizeof list; i++)
                n += snprintf(list + n, sizeof list - (size_t)n, "%s%%%s", i ? ", " : "",
                              g->values[g->outputs[i]]->name);
            ir_diag_error(d, none, "loss=%s names no graph output; the outputs are %s", loss_name, list);
            return -1;
        }
    }
    const ir_value *lv = g->values[loss];
    if (ir_type_numel(&lv->type) != 1 || !is_float(lv->type.dtype)) {
        char type[128];
        ir_diag_error(d, lv->loc, "the loss %%%s has type %s, but autodiff needs a floating scalar; name "
                      "another output with autodiff{loss=NAME}", lv->name, ir_type_str(&lv->type, type, sizeof type));
        return -1;
    }
    return loss;
}

/* Appends to `out` the names of the first parameters, for error messages. */
static void list_params(const ir_graph *g, char *out, size_t cap)
{
    size_t n = 0;
    int shown = 0, total = 0;
    out[0] = '\0';
    for (int i = 0; i < g->nvalues; i++) {
        if (g->values[i]->op != IR_OP_PARAM)
            continue;
        total++;
        if (shown < 8 && n < cap) {
            n += (size_t)snprintf(out + n, cap - n, "%s@%s", shown ? ", " : "", g->values[i]->name);
            shown++;
        }
    }
    if (total == 0)
        snprintf(out, cap, "none");
    else if (total > shown && n < cap)
        snprintf(out + n, cap - n, " and %d more", total - shown);
}

/* Marks selected[i] for every parameter that `wrt` selects. Returns the
 * number selected, or -1 after reporting an error. */
static int select_params(ir_graph *g, const char *wrt, bool *selected, ir_diag *d)
{
    ir_loc none = {0};
    int count = 0;
    if (strcmp(wrt, "none") == 0)
        return 0;
    if (strcmp(wrt, "all") == 0) {
        for (int i = 0; i < g->nvalues; i++)
            if (g->values[i]->op == IR_OP_PARAM && is_float(g->values[i]->type.dtype)) {
                selected[i] = true;
                count++;
            }
        return count;
    }

    char *patterns = strdup(wrt);
    if (!patterns) {
        ir_diag_error(d, none, "out of memory");
        return -1;
    }
    int rc = 0;
    for (char *save = NULL, *p = strtok_r(patterns, ",; ", &save); p; p = strtok_r(NULL, ",; ", &save)) {
        int matched = 0;
        for (int i = 0; i < g->nvalues; i++) {
            const ir_value *v = g->values[i];
            if (v->op != IR_OP_PARAM || fnmatch(p, v->name, 0) != 0)
                continue;
            matched++;
            if (!is_float(v->type.dtype)) {
                char type[128];
                ir_diag_error(d, v->loc, "parameter @%s matches wrt pattern '%s' but has the integer type %s, "
                              "which has no gradient", v->name, p, ir_type_str(&v->type, type, sizeof type));
                rc = -1;
            }
            count += !selected[i];
            selected[i] = true;
        }
        if (matched == 0) {
            char params[512];
            list_params(g, params, sizeof params);
            ir_diag_error(d, none, "wrt pattern '%s' matches no parameter; the parameters are %s", p, params);
            rc = -1;
        }
    }
    free(patterns);
    return rc == 0 ? count : -1;
}

/* ---- the pass ---- */

/* Marks needed[] (on a path from a selected param to the loss) and counts
 * needed_uses[]. source[v] is one selected param that v depends on, found
 * through v's first operand that depends on any; error messages name it. */
static int mark_needed(ad_context *c, int loss, const bool *selected, int *source)
{
    ir_graph *g = c->g;
    bool *live = calloc((size_t)g->nvalues, sizeof(bool));
    if (!live) {
        ir_diag_error(c->d, (ir_loc){0}, "out of memory");
        return -1;
    }
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        source[i] = selected[i] ? i : -1;
        for (int k = 0; k < v->nops && source[i] < 0; k++)
            source[i] = source[v->ops[k]];
    }
    live[loss] = true;
    for (int i = loss; i >= 0; i--) {
        if (!live[i])
            continue;
        const ir_value *v = g->values[i];
        for (int k = 0; k < v->nops; k++)
            live[v->ops[k]] = true;
    }
    for (int i = 0; i < g->nvalues; i++)
        c->needed[i] = live[i] && source[i] >= 0;
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (!c->needed[i])
            continue;
        for (int k = 0; k < v->nops; k++)
            c->needed_uses[v->ops[k]] += c->needed[v->ops[k]];
    }
    free(live);
    return 0;
}

/* Reports the first needed value that no gradient can flow through: one of
 * integer type (a cast to an integer type, an integer op) or an op without
 * a gradient rule. Returns the number of such values reported (0 or 1). */
static int check_differentiable(const ad_context *c, int loss, const int *source)
{
    const ir_graph *g = c->g;
    const char *loss_name = g->values[loss]->name;
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (!c->needed[i] || v->op == IR_OP_PARAM)
            continue;
        const char *param = g->values[source[i]]->name;
        const char *op = ir_op_get(v->op)->name;
        if (!is_float(v->type.dtype)) {
            char type[128];
            ir_diag_error(c->d, v->loc, "'%s' %%%s gives the integer type %s, so no gradient flows through it, "
                          "but the loss %%%s depends on @%s through it; leave @%s out of wrt", op, v->name,
                          ir_type_str(&v->type, type, sizeof type), loss_name, param, param);
            return 1;
        }
        if (!ad_has_rule(v->op)) {
            ir_diag_error(c->d, v->loc, "'%s' %%%s has no gradient rule, but the loss %%%s depends on @%s "
                          "through it; leave @%s out of wrt", op, v->name, loss_name, param, param);
            return 1;
        }
    }
    return 0;
}

/* Walks the needed values from the loss down, summing each value's
 * contributions into its gradient and applying its rule. grad[i] gets the
 * gradient of value i, or -1 when none reached it. */
static int walk_backward(ad_context *c, int loss, int *grad)
{
    ir_graph *g = c->g;
    const ir_value *lv = g->values[loss];
    char name[512];
    ad_name(c, loss, NULL, name, sizeof name);
    int seed = ad_const(c, 1.0, &lv->type, name, lv->loc);
    if (seed < 0)
        return -1;
    for (int i = loss; i >= 0; i--) {
        if (!c->needed[i])
            continue;
        int dy = i == loss ? seed : sum_contributions(c, i);
        if (dy == -2)
            continue;
        if (dy < 0)
            return -1;
        grad[i] = dy;
        if (g->values[i]->op != IR_OP_PARAM && ad_apply_rule(c, g->values[i], dy) != 0)
            return -1;
    }
    return 0;
}

/* Adds one output per selected param, named "<param>.grad": its gradient,
 * an identity reshape when the gradient value carries another name (a rule
 * passed its upstream gradient through), or zeros when the loss does not
 * depend on the param. */
static int add_grad_outputs(ad_context *c, const bool *selected, const int *grad, int nforward)
{
    for (int i = 0; i < nforward; i++) {
        if (!selected[i])
            continue;
        const ir_value *p = c->g->values[i];
        char name[512];
        ad_name(c, i, NULL, name, sizeof name);
        int out = grad[i];
        if (out < 0)
            out = ad_const(c, 0.0, &p->type, name, p->loc);
        else if (strcmp(c->g->values[out]->name, name) != 0) {
            ir_attrs attrs = ir_attrs_for(IR_OP_RESHAPE);
            ir_attrs_ints(&attrs, "shape", p->type.dims, p->type.rank);
            out = ir_add(c->g, IR_OP_RESHAPE, name, &out, 1, &attrs, p->loc);
        }
        if (out < 0 || ir_add_output(c->g, out) != 0)
            return -1;
    }
    return 0;
}

int pass_autodiff(ir_graph *g, const pass_options *opts, ir_diag *d)
{
    int loss = find_loss(g, pass_option_str(opts, "loss", NULL), d);
    if (loss < 0)
        return -1;
    int nforward = g->nvalues;
    bool *selected = calloc((size_t)nforward, sizeof(bool));
    int *source = malloc(sizeof(int) * (size_t)nforward);
    int *grad = malloc(sizeof(int) * (size_t)nforward);
    ad_context c = {g, d, calloc((size_t)nforward, sizeof(bool)), calloc((size_t)nforward, sizeof(int)),
                    calloc((size_t)nforward, sizeof(ad_contributions))};
    int rc = -1;
    if (!selected || !source || !grad || !c.needed || !c.needed_uses || !c.contribs) {
        ir_diag_error(d, (ir_loc){0}, "out of memory");
        goto done;
    }
    for (int i = 0; i < nforward; i++)
        grad[i] = -1;

    int count = select_params(g, pass_option_str(opts, "wrt", "all"), selected, d);
    if (count < 0)
        goto done;
    if (mark_needed(&c, loss, selected, source) != 0)
        goto done;
    if (check_differentiable(&c, loss, source) != 0)
        goto done;
    if (count > 0 && walk_backward(&c, loss, grad) != 0)
        goto done;
    rc = add_grad_outputs(&c, selected, grad, nforward);

done:
    for (int i = 0; c.contribs && i < nforward; i++)
        free(c.contribs[i].items);
    free(c.contribs);
    free(c.needed_uses);
    free(c.needed);
    free(grad);
    free(source);
    free(selected);
    return rc;
}
