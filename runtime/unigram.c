/* The add-one smoothed unigram model of runtime/unigram.h. */
#include "runtime/unigram.h"

#include <math.h>
#include <stdlib.h>

int rt_unigram_init(rt_unigram *u, int vocab, ir_diag *d)
{
    u->vocab = vocab;
    u->total = 0;
    u->counts = vocab >= 1 ? calloc((size_t)vocab, sizeof *u->counts) : NULL;
    if (!u->counts) {
        ir_diag_file_error(d, NULL, vocab >= 1 ? "out of memory for the counts of %d unigrams"
                                               : "a unigram model needs a vocabulary of at least 1 entry, got %d",
                           vocab);
        return -1;
    }
    return 0;
}

void rt_unigram_free(rt_unigram *u)
{
    free(u->counts);
    u->counts = NULL;
    u->total = 0;
}

int rt_unigram_add(rt_unigram *u, const int32_t *ids, size_t n, const char *source, ir_diag *d)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= u->vocab) {
            ir_diag_file_error(d, source, "token %zu has id %d, outside the unigram vocabulary [0, %d)", i, ids[i],
                               u->vocab);
            return -1;
        }
    for (size_t i = 0; i < n; i++)
        u->counts[ids[i]]++;
    u->total += (int64_t)n;
    return 0;
}

double rt_unigram_nll(const rt_unigram *u, int32_t token)
{
    return -log(((double)u->counts[token] + 1.0) / ((double)u->total + (double)u->vocab));
}
