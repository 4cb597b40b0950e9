/* Ahead-of-time compilation: writes a graph as a bundle of an object file,
 * a C header and optionally a weights file. The object contains every kernel,
 * the thread fork-join runtime and the entry points <prefix>_init,
 * <prefix>_run and <prefix>_free, and needs only libc, libm and libpthread
 * at run time. docs/aot.md describes the layout. */
#ifndef QUADC_CODEGEN_AOT_H
#define QUADC_CODEGEN_AOT_H

#include <stdbool.h>
#include <stdint.h>

#include "ir/diag.h"
#include "ir/ir.h"
#include "runtime/tensor.h"

/* Version of the weights blob layout and of the qc_bundle descriptor
 * (aot/bundle.h); both change together. */
#define CG_AOT_ABI_VERSION 1
/* Bytes of the weights blob header; tensors start at this offset. */
#define CG_AOT_BLOB_HEADER_BYTES 64
/* Alignment of every tensor in the weights blob and every scratch buffer. */
#define CG_AOT_ALIGN 64

typedef struct cg_aot_options {
    const char *prefix; /* C identifier that starts every public symbol */
    const char *triple; /* LLVM target triple; NULL = the host's */
    const char *cpu;    /* LLVM CPU name; NULL = the host CPU and its features */
    int opt_level;      /* 0-3 */
    int threads_max;    /* largest thread count <prefix>_init accepts, >= 1 */
    bool embed_weights; /* weights in the object, else in a separate file */
    const char *source; /* model file named in the header comment, or NULL */
    const char *weights_source; /* weights file named in mismatch errors, or NULL */
} cg_aot_options;

/* Returns prefix "model", host triple and CPU, opt_level 3, threads_max 64,
 * embedded weights. */
cg_aot_options cg_aot_default_options(void);

/* The bundle layout planned for a graph: buffer slots, scratch offsets,
 * weight offsets and the public names of inputs and outputs. */
typedef struct cg_aot_layout cg_aot_layout;

/* Plans the bundle of g for the target in o and checks that the weights
 * match the graph: every live param must have a tensor of the same shape
 * and a compatible dtype, and no tensor may be left over. Errors name the
 * tensor. Returns NULL after reporting through d. */
cg_aot_layout *cg_aot_plan(const ir_graph *g, const rt_weights *w, const cg_aot_options *o, ir_diag *d);
void cg_aot_layout_free(cg_aot_layout *l);

/* Byte counts of the planned bundle. */
int64_t cg_aot_weights_bytes(const cg_aot_layout *l);
int64_t cg_aot_scratch_bytes(const cg_aot_layout *l);

/* Writes the object file through LLVMTargetMachineEmitToFile to a
 * temporary file next to obj_path, renamed over obj_path on success and
 * removed on every failure. Returns 0, or -1 after reporting. */
int cg_aot_write_object(const cg_aot_layout *l, const char *obj_path, ir_diag *d);
/* Writes the header that documents the entry points and buffer sizes,
 * atomically. Returns 0, or -1 after reporting. */
int cg_aot_write_header(const cg_aot_layout *l, const char *header_path, ir_diag *d);
/* Writes the weights blob that <prefix>_init loads, atomically. Returns 0,
 * or -1 after reporting. */
int cg_aot_write_weights(const cg_aot_layout *l, const char *weights_path, ir_diag *d);

/* Writes the small object that a quadc-built executable links with the
 * bundle: the symbol quadc_exe_bundle pointing at <prefix>_bundle, the
 * tokenizer files and the default weights path (NULL for none). The
 * tokenizer texts are copied into the object as they are. Returns 0, or
 * -1 after reporting. */
int cg_aot_write_exe_stub(const cg_aot_layout *l, const char *obj_path, const char *encoder_json,
                          size_t encoder_json_len, const char *vocab_bpe, size_t vocab_bpe_len,
                          const char *weights_path, ir_diag *d);

/* Returns whether the target of the layout is the host triple, so an
 * executable linked from its object runs here. */
bool cg_aot_targets_host(const cg_aot_layout *l);

#endif
