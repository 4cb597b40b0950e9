/* Matrix multiplication: matmul (batched, with broadcast batch dims and
 * optionally transposed A or B) and linear (x W + b).
 *
 * B is packed into panels of NR columns (codegen/emit_gemm_pack.c), so
 * the microkernel reads NR contiguous floats per k. A transposed A is
 * copied block by block into a row-major scratch block on the stack. Weight operands (params and values computed
 * from params) are packed once by qc_bind, unless cg_options.repack_weights
 * asks to pack them on every run like activations. The microkernel keeps
 * an MR x NR tile of C in MR * NVEC vector registers and does MR * NVEC
 * llvm.fma calls per k. Tasks are (batch,
 * MC-row block, NC-column block) tiles; each task walks K in KC blocks
 * (the B micro-panel of one block stays in L1/L2 while the MR-row strips
 * of the MC block reuse it), then NR panels, then MR-row strips. */
#include <stdio.h>
#include <string.h>

#include "codegen/cg_internal.h"

typedef struct gemm_dims {
    int64_t m, k, n;
    int64_t batch;                  /* output batch count */
    int out_batch_rank;
    int64_t out_batch_dims[IR_MAX_RANK];
    int64_t a_batch_stride[IR_MAX_RANK]; /* per output batch dim, in elements (0 = broadcast) */
    int64_t b_batch_stride[IR_MAX_RANK]; /* in B batch indices */
    bool transpose_a; /* A is stored [K, M] */
    bool transpose_b;
    bool has_bias;
    int64_t panels; /* ceil(n / nr) */
} gemm_dims;

static void batch_strides(const ir_type *t, int out_rank, const int64_t *out_dims, int64_t elem_per_batch,
                          int64_t *strides)
{
    int trank = t->rank - 2;
    int64_t s = elem_per_batch;
    for (int d = out_rank - 1; d >= 0; d--) {
        int td = d - (out_rank - trank);
        if (td >= 0 && t->dims[td] != 1) {
            strides[d] = s;
            s *= t->dims[td];
        } else {
            strides[d] = 0;
            if (td >= 0)
                s *= t->dims[td];
        }
    }
    (void)out_dims;
}

static gemm_dims gemm_dims_of(cg_emit *e, const ir_value *v)
{
    gemm_dims g;
    memset(&g, 0, sizeof g);
    const ir_type *at = &e->g->values[v->ops[0]]->type;
    const ir_type *bt = &e->g->values[v->ops[1]]->type;
    if (cg_is_linear(v)) {
        g.k = bt->dims[0];
        g.n = bt->dims[1];
        g.m = ir_type_numel(at) / g.k;
        g.batch = 1;
        g.has_bias = v->op == IR_OP_LINEAR && v->nops == 3;
    } else {
        g.transpose_a = ir_attr_int(v, "transpose_a") != 0;
        g.transpose_b = ir_attr_int(v, "transpose_b") != 0;
        g.m = g.transpose_a ? at->dims[at->rank - 1] : at->dims[at->rank - 2];
        g.k = g.transpose_a ? at->dims[at->rank - 2] : at->dims[at->rank - 1];
        g.n = g.transpose_b ? bt->dims[bt->rank - 2] : bt->dims[bt->rank - 1];
        g.out_batch_rank = v->type.rank - 2;
        g.batch = 1;
        for (int d = 0; d < g.out_batch_rank; d++) {
            g.out_batch_dims[d] = v->type.dims[d];
            g.batch *= v->type.dims[d];
        }
        batch_strides(at, g.out_batch_rank, g.out_batch_dims, g.m * g.k, g.a_batch_stride);
        batch_strides(bt, g.out_batch_rank, g.out_batch_dims, 1, g.b_batch_stride);
    }
    g.panels = (g.n + e->gs.nr - 1) / e->gs.nr;
    return g;
}

/* ---- microkernel ---- */

/* Stores the tile acc[r * nvec + j] to C (nv vectors per row, the last
 * one masked when mask is not NULL), through the epilogue when ep is not
 * NULL. */
static void store_tile(cg_emit *e, int mr, int nv, LLVMValueRef mask, const LLVMValueRef *acc, LLVMValueRef c,
                       LLVMValueRef ldc, const cg_epilogue *ep, const LLVMValueRef *ep_bases)
{
    int vw = e->gs.vw, nvec = e->gs.nvec;
    LLVMTypeRef mtys[2] = {e->vf, e->ptr};
    for (int r = 0; r < mr; r++) {
        LLVMValueRef row = LLVMBuildMul(e->b, cg_i64(e, r), ldc, "");
        for (int j = 0; j < nv; j++) {
            LLVMValueRef lane_mask = mask && j == nv - 1 ? mask : NULL;
            LLVMValueRef idx = LLVMBuildAdd(e->b, row, cg_i64(e, j * vw), "");
            LLVMValueRef val = acc[r * nvec + j];
            if (ep)
                val = cg_epilogue_apply(e, ep, ep_bases, val, row, cg_i64(e, j * vw), vw, lane_mask);
            if (lane_mask) {
                LLVMValueRef args[4] = {val, cg_gep(e, e->f32, c, idx), cg_i32(e, 4), lane_mask};
                cg_intrinsic2(e, "llvm.masked.store", mtys, 2, args, 4);
            } else {
                cg_store(e, val, e->f32, c, idx);
            }
        }
    }
}

/* Names the microkernel of one tile shape and epilogue, such as
 * "gemm.mk8x48.bias" or "gemm.mk1x48.ep($0 $1 add gelu|FR)". */
static void microkernel_name(char *name, size_t cap, int mr, int nvalid, bool bias, const cg_epilogue *ep)
{
    int len = snprintf(name, cap, "gemm.mk%dx%d%s", mr, nvalid, bias ? ".bias" : "");
    if (!ep || len < 0 || (size_t)len >= cap)
        return;
    char program[IR_FUSED_MAX_STEPS * 32], kinds[IR_FUSED_MAX_INPUTS + 1];
    if (ir_fused_format(&ep->program, program, sizeof program) < 0)
        program[0] = '\0';
    for (int k = 0; k < ep->ninputs; k++)
        kinds[k] = "FRSO"[ep->kind[k]];
    kinds[ep->ninputs] = '\0';
    snprintf(name + len, cap - (size_t)len, ".ep(%s|%s)", program, kinds);
}

/* void mk(ptr A, i64 lda, ptr Bp, ptr C, i64 ldc, i64 kc, i1 first, ptr bias, i1 last, ptr e1, ...)
 * C[0..mr, 0..nvalid) = (first ? bias or 0 : C) + A[0..mr, 0..kc) Bp[0..kc, 0..nvalid),
 * and when `last`, the epilogue ep (if any) applied before the store, with
 * e1, ... its operands positioned at the tile.
 * Built once per (mr, nvalid, bias, epilogue) and reused by every GEMM. */
static LLVMValueRef microkernel(cg_emit *e, int mr, int nvalid, bool bias, const cg_epilogue *ep)
{
    char name[IR_FUSED_MAX_STEPS * 32 + 64];
    microkernel_name(name, sizeof name, mr, nvalid, bias, ep);
    LLVMValueRef fn = LLVMGetNamedFunction(e->mod, name);
    if (fn)
        return fn;
    LLVMBasicBlockRef caller_block = LLVMGetInsertBlock(e->b);
    const cg_gemm_shape *gs = &e->gs;
    int vw = gs->vw, nvec = gs->nvec;
    int nparams = 9 + (ep ? ep->ninputs - 1 : 0);
    LLVMTypeRef params[9 + IR_FUSED_MAX_INPUTS] = {e->ptr, e->i64, e->ptr, e->ptr, e->i64, e->i64, e->i1, e->ptr,
                                                   e->i1};
    for (int k = 9; k < nparams; k++)
        params[k] = e->ptr;
    fn = LLVMAddFunction(e->mod, name, LLVMFunctionType(e->void_ty, params, (unsigned)nparams, 0));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    cg_function_attrs(e, fn);
    unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
    for (unsigned i = 0; i < 8; i++)
        if (params[i] == e->ptr)
            LLVMAddAttributeAtIndex(fn, i + 1, LLVMCreateEnumAttribute(e->ctx, noalias, 0));

    LLVMValueRef a = LLVMGetParam(fn, 0), lda = LLVMGetParam(fn, 1), bp = LLVMGetParam(fn, 2);
    LLVMValueRef c = LLVMGetParam(fn, 3), ldc = LLVMGetParam(fn, 4), kc = LLVMGetParam(fn, 5);
    LLVMValueRef first = LLVMGetParam(fn, 6), biasp = LLVMGetParam(fn, 7), last = LLVMGetParam(fn, 8);
    LLVMValueRef ep_bases[IR_FUSED_MAX_INPUTS] = {NULL};
    for (int k = 9; k < nparams; k++)
        ep_bases[k - 8] = LLVMGetParam(fn, (unsigned)k);
    LLVMTypeRef vty = e->vf;
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(e->ctx, fn, "entry");
    LLVMBasicBlockRef init_first = LLVMAppendBasicBlockInContext(e->ctx, fn, "init_first");
    LLVMBasicBlockRef init_load = LLVMAppendBasicBlockInContext(e->ctx, fn, "init_load");
    LLVMBasicBlockRef start = LLVMAppendBasicBlockInContext(e->ctx, fn, "start");
    LLVMPositionBuilderAtEnd(e->b, entry);
    LLVMBuildCondBr(e->b, first, init_first, init_load);

    /* Vectors of the tile that hold valid columns, and the lane mask of a
     * partial last one. */
    int nv = (nvalid + vw - 1) / vw;
    int partial = nvalid % vw;
    LLVMValueRef mask = NULL;
    if (partial) {
        LLVMValueRef bits[64];
        for (int l = 0; l < vw; l++)
            bits[l] = LLVMConstInt(e->i1, l < partial, 0);
        mask = LLVMConstVector(bits, (unsigned)vw);
    }
    LLVMTypeRef mtys[2] = {vty, e->ptr};

    LLVMValueRef init_a[8 * 4], init_b[8 * 4];
    /* first: bias (or zero) in every row */
    LLVMPositionBuilderAtEnd(e->b, init_first);
    for (int j = 0; j < nvec; j++) {
        LLVMValueRef val = cg_constf(e, vty, 0.0);
        if (bias && j < nv) {
            LLVMValueRef ptr = cg_gep(e, e->f32, biasp, cg_i64(e, j * vw));
            if (partial && j == nv - 1) {
                LLVMValueRef args[4] = {ptr, cg_i32(e, 4), mask, cg_constf(e, vty, 0.0)};
                val = cg_intrinsic2(e, "llvm.masked.load", mtys, 2, args, 4);
            } else {
                val = cg_load(e, e->f32, biasp, cg_i64(e, j * vw), vw);
            }
        }
        for (int r = 0; r < mr; r++)
            init_a[r * nvec + j] = val;
    }
    LLVMBuildBr(e->b, start);
    /* later K blocks: the partial sums already in C */
    LLVMPositionBuilderAtEnd(e->b, init_load);
    for (int r = 0; r < mr; r++) {
        LLVMValueRef row = LLVMBuildMul(e->b, cg_i64(e, r), ldc, "");
        for (int j = 0; j < nvec; j++) {
            LLVMValueRef val = cg_constf(e, vty, 0.0);
            LLVMValueRef idx = LLVMBuildAdd(e->b, row, cg_i64(e, j * vw), "");
            if (j < nv && partial && j == nv - 1) {
                LLVMValueRef args[4] = {cg_gep(e, e->f32, c, idx), cg_i32(e, 4), mask, cg_constf(e, vty, 0.0)};
                val = cg_intrinsic2(e, "llvm.masked.load", mtys, 2, args, 4);
            } else if (j < nv) {
                val = cg_load(e, e->f32, c, idx, vw);
            }
            init_b[r * nvec + j] = val;
        }
    }
    LLVMBuildBr(e->b, start);

    LLVMPositionBuilderAtEnd(e->b, start);
    int nacc = mr * nvec;
    LLVMValueRef acc0[8 * 4];
    for (int i = 0; i < nacc; i++) {
        acc0[i] = LLVMBuildPhi(e->b, vty, "");
        LLVMValueRef vals[2] = {init_a[i], init_b[i]};
        LLVMBasicBlockRef blocks[2] = {init_first, init_load};
        LLVMAddIncoming(acc0[i], vals, blocks, 2);
    }
    LLVMValueRef arow[8];
    for (int r = 0; r < mr; r++)
        arow[r] = cg_gep(e, e->f32, a, LLVMBuildMul(e->b, cg_i64(e, r), lda, ""));

    cg_loop l;
    LLVMValueRef k = cg_loop_begin(e, &l, cg_i64(e, 0), kc, cg_i64(e, 1));
    LLVMValueRef acc[8 * 4], next[8 * 4], bvec[4];
    for (int i = 0; i < nacc; i++)
        acc[i] = cg_loop_carry(e, &l, acc0[i]);
    LLVMValueRef bk = LLVMBuildMul(e->b, k, cg_i64(e, gs->nr), "");
    for (int j = 0; j < nvec; j++) {
        bvec[j] = cg_load(e, e->f32, bp, LLVMBuildAdd(e->b, bk, cg_i64(e, j * vw), ""), vw);
        LLVMSetAlignment(bvec[j], (unsigned)(4 * vw)); /* panels are vector aligned */
    }
    for (int r = 0; r < mr; r++) {
        LLVMValueRef av = cg_splat(e, cg_load(e, e->f32, arow[r], k, 1), vw);
        for (int j = 0; j < nvec; j++)
            next[r * nvec + j] = cg_fma(e, av, bvec[j], acc[r * nvec + j]);
    }
    cg_loop_end(e, &l, next);

    if (ep) {
        /* Only the last K block holds the finished sums. */
        LLVMBasicBlockRef apply = LLVMAppendBasicBlockInContext(e->ctx, fn, "epilogue");
        LLVMBasicBlockRef plain = LLVMAppendBasicBlockInContext(e->ctx, fn, "partial_sums");
        LLVMBuildCondBr(e->b, last, apply, plain);
        LLVMPositionBuilderAtEnd(e->b, apply);
        store_tile(e, mr, nv, mask, l.carry, c, ldc, ep, ep_bases);
        LLVMBuildRetVoid(e->b);
        LLVMPositionBuilderAtEnd(e->b, plain);
    }
    store_tile(e, mr, nv, mask, l.carry, c, ldc, NULL, NULL);
    LLVMBuildRetVoid(e->b);
    LLVMPositionBuilderAtEnd(e->b, caller_block);
    return fn;
}

/* ---- the tiled product ---- */

typedef struct gemm_call {
    LLVMValueRef a, bp, c, bias; /* task-level base pointers */
    LLVMValueRef lda, a_row0;    /* row stride of a, and the row of A that a points at */
    LLVMValueRef kc, first, last;
    const cg_epilogue *ep;                      /* NULL without an epilogue */
    LLVMValueRef ep_base[IR_FUSED_MAX_INPUTS]; /* at the task's batch (FULL) or column 0 (ROW) */
} gemm_call;

static void call_mk(cg_emit *e, LLVMValueRef mk, const gemm_dims *g, const gemm_call *gc, LLVMValueRef row,
                    LLVMValueRef col)
{
    LLVMValueRef arow = LLVMBuildSub(e->b, row, gc->a_row0, "");
    LLVMValueRef aptr = cg_gep(e, e->f32, gc->a, LLVMBuildMul(e->b, arow, gc->lda, ""));
    LLVMValueRef tile = LLVMBuildAdd(e->b, LLVMBuildMul(e->b, row, cg_i64(e, g->n), ""), col, "");
    LLVMValueRef cptr = cg_gep(e, e->f32, gc->c, tile);
    LLVMValueRef bias = g->has_bias ? cg_gep(e, e->f32, gc->bias, col) : LLVMConstNull(e->ptr);
    LLVMValueRef args[9 + IR_FUSED_MAX_INPUTS] = {aptr,   gc->lda,   gc->bp, cptr,    cg_i64(e, g->n),
                                                  gc->kc, gc->first, bias,   gc->last};
    int nargs = 9;
    for (int k = 1; gc->ep && k < gc->ep->ninputs; k++) {
        LLVMValueRef base = gc->ep_base[k];
        if (gc->ep->kind[k] == CG_EPILOGUE_FULL)
            base = cg_gep(e, e->f32, base, tile);
        else if (gc->ep->kind[k] == CG_EPILOGUE_ROW)
            base = cg_gep(e, e->f32, base, col);
        args[nargs++] = base;
    }
    LLVMBuildCall2(e->b, LLVMGlobalGetValueType(mk), mk, args, (unsigned)nargs, "");
}

/* Emits the MR-row strips of rows [m0, m1) for one panel. */
static void emit_strips(cg_emit *e, const gemm_dims *g, const gemm_call *gc, LLVMValueRef m0, LLVMValueRef m1,
                        LLVMValueRef col, int nvalid)
{
    int mr = e->gs.mr;
    LLVMValueRef rows = LLVMBuildSub(e->b, m1, m0, "");
    LLVMValueRef full_end = LLVMBuildAdd(e->b, m0, LLVMBuildMul(e->b, LLVMBuildSDiv(e->b, rows, cg_i64(e, mr), ""),
                                                                cg_i64(e, mr), ""), "");
    LLVMValueRef mk = microkernel(e, mr, nvalid, g->has_bias, gc->ep);
    cg_loop l;
    LLVMValueRef row = cg_loop_begin(e, &l, m0, full_end, cg_i64(e, mr));
    call_mk(e, mk, g, gc, row, col);
    cg_loop_end(e, &l, NULL);
    /* Only the last row block can end in a partial strip, of M % MR rows. */
    int tail = (int)(g->m % mr);
    if (tail) {
        LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(e->b));
        LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(e->ctx, fn, "tail_rows");
        LLVMBasicBlockRef after = LLVMAppendBasicBlockInContext(e->ctx, fn, "after_tail");
        LLVMBuildCondBr(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, full_end, m1, ""), then, after);
        LLVMPositionBuilderAtEnd(e->b, then);
        call_mk(e, microkernel(e, tail, nvalid, g->has_bias, gc->ep), g, gc, full_end, col);
        LLVMBuildBr(e->b, after);
        LLVMPositionBuilderAtEnd(e->b, after);
    }
}

static LLVMValueRef min_i64(cg_emit *e, LLVMValueRef a, int64_t b)
{
    LLVMValueRef lt = LLVMBuildICmp(e->b, LLVMIntSLT, a, cg_i64(e, b), "");
    return LLVMBuildSelect(e->b, lt, a, cg_i64(e, b), "");
}

int cg_emit_gemm(cg_emit *e, const cg_gemm_plan *gp, const cg_epilogue *ep)
{
    const ir_value *v = e->g->values[gp->value];
    const cg_gemm_shape *gs = &e->gs;
    gemm_dims g = gemm_dims_of(e, v);
    int64_t mblocks = (g.m + gs->mc - 1) / gs->mc;
    int64_t nblocks = (g.n + gs->nc - 1) / gs->nc;
    int64_t full_panels = g.n / gs->nr;
    int edge = (int)(g.n % gs->nr);

    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, ir_op_get(v->op)->name, &begin, &end);
    LLVMValueRef abuf = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef packed = cg_buf(e, gp->packed_slot);
    LLVMValueRef cbuf = cg_buf(e, e->plan->slot[v->id]);
    LLVMValueRef bias = g.has_bias ? cg_buf(e, e->plan->slot[v->ops[2]]) : NULL;
    LLVMValueRef a_block = g.transpose_a ? cg_emit_a_block_scratch(e) : NULL;

    cg_loop tl;
    LLVMValueRef t = cg_loop_begin(e, &tl, begin, end, cg_i64(e, 1));
    LLVMValueRef bi = LLVMBuildSDiv(e->b, t, cg_i64(e, mblocks * nblocks), "batch");
    LLVMValueRef rem = LLVMBuildSRem(e->b, t, cg_i64(e, mblocks * nblocks), "");
    LLVMValueRef mb = LLVMBuildSDiv(e->b, rem, cg_i64(e, nblocks), "");
    LLVMValueRef nb = LLVMBuildSRem(e->b, rem, cg_i64(e, nblocks), "");

    /* Batch index -> A offset and B batch, with broadcasting. */
    LLVMValueRef aoff = cg_i64(e, 0), bidx = cg_i64(e, 0), restb = bi;
    for (int d = g.out_batch_rank - 1; d >= 0; d--) {
        LLVMValueRef idx = LLVMBuildSRem(e->b, restb, cg_i64(e, g.out_batch_dims[d]), "");
        restb = LLVMBuildSDiv(e->b, restb, cg_i64(e, g.out_batch_dims[d]), "");
        aoff = LLVMBuildAdd(e->b, aoff, LLVMBuildMul(e->b, idx, cg_i64(e, g.a_batch_stride[d]), ""), "");
        bidx = LLVMBuildAdd(e->b, bidx, LLVMBuildMul(e->b, idx, cg_i64(e, g.b_batch_stride[d]), ""), "");
    }
    gemm_call gc;
    memset(&gc, 0, sizeof gc);
    LLVMValueRef coff = LLVMBuildMul(e->b, bi, cg_i64(e, g.m * g.n), "");
    gc.a = cg_gep(e, e->f32, abuf, aoff);
    gc.c = cg_gep(e, e->f32, cbuf, coff);
    gc.bias = bias;
    gc.ep = ep && ep->active ? ep : NULL;
    if (gc.ep)
        cg_epilogue_bases(e, gc.ep, coff, cg_i64(e, 0), gc.ep_base);
    LLVMValueRef bbatch = cg_gep(e, e->f32, packed, LLVMBuildMul(e->b, bidx, cg_i64(e, g.panels * g.k * gs->nr), ""));

    LLVMValueRef m0 = LLVMBuildMul(e->b, mb, cg_i64(e, gs->mc), "m0");
    LLVMValueRef m1 = min_i64(e, LLVMBuildAdd(e->b, m0, cg_i64(e, gs->mc), ""), g.m);
    LLVMValueRef p0 = LLVMBuildMul(e->b, nb, cg_i64(e, gs->nc / gs->nr), "p0");
    LLVMValueRef p1 = min_i64(e, LLVMBuildAdd(e->b, p0, cg_i64(e, gs->nc / gs->nr), ""), g.panels);

    cg_loop kl;
    LLVMValueRef k0 = cg_loop_begin(e, &kl, cg_i64(e, 0), cg_i64(e, g.k), cg_i64(e, gs->kc));
    gc.kc = min_i64(e, LLVMBuildSub(e->b, cg_i64(e, g.k), k0, ""), gs->kc);
    gc.first = LLVMBuildICmp(e->b, LLVMIntEQ, k0, cg_i64(e, 0), "first");
    gc.last = LLVMBuildICmp(e->b, LLVMIntSGE, LLVMBuildAdd(e->b, k0, cg_i64(e, gs->kc), ""), cg_i64(e, g.k), "last");
    LLVMValueRef a_at_k = gc.a;
    if (g.transpose_a) {
        /* The block of A = a^T that this task multiplies, copied row-major. */
        cg_emit_pack_a_block(e, a_at_k, g.m, m0, LLVMBuildSub(e->b, m1, m0, ""), k0, gc.kc, a_block);
        gc.a = a_block;
        gc.lda = cg_i64(e, cg_gemm_a_block_stride(gs));
        gc.a_row0 = m0;
    } else {
        gc.a = cg_gep(e, e->f32, a_at_k, k0);
        gc.lda = cg_i64(e, g.k);
        gc.a_row0 = cg_i64(e, 0);
    }

    cg_loop pl;
    LLVMValueRef p = cg_loop_begin(e, &pl, p0, p1, cg_i64(e, 1));
    LLVMValueRef poff = LLVMBuildAdd(e->b, LLVMBuildMul(e->b, p, cg_i64(e, g.k * gs->nr), ""),
                                     LLVMBuildMul(e->b, k0, cg_i64(e, gs->nr), ""), "");
    gc.bp = cg_gep(e, e->f32, bbatch, poff);
    LLVMValueRef col = LLVMBuildMul(e->b, p, cg_i64(e, gs->nr), "col");
    if (edge) {
        LLVMValueRef kfn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(e->b));
        LLVMBasicBlockRef full = LLVMAppendBasicBlockInContext(e->ctx, kfn, "full_panel");
        LLVMBasicBlockRef part = LLVMAppendBasicBlockInContext(e->ctx, kfn, "edge_panel");
        LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(e->ctx, kfn, "panel_done");
        LLVMBuildCondBr(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, p, cg_i64(e, full_panels), ""), full, part);
        LLVMPositionBuilderAtEnd(e->b, full);
        emit_strips(e, &g, &gc, m0, m1, col, gs->nr);
        LLVMBuildBr(e->b, join);
        LLVMPositionBuilderAtEnd(e->b, part);
        emit_strips(e, &g, &gc, m0, m1, col, edge);
        LLVMBuildBr(e->b, join);
        LLVMPositionBuilderAtEnd(e->b, join);
    } else {
        emit_strips(e, &g, &gc, m0, m1, col, gs->nr);
    }
    cg_loop_end(e, &pl, NULL);
    gc.a = a_at_k;
    cg_loop_end(e, &kl, NULL);
    cg_loop_end(e, &tl, NULL);
    cg_kernel_end(e);

    int64_t tasks = g.batch * mblocks * nblocks;
    cg_launch(e, fn, tasks, 1, g.batch * g.m * g.n * g.k);
    return 0;
}
