/* Shared pieces of the dattn tool's commands: option parsing and reporting helpers. */
#ifndef DATTN_TOOL_H
#define DATTN_TOOL_H

#include "dattn.h"

int cmd_check_layer(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_devices(int argc, char **argv);

/* Parses "f32" / "f16" / "q8"; returns 0 on success. */
int tool_parse_kv(const char *s, dattn_kv_type *out);
const char *tool_kv_name(dattn_kv_type t);
/* Parses a non-negative integer in [lo, hi]; returns 0 on success. */
int tool_parse_int(const char *s, long lo, long hi, long *out);
/* Prints "dattn: CMD: STATUS_NAME: message" for a failed library call. */
void tool_report(const char *cmd, dattn_status st);
/* "cpu" / "auto" / "opencl" into params; returns 0 on success. */
int tool_parse_backend(const char *s, dattn_backend_type *out);

#endif
