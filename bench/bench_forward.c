/* GPT-2 prefill benchmark for the LLVM backend. It measures the fp32 FMA
 * peak with a generated microkernel and compiles examples/gpt2.qd (124M by
 * default) with random weights. Then it reports the JIT compile time, the
 * median forward time per token and the matrix-product GFLOP/s as a
 * fraction of the peak.
 *
 * usage: bench_forward [--threads N] [--runs N] [--T N] [--B N] [--layers N] [--profile 1]
 *                      [--fusion off|on|compare]
 *        bench_forward --linear M,K,N [--threads N] [--runs N]
 * The second form times one linear layer x[M,K] W[K,N] + b[N] instead.
 * With --profile 1 it also prints the time per op kind (the ticks between
 * ops add a few microseconds per value). --fusion on runs the
 * fuse-elementwise pass before compiling, which folds the bias add, gelu
 * and residual adds into the matrix products. --fusion compare compiles
 * the graph both ways and alternates their runs, so both see the same
 * load, and prints the ratio of their medians. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "passes/manager.h"
#include "runtime/tensor.h"
#include "runtime/threadpool.h"

/* A compiled forward graph and the times of its runs. */
typedef struct timed_module {
    const char *label;
    ir_graph *g;
    cg_module *m;
    double bind_s;
    double *wall, *cpu; /* per run */
    rt_tensor *outputs[2];
} timed_module;

/* Compiles g and binds the weights; returns the compile seconds, or a
 * negative value on error. */
static double compile_module(timed_module *t, const cg_options *o, const rt_weights *weights, int runs,
                             ir_diag *d)
{
    double t0 = bench_wall_seconds();
    t->m = cg_compile(t->g, o, d);
    double compile_s = bench_wall_seconds() - t0;
    if (!t->m)
        return -1;
    t0 = bench_wall_seconds();
    if (cg_bind_weights(t->m, weights, d) != 0)
        return -1;
    t->bind_s = bench_wall_seconds() - t0;
    t->wall = calloc((size_t)runs, sizeof *t->wall);
    t->cpu = calloc((size_t)runs, sizeof *t->cpu);
    return t->wall && t->cpu ? compile_s : -1;
}

/* Runs the module once; run -1 warms up and is not recorded. The outputs
 * of the last run stay in t->outputs. */
static int run_module(timed_module *t, const rt_weights *weights, const rt_weights *inputs, int r, ir_diag *d)
{
    for (int k = 0; k < t->g->noutputs; k++) {
        rt_tensor_free(t->outputs[k]);
        t->outputs[k] = NULL;
    }
    double t0 = bench_wall_seconds(), c0 = bench_cpu_seconds();
    if (cg_run(t->m, weights, inputs, t->outputs, d) != 0)
        return -1;
    if (r >= 0) {
        t->wall[r] = bench_wall_seconds() - t0;
        t->cpu[r] = bench_cpu_seconds() - c0;
    }
    return 0;
}

static void free_module(timed_module *t)
{
    for (int k = 0; k < 2; k++)
        rt_tensor_free(t->outputs[k]);
    free(t->wall);
    free(t->cpu);
    cg_free(t->m);
}

/* Times one linear layer and prints its best wall-clock and CPU-time
 * GFLOP/s over `runs` runs. */
static int bench_linear(const char *spec, int threads, int runs, ir_diag *d)
{
    long long m, k, n;
    if (sscanf(spec, "%lld,%lld,%lld", &m, &k, &n) != 3 || m < 1 || k < 1 || n < 1) {
        fprintf(stderr, "bench_forward: invalid --linear '%s'; expected M,K,N such as 128,768,3072\n", spec);
        return 1;
    }
    ir_graph *g = ir_graph_new("linear", d);
    ir_loc loc = {0};
    ir_type xt = {IR_F32, 2, {m, k}}, wt = {IR_F32, 2, {k, n}}, bt = {IR_F32, 1, {n}};
    int ops[3] = {ir_add_leaf(g, IR_OP_INPUT, "x", xt, NULL, loc), ir_add_leaf(g, IR_OP_PARAM, "w", wt, NULL, loc),
                  ir_add_leaf(g, IR_OP_PARAM, "b", bt, NULL, loc)};
    ir_add_output(g, ir_add(g, IR_OP_LINEAR, "y", ops, 3, NULL, loc));
    rt_weights *weights = rt_weights_new(), *inputs = rt_weights_new();
    uint64_t state = 0x9e3779b97f4a7c15ull;
    rt_tensor *w = rt_tensor_new(IR_F32, 2, wt.dims), *x = rt_tensor_new(IR_F32, 2, xt.dims);
    bench_fill_uniform(w, 0.02f, &state);
    bench_fill_uniform(x, 1.0f, &state);
    rt_weights_set(weights, "w", w);
    rt_weights_set(weights, "b", rt_tensor_new(IR_F32, 1, bt.dims));
    rt_weights_set(inputs, "x", x);
    cg_options o = cg_default_options();
    o.threads = threads;
    cg_module *mod = cg_compile(g, &o, d);
    if (!mod)
        return 1;
    double best_wall = 1e30, best_cpu = 1e30;
    for (int r = -1; r < runs; r++) {
        rt_tensor *y = NULL;
        double t0 = bench_wall_seconds(), c0 = bench_cpu_seconds();
        if (cg_run(mod, weights, inputs, &y, d) != 0)
            return 1;
        double wall = bench_wall_seconds() - t0, cpu = bench_cpu_seconds() - c0;
        rt_tensor_free(y);
        if (r >= 0 && wall < best_wall)
            best_wall = wall;
        if (r >= 0 && cpu < best_cpu)
            best_cpu = cpu;
    }
    double flops = 2.0 * (double)m * (double)k * (double)n;
    printf("linear %lldx%lldx%lld: best %.3f ms wall, %.1f GFLOP/s; best %.3f ms CPU, %.1f GFLOP per CPU-second\n", m,
           k, n, best_wall * 1e3, flops / best_wall * 1e-9, best_cpu * 1e3, flops / best_cpu * 1e-9);
    cg_free(mod);
    rt_weights_free(weights);
    rt_weights_free(inputs);
    ir_graph_free(g);
    return 0;
}

int main(int argc, char **argv)
{
    int threads = bench_int_flag(argc, argv, "--threads", 0);
    int runs = bench_int_flag(argc, argv, "--runs", 7);
    int seq = bench_int_flag(argc, argv, "--T", 128);
    int batch = bench_int_flag(argc, argv, "--B", 1);
    int layers = bench_int_flag(argc, argv, "--layers", 12);
    int profile = bench_int_flag(argc, argv, "--profile", 0);
    const char *fusion = bench_str_flag(argc, argv, "--fusion", "off");
    if (strcmp(fusion, "off") != 0 && strcmp(fusion, "on") != 0 && strcmp(fusion, "compare") != 0) {
        fprintf(stderr, "bench_forward: invalid --fusion '%s'; use off, on or compare\n", fusion);
        return 2;
    }
    if (runs < 1)
        runs = 1;
    int nthreads = threads > 0 ? threads : rt_cpu_count();
    ir_diag *d = ir_diag_new(stderr);
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--linear") == 0) {
            int rc = bench_linear(argv[i + 1], threads, runs, d);
            ir_diag_free(d);
            return rc;
        }
    }

    double peak1 = cg_measure_fma_peak(NULL, 1, d);
    double peakn = cg_measure_fma_peak(NULL, nthreads, d);
    printf("fp32 FMA peak: %.1f GFLOP/s on 1 thread, %.1f GFLOP/s on %d threads\n", peak1, peakn, nthreads);

    fe_define defs[] = {{"B", batch}, {"T", seq}, {"n_layer", layers}};
    ir_graph *g = fe_compile_file(QUADC_SOURCE_DIR "/examples/gpt2.qd", defs, 3, d);
    if (!g) {
        ir_diag_free(d);
        return 1;
    }

    uint64_t state = BENCH_SEED;
    rt_weights *weights = bench_uniform_weights(g, 0.02f, &state);
    int64_t nparams = 0;
    for (int i = 0; i < weights->count; i++)
        nparams += rt_tensor_numel(weights->tensors[i]);
    rt_weights *inputs = rt_weights_new();
    int64_t dims[2] = {batch, seq};
    const char *names[2] = {"idx", "targets"};
    for (int k = 0; k < 2; k++) {
        rt_tensor *ids = rt_tensor_new(IR_I32, 2, dims);
        for (int64_t i = 0; i < (int64_t)batch * seq; i++)
            ((int32_t *)ids->data)[i] = (int32_t)((i * 7919 + k) % 50257);
        rt_weights_set(inputs, names[k], ids);
    }

    /* The modules to time: the graph as written, fused, or both. */
    timed_module mods[2];
    memset(mods, 0, sizeof mods);
    int nmods = 0;
    if (strcmp(fusion, "on") != 0)
        mods[nmods++] = (timed_module){"unfused", g, NULL, 0, NULL, NULL, {NULL, NULL}};
    if (strcmp(fusion, "off") != 0) {
        ir_graph *fused = ir_graph_clone(g);
        if (pass_run_text(fused, "fuse-elementwise", d) != 0)
            return 1;
        mods[nmods++] = (timed_module){"fused", fused, NULL, 0, NULL, NULL, {NULL, NULL}};
    }
    cg_options o = cg_default_options();
    o.threads = threads;
    o.profile = profile;
    for (int i = 0; i < nmods; i++) {
        double compile_s = compile_module(&mods[i], &o, weights, runs, d);
        if (compile_s < 0)
            return 1;
        printf("%s: JIT compile (build IR, O3, LLJIT): %.2f s; bind weights (convert, pack): %.2f s\n",
               mods[i].label, compile_s, mods[i].bind_s);
    }
    for (int r = -1; r < runs; r++) /* run -1 warms up */
        for (int i = 0; i < nmods; i++)
            if (run_module(&mods[i], weights, inputs, r, d) != 0)
                return 1;

    printf("model: GPT-2, %d layers, %.1fM params, B=%d T=%d, %d threads\n", layers, (double)nparams * 1e-6, batch,
           seq, nthreads);
    double flops = cg_graph_matmul_flops(g);
    double wall_medians[2], cpu_medians[2];
    for (int i = 0; i < nmods; i++) {
        timed_module *t = &mods[i];
        double med = bench_median(t->wall, runs), cpu_med = bench_median(t->cpu, runs);
        double gflops = flops / med * 1e-9;
        wall_medians[i] = med;
        cpu_medians[i] = cpu_med;
        printf("%s forward: median %.2f ms over %d runs (min %.2f, max %.2f), %.3f ms per token\n", t->label,
               med * 1e3, runs, t->wall[0] * 1e3, t->wall[runs - 1] * 1e3, med * 1e3 / (batch * seq));
        printf("%s matrix products: %.2f GFLOP per forward, %.1f GFLOP/s = %.0f%% of the %d-thread FMA peak\n",
               t->label, flops * 1e-9, gflops, 100.0 * gflops / peakn, nthreads);
        printf("%s CPU time per forward (all threads): median %.2f ms, %.1f GFLOP per CPU-second\n", t->label,
               cpu_med * 1e3, flops / cpu_med * 1e-9);
        printf("%s loss = %.4f\n", t->label, ((float *)t->outputs[1]->data)[0]);
        if (profile)
            bench_print_profile(t->g, cg_profile_seconds(t->m), runs + 1, "", 2);
    }
    if (nmods == 2)
        printf("fused / unfused: wall median %.3f, CPU median %.3f (runs alternate)\n",
               wall_medians[1] / wall_medians[0], cpu_medians[1] / cpu_medians[0]);

    for (int i = 0; i < nmods; i++) {
        free_module(&mods[i]);
        if (mods[i].g != g)
            ir_graph_free(mods[i].g);
    }
    rt_weights_free(weights);
    rt_weights_free(inputs);
    ir_graph_free(g);
    ir_diag_free(d);
    return 0;
}
