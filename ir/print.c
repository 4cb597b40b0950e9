/* The IR printer. Output is deterministic: values in graph order, every
 * attribute in op-table order, floats with %.9g, and nothing that depends
 * on pointers or weights. ir/parse.c reads this format back. */
#include "ir/text.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

ir_print_options ir_print_defaults(void)
{
    ir_print_options opts = {.locs = true};
    return opts;
}

static bool is_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
}

/* Writes s as a double-quoted string. Quotes, backslashes and control bytes
 * are escaped; other bytes (UTF-8 included) are written as they are. */
static void print_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", out);
        else if (*p == '\t')
            fputs("\\t", out);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(out, "\\x%02x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

/* Writes a name bare when it is made of name characters, quoted otherwise
 * (an empty name, too). A name without a sigil (sigil 0) is a bare word in
 * the lexer, so it prints bare only when it starts with a letter or '_'. */
static void print_name(FILE *out, char sigil, const char *name)
{
    bool bare = name[0] != '\0';
    if (sigil)
        fputc(sigil, out);
    else
        bare = bare && !(name[0] >= '0' && name[0] <= '9') && name[0] != '.';
    for (const unsigned char *p = (const unsigned char *)name; *p && bare; p++)
        bare = is_name_char(*p);
    if (bare)
        fputs(name, out);
    else
        print_quoted(out, name);
}

static void print_value_ref(FILE *out, const ir_graph *g, int id)
{
    if (id < 0 || id >= g->nvalues) {
        fprintf(out, "%%<invalid %d>", id);
        return;
    }
    const ir_value *v = g->values[id];
    print_name(out, v->op == IR_OP_PARAM ? '@' : '%', v->name);
}

/* Floats print with %.9g, which is enough digits to recover any f32. An
 * integer up to 2^53 prints with all its digits instead, because the
 * value of an integer const such as 1000000007 must survive the text form
 * (%.9g gives 1.00000001e+09). The special values print as inf, -inf and
 * nan (the sign of a NaN is dropped so that dumps do not depend on how the
 * platform produced it). */
static void print_float(FILE *out, double f)
{
    if (isnan(f))
        fputs("nan", out);
    else if (isinf(f))
        fputs(f < 0 ? "-inf" : "inf", out);
    else if (f == floor(f) && fabs(f) <= 9007199254740992.0)
        fprintf(out, "%.0f", f);
    else
        fprintf(out, "%.9g", f);
}

static void print_attr(FILE *out, ir_attr_kind kind, const ir_attr *a)
{
    switch (kind) {
    case IR_ATTR_INT:
        fprintf(out, "%" PRId64, a->i);
        break;
    case IR_ATTR_FLOAT:
        print_float(out, a->f);
        break;
    case IR_ATTR_INTS:
        fputc('[', out);
        for (int k = 0; k < a->nints; k++)
            fprintf(out, k ? ",%" PRId64 : "%" PRId64, a->ints[k]);
        fputc(']', out);
        break;
    case IR_ATTR_STR:
        print_quoted(out, a->s ? a->s : "");
        break;
    }
}

static void print_attrs(FILE *out, const ir_value *v)
{
    const ir_op_info *info = ir_op_get(v->op);
    int printed = 0;
    for (int i = 0; i < info->nattrs; i++) {
        if (!v->attrs[i].set)
            continue;
        fputs(printed ? ", " : " {", out);
        fprintf(out, "%s=", info->attrs[i].name);
        print_attr(out, info->attrs[i].kind, &v->attrs[i]);
        printed++;
    }
    if (printed)
        fputc('}', out);
}

static void print_type(FILE *out, const ir_type *t)
{
    fprintf(out, "%s[", ir_dtype_name(t->dtype));
    for (int i = 0; i < t->rank; i++)
        fprintf(out, i ? ",%" PRId64 : "%" PRId64, t->dims[i]);
    fputc(']', out);
}

static void print_loc(FILE *out, ir_loc loc)
{
    if (!loc.file)
        return;
    fputs(" loc(", out);
    print_quoted(out, loc.file);
    fprintf(out, ":%d:%d)", loc.line, loc.col);
}

static void print_value(FILE *out, const ir_graph *g, const ir_value *v, const ir_print_options *opts)
{
    const ir_op_info *info = ir_op_get(v->op);
    fputs("  ", out);
    print_value_ref(out, g, v->id);
    fprintf(out, " = %s", info ? info->name : "<invalid op>");
    for (int k = 0; k < v->nops; k++) {
        fputs(k ? ", " : " ", out);
        print_value_ref(out, g, v->ops[k]);
    }
    if (info)
        print_attrs(out, v);
    fputs(" : ", out);
    print_type(out, &v->type);
    if (opts->locs)
        print_loc(out, v->loc);
    fputc('\n', out);
}

int ir_print(FILE *out, const ir_graph *g, const ir_print_options *opts)
{
    ir_print_options defaults = ir_print_defaults();
    if (!opts)
        opts = &defaults;

    fputs("// quadc IR\ngraph ", out);
    print_name(out, '@', g->name ? g->name : "");
    fputs(" {\n", out);
    for (int i = 0; i < g->nhparams; i++) {
        fputs("  hparam ", out);
        print_name(out, 0, g->hparams[i].name);
        fprintf(out, " = %" PRId64 "\n", g->hparams[i].value);
    }
    for (int i = 0; i < g->nvalues; i++)
        print_value(out, g, g->values[i], opts);
    if (g->noutputs > 0) {
        fputs("  return", out);
        for (int i = 0; i < g->noutputs; i++) {
            fputs(i ? ", " : " ", out);
            print_value_ref(out, g, g->outputs[i]);
        }
        fputc('\n', out);
    }
    fputs("}\n", out);
    return ferror(out) ? -1 : 0;
}
