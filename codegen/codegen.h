/* LLVM code generation for quadc graphs: builds LLVM IR for every op with
 * the LLVM C API, optimizes it with the new pass manager and JIT-compiles it
 * with ORC LLJIT. Generated code runs its loops on a thread pool
 * (runtime/threadpool.h). Float values of any float dtype are computed and
 * stored as f32; f16 and bf16 are rounded only by `cast` and when outputs
 * are returned. */
#ifndef QUADC_CODEGEN_CODEGEN_H
#define QUADC_CODEGEN_CODEGEN_H

#include <stdint.h>

#include "ir/diag.h"
#include "ir/ir.h"
#include "runtime/tensor.h"

typedef struct cg_options {
    int threads;     /* worker threads; 0 = one per online core */
    const char *cpu; /* LLVM CPU name such as "znver4"; NULL = the host CPU */
    int opt_level;   /* 0-3; cg_default_options sets 3 */
    int profile;     /* nonzero: time each value's kernels, see cg_profile_seconds */
    /* nonzero: pack the weight operands of matrix products before each
     * product on every run, into buffers that later values reuse, instead
     * of keeping every packed weight from bind time on. Saves the memory of
     * a second copy of the weights where they change before every run, as
     * in training. */
    int repack_weights;
} cg_options;

typedef struct cg_module cg_module;

/* Returns threads = 0, cpu = NULL, opt_level = 3, profile = 0, repack_weights = 0. A NULL options pointer
 * passed to the functions below means these defaults. */
cg_options cg_default_options(void);

/* Builds LLVM IR for the graph, optimizes it ("default<On>") and JIT
 * compiles it. Returns NULL after reporting through d. */
cg_module *cg_compile(const ir_graph *g, const cg_options *o, ir_diag *d);
void cg_free(cg_module *m);

/* Binds the model weights: converts f16/bf16 params to f32, computes the
 * values that depend only on params and constants, and packs the weight
 * operands of matrix multiplications. f32 and integer params are used in
 * place, so `weights` must stay alive and unchanged until the next bind or
 * cg_free. Returns 0, or -1 after reporting a missing or mismatched weight. */
int cg_bind_weights(cg_module *m, const rt_weights *weights, ir_diag *d);

/* Runs the graph. A module's buffers serve one call at a time, so callers
 * that share a module between threads must serialize cg_run and
 * cg_bind_weights. Binds `weights` first unless they are the weights bound
 * last (compared by pointer, so rebind explicitly after changing tensors
 * in place). Inputs are looked up by value name. On success stores one new
 * tensor per graph output in outputs[0 .. noutputs) and returns 0. On error
 * (a missing or mismatched input, an embedding id out of range) reports
 * the value and position through d and returns -1. */
int cg_run(cg_module *m, const rt_weights *weights, const rt_weights *inputs, rt_tensor **outputs,
           ir_diag *d);

/* Runs the graph like cg_run, but fills outputs[i] with a view of graph
 * output i instead of a new tensor: its dtype, shape and a data pointer
 * into the module's buffers. f16 and bf16 outputs, which the module stores
 * as f32, point into a converted copy that the module owns. The views stay
 * valid until the next cg_run, cg_run_views or cg_bind_weights of m, or
 * cg_free. */
int cg_run_views(cg_module *m, const rt_weights *weights, const rt_weights *inputs, rt_tensor *outputs,
                 ir_diag *d);

/* Returns the wall-clock seconds spent in each value's kernels, indexed by
 * value id and summed over all runs since compilation, or NULL when the
 * module was compiled without profile. Time is charged to the value whose
 * kernels just finished, so bind-time values and leaves stay at 0. */
const double *cg_profile_seconds(const cg_module *m);

/* Returns the optimized LLVM IR as text (caller frees with free), or NULL
 * after reporting an error. */
char *cg_emit_llvm(const ir_graph *g, const cg_options *o, ir_diag *d);
/* Returns the assembly for the target CPU as text (caller frees), or NULL. */
char *cg_emit_asm(const ir_graph *g, const cg_options *o, ir_diag *d);

/* Returns the floating-point operations of the matrix multiplications in
 * the graph, 2 * M * K * N per product. */
double cg_graph_matmul_flops(const ir_graph *g);

/* Measures the fp32 FMA throughput of the target in GFLOP/s with a
 * generated loop of independent vector FMAs on `threads` threads (0 = all
 * cores). Returns a negative value after reporting an error. */
double cg_measure_fma_peak(const cg_options *o, int threads, ir_diag *d);
/* Measures the streaming read bandwidth in GB/s (1e9 bytes per second):
 * `threads` threads sum a buffer of about `bytes` bytes on huge pages with
 * generated vector loads, each thread one contiguous part. Returns the
 * best of 7 timed passes after a warm-up, or a negative value after
 * reporting an error. */
double cg_measure_read_bandwidth(const cg_options *o, int threads, int64_t bytes, ir_diag *d);

/* Memory of a graph under the buffer plan of cg_compile, in bytes. Float
 * tensors count 4 bytes per element, as the module stores them. */
typedef struct cg_memory_stats {
    int64_t param_bytes;
    int64_t input_bytes;
    int64_t output_bytes;
    int64_t intermediate_bytes;       /* every other tensor, each counted once, reshapes excluded */
    int intermediate_values;
    int64_t planned_activation_bytes; /* their run-time buffers after reuse, with operands packed per run */
    int64_t planned_output_bytes;     /* run-time buffers of outputs that no intermediate shares */
    int64_t bind_bytes;               /* values computed once from params and constants */
    int64_t packed_bytes;             /* GEMM operands packed once at bind time */
    int64_t scratch_bytes;            /* per-op scratch buffers */
} cg_memory_stats;

/* Plans the buffers of g for the target of `o` (NULL: the defaults) without
 * generating code and fills `out`. Returns 0, or -1 after reporting. */
int cg_plan_memory(const ir_graph *g, const cg_options *o, cg_memory_stats *out, ir_diag *d);

#endif
