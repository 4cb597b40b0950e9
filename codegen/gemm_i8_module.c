/* Standalone int8 GEMM modules outside a graph: JIT compilation of a list
 * of kernels, their assembly, and the VNNI peak probe the GEMM throughput
 * is compared against. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen/cg_jit.h"
#include "codegen/gemm_i8.h"

struct cg_gemm_i8_module {
    LLVMOrcLLJITRef jit;
    int count;
    rt_task_fn *kernels;      /* GEMM kernels */
    rt_task_fn *pack_kernels;
};

/* One repetition is 2^18 x 24 vpdpbusd, about 2 ms at 3.5 GHz and one
 * per cycle. Some of the PEAK_I8_REPS repetitions then fit in one
 * scheduler time slice even on a loaded machine, and the best counts. */
#define PEAK_I8_ITERATIONS (1 << 18)
#define PEAK_I8_REPS 40
#define PEAK_I8_ACCUMULATORS 24

static void kernel_name(char *buf, size_t size, const char *kind, int index)
{
    snprintf(buf, size, "gemm_i8_%s_%d", kind, index);
}

/* Gives fn the external name kind_index so the JIT can look it up. */
static void export_kernel(LLVMValueRef fn, const char *kind, int index)
{
    char name[64];
    kernel_name(name, sizeof name, kind, index);
    LLVMSetValueName2(fn, name, strlen(name));
    LLVMSetLinkage(fn, LLVMExternalLinkage);
}

/* Builds and optimizes a module with an external GEMM kernel and packing
 * kernel per descriptor, named by kernel_name. Returns NULL after
 * reporting an error. */
static LLVMModuleRef build_module(LLVMContextRef ctx, const cg_options *o, bool allow_vnni, cg_gemm_i8_desc *descs,
                                  int count, ir_diag *d)
{
    LLVMTargetMachineRef tm = cg_target_machine(o, d);
    if (!tm)
        return NULL;
    cg_gemm_i8_shape shape = cg_gemm_i8_shape_for(tm, allow_vnni);
    cg_gemm_shape gs = cg_gemm_shape_for(cg_vector_bits(tm));
    cg_emit e;
    memset(&e, 0, sizeof e);
    cg_emit_init(&e, ctx, cg_module_create(ctx, tm, "gemm_i8"), &gs);
    e.d = d;
    int failed = 0;
    for (int i = 0; i < count && !failed; i++) {
        descs[i].shape = shape;
        LLVMValueRef fn = cg_emit_gemm_i8(&e, &descs[i]);
        LLVMValueRef pack = fn ? cg_emit_pack_b_i8(&e, &descs[i]) : NULL;
        if (!fn || !pack) {
            failed = 1;
            break;
        }
        export_kernel(fn, "kernel", i);
        export_kernel(pack, "pack", i);
    }
    LLVMDisposeBuilder(e.b);
    if (!failed)
        failed = cg_optimize(e.mod, tm, o->opt_level, d);
    LLVMDisposeTargetMachine(tm);
    if (failed) {
        LLVMDisposeModule(e.mod);
        return NULL;
    }
    return e.mod;
}

cg_gemm_i8_module *cg_gemm_i8_compile(const cg_options *o, bool allow_vnni, cg_gemm_i8_desc *descs, int count,
                                      ir_diag *d)
{
    cg_options defaults = cg_default_options();
    if (!o)
        o = &defaults;
    cg_gemm_i8_module *m = calloc(1, sizeof *m);
    rt_task_fn *kernels = calloc((size_t)(count > 0 ? count : 1), sizeof *kernels);
    rt_task_fn *pack_kernels = calloc((size_t)(count > 0 ? count : 1), sizeof *pack_kernels);
    if (!m || !kernels || !pack_kernels) {
        ir_diag_file_error(d, NULL, "codegen: out of memory compiling %d int8 GEMM kernels", count);
        free(m);
        free(kernels);
        free(pack_kernels);
        return NULL;
    }
    m->kernels = kernels;
    m->pack_kernels = pack_kernels;
    m->count = count;
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMContextRef ctx = LLVMOrcThreadSafeContextGetContext(tsc);
    LLVMModuleRef mod = build_module(ctx, o, allow_vnni, descs, count, d);
    if (mod)
        m->jit = cg_jit_create(o, tsc, mod, d);
    LLVMOrcDisposeThreadSafeContext(tsc);
    for (int i = 0; m->jit && i < count; i++) {
        char name[64];
        kernel_name(name, sizeof name, "kernel", i);
        m->kernels[i] = (rt_task_fn)(uintptr_t)cg_jit_lookup(m->jit, name, d);
        kernel_name(name, sizeof name, "pack", i);
        m->pack_kernels[i] = m->kernels[i] ? (rt_task_fn)(uintptr_t)cg_jit_lookup(m->jit, name, d) : NULL;
        if (!m->kernels[i] || !m->pack_kernels[i]) {
            cg_gemm_i8_module_free(m);
            return NULL;
        }
    }
    if (!m->jit) {
        cg_gemm_i8_module_free(m);
        return NULL;
    }
    return m;
}

rt_task_fn cg_gemm_i8_kernel(const cg_gemm_i8_module *m, int index)
{
    return index >= 0 && index < m->count ? m->kernels[index] : NULL;
}

rt_task_fn cg_gemm_i8_pack_kernel(const cg_gemm_i8_module *m, int index)
{
    return index >= 0 && index < m->count ? m->pack_kernels[index] : NULL;
}

void cg_gemm_i8_module_free(cg_gemm_i8_module *m)
{
    if (!m)
        return;
    if (m->jit)
        LLVMOrcDisposeLLJIT(m->jit);
    free(m->kernels);
    free(m->pack_kernels);
    free(m);
}

char *cg_gemm_i8_emit_asm(const cg_options *o, bool allow_vnni, cg_gemm_i8_desc *desc, ir_diag *d)
{
    cg_options defaults = cg_default_options();
    if (!o)
        o = &defaults;
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = build_module(ctx, o, allow_vnni, desc, 1, d);
    LLVMTargetMachineRef tm = mod ? cg_target_machine(o, d) : NULL;
    char *text = NULL;
    if (tm) {
        LLVMMemoryBufferRef buf = NULL;
        char *err = NULL;
        if (LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMAssemblyFile, &err, &buf)) {
            ir_diag_file_error(d, NULL, "codegen: emitting int8 GEMM assembly failed: %s", err);
            LLVMDisposeMessage(err);
        } else {
            size_t n = LLVMGetBufferSize(buf);
            text = malloc(n + 1);
            if (text) {
                memcpy(text, LLVMGetBufferStart(buf), n);
                text[n] = '\0';
            }
            LLVMDisposeMemoryBuffer(buf);
        }
        LLVMDisposeTargetMachine(tm);
    }
    if (mod)
        LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    return text;
}

/* ---- VNNI peak ---- */

/* Builds void peak_i8(ptr out, i64 begin, i64 end), which stores in
 * out[t] a checksum of PEAK_I8_ACCUMULATORS independent vpdpbusd chains
 * so that none is dead code. */
static void build_peak(cg_emit *e)
{
    LLVMTypeRef vi32 = LLVMVectorType(e->i32, 16);
    LLVMValueRef fn = LLVMAddFunction(e->mod, "peak_i8", e->task_ty);
    cg_function_attrs(e, fn);
    LLVMPositionBuilderAtEnd(e->b, LLVMAppendBasicBlockInContext(e->ctx, fn, "entry"));
    e->kctx = LLVMGetParam(fn, 0);
    cg_loop tl;
    LLVMValueRef t = cg_loop_begin(e, &tl, LLVMGetParam(fn, 1), LLVMGetParam(fn, 2), cg_i64(e, 1));
    cg_loop l;
    cg_loop_begin(e, &l, cg_i64(e, 0), cg_i64(e, PEAK_I8_ITERATIONS), cg_i64(e, 1));
    LLVMValueRef acc[PEAK_I8_ACCUMULATORS], next[PEAK_I8_ACCUMULATORS];
    for (int i = 0; i < PEAK_I8_ACCUMULATORS; i++)
        acc[i] = cg_loop_carry(e, &l, cg_consti(e, vi32, i));
    /* The multiplicands depend on the loop counter so LLVM cannot fold
     * the products out of the loop. */
    LLVMValueRef iv32 = LLVMBuildTrunc(e->b, l.iv, e->i32, "");
    LLVMValueRef a = cg_splat(e, LLVMBuildOr(e->b, iv32, cg_i32(e, 0x01010101), ""), 16);
    LLVMValueRef b = cg_splat(e, LLVMBuildXor(e->b, iv32, cg_i32(e, 0x7f017f01), ""), 16);
    for (int i = 0; i < PEAK_I8_ACCUMULATORS; i++) {
        LLVMValueRef args[3] = {acc[i], a, b};
        next[i] = cg_intrinsic2(e, "llvm.x86.avx512.vpdpbusd.512", NULL, 0, args, 3);
    }
    cg_loop_end(e, &l, next);
    LLVMValueRef sum = l.carry[0];
    for (int i = 1; i < PEAK_I8_ACCUMULATORS; i++)
        sum = LLVMBuildAdd(e->b, sum, l.carry[i], "");
    LLVMValueRef total = cg_intrinsic(e, "llvm.vector.reduce.add", vi32, &sum, 1);
    cg_store(e, total, e->i32, e->kctx, t);
    cg_loop_end(e, &tl, NULL);
    LLVMBuildRetVoid(e->b);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double cg_measure_vnni_peak(const cg_options *o, int threads, ir_diag *d)
{
    cg_options defaults = cg_default_options();
    if (!o)
        o = &defaults;
    LLVMTargetMachineRef tm = cg_target_machine(o, d);
    if (!tm)
        return -1;
    if (!cg_target_has_avx512_vnni(tm) || cg_vector_bits(tm) < 512) {
        char *cpu = LLVMGetTargetMachineCPU(tm);
        ir_diag_file_error(d, NULL, "codegen: CPU '%s' has no AVX-512 VNNI, so the int8 peak cannot be measured",
                           cpu);
        LLVMDisposeMessage(cpu);
        LLVMDisposeTargetMachine(tm);
        return -1;
    }
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMContextRef ctx = LLVMOrcThreadSafeContextGetContext(tsc);
    cg_gemm_shape gs = cg_gemm_shape_for(cg_vector_bits(tm));
    cg_emit e;
    memset(&e, 0, sizeof e);
    cg_emit_init(&e, ctx, cg_module_create(ctx, tm, "peak_i8"), &gs);
    build_peak(&e);
    LLVMDisposeBuilder(e.b);
    int failed = cg_optimize(e.mod, tm, 3, d);
    LLVMDisposeTargetMachine(tm);
    LLVMOrcLLJITRef jit = NULL;
    if (failed)
        LLVMDisposeModule(e.mod);
    else
        jit = cg_jit_create(o, tsc, e.mod, d);
    LLVMOrcDisposeThreadSafeContext(tsc);
    if (!jit)
        return -1;
    rt_task_fn fn = (rt_task_fn)(uintptr_t)cg_jit_lookup(jit, "peak_i8", d);
    rt_pool *pool = rt_pool_new(threads);
    double best = -1;
    if (fn && pool) {
        int n = rt_pool_threads(pool);
        int32_t *out = calloc((size_t)n, sizeof *out);
        double ops = 128.0 * PEAK_I8_ITERATIONS * PEAK_I8_ACCUMULATORS * n;
        for (int rep = 0; out && rep <= PEAK_I8_REPS; rep++) {
            double t0 = now_seconds();
            rt_pool_parallel_for(pool, fn, out, n, 1);
            double gops = ops / (now_seconds() - t0) * 1e-9;
            if (rep > 0 && gops > best) /* the first run warms up */
                best = gops;
        }
        free(out);
    }
    rt_pool_free(pool);
    LLVMOrcDisposeLLJIT(jit);
    return best;
}
