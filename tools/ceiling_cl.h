/* The read-bandwidth and FMA ceilings of an OpenCL device (tools only; builds with OpenCL). */
#ifndef DATTN_TOOLS_CEILING_CL_H
#define DATTN_TOOLS_CEILING_CL_H

#include <stddef.h>

/* GB/s of a streaming read on the device `selector` picks ("P:D", a name piece, NULL = first
 * GPU or first device); 0 with the reason in `why` on failure. */
double ceiling_cl_read_gbps(const char *selector, char *why, size_t why_n);

/* GFLOP/s (an fma = 2 FLOP) of independent float4 fma chains on every compute unit of the device
 * `selector` picks; 0 with the reason in `why` on failure. */
double ceiling_cl_fma_gflops(const char *selector, char *why, size_t why_n);

#endif
