/* The quantization flows of `quadc quantize` on a tiny random GPT-2
 * (examples/gpt2.qd with 2 layers, 32 channels, 2 heads and a 256-token
 * vocabulary whose tokens are the bytes of an English text), run by the
 * interpreter:
 *   - every method runs end to end and its output file loads back with the
 *     same LM loss;
 *   - Quadapter phase 1 lowers every block's output MSE, and the Quadapter
 *     model has a lower quantized LM loss than the PTQ model;
 *   - the Quadapter output is the input model with only alpha changed. The
 *     params that folding does not touch are bit-identical. Alpha is
 *     recovered as folded ln gamma / input ln gamma, and the float logits of
 *     the input weights with that alpha match those of the folded weights
 *     within 1e-5 of the largest logit. Unfolding returns every touched
 *     param within 1e-5 relative.
 *   - the JIT gives the interpreter's losses, scales and folded weights
 *     within float tolerance, every distinct graph is compiled once (the
 *     blocks share their phase 1 graphs), and batched losses with padded
 *     batches equal the mean of per-sequence losses.
 * The layernorm gains have a few channels 20 times larger than the rest,
 * the per-channel outliers that make 8-bit activation quantization lossy
 * and that Quadapter is meant to absorb. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "passes/manager.h"
#include "runtime/interp.h"
#include "runtime/quantize_run.h"
#include "runtime/safetensors.h"

#define SEQ 16
#define NSEQS 8

static const char *text =
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
    "it was the season of Darkness, it was the spring of hope, it was the winter of despair.";

static const fe_define defines[] = {{"n_layer", 2}, {"n_embd", 32}, {"n_head", 2}, {"n_vocab", 256}, {"n_ctx", 64}};
#define NDEFINES 5

static fx_rng rng = {FX_RNG_LCG, 0x9e3779b97f4a7c15ull};

static int32_t tokens[1024];
static const int32_t *seqs[NSEQS];

static void make_sequences(void)
{
    size_t n = strlen(text);
    for (size_t i = 0; i < n; i++)
        tokens[i] = (unsigned char)text[i];
    for (int s = 0; s < NSEQS; s++)
        seqs[s] = tokens + (size_t)s * 29;
}

static rt_quantize_config config_for(rt_quantize_method method)
{
    rt_quantize_config c = rt_quantize_default_config();
    c.model_path = "examples/gpt2.qd";
    c.defines = defines;
    c.ndefines = NDEFINES;
    c.method = method;
    c.seq = SEQ;
    c.phase1_steps = 30;
    c.phase2_steps = 30;
    c.lr = 1e-2f;
    c.executor = rt_executor_interp();
    c.threads = 1;
    return c;
}

/* Runs one method, writes and reloads its output and checks the reloaded
 * model's loss. Returns the output model. */
static rt_quantized_model run_method(rt_quantize_method method, const rt_weights *input, rt_quantize_report *r,
                                     ir_diag *d)
{
    rt_quantize_config c = config_for(method);
    rt_quantized_model m = {0};
    int rc = rt_quantize_run(&c, fx_copy_weights(input), seqs, NSEQS, &m, r, d);
    CHECK_EQ_INT(rc, 0);
    if (rc != 0)
        return m;
    printf("%-11s float %.4f calibrated %.4f final %.4f\n", rt_quantize_method_name(method), r->fp_loss,
           r->calibrated_loss, r->final_loss);
    CHECK(isfinite(r->final_loss));

    char path[] = "/tmp/quadc_quantize_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK_EQ_INT(rt_quantize_set_metadata(&m, &c, d), 0);
    CHECK_EQ_INT(rt_safetensors_write(path, m.weights, d), 0);
    rt_quantized_model loaded;
    CHECK_EQ_INT(rt_quantized_model_load(c.model_path, defines, NDEFINES, path, SEQ, &loaded, d), 0);
    if (loaded.graph) {
        double loss = 0;
        CHECK_EQ_INT(rt_quantize_mean_loss(loaded.graph, loaded.weights, seqs, NSEQS, SEQ, c.executor, 1, &loss, d),
                     0);
        CHECK_CLOSE(loss, r->final_loss, 1e-6, 1e-6);
        rt_quantized_model_free(&loaded);
    }
    unlink(path);
    return m;
}

/* A file whose metadata names quantizers but that lacks one of their params
 * is rejected when loaded. */
static void check_load_rejects_missing_scale(const rt_quantized_model *m, ir_diag *d)
{
    rt_weights *w = rt_weights_new();
    for (int i = 0; i < m->weights->count; i++)
        if (strcmp(m->weights->names[i], "h.0.attn.c_attn.input.scale") != 0) {
            const rt_tensor *t = m->weights->tensors[i];
            rt_tensor *copy = rt_tensor_new(t->dtype, t->rank, t->dims);
            memcpy(copy->data, t->data, rt_tensor_nbytes(t));
            rt_weights_set(w, m->weights->names[i], copy);
        }
    for (int i = 0; i < m->weights->nmeta; i++)
        rt_weights_set_meta(w, m->weights->meta_keys[i], m->weights->meta_values[i]);
    char path[] = "/tmp/quadc_quantize_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK_EQ_INT(rt_safetensors_write(path, w, d), 0);
    rt_quantized_model loaded;
    fprintf(stderr, "expected error follows:\n");
    CHECK_EQ_INT(rt_quantized_model_load("examples/gpt2.qd", NULL, 0, path, SEQ, &loaded, d), -1);
    CHECK(loaded.graph == NULL);
    unlink(path);
    rt_weights_free(w);
}

static bool touched_by_fold(const char *name)
{
    return strstr(name, ".ln_") || strstr(name, ".c_attn.weight") || strstr(name, ".c_fc.weight");
}

static rt_tensor *float_logits(const ir_graph *g, const rt_weights *w, ir_diag *d)
{
    int64_t dims[2] = {1, SEQ};
    rt_tensor *idx = rt_tensor_new(IR_I32, 2, dims), *targets = rt_tensor_new(IR_I32, 2, dims);
    memcpy(idx->data, seqs[0], SEQ * sizeof(int32_t));
    memcpy(targets->data, seqs[0] + 1, SEQ * sizeof(int32_t));
    char *names[2] = {(char *)"idx", (char *)"targets"};
    rt_tensor *tensors[2] = {idx, targets};
    rt_weights in = rt_weights_borrow(names, tensors, 2);
    rt_tensor *outputs[2] = {0};
    CHECK_EQ_INT(g->noutputs, 2);
    CHECK_EQ_INT(rt_interp_run(g, w, &in, outputs, d), 0);
    rt_tensor_free(idx);
    rt_tensor_free(targets);
    rt_tensor_free(outputs[1]);
    return outputs[0];
}

/* Checks that the Quadapter output differs from the input only by alpha. */
static void check_only_alpha_changed(const ir_graph *fp, const rt_weights *input, const rt_quantized_model *m,
                                     ir_diag *d)
{
    ir_graph *qa = ir_graph_clone(fp);
    pass_pipeline pipeline;
    char err[128];
    CHECK_EQ_INT(pass_pipeline_parse("insert-quadapter{sites=ln}", &pipeline, err, sizeof err), 0);
    pass_manager *pm = pass_manager_new(d);
    CHECK_EQ_INT(pass_manager_run(pm, &pipeline, qa), 0);
    pass_manager_free(pm);
    pass_pipeline_free(&pipeline);

    /* Params that the fold leaves alone are bit-identical. */
    rt_weights *unfolded = fx_copy_weights(input);
    int identical = 0;
    for (int i = 0; i < input->count; i++) {
        rt_tensor *out = rt_weights_get(m->weights, input->names[i]);
        CHECK(out != NULL);
        if (!out || touched_by_fold(input->names[i]))
            continue;
        CHECK(memcmp(out->data, input->tensors[i]->data, rt_tensor_nbytes(out)) == 0);
        identical++;
    }
    CHECK(identical >= 8);

    /* alpha = folded gamma / input gamma, for both layernorms of each block. */
    int changed = 0;
    for (int b = 0; b < 2; b++)
        for (int k = 1; k <= 2; k++) {
            char gamma[64], alpha[64];
            snprintf(gamma, sizeof gamma, "h.%d.ln_%d.weight", b, k);
            snprintf(alpha, sizeof alpha, "h.%d.ln_%d.quadapter.alpha", b, k);
            const float *g0 = rt_weights_get(input, gamma)->data;
            const float *g1 = rt_weights_get(m->weights, gamma)->data;
            rt_tensor *a = rt_tensor_new(IR_F32, 1, (int64_t[]){32});
            for (int c = 0; c < 32; c++) {
                ((float *)a->data)[c] = g1[c] / g0[c];
                changed += fabsf(((float *)a->data)[c] - 1.0f) > 1e-3f;
            }
            rt_weights_set(unfolded, alpha, a);
        }
    printf("quadapter: %d of 128 alphas moved away from 1\n", changed);
    CHECK(changed > 0);

    /* The float model with the input weights and alpha gives the logits of
     * the folded weights. */
    rt_tensor *want = float_logits(qa, unfolded, d);
    rt_tensor *got = float_logits(fp, m->weights, d);
    double max_diff = 0, max_logit = 0;
    for (int64_t i = 0; want && got && i < rt_tensor_numel(want); i++) {
        float x = ((float *)want->data)[i], y = ((float *)got->data)[i];
        max_diff = fmax(max_diff, fabs((double)x - (double)y));
        max_logit = fmax(max_logit, fabs((double)x));
    }
    printf("folded vs unfolded float logits: max |diff| / max |logit| = %.3g\n", max_diff / max_logit);
    CHECK(max_diff <= 1e-5 * max_logit);
    rt_tensor_free(want);
    rt_tensor_free(got);

    /* Unfolding: folded ln bias / alpha and folded weight rows * alpha give
     * back the input within 1e-5 relative. */
    for (int b = 0; b < 2; b++)
        for (int k = 1; k <= 2; k++) {
            char name[64], alpha_name[64];
            snprintf(alpha_name, sizeof alpha_name, "h.%d.ln_%d.quadapter.alpha", b, k);
            const float *alpha = rt_weights_get(unfolded, alpha_name)->data;
            snprintf(name, sizeof name, "h.%d.ln_%d.bias", b, k);
            const float *b0 = rt_weights_get(input, name)->data, *b1 = rt_weights_get(m->weights, name)->data;
            for (int c = 0; c < 32; c++)
                CHECK_CLOSE(b1[c] / alpha[c], b0[c], 1e-7, 1e-5);
            snprintf(name, sizeof name, k == 1 ? "h.%d.attn.c_attn.weight" : "h.%d.mlp.c_fc.weight", b);
            const rt_tensor *w0 = rt_weights_get(input, name), *w1 = rt_weights_get(m->weights, name);
            int64_t cols = w0->dims[1];
            int bad = 0;
            for (int64_t i = 0; i < rt_tensor_numel(w0); i++) {
                double x = ((float *)w1->data)[i] * (double)alpha[i / cols], y = ((float *)w0->data)[i];
                bad += fabs(x - y) > 1e-7 + 1e-5 * fabs(y);
            }
            CHECK_EQ_INT(bad, 0);
        }
    rt_weights_free(unfolded);
    ir_graph_free(qa);
}

/* Returns the largest |a - b| over the elements of every tensor of a,
 * relative to the largest |b| of that tensor. */
static double max_relative_difference(const rt_weights *a, const rt_weights *b)
{
    double worst = 0;
    for (int i = 0; i < a->count; i++) {
        const rt_tensor *x = a->tensors[i], *y = rt_weights_get(b, a->names[i]);
        CHECK(y != NULL);
        if (!y || rt_tensor_numel(x) != rt_tensor_numel(y))
            return INFINITY;
        const float *p = x->data, *q = y->data;
        double diff = 0, scale = 1e-12;
        for (int64_t k = 0; k < rt_tensor_numel(x); k++) {
            diff = fmax(diff, fabs((double)p[k] - q[k]));
            scale = fmax(scale, fabs((double)q[k]));
        }
        worst = fmax(worst, diff / scale);
    }
    return worst;
}

/* Runs a method with the interpreter and with the JIT on the same input
 * and compares what they report and write. Three held-out sequences in
 * batches of seven leave four padded rows, which the loss must ignore. */
static void check_jit_matches_interp(rt_quantize_method method, const rt_weights *input, int expected_compiles,
                                     ir_diag *d)
{
    rt_quantize_report r[2];
    rt_quantized_model m[2];
    const rt_executor *executors[2] = {rt_executor_interp(), rt_executor_jit()};
    for (int e = 0; e < 2; e++) {
        rt_quantize_config c = config_for(method);
        c.executor = executors[e];
        c.phase1_steps = 5;
        c.phase2_steps = 5;
        c.heldout = seqs + 4;
        c.nheldout = 3;
        CHECK_EQ_INT(rt_quantize_run(&c, fx_copy_weights(input), seqs, NSEQS - 1, &m[e], &r[e], d), 0);
    }
    printf("%s interp / jit: final %.6f / %.6f, held-out %.6f / %.6f, %d graphs compiled\n",
           rt_quantize_method_name(method), r[0].final_loss, r[1].final_loss, r[0].final_heldout_loss,
           r[1].final_heldout_loss, r[1].compiles);
    CHECK_EQ_INT(r[1].eval_batch, NSEQS - 1);
    CHECK_EQ_INT(r[1].compiles, expected_compiles);
    CHECK_CLOSE(r[1].fp_loss, r[0].fp_loss, 0, 1e-5);
    CHECK_CLOSE(r[1].calibrated_loss, r[0].calibrated_loss, 0, 1e-5);
    CHECK_CLOSE(r[1].train_loss_before, r[0].train_loss_before, 0, 1e-5);
    /* After training, alphas a few ulps apart can move a value across a
     * rounding boundary of its quantizer, so the losses may differ by more
     * than float rounding (measured: 1.5e-4 relative at most). */
    CHECK_CLOSE(r[1].train_loss_after, r[0].train_loss_after, 0, 1e-3);
    CHECK_CLOSE(r[1].final_loss, r[0].final_loss, 0, 1e-3);
    CHECK_CLOSE(r[1].fp_heldout_loss, r[0].fp_heldout_loss, 0, 1e-5);
    CHECK_CLOSE(r[1].final_heldout_loss, r[0].final_heldout_loss, 0, 1e-3);
    for (int b = 0; method == RT_QUANTIZE_QUADAPTER && b < r[0].nblocks; b++) {
        CHECK_CLOSE(r[1].block_loss_before[b], r[0].block_loss_before[b], 0, 1e-4);
        CHECK_CLOSE(r[1].block_loss_after[b], r[0].block_loss_after[b], 0, 1e-3);
    }
    if (m[0].weights && m[1].weights) {
        double diff = max_relative_difference(m[1].weights, m[0].weights);
        printf("%s interp / jit: largest relative difference of a written tensor %.3g\n",
               rt_quantize_method_name(method), diff);
        CHECK(diff < 1e-3);
    }

    /* The held-out losses came from one padded batch, so they must equal
     * the mean over the sequences run one at a time. */
    double heldout = 0;
    if (m[0].graph) {
        CHECK_EQ_INT(rt_quantize_mean_loss(m[0].graph, m[0].weights, seqs + 4, 3, SEQ, rt_executor_interp(), 1,
                                           &heldout, d),
                     0);
        CHECK_CLOSE(heldout, r[0].final_heldout_loss, 1e-6, 1e-6);
    }
    for (int e = 0; e < 2; e++) {
        rt_quantized_model_free(&m[e]);
        rt_quantize_report_free(&r[e]);
    }
}

int main(void)
{
    ir_diag *d = ir_diag_new(stderr);
    make_sequences();
    ir_graph *fp = fx_compile_gpt2(defines, NDEFINES, 1, SEQ, d);
    CHECK(fp != NULL);
    if (!fp)
        return check_finish();
    rt_weights *input = fx_outlier_gpt2_weights(&rng, fp);

    rt_quantize_report ptq_report, report;
    rt_quantized_model ptq = run_method(RT_QUANTIZE_PTQ, input, &ptq_report, d);
    if (ptq.weights) {
        CHECK_EQ_INT(rt_quantize_set_metadata(&ptq, &(rt_quantize_config){.bits = "w8a8"}, d), 0);
        check_load_rejects_missing_scale(&ptq, d);
    }
    if (ptq.weights)
        for (int i = 0; i < input->count; i++)
            CHECK(memcmp(rt_weights_get(ptq.weights, input->names[i])->data, input->tensors[i]->data,
                         rt_tensor_nbytes(input->tensors[i])) == 0);

    rt_quantized_model sq = run_method(RT_QUANTIZE_SMOOTHQUANT, input, &report, d);
    rt_quantized_model_free(&sq);
    rt_quantize_report_free(&report);

    rt_quantized_model qat = run_method(RT_QUANTIZE_QAT, input, &report, d);
    CHECK(report.train_loss_after < report.train_loss_before);
    rt_quantized_model_free(&qat);
    rt_quantize_report_free(&report);

    rt_quantized_model qa = run_method(RT_QUANTIZE_QUADAPTER, input, &report, d);
    CHECK_EQ_INT(report.nblocks, 2);
    for (int b = 0; report.block_loss_before && b < report.nblocks; b++) {
        printf("phase 1 block %d: MSE %.6g -> %.6g\n", b, report.block_loss_before[b], report.block_loss_after[b]);
        CHECK(report.block_loss_after[b] < 0.95 * report.block_loss_before[b]);
    }
    printf("phase 2: LM loss %.6f -> %.6f, PTQ %.6f\n", report.train_loss_before, report.train_loss_after,
           ptq_report.final_loss);
    CHECK(report.train_loss_after < report.train_loss_before);
    CHECK(report.final_loss < ptq_report.final_loss);
    if (qa.weights)
        check_only_alpha_changed(fp, input, &qa, d);

    rt_quantized_model_free(&qa);
    rt_quantize_report_free(&report);

    /* Phase 2 with trained activation scales keeps them positive. */
    rt_quantize_config c = config_for(RT_QUANTIZE_QUADAPTER);
    c.train_ranges = true;
    c.phase1_steps = 0;
    CHECK_EQ_INT(rt_quantize_run(&c, fx_copy_weights(input), seqs, NSEQS, &qa, &report, d), 0);
    printf("phase 2 with ranges: LM loss %.6f -> %.6f\n", report.train_loss_before, report.train_loss_after);
    CHECK(report.train_loss_after < report.train_loss_before);
    int scales = 0;
    for (int i = 0; qa.weights && i < qa.weights->count; i++)
        if (strstr(qa.weights->names[i], ".input.scale")) {
            CHECK(*(const float *)qa.weights->tensors[i]->data > 0);
            scales++;
        }
    CHECK_EQ_INT(scales, 9);
    rt_quantized_model_free(&qa);
    rt_quantize_report_free(&report);
    rt_quantized_model_free(&ptq);
    rt_quantize_report_free(&ptq_report);

    /* PTQ compiles the float and the quantized loss graph. Quadapter also
     * compiles one phase 1 forward and one gradient graph for both blocks,
     * the phase 2 gradient graph and the graph of the folded output. */
    check_jit_matches_interp(RT_QUANTIZE_PTQ, input, 2, d);
    check_jit_matches_interp(RT_QUANTIZE_QUADAPTER, input, 6, d);
    rt_weights_free(input);
    ir_graph_free(fp);
    ir_diag_free(d);
    return check_finish();
}
