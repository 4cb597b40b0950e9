/* Executors: the small interface through which training compiles and runs
 * its graphs (the model's forward and backward graph, the AdamW update and
 * the gradient-norm reductions). Two implementations exist: the reference
 * interpreter and the LLVM JIT. Tests run the same training steps on both
 * and compare the losses. */
#ifndef QUADC_RUNTIME_TRAIN_EXEC_H
#define QUADC_RUNTIME_TRAIN_EXEC_H

#include <stdbool.h>
#include <stdint.h>

#include "ir/ir.h"
#include "runtime/tensor.h"

typedef struct rt_executor {
    const char *name; /* "interp" or "jit" */
    /* Compiles g for `threads` worker threads (0 = one per core; the
     * interpreter ignores it). The module keeps its own copy of g. Returns
     * NULL after reporting through d. */
    void *(*compile)(const ir_graph *g, int threads, ir_diag *d);
    /* Runs the module like rt_interp_run. Set weights_changed when the
     * tensors of `weights` were modified or replaced since the last run,
     * because the JIT binds weights in place and caches derived values. */
    int (*run)(void *module, const rt_weights *weights, bool weights_changed, const rt_weights *inputs,
               rt_tensor **outputs, ir_diag *d);
    /* Runs like run, but stores in outputs[i] a header of output i whose
     * data the module owns and keeps until its next run or free, so no
     * output is copied or allocated by the caller. */
    int (*run_views)(void *module, const rt_weights *weights, bool weights_changed, const rt_weights *inputs,
                     rt_tensor *outputs, ir_diag *d);
    void (*free)(void *module);
} rt_executor;

const rt_executor *rt_executor_interp(void);
const rt_executor *rt_executor_jit(void);
/* Returns the executor called `name` ("interp" or "jit"), or NULL. */
const rt_executor *rt_executor_find(const char *name);

/* Memory estimates of one graph run, in bytes. */
typedef struct rt_graph_memory {
    int64_t param_bytes;        /* all params */
    int64_t input_bytes;        /* all inputs */
    int64_t output_bytes;       /* all graph outputs */
    int64_t intermediate_bytes; /* sum over every other value */
    /* Peak of the intermediates alive at once when each value is freed
     * right after its last use, the interpreter's rule. Layout ops count
     * as copies, as in the interpreter. */
    int64_t peak_live_bytes;
} rt_graph_memory;

void rt_graph_memory_estimate(const ir_graph *g, rt_graph_memory *out);

/* Returns a weight set that borrows n parallel names and tensors, so a
 * graph can take existing tensors as inputs without copying them. Never
 * pass the result to rt_weights_free. */
rt_weights rt_weights_borrow(char **names, rt_tensor **tensors, int n);

#endif
