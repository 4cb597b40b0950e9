/* Shared state of the code generator: the buffer plan, the emission
 * context and the IR-building helpers used by the per-op emitters.
 *
 * Generated code ABI. Every buffer is a slot in an array of pointers
 * `bufs`. Two entry points exist:
 *   i32 qc_bind(ptr bufs, ptr pool)  constants, param-only values, packing
 *   i32 qc_run(ptr bufs, ptr pool)   everything that depends on inputs
 * Both return 0 or a nonzero CG_STATUS_* code; details of a failure are in
 * the i64[4] status slot: {code, value id, flat position, offending id}.
 * Kernels have the type void(ptr args, i64 begin, i64 end) and run tasks
 * [begin, end), where args is an array of the buffer pointers the kernel
 * uses, filled by the entry point for each launch. Kernels therefore
 * contain no slot numbers, so the kernels of identical layers are
 * identical functions that the mergefunc pass folds into one before O3.
 * The entry points call kernels directly or through rt_pool_parallel_for. */
#ifndef QUADC_CODEGEN_CG_INTERNAL_H
#define QUADC_CODEGEN_CG_INTERNAL_H

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>
#include <stdbool.h>

#include "codegen/codegen.h"
#include "ir/fused.h"

enum {
    CG_STATUS_OK = 0,
    CG_STATUS_INDEX_RANGE = 1, /* embedding id or cross-entropy target out of range */
};

/* Where a value's buffer comes from. */
typedef enum cg_storage {
    CG_STORE_PARAM, /* bound from the weights */
    CG_STORE_INPUT, /* bound from the inputs of each run */
    CG_STORE_BIND,  /* computed by qc_bind */
    CG_STORE_RUN,   /* computed by qc_run */
} cg_storage;

/* How a matrix product is carried out; filled in by the plan. */
typedef struct cg_gemm_plan {
    int value;       /* the matmul or linear value */
    int packed_slot; /* packed B panels */
    bool pack_at_bind;
} cg_gemm_plan;

typedef struct cg_plan {
    int nvalues;
    cg_storage *storage; /* per value */
    int *slot;           /* per value: its buffer slot (a reshape shares its operand's) */
    bool *is_alias;      /* per value: reshape or cache_write sharing its operand's buffer */
    int nslots;
    int64_t *slot_bytes;  /* per slot: bytes the module allocates, 0 for bound slots */
    int status_slot;
    int profile_slot; /* cg_profile state, or -1 without profile */
    int ngemms;
    cg_gemm_plan *gemms;
    int *scratch_slot; /* per value: extra scratch buffer or -1 */
} cg_plan;

/* GEMM blocking chosen from the target's vector width. */
typedef struct cg_gemm_shape {
    int vw;     /* floats per vector */
    int mr, nr; /* microkernel rows and columns (nr = nvec * vw) */
    int nvec;
    int mc, nc, kc; /* cache blocks */
} cg_gemm_shape;

#define CG_MAX_KERNEL_ARGS 16

typedef struct cg_emit {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;       /* kernel bodies */
    LLVMBuilderRef entry_b; /* the entry function being built */
    const ir_graph *g;
    ir_diag *d;
    cg_plan *plan;
    cg_gemm_shape gs;
    LLVMTypeRef i1, i8, i16, i32, i64, f32, f64, ptr, vf, void_ty;
    LLVMTypeRef task_ty; /* void(ptr, i64, i64) */
    LLVMTypeRef pfor_ty;
    LLVMValueRef pfor;      /* rt_pool_parallel_for */
    LLVMTypeRef tick_ty;
    LLVMValueRef tick;      /* cg_profile_tick, when profiling */
    LLVMValueRef entry_fn;  /* qc_bind or qc_run */
    LLVMTargetMachineRef tm; /* the module's target, for the int8 GEMM shape */
    LLVMValueRef entry_bufs, entry_pool;
    LLVMValueRef kctx;      /* args parameter of the kernel being built */
    int kslots[CG_MAX_KERNEL_ARGS]; /* slot of each args entry of that kernel */
    int nkslots;
    int kernel_count;
    int errors;
} cg_emit;

/* ---- plan.c ---- */
int cg_plan_build(const ir_graph *g, const cg_gemm_shape *gs, bool profile, bool repack_weights, cg_plan *plan,
                  ir_diag *d);
void cg_plan_free(cg_plan *plan);
/* Bytes per element in a buffer: float dtypes are stored as f32. */
int64_t cg_storage_elem_size(ir_dtype t);
bool cg_is_float(ir_dtype t);
cg_gemm_shape cg_gemm_shape_for(int vector_bits);
/* Packed-B buffer bytes for a matmul or linear value. */
int64_t cg_packed_bytes(const ir_graph *g, const ir_value *v, const cg_gemm_shape *gs);

/* Called by generated code after the kernels of value `value` finish when
 * profiling: charges the time since the previous call to that value. */
void cg_profile_tick(void *state, int64_t value);

/* ---- target.c ---- */
/* Creates a target machine for o->cpu (or the host). */
LLVMTargetMachineRef cg_target_machine(const cg_options *o, ir_diag *d);
int cg_vector_bits(LLVMTargetMachineRef tm);
int cg_optimize(LLVMModuleRef mod, LLVMTargetMachineRef tm, int opt_level, ir_diag *d);

/* ---- emit.c: module building ---- */
/* Builds qc_bind and qc_run for g into a new module in ctx; returns NULL
 * after reporting an op the code generator does not support. */
LLVMModuleRef cg_build_module(LLVMContextRef ctx, LLVMTargetMachineRef tm, const ir_graph *g,
                              const cg_plan *plan, const cg_gemm_shape *gs, ir_diag *d);
/* Fills the types and the kernel builder of e (e->b) for module mod. */
void cg_emit_init(cg_emit *e, LLVMContextRef ctx, LLVMModuleRef mod, const cg_gemm_shape *gs);
/* Creates an empty module with the target's triple and data layout. */
LLVMModuleRef cg_module_create(LLVMContextRef ctx, LLVMTargetMachineRef tm, const char *name);

/* ---- irb.c: IR-building helpers ---- */
LLVMTypeRef cg_elem_type(cg_emit *e, ir_dtype t);
LLVMTypeRef cg_vec_type(LLVMTypeRef elem, int lanes);
LLVMValueRef cg_i64(cg_emit *e, int64_t v);
LLVMValueRef cg_i32(cg_emit *e, int32_t v);
/* A float or integer constant of type ty, splatted when ty is a vector. */
LLVMValueRef cg_constf(cg_emit *e, LLVMTypeRef ty, double v);
LLVMValueRef cg_consti(cg_emit *e, LLVMTypeRef ty, int64_t v);
LLVMValueRef cg_splat(cg_emit *e, LLVMValueRef scalar, int lanes);
/* Calls an overloaded LLVM intrinsic such as "llvm.fma" on type ty. */
LLVMValueRef cg_intrinsic(cg_emit *e, const char *name, LLVMTypeRef ty, LLVMValueRef *args, int nargs);
LLVMValueRef cg_intrinsic2(cg_emit *e, const char *name, LLVMTypeRef *tys, int ntys, LLVMValueRef *args,
                           int nargs);
/* Element pointer base + index (elements of type elem). */
LLVMValueRef cg_gep(cg_emit *e, LLVMTypeRef elem, LLVMValueRef base, LLVMValueRef index);
/* Loads `lanes` consecutive elements (a vector when lanes > 1). */
LLVMValueRef cg_load(cg_emit *e, LLVMTypeRef elem, LLVMValueRef base, LLVMValueRef index, int lanes);
void cg_store(cg_emit *e, LLVMValueRef v, LLVMTypeRef elem, LLVMValueRef base, LLVMValueRef index);
/* Horizontal sum / max of a float vector (returns a scalar as is). */
LLVMValueRef cg_hsum(cg_emit *e, LLVMValueRef v);
LLVMValueRef cg_hmax(cg_emit *e, LLVMValueRef v);
/* Marks an fadd/fmul as reassociable so LLVM may reorder it. */
LLVMValueRef cg_reassoc(LLVMValueRef inst);

/* Counted loop i = start; i < end; i += step. cg_loop_begin positions the
 * builder in the body; loop-carried values are phis made by cg_loop_carry
 * before the body is built and closed by cg_loop_end. */
#define CG_LOOP_MAX_CARRY 64
typedef struct cg_loop {
    LLVMBasicBlockRef header, exit;
    LLVMValueRef iv, step;
    int ncarry;
    LLVMValueRef carry[CG_LOOP_MAX_CARRY];
} cg_loop;
LLVMValueRef cg_loop_begin(cg_emit *e, cg_loop *l, LLVMValueRef start, LLVMValueRef end, LLVMValueRef step);
/* Adds a carried value; call between cg_loop_begin and building the body. */
LLVMValueRef cg_loop_carry(cg_emit *e, cg_loop *l, LLVMValueRef init);
/* Closes the loop with the carried values' next values (NULL if none).
 * After it, l->carry[i] are the values at loop exit. */
void cg_loop_end(cg_emit *e, cg_loop *l, LLVMValueRef *next);

/* Sets the vector-width and nounwind attributes every generated function gets. */
void cg_function_attrs(cg_emit *e, LLVMValueRef fn);

/* Kernels and launches. */
LLVMValueRef cg_kernel_begin(cg_emit *e, const char *what, LLVMValueRef *begin, LLVMValueRef *end);
void cg_kernel_end(cg_emit *e);
/* Loads the buffer pointer of a slot inside the current kernel (from its
 * args array, adding the slot to the kernel's arguments on first use). */
LLVMValueRef cg_buf(cg_emit *e, int slot);
/* Calls the kernel built last, fn, over ntasks tasks from the entry
 * function, on the pool when the total work (elements touched) is large
 * enough. */
void cg_launch(cg_emit *e, LLVMValueRef fn, int64_t ntasks, int64_t grain, int64_t work);
/* Emits "if status != 0 return status" into the entry function. */
void cg_check_status(cg_emit *e);
/* Records a range error in the status slot from inside a kernel. */
void cg_report_range_error(cg_emit *e, int value_id, LLVMValueRef position, LLVMValueRef bad_id);

/* ---- math.c: vectorizable math on float scalars or vectors ---- */
LLVMValueRef cg_exp(cg_emit *e, LLVMValueRef x);
LLVMValueRef cg_log(cg_emit *e, LLVMValueRef x);
LLVMValueRef cg_tanh(cg_emit *e, LLVMValueRef x);
LLVMValueRef cg_gelu(cg_emit *e, LLVMValueRef x);
LLVMValueRef cg_fma(cg_emit *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c);

/* ---- emit_elementwise.c ---- */
int cg_emit_elementwise(cg_emit *e, const ir_value *v);
int cg_emit_causal_mask(cg_emit *e, const ir_value *v);
int cg_emit_layout(cg_emit *e, const ir_value *v); /* transpose, slice, concat, broadcast, reshape copy */
int cg_emit_const(cg_emit *e, const ir_value *v);
/* Rounds the f32-stored result of an f16 or bf16 value in place, as the
 * interpreter rounds every op's result once. */
int cg_emit_round_result(cg_emit *e, const ir_value *v);
/* One loop over the result that evaluates the whole fused program. */
int cg_emit_fused_elementwise(cg_emit *e, const ir_value *v);

/* ---- emit_quant.c ---- */
/* fq.act, fq.weight, grad.fq.input and qa.scale. */
int cg_emit_quant(cg_emit *e, const ir_value *v);
/* grad.fq.scale and grad.fq.zero_point. */
int cg_emit_quant_grad_sum(cg_emit *e, const ir_value *v);

/* ---- emit_rows.c ---- */
int cg_emit_layernorm(cg_emit *e, const ir_value *v);
int cg_emit_softmax(cg_emit *e, const ir_value *v);
int cg_emit_reduce(cg_emit *e, const ir_value *v);
int cg_emit_embedding(cg_emit *e, const ir_value *v);
int cg_emit_cross_entropy(cg_emit *e, const ir_value *v);

/* ---- emit_kv.c ---- */
int cg_emit_cache_write(cg_emit *e, const ir_value *v);
int cg_emit_causal_mask_at(cg_emit *e, const ir_value *v); /* causal_mask with a pos operand */
/* Returns the id of the cache_write that is B of product v (matmul or
 * fused.matmul) when only the cache rows before pos + T, those written so
 * far, can affect the graph's outputs. Returns -1 otherwise, and for any
 * other B. See emit_kv.c for the patterns. */
int cg_live_cache(const ir_graph *g, const ir_value *v);
/* Emits pos + T of cache_write `cw` inside the current kernel: the number
 * of live cache rows. */
LLVMValueRef cg_live_cache_rows(cg_emit *e, const ir_value *cw);

/* ---- emit_grad.c, emit_grad_scatter.c: the backward ops ---- */
/* One pass over a span [j0, j1) of a row: vectors of the target width while
 * a whole vector remains (when `vectorize`), then scalars. body computes
 * the element at j (`lanes` wide) and returns in terms[0 .. nacc) the values
 * to sum, or to take the maximum of when `max`. */
typedef void (*cg_span_fn)(cg_emit *e, void *user, LLVMValueRef j, int lanes, LLVMValueRef *terms);
typedef struct cg_span_pass {
    bool vectorize;
    bool max;
    int nacc; /* 0 to 2 */
    cg_span_fn body;
    void *user;
} cg_span_pass;
/* Emits the pass and stores the nacc scalar results in results. */
void cg_span(cg_emit *e, LLVMValueRef j0, LLVMValueRef j1, const cg_span_pass *pass, LLVMValueRef *results);
/* Copies src[j0, j1) to dst[j0, j1) (f32), or zeroes it when src is NULL. */
void cg_span_copy(cg_emit *e, LLVMValueRef src, LLVMValueRef dst, LLVMValueRef j0, LLVMValueRef j1);
int cg_emit_grad_pointwise(cg_emit *e, const ir_value *v); /* gelu, relu, abs, maximum, minimum */
int cg_emit_grad_causal_mask(cg_emit *e, const ir_value *v);
int cg_emit_grad_softmax(cg_emit *e, const ir_value *v);
int cg_emit_grad_layernorm(cg_emit *e, const ir_value *v);
int cg_emit_grad_layernorm_weight(cg_emit *e, const ir_value *v);
int cg_emit_grad_embedding(cg_emit *e, const ir_value *v);
int cg_emit_grad_cross_entropy(cg_emit *e, const ir_value *v);

/* ---- emit_epilogue.c: elementwise epilogues of matrix products ---- */
/* Returns true for matmul, linear, fused.matmul and fused.linear. */
bool cg_is_product(const ir_value *v);
/* Returns true for linear and fused.linear, whose B is W[K, N]. */
bool cg_is_linear(const ir_value *v);

/* How an epilogue operand lines up with the product's result [..., M, N]. */
typedef enum cg_epilogue_kind {
    CG_EPILOGUE_FULL,   /* the result's shape: element (row, col) of the result */
    CG_EPILOGUE_ROW,    /* one element per column, like a bias */
    CG_EPILOGUE_SCALAR, /* one element */
    CG_EPILOGUE_OTHER,  /* any other broadcast */
} cg_epilogue_kind;

/* The program of a fused.linear or fused.matmul value and its operands.
 * Input 0 of the program is the product; input k >= 1 is operand k + 1 of
 * the value, in buffer slot[k]. */
typedef struct cg_epilogue {
    bool active;       /* false for matmul and linear */
    bool in_registers; /* no operand is CG_EPILOGUE_OTHER */
    ir_fused_program program;
    int ninputs;
    int slot[IR_FUSED_MAX_INPUTS];
    cg_epilogue_kind kind[IR_FUSED_MAX_INPUTS];
} cg_epilogue;

/* Fills ep for product value v. Returns -1 after reporting an invalid
 * program. */
int cg_epilogue_init(cg_emit *e, const ir_value *v, cg_epilogue *ep);
/* Loads the buffer of every epilogue operand in the current kernel and
 * positions it at a tile: FULL operands at flat element `full_offset` of
 * the result, ROW operands at column `col`. */
void cg_epilogue_bases(cg_emit *e, const cg_epilogue *ep, LLVMValueRef full_offset, LLVMValueRef col,
                       LLVMValueRef *bases);
/* Applies the program to `acc`, the result elements at `row_offset` +
 * `col_offset` (FULL operands) and column `col_offset` (ROW operands)
 * from the tile bases. acc is a scalar or a vector of `lanes`; a partial
 * vector gets the lane mask `mask` (NULL when whole). */
LLVMValueRef cg_epilogue_apply(cg_emit *e, const cg_epilogue *ep, const LLVMValueRef *bases, LLVMValueRef acc,
                               LLVMValueRef row_offset, LLVMValueRef col_offset, int lanes, LLVMValueRef mask);
/* Evaluates a fused program on values already loaded, in emit_elementwise.c. */
LLVMValueRef cg_fused_eval(cg_emit *e, const ir_fused_program *p, const LLVMValueRef *inputs);
/* Applies the epilogue of v in place over its stored result, for products
 * whose epilogue is not in registers; in emit_elementwise.c. */
int cg_emit_epilogue_pass(cg_emit *e, const ir_value *v);

/* ---- emit_gemm_pack.c ---- */
/* Packs the B operand of a product into NR-column panels. */
int cg_emit_pack(cg_emit *e, const cg_gemm_plan *gp);
/* Rows and row stride, in floats, of the scratch block that holds one
 * MC x KC block of a transposed A. */
int64_t cg_gemm_a_block_rows(const cg_gemm_shape *gs);
int64_t cg_gemm_a_block_stride(const cg_gemm_shape *gs);
/* Allocates that block on the stack of the kernel being built; call it in
 * the kernel's entry block. */
LLVMValueRef cg_emit_a_block_scratch(cg_emit *e);
/* Copies rows [m0, m0 + rows) and columns [k0, k0 + kc) of A = a^T, with
 * a stored [K, m] at src, into dst row-major with the block stride, so
 * that A[m0 + r, k0 + c] lands at dst[r * stride + c]. Rows and columns
 * up to the next multiple of the vector width are written as zeros. */
void cg_emit_pack_a_block(cg_emit *e, LLVMValueRef src, int64_t m, LLVMValueRef m0, LLVMValueRef rows,
                          LLVMValueRef k0, LLVMValueRef kc, LLVMValueRef dst);

/* ---- emit_gemm.c ---- */
/* ep: the epilogue the microkernel applies at the last K block, or NULL. */
int cg_emit_gemm(cg_emit *e, const cg_gemm_plan *gp, const cg_epilogue *ep);

/* ---- emit_gemv.c ---- */
/* Products with at most this many rows per matrix take the GEMV path. */
#define CG_GEMV_MAX_ROWS 4
/* Returns true when product value v takes the GEMV path: no packed B and
 * no entry in the plan's GEMM list. */
bool cg_use_gemv(const ir_graph *g, const ir_value *v);
/* Bytes of scratch that the GEMV of v needs for partial sums, or 0. */
int64_t cg_gemv_scratch_bytes(const ir_graph *g, const ir_value *v, const cg_gemm_shape *gs);
int cg_emit_gemv(cg_emit *e, const ir_value *v, const cg_epilogue *ep);

#endif
