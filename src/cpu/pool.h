/* A persistent thread pool: threads are made once per backend and run fork-join passes
 * (pool_run) on the prefill/decode path without creating anything. */
#ifndef DATTN_POOL_H
#define DATTN_POOL_H

#include <stdint.h>

#include "dattn.h"

typedef struct pool pool;
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
