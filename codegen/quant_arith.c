/* Fixed-point requantization arithmetic (gemmlowp scheme); see
 * quant_arith.h. Signed right shifts are written on non-negative values
 * only, so the results do not depend on the C implementation. */
#include "codegen/quant_arith.h"

#include <math.h>

int cg_qmul_from_real(double real, cg_qmul *out)
{
    out->m0 = 0;
    out->left_shift = 0;
    out->right_shift = 0;
    if (!isfinite(real) || real < 0 || real >= ldexp(1.0, CG_QMUL_MAX_LEFT_SHIFT))
        return -1;
    if (real == 0)
        return 0;
    int exponent;
    double q = frexp(real, &exponent); /* real = q * 2^exponent, q in [0.5, 1) */
    int64_t q_fixed = (int64_t)llround(q * 2147483648.0);
    if (q_fixed == (int64_t)1 << 31) {
        /* q rounded up to 1.0: use 0.5 with the next exponent. */
        q_fixed /= 2;
        exponent++;
    }
    if (exponent < -31)
        return 0; /* every |x| < 2^31 scales to below 0.5 */
    out->m0 = (int32_t)q_fixed;
    if (exponent > 0)
        out->left_shift = exponent;
    else
        out->right_shift = -exponent;
    if (out->left_shift > CG_QMUL_MAX_LEFT_SHIFT)
        return -1;
    return 0;
}

int32_t cg_qmul_high(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN)
        return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    /* The nudge is 2^30 for ab >= 0 and 1 - 2^30 below, and C division
     * truncates toward zero, so ties round up: 1.5 to 2 and -1.5 to -1
     * (gemmlowp's choice, kept for bit-exact results). */
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* floor(x / 2^exponent) without shifting a negative value. */
static int32_t floor_shift(int32_t x, int exponent)
{
    return x < 0 ? ~(~x >> exponent) : x >> exponent;
}

int32_t cg_qmul_rshift(int32_t x, int exponent)
{
    int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return floor_shift(x, exponent) + (remainder > threshold ? 1 : 0);
}

int32_t cg_qmul_apply(int32_t x, cg_qmul m)
{
    if (m.left_shift > 0) {
        int64_t shifted = (int64_t)x * ((int64_t)1 << m.left_shift);
        if (shifted > INT32_MAX)
            shifted = INT32_MAX;
        if (shifted < INT32_MIN)
            shifted = INT32_MIN;
        x = (int32_t)shifted;
    }
    return cg_qmul_rshift(cg_qmul_high(x, m.m0), m.right_shift);
}

int32_t cg_requantize(int32_t acc, cg_qmul m, int32_t zero_point, int32_t qmin, int32_t qmax)
{
    int64_t q = (int64_t)cg_qmul_apply(acc, m) + zero_point;
    if (q < qmin)
        return qmin;
    if (q > qmax)
        return qmax;
    return (int32_t)q;
}

int64_t cg_qmul_round(int32_t x, cg_qmul m)
{
    int shift = 31 + m.right_shift - m.left_shift; /* 1 .. 62 */
    int64_t product = (int64_t)x * (int64_t)m.m0;   /* |product| < 2^62 */
    int64_t rounded = product + ((int64_t)1 << (shift - 1));
    /* floor(rounded / 2^shift) without shifting a negative value. */
    return rounded < 0 ? ~(~rounded >> shift) : rounded >> shift;
}

int32_t cg_requantize_round(int32_t acc, cg_qmul m, int32_t zero_point, int32_t qmin, int32_t qmax)
{
    int64_t q = cg_qmul_round(acc, m) + zero_point;
    if (q < qmin)
        return qmin;
    if (q > qmax)
        return qmax;
    return (int32_t)q;
}
