/* A small blocking HTTP/1.1 client for retectl (a CLI: blocking is fine).
 * One request per connection (Connection: close), a deadline for the whole
 * exchange, responses read with the project's parser (h1_parse.h). */
#ifndef RETE_CTL_HTTP_H
#define RETE_CTL_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

typedef struct rete_ctl_http {
    const char *server; /* "host:port", "[v6]:port", optionally "http://" first */
    const char *token;  /* bearer token or NULL */
    int timeout_ms;
    int verbose; /* print requests and statuses to stderr */
} rete_ctl_http;

typedef struct rete_ctl_response {
    int status;
    char reason[64];
    char date[64]; /* Date field value, "" when absent */
    char content_type[128];
    char *body; /* NUL-terminated, owned */
    size_t body_len;
    bool unreachable; /* nothing was sent: no connection (another replica may take it) */
} rete_ctl_response;

/* Send one request and read the whole response. Returns RETE_OK (whatever
 * the status), or with a message in err RETE_EIO (unreachable, timed out,
 * cut short) or RETE_EINVAL (a bad server address, a malformed response). */
RETE_MUST_CHECK rete_rc rete_ctl_http_do(const rete_ctl_http *c, const char *method,
                                         const char *path, const char *content_type,
                                         const char *body, size_t body_len, rete_ctl_response *resp,
                                         rete_error *err);

/* Parse a response from the bytes received so far; `eof` when the peer has
 * closed. RETE_OK when complete (resp filled), RETE_EAGAIN when more bytes
 * are needed, RETE_EINVAL on a malformed response (message in err). Pure:
 * unit-testable. */
RETE_MUST_CHECK rete_rc rete_ctl_http_parse(const char *buf, size_t len, bool eof,
                                            const char *method, rete_ctl_response *resp,
                                            rete_error *err);

void rete_ctl_response_free(rete_ctl_response *resp);

/* Percent-encode s for a query value or path segment (RFC 3986 unreserved
 * kept); malloc'ed. */
char *rete_ctl_urlencode(const char *s);

#endif
