/* Compile-time arithmetic: hyperparameter declarations, -D overrides,
 * cycle detection, and the integer and floating evaluators used for
 * dimensions, attributes and init expressions. Integer arithmetic is
 * checked for overflow and division by zero. */
#include "frontend/lower.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const fe_hparam *fe_find_hparam(const fe_ctx *c, const char *name)
{
    int i = fe_map_get(&c->hparam_index, name);
    return i < 0 ? NULL : &c->hparams[i];
}

/* Looks up a name usable in arithmetic: an hparam or the block index.
 * Returns 1 with the value, 0 when the name is bound but failed earlier,
 * and -1 when it is not a number at all. */
static int lookup_number(fe_ctx *c, const char *name, int64_t *out)
{
    if (c->index_name && strcmp(name, c->index_name) == 0) {
        *out = c->index_value;
        return 1;
    }
    const fe_hparam *h = fe_find_hparam(c, name);
    if (!h)
        return -1;
    *out = h->value;
    return h->ok ? 1 : 0;
}

static void report_not_number(fe_ctx *c, const fe_expr *e)
{
    if (fe_scope_lookup(c->scope, e->text))
        ir_diag_error(c->diag, e->loc, "'%s' is a tensor; a number is expected here", e->text);
    else
        fe_report_undefined(c, "hparam", e->text, e->loc);
}

static int eval_int_binary(fe_ctx *c, const fe_expr *e, int64_t a, int64_t b, int64_t *out)
{
    bool overflow = false;
    switch (e->op) {
    case '+': overflow = __builtin_add_overflow(a, b, out); break;
    case '-': overflow = __builtin_sub_overflow(a, b, out); break;
    case '*': overflow = __builtin_mul_overflow(a, b, out); break;
    case '/':
    case '%':
        if (b == 0) {
            ir_diag_error(c->diag, e->loc, "division by zero: %lld %c 0", (long long)a, e->op);
            return -1;
        }
        if (a == INT64_MIN && b == -1) {
            overflow = true;
            break;
        }
        *out = e->op == '/' ? a / b : a % b;
        break;
    default:
        return -1;
    }
    if (overflow) {
        ir_diag_error(c->diag, e->loc, "integer overflow: %lld %c %lld does not fit in 64 bits", (long long)a,
                      e->op, (long long)b);
        return -1;
    }
    return 0;
}

/* min(a, b, ...) and max(a, b, ...) over integers. */
static int eval_int_call(fe_ctx *c, const fe_expr *e, int64_t *out)
{
    bool is_min = strcmp(e->text, "min") == 0;
    if (!is_min && strcmp(e->text, "max") != 0) {
        ir_diag_error(c->diag, e->loc, "'%s' cannot be used in an integer expression; only min and max can",
                      e->text);
        return -1;
    }
    if (!e->args) {
        ir_diag_error(c->diag, e->loc, "%s needs at least one argument", e->text);
        return -1;
    }
    for (const fe_arg *a = e->args; a; a = a->next) {
        int64_t v;
        if (a->key) {
            ir_diag_error(c->diag, a->key_loc, "%s takes no named arguments", e->text);
            return -1;
        }
        if (fe_eval_int(c, a->value, &v) != 0)
            return -1;
        if (a == e->args || (is_min ? v < *out : v > *out))
            *out = v;
    }
    return 0;
}

int fe_eval_int(fe_ctx *c, const fe_expr *e, int64_t *out)
{
    int64_t a, b;
    switch (e->kind) {
    case FE_EXPR_INT:
        *out = e->i;
        return 0;
    case FE_EXPR_FLOAT:
        ir_diag_error(c->diag, e->loc, "expected an integer, got %.9g", e->f);
        return -1;
    case FE_EXPR_NAME: {
        int found = lookup_number(c, e->text, out);
        if (found < 0)
            report_not_number(c, e);
        return found == 1 ? 0 : -1;
    }
    case FE_EXPR_NEG:
        if (fe_eval_int(c, e->lhs, &a) != 0)
            return -1;
        if (a == INT64_MIN) {
            ir_diag_error(c->diag, e->loc, "integer overflow: -(%lld) does not fit in 64 bits", (long long)a);
            return -1;
        }
        *out = -a;
        return 0;
    case FE_EXPR_BINARY:
        if (fe_eval_int(c, e->lhs, &a) != 0 || fe_eval_int(c, e->rhs, &b) != 0)
            return -1;
        return eval_int_binary(c, e, a, b, out);
    case FE_EXPR_CALL:
        return eval_int_call(c, e, out);
    case FE_EXPR_STRING:
    case FE_EXPR_LIST:
        ir_diag_error(c->diag, e->loc, "expected an integer, got a %s", e->kind == FE_EXPR_STRING ? "string" : "list");
        return -1;
    case FE_EXPR_ERROR:
        return -1;
    }
    return -1;
}

/* sqrt(x), min(a, ...) and max(a, ...) over floats. */
static int eval_number_call(fe_ctx *c, const fe_expr *e, double *out)
{
    bool is_sqrt = strcmp(e->text, "sqrt") == 0, is_min = strcmp(e->text, "min") == 0;
    if (!is_sqrt && !is_min && strcmp(e->text, "max") != 0) {
        ir_diag_error(c->diag, e->loc, "'%s' cannot be used in a number expression; only sqrt, min and max can",
                      e->text);
        return -1;
    }
    int n = 0;
    for (const fe_arg *a = e->args; a; a = a->next, n++) {
        double v;
        if (a->key) {
            ir_diag_error(c->diag, a->key_loc, "%s takes no named arguments", e->text);
            return -1;
        }
        if (fe_eval_number(c, a->value, &v) != 0)
            return -1;
        if (n == 0 || (is_min ? v < *out : v > *out))
            *out = v;
    }
    if (is_sqrt && n != 1) {
        ir_diag_error(c->diag, e->loc, "sqrt takes 1 argument, got %d", n);
        return -1;
    }
    if (n == 0) {
        ir_diag_error(c->diag, e->loc, "%s needs at least one argument", e->text);
        return -1;
    }
    if (is_sqrt && *out < 0) {
        ir_diag_error(c->diag, e->loc, "sqrt of negative number %.9g", *out);
        return -1;
    }
    if (is_sqrt)
        *out = sqrt(*out);
    return 0;
}

static int eval_number_binary(fe_ctx *c, const fe_expr *e, double a, double b, double *out)
{
    switch (e->op) {
    case '+': *out = a + b; break;
    case '-': *out = a - b; break;
    case '*': *out = a * b; break;
    case '/':
    case '%':
        if (b == 0) {
            ir_diag_error(c->diag, e->loc, "division by zero: %.9g %c 0", a, e->op);
            return -1;
        }
        *out = e->op == '/' ? a / b : fmod(a, b);
        break;
    default:
        return -1;
    }
    if (!isfinite(*out)) {
        ir_diag_error(c->diag, e->loc, "%.9g %c %.9g overflows a 64-bit float", a, e->op, b);
        return -1;
    }
    return 0;
}

int fe_eval_number(fe_ctx *c, const fe_expr *e, double *out)
{
    double a, b;
    int64_t i = 0;
    switch (e->kind) {
    case FE_EXPR_INT:
        *out = (double)e->i;
        return 0;
    case FE_EXPR_FLOAT:
        *out = e->f;
        return 0;
    case FE_EXPR_NAME: {
        int found = lookup_number(c, e->text, &i);
        if (found < 0)
            report_not_number(c, e);
        *out = (double)i;
        return found == 1 ? 0 : -1;
    }
    case FE_EXPR_NEG:
        if (fe_eval_number(c, e->lhs, &a) != 0)
            return -1;
        *out = -a;
        return 0;
    case FE_EXPR_BINARY:
        if (fe_eval_number(c, e->lhs, &a) != 0 || fe_eval_number(c, e->rhs, &b) != 0)
            return -1;
        return eval_number_binary(c, e, a, b, out);
    case FE_EXPR_CALL:
        return eval_number_call(c, e, out);
    case FE_EXPR_STRING:
    case FE_EXPR_LIST:
        ir_diag_error(c->diag, e->loc, "expected a number, got a %s", e->kind == FE_EXPR_STRING ? "string" : "list");
        return -1;
    case FE_EXPR_ERROR:
        return -1;
    }
    return -1;
}

bool fe_is_number(fe_ctx *c, const fe_expr *e)
{
    int64_t unused;
    switch (e->kind) {
    case FE_EXPR_INT:
    case FE_EXPR_FLOAT:
        return true;
    case FE_EXPR_NAME:
        return lookup_number(c, e->text, &unused) >= 0;
    case FE_EXPR_NEG:
        return fe_is_number(c, e->lhs);
    case FE_EXPR_BINARY:
        return fe_is_number(c, e->lhs) && fe_is_number(c, e->rhs);
    case FE_EXPR_CALL:
        if (strcmp(e->text, "min") != 0 && strcmp(e->text, "max") != 0 && strcmp(e->text, "sqrt") != 0)
            return false;
        for (const fe_arg *a = e->args; a; a = a->next)
            if (a->key || !fe_is_number(c, a->value))
                return false;
        return true;
    case FE_EXPR_STRING:
    case FE_EXPR_LIST:
    case FE_EXPR_ERROR:
        return false;
    }
    return false;
}

/* ---- hparam declarations ---- */

/* Appends the indices of the hparams that `e` mentions to deps. */
static void collect_deps(const fe_ctx *c, const fe_expr *e, int **deps, int *ndeps, int *cap)
{
    if (!e)
        return;
    if (e->kind == FE_EXPR_NAME) {
        int h = fe_map_get(&c->hparam_index, e->text);
        if (h < 0)
            return;
        if (*ndeps == *cap) {
            *cap = *cap ? *cap * 2 : 8;
            *deps = realloc(*deps, sizeof **deps * (size_t)*cap);
            if (!*deps)
                abort();
        }
        (*deps)[(*ndeps)++] = h;
        return;
    }
    collect_deps(c, e->lhs, deps, ndeps, cap);
    collect_deps(c, e->rhs, deps, ndeps, cap);
    for (const fe_arg *a = e->args; a; a = a->next)
        collect_deps(c, a->value, deps, ndeps, cap);
}

static void report_cycle(fe_ctx *c, const int *stack, int depth, int start)
{
    char path[512];
    int n = 0;
    for (int k = start; k < depth && n < (int)sizeof path - 80; k++)
        n += snprintf(path + n, sizeof path - (size_t)n, "%s -> ", c->hparams[stack[k]].name);
    if (n >= (int)sizeof path - 80)
        n += snprintf(path + n, sizeof path - (size_t)n, "... -> ");
    snprintf(path + n, sizeof path - (size_t)n, "%s", c->hparams[stack[start]].name);
    const fe_hparam *first = &c->hparams[stack[start]];
    ir_diag_error(c->diag, first->loc, "hparam '%s' depends on itself: %s", first->name, path);
    for (int k = start; k < depth; k++)
        c->hparams[stack[k]].ok = false;
}

/* Orders the hparams so that each comes after those it uses, with an
 * explicit stack so long chains cannot overflow the C stack. Returns the
 * number of entries written to order. Hparams on a cycle are marked
 * invalid. */
static int order_hparams(fe_ctx *c, int *order)
{
    int n = c->nhparams, norder = 0;
    int **deps = calloc((size_t)n + 1, sizeof *deps);
    int *ndeps = calloc((size_t)n + 1, sizeof *ndeps);
    int *state = calloc((size_t)n + 1, sizeof *state); /* 0 new, 1 on stack, 2 done */
    int *stack = malloc(sizeof *stack * ((size_t)n + 1));
    int *cursor = malloc(sizeof *cursor * ((size_t)n + 1));
    if (!deps || !ndeps || !state || !stack || !cursor)
        abort();
    for (int h = 0; h < n; h++) {
        int cap = 0;
        if (!c->hparams[h].overridden)
            collect_deps(c, c->hparams[h].expr, &deps[h], &ndeps[h], &cap);
    }
    for (int root = 0; root < n; root++) {
        if (state[root])
            continue;
        int depth = 0;
        stack[depth] = root;
        cursor[depth++] = 0;
        state[root] = 1;
        while (depth > 0) {
            int h = stack[depth - 1];
            if (cursor[depth - 1] < ndeps[h]) {
                int d = deps[h][cursor[depth - 1]++];
                if (state[d] == 0) {
                    state[d] = 1;
                    stack[depth] = d;
                    cursor[depth++] = 0;
                } else if (state[d] == 1 && c->hparams[d].ok) {
                    int start = depth - 1;
                    while (stack[start] != d)
                        start--;
                    report_cycle(c, stack, depth, start);
                }
                continue;
            }
            state[h] = 2;
            order[norder++] = h;
            depth--;
        }
    }
    for (int h = 0; h < n; h++)
        free(deps[h]);
    free(deps);
    free(ndeps);
    free(state);
    free(stack);
    free(cursor);
    return norder;
}

static void report_unknown_define(fe_ctx *c, const char *name, int64_t value)
{
    fe_suggestion s = fe_suggestion_start(name);
    for (int h = 0; h < c->nhparams; h++)
        fe_suggestion_consider(&s, c->hparams[h].name);
    if (s.best) {
        ir_diag_file_error(c->diag, c->file, "-D %s=%lld: no hparam is named '%s'; did you mean '%s'?", name,
                           (long long)value, name, s.best);
        return;
    }
    char list[512];
    int n = 0;
    list[0] = '\0';
    for (int h = 0; h < c->nhparams && n < (int)sizeof list - 80; h++)
        n += snprintf(list + n, sizeof list - (size_t)n, "%s%s", h ? ", " : "", c->hparams[h].name);
    if (c->nhparams == 0)
        ir_diag_file_error(c->diag, c->file, "-D %s=%lld: no hparam is named '%s'; the model declares no hparams",
                           name, (long long)value, name);
    else
        ir_diag_file_error(c->diag, c->file, "-D %s=%lld: no hparam is named '%s'; the hparams are %s%s", name,
                           (long long)value, name, list, n >= (int)sizeof list - 80 ? ", ..." : "");
}

static void declare_hparam(fe_ctx *c, const fe_stmt *s)
{
    const fe_name *name = s->names;
    int previous = fe_map_get(&c->hparam_index, name->text);
    if (previous >= 0) {
        ir_diag_error(c->diag, name->loc, "redefinition of hparam '%s'", name->text);
        ir_diag_note(c->diag, c->hparams[previous].loc, "previous definition of '%s' is here", name->text);
        return;
    }
    if (strchr(name->text, '.')) {
        ir_diag_error(c->diag, name->loc, "hparam name '%s' must be a plain name without dots", name->text);
        return;
    }
    c->hparams = realloc(c->hparams, sizeof *c->hparams * (size_t)(c->nhparams + 1));
    if (!c->hparams)
        abort();
    fe_hparam *h = &c->hparams[c->nhparams];
    memset(h, 0, sizeof *h);
    h->name = name->text;
    h->loc = name->loc;
    h->expr = s->value;
    h->ok = true;
    fe_map_put(&c->hparam_index, h->name, c->nhparams++);
}

/* Declares every top-level hparam, applies the -D overrides and evaluates
 * the rest in dependency order. Records each valid value in the graph.
 * Returns the number of errors reported. */
int fe_collect_hparams(fe_ctx *c, const fe_stmt *program, const fe_define *defines, int ndefines)
{
    int before = ir_diag_error_count(c->diag);
    for (const fe_stmt *s = program; s; s = s->next)
        if (s->kind == FE_STMT_HPARAM)
            declare_hparam(c, s);
    for (int k = 0; k < ndefines; k++) {
        int h = fe_map_get(&c->hparam_index, defines[k].name);
        if (h < 0) {
            report_unknown_define(c, defines[k].name, defines[k].value);
            continue;
        }
        c->hparams[h].value = defines[k].value;
        c->hparams[h].overridden = true;
    }
    int *order = malloc(sizeof *order * ((size_t)c->nhparams + 1));
    if (!order)
        abort();
    int norder = order_hparams(c, order);
    for (int k = 0; k < norder; k++) {
        fe_hparam *h = &c->hparams[order[k]];
        if (!h->ok || h->overridden)
            continue;
        int64_t v;
        if (fe_eval_int(c, h->expr, &v) == 0)
            h->value = v;
        else
            h->ok = false;
    }
    free(order);
    for (int h = 0; h < c->nhparams; h++)
        if (c->hparams[h].ok)
            ir_set_hparam(c->g, c->hparams[h].name, c->hparams[h].value);
    return ir_diag_error_count(c->diag) - before;
}
