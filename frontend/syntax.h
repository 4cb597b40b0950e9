/* The frontend's syntax tree, the arena that owns it, and the parser state
 * shared by the flex scanner (lexer.l) and the bison grammar (parser.y).
 * Everything here is internal to frontend/. */
#ifndef QUADC_FRONTEND_SYNTAX_H
#define QUADC_FRONTEND_SYNTAX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ir/diag.h"
#include "ir/ir.h"

/* Limits that keep hostile or broken input from exhausting memory or the
 * C stack. docs/dsl.md lists them for users. */
#define FE_MAX_FILE_BYTES (16u * 1024u * 1024u)
#define FE_MAX_NAME_BYTES 256
#define FE_MAX_STRING_BYTES 1024
#define FE_MAX_NESTING 256       /* brackets open at once, and expression tree depth */
#define FE_MAX_REPEAT 4096       /* layers one repeat statement may instantiate */
#define FE_MAX_VALUES (1 << 18)  /* IR values in one model */
#define FE_MAX_STATEMENTS (1 << 20) /* statements lowered, counting each layer */
#define FE_MAX_NUMEL IR_MAX_NUMEL
#define FE_MAX_DIM IR_MAX_DIM

/* Allocations that live until the whole compile ends and are freed at once. */
typedef struct fe_arena fe_arena;
fe_arena *fe_arena_new(void);
void fe_arena_free(fe_arena *a);
/* Returns zeroed memory. Aborts the process if malloc fails. */
void *fe_alloc(fe_arena *a, size_t size);
char *fe_strndup(fe_arena *a, const char *s, size_t n);

typedef enum fe_expr_kind {
    FE_EXPR_INT,
    FE_EXPR_FLOAT,
    FE_EXPR_STRING,
    FE_EXPR_NAME,
    FE_EXPR_CALL,
    FE_EXPR_BINARY, /* op is one of + - * / % */
    FE_EXPR_NEG,
    FE_EXPR_LIST,
    FE_EXPR_ERROR, /* a subtree that already produced an error */
} fe_expr_kind;

typedef struct fe_expr fe_expr;

/* One call argument or list element. `key` is set for `key=value`. */
typedef struct fe_arg {
    const char *key;
    ir_loc key_loc;
    fe_expr *value;
    struct fe_arg *next;
} fe_arg;

struct fe_expr {
    fe_expr_kind kind;
    ir_loc loc;
    int depth; /* height of this subtree, at most FE_MAX_NESTING */
    int64_t i;
    double f;
    const char *text; /* name, callee, string contents or float spelling */
    char op;
    fe_expr *lhs, *rhs; /* BINARY uses both, NEG only lhs */
    fe_arg *args;       /* CALL arguments and LIST elements */
};

typedef struct fe_name {
    const char *text;
    ir_loc loc;
    struct fe_name *next;
} fe_name;

/* `f32[B, T, C]`: the dtype spelling and one expression per dimension. */
typedef struct fe_type {
    const char *dtype;
    ir_loc dtype_loc;
    fe_arg *dims;
} fe_type;

typedef enum fe_stmt_kind {
    FE_STMT_HPARAM, /* hparam NAME = value; */
    FE_STMT_INPUT,  /* input NAME : type; */
    FE_STMT_PARAM,  /* param NAME : type [= value]; */
    FE_STMT_BLOCK,  /* block NAME(index, carried...) { body } */
    FE_STMT_ASSIGN, /* names = value; */
    FE_STMT_REPEAT, /* names = repeat callee(args) for loop_var in from..to; */
    FE_STMT_RETURN, /* return args; */
    FE_STMT_OUTPUT, /* output names; */
} fe_stmt_kind;

typedef struct fe_stmt {
    fe_stmt_kind kind;
    ir_loc loc;     /* the whole statement */
    fe_name *names; /* declared name, block parameters, targets or outputs */
    fe_expr *value;
    fe_type type;
    fe_arg *args;
    struct fe_stmt *body;
    const char *callee;
    ir_loc callee_loc;
    const char *loop_var;
    ir_loc loop_loc;
    fe_expr *from, *to;
    struct fe_stmt *next;
} fe_stmt;

/* State of one parse: the scanner's position and the statements so far. */
typedef struct fe_parser {
    ir_diag *diag;
    const char *file; /* interned by the diagnostics sink */
    fe_arena *arena;
    fe_stmt *first, *last;
    int line, col;   /* next character to scan, 1-based */
    int nesting;     /* brackets open at the scanner's position */
    bool stop;       /* a fatal scanner error ended the parse early */
    bool saw_tokens; /* anything besides whitespace and comments */
    ir_loc comment_start;
    char token[48]; /* spelling of the last token, for syntax errors */
    int token_line, token_end_col;       /* where the last token ends */
    int previous_line, previous_end_col; /* where the token before it ends */
} fe_parser;

/* Parses text into p->first and returns the number of errors reported. */
int fe_parse(fe_parser *p, const char *text, size_t len);

/* Node builders used by the grammar actions. Each reports an error and
 * returns a FE_EXPR_ERROR node when the tree would get deeper than
 * FE_MAX_NESTING. */
fe_expr *fe_expr_leaf(fe_parser *p, fe_expr_kind kind, ir_loc loc);
fe_expr *fe_expr_binary(fe_parser *p, char op, fe_expr *lhs, fe_expr *rhs, ir_loc loc);
fe_expr *fe_expr_neg(fe_parser *p, fe_expr *operand, ir_loc loc);
fe_expr *fe_expr_call(fe_parser *p, const char *callee, fe_arg *args, ir_loc loc);
fe_expr *fe_expr_list(fe_parser *p, fe_arg *items, ir_loc loc);
fe_arg *fe_arg_new(fe_parser *p, const char *key, ir_loc key_loc, fe_expr *value);
fe_name *fe_name_new(fe_parser *p, const char *text, ir_loc loc);
fe_stmt *fe_stmt_new(fe_parser *p, fe_stmt_kind kind, ir_loc loc);

#endif
