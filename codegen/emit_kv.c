/* Emitters for incremental decoding with a key-value cache: cache_write,
 * which updates rows of a state buffer in place, and causal_mask with a
 * run-time position operand. The plan gives a cache_write value the buffer
 * slot of its cache operand, so the rows land in the caller's input tensor
 * and nothing else is copied. cg_live_cache finds the attention products
 * that may skip the cache rows after the current position. */
#include <math.h>

#include "codegen/cg_internal.h"

/* Loads the integer scalar of value `id` as an i64 inside the current
 * kernel. */
static LLVMValueRef load_position(cg_emit *e, int id)
{
    const ir_value *pos = e->g->values[id];
    LLVMTypeRef ty = cg_elem_type(e, pos->type.dtype);
    LLVMValueRef raw = cg_load(e, ty, cg_buf(e, e->plan->slot[id]), cg_i64(e, 0), 1);
    if (ty == e->i64)
        return raw;
    return pos->type.dtype == IR_U8 ? LLVMBuildZExt(e->b, raw, e->i64, "") : LLVMBuildSExt(e->b, raw, e->i64, "");
}

/* One task per new row: rows [pos, pos + T) of every [S, HS] matrix of the
 * cache take the rows of `new`. A position outside [0, S - T] is recorded
 * in the status slot with the position as the offending id, and no row is
 * written. */
int cg_emit_cache_write(cg_emit *e, const ir_value *v)
{
    const ir_value *cache = e->g->values[v->ops[0]];
    const ir_value *fresh = e->g->values[v->ops[1]];
    if (!cg_is_float(cache->type.dtype)) {
        ir_diag_error(e->d, v->loc, "codegen: cache_write '%s' on a %s cache is not supported; use a float cache",
                      v->name, ir_dtype_name(cache->type.dtype));
        return -1;
    }
    int rank = v->type.rank;
    int64_t S = v->type.dims[rank - 2], HS = v->type.dims[rank - 1], T = fresh->type.dims[rank - 2];
    int64_t rows = ir_type_numel(&fresh->type) / HS;

    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "cache_write", &begin, &end);
    LLVMValueRef dst = cg_buf(e, e->plan->slot[v->id]);
    LLVMValueRef src = cg_buf(e, e->plan->slot[fresh->id]);
    LLVMValueRef pos = load_position(e, v->ops[2]);
    /* One unsigned compare catches pos < 0 and pos > S - T. */
    LLVMValueRef bad = LLVMBuildICmp(e->b, LLVMIntUGT, pos, cg_i64(e, S - T), "");
    LLVMValueRef kfn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(e->b));
    LLVMBasicBlockRef report = LLVMAppendBasicBlockInContext(e->ctx, kfn, "bad_pos");
    LLVMBasicBlockRef copy = LLVMAppendBasicBlockInContext(e->ctx, kfn, "copy");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(e->ctx, kfn, "done");
    LLVMBuildCondBr(e->b, bad, report, copy);

    LLVMPositionBuilderAtEnd(e->b, report);
    cg_report_range_error(e, v->id, begin, pos);
    LLVMBuildBr(e->b, done);

    LLVMPositionBuilderAtEnd(e->b, copy);
    cg_loop rl;
    LLVMValueRef row = cg_loop_begin(e, &rl, begin, end, cg_i64(e, 1));
    /* row = matrix * T + r goes to cache row matrix * S + pos + r. */
    LLVMValueRef matrix = LLVMBuildSDiv(e->b, row, cg_i64(e, T), "");
    LLVMValueRef r = LLVMBuildSRem(e->b, row, cg_i64(e, T), "");
    LLVMValueRef target = LLVMBuildAdd(e->b, LLVMBuildMul(e->b, matrix, cg_i64(e, S), ""),
                                       LLVMBuildAdd(e->b, pos, r, ""), "");
    LLVMValueRef to = cg_gep(e, e->f32, dst, LLVMBuildMul(e->b, target, cg_i64(e, HS), ""));
    LLVMValueRef from = cg_gep(e, e->f32, src, LLVMBuildMul(e->b, row, cg_i64(e, HS), ""));
    cg_loop cl;
    LLVMValueRef c = cg_loop_begin(e, &cl, cg_i64(e, 0), cg_i64(e, HS), cg_i64(e, 1));
    cg_store(e, cg_load(e, e->f32, from, c, 1), e->f32, to, c);
    cg_loop_end(e, &cl, NULL);
    cg_loop_end(e, &rl, NULL);
    LLVMBuildBr(e->b, done);

    LLVMPositionBuilderAtEnd(e->b, done);
    cg_kernel_end(e);
    cg_launch(e, fn, rows, 8, rows * HS);
    cg_check_status(e);
    return 0;
}

/* causal_mask{offset}(x[..., T, S], pos): one task per row; row i of each
 * [T, S] matrix keeps columns j <= i + offset + pos and sets the others to
 * -inf. */
int cg_emit_causal_mask_at(cg_emit *e, const ir_value *v)
{
    int rank = v->type.rank;
    int64_t T = v->type.dims[rank - 2], S = v->type.dims[rank - 1];
    int64_t rows = ir_type_numel(&v->type) / S;
    int64_t offset = ir_attr_int(v, "offset");

    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "causal_mask_at", &begin, &end);
    LLVMValueRef x = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef y = cg_buf(e, e->plan->slot[v->id]);
    LLVMValueRef pos = load_position(e, v->ops[1]);
    cg_loop rl;
    LLVMValueRef row = cg_loop_begin(e, &rl, begin, end, cg_i64(e, 1));
    LLVMValueRef i = LLVMBuildSRem(e->b, row, cg_i64(e, T), "");
    LLVMValueRef limit = LLVMBuildAdd(e->b, LLVMBuildAdd(e->b, i, pos, ""), cg_i64(e, offset), "limit");
    LLVMValueRef base = LLVMBuildMul(e->b, row, cg_i64(e, S), "");
    LLVMValueRef xr = cg_gep(e, e->f32, x, base), yr = cg_gep(e, e->f32, y, base);
    cg_loop cl;
    LLVMValueRef j = cg_loop_begin(e, &cl, cg_i64(e, 0), cg_i64(e, S), cg_i64(e, 1));
    LLVMValueRef masked = LLVMBuildICmp(e->b, LLVMIntSGT, j, limit, "");
    LLVMValueRef score = cg_load(e, e->f32, xr, j, 1);
    cg_store(e, LLVMBuildSelect(e->b, masked, cg_constf(e, e->f32, -INFINITY), score, ""), e->f32, yr, j);
    cg_loop_end(e, &cl, NULL);
    cg_loop_end(e, &rl, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, rows, 16, rows * S);
    return 0;
}

/* True when x is causal_mask(_, pos) with the cache_write's pos and an
 * offset of at most 0: every query row i < T then masks the columns from
 * pos + T on. */
static bool masks_dead_rows(const ir_value *x, const ir_value *cw)
{
    return x->op == IR_OP_CAUSAL_MASK && x->nops == 2 && x->ops[1] == cw->ops[2] && ir_attr_int(x, "offset") <= 0;
}

/* The patterns are those of attention over a cache kh (or vh) =
 * cache_write(cache, new, pos) with T new rows:
 *   - scores = matmul(q, kh, transpose_b=1), then only elementwise ops
 *     (scale, or an epilogue of fused.matmul), each the single use of the
 *     one before, then causal_mask(_, pos): the columns from pos + T on
 *     are replaced by -inf whatever the product wrote there.
 *   - matmul(softmax(causal_mask(_, pos), axis=-1), vh): the weights of
 *     cache rows from pos + T on are exp(-inf) = 0.
 * Rows from pos + T on are zeros or stale values of a longer sequence
 * that ran earlier in the same cache, so skipping them also keeps a
 * stale non-finite value from reaching the output. */
int cg_live_cache(const ir_graph *g, const ir_value *v)
{
    if ((v->op != IR_OP_MATMUL && v->op != IR_OP_FUSED_MATMUL) || ir_attr_int(v, "transpose_a") != 0)
        return -1;
    const ir_value *cw = g->values[v->ops[1]];
    if (cw->op != IR_OP_CACHE_WRITE)
        return -1;
    if (ir_attr_int(v, "transpose_b") == 0) {
        const ir_value *a = g->values[v->ops[0]];
        if (a->op != IR_OP_SOFTMAX)
            return -1;
        int64_t axis = ir_attr_int(a, "axis");
        if (axis != -1 && axis != a->type.rank - 1)
            return -1;
        return masks_dead_rows(g->values[a->ops[0]], cw) ? cw->id : -1;
    }
    int cur = v->id;
    for (;;) {
        int next = ir_only_user(g, cur, NULL);
        if (next < 0)
            return -1;
        const ir_value *u = g->values[next];
        if (u->ops[0] == cur && masks_dead_rows(u, cw))
            return cw->id;
        bool columnwise = (ir_op_get(u->op)->flags & IR_OPF_ELEMENTWISE) || u->op == IR_OP_FUSED_ELEMENTWISE;
        if (!columnwise || !ir_type_equal(&u->type, &v->type))
            return -1;
        cur = next;
    }
}

LLVMValueRef cg_live_cache_rows(cg_emit *e, const ir_value *cw)
{
    const ir_type *fresh = &e->g->values[cw->ops[1]]->type;
    return LLVMBuildAdd(e->b, load_position(e, cw->ops[2]), cg_i64(e, fresh->dims[fresh->rank - 2]), "live_rows");
}
