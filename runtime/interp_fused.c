/* The interpreter kernel of fused.elementwise. Each step rounds its result
 * to f32 exactly as the unfused op's kernel in interp_elementwise.c does,
 * so a fused graph gives the same bits as the graph before fusion. */
#include <math.h>
#include <stdlib.h>

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

/* Evaluates the program on f32 operands (the driver widens f16 and bf16)
 * with numpy broadcasting of every operand against the result. */
int rt_interp_fused_elementwise(const rt_interp_call *call)
{
    const ir_value *v = call->value;
    ir_fused_program p;
    char err[256];
    if (ir_fused_parse(ir_attr_str(v, "program"), v->nops, &p, err, sizeof err) != 0)
        return rt_interp_fail(call, "invalid program: %s", err);
    rt_tensor *y = call->result;
    if (y->dtype != IR_F32)
        return rt_interp_unsupported(call, y->dtype);

    int nops = v->nops;
    int rank = y->rank;
    int64_t *strides = malloc(sizeof(int64_t) * (size_t)nops * RT_MAX_RANK);
    int64_t *offset = calloc((size_t)nops, sizeof(int64_t));
    if (!strides || !offset) {
        free(strides);
        free(offset);
        return rt_interp_fail(call, "out of memory for %d operand strides", nops);
    }
    for (int k = 0; k < nops; k++)
        rt_interp_broadcast_strides(call->operands[k]->dims, call->operands[k]->rank, rank,
                                    strides + (size_t)k * RT_MAX_RANK);

    int64_t index[RT_MAX_RANK] = {0};
    int64_t n = rt_tensor_numel(y);
    float *py = y->data;
    float stack[IR_FUSED_MAX_STEPS];
    for (int64_t i = 0; i < n; i++) {
        int depth = 0;
        for (int t = 0; t < p.nsteps; t++) {
            const ir_fused_step *s = &p.steps[t];
            if (s->op == IR_OP_INPUT) {
                const float *px = call->operands[s->input]->data;
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

        /* Advance the multi-index and every operand's offset. */
        for (int d = rank - 1; d >= 0; d--) {
            index[d]++;
            for (int k = 0; k < nops; k++)
                offset[k] += strides[(size_t)k * RT_MAX_RANK + d];
            if (index[d] < y->dims[d])
                break;
            for (int k = 0; k < nops; k++)
                offset[k] -= strides[(size_t)k * RT_MAX_RANK + d] * y->dims[d];
            index[d] = 0;
        }
    }
    free(strides);
    free(offset);
    return 0;
}
