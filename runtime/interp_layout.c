/* Interpreter kernels for the layout ops (reshape, transpose, slice, concat,
 * broadcast), which copy elements of any dtype unchanged, and for the
 * reductions over a list of axes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/interp_ops.h"

/* ---- layout ops ---- */

/* reshape{shape}: the same elements in the same row-major order under the
 * new shape. One dim of `shape` may be -1, which the result type resolves. */
int rt_interp_reshape(const rt_interp_call *call)
{
    memcpy(call->result->data, call->operands[0]->data, rt_tensor_nbytes(call->operands[0]));
    return 0;
}

/* transpose{perm}: output dim i is input dim perm[i], so
 * y[i_0, ..., i_{r-1}] = x[j] with j[perm[i]] = i_i. A negative perm entry
 * counts from the end. */
int rt_interp_transpose(const rt_interp_call *call)
{
    const rt_tensor *x = call->operands[0];
    rt_tensor *y = call->result;
    int nperm;
    const int64_t *perm = ir_attr_ints(call->value, "perm", &nperm);

    int64_t x_strides[RT_MAX_RANK];
    int64_t stride = 1;
    for (int i = x->rank - 1; i >= 0; i--) {
        x_strides[i] = stride;
        stride *= x->dims[i];
    }
    rt_interp_walk w;
    rt_interp_walk_start(&w, y->rank, y->dims);
    for (int i = 0; i < y->rank; i++)
        w.strides[0][i] = x_strides[rt_interp_axis(perm[i], x->rank)];

    size_t esize = ir_dtype_size(x->dtype);
    int64_t n = rt_tensor_numel(y);
    for (int64_t i = 0; i < n; i++, rt_interp_walk_next(&w))
        memcpy((char *)y->data + (size_t)i * esize, (const char *)x->data + (size_t)w.offset[0] * esize, esize);
    return 0;
}

/* Splits a shape around `axis` into the element counts before it (outer)
 * and after it (inner). */
static void split_at_axis(const int64_t *dims, int rank, int axis, int64_t *outer, int64_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < axis; i++)
        *outer *= dims[i];
    for (int i = axis + 1; i < rank; i++)
        *inner *= dims[i];
}

/* slice{axis, start, end}: the elements whose index along `axis` is in
 * [start, end), with the other dims kept whole. */
int rt_interp_slice(const rt_interp_call *call)
{
    const rt_tensor *x = call->operands[0];
    int axis = rt_interp_axis(ir_attr_int(call->value, "axis"), x->rank);
    int64_t start = ir_attr_int(call->value, "start"), end = ir_attr_int(call->value, "end");
    int64_t outer, inner;
    split_at_axis(x->dims, x->rank, axis, &outer, &inner);

    size_t esize = ir_dtype_size(x->dtype);
    size_t chunk = (size_t)((end - start) * inner) * esize;
    for (int64_t o = 0; o < outer; o++) {
        const char *src = (const char *)x->data + (size_t)((o * x->dims[axis] + start) * inner) * esize;
        memcpy((char *)call->result->data + (size_t)o * chunk, src, chunk);
    }
    return 0;
}

/* concat{axis}: the operands joined along `axis` in operand order. They
 * agree on every other dim. */
int rt_interp_concat(const rt_interp_call *call)
{
    rt_tensor *y = call->result;
    int axis = rt_interp_axis(ir_attr_int(call->value, "axis"), y->rank);
    int64_t outer, inner;
    split_at_axis(y->dims, y->rank, axis, &outer, &inner);

    size_t esize = ir_dtype_size(y->dtype);
    char *dst = y->data;
    for (int64_t o = 0; o < outer; o++) {
        for (int k = 0; k < call->value->nops; k++) {
            const rt_tensor *x = call->operands[k];
            size_t chunk = (size_t)(x->dims[axis] * inner) * esize;
            memcpy(dst, (const char *)x->data + (size_t)o * chunk, chunk);
            dst += chunk;
        }
    }
    return 0;
}

/* broadcast{shape}: numpy broadcast of x to `shape`: trailing dims align and
 * a missing or size-1 dim of x repeats. */
int rt_interp_broadcast(const rt_interp_call *call)
{
    const rt_tensor *x = call->operands[0];
    rt_tensor *y = call->result;
    rt_interp_walk w;
    rt_interp_walk_start(&w, y->rank, y->dims);
    rt_interp_broadcast_strides(x->dims, x->rank, y->rank, w.strides[0]);

    size_t esize = ir_dtype_size(x->dtype);
    int64_t n = rt_tensor_numel(y);
    for (int64_t i = 0; i < n; i++, rt_interp_walk_next(&w))
        memcpy((char *)y->data + (size_t)i * esize, (const char *)x->data + (size_t)w.offset[0] * esize, esize);
    return 0;
}

/* ---- reductions ---- */

/* reduce_sum, reduce_mean, reduce_max{axes, keepdims} over the listed axes,
 * where negative axes count from the end and keepdims leaves each reduced
 * dim as size 1. f32 only. Elements are visited in row-major input order.
 *   reduce_sum: a double sum, rounded to f32 once.
 *   reduce_mean: that double sum divided by the number of reduced elements,
 *     rounded to f32 once.
 *   reduce_max: in f32; NaN if any reduced element is NaN. */
int rt_interp_reduce(const rt_interp_call *call)
{
    const rt_tensor *x = call->operands[0];
    rt_tensor *y = call->result;
    ir_op op = call->value->op;
    if (x->dtype != IR_F32)
        return rt_interp_unsupported(call, x->dtype);

    int naxes;
    const int64_t *axes = ir_attr_ints(call->value, "axes", &naxes);
    bool reduced[RT_MAX_RANK] = {false};
    for (int i = 0; i < naxes; i++)
        reduced[rt_interp_axis(axes[i], x->rank)] = true;

    /* Walk x, with offset[0] the flat index of the output element that the
     * current x element reduces into. Dropping or keeping a size-1 dim does
     * not change that index, so keepdims needs no special case. */
    rt_interp_walk w;
    rt_interp_walk_start(&w, x->rank, x->dims);
    int64_t stride = 1, count = 1;
    for (int i = x->rank - 1; i >= 0; i--) {
        if (reduced[i]) {
            count *= x->dims[i];
        } else {
            w.strides[0][i] = stride;
            stride *= x->dims[i];
        }
    }

    int64_t n_out = rt_tensor_numel(y), n_in = rt_tensor_numel(x);
    const float *px = x->data;
    float *py = y->data;
    if (op == IR_OP_REDUCE_MAX) {
        for (int64_t i = 0; i < n_out; i++)
            py[i] = -INFINITY;
        for (int64_t i = 0; i < n_in; i++, rt_interp_walk_next(&w)) {
            /* Once the maximum is NaN, no comparison replaces it. */
            float *m = &py[w.offset[0]];
            if (isnan(px[i]) || px[i] > *m)
                *m = px[i];
        }
        return 0;
    }

    double *sums = calloc((size_t)(n_out ? n_out : 1), sizeof(double));
    if (!sums)
        return rt_interp_fail(call, "out of memory allocating %lld accumulators", (long long)n_out);
    for (int64_t i = 0; i < n_in; i++, rt_interp_walk_next(&w))
        sums[w.offset[0]] += px[i];
    for (int64_t i = 0; i < n_out; i++)
        py[i] = (float)(op == IR_OP_REDUCE_MEAN ? sums[i] / (double)count : sums[i]);
    free(sums);
    return 0;
}
