/* A unigram language model: each token's probability is its relative
 * frequency in training token streams with add-one (Laplace) smoothing
 * over the vocabulary, p(t) = (count(t) + 1) / (N + V) for N training
 * tokens and V vocabulary entries. `quadc eval --unigram` reports its
 * perplexity as a baseline that a trained model should beat. */
#ifndef QUADC_RUNTIME_UNIGRAM_H
#define QUADC_RUNTIME_UNIGRAM_H

#include <stddef.h>
#include <stdint.h>

#include "ir/diag.h"

typedef struct rt_unigram {
    int vocab;       /* V */
    int64_t total;   /* N, the tokens counted */
    int64_t *counts; /* V counts */
} rt_unigram;

/* Starts a model with no counts over a vocabulary of `vocab` >= 1
 * entries. Returns 0, or -1 after reporting through d. */
int rt_unigram_init(rt_unigram *u, int vocab, ir_diag *d);
void rt_unigram_free(rt_unigram *u);

/* Counts ids[0..n). An id outside [0, V) is an error naming its position
 * and `source` (a file name for messages, or NULL), and then nothing is
 * counted. Returns 0 or -1. */
int rt_unigram_add(rt_unigram *u, const int32_t *ids, size_t n, const char *source, ir_diag *d);

/* Returns -log p(token) in nats. The token must be in [0, V). */
double rt_unigram_nll(const rt_unigram *u, int32_t token);

#endif
