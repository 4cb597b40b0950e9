/* Thread pool: workers sleep on a condition variable until a loop is
 * published, then claim chunks of tasks with an atomic counter, so uneven
 * tasks balance themselves. Each loop is one generation; the caller
 * waits until every worker has left the generation before it returns. */
#include "runtime/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

struct rt_pool {
    int nthreads;
    pthread_t *workers; /* nthreads - 1 */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_cond_t done;
    pthread_mutex_t call_lock; /* serializes parallel_for callers */
    /* The current loop, written under `lock` before `generation` grows. */
    rt_task_fn fn;
    void *ctx;
    int64_t ntasks;
    int64_t grain;
    atomic_llong next_task;
    int busy_workers;
    unsigned long generation;
    bool stopping;
};

int rt_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void run_tasks(rt_pool *p)
{
    for (;;) {
        int64_t begin = atomic_fetch_add(&p->next_task, p->grain);
        if (begin >= p->ntasks)
            return;
        int64_t end = begin + p->grain < p->ntasks ? begin + p->grain : p->ntasks;
        p->fn(p->ctx, begin, end);
    }
}

static void *worker_main(void *arg)
{
    rt_pool *p = arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->generation == seen && !p->stopping)
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->stopping)
            break;
        seen = p->generation;
        pthread_mutex_unlock(&p->lock);

        run_tasks(p);

        pthread_mutex_lock(&p->lock);
        if (--p->busy_workers == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

rt_pool *rt_pool_new(int threads)
{
    rt_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->nthreads = threads > 0 ? threads : rt_cpu_count();
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->call_lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->workers = calloc((size_t)p->nthreads, sizeof *p->workers);
    if (!p->workers) {
        free(p);
        return NULL;
    }
    for (int i = 0; i < p->nthreads - 1; i++) {
        if (pthread_create(&p->workers[i], NULL, worker_main, p) != 0) {
            p->nthreads = i + 1; /* join only the workers that started */
            rt_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void rt_pool_free(rt_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nthreads - 1; i++)
        pthread_join(p->workers[i], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->call_lock);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->workers);
    free(p);
}

int rt_pool_threads(const rt_pool *p)
{
    return p->nthreads;
}

void rt_pool_parallel_for(rt_pool *p, rt_task_fn fn, void *ctx, int64_t ntasks, int64_t grain)
{
    if (ntasks <= 0)
        return;
    if (grain < 1)
        grain = 1;
    /* One thread, or too few tasks to share: run inline and skip the
     * wake-up latency. */
    if (p->nthreads == 1 || ntasks <= grain) {
        fn(ctx, 0, ntasks);
        return;
    }

    pthread_mutex_lock(&p->call_lock);
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    p->grain = grain;
    atomic_store(&p->next_task, 0);
    p->busy_workers = p->nthreads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    run_tasks(p);

    pthread_mutex_lock(&p->lock);
    while (p->busy_workers > 0)
        pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->call_lock);
}
