/* The OpenCL model pass stays on the device (backend.h's model pass): over many decode steps of
 * the bundled model, each token makes no clCreate* call and no blocking write, and exactly one
 * read (the logits with the fault record); the embedding row is its one upload, not waited for.
 * The CL entry points are interposed in this binary, which holds the library (linked statically),
 * and forwarded to the ICD loader; a positive control proves the counters see the library's
 * calls (loading the model creates buffers, programs and kernels). The logits match a CPU
 * session's on the same random tokens (the seed is printed) to f32 accuracy, KV cache f32.
 * usage: test_cl_resident MODEL.safetensors. Skips (77) without an OpenCL device. */
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

#include "test_util.h"

static const char *model_path;
static atomic_long n_creates, n_writes, n_blocking_writes, n_reads, n_maps;

/* ---- interposed OpenCL entry points ------------------------------------------------------- */

/* The next definition of `name` (the ICD loader's), typed as CL/cl.h declares it. */
#define REAL(name)                                                                               \
    static __typeof__(&name) real;                                                               \
    if (!real)                                                                                   \
        *(void **)&real = dlsym(RTLD_NEXT, #name)

#define CREATE(ret, name, params, args)                                                          \
    ret CL_API_CALL name params                                                                  \
    {                                                                                            \
        REAL(name);                                                                              \
        atomic_fetch_add(&n_creates, 1);                                                         \
        return real args;                                                                        \
    }

CREATE(cl_mem, clCreateBuffer, (cl_context c, cl_mem_flags f, size_t n, void *h, cl_int *e),
       (c, f, n, h, e))
CREATE(cl_mem, clCreateSubBuffer,
       (cl_mem b, cl_mem_flags f, cl_buffer_create_type t, const void *i, cl_int *e),
       (b, f, t, i, e))
CREATE(cl_kernel, clCreateKernel, (cl_program p, const char *n, cl_int *e), (p, n, e))
CREATE(cl_int, clCreateKernelsInProgram, (cl_program p, cl_uint n, cl_kernel *k, cl_uint *r),
       (p, n, k, r))
CREATE(cl_program, clCreateProgramWithSource,
       (cl_context c, cl_uint n, const char **s, const size_t *l, cl_int *e), (c, n, s, l, e))
CREATE(cl_program, clCreateProgramWithBinary,
       (cl_context c, cl_uint n, const cl_device_id *d, const size_t *l, const unsigned char **b,
        cl_int *st, cl_int *e),
       (c, n, d, l, b, st, e))
CREATE(cl_command_queue, clCreateCommandQueue,
       (cl_context c, cl_device_id d, cl_command_queue_properties p, cl_int *e), (c, d, p, e))
CREATE(cl_context, clCreateContext,
       (const cl_context_properties *p, cl_uint n, const cl_device_id *d,
        void(CL_CALLBACK *cb)(const char *, const void *, size_t, void *), void *u, cl_int *e),
       (p, n, d, cb, u, e))
CREATE(cl_event, clCreateUserEvent, (cl_context c, cl_int *e), (c, e))

cl_int CL_API_CALL clEnqueueWriteBuffer(cl_command_queue q, cl_mem b, cl_bool blocking, size_t off,
                                        size_t n, const void *p, cl_uint nw, const cl_event *w,
                                        cl_event *ev)
{
    REAL(clEnqueueWriteBuffer);
    atomic_fetch_add(&n_writes, 1);
    if (blocking)
        atomic_fetch_add(&n_blocking_writes, 1);
    return real(q, b, blocking, off, n, p, nw, w, ev);
}

cl_int CL_API_CALL clEnqueueWriteBufferRect(cl_command_queue q, cl_mem b, cl_bool blocking,
                                            const size_t *bo, const size_t *ho, const size_t *r,
                                            size_t brp, size_t bsp, size_t hrp, size_t hsp,
                                            const void *p, cl_uint nw, const cl_event *w,
                                            cl_event *ev)
{
    REAL(clEnqueueWriteBufferRect);
    atomic_fetch_add(&n_writes, 1);
    if (blocking)
        atomic_fetch_add(&n_blocking_writes, 1);
    return real(q, b, blocking, bo, ho, r, brp, bsp, hrp, hsp, p, nw, w, ev);
}

cl_int CL_API_CALL clEnqueueReadBuffer(cl_command_queue q, cl_mem b, cl_bool blocking, size_t off,
                                       size_t n, void *p, cl_uint nw, const cl_event *w,
                                       cl_event *ev)
{
    REAL(clEnqueueReadBuffer);
    atomic_fetch_add(&n_reads, 1);
    return real(q, b, blocking, off, n, p, nw, w, ev);
}

cl_int CL_API_CALL clEnqueueReadBufferRect(cl_command_queue q, cl_mem b, cl_bool blocking,
                                           const size_t *bo, const size_t *ho, const size_t *r,
                                           size_t brp, size_t bsp, size_t hrp, size_t hsp, void *p,
                                           cl_uint nw, const cl_event *w, cl_event *ev)
{
    REAL(clEnqueueReadBufferRect);
    atomic_fetch_add(&n_reads, 1);
    return real(q, b, blocking, bo, ho, r, brp, bsp, hrp, hsp, p, nw, w, ev);
}

void *CL_API_CALL clEnqueueMapBuffer(cl_command_queue q, cl_mem b, cl_bool blocking,
                                     cl_map_flags f, size_t off, size_t n, cl_uint nw,
                                     const cl_event *w, cl_event *ev, cl_int *e)
{
    REAL(clEnqueueMapBuffer);
    atomic_fetch_add(&n_maps, 1);
    return real(q, b, blocking, f, off, n, nw, w, ev, e);
}

/* ---- the test ------------------------------------------------------------------------------ */

enum { PROMPT = 24, STEPS = 32 };

typedef struct counts {
    long creates, writes, blocking_writes, reads, maps;
} counts;

static counts now(void)
{
    counts c = {atomic_load(&n_creates), atomic_load(&n_writes), atomic_load(&n_blocking_writes),
                atomic_load(&n_reads), atomic_load(&n_maps)};
    return c;
}

static counts since(counts a)
{
    counts b = now();
    counts d = {b.creates - a.creates, b.writes - a.writes, b.blocking_writes - a.blocking_writes,
                b.reads - a.reads, b.maps - a.maps};
    return d;
}

typedef struct run {
    dattn_backend *be;
    dattn_model *m;
    dattn_session *s;
    int vocab;
} run;

static void open_run(dattn_backend_type type, run *r)
{
    dattn_backend_params bp = dattn_backend_default_params();
    bp.type = type;
    if (type == DATTN_BACKEND_CPU)
        bp.n_threads = 2;
    TU_OK(dattn_backend_create(&bp, &r->be), "backend");
    TU_OK(dattn_model_load(r->be, model_path, &r->m), "load %s", model_path);
    dattn_model_info info;
    TU_OK(dattn_model_get_info(r->m, &info), "info");
    r->vocab = info.vocab_size;
    dattn_cache_params cp = dattn_cache_default_params();
    cp.n_ctx = PROMPT + STEPS + 8;
    cp.kv_type = DATTN_KV_F32;   /* f32 throughout: the two backends agree to f32 rounding */
    TU_OK(dattn_session_create(r->m, &cp, NULL, 0, &r->s), "session");
}

static void close_run(run *r)
{
    dattn_session_free(r->s);
    dattn_model_free(r->m);
    dattn_backend_free(r->be);
}

static double rel_err_f(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

static void test_decode_stays_on_device(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    int32_t tokens[PROMPT + STEPS];
    run cl;
    counts at = now();
    open_run(DATTN_BACKEND_OPENCL, &cl);
    counts load = since(at);
    printf("  backend, model and session: %ld clCreate*, %ld writes (%ld blocking), %ld reads\n",
           load.creates, load.writes, load.blocking_writes, load.reads);
    assert_true(load.creates >= 10);   /* the interposed entry points see the library's calls */
    for (int i = 0; i < PROMPT + STEPS; i++)
        tokens[i] = tu_int(0, cl.vocab - 1);

    size_t V = (size_t)cl.vocab;
    float *cl_logits = malloc(sizeof(float) * V * (STEPS + 1));
    float *cpu_logits = malloc(sizeof(float) * V * (STEPS + 1));
    assert_non_null(cl_logits);
    assert_non_null(cpu_logits);
    at = now();
    TU_OK(dattn_session_eval(cl.s, tokens, PROMPT, cl_logits, 0), "opencl prefill");
    counts prefill = since(at);
    printf("  prefill of %d: %ld clCreate*, %ld writes (%ld blocking), %ld reads\n", PROMPT,
           prefill.creates, prefill.writes, prefill.blocking_writes, prefill.reads);
    assert_int_equal(prefill.blocking_writes, 0);
    counts decode = {0, 0, 0, 0, 0};
    int n_bad = 0;
    for (int i = 0; i < STEPS; i++) {
        at = now();
        TU_OK(dattn_session_eval(cl.s, &tokens[PROMPT + i], 1, cl_logits + V * (i + 1), 0),
              "opencl decode step %d", i);
        counts step = since(at);
        if (step.creates || step.blocking_writes || step.reads != 1 || step.maps) {
            printf("  step %d: %ld clCreate*, %ld blocking writes, %ld reads, %ld maps\n", i,
                   step.creates, step.blocking_writes, step.reads, step.maps);
            n_bad++;
        }
        decode.creates += step.creates, decode.writes += step.writes;
        decode.blocking_writes += step.blocking_writes, decode.reads += step.reads;
        decode.maps += step.maps;
    }
    printf("  %d decode steps: %ld clCreate*, %ld writes (%ld blocking), %ld reads, %ld maps\n",
           STEPS, decode.creates, decode.writes, decode.blocking_writes, decode.reads, decode.maps);
    assert_int_equal(decode.creates, 0);
    assert_int_equal(decode.blocking_writes, 0);
    assert_int_equal(decode.reads, STEPS);
    assert_int_equal(decode.maps, 0);
    assert_int_equal(n_bad, 0);
    close_run(&cl);

    /* The same tokens on the CPU backend: the logits of the prefill and of every step. */
    run cpu;
    open_run(DATTN_BACKEND_CPU, &cpu);
    TU_OK(dattn_session_eval(cpu.s, tokens, PROMPT, cpu_logits, 0), "cpu prefill");
    for (int i = 0; i < STEPS; i++)
        TU_OK(dattn_session_eval(cpu.s, &tokens[PROMPT + i], 1, cpu_logits + V * (i + 1), 0),
              "cpu decode step %d", i);
    close_run(&cpu);
    double worst = 0.0;
    for (int i = 0; i <= STEPS; i++) {
        double e = rel_err_f(cl_logits + V * i, cpu_logits + V * i, V);
        if (e > worst)
            worst = e;
        if (e > 1e-4) {
            printf("  %s %d: logits differ from the CPU's by %.3g (relative norm)\n",
                   i ? "decode step" : "prefill", i ? i - 1 : 0, e);
            n_bad++;
        }
    }
    printf("  logits against the CPU backend: worst relative error %.3g over %d rows\n", worst,
           STEPS + 1);
    free(cl_logits);
    free(cpu_logits);
    if (n_bad)
        fail_msg("%d decode steps broke the device-resident pass (seed %llu)", n_bad,
                 (unsigned long long)tu_case_seed);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_cl_resident MODEL.safetensors\n");
        return 2;
    }
    model_path = argv[1];
    int n = 0;
    dattn_device_info info;
    if (dattn_devices(&info, 1, &n) != DATTN_OK || n == 0) {
        printf("test_cl_resident: no OpenCL device here; skipped\n");
        return 77;
    }
    tu_init_seed("test_cl_resident");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_stays_on_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
