// Machine ceilings the benchmarks print their figures against (DESIGN §5, §8):
// streaming read bandwidth over a buffer far larger than the LLC, peak f32 FMA
// throughput per ISA variant, a cache flush for between timed steps, and small
// timing helpers. Tools only: nothing here prints.
#ifndef DATTN_TOOLS_CEILING_H
#define DATTN_TOOLS_CEILING_H

#include <stddef.h>

// Streaming read bandwidth in GB/s (1e9 bytes/s) with n_threads threads over
// max(512 MiB, 8 x LLC), page-touched first; best of several passes. 0 on failure.
double ceiling_read_gbps(int n_threads);

// Peak f32 FMA throughput in GFLOP/s (2 flops per FMA) with n_threads threads
// for isa "avx512", "avx2" or "generic"; best of several runs. 0 when the isa
// is unknown, not built for this host, or not supported by the CPU.
double ceiling_fma_gflops(int n_threads, const char *isa);

// Evicts the CPU caches: every online CPU's thread reads and writes its share of a
// 2 x LLC buffer (allocated once, kept). Call between timed steps.
void ceiling_flush_caches(void);

// Size of cpu0's last-level cache from sysfs; 32 MiB when it cannot be read.
size_t ceiling_llc_bytes(void);

// /proc/cpuinfo "model name", or "unknown". Static storage.
const char *ceiling_cpu_name(void);

// CLOCK_MONOTONIC in seconds.
double ceiling_now_seconds(void);

// Median of v[0..n); sorts v in place. 0 when n <= 0.
double ceiling_median(double *v, int n);

// Per-ISA kernels from ceiling_fma.c, compiled once per ISA with -DCPU_ISA=<isa>.
// fma_kernel runs iters loop trips of fma_flops_per_iter flops each and returns a
// value derived from the accumulators; read_kernel sums bytes (a multiple of 64)
// from p, 64-byte aligned, and returns the sum so the loads stay live.
#define CEILING_DECLARE_ISA(isa)                                                   \
    double ceiling_fma_kernel_##isa(long iters);                                   \
    extern const double ceiling_fma_flops_per_iter_##isa;                          \
    unsigned long long ceiling_read_kernel_##isa(const void *p, size_t bytes);

CEILING_DECLARE_ISA(generic)
#if defined(__x86_64__)   // the avx variants are built for x86-64 only (meson.build)
CEILING_DECLARE_ISA(avx2)
CEILING_DECLARE_ISA(avx512)
#endif

#endif
