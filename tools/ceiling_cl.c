/* The ceilings of an OpenCL device, for `dattn bench --backend opencl`: read bandwidth (a
 * streaming read of a large device buffer by a grid-stride kernel) and FMA throughput (a kernel
 * of independent fma chains that touches memory once), best of several passes, measured on the
 * device the backend would pick for the same selector. Tools only: the device list comes from
 * the public dattn_devices(), the rest is plain OpenCL. */
#define _DEFAULT_SOURCE   /* strncasecmp */
#define CL_TARGET_OPENCL_VERSION 120
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include "ceiling_cl.h"

#include <CL/cl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ceiling.h"
#include "dattn.h"

/* One probe kernel on the device a selector picks: its context, queue, program, kernel and
 * buffers, released together. */
typedef struct probe {
    dattn_device_info info;
    cl_device_id device;
    cl_context ctx;
    cl_command_queue q;
    cl_program prog;
    cl_kernel k;
    cl_mem in, out;
} probe;

/* The codes a probe can meet, by name; others by number. */
static void say_cl_error(cl_int err, char *why, size_t why_n)
{
    static const struct { cl_int code; const char *name; } names[] = {
        {CL_DEVICE_NOT_FOUND, "CL_DEVICE_NOT_FOUND"},
        {CL_DEVICE_NOT_AVAILABLE, "CL_DEVICE_NOT_AVAILABLE"},
        {CL_MEM_OBJECT_ALLOCATION_FAILURE, "CL_MEM_OBJECT_ALLOCATION_FAILURE"},
        {CL_OUT_OF_RESOURCES, "CL_OUT_OF_RESOURCES"},
        {CL_OUT_OF_HOST_MEMORY, "CL_OUT_OF_HOST_MEMORY"},
        {CL_BUILD_PROGRAM_FAILURE, "CL_BUILD_PROGRAM_FAILURE"},
        {CL_INVALID_VALUE, "CL_INVALID_VALUE"},
        {CL_INVALID_BUFFER_SIZE, "CL_INVALID_BUFFER_SIZE"},
        {CL_INVALID_WORK_GROUP_SIZE, "CL_INVALID_WORK_GROUP_SIZE"},
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (names[i].code == err) {
            snprintf(why, why_n, "OpenCL: %s", names[i].name);
            return;
        }
    snprintf(why, why_n, "OpenCL: error %d", (int)err);
}

static int contains_nocase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return 1;
    return 0;
}

/* The device `selector` picks under the rule of dattn_backend_params.device: "P:D" indices,
 * else the first whose name, vendor or platform holds it (any case); NULL or "" the first GPU,
 * else the first device. 0 ok; -1 with the reason in why. */
static int pick(const char *selector, dattn_device_info *out, char *why, size_t why_n)
{
    enum { MAX = 256 };
    dattn_device_info *all = malloc(sizeof *all * MAX);
    int n = 0, found = -1, p, d;
    char extra;
    if (!all) {
        snprintf(why, why_n, "out of memory for the device list");
        return -1;
    }
    dattn_status st = dattn_devices(all, MAX, &n);
    if (st != DATTN_OK) {
        snprintf(why, why_n, "%s", dattn_last_error());
        free(all);
        return -1;
    }
    n = n < MAX ? n : MAX;
    int by_index = selector && sscanf(selector, "%d:%d%c", &p, &d, &extra) == 2;
    for (int i = 0; i < n && found < 0; i++) {
        if (!selector || !*selector)
            found = all[i].is_gpu ? i : -1;
        else if (by_index)
            found = all[i].platform_index == p && all[i].device_index == d ? i : -1;
        else if (contains_nocase(all[i].name, selector) ||
                 contains_nocase(all[i].vendor, selector) ||
                 contains_nocase(all[i].platform, selector))
            found = i;
    }
    if (found < 0 && n > 0 && (!selector || !*selector))
        found = 0;
    if (found < 0 && n == 0)
        snprintf(why, why_n, "no OpenCL device found");
    else if (found < 0)
        snprintf(why, why_n, "no OpenCL device matches '%s' (`dattn devices` lists them)",
                 selector);
    else
        *out = all[found];
    free(all);
    return found < 0 ? -1 : 0;
}

/* The cl_device_id at the "P:D" indices of a dattn_device_info (platform order, then every
 * device of the platform, as dattn_devices() counts them). */
static cl_int device_at(const dattn_device_info *info, cl_device_id *dev)
{
    cl_platform_id platforms[64];
    cl_device_id devices[256];
    cl_uint n_platforms = 0, n_devices = 0;
    cl_int err = clGetPlatformIDs(64, platforms, &n_platforms);
    if (err == CL_SUCCESS && (cl_uint)info->platform_index >= n_platforms)
        err = CL_DEVICE_NOT_FOUND;
    if (err == CL_SUCCESS)
        err = clGetDeviceIDs(platforms[info->platform_index], CL_DEVICE_TYPE_ALL, 256, devices,
                             &n_devices);
    if (err == CL_SUCCESS && (cl_uint)info->device_index >= n_devices)
        err = CL_DEVICE_NOT_FOUND;
    if (err == CL_SUCCESS)
        *dev = devices[info->device_index];
    return err;
}

/* Selects and describes the device, then builds `kernel` from src. DATTN/CL faults go to why;
 * returns CL_SUCCESS or the failing code (CL_DEVICE_NOT_FOUND when nothing was selected). */
static cl_int probe_open(probe *p, const char *selector, const char *src, const char *kernel,
                         char *why, size_t why_n)
{
    cl_int err;
    memset(p, 0, sizeof *p);
    snprintf(why, why_n, "ok");
    if (pick(selector, &p->info, why, why_n))
        return CL_DEVICE_NOT_FOUND;
    if ((err = device_at(&p->info, &p->device)) != CL_SUCCESS) {
        say_cl_error(err, why, why_n);
        return CL_DEVICE_NOT_FOUND;
    }
    p->ctx = clCreateContext(NULL, 1, &p->device, NULL, NULL, &err);
    if (err == CL_SUCCESS)
        p->q = clCreateCommandQueue(p->ctx, p->device, 0, &err);
    if (err == CL_SUCCESS)
        p->prog = clCreateProgramWithSource(p->ctx, 1, &src, NULL, &err);
    if (err == CL_SUCCESS)
        err = clBuildProgram(p->prog, 1, &p->device, "", NULL, NULL);
    if (err == CL_SUCCESS)
        p->k = clCreateKernel(p->prog, kernel, &err);
    return err;
}

/* Releases what was made; a failure code (not CL_SUCCESS) is named in why. */
static void probe_close(probe *p, cl_int err, char *why, size_t why_n)
{
    if (err != CL_SUCCESS && err != CL_DEVICE_NOT_FOUND)
        say_cl_error(err, why, why_n);
    if (p->out)
        clReleaseMemObject(p->out);
    if (p->in)
        clReleaseMemObject(p->in);
    if (p->k)
        clReleaseKernel(p->k);
    if (p->prog)
        clReleaseProgram(p->prog);
    if (p->q)
        clReleaseCommandQueue(p->q);
    if (p->ctx)
        clReleaseContext(p->ctx);
}

/* Two ways to stream the buffer, the better one counts: grid-stride (adjacent items on adjacent
 * float4s: coalesced on a GPU) and blocked (each item one contiguous run: what a CPU device, which
 * runs a work-group's items one after another, streams well). */
static const char *read_src =
    "__kernel void read_sum(__global const float4 *p, ulong n4, __global float *out) {\n"
    "    float4 acc = (float4)(0.0f);\n"
    "    for (ulong i = get_global_id(0); i < n4; i += get_global_size(0))\n"
    "        acc += p[i];\n"
    "    out[get_global_id(0)] = acc.x + acc.y + acc.z + acc.w;\n"
    "}\n"
    "__kernel void read_sum_blocked(__global const float4 *p, ulong n4, __global float *out) {\n"
    "    float4 acc = (float4)(0.0f);\n"
    "    ulong per = (n4 + get_global_size(0) - 1) / get_global_size(0);\n"
    "    ulong i0 = get_global_id(0) * per, i1 = min(i0 + per, n4);\n"
    "    for (ulong i = i0; i < i1; i++)\n"
    "        acc += p[i];\n"
    "    out[get_global_id(0)] = acc.x + acc.y + acc.z + acc.w;\n"
    "}\n";

double ceiling_cl_read_gbps(const char *selector, char *why, size_t why_n)
{
    probe p;
    double best = 0.0;
    cl_int err = probe_open(&p, selector, read_src, "read_sum", why, why_n);
    /* Far larger than any cache, within one buffer and a quarter of the device's memory. */
    size_t bytes = (size_t)1 << 30;
    if (bytes > p.info.max_alloc_bytes)
        bytes = (size_t)p.info.max_alloc_bytes;
    if (bytes > p.info.global_mem_bytes / 4)
        bytes = (size_t)(p.info.global_mem_bytes / 4);
    bytes &= ~(size_t)4095;
    size_t groups = (size_t)(p.info.compute_units > 0 ? p.info.compute_units : 1) * 8, local = 256;
    size_t global = groups * local;
    if (err == CL_SUCCESS)
        p.in = clCreateBuffer(p.ctx, CL_MEM_READ_ONLY, bytes, NULL, &err);
    if (err == CL_SUCCESS)
        p.out = clCreateBuffer(p.ctx, CL_MEM_WRITE_ONLY, global * sizeof(float), NULL, &err);
    if (err == CL_SUCCESS) {
        /* Distinct contents, so no layer can share pages of equal bytes. */
        cl_uint pattern = 0x3f8ccccdu;
        err = clEnqueueFillBuffer(p.q, p.in, &pattern, sizeof pattern, 0, bytes, 0, NULL, NULL);
    }
    cl_ulong n4 = bytes / 16;
    cl_kernel blocked = NULL;
    if (err == CL_SUCCESS)
        blocked = clCreateKernel(p.prog, "read_sum_blocked", &err);
    cl_kernel ks[2] = {p.k, blocked};
    for (int v = 0; v < 2 && err == CL_SUCCESS; v++) {
        err = clSetKernelArg(ks[v], 0, sizeof p.in, &p.in) |
              clSetKernelArg(ks[v], 1, sizeof n4, &n4) | clSetKernelArg(ks[v], 2, sizeof p.out, &p.out);
        for (int pass = 0; pass < 6 && err == CL_SUCCESS; pass++) {
            double t0 = ceiling_now_seconds();
            err = clEnqueueNDRangeKernel(p.q, ks[v], 1, NULL, &global, &local, 0, NULL, NULL);
            if (err == CL_SUCCESS)
                err = clFinish(p.q);
            double gbps = (double)bytes / (ceiling_now_seconds() - t0) / 1e9;
            if (pass > 0 && gbps > best)   /* pass 0 warms up */
                best = gbps;
        }
    }
    if (blocked)
        clReleaseKernel(blocked);
    probe_close(&p, err, why, why_n);
    return err == CL_SUCCESS ? best : 0.0;
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
    probe p;
    double best = 0.0;
    cl_int err = probe_open(&p, selector, fma_src, "fma_peak", why, why_n);
    /* Enough work-groups to fill every compute unit several times over. */
    size_t local = 64;
    size_t global = (size_t)(p.info.compute_units > 0 ? p.info.compute_units : 1) * 16 * local;
    cl_int iters = 256;
    cl_float a = 0.999f, b = 1e-3f;   /* converges to a fixed point: no overflow, no denormals */
    if (err == CL_SUCCESS)
        p.out = clCreateBuffer(p.ctx, CL_MEM_WRITE_ONLY, global * sizeof(float), NULL, &err);
    if (err == CL_SUCCESS)
        err = clSetKernelArg(p.k, 0, sizeof p.out, &p.out) |
              clSetKernelArg(p.k, 1, sizeof iters, &iters) | clSetKernelArg(p.k, 2, sizeof a, &a) |
              clSetKernelArg(p.k, 3, sizeof b, &b);
    /* Grow the loop until one pass takes 20 ms or more, so launch overhead stays small; then the
     * best of 5 passes. */
    for (int timed = 0; timed < 5 && err == CL_SUCCESS;) {
        double t0 = ceiling_now_seconds();
        err = clEnqueueNDRangeKernel(p.q, p.k, 1, NULL, &global, &local, 0, NULL, NULL);
        if (err == CL_SUCCESS)
            err = clFinish(p.q);
        double sec = ceiling_now_seconds() - t0;
        if (sec < 0.02 && iters < (1 << 24)) {
            iters *= 2;
            if (err == CL_SUCCESS)
                err = clSetKernelArg(p.k, 1, sizeof iters, &iters);
            continue;
        }
        double gflops = (double)global * iters * 8 * 4 * 2 / sec / 1e9;
        if (gflops > best)
            best = gflops;
        timed++;
    }
    probe_close(&p, err, why, why_n);
    return err == CL_SUCCESS ? best : 0.0;
}
