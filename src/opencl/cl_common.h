/* What the OpenCL host code shares: the CL header at the 1.2 API, checked calls that report the
 * failing call and the error by name (DESIGN §7), and the device table. */
#ifndef DATTN_CL_COMMON_H
#define DATTN_CL_COMMON_H

#define CL_TARGET_OPENCL_VERSION 120
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>
#include <CL/cl_ext.h>

#include "dattn.h"

/* "CL_OUT_OF_RESOURCES"; "CL_UNKNOWN_ERROR(-1234)" for codes not in the table (static buffer
 * per thread). */
const char *cl_error_name(cl_int err);

/* Runs a cl* call that returns cl_int; on failure sets the message ("opencl: clBuildProgram:
 * CL_BUILD_PROGRAM_FAILURE") and jumps to `fail` with st = DATTN_E_OPENCL. */
#define CL_TRY(call)                                                                             \
    do {                                                                                         \
        cl_int cl_err_ = (call);                                                                 \
        if (cl_err_ != CL_SUCCESS) {                                                             \
            st = dattn_fail(DATTN_E_OPENCL, "opencl: %s: %s", cl_call_name_(#call),              \
                            cl_error_name(cl_err_));                                             \
            goto fail;                                                                           \
        }                                                                                        \
    } while (0)

/* "clBuildProgram" out of "clBuildProgram(prog, 1, &dev, ...)" (static buffer per thread). */
const char *cl_call_name_(const char *call_text);

/* One OpenCL device as found at enumeration. */
typedef struct cl_device_entry {
    cl_platform_id platform;
    cl_device_id device;
    int platform_index, device_index;
} cl_device_entry;

/* Every device of every platform, in platform then device order. *n = 0 and DATTN_OK when the
 * ICD loader finds no platform. */
dattn_status cl_enumerate(cl_device_entry *out, int max, int *n);
/* Fills a public device description. */
dattn_status cl_describe(const cl_device_entry *e, dattn_device_info *info);
/* The device a selector names: "P:D" indices, or a case-insensitive substring of the device
 * name, vendor or platform name; NULL or "" = the first GPU, else the first device. */
dattn_status cl_select(const char *selector, cl_device_entry *out);

#endif
