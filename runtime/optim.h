/* AdamW (Loshchilov and Hutter, "Decoupled Weight Decay Regularization",
 * 2019) as generated code, gradient clipping by global L2 norm, and the
 * learning-rate schedule.
 *
 * The update is an IR graph of elementwise ops over one flattened
 * parameter, compiled by an executor (the interpreter or the JIT). For a
 * parameter p with gradient g at step t (1-based):
 *   g' = clip_scale * g
 *   m  = beta1 * m + (1 - beta1) * g'
 *   v  = beta2 * v + (1 - beta2) * g'^2
 *   p -= lr * ((m / bc1) / (sqrt(v / bc2) + eps) + wd * p)
 * with the bias corrections bc1 = 1 - beta1^t and bc2 = 1 - beta2^t. lr,
 * bc1, bc2, clip_scale and wd are scalar graph inputs; beta1, beta2 and eps
 * are constants of the graph. Parameters are processed in chunks of at most
 * chunk_elements, which bounds the buffers of each compiled graph, and one
 * update graph and one squared-norm graph (reduce_sum of g * g) are
 * compiled per distinct chunk length. */
#ifndef QUADC_RUNTIME_OPTIM_H
#define QUADC_RUNTIME_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "ir/diag.h"
#include "ir/ir.h"
#include "runtime/tensor.h"
#include "runtime/train_exec.h"

typedef struct rt_adamw_config {
    float beta1;
    float beta2;
    float eps;
    float weight_decay;
    /* false: decay only parameters of rank 2 (the embeddings and the linear
     * weights), never biases or LayerNorm gains and shifts, as GPT-2
     * practice does. true: decay every parameter, as llm.c's
     * train_gpt2.c does. */
    bool decay_all;
    /* Gradients are scaled by grad_clip / norm when their global L2 norm
     * exceeds grad_clip. 0 disables clipping. */
    float grad_clip;
    /* Elements per run of the generated graphs, 0 = RT_ADAMW_CHUNK. The
     * result does not depend on it except for the summation order of the
     * gradient norm. */
    int64_t chunk_elements;
} rt_adamw_config;

/* 2^18 elements, 1 MiB per f32 tensor: small enough that the JIT's
 * buffers for the outputs and the one intermediate of an update stay
 * small, large enough that a run's fixed cost is negligible. */
#define RT_ADAMW_CHUNK ((int64_t)1 << 18)

/* Returns beta1 0.9, beta2 0.95, eps 1e-8, weight decay 0.1 on matrices
 * only, clipping at global norm 1.0, and chunks of RT_ADAMW_CHUNK
 * elements. */
rt_adamw_config rt_adamw_default_config(void);

/* Linear warmup from lr / warmup to lr over the first `warmup` steps, then
 * cosine decay from lr to lr * min_lr_frac at the last step. */
typedef struct rt_lr_schedule {
    float lr;
    int warmup;
    float min_lr_frac;
    int total_steps;
} rt_lr_schedule;

/* Returns the learning rate of 0-based step `step`:
 *   step < warmup: lr * (step + 1) / warmup
 *   otherwise: min + (lr - min) * (1 + cos(pi * r)) / 2 with
 *   min = lr * min_lr_frac and r = (step - warmup) / (total_steps - warmup),
 *   clamped to [0, 1] so steps past the end keep the floor. */
float rt_lr_at(const rt_lr_schedule *s, int step);

/* Builds the update graph for n elements. Inputs: "param", "grad", "m",
 * "v" f32[n] and the scalars "lr", "bias_correction1",
 * "bias_correction2", "clip_scale", "weight_decay" f32[]. Outputs in order:
 * the new param, m and v. Returns NULL after reporting through d. */
ir_graph *rt_adamw_build_update_graph(int64_t n, const rt_adamw_config *c, ir_diag *d);
/* Builds reduce_sum(grad * grad) for an input "grad" f32[n]; the output
 * is f32[]. */
ir_graph *rt_adamw_build_sqnorm_graph(int64_t n, ir_diag *d);

typedef struct rt_adamw_kernels rt_adamw_kernels;

/* AdamW state for a fixed list of f32 parameters. */
typedef struct rt_adamw {
    rt_adamw_config config;
    int nparams;
    char **names;        /* owned copies of the parameter names */
    bool *decay;         /* whether weight decay applies, per parameter */
    rt_weights *m;       /* "opt.m.<name>", in parameter order */
    rt_weights *v;       /* "opt.v.<name>", in parameter order */
    int64_t chunk;       /* elements per run */
    int nkernels;
    rt_adamw_kernels *kernels; /* one per distinct chunk length */
    const rt_executor *executor;
} rt_adamw;

/* Creates zero moments for every tensor of `params` (all must be f32) and
 * compiles the graphs with the executor. Returns NULL after reporting. */
rt_adamw *rt_adamw_new(const rt_adamw_config *c, const rt_weights *params, const rt_executor *executor,
                       int threads, ir_diag *d);
void rt_adamw_free(rt_adamw *o);

/* Result of the gradient check that precedes each update. */
typedef struct rt_adamw_norm {
    double norm;         /* global L2 norm before clipping */
    float clip_scale;    /* 1, or grad_clip / norm */
    int first_nonfinite; /* first parameter whose gradient is not finite, or -1 */
} rt_adamw_norm;

/* Computes the global gradient norm with the generated reductions. grads[i]
 * is the gradient of parameter i, with its shape. The first gradient that
 * contains a NaN or an infinity sets first_nonfinite and stops the scan.
 * Returns 0, or -1 after reporting an executor error. */
int rt_adamw_grad_norm(rt_adamw *o, rt_tensor *const *grads, rt_adamw_norm *out, ir_diag *d);

/* Applies one AdamW update with the given learning rate at 1-based step t,
 * overwriting the data of the tensors in `params` (same order as at
 * creation) and of the moments in place. Returns 0, or -1 after
 * reporting. */
int rt_adamw_update(rt_adamw *o, rt_weights *params, rt_tensor *const *grads, float lr, int t,
                    float clip_scale, ir_diag *d);

#endif
