/* `quadc eval`: sliding-window perplexity of text files and LAMBADA
 * accuracy of a model session (runtime/model.h, runtime/evaluate.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "driver/model_args.h"
#include "runtime/dataset.h"
#include "runtime/evaluate.h"
#include "runtime/unigram.h"

typedef struct eval_args {
    driver_model_args model;
    const char **texts; /* --data, in order */
    int ntexts;
    const char *lambada;
    long long ctx;        /* 0: the model's context length */
    long long stride;     /* 0: half the window */
    long long max_tokens; /* 0: every token */
    long long max_examples; /* LAMBADA examples to score; 0: all */
    const char *cache_dir; /* token cache; NULL: the default directory */
    const char *unigram;   /* --unigram: comma-separated training texts, or NULL */
} eval_args;

static void print_eval_help(FILE *out)
{
    fprintf(out,
            "usage: quadc eval MODEL.qd --weights FILE [--data TEXT]... [--lambada FILE.jsonl] [options]\n"
            "\n"
            "Evaluates a full-sequence model (such as examples/gpt2.qd) with batch size 1:\n"
            "the sliding-window perplexity of each UTF-8 text file, and LAMBADA last-word\n"
            "accuracy and perplexity. Texts are tokenized with the GPT-2 tokenizer and the\n"
            "token ids are cached (see --cache-dir).\n"
            "\n"
            "  --data FILE             a text file to score; repeatable\n"
            "  --lambada FILE          a LAMBADA file, one JSON object {\"text\": ...} per line\n"
            "  --ctx N                 window length in tokens (default: the model's n_ctx);\n"
            "                          at most n_ctx\n"
            "  --stride N              tokens the window moves each step (default: half the\n"
            "                          window); each token is scored once, and after the\n"
            "                          first window with at least ctx - stride tokens of\n"
            "                          context\n"
            "  --max-tokens N          score only the first N tokens of each text\n"
            "                          (default 0: all of them)\n"
            "  --max-examples N        score only the first N LAMBADA examples\n"
            "                          (default 0: all of them)\n"
            "  --cache-dir DIR         directory of the token cache (default:\n"
            "                          $XDG_CACHE_HOME/quadc, else ~/.cache/quadc)\n"
            "  --unigram TEXT[,TEXT...] also report the perplexity of a unigram model on the\n"
            "                          same scored tokens: token frequencies of these\n"
            "                          training texts with add-one smoothing over the\n"
            "                          tokenizer's vocabulary\n");
    driver_print_model_help(out);
}

static int parse_eval_int(const char *cmd, int argc, char **argv, int *i, const char *name, long long min,
                          long long *out)
{
    const char *value = NULL;
    int rc = driver_option_value(cmd, argc, argv, i, name, &value);
    if (rc <= 0)
        return rc;
    return driver_parse_int_value(cmd, name, value, min, 1LL << 40, out) == 0 ? 1 : -1;
}

/* Returns DRIVER_OK, DRIVER_USAGE, or -1 after printing help. */
static int parse_eval_args(int argc, char **argv, eval_args *a)
{
    const char *cmd = "eval";
    int i = 1;
    while (i < argc) {
        const char *arg = argv[i], *value = NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_eval_help(stdout);
            return -1;
        }
        int rc = driver_option_value(cmd, argc, argv, &i, "--data", &value);
        if (rc > 0)
            a->texts[a->ntexts++] = value;
        if (rc == 0 && (rc = driver_option_value(cmd, argc, argv, &i, "--lambada", &value)) > 0)
            a->lambada = value;
        if (rc == 0 && (rc = driver_option_value(cmd, argc, argv, &i, "--cache-dir", &value)) > 0)
            a->cache_dir = value;
        if (rc == 0 && (rc = driver_option_value(cmd, argc, argv, &i, "--unigram", &value)) > 0)
            a->unigram = value;
        if (rc == 0)
            rc = parse_eval_int(cmd, argc, argv, &i, "--ctx", 2, &a->ctx);
        if (rc == 0)
            rc = parse_eval_int(cmd, argc, argv, &i, "--stride", 1, &a->stride);
        if (rc == 0)
            rc = parse_eval_int(cmd, argc, argv, &i, "--max-tokens", 0, &a->max_tokens);
        if (rc == 0)
            rc = parse_eval_int(cmd, argc, argv, &i, "--max-examples", 0, &a->max_examples);
        if (rc == 0)
            rc = driver_parse_model_option(cmd, argc, argv, &i, &a->model);
        if (rc < 0)
            return DRIVER_USAGE;
        if (rc == 0)
            return driver_usage_error(cmd, "unknown option '%s'", arg);
    }
    if (driver_finish_model_args(cmd, &a->model) != 0)
        return DRIVER_USAGE;
    if (a->ntexts == 0 && !a->lambada)
        return driver_usage_error(cmd, "nothing to evaluate; give --data FILE or --lambada FILE");
    if (a->stride && a->ctx && a->stride > a->ctx)
        return driver_usage_error(cmd, "--stride %lld is longer than --ctx %lld; it must be at most the window",
                                  a->stride, a->ctx);
    return DRIVER_OK;
}

/* The evaluator's model callback: one forward of a session. */
typedef struct eval_model {
    rt_model *model;
    int window;
} eval_model;

static int model_logits(void *ctx, const int32_t *tokens, int T, float *logits, ir_diag *d)
{
    eval_model *em = ctx;
    return rt_model_forward(em->model, em->window, tokens, T, logits, d);
}

/* Loads the token ids of a text through the token cache. */
static int load_ids(const eval_args *a, const char *path, const rt_dataset_tokenizer *tok, int32_t **ids, size_t *n,
                    ir_diag *d)
{
    char *cache_dir = a->cache_dir ? strdup(a->cache_dir) : rt_dataset_default_cache_dir();
    int rc = rt_dataset_load_text(path, tok, cache_dir, ids, n, d);
    free(cache_dir);
    return rc;
}

/* The unigram baseline of --unigram: its model and the negative
 * log-likelihood it gives the tokens that the evaluator scores. */
typedef struct unigram_score {
    const rt_unigram *model;
    double total_nll;
    size_t tokens;
} unigram_score;

static void score_unigram_token(void *ctx, size_t position, int32_t token, double nll)
{
    unigram_score *u = ctx;
    u->total_nll += rt_unigram_nll(u->model, token);
    u->tokens++;
}

/* Counts the tokens of every --unigram text. Returns 0 or -1. */
static int build_unigram(const eval_args *a, const rt_dataset_tokenizer *tok, rt_unigram *u, ir_diag *d)
{
    if (rt_unigram_init(u, rt_tok_vocab_size(tok->tok), d) != 0)
        return -1;
    char *list = strdup(a->unigram);
    int rc = list ? 0 : -1;
    int ntexts = 0;
    for (char *save = NULL, *path = list ? strtok_r(list, ",", &save) : NULL; path && rc == 0;
         path = strtok_r(NULL, ",", &save)) {
        int32_t *ids = NULL;
        size_t n = 0;
        rc = load_ids(a, path, tok, &ids, &n, d);
        if (rc == 0)
            rc = rt_unigram_add(u, ids, n, path, d);
        free(ids);
        ntexts++;
    }
    free(list);
    if (rc == 0 && ntexts == 0) {
        ir_diag_file_error(d, NULL, "--unigram '%s' names no text file; give TEXT[,TEXT...]", a->unigram);
        rc = -1;
    }
    if (rc == 0)
        fprintf(stderr, "unigram model: %lld tokens from %d text%s\n", (long long)u->total, ntexts,
                ntexts == 1 ? "" : "s");
    return rc;
}

static int eval_text(const eval_args *a, const char *path, rt_model *m, const rt_dataset_tokenizer *tok, int ctx,
                     const rt_unigram *unigram, ir_diag *d)
{
    int32_t *ids = NULL;
    size_t n = 0;
    if (load_ids(a, path, tok, &ids, &n, d) != 0)
        return -1;
    if (a->max_tokens > 0 && n > (size_t)a->max_tokens)
        n = (size_t)a->max_tokens;
    int stride = a->stride ? (int)a->stride : (ctx + 1) / 2;
    if (stride > ctx)
        stride = ctx;
    eval_model em = {m, ctx};
    rt_eval_result r;
    unigram_score score = {unigram, 0, 0};
    int rc = rt_eval_perplexity_traced(ids, n, ctx, stride, rt_model_vocab_size(m), model_logits, &em,
                                       unigram ? score_unigram_token : NULL, &score, &r, d);
    free(ids);
    if (rc != 0)
        return -1;
    printf("%s: %zu tokens scored (window %d, stride %d), mean loss %.4f nats, perplexity %.3f, %.1f tokens/s\n",
           path, r.tokens_scored, ctx, stride, r.mean_nll, r.perplexity, r.tokens_per_second);
    if (unigram)
        printf("%s: unigram baseline on the same %zu tokens, mean loss %.4f nats, perplexity %.3f\n", path,
               score.tokens, score.total_nll / (double)score.tokens, exp(score.total_nll / (double)score.tokens));
    fflush(stdout);
    return 0;
}

/* Prints the unigram perplexity of the LAMBADA target tokens, per word as
 * rt_eval_lambada reports the model's: exp(total NLL / examples). */
static void print_lambada_unigram(const char *path, const rt_lambada *set, const rt_unigram *unigram)
{
    double total = 0;
    size_t tokens = 0;
    for (size_t i = 0; i < set->count; i++) {
        const rt_lambada_example *ex = &set->examples[i];
        for (size_t k = ex->n_context; k < ex->n_context + ex->n_target; k++) {
            total += rt_unigram_nll(unigram, ex->tokens[k]);
            tokens++;
        }
    }
    printf("%s: unigram baseline on the same %zu target tokens, perplexity %.3f\n", path, tokens,
           exp(total / (double)set->count));
}

static int eval_lambada(const char *path, rt_model *m, rt_dataset_tokenizer *tok, int ctx, long long max_examples,
                        const rt_unigram *unigram, ir_diag *d)
{
    rt_lambada set;
    if (rt_lambada_load(path, tok->tok, &set, d) != 0)
        return -1;
    /* Score a prefix of the examples; the full count is restored before
     * rt_lambada_free, which frees every loaded example. */
    size_t loaded = set.count;
    if (max_examples > 0 && set.count > (size_t)max_examples)
        set.count = (size_t)max_examples;
    /* A window as long as the longest example, so short examples are not
     * padded to the whole context. */
    size_t longest = 1;
    for (size_t i = 0; i < set.count; i++) {
        size_t len = set.examples[i].n_context + set.examples[i].n_target - 1;
        longest = len > longest ? len : longest;
    }
    eval_model em = {m, longest < (size_t)ctx ? (int)longest : ctx};
    rt_lambada_result r;
    int rc = rt_eval_lambada(&set, ctx, rt_model_vocab_size(m), model_logits, &em, &r, d);
    if (rc == 0) {
        printf("%s: %zu examples, accuracy %.4f (%zu correct), perplexity %.3f, %zu truncated, %.1f tokens/s\n",
               path, r.examples, r.accuracy, r.correct, r.perplexity, r.truncated, r.tokens_per_second);
        if (unigram)
            print_lambada_unigram(path, &set, unigram);
    }
    set.count = loaded;
    rt_lambada_free(&set);
    if (rc != 0)
        return -1;
    fflush(stdout);
    return 0;
}

static rt_dataset_tokenizer *load_tokenizer(const char *dir, ir_diag *d)
{
    size_t n = strlen(dir) + 32;
    char *encoder = malloc(n), *vocab = malloc(n);
    rt_dataset_tokenizer *tok = NULL;
    if (encoder && vocab) {
        snprintf(encoder, n, "%s/encoder.json", dir);
        snprintf(vocab, n, "%s/vocab.bpe", dir);
        tok = rt_dataset_tokenizer_load(encoder, vocab, d);
    }
    free(encoder);
    free(vocab);
    return tok;
}

static int run_eval(const eval_args *a, ir_diag *d)
{
    rt_model *m = driver_open_model(&a->model, 0, d);
    if (!m)
        return DRIVER_ERROR;
    int status = DRIVER_ERROR;
    rt_dataset_tokenizer *tok = NULL;
    rt_unigram unigram = {0};
    int ctx = a->ctx ? (int)a->ctx : rt_model_context_length(m);
    if (rt_model_has_cache(m)) {
        ir_diag_file_error(d, a->model.model, "eval needs a full-sequence model such as examples/gpt2.qd, but this "
                           "model writes a key-value cache");
    } else if (a->ctx > rt_model_context_length(m)) {
        ir_diag_file_error(d, a->model.model, "--ctx %lld is longer than the model's context length n_ctx=%d; give "
                           "--ctx %d or less", a->ctx, rt_model_context_length(m), rt_model_context_length(m));
    } else if (ctx < 2) {
        ir_diag_file_error(d, a->model.model, "the context length %d is too short; evaluation needs at least 2", ctx);
    } else if ((tok = load_tokenizer(a->model.tokenizer, d)) != NULL) {
        if (rt_tok_vocab_size(tok->tok) > rt_model_vocab_size(m)) {
            ir_diag_file_error(d, a->model.model, "the tokenizer has %d tokens but the model's vocabulary has %d",
                               rt_tok_vocab_size(tok->tok), rt_model_vocab_size(m));
        } else if (!a->unigram || build_unigram(a, tok, &unigram, d) == 0) {
            const rt_unigram *baseline = a->unigram ? &unigram : NULL;
            status = DRIVER_OK;
            for (int i = 0; i < a->ntexts; i++)
                if (eval_text(a, a->texts[i], m, tok, ctx, baseline, d) != 0)
                    status = DRIVER_ERROR;
            if (a->lambada && eval_lambada(a->lambada, m, tok, ctx, a->max_examples, baseline, d) != 0)
                status = DRIVER_ERROR;
        }
    }
    rt_unigram_free(&unigram);
    rt_dataset_tokenizer_free(tok);
    rt_model_free(m);
    return status;
}

int driver_eval(int argc, char **argv)
{
    eval_args a;
    memset(&a, 0, sizeof a);
    a.texts = calloc((size_t)argc + 1, sizeof *a.texts);
    if (!a.texts || driver_model_args_init(&a.model, argc) != 0) {
        free(a.texts);
        return DRIVER_ERROR;
    }
    int status = parse_eval_args(argc, argv, &a);
    if (status < 0) {
        status = DRIVER_OK; /* --help */
    } else if (status == DRIVER_OK) {
        ir_diag *d = ir_diag_new(stderr);
        status = d ? run_eval(&a, d) : DRIVER_ERROR;
        ir_diag_free(d);
    }
    driver_model_args_free(&a.model);
    free(a.texts);
    return status;
}
