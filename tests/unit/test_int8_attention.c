/* Tests of the integer attention ops (q.quantize, q.matmul, q.requantize,
 * q.dequantize) and of their lowering by lower-int8.
 *
 * Op level: the interpreter's sums must equal a direct sum over the
 * quantized operands, and its requantization must equal
 * cg_requantize_round (codegen/quant_arith.h). The JIT must equal the
 * interpreter bit for bit, over shapes whose K and N are not multiples of
 * the vector width.
 *
 * Model level: a tiny GPT-2 with quantized attention operands
 * (insert-fakequant sites=linear;lm_head;attention), lowered, against the
 * fake-quant simulation it replaces. The integer sums are exact. q · kᵀ is
 * scaled by s_q · s_k once instead of summing f32 products, and att · v is
 * requantized with one rounding of acc · M0 instead of an f32 division, so
 * a quantizer's integer changes only when the two land on opposite sides
 * of a rounding boundary, within f32 error of it. The logits must stay
 * within LOGITS_RTOL of the largest |logit| (the tolerance of
 * tests/unit/test_int8.c), far below the float model's distance from the
 * simulation, which the test checks too. With the double rounding of
 * cg_qmul_apply, 3 of the 512 c_proj inputs of block 0 moved by one step
 * and the logits by 2e-2 of their largest magnitude (measured on this
 * model), so the bound catches such a rounding difference. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixtures.h"
#include "codegen/codegen.h"
#include "codegen/quant_arith.h"
#include "frontend/frontend.h"
#include "ir/int8.h"
#include "ir/text.h"
#include "passes/int8.h"
#include "passes/manager.h"
#include "passes/quantize.h"
#include "runtime/interp.h"

#define GPT2_T 16
#define LOGITS_RTOL 1e-4

static fx_rng rng = {FX_RNG_LCG, 0x2545f4914f6cdd1dull};

static void set_scalar(rt_weights *w, const char *name, float value)
{
    rt_tensor *t = rt_tensor_new(IR_F32, 0, NULL);
    *(float *)t->data = value;
    rt_weights_set(w, name, t);
}

/* ---- the ops, JIT against the interpreter ---- */

typedef struct qmatmul_case {
    int64_t batch, m, k, n;
    bool transpose_b, b_symmetric;
    double multiplier; /* real requantization multiplier */
} qmatmul_case;

/* K and N below, at and above vector widths of 8 and 16, one multiplier
 * that needs a left shift, one near 2^-31, and a column of one. */
static const qmatmul_case qmatmul_cases[] = {
    {6, 5, 19, 7, true, false, 3.1e-3},  {6, 5, 19, 21, false, true, 2.7e-4},
    {2, 9, 64, 9, true, false, 1.9e-3},  {1, 3, 37, 33, false, false, 5.5},
    {4, 1, 16, 1, false, true, 6.0e-10}, {3, 17, 8, 17, true, true, 0.031},
};
#define NQMATMUL_CASES ((int)(sizeof qmatmul_cases / sizeof *qmatmul_cases))

static char *qmatmul_graph_text(const qmatmul_case *c)
{
    char *text = malloc(4096);
    long long b = c->batch, m = c->m, k = c->k, n = c->n;
    long long b_rows = c->transpose_b ? n : k, b_cols = c->transpose_b ? k : n;
    const char *b_type = c->b_symmetric ? "i8" : "u8";
    snprintf(text, 4096,
             "graph @q {\n"
             "  %%a = input : f32[%lld,%lld,%lld]\n"
             "  %%b = input : f32[%lld,%lld,%lld]\n"
             "  @a.scale = param : f32[]\n"
             "  @a.zero_point = param : f32[]\n"
             "  @b.scale = param : f32[]\n"
             "  @b.zero_point = param : f32[]\n"
             "  @out.scale = param : f32[]\n"
             "  @out.zero_point = param : f32[]\n"
             "  @ab.scale = param : f32[]\n"
             "  @requant = param : i32[3]\n"
             "  %%qa = q.quantize %%a, @a.scale, @a.zero_point {bits=8, symmetric=0, narrow=0} : u8[%lld,%lld,%lld]\n"
             "  %%qb = q.quantize %%b, @b.scale, @b.zero_point {bits=8, symmetric=%d, narrow=0} : %s[%lld,%lld,%lld]\n"
             "  %%acc = q.matmul %%qa, %%qb, @a.zero_point, @b.zero_point {transpose_b=%d} : i32[%lld,%lld,%lld]\n"
             "  %%r = q.requantize %%acc, @requant, @out.zero_point {bits=8, symmetric=0, narrow=0} : "
             "u8[%lld,%lld,%lld]\n"
             "  %%y = q.dequantize %%r, @out.scale, @out.zero_point : f32[%lld,%lld,%lld]\n"
             "  %%f = q.dequantize %%acc, @ab.scale : f32[%lld,%lld,%lld]\n"
             "  return %%qa, %%qb, %%acc, %%r, %%y, %%f\n"
             "}\n",
             b, m, k, b, b_rows, b_cols, b, m, k, (int)c->b_symmetric, b_type, b, b_rows, b_cols,
             (int)c->transpose_b, b, m, n, b, m, n, b, m, n, b, m, n);
    return text;
}

static void qmatmul_data(const qmatmul_case *c, rt_weights *w, rt_weights *in, cg_qmul *m)
{
    int64_t adims[3] = {c->batch, c->m, c->k};
    int64_t bdims[3] = {c->batch, c->transpose_b ? c->n : c->k, c->transpose_b ? c->k : c->n};
    rt_weights_set(in, "a", fx_normal_tensor(&rng, 3, adims, 1.0));
    rt_weights_set(in, "b", fx_normal_tensor(&rng, 3, bdims, 1.0));
    set_scalar(w, "a.scale", 4.0f / 255.0f);
    set_scalar(w, "a.zero_point", 127.5f); /* rounds half to even: 128 */
    set_scalar(w, "b.scale", 3.0f / 127.0f);
    set_scalar(w, "b.zero_point", c->b_symmetric ? 0.0f : 121.0f);
    set_scalar(w, "out.scale", 0.05f);
    set_scalar(w, "out.zero_point", 101.0f);
    set_scalar(w, "ab.scale", (4.0f / 255.0f) * (3.0f / 127.0f));
    CHECK_EQ_INT(cg_qmul_from_real(c->multiplier, m), 0);
    int64_t three[1] = {3};
    rt_tensor *t = rt_tensor_new(IR_I32, 1, three);
    int32_t *x = t->data;
    x[IR_QMUL_M0] = m->m0;
    x[IR_QMUL_LEFT_SHIFT] = m->left_shift;
    x[IR_QMUL_RIGHT_SHIFT] = m->right_shift;
    rt_weights_set(w, "requant", t);
}

/* Checks the interpreter's sums and requantized values against direct
 * computations from its quantized operands. */
static void check_reference(const qmatmul_case *c, rt_tensor **out, const cg_qmul *m)
{
    const uint8_t *qa = out[0]->data;
    const int32_t *acc = out[2]->data;
    const uint8_t *r = out[3]->data;
    int64_t wrong_sums = 0, wrong_requant = 0;
    for (int64_t bt = 0; bt < c->batch; bt++) {
        for (int64_t i = 0; i < c->m; i++) {
            for (int64_t j = 0; j < c->n; j++) {
                int64_t sum = 0;
                for (int64_t k = 0; k < c->k; k++) {
                    int64_t bi = bt * c->k * c->n + (c->transpose_b ? j * c->k + k : k * c->n + j);
                    int64_t b = c->b_symmetric ? ((const int8_t *)out[1]->data)[bi]
                                               : ((const uint8_t *)out[1]->data)[bi] - 121;
                    sum += ((int64_t)qa[(bt * c->m + i) * c->k + k] - 128) * b;
                }
                int64_t at = (bt * c->m + i) * c->n + j;
                wrong_sums += acc[at] != sum;
                wrong_requant += r[at] != cg_requantize_round(acc[at], *m, 101, 0, 255);
            }
        }
    }
    CHECK_EQ_INT(wrong_sums, 0);
    CHECK_EQ_INT(wrong_requant, 0);
}

static void test_ops_jit_equals_interpreter(void)
{
    ir_diag *d = ir_diag_new(stderr);
    cg_options o = cg_default_options();
    o.threads = 2;
    for (int i = 0; i < NQMATMUL_CASES; i++) {
        const qmatmul_case *c = &qmatmul_cases[i];
        char *text = qmatmul_graph_text(c);
        ir_graph *g = ir_parse_string("q.qir", text, strlen(text), d);
        free(text);
        CHECK(g != NULL);
        if (!g)
            continue;
        rt_weights *w = rt_weights_new(), *in = rt_weights_new();
        cg_qmul m;
        qmatmul_data(c, w, in, &m);
        rt_tensor *want[6] = {NULL}, *got[6] = {NULL};
        CHECK_EQ_INT(rt_interp_run(g, w, in, want, d), 0);
        if (want[3])
            check_reference(c, want, &m);
        cg_module *module = cg_compile(g, &o, d);
        CHECK(module != NULL);
        if (module)
            CHECK_EQ_INT(cg_run(module, w, in, got, d), 0);
        for (int k = 0; k < 6 && got[0]; k++) {
            CHECK(want[k] != NULL);
            CHECK(got[k] != NULL);
            if (!want[k] || !got[k])
                continue;
            size_t bytes = rt_tensor_nbytes(want[k]);
            CHECK_EQ_INT(rt_tensor_nbytes(got[k]), bytes);
            int same = memcmp(want[k]->data, got[k]->data, bytes) == 0;
            if (!same)
                fprintf(stderr, "case %d: output %d differs between the JIT and the interpreter\n", i, k);
            CHECK(same);
        }
        for (int k = 0; k < 6; k++) {
            rt_tensor_free(want[k]);
            rt_tensor_free(got[k]);
        }
        cg_free(module);
        rt_weights_free(w);
        rt_weights_free(in);
        ir_graph_free(g);
    }
    ir_diag_free(d);
}

/* Returns whether the LLVM IR text has a line "= mul <N x i32>". */
static bool has_vector_i32_mul(const char *llvm)
{
    for (const char *at = strstr(llvm, "= mul <"); at; at = strstr(at + 1, "= mul <")) {
        const char *eol = strchr(at, '\n');
        const char *lanes = strstr(at, " x i32>");
        if (lanes && (!eol || lanes < eol))
            return true;
    }
    return false;
}

/* The q.matmul kernels multiply whole vectors of i32 lanes, for both
 * operand layouts. The graphs of the first two cases hold no other
 * multiplication of i32 vectors. */
static void test_qmatmul_is_vectorized(void)
{
    ir_diag *d = ir_diag_new(stderr);
    for (int i = 0; i < 2; i++) {
        char *text = qmatmul_graph_text(&qmatmul_cases[i]);
        ir_graph *g = ir_parse_string("q.qir", text, strlen(text), d);
        free(text);
        char *llvm = g ? cg_emit_llvm(g, NULL, d) : NULL;
        CHECK(llvm != NULL);
        if (llvm)
            CHECK(has_vector_i32_mul(llvm));
        free(llvm);
        ir_graph_free(g);
    }
    ir_diag_free(d);
}

/* The shape rule rejects operands whose leading dims differ. */
static void test_qmatmul_rejects_broadcast(void)
{
    const char *text = "graph @q {\n"
                       "  %a = input : u8[2,3,4]\n"
                       "  %b = input : u8[1,4,5]\n"
                       "  @z = param : f32[]\n"
                       "  %acc = q.matmul %a, %b, @z, @z : i32[2,3,5]\n"
                       "  return %acc\n"
                       "}\n";
    FILE *devnull = fopen("/dev/null", "w");
    ir_diag *quiet = ir_diag_new(devnull);
    ir_graph *g = ir_parse_string("q.qir", text, strlen(text), quiet);
    CHECK(g == NULL);
    CHECK(ir_diag_error_count(quiet) >= 1);
    ir_graph_free(g);
    ir_diag_free(quiet);
    fclose(devnull);
}

/* ---- tiny GPT-2 with quantized attention ---- */

static rt_weights *random_tokens(int64_t vocab)
{
    int64_t dims[2] = {1, GPT2_T};
    rt_tensor *idx = rt_tensor_new(IR_I32, 2, dims), *targets = rt_tensor_new(IR_I32, 2, dims);
    for (int i = 0; i < GPT2_T; i++) {
        ((int32_t *)idx->data)[i] = (int32_t)(fx_uniform_open(&rng) * (double)vocab);
        ((int32_t *)targets->data)[i] = (int32_t)(fx_uniform_open(&rng) * (double)vocab);
    }
    rt_weights *in = rt_weights_new();
    rt_weights_set(in, "idx", idx);
    rt_weights_set(in, "targets", targets);
    return in;
}

/* max |got - want| / max |want| */
static double relative_difference(const rt_tensor *got, const rt_tensor *want)
{
    const float *a = got->data, *b = want->data;
    double diff = 0, scale = 0;
    for (int64_t i = 0; i < rt_tensor_numel(want); i++) {
        diff = fmax(diff, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return scale > 0 ? diff / scale : diff;
}

static void test_gpt2_attention_matches_fake_quant(void)
{
    ir_diag *d = ir_diag_new(stderr);
    const fe_define defines[] = {{"n_layer", 2}, {"n_embd", 64}, {"n_head", 4}, {"n_vocab", 512},
                                 {"n_ctx", 64},  {"B", 1},       {"T", GPT2_T}};
    ir_graph *g = fe_compile_file("examples/gpt2.qd", defines, 7, d);
    CHECK(g != NULL);
    if (!g) {
        ir_diag_free(d);
        return;
    }
    rt_weights *w = fx_gpt2_weights(&rng, g, 0.08);
    rt_weights *in = random_tokens(512);
    rt_tensor *float_out[2] = {NULL, NULL};
    CHECK_EQ_INT(rt_interp_run(g, w, in, float_out, d), 0);

    CHECK_EQ_INT(pass_run_text(g, "insert-fakequant{sites=linear;lm_head;attention}", d), 0);
    rt_weights *calib[3];
    for (int b = 0; b < 3; b++)
        calib[b] = random_tokens(512);
    for (int id = 0; id < g->nvalues; id++) {
        const ir_value *v = g->values[id];
        if (v->op == IR_OP_PARAM && !rt_weights_get(w, v->name))
            rt_weights_set(w, v->name, rt_tensor_new(v->type.dtype, v->type.rank, v->type.dims));
    }
    pass_calib_options co = pass_calib_default_options();
    CHECK_EQ_INT(pass_calibrate(g, w, (const rt_weights *const *)calib, 3, &co, d), 0);
    rt_tensor *want[2] = {NULL, NULL};
    CHECK_EQ_INT(rt_interp_run(g, w, in, want, d), 0);

    /* Nine i8 weights and one multiplier per block (att · v). */
    CHECK_EQ_INT(pass_int8_convert_weights(g, w, d), 11);
    ir_graph *lowered = ir_graph_clone(g);
    CHECK_EQ_INT(pass_run_text(lowered, "lower-int8", d), 0);
    CHECK_EQ_INT(fx_count_live_ops(lowered, IR_OP_Q_LINEAR), 9);
    CHECK_EQ_INT(fx_count_live_ops(lowered, IR_OP_Q_MATMUL), 4);
    CHECK_EQ_INT(fx_count_live_ops(lowered, IR_OP_Q_QUANTIZE), 8);
    CHECK_EQ_INT(fx_count_live_ops(lowered, IR_OP_Q_REQUANTIZE), 2);
    CHECK_EQ_INT(fx_count_live_ops(lowered, IR_OP_Q_DEQUANTIZE), 4);
    CHECK_EQ_INT(fx_count_live_ops(lowered, IR_OP_FQ_ACT) + fx_count_live_ops(lowered, IR_OP_MATMUL), 0);

    rt_tensor *interp[2] = {NULL, NULL}, *jit[2] = {NULL, NULL};
    CHECK_EQ_INT(rt_interp_run(lowered, w, in, interp, d), 0);
    cg_module *m = cg_compile(lowered, NULL, d);
    CHECK(m != NULL);
    if (m)
        CHECK_EQ_INT(cg_run(m, w, in, jit, d), 0);
    if (want[0] && interp[0] && jit[0] && float_out[0]) {
        double float_diff = relative_difference(float_out[0], want[0]);
        double interp_diff = relative_difference(interp[0], want[0]);
        double jit_diff = relative_difference(jit[0], want[0]);
        printf("tiny GPT-2 W8A8 with integer attention vs fake quant: logits max |diff| / max |logit| = %.3g "
               "(interpreter), %.3g (JIT); float model %.3g\n",
               interp_diff, jit_diff, float_diff);
        CHECK(interp_diff <= LOGITS_RTOL);
        CHECK(jit_diff <= LOGITS_RTOL);
        CHECK(float_diff > 10 * LOGITS_RTOL);
    }
    for (int k = 0; k < 2; k++) {
        rt_tensor_free(float_out[k]);
        rt_tensor_free(want[k]);
        rt_tensor_free(interp[k]);
        rt_tensor_free(jit[k]);
    }
    for (int b = 0; b < 3; b++)
        rt_weights_free(calib[b]);
    cg_free(m);
    ir_graph_free(lowered);
    ir_graph_free(g);
    rt_weights_free(w);
    rt_weights_free(in);
    ir_diag_free(d);
}

int main(void)
{
    test_ops_jit_equals_interpreter();
    test_qmatmul_is_vectorized();
    test_qmatmul_rejects_broadcast();
    test_gpt2_attention_matches_fake_quant();
    return check_finish();
}
