/* The layer through the public API (include/dattn.h) against the float64 reference (tests/ref_f64.h,
 * DESIGN §1, §4, §8): prefill and decode on random MHA/GQA shapes with F32/F16/BF16 weights,
 * prefill-then-decode at every split point, chunked prefill, threads and every CPU ISA, f16/q8 KV,
 * the sink+window policy far past n_ctx, and rewinding a full cache.
 * Random data comes from a printed seed; DATTN_TEST_SEED=<n> replays it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dattn.h"
#include "ref_f64.h"
#include "test_util.h"

/* How a sequence is fed to the layer. */
enum feed_mode {
    FEED_PREFILL,   /* one dattn_layer_prefill call for all tokens (chunked inside if > max_batch) */
    FEED_DECODE,    /* one dattn_layer_decode call per token */
    FEED_RANDOM,    /* random mix of prefill calls (1 .. 2*max_batch tokens) and single decodes */
};

static const char *feed_name(int m)
{
    return m == FEED_PREFILL ? "prefill" : m == FEED_DECODE ? "decode" : "random chunks";
}

/* Feeds x [n][E] at positions pos .. pos+n-1 of slot 0, writing y [n][E]. */
static dattn_status feed(dattn_layer *l, dattn_cache *c, int pos, const float *x, int n, int E,
                         int mode, int max_batch, float *y)
{
    if (mode == FEED_PREFILL)
        return dattn_layer_prefill(l, c, 0, pos, x, n, y);
    for (int i = 0; i < n;) {
        int len = 1;
        dattn_status st;
        if (mode == FEED_RANDOM && tu_int(0, 2) != 0) {
            len = tu_int(1, 2 * max_batch);
            if (len > n - i)
                len = n - i;
            st = dattn_layer_prefill(l, c, 0, pos + i, x + (size_t)i * E, len, y + (size_t)i * E);
        } else {
            st = dattn_layer_decode(l, c, 0, pos + i, x + (size_t)i * E, y + (size_t)i * E);
        }
        if (st != DATTN_OK)
            return st;
        i += len;
    }
    return DATTN_OK;
}

/* Runs t on x [T][E] through a fresh cache and returns the error against ref (y_ref [T][E]). */
static double run_vs_ref(dattn_backend *be, const tu_layer *t, const dattn_cache_params *p,
                         const float *x, int T, int mode, const double *y_ref)
{
    dattn_layer *l = NULL;
    dattn_cache *c = NULL;
    float *y = malloc(sizeof(float) * (size_t)T * t->E);
    assert_non_null(y);
    TU_OK(dattn_layer_create(be, &t->shape, &t->w, &l), "layer_create E=%d H=%d Hkv=%d", t->E, t->H,
          t->Hkv);
    TU_OK(dattn_cache_create(be, &t->shape, p, NULL, 0, &c), "cache_create n_ctx=%d", p->n_ctx);
    TU_OK(feed(l, c, 0, x, T, t->E, mode, p->max_batch, y), "%s T=%d", feed_name(mode), T);
    int n_past = -1;
    TU_OK(dattn_cache_n_past(c, 0, &n_past), "n_past");
    assert_int_equal(n_past, T);
    double err = tu_rel_err(y, y_ref, (size_t)T * t->E);
    dattn_cache_free(c);
    dattn_layer_free(l);
    free(y);
    return err;
}

typedef struct shape_case {
    int H, Hkv, d, T, l;
    float theta;
    dattn_dtype dtype;
} shape_case;

/* A random shape: r cycles 1,2,3,4,6,8 (MHA, GQA; the kernels block query heads in fours, so 6
 * and 8 take the multi-block paths), d even in 8..64, E <= 384, T 1..100. */
static shape_case random_shape(int i)
{
    static const dattn_dtype dtypes[3] = {DATTN_DTYPE_F32, DATTN_DTYPE_F16, DATTN_DTYPE_BF16};
    static const int groups[6] = {1, 2, 3, 4, 6, 8};
    shape_case s;
    int r = groups[i % 6];
    s.d = 2 * tu_int(4, 32);
    int max_hkv = 384 / (2 * r * s.d);
    if (max_hkv < 1) {
        s.d = 2 * tu_int(4, 384 / (4 * r));
        max_hkv = 1;
    }
    if (max_hkv > 3)
        max_hkv = 3;
    s.Hkv = tu_int(1, max_hkv);
    s.H = r * s.Hkv;
    s.T = i == 0 ? 1 : tu_int(2, 100);
    s.l = tu_int(0, 11);
    s.theta = tu_int(0, 3) == 0 ? 500000.0f : 10000.0f;
    s.dtype = dtypes[(i / 4 + i) % 3];
    return s;
}

static void shapes_vs_ref(int mode, int n_cases)
{
    dattn_backend *be = NULL;
    TU_OK(tu_backend(2, NULL, &be), "backend");
    for (int i = 0; i < n_cases; i++) {
        shape_case s = random_shape(i);
        tu_layer t;
        assert_int_equal(tu_layer_init(&t, s.H, s.Hkv, s.d, s.l, s.theta, s.dtype, 1.5), 0);
        float *x = malloc(sizeof(float) * (size_t)s.T * t.E);
        double *xd = malloc(sizeof(double) * (size_t)s.T * t.E);
        double *yr = malloc(sizeof(double) * (size_t)s.T * t.E);
        assert_true(x && xd && yr);
        tu_rand_x(x, xd, (size_t)s.T * t.E);
        assert_int_equal(ref_layer(&t.rs, &t.rw, xd, s.T, yr), 0);
        dattn_cache_params p = tu_cache_params(s.T + tu_int(0, 40), 128, DATTN_KV_F32,
                                               DATTN_POLICY_FULL, 0);
        double err = run_vs_ref(be, &t, &p, x, s.T, mode, yr);
        printf("  %-7s E=%3d H=%d Hkv=%d d=%2d T=%3d l=%2d theta=%g %-4s: rel %.2e\n",
               feed_name(mode), t.E, s.H, s.Hkv, s.d, s.T, s.l, (double)s.theta,
               tu_dtype_name(s.dtype), err);
        TU_CHECK_ERR(err, 1e-4, "%s E=%d H=%d Hkv=%d d=%d T=%d l=%d %s", feed_name(mode), t.E, s.H,
                     s.Hkv, s.d, s.T, s.l, tu_dtype_name(s.dtype));
        free(x);
        free(xd);
        free(yr);
        tu_layer_free(&t);
    }
    dattn_backend_free(be);
}

static void test_prefill_shapes(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    shapes_vs_ref(FEED_PREFILL, 16);
}

static void test_decode_shapes(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    shapes_vs_ref(FEED_DECODE, 12);
}

/* A head_dim the shape sets apart from model_dim (Hugging Face's head_dim: the attention is wider
 * or narrower than E), every feed mode, each weight dtype, MHA and GQA. */
static void test_head_dim_shapes(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    static const struct { int E, H, Hkv, d; } shapes[] = {
        {48, 2, 1, 16}, {40, 3, 3, 8}, {96, 4, 2, 6}, {64, 6, 2, 12}};
    static const dattn_dtype dtypes[3] = {DATTN_DTYPE_F32, DATTN_DTYPE_F16, DATTN_DTYPE_BF16};
    dattn_backend *be = NULL;
    TU_OK(tu_backend(2, NULL, &be), "backend");
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (int mode = FEED_PREFILL; mode <= FEED_RANDOM; mode++) {
            dattn_dtype dt = dtypes[(i + (size_t)mode) % 3];
            tu_layer t;
            assert_int_equal(tu_layer_init_e(&t, shapes[i].E, shapes[i].H, shapes[i].Hkv,
                                             shapes[i].d, (int)i, 10000.0f, dt, 1.5), 0);
            int T = tu_int(2, 40);
            float *x = malloc(sizeof(float) * (size_t)T * t.E);
            double *xd = malloc(sizeof(double) * (size_t)T * t.E);
            double *yr = malloc(sizeof(double) * (size_t)T * t.E);
            assert_true(x && xd && yr);
            tu_rand_x(x, xd, (size_t)T * t.E);
            assert_int_equal(ref_layer(&t.rs, &t.rw, xd, T, yr), 0);
            dattn_cache_params p = tu_cache_params(T + 3, 8, DATTN_KV_F32, DATTN_POLICY_FULL, 0);
            double err = run_vs_ref(be, &t, &p, x, T, mode, yr);
            printf("  %-13s E=%3d A=%3d H=%d Hkv=%d d=%2d T=%2d %-4s: rel %.2e\n", feed_name(mode),
                   t.E, t.A, t.H, t.Hkv, t.d, T, tu_dtype_name(dt), err);
            TU_CHECK_ERR(err, 1e-4, "%s E=%d A=%d H=%d Hkv=%d d=%d", feed_name(mode), t.E, t.A,
                         t.H, t.Hkv, t.d);
            free(x);
            free(xd);
            free(yr);
            tu_layer_free(&t);
        }
    dattn_backend_free(be);
}

/* Prefill s tokens, then the rest (decode one by one, or one more prefill), for every s: the same
 * outputs as one prefill of all T (dattn against itself, 1e-5), which itself matches the reference. */
static void test_split_points(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    enum { T = 20 };
    dattn_backend *be = NULL;
    TU_OK(tu_backend(2, NULL, &be), "backend");
    static const int shapes[3][3] = {{4, 2, 16}, {3, 1, 8}, {2, 2, 32}};   /* H, Hkv, d */
    for (int si = 0; si < 3; si++) {
        tu_layer t;
        assert_int_equal(tu_layer_init(&t, shapes[si][0], shapes[si][1], shapes[si][2],
                                       tu_int(0, 11), 10000.0f, DATTN_DTYPE_F32, 1.5), 0);
        const int E = t.E;
        float x[T * 256], y_all[T * 256], y[T * 256];
        double xd[T * 256], yr[T * 256];
        assert_true(E <= 256);
        tu_rand_x(x, xd, (size_t)T * E);
        assert_int_equal(ref_layer(&t.rs, &t.rw, xd, T, yr), 0);
        dattn_layer *l = NULL;
        dattn_cache *c = NULL;
        dattn_cache_params p = tu_cache_params(T, 8, DATTN_KV_F32, DATTN_POLICY_FULL, 0);
        TU_OK(dattn_layer_create(be, &t.shape, &t.w, &l), "layer");
        TU_OK(dattn_cache_create(be, &t.shape, &p, NULL, 0, &c), "cache");
        TU_OK(dattn_layer_prefill(l, c, 0, 0, x, T, y_all), "prefill all");
        TU_CHECK_ERR(tu_rel_err(y_all, yr, (size_t)T * E), 1e-4, "all-prefill vs ref");
        for (int how = 0; how < 2; how++)
            for (int s = 0; s <= T; s++) {
                TU_OK(dattn_cache_reset(c), "reset");
                memset(y, 0, sizeof y);
                if (s > 0)
                    TU_OK(dattn_layer_prefill(l, c, 0, 0, x, s, y), "prefill %d", s);
                if (how == 0) {
                    for (int i = s; i < T; i++)
                        TU_OK(dattn_layer_decode(l, c, 0, i, x + (size_t)i * E, y + (size_t)i * E),
                              "decode at %d after prefill %d", i, s);
                } else if (s < T) {
                    TU_OK(dattn_layer_prefill(l, c, 0, s, x + (size_t)s * E, T - s, y + (size_t)s * E),
                          "second prefill at %d", s);
                }
                TU_CHECK_ERR(tu_rel_err_ff(y, y_all, (size_t)T * E), 1e-5,
                             "H=%d Hkv=%d d=%d: prefill %d then %s vs all-prefill", t.H, t.Hkv, t.d,
                             s, how == 0 ? "decode" : "prefill");
            }
        dattn_cache_free(c);
        dattn_layer_free(l);
        tu_layer_free(&t);
    }
    dattn_backend_free(be);
}

/* n_tokens > max_batch: one prefill call runs in chunks; so does a random mix of calls. */
static void test_chunked_prefill(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    dattn_backend *be = NULL;
    TU_OK(tu_backend(2, NULL, &be), "backend");
    static const int mb[5] = {1, 3, 8, 32, 64};
    for (int i = 0; i < 5; i++) {
        tu_layer t;
        int r = 1 + i % 4;
        assert_int_equal(tu_layer_init(&t, 2 * r, 2, 8 * tu_int(1, 2), tu_int(0, 11), 10000.0f,
                                       i % 2 ? DATTN_DTYPE_BF16 : DATTN_DTYPE_F32, 1.5), 0);
        int T = tu_int(70, 100);
        float *x = malloc(sizeof(float) * (size_t)T * t.E);
        double *xd = malloc(sizeof(double) * (size_t)T * t.E);
        double *yr = malloc(sizeof(double) * (size_t)T * t.E);
        assert_true(x && xd && yr);
        tu_rand_x(x, xd, (size_t)T * t.E);
        assert_int_equal(ref_layer(&t.rs, &t.rw, xd, T, yr), 0);
        dattn_cache_params p = tu_cache_params(T, mb[i], DATTN_KV_F32, DATTN_POLICY_FULL, 0);
        for (int mode = FEED_PREFILL; mode <= FEED_RANDOM; mode += 2) {
            double err = run_vs_ref(be, &t, &p, x, T, mode, yr);
            printf("  %-13s max_batch=%2d T=%3d E=%3d H=%d Hkv=%d: rel %.2e\n", feed_name(mode),
                   mb[i], T, t.E, t.H, t.Hkv, err);
            TU_CHECK_ERR(err, 1e-4, "%s max_batch=%d T=%d", feed_name(mode), mb[i], T);
        }
        free(x);
        free(xd);
        free(yr);
        tu_layer_free(&t);
    }
    dattn_backend_free(be);
}

/* Every ISA this CPU runs (the rest must say DATTN_E_UNSUPPORTED), with 1 and 2 threads, prefill
 * and decode, f32 and f16 KV. */
static void test_isa_threads(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    static const char *const isas[4] = {NULL, "generic", "avx2", "avx512"};
    tu_layer t;
    assert_int_equal(tu_layer_init(&t, 6, 2, 16, 7, 10000.0f, DATTN_DTYPE_F16, 1.5), 0);
    enum { T = 77 };
    float *x = malloc(sizeof(float) * (size_t)T * t.E);
    double *xd = malloc(sizeof(double) * (size_t)T * t.E);
    double *yr = malloc(sizeof(double) * (size_t)T * t.E);
    assert_true(x && xd && yr);
    tu_rand_x(x, xd, (size_t)T * t.E);
    assert_int_equal(ref_layer(&t.rs, &t.rw, xd, T, yr), 0);
    int ran = 0;
    for (int i = 0; i < 4; i++)
        for (int threads = 1; threads <= 2; threads++) {
            dattn_backend *be = NULL;
            dattn_status st = tu_backend(threads, isas[i], &be);
            if (st == DATTN_E_UNSUPPORTED) {
                printf("  isa %s: not on this CPU (%s), skipped\n", isas[i], dattn_last_error());
                assert_non_null(isas[i]);
                assert_string_not_equal(isas[i], "generic");
                assert_true(strlen(dattn_last_error()) > 0);
                break;
            }
            TU_OK(st, "backend isa=%s threads=%d", isas[i] ? isas[i] : "(best)", threads);
            for (int kv = DATTN_KV_F32; kv <= DATTN_KV_F16; kv++)
                for (int mode = FEED_PREFILL; mode <= FEED_DECODE; mode++) {
                    dattn_cache_params p = tu_cache_params(T, 16, (dattn_kv_type)kv,
                                                           DATTN_POLICY_FULL, 0);
                    double err = run_vs_ref(be, &t, &p, x, T, mode, yr);
                    printf("  %-24s %s KV %-7s: rel %.2e\n", dattn_backend_describe(be),
                           tu_kv_name((dattn_kv_type)kv), feed_name(mode), err);
                    TU_CHECK_ERR(err, tu_kv_tol((dattn_kv_type)kv), "isa=%s threads=%d kv=%s %s",
                                 isas[i] ? isas[i] : "(best)", threads,
                                 tu_kv_name((dattn_kv_type)kv), feed_name(mode));
                    ran++;
                }
            dattn_backend_free(be);
        }
    assert_true(ran >= 8);   /* at least generic and the best ISA */
    /* An ISA name that does not exist is an invalid argument, not a silent fallback. */
    dattn_backend *be = NULL;
    assert_int_not_equal(tu_backend(1, "sse9", &be), DATTN_OK);
    assert_null(be);
    free(x);
    free(xd);
    free(yr);
    tu_layer_free(&t);
}

/* f16 and q8 KV within their tolerances, prefill, decode and random chunks, MHA and GQA. */
static void test_kv_types(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    dattn_backend *be = NULL;
    TU_OK(tu_backend(2, NULL, &be), "backend");
    static const int shapes[4][3] = {{2, 2, 32}, {4, 2, 16}, {3, 1, 64}, {4, 1, 8}};
    for (int si = 0; si < 4; si++) {
        tu_layer t;
        assert_int_equal(tu_layer_init(&t, shapes[si][0], shapes[si][1], shapes[si][2],
                                       tu_int(0, 11), 10000.0f, DATTN_DTYPE_F32, 1.5), 0);
        int T = tu_int(40, 100);
        float *x = malloc(sizeof(float) * (size_t)T * t.E);
        double *xd = malloc(sizeof(double) * (size_t)T * t.E);
        double *yr = malloc(sizeof(double) * (size_t)T * t.E);
        assert_true(x && xd && yr);
        tu_rand_x(x, xd, (size_t)T * t.E);
        assert_int_equal(ref_layer(&t.rs, &t.rw, xd, T, yr), 0);
        for (int kv = DATTN_KV_F32; kv <= DATTN_KV_Q8; kv++)
            for (int mode = FEED_PREFILL; mode <= FEED_RANDOM; mode++) {
                dattn_cache_params p = tu_cache_params(T + 3, 24, (dattn_kv_type)kv,
                                                       DATTN_POLICY_FULL, 0);
                double err = run_vs_ref(be, &t, &p, x, T, mode, yr);
                printf("  %-3s KV %-13s E=%3d H=%d Hkv=%d T=%3d: rel %.2e\n",
                       tu_kv_name((dattn_kv_type)kv), feed_name(mode), t.E, t.H, t.Hkv, T, err);
                TU_CHECK_ERR(err, tu_kv_tol((dattn_kv_type)kv), "kv=%s %s E=%d H=%d Hkv=%d T=%d",
                             tu_kv_name((dattn_kv_type)kv), feed_name(mode), t.E, t.H, t.Hkv, T);
            }
        free(x);
        free(xd);
        free(yr);
        tu_layer_free(&t);
    }
    dattn_backend_free(be);
}

/* StreamingLLM sink+window (n_ctx = S + W) against ref_layer_sink_window for T several times
 * n_ctx: decode only, one prefill call (chunks of max_batch < T), random chunks. */
static void test_sink_window(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    dattn_backend *be = NULL;
    TU_OK(tu_backend(2, NULL, &be), "backend");
    typedef struct { int S, W, max_batch, H, Hkv, d, kv; } sw_case;
    static const sw_case cases[] = {
        {4, 12, 5, 2, 2, 16, DATTN_KV_F32},
        {1, 7, 3, 4, 2, 8, DATTN_KV_F32},
        {0, 9, 4, 3, 1, 16, DATTN_KV_F32},
        {2, 1, 2, 2, 1, 16, DATTN_KV_F32},
        {4, 60, 16, 2, 1, 16, DATTN_KV_F32},    /* the ring crosses pages (64) and chunks (32) */
        {3, 40, 33, 4, 4, 8, DATTN_KV_F32},
        {4, 20, 6, 4, 1, 16, DATTN_KV_F16},
        {4, 20, 6, 4, 2, 8, DATTN_KV_Q8},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const sw_case *k = &cases[ci];
        tu_layer t;
        assert_int_equal(tu_layer_init(&t, k->H, k->Hkv, k->d, tu_int(0, 11), 10000.0f,
                                       ci % 3 == 1 ? DATTN_DTYPE_F16 : DATTN_DTYPE_F32, 1.5), 0);
        int n_ctx = k->S + k->W;
        int T = n_ctx * (n_ctx > 40 ? 3 : 5) + tu_int(0, 7);
        float *x = malloc(sizeof(float) * (size_t)T * t.E);
        double *xd = malloc(sizeof(double) * (size_t)T * t.E);
        double *yr = malloc(sizeof(double) * (size_t)T * t.E);
        assert_true(x && xd && yr);
        tu_rand_x(x, xd, (size_t)T * t.E);
        assert_int_equal(ref_layer_sink_window(&t.rs, &t.rw, xd, T, k->S, k->W, yr), 0);
        dattn_cache_params p = tu_cache_params(n_ctx, k->max_batch, (dattn_kv_type)k->kv,
                                               DATTN_POLICY_SINK_WINDOW, k->S);
        for (int mode = FEED_PREFILL; mode <= FEED_RANDOM; mode++) {
            double err = run_vs_ref(be, &t, &p, x, T, mode, yr);
            printf("  sink %d window %2d max_batch %2d %s KV T=%3d %-13s: rel %.2e\n", k->S, k->W,
                   k->max_batch, tu_kv_name((dattn_kv_type)k->kv), T, feed_name(mode), err);
            TU_CHECK_ERR(err, tu_kv_tol((dattn_kv_type)k->kv),
                         "sink %d window %d max_batch %d kv %s T=%d %s", k->S, k->W, k->max_batch,
                         tu_kv_name((dattn_kv_type)k->kv), T, feed_name(mode));
        }
        free(x);
        free(xd);
        free(yr);
        tu_layer_free(&t);
    }
    dattn_backend_free(be);
}

/* Full policy: prefill or decode at pos < n_past drops the tail; the result equals a fresh run
 * on the kept prefix followed by the new tokens. */
static void test_rewind(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    dattn_backend *be = NULL;
    TU_OK(tu_backend(2, NULL, &be), "backend");
    tu_layer t;
    assert_int_equal(tu_layer_init(&t, 4, 2, 16, 3, 10000.0f, DATTN_DTYPE_F32, 1.5), 0);
    const int E = t.E;
    enum { T = 50, N2 = 12, CAP = 80 };
    float *x = malloc(sizeof(float) * (size_t)CAP * E), *x2 = malloc(sizeof(float) * (size_t)N2 * E);
    float *y = malloc(sizeof(float) * (size_t)CAP * E), *y2 = malloc(sizeof(float) * (size_t)N2 * E);
    float *yf = malloc(sizeof(float) * (size_t)CAP * E);
    double *xd = malloc(sizeof(double) * (size_t)CAP * E), *yr = malloc(sizeof(double) * (size_t)CAP * E);
    assert_true(x && x2 && y && y2 && yf && xd && yr);
    tu_rand_x(x, NULL, (size_t)T * E);
    tu_rand_x(x2, NULL, (size_t)N2 * E);
    dattn_layer *l = NULL;
    dattn_cache *c = NULL, *fresh = NULL;
    dattn_cache_params p = tu_cache_params(CAP, 16, DATTN_KV_F32, DATTN_POLICY_FULL, 0);
    TU_OK(dattn_layer_create(be, &t.shape, &t.w, &l), "layer");
    TU_OK(dattn_cache_create(be, &t.shape, &p, NULL, 0, &c), "cache");
    TU_OK(dattn_cache_create(be, &t.shape, &p, NULL, 0, &fresh), "fresh cache");
    static const int at[6] = {37, 0, 1, 49, 20, 64};
    for (int i = 0; i < 6; i++) {
        int pos = at[i];
        int n_past = -1;
        for (int use_decode = 0; use_decode < 2; use_decode++) {
            int n2 = use_decode ? 1 : N2;
            /* the original stream up to T (and a bit further for the last case) */
            int T0 = pos > T ? pos + 3 : T;
            TU_OK(dattn_cache_reset(c), "reset");
            TU_OK(dattn_layer_prefill(l, c, 0, 0, x, T0 <= T ? T0 : T, y), "prefill");
            if (T0 > T) {
                tu_rand_x(x + (size_t)T * E, NULL, (size_t)(T0 - T) * E);
                TU_OK(dattn_layer_prefill(l, c, 0, T, x + (size_t)T * E, T0 - T, y + (size_t)T * E),
                      "prefill more");
            }
            /* rewind to pos with new tokens */
            if (use_decode)
                TU_OK(dattn_layer_decode(l, c, 0, pos, x2, y2), "decode rewound to %d", pos);
            else
                TU_OK(dattn_layer_prefill(l, c, 0, pos, x2, n2, y2), "prefill rewound to %d", pos);
            TU_OK(dattn_cache_n_past(c, 0, &n_past), "n_past");
            assert_int_equal(n_past, pos + n2);
            /* a fresh run on x[0:pos] ++ x2 */
            TU_OK(dattn_cache_reset(fresh), "reset fresh");
            if (pos > 0)
                TU_OK(dattn_layer_prefill(l, fresh, 0, 0, x, pos, yf), "fresh prefix");
            TU_OK(dattn_layer_prefill(l, fresh, 0, pos, x2, n2, yf + (size_t)pos * E), "fresh tail");
            TU_CHECK_ERR(tu_rel_err_ff(y2, yf + (size_t)pos * E, (size_t)n2 * E), 1e-5,
                         "rewind to %d by %s vs fresh run", pos, use_decode ? "decode" : "prefill");
            /* and the reference on the same sequence */
            for (size_t k = 0; k < (size_t)pos * E; k++)
                xd[k] = x[k];
            for (size_t k = 0; k < (size_t)n2 * E; k++)
                xd[(size_t)pos * E + k] = x2[k];
            assert_int_equal(ref_layer(&t.rs, &t.rw, xd, pos + n2, yr), 0);
            TU_CHECK_ERR(tu_rel_err(y2, yr + (size_t)pos * E, (size_t)n2 * E), 1e-4,
                         "rewind to %d by %s vs ref", pos, use_decode ? "decode" : "prefill");
            /* continuing after the rewind keeps matching: one more decode */
            int q = pos + n2;
            float xn[256], yn[256], yfn[256];
            tu_rand_x(xn, NULL, (size_t)E);
            TU_OK(dattn_layer_decode(l, c, 0, q, xn, yn), "decode after rewind");
            TU_OK(dattn_layer_decode(l, fresh, 0, q, xn, yfn), "fresh decode");
            TU_CHECK_ERR(tu_rel_err_ff(yn, yfn, (size_t)E), 1e-5, "decode after rewind to %d", pos);
        }
        printf("  rewind to %2d: matches a fresh run and the reference\n", pos);
    }
    dattn_cache_free(c);
    dattn_cache_free(fresh);
    dattn_layer_free(l);
    dattn_backend_free(be);
    free(x); free(x2); free(y); free(y2); free(yf); free(xd); free(yr);
    tu_layer_free(&t);
}

int main(void)
{
    tu_init_seed("test_layer");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefill_shapes),
        cmocka_unit_test(test_decode_shapes),
        cmocka_unit_test(test_head_dim_shapes),
        cmocka_unit_test(test_split_points),
        cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_isa_threads),
        cmocka_unit_test(test_kv_types),
        cmocka_unit_test(test_sink_window),
        cmocka_unit_test(test_rewind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
