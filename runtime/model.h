/* A model session: a .qd model, its weights and the compiled forward
 * graphs that `quadc eval` and `quadc generate` run, with batch size 1.
 *
 * Opening a session reads the weights (safetensors, or an llm.c checkpoint
 * recognized by its magic number), applies the hyperparameters they record,
 * and checks every param of the model against them. Graphs are compiled on
 * first use for each sequence length T, with the LLVM JIT or, for checking,
 * the reference interpreter. Weights written by `quadc quantize` (metadata
 * "quadc.quantize.bits") open as their fake-quantized model: every graph
 * gets the insert-fakequant pass with those bits, so the file's scales and
 * zero points are params like any weight.
 *
 * A model is one of two kinds, recognized by its inputs:
 *   - full-sequence models (examples/gpt2.qd) take `idx` i32[B, T] and
 *     output `logits` [B, T, V]; any other integer input (such as
 *     `targets`) is filled with zeros. rt_model_forward runs them.
 *   - key-value cache models (examples/gpt2_kv.qd) also take `pos` i32[]
 *     and `positions` i32[T] and update per-layer cache inputs with
 *     cache_write. rt_model_append runs them.
 *
 * Every function reports failures through the ir_diag and returns NULL or
 * -1. None of them prints or exits. */
#ifndef QUADC_RUNTIME_MODEL_H
#define QUADC_RUNTIME_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "frontend/frontend.h"
#include "ir/diag.h"
#include "runtime/tensor.h"

typedef enum rt_model_engine {
    RT_MODEL_JIT,    /* LLVM JIT (codegen/codegen.h) */
    RT_MODEL_INTERP, /* reference interpreter (runtime/interp.h), slow */
} rt_model_engine;

typedef struct rt_model_options {
    const char *model_path;   /* .qd file */
    const char *weights_path; /* safetensors file or llm.c checkpoint; names the weights in messages */
    rt_weights *weights;      /* weights in memory, used instead of reading weights_path; the session
                                 takes ownership, also when opening fails */
    const fe_define *defines; /* -D overrides, applied before the weights' hyperparameters */
    int ndefines;
    rt_model_engine engine;
    int threads;   /* JIT worker threads; 0 = one per online core */
    int cache_len; /* cache rows (hparam n_cache) of a cache model; 0 = the model's default */
    /* true: compile the JIT graph as written, without the fuse-elementwise
     * pass that otherwise folds elementwise chains into the matrix
     * products before them. The interpreter always runs the graph as
     * written. */
    bool no_fuse_elementwise;
} rt_model_options;

typedef struct rt_model rt_model;

/* Opens a session. The weights' hyperparameters are the integer metadata
 * entries of a safetensors file whose keys name an hparam of the model
 * (n_layer, n_embd, n_head, n_vocab, n_ctx, ...), or the header of an llm.c
 * checkpoint. They replace the model's defaults. A -D for the same hparam
 * with another value is an error naming both values. B, T and n_cache are
 * set by the session and never taken from the weights.
 *
 * Hugging Face names are normalized first (rt_gpt2_canonicalize_names drops
 * the attention-mask buffers and a tied lm_head.weight). Then these are
 * errors: a param of the model without a tensor (the error lists every
 * missing name), a tensor that matches no param (the error lists every
 * extra name), and a tensor whose shape differs from its param's (the
 * error names the tensor and both shapes). */
rt_model *rt_model_open(const rt_model_options *o, ir_diag *d);
void rt_model_free(rt_model *m);

/* Records the bound hyperparameters of g as decimal metadata entries of w,
 * except the batch size B and sequence length T, which belong to one
 * compiled graph and not to the weights. rt_model_open reads them back, so
 * a file written with them loads without repeating -D. Returns 0 or -1
 * when out of memory. */
int rt_model_record_hparams(rt_weights *w, const ir_graph *g);

/* Vocabulary size V, the last dimension of `logits`. */
int rt_model_vocab_size(const rt_model *m);
/* Maximum sequence length: the hparam n_ctx, or for a cache model the
 * cache rows n_cache when they are fewer. */
int rt_model_context_length(const rt_model *m);
/* Whether the model is a key-value cache model. */
bool rt_model_has_cache(const rt_model *m);
/* Returns the bound value of hparam `name`, or `fallback` when the model
 * has no such hparam. */
int64_t rt_model_hparam(const rt_model *m, const char *name, int64_t fallback);
/* Compiles the model at `path` with B = batch and T = seq on top of the
 * user's defines (any B or T among them is replaced). A seq beyond the
 * model's n_ctx is an error that names the sequence length, where the
 * model would otherwise fail on an out-of-range slice. Returns NULL after
 * reporting. */
ir_graph *rt_compile_model_bt(const char *path, const fe_define *defines, int ndefines, int batch, int seq,
                              ir_diag *d);
/* Returns the weights' metadata value of `key` (e.g. "quadc.quantize.bits"
 * of a file that quadc quantize wrote), or NULL. */
const char *rt_model_weights_meta(const rt_model *m, const char *key);

/* Compiles the graph for sequence length T now, not on first use, so
 * that later runs can be timed without the compile. Returns 0 or -1. */
int rt_model_prepare(rt_model *m, int T, ir_diag *d);

/* Runs a full-sequence model on tokens[0..n) and writes logits (n, V)
 * row-major. The graph runs with T = `window`, which is compiled on first
 * use (1 <= n <= window <= context length). When n < window, the tokens
 * are padded with id 0 to T positions and the logits of the padding are
 * dropped. Causal attention makes this exact: position t depends only on
 * tokens 0..t, so the logits of the first n positions do not depend on
 * the padding. */
int rt_model_forward(rt_model *m, int window, const int32_t *tokens, int n, float *logits, ir_diag *d);

/* Appends tokens[0..n) to the sequence of a cache model: runs them at
 * positions position .. position + n - 1 with the graph compiled for T = n,
 * which writes their keys and values into the caches, and writes the
 * logits of the last of them (V floats) to last_logits. Fails when the
 * sequence would exceed the context length. */
int rt_model_append(rt_model *m, const int32_t *tokens, int n, float *last_logits, ir_diag *d);
/* Number of tokens appended since the session opened or was reset. */
int rt_model_position(const rt_model *m);
/* Starts a new sequence: position 0. The cache rows need no clearing,
 * because the mask hides every row after the current position. */
void rt_model_reset(rt_model *m);

#endif
