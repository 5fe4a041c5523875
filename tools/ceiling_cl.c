/* The ceilings of an OpenCL device, for `dattn bench --backend opencl`: read bandwidth (a
 * streaming read of a large device buffer by a grid-stride kernel) and FMA throughput (a kernel
 * of independent fma chains that touches memory once), best of several passes, measured on the
 * device the backend would pick for the same selector. Tools only. */
#include "ceiling_cl.h"

#include <stdio.h>
#include <string.h>

#include "cl_common.h"
#include "ceiling.h"

static const char *read_src =
    "__kernel void read_sum(__global const float4 *p, ulong n4, __global float *out) {\n"
    "    float4 acc = (float4)(0.0f);\n"
    "    for (ulong i = get_global_id(0); i < n4; i += get_global_size(0))\n"
    "        acc += p[i];\n"
    "    out[get_global_id(0)] = acc.x + acc.y + acc.z + acc.w;\n"
    "}\n";

double ceiling_cl_read_gbps(const char *selector, char *why, size_t why_n)
{
    cl_device_entry dev;
    dattn_device_info info;
    cl_int err;
    double best = 0.0;
    cl_context ctx = NULL;
    cl_command_queue q = NULL;
    cl_program prog = NULL;
    cl_kernel k = NULL;
    cl_mem buf = NULL, out = NULL;
    snprintf(why, why_n, "ok");
    if (cl_select(selector, &dev) != DATTN_OK) {
        snprintf(why, why_n, "%s", dattn_last_error());
        return 0.0;
    }
    cl_describe(&dev, &info);
    /* Far larger than any cache, within one buffer and a quarter of the device's memory. */
    size_t bytes = (size_t)1 << 30;
    if (bytes > info.max_alloc_bytes)
        bytes = (size_t)info.max_alloc_bytes;
    if (bytes > info.global_mem_bytes / 4)
        bytes = (size_t)(info.global_mem_bytes / 4);
    bytes &= ~(size_t)4095;
    size_t groups = (size_t)(info.compute_units > 0 ? info.compute_units : 1) * 8, local = 256;
    size_t global = groups * local;
    ctx = clCreateContext(NULL, 1, &dev.device, NULL, NULL, &err);
    if (err == CL_SUCCESS)
        q = clCreateCommandQueue(ctx, dev.device, 0, &err);
    if (err == CL_SUCCESS)
        prog = clCreateProgramWithSource(ctx, 1, &read_src, NULL, &err);
    if (err == CL_SUCCESS)
        err = clBuildProgram(prog, 1, &dev.device, "", NULL, NULL);
    if (err == CL_SUCCESS)
        k = clCreateKernel(prog, "read_sum", &err);
    if (err == CL_SUCCESS)
        buf = clCreateBuffer(ctx, CL_MEM_READ_ONLY, bytes, NULL, &err);
    if (err == CL_SUCCESS)
        out = clCreateBuffer(ctx, CL_MEM_WRITE_ONLY, global * sizeof(float), NULL, &err);
    if (err == CL_SUCCESS) {
        /* Distinct contents, so no layer can share pages of equal bytes. */
        cl_uint pattern = 0x3f8ccccdu;
        err = clEnqueueFillBuffer(q, buf, &pattern, sizeof pattern, 0, bytes, 0, NULL, NULL);
    }
    cl_ulong n4 = bytes / 16;
    if (err == CL_SUCCESS)
        err = clSetKernelArg(k, 0, sizeof buf, &buf) | clSetKernelArg(k, 1, sizeof n4, &n4) |
              clSetKernelArg(k, 2, sizeof out, &out);
    for (int pass = 0; pass < 6 && err == CL_SUCCESS; pass++) {
        double t0 = ceiling_now_seconds();
        err = clEnqueueNDRangeKernel(q, k, 1, NULL, &global, &local, 0, NULL, NULL);
        if (err == CL_SUCCESS)
            err = clFinish(q);
        double gbps = (double)bytes / (ceiling_now_seconds() - t0) / 1e9;
        if (pass > 0 && gbps > best)   /* pass 0 warms up */
            best = gbps;
    }
    if (err != CL_SUCCESS) {
        snprintf(why, why_n, "OpenCL: %s", cl_error_name(err));
        best = 0.0;
    }
    if (out)
        clReleaseMemObject(out);
    if (buf)
        clReleaseMemObject(buf);
    if (k)
        clReleaseKernel(k);
    if (prog)
        clReleaseProgram(prog);
    if (q)
        clReleaseCommandQueue(q);
    if (ctx)
        clReleaseContext(ctx);
    return best;
}

/* Each item runs 8 independent float4 fma chains (enough to cover the FMA latency), 2 FLOP per
 * lane per fma; the sum is stored so the compiler keeps the chains. */
static const char *fma_src =
    "__kernel void fma_peak(__global float *out, int iters, float a, float b) {\n"
    "    float4 x0 = (float4)(get_global_id(0) * 1e-7f), x1 = x0 + 0.1f, x2 = x0 + 0.2f,\n"
    "           x3 = x0 + 0.3f, x4 = x0 + 0.4f, x5 = x0 + 0.5f, x6 = x0 + 0.6f, x7 = x0 + 0.7f;\n"
    "    for (int i = 0; i < iters; i++) {\n"
    "        x0 = fma(x0, a, b); x1 = fma(x1, a, b); x2 = fma(x2, a, b); x3 = fma(x3, a, b);\n"
    "        x4 = fma(x4, a, b); x5 = fma(x5, a, b); x6 = fma(x6, a, b); x7 = fma(x7, a, b);\n"
    "    }\n"
    "    float4 s = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;\n"
    "    out[get_global_id(0)] = s.x + s.y + s.z + s.w;\n"
    "}\n";

double ceiling_cl_fma_gflops(const char *selector, char *why, size_t why_n)
{
    cl_device_entry dev;
    dattn_device_info info;
    cl_int err;
    double best = 0.0;
    cl_context ctx = NULL;
    cl_command_queue q = NULL;
    cl_program prog = NULL;
    cl_kernel k = NULL;
    cl_mem out = NULL;
    snprintf(why, why_n, "ok");
    if (cl_select(selector, &dev) != DATTN_OK) {
        snprintf(why, why_n, "%s", dattn_last_error());
        return 0.0;
    }
    cl_describe(&dev, &info);
    /* Enough work-groups to fill every compute unit several times over. */
    size_t local = 64, global = (size_t)(info.compute_units > 0 ? info.compute_units : 1) * 16 * local;
    cl_int iters = 256;
    cl_float a = 0.999f, b = 1e-3f;   /* converges to a fixed point: no overflow, no denormals */
    ctx = clCreateContext(NULL, 1, &dev.device, NULL, NULL, &err);
    if (err == CL_SUCCESS)
        q = clCreateCommandQueue(ctx, dev.device, 0, &err);
    if (err == CL_SUCCESS)
        prog = clCreateProgramWithSource(ctx, 1, &fma_src, NULL, &err);
    if (err == CL_SUCCESS)
        err = clBuildProgram(prog, 1, &dev.device, "", NULL, NULL);
    if (err == CL_SUCCESS)
        k = clCreateKernel(prog, "fma_peak", &err);
    if (err == CL_SUCCESS)
        out = clCreateBuffer(ctx, CL_MEM_WRITE_ONLY, global * sizeof(float), NULL, &err);
    if (err == CL_SUCCESS)
        err = clSetKernelArg(k, 0, sizeof out, &out) | clSetKernelArg(k, 1, sizeof iters, &iters) |
              clSetKernelArg(k, 2, sizeof a, &a) | clSetKernelArg(k, 3, sizeof b, &b);
    /* Grow the loop until one pass takes 20 ms or more, so launch overhead stays small; then the
     * best of 5 passes. */
    for (int timed = 0; timed < 5 && err == CL_SUCCESS;) {
        double t0 = ceiling_now_seconds();
        err = clEnqueueNDRangeKernel(q, k, 1, NULL, &global, &local, 0, NULL, NULL);
        if (err == CL_SUCCESS)
            err = clFinish(q);
        double s = ceiling_now_seconds() - t0;
        if (s < 0.02 && iters < (1 << 24)) {
            iters *= 2;
            if (err == CL_SUCCESS)
                err = clSetKernelArg(k, 1, sizeof iters, &iters);
            continue;
        }
        double gflops = (double)global * iters * 8 * 4 * 2 / s / 1e9;
        if (gflops > best)
            best = gflops;
        timed++;
    }
    if (err != CL_SUCCESS) {
        snprintf(why, why_n, "OpenCL: %s", cl_error_name(err));
        best = 0.0;
    }
    if (out)
        clReleaseMemObject(out);
    if (k)
        clReleaseKernel(k);
    if (prog)
        clReleaseProgram(prog);
    if (q)
        clReleaseCommandQueue(q);
    if (ctx)
        clReleaseContext(ctx);
    return best;
}
