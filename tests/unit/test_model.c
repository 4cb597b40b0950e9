/* Tests of the model session (runtime/model.h) on tiny random GPT-2
 * weights written with the safetensors writer. They cover hyperparameters
 * from the metadata and their conflicts with -D, missing, extra and
 * misshapen tensors, and the padding rule. They also compare JIT and
 * interpreter perplexity, and key-value cache decoding with full forwards. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "frontend/frontend.h"
#include "runtime/evaluate.h"
#include "runtime/llmc.h"
#include "runtime/model.h"
#include "runtime/safetensors.h"

#define GPT2 QUADC_SOURCE_DIR "/examples/gpt2.qd"
#define GPT2_KV QUADC_SOURCE_DIR "/examples/gpt2_kv.qd"

typedef struct config {
    int n_layer, n_embd, n_head, n_vocab, n_ctx;
} config;

/* ---- diagnostics capture ---- */

typedef struct capture {
    char *text;
    size_t size;
    FILE *stream;
    ir_diag *d;
} capture;

static void capture_begin(capture *c)
{
    c->text = NULL;
    c->size = 0;
    c->stream = open_memstream(&c->text, &c->size);
    c->d = ir_diag_new(c->stream);
}

/* Ends the capture and returns the text, which the caller frees. */
static char *capture_end(capture *c)
{
    ir_diag_free(c->d);
    fclose(c->stream);
    return c->text;
}

static void check_text_at(const char *got, const char *want, int line)
{
    if (strcmp(got, want) == 0) {
        check_passed++;
        return;
    }
    check_failed++;
    fprintf(stderr, "%s:%d: check failed: diagnostics differ\n--- got:\n%s--- expected:\n%s", __FILE__, line, got,
            want);
}
#define CHECK_TEXT(got, want) check_text_at(got, want, __LINE__)

/* ---- tiny weights ---- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static float next_uniform(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)(rng_state >> 40) / 16777216.0f - 0.5f;
}

/* Fills 7 defines: the config, B = 1 and T = 1. */
static void config_defines(const config *c, fe_define *defines)
{
    defines[0] = (fe_define){"n_layer", c->n_layer};
    defines[1] = (fe_define){"n_embd", c->n_embd};
    defines[2] = (fe_define){"n_head", c->n_head};
    defines[3] = (fe_define){"n_vocab", c->n_vocab};
    defines[4] = (fe_define){"n_ctx", c->n_ctx};
    defines[5] = (fe_define){"B", 1};
    defines[6] = (fe_define){"T", 1};
}

/* Returns random weights for every param of gpt2.qd under config c, with
 * values of magnitude `scale` (layernorm weights near 1). */
static rt_weights *random_weights(const config *c, float scale)
{
    fe_define defines[7];
    config_defines(c, defines);
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = fe_compile_file(GPT2, defines, 7, d);
    rt_weights *w = rt_weights_new();
    for (int i = 0; g && i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (v->op != IR_OP_PARAM)
            continue;
        rt_tensor *t = rt_tensor_new(IR_F32, v->type.rank, v->type.dims);
        float *p = t->data;
        bool ones = strstr(v->name, "ln_") != NULL && strstr(v->name, ".weight") != NULL;
        for (int64_t k = 0; k < rt_tensor_numel(t); k++)
            p[k] = (ones ? 1.0f : 0.0f) + scale * next_uniform();
        rt_weights_set(w, v->name, t);
    }
    ir_graph_free(g);
    ir_diag_free(d);
    return w;
}

static char *temp_path(const char *name)
{
    static char path[256];
    snprintf(path, sizeof path, "/tmp/quadc_test_model_%d_%s.safetensors", (int)getpid(), name);
    return path;
}

static void set_config_meta(rt_weights *w, const config *c)
{
    char text[32];
    snprintf(text, sizeof text, "%d", c->n_layer);
    rt_weights_set_meta(w, "n_layer", text);
    snprintf(text, sizeof text, "%d", c->n_embd);
    rt_weights_set_meta(w, "n_embd", text);
    snprintf(text, sizeof text, "%d", c->n_head);
    rt_weights_set_meta(w, "n_head", text);
    snprintf(text, sizeof text, "%d", c->n_vocab);
    rt_weights_set_meta(w, "n_vocab", text);
    snprintf(text, sizeof text, "%d", c->n_ctx);
    rt_weights_set_meta(w, "n_ctx", text);
}

/* Writes weights of config c with its hparams in the metadata to a new
 * file and returns its path (a static buffer). */
static const char *write_weights(const config *c, const char *name, float scale)
{
    rt_weights *w = random_weights(c, scale);
    set_config_meta(w, c);
    const char *path = temp_path(name);
    ir_diag *d = ir_diag_new(stderr);
    CHECK(rt_safetensors_write(path, w, d) == 0);
    ir_diag_free(d);
    rt_weights_free(w);
    return path;
}

static rt_model *open_model(const char *model, const char *weights, const fe_define *defines, int ndefines,
                            rt_model_engine engine, int cache_len, ir_diag *d)
{
    rt_model_options o = {0};
    o.model_path = model;
    o.weights_path = weights;
    o.defines = defines;
    o.ndefines = ndefines;
    o.engine = engine;
    o.threads = 2;
    o.cache_len = cache_len;
    return rt_model_open(&o, d);
}

/* ---- hyperparameters ---- */

static void test_metadata_hparams_applied(void)
{
    config c = {1, 16, 2, 40, 12};
    const char *path = write_weights(&c, "meta", 0.1f);
    ir_diag *d = ir_diag_new(stderr);
    rt_model *m = open_model(GPT2, path, NULL, 0, RT_MODEL_INTERP, 0, d);
    CHECK(m != NULL);
    if (m) {
        CHECK_EQ_INT(rt_model_hparam(m, "n_layer", -1), 1);
        CHECK_EQ_INT(rt_model_hparam(m, "n_embd", -1), 16);
        CHECK_EQ_INT(rt_model_hparam(m, "B", -1), 1);
        CHECK_EQ_INT(rt_model_vocab_size(m), 40);
        CHECK_EQ_INT(rt_model_context_length(m), 12);
        CHECK(!rt_model_has_cache(m));
    }
    rt_model_free(m);

    /* A -D that agrees with the metadata is accepted. */
    fe_define same = {"n_layer", 1};
    m = open_model(GPT2, path, &same, 1, RT_MODEL_INTERP, 0, d);
    CHECK(m != NULL);
    rt_model_free(m);
    ir_diag_free(d);
    unlink(path);
}

static void test_metadata_conflict_error(void)
{
    config c = {1, 16, 2, 40, 12};
    const char *path = write_weights(&c, "conflict", 0.1f);
    fe_define other = {"n_layer", 3};
    capture cap;
    capture_begin(&cap);
    rt_model *m = open_model(GPT2, path, &other, 1, RT_MODEL_INTERP, 0, cap.d);
    CHECK(m == NULL);
    char *text = capture_end(&cap);
    char want[512];
    snprintf(want, sizeof want, "%s: error: the weights were saved with n_layer=1 but -D n_layer=3 was given; "
             "remove the -D or use weights with n_layer=3\n", path);
    CHECK_TEXT(text, want);
    free(text);
    unlink(path);
}

static void test_metadata_not_integer(void)
{
    config c = {1, 16, 2, 40, 12};
    rt_weights *w = random_weights(&c, 0.1f);
    set_config_meta(w, &c);
    rt_weights_set_meta(w, "n_embd", "sixteen");
    const char *path = temp_path("badmeta");
    ir_diag *d = ir_diag_new(stderr);
    CHECK(rt_safetensors_write(path, w, d) == 0);
    ir_diag_free(d);
    rt_weights_free(w);
    capture cap;
    capture_begin(&cap);
    CHECK(open_model(GPT2, path, NULL, 0, RT_MODEL_INTERP, 0, cap.d) == NULL);
    char *text = capture_end(&cap);
    char want[512];
    snprintf(want, sizeof want, "%s: error: metadata entry n_embd = 'sixteen' is not an integer; hyperparameters "
             "in the metadata must be decimal integers\n", path);
    CHECK_TEXT(text, want);
    free(text);
    unlink(path);
}

/* ---- tensors ---- */

static void test_missing_and_extra_tensors(void)
{
    config c = {1, 16, 2, 40, 12};
    rt_weights *w = random_weights(&c, 0.1f);
    set_config_meta(w, &c);
    /* Drop two params by replacing them with extra tensors. */
    for (int i = 0; i < w->count; i++) {
        if (strcmp(w->names[i], "h.0.ln_1.bias") == 0 || strcmp(w->names[i], "ln_f.weight") == 0) {
            w->names[i][0] = 'X';
        }
    }
    const char *path = temp_path("missing");
    ir_diag *d = ir_diag_new(stderr);
    CHECK(rt_safetensors_write(path, w, d) == 0);
    ir_diag_free(d);
    rt_weights_free(w);

    capture cap;
    capture_begin(&cap);
    CHECK(open_model(GPT2, path, NULL, 0, RT_MODEL_INTERP, 0, cap.d) == NULL);
    char *text = capture_end(&cap);
    char want[1024];
    snprintf(want, sizeof want,
             "%s: error: 2 params of the model have no tensor in the weights: h.0.ln_1.bias, ln_f.weight\n"
             "%s: error: 2 tensors in the weights match no param of the model: X.0.ln_1.bias, Xn_f.weight; "
             "check that the weights belong to this model\n", path, path);
    CHECK_TEXT(text, want);
    free(text);
    unlink(path);
}

static void test_known_buffers_dropped(void)
{
    /* Hugging Face files carry a "transformer." prefix, attention-mask
     * buffers and a tied lm_head.weight; none of them is an error. */
    config c = {1, 16, 2, 40, 12};
    rt_weights *w = random_weights(&c, 0.1f);
    set_config_meta(w, &c);
    rt_weights *hf = rt_weights_new();
    for (int i = 0; i < w->count; i++) {
        char name[256];
        snprintf(name, sizeof name, "transformer.%s", w->names[i]);
        rt_tensor *t = rt_tensor_new(w->tensors[i]->dtype, w->tensors[i]->rank, w->tensors[i]->dims);
        memcpy(t->data, w->tensors[i]->data, rt_tensor_nbytes(t));
        rt_weights_set(hf, name, t);
    }
    const rt_tensor *wte = rt_weights_get(w, "wte.weight");
    rt_tensor *head = rt_tensor_new(IR_F32, 2, wte->dims);
    memcpy(head->data, wte->data, rt_tensor_nbytes(head));
    rt_weights_set(hf, "lm_head.weight", head);
    int64_t mask_dims[4] = {1, 1, 12, 12};
    rt_weights_set(hf, "transformer.h.0.attn.bias", rt_tensor_new(IR_F32, 4, mask_dims));
    for (int i = 0; i < w->nmeta; i++)
        rt_weights_set_meta(hf, w->meta_keys[i], w->meta_values[i]);
    rt_weights_free(w);
    const char *path = temp_path("hf");
    ir_diag *d = ir_diag_new(stderr);
    CHECK(rt_safetensors_write(path, hf, d) == 0);
    rt_weights_free(hf);
    rt_model *m = open_model(GPT2, path, NULL, 0, RT_MODEL_INTERP, 0, d);
    CHECK(m != NULL);
    rt_model_free(m);
    ir_diag_free(d);
    unlink(path);
}

static void test_wrong_shape_error(void)
{
    config c = {1, 16, 2, 40, 12};
    rt_weights *w = random_weights(&c, 0.1f);
    set_config_meta(w, &c);
    int64_t dims[1] = {17};
    rt_weights_set(w, "h.0.ln_2.bias", rt_tensor_new(IR_F32, 1, dims));
    const char *path = temp_path("shape");
    ir_diag *d = ir_diag_new(stderr);
    CHECK(rt_safetensors_write(path, w, d) == 0);
    ir_diag_free(d);
    rt_weights_free(w);
    capture cap;
    capture_begin(&cap);
    CHECK(open_model(GPT2, path, NULL, 0, RT_MODEL_INTERP, 0, cap.d) == NULL);
    char *text = capture_end(&cap);
    char want[512];
    snprintf(want, sizeof want, "%s: error: tensor 'h.0.ln_2.bias' is f32[17] but the model expects f32[16]\n",
             path);
    CHECK_TEXT(text, want);
    free(text);
    unlink(path);
}

static void test_missing_weights_file(void)
{
    capture cap;
    capture_begin(&cap);
    CHECK(open_model(GPT2, "/nonexistent/w.safetensors", NULL, 0, RT_MODEL_INTERP, 0, cap.d) == NULL);
    char *text = capture_end(&cap);
    CHECK_TEXT(text, "/nonexistent/w.safetensors: error: cannot open weights file: No such file or directory\n");
    free(text);
}

/* An llm.c checkpoint is recognized by its magic number, and its header
 * gives the hyperparameters. */
static void test_llmc_checkpoint(void)
{
    config c = {2, 16, 2, 40, 12};
    rt_weights *w = random_weights(&c, 0.1f);
    ir_diag *d = ir_diag_new(stderr);
    rt_llmc_config header;
    CHECK(rt_llmc_infer_config(w, c.n_head, &header, d, NULL) == 0);
    char path[256];
    snprintf(path, sizeof path, "/tmp/quadc_test_model_%d_llmc.bin", (int)getpid());
    CHECK(rt_llmc_write_checkpoint(path, w, &header, d) == 0);
    rt_weights_free(w);
    rt_model *m = open_model(GPT2, path, NULL, 0, RT_MODEL_INTERP, 0, d);
    CHECK(m != NULL);
    if (m) {
        CHECK_EQ_INT(rt_model_hparam(m, "n_layer", -1), 2);
        CHECK_EQ_INT(rt_model_hparam(m, "n_head", -1), 2);
        CHECK_EQ_INT(rt_model_vocab_size(m), 40);
        CHECK_EQ_INT(rt_model_context_length(m), 12);
    }
    rt_model_free(m);
    ir_diag_free(d);
    unlink(path);
}

/* ---- running ---- */

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs((double)a[i] - (double)b[i]));
    return worst;
}

/* The logits of the first k positions do not depend on the padding of a
 * longer window: exact in the interpreter, within rounding in the JIT. */
static void test_padding_rule(rt_model_engine engine, double tolerance)
{
    config c = {2, 16, 2, 40, 12};
    const char *path = write_weights(&c, "pad", 0.2f);
    ir_diag *d = ir_diag_new(stderr);
    rt_model *m = open_model(GPT2, path, NULL, 0, engine, 0, d);
    CHECK(m != NULL);
    if (m) {
        int32_t tokens[12] = {3, 17, 5, 39, 0, 22, 8, 11, 30, 2, 9, 14};
        int V = rt_model_vocab_size(m);
        for (int k = 1; k <= 12; k += 5) {
            float *exact = malloc(sizeof *exact * (size_t)(k * V));
            float *padded = malloc(sizeof *padded * (size_t)(k * V));
            CHECK(rt_model_forward(m, k, tokens, k, exact, d) == 0);
            CHECK(rt_model_forward(m, 12, tokens, k, padded, d) == 0);
            double diff = max_abs_diff(exact, padded, (size_t)(k * V));
            if (tolerance == 0)
                CHECK(diff == 0);
            else
                CHECK_CLOSE(diff, 0, tolerance, 0);
            free(exact);
            free(padded);
        }
        /* A window longer than the context is rejected. */
        float scratch[40];
        CHECK(rt_model_forward(m, 13, tokens, 1, scratch, d) != 0);
    }
    rt_model_free(m);
    ir_diag_free(d);
    unlink(path);
}

typedef struct eval_model {
    rt_model *model;
    int window;
} eval_model;

static int model_logits(void *ctx, const int32_t *tokens, int T, float *logits, ir_diag *d)
{
    eval_model *em = ctx;
    return rt_model_forward(em->model, em->window, tokens, T, logits, d);
}

/* Sliding-window perplexity of a token stream with the JIT and with the
 * interpreter: finite and equal within float rounding. */
static void test_eval_jit_matches_interp(void)
{
    config c = {2, 32, 4, 64, 16};
    const char *path = write_weights(&c, "eval", 0.3f);
    int32_t ids[100];
    for (int i = 0; i < 100; i++)
        ids[i] = (int32_t)((i * 37 + i / 3) % 64);
    double perplexity[2];
    ir_diag *d = ir_diag_new(stderr);
    for (int e = 0; e < 2; e++) {
        rt_model *m = open_model(GPT2, path, NULL, 0, e == 0 ? RT_MODEL_JIT : RT_MODEL_INTERP, 0, d);
        CHECK(m != NULL);
        perplexity[e] = NAN;
        if (m) {
            eval_model em = {m, 16};
            rt_eval_result r;
            CHECK(rt_eval_perplexity(ids, 100, 16, 8, 64, model_logits, &em, &r, d) == 0);
            CHECK_EQ_INT(r.tokens_scored, 99);
            perplexity[e] = r.perplexity;
        }
        rt_model_free(m);
    }
    CHECK(isfinite(perplexity[0]) && perplexity[0] > 1);
    CHECK_CLOSE(perplexity[0], perplexity[1], 0, 1e-4);
    ir_diag_free(d);
    unlink(path);
}

/* Decodes a sequence with gpt2_kv.qd: a prefix of `prefill` tokens, then a
 * chunk of 2, then one token at a time. After every step, the logits of the
 * last token must match a full gpt2.qd forward over the same prefix. */
static void check_decode_matches_full(const config *c, rt_model_engine engine, double tolerance)
{
    const char *path = write_weights(c, "kv", 0.3f);
    ir_diag *d = ir_diag_new(stderr);
    int L = c->n_ctx;
    rt_model *full = open_model(GPT2, path, NULL, 0, engine, 0, d);
    rt_model *kv = open_model(GPT2_KV, path, NULL, 0, engine, 0, d);
    CHECK(full != NULL);
    CHECK(kv != NULL);
    if (full && kv) {
        CHECK(rt_model_has_cache(kv));
        int V = c->n_vocab;
        int32_t *tokens = malloc(sizeof *tokens * (size_t)L);
        for (int i = 0; i < L; i++)
            tokens[i] = (int32_t)((uint32_t)(next_uniform() * 1e6f + 5e5f) % (uint32_t)V);
        float *reference = malloc(sizeof *reference * (size_t)L * (size_t)V);
        float *step = malloc(sizeof *step * (size_t)V);
        CHECK(rt_model_forward(full, L, tokens, L, reference, d) == 0);

        /* Two passes: the second reuses the caches with stale rows. */
        for (int pass = 0; pass < 2; pass++) {
            rt_model_reset(kv);
            int prefill = pass == 0 ? 3 : 1;
            int n = 0;
            double worst = 0;
            while (n < L) {
                int chunk = n == 0 ? prefill : n == prefill ? 2 : 1;
                if (n + chunk > L)
                    chunk = L - n;
                CHECK(rt_model_append(kv, tokens + n, chunk, step, d) == 0);
                n += chunk;
                worst = fmax(worst, max_abs_diff(step, reference + (size_t)(n - 1) * (size_t)V, (size_t)V));
            }
            CHECK_EQ_INT(rt_model_position(kv), L);
            CHECK_CLOSE(worst, 0, tolerance, 0);
        }
        /* The context is full: one more token is an error. */
        CHECK(rt_model_append(kv, tokens, 1, step, d) != 0);
        free(tokens);
        free(reference);
        free(step);
    }
    rt_model_free(full);
    rt_model_free(kv);
    ir_diag_free(d);
    unlink(path);
}

static void test_decode_matches_full_forward(void)
{
    const config configs[] = {
        {1, 8, 2, 11, 6},
        {2, 16, 4, 37, 9},
        {3, 24, 3, 50, 12},
    };
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        check_decode_matches_full(&configs[i], RT_MODEL_INTERP, 1e-5);
        check_decode_matches_full(&configs[i], RT_MODEL_JIT, 1e-4);
    }
}

/* A cache shorter than the context limits the sequence, and cache_write
 * rejects a write past its rows. */
static void test_cache_length_limit(void)
{
    config c = {1, 8, 2, 11, 10};
    const char *path = write_weights(&c, "cachelen", 0.3f);
    capture cap;
    capture_begin(&cap);
    rt_model *m = open_model(GPT2_KV, path, NULL, 0, RT_MODEL_JIT, 4, cap.d);
    CHECK(m != NULL);
    if (m) {
        CHECK_EQ_INT(rt_model_context_length(m), 4);
        int32_t tokens[5] = {1, 2, 3, 4, 5};
        float logits[11];
        CHECK(rt_model_append(m, tokens, 3, logits, cap.d) == 0);
        CHECK(rt_model_append(m, tokens, 2, logits, cap.d) != 0);
    }
    rt_model_free(m);
    char *text = capture_end(&cap);
    CHECK(strstr(text, "appending 2 tokens at position 3 exceeds the context length 4") != NULL);
    free(text);
    unlink(path);
}

int main(void)
{
    test_metadata_hparams_applied();
    test_metadata_conflict_error();
    test_metadata_not_integer();
    test_missing_and_extra_tensors();
    test_known_buffers_dropped();
    test_wrong_shape_error();
    test_missing_weights_file();
    test_llmc_checkpoint();
    test_padding_rule(RT_MODEL_INTERP, 0);
    test_padding_rule(RT_MODEL_JIT, 1e-5);
    test_eval_jit_matches_interp();
    test_decode_matches_full_forward();
    test_cache_length_limit();
    return check_finish();
}
