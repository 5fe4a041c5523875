/* OpenCL devices: enumeration, description and selection by "P:D" indices or a name substring
 * (DESIGN §2). Selection by environment (DATTN_DEVICE) is the tools' job: src/ reads no knobs. */
#define _DEFAULT_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backend.h"
#include "cl_common.h"
#include "status.h"
#include "tuning.h"

enum { MAX_PLATFORMS = 16, MAX_DEVICES_PER_PLATFORM = 64 };

dattn_status cl_enumerate(cl_device_entry *out, int max, int *n)
{
    cl_platform_id platforms[MAX_PLATFORMS];
    cl_uint n_platforms = 0;
    *n = 0;
    cl_int err = clGetPlatformIDs(MAX_PLATFORMS, platforms, &n_platforms);
    if (err == CL_PLATFORM_NOT_FOUND_KHR || n_platforms == 0)
        return DATTN_OK;   /* an ICD loader with no driver behind it */
    if (err != CL_SUCCESS)
        return dattn_fail(DATTN_E_OPENCL, "opencl: clGetPlatformIDs: %s", cl_error_name(err));
    if (n_platforms > MAX_PLATFORMS)
        n_platforms = MAX_PLATFORMS;
    for (cl_uint p = 0; p < n_platforms; p++) {
        cl_device_id devices[MAX_DEVICES_PER_PLATFORM];
        cl_uint n_devices = 0;
        err = clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES_PER_PLATFORM, devices,
                             &n_devices);
        if (err == CL_DEVICE_NOT_FOUND)
            continue;
        if (err != CL_SUCCESS)
            return dattn_fail(DATTN_E_OPENCL, "opencl: clGetDeviceIDs on platform %u: %s", p,
                              cl_error_name(err));
        if (n_devices > MAX_DEVICES_PER_PLATFORM)
            n_devices = MAX_DEVICES_PER_PLATFORM;
        for (cl_uint d = 0; d < n_devices; d++) {
            if (*n < max)
                out[*n] = (cl_device_entry){platforms[p], devices[d], (int)p, (int)d};
            (*n)++;
        }
    }
    return DATTN_OK;
}

static void str_info(cl_device_id dev, cl_device_info what, char *buf, size_t n)
{
    if (clGetDeviceInfo(dev, what, n, buf, NULL) != CL_SUCCESS)
        snprintf(buf, n, "?");
    buf[n - 1] = '\0';
}

dattn_status cl_describe(const cl_device_entry *e, dattn_device_info *info)
{
    memset(info, 0, sizeof *info);
    info->platform_index = e->platform_index;
    info->device_index = e->device_index;
    if (clGetPlatformInfo(e->platform, CL_PLATFORM_NAME, sizeof info->platform, info->platform,
                          NULL) != CL_SUCCESS)
        snprintf(info->platform, sizeof info->platform, "?");
    info->platform[sizeof info->platform - 1] = '\0';
    str_info(e->device, CL_DEVICE_VENDOR, info->vendor, sizeof info->vendor);
    str_info(e->device, CL_DEVICE_NAME, info->name, sizeof info->name);
    str_info(e->device, CL_DRIVER_VERSION, info->driver, sizeof info->driver);
    str_info(e->device, CL_DEVICE_VERSION, info->version, sizeof info->version);
    str_info(e->device, CL_DEVICE_OPENCL_C_VERSION, info->c_version, sizeof info->c_version);
    cl_ulong u;
    cl_uint cu;
    cl_device_type type;
    if (clGetDeviceInfo(e->device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof u, &u, NULL) == CL_SUCCESS)
        info->global_mem_bytes = u;
    if (clGetDeviceInfo(e->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof u, &u, NULL) == CL_SUCCESS)
        info->max_alloc_bytes = u;
    if (clGetDeviceInfo(e->device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof u, &u, NULL) == CL_SUCCESS)
        info->local_mem_bytes = u;
    if (clGetDeviceInfo(e->device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL) == CL_SUCCESS)
        info->compute_units = (int)cu;
    if (clGetDeviceInfo(e->device, CL_DEVICE_TYPE, sizeof type, &type, NULL) == CL_SUCCESS)
        info->is_gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
    size_t ext_len = 0;
    if (clGetDeviceInfo(e->device, CL_DEVICE_EXTENSIONS, 0, NULL, &ext_len) == CL_SUCCESS &&
        ext_len > 0) {
        char *ext = malloc(ext_len + 1);
        if (ext && clGetDeviceInfo(e->device, CL_DEVICE_EXTENSIONS, ext_len, ext, NULL) ==
                       CL_SUCCESS) {
            ext[ext_len] = '\0';
            info->has_fp16 = strstr(ext, "cl_khr_fp16") != NULL;
        }
        free(ext);
    }
    snprintf(info->tuning, sizeof info->tuning, "%s", tuning_lookup(info->vendor, info->name)->name);
    return DATTN_OK;
}

static int contains_nocase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return 1;
    return n == 0;
}

/* "P:D" with both parts decimal; returns 1 and the indices if the selector has that form. */
static int parse_indices(const char *s, int *p, int *d)
{
    char *end;
    if (!isdigit((unsigned char)s[0]))
        return 0;
    long a = strtol(s, &end, 10);
    if (*end != ':' || !isdigit((unsigned char)end[1]))
        return 0;
    long b = strtol(end + 1, &end, 10);
    if (*end || a > 1000 || b > 1000)
        return 0;
    *p = (int)a;
    *d = (int)b;
    return 1;
}

dattn_status cl_select(const char *selector, cl_device_entry *out)
{
    cl_device_entry all[MAX_PLATFORMS * 8];
    int n = 0;
    dattn_status st = cl_enumerate(all, (int)(sizeof all / sizeof *all), &n);
    if (st != DATTN_OK)
        return st;
    if (n > (int)(sizeof all / sizeof *all))
        n = (int)(sizeof all / sizeof *all);
    if (n == 0)
        return dattn_fail(DATTN_E_OPENCL, "opencl: no OpenCL device found (is an ICD installed "
                          "under /etc/OpenCL/vendors?)");
    if (!selector || !*selector) {
        for (int i = 0; i < n; i++) {
            cl_device_type type = 0;
            clGetDeviceInfo(all[i].device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
            if (type & CL_DEVICE_TYPE_GPU) {
                *out = all[i];
                return DATTN_OK;
            }
        }
        *out = all[0];
        return DATTN_OK;
    }
    int p, d;
    if (parse_indices(selector, &p, &d)) {
        for (int i = 0; i < n; i++)
            if (all[i].platform_index == p && all[i].device_index == d) {
                *out = all[i];
                return DATTN_OK;
            }
        return dattn_fail(DATTN_E_INVALID_ARG, "opencl: no device %d:%d (%d device%s found; "
                          "`dattn devices` lists them)", p, d, n, n == 1 ? "" : "s");
    }
    for (int i = 0; i < n; i++) {
        dattn_device_info info;
        cl_describe(&all[i], &info);
        if (contains_nocase(info.name, selector) || contains_nocase(info.vendor, selector) ||
            contains_nocase(info.platform, selector)) {
            *out = all[i];
            return DATTN_OK;
        }
    }
    return dattn_fail(DATTN_E_INVALID_ARG, "opencl: no device matches '%s' (give \"P:D\" indices "
                      "or part of a name; `dattn devices` lists them)", selector);
}

dattn_status dattn_devices(dattn_device_info *out, int max, int *n)
{
    if (!n || (max > 0 && !out))
        return dattn_fail(DATTN_E_INVALID_ARG, "devices: NULL out or n");
    cl_device_entry all[MAX_PLATFORMS * 8];
    int found = 0;
    dattn_status st = cl_enumerate(all, (int)(sizeof all / sizeof *all), &found);
    if (st != DATTN_OK)
        return st;
    *n = found;
    int listed = found < (int)(sizeof all / sizeof *all) ? found : (int)(sizeof all / sizeof *all);
    for (int i = 0; i < listed && i < max; i++)
        cl_describe(&all[i], &out[i]);
    return DATTN_OK;
}

int cl_has_gpu(void)
{
    cl_device_entry all[MAX_PLATFORMS * 8];
    int n = 0;
    if (cl_enumerate(all, (int)(sizeof all / sizeof *all), &n) != DATTN_OK)
        return 0;
    for (int i = 0; i < n && i < (int)(sizeof all / sizeof *all); i++) {
        cl_device_type type = 0;
        if (clGetDeviceInfo(all[i].device, CL_DEVICE_TYPE, sizeof type, &type, NULL) == CL_SUCCESS &&
            (type & CL_DEVICE_TYPE_GPU))
            return 1;
    }
    return 0;
}
