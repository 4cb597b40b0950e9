/* A cache of compiled graphs for flows that run the same graphs many
 * times, such as the quantization flows: every distinct graph is compiled
 * once by an rt_executor, and its module is reused until the cache is
 * freed.
 *
 * Two graphs are the same when they have the same values in the same
 * order (op, type, operands, attributes) and the same outputs. Names are
 * compared only for params and inputs, because executors bind weights and
 * inputs by name. */
#ifndef QUADC_RUNTIME_EXEC_CACHE_H
#define QUADC_RUNTIME_EXEC_CACHE_H

#include "ir/ir.h"
#include "runtime/train_exec.h"

typedef struct rt_exec_cache rt_exec_cache;

typedef struct rt_exec_cache_stats {
    int compiles;           /* graphs compiled */
    int hits;               /* requests served by an earlier compile */
    double compile_seconds; /* wall-clock time spent in the executor's compile */
} rt_exec_cache_stats;

/* Creates an empty cache whose modules `executor` compiles for `threads`
 * worker threads (0 = one per core). Returns NULL when out of memory. */
rt_exec_cache *rt_exec_cache_new(const rt_executor *executor, int threads);

/* Frees every module of the cache and the cache. */
void rt_exec_cache_free(rt_exec_cache *c);

/* Returns the module of g, compiling it on the first request. The cache
 * owns the module, so never pass it to the executor's free. Run it with
 * rt_exec_cache_executor(c)->run. Because other callers may have run the
 * module with other weights, pass weights_changed = true on the first run
 * of every use. Returns NULL after reporting through d.
 *
 * NOTE: a module found in the cache may come from a graph whose other
 * values have other names. A run-time error about such a value (an
 * embedding id out of range) then names the value of that graph. */
void *rt_exec_cache_get(rt_exec_cache *c, const ir_graph *g, ir_diag *d);

const rt_executor *rt_exec_cache_executor(const rt_exec_cache *c);
rt_exec_cache_stats rt_exec_cache_get_stats(const rt_exec_cache *c);

#endif
