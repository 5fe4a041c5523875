/* Host allocation wrappers (see alloc.h), with the failure injection of the allocation walk
 * (tests/test_alloc_fail.c), after Lua's ltests.c debug_realloc. */
#define _DEFAULT_SOURCE
#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

/* Calls of dattn_alloc, dattn_alloc_aligned and dattn_alloc_arena so far, and the number of the
 * call that is to fail (0: none). Relaxed atomics: the count is exact for calls made on one
 * thread, and a call from another thread never tears the counters. */
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
