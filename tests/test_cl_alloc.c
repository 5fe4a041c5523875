/* Nothing is created on the OpenCL token path: with the backend, a layer and a
 * cache set up, 1,000+ decode steps make no clCreate* call (buffer, sub-buffer, program, kernel,
 * queue, context) and no host allocation by the library; nor do the prefills between them, except
 * that CLBlast (built with -Dclblast) creates its kernels per call, which keeps it off decode.
 * The CL entry points and malloc & co. are interposed in this binary and forwarded (to the ICD
 * loader, to glibc's __libc_* entry points). The OpenCL driver allocates host memory of its own
 * on every enqueue, so a heap call counts only when it comes from this executable, which holds
 * the library (linked statically) and the test, not the driver. Positive controls prove both
 * counters see the library's calls. While at it, the bytes of the buffers a cache creates must
 * be what cache_bytes said, with and without a model's FFN and vocabulary scratch.
 * Skips (77) without an OpenCL device. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <cmocka.h>

#include "backend.h"
#include "kv.h"
#include "test_util.h"

static atomic_long n_creates, buffer_bytes;

/* ---- host heap: calls made from this executable's code ------------------------------------ */

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
extern void *__libc_memalign(size_t align, size_t n);
extern char __executable_start, etext;   /* GNU ld: the executable's text */

static atomic_int counting;
static atomic_long n_heap;

static inline void count_heap(const void *caller)
{
    if (atomic_load_explicit(&counting, memory_order_relaxed) &&
        (const char *)caller >= &__executable_start && (const char *)caller < &etext)
        atomic_fetch_add_explicit(&n_heap, 1, memory_order_relaxed);
}

void *malloc(size_t n)
{
    count_heap(__builtin_return_address(0));
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    count_heap(__builtin_return_address(0));
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    count_heap(__builtin_return_address(0));
    return __libc_realloc(p, n);
}

void free(void *p)
{
    if (p)
        count_heap(__builtin_return_address(0));
    __libc_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    count_heap(__builtin_return_address(0));
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return 22;   /* EINVAL */
    void *p = __libc_memalign(align, n);
    if (!p)
        return 12;   /* ENOMEM */
    *out = p;
    return 0;
}

void *aligned_alloc(size_t align, size_t n)
{
    count_heap(__builtin_return_address(0));
    return __libc_memalign(align, n);
}

/* ---- OpenCL objects --------------------------------------------------------------------------- */

#define FORWARD(ret, name, params, args)                                                         \
    ret CL_API_CALL name params                                                                  \
    {                                                                                            \
        static ret(CL_API_CALL * real) params;                                                   \
        if (!real)                                                                               \
            *(void **)&real = dlsym(RTLD_NEXT, #name);                                           \
        atomic_fetch_add(&n_creates, 1);                                                         \
        return real args;                                                                        \
    }

cl_mem CL_API_CALL clCreateBuffer(cl_context c, cl_mem_flags f, size_t n, void *h, cl_int *e)
{
    static cl_mem(CL_API_CALL * real)(cl_context, cl_mem_flags, size_t, void *, cl_int *);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "clCreateBuffer");
    atomic_fetch_add(&n_creates, 1);
    atomic_fetch_add(&buffer_bytes, (long)n);
    return real(c, f, n, h, e);
}
FORWARD(cl_mem, clCreateSubBuffer,
        (cl_mem b, cl_mem_flags f, cl_buffer_create_type t, const void *i, cl_int *e),
        (b, f, t, i, e))
FORWARD(cl_kernel, clCreateKernel, (cl_program p, const char *n, cl_int *e), (p, n, e))
FORWARD(cl_program, clCreateProgramWithSource,
        (cl_context c, cl_uint n, const char **s, const size_t *l, cl_int *e), (c, n, s, l, e))
FORWARD(cl_program, clCreateProgramWithBinary,
        (cl_context c, cl_uint n, const cl_device_id *d, const size_t *l, const unsigned char **b,
         cl_int *st, cl_int *e),
        (c, n, d, l, b, st, e))
FORWARD(cl_command_queue, clCreateCommandQueue,
        (cl_context c, cl_device_id d, cl_command_queue_properties p, cl_int *e), (c, d, p, e))
FORWARD(cl_context, clCreateContext,
        (const cl_context_properties *p, cl_uint n, const cl_device_id *d,
         void(CL_CALLBACK *cb)(const char *, const void *, size_t, void *), void *u, cl_int *e),
        (p, n, d, cb, u, e))

static void run_policy(dattn_kv_type kv, dattn_kv_policy policy)
{
    dattn_backend *be = NULL;
    dattn_backend_params bp = dattn_backend_default_params();
    bp.type = DATTN_BACKEND_OPENCL;
    tu_layer t;
    assert_int_equal(tu_layer_init(&t, 6, 2, 16, 3, 10000.0f, DATTN_DTYPE_F32, 1.5), 0);
    long before_setup = atomic_load(&n_creates);
    atomic_store(&n_heap, 0);
    atomic_store(&counting, 1);   /* only library calls from here */
    TU_OK(dattn_backend_create(&bp, &be), "backend");
    dattn_layer *l = NULL;
    TU_OK(dattn_layer_create(be, &t.shape, &t.w, &l), "layer");
    dattn_cache_params cp = tu_cache_params(256, 16, kv, policy, 4);
    dattn_cache *c = NULL;
    TU_OK(dattn_cache_create(be, &t.shape, &cp, NULL, 0, &c), "cache");
    atomic_store(&counting, 0);
    /* Positive controls: setting up made buffers, programs and kernels, and host allocations
     * (backend, layer, cache state), through the counters. */
    assert_true(atomic_load(&n_creates) - before_setup >= 10);
    assert_true(atomic_load(&n_heap) >= 3);

    enum { PROMPT = 40, STEPS = 1100 };
    int E = t.E;
    float *x = malloc(sizeof(float) * PROMPT * E), *y = malloc(sizeof(float) * PROMPT * E);
    tu_rand_x(x, NULL, (size_t)PROMPT * E);
    TU_OK(dattn_layer_prefill(l, c, 0, 0, x, PROMPT, y), "warm-up prefill");
    TU_OK(dattn_layer_decode(l, c, 0, PROMPT, x, y), "warm-up decode");
    long decode_creates = 0, prefill_creates = 0, decode_heap = 0, prefill_heap = 0;
    int pos = PROMPT + 1;
    for (int i = 0; i < STEPS; i++) {
        if (policy == DATTN_POLICY_FULL && pos >= cp.n_ctx)
            pos = PROMPT;   /* rewind and keep going: the full cache holds 256 */
        long c0 = atomic_load(&n_creates);
        atomic_store(&n_heap, 0);
        atomic_store(&counting, 1);
        dattn_status st = dattn_layer_decode(l, c, 0, pos, x + (size_t)(i % PROMPT) * E, y);
        atomic_store(&counting, 0);
        TU_OK(st, "decode");
        decode_creates += atomic_load(&n_creates) - c0;
        decode_heap += atomic_load(&n_heap);
        pos++;
        if (i % 300 == 0 && (policy != DATTN_POLICY_FULL || pos + 16 <= cp.n_ctx)) {
            c0 = atomic_load(&n_creates);
            atomic_store(&n_heap, 0);
            atomic_store(&counting, 1);
            st = dattn_layer_prefill(l, c, 0, pos, x, 16, y);
            atomic_store(&counting, 0);
            TU_OK(st, "prefill");
            prefill_creates += atomic_load(&n_creates) - c0;
            prefill_heap += atomic_load(&n_heap);
            pos += 16;
        }
    }
    const char *what = policy == DATTN_POLICY_FULL ? "full" : "sink+window";
    printf("  %s %s: %d decode steps: %ld clCreate*, %ld host heap calls; prefills: %ld, %ld\n",
           tu_kv_name(kv), what, STEPS, decode_creates, decode_heap, prefill_creates, prefill_heap);
    assert_int_equal(decode_creates, 0);
    assert_int_equal(decode_heap, 0);
    assert_int_equal(prefill_heap, 0);
#ifndef DATTN_TEST_CLBLAST
    assert_int_equal(prefill_creates, 0);
#endif
    free(x);
    free(y);
    dattn_cache_free(c);
    dattn_layer_free(l);
    tu_layer_free(&t);
    dattn_backend_free(be);
}

static void test_no_creates_full(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    run_policy(DATTN_KV_F16, DATTN_POLICY_FULL);
}

static void test_no_creates_sink_window(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    run_policy(DATTN_KV_Q8, DATTN_POLICY_SINK_WINDOW);
}

/* The buffers a cache makes add up to cache_bytes exactly, for a layer cache and for a session's
 * cache with FFN and vocabulary scratch (through the ops table, as src/model.c does). */
static void test_cache_bytes_exact(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    dattn_backend *be = NULL;
    dattn_backend_params bp = dattn_backend_default_params();
    bp.type = DATTN_BACKEND_OPENCL;
    TU_OK(dattn_backend_create(&bp, &be), "backend");
    dattn_layer_shape s = dattn_layer_default_shape();
    s.model_dim = 192, s.n_heads = 6, s.n_kv_heads = 2;
    const int widths[][2] = {{0, 0}, {512, 0}, {0, 1000}, {320, 777}};   /* ffn_dim, n_vocab */
    for (size_t i = 0; i < sizeof widths / sizeof *widths; i++) {
        dattn_cache c;
        memset(&c, 0, sizeof c);
        c.params = tu_cache_params(300, 24, DATTN_KV_F16, DATTN_POLICY_FULL, 0);
        c.params.n_layers = 2;
        TU_OK(kv_geom_init(&c.g, &s, &c.params), "kv_geom_init");
        c.scratch.ffn_dim = widths[i][0];
        c.scratch.n_vocab = widths[i][1];
        c.backend = be;
        c.shape = s;
        size_t want = be->ops->cache_bytes(be, &s, &c.g, &c.scratch);
        atomic_store(&buffer_bytes, 0);
        TU_OK(be->ops->cache_init(be, &c, NULL, want), "cache_init");
        long made = atomic_load(&buffer_bytes);
        be->ops->cache_release(be, &c);
        printf("  ffn_dim %d, n_vocab %d: cache_bytes %zu, buffers made %ld bytes\n", widths[i][0],
               widths[i][1], want, made);
        assert_int_equal((size_t)made, want);
    }
    dattn_backend_free(be);
}

int main(void)
{
    int n = 0;
    dattn_device_info info;
    if (dattn_devices(&info, 1, &n) != DATTN_OK || n == 0) {
        printf("test_cl_alloc: no OpenCL device here; skipped\n");
        return 77;
    }
    tu_init_seed("test_cl_alloc");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_creates_full),
        cmocka_unit_test(test_no_creates_sink_window),
        cmocka_unit_test(test_cache_bytes_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
