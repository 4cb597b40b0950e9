/* Common subexpression elimination: two pure values with the same op,
 * operands, attributes and result type compute the same tensor, so the
 * later one is replaced by the earlier. Params and inputs are not pure and
 * are never merged; equal constants are. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "passes/manager.h"

static_assert(PASS_CSE < PASS_COUNT, "pass_cse needs an entry in passes/passes.def");

static uint64_t mix(uint64_t h, uint64_t x)
{
    return (h ^ x) * 1099511628211ull;
}

static uint64_t hash_value(const ir_value *v)
{
    const ir_op_info *info = ir_op_get(v->op);
    uint64_t h = 1469598103934665603ull;
    h = mix(h, (uint64_t)v->op);
    h = mix(h, (uint64_t)v->type.dtype);
    for (int i = 0; i < v->type.rank; i++)
        h = mix(h, (uint64_t)v->type.dims[i]);
    for (int k = 0; k < v->nops; k++)
        h = mix(h, (uint64_t)v->ops[k]);
    for (int a = 0; a < info->nattrs; a++) {
        const ir_attr *attr = &v->attrs[a];
        uint64_t bits;
        switch (info->attrs[a].kind) {
        case IR_ATTR_INT:
            h = mix(h, (uint64_t)attr->i);
            break;
        case IR_ATTR_FLOAT:
            memcpy(&bits, &attr->f, sizeof bits);
            h = mix(h, bits);
            break;
        case IR_ATTR_INTS:
            for (int k = 0; k < attr->nints; k++)
                h = mix(h, (uint64_t)attr->ints[k]);
            break;
        case IR_ATTR_STR:
            for (const char *s = attr->s ? attr->s : ""; *s; s++)
                h = mix(h, (unsigned char)*s);
            break;
        }
    }
    return h;
}

/* Attributes compare exactly: floats by their bits, so 0.0 and -0.0 stay
 * apart and two NaN constants with the same bits merge. */
static bool attrs_equal(const ir_value *a, const ir_value *b)
{
    const ir_op_info *info = ir_op_get(a->op);
    for (int i = 0; i < info->nattrs; i++) {
        const ir_attr *x = &a->attrs[i], *y = &b->attrs[i];
        switch (info->attrs[i].kind) {
        case IR_ATTR_INT:
            if (x->i != y->i)
                return false;
            break;
        case IR_ATTR_FLOAT:
            if (memcmp(&x->f, &y->f, sizeof x->f) != 0)
                return false;
            break;
        case IR_ATTR_INTS:
            if (x->nints != y->nints || memcmp(x->ints, y->ints, sizeof(int64_t) * (size_t)x->nints) != 0)
                return false;
            break;
        case IR_ATTR_STR:
            if (strcmp(x->s ? x->s : "", y->s ? y->s : "") != 0)
                return false;
            break;
        }
    }
    return true;
}

static bool values_equal(const ir_value *a, const ir_value *b)
{
    return a->op == b->op && a->nops == b->nops && ir_type_equal(&a->type, &b->type) &&
           memcmp(a->ops, b->ops, sizeof(int) * (size_t)a->nops) == 0 && attrs_equal(a, b);
}

int pass_cse(ir_graph *g, const pass_options *opts, ir_diag *d)
{
    size_t cap = 16;
    while (cap < (size_t)g->nvalues * 2)
        cap *= 2;
    int *table = malloc(sizeof(int) * cap);                                 /* value ids, -1 empty */
    int *repl = malloc(sizeof(int) * (size_t)(g->nvalues ? g->nvalues : 1)); /* representative of each id */
    if (!table || !repl) {
        free(table);
        free(repl);
        ir_diag_error(d, (ir_loc){0}, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < cap; i++)
        table[i] = -1;

    for (int i = 0; i < g->nvalues; i++) {
        ir_value *v = g->values[i];
        repl[i] = i;
        for (int k = 0; k < v->nops; k++)
            v->ops[k] = repl[v->ops[k]];
        if (v->dead || !(ir_op_get(v->op)->flags & IR_OPF_PURE))
            continue;

        size_t slot = (size_t)hash_value(v) & (cap - 1);
        while (table[slot] >= 0 && !values_equal(g->values[table[slot]], v))
            slot = (slot + 1) & (cap - 1);
        if (table[slot] >= 0) {
            repl[i] = table[slot];
            v->dead = true;
        } else {
            table[slot] = i;
        }
    }
    for (int i = 0; i < g->noutputs; i++)
        g->outputs[i] = repl[g->outputs[i]];
    free(table);
    free(repl);
    return 0;
}
