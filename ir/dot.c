/* Graphviz output of a graph: one node per value (name, op, type), one edge
 * per operand from the operand to its user. Params are gray boxes, inputs
 * green boxes, constants plain text and graph outputs double octagons. */
#include "ir/text.h"

#include <inttypes.h>

/* Writes s for use inside a double-quoted DOT string. */
static void print_dot_escaped(FILE *out, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fputc('\\', out);
        if (*p < 0x20)
            fputc(' ', out);
        else
            fputc(*p, out);
    }
}

static bool is_output(const ir_graph *g, int id)
{
    for (int i = 0; i < g->noutputs; i++)
        if (g->outputs[i] == id)
            return true;
    return false;
}

static const char *node_style(const ir_graph *g, const ir_value *v)
{
    if (v->op == IR_OP_PARAM)
        return "shape=box, style=filled, fillcolor=\"#dddddd\"";
    if (v->op == IR_OP_INPUT)
        return "shape=box, style=filled, fillcolor=\"#c8e6c9\"";
    if (v->op == IR_OP_CONST)
        return "shape=plaintext";
    if (is_output(g, v->id))
        return "shape=doubleoctagon";
    return "shape=ellipse";
}

int ir_print_dot(FILE *out, const ir_graph *g)
{
    fputs("digraph \"", out);
    print_dot_escaped(out, g->name ? g->name : "");
    fputs("\" {\n  node [fontname=\"monospace\", fontsize=10];\n", out);
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        const ir_op_info *info = ir_op_get(v->op);
        char type[160];
        fprintf(out, "  v%d [label=\"%c", i, v->op == IR_OP_PARAM ? '@' : '%');
        print_dot_escaped(out, v->name);
        fprintf(out, "\\n%s", info ? info->name : "?");
        if (v->op == IR_OP_CONST)
            fprintf(out, " %.9g", v->attrs[0].f);
        fprintf(out, "\\n%s\", %s];\n", ir_type_str(&v->type, type, sizeof type), node_style(g, v));
    }
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        for (int k = 0; k < v->nops; k++)
            fprintf(out, "  v%d -> v%d;\n", v->ops[k], i);
    }
    fputs("}\n", out);
    return ferror(out) ? -1 : 0;
}
