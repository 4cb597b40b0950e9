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
#include "driver/driver.h"
#include "frontend/frontend.h"
#include "passes/manager.h"
#include "runtime/safetensors.h"

extern char **environ;

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
    if (r->prefix && !is_identifier(r->prefix, strlen(r->prefix))) {
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

/* Links the executable: the bundle object (the r->obj file when one was
 * written, else a temporary one), a stub object with the tokenizer and
 * the runtime archive, with the system C compiler. The temporary files are
 * removed on every path. */
static int link_executable(const driver_build_request *r, const cg_aot_layout *l, ir_diag *d)
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
    char *weights_path = NULL;
    if (r->weights_out)
        weights_path = realpath(r->weights_out, NULL);
    char *model_obj = NULL, *stub_obj = NULL, *exe_temp = NULL;
    int status = -1;
    if (!vocab)
        goto done;
    if (!r->obj) {
        model_obj = temp_beside(r->exe, "model.o", d);
        if (!model_obj || cg_aot_write_object(l, model_obj, d) != 0)
            goto done;
    }
    stub_obj = temp_beside(r->exe, "stub.o", d);
    exe_temp = stub_obj ? temp_beside(r->exe, "tmp", d) : NULL;
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
    argv[n++] = (char *)(model_obj ? model_obj : r->obj);
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
    if (rename(exe_temp, r->exe) != 0) {
        ir_diag_file_error(d, r->exe, "cannot move the executable into place: %s", strerror(errno));
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

/* Writes the outputs of a planned bundle, the weights file first so the
 * executable can record its path. */
static int write_outputs(const driver_build_request *r, const cg_aot_layout *l, ir_diag *d)
{
    if (r->weights_out && cg_aot_write_weights(l, r->weights_out, d) != 0)
        return -1;
    if (r->obj && cg_aot_write_object(l, r->obj, d) != 0)
        return -1;
    if (r->header && cg_aot_write_header(l, r->header, d) != 0)
        return -1;
    if (r->exe && link_executable(r, l, d) != 0)
        return -1;
    return 0;
}

int driver_build(const driver_build_request *r, ir_diag *d)
{
    if (check_request(r, d) != 0)
        return -1;
    ir_graph *g = fe_compile_file(r->model, r->defines, r->ndefines, d);
    if (!g)
        return -1;
    int status = -1;
    rt_weights *w = NULL;
    cg_aot_layout *l = NULL;
    char *prefix = r->prefix ? strdup(r->prefix) : default_prefix(g->name);
    if (!prefix)
        goto done;
    if ((r->passes || r->print_ir_dir) && run_passes(r, r->passes ? r->passes : "", g, d) != 0)
        goto done;
    w = rt_safetensors_read(r->weights, d);
    if (!w || rt_gpt2_canonicalize_names(w, d, r->weights) != 0)
        goto done;

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
    free(prefix);
    ir_graph_free(g);
    return status;
}
