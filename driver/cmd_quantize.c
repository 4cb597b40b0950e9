/* `quadc quantize`: quantizes a model's weights and activations with PTQ,
 * SmoothQuant, QAT or Quadapter on calibration text and writes the folded
 * model with every quantizer's scale and zero point as safetensors, and a
 * Markdown report. The work is in runtime/quantize_run.c; this file parses
 * options, loads the weights and the text, and prints. */
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "driver/driver.h"
#include "driver/model_args.h"
#include "runtime/dataset.h"
#include "runtime/quantize_run.h"
#include "runtime/safetensors.h"
#include "runtime/train_llmc.h"
#include "runtime/train_rng.h"

#define CMD "quantize"
#define MAX_DEFINES 64
/* Held-out sequences for the perplexity in the report: few, so that it
 * stays cheap next to calibration. */
#define MAX_HELDOUT_SEQS 8

typedef struct quantize_args {
    rt_quantize_config config;
    fe_define defines[MAX_DEFINES];
    int ndefines;
    const char *model;
    const char *weights;
    const char *method;
    const char *calib;
    const char *out;
    const char *report;
    const char *eval;         /* --eval: a quantized model to measure instead of quantizing */
    const char *tokenizer_dir;
    const char *cache_dir;
    int calib_seqs;
    double data_frac;
    bool help;
} quantize_args;

static void print_help(FILE *out)
{
    fprintf(out,
            "usage: quadc quantize MODEL.qd --weights W.safetensors --method METHOD --calib TEXT\n"
            "                      --out Q.safetensors [options]\n"
            "       quadc quantize MODEL.qd --eval Q.safetensors --calib TEXT [options]\n"
            "\n"
            "Quantizes the linear layers and the LM head of a GPT-2 model (fake quantization\n"
            "of weights per output channel and of activations per tensor) and writes the\n"
            "folded weights with every quantizer's scale and zero point.\n"
            "\n"
            "Methods (--method):\n"
            "  ptq          calibrate the ranges only\n"
            "  smoothquant  fold SmoothQuant scales at LN1 -> c_attn and LN2 -> c_fc, then calibrate\n"
            "  qat          calibrate, then fine-tune every weight for --phase2-steps steps\n"
            "  quadapter    calibrate, train the Quadapter scales block by block (--phase1-steps per\n"
            "               block) and end to end (--phase2-steps), then fold them away\n"
            "\n"
            "Options:\n"
            "  -D name=value        set a hyperparameter of the model file; repeatable\n"
            "  --weights FILE       float weights: safetensors, or an llm.c .bin checkpoint;\n"
            "                       their hyperparameters apply to the model (required)\n"
            "  --method NAME        ptq, smoothquant, qat or quadapter (required)\n"
            "  --bits wBaB          weight and activation bits, each 2 to 8 (default w8a8)\n"
            "  --sites LIST         quantizer sites of insert-fakequant, ';'-separated (default\n"
            "                       linear;lm_head; add attention to quantize the attention\n"
            "                       matmul operands, which quadc build then runs on integers)\n"
            "  --calib TEXT         UTF-8 calibration text (required)\n"
            "  --calib-seqs N       calibration sequences drawn from the text (default 32)\n"
            "  --seq T              tokens per sequence (default 64)\n"
            "  --data-frac F        fraction of the text used for calibration and training; the\n"
            "                       rest gives the held-out perplexity (default 0.9)\n"
            "  --range NAME         minmax, percentile or mse calibration (default minmax)\n"
            "  --phase1-steps N     Quadapter phase 1 AdamW steps per block (default 100)\n"
            "  --phase2-steps N     Quadapter phase 2 and QAT AdamW steps (default 100)\n"
            "  --lr X               constant AdamW learning rate (default 1e-3)\n"
            "  --train-ranges       also train the activation scales in phase 2 and QAT\n"
            "  --seed S             seed of the sequence choice and order (default 1)\n"
            "  --threads N          worker threads, 0 = one per core (default 0)\n"
            "  --executor NAME      jit (default) or interp, the reference interpreter\n"
            "  --tokenizer DIR      directory of encoder.json and vocab.bpe\n"
            "                       (default: data/tokenizer of the source tree)\n"
            "  --cache-dir DIR      token cache (default: $XDG_CACHE_HOME/quadc or ~/.cache/quadc)\n"
            "  --out FILE           the quantized model, safetensors (required)\n"
            "  --report FILE        also write the Markdown report to FILE\n"
            "  --eval FILE          load a model written by quadc quantize and print its LM loss\n"
            "                       and perplexity on the calibration sequences and the held-out\n"
            "                       ones, instead of quantizing\n");
}

static int parse_int(const char *option, const char *text, long long min, int *out)
{
    long long value;
    if (driver_parse_int_value(CMD, option, text, min, 1000000000, &value) != 0)
        return DRIVER_USAGE;
    *out = (int)value;
    return DRIVER_OK;
}

/* Parses the option at argv[*i] that takes a value and advances *i past
 * it. Returns 1 when it matched, 0 when it did not, -1 on a usage error. */
static int parse_value_option(quantize_args *a, int argc, char **argv, int *i)
{
    const char *v;
    const struct {
        const char *name;
        const char **slot;
    } strings[] = {{"--weights", &a->weights}, {"--method", &a->method},     {"--calib", &a->calib},
                   {"--out", &a->out},         {"--report", &a->report},     {"--bits", &a->config.bits},
                   {"--sites", &a->config.sites},
                   {"--tokenizer", &a->tokenizer_dir}, {"--cache-dir", &a->cache_dir},
                   {"--eval", &a->eval}};
    for (size_t k = 0; k < sizeof strings / sizeof strings[0]; k++) {
        int m = driver_option_value(CMD, argc, argv, i, strings[k].name, strings[k].slot);
        if (m != 0)
            return m;
    }
    const struct {
        const char *name;
        int *slot;
        long long min;
    } ints[] = {{"--calib-seqs", &a->calib_seqs, 1},
                {"--seq", &a->config.seq, 1},
                {"--phase1-steps", &a->config.phase1_steps, 0},
                {"--phase2-steps", &a->config.phase2_steps, 0},
                {"--threads", &a->config.threads, 0}};
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
        int m = driver_option_value(CMD, argc, argv, i, ints[k].name, &v);
        if (m != 0)
            return m < 0 || parse_int(ints[k].name, v, ints[k].min, ints[k].slot) != 0 ? -1 : 1;
    }
    int m = driver_option_value(CMD, argc, argv, i, "--seed", &v);
    if (m != 0) {
        long long seed;
        if (m < 0 || driver_parse_int_value(CMD, "--seed", v, 0, 0x7fffffffffffffffll, &seed) != 0)
            return -1;
        a->config.seed = (uint64_t)seed;
        return 1;
    }
    double x;
    if ((m = driver_option_value(CMD, argc, argv, i, "--lr", &v)) != 0) {
        if (m < 0 || driver_parse_float_value(CMD, "--lr", v, 0.0, &x) != 0)
            return -1;
        a->config.lr = (float)x;
        return 1;
    }
    if ((m = driver_option_value(CMD, argc, argv, i, "--data-frac", &v)) != 0) {
        if (m < 0 || driver_parse_float_value(CMD, "--data-frac", v, 0.0, &x) != 0)
            return -1;
        if (x > 1.0) {
            driver_usage_error(CMD, "invalid --data-frac value '%s': expected a number in (0, 1]", v);
            return -1;
        }
        a->data_frac = x;
        return 1;
    }
    if ((m = driver_option_value(CMD, argc, argv, i, "--range", &v)) != 0) {
        int method = m < 0 ? -1 : pass_calib_method_from_name(v);
        if (method < 0) {
            if (m > 0)
                driver_usage_error(CMD, "unknown --range '%s': use minmax, percentile or mse", v);
            return -1;
        }
        a->config.range = (pass_calib_method)method;
        return 1;
    }
    if ((m = driver_option_value(CMD, argc, argv, i, "--executor", &v)) != 0) {
        a->config.executor = m < 0 ? NULL : rt_executor_find(v);
        if (!a->config.executor) {
            if (m > 0)
                driver_usage_error(CMD, "unknown --executor '%s': use jit or interp", v);
            return -1;
        }
        return 1;
    }
    return 0;
}

static int parse_args(int argc, char **argv, quantize_args *a)
{
    a->config = rt_quantize_default_config();
    a->calib_seqs = 32;
    a->data_frac = 0.9;
    for (int i = 1; i < argc;) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            a->help = true;
            return DRIVER_OK;
        }
        if (strcmp(arg, "--train-ranges") == 0) {
            a->config.train_ranges = true;
            i++;
            continue;
        }
        int m = driver_define_option(CMD, argc, argv, &i, a->defines, &a->ndefines, MAX_DEFINES);
        if (m < 0)
            return DRIVER_USAGE;
        if (m > 0)
            continue;
        m = parse_value_option(a, argc, argv, &i);
        if (m < 0)
            return DRIVER_USAGE;
        if (m > 0)
            continue;
        if (arg[0] == '-' && arg[1] != '\0')
            return driver_usage_error(CMD, "unknown option '%s'", arg);
        if (a->model)
            return driver_usage_error(CMD, "unexpected argument '%s': give one model file", arg);
        a->model = arg;
        i++;
    }

    if (!a->model)
        return driver_usage_error(CMD, "missing the model file (.qd)");
    if (a->eval) {
        if (!a->calib)
            return driver_usage_error(CMD, "missing --calib: give the text to measure --eval on");
        if (a->weights || a->method || a->out)
            return driver_usage_error(CMD, "--eval takes no --weights, --method or --out");
        a->config.model_path = a->model;
        return DRIVER_OK;
    }
    const struct {
        const char *value;
        const char *message;
    } required[] = {{a->weights, "--weights: give the float weights (safetensors)"},
                    {a->method, "--method: use ptq, smoothquant, qat or quadapter"},
                    {a->calib, "--calib: give the calibration text"},
                    {a->out, "--out: give the output safetensors file"}};
    for (size_t k = 0; k < sizeof required / sizeof required[0]; k++)
        if (!required[k].value)
            return driver_usage_error(CMD, "missing %s", required[k].message);
    int method = rt_quantize_method_from_name(a->method);
    if (method < 0)
        return driver_usage_error(CMD, "unknown --method '%s': use ptq, smoothquant, qat or quadapter", a->method);
    a->config.method = (rt_quantize_method)method;
    int wbits, abits;
    char err[128];
    if (rt_quantize_parse_bits(a->config.bits, &wbits, &abits, err, sizeof err) != 0)
        return driver_usage_error(CMD, "invalid --bits '%s': %s", a->config.bits, err);
    if (a->config.sites && strlen(a->config.sites) > 256)
        return driver_usage_error(CMD, "invalid --sites: longer than 256 characters");
    if (a->config.sites && rt_quantize_check_sites(a->config.sites, err, sizeof err) != 0)
        return driver_usage_error(CMD, "invalid --sites '%s': %s", a->config.sites, err);
    a->config.model_path = a->model;
    a->config.weights_path = a->weights;
    a->config.defines = a->defines;
    a->config.ndefines = a->ndefines;
    return DRIVER_OK;
}

/* Rejects an output path whose directory does not exist before any work
 * starts, so that a long run does not fail at the end. */
static int check_output_dir(const char *option, const char *path, ir_diag *d)
{
    char *copy = strdup(path);
    if (!copy)
        return -1;
    const char *dir = dirname(copy);
    struct stat st;
    int rc = 0;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        ir_diag_file_error(d, path, "cannot write %s: directory '%s' does not exist", option, dir);
        rc = -1;
    }
    free(copy);
    return rc;
}

static int load_tokens(const quantize_args *a, int32_t **ids, size_t *n, ir_diag *d)
{
    char encoder[4096], vocab[4096];
    const char *dir = a->tokenizer_dir ? a->tokenizer_dir : QUADC_SOURCE_DIR "/data/tokenizer";
    snprintf(encoder, sizeof encoder, "%s/encoder.json", dir);
    snprintf(vocab, sizeof vocab, "%s/vocab.bpe", dir);
    rt_dataset_tokenizer *tok = rt_dataset_tokenizer_load(encoder, vocab, d);
    if (!tok)
        return -1;
    char *default_cache = a->cache_dir ? NULL : rt_dataset_default_cache_dir();
    int rc = rt_dataset_load_text(a->calib, tok, a->cache_dir ? a->cache_dir : default_cache, ids, n, d);
    free(default_cache);
    rt_dataset_tokenizer_free(tok);
    return rc;
}

/* Picks the calibration sequences at seeded random offsets in the first
 * data_frac of the tokens, and up to MAX_HELDOUT_SEQS consecutive held-out
 * sequences after them. */
static int pick_sequences(const quantize_args *a, const int32_t *ids, size_t n, const int32_t **calib,
                          const int32_t **heldout, int *nheldout, ir_diag *d)
{
    size_t len = (size_t)a->config.seq + 1;
    size_t ncalib = (size_t)((double)n * a->data_frac);
    if (ncalib > n)
        ncalib = n;
    if (ncalib < len) {
        ir_diag_file_error(d, a->calib,
                           "the calibration text has %zu tokens (%zu with --data-frac %g), fewer than one "
                           "sequence of --seq + 1 = %zu tokens; give a longer text or a smaller --seq",
                           n, ncalib, a->data_frac, len);
        return -1;
    }
    rt_rng rng;
    rt_rng_seed(&rng, a->config.seed, 0);
    for (int s = 0; s < a->calib_seqs; s++)
        calib[s] = ids + rt_rng_below(&rng, (uint64_t)(ncalib - len + 1));
    *nheldout = 0;
    for (size_t start = ncalib; start + len <= n && *nheldout < MAX_HELDOUT_SEQS; start += len)
        heldout[(*nheldout)++] = ids + start;
    return 0;
}

static void print_step(void *ctx, const char *phase, int block, int step, int steps, double loss)
{
    (void)ctx;
    if (step != 1 && step != steps && step % 10 != 0)
        return;
    if (block >= 0)
        fprintf(stderr, "%s block %d step %d/%d: loss %.6g\n", phase, block, step, steps, loss);
    else
        fprintf(stderr, "%s step %d/%d: loss %.6g\n", phase, step, steps, loss);
}

typedef struct report_ctx {
    const quantize_args *a;
    const rt_quantize_report *r;
    int nheldout;
} report_ctx;

static int write_report(FILE *out, void *ctx)
{
    const report_ctx *rc = ctx;
    const quantize_args *a = rc->a;
    const rt_quantize_report *r = rc->r;
    const rt_quantize_config *c = &a->config;
    fprintf(out, "# quadc quantize report\n\n");
    fprintf(out, "| setting | value |\n|---|---|\n");
    fprintf(out, "| model | %s |\n| weights | %s |\n| method | %s |\n| bits | %s |\n", a->model, a->weights,
            rt_quantize_method_name(c->method), c->bits);
    fprintf(out, "| calibration | %s, %d sequences of %d tokens, %s ranges |\n", a->calib, a->calib_seqs, c->seq,
            rt_quantize_range_name(c->range));
    if (c->method == RT_QUANTIZE_QUADAPTER)
        fprintf(out, "| steps | phase 1: %d per block, phase 2: %d, lr %g |\n", c->phase1_steps, c->phase2_steps,
                (double)c->lr);
    else if (c->method == RT_QUANTIZE_QAT)
        fprintf(out, "| steps | %d, lr %g |\n", c->phase2_steps, (double)c->lr);
    fprintf(out, "| seed | %llu |\n", (unsigned long long)c->seed);
    fprintf(out, "| output | %s |\n\n", a->out);

    fprintf(out, "## Loss on the calibration sequences\n\n| model | LM loss |\n|---|---|\n");
    fprintf(out, "| float | %.6f |\n| quantized after calibration | %.6f |\n", r->fp_loss, r->calibrated_loss);
    if (c->method == RT_QUANTIZE_QUADAPTER || c->method == RT_QUANTIZE_QAT)
        fprintf(out, "| before %s | %.6f |\n| after %s | %.6f |\n",
                c->method == RT_QUANTIZE_QAT ? "QAT" : "phase 2", r->train_loss_before,
                c->method == RT_QUANTIZE_QAT ? "QAT" : "phase 2", r->train_loss_after);
    fprintf(out, "| output model | %.6f |\n\n", r->final_loss);

    if (c->method == RT_QUANTIZE_QUADAPTER && r->block_loss_before) {
        fprintf(out, "## Phase 1: block output MSE\n\n| block | before | after |\n|---|---|---|\n");
        for (int b = 0; b < r->nblocks; b++)
            fprintf(out, "| %d | %.6g | %.6g |\n", b, r->block_loss_before[b], r->block_loss_after[b]);
        fprintf(out, "\n");
    }
    fprintf(out, "## Held-out perplexity\n\n");
    if (rc->nheldout > 0)
        fprintf(out, "%d sequences after the calibration part of the text: float %.4f, quantized %.4f\n\n",
                rc->nheldout, exp(r->fp_heldout_loss), exp(r->final_heldout_loss));
    else
        fprintf(out, "not measured: the text has no full sequence after the calibration part\n\n");
    fprintf(out, "## Time\n\ncalibration %.2f s, phase 1 %.2f s, %s %.2f s; %d graphs compiled once each "
            "in %.2f s in all; losses in batches of %d sequences, calibration in batches of %d\n",
            r->seconds_calibrate, r->seconds_phase1, c->method == RT_QUANTIZE_QAT ? "QAT" : "phase 2",
            r->seconds_phase2, r->compiles, r->seconds_compile, r->eval_batch, r->calib_batch);
    return ferror(out) ? -1 : 0;
}

static int add_run_metadata(rt_quantized_model *m, const quantize_args *a, ir_diag *d)
{
    char value[64];
    int rc = rt_quantize_set_metadata(m, &a->config, d);
    snprintf(value, sizeof value, "%d", a->calib_seqs);
    rc = rc == 0 ? rt_weights_set_meta(m->weights, "quadc.quantize.calib_seqs", value) : rc;
    snprintf(value, sizeof value, "%d", a->config.seq);
    rc = rc == 0 ? rt_weights_set_meta(m->weights, "quadc.quantize.seq", value) : rc;
    snprintf(value, sizeof value, "%d", a->config.phase1_steps);
    rc = rc == 0 ? rt_weights_set_meta(m->weights, "quadc.quantize.phase1_steps", value) : rc;
    snprintf(value, sizeof value, "%d", a->config.phase2_steps);
    rc = rc == 0 ? rt_weights_set_meta(m->weights, "quadc.quantize.phase2_steps", value) : rc;
    snprintf(value, sizeof value, "%.9g", (double)a->config.lr);
    rc = rc == 0 ? rt_weights_set_meta(m->weights, "quadc.quantize.lr", value) : rc;
    return rc;
}

static int run(quantize_args *a, ir_diag *d)
{
    if (check_output_dir("--out", a->out, d) != 0 || (a->report && check_output_dir("--report", a->report, d) != 0))
        return DRIVER_ERROR;
    rt_weights *w = rt_train_load_weights(a->weights, d);
    if (!w)
        return DRIVER_ERROR;
    fe_define *defines = NULL;
    int ndefines = 0;
    if (rt_quantize_weight_hparams(a->model, w, a->weights, a->defines, a->ndefines, &defines, &ndefines, d) != 0) {
        rt_weights_free(w);
        return DRIVER_ERROR;
    }
    a->config.defines = defines;
    a->config.ndefines = ndefines;

    int32_t *ids = NULL;
    size_t n = 0;
    const int32_t **calib = calloc((size_t)a->calib_seqs, sizeof *calib);
    const int32_t *heldout[MAX_HELDOUT_SEQS];
    int nheldout = 0;
    int rc = calib && load_tokens(a, &ids, &n, d) == 0 ? 0 : -1;
    if (rc == 0)
        rc = pick_sequences(a, ids, n, calib, heldout, &nheldout, d);
    a->config.heldout = heldout;
    a->config.nheldout = nheldout;
    a->config.on_step = print_step;

    rt_quantized_model m = {0};
    rt_quantize_report r = {0};
    if (rc == 0) {
        fprintf(stderr, "quantizing %s with %s %s on %d sequences of %d tokens\n", a->model, a->method,
                a->config.bits, a->calib_seqs, a->config.seq);
        rc = rt_quantize_run(&a->config, w, calib, a->calib_seqs, &m, &r, d);
    } else {
        rt_weights_free(w);
    }
    if (rc == 0)
        rc = add_run_metadata(&m, a, d);
    if (rc == 0)
        rc = rt_safetensors_write(a->out, m.weights, d);
    report_ctx ctx = {a, &r, nheldout};
    if (rc == 0) {
        fprintf(stderr, "wrote the quantized model %s\n", a->out);
        write_report(stdout, &ctx);
        if (a->report)
            rc = driver_write_atomic(a->report, write_report, &ctx, d);
    }
    rt_quantized_model_free(&m);
    rt_quantize_report_free(&r);
    free(calib);
    free(ids);
    free(defines);
    return rc == 0 ? DRIVER_OK : DRIVER_ERROR;
}

/* --eval: loads a quantized model and prints its mean LM loss and
 * perplexity on the sequences that quantizing would use. */
static int run_eval(quantize_args *a, ir_diag *d)
{
    rt_quantized_model m;
    if (rt_quantized_model_load(a->model, a->defines, a->ndefines, a->eval, a->config.seq, &m, d) != 0)
        return DRIVER_ERROR;
    int32_t *ids = NULL;
    size_t n = 0;
    const int32_t **calib = calloc((size_t)a->calib_seqs, sizeof *calib);
    const int32_t *heldout[MAX_HELDOUT_SEQS];
    int nheldout = 0;
    int rc = calib && load_tokens(a, &ids, &n, d) == 0 ? 0 : -1;
    if (rc == 0)
        rc = pick_sequences(a, ids, n, calib, heldout, &nheldout, d);
    double loss = 0, heldout_loss = 0;
    const rt_quantize_config *c = &a->config;
    if (rc == 0)
        rc = rt_quantize_mean_loss(m.graph, m.weights, calib, a->calib_seqs, c->seq, c->executor, c->threads, &loss,
                                   d);
    if (rc == 0 && nheldout > 0)
        rc = rt_quantize_mean_loss(m.graph, m.weights, heldout, nheldout, c->seq, c->executor, c->threads,
                                   &heldout_loss, d);
    if (rc == 0) {
        const char *method = rt_weights_get_meta(m.weights, "quadc.quantize.method");
        printf("%s (%s %s): calibration loss %.6f, perplexity %.4f\n", a->eval, method ? method : "unknown method",
               rt_weights_get_meta(m.weights, "quadc.quantize.bits"), loss, exp(loss));
        if (nheldout > 0)
            printf("held-out loss %.6f, perplexity %.4f on %d sequences\n", heldout_loss, exp(heldout_loss),
                   nheldout);
    }
    rt_quantized_model_free(&m);
    free(calib);
    free(ids);
    return rc == 0 ? DRIVER_OK : DRIVER_ERROR;
}

int driver_quantize(int argc, char **argv)
{
    quantize_args a = {0};
    int status = parse_args(argc, argv, &a);
    if (status != DRIVER_OK)
        return status;
    if (a.help) {
        print_help(stdout);
        return DRIVER_OK;
    }
    ir_diag *d = ir_diag_new(stderr);
    if (!d) {
        fprintf(stderr, "quadc quantize: error: out of memory\n");
        return DRIVER_ERROR;
    }
    status = a.eval ? run_eval(&a, d) : run(&a, d);
    ir_diag_free(d);
    return status;
}
