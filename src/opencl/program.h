/* Building OpenCL programs once per context, with a binary cache on disk (DESIGN §2):
 * entries are keyed by source, options, device, driver and platform, and a corrupt, truncated or
 * stale entry is detected and rebuilt, never trusted. */
#ifndef DATTN_CL_PROGRAM_H
#define DATTN_CL_PROGRAM_H

#include "cl_common.h"

/* The default cache folder: $XDG_CACHE_HOME/dattn, else $HOME/.cache/dattn; "" when neither is
 * set (caching off). */
void cl_default_cache_dir(char *buf, size_t n);

/* Builds `text` (called `name` in messages and cache file names) for one device with `options`.
 * cache_dir NULL: the default folder; "": no cache. *from_cache says whether a cached binary was
 * used. A program that fails to compile gives DATTN_E_OPENCL with the build log in the message. */
dattn_status cl_program_build(cl_context ctx, cl_device_id dev, const char *name, const char *text,
                              const char *options, const char *cache_dir, cl_program *out,
                              int *from_cache);

#endif
