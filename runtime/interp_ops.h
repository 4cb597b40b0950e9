/* Internal interface between the interpreter driver (runtime/interp.c) and
 * its op kernels. The driver allocates the result tensor with the value's
 * shape before it calls a kernel, so a kernel only fills it in. */
#ifndef QUADC_RUNTIME_INTERP_OPS_H
#define QUADC_RUNTIME_INTERP_OPS_H

#include "ir/ir.h"
#include "runtime/tensor.h"

/* One kernel invocation. */
typedef struct rt_interp_call {
    const ir_value *value;             /* the value being computed */
    const rt_tensor *const *operands;  /* one tensor per operand, in order */
    rt_tensor *result;                 /* zero-filled, shaped like value */
    ir_diag *diag;
} rt_interp_call;

/* Reports "<op> %<value>: <message>" at the value's location and returns -1. */
int rt_interp_fail(const rt_interp_call *call, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Reports that the op does not support `dtype` and returns -1. */
int rt_interp_unsupported(const rt_interp_call *call, ir_dtype dtype);
/* Formats the multi-index of row-major element `flat` of a tensor with the
 * given dims into buf, e.g. "[1,3]", and returns buf. */
char *rt_interp_index_str(const int64_t *dims, int rank, int64_t flat, char *buf, int cap);
/* Fills strides[0 .. out_rank) with the element strides for reading a tensor
 * of shape dims[0 .. rank) broadcast to an output of rank out_rank. Trailing
 * dims align as in numpy, and a missing or size-1 dim gets stride 0. */
void rt_interp_broadcast_strides(const int64_t *dims, int rank, int out_rank, int64_t *strides);
/* Row-major walk over the elements of an output shape that keeps the
 * matching element offsets of up to two source tensors, each read with its
 * own strides (0 along a broadcast dim). Set strides[] after start. */
typedef struct rt_interp_walk {
    int rank;
    const int64_t *dims;
    int64_t index[RT_MAX_RANK];
    int64_t strides[2][RT_MAX_RANK];
    int64_t offset[2];
} rt_interp_walk;

void rt_interp_walk_start(rt_interp_walk *w, int rank, const int64_t *dims);
/* Moves to the next output element, updating index[] and offset[]. */
void rt_interp_walk_next(rt_interp_walk *w);

/* Resolves a possibly negative axis against rank. */
int rt_interp_axis(int64_t axis, int rank);

/* Element access by flat index. rt_interp_load_int reads integer tensors
 * only, and rt_interp_store rounds and saturates as cast does. */
int64_t rt_interp_load_int(const rt_tensor *t, int64_t i);
double rt_interp_load(const rt_tensor *t, int64_t i);
void rt_interp_store(rt_tensor *t, int64_t i, double x);

/* Kernels, one per op or family of ops. Each returns 0, or -1 after
 * reporting. The contracts are in the comments above the definitions. */
int rt_interp_const(const rt_interp_call *call);
int rt_interp_binary(const rt_interp_call *call);
int rt_interp_unary(const rt_interp_call *call);
int rt_interp_cast(const rt_interp_call *call);

int rt_interp_matmul(const rt_interp_call *call);
int rt_interp_linear(const rt_interp_call *call);
int rt_interp_layernorm(const rt_interp_call *call);
int rt_interp_softmax(const rt_interp_call *call);
int rt_interp_causal_mask(const rt_interp_call *call);
/* Key-value cache writes, in runtime/interp_kv.c. */
int rt_interp_cache_write(const rt_interp_call *call);
/* Copies the result of cache_write value v back into the caller's input
 * tensor that its cache operand was loaded from, because the interpreter
 * runs on copies of its inputs. Does nothing when that operand is not an
 * input. Returns 0, or -1 after reporting. */
int rt_interp_store_cache(const ir_graph *g, const ir_value *v, const rt_tensor *result,
                          const rt_weights *inputs, ir_diag *d);
int rt_interp_embedding(const rt_interp_call *call);
int rt_interp_cross_entropy(const rt_interp_call *call);

int rt_interp_reshape(const rt_interp_call *call);
int rt_interp_transpose(const rt_interp_call *call);
int rt_interp_slice(const rt_interp_call *call);
int rt_interp_concat(const rt_interp_call *call);
int rt_interp_broadcast(const rt_interp_call *call);
int rt_interp_reduce(const rt_interp_call *call);

/* Backward ops, in runtime/interp_grad.c. */
int rt_interp_grad_pointwise(const rt_interp_call *call);
int rt_interp_grad_minmax(const rt_interp_call *call);
int rt_interp_grad_causal_mask(const rt_interp_call *call);
int rt_interp_grad_layernorm(const rt_interp_call *call);
int rt_interp_grad_layernorm_weight(const rt_interp_call *call);
int rt_interp_grad_softmax(const rt_interp_call *call);
int rt_interp_grad_embedding(const rt_interp_call *call);
int rt_interp_grad_cross_entropy(const rt_interp_call *call);

/* Quantization ops, in runtime/interp_quant.c. */
int rt_interp_fake_quant(const rt_interp_call *call);
int rt_interp_grad_fake_quant(const rt_interp_call *call);
int rt_interp_qa_scale(const rt_interp_call *call);

/* fused.elementwise, fused.linear and fused.matmul, in
 * runtime/interp_fused.c. */
int rt_interp_fused_elementwise(const rt_interp_call *call);
int rt_interp_fused_product(const rt_interp_call *call);

/* The integer ops (q.linear, q.quantize, q.matmul, q.requantize,
 * q.dequantize), in runtime/interp_int8.c. */
int rt_interp_qlinear(const rt_interp_call *call);
int rt_interp_qquantize(const rt_interp_call *call);
int rt_interp_qmatmul(const rt_interp_call *call);
int rt_interp_qrequantize(const rt_interp_call *call);
int rt_interp_qdequantize(const rt_interp_call *call);

#endif
