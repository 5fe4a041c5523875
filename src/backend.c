/* The public backend API: dattn_backend_create picks and makes a backend (CPU, OpenCL, or the
 * first OpenCL GPU with the CPU as fallback); everything else goes through its ops table. */
#include <string.h>

#include "backend.h"
#include "status.h"

dattn_backend_params dattn_backend_default_params(void)
{
    dattn_backend_params p;
    memset(&p, 0, sizeof p);
    p.type = DATTN_BACKEND_AUTO;
    return p;
}

dattn_status dattn_backend_create(const dattn_backend_params *p, dattn_backend **out)
{
    if (!out)
        return dattn_fail(DATTN_E_INVALID_ARG, "backend: out is NULL");
    *out = NULL;
    dattn_backend_params def = dattn_backend_default_params();
    if (!p)
        p = &def;
    switch (p->type) {
    case DATTN_BACKEND_AUTO:
#ifdef DATTN_HAVE_OPENCL
        if (cl_has_gpu()) {
            dattn_status st = cl_backend_create(p, out);
            if (st == DATTN_OK)
                return st;
            dattn_log(DATTN_LOG_WARN, "backend: the OpenCL GPU failed at start-up (%s: %s); "
                      "using the CPU", dattn_status_name(st), dattn_last_error());
        } else {
            dattn_log(DATTN_LOG_INFO, "backend: auto found no OpenCL GPU; using the CPU");
        }
#else
        dattn_log(DATTN_LOG_INFO, "backend: auto picked the CPU (this build has no OpenCL)");
#endif
        return cpu_backend_create(p, out);
    case DATTN_BACKEND_CPU:
        return cpu_backend_create(p, out);
    case DATTN_BACKEND_OPENCL:
#ifdef DATTN_HAVE_OPENCL
        return cl_backend_create(p, out);
#else
        return dattn_fail(DATTN_E_UNSUPPORTED, "backend: this build has no OpenCL (configure with "
                          "-Dopencl=enabled and ocl-icd-opencl-dev installed); use the cpu backend");
#endif
    }
    return dattn_fail(DATTN_E_INVALID_ARG, "backend: unknown backend type %d", (int)p->type);
}

void dattn_backend_free(dattn_backend *be)
{
    if (be)
        be->ops->destroy(be);
}

const char *dattn_backend_describe(const dattn_backend *be) { return be ? be->describe : "(none)"; }

uint64_t dattn_backend_pool_passes(const dattn_backend *be)
{
    return be && be->ops->pool_passes ? be->ops->pool_passes(be) : 0;
}

