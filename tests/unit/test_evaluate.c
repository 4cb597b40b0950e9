/* Tests for runtime/evaluate with mock models whose perplexity is known in
 * closed form. A uniform model has perplexity V, and a model that puts
 * probability p on the true next token has perplexity 1/p. A third model's
 * confidence grows with the row in the window. The tests record every model
 * call and every scored position to check the window arithmetic. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixtures.h"
#include "ir/diag.h"
#include "runtime/evaluate.h"

#define MAX_CALLS 4096

/* Model state shared by the mock logits callbacks. */
typedef struct mock_model {
    int V;
    double p;              /* probability of the predicted next token */
    const int32_t *stream; /* start of the evaluated ids, to recover window offsets */
    int calls;
    size_t call_begin[MAX_CALLS];
    int call_length[MAX_CALLS];
    const int32_t *last_tokens;
    int fail_at_call;      /* 1-based call that fails, or 0 */
    bool emit_nan;
} mock_model;

/* The deterministic successor rule that the streams below follow. */
static int32_t next_token(int32_t token, int V)
{
    return (int32_t)(((int64_t)token * 7 + 3) % V);
}

static void record_call(mock_model *m, const int32_t *tokens, int T)
{
    if (m->calls < MAX_CALLS) {
        m->call_begin[m->calls] = m->stream ? (size_t)(tokens - m->stream) : 0;
        m->call_length[m->calls] = T;
    }
    m->calls++;
    m->last_tokens = tokens;
}

static int uniform_logits(void *ctx, const int32_t *tokens, int T, float *logits, ir_diag *d)
{
    mock_model *m = ctx;
    record_call(m, tokens, T);
    /* A large common offset checks that the log-softmax subtracts the max. */
    for (size_t i = 0; i < (size_t)T * (size_t)m->V; i++)
        logits[i] = 1.0e4f;
    return 0;
}

/* Puts probability p on next_token(tokens[t]) and spreads 1 - p evenly. */
static int rule_logits(void *ctx, const int32_t *tokens, int T, float *logits, ir_diag *d)
{
    mock_model *m = ctx;
    record_call(m, tokens, T);
    if (m->fail_at_call == m->calls) {
        ir_diag_file_error(d, NULL, "mock model failed at call %d", m->calls);
        return -1;
    }
    float other = (float)log((1.0 - m->p) / (m->V - 1));
    for (int t = 0; t < T; t++) {
        float *row = logits + (size_t)t * (size_t)m->V;
        for (int v = 0; v < m->V; v++)
            row[v] = other;
        row[next_token(tokens[t], m->V)] = (float)log(m->p);
    }
    if (m->emit_nan)
        logits[0] = NAN;
    return 0;
}

/* Row t puts probability 1/(t+2) on the rule's next token, so a token
 * predicted from row t has NLL log(t + 2). */
static int position_logits(void *ctx, const int32_t *tokens, int T, float *logits, ir_diag *d)
{
    mock_model *m = ctx;
    record_call(m, tokens, T);
    for (int t = 0; t < T; t++) {
        float *row = logits + (size_t)t * (size_t)m->V;
        double p = 1.0 / (t + 2);
        for (int v = 0; v < m->V; v++)
            row[v] = (float)log((1.0 - p) / (m->V - 1));
        row[next_token(tokens[t], m->V)] = (float)log(p);
    }
    return 0;
}

/* Makes a stream of n ids that follows next_token from id 1. */
static int32_t *rule_stream(size_t n, int V)
{
    int32_t *ids = malloc(n * sizeof *ids);
    ids[0] = 1;
    for (size_t i = 1; i < n; i++)
        ids[i] = next_token(ids[i - 1], V);
    return ids;
}

typedef struct score_counter {
    size_t n;
    int *counts;
    size_t last_position;
    bool in_order;
} score_counter;

static void count_scored(void *ctx, size_t position, int32_t token, double nll)
{
    score_counter *c = ctx;
    if (c->counts[position] > 0 || (position <= c->last_position && c->last_position != (size_t)-1))
        c->in_order = false;
    c->counts[position]++;
    c->last_position = position;
}

/* Returns the number of windows the sliding window uses for n tokens. */
static size_t expected_windows(size_t n, int context_len, int stride)
{
    if (n <= (size_t)context_len)
        return 1;
    return 1 + (n - (size_t)context_len + (size_t)stride - 1) / (size_t)stride;
}

/* Runs the rule model on one (n, context_len, stride) case and checks the
 * windows, the scored positions and the perplexity 1/p. */
static void check_window_case(size_t n, int context_len, int stride)
{
    const int V = 13;
    const double p = 0.75;
    int32_t *ids = rule_stream(n, V);
    mock_model m = {.V = V, .p = p, .stream = ids};
    score_counter counter = {n, calloc(n, sizeof(int)), (size_t)-1, true};
    rt_eval_result r;
    ir_diag *d = ir_diag_new(stderr);

    int status = rt_eval_perplexity_traced(ids, n, context_len, stride, V, rule_logits, &m, count_scored, &counter,
                                           &r, d);
    CHECK_EQ_INT(status, 0);

    size_t windows = expected_windows(n, context_len, stride);
    CHECK_EQ_INT(m.calls, windows);
    CHECK_EQ_INT(r.windows, windows);
    size_t processed = 0;
    for (int k = 0; k < m.calls && k < MAX_CALLS; k++) {
        size_t begin = (size_t)k * (size_t)stride;
        size_t length = n - begin < (size_t)context_len ? n - begin : (size_t)context_len;
        CHECK_EQ_INT(m.call_begin[k], begin);
        CHECK_EQ_INT(m.call_length[k], length);
        processed += length;
    }
    CHECK_EQ_INT(r.tokens_processed, processed);
    CHECK(m.calls < 1 || m.call_begin[m.calls - 1] + (size_t)m.call_length[m.calls - 1] == n);

    /* Token 0 is never scored. With overlapping windows every other token
     * is scored once; without overlap, each window's first token is not. */
    size_t scored = 0;
    for (size_t i = 0; i < n; i++) {
        int expected = 1;
        if (i == 0 || (stride == context_len && i % (size_t)context_len == 0))
            expected = 0;
        if (counter.counts[i] != expected)
            fprintf(stderr, "n=%zu context=%d stride=%d: token %zu scored %d times\n", n, context_len, stride, i,
                    counter.counts[i]);
        CHECK_EQ_INT(counter.counts[i], expected);
        scored += (size_t)expected;
    }
    CHECK(counter.in_order);
    CHECK_EQ_INT(r.tokens_scored, scored);
    CHECK_CLOSE(r.total_nll, -(double)scored * log(p), 1e-9, 1e-6);
    CHECK_CLOSE(r.mean_nll, -log(p), 1e-9, 1e-6);
    CHECK_CLOSE(r.perplexity, 1.0 / p, 1e-9, 1e-6);
    CHECK(r.seconds >= 0.0);

    ir_diag_free(d);
    free(counter.counts);
    free(ids);
}

static void test_window_arithmetic(void)
{
    static const struct {
        size_t n;
        int context_len, stride;
    } cases[] = {
        {5, 8, 4},    /* n < context: one window */
        {8, 8, 4},    /* n == context: one window */
        {9, 8, 4},    /* one token past the first window */
        {100, 8, 8},  /* stride == context: windows do not overlap */
        {101, 8, 8},  /* ... and the last window is short */
        {50, 8, 1},   /* stride 1: every window after the first scores one token */
        {50, 2, 1},   /* the smallest context */
        {2, 2, 2},    /* the shortest text */
        {1000, 64, 17},
        {1000, 64, 63},
        {1000, 64, 64},
        {37, 10, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_window_case(cases[i].n, cases[i].context_len, cases[i].stride);
}

static void test_uniform_perplexity(void)
{
    const int V = 50;
    const size_t n = 300;
    int32_t *ids = rule_stream(n, V);
    mock_model m = {.V = V, .stream = ids};
    ir_diag *d = ir_diag_new(stderr);
    rt_eval_result r;

    CHECK_EQ_INT(rt_eval_perplexity(ids, n, 32, 16, V, uniform_logits, &m, &r, d), 0);
    CHECK_EQ_INT(r.tokens_scored, n - 1);
    CHECK_CLOSE(r.perplexity, V, 0, 1e-12);
    CHECK_CLOSE(r.total_nll, (double)(n - 1) * log(V), 0, 1e-12);

    ir_diag_free(d);
    free(ids);
}

/* With stride 1, tokens 1..C-1 are predicted from rows 0..C-2 of the first
 * window. Every later token is the last token of its window, so row C-2
 * predicts it from the C-1 tokens before it. */
static void test_scoring_rows_in_window(void)
{
    const int V = 11, C = 6;
    const size_t n = 40;
    int32_t *ids = rule_stream(n, V);
    mock_model m = {.V = V, .stream = ids};
    ir_diag *d = ir_diag_new(stderr);
    rt_eval_result r;

    CHECK_EQ_INT(rt_eval_perplexity(ids, n, C, 1, V, position_logits, &m, &r, d), 0);
    double expected = 0.0;
    for (int pos = 1; pos < C; pos++)
        expected += log(pos + 1.0);
    expected += (double)(n - (size_t)C) * log((double)C);
    CHECK_CLOSE(r.total_nll, expected, 1e-9, 1e-6);

    /* With stride C/2 = 3, windows start at 0, 3, 6, ..., and each later
     * window scores its last three tokens from rows 2, 3 and 4. */
    m.calls = 0;
    CHECK_EQ_INT(rt_eval_perplexity(ids, n, C, C / 2, V, position_logits, &m, &r, d), 0);
    expected = 0.0;
    for (int pos = 1; pos < C; pos++)
        expected += log(pos + 1.0);
    for (size_t pos = (size_t)C; pos < n; pos++) {
        /* The window that scores pos is the first whose end passes it. */
        size_t begin = (pos - (size_t)C) / (size_t)(C / 2) * (size_t)(C / 2) + (size_t)(C / 2);
        expected += log((double)(pos - begin - 1) + 2.0);
    }
    CHECK_CLOSE(r.total_nll, expected, 1e-9, 1e-6);

    ir_diag_free(d);
    free(ids);
}

/* Runs rt_eval_perplexity and checks that it fails with exactly `message`. */
static void check_perplexity_error(const int32_t *ids, size_t n, int context_len, int stride, mock_model *m,
                                   const char *message)
{
    fx_capture c;
    fx_capture_open(&c);
    rt_eval_result r;
    CHECK_EQ_INT(rt_eval_perplexity(ids, n, context_len, stride, m->V, rule_logits, m, &r, c.diag), -1);
    if (strcmp(fx_capture_text(&c), message) != 0)
        fprintf(stderr, "expected: %sgot:      %s", message, fx_capture_text(&c));
    CHECK(strcmp(fx_capture_text(&c), message) == 0);
    fx_capture_close(&c);
}

static void test_perplexity_errors(void)
{
    const int V = 13;
    int32_t *ids = rule_stream(20, V);
    mock_model m = {.V = V, .p = 0.5, .stream = ids};

    check_perplexity_error(ids, 20, 1, 1, &m,
                           "quadc: error: the context length is 1; perplexity needs at least 2 tokens per window\n");
    check_perplexity_error(ids, 20, 8, 0, &m, "quadc: error: the stride is 0; expected 1 to the context length 8\n");
    check_perplexity_error(ids, 20, 8, 9, &m, "quadc: error: the stride is 9; expected 1 to the context length 8\n");
    check_perplexity_error(ids, 1, 8, 4, &m,
                           "quadc: error: the text is too short: it has 1 token, and perplexity needs at least 2\n");
    check_perplexity_error(ids, 0, 8, 4, &m,
                           "quadc: error: the text is too short: it has 0 tokens, and perplexity needs at least 2\n");

    ids[7] = V;
    check_perplexity_error(ids, 20, 8, 4, &m,
                           "quadc: error: token 7 has id 13, outside the model's vocabulary [0, 13)\n");
    ids[7] = -1;
    check_perplexity_error(ids, 20, 8, 4, &m,
                           "quadc: error: token 7 has id -1, outside the model's vocabulary [0, 13)\n");
    free(ids);
    ids = rule_stream(20, V);
    m.stream = ids;

    m.fail_at_call = 2;
    m.calls = 0;
    check_perplexity_error(ids, 20, 8, 4, &m, "quadc: error: mock model failed at call 2\n");
    m.fail_at_call = 0;

    m.emit_nan = true;
    check_perplexity_error(ids, 20, 8, 4, &m,
                           "quadc: error: the model returned a non-finite logit in the row that predicts token 1; "
                           "check the model for NaN or overflow\n");
    free(ids);
}

/* Builds an example from context and target ids. */
static rt_lambada_example make_example(const int32_t *context, size_t n_context, const int32_t *target,
                                       size_t n_target, int line)
{
    rt_lambada_example ex = {malloc((n_context + n_target) * sizeof(int32_t)), n_context, n_target, line};
    memcpy(ex.tokens, context, n_context * sizeof(int32_t));
    memcpy(ex.tokens + n_context, target, n_target * sizeof(int32_t));
    return ex;
}

static void test_lambada_accuracy(void)
{
    const int V = 13;
    const double p = 0.9;
    mock_model m = {.V = V, .p = p};
    ir_diag *d = ir_diag_new(stderr);

    /* Tokens that follow the rule: 1 -> 10 -> 8 -> 7 -> 0 -> 3 -> 11. */
    static const int32_t context_a[] = {1, 10, 8};
    static const int32_t target_a[] = {7, 0};     /* both follow the rule: correct */
    static const int32_t context_b[] = {1, 10};
    static const int32_t target_b[] = {8, 5};     /* second breaks the rule: wrong */
    static const int32_t context_c[] = {3};
    static const int32_t target_c[] = {11};       /* correct */
    static const int32_t target_d[] = {4};        /* after 3 the rule gives 11: wrong */
    rt_lambada_example examples[4] = {
        make_example(context_a, 3, target_a, 2, 1),
        make_example(context_b, 2, target_b, 2, 2),
        make_example(context_c, 1, target_c, 1, 3),
        make_example(context_c, 1, target_d, 1, 4),
    };
    rt_lambada set = {examples, 4};
    rt_lambada_result r;

    CHECK_EQ_INT(rt_eval_lambada(&set, 16, V, rule_logits, &m, &r, d), 0);
    CHECK_EQ_INT(r.examples, 4);
    CHECK_EQ_INT(r.correct, 2);
    CHECK_CLOSE(r.accuracy, 0.5, 0, 1e-12);
    CHECK_EQ_INT(r.target_tokens, 6);
    CHECK_EQ_INT(r.truncated, 0);
    CHECK_EQ_INT(m.calls, 4);
    /* Each call gets the example without its last token. */
    CHECK_EQ_INT(r.tokens_processed, 4 + 3 + 1 + 1);

    double hit = -log(p), miss = -log((1.0 - p) / (V - 1));
    double expected_nll = 4 * hit + 2 * miss;
    CHECK_CLOSE(r.total_nll, expected_nll, 1e-9, 1e-6);
    CHECK_CLOSE(r.perplexity, exp(expected_nll / 4), 1e-9, 1e-6);

    for (int i = 0; i < 4; i++)
        free(examples[i].tokens);
    ir_diag_free(d);
}

static void test_lambada_truncation(void)
{
    const int V = 13;
    mock_model m = {.V = V, .p = 0.9};
    ir_diag *d = ir_diag_new(stderr);

    /* 10 context tokens and 2 target tokens with context length 4: the
     * model receives the last 4 tokens before the final one. */
    int32_t tokens[12];
    tokens[0] = 1;
    for (int i = 1; i < 12; i++)
        tokens[i] = next_token(tokens[i - 1], V);
    rt_lambada_example ex = make_example(tokens, 10, tokens + 10, 2, 1);
    rt_lambada set = {&ex, 1};
    rt_lambada_result r;

    CHECK_EQ_INT(rt_eval_lambada(&set, 4, V, rule_logits, &m, &r, d), 0);
    CHECK_EQ_INT(m.calls, 1);
    CHECK_EQ_INT(m.call_length[0], 4);
    CHECK(m.last_tokens == ex.tokens + 7);
    CHECK_EQ_INT(r.truncated, 1);
    CHECK_EQ_INT(r.correct, 1);

    /* A target as long as the context still fits: its first token is
     * predicted from the last context token. */
    ex.n_context = 8;
    ex.n_target = 4;
    m.calls = 0;
    CHECK_EQ_INT(rt_eval_lambada(&set, 4, V, rule_logits, &m, &r, d), 0);
    CHECK(m.last_tokens == ex.tokens + 7);
    CHECK_EQ_INT(r.target_tokens, 4);
    CHECK_EQ_INT(r.correct, 1);
    free(ex.tokens);
    ir_diag_free(d);
}

static void test_lambada_ties_and_errors(void)
{
    const int V = 13;
    mock_model m = {.V = V};
    static const int32_t context[] = {5, 6, 7};
    static const int32_t zero[] = {0};
    static const int32_t one[] = {1};
    static const int32_t long_target[] = {1, 2, 3};
    rt_lambada_example examples[2] = {make_example(context, 3, zero, 1, 1), make_example(context, 3, one, 1, 2)};
    rt_lambada set = {examples, 2};
    rt_lambada_result r;

    /* All logits tie, so the argmax is id 0. */
    ir_diag *d = ir_diag_new(stderr);
    CHECK_EQ_INT(rt_eval_lambada(&set, 8, V, uniform_logits, &m, &r, d), 0);
    CHECK_EQ_INT(r.correct, 1);
    CHECK_CLOSE(r.perplexity, V, 0, 1e-12);
    ir_diag_free(d);

    rt_lambada_example too_long = make_example(context, 3, long_target, 3, 42);
    rt_lambada one_example = {&too_long, 1};
    fx_capture c;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_eval_lambada(&one_example, 2, V, uniform_logits, &m, &r, c.diag), -1);
    CHECK(strcmp(fx_capture_text(&c), "quadc: error: LAMBADA example at line 42: the target has 3 tokens, more than "
                                   "the context length 2 can predict\n") == 0);
    fx_capture_close(&c);

    rt_lambada empty = {NULL, 0};
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_eval_lambada(&empty, 8, V, uniform_logits, &m, &r, c.diag), -1);
    CHECK(strcmp(fx_capture_text(&c), "quadc: error: the LAMBADA set has no examples\n") == 0);
    fx_capture_close(&c);

    free(too_long.tokens);
    for (int i = 0; i < 2; i++)
        free(examples[i].tokens);
}

int main(void)
{
    test_window_arithmetic();
    test_uniform_perplexity();
    test_scoring_rows_in_window();
    test_perplexity_errors();
    test_lambada_accuracy();
    test_lambada_truncation();
    test_lambada_ties_and_errors();
    return check_finish();
}
