/* The INT8 part of driver_build: a weights file written by `quadc quantize`
 * becomes a graph whose fake-quantized linear layers are q.linear ops on
 * i8 weights (passes/int8.h), with the weight set that graph reads. */
#ifndef QUADC_DRIVER_BUILD_INT8_H
#define QUADC_DRIVER_BUILD_INT8_H

#include <stdbool.h>

#include "driver/driver.h"
#include "runtime/tensor.h"

/* Metadata key that marks a file written by quadc quantize. */
#define DRIVER_QUANTIZE_BITS_KEY "quadc.quantize.bits"

/* Returns whether w carries the metadata of a quantized model. */
bool driver_is_quantized(const rt_weights *w);

/* Reports why the float weights w cannot be built with --int8: the first
 * quantizer param (scale or zero point) that insert-fakequant adds to the
 * model and w lacks. Always returns -1. */
int driver_report_missing_quantizers(const driver_build_request *r, const rt_weights *w, ir_diag *d);

/* Loads r->weights with rt_quantized_model_load, compiled with the batch
 * size and sequence length of float_graph (the model under r's -D values),
 * and adds the i8 weights of every site that lower-int8 rewrites
 * (pass_int8_convert_weights). Stores the fake-quant graph, which still
 * needs the lower-int8 pass, in *graph and its weights in *weights, and
 * the number of converted weights in *nsites. Returns 0, or -1 after
 * reporting. */
int driver_load_int8(const driver_build_request *r, const ir_graph *float_graph, ir_graph **graph,
                     rt_weights **weights, int *nsites, ir_diag *d);

/* Drops from *weights every tensor that is not a live param of g: the f32
 * weights that q.linear ops replaced. Returns 0, or -1 when out of memory. */
int driver_keep_graph_params(const ir_graph *g, rt_weights **weights, ir_diag *d);

#endif
