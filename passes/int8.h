/* Lowering of fake-quantized linear layers and attention matmuls to
 * integer arithmetic: the weight conversion that goes with the lower-int8
 * pass.
 *
 * Flow: insert-fakequant, calibration (passes/quantize.h), then
 *   pass_int8_convert_weights(fake-quant graph, weights)   adds <w>.q and
 *                                                           <matmul>.requant
 *   lower-int8 pass on the same graph                      uses them
 * The function and the pass pick the same sites, so every integer param of
 * the lowered graph exists in the converted weight set. */
#ifndef QUADC_PASSES_INT8_H
#define QUADC_PASSES_INT8_H

#include "ir/ir.h"
#include "runtime/tensor.h"

/* Suffix of the i8 weight param that replaces f32 weight param <w>. */
#define PASS_INT8_WEIGHT_SUFFIX ".q"

/* One site that lower-int8 rewrites: a linear, or a matmul with
 * transpose_b=1 whose second operand is a weight (the LM head). */
typedef struct pass_int8_site {
    int op;        /* the linear or matmul */
    int act;       /* its fq.act operand */
    int weight_fq; /* its fq.weight operand */
    int weight;    /* the f32 weight param under weight_fq */
    bool transpose_b;
} pass_int8_site;

/* Returns true and fills *out when value id of g is a lowerable site: its
 * input comes from fq.act, its weight from a symmetric fq.weight of a
 * rank-2 param, quantized per tensor or per output channel. */
bool pass_int8_match(const ir_graph *g, int id, pass_int8_site *out);

/* For every lowerable site of the fake-quant graph g, stores in `weights`
 * the i8 tensor <w>.q = clamp(round(w / s) + z, qmin, qmax) of weight
 * param <w>, with the scale s and zero point z of the channel and the
 * range of its fq.weight, rounding half to even as fq.weight does. For
 * every attention matmul that lower-int8 requantizes, it stores the
 * multiplier <matmul>.requant (pass_int8_store_multiplier). A name
 * already present is overwritten. Returns the number of tensors stored, or
 * -1 after reporting a missing or mistyped weight or quantizer param. */
int pass_int8_convert_weights(const ir_graph *g, rt_weights *weights, ir_diag *d);

/* Suffix of the i32[3] requantization multiplier param of an attention
 * matmul <matmul>. */
#define PASS_INT8_MULTIPLIER_SUFFIX ".requant"
/* Most transposes and reshapes between an attention matmul and the
 * quantizer it is requantized for. */
#define PASS_INT8_MAX_CHAIN 8

/* One attention matmul that lower-int8 rewrites: matmul(fq.act(a),
 * fq.act(b)) between two activations, with equal leading dims. */
typedef struct pass_int8_attention {
    int op;           /* the matmul */
    int act_a, act_b; /* its fq.act operands */
    bool transpose_b;
    /* The quantizer that the matmul's result reaches through the
     * single-use transposes and reshapes of chain: an fq.act, or the input
     * of a q.linear. consumer is -1 when a float op reads the result. */
    int consumer;
    int chain[PASS_INT8_MAX_CHAIN];
    int nchain;
    int out_scale, out_zero_point; /* the consumer quantizer's params */
    int out_bits;
    bool out_symmetric, out_narrow;
} pass_int8_attention;

/* Returns true and fills *out when value id of g is an attention matmul
 * that lower-int8 rewrites (passes/int8_attention.c). */
bool pass_int8_match_attention(const ir_graph *g, int id, pass_int8_attention *out);

/* Writes the name of s's multiplier param, "<matmul>.requant", to buf.
 * Returns 0, or -1 when it does not fit. */
int pass_int8_multiplier_name(const ir_graph *g, const pass_int8_attention *s, char *buf, size_t cap);

/* Stores in w the requantization multiplier of s, which must have a
 * consumer: the fixed-point form (cg_qmul_from_real) of s_a · s_b / s_out,
 * as i32[3] {M0, left_shift, right_shift}. Returns 0, or -1 after
 * reporting a missing or invalid scale. */
int pass_int8_store_multiplier(const ir_graph *g, const pass_int8_attention *s, rt_weights *w, ir_diag *d);

/* Rewrites attention matmul s into q.quantize, q.matmul and either
 * q.requantize (with the layout chain and a q.dequantize for the
 * consumer) or q.dequantize. Marks the matmul, and an fq.act consumer,
 * dead. Returns 0, or -1 after reporting. */
int pass_int8_lower_attention(ir_graph *g, const pass_int8_attention *s, ir_diag *d);

#endif
