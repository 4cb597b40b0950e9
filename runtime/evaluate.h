/* Language-model evaluation over a model given as a logits callback:
 * sliding-window perplexity of a token stream, and LAMBADA last-word
 * accuracy and perplexity.
 *
 * Losses are negative log-likelihoods in nats, computed in double with a
 * log-softmax that subtracts the row maximum before exponentiating. */
#ifndef QUADC_RUNTIME_EVALUATE_H
#define QUADC_RUNTIME_EVALUATE_H

#include <stddef.h>
#include <stdint.h>

#include "ir/diag.h"
#include "runtime/dataset.h"

/* Runs the model on one sequence (batch size 1) of T tokens, where
 * 1 <= T <= the context length passed to the evaluator, and writes logits
 * (T, V) row-major: row t scores the token that follows tokens[0..t].
 * Returns 0, or -1 after reporting through d, which stops the evaluation. */
typedef int (*rt_eval_logits_fn)(void *ctx, const int32_t *tokens, int T, float *logits, ir_diag *d);

/* Receives the negative log-likelihood of the token at `position` of the
 * stream, once for each scored token, in increasing position order. */
typedef void (*rt_eval_token_fn)(void *ctx, size_t position, int32_t token, double nll);

typedef struct rt_eval_result {
    size_t tokens_scored;
    size_t tokens_processed;  /* sum of window lengths given to the model */
    size_t windows;           /* calls of the logits callback */
    double total_nll;         /* nats, summed over the scored tokens */
    double mean_nll;          /* nats per scored token */
    double perplexity;        /* exp(mean_nll) */
    double seconds;           /* wall-clock time */
    double tokens_per_second; /* tokens_scored / seconds */
} rt_eval_result;

/* Computes the perplexity of ids[0..n) with the sliding window of the
 * Hugging Face Transformers perplexity guide ("Perplexity of fixed-length
 * models"). Window k covers [k*stride, min(k*stride + context_len, n)), and
 * windows stop at the first one that reaches n. A window scores only the
 * tokens after the previous window's end, each predicted from the logits of
 * the position before it, so every token other than ids[0] is scored
 * exactly once when stride < context_len. When stride == context_len, the
 * windows do not overlap and the first token of each window has no context
 * inside it, so it is not scored either (the guide's code skips it too).
 *
 * Requires context_len >= 2, 1 <= stride <= context_len, n >= 2 and every
 * id in [0, V); the text-too-short error gives n. Also fails when the model
 * returns a non-finite logit or the callback fails. Returns 0 and fills
 * *result, or -1 after reporting. */
int rt_eval_perplexity(const int32_t *ids, size_t n, int context_len, int stride, int V, rt_eval_logits_fn fn,
                       void *ctx, rt_eval_result *result, ir_diag *d);

/* rt_eval_perplexity that also passes each scored token to on_token. */
int rt_eval_perplexity_traced(const int32_t *ids, size_t n, int context_len, int stride, int V,
                              rt_eval_logits_fn fn, void *ctx, rt_eval_token_fn on_token, void *token_ctx,
                              rt_eval_result *result, ir_diag *d);

typedef struct rt_lambada_result {
    size_t examples;
    size_t correct;           /* every target token was the argmax */
    double accuracy;          /* correct / examples */
    size_t target_tokens;
    double total_nll;         /* nats, summed over all target tokens */
    double perplexity;        /* exp(total_nll / examples): per word, as lm-evaluation-harness reports it */
    size_t truncated;         /* examples cut from the left to fit context_len */
    size_t tokens_processed;  /* sum of sequence lengths given to the model */
    double seconds;           /* wall-clock time */
    double tokens_per_second; /* tokens_processed / seconds */
} rt_lambada_result;

/* Evaluates LAMBADA the way lm-evaluation-harness scores loglikelihood
 * requests. For each example, the model runs on the context and target
 * tokens without the last target token, because no logit after the last
 * token is needed. When that sequence is longer than context_len, it is
 * truncated from the left, and the model receives its last context_len
 * tokens. An example is correct when the greedy argmax at every target
 * position equals the target token, and ties go to the lowest id.
 *
 * Fails when context_len < 1, an example's target has more tokens than
 * context_len (some target token would have no context), an id is outside
 * [0, V), the model returns a non-finite logit or the callback fails.
 * Returns 0 and fills *result, or -1 after reporting. */
int rt_eval_lambada(const rt_lambada *set, int context_len, int V, rt_eval_logits_fn fn, void *ctx,
                    rt_lambada_result *result, ir_diag *d);

#endif
