/* libFuzzer target for the llm.c readers.
 *
 * Each input is written to a temporary file and read as a checkpoint, as a
 * token shard and as a debug state of FUZZ_CONFIG. Whatever a reader accepts
 * is written back and must read back unchanged. Seed files come from
 * tests/fuzz/make_seeds.py, whose debug-state seed uses the same config. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/llmc.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const rt_llmc_config FUZZ_CONFIG = {
    .max_seq_len = 3, .vocab_size = 5, .padded_vocab_size = 8,
    .num_layers = 1, .num_heads = 2, .channels = 4,
};

static char input_path[96];
static char output_path[112];
static FILE *diagnostics_sink;

static void remove_temp_files(void)
{
    unlink(input_path);
    unlink(output_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* A memory-backed directory keeps the fsync of every write cheap. */
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(input_path, sizeof input_path, "%s/quadc_fuzz_llmc_XXXXXX", dir);
    int fd = mkstemp(input_path);
    if (fd < 0) {
        perror("mkstemp");
        abort();
    }
    close(fd);
    snprintf(output_path, sizeof output_path, "%s.rewritten", input_path);
    diagnostics_sink = fopen("/dev/null", "w");
    atexit(remove_temp_files);
    return 0;
}

static bool same_weights(const rt_weights *a, const rt_weights *b)
{
    if (a->count != b->count)
        return false;
    for (int i = 0; i < a->count; i++) {
        const rt_tensor *x = a->tensors[i], *y = b->tensors[i];
        if (strcmp(a->names[i], b->names[i]) != 0 || x->rank != y->rank)
            return false;
        if (memcmp(x->dims, y->dims, (size_t)x->rank * sizeof x->dims[0]) != 0)
            return false;
        if (memcmp(x->data, y->data, rt_tensor_nbytes(x)) != 0)
            return false;
    }
    return true;
}

static void fail(const char *message)
{
    fprintf(stderr, "fuzz_llmc: %s\n", message);
    abort();
}

static void fuzz_checkpoint(ir_diag *d)
{
    rt_llmc_config config;
    rt_weights *w = rt_llmc_read_checkpoint(input_path, &config, d);
    if (!w)
        return;
    if (rt_llmc_write_checkpoint(output_path, w, &config, d) != 0)
        fail("the writer rejected an accepted checkpoint");
    rt_llmc_config again_config;
    rt_weights *again = rt_llmc_read_checkpoint(output_path, &again_config, d);
    if (!again || !same_weights(w, again) || memcmp(&config, &again_config, sizeof config) != 0)
        fail("the rewritten checkpoint reads back differently");
    rt_weights_free(again);
    rt_weights_free(w);
}

static void fuzz_tokens(ir_diag *d)
{
    size_t count = 0;
    uint16_t *tokens = rt_llmc_read_tokens(input_path, &count, d);
    if (!tokens)
        return;
    if (rt_llmc_write_tokens(output_path, tokens, count, d) != 0)
        fail("the writer rejected an accepted token shard");
    size_t again_count = 0;
    uint16_t *again = rt_llmc_read_tokens(output_path, &again_count, d);
    if (!again || again_count != count || memcmp(tokens, again, count * 2) != 0)
        fail("the rewritten token shard reads back differently");
    free(again);
    free(tokens);
}

static void fuzz_debug_state(ir_diag *d)
{
    rt_llmc_debug_state state;
    if (rt_llmc_read_debug_state(input_path, &FUZZ_CONFIG, &state, d) != 0)
        return;
    /* The reader does not range-check token ids, so the writer may reject
     * the state; when it accepts, the file must read back unchanged. */
    if (rt_llmc_write_debug_state(output_path, &FUZZ_CONFIG, &state, d) == 0) {
        rt_llmc_debug_state again;
        if (rt_llmc_read_debug_state(output_path, &FUZZ_CONFIG, &again, d) != 0)
            fail("the rewritten debug state cannot be read");
        size_t tokens = (size_t)state.batch_size * (size_t)state.seq_len;
        size_t logits = tokens * (size_t)FUZZ_CONFIG.vocab_size;
        if (again.batch_size != state.batch_size || again.seq_len != state.seq_len ||
            memcmp(again.inputs, state.inputs, tokens * 4) != 0 ||
            memcmp(again.targets, state.targets, tokens * 4) != 0 ||
            memcmp(again.logits, state.logits, logits * 4) != 0 ||
            memcmp(&again.loss, &state.loss, 4) != 0 || !same_weights(state.grads, again.grads))
            fail("the rewritten debug state reads back differently");
        rt_llmc_debug_state_free(&again);
    }
    rt_llmc_debug_state_free(&state);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(input_path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();

    ir_diag *d = ir_diag_new(diagnostics_sink);
    fuzz_checkpoint(d);
    fuzz_tokens(d);
    fuzz_debug_state(d);
    ir_diag_free(d);
    return 0;
}
