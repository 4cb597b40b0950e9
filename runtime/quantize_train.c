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

int qz_find_output(const ir_graph *g, const char *name)
{
    for (int i = 0; i < g->noutputs; i++)
        if (strcmp(g->values[g->outputs[i]]->name, name) == 0)
            return i;
    return -1;
}

int qz_keep_output(ir_graph *g, const char *name, ir_diag *d)
{
    int k = qz_find_output(g, name);
    if (k < 0) {
        ir_diag_file_error(d, NULL, "graph '%s' has no output named '%s'", g->name, name);
        return -1;
    }
    g->outputs[0] = g->outputs[k];
    g->noutputs = 1;
    return 0;
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
    return qz_lm_batch_inputs(in, &seq_tokens, 1, 1, T, 0);
}

int qz_lm_batch_inputs(qz_inputs *in, const int32_t *const *seqs, int nseqs, int B, int T, int32_t pad_target)
{
    int64_t dims[2] = {B, T};
    in->tensors[0] = rt_tensor_new(IR_I32, 2, dims);
    in->tensors[1] = rt_tensor_new(IR_I32, 2, dims);
    if (!in->tensors[0] || !in->tensors[1]) {
        qz_inputs_free(in);
        return -1;
    }
    int32_t *idx = in->tensors[0]->data;
    int32_t *targets = in->tensors[1]->data;
    for (int r = 0; r < B; r++) {
        int32_t *idx_row = idx + (size_t)r * (size_t)T;
        int32_t *target_row = targets + (size_t)r * (size_t)T;
        if (r < nseqs) {
            memcpy(idx_row, seqs[r], (size_t)T * sizeof(int32_t));
            memcpy(target_row, seqs[r] + 1, (size_t)T * sizeof(int32_t));
            continue;
        }
        for (int t = 0; t < T; t++) {
            idx_row[t] = 0;
            target_row[t] = pad_target;
        }
    }
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

int qz_make_batches(qz_batches *b, const int32_t *const *seqs, int nseqs, int B, int T, int32_t pad_target)
{
    memset(b, 0, sizeof *b);
    int count = (nseqs + B - 1) / B;
    b->inputs = calloc((size_t)count + 1, sizeof *b->inputs);
    b->sets = calloc((size_t)count + 1, sizeof *b->sets);
    b->rows = calloc((size_t)count + 1, sizeof *b->rows);
    if (!b->inputs || !b->sets || !b->rows) {
        qz_batches_free(b);
        return -1;
    }
    for (int i = 0; i < count; i++) {
        int first = i * B;
        int rows = nseqs - first < B ? nseqs - first : B;
        if (qz_lm_batch_inputs(&b->inputs[i], seqs + first, rows, B, T, pad_target) != 0) {
            qz_batches_free(b);
            return -1;
        }
        b->sets[i] = b->inputs[i].set;
        b->rows[i] = rows;
        b->count++;
    }
    return 0;
}

void qz_batches_free(qz_batches *b)
{
    for (int i = 0; i < b->count; i++)
        qz_inputs_free(&b->inputs[i]);
    free(b->inputs);
    free(b->sets);
    free(b->rows);
    memset(b, 0, sizeof *b);
}

/* ---- evaluation ---- */

int qz_mean_loss(const ir_graph *g, const char *loss_name, const rt_weights *weights, const rt_weights *inputs,
                 const int *rows, int ninputs, rt_exec_cache *cache, double *loss, ir_diag *d)
{
    int loss_output = qz_find_output(g, loss_name);
    if (loss_output < 0) {
        ir_diag_file_error(d, NULL, "graph '%s' has no output named '%s'", g->name, loss_name);
        return -1;
    }
    void *module = rt_exec_cache_get(cache, g, d);
    if (!module)
        return -1;
    const rt_executor *ex = rt_exec_cache_executor(cache);
    rt_tensor *outputs = calloc((size_t)g->noutputs, sizeof *outputs);
    double sum = 0;
    int64_t sequences = 0;
    int rc = outputs ? 0 : -1;
    for (int i = 0; i < ninputs && rc == 0; i++) {
        rc = ex->run_views(module, weights, i == 0, &inputs[i], outputs, d);
        int weight = rows ? rows[i] : 1;
        if (rc == 0)
            sum += weight * (double)*(const float *)outputs[loss_output].data;
        sequences += weight;
    }
    free(outputs);
    *loss = sequences > 0 ? sum / (double)sequences : 0;
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

/* Renames the params "h.<block>.NAME" of g to QZ_BLOCK_PREFIX "NAME": each
 * gets a new param of the new name that takes over its uses. */
static int rename_block_params(ir_graph *g, int block, ir_diag *d)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "h.%d.", block);
    size_t prefix_len = strlen(prefix);
    int n = g->nvalues;
    for (int id = 0; id < n; id++) {
        ir_value *v = g->values[id];
        if (v->op != IR_OP_PARAM || strncmp(v->name, prefix, prefix_len) != 0)
            continue;
        char name[512];
        snprintf(name, sizeof name, "%s%s", QZ_BLOCK_PREFIX, v->name + prefix_len);
        ir_attrs attrs = ir_attrs_for(IR_OP_PARAM);
        const char *init = ir_attr_str(v, "init");
        if (init)
            ir_attrs_str(&attrs, "init", init);
        int renamed = ir_find(g, name) < 0 ? ir_add_leaf(g, IR_OP_PARAM, name, v->type, &attrs, v->loc) : -1;
        ir_attrs_clear(&attrs);
        if (renamed < 0) {
            ir_diag_file_error(d, NULL, "cannot rename param '%s' of the block %d graph to '%s'",
                               g->values[id]->name, block, name);
            return -1;
        }
        ir_replace_uses(g, id, renamed);
        g->values[id]->dead = true;
    }
    return ir_graph_compact(g);
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
    if (ir_add_output(g, loss) != 0 || pass_run_text(g, "dce", d) != 0) {
        ir_graph_free(g);
        return NULL;
    }

    /* dce keeps leaves, but the executors require a tensor for each input,
     * so the token inputs that nothing uses now must go. The params of the
     * other blocks, the embeddings and the head go too, which leaves the
     * same graph for every block. */
    int *uses = ir_use_counts(g);
    for (int id = 0; uses && id < g->nvalues; id++)
        if ((g->values[id]->op == IR_OP_INPUT || g->values[id]->op == IR_OP_PARAM) && uses[id] == 0)
            g->values[id]->dead = true;
    free(uses);
    if (!uses || ir_graph_compact(g) != 0 || rename_block_params(g, block, d) != 0) {
        ir_graph_free(g);
        return NULL;
    }
    return g;
}

int qz_block_weights_init(qz_block_weights *v, const ir_graph *block_graph, const rt_weights *w, int block,
                          ir_diag *d)
{
    memset(v, 0, sizeof *v);
    v->names = calloc((size_t)block_graph->nvalues + 1, sizeof *v->names);
    v->tensors = calloc((size_t)block_graph->nvalues + 1, sizeof *v->tensors);
    if (!v->names || !v->tensors) {
        qz_block_weights_free(v);
        return -1;
    }
    size_t prefix_len = strlen(QZ_BLOCK_PREFIX);
    for (int id = 0; id < block_graph->nvalues; id++) {
        const char *name = block_graph->values[id]->name;
        if (block_graph->values[id]->op != IR_OP_PARAM)
            continue;
        char model_name[512];
        if (strncmp(name, QZ_BLOCK_PREFIX, prefix_len) == 0)
            snprintf(model_name, sizeof model_name, "h.%d.%s", block, name + prefix_len);
        else
            snprintf(model_name, sizeof model_name, "%s", name);
        rt_tensor *t = rt_weights_get(w, model_name);
        v->names[v->count] = strdup(name);
        if (!t || !v->names[v->count]) {
            ir_diag_file_error(d, NULL, "no tensor '%s' for param '%s' of the block %d graph", model_name, name,
                               block);
            free(v->names[v->count]);
            qz_block_weights_free(v);
            return -1;
        }
        v->tensors[v->count++] = t;
    }
    v->set = rt_weights_borrow(v->names, v->tensors, v->count);
    return 0;
}

void qz_block_weights_free(qz_block_weights *v)
{
    for (int i = 0; v->names && i < v->count; i++)
        free(v->names[i]);
    free(v->names);
    free(v->tensors);
    memset(v, 0, sizeof *v);
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
    if (!g || qz_keep_output(g, job->loss, d) != 0 || pass_run_text(g, text, d) != 0) {
        ir_graph_free(g);
        return -1;
    }

    char **names = NULL;
    rt_tensor **tensors = NULL;
    int *grad_outputs = NULL, count = 0;
    void *module = NULL;
    rt_adamw *opt = NULL;
    rt_tensor *outputs = calloc((size_t)g->noutputs, sizeof *outputs);
    rt_tensor **grads = calloc((size_t)g->noutputs, sizeof *grads);
    int loss_output = qz_find_output(g, job->loss);
    int rc = outputs && grads && loss_output >= 0 ? 0 : -1;
    if (rc == 0)
        rc = collect_trained(g, weights, job->train, &names, &tensors, &grad_outputs, &count, d);
    rt_weights trained = rt_weights_borrow(names, tensors, count);
    if (rc == 0) {
        module = rt_exec_cache_get(job->cache, g, d);
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
        rc = c->executor->run_views(module, weights, true, inputs, outputs, d);
        if (rc != 0)
            break;
        double loss = *(const float *)outputs[loss_output].data;
        for (int i = 0; i < count; i++)
            grads[i] = &outputs[grad_outputs[i]];
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
        if (rc == 0 && c->on_step)
            c->on_step(c->ctx, job->phase, job->block, step + 1, job->steps, loss);
    }

    rt_adamw_free(opt);
    free(outputs);
    free(grads);
    free(names);
    free(tensors);
    free(grad_outputs);
    ir_graph_free(g);
    return rc;
}
