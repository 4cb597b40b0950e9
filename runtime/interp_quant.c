/* Interpreter kernels of the quantization ops: fq.act and fq.weight, their
 * gradients grad.fq.input, grad.fq.scale and grad.fq.zero_point, and the
 * Quadapter scale qa.scale. The per-element math is the scalar reference in
 * ir/quant.h; this file only walks tensors and picks each element's channel.
 * The driver hands these kernels f32 operands (f16 and bf16 are widened). */
#include <math.h>
#include <stdlib.h>

#include "ir/quant.h"
#include "runtime/interp_ops.h"

/* Maps flat element indexes of a tensor to their channel along one axis:
 * channel(i) = (i / inner) % size, where inner is the element count of the
 * axes after `axis`. A per-tensor quantizer uses size 1. */
typedef struct channel_map {
    int64_t inner;
    int64_t size;
} channel_map;

static channel_map channel_map_of(const rt_tensor *t, int axis, int64_t nchannels)
{
    channel_map m = {1, 1};
    if (nchannels == 1 || axis < 0)
        return m;
    for (int i = axis + 1; i < t->rank; i++)
        m.inner *= t->dims[i];
    m.size = t->dims[axis];
    return m;
}

static int64_t channel_of(channel_map m, int64_t i)
{
    return m.size == 1 ? 0 : (i / m.inner) % m.size;
}

static bool all_f32(const rt_interp_call *call)
{
    for (int k = 0; k < call->value->nops; k++)
        if (call->operands[k]->dtype != IR_F32)
            return false;
    return call->result->dtype == IR_F32;
}

/* Rejects a scale that is not positive and finite, naming its channel. */
static int check_scales(const rt_interp_call *call, const rt_tensor *scale)
{
    const float *s = scale->data;
    int64_t n = rt_tensor_numel(scale);
    for (int64_t c = 0; c < n; c++)
        if (!(s[c] > 0.0f) || !isfinite(s[c]))
            return rt_interp_fail(call, "scale[%lld] is %.9g; scales must be positive and finite (run calibration "
                                  "before running a quantized graph)", (long long)c, (double)s[c]);
    return 0;
}

/* fq.act and fq.weight: x_hat = (clamp(round(x/s) + z, qmin, qmax) - z) * s
 * per element, with the scale and zero point of the element's channel. */
int rt_interp_fake_quant(const rt_interp_call *call)
{
    ir_quant_spec spec;
    if (ir_quant_spec_of(call->value, &spec) != 0)
        return rt_interp_fail(call, "invalid quantizer attributes");
    if (!all_f32(call))
        return rt_interp_unsupported(call, call->operands[0]->dtype);
    const rt_tensor *x = call->operands[0], *scale = call->operands[1], *zero_point = call->operands[2];
    if (check_scales(call, scale) != 0)
        return -1;
    channel_map m = channel_map_of(x, spec.axis, rt_tensor_numel(scale));
    const float *xs = x->data, *s = scale->data, *z = zero_point->data;
    float *y = call->result->data;
    int64_t n = rt_tensor_numel(x);
    for (int64_t i = 0; i < n; i++) {
        int64_t c = channel_of(m, i);
        y[i] = ir_fake_quant(xs[i], s[c], z[c], spec.range);
    }
    return 0;
}

/* grad.fq.input, grad.fq.scale and grad.fq.zero_point (dy, x, scale,
 * zero_point): dy times the derivative from ir/quant.h. The scale and
 * zero-point gradients sum over the elements that share a channel, in
 * double. */
int rt_interp_grad_fake_quant(const rt_interp_call *call)
{
    ir_quant_spec spec;
    if (ir_quant_spec_of(call->value, &spec) != 0)
        return rt_interp_fail(call, "invalid quantizer attributes");
    if (!all_f32(call))
        return rt_interp_unsupported(call, call->operands[0]->dtype);
    const rt_tensor *dy = call->operands[0], *x = call->operands[1];
    const rt_tensor *scale = call->operands[2], *zero_point = call->operands[3];
    if (check_scales(call, scale) != 0)
        return -1;
    int axis = spec.axis < 0 ? spec.axis + x->rank : spec.axis;
    int64_t nchannels = rt_tensor_numel(scale);
    channel_map m = channel_map_of(x, axis, nchannels);
    const float *g = dy->data, *xs = x->data, *s = scale->data, *z = zero_point->data;
    float *out = call->result->data;
    int64_t n = rt_tensor_numel(x);

    if (call->value->op == IR_OP_GRAD_FQ_INPUT) {
        for (int64_t i = 0; i < n; i++) {
            int64_t c = channel_of(m, i);
            out[i] = g[i] * ir_fake_quant_dx(xs[i], s[c], z[c], spec.range);
        }
        return 0;
    }

    double *sums = calloc((size_t)nchannels, sizeof *sums);
    if (!sums)
        return rt_interp_fail(call, "out of memory");
    bool wrt_scale = call->value->op == IR_OP_GRAD_FQ_SCALE;
    for (int64_t i = 0; i < n; i++) {
        int64_t c = channel_of(m, i);
        float local = wrt_scale ? ir_fake_quant_dscale(xs[i], s[c], z[c], spec.range)
                                : ir_fake_quant_dzero_point(xs[i], s[c], z[c], spec.range);
        sums[c] += (double)g[i] * (double)local;
    }
    for (int64_t c = 0; c < nchannels; c++)
        out[c] = (float)sums[c];
    free(sums);
    return 0;
}

/* qa.scale{axis, invert}(x, alpha): x[..., c, ...] * alpha[c] along axis,
 * or x / alpha[c] with invert=1 (one f32 division, as fold-quadapter
 * divides weight rows). */
int rt_interp_qa_scale(const rt_interp_call *call)
{
    if (!all_f32(call))
        return rt_interp_unsupported(call, call->operands[0]->dtype);
    const rt_tensor *x = call->operands[0], *alpha = call->operands[1];
    int axis = rt_interp_axis(ir_attr_int(call->value, "axis"), x->rank);
    bool invert = ir_attr_int(call->value, "invert") != 0;
    channel_map m = channel_map_of(x, axis, rt_tensor_numel(alpha));
    const float *xs = x->data, *a = alpha->data;
    float *y = call->result->data;
    int64_t n = rt_tensor_numel(x);
    for (int64_t i = 0; i < n; i++) {
        int64_t c = channel_of(m, i);
        y[i] = invert ? xs[i] / a[c] : xs[i] * a[c];
    }
    return 0;
}
