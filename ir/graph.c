/* Graph construction: values, unique names, attributes, use rewriting and
 * compaction back to topological order. */
#include "ir/ir.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Open-addressing table from value name to value id. */
typedef struct ir_name_table {
    char **keys;
    int *ids;
    int cap;
    int count;
} ir_name_table;

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int names_grow(ir_name_table *t);

static int names_put(ir_name_table *t, char *key, int id)
{
    if ((t->count + 1) * 2 > t->cap && names_grow(t) != 0)
        return -1;
    uint64_t i = hash_name(key) & (uint64_t)(t->cap - 1);
    while (t->keys[i])
        i = (i + 1) & (uint64_t)(t->cap - 1);
    t->keys[i] = key;
    t->ids[i] = id;
    t->count++;
    return 0;
}

static int names_grow(ir_name_table *t)
{
    int cap = t->cap ? t->cap * 2 : 256;
    ir_name_table bigger = {calloc((size_t)cap, sizeof(char *)), calloc((size_t)cap, sizeof(int)), cap, 0};
    if (!bigger.keys || !bigger.ids) {
        free(bigger.keys);
        free(bigger.ids);
        return -1;
    }
    for (int i = 0; i < t->cap; i++)
        if (t->keys[i])
            names_put(&bigger, t->keys[i], t->ids[i]);
    free(t->keys);
    free(t->ids);
    *t = bigger;
    return 0;
}

static int names_get(const ir_name_table *t, const char *key)
{
    if (!t->cap)
        return -1;
    uint64_t i = hash_name(key) & (uint64_t)(t->cap - 1);
    while (t->keys[i]) {
        if (strcmp(t->keys[i], key) == 0)
            return t->ids[i];
        i = (i + 1) & (uint64_t)(t->cap - 1);
    }
    return -1;
}

static void names_rebuild(ir_graph *g)
{
    ir_name_table *t = g->names;
    free(t->keys);
    free(t->ids);
    memset(t, 0, sizeof *t);
    for (int i = 0; i < g->nvalues; i++)
        names_put(t, g->values[i]->name, i);
}

ir_graph *ir_graph_new(const char *name, ir_diag *d)
{
    ir_graph *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->name = strdup(name ? name : "model");
    g->diag = d;
    g->names = calloc(1, sizeof(ir_name_table));
    return g;
}

static void attr_free(ir_attr *a)
{
    free(a->s);
    a->s = NULL;
}

static void value_free(ir_value *v)
{
    if (!v)
        return;
    for (int i = 0; i < IR_MAX_ATTRS; i++)
        attr_free(&v->attrs[i]);
    free(v->name);
    free(v->ops);
    free(v);
}

void ir_graph_free(ir_graph *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->nvalues; i++)
        value_free(g->values[i]);
    for (int i = 0; i < g->nhparams; i++)
        free(g->hparams[i].name);
    if (g->names) {
        free(g->names->keys);
        free(g->names->ids);
        free(g->names);
    }
    free(g->hparams);
    free(g->values);
    free(g->outputs);
    free(g->name);
    free(g);
}

static void attr_copy(ir_attr *dst, const ir_attr *src)
{
    *dst = *src;
    dst->s = src->s ? strdup(src->s) : NULL;
}

ir_graph *ir_graph_clone(const ir_graph *g)
{
    ir_graph *c = ir_graph_new(g->name, g->diag);
    if (!c)
        return NULL;
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        ir_value *n = calloc(1, sizeof *n);
        *n = *v;
        n->name = strdup(v->name);
        n->ops = malloc(sizeof(int) * (size_t)(v->nops ? v->nops : 1));
        memcpy(n->ops, v->ops, sizeof(int) * (size_t)v->nops);
        for (int a = 0; a < IR_MAX_ATTRS; a++)
            attr_copy(&n->attrs[a], &v->attrs[a]);
        if (c->nvalues == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 64;
            c->values = realloc(c->values, sizeof(ir_value *) * (size_t)c->cap);
        }
        c->values[c->nvalues++] = n;
        names_put(c->names, n->name, n->id);
    }
    for (int i = 0; i < g->noutputs; i++)
        ir_add_output(c, g->outputs[i]);
    for (int i = 0; i < g->nhparams; i++)
        ir_set_hparam(c, g->hparams[i].name, g->hparams[i].value);
    return c;
}

ir_attrs ir_attrs_for(ir_op op)
{
    ir_attrs a;
    memset(&a, 0, sizeof a);
    a.op = op;
    const ir_op_info *info = ir_op_get(op);
    for (int i = 0; i < info->nattrs; i++)
        if (info->attrs[i].has_default)
            attr_copy(&a.a[i], &info->attrs[i].def);
    return a;
}

void ir_attrs_clear(ir_attrs *a)
{
    for (int i = 0; i < IR_MAX_ATTRS; i++)
        attr_free(&a->a[i]);
}

static ir_attr *attr_slot(ir_attrs *a, const char *name, ir_attr_kind kind)
{
    int i = ir_op_attr_index(a->op, name);
    if (i < 0 || ir_op_get(a->op)->attrs[i].kind != kind)
        return NULL;
    return &a->a[i];
}

int ir_attrs_int(ir_attrs *a, const char *name, int64_t v)
{
    ir_attr *s = attr_slot(a, name, IR_ATTR_INT);
    if (!s)
        return -1;
    s->set = true;
    s->i = v;
    return 0;
}

int ir_attrs_float(ir_attrs *a, const char *name, double v)
{
    ir_attr *s = attr_slot(a, name, IR_ATTR_FLOAT);
    if (!s)
        return -1;
    s->set = true;
    s->f = v;
    return 0;
}

int ir_attrs_ints(ir_attrs *a, const char *name, const int64_t *v, int n)
{
    ir_attr *s = attr_slot(a, name, IR_ATTR_INTS);
    if (!s || n < 0 || n > IR_MAX_RANK)
        return -1;
    s->set = true;
    s->nints = n;
    memcpy(s->ints, v, sizeof(int64_t) * (size_t)n);
    return 0;
}

int ir_attrs_str(ir_attrs *a, const char *name, const char *v)
{
    ir_attr *s = attr_slot(a, name, IR_ATTR_STR);
    if (!s)
        return -1;
    free(s->s);
    s->set = true;
    s->s = strdup(v);
    return 0;
}

int ir_find(const ir_graph *g, const char *name)
{
    return names_get(g->names, name);
}

/* Returns a malloc'd name that is not yet taken: `base` itself, or
 * base.1, base.2, ... ; numeric names for anonymous values. */
static char *unique_name(ir_graph *g, const char *base)
{
    char buf[512];
    if (!base || !*base) {
        for (int n = g->nvalues;; n++) {
            snprintf(buf, sizeof buf, "%d", n);
            if (names_get(g->names, buf) < 0)
                return strdup(buf);
        }
    }
    if (names_get(g->names, base) < 0)
        return strdup(base);
    for (int n = 1;; n++) {
        snprintf(buf, sizeof buf, "%.480s.%d", base, n);
        if (names_get(g->names, buf) < 0)
            return strdup(buf);
    }
}

static int append_value(ir_graph *g, ir_op op, const char *name, const int *operands, int nops,
                        const ir_attrs *attrs, const ir_type *type, ir_loc loc)
{
    ir_value *v = calloc(1, sizeof *v);
    if (!v)
        return -1;
    v->id = g->nvalues;
    v->op = op;
    v->name = unique_name(g, name);
    v->type = *type;
    v->nops = nops;
    v->ops = malloc(sizeof(int) * (size_t)(nops ? nops : 1));
    if (nops)
        memcpy(v->ops, operands, sizeof(int) * (size_t)nops);
    if (attrs) {
        for (int i = 0; i < IR_MAX_ATTRS; i++)
            attr_copy(&v->attrs[i], &attrs->a[i]);
    } else {
        ir_attrs defaults = ir_attrs_for(op);
        memcpy(v->attrs, defaults.a, sizeof v->attrs);
    }
    v->loc = loc;
    if (g->nvalues == g->cap) {
        int cap = g->cap ? g->cap * 2 : 64;
        ir_value **grown = realloc(g->values, sizeof(ir_value *) * (size_t)cap);
        if (!grown) {
            value_free(v);
            return -1;
        }
        g->values = grown;
        g->cap = cap;
    }
    g->values[g->nvalues++] = v;
    names_put(g->names, v->name, v->id);
    return v->id;
}

/* Checks that every required attribute is present. */
static int check_attrs(ir_graph *g, ir_op op, const ir_attrs *attrs, ir_loc loc)
{
    const ir_op_info *info = ir_op_get(op);
    ir_attrs defaults;
    if (!attrs) {
        defaults = ir_attrs_for(op);
        attrs = &defaults;
    }
    int bad = 0;
    for (int i = 0; i < info->nattrs; i++) {
        if (!attrs->a[i].set) {
            ir_diag_error(g->diag, loc, "op '%s' needs attribute '%s'", info->name, info->attrs[i].name);
            bad = 1;
        }
    }
    if (attrs == &defaults)
        ir_attrs_clear(&defaults);
    return bad ? -1 : 0;
}

int ir_add_leaf(ir_graph *g, ir_op op, const char *name, ir_type type, const ir_attrs *attrs, ir_loc loc)
{
    if (!(ir_op_get(op)->flags & IR_OPF_LEAF)) {
        ir_diag_error(g->diag, loc, "op '%s' is not a leaf", ir_op_get(op)->name);
        return -1;
    }
    if (check_attrs(g, op, attrs, loc) != 0)
        return -1;
    return append_value(g, op, name, NULL, 0, attrs, &type, loc);
}

static int infer_checked(ir_graph *g, ir_op op, const int *operands, int nops, const ir_attrs *attrs,
                         ir_type *out, ir_loc loc)
{
    const ir_op_info *info = ir_op_get(op);
    if (info->flags & IR_OPF_LEAF) {
        ir_diag_error(g->diag, loc, "op '%s' takes a type, not operands", info->name);
        return -1;
    }
    if (nops < info->min_operands || (info->max_operands >= 0 && nops > info->max_operands)) {
        if (info->min_operands == info->max_operands)
            ir_diag_error(g->diag, loc, "op '%s' takes %d operand%s, got %d", info->name,
                          info->min_operands, info->min_operands == 1 ? "" : "s", nops);
        else if (info->max_operands < 0)
            ir_diag_error(g->diag, loc, "op '%s' takes at least %d operand%s, got %d", info->name,
                          info->min_operands, info->min_operands == 1 ? "" : "s", nops);
        else
            ir_diag_error(g->diag, loc, "op '%s' takes %d to %d operands, got %d", info->name,
                          info->min_operands, info->max_operands, nops);
        return -1;
    }
    if (nops > 64) {
        ir_diag_error(g->diag, loc, "op '%s' has %d operands; at most 64 are supported", info->name, nops);
        return -1;
    }
    const ir_type *types[64];
    for (int i = 0; i < nops; i++) {
        if (operands[i] < 0 || operands[i] >= g->nvalues) {
            ir_diag_error(g->diag, loc, "op '%s': operand %d refers to no value", info->name, i);
            return -1;
        }
        types[i] = &g->values[operands[i]]->type;
    }
    if (check_attrs(g, op, attrs, loc) != 0)
        return -1;
    ir_attrs defaults;
    if (!attrs) {
        defaults = ir_attrs_for(op);
        attrs = &defaults;
    }
    char err[512];
    int rc = ir_infer_type(op, types, nops, attrs->a, out, err, sizeof err);
    if (attrs == &defaults)
        ir_attrs_clear(&defaults);
    if (rc != 0) {
        ir_diag_error(g->diag, loc, "%s: %s", info->name, err);
        return -1;
    }
    return 0;
}

int ir_add(ir_graph *g, ir_op op, const char *name, const int *operands, int nops,
           const ir_attrs *attrs, ir_loc loc)
{
    ir_type type;
    if (infer_checked(g, op, operands, nops, attrs, &type, loc) != 0)
        return -1;
    return append_value(g, op, name, operands, nops, attrs, &type, loc);
}

int ir_add_typed(ir_graph *g, ir_op op, const char *name, const int *operands, int nops,
                 const ir_attrs *attrs, const ir_type *type, ir_loc loc)
{
    if (ir_op_get(op)->flags & IR_OPF_LEAF)
        return ir_add_leaf(g, op, name, *type, attrs, loc);
    ir_type inferred;
    if (infer_checked(g, op, operands, nops, attrs, &inferred, loc) != 0)
        return -1;
    if (!ir_type_equal(&inferred, type)) {
        char a[128], b[128];
        ir_diag_error(g->diag, loc, "%s: result type is written as %s but the operands give %s",
                      ir_op_get(op)->name, ir_type_str(type, a, sizeof a), ir_type_str(&inferred, b, sizeof b));
        return -1;
    }
    return append_value(g, op, name, operands, nops, attrs, type, loc);
}

int ir_add_output(ir_graph *g, int value)
{
    int *grown = realloc(g->outputs, sizeof(int) * (size_t)(g->noutputs + 1));
    if (!grown)
        return -1;
    g->outputs = grown;
    g->outputs[g->noutputs++] = value;
    return 0;
}

int ir_set_hparam(ir_graph *g, const char *name, int64_t value)
{
    for (int i = 0; i < g->nhparams; i++) {
        if (strcmp(g->hparams[i].name, name) == 0) {
            g->hparams[i].value = value;
            return 0;
        }
    }
    ir_hparam *grown = realloc(g->hparams, sizeof(ir_hparam) * (size_t)(g->nhparams + 1));
    if (!grown)
        return -1;
    g->hparams = grown;
    g->hparams[g->nhparams].name = strdup(name);
    g->hparams[g->nhparams].value = value;
    g->nhparams++;
    return 0;
}

static const ir_attr *find_attr(const ir_value *v, const char *name)
{
    int i = ir_op_attr_index(v->op, name);
    return i < 0 ? NULL : &v->attrs[i];
}

int64_t ir_attr_int(const ir_value *v, const char *name)
{
    const ir_attr *a = find_attr(v, name);
    return a ? a->i : 0;
}

double ir_attr_float(const ir_value *v, const char *name)
{
    const ir_attr *a = find_attr(v, name);
    return a ? a->f : 0.0;
}

const int64_t *ir_attr_ints(const ir_value *v, const char *name, int *n)
{
    const ir_attr *a = find_attr(v, name);
    *n = a ? a->nints : 0;
    return a ? a->ints : NULL;
}

const char *ir_attr_str(const ir_value *v, const char *name)
{
    const ir_attr *a = find_attr(v, name);
    return a ? a->s : NULL;
}

void ir_replace_uses(ir_graph *g, int from, int to)
{
    for (int i = 0; i < g->nvalues; i++) {
        ir_value *v = g->values[i];
        if (v->id == to)
            continue; /* never make a value its own operand */
        for (int k = 0; k < v->nops; k++)
            if (v->ops[k] == from)
                v->ops[k] = to;
    }
    for (int i = 0; i < g->noutputs; i++)
        if (g->outputs[i] == from)
            g->outputs[i] = to;
}

int ir_only_user(const ir_graph *g, int id, int *slot)
{
    for (int i = 0; i < g->noutputs; i++)
        if (g->outputs[i] == id)
            return -1;
    int user = -1;
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (v->dead)
            continue;
        for (int k = 0; k < v->nops; k++) {
            if (v->ops[k] != id)
                continue;
            if (user >= 0)
                return -1;
            user = i;
            if (slot)
                *slot = k;
        }
    }
    return user;
}

int *ir_use_counts(const ir_graph *g)
{
    int *uses = calloc((size_t)(g->nvalues ? g->nvalues : 1), sizeof(int));
    if (!uses)
        return NULL;
    for (int i = 0; i < g->nvalues; i++)
        for (int k = 0; k < g->values[i]->nops; k++)
            uses[g->values[i]->ops[k]]++;
    for (int i = 0; i < g->noutputs; i++)
        uses[g->outputs[i]]++;
    return uses;
}

/* Depth-first placement: a value goes after all of its operands, and values
 * keep their relative order otherwise. */
static int place(ir_graph *g, int id, int *state, int *order, int *n)
{
    if (state[id] == 2)
        return 0;
    if (state[id] == 1)
        return -1;
    state[id] = 1;
    ir_value *v = g->values[id];
    for (int k = 0; k < v->nops; k++)
        if (place(g, v->ops[k], state, order, n) != 0)
            return -1;
    state[id] = 2;
    order[(*n)++] = id;
    return 0;
}

int ir_graph_compact(ir_graph *g)
{
    int nv = g->nvalues;
    size_t slots = nv > 0 ? (size_t)nv : 1;
    int *state = calloc(slots, sizeof(int));
    int *order = malloc(sizeof(int) * slots);
    int *remap = malloc(sizeof(int) * slots);
    int n = 0, rc = 0;
    for (int i = 0; i < nv && rc == 0; i++)
        if (!g->values[i]->dead)
            rc = place(g, i, state, order, &n);
    if (rc != 0) {
        free(state);
        free(order);
        free(remap);
        return -1;
    }
    for (int i = 0; i < nv; i++)
        remap[i] = -1;
    ir_value **values = malloc(sizeof(ir_value *) * slots);
    for (int i = 0; i < n; i++) {
        values[i] = g->values[order[i]];
        remap[order[i]] = i;
    }
    for (int i = 0; i < nv; i++)
        if (remap[i] < 0)
            value_free(g->values[i]);
    for (int i = 0; i < n; i++) {
        values[i]->id = i;
        for (int k = 0; k < values[i]->nops; k++)
            values[i]->ops[k] = remap[values[i]->ops[k]];
    }
    for (int i = 0; i < g->noutputs; i++)
        g->outputs[i] = remap[g->outputs[i]];
    free(g->values);
    g->values = values;
    g->nvalues = n;
    g->cap = (int)slots;
    names_rebuild(g);
    free(state);
    free(order);
    free(remap);
    return 0;
}
