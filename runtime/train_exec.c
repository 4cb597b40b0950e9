/* The interpreter and JIT executors, and memory estimates of a graph. */
#include "runtime/train_exec.h"

#include <stdlib.h>
#include <string.h>

#include "codegen/codegen.h"
#include "runtime/interp.h"

/* An interpreter module: its graph, and the outputs of the last
 * run_views call, which the module owns. */
typedef struct interp_module {
    ir_graph *g;
    rt_tensor **views;
} interp_module;

static void free_views(interp_module *m)
{
    if (!m->views)
        return;
    for (int i = 0; i < m->g->noutputs; i++)
        rt_tensor_free(m->views[i]);
    free(m->views);
    m->views = NULL;
}

static void *interp_compile(const ir_graph *g, int threads, ir_diag *d)
{
    (void)threads;
    interp_module *m = calloc(1, sizeof *m);
    if (m)
        m->g = ir_graph_clone(g);
    if (!m || !m->g) {
        ir_diag_file_error(d, NULL, "out of memory copying graph '%s' for the interpreter", g->name);
        free(m);
        return NULL;
    }
    return m;
}

static int interp_run(void *module, const rt_weights *weights, bool weights_changed, const rt_weights *inputs,
                      rt_tensor **outputs, ir_diag *d)
{
    (void)weights_changed;
    interp_module *m = module;
    return rt_interp_run(m->g, weights, inputs, outputs, d);
}

static int interp_run_views(void *module, const rt_weights *weights, bool weights_changed,
                            const rt_weights *inputs, rt_tensor *outputs, ir_diag *d)
{
    (void)weights_changed;
    interp_module *m = module;
    free_views(m);
    m->views = calloc((size_t)m->g->noutputs + 1, sizeof *m->views);
    if (!m->views) {
        ir_diag_file_error(d, NULL, "out of memory for the outputs of graph '%s'", m->g->name);
        return -1;
    }
    if (rt_interp_run(m->g, weights, inputs, m->views, d) != 0) {
        free(m->views);
        m->views = NULL;
        return -1;
    }
    for (int i = 0; i < m->g->noutputs; i++)
        outputs[i] = *m->views[i];
    return 0;
}

static void interp_free(void *module)
{
    interp_module *m = module;
    if (!m)
        return;
    free_views(m);
    ir_graph_free(m->g);
    free(m);
}

static void *jit_compile(const ir_graph *g, int threads, ir_diag *d)
{
    cg_options options = cg_default_options();
    options.threads = threads;
    /* The trainer rebinds after every optimizer step, so packing weights
     * at bind time would only keep a second copy of them alive. */
    options.repack_weights = 1;
    return cg_compile(g, &options, d);
}

static int jit_run(void *module, const rt_weights *weights, bool weights_changed, const rt_weights *inputs,
                   rt_tensor **outputs, ir_diag *d)
{
    /* cg_run rebinds only when the weight-set pointer changes, and a graph
     * without params still needs one bind for its constant values, so bind
     * explicitly whenever the caller says the weights changed. */
    if (weights_changed && cg_bind_weights(module, weights, d) != 0)
        return -1;
    return cg_run(module, weights, inputs, outputs, d);
}

static int jit_run_views(void *module, const rt_weights *weights, bool weights_changed, const rt_weights *inputs,
                         rt_tensor *outputs, ir_diag *d)
{
    if (weights_changed && cg_bind_weights(module, weights, d) != 0)
        return -1;
    return cg_run_views(module, weights, inputs, outputs, d);
}

static void jit_free(void *module)
{
    cg_free(module);
}

static const rt_executor interp_executor = {"interp", interp_compile, interp_run, interp_run_views, interp_free};
static const rt_executor jit_executor = {"jit", jit_compile, jit_run, jit_run_views, jit_free};

const rt_executor *rt_executor_interp(void)
{
    return &interp_executor;
}

const rt_executor *rt_executor_jit(void)
{
    return &jit_executor;
}

const rt_executor *rt_executor_find(const char *name)
{
    if (strcmp(name, interp_executor.name) == 0)
        return &interp_executor;
    if (strcmp(name, jit_executor.name) == 0)
        return &jit_executor;
    return NULL;
}

static int64_t value_bytes(const ir_value *v)
{
    return ir_type_numel(&v->type) * (int64_t)ir_dtype_size(v->type.dtype);
}

void rt_graph_memory_estimate(const ir_graph *g, rt_graph_memory *out)
{
    memset(out, 0, sizeof *out);
    int n = g->nvalues;
    int *last_use = malloc((size_t)(n ? n : 1) * sizeof *last_use);
    bool *is_output = calloc((size_t)(n ? n : 1), sizeof *is_output);
    if (!last_use || !is_output) {
        free(last_use);
        free(is_output);
        return;
    }
    for (int i = 0; i < n; i++)
        last_use[i] = i;
    for (int i = 0; i < g->noutputs; i++)
        is_output[g->outputs[i]] = true;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < g->values[i]->nops; k++)
            last_use[g->values[i]->ops[k]] = i;

    /* Walk in order: a value becomes live when computed and dies after its
     * last use, unless it is an output, which lives to the end. */
    int64_t live = 0;
    int64_t *dies_at = calloc((size_t)(n ? n : 1), sizeof *dies_at);
    for (int i = 0; i < n; i++) {
        const ir_value *v = g->values[i];
        int64_t bytes = value_bytes(v);
        if (v->op == IR_OP_PARAM) {
            out->param_bytes += bytes;
        } else if (v->op == IR_OP_INPUT) {
            out->input_bytes += bytes;
        } else if (is_output[i]) {
            out->output_bytes += bytes;
        } else {
            out->intermediate_bytes += bytes;
            live += bytes;
            if (dies_at)
                dies_at[last_use[i]] += bytes;
            if (live > out->peak_live_bytes)
                out->peak_live_bytes = live;
        }
        if (dies_at)
            live -= dies_at[i];
    }
    free(dies_at);
    free(last_use);
    free(is_output);
}

rt_weights rt_weights_borrow(char **names, rt_tensor **tensors, int n)
{
    rt_weights view;
    memset(&view, 0, sizeof view);
    view.count = n;
    view.cap = n;
    view.names = names;
    view.tensors = tensors;
    return view;
}
