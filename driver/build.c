/* driver_build: one ahead-of-time build as a library call, shared by
 * `quadc build` (driver/cmd_build.c) and `quadc run`. It compiles the model,
 * plans the bundle (codegen/aot.h) and writes the object file, the C header,
 * the weights file and an executable linked by the system C compiler with
 * aot/exe_main.c. Every output is written to a temporary file and renamed
 * into place, so a failure leaves no partial file. */
#include <errno.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codegen/aot.h"
#include "driver/build_int8.h"
#include "driver/driver.h"
#include "frontend/frontend.h"
#include "passes/manager.h"
#include "runtime/quantize_run.h"
#include "runtime/safetensors.h"
#include "runtime/train_llmc.h"

extern char **environ;

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
        s[o++] = driver_is_identifier(&name[i], 1) || (name[i] >= '0' && name[i] <= '9') ? name[i] : '_';
    s[o] = '\0';
    return s;
}

/* Checks the fields that the command line cannot get wrong but a library
 * caller can. Reports and returns -1 on the first invalid one. */
static int check_request(const driver_build_request *r, ir_diag *d)
{
    if (!r->model || !r->weights) {
        ir_diag_file_error(d, r->model, "build: the model file and the weights file are both required");
        return -1;
    }
    if (!r->obj && !r->header && !r->exe && !r->weights_out) {
        ir_diag_file_error(d, r->model, "build: nothing to write; request an object, a header, an executable or a "
                                        "weights file");
        return -1;
    }
    const char *mode = r->weights_mode ? r->weights_mode : "embed";
    if (strcmp(mode, "embed") == 0 && r->weights_out) {
        ir_diag_file_error(d, r->weights_out, "build: a weights file needs weights mode 'file'; embedded weights need "
                                              "no file");
        return -1;
    }
    if (strcmp(mode, "file") == 0 && !r->weights_out) {
        ir_diag_file_error(d, r->model, "build: weights mode 'file' needs the path of the weights file");
        return -1;
    }
    if (strcmp(mode, "embed") != 0 && strcmp(mode, "file") != 0) {
        ir_diag_file_error(d, r->model, "build: invalid weights mode '%s'; use embed or file", mode);
        return -1;
    }
    if (r->prefix && !driver_is_identifier(r->prefix, strlen(r->prefix))) {
        ir_diag_file_error(d, r->model, "build: invalid prefix '%s'; it must be a C identifier", r->prefix);
        return -1;
    }
    return 0;
}

/* Runs the pass list on g with the IR dumps of r->print_ir_dir. An empty
 * list still writes the input graph there. */
static int run_passes(const driver_build_request *r, const char *passes, ir_graph *g, ir_diag *d)
{
    pass_pipeline pipeline;
    char err[256];
    if (pass_pipeline_parse(passes, &pipeline, err, sizeof err) != 0) {
        ir_diag_file_error(d, NULL, "invalid --passes '%s': %s", passes, err);
        return -1;
    }
    pass_manager *pm = pass_manager_new(d);
    pass_dump_options dump = {.print_dir = r->print_ir_dir};
    int rc = pm && pass_manager_add_standard_instruments(pm, &dump) == 0 ? pass_manager_run(pm, &pipeline, g) : -1;
    pass_manager_free(pm);
    pass_pipeline_free(&pipeline);
    return rc;
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

/* Returns the absolute path of `path`, whose directory must exist but
 * which itself need not, or NULL. */
static char *absolute_path(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path + 1)) : strdup(".");
    char *real = dir ? realpath(dir, NULL) : NULL;
    const char *base = slash ? slash + 1 : path;
    size_t n = (real ? strlen(real) : 0) + strlen(base) + 2;
    char *out = real ? malloc(n) : NULL;
    if (out)
        snprintf(out, n, "%s/%s", real, base);
    free(real);
    free(dir);
    return out;
}

/* Links the executable into exe_temp with the system C compiler. It links
 * the bundle object (obj_path when the build writes one, else a temporary
 * one), a stub object with the tokenizer and the runtime archive. The
 * temporary objects are removed on every path. */
static int link_executable(const driver_build_request *r, const cg_aot_layout *l, const char *obj_path,
                           const char *exe_temp, ir_diag *d)
{
    if (!cg_aot_targets_host(l)) {
        ir_diag_file_error(d, r->exe, "-o links only for the host target; drop --triple, or build the object with "
                           "--emit-obj and link it on the target machine");
        return -1;
    }
    const char *dir = r->tokenizer ? r->tokenizer : QUADC_SOURCE_DIR "/data/tokenizer";
    size_t encoder_len = 0, vocab_len = 0;
    char *encoder = read_whole(dir, "encoder.json", &encoder_len, d);
    char *vocab = encoder ? read_whole(dir, "vocab.bpe", &vocab_len, d) : NULL;
    /* The path the weights file will have once every output is in place. */
    char *weights_path = NULL;
    if (r->weights_out)
        weights_path = absolute_path(r->weights_out);
    char *model_obj = NULL, *stub_obj = NULL;
    int status = -1;
    if (!vocab || (r->weights_out && !weights_path))
        goto done;
    if (!obj_path) {
        model_obj = temp_beside(r->exe, "model.o", d);
        if (!model_obj || cg_aot_write_object(l, model_obj, d) != 0)
            goto done;
    }
    stub_obj = temp_beside(r->exe, "stub.o", d);
    if (!stub_obj ||
        cg_aot_write_exe_stub(l, stub_obj, encoder, encoder_len, vocab, vocab_len, weights_path, d) != 0)
        goto done;

    const char *cc = getenv("CC");
    char *argv[16];
    int n = 0;
    argv[n++] = (char *)(cc && cc[0] ? cc : "cc");
    argv[n++] = "-o";
    argv[n++] = (char *)exe_temp;
    argv[n++] = stub_obj;
    argv[n++] = (char *)(model_obj ? model_obj : obj_path);
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
    status = 0;
done:
    if (model_obj)
        unlink(model_obj);
    if (stub_obj)
        unlink(stub_obj);
    free(model_obj);
    free(stub_obj);
    free(weights_path);
    free(encoder);
    free(vocab);
    return status;
}

/* The outputs of a build, in the order they are written: the weights
 * file first, so the executable can record its path. */
enum { OUT_WEIGHTS, OUT_OBJECT, OUT_HEADER, OUT_EXE, OUT_COUNT };

/* Writes every requested output to a temporary file beside it and renames
 * them into place only when all of them were written. A failed build thus
 * leaves no output behind, neither a partial file nor a complete one.
 * Returns 0, or -1 after reporting. */
static int write_outputs(const driver_build_request *r, const cg_aot_layout *l, ir_diag *d)
{
    const char *paths[OUT_COUNT] = {r->weights_out, r->obj, r->header, r->exe};
    char *temps[OUT_COUNT] = {NULL};
    int rc = 0;
    for (int k = 0; k < OUT_COUNT && rc == 0; k++)
        if (paths[k] && !(temps[k] = temp_beside(paths[k], "tmp", d)))
            rc = -1;

    if (rc == 0 && temps[OUT_WEIGHTS])
        rc = cg_aot_write_weights(l, temps[OUT_WEIGHTS], d);
    if (rc == 0 && temps[OUT_OBJECT])
        rc = cg_aot_write_object(l, temps[OUT_OBJECT], d);
    if (rc == 0 && temps[OUT_HEADER])
        rc = cg_aot_write_header(l, temps[OUT_HEADER], d);
    if (rc == 0 && temps[OUT_EXE])
        rc = link_executable(r, l, temps[OUT_OBJECT], temps[OUT_EXE], d);

    for (int k = 0; k < OUT_COUNT && rc == 0; k++) {
        if (!temps[k])
            continue;
        if (rename(temps[k], paths[k]) != 0) {
            ir_diag_file_error(d, paths[k], "cannot move the output file into place: %s", strerror(errno));
            rc = -1;
            break;
        }
        free(temps[k]);
        temps[k] = NULL;
    }
    for (int k = 0; k < OUT_COUNT; k++) {
        if (temps[k])
            unlink(temps[k]);
        free(temps[k]);
    }
    return rc;
}

/* Counts the live values of op `op` in g. */
static int count_ops(const ir_graph *g, ir_op op)
{
    int n = 0;
    for (int id = 0; id < g->nvalues; id++)
        n += g->values[id]->op == op && !g->values[id]->dead;
    return n;
}

/* Replaces *g and *w by the fake-quant graph of the quantized file and its
 * weights with the i8 copies that lower-int8 reads. */
static int load_int8(const driver_build_request *r, ir_graph **g, rt_weights **w, ir_diag *d)
{
    rt_weights_free(*w);
    *w = NULL;
    ir_graph *quantized;
    int nsites;
    if (driver_load_int8(r, *g, &quantized, w, &nsites, d) != 0)
        return -1;
    ir_graph_free(*g);
    *g = quantized;
    if (!r->quiet)
        fprintf(stderr, "quadc build: %s is quantized (%s %s); %d integer weights and multipliers computed\n", r->weights,
                rt_weights_get_meta(*w, "quadc.quantize.method") ? rt_weights_get_meta(*w, "quadc.quantize.method")
                                                                 : "unknown method",
                rt_weights_get_meta(*w, DRIVER_QUANTIZE_BITS_KEY), nsites);
    return 0;
}

/* The pass list of the build: lower-int8 first for a quantized model, then
 * r->passes. Returns a malloc'd text, or NULL when there is nothing to run. */
static char *build_pipeline(const driver_build_request *r, bool int8)
{
    const char *user = r->passes && r->passes[0] ? r->passes : NULL;
    size_t n = 32 + (user ? strlen(user) : 0);
    char *text = malloc(n);
    if (text)
        snprintf(text, n, "%s%s%s", int8 ? "lower-int8" : "", int8 && user ? "," : "", user ? user : "");
    return text;
}

/* Compiles the model under the -D values of r and the hparams recorded in
 * w's metadata, so a file written by quadc or converted from llm.c needs no
 * -D for its sizes. Returns NULL after reporting. */
static ir_graph *compile_with_weights(const driver_build_request *r, const rt_weights *w, ir_diag *d)
{
    fe_define *defines = NULL;
    int ndefines = 0;
    if (rt_quantize_weight_hparams(r->model, w, r->weights, r->defines, r->ndefines, &defines, &ndefines, d) != 0)
        return NULL;
    ir_graph *g = fe_compile_file(r->model, defines, ndefines, d);
    free(defines);
    return g;
}

int driver_build(const driver_build_request *r, ir_diag *d)
{
    if (check_request(r, d) != 0)
        return -1;
    /* Reads an llm.c checkpoint or a safetensors file, and gives both the
     * Hugging Face GPT-2 names. */
    rt_weights *w = rt_train_load_weights(r->weights, d);
    if (!w)
        return -1;
    ir_graph *g = compile_with_weights(r, w, d);
    if (!g) {
        rt_weights_free(w);
        return -1;
    }
    int status = -1;
    cg_aot_layout *l = NULL;
    char *passes = NULL;
    char *prefix = r->prefix ? strdup(r->prefix) : default_prefix(g->name);
    if (!prefix)
        goto done;
    bool int8 = driver_is_quantized(w);
    if (r->int8 && !int8) {
        driver_report_missing_quantizers(r, w, d);
        goto done;
    }
    if (int8 && load_int8(r, &g, &w, d) != 0)
        goto done;

    passes = build_pipeline(r, int8);
    if (!passes)
        goto done;
    if ((passes[0] || r->print_ir_dir) && run_passes(r, passes, g, d) != 0)
        goto done;
    if (int8 && driver_keep_graph_params(g, &w, d) != 0)
        goto done;
    if (int8 && !r->quiet)
        fprintf(stderr, "quadc build: %d layers run as q.linear on i8 weights, %d attention matmuls as q.matmul\n",
                count_ops(g, IR_OP_Q_LINEAR), count_ops(g, IR_OP_Q_MATMUL));

    cg_aot_options aot = r->aot;
    aot.prefix = prefix;
    aot.source = r->model;
    aot.weights_source = r->weights;
    aot.embed_weights = !r->weights_mode || strcmp(r->weights_mode, "embed") == 0;
    l = cg_aot_plan(g, w, &aot, d);
    if (!l || write_outputs(r, l, d) != 0)
        goto done;
    status = 0;
done:
    cg_aot_layout_free(l);
    rt_weights_free(w);
    free(passes);
    free(prefix);
    ir_graph_free(g);
    return status;
}
