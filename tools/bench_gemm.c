/* Quick benchmark of the projection kernels (src/cpu/gemm.c), one thread, every ISA variant this
 * CPU runs and every weight dtype (f32, f16, bf16, read as stored): prefill GEMM in GFLOP/s
 * against an FMA-chain peak compiled for the same ISA, decode GEMV in GB/s of weights against the
 * one-thread read ceiling of tools/ceiling.c measured in the same run (the weight buffers rotate
 * over several times the last-level cache). For q8_0 / q4_0 two decode lines: `gemv`, the widening kernel (gemm_rows
 * with one row), and `gemv_xq8`, the integer-dot one the backend's decode runs (x quantized once
 * per call, then VNNI / maddubs / sdot dots; the quantize is in the time).
 * Usage: bench_gemm [n k m [gemv_k gemv_m]] */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ceiling.h"
#include "cpu/gemm.h"
#include "cpu/interleave.h"
#include "half.h"
#include "quant.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#ifndef DATTN_GIT_REV
#define DATTN_GIT_REV "unknown"
#endif

typedef void (*gemm_fn)(const float *, int, int, int, dattn_dtype, const void *, int, float *, int,
                        float *);
typedef double (*peak_fn)(long);   /* runs the FMA chains, returns flops done */
typedef void (*quantize_fn)(const float *, int, void *);
typedef void (*gemv_xq8_fn)(const void *, int, dattn_dtype, const void *, int, float *);

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static volatile float sink;

/* Peak loops: enough independent accumulators to cover FMA latency x throughput (4 x 2 on Zen 4,
 * Intel similar); the result goes to `sink` so nothing is optimized away. */
#if defined(__x86_64__)
/* The base x86-64 ISA: SSE, no FMA. Separate multiply chains and add chains, so both kinds of
 * pipe stay busy; 7 + 7 chains fit the 16 xmm registers. */
static double peak_generic(long iters)
{
    __m128 a[7], p[7], s = _mm_set1_ps(1.0f - 1e-7f);
    for (int i = 0; i < 7; i++) {   /* distinct, so the chains cannot be merged */
        a[i] = _mm_set1_ps(1e-3f * i);
        p[i] = _mm_set1_ps(1.0f + 1e-3f * i);
    }
    for (long r = 0; r < iters; r++)
#pragma GCC unroll 7
        for (int i = 0; i < 7; i++) {
            p[i] = _mm_mul_ps(p[i], s);
            a[i] = _mm_add_ps(a[i], p[i]);
        }
    __m128 z = a[0];
    for (int i = 1; i < 7; i++)
        z = _mm_add_ps(z, _mm_add_ps(a[i], p[i]));
    sink = _mm_cvtss_f32(z);
    return 2.0 * 4 * 7 * iters;
}
#else
static double peak_generic(long iters)
{
    float a[16][4], s = 1.0f + 1e-7f, t = 1e-7f;
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 4; j++)
            a[i][j] = 1e-3f * (4 * i + j);   /* distinct, so the chains cannot be merged */
    for (long r = 0; r < iters; r++)
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++)
                a[i][j] = a[i][j] * s + t;
    float z = 0;
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 4; j++)
            z += a[i][j];
    sink = z;
    return 2.0 * 16 * 4 * iters;
}
#endif

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static double peak_avx2(long iters)
{
    __m256 a[12], s = _mm256_set1_ps(1.0f + 1e-7f), t = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++)
        a[i] = _mm256_set1_ps(1e-3f * i);
    for (long r = 0; r < iters; r++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++)
            a[i] = _mm256_fmadd_ps(a[i], s, t);
    __m256 z = a[0];
    for (int i = 1; i < 12; i++)
        z = _mm256_add_ps(z, a[i]);
    sink = _mm256_cvtss_f32(z);
    return 2.0 * 8 * 12 * iters;
}

__attribute__((target("avx512f,fma"))) static double peak_avx512(long iters)
{
    __m512 a[24], s = _mm512_set1_ps(1.0f + 1e-7f), t = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 24; i++)
        a[i] = _mm512_set1_ps(1e-3f * i);
    for (long r = 0; r < iters; r++)
#pragma GCC unroll 24
        for (int i = 0; i < 24; i++)
            a[i] = _mm512_fmadd_ps(a[i], s, t);
    __m512 z = a[0];
    for (int i = 1; i < 24; i++)
        z = _mm512_add_ps(z, a[i]);
    sink = _mm512_reduce_add_ps(z);
    return 2.0 * 16 * 24 * iters;
}
#endif

static double measure_peak(peak_fn f)
{
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now(), flops = f(20000000), dt = now() - t0;
        if (flops / dt > best)
            best = flops / dt;
    }
    return best / 1e9;
}

static float *alloc_floats(size_t n)
{
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes);
    if (!p) {
        fprintf(stderr, "bench_gemm: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

/* w [n] f32 in dtype dt: w itself for f32, else a new buffer. */
/* rows x k f32 weights in format dt, in place (each row goes through tmp first: a row in dt takes
 * no more bytes than in f32, so row r's bytes never reach row r + 1's floats). */
static void to_format(float *w, size_t rows, int k, dattn_dtype dt, float *tmp)
{
    size_t rb = quant_row_bytes(dt, k);
    for (size_t r = 0; r < rows; r++) {
        memcpy(tmp, w + r * (size_t)k, sizeof(float) * (size_t)k);
        quant_row_from_f32(dt, tmp, k, (uint8_t *)w + r * rb);
    }
}

static void fill(float *p, size_t n, unsigned *seed)
{
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1103515245u + 12345u;
        p[i] = (float)((*seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
}

int main(int argc, char **argv)
{
    int n = 2048, k = 1024, m = 1024, vk = 3072, vm = 3072;
    if (argc >= 4) {
        n = atoi(argv[1]);
        k = atoi(argv[2]);
        m = atoi(argv[3]);
    }
    if (argc >= 6) {
        vk = atoi(argv[4]);
        vm = atoi(argv[5]);
    }
    if (n < 1 || k < 1 || m < 1 || vk < 1 || vm < 1) {
        fprintf(stderr, "usage: bench_gemm [n k m [gemv_k gemv_m]] (all >= 1)\n");
        return 2;
    }
    struct {
        const char *name;
        int ok;
        gemm_fn gemm;
        peak_fn peak;
        quantize_fn quantize;
        gemv_xq8_fn gemv_xq8[3];   /* the ISA's, then faster forms it may run (VNNI, VNNI + VBMI),
                                      or NULL */
        const char *xq8_names[3];
    } isa[] = {
        {"generic", 1, gemm_rows_generic, peak_generic, xq8_quantize_generic,
         {gemv_xq8_generic, NULL}, {"generic"}},
#if defined(__x86_64__)
        {"avx2", __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"), gemm_rows_avx2,
         peak_avx2, xq8_quantize_avx2,
         {gemv_xq8_avx2, cpu_has_avxvnni() ? gemv_xq8_avxvnni : NULL, NULL},
         {"avx2", "avxvnni"}},
        {"avx512", __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"),
         gemm_rows_avx512, peak_avx512, xq8_quantize_avx512,
         {gemv_xq8_avx512,
          __builtin_cpu_supports("avx512vnni") ? gemv_xq8_avx512vnni : NULL,
          __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi")
              ? gemv_xq8_avx512vbmi : NULL},
         {"avx512", "avx512vnni", "avx512vbmi"}},
#endif
    };
    static const struct { dattn_dtype dt; const char *name; } types[] = {
        {DATTN_DTYPE_F32, "f32"}, {DATTN_DTYPE_F16, "f16"}, {DATTN_DTYPE_BF16, "bf16"},
        {DATTN_DTYPE_Q8_0, "q8_0"}, {DATTN_DTYPE_Q4_0, "q4_0"}};
    unsigned seed = 12345;
    printf("bench_gemm git=%s threads=1\n", DATTN_GIT_REV);

    /* Prefill GEMM: x [n][k], W [m][k] as stored, y [n][m]. */
    float *x = alloc_floats((size_t)n * k), *w = alloc_floats((size_t)m * k);
    float *y = alloc_floats((size_t)n * m), *scratch = alloc_floats(gemm_scratch_floats(n));
    fill(x, (size_t)n * k, &seed);
    fill(w, (size_t)m * k, &seed);
    float *tmp_row = alloc_floats((size_t)(k > vk ? k : vk));

    /* Decode GEMV: enough copies of the weights to cover >= 256 MiB, used in turn, so each call
     * streams them from DRAM rather than from the last-level cache. */
    size_t vfl = (size_t)vm * vk;
    int copies = (int)(256.0 * 1024 * 1024 / (vfl * 2.0)) + 1;
    float *vx = alloc_floats((size_t)vk), *vy = alloc_floats((size_t)vm);
    void *vxq = alloc_floats((xq8_bytes(vk) + 3) / 4);   /* x quantized (gemv_xq8) */
    float *vp = alloc_floats(vfl * copies);   /* f32 copies; 16-bit ones use its first half */
    fill(vx, (size_t)vk, &seed);
    fill(vp, vfl * copies, &seed);
    /* The streaming read ceiling every dattn benchmark prints (tools/ceiling.c: widest loads,
     * several times the LLC, huge pages). A plain summing loop here read 29-37 GB/s on a VM
     * where the f32 GEMV streamed 33-34. */
    double read_gbs = ceiling_read_gbps(1);
    printf("read ceiling (1 thread, tools/ceiling.c): %.1f GB/s\n", read_gbs);

    for (size_t v = 0; v < sizeof isa / sizeof isa[0]; v++) {
        if (!isa[v].ok) {
            printf("%s: not supported by this CPU, skipped\n", isa[v].name);
            continue;
        }
        double peak = measure_peak(isa[v].peak);
        for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
            dattn_dtype dt = types[ti].dt;
            if (!quant_row_bytes(dt, k) || !quant_row_bytes(dt, vk)) {
                printf("%s %s: k=%d / gemv_k=%d not a multiple of %d, skipped\n", isa[v].name,
                       types[ti].name, k, vk, QUANT_BLOCK);
                continue;
            }
            float *wt = alloc_floats((size_t)m * k);
            memcpy(wt, w, sizeof(float) * (size_t)m * k);
            to_format(wt, (size_t)m, k, dt, tmp_row);
            double best = 1e30;
            for (int rep = 0; rep < 5; rep++) {
                double t0 = now();
                isa[v].gemm(x, k, n, k, dt, wt, m, y, m, scratch);
                double el = now() - t0;
                if (el < best)
                    best = el;
            }
            free(wt);
            double gf = 2.0 * n * k * m / best / 1e9;
            printf("gemm %s %s n=%d k=%d m=%d: %.1f GFLOP/s = %.0f%% of FMA peak (%.1f GFLOP/s)\n",
                   isa[v].name, types[ti].name, n, k, m, gf, 100 * gf / peak, peak);
            printf("RESULT op=gemm isa=%s dtype=%s n=%d k=%d m=%d gflops=%.2f peak=%.2f ms=%.3f\n",
                   isa[v].name, types[ti].name, n, k, m, gf, peak, best * 1e3);

            /* The copies in this format, in place over the f32 buffer (its first part). */
            size_t wbytes = quant_row_bytes(dt, vk) * (size_t)vm;
            to_format(vp, (size_t)vm * copies, vk, dt, tmp_row);
            int reps = 4 * copies;
            isa[v].gemm(vx, vk, 1, vk, dt, vp, vm, vy, vm, NULL);   /* warm-up */
            double t0 = now();
            for (int r = 0; r < reps; r++)
                isa[v].gemm(vx, vk, 1, vk, dt, (uint8_t *)vp + wbytes * (size_t)(r % copies), vm,
                            vy, vm, NULL);
            double el = (now() - t0) / reps;
            double gbs = (wbytes + (vk + vm) * 4.0) / el / 1e9;
            printf("gemv %s %s k=%d m=%d: %.1f GB/s = %.0f%% of read (%.1f GB/s), %.3f ms\n",
                   isa[v].name, types[ti].name, vk, vm, gbs, 100 * gbs / read_gbs, read_gbs,
                   el * 1e3);
            printf("RESULT op=gemv isa=%s dtype=%s k=%d m=%d gbs=%.2f read_gbs=%.2f ms=%.4f\n",
                   isa[v].name, types[ti].name, vk, vm, gbs, read_gbs, el * 1e3);
            for (int g = 0; g < 3 && quant_is_block(dt); g++) {
                gemv_xq8_fn gemv = isa[v].gemv_xq8[g];
                if (!gemv)
                    continue;
                const char *name = isa[v].xq8_names[g];
                isa[v].quantize(vx, vk, vxq);   /* warm-up */
                gemv(vxq, vk, dt, vp, vm, vy);
                t0 = now();
                for (int r = 0; r < reps; r++) {
                    isa[v].quantize(vx, vk, vxq);
                    gemv(vxq, vk, dt, (uint8_t *)vp + wbytes * (size_t)(r % copies), vm, vy);
                }
                el = (now() - t0) / reps;
                gbs = (wbytes + (vk + vm) * 4.0) / el / 1e9;
                printf("gemv_xq8 %s %s k=%d m=%d: %.1f GB/s = %.0f%% of read (%.1f GB/s), %.3f "
                       "ms\n", name, types[ti].name, vk, vm, gbs, 100 * gbs / read_gbs, read_gbs,
                       el * 1e3);
                printf("RESULT op=gemv_xq8 isa=%s dtype=%s k=%d m=%d gbs=%.2f read_gbs=%.2f "
                       "ms=%.4f\n", name, types[ti].name, vk, vm, gbs, read_gbs, el * 1e3);
            }
#if defined(__x86_64__)
            if (quant_is_block(dt) && isa[v].gemv_xq8[2]) {
                /* The VBMI kernel over the interleaved layout the backend holds such weights in
                 * (src/cpu/interleave.h): the copies interleaved past the stored ones (block
                 * formats take under half of the f32 buffer). */
                uint8_t *il = (uint8_t *)vp + (wbytes * (size_t)copies + 63) / 64 * 64;
                for (int c = 0; c < copies; c++)
                    interleave_rows(dt, vk, (uint8_t *)vp + wbytes * (size_t)c, vm,
                                    il + wbytes * (size_t)c);
                isa[v].quantize(vx, vk, vxq);   /* warm-up */
                gemv_xq8_x4_avx512vbmi(vxq, vk, dt, il, vm, 0, vm, vy);
                t0 = now();
                for (int r = 0; r < reps; r++) {
                    isa[v].quantize(vx, vk, vxq);
                    gemv_xq8_x4_avx512vbmi(vxq, vk, dt, il + wbytes * (size_t)(r % copies), vm, 0,
                                           vm, vy);
                }
                el = (now() - t0) / reps;
                gbs = (wbytes + (vk + vm) * 4.0) / el / 1e9;
                printf("gemv_xq8 avx512vbmi_x4 %s k=%d m=%d: %.1f GB/s = %.0f%% of read (%.1f "
                       "GB/s), %.3f ms\n", types[ti].name, vk, vm, gbs, 100 * gbs / read_gbs,
                       read_gbs, el * 1e3);
                printf("RESULT op=gemv_xq8 isa=avx512vbmi_x4 dtype=%s k=%d m=%d gbs=%.2f "
                       "read_gbs=%.2f ms=%.4f\n", types[ti].name, vk, vm, gbs, read_gbs, el * 1e3);
            }
#endif
            fill(vp, vfl * copies, &seed);   /* f32 again for the next dtype */
        }
    }
    free(x);
    free(w);
    free(y);
    free(scratch);
    free(vx);
    free(vy);
    free(vxq);
    free(vp);
    free(tmp_row);
    return 0;
}
