/* The IR verifier: SSA order, operand counts, attributes, names and types.
 * It never changes the graph; each problem is one diagnostic at the value's
 * source location, naming the pass that ran last. */
#include "ir/ir.h"

#include <string.h>

static void problem(const ir_graph *g, const ir_value *v, const char *after_pass, const char *what,
                    const char *detail)
{
    if (after_pass)
        ir_diag_error(g->diag, v->loc, "IR is invalid after pass '%s': value '%s' %s%s", after_pass, v->name,
                      what, detail);
    else
        ir_diag_error(g->diag, v->loc, "IR is invalid: value '%s' %s%s", v->name, what, detail);
}

static int verify_value(const ir_graph *g, const ir_value *v, int index, const char *after_pass)
{
    const ir_op_info *info = ir_op_get(v->op);
    if (!info) {
        problem(g, v, after_pass, "has an unknown op", "");
        return 1;
    }
    if (v->id != index) {
        problem(g, v, after_pass, "has a stale id", "");
        return 1;
    }
    if (ir_find(g, v->name) != index) {
        problem(g, v, after_pass, "is not registered under its name", "");
        return 1;
    }
    if (v->nops < info->min_operands || (info->max_operands >= 0 && v->nops > info->max_operands)) {
        problem(g, v, after_pass, "has the wrong operand count for op ", info->name);
        return 1;
    }
    for (int k = 0; k < v->nops; k++) {
        if (v->ops[k] < 0 || v->ops[k] >= index) {
            problem(g, v, after_pass, "uses a value that is not defined before it", "");
            return 1;
        }
    }
    for (int a = 0; a < info->nattrs; a++) {
        if (!v->attrs[a].set) {
            problem(g, v, after_pass, "is missing attribute ", info->attrs[a].name);
            return 1;
        }
    }
    if (info->flags & IR_OPF_LEAF)
        return 0;
    const ir_type *types[64];
    if (v->nops > 64)
        return 1;
    for (int k = 0; k < v->nops; k++)
        types[k] = &g->values[v->ops[k]]->type;
    ir_type inferred;
    char err[512];
    if (ir_infer_type(v->op, types, v->nops, v->attrs, &inferred, err, sizeof err) != 0) {
        problem(g, v, after_pass, "has operands that do not type-check: ", err);
        return 1;
    }
    if (!ir_type_equal(&inferred, &v->type)) {
        char a[128], b[128], msg[300];
        snprintf(msg, sizeof msg, "%s but its operands give %s", ir_type_str(&v->type, a, sizeof a),
                 ir_type_str(&inferred, b, sizeof b));
        problem(g, v, after_pass, "has type ", msg);
        return 1;
    }
    return 0;
}

int ir_verify(const ir_graph *g, const char *after_pass)
{
    int problems = 0;
    for (int i = 0; i < g->nvalues; i++)
        problems += verify_value(g, g->values[i], i, after_pass);
    for (int i = 0; i < g->noutputs; i++) {
        if (g->outputs[i] < 0 || g->outputs[i] >= g->nvalues) {
            ir_loc none = {0};
            ir_diag_error(g->diag, none, "IR is invalid%s%s%s: graph output %d refers to no value",
                          after_pass ? " after pass '" : "", after_pass ? after_pass : "", after_pass ? "'" : "", i);
            problems++;
        }
    }
    return problems;
}
