/* Projection kernels (src/cpu/gemm.h) against a float64 reference written from the definition
 * y[i][c] = sum_k x[i][k] W[c][k]: every ISA variant this CPU runs, odd sizes, panel sub-ranges,
 * strided x and y. Relative error ||y - ref|| / ||ref|| <= 1e-5; cells outside the written
 * range must keep their sentinel. DATTN_TEST_SEED replays a seed. */
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

typedef void (*gemm_fn)(const float *, int, int, int, const float *, int, float *, int, int, int);
typedef void (*gemv_fn)(const float *, int, const float *, int, float *, int, int);

typedef struct {
    const char *name;
    gemm_fn gemm;
    gemv_fn gemv;
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

/* One case: x [n][ldx], W [m][k], panels [p0, p1); checks gemm (and gemv when n == 1). */
static void check_case(int n, int k, int m, int ldx_pad, int ldy_pad, int p0, int p1)
{
    int ldx = k + ldx_pad, ldy = m + ldy_pad;
    float *x = malloc(sizeof(float) * ((size_t)n * ldx + 1));
    float *w = malloc(sizeof(float) * ((size_t)m * k + 1));
    float *packed = malloc(sizeof(float) * (gemm_packed_floats(m, k) + 1));
    float *y = malloc(sizeof(float) * ((size_t)n * ldy + GUARD));
    double *ref = malloc(sizeof(double) * ((size_t)n * m + 1));
    double *ref_abs = malloc(sizeof(double) * ((size_t)n * m + 1));
    assert_non_null(ref_abs);
    assert_non_null(x);
    assert_non_null(w);
    assert_non_null(packed);
    assert_non_null(y);
    assert_non_null(ref);
    for (size_t i = 0; i < (size_t)n * ldx; i++)
        x[i] = rnd();
    for (size_t i = 0; i < (size_t)m * k; i++)
        w[i] = rnd();
    gemm_pack(w, m, k, packed);
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
    int c_lo = p0 * GEMM_PANEL, c_hi = p1 * GEMM_PANEL < m ? p1 * GEMM_PANEL : m;

    for (int v = 0; v < n_variants; v++)
        for (int use_gemv = 0; use_gemv <= (n == 1); use_gemv++) {
            for (size_t i = 0; i < (size_t)n * ldy + GUARD; i++)
                y[i] = SENTINEL;
            if (use_gemv)
                variants[v].gemv(x, k, packed, m, y, p0, p1);
            else
                variants[v].gemm(x, ldx, n, k, packed, m, y, ldy, p0, p1);
            double err = 0, norm = 0;
            int bad_outside = 0;
            for (int i = 0; i < n; i++)
                for (int c = 0; c < ldy; c++) {
                    float got = y[(size_t)i * ldy + c];
                    if (c >= c_lo && c < c_hi) {
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
                bad_outside += y[i] != SENTINEL;
            double rel = norm > 0 ? sqrt(err / norm) : sqrt(err);
            if (!(rel <= 1e-5) || bad_outside) {
                print_error("%s %s n=%d k=%d m=%d ldx=%d ldy=%d panels [%d,%d): rel err %.3g, "
                            "%d cells written outside the range (seed %llu)\n",
                            variants[v].name, use_gemv ? "gemv" : "gemm", n, k, m, ldx, ldy, p0,
                            p1, rel, bad_outside, (unsigned long long)seed);
                fail();
            }
        }
    free(x);
    free(w);
    free(packed);
    free(y);
    free(ref);
    free(ref_abs);
}

static int n_panels(int m)
{
    return (m + GEMM_PANEL - 1) / GEMM_PANEL;
}

static void test_pack_layout(void **state)
{
    (void)state;
    int m = 19, k = 5;
    float w[19 * 5], packed[2 * 16 * 5];
    for (int i = 0; i < m * k; i++)
        w[i] = (float)i + 1;
    assert_int_equal(gemm_packed_floats(m, k), 2 * 16 * 5);
    gemm_pack(w, m, k, packed);
    for (int p = 0; p < 2; p++)
        for (int t = 0; t < k; t++)
            for (int j = 0; j < 16; j++) {
                int c = p * 16 + j;
                float want = c < m ? w[c * k + t] : 0.0f;
                assert_true(packed[(p * k + t) * 16 + j] == want);
            }
}

static void test_full_range_odd_sizes(void **state)
{
    (void)state;
    static const int ns[] = {1, 2, 3, 5, 13, 17, 49, 64, 100};
    static const int ks[] = {1, 3, 7, 16, 33, 255, 257, 300};
    static const int ms[] = {1, 7, 16, 17, 33, 40, 64};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof ks / sizeof ks[0]; b++)
            for (size_t c = 0; c < sizeof ms / sizeof ms[0]; c++)
                check_case(ns[a], ks[b], ms[c], 0, 0, 0, n_panels(ms[c]));
}

static void test_panel_subranges(void **state)
{
    (void)state;
    static const int ns[] = {1, 3, 17, 64};
    int k = 67, m = 83;   /* 6 panels, the last one 3 columns wide */
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (int p0 = 0; p0 < n_panels(m); p0++)
            for (int p1 = p0; p1 <= n_panels(m); p1++)
                check_case(ns[a], k, m, 0, 0, p0, p1);
}

static void test_strides(void **state)
{
    (void)state;
    check_case(17, 31, 45, 5, 3, 0, n_panels(45));
    check_case(64, 128, 64, 1, 16, 1, 3);
    check_case(3, 9, 20, 7, 11, 1, 2);
}

static void test_large(void **state)
{
    (void)state;
    /* Several KC slices and MC blocks; long sums. */
    check_case(130, 1030, 96, 0, 0, 0, n_panels(96));
    check_case(1, 3072, 100, 0, 0, 0, n_panels(100));
}

int main(void)
{
    const char *env = getenv("DATTN_TEST_SEED");
    seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    rng_state = seed;
    printf("test_gemm: seed %llu (DATTN_TEST_SEED=%llu replays it)\n", (unsigned long long)seed,
           (unsigned long long)seed);

    variants[n_variants++] = (variant){"generic", gemm_packed_generic, gemv_packed_generic};
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        variants[n_variants++] = (variant){"avx2", gemm_packed_avx2, gemv_packed_avx2};
    else
        printf("test_gemm: avx2 not supported by this CPU, skipped\n");
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        variants[n_variants++] = (variant){"avx512", gemm_packed_avx512, gemv_packed_avx512};
    else
        printf("test_gemm: avx512 not supported by this CPU, skipped\n");
#endif

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_layout),
        cmocka_unit_test(test_full_range_odd_sizes),
        cmocka_unit_test(test_panel_subranges),
        cmocka_unit_test(test_strides),
        cmocka_unit_test(test_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
