/* Interpreter kernels for const, cast and the elementwise unary and binary
 * ops, with the element conversions they share. f16 and bf16 operands of
 * unary and binary ops arrive already widened to f32 (see interp.c). */
#include <math.h>
#include <stdint.h>

#include "runtime/interp_ops.h"

/* ---- element conversions ---- */

static bool is_float_dtype(ir_dtype dtype)
{
    return dtype == IR_F32 || dtype == IR_F16 || dtype == IR_BF16;
}

/* Returns the smallest and largest value of integer dtype `dtype`. */
static void int_range(ir_dtype dtype, int64_t *lo, int64_t *hi)
{
    switch (dtype) {
    case IR_I8: *lo = INT8_MIN; *hi = INT8_MAX; break;
    case IR_U8: *lo = 0; *hi = UINT8_MAX; break;
    case IR_I32: *lo = INT32_MIN; *hi = INT32_MAX; break;
    default: *lo = INT64_MIN; *hi = INT64_MAX; break;
    }
}

int64_t rt_interp_load_int(const rt_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case IR_I8: return ((const int8_t *)t->data)[i];
    case IR_U8: return ((const uint8_t *)t->data)[i];
    case IR_I32: return ((const int32_t *)t->data)[i];
    case IR_I64: return ((const int64_t *)t->data)[i];
    default: return 0;
    }
}

/* Stores the low bits of v: two's complement wraparound, as LLVM's integer
 * add, sub and mul do. (The conversions to a narrower signed type are
 * modular in GCC and Clang.) */
static void store_int_wrapped(rt_tensor *t, int64_t i, uint64_t v)
{
    switch (t->dtype) {
    case IR_I8: ((int8_t *)t->data)[i] = (int8_t)(uint8_t)v; break;
    case IR_U8: ((uint8_t *)t->data)[i] = (uint8_t)v; break;
    case IR_I32: ((int32_t *)t->data)[i] = (int32_t)(uint32_t)v; break;
    case IR_I64: ((int64_t *)t->data)[i] = (int64_t)v; break;
    default: break;
    }
}

static void store_int_saturated(rt_tensor *t, int64_t i, int64_t v)
{
    int64_t lo, hi;
    int_range(t->dtype, &lo, &hi);
    if (v < lo)
        v = lo;
    if (v > hi)
        v = hi;
    store_int_wrapped(t, i, (uint64_t)v);
}

/* Exact for every dtype except i64 values beyond 2^53, which round. */
double rt_interp_load(const rt_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case IR_F32: return ((const float *)t->data)[i];
    case IR_F16: return rt_f16_to_f32(((const uint16_t *)t->data)[i]);
    case IR_BF16: return rt_bf16_to_f32(((const uint16_t *)t->data)[i]);
    default: return (double)rt_interp_load_int(t, i);
    }
}

/* Stores x converted to t's dtype. Floating targets round to nearest even.
 * For f16 and bf16, x first rounds to f32, which is exact when x came from a
 * floating tensor. Integer targets round to nearest even (nearbyint in the
 * default rounding mode) and saturate to the dtype's range, and NaN gives 0. */
void rt_interp_store(rt_tensor *t, int64_t i, double x)
{
    switch (t->dtype) {
    case IR_F32: ((float *)t->data)[i] = (float)x; return;
    case IR_F16: ((uint16_t *)t->data)[i] = rt_f32_to_f16((float)x); return;
    case IR_BF16: ((uint16_t *)t->data)[i] = rt_f32_to_bf16((float)x); return;
    default: break;
    }
    int64_t lo, hi;
    int_range(t->dtype, &lo, &hi);
    double r = nearbyint(x);
    int64_t v;
    if (isnan(r))
        v = 0;
    else if (r <= (double)lo)
        v = lo;
    else if (r >= (double)hi) /* (double)INT64_MAX is 2^63, out of range */
        v = hi;
    else
        v = (int64_t)r;
    store_int_wrapped(t, i, (uint64_t)v);
}

/* ---- const and cast ---- */

/* const{value}: every element is `value` converted to the value's dtype as
 * rt_interp_store does: round to nearest even, and for integer dtypes
 * saturate. */
int rt_interp_const(const rt_interp_call *call)
{
    double value = ir_attr_float(call->value, "value");
    int64_t n = rt_tensor_numel(call->result);
    for (int64_t i = 0; i < n; i++)
        rt_interp_store(call->result, i, value);
    return 0;
}

/* cast{to}: converts each element.
 *   float -> float: widening is exact, and narrowing (f32 to f16 or bf16)
 *     rounds to nearest even.
 *   float -> integer: rounds to nearest even (2.5 -> 2, 3.5 -> 4), then
 *     saturates to the integer range (300 -> 127 for i8). NaN gives 0.
 *   integer -> float: exact where representable, else round to nearest even.
 *   integer -> integer: saturates to the target range.
 * NOTE: integer -> bf16 goes through f32, so an integer above 2^24 rounds
 * twice and may land one bf16 step off the correctly rounded result. */
int rt_interp_cast(const rt_interp_call *call)
{
    const rt_tensor *x = call->operands[0];
    rt_tensor *y = call->result;
    int64_t n = rt_tensor_numel(x);
    if (!is_float_dtype(x->dtype) && !is_float_dtype(y->dtype)) {
        for (int64_t i = 0; i < n; i++)
            store_int_saturated(y, i, rt_interp_load_int(x, i));
        return 0;
    }
    for (int64_t i = 0; i < n; i++)
        rt_interp_store(y, i, rt_interp_load(x, i));
    return 0;
}

/* ---- binary ops ---- */

/* maximum and minimum follow IEEE 754-2019 maximum/minimum (and LLVM's
 * llvm.maximum/llvm.minimum): NaN if either operand is NaN, and -0 < +0. */
static float float_maximum(float a, float b)
{
    if (isnan(a) || isnan(b))
        return NAN;
    if (a == b)
        return signbit(a) ? b : a;
    return a > b ? a : b;
}

static float float_minimum(float a, float b)
{
    if (isnan(a) || isnan(b))
        return NAN;
    if (a == b)
        return signbit(a) ? a : b;
    return a < b ? a : b;
}

static float binary_f32(ir_op op, float a, float b)
{
    switch (op) {
    case IR_OP_ADD: return a + b;
    case IR_OP_SUB: return a - b;
    case IR_OP_MUL: return a * b;
    case IR_OP_DIV: return a / b;
    case IR_OP_MAXIMUM: return float_maximum(a, b);
    default: return float_minimum(a, b);
    }
}

/* Returns a op b wrapped to 64 bits, of which the caller stores the low bits.
 * The caller rejects division by zero, and INT64_MIN / -1 wraps to INT64_MIN. */
static uint64_t binary_int(ir_op op, int64_t a, int64_t b)
{
    switch (op) {
    case IR_OP_ADD: return (uint64_t)a + (uint64_t)b;
    case IR_OP_SUB: return (uint64_t)a - (uint64_t)b;
    case IR_OP_MUL: return (uint64_t)a * (uint64_t)b;
    case IR_OP_DIV: return (a == INT64_MIN && b == -1) ? (uint64_t)a : (uint64_t)(a / b);
    case IR_OP_MAXIMUM: return (uint64_t)(a > b ? a : b);
    default: return (uint64_t)(a < b ? a : b);
    }
}

/* add, sub, mul, div, maximum, minimum with numpy broadcasting: shapes align
 * at the trailing dim and a size-1 or missing dim repeats. Both operands and
 * the result have the same dtype.
 *   f32: one IEEE f32 operation per element (round to nearest even);
 *     maximum/minimum propagate NaN and order -0 below +0.
 *   i8, u8, i32, i64: add, sub and mul wrap around (two's complement). div
 *     truncates toward zero and wraps on MIN / -1. A zero divisor is an
 *     error naming the value and the element. */
int rt_interp_binary(const rt_interp_call *call)
{
    const rt_tensor *a = call->operands[0], *b = call->operands[1];
    rt_tensor *y = call->result;
    ir_op op = call->value->op;
    if (y->dtype != IR_F32 && is_float_dtype(y->dtype))
        return rt_interp_unsupported(call, y->dtype);

    rt_interp_walk w;
    rt_interp_walk_start(&w, y->rank, y->dims);
    rt_interp_broadcast_strides(a->dims, a->rank, y->rank, w.strides[0]);
    rt_interp_broadcast_strides(b->dims, b->rank, y->rank, w.strides[1]);
    int64_t n = rt_tensor_numel(y);

    if (y->dtype == IR_F32) {
        const float *pa = a->data, *pb = b->data;
        float *py = y->data;
        for (int64_t i = 0; i < n; i++, rt_interp_walk_next(&w))
            py[i] = binary_f32(op, pa[w.offset[0]], pb[w.offset[1]]);
        return 0;
    }

    for (int64_t i = 0; i < n; i++, rt_interp_walk_next(&w)) {
        int64_t va = rt_interp_load_int(a, w.offset[0]), vb = rt_interp_load_int(b, w.offset[1]);
        if (op == IR_OP_DIV && vb == 0) {
            char where[128];
            return rt_interp_fail(call, "integer division by zero at element %s",
                                  rt_interp_index_str(y->dims, y->rank, i, where, sizeof where));
        }
        store_int_wrapped(y, i, binary_int(op, va, vb));
    }
    return 0;
}

/* ---- unary ops ---- */

/* gelu, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
static double gelu(double x)
{
    const double sqrt_2_over_pi = 0.7978845608028654;
    return 0.5 * x * (1.0 + tanh(sqrt_2_over_pi * (x + 0.044715 * x * x * x)));
}

/* Elementwise unary ops on f32. Each is evaluated in double from the f32
 * input and rounded to f32 once, except scale:
 *   neg -x, exp, log, sqrt, rsqrt 1/sqrt(x), tanh, abs |x|,
 *   relu: x < 0 ? 0 : x (NaN passes through),
 *   gelu: the tanh form above,
 *   scale{factor}: x * f in f32, where f is `factor` rounded to f32.
 * On i8, u8, i32 and i64 only neg, abs and relu exist; neg and abs wrap
 * around, so neg(MIN) = abs(MIN) = MIN. */
int rt_interp_unary(const rt_interp_call *call)
{
    const rt_tensor *x = call->operands[0];
    rt_tensor *y = call->result;
    ir_op op = call->value->op;
    int64_t n = rt_tensor_numel(y);

    if (x->dtype == IR_F32) {
        const float *px = x->data;
        float *py = y->data;
        float factor = (float)ir_attr_float(call->value, "factor");
        for (int64_t i = 0; i < n; i++) {
            double v = px[i];
            double r;
            switch (op) {
            case IR_OP_NEG: r = -v; break;
            case IR_OP_EXP: r = exp(v); break;
            case IR_OP_LOG: r = log(v); break;
            case IR_OP_SQRT: r = sqrt(v); break;
            case IR_OP_RSQRT: r = 1.0 / sqrt(v); break;
            case IR_OP_TANH: r = tanh(v); break;
            case IR_OP_GELU: r = gelu(v); break;
            case IR_OP_RELU: r = v < 0 ? 0.0 : v; break;
            case IR_OP_ABS: r = fabs(v); break;
            case IR_OP_SCALE: r = px[i] * factor; break;
            default: return rt_interp_fail(call, "not an elementwise unary op");
            }
            py[i] = (float)r;
        }
        return 0;
    }

    if (is_float_dtype(x->dtype) || (op != IR_OP_NEG && op != IR_OP_ABS && op != IR_OP_RELU))
        return rt_interp_unsupported(call, x->dtype);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = rt_interp_load_int(x, i);
        uint64_t r;
        if (op == IR_OP_NEG)
            r = 0 - (uint64_t)v;
        else if (op == IR_OP_ABS)
            r = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
        else
            r = v < 0 ? 0 : (uint64_t)v;
        store_int_wrapped(y, i, r);
    }
    return 0;
}
