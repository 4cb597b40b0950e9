/* Internals shared by the int8 product emitters: the GEMM
 * (emit_gemm_i8.c), the GEMV for a few rows (emit_gemv_i8.c), their
 * multiply-add steps and output stages (emit_i8_output.c). gemm_i8.h has
 * the math, the packed layout and the calling convention. */
#ifndef QUADC_CODEGEN_GEMM_I8_INTERNAL_H
#define QUADC_CODEGEN_GEMM_I8_INTERNAL_H

#include "codegen/gemm_i8.h"
#include "codegen/quant_arith.h"

/* K bound that keeps Σ_k (a - za) · b inside int32: 255 · 128 · 65536 < 2^31. */
#define CG_I8_MAX_K 65536
#define CG_I8_MAX_MR 8
#define CG_I8_MAX_NVEC 4

/* Everything the emitters of one product share. */
typedef struct cg_i8_gen {
    cg_emit *e;
    const cg_gemm_i8_desc *d;
    const cg_gemm_i8_shape *s;
    /* Prefix of the helper functions and tables, unique in the module
     * because it contains the kernel number: the helpers depend on the
     * whole descriptor, so two products with equal names must not share
     * them. */
    char prefix[160];
    int64_t lda, ldc;
    int64_t groups;      /* full groups of 4 k */
    int ktail;           /* K % 4: bytes in the last, partial group */
    int64_t panels;
    int64_t panel_bytes; /* bytes of one packed panel */
    int32_t za;          /* zero point applied to u8 data: a_zero_point (+ 128 for s8) */
    LLVMTypeRef vi32;    /* <vw x i32> */
    LLVMTypeRef out_elem;
    /* Requantization constants: per-channel tables (NULL when one
     * multiplier covers all channels) or the shared multiplier. */
    LLVMValueRef m0_table, left_table, right_table;
    cg_qmul shared;
    bool any_left_shift;
} cg_i8_gen;

/* Checks d and fills gen for it, with helper names starting with `kind`
 * ("gemm_i8" or "gemv_i8"). Returns false after reporting an invalid
 * descriptor through e->d. */
bool cg_i8_gen_init(cg_i8_gen *gen, cg_emit *e, const cg_gemm_i8_desc *d, const char *kind);

/* Loads entry `index` of the args array `args` (a CG_GEMM_I8_ARG_*). */
LLVMValueRef cg_i8_arg(cg_emit *e, LLVMValueRef args, int index);
/* Returns an i1 vector with lanes [0, valid) set. */
LLVMValueRef cg_i8_lane_mask(cg_emit *e, int lanes, int valid);
LLVMValueRef cg_i8_min_i64(cg_emit *e, LLVMValueRef a, int64_t b);

/* ---- multiply-add of one group of 4 k ---- */

/* Returns the 4 activation bytes of group g of the row at arow as an i32,
 * flipped to u8 for s8 data. A partial group (the last one when K % 4 is
 * not 0) is read byte by byte, so A is never read past K. */
LLVMValueRef cg_i8_load_quad(cg_i8_gen *gen, LLVMValueRef arow, LLVMValueRef g, bool partial);
/* Returns vector j of group g of the panel at bp, as the multiply-add
 * step takes it. */
LLVMValueRef cg_i8_load_b(cg_i8_gen *gen, LLVMValueRef bp, LLVMValueRef g, int j);
/* Accumulator type of one vector of columns (see cg_i8_madd). */
LLVMTypeRef cg_i8_acc_type(cg_i8_gen *gen);
/* Returns acc plus the products of one group: the 4 bytes of quad
 * (broadcast) times the 4 k of each column of bvec. The VNNI path uses
 * vpdpbusd. The portable path keeps in acc <2vw x i32> sums of the k pairs
 * (0, 1) and (2, 3), added by cg_i8_acc_finish. */
LLVMValueRef cg_i8_madd(cg_i8_gen *gen, LLVMValueRef acc, LLVMValueRef quad, LLVMValueRef bvec);
/* Returns the <vw x i32> column sums of an accumulator. */
LLVMValueRef cg_i8_acc_finish(cg_i8_gen *gen, LLVMValueRef acc);

/* ---- the GEMV kernel (emit_gemv_i8.c) ---- */

/* Emits the kernel for a d of at most CG_GEMV_I8_MAX_M rows, with the
 * calling convention of cg_emit_gemm_i8, over cg_gemv_i8_tasks(d) tasks
 * (one per panel). Returns NULL after reporting. */
LLVMValueRef cg_emit_gemv_i8(cg_emit *e, const cg_gemm_i8_desc *d);
int64_t cg_gemv_i8_tasks(const cg_gemm_i8_desc *d);

/* ---- output stages ---- */

/* What the output stage of one kernel call reads: loaded once per call
 * from the args array, for rows [row, row + rows) and the panel at col. */
typedef struct cg_i8_out {
    LLVMValueRef c;   /* the output at the call's first row */
    LLVMValueRef row; /* its index, for the row sums */
    LLVMValueRef col; /* first column of the panel */
    LLVMValueRef colsum, scale, bias, rowsum, w_scale, w_zero; /* buffers */
    LLVMValueRef x_scale; /* f32 s_x, for OUT_DEQUANT */
    LLVMValueRef x_zero;  /* i32 z_x, for OUT_DEQUANT */
} cg_i8_out;

/* Loads the buffers and scalars the output stage of gen->d needs. */
void cg_i8_out_begin(cg_i8_gen *gen, cg_i8_out *out, LLVMValueRef args, LLVMValueRef c, LLVMValueRef row,
                     LLVMValueRef col);
/* Applies the zero-point correction and the output stage to the <vw x i32>
 * sums of row r (relative to out->row), vector j, and stores them. A
 * non-NULL mask selects the valid lanes of an edge vector. */
void cg_i8_out_store(cg_i8_gen *gen, const cg_i8_out *out, LLVMValueRef sums, int r, int j, LLVMValueRef mask);

#endif
