/* Option parsing and error reporting shared by the dattn tool's commands. */
#include "tool.h"

#include <errno.h>
#include <stdio.h>
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

void tool_report(const char *cmd, dattn_status st)
{
    fprintf(stderr, "dattn: %s: %s: %s\n", cmd, dattn_status_name(st), dattn_last_error());
}
