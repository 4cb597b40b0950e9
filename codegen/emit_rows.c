/* Emitters for row-wise ops: layernorm, softmax, reductions, embedding
 * and cross-entropy. Each task is one row or one output element. Passes
 * over a row run on vectors of the target width with a scalar tail and
 * accumulate in f32 vector lanes. */
#include <math.h>
#include <string.h>

#include "codegen/cg_internal.h"

typedef enum acc_kind { ACC_NONE, ACC_SUM, ACC_MAX } acc_kind;

/* Returns the element value to accumulate at row index j (lanes wide), or
 * NULL when the pass only writes. */
typedef LLVMValueRef (*row_fn)(cg_emit *e, void *user, LLVMValueRef j, int lanes);

static LLVMValueRef combine(cg_emit *e, acc_kind kind, LLVMValueRef acc, LLVMValueRef x)
{
    if (kind == ACC_SUM)
        return cg_reassoc(LLVMBuildFAdd(e->b, acc, x, ""));
    LLVMValueRef args[2] = {acc, x};
    return cg_intrinsic(e, "llvm.maximum", LLVMTypeOf(acc), args, 2);
}

static LLVMValueRef row_pass_part(cg_emit *e, int64_t start, int64_t end, int lanes, acc_kind kind, row_fn fn,
                                  void *user)
{
    LLVMTypeRef ty = cg_vec_type(e->f32, lanes);
    LLVMValueRef init = cg_constf(e, ty, kind == ACC_MAX ? -INFINITY : 0.0);
    cg_loop l;
    LLVMValueRef j = cg_loop_begin(e, &l, cg_i64(e, start), cg_i64(e, end), cg_i64(e, lanes));
    LLVMValueRef acc = kind != ACC_NONE ? cg_loop_carry(e, &l, init) : NULL;
    LLVMValueRef x = fn(e, user, j, lanes);
    LLVMValueRef next = kind != ACC_NONE ? combine(e, kind, acc, x) : NULL;
    cg_loop_end(e, &l, &next);
    if (kind == ACC_NONE)
        return NULL;
    return kind == ACC_SUM ? cg_hsum(e, l.carry[0]) : cg_hmax(e, l.carry[0]);
}

/* One pass over j in [0, n): vectors when `contiguous`, then a scalar
 * tail. Returns the accumulated scalar (NULL for ACC_NONE). */
static LLVMValueRef row_pass(cg_emit *e, int64_t n, bool contiguous, acc_kind kind, row_fn fn, void *user)
{
    int vw = e->gs.vw;
    int64_t nvec = contiguous ? n / vw * vw : 0;
    LLVMValueRef vec = nvec > 0 ? row_pass_part(e, 0, nvec, vw, kind, fn, user) : NULL;
    LLVMValueRef tail = nvec < n ? row_pass_part(e, nvec, n, 1, kind, fn, user) : NULL;
    if (kind == ACC_NONE)
        return NULL;
    if (vec && tail)
        return combine(e, kind, vec, tail);
    return vec ? vec : tail;
}

/* ---- layernorm ---- */

typedef struct ln_state {
    LLVMValueRef x, y, w, b; /* row pointers (x, y) and parameter pointers */
    LLVMValueRef mean, rstd;
} ln_state;

static LLVMValueRef ln_sum(cg_emit *e, void *user, LLVMValueRef j, int lanes)
{
    ln_state *s = user;
    return cg_load(e, e->f32, s->x, j, lanes);
}

static LLVMValueRef ln_sq(cg_emit *e, void *user, LLVMValueRef j, int lanes)
{
    ln_state *s = user;
    LLVMValueRef d = LLVMBuildFSub(e->b, cg_load(e, e->f32, s->x, j, lanes), cg_splat(e, s->mean, lanes), "");
    return LLVMBuildFMul(e->b, d, d, "");
}

static LLVMValueRef ln_write(cg_emit *e, void *user, LLVMValueRef j, int lanes)
{
    ln_state *s = user;
    LLVMValueRef d = LLVMBuildFSub(e->b, cg_load(e, e->f32, s->x, j, lanes), cg_splat(e, s->mean, lanes), "");
    LLVMValueRef n = LLVMBuildFMul(e->b, d, cg_splat(e, s->rstd, lanes), "");
    LLVMValueRef y = cg_fma(e, n, cg_load(e, e->f32, s->w, j, lanes), cg_load(e, e->f32, s->b, j, lanes));
    cg_store(e, y, e->f32, s->y, j);
    return NULL;
}

/* Emits the per-task row loop header. Returns the row index and leaves the
 * builder in the loop body. */
static LLVMValueRef begin_rows(cg_emit *e, cg_loop *l, LLVMValueRef begin, LLVMValueRef end)
{
    return cg_loop_begin(e, l, begin, end, cg_i64(e, 1));
}

int cg_emit_layernorm(cg_emit *e, const ir_value *v)
{
    int64_t c = v->type.dims[v->type.rank - 1];
    int64_t rows = ir_type_numel(&v->type) / c;
    double eps = ir_attr_float(v, "eps");
    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "layernorm", &begin, &end);
    ln_state s;
    LLVMValueRef x = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef y = cg_buf(e, e->plan->slot[v->id]);
    s.w = cg_buf(e, e->plan->slot[v->ops[1]]);
    s.b = cg_buf(e, e->plan->slot[v->ops[2]]);

    cg_loop l;
    LLVMValueRef r = begin_rows(e, &l, begin, end);
    LLVMValueRef off = LLVMBuildMul(e->b, r, cg_i64(e, c), "");
    s.x = cg_gep(e, e->f32, x, off);
    s.y = cg_gep(e, e->f32, y, off);
    LLVMValueRef inv_c = LLVMConstReal(e->f32, 1.0 / (double)c);

    /* Two passes for the statistics (mean, then the biased variance about
     * it) avoid the cancellation of E[x^2] - E[x]^2. */
    s.mean = LLVMBuildFMul(e->b, row_pass(e, c, true, ACC_SUM, ln_sum, &s), inv_c, "mean");
    LLVMValueRef var = LLVMBuildFMul(e->b, row_pass(e, c, true, ACC_SUM, ln_sq, &s), inv_c, "var");
    LLVMValueRef ve = LLVMBuildFAdd(e->b, var, LLVMConstReal(e->f32, eps), "");
    s.rstd = LLVMBuildFDiv(e->b, LLVMConstReal(e->f32, 1.0), cg_intrinsic(e, "llvm.sqrt", e->f32, &ve, 1), "rstd");
    row_pass(e, c, true, ACC_NONE, ln_write, &s);
    cg_loop_end(e, &l, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, rows, 1, rows * c);
    return 0;
}

/* ---- softmax ---- */

typedef struct sm_state {
    LLVMValueRef x, y; /* first element of the row */
    int64_t stride;    /* between row elements */
    LLVMValueRef max, inv;
} sm_state;

static LLVMValueRef sm_index(cg_emit *e, sm_state *s, LLVMValueRef j)
{
    return s->stride == 1 ? j : LLVMBuildMul(e->b, j, cg_i64(e, s->stride), "");
}

static LLVMValueRef sm_max(cg_emit *e, void *user, LLVMValueRef j, int lanes)
{
    sm_state *s = user;
    return cg_load(e, e->f32, s->x, sm_index(e, s, j), lanes);
}

static LLVMValueRef sm_exp(cg_emit *e, void *user, LLVMValueRef j, int lanes)
{
    sm_state *s = user;
    LLVMValueRef idx = sm_index(e, s, j);
    LLVMValueRef d = LLVMBuildFSub(e->b, cg_load(e, e->f32, s->x, idx, lanes), cg_splat(e, s->max, lanes), "");
    LLVMValueRef ex = cg_exp(e, d);
    cg_store(e, ex, e->f32, s->y, idx);
    return ex;
}

static LLVMValueRef sm_scale(cg_emit *e, void *user, LLVMValueRef j, int lanes)
{
    sm_state *s = user;
    LLVMValueRef idx = sm_index(e, s, j);
    LLVMValueRef y = LLVMBuildFMul(e->b, cg_load(e, e->f32, s->y, idx, lanes), cg_splat(e, s->inv, lanes), "");
    cg_store(e, y, e->f32, s->y, idx);
    return NULL;
}

int cg_emit_softmax(cg_emit *e, const ir_value *v)
{
    int rank = v->type.rank;
    int64_t axis = ir_attr_int(v, "axis");
    if (axis < 0)
        axis += rank;
    int64_t n = v->type.dims[axis], inner = 1;
    for (int d = (int)axis + 1; d < rank; d++)
        inner *= v->type.dims[d];
    int64_t rows = ir_type_numel(&v->type) / n;

    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "softmax", &begin, &end);
    LLVMValueRef x = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef y = cg_buf(e, e->plan->slot[v->id]);
    sm_state s = {.stride = inner};

    cg_loop l;
    LLVMValueRef r = begin_rows(e, &l, begin, end);
    /* Row r is (outer, inner index) = (r / inner, r % inner). */
    LLVMValueRef outer = LLVMBuildSDiv(e->b, r, cg_i64(e, inner), "");
    LLVMValueRef in_idx = LLVMBuildSRem(e->b, r, cg_i64(e, inner), "");
    LLVMValueRef off = LLVMBuildAdd(e->b, LLVMBuildMul(e->b, outer, cg_i64(e, n * inner), ""), in_idx, "");
    s.x = cg_gep(e, e->f32, x, off);
    s.y = cg_gep(e, e->f32, y, off);

    LLVMValueRef max = row_pass(e, n, inner == 1, ACC_MAX, sm_max, &s);
    /* An all -inf row: subtract 0 instead, so every exp is 0 and the row
     * becomes zeros below. */
    LLVMValueRef all_masked = LLVMBuildFCmp(e->b, LLVMRealOEQ, max, LLVMConstReal(e->f32, -INFINITY), "");
    s.max = LLVMBuildSelect(e->b, all_masked, LLVMConstReal(e->f32, 0.0), max, "max");
    LLVMValueRef sum = row_pass(e, n, inner == 1, ACC_SUM, sm_exp, &s);
    LLVMValueRef positive = LLVMBuildFCmp(e->b, LLVMRealOGT, sum, LLVMConstReal(e->f32, 0.0), "");
    LLVMValueRef inv = LLVMBuildFDiv(e->b, LLVMConstReal(e->f32, 1.0), sum, "");
    s.inv = LLVMBuildSelect(e->b, positive, inv, LLVMConstReal(e->f32, 0.0), "inv");
    row_pass(e, n, inner == 1, ACC_NONE, sm_scale, &s);
    cg_loop_end(e, &l, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, rows, 1, rows * n);
    return 0;
}

/* ---- reductions ---- */

typedef struct red_state {
    LLVMValueRef x; /* first element of the reduced range */
    int64_t stride;
} red_state;

static LLVMValueRef red_load(cg_emit *e, void *user, LLVMValueRef j, int lanes)
{
    red_state *s = user;
    LLVMValueRef idx = s->stride == 1 ? j : LLVMBuildMul(e->b, j, cg_i64(e, s->stride), "");
    return cg_load(e, e->f32, s->x, idx, lanes);
}

/* Decomposes flat index `flat` over dims (row-major) and returns
 * sum(index_d * strides_d). */
static LLVMValueRef strided_offset(cg_emit *e, LLVMValueRef flat, int n, const int64_t *dims, const int64_t *strides)
{
    LLVMValueRef off = cg_i64(e, 0), rest = flat;
    for (int d = n - 1; d >= 0; d--) {
        LLVMValueRef idx = d > 0 ? LLVMBuildSRem(e->b, rest, cg_i64(e, dims[d]), "") : rest;
        if (d > 0)
            rest = LLVMBuildSDiv(e->b, rest, cg_i64(e, dims[d]), "");
        off = LLVMBuildAdd(e->b, off, LLVMBuildMul(e->b, idx, cg_i64(e, strides[d]), ""), "");
    }
    return off;
}

/* Reduced axes in any positions: one task per output element, a scalar
 * loop over the reduced elements in row-major order. */
static LLVMValueRef reduce_general(cg_emit *e, const ir_type *xt, const bool *reduced, acc_kind kind, LLVMValueRef x,
                                   LLVMValueRef t)
{
    int64_t kept_dims[IR_MAX_RANK], kept_strides[IR_MAX_RANK], red_dims[IR_MAX_RANK], red_strides[IR_MAX_RANK];
    int nk = 0, nr = 0;
    int64_t stride = 1, count = 1;
    int64_t strides[IR_MAX_RANK];
    for (int d = xt->rank - 1; d >= 0; d--) {
        strides[d] = stride;
        stride *= xt->dims[d];
    }
    for (int d = 0; d < xt->rank; d++) {
        if (reduced[d]) {
            red_dims[nr] = xt->dims[d];
            red_strides[nr++] = strides[d];
            count *= xt->dims[d];
        } else {
            kept_dims[nk] = xt->dims[d];
            kept_strides[nk++] = strides[d];
        }
    }
    LLVMValueRef base = strided_offset(e, t, nk, kept_dims, kept_strides);
    cg_loop l;
    LLVMValueRef r = cg_loop_begin(e, &l, cg_i64(e, 0), cg_i64(e, count), cg_i64(e, 1));
    LLVMValueRef acc = cg_loop_carry(e, &l, LLVMConstReal(e->f32, kind == ACC_MAX ? -INFINITY : 0.0));
    LLVMValueRef off = LLVMBuildAdd(e->b, base, strided_offset(e, r, nr, red_dims, red_strides), "");
    LLVMValueRef next = combine(e, kind, acc, cg_load(e, e->f32, x, off, 1));
    cg_loop_end(e, &l, &next);
    return l.carry[0];
}

/* Reduces x[outer, red, inner] over the middle axis when inner > 1, as the
 * bias gradients of linear layers do (column sums of [rows, N]). Each task
 * adds the rows of vw neighbouring columns as vectors, so every load is
 * contiguous. One task per output would read a column with stride inner.
 * Each lane still accumulates in row order. */
static void reduce_columns(cg_emit *e, const ir_value *v, int64_t outer, int64_t red, int64_t inner, acc_kind kind)
{
    int vw = e->gs.vw;
    int64_t blocks = (inner + vw - 1) / vw;
    int partial = (int)(inner % vw);
    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, ir_op_get(v->op)->name, &begin, &end);
    LLVMValueRef x = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef y = cg_buf(e, e->plan->slot[v->id]);
    cg_loop tl;
    LLVMValueRef t = cg_loop_begin(e, &tl, begin, end, cg_i64(e, 1));
    LLVMValueRef o = LLVMBuildSDiv(e->b, t, cg_i64(e, blocks), "");
    LLVMValueRef col = LLVMBuildMul(e->b, LLVMBuildSRem(e->b, t, cg_i64(e, blocks), ""), cg_i64(e, vw), "");
    LLVMValueRef x_base = cg_gep(e, e->f32, x, LLVMBuildAdd(e->b, LLVMBuildMul(e->b, o, cg_i64(e, red * inner), ""),
                                                            col, ""));
    LLVMValueRef y_at = LLVMBuildAdd(e->b, LLVMBuildMul(e->b, o, cg_i64(e, inner), ""), col, "");

    /* The last block of a row may have fewer than vw columns. */
    LLVMValueRef mask = NULL;
    if (partial) {
        LLVMValueRef lanes[64];
        for (int l = 0; l < vw; l++)
            lanes[l] = cg_i64(e, l);
        LLVMValueRef valid = LLVMBuildSub(e->b, cg_i64(e, inner), col, "");
        mask = LLVMBuildICmp(e->b, LLVMIntSLT, LLVMConstVector(lanes, (unsigned)vw), cg_splat(e, valid, vw), "");
    }
    LLVMTypeRef mtys[2] = {e->vf, e->ptr};
    LLVMValueRef init = cg_constf(e, e->vf, kind == ACC_MAX ? -INFINITY : 0.0);
    cg_loop rl;
    LLVMValueRef r = cg_loop_begin(e, &rl, cg_i64(e, 0), cg_i64(e, red), cg_i64(e, 1));
    LLVMValueRef acc = cg_loop_carry(e, &rl, init);
    LLVMValueRef at = LLVMBuildMul(e->b, r, cg_i64(e, inner), "");
    LLVMValueRef row;
    if (mask) {
        LLVMValueRef args[4] = {cg_gep(e, e->f32, x_base, at), cg_i32(e, 4), mask, init};
        row = cg_intrinsic2(e, "llvm.masked.load", mtys, 2, args, 4);
    } else {
        row = cg_load(e, e->f32, x_base, at, vw);
    }
    LLVMValueRef next = combine(e, kind, acc, row);
    cg_loop_end(e, &rl, &next);

    LLVMValueRef sum = rl.carry[0];
    if (v->op == IR_OP_REDUCE_MEAN)
        sum = LLVMBuildFMul(e->b, sum, cg_constf(e, e->vf, 1.0 / (double)red), "");
    if (mask) {
        LLVMValueRef args[4] = {sum, cg_gep(e, e->f32, y, y_at), cg_i32(e, 4), mask};
        cg_intrinsic2(e, "llvm.masked.store", mtys, 2, args, 4);
    } else {
        cg_store(e, sum, e->f32, y, y_at);
    }
    cg_loop_end(e, &tl, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, outer * blocks, 1, outer * red * inner);
}

/* Reduced axes that form one contiguous block reduce as x[outer, r, inner]
 * with vector loads along r when inner = 1 and across inner otherwise;
 * other axis sets take reduce_general. */
int cg_emit_reduce(cg_emit *e, const ir_value *v)
{
    const ir_value *xv = e->g->values[v->ops[0]];
    const ir_type *xt = &xv->type;
    if (!cg_is_float(xt->dtype)) {
        ir_diag_error(e->d, v->loc, "codegen: %s of integer tensor '%s' is not supported; cast it to f32 first",
                      ir_op_get(v->op)->name, xv->name);
        return -1;
    }
    int n;
    const int64_t *axes = ir_attr_ints(v, "axes", &n);
    bool reduced[IR_MAX_RANK] = {false};
    for (int i = 0; i < n; i++)
        reduced[axes[i] < 0 ? axes[i] + xt->rank : axes[i]] = true;
    int first = -1, last = -1;
    bool adjacent = true;
    for (int d = 0; d < xt->rank; d++) {
        if (!reduced[d])
            continue;
        if (first < 0)
            first = d;
        else if (last != d - 1)
            adjacent = false;
        last = d;
    }
    int64_t outer = 1, red = 1, inner = 1;
    for (int d = 0; d < xt->rank; d++) {
        if (reduced[d])
            red *= xt->dims[d];
        else if (first >= 0 && d < first)
            outer *= xt->dims[d];
        else
            inner *= xt->dims[d];
    }
    acc_kind kind = v->op == IR_OP_REDUCE_MAX ? ACC_MAX : ACC_SUM;
    if (first >= 0 && adjacent && inner > 1) {
        reduce_columns(e, v, outer, red, inner, kind);
        return 0;
    }

    /* One task per output element. */
    int64_t tasks = ir_type_numel(&v->type);
    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, ir_op_get(v->op)->name, &begin, &end);
    LLVMValueRef x = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef y = cg_buf(e, e->plan->slot[v->id]);
    cg_loop l;
    LLVMValueRef t = begin_rows(e, &l, begin, end);
    LLVMValueRef acc;
    if (adjacent) {
        LLVMValueRef o = LLVMBuildSDiv(e->b, t, cg_i64(e, inner), "");
        LLVMValueRef i = LLVMBuildSRem(e->b, t, cg_i64(e, inner), "");
        LLVMValueRef off = LLVMBuildAdd(e->b, LLVMBuildMul(e->b, o, cg_i64(e, red * inner), ""), i, "");
        red_state s = {cg_gep(e, e->f32, x, off), inner};
        acc = row_pass(e, red, inner == 1, kind, red_load, &s);
    } else {
        acc = reduce_general(e, xt, reduced, kind, x, t);
    }
    if (v->op == IR_OP_REDUCE_MEAN)
        acc = LLVMBuildFMul(e->b, acc, LLVMConstReal(e->f32, 1.0 / (double)red), "");
    cg_store(e, acc, e->f32, y, t);
    cg_loop_end(e, &l, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, tasks, inner > 1 ? 64 : 1, tasks * red);
    return 0;
}

/* ---- embedding ---- */

typedef struct copy_state {
    LLVMValueRef src, dst;
} copy_state;

static LLVMValueRef copy_elem(cg_emit *e, void *user, LLVMValueRef j, int lanes)
{
    copy_state *s = user;
    cg_store(e, cg_load(e, e->f32, s->src, j, lanes), e->f32, s->dst, j);
    return NULL;
}

static LLVMValueRef load_index(cg_emit *e, const ir_value *ids, LLVMValueRef base, LLVMValueRef at)
{
    LLVMTypeRef ty = cg_elem_type(e, ids->type.dtype);
    LLVMValueRef raw = cg_load(e, ty, base, at, 1);
    if (ty == e->i64)
        return raw;
    return ids->type.dtype == IR_U8 ? LLVMBuildZExt(e->b, raw, e->i64, "") : LLVMBuildSExt(e->b, raw, e->i64, "");
}

int cg_emit_embedding(cg_emit *e, const ir_value *v)
{
    const ir_value *table = e->g->values[v->ops[0]];
    const ir_value *ids = e->g->values[v->ops[1]];
    int64_t vocab = table->type.dims[0], c = table->type.dims[1];
    int64_t rows = ir_type_numel(&ids->type);

    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "embedding", &begin, &end);
    LLVMValueRef tab = cg_buf(e, e->plan->slot[table->id]);
    LLVMValueRef idp = cg_buf(e, e->plan->slot[ids->id]);
    LLVMValueRef out = cg_buf(e, e->plan->slot[v->id]);
    cg_loop l;
    LLVMValueRef r = begin_rows(e, &l, begin, end);
    LLVMValueRef id = load_index(e, ids, idp, r);
    /* One unsigned compare catches id < 0 and id >= vocab. */
    LLVMValueRef bad = LLVMBuildICmp(e->b, LLVMIntUGE, id, cg_i64(e, vocab), "");
    LLVMValueRef kfn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(e->b));
    LLVMBasicBlockRef report = LLVMAppendBasicBlockInContext(e->ctx, kfn, "bad_id");
    LLVMBasicBlockRef copy = LLVMAppendBasicBlockInContext(e->ctx, kfn, "copy");
    LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(e->ctx, kfn, "next");
    LLVMBuildCondBr(e->b, bad, report, copy);

    LLVMPositionBuilderAtEnd(e->b, report);
    cg_report_range_error(e, v->id, r, id);
    LLVMBuildBr(e->b, next);

    LLVMPositionBuilderAtEnd(e->b, copy);
    copy_state s = {cg_gep(e, e->f32, tab, LLVMBuildMul(e->b, id, cg_i64(e, c), "")),
                    cg_gep(e, e->f32, out, LLVMBuildMul(e->b, r, cg_i64(e, c), ""))};
    row_pass(e, c, true, ACC_NONE, copy_elem, &s);
    LLVMBuildBr(e->b, next);

    LLVMPositionBuilderAtEnd(e->b, next);
    cg_loop_end(e, &l, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, rows, 4, rows * c);
    cg_check_status(e);
    return 0;
}

/* ---- cross-entropy ---- */

typedef struct ce_state {
    LLVMValueRef x, max;
} ce_state;

static LLVMValueRef ce_load(cg_emit *e, void *user, LLVMValueRef j, int lanes)
{
    ce_state *s = user;
    return cg_load(e, e->f32, s->x, j, lanes);
}

static LLVMValueRef ce_exp(cg_emit *e, void *user, LLVMValueRef j, int lanes)
{
    ce_state *s = user;
    LLVMValueRef d = LLVMBuildFSub(e->b, cg_load(e, e->f32, s->x, j, lanes), cg_splat(e, s->max, lanes), "");
    return cg_exp(e, d);
}

/* Pass 1, one task per position: scratch[2r] = logsumexp - logit[target]
 * and scratch[2r + 1] = 1, or both 0 for an ignored position. */
static LLVMValueRef emit_ce_rows(cg_emit *e, const ir_value *v, int64_t vocab, int scratch)
{
    const ir_value *targets = e->g->values[v->ops[1]];
    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "cross_entropy.rows", &begin, &end);
    LLVMValueRef logits = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef tp = cg_buf(e, e->plan->slot[targets->id]);
    LLVMValueRef sp = cg_buf(e, scratch);
    cg_loop l;
    LLVMValueRef r = begin_rows(e, &l, begin, end);
    LLVMValueRef t = load_index(e, targets, tp, r);
    LLVMValueRef loss_at = LLVMBuildMul(e->b, r, cg_i64(e, 2), "");
    LLVMValueRef flag_at = LLVMBuildAdd(e->b, loss_at, cg_i64(e, 1), "");
    cg_store(e, LLVMConstReal(e->f64, 0.0), e->f64, sp, loss_at);
    cg_store(e, LLVMConstReal(e->f64, 0.0), e->f64, sp, flag_at);

    LLVMValueRef kfn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(e->b));
    LLVMBasicBlockRef check = LLVMAppendBasicBlockInContext(e->ctx, kfn, "check");
    LLVMBasicBlockRef report = LLVMAppendBasicBlockInContext(e->ctx, kfn, "bad_target");
    LLVMBasicBlockRef compute = LLVMAppendBasicBlockInContext(e->ctx, kfn, "compute");
    LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(e->ctx, kfn, "next");
    LLVMValueRef ignored = LLVMBuildICmp(e->b, LLVMIntEQ, t, cg_i64(e, ir_attr_int(v, "ignore_index")), "");
    LLVMBuildCondBr(e->b, ignored, next, check);

    LLVMPositionBuilderAtEnd(e->b, check);
    LLVMValueRef bad = LLVMBuildICmp(e->b, LLVMIntUGE, t, cg_i64(e, vocab), "");
    LLVMBuildCondBr(e->b, bad, report, compute);
    LLVMPositionBuilderAtEnd(e->b, report);
    cg_report_range_error(e, v->id, r, t);
    LLVMBuildBr(e->b, next);

    LLVMPositionBuilderAtEnd(e->b, compute);
    ce_state s = {cg_gep(e, e->f32, logits, LLVMBuildMul(e->b, r, cg_i64(e, vocab), "")), NULL};
    s.max = row_pass(e, vocab, true, ACC_MAX, ce_load, &s);
    LLVMValueRef sum = row_pass(e, vocab, true, ACC_SUM, ce_exp, &s);
    LLVMValueRef lse = LLVMBuildFAdd(e->b, s.max, cg_log(e, sum), "lse");
    LLVMValueRef picked = cg_load(e, e->f32, s.x, t, 1);
    LLVMValueRef loss = LLVMBuildFSub(e->b, lse, picked, "");
    cg_store(e, LLVMBuildFPExt(e->b, loss, e->f64, ""), e->f64, sp, loss_at);
    cg_store(e, LLVMConstReal(e->f64, 1.0), e->f64, sp, flag_at);
    LLVMBuildBr(e->b, next);

    LLVMPositionBuilderAtEnd(e->b, next);
    cg_loop_end(e, &l, NULL);
    cg_kernel_end(e);
    return fn;
}

int cg_emit_cross_entropy(cg_emit *e, const ir_value *v)
{
    const ir_value *logits = e->g->values[v->ops[0]];
    int64_t vocab = logits->type.dims[logits->type.rank - 1];
    int64_t rows = ir_type_numel(&logits->type) / vocab;
    int scratch = e->plan->scratch_slot[v->id];

    LLVMValueRef rows_fn = emit_ce_rows(e, v, vocab, scratch);
    cg_launch(e, rows_fn, rows, 1, rows * vocab);
    cg_check_status(e);

    /* Pass 2, serial: the mean in double over the counted positions, or 0
     * when every position is ignored. */
    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "cross_entropy.mean", &begin, &end);
    LLVMValueRef sp = cg_buf(e, scratch);
    LLVMValueRef out = cg_buf(e, e->plan->slot[v->id]);
    cg_loop l;
    LLVMValueRef r = cg_loop_begin(e, &l, cg_i64(e, 0), cg_i64(e, rows), cg_i64(e, 1));
    LLVMValueRef sum = cg_loop_carry(e, &l, LLVMConstReal(e->f64, 0.0));
    LLVMValueRef count = cg_loop_carry(e, &l, LLVMConstReal(e->f64, 0.0));
    LLVMValueRef at = LLVMBuildMul(e->b, r, cg_i64(e, 2), "");
    LLVMValueRef next[2] = {
        LLVMBuildFAdd(e->b, sum, cg_load(e, e->f64, sp, at, 1), ""),
        LLVMBuildFAdd(e->b, count, cg_load(e, e->f64, sp, LLVMBuildAdd(e->b, at, cg_i64(e, 1), ""), 1), ""),
    };
    cg_loop_end(e, &l, next);
    LLVMValueRef mean = LLVMBuildFDiv(e->b, l.carry[0], l.carry[1], "");
    LLVMValueRef none = LLVMBuildFCmp(e->b, LLVMRealOEQ, l.carry[1], LLVMConstReal(e->f64, 0.0), "");
    mean = LLVMBuildSelect(e->b, none, LLVMConstReal(e->f64, 0.0), mean, "");
    cg_store(e, LLVMBuildFPTrunc(e->b, mean, e->f32, ""), e->f32, out, cg_i64(e, 0));
    cg_kernel_end(e);
    cg_launch(e, fn, 1, 1, 1);
    return 0;
}
