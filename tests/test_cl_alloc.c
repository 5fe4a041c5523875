/* Nothing is created on the OpenCL token path (issue 4 item 5): with the backend, a layer and a
 * cache set up, 1,000+ decode steps and a few prefills make no clCreate* call (buffer, sub-buffer,
 * program, kernel, queue, context). The CL entry points are interposed in this binary and
 * forwarded to the ICD loader. A positive control proves the counter sees the library's calls.
 * Host heap calls are not counted here: the OpenCL driver makes its own; test_alloc covers the
 * library's on the CPU backend. Skips (77) without an OpenCL device. */
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

#include "dattn.h"
#include "test_util.h"

static atomic_long n_creates;

#define FORWARD(ret, name, params, args)                                                         \
    ret CL_API_CALL name params                                                                  \
    {                                                                                            \
        static ret(CL_API_CALL * real) params;                                                   \
        if (!real)                                                                               \
            *(void **)&real = dlsym(RTLD_NEXT, #name);                                           \
        atomic_fetch_add(&n_creates, 1);                                                         \
        return real args;                                                                        \
    }

FORWARD(cl_mem, clCreateBuffer,
        (cl_context c, cl_mem_flags f, size_t n, void *h, cl_int *e), (c, f, n, h, e))
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
    long before_setup = atomic_load(&n_creates);
    TU_OK(dattn_backend_create(&bp, &be), "backend");
    tu_layer t;
    assert_int_equal(tu_layer_init(&t, 6, 2, 16, 3, 10000.0f, DATTN_DTYPE_F32, 1.5), 0);
    dattn_layer *l = NULL;
    TU_OK(dattn_layer_create(be, &t.shape, &t.w, &l), "layer");
    dattn_cache_params cp = tu_cache_params(256, 16, kv, policy, 4);
    dattn_cache *c = NULL;
    TU_OK(dattn_cache_create(be, &t.shape, &cp, NULL, 0, &c), "cache");
    /* Positive control: setting up made buffers, programs and kernels through the counter. */
    assert_true(atomic_load(&n_creates) - before_setup >= 10);

    enum { PROMPT = 40, STEPS = 1100 };
    int E = t.E;
    float *x = malloc(sizeof(float) * PROMPT * E), *y = malloc(sizeof(float) * PROMPT * E);
    tu_rand_x(x, NULL, (size_t)PROMPT * E);
    TU_OK(dattn_layer_prefill(l, c, 0, 0, x, PROMPT, y), "warm-up prefill");
    long start = atomic_load(&n_creates);
    int pos = PROMPT;
    for (int i = 0; i < STEPS; i++) {
        if (policy == DATTN_POLICY_FULL && pos >= cp.n_ctx)
            pos = PROMPT;   /* rewind and keep going: the full cache holds 256 */
        TU_OK(dattn_layer_decode(l, c, 0, pos, x + (size_t)(i % PROMPT) * E, y), "decode");
        pos++;
        if (i % 300 == 0 && (policy != DATTN_POLICY_FULL || pos + 16 <= cp.n_ctx)) {
            TU_OK(dattn_layer_prefill(l, c, 0, pos, x, 16, y), "prefill");
            pos += 16;
        }
    }
    long made = atomic_load(&n_creates) - start;
    if (made != 0)
        print_error("%ld clCreate* calls on the token path (%s, %s)\n", made, tu_kv_name(kv),
                    policy == DATTN_POLICY_FULL ? "full" : "sink+window");
    assert_int_equal(made, 0);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
