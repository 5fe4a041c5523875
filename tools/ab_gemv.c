/* The decode GEMV kernels of two builds in one process, matrix by matrix in turn
 * (tools/ab_gemv.sh builds it): build A's kernel objects renamed with the prefix ab_a_, build B's
 * as they are. On a shared VM separate runs of bench_gemm swing by 10-30% from minute to minute;
 * two kernels that take turns on the same weights, each matrix once per kernel per round and the
 * order flipped every round, see the same minute (an A/A run: ratios 0.99-1.02).
 *
 * For every kernel variant this CPU runs and every weight format: the decode GEMV the backend
 * calls (gemm_rows with one row for f32 / f16 / bf16, gemv_xq8 for q8_0 / q4_0, x quantized once
 * beforehand by each build's own xq8_quantize), over an odd number of copies of the weights that
 * together pass 512 MiB (or one copy: --l2), in 4 KiB pages as a mapped model file has them
 * (--huge: transparent huge pages). Lines: each round's GB/s, then
 *   ab=gemv isa= dtype= k= m= a_gbs= b_gbs= b_over_a= read_gbs= max_rel_diff=
 * with b_over_a the median of the rounds' ratios (above 1: B faster) and max_rel_diff the
 * largest |y_A - y_B| over max |y_A| on one copy (0 when the kernels agree to the bit).
 * Usage: ab_gemv [--l2] [--huge] [--rounds R] [--isa NAME] [--dtype NAME] [k m] */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ceiling.h"
#include "cpu/gemm.h"
#include "quant.h"

typedef void (*gemm_fn)(const float *, int, int, int, dattn_dtype, const void *, int, float *, int,
                        float *);
typedef void (*quantize_fn)(const float *, int, void *);
typedef void (*gemv_xq8_fn)(const void *, int, dattn_dtype, const void *, int, float *);

/* Build A's copies of the kernels (gemm.h's names with the prefix). */
#define AB_A_DECLARE(isa)                                                                        \
    void ab_a_gemm_rows_##isa(const float *x, int ldx, int n, int k, dattn_dtype dt,             \
                              const void *w, int rows, float *y, int ldy, float *scratch);       \
    void ab_a_xq8_quantize_##isa(const float *x, int k, void *xq);                               \
    void ab_a_gemv_xq8_##isa(const void *xq, int k, dattn_dtype dt, const void *w, int rows,     \
                             float *y);
AB_A_DECLARE(generic)
#if defined(__x86_64__)
AB_A_DECLARE(avx2)
AB_A_DECLARE(avx512)
void ab_a_gemv_xq8_avxvnni(const void *, int, dattn_dtype, const void *, int, float *);
void ab_a_gemv_xq8_avx512vnni(const void *, int, dattn_dtype, const void *, int, float *);
void ab_a_gemv_xq8_avx512vbmi(const void *, int, dattn_dtype, const void *, int, float *);
#endif

/* One kernel variant in both builds: the 16/32-bit GEMV (gemm_rows) and the integer-dot one. */
typedef struct variant {
    const char *name;
    int runs_here;
    gemm_fn gemm[2];          /* [0] A, [1] B; NULL: this variant has no 16/32-bit GEMV */
    quantize_fn quantize[2];
    gemv_xq8_fn gemv_xq8[2];  /* NULL: no integer-dot GEMV */
} variant;

/* The decode GEMV of build b (0: A, 1: B) of one variant over one copy of the weights. */
typedef struct gemv_job {
    const variant *v;
    dattn_dtype dt;
    int k, m;
    const float *x;
    void *xq[2];       /* x quantized by each build (block formats) */
    float *y[2];
} gemv_job;

static void run_gemv(const gemv_job *j, int b, const uint8_t *w)
{
    if (quant_is_block(j->dt))
        j->v->gemv_xq8[b](j->xq[b], j->k, j->dt, w, j->m, j->y[b]);
    else
        j->v->gemm[b](j->x, j->k, 1, j->k, j->dt, w, j->m, j->y[b], j->m, NULL);
}

static void *alloc_or_die(size_t bytes, int huge)
{
    size_t align = (size_t)2 << 20;
    void *p = aligned_alloc(align, (bytes + align - 1) / align * align);
    if (!p) {
        fprintf(stderr, "ab_gemv: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
#ifdef MADV_HUGEPAGE
    madvise(p, (bytes + align - 1) / align * align, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
#else
    (void)huge;
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
    int k = 768, m = 6144, rounds = 5, l2 = 0, huge = 0, n_pos = 0;
    const char *only_isa = NULL, *only_dtype = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--l2"))
            l2 = 1;
        else if (!strcmp(argv[i], "--huge"))
            huge = 1;
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc)
            only_isa = argv[++i];
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc)
            only_dtype = argv[++i];
        else if (n_pos < 2 && argv[i][0] != '-')
            *(n_pos++ ? &m : &k) = atoi(argv[i]);
        else {
            fprintf(stderr, "usage: ab_gemv [--l2] [--huge] [--rounds R] [--isa NAME] "
                    "[--dtype NAME] [k m]\n");
            return 2;
        }
    }
    if (k < QUANT_BLOCK || k % QUANT_BLOCK || m < 1 || rounds < 1 || rounds > 99) {
        fprintf(stderr, "ab_gemv: k must be a positive multiple of %d, m >= 1, 1 <= rounds "
                "<= 99\n", QUANT_BLOCK);
        return 2;
    }
    variant vs[] = {
        {"generic", 1, {ab_a_gemm_rows_generic, gemm_rows_generic},
         {ab_a_xq8_quantize_generic, xq8_quantize_generic},
         {ab_a_gemv_xq8_generic, gemv_xq8_generic}},
#if defined(__x86_64__)
        {"avx2", __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"),
         {ab_a_gemm_rows_avx2, gemm_rows_avx2}, {ab_a_xq8_quantize_avx2, xq8_quantize_avx2},
         {ab_a_gemv_xq8_avx2, gemv_xq8_avx2}},
        {"avxvnni", __builtin_cpu_supports("fma") && cpu_has_avxvnni(), {NULL, NULL},
         {ab_a_xq8_quantize_avx2, xq8_quantize_avx2},
         {ab_a_gemv_xq8_avxvnni, gemv_xq8_avxvnni}},
        {"avx512", __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"),
         {ab_a_gemm_rows_avx512, gemm_rows_avx512},
         {ab_a_xq8_quantize_avx512, xq8_quantize_avx512},
         {ab_a_gemv_xq8_avx512, gemv_xq8_avx512}},
        {"avx512vnni", __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512vnni"),
         {NULL, NULL}, {ab_a_xq8_quantize_avx512, xq8_quantize_avx512},
         {ab_a_gemv_xq8_avx512vnni, gemv_xq8_avx512vnni}},
        {"avx512vbmi", __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512vnni") &&
                           __builtin_cpu_supports("avx512vbmi"),
         {NULL, NULL}, {ab_a_xq8_quantize_avx512, xq8_quantize_avx512},
         {ab_a_gemv_xq8_avx512vbmi, gemv_xq8_avx512vbmi}},
#endif
    };
    static const struct { dattn_dtype dt; const char *name; } types[] = {
        {DATTN_DTYPE_F32, "f32"}, {DATTN_DTYPE_F16, "f16"}, {DATTN_DTYPE_BF16, "bf16"},
        {DATTN_DTYPE_Q8_0, "q8_0"}, {DATTN_DTYPE_Q4_0, "q4_0"}};

    /* Copies of the weights: together past 512 MiB (the last-level cache many times over), odd
     * in number so that, the kernels taking turns copy by copy, each meets each copy once a
     * round; the f32 ones set the buffer. */
    size_t capacity = quant_row_bytes(DATTN_DTYPE_F32, k) * (size_t)m;
    if (!l2 && capacity < (size_t)512 << 20)
        capacity *= ((size_t)512 << 20) / capacity + 1;
    uint8_t *w = alloc_or_die(capacity, huge);
    float *x = alloc_or_die(sizeof(float) * (size_t)k, 0);
    float *row = alloc_or_die(sizeof(float) * (size_t)k, 0);
    gemv_job job = {.k = k, .m = m, .x = x};
    for (int b = 0; b < 2; b++) {
        job.xq[b] = alloc_or_die(xq8_bytes(k), 0);
        job.y[b] = alloc_or_die(sizeof(float) * (size_t)m, 0);
    }
    uint64_t seed = 0x5eed;
    for (int i = 0; i < k; i++)
        x[i] = uniform(&seed);
    double read_gbs = ceiling_read_gbps(1);
    printf("ab_gemv: k=%d m=%d, %s, %s pages, %d rounds; read ceiling (1 thread) %.1f GB/s\n",
           k, m, l2 ? "one copy (cache-resident)" : "copies over 512 MiB",
           huge ? "huge" : "4 KiB", rounds, read_gbs);

    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        job.dt = types[ti].dt;
        if (only_dtype && strcmp(only_dtype, types[ti].name))
            continue;
        size_t row_bytes = quant_row_bytes(job.dt, k), bytes = row_bytes * (size_t)m;
        int copies = l2 ? 1 : (int)(capacity / bytes - 1) | 1;
        for (size_t r = 0; r < (size_t)m * (size_t)copies; r++) {
            for (int i = 0; i < k; i++)
                row[i] = uniform(&seed);
            quant_row_from_f32(job.dt, row, k, w + r * row_bytes);
        }
        int block = quant_is_block(job.dt);
        /* Cache-resident: turns by call, many; from DRAM: two passes over the copies. */
        int turns = l2 ? 2000 : 2 * copies;
        for (size_t v = 0; v < sizeof vs / sizeof *vs; v++) {
            job.v = &vs[v];
            if (!vs[v].runs_here || (block ? !vs[v].gemv_xq8[0] : !vs[v].gemm[0]) ||
                (only_isa && strcmp(only_isa, vs[v].name)))
                continue;
            for (int b = 0; b < 2 && block; b++)
                vs[v].quantize[b](x, k, job.xq[b]);
            run_gemv(&job, 0, w);
            run_gemv(&job, 1, w);
            double ymax = 0, dmax = 0;
            for (int r = 0; r < m; r++) {
                double a = fabs((double)job.y[0][r]), d = fabs((double)job.y[0][r] - job.y[1][r]);
                ymax = a > ymax ? a : ymax;
                dmax = d > dmax ? d : dmax;
            }
            double ratio[99], t_all[2] = {0, 0};
            double per_kernel = (double)bytes * turns / 2;   /* bytes each kernel reads a round */
            for (int rd = 0; rd < rounds; rd++) {
                double t[2] = {0, 0};
                for (int s = 0; s < turns; s++) {
                    int b = (s + rd) & 1;   /* who goes first flips every round */
                    double t0 = ceiling_now_seconds();
                    run_gemv(&job, b, w + (size_t)(s % copies) * bytes);
                    t[b] += ceiling_now_seconds() - t0;
                }
                ratio[rd] = t[0] / t[1];
                t_all[0] += t[0];
                t_all[1] += t[1];
                printf("  %s %s round %d: a %.1f GB/s, b %.1f GB/s, b/a %.3f\n", vs[v].name,
                       types[ti].name, rd, per_kernel / t[0] * 1e-9, per_kernel / t[1] * 1e-9,
                       ratio[rd]);
            }
            double median = ceiling_median(ratio, rounds);
            printf("ab=gemv isa=%s dtype=%s k=%d m=%d a_gbs=%.2f b_gbs=%.2f b_over_a=%.3f "
                   "read_gbs=%.1f max_rel_diff=%.2g\n", vs[v].name, types[ti].name, k, m,
                   per_kernel * rounds / t_all[0] * 1e-9, per_kernel * rounds / t_all[1] * 1e-9,
                   median, read_gbs, ymax > 0 ? dmax / ymax : dmax);
            fflush(stdout);
        }
    }
    return 0;
}
