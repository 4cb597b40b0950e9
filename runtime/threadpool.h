/* A fixed-size pool of worker threads for data-parallel loops. The caller of
 * rt_pool_parallel_for works too, so a pool of N threads starts N - 1
 * workers. JIT-compiled code calls rt_pool_parallel_for with a generated
 * task function and a context pointer. */
#ifndef QUADC_RUNTIME_THREADPOOL_H
#define QUADC_RUNTIME_THREADPOOL_H

#include <stdint.h>

typedef struct rt_pool rt_pool;

/* Runs tasks [begin, end) of one parallel loop. */
typedef void (*rt_task_fn)(void *ctx, int64_t begin, int64_t end);

/* Creates a pool of `threads` threads (0 = one per online core). Returns
 * NULL when a thread cannot be started. */
rt_pool *rt_pool_new(int threads);
void rt_pool_free(rt_pool *p);
int rt_pool_threads(const rt_pool *p);
/* Returns the number of online cores, at least 1. */
int rt_cpu_count(void);

/* Runs fn over tasks [0, ntasks) and returns when all have finished. Threads
 * claim `grain` consecutive tasks at a time (grain < 1 counts as 1). Calls
 * from several threads at once on one pool are serialized. */
void rt_pool_parallel_for(rt_pool *p, rt_task_fn fn, void *ctx, int64_t ntasks, int64_t grain);

#endif
