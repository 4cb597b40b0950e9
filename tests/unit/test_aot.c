/* Ahead-of-time bundles against the reference interpreter and the JIT. A
 * tiny random GPT-2 (examples/gpt2.qd) is written as safetensors and built
 * into an object and a header. The system C compiler ($CC, else cc) links
 * them with a C program as `cc main.c model.o -lm -lpthread`, once with
 * embedded weights and once with a weights file. The program's logits and
 * loss must match the interpreter within rtol = 1e-3, atol = 1e-4 (the
 * JIT's whole-GPT-2 tolerance, because f32 rounding compounds over the
 * layers) and the JIT's within the same tolerance. Runs on 1 and 3
 * threads must agree exactly, because every task writes disjoint outputs
 * with the same arithmetic. The init status codes for a missing file, a
 * file of another bundle and an invalid thread count are checked too. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "codegen/aot.h"
#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "runtime/interp.h"
#include "runtime/safetensors.h"

#define RTOL 1e-3
#define ATOL 1e-4

static fx_rng rng = {FX_RNG_XORSHIFT, 0x2545f4914f6cdd1dull};

typedef struct aot_case {
    char dir[64];
    ir_diag *diag;
    ir_graph *g;
    rt_weights *weights;
    rt_weights *inputs;
    rt_tensor *expected[2]; /* interpreter: logits, loss */
} aot_case;

static char *path_in(const aot_case *c, const char *name)
{
    static char buf[4][256];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 256, "%s/%s", c->dir, name);
    return p;
}

/* Builds the graph, writes random weights with the safetensors writer,
 * reads them back and runs the interpreter. Returns 0 or -1. */
static int case_setup(aot_case *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "/tmp/quadc-test-aot-XXXXXX");
    if (!mkdtemp(c->dir))
        return -1;
    c->diag = ir_diag_new(stderr);
    fe_define defs[] = {{"n_layer", 2}, {"n_embd", 48}, {"n_head", 3}, {"n_vocab", 101},
                        {"n_ctx", 20},  {"T", 17},      {"B", 2}};
    c->g = fe_compile_file(QUADC_SOURCE_DIR "/examples/gpt2.qd", defs, 7, c->diag);
    if (!c->g)
        return -1;
    rt_weights *w = rt_weights_new();
    fx_set_uniform_gpt2_weights(&rng, c->g, 1.0, w);
    int rc = rt_safetensors_write(path_in(c, "tiny.safetensors"), w, c->diag);
    rt_weights_free(w);
    if (rc != 0)
        return -1;
    c->weights = rt_safetensors_read(path_in(c, "tiny.safetensors"), c->diag);
    c->inputs = rt_weights_new();
    int64_t dims[2] = {2, 17};
    rt_weights_set(c->inputs, "idx", fx_uniform_tensor(&rng, IR_I32, 2, dims, 0, 101));
    rt_weights_set(c->inputs, "targets", fx_uniform_tensor(&rng, IR_I32, 2, dims, 0, 101));
    rt_tensor *idx = rt_weights_get(c->inputs, "idx"), *targets = rt_weights_get(c->inputs, "targets");
    if (!c->weights || fx_write_file(path_in(c, "inputs.bin"), idx->data, rt_tensor_nbytes(idx), targets->data,
                                  rt_tensor_nbytes(targets)) != 0)
        return -1;
    return rt_interp_run(c->g, c->weights, c->inputs, c->expected, c->diag);
}

static void case_cleanup(aot_case *c)
{
    static const char *const files[] = {"tiny.safetensors", "inputs.bin", "tiny.o", "tiny.h", "tiny.weights",
                                        "other.weights", "main.c", "main", "out1.bin", "out3.bin"};
    for (size_t k = 0; k < sizeof files / sizeof *files; k++)
        unlink(path_in(c, files[k]));
    rmdir(c->dir);
    rt_tensor_free(c->expected[0]);
    rt_tensor_free(c->expected[1]);
    rt_weights_free(c->weights);
    rt_weights_free(c->inputs);
    ir_graph_free(c->g);
    ir_diag_free(c->diag);
}

static int run_main(const aot_case *c, const char *weights, int threads, const char *out)
{
    char command[1024];
    snprintf(command, sizeof command, "%s %s %d %s %s", path_in(c, "main"), weights, threads, path_in(c, "inputs.bin"),
             out ? path_in(c, out) : "/dev/null");
    return fx_run_command(command);
}

/* Returns the number of elements outside |got - want| <= ATOL + RTOL |want|. */
static int64_t count_mismatches(const float *got, const float *want, int64_t n, const char *label)
{
    int64_t bad = 0;
    for (int64_t k = 0; k < n; k++) {
        if (fabs((double)got[k] - want[k]) <= ATOL + RTOL * fabs((double)want[k]))
            continue;
        if (bad++ < 3)
            fprintf(stderr, "%s: element %lld is %.9g, expected %.9g\n", label, (long long)k, got[k], want[k]);
    }
    return bad;
}

static void test_bundle(bool embed)
{
    const char *mode = embed ? "embed" : "file";
    aot_case c;
    int setup = case_setup(&c);
    CHECK_EQ_INT(setup, 0);
    if (setup != 0) {
        case_cleanup(&c);
        return;
    }

    cg_aot_options o = cg_aot_default_options();
    o.prefix = "tiny";
    o.threads_max = 4;
    o.embed_weights = embed;
    cg_aot_layout *l = cg_aot_plan(c.g, c.weights, &o, c.diag);
    CHECK(l != NULL);
    if (!l) {
        case_cleanup(&c);
        return;
    }
    CHECK_EQ_INT(cg_aot_write_object(l, path_in(&c, "tiny.o"), c.diag), 0);
    CHECK_EQ_INT(cg_aot_write_header(l, path_in(&c, "tiny.h"), c.diag), 0);
    CHECK_EQ_INT(cg_aot_write_weights(l, path_in(&c, "tiny.weights"), c.diag), 0);
    cg_aot_layout_free(l);
    CHECK_EQ_INT(fx_write_file(path_in(&c, "main.c"), fx_tiny_bundle_main, strlen(fx_tiny_bundle_main), NULL, 0), 0);

    const char *cc = getenv("CC") && getenv("CC")[0] ? getenv("CC") : "cc";
    char command[1024];
    snprintf(command, sizeof command, "%s -std=c11 -O1 -o %s %s %s -lm -lpthread", cc, path_in(&c, "main"),
             path_in(&c, "main.c"), path_in(&c, "tiny.o"));
    int linked = fx_run_command(command);
    CHECK_EQ_INT(linked, 0);
    if (linked != 0) {
        fprintf(stderr, "bundle %s: '%s' failed\n", mode, command);
        case_cleanup(&c);
        return;
    }

    char weights[256];
    snprintf(weights, sizeof weights, "%s", embed ? "-" : path_in(&c, "tiny.weights"));
    CHECK_EQ_INT(run_main(&c, weights, 1, "out1.bin"), 0);
    CHECK_EQ_INT(run_main(&c, weights, 3, "out3.bin"), 0);
    int64_t nlogits = rt_tensor_numel(c.expected[0]);
    float *one = fx_read_floats(path_in(&c, "out1.bin"), (size_t)nlogits + 1);
    float *three = fx_read_floats(path_in(&c, "out3.bin"), (size_t)nlogits + 1);
    CHECK(one != NULL);
    CHECK(three != NULL);
    if (one && three) {
        char label[64];
        snprintf(label, sizeof label, "bundle %s vs interpreter", mode);
        CHECK_EQ_INT(count_mismatches(one, c.expected[0]->data, nlogits, label), 0);
        CHECK_EQ_INT(count_mismatches(one + nlogits, c.expected[1]->data, 1, label), 0);
        CHECK(memcmp(one, three, sizeof *one * (size_t)(nlogits + 1)) == 0);

        cg_module *jit = cg_compile(c.g, NULL, c.diag);
        rt_tensor *jit_out[2] = {NULL, NULL};
        CHECK(jit != NULL);
        CHECK(jit && cg_run(jit, c.weights, c.inputs, jit_out, c.diag) == 0);
        snprintf(label, sizeof label, "bundle %s vs JIT", mode);
        if (jit_out[0]) {
            CHECK_EQ_INT(count_mismatches(one, jit_out[0]->data, nlogits, label), 0);
            CHECK_EQ_INT(count_mismatches(one + nlogits, jit_out[1]->data, 1, label), 0);
        }
        rt_tensor_free(jit_out[0]);
        rt_tensor_free(jit_out[1]);
        cg_free(jit);
    }
    free(one);
    free(three);

    /* init failures: no file, a file of another bundle, bad thread counts. */
    CHECK_EQ_INT(run_main(&c, path_in(&c, "missing.weights"), 1, NULL), 102);
    CHECK_EQ_INT(fx_write_file(path_in(&c, "other.weights"), "QDCWGT01", 8, NULL, 0), 0);
    CHECK_EQ_INT(run_main(&c, path_in(&c, "other.weights"), 1, NULL), 103);
    CHECK_EQ_INT(run_main(&c, weights, 0, NULL), 100);
    CHECK_EQ_INT(run_main(&c, weights, 5, NULL), 100);
    if (!embed)
        CHECK_EQ_INT(run_main(&c, "-", 1, NULL), 100);
    case_cleanup(&c);
}

/* A weights set that lacks a param or has a wrong shape is rejected with
 * the tensor's name. */
static void test_weights_mismatch(void)
{
    aot_case c;
    int setup = case_setup(&c);
    CHECK_EQ_INT(setup, 0);
    if (setup == 0) {
        cg_aot_options o = cg_aot_default_options();
        rt_tensor *wrong = rt_tensor_new(IR_F32, 1, (int64_t[]){7});
        rt_weights_set(c.weights, "ln_f.bias", wrong);
        FILE *devnull = fopen("/dev/null", "w");
        ir_diag *quiet = ir_diag_new(devnull);
        cg_aot_layout *l = cg_aot_plan(c.g, c.weights, &o, quiet);
        CHECK(l == NULL);
        CHECK(ir_diag_error_count(quiet) == 1);
        cg_aot_layout_free(l);
        ir_diag_free(quiet);
        fclose(devnull);
    }
    case_cleanup(&c);
}

int main(void)
{
    test_bundle(true);
    test_bundle(false);
    test_weights_mismatch();
    return check_finish();
}
