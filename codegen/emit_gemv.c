/* Matrix-vector products: matmul and linear (plain or fused) with at most
 * CG_GEMV_MAX_ROWS rows per matrix, as when decoding one token at a time.
 * The GEMM's packed panels pay off only when many rows reuse them, so
 * these kernels read B in place, each element once, with vector loads.
 * One core streams from DRAM fastest along contiguous memory, so every
 * kernel walks B in its own order:
 *   - B[N, K] (matmul with transpose_b, such as the LM head against the
 *     token embedding, or attention scores): a task owns a block of B
 *     rows, which are output columns, and reads them one after another,
 *     one dot product over contiguous K each, reduced across lanes at
 *     the end.
 *   - B[K, N] with N at most one register block (attention times V): one
 *     task per matrix keeps all M x N sums in registers and reads whole
 *     rows of B.
 *   - B[K, N] with wider N (linear layers): a task owns a chunk of K rows,
 *     contiguous in memory, and adds its share of every output column into
 *     a scratch row of partial sums. A second kernel splits the columns
 *     over tasks and sums the chunks. Column blocks over all K rows read
 *     B with a stride of N, which streams about 30% slower (measured on
 *     a Zen 4 core for 768 x 3072).
 * The bias of a linear and the epilogue of a fused product run on the
 * finished sums in registers, right before the only store of C. */
#include <string.h>

#include "codegen/cg_internal.h"

/* Output columns per task of the dot-product kernel: 64 rows of a
 * 768-wide B are 192 KB, small enough to balance over threads. */
#define DOT_ROWS_PER_TASK 64
/* Bytes ahead of its loads that the dot-product kernel prefetches into
 * L2; past the end of a row they reach the next row, which it reads
 * next. The split-K kernel prefetches the same columns CHUNK_ROW_STEP
 * rows ahead. With these hints one core streams B
 * from DRAM as fast as the GEMM reads its packed panels, or faster.
 * Without them it streams 10% to 20% slower (measured on one Zen 4 core
 * of a shared machine with the GPT-2 124M shapes). */
#define DOT_PREFETCH_BYTES 2048
/* The maximum number of vectors in the block of the single-block kernel. */
#define MAX_BLOCK_VECTORS 8
/* Split K: at least this many chunks of K, each at most CHUNK_BYTES of B
 * (fewer chunks when K is short). */
#define MIN_CHUNKS 8
#define CHUNK_BYTES (512 * 1024)
/* Rows of B that the split-K kernel reads together. */
#define CHUNK_ROW_STEP 4
/* Output columns per task of the kernel that sums the chunks. */
#define REDUCE_COLUMNS 512

typedef struct gemv_dims {
    int64_t m, k, n;
    int64_t batch; /* output batch count */
    int batch_rank;
    int64_t batch_dims[IR_MAX_RANK];
    int64_t a_stride[IR_MAX_RANK]; /* elements per step of each output batch dim, 0 = broadcast */
    int64_t b_stride[IR_MAX_RANK];
    bool transpose_b;
    int bias; /* value id of a linear's bias, or -1 */
    /* The cache_write that B is, when only its live rows (before pos + T)
     * matter (cg_live_cache), else NULL. The dot-product kernel then
     * computes only the live output columns and stores 0 in the others,
     * and the single-block kernel sums only the live rows of B. */
    const ir_value *live;
} gemv_dims;

/* Fills strides[0 .. out_rank) for an operand of type t whose last two
 * dims are one matrix of `matrix` elements. */
static void batch_strides(const ir_type *t, int out_rank, int64_t matrix, int64_t *strides)
{
    int trank = t->rank - 2;
    int64_t s = matrix;
    for (int d = out_rank - 1; d >= 0; d--) {
        int td = d - (out_rank - trank);
        strides[d] = td >= 0 && t->dims[td] != 1 ? s : 0;
        if (td >= 0)
            s *= t->dims[td];
    }
}

static gemv_dims gemv_dims_of(const ir_graph *g, const ir_value *v)
{
    gemv_dims d;
    memset(&d, 0, sizeof d);
    const ir_type *at = &g->values[v->ops[0]]->type;
    const ir_type *bt = &g->values[v->ops[1]]->type;
    d.batch = 1;
    d.bias = v->op == IR_OP_LINEAR && v->nops == 3 ? v->ops[2] : -1;
    if (cg_is_linear(v)) {
        d.k = bt->dims[0];
        d.n = bt->dims[1];
        d.m = d.k ? ir_type_numel(at) / d.k : 0;
        return d;
    }
    d.transpose_b = ir_attr_int(v, "transpose_b") != 0;
    d.m = at->dims[at->rank - 2];
    d.k = at->dims[at->rank - 1];
    d.n = v->type.dims[v->type.rank - 1];
    d.batch_rank = v->type.rank - 2;
    for (int i = 0; i < d.batch_rank; i++) {
        d.batch_dims[i] = v->type.dims[i];
        d.batch *= v->type.dims[i];
    }
    batch_strides(at, d.batch_rank, d.m * d.k, d.a_stride);
    batch_strides(bt, d.batch_rank, d.k * d.n, d.b_stride);
    return d;
}

/* Vectors of the single-block kernel: as many as fit in the registers
 * beside the M x block accumulators, one broadcast of A and the B
 * vectors. */
static int block_vectors(int vw, int64_t m)
{
    int registers = vw >= 16 ? 32 : 16;
    int nvec = (registers - 2) / ((int)m + 1);
    if (nvec > MAX_BLOCK_VECTORS)
        nvec = MAX_BLOCK_VECTORS;
    return nvec < 1 ? 1 : nvec;
}

static bool single_block(const gemv_dims *d, int vw)
{
    return !d->transpose_b && d->n <= (int64_t)block_vectors(vw, d->m) * vw;
}

/* Rows of B per chunk of the split-K kernel, a multiple of CHUNK_ROW_STEP. */
static int64_t chunk_rows(const gemv_dims *d)
{
    int64_t step = CHUNK_ROW_STEP;
    int64_t rows = (d->k + MIN_CHUNKS - 1) / MIN_CHUNKS;
    int64_t by_bytes = CHUNK_BYTES / (4 * (d->n ? d->n : 1));
    if (rows > by_bytes)
        rows = by_bytes;
    rows = (rows + step - 1) / step * step;
    return rows < step ? step : rows;
}

bool cg_use_gemv(const ir_graph *g, const ir_value *v)
{
    /* A transposed A has its M rows strided, so those products stay on
     * the GEMM, which packs A. */
    if (!cg_is_product(v) || ir_attr_int(v, "transpose_a") != 0)
        return false;
    return gemv_dims_of(g, v).m <= CG_GEMV_MAX_ROWS;
}

int64_t cg_gemv_scratch_bytes(const ir_graph *g, const ir_value *v, const cg_gemm_shape *gs)
{
    gemv_dims d = gemv_dims_of(g, v);
    if (d.transpose_b || single_block(&d, gs->vw))
        return 0;
    int64_t chunks = (d.k + chunk_rows(&d) - 1) / chunk_rows(&d);
    return d.batch * (chunks > 0 ? chunks : 1) * d.m * d.n * 4;
}

/* Batch index bi -> element offsets of A and B, with broadcasting. */
static void batch_offsets(cg_emit *e, const gemv_dims *d, LLVMValueRef bi, LLVMValueRef *aoff, LLVMValueRef *boff)
{
    *aoff = cg_i64(e, 0);
    *boff = cg_i64(e, 0);
    LLVMValueRef rest = bi;
    for (int i = d->batch_rank - 1; i >= 0; i--) {
        LLVMValueRef idx = LLVMBuildSRem(e->b, rest, cg_i64(e, d->batch_dims[i]), "");
        rest = LLVMBuildSDiv(e->b, rest, cg_i64(e, d->batch_dims[i]), "");
        *aoff = LLVMBuildAdd(e->b, *aoff, LLVMBuildMul(e->b, idx, cg_i64(e, d->a_stride[i]), ""), "");
        *boff = LLVMBuildAdd(e->b, *boff, LLVMBuildMul(e->b, idx, cg_i64(e, d->b_stride[i]), ""), "");
    }
}

/* The lane mask of the first `lanes` of a vector of vw. */
static LLVMValueRef prefix_mask(cg_emit *e, int lanes, int vw)
{
    LLVMValueRef bits[64];
    for (int l = 0; l < vw; l++)
        bits[l] = LLVMConstInt(e->i1, l < lanes, 0);
    return LLVMConstVector(bits, (unsigned)vw);
}

/* Loads a vector at base[index], only the lanes of mask when it is not
 * NULL (the others read 0). */
static LLVMValueRef load_vector(cg_emit *e, LLVMValueRef base, LLVMValueRef index, LLVMValueRef mask)
{
    if (!mask)
        return cg_load(e, e->f32, base, index, e->gs.vw);
    LLVMTypeRef tys[2] = {e->vf, e->ptr};
    LLVMValueRef args[4] = {cg_gep(e, e->f32, base, index), cg_i32(e, 4), mask, cg_constf(e, e->vf, 0.0)};
    return cg_intrinsic2(e, "llvm.masked.load", tys, 2, args, 4);
}

static void store_vector(cg_emit *e, LLVMValueRef value, LLVMValueRef base, LLVMValueRef index, LLVMValueRef mask)
{
    if (!mask) {
        cg_store(e, value, e->f32, base, index);
        return;
    }
    LLVMTypeRef tys[2] = {e->vf, e->ptr};
    LLVMValueRef args[4] = {value, cg_gep(e, e->f32, base, index), cg_i32(e, 4), mask};
    cg_intrinsic2(e, "llvm.masked.store", tys, 2, args, 4);
}

/* Prefetches base[index] into L2 for reading. A hint only: the address
 * may lie past the end of B, so the GEP is not inbounds. */
static void prefetch(cg_emit *e, LLVMValueRef base, LLVMValueRef index)
{
    LLVMValueRef args[4] = {LLVMBuildGEP2(e->b, e->f32, base, &index, 1, ""), cg_i32(e, 0), cg_i32(e, 2),
                            cg_i32(e, 1)};
    cg_intrinsic(e, "llvm.prefetch", e->ptr, args, 4);
}

/* Finishes a vector of sums of C at row offset `row` and column `col`
 * (relative to the task's pointers): adds the bias, applies the epilogue
 * and stores it. */
typedef struct gemv_out {
    LLVMValueRef c, bias;
    const cg_epilogue *ep;
    LLVMValueRef ep_base[IR_FUSED_MAX_INPUTS];
} gemv_out;

static void finish_vector(cg_emit *e, const gemv_out *o, LLVMValueRef sum, LLVMValueRef row, LLVMValueRef col,
                          LLVMValueRef mask)
{
    if (o->bias)
        sum = LLVMBuildFAdd(e->b, sum, load_vector(e, o->bias, col, mask), "");
    if (o->ep->active)
        sum = cg_epilogue_apply(e, o->ep, o->ep_base, sum, row, col, e->gs.vw, mask);
    store_vector(e, sum, o->c, LLVMBuildAdd(e->b, row, col, ""), mask);
}

/* Positions the output pointers of a task at flat element `coff` of C
 * and column `col`. */
static gemv_out task_output(cg_emit *e, const ir_value *v, const gemv_dims *d, const cg_epilogue *ep,
                            LLVMValueRef coff, LLVMValueRef col)
{
    gemv_out o;
    memset(&o, 0, sizeof o);
    o.c = cg_gep(e, e->f32, cg_buf(e, e->plan->slot[v->id]), LLVMBuildAdd(e->b, coff, col, ""));
    if (d->bias >= 0)
        o.bias = cg_gep(e, e->f32, cg_buf(e, e->plan->slot[d->bias]), col);
    o.ep = ep;
    if (ep->active)
        cg_epilogue_bases(e, ep, LLVMBuildAdd(e->b, coff, col, ""), col, o.ep_base);
    return o;
}

/* The live rows of B, at most `limit`, or `limit` when all rows count. */
static LLVMValueRef live_limit(cg_emit *e, const gemv_dims *d, int64_t limit)
{
    LLVMValueRef all = cg_i64(e, limit);
    if (!d->live)
        return all;
    LLVMValueRef rows = cg_live_cache_rows(e, d->live);
    return LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, rows, all, ""), rows, all, "");
}

/* ---- B[K, N] with N in one block ---- */

/* One task per matrix: C[m, 0..N) = sum_k A[m, k] B[k, 0..N) in
 * registers, reading B row by row. */
static void emit_single_block(cg_emit *e, const ir_value *v, const gemv_dims *d, const cg_epilogue *ep)
{
    int vw = e->gs.vw;
    int m = (int)d->m;
    int nvec = (int)((d->n + vw - 1) / vw);
    int partial = (int)(d->n % vw);
    LLVMValueRef mask = partial ? prefix_mask(e, partial, vw) : NULL;

    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "gemv", &begin, &end);
    LLVMValueRef abuf = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef bbuf = cg_buf(e, e->plan->slot[v->ops[1]]);
    cg_loop tl;
    LLVMValueRef bi = cg_loop_begin(e, &tl, begin, end, cg_i64(e, 1));
    LLVMValueRef aoff, boff;
    batch_offsets(e, d, bi, &aoff, &boff);
    LLVMValueRef a = cg_gep(e, e->f32, abuf, aoff);
    LLVMValueRef b = cg_gep(e, e->f32, bbuf, boff);
    gemv_out o = task_output(e, v, d, ep, LLVMBuildMul(e->b, bi, cg_i64(e, d->m * d->n), ""), cg_i64(e, 0));

    cg_loop l;
    LLVMValueRef k = cg_loop_begin(e, &l, cg_i64(e, 0), live_limit(e, d, d->k), cg_i64(e, 1));
    LLVMValueRef acc[CG_GEMV_MAX_ROWS * MAX_BLOCK_VECTORS], next[CG_GEMV_MAX_ROWS * MAX_BLOCK_VECTORS];
    for (int i = 0; i < m * nvec; i++)
        acc[i] = cg_loop_carry(e, &l, cg_constf(e, e->vf, 0.0));
    LLVMValueRef brow = LLVMBuildMul(e->b, k, cg_i64(e, d->n), "");
    LLVMValueRef bvec[MAX_BLOCK_VECTORS];
    for (int j = 0; j < nvec; j++)
        bvec[j] = load_vector(e, b, LLVMBuildAdd(e->b, brow, cg_i64(e, j * vw), ""), j == nvec - 1 ? mask : NULL);
    for (int r = 0; r < m; r++) {
        LLVMValueRef av = cg_splat(e, cg_load(e, e->f32, a, LLVMBuildAdd(e->b, k, cg_i64(e, r * d->k), ""), 1), vw);
        for (int j = 0; j < nvec; j++)
            next[r * nvec + j] = cg_fma(e, av, bvec[j], acc[r * nvec + j]);
    }
    cg_loop_end(e, &l, next);

    for (int r = 0; r < m; r++)
        for (int j = 0; j < nvec; j++)
            finish_vector(e, &o, l.carry[r * nvec + j], cg_i64(e, r * d->n), cg_i64(e, j * vw),
                          j == nvec - 1 ? mask : NULL);
    cg_loop_end(e, &tl, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, d->batch, 1, d->batch * d->m * d->k * d->n);
}

/* ---- B[K, N]: split K ---- */

/* Adds rows [k, k + rows) of B, times A's columns k .., into the partial
 * sums p[m * N + j] for every column j, one vector of columns at a time. */
static void add_rows(cg_emit *e, const gemv_dims *d, LLVMValueRef a, LLVMValueRef b, LLVMValueRef p, LLVMValueRef k,
                     int rows)
{
    int vw = e->gs.vw;
    int m = (int)d->m;
    LLVMValueRef av[CG_GEMV_MAX_ROWS][CHUNK_ROW_STEP], brow[CHUNK_ROW_STEP];
    for (int i = 0; i < m; i++)
        for (int r = 0; r < rows; r++) {
            LLVMValueRef idx = LLVMBuildAdd(e->b, k, cg_i64(e, i * d->k + r), "");
            av[i][r] = cg_splat(e, cg_load(e, e->f32, a, idx, 1), vw);
        }
    for (int r = 0; r < rows; r++)
        brow[r] = cg_gep(e, e->f32, b, LLVMBuildMul(e->b, LLVMBuildAdd(e->b, k, cg_i64(e, r), ""),
                                                    cg_i64(e, d->n), ""));

    int64_t nfull = d->n / vw * vw;
    int tail = (int)(d->n % vw);
    for (int pass = 0; pass < 2; pass++) {
        LLVMValueRef mask = pass ? prefix_mask(e, tail, vw) : NULL;
        if (pass && !tail)
            break;
        cg_loop l;
        LLVMValueRef j = pass ? cg_i64(e, nfull) : cg_loop_begin(e, &l, cg_i64(e, 0), cg_i64(e, nfull), cg_i64(e, vw));
        LLVMValueRef bv[CHUNK_ROW_STEP];
        for (int r = 0; r < rows; r++)
            bv[r] = load_vector(e, brow[r], j, mask);
        for (int r = 0; r < rows && !pass; r++)
            prefetch(e, brow[r], LLVMBuildAdd(e->b, j, cg_i64(e, CHUNK_ROW_STEP * d->n), ""));
        for (int i = 0; i < m; i++) {
            LLVMValueRef idx = LLVMBuildAdd(e->b, j, cg_i64(e, i * d->n), "");
            LLVMValueRef acc = load_vector(e, p, idx, mask);
            for (int r = 0; r < rows; r++)
                acc = cg_fma(e, av[i][r], bv[r], acc);
            store_vector(e, acc, p, idx, mask);
        }
        if (!pass)
            cg_loop_end(e, &l, NULL);
    }
}

/* Kernel 1: task (batch, chunk) writes the chunk's partial sums of all
 * M x N outputs to its own scratch rows. */
static void emit_partial_sums(cg_emit *e, const ir_value *v, const gemv_dims *d, int64_t rows, int64_t chunks)
{
    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "gemv.partial", &begin, &end);
    LLVMValueRef abuf = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef bbuf = cg_buf(e, e->plan->slot[v->ops[1]]);
    LLVMValueRef pbuf = cg_buf(e, e->plan->scratch_slot[v->id]);

    cg_loop tl;
    LLVMValueRef t = cg_loop_begin(e, &tl, begin, end, cg_i64(e, 1));
    LLVMValueRef bi = LLVMBuildSDiv(e->b, t, cg_i64(e, chunks), "batch");
    LLVMValueRef c = LLVMBuildSRem(e->b, t, cg_i64(e, chunks), "chunk");
    LLVMValueRef aoff, boff;
    batch_offsets(e, d, bi, &aoff, &boff);
    LLVMValueRef a = cg_gep(e, e->f32, abuf, aoff);
    LLVMValueRef b = cg_gep(e, e->f32, bbuf, boff);
    LLVMValueRef p = cg_gep(e, e->f32, pbuf, LLVMBuildMul(e->b, t, cg_i64(e, d->m * d->n), ""));
    cg_span_copy(e, NULL, p, cg_i64(e, 0), cg_i64(e, d->m * d->n));

    LLVMValueRef k0 = LLVMBuildMul(e->b, c, cg_i64(e, rows), "k0");
    LLVMValueRef k1 = LLVMBuildAdd(e->b, k0, cg_i64(e, rows), "");
    LLVMValueRef over = LLVMBuildICmp(e->b, LLVMIntSGT, k1, cg_i64(e, d->k), "");
    k1 = LLVMBuildSelect(e->b, over, cg_i64(e, d->k), k1, "k1");
    LLVMValueRef steps = LLVMBuildSDiv(e->b, LLVMBuildSub(e->b, k1, k0, ""), cg_i64(e, CHUNK_ROW_STEP), "");
    LLVMValueRef kstep_end = LLVMBuildAdd(e->b, k0, LLVMBuildMul(e->b, steps, cg_i64(e, CHUNK_ROW_STEP), ""), "");
    cg_loop kl;
    LLVMValueRef k = cg_loop_begin(e, &kl, k0, kstep_end, cg_i64(e, CHUNK_ROW_STEP));
    add_rows(e, d, a, b, p, k, CHUNK_ROW_STEP);
    cg_loop_end(e, &kl, NULL);
    cg_loop rl;
    LLVMValueRef kr = cg_loop_begin(e, &rl, kstep_end, k1, cg_i64(e, 1));
    add_rows(e, d, a, b, p, kr, 1);
    cg_loop_end(e, &rl, NULL);
    cg_loop_end(e, &tl, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, d->batch * chunks, 1, d->batch * d->m * d->k * d->n);
}

/* Sums the chunks' partial sums of one vector of columns at `col`. */
static LLVMValueRef sum_chunks(cg_emit *e, LLVMValueRef p, int64_t stride, int64_t chunks, LLVMValueRef index,
                               LLVMValueRef mask)
{
    cg_loop l;
    LLVMValueRef c = cg_loop_begin(e, &l, cg_i64(e, 0), cg_i64(e, chunks), cg_i64(e, 1));
    LLVMValueRef acc = cg_loop_carry(e, &l, cg_constf(e, e->vf, 0.0));
    LLVMValueRef idx = LLVMBuildAdd(e->b, index, LLVMBuildMul(e->b, c, cg_i64(e, stride), ""), "");
    LLVMValueRef next = LLVMBuildFAdd(e->b, acc, load_vector(e, p, idx, mask), "");
    cg_loop_end(e, &l, &next);
    return l.carry[0];
}

/* Kernel 2: task (batch, block of REDUCE_COLUMNS columns) sums the chunks
 * and finishes the outputs. */
static void emit_reduce(cg_emit *e, const ir_value *v, const gemv_dims *d, const cg_epilogue *ep, int64_t chunks)
{
    int vw = e->gs.vw;
    int64_t blocks = (d->n + REDUCE_COLUMNS - 1) / REDUCE_COLUMNS;
    int64_t nfull = d->n / vw * vw;
    int tail = (int)(d->n % vw);
    int64_t stride = d->m * d->n; /* between chunks */

    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "gemv.reduce", &begin, &end);
    LLVMValueRef pbuf = cg_buf(e, e->plan->scratch_slot[v->id]);
    cg_loop tl;
    LLVMValueRef t = cg_loop_begin(e, &tl, begin, end, cg_i64(e, 1));
    LLVMValueRef bi = LLVMBuildSDiv(e->b, t, cg_i64(e, blocks), "batch");
    LLVMValueRef blk = LLVMBuildSRem(e->b, t, cg_i64(e, blocks), "");
    LLVMValueRef p = cg_gep(e, e->f32, pbuf, LLVMBuildMul(e->b, bi, cg_i64(e, chunks * stride), ""));
    gemv_out o = task_output(e, v, d, ep, LLVMBuildMul(e->b, bi, cg_i64(e, d->m * d->n), ""), cg_i64(e, 0));
    LLVMValueRef j0 = LLVMBuildMul(e->b, blk, cg_i64(e, REDUCE_COLUMNS), "");
    LLVMValueRef j1 = LLVMBuildAdd(e->b, j0, cg_i64(e, REDUCE_COLUMNS), "");
    LLVMValueRef over = LLVMBuildICmp(e->b, LLVMIntSGT, j1, cg_i64(e, nfull), "");
    j1 = LLVMBuildSelect(e->b, over, cg_i64(e, nfull), j1, "");

    for (int i = 0; i < (int)d->m; i++) {
        LLVMValueRef row = cg_i64(e, i * d->n);
        cg_loop jl;
        LLVMValueRef j = cg_loop_begin(e, &jl, j0, j1, cg_i64(e, vw));
        LLVMValueRef sum = sum_chunks(e, p, stride, chunks, LLVMBuildAdd(e->b, row, j, ""), NULL);
        finish_vector(e, &o, sum, row, j, NULL);
        cg_loop_end(e, &jl, NULL);
        if (!tail)
            continue;
        /* The last block also owns the partial vector at the end. */
        LLVMValueRef kfn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(e->b));
        LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(e->ctx, kfn, "tail_columns");
        LLVMBasicBlockRef after = LLVMAppendBasicBlockInContext(e->ctx, kfn, "after_tail");
        LLVMBuildCondBr(e->b, LLVMBuildICmp(e->b, LLVMIntEQ, blk, cg_i64(e, blocks - 1), ""), then, after);
        LLVMPositionBuilderAtEnd(e->b, then);
        LLVMValueRef mask = prefix_mask(e, tail, vw);
        LLVMValueRef col = cg_i64(e, nfull);
        LLVMValueRef last = sum_chunks(e, p, stride, chunks, LLVMBuildAdd(e->b, row, col, ""), mask);
        finish_vector(e, &o, last, row, col, mask);
        LLVMBuildBr(e->b, after);
        LLVMPositionBuilderAtEnd(e->b, after);
    }
    cg_loop_end(e, &tl, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, d->batch * blocks, 1, d->batch * chunks * d->m * d->n);
}

/* TODO: pack B[K, N] weights at bind time into column panels (K rows of
 * 64 columns, contiguous), so one task streams one panel into registers
 * with no partial sums and no second kernel. On one thread this split-K
 * kernel streams at about 75% of the measured read bandwidth, against
 * about 97% for the dot-product kernel (GPT-2 124M shapes, Zen 4 VM). */
static void emit_split_k(cg_emit *e, const ir_value *v, const gemv_dims *d, const cg_epilogue *ep)
{
    int64_t rows = chunk_rows(d);
    int64_t chunks = (d->k + rows - 1) / rows;
    emit_partial_sums(e, v, d, rows, chunks);
    emit_reduce(e, v, d, ep, chunks);
}

/* ---- B[N, K]: dot products ---- */

/* Vectors of B per step of the dot-product loop: two accumulators per
 * row of A, so the FMA chain along K does not bound a row that sits in
 * cache. */
#define DOT_UNROLL 2

/* Emits C[m, n] = dot(A[m, :], B[n, :]) for all M rows, then the
 * epilogue. It reads the one row of B from start to end: B[N, K] is
 * contiguous, so a task's rows form a single stream. Interleaving the
 * loads of four rows, as a register-blocked kernel would, made four
 * streams and cost the GPT-2 124M LM head 15% to 20% of its time
 * (measured on a 2-core Zen 4 VM, 50257 x 768, 2 threads). */
static void dot_row(cg_emit *e, const gemv_dims *d, LLVMValueRef a, LLVMValueRef b, const gemv_out *o,
                    LLVMValueRef n)
{
    int vw = e->gs.vw;
    int m = (int)d->m;
    int64_t step = (int64_t)DOT_UNROLL * vw;
    int64_t kunrolled = d->k / step * step;
    int64_t kfull = d->k / vw * vw;
    int tail = (int)(d->k % vw);
    LLVMValueRef brow = cg_gep(e, e->f32, b, LLVMBuildMul(e->b, n, cg_i64(e, d->k), ""));

    cg_loop l;
    LLVMValueRef kk = cg_loop_begin(e, &l, cg_i64(e, 0), cg_i64(e, kunrolled), cg_i64(e, step));
    LLVMValueRef acc[CG_GEMV_MAX_ROWS * DOT_UNROLL], next[CG_GEMV_MAX_ROWS * DOT_UNROLL];
    for (int i = 0; i < m * DOT_UNROLL; i++)
        acc[i] = cg_loop_carry(e, &l, cg_constf(e, e->vf, 0.0));
    for (int u = 0; u < DOT_UNROLL; u++) {
        LLVMValueRef k = LLVMBuildAdd(e->b, kk, cg_i64(e, u * vw), "");
        LLVMValueRef bv = cg_load(e, e->f32, brow, k, vw);
        prefetch(e, brow, LLVMBuildAdd(e->b, k, cg_i64(e, DOT_PREFETCH_BYTES / 4), ""));
        for (int i = 0; i < m; i++) {
            LLVMValueRef av = cg_load(e, e->f32, a, LLVMBuildAdd(e->b, k, cg_i64(e, i * d->k), ""), vw);
            next[i * DOT_UNROLL + u] = cg_fma(e, av, bv, acc[i * DOT_UNROLL + u]);
        }
    }
    cg_loop_end(e, &l, next);

    LLVMValueRef sums[CG_GEMV_MAX_ROWS];
    for (int i = 0; i < m; i++) {
        sums[i] = l.carry[i * DOT_UNROLL];
        for (int u = 1; u < DOT_UNROLL; u++)
            sums[i] = LLVMBuildFAdd(e->b, sums[i], l.carry[i * DOT_UNROLL + u], "");
    }
    /* Whole vectors after the unrolled part, then the last K % vw
     * elements, whose masked loads read zeros past the row. */
    for (int64_t k = kunrolled; k < d->k; k += vw) {
        LLVMValueRef mask = k < kfull ? NULL : prefix_mask(e, tail, vw);
        LLVMValueRef bv = load_vector(e, brow, cg_i64(e, k), mask);
        for (int i = 0; i < m; i++)
            sums[i] = cg_fma(e, load_vector(e, a, cg_i64(e, i * d->k + k), mask), bv, sums[i]);
    }

    for (int i = 0; i < m; i++) {
        LLVMValueRef row = cg_i64(e, i * d->n);
        LLVMValueRef val = cg_hsum(e, sums[i]);
        if (o->ep->active)
            val = cg_epilogue_apply(e, o->ep, o->ep_base, val, row, n, 1, NULL);
        cg_store(e, val, e->f32, o->c, LLVMBuildAdd(e->b, row, n, ""));
    }
}

static void emit_dot_products(cg_emit *e, const ir_value *v, const gemv_dims *d, const cg_epilogue *ep)
{
    int64_t nblocks = (d->n + DOT_ROWS_PER_TASK - 1) / DOT_ROWS_PER_TASK;

    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "gemv.dot", &begin, &end);
    LLVMValueRef abuf = cg_buf(e, e->plan->slot[v->ops[0]]);
    LLVMValueRef bbuf = cg_buf(e, e->plan->slot[v->ops[1]]);

    cg_loop tl;
    LLVMValueRef task = cg_loop_begin(e, &tl, begin, end, cg_i64(e, 1));
    LLVMValueRef bi = LLVMBuildSDiv(e->b, task, cg_i64(e, nblocks), "batch");
    LLVMValueRef blk = LLVMBuildSRem(e->b, task, cg_i64(e, nblocks), "");
    LLVMValueRef aoff, boff;
    batch_offsets(e, d, bi, &aoff, &boff);
    LLVMValueRef a = cg_gep(e, e->f32, abuf, aoff);
    LLVMValueRef b = cg_gep(e, e->f32, bbuf, boff);
    gemv_out o = task_output(e, v, d, ep, LLVMBuildMul(e->b, bi, cg_i64(e, d->m * d->n), ""), cg_i64(e, 0));

    LLVMValueRef n0 = LLVMBuildMul(e->b, blk, cg_i64(e, DOT_ROWS_PER_TASK), "n0");
    LLVMValueRef n1 = LLVMBuildAdd(e->b, n0, cg_i64(e, DOT_ROWS_PER_TASK), "");
    LLVMValueRef over = LLVMBuildICmp(e->b, LLVMIntSGT, n1, cg_i64(e, d->n), "");
    n1 = LLVMBuildSelect(e->b, over, cg_i64(e, d->n), n1, "n1");
    /* Columns [n0, live) are dot products, [live, n1) dead cache rows. */
    LLVMValueRef live = live_limit(e, d, d->n);
    live = LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, live, n0, ""), n0, live, "");
    live = LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, live, n1, ""), live, n1, "live");
    cg_loop nl;
    LLVMValueRef n = cg_loop_begin(e, &nl, n0, live, cg_i64(e, 1));
    dot_row(e, d, a, b, &o, n);
    cg_loop_end(e, &nl, NULL);
    if (d->live) {
        cg_loop zl;
        LLVMValueRef z = cg_loop_begin(e, &zl, live, n1, cg_i64(e, 1));
        for (int i = 0; i < (int)d->m; i++)
            cg_store(e, cg_constf(e, e->f32, 0.0), e->f32, o.c, LLVMBuildAdd(e->b, cg_i64(e, i * d->n), z, ""));
        cg_loop_end(e, &zl, NULL);
    }
    cg_loop_end(e, &tl, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, d->batch * nblocks, 1, d->batch * d->m * d->k * d->n);
}

int cg_emit_gemv(cg_emit *e, const ir_value *v, const cg_epilogue *ep)
{
    gemv_dims d = gemv_dims_of(e->g, v);
    if (d.m == 0 || d.n == 0 || d.batch == 0)
        return 0;
    if (d.transpose_b || single_block(&d, e->gs.vw)) {
        int cw = cg_live_cache(e->g, v);
        d.live = cw >= 0 ? e->g->values[cw] : NULL;
    }
    if (d.transpose_b)
        emit_dot_products(e, v, &d, ep);
    else if (single_block(&d, e->gs.vw))
        emit_single_block(e, v, &d, ep);
    else
        emit_split_k(e, v, &d, ep);
    return 0;
}
