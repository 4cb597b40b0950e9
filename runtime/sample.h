/* Next-token selection for text generation: greedy argmax, and sampling
 * with temperature and top-k from the seeded generator of
 * runtime/train_rng.h, so one seed gives the same tokens on every run. */
#ifndef QUADC_RUNTIME_SAMPLE_H
#define QUADC_RUNTIME_SAMPLE_H

#include <stdint.h>

#include "runtime/train_rng.h"

/* Returns the id of the largest of logits[0..V), the lowest id on ties. */
int32_t rt_sample_argmax(const float *logits, int V);

/* Samples an id from softmax(logits / temperature), restricted to the
 * top_k largest logits when 0 < top_k < V (ties at the k-th value broken
 * toward lower ids). temperature must be > 0. The candidates are visited
 * in an order that depends only on the logits, so equal logits and an
 * equal generator state give the same id. Probabilities are computed
 * in double after subtracting the maximum. Consumes one rt_rng_uniform
 * draw. `scratch` has room for V ints. */
int32_t rt_sample_top_k(const float *logits, int V, double temperature, int top_k, rt_rng *rng, int *scratch);

#endif
