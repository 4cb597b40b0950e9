/* Lowering of tensor expressions to IR values: names, numeric constants,
 * op calls with their attributes, and the split sugar. Type and shape
 * errors come from ir_add at the location of the call that caused them. */
#include "frontend/lower.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* A nested call's value is named after its assignment target and its op
 * (`h0.scores.matmul`). Past this length it gets a numeric name. */
#define MAX_HINT_BYTES 200

static const char *concat3(fe_ctx *c, const char *a, const char *sep, const char *b)
{
    size_t la = strlen(a), ls = strlen(sep), lb = strlen(b);
    char *s = fe_alloc(c->arena, la + ls + lb + 1);
    memcpy(s, a, la);
    memcpy(s + la, sep, ls);
    memcpy(s + la + ls, b, lb + 1);
    return s;
}

const char *fe_ir_name(fe_ctx *c, const char *name)
{
    if (!name || !c->prefix)
        return name;
    return concat3(c, c->prefix, "", name);
}

static const char *child_hint(fe_ctx *c, const char *hint, const char *op)
{
    if (!hint || strlen(hint) + strlen(op) > MAX_HINT_BYTES)
        return NULL;
    return concat3(c, hint, ".", op);
}

bool fe_room_for_value(fe_ctx *c, ir_loc loc)
{
    if (c->g->nvalues < FE_MAX_VALUES)
        return true;
    if (!c->too_large)
        ir_diag_error(c->diag, loc, "the model has more than %d IR values; reduce the layer count or the model size",
                      FE_MAX_VALUES);
    c->too_large = true;
    return false;
}

void fe_report_undefined(fe_ctx *c, const char *what, const char *name, ir_loc loc)
{
    fe_suggestion s = fe_suggestion_start(name);
    /* After many errors the messages are no longer printed, so the search
     * for a hint is skipped to keep broken files fast. The loops stop at the
     * candidate limit too, because a file with many undefined names would
     * otherwise walk every symbol once per name. */
    if (ir_diag_error_count(c->diag) >= FE_MAX_HINTED_ERRORS)
        s.considered = FE_MAX_SUGGESTION_CANDIDATES;
    if (strcmp(what, "hparam") != 0)
        for (fe_scope *scope = c->scope; scope && s.considered < FE_MAX_SUGGESTION_CANDIDATES; scope = scope->parent)
            for (int k = 0; k < scope->nsyms && s.considered < FE_MAX_SUGGESTION_CANDIDATES; k++)
                fe_suggestion_consider(&s, scope->syms[k].name);
    for (int h = 0; h < c->nhparams && s.considered < FE_MAX_SUGGESTION_CANDIDATES; h++)
        fe_suggestion_consider(&s, c->hparams[h].name);
    if (c->index_name)
        fe_suggestion_consider(&s, c->index_name);
    if (s.best)
        ir_diag_error(c->diag, loc, "undefined %s '%s'; did you mean '%s'?", what, name, s.best);
    else
        ir_diag_error(c->diag, loc, "undefined %s '%s'", what, name);
}

const char *fe_substitute_name(fe_ctx *c, const char *text, ir_loc loc)
{
    if (!strchr(text, '{'))
        return text;
    if (!c->index_name) {
        ir_diag_error(c->diag, loc, "'%s' uses a '{...}' substitution, which is only allowed inside a block", text);
        return NULL;
    }
    char digits[32];
    snprintf(digits, sizeof digits, "%lld", (long long)c->index_value);
    size_t cap = strlen(text) * (strlen(digits) + 1) + 1;
    char *out = fe_alloc(c->arena, cap), *o = out;
    for (const char *p = text; *p;) {
        if (*p != '{') {
            *o++ = *p++;
            continue;
        }
        const char *close = strchr(p, '}');
        if (!close) {
            ir_diag_error(c->diag, loc, "'%s' has a '{' without a matching '}'", text);
            return NULL;
        }
        size_t len = (size_t)(close - p - 1);
        if (len != strlen(c->index_name) || strncmp(p + 1, c->index_name, len) != 0) {
            ir_diag_error(c->diag, loc, "'{%.*s}' in '%s' does not name the block index '%s'", (int)len, p + 1, text,
                          c->index_name);
            return NULL;
        }
        memcpy(o, digits, strlen(digits));
        o += strlen(digits);
        p = close + 1;
    }
    *o = '\0';
    return out;
}

/* Checks that a constant can be stored in `dtype` without changing it. */
static bool constant_fits(double v, ir_dtype dtype)
{
    switch (dtype) {
    case IR_F32:
    case IR_BF16:
        return fabs(v) <= FLT_MAX;
    case IR_F16:
        return fabs(v) <= 65504.0;
    case IR_I8:
        return v == floor(v) && v >= -128 && v <= 127;
    case IR_U8:
        return v == floor(v) && v >= 0 && v <= 255;
    case IR_I32:
        return v == floor(v) && v >= -2147483648.0 && v <= 2147483647.0;
    case IR_I64:
        return v == floor(v) && fabs(v) <= 9007199254740992.0;
    case IR_DTYPE_COUNT:
        break;
    }
    return false;
}

/* Adds a scalar `const` of the given dtype. */
static int make_const(fe_ctx *c, double v, ir_dtype dtype, const char *hint, ir_loc loc)
{
    if (!constant_fits(v, dtype)) {
        ir_diag_error(c->diag, loc, "constant %.9g does not fit in %s", v, ir_dtype_name(dtype));
        return -1;
    }
    if (!fe_room_for_value(c, loc))
        return -1;
    ir_attrs attrs = ir_attrs_for(IR_OP_CONST);
    ir_attrs_float(&attrs, "value", v);
    ir_type type = {dtype, 0, {0}};
    int id = ir_add_leaf(c->g, IR_OP_CONST, fe_ir_name(c, hint), type, &attrs, loc);
    ir_attrs_clear(&attrs);
    return id;
}

static int lower_number(fe_ctx *c, const fe_expr *e, const char *hint)
{
    double v;
    if (fe_eval_number(c, e, &v) != 0)
        return -1;
    return make_const(c, v, IR_F32, hint, e->loc);
}

static int lower_name(fe_ctx *c, const fe_expr *e, const char *hint)
{
    const char *name = fe_substitute_name(c, e->text, e->loc);
    if (!name)
        return -1;
    fe_sym *sym = fe_scope_lookup(c->scope, name);
    if (sym)
        return sym->id;
    if (fe_is_number(c, e))
        return lower_number(c, e, hint);
    if (fe_map_get(&c->block_index, name) >= 0) {
        ir_diag_error(c->diag, e->loc, "'%s' is a block; instantiate it with 'x = repeat %s(x) for i in 0..n;'",
                      name, name);
        return -1;
    }
    fe_report_undefined(c, "name", name, e->loc);
    return -1;
}

static void report_no_attribute(fe_ctx *c, ir_op op, const fe_arg *a)
{
    const ir_op_info *info = ir_op_get(op);
    if (info->nattrs == 0) {
        ir_diag_error(c->diag, a->key_loc, "op '%s' has no attribute '%s'; it takes no attributes", info->name,
                      a->key);
        return;
    }
    if (info->nattrs == 1) {
        ir_diag_error(c->diag, a->key_loc, "op '%s' has no attribute '%s'; its only attribute is '%s'", info->name,
                      a->key, info->attrs[0].name);
        return;
    }
    char list[160];
    int n = 0;
    for (int k = 0; k < info->nattrs; k++) {
        const char *separator = ", ";
        if (k == 0)
            separator = "";
        else if (k + 1 == info->nattrs)
            separator = " and ";
        n += snprintf(list + n, sizeof list - (size_t)n, "%s%s", separator, info->attrs[k].name);
    }
    ir_diag_error(c->diag, a->key_loc, "op '%s' has no attribute '%s'; its attributes are %s", info->name, a->key,
                  list);
}

static int eval_int_list(fe_ctx *c, const fe_arg *a, int64_t *values, int *n)
{
    *n = 0;
    if (a->value->kind != FE_EXPR_LIST)
        return fe_eval_int(c, a->value, &values[(*n)++]);
    for (const fe_arg *item = a->value->args; item; item = item->next) {
        if (*n == IR_MAX_RANK) {
            ir_diag_error(c->diag, a->value->loc, "attribute '%s' has more than %d entries", a->key, IR_MAX_RANK);
            return -1;
        }
        if (fe_eval_int(c, item->value, &values[(*n)++]) != 0)
            return -1;
    }
    return 0;
}

/* Evaluates `key=value` into the attribute slot of the same name. */
static int set_attr(fe_ctx *c, ir_op op, ir_attrs *attrs, bool *seen, const fe_arg *a)
{
    const ir_op_info *info = ir_op_get(op);
    int slot = ir_op_attr_index(op, a->key);
    if (slot < 0) {
        report_no_attribute(c, op, a);
        return -1;
    }
    if (seen[slot]) {
        ir_diag_error(c->diag, a->key_loc, "attribute '%s' is given twice", a->key);
        return -1;
    }
    seen[slot] = true;
    int64_t i, list[IR_MAX_RANK];
    double f;
    int n;
    switch (info->attrs[slot].kind) {
    case IR_ATTR_INT:
        if (fe_eval_int(c, a->value, &i) != 0)
            return -1;
        return ir_attrs_int(attrs, a->key, i);
    case IR_ATTR_FLOAT:
        if (fe_eval_number(c, a->value, &f) != 0)
            return -1;
        return ir_attrs_float(attrs, a->key, f);
    case IR_ATTR_INTS:
        if (eval_int_list(c, a, list, &n) != 0)
            return -1;
        return ir_attrs_ints(attrs, a->key, list, n);
    case IR_ATTR_STR:
        if (a->value->kind != FE_EXPR_STRING) {
            ir_diag_error(c->diag, a->value->loc, "attribute '%s' of op '%s' takes a string, like %s=\"f16\"", a->key,
                          info->name, a->key);
            return -1;
        }
        return ir_attrs_str(attrs, a->key, a->value->text);
    }
    return -1;
}

/* Multiplies the entries of a new shape as the IR's shape rules will,
 * rejecting entries and products that would overflow there. */
static int check_shape_attr(fe_ctx *c, ir_op op, const ir_attrs *attrs, ir_loc loc)
{
    if (op != IR_OP_RESHAPE && op != IR_OP_BROADCAST)
        return 0;
    const ir_attr *shape = &attrs->a[ir_op_attr_index(op, "shape")];
    int64_t numel = 1;
    for (int k = 0; k < shape->nints; k++) {
        int64_t d = shape->ints[k];
        if (d == -1 && op == IR_OP_RESHAPE)
            continue;
        if (d < 1 || d > FE_MAX_DIM) {
            ir_diag_error(c->diag, loc, "shape entry %d is %lld; entries must be between 1 and %lld%s", k,
                          (long long)d, (long long)FE_MAX_DIM, op == IR_OP_RESHAPE ? ", or -1 once" : "");
            return -1;
        }
        if (__builtin_mul_overflow(numel, d, &numel) || numel > FE_MAX_NUMEL) {
            ir_diag_error(c->diag, loc, "shape has more than %lld elements", (long long)FE_MAX_NUMEL);
            return -1;
        }
    }
    return 0;
}

static int check_numel(fe_ctx *c, int id, ir_loc loc)
{
    const ir_type *t = &c->g->values[id]->type;
    int64_t numel = 1;
    for (int k = 0; k < t->rank; k++) {
        if (__builtin_mul_overflow(numel, t->dims[k], &numel) || numel > FE_MAX_NUMEL) {
            char buf[160];
            ir_diag_error(c->diag, loc, "result %s has more than %lld elements", ir_type_str(t, buf, sizeof buf),
                          (long long)FE_MAX_NUMEL);
            return -1;
        }
    }
    return id;
}

enum { MAX_OPERANDS = 64 };

/* Lowers the operands of a call. Number operands become scalar constants
 * of the dtype of the first tensor operand, so `mul(x, 0.5)` works for an
 * f16 x too. Returns the operand count, or -1. */
static int lower_operands(fe_ctx *c, const fe_expr *e, const char *hint, int *ids)
{
    const fe_arg *numbers[MAX_OPERANDS];
    int n = 0;
    bool failed = false;
    ir_dtype dtype = IR_DTYPE_COUNT;
    for (const fe_arg *a = e->args; a; a = a->next) {
        if (a->key)
            continue;
        if (n == MAX_OPERANDS) {
            ir_diag_error(c->diag, a->value->loc, "op '%s' has more than %d operands", e->text, MAX_OPERANDS);
            return -1;
        }
        numbers[n] = fe_is_number(c, a->value) ? a : NULL;
        const char *op = a->value->kind == FE_EXPR_CALL ? a->value->text : "in";
        ids[n] = numbers[n] ? -1 : fe_lower_expr(c, a->value, child_hint(c, hint, op));
        if (!numbers[n] && ids[n] < 0)
            failed = true;
        else if (!numbers[n] && dtype == IR_DTYPE_COUNT)
            dtype = c->g->values[ids[n]]->type.dtype;
        n++;
    }
    for (int k = 0; k < n && !failed; k++) {
        if (!numbers[k])
            continue;
        double v;
        if (fe_eval_number(c, numbers[k]->value, &v) != 0)
            return -1;
        ids[k] = make_const(c, v, dtype == IR_DTYPE_COUNT ? IR_F32 : dtype, child_hint(c, hint, "const"),
                            numbers[k]->value->loc);
        if (ids[k] < 0)
            return -1;
    }
    return failed ? -1 : n;
}

static ir_op resolve_op(fe_ctx *c, const fe_expr *e)
{
    ir_op op = ir_op_from_name(e->text);
    if (op != IR_OP_COUNT && (ir_op_get(op)->flags & IR_OPF_LEAF)) {
        ir_diag_error(c->diag, e->loc, "'%s' is a declaration, not an op; write '%s NAME : f32[...];'", e->text,
                      e->text);
        return IR_OP_COUNT;
    }
    if (op != IR_OP_COUNT)
        return op;
    if (strcmp(e->text, "split") == 0) {
        ir_diag_error(c->diag, e->loc, "split returns several values; assign them with 'q, k, v = split(x, "
                      "axis=-1, sections=3);'");
    } else if (fe_map_get(&c->block_index, e->text) >= 0) {
        ir_diag_error(c->diag, e->loc, "'%s' is a block; instantiate it with 'x = repeat %s(x) for i in 0..n;'",
                      e->text, e->text);
    } else {
        const char *close = ir_op_suggest(e->text);
        if (close)
            ir_diag_error(c->diag, e->loc, "unknown op '%s'; did you mean '%s'?", e->text, close);
        else
            ir_diag_error(c->diag, e->loc, "unknown op '%s'", e->text);
    }
    return IR_OP_COUNT;
}

static int lower_call(fe_ctx *c, const fe_expr *e, const char *hint)
{
    if (ir_op_from_name(e->text) == IR_OP_COUNT && fe_is_number(c, e))
        return lower_number(c, e, hint);
    ir_op op = resolve_op(c, e);
    if (op == IR_OP_COUNT)
        return -1;
    ir_attrs attrs = ir_attrs_for(op);
    bool seen[IR_MAX_ATTRS] = {false}, failed = false, keyword_seen = false;
    for (const fe_arg *a = e->args; a; a = a->next) {
        if (!a->key && keyword_seen) {
            ir_diag_error(c->diag, a->value->loc, "operand after an attribute; write the operands first");
            failed = true;
        }
        if (a->key) {
            keyword_seen = true;
            if (set_attr(c, op, &attrs, seen, a) != 0)
                failed = true;
        }
    }
    int ids[MAX_OPERANDS];
    int n = failed ? -1 : lower_operands(c, e, hint, ids);
    int id = -1;
    if (n >= 0 && check_shape_attr(c, op, &attrs, e->loc) == 0 && fe_room_for_value(c, e->loc))
        id = ir_add(c->g, op, fe_ir_name(c, hint), ids, n, &attrs, e->loc);
    ir_attrs_clear(&attrs);
    return id < 0 ? -1 : check_numel(c, id, e->loc);
}

/* Returns the op that does for tensors what `op` does for numbers, or
 * NULL when there is none (`%`). */
static const char *tensor_op_for(char op)
{
    switch (op) {
    case '+': return "add";
    case '-': return "sub";
    case '*': return "mul";
    case '/': return "div";
    default: return NULL;
    }
}

int fe_lower_expr(fe_ctx *c, const fe_expr *e, const char *hint)
{
    switch (e->kind) {
    case FE_EXPR_ERROR:
        return -1;
    case FE_EXPR_STRING:
        ir_diag_error(c->diag, e->loc, "a string is not a tensor; strings are attribute values like to=\"f16\"");
        return -1;
    case FE_EXPR_LIST:
        ir_diag_error(c->diag, e->loc, "a list is not a tensor; lists are attribute values like perm=[0, 2, 1, 3]");
        return -1;
    case FE_EXPR_NAME:
        return lower_name(c, e, hint);
    case FE_EXPR_CALL:
        return lower_call(c, e, hint);
    case FE_EXPR_INT:
    case FE_EXPR_FLOAT:
    case FE_EXPR_NEG:
    case FE_EXPR_BINARY:
        if (fe_is_number(c, e))
            return lower_number(c, e, hint);
        if (e->kind == FE_EXPR_NEG) {
            ir_diag_error(c->diag, e->loc, "'-' negates numbers only; use neg(x) for a tensor");
            return -1;
        }
        if (!tensor_op_for(e->op))
            ir_diag_error(c->diag, e->loc, "operator '%c' applies to numbers only", e->op);
        else
            ir_diag_error(c->diag, e->loc, "operator '%c' applies to numbers only; use %s(a, b) for tensors", e->op,
                          tensor_op_for(e->op));
        return -1;
    }
    return -1;
}

/* Reads the operand and the axis/sections attributes of a split call. */
static int split_args(fe_ctx *c, const fe_expr *call, const fe_expr **operand, int64_t *axis, int64_t *sections)
{
    int noperands = 0;
    for (const fe_arg *a = call->args; a; a = a->next) {
        if (!a->key) {
            *operand = a->value;
            noperands++;
        } else if (strcmp(a->key, "axis") == 0) {
            if (fe_eval_int(c, a->value, axis) != 0)
                return -1;
        } else if (strcmp(a->key, "sections") == 0) {
            if (fe_eval_int(c, a->value, sections) != 0)
                return -1;
        } else {
            ir_diag_error(c->diag, a->key_loc, "split has no attribute '%s'; its attributes are axis and sections",
                          a->key);
            return -1;
        }
    }
    if (noperands != 1) {
        ir_diag_error(c->diag, call->loc, "split takes 1 operand, got %d", noperands);
        return -1;
    }
    return 0;
}

int fe_lower_split(fe_ctx *c, const fe_expr *call, const fe_name *targets, int *ids, int ntargets)
{
    const fe_expr *operand = NULL;
    int64_t axis = -1, sections = ntargets;
    if (split_args(c, call, &operand, &axis, &sections) != 0)
        return -1;
    if (sections != ntargets) {
        ir_diag_error(c->diag, call->loc, "split into %lld sections needs %lld targets, got %d", (long long)sections,
                      (long long)sections, ntargets);
        return -1;
    }
    int x = fe_lower_expr(c, operand, child_hint(c, targets->text, "in"));
    if (x < 0)
        return -1;
    const ir_type *t = &c->g->values[x]->type;
    char buf[160];
    if (axis < -t->rank || axis >= t->rank) {
        ir_diag_error(c->diag, call->loc, "split: axis %lld is out of range for %s", (long long)axis,
                      ir_type_str(t, buf, sizeof buf));
        return -1;
    }
    int dim = (int)(axis < 0 ? axis + t->rank : axis);
    if (t->dims[dim] % ntargets != 0) {
        ir_diag_error(c->diag, call->loc, "split: dimension %d of %s has size %lld, which does not divide into %d "
                      "sections", dim, ir_type_str(t, buf, sizeof buf), (long long)t->dims[dim], ntargets);
        return -1;
    }
    int64_t size = t->dims[dim] / ntargets;
    const fe_name *target = targets;
    for (int k = 0; k < ntargets; k++, target = target->next) {
        if (!fe_room_for_value(c, call->loc))
            return -1;
        ir_attrs attrs = ir_attrs_for(IR_OP_SLICE);
        ir_attrs_int(&attrs, "axis", dim);
        ir_attrs_int(&attrs, "start", k * size);
        ir_attrs_int(&attrs, "end", (k + 1) * size);
        ids[k] = ir_add(c->g, IR_OP_SLICE, fe_ir_name(c, target->text), &x, 1, &attrs, call->loc);
        ir_attrs_clear(&attrs);
        if (ids[k] < 0)
            return -1;
    }
    return 0;
}
