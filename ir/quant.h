/* The uniform quantizer behind the fake-quant ops (fq.act, fq.weight and
 * their grad.fq.* gradients) and the Quadapter scale op qa.scale: integer
 * ranges, attribute decoding, shape rules and the scalar reference math that
 * the interpreter, the calibration code and the tests share.
 *
 * Quantizer, with s the scale and z the zero point rounded to an integer:
 *   q = clamp(round(x / s) + z, qmin, qmax),  x_hat = (q - z) * s
 * where round is round-half-to-even and x / s is one f32 division. */
#ifndef QUADC_IR_QUANT_H
#define QUADC_IR_QUANT_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "ir/ir.h"

#define IR_QUANT_MIN_BITS 2
#define IR_QUANT_MAX_BITS 8

/* Integer range of a quantizer. Asymmetric: [0, 2^bits - 1]. Symmetric:
 * [-2^(bits-1), 2^(bits-1) - 1], or [-(2^(bits-1) - 1), 2^(bits-1) - 1]
 * with narrow range (the default of fq.weight, so that -127..127 is
 * symmetric about zero at 8 bits). */
typedef struct ir_quant_range {
    int64_t qmin;
    int64_t qmax;
} ir_quant_range;

/* Fills *out for `bits` in [IR_QUANT_MIN_BITS, IR_QUANT_MAX_BITS]. Returns
 * -1 when bits is out of range or narrow is set without symmetric. */
int ir_quant_range_of(int64_t bits, bool symmetric, bool narrow, ir_quant_range *out);

/* A fake-quant op's decoded attributes. `axis` is the normalized channel
 * axis of fq.weight, or -1 for fq.act; whether the quantizer is per tensor
 * or per channel follows from the element count of its scale operand. */
typedef struct ir_quant_spec {
    int bits;
    bool symmetric;
    bool narrow;
    int axis;
    ir_quant_range range;
} ir_quant_spec;

/* Decodes fq.act, fq.weight or grad.fq.* value v. Returns -1 for any other
 * op or for attributes that the shape rule would reject. */
int ir_quant_spec_of(const ir_value *v, ir_quant_spec *out);

/* Returns true for fq.act and fq.weight. */
bool ir_is_fake_quant(ir_op op);

/* Shape rule of the quantization ops (fq.*, grad.fq.*, qa.scale), called by
 * ir_infer_type. Same contract as ir_infer_type. */
int ir_infer_quant_type(ir_op op, const ir_type *const *operands, int nops, const ir_attr *attrs, ir_type *out,
                        char *err, int errcap);

/* ---- scalar reference math ---- */

/* The zero point as the quantizer uses it: rounded half to even. */
static inline float ir_quant_zero_point(float zero_point)
{
    return nearbyintf(zero_point);
}

/* x / s + z before rounding: the position of x on the integer grid. It is
 * inside the clipping range when qmin <= position <= qmax. */
static inline float ir_quant_position(float x, float scale, float zero_point)
{
    return x / scale + ir_quant_zero_point(zero_point);
}

/* Returns x_hat, the fake-quantized x. Assumes scale > 0 and the default
 * floating-point rounding mode, under which nearbyintf rounds half to even. */
static inline float ir_fake_quant(float x, float scale, float zero_point, ir_quant_range r)
{
    float z = ir_quant_zero_point(zero_point);
    float q = nearbyintf(x / scale) + z;
    if (q < (float)r.qmin)
        q = (float)r.qmin;
    if (q > (float)r.qmax)
        q = (float)r.qmax;
    return (q - z) * scale;
}

/* d x_hat / d x by the straight-through estimator: 1 where x lies inside
 * the clipping range [(qmin - z) s, (qmax - z) s], else 0. */
static inline float ir_fake_quant_dx(float x, float scale, float zero_point, ir_quant_range r)
{
    float p = ir_quant_position(x, scale, zero_point);
    return p >= (float)r.qmin && p <= (float)r.qmax ? 1.0f : 0.0f;
}

/* d x_hat / d s, the LSQ step-size gradient (Esser et al., "Learned Step
 * Size Quantization", ICLR 2020), treating round() as the identity:
 * inside the range x_hat = round(x/s) s, so the derivative is
 * round(x/s) - x/s. Below the range x_hat = (qmin - z) s, giving qmin - z,
 * and above it qmax - z. */
static inline float ir_fake_quant_dscale(float x, float scale, float zero_point, ir_quant_range r)
{
    float z = ir_quant_zero_point(zero_point);
    float v = x / scale;
    float p = v + z;
    if (p < (float)r.qmin)
        return (float)r.qmin - z;
    if (p > (float)r.qmax)
        return (float)r.qmax - z;
    return nearbyintf(v) - v;
}

/* d x_hat / d z with round() as the identity: 0 inside the range, where z
 * cancels, and -s outside it, where x_hat = (qlimit - z) s. */
static inline float ir_fake_quant_dzero_point(float x, float scale, float zero_point, ir_quant_range r)
{
    float p = ir_quant_position(x, scale, zero_point);
    return p >= (float)r.qmin && p <= (float)r.qmax ? 0.0f : -scale;
}

#endif
