/* The quantization flows behind `quadc quantize`: post-training
 * quantization (PTQ), SmoothQuant scales, quantization-aware training (QAT)
 * and Quadapter training (Park et al., "Quadapter: Adapter for GPT-2
 * Quantization", Findings of EMNLP 2022), and the loader of the files they
 * write. The graph and weight steps are the passes and library functions of
 * passes/quantize.h. This file builds the training graphs and runs them
 * with an rt_executor and AdamW.
 *
 * Training graphs run one sequence per step (B = 1), and loss evaluation and
 * calibration run batches of sequences. Every graph has T = seq, and each
 * distinct graph is compiled once per run. A calibration sequence is
 * seq + 1 tokens: idx is its first seq tokens, targets its last seq. */
#ifndef QUADC_RUNTIME_QUANTIZE_RUN_H
#define QUADC_RUNTIME_QUANTIZE_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "frontend/frontend.h"
#include "ir/ir.h"
#include "passes/quantize.h"
#include "runtime/tensor.h"
#include "runtime/train_exec.h"

typedef enum rt_quantize_method {
    RT_QUANTIZE_PTQ,         /* calibrate the ranges only */
    RT_QUANTIZE_SMOOTHQUANT, /* fold SmoothQuant scales at the Quadapter sites, then calibrate */
    RT_QUANTIZE_QAT,         /* calibrate, then fine-tune every model weight through the quantizers */
    RT_QUANTIZE_QUADAPTER,   /* calibrate, train alpha block by block, then end to end, then fold */
} rt_quantize_method;

/* Returns the method called `name` ("ptq", "smoothquant", "qat",
 * "quadapter"), or -1. */
int rt_quantize_method_from_name(const char *name);
const char *rt_quantize_method_name(rt_quantize_method m);
/* Returns "minmax", "percentile" or "mse". */
const char *rt_quantize_range_name(pass_calib_method m);

/* The quantizer sites of quadc quantize unless --sites says otherwise. */
#define RT_QUANTIZE_DEFAULT_SITES "linear;lm_head"

/* Checks a sites value of insert-fakequant before it goes into a pass
 * pipeline: ';'-separated names of letters, digits, '_', '.', '%', '*'
 * and '-'. Returns 0, or -1 after writing the reason to err. */
int rt_quantize_check_sites(const char *sites, char *err, int errcap);

/* Writes to buf the insert-fakequant pass that quadc quantize ran to make
 * the file at path with metadata w: its "quadc.quantize.bits" and
 * ".sites" (RT_QUANTIZE_DEFAULT_SITES when absent, as in files written
 * before the key existed). It also checks that every quantizer scale in
 * w is positive and finite and every zero point finite. Returns 0, or -1
 * after reporting a missing or invalid value that names the file. */
int rt_quantize_fakequant_pass(const rt_weights *w, const char *path, char *buf, size_t cap, ir_diag *d);

/* Parses "w<b>a<b>" with both bit widths in [IR_QUANT_MIN_BITS,
 * IR_QUANT_MAX_BITS]. Returns 0, or -1 after writing the reason to err. */
int rt_quantize_parse_bits(const char *text, int *weight_bits, int *act_bits, char *err, int errcap);

typedef struct rt_quantize_config {
    const char *model_path;   /* the .qd model */
    const char *weights_path; /* names the float weights in messages; may be NULL */
    const fe_define *defines; /* -D overrides; B and T are set from seq */
    int ndefines;
    rt_quantize_method method;
    const char *bits;         /* "w8a8" */
    /* insert-fakequant sites, for example "linear;lm_head;attention"; NULL
     * means RT_QUANTIZE_DEFAULT_SITES. */
    const char *sites;
    int seq;                  /* T */
    pass_calib_method range;  /* how activation and weight ranges are calibrated */
    int phase1_steps;         /* Quadapter phase 1 steps per block */
    int phase2_steps;         /* Quadapter phase 2 steps, and the QAT steps */
    float lr;                 /* AdamW learning rate, constant */
    /* Also train the activation quantizer scales ("<site>.input.scale") in
     * Quadapter phase 2 and QAT; zero points stay as calibrated. */
    bool train_ranges;
    uint64_t seed;            /* order in which training visits the sequences */
    double migration;         /* SmoothQuant migration strength a */
    const rt_executor *executor;
    int threads;              /* 0 = one per core */
    /* Called after every training step with the phase ("phase1", "phase2",
     * "qat"), the block (-1 outside phase 1), the step and its loss; may be
     * NULL. */
    void (*on_step)(void *ctx, const char *phase, int block, int step, int steps, double loss);
    void *ctx;
    /* Held-out sequences (seq + 1 tokens each) for the perplexity of the
     * float and the output model, or none. */
    const int32_t *const *heldout;
    int nheldout;
    /* Directory that receives the graph before (00-input.qir) and after
     * each pass of the quantizer-insertion pipeline, one numbered .qir
     * file per pass, or NULL. */
    const char *print_ir_dir;
} rt_quantize_config;

/* Returns ptq, w8a8, seq 64, min-max ranges, 100 phase 1 steps, 100
 * phase 2 steps, lr 1e-3, seed 1, migration 0.5, the JIT on every core. */
rt_quantize_config rt_quantize_default_config(void);

/* What a run measured. Losses are means over every calibration sequence.
 * A block loss is the mean squared difference between the FP block output
 * and the quantized block output, both computed from the FP block input. */
typedef struct rt_quantize_report {
    int nblocks;
    double fp_loss;           /* LM loss of the float model */
    double calibrated_loss;   /* LM loss right after calibration (the PTQ model of this method) */
    double final_loss;        /* LM loss of the output model */
    double fp_heldout_loss;   /* mean LM loss on the held-out sequences, if any */
    double final_heldout_loss;
    double *block_loss_before; /* per block, before phase 1 (quadapter only, else NULL) */
    double *block_loss_after;
    double train_loss_before; /* LM loss before phase 2 or QAT */
    double train_loss_after;
    double seconds_calibrate;
    double seconds_phase1;
    double seconds_phase2;    /* phase 2, or QAT */
    int eval_batch;           /* sequences per loss evaluation batch */
    int calib_batch;          /* sequences per calibration batch */
    int compiles;             /* graphs the executor compiled, each once */
    double seconds_compile;   /* wall-clock time spent compiling them */
} rt_quantize_report;

void rt_quantize_report_free(rt_quantize_report *r);

/* A quantized model: the graph with its fq ops (and no Quadapter), and
 * every param of it in `weights`, f32. */
typedef struct rt_quantized_model {
    ir_graph *graph;
    rt_weights *weights;
} rt_quantized_model;

void rt_quantized_model_free(rt_quantized_model *m);

/* Quantizes the model of c with the float weights `weights` using nseqs
 * calibration sequences of seq + 1 tokens each. The weights are named as
 * the model's params, in any float dtype, and are taken over and freed.
 * On success fills *out and *report. Returns 0, or -1 after reporting
 * through d, and then *out holds nothing. */
int rt_quantize_run(const rt_quantize_config *c, rt_weights *weights, const int32_t *const *seqs, int nseqs,
                    rt_quantized_model *out, rt_quantize_report *report, ir_diag *d);

/* Returns in *loss the mean LM loss ("loss" output) of graph g over the
 * sequences. */
int rt_quantize_mean_loss(const ir_graph *g, const rt_weights *weights, const int32_t *const *seqs, int nseqs,
                          int seq, const rt_executor *executor, int threads, double *loss, ir_diag *d);

/* Sets the metadata of a quantized model's weights: every bound hparam of
 * the graph except B and T, "quadc.quantize.method", ".bits", ".sites", ".seed",
 * ".range" and any extra pairs the caller adds afterwards. */
int rt_quantize_set_metadata(rt_quantized_model *m, const rt_quantize_config *c, ir_diag *d);

/* Builds the -D list for compiling the model with the weights of `w`: the
 * given defines plus every integer metadata entry of w that names an hparam
 * of the model (B and T excepted). A define that contradicts the metadata
 * is an error naming both values; `weights_name` names the weights in messages.
 * Free *out with free(). Returns 0, or -1 after reporting. */
int rt_quantize_weight_hparams(const char *model_path, const rt_weights *w, const char *weights_name,
                               const fe_define *defines, int ndefines, fe_define **out, int *nout, ir_diag *d);

/* Loads a file written by `quadc quantize`: compiles the model with the
 * file's hparams and T = seq, inserts the quantizers its metadata names
 * (rt_quantize_fakequant_pass)
 * and checks that every param, including every scale and zero point, has
 * a tensor of its shape. A file without quantizer params is an error
 * naming the first missing one. Returns 0, or -1 after reporting. */
int rt_quantized_model_load(const char *model_path, const fe_define *defines, int ndefines, const char *path,
                            int seq, rt_quantized_model *out, ir_diag *d);

#endif
