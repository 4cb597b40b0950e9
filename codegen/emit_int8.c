/* Code generation of q.linear (ir/ops.def has its formula) in three run
 * time kernels and one bind time kernel:
 *   bind  pack the i8 weights and their column sums (cg_emit_pack_b_i8)
 *   run   1. quantize each input row to u8 (or s8 when symmetric) and sum
 *            q - z_x over the row
 *         2. int8 GEMM with int32 output and no zero-point correction
 *         3. y = (s_x · s_w[n]) · (acc - z_x · colsum[n] - z_w[n] · rowsum[m])
 *            + bias[n] in f32
 * The input zero point is a param, read at run time, which is why the
 * GEMM's compile-time zero-point correction is not used. Step 3 does the
 * same f32 operations in the same order as the interpreter kernel. */
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
    bytes[CG_QLINEAR_ACC] = q.m * q.n * 4;
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
    desc->output = CG_GEMM_I8_OUT_I32;
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

/* Returns the integer zero point of a param: roundeven, then to i32. */
static LLVMValueRef zero_point(cg_emit *e, LLVMValueRef base)
{
    LLVMValueRef z = LLVMBuildLoad2(e->b, e->f32, base, "");
    z = cg_intrinsic(e, "llvm.roundeven", e->f32, &z, 1);
    return LLVMBuildFPToSI(e->b, z, e->i32, "");
}

/* Step 1: q = clamp(roundeven(x / s_x) + z_x, qmin, qmax) and the row sum
 * of q - z_x, one task per row. */
static void emit_quantize(cg_emit *e, const ir_value *v, const qlinear_dims *q, ir_quant_range range)
{
    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "q.linear.quantize", &begin, &end);
    LLVMValueRef x = cg_buf(e, e->plan->slot[v->ops[IR_QLINEAR_X]]);
    LLVMValueRef a = cg_buf(e, scratch(e, v, CG_QLINEAR_A));
    LLVMValueRef rowsum = cg_buf(e, scratch(e, v, CG_QLINEAR_ROWSUM));
    LLVMValueRef s = LLVMBuildLoad2(e->b, e->f32, cg_buf(e, e->plan->slot[v->ops[IR_QLINEAR_X_SCALE]]), "");
    LLVMValueRef zf = LLVMBuildLoad2(e->b, e->f32, cg_buf(e, e->plan->slot[v->ops[IR_QLINEAR_X_ZERO_POINT]]), "");
    zf = cg_intrinsic(e, "llvm.roundeven", e->f32, &zf, 1);
    LLVMValueRef zi = LLVMBuildFPToSI(e->b, zf, e->i32, "");
    LLVMValueRef lo = cg_constf(e, e->f32, (double)range.qmin), hi = cg_constf(e, e->f32, (double)range.qmax);

    cg_loop rows;
    LLVMValueRef m = cg_loop_begin(e, &rows, begin, end, cg_i64(e, 1));
    LLVMValueRef row = LLVMBuildMul(e->b, m, cg_i64(e, q->k), "");
    cg_loop cols;
    LLVMValueRef k = cg_loop_begin(e, &cols, cg_i64(e, 0), cg_i64(e, q->k), cg_i64(e, 1));
    LLVMValueRef sum = cg_loop_carry(e, &cols, cg_i32(e, 0));
    LLVMValueRef i = LLVMBuildAdd(e->b, row, k, "");
    LLVMValueRef t = LLVMBuildFDiv(e->b, cg_load(e, e->f32, x, i, 1), s, "");
    t = LLVMBuildFAdd(e->b, cg_intrinsic(e, "llvm.roundeven", e->f32, &t, 1), zf, "");
    LLVMValueRef args[2] = {t, lo};
    t = cg_intrinsic(e, "llvm.maxnum", e->f32, args, 2);
    args[0] = t;
    args[1] = hi;
    t = cg_intrinsic(e, "llvm.minnum", e->f32, args, 2);
    LLVMValueRef qi = LLVMBuildFPToSI(e->b, t, e->i32, "");
    cg_store(e, LLVMBuildTrunc(e->b, qi, e->i8, ""), e->i8, a, i);
    LLVMValueRef next = LLVMBuildAdd(e->b, sum, LLVMBuildSub(e->b, qi, zi, ""), "");
    cg_loop_end(e, &cols, &next);
    cg_store(e, sum, e->i32, rowsum, m);
    cg_loop_end(e, &rows, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, q->m, 1, q->m * q->k);
}

/* Step 3: y = (s_x · s_w[c]) · (acc - z_x · colsum[n] - z_w[c] · rowsum[m])
 * + bias[n], with c = n for per-channel weights and 0 otherwise. */
static void emit_output(cg_emit *e, const ir_value *v, const qlinear_dims *q)
{
    const ir_graph *g = e->g;
    bool per_channel = ir_type_numel(&g->values[v->ops[IR_QLINEAR_W_SCALE]]->type) > 1;
    bool has_bias = v->nops > IR_QLINEAR_BIAS;
    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "q.linear.output", &begin, &end);
    LLVMValueRef y = cg_buf(e, e->plan->slot[v->id]);
    LLVMValueRef acc = cg_buf(e, scratch(e, v, CG_QLINEAR_ACC));
    LLVMValueRef colsum = cg_buf(e, scratch(e, v, CG_QLINEAR_COLSUM));
    LLVMValueRef rowsums = cg_buf(e, scratch(e, v, CG_QLINEAR_ROWSUM));
    LLVMValueRef w_scale = cg_buf(e, e->plan->slot[v->ops[IR_QLINEAR_W_SCALE]]);
    LLVMValueRef w_zero = cg_buf(e, e->plan->slot[v->ops[IR_QLINEAR_W_ZERO_POINT]]);
    LLVMValueRef bias = has_bias ? cg_buf(e, e->plan->slot[v->ops[IR_QLINEAR_BIAS]]) : NULL;
    LLVMValueRef s_x = LLVMBuildLoad2(e->b, e->f32, cg_buf(e, e->plan->slot[v->ops[IR_QLINEAR_X_SCALE]]), "");
    LLVMValueRef z_x = zero_point(e, cg_buf(e, e->plan->slot[v->ops[IR_QLINEAR_X_ZERO_POINT]]));

    cg_loop rows;
    LLVMValueRef m = cg_loop_begin(e, &rows, begin, end, cg_i64(e, 1));
    LLVMValueRef row = LLVMBuildMul(e->b, m, cg_i64(e, q->n), "");
    LLVMValueRef rowsum = cg_load(e, e->i32, rowsums, m, 1);
    cg_loop cols;
    LLVMValueRef n = cg_loop_begin(e, &cols, cg_i64(e, 0), cg_i64(e, q->n), cg_i64(e, 1));
    LLVMValueRef i = LLVMBuildAdd(e->b, row, n, "");
    LLVMValueRef c = per_channel ? n : cg_i64(e, 0);
    LLVMValueRef correction = LLVMBuildMul(e->b, z_x, cg_load(e, e->i32, colsum, n, 1), "");
    LLVMValueRef sum = LLVMBuildSub(e->b, cg_load(e, e->i32, acc, i, 1), correction, "");
    LLVMValueRef z_w = zero_point(e, cg_gep(e, e->f32, w_zero, c));
    sum = LLVMBuildSub(e->b, sum, LLVMBuildMul(e->b, z_w, rowsum, ""), "");
    LLVMValueRef s_w = cg_load(e, e->f32, w_scale, c, 1);
    LLVMValueRef scale = LLVMBuildFMul(e->b, s_x, s_w, "");
    LLVMValueRef out = LLVMBuildFMul(e->b, scale, LLVMBuildSIToFP(e->b, sum, e->f32, ""), "");
    if (has_bias)
        out = LLVMBuildFAdd(e->b, out, cg_load(e, e->f32, bias, n, 1), "");
    cg_store(e, out, e->f32, y, i);
    cg_loop_end(e, &cols, NULL);
    cg_loop_end(e, &rows, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, q->m, 1, q->m * q->n);
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
    e->kslots[CG_GEMM_I8_ARG_C] = scratch(e, v, CG_QLINEAR_ACC);
    /* The int32 output stage reads neither the scale nor the bias. */
    e->kslots[CG_GEMM_I8_ARG_SCALE] = scratch(e, v, CG_QLINEAR_ACC);
    e->kslots[CG_GEMM_I8_ARG_BIAS] = scratch(e, v, CG_QLINEAR_ACC);
    e->nkslots = CG_GEMM_I8_NARGS;
    cg_launch(e, gemm, cg_gemm_i8_tasks(&desc), 1, q.m * q.k * q.n);

    emit_output(e, v, &q);
    return 0;
}
