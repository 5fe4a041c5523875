/* The KV cache and its arena through the public API (DESIGN §3, §4, §7, §8): the arena size is
 * exactly what create takes (also at unaligned addresses, and nothing is written outside it),
 * full-cache and position errors leave the cache unchanged, impossible shapes are refused with a
 * message, save/restore round trips bit-exactly and refuses foreign, truncated or corrupt files
 * without touching the target, and every status has a name and a text.
 * Random data comes from a printed seed; DATTN_TEST_SEED=<n> replays it. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>

#include "dattn.h"
#include "ref_f64.h"
#include "test_util.h"

static dattn_backend *g_be;   /* one CPU backend (2 threads) for the suite */

static int suite_setup(void **state)
{
    (void)state;
    return tu_backend(2, NULL, &g_be) == DATTN_OK ? 0 : -1;
}

static int suite_teardown(void **state)
{
    (void)state;
    dattn_backend_free(g_be);
    return 0;
}

/* A file name under $TMPDIR (or /tmp) unique to this process. */
static void tmp_path(char *buf, size_t n, const char *tag)
{
    const char *dir = getenv("TMPDIR");
    snprintf(buf, n, "%s/dattn_test_cache_%ld_%s.kv", dir && *dir ? dir : "/tmp", (long)getpid(), tag);
}

static dattn_cache *new_cache(const tu_layer *t, dattn_cache_params p)
{
    dattn_cache *c = NULL;
    TU_OK(dattn_cache_create(g_be, &t->shape, &p, NULL, 0, &c), "cache_create n_ctx=%d kv=%s",
          p.n_ctx, tu_kv_name(p.kv_type));
    return c;
}

static dattn_layer *new_layer(const tu_layer *t)
{
    dattn_layer *l = NULL;
    TU_OK(dattn_layer_create(g_be, &t->shape, &t->w, &l), "layer_create");
    return l;
}

static int n_past_of(const dattn_cache *c, int slot)
{
    int n = -1;
    TU_OK(dattn_cache_n_past(c, slot, &n), "n_past");
    return n;
}

/* The reference output of the last token of x [T][E] (full causal, or sink+window when W > 0). */
static void ref_last(const tu_layer *t, const float *x, int T, int S, int W, double *y_last)
{
    size_t n = (size_t)T * t->E;
    double *xd = malloc(sizeof(double) * n), *y = malloc(sizeof(double) * n);
    assert_true(xd && y);
    for (size_t i = 0; i < n; i++)
        xd[i] = x[i];
    if (W > 0)
        assert_int_equal(ref_layer_sink_window(&t->rs, &t->rw, xd, T, S, W, y), 0);
    else
        assert_int_equal(ref_layer(&t->rs, &t->rw, xd, T, y), 0);
    memcpy(y_last, y + (size_t)(T - 1) * t->E, sizeof(double) * t->E);
    free(xd);
    free(y);
}

static float *rand_tokens(int T, int E)
{
    float *x = malloc(sizeof(float) * (size_t)T * E);
    assert_non_null(x);
    tu_rand_x(x, NULL, (size_t)T * E);
    return x;
}

/* ---- the arena -------------------------------------------------------------------------- */

/* A device backend keeps its cache in device memory: a caller's host buffer is refused with a
 * message, and the library's own reservation works. */
static void arena_on_device(tu_layer *t, dattn_layer *l)
{
    dattn_cache_params p = tu_cache_params(64, 8, DATTN_KV_F16, DATTN_POLICY_FULL, 0);
    size_t need = 0;
    assert_int_equal(dattn_cache_arena_bytes(g_be, &t->shape, &p, &need), DATTN_OK);
    assert_true(need > 0);
    unsigned char *buf = malloc(need);
    dattn_cache *c = NULL;
    assert_int_equal(dattn_cache_create(g_be, &t->shape, &p, buf, need, &c), DATTN_E_UNSUPPORTED);
    assert_null(c);
    assert_non_null(strstr(dattn_last_error(), "device memory"));
    assert_int_equal(dattn_cache_create(g_be, &t->shape, &p, NULL, 0, &c), DATTN_OK);
    dattn_cache_free(c);
    free(buf);
    dattn_layer_free(l);
    tu_layer_free(t);
}

static void test_arena_exact(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    tu_layer t;
    assert_int_equal(tu_layer_init(&t, 4, 2, 8, 2, 10000.0f, DATTN_DTYPE_F32, 1.5), 0);
    dattn_layer *l = new_layer(&t);
    if (tu_on_opencl()) {
        arena_on_device(&t, l);
        return;
    }
    enum { T = 40, GUARD = 256 };
    float *x = rand_tokens(T, t.E), y[T * 64];
    double *xd = malloc(sizeof(double) * T * 64), *yr = malloc(sizeof(double) * T * 64);
    for (int i = 0; i < T * t.E; i++)
        xd[i] = x[i];
    size_t prev[2] = {0, 0};
    for (int pol = 0; pol < 2; pol++) {
        if (pol == 0)
            assert_int_equal(ref_layer(&t.rs, &t.rw, xd, T, yr), 0);
        else
            assert_int_equal(ref_layer_sink_window(&t.rs, &t.rw, xd, T, 3, 9, yr), 0);
        for (int kv = DATTN_KV_F32; kv <= DATTN_KV_Q8; kv++) {
            dattn_cache_params p = tu_cache_params(pol ? 12 : T, 7, (dattn_kv_type)kv,
                                                   (dattn_kv_policy)pol, 3);
            size_t need = 0;
            TU_OK(dattn_cache_arena_bytes(g_be, &t.shape, &p, &need), "arena_bytes");
            assert_true(need > 0);
            if (pol == 0 && kv > DATTN_KV_F32)
                assert_true(need < prev[pol]);   /* narrower elements take fewer bytes */
            prev[pol] = need;
            uint8_t *raw = malloc(need + 2 * GUARD + 64);
            assert_non_null(raw);
            uint8_t *base = (uint8_t *)(((uintptr_t)raw + GUARD + 63) & ~(uintptr_t)63);
            static const int offs[4] = {0, 1, 3, 63};
            for (int oi = 0; oi < 4; oi++) {
                uint8_t *buf = base + offs[oi];
                dattn_cache *c = NULL;
                /* one byte less: refused, with a message, nothing created */
                TU_CHECK_ST(dattn_cache_create(g_be, &t.shape, &p, buf, need - 1, &c), DATTN_E_ARENA,
                            "arena of need-1 bytes at offset %d", offs[oi]);
                assert_null(c);
                assert_true(strlen(dattn_last_error()) > 0);
                /* exactly need bytes: works, and stays inside its bytes */
                memset(raw, 0xA5, need + 2 * GUARD + 64);
                TU_OK(dattn_cache_create(g_be, &t.shape, &p, buf, need, &c),
                      "arena of exactly %zu bytes at offset %d (%s, %s)", need, offs[oi],
                      tu_kv_name((dattn_kv_type)kv), pol ? "sink+window" : "full");
                TU_OK(dattn_layer_prefill(l, c, 0, 0, x, T / 2, y), "prefill");
                for (int i = T / 2; i < T; i++)
                    TU_OK(dattn_layer_decode(l, c, 0, i, x + (size_t)i * t.E, y + (size_t)i * t.E),
                          "decode");
                TU_CHECK_ERR(tu_rel_err(y, yr, (size_t)T * t.E), tu_kv_tol((dattn_kv_type)kv),
                             "caller arena at offset %d, %s, %s", offs[oi],
                             tu_kv_name((dattn_kv_type)kv), pol ? "sink+window" : "full");
                for (uint8_t *g = raw; g < buf; g++)
                    if (*g != 0xA5)
                        fail_msg("byte %td before the arena was written", buf - g);
                for (uint8_t *g = buf + need; g < raw + need + 2 * GUARD + 64; g++)
                    if (*g != 0xA5)
                        fail_msg("byte %td after the arena was written", g - (buf + need));
                dattn_cache_free(c);
            }
            free(raw);
            printf("  %-11s %-3s: arena %zu bytes; exact size works at offsets 0,1,3,63; one less "
                   "is DATTN_E_ARENA\n", pol ? "sink+window" : "full", tu_kv_name((dattn_kv_type)kv),
                   need);
        }
    }
    /* more context takes more bytes */
    dattn_cache_params a = tu_cache_params(100, 8, DATTN_KV_F16, DATTN_POLICY_FULL, 0), b = a;
    b.n_ctx = 1000;
    size_t na = 0, nb = 0;
    TU_OK(dattn_cache_arena_bytes(g_be, &t.shape, &a, &na), "arena_bytes");
    TU_OK(dattn_cache_arena_bytes(g_be, &t.shape, &b, &nb), "arena_bytes");
    assert_true(nb > na);
    assert_int_equal(dattn_cache_arena_bytes(g_be, &t.shape, &a, NULL), DATTN_E_INVALID_ARG);
    dattn_layer_free(l);
    free(x);
    free(xd);
    free(yr);
    tu_layer_free(&t);
}

/* ---- full cache and positions ------------------------------------------------------------ */

static void test_cache_full(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    tu_layer t;
    assert_int_equal(tu_layer_init(&t, 4, 2, 8, 5, 10000.0f, DATTN_DTYPE_F32, 1.5), 0);
    enum { N = 16 };
    const int E = t.E;
    dattn_layer *l = new_layer(&t);
    float *x = rand_tokens(N + 8, E), *xn = rand_tokens(8, E), y[(N + 8) * 64];
    double yr[64];
    for (int kv = DATTN_KV_F32; kv <= DATTN_KV_Q8; kv++) {
        dattn_cache *c = new_cache(&t, tu_cache_params(N, 8, (dattn_kv_type)kv, DATTN_POLICY_FULL, 0));
        TU_OK(dattn_layer_prefill(l, c, 0, 0, x, N, y), "prefill to n_ctx");
        assert_int_equal(n_past_of(c, 0), N);
        TU_CHECK_ST(dattn_layer_decode(l, c, 0, N, x + (size_t)N * E, y), DATTN_E_CACHE_FULL,
                    "decode at n_past == n_ctx");
        assert_true(strlen(dattn_last_error()) > 0);
        TU_CHECK_ST(dattn_layer_prefill(l, c, 0, N, x + (size_t)N * E, 1, y), DATTN_E_CACHE_FULL,
                    "prefill at n_ctx");
        /* rewinding prefills that would run past n_ctx are refused before writing anything */
        TU_CHECK_ST(dattn_layer_prefill(l, c, 0, 10, xn, 7, y), DATTN_E_CACHE_FULL,
                    "prefill 7 at 10 of n_ctx 16");
        TU_CHECK_ST(dattn_layer_prefill(l, c, 0, 0, x, N + 1, y), DATTN_E_CACHE_FULL,
                    "prefill n_ctx+1 at 0");
        assert_int_equal(n_past_of(c, 0), N);
        /* the cached positions 0..14 are intact: a rewound decode at 15 matches the reference */
        float xs[N * 64];
        memcpy(xs, x, sizeof(float) * (size_t)(N - 1) * E);
        memcpy(xs + (size_t)(N - 1) * E, xn, sizeof(float) * E);
        TU_OK(dattn_layer_decode(l, c, 0, N - 1, xn, y), "rewound decode at n_ctx-1");
        ref_last(&t, xs, N, 0, 0, yr);
        TU_CHECK_ERR(tu_rel_err(y, yr, (size_t)E), tu_kv_tol((dattn_kv_type)kv),
                     "decode at %d after DATTN_E_CACHE_FULL (%s)", N - 1, tu_kv_name((dattn_kv_type)kv));
        assert_int_equal(n_past_of(c, 0), N);
        dattn_cache_free(c);
    }
    free(x);
    free(xn);
    dattn_layer_free(l);
    tu_layer_free(&t);
}

static void test_prompt_too_long(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    tu_layer t;
    assert_int_equal(tu_layer_init(&t, 3, 1, 8, 1, 10000.0f, DATTN_DTYPE_F32, 1.5), 0);
    enum { N = 16, P = 5 };
    const int E = t.E;
    dattn_layer *l = new_layer(&t);
    float *x = rand_tokens(2 * N, E), *xn = rand_tokens(2 * N, E), y[2 * N * 64];
    double yr[64];
    dattn_cache *c = new_cache(&t, tu_cache_params(N, 4, DATTN_KV_F32, DATTN_POLICY_FULL, 0));
    TU_CHECK_ST(dattn_layer_prefill(l, c, 0, 0, x, N + 1, y), DATTN_E_CACHE_FULL, "prompt n_ctx+1");
    TU_CHECK_ST(dattn_layer_prefill(l, c, 0, 0, x, 2 * N, y), DATTN_E_CACHE_FULL, "prompt 2*n_ctx");
    assert_int_equal(n_past_of(c, 0), 0);
    TU_OK(dattn_layer_prefill(l, c, 0, 0, x, P, y), "prefill %d", P);
    TU_CHECK_ST(dattn_layer_prefill(l, c, 0, P, xn, N - P + 1, y), DATTN_E_CACHE_FULL,
                "prompt of %d at %d", N - P + 1, P);
    TU_CHECK_ST(dattn_layer_prefill(l, c, 0, 2, xn, N - 1, y), DATTN_E_CACHE_FULL,
                "rewinding prompt of %d at 2", N - 1);
    TU_CHECK_ST(dattn_layer_prefill(l, c, 0, 0, xn, N + 1, y), DATTN_E_CACHE_FULL,
                "rewinding prompt of %d at 0", N + 1);
    assert_int_equal(n_past_of(c, 0), P);
    /* nothing was written: decoding at P continues the first P tokens */
    TU_OK(dattn_layer_decode(l, c, 0, P, x + (size_t)P * E, y), "decode at %d", P);
    ref_last(&t, x, P + 1, 0, 0, yr);
    TU_CHECK_ERR(tu_rel_err(y, yr, (size_t)E), 1e-4, "decode after refused prompts");
    /* and a prompt of exactly the room left fits */
    TU_OK(dattn_layer_prefill(l, c, 0, P + 1, x + (size_t)(P + 1) * E, N - P - 1, y), "fill up");
    assert_int_equal(n_past_of(c, 0), N);
    dattn_cache_free(c);
    free(x);
    free(xn);
    dattn_layer_free(l);
    tu_layer_free(&t);
}

static void test_wrong_position(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    tu_layer t;
    assert_int_equal(tu_layer_init(&t, 2, 2, 16, 8, 10000.0f, DATTN_DTYPE_F32, 1.5), 0);
    const int E = t.E;
    dattn_layer *l = new_layer(&t);
    enum { NCTX = 12, S = 2, T = 41 };
    float *x = rand_tokens(T + 1, E), y[(T + 1) * 64];
    double yr[64];
    for (int pol = 0; pol < 2; pol++) {
        dattn_cache *c = new_cache(&t, tu_cache_params(pol ? NCTX : 64, 5, DATTN_KV_F32,
                                                       (dattn_kv_policy)pol, S));
        int n = pol ? T : 9;   /* sink+window: well past n_ctx */
        TU_OK(dattn_layer_prefill(l, c, 0, 0, x, n, y), "prefill %d", n);
        const int bad_full[3] = {n + 1, n + 5, -1};
        const int bad_sw[5] = {n + 1, n - 1, 0, NCTX, -1};
        const int *bad = pol ? bad_sw : bad_full;
        int n_bad = pol ? 5 : 3;
        for (int i = 0; i < n_bad; i++) {
            TU_CHECK_ST(dattn_layer_decode(l, c, 0, bad[i], x, y), DATTN_E_POSITION,
                        "%s: decode at %d with n_past %d", pol ? "sink+window" : "full", bad[i], n);
            assert_true(strlen(dattn_last_error()) > 0);
            TU_CHECK_ST(dattn_layer_prefill(l, c, 0, bad[i], x, 2, y), DATTN_E_POSITION,
                        "%s: prefill at %d with n_past %d", pol ? "sink+window" : "full", bad[i], n);
            assert_int_equal(n_past_of(c, 0), n);
        }
        TU_OK(dattn_layer_decode(l, c, 0, n, x + (size_t)n * E, y), "decode at n_past");
        ref_last(&t, x, n + 1, S, pol ? NCTX - S : 0, yr);
        TU_CHECK_ERR(tu_rel_err(y, yr, (size_t)E), 1e-4, "%s: decode after refused positions",
                     pol ? "sink+window" : "full");
        /* bad slots and token counts are invalid arguments */
        assert_int_equal(dattn_layer_decode(l, c, 1, n + 1, x, y), DATTN_E_INVALID_ARG);
        assert_int_equal(dattn_layer_decode(l, c, -1, n + 1, x, y), DATTN_E_INVALID_ARG);
        assert_int_equal(dattn_layer_prefill(l, c, 0, n + 1, x, 0, y), DATTN_E_INVALID_ARG);
        assert_int_equal(dattn_layer_decode(l, c, 0, n + 1, NULL, y), DATTN_E_INVALID_ARG);
        assert_int_equal(n_past_of(c, 0), n + 1);
        dattn_cache_free(c);
    }
    free(x);
    dattn_layer_free(l);
    tu_layer_free(&t);
}

/* ---- shapes ------------------------------------------------------------------------------ */

static void test_bad_shapes(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    typedef struct { int E, H, Hkv, l; float theta; const char *word, *value; } bad_shape;
    static const bad_shape bad[] = {
        {20, 3, 3, 0, 1e4f, "model_dim", "20"},       /* E % 2H != 0 */
        {64, 3, 1, 0, 1e4f, "model_dim", "64"},
        {48, 4, 3, 0, 1e4f, "n_kv_heads", "3"},       /* H % Hkv != 0 */
        {64, 2, 4, 0, 1e4f, "n_kv_heads", "4"},       /* Hkv > H */
        {12, 2, 2, 0, 1e4f, "head_dim", "3"},         /* d = 3, odd */
        {4, 2, 2, 0, 1e4f, "head_dim", "1"},          /* d = 1 */
        {0, 2, 2, 0, 1e4f, "model_dim", "0"},
        {-64, 2, 2, 0, 1e4f, "model_dim", "-64"},
        {64, 0, 1, 0, 1e4f, "n_heads", "0"},
        {64, -2, -2, 0, 1e4f, "n_heads", "-2"},
        {64, 2, 0, 0, 1e4f, "n_kv_heads", "0"},
        {64, 2, -1, 0, 1e4f, "n_kv_heads", "-1"},
        {64, 2, 2, -1, 1e4f, "layer_index", "-1"},
        {64, 2, 2, 0, 0.0f, "rope_theta", "0"},
        {64, 2, 2, 0, -5.0f, "rope_theta", "-5"},
    };
    static float dummy[64 * 64];
    dattn_layer_weights w = {DATTN_DTYPE_F32, dummy, dummy, dummy, dummy, dummy, dummy, dummy,
                             dummy, dummy};
    dattn_cache_params p = tu_cache_params(32, 8, DATTN_KV_F16, DATTN_POLICY_FULL, 0);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        dattn_layer_shape s = dattn_layer_default_shape();
        s.model_dim = bad[i].E;
        s.n_heads = bad[i].H;
        s.n_kv_heads = bad[i].Hkv;
        s.layer_index = bad[i].l;
        s.rope_theta = bad[i].theta;
        dattn_layer *l = (dattn_layer *)&w;
        dattn_cache *c = (dattn_cache *)&w;
        size_t bytes = 0;
        for (int api = 0; api < 3; api++) {
            dattn_status st = api == 0   ? dattn_layer_create(g_be, &s, &w, &l)
                              : api == 1 ? dattn_cache_arena_bytes(g_be, &s, &p, &bytes)
                                         : dattn_cache_create(g_be, &s, &p, NULL, 0, &c);
            const char *msg = dattn_last_error();
            TU_CHECK_ST(st, DATTN_E_SHAPE, "E=%d H=%d Hkv=%d l=%d theta=%g via %s", bad[i].E,
                        bad[i].H, bad[i].Hkv, bad[i].l, (double)bad[i].theta,
                        api == 0 ? "layer_create" : api == 1 ? "cache_arena_bytes" : "cache_create");
            if (!strstr(msg, bad[i].word) || !strstr(msg, bad[i].value))
                fail_msg("E=%d H=%d Hkv=%d: message '%s' does not name '%s' = %s", bad[i].E,
                         bad[i].H, bad[i].Hkv, msg, bad[i].word, bad[i].value);
        }
        assert_null(l);
        assert_null(c);
        printf("  E=%3d H=%2d Hkv=%2d l=%2d theta=%-6g -> %s\n", bad[i].E, bad[i].H, bad[i].Hkv,
               bad[i].l, (double)bad[i].theta, dattn_last_error());
    }
    /* a layer and a cache of different shapes do not run together */
    tu_layer a, b;
    assert_int_equal(tu_layer_init(&a, 4, 2, 8, 0, 1e4f, DATTN_DTYPE_F32, 1.0), 0);
    assert_int_equal(tu_layer_init(&b, 4, 4, 8, 0, 1e4f, DATTN_DTYPE_F32, 1.0), 0);
    dattn_layer *l = new_layer(&a);
    dattn_cache *c = new_cache(&b, p);
    float x[64], y[64];
    tu_rand_x(x, NULL, 64);
    TU_CHECK_ST(dattn_layer_decode(l, c, 0, 0, x, y), DATTN_E_SHAPE, "layer/cache shape mismatch");
    assert_int_equal(n_past_of(c, 0), 0);
    dattn_cache_free(c);
    dattn_layer_free(l);
    /* bad cache params are refused with the field's name */
    typedef struct { int n_ctx, max_batch, n_sink, n_layers, policy; const char *word; } bad_params;
    static const bad_params bp[] = {
        {0, 8, 0, 1, DATTN_POLICY_FULL, "n_ctx"},
        {-4, 8, 0, 1, DATTN_POLICY_FULL, "n_ctx"},
        {32, 0, 0, 1, DATTN_POLICY_FULL, "max_batch"},
        {32, 8, 0, 0, DATTN_POLICY_FULL, "n_layers"},
        {32, 8, 32, 1, DATTN_POLICY_SINK_WINDOW, "n_sink"},
        {32, 8, -1, 1, DATTN_POLICY_SINK_WINDOW, "n_sink"},
    };
    for (size_t i = 0; i < sizeof bp / sizeof *bp; i++) {
        dattn_cache_params q = tu_cache_params(bp[i].n_ctx, bp[i].max_batch, DATTN_KV_F16,
                                               (dattn_kv_policy)bp[i].policy, bp[i].n_sink);
        q.n_layers = bp[i].n_layers;
        size_t bytes;
        dattn_status st = dattn_cache_arena_bytes(g_be, &a.shape, &q, &bytes);
        if (st != DATTN_E_INVALID_ARG && st != DATTN_E_SHAPE)
            fail_msg("cache params %s: got %s", bp[i].word, dattn_status_name(st));
        if (!strstr(dattn_last_error(), bp[i].word))
            fail_msg("message '%s' does not name %s", dattn_last_error(), bp[i].word);
    }
    tu_layer_free(&a);
    tu_layer_free(&b);
}

/* ---- save / restore ---------------------------------------------------------------------- */

/* Decodes k tokens of x on slot `slot` from its n_past, then one prefill of 5, into y. */
static void continue_run(dattn_layer *l, dattn_cache *c, int slot, const float *x, int k, int E,
                         float *y)
{
    int n = n_past_of(c, slot);
    for (int i = 0; i < k; i++)
        TU_OK(dattn_layer_decode(l, c, slot, n + i, x + (size_t)i * E, y + (size_t)i * E),
              "continue decode");
    TU_OK(dattn_layer_prefill(l, c, slot, n + k, x + (size_t)k * E, 5, y + (size_t)k * E),
          "continue prefill");
}

static void test_save_restore(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    tu_layer t;
    assert_int_equal(tu_layer_init(&t, 4, 2, 8, 4, 10000.0f, DATTN_DTYPE_F32, 1.5), 0);
    const int E = t.E;
    dattn_layer *l = new_layer(&t);
    enum { K = 10, TMAX = 80 };
    float *x = rand_tokens(TMAX, E), *xc = rand_tokens(K + 5, E), *junk = rand_tokens(TMAX, E);
    float *ya = malloc(sizeof(float) * (K + 5) * E), *yb = malloc(sizeof(float) * (K + 5) * E);
    float *scratch = malloc(sizeof(float) * TMAX * E);
    char path[512];
    tmp_path(path, sizeof path, "roundtrip");
    for (int pol = 0; pol < 2; pol++)
        for (int kv = DATTN_KV_F32; kv <= DATTN_KV_Q8; kv++) {
            dattn_cache_params p = pol ? tu_cache_params(20, 6, (dattn_kv_type)kv,
                                                         DATTN_POLICY_SINK_WINDOW, 4)
                                       : tu_cache_params(100, 16, (dattn_kv_type)kv,
                                                         DATTN_POLICY_FULL, 0);
            p.n_layers = 2;
            /* slot 0: past a page (full) or several times around the ring (sink+window);
             * slot 1: a few tokens; then also the empty cache */
            int n0 = pol ? 67 : 70, n1 = 7;
            for (int empty = 0; empty < 2; empty++) {
                dattn_cache *a = new_cache(&t, p), *b = new_cache(&t, p);
                if (!empty) {
                    TU_OK(dattn_layer_prefill(l, a, 0, 0, x, n0, scratch), "fill slot 0");
                    TU_OK(dattn_layer_prefill(l, a, 1, 0, x + 3 * E, n1, scratch), "fill slot 1");
                }
                /* b holds something else before the restore */
                TU_OK(dattn_layer_prefill(l, b, 0, 0, junk, 13, scratch), "junk");
                TU_OK(dattn_cache_save(a, path), "save (%s, %s)", pol ? "sink+window" : "full",
                      tu_kv_name((dattn_kv_type)kv));
                TU_OK(dattn_cache_restore(b, path), "restore (%s, %s)", pol ? "sink+window" : "full",
                      tu_kv_name((dattn_kv_type)kv));
                for (int s = 0; s < 2; s++)
                    assert_int_equal(n_past_of(b, s), n_past_of(a, s));
                for (int s = 0; s < 2; s++) {
                    continue_run(l, a, s, xc, K, E, ya);
                    continue_run(l, b, s, xc, K, E, yb);
                    if (memcmp(ya, yb, sizeof(float) * (K + 5) * E) != 0)
                        fail_msg("%s %s slot %d%s: continuing the restored cache differs from the "
                                 "original (rel %.3e; seed %llu)", pol ? "sink+window" : "full",
                                 tu_kv_name((dattn_kv_type)kv), s, empty ? " (empty)" : "",
                                 tu_rel_err_ff(yb, ya, (size_t)(K + 5) * E),
                                 (unsigned long long)tu_seed);
                }
                dattn_cache_free(a);
                dattn_cache_free(b);
            }
            printf("  %-11s %-3s: save, restore into a used cache, continue: bit-exact\n",
                   pol ? "sink+window" : "full", tu_kv_name((dattn_kv_type)kv));
        }
    remove(path);
    free(x);
    free(xc);
    free(junk);
    free(ya);
    free(yb);
    free(scratch);
    dattn_layer_free(l);
    tu_layer_free(&t);
}

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void write_file(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* A target cache and its twin, fed the same tokens; after a refused restore into the target,
 * both continue with one decode and must agree bit for bit (the target is unchanged). */
static void expect_refused(const tu_layer *t, dattn_layer *l, dattn_cache_params p, const char *path,
                           dattn_status want, const char *word, const char *what)
{
    const int E = t->E;
    dattn_cache *c = new_cache(t, p), *twin = new_cache(t, p);
    float *x = rand_tokens(12, E), *y = malloc(sizeof(float) * 12 * E);
    float *y1 = malloc(sizeof(float) * E), *y2 = malloc(sizeof(float) * E);
    TU_OK(dattn_layer_prefill(l, c, 0, 0, x, 11, y), "target prefill");
    TU_OK(dattn_layer_prefill(l, twin, 0, 0, x, 11, y), "twin prefill");
    dattn_status st = dattn_cache_restore(c, path);
    TU_CHECK_ST(st, want, "restore of %s", what);
    const char *msg = dattn_last_error();
    if (word && !strstr(msg, word))
        fail_msg("restore of %s: message '%s' does not name '%s'", what, msg, word);
    printf("  %-34s -> %s: %s\n", what, dattn_status_name(st), msg);
    assert_int_equal(n_past_of(c, 0), 11);
    TU_OK(dattn_layer_decode(l, c, 0, 11, x + 11 * E, y1), "target decode");
    TU_OK(dattn_layer_decode(l, twin, 0, 11, x + 11 * E, y2), "twin decode");
    if (memcmp(y1, y2, sizeof(float) * E) != 0)
        fail_msg("restore of %s changed the target cache", what);
    dattn_cache_free(c);
    dattn_cache_free(twin);
    free(x);
    free(y);
    free(y1);
    free(y2);
}

static void test_restore_rejects(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    tu_layer t, t_e, t_kv;
    assert_int_equal(tu_layer_init(&t, 4, 2, 8, 4, 10000.0f, DATTN_DTYPE_F32, 1.5), 0);
    assert_int_equal(tu_layer_init(&t_e, 4, 2, 12, 4, 10000.0f, DATTN_DTYPE_F32, 1.5), 0);
    assert_int_equal(tu_layer_init(&t_kv, 4, 4, 8, 4, 10000.0f, DATTN_DTYPE_F32, 1.5), 0);
    dattn_layer *l = new_layer(&t), *l_e = new_layer(&t_e), *l_kv = new_layer(&t_kv);
    const int E = t.E;
    dattn_cache_params p = tu_cache_params(100, 16, DATTN_KV_F16, DATTN_POLICY_FULL, 0);
    char path[512], bad[512];
    tmp_path(path, sizeof path, "source");
    tmp_path(bad, sizeof bad, "bad");
    /* the source: 70 tokens (two pages) */
    dattn_cache *src = new_cache(&t, p);
    float *x = rand_tokens(70, E), *y = malloc(sizeof(float) * 70 * E);
    TU_OK(dattn_layer_prefill(l, src, 0, 0, x, 70, y), "source prefill");
    TU_OK(dattn_cache_save(src, path), "save");
    dattn_cache_free(src);

    /* files for another shape, element type, policy or size */
    dattn_cache_params q = p;
    expect_refused(&t_e, l_e, p, path, DATTN_E_FORMAT, "model_dim", "another model_dim");
    expect_refused(&t_kv, l_kv, p, path, DATTN_E_FORMAT, "n_kv_heads", "another n_kv_heads");
    q = p, q.kv_type = DATTN_KV_F32;
    expect_refused(&t, l, q, path, DATTN_E_FORMAT, "kv_type", "another kv_type (f32)");
    q = p, q.kv_type = DATTN_KV_Q8;
    expect_refused(&t, l, q, path, DATTN_E_FORMAT, "kv_type", "another kv_type (q8)");
    q = p, q.policy = DATTN_POLICY_SINK_WINDOW, q.n_sink = 4;
    expect_refused(&t, l, q, path, DATTN_E_FORMAT, "policy", "another policy");
    q = p, q.n_ctx = 128;
    expect_refused(&t, l, q, path, DATTN_E_FORMAT, "n_ctx", "another n_ctx");
    q = p, q.n_layers = 2;
    expect_refused(&t, l, q, path, DATTN_E_FORMAT, "n_layers", "another n_layers");
    q = p, q.max_batch = 8;
    expect_refused(&t, l, q, path, DATTN_E_FORMAT, "max_batch", "another max_batch");

    /* truncated and corrupt files */
    size_t n;
    uint8_t *file = read_file(path, &n);
    const size_t cuts[5] = {n - 1, n - 8, n / 2, 60, 3};
    for (int i = 0; i < 5; i++) {
        write_file(bad, file, cuts[i]);
        char what[64];
        snprintf(what, sizeof what, "a file cut to %zu of %zu bytes", cuts[i], n);
        expect_refused(&t, l, p, bad, DATTN_E_FORMAT, NULL, what);
    }
    write_file(bad, file, 0);
    expect_refused(&t, l, p, bad, DATTN_E_FORMAT, NULL, "an empty file");
    /* one flipped bit in the page data (several places), the checksum, the magic */
    for (int i = 0; i < 4; i++) {
        size_t at = i == 3 ? n - 3 : 100 + (size_t)tu_int(0, (int)(n - 120));
        uint8_t orig = file[at];
        file[at] ^= (uint8_t)(1u << tu_int(0, 7));
        write_file(bad, file, n);
        char what[64];
        snprintf(what, sizeof what, "a flipped bit at byte %zu of %zu", at, n);
        expect_refused(&t, l, p, bad, DATTN_E_FORMAT, i < 3 ? "checksum" : NULL, what);
        file[at] = orig;
    }
    file[0] ^= 0x20;
    write_file(bad, file, n);
    expect_refused(&t, l, p, bad, DATTN_E_FORMAT, NULL, "a wrong magic");
    file[0] ^= 0x20;
    /* appended garbage */
    uint8_t *longer = malloc(n + 16);
    memcpy(longer, file, n);
    memset(longer + n, 0x5a, 16);
    write_file(bad, longer, n + 16);
    expect_refused(&t, l, p, bad, DATTN_E_FORMAT, NULL, "a file with 16 bytes appended");
    free(longer);
    /* a file that does not exist */
    remove(bad);
    expect_refused(&t, l, p, bad, DATTN_E_IO, NULL, "a missing file");
    /* the untouched file still restores */
    dattn_cache *c = new_cache(&t, p);
    TU_OK(dattn_cache_restore(c, path), "restore of the good file");
    assert_int_equal(n_past_of(c, 0), 70);
    dattn_cache_free(c);
    remove(path);
    free(file);
    free(x);
    free(y);
    dattn_layer_free(l);
    dattn_layer_free(l_e);
    dattn_layer_free(l_kv);
    tu_layer_free(&t);
    tu_layer_free(&t_e);
    tu_layer_free(&t_kv);
}

/* ---- statuses and messages ----------------------------------------------------------------- */

static void test_status_names(void **state)
{
    (void)state;
    static const struct { dattn_status st; const char *name; } codes[] = {
        {DATTN_OK, "DATTN_OK"},
        {DATTN_E_INVALID_ARG, "DATTN_E_INVALID_ARG"},
        {DATTN_E_SHAPE, "DATTN_E_SHAPE"},
        {DATTN_E_NOMEM, "DATTN_E_NOMEM"},
        {DATTN_E_ARENA, "DATTN_E_ARENA"},
        {DATTN_E_CACHE_FULL, "DATTN_E_CACHE_FULL"},
        {DATTN_E_POSITION, "DATTN_E_POSITION"},
        {DATTN_E_IO, "DATTN_E_IO"},
        {DATTN_E_FORMAT, "DATTN_E_FORMAT"},
        {DATTN_E_UNSUPPORTED, "DATTN_E_UNSUPPORTED"},
        {DATTN_E_OPENCL, "DATTN_E_OPENCL"},
        {DATTN_E_THREAD, "DATTN_E_THREAD"},
        {DATTN_E_NONFINITE, "DATTN_E_NONFINITE"},
    };
    enum { N = sizeof codes / sizeof *codes };
    for (int i = 0; i < N; i++) {
        assert_string_equal(dattn_status_name(codes[i].st), codes[i].name);
        const char *text = dattn_status_text(codes[i].st);
        assert_non_null(text);
        assert_true(strlen(text) > 3);
        for (int k = 0; k < i; k++)
            assert_string_not_equal(text, dattn_status_text(codes[k].st));
    }
    static const int unknown[4] = {1, -13, -100, 12345};
    for (int i = 0; i < 4; i++) {
        assert_string_equal(dattn_status_name((dattn_status)unknown[i]), "DATTN_E_UNKNOWN");
        assert_non_null(dattn_status_text((dattn_status)unknown[i]));
        assert_true(strlen(dattn_status_text((dattn_status)unknown[i])) > 0);
    }
}

static void *thread_error(void *arg)
{
    char *out = arg;
    snprintf(out, 256, "%s", dattn_last_error());   /* "" before any failure on this thread */
    dattn_cache *c;
    dattn_status st = dattn_cache_create(NULL, NULL, NULL, NULL, 0, &c);
    snprintf(out + 256, 256, "%d:%s", (int)st, dattn_last_error());
    return NULL;
}

static void test_last_error(void **state)
{
    (void)state;
    assert_non_null(dattn_last_error());
    dattn_cache *c = (dattn_cache *)&c;
    assert_int_equal(dattn_cache_create(g_be, NULL, NULL, NULL, 0, &c), DATTN_E_INVALID_ARG);
    assert_null(c);
    assert_true(strlen(dattn_last_error()) > 0);
    assert_int_equal(dattn_cache_create(g_be, NULL, NULL, NULL, 0, NULL), DATTN_E_INVALID_ARG);
    char main_msg[256];
    snprintf(main_msg, sizeof main_msg, "%s", dattn_last_error());
    assert_true(strlen(main_msg) > 0);
    assert_int_equal(dattn_backend_create(NULL, NULL), DATTN_E_INVALID_ARG);
    assert_true(strlen(dattn_last_error()) > 0);
    dattn_backend_params bp = dattn_backend_default_params();
    bp.type = DATTN_BACKEND_CPU;
    bp.n_threads = -3;
    dattn_backend *be = (dattn_backend *)&be;
    assert_int_equal(dattn_backend_create(&bp, &be), DATTN_E_INVALID_ARG);
    assert_null(be);
    assert_non_null(strstr(dattn_last_error(), "n_threads"));
    snprintf(main_msg, sizeof main_msg, "%s", dattn_last_error());
    /* the message is per thread */
    char other[512] = {0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, thread_error, other), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_string_equal(other, "");
    assert_true(strlen(other + 256) > 3);
    assert_string_equal(dattn_last_error(), main_msg);
    /* a load of a file that does not exist names it */
    dattn_layer *l = NULL;
    assert_int_equal(dattn_layer_load(g_be, "/nonexistent/dattn-layer.safetensors", &l), DATTN_E_IO);
    assert_non_null(strstr(dattn_last_error(), "dattn-layer.safetensors"));
}

int main(void)
{
    tu_init_seed("test_cache");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_exact),
        cmocka_unit_test(test_cache_full),
        cmocka_unit_test(test_prompt_too_long),
        cmocka_unit_test(test_wrong_position),
        cmocka_unit_test(test_bad_shapes),
        cmocka_unit_test(test_save_restore),
        cmocka_unit_test(test_restore_rejects),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_last_error),
    };
    return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
