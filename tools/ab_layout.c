/* ab_layout: the VBMI decode GEMV of q8_0 / q4_0 weights over rows stored one after another
 * against the same kernel over rows interleaved four by four (src/cpu/interleave.h), the layout
 * the CPU backend holds them in on such CPUs, in one process.
 *
 * Why: separate benchmark runs on a shared VM swing 10-30%; here the two layouts take turns
 * copy by copy over an odd number of weight copies that together pass 512 MiB (each call reads
 * a copy the other did not just read, from DRAM, in 4 KiB pages as a mapped file has them), and
 * who goes first flips every round, so both see the same minutes. Each round prints both GB/s;
 * the last line per format is
 *   ab=layout dtype=D k=K m=M stored_gbs=... interleaved_gbs=... ratio=... same_bits=0|1 read_gbs=...
 * (ratio: the median over rounds of stored time / interleaved time, above 1: interleaved
 * faster; same_bits: the two y agree to the bit, as they must). One thread.
 * Usage: ab_layout [--rounds R] [k m]   (k a multiple of 32; exit 77 without AVX512-VBMI) */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ceiling.h"
#include "cpu/gemm.h"
#include "cpu/interleave.h"
#include "quant.h"

static void *alloc_or_die(size_t bytes)
{
    size_t align = 4096;
    void *p = aligned_alloc(align, (bytes + align - 1) / align * align);
    if (!p) {
        fprintf(stderr, "ab_layout: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
#ifdef MADV_NOHUGEPAGE
    madvise(p, (bytes + align - 1) / align * align, MADV_NOHUGEPAGE);
#endif
    return p;
}

static float uniform(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

int main(int argc, char **argv)
{
    int k = 768, m = 6144, rounds = 5, n_pos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (n_pos < 2 && argv[i][0] != '-') {
            *(n_pos++ ? &m : &k) = atoi(argv[i]);
        } else {
            fprintf(stderr, "usage: ab_layout [--rounds R] [k m]\n");
            return 2;
        }
    }
    if (k < QUANT_BLOCK || k % QUANT_BLOCK || m < 1 || rounds < 1 || rounds > 99) {
        fprintf(stderr, "ab_layout: k must be a positive multiple of %d, m >= 1, 1 <= rounds "
                "<= 99\n", QUANT_BLOCK);
        return 2;
    }
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq") ||
        !__builtin_cpu_supports("avx512vnni") || !__builtin_cpu_supports("avx512vbmi")) {
        printf("ab_layout: this CPU has no AVX512-VBMI kernel, skipped\n");
        return 77;
    }
    static const struct { dattn_dtype dt; const char *name; } types[] = {
        {DATTN_DTYPE_Q8_0, "q8_0"}, {DATTN_DTYPE_Q4_0, "q4_0"}};
    size_t most = quant_row_bytes(DATTN_DTYPE_Q8_0, k) * (size_t)m;
    int max_copies = (int)(((size_t)512 << 20) / most) + 1;
    uint8_t *stored = alloc_or_die(most * (size_t)(max_copies + 2));
    uint8_t *inter = alloc_or_die(most * (size_t)(max_copies + 2));
    float *x = alloc_or_die(sizeof(float) * (size_t)k), *row = alloc_or_die(sizeof(float) * k);
    float *y[2] = {alloc_or_die(sizeof(float) * (size_t)m), alloc_or_die(sizeof(float) * m)};
    void *xq = alloc_or_die(xq8_bytes(k));
    uint64_t seed = 0x1a7e;
    for (int i = 0; i < k; i++)
        x[i] = uniform(&seed);
    xq8_quantize_avx512(x, k, xq);
    double read_gbs = ceiling_read_gbps(1);
    printf("ab_layout: k=%d m=%d, copies over 512 MiB, 4 KiB pages, %d rounds; read ceiling "
           "(1 thread) %.1f GB/s\n", k, m, rounds, read_gbs);

    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        dattn_dtype dt = types[ti].dt;
        size_t rb = quant_row_bytes(dt, k), bytes = rb * (size_t)m;
        int copies = (int)(((size_t)512 << 20) / bytes + 1) | 1;
        for (int r = 0; r < m; r++) {
            for (int i = 0; i < k; i++)
                row[i] = uniform(&seed);
            quant_row_from_f32(dt, row, k, stored + (size_t)r * rb);
        }
        interleave_rows(dt, k, stored, m, inter);
        for (int c = 1; c < copies; c++) {
            memcpy(stored + (size_t)c * bytes, stored, bytes);
            memcpy(inter + (size_t)c * bytes, inter, bytes);
        }
        gemv_xq8_avx512vbmi(xq, k, dt, stored, m, y[0]);
        gemv_xq8_x4_avx512vbmi(xq, k, dt, inter, m, 0, m, y[1]);
        int same = !memcmp(y[0], y[1], sizeof(float) * (size_t)m);
        double ratio[99], t_all[2] = {0, 0};
        for (int rd = 0; rd < rounds; rd++) {
            double t[2] = {0, 0};
            for (int s = 0; s < 2 * copies; s++) {
                int l = (s + rd) & 1;   /* who goes first flips every round */
                size_t off = (size_t)(s % copies) * bytes;
                double t0 = ceiling_now_seconds();
                if (l == 0)
                    gemv_xq8_avx512vbmi(xq, k, dt, stored + off, m, y[0]);
                else
                    gemv_xq8_x4_avx512vbmi(xq, k, dt, inter + off, m, 0, m, y[1]);
                t[l] += ceiling_now_seconds() - t0;
            }
            ratio[rd] = t[0] / t[1];
            t_all[0] += t[0];
            t_all[1] += t[1];
            printf("  %s round %d: stored %.1f GB/s, interleaved %.1f GB/s, ratio %.3f\n",
                   types[ti].name, rd, bytes * (double)copies / t[0] * 1e-9,
                   bytes * (double)copies / t[1] * 1e-9, ratio[rd]);
        }
        double total = bytes * (double)copies * rounds * 1e-9;
        printf("ab=layout dtype=%s k=%d m=%d stored_gbs=%.2f interleaved_gbs=%.2f ratio=%.3f "
               "same_bits=%d read_gbs=%.1f\n", types[ti].name, k, m, total / t_all[0],
               total / t_all[1], ceiling_median(ratio, rounds), same, read_gbs);
    }
    free(stored);
    free(inter);
    free(x);
    free(row);
    free(y[0]);
    free(y[1]);
    free(xq);
    return 0;
}
