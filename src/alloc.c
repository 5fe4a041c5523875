/* Host allocation wrappers (see alloc.h). */
#define _DEFAULT_SOURCE
#include "alloc.h"

#include <stdlib.h>
#include <string.h>

#include "status.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

void *dattn_alloc(size_t bytes, const char *what)
{
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p)
        dattn_fail(DATTN_E_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *dattn_alloc_aligned(size_t bytes, const char *what)
{
    void *p = NULL;
    size_t n = (bytes + 63) & ~(size_t)63;
    if (n < bytes || posix_memalign(&p, 64, n ? n : 64) != 0) {
        dattn_fail(DATTN_E_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
        return NULL;
    }
    memset(p, 0, n);
    return p;
}

void *dattn_alloc_arena(size_t bytes, const char *what)
{
    const size_t huge = (size_t)2 << 20;
    if (bytes < huge)
        return dattn_alloc_aligned(bytes, what);
    void *p = NULL;
    size_t n = (bytes + huge - 1) & ~(huge - 1);
    if (n < bytes || posix_memalign(&p, huge, n) != 0) {
        dattn_fail(DATTN_E_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
        return NULL;
    }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, n, MADV_HUGEPAGE);   /* a hint: without huge pages it still works */
#endif
    memset(p, 0, n);
    return p;
}

void dattn_free(void *p) { free(p); }
void dattn_free_aligned(void *p) { free(p); }
