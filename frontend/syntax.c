/* The syntax-tree arena and the node builders the grammar actions call.
 * Builders enforce the expression depth limit, so every later tree walk
 * recurses at most FE_MAX_NESTING levels. */
#include "frontend/syntax.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_CHUNK_BYTES (64 * 1024)

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} arena_chunk;

struct fe_arena {
    arena_chunk *head;
};

fe_arena *fe_arena_new(void)
{
    return calloc(1, sizeof(fe_arena));
}

void fe_arena_free(fe_arena *a)
{
    if (!a)
        return;
    arena_chunk *c = a->head;
    while (c) {
        arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    free(a);
}

void *fe_alloc(fe_arena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    arena_chunk *c = a->head;
    if (!c || c->cap - c->used < size) {
        size_t cap = size > ARENA_CHUNK_BYTES ? size : ARENA_CHUNK_BYTES;
        c = malloc(sizeof *c + cap);
        if (!c) {
            fputs("quadc: out of memory\n", stderr);
            abort();
        }
        c->used = 0;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += size;
    memset(p, 0, size);
    return p;
}

char *fe_strndup(fe_arena *a, const char *s, size_t n)
{
    char *d = fe_alloc(a, n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

fe_expr *fe_expr_leaf(fe_parser *p, fe_expr_kind kind, ir_loc loc)
{
    fe_expr *e = fe_alloc(p->arena, sizeof *e);
    e->kind = kind;
    e->loc = loc;
    e->depth = 1;
    return e;
}

/* Gives `e` the depth 1 + `child_depth`, or turns it into an error node
 * when that exceeds the limit. An error below stays silent because it was
 * reported already. */
static fe_expr *set_depth(fe_parser *p, fe_expr *e, int child_depth, bool child_error)
{
    if (child_error) {
        e->kind = FE_EXPR_ERROR;
        e->depth = 1;
        return e;
    }
    e->depth = child_depth + 1;
    if (e->depth > FE_MAX_NESTING) {
        ir_diag_error(p->diag, e->loc, "expression is too deep: more than %d nested operators or calls; split "
                      "it up", FE_MAX_NESTING);
        e->kind = FE_EXPR_ERROR;
        e->depth = 1;
    }
    return e;
}

fe_expr *fe_expr_binary(fe_parser *p, char op, fe_expr *lhs, fe_expr *rhs, ir_loc loc)
{
    fe_expr *e = fe_expr_leaf(p, FE_EXPR_BINARY, loc);
    e->op = op;
    e->lhs = lhs;
    e->rhs = rhs;
    int depth = lhs->depth > rhs->depth ? lhs->depth : rhs->depth;
    return set_depth(p, e, depth, lhs->kind == FE_EXPR_ERROR || rhs->kind == FE_EXPR_ERROR);
}

fe_expr *fe_expr_neg(fe_parser *p, fe_expr *operand, ir_loc loc)
{
    fe_expr *e = fe_expr_leaf(p, FE_EXPR_NEG, loc);
    e->lhs = operand;
    return set_depth(p, e, operand->depth, operand->kind == FE_EXPR_ERROR);
}

static fe_expr *with_args(fe_parser *p, fe_expr *e, fe_arg *args)
{
    int depth = 0;
    bool error = false;
    e->args = args;
    for (fe_arg *a = args; a; a = a->next) {
        if (a->value->depth > depth)
            depth = a->value->depth;
        if (a->value->kind == FE_EXPR_ERROR)
            error = true;
    }
    return set_depth(p, e, depth, error);
}

fe_expr *fe_expr_call(fe_parser *p, const char *callee, fe_arg *args, ir_loc loc)
{
    fe_expr *e = fe_expr_leaf(p, FE_EXPR_CALL, loc);
    e->text = callee;
    return with_args(p, e, args);
}

fe_expr *fe_expr_list(fe_parser *p, fe_arg *items, ir_loc loc)
{
    fe_expr *e = fe_expr_leaf(p, FE_EXPR_LIST, loc);
    return with_args(p, e, items);
}

fe_arg *fe_arg_new(fe_parser *p, const char *key, ir_loc key_loc, fe_expr *value)
{
    fe_arg *a = fe_alloc(p->arena, sizeof *a);
    a->key = key;
    a->key_loc = key_loc;
    a->value = value;
    return a;
}

fe_name *fe_name_new(fe_parser *p, const char *text, ir_loc loc)
{
    fe_name *n = fe_alloc(p->arena, sizeof *n);
    n->text = text;
    n->loc = loc;
    return n;
}

fe_stmt *fe_stmt_new(fe_parser *p, fe_stmt_kind kind, ir_loc loc)
{
    fe_stmt *s = fe_alloc(p->arena, sizeof *s);
    s->kind = kind;
    s->loc = loc;
    return s;
}
