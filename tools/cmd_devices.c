/* dattn devices: every OpenCL platform and device with what decides how dattn runs there. */
#include <stdio.h>

#include "tool.h"

int cmd_devices(int argc, char **argv)
{
    (void)argv;
    if (argc > 0) {
        fprintf(stderr, "dattn: devices: takes no arguments\n");
        return 2;
    }
    enum { MAX = 64 };
    dattn_device_info info[MAX];
    int n = 0;
    dattn_status st = dattn_devices(info, MAX, &n);
    if (st != DATTN_OK) {
        tool_report("devices", st);
        return 2;
    }
    if (n == 0) {
#ifdef DATTN_HAVE_OPENCL
        const char *why = "OpenCL, but no ICD or driver was found";
#else
        const char *why = "no OpenCL support";
#endif
        printf("no OpenCL devices (this build has %s; the cpu backend always works)\n", why);
        return 0;
    }
    for (int i = 0; i < n && i < MAX; i++) {
        const dattn_device_info *d = &info[i];
        printf("%d:%d  %s  [%s]\n", d->platform_index, d->device_index, d->name, d->platform);
        printf("      vendor %s, %s, driver %s\n", d->vendor, d->is_gpu ? "GPU" : "not a GPU",
               d->driver);
        printf("      %s, %s, fp16 %s\n", d->version, d->c_version, d->has_fp16 ? "yes" : "no");
        printf("      memory %.1f GiB (one buffer at most %.1f GiB), local memory %llu KiB, "
               "%d compute units\n",
               d->global_mem_bytes / 1073741824.0, d->max_alloc_bytes / 1073741824.0,
               (unsigned long long)(d->local_mem_bytes / 1024), d->compute_units);
        printf("      tuning row: %s\n", d->tuning);
    }
    if (n > MAX)
        printf("(%d more not shown)\n", n - MAX);
    return 0;
}
