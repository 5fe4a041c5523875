/* Tests for the platforms/ tuning tables and src/opencl/tuning.c: which row a
 * device gets (device beats family beats vendor beats default, case-insensitive), that every row
 * of the embedded table is valid, the split count against a float64 brute-force re-implementation
 * of flash-attention's num_splits_heuristic written here from its description, and the -D option
 * string. Random cases come from a printed seed; DATTN_TEST_SEED=<n> replays it. */
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

#include "tuning.h"

static uint64_t test_seed;
static uint64_t rng_state;

static uint64_t rng_next(void)   /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int rng_int(int lo, int hi) { return lo + (int)(rng_next() % (uint64_t)(hi - lo + 1)); }

/* ---- lookup on the real table ------------------------------------------------------------- */

static void expect_row(const char *vendor, const char *device, const char *want)
{
    const tuning_row *r = tuning_lookup(vendor, device);
    assert_non_null(r);
    if (strcmp(r->name, want) != 0)
        fail_msg("('%s', '%s') -> row '%s', expected '%s'", vendor ? vendor : "(null)",
                 device ? device : "(null)", r->name, want);
}

static void test_lookup_real_devices(void **state)
{
    (void)state;
    /* Strings as the drivers report them (CL_DEVICE_VENDOR, CL_DEVICE_NAME). */
    expect_row("NVIDIA Corporation", "NVIDIA H100 80GB HBM3", "nvidia-hopper");
    expect_row("NVIDIA Corporation", "NVIDIA H200", "nvidia-hopper");
    expect_row("NVIDIA Corporation", "NVIDIA A100-SXM4-40GB", "nvidia-ampere");
    expect_row("NVIDIA Corporation", "NVIDIA GeForce RTX 3090", "nvidia-ampere");
    expect_row("NVIDIA Corporation", "NVIDIA GeForce GTX 1080 Ti", "nvidia");
    expect_row("Advanced Micro Devices, Inc.", "gfx90a:sramecc+:xnack-", "amd-cdna");
    expect_row("Advanced Micro Devices, Inc.", "gfx1100", "amd-rdna3");
    expect_row("AMD", "AMD Radeon RX 7900 XTX (radeonsi, navi31, LLVM 15.0.7, DRM 3.54)",
               "amd-rdna3");
    expect_row("Advanced Micro Devices, Inc.", "gfx1030", "amd");
    expect_row("Intel(R) Corporation", "Intel(R) Arc(TM) A770 Graphics", "intel-arc");
    expect_row("Intel(R) Corporation", "Intel(R) UHD Graphics 630", "intel");
    expect_row("Intel(R) Corporation", "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", "intel-cpu");
    expect_row("ARM", "Mali-G78", "arm-mali");
    expect_row("QUALCOMM", "QUALCOMM Adreno(TM) 740", "qualcomm-adreno");
    /* PoCL reports the CPU's vendor, which the AMD and Intel rows also match. */
    expect_row("AuthenticAMD", "pthread-skylake-avx512-AMD EPYC", "pocl-cpu");
    expect_row("GenuineIntel", "cpu-haswell-Intel(R) Core(TM) i7-4790 CPU @ 3.60GHz", "pocl-cpu");
    expect_row("ARM", "cpu-cortex-a76-ARM Cortex-A76", "pocl-cpu");
    /* Case does not matter. */
    expect_row("nvidia corporation", "nvidia h100 pcie", "nvidia-hopper");
    expect_row("ADVANCED MICRO DEVICES, INC.", "GFX90A", "amd-cdna");
    expect_row("qualcomm", "qualcomm adreno(tm) 660", "qualcomm-adreno");
    expect_row("authenticamd", "PTHREAD-ZEN3", "pocl-cpu");
    /* Unknown devices and missing strings get the default row. */
    expect_row("Apple", "Apple M2", "default");
    expect_row(NULL, NULL, "default");
    expect_row("", "", "default");
    expect_row(NULL, "NVIDIA H100", "default");   /* a device row needs its vendor too */
}

/* ---- lookup precedence on a made-up table ------------------------------------------------- */

#define ROW(v, d, n) {v, d, n, 64, 32, 16, 32, 64, 4, 0, 16, 0}

static void expect_in(const tuning_row *rows, int n, const char *vendor, const char *device,
                      const char *want)
{
    const tuning_row *r = tuning_lookup_in(rows, n, vendor, device);
    if (!want) {
        if (r)
            fail_msg("('%s', '%s') -> '%s', expected no row", vendor, device, r->name);
        return;
    }
    if (!r || strcmp(r->name, want) != 0)
        fail_msg("('%s', '%s') -> '%s', expected '%s'", vendor, device, r ? r->name : "NULL", want);
}

static void test_lookup_precedence(void **state)
{
    (void)state;
    /* Least specific first, so that file order alone would pick the wrong row. */
    static const tuning_row rows[] = {
        ROW("*", "*", "default"),
        ROW("Acme", "*", "acme"),
        ROW("Acme", "Rocket", "acme-rocket"),
        ROW("Acme", "Rocket 9", "acme-rocket9-late"),   /* same level, later: never wins */
        ROW("Acme", "^Acme Rocket 9000$", "acme-rocket9000"),
        ROW("Acme|Roadrunner Inc", "Beep", "beep"),
        ROW("*", "^cpu-|Turbo$", "anchored"),
        ROW("Other", "Rocket", "other-rocket"),
    };
    int n = (int)(sizeof rows / sizeof rows[0]);
    assert_int_equal(tuning_row_level(&rows[0]), TUNING_LEVEL_DEFAULT);
    assert_int_equal(tuning_row_level(&rows[1]), TUNING_LEVEL_VENDOR);
    assert_int_equal(tuning_row_level(&rows[2]), TUNING_LEVEL_FAMILY);
    assert_int_equal(tuning_row_level(&rows[4]), TUNING_LEVEL_DEVICE);
    assert_int_equal(tuning_row_level(&rows[6]), TUNING_LEVEL_FAMILY);

    expect_in(rows, n, "Acme Corp", "Acme Rocket 9000", "acme-rocket9000");   /* device */
    expect_in(rows, n, "acme corp", "ACME ROCKET 9000", "acme-rocket9000");   /* any case */
    expect_in(rows, n, "Acme Corp", "Acme Rocket 9000 Ti", "acme-rocket");    /* not exact */
    expect_in(rows, n, "Acme Corp", "Acme Rocket 9", "acme-rocket");          /* first wins */
    expect_in(rows, n, "Acme Corp", "Acme Anvil", "acme");                    /* vendor */
    expect_in(rows, n, "Nobody", "Acme Rocket 9000", "default");              /* needs vendor */
    expect_in(rows, n, "Roadrunner Inc", "Beep Beep", "beep");                /* alternatives */
    expect_in(rows, n, "Roadrunner Inc", "Anvil", "default");
    expect_in(rows, n, "Nobody", "cpu-zen4", "anchored");                     /* prefix */
    expect_in(rows, n, "Nobody", "my-cpu-zen4", "default");
    expect_in(rows, n, "Nobody", "Hyper Turbo", "anchored");                  /* suffix */
    expect_in(rows, n, "Nobody", "Turbo Hyper", "default");
    expect_in(rows, n, "Other Ltd", "Rocket", "other-rocket");
    /* Without a default row an unmatched device gets nothing from tuning_lookup_in. */
    expect_in(rows + 1, n - 1, "Nobody", "Nothing", NULL);

    assert_true(tuning_match("*", NULL));
    assert_false(tuning_match("a", NULL));
    assert_true(tuning_match("^$", ""));
    assert_false(tuning_match("^abc$", "ab"));
    assert_false(tuning_match("abc$", "bc"));
    assert_true(tuning_match("x|BC$", "abc"));
    assert_false(tuning_match("||", "abc"));   /* empty alternatives match nothing */
}

/* ---- every row of the table is valid ------------------------------------------------------ */

static int pow2_in(int v, int lo, int hi) { return v >= lo && v <= hi && (v & (v - 1)) == 0; }

static void test_rows_valid(void **state)
{
    (void)state;
    assert_true(tuning_n_rows >= 13);
    int n_default = 0;
    for (int i = 0; i < tuning_n_rows; i++) {
        const tuning_row *r = &tuning_rows[i];
        assert_non_null(r->vendor);
        assert_non_null(r->device);
        assert_non_null(r->name);
        if (!(r->name[0] && strlen(r->name) < 64))
            fail_msg("row %d: name '%s' empty or too long for dattn_device_info.tuning", i,
                     r->name);
        if (!pow2_in(r->wg_decode, 16, 1024) || r->wg_per_cu < 1 || r->wg_per_cu > 64 ||
            !pow2_in(r->prefill_qt, 4, 256) || !pow2_in(r->prefill_kt, 16, 256) ||
            !pow2_in(r->gemv_wg, 16, 1024) || !pow2_in(r->gemv_rows, 1, 64) ||
            r->gemv_rows > r->gemv_wg)
            fail_msg("row '%s': a size is not a power of two in range", r->name);
        if (r->max_split < 1 || r->max_split > 256 || r->n_split < 0 || r->n_split > r->max_split)
            fail_msg("row '%s': n_split %d, max_split %d", r->name, r->n_split, r->max_split);
        for (int j = 0; j < i; j++) {
            if (strcmp(tuning_rows[j].name, r->name) == 0)
                fail_msg("rows %d and %d are both named '%s'", j, i, r->name);
            if (strcmp(tuning_rows[j].vendor, r->vendor) == 0 &&
                strcmp(tuning_rows[j].device, r->device) == 0)
                fail_msg("rows '%s' and '%s' have the same patterns", tuning_rows[j].name,
                         r->name);
        }
        if (tuning_row_level(r) == TUNING_LEVEL_DEFAULT)
            n_default++;
        /* Each row is the one chosen for some device: here, its own pattern text when that is
         * a plain substring (no alternatives or anchors) and the vendor is one too. */
        if (!strpbrk(r->vendor, "|^$*") && !strpbrk(r->device, "|^$")) {
            const char *dev = strcmp(r->device, "*") == 0 ? "zz unknown zz" : r->device;
            const tuning_row *got = tuning_lookup(r->vendor, dev);
            if (got != r)
                fail_msg("row '%s' is shadowed by '%s' for ('%s', '%s')", r->name, got->name,
                         r->vendor, dev);
        }
    }
    assert_int_equal(n_default, 1);
}

/* ---- split heuristic ---------------------------------------------------------------------- */

/* flash-attention's num_splits_heuristic, in float64, brute force: b work-groups per split,
 * C resident work-groups, T KV tiles, M the cap. `tie` widens the 85% test: 0 is the rule as
 * flash-attention writes it; 1e-13 makes an exact tie (eff(s) = 0.85 max as rationals, which
 * float rounding may put on either side) count as reached, as tuning.c's exact arithmetic does.
 * A case that is not a tie is far from one: eff(s) - 0.85 eff(s') = (b/C) (100 s k' - 85 s' k) /
 * (100 k k') with k = ceil(b s/C) <= 0.8 M + 1 (b < 0.8 C here), so with C <= 1024 and M <= 256
 * its size is at least 1 / (1024 * 100 * 206^2) > 2e-10, against float64 errors near 1e-16. */
static int ref_splits_tie(int b, int T, int C, int M, double tie)
{
    if (T <= 1 || b <= 0 || C <= 0)
        return 1;
    if ((double)b >= 0.8 * (double)C)
        return 1;
    int m = M;
    if (m > C)
        m = C;
    if (m > T)
        m = T;
    double eff[1025] = {0};
    int eligible[1025] = {0};
    double best = 0.0;
    for (int s = 1; s <= m; s++) {
        eligible[s] = s == 1 || (T + s - 1) / s != (T + s - 2) / (s - 1);
        if (!eligible[s])
            continue;
        double waves = (double)b * s / (double)C;
        eff[s] = waves / ceil(waves);
        if (eff[s] > best)
            best = eff[s];
    }
    for (int s = 1; s <= m; s++)
        if (eligible[s] && eff[s] >= 0.85 * best - tie)
            return s;
    return 1;
}

static long n_checked, n_ties;   /* cases, and those where the exact tie rule decided */

static int ref_splits(int b, int T, int C, int M)
{
    int want = ref_splits_tie(b, T, C, M, 1e-13);
    n_checked++;
    if (want != ref_splits_tie(b, T, C, M, 0.0))
        n_ties++;
    return want;
}

/* Every split gets at least one tile: with per = ceil(T/s), (s-1)*per < T. */
static void check_nonempty(int s, int T)
{
    if (T < 1)
        return;
    int per = (T + s - 1) / s;
    if ((long long)(s - 1) * per >= T)
        fail_msg("%d splits of %d tiles (%d each) leave the last split empty", s, T, per);
}

static void check_auto(int b, int T, int C, int M)
{
    tuning_row row = ROW("*", "*", "t");
    row.max_split = M;
    int got = tuning_splits(&row, b, T, C);
    int want = ref_splits(b, T, C, M);
    if (got != want)
        fail_msg("seed %llu: splits(b=%d, T=%d, C=%d, max=%d) = %d, reference %d",
                 (unsigned long long)test_seed, b, T, C, M, got, want);
    if (got < 1 || got > M || got > (T > 1 ? T : 1) || (got > 1 && got > C))
        fail_msg("splits(b=%d, T=%d, C=%d, max=%d) = %d out of bounds", b, T, C, M, got);
    check_nonempty(got, T);
}

static void test_splits_grid(void **state)
{
    (void)state;
    static const int caps[] = {1, 16, 64, 128};
    for (size_t k = 0; k < sizeof caps / sizeof caps[0]; k++)
        for (int b = 1; b <= 40; b++)
            for (int T = 1; T <= 72; T++)
                for (int C = 1; C <= 140; C++)
                    check_auto(b, T, C, caps[k]);
    printf("test_splits_grid: %ld cases, %ld exact ties\n", n_checked, n_ties);
    n_checked = n_ties = 0;
}

static void test_splits_random(void **state)
{
    (void)state;
    /* Real compute-unit counts (2x for two resident work-groups), long contexts. */
    static const int cus[] = {2, 4, 8, 12, 16, 20, 28, 32, 40, 46, 48, 60, 64, 80, 84, 96, 104,
                              108, 110, 114, 120, 128, 132, 144, 208, 216, 220, 228, 264, 304};
    for (int i = 0; i < 200000; i++) {
        int b = rng_int(1, 300);
        int T = rng_int(1, 4096);
        int C = rng_int(0, 3) ? cus[rng_int(0, (int)(sizeof cus / sizeof cus[0]) - 1)]
                              : rng_int(1, 1024);
        int M = rng_int(1, 256);
        check_auto(b, T, C, M);
    }
    printf("test_splits_random: %ld cases, %ld exact ties\n", n_checked, n_ties);
    n_checked = n_ties = 0;
}

static void test_splits_examples(void **state)
{
    (void)state;
    tuning_row row = ROW("*", "*", "t");
    row.max_split = 128;
    /* flash-attention's own example: 48 heads on 108 SMs -> 2 splits (efficiency 0.89). */
    assert_int_equal(tuning_splits(&row, 48, 1000, 108), 2);
    /* Enough work to fill the device: no split. */
    assert_int_equal(tuning_splits(&row, 100, 1000, 108), 1);
    /* One tile or bad arguments: 1. */
    assert_int_equal(tuning_splits(&row, 1, 1, 132), 1);
    assert_int_equal(tuning_splits(&row, 0, 100, 132), 1);
    assert_int_equal(tuning_splits(&row, 8, 100, 0), 1);
    assert_int_equal(tuning_splits(NULL, 8, 100, 132), 1);
    /* 8 KV heads on an H100 (132 SMs), long context: many splits, one wave. */
    int s = tuning_splits(&row, 8, 2048, 132);
    assert_true(s > 1 && s <= 16);
    assert_true(8 * s <= 132);

    /* A fixed count overrides the heuristic, bounded by max_split and by the tiles. */
    row.n_split = 12;
    row.max_split = 16;
    assert_int_equal(tuning_splits(&row, 1000, 1000, 4), 12);   /* even on a full device */
    assert_int_equal(tuning_splits(&row, 8, 5, 132), 5);
    assert_int_equal(tuning_splits(&row, 8, 64, 132), 11);      /* 12 x 6 tiles: last empty */
    row.max_split = 16;
    for (int n = 1; n <= 16; n++) {
        row.n_split = n;
        for (int T = 1; T <= 300; T++) {
            int got = tuning_splits(&row, 8, T, 132);
            assert_true(got >= 1 && got <= n && got <= T);
            check_nonempty(got, T);
            /* the same tiles per split as n splits would have */
            int m = n < T ? n : T;
            assert_int_equal((T + got - 1) / got, (T + m - 1) / m);
        }
    }
}

/* ---- build options ------------------------------------------------------------------------ */

/* ---- the decode launch on the GPUs the table is for ----------------------------------------
 *
 * The S2 decode step (12 heads, 4 KV heads, head_dim 128, f16 cache) as tuning_decode_plan lays it
 * out for an H100, an H200, one MI250 die and an Arc A770, from their rows and what their drivers
 * report (compute units: SMs, CUs, EUs; local memory; work-group limit), at 4K, 16K and 64K. */
typedef struct gpu {
    const char *label, *vendor, *device;
    int compute_units, warp;
    size_t local_mem, max_wg;
} gpu;

static void test_decode_launch(void **state)
{
    (void)state;
    static const gpu gpus[] = {
        {"H100", "NVIDIA Corporation", "NVIDIA H100 80GB HBM3", 132, 32, 49152, 1024},
        {"H200", "NVIDIA Corporation", "NVIDIA H200", 132, 32, 49152, 1024},
        {"MI250 (one die)", "Advanced Micro Devices, Inc.", "gfx90a:sramecc+:xnack-", 104, 64, 65536, 1024},
        {"Arc A770", "Intel(R) Corporation", "Intel(R) Arc(TM) A770 Graphics", 512, 16, 65536, 1024},
    };
    static const long long ctxs[] = {4096, 16384, 65536};
    const int kv_heads = 4, group = 3, d = 128;
    for (size_t i = 0; i < sizeof gpus / sizeof *gpus; i++)
        for (size_t k = 0; k < sizeof ctxs / sizeof *ctxs; k++) {
            const gpu *g = &gpus[i];
            const tuning_row *row = tuning_lookup(g->vendor, g->device);
            tuning_decode p;
            assert_int_equal(tuning_decode_plan(row, 1, d, group, kv_heads, ctxs[k],
                                                g->compute_units, g->local_mem, g->max_wg, &p), 0);
            long long resident = (long long)g->compute_units * row->wg_per_cu;
            double per_cu = (double)p.groups / g->compute_units;
            double waves = (double)p.groups / (double)resident;
            printf("  %-16s ctx %6lld (%s): wg %d, tile %d keys, %d splits of %d pages x %d "
                   "head blocks = %d work-groups, %.1f a compute unit (%.2f of its %d resident), "
                   "%.1f warps/waves, %d B local\n", g->label, ctxs[k], row->name, p.wg, p.tile_keys,
                   p.n_split, p.split_pages, kv_heads * group / p.heads, p.groups, per_cu, waves,
                   row->wg_per_cu, per_cu * p.wg / g->warp, p.local_bytes);
            /* the kernel's sizes: a power of two, whole pages per tile, local memory that fits */
            assert_true(p.wg >= 16 && p.wg <= (int)g->max_wg && (p.wg & (p.wg - 1)) == 0);
            /* the whole group a work-group, unless splits of one tile each cannot fill the
             * device with those: then one query head a work-group */
            long long full_blocks = (long long)kv_heads * p.n_tiles;
            assert_int_equal(p.heads, 5 * full_blocks < 4 * resident ? 1 : 3);
            assert_int_equal(p.tile_keys % 32, 0);
            assert_true((size_t)p.local_bytes <= g->local_mem);
            /* every page of the context in one split, no split empty, whole tiles per split */
            long long pages = (ctxs[k] + 31) / 32;
            assert_int_equal(p.split_pages % (p.tile_keys / 32), 0);
            assert_true((long long)p.n_split * p.split_pages >= pages);
            assert_true((long long)(p.n_split - 1) * p.split_pages < pages);
            assert_true(p.n_split <= row->max_split);
            assert_int_equal(p.groups, p.n_split * kv_heads * group / p.heads);
            /* at 16K at least half the work-groups the device holds at once (the head blocks
             * split where the whole group would not fill it; 0.24 of an H100 before); at 64K the
             * device is full: at least 80% of them, and two or more a compute unit where a
             * compute unit holds several */
            if (ctxs[k] == 16384)
                assert_true(waves >= 0.5);
            if (ctxs[k] == 65536) {
                assert_true(waves >= 0.8);
                if (row->wg_per_cu >= 2)
                    assert_true(per_cu >= 2.0);
            }
        }
}

static int reset_rng(void **state)
{
    (void)state;
    rng_state = test_seed;
    return 0;
}

int main(void)
{
    const char *env = getenv("DATTN_TEST_SEED");
    if (env && *env) {
        test_seed = strtoull(env, NULL, 0);
    } else {
        struct timespec ts;
        timespec_get(&ts, TIME_UTC);
        test_seed = ((uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec) & 0xffffffffull;
    }
    printf("test_tuning: seed %llu (DATTN_TEST_SEED=%llu replays it)\n",
           (unsigned long long)test_seed, (unsigned long long)test_seed);
    fflush(stdout);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_real_devices),
        cmocka_unit_test(test_lookup_precedence),
        cmocka_unit_test(test_rows_valid),
        cmocka_unit_test(test_splits_grid),
        cmocka_unit_test_setup(test_splits_random, reset_rng),
        cmocka_unit_test(test_splits_examples),
        cmocka_unit_test(test_decode_launch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
