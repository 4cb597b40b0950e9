/* Folding Quadapter scales on a tiny random GPT-2: examples/gpt2.qd with
 * 2 layers, 64 channels, 4 heads and the full 50257-token vocabulary, run
 * by the interpreter on a tokenized English sentence. Each layer has
 * Quadapters at both layernorms and on the attention value path.
 *   - floating point: the model with qa.scale ops and random alpha in
 *     [0.5, 2] and the folded model give the same logits within FP_TOL of
 *     the largest logit magnitude (measured: 1.1e-7);
 *   - W8A8 with per-channel weights: quantizer params calibrated (min-max)
 *     on the unfolded model and carried through the fold, which multiplies
 *     the c_attn weight scales of the v columns by alpha along with the
 *     columns, give quantized logits within QUANT_TOL (measured: 0); so does
 *     the folded model recalibrated on the same text (measured: 1.7e-7).
 * The fold changes the rounding of the layernorm output (alpha (g x + b)
 * becomes (alpha g) x + alpha b), so an activation within an ulp of a
 * rounding boundary of its quantizer can move by one step; QUANT_TOL allows
 * for a few such steps. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixtures.h"
#include "frontend/frontend.h"
#include "ir/text.h"
#include "passes/manager.h"
#include "passes/quantize.h"
#include "runtime/interp.h"
#include "runtime/tokenizer.h"
#include "runtime/train_exec.h"

#define T 16
#define FP_TOL 1e-5
#define QUANT_TOL 1e-4

static const char *sentence = "The quick brown fox jumps over the lazy dog, and the dog does not seem to mind it.";

static fx_rng rng = {FX_RNG_LCG, 0x243f6a8885a308d3ull};

static ir_graph *compile_tiny_gpt2(ir_diag *d)
{
    const fe_define defines[] = {{"n_layer", 2}, {"n_embd", 64}, {"n_head", 4}, {"n_ctx", 64}, {"B", 1}, {"T", T}};
    return fe_compile_file("examples/gpt2.qd", defines, 6, d);
}

/* Random weights for every param of g: N(0, 0.02) for matrices, 1 + N(0, 0.1)
 * for layernorm gains, N(0, 0.1) for biases, U[0.5, 2] for Quadapter alphas
 * and 1 / 0 for quantizer scales and zero points. */
static rt_weights *random_weights(const ir_graph *g)
{
    rt_weights *w = rt_weights_new();
    for (int id = 0; id < g->nvalues; id++) {
        const ir_value *v = g->values[id];
        if (v->op != IR_OP_PARAM)
            continue;
        rt_tensor *t = rt_tensor_new(IR_F32, v->type.rank, v->type.dims);
        float *x = t->data;
        const char *init = ir_attr_str(v, "init");
        bool alpha = strstr(v->name, ".quadapter.alpha") != NULL;
        for (int64_t i = 0; i < rt_tensor_numel(t); i++) {
            if (alpha)
                x[i] = (float)(0.5 + 1.5 * fx_uniform_open(&rng));
            else if (v->type.rank == 2)
                x[i] = (float)(0.02 * fx_normal(&rng));
            else if (strcmp(init, "ones") == 0)
                x[i] = (float)(1.0 + 0.1 * fx_normal(&rng));
            else
                x[i] = (float)(0.1 * fx_normal(&rng));
        }
        rt_weights_set(w, v->name, t);
    }
    return w;
}

/* The first T tokens of the sentence as idx and the next T as targets. */
static rt_weights *sentence_inputs(ir_diag *d)
{
    rt_tokenizer *tok = rt_tok_load("data/tokenizer/encoder.json", "data/tokenizer/vocab.bpe", d);
    CHECK(tok != NULL);
    if (!tok)
        return NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_EQ_INT(rt_tok_encode(tok, sentence, strlen(sentence), "sentence", &ids, &n, d), 0);
    CHECK(n >= T + 1);
    rt_weights *in = rt_weights_new();
    int64_t dims[2] = {1, T};
    rt_tensor *idx = rt_tensor_new(IR_I32, 2, dims), *targets = rt_tensor_new(IR_I32, 2, dims);
    for (int i = 0; i < T; i++) {
        ((int32_t *)idx->data)[i] = ids[i % n];
        ((int32_t *)targets->data)[i] = ids[(i + 1) % n];
    }
    rt_weights_set(in, "idx", idx);
    rt_weights_set(in, "targets", targets);
    free(ids);
    rt_tok_free(tok);
    return in;
}

static rt_tensor *logits_of(const ir_graph *g, const rt_weights *w, const rt_weights *in, ir_diag *d)
{
    rt_tensor *outputs[2] = {NULL, NULL};
    CHECK_EQ_INT(rt_interp_run(g, w, in, outputs, d), 0);
    rt_tensor_free(outputs[1]);
    return outputs[0];
}

static void test_fold_preserves_float_logits(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = compile_tiny_gpt2(d);
    CHECK(g != NULL);
    rt_weights *in = sentence_inputs(d);
    if (!g || !in)
        return;
    CHECK_EQ_INT(pass_run_text(g, "insert-quadapter{sites=ln;attn-v}", d), 0);
    /* Two layernorm sites and one value site per layer. */
    CHECK_EQ_INT(fx_count_ops(g, IR_OP_QA_SCALE), 12);
    rt_weights *w = random_weights(g);
    rt_tensor *before = logits_of(g, w, in, d);

    ir_graph *folded = ir_graph_clone(g);
    rt_weights *fw = fx_copy_weights(w);
    CHECK_EQ_INT(pass_fold_quadapter(folded, fw, d), 0);
    CHECK_EQ_INT(fx_count_ops(folded, IR_OP_QA_SCALE), 0);
    CHECK(ir_find(folded, "h.0.ln_1.quadapter.alpha") < 0);
    CHECK(rt_weights_get(fw, "h.1.attn.c_proj.quadapter.alpha") == NULL);
    CHECK_EQ_INT(ir_verify(folded, "fold-quadapter"), 0);
    rt_tensor *after = logits_of(folded, fw, in, d);
    double diff = fx_relative_difference(after, before);
    printf("float logits, folded vs unfolded: max |diff| / max |logit| = %.3g\n", diff);
    CHECK(diff <= FP_TOL);

    rt_tensor_free(before);
    rt_tensor_free(after);
    rt_weights_free(w);
    rt_weights_free(fw);
    rt_weights_free(in);
    ir_graph_free(folded);
    ir_graph_free(g);
    ir_diag_free(d);
}

static void test_fold_preserves_quantized_logits(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = compile_tiny_gpt2(d);
    rt_weights *in = sentence_inputs(d);
    if (!g || !in)
        return;
    CHECK_EQ_INT(pass_run_text(g, "insert-quadapter{sites=ln;attn-v},insert-fakequant{bits=w8a8}", d), 0);
    rt_weights *w = random_weights(g);
    const rt_weights *batches[1] = {in};
    pass_calib_options o = pass_calib_default_options();
    CHECK_EQ_INT(pass_calibrate(g, w, batches, 1, &o, d), 0);
    rt_tensor *before = logits_of(g, w, in, d);

    ir_graph *folded = ir_graph_clone(g);
    rt_weights *fw = fx_copy_weights(w);
    CHECK_EQ_INT(pass_fold_quadapter(folded, fw, d), 0);
    rt_tensor *same_params = logits_of(folded, fw, in, d);
    double diff = fx_relative_difference(same_params, before);
    printf("W8A8 logits, folded (quantizer params carried through the fold) vs unfolded: %.3g\n", diff);
    CHECK(diff <= QUANT_TOL);

    /* The folded model has the same activation ranges up to rounding, so
     * recalibrating it keeps the scales and the logits. */
    CHECK_EQ_INT(pass_calibrate(folded, fw, batches, 1, &o, d), 0);
    const float *s0 = rt_weights_get(w, "h.0.attn.c_attn.input.scale")->data;
    const float *s1 = rt_weights_get(fw, "h.0.attn.c_attn.input.scale")->data;
    CHECK_CLOSE(s1[0], s0[0], 0, 1e-5);
    rt_tensor *refit = logits_of(folded, fw, in, d);
    diff = fx_relative_difference(refit, before);
    printf("W8A8 logits, folded (recalibrated) vs unfolded: %.3g\n", diff);
    CHECK(diff <= QUANT_TOL);

    rt_tensor_free(before);
    rt_tensor_free(same_params);
    rt_tensor_free(refit);
    rt_weights_free(w);
    rt_weights_free(fw);
    rt_weights_free(in);
    ir_graph_free(folded);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* SmoothQuant scales set through the same alpha params fold the same way. */
static void test_smoothquant_folds(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = compile_tiny_gpt2(d);
    rt_weights *in = sentence_inputs(d);
    if (!g || !in)
        return;
    CHECK_EQ_INT(pass_run_text(g, "insert-quadapter", d), 0);
    rt_weights *w = random_weights(g);
    const rt_weights *batches[1] = {in};
    CHECK_EQ_INT(pass_smoothquant_scales(g, w, batches, 1, 0.5, NULL, d), 0);
    rt_tensor *before = logits_of(g, w, in, d);
    CHECK_EQ_INT(pass_fold_quadapter(g, w, d), 0);
    rt_tensor *after = logits_of(g, w, in, d);
    double diff = fx_relative_difference(after, before);
    printf("float logits with SmoothQuant alphas, folded vs unfolded: %.3g\n", diff);
    CHECK(diff <= FP_TOL);
    rt_tensor_free(before);
    rt_tensor_free(after);
    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* Calibration through the JIT executor sets the same scales as through
 * the interpreter, up to the JIT's f32 GEMM sums (the interpreter sums in
 * double), which move an observed minimum or maximum by a few ulps. */
static void test_calibrate_with_jit(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = compile_tiny_gpt2(d);
    rt_weights *in = sentence_inputs(d);
    if (!g || !in)
        return;
    CHECK_EQ_INT(pass_run_text(g, "insert-quadapter,insert-fakequant{bits=w4a8}", d), 0);
    rt_weights *w = random_weights(g);
    rt_weights *wj = fx_copy_weights(w);
    const rt_weights *batches[1] = {in};
    pass_calib_options o = pass_calib_default_options();
    CHECK_EQ_INT(pass_calibrate(g, w, batches, 1, &o, d), 0);
    o.executor = rt_executor_jit();
    CHECK_EQ_INT(pass_calibrate(g, wj, batches, 1, &o, d), 0);
    int compared = 0;
    for (int i = 0; i < w->count; i++) {
        const char *name = w->names[i];
        size_t len = strlen(name);
        if (len < 6 || strcmp(name + len - 6, ".scale") != 0)
            continue;
        const rt_tensor *a = w->tensors[i], *b = rt_weights_get(wj, name);
        CHECK(b != NULL);
        double worst = 0;
        for (int64_t k = 0; b && k < rt_tensor_numel(a); k++) {
            double want = ((float *)a->data)[k], got = ((float *)b->data)[k];
            worst = fmax(worst, fabs(got - want) / fabs(want));
        }
        if (worst > 1e-4)
            fprintf(stderr, "%s: JIT and interpreter scales differ by %.3g relative\n", name, worst);
        CHECK(worst <= 1e-4);
        compared++;
    }
    /* Two scales (input, weight) for each of 4 linears in 2 layers and the
     * LM head. */
    CHECK_EQ_INT(compared, 18);
    rt_weights_free(w);
    rt_weights_free(wj);
    rt_weights_free(in);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* A non-positive alpha is rejected before anything changes. */
static void test_fold_rejects_bad_alpha(void)
{
    FILE *sink = tmpfile();
    ir_diag *d = ir_diag_new(sink);
    ir_graph *g = compile_tiny_gpt2(d);
    if (!g)
        return;
    CHECK_EQ_INT(pass_run_text(g, "insert-quadapter", d), 0);
    rt_weights *w = random_weights(g);
    ((float *)rt_weights_get(w, "h.1.ln_2.quadapter.alpha")->data)[3] = 0.0f;
    float gamma0 = ((float *)rt_weights_get(w, "h.0.ln_1.weight")->data)[0];
    int nvalues = g->nvalues;
    CHECK_EQ_INT(pass_fold_quadapter(g, w, d), -1);
    CHECK_EQ_INT(g->nvalues, nvalues);
    CHECK_CLOSE(((float *)rt_weights_get(w, "h.0.ln_1.weight")->data)[0], gamma0, 0, 0);
    char log[1024] = {0};
    rewind(sink);
    log[fread(log, 1, sizeof log - 1, sink)] = '\0';
    CHECK(strstr(log, "h.1.ln_2.quadapter.alpha[3] is 0; alpha must be positive and finite") != NULL);
    rt_weights_free(w);
    ir_graph_free(g);
    ir_diag_free(d);
    fclose(sink);
}

int main(void)
{
    test_fold_preserves_float_logits();
    test_fold_preserves_quantized_logits();
    test_smoothquant_folds();
    test_calibrate_with_jit();
    test_fold_rejects_bad_alpha();
    return check_finish();
}
