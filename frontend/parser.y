/* The grammar of quadc model files (docs/dsl.md describes the language).
 * The parser only builds the syntax tree, and frontend/lower.c gives it
 * meaning. On a syntax error it skips to the next ';' or '}' and goes on,
 * so one run reports several errors. */
%code requires {
#include "frontend/syntax.h"

#ifndef YY_TYPEDEF_YY_SCANNER_T
#define YY_TYPEDEF_YY_SCANNER_T
typedef void *yyscan_t;
#endif

typedef struct fe_arg_list { fe_arg *first, *last; } fe_arg_list;
typedef struct fe_name_list { fe_name *first, *last; } fe_name_list;
typedef struct fe_stmt_list { fe_stmt *first, *last; } fe_stmt_list;
}

%code {
#include <stdio.h>
#include <string.h>

int qdlex(QDSTYPE *lval, QDLTYPE *lloc, yyscan_t scanner);

/* A span on one line keeps its end column, and a longer one gets one caret. */
static ir_loc to_loc(const fe_parser *p, QDLTYPE l)
{
    ir_loc loc = {p->file, l.first_line, l.first_column, l.last_line == l.first_line ? l.last_column : 0};
    return loc;
}

#define LOC(l) to_loc(p, (l))

/* Bison calls this only when its stack is exhausted. The scanner's nesting
 * limit keeps the stack far below that. */
static void qderror(QDLTYPE *lloc, yyscan_t scanner, fe_parser *p, const char *msg)
{
    (void)scanner;
    ir_diag_error(p->diag, to_loc(p, *lloc), "%s", msg);
}

static fe_arg_list arg_list(fe_arg *a)
{
    fe_arg_list list = {a, a};
    return list;
}

static fe_arg_list arg_append(fe_arg_list list, fe_arg *a)
{
    list.last->next = a;
    list.last = a;
    return list;
}

static fe_name_list name_list(fe_name *n)
{
    fe_name_list list = {n, n};
    return list;
}

static fe_name_list name_append(fe_name_list list, fe_name *n)
{
    list.last->next = n;
    list.last = n;
    return list;
}

static fe_stmt *stmt_decl(fe_parser *p, fe_stmt_kind kind, QDLTYPE where, const char *name, QDLTYPE name_at)
{
    fe_stmt *s = fe_stmt_new(p, kind, LOC(where));
    s->names = fe_name_new(p, name, LOC(name_at));
    return s;
}
}

%define api.prefix {qd}
%define api.pure full
%define api.token.prefix {TOK_}
%define parse.error custom
%define parse.lac full
%locations
%expect 0
%param {yyscan_t scanner}
%parse-param {fe_parser *p}

%union {
    int64_t i;
    double f;
    const char *str;
    fe_expr *expr;
    fe_arg *arg;
    fe_arg_list args;
    fe_name_list names;
    fe_stmt_list stmts;
    fe_stmt *stmt;
    fe_type type;
}

%token <str> NAME "name"
%token <str> STRING "string"
%token <i> INT "integer"
%token <f> FLOAT "number"
%token HPARAM "hparam" INPUT "input" PARAM "param" BLOCK "block" REPEAT "repeat"
%token FOR "for" IN "in" RETURN "return" OUTPUT "output" DOTDOT ".."

%left '+' '-'
%left '*' '/' '%'

%type <stmts> stmts
%type <stmt> stmt
%type <names> names
%type <args> args exprs
%type <arg> arg
%type <expr> expr primary
%type <type> type

%%

file:
    stmts                       { p->first = $1.first; p->last = $1.last; }
;

stmts:
    %empty                      { $$.first = $$.last = NULL; }
  | stmts stmt                  {
                                    $$ = $1;
                                    if ($2 && !$$.first)
                                        $$.first = $$.last = $2;
                                    else if ($2) {
                                        $$.last->next = $2;
                                        $$.last = $2;
                                    }
                                }
;

stmt:
    HPARAM NAME '=' expr ';'    { $$ = stmt_decl(p, FE_STMT_HPARAM, @$, $2, @2); $$->value = $4; }
  | INPUT NAME ':' type ';'     { $$ = stmt_decl(p, FE_STMT_INPUT, @$, $2, @2); $$->type = $4; }
  | PARAM NAME ':' type ';'     { $$ = stmt_decl(p, FE_STMT_PARAM, @$, $2, @2); $$->type = $4; }
  | PARAM NAME ':' type '=' expr ';'
                                {
                                    $$ = stmt_decl(p, FE_STMT_PARAM, @$, $2, @2);
                                    $$->type = $4;
                                    $$->value = $6;
                                }
  | BLOCK NAME '(' names ')' '{' stmts '}'
                                {
                                    $$ = stmt_decl(p, FE_STMT_BLOCK, @$, $2, @2);
                                    $$->names->next = $4.first;
                                    $$->body = $7.first;
                                }
  | names '=' expr ';'          { $$ = fe_stmt_new(p, FE_STMT_ASSIGN, LOC(@$)); $$->names = $1.first; $$->value = $3; }
  | names '=' REPEAT NAME '(' exprs ')' FOR NAME IN expr DOTDOT expr ';'
                                {
                                    $$ = fe_stmt_new(p, FE_STMT_REPEAT, LOC(@$));
                                    $$->names = $1.first;
                                    $$->callee = $4;
                                    $$->callee_loc = LOC(@4);
                                    $$->args = $6.first;
                                    $$->loop_var = $9;
                                    $$->loop_loc = LOC(@9);
                                    $$->from = $11;
                                    $$->to = $13;
                                }
  | RETURN exprs ';'            { $$ = fe_stmt_new(p, FE_STMT_RETURN, LOC(@$)); $$->args = $2.first; }
  | OUTPUT names ';'            { $$ = fe_stmt_new(p, FE_STMT_OUTPUT, LOC(@$)); $$->names = $2.first; }
  | error ';'                   { $$ = NULL; }
  | error '}'                   { $$ = NULL; }
;

names:
    NAME                        { $$ = name_list(fe_name_new(p, $1, LOC(@1))); }
  | names ',' NAME              { $$ = name_append($1, fe_name_new(p, $3, LOC(@3))); }
;

type:
    NAME '[' ']'                { $$.dtype = $1; $$.dtype_loc = LOC(@1); $$.dims = NULL; }
  | NAME '[' exprs ']'          { $$.dtype = $1; $$.dtype_loc = LOC(@1); $$.dims = $3.first; }
;

exprs:
    expr                        { $$ = arg_list(fe_arg_new(p, NULL, LOC(@1), $1)); }
  | exprs ',' expr              { $$ = arg_append($1, fe_arg_new(p, NULL, LOC(@3), $3)); }
;

args:
    arg                         { $$ = arg_list($1); }
  | args ',' arg                { $$ = arg_append($1, $3); }
;

arg:
    expr                        { $$ = fe_arg_new(p, NULL, LOC(@1), $1); }
  | NAME '=' expr               { $$ = fe_arg_new(p, $1, LOC(@1), $3); }
;

expr:
    expr '+' expr               { $$ = fe_expr_binary(p, '+', $1, $3, LOC(@$)); }
  | expr '-' expr               { $$ = fe_expr_binary(p, '-', $1, $3, LOC(@$)); }
  | expr '*' expr               { $$ = fe_expr_binary(p, '*', $1, $3, LOC(@$)); }
  | expr '/' expr               { $$ = fe_expr_binary(p, '/', $1, $3, LOC(@$)); }
  | expr '%' expr               { $$ = fe_expr_binary(p, '%', $1, $3, LOC(@$)); }
  | '-' primary                 { $$ = fe_expr_neg(p, $2, LOC(@$)); }
  | primary                     { $$ = $1; }
;

primary:
    INT                         { $$ = fe_expr_leaf(p, FE_EXPR_INT, LOC(@1)); $$->i = $1; }
  | FLOAT                       { $$ = fe_expr_leaf(p, FE_EXPR_FLOAT, LOC(@1)); $$->f = $1; }
  | STRING                      { $$ = fe_expr_leaf(p, FE_EXPR_STRING, LOC(@1)); $$->text = $1; }
  | NAME                        { $$ = fe_expr_leaf(p, FE_EXPR_NAME, LOC(@1)); $$->text = $1; }
  | NAME '(' ')'                { $$ = fe_expr_call(p, $1, NULL, LOC(@$)); }
  | NAME '(' args ')'           { $$ = fe_expr_call(p, $1, $3.first, LOC(@$)); }
  | '(' expr ')'                { $$ = $2; }
  | '[' ']'                     { $$ = fe_expr_list(p, NULL, LOC(@$)); }
  | '[' exprs ']'               { $$ = fe_expr_list(p, $2.first, LOC(@$)); }
;

%%

/* Describes a token kind for a message: "';'", "'hparam'", "name". */
static const char *describe_symbol(yysymbol_kind_t kind)
{
    switch (kind) {
    case YYSYMBOL_YYEOF: return "end of file";
    case YYSYMBOL_NAME: return "name";
    case YYSYMBOL_STRING: return "string";
    case YYSYMBOL_INT: return "integer";
    case YYSYMBOL_FLOAT: return "number";
    case YYSYMBOL_HPARAM: return "'hparam'";
    case YYSYMBOL_INPUT: return "'input'";
    case YYSYMBOL_PARAM: return "'param'";
    case YYSYMBOL_BLOCK: return "'block'";
    case YYSYMBOL_REPEAT: return "'repeat'";
    case YYSYMBOL_FOR: return "'for'";
    case YYSYMBOL_IN: return "'in'";
    case YYSYMBOL_RETURN: return "'return'";
    case YYSYMBOL_OUTPUT: return "'output'";
    case YYSYMBOL_DOTDOT: return "'..'";
    default: return yysymbol_name(kind);
    }
}

/* Appends "a", ", b" or " or b" to msg for the index-th of count items. */
static int append_item(char *msg, int n, size_t cap, int index, int count, const char *item)
{
    const char *sep = index == 0 ? "" : index + 1 == count ? " or " : ", ";
    return n + snprintf(msg + n, cap - (size_t)n, "%s%s", sep, item);
}

/* True when kind is the character token 'c'. */
static bool is_char(yysymbol_kind_t kind, char c)
{
    const char *name = yysymbol_name(kind);
    return name[0] == '\'' && name[1] == c && name[2] == '\'' && name[3] == '\0';
}

static bool starts_expression(yysymbol_kind_t kind)
{
    return kind == YYSYMBOL_NAME || kind == YYSYMBOL_INT || kind == YYSYMBOL_FLOAT || kind == YYSYMBOL_STRING ||
           is_char(kind, '(') || is_char(kind, '[') || is_char(kind, '-');
}

static bool is_operator(yysymbol_kind_t kind)
{
    return is_char(kind, '+') || is_char(kind, '-') || is_char(kind, '*') || is_char(kind, '/') || is_char(kind, '%');
}

static int count_matching(const yysymbol_kind_t *kinds, int n, bool (*match)(yysymbol_kind_t))
{
    int count = 0;
    for (int k = 0; k < n; k++)
        count += match(kinds[k]);
    return count;
}

/* Formats "; expected ';' or an operator" into msg. The tokens that can
 * start an expression, and the binary operators, are each named as one
 * group when all of them are expected. Returns the new length. Lists of
 * more than five items are left out. */
static int describe_expected(char *msg, int n, size_t cap, const yysymbol_kind_t *expected, int count)
{
    bool has_expression = count_matching(expected, count, starts_expression) == 7;
    bool has_operators = count_matching(expected, count, is_operator) == 5;
    const char *items[8];
    int nitems = 0;
    for (int k = 0; k < count; k++) {
        if ((has_expression && starts_expression(expected[k])) || (has_operators && is_operator(expected[k])))
            continue;
        if (nitems == 6)
            return n;
        items[nitems++] = describe_symbol(expected[k]);
    }
    if (has_expression)
        items[nitems++] = "an expression";
    if (has_operators)
        items[nitems++] = "an operator";
    if (nitems == 0 || nitems > 5)
        return n;
    n += snprintf(msg + n, cap - (size_t)n, "; expected ");
    for (int k = 0; k < nitems; k++)
        n = append_item(msg, n, cap, k, nitems, items[k]);
    return n;
}

/* Reports "unexpected name 'x'; expected ';' or ','". A missing ';' before
 * a token on a later line is reported at the end of the statement. */
static int yyreport_syntax_error(const yypcontext_t *ctx, yyscan_t scanner, fe_parser *p)
{
    (void)scanner;
    if (p->stop)
        return 0;
    yysymbol_kind_t expected[YYNTOKENS];
    int count = yypcontext_expected_tokens(ctx, expected, YYNTOKENS);
    if (count < 0)
        count = 0;
    yysymbol_kind_t got = yypcontext_token(ctx);
    ir_loc loc = to_loc(p, *yypcontext_location(ctx));
    bool semicolon_expected = false;
    for (int k = 0; k < count; k++)
        semicolon_expected = semicolon_expected || is_char(expected[k], ';');
    if (semicolon_expected && p->previous_line > 0 && loc.line > p->previous_line) {
        ir_loc end = {p->file, p->previous_line, p->previous_end_col, 0};
        ir_diag_error(p->diag, end, "expected ';' at the end of the statement");
        return 0;
    }
    char msg[512];
    int n;
    if (got == YYSYMBOL_YYEOF || got == YYSYMBOL_YYEMPTY)
        n = snprintf(msg, sizeof msg, "unexpected end of file");
    else if (got == YYSYMBOL_NAME || got == YYSYMBOL_INT || got == YYSYMBOL_FLOAT || got == YYSYMBOL_STRING)
        n = snprintf(msg, sizeof msg, "unexpected %s '%s'", describe_symbol(got), p->token);
    else
        n = snprintf(msg, sizeof msg, "unexpected %s", describe_symbol(got));
    describe_expected(msg, n, sizeof msg, expected, count);
    ir_diag_error(p->diag, loc, "%s", msg);
    return 0;
}
