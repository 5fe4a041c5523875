/* Host allocation wrappers (see alloc.h), with the failure injection of the allocation walk
 * (tests/test_alloc_fail.c), after Lua's ltests.c debug_realloc. */
#define _DEFAULT_SOURCE
#include "alloc.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

/* Calls of dattn_alloc, dattn_alloc_aligned, dattn_alloc_arena and dattn_region_alloc so far,
 * and the number of the call that is to fail (0: none). Relaxed atomics: the count is exact for
 * calls made on one thread, and a call from another thread never tears the counters. */
static atomic_long n_calls;
static atomic_long fail_call;

void alloc_fail_at(long n)
{
    long now = atomic_load_explicit(&n_calls, memory_order_relaxed);
    atomic_store_explicit(&fail_call, n > 0 ? now + n : 0, memory_order_relaxed);
}

long alloc_count(void) { return atomic_load_explicit(&n_calls, memory_order_relaxed); }

/* Counts the call; 1 when it is the one to fail (which turns the injection off). */
static int injected_failure(void)
{
    long k = atomic_fetch_add_explicit(&n_calls, 1, memory_order_relaxed) + 1;
    long at = atomic_load_explicit(&fail_call, memory_order_relaxed);
    if (at == 0 || k != at)
        return 0;
    /* Only one caller wins the armed number, even if two threads race past it. */
    return atomic_compare_exchange_strong_explicit(&fail_call, &at, 0, memory_order_relaxed,
                                                   memory_order_relaxed);
}

static void *out_of_memory(size_t bytes, const char *what)
{
    dattn_fail(DATTN_E_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
    return NULL;
}

void *dattn_alloc(size_t bytes, const char *what)
{
    if (injected_failure())
        return out_of_memory(bytes, what);
    void *p = calloc(1, bytes ? bytes : 1);
    return p ? p : out_of_memory(bytes, what);
}

static void *aligned_zeroed(size_t bytes, size_t align, const char *what)
{
    void *p = NULL;
    size_t n = (bytes + align - 1) & ~(align - 1);
    if (n < bytes || posix_memalign(&p, align, n ? n : align) != 0)
        return out_of_memory(bytes, what);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (align > 64)
        madvise(p, n, MADV_HUGEPAGE);   /* a hint: without huge pages it still works */
#endif
    memset(p, 0, n);
    return p;
}

void *dattn_alloc_aligned(size_t bytes, const char *what)
{
    if (injected_failure())
        return out_of_memory(bytes, what);
    return aligned_zeroed(bytes, 64, what);
}

void *dattn_alloc_arena(size_t bytes, const char *what)
{
    if (injected_failure())
        return out_of_memory(bytes, what);
    const size_t huge = (size_t)2 << 20;
    return aligned_zeroed(bytes, bytes < huge ? 64 : huge, what);
}

void dattn_free(void *p) { free(p); }
void dattn_free_aligned(void *p) { free(p); }

/* ---- regions ------------------------------------------------------------------------------- */

#if defined(__linux__) && defined(MADV_HUGEPAGE) && UINTPTR_MAX > 0xFFFFFFFFu
enum { PAGE_4K = 4096 };
#define HUGE_PAGE ((size_t)2 << 20)
/* Address space only: made readable and writable 2 MiB at a time as blocks need it, so a
 * region costs memory (and commit charge) for what it holds, not for what it reserved. */
#define REGION_RESERVE ((size_t)64 << 30)

struct dattn_region {
    void *map;                 /* the reservation as mmap returned it, map_bytes long */
    size_t map_bytes;
    uint8_t *base;             /* its first 2 MiB boundary */
    size_t used;               /* bytes handed out from base */
    size_t writable;           /* bytes from base made readable and writable (2 MiB multiple) */
    long live;                 /* blocks not yet released */
    int open;
};

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

dattn_region *dattn_region_open(void)
{
    dattn_region *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->map_bytes = REGION_RESERVE + HUGE_PAGE;
    r->map = mmap(NULL, r->map_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                  -1, 0);
    if (r->map == MAP_FAILED) {
        free(r);
        return NULL;
    }
    r->base = (uint8_t *)round_up((uintptr_t)r->map, HUGE_PAGE);
    r->open = 1;
    return r;
}

int dattn_region_fits(const dattn_region *r, size_t bytes)
{
    size_t at = round_up(r->used, 64);
    return r->open && at <= REGION_RESERVE && bytes <= REGION_RESERVE - at;
}

void *dattn_region_alloc(dattn_region *r, size_t bytes, const char *what)
{
    if (injected_failure())
        return out_of_memory(bytes, what);
    size_t at = round_up(r->used, 64), end = round_up(at + (bytes ? bytes : 1), HUGE_PAGE);
    if (end > r->writable) {
        uint8_t *p = r->base + r->writable;
        if (mprotect(p, end - r->writable, PROT_READ | PROT_WRITE) != 0)
            return out_of_memory(bytes, what);
        madvise(p, end - r->writable, MADV_HUGEPAGE);   /* a hint, as for arenas */
        r->writable = end;
    }
    r->used = at + bytes;
    r->live++;
    return r->base + at;   /* zero: fresh pages, never handed out before */
}

static void region_destroy(dattn_region *r)
{
    munmap(r->map, r->map_bytes);
    free(r);
}

void dattn_region_close(dattn_region *r)
{
    if (!r)
        return;
    r->open = 0;
    /* The huge page the last block ends in was faulted whole: its 4 KiB pages past the block
     * go back (the kernel splits it), and the rest of the reservation stops being writable. */
    size_t keep = round_up(r->used, PAGE_4K);
    if (keep < r->writable) {
        madvise(r->base + keep, r->writable - keep, MADV_DONTNEED);
        mprotect(r->base + keep, r->writable - keep, PROT_NONE);
        r->writable = keep;
    }
    if (r->live == 0)
        region_destroy(r);
}

void dattn_region_release(dattn_region *r)
{
    if (--r->live == 0 && !r->open)
        region_destroy(r);
}
#else
/* No huge pages to gain, or too little address space to reserve: blocks one by one. */
dattn_region *dattn_region_open(void) { return NULL; }
int dattn_region_fits(const dattn_region *r, size_t bytes) { (void)r; (void)bytes; return 0; }
void *dattn_region_alloc(dattn_region *r, size_t bytes, const char *what)
{
    (void)r;
    return out_of_memory(bytes, what);
}
void dattn_region_close(dattn_region *r) { (void)r; }
void dattn_region_release(dattn_region *r) { (void)r; }
#endif
