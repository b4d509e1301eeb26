/* One HTTP/1.1-over-TLS exchange with reted, from the workload's own
 * address (reted registers only the address a proxy's connection comes
 * from), verifying reted's SPIFFE identity: a one-shot request whose whole
 * answer is handed over at once, or the config stream, whose 200 answer's
 * body is newline-delimited JSON without end, handed over a line at a time.
 * Bounds: an answer's body and a stream's unfinished line are at most
 * CP_MAX_RESPONSE; a head at most 8 KB and 64 fields; the TCP connect at
 * most CP_CONNECT_TIMEOUT_MS. Every exchange goes to the replica in use
 * (cp_servers.c). */
#ifndef RETE_PROXY_CP_HTTP_H
#define RETE_PROXY_CP_HTTP_H

#include "cp_state.h"
#include "io.h"

#define CP_CONNECT_TIMEOUT_MS 5000

typedef struct cp_http cp_http;

typedef struct cp_http_cbs {
    /* A whole answer: a one-shot request's, or a stream refused (not 200). */
    void (*on_answer)(cp_http *h, int status, const char *body, size_t len);
    /* A stream is open (200). */
    void (*on_open)(cp_http *h);
    /* One line of an open stream (without its newline). */
    void (*on_line)(cp_http *h, const char *line, size_t len);
    /* The exchange is over; `ok`: a 200 answer was handed over (one-shot) or
     * the stream was open. h is freed after this returns. */
    void (*on_close)(cp_http *h, bool ok);
} cp_http_cbs;

struct cp_http {
    rete_io io;
    rete_cp *cp;
    const cp_http_cbs *cbs;
    bool stream;      /* asked for a stream */
    int status;       /* the answer's, once its head is read; 0 before */
    bool handled_ok;  /* what on_close is told */
    bool closed;
    char *request;
    size_t request_len;
    char *buf;
    size_t len, cap;
    uint64_t body_need;
};

/* Connect and send `method path` with a JSON body (may be NULL), then
 * `extra` (may be NULL: the stream's first line goes right after the head).
 * NULL when the connection cannot be started (the caller retries). */
cp_http *cp_http_start(rete_cp *cp, rete_tls_ctx *ctx, bool stream, const char *method, const char *path,
                       const char *body, const char *extra, const cp_http_cbs *cbs);
/* Write on an open exchange; false when the connection is going. */
bool cp_http_write(cp_http *h, const char *data, size_t len);
void cp_http_close(cp_http *h);

#endif
