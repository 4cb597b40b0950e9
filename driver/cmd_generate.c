/* `quadc generate`: continues a prompt with a model session, greedily or
 * by seeded top-k sampling, and streams the text to standard output. A
 * key-value cache model (examples/gpt2_kv.qd) computes one token per step;
 * a full-sequence model reruns the whole sequence for every token. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "driver/model_args.h"
#include "runtime/sample.h"
#include "runtime/tokenizer.h"

typedef struct generate_args {
    driver_model_args model;
    const char *prompt;
    long long max_new;
    double temperature;
    long long top_k;
    long long seed;
    bool greedy;
} generate_args;

static void print_generate_help(FILE *out)
{
    fprintf(out,
            "usage: quadc generate MODEL.qd --weights FILE --prompt TEXT [options]\n"
            "\n"
            "Continues the prompt and prints it followed by the new text as it is made.\n"
            "Generation stops at <|endoftext|>, after --max-new tokens, or when the\n"
            "sequence reaches the model's context length. With a key-value cache model\n"
            "such as examples/gpt2_kv.qd, each new token costs one token's compute; a\n"
            "full-sequence model such as examples/gpt2.qd reruns the whole sequence.\n"
            "Timings go to standard error.\n"
            "\n"
            "  --prompt TEXT           the text to continue (UTF-8); an empty prompt starts\n"
            "                          from <|endoftext|>\n"
            "  --max-new N             maximum number of tokens to generate (default 64)\n"
            "  --temperature F         divide the logits by F > 0 before sampling (default 1)\n"
            "  --top-k K               sample among the K most likely tokens (default 40;\n"
            "                          0: all tokens)\n"
            "  --seed S                seed of the sampler; the same seed, model and\n"
            "                          prompt give the same text (default 1)\n"
            "  --greedy                always take the most likely token (no sampling)\n");
    driver_print_model_help(out);
}

static int parse_generate_option(int argc, char **argv, int *i, generate_args *a)
{
    const char *cmd = "generate", *value = NULL;
    int rc;
    if (strcmp(argv[*i], "--greedy") == 0) {
        a->greedy = true;
        (*i)++;
        return 1;
    }
    if ((rc = driver_option_value(cmd, argc, argv, i, "--prompt", &value)) != 0) {
        a->prompt = value;
        return rc;
    }
    if ((rc = driver_option_value(cmd, argc, argv, i, "--max-new", &value)) != 0)
        return rc < 0 || driver_parse_int_value(cmd, "--max-new", value, 0, 1 << 20, &a->max_new) != 0 ? -1 : 1;
    if ((rc = driver_option_value(cmd, argc, argv, i, "--top-k", &value)) != 0)
        return rc < 0 || driver_parse_int_value(cmd, "--top-k", value, 0, 1 << 30, &a->top_k) != 0 ? -1 : 1;
    if ((rc = driver_option_value(cmd, argc, argv, i, "--seed", &value)) != 0)
        return rc < 0 || driver_parse_int_value(cmd, "--seed", value, 0, INT64_MAX, &a->seed) != 0 ? -1 : 1;
    if ((rc = driver_option_value(cmd, argc, argv, i, "--temperature", &value)) != 0)
        return rc < 0 || driver_parse_float_value(cmd, "--temperature", value, 0.0, &a->temperature) != 0 ? -1 : 1;
    return driver_parse_model_option(cmd, argc, argv, i, &a->model);
}

/* Returns DRIVER_OK, DRIVER_USAGE, or -1 after printing help. */
static int parse_generate_args(int argc, char **argv, generate_args *a)
{
    int i = 1;
    while (i < argc) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_generate_help(stdout);
            return -1;
        }
        int rc = parse_generate_option(argc, argv, &i, a);
        if (rc < 0)
            return DRIVER_USAGE;
        if (rc == 0)
            return driver_usage_error("generate", "unknown option '%s'", arg);
    }
    if (driver_finish_model_args("generate", &a->model) != 0)
        return DRIVER_USAGE;
    if (!a->prompt)
        return driver_usage_error("generate", "no prompt; give --prompt TEXT");
    return DRIVER_OK;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The token sequence and the buffers of one generation. */
typedef struct generation {
    rt_model *model;
    int32_t *ids; /* prompt, then generated tokens */
    int n;
    float *logits; /* a full-sequence model: (window, V); a cache model: V */
    int window;
} generation;

/* Runs the tokens not yet seen by the model and leaves the logits of the
 * last position in g->logits (a cache model) or its last row (otherwise).
 * Returns a pointer to those logits, or NULL after reporting. */
static const float *next_logits(generation *g, int fed, ir_diag *d)
{
    int V = rt_model_vocab_size(g->model);
    if (rt_model_has_cache(g->model))
        return rt_model_append(g->model, g->ids + fed, g->n - fed, g->logits, d) == 0 ? g->logits : NULL;
    if (rt_model_forward(g->model, g->window, g->ids, g->n, g->logits, d) != 0)
        return NULL;
    return g->logits + (size_t)(g->n - 1) * (size_t)V;
}

static void write_token(const rt_tokenizer *tok, int32_t id)
{
    size_t len = 0;
    const char *bytes = rt_tok_token_bytes(tok, id, &len);
    if (bytes)
        fwrite(bytes, 1, len, stdout);
    fflush(stdout);
}

static int generate_tokens(const generate_args *a, generation *g, const rt_tokenizer *tok, ir_diag *d)
{
    int V = rt_model_vocab_size(g->model), context = rt_model_context_length(g->model);
    int prompt_len = g->n;
    int *scratch = malloc(sizeof *scratch * (size_t)V);
    double *step_seconds = calloc((size_t)a->max_new + 1, sizeof *step_seconds);
    if (!scratch || !step_seconds) {
        free(scratch);
        free(step_seconds);
        ir_diag_file_error(d, NULL, "out of memory for a vocabulary of %d tokens", V);
        return -1;
    }
    rt_rng rng;
    rt_rng_seed(&rng, (uint64_t)a->seed, 0);
    int fed = 0, made = 0, status = 0;
    double prefill_seconds = 0;
    const char *stop = "--max-new";
    while (made < a->max_new) {
        if (g->n >= context) {
            stop = "the context length";
            break;
        }
        double start = now_seconds();
        const float *logits = next_logits(g, fed, d);
        if (!logits) {
            status = -1;
            break;
        }
        double seconds = now_seconds() - start;
        if (fed == 0)
            prefill_seconds = seconds;
        else
            step_seconds[made - 1] = seconds;
        fed = g->n;

        int32_t id = a->greedy ? rt_sample_argmax(logits, V)
                               : rt_sample_top_k(logits, V, a->temperature, (int)a->top_k, &rng, scratch);
        g->ids[g->n++] = id;
        made++;
        if (id == rt_tok_eot(tok)) {
            stop = "<|endoftext|>";
            break;
        }
        write_token(tok, id);
    }
    printf("\n");
    fflush(stdout);

    int steps = made > 1 ? made - 1 : 0;
    qsort(step_seconds, (size_t)steps, sizeof *step_seconds, compare_doubles);
    if (status == 0)
        fprintf(stderr, "generated %d tokens, stopped by %s; prompt of %d tokens in %.1f ms, then %d steps at a "
                "median of %.2f ms per token\n", made, stop, prompt_len, prefill_seconds * 1e3, steps,
                steps ? 1e3 * step_seconds[steps / 2] : 0.0);
    free(scratch);
    free(step_seconds);
    return status;
}

static rt_tokenizer *load_tokenizer(const char *dir, ir_diag *d)
{
    size_t n = strlen(dir) + 32;
    char *encoder = malloc(n), *vocab = malloc(n);
    rt_tokenizer *tok = NULL;
    if (encoder && vocab) {
        snprintf(encoder, n, "%s/encoder.json", dir);
        snprintf(vocab, n, "%s/vocab.bpe", dir);
        tok = rt_tok_load(encoder, vocab, d);
    }
    free(encoder);
    free(vocab);
    return tok;
}

/* Tokenizes the prompt into a buffer with room for max_new more tokens.
 * An empty prompt becomes the end-of-text token. */
static int32_t *encode_prompt(const generate_args *a, rt_tokenizer *tok, int *n, ir_diag *d)
{
    int32_t *prompt = NULL;
    size_t count = 0;
    if (rt_tok_encode(tok, a->prompt, strlen(a->prompt), "--prompt", &prompt, &count, d) != 0)
        return NULL;
    int32_t *ids = malloc(sizeof *ids * (count + 1 + (size_t)a->max_new));
    if (ids && count)
        memcpy(ids, prompt, sizeof *ids * count);
    if (ids && count == 0)
        ids[count++] = rt_tok_eot(tok);
    free(prompt);
    if (!ids)
        ir_diag_file_error(d, NULL, "out of memory for the prompt");
    *n = (int)count;
    return ids;
}

/* Compiles the graphs that generation runs, before anything is timed. */
static int prepare(generation *g, ir_diag *d)
{
    double start = now_seconds();
    int rc;
    if (rt_model_has_cache(g->model))
        rc = rt_model_prepare(g->model, g->n, d) == 0 && rt_model_prepare(g->model, 1, d) == 0 ? 0 : -1;
    else
        rc = rt_model_prepare(g->model, g->window, d);
    if (rc == 0)
        fprintf(stderr, "compiled the model in %.2f s\n", now_seconds() - start);
    return rc;
}

static int run_generate(const generate_args *a, ir_diag *d)
{
    rt_tokenizer *tok = load_tokenizer(a->model.tokenizer, d);
    if (!tok)
        return DRIVER_ERROR;
    generation g;
    memset(&g, 0, sizeof g);
    g.ids = encode_prompt(a, tok, &g.n, d);
    int status = DRIVER_ERROR;
    /* A cache model needs rows only for the tokens of this run. */
    if (g.ids)
        g.model = driver_open_model(&a->model, g.n + (int)a->max_new, d);
    if (g.model) {
        int context = rt_model_context_length(g.model), V = rt_model_vocab_size(g.model);
        g.window = g.n + (int)a->max_new < context ? g.n + (int)a->max_new : context;
        size_t rows = rt_model_has_cache(g.model) ? 1 : (size_t)g.window;
        g.logits = malloc(sizeof *g.logits * rows * (size_t)V);
        if (g.n >= context) {
            ir_diag_file_error(d, a->model.model, "the prompt has %d tokens but the model's context length is %d; "
                               "shorten the prompt", g.n, context);
        } else if (!g.logits) {
            ir_diag_file_error(d, NULL, "out of memory for the logits");
        } else if (prepare(&g, d) == 0) {
            fwrite(a->prompt, 1, strlen(a->prompt), stdout);
            fflush(stdout);
            status = generate_tokens(a, &g, tok, d) == 0 ? DRIVER_OK : DRIVER_ERROR;
        }
    }
    free(g.logits);
    free(g.ids);
    rt_model_free(g.model);
    rt_tok_free(tok);
    return status;
}

int driver_generate(int argc, char **argv)
{
    generate_args a;
    memset(&a, 0, sizeof a);
    a.max_new = 64;
    a.temperature = 1.0;
    a.top_k = 40;
    a.seed = 1;
    if (driver_model_args_init(&a.model, argc) != 0)
        return DRIVER_ERROR;
    int status = parse_generate_args(argc, argv, &a);
    if (status < 0) {
        status = DRIVER_OK; /* --help */
    } else if (status == DRIVER_OK) {
        ir_diag *d = ir_diag_new(stderr);
        status = d ? run_generate(&a, d) : DRIVER_ERROR;
        ir_diag_free(d);
    }
    driver_model_args_free(&a.model);
    return status;
}
