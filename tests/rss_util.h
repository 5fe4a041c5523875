/* The process's resident bytes, from /proc/self/statm (Linux), for the tests that hold memory
 * figures against what the process really holds. Include after a feature macro that declares
 * sysconf (_DEFAULT_SOURCE or _POSIX_C_SOURCE). Header-only. */
#ifndef DATTN_TESTS_RSS_UTIL_H
#define DATTN_TESTS_RSS_UTIL_H

#include <stdio.h>
#include <unistd.h>

/* Resident bytes of this process, or -1 where /proc/self/statm cannot be read. */
static inline long long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long long size, resident;
    int ok = f && fscanf(f, "%lld %lld", &size, &resident) == 2;
    if (f)
        fclose(f);
    return ok ? resident * (long long)sysconf(_SC_PAGESIZE) : -1;
}

#endif
