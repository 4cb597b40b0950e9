/* The four quantization flows of `quadc quantize`, the metadata of their
 * output and its loader. See runtime/quantize_run.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int qz_check_float_params(const ir_graph *g, rt_weights *w, const char *path, ir_diag *d)
{
    for (int id = 0; id < g->nvalues; id++) {
        const ir_value *v = g->values[id];
        if (v->op != IR_OP_PARAM)
            continue;
        rt_tensor *t = rt_weights_get(w, v->name);
        if (!t) {
            ir_diag_file_error(d, path, "missing tensor '%s' of the model; check that the weights belong to it",
                               v->name);
            return -1;
        }
        bool same = t->rank == v->type.rank;
        for (int i = 0; same && i < t->rank; i++)
            same = t->dims[i] == v->type.dims[i];
        if (!same) {
            char want[128];
            ir_diag_file_error(d, path, "tensor '%s' has rank %d and %lld elements, but the model expects %s",
                               v->name, t->rank, (long long)rt_tensor_numel(t),
                               ir_type_str(&v->type, want, sizeof want));
            return -1;
        }
        if (t->dtype != IR_F32) {
            rt_tensor *f = rt_tensor_to_f32(t);
            if (!f || rt_weights_set(w, v->name, f) != 0) {
                rt_tensor_free(f);
                ir_diag_file_error(d, path, "tensor '%s' of dtype %s cannot be converted to f32", v->name,
                                   ir_dtype_name(t->dtype));
                return -1;
            }
        }
    }
    for (int i = 0; i < w->count; i++) {
        int id = ir_find(g, w->names[i]);
        if (id < 0 || g->values[id]->op != IR_OP_PARAM) {
            ir_diag_file_error(d, path, "tensor '%s' matches no param of the model", w->names[i]);
            return -1;
        }
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

/* Inserts the quantizers of method c->method into g: the Quadapter sites
 * first when `alphas` is set, then the fake-quant ops. With print_ir_dir,
 * writes the graph before and after each pass there. */
static int quantize_graph(const rt_quantize_config *c, ir_graph *g, bool alphas, const char *print_ir_dir, ir_diag *d)
{
    char text[512];
    snprintf(text, sizeof text, "%sinsert-fakequant{bits=%s sites=%s}", alphas ? "insert-quadapter{sites=ln}," : "",
             c->bits, c->sites ? c->sites : RT_QUANTIZE_DEFAULT_SITES);
    if (!print_ir_dir)
        return pass_run_text(g, text, d);

    pass_pipeline pipeline;
    char err[256];
    if (pass_pipeline_parse(text, &pipeline, err, sizeof err) != 0) {
        ir_diag_file_error(d, NULL, "invalid pass pipeline '%s': %s", text, err);
        return -1;
    }
    pass_dump_options dump = {.print_dir = print_ir_dir};
    pass_manager *pm = pass_manager_new(d);
    int rc = pm && pass_manager_add_standard_instruments(pm, &dump) == 0 ? pass_manager_run(pm, &pipeline, g) : -1;
    pass_manager_free(pm);
    pass_pipeline_free(&pipeline);
    return rc;
}

/* Compiles the model for B = batch and inserts the quantizers. */
static ir_graph *build_quantized(const rt_quantize_config *c, int batch, bool alphas, ir_diag *d)
{
    ir_graph *g = rt_compile_model_bt(c->model_path, c->defines, c->ndefines, batch, c->seq, d);
    if (g && (qz_keep_output(g, "loss", d) != 0 || quantize_graph(c, g, alphas, NULL, d) != 0)) {
        ir_graph_free(g);
        g = NULL;
    }
    return g;
}

/* The maximum number of tokens in a loss evaluation or calibration batch.
 * It bounds the logits of a batch to 4 * QZ_EVAL_TOKENS * V bytes (206 MB
 * for GPT-2's V = 50257). */
#define QZ_EVAL_TOKENS 1024

/* Finds the target that the loss ignores, which pads a partial batch.
 * Returns false when "loss" is no cross_entropy, and then losses run one
 * sequence per batch. */
static bool find_pad_target(const ir_graph *g, int32_t *pad_target)
{
    int loss = qz_find_output(g, "loss");
    if (loss < 0)
        return false;
    const ir_value *v = g->values[g->outputs[loss]];
    if (v->op != IR_OP_CROSS_ENTROPY)
        return false;
    *pad_target = (int32_t)ir_attr_int(v, "ignore_index");
    return true;
}

/* Returns the largest divisor of n that is at most max, so that
 * calibration batches need no padding, which would add activations. */
static int largest_divisor(int n, int max)
{
    for (int b = max < n ? max : n; b > 1; b--)
        if (n % b == 0)
            return b;
    return 1;
}

/* Builds the batched graphs of f from the model source: each is the model
 * compiled for its B with the quantizers that the B = 1 graph q has at that
 * point of the flow. */
static int build_flow_graphs(qz_flow *f, int eval_batch, int calib_batch, ir_diag *d)
{
    const rt_quantize_config *c = f->config;
    bool alphas = c->method == RT_QUANTIZE_QUADAPTER || c->method == RT_QUANTIZE_SMOOTHQUANT;
    f->fp_eval = rt_compile_model_bt(c->model_path, c->defines, c->ndefines, eval_batch, c->seq, d);
    if (!f->fp_eval || qz_keep_output(f->fp_eval, "loss", d) != 0)
        return -1;
    f->fp_block_outputs = f->fp_eval->noutputs;
    for (int b = 0; c->method == RT_QUANTIZE_QUADAPTER && b < f->report->nblocks; b++) {
        int input, output;
        qz_block_values(f->fp_eval, b, &input, &output);
        if (ir_add_output(f->fp_eval, input) != 0 || ir_add_output(f->fp_eval, output) != 0)
            return -1;
    }
    f->out_eval = build_quantized(c, eval_batch, false, d);
    f->q_eval = c->method == RT_QUANTIZE_QUADAPTER ? build_quantized(c, eval_batch, true, d) : f->out_eval;
    if (!f->out_eval || !f->q_eval)
        return -1;
    if (calib_batch == eval_batch) {
        f->q_calib = c->method == RT_QUANTIZE_QUADAPTER ? f->q_eval : f->out_eval;
    } else {
        f->q_calib = build_quantized(c, calib_batch, c->method == RT_QUANTIZE_QUADAPTER, d);
        if (!f->q_calib)
            return -1;
    }
    if (c->method == RT_QUANTIZE_SMOOTHQUANT) {
        f->smooth_calib = build_quantized(c, calib_batch, alphas, d);
        if (!f->smooth_calib)
            return -1;
    }
    return 0;
}

static void free_flow(qz_flow *f)
{
    if (f->q_calib != f->q_eval && f->q_calib != f->out_eval)
        ir_graph_free(f->q_calib);
    if (f->q_eval != f->out_eval)
        ir_graph_free(f->q_eval);
    ir_graph_free(f->out_eval);
    ir_graph_free(f->fp_eval);
    ir_graph_free(f->smooth_calib);
    qz_batches_free(&f->calib);
    qz_batches_free(&f->eval);
    qz_batches_free(&f->heldout);
    rt_exec_cache_free(f->cache);
}

/* Builds the graphs and input sets of the run and runs it. */
static int prepare_and_run(qz_flow *f, const ir_graph *fp, const int32_t *const *seqs, ir_diag *d)
{
    const rt_quantize_config *c = f->config;
    int32_t pad_target = 0;
    int eval_batch = QZ_EVAL_TOKENS / c->seq;
    if (eval_batch > f->nseqs)
        eval_batch = f->nseqs;
    if (eval_batch < 1 || !find_pad_target(fp, &pad_target))
        eval_batch = 1;
    int calib_batch = largest_divisor(f->nseqs, eval_batch);
    f->report->eval_batch = eval_batch;
    f->report->calib_batch = calib_batch;

    int rc = build_flow_graphs(f, eval_batch, calib_batch, d);
    if (rc == 0)
        rc = qz_make_batches(&f->calib, seqs, f->nseqs, calib_batch, c->seq, pad_target);
    if (rc == 0)
        rc = qz_make_batches(&f->eval, seqs, f->nseqs, eval_batch, c->seq, pad_target);
    if (rc == 0 && c->nheldout > 0)
        rc = qz_make_batches(&f->heldout, c->heldout, c->nheldout, eval_batch, c->seq, pad_target);
    if (rc == 0)
        rc = qz_run_flow(f, d);
    rt_exec_cache_stats stats = rt_exec_cache_get_stats(f->cache);
    f->report->compiles = stats.compiles;
    f->report->seconds_compile = stats.compile_seconds;
    return rc;
}

int rt_quantize_run(const rt_quantize_config *c, rt_weights *weights, const int32_t *const *seqs, int nseqs,
                    rt_quantized_model *out, rt_quantize_report *report, ir_diag *d)
{
    memset(out, 0, sizeof *out);
    memset(report, 0, sizeof *report);
    ir_graph *fp = rt_compile_model_bt(c->model_path, c->defines, c->ndefines, 1, c->seq, d);
    ir_graph *q = fp ? ir_graph_clone(fp) : NULL;
    qz_batches singles = {0};
    bool alphas = c->method == RT_QUANTIZE_QUADAPTER || c->method == RT_QUANTIZE_SMOOTHQUANT;
    qz_flow f = {.config = c, .weights = weights, .q = q, .nseqs = nseqs, .report = report};
    f.cache = rt_exec_cache_new(c->executor, c->threads);
    int rc = q && f.cache && nseqs > 0 ? 0 : -1;
    if (rc == 0)
        rc = qz_check_float_params(fp, weights, c->weights_path, d);
    if (rc == 0)
        rc = quantize_graph(c, q, alphas, c->print_ir_dir, d);
    if (rc == 0)
        rc = add_new_params(q, weights, d);
    if (rc == 0)
        rc = qz_make_batches(&singles, seqs, nseqs, 1, c->seq, 0);
    f.singles = singles.sets;
    if (rc == 0) {
        report->nblocks = qz_count_blocks(fp);
        report->block_loss_before = calloc((size_t)report->nblocks + 1, sizeof(double));
        report->block_loss_after = calloc((size_t)report->nblocks + 1, sizeof(double));
        rc = report->block_loss_before && report->block_loss_after ? 0 : -1;
    }
    if (rc == 0)
        rc = prepare_and_run(&f, fp, seqs, d);
    free_flow(&f);
    if (rc == 0) {
        out->graph = q;
        out->weights = take_params(q, weights);
        q = NULL;
        rc = out->weights ? 0 : -1;
    }
    qz_batches_free(&singles);
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
    qz_batches inputs;
    rt_exec_cache *cache = rt_exec_cache_new(executor, threads);
    int rc = cache ? qz_make_batches(&inputs, seqs, nseqs, 1, seq, 0) : -1;
    if (rc == 0) {
        rc = qz_mean_loss(g, "loss", weights, inputs.sets, inputs.rows, inputs.count, cache, loss, d);
        qz_batches_free(&inputs);
    }
    rt_exec_cache_free(cache);
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
        rc = rt_weights_set_meta(m->weights, META_PREFIX "sites", c->sites ? c->sites : RT_QUANTIZE_DEFAULT_SITES);
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
        *nout = 0;
    }
    return rc;
}

int rt_quantize_check_sites(const char *sites, char *err, int errcap)
{
    if (!sites[0]) {
        snprintf(err, (size_t)errcap, "the site list is empty; give kinds such as linear;lm_head;attention");
        return -1;
    }
    for (const char *c = sites; *c; c++) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                  strchr("_.;%*-", *c) != NULL;
        if (!ok) {
            snprintf(err, (size_t)errcap, "character '%c' cannot appear in a site list; separate kinds such as "
                     "linear;lm_head;attention with ';'", *c);
            return -1;
        }
    }
    return 0;
}

/* Rejects a quantizer param that no quantizer can use: a scale that is
 * not positive and finite, or a zero point that is not finite or beyond
 * any integer grid (|z| > 2^24). Such a value would give garbage results
 * (the JIT does not check scales when it runs) instead of an error. */
static int check_quantizer_params(const rt_weights *w, const char *path, ir_diag *d)
{
    for (int i = 0; i < w->count; i++) {
        const char *name = w->names[i];
        if (!qz_is_quantizer_param(name))
            continue;
        bool is_scale = strcmp(name + strlen(name) - 6, ".scale") == 0;
        rt_tensor *f = rt_tensor_to_f32(w->tensors[i]);
        if (!f) {
            ir_diag_file_error(d, path, "tensor '%s' is not a float tensor or memory ran out; a quantizer %s must "
                               "be float", name, is_scale ? "scale" : "zero point");
            return -1;
        }
        const float *x = f->data;
        for (int64_t k = 0; k < rt_tensor_numel(f); k++) {
            bool ok = is_scale ? isfinite(x[k]) && x[k] > 0.0f : isfinite(x[k]) && fabsf(x[k]) <= 16777216.0f;
            if (!ok) {
                ir_diag_file_error(d, path, "tensor '%s' has %s %g at element %lld; %s", name,
                                   is_scale ? "scale" : "zero point", (double)x[k], (long long)k,
                                   is_scale ? "scales must be positive and finite; quantize the model again"
                                            : "zero points must be finite; quantize the model again");
                rt_tensor_free(f);
                return -1;
            }
        }
        rt_tensor_free(f);
    }
    return 0;
}

int rt_quantize_fakequant_pass(const rt_weights *w, const char *path, char *buf, size_t cap, ir_diag *d)
{
    const char *bits = rt_weights_get_meta(w, META_PREFIX "bits");
    if (!bits) {
        ir_diag_file_error(d, path, "not a quantized model: the metadata has no '" META_PREFIX
                                    "bits'; write one with quadc quantize");
        return -1;
    }
    int weight_bits, act_bits;
    char err[160];
    if (rt_quantize_parse_bits(bits, &weight_bits, &act_bits, err, sizeof err) != 0) {
        ir_diag_file_error(d, path, "invalid metadata " META_PREFIX "bits = '%s': %s", bits, err);
        return -1;
    }
    const char *sites = rt_weights_get_meta(w, META_PREFIX "sites");
    if (!sites)
        sites = RT_QUANTIZE_DEFAULT_SITES;
    if (rt_quantize_check_sites(sites, err, sizeof err) != 0) {
        ir_diag_file_error(d, path, "invalid metadata " META_PREFIX "sites = '%s': %s", sites, err);
        return -1;
    }
    int n = snprintf(buf, cap, "insert-fakequant{bits=w%da%d sites=%s}", weight_bits, act_bits, sites);
    if (n < 0 || (size_t)n >= cap) {
        ir_diag_file_error(d, path, "metadata " META_PREFIX "sites is too long (%zu characters)", strlen(sites));
        return -1;
    }
    return check_quantizer_params(w, path, d);
}

int rt_quantized_model_load(const char *model_path, const fe_define *defines, int ndefines, const char *path,
                            int seq, rt_quantized_model *out, ir_diag *d)
{
    memset(out, 0, sizeof *out);
    rt_weights *w = rt_safetensors_read(path, d);
    if (!w)
        return -1;
    fe_define *all = NULL;
    int nall = 0;
    char text[512];
    int rc = rt_quantize_fakequant_pass(w, path, text, sizeof text, d);
    if (rc == 0)
        rc = rt_quantize_weight_hparams(model_path, w, path, defines, ndefines, &all, &nall, d);
    ir_graph *g = rc == 0 ? rt_compile_model_bt(model_path, all, nall, 1, seq, d) : NULL;
    free(all);
    if (rc == 0)
        rc = g && pass_run_text(g, text, d) == 0 ? 0 : -1;
    for (int id = 0; rc == 0 && id < g->nvalues; id++) {
        const ir_value *v = g->values[id];
        if (v->op != IR_OP_PARAM)
            continue;
        rt_tensor *t = rt_weights_get(w, v->name);
        if (!t && qz_is_quantizer_param(v->name)) {
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
