/* The frontend's entry points: read the model text, check its size and
 * encoding, parse it, and lower it to a verified IR graph. */
#include "frontend/frontend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/lower.h"
#include "frontend/syntax.h"

/* Returns the length of the valid UTF-8 sequence at s[0..n), or 0. */
static size_t utf8_sequence_length(const unsigned char *s, size_t n)
{
    unsigned char b = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (b < 0x80)
        return 1;
    if (b >= 0xc2 && b <= 0xdf)
        len = 2;
    else if (b >= 0xe0 && b <= 0xef)
        len = 3;
    else if (b >= 0xf0 && b <= 0xf4)
        len = 4;
    else
        return 0;
    if (b == 0xe0)
        lo = 0xa0; /* overlong */
    else if (b == 0xed)
        hi = 0x9f; /* surrogates */
    else if (b == 0xf0)
        lo = 0x90; /* overlong */
    else if (b == 0xf4)
        hi = 0x8f; /* beyond U+10FFFF */
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

/* Reports every byte that is not part of valid UTF-8, by line and byte
 * column. Returns true when there is none. */
static bool check_utf8(ir_diag *d, const char *file, const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    int line = 1, col = 1;
    bool ok = true;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_sequence_length(s + i, len - i);
        if (n == 0) {
            ir_loc loc = {file, line, col, col + 1};
            ir_diag_error(d, loc, "invalid UTF-8 byte 0x%02x at byte offset %zu; model files must be UTF-8", s[i], i);
            ok = false;
            n = 1;
        }
        if (s[i] == '\n') {
            line++;
            col = 1;
        } else {
            col += (int)n;
        }
        i += n;
    }
    return ok;
}

/* The graph's name: the file name without directory and extension. */
static char *graph_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t len = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    char *name = malloc(len + 1);
    if (!name)
        abort();
    memcpy(name, base, len);
    name[len] = '\0';
    return name;
}

ir_graph *fe_compile_string(const char *path, const char *text, size_t len, const fe_define *defines,
                            int ndefines, ir_diag *d)
{
    if (!path)
        path = "<string>";
    if (len > FE_MAX_FILE_BYTES) {
        ir_diag_file_error(d, path, "model file is %zu bytes; the limit is %u bytes (16 MiB)", len,
                           FE_MAX_FILE_BYTES);
        return NULL;
    }
    const char *file = ir_diag_add_source(d, path, text, len);
    if (!check_utf8(d, file, text, len))
        return NULL;

    fe_parser p;
    memset(&p, 0, sizeof p);
    p.diag = d;
    p.file = file;
    p.arena = fe_arena_new();
    if (!p.arena)
        abort();
    int errors = fe_parse(&p, text, len);
    if (errors == 0 && !p.first)
        ir_diag_file_error(d, file, "empty model file; it must declare inputs, params and outputs");
    ir_graph *g = NULL;
    if (errors == 0 && p.first) {
        fe_ctx c;
        memset(&c, 0, sizeof c);
        c.diag = d;
        c.arena = p.arena;
        c.file = file;
        char *name = graph_name(path);
        c.g = ir_graph_new(name, d);
        free(name);
        if (!c.g)
            abort();
        g = fe_lower_program(&c, p.first, defines, ndefines);
    }
    fe_arena_free(p.arena);
    return g;
}

ir_graph *fe_compile_file(const char *path, const fe_define *defines, int ndefines, ir_diag *d)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        ir_diag_file_error(d, path, "cannot open model file: %s", strerror(errno));
        return NULL;
    }
    /* Read one byte past the limit so an oversized file is detected
     * without reading all of it. */
    size_t cap = 64 * 1024, len = 0;
    char *text = malloc(cap);
    while (text) {
        if (len == cap) {
            cap = cap * 2 > (size_t)FE_MAX_FILE_BYTES + 1 ? (size_t)FE_MAX_FILE_BYTES + 1 : cap * 2;
            if (len == cap)
                break;
            char *grown = realloc(text, cap);
            if (!grown) {
                free(text);
                text = NULL;
                break;
            }
            text = grown;
        }
        size_t n = fread(text + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    int read_error = ferror(f) ? errno : 0;
    fclose(f);
    if (!text) {
        ir_diag_file_error(d, path, "cannot read model file: out of memory");
        return NULL;
    }
    if (read_error) {
        ir_diag_file_error(d, path, "cannot read model file: %s", strerror(read_error));
        free(text);
        return NULL;
    }
    if (len > FE_MAX_FILE_BYTES) {
        ir_diag_file_error(d, path, "model file is larger than %u bytes (16 MiB)", FE_MAX_FILE_BYTES);
        free(text);
        return NULL;
    }
    ir_graph *g = fe_compile_string(path, text, len, defines, ndefines, d);
    free(text);
    return g;
}
