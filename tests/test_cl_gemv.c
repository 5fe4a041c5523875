/* cl/gemv.cl on the first OpenCL device (PoCL in CI), built from the source embedded in the
 * library through the program cache: y = W x for weights in every format the OpenCL backend holds
 * (f32, f16, bf16, q8_0, q4_0, in the device layout of src/opencl/weight_layout.h, packed by the
 * backend's own clw_pack) against a float64 reference over the dequantized weights (src/quant.c).
 * Odd shapes (k not a multiple of 4 / 8 for f32 / f16 / bf16, m not a multiple of GEMV_ROWS),
 * several work-group layouts, the one-format and all-formats builds, and stacked parts with a
 * row_map. Random inputs; the seed is printed and DATTN_TEST_SEED replays it. Skips (exit 77)
 * where no OpenCL device exists. */
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

#include "backend.h"
#include "cl_common.h"
#include "cl_sources.h"
#include "program.h"
#include "quant.h"
#include "weight_layout.h"

static cl_device_entry dev;
static cl_context ctx;
static cl_command_queue queue;
static uint64_t seed, rng;

static const dattn_dtype dtypes[CLW_FORMATS] = {DATTN_DTYPE_F32, DATTN_DTYPE_F16, DATTN_DTYPE_BF16,
                                                DATTN_DTYPE_Q8_0, DATTN_DTYPE_Q4_0};

static double urand(void)   /* [-1, 1) */
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 4503599627370496.0 - 1.0;
}

/* A weight source of `rows` random rows of k weights in format fmt (host layout), with the
 * dequantized values in ref [rows][k]. */
static void *rand_rows(int fmt, int rows, int k, double *ref)
{
    size_t rb = quant_row_bytes(dtypes[fmt], k);
    unsigned char *data = malloc(rb * (size_t)rows + 1);
    float *row = malloc(sizeof(float) * (size_t)k + 1);
    assert_true(data && row);
    for (int r = 0; r < rows; r++) {
        /* rows of different magnitudes: the block scales differ */
        double gain = 0.25 + 2.0 * fabs(urand());
        for (int t = 0; t < k; t++)
            row[t] = (float)(gain * urand());
        quant_row_from_f32(dtypes[fmt], row, k, data + rb * (size_t)r);
        quant_row_to_f32(dtypes[fmt], data + rb * (size_t)r, k, row);
        for (int t = 0; t < k; t++)
            ref[(size_t)r * k + t] = row[t];
    }
    free(row);
    return data;
}

/* gemv.cl built with `options` (no disk cache), once per run. */
static struct { char options[128]; cl_program prog; } built[64];
static int n_built;

static cl_program program_for(const char *options)
{
    for (int i = 0; i < n_built; i++)
        if (!strcmp(built[i].options, options))
            return built[i].prog;
    cl_program prog;
    int cached;
    dattn_status st = cl_program_build(ctx, dev.device, "gemv", cl_source_text("gemv"), options,
                                       "", &prog, &cached);
    if (st != DATTN_OK)
        print_error("%s\n", dattn_last_error());
    assert_int_equal(st, DATTN_OK);
    assert_true(n_built < 64);
    snprintf(built[n_built].options, sizeof built[n_built].options, "%s", options);
    built[n_built++].prog = prog;
    return prog;
}

/* y = W x with gemv_<fmt> of gemv.cl built with `options`, W the packed rows of src. */
static void run_gemv(const char *options, int fmt, const weight_src *src, int m, int wg, int rows,
                     const float *x, float *y)
{
    int k = src->k;
    cl_program prog = program_for(options);
    size_t bytes = (size_t)clw_bytes(fmt, m, k);
    assert_true(bytes > 0);
    void *packed = malloc(bytes);
    assert_non_null(packed);
    clw_pack(src, m, packed);
    cl_int err;
    cl_mem bw = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, bytes, packed, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem bx = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof(float) * (size_t)k,
                               (void *)x, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem by = clCreateBuffer(ctx, CL_MEM_WRITE_ONLY, sizeof(float) * (size_t)m, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    char name[32];
    snprintf(name, sizeof name, "gemv_%s", clw_name(fmt));
    cl_kernel kern = clCreateKernel(prog, name, &err);
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
    clReleaseKernel(kern);
    clReleaseMemObject(bw);
    clReleaseMemObject(bx);
    clReleaseMemObject(by);
    free(packed);
}

/* The error against sum |w||x| (the scale of f32 rounding in a dot product) over all rows;
 * wd [m][k] holds the dequantized weights of W's rows. */
static void check_result(const char *what, int fmt, int m, int k, int wg, int rows,
                         const double *wd, const float *x, const float *y)
{
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
        print_error("gemv %s m=%d k=%d %s wg=%d rows=%d: rel err %.3g (seed %llu)\n", what, m, k,
                    clw_name(fmt), wg, rows, rel, (unsigned long long)seed);
        fail();
    }
}

/* all: build every format's kernel in one program (the backend's build), else WEIGHT_FORMAT. */
static void check_gemv(int m, int k, int fmt, int wg, int rows, int all)
{
    char options[128];
    if (all)
        snprintf(options, sizeof options, "-D GEMV_WG=%d -D GEMV_ROWS=%d", wg, rows);
    else
        snprintf(options, sizeof options, "-D GEMV_WG=%d -D GEMV_ROWS=%d -D WEIGHT_FORMAT=%d", wg,
                 rows, fmt);
    double *wd = malloc(sizeof(double) * (size_t)m * k);
    float *x = malloc(sizeof(float) * (size_t)k), *y = malloc(sizeof(float) * (size_t)m);
    assert_true(wd && x && y);
    void *data = rand_rows(fmt, m, k, wd);
    for (int t = 0; t < k; t++)
        x[t] = (float)urand();
    weight_src src = {.dtype = dtypes[fmt], .k = k, .n_parts = 1, .m = m};
    src.part[0].data = data;
    src.part[0].rows = m;
    run_gemv(options, fmt, &src, m, wg, rows, x, y);
    check_result(all ? "(all formats)" : "", fmt, m, k, wg, rows, wd, x, y);
    free(data);
    free(wd);
    free(x);
    free(y);
}

static void test_gemv_shapes(void **state)
{
    (void)state;
    /* f32 / f16 / bf16: any k, aligned rows or not */
    static const int shapes[][2] = {{1, 1},    {7, 33},  {64, 64},   {129, 257},  {3072, 1024},
                                    {500, 3},  {33, 12}, {65, 1000}, {9, 4100}, {131, 8}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (int f = CLW_F32; f <= CLW_BF16; f++)
            check_gemv(shapes[i][0], shapes[i][1], f, 64, 4, 0);
    /* the block formats: k a multiple of 32 */
    static const int qshapes[][2] = {{1, 32}, {7, 64}, {129, 96}, {77, 2048}, {3072, 1024},
                                     {5, 4096}, {1000, 160}};
    for (size_t i = 0; i < sizeof qshapes / sizeof *qshapes; i++)
        for (int f = CLW_Q8_0; f <= CLW_Q4_0; f++)
            check_gemv(qshapes[i][0], qshapes[i][1], f, 64, 4, 0);
}

static void test_gemv_layouts(void **state)
{
    (void)state;
    static const int layouts[][2] = {{16, 1}, {64, 64}, {128, 8}, {256, 4}, {256, 256}, {256, 1},
                                     {32, 2}, {128, 16}};
    for (size_t i = 0; i < sizeof layouts / sizeof *layouts; i++)
        for (int f = 0; f < CLW_FORMATS; f++) {
            check_gemv(77, f >= CLW_Q8_0 ? 416 : 191, f, layouts[i][0], layouts[i][1], 0);
            check_gemv(45, f >= CLW_Q8_0 ? 2560 : 2560 + 8, f, layouts[i][0], layouts[i][1], 0);
        }
}

/* One program with every format's kernel, as the backend builds it. */
static void test_gemv_all_formats(void **state)
{
    (void)state;
    for (int f = 0; f < CLW_FORMATS; f++) {
        check_gemv(259, 512, f, 128, 8, 1);
        check_gemv(3, 96, f, 256, 4, 1);
    }
}

/* Stacked parts and a row_map (a Hugging Face model's head order, rows repeated): the packing
 * picks W's rows in order. */
static void test_gemv_row_map(void **state)
{
    (void)state;
    enum { K = 96, P0 = 5, P1 = 11, P2 = 3, M = 23 };
    for (int f = 0; f < CLW_FORMATS; f++) {
        double *pd[3];
        void *pdata[3];
        const int prow[3] = {P0, P1, P2};
        weight_src src = {.dtype = dtypes[f], .k = K, .n_parts = 3, .m = M};
        for (int p = 0; p < 3; p++) {
            pd[p] = malloc(sizeof(double) * prow[p] * K);
            assert_non_null(pd[p]);
            pdata[p] = rand_rows(f, prow[p], K, pd[p]);
            src.part[p].data = pdata[p];
            src.part[p].rows = prow[p];
        }
        int32_t map[M];
        double *wd = malloc(sizeof(double) * M * K);
        float x[K], y[M];
        assert_non_null(wd);
        for (int r = 0; r < M; r++) {
            int s = (int)((r * 7 + 3) % (P0 + P1 + P2));
            map[r] = s;
            int p = s < P0 ? 0 : s < P0 + P1 ? 1 : 2, in = s - (p == 0 ? 0 : p == 1 ? P0 : P0 + P1);
            memcpy(wd + (size_t)r * K, pd[p] + (size_t)in * K, sizeof(double) * K);
        }
        src.row_map = map;
        for (int t = 0; t < K; t++)
            x[t] = (float)urand();
        run_gemv("-D GEMV_WG=64 -D GEMV_ROWS=4", f, &src, M, 64, 4, x, y);
        check_result("row_map", f, M, K, 64, 4, wd, x, y);
        for (int p = 0; p < 3; p++)
            free(pd[p]), free(pdata[p]);
        free(wd);
    }
}

static void test_layout_bytes(void **state)
{
    (void)state;
    /* the formats' own bytes, plus the pad that aligns the scale plane */
    assert_int_equal(clw_bytes(CLW_F32, 3, 5), 60);
    assert_int_equal(clw_bytes(CLW_F16, 3, 5), 30);
    assert_int_equal(clw_bytes(CLW_BF16, 3, 5), 30);
    assert_int_equal(clw_bytes(CLW_Q8_0, 3, 64), 192 + 12);
    assert_int_equal(clw_scale_offset(CLW_Q8_0, 3, 32), 96);
    assert_int_equal(clw_bytes(CLW_Q8_0, 3, 32), 96 + 6);
    assert_int_equal(clw_scale_offset(CLW_Q4_0, 3, 32), 48);
    assert_int_equal(clw_scale_offset(CLW_Q4_0, 1, 32), 16);
    assert_int_equal(clw_bytes(CLW_Q4_0, 4096, 4096), 4096ull * 4096 / 2 + 4096ull * 128 * 2);
    assert_int_equal(clw_bytes(CLW_Q4_0, 3, 48), 0);
    assert_int_equal(clw_format(DATTN_DTYPE_F64), -1);
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
        cmocka_unit_test(test_layout_bytes),
        cmocka_unit_test(test_gemv_shapes),
        cmocka_unit_test(test_gemv_layouts),
        cmocka_unit_test(test_gemv_all_formats),
        cmocka_unit_test(test_gemv_row_map),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    for (int i = 0; i < n_built; i++)
        clReleaseProgram(built[i].prog);
    clReleaseCommandQueue(queue);
    clReleaseContext(ctx);
    return rc;
}
