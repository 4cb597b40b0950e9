/* The interpreter kernels of fused.elementwise, fused.linear and
 * fused.matmul. Each step rounds its result to f32 exactly as the unfused
 * op's kernel in interp_elementwise.c does, so a fused graph gives the
 * same bits as the graph before fusion (except for a linear's bias, see
 * ir/ops.def). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ir/fused.h"
#include "runtime/interp_ops.h"

/* The same formulas as rt_interp_binary and rt_interp_unary. */
static float maximum_f32(float a, float b)
{
    if (isnan(a) || isnan(b))
        return NAN;
    if (a == b)
        return signbit(a) ? b : a;
    return a > b ? a : b;
}

static float minimum_f32(float a, float b)
{
    if (isnan(a) || isnan(b))
        return NAN;
    if (a == b)
        return signbit(a) ? a : b;
    return a < b ? a : b;
}

static float apply_binary(ir_op op, float a, float b)
{
    switch (op) {
    case IR_OP_ADD: return a + b;
    case IR_OP_SUB: return a - b;
    case IR_OP_MUL: return a * b;
    case IR_OP_DIV: return a / b;
    case IR_OP_MAXIMUM: return maximum_f32(a, b);
    default: return minimum_f32(a, b);
    }
}

static float apply_unary(const ir_fused_step *s, float x)
{
    const double sqrt_2_over_pi = 0.7978845608028654;
    double v = x;
    switch (s->op) {
    case IR_OP_NEG: return (float)-v;
    case IR_OP_EXP: return (float)exp(v);
    case IR_OP_LOG: return (float)log(v);
    case IR_OP_SQRT: return (float)sqrt(v);
    case IR_OP_RSQRT: return (float)(1.0 / sqrt(v));
    case IR_OP_TANH: return (float)tanh(v);
    case IR_OP_GELU: return (float)(0.5 * v * (1.0 + tanh(sqrt_2_over_pi * (v + 0.044715 * v * v * v))));
    case IR_OP_RELU: return v < 0 ? 0.0f : x;
    case IR_OP_ABS: return (float)fabs(v);
    default: return x * (float)s->factor; /* scale */
    }
}

/* Evaluates program p on f32 tensors inputs[0 .. ninputs) (the driver
 * widens f16 and bf16) into y, with numpy broadcasting of every input
 * against y. An input may be y itself, because each element is read
 * before it is written. */
static int eval_program(const rt_interp_call *call, const ir_fused_program *p, const rt_tensor *const *inputs,
                        int ninputs, rt_tensor *y)
{
    if (y->dtype != IR_F32)
        return rt_interp_unsupported(call, y->dtype);
    int rank = y->rank;
    int64_t *strides = malloc(sizeof(int64_t) * (size_t)ninputs * RT_MAX_RANK);
    int64_t *offset = calloc((size_t)ninputs, sizeof(int64_t));
    if (!strides || !offset) {
        free(strides);
        free(offset);
        return rt_interp_fail(call, "out of memory for %d operand strides", ninputs);
    }
    for (int k = 0; k < ninputs; k++)
        rt_interp_broadcast_strides(inputs[k]->dims, inputs[k]->rank, rank, strides + (size_t)k * RT_MAX_RANK);

    int64_t index[RT_MAX_RANK] = {0};
    int64_t n = rt_tensor_numel(y);
    float *py = y->data;
    float stack[IR_FUSED_MAX_STEPS];
    for (int64_t i = 0; i < n; i++) {
        int depth = 0;
        for (int t = 0; t < p->nsteps; t++) {
            const ir_fused_step *s = &p->steps[t];
            if (s->op == IR_OP_INPUT) {
                const float *px = inputs[s->input]->data;
                stack[depth++] = px[offset[s->input]];
            } else if (s->op == IR_OP_ADD || s->op == IR_OP_SUB || s->op == IR_OP_MUL || s->op == IR_OP_DIV ||
                       s->op == IR_OP_MAXIMUM || s->op == IR_OP_MINIMUM) {
                depth--;
                stack[depth - 1] = apply_binary(s->op, stack[depth - 1], stack[depth]);
            } else {
                stack[depth - 1] = apply_unary(s, stack[depth - 1]);
            }
        }
        py[i] = stack[0];

        /* Advance the multi-index and every input's offset. */
        for (int d = rank - 1; d >= 0; d--) {
            index[d]++;
            for (int k = 0; k < ninputs; k++)
                offset[k] += strides[(size_t)k * RT_MAX_RANK + d];
            if (index[d] < y->dims[d])
                break;
            for (int k = 0; k < ninputs; k++)
                offset[k] -= strides[(size_t)k * RT_MAX_RANK + d] * y->dims[d];
            index[d] = 0;
        }
    }
    free(strides);
    free(offset);
    return 0;
}

int rt_interp_fused_elementwise(const rt_interp_call *call)
{
    const ir_value *v = call->value;
    ir_fused_program p;
    char err[256];
    if (ir_fused_parse_value(v, &p, err, sizeof err) != 0)
        return rt_interp_fail(call, "invalid program: %s", err);
    return eval_program(call, &p, call->operands, v->nops, call->result);
}

/* Computes the product into the result with the matmul or linear kernel,
 * then applies the program in place with $0 reading the result, so the
 * bits equal those of the product followed by fused.elementwise. */
int rt_interp_fused_product(const rt_interp_call *call)
{
    const ir_value *v = call->value;
    ir_fused_program p;
    char err[256];
    if (ir_fused_parse_value(v, &p, err, sizeof err) != 0)
        return rt_interp_fail(call, "invalid program: %s", err);

    /* The product as a value of its own op, with the same name and
     * location for messages. */
    ir_value product = *v;
    ir_attrs attrs = ir_attrs_for(v->op == IR_OP_FUSED_MATMUL ? IR_OP_MATMUL : IR_OP_LINEAR);
    if (v->op == IR_OP_FUSED_MATMUL) {
        ir_attrs_int(&attrs, "transpose_a", ir_attr_int(v, "transpose_a"));
        ir_attrs_int(&attrs, "transpose_b", ir_attr_int(v, "transpose_b"));
    }
    product.op = attrs.op;
    product.nops = 2;
    memcpy(product.attrs, attrs.a, sizeof product.attrs);
    rt_interp_call product_call = *call;
    product_call.value = &product;
    int rc = product.op == IR_OP_MATMUL ? rt_interp_matmul(&product_call) : rt_interp_linear(&product_call);
    ir_attrs_clear(&attrs);
    if (rc != 0)
        return -1;

    const rt_tensor *inputs[IR_FUSED_MAX_INPUTS];
    int ninputs = ir_fused_program_inputs(v);
    if (ninputs > IR_FUSED_MAX_INPUTS)
        return rt_interp_fail(call, "%d program inputs; at most %d", ninputs, IR_FUSED_MAX_INPUTS);
    inputs[0] = call->result;
    for (int k = 1; k < ninputs; k++)
        inputs[k] = call->operands[k + 1];
    return eval_program(call, &p, inputs, ninputs, call->result);
}
