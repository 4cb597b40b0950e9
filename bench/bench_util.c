/* Helpers shared by the benchmarks, declared in bench_util.h. */
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double bench_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int bench_compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, bench_compare_doubles);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

int bench_int_flag(int argc, char **argv, const char *flag, int fallback)
{
    const char *value = bench_str_flag(argc, argv, flag, NULL);
    return value ? atoi(value) : fallback;
}

const char *bench_str_flag(int argc, char **argv, const char *flag, const char *fallback)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return argv[i + 1];
    return fallback;
}

void bench_print_profile(const ir_graph *g, const double *seconds, int nforwards, const char *indent, int decimals)
{
    double by_op[IR_OP_COUNT] = {0}, total = 0;
    for (int i = 0; i < g->nvalues; i++) {
        by_op[g->values[i]->op] += seconds[i];
        total += seconds[i];
    }
    printf("%stime per op kind (mean over %d forwards, %.2f ms in total):\n", indent, nforwards,
           total * 1e3 / nforwards);
    for (;;) {
        int best = -1;
        for (int op = 0; op < IR_OP_COUNT; op++)
            if (by_op[op] > 0 && (best < 0 || by_op[op] > by_op[best]))
                best = op;
        if (best < 0)
            break;
        printf("%s  %-14s %8.*f ms  %5.1f%%\n", indent, ir_op_get((ir_op)best)->name, decimals,
               by_op[best] * 1e3 / nforwards, 100.0 * by_op[best] / total);
        by_op[best] = 0;
    }
}

void bench_fill_uniform(rt_tensor *t, float scale, uint64_t *state)
{
    float *p = t->data;
    int64_t n = rt_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        p[i] = scale * ((float)(*state >> 40) / 8388608.0f - 1.0f);
    }
}

rt_weights *bench_uniform_weights(const ir_graph *g, float scale, uint64_t *state)
{
    rt_weights *w = rt_weights_new();
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (v->op != IR_OP_PARAM)
            continue;
        rt_tensor *t = rt_tensor_new(IR_F32, v->type.rank, v->type.dims);
        bench_fill_uniform(t, scale, state);
        rt_weights_set(w, v->name, t);
    }
    return w;
}
