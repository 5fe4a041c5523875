/* The CPU backend's thread pool (src/cpu/pool.h): every task of every pass runs exactly once,
 * on a thread index in range, and pool_run returns only after all of them, whichever way the
 * threads wait: back-to-back passes (workers still spinning), passes after a pause longer than
 * the spin (workers asleep on the condition variable, so the wake-up handshake runs, the caller
 * takes the sleepers' tasks, and late risers join whatever pass runs when they wake), a caller
 * that finishes first (it sleeps for a worker that is still in a task), passes of every size
 * around the thread count (empty ranges), and more threads than cores. A lost
 * wake-up would hang the test (meson's timeout fails it); a task run twice or not at all, or a
 * return before the last task, fails a check. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cpu/pool.h"

enum { MAX_TASKS = 64 };

typedef struct {
    atomic_int runs[MAX_TASKS];
    atomic_int bad_thread;
    int n_threads;
    long slow_ns;           /* the first task a worker (thread > 0) runs sleeps this long */
    atomic_int slowed;
} pass_ctx;

static void sleep_ns(long ns)
{
    struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
    nanosleep(&ts, NULL);
}

static void count_task(void *ctx, int task, int thread)
{
    pass_ctx *c = ctx;
    if (thread < 0 || thread >= c->n_threads)
        atomic_fetch_add(&c->bad_thread, 1);
    if (thread > 0 && c->slow_ns && !atomic_exchange(&c->slowed, 1))
        sleep_ns(c->slow_ns);
    atomic_fetch_add(&c->runs[task], 1);
}

/* One pass of n_tasks; checks, after pool_run returns, that each task ran exactly once, and
 * that the pass was counted when it woke the other threads (more than one of each). */
static void one_pass(pool *p, int n_threads, int n_tasks, long slow_ns)
{
    uint64_t passes0 = pool_passes(p);
    pass_ctx c = {.n_threads = n_threads, .slow_ns = slow_ns};
    atomic_init(&c.slowed, 0);
    for (int t = 0; t < MAX_TASKS; t++)
        atomic_init(&c.runs[t], 0);
    atomic_init(&c.bad_thread, 0);
    pool_run(p, count_task, &c, n_tasks);
    for (int t = 0; t < MAX_TASKS; t++) {
        int want = t < n_tasks ? 1 : 0;
        if (atomic_load(&c.runs[t]) != want)
            fail_msg("%d threads, %d tasks: task %d ran %d times, not %d", n_threads, n_tasks, t,
                     atomic_load(&c.runs[t]), want);
    }
    assert_int_equal(atomic_load(&c.bad_thread), 0);
    assert_true(pool_passes(p) - passes0 == (n_threads > 1 && n_tasks > 1 ? 1u : 0u));
}

static void test_passes(void **state)
{
    (void)state;
    static const int thread_counts[] = {1, 2, 3, 8};
    for (size_t i = 0; i < sizeof thread_counts / sizeof *thread_counts; i++) {
        int n = thread_counts[i];
        pool *p = NULL;
        assert_int_equal(pool_create(n, &p), DATTN_OK);
        assert_int_equal(pool_threads(p), n);
        /* back to back: the workers never leave their spin */
        for (int r = 0; r < 2000; r++)
            one_pass(p, n, 1 + r % MAX_TASKS, 0);
        /* a pause past the spin, then quick passes: the workers are asleep and must be woken,
         * and one that wakes late may find its pass finished by the others, or a later one
         * running, which it joins */
        for (int r = 0; r < 6; r++) {
            sleep_ns(2 * POOL_SPIN_NS);
            for (int q = 0; q < 50; q++)
                one_pass(p, n, 1 + (r * 7 + q) % MAX_TASKS, 0);
        }
        /* a slow task on a worker: the caller runs out of tasks first (it takes the rest of the
         * worker's range), outlasts its own spin and sleeps until that worker reports */
        for (int r = 0; r < 3; r++)
            one_pass(p, n, MAX_TASKS, 2 * POOL_SPIN_NS);
        pool_destroy(p);
    }
}

/* A call of more tasks than one pass holds runs as several passes; every task still runs once,
 * with its index in the call (not in the pass). */
typedef struct {
    unsigned char *runs;
    atomic_int bad_thread;
    int n_threads;
} big_ctx;

static void mark_task(void *ctx, int task, int thread)
{
    big_ctx *c = ctx;
    if (thread < 0 || thread >= c->n_threads)
        atomic_fetch_add(&c->bad_thread, 1);
    c->runs[task]++;   /* each task once, so no two threads touch one byte */
}

static void test_many_tasks(void **state)
{
    (void)state;
    int n = 2 * POOL_MAX_PASS_TASKS + 7;
    big_ctx c = {.runs = calloc((size_t)n, 1), .n_threads = 3};
    assert_non_null(c.runs);
    atomic_init(&c.bad_thread, 0);
    pool *p = NULL;
    assert_int_equal(pool_create(c.n_threads, &p), DATTN_OK);
    uint64_t passes0 = pool_passes(p);
    pool_run(p, mark_task, &c, n);
    assert_true(pool_passes(p) - passes0 == 3u);
    pool_destroy(p);
    for (int t = 0; t < n; t++)
        if (c.runs[t] != 1)
            fail_msg("task %d of %d ran %d times", t, n, c.runs[t]);
    assert_int_equal(atomic_load(&c.bad_thread), 0);
    free(c.runs);
}

/* Destroying right after creation (workers may not have reached their first wait yet) and
 * after a long idle (workers asleep) both return. */
static void test_destroy(void **state)
{
    (void)state;
    for (int r = 0; r < 20; r++) {
        pool *p = NULL;
        assert_int_equal(pool_create(1 + r % 4, &p), DATTN_OK);
        if (r % 5 == 0)
            sleep_ns(2 * POOL_SPIN_NS);
        pool_destroy(p);
    }
    pool *p = NULL;
    assert_int_not_equal(pool_create(0, &p), DATTN_OK);
    assert_null(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_passes),
        cmocka_unit_test(test_many_tasks),
        cmocka_unit_test(test_destroy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
