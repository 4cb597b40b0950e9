/* Packing of matrix-product operands for the GEMM microkernel
 * (codegen/emit_gemm.c), with whole-vector loads and stores and vw x vw
 * transposes in registers, so a transposed operand costs about as much as
 * a plain one.
 *
 * B panels: panel p stores B[k, p*NR + j] at ((p * K) + k) * NR + j,
 * zero-padded past N. B is read from [K, N], or from [N, K] for matmul
 * with transpose_b.
 * A blocks: for matmul with transpose_a, whose a is stored [K, M], the
 * GEMM copies each MC x KC block of A = a^T that it multiplies into a
 * row-major scratch block, so the microkernel reads rows of A as usual. */
#include <string.h>

#include "codegen/cg_internal.h"

/* ---- vector helpers ---- */

/* Transposes the vw x vw matrix whose row i is v[i], in place: after the
 * call v[i] is column i. Stage s swaps the off-diagonal s x s blocks of
 * every pair of rows (i, i + s), so log2(vw) stages of two-input shuffles
 * suffice. */
static void transpose_square(cg_emit *e, LLVMValueRef *v, int vw)
{
    LLVMValueRef low_mask[64], high_mask[64];
    for (int s = 1; s < vw; s *= 2) {
        for (int l = 0; l < vw; l++) {
            low_mask[l] = cg_i32(e, (l & s) ? vw + l - s : l);
            high_mask[l] = cg_i32(e, (l & s) ? vw + l : l + s);
        }
        LLVMValueRef low = LLVMConstVector(low_mask, (unsigned)vw);
        LLVMValueRef high = LLVMConstVector(high_mask, (unsigned)vw);
        for (int i = 0; i < vw; i++) {
            if (i & s)
                continue;
            LLVMValueRef a = v[i], b = v[i + s];
            v[i] = LLVMBuildShuffleVector(e->b, a, b, low, "");
            v[i + s] = LLVMBuildShuffleVector(e->b, a, b, high, "");
        }
    }
}

/* The constant lane mask whose first `count` lanes are set. */
static LLVMValueRef first_lanes(cg_emit *e, int count, int vw)
{
    LLVMValueRef bits[64];
    for (int l = 0; l < vw; l++)
        bits[l] = LLVMConstInt(e->i1, l < count, 0);
    return LLVMConstVector(bits, (unsigned)vw);
}

/* The lane mask of lanes l < limit, for a run-time limit. */
static LLVMValueRef lanes_below(cg_emit *e, LLVMValueRef limit, int vw)
{
    LLVMValueRef index[64];
    for (int l = 0; l < vw; l++)
        index[l] = cg_i64(e, l);
    LLVMValueRef lanes = LLVMConstVector(index, (unsigned)vw);
    return LLVMBuildICmp(e->b, LLVMIntSLT, lanes, cg_splat(e, limit, vw), "");
}

static LLVMValueRef masked_load(cg_emit *e, LLVMValueRef base, LLVMValueRef index, LLVMValueRef mask)
{
    LLVMTypeRef types[2] = {e->vf, e->ptr};
    LLVMValueRef args[4] = {cg_gep(e, e->f32, base, index), cg_i32(e, 4), mask, cg_constf(e, e->vf, 0.0)};
    return cg_intrinsic2(e, "llvm.masked.load", types, 2, args, 4);
}

/* Stores a whole vector into a packed buffer, whose rows start at
 * multiples of vw floats from a 64-byte aligned base. */
static void store_packed(cg_emit *e, LLVMValueRef v, LLVMValueRef base, LLVMValueRef index)
{
    LLVMValueRef store = LLVMBuildStore(e->b, v, cg_gep(e, e->f32, base, index));
    LLVMSetAlignment(store, (unsigned)(4 * e->gs.vw));
}

/* ---- B panels ---- */

/* The B operand of a product as the packing reads it: batches of K x N,
 * stored [K, N] or, when transposed, [N, K]. */
typedef struct b_operand {
    int64_t batches, k, n;
    bool transposed;
} b_operand;

static b_operand b_operand_of(const ir_graph *g, const ir_value *v)
{
    const ir_type *bt = &g->values[v->ops[1]]->type;
    b_operand b;
    memset(&b, 0, sizeof b);
    /* linear and its fused form have no transpose_b: their B is W[K, N]. */
    if (ir_op_attr_index(v->op, "transpose_b") < 0) {
        b.batches = 1;
        b.k = bt->dims[0];
        b.n = bt->dims[1];
        return b;
    }
    b.transposed = ir_attr_int(v, "transpose_b") != 0;
    b.k = b.transposed ? bt->dims[bt->rank - 1] : bt->dims[bt->rank - 2];
    b.n = b.transposed ? bt->dims[bt->rank - 2] : bt->dims[bt->rank - 1];
    b.batches = b.k * b.n > 0 ? ir_type_numel(bt) / (b.k * b.n) : 0;
    return b;
}

/* Packs one panel of a [K, N] matrix: nvalid columns from col0 on, the rest
 * of the NR columns zero. */
static void pack_panel_plain(cg_emit *e, const b_operand *b, LLVMValueRef src, LLVMValueRef col0, LLVMValueRef dst,
                             int nvalid)
{
    int vw = e->gs.vw, nr = e->gs.nr;
    cg_loop kl;
    LLVMValueRef k = cg_loop_begin(e, &kl, cg_i64(e, 0), cg_i64(e, b->k), cg_i64(e, 1));
    LLVMValueRef row = LLVMBuildAdd(e->b, LLVMBuildMul(e->b, k, cg_i64(e, b->n), ""), col0, "");
    LLVMValueRef out = LLVMBuildMul(e->b, k, cg_i64(e, nr), "");
    for (int j = 0; j < e->gs.nvec; j++) {
        int valid = nvalid - j * vw;
        LLVMValueRef at = LLVMBuildAdd(e->b, row, cg_i64(e, j * vw), "");
        LLVMValueRef x = cg_constf(e, e->vf, 0.0);
        if (valid >= vw)
            x = cg_load(e, e->f32, src, at, vw);
        else if (valid > 0)
            x = masked_load(e, src, at, first_lanes(e, valid, vw));
        store_packed(e, x, dst, LLVMBuildAdd(e->b, out, cg_i64(e, j * vw), ""));
    }
    cg_loop_end(e, &kl, NULL);
}

/* Packs rows [k0, k0 + krows) of one panel of B = src^T, src [N, K]: for
 * each group of vw columns, vw rows of src (vw values of k each) are loaded
 * and transposed into vw panel rows. krows < vw only in the last block,
 * which loads with a lane mask and stores only its krows rows. */
static void pack_block_transposed(cg_emit *e, const b_operand *b, LLVMValueRef src, LLVMValueRef col0,
                                  LLVMValueRef dst, int nvalid, LLVMValueRef k0, int krows)
{
    int vw = e->gs.vw, nr = e->gs.nr;
    LLVMValueRef mask = krows < vw ? first_lanes(e, krows, vw) : NULL;
    for (int j = 0; j < e->gs.nvec; j++) {
        LLVMValueRef v[64];
        for (int i = 0; i < vw; i++) {
            int col = j * vw + i;
            v[i] = cg_constf(e, e->vf, 0.0);
            if (col >= nvalid)
                continue;
            LLVMValueRef src_row = LLVMBuildAdd(e->b, col0, cg_i64(e, col), "");
            LLVMValueRef at = LLVMBuildAdd(e->b, LLVMBuildMul(e->b, src_row, cg_i64(e, b->k), ""), k0, "");
            v[i] = mask ? masked_load(e, src, at, mask) : cg_load(e, e->f32, src, at, vw);
        }
        transpose_square(e, v, vw);
        for (int i = 0; i < krows; i++) {
            LLVMValueRef k = LLVMBuildAdd(e->b, k0, cg_i64(e, i), "");
            LLVMValueRef out = LLVMBuildAdd(e->b, LLVMBuildMul(e->b, k, cg_i64(e, nr), ""), cg_i64(e, j * vw), "");
            store_packed(e, v[i], dst, out);
        }
    }
}

static void pack_panel_transposed(cg_emit *e, const b_operand *b, LLVMValueRef src, LLVMValueRef col0,
                                  LLVMValueRef dst, int nvalid)
{
    int vw = e->gs.vw;
    int64_t whole = b->k / vw * vw;
    cg_loop kl;
    LLVMValueRef k0 = cg_loop_begin(e, &kl, cg_i64(e, 0), cg_i64(e, whole), cg_i64(e, vw));
    pack_block_transposed(e, b, src, col0, dst, nvalid, k0, vw);
    cg_loop_end(e, &kl, NULL);
    if (b->k > whole)
        pack_block_transposed(e, b, src, col0, dst, nvalid, cg_i64(e, whole), (int)(b->k - whole));
}

static void pack_panel(cg_emit *e, const b_operand *b, LLVMValueRef src, LLVMValueRef col0, LLVMValueRef dst,
                       int nvalid)
{
    if (b->transposed)
        pack_panel_transposed(e, b, src, col0, dst, nvalid);
    else
        pack_panel_plain(e, b, src, col0, dst, nvalid);
}

/* Tasks are (B batch, panel). */
int cg_emit_pack(cg_emit *e, const cg_gemm_plan *gp)
{
    const ir_value *v = e->g->values[gp->value];
    b_operand b = b_operand_of(e->g, v);
    int nr = e->gs.nr;
    int64_t panels = (b.n + nr - 1) / nr;
    int64_t full_panels = b.n / nr;
    int edge = (int)(b.n % nr);

    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, "pack_b", &begin, &end);
    LLVMValueRef src = cg_buf(e, e->plan->slot[v->ops[1]]);
    LLVMValueRef dst = cg_buf(e, gp->packed_slot);
    cg_loop tl;
    LLVMValueRef t = cg_loop_begin(e, &tl, begin, end, cg_i64(e, 1));
    LLVMValueRef batch = LLVMBuildSDiv(e->b, t, cg_i64(e, panels), "");
    LLVMValueRef p = LLVMBuildSRem(e->b, t, cg_i64(e, panels), "");
    LLVMValueRef src_batch = cg_gep(e, e->f32, src, LLVMBuildMul(e->b, batch, cg_i64(e, b.k * b.n), ""));
    LLVMValueRef dst_panel = cg_gep(e, e->f32, dst, LLVMBuildMul(e->b, t, cg_i64(e, b.k * nr), ""));
    LLVMValueRef col0 = LLVMBuildMul(e->b, p, cg_i64(e, nr), "");
    if (edge) {
        LLVMBasicBlockRef full = LLVMAppendBasicBlockInContext(e->ctx, fn, "full_panel");
        LLVMBasicBlockRef part = LLVMAppendBasicBlockInContext(e->ctx, fn, "edge_panel");
        LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(e->ctx, fn, "panel_done");
        LLVMBuildCondBr(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, p, cg_i64(e, full_panels), ""), full, part);
        LLVMPositionBuilderAtEnd(e->b, full);
        pack_panel(e, &b, src_batch, col0, dst_panel, nr);
        LLVMBuildBr(e->b, join);
        LLVMPositionBuilderAtEnd(e->b, part);
        pack_panel(e, &b, src_batch, col0, dst_panel, edge);
        LLVMBuildBr(e->b, join);
        LLVMPositionBuilderAtEnd(e->b, join);
    } else {
        pack_panel(e, &b, src_batch, col0, dst_panel, nr);
    }
    cg_loop_end(e, &tl, NULL);
    cg_kernel_end(e);
    cg_launch(e, fn, b.batches * panels, 1, b.batches * panels * b.k * nr);
    return 0;
}

/* ---- A blocks ---- */

int64_t cg_gemm_a_block_rows(const cg_gemm_shape *gs)
{
    return (gs->mc + gs->vw - 1) / gs->vw * gs->vw;
}

int64_t cg_gemm_a_block_stride(const cg_gemm_shape *gs)
{
    return (gs->kc + gs->vw - 1) / gs->vw * gs->vw;
}

LLVMValueRef cg_emit_a_block_scratch(cg_emit *e)
{
    int64_t floats = cg_gemm_a_block_rows(&e->gs) * cg_gemm_a_block_stride(&e->gs);
    LLVMValueRef block = LLVMBuildArrayAlloca(e->b, e->f32, cg_i64(e, floats), "a_block");
    LLVMSetAlignment(block, 64);
    return block;
}

void cg_emit_pack_a_block(cg_emit *e, LLVMValueRef src, int64_t m, LLVMValueRef m0, LLVMValueRef rows,
                          LLVMValueRef k0, LLVMValueRef kc, LLVMValueRef dst)
{
    int vw = e->gs.vw;
    int64_t ld = cg_gemm_a_block_stride(&e->gs);
    LLVMValueRef k_end = LLVMBuildAdd(e->b, k0, kc, "");
    cg_loop rl;
    LLVMValueRef r0 = cg_loop_begin(e, &rl, cg_i64(e, 0), rows, cg_i64(e, vw));
    LLVMValueRef row_mask = lanes_below(e, LLVMBuildSub(e->b, rows, r0, ""), vw);
    LLVMValueRef src_rows = cg_gep(e, e->f32, src, LLVMBuildAdd(e->b, m0, r0, ""));
    cg_loop kl;
    LLVMValueRef kb = cg_loop_begin(e, &kl, cg_i64(e, 0), kc, cg_i64(e, vw));
    LLVMValueRef v[64];
    for (int i = 0; i < vw; i++) {
        /* Row k of a is column k of A. Past the block's last k, read row
         * k0, which exists, and zero it. */
        LLVMValueRef k = LLVMBuildAdd(e->b, LLVMBuildAdd(e->b, k0, kb, ""), cg_i64(e, i), "");
        LLVMValueRef valid = LLVMBuildICmp(e->b, LLVMIntSLT, k, k_end, "");
        LLVMValueRef safe_k = LLVMBuildSelect(e->b, valid, k, k0, "");
        LLVMValueRef x = masked_load(e, src_rows, LLVMBuildMul(e->b, safe_k, cg_i64(e, m), ""), row_mask);
        v[i] = LLVMBuildSelect(e->b, valid, x, cg_constf(e, e->vf, 0.0), "");
    }
    transpose_square(e, v, vw);
    for (int r = 0; r < vw; r++) {
        LLVMValueRef row = LLVMBuildAdd(e->b, r0, cg_i64(e, r), "");
        store_packed(e, v[r], dst, LLVMBuildAdd(e->b, LLVMBuildMul(e->b, row, cg_i64(e, ld), ""), kb, ""));
    }
    cg_loop_end(e, &kl, NULL);
    cg_loop_end(e, &rl, NULL);
}
