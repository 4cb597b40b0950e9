/* The steps of the four quantization flows on the graphs that
 * rt_quantize_run builds (see qz_flow): the float and calibrated losses,
 * SmoothQuant scales, calibration, Quadapter phases 1 and 2, QAT and the
 * fold. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/optim.h"
#include "runtime/quantize_internal.h"
#include "runtime/train_rng.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool qz_is_quantizer_param(const char *name)
{
    size_t len = strlen(name);
    return (len > 6 && strcmp(name + len - 6, ".scale") == 0) ||
           (len > 11 && strcmp(name + len - 11, ".zero_point") == 0);
}

bool qz_is_alpha_param(const char *name)
{
    return strstr(name, ".quadapter.alpha") != NULL;
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
    return !qz_is_quantizer_param(name) && !qz_is_alpha_param(name);
}

static bool is_model_weight_or_range(const char *name)
{
    return is_model_weight(name) || is_activation_scale(name);
}

static bool is_alpha_or_range(const char *name)
{
    return qz_is_alpha_param(name) || is_activation_scale(name);
}

static int mean_loss(qz_flow *f, const ir_graph *g, const qz_batches *b, double *loss, ir_diag *d)
{
    return qz_mean_loss(g, "loss", f->weights, b->sets, b->rows, b->count, f->cache, loss, d);
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

/* Copies row `row` of x [B, ...] into a new tensor [1, ...]. */
static rt_tensor *copy_row(const rt_tensor *x, int row)
{
    int64_t dims[RT_MAX_RANK];
    memcpy(dims, x->dims, sizeof dims[0] * (size_t)x->rank);
    dims[0] = 1;
    rt_tensor *t = rt_tensor_new(x->dtype, x->rank, dims);
    if (!t)
        return NULL;
    size_t bytes = (size_t)rt_tensor_numel(t) * ir_dtype_size(x->dtype);
    memcpy(t->data, (const char *)x->data + (size_t)row * bytes, bytes);
    return t;
}

/* Runs f->fp_eval over the calibration sequences, which gives the float
 * loss and keeps the input and output of every block:
 * acts[(s * nblocks + b) * 2] is block b's input on sequence s ([1, T, C]),
 * and the next entry its output. Returns NULL after reporting. */
static rt_tensor **float_block_activations(qz_flow *f, int nblocks, ir_diag *d)
{
    const ir_graph *g = f->fp_eval;
    size_t nacts = (size_t)f->nseqs * (size_t)nblocks * 2;
    rt_tensor **acts = calloc(nacts, sizeof *acts);
    void *module = acts ? rt_exec_cache_get(f->cache, g, d) : NULL;
    const rt_executor *ex = rt_exec_cache_executor(f->cache);
    rt_tensor *outputs = calloc((size_t)g->noutputs, sizeof *outputs);
    int first = f->fp_block_outputs;
    int loss_output = qz_find_output(g, "loss");
    int rc = module && outputs && loss_output >= 0 ? 0 : -1;
    double sum = 0;
    for (int i = 0, s = 0; i < f->eval.count && rc == 0; i++) {
        rc = ex->run_views(module, f->weights, i == 0, &f->eval.sets[i], outputs, d);
        if (rc == 0)
            sum += f->eval.rows[i] * (double)*(const float *)outputs[loss_output].data;
        for (int row = 0; row < f->eval.rows[i] && rc == 0; row++, s++)
            for (int k = 0; k < 2 * nblocks && rc == 0; k++) {
                rt_tensor *t = copy_row(&outputs[first + k], row);
                acts[(size_t)s * (size_t)nblocks * 2 + (size_t)k] = t;
                rc = t ? 0 : -1;
            }
    }
    free(outputs);
    f->report->fp_loss = sum / f->nseqs;
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
static int quadapter_phase1(qz_flow *f, rt_tensor **acts, ir_diag *d)
{
    const rt_quantize_config *c = f->config;
    rt_quantize_report *r = f->report;
    int nblocks = r->nblocks, nseqs = f->nseqs;
    rt_weights *sets = calloc((size_t)nseqs, sizeof *sets);
    char *names[2] = {(char *)"block_input", (char *)"block_target"};
    int rc = sets ? 0 : -1;
    for (int b = 0; b < nblocks && rc == 0; b++) {
        for (int s = 0; s < nseqs; s++)
            sets[s] = rt_weights_borrow(names, &acts[((size_t)s * (size_t)nblocks + (size_t)b) * 2], 2);
        ir_graph *g = qz_build_block_graph(f->q, b, d);
        qz_block_weights w;
        rc = g ? qz_block_weights_init(&w, g, f->weights, b, d) : -1;
        if (rc != 0) {
            ir_graph_free(g);
            break;
        }
        rc = qz_mean_loss(g, QZ_BLOCK_LOSS, &w.set, sets, NULL, nseqs, f->cache, &r->block_loss_before[b], d);
        step_inputs draw = {sets, nseqs, {{0}}};
        rt_rng_seed(&draw.rng, c->seed, 100 + (uint64_t)b);
        qz_train_job job = {.config = c,
                            .cache = f->cache,
                            .forward = g,
                            .loss = QZ_BLOCK_LOSS,
                            .wrt = "*.quadapter.alpha",
                            .train = qz_is_alpha_param,
                            .clamp_alpha = true,
                            .steps = c->phase1_steps,
                            .phase = "phase1",
                            .block = b,
                            .inputs = draw_inputs,
                            .ctx = &draw};
        if (rc == 0 && c->phase1_steps > 0)
            rc = qz_train(&job, &w.set, d);
        if (rc == 0)
            rc = qz_mean_loss(g, QZ_BLOCK_LOSS, &w.set, sets, NULL, nseqs, f->cache, &r->block_loss_after[b], d);
        qz_block_weights_free(&w);
        ir_graph_free(g);
    }
    free(sets);
    return rc;
}

/* Phase 2 of Quadapter (all alphas) or QAT (every model weight), on the LM
 * loss of the whole quantized graph, one sequence per step. */
static int train_end_to_end(qz_flow *f, ir_diag *d)
{
    const rt_quantize_config *c = f->config;
    bool qat = c->method == RT_QUANTIZE_QAT;
    step_inputs draw = {f->singles, f->nseqs, {{0}}};
    rt_rng_seed(&draw.rng, c->seed, 1);
    bool (*train)(const char *) = qat ? is_model_weight : qz_is_alpha_param;
    if (c->train_ranges)
        train = qat ? is_model_weight_or_range : is_alpha_or_range;
    const char *wrt = "*.quadapter.alpha";
    if (qat)
        wrt = "all";
    else if (c->train_ranges)
        wrt = "*.quadapter.alpha;*.input.scale";
    qz_train_job job = {.config = c,
                        .cache = f->cache,
                        .forward = f->q,
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
    int rc = c->phase2_steps > 0 ? qz_train(&job, f->weights, d) : 0;
    if (rc == 0)
        rc = mean_loss(f, f->q_eval, &f->eval, &f->report->train_loss_after, d);
    return rc;
}

/* ---- the flow ---- */

/* Sets alpha to the SmoothQuant scales and folds it, or calibrates. */
static int calibrate(qz_flow *f, ir_diag *d)
{
    const rt_quantize_config *c = f->config;
    const rt_weights **batches = calloc((size_t)f->calib.count, sizeof *batches);
    if (!batches)
        return -1;
    for (int i = 0; i < f->calib.count; i++)
        batches[i] = &f->calib.sets[i];
    int rc = 0;
    if (c->method == RT_QUANTIZE_SMOOTHQUANT) {
        rc = pass_smoothquant_scales(f->smooth_calib, f->weights, batches, f->calib.count, c->migration,
                                     c->executor, d);
        if (rc == 0)
            rc = pass_fold_quadapter(f->q, f->weights, d);
    }
    pass_calib_options calib = pass_calib_default_options();
    calib.method = c->range;
    calib.seed = c->seed;
    calib.executor = c->executor;
    calib.threads = c->threads;
    if (rc == 0)
        rc = pass_calibrate(f->q_calib, f->weights, batches, f->calib.count, &calib, d);
    free(batches);
    return rc;
}

int qz_run_flow(qz_flow *f, ir_diag *d)
{
    const rt_quantize_config *c = f->config;
    rt_quantize_report *r = f->report;
    bool quadapter = c->method == RT_QUANTIZE_QUADAPTER;
    bool trains = quadapter || c->method == RT_QUANTIZE_QAT;
    if (quadapter && r->nblocks == 0) {
        ir_diag_file_error(d, c->model_path, "Quadapter phase 1 found no GPT-2 block: expected values named "
                                             "h0.ln1 (a layernorm) and h0.out as in examples/gpt2.qd");
        return -1;
    }

    /* Quadapter takes the float loss from the run that keeps the block
     * activations for phase 1. */
    rt_tensor **acts = NULL;
    int rc = 0;
    if (quadapter) {
        acts = float_block_activations(f, r->nblocks, d);
        rc = acts ? 0 : -1;
    } else {
        rc = mean_loss(f, f->fp_eval, &f->eval, &r->fp_loss, d);
    }
    if (rc == 0 && f->heldout.count > 0)
        rc = mean_loss(f, f->fp_eval, &f->heldout, &r->fp_heldout_loss, d);

    double start = now_seconds();
    if (rc == 0)
        rc = calibrate(f, d);
    r->seconds_calibrate = now_seconds() - start;
    if (rc == 0)
        rc = mean_loss(f, f->q_eval, &f->eval, &r->calibrated_loss, d);

    start = now_seconds();
    if (rc == 0 && quadapter)
        rc = quadapter_phase1(f, acts, d);
    free_activations(acts, (size_t)f->nseqs * (size_t)r->nblocks * 2);
    r->seconds_phase1 = now_seconds() - start;

    start = now_seconds();
    r->train_loss_before = r->calibrated_loss;
    if (rc == 0 && quadapter)
        rc = mean_loss(f, f->q_eval, &f->eval, &r->train_loss_before, d);
    if (rc == 0 && trains)
        rc = train_end_to_end(f, d);
    r->seconds_phase2 = now_seconds() - start;

    /* Folding keeps the calibrated and trained ranges: before the fold the
     * activation quantizer sees alpha * layernorm(x) and the weight
     * quantizer W / alpha, and after it the same values computed from the
     * folded gamma, beta and W, up to float rounding. The output model is
     * evaluated on the graph that the loader builds, without alpha. */
    if (rc == 0 && quadapter)
        rc = pass_fold_quadapter(f->q, f->weights, d);
    r->final_loss = trains ? r->train_loss_after : r->calibrated_loss;
    if (rc == 0 && f->out_eval != f->q_eval)
        rc = mean_loss(f, f->out_eval, &f->eval, &r->final_loss, d);
    if (rc == 0 && f->heldout.count > 0)
        rc = mean_loss(f, f->out_eval, &f->heldout, &r->final_heldout_loss, d);
    return rc;
}
