/* FMA peak probe: a generated loop of independent vector FMAs (as many
 * accumulators as the GEMM microkernel uses), run on a pool of threads
 * with one task per thread, to measure the fp32 FMA throughput the GEMM is
 * compared against. */
#include <stdlib.h>
#include <time.h>

#include "codegen/cg_jit.h"
#include "runtime/threadpool.h"

#define PEAK_ITERATIONS (1 << 21)

/* void peak(ptr out, i64 begin, i64 end): out[t] = a checksum, so the FMAs
 * are not dead. */
static void build_peak(cg_emit *e)
{
    int nacc = e->gs.mr * e->gs.nvec;
    LLVMValueRef fn = LLVMAddFunction(e->mod, "peak", e->task_ty);
    cg_function_attrs(e, fn);
    LLVMPositionBuilderAtEnd(e->b, LLVMAppendBasicBlockInContext(e->ctx, fn, "entry"));
    e->kctx = LLVMGetParam(fn, 0);
    cg_loop tl;
    LLVMValueRef t = cg_loop_begin(e, &tl, LLVMGetParam(fn, 1), LLVMGetParam(fn, 2), cg_i64(e, 1));
    cg_loop l;
    cg_loop_begin(e, &l, cg_i64(e, 0), cg_i64(e, PEAK_ITERATIONS), cg_i64(e, 1));
    LLVMValueRef acc[CG_LOOP_MAX_CARRY], next[CG_LOOP_MAX_CARRY];
    for (int i = 0; i < nacc; i++)
        acc[i] = cg_loop_carry(e, &l, cg_constf(e, e->vf, 1e-3 * i));
    LLVMValueRef mul = cg_constf(e, e->vf, 0.999999), add = cg_constf(e, e->vf, 1e-7);
    for (int i = 0; i < nacc; i++)
        next[i] = cg_fma(e, acc[i], mul, add);
    cg_loop_end(e, &l, next);
    LLVMValueRef sum = l.carry[0];
    for (int i = 1; i < nacc; i++)
        sum = LLVMBuildFAdd(e->b, sum, l.carry[i], "");
    cg_store(e, cg_hsum(e, sum), e->f32, e->kctx, t);
    cg_loop_end(e, &tl, NULL);
    LLVMBuildRetVoid(e->b);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double cg_measure_fma_peak(const cg_options *o, int threads, ir_diag *d)
{
    cg_options defaults = cg_default_options();
    if (!o)
        o = &defaults;
    LLVMTargetMachineRef tm = cg_target_machine(o, d);
    if (!tm)
        return -1;
    cg_emit e = {0};
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMContextRef ctx = LLVMOrcThreadSafeContextGetContext(tsc);
    cg_gemm_shape gs = cg_gemm_shape_for(cg_vector_bits(tm));
    cg_emit_init(&e, ctx, cg_module_create(ctx, tm, "peak"), &gs);
    build_peak(&e);
    LLVMDisposeBuilder(e.b);
    int failed = cg_optimize(e.mod, tm, 3, d);
    LLVMDisposeTargetMachine(tm);
    LLVMOrcLLJITRef jit = failed ? NULL : cg_jit_create(o, tsc, e.mod, d);
    if (failed)
        LLVMDisposeModule(e.mod);
    LLVMOrcDisposeThreadSafeContext(tsc);
    if (!jit)
        return -1;
    rt_task_fn fn = (rt_task_fn)(uintptr_t)cg_jit_lookup(jit, "peak", d);
    rt_pool *pool = rt_pool_new(threads);
    double best = -1;
    if (fn && pool) {
        int n = rt_pool_threads(pool);
        float *out = calloc((size_t)n, sizeof *out);
        double flops = 2.0 * PEAK_ITERATIONS * gs.mr * gs.nvec * gs.vw * n;
        for (int rep = 0; out && rep < 6; rep++) {
            double t0 = now_seconds();
            rt_pool_parallel_for(pool, fn, out, n, 1);
            double gflops = flops / (now_seconds() - t0) * 1e-9;
            if (rep > 0 && gflops > best) /* the first run warms up */
                best = gflops;
        }
        free(out);
    }
    rt_pool_free(pool);
    LLVMOrcDisposeLLJIT(jit);
    return best;
}
