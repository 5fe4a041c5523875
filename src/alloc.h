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

/* A region for the many blocks of one load that are freed about together (the CPU backend's
 * copies of a model's weights): address space reserved once, handed out front to back, backed by
 * transparent huge pages where the OS allows (Linux, 64-bit). A decode step streams every weight
 * once; in one region of 2 MiB pages it crosses a few dozen pages where 4 KiB blocks made one by
 * one cross thousands (on the test VM, decode 4-12% faster on q4_0, 2-5% on q8_0). Blocks are
 * never reused: dattn_region_close ends the handing out, and the region goes when it is closed
 * and each of its blocks has been released. */
typedef struct dattn_region dattn_region;
/* A new open region, or NULL where there is none to be had (then allocate blocks one by one). */
dattn_region *dattn_region_open(void);
/* 1 when a block of `bytes` fits into r (open, with address space left). */
int dattn_region_fits(const dattn_region *r, size_t bytes);
/* A zeroed 64-byte aligned block of r (dattn_region_fits first), or NULL with a DATTN_E_NOMEM
 * message naming `what`: a failure the allocation walk can inject, as with dattn_alloc. */
void *dattn_region_alloc(dattn_region *r, size_t bytes, const char *what);
/* No more blocks: memory past the last one is handed back (the huge page it ends in is split). */
void dattn_region_close(dattn_region *r);
/* One block of r is no longer used. */
void dattn_region_release(dattn_region *r);

/* Failure injection, for tests (internal: not in dattn.h, not exported from the shared library).
 * alloc_fail_at(n), n >= 1: the n-th call from now of dattn_alloc, dattn_alloc_aligned,
 * dattn_alloc_arena or dattn_region_alloc fails as a real one would (NULL and the DATTN_E_NOMEM
 * message), once; the calls after it succeed again. n = 0 turns a pending failure off. When off,
 * an allocation costs one relaxed atomic increment more. */
void alloc_fail_at(long n);
/* Calls of the four allocators since the process started (failed ones included). */
long alloc_count(void);

#endif
