/* The descriptor that every quadc bundle object exports as <prefix>_bundle,
 * and the symbols of the stub object that `quadc build -o` links into an
 * executable. The layout matches what codegen/aot_entry.c and
 * codegen/aot.c generate for ABI version 1 (CG_AOT_ABI_VERSION). */
#ifndef QUADC_AOT_BUNDLE_H
#define QUADC_AOT_BUNDLE_H

#include <stdint.h>

/* Element types, numbered as ir_dtype in ir/dtype.h. */
enum {
    QC_BUNDLE_F32 = 0,
    QC_BUNDLE_F16 = 1,
    QC_BUNDLE_BF16 = 2,
    QC_BUNDLE_I8 = 3,
    QC_BUNDLE_U8 = 4,
    QC_BUNDLE_I32 = 5,
    QC_BUNDLE_I64 = 6,
};

/* Status codes of init and run, as in the generated header. */
enum {
    QC_BUNDLE_STATUS_OK = 0,
    QC_BUNDLE_STATUS_INDEX_RANGE = 1,
    QC_BUNDLE_STATUS_INVALID_ARGUMENT = 100,
    QC_BUNDLE_STATUS_OUT_OF_MEMORY = 101,
    QC_BUNDLE_STATUS_WEIGHTS_READ = 102,
    QC_BUNDLE_STATUS_WEIGHTS_MISMATCH = 103,
};

typedef struct qc_bundle_tensor {
    const char *name;    /* the graph value's name */
    int32_t dtype;       /* QC_BUNDLE_*; float dtypes are passed as f32 */
    int32_t rank;
    const int64_t *dims; /* rank entries */
    int64_t bytes;       /* buffer size the entry points read or write */
} qc_bundle_tensor;

typedef struct qc_bundle {
    int32_t abi_version;
    int32_t ninputs;
    int32_t noutputs;
    int32_t weights_embedded;
    int32_t threads_max; /* largest nthreads init accepts */
    const qc_bundle_tensor *inputs;
    const qc_bundle_tensor *outputs;
    int32_t (*init)(void **ctx, const char *weights_path, int32_t nthreads);
    int32_t (*run)(void *ctx, const void *const *inputs, void *const *outputs);
    void (*free)(void *ctx);
    const char *prefix;
} qc_bundle;

/* Defined by the stub object of `quadc build -o`. */
extern const qc_bundle *const quadc_exe_bundle;
extern const char quadc_exe_encoder_json[];
extern const uint64_t quadc_exe_encoder_json_size;
extern const char quadc_exe_vocab_bpe[];
extern const uint64_t quadc_exe_vocab_bpe_size;
/* The weights file written next to the executable's bundle, or NULL when
 * the weights are embedded. */
extern const char *const quadc_exe_weights_path;

#endif
