/* The IR text parser: a recursive-descent parser, over the hand-written
 * lexer in ir/text_lex.c, for the format ir/print.c writes (see ir/text.h).
 * Every value goes through ir_add_typed, so the written type is checked
 * against inference.
 * After an error the parser skips to the next line and goes on, so one run
 * reports several errors. Names whose definition failed are remembered, and
 * their uses add no follow-on errors. */
#include "ir/text.h"
#include "ir/text_lex.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
    ir_lexer lex;
    ir_token tok; /* the lookahead token */
    ir_diag *diag;
    ir_graph *g;
    ir_loc *def_locs; /* text location of each value's definition, by id */
    int def_cap;
    char **poisoned; /* hash set of the names whose definition failed */
    size_t poisoned_cap; /* slots, a power of two, or 0 */
    size_t npoisoned;
    bool saw_return;
} parser;

static ir_loc tok_loc(const parser *p, const ir_token *t)
{
    return ir_token_loc(&p->lex, t);
}

static void error_at(parser *p, const ir_token *t, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void error_at(parser *p, const ir_token *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ir_diag_verror(p->diag, tok_loc(p, t), fmt, ap);
    va_end(ap);
}

static void advance(parser *p)
{
    free(p->tok.str);
    ir_lex_next(&p->lex, &p->tok);
}

static bool tok_is_word(const ir_token *t, const char *word)
{
    return t->kind == IR_TOK_WORD && t->len == strlen(word) && memcmp(t->start, word, t->len) == 0;
}

/* Copies the current ir_token's text into buf (truncated to cap - 1). */
static const char *tok_text(const ir_token *t, char *buf, size_t cap)
{
    size_t n = t->len < cap - 1 ? t->len : cap - 1;
    memcpy(buf, t->start, n);
    buf[n] = '\0';
    return buf;
}

/* Reports "expected X" at the current ir_token, quoting what was found. */
static void expected(parser *p, const char *what)
{
    char found[40];
    if (p->tok.kind == IR_TOK_ERROR)
        return; /* the lexer has reported it */
    if (p->tok.kind == IR_TOK_EOF)
        error_at(p, &p->tok, "expected %s, found the end of the input", what);
    else
        error_at(p, &p->tok, "expected %s, found '%s'", what, tok_text(&p->tok, found, sizeof found));
}

static bool expect(parser *p, ir_token_kind kind, const char *what)
{
    if (p->tok.kind != kind) {
        expected(p, what);
        return false;
    }
    advance(p);
    return true;
}

/* ---- literals ---- */

static bool parse_int(parser *p, int64_t *out, const char *what)
{
    char buf[64];
    if (p->tok.kind != IR_TOK_NUMBER) {
        expected(p, what);
        return false;
    }
    if (p->tok.len >= sizeof buf) {
        error_at(p, &p->tok, "%s is too long to be a 64-bit integer", what);
        return false;
    }
    tok_text(&p->tok, buf, sizeof buf);
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (*end != '\0') {
        error_at(p, &p->tok, "expected %s, found '%s', which is not an integer", what, buf);
        return false;
    }
    if (errno == ERANGE) {
        error_at(p, &p->tok, "%s '%s' does not fit in 64 bits", what, buf);
        return false;
    }
    *out = v;
    advance(p);
    return true;
}

/* Parses an int and checks that it lies in [lo, hi]. */
static bool parse_int_in(parser *p, int64_t lo, int64_t hi, int64_t *out, const char *what)
{
    ir_token at = p->tok;
    at.str = NULL;
    if (!parse_int(p, out, what))
        return false;
    if (*out < lo || *out > hi) {
        error_at(p, &at, "%s %" PRId64 " is out of range [%" PRId64 ", %" PRId64 "]", what, *out, lo, hi);
        return false;
    }
    return true;
}

/* Parses a float: a number, inf, -inf or nan. */
static bool parse_float(parser *p, double *out)
{
    bool negative = false;
    if (p->tok.kind == IR_TOK_MINUS) {
        negative = true;
        advance(p);
        if (!tok_is_word(&p->tok, "inf")) {
            expected(p, "'inf' after '-'");
            return false;
        }
    }
    if (tok_is_word(&p->tok, "nan")) {
        *out = (double)NAN;
        advance(p);
        return true;
    }
    if (tok_is_word(&p->tok, "inf")) {
        *out = negative ? -(double)INFINITY : (double)INFINITY;
        advance(p);
        return true;
    }
    if (p->tok.kind != IR_TOK_NUMBER) {
        expected(p, "a number");
        return false;
    }
    char *buf = malloc(p->tok.len + 1);
    if (!buf)
        return false;
    tok_text(&p->tok, buf, p->tok.len + 1);
    *out = strtod(buf, NULL);
    free(buf);
    advance(p);
    return true;
}

/* ---- types, attributes, locations ---- */

static bool parse_type(parser *p, ir_type *t)
{
    char name[16];
    memset(t, 0, sizeof *t);
    if (p->tok.kind != IR_TOK_WORD) {
        expected(p, "a type such as f32[4,64]");
        return false;
    }
    t->dtype = p->tok.len < sizeof name ? ir_dtype_from_name(tok_text(&p->tok, name, sizeof name)) : IR_DTYPE_COUNT;
    if (t->dtype == IR_DTYPE_COUNT) {
        char found[40];
        error_at(p, &p->tok, "unknown dtype '%s'; expected f32, f16, bf16, i8, u8, i32 or i64",
                 tok_text(&p->tok, found, sizeof found));
        return false;
    }
    advance(p);
    if (!expect(p, IR_TOK_LBRACKET, "'[' after the dtype"))
        return false;
    int64_t numel = 1;
    while (p->tok.kind != IR_TOK_RBRACKET) {
        if (t->rank > 0 && !expect(p, IR_TOK_COMMA, "',' or ']' in the shape"))
            return false;
        if (t->rank == IR_MAX_RANK) {
            error_at(p, &p->tok, "type has more than %d dimensions", IR_MAX_RANK);
            return false;
        }
        ir_token at = p->tok;
        at.str = NULL;
        int64_t d;
        if (!parse_int_in(p, 1, IR_MAX_DIM, &d, "dimension"))
            return false;
        numel *= d; /* cannot overflow: numel <= IR_MAX_NUMEL = 2^40 and d < 2^31 */
        if (numel > IR_MAX_NUMEL) {
            error_at(p, &at, "type has more than %" PRId64 " (2^40) elements", IR_MAX_NUMEL);
            return false;
        }
        t->dims[t->rank++] = d;
    }
    advance(p);
    return true;
}

static bool parse_int_list(parser *p, ir_attr *a)
{
    if (!expect(p, IR_TOK_LBRACKET, "'[' to start an integer list"))
        return false;
    a->nints = 0;
    while (p->tok.kind != IR_TOK_RBRACKET) {
        if (a->nints > 0 && !expect(p, IR_TOK_COMMA, "',' or ']' in the integer list"))
            return false;
        if (a->nints == IR_MAX_RANK) {
            error_at(p, &p->tok, "integer list has more than %d entries", IR_MAX_RANK);
            return false;
        }
        if (!parse_int(p, &a->ints[a->nints], "an integer"))
            return false;
        a->nints++;
    }
    advance(p);
    return true;
}

static const char *attr_kind_name(ir_attr_kind kind)
{
    switch (kind) {
    case IR_ATTR_INT: return "an integer";
    case IR_ATTR_FLOAT: return "a float";
    case IR_ATTR_INTS: return "an integer list such as [0,2,1]";
    case IR_ATTR_STR: return "a quoted string";
    }
    return "a value";
}

static bool parse_attr_value(parser *p, ir_attr_kind kind, ir_attr *a)
{
    a->set = true;
    switch (kind) {
    case IR_ATTR_INT:
        return parse_int(p, &a->i, "an integer");
    case IR_ATTR_FLOAT:
        return parse_float(p, &a->f);
    case IR_ATTR_INTS:
        return parse_int_list(p, a);
    case IR_ATTR_STR:
        if (p->tok.kind != IR_TOK_STRING) {
            expected(p, "a quoted string");
            return false;
        }
        free(a->s);
        a->s = p->tok.str;
        p->tok.str = NULL;
        advance(p);
        return true;
    }
    return false;
}

/* Parses "{name=value, ...}" into attrs, which starts with the defaults. */
static bool parse_attrs(parser *p, ir_attrs *attrs)
{
    const ir_op_info *info = ir_op_get(attrs->op);
    bool seen[IR_MAX_ATTRS] = {false};
    int count = 0;
    advance(p); /* '{' */
    while (p->tok.kind != IR_TOK_RBRACE) {
        if (count > 0 && !expect(p, IR_TOK_COMMA, "',' or '}' in the attributes"))
            return false;
        char name[40];
        if (p->tok.kind != IR_TOK_WORD) {
            expected(p, "an attribute name");
            return false;
        }
        tok_text(&p->tok, name, sizeof name);
        int slot = p->tok.len < sizeof name ? ir_op_attr_index(attrs->op, name) : -1;
        if (slot < 0) {
            if (info->nattrs == 0) {
                error_at(p, &p->tok, "op '%s' has no attributes, but '%s' is given", info->name, name);
            } else {
                char list[128] = "";
                for (int i = 0; i < info->nattrs; i++)
                    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                             info->attrs[i].name);
                error_at(p, &p->tok, "op '%s' has no attribute '%s'; its attributes are %s", info->name, name, list);
            }
            return false;
        }
        if (seen[slot]) {
            error_at(p, &p->tok, "attribute '%s' is given twice", name);
            return false;
        }
        seen[slot] = true;
        count++;
        advance(p);
        if (!expect(p, IR_TOK_EQUAL, "'=' after the attribute name"))
            return false;
        ir_attr_kind kind = info->attrs[slot].kind;
        if (!parse_attr_value(p, kind, &attrs->a[slot])) {
            if (p->tok.kind != IR_TOK_ERROR)
                ir_diag_note(p->diag, tok_loc(p, &p->tok), "attribute '%s' of op '%s' takes %s", name, info->name,
                             attr_kind_name(kind));
            return false;
        }
    }
    advance(p);
    return true;
}

/* Parses an optional loc("file":line:col). */
static bool parse_loc(parser *p, ir_loc *loc)
{
    memset(loc, 0, sizeof *loc);
    if (!tok_is_word(&p->tok, "loc"))
        return true;
    advance(p);
    if (!expect(p, IR_TOK_LPAREN, "'(' after 'loc'"))
        return false;
    if (p->tok.kind != IR_TOK_STRING) {
        expected(p, "a quoted file name");
        return false;
    }
    loc->file = ir_diag_intern(p->diag, p->tok.str);
    advance(p);
    int64_t line, col;
    if (!expect(p, IR_TOK_COLON, "':' after the file name") || !parse_int_in(p, 0, INT32_MAX, &line, "line number") ||
        !expect(p, IR_TOK_COLON, "':' after the line number") || !parse_int_in(p, 0, INT32_MAX, &col, "column number") ||
        !expect(p, IR_TOK_RPAREN, "')' to close loc("))
        return false;
    loc->line = (int)line;
    loc->col = (int)col;
    return true;
}

/* ---- statements ---- */

/* FNV-1a. The poisoned set is a hash table because a chain of values that
 * use a failed one poisons every name in it, and a linear search per use
 * made parsing such a chain quadratic in its length. */
static size_t hash_name(const char *name)
{
    size_t h = 14695981039346656037u;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        h = (h ^ *c) * 1099511628211u;
    return h;
}

/* Returns the slot of name in the poisoned set, or the empty slot where it
 * would go. */
static size_t poisoned_slot(char *const *slots, size_t cap, const char *name)
{
    size_t i = hash_name(name) & (cap - 1);
    while (slots[i] && strcmp(slots[i], name) != 0)
        i = (i + 1) & (cap - 1);
    return i;
}

static bool is_poisoned(const parser *p, const char *name)
{
    return p->poisoned_cap > 0 && p->poisoned[poisoned_slot(p->poisoned, p->poisoned_cap, name)] != NULL;
}

/* Adds name to the poisoned set, keeping it at most half full. Out of
 * memory, the name is left out, which only costs follow-on errors. */
static void poison(parser *p, const char *name)
{
    if (is_poisoned(p, name))
        return;
    if (2 * (p->npoisoned + 1) > p->poisoned_cap) {
        size_t cap = p->poisoned_cap ? 2 * p->poisoned_cap : 64;
        char **slots = calloc(cap, sizeof *slots);
        if (!slots)
            return;
        for (size_t i = 0; i < p->poisoned_cap; i++)
            if (p->poisoned[i])
                slots[poisoned_slot(slots, cap, p->poisoned[i])] = p->poisoned[i];
        free(p->poisoned);
        p->poisoned = slots;
        p->poisoned_cap = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return;
    p->poisoned[poisoned_slot(p->poisoned, p->poisoned_cap, name)] = copy;
    p->npoisoned++;
}

/* Resolves the value reference at the current ir_token. Returns the id, or -1
 * (after reporting, unless the name belongs to a failed definition). */
static int parse_value_ref(parser *p)
{
    if (p->tok.kind != IR_TOK_LOCAL && p->tok.kind != IR_TOK_GLOBAL) {
        expected(p, "a value such as %x or @w");
        return -1;
    }
    char sigil = p->tok.kind == IR_TOK_LOCAL ? '%' : '@';
    int id = ir_find(p->g, p->tok.str);
    if (id < 0) {
        if (!is_poisoned(p, p->tok.str))
            error_at(p, &p->tok, "use of undefined value '%c%s'", sigil, p->tok.str);
        return -1;
    }
    bool is_param = p->g->values[id]->op == IR_OP_PARAM;
    if (is_param != (sigil == '@')) {
        error_at(p, &p->tok, "'%c%s' refers to %s; write it as '%c%s'", sigil, p->tok.str,
                 is_param ? "a parameter" : "a value that is not a parameter", is_param ? '@' : '%', p->tok.str);
        return -1;
    }
    advance(p);
    return id;
}

static bool parse_hparam(parser *p)
{
    advance(p); /* 'hparam' */
    ir_token at = p->tok;
    char *name = NULL;
    if (p->tok.kind == IR_TOK_WORD) {
        name = malloc(p->tok.len + 1);
        if (name)
            tok_text(&p->tok, name, p->tok.len + 1);
    } else if (p->tok.kind == IR_TOK_STRING) {
        name = p->tok.str;
        p->tok.str = NULL;
    } else {
        expected(p, "a hyperparameter name");
        return false;
    }
    at.str = NULL;
    advance(p);
    int64_t value;
    bool ok = name && expect(p, IR_TOK_EQUAL, "'=' after the hyperparameter name") &&
              parse_int(p, &value, "an integer value");
    for (int i = 0; ok && i < p->g->nhparams; i++) {
        if (strcmp(p->g->hparams[i].name, name) == 0) {
            error_at(p, &at, "hyperparameter '%s' is set twice", name);
            ok = false;
        }
    }
    if (ok)
        ok = ir_set_hparam(p->g, name, value) == 0;
    free(name);
    return ok;
}

static bool record_def_loc(parser *p, int id, ir_loc loc)
{
    if (id >= p->def_cap) {
        int cap = p->def_cap ? p->def_cap * 2 : 64;
        while (cap <= id)
            cap *= 2;
        ir_loc *grown = realloc(p->def_locs, sizeof(ir_loc) * (size_t)cap);
        if (!grown)
            return false;
        p->def_locs = grown;
        p->def_cap = cap;
    }
    p->def_locs[id] = loc;
    return true;
}

/* Checks the name of a new definition: not taken, and written with the
 * sigil that matches the op. */
static bool check_definition_name(parser *p, const ir_token *name_tok, ir_op op)
{
    char sigil = name_tok->kind == IR_TOK_LOCAL ? '%' : '@';
    const char *name = name_tok->str;
    int previous = ir_find(p->g, name);
    if (previous >= 0) {
        error_at(p, name_tok, "redefinition of value '%c%s'", sigil, name);
        ir_diag_note(p->diag, p->def_locs[previous], "previous definition is here");
        return false;
    }
    if (name[0] == '\0') {
        error_at(p, name_tok, "value names cannot be empty");
        return false;
    }
    if ((op == IR_OP_PARAM) != (sigil == '@')) {
        error_at(p, name_tok, op == IR_OP_PARAM ? "a param must be named with '@'; write '@%s'"
                                                : "only params are named with '@'; write '%%%s'",
                 name);
        return false;
    }
    return true;
}

/* Parses a comma-separated operand list, which may be empty. */
static bool parse_operands(parser *p, int **ops, int *nops)
{
    int cap = 0;
    if (p->tok.kind != IR_TOK_LOCAL && p->tok.kind != IR_TOK_GLOBAL)
        return true;
    while (true) {
        int id = parse_value_ref(p);
        if (id < 0)
            return false;
        if (*nops == cap) {
            cap = cap ? cap * 2 : 4;
            int *grown = realloc(*ops, sizeof(int) * (size_t)cap);
            if (!grown)
                return false;
            *ops = grown;
        }
        (*ops)[(*nops)++] = id;
        if (p->tok.kind != IR_TOK_COMMA)
            return true;
        advance(p);
    }
}

/* Parses "%name = op operands {attrs} : type loc(...)". */
static bool parse_value_def(parser *p)
{
    ir_token name_tok = p->tok;
    p->tok.str = NULL; /* name_tok owns the name now */
    advance(p);
    bool ok = expect(p, IR_TOK_EQUAL, "'=' after the value name");

    ir_op op = IR_OP_COUNT;
    ir_token op_tok = p->tok;
    op_tok.str = NULL;
    if (ok && p->tok.kind != IR_TOK_WORD) {
        expected(p, "an op name");
        ok = false;
    } else if (ok) {
        char op_name[40];
        tok_text(&p->tok, op_name, sizeof op_name);
        op = p->tok.len < sizeof op_name ? ir_op_from_name(op_name) : IR_OP_COUNT;
        if (op == IR_OP_COUNT) {
            const char *hint = ir_op_suggest(op_name);
            if (hint)
                error_at(p, &p->tok, "unknown op '%s'; did you mean '%s'?", op_name, hint);
            else
                error_at(p, &p->tok, "unknown op '%s'", op_name);
            ok = false;
        } else {
            advance(p);
        }
    }
    ok = ok && check_definition_name(p, &name_tok, op);

    int *ops = NULL, nops = 0;
    ok = ok && parse_operands(p, &ops, &nops);
    if (ok && nops > 0 && (ir_op_get(op)->flags & IR_OPF_LEAF)) {
        error_at(p, &op_tok, "op '%s' takes no operands; its type is written after ':'", ir_op_get(op)->name);
        ok = false;
    }

    ir_attrs attrs = ir_attrs_for(ok ? op : IR_OP_ADD);
    if (ok && p->tok.kind == IR_TOK_LBRACE)
        ok = parse_attrs(p, &attrs);
    ir_type type;
    ok = ok && expect(p, IR_TOK_COLON, "':' and the result type") && parse_type(p, &type);
    ir_loc loc;
    ok = ok && parse_loc(p, &loc);

    if (ok) {
        int id = ir_add_typed(p->g, op, name_tok.str, ops, nops, &attrs, &type, tok_loc(p, &op_tok));
        ok = id >= 0 && record_def_loc(p, id, tok_loc(p, &name_tok));
        if (id >= 0)
            p->g->values[id]->loc = loc;
    }
    if (!ok && name_tok.str && ir_find(p->g, name_tok.str) < 0)
        poison(p, name_tok.str);
    ir_attrs_clear(&attrs);
    free(ops);
    free(name_tok.str);
    return ok;
}

static bool parse_return(parser *p)
{
    ir_token at = p->tok;
    at.str = NULL;
    advance(p);
    if (p->saw_return) {
        error_at(p, &at, "the graph has a second 'return'; list every output in one");
        return false;
    }
    p->saw_return = true;
    int *ops = NULL, nops = 0;
    bool ok = parse_operands(p, &ops, &nops);
    for (int i = 0; ok && i < nops; i++)
        ok = ir_add_output(p->g, ops[i]) == 0;
    free(ops);
    return ok;
}

/* Skips the rest of the line of a failed statement so that parsing can go
 * on with the next one. A '}' on that line is skipped too, because it may
 * close an attribute list. */
static void skip_to_next_line(parser *p, int line)
{
    while (p->tok.kind != IR_TOK_EOF && p->tok.line == line)
        advance(p);
}

static bool parse_statement(parser *p)
{
    if (tok_is_word(&p->tok, "hparam"))
        return parse_hparam(p);
    if (tok_is_word(&p->tok, "return"))
        return parse_return(p);
    if (p->tok.kind == IR_TOK_LOCAL || p->tok.kind == IR_TOK_GLOBAL)
        return parse_value_def(p);
    expected(p, "a value definition, 'hparam', 'return' or '}'");
    return false;
}

static void parse_graph(parser *p)
{
    if (!tok_is_word(&p->tok, "graph")) {
        expected(p, "'graph'");
        return;
    }
    advance(p);
    if (p->tok.kind != IR_TOK_GLOBAL) {
        expected(p, "the graph name, such as @gpt2");
        return;
    }
    p->g = ir_graph_new(p->tok.str, p->diag);
    if (!p->g)
        return;
    advance(p);
    if (!expect(p, IR_TOK_LBRACE, "'{' to open the graph body"))
        return;
    while (p->tok.kind != IR_TOK_RBRACE && p->tok.kind != IR_TOK_EOF) {
        int line = p->tok.line;
        if (!parse_statement(p)) {
            /* A statement that failed on a later line resumes there. */
            if (p->tok.line == line)
                skip_to_next_line(p, line);
            continue;
        }
        if (p->tok.kind != IR_TOK_RBRACE && p->tok.kind != IR_TOK_EOF && p->tok.line == line) {
            expected(p, "the end of the line");
            skip_to_next_line(p, line);
        }
    }
    if (!expect(p, IR_TOK_RBRACE, "'}' to close the graph body"))
        return;
    if (p->tok.kind != IR_TOK_EOF)
        expected(p, "the end of the input after the graph");
}

ir_graph *ir_parse_string(const char *path, const char *text, size_t len, ir_diag *d)
{
    if (len > IR_MAX_TEXT_BYTES) {
        ir_diag_file_error(d, path ? path : "<input>", "the IR text is %zu bytes; the limit is %zu bytes", len,
                           IR_MAX_TEXT_BYTES);
        return NULL;
    }
    parser p;
    memset(&p, 0, sizeof p);
    ir_lex_init(&p.lex, ir_diag_add_source(d, path ? path : "<input>", text, len), text, len, d);
    p.diag = d;
    int errors_before = ir_diag_error_count(d);

    ir_lex_next(&p.lex, &p.tok);
    parse_graph(&p);

    free(p.tok.str);
    free(p.def_locs);
    for (size_t i = 0; i < p.poisoned_cap; i++)
        free(p.poisoned[i]);
    free(p.poisoned);
    if (ir_diag_error_count(d) != errors_before || !p.g) {
        ir_graph_free(p.g);
        return NULL;
    }
    return p.g;
}
