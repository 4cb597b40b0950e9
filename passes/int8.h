/* Lowering of fake-quantized linear layers to integer arithmetic: the
 * weight conversion that goes with the lower-int8 pass.
 *
 * Flow: insert-fakequant, calibration (passes/quantize.h), then
 *   pass_int8_convert_weights(fake-quant graph, weights)   adds <w>.q
 *   lower-int8 pass on the same graph                      uses <w>.q
 * The function and the pass pick the same sites, so every i8 param of the
 * lowered graph exists in the converted weight set. */
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
 * range of its fq.weight, rounding half to even as fq.weight does. A name
 * already present is overwritten. Returns the number of tensors stored, or
 * -1 after reporting a missing or mistyped weight or quantizer param. */
int pass_int8_convert_weights(const ir_graph *g, rt_weights *weights, ir_diag *d);

#endif
