/* Code generation of the integer attention ops (ir/ops.def has their
 * formulas). Every kernel works on explicit vectors of the target's width
 * (gs.vw lanes of 32 bits) with a scalar loop for the remainder, and does
 * the interpreter's arithmetic (runtime/interp_int8.c) in the same order,
 * so both give equal results:
 *   q.quantize    f32 x / s, round half to even, + z, clamp, to u8 or i8
 *   q.matmul      one task per row of a: 8-bit operands widened to i32,
 *                 minus their zero points, multiplied and summed in i32;
 *                 vectors run along N, or along K with transpose_b=1
 *   q.requantize  cg_requantize_round (codegen/quant_arith.h): the
 *                 64-bit product with M0 from the i32[3] operand, one
 *                 rounding shift, + z, clamp
 *   q.dequantize  (x - z) to f32, times s
 * These matmuls are small (head size by sequence length), so the kernels
 * do not pack or block like the int8 GEMM of q.linear. */
#include "codegen/emit_qmatmul.h"

#include "ir/int8.h"

#define ELEMENTS_PER_TASK 4096

/* The lanes of one vector of 32-bit elements. */
static int lanes_of(const cg_emit *e)
{
    return e->gs.vw > 1 ? e->gs.vw : 1;
}

static LLVMTypeRef vec(LLVMTypeRef elem, int lanes)
{
    return cg_vec_type(elem, lanes);
}

/* Returns the integer zero point of an f32 param: roundeven, then to i32. */
static LLVMValueRef load_zero_point(cg_emit *e, int slot)
{
    LLVMValueRef z = LLVMBuildLoad2(e->b, e->f32, cg_buf(e, slot), "");
    z = cg_intrinsic(e, "llvm.roundeven", e->f32, &z, 1);
    return LLVMBuildFPToSI(e->b, z, e->i32, "");
}

/* Loads `lanes` u8, i8 or i32 elements at base[i] as i32. */
static LLVMValueRef load_as_i32(cg_emit *e, ir_dtype t, LLVMValueRef base, LLVMValueRef i, int lanes)
{
    if (t == IR_I32)
        return cg_load(e, e->i32, base, i, lanes);
    LLVMValueRef x = cg_load(e, e->i8, base, i, lanes);
    if (t == IR_U8)
        return LLVMBuildZExt(e->b, x, vec(e->i32, lanes), "");
    return LLVMBuildSExt(e->b, x, vec(e->i32, lanes), "");
}

static LLVMValueRef splat_of(cg_emit *e, LLVMValueRef scalar, int lanes)
{
    return lanes > 1 ? cg_splat(e, scalar, lanes) : scalar;
}

/* Signed integer clamp of x to [lo, hi]. */
static LLVMValueRef clamp_int(cg_emit *e, LLVMValueRef x, int64_t lo, int64_t hi)
{
    LLVMTypeRef ty = LLVMTypeOf(x);
    LLVMValueRef low = cg_consti(e, ty, lo), high = cg_consti(e, ty, hi);
    x = LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, x, low, ""), low, x, "");
    return LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntSGT, x, high, ""), high, x, "");
}

/* ---- elementwise kernels ---- */

/* State of one elementwise kernel, loaded once per task. */
typedef struct elementwise {
    const ir_value *v;
    ir_dtype in_dtype;
    LLVMValueRef in, out;
    LLVMValueRef scale;                  /* f32 scalar (q.quantize, q.dequantize) */
    LLVMValueRef zero_point;             /* i32 scalar */
    LLVMValueRef m0, shift, half; /* i64 scalars (q.requantize): M0, 31 + right - left, 2^(shift - 1) */
    ir_quant_range range;
} elementwise;

typedef void (*element_fn)(cg_emit *e, const elementwise *w, LLVMValueRef i, int lanes);

/* q = clamp(roundeven(x / s) + z, qmin, qmax), stored as 8 bits. */
static void quantize_element(cg_emit *e, const elementwise *w, LLVMValueRef i, int lanes)
{
    LLVMTypeRef fty = vec(e->f32, lanes);
    LLVMValueRef x = cg_load(e, e->f32, w->in, i, lanes);
    LLVMValueRef zf = LLVMBuildSIToFP(e->b, splat_of(e, w->zero_point, lanes), fty, "");
    LLVMValueRef t = LLVMBuildFDiv(e->b, x, splat_of(e, w->scale, lanes), "");
    t = cg_intrinsic(e, "llvm.roundeven", fty, &t, 1);
    t = LLVMBuildFAdd(e->b, t, zf, "");
    LLVMValueRef args[2] = {t, cg_constf(e, fty, (double)w->range.qmin)};
    t = cg_intrinsic(e, "llvm.maxnum", fty, args, 2);
    args[0] = t;
    args[1] = cg_constf(e, fty, (double)w->range.qmax);
    t = cg_intrinsic(e, "llvm.minnum", fty, args, 2);
    LLVMValueRef q = LLVMBuildFPToSI(e->b, t, vec(e->i32, lanes), "");
    cg_store(e, LLVMBuildTrunc(e->b, q, vec(e->i8, lanes), ""), e->i8, w->out, i);
}

/* cg_requantize_round: the 64-bit product acc · M0, plus half of
 * 2^shift, shifted right arithmetically by shift = 31 + right_shift -
 * left_shift, then + z and clamped, as 8 bits. */
static void requantize_element(cg_emit *e, const elementwise *w, LLVMValueRef i, int lanes)
{
    LLVMTypeRef i64v = vec(e->i64, lanes);
    LLVMValueRef x = LLVMBuildSExt(e->b, cg_load(e, e->i32, w->in, i, lanes), i64v, "");
    LLVMValueRef product = LLVMBuildMul(e->b, x, splat_of(e, w->m0, lanes), "");
    LLVMValueRef rounded = LLVMBuildAdd(e->b, product, splat_of(e, w->half, lanes), "");
    LLVMValueRef y = LLVMBuildAShr(e->b, rounded, splat_of(e, w->shift, lanes), "");
    y = LLVMBuildAdd(e->b, y, LLVMBuildSExt(e->b, splat_of(e, w->zero_point, lanes), i64v, ""), "");
    y = clamp_int(e, y, w->range.qmin, w->range.qmax);
    cg_store(e, LLVMBuildTrunc(e->b, y, vec(e->i8, lanes), ""), e->i8, w->out, i);
}

/* (x - z) · s in f32. */
static void dequantize_element(cg_emit *e, const elementwise *w, LLVMValueRef i, int lanes)
{
    LLVMValueRef x = load_as_i32(e, w->in_dtype, w->in, i, lanes);
    x = LLVMBuildSub(e->b, x, splat_of(e, w->zero_point, lanes), "");
    LLVMValueRef y = LLVMBuildSIToFP(e->b, x, vec(e->f32, lanes), "");
    y = LLVMBuildFMul(e->b, y, splat_of(e, w->scale, lanes), "");
    cg_store(e, y, e->f32, w->out, i);
}

/* Runs body over [first, last): whole vectors, then single elements. */
static void for_each_element(cg_emit *e, const elementwise *w, LLVMValueRef first, LLVMValueRef last,
                             element_fn body)
{
    int lanes = lanes_of(e);
    LLVMValueRef count = LLVMBuildSub(e->b, last, first, "");
    LLVMValueRef whole = LLVMBuildMul(e->b, LLVMBuildSDiv(e->b, count, cg_i64(e, lanes), ""), cg_i64(e, lanes), "");
    LLVMValueRef vector_end = LLVMBuildAdd(e->b, first, whole, "");
    cg_loop vectors;
    LLVMValueRef i = cg_loop_begin(e, &vectors, first, vector_end, cg_i64(e, lanes));
    body(e, w, i, lanes);
    cg_loop_end(e, &vectors, NULL);
    cg_loop rest;
    i = cg_loop_begin(e, &rest, vector_end, last, cg_i64(e, 1));
    body(e, w, i, 1);
    cg_loop_end(e, &rest, NULL);
}

/* Emits one elementwise kernel over v's elements in tasks of
 * ELEMENTS_PER_TASK, with the per-op scalars loaded at the task's start. */
static int emit_elementwise(cg_emit *e, const ir_value *v, element_fn body)
{
    elementwise w = {.v = v, .in_dtype = e->g->values[v->ops[0]]->type.dtype};
    if (v->op != IR_OP_Q_DEQUANTIZE && ir_qlinear_range(v, &w.range) != 0) {
        ir_diag_error(e->d, v->loc, "codegen: %s '%s' has invalid quantizer attributes", ir_op_get(v->op)->name,
                      v->name);
        return -1;
    }
    int64_t n = ir_type_numel(&v->type);
    int64_t ntasks = (n + ELEMENTS_PER_TASK - 1) / ELEMENTS_PER_TASK;
    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, ir_op_get(v->op)->name, &begin, &end);
    w.in = cg_buf(e, e->plan->slot[v->ops[0]]);
    w.out = cg_buf(e, e->plan->slot[v->id]);
    w.zero_point = cg_i32(e, 0);
    if (v->op == IR_OP_Q_REQUANTIZE) {
        LLVMValueRef mul = cg_buf(e, e->plan->slot[v->ops[IR_QQUANTIZE_SCALE]]);
        LLVMValueRef left = cg_load(e, e->i32, mul, cg_i64(e, IR_QMUL_LEFT_SHIFT), 1);
        LLVMValueRef right = cg_load(e, e->i32, mul, cg_i64(e, IR_QMUL_RIGHT_SHIFT), 1);
        w.m0 = LLVMBuildSExt(e->b, cg_load(e, e->i32, mul, cg_i64(e, IR_QMUL_M0), 1), e->i64, "");
        w.shift = LLVMBuildSExt(e->b, LLVMBuildSub(e->b, LLVMBuildAdd(e->b, cg_i32(e, 31), right, ""), left, ""),
                                e->i64, "");
        w.half = LLVMBuildShl(e->b, cg_i64(e, 1), LLVMBuildSub(e->b, w.shift, cg_i64(e, 1), ""), "");
    } else {
        w.scale = LLVMBuildLoad2(e->b, e->f32, cg_buf(e, e->plan->slot[v->ops[1]]), "");
    }
    if (v->nops > 2)
        w.zero_point = load_zero_point(e, e->plan->slot[v->ops[2]]);

    cg_loop tasks;
    LLVMValueRef t = cg_loop_begin(e, &tasks, begin, end, cg_i64(e, 1));
    LLVMValueRef first = LLVMBuildMul(e->b, t, cg_i64(e, ELEMENTS_PER_TASK), "");
    LLVMValueRef last = LLVMBuildAdd(e->b, first, cg_i64(e, ELEMENTS_PER_TASK), "");
    LLVMValueRef past_end = LLVMBuildICmp(e->b, LLVMIntSGT, last, cg_i64(e, n), "");
    last = LLVMBuildSelect(e->b, past_end, cg_i64(e, n), last, "");
    for_each_element(e, &w, first, last, body);
    cg_loop_end(e, &tasks, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, ntasks, 1, n);
    return 0;
}

int cg_emit_qquantize(cg_emit *e, const ir_value *v)
{
    return emit_elementwise(e, v, quantize_element);
}

int cg_emit_qrequantize(cg_emit *e, const ir_value *v)
{
    return emit_elementwise(e, v, requantize_element);
}

int cg_emit_qdequantize(cg_emit *e, const ir_value *v)
{
    return emit_elementwise(e, v, dequantize_element);
}

/* ---- q.matmul ---- */

typedef struct qmatmul {
    int64_t m, k, n;
    ir_dtype a_dtype, b_dtype;
    LLVMValueRef a_row;  /* a[batch, m, 0] */
    LLVMValueRef b_base; /* b[batch, 0, 0] */
    LLVMValueRef out_row; /* acc[batch, m, 0] */
    LLVMValueRef za, zb;  /* i32 zero points */
} qmatmul;

/* acc[n0 .. n0 + lanes) = Σ_k (a[k] - za) · (b[k, n0 ..] - zb), for
 * transpose_b=0: vectors along N. */
static void emit_columns(cg_emit *e, const qmatmul *q, LLVMValueRef n0, int lanes)
{
    LLVMTypeRef i32v = vec(e->i32, lanes);
    cg_loop inner;
    LLVMValueRef k = cg_loop_begin(e, &inner, cg_i64(e, 0), cg_i64(e, q->k), cg_i64(e, 1));
    LLVMValueRef acc = cg_loop_carry(e, &inner, cg_consti(e, i32v, 0));
    LLVMValueRef a = LLVMBuildSub(e->b, load_as_i32(e, q->a_dtype, q->a_row, k, 1), q->za, "");
    LLVMValueRef bi = LLVMBuildAdd(e->b, LLVMBuildMul(e->b, k, cg_i64(e, q->n), ""), n0, "");
    LLVMValueRef b = LLVMBuildSub(e->b, load_as_i32(e, q->b_dtype, q->b_base, bi, lanes),
                                  splat_of(e, q->zb, lanes), "");
    LLVMValueRef next = LLVMBuildAdd(e->b, acc, LLVMBuildMul(e->b, splat_of(e, a, lanes), b, ""), "");
    cg_loop_end(e, &inner, &next);
    cg_store(e, inner.carry[0], e->i32, q->out_row, n0);
}

/* Σ over k in [k0, k1) of (a[k] - za) · (b_row[k] - zb), `lanes` at a
 * time, added to acc. */
static LLVMValueRef emit_dot_span(cg_emit *e, const qmatmul *q, LLVMValueRef b_row, LLVMValueRef k0,
                                  LLVMValueRef k1, int lanes, LLVMValueRef acc)
{
    cg_loop inner;
    LLVMValueRef k = cg_loop_begin(e, &inner, k0, k1, cg_i64(e, lanes));
    LLVMValueRef sum = cg_loop_carry(e, &inner, acc);
    LLVMValueRef a = LLVMBuildSub(e->b, load_as_i32(e, q->a_dtype, q->a_row, k, lanes), splat_of(e, q->za, lanes), "");
    LLVMValueRef b = LLVMBuildSub(e->b, load_as_i32(e, q->b_dtype, b_row, k, lanes), splat_of(e, q->zb, lanes), "");
    LLVMValueRef next = LLVMBuildAdd(e->b, sum, LLVMBuildMul(e->b, a, b, ""), "");
    cg_loop_end(e, &inner, &next);
    return inner.carry[0];
}

/* acc[n] = Σ_k (a[k] - za) · (b[n, k] - zb), for transpose_b=1: vectors
 * along K, then a horizontal sum and the scalar remainder. */
static void emit_dot(cg_emit *e, const qmatmul *q, LLVMValueRef n)
{
    int lanes = lanes_of(e);
    int64_t whole = q->k / lanes * lanes;
    LLVMValueRef b_row = cg_gep(e, e->i8, q->b_base, LLVMBuildMul(e->b, n, cg_i64(e, q->k), ""));
    LLVMValueRef sum = cg_i32(e, 0);
    if (lanes > 1 && whole > 0) {
        LLVMValueRef vsum = emit_dot_span(e, q, b_row, cg_i64(e, 0), cg_i64(e, whole), lanes,
                                          cg_consti(e, vec(e->i32, lanes), 0));
        sum = cg_intrinsic(e, "llvm.vector.reduce.add", vec(e->i32, lanes), &vsum, 1);
    } else {
        whole = 0;
    }
    sum = emit_dot_span(e, q, b_row, cg_i64(e, whole), cg_i64(e, q->k), 1, sum);
    cg_store(e, sum, e->i32, q->out_row, n);
}

int cg_emit_qmatmul(cg_emit *e, const ir_value *v)
{
    const ir_type *at = &e->g->values[v->ops[IR_QMATMUL_A]]->type;
    const ir_type *bt = &e->g->values[v->ops[IR_QMATMUL_B]]->type;
    bool transpose_b = ir_attr_int(v, "transpose_b") != 0;
    qmatmul q = {
        .m = at->dims[at->rank - 2],
        .k = at->dims[at->rank - 1],
        .n = v->type.dims[v->type.rank - 1],
        .a_dtype = at->dtype,
        .b_dtype = bt->dtype,
    };
    int64_t rows = q.k > 0 ? ir_type_numel(at) / q.k : 0;

    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "q.matmul", &begin, &end);
    LLVMValueRef a = cg_buf(e, e->plan->slot[v->ops[IR_QMATMUL_A]]);
    LLVMValueRef b = cg_buf(e, e->plan->slot[v->ops[IR_QMATMUL_B]]);
    LLVMValueRef out = cg_buf(e, e->plan->slot[v->id]);
    q.za = load_zero_point(e, e->plan->slot[v->ops[IR_QMATMUL_A_ZERO_POINT]]);
    q.zb = load_zero_point(e, e->plan->slot[v->ops[IR_QMATMUL_B_ZERO_POINT]]);

    /* One task per row of a: row r is row r % M of batch r / M. */
    cg_loop tasks;
    LLVMValueRef r = cg_loop_begin(e, &tasks, begin, end, cg_i64(e, 1));
    LLVMValueRef batch = LLVMBuildSDiv(e->b, r, cg_i64(e, q.m > 0 ? q.m : 1), "");
    q.a_row = cg_gep(e, e->i8, a, LLVMBuildMul(e->b, r, cg_i64(e, q.k), ""));
    q.b_base = cg_gep(e, e->i8, b, LLVMBuildMul(e->b, batch, cg_i64(e, q.k * q.n), ""));
    q.out_row = cg_gep(e, e->i32, out, LLVMBuildMul(e->b, r, cg_i64(e, q.n), ""));
    if (transpose_b) {
        cg_loop columns;
        LLVMValueRef n = cg_loop_begin(e, &columns, cg_i64(e, 0), cg_i64(e, q.n), cg_i64(e, 1));
        emit_dot(e, &q, n);
        cg_loop_end(e, &columns, NULL);
    } else {
        int lanes = lanes_of(e);
        int64_t whole = q.n / lanes * lanes;
        cg_loop vectors;
        LLVMValueRef n0 = cg_loop_begin(e, &vectors, cg_i64(e, 0), cg_i64(e, whole), cg_i64(e, lanes));
        emit_columns(e, &q, n0, lanes);
        cg_loop_end(e, &vectors, NULL);
        cg_loop rest;
        n0 = cg_loop_begin(e, &rest, cg_i64(e, whole), cg_i64(e, q.n), cg_i64(e, 1));
        emit_columns(e, &q, n0, 1);
        cg_loop_end(e, &rest, NULL);
    }
    cg_loop_end(e, &tasks, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, rows, 1, rows * q.n * q.k);
    return 0;
}
