/* Emitters for the elementwise and row-wise backward ops: grad.gelu,
 * grad.relu, grad.abs, grad.maximum, grad.minimum, grad.causal_mask,
 * grad.softmax, grad.layernorm and grad.layernorm_weight. They are tested
 * against the interpreter's kernels in runtime/interp_grad.c. Float values
 * are stored as f32, and sums over a row accumulate in f32 vector lanes
 * where the interpreter uses double. f16 and bf16 results are computed in
 * f32 and rounded afterwards by cg_emit_round_result (see emit.c). */
#include <math.h>
#include <string.h>

#include "codegen/cg_internal.h"

#define SPAN_MAX_ACC 2
#define CHUNK 4096 /* elements of the last dimension per task when it is long */

/* ---- passes over a span of a row ---- */

/* Emits one loop over j in [j0, j1) with `lanes` elements per step, stopping
 * before a partial vector. Returns the first j it did not process. */
static LLVMValueRef span_part(cg_emit *e, LLVMValueRef j0, LLVMValueRef j1, int lanes, const cg_span_pass *pass,
                              LLVMValueRef *sums)
{
    LLVMTypeRef ty = cg_vec_type(e->f32, lanes);
    LLVMValueRef init = cg_constf(e, ty, pass->max ? -INFINITY : 0.0);
    LLVMValueRef stop = lanes > 1 ? LLVMBuildSub(e->b, j1, cg_i64(e, lanes - 1), "") : j1;
    cg_loop l;
    LLVMValueRef j = cg_loop_begin(e, &l, j0, stop, cg_i64(e, lanes));
    LLVMValueRef acc[SPAN_MAX_ACC];
    for (int a = 0; a < pass->nacc; a++)
        acc[a] = cg_loop_carry(e, &l, init);

    LLVMValueRef terms[SPAN_MAX_ACC], next[SPAN_MAX_ACC];
    pass->body(e, pass->user, j, lanes, terms);
    for (int a = 0; a < pass->nacc; a++) {
        LLVMValueRef args[2] = {acc[a], terms[a]};
        next[a] = pass->max ? cg_intrinsic(e, "llvm.maximum", ty, args, 2)
                            : cg_reassoc(LLVMBuildFAdd(e->b, acc[a], terms[a], ""));
    }
    cg_loop_end(e, &l, next);

    for (int a = 0; a < pass->nacc; a++)
        sums[a] = pass->max ? cg_hmax(e, l.carry[a]) : cg_hsum(e, l.carry[a]);
    return l.iv;
}

void cg_span(cg_emit *e, LLVMValueRef j0, LLVMValueRef j1, const cg_span_pass *pass, LLVMValueRef *results)
{
    LLVMValueRef vec[SPAN_MAX_ACC], tail[SPAN_MAX_ACC];
    LLVMValueRef rest = j0;
    if (pass->vectorize)
        rest = span_part(e, j0, j1, e->gs.vw, pass, vec);
    span_part(e, rest, j1, 1, pass, tail);
    for (int a = 0; a < pass->nacc; a++) {
        if (!pass->vectorize) {
            results[a] = tail[a];
        } else if (pass->max) {
            LLVMValueRef args[2] = {vec[a], tail[a]};
            results[a] = cg_intrinsic(e, "llvm.maximum", e->f32, args, 2);
        } else {
            results[a] = cg_reassoc(LLVMBuildFAdd(e->b, vec[a], tail[a], ""));
        }
    }
}

/* ---- elementwise with broadcasting ---- */

#define BROADCAST_MAX_IN 3

/* The output and its inputs walked together: after merging, dimension d of
 * the output has dims[d] elements, and input k advances strides[k][d]
 * elements per step along it (0 where it broadcasts). */
typedef struct broadcast_walk {
    int rank;
    int64_t dims[IR_MAX_RANK];
    int nin;
    int64_t strides[BROADCAST_MAX_IN][IR_MAX_RANK];
} broadcast_walk;

/* Computes the output element from the loaded inputs (scalars, or vectors
 * of `lanes`). */
typedef LLVMValueRef (*broadcast_fn)(cg_emit *e, const ir_value *v, LLVMValueRef *in, int lanes);

static void broadcast_walk_init(cg_emit *e, broadcast_walk *w, const ir_value *v)
{
    memset(w, 0, sizeof *w);
    const ir_type *ot = &v->type;
    w->nin = v->nops;
    for (int k = 0; k < v->nops; k++) {
        const ir_type *t = &e->g->values[v->ops[k]]->type;
        int64_t stride = 1;
        for (int d = ot->rank - 1; d >= 0; d--) {
            int td = d - (ot->rank - t->rank);
            bool walks = td >= 0 && t->dims[td] != 1;
            w->strides[k][d] = walks ? stride : 0;
            if (td >= 0)
                stride *= t->dims[td];
        }
    }
    /* Drop size-1 dimensions, then merge a dimension into the one after it
     * where every input walks both as one. The output is contiguous. */
    for (int d = 0; d < ot->rank; d++) {
        if (ot->dims[d] == 1)
            continue;
        int r = w->rank++;
        w->dims[r] = ot->dims[d];
        for (int k = 0; k < w->nin; k++)
            w->strides[k][r] = w->strides[k][d];
        bool mergeable = r > 0;
        for (int k = 0; k < w->nin && mergeable; k++)
            if (w->strides[k][r - 1] != w->strides[k][r] * w->dims[r])
                mergeable = false;
        if (mergeable) {
            w->dims[r - 1] *= w->dims[r];
            for (int k = 0; k < w->nin; k++)
                w->strides[k][r - 1] = w->strides[k][r];
            w->rank--;
        }
    }
    if (w->rank == 0) {
        w->rank = 1;
        w->dims[0] = 1;
    }
}

typedef struct broadcast_state {
    const ir_value *v;
    broadcast_fn fn;
    int nin;
    LLVMValueRef in[BROADCAST_MAX_IN], out; /* pointers to the row's first elements */
    int64_t inner_stride[BROADCAST_MAX_IN];
} broadcast_state;

static void broadcast_body(cg_emit *e, void *user, LLVMValueRef j, int lanes, LLVMValueRef *terms)
{
    broadcast_state *s = user;
    LLVMValueRef x[BROADCAST_MAX_IN];
    for (int k = 0; k < s->nin; k++)
        x[k] = s->inner_stride[k] ? cg_load(e, e->f32, s->in[k], j, lanes)
                                  : cg_splat(e, cg_load(e, e->f32, s->in[k], cg_i64(e, 0), 1), lanes);
    cg_store(e, s->fn(e, s->v, x, lanes), e->f32, s->out, j);
}

/* Emits v = fn(operands...) elementwise, the operands broadcast to v's
 * shape. Tasks are (row, chunk of the last merged dimension). */
static void emit_broadcast(cg_emit *e, const ir_value *v, broadcast_fn fn)
{
    broadcast_walk w;
    broadcast_walk_init(e, &w, v);
    int last = w.rank - 1;
    int64_t inner = w.dims[last], rows = 1;
    for (int d = 0; d < last; d++)
        rows *= w.dims[d];
    int64_t chunk = inner > 2 * CHUNK ? CHUNK : inner;
    int64_t nchunks = (inner + chunk - 1) / chunk;

    LLVMValueRef begin, end;
    LLVMValueRef kfn = cg_kernel_begin(e, ir_op_get(v->op)->name, &begin, &end);
    broadcast_state s = {.v = v, .fn = fn, .nin = w.nin};
    LLVMValueRef out = cg_buf(e, e->plan->slot[v->id]);
    LLVMValueRef in[BROADCAST_MAX_IN];
    for (int k = 0; k < w.nin; k++) {
        in[k] = cg_buf(e, e->plan->slot[v->ops[k]]);
        s.inner_stride[k] = w.strides[k][last];
    }

    cg_loop l;
    LLVMValueRef t = cg_loop_begin(e, &l, begin, end, cg_i64(e, 1));
    LLVMValueRef row = LLVMBuildSDiv(e->b, t, cg_i64(e, nchunks), "row");
    LLVMValueRef j0 = LLVMBuildMul(e->b, LLVMBuildSRem(e->b, t, cg_i64(e, nchunks), ""), cg_i64(e, chunk), "");
    LLVMValueRef j1 = LLVMBuildAdd(e->b, j0, cg_i64(e, chunk), "");
    LLVMValueRef over = LLVMBuildICmp(e->b, LLVMIntSGT, j1, cg_i64(e, inner), "");
    j1 = LLVMBuildSelect(e->b, over, cg_i64(e, inner), j1, "");

    /* The row index gives each input's offset, and the chunk start j0 is
     * added where the input walks the last dimension. */
    LLVMValueRef base[BROADCAST_MAX_IN], rest = row;
    for (int k = 0; k < w.nin; k++)
        base[k] = cg_i64(e, 0);
    for (int d = last - 1; d >= 0; d--) {
        LLVMValueRef idx = d > 0 ? LLVMBuildSRem(e->b, rest, cg_i64(e, w.dims[d]), "") : rest;
        if (d > 0)
            rest = LLVMBuildSDiv(e->b, rest, cg_i64(e, w.dims[d]), "");
        for (int k = 0; k < w.nin; k++)
            if (w.strides[k][d] != 0)
                base[k] = LLVMBuildAdd(e->b, base[k], LLVMBuildMul(e->b, idx, cg_i64(e, w.strides[k][d]), ""), "");
    }
    for (int k = 0; k < w.nin; k++)
        s.in[k] = cg_gep(e, e->f32, in[k], base[k]);
    s.out = cg_gep(e, e->f32, out, LLVMBuildMul(e->b, row, cg_i64(e, inner), ""));

    /* Every input walks the last dimension with stride 1 or 0, because it
     * maps to the input's own last dimension or is broadcast. */
    cg_span_pass pass = {.vectorize = inner >= e->gs.vw, .body = broadcast_body, .user = &s};
    cg_span(e, j0, j1, &pass, NULL);
    cg_loop_end(e, &l, NULL);
    cg_kernel_end(e);
    cg_launch(e, kfn, rows * nchunks, 1, rows * inner);
}

/* GELU'(x) for the tanh form 0.5 x (1 + tanh(u)), u = s (x + c x^3),
 * s = sqrt(2/pi), c = 0.044715:
 *   0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) s (1 + 3 c x^2).
 * With p = 1 / (1 + exp(-2u)) = 0.5 (1 + tanh u) and
 * q = 1 / (1 + exp(2u)) = 0.5 (1 - tanh u), this is
 *   p + 2 p q x s (1 + 3 c x^2),
 * which has no cancellation where tanh u is near -1 or 1. */
static LLVMValueRef gelu_derivative(cg_emit *e, LLVMValueRef x)
{
    const double s = 0.7978845608028654, c = 0.044715;
    LLVMTypeRef ty = LLVMTypeOf(x);
    LLVMValueRef one = cg_constf(e, ty, 1.0);
    LLVMValueRef x2 = LLVMBuildFMul(e->b, x, x, "");
    LLVMValueRef two_u = LLVMBuildFMul(e->b, cg_fma(e, LLVMBuildFMul(e->b, x2, cg_constf(e, ty, c), ""), x, x),
                                       cg_constf(e, ty, 2.0 * s), "");
    LLVMValueRef p = LLVMBuildFDiv(e->b, one, LLVMBuildFAdd(e->b, one, cg_exp(e, LLVMBuildFNeg(e->b, two_u, "")), ""), "");
    LLVMValueRef q = LLVMBuildFDiv(e->b, one, LLVMBuildFAdd(e->b, one, cg_exp(e, two_u), ""), "");
    LLVMValueRef du = LLVMBuildFMul(e->b, x, cg_fma(e, x2, cg_constf(e, ty, 3.0 * c * s), cg_constf(e, ty, s)), "");
    LLVMValueRef pq2 = LLVMBuildFMul(e->b, LLVMBuildFMul(e->b, p, q, ""), cg_constf(e, ty, 2.0), "");
    return cg_fma(e, pq2, du, p);
}

/* grad.gelu, grad.relu, grad.abs (dy, x): dy * f'(x), with relu'(x) = 1 for
 * x > 0, abs'(x) = sign(x), and 0 at x = 0 or NaN for both. */
static LLVMValueRef pointwise_body(cg_emit *e, const ir_value *v, LLVMValueRef *in, int lanes)
{
    LLVMValueRef dy = in[0], x = in[1];
    LLVMTypeRef ty = LLVMTypeOf(x);
    LLVMValueRef zero = cg_constf(e, ty, 0.0);
    LLVMValueRef slope;
    if (v->op == IR_OP_GRAD_GELU) {
        slope = gelu_derivative(e, x);
    } else {
        LLVMValueRef positive = LLVMBuildFCmp(e->b, LLVMRealOGT, x, zero, "");
        slope = LLVMBuildSelect(e->b, positive, cg_constf(e, ty, 1.0), zero, "");
        if (v->op == IR_OP_GRAD_ABS) {
            LLVMValueRef negative = LLVMBuildFCmp(e->b, LLVMRealOLT, x, zero, "");
            slope = LLVMBuildSelect(e->b, negative, cg_constf(e, ty, -1.0), slope, "");
        }
    }
    return LLVMBuildFMul(e->b, dy, slope, "");
}

/* grad.maximum{operand}, grad.minimum{operand} (dy, a, b): dy where the
 * chosen operand wins, dy / 2 on a tie and 0 otherwise. A NaN operand is
 * no win and no tie, so it gives 0. */
static LLVMValueRef minmax_body(cg_emit *e, const ir_value *v, LLVMValueRef *in, int lanes)
{
    bool to_a = ir_attr_int(v, "operand") == 0;
    LLVMValueRef mine = to_a ? in[1] : in[2], other = to_a ? in[2] : in[1];
    LLVMTypeRef ty = LLVMTypeOf(mine);
    LLVMRealPredicate wins = v->op == IR_OP_GRAD_MAXIMUM ? LLVMRealOGT : LLVMRealOLT;
    LLVMValueRef share = LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, wins, mine, other, ""), cg_constf(e, ty, 1.0),
                                         cg_constf(e, ty, 0.0), "");
    LLVMValueRef tie = LLVMBuildFCmp(e->b, LLVMRealOEQ, mine, other, "");
    share = LLVMBuildSelect(e->b, tie, cg_constf(e, ty, 0.5), share, "");
    return LLVMBuildFMul(e->b, in[0], share, "");
}

int cg_emit_grad_pointwise(cg_emit *e, const ir_value *v)
{
    bool minmax = v->op == IR_OP_GRAD_MAXIMUM || v->op == IR_OP_GRAD_MINIMUM;
    emit_broadcast(e, v, minmax ? minmax_body : pointwise_body);
    return 0;
}

/* ---- grad.causal_mask ---- */

typedef struct fill_state {
    LLVMValueRef src, dst; /* src NULL: store zeros */
} fill_state;

static void fill_body(cg_emit *e, void *user, LLVMValueRef j, int lanes, LLVMValueRef *terms)
{
    fill_state *s = user;
    LLVMValueRef x = s->src ? cg_load(e, e->f32, s->src, j, lanes) : cg_constf(e, cg_vec_type(e->f32, lanes), 0.0);
    cg_store(e, x, e->f32, s->dst, j);
}

void cg_span_copy(cg_emit *e, LLVMValueRef src, LLVMValueRef dst, LLVMValueRef j0, LLVMValueRef j1)
{
    fill_state s = {src, dst};
    cg_span_pass pass = {.vectorize = true, .body = fill_body, .user = &s};
    cg_span(e, j0, j1, &pass, NULL);
}

/* Row i of each [T1, T2] matrix keeps dy[i, j] for j <= i + offset and is 0
 * after that: a copy of the first min(max(i + offset + 1, 0), T2) elements
 * and a zero fill of the rest. */
int cg_emit_grad_causal_mask(cg_emit *e, const ir_value *v)
{
    int rank = v->type.rank;
    int64_t t1 = v->type.dims[rank - 2], t2 = v->type.dims[rank - 1];
    int64_t rows = t2 ? ir_type_numel(&v->type) / t2 : 0;
    LLVMValueRef begin, end;
    LLVMValueRef kfn = cg_kernel_begin(e, "grad.causal_mask", &begin, &end);
    LLVMValueRef dy = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef dx = cg_buf(e, e->plan->slot[v->id]);

    cg_loop l;
    LLVMValueRef r = cg_loop_begin(e, &l, begin, end, cg_i64(e, 1));
    LLVMValueRef off = LLVMBuildMul(e->b, r, cg_i64(e, t2), "");
    LLVMValueRef src = cg_gep(e, e->f32, dy, off), dst = cg_gep(e, e->f32, dx, off);
    LLVMValueRef i = LLVMBuildSRem(e->b, r, cg_i64(e, t1), "");
    LLVMValueRef keep = LLVMBuildAdd(e->b, i, cg_i64(e, ir_attr_int(v, "offset") + 1), "");
    LLVMValueRef low = LLVMBuildICmp(e->b, LLVMIntSLT, keep, cg_i64(e, 0), "");
    keep = LLVMBuildSelect(e->b, low, cg_i64(e, 0), keep, "");
    LLVMValueRef high = LLVMBuildICmp(e->b, LLVMIntSGT, keep, cg_i64(e, t2), "");
    keep = LLVMBuildSelect(e->b, high, cg_i64(e, t2), keep, "keep");
    cg_span_copy(e, src, dst, cg_i64(e, 0), keep);
    cg_span_copy(e, NULL, dst, keep, cg_i64(e, t2));
    cg_loop_end(e, &l, NULL);
    cg_kernel_end(e);
    cg_launch(e, kfn, rows, 16, rows * t2);
    return 0;
}

/* ---- grad.softmax ---- */

typedef struct softmax_grad_state {
    LLVMValueRef dy, y, dx; /* first element of the row */
    int64_t stride;          /* between row elements */
    LLVMValueRef dot;
} softmax_grad_state;

static LLVMValueRef softmax_grad_index(cg_emit *e, const softmax_grad_state *s, LLVMValueRef j)
{
    return s->stride == 1 ? j : LLVMBuildMul(e->b, j, cg_i64(e, s->stride), "");
}

static void softmax_grad_dot(cg_emit *e, void *user, LLVMValueRef j, int lanes, LLVMValueRef *terms)
{
    softmax_grad_state *s = user;
    LLVMValueRef at = softmax_grad_index(e, s, j);
    terms[0] = LLVMBuildFMul(e->b, cg_load(e, e->f32, s->dy, at, lanes), cg_load(e, e->f32, s->y, at, lanes), "");
}

static void softmax_grad_write(cg_emit *e, void *user, LLVMValueRef j, int lanes, LLVMValueRef *terms)
{
    softmax_grad_state *s = user;
    LLVMValueRef at = softmax_grad_index(e, s, j);
    LLVMValueRef d = LLVMBuildFSub(e->b, cg_load(e, e->f32, s->dy, at, lanes), cg_splat(e, s->dot, lanes), "");
    cg_store(e, LLVMBuildFMul(e->b, cg_load(e, e->f32, s->y, at, lanes), d, ""), e->f32, s->dx, at);
}

/* dx = y * (dy - sum(dy * y)) along the axis, one task per row. Rows along
 * an inner axis are walked with a stride and without vectors. */
int cg_emit_grad_softmax(cg_emit *e, const ir_value *v)
{
    int rank = v->type.rank;
    int64_t axis = ir_attr_int(v, "axis");
    if (axis < 0)
        axis += rank;
    int64_t n = v->type.dims[axis], inner = 1;
    for (int d = (int)axis + 1; d < rank; d++)
        inner *= v->type.dims[d];
    int64_t rows = n ? ir_type_numel(&v->type) / n : 0;

    LLVMValueRef begin, end;
    LLVMValueRef kfn = cg_kernel_begin(e, "grad.softmax", &begin, &end);
    LLVMValueRef dy = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef y = cg_buf(e, e->plan->slot[v->ops[1]]);
    LLVMValueRef dx = cg_buf(e, e->plan->slot[v->id]);
    softmax_grad_state s = {.stride = inner};

    cg_loop l;
    LLVMValueRef r = cg_loop_begin(e, &l, begin, end, cg_i64(e, 1));
    /* Row r starts at (r / inner) * n * inner + r % inner. */
    LLVMValueRef outer = LLVMBuildSDiv(e->b, r, cg_i64(e, inner), "");
    LLVMValueRef off = LLVMBuildAdd(e->b, LLVMBuildMul(e->b, outer, cg_i64(e, n * inner), ""),
                                    LLVMBuildSRem(e->b, r, cg_i64(e, inner), ""), "");
    s.dy = cg_gep(e, e->f32, dy, off);
    s.y = cg_gep(e, e->f32, y, off);
    s.dx = cg_gep(e, e->f32, dx, off);

    cg_span_pass dot = {.vectorize = inner == 1, .nacc = 1, .body = softmax_grad_dot, .user = &s};
    cg_span(e, cg_i64(e, 0), cg_i64(e, n), &dot, &s.dot);
    cg_span_pass write = {.vectorize = inner == 1, .body = softmax_grad_write, .user = &s};
    cg_span(e, cg_i64(e, 0), cg_i64(e, n), &write, NULL);
    cg_loop_end(e, &l, NULL);
    cg_kernel_end(e);
    cg_launch(e, kfn, rows, 1, rows * n);
    return 0;
}

/* ---- grad.layernorm and grad.layernorm_weight ---- */

typedef struct layernorm_grad_state {
    LLVMValueRef x, dy, dx, w, dw; /* x, dy and dx point at the row */
    LLVMValueRef mean, rstd, g_mean, gx_mean;
} layernorm_grad_state;

static LLVMValueRef layernorm_grad_xhat(cg_emit *e, const layernorm_grad_state *s, LLVMValueRef j, int lanes)
{
    LLVMValueRef d = LLVMBuildFSub(e->b, cg_load(e, e->f32, s->x, j, lanes), cg_splat(e, s->mean, lanes), "");
    return LLVMBuildFMul(e->b, d, cg_splat(e, s->rstd, lanes), "");
}

static void layernorm_grad_sum(cg_emit *e, void *user, LLVMValueRef j, int lanes, LLVMValueRef *terms)
{
    layernorm_grad_state *s = user;
    terms[0] = cg_load(e, e->f32, s->x, j, lanes);
}

static void layernorm_grad_sq(cg_emit *e, void *user, LLVMValueRef j, int lanes, LLVMValueRef *terms)
{
    layernorm_grad_state *s = user;
    LLVMValueRef d = LLVMBuildFSub(e->b, cg_load(e, e->f32, s->x, j, lanes), cg_splat(e, s->mean, lanes), "");
    terms[0] = LLVMBuildFMul(e->b, d, d, "");
}

/* Computes the row's mean and 1 / sqrt(var + eps) as the forward kernel
 * does: the mean, then the biased variance about it. */
static void layernorm_grad_row_stats(cg_emit *e, layernorm_grad_state *s, int64_t c, double eps)
{
    LLVMValueRef inv_c = LLVMConstReal(e->f32, 1.0 / (double)c), sum, sq;
    cg_span_pass mean = {.vectorize = true, .nacc = 1, .body = layernorm_grad_sum, .user = s};
    cg_span(e, cg_i64(e, 0), cg_i64(e, c), &mean, &sum);
    s->mean = LLVMBuildFMul(e->b, sum, inv_c, "mean");
    cg_span_pass var = {.vectorize = true, .nacc = 1, .body = layernorm_grad_sq, .user = s};
    cg_span(e, cg_i64(e, 0), cg_i64(e, c), &var, &sq);
    LLVMValueRef ve = LLVMBuildFAdd(e->b, LLVMBuildFMul(e->b, sq, inv_c, ""), LLVMConstReal(e->f32, eps), "");
    s->rstd = LLVMBuildFDiv(e->b, LLVMConstReal(e->f32, 1.0), cg_intrinsic(e, "llvm.sqrt", e->f32, &ve, 1), "rstd");
}

static LLVMValueRef layernorm_grad_g(cg_emit *e, const layernorm_grad_state *s, LLVMValueRef j, int lanes)
{
    return LLVMBuildFMul(e->b, cg_load(e, e->f32, s->dy, j, lanes), cg_load(e, e->f32, s->w, j, lanes), "");
}

static void layernorm_grad_g_sums(cg_emit *e, void *user, LLVMValueRef j, int lanes, LLVMValueRef *terms)
{
    layernorm_grad_state *s = user;
    terms[0] = layernorm_grad_g(e, s, j, lanes);
    terms[1] = LLVMBuildFMul(e->b, terms[0], layernorm_grad_xhat(e, s, j, lanes), "");
}

static void layernorm_grad_write(cg_emit *e, void *user, LLVMValueRef j, int lanes, LLVMValueRef *terms)
{
    layernorm_grad_state *s = user;
    LLVMValueRef t = LLVMBuildFSub(e->b, layernorm_grad_g(e, s, j, lanes), cg_splat(e, s->g_mean, lanes), "");
    t = LLVMBuildFSub(e->b, t, LLVMBuildFMul(e->b, layernorm_grad_xhat(e, s, j, lanes), cg_splat(e, s->gx_mean, lanes), ""), "");
    cg_store(e, LLVMBuildFMul(e->b, t, cg_splat(e, s->rstd, lanes), ""), e->f32, s->dx, j);
}

/* With xhat = (x - mean) * rstd and g = dy * weight, per row of length C:
 *   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
 * One task per row, four passes over it: the two statistics, the two
 * means of g, and the write. */
int cg_emit_grad_layernorm(cg_emit *e, const ir_value *v)
{
    int64_t c = v->type.dims[v->type.rank - 1];
    int64_t rows = c ? ir_type_numel(&v->type) / c : 0;
    double eps = ir_attr_float(v, "eps");
    LLVMValueRef begin, end;
    LLVMValueRef kfn = cg_kernel_begin(e, "grad.layernorm", &begin, &end);
    LLVMValueRef dy = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef x = cg_buf(e, e->plan->slot[v->ops[1]]);
    LLVMValueRef dx = cg_buf(e, e->plan->slot[v->id]);
    layernorm_grad_state s = {.w = cg_buf(e, e->plan->slot[v->ops[2]])};

    cg_loop l;
    LLVMValueRef r = cg_loop_begin(e, &l, begin, end, cg_i64(e, 1));
    LLVMValueRef off = LLVMBuildMul(e->b, r, cg_i64(e, c), "");
    s.x = cg_gep(e, e->f32, x, off);
    s.dy = cg_gep(e, e->f32, dy, off);
    s.dx = cg_gep(e, e->f32, dx, off);
    layernorm_grad_row_stats(e, &s, c, eps);

    LLVMValueRef sums[2];
    cg_span_pass g = {.vectorize = true, .nacc = 2, .body = layernorm_grad_g_sums, .user = &s};
    cg_span(e, cg_i64(e, 0), cg_i64(e, c), &g, sums);
    LLVMValueRef inv_c = LLVMConstReal(e->f32, 1.0 / (double)c);
    s.g_mean = LLVMBuildFMul(e->b, sums[0], inv_c, "g_mean");
    s.gx_mean = LLVMBuildFMul(e->b, sums[1], inv_c, "gx_mean");
    cg_span_pass write = {.vectorize = true, .body = layernorm_grad_write, .user = &s};
    cg_span(e, cg_i64(e, 0), cg_i64(e, c), &write, NULL);
    cg_loop_end(e, &l, NULL);
    cg_kernel_end(e);
    cg_launch(e, kfn, rows, 1, rows * c);
    return 0;
}

static void layernorm_grad_accumulate(cg_emit *e, void *user, LLVMValueRef j, int lanes, LLVMValueRef *terms)
{
    layernorm_grad_state *s = user;
    LLVMValueRef sum = cg_fma(e, cg_load(e, e->f32, s->dy, j, lanes), layernorm_grad_xhat(e, s, j, lanes),
                              cg_load(e, e->f32, s->dw, j, lanes));
    cg_store(e, sum, e->f32, s->dw, j);
}

/* dweight[j] = sum over rows of dy * xhat, a reduction over rows. Each task
 * owns a block of columns and adds the rows into it in row order, so the
 * result does not depend on the thread count or the scheduling. Every task
 * recomputes the row statistics, which costs two extra passes over x per
 * block; the blocks are wide to keep that small. */
int cg_emit_grad_layernorm_weight(cg_emit *e, const ir_value *v)
{
    const ir_value *xv = e->g->values[v->ops[1]];
    int64_t c = xv->type.dims[xv->type.rank - 1];
    int64_t rows = c ? ir_type_numel(&xv->type) / c : 0;
    int64_t block = 16 * (int64_t)e->gs.vw;
    int64_t nblocks = (c + block - 1) / block;
    double eps = ir_attr_float(v, "eps");

    LLVMValueRef begin, end;
    LLVMValueRef kfn = cg_kernel_begin(e, "grad.layernorm_weight", &begin, &end);
    LLVMValueRef dy = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef x = cg_buf(e, e->plan->slot[v->ops[1]]);
    layernorm_grad_state s = {.dw = cg_buf(e, e->plan->slot[v->id])};

    cg_loop bl;
    LLVMValueRef b = cg_loop_begin(e, &bl, begin, end, cg_i64(e, 1));
    LLVMValueRef j0 = LLVMBuildMul(e->b, b, cg_i64(e, block), "");
    LLVMValueRef j1 = LLVMBuildAdd(e->b, j0, cg_i64(e, block), "");
    LLVMValueRef over = LLVMBuildICmp(e->b, LLVMIntSGT, j1, cg_i64(e, c), "");
    j1 = LLVMBuildSelect(e->b, over, cg_i64(e, c), j1, "");
    cg_span_copy(e, NULL, s.dw, j0, j1);

    cg_loop rl;
    LLVMValueRef r = cg_loop_begin(e, &rl, cg_i64(e, 0), cg_i64(e, rows), cg_i64(e, 1));
    LLVMValueRef off = LLVMBuildMul(e->b, r, cg_i64(e, c), "");
    s.x = cg_gep(e, e->f32, x, off);
    s.dy = cg_gep(e, e->f32, dy, off);
    layernorm_grad_row_stats(e, &s, c, eps);
    cg_span_pass acc = {.vectorize = true, .body = layernorm_grad_accumulate, .user = &s};
    cg_span(e, j0, j1, &acc, NULL);
    cg_loop_end(e, &rl, NULL);

    cg_loop_end(e, &bl, NULL);
    cg_kernel_end(e);
    cg_launch(e, kfn, nblocks, 1, nblocks * rows * (2 * c + block));
    return 0;
}
