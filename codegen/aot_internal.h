/* Shared state of the ahead-of-time compiler: the planned bundle layout
 * that aot.c fills, aot_entry.c turns into LLVM IR entry points and
 * aot_header.c documents. */
#ifndef QUADC_CODEGEN_AOT_INTERNAL_H
#define QUADC_CODEGEN_AOT_INTERNAL_H

#include "codegen/aot.h"
#include "codegen/cg_internal.h"

/* Status codes of the entry points. Codes below 100 come from the
 * generated kernels (CG_STATUS_*); the ones here from init and run.
 * aot/bundle.h repeats them for programs that include no quadc header. */
enum {
    CG_AOT_STATUS_INVALID_ARGUMENT = 100,
    CG_AOT_STATUS_OUT_OF_MEMORY = 101,
    CG_AOT_STATUS_WEIGHTS_READ = 102,     /* the weights file cannot be opened or read */
    CG_AOT_STATUS_WEIGHTS_MISMATCH = 103, /* wrong magic, size or fingerprint */
};

/* Where init points a buffer slot. */
typedef enum cg_aot_slot_kind {
    CG_AOT_SLOT_NONE = 0,    /* unused, or set by each run (inputs) */
    CG_AOT_SLOT_SCRATCH = 1, /* at slot_offset in the scratch arena */
    CG_AOT_SLOT_WEIGHTS = 2, /* at slot_offset in the weights blob */
} cg_aot_slot_kind;

/* A graph param, input or output as the bundle exposes it. */
typedef struct cg_aot_tensor {
    int value;     /* value id */
    char *c_name;  /* unique C identifier derived from the value name */
    int64_t bytes; /* bytes in the stored layout (float dtypes as f32) */
    int64_t offset; /* params: offset in the weights blob */
    bool updated;   /* inputs: written in place by cache_write */
} cg_aot_tensor;

struct cg_aot_layout {
    ir_graph *g; /* a clone */
    char *prefix, *triple, *cpu, *source, *weights_source;
    int opt_level;
    int threads_max;
    bool embed_weights;
    bool host; /* the triple is the host's */
    LLVMTargetMachineRef tm;
    cg_plan plan;
    cg_gemm_shape gs;
    uint8_t *slot_kind;   /* per slot, a cg_aot_slot_kind */
    int64_t *slot_offset; /* per slot */
    int64_t scratch_bytes;
    cg_aot_tensor *params, *inputs, *outputs;
    int nparams, ninputs, noutputs;
    int64_t weights_bytes; /* the whole blob, header included */
    uint64_t fingerprint;  /* FNV-1a of the param names, dtypes and shapes */
    uint8_t *blob;         /* the weights blob, CG_AOT_ALIGN aligned */
};

/* The C type of a stored element: "float", "int32_t", ... */
const char *cg_aot_c_type(ir_dtype t);

/* Bytes reserved for each pthread_mutex_t and pthread_cond_t in the
 * generated pool; aot.c checks that the host's types fit. */
#define CG_AOT_PTHREAD_BYTES 128

/* ---- aot_pool.c ---- */
/* Adds the thread pool: rt_pool_parallel_for (the symbol the kernels'
 * entry points call), qc_aot_pool_new(i32 nthreads) and
 * qc_aot_pool_free(ptr). */
void cg_aot_add_pool(LLVMModuleRef mod);

/* ---- aot_entry.c ---- */
/* Adds the thread pool, <prefix>_init, _run, _run_array, _free and
 * the <prefix>_bundle descriptor to mod, which already holds qc_bind and
 * qc_run, and gives every other definition internal linkage. */
int cg_aot_add_entry_points(const cg_aot_layout *l, LLVMModuleRef mod, ir_diag *d);

#endif
