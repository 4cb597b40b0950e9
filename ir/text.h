/* The textual form of the tensor IR: a printer, a parser that reads the
 * printer's output back into an equal graph, and a Graphviz writer.
 *
 *   // quadc IR
 *   graph @gpt2 {
 *     hparam n_layer = 12
 *     @wte.weight = param {init="normal(0.02)"} : f32[50257,768] loc("gpt2.qd":20:3)
 *     %x = layernorm %h, @ln.weight, @ln.bias {eps=9.99999975e-06} : f32[4,64,768]
 *     return %logits, %loss
 *   }
 *
 * Parameters print with '@', every other value with '%'. A name made of
 * [A-Za-z0-9_.] prints bare; any other name prints quoted (%"a b"). Every
 * attribute prints, defaults included, in op-table order; floats use %.9g.
 * Printing the parsed text of a printed graph gives the same bytes. */
#ifndef QUADC_IR_TEXT_H
#define QUADC_IR_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "ir/ir.h"

typedef struct ir_print_options {
    bool locs; /* print loc("file":line:col) suffixes */
} ir_print_options;

/* The default options: locations on. */
ir_print_options ir_print_defaults(void);

/* Writes g as IR text. Returns 0, or -1 when writing to `out` failed. */
int ir_print(FILE *out, const ir_graph *g, const ir_print_options *opts);

/* The longest IR text ir_parse_string accepts, 256 MiB. By estimate, a
 * model at the frontend's limit of 262,144 values prints to about 50 MiB
 * (200 bytes a line), and autodiff and quantization add a few times that. */
#define IR_MAX_TEXT_BYTES ((size_t)256 << 20)

/* Parses IR text; `path` names the text in diagnostics (and is interned
 * with the text so errors quote the line). Reports every error it finds
 * through d and returns NULL if there was any. Values keep the loc(...)
 * written after them, or no location when none is written. */
ir_graph *ir_parse_string(const char *path, const char *text, size_t len, ir_diag *d);

/* Writes g as a Graphviz digraph: one node per value labeled with name, op
 * and type, one edge per operand. Returns 0, or -1 on a write error. */
int ir_print_dot(FILE *out, const ir_graph *g);

#endif
