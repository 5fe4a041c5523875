/* The allocation-failure walk (after Lua's ltests.c debug_realloc): for each constructor and each
 * call that restores state, count the host allocations a successful call makes, then make the
 * n-th one fail for every n. Each failure must give DATTN_E_NOMEM with a message, a NULL out
 * pointer and nothing changed; the same call must then succeed and the object work as one made
 * without a failure. Under AddressSanitizer LeakSanitizer checks after every failure that nothing
 * made before it was left behind. src/alloc.c's alloc_fail_at() does the failing. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "alloc.h"
#include "dattn.h"
#include "model_util.h"
#include "status.h"
#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

/* ---- the walk -------------------------------------------------------------------------------- */

typedef struct scenario {
    const char *name;
    void *ctx;
    /* The call under test. Writes what it makes (if anything) into ctx. */
    dattn_status (*call)(void *ctx);
    /* After a successful call: check what it made works, then free it (or put the state back). */
    void (*check_ok)(void *ctx);
    /* After a failed call: check nothing was made and nothing changed. */
    void (*check_failed)(void *ctx, long n);
} scenario;

static int g_defects;             /* in the current cmocka case */
static const scenario *g_sc;      /* the walk in progress, for defect() */
static char g_dir[256];           /* this run's private temporary directory */

static void defect(long n, const char *fmt, ...) DATTN_PRINTF(2, 3);
static void defect(long n, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("DEFECT %s, allocation %ld failed: %s\n", g_sc ? g_sc->name : "?", n, msg);
    fflush(stdout);
    g_defects++;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs one walk; returns the allocations of a successful call. */
static long walk(const scenario *sc)
{
    g_sc = sc;
    double t0 = now_s();
    dattn_clear_error();
    long c0 = alloc_count();
    dattn_status st = sc->call(sc->ctx);
    long count = alloc_count() - c0;
    TU_OK(st, "%s (the counting run)", sc->name);
    sc->check_ok(sc->ctx);
    int leak_checked = 1;
    for (long n = 1; n <= count; n++) {
        dattn_clear_error();
        alloc_fail_at(n);
        long before = alloc_count();
        st = sc->call(sc->ctx);
        long made = alloc_count() - before;
        alloc_fail_at(0);
        if (made < n) {
            defect(n, "the call made %ld allocations this time, the counting run %ld: the walk is "
                   "not deterministic", made, count);
        }
        if (st == DATTN_OK) {
            if (made >= n)
                defect(n, "the call returned DATTN_OK although an allocation failed");
            sc->check_ok(sc->ctx);
            continue;
        }
        const char *msg = dattn_last_error();
        if (st != DATTN_E_NOMEM)
            defect(n, "status %s, expected DATTN_E_NOMEM (message '%s')", dattn_status_name(st), msg);
        if (!*msg)
            defect(n, "%s with an empty dattn_last_error()", dattn_status_name(st));
        else if (!strstr(msg, "out of memory"))
            defect(n, "the message lost the allocation failure: '%s'", msg);
        sc->check_failed(sc->ctx, n);
#ifdef HAVE_LSAN
        /* Once per walk is enough to see a leak; per failure names the n. Stop at the first
         * (LSan would report the same blocks again). */
        if (leak_checked && __lsan_do_recoverable_leak_check()) {
            defect(n, "LeakSanitizer found memory left behind (report above)");
            leak_checked = 0;
        }
#endif
        /* ... and the same call succeeds again, and what it makes works. */
        dattn_clear_error();
        TU_OK(sc->call(sc->ctx), "%s after a failure of allocation %ld", sc->name, n);
        sc->check_ok(sc->ctx);
    }
    (void)leak_checked;
    if (count)
        printf("%-48s %4ld allocations, each failed once (%.2f s)\n", sc->name, count,
               now_s() - t0);
    else
        printf("%-48s makes no allocation: nothing to fail\n", sc->name);
    fflush(stdout);
    g_sc = NULL;
    return count;
}

#define CHECK_NO_DEFECTS()                                                                        \
    do {                                                                                          \
        if (g_defects)                                                                            \
            fail_msg("%d defect(s), listed above as DEFECT lines (seed %llu)", g_defects,        \
                     (unsigned long long)tu_seed);                                                \
    } while (0)

/* A pointer no constructor makes: out pointers start at it, so a failure must write NULL. */
static char g_sentinel;
#define SENTINEL ((void *)&g_sentinel)

static void check_out_null(long n, const void *out, const char *what)
{
    if (out == SENTINEL)
        defect(n, "*out (%s) was left as the caller set it, not NULL", what);
    else if (out)
        defect(n, "*out (%s) is %p, not NULL", what, out);
}

static void path_in_dir(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", g_dir, name);
}

static int same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb)
            same = 0;
        if (ca == EOF || cb == EOF)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

/* Files in g_dir other than the ones named (a failed write must leave no temporary behind). */
static int stray_files(const char *const *keep, int n_keep, char *first, size_t cap)
{
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        int kept = 0;
        for (int i = 0; i < n_keep; i++)
            kept |= !strcmp(e->d_name, keep[i]);
        if (!kept && n++ == 0)
            snprintf(first, cap, "%s", e->d_name);
    }
    if (d)
        closedir(d);
    return n;
}

/* ---- fixtures: a backend, a layer, a model, and what they compute ---------------------------- */

enum { N_TOK = 12, N_CTX = 64, BATCH = 16 };

static dattn_backend *g_be;
static tu_layer g_tl;                         /* H = 2, Hkv = 1, d = 8: E = 32 */
static float g_x[(N_TOK + 1) * 32];           /* N_TOK + 1 input rows */
static float g_y[N_TOK * 32];                 /* what a good layer gives for the first N_TOK */
static char g_layer_path[300];
static const tm_config k_model = {32, 2, 2, 1, 260, 48, 0, DATTN_DTYPE_F16};
static char g_model_path[300];
static int32_t g_tok[N_TOK + 1];
static float *g_logits;                       /* [vocab] after g_tok[0 .. N_TOK-1] */

static dattn_cache_params layer_cache_params(void)
{
    return tu_cache_params(N_CTX, BATCH, DATTN_KV_F16, DATTN_POLICY_FULL, 0);
}

/* y of a fresh cache for N_TOK rows of g_x through layer l, against g_y. */
static void check_layer_works(dattn_backend *be, dattn_layer *l, dattn_cache *c, double tol,
                              const char *what)
{
    dattn_cache *own = NULL;
    if (!c) {
        dattn_cache_params p = layer_cache_params();
        TU_OK(dattn_cache_create(be, &g_tl.shape, &p, NULL, 0, &own), "%s: a cache", what);
        c = own;
    }
    float y[N_TOK * 32];
    TU_OK(dattn_layer_prefill(l, c, 0, 0, g_x, N_TOK, y), "%s: prefill", what);
    TU_CHECK_ERR(tu_rel_err_ff(y, g_y, N_TOK * 32), tol, "%s: y against a layer made unfailed", what);
    int n_past = -1;
    TU_OK(dattn_cache_n_past(c, 0, &n_past), "%s: n_past", what);
    assert_int_equal(n_past, N_TOK);
    dattn_cache_free(own);
}

static void write_layer_file(const char *path)
{
    const tu_layer *t = &g_tl;
    static const char *const names[TU_N_WEIGHTS] = {
        "q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight", "lambda_q1",
        "lambda_k1",     "lambda_q2",     "lambda_k2",     "subln.weight"};
    dattn_tensor ts[TU_N_WEIGHTS];
    for (int i = 0; i < TU_N_WEIGHTS; i++) {
        memset(&ts[i], 0, sizeof ts[i]);
        ts[i].name = names[i];
        ts[i].dtype = t->dtype;
        ts[i].data = t->stored[i];
        if (i < 4) {
            ts[i].n_dims = 2;
            ts[i].shape[0] = i == 1 || i == 2 ? t->kv_dim : t->E;
            ts[i].shape[1] = t->E;
        } else {
            ts[i].n_dims = 1;
            ts[i].shape[0] = (int64_t)tu_weight_elems(t, i);
        }
    }
    char e[16], h[16], hkv[16], l[16];
    snprintf(e, sizeof e, "%d", t->E);
    snprintf(h, sizeof h, "%d", t->H);
    snprintf(hkv, sizeof hkv, "%d", t->Hkv);
    snprintf(l, sizeof l, "%d", t->shape.layer_index);
    const char *meta[] = {"embed_dim", e, "num_heads", h, "num_kv_heads", hkv, "depth", l};
    TU_OK(dattn_tensor_file_write(path, ts, TU_N_WEIGHTS, meta, 4), "write %s", path);
}

static void eval_logits(dattn_session *s, float *logits)
{
    TU_OK(dattn_session_eval(s, g_tok, N_TOK, logits, 0), "eval");
}

static void check_model_works(dattn_model *m, double tol, const char *what)
{
    dattn_cache_params p = tu_cache_params(N_CTX, BATCH, DATTN_KV_F32, DATTN_POLICY_FULL, 0);
    dattn_session *s = NULL;
    TU_OK(dattn_session_create(m, &p, NULL, 0, &s), "%s: a session", what);
    float *lg = malloc(sizeof(float) * (size_t)k_model.vocab);
    eval_logits(s, lg);
    TU_CHECK_ERR(tu_rel_err_ff(lg, g_logits, (size_t)k_model.vocab), tol,
                 "%s: logits against a model loaded unfailed", what);
    free(lg);
    dattn_session_free(s);
}

static int suite_setup(void **state)
{
    (void)state;
    tu_seed_case("alloc_fail fixtures");
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/dattn_alloc_fail_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir))
        return -1;
    if (tu_backend(2, NULL, &g_be) != DATTN_OK)
        return -1;
    if (tu_layer_init(&g_tl, 2, 1, 8, 1, 10000.0f, DATTN_DTYPE_F16, 1.0) != 0)
        return -1;
    tu_rand_x(g_x, NULL, sizeof g_x / sizeof *g_x);
    path_in_dir(g_layer_path, sizeof g_layer_path, "layer.safetensors");
    write_layer_file(g_layer_path);
    dattn_layer *l = NULL;
    dattn_cache *c = NULL;
    dattn_cache_params p = layer_cache_params();
    if (dattn_layer_create(g_be, &g_tl.shape, &g_tl.w, &l) != DATTN_OK ||
        dattn_cache_create(g_be, &g_tl.shape, &p, NULL, 0, &c) != DATTN_OK ||
        dattn_layer_prefill(l, c, 0, 0, g_x, N_TOK, g_y) != DATTN_OK)
        return -1;
    dattn_cache_free(c);
    dattn_layer_free(l);

    path_in_dir(g_model_path, sizeof g_model_path, "model.safetensors");
    if (tm_make(&k_model, g_model_path) != 0)
        return -1;
    for (int i = 0; i <= N_TOK; i++)
        g_tok[i] = tu_int(0, k_model.vocab - 1);
    dattn_model *m = NULL;
    dattn_session *s = NULL;
    dattn_cache_params sp = tu_cache_params(N_CTX, BATCH, DATTN_KV_F32, DATTN_POLICY_FULL, 0);
    g_logits = malloc(sizeof(float) * (size_t)k_model.vocab);
    if (dattn_model_load(g_be, g_model_path, &m) != DATTN_OK ||
        dattn_session_create(m, &sp, NULL, 0, &s) != DATTN_OK ||
        dattn_session_eval(s, g_tok, N_TOK, g_logits, 0) != DATTN_OK)
        return -1;
    dattn_session_free(s);
    dattn_model_free(m);
    return 0;
}

static int suite_teardown(void **state)
{
    (void)state;
    remove(g_layer_path);
    remove(g_model_path);
    rmdir(g_dir);
    free(g_logits);
    tu_layer_free(&g_tl);
    dattn_backend_free(g_be);
    return 0;
}

static int case_setup(void **state)
{
    (void)state;
    g_defects = 0;
    return 0;
}

/* ---- backends -------------------------------------------------------------------------------- */

typedef struct backend_ctx {
    dattn_backend_params p;
    dattn_backend *be;
} backend_ctx;

static dattn_status backend_call(void *v)
{
    backend_ctx *x = v;
    x->be = SENTINEL;
    return dattn_backend_create(&x->p, &x->be);
}

static void backend_ok(void *v)
{
    backend_ctx *x = v;
    dattn_layer *l = NULL;
    TU_OK(dattn_layer_create(x->be, &g_tl.shape, &g_tl.w, &l), "a layer on the new backend");
    /* The reference is the CPU's: another backend sums in another order. */
    check_layer_works(x->be, l, NULL, x->p.type == DATTN_BACKEND_CPU ? 1e-6 : 1e-4, "backend");
    dattn_layer_free(l);
    dattn_backend_free(x->be);
    x->be = NULL;
}

static void backend_failed(void *v, long n)
{
    check_out_null(n, ((backend_ctx *)v)->be, "backend");
}

static void test_backend_create_cpu(void **state)
{
    (void)state;
    backend_ctx x = {dattn_backend_default_params(), NULL};
    x.p.type = DATTN_BACKEND_CPU;
    x.p.n_threads = 2;
    scenario sc = {"dattn_backend_create (cpu, 2 threads)", &x, backend_call, backend_ok,
                   backend_failed};
    assert_true(walk(&sc) > 0);
    CHECK_NO_DEFECTS();
}

/* ---- layers ---------------------------------------------------------------------------------- */

typedef struct layer_ctx {
    int from_file;
    dattn_layer *l;
} layer_ctx;

static dattn_status layer_call(void *v)
{
    layer_ctx *x = v;
    x->l = SENTINEL;
    return x->from_file ? dattn_layer_load(g_be, g_layer_path, &x->l)
                        : dattn_layer_create(g_be, &g_tl.shape, &g_tl.w, &x->l);
}

static void layer_ok(void *v)
{
    layer_ctx *x = v;
    check_layer_works(g_be, x->l, NULL, 1e-6, x->from_file ? "dattn_layer_load" : "dattn_layer_create");
    dattn_layer_free(x->l);
    x->l = NULL;
}

static void layer_failed(void *v, long n) { check_out_null(n, ((layer_ctx *)v)->l, "layer"); }

static void test_layer_create(void **state)
{
    (void)state;
    layer_ctx x = {0, NULL};
    scenario sc = {"dattn_layer_create (F16)", &x, layer_call, layer_ok, layer_failed};
    assert_true(walk(&sc) > 0);
    CHECK_NO_DEFECTS();
}

static void test_layer_load(void **state)
{
    (void)state;
    layer_ctx x = {1, NULL};
    scenario sc = {"dattn_layer_load", &x, layer_call, layer_ok, layer_failed};
    assert_true(walk(&sc) > 0);
    CHECK_NO_DEFECTS();
}

/* ---- caches ---------------------------------------------------------------------------------- */

typedef struct cache_ctx {
    dattn_cache_params p;
    void *arena;               /* NULL: the library reserves it */
    size_t arena_bytes;
    dattn_layer *l;
    dattn_cache *c;
    float y[N_TOK * 32];       /* what the first cache of these params gave */
    int have_y;
} cache_ctx;

static dattn_status cache_call(void *v)
{
    cache_ctx *x = v;
    x->c = SENTINEL;
    return dattn_cache_create(g_be, &g_tl.shape, &x->p, x->arena, x->arena_bytes, &x->c);
}

static void cache_ok(void *v)
{
    cache_ctx *x = v;
    /* As the first cache of these params (the counting run) did. */
    float y[N_TOK * 32];
    TU_OK(dattn_layer_prefill(x->l, x->c, 0, 0, g_x, N_TOK, y), "prefill");
    if (x->have_y)
        TU_CHECK_ERR(tu_rel_err_ff(y, x->y, N_TOK * 32), 1e-6, "y of a cache made after failures");
    memcpy(x->y, y, sizeof y);
    x->have_y = 1;
    dattn_cache_free(x->c);
    x->c = NULL;
}

static void cache_failed(void *v, long n) { check_out_null(n, ((cache_ctx *)v)->c, "cache"); }

static void test_cache_create(void **state)
{
    (void)state;
    cache_ctx x;
    memset(&x, 0, sizeof x);
    x.p = layer_cache_params();
    TU_OK(dattn_layer_create(g_be, &g_tl.shape, &g_tl.w, &x.l), "layer");
    scenario sc = {"dattn_cache_create (own arena)", &x, cache_call, cache_ok, cache_failed};
    assert_true(walk(&sc) > 0);

    /* The caller's arena, sink+window. */
    x.p = tu_cache_params(N_CTX, BATCH, DATTN_KV_Q8, DATTN_POLICY_SINK_WINDOW, 4);
    TU_OK(dattn_cache_arena_bytes(g_be, &g_tl.shape, &x.p, &x.arena_bytes), "arena bytes");
    x.arena = malloc(x.arena_bytes);
    x.have_y = 0;
    scenario sc2 = {"dattn_cache_create (caller's arena, sink+window)", &x, cache_call, cache_ok,
                    cache_failed};
    walk(&sc2);
    free(x.arena);
    dattn_layer_free(x.l);
    CHECK_NO_DEFECTS();
}

/* Cache restore: the cache holds state A (8 tokens) and the file state B (N_TOK tokens). A failed
 * restore leaves A (the same n_past, and a save of it byte-identical to A's file); a good one gives
 * B, which then decodes the next token as B's own cache does. */
typedef struct restore_ctx {
    dattn_layer *l;
    dattn_cache *c;
    char a_path[300], b_path[300], now_path[300];
    float y_next[32];          /* B's decode of row N_TOK */
} restore_ctx;

enum { N_A = 8 };

static dattn_status restore_call(void *v)
{
    restore_ctx *x = v;
    return dattn_cache_restore(x->c, x->b_path);
}

static void restore_ok(void *v)
{
    restore_ctx *x = v;
    int n_past = -1;
    TU_OK(dattn_cache_n_past(x->c, 0, &n_past), "n_past");
    assert_int_equal(n_past, N_TOK);
    float y[32];
    TU_OK(dattn_layer_decode(x->l, x->c, 0, N_TOK, g_x + N_TOK * 32, y), "decode after restore");
    TU_CHECK_ERR(tu_rel_err_ff(y, x->y_next, 32), 1e-6, "decode after a restore");
    TU_OK(dattn_cache_restore(x->c, x->a_path), "back to state A");
}

static void restore_failed(void *v, long n)
{
    restore_ctx *x = v;
    int n_past = -1;
    TU_OK(dattn_cache_n_past(x->c, 0, &n_past), "n_past");
    if (n_past != N_A)
        defect(n, "the failed restore changed n_past from %d to %d", N_A, n_past);
    TU_OK(dattn_cache_save(x->c, x->now_path), "save after a failed restore");
    if (!same_file(x->now_path, x->a_path))
        defect(n, "the failed restore changed the cache's contents");
    remove(x->now_path);
}

static void test_cache_restore(void **state)
{
    (void)state;
    restore_ctx x;
    memset(&x, 0, sizeof x);
    path_in_dir(x.a_path, sizeof x.a_path, "a.kv");
    path_in_dir(x.b_path, sizeof x.b_path, "b.kv");
    path_in_dir(x.now_path, sizeof x.now_path, "now.kv");
    dattn_cache_params p = layer_cache_params();
    dattn_cache *b = NULL;
    float y[N_TOK * 32];
    TU_OK(dattn_layer_create(g_be, &g_tl.shape, &g_tl.w, &x.l), "layer");
    TU_OK(dattn_cache_create(g_be, &g_tl.shape, &p, NULL, 0, &x.c), "cache A");
    TU_OK(dattn_cache_create(g_be, &g_tl.shape, &p, NULL, 0, &b), "cache B");
    TU_OK(dattn_layer_prefill(x.l, x.c, 0, 0, g_x, N_A, y), "prefill A");
    TU_OK(dattn_layer_prefill(x.l, b, 0, 0, g_x, N_TOK, y), "prefill B");
    TU_OK(dattn_cache_save(x.c, x.a_path), "save A");
    TU_OK(dattn_cache_save(b, x.b_path), "save B");
    TU_OK(dattn_layer_decode(x.l, b, 0, N_TOK, g_x + N_TOK * 32, x.y_next), "decode B");
    dattn_cache_free(b);
    scenario sc = {"dattn_cache_restore", &x, restore_call, restore_ok, restore_failed};
    walk(&sc);
    remove(x.a_path);
    remove(x.b_path);
    dattn_cache_free(x.c);
    dattn_layer_free(x.l);
    CHECK_NO_DEFECTS();
}

/* ---- models and sessions --------------------------------------------------------------------- */

typedef struct model_ctx {
    dattn_backend *be;
    double tol;                /* against the CPU's logits */
    dattn_model *m;
    const dattn_model_params *params;   /* NULL: as stored */
} model_ctx;

static dattn_status model_call(void *v)
{
    model_ctx *x = v;
    x->m = SENTINEL;
    return dattn_model_load_params(x->be, g_model_path, x->params, &x->m);
}

static void model_ok(void *v)
{
    model_ctx *x = v;
    check_model_works(x->m, x->tol, "dattn_model_load");
    dattn_model_free(x->m);
    x->m = NULL;
}

static void model_failed(void *v, long n) { check_out_null(n, ((model_ctx *)v)->m, "model"); }

static void test_model_load(void **state)
{
    (void)state;
    model_ctx x = {g_be, 1e-6, NULL, NULL};
    scenario sc = {"dattn_model_load (2 layers, F16)", &x, model_call, model_ok, model_failed};
    assert_true(walk(&sc) > 0);
    /* Converted at load (F16 to f32 loses nothing): the copies the model keeps. */
    dattn_model_params params = {.convert_weights = 1, .weights = DATTN_DTYPE_F32};
    model_ctx y = {g_be, 1e-6, NULL, &params};
    scenario sc2 = {"dattn_model_load_params (weights converted to f32)", &y, model_call,
                    model_ok, model_failed};
    assert_true(walk(&sc2) > 0);
    CHECK_NO_DEFECTS();
}

typedef struct session_ctx {
    dattn_model *m;
    dattn_cache_params p;
    void *arena;
    size_t arena_bytes;
    double tol;                /* against the CPU's logits */
    dattn_session *s;
} session_ctx;

static dattn_status session_call(void *v)
{
    session_ctx *x = v;
    x->s = SENTINEL;
    return dattn_session_create(x->m, &x->p, x->arena, x->arena_bytes, &x->s);
}

static void session_ok(void *v)
{
    session_ctx *x = v;
    float *lg = malloc(sizeof(float) * (size_t)k_model.vocab);
    eval_logits(x->s, lg);
    TU_CHECK_ERR(tu_rel_err_ff(lg, g_logits, (size_t)k_model.vocab), x->tol,
                 "logits of a session made after failures");
    free(lg);
    dattn_session_free(x->s);
    x->s = NULL;
}

static void session_failed(void *v, long n)
{
    check_out_null(n, ((session_ctx *)v)->s, "session");
}

static void test_session_create(void **state)
{
    (void)state;
    session_ctx x;
    memset(&x, 0, sizeof x);
    TU_OK(dattn_model_load(g_be, g_model_path, &x.m), "model");
    x.p = tu_cache_params(N_CTX, BATCH, DATTN_KV_F32, DATTN_POLICY_FULL, 0);
    x.tol = 1e-6;
    scenario sc = {"dattn_session_create (own arena)", &x, session_call, session_ok, session_failed};
    assert_true(walk(&sc) > 0);
    TU_OK(dattn_session_arena_bytes(x.m, &x.p, &x.arena_bytes), "arena bytes");
    x.arena = malloc(x.arena_bytes);
    scenario sc2 = {"dattn_session_create (caller's arena)", &x, session_call, session_ok,
                    session_failed};
    walk(&sc2);
    free(x.arena);

    /* The token path makes no allocation at all. */
    TU_OK(dattn_session_create(x.m, &x.p, NULL, 0, &x.s), "session");
    float *lg = malloc(sizeof(float) * (size_t)k_model.vocab);
    long c0 = alloc_count();
    eval_logits(x.s, lg);
    TU_OK(dattn_session_eval(x.s, &g_tok[N_TOK], 1, lg, 0), "decode");
    long made = alloc_count() - c0;
    if (made) {
        g_sc = &sc;
        defect(0, "dattn_session_eval (prefill and one decode) made %ld allocations", made);
    }
    free(lg);
    dattn_session_free(x.s);
    dattn_model_free(x.m);
    CHECK_NO_DEFECTS();
}

/* Session save and load, as the cache above: state A is g_tok[0..N_A-1], the file state B. */
typedef struct sload_ctx {
    dattn_model *m;
    dattn_session *s;
    char a_path[300], b_path[300], now_path[300];
    float *next;               /* B's logits after g_tok[N_TOK] */
    int saving;                /* the walk is of dattn_session_save */
} sload_ctx;

static dattn_status sload_call(void *v)
{
    sload_ctx *x = v;
    return x->saving ? dattn_session_save(x->s, x->now_path) : dattn_session_load(x->s, x->b_path);
}

static void sload_ok(void *v)
{
    sload_ctx *x = v;
    if (x->saving) {
        if (!same_file(x->now_path, x->a_path))
            fail_msg("dattn_session_save after failures wrote another file");
        remove(x->now_path);
        return;
    }
    assert_int_equal(dattn_session_n_past(x->s), N_TOK);
    float *lg = malloc(sizeof(float) * (size_t)k_model.vocab);
    TU_OK(dattn_session_eval(x->s, &g_tok[N_TOK], 1, lg, 0), "decode after load");
    TU_CHECK_ERR(tu_rel_err_ff(lg, x->next, (size_t)k_model.vocab), 1e-6,
                 "logits after a session load");
    free(lg);
    TU_OK(dattn_session_load(x->s, x->a_path), "back to state A");
}

static void sload_failed(void *v, long n)
{
    sload_ctx *x = v;
    if (x->saving) {
        const char *keep[] = {"model.safetensors", "layer.safetensors", "a.ses", "b.ses"};
        char first[256] = "";
        if (stray_files(keep, 4, first, sizeof first))
            defect(n, "a failed save left '%s' behind", first);
        remove(x->now_path);
        return;
    }
    if (dattn_session_n_past(x->s) != N_A)
        defect(n, "the failed load changed n_past from %d to %d", N_A, dattn_session_n_past(x->s));
    TU_OK(dattn_session_save(x->s, x->now_path), "save after a failed load");
    if (!same_file(x->now_path, x->a_path))
        defect(n, "the failed load changed the session's cache");
    remove(x->now_path);
}

static void test_session_save_load(void **state)
{
    (void)state;
    sload_ctx x;
    memset(&x, 0, sizeof x);
    path_in_dir(x.a_path, sizeof x.a_path, "a.ses");
    path_in_dir(x.b_path, sizeof x.b_path, "b.ses");
    path_in_dir(x.now_path, sizeof x.now_path, "now.ses");
    TU_OK(dattn_model_load(g_be, g_model_path, &x.m), "model");
    dattn_cache_params p = tu_cache_params(N_CTX, BATCH, DATTN_KV_F16, DATTN_POLICY_FULL, 0);
    dattn_session *b = NULL;
    x.next = malloc(sizeof(float) * (size_t)k_model.vocab);
    TU_OK(dattn_session_create(x.m, &p, NULL, 0, &x.s), "session A");
    TU_OK(dattn_session_create(x.m, &p, NULL, 0, &b), "session B");
    TU_OK(dattn_session_eval(x.s, g_tok, N_A, NULL, 0), "eval A");
    TU_OK(dattn_session_eval(b, g_tok, N_TOK, NULL, 0), "eval B");
    TU_OK(dattn_session_save(x.s, x.a_path), "save A");
    TU_OK(dattn_session_save(b, x.b_path), "save B");
    TU_OK(dattn_session_eval(b, &g_tok[N_TOK], 1, x.next, 0), "decode B");
    dattn_session_free(b);

    x.saving = 1;
    scenario sc = {"dattn_session_save", &x, sload_call, sload_ok, sload_failed};
    walk(&sc);
    x.saving = 0;
    scenario sc2 = {"dattn_session_load (cache restore)", &x, sload_call, sload_ok, sload_failed};
    walk(&sc2);
    remove(x.a_path);
    remove(x.b_path);
    free(x.next);
    dattn_session_free(x.s);
    dattn_model_free(x.m);
    CHECK_NO_DEFECTS();
}

/* The OpenCL backend's host allocations, where a device exists (PoCL in CI). */
static void test_backend_create_opencl(void **state)
{
    (void)state;
    int n_dev = 0;
    if (dattn_devices(NULL, 0, &n_dev) != DATTN_OK || n_dev == 0)
        skip();
    backend_ctx x = {dattn_backend_default_params(), NULL};
    x.p.type = DATTN_BACKEND_OPENCL;
    scenario sc = {"dattn_backend_create (opencl)", &x, backend_call, backend_ok, backend_failed};
    assert_true(walk(&sc) > 0);
    /* A model on it: the host side of its weights and layers. */
    model_ctx mx = {NULL, 1e-4, NULL, NULL};
    TU_OK(dattn_backend_create(&x.p, &mx.be), "opencl backend");
    scenario sc2 = {"dattn_model_load (opencl)", &mx, model_call, model_ok, model_failed};
    walk(&sc2);
    /* A session of it (the cache's device buffers are OpenCL's; their table is a host one). */
    session_ctx sx;
    memset(&sx, 0, sizeof sx);
    TU_OK(dattn_model_load(mx.be, g_model_path, &sx.m), "model on opencl");
    sx.p = tu_cache_params(N_CTX, BATCH, DATTN_KV_F32, DATTN_POLICY_FULL, 0);
    sx.tol = 1e-4;
    scenario sc3 = {"dattn_session_create (opencl)", &sx, session_call, session_ok, session_failed};
    walk(&sc3);
    dattn_model_free(sx.m);
    dattn_backend_free(mx.be);
    CHECK_NO_DEFECTS();
}

/* ---- samplers and tensor files --------------------------------------------------------------- */

typedef struct sampler_ctx {
    dattn_sampler_params p;
    dattn_sampler *s;
    int32_t want;              /* the token a sampler made without failures picks */
} sampler_ctx;

static dattn_status sampler_call(void *v)
{
    sampler_ctx *x = v;
    x->s = SENTINEL;
    return dattn_sampler_create(&x->p, k_model.vocab, &x->s);
}

static void sampler_ok(void *v)
{
    sampler_ctx *x = v;
    for (int i = 0; i < N_TOK; i++)
        dattn_sampler_accept(x->s, g_tok[i]);
    int32_t t = -1;
    TU_OK(dattn_sample(x->s, g_logits, &t), "sample");
    if (x->want >= 0)
        assert_int_equal(t, x->want);
    x->want = t;
    dattn_sampler_free(x->s);
    x->s = NULL;
}

static void sampler_failed(void *v, long n)
{
    check_out_null(n, ((sampler_ctx *)v)->s, "sampler");
}

static void test_sampler_create(void **state)
{
    (void)state;
    sampler_ctx x = {dattn_sampler_default_params(), NULL, -1};
    x.p.temperature = 0.8f;
    x.p.top_k = 40;
    x.p.top_p = 0.9f;
    x.p.repeat_penalty = 1.3f;
    x.p.repeat_last_n = 8;
    x.p.seed = 1234;
    scenario sc = {"dattn_sampler_create", &x, sampler_call, sampler_ok, sampler_failed};
    assert_true(walk(&sc) > 0);
    CHECK_NO_DEFECTS();
}

typedef struct tfile_ctx {
    dattn_tensor_file *f;
    char out_path[300];
    int writing;
} tfile_ctx;

static const dattn_tensor *small_tensors(void)
{
    static float data[6] = {1, 2, 3, 4, 5, 6};
    static dattn_tensor t[2];
    t[0] = (dattn_tensor){"a", DATTN_DTYPE_F32, 2, {2, 3}, data};
    t[1] = (dattn_tensor){"b.c", DATTN_DTYPE_F32, 1, {6}, data};
    return t;
}

static dattn_status tfile_call(void *v)
{
    tfile_ctx *x = v;
    if (x->writing) {
        const char *meta[] = {"k", "v", "n", "3"};
        return dattn_tensor_file_write(x->out_path, small_tensors(), 2, meta, 2);
    }
    x->f = SENTINEL;
    return dattn_tensor_file_open(g_model_path, &x->f);
}

static void tfile_ok(void *v)
{
    tfile_ctx *x = v;
    if (x->writing) {
        dattn_tensor_file *f = NULL;
        dattn_tensor t;
        TU_OK(dattn_tensor_file_open(x->out_path, &f), "open what was written");
        TU_OK(dattn_tensor_file_find(f, "b.c", &t), "find");
        assert_int_equal(t.shape[0], 6);
        assert_string_equal(dattn_tensor_file_meta(f, "n"), "3");
        dattn_tensor_file_close(f);
        return;
    }
    dattn_tensor t;
    TU_OK(dattn_tensor_file_find(x->f, "norm.weight", &t), "find");
    assert_int_equal(t.shape[0], k_model.dim);
    assert_string_equal(dattn_tensor_file_meta(x->f, "tokenizer"), "bytes");
    dattn_tensor_file_close(x->f);
    x->f = NULL;
}

static void tfile_failed(void *v, long n)
{
    tfile_ctx *x = v;
    if (!x->writing) {
        check_out_null(n, x->f, "tensor file");
        return;
    }
    /* The file written before is still whole, and no temporary is left. */
    dattn_tensor_file *f = NULL;
    if (dattn_tensor_file_open(x->out_path, &f) != DATTN_OK)
        defect(n, "the failed write broke the existing '%s': %s", x->out_path, dattn_last_error());
    dattn_tensor_file_close(f);
    const char *keep[] = {"model.safetensors", "layer.safetensors", "out.safetensors"};
    char first[256] = "";
    if (stray_files(keep, 3, first, sizeof first))
        defect(n, "the failed write left '%s' behind", first);
}

static void test_tensor_file(void **state)
{
    (void)state;
    tfile_ctx x;
    memset(&x, 0, sizeof x);
    path_in_dir(x.out_path, sizeof x.out_path, "out.safetensors");
    scenario sc = {"dattn_tensor_file_open (the model)", &x, tfile_call, tfile_ok, tfile_failed};
    assert_true(walk(&sc) > 0);
    x.writing = 1;
    scenario sc2 = {"dattn_tensor_file_write (over a file)", &x, tfile_call, tfile_ok, tfile_failed};
    walk(&sc2);
    remove(x.out_path);
    CHECK_NO_DEFECTS();
}

/* ---- the hook itself ------------------------------------------------------------------------- */

static void test_hook(void **state)
{
    (void)state;
    long c0 = alloc_count();
    void *a = dattn_alloc(16, "a"), *b = dattn_alloc_aligned(16, "b");
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(alloc_count() - c0, 2);
    alloc_fail_at(3);
    void *p1 = dattn_alloc(8, "one"), *p2 = dattn_alloc_arena(8, "two");
    dattn_clear_error();
    void *p3 = dattn_alloc_aligned(24, "the third");
    assert_non_null(p1);
    assert_non_null(p2);
    assert_null(p3);
    assert_non_null(strstr(dattn_last_error(), "24 bytes for the third"));
    void *p4 = dattn_alloc(8, "after");   /* once only */
    assert_non_null(p4);
    alloc_fail_at(1);
    alloc_fail_at(0);                      /* off again */
    void *p5 = dattn_alloc(8, "off");
    assert_non_null(p5);
    assert_int_equal(alloc_count() - c0, 7);
    dattn_free(a);
    dattn_free_aligned(b);
    dattn_free(p1);
    dattn_free_aligned(p2);
    dattn_free(p4);
    dattn_free(p5);
}

/* The walk itself finds what it is for: a constructor that leaves *out alone on failure and leaks
 * its first block when the second allocation fails. */
#define HIDE_MASK ((uintptr_t)0x5a5a5a5a5a5a5a5aull)
static uintptr_t g_hidden;     /* the leaked block, masked so that LeakSanitizer cannot see it */

static dattn_status bad_call(void *v)
{
    void **out = v;
    *out = SENTINEL;
    void *a = dattn_alloc(32, "first");
    if (!a)
        return DATTN_E_NOMEM;
    void *b = dattn_alloc(32, "second");
    if (!b) {
        g_hidden = (uintptr_t)a ^ HIDE_MASK;
        return DATTN_E_NOMEM;
    }
    dattn_free(b);
    *out = a;
    return DATTN_OK;
}

static void bad_ok(void *v)
{
    dattn_free(*(void **)v);
    *(void **)v = NULL;
}

static void bad_failed(void *v, long n) { check_out_null(n, *(void **)v, "block"); }

static void test_walk_finds_defects(void **state)
{
    (void)state;
    void *out = NULL;
    scenario sc = {"a planted leak (self-check)", &out, bad_call, bad_ok, bad_failed};
#ifdef HAVE_LSAN
    printf("the walk's self-check: one DEFECT per failure and one LeakSanitizer report follow, "
           "all expected\n");
    int want = 3;
#else
    printf("the walk's self-check: one DEFECT per failure follows, expected\n");
    int want = 2;
#endif
    fflush(stdout);
    assert_int_equal(walk(&sc), 2);
    assert_int_equal(g_defects, want);
    dattn_free((void *)(g_hidden ^ HIDE_MASK));
    g_hidden = 0;
    g_defects = 0;
}

int main(void)
{
    tu_init_seed("test_alloc_fail");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook),
        cmocka_unit_test_setup(test_walk_finds_defects, case_setup),
        cmocka_unit_test_setup(test_backend_create_cpu, case_setup),
        cmocka_unit_test_setup(test_layer_create, case_setup),
        cmocka_unit_test_setup(test_layer_load, case_setup),
        cmocka_unit_test_setup(test_cache_create, case_setup),
        cmocka_unit_test_setup(test_cache_restore, case_setup),
        cmocka_unit_test_setup(test_model_load, case_setup),
        cmocka_unit_test_setup(test_session_create, case_setup),
        cmocka_unit_test_setup(test_session_save_load, case_setup),
        cmocka_unit_test_setup(test_sampler_create, case_setup),
        cmocka_unit_test_setup(test_tensor_file, case_setup),
        cmocka_unit_test_setup(test_backend_create_opencl, case_setup),
    };
    return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
