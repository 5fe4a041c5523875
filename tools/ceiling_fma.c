// Per-ISA inner loops for tools/ceiling.c: back-to-back independent f32 FMA
// chains (peak GFLOP/s) and a wide streaming read (GB/s). Compiled once per ISA:
// -DCPU_ISA=generic (no flags), avx2 (-mavx2 -mfma), avx512 (-mavx512f -mavx512vl
// -mavx2 -mfma); each build defines the _<isa> symbols declared in ceiling.h.
#include "ceiling.h"

#include <stddef.h>

#ifndef CPU_ISA
#error "define CPU_ISA (generic, avx2 or avx512)"
#endif

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

#define ISA_generic 1
#define ISA_avx2 2
#define ISA_avx512 3
#define ISA CAT(ISA_, CPU_ISA)

// NACC independent chains: enough to cover FMA latency x issue width (4 x 2 on
// Zen 4 / Intel), yet with the two constants still within the register file
// (16 ymm regs for avx2, 32 zmm for avx512) so nothing spills.
#if ISA == ISA_avx512
#ifndef __AVX512F__
#error "CPU_ISA=avx512 needs -mavx512f -mavx512vl -mavx2 -mfma"
#endif
#include <immintrin.h>
typedef __m512 vf;
#define NACC 16
#define VLANES 16
#define VSET1(x) _mm512_set1_ps(x)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define FLOPS_PER_LANE_OP 2
#elif ISA == ISA_avx2
#if !defined(__AVX2__) || !defined(__FMA__)
#error "CPU_ISA=avx2 needs -mavx2 -mfma"
#endif
#include <immintrin.h>
typedef __m256 vf;
#define NACC 12
#define VLANES 8
#define VSET1(x) _mm256_set1_ps(x)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define FLOPS_PER_LANE_OP 2
#elif ISA == ISA_generic
// Baseline x86-64 has no FMA instruction and ISO C mode keeps mul and add apart,
// so this measures what portable code gets: a mul and an add, 2 flops per lane.
// The chain is mul then add (~6 cycles), so 14 chains, all 16 xmm regs in use.
typedef float vf __attribute__((vector_size(16)));
#define NACC 14
#define VLANES 4
#define VSET1(x) ((vf){(x), (x), (x), (x)})
#define VFMA(a, b, c) ((a) * (b) + (c))
#define FLOPS_PER_LANE_OP 2
#else
#error "unknown CPU_ISA (generic, avx2 or avx512)"
#endif

const double CAT(ceiling_fma_flops_per_iter_, CPU_ISA) = (double)NACC * VLANES * FLOPS_PER_LANE_OP;

double CAT(ceiling_fma_kernel_, CPU_ISA)(long iters)
{
    // acc = acc*a + b converges to b/(1-a) = 1: no overflow, no denormals. The
    // volatile reads keep the compiler from folding the constants.
    volatile float va = 0.9999f, vb = 0.0001f;
    vf a = VSET1(va), b = VSET1(vb);
    vf acc[NACC];
    for (int i = 0; i < NACC; i++)
        acc[i] = VSET1((float)i * 0.01f);
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 16
        for (int i = 0; i < NACC; i++)
            acc[i] = VFMA(acc[i], a, b);
    }
    union {
        vf v;
        float f[VLANES];
    } u;
    double sum = 0.0;
    for (int i = 0; i < NACC; i++) {
        u.v = acc[i];
        for (int l = 0; l < VLANES; l++)
            sum += u.f[l];
    }
    return sum;
}

// Read kernel: 8 independent integer accumulators of the widest vector, one
// load + add each per trip; integer adds have no latency chain worth noting and
// no FP edge cases. The returned sum keeps every load live.
#if ISA == ISA_avx512
#define RBYTES 64
#elif ISA == ISA_avx2
#define RBYTES 32
#else
#define RBYTES 16
#endif
typedef unsigned long long vu __attribute__((vector_size(RBYTES)));
#define RLANES (RBYTES / 8)

unsigned long long CAT(ceiling_read_kernel_, CPU_ISA)(const void *p, size_t bytes)
{
    const vu *v = __builtin_assume_aligned(p, 64);
    size_t n = bytes / RBYTES;
    vu s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, s4 = {0}, s5 = {0}, s6 = {0}, s7 = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 += v[i + 0];
        s1 += v[i + 1];
        s2 += v[i + 2];
        s3 += v[i + 3];
        s4 += v[i + 4];
        s5 += v[i + 5];
        s6 += v[i + 6];
        s7 += v[i + 7];
    }
    for (; i < n; i++)
        s0 += v[i];
    vu s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
    unsigned long long r = 0;
    for (int l = 0; l < RLANES; l++)
        r += s[l];
    return r;
}
