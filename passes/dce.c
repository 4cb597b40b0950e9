/* Dead code elimination: removes every pure value that no graph output
 * depends on. Values that are not pure (params and inputs, the graph's
 * interface) always stay, and so does everything they use. */
#include <assert.h>
#include <stdlib.h>

#include "passes/manager.h"

static_assert(PASS_DCE < PASS_COUNT, "pass_dce needs an entry in passes/passes.def");

int pass_dce(ir_graph *g, const pass_options *opts, ir_diag *d)
{
    bool *live = calloc((size_t)(g->nvalues ? g->nvalues : 1), sizeof(bool));
    if (!live) {
        ir_diag_error(d, (ir_loc){0}, "out of memory");
        return -1;
    }
    for (int i = 0; i < g->noutputs; i++)
        if (g->outputs[i] >= 0 && g->outputs[i] < g->nvalues)
            live[g->outputs[i]] = true;

    /* Values are in topological order, so one backward sweep visits every
     * user before the values it uses. */
    for (int i = g->nvalues - 1; i >= 0; i--) {
        ir_value *v = g->values[i];
        if (!(ir_op_get(v->op)->flags & IR_OPF_PURE))
            live[i] = true;
        if (!live[i]) {
            v->dead = true;
            continue;
        }
        for (int k = 0; k < v->nops; k++)
            live[v->ops[k]] = true;
    }
    free(live);
    return 0;
}
