/* The harness the OpenCL kernel tests share (tests/test_cl_kernels.c, test_cl_prefill.c): the
 * CL header, cmocka, a seeded RNG (DATTN_TEST_SEED replays), relative errors, program building
 * from DATTN_CL_DIR, buffers and launches. Include once per test, after defining HARNESS_NAME. */
#ifndef DATTN_TESTS_CL_HARNESS_H
#define DATTN_TESTS_CL_HARNESS_H
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- seeds, random numbers, error norms --------------------------------------------------- */

static uint64_t g_seed, g_case_seed, g_rng;

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void init_seed(void)
{
    const char *env = getenv("DATTN_TEST_SEED");
    if (env && *env) {
        g_seed = strtoull(env, NULL, 0);
    } else {
        struct timespec ts;
        timespec_get(&ts, TIME_UTC);
        uint64_t s = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
        g_seed = splitmix(&s) & 0xffffffffull;
    }
    printf(HARNESS_NAME ": seed %llu (DATTN_TEST_SEED=%llu replays it)\n",
           (unsigned long long)g_seed, (unsigned long long)g_seed);
    fflush(stdout);
}

/* Each case draws from (suite seed, case name), so it replays alone. */
static void seed_case(const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    g_case_seed = g_seed ^ h;
    g_rng = g_case_seed;
}

static double urand(double lo, double hi)
{
    return lo + (hi - lo) * (double)(splitmix(&g_rng) >> 11) * 0x1.0p-53;
}

static void fill(float *x, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)urand(lo, hi);
}

static double rel_err(const double *ref, const float *got, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)got[i] - ref[i];
        num += e * e;
        den += ref[i] * ref[i];
    }
    if (!(num == num))
        return INFINITY;                                   /* NaN in the output */
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

#define CHECK_ERR(what, err, tol)                                                              \
    do {                                                                                       \
        double e_ = (err);                                                                     \
        printf("  %-58s rel err %.3g (tol %.0e)\n", what, e_, (double)(tol));                  \
        if (!(e_ <= (tol)))                                                                    \
            fail_msg("%s: relative error %.3g > %.0e (seed %llu, case seed %llu)", what, e_,   \
                     (double)(tol), (unsigned long long)g_seed,                                \
                     (unsigned long long)g_case_seed);                                         \
    } while (0)

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    assert_non_null(p);
    return p;
}

/* ---- OpenCL plumbing ---------------------------------------------------------------------- */

static const char *cl_err_name(cl_int e)
{
    switch (e) {
#define E(x) case x: return #x;
    E(CL_SUCCESS) E(CL_DEVICE_NOT_FOUND) E(CL_DEVICE_NOT_AVAILABLE) E(CL_COMPILER_NOT_AVAILABLE)
    E(CL_MEM_OBJECT_ALLOCATION_FAILURE) E(CL_OUT_OF_RESOURCES) E(CL_OUT_OF_HOST_MEMORY)
    E(CL_PROFILING_INFO_NOT_AVAILABLE) E(CL_MEM_COPY_OVERLAP) E(CL_IMAGE_FORMAT_MISMATCH)
    E(CL_IMAGE_FORMAT_NOT_SUPPORTED) E(CL_BUILD_PROGRAM_FAILURE) E(CL_MAP_FAILURE)
    E(CL_MISALIGNED_SUB_BUFFER_OFFSET) E(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
    E(CL_COMPILE_PROGRAM_FAILURE) E(CL_LINKER_NOT_AVAILABLE) E(CL_LINK_PROGRAM_FAILURE)
    E(CL_DEVICE_PARTITION_FAILED) E(CL_KERNEL_ARG_INFO_NOT_AVAILABLE) E(CL_INVALID_VALUE)
    E(CL_INVALID_DEVICE_TYPE) E(CL_INVALID_PLATFORM) E(CL_INVALID_DEVICE) E(CL_INVALID_CONTEXT)
    E(CL_INVALID_QUEUE_PROPERTIES) E(CL_INVALID_COMMAND_QUEUE) E(CL_INVALID_HOST_PTR)
    E(CL_INVALID_MEM_OBJECT) E(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR) E(CL_INVALID_IMAGE_SIZE)
    E(CL_INVALID_SAMPLER) E(CL_INVALID_BINARY) E(CL_INVALID_BUILD_OPTIONS) E(CL_INVALID_PROGRAM)
    E(CL_INVALID_PROGRAM_EXECUTABLE) E(CL_INVALID_KERNEL_NAME) E(CL_INVALID_KERNEL_DEFINITION)
    E(CL_INVALID_KERNEL) E(CL_INVALID_ARG_INDEX) E(CL_INVALID_ARG_VALUE) E(CL_INVALID_ARG_SIZE)
    E(CL_INVALID_KERNEL_ARGS) E(CL_INVALID_WORK_DIMENSION) E(CL_INVALID_WORK_GROUP_SIZE)
    E(CL_INVALID_WORK_ITEM_SIZE) E(CL_INVALID_GLOBAL_OFFSET) E(CL_INVALID_EVENT_WAIT_LIST)
    E(CL_INVALID_EVENT) E(CL_INVALID_OPERATION) E(CL_INVALID_GL_OBJECT) E(CL_INVALID_BUFFER_SIZE)
    E(CL_INVALID_MIP_LEVEL) E(CL_INVALID_GLOBAL_WORK_SIZE) E(CL_INVALID_PROPERTY)
    E(CL_INVALID_IMAGE_DESCRIPTOR) E(CL_INVALID_COMPILER_OPTIONS) E(CL_INVALID_LINKER_OPTIONS)
    E(CL_INVALID_DEVICE_PARTITION_COUNT)
#undef E
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR";
    default: return "unknown OpenCL error";
    }
}

#define CL_OK(call)                                                                            \
    do {                                                                                       \
        cl_int err_ = (call);                                                                  \
        if (err_ != CL_SUCCESS)                                                                \
            fail_msg("%s:%d: %s: %s (%d)", __FILE__, __LINE__, #call, cl_err_name(err_),       \
                     (int)err_);                                                               \
    } while (0)
/* for the calls that return an object and report through their last argument */
#define CL_OBJ_OK(err, what)                                                                   \
    do {                                                                                       \
        if ((err) != CL_SUCCESS)                                                               \
            fail_msg("%s:%d: %s: %s (%d)", __FILE__, __LINE__, what, cl_err_name(err),         \
                     (int)(err));                                                              \
    } while (0)

static cl_device_id g_dev;
static cl_context g_ctx;
static cl_command_queue g_queue;
static const char *g_cl_dir = "cl";

static char *read_text(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", g_cl_dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s (set DATTN_CL_DIR to the cl/ directory)", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = xcalloc((size_t)n + 1, 1);
    size_t got = fread(text, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(text);
        fail_msg("short read of %s", path);
    }
    return text;
}

static cl_program build(const char *file, const char *defines)
{
    char *text = read_text(file);
    cl_int err;
    const char *src = text;
    cl_program prog = clCreateProgramWithSource(g_ctx, 1, &src, NULL, &err);
    free(text);
    CL_OBJ_OK(err, "clCreateProgramWithSource");
    char opts[1600];   /* -I: the kernels include cl/kv_layout.h */
    snprintf(opts, sizeof opts, "-cl-std=CL1.2 -Werror -I %s %s", g_cl_dir, defines);
    err = clBuildProgram(prog, 1, &g_dev, opts, NULL, NULL);
    if (err != CL_SUCCESS) {
        size_t n = 0;
        clGetProgramBuildInfo(prog, g_dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &n);
        char *log = xcalloc(n + 1, 1);
        clGetProgramBuildInfo(prog, g_dev, CL_PROGRAM_BUILD_LOG, n, log, NULL);
        fprintf(stderr, "build log of %s [%s]:\n%s\n", file, opts, log);
        free(log);
        clReleaseProgram(prog);
        fail_msg("clBuildProgram(%s, \"%s\"): %s (%d)", file, opts, cl_err_name(err), (int)err);
    }
    return prog;
}

static cl_kernel kernel(cl_program prog, const char *name)
{
    cl_int err;
    cl_kernel k = clCreateKernel(prog, name, &err);
    CL_OBJ_OK(err, name);
    return k;
}

static cl_mem buffer(size_t bytes, const void *init)
{
    cl_int err;
    cl_mem m = clCreateBuffer(g_ctx, CL_MEM_READ_WRITE | (init ? CL_MEM_COPY_HOST_PTR : 0),
                              bytes ? bytes : 4, (void *)init, &err);
    CL_OBJ_OK(err, "clCreateBuffer");
    return m;
}

static void download(cl_mem m, void *dst, size_t bytes)
{
    CL_OK(clEnqueueReadBuffer(g_queue, m, CL_TRUE, 0, bytes, dst, 0, NULL, NULL));
}

/* ---- the device ---------------------------------------------------------------------------- */

/* The first device of the first platform that has one, a context and a queue: 0, or the exit
 * status to return (77: skip, no OpenCL here; 1: failure). */
static int harness_open(void)
{
    const char *dir = getenv("DATTN_CL_DIR");
    if (dir && *dir)
        g_cl_dir = dir;
    cl_uint n_plat = 0;
    cl_int err = clGetPlatformIDs(0, NULL, &n_plat);
    if (err != CL_SUCCESS || n_plat == 0) {
        printf(HARNESS_NAME ": skipped: no OpenCL platform (clGetPlatformIDs: %s)\n",
               err != CL_SUCCESS ? cl_err_name(err) : "0 platforms");
        return 77;
    }
    cl_platform_id plats[16];
    if (n_plat > 16)
        n_plat = 16;
    err = clGetPlatformIDs(n_plat, plats, NULL);
    if (err != CL_SUCCESS) {
        printf(HARNESS_NAME ": clGetPlatformIDs: %s\n", cl_err_name(err));
        return 1;
    }
    for (cl_uint p = 0; p < n_plat && !g_dev; p++) {
        cl_uint n_dev = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 1, &g_dev, &n_dev) != CL_SUCCESS || !n_dev)
            g_dev = NULL;
    }
    if (!g_dev) {
        printf(HARNESS_NAME ": skipped: %u OpenCL platform(s) but no device\n", n_plat);
        return 77;
    }
    char name[256] = "", version[256] = "";
    clGetDeviceInfo(g_dev, CL_DEVICE_NAME, sizeof name, name, NULL);
    clGetDeviceInfo(g_dev, CL_DRIVER_VERSION, sizeof version, version, NULL);
    printf(HARNESS_NAME ": device '%s', driver %s, kernels from %s/\n", name, version, g_cl_dir);
    g_ctx = clCreateContext(NULL, 1, &g_dev, NULL, NULL, &err);
    if (err != CL_SUCCESS) {
        printf(HARNESS_NAME ": clCreateContext: %s\n", cl_err_name(err));
        return 1;
    }
    g_queue = clCreateCommandQueue(g_ctx, g_dev, 0, &err);
    if (err != CL_SUCCESS) {
        printf(HARNESS_NAME ": clCreateCommandQueue: %s\n", cl_err_name(err));
        clReleaseContext(g_ctx);
        return 1;
    }
    return 0;
}

static void harness_close(void)
{
    clReleaseCommandQueue(g_queue);
    clReleaseContext(g_ctx);
}

/* ---- launching --------------------------------------------------------------------------- */

static inline void upload(cl_mem m, const void *src, size_t bytes)
{
    CL_OK(clEnqueueWriteBuffer(g_queue, m, CL_TRUE, 0, bytes, src, 0, NULL, NULL));
}

#define ARG(k, i, type, val)                                                                   \
    do {                                                                                       \
        type v_ = (val);                                                                       \
        CL_OK(clSetKernelArg((k), (i), sizeof v_, &v_));                                       \
    } while (0)

static inline void launch(cl_kernel k, cl_uint dims, const size_t *global, const size_t *local)
{
    CL_OK(clEnqueueNDRangeKernel(g_queue, k, dims, NULL, global, local, 0, NULL, NULL));
    CL_OK(clFinish(g_queue));
}

static inline size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

#endif
