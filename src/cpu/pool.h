/* A persistent thread pool: threads are made once per backend and run fork-join passes
 * (pool_run) on the prefill/decode path without creating anything. */
#ifndef DATTN_POOL_H
#define DATTN_POOL_H

#include <stdint.h>

#include "dattn.h"

typedef struct pool pool;

/* How long a waiting thread spins before it sleeps: longer than the one-thread gaps inside a
 * decode step and than a few milliseconds of an application's own work between tokens (on the
 * test VM a step that had to wake its worker after a 3 ms gap took 0.29-0.33 ms instead of
 * 0.20-0.26 for the bundled model), short enough that idle threads go to sleep at once to a
 * person's eye. OpenMP runtimes spin longer (Intel's KMP_BLOCKTIME: 200 ms). */
enum { POOL_SPIN_NS = 5000000 };
/* pool_run runs more tasks than this as several passes. */
enum { POOL_MAX_PASS_TASKS = (1 << 20) - 1 };
/* fn(ctx, task, thread): runs every task in [0, n_tasks) once; thread is in [0, n_threads). */
typedef void (*pool_fn)(void *ctx, int task, int thread);

dattn_status pool_create(int n_threads, pool **out);
void pool_destroy(pool *p);
int pool_threads(const pool *p);
/* Runs all tasks on the pool's threads (the caller's thread is thread 0) and returns when
 * every task is done. */
void pool_run(pool *p, pool_fn fn, void *ctx, int n_tasks);
/* Passes that woke the other threads so far (one thread, or one task, runs inline: not one). */
uint64_t pool_passes(const pool *p);

#endif
