/* GPT-2 prefill with int8 linear layers. Compiles examples/gpt2.qd (124M by
 * default) with random weights and inserts W8A8 fake quantizers on every
 * linear and the LM head: per-channel symmetric weights and per-tensor
 * asymmetric activations. It calibrates them (min-max, with the JIT) on
 * the timed input, converts the weights to i8 and lowers the graph with
 * lower-int8. Then it JIT-compiles the fp32, fake-quant and lowered graphs and reports
 * the median wall and process CPU time of one forward (logits and loss)
 * of each, and how far the lowered logits are from the fake-quant ones.
 *
 * With --check 1 it also runs the fake-quant graph in the interpreter
 * and compares both JIT results with it (slow at 12 layers).
 * With --decode 1 it times one decoding step of examples/gpt2_kv.qd
 * instead: T=1 at position --pos (128 by default) against zero-filled
 * key-value caches of n_ctx = 1024 rows, calibrated on that same step.
 *
 * usage: bench_int8_gpt2 [--threads N] [--runs N] [--T N] [--layers N] [--check 1]
 *        bench_int8_gpt2 --decode 1 [--pos N] [--threads N] [--runs N] [--layers N] */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "passes/int8.h"
#include "passes/manager.h"
#include "passes/quantize.h"
#include "runtime/interp.h"
#include "runtime/tensor.h"
#include "runtime/threadpool.h"
#include "runtime/train_exec.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU time of all threads of the process, which excludes the time other
 * processes ran on a shared machine. */
static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_of(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, compare_doubles);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* Fills a tensor with uniform values in [-scale, scale) from a xorshift
 * generator. */
static void fill_uniform(rt_tensor *t, float scale, uint64_t *state)
{
    float *p = t->data;
    for (int64_t i = 0; i < rt_tensor_numel(t); i++) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        p[i] = scale * ((float)(*state >> 40) / 8388608.0f - 1.0f);
    }
}

static int parse_int_flag(int argc, char **argv, const char *flag, int fallback)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return atoi(argv[i + 1]);
    return fallback;
}

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

static int run_passes(ir_graph *g, const char *text, ir_diag *d)
{
    pass_pipeline pipeline;
    char err[256];
    if (pass_pipeline_parse(text, &pipeline, err, sizeof err) != 0) {
        fprintf(stderr, "bench_int8_gpt2: invalid pipeline '%s': %s\n", text, err);
        return -1;
    }
    pass_manager *pm = pass_manager_new(d);
    int rc = pass_manager_run(pm, &pipeline, g);
    pass_manager_free(pm);
    pass_pipeline_free(&pipeline);
    return rc;
}

typedef struct timing {
    double wall, cpu; /* medians, seconds per forward */
    rt_tensor *logits;
    float loss;
} timing;

/* Compiles g, binds the weights and times `runs` forwards after one
 * warm-up. Returns 0, or -1 after reporting. */
static int time_forward(const ir_graph *g, const rt_weights *w, const rt_weights *in, int threads, int runs,
                        timing *out, ir_diag *d)
{
    cg_options o = cg_default_options();
    o.threads = threads;
    cg_module *m = cg_compile(g, &o, d);
    if (!m || cg_bind_weights(m, w, d) != 0)
        return -1;
    double *wall = calloc((size_t)runs, sizeof *wall), *cpu = calloc((size_t)runs, sizeof *cpu);
    rt_tensor *outputs[2] = {NULL, NULL};
    for (int r = -1; r < runs; r++) {
        for (int k = 0; k < 2; k++)
            rt_tensor_free(outputs[k]);
        double t0 = now_seconds(), c0 = cpu_seconds();
        if (cg_run(m, w, in, outputs, d) != 0)
            return -1;
        if (r >= 0) {
            wall[r] = now_seconds() - t0;
            cpu[r] = cpu_seconds() - c0;
        }
    }
    out->wall = median_of(wall, runs);
    out->cpu = median_of(cpu, runs);
    out->logits = outputs[0];
    out->loss = outputs[1] ? ((float *)outputs[1]->data)[0] : NAN;
    rt_tensor_free(outputs[1]);
    free(wall);
    free(cpu);
    cg_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    int threads = parse_int_flag(argc, argv, "--threads", 1);
    int runs = parse_int_flag(argc, argv, "--runs", 5);
    int seq = parse_int_flag(argc, argv, "--T", 128);
    int layers = parse_int_flag(argc, argv, "--layers", 12);
    bool decode = parse_int_flag(argc, argv, "--decode", 0) != 0;
    int pos = parse_int_flag(argc, argv, "--pos", 128);
    if (runs < 1)
        runs = 1;
    if (decode)
        seq = 1;
    ir_diag *d = ir_diag_new(stderr);
    fe_define defs[] = {{"B", 1}, {"T", seq}, {"n_layer", layers}};
    const char *model = decode ? QUADC_SOURCE_DIR "/examples/gpt2_kv.qd" : QUADC_SOURCE_DIR "/examples/gpt2.qd";
    ir_graph *g = fe_compile_file(model, defs, 3, d);
    if (!g)
        return 1;
    ir_graph *fq = ir_graph_clone(g);
    if (run_passes(fq, "insert-fakequant{bits=w8a8}", d) != 0)
        return 1;

    rt_weights *w = rt_weights_new();
    uint64_t state = 0x2545f4914f6cdd1dull;
    for (int i = 0; i < fq->nvalues; i++) {
        const ir_value *v = fq->values[i];
        if (v->op != IR_OP_PARAM)
            continue;
        rt_tensor *t = rt_tensor_new(IR_F32, v->type.rank, v->type.dims);
        fill_uniform(t, 0.02f, &state);
        rt_weights_set(w, v->name, t);
    }
    rt_weights *in = rt_weights_new();
    int64_t dims[2] = {1, seq};
    const char *names[2] = {"idx", "targets"};
    for (int k = 0; k < (decode ? 1 : 2); k++) {
        rt_tensor *ids = rt_tensor_new(IR_I32, 2, dims);
        for (int64_t i = 0; i < seq; i++)
            ((int32_t *)ids->data)[i] = (int32_t)((i * 7919 + k) % 50257);
        rt_weights_set(in, names[k], ids);
    }
    if (decode) {
        /* The step's position and zero-filled caches (inputs of f32 type). */
        rt_tensor *p = rt_tensor_new(IR_I32, 0, NULL), *positions = rt_tensor_new(IR_I32, 1, dims + 1);
        *(int32_t *)p->data = pos;
        *(int32_t *)positions->data = pos;
        rt_weights_set(in, "pos", p);
        rt_weights_set(in, "positions", positions);
        for (int i = 0; i < fq->nvalues; i++) {
            const ir_value *v = fq->values[i];
            if (v->op == IR_OP_INPUT && v->type.dtype == IR_F32)
                rt_weights_set(in, v->name, rt_tensor_new(IR_F32, v->type.rank, v->type.dims));
        }
    }

    const rt_weights *batches[1] = {in};
    pass_calib_options co = pass_calib_default_options();
    co.executor = rt_executor_jit();
    co.threads = threads;
    if (pass_calibrate(fq, w, batches, 1, &co, d) != 0 || pass_int8_convert_weights(fq, w, d) < 0)
        return 1;
    ir_graph *lowered = ir_graph_clone(fq);
    if (run_passes(lowered, "lower-int8", d) != 0)
        return 1;

    timing t[3];
    const ir_graph *graphs[3] = {g, fq, lowered};
    const char *labels[3] = {"fp32", "fake-quant W8A8", "int8 (lower-int8)"};
    for (int i = 0; i < 3; i++)
        if (time_forward(graphs[i], w, in, threads, runs, &t[i], d) != 0)
            return 1;

    if (decode)
        printf("model: GPT-2 decoding step at position %d, %d layers, %d threads, median of %d runs\n", pos, layers,
               threads, runs);
    else
        printf("model: GPT-2, %d layers, B=1 T=%d, %d threads, median of %d runs\n", layers, seq, threads, runs);
    for (int i = 0; i < 3; i++) {
        printf("%-18s wall %8.2f ms  CPU %8.2f ms per forward, %.3f ms CPU per token", labels[i], t[i].wall * 1e3,
               t[i].cpu * 1e3, t[i].cpu * 1e3 / seq);
        if (!decode)
            printf(", loss %.4f", t[i].loss);
        printf("\n");
    }
    printf("int8 vs fake-quant logits (both JIT): max |diff| / max |logit| = %.3g\n",
           relative_difference(t[2].logits, t[1].logits));
    if (parse_int_flag(argc, argv, "--check", 0)) {
        rt_tensor *reference[2] = {NULL, NULL};
        if (rt_interp_run(fq, w, in, reference, d) != 0)
            return 1;
        printf("vs the fake-quant interpreter: fake-quant JIT %.3g, int8 JIT %.3g\n",
               relative_difference(t[1].logits, reference[0]), relative_difference(t[2].logits, reference[0]));
        rt_tensor_free(reference[0]);
        rt_tensor_free(reference[1]);
    }

    for (int i = 0; i < 3; i++)
        rt_tensor_free(t[i].logits);
    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(lowered);
    ir_graph_free(fq);
    ir_graph_free(g);
    ir_diag_free(d);
    return 0;
}
