/* Quantization steps that need weight values or calibration data, so they
 * are library functions over a graph and its weight set (rt_weights) and
 * not entries of the pass registry. The graph-only steps are the passes
 * insert-fakequant and insert-quadapter.
 *
 * A typical post-training flow:
 *   insert-quadapter (optional), insert-fakequant    IR passes
 *   pass_smoothquant_scales (optional)               sets every alpha
 *   pass_calibrate                                   sets every scale and zero point
 *   (Quadapter training updates alpha, calling pass_quadapter_clamp_alpha)
 *   pass_fold_quadapter                              removes alpha from graph and weights
 *
 * Calibration splits into an IR part and a data part. The IR part clones
 * the graph, bypasses every fq op (so statistics see floating-point
 * activations, not the output of uncalibrated quantizers), makes the input
 * of every quantizer a graph output and drops what those outputs do not
 * need. The data part runs that graph over the calibration batches with an
 * rt_executor (the interpreter or the JIT), gathers the statistics and
 * writes the scale and zero-point params. */
#ifndef QUADC_PASSES_QUANTIZE_H
#define QUADC_PASSES_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>

#include "ir/ir.h"
#include "ir/quant.h"
#include "runtime/tensor.h"
#include "runtime/train_exec.h"

/* The lower bound that pass_quadapter_clamp_alpha keeps alpha above. */
#define PASS_QUADAPTER_MIN_ALPHA 1e-4f

typedef enum pass_calib_method {
    PASS_CALIB_MINMAX,     /* the observed minimum and maximum */
    PASS_CALIB_PERCENTILE, /* the `percentile` and 100 - `percentile` quantiles */
    PASS_CALIB_MSE,        /* the clipping range with the least quantization MSE */
} pass_calib_method;

typedef struct pass_calib_options {
    pass_calib_method method;
    double percentile;      /* in (50, 100], e.g. 99.99 */
    int mse_grid;           /* candidate ranges r * (min, max) for r = k / mse_grid, k = 1..mse_grid */
    int64_t max_samples;    /* values kept per activation quantizer for percentile and MSE */
    uint64_t seed;          /* of the reservoir sampling that picks them */
    const rt_executor *executor; /* NULL: the interpreter */
    int threads;            /* for the executor; 0 = one per core */
} pass_calib_options;

/* Min-max, percentile 99.99, a 100-point MSE grid, 2^18 samples per
 * activation quantizer, seed 0, the interpreter. */
pass_calib_options pass_calib_default_options(void);

/* Returns "minmax", "percentile" or "mse" as a method, or -1. */
int pass_calib_method_from_name(const char *name);

/* Computes the scale and zero point of a quantizer with integer range r
 * that covers [lo, hi]. The range is widened to contain 0, so that 0 is
 * exactly representable. Symmetric: s = max(|lo|, |hi|) / qmax, z = 0.
 * Asymmetric: s = (hi - lo) / (qmax - qmin), z = qmin - round(lo / s). An
 * empty range (lo = hi = 0) gives s = 1. */
void pass_quant_params_from_range(double lo, double hi, bool symmetric, ir_quant_range r, float *scale,
                                  float *zero_point);

/* Picks the clipping range [lo, hi] of n values x by `method` (the MSE
 * search quantizes with range r, symmetric or not). */
void pass_calib_range(const float *x, int64_t n, const pass_calib_options *o, bool symmetric, ir_quant_range r,
                      double *lo, double *hi);

/* Sets the scale and zero-point params of every fq.act and fq.weight of g
 * in `weights` from statistics over the nbatches input sets of `batches`.
 * Weights are calibrated per tensor or per channel as their scale param
 * is shaped. Returns 0, or -1 after reporting through d. */
int pass_calibrate(const ir_graph *g, rt_weights *weights, const rt_weights *const *batches, int nbatches,
                   const pass_calib_options *o, ir_diag *d);

/* Sets every Quadapter alpha of g to the SmoothQuant scale (Xiao et al.,
 * "SmoothQuant", ICML 2023) at migration strength a:
 *   s_c = max|X_c|^a / max|W_c|^(1-a),  alpha_c = 1 / s_c
 * with X the activation before alpha (from the calibration batches) and W_c
 * row c of every weight divided by that alpha. SmoothQuant divides X by s
 * and multiplies W by s, while Quadapter multiplies X by alpha, hence the
 * reciprocal. A channel with max|X_c| = 0 or max|W_c| = 0 gets alpha 1.
 * `executor` NULL means the interpreter. */
int pass_smoothquant_scales(const ir_graph *g, rt_weights *weights, const rt_weights *const *batches, int nbatches,
                            double migration, const rt_executor *executor, ir_diag *d);

/* The per-channel maximum |x| of the input x of one fq.act. */
typedef struct pass_act_channel_max {
    int quantizer;    /* the fq.act value id in g */
    int64_t channels; /* the size of x's last dimension */
    double *max_abs;  /* one value per channel */
} pass_act_channel_max;

/* Collects the per-channel maximum |x| of the input of every fq.act of g
 * over the batches, from the same observer graph as pass_calibrate (every
 * fq op bypassed, so x is the floating-point activation). Fills *out with
 * one entry per fq.act in value order, which the caller frees with
 * pass_act_channel_max_free. `executor` NULL means the interpreter.
 * Returns 0, or -1 after reporting through d. */
int pass_act_channel_max_abs(const ir_graph *g, const rt_weights *weights, const rt_weights *const *batches,
                             int nbatches, const rt_executor *executor, int threads, pass_act_channel_max **out,
                             int *nout, ir_diag *d);
void pass_act_channel_max_free(pass_act_channel_max *sites, int n);

/* Clamps every Quadapter alpha of g in `weights` to
 * [PASS_QUADAPTER_MIN_ALPHA, inf); call it after each optimizer step.
 * Returns the number of clamped elements, or -1 when an alpha is missing. */
int64_t pass_quadapter_clamp_alpha(const ir_graph *g, rt_weights *weights, ir_diag *d);

/* Folds every Quadapter of g into the weights and removes it: for a
 * layernorm source, gamma and beta are multiplied by alpha; for the
 * attention value path, the v columns of c_attn's weight and bias are
 * multiplied by alpha; input row c of every divided weight is divided by
 * alpha_c (the same f32 division as qa.scale). The qa.scale values leave
 * the graph and the alpha params leave the graph and `weights`. Checks
 * every site before changing anything, so on error g and weights are
 * unchanged. Returns 0, or -1 after reporting through d. */
int pass_fold_quadapter(ir_graph *g, rt_weights *weights, ir_diag *d);

#endif
