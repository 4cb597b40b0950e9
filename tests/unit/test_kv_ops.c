/* Tests of cache_write and causal_mask with a position operand in the
 * interpreter and the JIT: rows land in the caller's cache tensor, the
 * mask follows pos, and a write past the cache is an error naming the
 * rows. Attention over a cache whose rows after the position hold stale
 * values matches the interpreter although the JIT skips those rows. Also
 * tests the token samplers of runtime/sample.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixtures.h"
#include "codegen/cg_internal.h"
#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "passes/manager.h"
#include "runtime/interp.h"
#include "runtime/sample.h"

static const char *model_text =
    "input cache : f32[2, 5, 3];\n"
    "input fresh : f32[2, 2, 3];\n"
    "input pos : i32[];\n"
    "input scores : f32[2, 2, 5];\n"
    "rows = cache_write(cache, fresh, pos);\n"
    "masked = causal_mask(scores, pos);\n"
    "output rows, masked;\n";

typedef struct fixture {
    rt_weights *inputs;
    float *cache, *fresh, *scores;
    int32_t *pos;
} fixture;

static void make_inputs(fixture *f, int32_t pos)
{
    int64_t cache_dims[3] = {2, 5, 3}, fresh_dims[3] = {2, 2, 3}, score_dims[3] = {2, 2, 5};
    f->inputs = rt_weights_new();
    rt_tensor *cache = rt_tensor_new(IR_F32, 3, cache_dims), *fresh = rt_tensor_new(IR_F32, 3, fresh_dims);
    rt_tensor *scores = rt_tensor_new(IR_F32, 3, score_dims), *p = rt_tensor_new(IR_I32, 0, NULL);
    f->cache = cache->data;
    f->fresh = fresh->data;
    f->scores = scores->data;
    f->pos = p->data;
    for (int i = 0; i < 30; i++)
        f->cache[i] = -1.0f - (float)i;
    for (int i = 0; i < 12; i++)
        f->fresh[i] = 100.0f + (float)i;
    for (int i = 0; i < 20; i++)
        f->scores[i] = (float)i;
    *f->pos = pos;
    rt_weights_set(f->inputs, "cache", cache);
    rt_weights_set(f->inputs, "fresh", fresh);
    rt_weights_set(f->inputs, "scores", scores);
    rt_weights_set(f->inputs, "pos", p);
}

/* Runs the graph with the interpreter (jit == NULL) or the JIT. */
static int run(const ir_graph *g, cg_module *jit, fixture *f, rt_tensor **outputs, ir_diag *d)
{
    return jit ? cg_run(jit, NULL, f->inputs, outputs, d) : rt_interp_run(g, NULL, f->inputs, outputs, d);
}

static void check_engine(const ir_graph *g, cg_module *jit)
{
    ir_diag *d = ir_diag_new(stderr);
    fixture f;
    make_inputs(&f, 2);
    rt_tensor *out[2] = {NULL, NULL};
    CHECK(run(g, jit, &f, out, d) == 0);
    if (out[0] && out[1]) {
        const float *rows = out[0]->data, *masked = out[1]->data;
        for (int m = 0; m < 2; m++) {
            for (int r = 0; r < 5; r++) {
                for (int c = 0; c < 3; c++) {
                    int at = (m * 5 + r) * 3 + c;
                    float want = r >= 2 && r < 4 ? f.fresh[(m * 2 + r - 2) * 3 + c] : -1.0f - (float)at;
                    CHECK(rows[at] == want);
                    /* In place: the caller's tensor contains the new rows too. */
                    CHECK(f.cache[at] == want);
                }
            }
            for (int i = 0; i < 2; i++) {
                for (int j = 0; j < 5; j++) {
                    int at = (m * 2 + i) * 5 + j;
                    CHECK(j > i + 2 ? isinf(masked[at]) && masked[at] < 0 : masked[at] == f.scores[at]);
                }
            }
        }
    }
    rt_tensor_free(out[0]);
    rt_tensor_free(out[1]);
    rt_weights_free(f.inputs);
    ir_diag_free(d);
}

static void check_range_error(const ir_graph *g, cg_module *jit, int32_t pos, const char *want)
{
    char *text = NULL;
    size_t size = 0;
    FILE *stream = open_memstream(&text, &size);
    ir_diag *d = ir_diag_new(stream);
    fixture f;
    make_inputs(&f, pos);
    rt_tensor *out[2] = {NULL, NULL};
    CHECK(run(g, jit, &f, out, d) != 0);
    ir_diag_free(d);
    fclose(stream);
    if (!strstr(text, want)) {
        check_failed++;
        fprintf(stderr, "%s:%d: expected '%s' in:\n%s", __FILE__, __LINE__, want, text);
    } else {
        check_passed++;
    }
    free(text);
    rt_tensor_free(out[0]);
    rt_tensor_free(out[1]);
    rt_weights_free(f.inputs);
}

static void test_cache_ops(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = fe_compile_string("kv.qd", model_text, strlen(model_text), NULL, 0, d);
    CHECK(g != NULL);
    if (!g) {
        ir_diag_free(d);
        return;
    }
    cg_options o = cg_default_options();
    o.threads = 2;
    cg_module *jit = cg_compile(g, &o, d);
    CHECK(jit != NULL);

    check_engine(g, NULL);
    check_range_error(g, NULL, 4, "rows [4, 6) are outside the cache's 5 rows; the position must be between 0 and 3");
    check_range_error(g, NULL, -1, "rows [-1, 1) are outside the cache's 5 rows");
    if (jit) {
        check_engine(g, jit);
        check_range_error(g, jit, 4,
                          "cache_write 'rows': rows [4, 6) are outside the cache's 5 rows; the position must be "
                          "between 0 and 3");
        check_range_error(g, jit, -1, "rows [-1, 1) are outside the cache's 5 rows");
    }
    cg_free(jit);
    ir_graph_free(g);
    ir_diag_free(d);
}

static void test_cache_write_shape_errors(void)
{
    const char *text = "input cache : f32[2, 5, 3];\n"
                       "input fresh : f32[2, 6, 3];\n"
                       "input pos : f32[];\n"
                       "rows = cache_write(cache, fresh, pos);\n"
                       "output rows;\n";
    char *out = NULL;
    size_t size = 0;
    FILE *stream = open_memstream(&out, &size);
    ir_diag *d = ir_diag_new(stream);
    CHECK(fe_compile_string("bad.qd", text, strlen(text), NULL, 0, d) == NULL);
    ir_diag_free(d);
    fclose(stream);
    CHECK(strstr(out, "cache f32[2,5,3] and new rows f32[2,6,3] do not match") != NULL);
    free(out);
}

/* ---- attention over the live cache rows ---- */

/* One attention step over caches of 70 rows, more than one 64-row task of
 * the dot-product kernel, with 19-wide heads. The graph's outputs follow
 * it: with the scores as an output too, their product must compute every
 * column. */
static const char attention_body[] = "hparam T = 1;\n"
                                     "input q : f32[1, 2, T, 19];\n"
                                     "input kc : f32[1, 2, 70, 19];\n"
                                     "input vc : f32[1, 2, 70, 19];\n"
                                     "input kn : f32[1, 2, T, 19];\n"
                                     "input vn : f32[1, 2, T, 19];\n"
                                     "input pos : i32[];\n"
                                     "kh = cache_write(kc, kn, pos);\n"
                                     "vh = cache_write(vc, vn, pos);\n"
                                     "scores = scale(matmul(q, kh, transpose_b=1), factor=0.25);\n"
                                     "att = softmax(causal_mask(scores, pos), axis=-1);\n"
                                     "y = matmul(att, vh);\n";

/* Inputs with every cache row filled, so rows after pos + T are stale
 * values that a wrong bound would mix into the result. */
static rt_weights *attention_inputs(int64_t T, int32_t pos)
{
    static const char *names[5] = {"q", "kc", "vc", "kn", "vn"};
    rt_weights *w = rt_weights_new();
    uint32_t state = 12345u + (uint32_t)pos;
    for (int i = 0; i < 5; i++) {
        int64_t dims[4] = {1, 2, i == 1 || i == 2 ? 70 : T, 19};
        rt_tensor *t = rt_tensor_new(IR_F32, 4, dims);
        float *x = t->data;
        for (int64_t k = 0; k < rt_tensor_numel(t); k++) {
            state = state * 1664525u + 1013904223u;
            x[k] = (float)((state >> 8) % 6001) / 1000.0f - 3.0f;
        }
        rt_weights_set(w, names[i], t);
    }
    rt_tensor *p = rt_tensor_new(IR_I32, 0, NULL);
    *(int32_t *)p->data = pos;
    rt_weights_set(w, "pos", p);
    return w;
}

/* The products whose cache_write cg_live_cache accepts, as a bit mask:
 * 1 for the scores, 2 for the weighted sum of values. */
static int live_products(const ir_graph *g)
{
    int mask = 0;
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if ((v->op == IR_OP_MATMUL || v->op == IR_OP_FUSED_MATMUL) && cg_live_cache(g, v) >= 0)
            mask |= ir_attr_int(v, "transpose_b") ? 1 : 2;
    }
    return mask;
}

/* The graph as written and fused (the scale then runs in the scores'
 * fused.matmul), T = 1 and T = 3, with and without the scores as an
 * output. */
static void test_live_cache_rows(void)
{
    ir_diag *d = ir_diag_new(stderr);
    for (int variant = 0; variant < 4; variant++) {
        int scores_out = variant & 1;
        bool fused = variant & 2;
        for (int64_t T = 1; T <= 3; T += 2) {
            char text[sizeof attention_body + 32];
            snprintf(text, sizeof text, "%s%s", attention_body, scores_out ? "output y, scores;\n" : "output y;\n");
            fe_define def = {"T", T};
            ir_graph *g = fe_compile_string("attention.qd", text, strlen(text), &def, 1, d);
            CHECK(g != NULL);
            if (!g)
                continue;
            if (fused)
                CHECK(pass_run_text(g, "fuse-elementwise", d) == 0);
            CHECK_EQ_INT(live_products(g), scores_out ? 2 : 3);
            cg_options o = cg_default_options();
            o.threads = 2;
            cg_module *jit = cg_compile(g, &o, d);
            CHECK(jit != NULL);
            const int32_t positions[] = {0, 5, 63, 64, (int32_t)(70 - T)};
            for (size_t p = 0; p < sizeof positions / sizeof *positions && jit; p++) {
                rt_weights *wi = attention_inputs(T, positions[p]), *wj = attention_inputs(T, positions[p]);
                rt_tensor *want[2] = {NULL, NULL}, *got[2] = {NULL, NULL};
                CHECK(rt_interp_run(g, NULL, wi, want, d) == 0);
                CHECK(cg_run(jit, NULL, wj, got, d) == 0);
                for (int k = 0; k <= scores_out && want[k] && got[k]; k++) {
                    const float *a = want[k]->data, *b = got[k]->data;
                    double worst = 0;
                    for (int64_t i = 0; i < rt_tensor_numel(want[k]); i++)
                        worst = fmax(worst, fabs((double)a[i] - (double)b[i]));
                    if (worst > 1e-4)
                        fprintf(stderr, "T=%lld pos=%d output %d: max |diff| %g\n", (long long)T, positions[p], k,
                                worst);
                    CHECK(worst <= 1e-4);
                }
                for (int k = 0; k < 2; k++) {
                    rt_tensor_free(want[k]);
                    rt_tensor_free(got[k]);
                }
                rt_weights_free(wi);
                rt_weights_free(wj);
            }
            cg_free(jit);
            ir_graph_free(g);
        }
    }
    ir_diag_free(d);
}

/* ---- samplers ---- */

static void test_argmax_ties(void)
{
    float logits[5] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
    CHECK_EQ_INT(rt_sample_argmax(logits, 5), 1);
}

static void test_top_k_sampling(void)
{
    float logits[6] = {1.0f, 3.0f, 2.0f, 3.0f, -5.0f, 0.0f};
    int scratch[6];
    rt_rng a, b;

    /* top_k = 1 takes the highest logit, the lowest id among ties. */
    rt_rng_seed(&a, 7, 0);
    for (int i = 0; i < 20; i++)
        CHECK_EQ_INT(rt_sample_top_k(logits, 6, 1.0, 1, &a, scratch), 1);

    /* top_k = 2 never leaves the two best; every draw matches for one seed. */
    rt_rng_seed(&a, 42, 0);
    rt_rng_seed(&b, 42, 0);
    int counts[6] = {0};
    for (int i = 0; i < 2000; i++) {
        int32_t x = rt_sample_top_k(logits, 6, 1.0, 2, &a, scratch);
        CHECK_EQ_INT(x, rt_sample_top_k(logits, 6, 1.0, 2, &b, scratch));
        counts[x]++;
    }
    CHECK_EQ_INT(counts[1] + counts[3], 2000);
    CHECK(counts[1] > 850 && counts[3] > 850);

    /* All tokens: frequencies follow the softmax within a few percent. */
    rt_rng_seed(&a, 3, 0);
    memset(counts, 0, sizeof counts);
    for (int i = 0; i < 20000; i++)
        counts[rt_sample_top_k(logits, 6, 1.0, 0, &a, scratch)]++;
    double total = 0;
    for (int i = 0; i < 6; i++)
        total += exp(logits[i]);
    for (int i = 0; i < 6; i++)
        CHECK_CLOSE(counts[i] / 20000.0, exp(logits[i]) / total, 0.01, 0);

    /* A low temperature makes the best tokens almost certain. */
    rt_rng_seed(&a, 5, 0);
    memset(counts, 0, sizeof counts);
    for (int i = 0; i < 1000; i++)
        counts[rt_sample_top_k(logits, 6, 0.05, 0, &a, scratch)]++;
    CHECK_EQ_INT(counts[1] + counts[3], 1000);
}

int main(void)
{
    test_cache_ops();
    test_cache_write_shape_errors();
    test_live_cache_rows();
    test_argmax_ties();
    test_top_k_sampling();
    return check_finish();
}
