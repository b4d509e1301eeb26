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

/* A line of a streamed answer (without its newline), or NULL about every
 * RETE_CTL_STREAM_TICK_MS while none comes. Return false to stop. */
typedef bool (*rete_ctl_line_fn)(void *arg, const char *line, size_t len);
#define RETE_CTL_STREAM_TICK_MS 250
#define RETE_CTL_STREAM_MAX_LINE (1u << 20)

/* GET path and read the answer as a stream of lines (reted's
 * application/x-ndjson answers: no length, until the server closes): the
 * head within the client's timeout, then lines for as long as fn wants
 * them. RETE_OK with resp->status 200 when it streamed (resp->body NULL;
 * *server_closed says whether reted ended it), or with another status and
 * the whole error answer in resp; RETE_EIO/RETE_EINVAL as rete_ctl_http_do. */
RETE_MUST_CHECK rete_rc rete_ctl_http_stream(const rete_ctl_http *c, const char *path,
                                             rete_ctl_line_fn fn, void *arg,
                                             rete_ctl_response *resp, bool *server_closed,
                                             rete_error *err);

/* Percent-encode s for a query value or path segment (RFC 3986 unreserved
 * kept); malloc'ed. */
char *rete_ctl_urlencode(const char *s);

#endif
