/* Tests of the passes and the pass manager on graphs built with the ir_add
 * API: what each pass merges, removes and computes, pipeline parsing, and
 * that errors and instruments name the pass. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ir/text.h"
#include "passes/manager.h"

static ir_type f32(int rank, int64_t d0, int64_t d1)
{
    ir_type t = {IR_F32, rank, {d0, d1}};
    return t;
}

static int add_const(ir_graph *g, const char *name, double value, ir_type type)
{
    ir_attrs a = ir_attrs_for(IR_OP_CONST);
    ir_attrs_float(&a, "value", value);
    int id = ir_add_leaf(g, IR_OP_CONST, name, type, &a, (ir_loc){0});
    ir_attrs_clear(&a);
    return id;
}

static int add_binary(ir_graph *g, ir_op op, const char *name, int a, int b)
{
    int ops[] = {a, b};
    return ir_add(g, op, name, ops, 2, NULL, (ir_loc){0});
}

static int add_unary(ir_graph *g, ir_op op, const char *name, int x)
{
    return ir_add(g, op, name, &x, 1, NULL, (ir_loc){0});
}

static int run_pass(ir_graph *g, pass_id id)
{
    int rc = pass_get(id)->run(g, NULL, g->diag);
    if (rc == 0)
        rc = ir_graph_compact(g);
    return rc;
}

static void test_cse_merges_duplicates(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_graph_new("cse", d);
    int x = ir_add_leaf(g, IR_OP_INPUT, "x", f32(1, 4, 0), NULL, (ir_loc){0});
    int y = ir_add_leaf(g, IR_OP_INPUT, "y", f32(1, 4, 0), NULL, (ir_loc){0});
    int a = add_binary(g, IR_OP_ADD, "a", x, y);
    int b = add_binary(g, IR_OP_ADD, "b", x, y);
    int both = add_binary(g, IR_OP_MUL, "both", a, b);
    ir_add_output(g, both);
    ir_add_output(g, b);

    CHECK_EQ_INT(run_pass(g, PASS_CSE), 0);
    CHECK_EQ_INT(g->nvalues, 4);
    CHECK(ir_find(g, "b") < 0);
    int merged = ir_find(g, "a");
    const ir_value *product = g->values[ir_find(g, "both")];
    CHECK_EQ_INT(product->ops[0], merged);
    CHECK_EQ_INT(product->ops[1], merged);
    CHECK_EQ_INT(g->outputs[1], merged);
    CHECK_EQ_INT(ir_verify(g, "cse"), 0);
    ir_graph_free(g);
    ir_diag_free(d);
}

static void test_cse_keeps_distinct_attrs(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_graph_new("cse", d);
    int x = ir_add_leaf(g, IR_OP_INPUT, "x", f32(2, 2, 4), NULL, (ir_loc){0});
    ir_attrs last_axis = ir_attrs_for(IR_OP_SOFTMAX);
    ir_attrs first_axis = ir_attrs_for(IR_OP_SOFTMAX);
    ir_attrs_int(&first_axis, "axis", 0);
    int s1 = ir_add(g, IR_OP_SOFTMAX, "s1", &x, 1, &last_axis, (ir_loc){0});
    int s2 = ir_add(g, IR_OP_SOFTMAX, "s2", &x, 1, &first_axis, (ir_loc){0});
    int s3 = ir_add(g, IR_OP_SOFTMAX, "s3", &x, 1, &last_axis, (ir_loc){0});
    int p1 = ir_add_leaf(g, IR_OP_PARAM, "p1", f32(1, 4, 0), NULL, (ir_loc){0});
    int p2 = ir_add_leaf(g, IR_OP_PARAM, "p2", f32(1, 4, 0), NULL, (ir_loc){0});
    int zero = add_const(g, "zero", 0.0, f32(0, 0, 0));
    int negative_zero = add_const(g, "negative_zero", -0.0, f32(0, 0, 0));
    ir_add_output(g, s1);
    ir_add_output(g, s2);
    ir_add_output(g, s3);
    ir_add_output(g, p1);
    ir_add_output(g, p2);
    ir_add_output(g, zero);
    ir_add_output(g, negative_zero);

    CHECK_EQ_INT(run_pass(g, PASS_CSE), 0);
    CHECK(ir_find(g, "s1") >= 0);
    CHECK(ir_find(g, "s2") >= 0);
    CHECK(ir_find(g, "s3") < 0);
    CHECK(ir_find(g, "p1") >= 0);
    CHECK(ir_find(g, "p2") >= 0);
    CHECK(ir_find(g, "zero") >= 0);
    CHECK(ir_find(g, "negative_zero") >= 0);
    CHECK_EQ_INT(g->outputs[2], ir_find(g, "s1"));
    ir_graph_free(g);
    ir_diag_free(d);
}

static void test_dce_keeps_outputs(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_graph_new("dce", d);
    int x = ir_add_leaf(g, IR_OP_INPUT, "x", f32(1, 4, 0), NULL, (ir_loc){0});
    ir_add_leaf(g, IR_OP_PARAM, "unused_param", f32(1, 4, 0), NULL, (ir_loc){0});
    int e = add_unary(g, IR_OP_EXP, "e", x);
    int dead = add_unary(g, IR_OP_TANH, "dead", e);
    add_unary(g, IR_OP_NEG, "dead_too", dead);
    int out = add_unary(g, IR_OP_GELU, "out", e);
    ir_add_output(g, out);
    ir_add_output(g, x);

    CHECK_EQ_INT(run_pass(g, PASS_DCE), 0);
    CHECK_EQ_INT(g->nvalues, 4);
    CHECK(ir_find(g, "dead") < 0);
    CHECK(ir_find(g, "dead_too") < 0);
    CHECK(ir_find(g, "unused_param") >= 0);
    CHECK_EQ_INT(g->outputs[0], ir_find(g, "out"));
    CHECK_EQ_INT(g->outputs[1], ir_find(g, "x"));
    CHECK_EQ_INT(ir_verify(g, "dce"), 0);
    ir_graph_free(g);
    ir_diag_free(d);
}

static double const_value(const ir_graph *g, const char *name)
{
    int id = ir_find(g, name);
    if (id < 0 || g->values[id]->op != IR_OP_CONST)
        return -12345.0;
    return g->values[id]->attrs[0].f;
}

static void test_constfold_values(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_graph_new("fold", d);
    int two = add_const(g, "two", 2.0, f32(0, 0, 0));
    int tenth = add_const(g, "tenth", 0.1, f32(2, 2, 3));
    int sum = add_binary(g, IR_OP_ADD, "sum", two, tenth);
    int quotient = add_binary(g, IR_OP_DIV, "quotient", tenth, two);
    int root = add_unary(g, IR_OP_SQRT, "root", two);
    int64_t shape[] = {3, 2};
    ir_attrs reshape = ir_attrs_for(IR_OP_RESHAPE);
    ir_attrs_ints(&reshape, "shape", shape, 2);
    int moved = ir_add(g, IR_OP_RESHAPE, "moved", &sum, 1, &reshape, (ir_loc){0});
    int x = ir_add_leaf(g, IR_OP_INPUT, "x", f32(0, 0, 0), NULL, (ir_loc){0});
    int mixed = add_binary(g, IR_OP_MUL, "mixed", x, two);
    ir_add_output(g, sum);
    ir_add_output(g, quotient);
    ir_add_output(g, root);
    ir_add_output(g, moved);
    ir_add_output(g, mixed);

    CHECK_EQ_INT(run_pass(g, PASS_CONSTFOLD), 0);
    /* f32 arithmetic: the operands are rounded to f32 first. */
    CHECK_EQ_INT(const_value(g, "sum") == (double)(2.0f + 0.1f), 1);
    CHECK_EQ_INT(const_value(g, "quotient") == (double)(0.1f / 2.0f), 1);
    CHECK_EQ_INT(const_value(g, "root") == (double)(float)1.4142135623730951, 1);
    CHECK_EQ_INT(const_value(g, "moved") == (double)(2.0f + 0.1f), 1);
    CHECK_EQ_INT(g->values[ir_find(g, "moved")]->type.dims[0], 3);
    CHECK(g->values[ir_find(g, "mixed")]->op == IR_OP_MUL);
    CHECK_EQ_INT(ir_verify(g, "constfold"), 0);
    ir_attrs_clear(&reshape);
    ir_graph_free(g);
    ir_diag_free(d);
}

static void test_canonicalize_sorts_operands(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_graph_new("canon", d);
    int x = ir_add_leaf(g, IR_OP_INPUT, "x", f32(1, 4, 0), NULL, (ir_loc){0});
    int y = ir_add_leaf(g, IR_OP_INPUT, "y", f32(1, 4, 0), NULL, (ir_loc){0});
    int one = add_const(g, "one", 1.0, f32(0, 0, 0));
    int swapped = add_binary(g, IR_OP_MAXIMUM, "swapped", y, x);
    int times_one = add_binary(g, IR_OP_MUL, "times_one", one, swapped);
    int difference = add_binary(g, IR_OP_SUB, "difference", y, x);
    ir_add_output(g, times_one);
    ir_add_output(g, difference);

    CHECK_EQ_INT(run_pass(g, PASS_CANONICALIZE), 0);
    const ir_value *max = g->values[ir_find(g, "swapped")];
    CHECK_EQ_INT(max->ops[0], ir_find(g, "x"));
    CHECK_EQ_INT(max->ops[1], ir_find(g, "y"));
    const ir_value *sub = g->values[ir_find(g, "difference")];
    CHECK_EQ_INT(sub->ops[0], ir_find(g, "y"));
    CHECK(ir_find(g, "times_one") < 0);
    CHECK_EQ_INT(g->outputs[0], ir_find(g, "swapped"));
    ir_graph_free(g);
    ir_diag_free(d);
}

static void test_pipeline_parse(void)
{
    pass_pipeline pipeline;
    char err[256];
    CHECK_EQ_INT(pass_pipeline_parse("canonicalize{max-iterations=3},cse, dce", &pipeline, err, sizeof err), 0);
    CHECK_EQ_INT(pipeline.count, 3);
    CHECK(pipeline.entries[0].id == PASS_CANONICALIZE);
    CHECK_EQ_INT(pass_option_int(&pipeline.entries[0].opts, "max-iterations", 8), 3);
    CHECK(pipeline.entries[2].id == PASS_DCE);
    pass_pipeline_free(&pipeline);

    CHECK_EQ_INT(pass_pipeline_parse("", &pipeline, err, sizeof err), 0);
    CHECK_EQ_INT(pipeline.count, 0);
    CHECK_EQ_INT(pass_pipeline_parse(pass_default_pipeline, &pipeline, err, sizeof err), 0);
    CHECK_EQ_INT(pipeline.count, 4);
    pass_pipeline_free(&pipeline);

    static const struct {
        const char *text;
        const char *message;
    } bad[] = {
        {"cse,,dce", "empty entry"},
        {"cse,", "empty entry"},
        {"nosuch", "unknown pass 'nosuch'"},
        {"cse{a=1}", "takes no options"},
        {"canonicalize{max-iterations}", "must be written key=value"},
        {"canonicalize{max-iterations=1 max-iterations=2}", "given twice"},
        {"canonicalize{max-iterations=x}", "takes a non-negative integer, got 'x'"},
        {"canonicalize{max-iterations=-5}", "takes a non-negative integer, got '-5'"},
        {"canonicalize{max-iterations=4}{depth=1}", "has '{depth=1}' after its options"},
        {"canonicalize{depth=1}", "has no option 'depth'"},
        {"canonicalize{max-iterations=1", "without a matching '}'"},
        {"cse}", "without a matching '{'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK_EQ_INT(pass_pipeline_parse(bad[i].text, &pipeline, err, sizeof err), -1);
        if (!strstr(err, bad[i].message)) {
            fprintf(stderr, "pipeline '%s': expected '%s' in '%s'\n", bad[i].text, bad[i].message, err);
            CHECK(false);
        }
    }
}

/* shape-infer and --verify-each report a type that no longer matches its
 * operands, naming the pass. */
static void test_errors_name_the_pass(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    ir_diag *d = ir_diag_new(out);
    ir_graph *g = ir_graph_new("broken", d);
    int x = ir_add_leaf(g, IR_OP_INPUT, "x", f32(1, 4, 0), NULL, (ir_loc){0});
    int e = add_unary(g, IR_OP_EXP, "e", x);
    ir_add_output(g, e);
    g->values[e]->type.dims[0] = 5;

    pass_pipeline pipeline;
    char err[128];
    CHECK_EQ_INT(pass_pipeline_parse("shape-infer", &pipeline, err, sizeof err), 0);
    pass_manager *pm = pass_manager_new(d);
    CHECK_EQ_INT(pass_manager_run(pm, &pipeline, g), -1);
    pass_manager_free(pm);
    pass_pipeline_free(&pipeline);

    CHECK_EQ_INT(pass_pipeline_parse("dce", &pipeline, err, sizeof err), 0);
    pm = pass_manager_new(d);
    pass_dump_options dump = {.verify_each = true};
    CHECK_EQ_INT(pass_manager_add_standard_instruments(pm, &dump), 0);
    g->values[e]->type.dims[0] = 4;
    CHECK_EQ_INT(pass_manager_run(pm, &pipeline, g), 0);
    pass_manager_free(pm);
    pass_pipeline_free(&pipeline);

    fclose(out);
    CHECK(strstr(text, "error: in pass 'shape-infer': IR is invalid: value 'e' has type f32[5] but its operands "
                       "give f32[4]") != NULL);
    CHECK_EQ_INT(ir_diag_error_count(d), 1);
    free(text);
    ir_graph_free(g);
    ir_diag_free(d);
}

int main(void)
{
    test_cse_merges_duplicates();
    test_cse_keeps_distinct_attrs();
    test_dce_keeps_outputs();
    test_constfold_values();
    test_canonicalize_sorts_operands();
    test_pipeline_parse();
    test_errors_name_the_pass();
    return check_finish();
}
