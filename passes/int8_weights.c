/* pass_int8_convert_weights: the f32 weights of the sites that lower-int8
 * rewrites, quantized once to the i8 tensors its q.linear ops read, and
 * the requantization multipliers of its attention matmuls. */
#include <math.h>
#include <stdio.h>

#include "ir/quant.h"
#include "passes/int8.h"

/* Returns the f32 tensor of param `id`, checked against its IR type, or
 * NULL after reporting. */
static const rt_tensor *param_tensor(const ir_graph *g, const rt_weights *weights, int id, ir_diag *d)
{
    const ir_value *p = g->values[id];
    const rt_tensor *t = rt_weights_get(weights, p->name);
    if (!t) {
        ir_diag_error(d, p->loc, "int8 weights: param @%s is missing from the weight set", p->name);
        return NULL;
    }
    if (t->dtype != IR_F32 || rt_tensor_numel(t) != ir_type_numel(&p->type)) {
        ir_diag_error(d, p->loc, "int8 weights: param @%s must be f32 with %lld elements, got %s with %lld",
                      p->name, (long long)ir_type_numel(&p->type), ir_dtype_name(t->dtype),
                      (long long)rt_tensor_numel(t));
        return NULL;
    }
    return t;
}

static int convert_site(const ir_graph *g, const pass_int8_site *s, rt_weights *weights, ir_diag *d)
{
    const ir_value *fq = g->values[s->weight_fq];
    const ir_value *wv = g->values[s->weight];
    ir_quant_spec spec;
    if (ir_quant_spec_of(fq, &spec) != 0) {
        ir_diag_error(d, fq->loc, "int8 weights: invalid attributes on fq.weight %%%s", fq->name);
        return -1;
    }
    const rt_tensor *w = param_tensor(g, weights, s->weight, d);
    const rt_tensor *scale = param_tensor(g, weights, fq->ops[1], d);
    const rt_tensor *zero = param_tensor(g, weights, fq->ops[2], d);
    if (!w || !scale || !zero)
        return -1;

    /* Channel of flat element i along the output axis: rows of [N, K] for
     * the LM head, columns of [K, N] for a linear. */
    int64_t rows = wv->type.dims[0], cols = wv->type.dims[1];
    bool per_channel = rt_tensor_numel(scale) > 1;
    const float *ws = w->data, *ss = scale->data, *zs = zero->data;
    for (int64_t c = 0; c < rt_tensor_numel(scale); c++) {
        if (!(ss[c] > 0.0f) || !isfinite(ss[c])) {
            ir_diag_error(d, fq->loc, "int8 weights: @%s[%lld] is %.9g; scales must be positive and finite (run "
                          "calibration first)", g->values[fq->ops[1]]->name, (long long)c, (double)ss[c]);
            return -1;
        }
    }

    int64_t dims[2] = {rows, cols};
    rt_tensor *q = rt_tensor_new(IR_I8, 2, dims);
    if (!q) {
        ir_diag_error(d, wv->loc, "int8 weights: out of memory for @%s", wv->name);
        return -1;
    }
    int8_t *qs = q->data;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t col = 0; col < cols; col++) {
            int64_t c = 0; /* the channel whose scale applies */
            if (per_channel)
                c = s->transpose_b ? r : col;
            float z = ir_quant_zero_point(zs[c]);
            float v = nearbyintf(ws[r * cols + col] / ss[c]) + z;
            v = fminf(fmaxf(v, (float)spec.range.qmin), (float)spec.range.qmax);
            qs[r * cols + col] = (int8_t)v;
        }
    }

    char name[512];
    snprintf(name, sizeof name, "%s%s", wv->name, PASS_INT8_WEIGHT_SUFFIX);
    if (rt_weights_set(weights, name, q) != 0) {
        rt_tensor_free(q);
        ir_diag_error(d, wv->loc, "int8 weights: could not store @%s", name);
        return -1;
    }
    return 0;
}

int pass_int8_convert_weights(const ir_graph *g, rt_weights *weights, ir_diag *d)
{
    int stored = 0;
    for (int i = 0; i < g->nvalues; i++) {
        pass_int8_site site;
        if (!pass_int8_match(g, i, &site))
            continue;
        if (convert_site(g, &site, weights, d) != 0)
            return -1;
        stored++;
    }
    for (int i = 0; i < g->nvalues; i++) {
        pass_int8_attention site;
        if (!pass_int8_match_attention(g, i, &site) || site.consumer < 0)
            continue;
        if (pass_int8_store_multiplier(g, &site, weights, d) != 0)
            return -1;
        stored++;
    }
    return stored;
}
