/* Persistent fork-join thread pool for the CPU backend (DESIGN §2). Workers sleep on a condition
 * variable between passes and spin briefly first, because a decode step runs a few passes back to
 * back and a futex wake-up per pass would cost more than the pass on a short cache. */
#define _GNU_SOURCE
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "alloc.h"
#include "status.h"

enum { SPIN_ROUNDS = 20000 };

typedef struct worker_arg { struct pool *p; int thread; } worker_arg;

struct pool {
    int n_threads;
    pthread_t *threads;
    worker_arg *args;          /* [n_threads]: owned by the pool, so workers never free */
    pthread_mutex_t lock;
    pthread_cond_t wake;       /* a new pass (or shutdown) */
    pthread_cond_t done;       /* the last worker finished the pass */
    atomic_uint generation;    /* bumped once per pass */
    uint64_t passes;           /* passes run (the caller's thread alone counts them) */
    atomic_int next_task;
    atomic_int busy_workers;
    int n_tasks;
    pool_fn fn;
    void *ctx;
    int shutdown;
};


static void run_tasks(pool *p, int thread)
{
    for (;;) {
        int t = atomic_fetch_add_explicit(&p->next_task, 1, memory_order_relaxed);
        if (t >= p->n_tasks)
            break;
        p->fn(p->ctx, t, thread);
    }
}

static void *worker_main(void *arg)
{
    pool *p = ((worker_arg *)arg)->p;
    int thread = ((worker_arg *)arg)->thread;
    unsigned seen = 0;
    for (;;) {
        unsigned gen = 0;
        for (int i = 0; i < SPIN_ROUNDS; i++) {
            gen = atomic_load_explicit(&p->generation, memory_order_acquire);
            if (gen != seen)
                break;
        }
        if (gen == seen) {
            pthread_mutex_lock(&p->lock);
            while ((gen = atomic_load(&p->generation)) == seen && !p->shutdown)
                pthread_cond_wait(&p->wake, &p->lock);
            pthread_mutex_unlock(&p->lock);
        }
        if (p->shutdown)
            return NULL;
        seen = gen;
        run_tasks(p, thread);
        if (atomic_fetch_sub_explicit(&p->busy_workers, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->lock);
        }
    }
}

dattn_status pool_create(int n_threads, pool **out)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > 1024)
        return dattn_fail(DATTN_E_INVALID_ARG, "cpu: %d threads is out of range 1..1024", n_threads);
    pool *p = dattn_alloc(sizeof *p, "thread pool");
    if (!p)
        return DATTN_E_NOMEM;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = dattn_alloc(sizeof(pthread_t) * (size_t)n_threads, "thread handles");
    p->args = dattn_alloc(sizeof(worker_arg) * (size_t)n_threads, "thread arguments");
    if (!p->threads || !p->args) {
        p->n_threads = 1;
        pool_destroy(p);
        return DATTN_E_NOMEM;
    }
    for (int i = 1; i < n_threads; i++) {
        p->args[i] = (worker_arg){p, i};
        int err = pthread_create(&p->threads[i], NULL, worker_main, &p->args[i]);
        if (err) {
            p->n_threads = i;
            pool_destroy(p);
            return dattn_fail(DATTN_E_THREAD, "cpu: could not start worker thread %d of %d: %s", i,
                              n_threads, strerror(err));
        }
    }
    *out = p;
    return DATTN_OK;
}

void pool_destroy(pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->shutdown = 1;
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 1; i < p->n_threads && p->threads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    dattn_free(p->threads);
    dattn_free(p->args);
    dattn_free(p);
}

int pool_threads(const pool *p) { return p->n_threads; }

uint64_t pool_passes(const pool *p) { return p->passes; }

void pool_run(pool *p, pool_fn fn, void *ctx, int n_tasks)
{
    if (n_tasks <= 0)
        return;
    if (p->n_threads == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++)
            fn(ctx, t, 0);
        return;
    }
    p->passes++;
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next_task, 0);
    atomic_store(&p->busy_workers, p->n_threads - 1);
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    run_tasks(p, 0);

    for (int i = 0; i < SPIN_ROUNDS; i++)
        if (atomic_load_explicit(&p->busy_workers, memory_order_acquire) == 0)
            return;
    pthread_mutex_lock(&p->lock);
    while (atomic_load(&p->busy_workers) != 0)
        pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
}
