/* Host allocations of the library go through here (DESIGN §3): one place to see them, to count
 * them and to make one fail (tests/test_alloc_fail.c), and to make a failed allocation a status
 * with a message instead of a crash. */
#ifndef DATTN_ALLOC_H
#define DATTN_ALLOC_H

#include <stddef.h>

/* NULL and a DATTN_E_NOMEM message naming `what` on failure. Memory is zeroed. */
void *dattn_alloc(size_t bytes, const char *what);
/* 64-byte aligned, zeroed; free with dattn_free_aligned. */
void *dattn_alloc_aligned(size_t bytes, const char *what);
/* A large zeroed block for an arena, 2 MiB aligned and backed by transparent huge pages where
 * the OS allows: decode streams hundreds of MB, and with 4 KiB pages the hardware prefetchers
 * stop at every page boundary. Free with dattn_free_aligned. */
void *dattn_alloc_arena(size_t bytes, const char *what);
void dattn_free(void *p);
void dattn_free_aligned(void *p);

/* Failure injection, for tests (internal: not in dattn.h, not exported from the shared library).
 * alloc_fail_at(n), n >= 1: the n-th call from now of dattn_alloc, dattn_alloc_aligned or
 * dattn_alloc_arena fails as a real one would (NULL and the DATTN_E_NOMEM message), once; the
 * calls after it succeed again. n = 0 turns a pending failure off. When off, an allocation costs
 * one relaxed atomic increment more. */
void alloc_fail_at(long n);
/* Calls of the three allocators since the process started (failed ones included). */
long alloc_count(void);

#endif
