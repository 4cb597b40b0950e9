/* Range setting for the fake-quant ops (pass_calibrate) and SmoothQuant
 * scales for the Quadapter alphas (pass_smoothquant_scales), both from
 * statistics over calibration batches. passes/quantize.h describes the
 * split between the observer graph and the data. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "passes/quant_graph.h"
#include "passes/quantize.h"
#include "runtime/train_rng.h"

pass_calib_options pass_calib_default_options(void)
{
    return (pass_calib_options){PASS_CALIB_MINMAX, 99.99, 100, (int64_t)1 << 18, 0, NULL, 0};
}

int pass_calib_method_from_name(const char *name)
{
    if (strcmp(name, "minmax") == 0)
        return PASS_CALIB_MINMAX;
    if (strcmp(name, "percentile") == 0)
        return PASS_CALIB_PERCENTILE;
    if (strcmp(name, "mse") == 0)
        return PASS_CALIB_MSE;
    return -1;
}

/* ---- ranges ---- */

void pass_quant_params_from_range(double lo, double hi, bool symmetric, ir_quant_range r, float *scale,
                                  float *zero_point)
{
    lo = fmin(lo, 0.0);
    hi = fmax(hi, 0.0);
    *zero_point = 0.0f;
    if (symmetric) {
        double max_abs = fmax(-lo, hi);
        *scale = max_abs > 0 ? (float)(max_abs / (double)r.qmax) : 1.0f;
        return;
    }
    if (hi - lo <= 0) {
        *scale = 1.0f;
        return;
    }
    *scale = (float)((hi - lo) / (double)(r.qmax - r.qmin));
    double z = (double)r.qmin - nearbyint(lo / (double)*scale);
    *zero_point = (float)fmin(fmax(z, (double)r.qmin), (double)r.qmax);
}

static int compare_floats(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile (q in [0, 1]) of sorted values, interpolating linearly. */
static double quantile(const float *sorted, int64_t n, double q)
{
    double at = q * (double)(n - 1);
    int64_t i = (int64_t)floor(at);
    if (i >= n - 1)
        return sorted[n - 1];
    return sorted[i] + (at - (double)i) * (sorted[i + 1] - sorted[i]);
}

static double quantization_mse(const float *x, int64_t n, double lo, double hi, bool symmetric, ir_quant_range r)
{
    float s, z;
    pass_quant_params_from_range(lo, hi, symmetric, r, &s, &z);
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)x[i] - (double)ir_fake_quant(x[i], s, z, r);
        sum += e * e;
    }
    return sum / (double)n;
}

void pass_calib_range(const float *x, int64_t n, const pass_calib_options *o, bool symmetric, ir_quant_range r,
                      double *lo, double *hi)
{
    *lo = *hi = 0;
    if (n <= 0)
        return;
    double mn = x[0], mx = x[0];
    for (int64_t i = 1; i < n; i++) {
        mn = fmin(mn, x[i]);
        mx = fmax(mx, x[i]);
    }
    *lo = mn;
    *hi = mx;
    if (o->method == PASS_CALIB_PERCENTILE) {
        float *sorted = malloc(sizeof *sorted * (size_t)n);
        if (!sorted)
            return; /* falls back to min-max */
        for (int64_t i = 0; i < n; i++)
            sorted[i] = symmetric ? fabsf(x[i]) : x[i];
        qsort(sorted, (size_t)n, sizeof *sorted, compare_floats);
        double p = o->percentile / 100.0;
        if (symmetric) {
            *hi = quantile(sorted, n, p);
            *lo = -*hi;
        } else {
            *lo = quantile(sorted, n, 1.0 - p);
            *hi = quantile(sorted, n, p);
        }
        free(sorted);
    } else if (o->method == PASS_CALIB_MSE) {
        /* A symmetric quantizer uses max(|lo|, |hi|) on both sides. */
        if (symmetric) {
            mx = fmax(-mn, mx);
            mn = -mx;
        }
        double best = INFINITY, best_lo = mn, best_hi = mx;
        for (int k = 1; k <= o->mse_grid; k++) {
            double ratio = (double)k / o->mse_grid;
            double clo = ratio * fmin(mn, 0.0), chi = ratio * fmax(mx, 0.0);
            double err = quantization_mse(x, n, clo, chi, symmetric, r);
            if (err < best) {
                best = err;
                best_lo = clo;
                best_hi = chi;
            }
        }
        *lo = best_lo;
        *hi = best_hi;
    }
}

/* ---- the observer graph ---- */

/* Clones g with every fq op bypassed, `observe[0..n)` (ids of g) as its only
 * outputs, in order, and every value they do not need removed. */
static ir_graph *build_observer(const ir_graph *g, const int *observe, int n, ir_diag *d)
{
    ir_graph *o = ir_graph_clone(g);
    int *outputs = malloc(sizeof *outputs * (size_t)(n ? n : 1));
    bool *live = calloc((size_t)(g->nvalues ? g->nvalues : 1), sizeof *live);
    if (!o || !outputs || !live) {
        ir_graph_free(o);
        free(outputs);
        free(live);
        ir_diag_error(d, (ir_loc){0}, "calibrate: out of memory copying graph '%s'", g->name);
        return NULL;
    }
    for (int id = 0; id < o->nvalues; id++) {
        ir_value *v = o->values[id];
        if (ir_is_fake_quant(v->op))
            ir_replace_uses(o, id, v->ops[0]);
    }
    memcpy(outputs, observe, sizeof *outputs * (size_t)n);
    free(o->outputs);
    o->outputs = outputs;
    o->noutputs = n;
    for (int k = 0; k < n; k++)
        live[observe[k]] = true;
    for (int id = o->nvalues - 1; id >= 0; id--)
        for (int k = 0; live[id] && k < o->values[id]->nops; k++)
            live[o->values[id]->ops[k]] = true;
    for (int id = 0; id < o->nvalues; id++)
        o->values[id]->dead = !live[id];
    free(live);
    if (ir_graph_compact(o) != 0) {
        ir_graph_free(o);
        ir_diag_error(d, (ir_loc){0}, "calibrate: graph '%s' has a cycle", g->name);
        return NULL;
    }
    return o;
}

/* Runs the observer graph over every batch and calls visit(ctx, batch,
 * outputs) with its n output tensors, which stay owned by this function. */
typedef int (*observe_fn)(void *ctx, int batch, rt_tensor *const *outputs, ir_diag *d);

static int run_observer(const ir_graph *g, const int *observe, int n, const rt_weights *weights,
                        const rt_weights *const *batches, int nbatches, const rt_executor *executor, int threads,
                        observe_fn visit, void *ctx, ir_diag *d)
{
    if (nbatches < 1) {
        ir_diag_error(d, (ir_loc){0}, "calibrate: no calibration batches; pass at least one input set");
        return -1;
    }
    ir_graph *o = build_observer(g, observe, n, d);
    if (!o)
        return -1;
    if (!executor)
        executor = rt_executor_interp();
    void *module = executor->compile(o, threads, d);
    rt_tensor **outputs = calloc((size_t)(n ? n : 1), sizeof *outputs);
    int rc = module && outputs ? 0 : -1;
    for (int b = 0; b < nbatches && rc == 0; b++) {
        rc = executor->run(module, weights, b == 0, batches[b], outputs, d);
        if (rc == 0)
            rc = visit(ctx, b, outputs, d);
        for (int k = 0; k < n; k++) {
            rt_tensor_free(outputs[k]);
            outputs[k] = NULL;
        }
    }
    if (module)
        executor->free(module);
    free(outputs);
    ir_graph_free(o);
    return rc;
}

/* ---- calibration ---- */

/* The statistics of one quantizer. Activations keep the exact minimum and
 * maximum and a reservoir sample. Weights are the same in every batch, so
 * they keep the whole tensor of the first batch. */
typedef struct site_stats {
    int quantizer;  /* fq value id in g */
    ir_quant_spec spec;
    bool weight;
    double min, max;
    float *samples;
    int64_t nsamples, seen;
    rt_tensor *tensor;
} site_stats;

typedef struct calib_ctx {
    const pass_calib_options *o;
    site_stats *sites;
    int nsites;
    rt_rng rng;
} calib_ctx;

static int observe_batch(void *ctx, int batch, rt_tensor *const *outputs, ir_diag *d)
{
    calib_ctx *c = ctx;
    for (int k = 0; k < c->nsites; k++) {
        site_stats *s = &c->sites[k];
        const rt_tensor *t = outputs[k];
        if (t->dtype != IR_F32) {
            ir_diag_error(d, (ir_loc){0}, "calibrate: quantizer inputs must be f32, got %s",
                          ir_dtype_name(t->dtype));
            return -1;
        }
        const float *x = t->data;
        int64_t n = rt_tensor_numel(t);
        if (s->weight) {
            if (batch == 0 && !(s->tensor = rt_tensor_to_f32(t))) {
                ir_diag_error(d, (ir_loc){0}, "calibrate: out of memory copying a weight");
                return -1;
            }
            continue;
        }
        for (int64_t i = 0; i < n; i++) {
            s->min = fmin(s->min, x[i]);
            s->max = fmax(s->max, x[i]);
            int64_t slot = s->seen < c->o->max_samples ? s->seen
                                                       : (int64_t)rt_rng_below(&c->rng, (uint64_t)s->seen + 1);
            if (slot < c->o->max_samples)
                s->samples[slot] = x[i];
            s->seen++;
        }
        s->nsamples = s->seen < c->o->max_samples ? s->seen : c->o->max_samples;
    }
    return 0;
}

static int write_param(const ir_graph *g, rt_weights *w, int param, const float *values, ir_diag *d)
{
    const ir_value *v = g->values[param];
    rt_tensor *t = rt_tensor_new(IR_F32, v->type.rank, v->type.dims);
    if (!t || rt_weights_set(w, v->name, t) != 0) {
        rt_tensor_free(t);
        ir_diag_error(d, v->loc, "calibrate: out of memory setting '%s'", v->name);
        return -1;
    }
    memcpy(t->data, values, sizeof(float) * (size_t)rt_tensor_numel(t));
    return 0;
}

/* Computes and writes the params of one quantizer. Per-channel weights
 * gather each channel's values along spec.axis first. */
static int finish_site(const ir_graph *g, rt_weights *w, const pass_calib_options *o, const site_stats *s,
                       ir_diag *d)
{
    const ir_value *q = g->values[s->quantizer];
    int64_t nchannels = ir_type_numel(&g->values[q->ops[1]]->type);
    float *scales = malloc(sizeof(float) * (size_t)nchannels * 2);
    if (!scales) {
        ir_diag_error(d, q->loc, "calibrate: out of memory");
        return -1;
    }
    float *zero_points = scales + nchannels;
    double lo = s->min, hi = s->max;
    if (!s->weight) {
        if (o->method != PASS_CALIB_MINMAX)
            pass_calib_range(s->samples, s->nsamples, o, s->spec.symmetric, s->spec.range, &lo, &hi);
        pass_quant_params_from_range(lo, hi, s->spec.symmetric, s->spec.range, &scales[0], &zero_points[0]);
    } else {
        const rt_tensor *t = s->tensor;
        int64_t n = rt_tensor_numel(t), inner = 1;
        for (int i = s->spec.axis + 1; nchannels > 1 && i < t->rank; i++)
            inner *= t->dims[i];
        int64_t per = n / nchannels;
        float *by_channel = malloc(sizeof(float) * (size_t)(n ? n : 1));
        if (!by_channel) {
            free(scales);
            ir_diag_error(d, q->loc, "calibrate: out of memory");
            return -1;
        }
        /* Element i = (outer, c, rest) with rest < inner moves to position
         * outer * inner + rest of channel c's run. */
        const float *x = t->data;
        for (int64_t i = 0; i < n; i++) {
            int64_t c = (i / inner) % nchannels, outer = i / (inner * nchannels), rest = i % inner;
            by_channel[c * per + outer * inner + rest] = x[i];
        }
        for (int64_t c = 0; c < nchannels; c++) {
            pass_calib_range(by_channel + c * per, per, o, s->spec.symmetric, s->spec.range, &lo, &hi);
            pass_quant_params_from_range(lo, hi, s->spec.symmetric, s->spec.range, &scales[c], &zero_points[c]);
        }
        free(by_channel);
    }
    int rc = write_param(g, w, q->ops[1], scales, d);
    if (rc == 0)
        rc = write_param(g, w, q->ops[2], zero_points, d);
    free(scales);
    return rc;
}

int pass_calibrate(const ir_graph *g, rt_weights *weights, const rt_weights *const *batches, int nbatches,
                   const pass_calib_options *o, ir_diag *d)
{
    if (o->method == PASS_CALIB_PERCENTILE && !(o->percentile > 50 && o->percentile <= 100)) {
        ir_diag_error(d, (ir_loc){0}, "calibrate: percentile %g is out of range; use a value in (50, 100]",
                      o->percentile);
        return -1;
    }
    if (o->mse_grid < 1 || o->max_samples < 1) {
        ir_diag_error(d, (ir_loc){0}, "calibrate: mse_grid and max_samples must be at least 1");
        return -1;
    }
    calib_ctx c = {o, calloc((size_t)(g->nvalues ? g->nvalues : 1), sizeof(site_stats)), 0, {{0}}};
    int *observe = malloc(sizeof(int) * (size_t)(g->nvalues ? g->nvalues : 1));
    int rc = c.sites && observe ? 0 : -1;
    rt_rng_seed(&c.rng, o->seed, 0);
    for (int id = 0; id < g->nvalues && rc == 0; id++) {
        const ir_value *v = g->values[id];
        if (!ir_is_fake_quant(v->op))
            continue;
        site_stats *s = &c.sites[c.nsites];
        *s = (site_stats){.quantizer = id, .weight = v->op == IR_OP_FQ_WEIGHT, .min = INFINITY, .max = -INFINITY};
        if (ir_quant_spec_of(v, &s->spec) != 0 ||
            (!s->weight && !(s->samples = malloc(sizeof(float) * (size_t)o->max_samples))))
            rc = -1;
        observe[c.nsites++] = v->ops[0];
    }
    if (rc != 0)
        ir_diag_error(d, (ir_loc){0}, "calibrate: out of memory");
    if (rc == 0 && c.nsites == 0) {
        ir_diag_error(d, (ir_loc){0}, "calibrate: graph '%s' has no fq.act or fq.weight; run insert-fakequant "
                      "first", g->name);
        rc = -1;
    }
    if (rc == 0)
        rc = run_observer(g, observe, c.nsites, weights, batches, nbatches, o->executor, o->threads, observe_batch,
                          &c, d);
    for (int k = 0; k < c.nsites && rc == 0; k++)
        rc = finish_site(g, weights, o, &c.sites[k], d);
    for (int k = 0; c.sites && k < c.nsites; k++) {
        free(c.sites[k].samples);
        rt_tensor_free(c.sites[k].tensor);
    }
    free(c.sites);
    free(observe);
    return rc;
}

/* ---- SmoothQuant ---- */

typedef struct smooth_ctx {
    const char *pass; /* names the caller in errors */
    int nsites;
    int64_t *channels;  /* per site */
    double **max_abs;   /* per site, per channel */
} smooth_ctx;

/* Takes the maximum |x| per channel (the last dimension) of every output
 * into c->max_abs. Used by SmoothQuant and by pass_act_channel_max_abs. */
static int observe_max_abs(void *ctx, int batch, rt_tensor *const *outputs, ir_diag *d)
{
    smooth_ctx *c = ctx;
    for (int k = 0; k < c->nsites; k++) {
        if (outputs[k]->dtype != IR_F32) {
            ir_diag_error(d, (ir_loc){0}, "%s: observed activations must be f32, got %s", c->pass,
                          ir_dtype_name(outputs[k]->dtype));
            return -1;
        }
        const float *x = outputs[k]->data;
        int64_t n = rt_tensor_numel(outputs[k]), channels = c->channels[k];
        for (int64_t i = 0; i < n; i++)
            c->max_abs[k][i % channels] = fmax(c->max_abs[k][i % channels], fabs(x[i]));
    }
    return 0;
}

/* Writes alpha = 1 / s for one site, with w_max the row maxima of the
 * divided weights. */
static int write_smooth_alpha(const ir_graph *g, rt_weights *w, int alpha, const double *x_max,
                              const double *w_max, int64_t channels, double migration, ir_diag *d)
{
    float *values = malloc(sizeof(float) * (size_t)channels);
    if (!values) {
        ir_diag_error(d, (ir_loc){0}, "smoothquant: out of memory");
        return -1;
    }
    for (int64_t c = 0; c < channels; c++) {
        double s = 1.0;
        if (x_max[c] > 0 && w_max[c] > 0)
            s = pow(x_max[c], migration) / pow(w_max[c], 1.0 - migration);
        values[c] = (float)fmax(1.0 / s, PASS_QUADAPTER_MIN_ALPHA);
    }
    int rc = write_param(g, w, alpha, values, d);
    free(values);
    return rc;
}

/* Fills w_max[c] with the maximum |W[c, j]| over the weights that qa.scale
 * divides by alpha. */
static int weight_row_max(const ir_graph *g, const rt_weights *w, int alpha, double *w_max, ir_diag *d)
{
    for (int id = 0; id < g->nvalues; id++) {
        const ir_value *v = g->values[id];
        if (v->op != IR_OP_QA_SCALE || v->ops[1] != alpha || ir_attr_int(v, "invert") == 0)
            continue;
        const ir_value *wv = g->values[v->ops[0]];
        const rt_tensor *t = wv->op == IR_OP_PARAM ? rt_weights_get(w, wv->name) : NULL;
        if (!t || t->dtype != IR_F32 || t->rank != 2) {
            ir_diag_error(d, v->loc, "smoothquant: %%%s must divide an f32 [in, out] weight param with a value in "
                          "the weight set", v->name);
            return -1;
        }
        const float *x = t->data;
        for (int64_t r = 0; r < t->dims[0]; r++)
            for (int64_t j = 0; j < t->dims[1]; j++)
                w_max[r] = fmax(w_max[r], fabs(x[r * t->dims[1] + j]));
    }
    return 0;
}

int pass_smoothquant_scales(const ir_graph *g, rt_weights *weights, const rt_weights *const *batches, int nbatches,
                            double migration, const rt_executor *executor, ir_diag *d)
{
    if (!(migration >= 0 && migration <= 1)) {
        ir_diag_error(d, (ir_loc){0}, "smoothquant: migration strength %g is out of range; use 0 to 1", migration);
        return -1;
    }
    int n = g->nvalues ? g->nvalues : 1;
    int *observe = malloc(sizeof(int) * (size_t)n), *alphas = malloc(sizeof(int) * (size_t)n);
    smooth_ctx c = {"smoothquant", 0, calloc((size_t)n, sizeof(int64_t)), calloc((size_t)n, sizeof(double *))};
    int rc = observe && alphas && c.channels && c.max_abs ? 0 : -1;
    for (int id = 0; id < g->nvalues && rc == 0; id++) {
        const ir_value *v = g->values[id];
        if (v->op != IR_OP_QA_SCALE || ir_attr_int(v, "invert") != 0)
            continue;
        int k = c.nsites++;
        observe[k] = v->ops[0];
        alphas[k] = v->ops[1];
        c.channels[k] = g->values[v->ops[1]]->type.dims[0];
        c.max_abs[k] = calloc((size_t)c.channels[k], sizeof(double));
        if (!c.max_abs[k])
            rc = -1;
    }
    if (rc != 0)
        ir_diag_error(d, (ir_loc){0}, "smoothquant: out of memory");
    if (rc == 0 && c.nsites == 0) {
        ir_diag_error(d, (ir_loc){0}, "smoothquant: graph '%s' has no Quadapter alpha; run insert-quadapter first",
                      g->name);
        rc = -1;
    }
    if (rc == 0)
        rc = run_observer(g, observe, c.nsites, weights, batches, nbatches, executor, 0, observe_max_abs, &c, d);
    for (int k = 0; k < c.nsites && rc == 0; k++) {
        double *w_max = calloc((size_t)c.channels[k], sizeof(double));
        rc = w_max ? weight_row_max(g, weights, alphas[k], w_max, d) : -1;
        if (rc == 0)
            rc = write_smooth_alpha(g, weights, alphas[k], c.max_abs[k], w_max, c.channels[k], migration, d);
        free(w_max);
    }
    for (int k = 0; c.max_abs && k < c.nsites; k++)
        free(c.max_abs[k]);
    free(c.max_abs);
    free(c.channels);
    free(observe);
    free(alphas);
    return rc;
}

/* ---- activation outliers ---- */

void pass_act_channel_max_free(pass_act_channel_max *sites, int n)
{
    for (int k = 0; sites && k < n; k++)
        free(sites[k].max_abs);
    free(sites);
}

int pass_act_channel_max_abs(const ir_graph *g, const rt_weights *weights, const rt_weights *const *batches,
                             int nbatches, const rt_executor *executor, int threads, pass_act_channel_max **out,
                             int *nout, ir_diag *d)
{
    *out = NULL;
    *nout = 0;
    int n = g->nvalues ? g->nvalues : 1;
    int *observe = malloc(sizeof(int) * (size_t)n);
    pass_act_channel_max *sites = calloc((size_t)n, sizeof *sites);
    smooth_ctx c = {"outliers", 0, calloc((size_t)n, sizeof(int64_t)), calloc((size_t)n, sizeof(double *))};
    int rc = observe && sites && c.channels && c.max_abs ? 0 : -1;
    for (int id = 0; id < g->nvalues && rc == 0; id++) {
        const ir_value *v = g->values[id];
        if (v->op != IR_OP_FQ_ACT)
            continue;
        const ir_type *t = &g->values[v->ops[0]]->type;
        int k = c.nsites++;
        observe[k] = v->ops[0];
        c.channels[k] = t->rank > 0 ? t->dims[t->rank - 1] : 1;
        c.max_abs[k] = calloc((size_t)(c.channels[k] ? c.channels[k] : 1), sizeof(double));
        sites[k] = (pass_act_channel_max){id, c.channels[k], c.max_abs[k]};
        if (!c.max_abs[k])
            rc = -1;
    }
    if (rc != 0)
        ir_diag_error(d, (ir_loc){0}, "outliers: out of memory");
    if (rc == 0 && c.nsites == 0) {
        ir_diag_error(d, (ir_loc){0}, "outliers: graph '%s' has no fq.act; run insert-fakequant first", g->name);
        rc = -1;
    }
    if (rc == 0)
        rc = run_observer(g, observe, c.nsites, weights, batches, nbatches, executor, threads, observe_max_abs, &c,
                          d);
    /* The per-channel arrays now belong to `sites`. */
    if (rc == 0) {
        *out = sites;
        *nout = c.nsites;
    } else {
        pass_act_channel_max_free(sites, c.nsites);
    }
    free(c.max_abs);
    free(c.channels);
    free(observe);
    return rc;
}
