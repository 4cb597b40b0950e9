/* Graph helpers shared by the quantization passes (insert-fakequant,
 * insert-quadapter) and the quantization library functions of
 * passes/quantize.h: use lists, param lookup through qa.scale and fq ops,
 * site names and the trace of the attention value path. */
#ifndef QUADC_PASSES_QUANT_GRAPH_H
#define QUADC_PASSES_QUANT_GRAPH_H

#include <stdbool.h>
#include <stddef.h>

#include "ir/ir.h"

/* The operand slots that use each value: uses[v] lists (user, slot) pairs.
 * Graph outputs are counted in `outputs`, not listed. */
typedef struct qg_use {
    int user;
    int slot;
} qg_use;

typedef struct qg_uses {
    int nvalues;
    int *count;
    int *outputs;
    qg_use **items;
} qg_uses;

int qg_uses_build(const ir_graph *g, qg_uses *u);
void qg_uses_free(qg_uses *u);

/* Returns the param that value id reads, following operand 0 of qa.scale and
 * fq.* ops, or -1 when there is none. */
int qg_param_of(const ir_graph *g, int id);

/* Writes the site name of a weight param: its name without a trailing
 * ".weight" ("h.0.attn.c_attn.weight" gives "h.0.attn.c_attn"). */
void qg_weight_site(const ir_graph *g, int param, char *buf, size_t cap);

/* Adds a param named `name` of the given type with init `init` ("ones",
 * "zeros"). Returns its id, or -1 after reporting (a taken name is an error,
 * because quantizer params are found by name in weight files). */
int qg_add_param(ir_graph *g, const char *name, ir_type type, const char *init, ir_loc loc, ir_diag *d);

/* The attention value path of a GPT-2 block, from c_attn's output to
 * c_proj's input: slice (the v columns) -> reshape -> transpose -> matmul
 * operand 1 -> transpose -> reshape. Attention mixes positions, never
 * channels, so scaling channel c of v scales channel c of c_proj's input. */
typedef struct qg_value_path {
    int producer;    /* the linear whose output columns hold v (c_attn) */
    int64_t start;   /* the first of v's columns in its output */
    int64_t width;   /* the number of v's columns */
} qg_value_path;

/* Traces c_proj input value id back to c_attn. Returns true and fills *out
 * when id has exactly the shape of the path above. */
bool qg_trace_value_path(const ir_graph *g, int id, qg_value_path *out);

#endif
