/* Projection kernels (src/cpu/gemm.h) against a float64 reference written from the definition
 * y[i][c] = sum_k x[i][k] W[c][k]: every ISA variant this CPU runs, weights stored as F32, F16
 * and BF16 (subnormal and large values too) and as q8_0 / q4_0 blocks (random scales and integers
 * written here from the layout, decoded here: the values the kernels must read), odd sizes, row
 * sub-ranges, strided x and y; the block formats also held interleaved (src/cpu/interleave.h,
 * gemm_rows_x4), where n >= 2 must give gemm_rows' bits for the rows stored as usual.
 * Relative error ||y - ref|| / sum|x||w| <= 1e-5; cells outside the written range must keep
 * their sentinel. DATTN_TEST_SEED replays a seed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cpu/gemm.h"
#include "cpu/interleave.h"
#include "half.h"
#include "quant.h"

typedef void (*gemm_fn)(const float *, int, int, int, dattn_dtype, const void *, int, float *, int,
                        float *);

typedef void (*gemm_x4_fn)(const float *, int, int, int, dattn_dtype, const void *, int, int, int,
                           float *, int, float *);

typedef struct {
    const char *name;
    gemm_fn gemm;
    gemm_x4_fn gemm_x4;
} variant;

static variant variants[3];
static int n_variants;
static uint64_t seed;

#define SENTINEL 12345.0f
#define GUARD 32   /* sentinel floats after y, to catch writes past its end */

static uint64_t rng_state;

static float rnd(void)   /* uniform in [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

/* A weight value: mostly uniform in [-1, 1), sometimes tiny (f16 subnormals, bf16's small
 * exponents) or large, so every conversion path runs. */
static float weight_value(void)
{
    float u = rnd();
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    switch ((rng_state >> 33) % 16) {
    case 0:
        return u * 3e-6f;      /* f16 subnormal */
    case 1:
        return u * 3e4f;
    default:
        return u;
    }
}

static uint32_t rnd_bits(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 32);
}

/* Row r of W in format dt at ws, and its values in w: for the block formats, each block a random
 * f16 scale (sometimes tiny or large) and random integers over their whole range. */
static void make_row(dattn_dtype dt, int k, float *w, uint8_t *ws)
{
    if (!quant_is_block(dt)) {
        for (int t = 0; t < k; t++) {
            float v = weight_value();
            if (dt == DATTN_DTYPE_F32) {
                w[t] = v;
                memcpy(ws + 4 * (size_t)t, &v, 4);
            } else {
                uint16_t h = dt == DATTN_DTYPE_F16 ? f32_to_f16(v) : f32_to_bf16(v);
                w[t] = dt == DATTN_DTYPE_F16 ? f16_to_f32(h) : bf16_to_f32(h);
                memcpy(ws + 2 * (size_t)t, &h, 2);
            }
        }
        return;
    }
    size_t bb = dt == DATTN_DTYPE_Q8_0 ? 34 : 18;
    for (int b = 0; b < k / 32; b++) {
        uint8_t *blk = ws + (size_t)b * bb;
        uint16_t dh = f32_to_f16(weight_value() / 64.0f);
        memcpy(blk, &dh, 2);
        double d = f16_to_f32(dh);
        for (int j = 0; j < 32; j++) {
            if (dt == DATTN_DTYPE_Q8_0) {
                blk[2 + j] = (uint8_t)rnd_bits();
                w[b * 32 + j] = (float)(d * (int8_t)blk[2 + j]);
            } else if (j < 16) {
                blk[2 + j] = (uint8_t)rnd_bits();
                w[b * 32 + j] = (float)(d * ((blk[2 + j] & 15) - 8));
                w[b * 32 + j + 16] = (float)(d * ((blk[2 + j] >> 4) - 8));
            }
        }
    }
}

/* One case: x [n][ldx], W [m][k] stored in dtype dt (the reference uses the stored values, so the
 * only error is f32 accumulation), weight rows [r0, r1) computed into y [n][ldy]; every variant. */
static void check_case(int n, int k, int m, int ldx_pad, int ldy_pad, int r0, int r1,
                       dattn_dtype dt)
{
    int ldx = k + ldx_pad, ldy = m + ldy_pad;
    size_t rb = quant_row_bytes(dt, k);
    assert_true(rb > 0);
    float *x = malloc(sizeof(float) * ((size_t)n * ldx + 1));
    float *w = malloc(sizeof(float) * ((size_t)m * k + 1));       /* the stored values */
    uint8_t *ws = malloc(rb * (size_t)m + 4);                     /* as stored */
    float *y = malloc(sizeof(float) * ((size_t)n * ldy + GUARD));
    float *scratch = malloc(sizeof(float) * (gemm_scratch_floats(n) + 1));
    double *ref = malloc(sizeof(double) * ((size_t)n * m + 1));
    double *ref_abs = malloc(sizeof(double) * ((size_t)n * m + 1));
    assert_non_null(x);
    assert_non_null(w);
    assert_non_null(ws);
    assert_non_null(y);
    assert_non_null(scratch);
    assert_non_null(ref);
    assert_non_null(ref_abs);
    for (size_t i = 0; i < (size_t)n * ldx; i++)
        x[i] = rnd();
    for (int r = 0; r < m; r++)
        make_row(dt, k, w + (size_t)r * k, ws + (size_t)r * rb);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < m; c++) {
            double s = 0, sa = 0;
            for (int t = 0; t < k; t++) {
                double prod = (double)x[(size_t)i * ldx + t] * (double)w[(size_t)c * k + t];
                s += prod;
                sa += fabs(prod);
            }
            ref[(size_t)i * m + c] = s;
            ref_abs[(size_t)i * m + c] = sa;
        }

    uint8_t *il = NULL;   /* the block formats interleaved */
    float *y_il = malloc(sizeof(float) * ((size_t)n * ldy + GUARD));
    assert_non_null(y_il);
    if (quant_is_block(dt)) {
        il = malloc(rb * (size_t)m + 4);
        assert_non_null(il);
        interleave_rows(dt, k, ws, m, il);
    }
    for (int v = 0; v < n_variants; v++) {
        for (size_t i = 0; i < (size_t)n * ldy + GUARD; i++)
            y[i] = y_il[i] = SENTINEL;
        variants[v].gemm(x, ldx, n, k, dt, ws + (size_t)r0 * rb, r1 - r0, y + r0, ldy,
                         scratch);
        if (il) {
            variants[v].gemm_x4(x, ldx, n, k, dt, il, m, r0, r1, y_il + r0, ldy, scratch);
            int differ = 0;
            for (int i = 0; i < n; i++)
                differ += memcmp(y + (size_t)i * ldy + r0, y_il + (size_t)i * ldy + r0,
                                 sizeof(float) * (size_t)(r1 - r0)) != 0;
            if (n >= 2 && differ) {
                print_error("%s_x4 %s n=%d k=%d m=%d rows [%d,%d): %d rows of y differ from the "
                            "stored layout's (seed %llu)\n", variants[v].name, quant_name(dt), n,
                            k, m, r0, r1, differ, (unsigned long long)seed);
                fail();
            }
        }
        for (int pass = 0; pass < (il ? 2 : 1); pass++) {
            const float *yv = pass ? y_il : y;
            double err = 0, norm = 0;
            int bad_outside = 0;
            for (int i = 0; i < n; i++)
                for (int c = 0; c < ldy; c++) {
                    float got = yv[(size_t)i * ldy + c];
                    if (c >= r0 && c < r1) {
                        double d = got - ref[(size_t)i * m + c];
                        err += d * d;
                        /* Against sum |x||w|, the scale of f32 rounding: with a few outputs,
                         * cancellation can make |ref| tiny and any sum order look wrong. */
                        norm += ref_abs[(size_t)i * m + c] * ref_abs[(size_t)i * m + c];
                    } else if (got != SENTINEL) {
                        bad_outside++;
                    }
                }
            for (size_t i = (size_t)n * ldy; i < (size_t)n * ldy + GUARD; i++)
                bad_outside += yv[i] != SENTINEL;
            double rel = norm > 0 ? sqrt(err / norm) : sqrt(err);
            if (!(rel <= 1e-5) || bad_outside) {
                print_error("%s%s %s n=%d k=%d m=%d ldx=%d ldy=%d rows [%d,%d): rel err %.3g, %d "
                            "cells written outside the range (seed %llu)\n", variants[v].name,
                            pass ? "_x4" : "", quant_name(dt), n, k, m, ldx, ldy, r0, r1, rel,
                            bad_outside, (unsigned long long)seed);
                fail();
            }
        }
    }
    free(il);
    free(y_il);
    free(x);
    free(w);
    free(ws);
    free(y);
    free(scratch);
    free(ref);
    free(ref_abs);
}

static const dattn_dtype dtypes[] = {DATTN_DTYPE_F32, DATTN_DTYPE_F16, DATTN_DTYPE_BF16,
                                     DATTN_DTYPE_Q8_0, DATTN_DTYPE_Q4_0};
enum { N_DTYPES = sizeof dtypes / sizeof dtypes[0] };

/* k for format dt: as given, or the next multiple of a block for the block formats. */
static int k_for(dattn_dtype dt, int k)
{
    return quant_is_block(dt) ? (k + 31) / 32 * 32 : k;
}

static void test_full_range_odd_sizes(void **state)
{
    (void)state;
    static const int ns[] = {1, 2, 3, 5, 13, 17, 49, 64, 100};
    static const int ks[] = {1, 3, 7, 16, 33, 255, 257, 300};
    static const int ms[] = {1, 7, 16, 17, 33, 40, 64};
    for (size_t d = 0; d < N_DTYPES; d++)
        for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
            for (size_t b = 0; b < sizeof ks / sizeof ks[0]; b++)
                for (size_t c = 0; c < sizeof ms / sizeof ms[0]; c++)
                    check_case(ns[a], k_for(dtypes[d], ks[b]), ms[c], 0, 0, 0, ms[c], dtypes[d]);
}

static void test_row_subranges(void **state)
{
    (void)state;
    static const int ns[] = {1, 3, 17, 64};
    static const int bounds[] = {0, 1, 5, 16, 17, 40, 66, 83};
    int m = 83;
    for (size_t d = 0; d < N_DTYPES; d++)
        for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
            for (size_t i = 0; i < sizeof bounds / sizeof *bounds; i++)
                for (size_t j = i + 1; j < sizeof bounds / sizeof *bounds; j++)
                    for (int kk = 67; kk <= 300; kk += 233)   /* 300: a whole interleaved chunk */
                        check_case(ns[a], k_for(dtypes[d], kk), m, 0, 0, bounds[i], bounds[j],
                                   dtypes[d]);
}

static void test_strides(void **state)
{
    (void)state;
    for (size_t d = 0; d < N_DTYPES; d++) {
        check_case(17, k_for(dtypes[d], 31), 45, 5, 3, 0, 45, dtypes[d]);
        check_case(64, 128, 64, 1, 16, 16, 48, dtypes[d]);
        check_case(3, k_for(dtypes[d], 9), 20, 7, 11, 16, 20, dtypes[d]);
    }
}

static void test_large(void **state)
{
    (void)state;
    /* Several KC slices; long sums. */
    for (size_t d = 0; d < N_DTYPES; d++) {
        check_case(130, k_for(dtypes[d], 1030), 96, 0, 0, 0, 96, dtypes[d]);
        check_case(1, 3072, 100, 0, 0, 0, 100, dtypes[d]);
    }
}

int main(void)
{
    const char *env = getenv("DATTN_TEST_SEED");
    seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    rng_state = seed;
    printf("test_gemm: seed %llu (DATTN_TEST_SEED=%llu replays it)\n", (unsigned long long)seed,
           (unsigned long long)seed);

    variants[n_variants++] = (variant){"generic", gemm_rows_generic, gemm_rows_x4_generic};
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        variants[n_variants++] = (variant){"avx2", gemm_rows_avx2, gemm_rows_x4_avx2};
    else
        printf("test_gemm: avx2 not supported by this CPU, skipped\n");
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        variants[n_variants++] = (variant){"avx512", gemm_rows_avx512, gemm_rows_x4_avx512};
    else
        printf("test_gemm: avx512 not supported by this CPU, skipped\n");
#endif

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_range_odd_sizes),
        cmocka_unit_test(test_row_subranges),
        cmocka_unit_test(test_strides),
        cmocka_unit_test(test_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
