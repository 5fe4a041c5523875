/* cl/gemv.cl on the first OpenCL device (PoCL in CI), built from the source embedded in the
 * library through the program cache: y = W x against a float64 reference, f32 and f16 weights,
 * odd shapes and several work-group layouts. Random inputs; the seed is printed and
 * DATTN_TEST_SEED replays it. Skips (exit 77) where no OpenCL device exists. */
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

#include "cl_common.h"
#include "cl_sources.h"
#include "half.h"
#include "program.h"

static cl_device_entry dev;
static cl_context ctx;
static cl_command_queue queue;
static uint64_t seed, rng;

static double urand(void)   /* [-1, 1) */
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 4503599627370496.0 - 1.0;
}

static void check_gemv(int m, int k, int f16, int wg, int rows)
{
    char options[128];
    snprintf(options, sizeof options, "-D GEMV_WG=%d -D GEMV_ROWS=%d -D WEIGHT_F16=%d", wg, rows, f16);
    cl_program prog;
    int cached;
    dattn_status st = cl_program_build(ctx, dev.device, "gemv", cl_source_text("gemv"), options,
                                       "", &prog, &cached);
    if (st != DATTN_OK)
        print_error("%s\n", dattn_last_error());
    assert_int_equal(st, DATTN_OK);

    size_t esize = f16 ? 2 : 4;
    unsigned char *w = malloc((size_t)m * k * esize);
    float *x = malloc(sizeof(float) * (size_t)k), *y = malloc(sizeof(float) * (size_t)m);
    double *wd = malloc(sizeof(double) * (size_t)m * k);
    assert_true(w && x && y && wd);
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
    for (int t = 0; t < k; t++)
        x[t] = (float)urand();

    cl_int err;
    cl_mem bw = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, (size_t)m * k * esize, w, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem bx = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof(float) * (size_t)k, x, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem by = clCreateBuffer(ctx, CL_MEM_WRITE_ONLY, sizeof(float) * (size_t)m, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_kernel kern = clCreateKernel(prog, "gemv", &err);
    assert_int_equal(err, CL_SUCCESS);
    assert_int_equal(clSetKernelArg(kern, 0, sizeof bw, &bw), CL_SUCCESS);
    assert_int_equal(clSetKernelArg(kern, 1, sizeof bx, &bx), CL_SUCCESS);
    assert_int_equal(clSetKernelArg(kern, 2, sizeof by, &by), CL_SUCCESS);
    assert_int_equal(clSetKernelArg(kern, 3, sizeof m, &m), CL_SUCCESS);
    assert_int_equal(clSetKernelArg(kern, 4, sizeof k, &k), CL_SUCCESS);
    size_t local = (size_t)wg, global = (size_t)((m + rows - 1) / rows) * local;
    assert_int_equal(clEnqueueNDRangeKernel(queue, kern, 1, NULL, &global, &local, 0, NULL, NULL),
                     CL_SUCCESS);
    assert_int_equal(clEnqueueReadBuffer(queue, by, CL_TRUE, 0, sizeof(float) * (size_t)m, y, 0,
                                         NULL, NULL), CL_SUCCESS);
    /* Error against sum |w||x|: the scale of f32 rounding in a dot product. */
    double err2 = 0, scale2 = 0;
    for (int c = 0; c < m; c++) {
        double ref = 0, mag = 0;
        for (int t = 0; t < k; t++) {
            ref += wd[(size_t)c * k + t] * x[t];
            mag += fabs(wd[(size_t)c * k + t] * x[t]);
        }
        err2 += (y[c] - ref) * (y[c] - ref);
        scale2 += mag * mag;
    }
    double rel = sqrt(err2 / scale2);
    if (!(rel <= 1e-6)) {
        print_error("gemv m=%d k=%d %s wg=%d rows=%d: rel err %.3g (seed %llu)\n", m, k,
                    f16 ? "f16" : "f32", wg, rows, rel, (unsigned long long)seed);
        fail();
    }
    clReleaseKernel(kern);
    clReleaseMemObject(bw);
    clReleaseMemObject(bx);
    clReleaseMemObject(by);
    clReleaseProgram(prog);
    free(w);
    free(x);
    free(y);
    free(wd);
}

static void test_gemv_shapes(void **state)
{
    (void)state;
    static const int shapes[][2] = {{1, 1}, {7, 33}, {64, 64}, {129, 257}, {3072, 1024}, {500, 3}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (int f16 = 0; f16 <= 1; f16++)
            check_gemv(shapes[i][0], shapes[i][1], f16, 64, 4);
}

static void test_gemv_layouts(void **state)
{
    (void)state;
    static const int layouts[][2] = {{16, 1}, {64, 64}, {128, 8}, {256, 4}, {256, 256}};
    for (size_t i = 0; i < sizeof layouts / sizeof *layouts; i++)
        check_gemv(77, 191, (int)(i & 1), layouts[i][0], layouts[i][1]);
}

static void test_embedded_sources(void **state)
{
    (void)state;
    assert_non_null(cl_source_text("gemv"));
    assert_non_null(cl_source_text("diffattn_decode"));
    assert_null(cl_source_text("no_such_kernel"));
    for (int i = 0; i < cl_n_sources; i++)
        assert_true(strlen(cl_sources[i].text) > 100);
}

int main(void)
{
    int n = 0;
    cl_device_entry all[8];
    if (cl_enumerate(all, 8, &n) != DATTN_OK || n == 0) {
        printf("test_cl_gemv: no OpenCL device here; skipped\n");
        return 77;
    }
    const char *env = getenv("DATTN_TEST_SEED");
    seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    rng = seed * 0x9e3779b97f4a7c15ull + 1;
    printf("test_cl_gemv: seed %llu (DATTN_TEST_SEED=%llu replays it)\n",
           (unsigned long long)seed, (unsigned long long)seed);
    cl_int err;
    if (cl_select(NULL, &dev) != DATTN_OK)
        return 1;
    ctx = clCreateContext(NULL, 1, &dev.device, NULL, NULL, &err);
    if (err != CL_SUCCESS)
        return 1;
    queue = clCreateCommandQueue(ctx, dev.device, 0, &err);
    if (err != CL_SUCCESS)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedded_sources),
        cmocka_unit_test(test_gemv_shapes),
        cmocka_unit_test(test_gemv_layouts),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    clReleaseCommandQueue(queue);
    clReleaseContext(ctx);
    return rc;
}
