/* Gradient checks of the autodiff pass: every rule against central finite
 * differences computed with the reference interpreter, a whole tiny GPT-2,
 * the backward graph through print, parse, cse and dce, and the errors the
 * pass reports.
 *
 * Each rule case builds a small graph whose params are the op's inputs,
 * ends it in loss = reduce_sum(out * probe) with a fixed random probe, and
 * compares every element of every gradient with
 *   fd = (loss(p + h) - loss(p - h)) / (2 h),   h = FD_STEP,
 * requiring |grad - fd| <= FD_ATOL + FD_RTOL * |fd|. The interpreter computes
 * in f32 (sums in double), so each loss carries a rounding error of about
 * 1e-7 relative, which the division by 2h turns into about 1e-4 absolute.
 * With the fixed seed below, the largest error measured over all cases (on
 * x86-64, GCC 12) is 1.2e-4 + 1e-3 * |fd|, so the tolerances leave a margin
 * of about four.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixtures.h"
#include "frontend/frontend.h"
#include "ir/text.h"
#include "passes/manager.h"
#include "runtime/interp.h"

#define FD_STEP 1e-3
#define FD_ATOL 5e-4
#define FD_RTOL 5e-3

/* ---- helpers ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* Returns a uniform double in [0, 1) from xorshift64*. */
static double rng_uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static const ir_loc no_loc = {0};

static int add_param(ir_graph *g, const char *name, int rank, const int64_t *dims)
{
    ir_type t = {IR_F32, rank, {0}};
    memcpy(t.dims, dims, sizeof(int64_t) * (size_t)rank);
    return ir_add_leaf(g, IR_OP_PARAM, name, t, NULL, no_loc);
}

static int add_input(ir_graph *g, const char *name, ir_dtype dtype, int rank, const int64_t *dims)
{
    ir_type t = {dtype, rank, {0}};
    memcpy(t.dims, dims, sizeof(int64_t) * (size_t)rank);
    return ir_add_leaf(g, IR_OP_INPUT, name, t, NULL, no_loc);
}

#define DIMS(...) (sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}
#define P(g, name, ...) add_param(g, name, DIMS(__VA_ARGS__))

static int op1(ir_graph *g, ir_op op, const char *name, int a, const ir_attrs *attrs)
{
    return ir_add(g, op, name, &a, 1, attrs, no_loc);
}

static int op2(ir_graph *g, ir_op op, const char *name, int a, int b, const ir_attrs *attrs)
{
    int operands[2] = {a, b};
    return ir_add(g, op, name, operands, 2, attrs, no_loc);
}

static ir_attrs attrs_int(ir_op op, const char *key, int64_t value)
{
    ir_attrs a = ir_attrs_for(op);
    ir_attrs_int(&a, key, value);
    return a;
}

static ir_attrs attrs_ints(ir_op op, const char *key, int n, const int64_t *values)
{
    ir_attrs a = ir_attrs_for(op);
    ir_attrs_ints(&a, key, values, n);
    return a;
}

static int slice(ir_graph *g, int x, int axis, int start, int end)
{
    ir_attrs a = ir_attrs_for(IR_OP_SLICE);
    ir_attrs_int(&a, "axis", axis);
    ir_attrs_int(&a, "start", start);
    ir_attrs_int(&a, "end", end);
    return op1(g, IR_OP_SLICE, NULL, x, &a);
}

/* Appends probe (an input of out's shape) and loss = reduce_sum(out * probe)
 * over every axis, and makes loss the first output. */
static int add_probe_loss(ir_graph *g, int out)
{
    const ir_type *t = &g->values[out]->type;
    int probe = add_input(g, "probe", t->dtype, t->rank, t->dims);
    int prod = op2(g, IR_OP_MUL, "weighted", out, probe, NULL);
    int64_t axes[IR_MAX_RANK];
    for (int i = 0; i < t->rank; i++)
        axes[i] = i;
    ir_attrs a = attrs_ints(IR_OP_REDUCE_SUM, "axes", t->rank, axes);
    int loss = op1(g, IR_OP_REDUCE_SUM, "loss", prod, &a);
    ir_add_output(g, loss);
    return loss;
}

/* Fills a float tensor with values whose magnitude is in [0.1, 1) (or in
 * [0.5, 2) with `positive`), away from the kinks of relu and abs at 0. */
static rt_tensor *random_tensor(const ir_type *t, bool positive)
{
    rt_tensor *r = rt_tensor_new(t->dtype, t->rank, t->dims);
    float *p = r->data;
    for (int64_t i = 0; i < rt_tensor_numel(r); i++) {
        if (positive) {
            p[i] = (float)(0.5 + 1.5 * rng_uniform());
        } else {
            double magnitude = 0.1 + 0.9 * rng_uniform();
            p[i] = (float)(rng_uniform() < 0.5 ? -magnitude : magnitude);
        }
    }
    return r;
}

/* Fills an integer input with ids in [0, int_limit). The last position of a
 * "targets" input gets -1 (the default ignore_index). */
static rt_tensor *random_ids(const ir_value *v, int64_t int_limit)
{
    rt_tensor *r = rt_tensor_new(v->type.dtype, v->type.rank, v->type.dims);
    int32_t *p = r->data;
    int64_t n = rt_tensor_numel(r);
    for (int64_t i = 0; i < n; i++)
        p[i] = (int32_t)(rng_uniform() * (double)int_limit);
    if (strcmp(v->name, "targets") == 0)
        p[n - 1] = -1;
    return r;
}

/* Creates random weights for every param and random values for every
 * input of g. */
static void fill_random(const ir_graph *g, bool positive, int64_t int_limit, rt_weights *weights, rt_weights *inputs)
{
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (v->op == IR_OP_PARAM)
            rt_weights_set(weights, v->name, random_tensor(&v->type, positive));
        else if (v->op == IR_OP_INPUT && v->type.dtype == IR_F32)
            rt_weights_set(inputs, v->name, random_tensor(&v->type, false));
        else if (v->op == IR_OP_INPUT)
            rt_weights_set(inputs, v->name, random_ids(v, int_limit));
    }
}

static double run_loss(const ir_graph *forward, const rt_weights *weights, const rt_weights *inputs, ir_diag *d)
{
    rt_tensor *outputs[8] = {NULL};
    if (forward->noutputs > 8 || rt_interp_run(forward, weights, inputs, outputs, d) != 0)
        return NAN;
    double loss = ((const float *)outputs[0]->data)[0];
    for (int k = 0; k < forward->noutputs; k++)
        rt_tensor_free(outputs[k]);
    return loss;
}

/* Compares the gradient outputs of `backward` (outputs first_grad ...) with
 * central differences of the loss of `forward`, on every element of each
 * gradient, or on `samples` random elements when samples > 0. Returns the
 * number of elements that failed. */
static int check_gradients(const char *label, const ir_graph *forward, const ir_graph *backward, int first_grad,
                           rt_weights *weights, const rt_weights *inputs, int samples)
{
    ir_diag *d = ir_diag_new(stderr);
    rt_tensor **outputs = calloc((size_t)backward->noutputs, sizeof *outputs);
    int failures = 0;
    if (rt_interp_run(backward, weights, inputs, outputs, d) != 0) {
        fprintf(stderr, "%s: the interpreter failed on the backward graph\n", label);
        failures = 1;
        goto done;
    }
    for (int k = first_grad; k < backward->noutputs; k++) {
        const char *grad_name = backward->values[backward->outputs[k]]->name;
        char param[256];
        snprintf(param, sizeof param, "%.*s", (int)(strlen(grad_name) - strlen(".grad")), grad_name);
        rt_tensor *w = rt_weights_get(weights, param);
        if (!w) {
            fprintf(stderr, "%s: output %%%s names no param\n", label, grad_name);
            failures++;
            continue;
        }
        float *pw = w->data;
        const float *pg = outputs[k]->data;
        int64_t n = rt_tensor_numel(w);
        int count = samples > 0 && samples < n ? samples : (int)n;
        for (int s = 0; s < count; s++) {
            int64_t i = count == n ? s : (int64_t)(rng_uniform() * (double)n);
            float saved = pw[i];
            pw[i] = (float)(saved + FD_STEP);
            double plus = run_loss(forward, weights, inputs, d);
            pw[i] = (float)(saved - FD_STEP);
            double minus = run_loss(forward, weights, inputs, d);
            pw[i] = saved;
            double fd = (plus - minus) / (2.0 * FD_STEP);
            double err = fabs(pg[i] - fd);
            if (!(err <= FD_ATOL + FD_RTOL * fabs(fd))) {
                fprintf(stderr, "%s: d loss / d %s[%lld] is %.6g, finite differences give %.6g\n", label, param,
                        (long long)i, pg[i], fd);
                failures++;
            }
        }
    }
done:
    for (int k = 0; k < backward->noutputs; k++)
        rt_tensor_free(outputs[k]);
    free(outputs);
    ir_diag_free(d);
    return failures;
}

/* ---- one case per gradient rule ---- */

static int build_add(ir_graph *g)
{
    int a = P(g, "a", 3, 5);
    int b = P(g, "b", 3, 5);
    return op2(g, IR_OP_ADD, "y", a, b, NULL);
}

static int build_add_broadcast(ir_graph *g)
{
    int a = P(g, "a", 3, 5);
    int b = P(g, "b", 5);
    return op2(g, IR_OP_ADD, "y", a, b, NULL);
}

static int build_sub_broadcast(ir_graph *g)
{
    int a = P(g, "a", 3, 5);
    int b = P(g, "b", 3, 1);
    return op2(g, IR_OP_SUB, "y", a, b, NULL);
}

static int build_mul_broadcast(ir_graph *g)
{
    int a = P(g, "a", 2, 3, 5);
    int b = P(g, "b", 3, 1);
    return op2(g, IR_OP_MUL, "y", a, b, NULL);
}

static int build_div_broadcast(ir_graph *g)
{
    int a = P(g, "a", 1, 5);
    int b = P(g, "b", 3, 5);
    return op2(g, IR_OP_DIV, "y", a, b, NULL);
}

static int build_maximum(ir_graph *g)
{
    int a = P(g, "a", 3, 5);
    int b = P(g, "b", 5);
    return op2(g, IR_OP_MAXIMUM, "y", a, b, NULL);
}

static int build_minimum(ir_graph *g)
{
    int a = P(g, "a", 3, 1);
    int b = P(g, "b", 3, 5);
    return op2(g, IR_OP_MINIMUM, "y", a, b, NULL);
}

static int unary_case(ir_graph *g, ir_op op, const ir_attrs *attrs)
{
    return op1(g, op, "y", P(g, "x", 3, 5), attrs);
}

static int build_neg(ir_graph *g) { return unary_case(g, IR_OP_NEG, NULL); }
static int build_exp(ir_graph *g) { return unary_case(g, IR_OP_EXP, NULL); }
static int build_log(ir_graph *g) { return unary_case(g, IR_OP_LOG, NULL); }
static int build_sqrt(ir_graph *g) { return unary_case(g, IR_OP_SQRT, NULL); }
static int build_rsqrt(ir_graph *g) { return unary_case(g, IR_OP_RSQRT, NULL); }
static int build_tanh(ir_graph *g) { return unary_case(g, IR_OP_TANH, NULL); }
static int build_gelu(ir_graph *g) { return unary_case(g, IR_OP_GELU, NULL); }
static int build_relu(ir_graph *g) { return unary_case(g, IR_OP_RELU, NULL); }
static int build_abs(ir_graph *g) { return unary_case(g, IR_OP_ABS, NULL); }

static int build_scale(ir_graph *g)
{
    ir_attrs a = ir_attrs_for(IR_OP_SCALE);
    ir_attrs_float(&a, "factor", -2.5);
    return unary_case(g, IR_OP_SCALE, &a);
}

static int build_cast(ir_graph *g)
{
    ir_attrs a = ir_attrs_for(IR_OP_CAST);
    ir_attrs_str(&a, "to", "f32");
    int y = unary_case(g, IR_OP_CAST, &a);
    ir_attrs_clear(&a);
    return y;
}

static int build_matmul(ir_graph *g)
{
    int a = P(g, "a", 3, 4);
    int b = P(g, "b", 4, 5);
    return op2(g, IR_OP_MATMUL, "y", a, b, NULL);
}

/* b is one matrix shared by both batches of a, with transpose_b. */
static int build_matmul_shared_b(ir_graph *g)
{
    ir_attrs attrs = attrs_int(IR_OP_MATMUL, "transpose_b", 1);
    int a = P(g, "a", 2, 3, 4);
    int b = P(g, "b", 5, 4);
    return op2(g, IR_OP_MATMUL, "y", a, b, &attrs);
}

/* Batch dims broadcast both ways: [2,1] x [1,3]. */
static int build_matmul_batch_broadcast(ir_graph *g)
{
    int a = P(g, "a", 2, 1, 3, 4);
    int b = P(g, "b", 1, 3, 4, 2);
    return op2(g, IR_OP_MATMUL, "y", a, b, NULL);
}

/* The attention-score shape: equal batch dims, transpose_b. */
static int build_matmul_batched_tb(ir_graph *g)
{
    ir_attrs attrs = attrs_int(IR_OP_MATMUL, "transpose_b", 1);
    int a = P(g, "a", 2, 3, 4);
    int b = P(g, "b", 2, 5, 4);
    return op2(g, IR_OP_MATMUL, "y", a, b, &attrs);
}

/* A matrix a shared by the batches of b. */
static int build_matmul_shared_a(ir_graph *g)
{
    int a = P(g, "a", 3, 4);
    int b = P(g, "b", 2, 4, 5);
    return op2(g, IR_OP_MATMUL, "y", a, b, NULL);
}

static ir_attrs matmul_attrs(int transpose_a, int transpose_b)
{
    ir_attrs a = ir_attrs_for(IR_OP_MATMUL);
    ir_attrs_int(&a, "transpose_a", transpose_a);
    ir_attrs_int(&a, "transpose_b", transpose_b);
    return a;
}

/* a stored [K, M], as the weight gradients of linear layers read it. */
static int build_matmul_ta(ir_graph *g)
{
    ir_attrs attrs = matmul_attrs(1, 0);
    int a = P(g, "a", 4, 3);
    int b = P(g, "b", 4, 5);
    return op2(g, IR_OP_MATMUL, "y", a, b, &attrs);
}

static int build_matmul_ta_tb_batched(ir_graph *g)
{
    ir_attrs attrs = matmul_attrs(1, 1);
    int a = P(g, "a", 2, 4, 3);
    int b = P(g, "b", 2, 5, 4);
    return op2(g, IR_OP_MATMUL, "y", a, b, &attrs);
}

/* A transposed a shared by the batches of b, and a transposed a with
 * batches against one shared b. */
static int build_matmul_ta_shared_a(ir_graph *g)
{
    ir_attrs attrs = matmul_attrs(1, 0);
    int a = P(g, "a", 4, 3);
    int b = P(g, "b", 2, 4, 5);
    return op2(g, IR_OP_MATMUL, "y", a, b, &attrs);
}

static int build_matmul_ta_shared_b(ir_graph *g)
{
    ir_attrs attrs = matmul_attrs(1, 1);
    int a = P(g, "a", 2, 4, 3);
    int b = P(g, "b", 5, 4);
    return op2(g, IR_OP_MATMUL, "y", a, b, &attrs);
}

static int build_linear(ir_graph *g)
{
    int x = P(g, "x", 2, 3, 4);
    int w = P(g, "w", 4, 5);
    int bias = P(g, "bias", 5);
    int operands[3] = {x, w, bias};
    return ir_add(g, IR_OP_LINEAR, "y", operands, 3, NULL, no_loc);
}

static int build_linear_vector(ir_graph *g)
{
    int x = P(g, "x", 4);
    int w = P(g, "w", 4, 3);
    return op2(g, IR_OP_LINEAR, "y", x, w, NULL);
}

static int build_layernorm(ir_graph *g)
{
    int x = P(g, "x", 3, 5);
    int gamma = P(g, "gamma", 5);
    int beta = P(g, "beta", 5);
    int operands[3] = {x, gamma, beta};
    return ir_add(g, IR_OP_LAYERNORM, "y", operands, 3, NULL, no_loc);
}

static int build_softmax(ir_graph *g)
{
    return unary_case(g, IR_OP_SOFTMAX, NULL);
}

static int build_softmax_axis0(ir_graph *g)
{
    ir_attrs a = attrs_int(IR_OP_SOFTMAX, "axis", 0);
    return unary_case(g, IR_OP_SOFTMAX, &a);
}

/* causal_mask alone gives -inf, so the case masks, then takes the softmax. */
static int build_causal_mask(ir_graph *g)
{
    int masked = op1(g, IR_OP_CAUSAL_MASK, "masked", P(g, "x", 2, 4, 4), NULL);
    return op1(g, IR_OP_SOFTMAX, "y", masked, NULL);
}

static int build_reshape(ir_graph *g)
{
    ir_attrs a = attrs_ints(IR_OP_RESHAPE, "shape", 2, (const int64_t[]){5, 3});
    return unary_case(g, IR_OP_RESHAPE, &a);
}

static int build_transpose(ir_graph *g)
{
    ir_attrs a = attrs_ints(IR_OP_TRANSPOSE, "perm", 3, (const int64_t[]){2, 0, -2});
    return op1(g, IR_OP_TRANSPOSE, "y", P(g, "x", 2, 3, 5), &a);
}

static int build_slice(ir_graph *g)
{
    return slice(g, P(g, "x", 3, 5), 1, 1, 4);
}

/* Three slices that tile the axis, as split does: one concat gives dx. */
static int build_slices_tiled(ir_graph *g)
{
    int x = P(g, "x", 3, 6);
    int q = slice(g, x, -1, 0, 2), k = slice(g, x, -1, 2, 4), v = slice(g, x, -1, 4, 6);
    return op2(g, IR_OP_ADD, "y", op2(g, IR_OP_MUL, "qk", q, k, NULL), v, NULL);
}

/* Overlapping slices: each is padded with zeros and the parts are added. */
static int build_slices_overlapping(ir_graph *g)
{
    int x = P(g, "x", 3, 5);
    return op2(g, IR_OP_MUL, "y", slice(g, x, 1, 0, 3), slice(g, x, 1, 2, 5), NULL);
}

static int build_concat(ir_graph *g)
{
    ir_attrs attrs = attrs_int(IR_OP_CONCAT, "axis", 1);
    int a = P(g, "a", 3, 2);
    int b = P(g, "b", 3, 3);
    return op2(g, IR_OP_CONCAT, "y", a, b, &attrs);
}

static int build_broadcast(ir_graph *g)
{
    ir_attrs a = attrs_ints(IR_OP_BROADCAST, "shape", 3, (const int64_t[]){2, 3, 5});
    return op1(g, IR_OP_BROADCAST, "y", P(g, "x", 3, 1), &a);
}

static int build_reduce_sum(ir_graph *g)
{
    ir_attrs a = attrs_ints(IR_OP_REDUCE_SUM, "axes", 1, (const int64_t[]){1});
    return op1(g, IR_OP_REDUCE_SUM, "y", P(g, "x", 2, 3, 5), &a);
}

static int build_reduce_mean_keepdims(ir_graph *g)
{
    ir_attrs a = attrs_ints(IR_OP_REDUCE_MEAN, "axes", 2, (const int64_t[]){0, -1});
    ir_attrs_int(&a, "keepdims", 1);
    return op1(g, IR_OP_REDUCE_MEAN, "y", P(g, "x", 2, 3, 5), &a);
}

static int build_reduce_max(ir_graph *g)
{
    ir_attrs a = attrs_ints(IR_OP_REDUCE_MAX, "axes", 2, (const int64_t[]){0, 2});
    return op1(g, IR_OP_REDUCE_MAX, "y", P(g, "x", 2, 3, 5), &a);
}

static int build_reduce_max_keepdims(ir_graph *g)
{
    ir_attrs a = attrs_ints(IR_OP_REDUCE_MAX, "axes", 1, (const int64_t[]){-1});
    ir_attrs_int(&a, "keepdims", 1);
    return op1(g, IR_OP_REDUCE_MAX, "y", P(g, "x", 3, 5), &a);
}

static int build_embedding(ir_graph *g)
{
    int ids = add_input(g, "ids", IR_I32, DIMS(2, 3));
    return op2(g, IR_OP_EMBEDDING, "y", P(g, "table", 11, 4), ids, NULL);
}

static int build_cross_entropy(ir_graph *g)
{
    int targets = add_input(g, "targets", IR_I32, DIMS(2, 3));
    return op2(g, IR_OP_CROSS_ENTROPY, "y", P(g, "logits", 2, 3, 11), targets, NULL);
}

/* x is used three times (x * x + exp(x)): the gradient sums three parts. */
static int build_multi_use(ir_graph *g)
{
    int x = P(g, "x", 3, 5);
    int sq = op2(g, IR_OP_MUL, "sq", x, x, NULL);
    return op2(g, IR_OP_ADD, "y", sq, op1(g, IR_OP_EXP, "e", x, NULL), NULL);
}

/* a reaches the loss twice through different ops and b only through one.
 * c is not used at all, so its gradient output is zeros. */
static int build_shared_chain(ir_graph *g)
{
    int a = P(g, "a", 3, 5), b = P(g, "b", 5);
    P(g, "c", 2);
    int h = op1(g, IR_OP_TANH, "h", op2(g, IR_OP_MUL, "ab", a, b, NULL), NULL);
    return op2(g, IR_OP_SUB, "y", h, op1(g, IR_OP_GELU, "ga", a, NULL), NULL);
}

typedef struct grad_case {
    const char *name;
    int (*build)(ir_graph *g);
    bool positive; /* params in [0.5, 2) for log, sqrt, rsqrt, div */
} grad_case;

static const grad_case grad_cases[] = {
    {"add", build_add, false},
    {"add broadcast", build_add_broadcast, false},
    {"sub broadcast", build_sub_broadcast, false},
    {"mul broadcast", build_mul_broadcast, false},
    {"div broadcast", build_div_broadcast, true},
    {"maximum", build_maximum, false},
    {"minimum", build_minimum, false},
    {"neg", build_neg, false},
    {"exp", build_exp, false},
    {"log", build_log, true},
    {"sqrt", build_sqrt, true},
    {"rsqrt", build_rsqrt, true},
    {"tanh", build_tanh, false},
    {"gelu", build_gelu, false},
    {"relu", build_relu, false},
    {"abs", build_abs, false},
    {"scale", build_scale, false},
    {"cast", build_cast, false},
    {"matmul", build_matmul, false},
    {"matmul shared b", build_matmul_shared_b, false},
    {"matmul batch broadcast", build_matmul_batch_broadcast, false},
    {"matmul batched transpose_b", build_matmul_batched_tb, false},
    {"matmul shared a", build_matmul_shared_a, false},
    {"matmul transpose_a", build_matmul_ta, false},
    {"matmul both transposed batched", build_matmul_ta_tb_batched, false},
    {"matmul transpose_a shared a", build_matmul_ta_shared_a, false},
    {"matmul transpose_a shared b", build_matmul_ta_shared_b, false},
    {"linear", build_linear, false},
    {"linear vector", build_linear_vector, false},
    {"layernorm", build_layernorm, false},
    {"softmax", build_softmax, false},
    {"softmax axis 0", build_softmax_axis0, false},
    {"causal_mask", build_causal_mask, false},
    {"reshape", build_reshape, false},
    {"transpose", build_transpose, false},
    {"slice", build_slice, false},
    {"slices tiled", build_slices_tiled, false},
    {"slices overlapping", build_slices_overlapping, false},
    {"concat", build_concat, false},
    {"broadcast", build_broadcast, false},
    {"reduce_sum", build_reduce_sum, false},
    {"reduce_mean keepdims", build_reduce_mean_keepdims, false},
    {"reduce_max", build_reduce_max, false},
    {"reduce_max keepdims", build_reduce_max_keepdims, false},
    {"embedding", build_embedding, false},
    {"cross_entropy", build_cross_entropy, false},
    {"multi-use", build_multi_use, false},
    {"shared chain", build_shared_chain, false},
};

static void test_rule(const grad_case *gc)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_graph_new("case", d);
    int out = gc->build(g);
    CHECK(out >= 0);
    if (out < 0) {
        fprintf(stderr, "case '%s' did not build\n", gc->name);
        ir_graph_free(g);
        ir_diag_free(d);
        return;
    }
    add_probe_loss(g, out);
    ir_graph *forward = ir_graph_clone(g);
    int nparams = 0;
    for (int i = 0; i < g->nvalues; i++)
        nparams += g->values[i]->op == IR_OP_PARAM;

    CHECK_EQ_INT(pass_run_text(g, "autodiff", d), 0);
    CHECK_EQ_INT(ir_verify(g, "autodiff"), 0);
    CHECK_EQ_INT(g->noutputs, 1 + nparams);

    rt_weights *weights = rt_weights_new(), *inputs = rt_weights_new();
    fill_random(forward, gc->positive, 11, weights, inputs);
    int failures = check_gradients(gc->name, forward, g, 1, weights, inputs, 0);
    if (failures)
        fprintf(stderr, "gradient case '%s': %d elements differ from finite differences\n", gc->name, failures);
    CHECK_EQ_INT(failures, 0);

    rt_weights_free(weights);
    rt_weights_free(inputs);
    ir_graph_free(forward);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* ---- output naming and selection ---- */

static void test_outputs_named_after_params(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_graph_new("case", d);
    add_probe_loss(g, build_shared_chain(g));
    CHECK_EQ_INT(pass_run_text(g, "autodiff{wrt=c;a}", d), 0);
    /* Parameter order, not pattern order: a before c. */
    CHECK_EQ_INT(g->noutputs, 3);
    CHECK(strcmp(g->values[g->outputs[1]]->name, "a.grad") == 0);
    CHECK(strcmp(g->values[g->outputs[2]]->name, "c.grad") == 0);
    CHECK(g->values[g->outputs[2]]->op == IR_OP_CONST);
    /* Only values between the loss and @a get backward code, so @b, which
     * is not selected, gets none. */
    CHECK(ir_find(g, "b.grad") < 0);
    CHECK(ir_find(g, "ab.grad") >= 0);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* Called without the pipeline parser, the wrt option may list patterns
 * separated by commas. */
static void test_wrt_comma_list(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_graph_new("case", d);
    add_probe_loss(g, build_shared_chain(g));
    pass_option option = {"wrt", "b, a*"};
    pass_options opts = {1, &option};
    CHECK_EQ_INT(pass_autodiff(g, &opts, d), 0);
    CHECK_EQ_INT(g->noutputs, 3);
    CHECK(strcmp(g->values[g->outputs[1]]->name, "a.grad") == 0);
    CHECK(strcmp(g->values[g->outputs[2]]->name, "b.grad") == 0);
    ir_graph_free(g);
    ir_diag_free(d);
}

static void test_wrt_none_adds_nothing(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_graph_new("case", d);
    add_probe_loss(g, build_add(g));
    int before = g->nvalues;
    CHECK_EQ_INT(pass_run_text(g, "autodiff{wrt=none}", d), 0);
    CHECK_EQ_INT(g->nvalues, before);
    CHECK_EQ_INT(g->noutputs, 1);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* ---- errors ---- */

/* Runs autodiff with `pipeline` on g and returns the error text (caller
 * frees), checking that the pass failed. */
static char *autodiff_errors(ir_graph *g, const char *pipeline)
{
    fx_capture c;
    fx_capture_open(&c);
    g->diag = c.diag;
    CHECK(pass_run_text(g, pipeline, c.diag) != 0);
    g->diag = NULL;
    fx_capture_end(&c);
    return c.text;
}

static bool contains(const char *text, const char *expected)
{
    if (strstr(text, expected))
        return true;
    fprintf(stderr, "expected the output to contain:\n  %s\nbut it is:\n%s\n", expected, text);
    return false;
}

static void test_error_integer_cast(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_graph_new("case", d);
    const char *file = ir_diag_intern(d, "net.qd");
    int w = P(g, "w", 3, 5);
    ir_attrs to_int = ir_attrs_for(IR_OP_CAST), to_float = ir_attrs_for(IR_OP_CAST);
    ir_attrs_str(&to_int, "to", "i32");
    ir_attrs_str(&to_float, "to", "f32");
    int ids = ir_add(g, IR_OP_CAST, "ids", &w, 1, &to_int, (ir_loc){file, 4, 7, 0});
    int back = op1(g, IR_OP_CAST, "back", ids, &to_float);
    ir_attrs_clear(&to_int);
    ir_attrs_clear(&to_float);
    add_probe_loss(g, back);
    char *errors = autodiff_errors(g, "autodiff");
    CHECK(contains(errors, "net.qd:4:7: error: in pass 'autodiff': 'cast' %ids gives the integer type i32[3,5], "
                           "so no gradient flows through it, but the loss %loss depends on @w through it; "
                           "leave @w out of wrt\n"));
    free(errors);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* A backward op used as a forward op would need a second derivative. */
static void test_error_no_rule(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_graph_new("case", d);
    int w = P(g, "w", 3, 5);
    add_probe_loss(g, op2(g, IR_OP_GRAD_RELU, "second", w, w, NULL));
    char *errors = autodiff_errors(g, "autodiff");
    CHECK(contains(errors, "error: in pass 'autodiff': 'grad.relu' %second has no gradient rule, but the loss "
                           "%loss depends on @w through it; leave @w out of wrt\n"));
    free(errors);
    ir_graph_free(g);
    ir_diag_free(d);

    /* The same graph differentiates when @w is not selected. */
    d = ir_diag_new(stderr);
    g = ir_graph_new("case", d);
    w = P(g, "w", 3, 5);
    int y = op2(g, IR_OP_GRAD_RELU, "second", w, w, NULL);
    add_probe_loss(g, op2(g, IR_OP_MUL, "y", y, P(g, "v", 5), NULL));
    CHECK_EQ_INT(pass_run_text(g, "autodiff{wrt=v}", d), 0);
    CHECK_EQ_INT(g->noutputs, 2);
    ir_graph_free(g);
    ir_diag_free(d);
}

static void test_error_pattern_matches_nothing(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_graph_new("case", d);
    add_probe_loss(g, build_add_broadcast(g));
    char *errors = autodiff_errors(g, "autodiff{wrt=a;h.*.ln_1.*}");
    CHECK(contains(errors, "quadc: error: in pass 'autodiff': wrt pattern 'h.*.ln_1.*' matches no parameter; "
                           "the parameters are @a, @b\n"));
    free(errors);
    ir_graph_free(g);
    ir_diag_free(d);
}

static void test_error_loss_not_scalar(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_graph_new("case", d);
    int y = build_add(g);
    ir_add_output(g, y);
    add_probe_loss(g, y);
    char *errors = autodiff_errors(g, "autodiff");
    CHECK(contains(errors, "error: in pass 'autodiff': the loss %y has type f32[3,5], but autodiff needs a "
                           "floating scalar; name another output with autodiff{loss=NAME}\n"));
    free(errors);
    errors = autodiff_errors(g, "autodiff{loss=nothing}");
    CHECK(contains(errors, "error: in pass 'autodiff': loss=nothing names no graph output; the outputs are %y, "
                           "%loss\n"));
    free(errors);
    /* Naming the scalar output works. */
    g->diag = d;
    CHECK_EQ_INT(pass_run_text(g, "autodiff{loss=loss}", d), 0);
    CHECK_EQ_INT(g->noutputs, 4);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* ---- a whole tiny GPT-2 ---- */

static char *print_graph(const ir_graph *g)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ir_print_options opts = ir_print_defaults();
    ir_print(f, g, &opts);
    fclose(f);
    return buf;
}

/* Runs the default pipeline on a copy of the differentiated graph g and
 * checks that it verifies and computes the same outputs: the rewrites may
 * reorder float arithmetic, so outputs agree within 1e-5 relative. */
static void check_default_pipeline(const ir_graph *g, const rt_weights *weights, const rt_weights *inputs)
{
    ir_graph *optimized = ir_graph_clone(g);
    CHECK_EQ_INT(pass_run_text(optimized, pass_default_pipeline, g->diag), 0);
    CHECK_EQ_INT(ir_verify(optimized, "default pipeline"), 0);
    CHECK_EQ_INT(optimized->noutputs, g->noutputs);

    int n = g->noutputs;
    rt_tensor **before = calloc((size_t)n, sizeof *before), **after = calloc((size_t)n, sizeof *after);
    CHECK_EQ_INT(rt_interp_run(g, weights, inputs, before, g->diag), 0);
    CHECK_EQ_INT(rt_interp_run(optimized, weights, inputs, after, g->diag), 0);
    int mismatches = 0;
    for (int k = 0; k < n && before[k] && after[k]; k++) {
        const float *x = before[k]->data, *y = after[k]->data;
        for (int64_t i = 0; i < rt_tensor_numel(before[k]); i++)
            mismatches += !(fabs((double)x[i] - (double)y[i]) <= 1e-6 + 1e-5 * fabs((double)x[i]));
    }
    CHECK_EQ_INT(mismatches, 0);
    for (int k = 0; k < n; k++) {
        rt_tensor_free(before[k]);
        rt_tensor_free(after[k]);
    }
    free(before);
    free(after);
    ir_graph_free(optimized);
}

static void test_gpt2(void)
{
    ir_diag *d = ir_diag_new(stderr);
    const fe_define defines[] = {{"n_layer", 2}, {"n_embd", 8}, {"n_head", 2}, {"n_vocab", 11},
                                 {"n_ctx", 6},   {"B", 2},      {"T", 4}};
    ir_graph *g = fe_compile_file("examples/gpt2.qd", defines, 7, d);
    CHECK(g != NULL);
    if (!g) {
        ir_diag_free(d);
        return;
    }
    ir_graph *forward = ir_graph_clone(g);
    /* The loss is the second output; the first output stays. */
    int loss_output = 1;
    CHECK(strcmp(g->values[g->outputs[loss_output]]->name, "loss") == 0);
    forward->outputs[0] = forward->outputs[loss_output];
    forward->noutputs = 1;
    int nparams = 0;
    for (int i = 0; i < g->nvalues; i++)
        nparams += g->values[i]->op == IR_OP_PARAM;
    CHECK_EQ_INT(nparams, 2 + 12 * 2 + 2);

    CHECK_EQ_INT(pass_run_text(g, "autodiff{loss=loss},cse,dce", d), 0);
    CHECK_EQ_INT(ir_verify(g, "autodiff"), 0);
    CHECK_EQ_INT(g->noutputs, 2 + nparams);
    CHECK(ir_find(g, "h0.ln1.grad") >= 0);
    CHECK(ir_find(g, "h.0.ln_1.weight.grad") >= 0);

    /* The backward graph prints, parses back and prints the same bytes. */
    char *text = print_graph(g);
    ir_graph *parsed = ir_parse_string("gpt2-grad.qir", text, strlen(text), d);
    CHECK(parsed != NULL);
    if (parsed) {
        char *again = print_graph(parsed);
        CHECK(strcmp(text, again) == 0);
        free(again);
        ir_graph_free(parsed);
    }
    free(text);

    rt_weights *weights = rt_weights_new(), *inputs = rt_weights_new();
    fill_random(forward, false, 11, weights, inputs);
    check_default_pipeline(g, weights, inputs);
    int failures = check_gradients("gpt2", forward, g, 2, weights, inputs, 4);
    if (failures)
        fprintf(stderr, "gpt2: %d sampled elements differ from finite differences\n", failures);
    CHECK_EQ_INT(failures, 0);

    rt_weights_free(weights);
    rt_weights_free(inputs);
    ir_graph_free(forward);
    ir_graph_free(g);
    ir_diag_free(d);
}

int main(void)
{
    for (size_t i = 0; i < sizeof grad_cases / sizeof grad_cases[0]; i++)
        test_rule(&grad_cases[i]);
    test_outputs_named_after_params();
    test_wrt_comma_list();
    test_wrt_none_adds_nothing();
    test_error_integer_cast();
    test_error_no_rule();
    test_error_pattern_matches_nothing();
    test_error_loss_not_scalar();
    test_gpt2();
    return check_finish();
}
