/* Status codes, their names and texts (one X-macro table), the per-thread error message and the
 * optional log callback (DESIGN §7). The library never prints: messages go to the caller. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define DATTN_STATUS_TABLE(X)                                                            \
    X(DATTN_OK, "success")                                                               \
    X(DATTN_E_INVALID_ARG, "invalid argument")                                           \
    X(DATTN_E_SHAPE, "impossible or mismatched shapes")                                  \
    X(DATTN_E_NOMEM, "out of host memory")                                               \
    X(DATTN_E_ARENA, "the arena is too small")                                           \
    X(DATTN_E_CACHE_FULL, "the KV cache is full")                                        \
    X(DATTN_E_POSITION, "position does not follow the cache")                            \
    X(DATTN_E_IO, "file input/output failed")                                            \
    X(DATTN_E_FORMAT, "malformed file")                                                  \
    X(DATTN_E_UNSUPPORTED, "not supported by this backend or build")                     \
    X(DATTN_E_OPENCL, "an OpenCL call failed")                                           \
    X(DATTN_E_THREAD, "a thread could not be started")                                   \
    X(DATTN_E_NONFINITE, "a weight, input or activation is NaN or infinite")

const char *dattn_status_name(dattn_status st)
{
    switch (st) {
#define X(code, text) case code: return #code;
        DATTN_STATUS_TABLE(X)
#undef X
    }
    return "DATTN_E_UNKNOWN";
}

const char *dattn_status_text(dattn_status st)
{
    switch (st) {
#define X(code, text) case code: return text;
        DATTN_STATUS_TABLE(X)
#undef X
    }
    return "unknown status";
}

static _Thread_local char last_error[1024];

const char *dattn_last_error(void) { return last_error; }

void dattn_clear_error(void) { last_error[0] = '\0'; }

dattn_status dattn_fail(dattn_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}

void dattn_error_prefix(const char *fmt, ...)
{
    char head[512], old[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    /* Truncation is fine here: a long message loses its tail, never its head. */
    size_t n = strlen(head);
    if (n >= sizeof last_error)
        n = sizeof last_error - 1;
    memcpy(last_error, head, n);
    size_t room = sizeof last_error - 1 - n, m = strlen(old);
    memcpy(last_error + n, old, m < room ? m : room);
    last_error[n + (m < room ? m : room)] = '\0';
}

static dattn_log_fn log_fn;
static void *log_ud;

void dattn_log_set(dattn_log_fn fn, void *user_data)
{
    log_fn = fn;
    log_ud = user_data;
}

void dattn_log(dattn_log_level level, const char *fmt, ...)
{
    if (!log_fn)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_fn(level, msg, log_ud);
}
