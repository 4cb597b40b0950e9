/* Tests of the IR text printer and parser: round trips of built graphs,
 * special values and quoting, and the errors the parser reports. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixtures.h"
#include "ir/text.h"

static char *print_graph(const ir_graph *g, bool locs)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ir_print_options opts = {.locs = locs};
    ir_print(f, g, &opts);
    fclose(f);
    return buf;
}

/* Parses text, stores the error output in *errors (caller frees) and
 * returns whether the text parsed. */
static bool parse_capture(const char *text, char **errors)
{
    fx_capture c;
    fx_capture_open(&c);
    ir_graph *g = ir_parse_string("t.qir", text, strlen(text), c.diag);
    bool parsed = g != NULL;
    ir_graph_free(g);
    fx_capture_end(&c);
    *errors = c.text;
    return parsed;
}

static ir_type type_of(ir_dtype dtype, int rank, const int64_t *dims)
{
    ir_type t = {dtype, rank, {0}};
    for (int i = 0; i < rank; i++)
        t.dims[i] = dims[i];
    return t;
}

static void test_built_graph_round_trip(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = ir_graph_new("tiny", d);
    ir_loc loc = {ir_diag_intern(d, "model.qd"), 3, 5, 0};
    ir_loc none = {0};
    const int64_t xd[] = {2, 4}, wd[] = {4, 4}, bd[] = {4};

    ir_attrs init = ir_attrs_for(IR_OP_PARAM);
    ir_attrs_str(&init, "init", "normal(0.02) \"q\"\n");
    int w = ir_add_leaf(g, IR_OP_PARAM, "w", type_of(IR_F32, 2, wd), &init, loc);
    ir_attrs_clear(&init);
    int b = ir_add_leaf(g, IR_OP_PARAM, "b", type_of(IR_F32, 1, bd), NULL, none);
    int x = ir_add_leaf(g, IR_OP_INPUT, "x y", type_of(IR_F32, 2, xd), NULL, loc);
    ir_attrs value = ir_attrs_for(IR_OP_CONST);
    ir_attrs_float(&value, "value", -(double)INFINITY);
    int k = ir_add_leaf(g, IR_OP_CONST, NULL, type_of(IR_F32, 0, NULL), &value, none);
    ir_attrs_clear(&value);
    int ops[] = {x, w, b};
    int y = ir_add(g, IR_OP_LINEAR, "y", ops, 3, NULL, loc);
    ir_attrs ln = ir_attrs_for(IR_OP_LAYERNORM);
    ir_attrs_float(&ln, "eps", (double)1e-5f);
    int ln_ops[] = {y, b, b};
    int z = ir_add(g, IR_OP_LAYERNORM, "z", ln_ops, 3, &ln, loc);
    ir_attrs_clear(&ln);
    int add_ops[] = {z, k};
    int sum = ir_add(g, IR_OP_ADD, "sum", add_ops, 2, NULL, none);
    ir_add_output(g, sum);
    ir_add_output(g, x);
    ir_set_hparam(g, "n_embd", 4);
    CHECK(sum >= 0);

    char *first = print_graph(g, true);
    CHECK(strstr(first, "@w = param {init=\"normal(0.02) \\\"q\\\"\\n\"} : f32[4,4] loc(\"model.qd\":3:5)") != NULL);
    CHECK(strstr(first, "%\"x y\" = input : f32[2,4]") != NULL);
    CHECK(strstr(first, "const {value=-inf} : f32[]") != NULL);
    CHECK(strstr(first, "{eps=9.99999975e-06}") != NULL);
    CHECK(strstr(first, "hparam n_embd = 4") != NULL);
    CHECK(strstr(first, "return %sum, %\"x y\"") != NULL);

    fx_capture c;
    fx_capture_open(&c);
    ir_graph *parsed = ir_parse_string("t.qir", first, strlen(first), c.diag);
    CHECK(parsed != NULL);
    if (parsed) {
        char *second = print_graph(parsed, true);
        CHECK(strcmp(first, second) == 0);
        CHECK_EQ_INT(parsed->nvalues, g->nvalues);
        CHECK_EQ_INT(parsed->values[w]->loc.line, 3);
        CHECK(parsed->values[b]->loc.file == NULL);
        free(second);
        ir_graph_free(parsed);
    }
    fx_capture_end(&c);
    CHECK(c.len == 0);
    free(c.text);
    free(first);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* matmul with both transpose flags: the inferred type, a print and parse
 * round trip, and the verifier once the type no longer fits the flags. */
static void test_matmul_transposes(void)
{
    const char *text = "graph @g {\n"
                       "  %a = input : f32[2,5,3]\n"
                       "  %b = input : f32[4,5]\n"
                       "  %y = matmul %a, %b {transpose_a=1, transpose_b=1} : f32[2,3,4]\n"
                       "  return %y\n"
                       "}\n";
    fx_capture c;
    fx_capture_open(&c);
    ir_graph *g = ir_parse_string("t.qir", text, strlen(text), c.diag);
    CHECK(g != NULL);
    if (g) {
        char *first = print_graph(g, false);
        CHECK(strstr(first, "%y = matmul %a, %b {transpose_a=1, transpose_b=1} : f32[2,3,4]") != NULL);
        ir_graph *again = ir_parse_string("t.qir", first, strlen(first), c.diag);
        CHECK(again != NULL);
        if (again) {
            char *second = print_graph(again, false);
            CHECK(strcmp(first, second) == 0);
            free(second);
            ir_graph_free(again);
        }
        free(first);
        CHECK_EQ_INT(ir_verify(g, NULL), 0);

        /* Without transpose_a, a[2,5,3] no longer fits b^T[5,4]. */
        ir_value *y = g->values[ir_find(g, "y")];
        y->attrs[ir_op_attr_index(IR_OP_MATMUL, "transpose_a")].i = 0;
        CHECK_EQ_INT(ir_verify(g, NULL), 1);
        ir_graph_free(g);
    }
    fx_capture_end(&c);
    CHECK(c.text != NULL);
    CHECK(strstr(c.text ? c.text : "", "IR is invalid: value 'y' has operands that do not type-check: inner "
                                       "dimensions differ: f32[2,5,3] x f32[4,5]^T (3 vs 5)") != NULL);
    free(c.text);
}

static void test_nan_and_locs_option(void)
{
    const char *text = "graph @g {\n  %c = const {value=nan} : f32[3] loc(\"a.qd\":1:2)\n  return %c\n}\n";
    fx_capture c;
    fx_capture_open(&c);
    ir_graph *g = ir_parse_string("t.qir", text, strlen(text), c.diag);
    CHECK(g != NULL);
    if (g) {
        char *with = print_graph(g, true);
        char *without = print_graph(g, false);
        CHECK(strstr(with, "{value=nan} : f32[3] loc(\"a.qd\":1:2)") != NULL);
        CHECK(strstr(without, "loc(") == NULL);
        free(with);
        free(without);
        ir_graph_free(g);
    }
    fx_capture_end(&c);
    free(c.text);
}

/* Each case is IR text with one error and a fragment of the message. */
static void test_parse_errors(void)
{
    static const struct {
        const char *text;
        const char *message;
    } cases[] = {
        {"graph @g {\n  %x = input : f32[2]\n  %y = layer_norm %x : f32[2]\n}\n",
         "t.qir:3:8: error: unknown op 'layer_norm'; did you mean 'layernorm'?"},
        {"graph @g {\n  %y = neg %x : f32[2]\n}\n", "t.qir:2:12: error: use of undefined value '%x'"},
        {"graph @g {\n  %x = input : f32[2]\n  %x = input : f32[2]\n}\n", "t.qir:3:3: error: redefinition of value '%x'"},
        {"graph @g {\n  %x = input : f32[2]\n  %y = neg %x : f32[3]\n}\n",
         "result type is written as f32[3] but the operands give f32[2]"},
        {"graph @g {\n  %x = input : f32[2]\n  %y = neg %x f32[2]\n}\n", "expected ':' and the result type"},
        {"graph @g {\n  %w = param : f32[2]\n}\n", "a param must be named with '@'"},
        {"graph @g {\n  @w = param : f32[2]\n  %y = neg %w : f32[2]\n}\n", "write it as '@w'"},
        {"graph @g {\n  %x = input : f32[2]\n  %y = softmax %x {axis=0, axis=0} : f32[2]\n}\n",
         "attribute 'axis' is given twice"},
        {"graph @g {\n  %a = input : f32[3,2]\n  %b = input : f32[2,4]\n"
         "  %y = matmul %a, %b {transpose_a=1} : f32[2,4]\n}\n",
         "inner dimensions differ: f32[3,2]^T x f32[2,4] (3 vs 2)"},
        {"graph @g {\n  %a = input : f32[3,2]\n  %b = input : f32[3,4]\n"
         "  %y = matmul %a, %b {transpose_a=2} : f32[2,4]\n}\n",
         "transpose_a must be 0 or 1, got 2"},
        {"graph @g {\n  %x = input : f32[-2]\n}\n", "dimension -2 is out of range"},
        {"graph @g {\n  %x = input : f32[99999999999,99999999999]\n}\n",
         "dimension 99999999999 is out of range [1, 2147483647]"},
        {"graph @g {\n  %x = input : f32[0]\n}\n", "dimension 0 is out of range [1, 2147483647]"},
        {"graph @g {\n  %x = input : f32[2147483647,2147483647]\n}\n",
         "type has more than 1099511627776 (2^40) elements"},
        {"graph @g {\n  %x = input %y : f32[2]\n}\n", "use of undefined value '%y'"},
        {"graph @g {\n  %c = const {value=\"1\"} : f32[]\n}\n", "expected a number"},
        {"graph @g {\n  %c = const : f32[]\n}\n", "op 'const' needs attribute 'value'"},
        {"graph @g {\n  hparam n = 99999999999999999999\n}\n", "does not fit in 64 bits"},
        {"graph @g {\n  %x = input : f32[2] loc(\"a\n", "missing its closing quote"},
        {"graph @g {\n  %x = input : f32[2]\n  return %x\n  return %x\n}\n", "second 'return'"},
        {"graph @g {\n  %x = input : f32[2]\n", "expected '}' to close the graph body"},
        {"graph @g { } extra", "expected the end of the input after the graph"},
        {"\x01", "unexpected byte 0x01"},
        {"", "expected 'graph', found the end of the input"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *errors = NULL;
        bool parsed = parse_capture(cases[i].text, &errors);
        CHECK(!parsed);
        if (!errors || !strstr(errors, cases[i].message)) {
            fprintf(stderr, "case %zu: expected '%s' in:\n%s\n", i, cases[i].message, errors ? errors : "");
            CHECK(false);
        }
        free(errors);
    }
}

static void test_errors_do_not_cascade(void)
{
    const char *text = "graph @g {\n  %x = input : f32[2]\n  %y = bogus %x : f32[2]\n  %z = neg %y : f32[2]\n"
                       "  %w = neg %q : f32[2]\n}\n";
    char *errors = NULL;
    bool parsed = parse_capture(text, &errors);
    CHECK(!parsed);
    CHECK(strstr(errors, "unknown op 'bogus'") != NULL);
    CHECK(strstr(errors, "'%y'") == NULL);
    CHECK(strstr(errors, "use of undefined value '%q'") != NULL);
    free(errors);
}

int main(void)
{
    test_built_graph_round_trip();
    test_matmul_transposes();
    test_nan_and_locs_option();
    test_parse_errors();
    test_errors_do_not_cascade();
    return check_finish();
}
