/* Training data: token streams split into a training part and a held-out
 * part, and batches drawn from them. Every text keeps its first
 * (1 - val_frac) of tokens for training and its last val_frac for
 * evaluation, so held-out tokens never appear in a training window.
 * Training windows start at random, so the position in the data is the
 * state of the generator that draws them. */
#ifndef QUADC_RUNTIME_TRAIN_DATA_H
#define QUADC_RUNTIME_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "ir/diag.h"
#include "runtime/train_rng.h"

typedef struct rt_token_span {
    const int32_t *ids;
    size_t count;
} rt_token_span;

typedef struct rt_train_data {
    int ntexts;
    int32_t **texts;      /* owned token arrays, one per text */
    rt_token_span *train; /* per text */
    rt_token_span *val;   /* per text */
} rt_train_data;

void rt_train_data_init(rt_train_data *data);
void rt_train_data_free(rt_train_data *data);

/* Adds a text's n token ids (taking ownership of the malloc'd array) and
 * splits it: the last floor(n * val_frac) ids are held out. Returns 0, or
 * -1 when out of memory (the ids are freed). */
int rt_train_data_add(rt_train_data *data, int32_t *ids, size_t n, double val_frac, ir_diag *d);

/* Returns the largest token id in any text, or -1 when there is none. */
int32_t rt_train_data_max_id(const rt_train_data *data);
size_t rt_train_data_train_tokens(const rt_train_data *data);
size_t rt_train_data_val_tokens(const rt_train_data *data);

/* Fills idx and targets ([B, T] each, row-major) with B windows of T + 1
 * consecutive training tokens: idx gets tokens 0..T-1 of a window and
 * targets tokens 1..T. Window starts are uniform over every start in every
 * text whose training part has at least T + 1 tokens. Returns 0, or -1
 * after reporting that no text is long enough. */
int rt_train_sample_batch(const rt_train_data *data, rt_rng *rng, int B, int T, int32_t *idx, int32_t *targets,
                          ir_diag *d);

/* Returns the number of held-out windows: each text's held-out part is cut
 * into non-overlapping windows of T + 1 tokens that start T apart. */
size_t rt_train_val_windows(const rt_train_data *data, int T);

/* Fills held-out batch `batch` with windows batch * B ... batch * B + B - 1,
 * counted modulo the number of windows, so the held-out set is the same
 * for every evaluation. The caller checks that windows exist. */
void rt_train_val_batch(const rt_train_data *data, size_t batch, int B, int T, int32_t *idx, int32_t *targets);

#endif
