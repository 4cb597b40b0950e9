/* Emitters for ops that map output elements to input elements by affine
 * index maps: elementwise ops with numpy broadcasting, cast, the causal
 * mask, constants and the layout ops (transpose, slice, concat,
 * broadcast). All share one kernel shape: adjacent dimensions that every
 * operand walks contiguously are merged, the tasks are (row, chunk of the
 * last merged dimension), and the inner loop runs on vectors of the target
 * width with a scalar tail. */
#include <math.h>
#include <string.h>

#include "codegen/cg_internal.h"
#include "ir/fused.h"

#define MAX_OPERANDS (IR_FUSED_MAX_INPUTS + 1) /* operand 0 is the output */
#define CHUNK 4096     /* elements of the last dimension per task when it is long */

typedef struct affine_iter {
    int rank;
    int64_t dims[IR_MAX_RANK];
    int nops;
    int64_t strides[MAX_OPERANDS][IR_MAX_RANK];
    int64_t offset[MAX_OPERANDS];
    int slot[MAX_OPERANDS];
    LLVMTypeRef elem[MAX_OPERANDS];
} affine_iter;

/* Computes the output element from the loaded inputs (scalars, or vectors
 * of `lanes`). `row` is the task's row and `j` the index in the last
 * dimension of the first lane. */
typedef LLVMValueRef (*elem_fn)(cg_emit *e, const ir_value *v, LLVMValueRef *in, int lanes, LLVMValueRef row,
                                LLVMValueRef j);

static void contiguous_strides(const ir_type *t, int64_t *strides)
{
    int64_t s = 1;
    for (int i = t->rank - 1; i >= 0; i--) {
        strides[i] = s;
        s *= t->dims[i];
    }
}

/* Drops size-1 dimensions and merges neighbors that every operand walks
 * contiguously, so the inner loop is as long as possible. */
static void merge_dims(affine_iter *it)
{
    int r = 0;
    for (int d = 0; d < it->rank; d++) {
        if (it->dims[d] == 1)
            continue;
        it->dims[r] = it->dims[d];
        for (int k = 0; k < it->nops; k++)
            it->strides[k][r] = it->strides[k][d];
        r++;
    }
    it->rank = r;
    for (int d = it->rank - 2; d >= 0; d--) {
        bool mergeable = true;
        for (int k = 0; k < it->nops; k++)
            if (it->strides[k][d] != it->strides[k][d + 1] * it->dims[d + 1])
                mergeable = false;
        if (!mergeable)
            continue;
        it->dims[d] *= it->dims[d + 1];
        for (int k = 0; k < it->nops; k++)
            it->strides[k][d] = it->strides[k][d + 1];
        for (int dd = d + 1; dd < it->rank - 1; dd++) {
            it->dims[dd] = it->dims[dd + 1];
            for (int k = 0; k < it->nops; k++)
                it->strides[k][dd] = it->strides[k][dd + 1];
        }
        it->rank--;
    }
    if (it->rank == 0) {
        it->rank = 1;
        it->dims[0] = 1;
        for (int k = 0; k < it->nops; k++)
            it->strides[k][0] = 0;
    }
}

/* Loads operand k at element index `index` (vector when lanes > 1 and the
 * inner stride is 1, a splat when it is 0). */
static LLVMValueRef load_operand(cg_emit *e, const affine_iter *it, LLVMValueRef *bufs, int k, LLVMValueRef index,
                                 int64_t inner_stride, int lanes)
{
    if (inner_stride == 0 && lanes > 1)
        return cg_splat(e, cg_load(e, it->elem[k], bufs[k], index, 1), lanes);
    return cg_load(e, it->elem[k], bufs[k], index, lanes);
}

/* Emits the inner loop over j in [j0, j1) with `lanes` per step; returns
 * the first j it did not process. */
static LLVMValueRef emit_inner(cg_emit *e, const affine_iter *it, const ir_value *v, elem_fn fn, LLVMValueRef *bufs,
                               LLVMValueRef *base, LLVMValueRef row, LLVMValueRef j0, LLVMValueRef j1, int lanes)
{
    int last = it->rank - 1;
    cg_loop l;
    LLVMValueRef stop = lanes > 1 ? LLVMBuildSub(e->b, j1, cg_i64(e, lanes - 1), "") : j1;
    LLVMValueRef j = cg_loop_begin(e, &l, j0, stop, cg_i64(e, lanes));
    LLVMValueRef in[MAX_OPERANDS];
    for (int k = 1; k < it->nops; k++) {
        int64_t s = it->strides[k][last];
        LLVMValueRef idx = LLVMBuildAdd(e->b, base[k], LLVMBuildMul(e->b, j, cg_i64(e, s), ""), "");
        in[k] = load_operand(e, it, bufs, k, idx, s, lanes);
    }
    LLVMValueRef out = fn(e, v, in, lanes, row, j);
    LLVMValueRef oidx = LLVMBuildAdd(e->b, base[0], LLVMBuildMul(e->b, j, cg_i64(e, it->strides[0][last]), ""), "");
    cg_store(e, out, it->elem[0], bufs[0], oidx);
    cg_loop_end(e, &l, NULL);
    return l.iv;
}

static void emit_affine(cg_emit *e, const char *what, affine_iter *it, const ir_value *v, elem_fn fn, bool merge)
{
    if (merge)
        merge_dims(it);
    int last = it->rank - 1;
    int64_t inner = it->dims[last];
    int64_t rows = 1;
    for (int d = 0; d < last; d++)
        rows *= it->dims[d];
    int64_t chunk = inner > 2 * CHUNK ? CHUNK : inner;
    int64_t nchunks = (inner + chunk - 1) / chunk;

    bool vectorizable = true;
    for (int k = 0; k < it->nops; k++) {
        int64_t s = it->strides[k][last];
        if (s != 0 && s != 1)
            vectorizable = false;
    }
    if (it->strides[0][last] != 1)
        vectorizable = false;

    LLVMValueRef begin, end;
    LLVMValueRef fnref = cg_kernel_begin(e, what, &begin, &end);
    LLVMValueRef bufs[MAX_OPERANDS];
    for (int k = 0; k < it->nops; k++)
        bufs[k] = cg_buf(e, it->slot[k]);

    cg_loop tl;
    LLVMValueRef t = cg_loop_begin(e, &tl, begin, end, cg_i64(e, 1));
    LLVMValueRef row = LLVMBuildSDiv(e->b, t, cg_i64(e, nchunks), "row");
    LLVMValueRef c = LLVMBuildSRem(e->b, t, cg_i64(e, nchunks), "");
    LLVMValueRef j0 = LLVMBuildMul(e->b, c, cg_i64(e, chunk), "");
    LLVMValueRef j1 = LLVMBuildAdd(e->b, j0, cg_i64(e, chunk), "");
    LLVMValueRef over = LLVMBuildICmp(e->b, LLVMIntSGT, j1, cg_i64(e, inner), "");
    j1 = LLVMBuildSelect(e->b, over, cg_i64(e, inner), j1, "");

    /* Row index -> per-operand base offsets. */
    LLVMValueRef base[MAX_OPERANDS];
    for (int k = 0; k < it->nops; k++)
        base[k] = cg_i64(e, it->offset[k]);
    LLVMValueRef rest = row;
    for (int d = last - 1; d >= 0; d--) {
        LLVMValueRef idx = d > 0 ? LLVMBuildSRem(e->b, rest, cg_i64(e, it->dims[d]), "") : rest;
        if (d > 0)
            rest = LLVMBuildSDiv(e->b, rest, cg_i64(e, it->dims[d]), "");
        for (int k = 0; k < it->nops; k++)
            if (it->strides[k][d] != 0)
                base[k] = LLVMBuildAdd(e->b, base[k], LLVMBuildMul(e->b, idx, cg_i64(e, it->strides[k][d]), ""), "");
    }

    LLVMValueRef jtail = j0;
    if (vectorizable && inner >= e->gs.vw)
        jtail = emit_inner(e, it, v, fn, bufs, base, row, j0, j1, e->gs.vw);
    emit_inner(e, it, v, fn, bufs, base, row, jtail, j1, 1);
    cg_loop_end(e, &tl, NULL);
    cg_kernel_end(e);

    cg_launch(e, fnref, rows * nchunks, 1, rows * inner);
}

/* ---- elementwise ops ---- */

static bool is_unsigned(ir_dtype t)
{
    return t == IR_U8;
}

static LLVMValueRef round_to_dtype(cg_emit *e, LLVMValueRef x, ir_dtype to)
{
    if (to != IR_F16 && to != IR_BF16)
        return x;
    LLVMTypeRef ty = LLVMTypeOf(x);
    LLVMTypeRef narrow = to == IR_F16 ? LLVMHalfTypeInContext(e->ctx) : LLVMBFloatTypeInContext(e->ctx);
    if (LLVMGetTypeKind(ty) == LLVMVectorTypeKind)
        narrow = LLVMVectorType(narrow, LLVMGetVectorSize(ty));
    return LLVMBuildFPExt(e->b, LLVMBuildFPTrunc(e->b, x, narrow, ""), ty, "");
}

/* Integer to integer casts saturate to the target range, like float to
 * integer casts do. */
static LLVMValueRef cast_int_int(cg_emit *e, LLVMValueRef x, ir_dtype from, ir_dtype to, LLVMTypeRef to_ty)
{
    LLVMTypeRef from_ty = LLVMTypeOf(x);
    unsigned from_bits = LLVMGetIntTypeWidth(LLVMGetTypeKind(from_ty) == LLVMVectorTypeKind
                                                 ? LLVMGetElementType(from_ty) : from_ty);
    /* Widen to i64 first, clamp there, then truncate. */
    LLVMTypeRef wide = LLVMGetTypeKind(from_ty) == LLVMVectorTypeKind
                           ? LLVMVectorType(e->i64, LLVMGetVectorSize(from_ty)) : e->i64;
    LLVMValueRef w = x;
    if (from_bits < 64)
        w = is_unsigned(from) ? LLVMBuildZExt(e->b, x, wide, "") : LLVMBuildSExt(e->b, x, wide, "");
    int64_t lo, hi;
    switch (to) {
    case IR_I8: lo = -128; hi = 127; break;
    case IR_U8: lo = 0; hi = 255; break;
    case IR_I32: lo = INT32_MIN; hi = INT32_MAX; break;
    default: lo = INT64_MIN; hi = INT64_MAX; break;
    }
    LLVMValueRef lt = LLVMBuildICmp(e->b, LLVMIntSLT, w, cg_consti(e, wide, lo), "");
    w = LLVMBuildSelect(e->b, lt, cg_consti(e, wide, lo), w, "");
    LLVMValueRef gt = LLVMBuildICmp(e->b, LLVMIntSGT, w, cg_consti(e, wide, hi), "");
    w = LLVMBuildSelect(e->b, gt, cg_consti(e, wide, hi), w, "");
    return to == IR_I64 ? w : LLVMBuildTrunc(e->b, w, to_ty, "");
}

static LLVMValueRef emit_cast(cg_emit *e, const ir_value *v, ir_dtype from, LLVMValueRef x, int lanes)
{
    ir_dtype to = v->type.dtype;
    LLVMTypeRef to_ty = cg_vec_type(cg_elem_type(e, to), lanes);
    bool ffrom = cg_is_float(from), fto = cg_is_float(to);
    if (ffrom && fto)
        return round_to_dtype(e, x, to);
    if (!ffrom && fto) {
        LLVMValueRef f = is_unsigned(from) ? LLVMBuildUIToFP(e->b, x, to_ty, "") : LLVMBuildSIToFP(e->b, x, to_ty, "");
        return round_to_dtype(e, f, to);
    }
    if (ffrom && !fto) {
        /* Round half to even (rint under the default rounding mode), then
         * convert with saturation; NaN becomes 0. */
        LLVMValueRef r = cg_intrinsic(e, "llvm.rint", LLVMTypeOf(x), &x, 1);
        LLVMTypeRef tys[2] = {to_ty, LLVMTypeOf(x)};
        return cg_intrinsic2(e, is_unsigned(to) ? "llvm.fptoui.sat" : "llvm.fptosi.sat", tys, 2, &r, 1);
    }
    return cast_int_int(e, x, from, to, to_ty);
}

static LLVMValueRef emit_int_binary(cg_emit *e, ir_op op, bool uns, LLVMValueRef a, LLVMValueRef b)
{
    LLVMTypeRef ty = LLVMTypeOf(a);
    switch (op) {
    case IR_OP_ADD:
        return LLVMBuildAdd(e->b, a, b, "");
    case IR_OP_SUB:
        return LLVMBuildSub(e->b, a, b, "");
    case IR_OP_MUL:
        return LLVMBuildMul(e->b, a, b, "");
    case IR_OP_DIV: {
        /* Division by zero gives 0 instead of undefined behavior. */
        LLVMValueRef zero = LLVMBuildICmp(e->b, LLVMIntEQ, b, cg_consti(e, ty, 0), "");
        LLVMValueRef safe = LLVMBuildSelect(e->b, zero, cg_consti(e, ty, 1), b, "");
        LLVMValueRef q = uns ? LLVMBuildUDiv(e->b, a, safe, "") : LLVMBuildSDiv(e->b, a, safe, "");
        return LLVMBuildSelect(e->b, zero, cg_consti(e, ty, 0), q, "");
    }
    case IR_OP_MAXIMUM:
    case IR_OP_MINIMUM: {
        LLVMIntPredicate pred = uns ? LLVMIntUGT : LLVMIntSGT;
        if (op == IR_OP_MINIMUM)
            pred = uns ? LLVMIntULT : LLVMIntSLT;
        return LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, pred, a, b, ""), a, b, "");
    }
    default:
        return a;
    }
}

static LLVMValueRef emit_float_binary(cg_emit *e, ir_op op, LLVMValueRef a, LLVMValueRef b)
{
    switch (op) {
    case IR_OP_ADD:
        return LLVMBuildFAdd(e->b, a, b, "");
    case IR_OP_SUB:
        return LLVMBuildFSub(e->b, a, b, "");
    case IR_OP_MUL:
        return LLVMBuildFMul(e->b, a, b, "");
    case IR_OP_DIV:
        return LLVMBuildFDiv(e->b, a, b, "");
    case IR_OP_MAXIMUM:
    case IR_OP_MINIMUM: {
        /* NaN in either operand gives NaN, as numpy does. */
        LLVMValueRef args[2] = {a, b};
        return cg_intrinsic(e, op == IR_OP_MAXIMUM ? "llvm.maximum" : "llvm.minimum", LLVMTypeOf(a), args, 2);
    }
    default:
        return a;
    }
}

static LLVMValueRef emit_unary(cg_emit *e, const ir_value *v, bool isf, bool uns, LLVMValueRef x)
{
    LLVMTypeRef ty = LLVMTypeOf(x);
    switch (v->op) {
    case IR_OP_NEG:
        return isf ? LLVMBuildFNeg(e->b, x, "") : LLVMBuildNeg(e->b, x, "");
    case IR_OP_EXP:
        return cg_exp(e, x);
    case IR_OP_LOG:
        return cg_log(e, x);
    case IR_OP_SQRT:
        return cg_intrinsic(e, "llvm.sqrt", ty, &x, 1);
    case IR_OP_RSQRT:
        return LLVMBuildFDiv(e->b, cg_constf(e, ty, 1.0), cg_intrinsic(e, "llvm.sqrt", ty, &x, 1), "");
    case IR_OP_TANH:
        return cg_tanh(e, x);
    case IR_OP_GELU:
        return cg_gelu(e, x);
    case IR_OP_RELU:
        if (isf) /* NaN stays NaN */
            return LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealOLT, x, cg_constf(e, ty, 0), ""),
                                   cg_constf(e, ty, 0), x, "");
        if (uns)
            return x;
        return LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntSGT, x, cg_consti(e, ty, 0), ""), x,
                               cg_consti(e, ty, 0), "");
    case IR_OP_ABS:
        if (isf)
            return cg_intrinsic(e, "llvm.fabs", ty, &x, 1);
        if (uns)
            return x;
        return LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, x, cg_consti(e, ty, 0), ""),
                               LLVMBuildNeg(e->b, x, ""), x, "");
    case IR_OP_SCALE:
        return LLVMBuildFMul(e->b, x, cg_constf(e, ty, ir_attr_float(v, "factor")), "");
    default:
        return x;
    }
}

static LLVMValueRef elementwise_body(cg_emit *e, const ir_value *v, LLVMValueRef *in, int lanes, LLVMValueRef row,
                                     LLVMValueRef j)
{
    ir_dtype in_dtype = e->g->values[v->ops[0]]->type.dtype;
    bool isf = cg_is_float(in_dtype), uns = is_unsigned(in_dtype);
    if (v->op == IR_OP_CAST)
        return emit_cast(e, v, in_dtype, in[1], lanes);
    LLVMValueRef y;
    if (v->nops == 2)
        y = isf ? emit_float_binary(e, v->op, in[1], in[2]) : emit_int_binary(e, v->op, uns, in[1], in[2]);
    else
        y = emit_unary(e, v, isf, uns, in[1]);
    /* An f16 or bf16 result rounds once, after the op, as the interpreter
     * does; it is stored widened to f32. */
    return isf ? round_to_dtype(e, y, v->type.dtype) : y;
}

static void init_iter(cg_emit *e, affine_iter *it, const ir_value *v)
{
    memset(it, 0, sizeof *it);
    it->rank = v->type.rank;
    memcpy(it->dims, v->type.dims, sizeof(int64_t) * (size_t)v->type.rank);
    it->nops = 1;
    contiguous_strides(&v->type, it->strides[0]);
    it->slot[0] = e->plan->slot[v->id];
    it->elem[0] = cg_elem_type(e, v->type.dtype);
}

/* Adds operand `id` read with numpy broadcasting against the output. */
static void add_broadcast_operand(cg_emit *e, affine_iter *it, int id)
{
    const ir_type *t = &e->g->values[id]->type;
    int k = it->nops++;
    int64_t own[IR_MAX_RANK];
    contiguous_strides(t, own);
    for (int d = 0; d < it->rank; d++) {
        int td = d - (it->rank - t->rank);
        it->strides[k][d] = (td >= 0 && t->dims[td] != 1) ? own[td] : 0;
    }
    it->slot[k] = e->plan->slot[id];
    it->elem[k] = cg_elem_type(e, t->dtype);
}

int cg_emit_elementwise(cg_emit *e, const ir_value *v)
{
    affine_iter it;
    init_iter(e, &it, v);
    for (int k = 0; k < v->nops; k++)
        add_broadcast_operand(e, &it, v->ops[k]);
    emit_affine(e, ir_op_get(v->op)->name, &it, v, elementwise_body, true);
    return 0;
}

static LLVMValueRef causal_mask_body(cg_emit *e, const ir_value *v, LLVMValueRef *in, int lanes, LLVMValueRef row,
                                     LLVMValueRef j)
{
    int64_t rows_per_matrix = v->type.dims[v->type.rank - 2];
    LLVMValueRef i = LLVMBuildSRem(e->b, row, cg_i64(e, rows_per_matrix), "");
    LLVMValueRef limit = LLVMBuildAdd(e->b, i, cg_i64(e, ir_attr_int(v, "offset")), "");
    LLVMValueRef jv = cg_splat(e, j, lanes);
    if (lanes > 1) {
        LLVMValueRef iota[64];
        for (int l = 0; l < lanes; l++)
            iota[l] = cg_i64(e, l);
        jv = LLVMBuildAdd(e->b, jv, LLVMConstVector(iota, (unsigned)lanes), "");
    }
    LLVMValueRef masked = LLVMBuildICmp(e->b, LLVMIntSGT, jv, cg_splat(e, limit, lanes), "");
    LLVMTypeRef ty = LLVMTypeOf(in[1]);
    return LLVMBuildSelect(e->b, masked, cg_constf(e, ty, -INFINITY), in[1], "");
}

int cg_emit_causal_mask(cg_emit *e, const ir_value *v)
{
    affine_iter it;
    init_iter(e, &it, v);
    add_broadcast_operand(e, &it, v->ops[0]);
    /* Keep the last two dimensions apart: the body needs (i, j). */
    int64_t t2 = v->type.dims[v->type.rank - 1];
    it.rank = 2;
    it.dims[1] = t2;
    it.dims[0] = ir_type_numel(&v->type) / t2;
    for (int k = 0; k < 2; k++) {
        it.strides[k][0] = t2;
        it.strides[k][1] = 1;
    }
    emit_affine(e, "causal_mask", &it, v, causal_mask_body, false);
    return 0;
}

static LLVMValueRef const_body(cg_emit *e, const ir_value *v, LLVMValueRef *in, int lanes, LLVMValueRef row,
                               LLVMValueRef j)
{
    LLVMTypeRef ty = cg_vec_type(cg_elem_type(e, v->type.dtype), lanes);
    double value = ir_attr_float(v, "value");
    if (cg_is_float(v->type.dtype))
        return cg_constf(e, ty, value);
    return cg_consti(e, ty, (int64_t)nearbyint(value));
}

int cg_emit_const(cg_emit *e, const ir_value *v)
{
    affine_iter it;
    init_iter(e, &it, v);
    emit_affine(e, "const", &it, v, const_body, true);
    return 0;
}

static LLVMValueRef round_body(cg_emit *e, const ir_value *v, LLVMValueRef *in, int lanes, LLVMValueRef row,
                               LLVMValueRef j)
{
    return round_to_dtype(e, in[1], v->type.dtype);
}

int cg_emit_round_result(cg_emit *e, const ir_value *v)
{
    affine_iter it;
    init_iter(e, &it, v);
    it.nops = 2;
    memcpy(it.strides[1], it.strides[0], sizeof it.strides[0]);
    it.slot[1] = it.slot[0];
    it.elem[1] = it.elem[0];
    emit_affine(e, "round", &it, v, round_body, true);
    return 0;
}

static LLVMValueRef copy_body(cg_emit *e, const ir_value *v, LLVMValueRef *in, int lanes, LLVMValueRef row,
                              LLVMValueRef j)
{
    return in[1];
}

int cg_emit_layout(cg_emit *e, const ir_value *v)
{
    affine_iter it;
    init_iter(e, &it, v);
    const ir_type *in = &e->g->values[v->ops[0]]->type;
    int64_t in_strides[IR_MAX_RANK];
    contiguous_strides(in, in_strides);

    switch (v->op) {
    case IR_OP_BROADCAST:
    case IR_OP_RESHAPE: /* only when a reshape cannot share its operand's buffer */
        add_broadcast_operand(e, &it, v->ops[0]);
        if (v->op == IR_OP_RESHAPE)
            for (int d = 0; d < it.rank; d++)
                it.strides[1][d] = it.strides[0][d];
        break;
    case IR_OP_TRANSPOSE: {
        int n;
        const int64_t *perm = ir_attr_ints(v, "perm", &n);
        it.nops = 2;
        for (int d = 0; d < it.rank; d++) {
            int64_t axis = perm[d] < 0 ? perm[d] + in->rank : perm[d];
            it.strides[1][d] = in_strides[axis];
        }
        break;
    }
    case IR_OP_SLICE: {
        int64_t axis = ir_attr_int(v, "axis");
        if (axis < 0)
            axis += in->rank;
        it.nops = 2;
        memcpy(it.strides[1], in_strides, sizeof in_strides);
        it.offset[1] = ir_attr_int(v, "start") * in_strides[axis];
        break;
    }
    case IR_OP_CONCAT: {
        /* One copy per operand into its range of the concat axis. */
        int64_t axis = ir_attr_int(v, "axis");
        if (axis < 0)
            axis += v->type.rank;
        int64_t out_strides[IR_MAX_RANK], at = 0;
        contiguous_strides(&v->type, out_strides);
        for (int k = 0; k < v->nops; k++) {
            const ir_type *t = &e->g->values[v->ops[k]]->type;
            affine_iter part;
            init_iter(e, &part, v);
            memcpy(part.dims, t->dims, sizeof(int64_t) * (size_t)t->rank);
            part.offset[0] = at * out_strides[axis];
            part.nops = 2;
            contiguous_strides(t, part.strides[1]);
            part.slot[1] = e->plan->slot[v->ops[k]];
            part.elem[1] = cg_elem_type(e, t->dtype);
            emit_affine(e, "concat", &part, v, copy_body, true);
            at += t->dims[axis];
        }
        return 0;
    }
    default:
        return -1;
    }
    it.slot[1] = e->plan->slot[v->ops[0]];
    it.elem[1] = cg_elem_type(e, in->dtype);
    emit_affine(e, ir_op_get(v->op)->name, &it, v, copy_body, true);
    return 0;
}

/* ---- fused.elementwise and product epilogues ---- */

LLVMValueRef cg_fused_eval(cg_emit *e, const ir_fused_program *p, const LLVMValueRef *inputs)
{
    LLVMValueRef stack[IR_FUSED_MAX_STEPS];
    int depth = 0;
    for (int t = 0; t < p->nsteps; t++) {
        const ir_fused_step *s = &p->steps[t];
        if (s->op == IR_OP_INPUT) {
            stack[depth++] = inputs[s->input];
        } else if (s->op == IR_OP_SCALE) {
            LLVMValueRef x = stack[depth - 1];
            stack[depth - 1] = LLVMBuildFMul(e->b, x, cg_constf(e, LLVMTypeOf(x), s->factor), "");
        } else if (ir_op_get(s->op)->min_operands == 2) {
            depth--;
            stack[depth - 1] = emit_float_binary(e, s->op, stack[depth - 1], stack[depth]);
        } else {
            ir_value step;
            memset(&step, 0, sizeof step);
            step.op = s->op;
            stack[depth - 1] = emit_unary(e, &step, true, false, stack[depth - 1]);
        }
    }
    return stack[0];
}

/* Evaluates the program on the loaded operands in registers, so the
 * intermediate values of the chain never reach memory. */
static LLVMValueRef fused_body(cg_emit *e, const ir_value *v, LLVMValueRef *in, int lanes, LLVMValueRef row,
                               LLVMValueRef j)
{
    ir_fused_program p;
    char err[256];
    if (ir_fused_parse_value(v, &p, err, sizeof err) != 0)
        return in[1]; /* unreachable: the caller parsed it first */
    return round_to_dtype(e, cg_fused_eval(e, &p, in + 1), v->type.dtype);
}

int cg_emit_fused_elementwise(cg_emit *e, const ir_value *v)
{
    ir_fused_program p;
    char err[256];
    if (v->nops > IR_FUSED_MAX_INPUTS || ir_fused_parse(ir_attr_str(v, "program"), v->nops, &p, err, sizeof err) != 0) {
        ir_diag_error(e->d, v->loc, "codegen: invalid fused.elementwise value '%s'; run the verifier on the graph",
                      v->name);
        return -1;
    }
    affine_iter it;
    init_iter(e, &it, v);
    for (int k = 0; k < v->nops; k++)
        add_broadcast_operand(e, &it, v->ops[k]);
    emit_affine(e, "fused.elementwise", &it, v, fused_body, true);
    return 0;
}

/* The operands are the stored result, which is also the output, then the
 * epilogue operands; each element is read before it is overwritten. */
int cg_emit_epilogue_pass(cg_emit *e, const ir_value *v)
{
    affine_iter it;
    init_iter(e, &it, v);
    add_broadcast_operand(e, &it, v->id);
    for (int k = 2; k < v->nops; k++)
        add_broadcast_operand(e, &it, v->ops[k]);
    emit_affine(e, "epilogue", &it, v, fused_body, true);
    return 0;
}
