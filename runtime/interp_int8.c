/* Interpreter kernels of the integer ops, written as the plain reference
 * for the JIT (ir/ops.def has the formulas). q.linear quantizes the input
 * row, sums the integer products exactly in int64, then scales and adds
 * the bias in f32 as the int8 GEMM's f32 output stage does. q.requantize
 * uses cg_requantize_round of codegen/quant_arith.h, plain C that the
 * generated code is tested against too. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "codegen/quant_arith.h"
#include "ir/int8.h"
#include "runtime/interp_ops.h"

/* Returns the integer zero point of a param element: rounded half to even
 * as the fake-quant ops round it. */
static int64_t zero_point_at(const rt_tensor *t, int64_t i)
{
    return (int64_t)ir_quant_zero_point(((const float *)t->data)[i]);
}

int rt_interp_qlinear(const rt_interp_call *call)
{
    const ir_value *v = call->value;
    const rt_tensor *x = call->operands[IR_QLINEAR_X];
    const rt_tensor *w = call->operands[IR_QLINEAR_W];
    const rt_tensor *w_scale = call->operands[IR_QLINEAR_W_SCALE];
    const rt_tensor *w_zero = call->operands[IR_QLINEAR_W_ZERO_POINT];
    const rt_tensor *bias = v->nops > IR_QLINEAR_BIAS ? call->operands[IR_QLINEAR_BIAS] : NULL;
    ir_quant_range range;
    if (ir_qlinear_range(v, &range) != 0)
        return rt_interp_fail(call, "invalid quantizer attributes");

    float x_scale = *(const float *)call->operands[IR_QLINEAR_X_SCALE]->data;
    float x_zero = ir_quant_zero_point(*(const float *)call->operands[IR_QLINEAR_X_ZERO_POINT]->data);
    if (!(x_scale > 0.0f) || !isfinite(x_scale))
        return rt_interp_fail(call, "input scale is %.9g; scales must be positive and finite (run calibration "
                              "before lowering to int8)", (double)x_scale);

    bool transpose_b = ir_attr_int(v, "transpose_b") != 0;
    int64_t k_count = x->dims[x->rank - 1];
    int64_t n_count = v->type.dims[v->type.rank - 1];
    int64_t rows = rt_tensor_numel(x) / (k_count ? k_count : 1);
    bool per_channel = rt_tensor_numel(w_scale) > 1;
    const float *xs = x->data;
    const int8_t *wq = w->data;
    float *y = call->result->data;

    int64_t *q = malloc(sizeof *q * (size_t)(k_count ? k_count : 1));
    if (!q)
        return rt_interp_fail(call, "out of memory for a row of %lld quantized inputs", (long long)k_count);
    for (int64_t m = 0; m < rows; m++) {
        /* 1. Quantize the row and subtract the zero point: q - z_x. */
        for (int64_t k = 0; k < k_count; k++) {
            float t = nearbyintf(xs[m * k_count + k] / x_scale) + x_zero;
            t = fminf(fmaxf(t, (float)range.qmin), (float)range.qmax);
            q[k] = (int64_t)t - (int64_t)x_zero;
        }

        /* 2. Exact integer dot products, then one f32 scale and the bias. */
        for (int64_t n = 0; n < n_count; n++) {
            int64_t c = per_channel ? n : 0;
            int64_t zw = zero_point_at(w_zero, c);
            int64_t acc = 0;
            for (int64_t k = 0; k < k_count; k++) {
                int64_t wv = transpose_b ? wq[n * k_count + k] : wq[k * n_count + n];
                acc += q[k] * (wv - zw);
            }
            float scale = x_scale * ((const float *)w_scale->data)[c];
            float out = scale * (float)acc;
            if (bias)
                out += ((const float *)bias->data)[n];
            y[m * n_count + n] = out;
        }
    }
    free(q);
    return 0;
}

/* ---- the integer attention ops ---- */

static float scalar_at(const rt_tensor *t)
{
    return *(const float *)t->data;
}

/* Returns element i of a u8, i8 or i32 tensor. */
static int64_t integer_at(const rt_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case IR_U8:
        return ((const uint8_t *)t->data)[i];
    case IR_I8:
        return ((const int8_t *)t->data)[i];
    default:
        return ((const int32_t *)t->data)[i];
    }
}

/* Stores integer q, already in the range, as element i of a u8 or i8 tensor. */
static void store_8bit(rt_tensor *t, int64_t i, int64_t q)
{
    if (t->dtype == IR_U8)
        ((uint8_t *)t->data)[i] = (uint8_t)q;
    else
        ((int8_t *)t->data)[i] = (int8_t)q;
}

int rt_interp_qquantize(const rt_interp_call *call)
{
    ir_quant_range range;
    if (ir_qlinear_range(call->value, &range) != 0)
        return rt_interp_fail(call, "invalid quantizer attributes");
    float scale = scalar_at(call->operands[IR_QQUANTIZE_SCALE]);
    float zero = ir_quant_zero_point(scalar_at(call->operands[IR_QQUANTIZE_ZERO_POINT]));
    if (!(scale > 0.0f) || !isfinite(scale))
        return rt_interp_fail(call, "scale is %.9g; scales must be positive and finite (run calibration before "
                              "lowering to int8)", (double)scale);
    const rt_tensor *x = call->operands[IR_QQUANTIZE_X];
    const float *xs = x->data;
    for (int64_t i = 0; i < rt_tensor_numel(x); i++) {
        float t = nearbyintf(xs[i] / scale) + zero;
        t = fminf(fmaxf(t, (float)range.qmin), (float)range.qmax);
        store_8bit(call->result, i, (int64_t)t);
    }
    return 0;
}

int rt_interp_qmatmul(const rt_interp_call *call)
{
    const rt_tensor *a = call->operands[IR_QMATMUL_A], *b = call->operands[IR_QMATMUL_B];
    int64_t za = (int64_t)ir_quant_zero_point(scalar_at(call->operands[IR_QMATMUL_A_ZERO_POINT]));
    int64_t zb = (int64_t)ir_quant_zero_point(scalar_at(call->operands[IR_QMATMUL_B_ZERO_POINT]));
    bool transpose_b = ir_attr_int(call->value, "transpose_b") != 0;
    int rank = a->rank;
    int64_t m_count = a->dims[rank - 2], k_count = a->dims[rank - 1];
    int64_t n_count = call->result->dims[rank - 1];
    int64_t batches = m_count > 0 && k_count > 0 ? rt_tensor_numel(a) / (m_count * k_count) : 0;
    int32_t *acc = call->result->data;
    for (int64_t batch = 0; batch < batches; batch++) {
        int64_t a0 = batch * m_count * k_count, b0 = batch * k_count * n_count;
        for (int64_t m = 0; m < m_count; m++) {
            for (int64_t n = 0; n < n_count; n++) {
                int64_t sum = 0;
                for (int64_t k = 0; k < k_count; k++) {
                    int64_t bi = transpose_b ? n * k_count + k : k * n_count + n;
                    sum += (integer_at(a, a0 + m * k_count + k) - za) * (integer_at(b, b0 + bi) - zb);
                }
                /* The shape rule bounds K so that the sum fits. */
                acc[(batch * m_count + m) * n_count + n] = (int32_t)sum;
            }
        }
    }
    return 0;
}

int rt_interp_qrequantize(const rt_interp_call *call)
{
    ir_quant_range range;
    if (ir_qlinear_range(call->value, &range) != 0)
        return rt_interp_fail(call, "invalid quantizer attributes");
    const int32_t *mul = call->operands[IR_QQUANTIZE_SCALE]->data;
    cg_qmul m = {mul[IR_QMUL_M0], mul[IR_QMUL_LEFT_SHIFT], mul[IR_QMUL_RIGHT_SHIFT]};
    if (m.m0 < 0 || m.left_shift < 0 || m.left_shift > CG_QMUL_MAX_LEFT_SHIFT || m.right_shift < 0 ||
        m.right_shift > 31 || (m.left_shift > 0 && m.right_shift > 0))
        return rt_interp_fail(call, "invalid multiplier {%d, %d, %d}: expected M0 >= 0 and one shift of 0 to 31",
                              (int)m.m0, m.left_shift, m.right_shift);
    int32_t zero = (int32_t)ir_quant_zero_point(scalar_at(call->operands[IR_QQUANTIZE_ZERO_POINT]));
    const rt_tensor *acc = call->operands[IR_QQUANTIZE_X];
    const int32_t *sums = acc->data;
    for (int64_t i = 0; i < rt_tensor_numel(acc); i++)
        store_8bit(call->result, i, cg_requantize_round(sums[i], m, zero, (int32_t)range.qmin, (int32_t)range.qmax));
    return 0;
}

int rt_interp_qdequantize(const rt_interp_call *call)
{
    const rt_tensor *x = call->operands[IR_QDEQUANTIZE_X];
    float scale = scalar_at(call->operands[IR_QDEQUANTIZE_SCALE]);
    int64_t zero = 0;
    if (call->value->nops > IR_QDEQUANTIZE_ZERO_POINT)
        zero = (int64_t)ir_quant_zero_point(scalar_at(call->operands[IR_QDEQUANTIZE_ZERO_POINT]));
    float *y = call->result->data;
    for (int64_t i = 0; i < rt_tensor_numel(x); i++)
        y[i] = (float)(integer_at(x, i) - zero) * scale;
    return 0;
}
