/* `quadc build`: compiles a model ahead of time into an object file with
 * a C header, a weights file, and optionally a native executable linked by
 * the system C compiler with aot/exe_main.c (codegen/aot.h). */
#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codegen/aot.h"
#include "driver/driver.h"
#include "frontend/frontend.h"
#include "passes/manager.h"
#include "runtime/safetensors.h"

extern char **environ;

typedef struct build_args {
    const char *model;
    const char *weights;
    fe_define *defines;
    int ndefines;
    const char *passes;
    const char *obj;
    const char *header;
    const char *weights_mode;
    const char *weights_out;
    const char *exe;
    const char *prefix;
    const char *tokenizer;
    cg_aot_options aot;
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
            "  --weights FILE          safetensors file with one tensor per param (required)\n"
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
            "                          quadc source tree)\n");
}

static bool is_identifier(const char *s, size_t n)
{
    if (n == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_'))
            return false;
    return true;
}

static int parse_define(const char *cmd, char *text, fe_define *out)
{
    char *eq = strchr(text, '=');
    if (!eq || !is_identifier(text, (size_t)(eq - text)))
        return driver_usage_error(cmd, "invalid -D value '%s': write -D name=INTEGER", text);
    char *end;
    errno = 0;
    long long v = strtoll(eq + 1, &end, 10);
    if (eq[1] == '\0' || *end != '\0' || errno == ERANGE)
        return driver_usage_error(cmd, "invalid -D value '%s': '%s' is not a 64-bit integer", text, eq + 1);
    *eq = '\0';
    out->name = text;
    out->value = v;
    return DRIVER_OK;
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
        {"--weights", offsetof(build_args, weights)},
        {"--passes", offsetof(build_args, passes)},
        {"--emit-obj", offsetof(build_args, obj)},
        {"--emit-header", offsetof(build_args, header)},
        {"--weights-mode", offsetof(build_args, weights_mode)},
        {"--weights-out", offsetof(build_args, weights_out)},
        {"-o", offsetof(build_args, exe)},
        {"--prefix", offsetof(build_args, prefix)},
        {"--tokenizer", offsetof(build_args, tokenizer)},
        {"--target-cpu", offsetof(build_args, aot.cpu)},
        {"--triple", offsetof(build_args, aot.triple)},
    };
    const char *value;
    for (size_t k = 0; k < sizeof strings / sizeof *strings; k++) {
        int rc = driver_option_value(cmd, argc, argv, i, strings[k].name, &value);
        if (rc != 0) {
            if (rc > 0)
                *(const char **)((char *)a + strings[k].field) = value;
            return rc;
        }
    }
    int rc = driver_option_value(cmd, argc, argv, i, "--threads-max", &value);
    if (rc != 0)
        return rc < 0 || parse_int(cmd, "--threads-max", value, 1, 4096, &a->aot.threads_max) != DRIVER_OK ? -1 : 1;
    rc = driver_option_value(cmd, argc, argv, i, "-O", &value);
    if (rc != 0)
        return rc < 0 || parse_int(cmd, "-O", value, 0, 3, &a->aot.opt_level) != DRIVER_OK ? -1 : 1;
    const char *arg = argv[*i];
    if (strncmp(arg, "-D", 2) == 0) {
        char *text = arg[2] ? argv[*i] + 2 : (*i + 1 < argc ? argv[*i + 1] : NULL);
        if (!text)
            return driver_usage_error(cmd, "-D needs a value: write -D name=INTEGER"), -1;
        if (parse_define(cmd, text, &a->defines[a->ndefines]) != DRIVER_OK)
            return -1;
        a->ndefines++;
        *i += arg[2] ? 1 : 2;
        return 1;
    }
    return 0;
}

static int check_build_args(const char *cmd, build_args *a)
{
    if (!a->model)
        return driver_usage_error(cmd, "no model file; give one such as examples/gpt2.qd");
    if (!a->weights)
        return driver_usage_error(cmd, "--weights is required: give the safetensors file of the model");
    if (!a->obj && !a->header && !a->exe && !a->weights_out)
        return driver_usage_error(cmd, "nothing to write; give --emit-obj, --emit-header, -o or --weights-out");
    if (strcmp(a->weights_mode, "embed") == 0) {
        a->aot.embed_weights = true;
        if (a->weights_out)
            return driver_usage_error(cmd, "--weights-out needs --weights-mode file; embedded weights need no file");
    } else if (strcmp(a->weights_mode, "file") == 0) {
        a->aot.embed_weights = false;
        if (!a->weights_out)
            return driver_usage_error(cmd, "--weights-mode file needs --weights-out FILE for the weights");
    } else {
        return driver_usage_error(cmd, "invalid --weights-mode '%s': use embed or file", a->weights_mode);
    }
    if (a->prefix && !is_identifier(a->prefix, strlen(a->prefix)))
        return driver_usage_error(cmd, "invalid --prefix '%s': it must be a C identifier", a->prefix);
    if (a->passes) {
        pass_pipeline pipeline;
        char err[256];
        if (pass_pipeline_parse(a->passes, &pipeline, err, sizeof err) != 0)
            return driver_usage_error(cmd, "invalid --passes '%s': %s", a->passes, err);
        pass_pipeline_free(&pipeline);
    }
    return DRIVER_OK;
}

static int run_passes(const char *passes, ir_graph *g, ir_diag *d)
{
    pass_pipeline pipeline;
    char err[256];
    if (pass_pipeline_parse(passes, &pipeline, err, sizeof err) != 0) {
        ir_diag_file_error(d, NULL, "invalid --passes '%s': %s", passes, err);
        return -1;
    }
    pass_manager *pm = pass_manager_new(d);
    int rc = pm ? pass_manager_run(pm, &pipeline, g) : -1;
    pass_manager_free(pm);
    pass_pipeline_free(&pipeline);
    return rc;
}

/* Makes a C identifier from the graph name, for the default prefix. */
static char *default_prefix(const char *graph_name)
{
    const char *name = graph_name && graph_name[0] ? graph_name : "model";
    size_t n = strlen(name);
    char *s = malloc(n + 2);
    if (!s)
        return NULL;
    size_t o = 0;
    if (name[0] >= '0' && name[0] <= '9')
        s[o++] = '_';
    for (size_t i = 0; i < n; i++)
        s[o++] = is_identifier(&name[i], 1) || (name[i] >= '0' && name[i] <= '9') ? name[i] : '_';
    s[o] = '\0';
    return s;
}

static char *read_whole(const char *dir, const char *name, size_t *len, ir_diag *d)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);
    if (!path)
        return NULL;
    snprintf(path, n, "%s/%s", dir, name);
    char *text = driver_read_file(path, len, d);
    free(path);
    return text;
}

/* Runs argv (argv[0] looked up in PATH) and waits. Returns 0 when it
 * exited with status 0, else -1 after reporting. */
static int run_program(char *const *argv, ir_diag *d)
{
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
    if (rc != 0) {
        ir_diag_file_error(d, NULL, "cannot run the C compiler '%s': %s; install one or set CC", argv[0],
                           strerror(rc));
        return -1;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ir_diag_file_error(d, NULL, "linking the executable with '%s' failed (see the messages above)", argv[0]);
        return -1;
    }
    return 0;
}

/* A temporary path beside `path`, created empty. */
static char *temp_beside(const char *path, const char *suffix, ir_diag *d)
{
    size_t n = strlen(path) + strlen(suffix) + 16;
    char *temp = malloc(n);
    if (!temp)
        return NULL;
    snprintf(temp, n, "%s.%s.XXXXXX", path, suffix);
    int fd = mkstemp(temp);
    if (fd < 0) {
        ir_diag_file_error(d, path, "cannot create the output file: %s", strerror(errno));
        free(temp);
        return NULL;
    }
    close(fd);
    return temp;
}

/* Links the executable: the bundle object (the --emit-obj file when one
 * was written, else a temporary one), a stub object with the tokenizer and
 * the runtime archive, with the system C compiler. The temporary files are
 * removed on every path. */
static int link_executable(const build_args *a, const cg_aot_layout *l, ir_diag *d)
{
    if (!cg_aot_targets_host(l)) {
        ir_diag_file_error(d, a->exe, "-o links only for the host target; drop --triple, or build the object with "
                           "--emit-obj and link it on the target machine");
        return -1;
    }
    const char *dir = a->tokenizer ? a->tokenizer : QUADC_SOURCE_DIR "/data/tokenizer";
    size_t encoder_len = 0, vocab_len = 0;
    char *encoder = read_whole(dir, "encoder.json", &encoder_len, d);
    char *vocab = encoder ? read_whole(dir, "vocab.bpe", &vocab_len, d) : NULL;
    char *weights_path = NULL;
    if (a->weights_out)
        weights_path = realpath(a->weights_out, NULL);
    char *model_obj = NULL, *stub_obj = NULL, *exe_temp = NULL;
    int status = -1;
    if (!vocab)
        goto done;
    if (!a->obj) {
        model_obj = temp_beside(a->exe, "model.o", d);
        if (!model_obj || cg_aot_write_object(l, model_obj, d) != 0)
            goto done;
    }
    stub_obj = temp_beside(a->exe, "stub.o", d);
    exe_temp = stub_obj ? temp_beside(a->exe, "tmp", d) : NULL;
    if (!exe_temp ||
        cg_aot_write_exe_stub(l, stub_obj, encoder, encoder_len, vocab, vocab_len, weights_path, d) != 0)
        goto done;

    const char *cc = getenv("CC");
    char *argv[16];
    int n = 0;
    argv[n++] = (char *)(cc && cc[0] ? cc : "cc");
    argv[n++] = "-o";
    argv[n++] = exe_temp;
    argv[n++] = stub_obj;
    argv[n++] = (char *)(model_obj ? model_obj : a->obj);
    argv[n++] = QUADC_EXE_ARCHIVE;
    argv[n++] = QUADC_EXE_PCRE2;
    argv[n++] = "-lcjson";
    argv[n++] = "-lm";
    argv[n++] = "-lpthread";
    argv[n] = NULL;
    if (run_program(argv, d) != 0)
        goto done;
    /* mkstemp made the file 0600; give it the mode of a new executable. */
    mode_t mask = umask(0);
    umask(mask);
    chmod(exe_temp, 0777 & ~mask);
    if (rename(exe_temp, a->exe) != 0) {
        ir_diag_file_error(d, a->exe, "cannot move the executable into place: %s", strerror(errno));
        goto done;
    }
    free(exe_temp);
    exe_temp = NULL;
    status = 0;
done:
    if (model_obj)
        unlink(model_obj);
    if (stub_obj)
        unlink(stub_obj);
    if (exe_temp)
        unlink(exe_temp);
    free(model_obj);
    free(stub_obj);
    free(exe_temp);
    free(weights_path);
    free(encoder);
    free(vocab);
    return status;
}

static int build(build_args *a, ir_diag *d)
{
    ir_graph *g = fe_compile_file(a->model, a->defines, a->ndefines, d);
    if (!g)
        return DRIVER_ERROR;
    int status = DRIVER_ERROR;
    rt_weights *w = NULL;
    cg_aot_layout *l = NULL;
    char *prefix = a->prefix ? strdup(a->prefix) : default_prefix(g->name);
    if (!prefix || (a->passes && run_passes(a->passes, g, d) != 0))
        goto done;
    w = rt_safetensors_read(a->weights, d);
    if (!w || rt_gpt2_canonicalize_names(w, d, a->weights) != 0)
        goto done;
    a->aot.prefix = prefix;
    a->aot.source = a->model;
    a->aot.weights_source = a->weights;
    l = cg_aot_plan(g, w, &a->aot, d);
    if (!l)
        goto done;
    /* The weights file first, so the executable can record its path. */
    if (a->weights_out && cg_aot_write_weights(l, a->weights_out, d) != 0)
        goto done;
    if (a->obj && cg_aot_write_object(l, a->obj, d) != 0)
        goto done;
    if (a->header && cg_aot_write_header(l, a->header, d) != 0)
        goto done;
    if (a->exe && link_executable(a, l, d) != 0)
        goto done;
    status = DRIVER_OK;
done:
    cg_aot_layout_free(l);
    rt_weights_free(w);
    free(prefix);
    ir_graph_free(g);
    return status;
}

int driver_build(int argc, char **argv)
{
    const char *cmd = "build";
    build_args a;
    memset(&a, 0, sizeof a);
    a.aot = cg_aot_default_options();
    a.weights_mode = "embed";
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
        if (a.model) {
            driver_usage_error(cmd, "more than one model file given ('%s' and '%s')", a.model, arg);
            goto done;
        }
        a.model = arg;
        i++;
    }
    if (check_build_args(cmd, &a) != DRIVER_OK)
        goto done;
    ir_diag *d = ir_diag_new(stderr);
    status = d ? build(&a, d) : DRIVER_ERROR;
    ir_diag_free(d);
done:
    free(a.defines);
    return status;
}
