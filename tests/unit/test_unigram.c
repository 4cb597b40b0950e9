/* Tests for runtime/unigram against values computed by hand: the counts
 * and add-one probabilities of a few ids, and of the GPT-2 tokens of the
 * tiny text "a a a b", whose tokens are "a", " a", " a", " b". */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "runtime/tokenizer.h"
#include "runtime/unigram.h"

static void test_counts(ir_diag *d)
{
    rt_unigram u;
    CHECK_EQ_INT(rt_unigram_init(&u, 5, d), 0);
    int32_t ids[6] = {0, 2, 2, 4, 2, 0};
    CHECK_EQ_INT(rt_unigram_add(&u, ids, 6, "ids", d), 0);
    CHECK_EQ_INT(u.total, 6);
    CHECK_EQ_INT(u.counts[2], 3);
    /* p = (count + 1) / (6 + 5). */
    CHECK_CLOSE(rt_unigram_nll(&u, 2), -log(4.0 / 11.0), 1e-15, 0);
    CHECK_CLOSE(rt_unigram_nll(&u, 0), -log(3.0 / 11.0), 1e-15, 0);
    CHECK_CLOSE(rt_unigram_nll(&u, 1), -log(1.0 / 11.0), 1e-15, 0);
    /* The probabilities of the whole vocabulary sum to 1. */
    double sum = 0;
    for (int32_t t = 0; t < 5; t++)
        sum += exp(-rt_unigram_nll(&u, t));
    CHECK_CLOSE(sum, 1.0, 1e-15, 0);

    /* An id outside the vocabulary is an error and counts nothing. */
    int32_t bad[2] = {1, 5};
    fprintf(stderr, "expected error follows:\n");
    CHECK_EQ_INT(rt_unigram_add(&u, bad, 2, "bad ids", d), -1);
    CHECK_EQ_INT(u.total, 6);
    CHECK_EQ_INT(u.counts[1], 0);
    rt_unigram_free(&u);

    CHECK_EQ_INT(rt_unigram_init(&u, 0, d), -1);
}

static void test_gpt2_text(ir_diag *d)
{
    rt_tokenizer *tok = rt_tok_load("data/tokenizer/encoder.json", "data/tokenizer/vocab.bpe", d);
    CHECK(tok != NULL);
    if (!tok)
        return;
    int32_t *train = NULL, *eval = NULL;
    size_t ntrain = 0, neval = 0;
    CHECK_EQ_INT(rt_tok_encode(tok, "a a a b", 7, NULL, &train, &ntrain, d), 0);
    CHECK_EQ_INT(rt_tok_encode(tok, "a b a", 5, NULL, &eval, &neval, d), 0);
    CHECK_EQ_INT(ntrain, 4);
    CHECK_EQ_INT(neval, 3);

    rt_unigram u;
    CHECK_EQ_INT(rt_unigram_init(&u, rt_tok_vocab_size(tok), d), 0);
    CHECK_EQ_INT(rt_unigram_add(&u, train, ntrain, "train", d), 0);
    /* The evaluator scores every token after the first: " b" (count 1)
     * and " a" (count 2), so the perplexity is
     * exp(-(log(2 / 50261) + log(3 / 50261)) / 2) = 50261 / sqrt(6). */
    double nll = rt_unigram_nll(&u, eval[1]) + rt_unigram_nll(&u, eval[2]);
    CHECK_CLOSE(exp(nll / 2), 50261.0 / sqrt(6.0), 0, 1e-12);
    CHECK_CLOSE(exp(nll / 2), 20518.967327, 1e-6, 0);
    /* "a" at the start of the text is another token than " a". */
    CHECK(eval[0] != eval[2]);
    CHECK_EQ_INT(u.counts[eval[0]], 1);

    rt_unigram_free(&u);
    free(train);
    free(eval);
    rt_tok_free(tok);
}

int main(void)
{
    ir_diag *d = ir_diag_new(stderr);
    test_counts(d);
    test_gpt2_text(d);
    ir_diag_free(d);
    return check_finish();
}
