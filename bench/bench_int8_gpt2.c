/* GPT-2 prefill and decoding with int8 linear layers. Compiles
 * examples/gpt2.qd (124M by default) with random weights and inserts W8A8
 * fake quantizers on every linear and the LM head: per-channel symmetric
 * weights and per-tensor asymmetric activations. It calibrates them
 * (min-max, with the JIT) on the timed input, converts the weights to i8
 * and lowers the graph with lower-int8. Then it JIT-compiles the fp32,
 * fake-quant and lowered graphs and reports the median wall and process
 * CPU time of one forward (logits and loss) of each, and how far the
 * lowered logits are from the fake-quant ones.
 *
 * With --check 1 it also runs the fake-quant graph in the interpreter
 * and compares both JIT results with it (slow at 12 layers).
 * With --decode 1 it times one decoding step of examples/gpt2_kv.qd
 * instead: T=1 at position --pos (128 by default) against zero-filled
 * key-value caches of --cache rows (n_ctx = 1024 by default), calibrated
 * on that same step. The attention reads every cache row, so --cache sets
 * how much of a step is attention.
 * With --all 1 it measures the int8 VNNI peak on the same threads, then
 * times prefill and a decoding step. A summary gives the int8 over fp32
 * speedups and the int8 products' throughput as a fraction of that peak.
 * --fake-quant 0 skips timing the fake-quant graphs.
 * With --profile 1 it prints the time per op kind of each graph.
 *
 * usage: bench_int8_gpt2 [--threads N] [--runs N] [--T N] [--layers N] [--check 1] [--profile 1]
 *        bench_int8_gpt2 --decode 1 [--pos N] [--cache N] [--threads N] [--runs N] [--layers N] [--profile 1]
 *        bench_int8_gpt2 --all 1 [--fake-quant 0] [--T N] [--pos N] [--cache N] [--threads N] [--runs N]
 * --threads 0 (the default) uses one thread per core. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "codegen/codegen.h"
#include "codegen/gemm_i8.h"
#include "frontend/frontend.h"
#include "passes/int8.h"
#include "passes/manager.h"
#include "passes/quantize.h"
#include "runtime/interp.h"
#include "runtime/tensor.h"
#include "runtime/threadpool.h"
#include "runtime/train_exec.h"

/* Returns max |a - b| / max |b|. */
static double relative_difference(const rt_tensor *a, const rt_tensor *b)
{
    double diff = 0, scale = 0;
    const float *x = a->data, *y = b->data;
    for (int64_t i = 0; i < rt_tensor_numel(b); i++) {
        diff = fmax(diff, fabs((double)x[i] - y[i]));
        scale = fmax(scale, fabs((double)y[i]));
    }
    return diff / scale;
}

typedef struct timing {
    double wall, cpu; /* medians, seconds per forward */
    double min_wall;
    double compile, bind; /* seconds of cg_compile and cg_bind_weights (packing the weights) */
    rt_tensor *logits;
    float loss;
} timing;

/* Compiles g, binds the weights and times `runs` forwards after one
 * warm-up. Returns 0, or -1 after reporting. */
static int time_forward(const ir_graph *g, const rt_weights *w, const rt_weights *in, int threads, int runs,
                        bool profile, timing *out, ir_diag *d)
{
    cg_options o = cg_default_options();
    o.threads = threads;
    o.profile = profile;
    double t0 = bench_wall_seconds();
    cg_module *m = cg_compile(g, &o, d);
    if (!m)
        return -1;
    double t1 = bench_wall_seconds();
    if (cg_bind_weights(m, w, d) != 0)
        return -1;
    out->compile = t1 - t0;
    out->bind = bench_wall_seconds() - t1;
    double *wall = calloc((size_t)runs, sizeof *wall), *cpu = calloc((size_t)runs, sizeof *cpu);
    rt_tensor *outputs[2] = {NULL, NULL};
    for (int r = -1; r < runs; r++) {
        for (int k = 0; k < 2; k++)
            rt_tensor_free(outputs[k]);
        t0 = bench_wall_seconds();
        double c0 = bench_cpu_seconds();
        if (cg_run(m, w, in, outputs, d) != 0)
            return -1;
        if (r >= 0) {
            wall[r] = bench_wall_seconds() - t0;
            cpu[r] = bench_cpu_seconds() - c0;
        }
    }
    out->wall = bench_median(wall, runs);
    out->min_wall = wall[0]; /* sorted by median */
    out->cpu = bench_median(cpu, runs);
    out->logits = outputs[0];
    out->loss = outputs[1] ? ((float *)outputs[1]->data)[0] : NAN;
    rt_tensor_free(outputs[1]);
    if (profile)
        bench_print_profile(g, cg_profile_seconds(m), runs + 1, "  ", 3);
    free(wall);
    free(cpu);
    cg_free(m);
    return 0;
}

typedef struct bench_options {
    int threads, runs, seq, layers, pos, cache;
    bool profile, check, fake_quant;
} bench_options;

/* Timings of one setting (prefill or a decoding step) and the work of its
 * int8 products. */
typedef struct setting_result {
    timing t[3]; /* fp32, fake quant (unset when skipped), int8 */
    double int8_ops;          /* 2 · M · K · N over the q.linear ops */
    double int8_weight_bytes; /* bytes of their i8 weights */
} setting_result;

enum { GRAPH_FP32, GRAPH_FAKE_QUANT, GRAPH_INT8, NGRAPHS };
static const char *const graph_labels[NGRAPHS] = {"fp32", "fake-quant W8A8", "int8 (lower-int8)"};

static void count_int8_work(const ir_graph *g, setting_result *r)
{
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (v->dead || v->op != IR_OP_Q_LINEAR)
            continue;
        const ir_type *x = &g->values[v->ops[0]]->type;
        double k = (double)x->dims[x->rank - 1], n = (double)v->type.dims[v->type.rank - 1];
        double m = (double)ir_type_numel(x) / k;
        r->int8_ops += 2.0 * m * k * n;
        r->int8_weight_bytes += k * n;
    }
}

/* Returns the token ids (and targets for prefill), and for a decoding
 * step its position and zero-filled caches (the f32 inputs of g). */
static rt_weights *bench_inputs(const ir_graph *g, const bench_options *o, bool decode)
{
    rt_weights *in = rt_weights_new();
    int seq = decode ? 1 : o->seq;
    int64_t dims[2] = {1, seq};
    const char *names[2] = {"idx", "targets"};
    for (int k = 0; k < (decode ? 1 : 2); k++) {
        rt_tensor *ids = rt_tensor_new(IR_I32, 2, dims);
        for (int64_t i = 0; i < seq; i++)
            ((int32_t *)ids->data)[i] = (int32_t)((i * 7919 + k) % 50257);
        rt_weights_set(in, names[k], ids);
    }
    if (!decode)
        return in;
    rt_tensor *p = rt_tensor_new(IR_I32, 0, NULL), *positions = rt_tensor_new(IR_I32, 1, dims + 1);
    *(int32_t *)p->data = o->pos;
    *(int32_t *)positions->data = o->pos;
    rt_weights_set(in, "pos", p);
    rt_weights_set(in, "positions", positions);
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (v->op == IR_OP_INPUT && v->type.dtype == IR_F32)
            rt_weights_set(in, v->name, rt_tensor_new(IR_F32, v->type.rank, v->type.dims));
    }
    return in;
}

static void print_setting(const bench_options *o, bool decode, const setting_result *r)
{
    int seq = decode ? 1 : o->seq;
    if (decode)
        printf("model: GPT-2 decoding step at position %d, caches of %d rows, %d layers, %d threads, median of %d "
               "runs\n", o->pos, o->cache, o->layers, o->threads, o->runs);
    else
        printf("model: GPT-2, %d layers, B=1 T=%d, %d threads, median of %d runs\n", o->layers, seq, o->threads,
               o->runs);
    for (int i = 0; i < NGRAPHS; i++) {
        if (i == GRAPH_FAKE_QUANT && !o->fake_quant)
            continue;
        const timing *t = &r->t[i];
        printf("%-18s wall %8.2f ms (min %.2f)  CPU %8.2f ms per forward, %.3f ms CPU per token", graph_labels[i],
               t->wall * 1e3, t->min_wall * 1e3, t->cpu * 1e3, t->cpu * 1e3 / seq);
        if (!decode)
            printf(", loss %.4f", t->loss);
        printf("; compile %.2f s, bind %.2f s\n", t->compile, t->bind);
    }
    if (o->fake_quant)
        printf("int8 vs fake-quant logits (both JIT): max |diff| / max |logit| = %.3g\n",
               relative_difference(r->t[GRAPH_INT8].logits, r->t[GRAPH_FAKE_QUANT].logits));
}

/* Builds, calibrates, lowers and times the three graphs of one setting.
 * Returns 0, or -1 after reporting. */
static int bench_setting(const bench_options *o, bool decode, setting_result *r, ir_diag *d)
{
    memset(r, 0, sizeof *r);
    fe_define defs[] = {{"B", 1}, {"T", decode ? 1 : o->seq}, {"n_layer", o->layers}, {"n_cache", o->cache}};
    const char *model = decode ? QUADC_SOURCE_DIR "/examples/gpt2_kv.qd" : QUADC_SOURCE_DIR "/examples/gpt2.qd";
    ir_graph *g = fe_compile_file(model, defs, decode ? 4 : 3, d);
    if (!g)
        return -1;
    ir_graph *fq = ir_graph_clone(g);
    if (pass_run_text(fq, "insert-fakequant{bits=w8a8}", d) != 0)
        return -1;
    uint64_t state = BENCH_SEED;
    rt_weights *w = bench_uniform_weights(fq, 0.02f, &state);
    rt_weights *in = bench_inputs(fq, o, decode);

    const rt_weights *batches[1] = {in};
    pass_calib_options co = pass_calib_default_options();
    co.executor = rt_executor_jit();
    co.threads = o->threads;
    if (pass_calibrate(fq, w, batches, 1, &co, d) != 0 || pass_int8_convert_weights(fq, w, d) < 0)
        return -1;
    ir_graph *lowered = ir_graph_clone(fq);
    if (pass_run_text(lowered, "lower-int8", d) != 0)
        return -1;
    count_int8_work(lowered, r);

    const ir_graph *graphs[NGRAPHS] = {g, fq, lowered};
    for (int i = 0; i < NGRAPHS; i++) {
        if (i == GRAPH_FAKE_QUANT && !o->fake_quant)
            continue;
        if (o->profile)
            printf("%s:\n", graph_labels[i]);
        if (time_forward(graphs[i], w, in, o->threads, o->runs, o->profile, &r->t[i], d) != 0)
            return -1;
    }
    print_setting(o, decode, r);

    if (o->check) {
        rt_tensor *reference[2] = {NULL, NULL};
        if (rt_interp_run(fq, w, in, reference, d) != 0)
            return -1;
        printf("vs the fake-quant interpreter: int8 JIT %.3g", relative_difference(r->t[GRAPH_INT8].logits,
                                                                                   reference[0]));
        if (o->fake_quant)
            printf(", fake-quant JIT %.3g", relative_difference(r->t[GRAPH_FAKE_QUANT].logits, reference[0]));
        printf("\n");
        rt_tensor_free(reference[0]);
        rt_tensor_free(reference[1]);
    }
    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(lowered);
    ir_graph_free(fq);
    ir_graph_free(g);
    return 0;
}

static void free_setting(setting_result *r)
{
    for (int i = 0; i < NGRAPHS; i++)
        rt_tensor_free(r->t[i].logits);
}

/* Prints the int8 over fp32 speedups of one setting and the int8
 * products' rate as a fraction of the VNNI peak, per forward: the time
 * includes the f32 ops between the products. */
static void print_summary_line(const char *setting, int tokens, const setting_result *r, double peak,
                               double bandwidth)
{
    const timing *f = &r->t[GRAPH_FP32], *q = &r->t[GRAPH_INT8];
    double gops = r->int8_ops / q->wall * 1e-9;
    printf("%-8s fp32 %8.2f ms (%.3f ms/token), int8 %8.2f ms (%.3f ms/token); int8 speedup %.2fx wall, %.2fx CPU\n",
           setting, f->wall * 1e3, f->wall * 1e3 / tokens, q->wall * 1e3, q->wall * 1e3 / tokens, f->wall / q->wall,
           f->cpu / q->cpu);
    double gbs = r->int8_weight_bytes / q->wall * 1e-9;
    printf("%-8s int8 products %.2f GOP per forward, %.1f GOP/s = %.1f%% of the VNNI peak; i8 weights %.1f MB, "
           "read at %.1f GB/s = %.0f%% of the streaming read bandwidth\n", "", r->int8_ops * 1e-9, gops,
           100.0 * gops / peak, r->int8_weight_bytes * 1e-6, gbs, 100.0 * gbs / bandwidth);
}

int main(int argc, char **argv)
{
    bench_options o;
    o.threads = bench_int_flag(argc, argv, "--threads", 0);
    o.runs = bench_int_flag(argc, argv, "--runs", 5);
    o.seq = bench_int_flag(argc, argv, "--T", 128);
    o.layers = bench_int_flag(argc, argv, "--layers", 12);
    o.pos = bench_int_flag(argc, argv, "--pos", 128);
    o.cache = bench_int_flag(argc, argv, "--cache", 1024);
    o.profile = bench_int_flag(argc, argv, "--profile", 0) != 0;
    o.check = bench_int_flag(argc, argv, "--check", 0) != 0;
    o.fake_quant = bench_int_flag(argc, argv, "--fake-quant", 1) != 0;
    bool decode = bench_int_flag(argc, argv, "--decode", 0) != 0;
    bool all = bench_int_flag(argc, argv, "--all", 0) != 0;
    if (o.runs < 1)
        o.runs = 1;
    if ((decode || all) && (o.cache < 1 || o.cache > 1024 || o.pos < 0 || o.pos >= o.cache)) {
        fprintf(stderr, "bench_int8_gpt2: --cache must be in 1 .. 1024 and --pos in 0 .. cache - 1, got %d and %d\n",
                o.cache, o.pos);
        return 2;
    }
    if (o.threads <= 0)
        o.threads = rt_cpu_count();
    ir_diag *d = ir_diag_new(stderr);
    if (!all) {
        setting_result r;
        int rc = bench_setting(&o, decode, &r, d);
        free_setting(&r);
        ir_diag_free(d);
        return rc == 0 ? 0 : 1;
    }

    double peak = cg_measure_vnni_peak(NULL, o.threads, d);
    if (peak < 0)
        return 1;
    printf("int8 VNNI peak, %d threads: %.1f GOP/s\n", o.threads, peak);
    setting_result prefill, step;
    if (bench_setting(&o, false, &prefill, d) != 0 || bench_setting(&o, true, &step, d) != 0)
        return 1;
    /* Measured after the runs, closest to the decoding steps. */
    double bandwidth = cg_measure_read_bandwidth(NULL, o.threads, (int64_t)512 << 20, d);
    if (bandwidth < 0)
        return 1;
    printf("summary, %d threads, medians of %d runs, VNNI peak %.1f GOP/s, streaming read bandwidth %.1f GB/s:\n",
           o.threads, o.runs, peak, bandwidth);
    print_summary_line("prefill", o.seq, &prefill, peak, bandwidth);
    print_summary_line("decode", 1, &step, peak, bandwidth);
    free_setting(&prefill);
    free_setting(&step);
    ir_diag_free(d);
    return 0;
}
