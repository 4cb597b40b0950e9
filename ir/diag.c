/* Diagnostics sink: formats errors as file:line:col with a quoted source
 * line and a caret under the span, and keeps the error count. */
#include "ir/diag.h"

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
    int errors;
    int max_errors;
    char *context; /* prefix of error messages, or NULL */
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
    free(d->context);
    free(d);
}

static diag_source *find_source(ir_diag *d, const char *path)
{
    for (int i = 0; i < d->nsources; i++)
        if (d->sources[i].path == path || strcmp(d->sources[i].path, path) == 0)
            return &d->sources[i];
    return NULL;
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
        s = &d->sources[d->nsources++];
        s->path = strdup(path);
        s->text = NULL;
        s->len = 0;
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

/* Prints the source line `line` of the file and a caret line under
 * columns [col, end_col). Tabs are kept so the caret lines up. */
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
    int n = (int)(eol - p);
    if (n > 200)
        n = 200;
    fprintf(d->out, "%.*s\n", n, p);
    int col = loc.col > 0 ? loc.col : 1;
    for (int i = 1; i < col && i <= n; i++)
        fputc(p[i - 1] == '\t' ? '\t' : ' ', d->out);
    fputc('^', d->out);
    for (int i = col + 1; i < loc.end_col && i <= n; i++)
        fputc('~', d->out);
    fputc('\n', d->out);
}

static void report(ir_diag *d, ir_loc loc, const char *kind, const char *fmt, va_list ap)
{
    if (loc.file && loc.line > 0)
        fprintf(d->out, "%s:%d:%d: %s: ", loc.file, loc.line, loc.col > 0 ? loc.col : 1, kind);
    else if (loc.file)
        fprintf(d->out, "%s: %s: ", loc.file, kind);
    else
        fprintf(d->out, "quadc: %s: ", kind);
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
            fprintf(d->out, "quadc: note: too many errors, stopping after %d\n", d->max_errors);
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
