/* The int8 GEMM and GEMV kernels against plain C references, on the VNNI
 * path (when the host has AVX-512 VNNI) and on the portable path. int32
 * outputs must equal the reference for every shape. Requantized outputs
 * must equal cg_requantize and be within one unit of rounding the real
 * product. Dequantized f32 outputs must match double math within
 * rtol 1e-6, and q.linear's dequantizing stage must equal the same f32
 * operations in C exactly. Products of at most CG_GEMV_I8_MAX_M rows take
 * the GEMV kernel. The fixed-point helpers are checked on known values,
 * and the assembly for named CPUs is checked for vpdpbusd. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "codegen/gemm_i8.h"
#include "codegen/quant_arith.h"
#include "runtime/threadpool.h"

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Returns a uniform integer in [lo, hi]. */
static int32_t random_int(int32_t lo, int32_t hi)
{
    return lo + (int32_t)(next_random() % (uint64_t)(hi - lo + 1));
}

static double random_real(double lo, double hi)
{
    return lo + (hi - lo) * (double)(next_random() >> 11) / 9007199254740992.0;
}

/* One GEMM's data: A [m, lda], B [k, n], the packed B and the exact
 * accumulators acc = Σ_k (a - za) · b (+ integer bias). */
typedef struct gemm_case {
    cg_gemm_i8_desc desc;
    uint8_t *a; /* raw bytes, read as s8 when desc.a_signed */
    int8_t *b;
    int32_t *bias_i32;
    float *bias_f32;
    float *scale;
    int32_t *acc;
    bool misalign_packed; /* place packed B 4 bytes past a 64-byte boundary */
    /* OUT_DEQUANT inputs: rowsum[m] = Σ_k (a[m,k] - z_x), with z_x the
     * integer value of x_zero, and weight scales and zero points. */
    float x_scale, x_zero;
    float *w_scale, *w_zero;
    int32_t *rowsum;
} gemm_case;

static void case_init(gemm_case *c, const char *name, int64_t m, int64_t k, int64_t n)
{
    memset(c, 0, sizeof *c);
    c->desc.name = name;
    c->desc.m = m;
    c->desc.k = k;
    c->desc.n = n;
}

/* Fills A with values within `a_spread` of the zero point, B within
 * +-b_spread and the integer bias within a quarter of the typical
 * accumulator size, then computes the reference accumulators. */
static void case_fill(gemm_case *c, int32_t a_spread, int32_t b_spread)
{
    const cg_gemm_i8_desc *d = &c->desc;
    int64_t lda = d->lda ? d->lda : d->k;
    int32_t a_lo = d->a_signed ? -128 : 0, a_hi = d->a_signed ? 127 : 255;
    int32_t lo = d->a_zero_point - a_spread < a_lo ? a_lo : d->a_zero_point - a_spread;
    int32_t hi = d->a_zero_point + a_spread > a_hi ? a_hi : d->a_zero_point + a_spread;
    c->a = malloc((size_t)(d->m * lda));
    c->b = malloc((size_t)(d->k * d->n));
    c->bias_i32 = malloc(sizeof *c->bias_i32 * (size_t)d->n);
    c->bias_f32 = malloc(sizeof *c->bias_f32 * (size_t)d->n);
    c->scale = malloc(sizeof *c->scale * (size_t)d->n);
    c->acc = malloc(sizeof *c->acc * (size_t)(d->m * d->n));
    for (int64_t i = 0; i < d->m * lda; i++)
        c->a[i] = (uint8_t)random_int(lo, hi);
    for (int64_t i = 0; i < d->k * d->n; i++)
        c->b[i] = (int8_t)random_int(-b_spread, b_spread > 127 ? 127 : b_spread);
    for (int64_t j = 0; j < d->n; j++) {
        int32_t bias_range = (int32_t)(a_spread * b_spread * sqrt((double)d->k) / 4) + 1;
        c->bias_i32[j] = random_int(-bias_range, bias_range);
        c->bias_f32[j] = (float)random_real(-1, 1);
        c->scale[j] = (float)random_real(1e-6, 1e-4);
    }
    /* Row-at-a-time int32 sums, which the C compiler vectorizes. They
     * cannot overflow: |sum| <= 3072 · 255 · 128 + bias < 2^31. */
    for (int64_t i = 0; i < d->m; i++) {
        int32_t *row = c->acc + i * d->n;
        bool integer_bias = d->output != CG_GEMM_I8_OUT_F32 && d->output != CG_GEMM_I8_OUT_DEQUANT;
        for (int64_t j = 0; j < d->n; j++)
            row[j] = d->has_bias && integer_bias ? c->bias_i32[j] : 0;
        for (int64_t kk = 0; kk < d->k; kk++) {
            uint8_t raw = c->a[i * lda + kk];
            int32_t a = (d->a_signed ? (int32_t)(int8_t)raw : (int32_t)raw) - d->a_zero_point;
            const int8_t *brow = c->b + kk * d->n;
            for (int64_t j = 0; j < d->n; j++)
                row[j] += a * brow[j];
        }
    }
}

static void case_free(gemm_case *c)
{
    free(c->a);
    free(c->b);
    free(c->bias_i32);
    free(c->bias_f32);
    free(c->scale);
    free(c->acc);
    free(c->w_scale);
    free(c->w_zero);
    free(c->rowsum);
}

static size_t out_elem_size(cg_gemm_i8_output out)
{
    return out == CG_GEMM_I8_OUT_U8 || out == CG_GEMM_I8_OUT_S8 ? 1 : 4;
}

/* Packs B for d->shape and runs kernel fn of d on the pool into a new
 * output buffer [m, ldc]. */
static void *case_run(const gemm_case *c, const cg_gemm_i8_desc *d, rt_task_fn fn, rt_pool *pool)
{
    int64_t ldc = d->ldc ? d->ldc : d->n;
    int64_t offset = c->misalign_packed ? 4 : 0;
    int64_t packed_bytes = cg_gemm_i8_packed_bytes(&d->shape, d->k, d->n) + offset;
    int8_t *packed_block = aligned_alloc(64, (size_t)((packed_bytes + 63) / 64 * 64));
    int8_t *packed = packed_block + offset;
    int32_t *colsum = malloc(sizeof *colsum * (size_t)cg_gemm_i8_colsum_count(&d->shape, d->n));
    void *out = calloc((size_t)(d->m * ldc), out_elem_size(d->output));
    cg_gemm_i8_pack_b(&d->shape, d->k, d->n, c->b, d->n, false, packed, colsum);
    void *args[CG_GEMM_I8_NARGS];
    args[CG_GEMM_I8_ARG_A] = c->a;
    args[CG_GEMM_I8_ARG_PACKED] = packed;
    args[CG_GEMM_I8_ARG_COLSUM] = colsum;
    args[CG_GEMM_I8_ARG_C] = out;
    args[CG_GEMM_I8_ARG_SCALE] = c->scale;
    bool f32_bias = d->output == CG_GEMM_I8_OUT_F32 || d->output == CG_GEMM_I8_OUT_DEQUANT;
    args[CG_GEMM_I8_ARG_BIAS] = f32_bias ? (void *)c->bias_f32 : (void *)c->bias_i32;
    args[CG_GEMM_I8_ARG_ROWSUM] = c->rowsum;
    args[CG_GEMM_I8_ARG_X_SCALE] = (void *)&c->x_scale;
    args[CG_GEMM_I8_ARG_X_ZERO_POINT] = (void *)&c->x_zero;
    args[CG_GEMM_I8_ARG_W_SCALE] = c->w_scale;
    args[CG_GEMM_I8_ARG_W_ZERO_POINT] = c->w_zero;
    rt_pool_parallel_for(pool, fn, args, cg_gemm_i8_tasks(d), 1);
    free(packed_block);
    free(colsum);
    return out;
}

/* A code path under test: the target CPU (NULL for the host) and whether
 * VNNI may be used. x86-64-v3 code runs on any AVX2 host and exercises
 * the 256-bit portable kernel. */
typedef struct code_path {
    const char *name;
    const char *cpu;
    bool allow_vnni;
    cg_gemm_i8_isa isa; /* the path the shape must select */
} code_path;

static const code_path code_paths[] = {
    {"vnni", NULL, true, CG_GEMM_I8_VNNI},
    {"portable", NULL, false, CG_GEMM_I8_PORTABLE},
    {"portable-avx2", "x86-64-v3", true, CG_GEMM_I8_PORTABLE},
};
#define NCODE_PATHS ((int)(sizeof code_paths / sizeof *code_paths))

static cg_gemm_i8_module *compile_path(const code_path *path, cg_gemm_i8_desc *descs, int count)
{
    cg_options o = cg_default_options();
    o.cpu = path->cpu;
    ir_diag *d = ir_diag_new(stderr);
    cg_gemm_i8_module *m = cg_gemm_i8_compile(&o, path->allow_vnni, descs, count, d);
    ir_diag_free(d);
    return m;
}

/* ---- fixed-point helpers ---- */

static void test_qmul_known_values(void)
{
    CHECK_EQ_INT(cg_qmul_high(INT32_MIN, INT32_MIN), INT32_MAX);
    CHECK_EQ_INT(cg_qmul_high(1 << 30, 1 << 30), 1 << 29);
    CHECK_EQ_INT(cg_qmul_high(3, 1 << 30), 2);   /* 1.5 rounds to 2 */
    CHECK_EQ_INT(cg_qmul_high(-3, 1 << 30), -1); /* -1.5 rounds up to -1, as in gemmlowp */
    CHECK_EQ_INT(cg_qmul_high(-7, 1 << 30), -3); /* -3.5 rounds up to -3 */
    CHECK_EQ_INT(cg_qmul_high(-5, 3 << 28), -2); /* -1.875 */
    CHECK_EQ_INT(cg_qmul_high(-5, 1 << 29), -1); /* -1.25 */
    CHECK_EQ_INT(cg_qmul_rshift(5, 1), 3);
    CHECK_EQ_INT(cg_qmul_rshift(-5, 1), -3);
    CHECK_EQ_INT(cg_qmul_rshift(7, 2), 2);
    CHECK_EQ_INT(cg_qmul_rshift(-6, 2), -2);
    CHECK_EQ_INT(cg_qmul_rshift(-5, 2), -1);
    CHECK_EQ_INT(cg_qmul_rshift(INT32_MIN, 31), -1);
    CHECK_EQ_INT(cg_qmul_rshift(INT32_MAX, 31), 1);
    CHECK_EQ_INT(cg_qmul_rshift(42, 0), 42);

    cg_qmul q;
    CHECK_EQ_INT(cg_qmul_from_real(0.5, &q), 0);
    CHECK_EQ_INT(q.m0, 1 << 30);
    CHECK_EQ_INT(q.right_shift, 0);
    CHECK_EQ_INT(cg_qmul_from_real(1.0, &q), 0);
    CHECK_EQ_INT(q.m0, 1 << 30);
    CHECK_EQ_INT(q.left_shift, 1);
    CHECK_EQ_INT(cg_qmul_from_real(0.1, &q), 0);
    CHECK_EQ_INT(q.right_shift, 3);
    CHECK_EQ_INT(cg_qmul_from_real(0.0, &q), 0);
    CHECK_EQ_INT(q.m0, 0);
    CHECK_EQ_INT(cg_qmul_from_real(1e-12, &q), 0);
    CHECK_EQ_INT(q.m0, 0);
    CHECK_EQ_INT(cg_qmul_from_real(-0.25, &q), -1);
    CHECK_EQ_INT(cg_qmul_from_real(NAN, &q), -1);
    CHECK_EQ_INT(cg_qmul_from_real(INFINITY, &q), -1);
    CHECK_EQ_INT(cg_qmul_from_real(ldexp(1.0, 30), &q), -1);
    /* q rounds up to 1.0 just below a power of two. */
    CHECK_EQ_INT(cg_qmul_from_real(0.5 - 1e-12, &q), 0);
    CHECK_EQ_INT(q.m0, 1 << 30);
    CHECK_EQ_INT(q.right_shift, 0);

    CHECK_EQ_INT(cg_requantize(1000, (cg_qmul){1 << 30, 0, 3}, 10, 0, 255), 10 + 63); /* 62.5 -> 63 */
    CHECK_EQ_INT(cg_requantize(-1000, (cg_qmul){1 << 30, 0, 3}, 10, 0, 255), 0);
    CHECK_EQ_INT(cg_requantize(INT32_MAX, (cg_qmul){1 << 30, 4, 0}, 0, -128, 127), 127);
}

/* Every multiplier form against rounding the real product: within one
 * unit (the multiplier itself is rounded to 31 bits). Inputs that the
 * left shift saturates are skipped; cg_qmul_apply does not promise
 * one-unit accuracy for them. */
static void test_qmul_vs_float(void)
{
    static const double reals[] = {1e-9, 3.7e-6, 0.000123, 0.0179, 0.25, 0.49999, 0.5, 0.77, 1.0, 1.5, 3.3, 1000.0};
    int worst_real = 0, far = 0;
    for (size_t r = 0; r < sizeof reals / sizeof *reals; r++) {
        cg_qmul q;
        CHECK_EQ_INT(cg_qmul_from_real(reals[r], &q), 0);
        CHECK(q.m0 == 0 || (q.m0 >= (1 << 30) && q.m0 < INT32_MAX));
        for (int i = 0; i < 20000; i++) {
            int32_t x = i < 10000 ? random_int(-100000, 100000) : (int32_t)next_random();
            double want = nearbyint(x * reals[r]);
            if (fabs(ldexp((double)x, q.left_shift)) >= 2147483647.0)
                continue;
            double got = cg_qmul_apply(x, q);
            if (fabs(got - want) > 1) {
                far++;
                worst_real = (int)r;
            }
        }
    }
    CHECK_EQ_INT(far, 0);
    if (far)
        fprintf(stderr, "qmul: %d results more than one unit off, e.g. for multiplier %g\n", far, reals[worst_real]);
}

/* Packing a [N, K] weight (transposed) gives the same panels and column
 * sums as packing its [K, N] transpose. */
static void test_pack_transposed(void)
{
    cg_gemm_i8_shape shape = {CG_GEMM_I8_VNNI, 16, 8, 3, 48, 128, 192};
    int64_t k = 13, n = 53;
    int8_t *b = malloc((size_t)(k * n)), *bt = malloc((size_t)(k * n));
    for (int64_t kk = 0; kk < k; kk++) {
        for (int64_t j = 0; j < n; j++) {
            b[kk * n + j] = (int8_t)random_int(-128, 127);
            bt[j * k + kk] = b[kk * n + j];
        }
    }
    int64_t bytes = cg_gemm_i8_packed_bytes(&shape, k, n), sums = cg_gemm_i8_colsum_count(&shape, n);
    CHECK_EQ_INT(bytes, 2 * 4 * 48 * 4); /* 2 panels x 4 groups x 48 columns x 4 bytes */
    CHECK_EQ_INT(sums, 96);
    int8_t *packed = malloc((size_t)bytes), *packed_t = malloc((size_t)bytes);
    int32_t *colsum = malloc(sizeof *colsum * (size_t)sums), *colsum_t = malloc(sizeof *colsum_t * (size_t)sums);
    cg_gemm_i8_pack_b(&shape, k, n, b, n, false, packed, colsum);
    cg_gemm_i8_pack_b(&shape, k, n, bt, k, true, packed_t, colsum_t);
    CHECK(memcmp(packed, packed_t, (size_t)bytes) == 0);
    CHECK(memcmp(colsum, colsum_t, sizeof *colsum * (size_t)sums) == 0);
    /* b[5, 50] sits in panel 1, group 1, column 2, byte 1. */
    CHECK_EQ_INT(packed[((1 * 4 + 1) * 48 + 2) * 4 + 1], b[5 * n + 50]);
    /* The last group contains k = 12 and zeros for k = 13 .. 15. */
    CHECK_EQ_INT(packed[((0 * 4 + 3) * 48 + 7) * 4 + 1], 0);
    int32_t sum7 = 0;
    for (int64_t kk = 0; kk < k; kk++)
        sum7 += b[kk * n + 7];
    CHECK_EQ_INT(colsum[7], sum7);
    CHECK_EQ_INT(colsum[95], 0);
    free(b);
    free(bt);
    free(packed);
    free(packed_t);
    free(colsum);
    free(colsum_t);
}

/* The generated packing kernel against cg_gemm_i8_pack_b, byte for byte,
 * for [K, N] and [N, K] weights. */
static void test_pack_kernel(rt_pool *pool, const code_path *path)
{
    static const int64_t shapes[][2] = {{13, 53}, {64, 33}, {3, 1}, {1, 7}, {768, 2304}};
    enum { NSHAPES = 5, NDESCS = 2 * NSHAPES };
    cg_gemm_i8_desc descs[NDESCS];
    memset(descs, 0, sizeof descs);
    for (int i = 0; i < NDESCS; i++) {
        descs[i].name = "pack";
        descs[i].m = 1;
        descs[i].k = shapes[i / 2][0];
        descs[i].n = shapes[i / 2][1];
        descs[i].b_transposed = i % 2 == 1;
    }
    cg_gemm_i8_module *m = compile_path(path, descs, NDESCS);
    CHECK(m != NULL);
    int bad_packed = 0, bad_colsum = 0;
    for (int i = 0; i < NDESCS && m; i++) {
        const cg_gemm_i8_desc *d = &descs[i];
        int64_t bytes = cg_gemm_i8_packed_bytes(&d->shape, d->k, d->n);
        int64_t sums = cg_gemm_i8_colsum_count(&d->shape, d->n);
        int8_t *b = malloc((size_t)(d->k * d->n));
        for (int64_t x = 0; x < d->k * d->n; x++)
            b[x] = (int8_t)random_int(-128, 127);
        int8_t *want = malloc((size_t)bytes), *got = malloc((size_t)bytes);
        int32_t *want_sums = malloc(sizeof *want_sums * (size_t)sums);
        int32_t *got_sums = malloc(sizeof *got_sums * (size_t)sums);
        memset(got, 0x5a, (size_t)bytes); /* the kernel must write the padding too */
        memset(got_sums, 0x5a, sizeof *got_sums * (size_t)sums);
        int64_t ldb = d->b_transposed ? d->k : d->n;
        cg_gemm_i8_pack_b(&d->shape, d->k, d->n, b, ldb, d->b_transposed, want, want_sums);
        void *args[CG_PACK_I8_NARGS];
        args[CG_PACK_I8_ARG_B] = b;
        args[CG_PACK_I8_ARG_PACKED] = got;
        args[CG_PACK_I8_ARG_COLSUM] = got_sums;
        rt_pool_parallel_for(pool, cg_gemm_i8_pack_kernel(m, i), args, cg_gemm_i8_pack_tasks(d), 1);
        if (memcmp(want, got, (size_t)bytes) != 0) {
            bad_packed++;
            fprintf(stderr, "%s: packed B differs for K=%lld N=%lld transposed=%d\n", path->name, (long long)d->k,
                    (long long)d->n, (int)d->b_transposed);
        }
        if (memcmp(want_sums, got_sums, sizeof *want_sums * (size_t)sums) != 0) {
            bad_colsum++;
            fprintf(stderr, "%s: column sums differ for K=%lld N=%lld transposed=%d\n", path->name,
                    (long long)d->k, (long long)d->n, (int)d->b_transposed);
        }
        free(b);
        free(want);
        free(got);
        free(want_sums);
        free(got_sums);
    }
    CHECK_EQ_INT(bad_packed, 0);
    CHECK_EQ_INT(bad_colsum, 0);
    cg_gemm_i8_module_free(m);
}

/* ---- int32 outputs over all shapes ---- */

static const int64_t sweep_m[] = {1, 3, 17, 128}; /* 1 and 3 take the GEMV kernel */
static const int64_t sweep_k[] = {1, 3, 5, 64, 768, 3072};
/* 1601 columns are enough panels for the GEMV to give a task several,
 * with an edge panel in the last task. */
static const int64_t sweep_n[] = {1, 7, 33, 768, 2304, 1601};
#define SWEEP_CASES (4 * 6 * 6)

/* Case i of the sweep: its shape, activation type, zero point, strides
 * and bias vary with i. */
static void sweep_case(gemm_case *c, int i, char *name, size_t name_size)
{
    int64_t m = sweep_m[i / 36], k = sweep_k[(i / 6) % 6], n = sweep_n[i % 6];
    snprintf(name, name_size, "sweep_%lldx%lldx%lld", (long long)m, (long long)k, (long long)n);
    case_init(c, name, m, k, n);
    c->desc.output = CG_GEMM_I8_OUT_I32;
    c->desc.a_signed = i % 3 == 2;
    static const int32_t zero_points[3] = {0, 131, -17}; /* u8, u8, s8 */
    c->desc.a_zero_point = zero_points[i % 3];
    c->desc.has_bias = i % 2 == 1;
    c->misalign_packed = i % 6 == 1;
    if (i % 4 == 3) {
        c->desc.lda = k + 3;
        c->desc.ldc = n + 5;
    }
}

static int64_t count_i32_mismatches(const gemm_case *c, const cg_gemm_i8_desc *d, const int32_t *out, const char *path)
{
    int64_t ldc = d->ldc ? d->ldc : d->n, bad = 0;
    for (int64_t i = 0; i < d->m; i++) {
        for (int64_t j = 0; j < d->n; j++) {
            int32_t want = c->acc[i * d->n + j], got = out[i * ldc + j];
            if (got != want && bad++ == 0)
                fprintf(stderr, "%s %s: C[%lld, %lld] = %d, expected %d\n", path, d->name, (long long)i, (long long)j,
                        got, want);
        }
    }
    return bad;
}

static void test_sweep_i32(rt_pool *pool, const code_path *path)
{
    static char names[SWEEP_CASES][64];
    gemm_case *cases = calloc(SWEEP_CASES, sizeof *cases);
    cg_gemm_i8_desc descs[SWEEP_CASES];
    for (int i = 0; i < SWEEP_CASES; i++) {
        sweep_case(&cases[i], i, names[i], sizeof names[i]);
        descs[i] = cases[i].desc;
    }
    cg_gemm_i8_module *m = compile_path(path, descs, SWEEP_CASES);
    CHECK(m != NULL);
    CHECK_EQ_INT(descs[0].shape.isa, path->isa);
    int64_t bad = 0;
    for (int i = 0; i < SWEEP_CASES && m; i++) {
        case_fill(&cases[i], 255, 128);
        int32_t *out = case_run(&cases[i], &descs[i], cg_gemm_i8_kernel(m, i), pool);
        bad += count_i32_mismatches(&cases[i], &descs[i], out, path->name);
        free(out);
        case_free(&cases[i]);
    }
    CHECK_EQ_INT(bad, 0);
    cg_gemm_i8_module_free(m);
    free(cases);
}

/* Two GEMMs with the same name in one module get their own microkernels
 * although they differ only in K and the zero point. */
static void test_equal_names(rt_pool *pool)
{
    gemm_case cases[2];
    case_init(&cases[0], "dup", 9, 64, 19);
    case_init(&cases[1], "dup", 9, 67, 19);
    cases[1].desc.a_zero_point = 9;
    cg_gemm_i8_desc descs[2] = {cases[0].desc, cases[1].desc};
    cg_gemm_i8_module *m = compile_path(&code_paths[1], descs, 2);
    CHECK(m != NULL);
    for (int i = 0; i < 2 && m; i++) {
        case_fill(&cases[i], 255, 128);
        int32_t *out = case_run(&cases[i], &descs[i], cg_gemm_i8_kernel(m, i), pool);
        CHECK_EQ_INT(count_i32_mismatches(&cases[i], &descs[i], out, code_paths[1].name), 0);
        free(out);
        case_free(&cases[i]);
    }
    cg_gemm_i8_module_free(m);
}

/* ---- requantized and dequantized outputs ---- */

typedef struct stage_case {
    int64_t m, k, n;
    cg_gemm_i8_output output;
    bool a_signed;
    int32_t a_zero_point, out_zero_point;
    bool per_channel, has_bias;
    int32_t a_spread, b_spread;
    double requant_lo, requant_hi; /* multipliers drawn from [lo, hi] */
} stage_case;

static const stage_case stage_cases[] = {
    {17, 768, 33, CG_GEMM_I8_OUT_U8, false, 128, 120, true, true, 255, 128, 1e-4, 3e-4},
    {3, 64, 2304, CG_GEMM_I8_OUT_S8, true, 3, -7, false, false, 127, 128, 1e-3, 1e-3},
    {128, 5, 7, CG_GEMM_I8_OUT_U8, false, 0, 128, true, true, 255, 128, 2e-3, 6e-3},
    {1, 3072, 768, CG_GEMM_I8_OUT_S8, false, 77, 5, true, false, 255, 128, 5e-5, 3e-4},
    /* multipliers >= 1 take the saturating left shift */
    {9, 3, 40, CG_GEMM_I8_OUT_U8, false, 100, 30, true, false, 3, 3, 0.9, 6.0},
    {17, 3, 17, CG_GEMM_I8_OUT_S8, true, 0, 0, false, true, 2, 3, 2.5, 2.5},
    {5, 64, 19, CG_GEMM_I8_OUT_F32, false, 128, 0, true, true, 255, 128, 0, 0},
    {128, 768, 2304, CG_GEMM_I8_OUT_F32, true, -3, 0, true, false, 127, 128, 0, 0},
    {1, 3072, 7, CG_GEMM_I8_OUT_F32, false, 0, 0, true, true, 255, 128, 0, 0},
};
#define NSTAGE_CASES ((int)(sizeof stage_cases / sizeof *stage_cases))

/* Checks one requantized output against cg_requantize (exact) and
 * against rounding the real product (within one unit). */
static void check_requantized(const gemm_case *c, const cg_gemm_i8_desc *d, const void *out, const char *path)
{
    int32_t qmin = d->output == CG_GEMM_I8_OUT_U8 ? 0 : -128, qmax = qmin + 255;
    int64_t exact_bad = 0, float_bad = 0, saturated = 0;
    for (int64_t i = 0; i < d->m; i++) {
        for (int64_t j = 0; j < d->n; j++) {
            double real = d->requant[d->nrequant == 1 ? 0 : j];
            cg_qmul q;
            cg_qmul_from_real(real, &q);
            int32_t acc = c->acc[i * d->n + j];
            int32_t want = cg_requantize(acc, q, d->out_zero_point, qmin, qmax);
            int64_t at = i * d->n + j;
            int32_t got = d->output == CG_GEMM_I8_OUT_U8 ? ((const uint8_t *)out)[at] : ((const int8_t *)out)[at];
            if (got != want && exact_bad++ == 0)
                fprintf(stderr, "%s %s: q[%lld, %lld] = %d, cg_requantize gives %d (acc %d)\n", path, d->name,
                        (long long)i, (long long)j, got, want, acc);
            double ideal = nearbyint(acc * real) + d->out_zero_point;
            ideal = fmax(ideal, qmin);
            ideal = fmin(ideal, qmax);
            if (fabs(got - ideal) > 1)
                float_bad++;
            saturated += want == qmin || want == qmax;
        }
    }
    CHECK_EQ_INT(exact_bad, 0);
    CHECK_EQ_INT(float_bad, 0);
    /* The data is scaled so that most outputs are inside the range. */
    CHECK(saturated < d->m * d->n / 2);
}

/* Checks dequantized outputs against s_a · s_w[n] · Σ (a - za) · b + bias
 * in double, with the per-channel scale that the kernel receives. */
static void check_dequantized(const gemm_case *c, const cg_gemm_i8_desc *d, const float *out, const char *path)
{
    int64_t bad = 0;
    for (int64_t i = 0; i < d->m; i++) {
        for (int64_t j = 0; j < d->n; j++) {
            double want = (double)c->scale[j] * c->acc[i * d->n + j] + (d->has_bias ? c->bias_f32[j] : 0.0);
            double got = out[i * d->n + j];
            if (fabs(got - want) > 1e-6 + 1e-6 * fabs(want) && bad++ == 0)
                fprintf(stderr, "%s %s: y[%lld, %lld] = %.9g, expected %.9g\n", path, d->name, (long long)i,
                        (long long)j, got, want);
        }
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_output_stages(rt_pool *pool, const code_path *path)
{
    static char names[NSTAGE_CASES][64];
    gemm_case cases[NSTAGE_CASES];
    cg_gemm_i8_desc descs[NSTAGE_CASES];
    double *requant[NSTAGE_CASES];
    for (int i = 0; i < NSTAGE_CASES; i++) {
        const stage_case *s = &stage_cases[i];
        snprintf(names[i], sizeof names[i], "stage%d_%lldx%lldx%lld", i, (long long)s->m, (long long)s->k,
                 (long long)s->n);
        case_init(&cases[i], names[i], s->m, s->k, s->n);
        cg_gemm_i8_desc *d = &cases[i].desc;
        d->output = s->output;
        d->a_signed = s->a_signed;
        d->a_zero_point = s->a_zero_point;
        d->out_zero_point = s->out_zero_point;
        d->has_bias = s->has_bias;
        int64_t count = s->per_channel ? s->n : 1;
        requant[i] = malloc(sizeof *requant[i] * (size_t)count);
        for (int64_t j = 0; j < count; j++)
            requant[i][j] = random_real(s->requant_lo, s->requant_hi);
        if (s->output != CG_GEMM_I8_OUT_F32) {
            d->requant = requant[i];
            d->nrequant = count;
        }
        descs[i] = *d;
    }
    cg_gemm_i8_module *m = compile_path(path, descs, NSTAGE_CASES);
    CHECK(m != NULL);
    CHECK_EQ_INT(descs[0].shape.isa, path->isa);
    for (int i = 0; i < NSTAGE_CASES && m; i++) {
        const stage_case *s = &stage_cases[i];
        case_fill(&cases[i], s->a_spread, s->b_spread);
        void *out = case_run(&cases[i], &descs[i], cg_gemm_i8_kernel(m, i), pool);
        if (s->output == CG_GEMM_I8_OUT_F32)
            check_dequantized(&cases[i], &descs[i], out, path->name);
        else
            check_requantized(&cases[i], &descs[i], out, path->name);
        free(out);
        case_free(&cases[i]);
    }
    for (int i = 0; i < NSTAGE_CASES; i++)
        free(requant[i]);
    cg_gemm_i8_module_free(m);
}

/* ---- q.linear's dequantizing output stage ---- */

typedef struct dequant_case {
    int64_t m, k, n;
    bool a_signed, per_channel, has_bias;
    float x_zero; /* rounded half to even by the kernel */
} dequant_case;

/* GEMV (M <= 4) and GEMM shapes with K and N tails, including an edge
 * panel of one column, and zero points that round half to even. */
static const dequant_case dequant_cases[] = {
    {1, 768, 2304, false, true, true, 121.0f},  {1, 67, 50, true, true, false, 0.0f},
    {2, 5, 7, false, false, true, 2.5f},        {3, 130, 97, false, true, true, 255.0f},
    {4, 64, 49, true, false, false, -3.5f},     {5, 67, 50, false, true, true, 17.0f},
    {9, 3, 1, false, true, false, 128.0f},      {130, 768, 97, false, true, true, 64.0f},
    {1, 3072, 768, false, false, true, 100.0f}, {17, 1, 33, true, true, true, 0.0f},
};
#define NDEQUANT_CASES ((int)(sizeof dequant_cases / sizeof *dequant_cases))

/* Fills the OUT_DEQUANT inputs: scales, integer-valued weight zero points
 * in -2 .. 2 and the row sums of a - z_x. */
static void dequant_fill(gemm_case *c, const dequant_case *dc)
{
    const cg_gemm_i8_desc *d = &c->desc;
    int64_t count = dc->per_channel ? d->n : 1;
    c->x_scale = (float)random_real(1e-3, 2e-2);
    c->x_zero = dc->x_zero;
    c->w_scale = malloc(sizeof *c->w_scale * (size_t)count);
    c->w_zero = malloc(sizeof *c->w_zero * (size_t)count);
    for (int64_t j = 0; j < count; j++) {
        c->w_scale[j] = (float)random_real(1e-4, 1e-2);
        c->w_zero[j] = (float)random_int(-2, 2);
    }
    int32_t z_x = (int32_t)nearbyintf(dc->x_zero);
    c->rowsum = malloc(sizeof *c->rowsum * (size_t)d->m);
    for (int64_t i = 0; i < d->m; i++) {
        int32_t sum = 0;
        for (int64_t kk = 0; kk < d->k; kk++) {
            uint8_t raw = c->a[i * d->k + kk];
            sum += (d->a_signed ? (int32_t)(int8_t)raw : (int32_t)raw) - z_x;
        }
        c->rowsum[i] = sum;
    }
}

/* Returns the number of outputs that differ from the f32 operations of
 * q.linear done in C: (s_x · s_w[c]) · (acc - z_x · colsum - z_w · rowsum) + bias. */
static int64_t count_dequant_mismatches(const gemm_case *c, const dequant_case *dc, const float *out,
                                        const char *path)
{
    const cg_gemm_i8_desc *d = &c->desc;
    int32_t z_x = (int32_t)nearbyintf(dc->x_zero);
    int64_t bad = 0;
    for (int64_t j = 0; j < d->n; j++) {
        int64_t ch = dc->per_channel ? j : 0;
        int32_t colsum = 0;
        for (int64_t kk = 0; kk < d->k; kk++)
            colsum += c->b[kk * d->n + j];
        for (int64_t i = 0; i < d->m; i++) {
            int32_t sum = c->acc[i * d->n + j] - z_x * colsum - (int32_t)c->w_zero[ch] * c->rowsum[i];
            float scale = c->x_scale * c->w_scale[ch];
            float want = scale * (float)sum;
            if (d->has_bias)
                want += c->bias_f32[j];
            float got = out[i * d->n + j];
            if (got != want && bad++ == 0)
                fprintf(stderr, "%s %s: y[%lld, %lld] = %.9g, expected %.9g\n", path, d->name, (long long)i,
                        (long long)j, (double)got, (double)want);
        }
    }
    return bad;
}

static void test_dequant_stage(rt_pool *pool, const code_path *path)
{
    static char names[NDEQUANT_CASES][64];
    gemm_case cases[NDEQUANT_CASES];
    cg_gemm_i8_desc descs[NDEQUANT_CASES];
    for (int i = 0; i < NDEQUANT_CASES; i++) {
        const dequant_case *dc = &dequant_cases[i];
        snprintf(names[i], sizeof names[i], "dequant%d_%lldx%lldx%lld", i, (long long)dc->m, (long long)dc->k,
                 (long long)dc->n);
        case_init(&cases[i], names[i], dc->m, dc->k, dc->n);
        cg_gemm_i8_desc *d = &cases[i].desc;
        d->output = CG_GEMM_I8_OUT_DEQUANT;
        d->a_signed = dc->a_signed;
        d->per_channel = dc->per_channel;
        d->has_bias = dc->has_bias;
        cases[i].misalign_packed = i % 3 == 1;
        descs[i] = *d;
    }
    cg_gemm_i8_module *m = compile_path(path, descs, NDEQUANT_CASES);
    CHECK(m != NULL);
    for (int i = 0; i < NDEQUANT_CASES && m; i++) {
        case_fill(&cases[i], 255, 128);
        dequant_fill(&cases[i], &dequant_cases[i]);
        float *out = case_run(&cases[i], &descs[i], cg_gemm_i8_kernel(m, i), pool);
        CHECK_EQ_INT(count_dequant_mismatches(&cases[i], &dequant_cases[i], out, path->name), 0);
        free(out);
        case_free(&cases[i]);
    }
    cg_gemm_i8_module_free(m);
}

/* ---- assembly and descriptor checks ---- */

static bool contains(const char *text, const char *needle)
{
    return text && strstr(text, needle) != NULL;
}

/* Returns the assembly of an m x 64 x 33 product: the GEMM kernel, or
 * the GEMV kernel for m <= CG_GEMV_I8_MAX_M. */
static char *kernel_asm(const char *cpu, bool allow_vnni, int64_t m, cg_gemm_i8_isa *isa)
{
    cg_options o = cg_default_options();
    o.cpu = cpu;
    cg_gemm_i8_desc desc;
    memset(&desc, 0, sizeof desc);
    desc.name = "asm";
    desc.m = m;
    desc.k = 64;
    desc.n = 33;
    desc.a_zero_point = 128;
    ir_diag *d = ir_diag_new(stderr);
    char *text = cg_gemm_i8_emit_asm(&o, allow_vnni, &desc, d);
    ir_diag_free(d);
    *isa = desc.shape.isa;
    return text;
}

static void test_assembly(void)
{
    static const int64_t rows[2] = {17, 1}; /* the GEMM, then the GEMV */
    for (int i = 0; i < 2; i++) {
        cg_gemm_i8_isa isa;
        char *text = kernel_asm("znver4", true, rows[i], &isa);
        CHECK(text != NULL);
        CHECK_EQ_INT(isa, CG_GEMM_I8_VNNI);
        CHECK(contains(text, "vpdpbusd"));
        free(text);

        text = kernel_asm("x86-64-v3", true, rows[i], &isa);
        CHECK(text != NULL);
        CHECK_EQ_INT(isa, CG_GEMM_I8_PORTABLE);
        CHECK(!contains(text, "vpdpbusd"));
        CHECK(!contains(text, "vpmaddubsw"));
        CHECK(contains(text, "vpmaddwd"));
        free(text);

        text = kernel_asm("znver4", false, rows[i], &isa);
        CHECK(text != NULL);
        CHECK_EQ_INT(isa, CG_GEMM_I8_PORTABLE);
        CHECK(!contains(text, "vpdpbusd"));
        free(text);
    }
}

static void test_invalid_descs(void)
{
    cg_gemm_i8_desc base;
    memset(&base, 0, sizeof base);
    base.name = "bad";
    base.m = 4;
    base.k = 8;
    base.n = 4;
    cg_gemm_i8_desc bad[5];
    for (int i = 0; i < 5; i++)
        bad[i] = base;
    bad[0].k = 0;
    bad[1].a_zero_point = 256;
    bad[2].output = CG_GEMM_I8_OUT_U8; /* no multipliers */
    bad[3].k = 70000;
    double negative = -1.0;
    bad[4].output = CG_GEMM_I8_OUT_S8;
    bad[4].requant = &negative;
    bad[4].nrequant = 1;
    for (int i = 0; i < 5; i++) {
        FILE *sink = fopen("/dev/null", "w");
        ir_diag *d = ir_diag_new(sink);
        cg_gemm_i8_module *m = cg_gemm_i8_compile(NULL, true, &bad[i], 1, d);
        CHECK(m == NULL);
        CHECK_EQ_INT(ir_diag_error_count(d), 1);
        cg_gemm_i8_module_free(m);
        ir_diag_free(d);
        fclose(sink);
    }
}

int main(void)
{
    test_qmul_known_values();
    test_qmul_vs_float();
    test_pack_transposed();
    test_assembly();
    test_invalid_descs();

    cg_options o = cg_default_options();
    ir_diag *d = ir_diag_new(stderr);
    LLVMTargetMachineRef tm = cg_target_machine(&o, d);
    bool have_vnni = tm && cg_target_has_avx512_vnni(tm) && cg_vector_bits(tm) >= 512;
    if (tm)
        LLVMDisposeTargetMachine(tm);
    ir_diag_free(d);
    if (!have_vnni)
        printf("host has no AVX-512 VNNI: testing the portable paths only\n");

    rt_pool *pool = rt_pool_new(2);
    test_equal_names(pool);
    for (int p = 0; p < NCODE_PATHS; p++) {
        if (code_paths[p].isa == CG_GEMM_I8_VNNI && !have_vnni)
            continue;
        test_pack_kernel(pool, &code_paths[p]);
        test_sweep_i32(pool, &code_paths[p]);
        test_output_stages(pool, &code_paths[p]);
        test_dequant_stage(pool, &code_paths[p]);
    }
    rt_pool_free(pool);
    return check_finish();
}
