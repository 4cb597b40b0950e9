/* The model session: loads weights and their hyperparameters, checks them
 * against the model's params, and compiles and runs one forward graph per
 * sequence length. Weight-file and hyperparameter handling live here, the
 * runs in model_run.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes/manager.h"
#include "runtime/llmc.h"
#include "runtime/model_internal.h"
#include "runtime/quantize_run.h"
#include "runtime/safetensors.h"

/* Hparams the session sets itself, never taken from the weights. */
static bool is_session_hparam(const char *name)
{
    return strcmp(name, "B") == 0 || strcmp(name, "T") == 0 || strcmp(name, "n_cache") == 0;
}

static int add_define(rt_model *m, const char *name, int64_t value)
{
    fe_define *grown = realloc(m->defines, sizeof *grown * (size_t)(m->ndefines + 1));
    char *copy = strdup(name);
    if (!grown || !copy) {
        free(copy);
        if (grown)
            m->defines = grown;
        return -1;
    }
    m->defines = grown;
    m->defines[m->ndefines].name = copy;
    m->defines[m->ndefines].value = value;
    m->ndefines++;
    return 0;
}

static const fe_define *find_define(const fe_define *defines, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(defines[i].name, name) == 0)
            return &defines[i];
    return NULL;
}

static bool is_float_dtype(ir_dtype t)
{
    return t == IR_F32 || t == IR_F16 || t == IR_BF16;
}

/* The hparam names a model file declares. */
typedef struct hparam_names {
    char **names;
    int count;
} hparam_names;

static bool model_declares(const hparam_names *h, const char *name)
{
    for (int i = 0; i < h->count; i++)
        if (strcmp(h->names[i], name) == 0)
            return true;
    return false;
}

/* ---- weights ---- */

/* Reads an llm.c checkpoint (recognized by its magic number) or a
 * safetensors file. An llm.c header becomes metadata entries with the
 * names of the GPT-2 hparams. */
static rt_weights *read_weights(const char *path, ir_diag *d)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        ir_diag_file_error(d, path, "cannot open weights file: %s", strerror(errno));
        return NULL;
    }
    unsigned char magic[4] = {0};
    size_t got = fread(magic, 1, sizeof magic, f);
    fclose(f);
    int32_t word = (int32_t)((uint32_t)magic[0] | (uint32_t)magic[1] << 8 | (uint32_t)magic[2] << 16 |
                             (uint32_t)magic[3] << 24);
    if (got != sizeof magic || word != RT_LLMC_CHECKPOINT_MAGIC)
        return rt_safetensors_read(path, d);

    rt_llmc_config config;
    rt_weights *w = rt_llmc_read_checkpoint(path, &config, d);
    if (!w)
        return NULL;
    if (rt_llmc_config_to_meta(w, &config, d, path) != 0) {
        rt_weights_free(w);
        return NULL;
    }
    return w;
}

/* Adds a define for every metadata entry that names an hparam the model
 * declares, after checking it against the explicit -D defines. */
static int apply_weight_hparams(rt_model *m, const hparam_names *declared, const rt_model_options *o, ir_diag *d)
{
    for (int i = 0; i < m->weights->nmeta; i++) {
        const char *key = m->weights->meta_keys[i], *text = m->weights->meta_values[i];
        if (!model_declares(declared, key) || is_session_hparam(key))
            continue;
        char *end;
        errno = 0;
        long long value = strtoll(text, &end, 10);
        if (*text == '\0' || *end != '\0' || errno == ERANGE) {
            ir_diag_file_error(d, o->weights_path, "metadata entry %s = '%s' is not an integer; hyperparameters in "
                               "the metadata must be decimal integers", key, text);
            return -1;
        }
        /* Every -D of this name must agree, not only the first: the
         * frontend applies the last one. */
        bool has_define = false;
        for (int j = 0; j < o->ndefines; j++) {
            if (strcmp(o->defines[j].name, key) != 0)
                continue;
            has_define = true;
            if (o->defines[j].value != value) {
                ir_diag_file_error(d, o->weights_path, "the weights were saved with %s=%lld but -D %s=%lld was "
                                   "given; remove the -D or use weights with %s=%lld", key, value, key,
                                   (long long)o->defines[j].value, key, (long long)o->defines[j].value);
                return -1;
            }
        }
        if (!has_define && add_define(m, key, value) != 0) {
            ir_diag_file_error(d, o->weights_path, "out of memory applying hyperparameter %s", key);
            return -1;
        }
    }
    return 0;
}

/* Appends "name" to a comma-separated list, keeping at most 20 names and
 * counting the rest. */
static void list_name(char *list, size_t cap, int *count, const char *name)
{
    size_t used = strlen(list);
    if (++*count <= 20)
        snprintf(list + used, cap - used, "%s%s", used ? ", " : "", name);
}

static void finish_list(char *list, size_t cap, int count)
{
    size_t used = strlen(list);
    if (count > 20)
        snprintf(list + used, cap - used, " and %d more", count - 20);
}

/* Checks that every param of g has a tensor of its shape and a float dtype
 * (any float dtype converts to the param's), and that no tensor is left
 * over. Reports every problem and returns the number of problems. */
static int check_params(const rt_model *m, const ir_graph *g, const char *path, ir_diag *d)
{
    enum { LIST_CAP = 8192 };
    char *missing = calloc(LIST_CAP, 1), *extra = calloc(LIST_CAP, 1);
    int nmissing = 0, nextra = 0, problems = 0;
    if (!missing || !extra) {
        free(missing);
        free(extra);
        ir_diag_file_error(d, path, "out of memory checking the weights");
        return 1;
    }
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (v->op != IR_OP_PARAM)
            continue;
        const rt_tensor *t = rt_weights_get(m->weights, v->name);
        if (!t) {
            list_name(missing, LIST_CAP, &nmissing, v->name);
            continue;
        }
        ir_type have = {t->dtype, t->rank, {0}};
        memcpy(have.dims, t->dims, sizeof(int64_t) * (size_t)t->rank);
        bool float_ok = !is_float_dtype(v->type.dtype) || is_float_dtype(t->dtype);
        bool same = have.rank == v->type.rank;
        for (int k = 0; same && k < have.rank; k++)
            same = have.dims[k] == v->type.dims[k];
        if (!same || !float_ok || (!is_float_dtype(v->type.dtype) && t->dtype != v->type.dtype)) {
            char want[128], got[128];
            ir_diag_file_error(d, path, "tensor '%s' is %s but the model expects %s", v->name,
                               ir_type_str(&have, got, sizeof got), ir_type_str(&v->type, want, sizeof want));
            problems++;
        }
    }
    for (int i = 0; i < m->weights->count; i++) {
        int id = ir_find(g, m->weights->names[i]);
        if (id < 0 || g->values[id]->op != IR_OP_PARAM)
            list_name(extra, LIST_CAP, &nextra, m->weights->names[i]);
    }
    finish_list(missing, LIST_CAP, nmissing);
    finish_list(extra, LIST_CAP, nextra);
    if (nmissing)
        ir_diag_file_error(d, path, "%d param%s of the model %s no tensor in the weights: %s", nmissing,
                           nmissing == 1 ? "" : "s", nmissing == 1 ? "has" : "have", missing);
    if (nextra)
        ir_diag_file_error(d, path, "%d tensor%s in the weights %s no param of the model: %s; check that the "
                           "weights belong to this model", nextra, nextra == 1 ? "" : "s",
                           nextra == 1 ? "matches" : "match", extra);
    free(missing);
    free(extra);
    return problems + (nmissing > 0) + (nextra > 0);
}

/* ---- opening ---- */

static int run_session_passes(const rt_model *m, ir_graph *g, ir_diag *d)
{
    pass_pipeline pipeline;
    char err[256];
    if (pass_pipeline_parse(m->passes, &pipeline, err, sizeof err) != 0) {
        ir_diag_file_error(d, m->model_path, "invalid pass pipeline '%s': %s", m->passes, err);
        return -1;
    }
    pass_manager *pm = pass_manager_new(d);
    int rc = pm ? pass_manager_run(pm, &pipeline, g) : -1;
    pass_manager_free(pm);
    pass_pipeline_free(&pipeline);
    return rc;
}

/* Sets the session's passes when the weights were written by quadc
 * quantize, which records "quadc.quantize.bits" and ".sites". The pass is
 * the insert-fakequant that quantize ran, so the file's scales and zero
 * points become params, as in rt_quantized_model_load. */
static int set_quantizer_passes(rt_model *m, const char *weights_path, ir_diag *d)
{
    if (!rt_weights_get_meta(m->weights, "quadc.quantize.bits"))
        return 0;
    char text[512];
    if (rt_quantize_fakequant_pass(m->weights, weights_path, text, sizeof text, d) != 0)
        return -1;
    m->passes = strdup(text);
    return m->passes ? 0 : -1;
}

ir_graph *rt_model_compile_graph(const rt_model *m, int T, ir_diag *d)
{
    fe_define *defines = malloc(sizeof *defines * (size_t)(m->ndefines + 1));
    if (!defines)
        return NULL;
    memcpy(defines, m->defines, sizeof *defines * (size_t)m->ndefines);
    int n = m->ndefines;
    if (m->declares_T)
        defines[n++] = (fe_define){"T", T};
    ir_graph *g = fe_compile_file(m->model_path, defines, n, d);
    free(defines);
    if (g && m->passes && run_session_passes(m, g, d) != 0) {
        ir_graph_free(g);
        return NULL;
    }
    return g;
}

static int find_logits(rt_model *m, const ir_graph *g, ir_diag *d)
{
    for (int i = 0; i < g->noutputs; i++) {
        const ir_value *v = g->values[g->outputs[i]];
        if (strcmp(v->name, "logits") == 0 && v->type.rank >= 2 && v->type.dtype == IR_F32) {
            m->vocab = (int)v->type.dims[v->type.rank - 1];
            return 0;
        }
    }
    ir_diag_file_error(d, m->model_path, "the model has no output 'logits' of type f32[B, T, V]; eval and generate "
                       "need one");
    return -1;
}

static int find_inputs(rt_model *m, const ir_graph *g, ir_diag *d)
{
    int idx = ir_find(g, "idx");
    if (idx < 0 || g->values[idx]->op != IR_OP_INPUT || g->values[idx]->type.dtype != IR_I32) {
        ir_diag_file_error(d, m->model_path, "the model has no input 'idx' of type i32[B, T] for the token ids");
        return -1;
    }
    for (int i = 0; i < g->nvalues; i++)
        if (g->values[i]->op == IR_OP_CACHE_WRITE)
            m->has_cache = true;
    int pos = ir_find(g, "pos"), positions = ir_find(g, "positions");
    bool inputs_ok = pos >= 0 && positions >= 0 && g->values[pos]->op == IR_OP_INPUT &&
                     g->values[pos]->type.dtype == IR_I32 && g->values[pos]->type.rank == 0 &&
                     g->values[positions]->op == IR_OP_INPUT && g->values[positions]->type.dtype == IR_I32;
    if (m->has_cache && !inputs_ok) {
        ir_diag_file_error(d, m->model_path, "the model writes a cache but lacks the inputs 'pos' i32[] and "
                           "'positions' i32[T]");
        return -1;
    }
    return 0;
}

/* Sets the defines of the session: the explicit ones, the weights'
 * hyperparameters, B = 1 and n_cache, for the hparams the model declares. */
static int collect_defines(rt_model *m, const hparam_names *declared, const rt_model_options *o, ir_diag *d)
{
    for (int i = 0; i < o->ndefines; i++)
        if (add_define(m, o->defines[i].name, o->defines[i].value) != 0)
            return -1;
    if (apply_weight_hparams(m, declared, o, d) != 0)
        return -1;
    if (model_declares(declared, "B") && !find_define(m->defines, m->ndefines, "B") && add_define(m, "B", 1) != 0)
        return -1;
    if (o->cache_len > 0 && model_declares(declared, "n_cache") && add_define(m, "n_cache", o->cache_len) != 0)
        return -1;
    m->declares_T = model_declares(declared, "T");
    return 0;
}

static int open_checked(rt_model *m, const rt_model_options *o, ir_diag *d)
{
    if (!m->weights)
        m->weights = read_weights(o->weights_path, d);
    if (!m->weights || rt_gpt2_canonicalize_names(m->weights, d, o->weights_path) != 0)
        return -1;
    if (set_quantizer_passes(m, o->weights_path, d) != 0)
        return -1;
    hparam_names declared;
    if (fe_hparam_names(o->model_path, &declared.names, &declared.count, d) != 0)
        return -1;
    int rc = collect_defines(m, &declared, o, d);
    fe_free_hparam_names(declared.names, declared.count);
    if (rc != 0)
        return -1;

    ir_graph *g = rt_model_compile_graph(m, 1, d);
    if (!g)
        return -1;
    m->hparams = g->hparams;
    m->nhparams = g->nhparams;
    m->hparam_graph = g;
    if (find_logits(m, g, d) != 0 || find_inputs(m, g, d) != 0 || check_params(m, g, o->weights_path, d) != 0)
        return -1;
    if (rt_model_hparam(m, "B", 1) != 1) {
        ir_diag_file_error(d, o->model_path, "eval and generate run batch size 1, but B is %lld",
                           (long long)rt_model_hparam(m, "B", 1));
        return -1;
    }
    int64_t ctx = rt_model_hparam(m, "n_ctx", rt_model_hparam(m, "T", 1));
    if (m->has_cache)
        ctx = rt_model_hparam(m, "n_cache", ctx) < ctx ? rt_model_hparam(m, "n_cache", ctx) : ctx;
    m->context = (int)ctx;
    return 0;
}

rt_model *rt_model_open(const rt_model_options *o, ir_diag *d)
{
    rt_model *m = calloc(1, sizeof *m);
    if (!m) {
        rt_weights_free(o->weights);
        return NULL;
    }
    m->weights = o->weights;
    m->model_path = strdup(o->model_path);
    m->engine = o->engine;
    m->threads = o->threads;
    m->fuse_elementwise = !o->no_fuse_elementwise;
    if (!m->model_path || open_checked(m, o, d) != 0) {
        rt_model_free(m);
        return NULL;
    }
    return m;
}

void rt_model_free(rt_model *m)
{
    if (!m)
        return;
    rt_model_free_runs(m);
    rt_weights_free(m->weights);
    ir_graph_free(m->hparam_graph);
    for (int i = 0; i < m->ndefines; i++)
        free((char *)m->defines[i].name);
    free(m->defines);
    free(m->passes);
    free(m->model_path);
    free(m);
}

int rt_model_vocab_size(const rt_model *m)
{
    return m->vocab;
}

int rt_model_context_length(const rt_model *m)
{
    return m->context;
}

bool rt_model_has_cache(const rt_model *m)
{
    return m->has_cache;
}

int64_t rt_model_hparam(const rt_model *m, const char *name, int64_t fallback)
{
    for (int i = 0; i < m->nhparams; i++)
        if (strcmp(m->hparams[i].name, name) == 0)
            return m->hparams[i].value;
    return fallback;
}

const char *rt_model_weights_meta(const rt_model *m, const char *key)
{
    return rt_weights_get_meta(m->weights, key);
}

int rt_model_record_hparams(rt_weights *w, const ir_graph *g)
{
    char value[32];
    for (int i = 0; i < g->nhparams; i++) {
        const ir_hparam *h = &g->hparams[i];
        if (strcmp(h->name, "B") == 0 || strcmp(h->name, "T") == 0)
            continue;
        snprintf(value, sizeof value, "%lld", (long long)h->value);
        if (rt_weights_set_meta(w, h->name, value) != 0)
            return -1;
    }
    return 0;
}

ir_graph *rt_compile_model_bt(const char *path, const fe_define *defines, int ndefines, int batch, int seq,
                              ir_diag *d)
{
    fe_define *all = calloc((size_t)ndefines + 2, sizeof *all);
    if (!all)
        return NULL;
    int n = 0;
    for (int i = 0; i < ndefines; i++)
        if (strcmp(defines[i].name, "B") != 0 && strcmp(defines[i].name, "T") != 0)
            all[n++] = defines[i];
    all[n++] = (fe_define){"B", batch};
    all[n++] = (fe_define){"T", 1};
    /* A T beyond n_ctx would fail inside the model as an out-of-range
     * slice of the position embedding, so a first compile with T = 1
     * reads n_ctx, and the error names the sequence length instead. */
    ir_graph *g = fe_compile_file(path, all, n, d);
    if (!g || seq == 1) {
        free(all);
        return g;
    }
    for (int i = 0; i < g->nhparams; i++) {
        if (strcmp(g->hparams[i].name, "n_ctx") == 0 && seq > g->hparams[i].value) {
            ir_diag_file_error(d, path, "the sequence length T = %d (--seq, or -D T for build) is longer than "
                               "the model's context length n_ctx = %lld; give at most %lld", seq,
                               (long long)g->hparams[i].value, (long long)g->hparams[i].value);
            ir_graph_free(g);
            free(all);
            return NULL;
        }
    }
    ir_graph_free(g);
    all[n - 1].value = seq;
    g = fe_compile_file(path, all, n, d);
    free(all);
    return g;
}
