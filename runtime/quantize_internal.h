/* Helpers shared by runtime/quantize_run.c, runtime/quantize_flow.c and
 * runtime/quantize_train.c: pass pipelines, graph outputs, language-model
 * inputs, mean losses, the graphs of one run, the per-block graphs of
 * Quadapter phase 1 and the AdamW loop. */
#ifndef QUADC_RUNTIME_QUANTIZE_INTERNAL_H
#define QUADC_RUNTIME_QUANTIZE_INTERNAL_H

#include "runtime/exec_cache.h"
#include "runtime/quantize_run.h"

/* Checks that every param of g has a tensor of its shape in w and that
 * every tensor is a param, and widens floating tensors to f32. `path`
 * names the weights in messages. Returns 0, or -1 after reporting. */
int qz_check_float_params(const ir_graph *g, rt_weights *w, const char *path, ir_diag *d);
/* Returns the index of the graph output called `name`, or -1. */
int qz_find_output(const ir_graph *g, const char *name);
void qz_free_outputs(rt_tensor **outputs, int n);
/* Makes output `name` the only output of g, so that runs do not return
 * unused outputs such as the logits. Returns 0, or -1 after reporting that
 * g has no such output. */
int qz_keep_output(ir_graph *g, const char *name, ir_diag *d);

/* The "idx" and "targets" inputs of language-model graphs. */
typedef struct qz_inputs {
    char *names[2];
    rt_tensor *tensors[2];
    rt_weights set; /* borrows names and tensors */
} qz_inputs;

/* The inputs i32[1, T] of one sequence of T + 1 tokens. */
int qz_lm_inputs(qz_inputs *in, const int32_t *seq_tokens, int T);
/* The inputs i32[B, T] of up to B sequences of T + 1 tokens: idx row r is
 * the first T tokens of sequence r and targets row r its last T. Rows
 * after the last sequence are padding, with token 0 and the target
 * `pad_target`, which the loss must ignore. */
int qz_lm_batch_inputs(qz_inputs *in, const int32_t *const *seqs, int nseqs, int B, int T, int32_t pad_target);
void qz_inputs_free(qz_inputs *in);

/* Language-model input sets that cover nseqs sequences in order, B per
 * set, the last set padded (see qz_lm_inputs). */
typedef struct qz_batches {
    int count;
    qz_inputs *inputs;
    rt_weights *sets; /* sets[i] is inputs[i].set */
    int *rows;        /* the sequences in each set */
} qz_batches;

int qz_make_batches(qz_batches *b, const int32_t *const *seqs, int nseqs, int B, int T, int32_t pad_target);
void qz_batches_free(qz_batches *b);

/* Returns in *loss the mean per sequence of output `loss_name` of g over
 * ninputs input sets, running g with the module that `cache` stores for
 * it. The output must be a mean over the sequences of a set, and rows[i]
 * (NULL: 1 for every set) is the number of sequences in set i, which
 * weights that set's output. */
int qz_mean_loss(const ir_graph *g, const char *loss_name, const rt_weights *weights, const rt_weights *inputs,
                 const int *rows, int ninputs, rt_exec_cache *cache, double *loss, ir_diag *d);

/* Finds the input and output value of GPT-2 block i. Returns -1 when the
 * graph has no such block. */
int qz_block_values(const ir_graph *g, int block, int *input, int *output);
int qz_count_blocks(const ir_graph *g);
/* The lower bound of trained activation scales, so that a step never
 * makes a quantizer's scale zero or negative. */
#define QZ_MIN_SCALE 1e-8f

/* The name of the phase 1 loss output. */
#define QZ_BLOCK_LOSS "block_loss"

/* The prefix that replaces "h.<i>." in the param names of a block graph. */
#define QZ_BLOCK_PREFIX "block."

/* Builds the phase 1 graph of one block: inputs "block_input" (the FP block
 * input) and "block_target" (the FP block output), output QZ_BLOCK_LOSS, the mean
 * squared difference between the quantized block output and the target.
 * Params "h.<block>.NAME" become QZ_BLOCK_PREFIX "NAME", so that the blocks
 * of a model give one graph, compiled once; bind the weights of a block
 * with qz_block_weights_init. */
ir_graph *qz_build_block_graph(const ir_graph *q, int block, ir_diag *d);

/* The weights of a block graph: param QZ_BLOCK_PREFIX "NAME" borrows the
 * tensor "h.<block>.NAME" of the model's weights, and any other param the
 * tensor of its own name. */
typedef struct qz_block_weights {
    rt_weights set; /* borrows names and tensors */
    char **names;   /* owned */
    rt_tensor **tensors;
    int count;
} qz_block_weights;

int qz_block_weights_init(qz_block_weights *v, const ir_graph *block_graph, const rt_weights *w, int block,
                          ir_diag *d);
void qz_block_weights_free(qz_block_weights *v);

/* One training run: `steps` AdamW steps at the config's constant lr on the
 * params of `forward` that the autodiff pattern `wrt` selects and `train`
 * accepts. Weights are updated in place. */
typedef struct qz_train_job {
    const rt_quantize_config *config;
    rt_exec_cache *cache;    /* compiles the training graph */
    const ir_graph *forward;
    const char *loss;        /* the name of forward's loss output */
    const char *wrt;         /* autodiff wrt= patterns, ';'-separated */
    bool (*train)(const char *param); /* NULL: every param wrt selects */
    float weight_decay;
    bool clamp_alpha;        /* clamp the Quadapter alphas of forward after each step */
    bool clamp_scales;       /* keep trained "*.input.scale" params at least QZ_MIN_SCALE */
    int steps;
    const char *phase;       /* for messages and on_step */
    int block;
    /* Returns the input set of step `step`. */
    const rt_weights *(*inputs)(void *ctx, int step);
    void *ctx;
} qz_train_job;

int qz_train(const qz_train_job *job, rt_weights *weights, ir_diag *d);

/* Whether a param is a quantizer's scale or zero point. */
bool qz_is_quantizer_param(const char *name);
/* Whether a param is a Quadapter alpha. */
bool qz_is_alpha_param(const char *name);

/* The graphs and inputs of one quantization run. Training runs one
 * sequence per step on graphs with B = 1. Losses run batches of
 * eval_batch sequences and calibration batches of calib_batch sequences,
 * each on a graph compiled for that B, because a larger matrix product
 * runs faster per sequence. Graphs that compute the same function share
 * one pointer, so the cache compiles them once. */
typedef struct qz_flow {
    const rt_quantize_config *config;
    rt_exec_cache *cache;
    rt_weights *weights;       /* every param of every graph below */
    ir_graph *q;               /* quantized, B = 1: trained, folded and returned */
    ir_graph *fp_eval;         /* float; for Quadapter also every block's input and output */
    int fp_block_outputs;      /* index of the first block output of fp_eval */
    ir_graph *q_eval;          /* quantized, with Quadapter alphas for Quadapter */
    ir_graph *out_eval;        /* the output model as the loader builds it */
    ir_graph *q_calib;         /* what calibration observes, B = calib_batch */
    ir_graph *smooth_calib;    /* SmoothQuant: the graph with alphas, B = calib_batch */
    const rt_weights *singles; /* one input set per calibration sequence, B = 1 */
    int nseqs;
    qz_batches calib;          /* the calibration sequences, B = calib_batch */
    qz_batches eval;           /* the calibration sequences, B = eval_batch */
    qz_batches heldout;        /* the held-out sequences, B = eval_batch */
    rt_quantize_report *report;
} qz_flow;

/* Runs the method of f->config. Returns 0, or -1 after reporting. */
int qz_run_flow(qz_flow *f, ir_diag *d);

#endif
