/* Tests of cache_write and causal_mask with a position operand in the
 * interpreter and the JIT: rows land in the caller's cache tensor, the
 * mask follows pos, and a write past the cache is an error naming the
 * rows. Also tests the token samplers of runtime/sample.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "codegen/codegen.h"
#include "frontend/frontend.h"
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
    test_argmax_ties();
    test_top_k_sampling();
    return check_finish();
}
