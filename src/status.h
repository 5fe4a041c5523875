/* Internal error reporting: set the thread's message where a fault is found (DESIGN §7).
 * dattn_fail() records a formatted message and returns the status, so call sites read
 *     if (n < 0) return dattn_fail(DATTN_E_SHAPE, "kv: n_ctx %d is negative", n);
 */
#ifndef DATTN_STATUS_H
#define DATTN_STATUS_H

#include "dattn.h"

#if defined(__GNUC__)
#define DATTN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DATTN_PRINTF(a, b)
#endif

dattn_status dattn_fail(dattn_status st, const char *fmt, ...) DATTN_PRINTF(2, 3);
/* Prepend context to the current message: "safetensors 'f.st': " + message. */
void dattn_error_prefix(const char *fmt, ...) DATTN_PRINTF(1, 2);
void dattn_clear_error(void);
void dattn_log(dattn_log_level level, const char *fmt, ...) DATTN_PRINTF(2, 3);

#endif
