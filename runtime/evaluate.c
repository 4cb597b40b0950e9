/* Sliding-window perplexity and LAMBADA scoring over a logits callback.
 * The evaluator only needs a function from one token sequence to logits
 * (T, V), so any model implementation and the test models plug in. */
#include "runtime/evaluate.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Returns log(sum(exp(row))) over V logits, computed in double after
 * subtracting the maximum so that no exp overflows. Returns a non-finite
 * value when any logit is NaN or infinite. */
static double log_sum_exp(const float *row, int V)
{
    double max = row[0];
    for (int v = 1; v < V; v++)
        if (row[v] > max)
            max = row[v];
    double sum = 0.0;
    for (int v = 0; v < V; v++)
        sum += exp((double)row[v] - max);
    return max + log(sum);
}

/* Stores the negative log-likelihood of target under the logits row in
 * *nll. Returns 0, or -1 after reporting a non-finite logit. */
static int token_nll(const float *row, int V, int32_t target, size_t position, double *nll, ir_diag *d)
{
    *nll = log_sum_exp(row, V) - (double)row[target];
    if (!isfinite(*nll)) {
        ir_diag_file_error(d, NULL, "the model returned a non-finite logit in the row that predicts token %zu; "
                           "check the model for NaN or overflow", position);
        return -1;
    }
    return 0;
}

static int check_ids(const int32_t *ids, size_t n, int V, ir_diag *d)
{
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= V) {
            ir_diag_file_error(d, NULL, "token %zu has id %d, outside the model's vocabulary [0, %d)", i, ids[i],
                               V);
            return -1;
        }
    }
    return 0;
}

/* Allocates logits (T, V) for T = context_len, or reports. */
static float *alloc_logits(int context_len, int V, ir_diag *d)
{
    if (V < 1) {
        ir_diag_file_error(d, NULL, "the vocabulary size is %d; expected at least 1", V);
        return NULL;
    }
    size_t count = (size_t)context_len * (size_t)V;
    float *logits = count <= SIZE_MAX / sizeof(float) ? malloc(count * sizeof(float)) : NULL;
    if (!logits)
        ir_diag_file_error(d, NULL, "out of memory for the logits of %d tokens x %d vocabulary entries",
                           context_len, V);
    return logits;
}

int rt_eval_perplexity(const int32_t *ids, size_t n, int context_len, int stride, int V, rt_eval_logits_fn fn,
                       void *ctx, rt_eval_result *result, ir_diag *d)
{
    return rt_eval_perplexity_traced(ids, n, context_len, stride, V, fn, ctx, NULL, NULL, result, d);
}

int rt_eval_perplexity_traced(const int32_t *ids, size_t n, int context_len, int stride, int V,
                              rt_eval_logits_fn fn, void *ctx, rt_eval_token_fn on_token, void *token_ctx,
                              rt_eval_result *result, ir_diag *d)
{
    memset(result, 0, sizeof *result);
    if (context_len < 2) {
        ir_diag_file_error(d, NULL, "the context length is %d; perplexity needs at least 2 tokens per window",
                           context_len);
        return -1;
    }
    if (stride < 1 || stride > context_len) {
        ir_diag_file_error(d, NULL, "the stride is %d; expected 1 to the context length %d", stride,
                           context_len);
        return -1;
    }
    if (n < 2) {
        ir_diag_file_error(d, NULL, "the text is too short: it has %zu token%s, and perplexity needs at least 2",
                           n, n == 1 ? "" : "s");
        return -1;
    }
    if (check_ids(ids, n, V, d) != 0)
        return -1;
    float *logits = alloc_logits(context_len, V, d);
    if (!logits)
        return -1;

    double start = now_seconds();
    size_t prev_end = 0;
    for (size_t begin = 0;; begin += (size_t)stride) {
        size_t end = n - begin < (size_t)context_len ? n : begin + (size_t)context_len;
        int T = (int)(end - begin);
        if (fn(ctx, ids + begin, T, logits, d) != 0) {
            free(logits);
            return -1;
        }
        result->windows++;
        result->tokens_processed += (size_t)T;

        /* Score the tokens after the previous window's end. Token pos is
         * predicted by row pos - begin - 1, so the window's first token
         * cannot be scored in this window. */
        size_t first = prev_end > begin ? prev_end : begin + 1;
        for (size_t pos = first; pos < end; pos++) {
            const float *row = logits + (pos - begin - 1) * (size_t)V;
            double nll;
            if (token_nll(row, V, ids[pos], pos, &nll, d) != 0) {
                free(logits);
                return -1;
            }
            result->total_nll += nll;
            result->tokens_scored++;
            if (on_token)
                on_token(token_ctx, pos, ids[pos], nll);
        }
        prev_end = end;
        if (end == n)
            break;
    }
    free(logits);

    result->seconds = now_seconds() - start;
    result->mean_nll = result->total_nll / (double)result->tokens_scored;
    result->perplexity = exp(result->mean_nll);
    result->tokens_per_second = result->seconds > 0.0 ? (double)result->tokens_scored / result->seconds : 0.0;
    return 0;
}

static int32_t argmax(const float *row, int V)
{
    int32_t best = 0;
    for (int v = 1; v < V; v++)
        if (row[v] > row[best])
            best = v;
    return best;
}

/* Scores one example's target tokens and adds them to result.
 * Returns 0, or -1 after reporting. */
static int score_lambada_example(const rt_lambada_example *ex, int context_len, int V, rt_eval_logits_fn fn,
                                 void *ctx, float *logits, rt_lambada_result *result, ir_diag *d)
{
    size_t length = ex->n_context + ex->n_target;
    if (ex->n_target > (size_t)context_len) {
        ir_diag_file_error(d, NULL, "LAMBADA example at line %d: the target has %zu tokens, more than the "
                           "context length %d can predict", ex->line, ex->n_target, context_len);
        return -1;
    }
    if (check_ids(ex->tokens, length, V, d) != 0)
        return -1;

    /* The input is every token but the last, cut to its last context_len. */
    size_t input_len = length - 1;
    size_t start = 0;
    if (input_len > (size_t)context_len) {
        start = input_len - (size_t)context_len;
        result->truncated++;
    }
    int T = (int)(input_len - start);
    if (fn(ctx, ex->tokens + start, T, logits, d) != 0)
        return -1;
    result->tokens_processed += (size_t)T;

    bool correct = true;
    for (size_t pos = ex->n_context; pos < length; pos++) {
        const float *row = logits + (pos - start - 1) * (size_t)V;
        double nll;
        if (token_nll(row, V, ex->tokens[pos], pos, &nll, d) != 0)
            return -1;
        result->total_nll += nll;
        result->target_tokens++;
        if (argmax(row, V) != ex->tokens[pos])
            correct = false;
    }
    if (correct)
        result->correct++;
    return 0;
}

int rt_eval_lambada(const rt_lambada *set, int context_len, int V, rt_eval_logits_fn fn, void *ctx,
                    rt_lambada_result *result, ir_diag *d)
{
    memset(result, 0, sizeof *result);
    if (context_len < 1) {
        ir_diag_file_error(d, NULL, "the context length is %d; expected at least 1", context_len);
        return -1;
    }
    if (set->count == 0) {
        ir_diag_file_error(d, NULL, "the LAMBADA set has no examples");
        return -1;
    }
    float *logits = alloc_logits(context_len, V, d);
    if (!logits)
        return -1;

    double start = now_seconds();
    for (size_t i = 0; i < set->count; i++) {
        if (score_lambada_example(&set->examples[i], context_len, V, fn, ctx, logits, result, d) != 0) {
            free(logits);
            return -1;
        }
        result->examples++;
    }
    free(logits);

    result->seconds = now_seconds() - start;
    result->accuracy = (double)result->correct / (double)result->examples;
    result->perplexity = exp(result->total_nll / (double)result->examples);
    result->tokens_per_second = result->seconds > 0.0 ? (double)result->tokens_processed / result->seconds : 0.0;
    return 0;
}
