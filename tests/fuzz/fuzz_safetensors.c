/* libFuzzer target for the safetensors reader.
 *
 * Each input is written to a temporary file and read back. A file that the
 * reader accepts must also survive a write and a second read unchanged, and
 * GPT-2 name canonicalization must not crash on it. Seed files come from
 * tests/fuzz/make_seeds.py; see that script for the commands that build and
 * run this target. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/safetensors.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
    snprintf(input_path, sizeof input_path, "%s/quadc_fuzz_safetensors_XXXXXX", dir);
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
    if (a->count != b->count || a->nmeta != b->nmeta)
        return false;
    for (int i = 0; i < a->count; i++) {
        const rt_tensor *x = a->tensors[i], *y = b->tensors[i];
        if (strcmp(a->names[i], b->names[i]) != 0 || x->dtype != y->dtype || x->rank != y->rank)
            return false;
        if (memcmp(x->dims, y->dims, (size_t)x->rank * sizeof x->dims[0]) != 0)
            return false;
        if (memcmp(x->data, y->data, rt_tensor_nbytes(x)) != 0)
            return false;
    }
    for (int i = 0; i < a->nmeta; i++)
        if (strcmp(a->meta_keys[i], b->meta_keys[i]) != 0 ||
            strcmp(a->meta_values[i], b->meta_values[i]) != 0)
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(input_path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();

    ir_diag *d = ir_diag_new(diagnostics_sink);
    rt_weights *w = rt_safetensors_read(input_path, d);
    if (w) {
        if (rt_safetensors_write(output_path, w, d) != 0) {
            fprintf(stderr, "fuzz_safetensors: the writer rejected an accepted file\n");
            abort();
        }
        rt_weights *again = rt_safetensors_read(output_path, d);
        if (!again || !same_weights(w, again)) {
            fprintf(stderr, "fuzz_safetensors: the rewritten file reads back differently\n");
            abort();
        }
        rt_weights_free(again);
        rt_gpt2_canonicalize_names(w, d, input_path);
        rt_weights_free(w);
    }
    ir_diag_free(d);
    return 0;
}
