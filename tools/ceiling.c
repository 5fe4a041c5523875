// Machine ceilings for the benchmarks (DESIGN §5, §8): streaming read bandwidth,
// peak f32 FMA throughput per ISA, a cache flush, LLC size and CPU name. The inner
// loops live in ceiling_fma.c (one build per ISA); this file picks one, runs it on
// plain pthreads (nothing pinned) and times it. Nothing here prints.
#define _GNU_SOURCE // pthread_barrier, madvise(MADV_HUGEPAGE)
#include "ceiling.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)
#define MAX_THREADS 1024
#define READ_PASSES 10 // timed passes after one warm-up; best one counts
#define FMA_RUNS 10    // timed runs after one warm-up; best one counts
#define FMA_RUN_S 0.03 // target seconds per FMA run

double ceiling_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double ceiling_median(double *v, int n)
{
    if (n <= 0)
        return 0.0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// "32768K" / "1M" / "1024" -> bytes; 0 when unparsable.
static size_t parse_size(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s)
        return 0;
    switch (*end) {
    case 'K': case 'k': v <<= 10; break;
    case 'M': case 'm': v <<= 20; break;
    case 'G': case 'g': v <<= 30; break;
    default: break;
    }
    return (size_t)v;
}

static int read_line(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int ok = fgets(buf, (int)n, f) != NULL;
    fclose(f);
    return ok;
}

size_t ceiling_llc_bytes(void)
{
    // The highest cache level wins; among equal levels (split L1) the larger one.
    int best_level = 0;
    size_t best = 0;
    for (int i = 0; i < 16; i++) {
        char path[96], line[64];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        if (!read_line(path, line, sizeof line))
            continue;
        int level = atoi(line);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        if (!read_line(path, line, sizeof line))
            continue;
        size_t sz = parse_size(line);
        if (sz && (level > best_level || (level == best_level && sz > best))) {
            best_level = level;
            best = sz;
        }
    }
    return best ? best : 32 * MIB;
}

const char *ceiling_cpu_name(void)
{
    static char name[256];
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return "unknown";
    char line[512];
    name[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        char *p = strchr(line, ':');
        if (!p)
            continue;
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        p[strcspn(p, "\n")] = '\0';
        snprintf(name, sizeof name, "%s", p);
        break;
    }
    fclose(f);
    return name[0] ? name : "unknown";
}

// ---- threads ------------------------------------------------------------------
// Workers wait on `go` before touching the barrier, so a failed pthread_create can
// call the run off without leaving anyone stuck in pthread_barrier_wait.

typedef struct {
    atomic_int go; // 0 wait, 1 run, -1 abort
    pthread_barrier_t bar;
    int n_threads;
} team;

typedef struct {
    team *tm;
    int idx;
    void *ctx;
} worker_arg;

static int team_wait_go(team *tm)
{
    int g;
    while ((g = atomic_load(&tm->go)) == 0)
        sched_yield();
    return g > 0;
}

// Runs fn(arg) on n threads; 0 if any thread could not start (then none ran fn).
static int team_run(int n, void *(*fn)(void *), void *ctx)
{
    team tm;
    atomic_init(&tm.go, 0);
    tm.n_threads = n;
    if (pthread_barrier_init(&tm.bar, NULL, (unsigned)n) != 0)
        return 0;
    pthread_t th[MAX_THREADS];
    worker_arg args[MAX_THREADS];
    int started = 0;
    for (; started < n; started++) {
        args[started] = (worker_arg){&tm, started, ctx};
        if (pthread_create(&th[started], NULL, fn, &args[started]) != 0)
            break;
    }
    int ok = started == n;
    atomic_store(&tm.go, ok ? 1 : -1);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&tm.bar);
    return ok;
}

// ---- ISA selection ------------------------------------------------------------

typedef double (*fma_fn)(long);
typedef unsigned long long (*read_fn)(const void *, size_t);

typedef struct {
    const char *name;
    fma_fn fma;
    const double *flops_per_iter;
    read_fn read;
} isa_entry;

// Widest first, so the read ceiling uses the best supported loads.
static const isa_entry isas[] = {
#if defined(__x86_64__)   // the avx variants are built for x86-64 only (meson.build)
    {"avx512", ceiling_fma_kernel_avx512, &ceiling_fma_flops_per_iter_avx512,
     ceiling_read_kernel_avx512},
    {"avx2", ceiling_fma_kernel_avx2, &ceiling_fma_flops_per_iter_avx2, ceiling_read_kernel_avx2},
#endif
    {"generic", ceiling_fma_kernel_generic, &ceiling_fma_flops_per_iter_generic,
     ceiling_read_kernel_generic},
};
#define N_ISAS (sizeof isas / sizeof isas[0])

static int isa_supported(const char *name)
{
#if defined(__x86_64__)   // the avx variants are built for x86-64 only (meson.build)
    __builtin_cpu_init();
    // The avx512 build is compiled with -mavx512vl too, so it may use VL forms.
    if (strcmp(name, "avx512") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (strcmp(name, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return strcmp(name, "generic") == 0;
}

static const isa_entry *find_isa(const char *name)
{
    for (size_t i = 0; i < N_ISAS; i++)
        if (name && strcmp(isas[i].name, name) == 0)
            return isa_supported(name) ? &isas[i] : NULL;
    return NULL;
}

static const isa_entry *best_isa(void)
{
    for (size_t i = 0; i < N_ISAS; i++)
        if (isa_supported(isas[i].name))
            return &isas[i];
    return &isas[N_ISAS - 1];
}

// Keeps the kernels' results live across calls.
static volatile unsigned long long sink_u;
static volatile double sink_d;

// ---- read bandwidth -----------------------------------------------------------

typedef struct {
    unsigned char *buf;
    size_t bytes;
    read_fn read;
    double best_s;
    unsigned long long sum[MAX_THREADS];
} read_ctx;

static void slice(size_t bytes, int n, int i, size_t *off, size_t *len)
{
    size_t per = bytes / (size_t)n / 4096 * 4096;
    *off = per * (size_t)i;
    *len = i == n - 1 ? bytes - *off : per;
}

static void *read_worker(void *p)
{
    worker_arg *a = p;
    read_ctx *c = a->ctx;
    team *tm = a->tm;
    if (!team_wait_go(tm))
        return NULL;
    size_t off, len;
    slice(c->bytes, tm->n_threads, a->idx, &off, &len);
    // Each thread faults in its own slice: NUMA first-touch puts it near its reader. Distinct
    // contents per word: pages of one repeated byte can be merged by the host (KSM and the like)
    // into one physical page that then reads from cache; that gave 55-62 GB/s "ceilings" on a VM
    // whose DRAM delivers 33.
    uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(a->idx + 1);
    for (size_t i = 0; i + 8 <= len; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(c->buf + off + i, &x, 8);
    }
    unsigned long long sum = 0;
    for (int pass = 0; pass <= READ_PASSES; pass++) {
        double t0 = 0.0;
        pthread_barrier_wait(&tm->bar);
        if (a->idx == 0)
            t0 = ceiling_now_seconds();
        sum += c->read(c->buf + off, len);
        pthread_barrier_wait(&tm->bar);
        if (a->idx == 0 && pass > 0) { // pass 0 warms up TLB and clocks
            double dt = ceiling_now_seconds() - t0;
            if (dt < c->best_s)
                c->best_s = dt;
        }
    }
    c->sum[a->idx] = sum;
    return NULL;
}

double ceiling_read_gbps(int n_threads)
{
    if (n_threads <= 0 || n_threads > MAX_THREADS)
        return 0.0;
    size_t bytes = 8 * ceiling_llc_bytes();
    if (bytes < 512 * MIB)
        bytes = 512 * MIB;
    bytes = (bytes + 2 * MIB - 1) / (2 * MIB) * (2 * MIB);
    void *buf = NULL;
    if (posix_memalign(&buf, 2 * MIB, bytes) != 0)
        return 0.0;
#ifdef MADV_HUGEPAGE
    // Fewer TLB misses, as a large KV cache would get; harmless where THP is off.
    madvise(buf, bytes, MADV_HUGEPAGE);
#endif
    read_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        free(buf);
        return 0.0;
    }
    c->buf = buf;
    c->bytes = bytes;
    c->read = best_isa()->read;
    c->best_s = 1e30;
    int ok = team_run(n_threads, read_worker, c);
    unsigned long long sum = 0;
    for (int i = 0; i < n_threads; i++)
        sum += c->sum[i];
    sink_u = sum;
    double gbps = ok && c->best_s < 1e30 ? (double)bytes / c->best_s * 1e-9 : 0.0;
    free(c);
    free(buf);
    return gbps;
}

// ---- FMA peak -----------------------------------------------------------------

typedef struct {
    fma_fn fma;
    long iters;
    double best_s;
    double sum[MAX_THREADS];
} fma_ctx;

static void *fma_worker(void *p)
{
    worker_arg *a = p;
    fma_ctx *c = a->ctx;
    team *tm = a->tm;
    if (!team_wait_go(tm))
        return NULL;
    double sum = 0.0;
    for (int run = 0; run <= FMA_RUNS; run++) {
        double t0 = 0.0;
        pthread_barrier_wait(&tm->bar);
        if (a->idx == 0)
            t0 = ceiling_now_seconds();
        sum += c->fma(c->iters);
        pthread_barrier_wait(&tm->bar);
        if (a->idx == 0 && run > 0) { // run 0 lets the clock settle
            double dt = ceiling_now_seconds() - t0;
            if (dt < c->best_s)
                c->best_s = dt;
        }
    }
    c->sum[a->idx] = sum;
    return NULL;
}

double ceiling_fma_gflops(int n_threads, const char *isa)
{
    if (n_threads <= 0 || n_threads > MAX_THREADS)
        return 0.0;
    const isa_entry *e = find_isa(isa);
    if (!e)
        return 0.0;
    // Size a run to ~FMA_RUN_S on one thread: double until it takes >= 10 ms, then scale.
    long iters = 1 << 12;
    double dt;
    for (;;) {
        double t0 = ceiling_now_seconds();
        sink_d = e->fma(iters);
        dt = ceiling_now_seconds() - t0;
        if (dt >= 0.01 || iters > LONG_MAX / 4)   // long is 32 bits on armhf
            break;
        iters *= 2;
    }
    iters = (long)((double)iters * FMA_RUN_S / dt) + 1;
    fma_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return 0.0;
    c->fma = e->fma;
    c->iters = iters;
    c->best_s = 1e30;
    int ok = team_run(n_threads, fma_worker, c);
    double sum = 0.0;
    for (int i = 0; i < n_threads; i++)
        sum += c->sum[i];
    sink_d = sum;
    double gflops = ok && c->best_s < 1e30
                        ? (double)n_threads * (double)iters * *e->flops_per_iter / c->best_s * 1e-9
                        : 0.0;
    free(c);
    return gflops;
}

// ---- cache flush --------------------------------------------------------------

static unsigned long long *flush_buf; // [flush_words], 2 x LLC
static size_t flush_words;
static pthread_once_t flush_once = PTHREAD_ONCE_INIT;

static void flush_init(void)
{
    size_t bytes = 2 * ceiling_llc_bytes();
    void *p = NULL;
    if (posix_memalign(&p, 4096, bytes) != 0)
        return;
    memset(p, 0, bytes);
    flush_buf = p;
    flush_words = bytes / sizeof *flush_buf;
}

static void *flush_worker(void *p)
{
    worker_arg *a = p;
    team *tm = a->tm;
    if (!team_wait_go(tm))
        return NULL;
    size_t off, len;
    slice(flush_words * sizeof *flush_buf, tm->n_threads, a->idx, &off, &len);
    unsigned long long *w = flush_buf + off / sizeof *w;
    for (size_t i = 0; i < len / sizeof *w; i++)
        w[i] += 1; // read + write: dirty lines displace whatever was cached
    return NULL;
}

void ceiling_flush_caches(void)
{
    pthread_once(&flush_once, flush_init);
    if (!flush_buf)
        return;
    // One thread per online CPU, so each core's private L2 is displaced too, not
    // only the shared LLC.
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    if (n > 256)
        n = 256;
    if (!team_run((int)n, flush_worker, NULL)) {
        // Could not start the threads: flush from this one alone.
        for (size_t i = 0; i < flush_words; i++)
            flush_buf[i] += 1;
    }
}
