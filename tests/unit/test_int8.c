/* Tests of the lower-int8 pass, the int8 weight conversion and the
 * interpreter's q.linear against the fake-quant simulation they replace,
 * and of the JIT's q.linear (GEMM and GEMV kernels) against the
 * interpreter's, which must agree exactly.
 *
 * Tolerance: q.linear sums the same integer products as the simulation
 * multiplies in f32, exactly, so the two differ only by the f32 rounding
 * of the simulation's products and sum and of q.linear's final scale
 * multiply. Each output n may therefore differ by at most
 *   DOT_RTOL · (Σ_k |x_hat[k] · w_hat[k, n]| + |bias[n]|),
 * a bound far above K · 2^-24 for the K used here, yet tight enough that
 * one quantization step of a single product breaks it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixtures.h"
#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "ir/int8.h"
#include "ir/quant.h"
#include "ir/text.h"
#include "passes/int8.h"
#include "passes/manager.h"
#include "passes/quantize.h"
#include "runtime/interp.h"
#include "runtime/tokenizer.h"

#define DOT_RTOL 1e-5
#define GPT2_T 16
/* Maximum relative difference of the logits of the tiny GPT-2, lowered vs
 * simulated, and of its perplexity on the test sentence. */
#define LOGITS_RTOL 1e-4
#define PERPLEXITY_RTOL 5e-3

static fx_rng rng = {FX_RNG_LCG, 0x9e3779b97f4a7c15ull};

static void set_values(rt_weights *w, const char *name, int rank, const int64_t *dims, const float *values)
{
    rt_tensor *t = rt_tensor_new(IR_F32, rank, dims);
    memcpy(t->data, values, sizeof(float) * (size_t)rt_tensor_numel(t));
    rt_weights_set(w, name, t);
}

/* Compiles g for the host and runs it once. Returns 0 or -1. */
static int run_jit(const ir_graph *g, const rt_weights *w, const rt_weights *in, rt_tensor **outputs, ir_diag *d)
{
    cg_module *m = cg_compile(g, NULL, d);
    CHECK(m != NULL);
    if (!m)
        return -1;
    int rc = cg_run(m, w, in, outputs, d);
    cg_free(m);
    return rc;
}

/* ---- one linear and one LM head ---- */

enum { M = 5, K = 64, N = 24, V = 12 };

/* x -> linear with bias (asymmetric u8 input, per-channel weights) -> LM
 * head on a [V, N] table (symmetric s8 input, per-tensor weight). */
static const char *small_graph =
    "graph @small {\n"
    "  %x = input : f32[5,64]\n"
    "  @fc.weight = param : f32[64,24]\n"
    "  @fc.bias = param : f32[24]\n"
    "  @fc.in.scale = param : f32[]\n"
    "  @fc.in.zero_point = param : f32[]\n"
    "  @fc.w.scale = param : f32[24]\n"
    "  @fc.w.zero_point = param : f32[24]\n"
    "  @wte = param : f32[12,24]\n"
    "  @head.in.scale = param : f32[]\n"
    "  @head.in.zero_point = param : f32[]\n"
    "  @head.w.scale = param : f32[]\n"
    "  @head.w.zero_point = param : f32[]\n"
    "  %xq = fq.act %x, @fc.in.scale, @fc.in.zero_point {bits=8, symmetric=0, narrow=0} : f32[5,64]\n"
    "  %wq = fq.weight @fc.weight, @fc.w.scale, @fc.w.zero_point {axis=1, bits=8, symmetric=1, narrow=1} : f32[64,24]\n"
    "  %h = linear %xq, %wq, @fc.bias : f32[5,24]\n"
    "  %hq = fq.act %h, @head.in.scale, @head.in.zero_point {bits=8, symmetric=1, narrow=0} : f32[5,24]\n"
    "  %tq = fq.weight @wte, @head.w.scale, @head.w.zero_point {axis=0, bits=8, symmetric=1, narrow=1} : f32[12,24]\n"
    "  %logits = matmul %hq, %tq {transpose_b=1} : f32[5,12]\n"
    "  return %h, %logits\n"
    "}\n";

/* Random weights and hand-set quantizer params. The input scale clips
 * the largest inputs, so the clamp is exercised, and some weight channels
 * have a nonzero zero point. */
static rt_weights *small_weights(void)
{
    rt_weights *w = rt_weights_new();
    int64_t wdims[2] = {K, N}, bdims[1] = {N}, tdims[2] = {V, N};
    rt_weights_set(w, "fc.weight", fx_normal_tensor(&rng, 2, wdims, 0.05));
    rt_weights_set(w, "fc.bias", fx_normal_tensor(&rng, 1, bdims, 0.1));
    rt_weights_set(w, "wte", fx_normal_tensor(&rng, 2, tdims, 0.05));

    float scales[N], zeros[N];
    const float *fw = rt_weights_get(w, "fc.weight")->data;
    for (int n = 0; n < N; n++) {
        float max = 0;
        for (int k = 0; k < K; k++)
            max = fmaxf(max, fabsf(fw[k * N + n]));
        scales[n] = max / 127.0f;
        /* Zero points -1, 0 and 1 exercise the weight zero-point
         * correction of q.linear. */
        zeros[n] = (float)(n % 3) - 1.0f;
    }
    set_values(w, "fc.w.scale", 1, bdims, scales);
    set_values(w, "fc.w.zero_point", 1, bdims, zeros);

    const float in_scale = 2.5f / 255.0f, in_zero = 121.0f, head_scale = 0.01f, head_w = 0.15f / 127.0f, zero = 0;
    set_values(w, "fc.in.scale", 0, NULL, &in_scale);
    set_values(w, "fc.in.zero_point", 0, NULL, &in_zero);
    set_values(w, "head.in.scale", 0, NULL, &head_scale);
    set_values(w, "head.in.zero_point", 0, NULL, &zero);
    set_values(w, "head.w.scale", 0, NULL, &head_w);
    set_values(w, "head.w.zero_point", 0, NULL, &zero);
    return w;
}

/* Checks that every dequantized i8 weight, (q - z) · s, equals the f32
 * fake-quant value of fq.weight exactly. */
static void check_converted_weight(const rt_weights *w, const char *name, const char *scale_name,
                                   const char *zero_name, bool transposed)
{
    char qname[128];
    snprintf(qname, sizeof qname, "%s.q", name);
    const rt_tensor *f = rt_weights_get(w, name), *q = rt_weights_get(w, qname);
    const rt_tensor *s = rt_weights_get(w, scale_name), *z = rt_weights_get(w, zero_name);
    CHECK(q != NULL);
    if (!q)
        return;
    CHECK_EQ_INT((int)q->dtype, (int)IR_I8);
    ir_quant_range r = {-127, 127};
    int64_t rows = f->dims[0], cols = f->dims[1], mismatches = 0;
    for (int64_t i = 0; i < rows * cols; i++) {
        int64_t c = rt_tensor_numel(s) == 1 ? 0 : transposed ? i / cols : i % cols;
        float scale = ((const float *)s->data)[c], zero = ((const float *)z->data)[c];
        float want = ir_fake_quant(((const float *)f->data)[i], scale, zero, r);
        float got = ((float)((const int8_t *)q->data)[i] - zero) * scale;
        mismatches += got != want;
    }
    CHECK_EQ_INT((int)mismatches, 0);
}

/* Returns Σ_k |x_hat[m, k] · w_hat[k, n]| for the error bound. */
static double abs_dot(const float *xh, const float *wh, int64_t m, int64_t n, int64_t k_count, int64_t n_count,
                      bool transposed)
{
    double sum = 0;
    for (int64_t k = 0; k < k_count; k++) {
        float wv = transposed ? wh[n * k_count + k] : wh[k * n_count + n];
        sum += fabs((double)xh[m * k_count + k] * wv);
    }
    return sum;
}

/* Fake-quantizes every element of t with one scale and zero point. */
static rt_tensor *fake_quant_copy(const rt_tensor *t, float scale, float zero, ir_quant_range r)
{
    rt_tensor *c = rt_tensor_new(IR_F32, t->rank, t->dims);
    for (int64_t i = 0; i < rt_tensor_numel(t); i++)
        ((float *)c->data)[i] = ir_fake_quant(((const float *)t->data)[i], scale, zero, r);
    return c;
}

static void test_qlinear_matches_fake_quant(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_parse_string("small.qir", small_graph, strlen(small_graph), d);
    CHECK(g != NULL);
    if (!g)
        return;
    rt_weights *w = small_weights();
    rt_weights *in = rt_weights_new();
    int64_t xdims[2] = {M, K};
    rt_weights_set(in, "x", fx_normal_tensor(&rng, 2, xdims, 0.8));

    rt_tensor *want[2] = {NULL, NULL};
    CHECK_EQ_INT(rt_interp_run(g, w, in, want, d), 0);

    CHECK_EQ_INT(pass_int8_convert_weights(g, w, d), 2);
    check_converted_weight(w, "fc.weight", "fc.w.scale", "fc.w.zero_point", false);
    check_converted_weight(w, "wte", "head.w.scale", "head.w.zero_point", true);

    ir_graph *lowered = ir_graph_clone(g);
    CHECK_EQ_INT(pass_run_text(lowered, "lower-int8", d), 0);
    CHECK_EQ_INT(fx_count_ops(lowered, IR_OP_Q_LINEAR), 2);
    CHECK_EQ_INT(fx_count_ops(lowered, IR_OP_FQ_ACT), 0);
    CHECK_EQ_INT(fx_count_ops(lowered, IR_OP_FQ_WEIGHT), 0);
    CHECK(ir_find(lowered, "fc.weight") < 0);
    rt_tensor *got[2] = {NULL, NULL};
    CHECK_EQ_INT(rt_interp_run(lowered, w, in, got, d), 0);
    if (!want[0] || !want[1] || !got[0] || !got[1])
        return;

    /* The simulation's quantized operands, for the bound. */
    ir_quant_range u8 = {0, 255}, s8 = {-128, 127}, s8n = {-127, 127};
    rt_tensor *xh = fake_quant_copy(rt_weights_get(in, "x"), 2.5f / 255.0f, 121.0f, u8);
    rt_tensor *hh = fake_quant_copy(want[0], 0.01f, 0, s8);
    rt_tensor *th = fake_quant_copy(rt_weights_get(w, "wte"), 0.15f / 127.0f, 0, s8n);
    const rt_tensor *fw = rt_weights_get(w, "fc.weight");
    const float *ws = rt_weights_get(w, "fc.w.scale")->data, *bias = rt_weights_get(w, "fc.bias")->data;
    const float *wz = rt_weights_get(w, "fc.w.zero_point")->data;
    rt_tensor *wh = rt_tensor_new(IR_F32, 2, fw->dims);
    for (int64_t i = 0; i < K * N; i++)
        ((float *)wh->data)[i] = ir_fake_quant(((const float *)fw->data)[i], ws[i % N], wz[i % N], s8n);

    rt_tensor *jit[2] = {NULL, NULL};
    CHECK_EQ_INT(run_jit(lowered, w, in, jit, d), 0);
    rt_tensor *const *results[2] = {got, jit};
    const char *names[2] = {"interpreter", "JIT"};
    for (int r = 0; r < 2; r++) {
        rt_tensor *const *y = results[r];
        if (!y[0] || !y[1])
            continue;
        int over = 0;
        double worst = 0;
        for (int64_t m = 0; m < M; m++) {
            for (int64_t n = 0; n < N; n++) {
                double bound = DOT_RTOL * (abs_dot(xh->data, wh->data, m, n, K, N, false) + fabs(bias[n]));
                double diff = fabs((double)((float *)y[0]->data)[m * N + n] - ((float *)want[0]->data)[m * N + n]);
                worst = fmax(worst, diff / bound * DOT_RTOL);
                over += diff > bound;
            }
            for (int64_t n = 0; n < V; n++) {
                double bound = DOT_RTOL * abs_dot(hh->data, th->data, m, n, N, V, true);
                double diff = fabs((double)((float *)y[1]->data)[m * V + n] - ((float *)want[1]->data)[m * V + n]);
                over += diff > bound;
            }
        }
        printf("q.linear (%s) vs fake quant: largest difference %.3g of the product magnitude\n", names[r], worst);
        CHECK_EQ_INT(over, 0);
    }

    for (int i = 0; i < 2; i++) {
        rt_tensor_free(want[i]);
        rt_tensor_free(got[i]);
        rt_tensor_free(jit[i]);
    }
    rt_tensor_free(xh);
    rt_tensor_free(hh);
    rt_tensor_free(th);
    rt_tensor_free(wh);
    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(lowered);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* ---- tiny GPT-2 ---- */

static const char *sentence = "The quick brown fox jumps over the lazy dog, and the dog does not seem to mind it.";

static ir_graph *compile_tiny_gpt2(ir_diag *d)
{
    const fe_define defines[] = {{"n_layer", 2}, {"n_embd", 64}, {"n_head", 4}, {"n_ctx", 64}, {"B", 1},
                                 {"T", GPT2_T}};
    return fe_compile_file("examples/gpt2.qd", defines, 6, d);
}

/* The first GPT2_T tokens of the sentence as idx and the next as targets. */
static rt_weights *sentence_inputs(ir_diag *d)
{
    rt_tokenizer *tok = rt_tok_load("data/tokenizer/encoder.json", "data/tokenizer/vocab.bpe", d);
    CHECK(tok != NULL);
    if (!tok)
        return NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_EQ_INT(rt_tok_encode(tok, sentence, strlen(sentence), "sentence", &ids, &n, d), 0);
    CHECK(n >= GPT2_T + 1);
    rt_weights *in = rt_weights_new();
    int64_t dims[2] = {1, GPT2_T};
    rt_tensor *idx = rt_tensor_new(IR_I32, 2, dims), *targets = rt_tensor_new(IR_I32, 2, dims);
    for (int i = 0; i < GPT2_T; i++) {
        ((int32_t *)idx->data)[i] = ids[i % n];
        ((int32_t *)targets->data)[i] = ids[(i + 1) % n];
    }
    rt_weights_set(in, "idx", idx);
    rt_weights_set(in, "targets", targets);
    free(ids);
    rt_tok_free(tok);
    return in;
}

static void test_gpt2_lowered_matches_fake_quant(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = compile_tiny_gpt2(d);
    rt_weights *in = sentence_inputs(d);
    CHECK(g != NULL);
    if (!g || !in)
        return;
    CHECK_EQ_INT(pass_run_text(g, "insert-fakequant{bits=w8a8}", d), 0);
    rt_weights *w = fx_gpt2_weights(&rng, g, 0.02);
    const rt_weights *batches[1] = {in};
    pass_calib_options o = pass_calib_default_options();
    CHECK_EQ_INT(pass_calibrate(g, w, batches, 1, &o, d), 0);
    rt_tensor *want[2] = {NULL, NULL};
    CHECK_EQ_INT(rt_interp_run(g, w, in, want, d), 0);

    /* Four linears per block and the LM head. */
    CHECK_EQ_INT(pass_int8_convert_weights(g, w, d), 9);
    ir_graph *lowered = ir_graph_clone(g);
    CHECK_EQ_INT(pass_run_text(lowered, "lower-int8", d), 0);
    CHECK_EQ_INT(fx_count_ops(lowered, IR_OP_Q_LINEAR), 9);
    CHECK_EQ_INT(fx_count_ops(lowered, IR_OP_FQ_ACT) + fx_count_ops(lowered, IR_OP_FQ_WEIGHT), 0);
    rt_tensor *got[2] = {NULL, NULL};
    CHECK_EQ_INT(rt_interp_run(lowered, w, in, got, d), 0);
    if (!want[0] || !got[0] || !want[1] || !got[1])
        return;

    rt_tensor *jit[2] = {NULL, NULL};
    CHECK_EQ_INT(run_jit(lowered, w, in, jit, d), 0);
    rt_tensor **results[2] = {got, jit};
    const char *names[2] = {"interpreter", "JIT"};
    for (int r = 0; r < 2; r++) {
        rt_tensor **y = results[r];
        if (!y[0] || !y[1])
            continue;
        double logits_diff = fx_relative_difference(y[0], want[0]);
        double ppl_want = exp(((float *)want[1]->data)[0]), ppl_got = exp(((float *)y[1]->data)[0]);
        double ppl_diff = fabs(ppl_got - ppl_want) / ppl_want;
        printf("tiny GPT-2 W8A8, lowered (%s) vs fake quant (interpreter): logits max |diff| / max |logit| = "
               "%.3g, perplexity %.4f vs %.4f (relative %.3g)\n", names[r], logits_diff, ppl_got, ppl_want,
               ppl_diff);
        CHECK(logits_diff <= LOGITS_RTOL);
        CHECK(ppl_diff < PERPLEXITY_RTOL);
    }

    for (int i = 0; i < 2; i++) {
        rt_tensor_free(want[i]);
        rt_tensor_free(got[i]);
        rt_tensor_free(jit[i]);
    }
    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(lowered);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* ---- JIT q.linear against the interpreter, exactly ---- */

typedef struct qlinear_case {
    int64_t m, k, n;
    bool transpose_b, symmetric, per_channel, has_bias;
} qlinear_case;

/* GEMV (M <= 4) and GEMM shapes with K and N tails, an N edge panel of
 * one column, and the LM head's transposed weight. */
static const qlinear_case qlinear_cases[] = {
    {1, 768, 2304, false, false, true, true},  {1, 67, 97, true, true, true, false},
    {2, 5, 7, false, true, false, true},       {3, 130, 50, false, false, true, true},
    {4, 64, 49, true, false, false, false},    {5, 67, 50, false, false, true, true},
    {17, 3, 1, false, true, true, false},      {130, 768, 97, false, false, true, true},
    {1, 3072, 768, false, false, true, true},  {33, 768, 1001, true, true, true, false},
};
#define NQLINEAR_CASES ((int)(sizeof qlinear_cases / sizeof *qlinear_cases))

/* Returns the text of a graph with one q.linear of case c. */
static char *qlinear_graph_text(const qlinear_case *c)
{
    char *text = malloc(2048);
    long long m = c->m, k = c->k, n = c->n, channels = c->per_channel ? c->n : 1;
    char channel_type[32];
    if (c->per_channel)
        snprintf(channel_type, sizeof channel_type, "f32[%lld]", channels);
    else
        snprintf(channel_type, sizeof channel_type, "f32[]");
    snprintf(text, 2048,
             "graph @q {\n"
             "  %%x = input : f32[%lld,%lld]\n"
             "  @w.q = param : i8[%lld,%lld]\n"
             "  @x.scale = param : f32[]\n"
             "  @x.zero_point = param : f32[]\n"
             "  @w.scale = param : %s\n"
             "  @w.zero_point = param : %s\n"
             "  @b = param : f32[%lld]\n"
             "  %%y = q.linear %%x, @w.q, @x.scale, @x.zero_point, @w.scale, @w.zero_point%s "
             "{transpose_b=%d, bits=8, symmetric=%d, narrow=0} : f32[%lld,%lld]\n"
             "  return %%y\n"
             "}\n",
             m, k, c->transpose_b ? n : k, c->transpose_b ? k : n, channel_type, channel_type, n,
             c->has_bias ? ", @b" : "", (int)c->transpose_b, (int)c->symmetric, m, n);
    return text;
}

static void set_scalar(rt_weights *w, const char *name, float value)
{
    set_values(w, name, 0, NULL, &value);
}

/* Random i8 weights, scales and zero points (integers -2 .. 2 for the
 * weights; the input's rounds half to even), and inputs that the input
 * scale partly clips. */
static void qlinear_data(const qlinear_case *c, rt_weights *w, rt_weights *in)
{
    int64_t wdims[2] = {c->transpose_b ? c->n : c->k, c->transpose_b ? c->k : c->n};
    rt_tensor *wq = rt_tensor_new(IR_I8, 2, wdims);
    for (int64_t i = 0; i < c->k * c->n; i++)
        ((int8_t *)wq->data)[i] = (int8_t)(floor(fx_uniform_open(&rng) * 255.0) - 127.0);
    rt_weights_set(w, "w.q", wq);
    int64_t channels = c->per_channel ? c->n : 1, cdims[1] = {channels}, bdims[1] = {c->n};
    float *scales = malloc(sizeof *scales * (size_t)channels), *zeros = malloc(sizeof *zeros * (size_t)channels);
    for (int64_t j = 0; j < channels; j++) {
        scales[j] = (float)(1e-3 + 1e-2 * fx_uniform_open(&rng));
        zeros[j] = (float)floor(fx_uniform_open(&rng) * 5.0) - 2.0f;
    }
    set_values(w, "w.scale", c->per_channel ? 1 : 0, cdims, scales);
    set_values(w, "w.zero_point", c->per_channel ? 1 : 0, cdims, zeros);
    free(scales);
    free(zeros);
    rt_weights_set(w, "b", fx_normal_tensor(&rng, 1, bdims, 0.1));
    set_scalar(w, "x.scale", 2.0f / 255.0f);
    set_scalar(w, "x.zero_point", c->symmetric ? 0.0f : 120.5f);
    int64_t xdims[2] = {c->m, c->k};
    rt_weights_set(in, "x", fx_normal_tensor(&rng, 2, xdims, 0.6));
}

static void test_qlinear_jit_equals_interpreter(void)
{
    ir_diag *d = ir_diag_new(stderr);
    cg_options o = cg_default_options();
    o.threads = 2;
    for (int i = 0; i < NQLINEAR_CASES; i++) {
        const qlinear_case *c = &qlinear_cases[i];
        char *text = qlinear_graph_text(c);
        ir_graph *g = ir_parse_string("q.qir", text, strlen(text), d);
        free(text);
        CHECK(g != NULL);
        if (!g)
            continue;
        rt_weights *w = rt_weights_new(), *in = rt_weights_new();
        qlinear_data(c, w, in);
        rt_tensor *want = NULL, *got = NULL;
        CHECK_EQ_INT(rt_interp_run(g, w, in, &want, d), 0);
        cg_module *m = cg_compile(g, &o, d);
        CHECK(m != NULL);
        if (m)
            CHECK_EQ_INT(cg_run(m, w, in, &got, d), 0);
        if (want && got) {
            int64_t bad = 0;
            for (int64_t x = 0; x < c->m * c->n; x++) {
                float a = ((float *)got->data)[x], b = ((float *)want->data)[x];
                if (a != b && bad++ == 0)
                    fprintf(stderr, "q.linear %lldx%lldx%lld: JIT y[%lld] = %.9g, interpreter %.9g\n",
                            (long long)c->m, (long long)c->k, (long long)c->n, (long long)x, (double)a, (double)b);
            }
            CHECK_EQ_INT(bad, 0);
        }
        rt_tensor_free(want);
        rt_tensor_free(got);
        cg_free(m);
        rt_weights_free(w);
        rt_weights_free(in);
        ir_graph_free(g);
    }
    ir_diag_free(d);
}

/* ---- tiny GPT-2 decoding step with a key-value cache ---- */

enum { KV_CACHE = 12, KV_POS = 7 };

/* One decoding step of the tiny examples/gpt2_kv.qd at position KV_POS,
 * with caches whose first KV_POS rows hold N(0, 0.5) keys and values,
 * the same on every call. */
static rt_weights *decode_inputs(const ir_graph *g)
{
    uint64_t saved_state = rng.state;
    rng.state = 0x853c49e6748fea9bull;
    rt_weights *in = rt_weights_new();
    int64_t one[2] = {1, 1};
    rt_tensor *idx = rt_tensor_new(IR_I32, 2, one), *pos = rt_tensor_new(IR_I32, 0, NULL);
    rt_tensor *positions = rt_tensor_new(IR_I32, 1, one);
    *(int32_t *)idx->data = 464;
    *(int32_t *)pos->data = KV_POS;
    *(int32_t *)positions->data = KV_POS;
    rt_weights_set(in, "idx", idx);
    rt_weights_set(in, "pos", pos);
    rt_weights_set(in, "positions", positions);
    for (int id = 0; id < g->nvalues; id++) {
        const ir_value *v = g->values[id];
        if (v->op != IR_OP_INPUT || v->type.dtype != IR_F32)
            continue;
        rt_tensor *t = fx_normal_tensor(&rng, v->type.rank, v->type.dims, 0.5);
        /* [B, NH, n_cache, HS]: zero the rows at and after KV_POS. */
        int64_t rows = v->type.dims[2], hs = v->type.dims[3];
        for (int64_t i = 0; i < rt_tensor_numel(t); i++)
            if ((i / hs) % rows >= KV_POS)
                ((float *)t->data)[i] = 0;
        rt_weights_set(in, v->name, t);
    }
    rng.state = saved_state;
    return in;
}

/* The decoding step runs every q.linear with one row, so the JIT takes
 * the GEMV kernel, the LM head included; its logits must match the
 * fake-quant simulation as prefill's do. */
static void test_gpt2_decode_lowered_matches_fake_quant(void)
{
    ir_diag *d = ir_diag_new(stderr);
    const fe_define defines[] = {{"n_layer", 2}, {"n_embd", 64}, {"n_head", 4}, {"n_ctx", 64},
                                 {"n_cache", KV_CACHE}, {"B", 1}, {"T", 1}};
    ir_graph *g = fe_compile_file("examples/gpt2_kv.qd", defines, 7, d);
    CHECK(g != NULL);
    if (!g)
        return;
    CHECK_EQ_INT(pass_run_text(g, "insert-fakequant{bits=w8a8}", d), 0);
    rt_weights *w = fx_gpt2_weights(&rng, g, 0.02);
    rt_weights *in = decode_inputs(g);
    const rt_weights *batches[1] = {in};
    pass_calib_options o = pass_calib_default_options();
    CHECK_EQ_INT(pass_calibrate(g, w, batches, 1, &o, d), 0);
    rt_tensor *want = NULL;
    CHECK_EQ_INT(rt_interp_run(g, w, in, &want, d), 0);

    CHECK_EQ_INT(pass_int8_convert_weights(g, w, d), 9);
    ir_graph *lowered = ir_graph_clone(g);
    CHECK_EQ_INT(pass_run_text(lowered, "lower-int8", d), 0);
    CHECK_EQ_INT(fx_count_ops(lowered, IR_OP_Q_LINEAR), 9);
    /* cache_write stores the step's row into the cache inputs, so each run
     * gets fresh ones. */
    rt_weights_free(in);
    in = decode_inputs(g);
    rt_tensor *got = NULL;
    CHECK_EQ_INT(run_jit(lowered, w, in, &got, d), 0);
    if (want && got) {
        double diff = fx_relative_difference(got, want);
        printf("tiny GPT-2 W8A8 decoding step, lowered (JIT, GEMV) vs fake quant (interpreter): logits max |diff| "
               "/ max |logit| = %.3g\n", diff);
        CHECK(diff <= LOGITS_RTOL);
    }
    rt_tensor_free(want);
    rt_tensor_free(got);
    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(lowered);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* A lowered graph reads <w>.q, so running it without the conversion must
 * fail on the missing weight rather than compute with zeros. */
static void test_lowered_needs_converted_weights(void)
{
    ir_diag *d = ir_diag_new(NULL);
    ir_graph *g = ir_parse_string("small.qir", small_graph, strlen(small_graph), d);
    rt_weights *w = small_weights();
    rt_weights *in = rt_weights_new();
    int64_t xdims[2] = {M, K};
    rt_weights_set(in, "x", fx_normal_tensor(&rng, 2, xdims, 0.8));
    CHECK_EQ_INT(pass_run_text(g, "lower-int8", d), 0);
    rt_tensor *got[2] = {NULL, NULL};
    CHECK(rt_interp_run(g, w, in, got, d) != 0);
    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* The lowered graph's code uses vpdpbusd on a CPU with AVX-512 VNNI
 * (znver4) and not on one without it (x86-64-v3, AVX2). */
static void test_qlinear_asm_uses_vnni(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_parse_string("small.qir", small_graph, strlen(small_graph), d);
    CHECK(g != NULL);
    if (!g)
        return;
    CHECK_EQ_INT(pass_run_text(g, "lower-int8", d), 0);
    cg_options o = cg_default_options();
    o.cpu = "znver4";
    char *vnni = cg_emit_asm(g, &o, d);
    o.cpu = "x86-64-v3";
    char *avx2 = cg_emit_asm(g, &o, d);
    CHECK(vnni != NULL);
    CHECK(avx2 != NULL);
    if (vnni)
        CHECK(strstr(vnni, "vpdpbusd") != NULL);
    if (avx2)
        CHECK(strstr(avx2, "vpdpbusd") == NULL);
    free(vnni);
    free(avx2);
    ir_graph_free(g);
    ir_diag_free(d);
}

int main(void)
{
    test_qlinear_matches_fake_quant();
    test_gpt2_lowered_matches_fake_quant();
    test_qlinear_jit_equals_interpreter();
    test_gpt2_decode_lowered_matches_fake_quant();
    test_lowered_needs_converted_weights();
    test_qlinear_asm_uses_vnni();
    return check_finish();
}
