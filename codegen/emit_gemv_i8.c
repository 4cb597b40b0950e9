/* Emission of the int8 GEMV kernel: products of at most CG_GEMV_I8_MAX_M
 * rows, such as the linear layers of one decoding step, on the packed
 * layout of gemm_i8.h.
 *
 * With so few rows the product is bound by reading B, which is read
 * exactly once: a task streams one packed panel (K x NR bytes, contiguous)
 * from its first group to its last. Each group is NR columns x 4 k, and
 * each of its vectors meets the broadcast 4 activation bytes of every row
 * in one multiply-add (vpdpbusd on the VNNI path). The K loop handles
 * GEMV_UNROLL / rows consecutive groups per iteration, each with its own
 * accumulators, so the multiply-adds of one iteration do not wait for each
 * other and many loads are in flight; the accumulators are summed after
 * the loop. One task per panel lets the pool balance panels over
 * threads. The output stage is the GEMM's (emit_i8_output.c). */
#include <stdio.h>

#include "codegen/gemm_i8_internal.h"

/* Accumulator sets per panel: rows x unroll = GEMV_UNROLL, so with 3
 * vectors per group and one row 12 of the 32 AVX-512 registers hold
 * accumulators. */
#define GEMV_UNROLL 4
#define GEMV_MAX_ACC (GEMV_UNROLL * CG_I8_MAX_NVEC)

/* A task reads about GEMV_TASK_BYTES of packed B, in whole panels, unless
 * that leaves fewer than GEMV_MIN_TASKS tasks to balance over threads.
 * With one panel per task two threads took alternate panels, and each
 * one's reads jumped over the other's. Runs of panels and the prefetch
 * together made the int8 linear layers of a GPT-2 124M decoding step
 * about 10% faster in paired runs on a noisy 2-core Zen 4 VM. */
#define GEMV_TASK_BYTES (128 * 1024)
#define GEMV_MIN_TASKS 16
#define GEMV_PREFETCH_BYTES 2048

static int64_t panels_per_task(const cg_gemm_i8_desc *d)
{
    int64_t panels = (d->n + d->shape.nr - 1) / d->shape.nr;
    int64_t panel_bytes = (d->k + 3) / 4 * 4 * d->shape.nr;
    int64_t per = panel_bytes > 0 ? GEMV_TASK_BYTES / panel_bytes : 1;
    if (per > panels / GEMV_MIN_TASKS)
        per = panels / GEMV_MIN_TASKS;
    return per < 1 ? 1 : per;
}

int64_t cg_gemv_i8_tasks(const cg_gemm_i8_desc *d)
{
    int64_t panels = (d->n + d->shape.nr - 1) / d->shape.nr;
    int64_t per = panels_per_task(d);
    return (panels + per - 1) / per;
}

/* Prefetches packed B GEMV_PREFETCH_BYTES after vector j of group g; past
 * the panel's end that is the next panel, which the task reads next. */
static void prefetch_b(cg_i8_gen *gen, LLVMValueRef bp, LLVMValueRef g, int j)
{
    cg_emit *e = gen->e;
    const cg_gemm_i8_shape *s = gen->s;
    LLVMValueRef at = LLVMBuildAdd(e->b, LLVMBuildMul(e->b, g, cg_i64(e, s->nr * 4), ""),
                                   cg_i64(e, (int64_t)j * s->vw * 4 + GEMV_PREFETCH_BYTES), "");
    /* Not inbounds: the address may lie past the end of B. */
    LLVMValueRef args[4] = {LLVMBuildGEP2(e->b, e->i8, bp, &at, 1, ""), cg_i32(e, 0), cg_i32(e, 2), cg_i32(e, 1)};
    cg_intrinsic(e, "llvm.prefetch", e->ptr, args, 4);
}

/* Accumulators of one panel call: acc[(u · rows + r) · nv + j] for group
 * offset u, row r and vector j. */
typedef struct gemv_acc {
    int rows, nv, unroll;
    LLVMValueRef v[GEMV_MAX_ACC];
} gemv_acc;

/* Adds the products of groups g + u, u in [0, unroll), into the
 * accumulator sets u (one set when partial). */
static void emit_groups(cg_i8_gen *gen, LLVMValueRef bp, const LLVMValueRef *arow, LLVMValueRef g, int unroll,
                        bool partial, gemv_acc *acc)
{
    cg_emit *e = gen->e;
    for (int u = 0; u < unroll; u++) {
        LLVMValueRef gu = LLVMBuildAdd(e->b, g, cg_i64(e, u), "");
        LLVMValueRef bvec[CG_I8_MAX_NVEC];
        for (int j = 0; j < acc->nv; j++) {
            bvec[j] = cg_i8_load_b(gen, bp, gu, j);
            if (!partial)
                prefetch_b(gen, bp, gu, j);
        }
        for (int r = 0; r < acc->rows; r++) {
            LLVMValueRef quad = cg_i8_load_quad(gen, arow[r], gu, partial);
            for (int j = 0; j < acc->nv; j++) {
                LLVMValueRef *slot = &acc->v[(u * acc->rows + r) * acc->nv + j];
                *slot = cg_i8_madd(gen, *slot, quad, bvec[j]);
            }
        }
    }
}

/* Runs groups [g0, g1) in steps of `unroll` through a loop that carries
 * the first unroll sets of acc. (g1 - g0) must be a multiple of unroll. */
static void emit_group_loop(cg_i8_gen *gen, LLVMValueRef bp, const LLVMValueRef *arow, int64_t g0, int64_t g1,
                            int unroll, gemv_acc *acc)
{
    cg_emit *e = gen->e;
    if (g1 <= g0)
        return;
    int count = unroll * acc->rows * acc->nv;
    cg_loop l;
    LLVMValueRef g = cg_loop_begin(e, &l, cg_i64(e, g0), cg_i64(e, g1), cg_i64(e, unroll));
    gemv_acc next = *acc;
    for (int i = 0; i < count; i++)
        next.v[i] = cg_loop_carry(e, &l, acc->v[i]);
    emit_groups(gen, bp, arow, g, unroll, false, &next);
    cg_loop_end(e, &l, next.v);
    for (int i = 0; i < count; i++)
        acc->v[i] = l.carry[i];
}

/* Builds void panel(ptr args, ptr a, ptr bp, ptr c, i64 col), once per
 * number of valid columns. It multiplies all M rows of A by the panel at
 * bp and stores the output stage at columns [col, col + nvalid) of c. */
static LLVMValueRef panel_function(cg_i8_gen *gen, int nvalid)
{
    cg_emit *e = gen->e;
    const cg_gemm_i8_shape *s = gen->s;
    char name[192];
    snprintf(name, sizeof name, "%s.panel%d", gen->prefix, nvalid);
    LLVMValueRef fn = LLVMGetNamedFunction(e->mod, name);
    if (fn)
        return fn;
    LLVMBasicBlockRef caller_block = LLVMGetInsertBlock(e->b);
    LLVMTypeRef params[5] = {e->ptr, e->ptr, e->ptr, e->ptr, e->i64};
    fn = LLVMAddFunction(e->mod, name, LLVMFunctionType(e->void_ty, params, 5, 0));
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    cg_function_attrs(e, fn);
    unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
    for (unsigned i = 1; i < 4; i++)
        LLVMAddAttributeAtIndex(fn, i + 1, LLVMCreateEnumAttribute(e->ctx, noalias, 0));
    LLVMValueRef args = LLVMGetParam(fn, 0), a = LLVMGetParam(fn, 1), bp = LLVMGetParam(fn, 2);
    LLVMValueRef c = LLVMGetParam(fn, 3), col = LLVMGetParam(fn, 4);
    LLVMPositionBuilderAtEnd(e->b, LLVMAppendBasicBlockInContext(e->ctx, fn, "entry"));

    int rows = (int)gen->d->m, vw = s->vw;
    int unroll = GEMV_UNROLL / rows > 1 ? GEMV_UNROLL / rows : 1;
    gemv_acc acc = {rows, (nvalid + vw - 1) / vw, unroll, {0}};
    for (int i = 0; i < unroll * rows * acc.nv; i++)
        acc.v[i] = LLVMConstNull(cg_i8_acc_type(gen));
    LLVMValueRef arow[CG_GEMV_I8_MAX_M];
    for (int r = 0; r < rows; r++)
        arow[r] = cg_gep(e, e->i8, a, cg_i64(e, r * gen->lda));

    /* Whole iterations of `unroll` groups, then the remaining full
     * groups one at a time into set 0, then the partial group. */
    int64_t main_end = gen->groups / unroll * unroll;
    emit_group_loop(gen, bp, arow, 0, main_end, unroll, &acc);
    emit_group_loop(gen, bp, arow, main_end, gen->groups, 1, &acc);
    if (gen->ktail)
        emit_groups(gen, bp, arow, cg_i64(e, gen->groups), 1, true, &acc);

    cg_i8_out out;
    cg_i8_out_begin(gen, &out, args, c, cg_i64(e, 0), col);
    int partial_lanes = nvalid % vw;
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < acc.nv; j++) {
            LLVMValueRef sum = acc.v[r * acc.nv + j];
            for (int u = 1; u < unroll; u++)
                sum = LLVMBuildAdd(e->b, sum, acc.v[(u * rows + r) * acc.nv + j], "");
            LLVMValueRef mask = partial_lanes && j == acc.nv - 1 ? cg_i8_lane_mask(e, vw, partial_lanes) : NULL;
            cg_i8_out_store(gen, &out, cg_i8_acc_finish(gen, sum), r, j, mask);
        }
    }
    LLVMBuildRetVoid(e->b);
    LLVMPositionBuilderAtEnd(e->b, caller_block);
    return fn;
}

static void call_panel(cg_i8_gen *gen, LLVMValueRef fn, LLVMValueRef *args)
{
    LLVMBuildCall2(gen->e->b, LLVMGlobalGetValueType(fn), fn, args, 5, "");
}

LLVMValueRef cg_emit_gemv_i8(cg_emit *e, const cg_gemm_i8_desc *d)
{
    if (d->m > CG_GEMV_I8_MAX_M) {
        ir_diag_file_error(e->d, NULL, "codegen: int8 GEMV '%s' has %lld rows; at most %d are supported", d->name,
                           (long long)d->m, CG_GEMV_I8_MAX_M);
        e->errors++;
        return NULL;
    }
    cg_i8_gen gen;
    if (!cg_i8_gen_init(&gen, e, d, "gemv_i8"))
        return NULL;
    const cg_gemm_i8_shape *s = gen.s;
    int64_t full_panels = d->n / s->nr;
    int edge = (int)(d->n % s->nr);

    char kernel_name[160];
    snprintf(kernel_name, sizeof kernel_name, "gemv_i8.%s", d->name);
    LLVMValueRef begin, end;
    LLVMValueRef fn = cg_kernel_begin(e, kernel_name, &begin, &end);
    LLVMBuilderRef b = e->b;
    LLVMValueRef a = cg_i8_arg(e, e->kctx, CG_GEMM_I8_ARG_A);
    LLVMValueRef packed = cg_i8_arg(e, e->kctx, CG_GEMM_I8_ARG_PACKED);
    LLVMValueRef c = cg_i8_arg(e, e->kctx, CG_GEMM_I8_ARG_C);

    /* Task t owns panels [t · per, min((t + 1) · per, panels)). */
    LLVMValueRef per = cg_i64(e, panels_per_task(d));
    LLVMValueRef pend = cg_i8_min_i64(e, LLVMBuildMul(b, end, per, ""), gen.panels);
    cg_loop pl;
    LLVMValueRef p = cg_loop_begin(e, &pl, LLVMBuildMul(b, begin, per, ""), pend, cg_i64(e, 1));
    LLVMValueRef args[5] = {e->kctx, a, cg_gep(e, e->i8, packed, LLVMBuildMul(b, p, cg_i64(e, gen.panel_bytes), "")),
                            c, LLVMBuildMul(b, p, cg_i64(e, s->nr), "col")};
    if (edge) {
        LLVMValueRef kfn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(b));
        LLVMBasicBlockRef full = LLVMAppendBasicBlockInContext(e->ctx, kfn, "full_panel");
        LLVMBasicBlockRef part = LLVMAppendBasicBlockInContext(e->ctx, kfn, "edge_panel");
        LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(e->ctx, kfn, "panel_done");
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, p, cg_i64(e, full_panels), ""), full, part);
        LLVMPositionBuilderAtEnd(b, full);
        call_panel(&gen, panel_function(&gen, s->nr), args);
        LLVMBuildBr(b, join);
        LLVMPositionBuilderAtEnd(b, part);
        call_panel(&gen, panel_function(&gen, edge), args);
        LLVMBuildBr(b, join);
        LLVMPositionBuilderAtEnd(b, join);
    } else {
        call_panel(&gen, panel_function(&gen, s->nr), args);
    }
    cg_loop_end(e, &pl, NULL);
    cg_kernel_end(e);
    return fn;
}
