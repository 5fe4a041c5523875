/* cl/gemm.cl on the first OpenCL device (first GPU, else first device; PoCL in CI), built with
 * clBuildProgram from the source the library embeds (tools/embed_cl.py): y = x Wᵀ against a float64
 * reference, f32 and f16 weights, odd shapes, row strides, several tile configurations. Every
 * buffer is a sub-buffer with NaN guards before and after it (a stray read shows up as NaN in
 * y) and y's guards, row padding and strides hold a sentinel that must survive. Random inputs;
 * the seed is printed and DATTN_TEST_SEED replays it. Skips (exit 77) where no OpenCL device
 * exists. `test_cl_gemm --bench [n k m]` also prints GFLOP/s per configuration (not a test). */
#define _DEFAULT_SOURCE
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

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include "cl_sources.h"
#include "half.h"

/* Tile configurations: -D values for cl/gemm.cl. */
typedef struct {
    int tile_m, tile_n, tile_k, wpt_m, wpt_n;
} gemm_cfg;

static const gemm_cfg configs[] = {
    {64, 64, 16, 4, 4},   /* the file's defaults: 16 x 16 items */
    {32, 64, 8, 2, 4},    /* 16 x 16 items, one x load per item per step */
    {16, 32, 8, 2, 2},    /* 16 x 8 items */
};
#define N_CONFIGS (int)(sizeof configs / sizeof *configs)

static cl_device_id device;
static cl_context ctx;
static cl_command_queue queue;
static const char *source;   /* gemm.cl as the library embeds it (includes inlined) */
static size_t guard_bytes;   /* guard before and after each sub-buffer: the base alignment */
static cl_program programs[N_CONFIGS][2];   /* [config][f16], built on first use */
static uint64_t seed, rng;

#define SENTINEL 12345.0f

static double urand(void)   /* [-1, 1) */
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 4503599627370496.0 - 1.0;
}

static void cfg_options(const gemm_cfg *c, int f16, char *buf, size_t size)
{
    snprintf(buf, size, "-D TILE_M=%d -D TILE_N=%d -D TILE_K=%d -D WPT_M=%d -D WPT_N=%d -D WEIGHT_FORMAT=%d",
             c->tile_m, c->tile_n, c->tile_k, c->wpt_m, c->wpt_n, f16);
}

/* Builds gemm.cl with `options`; on failure returns the error and leaves the build log in log. */
static cl_int build(const char *options, cl_program *out, char *log, size_t log_size)
{
    cl_int err;
    const char *text = source;
    cl_program prog = clCreateProgramWithSource(ctx, 1, &text, NULL, &err);
    if (err != CL_SUCCESS)
        return err;
    err = clBuildProgram(prog, 1, &device, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        log[0] = 0;
        clGetProgramBuildInfo(prog, device, CL_PROGRAM_BUILD_LOG, log_size, log, NULL);
        log[log_size - 1] = 0;
        clReleaseProgram(prog);
        return err;
    }
    *out = prog;
    return CL_SUCCESS;
}

static cl_program program_for(int cfg, int f16)
{
    if (!programs[cfg][f16]) {
        char options[256], log[8192];
        cfg_options(&configs[cfg], f16, options, sizeof options);
        cl_int err = build(options, &programs[cfg][f16], log, sizeof log);
        if (err != CL_SUCCESS) {
            print_error("gemm.cl [%s]: build failed (%d)\n%s\n", options, err, log);
            fail();
        }
    }
    return programs[cfg][f16];
}

/* A buffer of `bytes` from `host`, inside a parent whose guard_bytes before and after are
 * filled with `guard` (elem_size bytes repeated). *parent gets the parent buffer. */
static cl_mem guarded_buffer(const void *host, size_t bytes, const void *guard, size_t elem_size,
                             cl_mem *parent)
{
    size_t total = guard_bytes + bytes + guard_bytes;
    unsigned char *all = malloc(total);
    assert_non_null(all);
    for (size_t o = 0; o + elem_size <= total; o += elem_size)
        memcpy(all + o, guard, elem_size);
    memcpy(all + guard_bytes, host, bytes);
    cl_int err;
    *parent = clCreateBuffer(ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, total, all, &err);
    assert_int_equal(err, CL_SUCCESS);
    free(all);
    cl_buffer_region region = {guard_bytes, bytes};
    cl_mem sub = clCreateSubBuffer(*parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &region, &err);
    assert_int_equal(err, CL_SUCCESS);
    return sub;
}

static void launch(cl_kernel kern, const gemm_cfg *c, cl_mem bx, int ldx, cl_mem bw, cl_mem by,
                   int ldy, int n, int m, int k)
{
    assert_int_equal(clSetKernelArg(kern, 0, sizeof bx, &bx), CL_SUCCESS);
    assert_int_equal(clSetKernelArg(kern, 1, sizeof ldx, &ldx), CL_SUCCESS);
    assert_int_equal(clSetKernelArg(kern, 2, sizeof bw, &bw), CL_SUCCESS);
    assert_int_equal(clSetKernelArg(kern, 3, sizeof by, &by), CL_SUCCESS);
    assert_int_equal(clSetKernelArg(kern, 4, sizeof ldy, &ldy), CL_SUCCESS);
    assert_int_equal(clSetKernelArg(kern, 5, sizeof n, &n), CL_SUCCESS);
    assert_int_equal(clSetKernelArg(kern, 6, sizeof m, &m), CL_SUCCESS);
    assert_int_equal(clSetKernelArg(kern, 7, sizeof k, &k), CL_SUCCESS);
    size_t lx = (size_t)(c->tile_n / c->wpt_n), ly = (size_t)(c->tile_m / c->wpt_m);
    size_t local[2] = {lx, ly};
    size_t global[2] = {(size_t)((m + c->tile_n - 1) / c->tile_n) * lx,
                        (size_t)((n + c->tile_m - 1) / c->tile_m) * ly};
    assert_int_equal(clEnqueueNDRangeKernel(queue, kern, 2, NULL, global, local, 0, NULL, NULL),
                     CL_SUCCESS);
}

/* y [n][m] (row stride ldy) = x [n][k] (row stride ldx) · Wᵀ, W [m][k], on configuration cfg. */
static void check_gemm(int n, int m, int k, int ldx, int ldy, int f16, int cfg)
{
    cl_program prog = program_for(cfg, f16);
    size_t esize = f16 ? 2 : 4;
    size_t x_len = (size_t)(n - 1) * ldx + k, y_len = (size_t)(n - 1) * ldy + m;
    float *x = malloc(sizeof(float) * x_len), *y = malloc(sizeof(float) * y_len);
    unsigned char *w = malloc((size_t)m * k * esize);
    double *wd = malloc(sizeof(double) * (size_t)m * k);
    assert_true(x && y && w && wd);
    for (size_t i = 0; i < x_len; i++)   /* the pad columns t >= k stay NaN: never read */
        x[i] = (int)(i % (size_t)ldx) < k ? (float)urand() : NAN;
    for (size_t i = 0; i < (size_t)m * k; i++) {
        float v = (float)urand();
        if (f16) {
            uint16_t h = f32_to_f16(v);
            memcpy(w + 2 * i, &h, 2);
            wd[i] = f16_to_f32(h);
        } else {
            memcpy(w + 4 * i, &v, 4);
            wd[i] = v;
        }
    }
    for (size_t i = 0; i < y_len; i++)
        y[i] = SENTINEL;

    const float nan_f = NAN, sentinel = SENTINEL;
    const uint16_t nan_h = 0x7e00;
    cl_mem px, pw, py;
    cl_mem bx = guarded_buffer(x, sizeof(float) * x_len, &nan_f, 4, &px);
    cl_mem bw = guarded_buffer(w, (size_t)m * k * esize, f16 ? (const void *)&nan_h : (const void *)&nan_f,
                               esize, &pw);
    cl_mem by = guarded_buffer(y, sizeof(float) * y_len, &sentinel, 4, &py);
    cl_int err;
    cl_kernel kern = clCreateKernel(prog, f16 ? "gemm_f16" : "gemm_f32", &err);
    assert_int_equal(err, CL_SUCCESS);
    launch(kern, &configs[cfg], bx, ldx, bw, by, ldy, n, m, k);
    size_t total = guard_bytes + sizeof(float) * y_len + guard_bytes;
    float *all = malloc(total);
    assert_non_null(all);
    assert_int_equal(clEnqueueReadBuffer(queue, py, CL_TRUE, 0, total, all, 0, NULL, NULL), CL_SUCCESS);
    const float *yd = all + guard_bytes / 4;

    /* Error against sum |x||w|: the scale of f32 rounding in a dot product. */
    double err2 = 0, scale2 = 0;
    long touched = 0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < m; c++) {
            double ref = 0, mag = 0;
            for (int t = 0; t < k; t++) {
                double p = (double)x[(size_t)i * ldx + t] * wd[(size_t)c * k + t];
                ref += p;
                mag += fabs(p);
            }
            double d = yd[(size_t)i * ldy + c] - ref;
            err2 += isnan(d) ? INFINITY : d * d;
            scale2 += mag * mag;
        }
    for (size_t o = 0; o < total / 4; o++) {   /* guards and row padding keep the sentinel */
        size_t in = o - guard_bytes / 4;
        int inside = o >= guard_bytes / 4 && in < y_len && (int)(in % (size_t)ldy) < m;
        if (!inside && all[o] != SENTINEL)
            touched++;
    }
    double rel = scale2 > 0 ? sqrt(err2 / scale2) : sqrt(err2);
    if (!(rel <= 1e-6) || touched) {
        const gemm_cfg *c = &configs[cfg];
        print_error("gemm n=%d m=%d k=%d ldx=%d ldy=%d %s tiles %dx%dx%d wpt %dx%d: rel err %.3g, "
                    "%ld cells outside y overwritten (seed %llu)\n",
                    n, m, k, ldx, ldy, f16 ? "f16" : "f32", c->tile_m, c->tile_n, c->tile_k,
                    c->wpt_m, c->wpt_n, rel, touched, (unsigned long long)seed);
        fail();
    }
    clReleaseKernel(kern);
    clReleaseMemObject(bx);
    clReleaseMemObject(bw);
    clReleaseMemObject(by);
    clReleaseMemObject(px);
    clReleaseMemObject(pw);
    clReleaseMemObject(py);
    free(all);
    free(x);
    free(y);
    free(w);
    free(wd);
}

static const int shapes[][3] = {   /* n, m, k */
    {1, 1, 1}, {17, 33, 7}, {1, 64, 64}, {64, 64, 64}, {65, 63, 17}, {3, 130, 300}, {300, 768, 256},
};
#define N_SHAPES (sizeof shapes / sizeof *shapes)

static void test_gemm_shapes(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_SHAPES; i++)
        for (int f16 = 0; f16 <= 1; f16++)
            check_gemm(shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][2], shapes[i][1], f16, 0);
}

static void test_gemm_configs(void **state)
{
    (void)state;
    for (int cfg = 1; cfg < N_CONFIGS; cfg++)
        for (size_t i = 0; i < N_SHAPES; i++)
            check_gemm(shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][2], shapes[i][1],
                       (int)(i & 1), cfg);
}

/* x read from a wider buffer (ldx > k), y written as a column block of a wider one (ldy > m),
 * as the host does for q/k/v. */
static void test_gemm_strides(void **state)
{
    (void)state;
    for (int cfg = 0; cfg < N_CONFIGS; cfg++)
        for (int f16 = 0; f16 <= 1; f16++) {
            check_gemm(1, 1, 1, 3, 5, f16, cfg);
            check_gemm(17, 33, 7, 10, 40, f16, cfg);
            check_gemm(70, 96, 64, 192, 3 * 96, f16, cfg);
            check_gemm(130, 65, 129, 131, 67, f16, cfg);
        }
}

/* A combination the #error guards reject does not build. */
static void test_gemm_bad_tiles(void **state)
{
    (void)state;
    static const char *bad[] = {
        "-D TILE_M=60 -D WPT_M=8",                 /* WPT_M does not divide TILE_M */
        "-D TILE_M=64 -D TILE_N=64 -D TILE_K=2 -D WPT_M=1 -D WPT_N=1", /* 4096 items, 128 loads */
        "-D WEIGHT_FORMAT=5",
        "-D TILE_K=0",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cl_program prog = NULL;
        char log[8192];
        cl_int err = build(bad[i], &prog, log, sizeof log);
        if (err == CL_SUCCESS) {
            clReleaseProgram(prog);
            print_error("gemm.cl [%s] built, expected #error\n", bad[i]);
            fail();
        }
        assert_int_equal(err, CL_BUILD_PROGRAM_FAILURE);
        assert_non_null(strstr(log, "must"));
    }
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* GFLOP/s of each configuration at n x k -> m, f32 and f16 weights: a printed figure only. */
static int bench(int n, int k, int m)
{
    char name[256] = "";
    clGetDeviceInfo(device, CL_DEVICE_NAME, sizeof name, name, NULL);
    name[sizeof name - 1] = 0;
    size_t xb = sizeof(float) * (size_t)n * k, wb = sizeof(float) * (size_t)m * k;
    size_t yb = sizeof(float) * (size_t)n * m;
    float *host = malloc(xb > wb ? xb : wb);
    if (!host)
        return 1;
    for (size_t i = 0; i < (xb > wb ? xb : wb) / 4; i++)
        host[i] = (float)urand();
    cl_int err;
    cl_mem bx = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, xb, host, &err);
    cl_mem bw = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, wb, host, &err);
    cl_mem by = clCreateBuffer(ctx, CL_MEM_WRITE_ONLY, yb, NULL, &err);
    uint16_t *half_w = (uint16_t *)host;   /* the same weights as half bits, in place */
    for (size_t i = 0; i < wb / 4; i++)
        half_w[i] = f32_to_f16(host[i]);
    cl_mem bw16 = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, wb / 2, half_w, &err);
    free(host);
    for (int cfg = 0; cfg < N_CONFIGS; cfg++)
        for (int f16 = 0; f16 <= 1; f16++) {
            const gemm_cfg *c = &configs[cfg];
            char options[256], log[8192];
            cfg_options(c, f16, options, sizeof options);
            cl_program prog;
            if (build(options, &prog, log, sizeof log) != CL_SUCCESS) {
                fprintf(stderr, "build failed [%s]\n%s\n", options, log);
                return 1;
            }
            cl_kernel kern = clCreateKernel(prog, f16 ? "gemm_f16" : "gemm_f32", &err);
            cl_mem w = f16 ? bw16 : bw;
            launch(kern, c, bx, k, w, by, m, n, m, k);   /* warm-up */
            clFinish(queue);
            int reps = 0;
            double t0 = now(), t;
            do {
                launch(kern, c, bx, k, w, by, m, n, m, k);
                clFinish(queue);
                reps++;
                t = now() - t0;
            } while (t < 1.0 || reps < 3);
            double gflops = 2.0 * n * (double)m * k * reps / t * 1e-9;
            printf("gemm bench device='%s' n=%d k=%d m=%d w=%s tiles=%dx%dx%d wpt=%dx%d: %.1f GFLOP/s "
                   "(%.2f ms/call, %d calls)\n",
                   name, n, k, m, f16 ? "f16" : "f32", c->tile_m, c->tile_n, c->tile_k, c->wpt_m,
                   c->wpt_n, gflops, t / reps * 1e3, reps);
            clReleaseKernel(kern);
            clReleaseProgram(prog);
        }
    clReleaseMemObject(bx);
    clReleaseMemObject(bw);
    clReleaseMemObject(bw16);
    clReleaseMemObject(by);
    return 0;
}

/* The first GPU, else the first device (as cl_select(NULL) chooses); 0 when there is none. */
static int pick_device(void)
{
    cl_platform_id plats[8];
    cl_uint n_plat = 0;
    if (clGetPlatformIDs(8, plats, &n_plat) != CL_SUCCESS || n_plat == 0)
        return 0;
    if (n_plat > 8)
        n_plat = 8;
    int found = 0;
    for (cl_uint p = 0; p < n_plat; p++) {
        cl_device_id devs[8];
        cl_uint n_dev = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 8, devs, &n_dev) != CL_SUCCESS)
            continue;
        for (cl_uint d = 0; d < n_dev && d < 8; d++) {
            cl_device_type type = 0;
            clGetDeviceInfo(devs[d], CL_DEVICE_TYPE, sizeof type, &type, NULL);
            if (type & CL_DEVICE_TYPE_GPU) {
                device = devs[d];
                return 1;
            }
            if (!found)
                device = devs[d], found = 1;
        }
    }
    return found;
}

int main(int argc, char **argv)
{
    if (!pick_device()) {
        printf("test_cl_gemm: no OpenCL device here; skipped\n");
        return 77;
    }
    const char *env = getenv("DATTN_TEST_SEED");
    seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    rng = seed * 0x9e3779b97f4a7c15ull + 1;
    printf("test_cl_gemm: seed %llu (DATTN_TEST_SEED=%llu replays it)\n",
           (unsigned long long)seed, (unsigned long long)seed);
    source = cl_source_text("gemm");
    cl_uint align_bits = 0;
    clGetDeviceInfo(device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL);
    guard_bytes = align_bits / 8 > 256 ? align_bits / 8 : 256;
    cl_int err;
    ctx = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
    if (err != CL_SUCCESS)
        return 1;
    queue = clCreateCommandQueue(ctx, device, 0, &err);
    if (err != CL_SUCCESS)
        return 1;
    int rc;
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
        int n = argc > 2 ? atoi(argv[2]) : 512, k = argc > 3 ? atoi(argv[3]) : 1024;
        int m = argc > 4 ? atoi(argv[4]) : 1024;
        rc = bench(n, k, m);
    } else {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_gemm_shapes),
            cmocka_unit_test(test_gemm_configs),
            cmocka_unit_test(test_gemm_strides),
            cmocka_unit_test(test_gemm_bad_tiles),
        };
        rc = cmocka_run_group_tests(tests, NULL, NULL);
    }
    for (int c = 0; c < N_CONFIGS; c++)
        for (int f = 0; f < 2; f++)
            if (programs[c][f])
                clReleaseProgram(programs[c][f]);
    clReleaseCommandQueue(queue);
    clReleaseContext(ctx);
    return rc;
}
