/* AdamW update and gradient-norm graphs, their compiled kernels, and the
 * learning-rate schedule. */
#include "runtime/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The compiled graphs for all parameters of one size. */
struct rt_adamw_kernels {
    int64_t n;
    void *update;
    void *sqnorm;
};

rt_adamw_config rt_adamw_default_config(void)
{
    rt_adamw_config c;
    c.beta1 = 0.9f;
    c.beta2 = 0.95f;
    c.eps = 1e-8f;
    c.weight_decay = 0.1f;
    c.decay_all = false;
    c.grad_clip = 1.0f;
    return c;
}

float rt_lr_at(const rt_lr_schedule *s, int step)
{
    if (step < s->warmup)
        return s->lr * (float)(step + 1) / (float)s->warmup;
    float min_lr = s->lr * s->min_lr_frac;
    int decay_steps = s->total_steps - s->warmup;
    double ratio = decay_steps > 0 ? (double)(step - s->warmup) / decay_steps : 1.0;
    if (ratio > 1.0)
        ratio = 1.0;
    const double pi = 3.14159265358979323846;
    double coeff = 0.5 * (1.0 + cos(pi * ratio));
    return (float)(min_lr + coeff * (s->lr - min_lr));
}

static const ir_loc no_loc = {0};

static int add_input(ir_graph *g, const char *name, int64_t n)
{
    ir_type t = {.dtype = IR_F32, .rank = n < 0 ? 0 : 1, .dims = {n < 0 ? 0 : n}};
    return ir_add_leaf(g, IR_OP_INPUT, name, t, NULL, no_loc);
}

static int add_scalar_const(ir_graph *g, const char *name, float value)
{
    ir_type t = {.dtype = IR_F32, .rank = 0};
    ir_attrs attrs = ir_attrs_for(IR_OP_CONST);
    ir_attrs_float(&attrs, "value", value);
    int id = ir_add_leaf(g, IR_OP_CONST, name, t, &attrs, no_loc);
    ir_attrs_clear(&attrs);
    return id;
}

static int add_binary(ir_graph *g, ir_op op, const char *name, int a, int b)
{
    if (a < 0 || b < 0)
        return -1;
    int operands[2] = {a, b};
    return ir_add(g, op, name, operands, 2, NULL, no_loc);
}

static int add_unary(ir_graph *g, ir_op op, const char *name, int a)
{
    if (a < 0)
        return -1;
    return ir_add(g, op, name, &a, 1, NULL, no_loc);
}

ir_graph *rt_adamw_build_update_graph(int64_t n, const rt_adamw_config *c, ir_diag *d)
{
    ir_graph *g = ir_graph_new("adamw_update", d);
    if (!g)
        return NULL;
    int param = add_input(g, "param", n);
    int grad = add_input(g, "grad", n);
    int m = add_input(g, "m", n);
    int v = add_input(g, "v", n);
    int lr = add_input(g, "lr", -1);
    int bc1 = add_input(g, "bias_correction1", -1);
    int bc2 = add_input(g, "bias_correction2", -1);
    int clip = add_input(g, "clip_scale", -1);
    int wd = add_input(g, "weight_decay", -1);

    /* 1 - beta is rounded to f32 once, as a C implementation in f32 does. */
    int beta1 = add_scalar_const(g, "beta1", c->beta1);
    int one_minus_beta1 = add_scalar_const(g, "one_minus_beta1", 1.0f - c->beta1);
    int beta2 = add_scalar_const(g, "beta2", c->beta2);
    int one_minus_beta2 = add_scalar_const(g, "one_minus_beta2", 1.0f - c->beta2);
    int eps = add_scalar_const(g, "eps", c->eps);

    int g_clipped = add_binary(g, IR_OP_MUL, "grad_clipped", grad, clip);
    int m_new = add_binary(g, IR_OP_ADD, "m_new", add_binary(g, IR_OP_MUL, "m_decayed", m, beta1),
                           add_binary(g, IR_OP_MUL, "m_step", g_clipped, one_minus_beta1));
    int g_squared = add_binary(g, IR_OP_MUL, "grad_squared", g_clipped, g_clipped);
    int v_new = add_binary(g, IR_OP_ADD, "v_new", add_binary(g, IR_OP_MUL, "v_decayed", v, beta2),
                           add_binary(g, IR_OP_MUL, "v_step", g_squared, one_minus_beta2));

    int m_hat = add_binary(g, IR_OP_DIV, "m_hat", m_new, bc1);
    int v_hat = add_binary(g, IR_OP_DIV, "v_hat", v_new, bc2);
    int denom = add_binary(g, IR_OP_ADD, "denom", add_unary(g, IR_OP_SQRT, "v_hat_sqrt", v_hat), eps);
    int adam = add_binary(g, IR_OP_DIV, "adam_direction", m_hat, denom);
    int decay = add_binary(g, IR_OP_MUL, "decay_direction", param, wd);
    int step = add_binary(g, IR_OP_MUL, "step", add_binary(g, IR_OP_ADD, "direction", adam, decay), lr);
    int param_new = add_binary(g, IR_OP_SUB, "param_new", param, step);

    if (param < 0 || grad < 0 || m < 0 || v < 0 || param_new < 0 || m_new < 0 || v_new < 0 ||
        ir_add_output(g, param_new) != 0 || ir_add_output(g, m_new) != 0 || ir_add_output(g, v_new) != 0) {
        ir_diag_file_error(d, NULL, "building the AdamW update graph for %lld elements failed", (long long)n);
        ir_graph_free(g);
        return NULL;
    }
    return g;
}

ir_graph *rt_adamw_build_sqnorm_graph(int64_t n, ir_diag *d)
{
    ir_graph *g = ir_graph_new("grad_sqnorm", d);
    if (!g)
        return NULL;
    int grad = add_input(g, "grad", n);
    int squared = add_binary(g, IR_OP_MUL, "grad_squared", grad, grad);
    int sum = -1;
    if (squared >= 0) {
        ir_attrs attrs = ir_attrs_for(IR_OP_REDUCE_SUM);
        int64_t axes[1] = {0};
        ir_attrs_ints(&attrs, "axes", axes, 1);
        sum = ir_add(g, IR_OP_REDUCE_SUM, "sqnorm", &squared, 1, &attrs, no_loc);
        ir_attrs_clear(&attrs);
    }
    if (sum < 0 || ir_add_output(g, sum) != 0) {
        ir_diag_file_error(d, NULL, "building the gradient-norm graph for %lld elements failed", (long long)n);
        ir_graph_free(g);
        return NULL;
    }
    return g;
}

/* NOTE: with the JIT every compiled module starts its own thread pool, so
 * a model with k distinct parameter sizes keeps 2k pools of idle workers
 * (16 for GPT-2, whose params have 8 distinct sizes). */
static int compile_kernels(rt_adamw *o, rt_adamw_kernels *k, int threads, ir_diag *d)
{
    ir_graph *update = rt_adamw_build_update_graph(k->n, &o->config, d);
    ir_graph *sqnorm = update ? rt_adamw_build_sqnorm_graph(k->n, d) : NULL;
    if (sqnorm) {
        k->update = o->executor->compile(update, threads, d);
        k->sqnorm = k->update ? o->executor->compile(sqnorm, threads, d) : NULL;
    }
    ir_graph_free(update);
    ir_graph_free(sqnorm);
    return k->sqnorm ? 0 : -1;
}

static rt_tensor *new_like(const rt_tensor *t)
{
    return rt_tensor_new(t->dtype, t->rank, t->dims);
}

static int add_moments(rt_adamw *o, const char *name, const rt_tensor *p, ir_diag *d)
{
    char key[512];
    snprintf(key, sizeof key, "opt.m.%s", name);
    rt_tensor *m = new_like(p);
    if (!m || rt_weights_set(o->m, key, m) != 0)
        goto oom;
    snprintf(key, sizeof key, "opt.v.%s", name);
    rt_tensor *v = new_like(p);
    if (!v || rt_weights_set(o->v, key, v) != 0)
        goto oom;
    return 0;
oom:
    ir_diag_file_error(d, NULL, "out of memory allocating the AdamW moments of '%s'", name);
    return -1;
}

/* Finds or adds the kernel slot for n elements. */
static int kernel_for_size(rt_adamw *o, int64_t n, int threads, ir_diag *d)
{
    for (int k = 0; k < o->nkernels; k++)
        if (o->kernels[k].n == n)
            return k;
    rt_adamw_kernels *k = &o->kernels[o->nkernels];
    k->n = n;
    if (compile_kernels(o, k, threads, d) != 0)
        return -1;
    return o->nkernels++;
}

rt_adamw *rt_adamw_new(const rt_adamw_config *c, const rt_weights *params, const rt_executor *executor,
                       int threads, ir_diag *d)
{
    rt_adamw *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->config = *c;
    o->executor = executor;
    int n = params->count;
    o->names = calloc((size_t)n + 1, sizeof *o->names);
    o->decay = calloc((size_t)n + 1, sizeof *o->decay);
    o->kernel_of = calloc((size_t)n + 1, sizeof *o->kernel_of);
    o->kernels = calloc((size_t)n + 1, sizeof *o->kernels);
    o->m = rt_weights_new();
    o->v = rt_weights_new();
    if (!o->names || !o->decay || !o->kernel_of || !o->kernels || !o->m || !o->v) {
        ir_diag_file_error(d, NULL, "out of memory creating the AdamW state");
        rt_adamw_free(o);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        const rt_tensor *p = params->tensors[i];
        if (p->dtype != IR_F32) {
            ir_diag_file_error(d, NULL, "parameter '%s' is %s; AdamW trains only f32 parameters",
                               params->names[i], ir_dtype_name(p->dtype));
            rt_adamw_free(o);
            return NULL;
        }
        o->names[i] = strdup(params->names[i]);
        o->nparams = i + 1;
        o->decay[i] = c->decay_all || p->rank == 2;
        o->kernel_of[i] = o->names[i] ? kernel_for_size(o, rt_tensor_numel(p), threads, d) : -1;
        if (o->kernel_of[i] < 0 || add_moments(o, params->names[i], p, d) != 0) {
            rt_adamw_free(o);
            return NULL;
        }
    }
    return o;
}

void rt_adamw_free(rt_adamw *o)
{
    if (!o)
        return;
    for (int k = 0; k < o->nkernels; k++) {
        o->executor->free(o->kernels[k].update);
        o->executor->free(o->kernels[k].sqnorm);
    }
    if (o->names)
        for (int i = 0; i < o->nparams; i++)
            free(o->names[i]);
    free(o->names);
    free(o->decay);
    free(o->kernel_of);
    free(o->kernels);
    rt_weights_free(o->m);
    rt_weights_free(o->v);
    free(o);
}

/* A rank-1 header over t's data, so every parameter matches its flat
 * kernel without a copy. */
static rt_tensor flat_view(const rt_tensor *t)
{
    rt_tensor view;
    memset(&view, 0, sizeof view);
    view.dtype = t->dtype;
    view.rank = 1;
    view.dims[0] = rt_tensor_numel(t);
    view.data = t->data;
    return view;
}

static rt_tensor scalar_view(float *value)
{
    rt_tensor view;
    memset(&view, 0, sizeof view);
    view.dtype = IR_F32;
    view.rank = 0;
    view.data = value;
    return view;
}

static bool tensor_all_finite(const rt_tensor *t)
{
    const float *x = t->data;
    int64_t n = rt_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return false;
    return true;
}

int rt_adamw_grad_norm(rt_adamw *o, rt_tensor *const *grads, rt_adamw_norm *out, ir_diag *d)
{
    out->norm = 0;
    out->clip_scale = 1.0f;
    out->first_nonfinite = -1;
    double sum = 0;
    for (int i = 0; i < o->nparams; i++) {
        rt_tensor grad = flat_view(grads[i]);
        char *names[1] = {"grad"};
        rt_tensor *tensors[1] = {&grad};
        rt_weights inputs = rt_weights_borrow(names, tensors, 1);
        rt_tensor *result = NULL;
        /* These graphs have no params, so "weights changed" costs only the
         * JIT's evaluation of their constants. */
        if (o->executor->run(o->kernels[o->kernel_of[i]].sqnorm, NULL, true, &inputs, &result, d) != 0)
            return -1;
        double squared = *(const float *)result->data;
        rt_tensor_free(result);
        /* An overflowing sum of finite squares is still a finite gradient,
         * so check the elements before blaming this tensor. */
        if (!isfinite(squared) && !tensor_all_finite(grads[i])) {
            out->first_nonfinite = i;
            out->norm = squared;
            return 0;
        }
        sum += squared;
    }
    out->norm = sqrt(sum);
    if (o->config.grad_clip > 0 && out->norm > o->config.grad_clip)
        out->clip_scale = (float)(o->config.grad_clip / out->norm);
    return 0;
}

/* Moves the data of `from` into `to` and frees `from` with the old data of
 * `to`, so parameter tensors keep their identity across updates. */
static void take_data(rt_tensor *to, rt_tensor *from)
{
    void *old = to->data;
    to->data = from->data;
    from->data = old;
    rt_tensor_free(from);
}

int rt_adamw_update(rt_adamw *o, rt_weights *params, rt_tensor *const *grads, float lr, int t,
                    float clip_scale, ir_diag *d)
{
    float bias_correction1 = 1.0f - powf(o->config.beta1, (float)t);
    float bias_correction2 = 1.0f - powf(o->config.beta2, (float)t);
    for (int i = 0; i < o->nparams; i++) {
        rt_tensor *p = params->tensors[i];
        rt_tensor *m = o->m->tensors[i];
        rt_tensor *v = o->v->tensors[i];
        float lr_value = lr, bc1 = bias_correction1, bc2 = bias_correction2, clip = clip_scale;
        float wd = o->decay[i] ? o->config.weight_decay : 0.0f;

        rt_tensor views[9] = {flat_view(p), flat_view(grads[i]), flat_view(m), flat_view(v),
                              scalar_view(&lr_value), scalar_view(&bc1), scalar_view(&bc2),
                              scalar_view(&clip), scalar_view(&wd)};
        char *names[9] = {"param", "grad", "m", "v", "lr", "bias_correction1", "bias_correction2",
                          "clip_scale", "weight_decay"};
        rt_tensor *tensors[9];
        for (int k = 0; k < 9; k++)
            tensors[k] = &views[k];
        rt_weights inputs = rt_weights_borrow(names, tensors, 9);

        rt_tensor *outputs[3] = {NULL, NULL, NULL};
        if (o->executor->run(o->kernels[o->kernel_of[i]].update, NULL, true, &inputs, outputs, d) != 0) {
            ir_diag_file_error(d, NULL, "the AdamW update of '%s' failed", o->names[i]);
            return -1;
        }
        take_data(p, outputs[0]);
        take_data(m, outputs[1]);
        take_data(v, outputs[2]);
    }
    return 0;
}
