/* Hugging Face safetensors reader and writer, GPT-2 tensor-name
 * normalization, and the atomic file output that every weight-file writer
 * uses.
 *
 * A safetensors file is an unsigned 64-bit little-endian header length N,
 * N bytes of a UTF-8 JSON object, and then the raw row-major tensor bytes.
 * Each JSON key names a tensor and maps to {"dtype", "shape",
 * "data_offsets": [begin, end]}, with offsets relative to the first byte
 * after the header. The optional key "__metadata__" maps strings to strings.
 *
 * Every function reports failures through the ir_diag as
 * "path: error: message" naming the file, the tensor and the offending
 * values, and returns NULL or -1. None of them prints or exits. */
#ifndef QUADC_RUNTIME_SAFETENSORS_H
#define QUADC_RUNTIME_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ir/diag.h"
#include "runtime/tensor.h"

/* Largest accepted JSON header, the same limit as MAX_HEADER_SIZE in the
 * Hugging Face safetensors library (safetensors/src/tensor.rs), so a corrupt
 * length cannot make the reader allocate gigabytes before it fails. */
#define RT_SAFETENSORS_MAX_HEADER 100000000ull

/* Reads a safetensors file into a new weight set. Tensors keep their file
 * dtype (F32, F16, BF16, I8, U8, I32 or I64; use rt_tensor_to_f32 to widen)
 * and the order of their keys in the header, and "__metadata__" becomes the
 * weight set's metadata. Tensor bytes are read straight into the tensors, so
 * the file is never held in memory twice.
 *
 * Rejects a file shorter than 8 bytes, a header length past the end of the
 * file or above RT_SAFETENSORS_MAX_HEADER, invalid JSON, a header that is
 * not an object, duplicate names, entries without dtype, shape or
 * data_offsets, unsupported dtypes, shape dimensions that are not
 * non-negative integers, ranks above RT_MAX_RANK, offsets past the data or
 * with begin > end, overlapping tensors, byte counts that differ from the
 * dtype size times the element count, and non-string metadata values.
 * Gaps between tensors and bytes after the last tensor are accepted, though
 * the Hugging Face library rejects both. Returns NULL on error. */
rt_weights *rt_safetensors_read(const char *path, ir_diag *d);

/* Writes w to path as safetensors. The header lists "__metadata__" first
 * (omitted when w has no metadata) and then the tensors in insertion order.
 * Their data is packed back to back in that order, and the header is padded
 * with spaces to a multiple of 8 bytes. Reading a file written here and
 * writing it again gives identical bytes. The file is written atomically
 * (see rt_atomic_file), so on failure path is left untouched.
 * Returns 0, or -1 on error. */
int rt_safetensors_write(const char *path, const rt_weights *w, ir_diag *d);

/* Renames and drops tensors so that a Hugging Face GPT-2 weight set uses the
 * plain names ("wte.weight", "h.0.ln_1.weight", ...) that the rest of quadc
 * expects:
 *   - strips a "transformer." prefix from every name;
 *   - drops the "h.{i}.attn.bias" and "h.{i}.attn.masked_bias" buffers,
 *     which are causal-mask constants and not parameters;
 *   - drops "lm_head.weight" when it equals "wte.weight" in dtype, shape
 *     and bytes (GPT-2 ties the LM head to the token embedding).
 * Reports an error and returns -1 when lm_head.weight differs from
 * wte.weight (quadc supports only tied LM heads), when lm_head.weight is
 * present without wte.weight, or when stripping the prefix makes two names
 * equal. `path` names the source file in diagnostics and may be NULL.
 * Returns 0 on success. On error, w may be partly renamed. */
int rt_gpt2_canonicalize_names(rt_weights *w, ir_diag *d, const char *path);

/* Output file that appears at its final path only when complete. Data goes
 * to a temporary file in the same directory, which commit flushes, fsyncs
 * and renames over the path. Any failure removes the temporary file, so
 * readers never see a partial file. */
typedef struct rt_atomic_file {
    const char *path;   /* final path, borrowed */
    char *temp_path;    /* owned */
    FILE *stream;
    ir_diag *diag;
    bool failed;        /* a write failed and was reported */
} rt_atomic_file;

/* Creates the temporary file. Returns 0, or -1 after reporting an error. */
int rt_atomic_file_open(rt_atomic_file *f, const char *path, ir_diag *d);
/* Appends size bytes. The first failure is reported, and later writes do
 * nothing. Returns 0, or -1 once any write has failed. */
int rt_atomic_file_write(rt_atomic_file *f, const void *data, size_t size);
/* Flushes, fsyncs and renames the temporary file over the final path, or
 * removes it when a write failed. Returns 0, or -1 after reporting. */
int rt_atomic_file_commit(rt_atomic_file *f);
/* Closes and removes the temporary file without reporting anything. */
void rt_atomic_file_abort(rt_atomic_file *f);

/* Reads exactly size bytes at offset from fd, retrying short reads.
 * Returns 0, -1 with errno set on a read error, or 1 at end of file. */
int rt_read_exact_at(int fd, void *buffer, size_t size, uint64_t offset);

#endif
