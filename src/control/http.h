/* A small HTTP/1.1 server for reted's two listeners (operator API, plain on
 * loopback; proxy API, TLS): one request at a time per connection,
 * keep-alive, bodies buffered up to a bound, and an upgrade to a
 * bidirectional newline-delimited stream for config push. Heads are parsed
 * by the project's strict parser (h1_parse.h). */
#ifndef RETE_CONTROL_HTTP_H
#define RETE_CONTROL_HTTP_H

#include "error.h"
#include "io.h"
#include "tls.h"
#include "view.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rete_http_server rete_http_server;
typedef struct rete_http_conn rete_http_conn;
typedef struct rete_http_stream rete_http_stream;

typedef struct rete_http_req {
    rete_view method;
    rete_view path;          /* without the query */
    rete_view query;         /* after '?', empty when none */
    const rete_header *headers;
    size_t n_headers;
    const char *body;        /* NUL-terminated copy, body_len bytes */
    size_t body_len;
    const char *peer_id;     /* TLS: the client certificate's SPIFFE ID, "" when none */
    const char *peer_addr;
    const rete_cert_facts *peer_cert; /* TLS: the verified client certificate, NULL when none */
    rete_http_conn *conn;
} rete_http_req;

/* Handle one request: call rete_http_respond (now or later, the connection
 * waits) or rete_http_stream_start. */
typedef void (*rete_http_handler)(rete_http_req *req, void *arg);

/* max_body bounds every request body unless an admission callback says
 * otherwise for its route (rete_http_server_set_admit). NULL with *err set
 * when the address does not parse or cannot be bound. */
rete_http_server *rete_http_listen(rete_io_loop *iol, const char *host, uint16_t port,
                                   rete_tls_ctx *tls, size_t max_body, rete_http_handler handler,
                                   void *arg, rete_error *err);

/* What one listener bounds, so that a client holds little before it has
 * shown a credential (docs/operations.md, "reted's limits"). 0 = no bound
 * (only unit tests leave them so). */
typedef struct rete_http_limits {
    size_t max_conns;            /* open connections; a new one over it is closed at once */
    size_t max_conns_per_source; /* open connections from one source IP address */
    uint32_t header_timeout_ms;  /* accept (TLS handshake included), or a request's first byte,
                                  * to its whole head; then 408 */
    uint32_t body_timeout_ms;    /* the head to the whole body; then 408 */
    uint32_t idle_timeout_ms;    /* a kept-alive connection between requests; then closed */
} rete_http_limits;
void rete_http_server_set_limits(rete_http_server *s, const rete_http_limits *lim);

/* Why the server refused a connection or a request before its handler saw it. */
typedef enum rete_http_refusal {
    RETE_HTTP_REFUSED_UNAUTHORIZED,    /* admission: no or a wrong credential */
    RETE_HTTP_REFUSED_NOT_FOUND,       /* admission: no such endpoint */
    RETE_HTTP_REFUSED_BODY_TOO_LARGE,  /* over the route's body bound (413) */
    RETE_HTTP_REFUSED_BAD_REQUEST,     /* a head the parser refused (400, 411, 431) */
    RETE_HTTP_REFUSED_HEADER_TIMEOUT,  /* head (or TLS handshake) not in within header_timeout */
    RETE_HTTP_REFUSED_BODY_TIMEOUT,    /* body not in within body_timeout */
    RETE_HTTP_REFUSED_CONNECTION_LIMIT,/* max_conns open */
    RETE_HTTP_REFUSED_SOURCE_LIMIT,    /* max_conns_per_source open from that address */
    RETE_HTTP_REFUSED_ACCEPT_ERROR,    /* accept(2) failed (EMFILE: libuv sheds the backlog) */
    RETE_HTTP_REFUSED_N,
} rete_http_refusal;
/* Metric label for each refusal ("unauthorized", "body_too_large", ...). */
extern const char *const rete_http_refusal_names[RETE_HTTP_REFUSED_N];

/* A request's admission, decided from its head before any of its body is
 * read: refuse it (status != 0: answered with {"error": error} and the
 * connection closed, unread body and all), or let it in with a body of at
 * most max_body bytes (413 over it, from the head's content-length). */
typedef struct rete_http_admit {
    int status;
    rete_http_refusal reason;    /* counted when refused */
    const char *error;           /* a constant; no characters JSON would escape */
    const char *extra_headers;   /* "name: value\r\n" lines or NULL */
    size_t max_body;             /* preset to the listener's max_body */
} rete_http_admit;
/* head: method, path, query, headers, peer_id, peer_addr; no body yet. */
typedef void (*rete_http_admit_fn)(const rete_http_req *head, void *arg, rete_http_admit *out);
void rete_http_server_set_admit(rete_http_server *s, rete_http_admit_fn admit);

/* Counters and the open-connection gauge, for /metrics. */
typedef struct rete_http_server_stats {
    size_t conns;                                /* open and admitted */
    uint64_t refused[RETE_HTTP_REFUSED_N];
    uint64_t idle_closed;                        /* closed after idle_timeout between requests */
} rete_http_server_stats;
void rete_http_server_stats_get(const rete_http_server *s, rete_http_server_stats *out);
/* New connections use `tls` from now on (a reissued server certificate);
 * open ones keep theirs. The caller keeps ownership of the context. */
void rete_http_server_set_tls(rete_http_server *s, rete_tls_ctx *tls);

/* What a server's streams hold, for /metrics. */
typedef struct rete_http_stream_stats {
    size_t streams;
    size_t queued_msgs;
    size_t buffered_bytes;      /* copied messages + ciphertext not yet in the kernel, all streams */
    size_t max_buffered_bytes;  /* the same for the stream holding the most */
    size_t shared_bytes;        /* bytes of shared messages (not held per stream) still to send */
    uint64_t closed_behind;     /* streams closed for falling too far behind */
} rete_http_stream_stats;
void rete_http_server_stream_stats(const rete_http_server *s, rete_http_stream_stats *out);

/* Stop listening and close every connection. */
void rete_http_server_close(rete_http_server *s);

/* Answer the request (body copied). extra_headers: "name: value\r\n" lines or NULL. */
void rete_http_respond(rete_http_req *req, int status, const char *content_type, const char *body,
                       size_t len, const char *extra_headers);
void rete_http_respond_json(rete_http_req *req, int status, const char *json);
/* Answer with a jansson value (serialised compactly, key order kept); takes
 * the reference. */
struct json_t;
void rete_http_respond_jobj(rete_http_req *req, int status, struct json_t *obj);

/* A value from the query string (first occurrence, not percent-decoded), or
 * an empty view. */
rete_view rete_http_query_get(const rete_http_req *req, const char *name);
rete_view rete_http_header_get(const rete_http_req *req, const char *name);

/* ---- streams ---- */

typedef struct rete_http_stream_cbs {
    void (*on_line)(rete_http_stream *st, const char *line, size_t len);
    void (*on_close)(rete_http_stream *st);
} rete_http_stream_cbs;

/* Answer 200 with `content_type` and no length, then turn the connection
 * into a stream of lines both ways. Lines are bounded (max_line); a longer
 * one closes the stream. */
rete_http_stream *rete_http_stream_start(rete_http_req *req, const char *content_type,
                                         const rete_http_stream_cbs *cbs, void *owner,
                                         size_t max_line);

/* Outgoing messages go out in order through a per-stream queue, handed to
 * TLS RETE_HTTP_STREAM_CHUNK plaintext bytes at a time, the next chunk only
 * once the socket has taken the previous one: a stream holds at most one
 * chunk of ciphertext (plus the io's low-water mark) however large its
 * messages, and a large message shared by many streams is never copied per
 * stream (rete_http_stream_send_ref).
 *
 * A reader that falls behind makes the queue grow; past
 * RETE_HTTP_STREAM_MAX_MSGS messages or RETE_HTTP_STREAM_MAX_COPIED bytes of
 * copied messages the stream is closed (its on_close runs) rather than
 * queueing without end: a proxy that reconnects gets one whole snapshot. */
#define RETE_HTTP_STREAM_CHUNK (3 * 16384)      /* three full TLS records */
#define RETE_HTTP_STREAM_MAX_MSGS 256
#define RETE_HTTP_STREAM_MAX_COPIED (1u << 20)
/* The most one stream holds of its own: its copied messages, one chunk of
 * ciphertext and the io's low-water mark (io.c) of ciphertext before it. */
#define RETE_HTTP_STREAM_LIMIT (RETE_HTTP_STREAM_MAX_COPIED + 2 * RETE_HTTP_STREAM_CHUNK + 16384)

/* Queue a copy of data. */
void rete_http_stream_send(rete_http_stream *st, const char *data, size_t len);
/* obj as one compact JSON line ("...\n", malloc'ed, *len without a NUL);
 * takes the reference; NULL when it cannot be serialised. */
char *rete_http_json_line(struct json_t *obj, size_t *len);
/* Queue obj as one JSON line (the streams' message framing); takes the
 * reference. */
void rete_http_stream_send_json(rete_http_stream *st, struct json_t *obj);

/* Releases what a queued message pointed at; owner is the stream's owner. */
typedef void (*rete_http_release)(void *owner, void *arg);

/* Queue one message: head (copied) followed by body. With a release
 * callback the body is not copied: it must stay valid and unchanged until
 * release(owner, arg) is called, exactly once, when its last byte has been
 * handed to TLS, or when the message is dropped (superseded, stream closed,
 * or already closed: then before this returns). Without one, the body is
 * copied too. With `supersedes`, queued messages that have not started to
 * go out are dropped first (a whole snapshot makes older ones moot). This
 * may close the stream (see the bounds above). */
void rete_http_stream_send_ref(rete_http_stream *st, const char *head, size_t head_len,
                               const char *body, size_t body_len, bool supersedes,
                               rete_http_release release, void *arg);
void rete_http_stream_close(rete_http_stream *st);
void *rete_http_stream_owner(const rete_http_stream *st);
/* One pointer of the owner's per stream (NULL until set): what the stream
 * belongs to, found without a search. */
void rete_http_stream_set_tag(rete_http_stream *st, void *tag);
void *rete_http_stream_tag(const rete_http_stream *st);
const char *rete_http_stream_peer_id(const rete_http_stream *st);
const char *rete_http_stream_peer_addr(const rete_http_stream *st);
/* The client certificate the stream's connection was verified with in its
 * handshake (a stream is always on one), NULL when none. */
const rete_cert_facts *rete_http_stream_peer_cert(const rete_http_stream *st);

#endif
