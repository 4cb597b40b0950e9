/* The interpreter driver: binds params and inputs, runs values in id order,
 * widens f16/bf16 operands of arithmetic ops to f32, and frees each tensor
 * after its last use. Assumes a graph that passes ir_verify: types are
 * consistent and operands refer to earlier values. */
#include "runtime/interp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/interp_ops.h"

_Static_assert(IR_MAX_RANK <= RT_MAX_RANK, "every IR type must fit in an rt_tensor");

/* ---- helpers shared with the kernels ---- */

int rt_interp_fail(const rt_interp_call *call, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    ir_diag_error(call->diag, call->value->loc, "%s %%%s: %s", ir_op_get(call->value->op)->name,
                  call->value->name, message);
    return -1;
}

int rt_interp_unsupported(const rt_interp_call *call, ir_dtype dtype)
{
    return rt_interp_fail(call, "the interpreter does not support dtype %s for this op", ir_dtype_name(dtype));
}

char *rt_interp_index_str(const int64_t *dims, int rank, int64_t flat, char *buf, int cap)
{
    int64_t index[RT_MAX_RANK];
    for (int i = rank - 1; i >= 0; i--) {
        index[i] = dims[i] ? flat % dims[i] : 0;
        flat = dims[i] ? flat / dims[i] : 0;
    }
    int n = snprintf(buf, (size_t)cap, "[");
    for (int i = 0; i < rank && n < cap; i++)
        n += snprintf(buf + n, (size_t)(cap - n), i ? ",%lld" : "%lld", (long long)index[i]);
    if (n < cap)
        snprintf(buf + n, (size_t)(cap - n), "]");
    return buf;
}

void rt_interp_broadcast_strides(const int64_t *dims, int rank, int out_rank, int64_t *strides)
{
    int64_t stride = 1;
    for (int i = out_rank - 1; i >= 0; i--) {
        int src = i - (out_rank - rank);
        if (src < 0 || dims[src] == 1) {
            strides[i] = 0;
        } else {
            strides[i] = stride;
        }
        if (src >= 0)
            stride *= dims[src];
    }
}

void rt_interp_walk_start(rt_interp_walk *w, int rank, const int64_t *dims)
{
    memset(w, 0, sizeof *w);
    w->rank = rank;
    w->dims = dims;
}

void rt_interp_walk_next(rt_interp_walk *w)
{
    for (int i = w->rank - 1; i >= 0; i--) {
        w->index[i]++;
        w->offset[0] += w->strides[0][i];
        w->offset[1] += w->strides[1][i];
        if (w->index[i] < w->dims[i])
            return;
        w->offset[0] -= w->strides[0][i] * w->dims[i];
        w->offset[1] -= w->strides[1][i] * w->dims[i];
        w->index[i] = 0;
    }
}

int rt_interp_axis(int64_t axis, int rank)
{
    return (int)(axis < 0 ? axis + rank : axis);
}

/* ---- binding params and inputs ---- */

static void type_str_of(const rt_tensor *t, char *buf, int cap)
{
    ir_type type = {t->dtype, t->rank, {0}};
    memcpy(type.dims, t->dims, sizeof(int64_t) * (size_t)t->rank);
    ir_type_str(&type, buf, cap);
}

static bool same_shape(const rt_tensor *t, const ir_type *type)
{
    if (t->rank != type->rank)
        return false;
    for (int i = 0; i < t->rank; i++)
        if (t->dims[i] != type->dims[i])
            return false;
    return true;
}

static bool is_float(ir_dtype dtype)
{
    return dtype == IR_F32 || dtype == IR_F16 || dtype == IR_BF16;
}

/* Returns a new tensor with t's elements converted to the floating dtype
 * `to`, rounding to nearest even. */
static rt_tensor *convert_float(const rt_tensor *t, ir_dtype to)
{
    rt_tensor *out = rt_tensor_new(to, t->rank, t->dims);
    if (!out)
        return NULL;
    int64_t n = rt_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        rt_interp_store(out, i, rt_interp_load(t, i));
    return out;
}

static rt_tensor *copy_tensor(const rt_tensor *t)
{
    rt_tensor *out = rt_tensor_new(t->dtype, t->rank, t->dims);
    if (out)
        memcpy(out->data, t->data, rt_tensor_nbytes(t));
    return out;
}

static int out_of_memory(const ir_value *v, ir_diag *d)
{
    char type[160];
    ir_diag_error(d, v->loc, "%s %%%s: out of memory allocating %s", ir_op_get(v->op)->name, v->name,
                  ir_type_str(&v->type, type, sizeof type));
    return -1;
}

/* Copies weight `v->name` into a new tensor of the param's type. A floating
 * weight of another floating dtype is converted, and any other must match. */
static int load_param(const ir_value *v, const rt_weights *weights, rt_tensor **result, ir_diag *d)
{
    char want[160], have[160];
    ir_type_str(&v->type, want, sizeof want);
    const rt_tensor *w = weights ? rt_weights_get(weights, v->name) : NULL;
    if (!w) {
        ir_diag_error(d, v->loc, "missing weight '%s' for parameter @%s of type %s", v->name, v->name, want);
        return -1;
    }
    type_str_of(w, have, sizeof have);
    if (!same_shape(w, &v->type)) {
        ir_diag_error(d, v->loc, "weight '%s' has shape %s but parameter @%s has type %s", v->name, have, v->name,
                      want);
        return -1;
    }
    bool convertible = is_float(w->dtype) && is_float(v->type.dtype);
    if (w->dtype != v->type.dtype && !convertible) {
        ir_diag_error(d, v->loc, "weight '%s' is %s but parameter @%s is %s; only a floating weight converts "
                      "to another dtype", v->name, have, v->name, want);
        return -1;
    }
    *result = w->dtype == v->type.dtype ? copy_tensor(w) : convert_float(w, v->type.dtype);
    return *result ? 0 : out_of_memory(v, d);
}

/* Copies input `v->name`, whose dtype and shape must equal the value's. */
static int load_input(const ir_value *v, const rt_weights *inputs, rt_tensor **result, ir_diag *d)
{
    char want[160], have[160];
    ir_type_str(&v->type, want, sizeof want);
    const rt_tensor *t = inputs ? rt_weights_get(inputs, v->name) : NULL;
    if (!t) {
        ir_diag_error(d, v->loc, "missing input '%s' of type %s", v->name, want);
        return -1;
    }
    if (t->dtype != v->type.dtype || !same_shape(t, &v->type)) {
        ir_diag_error(d, v->loc, "input '%s' is %s but the graph expects %s", v->name,
                      (type_str_of(t, have, sizeof have), have), want);
        return -1;
    }
    *result = copy_tensor(t);
    return *result ? 0 : out_of_memory(v, d);
}

/* ---- running one value ---- */

/* Layout ops, cast and leaves keep f16/bf16 elements as they are, but every
 * other op computes in f32. */
static bool computes_in_f32(ir_op op)
{
    switch (op) {
    case IR_OP_PARAM:
    case IR_OP_INPUT:
    case IR_OP_CONST:
    case IR_OP_CAST:
    case IR_OP_RESHAPE:
    case IR_OP_TRANSPOSE:
    case IR_OP_SLICE:
    case IR_OP_CONCAT:
    case IR_OP_BROADCAST:
    case IR_OP_EMBEDDING:
    case IR_OP_CACHE_WRITE:
        return false;
    default:
        return true;
    }
}

/* The switch has no default case, so -Wswitch flags an op without a kernel. */
static int dispatch(const rt_interp_call *call)
{
    switch (call->value->op) {
    case IR_OP_PARAM:
    case IR_OP_INPUT:
        break; /* bound by the driver */
    case IR_OP_CONST: return rt_interp_const(call);
    case IR_OP_ADD:
    case IR_OP_SUB:
    case IR_OP_MUL:
    case IR_OP_DIV:
    case IR_OP_MAXIMUM:
    case IR_OP_MINIMUM: return rt_interp_binary(call);
    case IR_OP_NEG:
    case IR_OP_EXP:
    case IR_OP_LOG:
    case IR_OP_SQRT:
    case IR_OP_RSQRT:
    case IR_OP_TANH:
    case IR_OP_GELU:
    case IR_OP_RELU:
    case IR_OP_ABS:
    case IR_OP_SCALE: return rt_interp_unary(call);
    case IR_OP_CAST: return rt_interp_cast(call);
    case IR_OP_MATMUL: return rt_interp_matmul(call);
    case IR_OP_LINEAR: return rt_interp_linear(call);
    case IR_OP_LAYERNORM: return rt_interp_layernorm(call);
    case IR_OP_SOFTMAX: return rt_interp_softmax(call);
    case IR_OP_CAUSAL_MASK: return rt_interp_causal_mask(call);
    case IR_OP_CACHE_WRITE: return rt_interp_cache_write(call);
    case IR_OP_RESHAPE: return rt_interp_reshape(call);
    case IR_OP_TRANSPOSE: return rt_interp_transpose(call);
    case IR_OP_SLICE: return rt_interp_slice(call);
    case IR_OP_CONCAT: return rt_interp_concat(call);
    case IR_OP_BROADCAST: return rt_interp_broadcast(call);
    case IR_OP_REDUCE_SUM:
    case IR_OP_REDUCE_MEAN:
    case IR_OP_REDUCE_MAX: return rt_interp_reduce(call);
    case IR_OP_EMBEDDING: return rt_interp_embedding(call);
    case IR_OP_CROSS_ENTROPY: return rt_interp_cross_entropy(call);
    case IR_OP_GRAD_GELU:
    case IR_OP_GRAD_RELU:
    case IR_OP_GRAD_ABS: return rt_interp_grad_pointwise(call);
    case IR_OP_GRAD_MAXIMUM:
    case IR_OP_GRAD_MINIMUM: return rt_interp_grad_minmax(call);
    case IR_OP_GRAD_LAYERNORM: return rt_interp_grad_layernorm(call);
    case IR_OP_GRAD_LAYERNORM_WEIGHT: return rt_interp_grad_layernorm_weight(call);
    case IR_OP_GRAD_SOFTMAX: return rt_interp_grad_softmax(call);
    case IR_OP_GRAD_CAUSAL_MASK: return rt_interp_grad_causal_mask(call);
    case IR_OP_GRAD_EMBEDDING: return rt_interp_grad_embedding(call);
    case IR_OP_GRAD_CROSS_ENTROPY: return rt_interp_grad_cross_entropy(call);
    case IR_OP_FQ_ACT:
    case IR_OP_FQ_WEIGHT: return rt_interp_fake_quant(call);
    case IR_OP_GRAD_FQ_INPUT:
    case IR_OP_GRAD_FQ_SCALE:
    case IR_OP_GRAD_FQ_ZERO_POINT: return rt_interp_grad_fake_quant(call);
    case IR_OP_QA_SCALE: return rt_interp_qa_scale(call);
    case IR_OP_FUSED_ELEMENTWISE: return rt_interp_fused_elementwise(call);
    case IR_OP_FUSED_LINEAR:
    case IR_OP_FUSED_MATMUL: return rt_interp_fused_product(call);
    case IR_OP_Q_LINEAR: return rt_interp_qlinear(call);
    case IR_OP_Q_QUANTIZE: return rt_interp_qquantize(call);
    case IR_OP_Q_MATMUL: return rt_interp_qmatmul(call);
    case IR_OP_Q_REQUANTIZE: return rt_interp_qrequantize(call);
    case IR_OP_Q_DEQUANTIZE: return rt_interp_qdequantize(call);
    case IR_OP_COUNT:
        break;
    }
    return rt_interp_fail(call, "the interpreter has no kernel for this op");
}

/* Computes non-leaf value v (or a const) from the already computed operand
 * tensors in values[]. */
static int compute_value(const ir_value *v, rt_tensor *const *values, rt_tensor **result, ir_diag *d)
{
    const rt_tensor *operands[64];
    rt_tensor *widened[64] = {NULL};
    rt_interp_call call = {v, operands, NULL, d};
    if (v->nops > 64)
        return rt_interp_fail(&call, "%d operands; the interpreter supports at most 64", v->nops);

    bool in_f32 = computes_in_f32(v->op);
    int rc = 0;
    for (int k = 0; k < v->nops && rc == 0; k++) {
        int operand = v->ops[k];
        operands[k] = operand >= 0 && operand < v->id ? values[operand] : NULL;
        if (!operands[k]) {
            rc = rt_interp_fail(&call, "operand %d refers to value id %d, which is not an earlier value; run "
                                "ir_verify on the graph", k, operand);
        } else if (in_f32 && (operands[k]->dtype == IR_F16 || operands[k]->dtype == IR_BF16)) {
            widened[k] = convert_float(operands[k], IR_F32);
            operands[k] = widened[k];
            if (!widened[k])
                rc = out_of_memory(v, d);
        }
    }

    /* An f16 or bf16 result of an arithmetic op is computed in f32 and
     * rounded to its dtype once, at the end. */
    bool narrow = in_f32 && (v->type.dtype == IR_F16 || v->type.dtype == IR_BF16);
    rt_tensor *computed = NULL;
    if (rc == 0) {
        computed = rt_tensor_new(narrow ? IR_F32 : v->type.dtype, v->type.rank, v->type.dims);
        if (!computed)
            rc = out_of_memory(v, d);
    }
    if (rc == 0) {
        call.result = computed;
        rc = dispatch(&call);
    }
    if (rc == 0 && narrow) {
        rt_tensor *rounded = convert_float(computed, v->type.dtype);
        rt_tensor_free(computed);
        computed = rounded;
        if (!computed)
            rc = out_of_memory(v, d);
    }

    for (int k = 0; k < v->nops; k++)
        rt_tensor_free(widened[k]);
    if (rc != 0) {
        rt_tensor_free(computed);
        return -1;
    }
    *result = computed;
    return 0;
}

/* ---- running the graph ---- */

/* Runs every value of g in id order into values[] (calloc'd by the caller).
 * Unless keep_all, a tensor is freed once its use count drops to zero, so on
 * success only the graph outputs remain. On failure every tensor is freed. */
static int run_values(const ir_graph *g, const rt_weights *weights, const rt_weights *inputs, bool keep_all,
                      rt_tensor **values, ir_diag *d)
{
    int *uses = ir_use_counts(g);
    if (!uses) {
        ir_diag_error(d, (ir_loc){0}, "out of memory counting the uses of %d values", g->nvalues);
        return -1;
    }
    int rc = 0;
    for (int id = 0; id < g->nvalues && rc == 0; id++) {
        const ir_value *v = g->values[id];
        if (v->op == IR_OP_PARAM)
            rc = load_param(v, weights, &values[id], d);
        else if (v->op == IR_OP_INPUT)
            rc = load_input(v, inputs, &values[id], d);
        else
            rc = compute_value(v, values, &values[id], d);
        if (rc == 0 && v->op == IR_OP_CACHE_WRITE)
            rc = rt_interp_store_cache(g, v, values[id], inputs, d);
        if (rc != 0 || keep_all)
            continue;

        for (int k = 0; k < v->nops; k++) {
            int operand = v->ops[k];
            if (--uses[operand] == 0) {
                rt_tensor_free(values[operand]);
                values[operand] = NULL;
            }
        }
        if (uses[id] == 0) {
            rt_tensor_free(values[id]);
            values[id] = NULL;
        }
    }
    free(uses);
    if (rc != 0) {
        for (int id = 0; id < g->nvalues; id++) {
            rt_tensor_free(values[id]);
            values[id] = NULL;
        }
    }
    return rc;
}

int rt_interp_run(const ir_graph *g, const rt_weights *weights, const rt_weights *inputs, rt_tensor **outputs,
                  ir_diag *d)
{
    for (int k = 0; k < g->noutputs; k++)
        outputs[k] = NULL;
    rt_tensor **values = calloc((size_t)(g->nvalues ? g->nvalues : 1), sizeof *values);
    if (!values) {
        ir_diag_error(d, (ir_loc){0}, "out of memory allocating %d value slots", g->nvalues);
        return -1;
    }
    if (run_values(g, weights, inputs, false, values, d) != 0) {
        free(values);
        return -1;
    }

    /* Hand each output tensor to the caller. An output listed twice gets a
     * copy the second time. */
    int rc = 0;
    for (int k = 0; k < g->noutputs; k++) {
        int id = g->outputs[k];
        if (values[id]) {
            outputs[k] = values[id];
            values[id] = NULL;
            continue;
        }
        for (int j = 0; j < k && !outputs[k]; j++)
            if (g->outputs[j] == id)
                outputs[k] = copy_tensor(outputs[j]);
        if (!outputs[k]) {
            rc = out_of_memory(g->values[id], d);
            break;
        }
    }
    for (int id = 0; id < g->nvalues; id++)
        rt_tensor_free(values[id]);
    free(values);
    if (rc != 0) {
        for (int k = 0; k < g->noutputs; k++) {
            rt_tensor_free(outputs[k]);
            outputs[k] = NULL;
        }
    }
    return rc;
}

int rt_interp_run_all(const ir_graph *g, const rt_weights *weights, const rt_weights *inputs,
                      rt_tensor ***values, ir_diag *d)
{
    *values = NULL;
    rt_tensor **all = calloc((size_t)(g->nvalues ? g->nvalues : 1), sizeof *all);
    if (!all) {
        ir_diag_error(d, (ir_loc){0}, "out of memory allocating %d value slots", g->nvalues);
        return -1;
    }
    if (run_values(g, weights, inputs, true, all, d) != 0) {
        free(all);
        return -1;
    }
    *values = all;
    return 0;
}

void rt_interp_free_values(rt_tensor **values, int nvalues)
{
    if (!values)
        return;
    for (int i = 0; i < nvalues; i++)
        rt_tensor_free(values[i]);
    free(values);
}
