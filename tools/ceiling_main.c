// dattn-ceiling: prints this machine's ceilings (CPU, LLC, streaming read GB/s and
// f32 FMA GFLOP/s per ISA, with 1 and 2 threads) as measured by tools/ceiling.c,
// for checking the figures the benchmarks print against. One line per result.
#include "ceiling.h"

#include <stdio.h>

int main(void)
{
    static const char *isas[] = {"avx512", "avx2", "generic"};
    double t0 = ceiling_now_seconds();
    printf("cpu: %s\n", ceiling_cpu_name());
    printf("llc_bytes: %zu (%.1f MiB)\n", ceiling_llc_bytes(),
           (double)ceiling_llc_bytes() / (1 << 20));
    for (int n = 1; n <= 2; n++)
        printf("read threads=%d: %.1f GB/s\n", n, ceiling_read_gbps(n));
    for (int i = 0; i < 3; i++)
        for (int n = 1; n <= 2; n++) {
            double g = ceiling_fma_gflops(n, isas[i]);
            if (g > 0)
                printf("fma %s threads=%d: %.1f GFLOP/s\n", isas[i], n, g);
            else
                printf("fma %s threads=%d: unsupported\n", isas[i], n);
        }
    double t1 = ceiling_now_seconds();
    ceiling_flush_caches();
    double t2 = ceiling_now_seconds();
    ceiling_flush_caches();
    printf("flush: %.2f ms (first call %.2f ms)\n", (ceiling_now_seconds() - t2) * 1e3,
           (t2 - t1) * 1e3);
    printf("total: %.1f s\n", ceiling_now_seconds() - t0);
    return 0;
}
