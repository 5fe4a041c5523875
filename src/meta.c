/* __metadata__ numbers (see meta.h). strtol/strtod with every character consumed, so "12abc",
 * "", " 1" and out-of-range values are errors that name the key and the text. */
#include "meta.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "status.h"

dattn_status meta_long(const st_file *f, const char *key, long lo, long hi, int required,
                       long fallback, long *out)
{
    const char *v = st_meta(f, key);
    if (!v) {
        if (required)
            return dattn_fail(DATTN_E_FORMAT, "__metadata__ has no '%s'", key);
        *out = fallback;
        return DATTN_OK;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < lo || n > hi)
        return dattn_fail(DATTN_E_FORMAT, "__metadata__ '%s' is \"%.40s\", expected an integer in "
                          "%ld..%ld", key, v, lo, hi);
    *out = n;
    return DATTN_OK;
}

dattn_status meta_positive(const st_file *f, const char *key, double fallback, double *out)
{
    const char *v = st_meta(f, key);
    if (!v) {
        *out = fallback;
        return DATTN_OK;
    }
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !isfinite(x) || !(x > 0))
        return dattn_fail(DATTN_E_FORMAT, "__metadata__ '%s' is \"%.40s\", expected a positive "
                          "number", key, v);
    *out = x;
    return DATTN_OK;
}
