/* Readers and writers for the files of llm.c (karpathy/llm.c, the plain-C
 * GPT-2 trainer): model checkpoints, token shards and debug states.
 *
 * Every file starts with a header of 256 little-endian int32 values whose
 * first two are a magic number and a format version; unused entries are 0.
 *
 * Checkpoint (version 3, fp32): header [2] maxT, [3] V, [4] L, [5] NH, [6] C,
 * [7] Vp (V padded up, 50304 for GPT-2), then float32 tensors back to back:
 * wte (Vp, C) with rows V..Vp-1 zero; wpe (maxT, C); ln1w (L, C);
 * ln1b (L, C); qkvw (L, 3C, C); qkvb (L, 3C); attprojw (L, C, C);
 * attprojb (L, C); ln2w (L, C); ln2b (L, C); fcw (L, 4C, C); fcb (L, 4C);
 * fcprojw (L, C, 4C); fcprojb (L, C); lnfw (C); lnfb (C). Per-layer tensors
 * are stacked over L, and Linear weights are stored (out, in), transposed
 * relative to the Hugging Face Conv1D (in, out) layout.
 *
 * In memory, quadc uses the Hugging Face GPT-2 names and layout (see
 * rt_gpt2_canonicalize_names): wte.weight (V, C), wpe.weight (maxT, C),
 * h.{i}.ln_1.weight (C), h.{i}.attn.c_attn.weight (C, 3C), ... ,
 * ln_f.bias (C). The functions here convert between the two.
 *
 * Token shard (version 1): header [2] token count n, then n uint16 token ids,
 * so the file is exactly 1024 + 2n bytes.
 *
 * Debug state (version 2), which llm.c's test_gpt2 compares against its own
 * forward and backward pass: header [2] B, [3] T, then int32 inputs[B*T],
 * int32 targets[B*T], float32 logits[B*T*V] (unpadded V), float32 mean
 * cross-entropy loss, and float32 gradients of every parameter in checkpoint
 * order and shape, padding rows included.
 *
 * Every function reports failures through the ir_diag as "path: error: ..."
 * naming the file and the header field or tensor, and returns NULL or -1. */
#ifndef QUADC_RUNTIME_LLMC_H
#define QUADC_RUNTIME_LLMC_H

#include <stddef.h>
#include <stdint.h>

#include "ir/diag.h"
#include "runtime/tensor.h"

#define RT_LLMC_HEADER_INTS 256
#define RT_LLMC_HEADER_BYTES (RT_LLMC_HEADER_INTS * 4)

#define RT_LLMC_CHECKPOINT_MAGIC 20240326
#define RT_LLMC_CHECKPOINT_VERSION 3 /* fp32; version 5 is bf16 */
#define RT_LLMC_TOKENS_MAGIC 20240520
#define RT_LLMC_TOKENS_VERSION 1 /* uint16 tokens */
#define RT_LLMC_DEBUG_STATE_MAGIC 20240327
#define RT_LLMC_DEBUG_STATE_VERSION 2

/* llm.c pads the vocabulary to a multiple of this (50257 becomes 50304). */
#define RT_LLMC_VOCAB_ALIGNMENT 128

/* GPT-2 hyperparameters as stored in a checkpoint header. The field names
 * follow llm.c's GPT2Config. */
typedef struct rt_llmc_config {
    int max_seq_len;       /* maxT, rows of wpe */
    int vocab_size;        /* V */
    int padded_vocab_size; /* Vp >= V, rows of wte in the file */
    int num_layers;        /* L */
    int num_heads;         /* NH, which divides C */
    int channels;          /* C */
} rt_llmc_config;

/* Reads an llm.c fp32 checkpoint into a new weight set with Hugging Face
 * names, layouts and order (wte, wpe, h.0.*, h.1.*, ..., ln_f), dropping
 * the vocabulary padding rows, and stores the header in *config. Rejects a bad magic or version, non-positive sizes,
 * Vp < V, C not divisible by NH, and a file size other than
 * 1024 + 4 * (parameter count). Returns NULL on error. */
rt_weights *rt_llmc_read_checkpoint(const char *path, rt_llmc_config *config, ir_diag *d);

/* Records the header of an llm.c checkpoint in w's metadata under the
 * names of examples/gpt2.qd's hparams (n_layer, n_embd, n_head, n_vocab,
 * n_ctx), as safetensors files written by quadc carry them. `path` names
 * the checkpoint in diagnostics. Returns 0, or -1 after reporting. */
int rt_llmc_config_to_meta(rt_weights *w, const rt_llmc_config *config, ir_diag *d, const char *path);

/* Derives maxT, V, L and C from the shapes of a Hugging Face GPT-2 weight
 * set (wte.weight, wpe.weight and the h.{i}.ln_1.weight tensors), takes NH
 * from the caller because no tensor shape implies it, and rounds V up to a
 * multiple of RT_LLMC_VOCAB_ALIGNMENT for Vp. `path` names the source in
 * diagnostics and may be NULL. Returns 0, or -1 after reporting. */
int rt_llmc_infer_config(const rt_weights *w, int num_heads, rt_llmc_config *config,
                         ir_diag *d, const char *path);

/* Writes w (Hugging Face names and layout, dtype F32, F16 or BF16) as an
 * llm.c fp32 checkpoint described by config. Every GPT-2 parameter must be
 * present with the shape config implies and nothing else may be: run
 * rt_gpt2_canonicalize_names first. wte.weight may have V rows, in which
 * case zero rows are added up to Vp, or Vp rows whose rows V..Vp-1 must be
 * zero. The file is written atomically. Returns 0, or -1 after reporting. */
int rt_llmc_write_checkpoint(const char *path, const rt_weights *w, const rt_llmc_config *config,
                             ir_diag *d);

/* Reads a token shard. Returns a malloc'd array of *count token ids (free
 * it with free), or NULL on error. */
uint16_t *rt_llmc_read_tokens(const char *path, size_t *count, ir_diag *d);

/* Writes count tokens (at most INT32_MAX) as a token shard, atomically.
 * Returns 0, or -1 after reporting. */
int rt_llmc_write_tokens(const char *path, const uint16_t *tokens, size_t count, ir_diag *d);

/* One batch of llm.c's test_gpt2 reference data. */
typedef struct rt_llmc_debug_state {
    int batch_size;    /* B */
    int seq_len;       /* T, at most maxT */
    int32_t *inputs;   /* [B*T] token ids in [0, V) */
    int32_t *targets;  /* [B*T] token ids in [0, V) */
    float *logits;     /* [B*T*V], unpadded V */
    float loss;        /* mean cross-entropy over the batch */
    rt_weights *grads; /* gradients with Hugging Face names and shapes */
} rt_llmc_debug_state;

/* Writes a debug state for a model with the given config. The gradients
 * are converted exactly as rt_llmc_write_checkpoint converts weights, so
 * they follow the same rules. Rejects B or T out of range and token ids
 * outside [0, V). Returns 0, or -1 after reporting. */
int rt_llmc_write_debug_state(const char *path, const rt_llmc_config *config,
                              const rt_llmc_debug_state *state, ir_diag *d);

/* Reads a debug state written for a model with the given config into
 * *state, whose arrays and gradients the caller frees with
 * rt_llmc_debug_state_free. The file size must match B, T and config
 * exactly. Returns 0, or -1 after reporting, in which case *state is
 * empty. */
int rt_llmc_read_debug_state(const char *path, const rt_llmc_config *config,
                             rt_llmc_debug_state *state, ir_diag *d);
void rt_llmc_debug_state_free(rt_llmc_debug_state *state);

#endif
