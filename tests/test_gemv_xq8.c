/* The integer-dot decode GEMV of q8_0 / q4_0 weights (src/cpu/gemm.h: xq8_quantize, gemv_xq8)
 * against a float64 reference written here from the documented definition, for every variant
 * this CPU runs (generic, avx2, avx2 with AVX-VNNI, avx512, avx512 with VNNI, with VNNI + VBMI,
 * and the VBMI kernel over the interleaved layout of src/cpu/interleave.h, "avx512vbmi_x4";
 * on aarch64 the generic build is NEON):
 *   1. the quantized x row, bit for bit: per block of 32, d = f32(amax / 127),
 *      id = f32(1 / d) (0 when d is 0), q = nearest-even integer of f32(x * id), s = sum q;
 *   2. y against the reference of exactly that computation, sum_b f32(dw * d_b) * isum (isum an
 *      exact integer dot), in float64: ||y - ref|| / ||sum_b |f32(dw * d_b)| a_b|| <= 1e-5, where
 *      a_b bounds the integer partials a kernel may convert to f32 before adding them: for q8_0
 *      sum_j |wq_j q_j| (the classic bound of an f32 sum in any order), for q4_0 sum_j u_j |q_j|
 *      + 8 |s| with u_j = wq_j + 8 the stored nibble (the x86 kernels split a block's
 *      sum_j u_j q_j - 8 s over 8 lanes, each taking -s, and convert the lanes; when the weights
 *      sit near the middle of their range those lanes are much larger than the block's dot, so
 *      sum_j |wq_j q_j| alone was too small a yardstick: seeds 1796381170 and 1796401441 failed a
 *      correct avx2 kernel at 1.2e-5 and 1.04e-5);
 *   3. y against the unquantized float64 product x . W (the weights' exact values): within the
 *      rigorous bound of x's quantization error, sum_b d_b / 2 * sum_j |w_bj| (plus f32 slack),
 *      and, for x uniform in [-1, 1) over at least 16 rows, ||y - xW|| / ||xW|| <= 2e-2;
 *   4. a NaN or an infinity in x makes every output non-finite (the quantized block still holds
 *      q in [-127, 127] and s = sum q: no overflow anywhere); nothing past `rows` is written;
 *   5. the interleaved layout: each row read back from where the layout's description (in
 *      src/cpu/interleave.h, decoded here) puts its blocks is the row as stored, and the x4 kernel over any range of rows [r0, r1) gives bit for bit the VBMI kernel's y of
 *      those rows stored as usual, writing nothing outside y[0 .. r1 - r0).
 * Random data: the seed is printed; DATTN_TEST_SEED=<n> replays it. */
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

typedef struct {
    const char *name;
    void (*quantize)(const float *x, int k, void *xq);
    void (*gemv)(const void *xq, int k, dattn_dtype dt, const void *w, int rows, float *y);
} variant;

static variant variants[8];
static int n_variants;
static uint64_t seed;
static uint64_t rng_state;

#define SENTINEL 12345.0f
#define GUARD 16

static uint32_t rnd_bits(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 32);
}

static float rnd(void)   /* uniform in [-1, 1) */
{
    return (float)(rnd_bits() >> 8) / 8388608.0f - 1.0f;
}

/* An activation row: blocks of different magnitudes (as a residual stream has), a block of
 * zeros, a block with one large outlier, exact halves that sit on rounding ties. */
static void make_x(float *x, int k)
{
    for (int b = 0; b < k / 32; b++) {
        float scale = ldexpf(1.0f, (int)(rnd_bits() % 20) - 10);
        int kind = (int)(rnd_bits() % 8);
        for (int j = 0; j < 32; j++) {
            float v = rnd() * scale;
            if (kind == 0)
                v = 0.0f;
            else if (kind == 1 && j == 5)
                v = 300.0f * scale;
            else if (kind == 2)   /* x * id lands on .5 often: amax 127 makes id 1 */
                v = j == 0 ? 127.0f : (float)((int)(rnd_bits() % 254) - 127) + 0.5f;
            x[b * 32 + j] = v;
        }
    }
}

/* Weight rows in format dt at ws, their exact values in w (float64): random f16 scales,
 * integers over the whole range (q8_0 includes -128). */
static void make_w(dattn_dtype dt, int k, int m, uint8_t *ws, double *w)
{
    size_t bb = dt == DATTN_DTYPE_Q8_0 ? 34 : 18;
    for (int r = 0; r < m; r++)
        for (int b = 0; b < k / 32; b++) {
            uint8_t *blk = ws + ((size_t)r * (k / 32) + b) * bb;
            double *wv = w + (size_t)r * k + (size_t)b * 32;
            uint16_t dh = f32_to_f16(rnd() / 64.0f);
            memcpy(blk, &dh, 2);
            double d = f16_to_f32(dh);
            for (int j = 0; j < 32; j++) {
                if (dt == DATTN_DTYPE_Q8_0) {
                    blk[2 + j] = (uint8_t)rnd_bits();
                    wv[j] = d * (int8_t)blk[2 + j];
                } else if (j < 16) {
                    blk[2 + j] = (uint8_t)rnd_bits();
                    wv[j] = d * ((blk[2 + j] & 15) - 8);
                    wv[j + 16] = d * ((blk[2 + j] >> 4) - 8);
                }
            }
        }
}

/* The reference quantization of one block, in float64 with each f32 rounding of the definition
 * made explicit (a quotient or product of two floats is exact or correctly rounded once in
 * double, then rounded to float: the f32 operation's result). */
static void ref_quantize(const float *x, float *d, int8_t *q, int32_t *s)
{
    double amax = 0;
    for (int j = 0; j < 32; j++)
        amax = fabs((double)x[j]) > amax ? fabs((double)x[j]) : amax;
    float df = (float)(amax / 127.0);
    float id = df != 0.0f ? (float)(1.0 / (double)df) : 0.0f;
    int32_t sum = 0;
    for (int j = 0; j < 32; j++) {
        float v = (float)((double)x[j] * (double)id);
        double r = nearbyint((double)v);   /* the default mode: to nearest, ties to even */
        q[j] = (int8_t)r;
        sum += q[j];
    }
    *d = df;
    *s = sum;
}

/* The int8 weights of block b of row r (q4_0: nibble - 8) and the block's scale. */
static double w_block(dattn_dtype dt, const uint8_t *ws, int k, int r, int b, int wq[32])
{
    size_t bb = dt == DATTN_DTYPE_Q8_0 ? 34 : 18;
    const uint8_t *blk = ws + ((size_t)r * (k / 32) + b) * bb;
    uint16_t h;
    memcpy(&h, blk, 2);
    for (int j = 0; j < 32; j++)
        wq[j] = dt == DATTN_DTYPE_Q8_0 ? (int8_t)blk[2 + j]
                : j < 16               ? (blk[2 + j] & 15) - 8
                                       : (blk[2 + j - 16] >> 4) - 8;
    return f16_to_f32(h);
}

/* ws ([m] rows as stored) interleaved into a new buffer. */
static uint8_t *interleaved_copy(dattn_dtype dt, int k, const uint8_t *ws, int m)
{
    uint8_t *il = malloc(quant_row_bytes(dt, k) * (size_t)m + 1);
    assert_non_null(il);
    interleave_rows(dt, k, ws, m, il);
    return il;
}

#if defined(__x86_64__)
/* The x4 kernel as a variant: the rows interleaved first, all of them computed. */
static void gemv_x4_all(const void *xq, int k, dattn_dtype dt, const void *w, int rows, float *y)
{
    uint8_t *il = interleaved_copy(dt, k, w, rows);
    gemv_xq8_x4_avx512vbmi(xq, k, dt, il, rows, 0, rows, y);
    free(il);
}
#endif

static void *xq_alloc(int k)
{
    size_t n = (xq8_bytes(k) + 63) / 64 * 64;
    void *p = aligned_alloc(64, n);
    assert_non_null(p);
    return p;
}

/* plain: x uniform in [-1, 1) (no outliers, no zero blocks), where the error against the
 * unquantized product is also held to 2e-2 of its norm (with outliers only the bound holds). */
static void check_case(dattn_dtype dt, int k, int m, int plain)
{
    int nb = k / 32;
    size_t rb = quant_row_bytes(dt, k);
    float *x = malloc(sizeof(float) * (size_t)k);
    uint8_t *ws = malloc(rb * (size_t)m);
    double *w = malloc(sizeof(double) * (size_t)m * k);
    float *y = malloc(sizeof(float) * ((size_t)m + GUARD));
    float *rd = malloc(sizeof(float) * (size_t)nb);
    int8_t *rq = malloc((size_t)k);
    int32_t *rs = malloc(sizeof(int32_t) * (size_t)nb);
    double *ref = malloc(sizeof(double) * (size_t)m), *ref_abs = malloc(sizeof(double) * (size_t)m);
    double *exact = malloc(sizeof(double) * (size_t)m), *bound = malloc(sizeof(double) * (size_t)m);
    void *xq = xq_alloc(k);
    assert_true(x && ws && w && y && rd && rq && rs && ref && ref_abs && exact && bound);
    if (plain)
        for (int j = 0; j < k; j++)
            x[j] = rnd();
    else
        make_x(x, k);
    make_w(dt, k, m, ws, w);
    for (int b = 0; b < nb; b++)
        ref_quantize(x + 32 * b, rd + b, rq + 32 * b, rs + b);
    for (int r = 0; r < m; r++) {
        double s = 0, sa = 0, e = 0, bnd = 0;
        for (int b = 0; b < nb; b++) {
            int wq[32];
            double dw = w_block(dt, ws, k, r, b, wq);
            long isum = 0, iabs = 0, wabs = 0;
            for (int j = 0; j < 32; j++) {
                isum += (long)wq[j] * rq[32 * b + j];
                iabs += dt == DATTN_DTYPE_Q4_0 ? (long)(wq[j] + 8) * labs((long)rq[32 * b + j])
                                               : labs((long)wq[j] * rq[32 * b + j]);
                wabs += labs((long)wq[j]);
                e += (double)x[32 * b + j] * w[(size_t)r * k + 32 * b + j];
            }
            if (dt == DATTN_DTYPE_Q4_0)
                iabs += 8 * labs((long)rs[b]);
            double scale = (double)(float)(dw * (double)rd[b]);
            s += scale * (double)isum;
            sa += fabs(scale) * (double)iabs;
            bnd += fabs(dw) * wabs * (double)rd[b] * 0.5;
        }
        ref[r] = s;
        ref_abs[r] = sa;
        exact[r] = e;
        bound[r] = bnd;
    }
    for (int v = 0; v < n_variants; v++) {
        memset(xq, 0x5a, xq8_bytes(k));
        variants[v].quantize(x, k, xq);
        const int8_t *q = xq;
        const float *d = (const float *)((const uint8_t *)xq + k);
        const int32_t *s = (const int32_t *)((const uint8_t *)xq + k + 4 * (size_t)nb);
        int bad_q = 0;
        for (int b = 0; b < nb; b++) {
            bad_q += memcmp(&d[b], &rd[b], 4) != 0 || s[b] != rs[b];
            bad_q += memcmp(q + 32 * b, rq + 32 * b, 32) != 0;
        }
        for (size_t i = 0; i < (size_t)m + GUARD; i++)
            y[i] = SENTINEL;
        variants[v].gemv(xq, k, dt, ws, m, y);
        double err = 0, norm = 0, err_x = 0, norm_x = 0;
        int bad_bound = 0, bad_outside = 0;
        for (int r = 0; r < m; r++) {
            double e = (double)y[r] - ref[r], ex = (double)y[r] - exact[r];
            err += e * e;
            norm += ref_abs[r] * ref_abs[r];
            err_x += ex * ex;
            norm_x += exact[r] * exact[r];
            /* x's quantization error, with room for the f32 rounding of id and of the sum. */
            if (!(fabs(ex) <= bound[r] * 1.001 + 1e-5 * ref_abs[r] + 1e-30))
                bad_bound++;
        }
        for (int i = m; i < m + GUARD; i++)
            bad_outside += y[i] != SENTINEL;
        double rel = norm > 0 ? sqrt(err / norm) : sqrt(err);
        double rel_x = norm_x > 0 ? sqrt(err_x / norm_x) : sqrt(err_x);
        if (bad_q || !(rel <= 1e-5) || (plain && !(rel_x <= 2e-2)) || bad_bound || bad_outside) {
            print_error("%s %s k=%d rows=%d: %d quantized blocks differ from the reference; rel err "
                        "%.3g against the quantized reference (tol 1e-5), %.3g against the "
                        "unquantized product (tol 2e-2 for plain x: %d), %d rows outside the quantization bound, "
                        "%d cells written past the rows (seed %llu)\n", variants[v].name,
                        quant_name(dt), k, m, bad_q, rel, rel_x, plain, bad_bound, bad_outside,
                        (unsigned long long)seed);
            fail();
        }
    }
    free(x);
    free(ws);
    free(w);
    free(y);
    free(rd);
    free(rq);
    free(rs);
    free(ref);
    free(ref_abs);
    free(exact);
    free(bound);
    free(xq);
}

static const dattn_dtype dtypes[] = {DATTN_DTYPE_Q8_0, DATTN_DTYPE_Q4_0};

static void test_sizes(void **state)
{
    (void)state;
    /* 256-weight chunks and the blocks after them (the VBMI q4_0 kernel): 288 = 8 + 1 blocks,
     * 480 = 8 + 7. */
    static const int ks[] = {32, 64, 96, 256, 288, 480, 768, 2048, 3072};
    static const int ms[] = {1, 2, 3, 4, 5, 7, 16, 17, 66};
    for (int d = 0; d < 2; d++)
        for (size_t a = 0; a < sizeof ks / sizeof *ks; a++)
            for (size_t b = 0; b < sizeof ms / sizeof *ms; b++)
                for (int plain = 0; plain < 2; plain++)
                    check_case(dtypes[d], ks[a], plain ? 16 + 4 * ms[b] : ms[b], plain);
}

static void test_many_seeds(void **state)
{
    (void)state;
    for (int i = 0; i < 40; i++)
        for (int d = 0; d < 2; d++)
            check_case(dtypes[d], 32 * (1 + (int)(rnd_bits() % 48)), 1 + (int)(rnd_bits() % 40),
                       0);
}

/* A NaN or an infinity anywhere in x: every output is NaN or infinite, as the unquantized
 * product would be (no silent finite answer), and the kernels run without undefined behaviour
 * (the sanitizer build runs this). */
static void test_nonfinite(void **state)
{
    (void)state;
    const int k = 256, m = 9;
    float x[256], y[9];
    for (int d = 0; d < 2; d++)
        for (int kind = 0; kind < 3; kind++) {
            size_t rb = quant_row_bytes(dtypes[d], k);
            uint8_t *ws = malloc(rb * m);
            double *w = malloc(sizeof(double) * m * k);
            void *xq = xq_alloc(k);
            assert_true(ws && w);
            make_x(x, k);
            make_w(dtypes[d], k, m, ws, w);
            int at = (int)(rnd_bits() % k);
            x[at] = kind == 0 ? NAN : kind == 1 ? INFINITY : -INFINITY;
            for (int v = 0; v < n_variants; v++) {
                variants[v].quantize(x, k, xq);
                /* Even there each block's s is the sum of its q, all in [-127, 127]. */
                const int8_t *q = xq;
                const int32_t *s = (const int32_t *)((const uint8_t *)xq + k + 4 * (k / 32));
                for (int b = 0; b < k / 32; b++) {
                    int32_t sum = 0;
                    for (int j = 0; j < 32; j++) {
                        assert_true(q[32 * b + j] >= -127);
                        sum += q[32 * b + j];
                    }
                    assert_int_equal(sum, s[b]);
                }
                variants[v].gemv(xq, k, dtypes[d], ws, m, y);
                for (int r = 0; r < m; r++)
                    if (isfinite(y[r])) {
                        print_error("%s %s: x[%d] = %g gives the finite y[%d] = %g (seed %llu)\n",
                                    variants[v].name, quant_name(dtypes[d]), at, (double)x[at], r,
                                    (double)y[r], (unsigned long long)seed);
                        fail();
                    }
            }
            free(ws);
            free(w);
            free(xq);
        }
}

/* Row r of an interleaved weight of m rows, as stored, into dst: for rows in groups of 4 (the
 * last holds m % 4 or 4), chunk c (8 blocks) of the group's row i at (c * nr + i) chunks from the
 * group's start, then each row's blocks after its last whole chunk, row after row. */
static void read_interleaved_row(dattn_dtype dt, int k, const uint8_t *il, int m, int r,
                                 uint8_t *dst)
{
    size_t bb = dt == DATTN_DTYPE_Q8_0 ? 34 : 18, rb = (size_t)(k / 32) * bb, cb = 8 * bb;
    int g = r / 4, i = r % 4, nr = m - 4 * g < 4 ? m - 4 * g : 4, nc = k / 256;
    size_t tail = rb - (size_t)nc * cb;
    const uint8_t *group = il + (size_t)g * 4 * rb;
    for (int c = 0; c < nc; c++)
        memcpy(dst + (size_t)c * cb, group + ((size_t)c * nr + i) * cb, cb);
    if (tail)
        memcpy(dst + (size_t)nc * cb, group + (size_t)nc * nr * cb + (size_t)i * tail, tail);
}

/* 5.: read-back of every row (all machines), and the x4 kernel on ranges (VBMI CPUs). */
static void test_interleaved(void **state)
{
    (void)state;
    static const int ks[] = {32, 96, 256, 288, 480, 768, 2080};
    for (int d = 0; d < 2; d++)
        for (size_t a = 0; a < sizeof ks / sizeof *ks; a++) {
            int k = ks[a], m = 1 + (int)(rnd_bits() % 23);
            size_t rb = quant_row_bytes(dtypes[d], k);
            uint8_t *ws = malloc(rb * (size_t)m), *back = malloc(rb);
            double *w = malloc(sizeof(double) * (size_t)m * k);
            assert_true(ws && back && w);
            make_w(dtypes[d], k, m, ws, w);
            uint8_t *il = interleaved_copy(dtypes[d], k, ws, m);
            for (int r = 0; r < m; r++) {
                read_interleaved_row(dtypes[d], k, il, m, r, back);
                if (memcmp(back, ws + (size_t)r * rb, rb) != 0) {
                    print_error("%s k=%d rows=%d: row %d read back from the interleaved layout "
                                "differs (seed %llu)\n", quant_name(dtypes[d]), k, m, r,
                                (unsigned long long)seed);
                    fail();
                }
            }
#if defined(__x86_64__)
            if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi")) {
                float *x = malloc(sizeof(float) * (size_t)k);
                float *y = malloc(sizeof(float) * (size_t)m);
                float *yr = malloc(sizeof(float) * ((size_t)m + GUARD));
                void *xq = xq_alloc(k);
                assert_true(x && y && yr);
                make_x(x, k);
                xq8_quantize_avx512(x, k, xq);
                gemv_xq8_avx512vbmi(xq, k, dtypes[d], ws, m, y);
                for (int r0 = 0; r0 < m; r0++)
                    for (int r1 = r0 + 1; r1 <= m; r1++) {
                        for (int i = 0; i < m + GUARD; i++)
                            yr[i] = SENTINEL;
                        gemv_xq8_x4_avx512vbmi(xq, k, dtypes[d], il, m, r0, r1, yr);
                        int bad = memcmp(yr, y + r0, sizeof(float) * (size_t)(r1 - r0)) != 0;
                        for (int i = r1 - r0; i < m + GUARD; i++)
                            bad |= yr[i] != SENTINEL;
                        if (bad) {
                            print_error("avx512vbmi_x4 %s k=%d rows=%d: rows [%d, %d) differ from "
                                        "the stored layout's or wrote outside (seed %llu)\n",
                                        quant_name(dtypes[d]), k, m, r0, r1,
                                        (unsigned long long)seed);
                            fail();
                        }
                    }
                free(x);
                free(y);
                free(yr);
                free(xq);
            }
#endif
            free(il);
            free(ws);
            free(back);
            free(w);
        }
}

int main(void)
{
    const char *env = getenv("DATTN_TEST_SEED");
    seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    rng_state = seed;
    printf("test_gemv_xq8: seed %llu (DATTN_TEST_SEED=%llu replays it)\n",
           (unsigned long long)seed, (unsigned long long)seed);

    variants[n_variants++] = (variant){"generic", xq8_quantize_generic, gemv_xq8_generic};
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        variants[n_variants++] = (variant){"avx2", xq8_quantize_avx2, gemv_xq8_avx2};
    else
        printf("test_gemv_xq8: avx2 not supported by this CPU, skipped\n");
    if (__builtin_cpu_supports("fma") && cpu_has_avxvnni())
        variants[n_variants++] = (variant){"avxvnni", xq8_quantize_avx2, gemv_xq8_avxvnni};
    else
        printf("test_gemv_xq8: avxvnni not supported by this CPU, skipped\n");
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
        variants[n_variants++] = (variant){"avx512", xq8_quantize_avx512, gemv_xq8_avx512};
        if (__builtin_cpu_supports("avx512vnni"))
            variants[n_variants++] =
                (variant){"avx512vnni", xq8_quantize_avx512, gemv_xq8_avx512vnni};
        else
            printf("test_gemv_xq8: avx512vnni not supported by this CPU, skipped\n");
        if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi"))
        {
            variants[n_variants++] =
                (variant){"avx512vbmi", xq8_quantize_avx512, gemv_xq8_avx512vbmi};
            variants[n_variants++] = (variant){"avx512vbmi_x4", xq8_quantize_avx512, gemv_x4_all};
        } else
            printf("test_gemv_xq8: avx512vbmi not supported by this CPU, skipped\n");
    } else {
        printf("test_gemv_xq8: avx512 not supported by this CPU, skipped\n");
    }
#endif
    for (int v = 0; v < n_variants; v++)
        printf("test_gemv_xq8: variant %s\n", variants[v].name);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_many_seeds),
        cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_interleaved),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
