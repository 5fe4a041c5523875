/* Host allocation wrappers (see alloc.h). */
#define _POSIX_C_SOURCE 200809L
#include "alloc.h"

#include <stdlib.h>
#include <string.h>

#include "status.h"

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

void dattn_free(void *p) { free(p); }
void dattn_free_aligned(void *p) { free(p); }
