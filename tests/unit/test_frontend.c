/* Tests of the DSL frontend: examples/gpt2.qd lowers to exactly the
 * Hugging Face GPT-2 parameter set, the language features lower to the
 * expected IR, and every diagnostic has its exact text. Run from the
 * repository root (ctest does). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "frontend/frontend.h"

typedef struct compiled {
    ir_graph *g;
    ir_diag *d;
    FILE *out;
    char *text; /* everything the diagnostics sink printed */
    size_t size;
} compiled;

/* The memory stream writes back into c->text and c->size, so `c` must
 * stay where it is until release(). */
static void open_sink(compiled *c)
{
    memset(c, 0, sizeof *c);
    c->out = open_memstream(&c->text, &c->size);
    c->d = ir_diag_new(c->out);
}

static void compile_source(compiled *c, const char *source, size_t len, const fe_define *defines, int ndefines)
{
    open_sink(c);
    c->g = fe_compile_string("m.qd", source, len, defines, ndefines, c->d);
    fflush(c->out);
}

static void compile_text(compiled *c, const char *source, const fe_define *defines, int ndefines)
{
    compile_source(c, source, strlen(source), defines, ndefines);
}

static void compile_path(compiled *c, const char *path, const fe_define *defines, int ndefines)
{
    open_sink(c);
    c->g = fe_compile_file(path, defines, ndefines, c->d);
    fflush(c->out);
}

static void release(compiled *c)
{
    ir_graph_free(c->g);
    ir_diag_free(c->d);
    fclose(c->out);
    free(c->text);
}

/* Compiles `source` and checks that it fails with exactly `expected` as
 * the diagnostics output. */
static void expect_errors(const char *name, const char *source, const fe_define *defines, int ndefines,
                          const char *expected)
{
    compiled c;
    compile_text(&c, source, defines, ndefines);
    CHECK(c.g == NULL);
    if (strcmp(c.text, expected) == 0) {
        check_passed++;
    } else {
        check_failed++;
        fprintf(stderr, "%s: diagnostics differ\n--- expected\n%s--- got\n%s---\n", name, expected, c.text);
    }
    release(&c);
}

static bool starts_with(const char *text, const char *prefix)
{
    return strncmp(text, prefix, strlen(prefix)) == 0;
}

static const ir_value *find_value(const ir_graph *g, const char *name)
{
    int id = ir_find(g, name);
    return id < 0 ? NULL : g->values[id];
}

static bool has_type(const ir_value *v, ir_dtype dtype, int rank, const int64_t *dims)
{
    if (!v || v->type.dtype != dtype || v->type.rank != rank)
        return false;
    for (int k = 0; k < rank; k++)
        if (v->type.dims[k] != dims[k])
            return false;
    return true;
}

static int64_t param_elements(const ir_graph *g, int *nparams)
{
    int64_t total = 0;
    *nparams = 0;
    for (int i = 0; i < g->nvalues; i++) {
        if (g->values[i]->op == IR_OP_PARAM) {
            total += ir_type_numel(&g->values[i]->type);
            (*nparams)++;
        }
    }
    return total;
}

static const char *init_of(const ir_graph *g, const char *name)
{
    const ir_value *v = find_value(g, name);
    return v ? ir_attr_str(v, "init") : "";
}

/* ---- the GPT-2 example ---- */

static void test_gpt2_small(void)
{
    compiled c;
    compile_path(&c, "examples/gpt2.qd", NULL, 0);
    CHECK(c.g != NULL);
    CHECK_EQ_INT(strlen(c.text), 0);
    if (!c.g) {
        fprintf(stderr, "%s", c.text);
        release(&c);
        return;
    }
    ir_graph *g = c.g;
    int nparams;
    /* 124,439,808 is the parameter count of Hugging Face `gpt2` with the
     * LM head tied to wte. */
    CHECK_EQ_INT(param_elements(g, &nparams), 124439808);
    CHECK_EQ_INT(nparams, 2 + 12 * 12 + 2);
    CHECK(has_type(find_value(g, "wte.weight"), IR_F32, 2, (int64_t[]){50257, 768}));
    CHECK(has_type(find_value(g, "wpe.weight"), IR_F32, 2, (int64_t[]){1024, 768}));
    CHECK(has_type(find_value(g, "h.0.attn.c_attn.weight"), IR_F32, 2, (int64_t[]){768, 2304}));
    CHECK(has_type(find_value(g, "h.0.attn.c_attn.bias"), IR_F32, 1, (int64_t[]){2304}));
    CHECK(has_type(find_value(g, "h.11.mlp.c_fc.weight"), IR_F32, 2, (int64_t[]){768, 3072}));
    CHECK(has_type(find_value(g, "h.11.mlp.c_proj.weight"), IR_F32, 2, (int64_t[]){3072, 768}));
    CHECK(has_type(find_value(g, "ln_f.bias"), IR_F32, 1, (int64_t[]){768}));
    CHECK(find_value(g, "h.12.ln_1.weight") == NULL);

    CHECK(strcmp(init_of(g, "wte.weight"), "normal(0.02)") == 0);
    CHECK(strcmp(init_of(g, "h.3.ln_1.weight"), "ones") == 0);
    CHECK(strcmp(init_of(g, "h.3.ln_2.bias"), "zeros") == 0);
    char scaled[64];
    snprintf(scaled, sizeof scaled, "normal(%.9g)", 0.02 / sqrt(24.0));
    CHECK(strcmp(init_of(g, "h.5.attn.c_proj.weight"), scaled) == 0);
    CHECK(strcmp(init_of(g, "h.5.mlp.c_proj.weight"), scaled) == 0);

    const ir_value *ln1 = find_value(g, "h0.ln1");
    CHECK(ln1 != NULL);
    if (ln1) {
        CHECK(ln1->op == IR_OP_LAYERNORM);
        CHECK(ir_attr_float(ln1, "eps") == 1e-5);
        CHECK(ln1->loc.line > 0);
        CHECK(strstr(ln1->loc.file, "gpt2.qd") != NULL);
    }
    const ir_value *ln1_next = find_value(g, "h1.ln1");
    CHECK(ln1_next != NULL);
    if (ln1_next)
        CHECK(strcmp(g->values[ln1_next->ops[0]]->name, "h0.out") == 0);
    const char *qkv[] = {"h7.q", "h7.k", "h7.v"};
    for (int k = 0; k < 3; k++) {
        const ir_value *v = find_value(g, qkv[k]);
        CHECK(v != NULL);
        if (!v)
            continue;
        CHECK(v->op == IR_OP_SLICE);
        CHECK_EQ_INT(ir_attr_int(v, "axis"), 2);
        CHECK_EQ_INT(ir_attr_int(v, "start"), 768 * k);
        CHECK_EQ_INT(ir_attr_int(v, "end"), 768 * (k + 1));
    }
    CHECK(has_type(find_value(g, "h0.att"), IR_F32, 4, (int64_t[]){4, 12, 64, 64}));
    const ir_value *scores = find_value(g, "h0.scores");
    CHECK(scores != NULL);
    if (scores) {
        CHECK(scores->op == IR_OP_SCALE);
        CHECK_CLOSE(ir_attr_float(scores, "factor"), 0.125, 1e-12, 0);
    }

    CHECK_EQ_INT(g->noutputs, 2);
    if (g->noutputs == 2) {
        CHECK(strcmp(g->values[g->outputs[0]]->name, "logits") == 0);
        CHECK(has_type(g->values[g->outputs[0]], IR_F32, 3, (int64_t[]){4, 64, 50257}));
        CHECK(has_type(g->values[g->outputs[1]], IR_F32, 0, NULL));
    }
    CHECK(g->nhparams >= 7);
    CHECK(strcmp(g->hparams[0].name, "n_layer") == 0);
    CHECK_EQ_INT(g->hparams[0].value, 12);
    CHECK_EQ_INT(ir_verify(g, NULL), 0);
    release(&c);
}

static void test_gpt2_medium_by_defines(void)
{
    fe_define medium[] = {{"n_layer", 24}, {"n_embd", 1024}, {"n_head", 16}};
    compiled c;
    compile_path(&c, "examples/gpt2.qd", medium, 3);
    CHECK(c.g != NULL);
    if (c.g) {
        int nparams;
        CHECK_EQ_INT(param_elements(c.g, &nparams), 354823168);
        CHECK_EQ_INT(nparams, 2 + 24 * 12 + 2);
        CHECK(find_value(c.g, "h.23.attn.c_attn.weight") != NULL);
        CHECK(has_type(find_value(c.g, "h23.qh"), IR_F32, 4, (int64_t[]){4, 16, 64, 64}));
    }
    release(&c);
}

static void test_tiny_matches_defines(void)
{
    compiled tiny;
    compile_path(&tiny, "examples/tiny.qd", NULL, 0);
    fe_define defines[] = {{"n_layer", 2}, {"n_embd", 64}, {"n_head", 4}, {"n_vocab", 256},
                           {"n_ctx", 64},  {"B", 2},       {"T", 16}};
    compiled same;
    compile_path(&same, "examples/gpt2.qd", defines, 7);
    CHECK(tiny.g != NULL);
    CHECK(same.g != NULL);
    if (tiny.g && same.g) {
        CHECK_EQ_INT(tiny.g->nvalues, same.g->nvalues);
        for (int i = 0; i < tiny.g->nvalues && i < same.g->nvalues; i++) {
            CHECK(strcmp(tiny.g->values[i]->name, same.g->values[i]->name) == 0);
            CHECK(ir_type_equal(&tiny.g->values[i]->type, &same.g->values[i]->type));
        }
    }
    release(&tiny);
    release(&same);
}

/* ---- language features ---- */

static void test_scalar_constants(void)
{
    compiled c;
    compile_text(&c, "input x : f32[2, 3];\n"
                              "input h : f16[4];\n"
                              "input ids : i32[4];\n"
                              "y = mul(x, 0.125);\n"
                              "z = add(h, 2);\n"
                              "w = add(ids, 1);\n"
                              "s = sqrt(9);\n"
                              "output y, z, w, s;\n",
                              NULL, 0);
    CHECK(c.g != NULL);
    if (c.g) {
        const ir_value *y = find_value(c.g, "y");
        CHECK(has_type(y, IR_F32, 2, (int64_t[]){2, 3}));
        const ir_value *k = y ? c.g->values[y->ops[1]] : NULL;
        CHECK(has_type(k, IR_F32, 0, NULL));
        if (k) {
            CHECK(k->op == IR_OP_CONST);
            CHECK(ir_attr_float(k, "value") == 0.125);
            CHECK(strcmp(k->name, "y.const") == 0);
        }
        const ir_value *z = find_value(c.g, "z");
        if (z)
            CHECK(c.g->values[z->ops[1]]->type.dtype == IR_F16);
        const ir_value *w = find_value(c.g, "w");
        if (w)
            CHECK(c.g->values[w->ops[1]]->type.dtype == IR_I32);
        const ir_value *s = find_value(c.g, "s");
        CHECK(s != NULL);
        if (s)
            CHECK(s->op == IR_OP_SQRT);
    }
    release(&c);
}

static void test_hparam_arithmetic(void)
{
    fe_define defines[] = {{"C", 12}};
    compiled c;
    compile_text(&c, "hparam A = 7 + 2 * 3;           # 13\n"
                              "hparam D = (A - 1) / 5 % 2;     // 0\n"
                              "hparam E = min(A, 4) + max(1, -A, 2) + D; /* 6 */\n"
                              "hparam F = -(A) * 2;\n"
                              "hparam C = 3;\n"
                              "hparam G = C * 2;\n"
                              "input x : f32[A, E, G];\n"
                              "r = reshape(x, shape=[A * E, -1]);\n"
                              "output r;\n",
                              defines, 1);
    CHECK(c.g != NULL);
    if (c.g) {
        CHECK(has_type(find_value(c.g, "x"), IR_F32, 3, (int64_t[]){13, 6, 24}));
        CHECK(has_type(find_value(c.g, "r"), IR_F32, 2, (int64_t[]){78, 24}));
        bool found = false;
        for (int h = 0; h < c.g->nhparams; h++)
            if (strcmp(c.g->hparams[h].name, "F") == 0)
                found = c.g->hparams[h].value == -26;
        CHECK(found);
    }
    release(&c);
}

static void test_split_and_repeat(void)
{
    compiled c;
    compile_text(&c, "input x0 : f32[2, 6];\n"
                              "block layer(i, x, y) {\n"
                              "    param layer.{i}.w : f32[6] = normal(0.5 / 2);\n"
                              "    a, b, d = split(x, axis=1, sections=3);\n"
                              "    s = concat(d, b, a, axis=-1);\n"
                              "    return add(s, layer.{i}.w), y;\n"
                              "}\n"
                              "x, y = repeat layer(x0, x0) for i in 1..3;\n"
                              "output x, y;\n",
                              NULL, 0);
    CHECK(c.g != NULL);
    if (c.g) {
        const ir_value *d = find_value(c.g, "layer1.d");
        CHECK(d != NULL);
        if (d) {
            CHECK(d->op == IR_OP_SLICE);
            CHECK_EQ_INT(ir_attr_int(d, "start"), 4);
            CHECK_EQ_INT(ir_attr_int(d, "end"), 6);
        }
        CHECK(find_value(c.g, "layer0.a") == NULL);
        CHECK(strcmp(init_of(c.g, "layer.2.w"), "normal(0.25)") == 0);
        const ir_value *out = find_value(c.g, "layer2.out");
        CHECK(out != NULL);
        CHECK_EQ_INT(c.g->noutputs, 2);
        if (out && c.g->noutputs == 2) {
            CHECK_EQ_INT(c.g->outputs[0], out->id);
            CHECK(strcmp(c.g->values[c.g->outputs[1]]->name, "x0") == 0);
        }
        const ir_value *a2 = find_value(c.g, "layer2.a");
        CHECK(a2 != NULL);
        if (a2)
            CHECK(strcmp(c.g->values[a2->ops[0]]->name, "layer1.out") == 0);
    }
    release(&c);
}

static void test_nested_call_names(void)
{
    compiled c;
    compile_text(&c, "input x : f32[2, 3];\n"
                              "y = exp(add(neg(x), x));\n"
                              "output y;\n",
                              NULL, 0);
    CHECK(c.g != NULL);
    if (c.g) {
        CHECK(find_value(c.g, "y.add") != NULL);
        CHECK(find_value(c.g, "y.add.neg") != NULL);
        const ir_value *y = find_value(c.g, "y");
        CHECK(y != NULL);
        if (y) {
            CHECK_EQ_INT(y->loc.line, 2);
            CHECK_EQ_INT(y->loc.col, 5);
            CHECK_EQ_INT(y->loc.end_col, 24);
        }
    }
    release(&c);
}

/* ---- diagnostics ---- */

static void test_syntax_errors(void)
{
    expect_errors("syntax", "hparam a = ;\nhparam b = 2\ninput x : f32[a];\noutput x x;\n", NULL, 0,
                  "m.qd:1:12: error: unexpected ';'; expected an expression\n"
                  "hparam a = ;\n"
                  "           ^\n"
                  "m.qd:2:13: error: expected ';' at the end of the statement\n"
                  "hparam b = 2\n"
                  "            ^\n"
                  "m.qd:4:10: error: unexpected name 'x'; expected ';' or ','\n"
                  "output x x;\n"
                  "         ^\n");
    expect_errors("syntax at end of file", "input x : f32[2];\ny = add(x,\n", NULL, 0,
                  "m.qd:2:11: error: unexpected end of file; expected an expression\n"
                  "y = add(x,\n"
                  "          ^\n");
}

static void test_op_errors(void)
{
    expect_errors("ops",
                  "hparam B = 2;\nhparam C = 4;\ninput x : f32[B, C];\nparam w : f32[C, 3] = normal(0.02);\n"
                  "y = layer_norm(x);\nz = add(x);\nv = add(x, w);\nu = softmax(x, dim=1);\noutput x;\n",
                  NULL, 0,
                  "m.qd:5:5: error: unknown op 'layer_norm'; did you mean 'layernorm'?\n"
                  "y = layer_norm(x);\n"
                  "    ^~~~~~~~~~~~~\n"
                  "m.qd:6:5: error: op 'add' takes 2 operands, got 1\n"
                  "z = add(x);\n"
                  "    ^~~~~~\n"
                  "m.qd:7:5: error: add: shapes f32[2,4] and f32[4,3] do not broadcast (dimension 0: 2 vs 4)\n"
                  "v = add(x, w);\n"
                  "    ^~~~~~~~~\n"
                  "m.qd:8:16: error: op 'softmax' has no attribute 'dim'; its only attribute is 'axis'\n"
                  "u = softmax(x, dim=1);\n"
                  "               ^~~\n");
    expect_errors("operator on tensors", "input x : f32[2];\ny = x + x;\nz = -x;\noutput x;\n", NULL, 0,
                  "m.qd:2:5: error: operator '+' applies to numbers only; use add(a, b) for tensors\n"
                  "y = x + x;\n"
                  "    ^~~~~\n"
                  "m.qd:3:5: error: '-' negates numbers only; use neg(x) for a tensor\n"
                  "z = -x;\n"
                  "    ^~\n");
    expect_errors("constant range", "input x : f32[2];\ny = mul(x, 1e300);\nz = add(x, 0.5);\noutput y;\n", NULL, 0,
                  "m.qd:2:12: error: constant 1e+300 does not fit in f32\n"
                  "y = mul(x, 1e300);\n"
                  "           ^~~~~\n");
}

static void test_name_errors(void)
{
    expect_errors("names", "input x : f32[2];\ny = exp(x);\ny = x;\nz = exp(yy);\noutput y, y, nope;\n", NULL, 0,
                  "m.qd:3:1: error: redefinition of 'y'\n"
                  "y = x;\n"
                  "^\n"
                  "m.qd:2:1: note: previous definition of 'y' is here\n"
                  "y = exp(x);\n"
                  "^\n"
                  "m.qd:4:9: error: undefined name 'yy'; did you mean 'y'?\n"
                  "z = exp(yy);\n"
                  "        ^~\n"
                  "m.qd:5:11: error: 'y' is already an output\n"
                  "output y, y, nope;\n"
                  "          ^\n"
                  "m.qd:5:14: error: undefined name 'nope'\n"
                  "output y, y, nope;\n"
                  "             ^~~~\n");
}

static void test_hparam_errors(void)
{
    expect_errors("hparams",
                  "hparam a = b + 1;\nhparam b = c * 2;\nhparam c = a;\nhparam d = n_embed;\nhparam n_embd = 8;\n"
                  "hparam big = 9223372036854775807 * 2;\nhparam z = 4 / (n_embd - 8);\nhparam zero = 0;\n"
                  "input x : f32[zero, 2];\noutput x;\n",
                  NULL, 0,
                  "m.qd:1:8: error: hparam 'a' depends on itself: a -> b -> c -> a\n"
                  "hparam a = b + 1;\n"
                  "       ^\n"
                  "m.qd:4:12: error: undefined hparam 'n_embed'; did you mean 'n_embd'?\n"
                  "hparam d = n_embed;\n"
                  "           ^~~~~~~\n"
                  "m.qd:6:14: error: integer overflow: 9223372036854775807 * 2 does not fit in 64 bits\n"
                  "hparam big = 9223372036854775807 * 2;\n"
                  "             ^~~~~~~~~~~~~~~~~~~~~~~\n"
                  "m.qd:7:12: error: division by zero: 4 / 0\n"
                  "hparam z = 4 / (n_embd - 8);\n"
                  "           ^~~~~~~~~~~~~~~~\n"
                  "m.qd:9:15: error: dimension 0 of 'x' is 0; it must be between 1 and 2147483647\n"
                  "input x : f32[zero, 2];\n"
                  "              ^~~~\n");
    fe_define typo[] = {{"n_layers", 24}};
    expect_errors("define typo", "hparam n_layer = 2;\ninput x : f32[n_layer];\noutput x;\n", typo, 1,
                  "m.qd: error: -D n_layers=24: no hparam is named 'n_layers'; did you mean 'n_layer'?\n");
    fe_define unknown[] = {{"width", 3}};
    expect_errors("define unknown", "hparam n_layer = 2;\nhparam T = 4;\ninput x : f32[n_layer];\noutput x;\n",
                  unknown, 1, "m.qd: error: -D width=3: no hparam is named 'width'; the hparams are n_layer, T\n");
    fe_define negative[] = {{"T", -4}};
    expect_errors("define makes dimension negative", "hparam T = 4;\ninput x : f32[T];\noutput x;\n", negative, 1,
                  "m.qd:2:15: error: dimension 0 of 'x' is -4; it must be between 1 and 2147483647\n"
                  "input x : f32[T];\n"
                  "              ^\n");
}

static void test_block_errors(void)
{
    expect_errors("blocks",
                  "input x0 : f32[2, 4];\n"
                  "block h(i, x) {\n"
                  "    param h.{i}.w : f32[4] = ones;\n"
                  "    param shared : f32[4] = zeros;\n"
                  "    z = slice(add(x, h.{i}.w), axis=1, start=i, end=3);\n"
                  "    return z;\n"
                  "}\n"
                  "block g(i, x) {\n"
                  "    hparam bad = 1;\n"
                  "    y = x;\n"
                  "}\n"
                  "x = repeat h(x0) for i in 0..3;\n"
                  "x3 = repeat hh(x0) for j in 0..3;\n"
                  "param p.{i} : f32[2] = zeros;\n"
                  "output x;\n",
                  NULL, 0,
                  "m.qd:9:5: error: hparam is not allowed inside a block; a block holds params, inputs, assignments and one "
                  "return\n"
                  "    hparam bad = 1;\n"
                  "    ^~~~~~~~~~~~~~~\n"
                  "m.qd:8:7: error: block 'g' does not end with a return statement\n"
                  "block g(i, x) {\n"
                  "      ^\n"
                  "m.qd:4:11: error: param 'shared' is declared again in every layer; put '{i}' in its name, like "
                  "'h.{i}.w'\n"
                  "    param shared : f32[4] = zeros;\n"
                  "          ^~~~~~\n"
                  "m.qd:5:15: error: add: shapes f32[2,3] and f32[4] do not broadcast (dimension 1: 3 vs 4)\n"
                  "    z = slice(add(x, h.{i}.w), axis=1, start=i, end=3);\n"
                  "              ^~~~~~~~~~~~~~~\n"
                  "m.qd:12:1: note: in layer 1 of block 'h', instantiated here\n"
                  "x = repeat h(x0) for i in 0..3;\n"
                  "^~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~\n"
                  "m.qd:13:13: error: undefined block 'hh'; did you mean 'h'?\n"
                  "x3 = repeat hh(x0) for j in 0..3;\n"
                  "            ^~\n"
                  "m.qd:14:7: error: 'p.{i}' uses a '{...}' substitution, which is only allowed inside a block\n"
                  "param p.{i} : f32[2] = zeros;\n"
                  "      ^~~~~\n");
}

static void test_block_index_assignment(void)
{
    expect_errors("block index assignment",
                  "input x0 : f32[2];\nblock g(i, x) {\n    i = exp(x);\n    return x;\n}\n"
                  "y = repeat g(x0) for i in 0..2;\noutput y;\n",
                  NULL, 0,
                  "m.qd:3:5: error: 'i' is the block index and cannot be redefined\n"
                  "    i = exp(x);\n"
                  "    ^\n"
                  "m.qd:6:1: note: in layer 0 of block 'g', instantiated here\n"
                  "y = repeat g(x0) for i in 0..2;\n"
                  "^~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~\n");
}

/* Found by fuzz_frontend: redefining a block whose first definition had
 * errors crashed while pointing the note at the first definition. */
static void test_block_redefinition(void)
{
    expect_errors("block redefinition",
                  "input x0 : f32[2];\nblock g(i, x) {\n    y = x;\n}\nblock g(i, x) {\n    return x;\n}\noutput x0;\n",
                  NULL, 0,
                  "m.qd:2:7: error: block 'g' does not end with a return statement\n"
                  "block g(i, x) {\n"
                  "      ^\n"
                  "m.qd:5:7: error: redefinition of block 'g'\n"
                  "block g(i, x) {\n"
                  "      ^\n"
                  "m.qd:2:7: note: previous definition of 'g' is here\n"
                  "block g(i, x) {\n"
                  "      ^\n");
}

static void test_lexical_errors(void)
{
    expect_errors("unterminated comment", "input x : f32[2];\n/* open\n comment\n", NULL, 0,
                  "m.qd:2:1: error: unterminated comment: '/*' has no matching '*/'\n"
                  "/* open\n"
                  "^~\n");
    expect_errors("invalid utf-8", "input x : f32[2];\n# caf\xc3\xa9 is fine here\ny = \xff;\noutput x;\n", NULL, 0,
                  "m.qd:3:5: error: invalid UTF-8 byte 0xff at byte offset 43; model files must be UTF-8\n"
                  "y = \xff;\n"
                  "    ^\n");
    expect_errors("non-ascii character", "input x : f32[2];\ny = \xc3\xa9;\noutput x;\n", NULL, 0,
                  "m.qd:2:5: error: unexpected character U+00E9 '\xc3\xa9'; names and operators are ASCII\n"
                  "y = \xc3\xa9;\n"
                  "    ^\n"
                  "m.qd:2:7: error: unexpected ';'; expected 'repeat' or an expression\n"
                  "y = \xc3\xa9;\n"
                  "     ^\n");
    expect_errors("number literals", "hparam a = 99999999999999999999;\ny = mul(x, 1e999);\n", NULL, 0,
                  "m.qd:1:12: error: integer literal 99999999999999999999 is out of range; the maximum is "
                  "9223372036854775807\n"
                  "hparam a = 99999999999999999999;\n"
                  "           ^~~~~~~~~~~~~~~~~~~~\n"
                  "m.qd:2:12: error: number literal 1e999 is out of range for a 64-bit float\n"
                  "y = mul(x, 1e999);\n"
                  "           ^~~~~\n");
    expect_errors("unterminated string", "input x : f32[2];\ny = cast(x, to=\"f16);\n", NULL, 0,
                  "m.qd:2:16: error: unterminated string literal: '\"' has no closing '\"' on this line\n"
                  "y = cast(x, to=\"f16);\n"
                  "               ^\n"
                  "m.qd:2:22: error: unexpected end of file; expected ')', ',' or an operator\n"
                  "y = cast(x, to=\"f16);\n"
                  "                     ^\n");
}

static void test_empty_and_missing_files(void)
{
    expect_errors("empty", "# only a comment\n\n/* and\n another */\n", NULL, 0,
                  "m.qd: error: empty model file; it must declare inputs, params and outputs\n");
    expect_errors("no outputs", "input x : f32[2];\n", NULL, 0,
                  "m.qd: error: the model has no outputs; add a statement like 'output logits;'\n");
    compiled c;
    compile_path(&c, "tests/unit/no-such-model.qd", NULL, 0);
    CHECK(c.g == NULL);
    CHECK(strcmp(c.text, "tests/unit/no-such-model.qd: error: cannot open model file: No such file or directory\n") ==
          0);
    release(&c);
    compile_path(&c, "tests/unit", NULL, 0);
    CHECK(c.g == NULL);
    CHECK(strcmp(c.text, "tests/unit: error: cannot read model file: Is a directory\n") == 0);
    release(&c);
}

static void test_limits(void)
{
    size_t big = 16u * 1024u * 1024u + 1;
    char *spaces = malloc(big);
    memset(spaces, ' ', big);
    compiled c;
    compile_source(&c, spaces, big, NULL, 0);
    CHECK(c.g == NULL);
    CHECK(strcmp(c.text, "m.qd: error: model file is 16777217 bytes; the limit is 16777216 bytes (16 MiB)\n") == 0);
    release(&c);
    free(spaces);

    /* 300 nested parentheses stop at the 257th, before bison's stack. */
    char deep[1024];
    int n = snprintf(deep, sizeof deep, "input x : f32[2];\ny = ");
    for (int k = 0; k < 300; k++)
        deep[n++] = '(';
    strcpy(deep + n, "1);\n");
    compile_text(&c, deep, NULL, 0);
    CHECK(c.g == NULL);
    CHECK(starts_with(c.text, "m.qd:2:261: error: brackets are nested more than 256 levels deep\n"));
    CHECK_EQ_INT(ir_diag_error_count(c.d), 1);
    release(&c);

    /* A flat chain of 300 additions is as deep a tree as 300 parentheses. */
    char chain[1024];
    n = snprintf(chain, sizeof chain, "hparam a = 1");
    for (int k = 0; k < 300; k++)
        n += snprintf(chain + n, sizeof chain - (size_t)n, "+1");
    snprintf(chain + n, sizeof chain - (size_t)n, ";\n");
    compile_text(&c, chain, NULL, 0);
    CHECK(c.g == NULL);
    CHECK(starts_with(c.text, "m.qd:1:12: error: expression is too deep: more than 256 nested operators or calls; "
                          "split it up\n"));
    CHECK_EQ_INT(ir_diag_error_count(c.d), 1);
    release(&c);

    char name[400];
    memset(name, 'a', 300);
    strcpy(name + 300, " = 1;\n");
    compile_text(&c, name, NULL, 0);
    CHECK(c.g == NULL);
    CHECK(starts_with(c.text, "m.qd:1:1: error: name is 300 bytes long; the limit is 256\n"));
    release(&c);

    expect_errors("too many layers",
                  "hparam n = 100000;\ninput x0 : f32[2];\nblock h(i, x) {\n    return x;\n}\n"
                  "x = repeat h(x0) for i in 0..n;\noutput x;\n",
                  NULL, 0,
                  "m.qd:6:30: error: repeat of 100000 layers exceeds the limit of 4096\n"
                  "x = repeat h(x0) for i in 0..n;\n"
                  "                             ^\n");
    expect_errors("huge tensor", "input x : f32[1000000, 1000000, 1000000];\noutput x;\n", NULL, 0,
                  "m.qd:1:33: error: 'x' has more than 1099511627776 elements\n"
                  "input x : f32[1000000, 1000000, 1000000];\n"
                  "                                ^~~~~~~\n");
}

int main(void)
{
    test_gpt2_small();
    test_gpt2_medium_by_defines();
    test_tiny_matches_defines();
    test_scalar_constants();
    test_hparam_arithmetic();
    test_split_and_repeat();
    test_nested_call_names();
    test_syntax_errors();
    test_op_errors();
    test_name_errors();
    test_hparam_errors();
    test_block_errors();
    test_block_redefinition();
    test_block_index_assignment();
    test_lexical_errors();
    test_empty_and_missing_files();
    test_limits();
    return check_finish();
}
