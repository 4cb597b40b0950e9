/* The lexer of the IR text format: words, numbers, %names and @names
 * (bare or quoted), strings with escapes, punctuation and // comments. */
#include "ir/text_lex.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void ir_lex_init(ir_lexer *lx, const char *path, const char *text, size_t len, ir_diag *d)
{
    memset(lx, 0, sizeof *lx);
    lx->path = path;
    lx->text = text;
    lx->len = len;
    lx->line = 1;
    lx->diag = d;
}

ir_loc ir_token_loc(const ir_lexer *lx, const ir_token *t)
{
    int width = t->len > 0 && t->len < 200 ? (int)t->len : 1;
    ir_loc loc = {lx->path, t->line, t->col, t->col + width};
    return loc;
}

static void lex_error(ir_lexer *lx, const ir_token *t, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void lex_error(ir_lexer *lx, const ir_token *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ir_diag_verror(lx->diag, ir_token_loc(lx, t), fmt, ap);
    va_end(ap);
}

static bool is_word_start(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool is_name_char(int c)
{
    return is_word_start(c) || is_digit(c) || c == '.';
}

static int peek_char(const ir_lexer *lx, size_t ahead)
{
    return lx->pos + ahead < lx->len ? (unsigned char)lx->text[lx->pos + ahead] : -1;
}

static void skip_space_and_comments(ir_lexer *lx)
{
    while (lx->pos < lx->len) {
        int c = peek_char(lx, 0);
        if (c == '\n') {
            lx->pos++;
            lx->line++;
            lx->line_start = lx->pos;
        } else if (c == ' ' || c == '\t' || c == '\r') {
            lx->pos++;
        } else if (c == '/' && peek_char(lx, 1) == '/') {
            while (lx->pos < lx->len && lx->text[lx->pos] != '\n')
                lx->pos++;
        } else {
            return;
        }
    }
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Lexes a double-quoted string starting at lx->pos (the opening quote) into
 * a malloc'd, decoded copy. Strings end on the same line. */
static bool lex_string(ir_lexer *lx, ir_token *t)
{
    size_t cap = 16, n = 0;
    bool has_nul = false;
    char *buf = malloc(cap);
    if (!buf)
        return false;
    lx->pos++;
    while (true) {
        int c = peek_char(lx, 0);
        if (c < 0 || c == '\n') {
            lex_error(lx, t, "string is missing its closing quote");
            free(buf);
            return false;
        }
        lx->pos++;
        if (c == '"')
            break;
        if (c == '\\') {
            int e = peek_char(lx, 0);
            lx->pos++;
            if (e == 'n') {
                c = '\n';
            } else if (e == 't') {
                c = '\t';
            } else if (e == '"' || e == '\\') {
                c = e;
            } else if (e == 'x' && hex_value(peek_char(lx, 0)) >= 0 && hex_value(peek_char(lx, 1)) >= 0) {
                c = hex_value(peek_char(lx, 0)) * 16 + hex_value(peek_char(lx, 1));
                lx->pos += 2;
            } else {
                lex_error(lx, t, "invalid escape in string; use \\\", \\\\, \\n, \\t or \\xHH");
                free(buf);
                return false;
            }
        }
        /* Reported once the closing quote is found, so that lexing goes on
         * after the string instead of inside it. */
        if (c == 0) {
            has_nul = true;
            continue;
        }
        if (n + 1 >= cap) {
            cap *= 2;
            char *grown = realloc(buf, cap);
            if (!grown) {
                free(buf);
                return false;
            }
            buf = grown;
        }
        buf[n++] = (char)c;
    }
    if (has_nul) {
        lex_error(lx, t, "string contains a NUL byte, which IR names and strings cannot hold");
        free(buf);
        return false;
    }
    buf[n] = '\0';
    t->str = buf;
    return true;
}

static void lex_name(ir_lexer *lx, ir_token *t, ir_token_kind kind)
{
    lx->pos++; /* the sigil */
    t->kind = kind;
    if (peek_char(lx, 0) == '"') {
        if (!lex_string(lx, t))
            t->kind = IR_TOK_ERROR;
        return;
    }
    size_t begin = lx->pos;
    while (is_name_char(peek_char(lx, 0)))
        lx->pos++;
    size_t n = lx->pos - begin;
    if (n == 0) {
        lex_error(lx, t, "expected a name after '%c'", kind == IR_TOK_LOCAL ? '%' : '@');
        t->kind = IR_TOK_ERROR;
        return;
    }
    t->str = malloc(n + 1);
    if (!t->str) {
        t->kind = IR_TOK_ERROR;
        return;
    }
    memcpy(t->str, lx->text + begin, n);
    t->str[n] = '\0';
}

static void lex_number(ir_lexer *lx)
{
    if (peek_char(lx, 0) == '-')
        lx->pos++;
    while (is_digit(peek_char(lx, 0)))
        lx->pos++;
    if (peek_char(lx, 0) == '.' && is_digit(peek_char(lx, 1))) {
        lx->pos++;
        while (is_digit(peek_char(lx, 0)))
            lx->pos++;
    }
    int e = peek_char(lx, 0);
    if (e == 'e' || e == 'E') {
        size_t sign = (peek_char(lx, 1) == '+' || peek_char(lx, 1) == '-') ? 1 : 0;
        if (is_digit(peek_char(lx, 1 + sign))) {
            lx->pos += 1 + sign;
            while (is_digit(peek_char(lx, 0)))
                lx->pos++;
        }
    }
}

static const struct {
    char c;
    ir_token_kind kind;
} punctuation[] = {
    {'=', IR_TOK_EQUAL},    {',', IR_TOK_COMMA},    {':', IR_TOK_COLON},  {'{', IR_TOK_LBRACE},
    {'}', IR_TOK_RBRACE},   {'[', IR_TOK_LBRACKET}, {']', IR_TOK_RBRACKET}, {'(', IR_TOK_LPAREN},
    {')', IR_TOK_RPAREN},
};

void ir_lex_next(ir_lexer *lx, ir_token *t)
{
    skip_space_and_comments(lx);
    memset(t, 0, sizeof *t);
    t->start = lx->text + lx->pos;
    t->line = lx->line;
    t->col = (int)(lx->pos - lx->line_start) + 1;
    int c = peek_char(lx, 0);
    if (c < 0) {
        t->kind = IR_TOK_EOF;
        return;
    }
    if (is_word_start(c)) {
        while (is_name_char(peek_char(lx, 0)))
            lx->pos++;
        t->kind = IR_TOK_WORD;
    } else if (is_digit(c) || (c == '-' && is_digit(peek_char(lx, 1)))) {
        lex_number(lx);
        t->kind = IR_TOK_NUMBER;
    } else if (c == '%' || c == '@') {
        lex_name(lx, t, c == '%' ? IR_TOK_LOCAL : IR_TOK_GLOBAL);
    } else if (c == '"') {
        t->kind = lex_string(lx, t) ? IR_TOK_STRING : IR_TOK_ERROR;
    } else if (c == '-') {
        lx->pos++;
        t->kind = IR_TOK_MINUS;
    } else {
        t->kind = IR_TOK_ERROR;
        for (size_t i = 0; i < sizeof punctuation / sizeof punctuation[0]; i++)
            if (punctuation[i].c == c)
                t->kind = punctuation[i].kind;
        lx->pos++;
        if (t->kind == IR_TOK_ERROR) {
            t->len = 1;
            if (c >= 0x20 && c < 0x7f)
                lex_error(lx, t, "unexpected character '%c'", c);
            else
                lex_error(lx, t, "unexpected byte 0x%02x", (unsigned)c);
        }
    }
    t->len = (size_t)(lx->text + lx->pos - t->start);
}
