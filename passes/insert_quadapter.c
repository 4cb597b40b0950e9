/* The insert-quadapter pass (Park et al., "Quadapter: Adapter for GPT-2
 * Quantization", Findings of EMNLP 2022): one learned scale per channel,
 * alpha, between an activation and the linear layers that read it. The
 * activation becomes qa.scale(x, alpha) = alpha * x, the input of the
 * activation quantizer, and each linear's weight W[in, out] becomes
 * qa.scale{axis=0, invert=1}(W, alpha), input row c divided by alpha_c, so
 * in floating point the model computes the same function. fold-quadapter
 * (passes/quantize.h) later moves alpha into the producer of x and into W.
 *
 * alpha is the param <site>.quadapter.alpha itself, f32[C] with init ones.
 * It must stay positive: training clamps it to [1e-4, inf) after each
 * update with pass_quadapter_clamp_alpha (passes/quantize.h).
 *
 * Sites, found structurally:
 *   ln      a layernorm whose every use is a linear's input, directly or
 *           through one fq.act (LN1 -> c_attn and LN2 -> c_fc in GPT-2);
 *           its gamma and beta must have no other use. The site is named
 *           after gamma: h.0.ln_1.
 *   attn-v  the input of a linear that traces back through the attention
 *           to the v columns of another linear (V -> c_proj), named after
 *           the consuming linear: h.0.attn.c_proj.
 * Every weight divided by alpha must be a param read by these linears only.
 *
 * Option sites= lists ';'-separated entries: ln, attn-v, or a glob
 * (fnmatch(3)) over site names such as h.*.ln_1. Default: ln. An entry
 * given in sites= that selects no site is an error. Sites that already
 * have a qa.scale are not candidates, so a second run with the default
 * adds nothing. */
#include <assert.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/quant.h"
#include "passes/manager.h"
#include "passes/quant_graph.h"

static_assert(PASS_INSERT_QUADAPTER < PASS_COUNT, "pass_insert_quadapter needs an entry in passes/passes.def");

#define MAX_LINKS 16

typedef enum site_kind { KIND_LN, KIND_ATTN_V } site_kind;

/* One operand slot to rewire: values[user]->ops[slot]. */
typedef struct link {
    int user;
    int slot;
} link;

typedef struct qa_site {
    site_kind kind;
    char name[400];
    int source;                 /* the activation that alpha scales */
    int nconsumers;
    link consumers[MAX_LINKS];  /* slots that read source, to read alpha * source */
    int nweights;
    link weights[MAX_LINKS];    /* slots that read a weight param W, to read W / alpha */
    bool selected;
} qa_site;

typedef struct qa_sites {
    int count, cap;
    qa_site *items;
} qa_sites;

static ir_loc no_loc(void)
{
    return (ir_loc){0};
}

/* ---- finding candidates ---- */

static bool single_use(const qg_uses *u, int id)
{
    return u->count[id] == 1 && u->outputs[id] == 0;
}

/* Adds linear `lin`'s weight slot to site->weights. The weight must be a
 * param, read directly or through fq.weight, with no use outside these
 * linears (checked by the caller once all are collected). */
static bool add_weight_link(const ir_graph *g, qa_site *site, int lin)
{
    int w = g->values[lin]->ops[1];
    link l = {lin, 1};
    if (g->values[w]->op == IR_OP_FQ_WEIGHT) {
        l = (link){w, 0};
        w = g->values[w]->ops[0];
    }
    if (g->values[w]->op != IR_OP_PARAM || site->nweights == MAX_LINKS)
        return false;
    site->weights[site->nweights++] = l;
    return true;
}

/* Adds the linear or fq.act use (user, slot) of the source to the site:
 * a linear reading it as its input, or an fq.act whose every use is such a
 * linear. */
static bool add_consumer(const ir_graph *g, const qg_uses *u, qa_site *site, qg_use use)
{
    const ir_value *user = g->values[use.user];
    if (use.slot != 0 || site->nconsumers == MAX_LINKS)
        return false;
    if (user->op == IR_OP_LINEAR) {
        site->consumers[site->nconsumers++] = (link){use.user, 0};
        return add_weight_link(g, site, use.user);
    }
    if (user->op != IR_OP_FQ_ACT || u->outputs[use.user] != 0 || u->count[use.user] == 0)
        return false;
    for (int i = 0; i < u->count[use.user]; i++) {
        qg_use inner = u->items[use.user][i];
        if (inner.slot != 0 || g->values[inner.user]->op != IR_OP_LINEAR ||
            !add_weight_link(g, site, inner.user))
            return false;
    }
    site->consumers[site->nconsumers++] = (link){use.user, 0};
    return true;
}

/* True when each weight param of the site is read only by the site's
 * weight slots. */
static bool weights_private(const ir_graph *g, const qg_uses *u, const qa_site *site)
{
    for (int i = 0; i < site->nweights; i++) {
        int w = g->values[site->weights[i].user]->ops[site->weights[i].slot];
        int reads = 0;
        for (int j = 0; j < site->nweights; j++)
            reads += g->values[site->weights[j].user]->ops[site->weights[j].slot] == w;
        if (u->count[w] != reads || u->outputs[w] != 0)
            return false;
    }
    return true;
}

static bool find_ln_site(const ir_graph *g, const qg_uses *u, int id, qa_site *site)
{
    const ir_value *v = g->values[id];
    if (v->op != IR_OP_LAYERNORM || u->count[id] == 0 || u->outputs[id] != 0)
        return false;
    int gamma = v->ops[1], beta = v->ops[2];
    if (g->values[gamma]->op != IR_OP_PARAM || g->values[beta]->op != IR_OP_PARAM || gamma == beta ||
        !single_use(u, gamma) || !single_use(u, beta))
        return false;
    *site = (qa_site){.kind = KIND_LN, .source = id};
    qg_weight_site(g, gamma, site->name, sizeof site->name);
    for (int i = 0; i < u->count[id]; i++)
        if (!add_consumer(g, u, site, u->items[id][i]))
            return false;
    return weights_private(g, u, site);
}

/* The input of linear `lin` (or of the fq.act in front of it) on the
 * attention value path, with every value along the path used once, so that
 * scaling v's columns changes nothing else. */
static bool find_value_site(const ir_graph *g, const qg_uses *u, int lin, qa_site *site)
{
    const ir_value *v = g->values[lin];
    if (v->op != IR_OP_LINEAR)
        return false;
    int x = v->ops[0];
    if (g->values[x]->op == IR_OP_FQ_ACT)
        x = g->values[x]->ops[0];
    qg_value_path path;
    if (!single_use(u, x) || !qg_trace_value_path(g, x, &path))
        return false;
    for (int at = x; at != path.producer; at = g->values[at]->ops[g->values[at]->op == IR_OP_MATMUL ? 1 : 0])
        if (!single_use(u, at))
            return false;
    const ir_value *producer = g->values[path.producer];
    for (int k = 1; k < producer->nops; k++)
        if (qg_param_of(g, producer->ops[k]) < 0)
            return false;
    *site = (qa_site){.kind = KIND_ATTN_V, .source = x};
    int param = qg_param_of(g, v->ops[1]);
    if (param < 0)
        return false;
    qg_weight_site(g, param, site->name, sizeof site->name);
    if (!add_consumer(g, u, site, u->items[x][0]))
        return false;
    return weights_private(g, u, site);
}

static int push_site(qa_sites *list, const qa_site *site)
{
    if (list->count == list->cap) {
        int cap = list->cap ? 2 * list->cap : 16;
        qa_site *grown = realloc(list->items, sizeof *grown * (size_t)cap);
        if (!grown)
            return -1;
        list->items = grown;
        list->cap = cap;
    }
    list->items[list->count++] = *site;
    return 0;
}

static bool has_quadapter(const ir_graph *g, const qg_uses *u, int id)
{
    for (int i = 0; i < u->count[id]; i++)
        if (g->values[u->items[id][i].user]->op == IR_OP_QA_SCALE)
            return true;
    return false;
}

static int find_sites(const ir_graph *g, qa_sites *out, ir_diag *d)
{
    qg_uses u;
    if (qg_uses_build(g, &u) != 0) {
        ir_diag_error(d, no_loc(), "out of memory");
        return -1;
    }
    int rc = 0;
    for (int id = 0; id < g->nvalues && rc == 0; id++) {
        qa_site site;
        bool found = find_ln_site(g, &u, id, &site) || find_value_site(g, &u, id, &site);
        if (found && !has_quadapter(g, &u, site.source))
            rc = push_site(out, &site);
    }
    qg_uses_free(&u);
    if (rc != 0)
        ir_diag_error(d, no_loc(), "out of memory");
    return rc;
}

/* ---- selecting and applying ---- */

/* Marks the sites that `spec` selects. When `required`, an entry that
 * selects nothing is an error. */
static int select_sites(const ir_graph *g, qa_sites *sites, const char *spec, bool required, ir_diag *d)
{
    char *copy = strdup(spec);
    if (!copy) {
        ir_diag_error(d, no_loc(), "out of memory");
        return -1;
    }
    int rc = 0;
    char *save = NULL;
    for (char *entry = strtok_r(copy, ";", &save); entry && rc == 0; entry = strtok_r(NULL, ";", &save)) {
        int matched = 0;
        for (int i = 0; i < sites->count; i++) {
            qa_site *s = &sites->items[i];
            bool match = strcmp(entry, "ln") == 0 ? s->kind == KIND_LN
                       : strcmp(entry, "attn-v") == 0 ? s->kind == KIND_ATTN_V
                       : fnmatch(entry, s->name, 0) == 0;
            if (match) {
                s->selected = true;
                matched++;
            }
        }
        if (matched == 0 && required) {
            ir_diag_error(d, no_loc(), "sites entry '%s' selects no layernorm-to-linear or attention-value site "
                          "in graph '%s'; use ln, attn-v or a glob over site names such as h.*.ln_1",
                          entry, g->name);
            rc = -1;
        }
    }
    free(copy);
    return rc;
}

static int add_scale(ir_graph *g, int x, int alpha, int axis, bool invert, ir_loc loc)
{
    ir_attrs attrs = ir_attrs_for(IR_OP_QA_SCALE);
    ir_attrs_int(&attrs, "axis", axis);
    ir_attrs_int(&attrs, "invert", invert);
    int operands[2] = {x, alpha};
    char name[512];
    snprintf(name, sizeof name, "%s.qa", g->values[x]->name);
    return ir_add(g, IR_OP_QA_SCALE, name, operands, 2, &attrs, loc);
}

static int apply_site(ir_graph *g, const qa_site *site, ir_diag *d)
{
    const ir_value *src = g->values[site->source];
    ir_type type = {src->type.dtype, 1, {src->type.dims[src->type.rank - 1]}};
    char name[512];
    snprintf(name, sizeof name, "%s.quadapter.alpha", site->name);
    int alpha = qg_add_param(g, name, type, "ones", src->loc, d);
    if (alpha < 0)
        return -1;
    int scaled = add_scale(g, site->source, alpha, -1, false, src->loc);
    if (scaled < 0)
        return -1;
    for (int i = 0; i < site->nconsumers; i++)
        g->values[site->consumers[i].user]->ops[site->consumers[i].slot] = scaled;

    /* One W / alpha per weight param, shared by the slots that read it. */
    int divided_from[MAX_LINKS], divided[MAX_LINKS], ndivided = 0;
    for (int i = 0; i < site->nweights; i++) {
        int *slot = &g->values[site->weights[i].user]->ops[site->weights[i].slot];
        int found = -1;
        for (int j = 0; j < ndivided; j++)
            if (divided_from[j] == *slot)
                found = divided[j];
        if (found < 0) {
            found = add_scale(g, *slot, alpha, 0, true, g->values[*slot]->loc);
            if (found < 0)
                return -1;
            divided_from[ndivided] = *slot;
            divided[ndivided++] = found;
        }
        *slot = found;
    }
    return 0;
}

int pass_insert_quadapter(ir_graph *g, const pass_options *opts, ir_diag *d)
{
    qa_sites sites = {0};
    const char *spec = pass_option_str(opts, "sites", NULL);
    int rc = find_sites(g, &sites, d);
    if (rc == 0)
        rc = select_sites(g, &sites, spec ? spec : "ln", spec != NULL, d);
    for (int i = 0; i < sites.count && rc == 0; i++)
        if (sites.items[i].selected)
            rc = apply_site(g, &sites.items[i], d);
    free(sites.items);
    return rc;
}
