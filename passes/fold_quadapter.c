/* Folding Quadapter scales into the weights (pass_fold_quadapter) and
 * keeping them positive during training (pass_quadapter_clamp_alpha). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "passes/quant_graph.h"
#include "passes/quantize.h"

/* What folding one qa.scale changes. */
typedef struct fold_item {
    int scale;       /* the qa.scale value */
    int alpha;       /* its alpha param */
    bool invert;
    /* invert = 0: the tensors multiplied by alpha and where. A layernorm
     * source multiplies gamma and beta (columns 0..C-1 of both); the
     * attention value path multiplies columns start..start+C-1 of the
     * producer's weight and bias. */
    int targets[2];  /* param ids, -1 when absent */
    int64_t start;
    /* The per-channel scale param of the fq.weight that quantizes the
     * producer's weight on the attention value path, or -1. */
    int weight_scale;
    /* invert = 1: the weight param whose rows are divided. */
    int weight;
} fold_item;

static const rt_tensor *f32_weight(const ir_graph *g, const rt_weights *w, int param, ir_diag *d)
{
    const ir_value *v = g->values[param];
    const rt_tensor *t = rt_weights_get(w, v->name);
    if (!t) {
        ir_diag_error(d, v->loc, "fold-quadapter: missing weight '%s' for @%s", v->name, v->name);
        return NULL;
    }
    if (t->dtype != IR_F32 || rt_tensor_numel(t) != ir_type_numel(&v->type)) {
        ir_diag_error(d, v->loc, "fold-quadapter: weight '%s' must be f32 with %lld elements to fold into it",
                      v->name, (long long)ir_type_numel(&v->type));
        return NULL;
    }
    return t;
}

static int check_alpha(const ir_graph *g, const rt_weights *w, int alpha, ir_diag *d)
{
    const ir_value *v = g->values[alpha];
    if (v->op != IR_OP_PARAM) {
        ir_diag_error(d, v->loc, "fold-quadapter: alpha %%%s must be a param", v->name);
        return -1;
    }
    const rt_tensor *t = f32_weight(g, w, alpha, d);
    if (!t)
        return -1;
    const float *a = t->data;
    for (int64_t c = 0; c < rt_tensor_numel(t); c++) {
        if (!(a[c] > 0.0f) || !isfinite(a[c])) {
            ir_diag_error(d, v->loc, "fold-quadapter: %s[%lld] is %.9g; alpha must be positive and finite",
                          v->name, (long long)c, (double)a[c]);
            return -1;
        }
    }
    return 0;
}

/* Multiplying columns of a weight by alpha changes what its quantizer
 * sees. A per-channel quantizer along the output axis stays exact when its
 * scales are multiplied by the same alpha (round(w a / (s a)) s a =
 * a round(w / s) s, and the zero point is unchanged), so that scale param
 * joins the fold. A per-tensor quantizer cannot follow, so it is an error. */
static int plan_weight_quantizer(const ir_graph *g, const rt_weights *w, fold_item *item, int weight, ir_diag *d)
{
    const ir_value *q = g->values[weight];
    if (q->op != IR_OP_FQ_WEIGHT)
        return 0;
    int scale = q->ops[1];
    int64_t axis = ir_attr_int(q, "axis");
    if (axis < 0)
        axis += q->type.rank;
    bool per_output_channel = ir_type_numel(&g->values[scale]->type) > 1 && axis == q->type.rank - 1;
    if (!per_output_channel || g->values[scale]->op != IR_OP_PARAM) {
        ir_diag_error(d, g->values[item->scale]->loc, "fold-quadapter: cannot fold %%%s into the columns of %%%s, "
                      "whose quantizer is not per output channel; quantize weights per channel "
                      "(insert-fakequant{weights=per-channel})", g->values[item->scale]->name, q->name);
        return -1;
    }
    item->weight_scale = scale;
    return f32_weight(g, w, scale, d) ? 0 : -1;
}

/* Fills item->targets for a qa.scale of an activation. */
static int plan_source(const ir_graph *g, const rt_weights *w, fold_item *item, ir_diag *d)
{
    const ir_value *s = g->values[item->scale];
    const ir_value *src = g->values[s->ops[0]];
    item->targets[0] = item->targets[1] = item->weight_scale = -1;
    item->start = 0;
    qg_value_path path;
    if (src->op == IR_OP_LAYERNORM) {
        item->targets[0] = src->ops[1];
        item->targets[1] = src->ops[2];
    } else if (qg_trace_value_path(g, s->ops[0], &path)) {
        const ir_value *producer = g->values[path.producer];
        /* c_attn's weight may itself be read through a Quadapter or a
         * quantizer; the columns belong to the param underneath. */
        item->targets[0] = qg_param_of(g, producer->ops[1]);
        item->targets[1] = producer->nops > 2 ? qg_param_of(g, producer->ops[2]) : -1;
        if (item->targets[0] < 0)
            item->targets[0] = producer->ops[1];
        if (plan_weight_quantizer(g, w, item, producer->ops[1], d) != 0)
            return -1;
        item->start = path.start;
    } else {
        ir_diag_error(d, s->loc, "fold-quadapter: cannot fold %%%s because its input %%%s is neither a layernorm "
                      "nor the attention value path", s->name, src->name);
        return -1;
    }
    for (int k = 0; k < 2; k++) {
        int t = item->targets[k];
        if (t < 0)
            continue;
        if (g->values[t]->op != IR_OP_PARAM) {
            ir_diag_error(d, s->loc, "fold-quadapter: cannot fold %%%s into %%%s, which is not a param", s->name,
                          g->values[t]->name);
            return -1;
        }
        if (!f32_weight(g, w, t, d))
            return -1;
    }
    return 0;
}

static int plan_weight(const ir_graph *g, const rt_weights *w, fold_item *item, ir_diag *d)
{
    const ir_value *s = g->values[item->scale];
    item->weight = s->ops[0];
    const ir_value *wv = g->values[item->weight];
    if (wv->op != IR_OP_PARAM || wv->type.rank != 2 || ir_attr_int(s, "axis") != 0) {
        ir_diag_error(d, s->loc, "fold-quadapter: cannot fold %%%s: it must divide the rows (axis 0) of a "
                      "[in, out] weight param", s->name);
        return -1;
    }
    return f32_weight(g, w, item->weight, d) ? 0 : -1;
}

/* True when every use of each alpha is a qa.scale, so alpha can go. */
static bool alphas_private(const ir_graph *g, const qg_uses *u, const fold_item *items, int n)
{
    for (int i = 0; i < n; i++) {
        int a = items[i].alpha;
        if (u->outputs[a] != 0)
            return false;
        for (int k = 0; k < u->count[a]; k++)
            if (g->values[u->items[a][k].user]->op != IR_OP_QA_SCALE)
                return false;
    }
    return true;
}

static void apply_item(const ir_graph *g, rt_weights *w, const fold_item *item)
{
    const float *a = rt_weights_get(w, g->values[item->alpha]->name)->data;
    int64_t channels = g->values[item->alpha]->type.dims[0];
    if (item->invert) {
        rt_tensor *t = rt_weights_get(w, g->values[item->weight]->name);
        int64_t cols = t->dims[1];
        float *x = t->data;
        for (int64_t c = 0; c < channels; c++)
            for (int64_t j = 0; j < cols; j++)
                x[c * cols + j] = x[c * cols + j] / a[c];
        return;
    }
    int targets[3] = {item->targets[0], item->targets[1], item->weight_scale};
    for (int k = 0; k < 3; k++) {
        if (targets[k] < 0)
            continue;
        rt_tensor *t = rt_weights_get(w, g->values[targets[k]]->name);
        int64_t cols = t->dims[t->rank - 1], rows = rt_tensor_numel(t) / cols;
        float *x = t->data;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < channels; c++)
                x[r * cols + item->start + c] *= a[c];
    }
}

static void remove_weight(rt_weights *w, const char *name)
{
    for (int i = 0; i < w->count; i++) {
        if (strcmp(w->names[i], name) != 0)
            continue;
        free(w->names[i]);
        rt_tensor_free(w->tensors[i]);
        memmove(&w->names[i], &w->names[i + 1], sizeof *w->names * (size_t)(w->count - i - 1));
        memmove(&w->tensors[i], &w->tensors[i + 1], sizeof *w->tensors * (size_t)(w->count - i - 1));
        w->count--;
        return;
    }
}

static int plan_all(const ir_graph *g, const rt_weights *w, fold_item *items, int *n, ir_diag *d)
{
    *n = 0;
    for (int id = 0; id < g->nvalues; id++) {
        const ir_value *v = g->values[id];
        if (v->op != IR_OP_QA_SCALE)
            continue;
        fold_item item = {.scale = id, .alpha = v->ops[1], .invert = ir_attr_int(v, "invert") != 0};
        if (check_alpha(g, w, item.alpha, d) != 0)
            return -1;
        int rc = item.invert ? plan_weight(g, w, &item, d) : plan_source(g, w, &item, d);
        if (rc != 0)
            return -1;
        items[(*n)++] = item;
    }
    return 0;
}

int pass_fold_quadapter(ir_graph *g, rt_weights *weights, ir_diag *d)
{
    fold_item *items = malloc(sizeof *items * (size_t)(g->nvalues ? g->nvalues : 1));
    qg_uses u = {0};
    if (!items || qg_uses_build(g, &u) != 0) {
        free(items);
        ir_diag_error(d, (ir_loc){0}, "fold-quadapter: out of memory");
        return -1;
    }
    int n = 0;
    int rc = plan_all(g, weights, items, &n, d);
    if (rc == 0 && !alphas_private(g, &u, items, n)) {
        ir_diag_error(d, (ir_loc){0}, "fold-quadapter: an alpha param is used outside qa.scale, so it cannot be "
                      "removed");
        rc = -1;
    }
    qg_uses_free(&u);
    if (rc != 0) {
        free(items);
        return -1;
    }

    /* Every weight change reads alpha, so the alphas go last. */
    for (int i = 0; i < n; i++)
        apply_item(g, weights, &items[i]);
    for (int i = 0; i < n; i++) {
        ir_value *s = g->values[items[i].scale];
        ir_replace_uses(g, s->id, s->ops[0]);
        s->dead = true;
    }
    for (int i = 0; i < n; i++) {
        ir_value *a = g->values[items[i].alpha];
        if (!a->dead)
            remove_weight(weights, a->name);
        a->dead = true;
    }
    free(items);
    if (ir_graph_compact(g) != 0) {
        ir_diag_error(d, (ir_loc){0}, "fold-quadapter: the graph has a cycle");
        return -1;
    }
    return 0;
}

int64_t pass_quadapter_clamp_alpha(const ir_graph *g, rt_weights *weights, ir_diag *d)
{
    int64_t clamped = 0;
    for (int id = 0; id < g->nvalues; id++) {
        const ir_value *v = g->values[id];
        if (v->op != IR_OP_QA_SCALE || ir_attr_int(v, "invert") != 0)
            continue;
        const ir_value *alpha = g->values[v->ops[1]];
        rt_tensor *t = rt_weights_get(weights, alpha->name);
        if (!t || t->dtype != IR_F32) {
            ir_diag_error(d, alpha->loc, "missing f32 weight '%s' for Quadapter alpha @%s", alpha->name,
                          alpha->name);
            return -1;
        }
        float *a = t->data;
        for (int64_t c = 0; c < rt_tensor_numel(t); c++) {
            /* NaN also becomes the minimum, so one bad step cannot stick. */
            if (!(a[c] >= PASS_QUADAPTER_MIN_ALPHA)) {
                a[c] = PASS_QUADAPTER_MIN_ALPHA;
                clamped++;
            }
        }
    }
    return clamped;
}
