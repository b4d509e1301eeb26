#include "error.h"

#include <openssl/err.h>
#include <stdio.h>

const char *rete_rc_str(rete_rc rc)
{
    switch (rc) {
    case RETE_OK: return "ok";
    case RETE_EAGAIN: return "need more data";
    case RETE_EINVAL: return "invalid input";
    case RETE_ELIMIT: return "limit exceeded";
    case RETE_ENOMEM: return "out of memory";
    case RETE_EIO: return "I/O error";
    case RETE_ENOTFOUND: return "not found";
    case RETE_ESTATE: return "invalid state";
    case RETE_ECONFLICT: return "conflict";
    default: return "unknown error";
    }
}

static void verrf(char *err, size_t errlen, const char *fmt, va_list ap)
{
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
}

void rete_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verrf(err, errlen, fmt, ap);
    va_end(ap);
}

static void __attribute__((format(printf, 3, 0)))
verrf_ssl(char *err, size_t errlen, const char *fmt, va_list ap)
{
    unsigned long e = ERR_peek_error();
    if (err && errlen) {
        int n = vsnprintf(err, errlen, fmt, ap);
        if (e && n >= 0 && (size_t)n < errlen) {
            char buf[256];
            ERR_error_string_n(e, buf, sizeof buf);
            snprintf(err + n, errlen - (size_t)n, " (%s)", buf);
        }
    }
    ERR_clear_error();
}

rete_rc rete_error_set(rete_error *e, rete_rc code, const char *fmt, ...)
{
    if (e) {
        e->code = code;
        va_list ap;
        va_start(ap, fmt);
        verrf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

rete_rc rete_error_set_ssl(rete_error *e, rete_rc code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (e) {
        e->code = code;
        verrf_ssl(e->msg, sizeof e->msg, fmt, ap);
    } else {
        verrf_ssl(NULL, 0, fmt, ap); /* still clears the queue */
    }
    va_end(ap);
    return code;
}

const char *rete_ssl_reason(const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : fallback;
}
