/* Graph helpers of the quantization passes; see passes/quant_graph.h. */
#include "passes/quant_graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/quant.h"

int qg_uses_build(const ir_graph *g, qg_uses *u)
{
    int n = g->nvalues;
    u->nvalues = n;
    u->count = calloc((size_t)(n ? n : 1), sizeof *u->count);
    u->outputs = calloc((size_t)(n ? n : 1), sizeof *u->outputs);
    u->items = calloc((size_t)(n ? n : 1), sizeof *u->items);
    if (!u->count || !u->outputs || !u->items) {
        qg_uses_free(u);
        return -1;
    }
    for (int id = 0; id < n; id++)
        for (int k = 0; k < g->values[id]->nops; k++)
            u->count[g->values[id]->ops[k]]++;
    for (int id = 0; id < n; id++) {
        u->items[id] = malloc(sizeof(qg_use) * (size_t)(u->count[id] ? u->count[id] : 1));
        if (!u->items[id]) {
            qg_uses_free(u);
            return -1;
        }
        u->count[id] = 0;
    }
    for (int id = 0; id < n; id++) {
        const ir_value *v = g->values[id];
        for (int k = 0; k < v->nops; k++) {
            int x = v->ops[k];
            u->items[x][u->count[x]++] = (qg_use){id, k};
        }
    }
    for (int k = 0; k < g->noutputs; k++)
        u->outputs[g->outputs[k]]++;
    return 0;
}

void qg_uses_free(qg_uses *u)
{
    for (int id = 0; u->items && id < u->nvalues; id++)
        free(u->items[id]);
    free(u->items);
    free(u->count);
    free(u->outputs);
    memset(u, 0, sizeof *u);
}

int qg_param_of(const ir_graph *g, int id)
{
    while (id >= 0) {
        const ir_value *v = g->values[id];
        if (v->op == IR_OP_PARAM)
            return id;
        if (v->op != IR_OP_QA_SCALE && !ir_is_fake_quant(v->op))
            return -1;
        id = v->ops[0];
    }
    return -1;
}

void qg_weight_site(const ir_graph *g, int param, char *buf, size_t cap)
{
    const char *name = g->values[param]->name;
    size_t len = strlen(name);
    const char *suffix = ".weight";
    size_t slen = strlen(suffix);
    if (len > slen && strcmp(name + len - slen, suffix) == 0)
        len -= slen;
    snprintf(buf, cap, "%.*s", (int)len, name);
}

int qg_add_param(ir_graph *g, const char *name, ir_type type, const char *init, ir_loc loc, ir_diag *d)
{
    if (ir_find(g, name) >= 0) {
        ir_diag_error(d, loc, "cannot add param @%s: the graph already has a value of that name", name);
        return -1;
    }
    ir_attrs attrs = ir_attrs_for(IR_OP_PARAM);
    ir_attrs_str(&attrs, "init", init);
    int id = ir_add_leaf(g, IR_OP_PARAM, name, type, &attrs, loc);
    ir_attrs_clear(&attrs);
    return id;
}

/* Returns operand 0 of id when its op is `op`, else -1. A transpose must
 * be the head swap [0, 2, 1, 3] of [B, T, NH, HS], which keeps channel
 * h * HS + d in place once the reshapes merge the last two axes. */
static int through(const ir_graph *g, int id, ir_op op)
{
    if (id < 0 || g->values[id]->op != op)
        return -1;
    if (op == IR_OP_TRANSPOSE) {
        static const int64_t head_swap[4] = {0, 2, 1, 3};
        int n;
        const int64_t *perm = ir_attr_ints(g->values[id], "perm", &n);
        if (n != 4 || memcmp(perm, head_swap, sizeof head_swap) != 0)
            return -1;
    }
    return g->values[id]->ops[0];
}

bool qg_trace_value_path(const ir_graph *g, int id, qg_value_path *out)
{
    int y = through(g, through(g, id, IR_OP_RESHAPE), IR_OP_TRANSPOSE);
    if (y < 0 || g->values[y]->op != IR_OP_MATMUL || ir_attr_int(g->values[y], "transpose_a") != 0 ||
        ir_attr_int(g->values[y], "transpose_b") != 0)
        return false;
    int slice = through(g, through(g, g->values[y]->ops[1], IR_OP_TRANSPOSE), IR_OP_RESHAPE);
    if (slice < 0 || g->values[slice]->op != IR_OP_SLICE)
        return false;
    const ir_value *s = g->values[slice];
    int producer = s->ops[0];
    const ir_value *p = g->values[producer];
    if (p->op != IR_OP_LINEAR || ir_attr_int(s, "axis") != p->type.rank - 1)
        return false;
    out->producer = producer;
    out->start = ir_attr_int(s, "start");
    out->width = ir_attr_int(s, "end") - out->start;
    /* Channel c of c_proj's input must be column start + c of v. */
    return g->values[id]->type.dims[g->values[id]->type.rank - 1] == out->width;
}
