/* llm.c interoperability of training. Initial weights load from an llm.c
 * checkpoint or a safetensors file. The debug-state export writes one
 * batch's logits, loss and gradients for the current weights, which llm.c's
 * test_gpt2 compares against its own forward and backward pass. */
#ifndef QUADC_RUNTIME_TRAIN_LLMC_H
#define QUADC_RUNTIME_TRAIN_LLMC_H

#include "runtime/train.h"

/* Reads weights from path: an llm.c fp32 checkpoint when the file starts
 * with llm.c's checkpoint magic (its header becomes hparam metadata, see
 * rt_llmc_config_to_meta), else a safetensors file whose GPT-2 names are
 * canonicalized (rt_gpt2_canonicalize_names). Returns NULL after
 * reporting. */
rt_weights *rt_train_load_weights(const char *path, ir_diag *d);

/* Runs the forward and backward graph on the first B * T + 1 training
 * tokens of the first text and writes the debug state to path. Like
 * llm.c's data loader, inputs are tokens 0..B*T-1 and targets 1..B*T. The
 * model must be GPT-2 with outputs "logits" and "loss" and a
 * hyperparameter n_head. Call after rt_trainer_prepare. */
int rt_trainer_export_llmc_state(rt_trainer *t, const rt_train_data *data, const char *path, ir_diag *d);

#endif
