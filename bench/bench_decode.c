/* GPT-2 decoding benchmark for key-value cache generation: opens a session
 * on examples/gpt2_kv.qd (124M by default) with random weights, prefills a
 * prompt in one run, then decodes one token per run and reports the median
 * time per decoded token. Compile time is reported apart and not counted.
 * A decoding step reads every weight once, so memory bandwidth bounds it.
 * The benchmark measures the streaming read bandwidth with a generated
 * probe right before and after the decoding steps, and reports the bytes a
 * step reads per second as a fraction of it. The machine's
 * bandwidth varies with the load of other tenants, so that fraction is
 * steadier than the time.
 *
 * usage: bench_decode [--threads N] [--prompt N] [--steps N] [--layers N] [--fusion off]
 * --fusion off compiles the graphs without the fuse-elementwise pass that
 * model sessions run by default. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "runtime/model.h"
#include "runtime/threadpool.h"

#define MODEL QUADC_SOURCE_DIR "/examples/gpt2_kv.qd"

/* Returns uniform random weights in [-0.02, 0.02) for every param of the
 * model, from a xorshift generator; only their magnitude matters here. */
static rt_weights *random_weights(const fe_define *defines, int ndefines, ir_diag *d)
{
    ir_graph *g = fe_compile_file(MODEL, defines, ndefines, d);
    if (!g)
        return NULL;
    uint64_t state = BENCH_SEED;
    rt_weights *w = bench_uniform_weights(g, 0.02f, &state);
    ir_graph_free(g);
    return w;
}

int main(int argc, char **argv)
{
    int threads = bench_int_flag(argc, argv, "--threads", 2);
    int prompt = bench_int_flag(argc, argv, "--prompt", 128);
    int steps = bench_int_flag(argc, argv, "--steps", 64);
    int layers = bench_int_flag(argc, argv, "--layers", 12);
    bool fusion = true;
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--fusion") == 0)
            fusion = strcmp(argv[i + 1], "off") != 0;
    if (prompt < 1 || steps < 1 || prompt + steps > 1024) {
        fprintf(stderr, "bench_decode: --prompt and --steps must be >= 1 with a sum of at most 1024\n");
        return 2;
    }
    ir_diag *d = ir_diag_new(stderr);
    fe_define defines[] = {{"n_layer", layers}};
    rt_model_options o = {0};
    o.model_path = MODEL;
    o.weights_path = "random weights";
    o.weights = random_weights(defines, 1, d);
    o.defines = defines;
    o.ndefines = 1;
    o.engine = RT_MODEL_JIT;
    o.threads = threads;
    o.cache_len = prompt + steps;
    o.no_fuse_elementwise = !fusion;
    if (!o.weights)
        return 1;
    /* Bytes a decoding step reads: every weight but the rows of wpe it
     * does not use; the live cache rows are added per step below. */
    double weight_bytes = 0;
    int64_t n_embd = 0;
    for (int i = 0; i < o.weights->count; i++) {
        const rt_tensor *t = o.weights->tensors[i];
        if (strcmp(o.weights->names[i], "wpe.weight") == 0)
            n_embd = t->dims[1];
        else
            weight_bytes += (double)rt_tensor_nbytes(t);
    }

    double start = bench_wall_seconds();
    rt_model *m = rt_model_open(&o, d);
    if (!m || rt_model_prepare(m, prompt, d) != 0 || rt_model_prepare(m, 1, d) != 0)
        return 1;
    double compile_seconds = bench_wall_seconds() - start;

    int V = rt_model_vocab_size(m);
    int32_t *tokens = malloc(sizeof *tokens * (size_t)(prompt + steps));
    float *logits = malloc(sizeof *logits * (size_t)V);
    double *times = calloc((size_t)steps, sizeof *times);
    for (int i = 0; i < prompt + steps; i++)
        tokens[i] = (int32_t)((i * 7919) % V);
    start = bench_wall_seconds();
    if (rt_model_append(m, tokens, prompt, logits, d) != 0)
        return 1;
    double prefill_seconds = bench_wall_seconds() - start;
    double bandwidth_before = cg_measure_read_bandwidth(NULL, threads, (int64_t)512 << 20, d);
    clock_t cpu_start = clock();
    for (int s = 0; s < steps; s++) {
        start = bench_wall_seconds();
        if (rt_model_append(m, tokens + prompt + s, 1, logits, d) != 0)
            return 1;
        times[s] = bench_wall_seconds() - start;
    }
    double cpu_ms = 1e3 * (double)(clock() - cpu_start) / CLOCKS_PER_SEC / steps;
    double bandwidth_after = cg_measure_read_bandwidth(NULL, threads, (int64_t)512 << 20, d);
    qsort(times, (size_t)steps, sizeof *times, bench_compare_doubles);
    /* The median step's live cache: keys and values of every layer up to
     * position prompt + steps / 2. */
    double step_bytes = weight_bytes + 2.0 * layers * (prompt + steps / 2 + 1) * (double)n_embd * sizeof(float);
    double step_gbs = step_bytes / times[steps / 2] * 1e-9;

    printf("model: GPT-2 %d layers (examples/gpt2_kv.qd), cache of %d rows, %d threads, fusion %s\n", layers,
           prompt + steps, threads > 0 ? threads : rt_cpu_count(), fusion ? "on" : "off");
    printf("compile (2 graphs, bind weights): %.2f s\n", compile_seconds);
    printf("prefill: %d tokens in %.1f ms (%.2f ms per token)\n", prompt, prefill_seconds * 1e3,
           prefill_seconds * 1e3 / prompt);
    printf("decode: median %.2f ms per token over %d steps (min %.2f, max %.2f)\n", times[steps / 2] * 1e3, steps,
           times[0] * 1e3, times[steps - 1] * 1e3);
    /* On a loaded machine the wall time includes waiting for a core; the
     * CPU time of all threads shows the work itself. */
    printf("decode: %.2f ms of CPU time per token, summed over all threads\n", cpu_ms);
    printf("decode: %.1f MB read per token, %.1f GB/s at the median; streaming read bandwidth %.1f GB/s before and "
           "%.1f GB/s after: %.0f%% of the better one\n",
           step_bytes * 1e-6, step_gbs, bandwidth_before, bandwidth_after,
           100.0 * step_gbs / (bandwidth_before > bandwidth_after ? bandwidth_before : bandwidth_after));
    free(tokens);
    free(logits);
    free(times);
    rt_model_free(m);
    ir_diag_free(d);
    return 0;
}
