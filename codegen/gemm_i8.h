/* Integer matrix multiplication for int8 inference: C = A · B with
 * A u8 or s8 [M, K] activations, B s8 [K, N] symmetric weights and int32
 * accumulation, followed by an output stage.
 *
 * With activation zero point za the accumulator of output (m, n) is
 *   acc = Σ_k a[m,k] · b[k,n] − za · Σ_k b[k,n]  (+ bias[n] for integer outputs)
 * and the output stages are
 *   CG_GEMM_I8_OUT_I32  acc
 *   CG_GEMM_I8_OUT_F32  scale[n] · acc + bias[n]   (scale = s_a · s_w[n], f32 bias)
 *   CG_GEMM_I8_OUT_U8/S8  clamp(requantize(acc) + out_zero_point), where the
 *                      fixed-point multiplier per channel comes from
 *                      cg_qmul_from_real (quant_arith.h) at compile time.
 *   CG_GEMM_I8_OUT_DEQUANT  (s_x · s_w[c]) · (acc − z_x · Σ_k b[k,n]
 *                      − z_w[c] · rowsum[m]) + bias[n] in f32, with the
 *                      input scale s_x and zero point z_x read at run time,
 *                      c = n for per-channel weights and 0 otherwise, and
 *                      rowsum[m] = Σ_k (a[m,k] − z_x) computed by the
 *                      caller. It is q.linear's dequantization (ir/ops.def)
 *                      with the same f32 operations in the same order.
 * The column sums Σ_k b[k,n] are computed when B is packed.
 *
 * Two instruction paths exist. CG_GEMM_I8_VNNI multiplies u8 x s8 byte
 * quadruples with AVX-512 VNNI vpdpbusd (llvm.x86.avx512.vpdpbusd.512),
 * which adds into int32 lanes without saturation. CG_GEMM_I8_PORTABLE uses
 * plain LLVM vector ops: bytes are widened to i16 and pairs of products
 * are summed in i32. The x86 backend of LLVM 19 selects that pattern as
 * vpmaddwd on AVX2, or as vpdpwssd when AVX-512 VNNI is present. Both are
 * exact, because they add i16 x i16 products in i32. The path avoids
 * vpmaddubsw, which adds two u8 x s8 products in i16 with saturation
 * (2 · 255 · 128 = 65280 does not fit), and the assembly test checks that.
 * s8 activations are flipped to u8 (a + 128) in the kernel and the extra
 * 128 · Σ_k b[k,n] is removed with the zero-point correction.
 *
 * Packed B layout: panels of NR columns, K rounded up to a multiple of 4
 * and split into groups of 4. Panel p stores b[4g + i, p·NR + j] at byte
 * ((p·G + g)·NR + j)·4 + i, with G = ceil(K / 4), and zeros past K and N.
 * One 64-byte load is thus 16 columns x 4 consecutive k, the operand
 * layout vpdpbusd multiplies against 4 broadcast activation bytes.
 *
 * Products of at most CG_GEMV_I8_MAX_M rows, such as one decoding step,
 * use a GEMV kernel instead of the tiled GEMM (emit_gemv_i8.c). It takes
 * the same packed layout and args and streams every packed panel once,
 * one task per panel, with independent accumulators over consecutive
 * groups.
 *
 * Usage: pick a shape with cg_gemm_i8_shape_for, pack the weights with
 * cg_gemm_i8_pack_b (or at bind time with the kernel from
 * cg_emit_pack_b_i8), fill a cg_gemm_i8_desc and emit the kernel with
 * cg_emit_gemm_i8 into a module set up by cg_emit_init. Run it over tasks
 * [0, cg_gemm_i8_tasks(desc)), e.g. with rt_pool_parallel_for, passing an
 * array of CG_GEMM_I8_NARGS buffer pointers indexed by CG_GEMM_I8_ARG_*. */
#ifndef QUADC_CODEGEN_GEMM_I8_H
#define QUADC_CODEGEN_GEMM_I8_H

#include <stdbool.h>
#include <stdint.h>

#include "codegen/cg_internal.h"
#include "runtime/threadpool.h"

typedef enum cg_gemm_i8_isa {
    CG_GEMM_I8_PORTABLE,
    CG_GEMM_I8_VNNI, /* AVX-512 VNNI, 512-bit vectors */
} cg_gemm_i8_isa;

typedef enum cg_gemm_i8_output {
    CG_GEMM_I8_OUT_I32,
    CG_GEMM_I8_OUT_F32,
    CG_GEMM_I8_OUT_U8,
    CG_GEMM_I8_OUT_S8,
    CG_GEMM_I8_OUT_DEQUANT,
} cg_gemm_i8_output;

/* Products with at most this many rows take the GEMV kernel. */
#define CG_GEMV_I8_MAX_M 4

/* Instruction path and blocking. The packed layout depends on nr only. */
typedef struct cg_gemm_i8_shape {
    cg_gemm_i8_isa isa;
    int vw;     /* int32 lanes per vector */
    int mr;     /* microkernel rows */
    int nvec;   /* vectors of vw columns per microkernel row */
    int nr;     /* panel columns, nvec * vw */
    int mc, nc; /* rows and columns of one task's tile */
} cg_gemm_i8_shape;

/* Indices into the args array of a generated kernel. */
enum {
    CG_GEMM_I8_ARG_A,      /* u8 or s8 [M, lda] */
    CG_GEMM_I8_ARG_PACKED, /* packed B from cg_gemm_i8_pack_b */
    CG_GEMM_I8_ARG_COLSUM, /* i32 column sums from cg_gemm_i8_pack_b */
    CG_GEMM_I8_ARG_C,      /* output [M, ldc] of the output stage's type */
    CG_GEMM_I8_ARG_SCALE,  /* f32 [N] s_a · s_w[n], read by OUT_F32 only */
    CG_GEMM_I8_ARG_BIAS,   /* [N]: f32 for OUT_F32 and OUT_DEQUANT, else i32; read when has_bias */
    /* Read by OUT_DEQUANT only: */
    CG_GEMM_I8_ARG_ROWSUM,       /* i32 [M] Σ_k (a[m,k] − z_x) */
    CG_GEMM_I8_ARG_X_SCALE,      /* f32 scalar s_x */
    CG_GEMM_I8_ARG_X_ZERO_POINT, /* f32 scalar, an integer value z_x (rounded half to even) */
    CG_GEMM_I8_ARG_W_SCALE,      /* f32 [N], or [1] unless per_channel */
    CG_GEMM_I8_ARG_W_ZERO_POINT, /* f32 [N], or [1] unless per_channel, integer values */
    CG_GEMM_I8_NARGS,
};

typedef struct cg_gemm_i8_desc {
    const char *name; /* suffix of the kernel's LLVM name */
    cg_gemm_i8_shape shape;
    int64_t m, k, n;
    int64_t lda, ldc; /* row strides in elements; 0 means k and n */
    bool a_signed;    /* s8 activations (else u8) */
    int32_t a_zero_point;
    cg_gemm_i8_output output;
    bool has_bias;
    /* OUT_U8 and OUT_S8: real multipliers s_a · s_w[n] / s_out, either one
     * for all channels (nrequant = 1) or one per column (nrequant = n). */
    const double *requant;
    int64_t nrequant;
    int32_t out_zero_point;
    /* OUT_DEQUANT: one weight scale and zero point per column (else one). */
    bool per_channel;
    /* The packing kernel reads B as [N, K] (a PyTorch Linear weight)
     * instead of [K, N]. The GEMM kernel ignores it. */
    bool b_transposed;
} cg_gemm_i8_desc;

/* Returns whether the target machine's CPU has AVX-512 VNNI, from its
 * feature string or, for a named CPU without one, a list of LLVM 19 CPU
 * names. */
bool cg_target_has_avx512_vnni(LLVMTargetMachineRef tm);

/* Returns the shape for the target: the VNNI path when allow_vnni is set
 * and the target has AVX-512 VNNI, else the portable path sized for the
 * target's vector width. */
cg_gemm_i8_shape cg_gemm_i8_shape_for(LLVMTargetMachineRef tm, bool allow_vnni);

/* Returns the bytes of packed B and the int32 count of the column sums
 * (N rounded up to whole panels). */
int64_t cg_gemm_i8_packed_bytes(const cg_gemm_i8_shape *s, int64_t k, int64_t n);
int64_t cg_gemm_i8_colsum_count(const cg_gemm_i8_shape *s, int64_t n);

/* Packs s8 weights into the layout above and stores Σ_k b[k,n] in colsum
 * (zeros in the padding columns). b is [K, N] with row stride ldb, or
 * [N, K] with row stride ldb when transposed (a PyTorch Linear weight). */
void cg_gemm_i8_pack_b(const cg_gemm_i8_shape *s, int64_t k, int64_t n, const int8_t *b, int64_t ldb,
                       bool transposed, int8_t *packed, int32_t *colsum);

/* Returns the number of tasks of the kernel for d: one per (MC rows,
 * NC columns) tile, or one per panel for the GEMV kernel. */
int64_t cg_gemm_i8_tasks(const cg_gemm_i8_desc *d);

/* Emits the kernel for d as a function void(ptr args, i64 begin, i64 end)
 * with internal linkage, built with cg_kernel_begin, and returns it. To
 * launch it from a graph entry point, store the slot of each
 * CG_GEMM_I8_ARG_* buffer in e->kslots[0 .. CG_GEMM_I8_NARGS) in index
 * order, set e->nkslots and call cg_launch. Returns NULL after reporting
 * an invalid descriptor through e->d. */
LLVMValueRef cg_emit_gemm_i8(cg_emit *e, const cg_gemm_i8_desc *d);

/* Indices into the args array of a packing kernel. */
enum {
    CG_PACK_I8_ARG_B,      /* s8 [K, N], or [N, K] when b_transposed, contiguous */
    CG_PACK_I8_ARG_PACKED, /* cg_gemm_i8_packed_bytes bytes */
    CG_PACK_I8_ARG_COLSUM, /* cg_gemm_i8_colsum_count int32 values */
    CG_PACK_I8_NARGS,
};

/* Emits a kernel void(ptr args, i64 begin, i64 end) that packs B for
 * d->shape exactly as cg_gemm_i8_pack_b does, one task per panel
 * (cg_gemm_i8_pack_tasks), for weights that are only known when the
 * entry point qc_bind runs. Launch it as described for cg_emit_gemm_i8.
 * Returns NULL after reporting an invalid descriptor through e->d. */
LLVMValueRef cg_emit_pack_b_i8(cg_emit *e, const cg_gemm_i8_desc *d);
int64_t cg_gemm_i8_pack_tasks(const cg_gemm_i8_desc *d);

/* ---- standalone modules (gemm_i8_module.c), for tests and benchmarks ---- */

typedef struct cg_gemm_i8_module cg_gemm_i8_module;

/* Sets descs[i].shape for the target in o (the host CPU when o or o->cpu
 * is NULL) and JIT-compiles one GEMM kernel and one packing kernel per
 * descriptor into one module.
 * Returns NULL after reporting an error through d. */
cg_gemm_i8_module *cg_gemm_i8_compile(const cg_options *o, bool allow_vnni, cg_gemm_i8_desc *descs, int count,
                                      ir_diag *d);
/* Returns the kernel of descs[index]; run it over cg_gemm_i8_tasks tasks. */
rt_task_fn cg_gemm_i8_kernel(const cg_gemm_i8_module *m, int index);
/* Returns the packing kernel of descs[index], built by cg_emit_pack_b_i8;
 * run it over cg_gemm_i8_pack_tasks tasks. */
rt_task_fn cg_gemm_i8_pack_kernel(const cg_gemm_i8_module *m, int index);
void cg_gemm_i8_module_free(cg_gemm_i8_module *m);

/* Sets desc->shape for the target in o and returns the optimized assembly
 * of its kernel (caller frees with free), or NULL after reporting an
 * error. */
char *cg_gemm_i8_emit_asm(const cg_options *o, bool allow_vnni, cg_gemm_i8_desc *desc, ir_diag *d);

/* Measures the int8 multiply-add throughput of AVX-512 VNNI in GOP/s
 * (one vpdpbusd on 512 bits = 64 multiply-adds = 128 ops) with a
 * generated loop of independent vpdpbusd on `threads` threads (0 = all
 * cores). Returns a negative value after reporting an error, including a
 * target without AVX-512 VNNI. */
double cg_measure_vnni_peak(const cg_options *o, int threads, ir_diag *d);

#endif
