/* Tests for the reference interpreter: every op on small inputs against
 * values computed by hand or by an independent formula here, a hand-built
 * one-layer GPT-2 checked against a direct attention computation, and the
 * exact text of each runtime error. */
#include "runtime/interp.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

static const ir_loc no_loc = {NULL, 0, 0, 0};

/* ---------------------------------------------------------------------- */
/* Graph and tensor helpers                                               */
/* ---------------------------------------------------------------------- */

/* One graph under test with its weight and input maps. Builder errors go to
 * stderr, and runtime errors go to `diag`, which tests may redirect. */
typedef struct fixture {
    ir_diag *build_diag;
    ir_diag *diag;
    ir_graph *g;
    rt_weights *weights;
    rt_weights *inputs;
} fixture;

static void fixture_begin(fixture *f)
{
    f->build_diag = ir_diag_new(stderr);
    f->diag = f->build_diag;
    f->g = ir_graph_new("test", f->build_diag);
    f->weights = rt_weights_new();
    f->inputs = rt_weights_new();
}

static void fixture_end(fixture *f)
{
    ir_graph_free(f->g);
    rt_weights_free(f->weights);
    rt_weights_free(f->inputs);
    ir_diag_free(f->build_diag);
}

static ir_type make_type(ir_dtype dtype, int rank, const int64_t *dims)
{
    ir_type t = {dtype, rank, {0}};
    for (int i = 0; i < rank; i++)
        t.dims[i] = dims[i];
    return t;
}

static rt_tensor *make_f32(int rank, const int64_t *dims, const float *data)
{
    rt_tensor *t = rt_tensor_new(IR_F32, rank, dims);
    if (data)
        memcpy(t->data, data, rt_tensor_nbytes(t));
    return t;
}

static rt_tensor *make_i32(int rank, const int64_t *dims, const int32_t *data)
{
    rt_tensor *t = rt_tensor_new(IR_I32, rank, dims);
    memcpy(t->data, data, rt_tensor_nbytes(t));
    return t;
}

/* Adds an f32 input value named `name` and its tensor. */
static int input_f32(fixture *f, const char *name, int rank, const int64_t *dims, const float *data)
{
    int id = ir_add_leaf(f->g, IR_OP_INPUT, name, make_type(IR_F32, rank, dims), NULL, no_loc);
    CHECK(id >= 0);
    rt_weights_set(f->inputs, name, make_f32(rank, dims, data));
    return id;
}

static int input_i32(fixture *f, const char *name, int rank, const int64_t *dims, const int32_t *data)
{
    int id = ir_add_leaf(f->g, IR_OP_INPUT, name, make_type(IR_I32, rank, dims), NULL, no_loc);
    CHECK(id >= 0);
    rt_weights_set(f->inputs, name, make_i32(rank, dims, data));
    return id;
}

/* Adds an f32 param named `name` and, when data is not NULL, its weight. */
static int param_f32(fixture *f, const char *name, int rank, const int64_t *dims, const float *data)
{
    int id = ir_add_leaf(f->g, IR_OP_PARAM, name, make_type(IR_F32, rank, dims), NULL, no_loc);
    CHECK(id >= 0);
    if (data)
        rt_weights_set(f->weights, name, make_f32(rank, dims, data));
    return id;
}

static int add_op(fixture *f, ir_op op, const char *name, const int *operands, int nops, ir_attrs *attrs)
{
    int id = ir_add(f->g, op, name, operands, nops, attrs, no_loc);
    if (attrs)
        ir_attrs_clear(attrs);
    CHECK(id >= 0);
    return id;
}

static int unary(fixture *f, ir_op op, int x)
{
    return add_op(f, op, NULL, &x, 1, NULL);
}

static int binary(fixture *f, ir_op op, int a, int b)
{
    int operands[2] = {a, b};
    return add_op(f, op, NULL, operands, 2, NULL);
}

static int unary_int_attr(fixture *f, ir_op op, int x, const char *attr, int64_t value)
{
    ir_attrs attrs = ir_attrs_for(op);
    ir_attrs_int(&attrs, attr, value);
    return add_op(f, op, NULL, &x, 1, &attrs);
}

static int unary_ints_attr(fixture *f, ir_op op, int x, const char *attr, const int64_t *values, int n)
{
    ir_attrs attrs = ir_attrs_for(op);
    ir_attrs_ints(&attrs, attr, values, n);
    return add_op(f, op, NULL, &x, 1, &attrs);
}

static int reduce(fixture *f, ir_op op, int x, const int64_t *axes, int naxes, int keepdims)
{
    ir_attrs attrs = ir_attrs_for(op);
    ir_attrs_ints(&attrs, "axes", axes, naxes);
    ir_attrs_int(&attrs, "keepdims", keepdims);
    return add_op(f, op, NULL, &x, 1, &attrs);
}

static int slice(fixture *f, int x, int64_t axis, int64_t start, int64_t end)
{
    ir_attrs attrs = ir_attrs_for(IR_OP_SLICE);
    ir_attrs_int(&attrs, "axis", axis);
    ir_attrs_int(&attrs, "start", start);
    ir_attrs_int(&attrs, "end", end);
    return add_op(f, IR_OP_SLICE, NULL, &x, 1, &attrs);
}

static int cast(fixture *f, int x, const char *to)
{
    ir_attrs attrs = ir_attrs_for(IR_OP_CAST);
    ir_attrs_str(&attrs, "to", to);
    return add_op(f, IR_OP_CAST, NULL, &x, 1, &attrs);
}

/* Runs f's graph with `value` as its only output; returns the output tensor
 * (owned by the caller) or NULL after a failed check. */
static rt_tensor *run_value(fixture *f, int value)
{
    f->g->noutputs = 0;
    ir_add_output(f->g, value);
    rt_tensor *out = NULL;
    int rc = rt_interp_run(f->g, f->weights, f->inputs, &out, f->diag);
    CHECK_EQ_INT(rc, 0);
    return out;
}

/* Checks that t has dtype f32, the given shape and the given elements. */
static void check_f32(const rt_tensor *t, int rank, const int64_t *dims, const float *expected, double atol)
{
    CHECK(t != NULL);
    if (!t)
        return;
    CHECK_EQ_INT(t->dtype, IR_F32);
    CHECK_EQ_INT(t->rank, rank);
    for (int i = 0; i < rank && i < t->rank; i++)
        CHECK_EQ_INT(t->dims[i], dims[i]);
    int64_t n = rt_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        float actual = ((const float *)t->data)[i];
        if (isinf(expected[i]))
            CHECK(actual == expected[i]);
        else
            CHECK_CLOSE(actual, expected[i], atol, 0.0);
    }
}

/* Checks the first n elements of f32 tensor t. */
static void check_values(const rt_tensor *t, int n, const float *expected, double atol)
{
    CHECK(t != NULL);
    if (!t)
        return;
    CHECK_EQ_INT(t->dtype, IR_F32);
    CHECK(rt_tensor_numel(t) >= n);
    if (t->dtype != IR_F32 || rt_tensor_numel(t) < n)
        return;
    for (int i = 0; i < n; i++)
        CHECK_CLOSE(((const float *)t->data)[i], expected[i], atol, 0.0);
}

/* ---------------------------------------------------------------------- */
/* Diagnostics capture                                                    */
/* ---------------------------------------------------------------------- */

typedef struct captured {
    char *text;
    size_t size;
    FILE *stream;
} captured;

static void capture_start(captured *c, fixture *f)
{
    c->text = NULL;
    c->size = 0;
    c->stream = open_memstream(&c->text, &c->size);
    f->diag = ir_diag_new(c->stream);
}

/* Checks the captured text, then restores f's stderr sink. */
static void capture_check(captured *c, fixture *f, const char *expected)
{
    fflush(c->stream);
    const char *actual = c->text ? c->text : "";
    if (strcmp(actual, expected) == 0) {
        check_passed++;
    } else {
        check_failed++;
        fprintf(stderr, "diagnostic differs\n  expected: %s  actual:   %s\n", expected, actual);
    }
    ir_diag_free(f->diag);
    f->diag = f->build_diag;
    fclose(c->stream);
    free(c->text);
}

/* Runs f's graph with `value` as output, expecting failure with the
 * diagnostic `expected`. */
static void check_run_error(fixture *f, int value, const char *expected)
{
    captured c;
    capture_start(&c, f);
    f->g->noutputs = 0;
    ir_add_output(f->g, value);
    static rt_tensor sentinel;
    rt_tensor *out = &sentinel; /* a failed run must reset it to NULL */
    int rc = rt_interp_run(f->g, f->weights, f->inputs, &out, f->diag);
    CHECK_EQ_INT(rc, -1);
    CHECK(out == NULL);
    capture_check(&c, f, expected);
}

/* ---------------------------------------------------------------------- */
/* Elementwise ops                                                        */
/* ---------------------------------------------------------------------- */

static void test_add_broadcast(void)
{
    fixture f;
    fixture_begin(&f);
    int a = input_f32(&f, "a", 2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
    int b = input_f32(&f, "b", 1, (int64_t[]){3}, (float[]){10, 20, 30});
    rt_tensor *y = run_value(&f, binary(&f, IR_OP_ADD, a, b));
    check_f32(y, 2, (int64_t[]){2, 3}, (float[]){11, 22, 33, 14, 25, 36}, 0);
    rt_tensor_free(y);

    /* [2,1] + [1,3] broadcasts both operands to [2,3]. */
    int col = input_f32(&f, "col", 2, (int64_t[]){2, 1}, (float[]){100, 200});
    int row = input_f32(&f, "row", 2, (int64_t[]){1, 3}, (float[]){1, 2, 3});
    y = run_value(&f, binary(&f, IR_OP_ADD, col, row));
    check_f32(y, 2, (int64_t[]){2, 3}, (float[]){101, 102, 103, 201, 202, 203}, 0);
    rt_tensor_free(y);
    fixture_end(&f);
}

static void test_binary_f32_ops(void)
{
    fixture f;
    fixture_begin(&f);
    int a = input_f32(&f, "a", 1, (int64_t[]){4}, (float[]){1, -2, 6, NAN});
    int b = input_f32(&f, "b", 1, (int64_t[]){4}, (float[]){4, 8, -3, 1});

    rt_tensor *y = run_value(&f, binary(&f, IR_OP_SUB, a, b));
    check_values(y, 3, (float[]){-3, -10, 9}, 0);
    rt_tensor_free(y);

    y = run_value(&f, binary(&f, IR_OP_MUL, a, b));
    check_values(y, 3, (float[]){4, -16, -18}, 0);
    rt_tensor_free(y);

    y = run_value(&f, binary(&f, IR_OP_DIV, a, b));
    check_values(y, 3, (float[]){0.25f, -0.25f, -2}, 0);
    rt_tensor_free(y);

    /* maximum and minimum propagate NaN (element 3). */
    y = run_value(&f, binary(&f, IR_OP_MAXIMUM, a, b));
    check_values(y, 3, (float[]){4, 8, 6}, 0);
    CHECK(isnan(((float *)y->data)[3]));
    rt_tensor_free(y);

    y = run_value(&f, binary(&f, IR_OP_MINIMUM, a, b));
    check_values(y, 3, (float[]){1, -2, -3}, 0);
    CHECK(isnan(((float *)y->data)[3]));
    rt_tensor_free(y);

    /* maximum(-0, +0) is +0 and minimum is -0. */
    int neg_zero = input_f32(&f, "neg_zero", 1, (int64_t[]){1}, (float[]){-0.0f});
    int pos_zero = input_f32(&f, "pos_zero", 1, (int64_t[]){1}, (float[]){0.0f});
    y = run_value(&f, binary(&f, IR_OP_MAXIMUM, neg_zero, pos_zero));
    CHECK(!signbit(((float *)y->data)[0]));
    rt_tensor_free(y);
    y = run_value(&f, binary(&f, IR_OP_MINIMUM, pos_zero, neg_zero));
    CHECK(signbit(((float *)y->data)[0]));
    rt_tensor_free(y);
    fixture_end(&f);
}

static void test_binary_integer_ops(void)
{
    fixture f;
    fixture_begin(&f);
    int a = input_i32(&f, "a", 1, (int64_t[]){4}, (int32_t[]){-7, 7, INT32_MAX, INT32_MIN});
    int b = input_i32(&f, "b", 1, (int64_t[]){4}, (int32_t[]){2, -2, 1, -1});

    rt_tensor *y = run_value(&f, binary(&f, IR_OP_DIV, a, b));
    const int32_t *q = y->data;
    CHECK_EQ_INT(q[0], -3); /* truncates toward zero */
    CHECK_EQ_INT(q[1], -3);
    CHECK_EQ_INT(q[2], INT32_MAX);
    CHECK_EQ_INT(q[3], INT32_MIN); /* MIN / -1 wraps */
    rt_tensor_free(y);

    y = run_value(&f, binary(&f, IR_OP_ADD, a, b));
    const int32_t *s = y->data;
    CHECK_EQ_INT(s[0], -5);
    CHECK_EQ_INT(s[2], INT32_MIN); /* MAX + 1 wraps */
    CHECK_EQ_INT(s[3], INT32_MAX); /* MIN - 1 wraps */
    rt_tensor_free(y);

    y = run_value(&f, binary(&f, IR_OP_MAXIMUM, a, b));
    const int32_t *m = y->data;
    CHECK_EQ_INT(m[0], 2);
    CHECK_EQ_INT(m[1], 7);
    CHECK_EQ_INT(m[3], -1);
    rt_tensor_free(y);

    /* i8 add wraps around. */
    int a8 = cast(&f, a, "i8");
    int sum8 = binary(&f, IR_OP_ADD, a8, a8);
    y = run_value(&f, sum8);
    const int8_t *s8 = y->data;
    CHECK_EQ_INT(s8[0], -14);
    CHECK_EQ_INT(s8[2], -2); /* 127 + 127 = 254 wraps to -2 */
    rt_tensor_free(y);
    fixture_end(&f);
}

static void test_integer_division_by_zero(void)
{
    fixture f;
    fixture_begin(&f);
    int a = input_i32(&f, "a", 2, (int64_t[]){2, 2}, (int32_t[]){1, 2, 3, 4});
    int b = input_i32(&f, "b", 2, (int64_t[]){2, 2}, (int32_t[]){1, 1, 1, 0});
    int operands[2] = {a, b};
    int q = add_op(&f, IR_OP_DIV, "quotient", operands, 2, NULL);
    check_run_error(&f, q, "quadc: error: div %quotient: integer division by zero at element [1,1]\n");
    fixture_end(&f);
}

static double gelu_reference(double x)
{
    const double pi = acos(-1.0);
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / pi) * (x + 0.044715 * pow(x, 3))));
}

static void test_unary_ops(void)
{
    fixture f;
    fixture_begin(&f);
    int x = input_f32(&f, "x", 1, (int64_t[]){3}, (float[]){1, -1, 4});

    rt_tensor *y = run_value(&f, unary(&f, IR_OP_GELU, x));
    check_f32(y, 1, (int64_t[]){3}, (float[]){0.8411920f, -0.1588080f, (float)gelu_reference(4)}, 1e-6);
    rt_tensor_free(y);

    y = run_value(&f, unary(&f, IR_OP_NEG, x));
    check_f32(y, 1, (int64_t[]){3}, (float[]){-1, 1, -4}, 0);
    rt_tensor_free(y);

    y = run_value(&f, unary(&f, IR_OP_EXP, x));
    check_f32(y, 1, (int64_t[]){3}, (float[]){(float)exp(1), (float)exp(-1), (float)exp(4)}, 1e-6);
    rt_tensor_free(y);

    y = run_value(&f, unary(&f, IR_OP_ABS, x));
    check_f32(y, 1, (int64_t[]){3}, (float[]){1, 1, 4}, 0);
    rt_tensor_free(y);

    y = run_value(&f, unary(&f, IR_OP_RELU, x));
    check_f32(y, 1, (int64_t[]){3}, (float[]){1, 0, 4}, 0);
    rt_tensor_free(y);

    y = run_value(&f, unary(&f, IR_OP_TANH, x));
    check_f32(y, 1, (int64_t[]){3}, (float[]){0.76159416f, -0.76159416f, 0.99932930f}, 1e-7);
    rt_tensor_free(y);

    int positive = input_f32(&f, "positive", 1, (int64_t[]){3}, (float[]){1, 4, 0.25f});
    y = run_value(&f, unary(&f, IR_OP_SQRT, positive));
    check_f32(y, 1, (int64_t[]){3}, (float[]){1, 2, 0.5f}, 0);
    rt_tensor_free(y);

    y = run_value(&f, unary(&f, IR_OP_RSQRT, positive));
    check_f32(y, 1, (int64_t[]){3}, (float[]){1, 0.5f, 2}, 0);
    rt_tensor_free(y);

    y = run_value(&f, unary(&f, IR_OP_LOG, positive));
    check_f32(y, 1, (int64_t[]){3}, (float[]){0, (float)log(4), (float)log(0.25)}, 1e-7);
    rt_tensor_free(y);

    ir_attrs attrs = ir_attrs_for(IR_OP_SCALE);
    ir_attrs_float(&attrs, "factor", 0.5);
    y = run_value(&f, add_op(&f, IR_OP_SCALE, NULL, &x, 1, &attrs));
    check_f32(y, 1, (int64_t[]){3}, (float[]){0.5f, -0.5f, 2}, 0);
    rt_tensor_free(y);
    fixture_end(&f);
}

static void test_cast_rounding_and_saturation(void)
{
    fixture f;
    fixture_begin(&f);
    int x = input_f32(&f, "x", 1, (int64_t[]){8}, (float[]){2.5f, 3.5f, -2.5f, 300, -300, NAN, 255.5f, -0.4f});

    rt_tensor *y = run_value(&f, cast(&f, x, "i8"));
    CHECK_EQ_INT(y->dtype, IR_I8);
    const int8_t *i8 = y->data;
    int8_t expected_i8[8] = {2, 4, -2, 127, -128, 0, 127, 0};
    for (int i = 0; i < 8; i++)
        CHECK_EQ_INT(i8[i], expected_i8[i]);
    rt_tensor_free(y);

    y = run_value(&f, cast(&f, x, "u8"));
    const uint8_t *u8 = y->data;
    uint8_t expected_u8[8] = {2, 4, 0, 255, 0, 0, 255, 0}; /* 255.5 rounds to 256, saturates */
    for (int i = 0; i < 8; i++)
        CHECK_EQ_INT(u8[i], expected_u8[i]);
    rt_tensor_free(y);

    y = run_value(&f, cast(&f, x, "i32"));
    const int32_t *i32 = y->data;
    CHECK_EQ_INT(i32[3], 300);
    CHECK_EQ_INT(i32[4], -300);
    CHECK_EQ_INT(i32[6], 256);
    rt_tensor_free(y);

    /* Integer to integer saturates; integer to float is exact here. */
    int ints = input_i32(&f, "ints", 1, (int64_t[]){3}, (int32_t[]){1000, -1000, 16777216});
    y = run_value(&f, cast(&f, ints, "i8"));
    CHECK_EQ_INT(((int8_t *)y->data)[0], 127);
    CHECK_EQ_INT(((int8_t *)y->data)[1], -128);
    rt_tensor_free(y);
    y = run_value(&f, cast(&f, ints, "f32"));
    check_f32(y, 1, (int64_t[]){3}, (float[]){1000, -1000, 16777216}, 0);
    rt_tensor_free(y);

    /* 1 + 2^-11 lies halfway between two f16 values and rounds to the even
     * one, 1.0; 1 + 3 * 2^-11 rounds up to 1 + 2^-9. */
    int halfway = input_f32(&f, "halfway", 1, (int64_t[]){2}, (float[]){1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f});
    y = run_value(&f, cast(&f, halfway, "f16"));
    CHECK_EQ_INT(y->dtype, IR_F16);
    CHECK(rt_f16_to_f32(((uint16_t *)y->data)[0]) == 1.0f);
    CHECK(rt_f16_to_f32(((uint16_t *)y->data)[1]) == 1.0f + 0x1p-9f);
    rt_tensor_free(y);
    y = run_value(&f, cast(&f, halfway, "bf16"));
    CHECK(rt_bf16_to_f32(((uint16_t *)y->data)[0]) == 1.0f);
    rt_tensor_free(y);
    fixture_end(&f);
}

static void test_f16_arithmetic_rounds_once(void)
{
    fixture f;
    fixture_begin(&f);
    /* f16 operands widen to f32, and the f32 sum 1 + 2^-11 rounds to the f16
     * value 1.0 once, at the end. */
    int a = input_f32(&f, "a", 1, (int64_t[]){2}, (float[]){1.0f, 2048.0f});
    int b = input_f32(&f, "b", 1, (int64_t[]){2}, (float[]){0x1p-11f, 1.0f});
    int sum = binary(&f, IR_OP_ADD, cast(&f, a, "f16"), cast(&f, b, "f16"));
    rt_tensor *y = run_value(&f, sum);
    CHECK_EQ_INT(y->dtype, IR_F16);
    CHECK(rt_f16_to_f32(((uint16_t *)y->data)[0]) == 1.0f);
    CHECK(rt_f16_to_f32(((uint16_t *)y->data)[1]) == 2048.0f); /* 2049 ties to even */
    rt_tensor_free(y);
    fixture_end(&f);
}

static void test_const_splat(void)
{
    fixture f;
    fixture_begin(&f);
    ir_attrs attrs = ir_attrs_for(IR_OP_CONST);
    ir_attrs_float(&attrs, "value", 1.5);
    int c = ir_add_leaf(f.g, IR_OP_CONST, "c", make_type(IR_F32, 2, (int64_t[]){2, 2}), &attrs, no_loc);
    rt_tensor *y = run_value(&f, c);
    check_f32(y, 2, (int64_t[]){2, 2}, (float[]){1.5f, 1.5f, 1.5f, 1.5f}, 0);
    rt_tensor_free(y);

    /* An integer const rounds to nearest even: 1.5 -> 2. */
    int ci = ir_add_leaf(f.g, IR_OP_CONST, "ci", make_type(IR_I32, 1, (int64_t[]){2}), &attrs, no_loc);
    y = run_value(&f, ci);
    CHECK_EQ_INT(((int32_t *)y->data)[0], 2);
    CHECK_EQ_INT(((int32_t *)y->data)[1], 2);
    rt_tensor_free(y);
    ir_attrs_clear(&attrs);
    fixture_end(&f);
}

/* ---------------------------------------------------------------------- */
/* Linear algebra and normalization                                       */
/* ---------------------------------------------------------------------- */

static void test_matmul(void)
{
    fixture f;
    fixture_begin(&f);
    int a = input_f32(&f, "a", 2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
    int b = input_f32(&f, "b", 2, (int64_t[]){3, 2}, (float[]){7, 8, 9, 10, 11, 12});
    int bt = input_f32(&f, "bt", 2, (int64_t[]){2, 3}, (float[]){7, 9, 11, 8, 10, 12});

    rt_tensor *y = run_value(&f, binary(&f, IR_OP_MATMUL, a, b));
    check_f32(y, 2, (int64_t[]){2, 2}, (float[]){58, 64, 139, 154}, 0);
    rt_tensor_free(y);

    int operands[2] = {a, bt};
    ir_attrs attrs = ir_attrs_for(IR_OP_MATMUL);
    ir_attrs_int(&attrs, "transpose_b", 1);
    y = run_value(&f, add_op(&f, IR_OP_MATMUL, NULL, operands, 2, &attrs));
    check_f32(y, 2, (int64_t[]){2, 2}, (float[]){58, 64, 139, 154}, 0);
    rt_tensor_free(y);

    /* transpose_a reads a^T from at[3,2], alone and with transpose_b. */
    int at = input_f32(&f, "at", 2, (int64_t[]){3, 2}, (float[]){1, 4, 2, 5, 3, 6});
    int at_b[2] = {at, b}, at_bt[2] = {at, bt};
    attrs = ir_attrs_for(IR_OP_MATMUL);
    ir_attrs_int(&attrs, "transpose_a", 1);
    y = run_value(&f, add_op(&f, IR_OP_MATMUL, NULL, at_b, 2, &attrs));
    check_f32(y, 2, (int64_t[]){2, 2}, (float[]){58, 64, 139, 154}, 0);
    rt_tensor_free(y);
    ir_attrs_int(&attrs, "transpose_b", 1);
    y = run_value(&f, add_op(&f, IR_OP_MATMUL, NULL, at_bt, 2, &attrs));
    check_f32(y, 2, (int64_t[]){2, 2}, (float[]){58, 64, 139, 154}, 0);
    rt_tensor_free(y);

    /* Batch dims broadcast: a[2,2,3] x b[1,3,2] uses b for both batches. */
    int a3 = input_f32(&f, "a3", 3, (int64_t[]){2, 2, 3}, (float[]){1, 2, 3, 4, 5, 6, 1, 0, 0, 0, 0, 1});
    int b3 = input_f32(&f, "b3", 3, (int64_t[]){1, 3, 2}, (float[]){7, 8, 9, 10, 11, 12});
    y = run_value(&f, binary(&f, IR_OP_MATMUL, a3, b3));
    check_f32(y, 3, (int64_t[]){2, 2, 2}, (float[]){58, 64, 139, 154, 7, 8, 11, 12}, 0);
    rt_tensor_free(y);
    fixture_end(&f);
}

static void test_linear_with_bias(void)
{
    fixture f;
    fixture_begin(&f);
    int x = input_f32(&f, "x", 2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
    int w = param_f32(&f, "w", 2, (int64_t[]){3, 2}, (float[]){7, 8, 9, 10, 11, 12});
    int bias = param_f32(&f, "bias", 1, (int64_t[]){2}, (float[]){0.5f, -1});
    int operands[3] = {x, w, bias};
    rt_tensor *y = run_value(&f, add_op(&f, IR_OP_LINEAR, NULL, operands, 3, NULL));
    check_f32(y, 2, (int64_t[]){2, 2}, (float[]){58.5f, 63, 139.5f, 153}, 0);
    rt_tensor_free(y);

    y = run_value(&f, add_op(&f, IR_OP_LINEAR, NULL, operands, 2, NULL));
    check_f32(y, 2, (int64_t[]){2, 2}, (float[]){58, 64, 139, 154}, 0);
    rt_tensor_free(y);
    fixture_end(&f);
}

static void test_layernorm_known_row(void)
{
    fixture f;
    fixture_begin(&f);
    /* Row [1,2,3,4]: mean 2.5, biased variance 1.25. */
    int x = input_f32(&f, "x", 2, (int64_t[]){1, 4}, (float[]){1, 2, 3, 4});
    int gamma = param_f32(&f, "gamma", 1, (int64_t[]){4}, (float[]){1, 2, 1, 1});
    int beta = param_f32(&f, "beta", 1, (int64_t[]){4}, (float[]){0, 0, 1, 0});
    int operands[3] = {x, gamma, beta};
    rt_tensor *y = run_value(&f, add_op(&f, IR_OP_LAYERNORM, NULL, operands, 3, NULL));
    double rstd = 1.0 / sqrt(1.25 + 1e-5);
    float expected[4] = {(float)(-1.5 * rstd), (float)(-0.5 * rstd * 2), (float)(0.5 * rstd + 1), (float)(1.5 * rstd)};
    check_f32(y, 2, (int64_t[]){1, 4}, expected, 1e-6);
    CHECK_CLOSE(expected[0], -1.3416355, 1e-6, 0); /* by hand: -1.5 / sqrt(1.25001) */
    rt_tensor_free(y);
    fixture_end(&f);
}

static void test_softmax_known_values(void)
{
    fixture f;
    fixture_begin(&f);
    int x = input_f32(&f, "x", 1, (int64_t[]){3}, (float[]){1, 2, 3});
    rt_tensor *y = run_value(&f, unary(&f, IR_OP_SOFTMAX, x));
    check_f32(y, 1, (int64_t[]){3}, (float[]){0.09003057f, 0.24472847f, 0.66524096f}, 1e-7);
    rt_tensor_free(y);

    /* Softmax along axis 0 of [[1,1],[1,3]]: columns [1,1] and [1,3]. */
    int m = input_f32(&f, "m", 2, (int64_t[]){2, 2}, (float[]){1, 1, 1, 3});
    y = run_value(&f, unary_int_attr(&f, IR_OP_SOFTMAX, m, "axis", 0));
    check_f32(y, 2, (int64_t[]){2, 2}, (float[]){0.5f, 0.11920292f, 0.5f, 0.88079708f}, 1e-7);
    rt_tensor_free(y);

    /* A fully masked row gives zeros, not NaN. */
    int masked = input_f32(&f, "masked", 2, (int64_t[]){2, 2}, (float[]){-INFINITY, -INFINITY, 0, 0});
    y = run_value(&f, unary(&f, IR_OP_SOFTMAX, masked));
    check_f32(y, 2, (int64_t[]){2, 2}, (float[]){0, 0, 0.5f, 0.5f}, 0);
    rt_tensor_free(y);
    fixture_end(&f);
}

static void test_causal_mask_then_softmax(void)
{
    fixture f;
    fixture_begin(&f);
    int x = input_f32(&f, "x", 2, (int64_t[]){3, 3}, (float[]){1, 2, 3, 4, 5, 6, 7, 8, 9});
    const float inf = INFINITY;

    int masked = unary(&f, IR_OP_CAUSAL_MASK, x);
    rt_tensor *y = run_value(&f, masked);
    check_f32(y, 2, (int64_t[]){3, 3}, (float[]){1, -inf, -inf, 4, 5, -inf, 7, 8, 9}, 0);
    rt_tensor_free(y);

    y = run_value(&f, unary_int_attr(&f, IR_OP_CAUSAL_MASK, x, "offset", 1));
    check_f32(y, 2, (int64_t[]){3, 3}, (float[]){1, 2, -inf, 4, 5, 6, 7, 8, 9}, 0);
    rt_tensor_free(y);

    /* Row 0 keeps one element, row 1 is softmax([4,5]). */
    y = run_value(&f, unary(&f, IR_OP_SOFTMAX, masked));
    check_f32(y, 2, (int64_t[]){3, 3},
              (float[]){1, 0, 0, 0.26894142f, 0.73105858f, 0, 0.09003057f, 0.24472847f, 0.66524096f}, 1e-7);
    rt_tensor_free(y);
    fixture_end(&f);
}

/* ---------------------------------------------------------------------- */
/* Layout ops and reductions                                              */
/* ---------------------------------------------------------------------- */

static void test_layout_ops(void)
{
    fixture f;
    fixture_begin(&f);
    int x = input_f32(&f, "x", 2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});

    rt_tensor *y = run_value(&f, unary_ints_attr(&f, IR_OP_RESHAPE, x, "shape", (int64_t[]){3, -1}, 2));
    check_f32(y, 2, (int64_t[]){3, 2}, (float[]){1, 2, 3, 4, 5, 6}, 0);
    rt_tensor_free(y);

    y = run_value(&f, unary_ints_attr(&f, IR_OP_TRANSPOSE, x, "perm", (int64_t[]){1, 0}, 2));
    check_f32(y, 2, (int64_t[]){3, 2}, (float[]){1, 4, 2, 5, 3, 6}, 0);
    rt_tensor_free(y);

    /* Rank 3 with a negative entry: perm [-1, 0, 1] moves the last dim first,
     * so y[k, i, j] = x3[i, j, k]. */
    int x3 = input_f32(&f, "x3", 3, (int64_t[]){2, 2, 2}, (float[]){0, 1, 2, 3, 4, 5, 6, 7});
    y = run_value(&f, unary_ints_attr(&f, IR_OP_TRANSPOSE, x3, "perm", (int64_t[]){-1, 0, 1}, 3));
    check_f32(y, 3, (int64_t[]){2, 2, 2}, (float[]){0, 2, 4, 6, 1, 3, 5, 7}, 0);
    rt_tensor_free(y);

    y = run_value(&f, slice(&f, x, 1, 1, 3));
    check_f32(y, 2, (int64_t[]){2, 2}, (float[]){2, 3, 5, 6}, 0);
    rt_tensor_free(y);

    y = run_value(&f, slice(&f, x, -2, 1, 2));
    check_f32(y, 2, (int64_t[]){1, 3}, (float[]){4, 5, 6}, 0);
    rt_tensor_free(y);

    int z = input_f32(&f, "z", 2, (int64_t[]){2, 1}, (float[]){7, 8});
    int operands[2] = {x, z};
    ir_attrs attrs = ir_attrs_for(IR_OP_CONCAT);
    ir_attrs_int(&attrs, "axis", 1);
    y = run_value(&f, add_op(&f, IR_OP_CONCAT, NULL, operands, 2, &attrs));
    check_f32(y, 2, (int64_t[]){2, 4}, (float[]){1, 2, 3, 7, 4, 5, 6, 8}, 0);
    rt_tensor_free(y);

    int operands0[2] = {x, x};
    attrs = ir_attrs_for(IR_OP_CONCAT);
    ir_attrs_int(&attrs, "axis", 0);
    y = run_value(&f, add_op(&f, IR_OP_CONCAT, NULL, operands0, 2, &attrs));
    check_f32(y, 2, (int64_t[]){4, 3}, (float[]){1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6}, 0);
    rt_tensor_free(y);

    y = run_value(&f, unary_ints_attr(&f, IR_OP_BROADCAST, z, "shape", (int64_t[]){2, 3}, 2));
    check_f32(y, 2, (int64_t[]){2, 3}, (float[]){7, 7, 7, 8, 8, 8}, 0);
    rt_tensor_free(y);

    int v = input_f32(&f, "v", 1, (int64_t[]){3}, (float[]){1, 2, 3});
    y = run_value(&f, unary_ints_attr(&f, IR_OP_BROADCAST, v, "shape", (int64_t[]){2, 2, 3}, 3));
    check_f32(y, 3, (int64_t[]){2, 2, 3}, (float[]){1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3}, 0);
    rt_tensor_free(y);
    fixture_end(&f);
}

static void test_layout_ops_integer(void)
{
    fixture f;
    fixture_begin(&f);
    int x = input_i32(&f, "x", 2, (int64_t[]){2, 3}, (int32_t[]){1, 2, 3, 4, 5, 6});
    int x8 = cast(&f, x, "i8");
    rt_tensor *y = run_value(&f, unary_ints_attr(&f, IR_OP_TRANSPOSE, x8, "perm", (int64_t[]){1, 0}, 2));
    CHECK_EQ_INT(y->dtype, IR_I8);
    int8_t expected[6] = {1, 4, 2, 5, 3, 6};
    for (int i = 0; i < 6; i++)
        CHECK_EQ_INT(((int8_t *)y->data)[i], expected[i]);
    rt_tensor_free(y);
    fixture_end(&f);
}

static void test_reductions(void)
{
    fixture f;
    fixture_begin(&f);
    int x = input_f32(&f, "x", 2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 9});

    rt_tensor *y = run_value(&f, reduce(&f, IR_OP_REDUCE_SUM, x, (int64_t[]){1}, 1, 0));
    check_f32(y, 1, (int64_t[]){2}, (float[]){6, 18}, 0);
    rt_tensor_free(y);

    y = run_value(&f, reduce(&f, IR_OP_REDUCE_SUM, x, (int64_t[]){0}, 1, 1));
    check_f32(y, 2, (int64_t[]){1, 3}, (float[]){5, 7, 12}, 0);
    rt_tensor_free(y);

    y = run_value(&f, reduce(&f, IR_OP_REDUCE_SUM, x, (int64_t[]){0, -1}, 2, 0));
    check_f32(y, 0, NULL, (float[]){24}, 0);
    rt_tensor_free(y);

    y = run_value(&f, reduce(&f, IR_OP_REDUCE_MEAN, x, (int64_t[]){-1}, 1, 1));
    check_f32(y, 2, (int64_t[]){2, 1}, (float[]){2, 6}, 0);
    rt_tensor_free(y);

    y = run_value(&f, reduce(&f, IR_OP_REDUCE_MAX, x, (int64_t[]){0}, 1, 0));
    check_f32(y, 1, (int64_t[]){3}, (float[]){4, 5, 9}, 0);
    rt_tensor_free(y);

    int with_nan = input_f32(&f, "with_nan", 1, (int64_t[]){3}, (float[]){1, NAN, 2});
    y = run_value(&f, reduce(&f, IR_OP_REDUCE_MAX, with_nan, (int64_t[]){0}, 1, 0));
    CHECK(isnan(((float *)y->data)[0]));
    rt_tensor_free(y);
    fixture_end(&f);
}

/* ---------------------------------------------------------------------- */
/* Embedding and cross-entropy                                            */
/* ---------------------------------------------------------------------- */

static void test_embedding_lookup(void)
{
    fixture f;
    fixture_begin(&f);
    int table = param_f32(&f, "table", 2, (int64_t[]){3, 2}, (float[]){0, 1, 10, 11, 20, 21});
    int ids = input_i32(&f, "ids", 2, (int64_t[]){2, 2}, (int32_t[]){2, 0, 1, 2});
    rt_tensor *y = run_value(&f, binary(&f, IR_OP_EMBEDDING, table, ids));
    check_f32(y, 3, (int64_t[]){2, 2, 2}, (float[]){20, 21, 0, 1, 10, 11, 20, 21}, 0);
    rt_tensor_free(y);
    fixture_end(&f);
}

static void test_cross_entropy_values(void)
{
    fixture f;
    fixture_begin(&f);
    int uniform = input_f32(&f, "uniform", 2, (int64_t[]){1, 3}, (float[]){0, 0, 0});
    int target = input_i32(&f, "target", 1, (int64_t[]){1}, (int32_t[]){1});
    rt_tensor *y = run_value(&f, binary(&f, IR_OP_CROSS_ENTROPY, uniform, target));
    check_f32(y, 0, NULL, (float[]){(float)log(3.0)}, 1e-7);
    rt_tensor_free(y);

    /* Position 1 is ignored, so the loss is that of position 0 alone:
     * log(e + e^2 + e^3) - 3. */
    int logits = input_f32(&f, "logits", 2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 0, 0, 0});
    int targets = input_i32(&f, "targets", 1, (int64_t[]){2}, (int32_t[]){2, -1});
    y = run_value(&f, binary(&f, IR_OP_CROSS_ENTROPY, logits, targets));
    check_f32(y, 0, NULL, (float[]){(float)(log(exp(1) + exp(2) + exp(3)) - 3)}, 1e-7);
    rt_tensor_free(y);

    /* Every position ignored: the loss is 0. */
    int ignored = input_i32(&f, "ignored", 1, (int64_t[]){2}, (int32_t[]){-1, -1});
    y = run_value(&f, binary(&f, IR_OP_CROSS_ENTROPY, logits, ignored));
    check_f32(y, 0, NULL, (float[]){0}, 0);
    rt_tensor_free(y);

    /* With ignore_index = 0, position 0 (target 0) does not count. */
    int operands[2] = {logits, input_i32(&f, "zero_first", 1, (int64_t[]){2}, (int32_t[]){0, 1})};
    ir_attrs attrs = ir_attrs_for(IR_OP_CROSS_ENTROPY);
    ir_attrs_int(&attrs, "ignore_index", 0);
    y = run_value(&f, add_op(&f, IR_OP_CROSS_ENTROPY, NULL, operands, 2, &attrs));
    check_f32(y, 0, NULL, (float[]){(float)log(3.0)}, 1e-7);
    rt_tensor_free(y);
    fixture_end(&f);
}

/* ---------------------------------------------------------------------- */
/* Params, inputs, outputs and errors                                     */
/* ---------------------------------------------------------------------- */

static void test_f16_weight_converts(void)
{
    fixture f;
    fixture_begin(&f);
    int w = param_f32(&f, "w", 1, (int64_t[]){2}, NULL);
    rt_tensor *half = rt_tensor_new(IR_F16, 1, (int64_t[]){2});
    ((uint16_t *)half->data)[0] = rt_f32_to_f16(0.5f);
    ((uint16_t *)half->data)[1] = rt_f32_to_f16(-3.0f);
    rt_weights_set(f.weights, "w", half);
    rt_tensor *y = run_value(&f, unary(&f, IR_OP_NEG, w));
    check_f32(y, 1, (int64_t[]){2}, (float[]){-0.5f, 3}, 0);
    rt_tensor_free(y);
    fixture_end(&f);
}

static void test_f32_weight_rounds_to_f16_param(void)
{
    fixture f;
    fixture_begin(&f);
    int w = ir_add_leaf(f.g, IR_OP_PARAM, "w", make_type(IR_F16, 1, (int64_t[]){2}), NULL, no_loc);
    rt_weights_set(f.weights, "w", make_f32(1, (int64_t[]){2}, (float[]){1.0f + 0x1p-11f, 0.1f}));
    rt_tensor *y = run_value(&f, w);
    CHECK_EQ_INT(y->dtype, IR_F16);
    CHECK(rt_f16_to_f32(((uint16_t *)y->data)[0]) == 1.0f); /* the tie rounds to even */
    CHECK(((uint16_t *)y->data)[1] == rt_f32_to_f16(0.1f));
    rt_tensor_free(y);
    fixture_end(&f);
}

/* A bf16 layernorm computes in f32 and rounds once, so it equals the f32
 * layernorm of the same bf16 values rounded to bf16. */
static void test_bf16_layernorm_rounds_once(void)
{
    fixture f;
    fixture_begin(&f);
    int x = input_f32(&f, "x", 2, (int64_t[]){2, 3}, (float[]){0.3f, -1.7f, 2.9f, 10, 10.5f, 11});
    int gamma = param_f32(&f, "gamma", 1, (int64_t[]){3}, (float[]){1.1f, 0.9f, 1.3f});
    int beta = param_f32(&f, "beta", 1, (int64_t[]){3}, (float[]){0.1f, 0, -0.2f});
    int operands[3] = {cast(&f, x, "bf16"), cast(&f, gamma, "bf16"), cast(&f, beta, "bf16")};
    int narrow = add_op(&f, IR_OP_LAYERNORM, NULL, operands, 3, NULL);
    int wide[3] = {cast(&f, operands[0], "f32"), cast(&f, operands[1], "f32"), cast(&f, operands[2], "f32")};
    int reference = add_op(&f, IR_OP_LAYERNORM, NULL, wide, 3, NULL);

    rt_tensor *y = run_value(&f, narrow);
    rt_tensor *expected = run_value(&f, reference);
    CHECK_EQ_INT(y->dtype, IR_BF16);
    for (int i = 0; i < 6; i++)
        CHECK_EQ_INT(((uint16_t *)y->data)[i], rt_f32_to_bf16(((float *)expected->data)[i]));
    rt_tensor_free(y);
    rt_tensor_free(expected);
    fixture_end(&f);
}

static void test_run_all_and_repeated_outputs(void)
{
    fixture f;
    fixture_begin(&f);
    int x = input_f32(&f, "x", 1, (int64_t[]){2}, (float[]){1, 2});
    int doubled = binary(&f, IR_OP_ADD, x, x);
    int squared = binary(&f, IR_OP_MUL, doubled, doubled);

    rt_tensor **values = NULL;
    ir_add_output(f.g, squared);
    CHECK_EQ_INT(rt_interp_run_all(f.g, f.weights, f.inputs, &values, f.diag), 0);
    check_f32(values[x], 1, (int64_t[]){2}, (float[]){1, 2}, 0);
    check_f32(values[doubled], 1, (int64_t[]){2}, (float[]){2, 4}, 0);
    check_f32(values[squared], 1, (int64_t[]){2}, (float[]){4, 16}, 0);
    rt_interp_free_values(values, f.g->nvalues);

    /* The same value listed twice as an output gives two tensors. */
    ir_add_output(f.g, squared);
    rt_tensor *outputs[2] = {NULL, NULL};
    CHECK_EQ_INT(rt_interp_run(f.g, f.weights, f.inputs, outputs, f.diag), 0);
    CHECK(outputs[0] != outputs[1]);
    check_f32(outputs[0], 1, (int64_t[]){2}, (float[]){4, 16}, 0);
    check_f32(outputs[1], 1, (int64_t[]){2}, (float[]){4, 16}, 0);
    rt_tensor_free(outputs[0]);
    rt_tensor_free(outputs[1]);
    fixture_end(&f);
}

static void test_missing_weight_error(void)
{
    fixture f;
    fixture_begin(&f);
    int wte = param_f32(&f, "wte", 2, (int64_t[]){11, 8}, NULL);
    check_run_error(&f, unary(&f, IR_OP_NEG, wte),
                    "quadc: error: missing weight 'wte' for parameter @wte of type f32[11,8]\n");
    fixture_end(&f);
}

static void test_wrongly_shaped_weight_error(void)
{
    fixture f;
    fixture_begin(&f);
    int wte = param_f32(&f, "wte", 2, (int64_t[]){11, 8}, NULL);
    rt_weights_set(f.weights, "wte", rt_tensor_new(IR_F16, 2, (int64_t[]){11, 4}));
    check_run_error(&f, unary(&f, IR_OP_NEG, wte),
                    "quadc: error: weight 'wte' has shape f16[11,4] but parameter @wte has type f32[11,8]\n");
    fixture_end(&f);
}

static void test_integer_weight_rejected(void)
{
    fixture f;
    fixture_begin(&f);
    int w = param_f32(&f, "w", 1, (int64_t[]){2}, NULL);
    rt_weights_set(f.weights, "w", rt_tensor_new(IR_I32, 1, (int64_t[]){2}));
    check_run_error(&f, unary(&f, IR_OP_NEG, w),
                    "quadc: error: weight 'w' is i32[2] but parameter @w is f32[2]; only a floating weight "
                    "converts to another dtype\n");
    fixture_end(&f);
}

static void test_input_errors(void)
{
    fixture f;
    fixture_begin(&f);
    int ids = ir_add_leaf(f.g, IR_OP_INPUT, "ids", make_type(IR_I32, 2, (int64_t[]){2, 4}), NULL, no_loc);
    int neg = unary(&f, IR_OP_NEG, ids);
    check_run_error(&f, neg, "quadc: error: missing input 'ids' of type i32[2,4]\n");

    rt_weights_set(f.inputs, "ids", rt_tensor_new(IR_I64, 2, (int64_t[]){2, 4}));
    check_run_error(&f, neg, "quadc: error: input 'ids' is i64[2,4] but the graph expects i32[2,4]\n");
    fixture_end(&f);
}

static void test_embedding_id_out_of_range(void)
{
    fixture f;
    fixture_begin(&f);
    int table = param_f32(&f, "wte", 2, (int64_t[]){11, 2}, (float[22]){0});
    int ids = input_i32(&f, "ids", 2, (int64_t[]){2, 4}, (int32_t[]){0, 1, 2, 3, 4, 5, 6, 11});
    int operands[2] = {table, ids};
    int tok = add_op(&f, IR_OP_EMBEDDING, "tok", operands, 2, NULL);
    check_run_error(&f, tok, "quadc: error: embedding %tok: id 11 at position [1,3] is out of range [0, 11)\n");
    fixture_end(&f);
}

static void test_cross_entropy_target_out_of_range(void)
{
    fixture f;
    fixture_begin(&f);
    int logits = input_f32(&f, "logits", 3, (int64_t[]){1, 2, 3}, (float[6]){0});
    int targets = input_i32(&f, "targets", 2, (int64_t[]){1, 2}, (int32_t[]){0, -2});
    int operands[2] = {logits, targets};
    int loss = add_op(&f, IR_OP_CROSS_ENTROPY, "loss", operands, 2, NULL);
    check_run_error(&f, loss, "quadc: error: cross_entropy %loss: target -2 at position [0,1] is out of range "
                              "[0, 3) and is not the ignore_index -1\n");
    fixture_end(&f);
}

static void test_unsupported_dtype_error(void)
{
    fixture f;
    fixture_begin(&f);
    int x = input_i32(&f, "x", 2, (int64_t[]){1, 2}, (int32_t[]){1, 2});
    int operands[1] = {x};
    ir_attrs attrs = ir_attrs_for(IR_OP_REDUCE_SUM);
    ir_attrs_ints(&attrs, "axes", (int64_t[]){1}, 1);
    int sum = add_op(&f, IR_OP_REDUCE_SUM, "total", operands, 1, &attrs);
    check_run_error(&f, sum,
                    "quadc: error: reduce_sum %total: the interpreter does not support dtype i32 for this op\n");
    fixture_end(&f);
}

/* ---------------------------------------------------------------------- */
/* A hand-built GPT-2                                                     */
/* ---------------------------------------------------------------------- */

typedef struct gpt2_config {
    int64_t layers, B, T, C, NH, V;
} gpt2_config;

/* The ids of the values that the GPT-2 checks read. */
typedef struct gpt2_values {
    int attention;  /* layer 0 attention before its projection, (B, T, C) */
    int loss;
} gpt2_values;

static uint64_t rng_state;

/* Returns a uniform float in [-1, 1) from a splitmix64 stream. */
static float random_uniform(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) / (float)(1ull << 24) * 2.0f - 1.0f;
}

/* Adds an f32 param with uniform weights in [-scale, scale) + offset. */
static int random_param(fixture *f, const char *name, int rank, const int64_t *dims, float scale, float offset)
{
    int id = param_f32(f, name, rank, dims, NULL);
    rt_tensor *t = rt_tensor_new(IR_F32, rank, dims);
    float *p = t->data;
    for (int64_t i = 0; i < rt_tensor_numel(t); i++)
        p[i] = offset + scale * random_uniform();
    rt_weights_set(f->weights, name, t);
    return id;
}

static int layernorm(fixture *f, int x, const char *prefix, int64_t C)
{
    char name[64];
    snprintf(name, sizeof name, "%s.g", prefix);
    int gamma = random_param(f, name, 1, (int64_t[]){C}, 0.1f, 1.0f);
    snprintf(name, sizeof name, "%s.b", prefix);
    int beta = random_param(f, name, 1, (int64_t[]){C}, 0.1f, 0.0f);
    int operands[3] = {x, gamma, beta};
    return add_op(f, IR_OP_LAYERNORM, prefix, operands, 3, NULL);
}

static int linear(fixture *f, int x, const char *prefix, int64_t in, int64_t out)
{
    char name[64];
    snprintf(name, sizeof name, "%s.w", prefix);
    int w = random_param(f, name, 2, (int64_t[]){in, out}, 0.1f, 0.0f);
    snprintf(name, sizeof name, "%s.b", prefix);
    int b = random_param(f, name, 1, (int64_t[]){out}, 0.02f, 0.0f);
    int operands[3] = {x, w, b};
    return add_op(f, IR_OP_LINEAR, prefix, operands, 3, NULL);
}

/* Splits columns [part*C, (part+1)*C) of qkv (B, T, 3C) into heads
 * (B, NH, T, HS). */
static int split_head(fixture *f, int qkv, int part, const gpt2_config *cfg)
{
    int64_t HS = cfg->C / cfg->NH;
    int x = slice(f, qkv, 2, part * cfg->C, (part + 1) * cfg->C);
    x = unary_ints_attr(f, IR_OP_RESHAPE, x, "shape", (int64_t[]){cfg->B, cfg->T, cfg->NH, HS}, 4);
    return unary_ints_attr(f, IR_OP_TRANSPOSE, x, "perm", (int64_t[]){0, 2, 1, 3}, 4);
}

/* Builds a GPT-2 forward pass with tied input and output embeddings and the
 * mean cross-entropy loss. Inputs: ids (B, T), positions (T), targets (B, T). */
static gpt2_values build_gpt2(fixture *f, const gpt2_config *cfg, const int32_t *ids, const int32_t *targets)
{
    int64_t B = cfg->B, T = cfg->T, C = cfg->C, NH = cfg->NH, V = cfg->V, HS = C / NH;
    gpt2_values out = {-1, -1};
    int32_t *positions = malloc(sizeof(int32_t) * (size_t)T);
    for (int64_t t = 0; t < T; t++)
        positions[t] = (int32_t)t;

    int wte = random_param(f, "wte", 2, (int64_t[]){V, C}, 0.02f, 0.0f);
    int wpe = random_param(f, "wpe", 2, (int64_t[]){T, C}, 0.01f, 0.0f);
    int tokens = input_i32(f, "ids", 2, (int64_t[]){B, T}, ids);
    int pos = input_i32(f, "positions", 1, (int64_t[]){T}, positions);
    int x = binary(f, IR_OP_ADD, binary(f, IR_OP_EMBEDDING, wte, tokens), binary(f, IR_OP_EMBEDDING, wpe, pos));
    free(positions);

    for (int64_t l = 0; l < cfg->layers; l++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "h%lld.ln1", (long long)l);
        int h = layernorm(f, x, prefix, C);
        snprintf(prefix, sizeof prefix, "h%lld.attn", (long long)l);
        int qkv = linear(f, h, prefix, C, 3 * C);
        int q = split_head(f, qkv, 0, cfg), k = split_head(f, qkv, 1, cfg), v = split_head(f, qkv, 2, cfg);

        int operands[2] = {q, k};
        ir_attrs attrs = ir_attrs_for(IR_OP_MATMUL);
        ir_attrs_int(&attrs, "transpose_b", 1);
        int att = add_op(f, IR_OP_MATMUL, NULL, operands, 2, &attrs);
        attrs = ir_attrs_for(IR_OP_SCALE);
        ir_attrs_float(&attrs, "factor", 1.0 / sqrt((double)HS));
        att = add_op(f, IR_OP_SCALE, NULL, &att, 1, &attrs);
        att = unary(f, IR_OP_SOFTMAX, unary(f, IR_OP_CAUSAL_MASK, att));
        int y = binary(f, IR_OP_MATMUL, att, v);
        y = unary_ints_attr(f, IR_OP_TRANSPOSE, y, "perm", (int64_t[]){0, 2, 1, 3}, 4);
        y = unary_ints_attr(f, IR_OP_RESHAPE, y, "shape", (int64_t[]){B, T, C}, 3);
        if (l == 0)
            out.attention = y;
        snprintf(prefix, sizeof prefix, "h%lld.proj", (long long)l);
        x = binary(f, IR_OP_ADD, x, linear(f, y, prefix, C, C));

        snprintf(prefix, sizeof prefix, "h%lld.ln2", (long long)l);
        h = layernorm(f, x, prefix, C);
        snprintf(prefix, sizeof prefix, "h%lld.fc", (long long)l);
        h = unary(f, IR_OP_GELU, linear(f, h, prefix, C, 4 * C));
        snprintf(prefix, sizeof prefix, "h%lld.mlp_proj", (long long)l);
        x = binary(f, IR_OP_ADD, x, linear(f, h, prefix, 4 * C, C));
    }

    int final = layernorm(f, x, "ln_f", C);
    int operands[2] = {final, wte};
    ir_attrs attrs = ir_attrs_for(IR_OP_MATMUL);
    ir_attrs_int(&attrs, "transpose_b", 1);
    int logits = add_op(f, IR_OP_MATMUL, "logits", operands, 2, &attrs);
    int target_ids = input_i32(f, "targets", 2, (int64_t[]){B, T}, targets);
    out.loss = binary(f, IR_OP_CROSS_ENTROPY, logits, target_ids);
    return out;
}

static const float *weight(const fixture *f, const char *name)
{
    return rt_weights_get(f->weights, name)->data;
}

/* Computes layer 0's attention output (B, T, C), before the projection,
 * directly from the weights with plain loops in double. */
static double *reference_attention(const fixture *f, const gpt2_config *cfg, const int32_t *ids)
{
    int64_t B = cfg->B, T = cfg->T, C = cfg->C, NH = cfg->NH, HS = C / NH;
    const float *wte = weight(f, "wte"), *wpe = weight(f, "wpe");
    const float *gamma = weight(f, "h0.ln1.g"), *beta = weight(f, "h0.ln1.b");
    const float *w = weight(f, "h0.attn.w"), *bias = weight(f, "h0.attn.b");
    double *qkv = calloc((size_t)(B * T * 3 * C), sizeof(double));
    double *out = calloc((size_t)(B * T * C), sizeof(double));
    double *row = malloc(sizeof(double) * (size_t)C);
    double *scores = malloc(sizeof(double) * (size_t)T);

    /* Embedding, layernorm and the qkv projection, one position at a time. */
    for (int64_t b = 0; b < B; b++) {
        for (int64_t t = 0; t < T; t++) {
            double mean = 0, var = 0;
            for (int64_t c = 0; c < C; c++) {
                row[c] = (double)wte[ids[b * T + t] * C + c] + (double)wpe[t * C + c];
                mean += row[c] / (double)C;
            }
            for (int64_t c = 0; c < C; c++)
                var += (row[c] - mean) * (row[c] - mean) / (double)C;
            for (int64_t c = 0; c < C; c++)
                row[c] = (row[c] - mean) / sqrt(var + 1e-5) * gamma[c] + beta[c];
            double *dst = qkv + (b * T + t) * 3 * C;
            for (int64_t o = 0; o < 3 * C; o++) {
                dst[o] = bias[o];
                for (int64_t c = 0; c < C; c++)
                    dst[o] += row[c] * w[c * 3 * C + o];
            }
        }
    }

    /* Causal attention per head: position t attends to positions 0..t. */
    for (int64_t b = 0; b < B; b++) {
        for (int64_t h = 0; h < NH; h++) {
            for (int64_t t = 0; t < T; t++) {
                const double *q = qkv + (b * T + t) * 3 * C + h * HS;
                double max = -INFINITY, sum = 0;
                for (int64_t s = 0; s <= t; s++) {
                    const double *k = qkv + (b * T + s) * 3 * C + C + h * HS;
                    scores[s] = 0;
                    for (int64_t i = 0; i < HS; i++)
                        scores[s] += q[i] * k[i] / sqrt((double)HS);
                    max = fmax(max, scores[s]);
                }
                for (int64_t s = 0; s <= t; s++) {
                    scores[s] = exp(scores[s] - max);
                    sum += scores[s];
                }
                for (int64_t s = 0; s <= t; s++) {
                    const double *v = qkv + (b * T + s) * 3 * C + 2 * C + h * HS;
                    for (int64_t i = 0; i < HS; i++)
                        out[(b * T + t) * C + h * HS + i] += scores[s] / sum * v[i];
                }
            }
        }
    }
    free(qkv);
    free(row);
    free(scores);
    return out;
}

static void test_tiny_gpt2(void)
{
    const gpt2_config cfg = {.layers = 1, .B = 2, .T = 4, .C = 8, .NH = 2, .V = 11};
    const int32_t ids[8] = {3, 1, 4, 1, 5, 9, 2, 6};
    const int32_t targets[8] = {1, 4, 1, 5, 9, 2, 6, 10};
    fixture f;
    fixture_begin(&f);
    rng_state = 42;
    gpt2_values values = build_gpt2(&f, &cfg, ids, targets);
    CHECK_EQ_INT(ir_verify(f.g, "test"), 0);

    rt_tensor **all = NULL;
    CHECK_EQ_INT(rt_interp_run_all(f.g, f.weights, f.inputs, &all, f.diag), 0);
    if (!all) {
        fixture_end(&f);
        return;
    }

    /* Small random weights give nearly uniform logits, so the loss is close
     * to ln(V). */
    float loss = ((float *)all[values.loss]->data)[0];
    CHECK(isfinite(loss));
    CHECK_CLOSE(loss, log((double)cfg.V), 0.05, 0);

    double *expected = reference_attention(&f, &cfg, ids);
    const rt_tensor *attention = all[values.attention];
    CHECK_EQ_INT(attention->rank, 3);
    CHECK_EQ_INT(attention->dims[2], cfg.C);
    for (int64_t i = 0; i < cfg.B * cfg.T * cfg.C; i++)
        CHECK_CLOSE(((float *)attention->data)[i], expected[i], 1e-6, 1e-5);
    free(expected);
    rt_interp_free_values(all, f.g->nvalues);

    /* rt_interp_run frees intermediates and returns the same loss. */
    rt_tensor *out = run_value(&f, values.loss);
    CHECK(out != NULL);
    if (out)
        CHECK(((float *)out->data)[0] == loss);
    rt_tensor_free(out);
    fixture_end(&f);
}

/* A 2-layer GPT-2 at the GPT-2 vocabulary size, to keep whole-model runs
 * fast enough for tests; the time is printed, not asserted. */
static void test_gpt2_full_vocabulary(void)
{
    const gpt2_config cfg = {.layers = 2, .B = 1, .T = 64, .C = 64, .NH = 4, .V = 50257};
    int32_t ids[64], targets[64];
    for (int i = 0; i < 64; i++) {
        ids[i] = (int32_t)((i * 7919) % 50257);
        targets[i] = (int32_t)((i * 104729 + 1) % 50257);
    }
    fixture f;
    fixture_begin(&f);
    rng_state = 7;
    gpt2_values values = build_gpt2(&f, &cfg, ids, targets);

    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    rt_tensor *out = run_value(&f, values.loss);
    clock_gettime(CLOCK_MONOTONIC, &end);
    double seconds = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) * 1e-9;
    CHECK(out != NULL);
    if (out) {
        float loss = ((float *)out->data)[0];
        printf("gpt2 2 layers, C=64, V=50257, T=64: loss %.6f in %.2f s\n", loss, seconds);
        CHECK(isfinite(loss));
        CHECK_CLOSE(loss, log(50257.0), 0.1, 0);
    }
    rt_tensor_free(out);
    fixture_end(&f);
}

int main(void)
{
    test_add_broadcast();
    test_binary_f32_ops();
    test_binary_integer_ops();
    test_integer_division_by_zero();
    test_unary_ops();
    test_cast_rounding_and_saturation();
    test_f16_arithmetic_rounds_once();
    test_const_splat();
    test_matmul();
    test_linear_with_bias();
    test_layernorm_known_row();
    test_softmax_known_values();
    test_causal_mask_then_softmax();
    test_layout_ops();
    test_layout_ops_integer();
    test_reductions();
    test_embedding_lookup();
    test_cross_entropy_values();
    test_f16_weight_converts();
    test_f32_weight_rounds_to_f16_param();
    test_bf16_layernorm_rounds_once();
    test_run_all_and_repeated_outputs();
    test_missing_weight_error();
    test_wrongly_shaped_weight_error();
    test_integer_weight_rejected();
    test_input_errors();
    test_embedding_id_out_of_range();
    test_cross_entropy_target_out_of_range();
    test_unsupported_dtype_error();
    test_tiny_gpt2();
    test_gpt2_full_vocabulary();
    return check_finish();
}
