/* `quadc build`: the command line of the ahead-of-time build. It parses
 * and checks the options into a driver_build_request and runs
 * driver_build (driver/build.c). */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "driver/driver.h"
#include "passes/manager.h"

/* The parsed command line. The request's defines point into `defines`. */
typedef struct build_args {
    driver_build_request request;
    fe_define *defines;
    int ndefines;
} build_args;

static void print_build_help(FILE *out)
{
    fprintf(out,
            "usage: quadc build FILE.qd --weights W.safetensors [-D name=value]...\n"
            "                   [--emit-obj FILE.o] [--emit-header FILE.h] [-o EXE] [options]\n"
            "\n"
            "Compiles a model ahead of time: an object file with every kernel and the\n"
            "entry points <prefix>_init, <prefix>_run and <prefix>_free, a C header that\n"
            "documents them, and optionally an executable that generates text and\n"
            "measures perplexity. A C program links the object with\n"
            "  cc main.c FILE.o -lm -lpthread\n"
            "See docs/aot.md.\n"
            "\n"
            "  --weights FILE          safetensors file or llm.c .bin checkpoint with one tensor\n"
            "                          per param (required); its hyperparameters apply to the\n"
            "                          model, and a file written by quadc quantize gives an\n"
            "                          INT8 build\n"
            "  --int8                  require an INT8 build: fail unless --weights has the\n"
            "                          quantizer params of quadc quantize\n"
            "  -D name=value           set hyperparameter `name` to the integer `value`;\n"
            "                          repeatable\n"
            "  --passes LIST           run these passes on the graph before code generation\n"
            "                          (comma-separated; default: none)\n"
            "  --emit-obj FILE         write the object file\n"
            "  --emit-header FILE      write the C header\n"
            "  --weights-mode MODE     embed: the weights go into the object (default);\n"
            "                          file: into a separate file that _init loads\n"
            "  --weights-out FILE      the weights file of --weights-mode file\n"
            "  -o EXE                  link an executable (host target only); needs a C\n"
            "                          compiler, $CC or cc\n"
            "  --prefix NAME           C identifier that starts every public symbol\n"
            "                          (default: the graph name)\n"
            "  --target-cpu CPU        LLVM CPU name such as x86-64-v3 or znver4 (default:\n"
            "                          the host CPU and its features)\n"
            "  --triple TRIPLE         LLVM target triple (default: the host's)\n"
            "  --threads-max N         largest thread count _init accepts (default 64)\n"
            "  -O N                    LLVM optimization level 0-3 (default 3)\n"
            "  --tokenizer DIR         directory with encoder.json and vocab.bpe embedded in\n"
            "                          the executable (default: data/tokenizer of the\n"
            "                          quadc source tree)\n"
            "  --quiet                 print no progress lines\n"
            "  --print-ir-dir DIR      write the graph before the first pass and after every\n"
            "                          pass (lower-int8 in an INT8 build, then --passes)\n"
            "                          into DIR, one numbered .qir file each\n");
}

static int parse_int(const char *cmd, const char *option, const char *text, long min, long max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno == ERANGE || v < min || v > max)
        return driver_usage_error(cmd, "invalid %s value '%s': expected an integer from %ld to %ld", option, text,
                                  min, max);
    *out = (int)v;
    return DRIVER_OK;
}

/* Parses one option at argv[*i]. Returns 1 when consumed, 0 when not an
 * option of build, -1 after a usage error. */
static int parse_build_option(const char *cmd, int argc, char **argv, int *i, build_args *a)
{
    static const struct {
        const char *name;
        size_t field;
    } strings[] = {
        {"--weights", offsetof(driver_build_request, weights)},
        {"--passes", offsetof(driver_build_request, passes)},
        {"--emit-obj", offsetof(driver_build_request, obj)},
        {"--emit-header", offsetof(driver_build_request, header)},
        {"--weights-mode", offsetof(driver_build_request, weights_mode)},
        {"--weights-out", offsetof(driver_build_request, weights_out)},
        {"-o", offsetof(driver_build_request, exe)},
        {"--prefix", offsetof(driver_build_request, prefix)},
        {"--tokenizer", offsetof(driver_build_request, tokenizer)},
        {"--target-cpu", offsetof(driver_build_request, aot.cpu)},
        {"--triple", offsetof(driver_build_request, aot.triple)},
        {"--print-ir-dir", offsetof(driver_build_request, print_ir_dir)},
    };
    const char *value;
    for (size_t k = 0; k < sizeof strings / sizeof *strings; k++) {
        int rc = driver_option_value(cmd, argc, argv, i, strings[k].name, &value);
        if (rc != 0) {
            if (rc > 0)
                *(const char **)((char *)&a->request + strings[k].field) = value;
            return rc;
        }
    }
    int rc = driver_option_value(cmd, argc, argv, i, "--threads-max", &value);
    if (rc != 0)
        return rc < 0 || parse_int(cmd, "--threads-max", value, 1, 4096, &a->request.aot.threads_max) != DRIVER_OK ? -1 : 1;
    rc = driver_option_value(cmd, argc, argv, i, "-O", &value);
    if (rc != 0)
        return rc < 0 || parse_int(cmd, "-O", value, 0, 3, &a->request.aot.opt_level) != DRIVER_OK ? -1 : 1;
    const char *arg = argv[*i];
    if (strcmp(arg, "--int8") == 0) {
        a->request.int8 = true;
        (*i)++;
        return 1;
    }
    if (strcmp(arg, "--quiet") == 0) {
        a->request.quiet = true;
        (*i)++;
        return 1;
    }
    return driver_define_option(cmd, argc, argv, i, a->defines, &a->ndefines, argc);
}

static int check_build_args(const char *cmd, build_args *a)
{
    driver_build_request *r = &a->request;
    if (!r->model)
        return driver_usage_error(cmd, "no model file; give one such as examples/gpt2.qd");
    if (!r->weights)
        return driver_usage_error(cmd, "--weights is required: give the safetensors file of the model");
    if (!r->obj && !r->header && !r->exe && !r->weights_out)
        return driver_usage_error(cmd, "nothing to write; give --emit-obj, --emit-header, -o or --weights-out");
    if (strcmp(r->weights_mode, "embed") == 0) {
        if (r->weights_out)
            return driver_usage_error(cmd, "--weights-out needs --weights-mode file; embedded weights need no file");
    } else if (strcmp(r->weights_mode, "file") == 0) {
        if (!r->weights_out)
            return driver_usage_error(cmd, "--weights-mode file needs --weights-out FILE for the weights");
    } else {
        return driver_usage_error(cmd, "invalid --weights-mode '%s': use embed or file", r->weights_mode);
    }
    if (r->prefix && !driver_is_identifier(r->prefix, strlen(r->prefix)))
        return driver_usage_error(cmd, "invalid --prefix '%s': it must be a C identifier", r->prefix);
    if (r->passes) {
        pass_pipeline pipeline;
        char err[256];
        if (pass_pipeline_parse(r->passes, &pipeline, err, sizeof err) != 0)
            return driver_usage_error(cmd, "invalid --passes '%s': %s", r->passes, err);
        pass_pipeline_free(&pipeline);
    }
    return DRIVER_OK;
}

int driver_build_command(int argc, char **argv)
{
    const char *cmd = "build";
    build_args a;
    memset(&a, 0, sizeof a);
    a.request.aot = cg_aot_default_options();
    a.request.weights_mode = "embed";
    a.defines = calloc((size_t)argc + 1, sizeof *a.defines);
    if (!a.defines)
        return DRIVER_ERROR;
    int status = DRIVER_USAGE;
    int i = 1;
    while (i < argc) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_build_help(stdout);
            free(a.defines);
            return DRIVER_OK;
        }
        int rc = parse_build_option(cmd, argc, argv, &i, &a);
        if (rc < 0)
            goto done;
        if (rc > 0)
            continue;
        if (arg[0] == '-' && arg[1] != '\0') {
            driver_usage_error(cmd, "unknown option '%s'", arg);
            goto done;
        }
        if (a.request.model) {
            driver_usage_error(cmd, "more than one model file given ('%s' and '%s')", a.request.model, arg);
            goto done;
        }
        a.request.model = arg;
        i++;
    }
    a.request.defines = a.defines;
    a.request.ndefines = a.ndefines;
    if (check_build_args(cmd, &a) != DRIVER_OK)
        goto done;
    ir_diag *d = ir_diag_new(stderr);
    status = d && driver_build(&a.request, d) == 0 ? DRIVER_OK : DRIVER_ERROR;
    ir_diag_free(d);
done:
    free(a.defines);
    return status;
}
