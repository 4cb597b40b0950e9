/* `quadc run`: the whole pipeline from float weights to a quantized native
 * executable, with every model's perplexity on the same texts. The state
 * and the stages are shared by driver/cmd_run.c (options, checks, order of
 * the stages), driver/run_stages.c (the stages) and driver/run_report.c
 * (the final table and report.md). */
#ifndef QUADC_DRIVER_RUN_H
#define QUADC_DRIVER_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "driver/driver.h"
#include "frontend/frontend.h"
#include "runtime/dataset.h"
#include "runtime/quantize_run.h"

#define RUN_CMD "run"
/* FP32, PTQ, Quadapter, the INT8 build, the executable's perplexity. */
#define RUN_NSTAGES 5

/* The four models whose perplexity the table compares, in column order. */
typedef enum run_model {
    RUN_FP32,
    RUN_PTQ,
    RUN_QUADAPTER,
    RUN_INT8,
    RUN_NMODELS,
} run_model;

typedef struct run_args {
    const char *model;   /* the .qd file */
    const char *weights; /* float weights; the default model's when none was given */
    bool default_weights;
    fe_define *defines; /* -D, names point into argv */
    int ndefines;
    const char *calib;
    const char **eval; /* --eval, split at commas */
    int neval;
    char **eval_copies; /* the --eval values that the names in eval point into */
    int neval_copies;
    const char *out;   /* output directory */
    const char *bits;
    int seq;
    int calib_seqs;
    int phase1_steps;
    int phase2_steps;
    float lr;
    uint64_t seed;
    int threads;               /* 0 = one per core */
    long long max_eval_tokens; /* 0 = every token */
    const char *print_ir_dir;
    const char *target_cpu;
    const char *triple; /* a cross target, for which no executable is linked or run */
    const char *prompt;
    const char *tokenizer; /* directory of encoder.json and vocab.bpe */
    const char *cache_dir; /* token cache, or NULL for the default */
} run_args;

/* One model's perplexity on one text. */
typedef struct run_score {
    bool measured;
    size_t tokens_scored;
    double mean_nll; /* nats per token */
    double perplexity;
    double seconds;
} run_score;

/* One evaluation text, tokenized and cut to --max-eval-tokens. */
typedef struct run_text {
    const char *path;
    int32_t *ids;
    size_t n;
} run_text;

typedef struct run_state {
    const run_args *a;
    ir_diag *d;
    rt_weights *float_weights; /* read by the checks, then taken over by the float session */
    fe_define *defines; /* -D and the weights' hparams, without B and T */
    int ndefines;
    int window;         /* evaluation window: the model's context length */
    int stride;
    int vocab;
    run_text *texts;
    int ntexts;
    int32_t *calib_ids;
    size_t calib_n;
    const int32_t **calib_seqs; /* a->calib_seqs pointers into calib_ids */

    /* Outputs in a->out. */
    char *stem; /* the model file's name without .qd */
    char *quantized_path;
    char *object_path;
    char *header_path;
    char *exe_path; /* NULL with --triple */
    char *report_path;

    run_score *scores[RUN_NMODELS]; /* [ntexts] each */
    double calib_loss[3];           /* float, PTQ, Quadapter on the calibration sequences */
    double quadapter_loss_before, quadapter_loss_after; /* phase 2 */
    double *block_loss_before, *block_loss_after;       /* phase 1, per block */
    int nblocks;
    long long float_bytes, quantized_bytes, object_bytes, header_bytes, exe_bytes;
    double stage_seconds[RUN_NSTAGES]; /* 0 for a stage that did not run */
} run_state;

/* Stages, in order. Each returns 0, or -1 after reporting through s->d. */
int run_stage_fp32(run_state *s);
int run_stage_ptq(run_state *s);
int run_stage_quadapter(run_state *s);
int run_stage_build(run_state *s);
int run_stage_binary(run_state *s);
/* Runs the executable's generate command on --prompt, which prints the
 * text on standard output. */
int run_generate_prompt(run_state *s);

/* Returns dir/name in a new string, or NULL when out of memory. */
char *run_path(const char *dir, const char *name);

/* Prints the final table to standard output and writes DIR/report.md
 * atomically. */
int run_write_report(run_state *s);

#endif
