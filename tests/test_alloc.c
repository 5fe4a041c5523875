/* No allocation on the token path (DESIGN §3): this binary interposes malloc, calloc, realloc,
 * free, posix_memalign, aligned_alloc, memalign, valloc and pvalloc (forwarding to glibc's
 * __libc_* entry points) and counts every call, on every thread, while a flag is set. Backend
 * (2 threads), layer and cache are made first; then 1,000+ decode steps and several prefill calls
 * must make zero calls, for f32, f16 and q8 KV and for sink+window far past n_ctx.
 * A positive control proves the counter sees both the test's and the library's allocations. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dattn.h"
#include "model_util.h"
#include "ref_f64.h"
#include "test_util.h"

/* ---- the interposer ----------------------------------------------------------------------- */

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
extern void *__libc_memalign(size_t align, size_t n);

static atomic_int counting;
static atomic_long n_allocs, n_frees;

static inline void count_alloc(void)
{
    if (atomic_load_explicit(&counting, memory_order_relaxed))
        atomic_fetch_add_explicit(&n_allocs, 1, memory_order_relaxed);
}

void *malloc(size_t n)
{
    count_alloc();
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    count_alloc();
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    count_alloc();
    return __libc_realloc(p, n);
}

void free(void *p)
{
    if (p && atomic_load_explicit(&counting, memory_order_relaxed))
        atomic_fetch_add_explicit(&n_frees, 1, memory_order_relaxed);
    __libc_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    count_alloc();
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return EINVAL;
    void *p = __libc_memalign(align, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

void *aligned_alloc(size_t align, size_t n)
{
    count_alloc();
    return __libc_memalign(align, n);
}

void *memalign(size_t align, size_t n)
{
    count_alloc();
    return __libc_memalign(align, n);
}

void *valloc(size_t n)
{
    count_alloc();
    return __libc_memalign(4096, n);
}

void *pvalloc(size_t n)
{
    count_alloc();
    return __libc_memalign(4096, (n + 4095) & ~(size_t)4095);
}

static void count_start(void)
{
    atomic_store(&n_allocs, 0);
    atomic_store(&n_frees, 0);
    atomic_store(&counting, 1);
}

static void count_stop(void) { atomic_store(&counting, 0); }

/* ---- tests -------------------------------------------------------------------------------- */

/* Calls through volatile pointers so the compiler cannot elide a malloc/free pair. */
static void *(*volatile p_malloc)(size_t) = malloc;
static void *(*volatile p_calloc)(size_t, size_t) = calloc;
static void *(*volatile p_realloc)(void *, size_t) = realloc;
static void (*volatile p_free)(void *) = free;
static int (*volatile p_posix_memalign)(void **, size_t, size_t) = posix_memalign;
static void *(*volatile p_aligned_alloc)(size_t, size_t) = aligned_alloc;

static void test_counter_works(void **state)
{
    (void)state;
    count_start();
    void *p = p_malloc(16);
    count_stop();
    assert_non_null(p);
    assert_int_equal(atomic_load(&n_allocs), 1);
    assert_int_equal(atomic_load(&n_frees), 0);
    count_start();
    p_free(p);
    count_stop();
    assert_int_equal(atomic_load(&n_allocs), 0);
    assert_int_equal(atomic_load(&n_frees), 1);

    count_start();
    void *a = p_calloc(3, 8);
    void *b = p_realloc(NULL, 24);
    b = p_realloc(b, 4096);
    void *c = NULL;
    int rc = p_posix_memalign(&c, 64, 100);
    void *d = p_aligned_alloc(64, 128);
    count_stop();
    assert_true(a && b && c && d && rc == 0);
    assert_int_equal(((uintptr_t)c | (uintptr_t)d) & 63, 0);
    assert_int_equal(atomic_load(&n_allocs), 5);
    p_free(a);
    p_free(b);
    p_free(c);
    p_free(d);

    /* the library's allocations go through the interposer too (it is linked statically) */
    dattn_backend *be = NULL;
    count_start();
    dattn_status st = tu_backend(2, NULL, &be);
    count_stop();
    assert_int_equal(st, DATTN_OK);
    long made = atomic_load(&n_allocs);
    printf("  counter: 1 malloc -> 1, 5 other calls -> 5, backend create -> %ld allocations\n", made);
    assert_true(made > 0);
    count_start();
    dattn_backend_free(be);
    count_stop();
    assert_true(atomic_load(&n_frees) > 0);
}

/* Once dattn_backend_create has returned, the backend's threads make no heap calls of their own:
 * nothing may run on the heap behind the caller's back while it counts (or times) the token path. */
static void test_backend_quiet_after_create(void **state)
{
    (void)state;
    for (int round = 0; round < 5; round++) {
        dattn_backend *be = NULL;
        assert_int_equal(tu_backend(16, NULL, &be), DATTN_OK);
        count_start();
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        count_stop();
        long allocs = atomic_load(&n_allocs), frees = atomic_load(&n_frees);
        dattn_backend_free(be);
        if (allocs || frees)
            fail_msg("round %d: %ld allocations and %ld frees by an idle 16-thread backend in the "
                     "20 ms after dattn_backend_create returned", round, allocs, frees);
    }
}

typedef struct run_case {
    dattn_kv_type kv;
    dattn_kv_policy policy;
    int n_ctx, n_sink, max_batch;
} run_case;

/* Backend, layer and cache first; then count over prefill calls (chunked), 1,000+ decode steps,
 * a rewind (full policy), more prefill and decode. */
static void token_path(const run_case *k)
{
    tu_seed_case(k->policy == DATTN_POLICY_FULL ? tu_kv_name(k->kv) : "sink+window");
    enum { STEPS = 1100, PRE = 40, MID = 37, TAIL = 30 };
    const int T = PRE + STEPS + MID + TAIL;
    tu_layer t;
    assert_int_equal(tu_layer_init(&t, 4, 2, 8, 3, 10000.0f, DATTN_DTYPE_F16, 1.5), 0);
    const int E = t.E;
    dattn_backend *be = NULL;
    dattn_layer *l = NULL;
    dattn_cache *c = NULL;
    TU_OK(tu_backend(2, NULL, &be), "backend");
    TU_OK(dattn_layer_create(be, &t.shape, &t.w, &l), "layer");
    dattn_cache_params p = tu_cache_params(k->n_ctx, k->max_batch, k->kv, k->policy, k->n_sink);
    TU_OK(dattn_cache_create(be, &t.shape, &p, NULL, 0, &c), "cache");
    float *x = malloc(sizeof(float) * (size_t)T * E), *y = malloc(sizeof(float) * (size_t)T * E);
    assert_true(x && y);
    tu_rand_x(x, NULL, (size_t)T * E);
    memset(y, 0, sizeof(float) * (size_t)T * E);
    int n_err = 0, n_calls = 0, pos = 0, n_past = -1;
    dattn_status first_bad = DATTN_OK;
#define RUN(call)                                   \
    do {                                            \
        dattn_status s_ = (call);                   \
        n_calls++;                                  \
        if (s_ != DATTN_OK && n_err++ == 0)         \
            first_bad = s_;                         \
    } while (0)

    count_start();
    RUN(dattn_layer_prefill(l, c, 0, pos, x, PRE, y));   /* > max_batch: chunked */
    pos += PRE;
    for (int i = 0; i < STEPS; i++, pos++)
        RUN(dattn_layer_decode(l, c, 0, pos, x + (size_t)pos * E, y + (size_t)pos * E));
    if (k->policy == DATTN_POLICY_FULL) {
        pos -= 50;                                           /* rewind */
        RUN(dattn_layer_prefill(l, c, 0, pos, x + (size_t)pos * E, 5, y + (size_t)pos * E));
        pos += 5;
    }
    RUN(dattn_layer_prefill(l, c, 0, pos, x + (size_t)pos * E, MID, y + (size_t)pos * E));
    pos += MID;
    RUN(dattn_cache_n_past(c, 0, &n_past));
    for (int i = 0; i < TAIL; i++, pos++)
        RUN(dattn_layer_decode(l, c, 0, pos, x + (size_t)pos * E, y + (size_t)pos * E));
    count_stop();
#undef RUN

    long allocs = atomic_load(&n_allocs), frees = atomic_load(&n_frees);
    printf("  %-11s %-3s n_ctx %4d: %d calls (%d tokens, n_past %d): %ld allocations, %ld frees\n",
           k->policy == DATTN_POLICY_FULL ? "full" : "sink+window", tu_kv_name(k->kv), k->n_ctx,
           n_calls, pos, n_past, allocs, frees);
    if (n_err)
        fail_msg("%d calls failed, the first with %s: %s", n_err, dattn_status_name(first_bad),
                 dattn_last_error());
    assert_int_equal(allocs, 0);
    assert_int_equal(frees, 0);
    int last = -1;
    TU_OK(dattn_cache_n_past(c, 0, &last), "n_past");
    assert_int_equal(last, pos);
    /* the outputs were really computed */
    double ss = 0.0;
    for (size_t i = (size_t)(pos - TAIL) * E; i < (size_t)pos * E; i++)
        ss += (double)y[i] * y[i];
    assert_true(ss > 0.0 && isfinite(ss));
    dattn_cache_free(c);
    dattn_layer_free(l);
    dattn_backend_free(be);
    free(x);
    free(y);
    tu_layer_free(&t);
}

static void test_no_alloc_f32(void **state)
{
    (void)state;
    run_case k = {DATTN_KV_F32, DATTN_POLICY_FULL, 1300, 0, 16};
    token_path(&k);
}

static void test_no_alloc_f16(void **state)
{
    (void)state;
    run_case k = {DATTN_KV_F16, DATTN_POLICY_FULL, 1300, 0, 16};
    token_path(&k);
}

static void test_no_alloc_q8(void **state)
{
    (void)state;
    run_case k = {DATTN_KV_Q8, DATTN_POLICY_FULL, 1300, 0, 16};
    token_path(&k);
}

static void test_no_alloc_sink_window(void **state)
{
    (void)state;
    run_case k = {DATTN_KV_F16, DATTN_POLICY_SINK_WINDOW, 100, 4, 16};   /* ~12 times past n_ctx */
    token_path(&k);
    run_case k8 = {DATTN_KV_Q8, DATTN_POLICY_SINK_WINDOW, 70, 2, 8};
    token_path(&k8);
}

/* A whole model generating with sampling under sink+window for 10x its context: the session,
 * sampler and backend were made first; the token loop allocates nothing, and n_past keeps going
 * while the arena stays the size it was made with. */
static void test_no_alloc_model_stream(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    const tm_config c = {32, 2, 2, 1, 256, 48, 1, DATTN_DTYPE_F16};
    char path[256];
    snprintf(path, sizeof path, "/tmp/dattn_alloc_model_%ld", (long)getpid());
    assert_int_equal(tm_make(&c, path), 0);
    dattn_backend *be = NULL;
    dattn_model *m = NULL;
    dattn_session *s = NULL;
    dattn_sampler *smp = NULL;
    TU_OK(tu_backend(2, NULL, &be), "backend");
    TU_OK(dattn_model_load(be, path, &m), "model");
    remove(path);
    enum { CTX = 48, STEPS = 10 * CTX };
    dattn_cache_params p = tu_cache_params(CTX, 16, DATTN_KV_F16, DATTN_POLICY_SINK_WINDOW, 4);
    TU_OK(dattn_session_create(m, &p, NULL, 0, &s), "session");
    dattn_sampler_params sp = dattn_sampler_default_params();
    sp.seed = tu_case_seed;
    TU_OK(dattn_sampler_create(&sp, c.vocab, &smp), "sampler");
    float *logits = malloc(sizeof(float) * (size_t)c.vocab);
    int32_t prompt[20];
    for (int i = 0; i < 20; i++)
        prompt[i] = tu_int(0, c.vocab - 1);
    size_t arena = dattn_session_arena_size(s);

    count_start();
    dattn_status st = dattn_session_eval(s, prompt, 20, logits, 0);
    int32_t tok = 0;
    for (int i = 0; i < STEPS && st == DATTN_OK; i++) {
        st = dattn_sample(smp, logits, &tok);
        if (st == DATTN_OK)
            st = dattn_session_eval(s, &tok, 1, logits, 0);
    }
    count_stop();
    TU_OK(st, "stream");
    assert_int_equal(dattn_session_n_past(s), 20 + STEPS);
    assert_int_equal(dattn_session_arena_size(s), arena);
    if (atomic_load(&n_allocs) != 0 || atomic_load(&n_frees) != 0)
        fail_msg("%ld allocations and %ld frees over %d tokens", atomic_load(&n_allocs),
                 atomic_load(&n_frees), STEPS);
    free(logits);
    dattn_sampler_free(smp);
    dattn_session_free(s);
    dattn_model_free(m);
    dattn_backend_free(be);
}

int main(void)
{
    tu_init_seed("test_alloc");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_works),
        cmocka_unit_test(test_backend_quiet_after_create),
        cmocka_unit_test(test_no_alloc_f32),
        cmocka_unit_test(test_no_alloc_f16),
        cmocka_unit_test(test_no_alloc_q8),
        cmocka_unit_test(test_no_alloc_sink_window),
        cmocka_unit_test(test_no_alloc_model_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
