/* Code generation of q.linear (ir/ops.def has its formula) in two run
 * time kernels and one bind time kernel:
 *   bind  pack the i8 weights and their column sums (cg_emit_pack_b_i8)
 *   run   1. quantize each input row to u8 (or s8 when symmetric) and sum
 *            q - z_x over the row, in vectors of the target width
 *         2. int8 GEMM (or GEMV for a few rows) whose output stage
 *            dequantizes in registers:
 *            y = (s_x · s_w[n]) · (acc - z_x · colsum[n] - z_w[n] · rowsum[m])
 *            + bias[n] in f32 (CG_GEMM_I8_OUT_DEQUANT)
 * The input scale and zero point are params, read at run time, which is
 * why the GEMM's compile-time zero-point correction is not used. Step 2
 * does the same f32 operations in the same order as the interpreter
 * kernel, so both give equal results. */
#include "codegen/emit_int8.h"

#include "codegen/gemm_i8.h"
#include "ir/int8.h"

/* At least the panel width of every int8 GEMM shape (the VNNI path's
 * 3 x 16 columns is the widest). fill_desc checks the chosen shape's
 * buffer sizes against the planned ones. */
#define QLINEAR_MAX_NR 64

typedef struct qlinear_dims {
    int64_t m, k, n;
    bool transpose_b;
    bool a_signed;
} qlinear_dims;

static qlinear_dims dims_of(const ir_graph *g, const ir_value *v)
{
    const ir_type *x = &g->values[v->ops[IR_QLINEAR_X]]->type;
    qlinear_dims q;
    q.k = x->dims[x->rank - 1];
    q.n = v->type.dims[v->type.rank - 1];
    q.m = q.k ? ir_type_numel(x) / q.k : 0;
    q.transpose_b = ir_attr_int(v, "transpose_b") != 0;
    q.a_signed = ir_attr_int(v, "symmetric") != 0;
    return q;
}

void cg_qlinear_scratch_bytes(const ir_graph *g, const ir_value *v, int64_t *bytes)
{
    qlinear_dims q = dims_of(g, v);
    /* N rounded up to whole panels of any width up to QLINEAR_MAX_NR. */
    int64_t n_padded = q.n + QLINEAR_MAX_NR;
    int64_t k_padded = (q.k + 3) / 4 * 4;
    bytes[CG_QLINEAR_PACKED] = k_padded * n_padded;
    bytes[CG_QLINEAR_COLSUM] = n_padded * 4;
    bytes[CG_QLINEAR_A] = q.m * q.k;
    bytes[CG_QLINEAR_ROWSUM] = q.m * 4;
}

static int fill_desc(cg_emit *e, const ir_value *v, cg_gemm_i8_desc *desc)
{
    qlinear_dims q = dims_of(e->g, v);
    *desc = (cg_gemm_i8_desc){0};
    desc->name = v->name;
    desc->shape = cg_gemm_i8_shape_for(e->tm, true);
    desc->m = q.m;
    desc->k = q.k;
    desc->n = q.n;
    desc->a_signed = q.a_signed;
    desc->a_zero_point = 0;
    desc->output = CG_GEMM_I8_OUT_DEQUANT;
    desc->has_bias = v->nops > IR_QLINEAR_BIAS;
    desc->per_channel = ir_type_numel(&e->g->values[v->ops[IR_QLINEAR_W_SCALE]]->type) > 1;
    desc->b_transposed = q.transpose_b;
    int64_t planned[CG_QLINEAR_NSCRATCH];
    cg_qlinear_scratch_bytes(e->g, v, planned);
    if (cg_gemm_i8_packed_bytes(&desc->shape, q.k, q.n) > planned[CG_QLINEAR_PACKED] ||
        cg_gemm_i8_colsum_count(&desc->shape, q.n) * 4 > planned[CG_QLINEAR_COLSUM]) {
        ir_diag_error(e->d, v->loc, "codegen: q.linear '%s': int8 GEMM panels of %d columns need more than the "
                      "planned packed-weight buffer; raise QLINEAR_MAX_NR", v->name, desc->shape.nr);
        return -1;
    }
    return 0;
}

static int scratch(const cg_emit *e, const ir_value *v, int buffer)
{
    return e->plan->scratch_slot[v->id] + buffer;
}

int cg_emit_qlinear_pack(cg_emit *e, const ir_value *v)
{
    cg_gemm_i8_desc desc;
    if (fill_desc(e, v, &desc) != 0)
        return -1;
    LLVMValueRef fn = cg_emit_pack_b_i8(e, &desc);
    if (!fn)
        return -1;
    e->kslots[CG_PACK_I8_ARG_B] = e->plan->slot[v->ops[IR_QLINEAR_W]];
    e->kslots[CG_PACK_I8_ARG_PACKED] = scratch(e, v, CG_QLINEAR_PACKED);
    e->kslots[CG_PACK_I8_ARG_COLSUM] = scratch(e, v, CG_QLINEAR_COLSUM);
    e->nkslots = CG_PACK_I8_NARGS;
    cg_launch(e, fn, cg_gemm_i8_pack_tasks(&desc), 1, desc.k * desc.n);
    return 0;
}

/* Quantizes the `lanes` inputs at x[i], stores them at a[i] and returns
 * their q - z_x as i32 lanes. */
static LLVMValueRef quantize_lanes(cg_emit *e, LLVMValueRef x, LLVMValueRef a, LLVMValueRef i, int lanes,
                                   LLVMValueRef s, LLVMValueRef zf, LLVMValueRef zi, ir_quant_range range)
{
    LLVMTypeRef f32 = cg_vec_type(e->f32, lanes), i32 = cg_vec_type(e->i32, lanes);
    LLVMValueRef t = LLVMBuildFDiv(e->b, cg_load(e, e->f32, x, i, lanes), cg_splat(e, s, lanes), "");
    t = LLVMBuildFAdd(e->b, cg_intrinsic(e, "llvm.roundeven", f32, &t, 1), cg_splat(e, zf, lanes), "");
    LLVMValueRef args[2] = {t, cg_constf(e, f32, (double)range.qmin)};
    t = cg_intrinsic(e, "llvm.maxnum", f32, args, 2);
    args[0] = t;
    args[1] = cg_constf(e, f32, (double)range.qmax);
    t = cg_intrinsic(e, "llvm.minnum", f32, args, 2);
    LLVMValueRef qi = LLVMBuildFPToSI(e->b, t, i32, "");
    cg_store(e, LLVMBuildTrunc(e->b, qi, cg_vec_type(e->i8, lanes), ""), e->i8, a, i);
    return LLVMBuildSub(e->b, qi, cg_splat(e, zi, lanes), "");
}

/* Step 1: q = clamp(roundeven(x / s_x) + z_x, qmin, qmax) and the row sum
 * of q - z_x, one task per row: whole vectors, then single elements. */
static void emit_quantize(cg_emit *e, const ir_value *v, const qlinear_dims *q, ir_quant_range range)
{
    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "q.linear.quantize", &begin, &end);
    LLVMBuilderRef b = e->b;
    LLVMValueRef x = cg_buf(e, e->plan->slot[v->ops[IR_QLINEAR_X]]);
    LLVMValueRef a = cg_buf(e, scratch(e, v, CG_QLINEAR_A));
    LLVMValueRef rowsum = cg_buf(e, scratch(e, v, CG_QLINEAR_ROWSUM));
    LLVMValueRef s = LLVMBuildLoad2(b, e->f32, cg_buf(e, e->plan->slot[v->ops[IR_QLINEAR_X_SCALE]]), "");
    LLVMValueRef zf = LLVMBuildLoad2(b, e->f32, cg_buf(e, e->plan->slot[v->ops[IR_QLINEAR_X_ZERO_POINT]]), "");
    zf = cg_intrinsic(e, "llvm.roundeven", e->f32, &zf, 1);
    LLVMValueRef zi = LLVMBuildFPToSI(b, zf, e->i32, "");
    int vw = e->gs.vw;
    int64_t vector_end = q->k / vw * vw;

    cg_loop rows;
    LLVMValueRef m = cg_loop_begin(e, &rows, begin, end, cg_i64(e, 1));
    LLVMValueRef row = LLVMBuildMul(b, m, cg_i64(e, q->k), "");
    LLVMValueRef sum = cg_i32(e, 0);
    if (vector_end > 0) {
        cg_loop vl;
        LLVMValueRef k = cg_loop_begin(e, &vl, cg_i64(e, 0), cg_i64(e, vector_end), cg_i64(e, vw));
        LLVMValueRef acc = cg_loop_carry(e, &vl, LLVMConstNull(cg_vec_type(e->i32, vw)));
        LLVMValueRef next = LLVMBuildAdd(b, acc, quantize_lanes(e, x, a, LLVMBuildAdd(b, row, k, ""), vw, s, zf,
                                                                zi, range), "");
        cg_loop_end(e, &vl, &next);
        LLVMValueRef total = vl.carry[0];
        sum = cg_intrinsic(e, "llvm.vector.reduce.add", cg_vec_type(e->i32, vw), &total, 1);
    }
    if (vector_end < q->k) {
        cg_loop sl;
        LLVMValueRef k = cg_loop_begin(e, &sl, cg_i64(e, vector_end), cg_i64(e, q->k), cg_i64(e, 1));
        LLVMValueRef acc = cg_loop_carry(e, &sl, sum);
        LLVMValueRef next =
            LLVMBuildAdd(b, acc, quantize_lanes(e, x, a, LLVMBuildAdd(b, row, k, ""), 1, s, zf, zi, range), "");
        cg_loop_end(e, &sl, &next);
        sum = sl.carry[0];
    }
    cg_store(e, sum, e->i32, rowsum, m);
    cg_loop_end(e, &rows, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, q->m, 1, q->m * q->k);
}

int cg_emit_qlinear(cg_emit *e, const ir_value *v)
{
    ir_quant_range range;
    if (ir_qlinear_range(v, &range) != 0) {
        ir_diag_error(e->d, v->loc, "codegen: q.linear '%s' has invalid quantizer attributes", v->name);
        return -1;
    }
    qlinear_dims q = dims_of(e->g, v);
    cg_gemm_i8_desc desc;
    if (fill_desc(e, v, &desc) != 0)
        return -1;

    emit_quantize(e, v, &q, range);

    LLVMValueRef gemm = cg_emit_gemm_i8(e, &desc);
    if (!gemm)
        return -1;
    e->kslots[CG_GEMM_I8_ARG_A] = scratch(e, v, CG_QLINEAR_A);
    e->kslots[CG_GEMM_I8_ARG_PACKED] = scratch(e, v, CG_QLINEAR_PACKED);
    e->kslots[CG_GEMM_I8_ARG_COLSUM] = scratch(e, v, CG_QLINEAR_COLSUM);
    e->kslots[CG_GEMM_I8_ARG_C] = e->plan->slot[v->id];
    /* OUT_DEQUANT reads neither the f32 scale nor, without a bias, the
     * bias; any valid slot fills their entries. */
    e->kslots[CG_GEMM_I8_ARG_SCALE] = e->plan->slot[v->id];
    e->kslots[CG_GEMM_I8_ARG_BIAS] = desc.has_bias ? e->plan->slot[v->ops[IR_QLINEAR_BIAS]] : e->plan->slot[v->id];
    e->kslots[CG_GEMM_I8_ARG_ROWSUM] = scratch(e, v, CG_QLINEAR_ROWSUM);
    e->kslots[CG_GEMM_I8_ARG_X_SCALE] = e->plan->slot[v->ops[IR_QLINEAR_X_SCALE]];
    e->kslots[CG_GEMM_I8_ARG_X_ZERO_POINT] = e->plan->slot[v->ops[IR_QLINEAR_X_ZERO_POINT]];
    e->kslots[CG_GEMM_I8_ARG_W_SCALE] = e->plan->slot[v->ops[IR_QLINEAR_W_SCALE]];
    e->kslots[CG_GEMM_I8_ARG_W_ZERO_POINT] = e->plan->slot[v->ops[IR_QLINEAR_W_ZERO_POINT]];
    e->nkslots = CG_GEMM_I8_NARGS;
    cg_launch(e, gemm, cg_gemm_i8_tasks(&desc), 1, q.m * q.k * q.n);
    return 0;
}
