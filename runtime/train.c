/* The trainer: graphs, parameters, training steps, evaluation and the
 * loop. Checkpoints live in runtime/train_ckpt.c. */
#include "runtime/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "passes/manager.h"
#include "runtime/model.h"

/* Generator streams of one seed, so that drawing the init does not shift
 * the batches. */
enum { RNG_STREAM_INIT = 1, RNG_STREAM_BATCHES = 2 };

rt_train_config rt_train_default_config(void)
{
    rt_train_config c;
    memset(&c, 0, sizeof c);
    c.batch = 4;
    c.seq = 64;
    c.steps = 100;
    c.lr = 6e-4f;
    c.warmup = 0;
    c.min_lr_frac = 0.1f;
    c.adamw = rt_adamw_default_config();
    c.seed = 1337;
    c.threads = 0;
    c.executor = rt_executor_jit();
    c.eval_batches = 8;
    return c;
}

static int find_output(const ir_graph *g, const char *name)
{
    for (int i = 0; i < g->noutputs; i++)
        if (strcmp(g->values[g->outputs[i]]->name, name) == 0)
            return i;
    return -1;
}

static ir_graph *compile_model(const rt_train_config *c, ir_diag *d)
{
    return rt_compile_model_bt(c->model_path, c->defines, c->ndefines, c->batch, c->seq, d);
}

/* Appends the backward graph of every param, then fuses elementwise chains
 * unless the config turns fusion off. */
static int add_backward(ir_graph *g, bool fuse, ir_diag *d)
{
    return pass_run_text(g, fuse ? "autodiff{wrt=all loss=loss},dce,fuse-elementwise" : "autodiff{wrt=all loss=loss},dce",
                         d);
}

static int find_outputs(rt_trainer *t, ir_diag *d)
{
    const ir_graph *g = t->train_graph;
    t->loss_output = find_output(g, "loss");
    t->logits_output = find_output(g, "logits");
    if (t->loss_output < 0 || find_output(t->eval_graph, "loss") != t->loss_output) {
        ir_diag_file_error(d, t->config.model_path, "the model has no output named 'loss' to train on");
        return -1;
    }
    int nparams = 0;
    for (int i = 0; i < g->nvalues; i++)
        nparams += g->values[i]->op == IR_OP_PARAM;
    t->grad_output = calloc((size_t)nparams + 1, sizeof *t->grad_output);
    if (!t->grad_output)
        return -1;
    int p = 0;
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (v->op != IR_OP_PARAM)
            continue;
        char name[512];
        snprintf(name, sizeof name, "%s.grad", v->name);
        t->grad_output[p] = find_output(g, name);
        if (t->grad_output[p] < 0) {
            ir_diag_file_error(d, t->config.model_path,
                               "the backward graph has no gradient output '%s'; is the loss independent of it?",
                               name);
            return -1;
        }
        p++;
    }
    return 0;
}

rt_trainer *rt_trainer_new(const rt_train_config *c, ir_diag *d)
{
    rt_trainer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->config = *c;
    t->eval_graph = compile_model(c, d);
    t->train_graph = t->eval_graph ? ir_graph_clone(t->eval_graph) : NULL;
    if (!t->train_graph || add_backward(t->train_graph, !c->no_fuse_elementwise, d) != 0 || find_outputs(t, d) != 0) {
        rt_trainer_free(t);
        return NULL;
    }
    rt_rng_seed(&t->sampler, c->seed, RNG_STREAM_BATCHES);

    t->batch = rt_weights_new();
    int64_t dims[2] = {c->batch, c->seq};
    rt_tensor *idx = rt_tensor_new(IR_I32, 2, dims);
    rt_tensor *targets = rt_tensor_new(IR_I32, 2, dims);
    if (!t->batch || !idx || !targets || rt_weights_set(t->batch, "idx", idx) != 0 ||
        rt_weights_set(t->batch, "targets", targets) != 0) {
        ir_diag_file_error(d, NULL, "out of memory allocating a batch of %d x %d tokens", c->batch, c->seq);
        rt_trainer_free(t);
        return NULL;
    }
    return t;
}

void rt_trainer_free(rt_trainer *t)
{
    if (!t)
        return;
    if (t->train_module)
        t->config.executor->free(t->train_module);
    if (t->eval_module)
        t->config.executor->free(t->eval_module);
    rt_adamw_free(t->opt);
    rt_weights_free(t->params);
    rt_weights_free(t->batch);
    free(t->grad_output);
    ir_graph_free(t->train_graph);
    ir_graph_free(t->eval_graph);
    free(t);
}

void rt_trainer_memory(const rt_trainer *t, rt_train_memory *out)
{
    memset(out, 0, sizeof *out);
    rt_graph_memory_estimate(t->train_graph, &out->graph);
    const ir_graph *g = t->train_graph;
    for (int i = 0; i < g->nvalues; i++)
        if (g->values[i]->op == IR_OP_PARAM)
            out->param_count += ir_type_numel(&g->values[i]->type);
    out->param_bytes = out->graph.param_bytes;
    out->grad_bytes = out->param_count * (int64_t)sizeof(float);
    out->optimizer_bytes = 2 * out->param_count * (int64_t)sizeof(float);
}

/* Fills t from an init attribute: "zeros", "ones" or "normal(STD)". */
static int init_tensor(rt_tensor *t, const char *init, rt_rng *rng)
{
    float *x = t->data;
    int64_t n = rt_tensor_numel(t);
    double std;
    if (strcmp(init, "zeros") == 0)
        return 0;
    if (strcmp(init, "ones") == 0) {
        for (int64_t i = 0; i < n; i++)
            x[i] = 1.0f;
        return 0;
    }
    if (sscanf(init, "normal(%lf)", &std) == 1) {
        for (int64_t i = 0; i < n; i++)
            x[i] = (float)(std * rt_rng_normal(rng));
        return 0;
    }
    return -1;
}

static bool same_shape(const rt_tensor *t, const ir_type *type)
{
    if (t->rank != type->rank)
        return false;
    for (int i = 0; i < t->rank; i++)
        if (t->dims[i] != type->dims[i])
            return false;
    return true;
}

/* Moves the tensor called `name` out of w, leaving an empty one in its
 * place, and returns it as f32. Returns NULL with *reason set when it is
 * missing or cannot be widened. */
static rt_tensor *take_tensor(rt_weights *w, const char *name, const char **reason)
{
    for (int i = 0; i < w->count; i++) {
        if (strcmp(w->names[i], name) != 0)
            continue;
        rt_tensor *t = w->tensors[i];
        if (t->dtype == IR_F32) {
            int64_t zero = 0;
            rt_tensor *empty = rt_tensor_new(IR_F32, 1, &zero);
            if (!empty) {
                *reason = "out of memory";
                return NULL;
            }
            w->tensors[i] = empty;
            return t;
        }
        rt_tensor *widened = rt_tensor_to_f32(t);
        *reason = widened ? NULL : "not a float tensor";
        return widened;
    }
    *reason = "missing";
    return NULL;
}

static rt_tensor *initial_param(rt_weights *initial, const ir_value *v, rt_rng *rng, ir_diag *d)
{
    char shape[128];
    if (!initial) {
        rt_tensor *t = rt_tensor_new(IR_F32, v->type.rank, v->type.dims);
        if (!t) {
            ir_diag_file_error(d, NULL, "out of memory allocating param '%s' of type %s", v->name,
                               ir_type_str(&v->type, shape, sizeof shape));
            return NULL;
        }
        const char *init = ir_attr_str(v, "init");
        if (init_tensor(t, init ? init : "zeros", rng) != 0) {
            ir_diag_file_error(d, NULL, "param '%s' has the unknown init '%s'", v->name, init);
            rt_tensor_free(t);
            return NULL;
        }
        return t;
    }
    const char *reason = NULL;
    rt_tensor *t = take_tensor(initial, v->name, &reason);
    if (!t) {
        ir_diag_file_error(d, NULL, "initial weight '%s' of type %s is %s", v->name,
                           ir_type_str(&v->type, shape, sizeof shape), reason);
        return NULL;
    }
    if (!same_shape(t, &v->type)) {
        ir_type got = {.dtype = IR_F32, .rank = t->rank};
        memcpy(got.dims, t->dims, sizeof got.dims);
        char got_shape[128];
        ir_diag_file_error(d, NULL, "initial weight '%s' has shape %s but the model expects %s", v->name,
                           ir_type_str(&got, got_shape, sizeof got_shape), ir_type_str(&v->type, shape, sizeof shape));
        rt_tensor_free(t);
        return NULL;
    }
    return t;
}

int rt_trainer_init_weights(rt_trainer *t, rt_weights *initial, ir_diag *d)
{
    rt_weights_free(t->params);
    t->params = rt_weights_new();
    if (!t->params)
        return -1;
    rt_rng rng;
    rt_rng_seed(&rng, t->config.seed, RNG_STREAM_INIT);
    const ir_graph *g = t->train_graph;
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (v->op != IR_OP_PARAM)
            continue;
        if (v->type.dtype != IR_F32) {
            ir_diag_file_error(d, NULL, "param '%s' is %s; training supports only f32 params", v->name,
                               ir_dtype_name(v->type.dtype));
            return -1;
        }
        rt_tensor *p = initial_param(initial, v, &rng, d);
        if (!p)
            return -1;
        if (rt_weights_set(t->params, v->name, p) != 0) {
            rt_tensor_free(p);
            return -1;
        }
    }
    t->train_stale = true;
    t->eval_stale = true;
    return 0;
}

int rt_trainer_prepare(rt_trainer *t, ir_diag *d)
{
    t->train_module = t->config.executor->compile(t->train_graph, t->config.threads, d);
    if (!t->train_module)
        return -1;
    t->opt = rt_adamw_new(&t->config.adamw, t->params, t->config.executor, t->config.threads, d);
    return t->opt ? 0 : -1;
}

static void set_batch(rt_trainer *t, const int32_t *idx, const int32_t *targets)
{
    size_t bytes = (size_t)t->config.batch * (size_t)t->config.seq * sizeof(int32_t);
    memcpy(rt_weights_get(t->batch, "idx")->data, idx, bytes);
    memcpy(rt_weights_get(t->batch, "targets")->data, targets, bytes);
}

static int run_train_graph(rt_trainer *t, rt_tensor **outputs, ir_diag *d)
{
    int rc = t->config.executor->run(t->train_module, t->params, t->train_stale, t->batch, outputs, d);
    if (rc == 0)
        t->train_stale = false;
    return rc;
}

int rt_trainer_forward_backward(rt_trainer *t, const int32_t *idx, const int32_t *targets, rt_tensor **outputs,
                                ir_diag *d)
{
    set_batch(t, idx, targets);
    return run_train_graph(t, outputs, d);
}

static bool all_finite(const rt_tensor *t)
{
    if (t->dtype != IR_F32)
        return true;
    const float *x = t->data;
    int64_t n = rt_tensor_numel(t);
    for (int64_t j = 0; j < n; j++)
        if (!isfinite(x[j]))
            return false;
    return true;
}

/* Names the first non-finite tensor: a weight if any, else the first
 * graph output in order (logits before gradients). */
static void report_nonfinite_loss(const rt_trainer *t, float loss, const rt_tensor *outputs, ir_diag *d)
{
    for (int i = 0; i < t->params->count; i++) {
        if (!all_finite(t->params->tensors[i])) {
            ir_diag_file_error(d, NULL,
                               "step %d: the loss is %g; the first non-finite tensor is weight '%s'; "
                               "lower --lr or check the initial weights",
                               t->step + 1, loss, t->params->names[i]);
            return;
        }
    }
    const ir_graph *g = t->train_graph;
    for (int i = 0; i < g->noutputs; i++) {
        if (i != t->loss_output && !all_finite(&outputs[i])) {
            ir_diag_file_error(d, NULL,
                               "step %d: the loss is %g; every weight is finite and the first non-finite "
                               "tensor is output '%s'; lower --lr",
                               t->step + 1, loss, g->values[g->outputs[i]]->name);
            return;
        }
    }
    ir_diag_file_error(d, NULL, "step %d: the loss is %g although every weight is finite; lower --lr", t->step + 1,
                       loss);
}

/* Runs the forward and backward graph on the current batch, checks the
 * results and applies AdamW. The outputs are views of the module's
 * buffers, so the gradients are neither copied nor allocated per step. */
static int step_on_batch(rt_trainer *t, rt_tensor *outputs, rt_train_step_result *r, ir_diag *d)
{
    int rc = t->config.executor->run_views(t->train_module, t->params, t->train_stale, t->batch, outputs, d);
    if (rc != 0)
        return -1;
    t->train_stale = false;
    r->loss = *(const float *)outputs[t->loss_output].data;
    if (!isfinite(r->loss)) {
        report_nonfinite_loss(t, r->loss, outputs, d);
        return 1;
    }

    int nparams = t->params->count;
    rt_tensor **grads = calloc((size_t)nparams + 1, sizeof *grads);
    if (!grads)
        return -1;
    for (int i = 0; i < nparams; i++)
        grads[i] = &outputs[t->grad_output[i]];
    rt_adamw_norm norm;
    rc = rt_adamw_grad_norm(t->opt, grads, &norm, d);
    if (rc == 0 && norm.first_nonfinite >= 0) {
        ir_diag_file_error(d, NULL, "step %d: the gradient of '%s' contains a non-finite value (loss %.6g); "
                           "lower --lr or check the weights", t->step + 1, t->params->names[norm.first_nonfinite],
                           r->loss);
        rc = 1;
    }
    if (rc == 0) {
        rt_lr_schedule schedule = {t->config.lr, t->config.warmup, t->config.min_lr_frac,
                                   t->config.schedule_steps > 0 ? t->config.schedule_steps : t->config.steps};
        r->lr = rt_lr_at(&schedule, t->step);
        r->grad_norm = norm.norm;
        rc = rt_adamw_update(t->opt, t->params, grads, r->lr, t->step + 1, norm.clip_scale, d);
    }
    free(grads);
    if (rc == 0) {
        t->step++;
        t->train_stale = true;
        t->eval_stale = true;
    }
    return rc;
}

int rt_trainer_step(rt_trainer *t, const rt_train_data *data, rt_train_step_result *r, ir_diag *d)
{
    memset(r, 0, sizeof *r);
    rt_tensor *idx = rt_weights_get(t->batch, "idx");
    rt_tensor *targets = rt_weights_get(t->batch, "targets");
    if (rt_train_sample_batch(data, &t->sampler, t->config.batch, t->config.seq, idx->data, targets->data, d) != 0)
        return -1;
    int noutputs = t->train_graph->noutputs;
    rt_tensor *outputs = calloc((size_t)noutputs, sizeof *outputs);
    if (!outputs)
        return -1;
    int rc = step_on_batch(t, outputs, r, d);
    free(outputs);
    return rc;
}

int rt_trainer_evaluate(rt_trainer *t, const rt_train_data *data, float *loss, ir_diag *d)
{
    int B = t->config.batch, T = t->config.seq;
    if (rt_train_val_windows(data, T) == 0) {
        ir_diag_file_error(d, NULL,
                           "the held-out tokens (%zu) contain no window of %d tokens; raise --val-frac or lower --seq",
                           rt_train_data_val_tokens(data), T + 1);
        return -1;
    }
    if (!t->eval_module) {
        t->eval_module = t->config.executor->compile(t->eval_graph, t->config.threads, d);
        if (!t->eval_module)
            return -1;
        t->eval_stale = true;
    }
    int noutputs = t->eval_graph->noutputs;
    rt_tensor **outputs = calloc((size_t)noutputs, sizeof *outputs);
    if (!outputs)
        return -1;
    double sum = 0;
    int nbatches = t->config.eval_batches > 0 ? t->config.eval_batches : 1;
    for (int b = 0; b < nbatches; b++) {
        rt_train_val_batch(data, (size_t)b, B, T, rt_weights_get(t->batch, "idx")->data,
                           rt_weights_get(t->batch, "targets")->data);
        if (t->config.executor->run(t->eval_module, t->params, t->eval_stale, t->batch, outputs, d) != 0) {
            free(outputs);
            return -1;
        }
        t->eval_stale = false;
        sum += *(const float *)outputs[t->loss_output]->data;
        for (int i = 0; i < noutputs; i++) {
            rt_tensor_free(outputs[i]);
            outputs[i] = NULL;
        }
    }
    free(outputs);
    *loss = (float)(sum / nbatches);
    return 0;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool every(int n, int step)
{
    return n > 0 && step % n == 0;
}

rt_train_status rt_trainer_run(rt_trainer *t, const rt_train_data *data, const rt_train_hooks *hooks,
                               char *saved_path, size_t saved_cap, ir_diag *d)
{
    saved_path[0] = '\0';
    while (t->step < t->config.steps) {
        double start = now_seconds();
        rt_train_step_result r;
        int rc = rt_trainer_step(t, data, &r, d);
        if (rc != 0)
            return rc > 0 ? RT_TRAIN_NONFINITE : RT_TRAIN_ERROR;

        rt_train_progress p;
        memset(&p, 0, sizeof p);
        p.step = t->step;
        p.total_steps = t->config.steps;
        p.loss = r.loss;
        p.lr = r.lr;
        p.grad_norm = r.grad_norm;
        p.step_seconds = now_seconds() - start;
        p.tokens_per_second = (double)t->config.batch * t->config.seq / p.step_seconds;

        if (every(t->config.eval_every, t->step) || (t->config.eval_every > 0 && t->step == t->config.steps)) {
            if (rt_trainer_evaluate(t, data, &p.eval_loss, d) != 0)
                return RT_TRAIN_ERROR;
            p.evaluated = true;
        }
        bool saved = false;
        if (every(t->config.ckpt_every, t->step)) {
            rt_train_checkpoint_path(&t->config, t->step, saved_path, saved_cap);
            if (rt_trainer_save_checkpoint(t, saved_path, d) != 0) {
                saved_path[0] = '\0';
                return RT_TRAIN_ERROR;
            }
            p.checkpoint = saved_path;
            saved = true;
        }
        if (hooks && hooks->on_step)
            hooks->on_step(hooks->ctx, &p);

        /* Polled after the callback, which may set the flag too. */
        if (hooks && hooks->interrupt && *hooks->interrupt) {
            if (!saved) {
                rt_train_checkpoint_path(&t->config, t->step, saved_path, saved_cap);
                if (rt_trainer_save_checkpoint(t, saved_path, d) != 0) {
                    saved_path[0] = '\0';
                    return RT_TRAIN_ERROR;
                }
            }
            return RT_TRAIN_INTERRUPTED;
        }
    }
    return RT_TRAIN_DONE;
}
