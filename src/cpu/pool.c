/* Persistent fork-join thread pool for the CPU backend (DESIGN §2). A decode step runs tens of
 * passes back to back with a few microseconds of one-thread work between them, so a thread that
 * waits (a worker for the next pass, the caller for the last worker) spins first, for up to
 * SPIN_NS of wall time, and only then sleeps on a condition variable. On a VM a futex wake-up
 * costs tens of microseconds: with a spin of 20,000 loads (~10 us) the worker was asleep at 41% of
 * the passes of a 125M model's q8_0 decode and a token took 3.0 ms; spinning long enough that it
 * never sleeps inside a step, 2.5 ms. The waker takes the lock and signals only when someone
 * really sleeps (the sleepers / caller_sleeps flags), so a pass costs no system call. */
#define _GNU_SOURCE
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "status.h"

/* Longer than any one-thread gap inside a decode step or between the tokens of a generation;
 * short enough that idle threads go to sleep at once to a person's eye. */
enum { SPIN_NS = 1000000 };

typedef struct worker_arg { struct pool *p; int thread; } worker_arg;

struct pool {
    int n_threads;
    pthread_t *threads;
    worker_arg *args;          /* [n_threads]: owned by the pool, so workers never free */
    pthread_mutex_t lock;
    pthread_cond_t wake;       /* a new pass (or shutdown) */
    pthread_cond_t done;       /* the last worker finished the pass */
    atomic_uint generation;    /* the pass being run or last run: bumped when one starts */
    atomic_uint finished;      /* = generation once all the pass's tasks are done */
    atomic_uint active;        /* workers inside a pass; none while the caller sets one up */
    atomic_int sleepers;       /* workers asleep on `wake` (changed under lock) */
    atomic_int caller_sleeps;  /* the caller asleep on `done` (changed under lock) */
    atomic_int shutdown;
    uint64_t passes;           /* passes run (the caller's thread alone counts them) */
    atomic_int next_task;
    atomic_uint tasks_done;
    int n_tasks;
    pool_fn fn;
    void *ctx;
};

/* A hint to the core that this is a spin loop (frees the pipeline for a sibling thread). */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Spins until (*word == value) == equal, for up to SPIN_NS; returns whether it got there. Every
 * 256 rounds it reads the clock and yields the CPU, so that with more threads than free cores
 * (another process busy, or n_threads > cores) the thread that holds the work gets to run: without
 * the yield a pass of 3 threads on 2 cores took 1.3 ms, with it 18 us (the old 10 us spin: 36). */
static int spin_until(atomic_uint *word, unsigned value, int equal)
{
    uint64_t deadline = 0;
    for (unsigned i = 1;; i++) {
        if ((atomic_load_explicit(word, memory_order_acquire) == value) == equal)
            return 1;
        cpu_relax();
        if (i % 256 == 0) {
            sched_yield();
            uint64_t t = now_ns();
            if (!deadline)
                deadline = t + SPIN_NS;
            else if (t >= deadline)
                return 0;
        }
    }
}

/* Claims and runs tasks of the current pass until none is left; the thread that completes the
 * last one wakes the caller if it sleeps (caller_sleeps is raised before tasks_done is read
 * again, both seq_cst, as with sleepers below). */
static void run_tasks(pool *p, int thread)
{
    for (;;) {
        int t = atomic_fetch_add_explicit(&p->next_task, 1, memory_order_relaxed);
        if (t >= p->n_tasks)
            break;
        p->fn(p->ctx, t, thread);
        if (atomic_fetch_add(&p->tasks_done, 1) + 1 == (unsigned)p->n_tasks && thread != 0 &&
            atomic_load(&p->caller_sleeps)) {
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->lock);
        }
    }
}

/* A worker waits for a pass, joins it if it still runs, and waits again. The caller does not
 * wait for workers that have not joined: a pass ends when its tasks are done, so a worker that
 * wakes late (asleep, or descheduled) costs the caller nothing; that worker may then find the
 * pass finished, or the next one running. A joined worker counts in `active`, and the caller
 * sets up a pass only when none is (pool_run), so the pass a worker sees after joining stays
 * put. */
static void *worker_main(void *arg)
{
    pool *p = ((worker_arg *)arg)->p;
    int thread = ((worker_arg *)arg)->thread;
    unsigned seen = 0;
    for (;;) {
        if (!spin_until(&p->generation, seen, 0)) {
            /* sleepers is raised before generation is read again (both seq_cst), and pool_run
             * bumps generation before it reads sleepers: one of the two sees the other. */
            pthread_mutex_lock(&p->lock);
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->generation) == seen && !atomic_load(&p->shutdown))
                pthread_cond_wait(&p->wake, &p->lock);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->lock);
        }
        if (atomic_load(&p->shutdown))
            return NULL;
        /* Join, then look at which pass runs. With active raised the caller cannot set up
         * another: it marks a pass finished, then reads active before it writes the next one
         * (all seq_cst), so either it waits for us, or we see the pass finished (and leave
         * without reading the fields it may be writing). */
        atomic_fetch_add(&p->active, 1);
        seen = atomic_load(&p->generation);
        if (atomic_load(&p->finished) != seen)
            run_tasks(p, thread);
        atomic_fetch_sub(&p->active, 1);
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
    atomic_store(&p->shutdown, 1);
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
    /* A worker still inside the last pass (past its last task) must leave before the pass's
     * fields change; it is only ever a few instructions from leaving, unless descheduled. */
    while (atomic_load(&p->active) != 0) {
        cpu_relax();
        sched_yield();
    }
    p->passes++;
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next_task, 0);
    atomic_store(&p->tasks_done, 0);
    unsigned gen = atomic_fetch_add(&p->generation, 1) + 1;
    if (atomic_load(&p->sleepers)) {
        pthread_mutex_lock(&p->lock);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
    }

    run_tasks(p, 0);

    if (!spin_until(&p->tasks_done, (unsigned)n_tasks, 1)) {
        pthread_mutex_lock(&p->lock);
        atomic_store(&p->caller_sleeps, 1);
        while (atomic_load(&p->tasks_done) != (unsigned)n_tasks)
            pthread_cond_wait(&p->done, &p->lock);
        atomic_store(&p->caller_sleeps, 0);
        pthread_mutex_unlock(&p->lock);
    }
    atomic_store(&p->finished, gen);
}
