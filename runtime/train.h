/* The training driver: compiles a model with its backward graph, keeps the
 * parameters and the AdamW state, runs training steps, held-out evaluation
 * and the training loop, and writes and restores checkpoints.
 *
 * A training step draws B windows with the trainer's seeded generator and
 * runs the forward and backward graph. It checks the loss and every
 * gradient for NaN and infinity, clips by global norm and applies AdamW
 * with the learning rate of the schedule. The step is a function of the weights,
 * the moments, the step number and the generator state, which is what a
 * checkpoint stores, so a resumed run repeats the losses of an
 * uninterrupted one bit for bit with the same executor and thread count. */
#ifndef QUADC_RUNTIME_TRAIN_H
#define QUADC_RUNTIME_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frontend/frontend.h"
#include "ir/ir.h"
#include "runtime/optim.h"
#include "runtime/train_data.h"
#include "runtime/train_exec.h"
#include "runtime/train_rng.h"

typedef struct rt_train_config {
    const char *model_path;    /* the .qd model */
    const fe_define *defines;  /* -D overrides; B and T come from batch and seq */
    int ndefines;
    int batch;                 /* B */
    int seq;                   /* T */
    int steps;                 /* final step number */
    int schedule_steps;        /* length of the lr schedule, 0 = steps */
    float lr;                  /* peak learning rate */
    int warmup;                /* linear warmup steps */
    float min_lr_frac;         /* cosine floor as a fraction of lr */
    rt_adamw_config adamw;
    uint64_t seed;             /* parameter init and batch sampling */
    int threads;               /* executor threads, 0 = one per core */
    const rt_executor *executor;
    int eval_every;            /* steps between held-out evaluations, 0 = never */
    int eval_batches;          /* held-out batches per evaluation */
    const char *ckpt_dir;      /* NULL: the current directory */
    int ckpt_every;            /* steps between checkpoints, 0 = only on interrupt */
    /* The data files and split, or NULL. Checkpoints record it, and a
     * resume with other data gets a note that the losses will differ. */
    const char *data_description;
    /* true: leave the training graph unfused, without the fuse-elementwise
     * pass that runs after autodiff by default */
    bool no_fuse_elementwise;
} rt_train_config;

/* Returns batch 4, seq 64, 100 steps, lr 6e-4, no warmup, floor 0.1,
 * rt_adamw_default_config, seed 1337, the JIT on every core, and no
 * evaluation or checkpoints. model_path must still be set. */
rt_train_config rt_train_default_config(void);

typedef struct rt_trainer {
    rt_train_config config;  /* strings and defines are borrowed */
    ir_graph *train_graph;   /* forward and backward */
    ir_graph *eval_graph;    /* forward only */
    int loss_output;         /* output index of "loss" in both graphs */
    int logits_output;       /* output index of "logits", or -1 */
    int *grad_output;        /* per param, output index of "<param>.grad" */
    rt_weights *params;      /* f32, in the graph's param order */
    rt_adamw *opt;
    void *train_module;
    void *eval_module;       /* compiled on first use */
    bool train_stale;        /* params changed since the module last ran */
    bool eval_stale;
    int step;                /* completed steps */
    rt_rng sampler;
    rt_weights *batch;       /* "idx" and "targets" i32[B, T] */
} rt_trainer;

/* Compiles the model with B and T bound, appends the backward graph with
 * the autodiff pass and finds the loss and gradient outputs. Nothing is
 * allocated for weights yet. Returns NULL after reporting. */
rt_trainer *rt_trainer_new(const rt_train_config *c, ir_diag *d);
void rt_trainer_free(rt_trainer *t);

/* Memory of one training step, in bytes. */
typedef struct rt_train_memory {
    int64_t param_count;
    int64_t param_bytes;
    int64_t grad_bytes;
    int64_t optimizer_bytes;  /* AdamW m and v */
    rt_graph_memory graph;    /* of the forward and backward graph */
} rt_train_memory;

void rt_trainer_memory(const rt_trainer *t, rt_train_memory *out);

/* Creates the parameters. With `initial` NULL every param is drawn from
 * its init attribute (zeros, ones or normal(std), normal by Box-Muller from
 * the seed). Otherwise each param is taken from `initial` by name, in any
 * float dtype but with the param's shape. The tensors taken are moved out
 * of `initial`, which is left with empty tensors. Returns 0, or -1 after
 * reporting. */
int rt_trainer_init_weights(rt_trainer *t, rt_weights *initial, ir_diag *d);

/* Compiles the training graph and creates the optimizer with zero
 * moments. Call after rt_trainer_init_weights. */
int rt_trainer_prepare(rt_trainer *t, ir_diag *d);

/* Runs the forward and backward graph on one batch without updating
 * anything. On success stores every output of the training graph in
 * outputs[0 .. train_graph->noutputs), which the caller frees. */
int rt_trainer_forward_backward(rt_trainer *t, const int32_t *idx, const int32_t *targets, rt_tensor **outputs,
                                ir_diag *d);

typedef struct rt_train_step_result {
    float loss;
    float lr;
    double grad_norm; /* before clipping */
} rt_train_step_result;

/* Runs one training step. Returns 0, 1 when the loss or a gradient is not
 * finite (reported as an error naming the step and the first non-finite
 * tensor, and nothing is updated), or -1 on any other error. */
int rt_trainer_step(rt_trainer *t, const rt_train_data *data, rt_train_step_result *r, ir_diag *d);

/* Returns in *loss the mean loss over eval_batches held-out batches. */
int rt_trainer_evaluate(rt_trainer *t, const rt_train_data *data, float *loss, ir_diag *d);

/* One line of progress, passed to the loop's callback after each step. */
typedef struct rt_train_progress {
    int step;               /* completed steps */
    int total_steps;
    float loss;
    float lr;
    double grad_norm;
    double step_seconds;
    double tokens_per_second;
    bool evaluated;         /* eval_loss is set */
    float eval_loss;
    const char *checkpoint; /* written after this step, or NULL */
} rt_train_progress;

typedef struct rt_train_hooks {
    void (*on_step)(void *ctx, const rt_train_progress *p);
    void *ctx;
    /* Polled after every step. When it is set the loop writes a checkpoint
     * and returns RT_TRAIN_INTERRUPTED; a SIGINT handler may set it. */
    volatile sig_atomic_t *interrupt;
} rt_train_hooks;

typedef enum rt_train_status {
    RT_TRAIN_DONE,
    RT_TRAIN_INTERRUPTED,
    RT_TRAIN_NONFINITE,
    RT_TRAIN_ERROR,
} rt_train_status;

/* Trains from the current step up to config.steps. Writes a checkpoint
 * every ckpt_every steps and on interrupt; the path of the last one written
 * goes to saved_path (empty when none). */
rt_train_status rt_trainer_run(rt_trainer *t, const rt_train_data *data, const rt_train_hooks *hooks,
                               char *saved_path, size_t saved_cap, ir_diag *d);

/* Checkpoints: one safetensors file with the params under their own names,
 * the AdamW moments as "opt.m.<param>" and "opt.v.<param>", and metadata
 * with the step, the generator state and every setting that the loss
 * trajectory depends on. Written atomically. */
int rt_trainer_save_checkpoint(rt_trainer *t, const char *path, ir_diag *d);

/* Returns the path "DIR/ckpt_%06d.safetensors" for step `step` in buf. */
void rt_train_checkpoint_path(const rt_train_config *c, int step, char *buf, size_t cap);

/* Reads a checkpoint and checks that it is a quadc training checkpoint.
 * Returns NULL after reporting. */
rt_weights *rt_train_checkpoint_read(const char *path, ir_diag *d);

/* Overwrites the settings of *c that the loss trajectory depends on
 * (batch, seq, lr schedule and its length, AdamW settings, seed) with the
 * checkpoint's, and notes a different thread count, which can change the
 * last bits of JIT reductions.
 * Returns the number of settings that differed, or -1 after reporting
 * missing or invalid metadata. */
int rt_train_checkpoint_apply_config(const rt_weights *ckpt, const char *path, rt_train_config *c, ir_diag *d);

/* Restores step, generator state and moments from a checkpoint whose
 * params have already been taken by rt_trainer_init_weights, after
 * rt_trainer_prepare. Moves the moment tensors out of ckpt. */
int rt_trainer_restore(rt_trainer *t, rt_weights *ckpt, const char *path, ir_diag *d);

#endif
