/* Target setup: the target machine for the host CPU (or a named one), the
 * vector width the emitters use, and the optimization pipeline. */
#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/cg_internal.h"

cg_options cg_default_options(void)
{
    cg_options o = {0, NULL, 3, 0, 0};
    return o;
}

LLVMTargetMachineRef cg_target_machine(const cg_options *o, ir_diag *d)
{
    /* Registers the native target with LLVM's process-wide registry; the
     * calls are idempotent. */
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();

    char *triple = LLVMGetDefaultTargetTriple();
    LLVMTargetRef target;
    char *err = NULL;
    if (LLVMGetTargetFromTriple(triple, &target, &err)) {
        ir_diag_file_error(d, NULL, "codegen: no LLVM target for triple '%s': %s", triple, err);
        LLVMDisposeMessage(err);
        LLVMDisposeMessage(triple);
        return NULL;
    }
    char *cpu = o->cpu ? NULL : LLVMGetHostCPUName();
    char *features = o->cpu ? NULL : LLVMGetHostCPUFeatures();
    LLVMCodeGenOptLevel level = o->opt_level <= 0   ? LLVMCodeGenLevelNone
                                : o->opt_level == 1 ? LLVMCodeGenLevelLess
                                : o->opt_level == 2 ? LLVMCodeGenLevelDefault
                                                    : LLVMCodeGenLevelAggressive;
    LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, o->cpu ? o->cpu : cpu,
                                                      features ? features : "", level, LLVMRelocDefault,
                                                      LLVMCodeModelJITDefault);
    if (!tm)
        ir_diag_file_error(d, NULL, "codegen: cannot create a target machine for CPU '%s' on '%s'",
                           o->cpu ? o->cpu : cpu, triple);
    LLVMDisposeMessage(triple);
    if (cpu)
        LLVMDisposeMessage(cpu);
    if (features)
        LLVMDisposeMessage(features);
    return tm;
}

/* CPUs (LLVM 19 names) with AVX-512F, for a named CPU whose features the
 * C API does not list. */
static const char *const avx512_cpus[] = {
    "znver4", "znver5", "skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client",
    "icelake-server", "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids", "graniterapids",
    "graniterapids-d", "x86-64-v4", "knl", "knm",
};
static const char *const avx2_cpus[] = {
    "haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake", "arrowlake", "lunarlake",
    "znver1", "znver2", "znver3", "x86-64-v3", "gracemont", "sierraforest", "grandridge",
};

int cg_vector_bits(LLVMTargetMachineRef tm)
{
    char *features = LLVMGetTargetMachineFeatureString(tm);
    char *cpu = LLVMGetTargetMachineCPU(tm);
    int bits = 128;
    if (features && features[0]) {
        if (strstr(features, "+avx512f"))
            bits = 512;
        else if (strstr(features, "+avx2"))
            bits = 256;
    } else {
        /* NOTE: CPUs missing from both lists get 128-bit vectors. */
        for (size_t i = 0; i < sizeof avx512_cpus / sizeof *avx512_cpus; i++)
            if (strcmp(cpu, avx512_cpus[i]) == 0)
                bits = 512;
        for (size_t i = 0; i < sizeof avx2_cpus / sizeof *avx2_cpus; i++)
            if (strcmp(cpu, avx2_cpus[i]) == 0)
                bits = 256;
    }
    LLVMDisposeMessage(features);
    LLVMDisposeMessage(cpu);
    return bits;
}

LLVMModuleRef cg_module_create(LLVMContextRef ctx, LLVMTargetMachineRef tm, const char *name)
{
    LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(name, ctx);
    char *triple = LLVMGetTargetMachineTriple(tm);
    LLVMSetTarget(mod, triple);
    LLVMDisposeMessage(triple);
    LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(mod, layout);
    LLVMDisposeTargetData(layout);
    return mod;
}

int cg_optimize(LLVMModuleRef mod, LLVMTargetMachineRef tm, int opt_level, ir_diag *d)
{
    char *msg = NULL;
    if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
        ir_diag_file_error(d, NULL, "codegen: internal error, the generated LLVM IR is invalid: %s", msg);
        LLVMDisposeMessage(msg);
        return -1;
    }
    LLVMDisposeMessage(msg);
    if (opt_level < 0)
        opt_level = 0;
    if (opt_level > 3)
        opt_level = 3;
    char pipeline[32];
    snprintf(pipeline, sizeof pipeline, "default<O%d>", opt_level);
    LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
    LLVMPassBuilderOptionsSetLoopVectorization(opts, 1);
    LLVMPassBuilderOptionsSetSLPVectorization(opts, 1);
    /* mergefunc first folds the identical kernels of repeated layers, so
     * O3 and instruction selection see each kernel once. */
    LLVMErrorRef err = LLVMRunPasses(mod, "mergefunc", tm, opts);
    if (!err)
        err = LLVMRunPasses(mod, pipeline, tm, opts);
    LLVMDisposePassBuilderOptions(opts);
    if (err) {
        char *text = LLVMGetErrorMessage(err);
        ir_diag_file_error(d, NULL, "codegen: pass pipeline '%s' failed: %s", pipeline, text);
        LLVMDisposeErrorMessage(text);
        return -1;
    }
    return 0;
}
