/* Fixed-point requantization arithmetic for int8 kernels, in the gemmlowp
 * scheme: a real multiplier is stored as an int32 M0 in [2^30, 2^31) and a
 * power-of-two shift, and an int32 accumulator is scaled with a rounding
 * high multiply and a rounding right shift. The rounding follows
 * gemmlowp's SaturatingRoundingDoublingHighMul and RoundingDivideByPOT
 * bit for bit: the high multiply rounds ties up (toward +infinity) and the
 * shift rounds ties away from zero. These C functions compute (M0, shift)
 * at compile time and are the reference that the generated
 * requantization code is tested against. */
#ifndef QUADC_CODEGEN_QUANT_ARITH_H
#define QUADC_CODEGEN_QUANT_ARITH_H

#include <stdint.h>

/* Largest left shift a multiplier may need: real multipliers must be
 * below 2^CG_QMUL_MAX_LEFT_SHIFT. */
#define CG_QMUL_MAX_LEFT_SHIFT 30

/* A real multiplier as M0 * 2^(left_shift - right_shift - 31). At most one
 * of the shifts is nonzero. M0 = 0 with both shifts 0 encodes a multiplier
 * too small to change any int32 input other than to 0 (below 2^-32). */
typedef struct cg_qmul {
    int32_t m0;      /* in [2^30, 2^31), or 0 */
    int left_shift;  /* 0 .. CG_QMUL_MAX_LEFT_SHIFT, for multipliers >= 1 */
    int right_shift; /* 0 .. 31, for multipliers < 0.5 */
} cg_qmul;

/* Computes the fixed-point form of `real`. Returns 0, or -1 when real is
 * negative, not finite, or not below 2^CG_QMUL_MAX_LEFT_SHIFT. */
int cg_qmul_from_real(double real, cg_qmul *out);

/* Returns round(a * b / 2^31) with ties rounded up, and INT32_MAX for the
 * one overflowing input, a = b = INT32_MIN. */
int32_t cg_qmul_high(int32_t a, int32_t b);

/* Returns round(x / 2^exponent) with halves rounded away from zero, for
 * exponent in 0 .. 31. */
int32_t cg_qmul_rshift(int32_t x, int exponent);

/* Returns x scaled by m: the left shift saturates to the int32 range, then
 * cg_qmul_high by M0, then cg_qmul_rshift. The result is within one unit
 * of round(x * real) when x * 2^left_shift fits in int32; otherwise it is
 * at least M0 / 2^31 of the int32 limit, far beyond any 8-bit output. */
int32_t cg_qmul_apply(int32_t x, cg_qmul m);

/* Returns clamp(cg_qmul_apply(acc, m) + zero_point, qmin, qmax): the
 * quantized output for the int32 accumulator acc. */
int32_t cg_requantize(int32_t acc, cg_qmul m, int32_t zero_point, int32_t qmin, int32_t qmax);

/* Returns round(x * M0 * 2^(left_shift - right_shift - 31)) with ties
 * rounded up, from the exact 64-bit product x * M0 and one arithmetic
 * shift by 31 + right_shift - left_shift. Rounding once keeps the result
 * the integer nearest to x times the stored multiplier, where
 * cg_qmul_apply, rounding twice, is one unit off for products near a
 * half. The result is not saturated. */
int64_t cg_qmul_round(int32_t x, cg_qmul m);

/* Returns clamp(cg_qmul_round(acc, m) + zero_point, qmin, qmax), the
 * requantization of q.requantize (ir/ops.def). */
int32_t cg_requantize_round(int32_t acc, cg_qmul m, int32_t zero_point, int32_t qmin, int32_t qmax);

#endif
