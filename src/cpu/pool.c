/* Persistent fork-join thread pool for the CPU backend (DESIGN §2).
 *
 * A decode step runs tens of passes back to back, each only microseconds long, so what a pass
 * costs is the cache lines that cross between cores: on the 2-core test VM one crossing takes
 * ~240 ns (a 485 ns round trip). The first version handed tasks out through one shared counter
 * and counted them done on another (two crossings per task, in a line the waiting workers also
 * polled), and rows landed on either thread from token to token. Now each thread owns a
 * contiguous range of the pass's tasks in its own cache line and takes them from the front; one
 * that runs out steals from the back of the others' ranges (a late or descheduled thread costs
 * the others nothing). Each thread reports the tasks it ran once, when it finds nothing left.
 * A pass is then the range out and the report back, and a thread runs the same rows of a weight
 * from token to token, so warm weights stay in its own caches. On the test VM an empty pass of 8
 * tasks went from 1.1-2.2 us to 0.7-0.9, and the bundled model's 2-thread step (caches flushed)
 * from 0.25-0.29 ms to 0.20-0.22.
 *
 * A thread that waits (a worker for the next pass, the caller for the reports) spins first, for
 * up to POOL_SPIN_NS of wall time, and only then sleeps on a condition variable: on a VM a futex
 * wake-up costs tens of microseconds (34 us on average on the test VM, and the signal itself 5-27
 * us of the caller's time). With a 10 us spin the worker was asleep at 41% of the passes of a
 * 125M model's decode (3.0 ms a token against 2.5). The waker takes the lock and signals only
 * when someone really sleeps (the sleepers / caller_sleeps flags), so a pass costs no system
 * call. */
#define _GNU_SOURCE
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "status.h"


/* A range word: the pass's tag (its number, mod 2^24) and the range [front, back) of tasks its
 * thread has not started. The tag makes a claim by a thread that is still in an older pass fail
 * instead of taking a task of the next one. Passes of more tasks run as several. */
enum { TASK_BITS = 20, TAG_BITS = 64 - 2 * TASK_BITS };
#define TASK_MASK ((1u << TASK_BITS) - 1)
#define TAG_MASK ((1u << TAG_BITS) - 1)
_Static_assert(POOL_MAX_PASS_TASKS == (1 << TASK_BITS) - 1, "a range word holds a pass's tasks");

static inline uint64_t range_word(uint64_t pass, unsigned front, unsigned back)
{
    return (pass & TAG_MASK) << (2 * TASK_BITS) | (uint64_t)front << TASK_BITS | back;
}
static inline unsigned range_tag(uint64_t w) { return (unsigned)(w >> (2 * TASK_BITS)); }
static inline unsigned range_front(uint64_t w) { return (unsigned)(w >> TASK_BITS) & TASK_MASK; }
static inline unsigned range_back(uint64_t w) { return (unsigned)w & TASK_MASK; }

/* A report word: the pass's number, mod 2^44 (a stale report would have to be 2^44 passes old,
 * months of passes, to be mistaken for a current one), and the tasks run. */
static inline uint64_t report_word(uint64_t pass, unsigned ran)
{
    return pass << TASK_BITS | ran;
}
static inline int report_is(uint64_t w, uint64_t pass)
{
    return (w >> TASK_BITS) == (pass & ((UINT64_C(1) << (64 - TASK_BITS)) - 1));
}

/* Per thread, each word in a cache line of its own: `range` is written by the caller once a
 * pass and then claimed by its owner (and thieves); `done` is written once a pass by its owner
 * and polled by the caller, so the polling does not take the range's line from its owner. */
typedef struct thread_slot {
    _Alignas(64) _Atomic uint64_t range;
    /* The pass, in the range's cache line: the thread that sees a new range has what to run
     * without fetching another line from the caller's core. Written before any range of the
     * pass, read only after a claim of it succeeded. */
    pool_fn fn;
    void *ctx;
    int base;                  /* task index of the pass's first task (passes of > 2^20) */
    _Alignas(64) _Atomic uint64_t done;   /* report_word(pass, tasks this thread ran in it) */
} thread_slot;

typedef struct worker_arg { struct pool *p; int thread; } worker_arg;

struct pool {
    int n_threads;
    pthread_t *threads;
    worker_arg *args;          /* [n_threads]: owned by the pool, so workers never free */
    thread_slot *slots;        /* [n_threads], 64-byte aligned */
    pthread_mutex_t lock;
    pthread_cond_t wake;       /* a new pass (or shutdown) */
    pthread_cond_t done;       /* a worker reported */
    atomic_int sleepers;       /* workers asleep on `wake` (changed under lock) */
    atomic_int caller_sleeps;  /* the caller asleep on `done` (changed under lock) */
    atomic_int shutdown;
    /* The pass being run or last run: written by the caller before it hands out the ranges,
     * read by a thread only after it claimed a task (so the pass cannot end under it). */
    _Alignas(64) uint64_t pass;
    uint64_t passes;           /* passes run (the caller's thread alone counts them) */
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

/* What a waiting thread waits for: a worker (a = its index) for a pass other than b, the caller
 * for reports of a = n tasks in pass b. */
typedef int (*ready_fn)(pool *p, int a, uint64_t b);

/* Spins until ready(p, a, b) holds, for up to POOL_SPIN_NS; returns whether it did. Every 256 rounds
 * it reads the clock and yields the CPU, so that with more threads than free cores (another
 * process busy, or n_threads > cores) the thread that holds the work gets to run: without the
 * yield a pass of 3 threads on 2 cores took 1.3 ms, with it 18 us. */
static int spin_until(ready_fn ready, pool *p, int a, uint64_t b)
{
    uint64_t deadline = 0;
    for (unsigned i = 1;; i++) {
        if (ready(p, a, b))
            return 1;
        cpu_relax();
        if (i % 256 == 0) {
            sched_yield();
            uint64_t t = now_ns();
            if (!deadline)
                deadline = t + POOL_SPIN_NS;
            else if (t >= deadline)
                return 0;
        }
    }
}

/* Takes a task of pass `pass` from slot s: from the front of the owner's own range, from the
 * back of another's. Returns the task's index in the pass, or -1 when that range is empty or
 * already belongs to another pass. */
static int claim(thread_slot *s, uint64_t pass, int from_back)
{
    uint64_t w = atomic_load_explicit(&s->range, memory_order_relaxed);
    for (;;) {
        unsigned front = range_front(w), back = range_back(w);
        if (range_tag(w) != (pass & TAG_MASK) || front >= back)
            return -1;
        uint64_t next = from_back ? range_word(pass, front, back - 1)
                                  : range_word(pass, front + 1, back);
        if (atomic_compare_exchange_weak_explicit(&s->range, &w, next, memory_order_acquire,
                                                  memory_order_relaxed))
            return (int)(from_back ? back - 1 : front);
    }
}

/* Runs tasks of pass `pass` (its tag will do) until none is left anywhere: the thread's own
 * range first, then the others', starting with its neighbour. Returns how many it ran. */
static unsigned run_tasks(pool *p, int thread, uint64_t pass)
{
    const thread_slot *own = &p->slots[thread];
    /* The pass's copy, read once after the first claim: a thief's claim on the range takes the
     * line away, and a read of it after every task would fetch it back. */
    pool_fn fn = NULL;
    void *ctx = NULL;
    int base = 0;
    unsigned ran = 0;
    for (int i = 0; i < p->n_threads; i++) {
        int owner = (thread + i) % p->n_threads;
        int t;
        while ((t = claim(&p->slots[owner], pass, i != 0)) >= 0) {
            if (!ran) {
                fn = own->fn;
                ctx = own->ctx;
                base = own->base;
            }
            fn(ctx, base + t, thread);
            ran++;
        }
    }
    return ran;
}

/* A worker's wait: its range word carries a pass other than `seen`, or the pool shuts down. */
static int worker_ready(pool *p, int thread, uint64_t seen)
{
    uint64_t w = atomic_load(&p->slots[thread].range);
    return range_tag(w) != seen || atomic_load(&p->shutdown);
}

/* The caller's wait: the workers' reports for pass `pass` add up to `need` tasks. */
static int caller_ready(pool *p, int need, uint64_t pass)
{
    unsigned sum = 0;
    for (int t = 1; t < p->n_threads; t++) {
        uint64_t d = atomic_load(&p->slots[t].done);
        if (report_is(d, pass))
            sum += (unsigned)d & TASK_MASK;
    }
    return sum == (unsigned)need;
}

/* A worker waits for a pass, runs what it can claim of it, reports, and waits again. It may
 * join late, or see a pass only after it has ended: its claims then fail (the tags differ),
 * and a report for an ended pass is never read. The caller never waits for a worker that did
 * not claim anything, so a sleeping or descheduled worker delays nobody. */
static void *worker_main(void *arg)
{
    pool *p = ((worker_arg *)arg)->p;
    int thread = ((worker_arg *)arg)->thread;
    thread_slot *own = &p->slots[thread];
    unsigned seen = 0;
    for (;;) {
        if (!spin_until(worker_ready, p, thread, seen)) {
            /* sleepers is raised before the range is read again (both seq_cst), and pool_run
             * writes the ranges before it reads sleepers: one of the two sees the other. */
            pthread_mutex_lock(&p->lock);
            atomic_fetch_add(&p->sleepers, 1);
            while (!worker_ready(p, thread, seen))
                pthread_cond_wait(&p->wake, &p->lock);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->lock);
        }
        if (atomic_load(&p->shutdown))
            return NULL;
        seen = range_tag(atomic_load(&own->range));
        unsigned ran = run_tasks(p, thread, seen);
        if (!ran)
            continue;
        /* The claims succeeded, so the pass is still this tag's and p->pass is its number
         * (the caller cannot move on before this report). */
        uint64_t pass = p->pass;
        /* done is written before caller_sleeps is read (both seq_cst), and the caller raises
         * caller_sleeps before it checks the reports again: one of the two sees the other. */
        atomic_store(&own->done, report_word(pass, ran));
        if (atomic_load(&p->caller_sleeps)) {
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
    pool *p = dattn_alloc_aligned(sizeof *p, "thread pool");
    if (!p)
        return DATTN_E_NOMEM;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = dattn_alloc(sizeof(pthread_t) * (size_t)n_threads, "thread handles");
    p->args = dattn_alloc(sizeof(worker_arg) * (size_t)n_threads, "thread arguments");
    p->slots = dattn_alloc_aligned(sizeof(thread_slot) * (size_t)n_threads, "thread slots");
    if (!p->threads || !p->args || !p->slots) {
        p->n_threads = 1;
        pool_destroy(p);
        return DATTN_E_NOMEM;
    }
    for (int i = 0; i < n_threads; i++) {
        atomic_init(&p->slots[i].range, range_word(0, 0, 0));
        atomic_init(&p->slots[i].done, 0);
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
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 1; i < p->n_threads && p->threads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    dattn_free(p->threads);
    dattn_free(p->args);
    dattn_free_aligned(p->slots);
    dattn_free_aligned(p);
}

int pool_threads(const pool *p) { return p->n_threads; }

uint64_t pool_passes(const pool *p) { return p->passes; }

/* One pass of n <= POOL_MAX_PASS_TASKS tasks starting at task `base`. */
static void run_pass(pool *p, pool_fn fn, void *ctx, int base, int n)
{
    p->passes++;
    uint64_t pass = ++p->pass;
    /* Every slot's copy of the pass before any range: a thread that steals from another's
     * range runs its own copy. */
    int T = p->n_threads;
    for (int t = 0; t < T; t++) {
        p->slots[t].fn = fn;
        p->slots[t].ctx = ctx;
        p->slots[t].base = base;
    }
    /* Thread t owns tasks [t n / T, (t + 1) n / T): the same rows of a weight each token. */
    for (int t = T - 1; t >= 0; t--) {
        unsigned front = (unsigned)((long)n * t / T), back = (unsigned)((long)n * (t + 1) / T);
        atomic_store(&p->slots[t].range, range_word(pass, front, back));
    }
    if (atomic_load(&p->sleepers)) {
        pthread_mutex_lock(&p->lock);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
    }

    int need = n - (int)run_tasks(p, 0, pass);
    if (need > 0 && !spin_until(caller_ready, p, need, pass)) {
        pthread_mutex_lock(&p->lock);
        atomic_store(&p->caller_sleeps, 1);
        while (!caller_ready(p, need, pass))
            pthread_cond_wait(&p->done, &p->lock);
        atomic_store(&p->caller_sleeps, 0);
        pthread_mutex_unlock(&p->lock);
    }
}

void pool_run(pool *p, pool_fn fn, void *ctx, int n_tasks)
{
    if (n_tasks <= 0)
        return;
    if (p->n_threads == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++)
            fn(ctx, t, 0);
        return;
    }
    for (int base = 0; base < n_tasks; base += POOL_MAX_PASS_TASKS) {
        int n = n_tasks - base < POOL_MAX_PASS_TASKS ? n_tasks - base : POOL_MAX_PASS_TASKS;
        run_pass(p, fn, ctx, base, n);
    }
}
