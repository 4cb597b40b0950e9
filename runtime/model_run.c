/* Runs of a model session: compiles the forward graph once per sequence
 * length, fills its inputs, and keeps the key-value caches of a cache model
 * in tensors that every run binds in place. */
#include <stdlib.h>
#include <string.h>

#include "passes/manager.h"
#include "runtime/interp.h"
#include "runtime/model_internal.h"

/* Whether input v is the cache operand of a cache_write. */
static bool is_cache_input(const ir_graph *g, const ir_value *v)
{
    for (int i = v->id + 1; i < g->nvalues; i++)
        if (g->values[i]->op == IR_OP_CACHE_WRITE && g->values[i]->ops[0] == v->id)
            return true;
    return false;
}

/* Creates a zero-filled input tensor for every input of run r. Cache
 * inputs come from m->caches, created there on first use, so runs of
 * different lengths share them. */
static int make_inputs(rt_model *m, rt_model_run *r, ir_diag *d)
{
    r->inputs = rt_weights_new();
    if (!m->caches)
        m->caches = rt_weights_new();
    if (!r->inputs || !m->caches)
        return -1;
    for (int i = 0; i < r->g->nvalues; i++) {
        const ir_value *v = r->g->values[i];
        if (v->op != IR_OP_INPUT)
            continue;
        rt_tensor *t = NULL;
        if (is_cache_input(r->g, v)) {
            t = rt_weights_get(m->caches, v->name);
            if (!t) {
                t = rt_tensor_new(v->type.dtype, v->type.rank, v->type.dims);
                if (!t || rt_weights_set(m->caches, v->name, t) != 0) {
                    rt_tensor_free(t);
                    ir_diag_file_error(d, m->model_path, "out of memory allocating cache '%s'", v->name);
                    return -1;
                }
            }
        } else {
            t = rt_tensor_new(v->type.dtype, v->type.rank, v->type.dims);
        }
        if (!t || rt_weights_set(r->inputs, v->name, t) != 0) {
            ir_diag_file_error(d, m->model_path, "out of memory allocating input '%s'", v->name);
            return -1;
        }
    }
    return 0;
}

/* Drops the borrowed cache tensors from r->inputs, then frees it. */
static void free_run(rt_model *m, rt_model_run *r)
{
    if (r->inputs && m->caches)
        for (int i = 0; i < r->inputs->count; i++)
            if (rt_weights_get(m->caches, r->inputs->names[i]) == r->inputs->tensors[i])
                r->inputs->tensors[i] = NULL;
    rt_weights_free(r->inputs);
    cg_free(r->jit);
    ir_graph_free(r->g);
}

void rt_model_free_runs(rt_model *m)
{
    for (int i = 0; i < m->nruns; i++)
        free_run(m, &m->runs[i]);
    free(m->runs);
    m->runs = NULL;
    m->nruns = 0;
    rt_weights_free(m->caches);
    m->caches = NULL;
}

/* Folds elementwise chains into fused ops and the epilogues of the
 * matrix products before them (the bias add, gelu and residual adds of
 * GPT-2), so the JIT stores fewer intermediate tensors. */
static int fuse_elementwise(ir_graph *g, ir_diag *d)
{
    return pass_run_text(g, "fuse-elementwise", d);
}

static int compile_run(rt_model *m, rt_model_run *r, int T, ir_diag *d)
{
    memset(r, 0, sizeof *r);
    r->T = T;
    r->g = rt_model_compile_graph(m, T, d);
    if (!r->g)
        return -1;
    r->logits_output = -1;
    for (int i = 0; i < r->g->noutputs; i++)
        if (strcmp(r->g->values[r->g->outputs[i]]->name, "logits") == 0)
            r->logits_output = i;
    if (r->logits_output < 0 || make_inputs(m, r, d) != 0)
        return -1;
    if (m->engine == RT_MODEL_INTERP)
        return 0;
    if (m->fuse_elementwise && fuse_elementwise(r->g, d) != 0)
        return -1;
    cg_options o = cg_default_options();
    o.threads = m->threads;
    r->jit = cg_compile(r->g, &o, d);
    if (!r->jit || cg_bind_weights(r->jit, m->weights, d) != 0)
        return -1;
    return 0;
}

/* Returns the run for sequence length T, compiling it on first use. */
static rt_model_run *get_run(rt_model *m, int T, ir_diag *d)
{
    for (int i = 0; i < m->nruns; i++)
        if (m->runs[i].T == T)
            return &m->runs[i];
    rt_model_run *grown = realloc(m->runs, sizeof *grown * (size_t)(m->nruns + 1));
    if (!grown) {
        ir_diag_file_error(d, m->model_path, "out of memory compiling the graph for T=%d", T);
        return NULL;
    }
    m->runs = grown;
    rt_model_run *r = &m->runs[m->nruns];
    if (compile_run(m, r, T, d) != 0) {
        free_run(m, r);
        return NULL;
    }
    m->nruns++;
    return r;
}

int rt_model_prepare(rt_model *m, int T, ir_diag *d)
{
    return get_run(m, T, d) ? 0 : -1;
}

/* Runs the graph and returns the logits output [1, T, V]. */
static rt_tensor *run_graph(rt_model *m, rt_model_run *r, ir_diag *d)
{
    rt_tensor *outputs[64] = {NULL};
    if (r->g->noutputs > 64) {
        ir_diag_file_error(d, m->model_path, "the model has %d outputs; a session supports at most 64",
                           r->g->noutputs);
        return NULL;
    }
    int rc = r->jit ? cg_run(r->jit, m->weights, r->inputs, outputs, d)
                    : rt_interp_run(r->g, m->weights, r->inputs, outputs, d);
    if (rc != 0)
        return NULL;
    rt_tensor *logits = outputs[r->logits_output];
    for (int i = 0; i < r->g->noutputs; i++)
        if (i != r->logits_output)
            rt_tensor_free(outputs[i]);
    return logits;
}

static int check_tokens(const rt_model *m, const int32_t *tokens, int n, ir_diag *d)
{
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= m->vocab) {
            ir_diag_file_error(d, m->model_path, "token id %d at position %d is outside the vocabulary [0, %d)",
                               (int)tokens[i], i, m->vocab);
            return -1;
        }
    }
    return 0;
}

int rt_model_forward(rt_model *m, int window, const int32_t *tokens, int n, float *logits, ir_diag *d)
{
    if (m->has_cache) {
        ir_diag_file_error(d, m->model_path, "the model writes a key-value cache; run it with rt_model_append");
        return -1;
    }
    if (n < 1 || n > window || window > m->context) {
        ir_diag_file_error(d, m->model_path, "cannot run %d tokens in a window of %d with context length %d; "
                           "it needs 1 <= tokens <= window <= context length", n, window, m->context);
        return -1;
    }
    if (check_tokens(m, tokens, n, d) != 0)
        return -1;
    rt_model_run *r = get_run(m, window, d);
    if (!r)
        return -1;
    int32_t *idx = rt_weights_get(r->inputs, "idx")->data;
    memcpy(idx, tokens, sizeof *idx * (size_t)n);
    memset(idx + n, 0, sizeof *idx * (size_t)(window - n));
    rt_tensor *out = run_graph(m, r, d);
    if (!out)
        return -1;
    memcpy(logits, out->data, sizeof *logits * (size_t)n * (size_t)m->vocab);
    rt_tensor_free(out);
    return 0;
}

int rt_model_append(rt_model *m, const int32_t *tokens, int n, float *last_logits, ir_diag *d)
{
    if (!m->has_cache) {
        ir_diag_file_error(d, m->model_path, "the model has no key-value cache; run it with rt_model_forward");
        return -1;
    }
    if (n < 1 || m->position + n > m->context) {
        ir_diag_file_error(d, m->model_path, "appending %d tokens at position %d exceeds the context length %d",
                           n, m->position, m->context);
        return -1;
    }
    if (check_tokens(m, tokens, n, d) != 0)
        return -1;
    rt_model_run *r = get_run(m, n, d);
    if (!r)
        return -1;
    memcpy(rt_weights_get(r->inputs, "idx")->data, tokens, sizeof *tokens * (size_t)n);
    *(int32_t *)rt_weights_get(r->inputs, "pos")->data = m->position;
    int32_t *positions = rt_weights_get(r->inputs, "positions")->data;
    for (int i = 0; i < n; i++)
        positions[i] = m->position + i;
    rt_tensor *out = run_graph(m, r, d);
    if (!out)
        return -1;
    memcpy(last_logits, (const float *)out->data + (size_t)(n - 1) * (size_t)m->vocab,
           sizeof *last_logits * (size_t)m->vocab);
    rt_tensor_free(out);
    m->position += n;
    return 0;
}

int rt_model_position(const rt_model *m)
{
    return m->position;
}

void rt_model_reset(rt_model *m)
{
    m->position = 0;
}
