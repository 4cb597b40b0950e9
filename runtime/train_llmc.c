/* Weight loading by file format, and the llm.c debug-state export. */
#include "runtime/train_llmc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/llmc.h"
#include "runtime/safetensors.h"

static bool has_llmc_magic(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    unsigned char bytes[4];
    bool match = fread(bytes, 1, 4, f) == 4;
    fclose(f);
    int32_t magic = (int32_t)((uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 |
                              (uint32_t)bytes[3] << 24);
    return match && magic == RT_LLMC_CHECKPOINT_MAGIC;
}

rt_weights *rt_train_load_weights(const char *path, ir_diag *d)
{
    if (has_llmc_magic(path)) {
        rt_llmc_config config;
        rt_weights *w = rt_llmc_read_checkpoint(path, &config, d);
        if (w && rt_llmc_config_to_meta(w, &config, d, path) != 0) {
            rt_weights_free(w);
            return NULL;
        }
        return w;
    }
    rt_weights *w = rt_safetensors_read(path, d);
    if (w && rt_gpt2_canonicalize_names(w, d, path) != 0) {
        rt_weights_free(w);
        return NULL;
    }
    return w;
}

static int64_t graph_hparam(const ir_graph *g, const char *name)
{
    for (int i = 0; i < g->nhparams; i++)
        if (strcmp(g->hparams[i].name, name) == 0)
            return g->hparams[i].value;
    return -1;
}

int rt_trainer_export_llmc_state(rt_trainer *t, const rt_train_data *data, const char *path, ir_diag *d)
{
    int B = t->config.batch, T = t->config.seq;
    size_t needed = (size_t)B * (size_t)T + 1;
    if (data->ntexts == 0 || data->train[0].count < needed) {
        ir_diag_file_error(d, path, "the debug state needs %zu training tokens in the first text, which has %zu",
                           needed, data->ntexts ? data->train[0].count : 0);
        return -1;
    }
    int64_t num_heads = graph_hparam(t->train_graph, "n_head");
    if (num_heads <= 0 || t->logits_output < 0) {
        ir_diag_file_error(d, path, "the debug state needs a GPT-2 model with hyperparameter n_head and output "
                           "'logits'");
        return -1;
    }
    rt_llmc_config config;
    if (rt_llmc_infer_config(t->params, (int)num_heads, &config, d, t->config.model_path) != 0)
        return -1;

    const int32_t *tokens = data->train[0].ids;
    int noutputs = t->train_graph->noutputs;
    rt_tensor **outputs = calloc((size_t)noutputs, sizeof *outputs);
    rt_tensor **grads = calloc((size_t)t->params->count + 1, sizeof *grads);
    int rc = -1;
    if (!outputs || !grads || rt_trainer_forward_backward(t, tokens, tokens + 1, outputs, d) != 0)
        goto done;
    for (int i = 0; i < t->params->count; i++)
        grads[i] = outputs[t->grad_output[i]];
    rt_weights grad_set = rt_weights_borrow(t->params->names, grads, t->params->count);

    rt_llmc_debug_state state;
    memset(&state, 0, sizeof state);
    state.batch_size = B;
    state.seq_len = T;
    state.inputs = (int32_t *)tokens;
    state.targets = (int32_t *)tokens + 1;
    state.logits = outputs[t->logits_output]->data;
    state.loss = *(const float *)outputs[t->loss_output]->data;
    state.grads = &grad_set;
    rc = rt_llmc_write_debug_state(path, &config, &state, d);
done:
    if (outputs)
        for (int i = 0; i < noutputs; i++)
            rt_tensor_free(outputs[i]);
    free(outputs);
    free(grads);
    return rc;
}
