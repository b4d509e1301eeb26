/* HTTP/1.1 upstream codec: requests to the local app (inbound side) and to
 * endpoints outside the mesh. Keep-alive connections go back to a per-address
 * idle list in the worker's pool; one request at a time per connection. */
#include "h1_client.h"
#include "alloc.h"
#include "breaker.h"
#include "exchange.h"
#include "h1_out.h"
#include "h1_parse.h"
#include "io.h"
#include "log.h"
#include "upstream_wait.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Idle keep-alive connections kept per app address. A bound on idle ones
 * only: closing busy-pool connections as they finish (the old bound counted
 * all of them) made every request past the 64th in flight pay a connect. */
#define H1C_MAX_IDLE 256

typedef struct rete_h1_client {
    rete_io io;
    rete_worker *worker;
    rete_pool_entry *pool;
    struct rete_h1_client *next_idle;
    rete_exchange *ex;
    char *buf;
    size_t len;
    size_t cap;
    bool connected;
    bool idle;
    bool req_chunked;
    bool req_sent;          /* request fully written */
    bool head_done;         /* response head received */
    bool resp_done;
    bool keep_alive;
    bool paused;
    bool got_bytes;         /* any response byte seen (stale keep-alive detection) */
    bool originates;        /* TLS to a server outside the mesh (DestinationRule tls SIMPLE) */
    rete_h1_body body;
    uint64_t body_left;
    rete_h1_chunked chunked;
    /* Outbound to a Service: the breaker whose `connections` this one
     * holds (NULL: not counted), and maxRequestsPerConnection (0: none). */
    rete_breaker *breaker;
    uint32_t max_requests;
    uint32_t n_requests;
    rete_pool_idle idle_to;  /* connectionPool.http.idleTimeout, while on the idle list */
} h1c;

static const rete_side_ops h1c_ops;
static void h1c_send_body(h1c *c);

static void h1c_close(h1c *c)
{
    if (c->io.closing)
        return;
    if (c->idle) {
        /* unlink from the idle list */
        for (h1c **pp = &c->pool->idle; *pp; pp = &(*pp)->next_idle)
            if (*pp == c) {
                *pp = c->next_idle;
                break;
            }
        c->idle = false;
        c->pool->n_idle--;
    }
    rete_io_close(&c->io);
}

static void h1c_fail(h1c *c, rete_ex_error err, const char *why)
{
    rete_exchange *ex = c->ex;
    c->ex = NULL;
    if (ex)
        rete_ex_fail(ex, RETE_UPSTREAM, err, why);
    h1c_close(c);
}

static void h1c_write_head(h1c *c)
{
    rete_exchange *ex = c->ex;
    rete_outbuf b;
    rete_outbuf_init(&b);
    rete_outbuf_view(&b, ex->req.method);
    rete_outbuf_put(&b, " ", 1);
    rete_outbuf_view(&b, ex->req.path.len ? ex->req.path : RETE_VIEW_LIT("/"));
    rete_outbuf_puts(&b, " HTTP/1.1\r\nhost: ");
    rete_outbuf_view(&b, ex->req.authority);
    rete_outbuf_puts(&b, "\r\n");
    rete_h1_put_request_fields(&b, &ex->req);
    c->req_chunked = false;
    if (ex->req.content_length >= 0) {
        char line[48];
        int n = snprintf(line, sizeof(line), "content-length: %lld\r\n", (long long)ex->req.content_length);
        if (ex->req.content_length > 0 || !rete_view_eq(ex->req.method, RETE_VIEW_LIT("GET")))
            rete_outbuf_put(&b, line, (size_t)n);
    } else if (!(ex->req_body.end && !ex->req_body.head)) {
        rete_outbuf_puts(&b, "transfer-encoding: chunked\r\n");
        c->req_chunked = true;
    }
    rete_outbuf_puts(&b, "\r\n");
    uv_buf_t ub = uv_buf_init(b.p, (unsigned)b.len);
    rete_rc rc = rete_io_write(&c->io, &ub, 1);
    rete_outbuf_free(&b);
    if (rc < 0) {
        rete_debug("h1c: head write failed: %s (closing=%d)", rete_rc_str(rc), c->io.closing);
        h1c_fail(c, RETE_EXE_UPSTREAM_RESET, "write failed");
    }
}

static void h1c_send_body(h1c *c)
{
    rete_exchange *ex = c->ex;
    while (ex && !c->req_sent && c->io.queued < 256 * 1024) {
        const char *d;
        size_t n = rete_ex_peek(ex, RETE_UPSTREAM, &d);
        if (n == 0)
            break;
        rete_rc rc;
        if (c->req_chunked) {
            rete_outbuf b;
            rete_outbuf_init(&b);
            rete_h1_put_chunk_size(&b, n);
            uv_buf_t bufs[3] = {uv_buf_init(b.p, (unsigned)b.len), uv_buf_init((char *)d, (unsigned)n),
                                uv_buf_init("\r\n", 2)};
            rc = rete_io_write(&c->io, bufs, 3);
            rete_outbuf_free(&b);
        } else {
            uv_buf_t ub = uv_buf_init((char *)d, (unsigned)n);
            rc = rete_io_write(&c->io, &ub, 1);
        }
        if (rc < 0) {
            h1c_fail(c, RETE_EXE_UPSTREAM_RESET, "write failed");
            return;
        }
        rete_ex_consume(ex, RETE_UPSTREAM, n);
        ex = c->ex;
    }
    if (!ex || c->req_sent || ex->req_body.head || !ex->req_body.end)
        return;
    if (c->req_chunked) {
        rete_outbuf b;
        rete_outbuf_init(&b);
        rete_outbuf_puts(&b, "0\r\n");
        rete_h1_put_fields(&b, &ex->req_body.trailers);
        rete_outbuf_puts(&b, "\r\n");
        uv_buf_t ub = uv_buf_init(b.p, (unsigned)b.len);
        rete_rc rc = rete_io_write(&c->io, &ub, 1);
        rete_outbuf_free(&b);
        if (rc < 0) {
            h1c_fail(c, RETE_EXE_UPSTREAM_RESET, "write failed");
            return;
        }
    }
    c->req_sent = true;
}

static void h1c_done(h1c *c)
{
    rete_exchange *ex = c->ex;
    c->ex = NULL;
    rete_ex_end(ex, RETE_UPSTREAM);
    rete_ex_detach(ex, RETE_UPSTREAM);
    rete_h1_chunked_free(&c->chunked);
    /* Retired after maxRequestsPerConnection; and while requests of its
     * Service wait for a connection anywhere in the proxy, an idle one
     * would hold a slot they need: closed. */
    if (!c->keep_alive || !c->req_sent || c->len || c->pool->n_idle >= H1C_MAX_IDLE ||
        (c->max_requests && c->n_requests >= c->max_requests) ||
        (c->breaker && rete_breaker_load(&c->breaker->pending))) {
        h1c_close(c);
        return;
    }
    rete_upstream_wait_kick(c->worker);
    /* Back to the idle list; keep reading so a close by the app is seen. */
    c->idle = true;
    c->next_idle = c->pool->idle;
    c->pool->idle = c;
    c->pool->n_idle++;
    rete_pool_idle_start(&c->idle_to);
    if (c->paused) {
        c->paused = false;
        rete_io_read_start(&c->io);
    }
}

/* Response body bytes; returns bytes used. */
static size_t h1c_body(h1c *c, const char *data, size_t len)
{
    rete_exchange *ex = c->ex;
    if (c->body == RETE_H1_BODY_UNTIL_CLOSE) {
        if (rete_ex_push(ex, RETE_UPSTREAM, data, len))
            c->paused = true;
        return len;
    }
    if (c->body == RETE_H1_BODY_LENGTH) {
        size_t n = len < c->body_left ? len : (size_t)c->body_left;
        c->body_left -= n;
        if (n && rete_ex_push(ex, RETE_UPSTREAM, data, n))
            c->paused = true;
        if (c->body_left == 0)
            c->resp_done = true;
        return n;
    }
    size_t used = 0;
    while (used < len && !c->resp_done) {
        size_t consumed = 0, dlen = 0;
        const char *d = NULL;
        int rc = rete_h1_chunked_decode(&c->chunked, data + used, len - used, &consumed, &d, &dlen);
        used += consumed;
        if (rc < 0) {
            h1c_fail(c, RETE_EXE_UPSTREAM_RESET, "malformed chunked response");
            return len;
        }
        if (dlen && rete_ex_push(ex, RETE_UPSTREAM, d, dlen))
            c->paused = true;
        if (rc == 1) {
            rete_h1_header tr[32];
            size_t n = rete_h1_chunked_trailers(&c->chunked, tr, 32);
            for (size_t i = 0; i < n; i++)
                rete_msg_add(ex, &ex->resp_body.trailers, tr[i].name, tr[i].value);
            c->resp_done = true;
        }
        if (consumed == 0 && dlen == 0)
            break;
    }
    return used;
}

static void h1c_on_data(rete_io *io, const char *data, size_t len)
{
    h1c *c = io->owner;
    c->got_bytes = true;
    if (!c->ex) {
        /* Bytes on an idle connection: the app broke the protocol. */
        h1c_close(c);
        return;
    }
    while (len > 0 && c->ex) {
        if (!c->head_done) {
            const char *p = data;
            size_t n = len;
            bool stashed = false;
            if (c->len) {
                if (c->len + len > 65536 + 4) {
                    h1c_fail(c, RETE_EXE_UPSTREAM_RESET, "response head too large");
                    return;
                }
                if (c->len + len > c->cap) {
                    c->cap = c->len + len;
                    c->buf = rete_realloc(c->buf, c->cap);
                }
                memcpy(c->buf + c->len, data, len);
                c->len += len;
                p = c->buf;
                n = c->len;
                stashed = true;
            }
            rete_h1_message m = {0};
            m.headers = c->worker->h1_fields;
            rete_h1_limits lim = RETE_H1_LIMITS_DEFAULT;
            lim.max_headers = 128;
            rete_h1_error err = {0};
            int r = rete_h1_parse_response(p, n, &lim, c->ex->req.method, &m, &err);
            if (r == RETE_EAGAIN) {
                if (!stashed) {
                    c->buf = rete_realloc(c->buf, len > 4096 ? len : 4096);
                    c->cap = len > 4096 ? len : 4096;
                    memcpy(c->buf, data, len);
                    c->len = len;
                }
                return;
            }
            if (r < 0) {
                h1c_fail(c, RETE_EXE_UPSTREAM_RESET, err.reason ? err.reason : "bad response");
                return;
            }
            rete_exchange *ex = c->ex;
            if (m.status / 100 == 1 && m.status != 101) {
                /* Interim response: forward (except 100) and parse on. */
                memset(&ex->resp, 0, sizeof(ex->resp));
                ex->resp.status = m.status;
                for (size_t i = 0; i < m.n_headers; i++)
                    if (!rete_h1_is_hop_by_hop(&m, m.headers[i].name))
                        rete_msg_add(ex, &ex->resp, m.headers[i].name, m.headers[i].value);
                rete_ex_interim(ex);
            } else {
                ex->resp.status = m.status;
                ex->resp.content_length = m.body == RETE_H1_BODY_LENGTH ? (int64_t)m.content_length : -1;
                if (m.body == RETE_H1_BODY_NONE)
                    ex->resp.content_length = rete_view_eq(ex->req.method, RETE_VIEW_LIT("HEAD")) &&
                                                      m.body == RETE_H1_BODY_NONE
                                                  ? -1
                                                  : 0;
                for (size_t i = 0; i < m.n_headers; i++) {
                    rete_view name = m.headers[i].name;
                    if (rete_h1_is_hop_by_hop(&m, name))
                        continue;
                    if (rete_view_ieq(name, RETE_VIEW_LIT("content-length")) &&
                        !rete_view_eq(ex->req.method, RETE_VIEW_LIT("HEAD")))
                        continue;
                    rete_msg_add(ex, &ex->resp, name, m.headers[i].value);
                }
                c->head_done = true;
                c->keep_alive = (m.flags & RETE_H1_F_KEEP_ALIVE) != 0;
                c->body = m.body;
                c->body_left = m.content_length;
                if (m.body == RETE_H1_BODY_CHUNKED)
                    rete_h1_chunked_init(&c->chunked);
                c->resp_done = m.body == RETE_H1_BODY_NONE ||
                               (m.body == RETE_H1_BODY_LENGTH && m.content_length == 0);
                if (m.body == RETE_H1_BODY_UNTIL_CLOSE)
                    c->keep_alive = false;
                rete_ex_response_ready(ex);
            }
            size_t rest = n - (size_t)r;
            const char *restp = p + r;
            if (stashed) {
                /* move the rest out of c->buf before reusing it */
                char *copy = rest ? rete_malloc(rest) : NULL;
                if (rest)
                    memcpy(copy, restp, rest);
                rete_free(&c->buf);
                c->len = c->cap = 0;
                if (c->resp_done && c->ex)
                    h1c_done(c);
                else if (rest && c->ex)
                    h1c_on_data(io, copy, rest);
                free(copy);
                return;
            }
            data = restp;
            len = rest;
            if (c->resp_done && c->ex) {
                h1c_done(c);
                return;
            }
            continue;
        }
        size_t used = h1c_body(c, data, len);
        data += used;
        len -= used;
        if (!c->ex)
            return;
        if (c->resp_done) {
            h1c_done(c);
            return;
        }
        if (c->paused)
            rete_io_read_stop(io);
    }
}

static void h1c_on_eof(rete_io *io)
{
    h1c *c = io->owner;
    if (c->ex && c->head_done && c->body == RETE_H1_BODY_UNTIL_CLOSE) {
        c->resp_done = true;
        c->keep_alive = false;
        h1c_done(c);
        return;
    }
    if (c->ex)
        h1c_fail(c, RETE_EXE_UPSTREAM_RESET,
                 c->got_bytes ? "upstream closed mid-response" : "upstream closed before responding");
    else
        h1c_close(c);
}

static void h1c_on_error(rete_io *io, const char *why)
{
    h1c *c = io->owner;
    h1c_fail(c, c->connected ? RETE_EXE_UPSTREAM_RESET : RETE_EXE_CONNECT, why);
}


static void h1c_on_ready(rete_io *io, int status, const char *why)
{
    h1c *c = io->owner;
    if (status < 0) {
        /* The TCP connection was made and the originated TLS failed (the
         * session says why): counted, and the 503's body says so (UF, as
         * Envoy flags a failed upstream TLS handshake). */
        const char *tls_err = c->originates && io->tls ? rete_tls_session_error(io->tls) : "";
        if (tls_err[0]) {
            char msg[200];
            snprintf(msg, sizeof(msg), "TLS origination failed: %s", tls_err);
            rete_stat(c->worker, c->worker->ms.upstream_tls_failures, 1);
            h1c_fail(c, RETE_EXE_CONNECT, msg);
            return;
        }
        h1c_fail(c, io->connect_timed_out ? RETE_EXE_CONNECT_TIMEOUT : RETE_EXE_CONNECT, why);
        return;
    }
    c->connected = true;
    if (c->ex) {
        h1c_write_head(c);
        if (c->ex)
            h1c_send_body(c);
    }
}

static void h1c_on_drain(rete_io *io)
{
    h1c *c = io->owner;
    if (c->ex)
        h1c_send_body(c);
}

static void h1c_on_close(rete_io *io)
{
    h1c *c = io->owner;
    if (c->ex) {
        /* Closed from outside (a worker's exit closes every connection):
         * the exchange must not keep a side that is about to be freed. */
        rete_exchange *ex = c->ex;
        c->ex = NULL;
        rete_ex_fail(ex, RETE_UPSTREAM, RETE_EXE_UPSTREAM_RESET, "upstream connection closed");
    }
    c->pool->n_h1--;
    if (c->breaker) {
        rete_breaker_give(&c->breaker->connections);
        rete_upstream_wait_kick(c->worker);
    }
    rete_pool_idle_free(&c->idle_to);
    rete_h1_chunked_free(&c->chunked);
    free(c->buf);
    free(c);
}

/* one io callback table per owner of a connection (io.h): the same shape by design. */
static const rete_io_cbs h1c_io_cbs = {
    .on_data = h1c_on_data,
    .on_eof = h1c_on_eof,
    .on_error = h1c_on_error,
    .on_ready = h1c_on_ready,
    .on_drain = h1c_on_drain,
    .on_close = h1c_on_close,
};

/* ---- exchange side ---- */

static void h1c_on_head(rete_exchange *ex) { (void)ex; }

static void h1c_on_data_ready(rete_exchange *ex)
{
    h1c *c = ex->side[RETE_UPSTREAM];
    if (c->connected)
        h1c_send_body(c);
}

static void h1c_on_drained(rete_exchange *ex, size_t consumed)
{
    (void)consumed;
    h1c *c = ex->side[RETE_UPSTREAM];
    if (c->paused && !ex->resp_body.paused) {
        c->paused = false;
        rete_io_read_start(&c->io);
    }
}

static void h1c_on_abort(rete_exchange *ex)
{
    h1c *c = ex->side[RETE_UPSTREAM];
    c->ex = NULL;
    rete_ex_detach(ex, RETE_UPSTREAM);
    h1c_close(c);
}

/* one side table per codec side (exchange.h): the same shape by design. */
static const rete_side_ops h1c_ops = {
    .name = "h1-client",
    .on_head = h1c_on_head,
    .on_data = h1c_on_data_ready,
    .on_drained = h1c_on_drained,
    .on_abort = h1c_on_abort,
};

/* connectionPool.http.idleTimeout: an idle pooled connection is closed. */
static void h1c_idle_expire(void *owner)
{
    h1c *c = owner;
    if (c->idle)
        h1c_close(c);
}

/* A connection for `ex`: an idle one of the pool, else a new one within
 * the Service's maxConnections, else the request waits (upstream_wait.h). */
static void h1c_start(rete_exchange *ex, const rete_upstream_target *t)
{
    rete_worker *w = ex->worker;
    char key[224];
    /* A TLS connection is pooled apart from a plaintext one, and by the
     * context (the trust it was verified with: one per Service) and name.
     * A pooled connection's session holds its context, so no new context
     * can take that address while the key is in use. */
    if (t->originate)
        snprintf(key, sizeof(key), "h1s|%s|%u|%s|%p", t->ip, t->port, t->originate_name,
                 (void *)t->originate);
    else
        snprintf(key, sizeof(key), "h1|%s|%u", t->ip, t->port);
    rete_pool_entry *pool = rete_pool_get(w, key);
    const rete_upstream_limits *lim = t->limits;
    h1c *c = pool->idle;
    if (c) {
        pool->idle = c->next_idle;
        pool->n_idle--;
        c->idle = false;
        c->next_idle = NULL;
        rete_pool_idle_busy(&c->idle_to);
    } else {
        if (lim && !rete_breaker_take(&lim->breaker->connections, lim->max_connections)) {
            rete_upstream_wait(ex, RETE_CODEC_H1_CLIENT, t);
            return;
        }
        rete_tls_session *tls = NULL;
        if (t->originate) {
            tls = rete_tls_session_new_client(t->originate, NULL, t->originate_name);
            if (!tls) {
                if (lim)
                    rete_breaker_give(&lim->breaker->connections);
                rete_ex_fail(ex, RETE_UPSTREAM, RETE_EXE_CONNECT, "cannot start TLS origination");
                return;
            }
        }
        c = rete_calloc(1, sizeof(*c));
        c->worker = w;
        c->pool = pool;
        c->originates = tls != NULL;
        if (rete_io_connect(&c->io, &w->iol, t->ip, t->port, tls, &h1c_io_cbs, c) < 0) {
            if (lim)
                rete_breaker_give(&lim->breaker->connections);
            rete_tls_session_free(tls);
            free(c);
            rete_ex_fail(ex, RETE_UPSTREAM, RETE_EXE_CONNECT, "bad upstream address");
            return;
        }
        rete_io_connect_timeout(&c->io, t->connect_timeout_ms);
        rete_pool_idle_init(&c->idle_to, w, lim, h1c_idle_expire, c);
        pool->n_h1++;
        if (lim) {
            c->breaker = lim->breaker;
            c->max_requests = lim->max_requests_per_connection;
        }
    }
    c->n_requests++;
    c->ex = ex;
    c->req_sent = c->head_done = c->resp_done = c->paused = c->got_bytes = false;
    c->len = 0;
    ex->ops[RETE_UPSTREAM] = &h1c_ops;
    ex->side[RETE_UPSTREAM] = c;
    ex->attached[RETE_UPSTREAM] = true;
    if (c->connected) {
        h1c_write_head(c);
        if (c->ex)
            h1c_send_body(c);
    }
}

void rete_h1_upstream_start(rete_exchange *ex, const char *ip, uint16_t port,
                            uint32_t connect_timeout_ms)
{
    const rete_upstream_target t = {.ip = ip, .port = port, .connect_timeout_ms = connect_timeout_ms};
    h1c_start(ex, &t);
}

static void upstream_start(rete_exchange *ex, const rete_upstream_target *t)
{
    h1c_start(ex, t);
}

static void release_idle(rete_worker *w)
{
    for (rete_pool_entry *p = w->pools; p; p = p->next)
        for (h1c *c = p->idle, *next; c; c = next) {
            next = c->next_idle;
            if (c->breaker && rete_breaker_load(&c->breaker->pending))
                h1c_close(c);
        }
}

const rete_codec rete_codec_h1_client = {
    .name = "http/1.1 client",
    .upstream_start = upstream_start,
    .release_idle = release_idle,
};
