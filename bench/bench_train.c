/* Training-step benchmark: one step (forward, backward, gradient norm and
 * AdamW) of GPT-2 from examples/gpt2.qd on random tokens with random init.
 * It reports the median milliseconds per step after warm-up steps, the
 * matrix-product GFLOP/s of the step, and the peak resident memory, which
 * must stay under 4 GiB for GPT-2 124M at batch 4 x 64.
 *
 * usage: bench_train [--model 124m|small|both] [--threads N] [--steps N]
 *                    [--warmup N] [--B N] [--T N] [--executor jit|interp]
 * "small" is n_layer=4, n_embd=256, n_head=4 with GPT-2's vocabulary. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench_util.h"
#include "codegen/codegen.h"
#include "runtime/train.h"

#define MEMORY_LIMIT_BYTES (4ll << 30)

static int64_t peak_rss_bytes(void)
{
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (int64_t)usage.ru_maxrss * 1024; /* Linux reports KiB */
}

typedef struct bench_options {
    int threads, steps, warmup, B, T;
    const rt_executor *executor;
} bench_options;

/* Random tokens: the timing does not depend on the text. */
static void make_random_data(rt_train_data *data, int vocab, size_t n)
{
    int32_t *ids = malloc(n * sizeof *ids);
    rt_rng rng;
    rt_rng_seed(&rng, 5, 0);
    for (size_t i = 0; i < n; i++)
        ids[i] = (int32_t)rt_rng_below(&rng, (uint64_t)vocab);
    rt_train_data_init(data);
    rt_train_data_add(data, ids, n, 0.0, NULL);
}

/* Returns 0 when the run succeeded and stayed under the memory limit. */
static int bench_model(const char *label, const fe_define *defines, int ndefines, bool check_memory,
                       const bench_options *o)
{
    ir_diag *d = ir_diag_new(stderr);
    rt_train_config c = rt_train_default_config();
    c.model_path = QUADC_SOURCE_DIR "/examples/gpt2.qd";
    c.defines = defines;
    c.ndefines = ndefines;
    c.batch = o->B;
    c.seq = o->T;
    c.steps = o->warmup + o->steps;
    c.lr = 1e-4f;
    c.threads = o->threads;
    c.executor = o->executor;

    double start = bench_wall_seconds();
    rt_trainer *t = rt_trainer_new(&c, d);
    if (!t || rt_trainer_init_weights(t, NULL, d) != 0 || rt_trainer_prepare(t, d) != 0) {
        fprintf(stderr, "%s: setting up training failed\n", label);
        rt_trainer_free(t);
        ir_diag_free(d);
        return 1;
    }
    double setup_seconds = bench_wall_seconds() - start;
    int64_t setup_rss = peak_rss_bytes();
    rt_train_memory memory;
    rt_trainer_memory(t, &memory);
    double gflop = cg_graph_matmul_flops(t->train_graph) * 1e-9;

    rt_train_data data;
    make_random_data(&data, 50257, 200000);
    double *seconds = calloc((size_t)o->steps, sizeof *seconds);
    int rc = 0;
    for (int s = 0; s < o->warmup + o->steps && rc == 0; s++) {
        rt_train_step_result r;
        double step_start = bench_wall_seconds();
        rc = rt_trainer_step(t, &data, &r, d);
        double elapsed = bench_wall_seconds() - step_start;
        if (s >= o->warmup)
            seconds[s - o->warmup] = elapsed;
        fprintf(stderr, "%s: step %d loss %.4f %.1f ms%s\n", label, s + 1, r.loss, elapsed * 1e3,
                s < o->warmup ? " (warm-up)" : "");
    }
    int64_t rss = peak_rss_bytes();
    if (rc == 0) {
        qsort(seconds, (size_t)o->steps, sizeof *seconds, bench_compare_doubles);
        double median = seconds[o->steps / 2];
        printf("%-6s %5.1fM params  B=%d T=%d  %s, threads %d  setup %.1f s  %.1f ms/step  "
               "%.1f GFLOP/step  %.2f GFLOP/s  peak RSS %.2f GiB (%.2f GiB after setup)\n",
               label, (double)memory.param_count * 1e-6, o->B, o->T, o->executor->name,
               o->executor == rt_executor_interp() ? 1 : o->threads, setup_seconds,
               median * 1e3, gflop, gflop / median, (double)rss / (1 << 30), (double)setup_rss / (1 << 30));
    }
    if (rc == 0 && check_memory && rss > MEMORY_LIMIT_BYTES) {
        printf("%s: peak RSS %.2f GiB exceeds the 4 GiB limit\n", label, (double)rss / (1 << 30));
        rc = 1;
    }
    free(seconds);
    rt_train_data_free(&data);
    rt_trainer_free(t);
    ir_diag_free(d);
    return rc != 0;
}

int main(int argc, char **argv)
{
    bench_options o;
    o.threads = bench_int_flag(argc, argv, "--threads", 2);
    o.steps = bench_int_flag(argc, argv, "--steps", 5);
    o.warmup = bench_int_flag(argc, argv, "--warmup", 1);
    o.B = bench_int_flag(argc, argv, "--B", 4);
    o.T = bench_int_flag(argc, argv, "--T", 64);
    o.executor = rt_executor_find(bench_str_flag(argc, argv, "--executor", "jit"));
    const char *model = bench_str_flag(argc, argv, "--model", "both");
    if (!o.executor || o.steps < 1 || o.warmup < 0) {
        fprintf(stderr, "bench_train: invalid --executor, --steps or --warmup\n");
        return 2;
    }

    static const fe_define small[] = {{"n_layer", 4}, {"n_embd", 256}, {"n_head", 4}};
    int failed = 0;
    /* The 124M run goes first so that its peak RSS is not the small
     * model's left-over maximum. ru_maxrss only grows, so the small run's
     * figure is the maximum of both. */
    if (strcmp(model, "124m") == 0 || strcmp(model, "both") == 0)
        failed |= bench_model("124M", NULL, 0, o.B == 4 && o.T == 64, &o);
    if (strcmp(model, "small") == 0 || strcmp(model, "both") == 0)
        failed |= bench_model("small", small, 3, false, &o);
    return failed;
}
