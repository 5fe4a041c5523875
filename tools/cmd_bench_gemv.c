/* dattn bench gemv|gemm --backend opencl: the projection kernels of the OpenCL backend alone, for
 * a random W [rows][cols] held in a weight format as the backend holds it
 * (src/opencl/weight_layout.h) and built as the backend builds them:
 *   gemv: the decode GEMV of cl/gemv.cl, y = W x (the device's tuning row, DATTN_TUNING applied),
 *         timed as bytes read per second against the device's read ceiling;
 *   gemm: the prefill GEMM of cl/gemm.cl (its default tiles, as the backend launches it; CLBlast
 *         is not timed here), y = x W^T for --tokens rows of x, timed as GFLOP/s against the
 *         device's FMA ceiling;
 * both ceilings measured in the same run (DESIGN §8). Launches cycle over copies of W that
 * together outgrow the device's caches, so each reads W from memory. A white-box part of the tool: it packs and launches with the library's internals
 * (the rest of `dattn bench` uses the public API only). The last line is machine-readable. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ceiling.h"
#include "ceiling_cl.h"
#include "cl_common.h"
#include "cl_sources.h"
#include "program.h"
#include "quant.h"
#include "tool.h"
#include "tuning.h"
#include "weight_layout.h"

enum { MAX_COPIES = 16, LAUNCHES = 8 };

static const char *cmd = "bench gemv";

static int bad(const char *msg, const char *arg)
{
    fprintf(stderr, "dattn: %s: %s%s%s\n", cmd, msg, arg ? " " : "", arg ? arg : "");
    return 2;
}

/* gemm.cl as the backend launches it (src/opencl/backend_cl.c): its default tiles */
enum { GEMM_LX = 16, GEMM_LY = 16, GEMM_TILE_N = 64, GEMM_TILE_M = 64 };

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float frand(void)   /* uniform in [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

/* Random rows in format dt (host layout), packed for the device into *packed (clw_bytes), and the
 * first `n_ref` rows dequantized into ref. */
static int make_weight(dattn_dtype dt, int m, int k, void **packed, float *ref, int n_ref)
{
    size_t rb = quant_row_bytes(dt, k);
    unsigned char *held = malloc(rb * (size_t)m);
    float *row = malloc(sizeof(float) * (size_t)k);
    *packed = malloc((size_t)clw_bytes(clw_format(dt), m, k));
    if (!held || !row || !*packed) {
        free(held), free(row), free(*packed);
        return -1;
    }
    float scale = 1.0f / sqrtf((float)k);
    for (int r = 0; r < m; r++) {
        for (int t = 0; t < k; t++)
            row[t] = frand() * scale;
        quant_row_from_f32(dt, row, k, held + rb * (size_t)r);
        if (r < n_ref)
            quant_row_to_f32(dt, held + rb * (size_t)r, k, ref + (size_t)r * k);
    }
    weight_src src = {.dtype = dt, .k = k, .n_parts = 1, .m = m};
    src.part[0].data = held;
    src.part[0].rows = m;
    clw_pack(&src, m, *packed);
    free(held);
    free(row);
    return 0;
}

int cmd_bench_gemv(int argc, char **argv, int gemm)
{
    cmd = gemm ? "bench gemm" : "bench gemv";
    long m = 16384, k = 4096, reps = 20, n = gemm ? 512 : 1;
    dattn_dtype dt = DATTN_DTYPE_F16;
    dattn_backend_type backend = DATTN_BACKEND_CPU;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return bad("missing value after", a);
        i++;
        if (!strcmp(a, "--rows")) {
            if (tool_parse_int(v, 1, 1L << 24, &m))
                return bad("--rows takes an integer in 1..2^24, not", v);
        } else if (!strcmp(a, "--cols")) {
            if (tool_parse_int(v, 1, 1L << 24, &k))
                return bad("--cols takes an integer in 1..2^24, not", v);
        } else if (gemm && !strcmp(a, "--tokens")) {
            if (tool_parse_int(v, 1, 1L << 16, &n))
                return bad("--tokens takes an integer in 1..65536, not", v);
        } else if (!strcmp(a, "--reps")) {
            if (tool_parse_int(v, 1, 100000, &reps))
                return bad("--reps takes an integer in 1..100000, not", v);
        } else if (!strcmp(a, "--weights")) {
            if (tool_parse_weights(v, &dt))
                return bad("--weights takes f32, f16, bf16, q8_0 or q4_0, not", v);
        } else if (!strcmp(a, "--backend")) {
            if (tool_parse_backend(v, &backend))
                return bad("--backend takes cpu, opencl or auto, not", v);
        } else {
            return bad("unknown option", a);
        }
    }
    if (backend != DATTN_BACKEND_OPENCL)
        return bad("runs the OpenCL kernels only: pass --backend opencl (the CPU's kernels: "
                   "tools/bench_gemm)", NULL);
    int fmt = clw_format(dt);
    uint64_t wbytes = fmt < 0 ? 0 : clw_bytes(fmt, (int)m, (int)k);
    if (wbytes == 0)
        return bad("a block format (q8_0, q4_0) needs --cols a multiple of 32", NULL);
    if (wbytes > SIZE_MAX / 2)
        return bad("the weight is too large for this host", NULL);

    const char *selector = getenv("DATTN_DEVICE");
    cl_device_entry dev;
    dattn_device_info info;
    dattn_status st = cl_select(selector, &dev);
    if (st == DATTN_OK)
        st = cl_describe(&dev, &info);
    if (st != DATTN_OK) {
        tool_report(cmd, st);
        return 2;
    }
    tuning_row tune = *tuning_lookup(info.vendor, info.name);
    const char *override = getenv("DATTN_TUNING");
    char why[256];
    if (override && *override && tuning_override(&tune, override, why, sizeof why) != 0)
        return bad("DATTN_TUNING:", why);

    /* copies of W that outgrow the caches: 512 MiB in all, 2 at least */
    int copies = (int)((512ull << 20) / wbytes + 1);
    copies = copies < 2 ? 2 : copies > MAX_COPIES ? MAX_COPIES : copies;
    if ((uint64_t)copies * wbytes > info.global_mem_bytes / 2)
        copies = 1;
    if (wbytes > info.max_alloc_bytes) {
        fprintf(stderr, "dattn: %s: the weight is %llu bytes; '%s' allows %llu in one buffer\n", cmd,
                (unsigned long long)wbytes, info.name, (unsigned long long)info.max_alloc_bytes);
        return 2;
    }
    enum { N_REF = 8 };
    size_t x_len = (size_t)n * (size_t)k, y_len = (size_t)n * (size_t)m;
    float *ref = malloc(sizeof(float) * N_REF * (size_t)k);
    float *x = malloc(sizeof(float) * x_len), *y = malloc(sizeof(float) * y_len);
    double *ms = malloc(sizeof(double) * (size_t)reps);
    void *packed = NULL;
    if (!ref || !x || !y || !ms || make_weight(dt, (int)m, (int)k, &packed, ref, N_REF) != 0) {
        fprintf(stderr, "dattn: %s: out of memory\n", cmd);
        return 2;
    }
    for (size_t t = 0; t < x_len; t++)
        x[t] = frand();

    cl_int err;
    cl_context ctx = clCreateContext(NULL, 1, &dev.device, NULL, NULL, &err);
    cl_command_queue q = err == CL_SUCCESS ? clCreateCommandQueue(ctx, dev.device, 0, &err) : NULL;
    cl_mem w[MAX_COPIES] = {0}, bx = NULL, by = NULL;
    cl_program prog = NULL;
    cl_kernel kern = NULL;
    int rc = 2;
    if (err != CL_SUCCESS) {
        fprintf(stderr, "dattn: %s: a context on '%s': %s\n", cmd, info.name, cl_error_name(err));
        goto done;
    }
    for (int c = 0; c < copies && err == CL_SUCCESS; c++)
        w[c] = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, (size_t)wbytes, packed,
                              &err);
    if (err == CL_SUCCESS)
        bx = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof(float) * x_len, x,
                            &err);
    if (err == CL_SUCCESS)
        by = clCreateBuffer(ctx, CL_MEM_WRITE_ONLY, sizeof(float) * y_len, NULL, &err);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "dattn: %s: %d buffers of %llu bytes on '%s': %s\n", cmd, copies,
                (unsigned long long)wbytes, info.name, cl_error_name(err));
        goto done;
    }
    /* the backend's builds: every format in one program; gemv with the row's work-group, gemm
     * with the file's tiles */
    char opt[96], name[32];
    int cached;
    const char *file = gemm ? "gemm" : "gemv";
    if (gemm)
        opt[0] = 0;
    else
        snprintf(opt, sizeof opt, "-D GEMV_WG=%d -D GEMV_ROWS=%d", tune.gemv_wg, tune.gemv_rows);
    if ((st = cl_program_build(ctx, dev.device, file, cl_source_text(file), opt, NULL, &prog,
                               &cached)) != DATTN_OK) {
        tool_report(cmd, st);
        goto done;
    }
    snprintf(name, sizeof name, "%s_%s", file, clw_name(fmt));
    kern = clCreateKernel(prog, name, &err);
    int mi = (int)m, ki = (int)k, ni = (int)n;
    size_t local[2], global[2];
    if (err == CL_SUCCESS && gemm) {   /* gemm(x, ldx, w, y, ldy, n, m, k) */
        err |= clSetKernelArg(kern, 0, sizeof bx, &bx);
        err |= clSetKernelArg(kern, 1, sizeof ki, &ki);
        err |= clSetKernelArg(kern, 3, sizeof by, &by);
        err |= clSetKernelArg(kern, 4, sizeof mi, &mi);
        err |= clSetKernelArg(kern, 5, sizeof ni, &ni);
        err |= clSetKernelArg(kern, 6, sizeof mi, &mi);
        err |= clSetKernelArg(kern, 7, sizeof ki, &ki);
        local[0] = GEMM_LX, local[1] = GEMM_LY;
        global[0] = (size_t)((m + GEMM_TILE_N - 1) / GEMM_TILE_N) * GEMM_LX;
        global[1] = (size_t)((n + GEMM_TILE_M - 1) / GEMM_TILE_M) * GEMM_LY;
    } else if (err == CL_SUCCESS) {    /* gemv(w, x, y, m, k) */
        err |= clSetKernelArg(kern, 1, sizeof bx, &bx);
        err |= clSetKernelArg(kern, 2, sizeof by, &by);
        err |= clSetKernelArg(kern, 3, sizeof mi, &mi);
        err |= clSetKernelArg(kern, 4, sizeof ki, &ki);
        local[0] = (size_t)tune.gemv_wg, local[1] = 1;
        global[0] = (size_t)((m + tune.gemv_rows - 1) / tune.gemv_rows) * local[0], global[1] = 1;
    }
    const cl_uint w_arg = gemm ? 2 : 0;
    int launch = 0;
    for (int r = -1; r < reps && err == CL_SUCCESS; r++) {   /* r = -1: warm-up */
        double t0 = ceiling_now_seconds();
        for (int j = 0; j < LAUNCHES && err == CL_SUCCESS; j++, launch++) {
            err = clSetKernelArg(kern, w_arg, sizeof(cl_mem), &w[launch % copies]);
            if (err == CL_SUCCESS)
                err = clEnqueueNDRangeKernel(q, kern, gemm ? 2 : 1, NULL, global, local, 0, NULL,
                                             NULL);
        }
        if (err == CL_SUCCESS)
            err = clFinish(q);
        if (r >= 0)
            ms[r] = (ceiling_now_seconds() - t0) * 1e3 / LAUNCHES;
    }
    if (err == CL_SUCCESS)
        err = clEnqueueReadBuffer(q, by, CL_TRUE, 0, sizeof(float) * y_len, y, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "dattn: %s: %s on '%s': %s\n", cmd, name, info.name, cl_error_name(err));
        goto done;
    }
    /* the first rows of W against the host, for the first and last row of x: a bench of a wrong
     * kernel is no bench */
    double e2 = 0, s2 = 0;
    for (long i = 0; i < n; i += n > 1 ? n - 1 : 1)
        for (int r = 0; r < N_REF && r < m; r++) {
            const float *xr = x + (size_t)i * k, *wr = ref + (size_t)r * k;
            double s = 0, mag = 0;
            for (long t = 0; t < k; t++)
                s += (double)wr[t] * xr[t], mag += fabs((double)wr[t] * xr[t]);
            double got = y[(size_t)i * m + r];
            e2 += (got - s) * (got - s), s2 += mag * mag;
        }
    if (!(sqrt(e2 / s2) <= 1e-5)) {
        fprintf(stderr, "dattn: %s: %s disagrees with the host: rel err %.3g\n", cmd, name,
                sqrt(e2 / s2));
        goto done;
    }
    double med = ceiling_median(ms, (int)reps);
    if (gemm) {
        double gflops = 2.0 * (double)n * (double)m * (double)k / (med * 1e-3) / 1e9;
        double ceil_gflops = ceiling_cl_fma_gflops(selector, why, sizeof why);
        if (ceil_gflops <= 0)
            fprintf(stderr, "dattn: %s: no device FMA ceiling: %s\n", cmd, why);
        double pct = ceil_gflops > 0 ? 100.0 * gflops / ceil_gflops : 0.0;
        printf("device: %s (%s), gemm.cl tiles %dx%d, %dx%d items\n", info.name, info.platform,
               GEMM_TILE_M, GEMM_TILE_N, GEMM_LX, GEMM_LY);
        printf("fma ceiling: %.1f GFLOP/s (device fma chains)\n", ceil_gflops);
        printf("gemm %ld tokens x %ldx%ld %s: %.4f ms (median of %ld x %d launches over %d copies "
               "of W), %.1f GFLOP/s = %.1f%% of the fma ceiling\n", n, m, k, clw_name(fmt), med,
               reps, LAUNCHES, copies, gflops, pct);
        printf("bench=gemm tokens=%ld rows=%ld cols=%ld weights=%s isa=opencl ms=%.4f gflops=%.1f "
               "ceiling_gflops=%.1f pct=%.1f\n", n, m, k, clw_name(fmt), med, gflops, ceil_gflops,
               pct);
        rc = 0;
        goto done;
    }
    double bytes = (double)wbytes + 4.0 * (double)k + 4.0 * (double)m;
    double gbps = bytes / (med * 1e-3) / 1e9;
    double ceil_gbps = ceiling_cl_read_gbps(selector, why, sizeof why);
    if (ceil_gbps <= 0)
        fprintf(stderr, "dattn: %s: no device read ceiling: %s\n", cmd, why);
    double pct = ceil_gbps > 0 ? 100.0 * gbps / ceil_gbps : 0.0;
    printf("device: %s (%s), tuning %s: GEMV_WG=%d GEMV_ROWS=%d\n", info.name, info.platform,
           tune.name, tune.gemv_wg, tune.gemv_rows);
    printf("read ceiling: %.1f GB/s (device streaming read)\n", ceil_gbps);
    printf("gemv %ldx%ld %s: %.4f ms (median of %ld x %d launches over %d copies of W), %.1f MB "
           "read, %.1f GB/s = %.1f%% of read bandwidth\n", m, k, clw_name(fmt), med, reps,
           LAUNCHES, copies, bytes / 1e6, gbps, pct);
    printf("bench=gemv rows=%ld cols=%ld weights=%s gemv_wg=%d gemv_rows=%d isa=opencl ms=%.4f "
           "gbps=%.1f ceiling_gbps=%.1f pct=%.1f\n", m, k, clw_name(fmt), tune.gemv_wg,
           tune.gemv_rows, med, gbps, ceil_gbps, pct);
    rc = 0;
done:
    if (kern)
        clReleaseKernel(kern);
    if (prog)
        clReleaseProgram(prog);
    for (int c = 0; c < MAX_COPIES; c++)
        if (w[c])
            clReleaseMemObject(w[c]);
    if (bx)
        clReleaseMemObject(bx);
    if (by)
        clReleaseMemObject(by);
    if (q)
        clReleaseCommandQueue(q);
    if (ctx)
        clReleaseContext(ctx);
    free(packed), free(ref), free(x), free(y), free(ms);
    return rc;
}
