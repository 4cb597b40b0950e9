/* Training pieces of the quantization flows: the per-block graph of
 * Quadapter phase 1, the mean-loss evaluation and one AdamW loop over a
 * chosen subset of a graph's params. Shared by runtime/quantize_run.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes/manager.h"
#include "runtime/optim.h"
#include "runtime/quantize_internal.h"

static const ir_loc no_loc = {0};

int qz_run_pipeline(ir_graph *g, const char *text, ir_diag *d)
{
    pass_pipeline pipeline;
    char err[256];
    if (pass_pipeline_parse(text, &pipeline, err, sizeof err) != 0) {
        ir_diag_file_error(d, NULL, "invalid pass pipeline '%s': %s", text, err);
        return -1;
    }
    pass_manager *pm = pass_manager_new(d);
    int rc = pm ? pass_manager_run(pm, &pipeline, g) : -1;
    pass_manager_free(pm);
    pass_pipeline_free(&pipeline);
    return rc;
}

int qz_find_output(const ir_graph *g, const char *name)
{
    for (int i = 0; i < g->noutputs; i++)
        if (strcmp(g->values[g->outputs[i]]->name, name) == 0)
            return i;
    return -1;
}

void qz_free_outputs(rt_tensor **outputs, int n)
{
    for (int i = 0; i < n; i++) {
        rt_tensor_free(outputs[i]);
        outputs[i] = NULL;
    }
}

/* ---- inputs ---- */

int qz_lm_inputs(qz_inputs *in, const int32_t *seq_tokens, int T)
{
    int64_t dims[2] = {1, T};
    in->tensors[0] = rt_tensor_new(IR_I32, 2, dims);
    in->tensors[1] = rt_tensor_new(IR_I32, 2, dims);
    if (!in->tensors[0] || !in->tensors[1]) {
        rt_tensor_free(in->tensors[0]);
        rt_tensor_free(in->tensors[1]);
        return -1;
    }
    memcpy(in->tensors[0]->data, seq_tokens, (size_t)T * sizeof(int32_t));
    memcpy(in->tensors[1]->data, seq_tokens + 1, (size_t)T * sizeof(int32_t));
    in->names[0] = (char *)"idx";
    in->names[1] = (char *)"targets";
    in->set = rt_weights_borrow(in->names, in->tensors, 2);
    return 0;
}

void qz_inputs_free(qz_inputs *in)
{
    rt_tensor_free(in->tensors[0]);
    rt_tensor_free(in->tensors[1]);
    in->tensors[0] = in->tensors[1] = NULL;
}

/* ---- evaluation ---- */

/* NOTE: compiles g on every call, so a Quadapter run compiles the full
 * quantized graph about five times. The interpreter does not mind, but
 * with the JIT on GPT-2 sizes the compiles can take longer than the runs. */

int qz_mean_loss(const ir_graph *g, const char *loss_name, const rt_weights *weights, const rt_weights *inputs,
                 int ninputs, const rt_executor *ex, int threads, double *loss, ir_diag *d)
{
    int loss_output = qz_find_output(g, loss_name);
    if (loss_output < 0) {
        ir_diag_file_error(d, NULL, "graph '%s' has no output named '%s'", g->name, loss_name);
        return -1;
    }
    void *module = ex->compile(g, threads, d);
    if (!module)
        return -1;
    rt_tensor **outputs = calloc((size_t)g->noutputs, sizeof *outputs);
    double sum = 0;
    int rc = outputs ? 0 : -1;
    for (int i = 0; i < ninputs && rc == 0; i++) {
        rc = ex->run(module, weights, i == 0, &inputs[i], outputs, d);
        if (rc == 0)
            sum += *(const float *)outputs[loss_output]->data;
        if (outputs)
            qz_free_outputs(outputs, g->noutputs);
    }
    free(outputs);
    ex->free(module);
    *loss = ninputs > 0 ? sum / ninputs : 0;
    return rc;
}

/* ---- phase 1 block graphs ---- */

/* Names the block input (operand 0 of layernorm h<i>.ln1) and output
 * (h<i>.out) of GPT-2 block i, as examples/gpt2.qd names them. */
int qz_block_values(const ir_graph *g, int block, int *input, int *output)
{
    char name[64];
    snprintf(name, sizeof name, "h%d.ln1", block);
    int ln = ir_find(g, name);
    snprintf(name, sizeof name, "h%d.out", block);
    *output = ir_find(g, name);
    if (ln < 0 || *output < 0 || g->values[ln]->op != IR_OP_LAYERNORM)
        return -1;
    *input = g->values[ln]->ops[0];
    return 0;
}

int qz_count_blocks(const ir_graph *g)
{
    int n = 0, input, output;
    while (qz_block_values(g, n, &input, &output) == 0)
        n++;
    return n;
}

/* Cuts block `block` out of the quantized graph q: its input becomes the
 * graph input "block_input", and the only output is
 *   loss = reduce_mean((out - block_target)^2)
 * over every element, with block_target the FP block output. Dead-code
 * elimination then drops every other block, the embeddings and the head.
 * The loss is named QZ_BLOCK_LOSS, because the graph already has a value
 * called "loss" until then. */
ir_graph *qz_build_block_graph(const ir_graph *q, int block, ir_diag *d)
{
    ir_graph *g = ir_graph_clone(q);
    int input, output;
    if (!g || qz_block_values(g, block, &input, &output) != 0) {
        ir_diag_file_error(d, NULL, "cannot find block %d (values h%d.ln1 and h%d.out) in graph '%s'", block,
                           block, block, q->name);
        ir_graph_free(g);
        return NULL;
    }
    ir_type in_type = g->values[input]->type;
    ir_type out_type = g->values[output]->type;
    int block_input = ir_add_leaf(g, IR_OP_INPUT, "block_input", in_type, NULL, no_loc);
    if (block_input < 0) {
        ir_graph_free(g);
        return NULL;
    }
    ir_replace_uses(g, input, block_input);
    if (ir_graph_compact(g) != 0) {
        ir_graph_free(g);
        return NULL;
    }
    qz_block_values(g, block, &input, &output);

    int target = ir_add_leaf(g, IR_OP_INPUT, "block_target", out_type, NULL, no_loc);
    int operands[2] = {output, target};
    int diff = target < 0 ? -1 : ir_add(g, IR_OP_SUB, "block_diff", operands, 2, NULL, no_loc);
    operands[0] = operands[1] = diff;
    int square = diff < 0 ? -1 : ir_add(g, IR_OP_MUL, "block_square", operands, 2, NULL, no_loc);
    int64_t axes[RT_MAX_RANK];
    for (int i = 0; i < out_type.rank; i++)
        axes[i] = i;
    ir_attrs attrs = ir_attrs_for(IR_OP_REDUCE_MEAN);
    ir_attrs_ints(&attrs, "axes", axes, out_type.rank);
    int loss = square < 0 ? -1 : ir_add(g, IR_OP_REDUCE_MEAN, QZ_BLOCK_LOSS, &square, 1, &attrs, no_loc);
    if (loss < 0) {
        ir_graph_free(g);
        return NULL;
    }
    g->noutputs = 0;
    if (ir_add_output(g, loss) != 0 || qz_run_pipeline(g, "dce", d) != 0) {
        ir_graph_free(g);
        return NULL;
    }

    /* dce keeps inputs, but the executors require a tensor for each, so the
     * token inputs that nothing uses now must go. */
    int *uses = ir_use_counts(g);
    for (int id = 0; uses && id < g->nvalues; id++)
        if (g->values[id]->op == IR_OP_INPUT && uses[id] == 0)
            g->values[id]->dead = true;
    free(uses);
    if (!uses || ir_graph_compact(g) != 0) {
        ir_graph_free(g);
        return NULL;
    }
    return g;
}

/* ---- the training loop ---- */

/* Collects the outputs "<param>.grad" of a graph built by autodiff and the
 * matching tensors of `weights`. Only params accepted by `train` (NULL
 * accepts every param) are
 * kept, because autodiff also adds the gradients of the quantizer params
 * that the trained ones depend on. */
static int collect_trained(const ir_graph *g, rt_weights *weights, bool (*train)(const char *name),
                           char ***names, rt_tensor ***tensors, int **grad_outputs, int *count, ir_diag *d)
{
    *names = calloc((size_t)g->noutputs + 1, sizeof **names);
    *tensors = calloc((size_t)g->noutputs + 1, sizeof **tensors);
    *grad_outputs = calloc((size_t)g->noutputs + 1, sizeof **grad_outputs);
    *count = 0;
    if (!*names || !*tensors || !*grad_outputs)
        return -1;
    for (int i = 0; i < g->noutputs; i++) {
        const char *name = g->values[g->outputs[i]]->name;
        size_t len = strlen(name);
        if (len <= 5 || strcmp(name + len - 5, ".grad") != 0)
            continue;
        char param[512];
        snprintf(param, sizeof param, "%.*s", (int)(len - 5), name);
        if (train && !train(param))
            continue;
        rt_tensor *t = rt_weights_get(weights, param);
        if (!t || t->dtype != IR_F32) {
            ir_diag_file_error(d, NULL, "no f32 tensor for trained param '%s'", param);
            return -1;
        }
        for (int j = 0; j < weights->count; j++)
            if (weights->tensors[j] == t)
                (*names)[*count] = weights->names[j];
        (*tensors)[*count] = t;
        (*grad_outputs)[*count] = i;
        (*count)++;
    }
    if (*count == 0) {
        ir_diag_file_error(d, NULL, "graph '%s' has no gradient of a trained param", g->name);
        return -1;
    }
    return 0;
}

static void clamp_scales(char *const *names, rt_tensor *const *tensors, int count)
{
    for (int i = 0; i < count; i++) {
        size_t len = strlen(names[i]);
        if (len < 12 || strcmp(names[i] + len - 12, ".input.scale") != 0)
            continue;
        float *x = tensors[i]->data;
        for (int64_t k = 0; k < rt_tensor_numel(tensors[i]); k++)
            if (!(x[k] >= QZ_MIN_SCALE))
                x[k] = QZ_MIN_SCALE;
    }
}

int qz_train(const qz_train_job *job, rt_weights *weights, ir_diag *d)
{
    const rt_quantize_config *c = job->config;
    ir_graph *g = ir_graph_clone(job->forward);
    char text[1024];
    snprintf(text, sizeof text, "autodiff{wrt=%s loss=%s},dce", job->wrt, job->loss);
    if (!g || qz_run_pipeline(g, text, d) != 0) {
        ir_graph_free(g);
        return -1;
    }

    char **names = NULL;
    rt_tensor **tensors = NULL;
    int *grad_outputs = NULL, count = 0;
    void *module = NULL;
    rt_adamw *opt = NULL;
    rt_tensor **outputs = calloc((size_t)g->noutputs, sizeof *outputs);
    rt_tensor **grads = calloc((size_t)g->noutputs, sizeof *grads);
    int loss_output = qz_find_output(g, job->loss);
    int rc = outputs && grads && loss_output >= 0 ? 0 : -1;
    if (rc == 0)
        rc = collect_trained(g, weights, job->train, &names, &tensors, &grad_outputs, &count, d);
    rt_weights trained = rt_weights_borrow(names, tensors, count);
    if (rc == 0) {
        module = c->executor->compile(g, c->threads, d);
        rc = module ? 0 : -1;
    }
    if (rc == 0) {
        rt_adamw_config adamw = rt_adamw_default_config();
        adamw.weight_decay = job->weight_decay;
        opt = rt_adamw_new(&adamw, &trained, c->executor, c->threads, d);
        rc = opt ? 0 : -1;
    }

    for (int step = 0; step < job->steps && rc == 0; step++) {
        const rt_weights *inputs = job->inputs(job->ctx, step);
        rc = c->executor->run(module, weights, true, inputs, outputs, d);
        if (rc != 0)
            break;
        double loss = *(const float *)outputs[loss_output]->data;
        for (int i = 0; i < count; i++)
            grads[i] = outputs[grad_outputs[i]];
        rt_adamw_norm norm;
        rc = rt_adamw_grad_norm(opt, grads, &norm, d);
        if (rc == 0 && (!isfinite(loss) || norm.first_nonfinite >= 0)) {
            ir_diag_file_error(d, NULL, "%s step %d: the loss (%g) or the gradient of '%s' is not finite; "
                               "lower --lr", job->phase, step + 1, loss,
                               norm.first_nonfinite >= 0 ? names[norm.first_nonfinite] : "loss");
            rc = -1;
        }
        if (rc == 0)
            rc = rt_adamw_update(opt, &trained, grads, c->lr, step + 1, norm.clip_scale, d);
        if (rc == 0 && job->clamp_alpha && pass_quadapter_clamp_alpha(job->forward, weights, d) < 0)
            rc = -1;
        if (rc == 0 && job->clamp_scales)
            clamp_scales(names, tensors, count);
        qz_free_outputs(outputs, g->noutputs);
        if (rc == 0 && c->on_step)
            c->on_step(c->ctx, job->phase, job->block, step + 1, job->steps, loss);
    }

    rt_adamw_free(opt);
    if (module)
        c->executor->free(module);
    free(outputs);
    free(grads);
    free(names);
    free(tensors);
    free(grad_outputs);
    ir_graph_free(g);
    return rc;
}
