/* dattn_devices in a build without OpenCL: there is nothing to list. */
#include "status.h"

dattn_status dattn_devices(dattn_device_info *out, int max, int *n)
{
    (void)out;
    (void)max;
    if (!n)
        return dattn_fail(DATTN_E_INVALID_ARG, "devices: n is NULL");
    *n = 0;
    return DATTN_OK;
}
