/* Diagnostics sink: formats errors as file:line:col with a quoted source
 * line and a caret under the span, and keeps the error count. */
#include "ir/diag.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct diag_source {
    char *path;
    char *text; /* NULL when only the name is known */
    size_t len;
} diag_source;

struct ir_diag {
    FILE *out;
    diag_source *sources;
    int nsources;
    int cap;
    /* Hash index into sources by path: a slot contains index + 1, or 0 when
     * empty. IR text can name a different loc file on every line, so a
     * linear search per interned path would be quadratic. */
    int *index;
    int index_cap; /* a power of two, at least twice nsources */
    int errors;
    int max_errors;
    char *context; /* prefix of error messages, or NULL */
    char *program; /* name before messages without a file, or NULL for "quadc" */
};

ir_diag *ir_diag_new(FILE *out)
{
    ir_diag *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->out = out ? out : stderr;
    d->max_errors = 20;
    return d;
}

void ir_diag_free(ir_diag *d)
{
    if (!d)
        return;
    for (int i = 0; i < d->nsources; i++) {
        free(d->sources[i].path);
        free(d->sources[i].text);
    }
    free(d->sources);
    free(d->index);
    free(d->context);
    free(d->program);
    free(d);
}

static size_t hash_path(const char *path)
{
    size_t h = 14695981039346656037u; /* FNV-1a */
    for (const unsigned char *c = (const unsigned char *)path; *c; c++)
        h = (h ^ *c) * 1099511628211u;
    return h;
}

/* Returns the index slot of path: the one that contains it, or the empty
 * slot where it would go. */
static int index_slot(const ir_diag *d, const char *path)
{
    int mask = d->index_cap - 1;
    int i = (int)(hash_path(path) & (size_t)mask);
    while (d->index[i] && strcmp(d->sources[d->index[i] - 1].path, path) != 0)
        i = (i + 1) & mask;
    return i;
}

static diag_source *find_source(ir_diag *d, const char *path)
{
    if (d->index_cap == 0)
        return NULL;
    int slot = d->index[index_slot(d, path)];
    return slot ? &d->sources[slot - 1] : NULL;
}

/* Makes room in the index for one more source. Returns false when out of
 * memory. */
static bool grow_index(ir_diag *d)
{
    if (2 * (d->nsources + 1) <= d->index_cap)
        return true;
    int old_cap = d->index_cap;
    int *old_index = d->index;
    d->index_cap = old_cap ? 2 * old_cap : 16;
    d->index = calloc((size_t)d->index_cap, sizeof *d->index);
    if (!d->index) {
        d->index = old_index;
        d->index_cap = old_cap;
        return false;
    }
    for (int i = 0; i < d->nsources; i++)
        d->index[index_slot(d, d->sources[i].path)] = i + 1;
    free(old_index);
    return true;
}

const char *ir_diag_add_source(ir_diag *d, const char *path, const char *text, size_t len)
{
    diag_source *s = find_source(d, path);
    if (!s) {
        if (d->nsources == d->cap) {
            int cap = d->cap ? d->cap * 2 : 8;
            diag_source *grown = realloc(d->sources, (size_t)cap * sizeof *grown);
            if (!grown)
                return path;
            d->sources = grown;
            d->cap = cap;
        }
        char *copy = strdup(path);
        if (!copy || !grow_index(d)) {
            free(copy);
            return path;
        }
        s = &d->sources[d->nsources++];
        s->path = copy;
        s->text = NULL;
        s->len = 0;
        d->index[index_slot(d, copy)] = d->nsources;
    }
    if (text && !s->text) {
        s->text = malloc(len + 1);
        if (s->text) {
            memcpy(s->text, text, len);
            s->text[len] = '\0';
            s->len = len;
        }
    }
    return s->path;
}

const char *ir_diag_intern(ir_diag *d, const char *path)
{
    return ir_diag_add_source(d, path, NULL, 0);
}

/* The maximum number of bytes of a source line that a diagnostic quotes,
 * and how many of them come before the caret when a longer line is cut to
 * a window around it. "..." marks each cut. */
enum { QUOTE_WIDTH = 200, QUOTE_LEAD = 80 };

static bool is_utf8_continuation(char c)
{
    return ((unsigned char)c & 0xc0) == 0x80;
}

/* Writes the padding or tildes for bytes [from, to) of a quoted line, one
 * column per character: a tab stays a tab so the caret lines up, and the
 * continuation bytes of a UTF-8 sequence take no column.
 * NOTE: a wide character (CJK, most emoji) takes two terminal columns but
 * gets one here, so the caret sits left of the span after one. */
static void pad_columns(FILE *out, const char *text, int from, int to, char fill)
{
    for (int i = from; i < to; i++) {
        if (is_utf8_continuation(text[i]))
            continue;
        fputc(fill == ' ' && text[i] == '\t' ? '\t' : fill, out);
    }
}

/* Prints the source line `line` of the file and a caret line under
 * columns [col, end_col). Columns count bytes. */
static void quote_line(ir_diag *d, ir_loc loc)
{
    diag_source *s = loc.file ? find_source(d, loc.file) : NULL;
    if (!s || !s->text || loc.line <= 0)
        return;
    const char *p = s->text, *end = s->text + s->len;
    for (int l = 1; l < loc.line && p < end; l++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return;
        p = nl + 1;
    }
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol)
        eol = end;
    int n = eol - p > INT32_MAX ? INT32_MAX : (int)(eol - p);
    int caret = (loc.col > 0 ? loc.col : 1) - 1; /* byte offset in the line */
    if (caret > n)
        caret = n;
    int span_end = loc.end_col - 1 > caret + 1 ? loc.end_col - 1 : caret + 1;

    /* The window [first, last) of the line to quote, cut at character
     * boundaries. */
    int first = 0, last = n;
    if (n > QUOTE_WIDTH) {
        first = caret > QUOTE_LEAD ? caret - QUOTE_LEAD : 0;
        while (first > 0 && is_utf8_continuation(p[first]))
            first--;
        last = first + QUOTE_WIDTH < n ? first + QUOTE_WIDTH : n;
        while (last < n && last > first && is_utf8_continuation(p[last]))
            last--;
    }
    const char *cut = "...";
    fprintf(d->out, "%s%.*s%s\n", first > 0 ? cut : "", last - first, p + first, last < n ? cut : "");

    if (first > 0)
        fputs("   ", d->out);
    pad_columns(d->out, p, first, caret, ' ');
    fputc('^', d->out);
    pad_columns(d->out, p, caret + 1, span_end < last ? span_end : last, '~');
    fputc('\n', d->out);
}

static void report(ir_diag *d, ir_loc loc, const char *kind, const char *fmt, va_list ap)
{
    if (loc.file && loc.line > 0)
        fprintf(d->out, "%s:%d:%d: %s: ", loc.file, loc.line, loc.col > 0 ? loc.col : 1, kind);
    else if (loc.file)
        fprintf(d->out, "%s: %s: ", loc.file, kind);
    else
        fprintf(d->out, "%s: %s: ", d->program ? d->program : "quadc", kind);
    if (d->context && strcmp(kind, "error") == 0)
        fprintf(d->out, "%s: ", d->context);
    vfprintf(d->out, fmt, ap);
    fputc('\n', d->out);
    quote_line(d, loc);
}

void ir_diag_verror(ir_diag *d, ir_loc loc, const char *fmt, va_list ap)
{
    d->errors++;
    if (d->errors > d->max_errors) {
        if (d->errors == d->max_errors + 1)
            fprintf(d->out, "%s: note: too many errors, stopping after %d\n", d->program ? d->program : "quadc",
                    d->max_errors);
        return;
    }
    report(d, loc, "error", fmt, ap);
}

void ir_diag_error(ir_diag *d, ir_loc loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ir_diag_verror(d, loc, fmt, ap);
    va_end(ap);
}

void ir_diag_note(ir_diag *d, ir_loc loc, const char *fmt, ...)
{
    if (d->errors > d->max_errors)
        return;
    va_list ap;
    va_start(ap, fmt);
    report(d, loc, "note", fmt, ap);
    va_end(ap);
}

void ir_diag_file_error(ir_diag *d, const char *path, const char *fmt, ...)
{
    ir_loc loc = {path ? ir_diag_intern(d, path) : NULL, 0, 0, 0};
    va_list ap;
    va_start(ap, fmt);
    ir_diag_verror(d, loc, fmt, ap);
    va_end(ap);
}

void ir_diag_set_program(ir_diag *d, const char *program)
{
    free(d->program);
    d->program = program ? strdup(program) : NULL;
}

void ir_diag_set_context(ir_diag *d, const char *context)
{
    free(d->context);
    d->context = context ? strdup(context) : NULL;
}

int ir_diag_error_count(const ir_diag *d)
{
    return d->errors;
}

void ir_diag_set_max_errors(ir_diag *d, int max_errors)
{
    d->max_errors = max_errors;
}
