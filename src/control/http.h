/* A small HTTP/1.1 server for reted's two listeners (operator API, plain on
 * loopback; proxy API, TLS): one request at a time per connection,
 * keep-alive, bodies buffered up to a bound, and an upgrade to a
 * bidirectional newline-delimited stream for config push. Heads are parsed
 * by the project's strict parser (h1_parse.h). */
#ifndef RETE_CONTROL_HTTP_H
#define RETE_CONTROL_HTTP_H

#include "io.h"
#include "tls.h"
#include "view.h"

#include <stddef.h>

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
    rete_http_conn *conn;
} rete_http_req;

/* Handle one request: call rete_http_respond (now or later, the connection
 * waits) or rete_http_stream_start. */
typedef void (*rete_http_handler)(rete_http_req *req, void *arg);

rete_http_server *rete_http_listen(rete_io_loop *iol, const char *host, uint16_t port,
                                   rete_tls_ctx *tls, size_t max_body, rete_http_handler handler,
                                   void *arg, char *err, size_t errlen);
/* New connections use `tls` from now on (a reissued server certificate);
 * open ones keep theirs. The caller keeps ownership of the context. */
void rete_http_server_set_tls(rete_http_server *s, rete_tls_ctx *tls);

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
void rete_http_stream_send(rete_http_stream *st, const char *data, size_t len);
void rete_http_stream_close(rete_http_stream *st);
void *rete_http_stream_owner(const rete_http_stream *st);
const char *rete_http_stream_peer_id(const rete_http_stream *st);
const char *rete_http_stream_peer_addr(const rete_http_stream *st);

#endif
