/* Errors with a message: one type and one formatter for the whole project.
 *
 * A function that can fail for a reason a person must read takes a
 * `rete_error *` and returns `rete_rc` (result.h): on failure it fills the
 * error once, with the same code it returns, through rete_error_set (or
 * rete_error_set_ssl after an OpenSSL call), so the happy path stays
 *
 *     if (!x) return rete_error_set_ssl(err, RETE_EIO, "%s: cannot read", path);
 *
 * The older convention ("NULL/-1 + char buffer") writes through the same
 * formatter (rete_errf), so a message reads the same whichever way it
 * travels; docs/architecture.md lists what still uses it, and why.
 * OpenSSL's queue is per thread: rete_error_set_ssl reads and clears it on
 * the thread that made the failed call.
 *
 * Success leaves *err untouched: read it only after a failure. */
#ifndef RETE_ERROR_H
#define RETE_ERROR_H

#include "result.h"

#include <stdarg.h>
#include <stddef.h>

#define RETE_ERROR_MSG_MAX 512

typedef struct rete_error {
    rete_rc code;                  /* RETE_OK until something failed */
    char msg[RETE_ERROR_MSG_MAX];  /* "" until something failed */
} rete_error;

/* Record code and message in *e (may be NULL: nothing recorded); returns code. */
rete_rc rete_error_set(rete_error *e, rete_rc code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same, with OpenSSL's first queued error appended as " (<error string>)"
 * when there is one; clears this thread's OpenSSL error queue either way. */
rete_rc rete_error_set_ssl(rete_error *e, rete_rc code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The formatter behind rete_error_set, for callers that pass a char buffer:
 * write the message into err[errlen] (nothing when err is NULL or errlen 0),
 * truncated and always NUL-terminated. */
void rete_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The most specific reason OpenSSL queued on this thread (its last error's
 * reason string), or `fallback` when none; does not clear the queue. */
const char *rete_ssl_reason(const char *fallback);

#endif
