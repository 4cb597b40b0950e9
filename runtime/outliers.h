/* Per-channel activation outliers at the quantized points of a model, the
 * work behind `quadc outliers`: the maximum |x| of every channel of the
 * input of every fq.act (the inputs of every linear and of the LM head
 * after insert-fakequant), over a set of token sequences, and the summary
 * statistics of each such site.
 *
 * Activations come from pass_act_channel_max_abs, the observer graph that
 * calibration uses, so every fq op is bypassed: the values are those the
 * activation quantizers would be calibrated on. */
#ifndef QUADC_RUNTIME_OUTLIERS_H
#define QUADC_RUNTIME_OUTLIERS_H

#include <stdint.h>

#include "frontend/frontend.h"
#include "ir/ir.h"
#include "runtime/tensor.h"
#include "runtime/train_exec.h"

/* The maximum number of top channels a site records. */
#define RT_OUTLIERS_MAX_TOP 16

typedef struct rt_outlier_site {
    char *name;       /* the quantizer site, e.g. "h.0.attn.c_attn.input" */
    int64_t channels; /* the size of the activation's last dimension */
    double *max_abs;  /* per channel: max |x| over every position of every sequence */
    double max;       /* the largest max_abs */
    double median;    /* the median of max_abs over the channels */
    /* The channels with the largest max_abs, largest first; ties go to
     * the lower channel index. */
    int64_t top[RT_OUTLIERS_MAX_TOP];
    int ntop;
} rt_outlier_site;

typedef struct rt_outliers {
    rt_outlier_site *sites; /* in graph order */
    int nsites;
} rt_outliers;

/* A model graph with fq ops and the weights to run it. */
typedef struct rt_outliers_model {
    ir_graph *graph;
    rt_weights *weights;
} rt_outliers_model;

/* Loads a model to measure: the .qd file compiled with B = 1, T = seq,
 * the -D defines and the hparams recorded in the weights' metadata.
 *   - A file written by `quadc quantize` (metadata "quadc.quantize.bits")
 *     loads through rt_quantized_model_load: its folded weights, with its
 *     quantizers.
 *   - Other files are float weights, safetensors or an llm.c checkpoint
 *     (rt_train_load_weights). Every param of the model must have a
 *     tensor of its shape and no tensor may be left over, and
 *     insert-fakequant marks the sites. Their scale and zero-point params
 *     stay absent, because the observer graph bypasses every fq op.
 * A seq longer than the model's hparam n_ctx is an error.
 * Returns 0, or -1 after reporting through d. */
int rt_outliers_load_model(const char *model_path, const fe_define *defines, int ndefines, const char *weights_path,
                           int seq, rt_outliers_model *out, ir_diag *d);
void rt_outliers_model_free(rt_outliers_model *m);

/* Runs g with `weights` on nseqs sequences and fills *out with every
 * fq.act site of g and its `top` (1 to RT_OUTLIERS_MAX_TOP) largest
 * channels. Each sequence is seq + 1 tokens: idx is its first seq tokens
 * and targets its last seq. Returns 0, or -1 after reporting through d. */
int rt_outliers_measure(const ir_graph *g, const rt_weights *weights, const int32_t *const *seqs, int nseqs, int seq,
                        const rt_executor *executor, int threads, int top, rt_outliers *out, ir_diag *d);
void rt_outliers_free(rt_outliers *o);

/* Returns max / median of a site: infinity when the median is 0 and the
 * max is not, and 1 when both are 0. */
double rt_outlier_ratio(const rt_outlier_site *s);

/* Returns the median of n values (the mean of the two middle values when
 * n is even), or 0 when n is 0. The values are not changed. */
double rt_outliers_median(const double *values, int64_t n);

#endif
