/* AdamW update and gradient-norm graphs, their compiled kernels, and the
 * learning-rate schedule. */
#include "runtime/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes/manager.h"

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
    c.chunk_elements = RT_ADAMW_CHUNK;
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

    /* Every use of the clipped gradient computes it anew, so that m_new
     * and v_new are chains of single-use values, which the
     * fuse-elementwise pass turns into one loop each. */
    int m_new = add_binary(g, IR_OP_ADD, "m_new", add_binary(g, IR_OP_MUL, "m_decayed", m, beta1),
                           add_binary(g, IR_OP_MUL, "m_step", add_binary(g, IR_OP_MUL, "grad_clipped", grad, clip),
                                      one_minus_beta1));
    int g_squared = add_binary(g, IR_OP_MUL, "grad_squared", add_binary(g, IR_OP_MUL, "grad_clipped_a", grad, clip),
                               add_binary(g, IR_OP_MUL, "grad_clipped_b", grad, clip));
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

/* Fuses the elementwise chains of an update graph, so the JIT runs the
 * update in four loops instead of one loop per op. */
static int fuse_update_graph(ir_graph *g, ir_diag *d)
{
    return pass_run_text(g, "fuse-elementwise", d);
}

/* NOTE: with the JIT every compiled module starts its own thread pool, so
 * k distinct chunk lengths keep 2k pools of idle workers (14 for GPT-2
 * with the default chunk). */
static int compile_kernels(rt_adamw *o, rt_adamw_kernels *k, int threads, ir_diag *d)
{
    ir_graph *update = rt_adamw_build_update_graph(k->n, &o->config, d);
    if (update && fuse_update_graph(update, d) != 0) {
        ir_graph_free(update);
        update = NULL;
    }
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

/* Returns the kernel index for chunks of n elements, or -1. */
static int find_kernel(const rt_adamw *o, int64_t n)
{
    for (int k = 0; k < o->nkernels; k++)
        if (o->kernels[k].n == n)
            return k;
    return -1;
}

/* Compiles the kernels for chunks of n elements unless they exist. */
static int add_kernel(rt_adamw *o, int64_t n, int threads, ir_diag *d)
{
    if (n == 0 || find_kernel(o, n) >= 0)
        return 0;
    rt_adamw_kernels *grown = realloc(o->kernels, (size_t)(o->nkernels + 1) * sizeof *grown);
    if (!grown)
        return -1;
    o->kernels = grown;
    rt_adamw_kernels *k = &o->kernels[o->nkernels];
    memset(k, 0, sizeof *k);
    k->n = n;
    if (compile_kernels(o, k, threads, d) != 0) {
        if (k->update)
            o->executor->free(k->update);
        return -1;
    }
    o->nkernels++;
    return 0;
}

rt_adamw *rt_adamw_new(const rt_adamw_config *c, const rt_weights *params, const rt_executor *executor,
                       int threads, ir_diag *d)
{
    rt_adamw *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->config = *c;
    o->executor = executor;
    o->chunk = c->chunk_elements > 0 ? c->chunk_elements : RT_ADAMW_CHUNK;
    int n = params->count;
    o->names = calloc((size_t)n + 1, sizeof *o->names);
    o->decay = calloc((size_t)n + 1, sizeof *o->decay);
    o->m = rt_weights_new();
    o->v = rt_weights_new();
    if (!o->names || !o->decay || !o->m || !o->v) {
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
        int64_t numel = rt_tensor_numel(p);
        int64_t full = numel >= o->chunk ? o->chunk : 0;
        int rc = o->names[i] ? 0 : -1;
        if (rc == 0)
            rc = add_kernel(o, full, threads, d);
        if (rc == 0)
            rc = add_kernel(o, numel % o->chunk, threads, d);
        if (rc == 0)
            rc = add_moments(o, params->names[i], p, d);
        if (rc != 0) {
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
    free(o->kernels);
    rt_weights_free(o->m);
    rt_weights_free(o->v);
    free(o);
}

/* A rank-1 header over elements [offset, offset + n) of t's f32 data, so
 * a chunk of any parameter matches its kernel without a copy. */
static rt_tensor chunk_view(const rt_tensor *t, int64_t offset, int64_t n)
{
    rt_tensor view;
    memset(&view, 0, sizeof view);
    view.dtype = IR_F32;
    view.rank = 1;
    view.dims[0] = n;
    view.data = (float *)t->data + offset;
    return view;
}

static int64_t chunk_length(const rt_adamw *o, int64_t numel, int64_t offset)
{
    return numel - offset < o->chunk ? numel - offset : o->chunk;
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

/* Returns the squared L2 norm of one gradient in *out, summing the
 * generated reduction of each chunk in double. Returns -1 on an executor
 * error. */
static int grad_sqnorm(rt_adamw *o, const rt_tensor *grad, double *out, ir_diag *d)
{
    int64_t numel = rt_tensor_numel(grad);
    double sum = 0;
    for (int64_t offset = 0; offset < numel; offset += o->chunk) {
        int64_t n = chunk_length(o, numel, offset);
        rt_tensor view = chunk_view(grad, offset, n);
        char *names[1] = {"grad"};
        rt_tensor *tensors[1] = {&view};
        rt_weights inputs = rt_weights_borrow(names, tensors, 1);
        rt_tensor result;
        /* These graphs have no params, so "weights changed" costs only the
         * JIT's evaluation of their constants. */
        if (o->executor->run_views(o->kernels[find_kernel(o, n)].sqnorm, NULL, true, &inputs, &result, d) != 0)
            return -1;
        sum += *(const float *)result.data;
    }
    *out = sum;
    return 0;
}

int rt_adamw_grad_norm(rt_adamw *o, rt_tensor *const *grads, rt_adamw_norm *out, ir_diag *d)
{
    out->norm = 0;
    out->clip_scale = 1.0f;
    out->first_nonfinite = -1;
    double sum = 0;
    for (int i = 0; i < o->nparams; i++) {
        double squared;
        if (grad_sqnorm(o, grads[i], &squared, d) != 0)
            return -1;
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

/* Scalar inputs of one update, shared by every chunk of a parameter. */
typedef struct update_scalars {
    float lr;
    float bias_correction1;
    float bias_correction2;
    float clip_scale;
    float weight_decay;
} update_scalars;

/* Updates elements [offset, offset + chunk) of parameter i and its
 * moments in place. */
static int update_chunk(rt_adamw *o, int i, rt_tensor *p, const rt_tensor *grad, int64_t offset,
                        update_scalars *s, ir_diag *d)
{
    int64_t n = chunk_length(o, rt_tensor_numel(p), offset);
    rt_tensor *state[3] = {p, o->m->tensors[i], o->v->tensors[i]};
    rt_tensor views[9] = {chunk_view(p, offset, n), chunk_view(grad, offset, n),
                          chunk_view(state[1], offset, n), chunk_view(state[2], offset, n),
                          scalar_view(&s->lr), scalar_view(&s->bias_correction1),
                          scalar_view(&s->bias_correction2), scalar_view(&s->clip_scale),
                          scalar_view(&s->weight_decay)};
    char *names[9] = {"param", "grad", "m", "v", "lr", "bias_correction1", "bias_correction2",
                      "clip_scale", "weight_decay"};
    rt_tensor *tensors[9];
    for (int k = 0; k < 9; k++)
        tensors[k] = &views[k];
    rt_weights inputs = rt_weights_borrow(names, tensors, 9);

    rt_tensor outputs[3];
    if (o->executor->run_views(o->kernels[find_kernel(o, n)].update, NULL, true, &inputs, outputs, d) != 0) {
        ir_diag_file_error(d, NULL, "the AdamW update of '%s' failed", o->names[i]);
        return -1;
    }
    /* The outputs are the new param, m and v, in the order of state[]. */
    for (int k = 0; k < 3; k++)
        memcpy((float *)state[k]->data + offset, outputs[k].data, (size_t)n * sizeof(float));
    return 0;
}

int rt_adamw_update(rt_adamw *o, rt_weights *params, rt_tensor *const *grads, float lr, int t,
                    float clip_scale, ir_diag *d)
{
    update_scalars s;
    s.lr = lr;
    s.bias_correction1 = 1.0f - powf(o->config.beta1, (float)t);
    s.bias_correction2 = 1.0f - powf(o->config.beta2, (float)t);
    s.clip_scale = clip_scale;
    for (int i = 0; i < o->nparams; i++) {
        rt_tensor *p = params->tensors[i];
        s.weight_decay = o->decay[i] ? o->config.weight_decay : 0.0f;
        int64_t numel = rt_tensor_numel(p);
        for (int64_t offset = 0; offset < numel; offset += o->chunk)
            if (update_chunk(o, i, p, grads[i], offset, &s, d) != 0)
                return -1;
    }
    return 0;
}
