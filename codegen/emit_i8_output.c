/* Parts of the int8 GEMM and GEMV that do not depend on the tiling: the
 * descriptor checks and the multiply-add of one group of 4 k on each
 * instruction path. Also the output stages: zero-point correction, then
 * integer, f32, requantized or dequantized outputs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/gemm_i8_internal.h"

/* ---- small helpers ---- */

LLVMValueRef cg_i8_arg(cg_emit *e, LLVMValueRef args, int index)
{
    LLVMValueRef idx = cg_i64(e, index);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(e->b, e->ptr, args, &idx, 1, "");
    return LLVMBuildLoad2(e->b, e->ptr, p, "");
}

LLVMValueRef cg_i8_lane_mask(cg_emit *e, int lanes, int valid)
{
    LLVMValueRef bits[64];
    for (int l = 0; l < lanes; l++)
        bits[l] = LLVMConstInt(e->i1, l < valid, 0);
    return LLVMConstVector(bits, (unsigned)lanes);
}

LLVMValueRef cg_i8_min_i64(cg_emit *e, LLVMValueRef a, int64_t b)
{
    LLVMValueRef lt = LLVMBuildICmp(e->b, LLVMIntSLT, a, cg_i64(e, b), "");
    return LLVMBuildSelect(e->b, lt, a, cg_i64(e, b), "");
}

/* Loads `lanes` elements at base[index], only the lanes in mask when mask
 * is not NULL (the others read as zero). */
static LLVMValueRef load_lanes(cg_emit *e, LLVMTypeRef elem, LLVMValueRef base, LLVMValueRef index, int lanes,
                               LLVMValueRef mask)
{
    if (!mask)
        return cg_load(e, elem, base, index, lanes);
    LLVMTypeRef vty = LLVMVectorType(elem, (unsigned)lanes);
    LLVMTypeRef tys[2] = {vty, e->ptr};
    LLVMValueRef args[4] = {cg_gep(e, elem, base, index), cg_i32(e, 1), mask, LLVMConstNull(vty)};
    return cg_intrinsic2(e, "llvm.masked.load", tys, 2, args, 4);
}

static void store_lanes(cg_emit *e, LLVMValueRef v, LLVMTypeRef elem, LLVMValueRef base, LLVMValueRef index,
                        LLVMValueRef mask)
{
    if (!mask) {
        cg_store(e, v, elem, base, index);
        return;
    }
    LLVMTypeRef tys[2] = {LLVMTypeOf(v), e->ptr};
    LLVMValueRef args[4] = {v, cg_gep(e, elem, base, index), cg_i32(e, 1), mask};
    cg_intrinsic2(e, "llvm.masked.store", tys, 2, args, 4);
}

static LLVMValueRef splat_i32(cg_i8_gen *gen, int64_t v)
{
    return cg_consti(gen->e, gen->vi32, v);
}

static LLVMValueRef const_table(cg_i8_gen *gen, const char *table_name, const int32_t *values, int64_t count)
{
    cg_emit *e = gen->e;
    LLVMValueRef *elems = malloc(sizeof *elems * (size_t)count);
    if (!elems)
        return NULL;
    for (int64_t i = 0; i < count; i++)
        elems[i] = cg_i32(e, values[i]);
    LLVMTypeRef ty = LLVMArrayType2(e->i32, (uint64_t)count);
    char name[192];
    snprintf(name, sizeof name, "%s.%s", gen->prefix, table_name);
    LLVMValueRef g = LLVMAddGlobal(e->mod, ty, name);
    LLVMSetInitializer(g, LLVMConstArray2(e->i32, elems, (uint64_t)count));
    free(elems);
    LLVMSetGlobalConstant(g, 1);
    LLVMSetLinkage(g, LLVMPrivateLinkage);
    LLVMSetUnnamedAddress(g, LLVMGlobalUnnamedAddr);
    LLVMSetAlignment(g, 64);
    return g;
}

/* ---- descriptor checks and requantization constants ---- */

static bool report(cg_emit *e, const cg_gemm_i8_desc *d, const char *problem)
{
    ir_diag_file_error(e->d, NULL, "codegen: int8 GEMM '%s' (M=%lld K=%lld N=%lld): %s", d->name, (long long)d->m,
                       (long long)d->k, (long long)d->n, problem);
    e->errors++;
    return false;
}

static bool check_desc(cg_emit *e, const cg_gemm_i8_desc *d)
{
    const cg_gemm_i8_shape *s = &d->shape;
    if (d->m < 1 || d->k < 1 || d->n < 1)
        return report(e, d, "M, K and N must be at least 1");
    if (d->k > CG_I8_MAX_K)
        return report(e, d, "K is above 65536, where the int32 accumulator could overflow; split K");
    if ((d->lda && d->lda < d->k) || (d->ldc && d->ldc < d->n))
        return report(e, d, "lda must be 0 or at least K, and ldc 0 or at least N");
    if (s->mr < 1 || s->mr > CG_I8_MAX_MR || s->nvec < 1 || s->nvec > CG_I8_MAX_NVEC ||
        s->nr != s->nvec * s->vw || s->mc % s->mr != 0 || s->nc % s->nr != 0 || s->mc < 1 || s->nc < 1)
        return report(e, d, "invalid shape; use cg_gemm_i8_shape_for");
    if (s->isa == CG_GEMM_I8_VNNI && s->vw != 16)
        return report(e, d, "the VNNI path needs 512-bit vectors (vw = 16)");
    int32_t za_min = d->a_signed ? -128 : 0, za_max = d->a_signed ? 127 : 255;
    if (d->a_zero_point < za_min || d->a_zero_point > za_max)
        return report(e, d, "the activation zero point is outside the range of the activation type");
    if (d->output == CG_GEMM_I8_OUT_U8 || d->output == CG_GEMM_I8_OUT_S8) {
        int32_t lo = d->output == CG_GEMM_I8_OUT_U8 ? 0 : -128;
        if (d->out_zero_point < lo || d->out_zero_point > lo + 255)
            return report(e, d, "the output zero point is outside the range of the output type");
        if (!d->requant || (d->nrequant != 1 && d->nrequant != d->n))
            return report(e, d, "requantized outputs need 1 or N requantization multipliers");
        for (int64_t i = 0; i < d->nrequant; i++) {
            cg_qmul q;
            if (cg_qmul_from_real(d->requant[i], &q) != 0)
                return report(e, d, "a requantization multiplier is negative, not finite or not below 2^30");
        }
    }
    return true;
}

/* Computes (M0, shifts) per channel at compile time, as constant tables
 * padded to whole panels or as one shared multiplier. */
static bool setup_requant(cg_i8_gen *gen)
{
    const cg_gemm_i8_desc *d = gen->d;
    if (d->output != CG_GEMM_I8_OUT_U8 && d->output != CG_GEMM_I8_OUT_S8)
        return true;
    if (d->nrequant == 1) {
        cg_qmul_from_real(d->requant[0], &gen->shared);
        gen->any_left_shift = gen->shared.left_shift > 0;
        return true;
    }
    int64_t count = gen->panels * gen->s->nr;
    int32_t *tables = calloc((size_t)(3 * count), sizeof *tables);
    if (!tables)
        return report(gen->e, d, "out of memory for the requantization tables");
    int32_t *m0 = tables, *left = tables + count, *right = tables + 2 * count;
    for (int64_t i = 0; i < d->n; i++) {
        cg_qmul q;
        cg_qmul_from_real(d->requant[i], &q);
        m0[i] = q.m0;
        left[i] = q.left_shift;
        right[i] = q.right_shift;
        if (q.left_shift > 0)
            gen->any_left_shift = true;
    }
    gen->m0_table = const_table(gen, "m0", m0, count);
    gen->left_table = const_table(gen, "left_shift", left, count);
    gen->right_table = const_table(gen, "right_shift", right, count);
    free(tables);
    if (!gen->m0_table || !gen->left_table || !gen->right_table)
        return report(gen->e, d, "out of memory for the requantization tables");
    return true;
}

static LLVMTypeRef out_elem_type(cg_emit *e, cg_gemm_i8_output out)
{
    switch (out) {
    case CG_GEMM_I8_OUT_I32:
        return e->i32;
    case CG_GEMM_I8_OUT_F32:
    case CG_GEMM_I8_OUT_DEQUANT:
        return e->f32;
    case CG_GEMM_I8_OUT_U8:
    case CG_GEMM_I8_OUT_S8:
        break;
    }
    return e->i8;
}

bool cg_i8_gen_init(cg_i8_gen *gen, cg_emit *e, const cg_gemm_i8_desc *d, const char *kind)
{
    if (!check_desc(e, d))
        return false;
    memset(gen, 0, sizeof *gen);
    gen->e = e;
    gen->d = d;
    gen->s = &d->shape;
    snprintf(gen->prefix, sizeof gen->prefix, "%s.%d.%s", kind, e->kernel_count, d->name);
    gen->lda = d->lda ? d->lda : d->k;
    gen->ldc = d->ldc ? d->ldc : d->n;
    gen->groups = d->k / 4;
    gen->ktail = (int)(d->k % 4);
    gen->panels = (d->n + d->shape.nr - 1) / d->shape.nr;
    gen->panel_bytes = (gen->groups + (gen->ktail ? 1 : 0)) * d->shape.nr * 4;
    gen->za = d->a_zero_point + (d->a_signed ? 128 : 0);
    gen->vi32 = LLVMVectorType(e->i32, (unsigned)d->shape.vw);
    gen->out_elem = out_elem_type(e, d->output);
    return setup_requant(gen);
}

/* ---- multiply-add of one group ---- */

LLVMValueRef cg_i8_load_quad(cg_i8_gen *gen, LLVMValueRef arow, LLVMValueRef g, bool partial)
{
    cg_emit *e = gen->e;
    LLVMBuilderRef b = e->b;
    LLVMValueRef at = cg_gep(e, e->i8, arow, LLVMBuildMul(b, g, cg_i64(e, 4), ""));
    LLVMValueRef quad;
    if (!partial) {
        quad = LLVMBuildLoad2(b, e->i32, at, "");
        LLVMSetAlignment(quad, 1);
    } else {
        quad = cg_i32(e, 0);
        for (int i = 0; i < gen->ktail; i++) {
            LLVMValueRef byte = LLVMBuildZExt(b, cg_load(e, e->i8, at, cg_i64(e, i), 1), e->i32, "");
            quad = LLVMBuildOr(b, quad, LLVMBuildShl(b, byte, cg_i32(e, 8 * i), ""), "");
        }
    }
    /* a + 128 for s8 data: flipping the sign bit of each byte. Padding
     * bytes become 128 but meet zero weights. */
    if (gen->d->a_signed)
        quad = LLVMBuildXor(b, quad, cg_i32(e, (int32_t)0x80808080u), "");
    return quad;
}

LLVMValueRef cg_i8_load_b(cg_i8_gen *gen, LLVMValueRef bp, LLVMValueRef g, int j)
{
    cg_emit *e = gen->e;
    LLVMBuilderRef b = e->b;
    const cg_gemm_i8_shape *s = gen->s;
    LLVMTypeRef vbytes = LLVMVectorType(e->i8, (unsigned)(4 * s->vw));
    /* In i32 units of the panel: group g starts at g · NR. */
    LLVMValueRef at = LLVMBuildAdd(b, LLVMBuildMul(b, g, cg_i64(e, s->nr), ""), cg_i64(e, (int64_t)j * s->vw), "");
    LLVMValueRef v = LLVMBuildLoad2(b, s->isa == CG_GEMM_I8_VNNI ? gen->vi32 : vbytes, cg_gep(e, e->i32, bp, at), "");
    LLVMSetAlignment(v, 4); /* packed B need only be 4-byte aligned */
    if (s->isa == CG_GEMM_I8_PORTABLE)
        v = LLVMBuildSExt(b, v, LLVMVectorType(e->i16, (unsigned)(4 * s->vw)), "");
    return v;
}

LLVMTypeRef cg_i8_acc_type(cg_i8_gen *gen)
{
    int lanes = gen->s->isa == CG_GEMM_I8_VNNI ? gen->s->vw : 2 * gen->s->vw;
    return LLVMVectorType(gen->e->i32, (unsigned)lanes);
}

static LLVMValueRef shuffle_stride2(cg_emit *e, LLVMValueRef v, int lanes, int first)
{
    LLVMValueRef idx[128];
    for (int i = 0; i < lanes / 2; i++)
        idx[i] = cg_i32(e, 2 * i + first);
    return LLVMBuildShuffleVector(e->b, v, LLVMGetPoison(LLVMTypeOf(v)), LLVMConstVector(idx, (unsigned)lanes / 2),
                                  "");
}

/* Portable multiply-add of one group: the 4vw bytes of a (u8) and b (s8)
 * are widened to i16; the products of even and odd elements are summed
 * in i32, so no sum can saturate (|sum| <= 2 · 255 · 128). */
static LLVMValueRef dot_pairs(cg_i8_gen *gen, LLVMValueRef acc, LLVMValueRef a16, LLVMValueRef b16)
{
    cg_emit *e = gen->e;
    LLVMBuilderRef b = e->b;
    int lanes = 4 * gen->s->vw;
    LLVMTypeRef wide = LLVMVectorType(e->i32, (unsigned)lanes / 2);
    LLVMValueRef ae = LLVMBuildSExt(b, shuffle_stride2(e, a16, lanes, 0), wide, "");
    LLVMValueRef ao = LLVMBuildSExt(b, shuffle_stride2(e, a16, lanes, 1), wide, "");
    LLVMValueRef be = LLVMBuildSExt(b, shuffle_stride2(e, b16, lanes, 0), wide, "");
    LLVMValueRef bo = LLVMBuildSExt(b, shuffle_stride2(e, b16, lanes, 1), wide, "");
    LLVMValueRef sum = LLVMBuildAdd(b, LLVMBuildMul(b, ae, be, ""), LLVMBuildMul(b, ao, bo, ""), "");
    return LLVMBuildAdd(b, acc, sum, "");
}

LLVMValueRef cg_i8_madd(cg_i8_gen *gen, LLVMValueRef acc, LLVMValueRef quad, LLVMValueRef bvec)
{
    cg_emit *e = gen->e;
    int vw = gen->s->vw;
    LLVMValueRef splat = cg_splat(e, quad, vw);
    if (gen->s->isa == CG_GEMM_I8_VNNI) {
        LLVMValueRef args[3] = {acc, splat, bvec};
        return cg_intrinsic2(e, "llvm.x86.avx512.vpdpbusd.512", NULL, 0, args, 3);
    }
    LLVMTypeRef vbytes = LLVMVectorType(e->i8, (unsigned)(4 * vw));
    LLVMTypeRef vi16 = LLVMVectorType(e->i16, (unsigned)(4 * vw));
    LLVMValueRef a16 = LLVMBuildZExt(e->b, LLVMBuildBitCast(e->b, splat, vbytes, ""), vi16, "");
    return dot_pairs(gen, acc, a16, bvec);
}

LLVMValueRef cg_i8_acc_finish(cg_i8_gen *gen, LLVMValueRef acc)
{
    if (gen->s->isa == CG_GEMM_I8_VNNI)
        return acc;
    int lanes = 2 * gen->s->vw;
    return LLVMBuildAdd(gen->e->b, shuffle_stride2(gen->e, acc, lanes, 0), shuffle_stride2(gen->e, acc, lanes, 1),
                        "");
}

/* ---- output stages ---- */

/* Returns the requantized int32 values of acc for the vw columns at col
 * (before the zero point), the vector form of cg_qmul_apply. */
static LLVMValueRef requantize(cg_i8_gen *gen, LLVMValueRef acc, LLVMValueRef col)
{
    cg_emit *e = gen->e;
    LLVMBuilderRef b = e->b;
    int vw = gen->s->vw;
    LLVMValueRef m0, left, right;
    if (gen->m0_table) {
        m0 = cg_load(e, e->i32, gen->m0_table, col, vw);
        left = cg_load(e, e->i32, gen->left_table, col, vw);
        right = cg_load(e, e->i32, gen->right_table, col, vw);
    } else {
        m0 = splat_i32(gen, gen->shared.m0);
        left = splat_i32(gen, gen->shared.left_shift);
        right = splat_i32(gen, gen->shared.right_shift);
    }
    LLVMValueRef x = acc;
    if (gen->any_left_shift) {
        /* x << left, saturated to the int32 range. */
        LLVMValueRef hi = LLVMBuildAShr(b, splat_i32(gen, INT32_MAX), left, "");
        LLVMValueRef lo = LLVMBuildAShr(b, splat_i32(gen, INT32_MIN), left, "");
        LLVMValueRef shifted = LLVMBuildShl(b, x, left, "");
        shifted = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, x, lo, ""), splat_i32(gen, INT32_MIN), shifted, "");
        x = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, x, hi, ""), splat_i32(gen, INT32_MAX), shifted, "");
    }

    /* Rounding high multiply, ties up: (x · M0 + nudge) / 2^31 in i64. M0 is never
     * INT32_MIN, so the saturating case of cg_qmul_high cannot occur. */
    LLVMTypeRef vi64 = LLVMVectorType(e->i64, (unsigned)vw);
    LLVMValueRef ab = LLVMBuildMul(b, LLVMBuildSExt(b, x, vi64, ""), LLVMBuildSExt(b, m0, vi64, ""), "");
    LLVMValueRef nonneg = LLVMBuildICmp(b, LLVMIntSGE, ab, LLVMConstNull(vi64), "");
    LLVMValueRef nudge = LLVMBuildSelect(b, nonneg, cg_consti(e, vi64, (int64_t)1 << 30),
                                         cg_consti(e, vi64, 1 - ((int64_t)1 << 30)), "");
    LLVMValueRef q = LLVMBuildSDiv(b, LLVMBuildAdd(b, ab, nudge, ""), cg_consti(e, vi64, (int64_t)1 << 31), "");
    LLVMValueRef high = LLVMBuildTrunc(b, q, gen->vi32, "");

    /* Rounding right shift, ties away from zero. */
    LLVMValueRef mask = LLVMBuildSub(b, LLVMBuildShl(b, splat_i32(gen, 1), right, ""), splat_i32(gen, 1), "");
    LLVMValueRef remainder = LLVMBuildAnd(b, high, mask, "");
    LLVMValueRef negative = LLVMBuildICmp(b, LLVMIntSLT, high, LLVMConstNull(gen->vi32), "");
    LLVMValueRef threshold = LLVMBuildAdd(b, LLVMBuildAShr(b, mask, splat_i32(gen, 1), ""),
                                          LLVMBuildZExt(b, negative, gen->vi32, ""), "");
    LLVMValueRef round_up = LLVMBuildICmp(b, LLVMIntSGT, remainder, threshold, "");
    return LLVMBuildAdd(b, LLVMBuildAShr(b, high, right, ""), LLVMBuildZExt(b, round_up, gen->vi32, ""), "");
}

static LLVMValueRef clamp_i32(cg_i8_gen *gen, LLVMValueRef x, int64_t lo, int64_t hi)
{
    LLVMValueRef args[2] = {x, splat_i32(gen, lo)};
    x = cg_intrinsic(gen->e, "llvm.smax", gen->vi32, args, 2);
    args[0] = x;
    args[1] = splat_i32(gen, hi);
    return cg_intrinsic(gen->e, "llvm.smin", gen->vi32, args, 2);
}

/* Returns the integer value of f32 zero points: rounded half to even,
 * then converted to i32 (a scalar or a vector). */
static LLVMValueRef zero_point_i32(cg_emit *e, LLVMValueRef z, LLVMTypeRef int_type)
{
    z = cg_intrinsic(e, "llvm.roundeven", LLVMTypeOf(z), &z, 1);
    return LLVMBuildFPToSI(e->b, z, int_type, "");
}

void cg_i8_out_begin(cg_i8_gen *gen, cg_i8_out *out, LLVMValueRef args, LLVMValueRef c, LLVMValueRef row,
                     LLVMValueRef col)
{
    cg_emit *e = gen->e;
    const cg_gemm_i8_desc *d = gen->d;
    memset(out, 0, sizeof *out);
    out->c = c;
    out->row = row;
    out->col = col;
    if (gen->za != 0 || d->output == CG_GEMM_I8_OUT_DEQUANT)
        out->colsum = cg_i8_arg(e, args, CG_GEMM_I8_ARG_COLSUM);
    if (d->output == CG_GEMM_I8_OUT_F32)
        out->scale = cg_i8_arg(e, args, CG_GEMM_I8_ARG_SCALE);
    if (d->has_bias)
        out->bias = cg_i8_arg(e, args, CG_GEMM_I8_ARG_BIAS);
    if (d->output != CG_GEMM_I8_OUT_DEQUANT)
        return;
    out->rowsum = cg_i8_arg(e, args, CG_GEMM_I8_ARG_ROWSUM);
    out->w_scale = cg_i8_arg(e, args, CG_GEMM_I8_ARG_W_SCALE);
    out->w_zero = cg_i8_arg(e, args, CG_GEMM_I8_ARG_W_ZERO_POINT);
    out->x_scale = LLVMBuildLoad2(e->b, e->f32, cg_i8_arg(e, args, CG_GEMM_I8_ARG_X_SCALE), "x_scale");
    LLVMValueRef z = LLVMBuildLoad2(e->b, e->f32, cg_i8_arg(e, args, CG_GEMM_I8_ARG_X_ZERO_POINT), "");
    out->x_zero = zero_point_i32(e, z, e->i32);
}

/* The dequantizing output stage: acc − z_x · colsum[n] − z_w[c] · rowsum[m],
 * then (s_x · s_w[c]) · that, then + bias[n], in the order the
 * interpreter's q.linear uses, so the f32 results are equal. */
static LLVMValueRef dequantize(cg_i8_gen *gen, const cg_i8_out *out, LLVMValueRef acc, LLVMValueRef colsum,
                               LLVMValueRef col, int r, LLVMValueRef mask)
{
    cg_emit *e = gen->e;
    LLVMBuilderRef b = e->b;
    int vw = gen->s->vw;
    LLVMTypeRef vf32 = LLVMVectorType(e->f32, (unsigned)vw);
    LLVMValueRef sum = LLVMBuildSub(b, acc, LLVMBuildMul(b, colsum, cg_splat(e, out->x_zero, vw), ""), "");
    LLVMValueRef rowsum = cg_load(e, e->i32, out->rowsum, LLVMBuildAdd(b, out->row, cg_i64(e, r), ""), 1);
    LLVMValueRef w_zero, w_scale;
    if (gen->d->per_channel) {
        w_zero = zero_point_i32(e, load_lanes(e, e->f32, out->w_zero, col, vw, mask), gen->vi32);
        w_scale = load_lanes(e, e->f32, out->w_scale, col, vw, mask);
    } else {
        w_zero = cg_splat(e, zero_point_i32(e, LLVMBuildLoad2(b, e->f32, out->w_zero, ""), e->i32), vw);
        w_scale = cg_splat(e, LLVMBuildLoad2(b, e->f32, out->w_scale, ""), vw);
    }
    sum = LLVMBuildSub(b, sum, LLVMBuildMul(b, w_zero, cg_splat(e, rowsum, vw), ""), "");
    LLVMValueRef scale = LLVMBuildFMul(b, cg_splat(e, out->x_scale, vw), w_scale, "");
    LLVMValueRef y = LLVMBuildFMul(b, scale, LLVMBuildSIToFP(b, sum, vf32, ""), "");
    if (gen->d->has_bias)
        y = LLVMBuildFAdd(b, y, load_lanes(e, e->f32, out->bias, col, vw, mask), "");
    return y;
}

void cg_i8_out_store(cg_i8_gen *gen, const cg_i8_out *out, LLVMValueRef acc, int r, int j, LLVMValueRef mask)
{
    cg_emit *e = gen->e;
    LLVMBuilderRef b = e->b;
    const cg_gemm_i8_desc *d = gen->d;
    int vw = gen->s->vw;
    LLVMValueRef col = LLVMBuildAdd(b, out->col, cg_i64(e, (int64_t)j * vw), "");
    LLVMValueRef cidx = LLVMBuildAdd(b, cg_i64(e, r * gen->ldc), col, "");
    /* The column sums are padded to whole panels, so no mask is needed. */
    LLVMValueRef colsum = out->colsum ? cg_load(e, e->i32, out->colsum, col, vw) : NULL;
    if (gen->za != 0)
        acc = LLVMBuildSub(b, acc, LLVMBuildMul(b, colsum, splat_i32(gen, gen->za), ""), "");
    if (d->output == CG_GEMM_I8_OUT_DEQUANT) {
        store_lanes(e, dequantize(gen, out, acc, colsum, col, r, mask), e->f32, out->c, cidx, mask);
        return;
    }
    if (d->output == CG_GEMM_I8_OUT_F32) {
        LLVMValueRef x = LLVMBuildSIToFP(b, acc, LLVMVectorType(e->f32, (unsigned)vw), "");
        x = LLVMBuildFMul(b, x, load_lanes(e, e->f32, out->scale, col, vw, mask), "");
        if (d->has_bias)
            x = LLVMBuildFAdd(b, x, load_lanes(e, e->f32, out->bias, col, vw, mask), "");
        store_lanes(e, x, e->f32, out->c, cidx, mask);
        return;
    }
    if (d->has_bias)
        acc = LLVMBuildAdd(b, acc, load_lanes(e, e->i32, out->bias, col, vw, mask), "");
    if (d->output == CG_GEMM_I8_OUT_I32) {
        store_lanes(e, acc, e->i32, out->c, cidx, mask);
        return;
    }
    int64_t qmin = d->output == CG_GEMM_I8_OUT_U8 ? 0 : -128;
    /* Clamp before adding the zero point so the sum cannot wrap. */
    LLVMValueRef q = clamp_i32(gen, requantize(gen, acc, col), qmin - d->out_zero_point,
                               qmin + 255 - d->out_zero_point);
    q = LLVMBuildAdd(b, q, splat_i32(gen, d->out_zero_point), "");
    LLVMValueRef bytes = LLVMBuildTrunc(b, q, LLVMVectorType(e->i8, (unsigned)vw), "");
    store_lanes(e, bytes, e->i8, out->c, cidx, mask);
}
