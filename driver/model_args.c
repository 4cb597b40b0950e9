/* Parsing of the options that `quadc eval` and `quadc generate` share. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/model_args.h"

int driver_model_args_init(driver_model_args *a, int argc)
{
    memset(a, 0, sizeof *a);
    a->engine = RT_MODEL_JIT;
    a->tokenizer = QUADC_SOURCE_DIR "/data/tokenizer";
    a->defines = calloc((size_t)argc + 1, sizeof *a->defines);
    return a->defines ? 0 : -1;
}

void driver_model_args_free(driver_model_args *a)
{
    free(a->defines);
    a->defines = NULL;
}

int driver_parse_int_value(const char *cmd, const char *option, const char *text, long long min, long long max,
                           long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno == ERANGE || v < min || v > max) {
        driver_usage_error(cmd, "invalid %s value '%s': expected an integer from %lld to %lld", option, text, min,
                           max);
        return -1;
    }
    *out = v;
    return 0;
}

int driver_parse_float_value(const char *cmd, const char *option, const char *text, double min_exclusive,
                             double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || errno == ERANGE || !isfinite(v) || !(v > min_exclusive)) {
        driver_usage_error(cmd, "invalid %s value '%s': expected a number greater than %g", option, text,
                           min_exclusive);
        return -1;
    }
    *out = v;
    return 0;
}

int driver_parse_model_option(const char *cmd, int argc, char **argv, int *i, driver_model_args *a)
{
    char *arg = argv[*i];
    const char *value = NULL;
    int rc;
    if ((rc = driver_define_option(cmd, argc, argv, i, a->defines, &a->ndefines, argc)) != 0)
        return rc;
    if ((rc = driver_option_value(cmd, argc, argv, i, "--weights", &value)) != 0) {
        a->weights = value;
        return rc;
    }
    if ((rc = driver_option_value(cmd, argc, argv, i, "--tokenizer", &value)) != 0) {
        a->tokenizer = value;
        return rc;
    }
    if ((rc = driver_option_value(cmd, argc, argv, i, "--threads", &value)) != 0) {
        long long n;
        if (rc < 0 || driver_parse_int_value(cmd, "--threads", value, 0, 1024, &n) != 0)
            return -1;
        a->threads = (int)n;
        return 1;
    }
    if ((rc = driver_option_value(cmd, argc, argv, i, "--engine", &value)) != 0) {
        if (rc < 0)
            return -1;
        if (strcmp(value, "jit") == 0) {
            a->engine = RT_MODEL_JIT;
        } else if (strcmp(value, "interp") == 0) {
            a->engine = RT_MODEL_INTERP;
        } else {
            driver_usage_error(cmd, "invalid --engine value '%s': expected 'jit' or 'interp'", value);
            return -1;
        }
        return 1;
    }
    if (arg[0] == '-' && arg[1] != '\0')
        return 0;
    if (a->model) {
        driver_usage_error(cmd, "more than one model file given ('%s' and '%s')", a->model, arg);
        return -1;
    }
    a->model = arg;
    (*i)++;
    return 1;
}

int driver_finish_model_args(const char *cmd, const driver_model_args *a)
{
    if (!a->model) {
        driver_usage_error(cmd, "no model file; give one such as examples/gpt2.qd");
        return -1;
    }
    if (!a->weights) {
        driver_usage_error(cmd, "no weights; give a safetensors file or llm.c checkpoint with --weights FILE");
        return -1;
    }
    return 0;
}

void driver_print_model_help(FILE *out)
{
    fprintf(out,
            "  --weights FILE          model weights: safetensors, or an llm.c checkpoint\n"
            "                          (recognized by its magic number); required\n"
            "  -D name=value           set hyperparameter `name` to the integer `value`;\n"
            "                          it must agree with the weights' metadata; repeatable\n"
            "  --threads N             JIT worker threads (default 0: one per core)\n"
            "  --engine jit|interp     run the LLVM JIT (default) or the reference\n"
            "                          interpreter, which is slow and meant for checking\n"
            "  --tokenizer DIR         directory with the GPT-2 encoder.json and vocab.bpe\n"
            "                          (default: data/tokenizer of the source tree)\n");
}

rt_model *driver_open_model(const driver_model_args *a, int cache_len, ir_diag *d)
{
    rt_model_options o = {0};
    o.model_path = a->model;
    o.weights_path = a->weights;
    o.defines = a->defines;
    o.ndefines = a->ndefines;
    o.engine = a->engine;
    o.threads = a->threads;
    o.cache_len = cache_len;
    rt_model *m = rt_model_open(&o, d);
    /* A file from quadc quantize runs with its quantizers. The results look
     * like those of float weights, so a line on stderr names the method. */
    const char *bits = m ? rt_model_weights_meta(m, "quadc.quantize.bits") : NULL;
    if (bits) {
        const char *method = rt_model_weights_meta(m, "quadc.quantize.method");
        fprintf(stderr, "%s: quantized weights (%s %s); running with their fake quantizers\n", a->weights,
                method ? method : "unknown method", bits);
    }
    return m;
}
