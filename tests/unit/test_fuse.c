/* The fuse-elementwise pass and fused.elementwise: the interpreter gives
 * the same bits before and after fusion, the JIT matches the interpreter
 * on fused graphs (a graph of chains and the GPT-2 training graph), fusion
 * lowers the planned buffer bytes, and repacking weights per run drops the
 * packed weight copies from the plan. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixtures.h"
#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "ir/fused.h"
#include "ir/ir.h"
#include "ir/text.h"
#include "passes/manager.h"
#include "runtime/interp.h"
#include "runtime/tensor.h"

static fx_rng rng = {FX_RNG_XORSHIFT, 0x9e3779b97f4a7c15ull};

static rt_tensor *random_tensor(const ir_type *t, double lo, double hi)
{
    rt_tensor *x = rt_tensor_new(t->dtype, t->rank, t->dims);
    for (int64_t i = 0; i < rt_tensor_numel(x); i++) {
        if (t->dtype == IR_F32)
            ((float *)x->data)[i] = (float)fx_uniform(&rng, lo, hi);
        else
            ((int32_t *)x->data)[i] = (int32_t)fx_uniform(&rng, lo, hi);
    }
    return x;
}

/* Fills every param and input of g with random values in [lo, hi). */
static void random_leaves(const ir_graph *g, rt_weights *weights, rt_weights *inputs, double lo, double hi)
{
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (v->op == IR_OP_PARAM)
            rt_weights_set(weights, v->name, random_tensor(&v->type, lo, hi));
        else if (v->op == IR_OP_INPUT)
            rt_weights_set(inputs, v->name, random_tensor(&v->type, lo, hi));
    }
}

static rt_tensor **run_interp(const ir_graph *g, const rt_weights *w, const rt_weights *in, ir_diag *d)
{
    rt_tensor **out = calloc((size_t)g->noutputs, sizeof *out);
    int rc = rt_interp_run(g, w, in, out, d);
    CHECK_EQ_INT(rc, 0);
    return out;
}

static rt_tensor **run_jit(const ir_graph *g, const cg_options *o, const rt_weights *w, const rt_weights *in,
                           ir_diag *d)
{
    rt_tensor **out = calloc((size_t)g->noutputs, sizeof *out);
    cg_module *m = cg_compile(g, o, d);
    CHECK(m != NULL);
    if (m) {
        CHECK_EQ_INT(cg_run(m, w, in, out, d), 0);
        cg_free(m);
    }
    return out;
}

static void free_outputs(rt_tensor **out, int n)
{
    for (int i = 0; out && i < n; i++)
        rt_tensor_free(out[i]);
    free(out);
}

static bool same_bits(const rt_tensor *a, const rt_tensor *b)
{
    return a && b && a->dtype == b->dtype && rt_tensor_numel(a) == rt_tensor_numel(b) &&
           memcmp(a->data, b->data, (size_t)rt_tensor_numel(a) * ir_dtype_size(a->dtype)) == 0;
}

static double max_abs(const rt_tensor *t)
{
    double m = 0;
    for (int64_t i = 0; i < rt_tensor_numel(t); i++)
        m = fmax(m, fabs(((const float *)t->data)[i]));
    return m;
}

/* Returns the number of elements of got that differ from want by more
 * than atol + rtol * |want|, and prints the first. */
static int64_t count_mismatches(const char *label, const rt_tensor *got, const rt_tensor *want, double atol,
                                double rtol)
{
    if (!got || !want || rt_tensor_numel(got) != rt_tensor_numel(want))
        return -1;
    int64_t bad = 0;
    for (int64_t i = 0; i < rt_tensor_numel(got); i++) {
        double a = ((const float *)got->data)[i], b = ((const float *)want->data)[i];
        bool ok = isnan(b) ? isnan(a) : fabs(a - b) <= atol + rtol * fabs(b);
        if (!ok && bad++ == 0)
            fprintf(stderr, "%s: element %lld: jit %.9g, interpreter %.9g\n", label, (long long)i, a, b);
    }
    return bad;
}

/* Chains with broadcasting, shared values, outputs, a chain over params
 * and a chain longer than one op; the shapes do not divide the vector
 * width. */
static const char chain_graph[] =
    "graph @chains {\n"
    "  %x = input : f32[3,5,37]\n"
    "  %h = input : f32[3,5,37]\n"
    "  %b = input : f32[37]\n"
    "  %c = input : f32[5,1]\n"
    "  @w1 = param : f32[37]\n"
    "  @w2 = param : f32[37]\n"
    "  %bb = add %b, %c : f32[5,37]\n"
    "  %biased = add %h, %bb : f32[3,5,37]\n"
    "  %act = gelu %biased : f32[3,5,37]\n"
    "  %mlp = add %act, %x : f32[3,5,37]\n"
    "  %shared = tanh %x : f32[3,5,37]\n"
    "  %half = scale %shared {factor=0.125} : f32[3,5,37]\n"
    "  %e = exp %half : f32[3,5,37]\n"
    "  %prod = mul %shared, %x : f32[3,5,37]\n"
    "  %q = div %prod, %e : f32[3,5,37]\n"
    "  %m = maximum %q, %mlp : f32[3,5,37]\n"
    "  %n = minimum %m, %c : f32[3,5,37]\n"
    "  %r = relu %n : f32[3,5,37]\n"
    "  %s = sub %r, %h : f32[3,5,37]\n"
    "  %a = abs %s : f32[3,5,37]\n"
    "  %sq = sqrt %a : f32[3,5,37]\n"
    "  %l = log %e : f32[3,5,37]\n"
    "  %wadd = add @w1, @w2 : f32[37]\n"
    "  %wx = mul %x, %wadd : f32[3,5,37]\n"
    "  %neg = neg %wx : f32[3,5,37]\n"
    "  return %sq, %l, %neg, %shared\n"
    "}\n";

static ir_graph *parse_chains(ir_diag *d)
{
    ir_graph *g = ir_parse_string("chains.qir", chain_graph, strlen(chain_graph), d);
    CHECK(g != NULL);
    return g;
}

static void test_interp_bits_after_fusion(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *plain = parse_chains(d);
    ir_graph *fused = plain ? ir_graph_clone(plain) : NULL;
    if (!fused) {
        ir_graph_free(plain);
        ir_diag_free(d);
        return;
    }
    CHECK_EQ_INT(pass_run_text(fused, "fuse-elementwise", d), 0);
    CHECK_EQ_INT(ir_verify(fused, "fuse-elementwise"), 0);
    CHECK(fx_count_ops(fused, IR_OP_FUSED_ELEMENTWISE) >= 3);
    CHECK(fused->nvalues < plain->nvalues);

    rt_weights *w = rt_weights_new(), *in = rt_weights_new();
    random_leaves(plain, w, in, -2.0, 2.0);
    rt_tensor **want = run_interp(plain, w, in, d);
    rt_tensor **got = run_interp(fused, w, in, d);
    for (int i = 0; i < plain->noutputs; i++)
        CHECK(same_bits(got[i], want[i]));
    free_outputs(got, fused->noutputs);

    /* max-inputs=2 splits chains that would need three inputs. */
    ir_graph *narrow = ir_graph_clone(plain);
    CHECK_EQ_INT(pass_run_text(narrow, "fuse-elementwise{max-inputs=2}", d), 0);
    for (int i = 0; i < narrow->nvalues; i++)
        if (narrow->values[i]->op == IR_OP_FUSED_ELEMENTWISE)
            CHECK(narrow->values[i]->nops <= 2);
    got = run_interp(narrow, w, in, d);
    for (int i = 0; i < plain->noutputs; i++)
        CHECK(same_bits(got[i], want[i]));
    free_outputs(got, narrow->noutputs);
    free_outputs(want, plain->noutputs);
    ir_graph_free(narrow);

    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(fused);
    ir_graph_free(plain);
    ir_diag_free(d);
}

static void test_jit_fused_chains(const char *cpu)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *plain = parse_chains(d);
    ir_graph *fused = plain ? ir_graph_clone(plain) : NULL;
    if (!fused) {
        ir_graph_free(plain);
        ir_diag_free(d);
        return;
    }
    CHECK_EQ_INT(pass_run_text(fused, "fuse-elementwise", d), 0);
    rt_weights *w = rt_weights_new(), *in = rt_weights_new();
    random_leaves(plain, w, in, -2.0, 2.0);
    cg_options o = cg_default_options();
    o.threads = 2;
    o.cpu = cpu;
    rt_tensor **want = run_interp(plain, w, in, d);
    rt_tensor **got = run_jit(fused, &o, w, in, d);
    for (int i = 0; i < plain->noutputs; i++) {
        char label[64];
        snprintf(label, sizeof label, "chains output %d on %s", i, cpu ? cpu : "host");
        CHECK_EQ_INT(count_mismatches(label, got[i], want[i], 1e-5, 1e-4), 0);
    }
    free_outputs(got, fused->noutputs);
    free_outputs(want, plain->noutputs);
    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(fused);
    ir_graph_free(plain);
    ir_diag_free(d);
}

/* A weight-gradient product x^T dy plus a second contribution, as the tied
 * GPT-2 embedding gets. The add becomes the epilogue of a fused.matmul
 * that keeps transpose_a. The interpreter and the JIT, over several MC
 * blocks of the transposed A, match the unfused graph. */
static const char transposed_graph[] = "graph @transposed {\n"
                                       "  %x = input : f32[70,150]\n"
                                       "  %dy = input : f32[70,50]\n"
                                       "  %other = input : f32[150,50]\n"
                                       "  %part = matmul %x, %dy {transpose_a=1, transpose_b=0} : f32[150,50]\n"
                                       "  %grad = add %part, %other : f32[150,50]\n"
                                       "  return %grad\n"
                                       "}\n";

static void test_fused_matmul_transpose_a(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *plain = ir_parse_string("transposed.qir", transposed_graph, strlen(transposed_graph), d);
    CHECK(plain != NULL);
    ir_graph *fused = plain ? ir_graph_clone(plain) : NULL;
    if (!fused) {
        ir_graph_free(plain);
        ir_diag_free(d);
        return;
    }
    CHECK_EQ_INT(pass_run_text(fused, "fuse-elementwise", d), 0);
    CHECK_EQ_INT(ir_verify(fused, "fuse-elementwise"), 0);
    CHECK_EQ_INT(fx_count_ops(fused, IR_OP_FUSED_MATMUL), 1);
    CHECK_EQ_INT(fx_count_ops(fused, IR_OP_ADD), 0);
    int product = ir_find(fused, "grad");
    CHECK(product >= 0);
    if (product >= 0) {
        CHECK_EQ_INT(ir_attr_int(fused->values[product], "transpose_a"), 1);
        CHECK_EQ_INT(ir_attr_int(fused->values[product], "transpose_b"), 0);
    }

    rt_weights *w = rt_weights_new(), *in = rt_weights_new();
    random_leaves(plain, w, in, -1.0, 1.0);
    rt_tensor **want = run_interp(plain, w, in, d);
    rt_tensor **interp = run_interp(fused, w, in, d);
    CHECK(same_bits(interp[0], want[0]));
    cg_options o = cg_default_options();
    o.threads = 2;
    rt_tensor **got = run_jit(fused, &o, w, in, d);
    CHECK_EQ_INT(count_mismatches("fused transpose_a", got[0], want[0], 1e-4, 1e-4), 0);
    free_outputs(got, fused->noutputs);
    free_outputs(interp, fused->noutputs);
    free_outputs(want, plain->noutputs);
    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(fused);
    ir_graph_free(plain);
    ir_diag_free(d);
}

static void test_fusion_lowers_planned_bytes(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *plain = parse_chains(d);
    ir_graph *fused = plain ? ir_graph_clone(plain) : NULL;
    if (!fused) {
        ir_graph_free(plain);
        ir_diag_free(d);
        return;
    }
    CHECK_EQ_INT(pass_run_text(fused, "fuse-elementwise", d), 0);
    cg_memory_stats before, after;
    CHECK_EQ_INT(cg_plan_memory(plain, NULL, &before, d), 0);
    CHECK_EQ_INT(cg_plan_memory(fused, NULL, &after, d), 0);
    CHECK(after.intermediate_values < before.intermediate_values);
    CHECK(after.intermediate_bytes < before.intermediate_bytes);
    CHECK(after.planned_activation_bytes < before.planned_activation_bytes);
    CHECK(before.planned_activation_bytes < before.intermediate_bytes);
    CHECK_EQ_INT(after.output_bytes, before.output_bytes);
    ir_graph_free(fused);
    ir_graph_free(plain);
    ir_diag_free(d);
}

static void test_invalid_programs(void)
{
    static const struct {
        const char *program;
        int nops;
    } cases[] = {
        {"", 1},            /* empty */
        {"$0 $1", 2},       /* two values left */
        {"$0 add", 1},      /* stack underflow */
        {"$1 gelu", 1},     /* operand out of range */
        {"$0 gelu", 2},     /* operand 1 unused */
        {"$0  gelu", 1},    /* two spaces */
        {"$0 gelu ", 1},    /* trailing space */
        {"$0 softmax", 1},  /* not elementwise */
        {"$0 cast", 1},     /* casts are not fused */
        {"$0 scale:x", 1},  /* invalid factor */
        {"$-1 neg", 1},     /* negative operand */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ir_fused_program p;
        char err[256] = "";
        int rc = ir_fused_parse(cases[i].program, cases[i].nops, &p, err, sizeof err);
        if (rc == 0)
            fprintf(stderr, "program \"%s\" was accepted\n", cases[i].program);
        CHECK_EQ_INT(rc, -1);
        CHECK(err[0] != '\0');
    }
    ir_fused_program p;
    char err[256], text[256];
    CHECK_EQ_INT(ir_fused_parse("$0 $1 add gelu scale:0.125 $0 mul", 2, &p, err, sizeof err), 0);
    CHECK_EQ_INT(p.nsteps, 7);
    CHECK_EQ_INT(p.max_depth, 2);
    CHECK(ir_fused_format(&p, text, sizeof text) > 0);
    CHECK(strcmp(text, "$0 $1 add gelu scale:0.125 $0 mul") == 0);
    CHECK_EQ_INT(ir_fused_format(&p, text, 8), -1);
}

/* The GPT-2 training graph after autodiff and fusion: the JIT, with
 * weights repacked per run as the trainer compiles it, against the
 * interpreter on the unfused graph. Tolerances as in test_codegen_grad. */
static void test_gpt2_training_fused(void)
{
    ir_diag *d = ir_diag_new(stderr);
    fe_define defs[] = {{"n_layer", 2}, {"n_embd", 48}, {"n_head", 3}, {"n_vocab", 101}, {"n_ctx", 20},
                        {"T", 17}, {"B", 2}};
    ir_graph *plain = fe_compile_file(QUADC_SOURCE_DIR "/examples/gpt2.qd", defs, 7, d);
    CHECK(plain != NULL);
    if (!plain) {
        ir_diag_free(d);
        return;
    }
    CHECK_EQ_INT(pass_run_text(plain, "autodiff{loss=loss},cse,dce", d), 0);
    ir_graph *fused = ir_graph_clone(plain);
    CHECK_EQ_INT(pass_run_text(fused, "fuse-elementwise", d), 0);
    CHECK_EQ_INT(ir_verify(fused, "fuse-elementwise"), 0);

    rt_weights *w = rt_weights_new(), *in = rt_weights_new();
    random_leaves(plain, w, in, -0.1, 0.1);
    int64_t dims[2] = {2, 17};
    ir_type ids = {IR_I32, 2, {dims[0], dims[1]}};
    rt_weights_set(in, "idx", random_tensor(&ids, 0, 101));
    rt_weights_set(in, "targets", random_tensor(&ids, 0, 101));

    cg_options o = cg_default_options();
    o.threads = 2;
    o.repack_weights = 1;
    rt_tensor **want = run_interp(plain, w, in, d);
    rt_tensor **got = run_jit(fused, &o, w, in, d);
    for (int i = 0; i < plain->noutputs; i++) {
        const char *name = plain->values[plain->outputs[i]]->name;
        double scale = max_abs(want[i]);
        CHECK(scale > 0);
        CHECK_EQ_INT(count_mismatches(name, got[i], want[i], 1e-3 * scale, 1e-3), 0);
    }
    free_outputs(got, fused->noutputs);
    free_outputs(want, plain->noutputs);

    /* Repacking per run keeps no packed weight alive between products. */
    cg_memory_stats kept, repacked;
    CHECK_EQ_INT(cg_plan_memory(fused, NULL, &kept, d), 0);
    CHECK_EQ_INT(cg_plan_memory(fused, &o, &repacked, d), 0);
    CHECK(repacked.packed_bytes * 4 < kept.packed_bytes);
    CHECK(kept.packed_bytes >= kept.param_bytes);

    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(fused);
    ir_graph_free(plain);
    ir_diag_free(d);
}

int main(void)
{
    test_invalid_programs();
    test_interp_bits_after_fusion();
    test_fusion_lowers_planned_bytes();
    test_jit_fused_chains(NULL);
    test_jit_fused_chains("haswell");
    test_jit_fused_chains("x86-64");
    test_fused_matmul_transpose_a();
    test_gpt2_training_fused();
    return check_finish();
}
