/* The insert-fakequant pass: puts fq.act on the chosen activations and
 * fq.weight on the weights of the linear layers and the LM head, each with
 * new params <site>.scale and <site>.zero_point (init ones and zeros) that
 * the calibrate step fills in.
 *
 * Options:
 *   bits=w8a8            weight and activation bit widths, each 2 to 8
 *   weights=per-channel  or per-tensor: one weight scale per output channel
 *   weight-scheme=symmetric, act-scheme=asymmetric (either may be swapped)
 *   narrow-range=true    symmetric weights use [-(2^(b-1) - 1), 2^(b-1) - 1]
 *   sites=linear;lm_head the quantized locations, ';'-separated:
 *     linear     input and weight of every linear op (c_attn, c_proj, c_fc,
 *                mlp c_proj in GPT-2)
 *     lm_head    input and weight of every matmul with a param operand
 *     attention  both operands of every matmul of two activations (q, k,
 *                then the softmax output and v)
 *     residual   the result of every add of an activation and a linear's
 *                output (the residual sums)
 *     embedding  the sum of the token and position embeddings (the result
 *                of the embedding op when no add follows it)
 *     %NAME      the value NAME itself
 * A kind given in sites= that matches nothing is an error; the default
 * list is not checked, so graphs without an LM head need no option.
 * A linear's quantizer sites are named after its weight param
 * (h.0.attn.c_attn.input, h.0.attn.c_attn.weight), the LM head's after its
 * value (logits.input, logits.weight), and the others after the quantized
 * value (h0.qh, h0.x1). Operands that are already fake-quantized are left
 * alone, so the pass may run twice. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/quant.h"
#include "passes/manager.h"
#include "passes/quant_graph.h"

static_assert(PASS_INSERT_FAKEQUANT < PASS_COUNT, "pass_insert_fakequant needs an entry in passes/passes.def");

enum {
    SITE_LINEAR = 1 << 0,
    SITE_LM_HEAD = 1 << 1,
    SITE_ATTENTION = 1 << 2,
    SITE_RESIDUAL = 1 << 3,
    SITE_EMBEDDING = 1 << 4,
};

static const struct {
    const char *name;
    unsigned bit;
} site_kinds[] = {
    {"linear", SITE_LINEAR},       {"lm_head", SITE_LM_HEAD},     {"attention", SITE_ATTENTION},
    {"residual", SITE_RESIDUAL},   {"embedding", SITE_EMBEDDING},
};
#define NKINDS (int)(sizeof site_kinds / sizeof site_kinds[0])

typedef struct fq_config {
    int weight_bits, act_bits;
    bool per_channel;
    bool weight_symmetric, act_symmetric;
    bool narrow;
    unsigned kinds;
} fq_config;

typedef struct fq_state {
    ir_graph *g;
    ir_diag *d;
    fq_config cfg;
    int matched[NKINDS];
} fq_state;

/* ---- options ---- */

static ir_loc no_loc(void)
{
    return (ir_loc){0};
}

/* Parses "w<bits>a<bits>". */
static int parse_bits(const char *text, fq_config *cfg, ir_diag *d)
{
    int wbits, abits, used = 0;
    if (sscanf(text, "w%da%d%n", &wbits, &abits, &used) != 2 || text[used] != '\0') {
        ir_diag_error(d, no_loc(), "invalid bits '%s'; write w<weight bits>a<activation bits>, for example w8a8 "
                      "or w4a8", text);
        return -1;
    }
    if (wbits < IR_QUANT_MIN_BITS || wbits > IR_QUANT_MAX_BITS || abits < IR_QUANT_MIN_BITS ||
        abits > IR_QUANT_MAX_BITS) {
        bool weight_bad = wbits < IR_QUANT_MIN_BITS || wbits > IR_QUANT_MAX_BITS;
        ir_diag_error(d, no_loc(), "%s bits %d in '%s' are out of range; use %d to %d",
                      weight_bad ? "weight" : "activation", weight_bad ? wbits : abits, text, IR_QUANT_MIN_BITS,
                      IR_QUANT_MAX_BITS);
        return -1;
    }
    cfg->weight_bits = wbits;
    cfg->act_bits = abits;
    return 0;
}

static int parse_scheme(const char *key, const char *text, bool *symmetric, ir_diag *d)
{
    if (strcmp(text, "symmetric") == 0 || strcmp(text, "asymmetric") == 0) {
        *symmetric = text[0] == 's';
        return 0;
    }
    ir_diag_error(d, no_loc(), "invalid %s '%s'; use symmetric or asymmetric", key, text);
    return -1;
}

static int parse_config(const pass_options *opts, fq_config *cfg, ir_diag *d)
{
    *cfg = (fq_config){8, 8, true, true, false, true, 0};
    if (parse_bits(pass_option_str(opts, "bits", "w8a8"), cfg, d) != 0)
        return -1;
    const char *granularity = pass_option_str(opts, "weights", "per-channel");
    if (strcmp(granularity, "per-channel") != 0 && strcmp(granularity, "per-tensor") != 0) {
        ir_diag_error(d, no_loc(), "invalid weights '%s'; use per-channel or per-tensor", granularity);
        return -1;
    }
    cfg->per_channel = strcmp(granularity, "per-channel") == 0;
    if (parse_scheme("weight-scheme", pass_option_str(opts, "weight-scheme", "symmetric"), &cfg->weight_symmetric,
                     d) != 0 ||
        parse_scheme("act-scheme", pass_option_str(opts, "act-scheme", "asymmetric"), &cfg->act_symmetric, d) != 0)
        return -1;
    cfg->narrow = pass_option_bool(opts, "narrow-range", true) && cfg->weight_symmetric;
    return 0;
}

/* ---- inserting quantizers ---- */

/* Adds the scale and zero-point params of a quantizer named `site`, with
 * `channels` elements (0 for one scalar), and the quantizer `op` of x with
 * them, named <site>.fq. Returns the quantizer's id. */
static int add_quantizer(fq_state *s, ir_op op, int x, const char *site, int64_t channels, const ir_attrs *attrs)
{
    const ir_value *xv = s->g->values[x];
    ir_type type = {xv->type.dtype, channels ? 1 : 0, {channels}};
    char name[512];
    snprintf(name, sizeof name, "%s.scale", site);
    int scale = qg_add_param(s->g, name, type, "ones", xv->loc, s->d);
    snprintf(name, sizeof name, "%s.zero_point", site);
    int zero_point = qg_add_param(s->g, name, type, "zeros", xv->loc, s->d);
    if (scale < 0 || zero_point < 0)
        return -1;
    int operands[3] = {x, scale, zero_point};
    snprintf(name, sizeof name, "%s.fq", site);
    return ir_add(s->g, op, name, operands, 3, attrs, xv->loc);
}

/* Adds fq.act of value x for quantizer `site`. */
static int add_fq_act(fq_state *s, int x, const char *site)
{
    ir_attrs attrs = ir_attrs_for(IR_OP_FQ_ACT);
    ir_attrs_int(&attrs, "bits", s->cfg.act_bits);
    ir_attrs_int(&attrs, "symmetric", s->cfg.act_symmetric);
    ir_attrs_int(&attrs, "narrow", 0);
    return add_quantizer(s, IR_OP_FQ_ACT, x, site, 0, &attrs);
}

/* Adds fq.weight of weight w for quantizer `site`; output channels lie
 * along `axis`. */
static int add_fq_weight(fq_state *s, int w, const char *site, int axis)
{
    ir_attrs attrs = ir_attrs_for(IR_OP_FQ_WEIGHT);
    ir_attrs_int(&attrs, "axis", axis);
    ir_attrs_int(&attrs, "bits", s->cfg.weight_bits);
    ir_attrs_int(&attrs, "symmetric", s->cfg.weight_symmetric);
    ir_attrs_int(&attrs, "narrow", s->cfg.narrow);
    int64_t channels = s->cfg.per_channel ? s->g->values[w]->type.dims[axis] : 0;
    return add_quantizer(s, IR_OP_FQ_WEIGHT, w, site, channels, &attrs);
}

static bool is_quantized(const ir_graph *g, int id)
{
    return ir_is_fake_quant(g->values[id]->op);
}

/* Quantizes operand `slot` of `user` as an activation. */
static int quantize_operand(fq_state *s, int user, int slot, const char *site)
{
    int x = s->g->values[user]->ops[slot];
    if (is_quantized(s->g, x))
        return 0;
    int q = add_fq_act(s, x, site);
    if (q < 0)
        return -1;
    s->g->values[user]->ops[slot] = q;
    return 0;
}

/* Quantizes value x as an activation for all of its users. */
static int quantize_value(fq_state *s, int x)
{
    const ir_value *xv = s->g->values[x];
    if (is_quantized(s->g, x))
        return 0;
    for (int id = x + 1; id < s->g->nvalues; id++)
        if (is_quantized(s->g, id) && s->g->values[id]->ops[0] == x)
            return 0;
    int q = add_fq_act(s, x, xv->name);
    if (q < 0)
        return -1;
    ir_replace_uses(s->g, x, q);
    s->g->values[q]->ops[0] = x; /* ir_replace_uses rewrote the quantizer's own operand */
    return 0;
}

/* Quantizes operand `slot` of `user` as a weight with output channels along
 * `axis`. */
static int quantize_weight(fq_state *s, int user, int slot, const char *site, int axis)
{
    int w = s->g->values[user]->ops[slot];
    if (is_quantized(s->g, w))
        return 0;
    int q = add_fq_weight(s, w, site, axis);
    if (q < 0)
        return -1;
    s->g->values[user]->ops[slot] = q;
    return 0;
}

/* ---- finding the sites ---- */

static int kind_index(unsigned bit)
{
    for (int i = 0; i < NKINDS; i++)
        if (site_kinds[i].bit == bit)
            return i;
    return 0;
}

static int visit_linear(fq_state *s, int id)
{
    char prefix[400], site[512];
    int param = qg_param_of(s->g, s->g->values[id]->ops[1]);
    if (param >= 0)
        qg_weight_site(s->g, param, prefix, sizeof prefix);
    else
        snprintf(prefix, sizeof prefix, "%s", s->g->values[id]->name);
    s->matched[kind_index(SITE_LINEAR)]++;
    snprintf(site, sizeof site, "%s.input", prefix);
    if (quantize_operand(s, id, 0, site) != 0)
        return -1;
    snprintf(site, sizeof site, "%s.weight", prefix);
    /* Conv1D layout [in, out]: the output channels are the last axis. */
    return quantize_weight(s, id, 1, site, 1);
}

static int visit_matmul(fq_state *s, int id)
{
    const ir_value *v = s->g->values[id];
    bool weight = qg_param_of(s->g, v->ops[1]) >= 0;
    char site[512];
    if (weight && (s->cfg.kinds & SITE_LM_HEAD)) {
        s->matched[kind_index(SITE_LM_HEAD)]++;
        snprintf(site, sizeof site, "%s.input", v->name);
        if (quantize_operand(s, id, 0, site) != 0)
            return -1;
        snprintf(site, sizeof site, "%s.weight", v->name);
        /* The output channels of x W^T are W's rows, those of x W its
         * columns. */
        bool transposed = ir_attr_int(v, "transpose_b") != 0;
        int rank = s->g->values[v->ops[1]]->type.rank;
        return quantize_weight(s, id, 1, site, transposed ? rank - 2 : rank - 1);
    }
    bool activations = qg_param_of(s->g, v->ops[0]) < 0 && !weight;
    if (activations && (s->cfg.kinds & SITE_ATTENTION)) {
        s->matched[kind_index(SITE_ATTENTION)]++;
        for (int slot = 0; slot < 2; slot++) {
            int x = s->g->values[id]->ops[slot];
            if (quantize_operand(s, id, slot, s->g->values[x]->name) != 0)
                return -1;
        }
    }
    return 0;
}

static bool is_activation(const ir_graph *g, int id)
{
    ir_op op = g->values[id]->op;
    return op != IR_OP_PARAM && op != IR_OP_CONST && qg_param_of(g, id) < 0;
}

/* A residual sum adds an activation to the output of a linear (the
 * attention or MLP projection), possibly fake-quantized. */
static bool is_residual_sum(const ir_graph *g, const ir_value *v)
{
    if (v->op != IR_OP_ADD || !is_activation(g, v->ops[0]) || !is_activation(g, v->ops[1]))
        return false;
    for (int k = 0; k < 2; k++) {
        int x = v->ops[k];
        if (is_quantized(g, x))
            x = g->values[x]->ops[0];
        if (g->values[x]->op == IR_OP_LINEAR)
            return true;
    }
    return false;
}

/* Returns the embedding output to quantize for embedding op id: the add
 * that is its only user, or the embedding itself. */
static int embedding_output(const ir_graph *g, const qg_uses *uses, int id)
{
    if (uses->count[id] == 1 && uses->outputs[id] == 0 && g->values[uses->items[id][0].user]->op == IR_OP_ADD)
        return uses->items[id][0].user;
    return id;
}

static int visit_values(fq_state *s)
{
    qg_uses uses;
    if (qg_uses_build(s->g, &uses) != 0) {
        ir_diag_error(s->d, no_loc(), "out of memory");
        return -1;
    }
    int n = s->g->nvalues; /* values added on the way are quantizers */
    int rc = 0;
    for (int id = 0; id < n && rc == 0; id++) {
        const ir_value *v = s->g->values[id];
        if (v->op == IR_OP_LINEAR && (s->cfg.kinds & SITE_LINEAR))
            rc = visit_linear(s, id);
        else if (v->op == IR_OP_MATMUL)
            rc = visit_matmul(s, id);
        else if ((s->cfg.kinds & SITE_RESIDUAL) && is_residual_sum(s->g, v)) {
            s->matched[kind_index(SITE_RESIDUAL)]++;
            rc = quantize_value(s, id);
        } else if (v->op == IR_OP_EMBEDDING && (s->cfg.kinds & SITE_EMBEDDING)) {
            s->matched[kind_index(SITE_EMBEDDING)]++;
            rc = quantize_value(s, embedding_output(s->g, &uses, id));
        }
    }
    qg_uses_free(&uses);
    return rc;
}

/* Quantizes the value named by a "%NAME" entry of sites. */
static int quantize_named(fq_state *s, const char *entry)
{
    int id = ir_find(s->g, entry + 1);
    if (id < 0) {
        ir_diag_error(s->d, no_loc(), "sites entry '%s' names no value in graph '%s'", entry, s->g->name);
        return -1;
    }
    const ir_value *v = s->g->values[id];
    if (!is_activation(s->g, id) || (v->type.dtype != IR_F32 && v->type.dtype != IR_F16 &&
                                     v->type.dtype != IR_BF16)) {
        ir_diag_error(s->d, v->loc, "sites entry '%s' is not a floating-point activation", entry);
        return -1;
    }
    return quantize_value(s, id);
}

/* Splits `sites` at ';' into kinds (in s->cfg.kinds) and %NAME entries,
 * which it quantizes right away. */
static int apply_sites(fq_state *s, const char *sites)
{
    char *copy = strdup(sites);
    if (!copy) {
        ir_diag_error(s->d, no_loc(), "out of memory");
        return -1;
    }
    int rc = 0;
    char *save = NULL;
    for (char *entry = strtok_r(copy, ";", &save); entry && rc == 0; entry = strtok_r(NULL, ";", &save)) {
        if (entry[0] == '%') {
            rc = quantize_named(s, entry);
            continue;
        }
        int kind = -1;
        for (int i = 0; i < NKINDS; i++)
            if (strcmp(entry, site_kinds[i].name) == 0)
                kind = i;
        if (kind < 0) {
            ir_diag_error(s->d, no_loc(), "unknown sites entry '%s'; use linear, lm_head, attention, residual, "
                          "embedding or %%VALUE, separated by ';'", entry);
            rc = -1;
        } else {
            s->cfg.kinds |= site_kinds[kind].bit;
        }
    }
    free(copy);
    return rc;
}

int pass_insert_fakequant(ir_graph *g, const pass_options *opts, ir_diag *d)
{
    fq_state s = {g, d, {0}, {0}};
    if (parse_config(opts, &s.cfg, d) != 0)
        return -1;
    const char *sites = pass_option_str(opts, "sites", NULL);
    if (apply_sites(&s, sites ? sites : "linear;lm_head") != 0)
        return -1;
    if (visit_values(&s) != 0)
        return -1;
    /* Only a kind that the option names must match something. */
    for (int i = 0; sites && i < NKINDS; i++) {
        if ((s.cfg.kinds & site_kinds[i].bit) && s.matched[i] == 0) {
            ir_diag_error(d, no_loc(), "sites entry '%s' matches no value in graph '%s'", site_kinds[i].name,
                          g->name);
            return -1;
        }
    }
    return 0;
}
