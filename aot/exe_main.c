/* The main program of executables made by `quadc build -o`. It generates
 * text and computes sliding-window perplexity with a GPT-2 bundle and the
 * tokenizer files embedded by the stub object (aot/bundle.h).
 *
 * The bundle takes an i32 input `idx` [B, T] and returns `logits`
 * [B, T, V], and batch row 0 is used. Two kinds of bundles work:
 *   - full-sequence graphs (examples/gpt2.qd): every step runs the whole
 *     T-token window, and other inputs (such as `targets`) get zeros;
 *   - key-value cache graphs (examples/gpt2_kv.qd), recognized by the
 *     inputs `pos` i32[] and `positions` i32[T]: tokens are appended T at
 *     a time to the caches, which are the other inputs, zero-filled once. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aot/bundle.h"
#include "runtime/evaluate.h"
#include "runtime/sample.h"
#include "runtime/tokenizer.h"
#include "runtime/train_rng.h"

enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2 };
/* parse_args printed the help: exit with EXIT_OK without running. */
enum { PARSED_HELP = -1 };

typedef struct exe_model {
    const qc_bundle *bundle;
    void *ctx;
    int idx_input, logits_output;
    int pos_input, positions_input; /* cache bundles only, else -1 */
    int T, V;
    int context;  /* most tokens one sequence can use */
    int position; /* cache bundles: tokens appended so far */
    void **inputs;  /* per bundle input: the buffer passed to run */
    void **outputs; /* per bundle output */
} exe_model;

static const char *program = "model";

static void print_usage(FILE *out)
{
    fprintf(out,
            "usage: %s generate --prompt TEXT [--max-new N] [--temperature F] [--top-k K] [--seed S]\n"
            "       %s perplexity FILE [--ctx N] [--stride N] [--max-tokens N]\n"
            "\n"
            "Runs the GPT-2 model compiled into this program by `quadc build`.\n"
            "\n"
            "generate: continues TEXT and prints the prompt and the new text.\n"
            "  --prompt TEXT           the text to continue (required)\n"
            "  --max-new N             tokens to generate (default 64)\n"
            "  --temperature F         divide the logits by F before sampling; 0 picks the\n"
            "                          most likely token (default 1)\n"
            "  --top-k K               sample among the K most likely tokens; 0 = all\n"
            "                          (default 40)\n"
            "  --seed S                seed of the sampler; one seed gives the same text\n"
            "                          (default 1)\n"
            "perplexity: prints the sliding-window perplexity of the UTF-8 text in FILE.\n"
            "  --ctx N                 window length in tokens (default: the model's T, or\n"
            "                          its cache rows)\n"
            "  --stride N              tokens the window moves each step (default: half the\n"
            "                          window)\n"
            "  --max-tokens N          score only the first N tokens of FILE (default 0: all)\n"
            "Both:\n"
            "  --threads N             threads per parallel loop (default: online cores, at\n"
            "                          most the bundle's THREADS_MAX)\n"
            "  --weights FILE          weights file to load instead of the embedded weights\n"
            "                          or the file named at build time: a blob that quadc\n"
            "                          build --weights-out wrote for this build, not a\n"
            "                          safetensors file\n",
            program, program);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: error: ", program);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nrun '%s --help' for the options\n", program);
    va_end(ap);
    return EXIT_USAGE;
}

static int parse_long(const char *option, const char *text, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno == ERANGE || v < min || v > max) {
        fprintf(stderr, "%s: error: invalid %s value '%s': expected an integer from %lld to %lld\n", program, option,
                text, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_double(const char *option, const char *text, double *out)
{
    char *end;
    double v = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || !isfinite(v) || v < 0) {
        fprintf(stderr, "%s: error: invalid %s value '%s': expected a number >= 0\n", program, option, text);
        return -1;
    }
    *out = v;
    return 0;
}

static int find_tensor(const qc_bundle_tensor *ts, int n, const char *name)
{
    for (int k = 0; k < n; k++)
        if (strcmp(ts[k].name, name) == 0)
            return k;
    return -1;
}

/* Checks the bundle's signature and allocates its buffers. */
static int model_open(exe_model *m, const char *weights, int threads)
{
    const qc_bundle *b = quadc_exe_bundle;
    memset(m, 0, sizeof *m);
    m->bundle = b;
    if (b->abi_version != 1) {
        fprintf(stderr, "%s: error: the bundle has ABI version %d but this program reads version 1; rebuild it "
                "with the same quadc\n", program, (int)b->abi_version);
        return -1;
    }
    m->idx_input = find_tensor(b->inputs, b->ninputs, "idx");
    m->logits_output = find_tensor(b->outputs, b->noutputs, "logits");
    const qc_bundle_tensor *idx = m->idx_input >= 0 ? &b->inputs[m->idx_input] : NULL;
    const qc_bundle_tensor *logits = m->logits_output >= 0 ? &b->outputs[m->logits_output] : NULL;
    if (!idx || idx->dtype != QC_BUNDLE_I32 || idx->rank != 2 || !logits || logits->dtype != QC_BUNDLE_F32 ||
        logits->rank != 3) {
        fprintf(stderr, "%s: error: bundle '%s' needs an input 'idx' i32[B,T] and an output 'logits' f32[B,T,V]\n",
                program, b->prefix);
        return -1;
    }
    m->T = (int)idx->dims[1];
    m->V = (int)logits->dims[2];
    m->context = m->T;
    m->pos_input = find_tensor(b->inputs, b->ninputs, "pos");
    m->positions_input = find_tensor(b->inputs, b->ninputs, "positions");
    if ((m->pos_input >= 0) != (m->positions_input >= 0)) {
        fprintf(stderr, "%s: error: bundle '%s' has only one of the cache inputs 'pos' and 'positions'\n", program,
                b->prefix);
        return -1;
    }
    if (m->pos_input >= 0) {
        /* The cache rows, axis -2 of every other f32 input, bound the
         * sequence. */
        m->context = 0;
        for (int k = 0; k < b->ninputs; k++) {
            const qc_bundle_tensor *t = &b->inputs[k];
            if (t->dtype == QC_BUNDLE_F32 && t->rank >= 2 && (m->context == 0 || t->dims[t->rank - 2] < m->context))
                m->context = (int)t->dims[t->rank - 2];
        }
        if (m->context < m->T) {
            fprintf(stderr, "%s: error: bundle '%s' has cache inputs but none with at least %d rows\n", program,
                    b->prefix, m->T);
            return -1;
        }
    }
    m->inputs = calloc((size_t)b->ninputs + 1, sizeof *m->inputs);
    m->outputs = calloc((size_t)b->noutputs + 1, sizeof *m->outputs);
    if (!m->inputs || !m->outputs)
        return -1;
    for (int k = 0; k < b->ninputs; k++)
        if (!(m->inputs[k] = calloc(1, (size_t)b->inputs[k].bytes + 1)))
            return -1;
    for (int k = 0; k < b->noutputs; k++)
        if (!(m->outputs[k] = calloc(1, (size_t)b->outputs[k].bytes + 1)))
            return -1;

    const char *path = weights ? weights : quadc_exe_weights_path;
    int rc = b->init(&m->ctx, path, threads);
    if (rc != 0) {
        fprintf(stderr, "%s: error: initializing the model failed with status %d", program, rc);
        if (rc == QC_BUNDLE_STATUS_WEIGHTS_READ)
            fprintf(stderr, ": cannot read the weights file '%s'; pass --weights FILE", path ? path : "");
        else if (rc == QC_BUNDLE_STATUS_WEIGHTS_MISMATCH)
            fprintf(stderr, ": '%s' is not the weights blob of this build (its size or header differs); give the "
                    "file that quadc build --weights-out wrote with this program", path ? path : "");
        else if (rc == QC_BUNDLE_STATUS_OUT_OF_MEMORY)
            fprintf(stderr, ": out of memory");
        fprintf(stderr, "\n");
        return -1;
    }
    return 0;
}

static void model_close(exe_model *m)
{
    const qc_bundle *b = m->bundle;
    if (!b)
        return;
    b->free(m->ctx);
    for (int k = 0; m->inputs && k < b->ninputs; k++)
        free(m->inputs[k]);
    for (int k = 0; m->outputs && k < b->noutputs; k++)
        free(m->outputs[k]);
    free(m->inputs);
    free(m->outputs);
}

/* Runs tokens[0..n) (n <= T) padded with id 0 to T positions, and returns
 * the logits of batch row 0, (T, V). Causal attention makes the first n
 * rows independent of the padding. */
static const float *model_forward(exe_model *m, const int32_t *tokens, int n, ir_diag *d)
{
    int32_t *idx = m->inputs[m->idx_input];
    memset(idx, 0, sizeof *idx * (size_t)m->T);
    memcpy(idx, tokens, sizeof *idx * (size_t)n);
    int rc = m->bundle->run(m->ctx, (const void *const *)m->inputs, m->outputs);
    if (rc != 0) {
        ir_diag_file_error(d, NULL, "running the model failed with status %d", rc);
        return NULL;
    }
    return m->outputs[m->logits_output];
}

/* Appends tokens[0..n) to the sequence of a cache bundle, T at a time
 * from position m->position, and copies the logits of every token to
 * rows (n, V) of `logits` when it is not NULL. A last chunk shorter than
 * T is padded with id 0: the padding writes cache rows after the
 * sequence, which the causal mask hides and later tokens overwrite.
 * Returns the logits row of the last token, valid until the next run. */
static const float *cache_append(exe_model *m, const int32_t *tokens, int n, float *logits, ir_diag *d)
{
    const float *last = NULL;
    for (int start = 0; start < n; start += m->T) {
        int count = n - start < m->T ? n - start : m->T;
        if (m->position + m->T > m->context) {
            ir_diag_file_error(d, NULL, "the sequence needs more than the model's %d cache rows", m->context);
            return NULL;
        }
        int32_t *pos = m->inputs[m->pos_input], *positions = m->inputs[m->positions_input];
        *pos = m->position;
        for (int i = 0; i < m->T; i++)
            positions[i] = m->position + i;
        const float *out = model_forward(m, tokens + start, count, d);
        if (!out)
            return NULL;
        if (logits)
            memcpy(logits + (size_t)start * (size_t)m->V, out, sizeof *out * (size_t)count * (size_t)m->V);
        m->position += count;
        last = out + (size_t)(count - 1) * (size_t)m->V;
    }
    return last;
}

static int eval_logits(void *ctx, const int32_t *tokens, int T, float *logits, ir_diag *d)
{
    exe_model *m = ctx;
    if (m->pos_input >= 0) {
        m->position = 0;
        return cache_append(m, tokens, T, logits, d) ? 0 : -1;
    }
    const float *out = model_forward(m, tokens, T, d);
    if (!out)
        return -1;
    memcpy(logits, out, sizeof *logits * (size_t)T * (size_t)m->V);
    return 0;
}

/* Returns the logits that follow all[0..n): by appending the tokens after
 * the `fed` already in the caches, or by running the last T tokens. */
static const float *next_logits(exe_model *m, const int32_t *all, size_t n, size_t fed, ir_diag *d)
{
    if (m->pos_input >= 0)
        return cache_append(m, all + fed, (int)(n - fed), NULL, d);
    /* The window is the last T tokens, so long outputs slide. */
    size_t window = n < (size_t)m->T ? n : (size_t)m->T;
    const float *logits = model_forward(m, all + n - window, (int)window, d);
    return logits ? logits + (window - 1) * (size_t)m->V : NULL;
}

static rt_tokenizer *load_tokenizer(ir_diag *d)
{
    return rt_tok_load_memory("<embedded encoder.json>", quadc_exe_encoder_json, (size_t)quadc_exe_encoder_json_size,
                              "<embedded vocab.bpe>", quadc_exe_vocab_bpe, (size_t)quadc_exe_vocab_bpe_size, d);
}

typedef struct exe_args {
    const char *command;
    const char *prompt;
    const char *file;
    const char *weights;
    long long max_new, top_k, seed, ctx, stride, threads;
    long long max_tokens; /* perplexity: tokens of FILE to score; 0: all */
    double temperature;
} exe_args;

static void write_token(const rt_tokenizer *tok, int32_t id)
{
    size_t len;
    const char *bytes = rt_tok_token_bytes(tok, id, &len);
    if (bytes)
        fwrite(bytes, 1, len, stdout);
}

static int run_generate(exe_model *m, rt_tokenizer *tok, const exe_args *a, ir_diag *d)
{
    int32_t *ids = NULL;
    size_t n = 0;
    if (rt_tok_encode(tok, a->prompt, strlen(a->prompt), "--prompt", &ids, &n, d) != 0)
        return EXIT_ERROR;
    size_t cap = n + (size_t)a->max_new + 1;
    int32_t *all = malloc(sizeof *all * cap);
    int *scratch = malloc(sizeof *scratch * (size_t)m->V);
    if (!all || !scratch) {
        free(ids);
        free(all);
        free(scratch);
        fprintf(stderr, "%s: error: out of memory\n", program);
        return EXIT_ERROR;
    }
    if (n)
        memcpy(all, ids, sizeof *all * n);
    free(ids);
    if (m->pos_input >= 0 && n > (size_t)m->context) {
        fprintf(stderr, "%s: error: the prompt has %zu tokens but the model's caches hold %d; shorten the prompt\n",
                program, n, m->context);
        free(all);
        free(scratch);
        return EXIT_ERROR;
    }
    /* An empty prompt starts from <|endoftext|>, as GPT-2 was trained. */
    if (n == 0)
        all[n++] = rt_tok_eot(tok);
    else
        fwrite(a->prompt, 1, strlen(a->prompt), stdout);

    rt_rng rng;
    rt_rng_seed(&rng, (uint64_t)a->seed, 0);
    int status = EXIT_OK;
    size_t fed = 0;
    m->position = 0;
    for (long long step = 0; step < a->max_new; step++) {
        /* A cache bundle stops when its caches are full. */
        if (m->pos_input >= 0 && n + (size_t)m->T > (size_t)m->context + 1)
            break;
        const float *logits = next_logits(m, all, n, fed, d);
        if (!logits) {
            status = EXIT_ERROR;
            break;
        }
        fed = n;
        /* The sampler of `quadc generate`, so one seed gives its text. */
        int32_t id = a->temperature == 0 ? rt_sample_argmax(logits, m->V)
                                         : rt_sample_top_k(logits, m->V, a->temperature, (int)a->top_k, &rng, scratch);
        if (id == rt_tok_eot(tok))
            break;
        all[n++] = id;
        write_token(tok, id);
        fflush(stdout);
    }
    printf("\n");
    free(all);
    free(scratch);
    return status;
}

/* Progress of `perplexity` on standard error: one line on a terminal,
 * redrawn at most every REDRAW_SECONDS, and nothing otherwise, so pipes
 * and logs get only the result. The line ends in a newline and each
 * redraw first moves the cursor up to it, so an error message that stops
 * the evaluation starts on a line of its own. */
#define REDRAW_SECONDS 0.1

typedef struct eval_progress {
    exe_model *model;
    const char *file;
    const int32_t *ids; /* the token stream, to turn a window into a position */
    size_t n;
    bool terminal;
    bool drawn;
    double start, last_draw;
} eval_progress;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void draw_progress(eval_progress *p, size_t done)
{
    double now = now_seconds();
    if (done < p->n && p->drawn && now - p->last_draw < REDRAW_SECONDS)
        return;
    double seconds = now - p->start;
    fprintf(stderr, "%s%s: %zu/%zu tokens (%.0f%%), %.1f tokens/s\033[K\n", p->drawn ? "\033[A\r" : "", p->file,
            done, p->n, 100.0 * (double)done / (double)p->n, seconds > 0 ? (double)done / seconds : 0.0);
    fflush(stderr);
    p->drawn = true;
    p->last_draw = now;
}

/* The evaluator's logits callback: eval_logits, then the progress up to
 * the end of the window. */
static int eval_logits_with_progress(void *ctx, const int32_t *tokens, int T, float *logits, ir_diag *d)
{
    eval_progress *p = ctx;
    if (eval_logits(p->model, tokens, T, logits, d) != 0)
        return -1;
    if (p->terminal)
        draw_progress(p, (size_t)(tokens - p->ids) + (size_t)T);
    return 0;
}

static int run_perplexity(exe_model *m, rt_tokenizer *tok, const exe_args *a, ir_diag *d)
{
    FILE *f = fopen(a->file, "rb");
    if (!f) {
        fprintf(stderr, "%s: error: cannot open '%s': %s\n", program, a->file, strerror(errno));
        return EXIT_ERROR;
    }
    size_t cap = 1 << 16, len = 0;
    char *text = malloc(cap);
    while (text) {
        len += fread(text + len, 1, cap - len, f);
        if (len < cap)
            break;
        cap *= 2;
        char *grown = realloc(text, cap);
        if (!grown)
            free(text);
        text = grown;
    }
    bool read_failed = ferror(f) != 0;
    fclose(f);
    if (!text || read_failed) {
        free(text);
        fprintf(stderr, "%s: error: cannot read '%s'\n", program, a->file);
        return EXIT_ERROR;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = rt_tok_encode(tok, text, len, a->file, &ids, &n, d);
    free(text);
    if (rc != 0)
        return EXIT_ERROR;
    if (a->max_tokens > 0 && n > (size_t)a->max_tokens)
        n = (size_t)a->max_tokens;
    int ctx = a->ctx ? (int)a->ctx : m->context;
    int stride = a->stride ? (int)a->stride : (ctx + 1) / 2;
    rt_eval_result r;
    eval_progress progress = {m, a->file, ids, n, isatty(STDERR_FILENO) != 0, false, now_seconds(), 0};
    if (progress.terminal && n >= 2)
        draw_progress(&progress, 0);
    rc = rt_eval_perplexity(ids, n, ctx, stride, m->V, eval_logits_with_progress, &progress, &r, d);
    free(ids);
    if (rc != 0)
        return EXIT_ERROR;
    /* The result takes the place of the progress line. */
    if (progress.drawn)
        fprintf(stderr, "\033[A\r\033[K");
    printf("%s: %zu tokens scored (window %d, stride %d), mean loss %.4f nats, perplexity %.3f, %.1f tokens/s\n",
           a->file, r.tokens_scored, ctx, stride, r.mean_nll, r.perplexity, r.tokens_per_second);
    return EXIT_OK;
}

/* The options that take a value. */
static const char *const value_options[] = {"--prompt",  "--weights", "--max-new",    "--top-k",   "--seed",
                                            "--ctx",     "--stride",  "--max-tokens", "--threads", "--temperature"};

/* Parses the options after the command name, written "--name VALUE" or
 * "--name=VALUE". Returns EXIT_OK, PARSED_HELP after printing the help
 * for --help, or a usage status. */
static int parse_args(int argc, char **argv, exe_args *a)
{
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_usage(stdout);
            return PARSED_HELP;
        }
        if (arg[0] != '-' || arg[1] != '-') {
            if (strcmp(a->command, "perplexity") == 0 && !a->file) {
                a->file = arg;
                continue;
            }
            return usage_error("unexpected argument '%s'", arg);
        }
        /* The option's name, without a "=VALUE" part. */
        char name[32];
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        bool known = false;
        for (size_t k = 0; k < sizeof value_options / sizeof *value_options && len < sizeof name; k++)
            known = known || (strlen(value_options[k]) == len && strncmp(arg, value_options[k], len) == 0);
        if (!known) {
            if (strcmp(arg, "--greedy") == 0)
                return usage_error("unknown option '--greedy'; use --temperature 0 for greedy decoding");
            return usage_error("unknown option '%.*s'", (int)len, arg);
        }
        memcpy(name, arg, len);
        name[len] = '\0';
        const char *value = NULL;
        if (eq)
            value = eq + 1;
        else if (i + 1 < argc)
            value = argv[++i];
        if (!value)
            return usage_error("option '%s' needs a value", name);
        int rc = 0;
        if (strcmp(name, "--prompt") == 0)
            a->prompt = value;
        else if (strcmp(name, "--weights") == 0)
            a->weights = value;
        else if (strcmp(name, "--max-new") == 0)
            rc = parse_long(name, value, 0, 1 << 20, &a->max_new);
        else if (strcmp(name, "--top-k") == 0)
            rc = parse_long(name, value, 0, 1 << 30, &a->top_k);
        else if (strcmp(name, "--seed") == 0)
            rc = parse_long(name, value, 0, INT64_MAX, &a->seed);
        else if (strcmp(name, "--ctx") == 0)
            rc = parse_long(name, value, 2, 1 << 30, &a->ctx);
        else if (strcmp(name, "--stride") == 0)
            rc = parse_long(name, value, 1, 1 << 30, &a->stride);
        else if (strcmp(name, "--max-tokens") == 0)
            rc = parse_long(name, value, 0, INT64_MAX, &a->max_tokens);
        else if (strcmp(name, "--threads") == 0)
            rc = parse_long(name, value, 1, 1 << 16, &a->threads);
        else
            rc = parse_double(name, value, &a->temperature);
        if (rc != 0)
            return EXIT_USAGE;
    }
    if (strcmp(a->command, "generate") == 0 && !a->prompt)
        return usage_error("%s: --prompt is required", "generate");
    if (strcmp(a->command, "perplexity") == 0 && !a->file)
        return usage_error("%s: no text file given", "perplexity");
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    program = argv[0];
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        print_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    exe_args a = {.command = argv[1], .max_new = 64, .top_k = 40, .seed = 1, .temperature = 1.0};
    if (strcmp(a.command, "generate") != 0 && strcmp(a.command, "perplexity") != 0)
        return usage_error("unknown command '%s'; use generate or perplexity", a.command);
    int status = parse_args(argc, argv, &a);
    if (status == PARSED_HELP)
        return EXIT_OK;
    if (status != EXIT_OK)
        return status;

    int threads = (int)a.threads;
    if (threads == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > 0 ? (int)cores : 1;
    }
    if (threads > quadc_exe_bundle->threads_max)
        threads = quadc_exe_bundle->threads_max;

    ir_diag *d = ir_diag_new(stderr);
    if (d)
        ir_diag_set_program(d, program); /* messages name this program, not quadc */
    rt_tokenizer *tok = d ? load_tokenizer(d) : NULL;
    exe_model m;
    memset(&m, 0, sizeof m);
    if (!tok || model_open(&m, a.weights, threads) != 0) {
        status = EXIT_ERROR;
    } else if (a.ctx > m.context) {
        fprintf(stderr, "%s: error: --ctx %lld is longer than the model's %d positions; give --ctx %d or less\n",
                program, a.ctx, m.context, m.context);
        status = EXIT_USAGE;
    } else if (strcmp(a.command, "generate") == 0) {
        status = run_generate(&m, tok, &a, d);
    } else {
        status = run_perplexity(&m, tok, &a, d);
    }
    model_close(&m);
    rt_tok_free(tok);
    ir_diag_free(d);
    return status;
}
