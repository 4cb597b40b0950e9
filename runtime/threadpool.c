/* Thread pool: workers wait for a loop to be published, then claim chunks
 * of tasks with an atomic counter, so uneven tasks balance themselves.
 * Each loop is one generation. Workers and the caller spin briefly before
 * they block on a condition variable, because generated code launches
 * loops back to back and a futex wake-up costs tens of microseconds. */
#include "runtime/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

/* Spin iterations before blocking, each one pause instruction: on the
 * order of 100 microseconds on current x86 cores (an estimate). */
#define SPIN_ITERATIONS 4096

struct rt_pool {
    int nthreads;
    pthread_t *workers; /* nthreads - 1 */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_cond_t done;
    pthread_mutex_t call_lock; /* serializes parallel_for callers */
    /* The current loop, written before `generation` grows. */
    rt_task_fn fn;
    void *ctx;
    int64_t ntasks;
    int64_t grain;
    atomic_llong next_task;
    atomic_int busy_workers;
    atomic_ulong generation;
    atomic_bool stopping;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

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

/* Waits until the generation differs from `seen` or the pool stops. */
static unsigned long wait_for_work(rt_pool *p, unsigned long seen)
{
    for (int i = 0; i < SPIN_ITERATIONS; i++) {
        unsigned long g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g != seen || atomic_load(&p->stopping))
            return g;
        cpu_relax();
    }
    pthread_mutex_lock(&p->lock);
    while (atomic_load(&p->generation) == seen && !atomic_load(&p->stopping))
        pthread_cond_wait(&p->wake, &p->lock);
    pthread_mutex_unlock(&p->lock);
    return atomic_load(&p->generation);
}

static void *worker_main(void *arg)
{
    rt_pool *p = arg;
    unsigned long seen = 0;
    for (;;) {
        seen = wait_for_work(p, seen);
        if (atomic_load(&p->stopping))
            break;
        run_tasks(p);
        if (atomic_fetch_sub(&p->busy_workers, 1) == 1) {
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->lock);
        }
    }
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
    atomic_store(&p->stopping, true);
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
     * hand-off. */
    if (p->nthreads == 1 || ntasks <= grain) {
        fn(ctx, 0, ntasks);
        return;
    }

    pthread_mutex_lock(&p->call_lock);
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    p->grain = grain;
    atomic_store(&p->next_task, 0);
    atomic_store(&p->busy_workers, p->nthreads - 1);
    /* Publish under the lock so a worker about to block cannot miss it. */
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    run_tasks(p);

    for (int i = 0; i < SPIN_ITERATIONS && atomic_load(&p->busy_workers) > 0; i++)
        cpu_relax();
    if (atomic_load(&p->busy_workers) > 0) {
        pthread_mutex_lock(&p->lock);
        while (atomic_load(&p->busy_workers) > 0)
            pthread_cond_wait(&p->done, &p->lock);
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&p->call_lock);
}
