/* The lexer of the IR text format (see ir/text.h), used by ir/parse.c.
 * It reports malformed tokens through the diagnostics sink and returns
 * them as IR_TOK_ERROR. */
#ifndef QUADC_IR_TEXT_LEX_H
#define QUADC_IR_TEXT_LEX_H

#include <stdbool.h>
#include <stddef.h>

#include "ir/diag.h"

typedef enum ir_token_kind {
    IR_TOK_EOF,
    IR_TOK_ERROR,  /* the lexer already reported it */
    IR_TOK_WORD,   /* [A-Za-z_][A-Za-z0-9_.]*: keywords, op names, dtypes */
    IR_TOK_NUMBER, /* -?digits(.digits)?([eE][+-]?digits)? */
    IR_TOK_LOCAL,  /* %name or %"name" */
    IR_TOK_GLOBAL, /* @name or @"name" */
    IR_TOK_STRING, /* "text" */
    IR_TOK_MINUS,
    IR_TOK_EQUAL,
    IR_TOK_COMMA,
    IR_TOK_COLON,
    IR_TOK_LBRACE,
    IR_TOK_RBRACE,
    IR_TOK_LBRACKET,
    IR_TOK_RBRACKET,
    IR_TOK_LPAREN,
    IR_TOK_RPAREN,
} ir_token_kind;

typedef struct ir_token {
    ir_token_kind kind;
    const char *start; /* in the source text */
    size_t len;
    int line;
    int col;
    char *str; /* decoded name or string for LOCAL, GLOBAL, STRING; owned */
} ir_token;

typedef struct ir_lexer {
    const char *path; /* interned */
    const char *text;
    size_t len;
    size_t pos;
    int line;
    size_t line_start; /* offset of the current line */
    ir_diag *diag;
} ir_lexer;

void ir_lex_init(ir_lexer *lx, const char *path, const char *text, size_t len, ir_diag *d);
/* Reads the next token into t. t->str is malloc'd for names and strings,
 * and the caller frees it. */
void ir_lex_next(ir_lexer *lx, ir_token *t);
/* Returns the location of t, spanning the token for the caret. */
ir_loc ir_token_loc(const ir_lexer *lx, const ir_token *t);

#endif
