/* Emission of the int8 GEMM kernel (see gemm_i8.h for the math, the
 * packed layout and the calling convention).
 *
 * The microkernel keeps an MR x NR tile of int32 accumulators in
 * registers over all of K and applies the output stage before it stores,
 * so integer and requantized outputs need no partial sums in memory. K is
 * not blocked: at GPT-2 sizes a packed panel is K x NR bytes (at most
 * 3072 x 48 = 144 KiB) and stays in L2 while the strips of a task's MC
 * rows reuse it. Tasks are (MC-row block, NC-column block) tiles. Each
 * task walks its NR panels, then MR-row strips. One microkernel is built
 * per (rows, valid columns) variant, so an M tail of M % MR rows and an
 * N edge panel of N % NR columns get their own code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/gemm_i8.h"
#include "codegen/quant_arith.h"

/* K bound that keeps Σ_k (a - za) · b inside int32: 255 · 128 · 65536 < 2^31. */
#define GEMM_I8_MAX_K 65536
#define GEMM_I8_MAX_MR 8
#define GEMM_I8_MAX_NVEC 4

/* Everything the emitters of one GEMM share. */
typedef struct i8_gen {
    cg_emit *e;
    const cg_gemm_i8_desc *d;
    const cg_gemm_i8_shape *s;
    /* Prefix of the helper functions and tables, unique in the module
     * because it contains the kernel number: the microkernels depend on
     * the whole descriptor, so two GEMMs with equal names must not share
     * them. */
    char prefix[160];
    int64_t lda, ldc;
    int64_t groups;      /* full groups of 4 k */
    int ktail;           /* K % 4: bytes in the last, partial group */
    int64_t panels;
    int32_t za;          /* zero point applied to u8 data: a_zero_point (+ 128 for s8) */
    LLVMTypeRef vi32;    /* <vw x i32> */
    LLVMTypeRef out_elem;
    /* Requantization constants: per-channel tables (NULL when one
     * multiplier covers all channels) or the shared multiplier. */
    LLVMValueRef m0_table, left_table, right_table;
    cg_qmul shared;
    bool any_left_shift;
} i8_gen;

/* ---- small helpers ---- */

static LLVMValueRef arg_ptr(cg_emit *e, int index)
{
    LLVMValueRef idx = cg_i64(e, index);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(e->b, e->ptr, e->kctx, &idx, 1, "");
    return LLVMBuildLoad2(e->b, e->ptr, p, "");
}

static LLVMValueRef lane_mask(cg_emit *e, int lanes, int valid)
{
    LLVMValueRef bits[64];
    for (int l = 0; l < lanes; l++)
        bits[l] = LLVMConstInt(e->i1, l < valid, 0);
    return LLVMConstVector(bits, (unsigned)lanes);
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

static LLVMValueRef splat_i32(i8_gen *gen, int64_t v)
{
    return cg_consti(gen->e, gen->vi32, v);
}

static LLVMValueRef const_table(i8_gen *gen, const char *table_name, const int32_t *values, int64_t count)
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
    if (d->k > GEMM_I8_MAX_K)
        return report(e, d, "K is above 65536, where the int32 accumulator could overflow; split K");
    if ((d->lda && d->lda < d->k) || (d->ldc && d->ldc < d->n))
        return report(e, d, "lda must be 0 or at least K, and ldc 0 or at least N");
    if (s->mr < 1 || s->mr > GEMM_I8_MAX_MR || s->nvec < 1 || s->nvec > GEMM_I8_MAX_NVEC ||
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
static bool setup_requant(i8_gen *gen)
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

/* ---- output stages ---- */

/* Returns the requantized int32 values of acc for the vw columns at col
 * (before the zero point), the vector form of cg_qmul_apply. */
static LLVMValueRef requantize(i8_gen *gen, LLVMValueRef acc, LLVMValueRef col)
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

static LLVMValueRef clamp_i32(i8_gen *gen, LLVMValueRef x, int64_t lo, int64_t hi)
{
    LLVMValueRef args[2] = {x, splat_i32(gen, lo)};
    x = cg_intrinsic(gen->e, "llvm.smax", gen->vi32, args, 2);
    args[0] = x;
    args[1] = splat_i32(gen, hi);
    return cg_intrinsic(gen->e, "llvm.smin", gen->vi32, args, 2);
}

/* Pointers and column of one microkernel call, as its parameters. */
typedef struct mk_params {
    LLVMValueRef a, bp, c, col, colsum, scale, bias;
} mk_params;

/* Applies the zero-point correction and the output stage to the
 * accumulator of row r, vector j and stores the result. A non-NULL mask
 * selects the valid lanes of an edge vector. */
static void emit_output(i8_gen *gen, const mk_params *p, LLVMValueRef acc, int r, int j, LLVMValueRef mask)
{
    cg_emit *e = gen->e;
    LLVMBuilderRef b = e->b;
    const cg_gemm_i8_desc *d = gen->d;
    int vw = gen->s->vw;
    LLVMValueRef col = LLVMBuildAdd(b, p->col, cg_i64(e, (int64_t)j * vw), "");
    LLVMValueRef cidx = LLVMBuildAdd(b, cg_i64(e, r * gen->ldc), col, "");
    if (gen->za != 0) {
        /* The column sums are padded to whole panels, so no mask is needed. */
        LLVMValueRef colsum = cg_load(e, e->i32, p->colsum, col, vw);
        acc = LLVMBuildSub(b, acc, LLVMBuildMul(b, colsum, splat_i32(gen, gen->za), ""), "");
    }
    if (d->output == CG_GEMM_I8_OUT_F32) {
        LLVMValueRef x = LLVMBuildSIToFP(b, acc, LLVMVectorType(e->f32, (unsigned)vw), "");
        x = LLVMBuildFMul(b, x, load_lanes(e, e->f32, p->scale, col, vw, mask), "");
        if (d->has_bias)
            x = LLVMBuildFAdd(b, x, load_lanes(e, e->f32, p->bias, col, vw, mask), "");
        store_lanes(e, x, e->f32, p->c, cidx, mask);
        return;
    }
    if (d->has_bias)
        acc = LLVMBuildAdd(b, acc, load_lanes(e, e->i32, p->bias, col, vw, mask), "");
    if (d->output == CG_GEMM_I8_OUT_I32) {
        store_lanes(e, acc, e->i32, p->c, cidx, mask);
        return;
    }
    int64_t qmin = d->output == CG_GEMM_I8_OUT_U8 ? 0 : -128;
    /* Clamp before adding the zero point so the sum cannot wrap. */
    LLVMValueRef q = clamp_i32(gen, requantize(gen, acc, col), qmin - d->out_zero_point,
                               qmin + 255 - d->out_zero_point);
    q = LLVMBuildAdd(b, q, splat_i32(gen, d->out_zero_point), "");
    LLVMValueRef bytes = LLVMBuildTrunc(b, q, LLVMVectorType(e->i8, (unsigned)vw), "");
    store_lanes(e, bytes, e->i8, p->c, cidx, mask);
}

/* ---- microkernel ---- */

/* Returns the 4 activation bytes of row r, group g as the i32 lanes'
 * common value, flipped to u8 for s8 data. The last group of a K that is
 * not a multiple of 4 is read byte by byte, so A is never read past K. */
static LLVMValueRef load_quad(i8_gen *gen, LLVMValueRef arow, LLVMValueRef g, bool partial)
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

/* Accumulator type of one vector of columns: <vw x i32> for VNNI, and for
 * the portable path <2vw x i32> holding the sums of k pairs (0, 1) and
 * (2, 3) of each column, added together after the K loop. */
static LLVMTypeRef acc_type(i8_gen *gen)
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
static LLVMValueRef dot_pairs(i8_gen *gen, LLVMValueRef acc, LLVMValueRef a16, LLVMValueRef b16)
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

/* Multiplies group g of `rows` rows by nv vectors of the panel into acc
 * (rows x nvec accumulators, row-major). */
static void emit_group(i8_gen *gen, const mk_params *p, LLVMValueRef *arow, int rows, int nv, LLVMValueRef g,
                       bool partial, LLVMValueRef *acc)
{
    cg_emit *e = gen->e;
    LLVMBuilderRef b = e->b;
    const cg_gemm_i8_shape *s = gen->s;
    int vw = s->vw, nvec = s->nvec;
    LLVMTypeRef vbytes = LLVMVectorType(e->i8, (unsigned)(4 * vw));
    LLVMTypeRef vi16 = LLVMVectorType(e->i16, (unsigned)(4 * vw));
    LLVMValueRef gbase = LLVMBuildMul(b, g, cg_i64(e, s->nr), ""); /* in i32 units of the panel */
    LLVMValueRef bvec[GEMM_I8_MAX_NVEC];
    for (int j = 0; j < nv; j++) {
        LLVMValueRef at = cg_gep(e, e->i32, p->bp, LLVMBuildAdd(b, gbase, cg_i64(e, (int64_t)j * vw), ""));
        bvec[j] = LLVMBuildLoad2(b, s->isa == CG_GEMM_I8_VNNI ? gen->vi32 : vbytes, at, "");
        LLVMSetAlignment(bvec[j], 4); /* packed B need only be 4-byte aligned */
        if (s->isa == CG_GEMM_I8_PORTABLE)
            bvec[j] = LLVMBuildSExt(b, bvec[j], vi16, "");
    }
    for (int r = 0; r < rows; r++) {
        LLVMValueRef quad = cg_splat(e, load_quad(gen, arow[r], g, partial), vw);
        LLVMValueRef a16 = NULL;
        if (s->isa == CG_GEMM_I8_PORTABLE)
            a16 = LLVMBuildZExt(b, LLVMBuildBitCast(b, quad, vbytes, ""), vi16, "");
        for (int j = 0; j < nv; j++) {
            LLVMValueRef *slot = &acc[r * nvec + j];
            if (s->isa == CG_GEMM_I8_VNNI) {
                LLVMValueRef args[3] = {*slot, quad, bvec[j]};
                *slot = cg_intrinsic2(e, "llvm.x86.avx512.vpdpbusd.512", NULL, 0, args, 3);
            } else {
                *slot = dot_pairs(gen, *slot, a16, bvec[j]);
            }
        }
    }
}

/* Builds void mk(ptr a, ptr bp, ptr c, i64 col, ptr colsum, ptr scale,
 * ptr bias), once per (rows, nvalid). It multiplies rows [0, rows) of A
 * (at a, row stride lda) by the panel at bp and stores the output stage
 * of columns [col, col + nvalid) at c + col (row stride ldc). */
static LLVMValueRef microkernel(i8_gen *gen, int rows, int nvalid)
{
    cg_emit *e = gen->e;
    const cg_gemm_i8_shape *s = gen->s;
    char name[192];
    snprintf(name, sizeof name, "%s.mk%dx%d", gen->prefix, rows, nvalid);
    LLVMValueRef fn = LLVMGetNamedFunction(e->mod, name);
    if (fn)
        return fn;
    LLVMBasicBlockRef caller_block = LLVMGetInsertBlock(e->b);
    LLVMTypeRef params[7] = {e->ptr, e->ptr, e->ptr, e->i64, e->ptr, e->ptr, e->ptr};
    fn = LLVMAddFunction(e->mod, name, LLVMFunctionType(e->void_ty, params, 7, 0));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    cg_function_attrs(e, fn);
    unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
    for (unsigned i = 0; i < 7; i++)
        if (params[i] == e->ptr)
            LLVMAddAttributeAtIndex(fn, i + 1, LLVMCreateEnumAttribute(e->ctx, noalias, 0));
    mk_params p = {LLVMGetParam(fn, 0), LLVMGetParam(fn, 1), LLVMGetParam(fn, 2), LLVMGetParam(fn, 3),
                   LLVMGetParam(fn, 4), LLVMGetParam(fn, 5), LLVMGetParam(fn, 6)};
    LLVMPositionBuilderAtEnd(e->b, LLVMAppendBasicBlockInContext(e->ctx, fn, "entry"));

    int vw = s->vw, nvec = s->nvec;
    int nv = (nvalid + vw - 1) / vw;
    int partial_lanes = nvalid % vw;
    LLVMValueRef arow[GEMM_I8_MAX_MR];
    for (int r = 0; r < rows; r++)
        arow[r] = cg_gep(e, e->i8, p.a, cg_i64(e, r * gen->lda));

    LLVMValueRef acc[GEMM_I8_MAX_MR * GEMM_I8_MAX_NVEC], next[GEMM_I8_MAX_MR * GEMM_I8_MAX_NVEC];
    cg_loop l;
    LLVMValueRef g = cg_loop_begin(e, &l, cg_i64(e, 0), cg_i64(e, gen->groups), cg_i64(e, 1));
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < nv; j++) {
            acc[r * nvec + j] = cg_loop_carry(e, &l, LLVMConstNull(acc_type(gen)));
            next[r * nvec + j] = acc[r * nvec + j];
        }
    }
    emit_group(gen, &p, arow, rows, nv, g, false, next);
    LLVMValueRef carried[GEMM_I8_MAX_MR * GEMM_I8_MAX_NVEC];
    int ncarried = 0;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < nv; j++)
            carried[ncarried++] = next[r * nvec + j];
    cg_loop_end(e, &l, carried);
    ncarried = 0;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < nv; j++)
            acc[r * nvec + j] = l.carry[ncarried++];
    if (gen->ktail)
        emit_group(gen, &p, arow, rows, nv, cg_i64(e, gen->groups), true, acc);

    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < nv; j++) {
            LLVMValueRef sum = acc[r * nvec + j];
            if (s->isa == CG_GEMM_I8_PORTABLE) {
                sum = LLVMBuildAdd(e->b, shuffle_stride2(e, sum, 2 * vw, 0), shuffle_stride2(e, sum, 2 * vw, 1), "");
            }
            LLVMValueRef mask = partial_lanes && j == nv - 1 ? lane_mask(e, vw, partial_lanes) : NULL;
            emit_output(gen, &p, sum, r, j, mask);
        }
    }
    LLVMBuildRetVoid(e->b);
    LLVMPositionBuilderAtEnd(e->b, caller_block);
    return fn;
}

/* ---- the tiled product ---- */

/* Base pointers of the current task, loaded from the args array. */
typedef struct task_ptrs {
    LLVMValueRef a, packed, colsum, c, scale, bias;
} task_ptrs;

static void call_mk(i8_gen *gen, LLVMValueRef mk, const task_ptrs *t, LLVMValueRef row, LLVMValueRef bp,
                    LLVMValueRef col)
{
    cg_emit *e = gen->e;
    LLVMBuilderRef b = e->b;
    LLVMValueRef a = cg_gep(e, e->i8, t->a, LLVMBuildMul(b, row, cg_i64(e, gen->lda), ""));
    LLVMValueRef c = cg_gep(e, gen->out_elem, t->c, LLVMBuildMul(b, row, cg_i64(e, gen->ldc), ""));
    LLVMValueRef args[7] = {a, bp, c, col, t->colsum, t->scale, t->bias};
    LLVMBuildCall2(b, LLVMGlobalGetValueType(mk), mk, args, 7, "");
}

/* Emits the MR-row strips of rows [m0, m1) for the panel at bp. */
static void emit_strips(i8_gen *gen, const task_ptrs *t, LLVMValueRef m0, LLVMValueRef m1, LLVMValueRef bp,
                        LLVMValueRef col, int nvalid)
{
    cg_emit *e = gen->e;
    LLVMBuilderRef b = e->b;
    int mr = gen->s->mr;
    LLVMValueRef rows = LLVMBuildSub(b, m1, m0, "");
    LLVMValueRef full = LLVMBuildMul(b, LLVMBuildSDiv(b, rows, cg_i64(e, mr), ""), cg_i64(e, mr), "");
    LLVMValueRef full_end = LLVMBuildAdd(b, m0, full, "");
    LLVMValueRef mk = microkernel(gen, mr, nvalid);
    cg_loop l;
    LLVMValueRef row = cg_loop_begin(e, &l, m0, full_end, cg_i64(e, mr));
    call_mk(gen, mk, t, row, bp, col);
    cg_loop_end(e, &l, NULL);
    /* MC is a multiple of MR, so only the last row block ends in a
     * partial strip, of M % MR rows. */
    int tail = (int)(gen->d->m % mr);
    if (tail) {
        LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(b));
        LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(e->ctx, fn, "tail_rows");
        LLVMBasicBlockRef after = LLVMAppendBasicBlockInContext(e->ctx, fn, "after_tail");
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, full_end, m1, ""), then, after);
        LLVMPositionBuilderAtEnd(b, then);
        call_mk(gen, microkernel(gen, tail, nvalid), t, full_end, bp, col);
        LLVMBuildBr(b, after);
        LLVMPositionBuilderAtEnd(b, after);
    }
}

static LLVMValueRef min_i64(cg_emit *e, LLVMValueRef a, int64_t b)
{
    LLVMValueRef lt = LLVMBuildICmp(e->b, LLVMIntSLT, a, cg_i64(e, b), "");
    return LLVMBuildSelect(e->b, lt, a, cg_i64(e, b), "");
}

static LLVMTypeRef out_elem_type(cg_emit *e, cg_gemm_i8_output out)
{
    switch (out) {
    case CG_GEMM_I8_OUT_I32:
        return e->i32;
    case CG_GEMM_I8_OUT_F32:
        return e->f32;
    case CG_GEMM_I8_OUT_U8:
    case CG_GEMM_I8_OUT_S8:
        break;
    }
    return e->i8;
}

LLVMValueRef cg_emit_gemm_i8(cg_emit *e, const cg_gemm_i8_desc *d)
{
    if (!check_desc(e, d))
        return NULL;
    i8_gen gen;
    memset(&gen, 0, sizeof gen);
    gen.e = e;
    gen.d = d;
    gen.s = &d->shape;
    snprintf(gen.prefix, sizeof gen.prefix, "gemm_i8.%d.%s", e->kernel_count, d->name);
    gen.lda = d->lda ? d->lda : d->k;
    gen.ldc = d->ldc ? d->ldc : d->n;
    gen.groups = d->k / 4;
    gen.ktail = (int)(d->k % 4);
    gen.panels = (d->n + d->shape.nr - 1) / d->shape.nr;
    gen.za = d->a_zero_point + (d->a_signed ? 128 : 0);
    gen.vi32 = LLVMVectorType(e->i32, (unsigned)d->shape.vw);
    gen.out_elem = out_elem_type(e, d->output);
    if (!setup_requant(&gen))
        return NULL;

    const cg_gemm_i8_shape *s = gen.s;
    int64_t nblocks = (d->n + s->nc - 1) / s->nc;
    int64_t full_panels = d->n / s->nr;
    int edge = (int)(d->n % s->nr);
    int64_t panel_bytes = (gen.groups + (gen.ktail ? 1 : 0)) * s->nr * 4;

    char kernel_name[160];
    snprintf(kernel_name, sizeof kernel_name, "gemm_i8.%s", d->name);
    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, kernel_name, &begin, &end);
    LLVMBuilderRef b = e->b;
    task_ptrs t = {arg_ptr(e, CG_GEMM_I8_ARG_A),     arg_ptr(e, CG_GEMM_I8_ARG_PACKED),
                   arg_ptr(e, CG_GEMM_I8_ARG_COLSUM), arg_ptr(e, CG_GEMM_I8_ARG_C),
                   arg_ptr(e, CG_GEMM_I8_ARG_SCALE),  arg_ptr(e, CG_GEMM_I8_ARG_BIAS)};

    cg_loop tl;
    LLVMValueRef task = cg_loop_begin(e, &tl, begin, end, cg_i64(e, 1));
    LLVMValueRef mb = LLVMBuildSDiv(b, task, cg_i64(e, nblocks), "");
    LLVMValueRef nb = LLVMBuildSRem(b, task, cg_i64(e, nblocks), "");
    LLVMValueRef m0 = LLVMBuildMul(b, mb, cg_i64(e, s->mc), "m0");
    LLVMValueRef m1 = min_i64(e, LLVMBuildAdd(b, m0, cg_i64(e, s->mc), ""), d->m);
    LLVMValueRef p0 = LLVMBuildMul(b, nb, cg_i64(e, s->nc / s->nr), "p0");
    LLVMValueRef p1 = min_i64(e, LLVMBuildAdd(b, p0, cg_i64(e, s->nc / s->nr), ""), gen.panels);

    cg_loop pl;
    LLVMValueRef p = cg_loop_begin(e, &pl, p0, p1, cg_i64(e, 1));
    LLVMValueRef bp = cg_gep(e, e->i8, t.packed, LLVMBuildMul(b, p, cg_i64(e, panel_bytes), ""));
    LLVMValueRef col = LLVMBuildMul(b, p, cg_i64(e, s->nr), "col");
    if (edge) {
        LLVMValueRef kfn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(b));
        LLVMBasicBlockRef full = LLVMAppendBasicBlockInContext(e->ctx, kfn, "full_panel");
        LLVMBasicBlockRef part = LLVMAppendBasicBlockInContext(e->ctx, kfn, "edge_panel");
        LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(e->ctx, kfn, "panel_done");
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, p, cg_i64(e, full_panels), ""), full, part);
        LLVMPositionBuilderAtEnd(b, full);
        emit_strips(&gen, &t, m0, m1, bp, col, s->nr);
        LLVMBuildBr(b, join);
        LLVMPositionBuilderAtEnd(b, part);
        emit_strips(&gen, &t, m0, m1, bp, col, edge);
        LLVMBuildBr(b, join);
        LLVMPositionBuilderAtEnd(b, join);
    } else {
        emit_strips(&gen, &t, m0, m1, bp, col, s->nr);
    }
    cg_loop_end(e, &pl, NULL);
    cg_loop_end(e, &tl, NULL);
    cg_kernel_end(e);
    return fn;
}
