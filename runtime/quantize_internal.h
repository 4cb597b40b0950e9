/* Helpers shared by runtime/quantize_run.c and runtime/quantize_train.c:
 * pass pipelines, graph outputs, language-model inputs, mean losses, the
 * per-block graphs of Quadapter phase 1 and the AdamW loop. */
#ifndef QUADC_RUNTIME_QUANTIZE_INTERNAL_H
#define QUADC_RUNTIME_QUANTIZE_INTERNAL_H

#include "runtime/quantize_run.h"

/* Parses and runs a pass pipeline on g. Returns 0, or -1 after reporting. */
int qz_run_pipeline(ir_graph *g, const char *text, ir_diag *d);
/* Returns the index of the graph output called `name`, or -1. */
int qz_find_output(const ir_graph *g, const char *name);
void qz_free_outputs(rt_tensor **outputs, int n);

/* The "idx" and "targets" inputs of one sequence of T + 1 tokens. */
typedef struct qz_inputs {
    char *names[2];
    rt_tensor *tensors[2];
    rt_weights set; /* borrows names and tensors */
} qz_inputs;

int qz_lm_inputs(qz_inputs *in, const int32_t *seq_tokens, int T);
void qz_inputs_free(qz_inputs *in);

/* Returns in *loss the mean of output `loss_name` of g over ninputs input
 * sets. */
int qz_mean_loss(const ir_graph *g, const char *loss_name, const rt_weights *weights, const rt_weights *inputs,
                 int ninputs, const rt_executor *ex, int threads, double *loss, ir_diag *d);

/* Finds the input and output value of GPT-2 block i. Returns -1 when the
 * graph has no such block. */
int qz_block_values(const ir_graph *g, int block, int *input, int *output);
int qz_count_blocks(const ir_graph *g);
/* The lower bound of trained activation scales, so that a step never
 * makes a quantizer's scale zero or negative. */
#define QZ_MIN_SCALE 1e-8f

/* The name of the phase 1 loss output. */
#define QZ_BLOCK_LOSS "block_loss"

/* Builds the phase 1 graph of one block: inputs "block_input" (the FP block
 * input) and "block_target" (the FP block output), output QZ_BLOCK_LOSS, the mean
 * squared difference between the quantized block output and the target. */
ir_graph *qz_build_block_graph(const ir_graph *q, int block, ir_diag *d);

/* One training run: `steps` AdamW steps at the config's constant lr on the
 * params of `forward` that the autodiff pattern `wrt` selects and `train`
 * accepts. Weights are updated in place. */
typedef struct qz_train_job {
    const rt_quantize_config *config;
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

#endif
