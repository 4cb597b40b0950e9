/* INT8 builds: loads a file written by `quadc quantize` as its fake-quant
 * graph (runtime/quantize_run.h) and converts the weights that lower-int8
 * needs. driver_build runs the lower-int8 pass afterwards, so its IR dumps
 * show the rewrite. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/build_int8.h"
#include "passes/int8.h"
#include "passes/manager.h"
#include "runtime/quantize_run.h"

bool driver_is_quantized(const rt_weights *w)
{
    return rt_weights_get_meta(w, DRIVER_QUANTIZE_BITS_KEY) != NULL;
}

static bool is_quantizer_param(const char *name)
{
    size_t len = strlen(name);
    return (len > 6 && strcmp(name + len - 6, ".scale") == 0) ||
           (len > 11 && strcmp(name + len - 11, ".zero_point") == 0);
}

/* Returns the value of hparam `name` bound in g, or `fallback`. */
static int64_t graph_hparam(const ir_graph *g, const char *name, int64_t fallback)
{
    for (int i = 0; i < g->nhparams; i++)
        if (strcmp(g->hparams[i].name, name) == 0)
            return g->hparams[i].value;
    return fallback;
}

/* Compiles the model under the -D values of r, the hparams recorded in w
 * and the given batch size and sequence length, and runs `pass`, the
 * insert-fakequant of the file, as rt_quantized_model_load does with a
 * batch size of 1. Returns NULL after reporting. */
static ir_graph *compile_quantized(const driver_build_request *r, const rt_weights *w, const char *pass,
                                   int64_t batch, int64_t seq, ir_diag *d)
{
    fe_define *hparams = NULL;
    int nhparams = 0;
    if (rt_quantize_weight_hparams(r->model, w, r->weights, r->defines, r->ndefines, &hparams, &nhparams, d) != 0)
        return NULL;
    fe_define *all = calloc((size_t)nhparams + 2, sizeof *all);
    ir_graph *g = NULL;
    if (all) {
        int n = 0;
        for (int i = 0; i < nhparams; i++)
            if (strcmp(hparams[i].name, "B") != 0 && strcmp(hparams[i].name, "T") != 0)
                all[n++] = hparams[i];
        all[n++] = (fe_define){"B", batch};
        all[n++] = (fe_define){"T", seq};
        g = fe_compile_file(r->model, all, n, d);
    }
    if (g && pass_run_text(g, pass, d) != 0) {
        ir_graph_free(g);
        g = NULL;
    }
    free(all);
    free(hparams);
    return g;
}

int driver_report_missing_quantizers(const driver_build_request *r, const rt_weights *w, ir_diag *d)
{
    /* Without metadata the bit widths are unknown, but they do not change
     * which quantizer params exist. */
    ir_graph *g = compile_quantized(r, w, "insert-fakequant{bits=w8a8 sites=" RT_QUANTIZE_DEFAULT_SITES "}", 1, 1, d);
    if (!g)
        return -1;
    const char *missing = NULL;
    for (int id = 0; id < g->nvalues && !missing; id++) {
        const ir_value *v = g->values[id];
        if (v->op == IR_OP_PARAM && is_quantizer_param(v->name) && !rt_weights_get(w, v->name))
            missing = v->name;
    }
    if (missing)
        ir_diag_file_error(d, r->weights, "--int8 needs the quantizer params of a model quantized by quadc quantize, "
                           "but '%s' is missing; quantize the float weights first (quadc quantize %s --weights %s "
                           "--method ptq --calib TEXT --out Q.safetensors) and build Q.safetensors",
                           missing, r->model, r->weights);
    else
        ir_diag_file_error(d, r->weights, "--int8 needs a model quantized by quadc quantize, but the metadata has "
                           "no '" DRIVER_QUANTIZE_BITS_KEY "'; write the file with quadc quantize");
    ir_graph_free(g);
    return -1;
}

/* Checks that a and b have the same params, by name and type, so that the
 * weights loaded for a serve b. */
static int check_same_params(const ir_graph *a, const ir_graph *b, const char *path, ir_diag *d)
{
    int na = 0, nb = 0;
    for (int id = 0; id < b->nvalues; id++)
        nb += b->values[id]->op == IR_OP_PARAM && !b->values[id]->dead;
    for (int id = 0; id < a->nvalues; id++) {
        const ir_value *v = a->values[id];
        if (v->op != IR_OP_PARAM || v->dead)
            continue;
        na++;
        int other = ir_find(b, v->name);
        if (other < 0 || b->values[other]->op != IR_OP_PARAM ||
            !ir_type_equal(&v->type, &b->values[other]->type)) {
            ir_diag_file_error(d, path, "param '%s' of the quantized model changes with the batch size; build "
                               "with -D B=1", v->name);
            return -1;
        }
    }
    if (na != nb) {
        ir_diag_file_error(d, path, "the quantized model has %d params with B=1 and %d with the build's batch size; "
                           "build with -D B=1", na, nb);
        return -1;
    }
    return 0;
}

int driver_load_int8(const driver_build_request *r, const ir_graph *float_graph, ir_graph **graph,
                     rt_weights **weights, int *nsites, ir_diag *d)
{
    *graph = NULL;
    *weights = NULL;
    *nsites = 0;
    int64_t batch = graph_hparam(float_graph, "B", 1);
    int64_t seq = graph_hparam(float_graph, "T", 1);
    if (seq < 1 || seq > INT32_MAX || batch < 1) {
        ir_diag_file_error(d, r->model, "the INT8 build needs hparams B and T of at least 1, got B=%lld and T=%lld",
                           (long long)batch, (long long)seq);
        return -1;
    }
    rt_quantized_model m;
    if (rt_quantized_model_load(r->model, r->defines, r->ndefines, r->weights, (int)seq, &m, d) != 0)
        return -1;

    /* rt_quantized_model_load compiles with B = 1. Another batch size
     * compiles the same recipe again, and its params must not change. */
    ir_graph *g = m.graph;
    m.graph = NULL;
    if (batch != 1) {
        char pass[512];
        ir_graph *batched = NULL;
        if (rt_quantize_fakequant_pass(m.weights, r->weights, pass, sizeof pass, d) == 0)
            batched = compile_quantized(r, m.weights, pass, batch, seq, d);
        int rc = batched ? check_same_params(g, batched, r->weights, d) : -1;
        ir_graph_free(g);
        g = batched;
        if (rc != 0)
            goto fail;
    }

    int converted = pass_int8_convert_weights(g, m.weights, d);
    if (converted < 0)
        goto fail;
    if (converted == 0) {
        ir_diag_file_error(d, r->weights, "no fake-quantized linear layer of %s can run in INT8: lower-int8 needs "
                           "symmetric weight quantizers, per tensor or per output channel", r->model);
        goto fail;
    }
    *graph = g;
    *weights = m.weights;
    *nsites = converted;
    return 0;
fail:
    ir_graph_free(g);
    rt_quantized_model_free(&m);
    return -1;
}

int driver_keep_graph_params(const ir_graph *g, rt_weights **weights, ir_diag *d)
{
    rt_weights *from = *weights;
    rt_weights *selected = rt_weights_new();
    if (!selected) {
        ir_diag_file_error(d, NULL, "out of memory while selecting the INT8 weights");
        return -1;
    }
    for (int i = 0; i < from->count; i++) {
        int id = ir_find(g, from->names[i]);
        if (id < 0 || g->values[id]->op != IR_OP_PARAM || g->values[id]->dead)
            continue;
        if (rt_weights_set(selected, from->names[i], from->tensors[i]) != 0) {
            rt_weights_free(selected);
            ir_diag_file_error(d, NULL, "out of memory while selecting the INT8 weights");
            return -1;
        }
        from->tensors[i] = NULL; /* now owned by selected */
    }
    rt_weights_free(from);
    *weights = selected;
    return 0;
}
