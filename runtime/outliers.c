/* Per-channel activation maxima at the fq.act sites of a model and their
 * summary statistics. See runtime/outliers.h. */
#include "runtime/outliers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "passes/manager.h"
#include "passes/quantize.h"
#include "runtime/quantize_internal.h"
#include "runtime/quantize_run.h"
#include "runtime/train_llmc.h"

void rt_outliers_model_free(rt_outliers_model *m)
{
    ir_graph_free(m->graph);
    rt_weights_free(m->weights);
    m->graph = NULL;
    m->weights = NULL;
}

/* Compiles the model with the user's defines and the weights' hparams,
 * B = 1 and T = seq. */
static ir_graph *compile_for_weights(const char *model_path, const fe_define *defines, int ndefines,
                                     const rt_weights *w, const char *path, int seq, ir_diag *d)
{
    fe_define *from_weights = NULL;
    int n = 0;
    if (rt_quantize_weight_hparams(model_path, w, path, defines, ndefines, &from_weights, &n, d) != 0)
        return NULL;
    fe_define *all = calloc((size_t)n + 2, sizeof *all);
    ir_graph *g = NULL;
    if (all) {
        int count = 0;
        for (int i = 0; i < n; i++)
            if (strcmp(from_weights[i].name, "B") != 0 && strcmp(from_weights[i].name, "T") != 0)
                all[count++] = from_weights[i];
        all[count++] = (fe_define){"B", 1};
        all[count++] = (fe_define){"T", seq};
        g = fe_compile_file(model_path, all, count, d);
    }
    free(all);
    free(from_weights);
    return g;
}

/* Rejects a sequence longer than the model's context length n_ctx, which
 * would otherwise fail inside the model as an out-of-range slice. */
static int check_context(const char *model_path, const fe_define *defines, int ndefines, const rt_weights *w,
                         const char *path, int seq, ir_diag *d)
{
    ir_graph *g = compile_for_weights(model_path, defines, ndefines, w, path, 1, d);
    if (!g)
        return -1;
    int rc = 0;
    for (int i = 0; i < g->nhparams; i++)
        if (strcmp(g->hparams[i].name, "n_ctx") == 0 && seq > g->hparams[i].value) {
            ir_diag_file_error(d, path, "the sequence length %d is longer than the model's context length "
                               "n_ctx = %lld; use sequences of at most %lld tokens", seq,
                               (long long)g->hparams[i].value, (long long)g->hparams[i].value);
            rc = -1;
        }
    ir_graph_free(g);
    return rc;
}

int rt_outliers_load_model(const char *model_path, const fe_define *defines, int ndefines, const char *weights_path,
                           int seq, rt_outliers_model *out, ir_diag *d)
{
    memset(out, 0, sizeof *out);
    rt_weights *w = rt_train_load_weights(weights_path, d);
    if (!w)
        return -1;
    if (check_context(model_path, defines, ndefines, w, weights_path, seq, d) != 0) {
        rt_weights_free(w);
        return -1;
    }
    if (rt_weights_get_meta(w, "quadc.quantize.bits")) {
        rt_weights_free(w);
        rt_quantized_model q;
        if (rt_quantized_model_load(model_path, defines, ndefines, weights_path, seq, &q, d) != 0)
            return -1;
        out->graph = q.graph;
        out->weights = q.weights;
        return 0;
    }
    ir_graph *g = compile_for_weights(model_path, defines, ndefines, w, weights_path, seq, d);
    int rc = g ? 0 : -1;
    if (rc == 0)
        rc = qz_check_float_params(g, w, weights_path, d);
    /* The bit widths do not matter: the observer bypasses every fq op. */
    if (rc == 0)
        rc = pass_run_text(g, "insert-fakequant{bits=w8a8}", d);
    if (rc != 0) {
        ir_graph_free(g);
        rt_weights_free(w);
        return -1;
    }
    out->graph = g;
    out->weights = w;
    return 0;
}

/* ---- statistics ---- */

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double rt_outliers_median(const double *values, int64_t n)
{
    if (n <= 0)
        return 0;
    double *sorted = malloc(sizeof *sorted * (size_t)n);
    if (!sorted)
        return NAN;
    memcpy(sorted, values, sizeof *sorted * (size_t)n);
    qsort(sorted, (size_t)n, sizeof *sorted, compare_doubles);
    double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    free(sorted);
    return median;
}

double rt_outlier_ratio(const rt_outlier_site *s)
{
    if (s->median > 0)
        return s->max / s->median;
    return s->max > 0 ? INFINITY : 1.0;
}

/* Fills max, median and the top channels of a site from its max_abs. The
 * top list is kept by insertion, which is cheap for the few entries. */
static int summarize_site(rt_outlier_site *s, int top)
{
    s->max = 0;
    s->ntop = 0;
    for (int64_t c = 0; c < s->channels; c++) {
        double v = s->max_abs[c];
        s->max = v > s->max ? v : s->max;
        int at = s->ntop;
        while (at > 0 && s->max_abs[s->top[at - 1]] < v)
            at--;
        if (at >= top)
            continue;
        int last = s->ntop < top ? s->ntop : top - 1;
        for (int k = last; k > at; k--)
            s->top[k] = s->top[k - 1];
        s->top[at] = c;
        if (s->ntop < top)
            s->ntop++;
    }
    s->median = rt_outliers_median(s->max_abs, s->channels);
    return isnan(s->median) ? -1 : 0;
}

/* Returns the site name of an fq.act: its scale param's name without the
 * ".scale" that insert-fakequant appends. */
static char *site_name(const ir_graph *g, int quantizer)
{
    const char *scale = g->values[g->values[quantizer]->ops[1]]->name;
    size_t len = strlen(scale);
    if (len > 6 && strcmp(scale + len - 6, ".scale") == 0)
        len -= 6;
    return strndup(scale, len);
}

void rt_outliers_free(rt_outliers *o)
{
    for (int k = 0; o->sites && k < o->nsites; k++) {
        free(o->sites[k].name);
        free(o->sites[k].max_abs);
    }
    free(o->sites);
    o->sites = NULL;
    o->nsites = 0;
}

int rt_outliers_measure(const ir_graph *g, const rt_weights *weights, const int32_t *const *seqs, int nseqs, int seq,
                        const rt_executor *executor, int threads, int top, rt_outliers *out, ir_diag *d)
{
    memset(out, 0, sizeof *out);
    if (top < 1 || top > RT_OUTLIERS_MAX_TOP || nseqs < 1) {
        ir_diag_file_error(d, NULL, "outliers: need 1 to %d top channels and at least one sequence, got %d and %d",
                           RT_OUTLIERS_MAX_TOP, top, nseqs);
        return -1;
    }
    qz_inputs *inputs = calloc((size_t)nseqs, sizeof *inputs);
    const rt_weights **batches = calloc((size_t)nseqs, sizeof *batches);
    int rc = inputs && batches ? 0 : -1;
    for (int s = 0; s < nseqs && rc == 0; s++) {
        rc = qz_lm_inputs(&inputs[s], seqs[s], seq);
        batches[s] = &inputs[s].set;
    }
    if (rc != 0)
        ir_diag_file_error(d, NULL, "outliers: out of memory for the inputs of %d sequences", nseqs);
    pass_act_channel_max *maxima = NULL;
    int nmaxima = 0;
    if (rc == 0)
        rc = pass_act_channel_max_abs(g, weights, batches, nseqs, executor, threads, &maxima, &nmaxima, d);
    if (rc == 0) {
        out->sites = calloc((size_t)nmaxima, sizeof *out->sites);
        rc = out->sites ? 0 : -1;
    }
    for (int k = 0; k < nmaxima && rc == 0; k++) {
        rt_outlier_site *s = &out->sites[out->nsites++];
        s->name = site_name(g, maxima[k].quantizer);
        s->channels = maxima[k].channels;
        s->max_abs = maxima[k].max_abs;
        maxima[k].max_abs = NULL;
        rc = s->name && summarize_site(s, top) == 0 ? 0 : -1;
        if (rc != 0)
            ir_diag_file_error(d, NULL, "outliers: out of memory");
    }
    pass_act_channel_max_free(maxima, nmaxima);
    for (int s = 0; inputs && s < nseqs; s++)
        qz_inputs_free(&inputs[s]);
    free(inputs);
    free(batches);
    if (rc != 0)
        rt_outliers_free(out);
    return rc;
}
