/* Diagnostics sink shared by every stage of quadc.
 * Library code never prints or exits on its own: it reports through an
 * ir_diag and returns a status, and the driver decides the exit code. */
#ifndef QUADC_IR_DIAG_H
#define QUADC_IR_DIAG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* A source span. `file` is interned by the sink (or NULL for "no location");
 * line and col are 1-based, end_col is exclusive (0 means a single caret). */
typedef struct ir_loc {
    const char *file;
    int line;
    int col;
    int end_col;
} ir_loc;

typedef struct ir_diag ir_diag;

ir_diag *ir_diag_new(FILE *out);
void ir_diag_free(ir_diag *d);

/* Interns a file name and, when `text` is not NULL, keeps a copy of the
 * text so that later errors can quote the source line under a caret. */
const char *ir_diag_add_source(ir_diag *d, const char *path, const char *text, size_t len);
const char *ir_diag_intern(ir_diag *d, const char *path);

/* "file:line:col: error: message", then the source line and a caret. */
void ir_diag_error(ir_diag *d, ir_loc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ir_diag_verror(ir_diag *d, ir_loc loc, const char *fmt, va_list ap);
void ir_diag_note(ir_diag *d, ir_loc loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "path: error: message" for errors about a whole file (a weights file,
 * a tokenizer file), or "quadc: error: message" when path is NULL. */
void ir_diag_file_error(ir_diag *d, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets the program name that starts messages without a file, in place of
 * "quadc" (a built executable passes its own name), or restores "quadc"
 * when program is NULL. */
void ir_diag_set_program(ir_diag *d, const char *program);

/* Sets a context that prefixes every later error message, as in
 * "error: in pass 'cse': ...", or clears it when context is NULL. */
void ir_diag_set_context(ir_diag *d, const char *context);

int ir_diag_error_count(const ir_diag *d);
/* Stops reporting after this many errors (default 20) so a broken file
 * cannot flood the terminal; the count keeps growing. */
void ir_diag_set_max_errors(ir_diag *d, int max_errors);

#endif
