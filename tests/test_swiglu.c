/* SwiGLU's gate (src/cpu/swiglu.h: g = silu(g) * u = g / (1 + e^-g) * u) for every variant this
 * CPU runs, against float64 from the definition:
 *   1. random g over magnitudes 2^-12 .. 2^7 (past the exp's clamps at -87 and 88 either way),
 *      both signs, exact zeros, and random u: |y - ref| <= 1e-6 |ref| + 1e-30 (the exp's
 *      relative error is ~2e-7; past g < -87 the true value is below 1e-35 and the kernel's
 *      is too);
 *   2. every length 1 .. 200 (the chunks of 64 and the vector tails), nothing written past n;
 *   3. a NaN or an infinity in g or u gives a non-finite value at that place.
 * Random data: the seed is printed; DATTN_TEST_SEED=<n> replays it. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu/swiglu.h"
#include "test_util.h"

typedef struct {
    const char *name;
    void (*swiglu)(float *g, const float *u, int n);
} variant;

static variant variants[3];
static int n_variants;

enum { MAX_N = 1024, GUARD = 16 };
#define SENTINEL 12345.0f

static float rnd(void)   /* uniform in [-1, 1) */
{
    return (float)(2.0 * tu_unif() - 1.0);
}

/* g: every eighth value 0, the rest a random sign times 2^[-12, 8) times [1, 2). */
static void make_g(float *g, int n)
{
    for (int j = 0; j < n; j++) {
        float m = ldexpf(1.0f + fabsf(rnd()), tu_int(-12, 7));
        g[j] = tu_int(0, 7) == 0 ? 0.0f : rnd() < 0 ? -m : m;
    }
}

static double reference(float g, float u)
{
    return (double)g / (1.0 + exp(-(double)g)) * (double)u;
}

/* Runs variant v on n values and checks them and the guard past them; returns the worst
 * relative error seen. */
static double check(const variant *v, const float *g, const float *u, int n)
{
    float y[MAX_N + GUARD];
    memcpy(y, g, sizeof(float) * (size_t)n);
    for (int j = n; j < n + GUARD; j++)
        y[j] = SENTINEL;
    v->swiglu(y, u, n);
    double worst = 0.0;
    for (int j = 0; j < n; j++) {
        double ref = reference(g[j], u[j]), err = fabs((double)y[j] - ref);
        if (!(err <= 1e-6 * fabs(ref) + 1e-30))
            fail_msg("%s n=%d j=%d: silu(%.9g) * %.9g = %.9g, float64 %.17g (seed %llu)",
                     v->name, n, j, (double)g[j], (double)u[j], (double)y[j], ref,
                     (unsigned long long)tu_seed);
        if (fabs(ref) > 1e-30 && err / fabs(ref) > worst)   /* where the relative bound rules */
            worst = err / fabs(ref);
    }
    for (int j = n; j < n + GUARD; j++)
        if (y[j] != SENTINEL)
            fail_msg("%s n=%d: wrote past the end at %d", v->name, n, j);
    return worst;
}

static void test_random(void **state)
{
    (void)state;
    tu_seed_case("random");
    static float g[MAX_N], u[MAX_N];
    for (int v = 0; v < n_variants; v++) {
        double worst = 0.0;
        for (int round = 0; round < 20; round++) {
            make_g(g, MAX_N);
            for (int j = 0; j < MAX_N; j++)
                u[j] = 4.0f * rnd();
            double w = check(&variants[v], g, u, MAX_N);
            worst = w > worst ? w : worst;
        }
        /* The clamps: around -87 / 88 and far past them. */
        const float edge[] = {-1000.0f, -150.0f, -100.0f, -88.5f, -88.0f, -87.5f, -87.0f, -86.9f,
                              -20.0f, -1e-30f, 1e-30f, 20.0f, 86.9f, 87.0f, 87.5f, 88.0f, 88.5f,
                              100.0f, 150.0f, 1000.0f, -0.0f};
        int n_edge = (int)(sizeof edge / sizeof edge[0]);
        for (int j = 0; j < n_edge; j++)
            u[j] = 1.0f + 0.5f * rnd();
        check(&variants[v], edge, u, n_edge);
        printf("test_swiglu: %s: worst relative error %.3g\n", variants[v].name, worst);
    }
}

static void test_lengths(void **state)
{
    (void)state;
    tu_seed_case("lengths");
    float g[MAX_N], u[MAX_N];
    for (int v = 0; v < n_variants; v++)
        for (int n = 1; n <= 200; n++) {
            make_g(g, n);
            for (int j = 0; j < n; j++)
                u[j] = rnd();
            check(&variants[v], g, u, n);
        }
}

static void test_nonfinite(void **state)
{
    (void)state;
    tu_seed_case("nonfinite");
    const float bad[] = {NAN, -NAN, INFINITY, -INFINITY};
    for (int v = 0; v < n_variants; v++)
        for (int b = 0; b < 4; b++)
            for (int in_u = 0; in_u < 2; in_u++) {
                enum { N = 100 };
                float g[N], u[N];
                make_g(g, N);
                for (int j = 0; j < N; j++)
                    u[j] = 0.5f + fabsf(rnd());
                int at = tu_int(0, N - 1);
                (in_u ? u : g)[at] = bad[b];
                variants[v].swiglu(g, u, N);
                if (isfinite(g[at]))
                    fail_msg("%s: %s = %g at %d came out finite (%g)", variants[v].name,
                             in_u ? "u" : "g", (double)bad[b], at, (double)g[at]);
            }
}

int main(void)
{
    tu_init_seed("test_swiglu");

    variants[n_variants++] = (variant){"generic", swiglu_generic};
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        variants[n_variants++] = (variant){"avx2", swiglu_avx2};
    else
        printf("test_swiglu: avx2 not supported by this CPU, skipped\n");
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        variants[n_variants++] = (variant){"avx512", swiglu_avx512};
    else
        printf("test_swiglu: avx512 not supported by this CPU, skipped\n");
#endif

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_nonfinite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
