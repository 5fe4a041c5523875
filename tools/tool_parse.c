/* The option values of the tools parsed into numbers and the library's enums, and named back.
 * Nothing here calls the library, so a tool that loads libdattn at run time instead of linking
 * it (ab_decode) shares these with the dattn tool. */
#include "tool.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int tool_parse_kv(const char *s, dattn_kv_type *out)
{
    if (!strcmp(s, "f32"))
        *out = DATTN_KV_F32;
    else if (!strcmp(s, "f16"))
        *out = DATTN_KV_F16;
    else if (!strcmp(s, "q8"))
        *out = DATTN_KV_Q8;
    else
        return -1;
    return 0;
}

const char *tool_kv_name(dattn_kv_type t)
{
    return t == DATTN_KV_F32 ? "f32" : t == DATTN_KV_F16 ? "f16" : "q8";
}

int tool_parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int tool_parse_backend(const char *s, dattn_backend_type *out)
{
    if (!strcmp(s, "cpu"))
        *out = DATTN_BACKEND_CPU;
    else if (!strcmp(s, "auto"))
        *out = DATTN_BACKEND_AUTO;
    else if (!strcmp(s, "opencl"))
        *out = DATTN_BACKEND_OPENCL;
    else
        return -1;
    return 0;
}

int tool_parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int tool_parse_size(const char *s, uint64_t *bytes)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0 || s[0] == '-' || s[0] == '+')
        return -1;
    static const char units[] = "KMGT";
    double scale = 1.0;
    if (*end) {
        const char *u = strchr(units, toupper((unsigned char)*end));
        if (!u)
            return -1;
        for (const char *p = units; p <= u; p++)
            scale *= 1024.0;
        end++;
        if (!strcmp(end, "iB") || !strcmp(end, "ib") || !strcmp(end, "B") || !strcmp(end, "b"))
            end += strlen(end);
    }
    if (*end)
        return -1;
    double b = v * scale;
    if (b >= 18446744073709551616.0)
        return -1;
    *bytes = (uint64_t)b;
    return 0;
}

static const struct {
    dattn_dtype t;
    const char *name;
} weight_names[] = {
    {DATTN_DTYPE_F32, "f32"},   {DATTN_DTYPE_F16, "f16"},   {DATTN_DTYPE_BF16, "bf16"},
    {DATTN_DTYPE_Q8_0, "q8_0"}, {DATTN_DTYPE_Q4_0, "q4_0"},
};

int tool_parse_weights(const char *s, dattn_dtype *out)
{
    for (size_t i = 0; i < sizeof weight_names / sizeof *weight_names; i++)
        if (!strcmp(s, weight_names[i].name)) {
            *out = weight_names[i].t;
            return 0;
        }
    return -1;
}

const char *tool_weights_name(dattn_dtype t)
{
    for (size_t i = 0; i < sizeof weight_names / sizeof *weight_names; i++)
        if (weight_names[i].t == t)
            return weight_names[i].name;
    return "?";
}
