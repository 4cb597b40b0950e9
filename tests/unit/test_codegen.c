/* JIT code generation against the reference interpreter: every op on its
 * own over several shapes (sizes that do not divide the vector width or
 * the GEMM tiles, broadcasting, edge values), runtime range errors, and
 * whole GPT-2 graphs from examples/gpt2.qd.
 *
 * Tolerance: |jit - ref| <= atol + rtol * |ref| per element, with
 * rtol = 1e-4 and atol = 1e-5 for f32 ops. Sums accumulate in f32 vector
 * lanes here but in double in the interpreter, so ops that sum K terms
 * get atol = 1e-5 * sqrt(K) * (typical |term|) on top (see close_tol).
 * Whole GPT-2 graphs use rtol = 1e-3 and atol = 1e-4 because the f32
 * rounding differences compound over the layers. Integer outputs must be
 * equal. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixtures.h"
#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "ir/ir.h"
#include "runtime/interp.h"
#include "runtime/tensor.h"

static const ir_loc no_loc = {0};
static fx_rng rng = {FX_RNG_XORSHIFT, 0x9e3779b97f4a7c15ull};

static ir_type type_of(ir_dtype dt, int rank, const int64_t *dims)
{
    ir_type t = {dt, rank, {0}};
    memcpy(t.dims, dims, sizeof(int64_t) * (size_t)rank);
    return t;
}

/* Adds an input (or, with param, a weight) filled uniformly from [lo, hi). */
static int leaf(fx_fixture *f, bool param, const char *name, ir_dtype dt, int rank, const int64_t *dims, double lo,
                double hi)
{
    int id = ir_add_leaf(f->g, param ? IR_OP_PARAM : IR_OP_INPUT, name, type_of(dt, rank, dims), NULL, no_loc);
    rt_weights_set(param ? f->weights : f->inputs, name, fx_uniform_tensor(&rng, dt, rank, dims, lo, hi));
    return id;
}

static int input(fx_fixture *f, const char *name, int rank, const int64_t *dims, double lo, double hi)
{
    return leaf(f, false, name, IR_F32, rank, dims, lo, hi);
}

static int op1(fx_fixture *f, ir_op op, int a, ir_attrs *attrs)
{
    return ir_add(f->g, op, NULL, &a, 1, attrs, no_loc);
}

static int op2(fx_fixture *f, ir_op op, int a, int b, ir_attrs *attrs)
{
    int ops[2] = {a, b};
    return ir_add(f->g, op, NULL, ops, 2, attrs, no_loc);
}

static double as_double(const rt_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case IR_F32: return ((const float *)t->data)[i];
    case IR_F16: return rt_f16_to_f32(((const uint16_t *)t->data)[i]);
    case IR_BF16: return rt_bf16_to_f32(((const uint16_t *)t->data)[i]);
    case IR_I32: return ((const int32_t *)t->data)[i];
    case IR_I64: return (double)((const int64_t *)t->data)[i];
    case IR_I8: return ((const int8_t *)t->data)[i];
    case IR_U8: return ((const uint8_t *)t->data)[i];
    default: return NAN;
    }
}

static bool close_enough(double got, double want, double atol, double rtol)
{
    if (isnan(want))
        return isnan(got);
    if (isinf(want))
        return got == want;
    return fabs(got - want) <= atol + rtol * fabs(want);
}

/* Compares two outputs element by element; prints the first mismatch. */
static bool tensors_match(const char *label, int index, const rt_tensor *got, const rt_tensor *want, double atol,
                          double rtol)
{
    if (!got || !want || got->dtype != want->dtype || got->rank != want->rank) {
        fprintf(stderr, "%s: output %d: dtype or rank differs\n", label, index);
        return false;
    }
    for (int i = 0; i < got->rank; i++)
        if (got->dims[i] != want->dims[i]) {
            fprintf(stderr, "%s: output %d: dimension %d is %lld, expected %lld\n", label, index, i,
                    (long long)got->dims[i], (long long)want->dims[i]);
            return false;
        }
    int64_t n = rt_tensor_numel(got), bad = 0, first = -1;
    double worst = 0;
    bool exact = !(got->dtype == IR_F32 || got->dtype == IR_F16 || got->dtype == IR_BF16);
    for (int64_t i = 0; i < n; i++) {
        double a = as_double(got, i), b = as_double(want, i);
        bool ok = exact ? a == b : close_enough(a, b, atol, rtol);
        if (!ok) {
            if (first < 0)
                first = i;
            bad++;
        }
        if (!isnan(b) && !isinf(b) && fabs(a - b) > worst)
            worst = fabs(a - b);
    }
    if (bad) {
        fprintf(stderr, "%s: output %d: %lld of %lld elements differ; first at %lld: jit %.9g, interpreter %.9g "
                        "(max abs diff %.3g)\n",
                label, index, (long long)bad, (long long)n, (long long)first, as_double(got, first),
                as_double(want, first), worst);
    }
    return bad == 0;
}

/* Options for compare(): the tests of other targets and opt levels
 * change these and restore them. */
static cg_options test_options = {2, NULL, 3, 0, 0};

/* Compiles and runs the fixture's graph with test_options and `threads`
 * threads, runs the interpreter, and checks every output. */
static void compare_threads(fx_fixture *f, const char *label, double atol, double rtol, int threads)
{
    int n = f->g->noutputs;
    rt_tensor *want[8] = {0}, *got[8] = {0};
    CHECK(ir_verify(f->g, NULL) == 0);
    int ref = rt_interp_run(f->g, f->weights, f->inputs, want, f->diag);
    CHECK_EQ_INT(ref, 0);
    cg_options o = test_options;
    o.threads = threads;
    cg_module *m = cg_compile(f->g, &o, f->diag);
    CHECK(m != NULL);
    if (m && ref == 0) {
        int rc = cg_run(m, f->weights, f->inputs, got, f->diag);
        CHECK_EQ_INT(rc, 0);
        for (int i = 0; rc == 0 && i < n; i++) {
            bool ok = tensors_match(label, i, got[i], want[i], atol, rtol);
            CHECK(ok);
        }
        /* A second run reuses the bound weights and must give the same. */
        rt_tensor *again[8] = {0};
        if (rc == 0 && cg_run(m, f->weights, f->inputs, again, f->diag) == 0)
            for (int i = 0; i < n; i++) {
                bool same = tensors_match(label, i, again[i], got[i], 0, 0);
                CHECK(same);
            }
        for (int i = 0; i < n; i++)
            rt_tensor_free(again[i]);
        /* Views of the module's buffers hold the same values as the copies. */
        rt_tensor views[8];
        if (rc == 0) {
            CHECK_EQ_INT(cg_run_views(m, f->weights, f->inputs, views, f->diag), 0);
            for (int i = 0; i < n; i++) {
                bool same = tensors_match(label, i, &views[i], got[i], 0, 0);
                CHECK(same);
            }
        }
    }
    for (int i = 0; i < n; i++) {
        rt_tensor_free(want[i]);
        rt_tensor_free(got[i]);
    }
    cg_free(m);
}

static void compare(fx_fixture *f, const char *label, double atol, double rtol)
{
    compare_threads(f, label, atol, rtol, test_options.threads);
}

#define ATOL 1e-5
#define RTOL 1e-4

/* ---- elementwise ---- */

typedef struct shape_pair {
    int ra;
    int64_t a[4];
    int rb;
    int64_t b[4];
} shape_pair;

static const shape_pair broadcast_cases[] = {
    {1, {1}, 1, {1}},
    {1, {7}, 1, {7}},
    {2, {13, 17}, 1, {17}},
    {3, {2, 3, 5}, 2, {3, 1}},
    {1, {33}, 0, {0}},
    {3, {4, 1, 65}, 3, {1, 5, 1}},
    {2, {65, 1}, 2, {1, 33}},
    {2, {3, 9000}, 2, {3, 9000}},
};

static void test_binary_ops(void)
{
    static const ir_op ops[] = {IR_OP_ADD, IR_OP_SUB, IR_OP_MUL, IR_OP_DIV, IR_OP_MAXIMUM, IR_OP_MINIMUM};
    for (size_t k = 0; k < sizeof ops / sizeof *ops; k++) {
        for (size_t s = 0; s < sizeof broadcast_cases / sizeof *broadcast_cases; s++) {
            const shape_pair *c = &broadcast_cases[s];
            fx_fixture f = fx_fixture_new("binary");
            int a = input(&f, "a", c->ra, c->a, -3, 3);
            int b = ops[k] == IR_OP_DIV ? input(&f, "b", c->rb, c->b, 0.5, 2) : input(&f, "b", c->rb, c->b, -3, 3);
            ir_add_output(f.g, op2(&f, ops[k], a, b, NULL));
            /* The swapped order broadcasts the other way. */
            ir_add_output(f.g, op2(&f, ops[k], b, a, NULL));
            char label[64];
            snprintf(label, sizeof label, "%s case %zu", ir_op_get(ops[k])->name, s);
            compare(&f, label, ATOL, RTOL);
            fx_fixture_free(&f);
        }
    }
}

static void test_unary_ops(void)
{
    static const struct {
        ir_op op;
        double lo, hi;
    } cases[] = {
        {IR_OP_NEG, -5, 5},   {IR_OP_EXP, -20, 20}, {IR_OP_LOG, 1e-3, 1e3}, {IR_OP_SQRT, 0, 100},
        {IR_OP_RSQRT, 0.01, 100}, {IR_OP_TANH, -6, 6}, {IR_OP_TANH, -0.6, 0.6}, {IR_OP_GELU, -8, 8},
        {IR_OP_RELU, -2, 2},  {IR_OP_ABS, -2, 2},   {IR_OP_SCALE, -2, 2},
    };
    static const int64_t sizes[] = {1, 7, 13, 17, 33, 65, 1000};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            fx_fixture f = fx_fixture_new("unary");
            int64_t dims[2] = {3, sizes[s]};
            int x = input(&f, "x", 2, dims, cases[k].lo, cases[k].hi);
            ir_attrs attrs = ir_attrs_for(cases[k].op);
            if (cases[k].op == IR_OP_SCALE)
                ir_attrs_float(&attrs, "factor", -0.37);
            ir_add_output(f.g, op1(&f, cases[k].op, x, &attrs));
            char label[64];
            snprintf(label, sizeof label, "%s size %lld", ir_op_get(cases[k].op)->name, (long long)sizes[s]);
            compare(&f, label, ATOL, RTOL);
            fx_fixture_free(&f);
        }
    }
}

/* exp, log, tanh and gelu at the edges of their ranges. */
static void test_math_edge_values(void)
{
    static const float values[] = {-INFINITY, -1000, -104, -103, -88, -87.5f, -20, -1e-3f, -1e-8f, 0, 1e-30f,
                                   1e-38f, 1e-8f, 0.25f, 0.549f, 0.551f, 1, 9, 10, 50, 88, 88.7f, 89, 1000,
                                   INFINITY, NAN};
    static const ir_op ops[] = {IR_OP_EXP, IR_OP_LOG, IR_OP_TANH, IR_OP_GELU, IR_OP_RELU, IR_OP_SQRT};
    int64_t n = sizeof values / sizeof *values;
    for (size_t k = 0; k < sizeof ops / sizeof *ops; k++) {
        fx_fixture f = fx_fixture_new("edges");
        int x = ir_add_leaf(f.g, IR_OP_INPUT, "x", type_of(IR_F32, 1, &n), NULL, no_loc);
        rt_tensor *t = rt_tensor_new(IR_F32, 1, &n);
        memcpy(t->data, values, sizeof values);
        rt_weights_set(f.inputs, "x", t);
        ir_add_output(f.g, op1(&f, ops[k], x, NULL));
        char label[64];
        snprintf(label, sizeof label, "%s edge values", ir_op_get(ops[k])->name);
        compare(&f, label, 1e-6, 1e-5);
        fx_fixture_free(&f);
    }
}

static void test_casts(void)
{
    static const struct {
        ir_dtype from;
        const char *to;
        double lo, hi;
    } cases[] = {
        {IR_F32, "i32", -3e9, 3e9},  {IR_F32, "i32", -4, 4}, {IR_F32, "i8", -300, 300}, {IR_F32, "u8", -10, 300},
        {IR_F32, "i64", -1e6, 1e6},  {IR_I32, "f32", -1e6, 1e6}, {IR_I32, "i8", -1000, 1000},
        {IR_I64, "i32", -1e12, 1e12}, {IR_U8, "f32", 0, 255}, {IR_I8, "u8", -128, 127}, {IR_F32, "f16", -70000, 70000},
        {IR_F32, "bf16", -10, 10},   {IR_F16, "f32", -10, 10},
    };
    static const int64_t sizes[] = {1, 17, 65};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            fx_fixture f = fx_fixture_new("cast");
            int x = leaf(&f, false, "x", cases[k].from, 1, &sizes[s], cases[k].lo, cases[k].hi);
            /* Exact halves test round-half-to-even. */
            if (cases[k].from == IR_F32 && cases[k].hi == 4) {
                float *p = rt_weights_get(f.inputs, "x")->data;
                for (int64_t i = 0; i < sizes[s]; i++)
                    p[i] = (float)(i % 9) * 0.5f - 2.0f;
            }
            ir_attrs attrs = ir_attrs_for(IR_OP_CAST);
            ir_attrs_str(&attrs, "to", cases[k].to);
            ir_add_output(f.g, op1(&f, IR_OP_CAST, x, &attrs));
            ir_attrs_clear(&attrs);
            char label[64];
            snprintf(label, sizeof label, "cast %s to %s size %lld", ir_dtype_name(cases[k].from), cases[k].to,
                     (long long)sizes[s]);
            compare(&f, label, 0, 0);
            fx_fixture_free(&f);
        }
    }
}

/* f16 arithmetic rounds after each elementwise op, as in the interpreter. */
static void test_f16_elementwise(void)
{
    fx_fixture f = fx_fixture_new("f16");
    int64_t dims[1] = {33};
    int a = leaf(&f, false, "a", IR_F16, 1, dims, -4, 4);
    int b = leaf(&f, false, "b", IR_F16, 1, dims, -4, 4);
    ir_add_output(f.g, op2(&f, IR_OP_MUL, op2(&f, IR_OP_ADD, a, b, NULL), b, NULL));
    compare(&f, "f16 add then mul", 0, 0);
    fx_fixture_free(&f);
}

/* f16 results of non-elementwise ops round once, like the interpreter's.
 * The f32 accumulation order differs, so a result may land one f16 ulp
 * (2^-10 relative) away. */
static void test_f16_graph(void)
{
    static const ir_dtype types[] = {IR_F16, IR_BF16};
    for (int k = 0; k < 2; k++) {
        fx_fixture f = fx_fixture_new("half");
        int64_t xd[2] = {5, 33}, wd[2] = {33, 17}, n = 17;
        int x = leaf(&f, false, "x", types[k], 2, xd, -1, 1);
        int w = leaf(&f, true, "w", types[k], 2, wd, -1, 1);
        int b = leaf(&f, true, "b", types[k], 1, &n, -1, 1);
        int y = ir_add(f.g, IR_OP_LINEAR, "y", (int[]){x, w, b}, 3, NULL, no_loc);
        ir_attrs cattrs = ir_attrs_for(IR_OP_CONST);
        ir_attrs_float(&cattrs, "value", 0.1);
        int c = ir_add_leaf(f.g, IR_OP_CONST, "c", type_of(types[k], 1, &n), &cattrs, no_loc);
        int ln = ir_add(f.g, IR_OP_LAYERNORM, "ln", (int[]){op2(&f, IR_OP_ADD, y, c, NULL),
                        leaf(&f, true, "g", types[k], 1, &n, 0.5, 1.5), b}, 3, NULL, no_loc);
        int sm = op1(&f, IR_OP_SOFTMAX, ln, NULL);
        ir_attrs red = ir_attrs_for(IR_OP_REDUCE_MEAN);
        ir_attrs_ints(&red, "axes", (int64_t[]){0}, 1);
        ir_add_output(f.g, y);
        ir_add_output(f.g, c);
        ir_add_output(f.g, ln);
        ir_add_output(f.g, sm);
        ir_add_output(f.g, op1(&f, IR_OP_REDUCE_MEAN, sm, &red));
        compare(&f, k == 0 ? "f16 linear layernorm softmax" : "bf16 linear layernorm softmax", 1e-3,
                k == 0 ? 2e-3 : 1.6e-2);
        fx_fixture_free(&f);
    }
}

/* A graph without params, run with NULL weights, still computes its
 * constants at the first run. */
static void test_const_without_weights(void)
{
    fx_fixture f = fx_fixture_new("const");
    int64_t dims[1] = {5};
    ir_attrs attrs = ir_attrs_for(IR_OP_CONST);
    ir_attrs_float(&attrs, "value", 3.0);
    int c = ir_add_leaf(f.g, IR_OP_CONST, "c", type_of(IR_F32, 1, dims), &attrs, no_loc);
    int x = input(&f, "x", 1, dims, -1, 1);
    ir_add_output(f.g, op2(&f, IR_OP_ADD, x, c, NULL));
    cg_module *m = cg_compile(f.g, NULL, f.diag);
    rt_tensor *out[1] = {NULL};
    CHECK_EQ_INT(m ? cg_run(m, NULL, f.inputs, out, f.diag) : -1, 0);
    const float *xs = rt_weights_get(f.inputs, "x")->data;
    for (int i = 0; out[0] && i < 5; i++)
        CHECK_CLOSE(((float *)out[0]->data)[i], xs[i] + 3.0f, 1e-6, 0);
    rt_tensor_free(out[0]);
    cg_free(m);
    fx_fixture_free(&f);
}

static void test_const(void)
{
    fx_fixture f = fx_fixture_new("const");
    int64_t dims[2] = {3, 17};
    ir_attrs attrs = ir_attrs_for(IR_OP_CONST);
    ir_attrs_float(&attrs, "value", 2.5);
    int c = ir_add_leaf(f.g, IR_OP_CONST, "c", type_of(IR_F32, 2, dims), &attrs, no_loc);
    int x = input(&f, "x", 2, dims, -1, 1);
    ir_add_output(f.g, op2(&f, IR_OP_MUL, x, c, NULL));
    ir_add_output(f.g, c);
    compare(&f, "const times input", ATOL, RTOL);
    fx_fixture_free(&f);
}

/* ---- matrix products ---- */

/* Every combination of transposed operands, at sizes that leave partial
 * vectors, MR strips, NR panels, and MC and KC blocks. */
static void test_matmul_2d(void)
{
    static const int64_t mkn[][3] = {{1, 1, 1},    {7, 13, 17},  {17, 33, 65},  {65, 17, 33},
                                     {8, 48, 48},  {9, 300, 50}, {128, 64, 97}, {3, 600, 200},
                                     {33, 7, 1},   {130, 257, 49}, {200, 20, 5}};
    for (size_t s = 0; s < sizeof mkn / sizeof *mkn; s++) {
        for (int transposes = 0; transposes < 4; transposes++) {
            for (int b_is_param = 0; b_is_param < 2; b_is_param++) {
                fx_fixture f = fx_fixture_new("matmul");
                int transpose_a = transposes & 1, transpose_b = transposes >> 1;
                int64_t m = mkn[s][0], k = mkn[s][1], n = mkn[s][2];
                int64_t ad[2] = {transpose_a ? k : m, transpose_a ? m : k};
                int64_t bd[2] = {transpose_b ? n : k, transpose_b ? k : n};
                int a = input(&f, "a", 2, ad, -1, 1);
                int b = leaf(&f, b_is_param, "b", IR_F32, 2, bd, -1, 1);
                ir_attrs attrs = ir_attrs_for(IR_OP_MATMUL);
                ir_attrs_int(&attrs, "transpose_a", transpose_a);
                ir_attrs_int(&attrs, "transpose_b", transpose_b);
                ir_add_output(f.g, op2(&f, IR_OP_MATMUL, a, b, &attrs));
                char label[96];
                snprintf(label, sizeof label, "matmul %lldx%lldx%lld%s%s%s", (long long)m, (long long)k,
                         (long long)n, transpose_a ? " a^T" : "", transpose_b ? " b^T" : "",
                         b_is_param ? " param" : "");
                compare(&f, label, ATOL * sqrt((double)k), RTOL);
                fx_fixture_free(&f);
            }
        }
    }
}

static void test_matmul_batched(void)
{
    static const struct {
        int ra;
        int64_t a[4];
        int rb;
        int64_t b[4];
        int transpose_a, transpose_b;
    } cases[] = {
        {4, {2, 3, 7, 13}, 4, {2, 3, 13, 17}, 0, 0},
        {4, {2, 3, 17, 16}, 4, {2, 3, 17, 16}, 0, 1}, /* attention scores */
        {4, {1, 2, 17, 17}, 4, {1, 2, 17, 16}, 0, 0}, /* attention x V */
        {4, {2, 3, 7, 13}, 2, {13, 17}, 0, 0},
        {3, {4, 7, 13}, 3, {1, 13, 5}, 0, 0},
        {3, {1, 9, 13}, 3, {3, 13, 50}, 0, 0},
        {2, {9, 13}, 3, {3, 50, 13}, 0, 1},
        {4, {2, 3, 13, 7}, 4, {2, 3, 13, 17}, 1, 0},
        {3, {1, 13, 9}, 3, {3, 50, 13}, 1, 1},
        {3, {4, 13, 7}, 2, {13, 5}, 1, 0},
        {2, {17, 33}, 3, {2, 17, 20}, 1, 0},
    };
    for (size_t s = 0; s < sizeof cases / sizeof *cases; s++) {
        fx_fixture f = fx_fixture_new("bmm");
        int a = input(&f, "a", cases[s].ra, cases[s].a, -1, 1);
        int b = input(&f, "b", cases[s].rb, cases[s].b, -1, 1);
        ir_attrs attrs = ir_attrs_for(IR_OP_MATMUL);
        ir_attrs_int(&attrs, "transpose_a", cases[s].transpose_a);
        ir_attrs_int(&attrs, "transpose_b", cases[s].transpose_b);
        ir_add_output(f.g, op2(&f, IR_OP_MATMUL, a, b, &attrs));
        char label[64];
        snprintf(label, sizeof label, "batched matmul case %zu", s);
        compare(&f, label, ATOL * 4, RTOL);
        fx_fixture_free(&f);
    }
}

static void test_linear(void)
{
    static const struct {
        int rx;
        int64_t x[3];
        int64_t out;
        bool bias;
    } cases[] = {
        {3, {2, 17, 33}, 65, true}, {2, {5, 7}, 1, true}, {2, {5, 7}, 1, false}, {2, {1, 768}, 97, true},
        {3, {2, 9, 48}, 144, false}, {2, {130, 260}, 49, true},
    };
    for (size_t s = 0; s < sizeof cases / sizeof *cases; s++) {
        fx_fixture f = fx_fixture_new("linear");
        int64_t in = cases[s].x[cases[s].rx - 1];
        int64_t wd[2] = {in, cases[s].out};
        int x = input(&f, "x", cases[s].rx, cases[s].x, -1, 1);
        int w = leaf(&f, true, "w", IR_F32, 2, wd, -1, 1);
        int ops[3] = {x, w, -1};
        if (cases[s].bias)
            ops[2] = leaf(&f, true, "b", IR_F32, 1, &cases[s].out, -1, 1);
        ir_add_output(f.g, ir_add(f.g, IR_OP_LINEAR, "y", ops, cases[s].bias ? 3 : 2, NULL, no_loc));
        char label[64];
        snprintf(label, sizeof label, "linear case %zu", s);
        compare(&f, label, ATOL * sqrt((double)in), RTOL);
        fx_fixture_free(&f);
    }
}

/* ---- normalization, attention pieces ---- */

static void test_layernorm(void)
{
    static const struct {
        int rank;
        int64_t dims[3];
    } cases[] = {{1, {7}}, {2, {3, 17}}, {3, {2, 5, 65}}, {2, {4, 768}}, {2, {2, 1}}};
    for (size_t s = 0; s < sizeof cases / sizeof *cases; s++) {
        fx_fixture f = fx_fixture_new("layernorm");
        int64_t c = cases[s].dims[cases[s].rank - 1];
        int ops[3] = {input(&f, "x", cases[s].rank, cases[s].dims, -2, 3), leaf(&f, true, "w", IR_F32, 1, &c, 0.5, 1.5),
                      leaf(&f, true, "b", IR_F32, 1, &c, -1, 1)};
        ir_add_output(f.g, ir_add(f.g, IR_OP_LAYERNORM, "y", ops, 3, NULL, no_loc));
        char label[64];
        snprintf(label, sizeof label, "layernorm case %zu", s);
        compare(&f, label, ATOL * 5, RTOL);
        fx_fixture_free(&f);
    }
}

static void test_softmax(void)
{
    static const struct {
        int rank;
        int64_t dims[3];
        int axis;
    } cases[] = {{2, {3, 17}, -1}, {2, {2, 65}, 1}, {2, {5, 7}, 0}, {3, {2, 3, 4}, 1}, {1, {1}, 0}, {2, {2, 1000}, -1}};
    for (size_t s = 0; s < sizeof cases / sizeof *cases; s++) {
        fx_fixture f = fx_fixture_new("softmax");
        int x = input(&f, "x", cases[s].rank, cases[s].dims, -10, 10);
        ir_attrs attrs = ir_attrs_for(IR_OP_SOFTMAX);
        ir_attrs_int(&attrs, "axis", cases[s].axis);
        ir_add_output(f.g, op1(&f, IR_OP_SOFTMAX, x, &attrs));
        char label[64];
        snprintf(label, sizeof label, "softmax case %zu", s);
        compare(&f, label, ATOL, RTOL);
        fx_fixture_free(&f);
    }
}

static void test_causal_mask_softmax(void)
{
    static const struct {
        int rank;
        int64_t dims[4];
        int offset;
    } cases[] = {{2, {5, 5}, 0}, {4, {2, 3, 7, 7}, 0}, {2, {4, 9}, 2}, {2, {4, 9}, -1}, {3, {2, 17, 17}, 0},
                 {2, {3, 40}, -2}};
    for (size_t s = 0; s < sizeof cases / sizeof *cases; s++) {
        fx_fixture f = fx_fixture_new("mask");
        int x = input(&f, "x", cases[s].rank, cases[s].dims, -4, 4);
        ir_attrs attrs = ir_attrs_for(IR_OP_CAUSAL_MASK);
        ir_attrs_int(&attrs, "offset", cases[s].offset);
        int masked = op1(&f, IR_OP_CAUSAL_MASK, x, &attrs);
        ir_add_output(f.g, masked);
        /* Offset -1 and -2 mask whole rows: softmax must give zeros there. */
        ir_add_output(f.g, op1(&f, IR_OP_SOFTMAX, masked, NULL));
        char label[64];
        snprintf(label, sizeof label, "causal_mask case %zu", s);
        compare(&f, label, ATOL, RTOL);
        fx_fixture_free(&f);
    }
}

/* ---- layout ---- */

static void test_layout_ops(void)
{
    int64_t d4[4] = {2, 3, 5, 7}, d2[2] = {13, 17}, d3[3] = {3, 13, 5};
    {
        fx_fixture f = fx_fixture_new("transpose");
        int x = input(&f, "x", 4, d4, -1, 1);
        static const int64_t perms[][4] = {{0, 2, 1, 3}, {3, 2, 1, 0}, {1, 0, 3, 2}, {0, 1, 3, 2}};
        for (int p = 0; p < 4; p++) {
            ir_attrs attrs = ir_attrs_for(IR_OP_TRANSPOSE);
            ir_attrs_ints(&attrs, "perm", perms[p], 4);
            ir_add_output(f.g, op1(&f, IR_OP_TRANSPOSE, x, &attrs));
        }
        int y = input(&f, "y", 2, d2, -1, 1);
        ir_attrs attrs = ir_attrs_for(IR_OP_TRANSPOSE);
        ir_attrs_ints(&attrs, "perm", (int64_t[]){1, 0}, 2);
        ir_add_output(f.g, op1(&f, IR_OP_TRANSPOSE, y, &attrs));
        compare(&f, "transpose", 0, 0);
        fx_fixture_free(&f);
    }
    {
        fx_fixture f = fx_fixture_new("slice");
        int x = input(&f, "x", 3, d3, -1, 1);
        static const int64_t args[][3] = {{1, 2, 9}, {-1, 1, 4}, {0, 2, 3}, {2, 0, 5}};
        for (int i = 0; i < 4; i++) {
            ir_attrs attrs = ir_attrs_for(IR_OP_SLICE);
            ir_attrs_int(&attrs, "axis", args[i][0]);
            ir_attrs_int(&attrs, "start", args[i][1]);
            ir_attrs_int(&attrs, "end", args[i][2]);
            ir_add_output(f.g, op1(&f, IR_OP_SLICE, x, &attrs));
        }
        compare(&f, "slice", 0, 0);
        fx_fixture_free(&f);
    }
    {
        fx_fixture f = fx_fixture_new("concat");
        int64_t a[3] = {2, 3, 5}, b[3] = {2, 4, 5}, c[3] = {2, 3, 17};
        int xa = input(&f, "a", 3, a, -1, 1), xb = input(&f, "b", 3, b, -1, 1), xc = input(&f, "c", 3, c, -1, 1);
        ir_attrs attrs = ir_attrs_for(IR_OP_CONCAT);
        ir_attrs_int(&attrs, "axis", 1);
        int ops[3] = {xa, xb, xa};
        ir_add_output(f.g, ir_add(f.g, IR_OP_CONCAT, NULL, ops, 3, &attrs, no_loc));
        ir_attrs_int(&attrs, "axis", -1);
        int ops2[2] = {xa, xc};
        ir_add_output(f.g, ir_add(f.g, IR_OP_CONCAT, NULL, ops2, 2, &attrs, no_loc));
        ir_attrs_int(&attrs, "axis", 0);
        int ops3[2] = {xa, xa};
        ir_add_output(f.g, ir_add(f.g, IR_OP_CONCAT, NULL, ops3, 2, &attrs, no_loc));
        compare(&f, "concat", 0, 0);
        fx_fixture_free(&f);
    }
    {
        fx_fixture f = fx_fixture_new("broadcast");
        int64_t a[2] = {3, 1}, b[1] = {17};
        int xa = input(&f, "a", 2, a, -1, 1), xb = input(&f, "b", 1, b, -1, 1);
        ir_attrs attrs = ir_attrs_for(IR_OP_BROADCAST);
        ir_attrs_ints(&attrs, "shape", (int64_t[]){2, 3, 17}, 3);
        ir_add_output(f.g, op1(&f, IR_OP_BROADCAST, xa, &attrs));
        ir_attrs_ints(&attrs, "shape", (int64_t[]){5, 17}, 2);
        ir_add_output(f.g, op1(&f, IR_OP_BROADCAST, xb, &attrs));
        compare(&f, "broadcast", 0, 0);
        fx_fixture_free(&f);
    }
    {
        fx_fixture f = fx_fixture_new("reshape");
        int x = input(&f, "x", 4, d4, -1, 1);
        ir_attrs attrs = ir_attrs_for(IR_OP_RESHAPE);
        ir_attrs_ints(&attrs, "shape", (int64_t[]){6, 35}, 2);
        int r = op1(&f, IR_OP_RESHAPE, x, &attrs);
        ir_add_output(f.g, r);
        ir_add_output(f.g, op1(&f, IR_OP_EXP, r, NULL));
        compare(&f, "reshape", ATOL, RTOL);
        fx_fixture_free(&f);
    }
}

static void test_reductions(void)
{
    static const struct {
        int naxes;
        int64_t axes[3];
        int keepdims;
    } cases[] = {{1, {-1}, 0}, {1, {0}, 0}, {1, {1}, 1}, {2, {0, 2}, 0}, {3, {0, 1, 2}, 0}, {2, {1, 2}, 1},
                 {2, {2, 0}, 1}};
    static const ir_op ops[] = {IR_OP_REDUCE_SUM, IR_OP_REDUCE_MEAN, IR_OP_REDUCE_MAX};
    int64_t dims[3] = {3, 17, 33};
    for (size_t k = 0; k < 3; k++) {
        for (size_t s = 0; s < sizeof cases / sizeof *cases; s++) {
            fx_fixture f = fx_fixture_new("reduce");
            int x = input(&f, "x", 3, dims, -1, 1);
            ir_attrs attrs = ir_attrs_for(ops[k]);
            ir_attrs_ints(&attrs, "axes", cases[s].axes, cases[s].naxes);
            ir_attrs_int(&attrs, "keepdims", cases[s].keepdims);
            ir_add_output(f.g, op1(&f, ops[k], x, &attrs));
            char label[64];
            snprintf(label, sizeof label, "%s case %zu", ir_op_get(ops[k])->name, s);
            compare(&f, label, ATOL * 10, RTOL);
            fx_fixture_free(&f);
        }
    }

    /* Column sums as in bias gradients: many rows, and fewer columns than
     * a vector or a partial last vector. */
    static const struct {
        int64_t dims[3];
        int64_t axis;
    } columns[] = {{{256, 40, 1}, 0}, {{5, 300, 2}, 1}, {{64, 16, 1}, 0}, {{7, 3, 1}, 0}};
    for (size_t k = 0; k < 3; k++) {
        for (size_t s = 0; s < sizeof columns / sizeof *columns; s++) {
            fx_fixture f = fx_fixture_new("reduce");
            int x = input(&f, "x", 3, columns[s].dims, -1, 1);
            ir_attrs attrs = ir_attrs_for(ops[k]);
            ir_attrs_ints(&attrs, "axes", &columns[s].axis, 1);
            ir_add_output(f.g, op1(&f, ops[k], x, &attrs));
            char label[64];
            snprintf(label, sizeof label, "%s columns case %zu", ir_op_get(ops[k])->name, s);
            compare(&f, label, ATOL * 16, RTOL);
            fx_fixture_free(&f);
        }
    }
}

/* ---- embedding and loss ---- */

static void test_embedding(void)
{
    static const ir_dtype id_types[] = {IR_I32, IR_I64};
    for (int k = 0; k < 2; k++) {
        fx_fixture f = fx_fixture_new("embedding");
        int64_t td[2] = {101, 17}, idd[2] = {2, 7};
        int table = leaf(&f, true, "table", IR_F32, 2, td, -1, 1);
        int ids = leaf(&f, false, "ids", id_types[k], 2, idd, 0, 101);
        ir_add_output(f.g, ir_add(f.g, IR_OP_EMBEDDING, "tok", (int[]){table, ids}, 2, NULL, no_loc));
        compare(&f, "embedding", 0, 0);
        fx_fixture_free(&f);
    }
}

static void test_embedding_out_of_range(void)
{
    fx_fixture f = fx_fixture_new("embedding");
    int64_t td[2] = {11, 16}, idd[1] = {5};
    int table = leaf(&f, true, "table", IR_F32, 2, td, -1, 1);
    int ids = leaf(&f, false, "ids", IR_I32, 1, idd, 0, 11);
    ir_add_output(f.g, ir_add(f.g, IR_OP_EMBEDDING, "tok_emb", (int[]){table, ids}, 2, NULL, no_loc));
    ((int32_t *)rt_weights_get(f.inputs, "ids")->data)[3] = 11;

    char *text = NULL;
    size_t len = 0;
    FILE *sink = open_memstream(&text, &len);
    ir_diag *d = ir_diag_new(sink);
    cg_module *m = cg_compile(f.g, NULL, d);
    CHECK(m != NULL);
    rt_tensor *out[1] = {NULL};
    int rc = m ? cg_run(m, f.weights, f.inputs, out, d) : 0;
    CHECK_EQ_INT(rc, -1);
    CHECK(out[0] == NULL);
    CHECK_EQ_INT(ir_diag_error_count(d), 1);
    fflush(sink);
    CHECK(text != NULL);
    if (text) {
        CHECK(strstr(text, "tok_emb") != NULL);
        CHECK(strstr(text, "id 11 at flat position 3") != NULL);
    }

    /* A valid id afterwards runs normally again. */
    ((int32_t *)rt_weights_get(f.inputs, "ids")->data)[3] = -1;
    CHECK_EQ_INT(m ? cg_run(m, f.weights, f.inputs, out, d) : 0, -1);
    ((int32_t *)rt_weights_get(f.inputs, "ids")->data)[3] = 10;
    CHECK_EQ_INT(m ? cg_run(m, f.weights, f.inputs, out, d) : -1, 0);
    rt_tensor_free(out[0]);
    cg_free(m);
    ir_diag_free(d);
    fclose(sink);
    free(text);
    fx_fixture_free(&f);
}

static void test_cross_entropy(void)
{
    static const struct {
        int rank;
        int64_t dims[3];
        double ignored_fraction;
    } cases[] = {{3, {2, 7, 101}, 0.3}, {2, {1, 17}, 0}, {2, {5, 1000}, 0}, {2, {3, 9}, 1.0}};
    for (size_t s = 0; s < sizeof cases / sizeof *cases; s++) {
        fx_fixture f = fx_fixture_new("xent");
        int64_t v = cases[s].dims[cases[s].rank - 1];
        int logits = input(&f, "logits", cases[s].rank, cases[s].dims, -5, 5);
        int targets = leaf(&f, false, "targets", IR_I32, cases[s].rank - 1, cases[s].dims, 0, (double)v);
        rt_tensor *t = rt_weights_get(f.inputs, "targets");
        for (int64_t i = 0; i < rt_tensor_numel(t); i++)
            if (fx_uniform(&rng, 0, 1) < cases[s].ignored_fraction)
                ((int32_t *)t->data)[i] = -1;
        ir_add_output(f.g, op2(&f, IR_OP_CROSS_ENTROPY, logits, targets, NULL));
        char label[64];
        snprintf(label, sizeof label, "cross_entropy case %zu", s);
        compare(&f, label, ATOL, RTOL);
        fx_fixture_free(&f);
    }
}

static void test_cross_entropy_bad_target(void)
{
    fx_fixture f = fx_fixture_new("xent");
    int64_t ld[2] = {4, 9};
    int logits = input(&f, "logits", 2, ld, -1, 1);
    int targets = leaf(&f, false, "targets", IR_I32, 1, ld, 0, 9);
    ((int32_t *)rt_weights_get(f.inputs, "targets")->data)[2] = 9;
    ir_add_output(f.g, ir_add(f.g, IR_OP_CROSS_ENTROPY, "loss", (int[]){logits, targets}, 2, NULL, no_loc));
    FILE *sink = tmpfile();
    ir_diag *d = ir_diag_new(sink);
    cg_module *m = cg_compile(f.g, NULL, d);
    rt_tensor *out[1] = {NULL};
    CHECK_EQ_INT(m ? cg_run(m, f.weights, f.inputs, out, d) : 0, -1);
    CHECK_EQ_INT(ir_diag_error_count(d), 1);
    cg_free(m);
    ir_diag_free(d);
    fclose(sink);
    fx_fixture_free(&f);
}

static void test_missing_input(void)
{
    fx_fixture f = fx_fixture_new("missing");
    int64_t dims[1] = {5};
    int x = input(&f, "x", 1, dims, -1, 1);
    ir_add_output(f.g, op1(&f, IR_OP_EXP, x, NULL));
    FILE *sink = tmpfile();
    ir_diag *d = ir_diag_new(sink);
    cg_module *m = cg_compile(f.g, NULL, d);
    rt_tensor *out[1] = {NULL};
    rt_weights *empty = rt_weights_new();
    CHECK_EQ_INT(m ? cg_run(m, NULL, empty, out, d) : 0, -1);
    CHECK_EQ_INT(ir_diag_error_count(d), 1);
    rt_weights_set(empty, "x", fx_uniform_tensor(&rng, IR_F32, 1, (int64_t[]){6}, 0, 1));
    CHECK_EQ_INT(m ? cg_run(m, NULL, empty, out, d) : 0, -1);
    CHECK_EQ_INT(ir_diag_error_count(d), 2);
    rt_weights_free(empty);
    cg_free(m);
    ir_diag_free(d);
    fclose(sink);
    fx_fixture_free(&f);
}

/* Ops large enough (over 2^17 elements) to run on the thread pool. */
static void test_large_ops_parallel(void)
{
    fx_fixture f = fx_fixture_new("large");
    int64_t xd[2] = {300, 1000}, bd[1] = {1000}, sd[2] = {256, 1024}, td[3] = {64, 64, 64};
    int x = input(&f, "x", 2, xd, -3, 3);
    int b = input(&f, "b", 1, bd, -3, 3);
    ir_add_output(f.g, op2(&f, IR_OP_ADD, x, b, NULL));
    ir_add_output(f.g, op1(&f, IR_OP_GELU, x, NULL));
    ir_add_output(f.g, op1(&f, IR_OP_EXP, x, NULL));
    int s = input(&f, "s", 2, sd, -5, 5);
    ir_add_output(f.g, op1(&f, IR_OP_SOFTMAX, s, NULL));
    int64_t c = 1024;
    int ln[3] = {s, leaf(&f, true, "w", IR_F32, 1, &c, 0.5, 1.5), leaf(&f, true, "lb", IR_F32, 1, &c, -1, 1)};
    ir_add_output(f.g, ir_add(f.g, IR_OP_LAYERNORM, "ln", ln, 3, NULL, no_loc));
    ir_attrs red = ir_attrs_for(IR_OP_REDUCE_SUM);
    ir_attrs_ints(&red, "axes", (int64_t[]){-1}, 1);
    ir_add_output(f.g, op1(&f, IR_OP_REDUCE_SUM, s, &red));
    int t = input(&f, "t", 3, td, -1, 1);
    ir_attrs perm = ir_attrs_for(IR_OP_TRANSPOSE);
    ir_attrs_ints(&perm, "perm", (int64_t[]){2, 0, 1}, 3);
    ir_add_output(f.g, op1(&f, IR_OP_TRANSPOSE, t, &perm));
    compare(&f, "large ops", ATOL * 10, RTOL);
    fx_fixture_free(&f);
}

/* With profile set, each run-time value gets a non-negative time and the
 * leaves get none. */
static void test_profile_times(void)
{
    fx_fixture f = fx_fixture_new("profile");
    int64_t dims[2] = {64, 256};
    int x = input(&f, "x", 2, dims, -1, 1);
    int y = op1(&f, IR_OP_EXP, x, NULL);
    int z = op1(&f, IR_OP_SOFTMAX, y, NULL);
    ir_add_output(f.g, z);
    cg_options o = cg_default_options();
    o.profile = 1;
    cg_module *m = cg_compile(f.g, &o, f.diag);
    CHECK(m != NULL);
    rt_tensor *out[1] = {NULL};
    CHECK_EQ_INT(m ? cg_run(m, f.weights, f.inputs, out, f.diag) : -1, 0);
    const double *seconds = m ? cg_profile_seconds(m) : NULL;
    CHECK(seconds != NULL);
    if (seconds) {
        CHECK(seconds[x] == 0.0);
        CHECK(seconds[y] > 0.0);
        CHECK(seconds[z] > 0.0);
    }
    rt_tensor_free(out[0]);
    cg_free(m);

    cg_module *plain = cg_compile(f.g, NULL, f.diag);
    CHECK(plain != NULL);
    if (plain)
        CHECK(cg_profile_seconds(plain) == NULL);
    cg_free(plain);
    fx_fixture_free(&f);
}

/* ---- whole models ---- */

static void test_gpt2(int64_t layers, int64_t c, int64_t nh, int64_t vocab, int64_t t, int64_t b, int threads)
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
    /* Layernorm gains and biases of exactly ones and zeros would hide errors. */
    fx_set_uniform_gpt2_weights(&rng, f.g, 1.0, f.weights);
    int64_t dims[2] = {b, t};
    rt_weights_set(f.inputs, "idx", fx_uniform_tensor(&rng, IR_I32, 2, dims, 0, (double)vocab));
    rt_weights_set(f.inputs, "targets", fx_uniform_tensor(&rng, IR_I32, 2, dims, 0, (double)vocab));
    char label[96];
    snprintf(label, sizeof label, "gpt2 L=%lld C=%lld NH=%lld V=%lld T=%lld B=%lld threads=%d", (long long)layers,
             (long long)c, (long long)nh, (long long)vocab, (long long)t, (long long)b, threads);
    compare_threads(&f, label, 1e-4, 1e-3, threads);
    fx_fixture_free(&f);
}

/* Text output: optimized LLVM IR with both entry points and vector FMAs,
 * and host assembly with FMA instructions. */
static void test_emit_text(void)
{
    fx_fixture f = fx_fixture_new("text");
    int64_t xd[2] = {9, 40}, wd[2] = {40, 50};
    int x = input(&f, "x", 2, xd, -1, 1);
    int w = leaf(&f, true, "w", IR_F32, 2, wd, -1, 1);
    ir_add_output(f.g, op1(&f, IR_OP_GELU, ir_add(f.g, IR_OP_LINEAR, "y", (int[]){x, w}, 2, NULL, no_loc), NULL));
    char *ll = cg_emit_llvm(f.g, NULL, f.diag);
    CHECK(ll != NULL);
    if (ll) {
        CHECK(strstr(ll, "i32 @qc_run(ptr") != NULL);
        CHECK(strstr(ll, "i32 @qc_bind(ptr") != NULL);
        CHECK(strstr(ll, "@llvm.fma.v") != NULL);
    }
    free(ll);
    char *s = cg_emit_asm(f.g, NULL, f.diag);
    CHECK(s != NULL);
    if (s) {
        CHECK(strstr(s, "qc_run:") != NULL);
        CHECK(strstr(s, "vfmadd") != NULL);
    }
    free(s);
    fx_fixture_free(&f);
}

/* Reruns a selection of the op tests for other targets (vector widths 8
 * and 4 give other GEMM tiles) and without optimization. */
static void test_other_targets(void)
{
    static const cg_options variants[] = {{2, "haswell", 3, 0, 0}, {2, "x86-64", 3, 0, 0}, {2, NULL, 0, 0, 0},
                                          {1, NULL, 2, 1, 0}};
    for (size_t k = 0; k < sizeof variants / sizeof *variants; k++) {
        test_options = variants[k];
        test_unary_ops();
        test_matmul_2d();
        test_matmul_batched();
        test_linear();
        test_layernorm();
        test_softmax();
        test_cross_entropy();
        test_gpt2(2, 48, 3, 101, 17, 2, variants[k].threads);
    }
    test_options = (cg_options){2, NULL, 3, 0, 0};
}

int main(void)
{
    test_binary_ops();
    test_unary_ops();
    test_math_edge_values();
    test_casts();
    test_f16_elementwise();
    test_f16_graph();
    test_const();
    test_const_without_weights();
    test_matmul_2d();
    test_matmul_batched();
    test_linear();
    test_layernorm();
    test_softmax();
    test_causal_mask_softmax();
    test_layout_ops();
    test_reductions();
    test_embedding();
    test_embedding_out_of_range();
    test_cross_entropy();
    test_cross_entropy_bad_target();
    test_missing_input();
    test_large_ops_parallel();
    test_profile_times();
    test_gpt2(2, 48, 3, 101, 17, 2, 2);
    test_gpt2(1, 64, 4, 257, 33, 1, 1);
    test_gpt2(3, 96, 2, 65, 9, 3, 2);
    test_emit_text();
    test_other_targets();
    return check_finish();
}
