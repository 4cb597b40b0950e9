/* Vectorizable float math: exp, log, tanh and GELU built from fma,
 * rint, shifts and bit casts, so they work on scalars and on vectors and
 * never call libm. Maximum relative errors (estimates from the truncation
 * terms below, checked against libm by test_codegen): exp and log ~2e-7,
 * tanh ~3e-7, well inside the 1e-6 the kernels need. */
#include <math.h>

#include "codegen/cg_internal.h"

static LLVMTypeRef int_type_like(cg_emit *e, LLVMTypeRef fty)
{
    if (LLVMGetTypeKind(fty) == LLVMVectorTypeKind)
        return LLVMVectorType(e->i32, LLVMGetVectorSize(fty));
    return e->i32;
}

LLVMValueRef cg_fma(cg_emit *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c)
{
    LLVMValueRef args[3] = {a, b, c};
    return cg_intrinsic(e, "llvm.fma", LLVMTypeOf(a), args, 3);
}

static LLVMValueRef select_lt(cg_emit *e, LLVMValueRef x, double bound, LLVMValueRef if_less)
{
    LLVMValueRef lt = LLVMBuildFCmp(e->b, LLVMRealOLT, x, cg_constf(e, LLVMTypeOf(x), bound), "");
    return LLVMBuildSelect(e->b, lt, if_less, x, "");
}

static LLVMValueRef select_gt(cg_emit *e, LLVMValueRef x, double bound, LLVMValueRef if_greater)
{
    LLVMValueRef gt = LLVMBuildFCmp(e->b, LLVMRealOGT, x, cg_constf(e, LLVMTypeOf(x), bound), "");
    return LLVMBuildSelect(e->b, gt, if_greater, x, "");
}

/* Horner evaluation of c[0] + c[1] z + ... + c[n-1] z^(n-1). */
static LLVMValueRef horner(cg_emit *e, LLVMValueRef z, const double *c, int n)
{
    LLVMTypeRef ty = LLVMTypeOf(z);
    LLVMValueRef p = cg_constf(e, ty, c[n - 1]);
    for (int i = n - 2; i >= 0; i--)
        p = cg_fma(e, p, z, cg_constf(e, ty, c[i]));
    return p;
}

/* 2^k for integer k in [-126, 127], built in the exponent field. */
static LLVMValueRef pow2i(cg_emit *e, LLVMValueRef k, LLVMTypeRef fty)
{
    LLVMTypeRef ity = LLVMTypeOf(k);
    LLVMValueRef biased = LLVMBuildAdd(e->b, k, cg_consti(e, ity, 127), "");
    LLVMValueRef bits = LLVMBuildShl(e->b, biased, cg_consti(e, ity, 23), "");
    return LLVMBuildBitCast(e->b, bits, fty, "");
}

/* exp(x) = 2^n * exp(r) with n = rint(x / ln 2) and |r| <= ln(2) / 2; the
 * Taylor polynomial of degree 7 has a truncation error below 6e-9 there.
 * x is clamped to [-104, 88.8], which keeps 2^n within two normal factors
 * and makes the result round to 0 below and to +inf above. */
LLVMValueRef cg_exp(cg_emit *e, LLVMValueRef x)
{
    static const double taylor[8] = {1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040};
    LLVMTypeRef ty = LLVMTypeOf(x);
    LLVMTypeRef ity = int_type_like(e, ty);

    LLVMValueRef t = select_lt(e, x, -104.0, cg_constf(e, ty, -104.0));
    t = select_gt(e, t, 88.8, cg_constf(e, ty, 88.8));
    LLVMValueRef scaled = LLVMBuildFMul(e->b, t, cg_constf(e, ty, 1.4426950408889634), "");
    LLVMValueRef n = cg_intrinsic(e, "llvm.rint", ty, &scaled, 1);
    /* ln 2 split so that n * ln2_hi is exact for |n| < 2^9. */
    LLVMValueRef r = cg_fma(e, n, cg_constf(e, ty, -0.693145751953125), t);
    r = cg_fma(e, n, cg_constf(e, ty, -1.428606765330187e-06), r);
    LLVMValueRef p = horner(e, r, taylor, 8);

    LLVMValueRef k = LLVMBuildFPToSI(e->b, n, ity, "");
    LLVMValueRef half = LLVMBuildAShr(e->b, k, cg_consti(e, ity, 1), "");
    LLVMValueRef rest = LLVMBuildSub(e->b, k, half, "");
    p = LLVMBuildFMul(e->b, p, pow2i(e, half, ty), "");
    p = LLVMBuildFMul(e->b, p, pow2i(e, rest, ty), "");

    LLVMValueRef is_nan = LLVMBuildFCmp(e->b, LLVMRealUNO, x, x, "");
    return LLVMBuildSelect(e->b, is_nan, x, p, "");
}

/* log(x) = e ln 2 + log(m) with m in [sqrt(1/2), sqrt(2)), and
 * log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172; the odd series
 * to s^11 leaves an error below 2e-11. Subnormal x is scaled by 2^23
 * first. Special cases: log(0) = -inf, log(x < 0) = NaN, log(inf) = inf. */
LLVMValueRef cg_log(cg_emit *e, LLVMValueRef x)
{
    static const double series[6] = {2.0, 2.0 / 3, 2.0 / 5, 2.0 / 7, 2.0 / 9, 2.0 / 11};
    LLVMTypeRef ty = LLVMTypeOf(x);
    LLVMTypeRef ity = int_type_like(e, ty);

    LLVMValueRef tiny = LLVMBuildFCmp(e->b, LLVMRealOLT, x, cg_constf(e, ty, 1.1754943508222875e-38), "");
    LLVMValueRef xs = LLVMBuildSelect(e->b, tiny, LLVMBuildFMul(e->b, x, cg_constf(e, ty, 8388608.0), ""), x, "");
    LLVMValueRef bias = LLVMBuildSelect(e->b, tiny, cg_consti(e, ity, 127 + 23), cg_consti(e, ity, 127), "");

    LLVMValueRef bits = LLVMBuildBitCast(e->b, xs, ity, "");
    LLVMValueRef expo = LLVMBuildAnd(e->b, LLVMBuildLShr(e->b, bits, cg_consti(e, ity, 23), ""),
                                     cg_consti(e, ity, 0xff), "");
    expo = LLVMBuildSub(e->b, expo, bias, "");
    LLVMValueRef mbits = LLVMBuildOr(e->b, LLVMBuildAnd(e->b, bits, cg_consti(e, ity, 0x7fffff), ""),
                                     cg_consti(e, ity, 0x3f800000), "");
    LLVMValueRef m = LLVMBuildBitCast(e->b, mbits, ty, "");
    LLVMValueRef big = LLVMBuildFCmp(e->b, LLVMRealOGT, m, cg_constf(e, ty, 1.4142135623730951), "");
    m = LLVMBuildSelect(e->b, big, LLVMBuildFMul(e->b, m, cg_constf(e, ty, 0.5), ""), m, "");
    expo = LLVMBuildSelect(e->b, big, LLVMBuildAdd(e->b, expo, cg_consti(e, ity, 1), ""), expo, "");

    LLVMValueRef one = cg_constf(e, ty, 1.0);
    LLVMValueRef s = LLVMBuildFDiv(e->b, LLVMBuildFSub(e->b, m, one, ""), LLVMBuildFAdd(e->b, m, one, ""), "");
    LLVMValueRef z = LLVMBuildFMul(e->b, s, s, "");
    LLVMValueRef logm = LLVMBuildFMul(e->b, s, horner(e, z, series, 6), "");
    LLVMValueRef ef = LLVMBuildSIToFP(e->b, expo, ty, "");
    LLVMValueRef y = cg_fma(e, ef, cg_constf(e, ty, 0.6931471805599453), logm);

    LLVMValueRef zero = LLVMBuildFCmp(e->b, LLVMRealOEQ, x, cg_constf(e, ty, 0.0), "");
    y = LLVMBuildSelect(e->b, zero, cg_constf(e, ty, -INFINITY), y, "");
    LLVMValueRef inf = LLVMBuildFCmp(e->b, LLVMRealOEQ, x, cg_constf(e, ty, INFINITY), "");
    y = LLVMBuildSelect(e->b, inf, x, y, "");
    LLVMValueRef bad = LLVMBuildFCmp(e->b, LLVMRealULT, x, cg_constf(e, ty, 0.0), ""); /* x < 0 or NaN */
    return LLVMBuildSelect(e->b, bad, cg_constf(e, ty, NAN), y, "");
}

/* tanh: the odd Taylor series to x^15 for |x| < 0.55 (truncation error
 * below 5e-8 relative), else sign(x) (1 - 2 / (exp(2|x|) + 1)), which has
 * no cancellation problem once |tanh| >= 0.5. */
LLVMValueRef cg_tanh(cg_emit *e, LLVMValueRef x)
{
    static const double odd[7] = {-1.0 / 3, 2.0 / 15, -17.0 / 315, 62.0 / 2835, -1382.0 / 155925,
                                  21844.0 / 6081075, -929569.0 / 638512875};
    LLVMTypeRef ty = LLVMTypeOf(x);
    LLVMValueRef a = cg_intrinsic(e, "llvm.fabs", ty, &x, 1);

    LLVMValueRef x2 = LLVMBuildFMul(e->b, x, x, "");
    LLVMValueRef x3 = LLVMBuildFMul(e->b, x2, x, "");
    LLVMValueRef small = cg_fma(e, x3, horner(e, x2, odd, 7), x);

    LLVMValueRef e2 = cg_exp(e, LLVMBuildFAdd(e->b, a, a, ""));
    LLVMValueRef one = cg_constf(e, ty, 1.0);
    LLVMValueRef frac = LLVMBuildFDiv(e->b, cg_constf(e, ty, 2.0), LLVMBuildFAdd(e->b, e2, one, ""), "");
    LLVMValueRef large_abs = LLVMBuildFSub(e->b, one, frac, "");
    LLVMValueRef sign_args[2] = {large_abs, x};
    LLVMValueRef large = cg_intrinsic(e, "llvm.copysign", ty, sign_args, 2);

    LLVMValueRef is_small = LLVMBuildFCmp(e->b, LLVMRealOLT, a, cg_constf(e, ty, 0.55), "");
    return LLVMBuildSelect(e->b, is_small, small, large, "");
}

/* GELU, tanh form: 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3).
 * Because 1 + tanh(u) = 2 / (1 + exp(-2u)), this computes
 * x / (1 + exp(-2u)), which avoids cancellation for large negative x. */
LLVMValueRef cg_gelu(cg_emit *e, LLVMValueRef x)
{
    LLVMTypeRef ty = LLVMTypeOf(x);
    LLVMValueRef x2 = LLVMBuildFMul(e->b, x, x, "");
    LLVMValueRef inner = cg_fma(e, LLVMBuildFMul(e->b, x2, cg_constf(e, ty, 0.044715), ""), x, x);
    LLVMValueRef minus_2u = LLVMBuildFMul(e->b, inner, cg_constf(e, ty, -2.0 * 0.7978845608028654), "");
    LLVMValueRef denom = LLVMBuildFAdd(e->b, cg_constf(e, ty, 1.0), cg_exp(e, minus_2u), "");
    return LLVMBuildFDiv(e->b, x, denom, "");
}
