/* The stages of `quadc run` after quantization: the INT8 build of the
 * Quadapter model into the output directory, and the perplexity and text
 * that the built executable computes, run as child processes whose
 * output is parsed. */
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codegen/aot.h"
#include "driver/progress.h"
#include "driver/run.h"

#define IR_DIR_INT8 "4-int8"

extern char **environ;

/* ---- the build ---- */

/* A temporary name beside path, in the same directory, so that rename
 * moves the finished file into place. */
static char *temp_name(const char *path)
{
    size_t n = strlen(path) + 32;
    char *temp = malloc(n);
    if (temp)
        snprintf(temp, n, "%s.tmp%ld", path, (long)getpid());
    return temp;
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

int run_stage_build(run_state *s)
{
    const run_args *a = s->a;
    fe_define *defines = calloc((size_t)s->ndefines + 2, sizeof *defines);
    const char *finals[3] = {s->object_path, s->header_path, s->exe_path};
    char *temps[3] = {NULL, NULL, NULL};
    int nfiles = s->exe_path ? 3 : 2;
    char *ir_dir = a->print_ir_dir ? run_path(a->print_ir_dir, IR_DIR_INT8) : NULL;
    int rc = defines && (!a->print_ir_dir || ir_dir) ? 0 : -1;
    for (int k = 0; k < nfiles && rc == 0; k++)
        rc = (temps[k] = temp_name(finals[k])) ? 0 : -1;
    if (rc == 0) {
        /* One forward of the executable covers one window (T), as in the sessions. */
        memcpy(defines, s->defines, sizeof *defines * (size_t)s->ndefines);
        defines[s->ndefines] = (fe_define){"B", 1};
        defines[s->ndefines + 1] = (fe_define){"T", s->window};
        driver_build_request r = {0};
        r.model = a->model;
        r.weights = s->quantized_path;
        r.defines = defines;
        r.ndefines = s->ndefines + 2;
        r.obj = temps[0];
        r.header = temps[1];
        r.exe = temps[2];
        r.weights_mode = "embed";
        r.tokenizer = a->tokenizer;
        r.print_ir_dir = ir_dir;
        r.quiet = true;
        r.int8 = true;
        r.aot = cg_aot_default_options();
        r.aot.cpu = a->target_cpu;
        r.aot.triple = a->triple;
        fprintf(stderr, "building %s from %s\n", s->exe_path ? s->exe_path : s->object_path, s->quantized_path);
        rc = driver_build(&r, s->d);
    }
    /* Every file moves into place only when the whole build succeeded. */
    for (int k = 0; k < nfiles && rc == 0; k++)
        if (rename(temps[k], finals[k]) != 0) {
            ir_diag_file_error(s->d, finals[k], "cannot move the built file into place: %s", strerror(errno));
            rc = -1;
        }
    for (int k = 0; k < nfiles; k++) {
        if (temps[k])
            unlink(temps[k]);
        free(temps[k]);
    }
    if (rc == 0) {
        s->object_bytes = file_size(s->object_path);
        s->header_bytes = file_size(s->header_path);
        s->exe_bytes = s->exe_path ? file_size(s->exe_path) : -1;
    }
    free(ir_dir);
    free(defines);
    return rc;
}

/* ---- child processes ---- */

/* Runs argv[0] with argv and waits for it. With output != NULL its
 * standard output is read into *output (a NUL-terminated malloc'd
 * string), else it goes to ours. Standard error is ours. Returns 0 when it
 * exited with status 0, else -1 after reporting what went wrong. */
static int run_child(char *const *argv, char **output, ir_diag *d)
{
    int fds[2] = {-1, -1};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (output) {
        if (pipe(fds) != 0) {
            ir_diag_file_error(d, argv[0], "cannot create a pipe: %s", strerror(errno));
            posix_spawn_file_actions_destroy(&actions);
            return -1;
        }
        posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
        posix_spawn_file_actions_addclose(&actions, fds[0]);
        posix_spawn_file_actions_addclose(&actions, fds[1]);
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid;
    int spawn_rc = posix_spawn(&pid, argv[0], &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (output)
        close(fds[1]);
    if (spawn_rc != 0) {
        if (output)
            close(fds[0]);
        ir_diag_file_error(d, argv[0], "cannot run the built executable: %s", strerror(spawn_rc));
        return -1;
    }

    size_t len = 0, cap = 4096;
    char *text = output ? malloc(cap) : NULL;
    while (output && text) {
        if (len + 1 == cap) {
            char *grown = realloc(text, cap *= 2);
            if (!grown) {
                free(text);
                text = NULL;
                break;
            }
            text = grown;
        }
        ssize_t got = read(fds[0], text + len, cap - len - 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    if (output)
        close(fds[0]);

    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            free(text);
            ir_diag_file_error(d, argv[0], "waiting for the built executable failed: %s", strerror(errno));
            return -1;
        }
    if (WIFSIGNALED(status)) {
        ir_diag_file_error(d, argv[0], "the built executable was killed by signal %d (%s)", WTERMSIG(status),
                           strsignal(WTERMSIG(status)));
    } else if (WEXITSTATUS(status) != 0) {
        ir_diag_file_error(d, argv[0], "the built executable failed with exit status %d (see its messages above)",
                           WEXITSTATUS(status));
    } else if (output && !text) {
        ir_diag_file_error(d, argv[0], "out of memory reading the output of the built executable");
    } else {
        if (output) {
            text[len] = '\0';
            *output = text;
        }
        return 0;
    }
    free(text);
    return -1;
}

/* Parses the line that the executable's perplexity command prints:
 * "FILE: N tokens scored (window W, stride S), mean loss L nats,
 * perplexity P, R tokens/s". */
static int parse_perplexity(const char *output, const char *path, int window, int stride, run_score *score)
{
    size_t n = strlen(path);
    if (strncmp(output, path, n) != 0 || strncmp(output + n, ": ", 2) != 0)
        return -1;
    int got_window, got_stride;
    double tokens_per_second;
    int fields = sscanf(output + n + 2,
                        "%zu tokens scored (window %d, stride %d), mean loss %lf nats, perplexity %lf, %lf tokens/s",
                        &score->tokens_scored, &got_window, &got_stride, &score->mean_nll, &score->perplexity,
                        &tokens_per_second);
    if (fields != 6 || got_window != window || got_stride != stride)
        return -1;
    score->seconds = tokens_per_second > 0 ? (double)score->tokens_scored / tokens_per_second : 0.0;
    score->measured = true;
    return 0;
}

/* Formats a decimal option value for a child's argv. */
static char *number_text(long long value)
{
    char text[32];
    snprintf(text, sizeof text, "%lld", value);
    return strdup(text);
}

int run_stage_binary(run_state *s)
{
    const run_args *a = s->a;
    s->scores[RUN_INT8] = calloc((size_t)s->ntexts, sizeof *s->scores[RUN_INT8]);
    char *window = number_text(s->window), *stride = number_text(s->stride);
    char *threads = number_text(a->threads);
    int rc = s->scores[RUN_INT8] && window && stride && threads ? 0 : -1;
    for (int i = 0; i < s->ntexts && rc == 0; i++) {
        const run_text *t = &s->texts[i];
        char *max_tokens = number_text((long long)t->n);
        char *argv[16];
        int n = 0;
        argv[n++] = s->exe_path;
        argv[n++] = "perplexity";
        argv[n++] = (char *)t->path;
        argv[n++] = "--ctx";
        argv[n++] = window;
        argv[n++] = "--stride";
        argv[n++] = stride;
        argv[n++] = "--max-tokens";
        argv[n++] = max_tokens;
        if (a->threads > 0) {
            argv[n++] = "--threads";
            argv[n++] = threads;
        }
        argv[n] = NULL;

        driver_progress progress;
        char title[160];
        snprintf(title, sizeof title, "INT8 perplexity of %s", t->path);
        driver_progress_start_uncounted(&progress, title);
        char *output = NULL;
        rc = max_tokens ? run_child(argv, &output, s->d) : -1;
        run_score *score = &s->scores[RUN_INT8][i];
        if (rc == 0 && parse_perplexity(output, t->path, s->window, s->stride, score) != 0) {
            driver_progress_abort(&progress);
            ir_diag_file_error(s->d, s->exe_path, "unexpected output of its perplexity command: '%s'", output);
            rc = -1;
        } else if (rc == 0 && score->tokens_scored != s->scores[RUN_FP32][i].tokens_scored) {
            /* The same ids must be scored, or the columns do not compare. */
            driver_progress_abort(&progress);
            ir_diag_file_error(s->d, t->path, "the executable scored %zu tokens of the text but quadc scored %zu; "
                               "the two tokenizations differ", score->tokens_scored,
                               s->scores[RUN_FP32][i].tokens_scored);
            rc = -1;
        } else if (rc == 0) {
            char summary[128];
            snprintf(summary, sizeof summary, "%.3f over %zu tokens, %.1f tokens/s", score->perplexity,
                     score->tokens_scored, score->seconds > 0 ? (double)score->tokens_scored / score->seconds : 0.0);
            driver_progress_finish(&progress, summary);
        } else {
            driver_progress_abort(&progress);
        }
        free(output);
        free(max_tokens);
    }
    free(window);
    free(stride);
    free(threads);
    return rc;
}

int run_generate_prompt(run_state *s)
{
    const run_args *a = s->a;
    char *seed = number_text((long long)a->seed), *threads = number_text(a->threads);
    if (!seed || !threads) {
        free(seed);
        free(threads);
        return -1;
    }
    char *argv[] = {s->exe_path, "generate", "--prompt", (char *)a->prompt, "--seed", seed,
                    a->threads > 0 ? "--threads" : NULL, threads, NULL};
    fprintf(stderr, "continuation of the prompt by %s:\n", s->exe_path);
    int rc = run_child(argv, NULL, s->d);
    fflush(stdout);
    free(seed);
    free(threads);
    return rc;
}
