/* HTTP/1.1 downstream codec: requests from the local app (outbound), from
 * outside the mesh (inbound, permissive) and upgrades turned into tunnels.
 *
 * One request at a time per connection: pipelined bytes that arrive while a
 * response is pending are kept (bounded by the head limit) and parsed when
 * the response is done. The head buffer exists only while a head is
 * incomplete or pipelined bytes wait, so an idle keep-alive connection
 * holds no buffer.
 *
 * Slow clients are bounded by deadlines on the connection's one timer
 * (h1s_arm): the whole request head within limits.requestHeaderTimeout
 * (from the accept for the first request, from its first byte after that:
 * nginx's client_header_timeout, Envoy's request_headers_timeout), no
 * request body byte for limits.requestBodyTimeout while we are reading
 * (nginx's client_body_timeout), no write progress for
 * limits.responseWriteTimeout while bytes wait for the client (nginx's
 * send_timeout), and limits.idleTimeout between requests. The first two
 * answer 408. Reads only move timestamps; the timer is re-armed when a
 * deadline comes earlier than the armed one, and a timer that fires early
 * re-arms for the deadline it finds. */
#include "h1_server.h"
#include "alloc.h"
#include "conn.h"
#include "exchange.h"
#include "h1_out.h"
#include "http_status.h"
#include "h1_parse.h"
#include "log.h"
#include "vec.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum h1s_state {
    H1S_HEAD,      /* waiting for (the rest of) a request head */
    H1S_BODY,      /* reading the request body */
    H1S_WAIT,      /* request read, response in progress */
    H1S_UPGRADE,   /* upgrade request sent: the client's further bytes are
                    * held until the app answers 101 (a declined upgrade
                    * must not turn the connection into an unparsed tunnel) */
    H1S_TUNNEL,    /* upgrade/CONNECT: raw bytes both ways */
    H1S_CLOSING,
} h1s_state;

typedef struct rete_h1_server {
    rete_conn *conn;
    rete_exchange *ex;
    h1s_state state;
    char *buf;              /* partial head or pipelined bytes */
    size_t len;
    size_t cap;
    rete_h1_body body;
    uint64_t body_left;
    rete_h1_chunked chunked;
    bool keep_alive;
    bool req_done;          /* request body fully read */
    bool resp_chunked;      /* response framed with chunked encoding */
    bool resp_close;        /* response delimited by close (HTTP/1.0 peer) */
    bool head_method;
    bool resp_started;
    bool paused_body;       /* reading stopped: the request pipe is full */
    bool paused_pipeline;   /* reading stopped: a pipelined request waits */
    bool tunnel_established;
    bool client_connect;    /* the client sent CONNECT (the dispatcher may
                             * turn an upgrade into one for the mesh hop) */
    bool peer_eof;
    bool upgrade_declined;  /* the app answered the upgrade with no 101 */
    uint8_t probe_len;      /* bytes of the upgrade's answer seen so far */
    char probe[12];         /* "HTTP/1.1 101" */
    /* The response head, kept in the exchange's arena until the end of the
     * loop's I/O round (the worker's check phase), so that a body arriving
     * in the same round (HEADERS and DATA in one TLS read) leaves with it
     * in one write. */
    const char *head;
    size_t head_len;
    bool dirty;             /* on the worker's h1_dirty list */
    struct rete_h1_server *next_dirty;
    /* deadlines (loop ms; see the top of the file) */
    uint64_t head_start;    /* H1S_HEAD: when this head's time began, 0 = idle between requests */
    uint64_t idle_since;    /* H1S_HEAD with head_start 0 */
    uint64_t body_last;     /* H1S_BODY: last body byte (or the resume after a pause) */
    uint64_t armed_at;      /* when the armed timer fires, 0 = not armed */
} h1s;

static const rete_side_ops h1s_ops;
static void h1s_process(h1s *s, const char *data, size_t len);
static void h1s_arm(h1s *s);

static bool tunneling(const h1s *s)
{
    return s->state == H1S_TUNNEL || s->state == H1S_UPGRADE;
}

static rete_h1_limits limits_of(const rete_conn *c)
{
    const rete_limits *l = &c->gen->cfg->proxy.limits;
    rete_h1_limits lim = {l->max_request_line, l->max_header_bytes,
                          l->max_headers < 128 ? l->max_headers : 128};
    return lim;
}

static void h1s_close(h1s *s)
{
    if (s->state == H1S_CLOSING)
        return;
    s->state = H1S_CLOSING;
    s->head = NULL; /* it lived in the exchange's arena */
    s->head_len = 0;
    if (s->ex) {
        rete_exchange *ex = s->ex;
        s->ex = NULL;
        rete_ex_fail(ex, RETE_DOWNSTREAM, RETE_EXE_DOWNSTREAM_RESET, "client closed");
    }
    rete_io_close(&s->conn->io);
}

/* Write bufs (at most 4) behind the response head if it is still kept. */
static rete_rc h1s_send(h1s *s, const uv_buf_t *bufs, unsigned n)
{
    uv_buf_t all[5];
    unsigned k = 0;
    if (s->head_len) {
        all[k++] = uv_buf_init((char *)s->head, (unsigned)s->head_len);
        s->head = NULL;
        s->head_len = 0;
    }
    for (unsigned i = 0; i < n && k < 5; i++)
        all[k++] = bufs[i];
    rete_rc rc = rete_io_write(&s->conn->io, all, k);
    if (rc == RETE_OK && s->conn->io.queued)
        h1s_arm(s); /* the client may stop reading: limits.responseWriteTimeout */
    return rc;
}

static void h1s_write(h1s *s, const char *p, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    if (h1s_send(s, &b, 1) < 0)
        h1s_close(s);
}

/* Send the kept response head on its own (no body byte is ready). */
static void h1s_flush_head(h1s *s)
{
    if (s->head_len && s->state != H1S_CLOSING)
        h1s_write(s, NULL, 0);
}

static void h1s_undirty(h1s *s)
{
    if (!s->dirty)
        return;
    for (h1s **pp = &s->conn->worker->h1_dirty; *pp; pp = &(*pp)->next_dirty)
        if (*pp == s) {
            *pp = s->next_dirty;
            break;
        }
    s->dirty = false;
}

void rete_h1_flush_all(rete_worker *w)
{
    while (w->h1_dirty) {
        h1s *s = w->h1_dirty;
        w->h1_dirty = s->next_dirty;
        s->dirty = false;
        h1s_flush_head(s);
    }
}

static void h1s_release(void *arg);

/* A response we make ourselves before any exchange exists (parse errors). */
static void h1s_error_and_close(h1s *s, int status, const char *reason)
{
    char out[512];
    int n = snprintf(out, sizeof(out),
                     "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %zu\r\n"
                     "connection: close\r\n\r\n%s\n",
                     status, rete_http_reason(status), strlen(reason) + 1, reason);
    h1s_write(s, out, (size_t)n);
    s->state = H1S_CLOSING;
    /* Half-close and drain until the peer closes (or a short linger ends):
     * closing with unread input would turn the answer into a reset. Our
     * callers still look at s: it is freed when the linger ends. */
    rete_conn_linger(s->conn, h1s_release, s);
}

/* Keep bytes for later (partial head, pipelined request). */
static bool h1s_stash(h1s *s, const char *data, size_t len, size_t bound)
{
    if (s->len + len > bound)
        return false;
    RETE_GROW(s->buf, s->cap, s->len + len, 1024);
    memmove(s->buf + s->len, data, len);
    s->len += len;
    return true;
}

static void h1s_drop_buf(h1s *s)
{
    rete_free(&s->buf);
    s->len = s->cap = 0;
}

static void random_request_id(rete_worker *w, char out[37])
{
    uint64_t a = rete_worker_rand(w), b = rete_worker_rand(w);
    a = (a & 0xffffffffffff0fffULL) | 0x4000ULL;             /* version 4 */
    b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL; /* variant */
    snprintf(out, 37, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(a >> 32),
             (unsigned)((a >> 16) & 0xffff), (unsigned)(a & 0xffff), (unsigned)(b >> 48),
             (unsigned long long)(b & 0xffffffffffffULL));
}

static void h1s_start_exchange(h1s *s, const rete_h1_message *m)
{
    rete_conn *c = s->conn;
    s->head_start = 0; /* the head is complete: its deadline is met */
    s->body_last = uv_now(&c->worker->loop);
    rete_exchange *ex = rete_conn_new_exchange(c, &h1s_ops, s);
    s->ex = ex;
    ex->req.method = rete_ex_dup(ex, m->method);
    ex->req.scheme = RETE_VIEW_LIT("http");
    rete_view scheme, authority, path;
    if (rete_view_eq(m->method, RETE_VIEW_LIT("CONNECT"))) {
        ex->req.authority = rete_ex_dup(ex, m->target);
        ex->req.path = RETE_VIEW_NULL;
        ex->tunnel = true;
    } else if (m->target.len && m->target.p[0] != '/' && m->target.p[0] != '*' &&
               rete_h1_split_target(m->target, &scheme, &authority, &path) == RETE_OK) {
        ex->req.scheme = rete_ex_dup(ex, scheme);
        ex->req.authority = rete_ex_dup(ex, authority);
        if (path.len == 0) {
            ex->req.path = rete_ex_dup(ex, RETE_VIEW_LIT("/"));
        } else if (path.p[0] == '?') { /* "/?q": the path is empty, prepend the slash */
            char *p = rete_arena_alloc(ex->arena, path.len + 2);
            p[0] = '/';
            memcpy(p + 1, path.p, path.len);
            ex->req.path = rete_view_make(p, path.len + 1);
        } else {
            ex->req.path = rete_ex_dup(ex, path);
        }
    } else {
        ex->req.authority = rete_ex_dup(ex, m->host);
        ex->req.path = rete_ex_dup(ex, m->target);
    }
    (void)rete_ex_normalize_path(ex); /* now: an upgrade re-serialises it below */
    bool has_request_id = false;
    for (size_t i = 0; i < m->n_headers; i++) {
        rete_view name = m->headers[i].name;
        if (rete_h1_is_hop_by_hop(m, name) || rete_view_ieq(name, RETE_VIEW_LIT("host")) ||
            rete_view_ieq(name, RETE_VIEW_LIT("expect")) ||
            rete_view_ieq(name, RETE_VIEW_LIT("content-length")) || rete_is_internal_header(name))
            continue;
        if (rete_view_ieq(name, RETE_VIEW_LIT("x-request-id")))
            has_request_id = true;
        rete_msg_add(ex, &ex->req, name, m->headers[i].value);
    }
    if (m->flags & RETE_H1_F_HAS_TRAILER_TE)
        rete_msg_add(ex, &ex->req, RETE_VIEW_LIT("te"), RETE_VIEW_LIT("trailers"));
    if (!has_request_id && !ex->inbound && !ex->admin) {
        char id[37];
        random_request_id(c->worker, id);
        rete_msg_add(ex, &ex->req, RETE_VIEW_LIT("x-request-id"), rete_view_cstr(id));
    }
    ex->req.content_length = m->body == RETE_H1_BODY_LENGTH ? (int64_t)m->content_length : -1;
    if (m->body == RETE_H1_BODY_NONE)
        ex->req.content_length = 0;
    s->head_method = rete_view_eq(m->method, RETE_VIEW_LIT("HEAD"));
    s->keep_alive = (m->flags & RETE_H1_F_KEEP_ALIVE) != 0;
    s->resp_close = m->minor_version == 0;
    s->resp_started = false;
    s->tunnel_established = false;
    s->client_connect = rete_view_eq(m->method, RETE_VIEW_LIT("CONNECT"));

    if (m->flags & RETE_H1_F_UPGRADE) {
        /* HTTP/1.1 upgrade (WebSocket, h2c is refused by the parser's
         * caller below): re-serialise the request as the tunnel's first
         * bytes, with its Connection/Upgrade fields, and pipe raw bytes
         * from then on. */
        ex->tunnel = true;
        rete_outbuf b;
        rete_outbuf_init(&b);
        rete_outbuf_view(&b, m->method);
        rete_outbuf_put(&b, " ", 1);
        rete_outbuf_view(&b, ex->req.path);
        rete_outbuf_puts(&b, " HTTP/1.1\r\nhost: ");
        rete_outbuf_view(&b, ex->req.authority);
        rete_outbuf_puts(&b, "\r\nconnection: upgrade\r\nupgrade: ");
        rete_outbuf_view(&b, m->upgrade);
        rete_outbuf_puts(&b, "\r\n");
        rete_h1_put_fields(&b, &ex->req);
        rete_outbuf_puts(&b, "\r\n");
        rete_ex_push(ex, RETE_DOWNSTREAM, b.p, b.len);
        rete_outbuf_free(&b);
        s->state = H1S_UPGRADE;
        s->probe_len = 0;
        s->keep_alive = false;
        rete_ex_request_ready(ex);
        return;
    }
    if (ex->tunnel) {
        s->state = H1S_TUNNEL;
        s->keep_alive = false;
        rete_ex_request_ready(ex);
        return;
    }
    s->body = m->body;
    s->body_left = m->content_length;
    s->req_done = m->body == RETE_H1_BODY_NONE || (m->body == RETE_H1_BODY_LENGTH && m->content_length == 0);
    if (m->body == RETE_H1_BODY_CHUNKED)
        rete_h1_chunked_init(&s->chunked);
    s->state = s->req_done ? H1S_WAIT : H1S_BODY;
    if (s->req_done)
        ex->req_body.end = true;
    rete_ex_request_ready(ex);
    if (s->ex == ex && (m->flags & RETE_H1_F_EXPECT_CONTINUE) && !ex->head_sent && !s->req_done) {
        /* We read the body ourselves, so the client may send it now (RFC 9110 §10.1.1). */
        h1s_write(s, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
}

/* Feed request body bytes; returns bytes used. */
static size_t h1s_body(h1s *s, const char *data, size_t len)
{
    rete_exchange *ex = s->ex;
    size_t used = 0;
    if (s->body == RETE_H1_BODY_LENGTH) {
        size_t n = len < s->body_left ? len : (size_t)s->body_left;
        s->body_left -= n;
        used = n;
        if (ex) {
            if (rete_ex_push(ex, RETE_DOWNSTREAM, data, n))
                s->paused_body = true;
        }
        if (s->body_left == 0) {
            s->req_done = true;
            if (ex)
                rete_ex_end(ex, RETE_DOWNSTREAM);
        }
        return used;
    }
    while (used < len && !s->req_done) {
        size_t consumed = 0, dlen = 0;
        const char *d = NULL;
        int rc = rete_h1_chunked_decode(&s->chunked, data + used, len - used, &consumed, &d, &dlen);
        used += consumed;
        if (rc < 0) {
            rete_stat(s->conn->worker, s->conn->worker->ms.parse_errors, 1);
            rete_h1_chunked_free(&s->chunked);
            if (ex) {
                s->ex = NULL;
                rete_ex_fail(ex, RETE_DOWNSTREAM, RETE_EXE_BAD_REQUEST, "bad chunked body");
            }
            if (!s->resp_started)
                h1s_error_and_close(s, 400, "malformed chunked body");
            else
                h1s_close(s);
            return len;
        }
        if (dlen && ex && rete_ex_push(ex, RETE_DOWNSTREAM, d, dlen))
            s->paused_body = true;
        if (rc == 1) {
            s->req_done = true;
            if (ex) {
                rete_h1_header tr[32];
                size_t n = rete_h1_chunked_trailers(&s->chunked, tr, 32);
                for (size_t i = 0; i < n; i++)
                    if (!rete_is_internal_header(tr[i].name))
                        rete_msg_add(ex, &ex->req_body.trailers, tr[i].name, tr[i].value);
                rete_ex_end(ex, RETE_DOWNSTREAM);
            }
            rete_h1_chunked_free(&s->chunked);
        }
        if (consumed == 0 && dlen == 0)
            break;
    }
    return used;
}

static void h1s_process(h1s *s, const char *data, size_t len)
{
    rete_conn *c = s->conn;
    while (len > 0 && s->state != H1S_CLOSING) {
        switch (s->state) {
        case H1S_HEAD: {
            if (!s->head_start)
                s->head_start = uv_now(&c->worker->loop); /* a new head's first byte */
            rete_h1_limits lim = limits_of(c);
            const char *p = data;
            size_t n = len;
            bool stashed = false;
            if (s->len) {
                if (!h1s_stash(s, data, len, lim.max_head + 4)) {
                    rete_stat(c->worker, c->worker->ms.parse_errors, 1);
                    h1s_error_and_close(s, 431, "request head too large");
                    return;
                }
                p = s->buf;
                n = s->len;
                stashed = true;
            }
            rete_h1_message m = {0};
            m.headers = c->worker->h1_fields; /* scratch: the exchange copies what it keeps */
            rete_h1_error err = {0};
            int r = rete_h1_parse_request(p, n, &lim, &m, &err);
            if (r == RETE_EAGAIN) {
                if (!stashed && !h1s_stash(s, data, len, lim.max_head + 4)) {
                    h1s_error_and_close(s, 431, "request head too large");
                    return;
                }
                return;
            }
            if (r < 0) {
                rete_stat(c->worker, c->worker->ms.parse_errors, 1);
                rete_debug("h1: refused request from %s: %d %s", c->peer_addr, err.status,
                           err.reason);
                h1s_error_and_close(s, err.status ? err.status : 400,
                                    err.reason ? err.reason : "bad request");
                return;
            }
            if (m.flags & RETE_H1_F_UPGRADE &&
                rete_view_ieq(m.upgrade, RETE_VIEW_LIT("h2c"))) {
                /* h2c upgrade is not forwarded: HTTP/2 clients use prior knowledge. */
                m.flags &= ~(unsigned)RETE_H1_F_UPGRADE;
            }
            /* The head's views point into p: start the exchange (which copies
             * what it keeps) before moving any bytes. */
            h1s_start_exchange(s, &m);
            size_t rest = n - (size_t)r;
            if (stashed) {
                /* Keep the remainder at the front of the buffer. */
                memmove(s->buf, s->buf + r, rest);
                s->len = rest;
                if (rest == 0) {
                    h1s_drop_buf(s);
                    return;
                }
                /* Process remaining stashed bytes from a private copy. */
                char *copy = rete_malloc(rest);
                memcpy(copy, s->buf, rest);
                h1s_drop_buf(s);
                h1s_process(s, copy, rest);
                free(copy);
                return;
            }
            data += r;
            len -= (size_t)r;
            break;
        }
        case H1S_BODY: {
            s->body_last = uv_now(&c->worker->loop);
            size_t used = h1s_body(s, data, len);
            data += used;
            len -= used;
            if (s->state == H1S_CLOSING)
                return;
            if (s->req_done)
                s->state = H1S_WAIT;
            if (s->paused_body)
                rete_io_read_stop(&c->io);
            break;
        }
        case H1S_WAIT:
            /* Pipelined: keep it for after the response; stop reading. */
            if (!h1s_stash(s, data, len, limits_of(c).max_head + 4)) {
                h1s_close(s);
                return;
            }
            s->paused_pipeline = true;
            rete_io_read_stop(&c->io);
            return;
        case H1S_UPGRADE:
            /* Held, not forwarded, until the app accepts the upgrade. */
            rete_io_read_stop(&c->io);
            if (!h1s_stash(s, data, len, limits_of(c).max_head + 4))
                h1s_close(s);
            return;
        case H1S_TUNNEL:
            if (s->upgrade_declined)
                return; /* read only to see the client close */
            if (s->ex && rete_ex_push(s->ex, RETE_DOWNSTREAM, data, len)) {
                s->paused_body = true;
                rete_io_read_stop(&c->io);
            }
            return;
        case H1S_CLOSING:
        default:
            return;
        }
    }
}

/* ---- io callbacks ---- */

/* ---- deadlines ---- */

typedef struct h1s_due {
    uint64_t at;            /* loop ms; UINT64_MAX: nothing is due */
    rete_timeout_kind kind;
} h1s_due;

/* The earliest deadline of the connection's present state. */
static h1s_due h1s_next_due(const h1s *s)
{
    const rete_limits *l = &s->conn->gen->cfg->proxy.limits;
    h1s_due d = {UINT64_MAX, RETE_TIMEOUT_IDLE};
    switch (s->state) {
    case H1S_HEAD:
        if (s->head_start)
            d = (h1s_due){s->head_start + l->request_header_timeout_ms, RETE_TIMEOUT_REQUEST_HEADER};
        else if (l->idle_timeout_ms)
            d = (h1s_due){s->idle_since + l->idle_timeout_ms, RETE_TIMEOUT_IDLE};
        break;
    case H1S_BODY:
        /* Only while we wait for the client: a pause is ours (the upstream
         * has not taken the bytes yet), not the client's. */
        if (!s->paused_body && !s->req_done)
            d = (h1s_due){s->body_last + l->request_body_timeout_ms, RETE_TIMEOUT_REQUEST_BODY};
        break;
    case H1S_WAIT:   /* the upstream's time: route timeouts bound it */
    case H1S_TUNNEL: /* the app's protocol: its silence is its own business */
    case H1S_CLOSING:
    default:
        break;
    }
    const rete_io *io = &s->conn->io;
    if (io->queued) {
        uint64_t w = io->write_progress + l->response_write_timeout_ms;
        if (w < d.at)
            d = (h1s_due){w, RETE_TIMEOUT_RESPONSE_WRITE};
    }
    return d;
}

static void h1s_deadline(rete_conn *c)
{
    h1s *s = c->codec;
    s->armed_at = 0;
    if (s->state == H1S_CLOSING)
        return;
    h1s_due d = h1s_next_due(s);
    if (d.at > uv_now(&c->worker->loop)) {
        h1s_arm(s); /* fired for a deadline that has moved on */
        return;
    }
    rete_conn_count_timeout(c, d.kind);
    switch (d.kind) {
    case RETE_TIMEOUT_REQUEST_HEADER:
        rete_debug("h1: request head from %s not complete in time: 408", c->peer_addr);
        if (s->len == 0)
            h1s_close(s); /* not one byte: nothing to answer */
        else
            h1s_error_and_close(s, 408, "request header timeout");
        return;
    case RETE_TIMEOUT_REQUEST_BODY: {
        rete_debug("h1: request body from %s stalled: 408", c->peer_addr);
        rete_exchange *ex = s->ex;
        if (!ex || s->resp_started) {
            h1s_close(s); /* a response is under way: only a close can say it */
            return;
        }
        /* Let the upstream go (it closes its connection, the service's
         * budget is returned), then answer the client ourselves. */
        s->ex = NULL;
        rete_ex_fail(ex, RETE_DOWNSTREAM, RETE_EXE_DOWNSTREAM_TIMEOUT, "request body timeout");
        h1s_error_and_close(s, 408, "request body timeout");
        return;
    }
    case RETE_TIMEOUT_RESPONSE_WRITE:
        rete_debug("h1: %s took no response byte in time: closed", c->peer_addr);
        h1s_close(s);
        return;
    case RETE_TIMEOUT_IDLE:
    case RETE_TIMEOUT_STREAM_IDLE:
    case RETE_TIMEOUT_DETECT:
    case RETE_TIMEOUT_N:
    default:
        h1s_close(s);
        return;
    }
}

/* Make sure the timer fires no later than the earliest deadline. Cheap
 * when nothing came earlier (every read calls it). */
static void h1s_arm(h1s *s)
{
    if (s->state == H1S_CLOSING || s->conn->io.closing)
        return;
    h1s_due d = h1s_next_due(s);
    if (d.at == UINT64_MAX || (s->armed_at && s->armed_at <= d.at))
        return; /* an armed timer that finds nothing due simply stops */
    uint64_t now = uv_now(&s->conn->worker->loop);
    s->armed_at = d.at > now ? d.at : now;
    rete_conn_timer_start(s->conn, s->armed_at - now, h1s_deadline);
}

static void h1s_on_data(rete_io *io, const char *data, size_t len)
{
    h1s *s = io->owner;
    rete_stat(s->conn->worker, s->conn->worker->ms.http_in, len);
    h1s_process(s, data, len);
    h1s_arm(s);
}

static void h1s_on_eof(rete_io *io)
{
    h1s *s = io->owner;
    s->peer_eof = true;
    if (s->state == H1S_CLOSING) {
        rete_io_close(io);
        return;
    }
    if (s->state == H1S_UPGRADE && s->ex) {
        if (!s->len)
            rete_ex_end(s->ex, RETE_DOWNSTREAM);
        return; /* held bytes first, once the upgrade is decided */
    }
    if (s->state == H1S_TUNNEL && s->ex) {
        rete_exchange *ex = s->ex;
        rete_ex_end(ex, RETE_DOWNSTREAM);
        if (s->ex == ex && ex->resp_body.end && !ex->resp_body.head) {
            /* The far side had finished first (h1s_write_body half-closed
             * ours): both directions are done, and nothing else would
             * close the connection (it leaked one socket per tunnel). */
            s->ex = NULL;
            rete_ex_detach(ex, RETE_DOWNSTREAM);
            s->state = H1S_CLOSING;
            rete_io_close(io);
        }
        return;
    }
    if (s->state == H1S_WAIT && s->ex)
        return; /* half-closed client: answer, then close */
    h1s_close(s);
}

static void h1s_on_error(rete_io *io, const char *why)
{
    (void)why;
    h1s_close(io->owner);
}

static void h1s_on_ready(rete_io *io, int status, const char *why)
{
    (void)status;
    (void)why;
    (void)io;
}

static void h1s_write_body(h1s *s);

static void h1s_on_drain(rete_io *io)
{
    h1s *s = io->owner;
    if (s->ex && s->ex->head_sent)
        h1s_write_body(s);
}

/* Everything the codec holds for a connection (on its close, or when a
 * linger it handed the connection to ends). */
static void h1s_release(void *arg)
{
    h1s *s = arg;
    if (s->ex) {
        rete_exchange *ex = s->ex;
        s->ex = NULL;
        rete_ex_fail(ex, RETE_DOWNSTREAM, RETE_EXE_DOWNSTREAM_RESET, "client closed");
    }
    rete_h1_chunked_free(&s->chunked);
    h1s_undirty(s);
    free(s->buf);
    free(s);
}

static void h1s_on_close(rete_io *io)
{
    h1s *s = io->owner;
    rete_conn *c = s->conn;
    h1s_release(s);
    rete_conn_closed(c);
}

/* one io callback table per owner of a connection (io.h): the same shape by design. */
static const rete_io_cbs h1s_io_cbs = {
    .on_data = h1s_on_data,
    .on_eof = h1s_on_eof,
    .on_error = h1s_on_error,
    .on_ready = h1s_on_ready,
    .on_drain = h1s_on_drain,
    .on_close = h1s_on_close,
};

/* ---- exchange side ops ---- */

static void h1s_response_done(h1s *s)
{
    rete_exchange *ex = s->ex;
    s->ex = NULL;
    rete_ex_detach(ex, RETE_DOWNSTREAM);
    if (!s->keep_alive || !s->req_done || s->resp_close || s->peer_eof) {
        s->state = H1S_CLOSING;
        rete_io_shutdown(&s->conn->io);
        rete_io_close(&s->conn->io);
        return;
    }
    s->state = H1S_HEAD;
    s->paused_body = false;
    s->head_start = 0;
    s->idle_since = uv_now(&s->conn->worker->loop);
    if (s->paused_pipeline || s->len) {
        s->paused_pipeline = false;
        char *pending = s->buf;
        size_t n = s->len;
        s->buf = NULL;
        s->len = s->cap = 0;
        if (n)
            h1s_process(s, pending, n);
        free(pending);
    }
    if (s->state != H1S_CLOSING && !s->paused_pipeline && !s->paused_body)
        rete_io_read_start(&s->conn->io);
    h1s_arm(s);
}

/* The app's answer to an upgrade decides what the held client bytes become:
 * after a 101 the tunnel's (raw from then on), otherwise nothing: the
 * answer still reaches the client, the app sees the end of its input and
 * closes, and nothing the client sends later passes unparsed. */
static void h1s_upgrade_decided(h1s *s, bool accepted)
{
    rete_exchange *ex = s->ex;
    rete_conn *c = s->conn;
    s->state = H1S_TUNNEL;
    if (!accepted) {
        s->upgrade_declined = true;
        rete_debug("h1: upgrade declined by the app for %s: the connection ends with the answer",
                   c->peer_addr);
        h1s_drop_buf(s);
        rete_ex_end(ex, RETE_DOWNSTREAM);
        if (!s->peer_eof)
            rete_io_read_start(&c->io);
        return;
    }
    if (s->len) {
        char *held = s->buf;
        size_t n = s->len;
        s->buf = NULL;
        s->len = s->cap = 0;
        if (rete_ex_push(ex, RETE_DOWNSTREAM, held, n))
            s->paused_body = true;
        free(held);
    }
    if (s->peer_eof)
        rete_ex_end(ex, RETE_DOWNSTREAM);
    else if (!s->paused_body)
        rete_io_read_start(&c->io);
}

/* Watch the first bytes of the app's answer to an upgrade (its status line)
 * and decide once they are there or the answer ended. */
static void h1s_upgrade_probe(h1s *s, const char *d, size_t n, bool end)
{
    size_t want = sizeof(s->probe) - s->probe_len;
    size_t take = n < want ? n : want;
    memcpy(s->probe + s->probe_len, d, take);
    s->probe_len = (uint8_t)(s->probe_len + take);
    if (s->probe_len < sizeof(s->probe) && !end)
        return;
    bool accepted = s->probe_len == sizeof(s->probe) && memcmp(s->probe, "HTTP/1.", 7) == 0 &&
                    memcmp(s->probe + 8, " 101", 4) == 0;
    h1s_upgrade_decided(s, accepted);
}

static void h1s_write_body(h1s *s)
{
    rete_exchange *ex = s->ex;
    rete_io *io = &s->conn->io;
    while (ex && io->queued < 256 * 1024) {
        const char *d;
        size_t n = rete_ex_peek(ex, RETE_DOWNSTREAM, &d);
        if (n == 0)
            break;
        if (s->state == H1S_UPGRADE && s->tunnel_established)
            h1s_upgrade_probe(s, d, n, false);
        if (s->head_method) {
            rete_ex_consume(ex, RETE_DOWNSTREAM, n);
            continue;
        }
        if (s->resp_chunked && !tunneling(s)) {
            rete_outbuf b;
            rete_outbuf_init(&b);
            rete_h1_put_chunk_size(&b, n);
            uv_buf_t bufs[3] = {uv_buf_init(b.p, (unsigned)b.len), uv_buf_init((char *)d, (unsigned)n),
                                uv_buf_init("\r\n", 2)};
            rete_rc rc = h1s_send(s, bufs, 3);
            rete_outbuf_free(&b);
            if (rc < 0) {
                h1s_close(s);
                return;
            }
        } else {
            h1s_write(s, d, n);
        }
        rete_stat(s->conn->worker, s->conn->worker->ms.http_out, n);
        if (s->state == H1S_CLOSING)
            return;
        rete_ex_consume(ex, RETE_DOWNSTREAM, n);
        ex = s->ex;
    }
    if (!ex || ex->resp_body.head || !ex->resp_body.end)
        return; /* a kept head waits for more body, or for the check phase */
    if (s->state == H1S_UPGRADE)
        h1s_upgrade_decided(s, false); /* the app closed without a word */
    if (s->state == H1S_TUNNEL) {
        /* The far side finished: half-close ours, end when both are done. */
        rete_io_shutdown(io);
        if (ex->req_body.end) {
            s->ex = NULL;
            rete_ex_detach(ex, RETE_DOWNSTREAM);
            s->state = H1S_CLOSING;
            rete_io_close(io);
        }
        return;
    }
    if (s->resp_chunked && !s->head_method) {
        rete_outbuf b;
        rete_outbuf_init(&b);
        rete_outbuf_puts(&b, "0\r\n");
        rete_h1_put_fields(&b, &ex->resp_body.trailers);
        rete_outbuf_puts(&b, "\r\n");
        h1s_write(s, b.p, b.len);
        rete_outbuf_free(&b);
        if (s->state == H1S_CLOSING)
            return;
    }
    h1s_flush_head(s);
    if (s->state == H1S_CLOSING)
        return;
    h1s_response_done(s);
}

static void h1s_on_head(rete_exchange *ex)
{
    h1s *s = ex->side[RETE_DOWNSTREAM];
    if (tunneling(s)) {
        if (ex->resp.status / 100 != 2) {
            char line[128];
            int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                             ex->resp.status, rete_http_reason(ex->resp.status));
            h1s_write(s, line, (size_t)n);
            s->ex = NULL;
            rete_ex_detach(ex, RETE_DOWNSTREAM);
            s->state = H1S_CLOSING;
            rete_io_shutdown(&s->conn->io);
            rete_io_close(&s->conn->io);
            return;
        }
        s->tunnel_established = true;
        if (s->client_connect)
            h1s_write(s, "HTTP/1.1 200 Connection Established\r\n\r\n", 39);
        return;
    }
    s->resp_started = true;
    int status = ex->resp.status;
    bool no_body = s->head_method || status == 204 || status == 304 || status / 100 == 1;
    rete_outbuf b;
    rete_outbuf_init(&b);
    char line[64];
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status, rete_http_reason(status));
    rete_outbuf_put(&b, line, (size_t)n);
    rete_h1_put_fields(&b, &ex->resp);
    s->resp_chunked = false;
    if (ex->resp.content_length >= 0 && rete_msg_get(&ex->resp, RETE_VIEW_LIT("content-length")).p == NULL) {
        n = snprintf(line, sizeof(line), "content-length: %lld\r\n", (long long)ex->resp.content_length);
        rete_outbuf_put(&b, line, (size_t)n);
    } else if (ex->resp.content_length < 0 && !no_body) {
        if (!s->resp_close) {
            rete_outbuf_puts(&b, "transfer-encoding: chunked\r\n");
            s->resp_chunked = true;
        } else {
            s->keep_alive = false;
        }
    }
    if (!s->keep_alive || !s->req_done)
        rete_outbuf_puts(&b, "connection: close\r\n");
    if (!s->req_done)
        s->keep_alive = false; /* answered before the body was read: close after */
    rete_outbuf_puts(&b, "\r\n");
    rete_stat(s->conn->worker, s->conn->worker->ms.http_out, b.len);
    /* Kept until the body (or the end of this I/O round): one write for both. */
    char *head = rete_arena_alloc(ex->arena, b.len);
    memcpy(head, b.p, b.len);
    s->head = head;
    s->head_len = b.len;
    if (!s->dirty) {
        s->dirty = true;
        s->next_dirty = s->conn->worker->h1_dirty;
        s->conn->worker->h1_dirty = s;
    }
    rete_outbuf_free(&b);
    if (no_body)
        s->head_method = true; /* drop any body bytes the upstream still sends */
}

static void h1s_on_interim(rete_exchange *ex)
{
    h1s *s = ex->side[RETE_DOWNSTREAM];
    if (ex->resp.status == 100)
        return; /* we sent our own 100 Continue already */
    rete_outbuf b;
    rete_outbuf_init(&b);
    char line[64];
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", ex->resp.status,
                     rete_http_reason(ex->resp.status));
    rete_outbuf_put(&b, line, (size_t)n);
    rete_h1_put_fields(&b, &ex->resp);
    rete_outbuf_puts(&b, "\r\n");
    h1s_write(s, b.p, b.len);
    rete_outbuf_free(&b);
}

static void h1s_on_data_ready(rete_exchange *ex)
{
    h1s *s = ex->side[RETE_DOWNSTREAM];
    if (tunneling(s) && !s->tunnel_established && !ex->head_sent)
        return;
    h1s_write_body(s);
}

static void h1s_on_drained(rete_exchange *ex, size_t consumed)
{
    (void)consumed;
    h1s *s = ex->side[RETE_DOWNSTREAM];
    if (s->paused_body && !ex->req_body.paused && s->state != H1S_UPGRADE) {
        s->paused_body = false;
        s->body_last = uv_now(&s->conn->worker->loop); /* the client's time starts again */
        rete_io_read_start(&s->conn->io);
        h1s_arm(s);
    }
}

static void h1s_on_abort(rete_exchange *ex)
{
    h1s *s = ex->side[RETE_DOWNSTREAM];
    /* A kept head lives in the exchange's arena: send it before letting go,
     * as it would have been without the keeping (the close that follows
     * tells the client the body is cut short). */
    h1s_flush_head(s);
    s->ex = NULL;
    rete_ex_detach(ex, RETE_DOWNSTREAM);
    if (tunneling(s) && !s->tunnel_established) {
        const char *msg = "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        h1s_write(s, msg, strlen(msg));
    }
    s->state = H1S_CLOSING;
    rete_io_close(&s->conn->io);
}

/* one side table per codec side (exchange.h): the same shape by design. */
static const rete_side_ops h1s_ops = {
    .name = "h1-server",
    .on_head = h1s_on_head,
    .on_data = h1s_on_data_ready,
    .on_drained = h1s_on_drained,
    .on_abort = h1s_on_abort,
    .on_interim = h1s_on_interim,
};

void rete_h1_server_start(rete_conn *c, const char *data, size_t len)
{
    h1s *s = rete_calloc(1, sizeof(*s));
    s->conn = c;
    s->state = H1S_HEAD;
    c->io.cbs = &h1s_io_cbs;
    c->io.owner = s;
    c->codec = s;
    /* The first head's time began at the accept: detection (and a TLS
     * handshake) count against it, so no phase can be stretched. */
    s->head_start = c->accepted_ms;
    rete_io_read_start(&c->io);
    if (len)
        h1s_process(s, data, len);
    h1s_arm(s);
}

const rete_codec rete_codec_h1_server = {
    .name = "http/1.1 server",
    .server_start = rete_h1_server_start,
    .flush_all = rete_h1_flush_all,
};
