/* Emitters for the backward ops that gather over positions: grad.embedding
 * (a scatter-add into the table) and grad.cross_entropy (which needs the
 * count of positions that are not ignored). Both give results that do not
 * depend on the thread count or the scheduling, because every output
 * element is written by one task that sums its terms in position order. */
#include <math.h>

#include "codegen/cg_internal.h"

static LLVMValueRef load_index(cg_emit *e, const ir_value *ids, LLVMValueRef base, LLVMValueRef at)
{
    LLVMTypeRef ty = cg_elem_type(e, ids->type.dtype);
    LLVMValueRef raw = cg_load(e, ty, base, at, 1);
    if (ty == e->i64)
        return raw;
    return ids->type.dtype == IR_U8 ? LLVMBuildZExt(e->b, raw, e->i64, "") : LLVMBuildSExt(e->b, raw, e->i64, "");
}

/* Branches on `cond`: builds the blocks for true and false and returns the
 * block where both continue. The builder is left in the true block. */
static LLVMBasicBlockRef begin_if(cg_emit *e, LLVMValueRef cond, LLVMBasicBlockRef *otherwise, const char *name)
{
    LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(e->b));
    LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(e->ctx, fn, name);
    *otherwise = LLVMAppendBasicBlockInContext(e->ctx, fn, "else");
    LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(e->ctx, fn, "join");
    LLVMBuildCondBr(e->b, cond, then, *otherwise);
    LLVMPositionBuilderAtEnd(e->b, then);
    return join;
}

/* ---- grad.embedding ---- */

typedef struct scatter_state {
    LLVMValueRef src, dst; /* dy row and table row */
} scatter_state;

static void scatter_body(cg_emit *e, void *user, LLVMValueRef j, int lanes, LLVMValueRef *terms)
{
    scatter_state *s = user;
    LLVMValueRef sum = LLVMBuildFAdd(e->b, cg_load(e, e->f32, s->dst, j, lanes), cg_load(e, e->f32, s->src, j, lanes), "");
    cg_store(e, sum, e->f32, s->dst, j);
}

/* Kernel 1 zeroes the table gradient, one task per table row. */
static void emit_zero_rows(cg_emit *e, const ir_value *v, int64_t rows, int64_t c)
{
    LLVMValueRef begin, end;
    LLVMValueRef kfn = cg_kernel_begin(e, "grad.embedding.zero", &begin, &end);
    LLVMValueRef out = cg_buf(e, e->plan->slot[v->id]);
    LLVMValueRef start = cg_gep(e, e->f32, out, LLVMBuildMul(e->b, begin, cg_i64(e, c), ""));
    LLVMValueRef count = LLVMBuildMul(e->b, LLVMBuildSub(e->b, end, begin, ""), cg_i64(e, c), "");
    cg_span_copy(e, NULL, start, cg_i64(e, 0), count);
    cg_kernel_end(e);
    cg_launch(e, kfn, rows, 64, rows * c);
}

/* grad.embedding{rows}(dy[..., C], ids[...]) -> [rows, C]. Kernel 2 runs
 * one task per block of columns: it walks all positions in order and adds
 * dy[p, block] into row ids[p] of its block, so no two tasks write the same
 * element. An id outside [0, rows) is reported and its row skipped. */
int cg_emit_grad_embedding(cg_emit *e, const ir_value *v)
{
    const ir_value *ids = e->g->values[v->ops[1]];
    int64_t rows = v->type.dims[0], c = v->type.dims[1];
    int64_t positions = ir_type_numel(&ids->type);
    int64_t block = 4 * (int64_t)e->gs.vw;
    int64_t nblocks = (c + block - 1) / block;
    emit_zero_rows(e, v, rows, c);

    LLVMValueRef begin, end;
    LLVMValueRef kfn = cg_kernel_begin(e, "grad.embedding", &begin, &end);
    LLVMValueRef dy = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef idp = cg_buf(e, e->plan->slot[ids->id]);
    LLVMValueRef out = cg_buf(e, e->plan->slot[v->id]);

    cg_loop bl;
    LLVMValueRef b = cg_loop_begin(e, &bl, begin, end, cg_i64(e, 1));
    LLVMValueRef j0 = LLVMBuildMul(e->b, b, cg_i64(e, block), "");
    LLVMValueRef j1 = LLVMBuildAdd(e->b, j0, cg_i64(e, block), "");
    LLVMValueRef over = LLVMBuildICmp(e->b, LLVMIntSGT, j1, cg_i64(e, c), "");
    j1 = LLVMBuildSelect(e->b, over, cg_i64(e, c), j1, "");

    cg_loop pl;
    LLVMValueRef p = cg_loop_begin(e, &pl, cg_i64(e, 0), cg_i64(e, positions), cg_i64(e, 1));
    LLVMValueRef id = load_index(e, ids, idp, p);
    /* One unsigned compare catches id < 0 and id >= rows. */
    LLVMValueRef bad = LLVMBuildICmp(e->b, LLVMIntUGE, id, cg_i64(e, rows), "");
    LLVMBasicBlockRef add;
    LLVMBasicBlockRef join = begin_if(e, bad, &add, "bad_id");
    cg_report_range_error(e, v->id, p, id);
    LLVMBuildBr(e->b, join);

    LLVMPositionBuilderAtEnd(e->b, add);
    scatter_state s = {cg_gep(e, e->f32, dy, LLVMBuildMul(e->b, p, cg_i64(e, c), "")),
                       cg_gep(e, e->f32, out, LLVMBuildMul(e->b, id, cg_i64(e, c), ""))};
    cg_span_pass pass = {.vectorize = true, .body = scatter_body, .user = &s};
    cg_span(e, j0, j1, &pass, NULL);
    LLVMBuildBr(e->b, join);
    LLVMPositionBuilderAtEnd(e->b, join);
    cg_loop_end(e, &pl, NULL);

    cg_loop_end(e, &bl, NULL);
    cg_kernel_end(e);
    cg_launch(e, kfn, nblocks, 1, positions * c);
    cg_check_status(e);
    return 0;
}

/* ---- grad.cross_entropy ---- */

typedef struct xent_grad_state {
    LLVMValueRef x, dx; /* logits row and its gradient */
    LLVMValueRef max, scale;
} xent_grad_state;

static void xent_grad_max(cg_emit *e, void *user, LLVMValueRef j, int lanes, LLVMValueRef *terms)
{
    xent_grad_state *s = user;
    terms[0] = cg_load(e, e->f32, s->x, j, lanes);
}

static void xent_grad_exp(cg_emit *e, void *user, LLVMValueRef j, int lanes, LLVMValueRef *terms)
{
    xent_grad_state *s = user;
    LLVMValueRef d = LLVMBuildFSub(e->b, cg_load(e, e->f32, s->x, j, lanes), cg_splat(e, s->max, lanes), "");
    terms[0] = cg_exp(e, d);
    cg_store(e, terms[0], e->f32, s->dx, j);
}

static void xent_grad_scale(cg_emit *e, void *user, LLVMValueRef j, int lanes, LLVMValueRef *terms)
{
    xent_grad_state *s = user;
    LLVMValueRef y = LLVMBuildFMul(e->b, cg_load(e, e->f32, s->dx, j, lanes), cg_splat(e, s->scale, lanes), "");
    cg_store(e, y, e->f32, s->dx, j);
}

/* Counts the positions whose target is not ignore_index, reporting the
 * first target outside [0, V). Returns the count as f32. */
static LLVMValueRef count_targets(cg_emit *e, const ir_value *v, LLVMValueRef tp, int64_t positions, int64_t vocab)
{
    const ir_value *targets = e->g->values[v->ops[2]];
    cg_loop l;
    LLVMValueRef p = cg_loop_begin(e, &l, cg_i64(e, 0), cg_i64(e, positions), cg_i64(e, 1));
    LLVMValueRef count = cg_loop_carry(e, &l, cg_i64(e, 0));
    LLVMValueRef t = load_index(e, targets, tp, p);
    LLVMValueRef counted = LLVMBuildICmp(e->b, LLVMIntNE, t, cg_i64(e, ir_attr_int(v, "ignore_index")), "");
    LLVMValueRef bad = LLVMBuildAnd(e->b, counted, LLVMBuildICmp(e->b, LLVMIntUGE, t, cg_i64(e, vocab), ""), "");
    LLVMBasicBlockRef ok;
    LLVMBasicBlockRef join = begin_if(e, bad, &ok, "bad_target");
    cg_report_range_error(e, v->id, p, t);
    LLVMBuildBr(e->b, join);
    LLVMPositionBuilderAtEnd(e->b, ok);
    LLVMBuildBr(e->b, join);
    LLVMPositionBuilderAtEnd(e->b, join);
    LLVMValueRef next = LLVMBuildAdd(e->b, count, LLVMBuildZExt(e->b, counted, e->i64, ""), "");
    cg_loop_end(e, &l, &next);
    return LLVMBuildSIToFP(e->b, l.carry[0], e->f32, "count");
}

/* grad.cross_entropy{ignore_index}(dloss, logits[..., V], targets[...]):
 *   dlogits[p, v] = dloss * (softmax(logits[p])[v] - [v == t_p]) / N
 * for the N positions whose target is not ignore_index, and 0 for the
 * others. One task per position. Each call of the kernel first counts N
 * over all targets, so the launch hands out several rows per call. */
int cg_emit_grad_cross_entropy(cg_emit *e, const ir_value *v)
{
    const ir_value *logits = e->g->values[v->ops[1]];
    int64_t vocab = logits->type.dims[logits->type.rank - 1];
    int64_t positions = vocab ? ir_type_numel(&logits->type) / vocab : 0;
    const ir_value *targets = e->g->values[v->ops[2]];

    LLVMValueRef begin, end;
    LLVMValueRef kfn = cg_kernel_begin(e, "grad.cross_entropy", &begin, &end);
    LLVMValueRef dloss = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef lp = cg_buf(e, e->plan->slot[logits->id]);
    LLVMValueRef tp = cg_buf(e, e->plan->slot[targets->id]);
    LLVMValueRef out = cg_buf(e, e->plan->slot[v->id]);
    LLVMValueRef count = count_targets(e, v, tp, positions, vocab);
    /* factor = dloss / N. When N = 0, every row is ignored and factor is unused. */
    LLVMValueRef factor = LLVMBuildFDiv(e->b, cg_load(e, e->f32, dloss, cg_i64(e, 0), 1), count, "factor");

    cg_loop l;
    LLVMValueRef r = cg_loop_begin(e, &l, begin, end, cg_i64(e, 1));
    LLVMValueRef t = load_index(e, targets, tp, r);
    LLVMValueRef off = LLVMBuildMul(e->b, r, cg_i64(e, vocab), "");
    xent_grad_state s = {cg_gep(e, e->f32, lp, off), cg_gep(e, e->f32, out, off), NULL, NULL};
    LLVMValueRef ignored = LLVMBuildICmp(e->b, LLVMIntEQ, t, cg_i64(e, ir_attr_int(v, "ignore_index")), "");
    LLVMValueRef bad = LLVMBuildICmp(e->b, LLVMIntUGE, t, cg_i64(e, vocab), "");
    LLVMBasicBlockRef compute;
    LLVMBasicBlockRef join = begin_if(e, LLVMBuildOr(e->b, ignored, bad, ""), &compute, "zero_row");
    cg_span_copy(e, NULL, s.dx, cg_i64(e, 0), cg_i64(e, vocab));
    LLVMBuildBr(e->b, join);

    /* The softmax as the forward loss computes it: the max, then exp(x -
     * max) stored into the row and summed, then one scale by factor / sum,
     * and factor subtracted at the target. */
    LLVMPositionBuilderAtEnd(e->b, compute);
    cg_span_pass max = {.vectorize = true, .max = true, .nacc = 1, .body = xent_grad_max, .user = &s};
    cg_span(e, cg_i64(e, 0), cg_i64(e, vocab), &max, &s.max);
    LLVMValueRef sum;
    cg_span_pass exps = {.vectorize = true, .nacc = 1, .body = xent_grad_exp, .user = &s};
    cg_span(e, cg_i64(e, 0), cg_i64(e, vocab), &exps, &sum);
    s.scale = LLVMBuildFDiv(e->b, factor, sum, "scale");
    cg_span_pass scale = {.vectorize = true, .body = xent_grad_scale, .user = &s};
    cg_span(e, cg_i64(e, 0), cg_i64(e, vocab), &scale, NULL);
    LLVMValueRef at_target = cg_load(e, e->f32, s.dx, t, 1);
    cg_store(e, LLVMBuildFSub(e->b, at_target, factor, ""), e->f32, s.dx, t);
    LLVMBuildBr(e->b, join);

    LLVMPositionBuilderAtEnd(e->b, join);
    cg_loop_end(e, &l, NULL);
    cg_kernel_end(e);
    /* On the pool, a call gets at most eight rows (the grain), so the count
     * costs about 1/8 of a pass over the targets per row. */
    cg_launch(e, kfn, positions, 8, positions * vocab);
    cg_check_status(e);
    return 0;
}
