/* INT8 bundles against the fake-quant simulation. A tiny GPT-2
 * (examples/gpt2.qd, 2 layers, 64 channels, the GPT-2 vocabulary) with
 * random weights is quantized by PTQ (rt_quantize_run) on WikiText
 * sequences and written as quadc quantize writes it. `quadc build --int8`
 * (the driver binary beside this test's directory) turns that file into an
 * object and a header, with the weights embedded and in a separate file.
 * A C program linked as `cc main.c tiny.o -lm -lpthread` runs them on
 * another WikiText sequence.
 *
 * The reference is the interpreter on the fake-quant graph that
 * rt_quantized_model_load returns. INT8 and fake quant compute the same
 * integers; they differ only where float rounding moves a value across a
 * quantizer's rounding boundary. So the logits must lie within 1e-4 of the
 * largest |logit| (the tolerance of tests/unit/test_int8.c) and the loss
 * within 1e-4 relative, while the float model's logits differ by more.
 * Runs on 1 and 2 threads must agree exactly. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "frontend/frontend.h"
#include "runtime/interp.h"
#include "runtime/quantize_run.h"
#include "runtime/safetensors.h"
#include "runtime/tokenizer.h"

#define SEQ 32
#define NCALIB 4
#define LOGITS_RTOL 1e-4
#define LOSS_RTOL 1e-4

static const fe_define model_defines[] = {{"n_layer", 2}, {"n_embd", 64}, {"n_head", 4}, {"n_ctx", 64}};
#define NDEFINES 4
#define MODEL QUADC_SOURCE_DIR "/examples/gpt2.qd"

static fx_rng rng = {FX_RNG_XORSHIFT, 0x9e3779b97f4a7c15ull};

typedef struct int8_case {
    char dir[64];
    char quadc[PATH_MAX];
    ir_diag *diag;
    int32_t *tokens; /* WikiText token ids */
    size_t ntokens;
    rt_weights *inputs;    /* idx and targets of the checked sequence */
    rt_tensor *want[2];    /* fake-quant interpreter: logits, loss */
    rt_tensor *float_logits;
} int8_case;

static char *path_in(const int8_case *c, const char *name)
{
    static char buf[4][PATH_MAX];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, PATH_MAX, "%s/%s", c->dir, name);
    return p;
}

/* The quadc driver: the test binary is <build>/tests/test_aot_int8 and the
 * driver <build>/quadc. */
static int find_quadc(char *out, size_t cap)
{
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        return -1;
    self[len] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    int n = snprintf(out, cap, "%s/../quadc", self);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    return access(out, X_OK);
}

static int tokenize_wikitext(int8_case *c)
{
    size_t len = 0;
    FILE *f = fopen(QUADC_SOURCE_DIR "/data/eval/wiki.test.raw", "rb");
    char *text = malloc(8001);
    if (f && text)
        len = fread(text, 1, 8000, f);
    if (f)
        fclose(f);
    rt_tokenizer *tok = rt_tok_load(QUADC_SOURCE_DIR "/data/tokenizer/encoder.json",
                                    QUADC_SOURCE_DIR "/data/tokenizer/vocab.bpe", c->diag);
    int rc = tok && len > 0 ? rt_tok_encode(tok, text, len, "wiki.test.raw", &c->tokens, &c->ntokens, c->diag) : -1;
    rt_tok_free(tok);
    free(text);
    if (rc == 0 && c->ntokens < (size_t)(NCALIB + 1) * (SEQ + 1))
        rc = -1;
    return rc;
}

/* idx and targets: the sequence after the calibration sequences. */
static int make_inputs(int8_case *c)
{
    const int32_t *seq = c->tokens + (size_t)NCALIB * (SEQ + 1);
    int64_t dims[2] = {1, SEQ};
    rt_tensor *idx = rt_tensor_new(IR_I32, 2, dims), *targets = rt_tensor_new(IR_I32, 2, dims);
    memcpy(idx->data, seq, SEQ * sizeof(int32_t));
    memcpy(targets->data, seq + 1, SEQ * sizeof(int32_t));
    c->inputs = rt_weights_new();
    rt_weights_set(c->inputs, "idx", idx);
    rt_weights_set(c->inputs, "targets", targets);
    return fx_write_file(path_in(c, "inputs.bin"), idx->data, rt_tensor_nbytes(idx), targets->data,
                      rt_tensor_nbytes(targets));
}

/* Quantizes random float weights with PTQ, writes q.safetensors with the
 * metadata of quadc quantize and computes the reference outputs. */
static int case_setup(int8_case *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "/tmp/quadc-test-aot-int8-XXXXXX");
    if (!mkdtemp(c->dir))
        return -1;
    c->diag = ir_diag_new(stderr);
    if (find_quadc(c->quadc, sizeof c->quadc) != 0) {
        fprintf(stderr, "cannot find the quadc driver at %s\n", c->quadc);
        return -1;
    }
    if (tokenize_wikitext(c) != 0 || make_inputs(c) != 0)
        return -1;

    fe_define defines[NDEFINES + 2];
    memcpy(defines, model_defines, sizeof model_defines);
    defines[NDEFINES] = (fe_define){"B", 1};
    defines[NDEFINES + 1] = (fe_define){"T", SEQ};
    ir_graph *fp = fe_compile_file(MODEL, defines, NDEFINES + 2, c->diag);
    if (!fp)
        return -1;
    rt_weights *w = fx_gpt2_weights(&rng, fp, 0.02);
    rt_tensor *float_out[2] = {NULL, NULL};
    int rc = rt_interp_run(fp, w, c->inputs, float_out, c->diag);
    c->float_logits = float_out[0];
    rt_tensor_free(float_out[1]);
    ir_graph_free(fp);

    rt_quantize_config config = rt_quantize_default_config();
    config.model_path = MODEL;
    config.defines = model_defines;
    config.ndefines = NDEFINES;
    config.seq = SEQ;
    config.executor = rt_executor_interp();
    config.threads = 1;
    const int32_t *seqs[NCALIB];
    for (int s = 0; s < NCALIB; s++)
        seqs[s] = c->tokens + (size_t)s * (SEQ + 1);
    rt_quantized_model m = {0};
    rt_quantize_report report = {0};
    if (rc == 0)
        rc = rt_quantize_run(&config, fx_copy_weights(w), seqs, NCALIB, &m, &report, c->diag);
    rt_weights_free(w);
    rt_quantize_report_free(&report);
    if (rc == 0)
        rc = rt_quantize_set_metadata(&m, &config, c->diag);
    if (rc == 0)
        rc = rt_safetensors_write(path_in(c, "q.safetensors"), m.weights, c->diag);
    rt_quantized_model_free(&m);
    if (rc != 0)
        return -1;

    rt_quantized_model ref;
    if (rt_quantized_model_load(MODEL, model_defines, NDEFINES, path_in(c, "q.safetensors"), SEQ, &ref, c->diag) != 0)
        return -1;
    rc = rt_interp_run(ref.graph, ref.weights, c->inputs, c->want, c->diag);
    rt_quantized_model_free(&ref);
    return rc;
}

static void case_cleanup(int8_case *c)
{
    static const char *const files[] = {"q.safetensors", "inputs.bin", "tiny.o", "tiny.h",
                                        "tiny.weights", "main.c", "main", "out1.bin", "out2.bin"};
    for (size_t k = 0; k < sizeof files / sizeof *files; k++)
        unlink(path_in(c, files[k]));
    rmdir(c->dir);
    rt_tensor_free(c->want[0]);
    rt_tensor_free(c->want[1]);
    rt_tensor_free(c->float_logits);
    rt_weights_free(c->inputs);
    free(c->tokens);
    ir_diag_free(c->diag);
}

/* max |got - want| / max |want| */
static double relative_difference(const float *got, const float *want, int64_t n)
{
    double diff = 0, scale = 0;
    for (int64_t k = 0; k < n; k++) {
        diff = fmax(diff, fabs((double)got[k] - want[k]));
        scale = fmax(scale, fabs((double)want[k]));
    }
    return scale > 0 ? diff / scale : diff;
}

static int run_main(const int8_case *c, const char *weights, int threads, const char *out)
{
    char command[3 * PATH_MAX];
    snprintf(command, sizeof command, "%s %s %d %s %s", path_in(c, "main"), weights, threads,
             path_in(c, "inputs.bin"), path_in(c, out));
    return fx_run_command(command);
}

/* Builds the quantized file with quadc build --int8 in one weights mode,
 * links it with main.c and compares its outputs with the fake-quant
 * interpreter. */
static void test_int8_bundle(int8_case *c, bool embed)
{
    const char *mode = embed ? "embed" : "file";
    char command[4 * PATH_MAX];
    int n = snprintf(command, sizeof command,
                     "%s build " MODEL " -D n_layer=2 -D n_embd=64 -D n_head=4 -D n_ctx=64 -D B=1 -D T=%d "
                     "--weights %s --int8 --quiet --prefix tiny --threads-max 2 --emit-obj %s --emit-header %s",
                     c->quadc, SEQ, path_in(c, "q.safetensors"), path_in(c, "tiny.o"), path_in(c, "tiny.h"));
    if (!embed)
        snprintf(command + n, sizeof command - (size_t)n, " --weights-mode file --weights-out %s",
                 path_in(c, "tiny.weights"));
    int built = fx_run_command(command);
    CHECK_EQ_INT(built, 0);
    if (built != 0) {
        fprintf(stderr, "INT8 bundle %s: '%s' failed\n", mode, command);
        return;
    }

    /* The header lists the nine q.linear ops: four per block and the LM head. */
    size_t len = 0;
    FILE *h = fopen(path_in(c, "tiny.h"), "rb");
    char *header = calloc(1, 1 << 20);
    if (h && header)
        len = fread(header, 1, (1 << 20) - 1, h);
    if (h)
        fclose(h);
    CHECK(len > 0);
    if (header) {
        CHECK(strstr(header, "INT8:\n * 9 q.linear ops") != NULL);
        CHECK(strstr(header, "i8[64,192]           h.0.attn.c_attn.weight.q") != NULL);
    }
    free(header);

    CHECK_EQ_INT(fx_write_file(path_in(c, "main.c"), fx_tiny_bundle_main, strlen(fx_tiny_bundle_main), NULL, 0), 0);
    const char *cc = getenv("CC") && getenv("CC")[0] ? getenv("CC") : "cc";
    snprintf(command, sizeof command, "%s -std=c11 -O1 -o %s %s %s -lm -lpthread", cc, path_in(c, "main"),
             path_in(c, "main.c"), path_in(c, "tiny.o"));
    int linked = fx_run_command(command);
    CHECK_EQ_INT(linked, 0);
    if (linked != 0)
        return;

    char weights[PATH_MAX];
    snprintf(weights, sizeof weights, "%s", embed ? "-" : path_in(c, "tiny.weights"));
    CHECK_EQ_INT(run_main(c, weights, 1, "out1.bin"), 0);
    CHECK_EQ_INT(run_main(c, weights, 2, "out2.bin"), 0);
    int64_t nlogits = rt_tensor_numel(c->want[0]);
    float *one_thread = fx_read_floats(path_in(c, "out1.bin"), (size_t)nlogits + 1);
    float *two_threads = fx_read_floats(path_in(c, "out2.bin"), (size_t)nlogits + 1);
    CHECK(one_thread != NULL);
    CHECK(two_threads != NULL);
    if (one_thread && two_threads) {
        const float *want = c->want[0]->data;
        double logits_diff = relative_difference(one_thread, want, nlogits);
        double float_diff = relative_difference(c->float_logits->data, want, nlogits);
        double want_loss = ((float *)c->want[1]->data)[0];
        printf("INT8 bundle (%s) vs fake quant: logits max |diff| / max |logit| = %.3g (float model: %.3g), "
               "loss %.6f vs %.6f\n", mode, logits_diff, float_diff, (double)one_thread[nlogits], want_loss);
        CHECK(logits_diff <= LOGITS_RTOL);
        CHECK(float_diff > 10 * LOGITS_RTOL);
        CHECK_CLOSE(one_thread[nlogits], want_loss, 0, LOSS_RTOL);
        CHECK(memcmp(one_thread, two_threads, sizeof *one_thread * (size_t)(nlogits + 1)) == 0);
    }
    free(one_thread);
    free(two_threads);
}

int main(void)
{
    int8_case c;
    int setup = case_setup(&c);
    CHECK_EQ_INT(setup, 0);
    if (setup == 0) {
        test_int8_bundle(&c, true);
        test_int8_bundle(&c, false);
    }
    case_cleanup(&c);
    return check_finish();
}
