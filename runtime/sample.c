/* Greedy and seeded top-k sampling over one row of logits. */
#include <math.h>

#include "runtime/sample.h"

int32_t rt_sample_argmax(const float *logits, int V)
{
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best])
            best = i;
    return best;
}

/* Whether id a ranks below id b: a lower logit, or the same logit and a
 * higher id. */
static int ranks_below(const float *logits, int a, int b)
{
    return logits[a] < logits[b] || (logits[a] == logits[b] && a > b);
}

static void sift_down(const float *logits, int *heap, int n, int at)
{
    for (;;) {
        int low = at, left = 2 * at + 1, right = left + 1;
        if (left < n && ranks_below(logits, heap[left], heap[low]))
            low = left;
        if (right < n && ranks_below(logits, heap[right], heap[low]))
            low = right;
        if (low == at)
            return;
        int t = heap[at];
        heap[at] = heap[low];
        heap[low] = t;
        at = low;
    }
}

/* Stores the ids of the k highest-ranked logits in heap[0..k), a min-heap
 * whose root is the lowest-ranked of them. O(V log k). */
static void select_top_k(const float *logits, int V, int k, int *heap)
{
    for (int i = 0; i < k; i++)
        heap[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--)
        sift_down(logits, heap, k, i);
    for (int i = k; i < V; i++) {
        if (ranks_below(logits, heap[0], i)) {
            heap[0] = i;
            sift_down(logits, heap, k, 0);
        }
    }
}

int32_t rt_sample_top_k(const float *logits, int V, double temperature, int top_k, rt_rng *rng, int *scratch)
{
    int k = top_k > 0 && top_k < V ? top_k : V;
    select_top_k(logits, V, k, scratch);
    double max = -INFINITY;
    for (int i = 0; i < k; i++)
        if (logits[scratch[i]] > max)
            max = logits[scratch[i]];
    double total = 0.0;
    for (int i = 0; i < k; i++)
        total += exp(((double)logits[scratch[i]] - max) / temperature);
    /* rt_rng_uniform is in (0, 1], so take the first candidate whose
     * cumulative weight reaches the target. */
    double target = rt_rng_uniform(rng) * total, sum = 0.0;
    for (int i = 0; i < k; i++) {
        sum += exp(((double)logits[scratch[i]] - max) / temperature);
        if (target <= sum)
            return scratch[i];
    }
    return scratch[k - 1]; /* rounding left target at the total */
}
