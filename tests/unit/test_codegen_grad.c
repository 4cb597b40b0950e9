/* JIT code generation of the backward ops (grad.*) against the reference
 * interpreter. Every op runs on its own over several shapes: sizes that do
 * not divide the vector width, broadcasting, ties and ignored targets. The
 * tests also cover range errors, results that do not depend on the thread
 * count, and the whole training graph of a small GPT-2 (examples/gpt2.qd
 * after the autodiff pass).
 *
 * Tolerance: |jit - ref| <= atol + rtol * |ref| per element. Elementwise
 * ops use rtol = 1e-4 and atol = 1e-5 (1e-6 relative error of the exp
 * approximation, amplified by the GELU derivative). Ops that sum K terms
 * accumulate in f32 here but in double in the interpreter, so they get
 * atol = 1e-5 * sqrt(K) * (typical |term|). The GPT-2 gradients use
 * rtol = 1e-3 and atol = 1e-3 * max |ref| of each gradient, because the
 * f32 rounding differences compound through the forward and backward
 * layers. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixtures.h"
#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "ir/ir.h"
#include "passes/manager.h"
#include "runtime/interp.h"
#include "runtime/tensor.h"

static const ir_loc no_loc = {0};
static fx_rng rng = {FX_RNG_XORSHIFT, 0x2545f4914f6cdd1dull};

/* Adds an input filled uniformly from [lo, hi) and returns its value id. */
static int input(fx_fixture *f, const char *name, ir_dtype dt, int rank, const int64_t *dims, double lo, double hi)
{
    ir_type t = {dt, rank, {0}};
    memcpy(t.dims, dims, sizeof(int64_t) * (size_t)rank);
    int id = ir_add_leaf(f->g, IR_OP_INPUT, name, t, NULL, no_loc);
    rt_weights_set(f->inputs, name, fx_uniform_tensor(&rng, dt, rank, dims, lo, hi));
    return id;
}

static float *input_data(fx_fixture *f, const char *name)
{
    return rt_weights_get(f->inputs, name)->data;
}

static int add_op(fx_fixture *f, ir_op op, const int *operands, int n, ir_attrs *attrs)
{
    return ir_add(f->g, op, NULL, operands, n, attrs, no_loc);
}

/* The LLVM CPU name of the JIT runs, or NULL for the host.
 * test_other_targets changes it and restores it. */
static const char *test_cpu = NULL;

static double float_at(const rt_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case IR_F16: return rt_f16_to_f32(((const uint16_t *)t->data)[i]);
    case IR_BF16: return rt_bf16_to_f32(((const uint16_t *)t->data)[i]);
    default: return ((const float *)t->data)[i];
    }
}

/* Compares one output element by element and prints the first mismatch. */
static bool tensors_match(const char *label, int index, const rt_tensor *got, const rt_tensor *want, double atol,
                          double rtol)
{
    if (!got || !want || got->dtype != want->dtype || rt_tensor_numel(got) != rt_tensor_numel(want)) {
        fprintf(stderr, "%s: output %d: dtype or size differs\n", label, index);
        return false;
    }
    int64_t n = rt_tensor_numel(got), bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++) {
        double a = float_at(got, i), b = float_at(want, i);
        bool ok = isnan(b) ? isnan(a) : fabs(a - b) <= atol + rtol * fabs(b);
        if (!ok && first < 0)
            first = i;
        bad += !ok;
    }
    if (bad)
        fprintf(stderr, "%s: output %d: %lld of %lld elements differ; first at %lld: jit %.9g, interpreter %.9g\n",
                label, index, (long long)bad, (long long)n, (long long)first, float_at(got, first),
                float_at(want, first));
    return bad == 0;
}

static bool tensors_identical(const rt_tensor *a, const rt_tensor *b)
{
    return a && b && rt_tensor_nbytes(a) == rt_tensor_nbytes(b) && memcmp(a->data, b->data, rt_tensor_nbytes(a)) == 0;
}

static cg_options options_with(int threads, int opt_level)
{
    cg_options o = cg_default_options();
    o.threads = threads;
    o.opt_level = opt_level;
    o.cpu = test_cpu;
    return o;
}

/* Runs the JIT with `threads` threads and returns the outputs (the caller
 * frees them), or NULL after a failed check. */
static rt_tensor **run_jit(fx_fixture *f, int threads)
{
    int n = f->g->noutputs;
    cg_options o = options_with(threads, 2);
    cg_module *m = cg_compile(f->g, &o, f->diag);
    CHECK(m != NULL);
    if (!m)
        return NULL;
    rt_tensor **out = calloc((size_t)n, sizeof *out);
    int rc = cg_run(m, f->weights, f->inputs, out, f->diag);
    CHECK_EQ_INT(rc, 0);
    cg_free(m);
    if (rc != 0) {
        free(out);
        return NULL;
    }
    return out;
}

static void free_outputs(rt_tensor **out, int n)
{
    for (int i = 0; out && i < n; i++)
        rt_tensor_free(out[i]);
    free(out);
}

/* Checks every output of the JIT (2 threads) against the interpreter. */
static void compare(fx_fixture *f, const char *label, double atol, double rtol)
{
    int n = f->g->noutputs;
    CHECK(ir_verify(f->g, NULL) == 0);
    rt_tensor **want = calloc((size_t)n, sizeof *want);
    int ref = rt_interp_run(f->g, f->weights, f->inputs, want, f->diag);
    CHECK_EQ_INT(ref, 0);
    rt_tensor **got = ref == 0 ? run_jit(f, 2) : NULL;
    for (int i = 0; got && i < n; i++) {
        bool ok = tensors_match(label, i, got[i], want[i], atol, rtol);
        CHECK(ok);
    }
    free_outputs(got, n);
    free_outputs(want, n);
}

/* Checks that 1, 2 and 3 threads give bit-identical outputs, on the host
 * target only, to keep the test short. */
static void check_thread_independent(fx_fixture *f, const char *label)
{
    int n = f->g->noutputs;
    if (test_cpu)
        return;
    rt_tensor **one = run_jit(f, 1);
    for (int threads = 2; one && threads <= 3; threads++) {
        rt_tensor **more = run_jit(f, threads);
        for (int i = 0; more && i < n; i++) {
            bool same = tensors_identical(one[i], more[i]);
            if (!same)
                fprintf(stderr, "%s: output %d differs between 1 and %d threads\n", label, i, threads);
            CHECK(same);
        }
        free_outputs(more, n);
    }
    free_outputs(one, n);
}

#define ATOL 1e-5
#define RTOL 1e-4

/* The dims argument of input() for a scalar, which reads none of it. */
static const int64_t ld_scalar[1] = {1};

typedef struct shape {
    int rank;
    int64_t dims[4];
} shape;

/* ---- elementwise ---- */

static const shape pointwise_shapes[] = {{1, {1}}, {1, {7}}, {2, {13, 17}}, {2, {3, 9000}}, {3, {2, 5, 33}}};

static void test_grad_pointwise(void)
{
    static const ir_op ops[] = {IR_OP_GRAD_GELU, IR_OP_GRAD_RELU, IR_OP_GRAD_ABS};
    for (size_t k = 0; k < sizeof ops / sizeof *ops; k++) {
        for (size_t s = 0; s < sizeof pointwise_shapes / sizeof *pointwise_shapes; s++) {
            const shape *sh = &pointwise_shapes[s];
            fx_fixture f = fx_fixture_new("pointwise");
            int dy = input(&f, "dy", IR_F32, sh->rank, sh->dims, -2, 2);
            int x = input(&f, "x", IR_F32, sh->rank, sh->dims, -8, 8);
            /* Exact zeros, where relu' and abs' are defined as 0. */
            float *px = input_data(&f, "x");
            for (int64_t i = 0; i < rt_tensor_numel(rt_weights_get(f.inputs, "x")); i += 5)
                px[i] = 0.0f;
            ir_add_output(f.g, add_op(&f, ops[k], (int[]){dy, x}, 2, NULL));
            char label[64];
            snprintf(label, sizeof label, "%s shape %zu", ir_op_get(ops[k])->name, s);
            compare(&f, label, ATOL, RTOL);
            fx_fixture_free(&f);
        }
    }
}

static void test_grad_gelu_edge_values(void)
{
    static const float values[] = {0.0f, -0.0f, 1e-7f, -30.0f, 30.0f, -200.0f, 200.0f, INFINITY, -INFINITY, NAN};
    int64_t n = sizeof values / sizeof *values;
    fx_fixture f = fx_fixture_new("gelu_edges");
    int dy = input(&f, "dy", IR_F32, 1, &n, 1, 1);
    int x = input(&f, "x", IR_F32, 1, &n, 0, 0);
    memcpy(input_data(&f, "x"), values, sizeof values);
    ir_add_output(f.g, add_op(&f, IR_OP_GRAD_GELU, (int[]){dy, x}, 2, NULL));
    compare(&f, "grad.gelu edge values", ATOL, RTOL);
    fx_fixture_free(&f);
}

typedef struct broadcast_case {
    shape a, b;
} broadcast_case;

static const broadcast_case minmax_cases[] = {
    {{1, {7}}, {1, {7}}},
    {{2, {13, 17}}, {1, {17}}},
    {{3, {2, 3, 5}}, {2, {3, 1}}},
    {{3, {4, 1, 65}}, {3, {1, 5, 1}}},
    {{2, {65, 1}}, {2, {1, 33}}},
    {{2, {3, 9000}}, {2, {3, 9000}}},
};

/* The values are multiples of 1/2 in [-2, 2), so many pairs tie. */
static void quantize_halves(float *p, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = floorf(p[i] * 2.0f) / 2.0f;
}

static void test_grad_minmax(void)
{
    static const ir_op ops[] = {IR_OP_GRAD_MAXIMUM, IR_OP_GRAD_MINIMUM};
    for (size_t k = 0; k < 2; k++)
        for (size_t s = 0; s < sizeof minmax_cases / sizeof *minmax_cases; s++)
            for (int operand = 0; operand < 2; operand++) {
                const broadcast_case *c = &minmax_cases[s];
                fx_fixture f = fx_fixture_new("minmax");
                int a = input(&f, "a", IR_F32, c->a.rank, c->a.dims, -2, 2);
                int b = input(&f, "b", IR_F32, c->b.rank, c->b.dims, -2, 2);
                quantize_halves(input_data(&f, "a"), rt_tensor_numel(rt_weights_get(f.inputs, "a")));
                quantize_halves(input_data(&f, "b"), rt_tensor_numel(rt_weights_get(f.inputs, "b")));
                input_data(&f, "a")[0] = NAN;
                const ir_type *out = &f.g->values[add_op(&f, IR_OP_MAXIMUM, (int[]){a, b}, 2, NULL)]->type;
                int dy = input(&f, "dy", IR_F32, out->rank, out->dims, -1, 1);
                ir_attrs attrs = ir_attrs_for(ops[k]);
                ir_attrs_int(&attrs, "operand", operand);
                ir_add_output(f.g, add_op(&f, ops[k], (int[]){dy, a, b}, 3, &attrs));
                char label[64];
                snprintf(label, sizeof label, "%s{operand=%d} case %zu", ir_op_get(ops[k])->name, operand, s);
                compare(&f, label, 0, 0);
                fx_fixture_free(&f);
            }
}

static void test_grad_causal_mask(void)
{
    static const struct {
        shape s;
        int64_t offset;
    } cases[] = {{{4, {2, 3, 5, 5}}, 0}, {{3, {1, 7, 9}}, 2}, {{2, {4, 6}}, -1}, {{3, {2, 33, 33}}, 0},
                 {{2, {3, 40}}, -5}, {{2, {6, 3}}, 7}};
    for (size_t s = 0; s < sizeof cases / sizeof *cases; s++) {
        fx_fixture f = fx_fixture_new("mask");
        int dy = input(&f, "dy", IR_F32, cases[s].s.rank, cases[s].s.dims, -1, 1);
        ir_attrs attrs = ir_attrs_for(IR_OP_GRAD_CAUSAL_MASK);
        ir_attrs_int(&attrs, "offset", cases[s].offset);
        ir_add_output(f.g, add_op(&f, IR_OP_GRAD_CAUSAL_MASK, &dy, 1, &attrs));
        char label[64];
        snprintf(label, sizeof label, "grad.causal_mask case %zu", s);
        compare(&f, label, 0, 0);
        fx_fixture_free(&f);
    }
}

/* ---- rows ---- */

static void test_grad_softmax(void)
{
    static const struct {
        shape s;
        int64_t axis;
    } cases[] = {{{2, {5, 37}}, -1}, {{3, {2, 7, 3}}, 1}, {{2, {3, 1000}}, -1}, {{1, {1}}, 0}, {{3, {4, 9, 2}}, 0}};
    for (size_t s = 0; s < sizeof cases / sizeof *cases; s++) {
        fx_fixture f = fx_fixture_new("softmax");
        int x = input(&f, "x", IR_F32, cases[s].s.rank, cases[s].s.dims, -4, 4);
        int dy = input(&f, "dy", IR_F32, cases[s].s.rank, cases[s].s.dims, -1, 1);
        ir_attrs attrs = ir_attrs_for(IR_OP_SOFTMAX);
        ir_attrs_int(&attrs, "axis", cases[s].axis);
        int y = add_op(&f, IR_OP_SOFTMAX, &x, 1, &attrs);
        ir_attrs gattrs = ir_attrs_for(IR_OP_GRAD_SOFTMAX);
        ir_attrs_int(&gattrs, "axis", cases[s].axis);
        ir_add_output(f.g, add_op(&f, IR_OP_GRAD_SOFTMAX, (int[]){dy, y}, 2, &gattrs));
        int64_t len = cases[s].s.dims[cases[s].axis < 0 ? cases[s].s.rank - 1 : cases[s].axis];
        char label[64];
        snprintf(label, sizeof label, "grad.softmax case %zu", s);
        compare(&f, label, ATOL * sqrt((double)len), RTOL);
        fx_fixture_free(&f);
    }
}

static const shape layernorm_shapes[] = {{2, {7, 33}}, {3, {2, 5, 64}}, {2, {3, 768}}, {2, {4, 1}},
                                         {2, {9, 300}}, {3, {2, 64, 100}}};

static void test_grad_layernorm(void)
{
    for (size_t s = 0; s < sizeof layernorm_shapes / sizeof *layernorm_shapes; s++) {
        const shape *sh = &layernorm_shapes[s];
        int64_t c = sh->dims[sh->rank - 1];
        fx_fixture f = fx_fixture_new("layernorm");
        int dy = input(&f, "dy", IR_F32, sh->rank, sh->dims, -1, 1);
        int x = input(&f, "x", IR_F32, sh->rank, sh->dims, -3, 5);
        int w = input(&f, "w", IR_F32, 1, &c, 0.5, 1.5);
        ir_attrs attrs = ir_attrs_for(IR_OP_GRAD_LAYERNORM);
        ir_attrs_float(&attrs, "eps", 1e-5);
        ir_add_output(f.g, add_op(&f, IR_OP_GRAD_LAYERNORM, (int[]){dy, x, w}, 3, &attrs));
        ir_attrs wattrs = ir_attrs_for(IR_OP_GRAD_LAYERNORM_WEIGHT);
        ir_attrs_float(&wattrs, "eps", 1e-5);
        ir_add_output(f.g, add_op(&f, IR_OP_GRAD_LAYERNORM_WEIGHT, (int[]){dy, x}, 2, &wattrs));
        /* The rows contribute terms of size ~1 to dweight. */
        int64_t rows = ir_type_numel(&f.g->values[x]->type) / c;
        char label[64];
        snprintf(label, sizeof label, "grad.layernorm shape %zu", s);
        compare(&f, label, ATOL * sqrt((double)(c > rows ? c : rows)), RTOL);
        check_thread_independent(&f, label);
        fx_fixture_free(&f);
    }
}

/* ---- embedding and loss ---- */

static void test_grad_embedding(void)
{
    static const struct {
        shape ids;
        int64_t rows, c;
        ir_dtype id_type;
    } cases[] = {{{2, {2, 7}}, 11, 17, IR_I32}, {{2, {2, 7}}, 101, 40, IR_I64}, {{1, {300}}, 5, 64, IR_I32},
                 {{2, {4, 64}}, 257, 128, IR_I32}, {{1, {1}}, 1, 1, IR_I32}};
    for (size_t s = 0; s < sizeof cases / sizeof *cases; s++) {
        fx_fixture f = fx_fixture_new("embedding");
        shape dys = cases[s].ids;
        dys.dims[dys.rank++] = cases[s].c;
        int dy = input(&f, "dy", IR_F32, dys.rank, dys.dims, -1, 1);
        int ids = input(&f, "ids", cases[s].id_type, cases[s].ids.rank, cases[s].ids.dims, 0, (double)cases[s].rows);
        ir_attrs attrs = ir_attrs_for(IR_OP_GRAD_EMBEDDING);
        ir_attrs_int(&attrs, "rows", cases[s].rows);
        ir_add_output(f.g, add_op(&f, IR_OP_GRAD_EMBEDDING, (int[]){dy, ids}, 2, &attrs));
        int64_t positions = ir_type_numel(&f.g->values[ids]->type);
        char label[64];
        snprintf(label, sizeof label, "grad.embedding case %zu", s);
        compare(&f, label, ATOL * sqrt((double)positions), RTOL);
        check_thread_independent(&f, label);
        fx_fixture_free(&f);
    }
}

/* Compiles f's graph, sets element `at` of input `name` (i32) to `bad`, runs
 * it and checks that the run fails with an error containing `expected`. */
static void check_range_error(fx_fixture *f, const char *name, int64_t at, int32_t bad, const char *expected)
{
    ((int32_t *)rt_weights_get(f->inputs, name)->data)[at] = bad;
    char *text = NULL;
    size_t len = 0;
    FILE *sink = open_memstream(&text, &len);
    ir_diag *d = ir_diag_new(sink);
    cg_module *m = cg_compile(f->g, NULL, d);
    CHECK(m != NULL);
    rt_tensor *out[1] = {NULL};
    CHECK_EQ_INT(m ? cg_run(m, f->weights, f->inputs, out, d) : 0, -1);
    CHECK(out[0] == NULL);
    CHECK_EQ_INT(ir_diag_error_count(d), 1);
    fflush(sink);
    bool found = text && strstr(text, expected) != NULL;
    if (!found)
        fprintf(stderr, "expected '%s' in: %s\n", expected, text ? text : "(nothing)");
    CHECK(found);
    cg_free(m);
    ir_diag_free(d);
    fclose(sink);
    free(text);
}

static void test_grad_embedding_out_of_range(void)
{
    fx_fixture f = fx_fixture_new("embedding");
    int64_t dyd[2] = {5, 16}, idd[1] = {5};
    int dy = input(&f, "dy", IR_F32, 2, dyd, -1, 1);
    int ids = input(&f, "ids", IR_I32, 1, idd, 0, 11);
    ir_attrs attrs = ir_attrs_for(IR_OP_GRAD_EMBEDDING);
    ir_attrs_int(&attrs, "rows", 11);
    ir_add_output(f.g, ir_add(f.g, IR_OP_GRAD_EMBEDDING, "dwte", (int[]){dy, ids}, 2, &attrs, no_loc));
    check_range_error(&f, "ids", 3, 11, "grad.embedding 'dwte': id 11 at flat position 3 is out of range [0, 11)");
    check_range_error(&f, "ids", 3, -1, "id -1 at flat position 3");
    fx_fixture_free(&f);
}

static void test_grad_cross_entropy(void)
{
    static const struct {
        shape logits;
        double ignored_fraction;
        int64_t ignore_index;
    } cases[] = {{{3, {2, 7, 101}}, 0.3, -1}, {{2, {1, 17}}, 0, -1}, {{2, {5, 1000}}, 0, -1},
                 {{2, {3, 9}}, 1.0, -1},      {{2, {16, 33}}, 0.5, 5}, {{2, {64, 257}}, 0.1, -100}};
    for (size_t s = 0; s < sizeof cases / sizeof *cases; s++) {
        fx_fixture f = fx_fixture_new("xent");
        const shape *ls = &cases[s].logits;
        int64_t v = ls->dims[ls->rank - 1];
        int dloss = input(&f, "dloss", IR_F32, 0, ld_scalar, 0.5, 2);
        int logits = input(&f, "logits", IR_F32, ls->rank, ls->dims, -5, 5);
        int targets = input(&f, "targets", IR_I32, ls->rank - 1, ls->dims, 0, (double)v);
        rt_tensor *t = rt_weights_get(f.inputs, "targets");
        for (int64_t i = 0; i < rt_tensor_numel(t); i++)
            if (fx_uniform(&rng, 0, 1) < cases[s].ignored_fraction)
                ((int32_t *)t->data)[i] = (int32_t)cases[s].ignore_index;
        ir_attrs attrs = ir_attrs_for(IR_OP_GRAD_CROSS_ENTROPY);
        ir_attrs_int(&attrs, "ignore_index", cases[s].ignore_index);
        ir_add_output(f.g, add_op(&f, IR_OP_GRAD_CROSS_ENTROPY, (int[]){dloss, logits, targets}, 3, &attrs));
        char label[64];
        snprintf(label, sizeof label, "grad.cross_entropy case %zu", s);
        compare(&f, label, ATOL, RTOL);
        check_thread_independent(&f, label);
        fx_fixture_free(&f);
    }
}

static void test_grad_cross_entropy_bad_target(void)
{
    fx_fixture f = fx_fixture_new("xent");
    int64_t ld[2] = {4, 9};
    int dloss = input(&f, "dloss", IR_F32, 0, ld_scalar, 1, 1);
    int logits = input(&f, "logits", IR_F32, 2, ld, -1, 1);
    int targets = input(&f, "targets", IR_I32, 1, ld, 0, 9);
    ir_add_output(f.g, ir_add(f.g, IR_OP_GRAD_CROSS_ENTROPY, "dlogits", (int[]){dloss, logits, targets}, 3, NULL,
                              no_loc));
    check_range_error(&f, "targets", 2, 9,
                      "grad.cross_entropy 'dlogits': target 9 at flat position 2 is out of range [0, 9)");
    fx_fixture_free(&f);
}

/* ---- half precision ---- */

/* Returns whether every element of an f32 tensor is representable in dtype. */
static bool representable(const rt_tensor *t, ir_dtype dtype)
{
    for (int64_t i = 0; i < rt_tensor_numel(t); i++) {
        float x = ((const float *)t->data)[i];
        float back = dtype == IR_F16 ? rt_f16_to_f32(rt_f32_to_f16(x)) : rt_bf16_to_f32(rt_f32_to_bf16(x));
        if (back != x)
            return false;
    }
    return true;
}

/* f16 and bf16 operands are computed in f32 and each result is rounded once
 * to its dtype, as the interpreter does. An f32 difference that straddles a
 * rounding boundary moves the result by one unit in the last place, 2^-10
 * relative for f16 and 2^-7 for bf16. Outputs are rounded when returned in
 * any case, so a cast to f32 of each result shows whether the value that
 * later ops read was rounded. */
static void test_grad_half_precision(void)
{
    static const ir_dtype dtypes[] = {IR_F16, IR_BF16};
    for (size_t k = 0; k < 2; k++) {
        fx_fixture f = fx_fixture_new("half");
        int64_t dims[2] = {7, 33}, c = 33, idd[1] = {7};
        int dy = input(&f, "dy", dtypes[k], 2, dims, -1, 1);
        int x = input(&f, "x", dtypes[k], 2, dims, -3, 3);
        int w = input(&f, "w", dtypes[k], 1, &c, 0.5, 1.5);
        int ids = input(&f, "ids", IR_I32, 1, idd, 0, 5);
        ir_attrs attrs = ir_attrs_for(IR_OP_GRAD_EMBEDDING);
        ir_attrs_int(&attrs, "rows", 5);
        int results[4] = {
            add_op(&f, IR_OP_GRAD_GELU, (int[]){dy, x}, 2, NULL),
            add_op(&f, IR_OP_GRAD_LAYERNORM, (int[]){dy, x, w}, 3, NULL),
            add_op(&f, IR_OP_GRAD_LAYERNORM_WEIGHT, (int[]){dy, x}, 2, NULL),
            add_op(&f, IR_OP_GRAD_EMBEDDING, (int[]){dy, ids}, 2, &attrs),
        };
        for (int i = 0; i < 4; i++)
            ir_add_output(f.g, results[i]);
        double ulp = dtypes[k] == IR_F16 ? 1.0 / 1024 : 1.0 / 128;
        compare(&f, ir_dtype_name(dtypes[k]), ATOL * 10, 1.01 * ulp);

        for (int i = 0; i < 4; i++) {
            ir_attrs cast = ir_attrs_for(IR_OP_CAST);
            ir_attrs_str(&cast, "to", "f32");
            f.g->outputs[i] = add_op(&f, IR_OP_CAST, &results[i], 1, &cast);
            ir_attrs_clear(&cast);
        }
        rt_tensor **got = run_jit(&f, 2);
        for (int i = 0; got && i < 4; i++) {
            bool rounded = representable(got[i], dtypes[k]);
            if (!rounded)
                fprintf(stderr, "%s: %s result %d is not rounded to its dtype\n", ir_dtype_name(dtypes[k]),
                        ir_op_get(f.g->values[results[i]]->op)->name, i);
            CHECK(rounded);
        }
        free_outputs(got, 4);
        fx_fixture_free(&f);
    }
}

/* ---- the GPT-2 training graph ---- */

static double max_abs(const rt_tensor *t)
{
    double m = 0;
    for (int64_t i = 0; i < rt_tensor_numel(t); i++)
        m = fmax(m, fabs(((const float *)t->data)[i]));
    return m;
}

static void test_gpt2_training_graph(int64_t layers, int64_t c, int64_t nh, int64_t vocab, int64_t t, int64_t b)
{
    fx_fixture f = fx_fixture_new("gpt2");
    fe_define defs[] = {{"n_layer", layers}, {"n_embd", c}, {"n_head", nh}, {"n_vocab", vocab}, {"n_ctx", t + 3},
                        {"T", t}, {"B", b}};
    ir_graph_free(f.g);
    f.g = fe_compile_file(QUADC_SOURCE_DIR "/examples/gpt2.qd", defs, 7, f.diag);
    CHECK(f.g != NULL);
    if (!f.g) {
        f.g = ir_graph_new("empty", f.diag);
        fx_fixture_free(&f);
        return;
    }
    CHECK_EQ_INT(pass_run_text(f.g, "autodiff{loss=loss},cse,dce", f.diag), 0);
    /* The logits, the loss and one gradient per param: 12 per layer, then
     * wte, wpe and the two of ln_f. */
    CHECK_EQ_INT(f.g->noutputs, 2 + 12 * layers + 4);
    /* Layernorm weights around 1, so no gradient is trivially zero. */
    fx_set_uniform_gpt2_weights(&rng, f.g, 0.5, f.weights);
    int64_t dims[2] = {b, t};
    rt_weights_set(f.inputs, "idx", fx_uniform_tensor(&rng, IR_I32, 2, dims, 0, (double)vocab));
    rt_weights_set(f.inputs, "targets", fx_uniform_tensor(&rng, IR_I32, 2, dims, 0, (double)vocab));

    int n = f.g->noutputs;
    rt_tensor **want = calloc((size_t)n, sizeof *want);
    CHECK_EQ_INT(rt_interp_run(f.g, f.weights, f.inputs, want, f.diag), 0);
    rt_tensor **got = run_jit(&f, 2);
    for (int i = 0; got && i < n; i++) {
        const char *name = f.g->values[f.g->outputs[i]]->name;
        char label[160];
        snprintf(label, sizeof label, "gpt2 L=%lld C=%lld T=%lld B=%lld %s", (long long)layers, (long long)c,
                 (long long)t, (long long)b, name);
        CHECK(max_abs(want[i]) > 0);
        bool ok = tensors_match(label, i, got[i], want[i], 1e-3 * max_abs(want[i]), 1e-3);
        CHECK(ok);
    }
    free_outputs(got, n);
    free_outputs(want, n);
    fx_fixture_free(&f);
}

/* Reruns the op tests with the vector widths of other targets: 8 floats
 * (haswell) and 4 (x86-64), so the vector loops and their scalar tails
 * meet other sizes. */
static void test_other_targets(void)
{
    static const char *cpus[] = {"haswell", "x86-64"};
    for (size_t k = 0; k < sizeof cpus / sizeof *cpus; k++) {
        test_cpu = cpus[k];
        test_grad_pointwise();
        test_grad_minmax();
        test_grad_causal_mask();
        test_grad_softmax();
        test_grad_layernorm();
        test_grad_embedding();
        test_grad_cross_entropy();
    }
    test_cpu = NULL;
}

int main(void)
{
    test_grad_pointwise();
    test_grad_gelu_edge_values();
    test_grad_minmax();
    test_grad_causal_mask();
    test_grad_softmax();
    test_grad_layernorm();
    test_grad_embedding();
    test_grad_embedding_out_of_range();
    test_grad_cross_entropy();
    test_grad_cross_entropy_bad_target();
    test_grad_half_precision();
    test_gpt2_training_graph(2, 48, 3, 101, 17, 2);
    test_gpt2_training_graph(1, 64, 4, 257, 33, 1);
    test_other_targets();
    return check_finish();
}
