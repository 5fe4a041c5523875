/* The read-bandwidth ceiling of an OpenCL device, for `dattn bench --backend opencl`: a
 * streaming read of a large device buffer by a grid-stride kernel, best of several passes,
 * measured on the device the backend would pick for the same selector. Tools only. */
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
