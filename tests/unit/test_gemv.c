/* Matrix-vector products and fused product epilogues in the JIT against
 * the reference interpreter. Linear and matmul with at most
 * CG_GEMV_MAX_ROWS rows per matrix run each of the three GEMV kernels,
 * with sizes that do not divide the vector width, the row groups or the
 * chunks of K. fused.linear and fused.matmul run on the GEMV and on the
 * GEMM with every kind of epilogue operand. GPT-2 graphs after the
 * fuse-elementwise pass are checked against the interpreter on the
 * unfused graph.
 *
 * Tolerance: |jit - ref| <= atol + rtol * |ref| with rtol = 1e-4 and
 * atol = 1e-5 * sqrt(K), because the JIT sums K products in f32 lanes and
 * the interpreter in double. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixtures.h"
#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "ir/ir.h"
#include "ir/text.h"
#include "passes/manager.h"
#include "runtime/interp.h"
#include "runtime/tensor.h"

static const ir_loc no_loc = {0};
static fx_rng rng = {FX_RNG_XORSHIFT, 0x9e3779b97f4a7c15ull};

/* CPU names for the targets under test: the host (16 floats per vector
 * on AVX-512 hosts), haswell (8) and x86-64 (4). */
static const char *const cpus[] = {NULL, "haswell", "x86-64"};
#define NCPUS (sizeof cpus / sizeof *cpus)

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

/* Adds a param (or an input) of the given dims filled from [-1, 1). */
static int leaf(fx_fixture *f, bool param, const char *name, int rank, const int64_t *dims)
{
    ir_type t = {IR_F32, rank, {0}};
    memcpy(t.dims, dims, sizeof(int64_t) * (size_t)rank);
    int id = ir_add_leaf(f->g, param ? IR_OP_PARAM : IR_OP_INPUT, name, t, NULL, no_loc);
    rt_weights_set(param ? f->weights : f->inputs, name, random_tensor(&t, -1, 1));
    return id;
}

/* Fills every param and input of g that has no tensor yet. */
static void fill_leaves(fx_fixture *f, double lo, double hi)
{
    for (int i = 0; i < f->g->nvalues; i++) {
        const ir_value *v = f->g->values[i];
        rt_weights *w = NULL;
        if (v->op == IR_OP_PARAM)
            w = f->weights;
        else if (v->op == IR_OP_INPUT)
            w = f->inputs;
        if (w && !rt_weights_get(w, v->name))
            rt_weights_set(w, v->name, random_tensor(&v->type, lo, hi));
    }
}

/* Returns the number of elements of got that differ from want by more
 * than atol + rtol * |want|, and prints the first. */
static int64_t count_mismatches(const char *label, const rt_tensor *got, const rt_tensor *want, double atol,
                                double rtol)
{
    if (!got || !want || rt_tensor_numel(got) != rt_tensor_numel(want)) {
        fprintf(stderr, "%s: missing output or element count differs\n", label);
        return -1;
    }
    int64_t bad = 0;
    for (int64_t i = 0; i < rt_tensor_numel(got); i++) {
        double a = ((const float *)got->data)[i], b = ((const float *)want->data)[i];
        bool ok = isnan(b) ? isnan(a) : fabs(a - b) <= atol + rtol * fabs(b);
        if (!ok && bad++ == 0)
            fprintf(stderr, "%s: element %lld: jit %.9g, interpreter %.9g\n", label, (long long)i, a, b);
    }
    return bad;
}

/* Runs `ref` in the interpreter and `g` in the JIT on `cpu` and checks
 * every output of g against the output of ref with the same index. */
static void compare_graphs(fx_fixture *f, const ir_graph *ref, const ir_graph *g, const char *cpu, const char *label,
                           double atol, double rtol)
{
    int n = g->noutputs;
    rt_tensor *want[8] = {0}, *got[8] = {0};
    CHECK_EQ_INT(ir_verify(g, NULL), 0);
    CHECK_EQ_INT(rt_interp_run(ref, f->weights, f->inputs, want, f->diag), 0);
    cg_options o = cg_default_options();
    o.threads = 2;
    o.cpu = cpu;
    cg_module *m = cg_compile(g, &o, f->diag);
    CHECK(m != NULL);
    if (m) {
        CHECK_EQ_INT(cg_run(m, f->weights, f->inputs, got, f->diag), 0);
        for (int i = 0; i < n; i++) {
            char what[160];
            snprintf(what, sizeof what, "%s output %d on %s", label, i, cpu ? cpu : "host");
            CHECK_EQ_INT(count_mismatches(what, got[i], want[i], atol, rtol), 0);
        }
    }
    for (int i = 0; i < n; i++) {
        rt_tensor_free(want[i]);
        rt_tensor_free(got[i]);
    }
    cg_free(m);
}

/* Returns the bytes of B operands packed at bind time under the plan. */
static int64_t packed_bytes(const ir_graph *g, ir_diag *d)
{
    cg_memory_stats s;
    if (cg_plan_memory(g, NULL, &s, d) != 0)
        return -1;
    return s.packed_bytes;
}

/* ---- plain products on the GEMV path ---- */

/* linear x[M, K] W[K, N] (+ b): the single-block kernel for small N, the
 * split-K kernel with and without a remainder of K rows, K shorter than
 * a vector, and M = 5, which takes the GEMM, for contrast. */
static void test_gemv_linear(void)
{
    static const struct {
        int64_t m, k, n;
        bool bias;
    } cases[] = {
        {1, 1, 1, true},     {1, 7, 13, false},    {2, 33, 64, true},     {3, 17, 129, true},
        {4, 301, 200, true}, {1, 768, 97, false},  {1, 300, 1000, true},  {2, 1001, 33, false},
        {1, 64, 3000, true}, {4, 5, 257, false},   {5, 40, 70, true},
    };
    for (size_t s = 0; s < sizeof cases / sizeof *cases; s++) {
        for (size_t c = 0; c < NCPUS; c++) {
            fx_fixture f = fx_fixture_new("gemv_linear");
            int64_t xd[2] = {cases[s].m, cases[s].k}, wd[2] = {cases[s].k, cases[s].n};
            int ops[3] = {leaf(&f, false, "x", 2, xd), leaf(&f, true, "w", 2, wd), -1};
            if (cases[s].bias)
                ops[2] = leaf(&f, true, "b", 1, &cases[s].n);
            ir_add_output(f.g, ir_add(f.g, IR_OP_LINEAR, "y", ops, cases[s].bias ? 3 : 2, NULL, no_loc));
            char label[96];
            snprintf(label, sizeof label, "linear %lldx%lldx%lld%s", (long long)cases[s].m, (long long)cases[s].k,
                     (long long)cases[s].n, cases[s].bias ? " with bias" : "");
            compare_graphs(&f, f.g, f.g, cpus[c], label, 1e-5 * sqrt((double)cases[s].k), 1e-4);
            if (c == 0) {
                /* The GEMV reads W in place; the GEMM packs it at bind. */
                int64_t packed = packed_bytes(f.g, f.diag);
                if (cases[s].m <= 4)
                    CHECK_EQ_INT(packed, 0);
                else
                    CHECK(packed >= cases[s].k * cases[s].n * 4);
            }
            fx_fixture_free(&f);
        }
    }
}

/* Batched matmul with broadcast batch dims and B as an input, as the
 * key-value cache is. Both layouts of B are covered: the dot-product
 * kernel with K % vector width left over, with a whole vector after its
 * unrolled steps (K = 50) and N not a multiple of the 64 rows per task,
 * and the B[K, N] kernels. */
static void test_gemv_matmul(void)
{
    static const struct {
        int ra;
        int64_t a[4];
        int rb;
        int64_t b[4];
        int transpose_b;
    } cases[] = {
        {4, {1, 3, 1, 64}, 4, {1, 3, 37, 64}, 1},   /* attention scores of one token */
        {4, {1, 3, 1, 37}, 4, {1, 3, 37, 64}, 0},   /* attention times V */
        {3, {2, 3, 19}, 3, {2, 130, 19}, 1},
        {3, {2, 3, 50}, 3, {2, 21, 50}, 1},
        {3, {2, 4, 7}, 2, {201, 7}, 1},             /* B broadcast over the batch */
        {2, {1, 768}, 2, {203, 768}, 1},            /* an LM head */
        {3, {3, 2, 300}, 3, {1, 300, 150}, 0},      /* split K, B broadcast */
        {4, {2, 1, 1, 9}, 4, {1, 3, 9, 20}, 0},     /* A and B broadcast */
        {2, {4, 1}, 2, {1, 5}, 0},
    };
    for (size_t s = 0; s < sizeof cases / sizeof *cases; s++) {
        for (size_t c = 0; c < NCPUS; c++) {
            fx_fixture f = fx_fixture_new("gemv_matmul");
            int ops[2] = {leaf(&f, false, "a", cases[s].ra, cases[s].a), leaf(&f, false, "b", cases[s].rb, cases[s].b)};
            ir_attrs attrs = ir_attrs_for(IR_OP_MATMUL);
            ir_attrs_int(&attrs, "transpose_b", cases[s].transpose_b);
            ir_add_output(f.g, ir_add(f.g, IR_OP_MATMUL, "y", ops, 2, &attrs, no_loc));
            char label[64];
            snprintf(label, sizeof label, "batched matmul case %zu", s);
            double k = (double)cases[s].a[cases[s].ra - 1];
            compare_graphs(&f, f.g, f.g, cpus[c], label, 1e-5 * sqrt(k), 1e-4);
            fx_fixture_free(&f);
        }
    }
}

/* ---- fused products ---- */

/* Adds the product `op` (linear, or matmul with transpose_b) of x[M, K]
 * and a param B, then an epilogue chain over it: a bias add, gelu, a
 * residual add of the product's shape and a product with a scalar. With
 * `column` it also subtracts an [M, 1] operand, which only the pass after
 * the kernel can read. Returns the chain's last value. */
static int product_chain(fx_fixture *f, ir_op op, int64_t m, int64_t k, int64_t n, bool column)
{
    int64_t xd[2] = {m, k}, wd[2] = {op == IR_OP_LINEAR ? k : n, op == IR_OP_LINEAR ? n : k};
    int64_t yd[2] = {m, n}, one = 1, cd[2] = {m, 1};
    int ops[3] = {leaf(f, false, "x", 2, xd), leaf(f, true, "w", 2, wd), leaf(f, true, "b", 1, &n)};
    int y;
    if (op == IR_OP_LINEAR) {
        y = ir_add(f->g, IR_OP_LINEAR, "y", ops, 3, NULL, no_loc);
    } else {
        ir_attrs attrs = ir_attrs_for(IR_OP_MATMUL);
        ir_attrs_int(&attrs, "transpose_b", 1);
        int p = ir_add(f->g, IR_OP_MATMUL, "p", ops, 2, &attrs, no_loc);
        int pb[2] = {p, ops[2]};
        y = ir_add(f->g, IR_OP_ADD, "y", pb, 2, NULL, no_loc);
    }
    int act = ir_add(f->g, IR_OP_GELU, "act", &y, 1, NULL, no_loc);
    int res[2] = {leaf(f, false, "res", 2, yd), act};
    int sum = ir_add(f->g, IR_OP_ADD, "sum", res, 2, NULL, no_loc);
    int sc[2] = {sum, leaf(f, false, "s", 1, &one)};
    int out = ir_add(f->g, IR_OP_MUL, "scaled", sc, 2, NULL, no_loc);
    if (column) {
        int col[2] = {out, leaf(f, false, "col", 2, cd)};
        out = ir_add(f->g, IR_OP_SUB, "shifted", col, 2, NULL, no_loc);
    }
    return out;
}

/* The pass folds each chain into the product as one fused op, the
 * interpreter on the fused graph stays within f32 rounding of the
 * unfused graph (the bias add rounds once more), and the JIT on the fused
 * graph matches the interpreter on the unfused one, for the GEMV (M <= 4)
 * and the GEMM (M > 4) on every target. */
static void test_fused_products(void)
{
    static const struct {
        ir_op op;
        int64_t m, k, n;
        bool column;
    } cases[] = {
        {IR_OP_LINEAR, 1, 77, 200, false}, {IR_OP_LINEAR, 3, 20, 45, true},  {IR_OP_LINEAR, 1, 300, 33, false},
        {IR_OP_LINEAR, 37, 300, 101, false}, {IR_OP_LINEAR, 9, 50, 70, true}, {IR_OP_MATMUL, 1, 40, 131, false},
        {IR_OP_MATMUL, 2, 19, 7, true},     {IR_OP_MATMUL, 20, 33, 50, false}, {IR_OP_MATMUL, 17, 600, 97, true},
    };
    for (size_t s = 0; s < sizeof cases / sizeof *cases; s++) {
        fx_fixture f = fx_fixture_new("fused_products");
        ir_add_output(f.g, product_chain(&f, cases[s].op, cases[s].m, cases[s].k, cases[s].n, cases[s].column));
        ir_graph *fused = ir_graph_clone(f.g);
        CHECK_EQ_INT(pass_run_text(fused, "fuse-elementwise", f.diag), 0);
        ir_op want = cases[s].op == IR_OP_LINEAR ? IR_OP_FUSED_LINEAR : IR_OP_FUSED_MATMUL;
        CHECK_EQ_INT(fx_count_live_ops(fused, want), 1);
        CHECK_EQ_INT(fx_count_live_ops(fused, IR_OP_FUSED_ELEMENTWISE), 0);
        CHECK_EQ_INT(fx_count_live_ops(fused, cases[s].op), 0);

        char label[96];
        snprintf(label, sizeof label, "%s %lldx%lldx%lld%s", ir_op_get(want)->name, (long long)cases[s].m,
                 (long long)cases[s].k, (long long)cases[s].n, cases[s].column ? " with a column operand" : "");
        double atol = 1e-5 * sqrt((double)cases[s].k);
        rt_tensor *plain = NULL, *folded = NULL;
        CHECK_EQ_INT(rt_interp_run(f.g, f.weights, f.inputs, &plain, f.diag), 0);
        CHECK_EQ_INT(rt_interp_run(fused, f.weights, f.inputs, &folded, f.diag), 0);
        CHECK_EQ_INT(count_mismatches(label, folded, plain, 1e-6, 1e-6), 0);
        rt_tensor_free(plain);
        rt_tensor_free(folded);
        for (size_t c = 0; c < NCPUS; c++)
            compare_graphs(&f, f.g, fused, cpus[c], label, atol, 1e-4);
        ir_graph_free(fused);
        fx_fixture_free(&f);
    }
}

/* fused.matmul without bias matches the interpreter on the unfused graph
 * bit for bit in the interpreter, and a second run of the pass extends an
 * existing fused product instead of starting a new chain. */
static void test_fused_product_bits(void)
{
    static const char text[] = "graph @scores {\n"
                               "  %q = input : f32[2,3,1,16]\n"
                               "  %k = input : f32[2,3,9,16]\n"
                               "  %s = matmul %q, %k {transpose_b=1} : f32[2,3,1,9]\n"
                               "  %scaled = scale %s {factor=0.25} : f32[2,3,1,9]\n"
                               "  return %scaled\n"
                               "}\n";
    fx_fixture f = fx_fixture_new("bits");
    ir_graph_free(f.g);
    f.g = ir_parse_string("scores.qir", text, strlen(text), f.diag);
    CHECK(f.g != NULL);
    if (!f.g) {
        f.g = ir_graph_new("empty", f.diag);
        fx_fixture_free(&f);
        return;
    }
    fill_leaves(&f, -2, 2);
    ir_graph *fused = ir_graph_clone(f.g);
    CHECK_EQ_INT(pass_run_text(fused, "fuse-elementwise", f.diag), 0);
    CHECK_EQ_INT(fx_count_live_ops(fused, IR_OP_FUSED_MATMUL), 1);
    rt_tensor *plain = NULL, *folded = NULL;
    CHECK_EQ_INT(rt_interp_run(f.g, f.weights, f.inputs, &plain, f.diag), 0);
    CHECK_EQ_INT(rt_interp_run(fused, f.weights, f.inputs, &folded, f.diag), 0);
    CHECK(plain != NULL);
    CHECK(folded != NULL);
    if (plain && folded)
        CHECK(memcmp(plain->data, folded->data, rt_tensor_nbytes(plain)) == 0);
    compare_graphs(&f, f.g, fused, NULL, "scores", 1e-5 * 4, 1e-4);
    rt_tensor_free(plain);
    rt_tensor_free(folded);
    ir_graph_free(fused);
    fx_fixture_free(&f);
}

/* The shape rule of fused products rejects epilogue operands that would
 * change the product's type, invalid programs and non-f32 operands, with
 * a message that names the problem. */
static void test_fused_product_errors(void)
{
    static const struct {
        const char *program;
        int rank;
        int64_t dims[2];
        ir_dtype dtype;
        const char *message;
    } cases[] = {
        {"$0 $1 add", 2, {3, 5}, IR_F32, "does not broadcast to the product type"},
        {"$0 $1 add", 2, {2, 7}, IR_F32, "does not broadcast to the product type"},
        {"$0 $1", 1, {5}, IR_F32, "leaves 2 values"},
        {"$0 gelu", 1, {5}, IR_F32, "does not use operand $1"},
        {"$0 $1 add", 1, {5}, IR_I32, "fused products take f32 operands"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *text = NULL;
        size_t len = 0;
        FILE *sink = open_memstream(&text, &len);
        ir_diag *d = ir_diag_new(sink);
        ir_graph *g = ir_graph_new("errors", d);
        ir_type xt = {IR_F32, 2, {2, 4}}, wt = {IR_F32, 2, {4, 5}}, et = {cases[i].dtype, cases[i].rank, {0}};
        memcpy(et.dims, cases[i].dims, sizeof cases[i].dims);
        int ops[3] = {ir_add_leaf(g, IR_OP_INPUT, "x", xt, NULL, no_loc), ir_add_leaf(g, IR_OP_PARAM, "w", wt, NULL, no_loc),
                      ir_add_leaf(g, IR_OP_INPUT, "e", et, NULL, no_loc)};
        ir_attrs attrs = ir_attrs_for(IR_OP_FUSED_LINEAR);
        ir_attrs_str(&attrs, "program", cases[i].program);
        CHECK_EQ_INT(ir_add(g, IR_OP_FUSED_LINEAR, "y", ops, 3, &attrs, no_loc), -1);
        ir_attrs_clear(&attrs);
        ir_graph_free(g);
        ir_diag_free(d);
        fclose(sink);
        bool named = text && strstr(text, cases[i].message) != NULL;
        if (!named)
            fprintf(stderr, "fused.linear error %zu: expected \"%s\" in: %s\n", i, cases[i].message, text ? text : "");
        CHECK(named);
        free(text);
    }
}

/* ---- GPT-2 ---- */

static ir_graph *compile_model(const char *path, const fe_define *defs, int ndefs, ir_diag *d)
{
    ir_graph *g = fe_compile_file(path, defs, ndefs, d);
    CHECK(g != NULL);
    return g;
}

/* examples/gpt2.qd after fuse-elementwise. Per layer, the attention
 * projection and the MLP projection absorb the residual add, c_fc absorbs
 * gelu and the attention scores absorb their scale. The LM head and
 * c_attn have no elementwise user. The JIT on the fused graph (GEMM
 * epilogues) matches the interpreter on the unfused graph, and
 * epilogue=false leaves the graph as it was. */
static void test_gpt2_prefill_fused(void)
{
    fx_fixture f = fx_fixture_new("gpt2");
    ir_graph_free(f.g);
    fe_define defs[] = {{"n_layer", 2}, {"n_embd", 48}, {"n_head", 3}, {"n_vocab", 101}, {"n_ctx", 20},
                        {"T", 17}, {"B", 2}};
    f.g = compile_model(QUADC_SOURCE_DIR "/examples/gpt2.qd", defs, 7, f.diag);
    if (!f.g) {
        f.g = ir_graph_new("empty", f.diag);
        fx_fixture_free(&f);
        return;
    }
    fill_leaves(&f, -0.1, 0.1);
    int64_t ids[2] = {2, 17};
    ir_type idt = {IR_I32, 2, {ids[0], ids[1]}};
    rt_weights_set(f.inputs, "idx", random_tensor(&idt, 0, 101));
    rt_weights_set(f.inputs, "targets", random_tensor(&idt, 0, 101));

    ir_graph *fused = ir_graph_clone(f.g);
    CHECK_EQ_INT(pass_run_text(fused, "fuse-elementwise", f.diag), 0);
    CHECK_EQ_INT(fx_count_live_ops(fused, IR_OP_FUSED_LINEAR), 2 * 3);
    CHECK_EQ_INT(fx_count_live_ops(fused, IR_OP_FUSED_MATMUL), 2);
    CHECK_EQ_INT(fx_count_live_ops(fused, IR_OP_LINEAR), 2);
    CHECK_EQ_INT(fx_count_live_ops(fused, IR_OP_MATMUL), 2 + 1);
    compare_graphs(&f, f.g, fused, NULL, "gpt2 fused", 1e-4, 1e-3);

    /* Without epilogues the pass finds no chain of two elementwise ops. */
    ir_graph *plain = ir_graph_clone(f.g);
    CHECK_EQ_INT(pass_run_text(plain, "fuse-elementwise{epilogue=false}", f.diag), 0);
    CHECK_EQ_INT(fx_count_live_ops(plain, IR_OP_FUSED_LINEAR) + fx_count_live_ops(plain, IR_OP_FUSED_MATMUL), 0);
    CHECK_EQ_INT(fx_count_live_ops(plain, IR_OP_FUSED_ELEMENTWISE), 0);
    CHECK_EQ_INT(plain->nvalues, f.g->nvalues);
    ir_graph_free(plain);
    ir_graph_free(fused);
    fx_fixture_free(&f);
}

/* examples/gpt2_kv.qd decoding one token (T = 1) at cache position 5:
 * every product takes the GEMV path, the fused ones with their epilogue,
 * against the interpreter on the unfused graph. */
static void test_gpt2_decode_fused(void)
{
    fx_fixture f = fx_fixture_new("gpt2_kv");
    ir_graph_free(f.g);
    fe_define defs[] = {{"n_layer", 2}, {"n_embd", 48}, {"n_head", 3}, {"n_vocab", 101}, {"n_ctx", 20},
                        {"n_cache", 11}, {"T", 1}};
    f.g = compile_model(QUADC_SOURCE_DIR "/examples/gpt2_kv.qd", defs, 7, f.diag);
    if (!f.g) {
        f.g = ir_graph_new("empty", f.diag);
        fx_fixture_free(&f);
        return;
    }
    int64_t one = 1, ids[2] = {1, 1};
    rt_tensor *idx = rt_tensor_new(IR_I32, 2, ids), *pos = rt_tensor_new(IR_I32, 0, NULL);
    rt_tensor *positions = rt_tensor_new(IR_I32, 1, &one);
    ((int32_t *)idx->data)[0] = 42;
    ((int32_t *)pos->data)[0] = 5;
    ((int32_t *)positions->data)[0] = 5;
    rt_weights_set(f.inputs, "idx", idx);
    rt_weights_set(f.inputs, "pos", pos);
    rt_weights_set(f.inputs, "positions", positions);
    fill_leaves(&f, -0.1, 0.1); /* the caches hold earlier positions */

    ir_graph *fused = ir_graph_clone(f.g);
    CHECK_EQ_INT(pass_run_text(fused, "fuse-elementwise", f.diag), 0);
    CHECK_EQ_INT(fx_count_live_ops(fused, IR_OP_FUSED_LINEAR), 2 * 3);
    CHECK_EQ_INT(fx_count_live_ops(fused, IR_OP_FUSED_MATMUL), 2);
    CHECK_EQ_INT(packed_bytes(fused, f.diag), 0);
    for (size_t c = 0; c < NCPUS; c++)
        compare_graphs(&f, f.g, fused, cpus[c], "gpt2 decode fused", 1e-4, 1e-3);
    ir_graph_free(fused);
    fx_fixture_free(&f);
}

int main(void)
{
    test_gemv_linear();
    test_gemv_matmul();
    test_fused_products();
    test_fused_product_bits();
    test_fused_product_errors();
    test_gpt2_prefill_fused();
    test_gpt2_decode_fused();
    return check_finish();
}
