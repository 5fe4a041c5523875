/* OpenCL host plumbing on the first OpenCL device (PoCL in CI): errors by name, device selection,
 * program build, and the binary cache — a cached program runs, and a corrupt, truncated or stale
 * entry is rebuilt rather than trusted. Skips (exit 77) where no OpenCL device exists. */
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cl_common.h"
#include "program.h"

static const char *double_src =
    "__kernel void twice(__global const float *x, __global float *y) {\n"
    "    size_t i = get_global_id(0);\n"
    "    y[i] = 2.0f * x[i] + (float)SHIFT;\n"
    "}\n";

static char cache_dir[256];
static cl_device_entry dev;
static cl_context ctx;

static int count_files(const char *dir)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "ls -1 '%s' 2>/dev/null | grep -c '\\.bin$'", dir);
    FILE *p = popen(cmd, "r");
    int n = 0;
    if (p) {
        if (fscanf(p, "%d", &n) != 1)
            n = 0;
        pclose(p);
    }
    return n;
}

/* The one cache file (there is one per key in a fresh folder). */
static void cache_file(char *path, size_t n)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "ls -1 '%s'/*.bin 2>/dev/null | head -n 1", cache_dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(path, (int)n, p));
    path[strcspn(path, "\n")] = '\0';
    pclose(p);
}

/* Runs twice(x) with the program and checks y = 2x + shift on distinct values. */
static void check_runs(cl_program prog, float shift)
{
    cl_int err;
    enum { N = 1000 };
    float x[N], y[N];
    for (int i = 0; i < N; i++)
        x[i] = (float)i * 0.37f - 91.0f;
    cl_kernel k = clCreateKernel(prog, "twice", &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem bx = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof x, x, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem by = clCreateBuffer(ctx, CL_MEM_WRITE_ONLY, sizeof y, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_command_queue q = clCreateCommandQueue(ctx, dev.device, 0, &err);
    assert_int_equal(err, CL_SUCCESS);
    assert_int_equal(clSetKernelArg(k, 0, sizeof bx, &bx), CL_SUCCESS);
    assert_int_equal(clSetKernelArg(k, 1, sizeof by, &by), CL_SUCCESS);
    size_t global = N;
    assert_int_equal(clEnqueueNDRangeKernel(q, k, 1, NULL, &global, NULL, 0, NULL, NULL), CL_SUCCESS);
    assert_int_equal(clEnqueueReadBuffer(q, by, CL_TRUE, 0, sizeof y, y, 0, NULL, NULL), CL_SUCCESS);
    for (int i = 0; i < N; i++)
        assert_true(y[i] == 2.0f * x[i] + shift);
    clReleaseCommandQueue(q);
    clReleaseMemObject(bx);
    clReleaseMemObject(by);
    clReleaseKernel(k);
}

static void build(const char *options, int want_cached)
{
    cl_program prog;
    int cached = -1;
    dattn_status st = cl_program_build(ctx, dev.device, "twice", double_src, options, cache_dir,
                                       &prog, &cached);
    if (st != DATTN_OK)
        print_error("%s\n", dattn_last_error());
    assert_int_equal(st, DATTN_OK);
    assert_int_equal(cached, want_cached);
    check_runs(prog, options && strstr(options, "SHIFT=3") ? 3.0f : 1.0f);
    clReleaseProgram(prog);
}

static void test_error_names(void **state)
{
    (void)state;
    assert_string_equal(cl_error_name(CL_OUT_OF_RESOURCES), "CL_OUT_OF_RESOURCES");
    assert_string_equal(cl_error_name(CL_BUILD_PROGRAM_FAILURE), "CL_BUILD_PROGRAM_FAILURE");
    assert_string_equal(cl_error_name(-1001), "CL_PLATFORM_NOT_FOUND_KHR");
    assert_string_equal(cl_error_name(-9999), "CL_UNKNOWN_ERROR(-9999)");
    assert_string_equal(cl_call_name_("clBuildProgram(p, 1, &d, o, NULL, NULL)"), "clBuildProgram");
}

static void test_select(void **state)
{
    (void)state;
    cl_device_entry e;
    dattn_device_info info;
    assert_int_equal(cl_select(NULL, &e), DATTN_OK);
    assert_int_equal(cl_select("0:0", &e), DATTN_OK);
    assert_int_equal(e.platform_index, 0);
    assert_int_equal(e.device_index, 0);
    assert_int_equal(cl_describe(&e, &info), DATTN_OK);
    assert_true(info.compute_units > 0 && info.global_mem_bytes > 0 && info.max_alloc_bytes > 0);
    assert_true(info.tuning[0] != '\0');
    /* A case-changed piece of the name finds the same device. */
    char piece[8] = {0};
    memcpy(piece, info.name, strnlen(info.name, sizeof piece - 1));
    for (char *c = piece; *c; c++)
        *c = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    assert_int_equal(cl_select(piece, &e), DATTN_OK);
    assert_int_equal(cl_select("77:3", &e), DATTN_E_INVALID_ARG);
    assert_non_null(strstr(dattn_last_error(), "77:3"));
    assert_int_equal(cl_select("no-such-device-xyz", &e), DATTN_E_INVALID_ARG);
    assert_non_null(strstr(dattn_last_error(), "no-such-device-xyz"));
    int n = 0;
    dattn_device_info list[8];
    assert_int_equal(dattn_devices(list, 8, &n), DATTN_OK);
    assert_true(n >= 1);
    assert_string_equal(list[0].name, info.name);
}

static void test_cache_round_trip(void **state)
{
    (void)state;
    build("-D SHIFT=1", 0);
    assert_int_equal(count_files(cache_dir), 1);
    build("-D SHIFT=1", 1);
    build("-D SHIFT=3", 0);   /* other options: another key, another file */
    assert_int_equal(count_files(cache_dir), 2);
    build("-D SHIFT=3", 1);
}

static void corrupt_and_rebuild(const char *how)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache_dir);
    assert_int_equal(system(cmd), 0);
    build("-D SHIFT=1", 0);
    char path[512];
    cache_file(path, sizeof path);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    if (!strcmp(how, "flip")) {          /* one byte of the binary */
        fseek(f, (long)sb.st_size - 7, SEEK_SET);
        int c = fgetc(f);
        fseek(f, (long)sb.st_size - 7, SEEK_SET);
        fputc(c ^ 0x5a, f);
        fclose(f);
    } else if (!strcmp(how, "truncate")) {
        fclose(f);
        assert_int_equal(truncate(path, sb.st_size / 2), 0);
    } else if (!strcmp(how, "key")) {    /* an entry written for something else */
        fseek(f, 12, SEEK_SET);
        fputc(0xff, f);
        fclose(f);
    } else {                             /* garbage from the start */
        fputs("not a cache entry at all", f);
        fclose(f);
    }
    build("-D SHIFT=1", 0);              /* rebuilt, and the entry rewritten ... */
    build("-D SHIFT=1", 1);              /* ... so the next build trusts it again */
}

static void test_cache_rejects_bad_entries(void **state)
{
    (void)state;
    corrupt_and_rebuild("flip");
    corrupt_and_rebuild("truncate");
    corrupt_and_rebuild("key");
    corrupt_and_rebuild("garbage");
}

static void test_build_failure_has_log(void **state)
{
    (void)state;
    cl_program prog;
    int cached;
    dattn_status st = cl_program_build(ctx, dev.device, "broken",
                                       "__kernel void f(__global float *x) { x[0] = oops; }",
                                       "", "", &prog, &cached);
    assert_int_equal(st, DATTN_E_OPENCL);
    const char *msg = dattn_last_error();
    assert_non_null(strstr(msg, "broken"));
    assert_non_null(strstr(msg, "build log"));
    assert_non_null(strstr(msg, "oops"));
}

int main(void)
{
    int n = 0;
    cl_device_entry all[8];
    if (cl_enumerate(all, 8, &n) != DATTN_OK || n == 0) {
        printf("test_cl_program: no OpenCL device here; skipped\n");
        return 77;
    }
    if (cl_select(NULL, &dev) != DATTN_OK) {
        printf("test_cl_program: %s\n", dattn_last_error());
        return 1;
    }
    cl_int err;
    ctx = clCreateContext(NULL, 1, &dev.device, NULL, NULL, &err);
    if (err != CL_SUCCESS) {
        printf("test_cl_program: clCreateContext: %s\n", cl_error_name(err));
        return 1;
    }
    snprintf(cache_dir, sizeof cache_dir, "%s/dattn_cl_cache_%ld",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_names),
        cmocka_unit_test(test_select),
        cmocka_unit_test(test_cache_round_trip),
        cmocka_unit_test(test_cache_rejects_bad_entries),
        cmocka_unit_test(test_build_failure_has_log),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache_dir);
    if (system(cmd) != 0)
        rc = rc ? rc : 1;
    clReleaseContext(ctx);
    return rc;
}
