/* Lowering of statements to IR: declarations, assignments, blocks and
 * their instantiation by repeat, and outputs. Errors are reported where
 * they occur and lowering goes on, with failed names bound to no value so
 * that their uses stay quiet. */
#include "frontend/lower.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_TARGETS = 64 };

static bool count_statement(fe_ctx *c, const fe_stmt *s);

static int count_names(const fe_name *n)
{
    int count = 0;
    for (; n; n = n->next)
        count++;
    return count;
}

static int count_args(const fe_arg *a)
{
    int count = 0;
    for (; a; a = a->next)
        count++;
    return count;
}

static bool is_plain_name(const char *s)
{
    return !strchr(s, '.') && !strchr(s, '{');
}

/* Binds `name` to value `id` in `scope`, unless the name is taken. */
static void define_value(fe_ctx *c, fe_scope *scope, const fe_name *name, const char *text, int id,
                         const fe_stmt *stmt)
{
    fe_sym *previous = fe_scope_find(scope, text);
    const fe_hparam *h = fe_find_hparam(c, text);
    if (previous && previous->stmt == stmt && stmt->kind == FE_STMT_PARAM) {
        ir_diag_error(c->diag, name->loc, "param '%s' is declared again in every layer; put '{%s}' in its name, "
                      "like 'h.{%s}.w'", text, c->index_name, c->index_name);
        return;
    }
    if (c->index_name && strcmp(text, c->index_name) == 0) {
        ir_diag_error(c->diag, name->loc, "'%s' is the block index and cannot be redefined", text);
        return;
    }
    if (previous || h) {
        ir_diag_error(c->diag, name->loc, "redefinition of '%s'", text);
        ir_diag_note(c->diag, previous ? previous->loc : h->loc, "previous definition of '%s' is here", text);
        return;
    }
    fe_scope_add(scope, text, id, name->loc, stmt);
}

static int lower_type(fe_ctx *c, const fe_type *t, const char *name, ir_type *out)
{
    memset(out, 0, sizeof *out);
    out->dtype = ir_dtype_from_name(t->dtype);
    if (out->dtype == IR_DTYPE_COUNT) {
        ir_diag_error(c->diag, t->dtype_loc, "unknown dtype '%s'; expected f32, f16, bf16, i8, u8, i32 or i64",
                      t->dtype);
        return -1;
    }
    int64_t numel = 1;
    for (const fe_arg *d = t->dims; d; d = d->next) {
        if (out->rank == IR_MAX_RANK) {
            ir_diag_error(c->diag, d->value->loc, "'%s' has more than %d dimensions", name, IR_MAX_RANK);
            return -1;
        }
        int64_t v;
        if (fe_eval_int(c, d->value, &v) != 0)
            return -1;
        if (v <= 0 || v > FE_MAX_DIM) {
            ir_diag_error(c->diag, d->value->loc, "dimension %d of '%s' is %lld; it must be between 1 and %lld",
                          out->rank, name, (long long)v, (long long)FE_MAX_DIM);
            return -1;
        }
        if (__builtin_mul_overflow(numel, v, &numel) || numel > FE_MAX_NUMEL) {
            ir_diag_error(c->diag, d->value->loc, "'%s' has more than %lld elements", name, (long long)FE_MAX_NUMEL);
            return -1;
        }
        out->dims[out->rank++] = v;
    }
    return 0;
}

/* Inputs, like params, live in the top-level scope, so a block can declare
 * one per layer (`input h.{i}.attn.k_cache : ...`, the state of layer i). */
static void lower_input(fe_ctx *c, const fe_stmt *s)
{
    const char *name = fe_substitute_name(c, s->names->text, s->names->loc);
    ir_type type;
    int id = -1;
    if (name && lower_type(c, &s->type, name, &type) == 0 && fe_room_for_value(c, s->names->loc))
        id = ir_add_leaf(c->g, IR_OP_INPUT, name, type, NULL, s->names->loc);
    if (name)
        define_value(c, &c->global, s->names, name, id, s);
}

/* Returns the normalized init text: "zeros", "ones" or "normal(STD)". */
static const char *lower_init(fe_ctx *c, const fe_expr *e)
{
    if (!e)
        return "zeros";
    if (e->kind == FE_EXPR_NAME && (strcmp(e->text, "zeros") == 0 || strcmp(e->text, "ones") == 0))
        return e->text;
    if (e->kind == FE_EXPR_CALL && strcmp(e->text, "normal") == 0) {
        if (count_args(e->args) != 1 || e->args->key) {
            ir_diag_error(c->diag, e->loc, "normal takes one argument, the standard deviation: normal(0.02)");
            return NULL;
        }
        double std;
        if (fe_eval_number(c, e->args->value, &std) != 0)
            return NULL;
        if (!(std > 0)) {
            ir_diag_error(c->diag, e->args->value->loc, "standard deviation %.9g must be positive", std);
            return NULL;
        }
        char text[64];
        snprintf(text, sizeof text, "normal(%.9g)", std);
        return fe_strndup(c->arena, text, strlen(text));
    }
    if (e->kind != FE_EXPR_ERROR)
        ir_diag_error(c->diag, e->loc, "invalid init; expected zeros, ones or normal(std)");
    return NULL;
}

/* Params always live in the top-level scope, so the names a block
 * instance declares (`h.3.attn.c_attn.weight`) are visible after it. */
static void lower_param(fe_ctx *c, const fe_stmt *s)
{
    const char *name = fe_substitute_name(c, s->names->text, s->names->loc);
    const char *init = lower_init(c, s->value);
    ir_type type;
    int id = -1;
    if (name && init && lower_type(c, &s->type, name, &type) == 0 && fe_room_for_value(c, s->names->loc)) {
        ir_attrs attrs = ir_attrs_for(IR_OP_PARAM);
        ir_attrs_str(&attrs, "init", init);
        id = ir_add_leaf(c->g, IR_OP_PARAM, name, type, &attrs, s->names->loc);
        ir_attrs_clear(&attrs);
    }
    if (name)
        define_value(c, &c->global, s->names, name, id, s);
}

static int check_targets(fe_ctx *c, const fe_name *targets)
{
    int bad = 0;
    for (const fe_name *t = targets; t; t = t->next) {
        if (!is_plain_name(t->text)) {
            ir_diag_error(c->diag, t->loc, "assignment target '%s' must be a plain name without dots", t->text);
            bad = 1;
        }
    }
    if (count_names(targets) > MAX_TARGETS) {
        ir_diag_error(c->diag, targets->loc, "more than %d assignment targets", MAX_TARGETS);
        bad = 1;
    }
    return bad ? -1 : 0;
}

static void define_targets(fe_ctx *c, const fe_stmt *s, const int *ids, bool ok)
{
    int k = 0;
    for (const fe_name *t = s->names; t; t = t->next, k++)
        define_value(c, c->scope, t, t->text, ok ? ids[k] : -1, s);
}

static void lower_assign(fe_ctx *c, const fe_stmt *s)
{
    int ids[MAX_TARGETS];
    int n = count_names(s->names);
    if (check_targets(c, s->names) != 0)
        return;
    bool ok;
    if (s->value->kind == FE_EXPR_CALL && strcmp(s->value->text, "split") == 0) {
        ok = fe_lower_split(c, s->value, s->names, ids, n) == 0;
    } else if (n > 1) {
        ir_diag_error(c->diag, s->value->loc, "%d names are assigned one value; only split and repeat give several",
                      n);
        ok = false;
    } else {
        ids[0] = fe_lower_expr(c, s->value, s->names->text);
        ok = ids[0] >= 0;
    }
    define_targets(c, s, ids, ok);
}

/* ---- blocks ---- */

static const char *stmt_keyword(fe_stmt_kind kind)
{
    switch (kind) {
    case FE_STMT_HPARAM: return "hparam";
    case FE_STMT_INPUT: return "input";
    case FE_STMT_PARAM: return "param";
    case FE_STMT_BLOCK: return "block";
    case FE_STMT_ASSIGN: return "assignment";
    case FE_STMT_REPEAT: return "repeat";
    case FE_STMT_RETURN: return "return";
    case FE_STMT_OUTPUT: return "output";
    }
    return "statement";
}

/* Checks a block definition once, before any instance is lowered. */
static bool check_block(fe_ctx *c, const fe_stmt *b)
{
    bool ok = true;
    const fe_name *index = b->names->next;
    int ncarried = count_names(index) - 1;
    if (ncarried > MAX_TARGETS) {
        ir_diag_error(c->diag, b->names->loc, "block '%s' carries more than %d values", b->names->text, MAX_TARGETS);
        return false;
    }
    for (const fe_name *n = b->names; n; n = n->next) {
        if (!is_plain_name(n->text)) {
            ir_diag_error(c->diag, n->loc, "'%s' must be a plain name without dots", n->text);
            ok = false;
        }
    }
    for (const fe_name *n = index; n; n = n->next) {
        bool repeated = false;
        for (const fe_name *m = index; m != n; m = m->next)
            repeated = repeated || strcmp(m->text, n->text) == 0;
        if (repeated || fe_find_hparam(c, n->text)) {
            ir_diag_error(c->diag, n->loc, "block parameter '%s' %s", n->text,
                          repeated ? "is listed twice" : "has the name of an hparam");
            ok = false;
        }
    }
    if (ncarried < 1) {
        ir_diag_error(c->diag, b->names->loc, "block '%s' needs an index and at least one carried value, like "
                      "'block %s(i, x)'", b->names->text, b->names->text);
        ok = false;
    }
    const fe_stmt *last = NULL;
    for (const fe_stmt *s = b->body; s; s = s->next) {
        last = s;
        if (s->kind != FE_STMT_PARAM && s->kind != FE_STMT_INPUT && s->kind != FE_STMT_ASSIGN &&
            s->kind != FE_STMT_RETURN) {
            ir_diag_error(c->diag, s->loc, "%s is not allowed inside a block; a block holds params, inputs, "
                          "assignments and one return", stmt_keyword(s->kind));
            ok = false;
        } else if (s->kind == FE_STMT_RETURN && s->next) {
            ir_diag_error(c->diag, s->loc, "return must be the last statement of block '%s'", b->names->text);
            ok = false;
        }
    }
    if (!last || last->kind != FE_STMT_RETURN) {
        ir_diag_error(c->diag, b->names->loc, "block '%s' does not end with a return statement", b->names->text);
        ok = false;
    } else if (ncarried >= 1 && count_args(last->args) != ncarried) {
        ir_diag_error(c->diag, last->loc, "block '%s' carries %d value%s but returns %d", b->names->text, ncarried,
                      ncarried == 1 ? "" : "s", count_args(last->args));
        ok = false;
    }
    return ok;
}

static void collect_blocks(fe_ctx *c, const fe_stmt *program)
{
    for (const fe_stmt *s = program; s; s = s->next) {
        if (s->kind != FE_STMT_BLOCK)
            continue;
        const fe_name *name = s->names;
        int previous = fe_map_get(&c->block_index, name->text);
        if (previous >= 0) {
            ir_diag_error(c->diag, name->loc, "redefinition of block '%s'", name->text);
            ir_diag_note(c->diag, c->blocks[previous]->names->loc, "previous definition of '%s' is here", name->text);
            continue;
        }
        if (fe_find_hparam(c, name->text)) {
            ir_diag_error(c->diag, name->loc, "redefinition of '%s'", name->text);
            ir_diag_note(c->diag, fe_find_hparam(c, name->text)->loc, "previous definition of '%s' is here",
                         name->text);
            continue;
        }
        c->blocks = realloc(c->blocks, sizeof *c->blocks * (size_t)(c->nblocks + 1));
        c->block_ok = realloc(c->block_ok, sizeof *c->block_ok * (size_t)(c->nblocks + 1));
        if (!c->blocks || !c->block_ok)
            abort();
        c->blocks[c->nblocks] = s;
        c->block_ok[c->nblocks] = check_block(c, s);
        fe_map_put(&c->block_index, name->text, c->nblocks++);
    }
}

/* Lowers one layer of a block. Returns false if it reported errors. */
static bool lower_layer(fe_ctx *c, const fe_stmt *b, int64_t index, int *carried, int ncarried)
{
    int before = ir_diag_error_count(c->diag);
    fe_scope local = {0};
    local.parent = &c->global;
    c->scope = &local;
    c->index_name = b->names->next->text;
    c->index_value = index;
    char prefix[FE_MAX_NAME_BYTES + 32];
    snprintf(prefix, sizeof prefix, "%s%lld.", b->names->text, (long long)index);
    c->prefix = fe_strndup(c->arena, prefix, strlen(prefix));
    int k = 0;
    for (const fe_name *n = b->names->next->next; n; n = n->next, k++)
        fe_scope_add(&local, n->text, carried[k], n->loc, b);
    for (const fe_stmt *s = b->body; s && count_statement(c, s); s = s->next) {
        if (s->kind == FE_STMT_PARAM) {
            lower_param(c, s);
        } else if (s->kind == FE_STMT_INPUT) {
            lower_input(c, s);
        } else if (s->kind == FE_STMT_ASSIGN) {
            lower_assign(c, s);
        } else {
            k = 0;
            for (const fe_arg *a = s->args; a; a = a->next, k++)
                carried[k] = fe_lower_expr(c, a->value, "out");
        }
    }
    fe_scope_free(&local);
    c->scope = &c->global;
    c->index_name = NULL;
    c->prefix = NULL;
    return ir_diag_error_count(c->diag) == before;
}

/* Checks the layer range of a repeat. Returns 0 if it is valid. */
static int check_repeat_range(fe_ctx *c, const fe_stmt *s, int64_t from, int64_t to)
{
    if (from < 0 || to < from) {
        ir_diag_error(c->diag, s->from->loc, "layer range %lld..%lld is invalid; it needs 0 <= start <= end",
                      (long long)from, (long long)to);
        return -1;
    }
    if (to - from > FE_MAX_REPEAT) {
        ir_diag_error(c->diag, s->to->loc, "repeat of %lld layers exceeds the limit of %d", (long long)(to - from),
                      FE_MAX_REPEAT);
        return -1;
    }
    return 0;
}

static const fe_stmt *find_block(fe_ctx *c, const fe_stmt *s)
{
    int b = fe_map_get(&c->block_index, s->callee);
    if (b >= 0)
        return c->block_ok[b] ? c->blocks[b] : NULL; /* an invalid block was reported already */
    fe_suggestion hint = fe_suggestion_start(s->callee);
    for (int k = 0; k < c->nblocks; k++)
        fe_suggestion_consider(&hint, c->blocks[k]->names->text);
    if (hint.best)
        ir_diag_error(c->diag, s->callee_loc, "undefined block '%s'; did you mean '%s'?", s->callee, hint.best);
    else
        ir_diag_error(c->diag, s->callee_loc, "undefined block '%s'", s->callee);
    return NULL;
}

static bool lower_repeat_args(fe_ctx *c, const fe_stmt *s, const fe_stmt *b, int *carried)
{
    const fe_name *index = b->names->next;
    int ncarried = count_names(index->next);
    bool ok = true;
    if (strcmp(s->loop_var, index->text) != 0) {
        ir_diag_error(c->diag, s->loop_loc, "loop variable '%s' must be '%s', the index of block '%s'", s->loop_var,
                      index->text, b->names->text);
        ok = false;
    }
    if (count_args(s->args) != ncarried) {
        ir_diag_error(c->diag, s->callee_loc, "block '%s' carries %d value%s, got %d argument%s", s->callee, ncarried,
                      ncarried == 1 ? "" : "s", count_args(s->args), count_args(s->args) == 1 ? "" : "s");
        return false;
    }
    if (count_names(s->names) != ncarried) {
        ir_diag_error(c->diag, s->names->loc, "block '%s' returns %d value%s, assigned to %d name%s", s->callee,
                      ncarried, ncarried == 1 ? "" : "s", count_names(s->names), count_names(s->names) == 1 ? "" : "s");
        return false;
    }
    int k = 0;
    for (const fe_arg *a = s->args; a; a = a->next, k++) {
        carried[k] = fe_lower_expr(c, a->value, NULL);
        if (carried[k] < 0)
            ok = false;
    }
    return ok;
}

static void lower_repeat(fe_ctx *c, const fe_stmt *s)
{
    int carried[MAX_TARGETS];
    bool ok = false;
    int64_t from = 0, to = 0;
    const fe_stmt *b = check_targets(c, s->names) == 0 ? find_block(c, s) : NULL;
    if (b && fe_eval_int(c, s->from, &from) == 0 && fe_eval_int(c, s->to, &to) == 0 &&
        check_repeat_range(c, s, from, to) == 0 && lower_repeat_args(c, s, b, carried)) {
        ok = true;
        for (int64_t i = from; i < to && ok; i++) {
            ok = lower_layer(c, b, i, carried, count_names(s->names));
            if (!ok)
                ir_diag_note(c->diag, s->loc, "in layer %lld of block '%s', instantiated here", (long long)i,
                             s->callee);
        }
    }
    define_targets(c, s, carried, ok);
}

/* ---- the program ---- */

static void lower_output(fe_ctx *c, const fe_stmt *s)
{
    for (const fe_name *n = s->names; n; n = n->next) {
        fe_sym *sym = fe_scope_lookup(c->scope, n->text);
        if (!sym) {
            fe_report_undefined(c, "name", n->text, n->loc);
            continue;
        }
        if (sym->id < 0)
            continue;
        if (sym->id >= c->is_output_cap) {
            int cap = c->g->nvalues;
            c->is_output = realloc(c->is_output, sizeof *c->is_output * (size_t)cap);
            if (!c->is_output)
                abort();
            memset(c->is_output + c->is_output_cap, 0, sizeof *c->is_output * (size_t)(cap - c->is_output_cap));
            c->is_output_cap = cap;
        }
        if (c->is_output[sym->id]) {
            ir_diag_error(c->diag, n->loc, "'%s' is already an output", n->text);
        } else {
            c->is_output[sym->id] = true;
            ir_add_output(c->g, sym->id);
        }
    }
}

/* Counts a statement against FE_MAX_STATEMENTS, which bounds the work of
 * blocks whose statements create no values. */
static bool count_statement(fe_ctx *c, const fe_stmt *s)
{
    if (++c->statements <= FE_MAX_STATEMENTS)
        return true;
    if (!c->too_large)
        ir_diag_error(c->diag, s->loc, "the model has more than %d statements after expanding repeat; reduce the "
                      "layer count", FE_MAX_STATEMENTS);
    c->too_large = true;
    return false;
}

static void lower_statement(fe_ctx *c, const fe_stmt *s)
{
    if (!count_statement(c, s))
        return;
    switch (s->kind) {
    case FE_STMT_HPARAM:
    case FE_STMT_BLOCK:
        break; /* declared before the statements run */
    case FE_STMT_INPUT:
        lower_input(c, s);
        break;
    case FE_STMT_PARAM:
        lower_param(c, s);
        break;
    case FE_STMT_ASSIGN:
        lower_assign(c, s);
        break;
    case FE_STMT_REPEAT:
        lower_repeat(c, s);
        break;
    case FE_STMT_RETURN:
        ir_diag_error(c->diag, s->loc, "return outside a block");
        break;
    case FE_STMT_OUTPUT:
        lower_output(c, s);
        break;
    }
}

ir_graph *fe_lower_program(fe_ctx *c, const fe_stmt *program, const fe_define *defines, int ndefines)
{
    int before = ir_diag_error_count(c->diag);
    c->scope = &c->global;
    fe_collect_hparams(c, program, defines, ndefines);
    collect_blocks(c, program);
    for (const fe_stmt *s = program; s && !c->too_large; s = s->next)
        lower_statement(c, s);
    if (ir_diag_error_count(c->diag) == before && c->g->noutputs == 0)
        ir_diag_file_error(c->diag, c->file, "the model has no outputs; add a statement like 'output logits;'");
    if (ir_diag_error_count(c->diag) == before)
        ir_verify(c->g, NULL);
    fe_scope_free(&c->global);
    fe_map_free(&c->hparam_index);
    fe_map_free(&c->block_index);
    free(c->hparams);
    free(c->blocks);
    free(c->block_ok);
    free(c->is_output);
    if (ir_diag_error_count(c->diag) != before) {
        ir_graph_free(c->g);
        c->g = NULL;
    }
    return c->g;
}
