/* Interpreter kernel of q.linear, written as the plain reference for the
 * JIT: quantize the input row, sum the integer products exactly in int64,
 * then scale and add the bias in f32 as the int8 GEMM's f32 output stage
 * does (ir/ops.def has the formula). */
#include <math.h>
#include <stdlib.h>

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
