/* The four quantization flows of `quadc quantize`, the metadata of their
 * output and its loader. See runtime/quantize_run.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ir/quant.h"
#include "passes/manager.h"
#include "runtime/model.h"
#include "runtime/optim.h"
#include "runtime/quantize_internal.h"
#include "runtime/safetensors.h"
#include "runtime/train_rng.h"

#define META_PREFIX "quadc.quantize."

static const char *const method_names[] = {"ptq", "smoothquant", "qat", "quadapter"};

int rt_quantize_method_from_name(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, method_names[i]) == 0)
            return i;
    return -1;
}

const char *rt_quantize_method_name(rt_quantize_method m)
{
    return method_names[m];
}

const char *rt_quantize_range_name(pass_calib_method m)
{
    switch (m) {
    case PASS_CALIB_PERCENTILE:
        return "percentile";
    case PASS_CALIB_MSE:
        return "mse";
    case PASS_CALIB_MINMAX:
        break;
    }
    return "minmax";
}

int rt_quantize_parse_bits(const char *text, int *weight_bits, int *act_bits, char *err, int errcap)
{
    char tail;
    if (sscanf(text, "w%da%d%c", weight_bits, act_bits, &tail) != 2) {
        snprintf(err, (size_t)errcap, "expected w<bits>a<bits>, for example w8a8");
        return -1;
    }
    if (*weight_bits < IR_QUANT_MIN_BITS || *weight_bits > IR_QUANT_MAX_BITS || *act_bits < IR_QUANT_MIN_BITS ||
        *act_bits > IR_QUANT_MAX_BITS) {
        snprintf(err, (size_t)errcap, "weight and activation bits must each be %d to %d", IR_QUANT_MIN_BITS,
                 IR_QUANT_MAX_BITS);
        return -1;
    }
    return 0;
}

rt_quantize_config rt_quantize_default_config(void)
{
    rt_quantize_config c = {0};
    c.method = RT_QUANTIZE_PTQ;
    c.bits = "w8a8";
    c.seq = 64;
    c.range = PASS_CALIB_MINMAX;
    c.phase1_steps = 100;
    c.phase2_steps = 100;
    c.lr = 1e-3f;
    c.seed = 1;
    c.migration = 0.5;
    c.executor = rt_executor_jit();
    return c;
}

void rt_quantize_report_free(rt_quantize_report *r)
{
    free(r->block_loss_before);
    free(r->block_loss_after);
    r->block_loss_before = r->block_loss_after = NULL;
}

void rt_quantized_model_free(rt_quantized_model *m)
{
    ir_graph_free(m->graph);
    rt_weights_free(m->weights);
    m->graph = NULL;
    m->weights = NULL;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Compiles the model with B = 1 and T = seq on top of the user's defines. */
static ir_graph *compile_model(const char *path, const fe_define *defines, int ndefines, int seq, ir_diag *d)
{
    fe_define *all = calloc((size_t)ndefines + 2, sizeof *all);
    if (!all)
        return NULL;
    int n = 0;
    for (int i = 0; i < ndefines; i++)
        if (strcmp(defines[i].name, "B") != 0 && strcmp(defines[i].name, "T") != 0)
            all[n++] = defines[i];
    all[n++] = (fe_define){"B", 1};
    all[n++] = (fe_define){"T", seq};
    ir_graph *g = fe_compile_file(path, all, n, d);
    free(all);
    return g;
}

static bool is_quantizer_param(const char *name)
{
    size_t len = strlen(name);
    return (len > 6 && strcmp(name + len - 6, ".scale") == 0) ||
           (len > 11 && strcmp(name + len - 11, ".zero_point") == 0);
}

static bool is_alpha_param(const char *name)
{
    return strstr(name, ".quadapter.alpha") != NULL;
}

/* Checks that every param of the float graph has a tensor of its shape and
 * that every tensor is a param, and widens the tensors to f32. */
static int check_float_weights(const ir_graph *g, rt_weights *w, const char *weights_name, ir_diag *d)
{
    for (int id = 0; id < g->nvalues; id++) {
        const ir_value *v = g->values[id];
        if (v->op != IR_OP_PARAM)
            continue;
        rt_tensor *t = rt_weights_get(w, v->name);
        if (!t) {
            ir_diag_file_error(d, weights_name, "missing tensor '%s' of the model", v->name);
            return -1;
        }
        bool same = t->rank == v->type.rank;
        for (int i = 0; same && i < t->rank; i++)
            same = t->dims[i] == v->type.dims[i];
        if (!same) {
            char want[128];
            ir_type_str(&v->type, want, sizeof want);
            ir_diag_file_error(d, weights_name, "tensor '%s' has rank %d and %lld elements, but the model expects %s",
                               v->name, t->rank, (long long)rt_tensor_numel(t), want);
            return -1;
        }
        if (t->dtype != IR_F32) {
            rt_tensor *f = rt_tensor_to_f32(t);
            if (!f || rt_weights_set(w, v->name, f) != 0) {
                ir_diag_file_error(d, weights_name, "cannot convert tensor '%s' to f32", v->name);
                return -1;
            }
        }
    }
    for (int i = 0; i < w->count; i++)
        if (ir_find(g, w->names[i]) < 0) {
            ir_diag_file_error(d, weights_name, "tensor '%s' matches no param of the model", w->names[i]);
            return -1;
        }
    return 0;
}

/* Adds the params that the quantization passes created (alpha = 1, scale
 * = 1, zero point = 0, from their init attribute). */
static int add_new_params(const ir_graph *g, rt_weights *w, ir_diag *d)
{
    for (int id = 0; id < g->nvalues; id++) {
        const ir_value *v = g->values[id];
        if (v->op != IR_OP_PARAM || rt_weights_get(w, v->name))
            continue;
        rt_tensor *t = rt_tensor_new(IR_F32, v->type.rank, v->type.dims);
        if (!t) {
            ir_diag_file_error(d, NULL, "out of memory for param '%s'", v->name);
            return -1;
        }
        const char *init = ir_attr_str(v, "init");
        float fill = init && strcmp(init, "ones") == 0 ? 1.0f : 0.0f;
        for (int64_t i = 0; i < rt_tensor_numel(t); i++)
            ((float *)t->data)[i] = fill;
        if (rt_weights_set(w, v->name, t) != 0)
            return -1;
    }
    return 0;
}

/* ---- Quadapter phases ---- */

typedef struct step_inputs {
    const rt_weights *sets;
    int nsets;
    rt_rng rng;
} step_inputs;

/* Draws the input set of a step uniformly from the calibration sequences. */
static const rt_weights *draw_inputs(void *ctx, int step)
{
    (void)step;
    step_inputs *s = ctx;
    return &s->sets[rt_rng_below(&s->rng, (uint64_t)s->nsets)];
}

/* Runs the float graph once per sequence and keeps the input and output of
 * every block: acts[(s * nblocks + b) * 2] is block b's input on sequence
 * s, and the next entry its output. Returns NULL after reporting. */
static rt_tensor **float_block_activations(const rt_quantize_config *c, const ir_graph *fp, const rt_weights *w,
                                           int nblocks, const rt_weights *lm, int nseqs, ir_diag *d)
{
    ir_graph *g = ir_graph_clone(fp);
    size_t nacts = (size_t)nseqs * (size_t)nblocks * 2;
    rt_tensor **acts = calloc(nacts, sizeof *acts);
    int first = g ? g->noutputs : 0;
    for (int b = 0; g && b < nblocks; b++) {
        int input, output;
        qz_block_values(g, b, &input, &output);
        ir_add_output(g, input);
        ir_add_output(g, output);
    }
    void *module = g && acts ? c->executor->compile(g, c->threads, d) : NULL;
    rt_tensor **outputs = g ? calloc((size_t)g->noutputs, sizeof *outputs) : NULL;
    int rc = module && outputs ? 0 : -1;
    for (int s = 0; s < nseqs && rc == 0; s++) {
        rc = c->executor->run(module, w, s == 0, &lm[s], outputs, d);
        for (int k = 0; rc == 0 && k < 2 * nblocks; k++) {
            acts[(size_t)s * (size_t)nblocks * 2 + (size_t)k] = outputs[first + k];
            outputs[first + k] = NULL;
        }
        if (outputs)
            qz_free_outputs(outputs, g->noutputs);
    }
    free(outputs);
    if (module)
        c->executor->free(module);
    ir_graph_free(g);
    if (rc != 0 && acts) {
        for (size_t i = 0; i < nacts; i++)
            rt_tensor_free(acts[i]);
        free(acts);
        acts = NULL;
    }
    return acts;
}

static void free_activations(rt_tensor **acts, size_t n)
{
    for (size_t i = 0; acts && i < n; i++)
        rt_tensor_free(acts[i]);
    free(acts);
}

/* Phase 1: for each block on its own, trains that block's alphas to bring
 * the quantized block output close to the FP block output, both computed
 * from the FP block input. */
static int quadapter_phase1(const rt_quantize_config *c, const ir_graph *fp, const ir_graph *q, rt_weights *w,
                            const rt_weights *lm, int nseqs, rt_quantize_report *r, ir_diag *d)
{
    int nblocks = r->nblocks;
    if (nblocks == 0) {
        ir_diag_file_error(d, c->model_path, "Quadapter phase 1 found no GPT-2 block: expected values named "
                                             "h0.ln1 (a layernorm) and h0.out as in examples/gpt2.qd");
        return -1;
    }
    rt_tensor **acts = float_block_activations(c, fp, w, nblocks, lm, nseqs, d);
    rt_weights *sets = calloc((size_t)nseqs, sizeof *sets);
    char *names[2] = {(char *)"block_input", (char *)"block_target"};
    int rc = acts && sets ? 0 : -1;
    for (int b = 0; b < nblocks && rc == 0; b++) {
        for (int s = 0; s < nseqs; s++)
            sets[s] = rt_weights_borrow(names, &acts[((size_t)s * (size_t)nblocks + (size_t)b) * 2], 2);
        ir_graph *g = qz_build_block_graph(q, b, d);
        rc = g ? 0 : -1;
        if (rc == 0)
            rc = qz_mean_loss(g, QZ_BLOCK_LOSS, w, sets, nseqs, c->executor, c->threads, &r->block_loss_before[b], d);
        char wrt[64];
        snprintf(wrt, sizeof wrt, "h.%d.*.quadapter.alpha", b);
        step_inputs draw = {sets, nseqs, {{0}}};
        rt_rng_seed(&draw.rng, c->seed, 100 + (uint64_t)b);
        qz_train_job job = {.config = c,
                            .forward = g,
                            .loss = QZ_BLOCK_LOSS,
                            .wrt = wrt,
                            .train = is_alpha_param,
                            .clamp_alpha = true,
                            .steps = c->phase1_steps,
                            .phase = "phase1",
                            .block = b,
                            .inputs = draw_inputs,
                            .ctx = &draw};
        if (rc == 0 && c->phase1_steps > 0)
            rc = qz_train(&job, w, d);
        if (rc == 0)
            rc = qz_mean_loss(g, QZ_BLOCK_LOSS, w, sets, nseqs, c->executor, c->threads, &r->block_loss_after[b], d);
        ir_graph_free(g);
    }
    free(sets);
    free_activations(acts, (size_t)nseqs * (size_t)nblocks * 2);
    return rc;
}

static bool is_activation_scale(const char *name)
{
    size_t len = strlen(name);
    return len > 12 && strcmp(name + len - 12, ".input.scale") == 0;
}

/* QAT trains every model weight, and the quantizer ranges stay as
 * calibrated unless train_ranges is set. */
static bool is_model_weight(const char *name)
{
    return !is_quantizer_param(name) && !is_alpha_param(name);
}

static bool is_model_weight_or_range(const char *name)
{
    return is_model_weight(name) || is_activation_scale(name);
}

static bool is_alpha_or_range(const char *name)
{
    return is_alpha_param(name) || is_activation_scale(name);
}

/* Phase 2 of Quadapter (all alphas) or QAT (every model weight), on the LM
 * loss of the whole quantized graph. */
static int train_end_to_end(const rt_quantize_config *c, const ir_graph *q, rt_weights *w, const rt_weights *lm,
                            int nseqs, rt_quantize_report *r, ir_diag *d)
{
    bool qat = c->method == RT_QUANTIZE_QAT;
    int rc = qz_mean_loss(q, "loss", w, lm, nseqs, c->executor, c->threads, &r->train_loss_before, d);
    step_inputs draw = {lm, nseqs, {{0}}};
    rt_rng_seed(&draw.rng, c->seed, 1);
    bool (*train)(const char *) = qat ? is_model_weight : is_alpha_param;
    if (c->train_ranges)
        train = qat ? is_model_weight_or_range : is_alpha_or_range;
    const char *wrt = "*.quadapter.alpha";
    if (qat)
        wrt = "all";
    else if (c->train_ranges)
        wrt = "*.quadapter.alpha;*.input.scale";
    qz_train_job job = {.config = c,
                        .forward = q,
                        .loss = "loss",
                        .wrt = wrt,
                        .train = train,
                        .weight_decay = qat ? rt_adamw_default_config().weight_decay : 0.0f,
                        .clamp_alpha = !qat,
                        .clamp_scales = c->train_ranges,
                        .steps = c->phase2_steps,
                        .phase = qat ? "qat" : "phase2",
                        .block = -1,
                        .inputs = draw_inputs,
                        .ctx = &draw};
    if (rc == 0 && c->phase2_steps > 0)
        rc = qz_train(&job, w, d);
    if (rc == 0)
        rc = qz_mean_loss(q, "loss", w, lm, nseqs, c->executor, c->threads, &r->train_loss_after, d);
    return rc;
}

/* ---- the flow ---- */

/* Moves the params of g out of w into a new set in the graph's order. */
static rt_weights *take_params(const ir_graph *g, rt_weights *w)
{
    rt_weights *out = rt_weights_new();
    for (int id = 0; out && id < g->nvalues; id++) {
        const ir_value *v = g->values[id];
        if (v->op != IR_OP_PARAM)
            continue;
        for (int i = 0; i < w->count; i++)
            if (strcmp(w->names[i], v->name) == 0) {
                rt_weights_set(out, v->name, w->tensors[i]);
                w->tensors[i] = rt_tensor_new(IR_F32, 0, NULL);
            }
    }
    return out;
}

static int quantize_graph(const rt_quantize_config *c, ir_graph *q, ir_diag *d)
{
    char text[256];
    bool scales = c->method == RT_QUANTIZE_SMOOTHQUANT || c->method == RT_QUANTIZE_QUADAPTER;
    snprintf(text, sizeof text, "%sinsert-fakequant{bits=%s}", scales ? "insert-quadapter{sites=ln}," : "",
             c->bits);
    if (!c->print_ir_dir)
        return qz_run_pipeline(q, text, d);

    pass_pipeline pipeline;
    char err[256];
    if (pass_pipeline_parse(text, &pipeline, err, sizeof err) != 0) {
        ir_diag_file_error(d, NULL, "invalid pass pipeline '%s': %s", text, err);
        return -1;
    }
    pass_dump_options dump = {.print_dir = c->print_ir_dir};
    pass_manager *pm = pass_manager_new(d);
    int rc = pm && pass_manager_add_standard_instruments(pm, &dump) == 0 ? pass_manager_run(pm, &pipeline, q) : -1;
    pass_manager_free(pm);
    pass_pipeline_free(&pipeline);
    return rc;
}

static int run_flow(const rt_quantize_config *c, const ir_graph *fp, ir_graph *q, rt_weights *w,
                    const rt_weights *lm, int nseqs, rt_quantize_report *r, ir_diag *d)
{
    const rt_weights **batches = calloc((size_t)nseqs, sizeof *batches);
    if (!batches)
        return -1;
    for (int s = 0; s < nseqs; s++)
        batches[s] = &lm[s];
    int rc = qz_mean_loss(fp, "loss", w, lm, nseqs, c->executor, c->threads, &r->fp_loss, d);
    if (rc == 0 && c->nheldout > 0)
        rc = rt_quantize_mean_loss(fp, w, c->heldout, c->nheldout, c->seq, c->executor, c->threads,
                                   &r->fp_heldout_loss, d);

    double start = now_seconds();
    if (rc == 0 && c->method == RT_QUANTIZE_SMOOTHQUANT) {
        rc = pass_smoothquant_scales(q, w, batches, nseqs, c->migration, c->executor, d);
        if (rc == 0)
            rc = pass_fold_quadapter(q, w, d);
    }
    pass_calib_options calib = pass_calib_default_options();
    calib.method = c->range;
    calib.seed = c->seed;
    calib.executor = c->executor;
    calib.threads = c->threads;
    if (rc == 0)
        rc = pass_calibrate(q, w, batches, nseqs, &calib, d);
    r->seconds_calibrate = now_seconds() - start;
    if (rc == 0)
        rc = qz_mean_loss(q, "loss", w, lm, nseqs, c->executor, c->threads, &r->calibrated_loss, d);

    start = now_seconds();
    if (rc == 0 && c->method == RT_QUANTIZE_QUADAPTER)
        rc = quadapter_phase1(c, fp, q, w, lm, nseqs, r, d);
    r->seconds_phase1 = now_seconds() - start;

    start = now_seconds();
    if (rc == 0 && (c->method == RT_QUANTIZE_QUADAPTER || c->method == RT_QUANTIZE_QAT))
        rc = train_end_to_end(c, q, w, lm, nseqs, r, d);
    r->seconds_phase2 = now_seconds() - start;

    /* Folding keeps the calibrated and trained ranges: before the fold the
     * activation quantizer sees alpha * layernorm(x) and the weight
     * quantizer W / alpha, and after it the same values computed from the
     * folded gamma, beta and W, up to float rounding. */
    if (rc == 0 && c->method == RT_QUANTIZE_QUADAPTER)
        rc = pass_fold_quadapter(q, w, d);
    if (rc == 0)
        rc = qz_mean_loss(q, "loss", w, lm, nseqs, c->executor, c->threads, &r->final_loss, d);
    if (rc == 0 && c->nheldout > 0)
        rc = rt_quantize_mean_loss(q, w, c->heldout, c->nheldout, c->seq, c->executor, c->threads,
                                   &r->final_heldout_loss, d);
    free(batches);
    return rc;
}

int rt_quantize_run(const rt_quantize_config *c, rt_weights *weights, const int32_t *const *seqs, int nseqs,
                    rt_quantized_model *out, rt_quantize_report *report, ir_diag *d)
{
    memset(out, 0, sizeof *out);
    memset(report, 0, sizeof *report);
    ir_graph *fp = compile_model(c->model_path, c->defines, c->ndefines, c->seq, d);
    ir_graph *q = fp ? ir_graph_clone(fp) : NULL;
    qz_inputs *inputs = calloc((size_t)nseqs, sizeof *inputs);
    rt_weights *lm = calloc((size_t)nseqs, sizeof *lm);
    int rc = q && inputs && lm && nseqs > 0 ? 0 : -1;
    if (rc == 0)
        rc = check_float_weights(fp, weights, c->weights_path, d);
    if (rc == 0)
        rc = quantize_graph(c, q, d);
    if (rc == 0)
        rc = add_new_params(q, weights, d);
    for (int s = 0; s < nseqs && rc == 0; s++) {
        rc = qz_lm_inputs(&inputs[s], seqs[s], c->seq);
        lm[s] = inputs[s].set;
    }
    if (rc == 0) {
        report->nblocks = qz_count_blocks(fp);
        report->block_loss_before = calloc((size_t)report->nblocks + 1, sizeof(double));
        report->block_loss_after = calloc((size_t)report->nblocks + 1, sizeof(double));
        rc = report->block_loss_before && report->block_loss_after ? 0 : -1;
    }
    if (rc == 0)
        rc = run_flow(c, fp, q, weights, lm, nseqs, report, d);
    if (rc == 0) {
        out->graph = q;
        out->weights = take_params(q, weights);
        q = NULL;
        rc = out->weights ? 0 : -1;
    }
    for (int s = 0; inputs && s < nseqs; s++)
        qz_inputs_free(&inputs[s]);
    free(inputs);
    free(lm);
    ir_graph_free(fp);
    ir_graph_free(q);
    rt_weights_free(weights);
    if (rc != 0) {
        rt_quantized_model_free(out);
        rt_quantize_report_free(report);
    }
    if (rc == 0 && c->method != RT_QUANTIZE_QUADAPTER)
        rt_quantize_report_free(report);
    return rc;
}

int rt_quantize_mean_loss(const ir_graph *g, const rt_weights *weights, const int32_t *const *seqs, int nseqs,
                          int seq, const rt_executor *executor, int threads, double *loss, ir_diag *d)
{
    qz_inputs *inputs = calloc((size_t)nseqs, sizeof *inputs);
    rt_weights *lm = calloc((size_t)nseqs, sizeof *lm);
    int rc = inputs && lm ? 0 : -1;
    for (int s = 0; s < nseqs && rc == 0; s++) {
        rc = qz_lm_inputs(&inputs[s], seqs[s], seq);
        lm[s] = inputs[s].set;
    }
    if (rc == 0)
        rc = qz_mean_loss(g, "loss", weights, lm, nseqs, executor, threads, loss, d);
    for (int s = 0; inputs && s < nseqs; s++)
        qz_inputs_free(&inputs[s]);
    free(inputs);
    free(lm);
    return rc;
}

/* ---- output metadata and loading ---- */

int rt_quantize_set_metadata(rt_quantized_model *m, const rt_quantize_config *c, ir_diag *d)
{
    char value[64];
    int rc = rt_model_record_hparams(m->weights, m->graph);
    snprintf(value, sizeof value, "%llu", (unsigned long long)c->seed);
    const char *range = rt_quantize_range_name(c->range);
    if (rc == 0)
        rc = rt_weights_set_meta(m->weights, META_PREFIX "method", rt_quantize_method_name(c->method));
    if (rc == 0)
        rc = rt_weights_set_meta(m->weights, META_PREFIX "bits", c->bits);
    if (rc == 0)
        rc = rt_weights_set_meta(m->weights, META_PREFIX "seed", value);
    if (rc == 0)
        rc = rt_weights_set_meta(m->weights, META_PREFIX "range", range);
    if (rc == 0)
        rc = rt_weights_set_meta(m->weights, META_PREFIX "train_ranges", c->train_ranges ? "true" : "false");
    if (rc != 0)
        ir_diag_file_error(d, NULL, "out of memory for the output metadata");
    return rc;
}

int rt_quantize_weight_hparams(const char *model_path, const rt_weights *w, const char *weights_name,
                               const fe_define *defines, int ndefines, fe_define **out, int *nout, ir_diag *d)
{
    char **names = NULL;
    int count = 0;
    if (fe_hparam_names(model_path, &names, &count, d) != 0)
        return -1;
    *out = calloc((size_t)ndefines + (size_t)count + 1, sizeof **out);
    *nout = 0;
    int rc = *out ? 0 : -1;
    for (int i = 0; i < ndefines && rc == 0; i++)
        (*out)[(*nout)++] = defines[i];
    for (int i = 0; i < w->nmeta && rc == 0; i++) {
        const char *key = w->meta_keys[i];
        char *end;
        long long value = strtoll(w->meta_values[i], &end, 10);
        bool is_hparam = false;
        for (int k = 0; k < count; k++)
            is_hparam |= strcmp(names[k], key) == 0;
        if (!is_hparam || *end != '\0' || end == w->meta_values[i] || strcmp(key, "B") == 0 ||
            strcmp(key, "T") == 0)
            continue;
        /* Every -D of this name must agree, not only the first. */
        bool given = false;
        for (int j = 0; j < ndefines && rc == 0; j++) {
            if (strcmp(defines[j].name, key) != 0)
                continue;
            given = true;
            if (defines[j].value != value) {
                ir_diag_file_error(d, weights_name, "hparam %s is %lld in the weights but -D %s=%lld was given", key,
                                   value, key, (long long)defines[j].value);
                rc = -1;
            }
        }
        if (!given && rc == 0)
            (*out)[(*nout)++] = (fe_define){key, value};
    }
    fe_free_hparam_names(names, count);
    if (rc != 0) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

int rt_quantized_model_load(const char *model_path, const fe_define *defines, int ndefines, const char *path,
                            int seq, rt_quantized_model *out, ir_diag *d)
{
    memset(out, 0, sizeof *out);
    rt_weights *w = rt_safetensors_read(path, d);
    if (!w)
        return -1;
    const char *bits = rt_weights_get_meta(w, META_PREFIX "bits");
    fe_define *all = NULL;
    int nall = 0;
    int rc = 0;
    if (!bits) {
        ir_diag_file_error(d, path, "not a quantized model: the metadata has no '" META_PREFIX
                                    "bits'; write one with quadc quantize");
        rc = -1;
    }
    if (rc == 0)
        rc = rt_quantize_weight_hparams(model_path, w, path, defines, ndefines, &all, &nall, d);
    ir_graph *g = rc == 0 ? compile_model(model_path, all, nall, seq, d) : NULL;
    free(all);
    char text[128];
    snprintf(text, sizeof text, "insert-fakequant{bits=%s}", bits ? bits : "");
    if (rc == 0)
        rc = g && qz_run_pipeline(g, text, d) == 0 ? 0 : -1;
    for (int id = 0; rc == 0 && id < g->nvalues; id++) {
        const ir_value *v = g->values[id];
        if (v->op != IR_OP_PARAM)
            continue;
        rt_tensor *t = rt_weights_get(w, v->name);
        if (!t && is_quantizer_param(v->name)) {
            ir_diag_file_error(d, path, "missing quantizer param '%s', so the file is no complete "
                                        "quantized model of %s; write it with quadc quantize", v->name, model_path);
            rc = -1;
        } else if (!t || t->dtype != IR_F32 || rt_tensor_numel(t) != ir_type_numel(&v->type)) {
            ir_diag_file_error(d, path, "missing or mis-shaped f32 tensor '%s'", v->name);
            rc = -1;
        }
    }
    if (rc != 0) {
        ir_graph_free(g);
        rt_weights_free(w);
        return -1;
    }
    out->graph = g;
    out->weights = w;
    return 0;
}
