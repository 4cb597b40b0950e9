/* Machine probes that benchmarks compare generated kernels against, both
 * generated code run on a pool of threads:
 *   - FMA peak: a loop of independent vector FMAs (as many accumulators
 *     as the GEMM microkernel uses), one task per thread.
 *   - Streaming read bandwidth: vector sums over a buffer larger than the
 *     caches, on huge pages like the weights, each thread reading one
 *     contiguous part. Decoding one token reads every weight once, so
 *     this bounds its speed. */
#include <stdlib.h>
#include <time.h>

#include "codegen/cg_jit.h"
#include "runtime/tensor.h"
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

/* Floats per task of the bandwidth probe (4 MB). */
#define STREAM_TASK_FLOATS (1 << 20)

/* void stream(ptr buf, i64 begin, i64 end): task t sums its
 * STREAM_TASK_FLOATS floats of buf and stores the sum in its first
 * element, so the loads are not dead. */
static void build_stream(cg_emit *e)
{
    int vw = e->gs.vw, nacc = 4;
    LLVMValueRef fn = LLVMAddFunction(e->mod, "stream", e->task_ty);
    cg_function_attrs(e, fn);
    LLVMPositionBuilderAtEnd(e->b, LLVMAppendBasicBlockInContext(e->ctx, fn, "entry"));
    e->kctx = LLVMGetParam(fn, 0);
    cg_loop tl;
    LLVMValueRef t = cg_loop_begin(e, &tl, LLVMGetParam(fn, 1), LLVMGetParam(fn, 2), cg_i64(e, 1));
    LLVMValueRef base = cg_gep(e, e->f32, e->kctx, LLVMBuildMul(e->b, t, cg_i64(e, STREAM_TASK_FLOATS), ""));
    cg_loop l;
    LLVMValueRef i = cg_loop_begin(e, &l, cg_i64(e, 0), cg_i64(e, STREAM_TASK_FLOATS), cg_i64(e, nacc * vw));
    LLVMValueRef acc[4], next[4];
    for (int k = 0; k < nacc; k++)
        acc[k] = cg_loop_carry(e, &l, cg_constf(e, e->vf, 0.0));
    for (int k = 0; k < nacc; k++)
        next[k] = LLVMBuildFAdd(e->b, acc[k], cg_load(e, e->f32, base, LLVMBuildAdd(e->b, i, cg_i64(e, k * vw), ""), vw),
                                "");
    cg_loop_end(e, &l, next);
    LLVMValueRef sum = l.carry[0];
    for (int k = 1; k < nacc; k++)
        sum = LLVMBuildFAdd(e->b, sum, l.carry[k], "");
    cg_store(e, cg_hsum(e, sum), e->f32, base, cg_i64(e, 0));
    cg_loop_end(e, &tl, NULL);
    LLVMBuildRetVoid(e->b);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* JIT-compiles the module that `build` fills and returns its function
 * `name`, or NULL after reporting an error; *jit receives the JIT, and
 * *gs the GEMM shape the probe was built for. */
static rt_task_fn compile_probe(const cg_options *o, void (*build)(cg_emit *), const char *name,
                                LLVMOrcLLJITRef *jit, cg_gemm_shape *gs, ir_diag *d)
{
    cg_options defaults = cg_default_options();
    if (!o)
        o = &defaults;
    *jit = NULL;
    LLVMTargetMachineRef tm = cg_target_machine(o, d);
    if (!tm)
        return NULL;
    cg_emit e = {0};
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMContextRef ctx = LLVMOrcThreadSafeContextGetContext(tsc);
    *gs = cg_gemm_shape_for(cg_vector_bits(tm));
    cg_emit_init(&e, ctx, cg_module_create(ctx, tm, name), gs);
    build(&e);
    LLVMDisposeBuilder(e.b);
    int failed = cg_optimize(e.mod, tm, 3, d);
    LLVMDisposeTargetMachine(tm);
    *jit = failed ? NULL : cg_jit_create(o, tsc, e.mod, d);
    if (failed)
        LLVMDisposeModule(e.mod);
    LLVMOrcDisposeThreadSafeContext(tsc);
    return *jit ? (rt_task_fn)(uintptr_t)cg_jit_lookup(*jit, name, d) : NULL;
}

double cg_measure_fma_peak(const cg_options *o, int threads, ir_diag *d)
{
    LLVMOrcLLJITRef jit;
    cg_gemm_shape gs;
    rt_task_fn fn = compile_probe(o, build_peak, "peak", &jit, &gs, d);
    if (!jit)
        return -1;
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

double cg_measure_read_bandwidth(const cg_options *o, int threads, int64_t bytes, ir_diag *d)
{
    LLVMOrcLLJITRef jit;
    cg_gemm_shape gs;
    rt_task_fn fn = compile_probe(o, build_stream, "stream", &jit, &gs, d);
    if (!jit)
        return -1;
    int64_t task_bytes = (int64_t)sizeof(float) * STREAM_TASK_FLOATS;
    int64_t ntasks = bytes / task_bytes > 0 ? bytes / task_bytes : 1;
    rt_pool *pool = rt_pool_new(threads);
    float *buf = rt_alloc_data((size_t)(ntasks * task_bytes));
    double best = -1;
    if (fn && pool && buf) {
        int n = rt_pool_threads(pool);
        /* Contiguous parts: each thread claims one run of tasks. */
        int64_t grain = (ntasks + n - 1) / n;
        for (int64_t i = 0; i < ntasks * STREAM_TASK_FLOATS; i++)
            buf[i] = 1.0f;
        for (int rep = 0; rep < 8; rep++) {
            double t0 = now_seconds();
            rt_pool_parallel_for(pool, fn, buf, ntasks, grain);
            double gbs = (double)(ntasks * task_bytes) / (now_seconds() - t0) * 1e-9;
            if (rep > 0 && gbs > best) /* the first run warms up */
                best = gbs;
        }
    } else if (fn && !buf) {
        ir_diag_file_error(d, NULL, "codegen: out of memory allocating %lld bytes for the bandwidth probe",
                           (long long)(ntasks * task_bytes));
    }
    free(buf);
    rt_pool_free(pool);
    LLVMOrcDisposeLLJIT(jit);
    return best;
}
