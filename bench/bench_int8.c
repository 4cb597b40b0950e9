/* int8 GEMM benchmark: measures the AVX-512 VNNI peak with a generated
 * loop of independent vpdpbusd, then the generated int8 GEMM on the
 * GPT-2 124M linear-layer shapes (prefill M = 128 and decode M = 1) on 1
 * and 2 threads. It prints the median wall time per product, the int8
 * GOP/s (2 · M · K · N ops) and that as a fraction of the peak on the same
 * number of threads. On one thread it also prints the median process CPU
 * time per product and the GOP per CPU-second as a fraction of the peak.
 * On a machine shared with other work, wall times include time slices
 * given to other processes and the CPU figures do not. With more threads
 * the CPU columns are left out: Linux adds a running worker's CPU time to
 * the process total only at scheduler ticks, so sub-tick products would
 * be undercounted.
 *
 * Products of at most CG_GEMV_I8_MAX_M rows run the GEMV kernel and are
 * bound by reading the weights, which in a decoding step come from DRAM
 * (GPT-2 124M has 124 MB of int8 weights). Their samples therefore cycle
 * through copies of the packed weights that together exceed
 * GEMV_WEIGHT_BYTES, far more than the last-level cache, and the table
 * also gives the rate at which they read the packed weights, in GB/s.
 *
 * usage: bench_int8 [--threads N] [--runs N] [--output i32|f32|u8] [--portable 1]
 * --threads N measures only N threads (default: 1 and 2); --portable 1
 * forces the portable path (the fraction is then still of the VNNI peak). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "codegen/gemm_i8.h"
#include "runtime/threadpool.h"

typedef struct bench_shape {
    const char *layer;
    int64_t m, k, n;
} bench_shape;

static const bench_shape shapes[] = {
    {"attn.c_attn", 128, 768, 2304}, {"attn.c_proj", 128, 768, 768}, {"mlp.c_fc", 128, 768, 3072},
    {"mlp.c_proj", 128, 3072, 768},  {"attn.c_attn", 1, 768, 2304},  {"attn.c_proj", 1, 768, 768},
    {"mlp.c_fc", 1, 768, 3072},      {"mlp.c_proj", 1, 3072, 768},
};
#define NSHAPES ((int)(sizeof shapes / sizeof *shapes))

static double clock_seconds(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Bytes of weight copies a GEMV sample cycles through: 4 x the 32 MiB
 * L3 of the machines we measure on. */
#define GEMV_WEIGHT_BYTES (128ll << 20)

/* Buffers of one product, with data from a fixed xorshift sequence. */
typedef struct bench_data {
    uint8_t *a;
    int8_t *packed; /* `copies` copies of the packed weights, packed_stride bytes apart */
    int64_t copies, packed_stride;
    int32_t *colsum;
    void *c;
    float *scale;
    float *bias;
    void *args[CG_GEMM_I8_NARGS];
} bench_data;

static int bench_data_init(bench_data *b, const cg_gemm_i8_desc *d)
{
    uint64_t state = 0x9e3779b97f4a7c15ull;
    memset(b, 0, sizeof *b);
    int8_t *weights = malloc((size_t)(d->k * d->n));
    int64_t packed_bytes = (cg_gemm_i8_packed_bytes(&d->shape, d->k, d->n) + 63) / 64 * 64;
    b->packed_stride = packed_bytes;
    b->copies = d->m <= CG_GEMV_I8_MAX_M ? (GEMV_WEIGHT_BYTES + packed_bytes - 1) / packed_bytes : 1;
    b->a = aligned_alloc(64, (size_t)((d->m * d->k + 63) / 64 * 64));
    b->packed = aligned_alloc(64, (size_t)(packed_bytes * b->copies));
    b->colsum = malloc(sizeof *b->colsum * (size_t)cg_gemm_i8_colsum_count(&d->shape, d->n));
    b->c = aligned_alloc(64, (size_t)((d->m * d->n * 4 + 63) / 64 * 64));
    b->scale = malloc(sizeof *b->scale * (size_t)d->n);
    b->bias = malloc(sizeof *b->bias * (size_t)d->n);
    if (!weights || !b->a || !b->packed || !b->colsum || !b->c || !b->scale || !b->bias) {
        free(weights);
        return -1;
    }
    for (int64_t i = 0; i < d->m * d->k; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        b->a[i] = (uint8_t)state;
    }
    for (int64_t i = 0; i < d->k * d->n; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        weights[i] = (int8_t)(state >> 8);
    }
    for (int64_t j = 0; j < d->n; j++) {
        b->scale[j] = 1e-4f;
        b->bias[j] = 0.5f;
    }
    cg_gemm_i8_pack_b(&d->shape, d->k, d->n, weights, d->n, false, b->packed, b->colsum);
    for (int64_t i = 1; i < b->copies; i++)
        memcpy(b->packed + i * packed_bytes, b->packed, (size_t)packed_bytes);
    free(weights);
    b->args[CG_GEMM_I8_ARG_A] = b->a;
    b->args[CG_GEMM_I8_ARG_PACKED] = b->packed;
    b->args[CG_GEMM_I8_ARG_COLSUM] = b->colsum;
    b->args[CG_GEMM_I8_ARG_C] = b->c;
    b->args[CG_GEMM_I8_ARG_SCALE] = b->scale;
    b->args[CG_GEMM_I8_ARG_BIAS] = b->bias;
    return 0;
}

static void bench_data_free(bench_data *b)
{
    free(b->a);
    free(b->packed);
    free(b->colsum);
    free(b->c);
    free(b->scale);
    free(b->bias);
}

/* Median wall and process CPU seconds of one product. */
typedef struct product_time {
    double wall, cpu;
} product_time;

static double median_of(double *samples, int n)
{
    qsort(samples, (size_t)n, sizeof *samples, bench_compare_doubles);
    return samples[n / 2];
}

/* Times `runs` samples after one warm-up run. Decode shapes take
 * microseconds, so each sample times a batch of products and divides.
 * Returns -1 when out of memory. */
static int time_product(rt_task_fn fn, const cg_gemm_i8_desc *d, bench_data *b, rt_pool *pool, int runs,
                        product_time *out)
{
    int64_t tasks = cg_gemm_i8_tasks(d);
    int batch = d->m * d->k * d->n < 50000000 ? 20 : 1;
    int64_t copy = 0;
    double *wall = malloc(sizeof *wall * (size_t)runs);
    double *cpu = malloc(sizeof *cpu * (size_t)runs);
    if (!wall || !cpu) {
        free(wall);
        free(cpu);
        return -1;
    }
    rt_pool_parallel_for(pool, fn, b->args, tasks, 1);
    for (int r = 0; r < runs; r++) {
        double w0 = clock_seconds(CLOCK_MONOTONIC), c0 = clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
        for (int i = 0; i < batch; i++) {
            copy = (copy + 1) % b->copies;
            b->args[CG_GEMM_I8_ARG_PACKED] = b->packed + copy * b->packed_stride;
            rt_pool_parallel_for(pool, fn, b->args, tasks, 1);
        }
        wall[r] = (clock_seconds(CLOCK_MONOTONIC) - w0) / batch;
        cpu[r] = (clock_seconds(CLOCK_PROCESS_CPUTIME_ID) - c0) / batch;
    }
    out->wall = median_of(wall, runs);
    out->cpu = median_of(cpu, runs);
    free(wall);
    free(cpu);
    return 0;
}

static const char *output_name(cg_gemm_i8_output out)
{
    switch (out) {
    case CG_GEMM_I8_OUT_I32:
        return "i32";
    case CG_GEMM_I8_OUT_F32:
        return "f32";
    case CG_GEMM_I8_OUT_U8:
        return "u8";
    case CG_GEMM_I8_OUT_S8:
        return "s8";
    case CG_GEMM_I8_OUT_DEQUANT:
        return "dequant";
    }
    return "?";
}

static int parse_output(const char *s, cg_gemm_i8_output *out)
{
    if (strcmp(s, "i32") == 0)
        *out = CG_GEMM_I8_OUT_I32;
    else if (strcmp(s, "f32") == 0)
        *out = CG_GEMM_I8_OUT_F32;
    else if (strcmp(s, "u8") == 0)
        *out = CG_GEMM_I8_OUT_U8;
    else
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    int only_threads = 0, runs = 31, portable = 0;
    cg_gemm_i8_output output = CG_GEMM_I8_OUT_I32;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0) {
            only_threads = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--runs") == 0) {
            runs = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--portable") == 0) {
            portable = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--output") == 0 && parse_output(argv[i + 1], &output) == 0) {
            continue;
        } else {
            fprintf(stderr, "bench_int8: invalid option '%s %s'\n"
                            "usage: bench_int8 [--threads N] [--runs N] [--output i32|f32|u8] [--portable 1]\n",
                    argv[i], argv[i + 1]);
            return 2;
        }
    }
    if (runs < 1)
        runs = 1;

    ir_diag *diag = ir_diag_new(stderr);
    int thread_counts[2] = {1, 2};
    int nthread_counts = 2;
    if (only_threads > 0) {
        thread_counts[0] = only_threads;
        nthread_counts = 1;
    }
    double peak[2];
    for (int t = 0; t < nthread_counts; t++) {
        peak[t] = cg_measure_vnni_peak(NULL, thread_counts[t], diag);
        if (peak[t] < 0) {
            ir_diag_free(diag);
            return 1;
        }
        printf("int8 VNNI peak, %d thread%s: %.1f GOP/s\n", thread_counts[t], thread_counts[t] > 1 ? "s" : "",
               peak[t]);
    }

    double requant = 1e-3;
    cg_gemm_i8_desc descs[NSHAPES];
    memset(descs, 0, sizeof descs);
    for (int i = 0; i < NSHAPES; i++) {
        descs[i].name = shapes[i].layer;
        descs[i].m = shapes[i].m;
        descs[i].k = shapes[i].k;
        descs[i].n = shapes[i].n;
        descs[i].a_zero_point = 128;
        descs[i].output = output;
        descs[i].has_bias = output == CG_GEMM_I8_OUT_F32;
        descs[i].requant = &requant;
        descs[i].nrequant = 1;
        descs[i].out_zero_point = 128;
    }
    cg_gemm_i8_module *m = cg_gemm_i8_compile(NULL, !portable, descs, NSHAPES, diag);
    if (!m) {
        ir_diag_free(diag);
        return 1;
    }
    printf("path: %s, output: %s, median of %d runs\n",
           descs[0].shape.isa == CG_GEMM_I8_VNNI ? "vnni" : "portable", output_name(output), runs);
    printf("%-12s %5s %5s %5s %7s %9s %8s %7s %9s %10s %9s %8s\n", "layer", "M", "K", "N", "threads", "wall us",
           "GOP/s", "of peak", "CPU us", "GOP/CPU-s", "of peak", "B GB/s");
    int status = 0;
    for (int t = 0; t < nthread_counts && status == 0; t++) {
        rt_pool *pool = rt_pool_new(thread_counts[t]);
        for (int i = 0; i < NSHAPES && pool; i++) {
            bench_data data;
            if (bench_data_init(&data, &descs[i]) != 0) {
                fprintf(stderr, "bench_int8: out of memory for %s\n", shapes[i].layer);
                bench_data_free(&data);
                status = 1;
                break;
            }
            product_time time;
            if (time_product(cg_gemm_i8_kernel(m, i), &descs[i], &data, pool, runs, &time) != 0) {
                fprintf(stderr, "bench_int8: out of memory timing %s\n", shapes[i].layer);
                bench_data_free(&data);
                status = 1;
                break;
            }
            double gops = 2.0 * (double)(shapes[i].m * shapes[i].k * shapes[i].n) * 1e-9;
            printf("%-12s %5lld %5lld %5lld %7d %9.1f %8.1f %6.1f%%", shapes[i].layer, (long long)shapes[i].m,
                   (long long)shapes[i].k, (long long)shapes[i].n, thread_counts[t], time.wall * 1e6,
                   gops / time.wall, 100.0 * gops / time.wall / peak[t]);
            if (thread_counts[t] == 1)
                printf(" %9.1f %10.1f %8.1f%%", time.cpu * 1e6, gops / time.cpu, 100.0 * gops / time.cpu / peak[t]);
            else
                printf(" %9s %10s %9s", "-", "-", "-");
            /* The packed weights the product reads, per wall second. */
            printf(" %8.1f\n", (double)data.packed_stride / time.wall * 1e-9);
            bench_data_free(&data);
        }
        if (!pool)
            status = 1;
        rt_pool_free(pool);
    }
    cg_gemm_i8_module_free(m);
    ir_diag_free(diag);
    return status;
}
