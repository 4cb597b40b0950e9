/* Host tensors: a dtype, a row-major shape and an owned buffer. Used for
 * weights, inputs and outputs by the loaders, the interpreter and the JIT. */
#ifndef QUADC_RUNTIME_TENSOR_H
#define QUADC_RUNTIME_TENSOR_H

#include <stdbool.h>
#include <stdint.h>

#include "ir/dtype.h"

#define RT_MAX_RANK 8

typedef struct rt_tensor {
    ir_dtype dtype;
    int rank;
    int64_t dims[RT_MAX_RANK];
    void *data; /* 64-byte aligned, owned by the tensor */
} rt_tensor;

/* Allocates `bytes` (rounded up to a multiple of 64) of zero-filled,
 * 64-byte aligned memory for tensor data, to release with free(). Large
 * buffers start on a 2 MB boundary and ask for transparent huge pages,
 * because kernels that stream them run faster on huge pages. */
void *rt_alloc_data(size_t bytes);
/* Allocates a zero-filled tensor; returns NULL when out of memory or when
 * the byte count would overflow. */
rt_tensor *rt_tensor_new(ir_dtype dtype, int rank, const int64_t *dims);
void rt_tensor_free(rt_tensor *t);
int64_t rt_tensor_numel(const rt_tensor *t);
size_t rt_tensor_nbytes(const rt_tensor *t);
/* Converts any floating tensor to a new f32 tensor (f16 and bf16 widen). */
rt_tensor *rt_tensor_to_f32(const rt_tensor *t);
/* Converts a floating tensor (f32, f16 or bf16) to a new tensor of the
 * floating dtype `to`, rounding to nearest even when narrowing. Returns
 * NULL when either dtype is not floating or when out of memory. */
rt_tensor *rt_tensor_to_float_dtype(const rt_tensor *t, ir_dtype to);

/* A named set of tensors (model weights), kept in insertion order. */
typedef struct rt_weights {
    int count;
    int cap;
    char **names;
    rt_tensor **tensors;
    /* Free-form string metadata, e.g. hyperparameters from safetensors. */
    int nmeta;
    char **meta_keys;
    char **meta_values;
} rt_weights;

rt_weights *rt_weights_new(void);
void rt_weights_free(rt_weights *w);
/* Takes ownership of t; replaces an existing tensor of the same name. */
int rt_weights_set(rt_weights *w, const char *name, rt_tensor *t);
rt_tensor *rt_weights_get(const rt_weights *w, const char *name);
int rt_weights_set_meta(rt_weights *w, const char *key, const char *value);
const char *rt_weights_get_meta(const rt_weights *w, const char *key);

float rt_f16_to_f32(uint16_t h);
uint16_t rt_f32_to_f16(float f);
float rt_bf16_to_f32(uint16_t h);
uint16_t rt_f32_to_bf16(float f);

#endif
