/* HTTP/2 codec on nghttp2, both roles:
 *  - server: HTTP/2 from the local app (prior knowledge or TLS+ALPN) and
 *    from peer proxies on the mesh listener;
 *  - client: the pooled mesh connection to a peer proxy (TLS, ALPN h2) and
 *    h2c to a local app whose port is declared HTTP2/GRPC.
 * Each stream is one exchange. Flow control is manual
 * (NO_AUTO_WINDOW_UPDATE): a stream's window opens only as the other side
 * of the exchange consumes what we received, so a slow reader never makes us
 * buffer more than one window per stream.
 *
 * Slow or stalled clients (server role) are bounded per stream by a sweep on
 * the connection's one timer (h2_sweep), which runs while the connection has
 * streams (limits.idleTimeout runs on the same timer when it has none):
 *  - limits.requestHeaderTimeout from a header block's HEADERS frame to its
 *    END_HEADERS: an unfinished block blocks the whole connection (no other
 *    frame may come between), so the connection gets GOAWAY and is closed;
 *  - limits.requestBodyTimeout without a request body byte, until the
 *    response starts, while the pause is the client's (all we received was
 *    consumed, so its window is open): 408 and RST_STREAM(NO_ERROR);
 *  - limits.streamIdleTimeout once the response has started and the request
 *    body has not ended, with nothing received or sent on the stream (a
 *    wait for the upstream's bytes is the upstream's, bounded by routes);
 *  - limits.responseWriteTimeout while response bytes wait for flow-control
 *    credit the client does not give: RST_STREAM(CANCEL); and for a
 *    connection whose socket takes no byte while bytes are queued: closed.
 * The exchange is failed in each case, so its upstream request and the
 * destination's circuit-breaker budget are returned. Reads and sends only
 * move timestamps; a deadline is late by at most one sweep interval. */
#include "h2.h"
#include "alloc.h"
#include "breaker.h"
#include "conn.h"
#include "exchange.h"
#include "h1_out.h"
#include "h2_abuse.h"
#include "io.h"
#include "log.h"
#include "upstream_wait.h"
#include "worker.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define H2_STREAM_WINDOW 65535
#define H2_CONN_WINDOW (4 * 1024 * 1024)
/* Frames are made only while less than this waits in the socket's write
 * queue, and again once it falls to half: flow control is the peer's to
 * give, so a client that grants huge windows and never reads would
 * otherwise have the proxy queue everything its upstreams send. */
#define H2_OUT_HIGH_WATER (1024 * 1024)

/* Bounds against HTTP/2 abuse (docs/security.md). CVE-2023-44487 ("rapid
 * reset") and its variant that stays under nghttp2's own reset rate limit
 * by reconnecting: a stream the client opens and cancels at once must cost
 * O(1) here and nothing on the shared upstream connection, and a client
 * that does it for most of its streams is disconnected.
 *
 * Client role: requests wait in our own FIFO and are handed to nghttp2 only
 * while the connection has a free stream slot, so nghttp2's outbound queue
 * never holds more than a few streams (cancelling one there walks that
 * queue) and a request cancelled while it waits is unlinked in O(1) and
 * never sent. */
#define H2_CLIENT_MAX_OPEN 1024   /* streams open at once on one upstream connection,
                                     further bounded by the peer's MAX_CONCURRENT_STREAMS */
#define H2_CLIENT_MAX_PENDING 4096 /* requests waiting for a slot; past it 503 (UO) */
/* Server role: premature resets are counted per connection and per client,
 * and judged by h2_abuse.c (its bounds are there). */
/* nghttp2's own limits, set explicitly (they are nghttp2's defaults): an
 * incoming RST_STREAM token bucket (burst, per second), queued SETTINGS/PING
 * acknowledgements, SETTINGS entries per frame, CONTINUATION frames per
 * header block (CVE-2024-28182). */
#define H2_RST_BURST 1000
#define H2_RST_RATE 33
#define H2_MAX_OUTBOUND_ACK 1000
#define H2_MAX_SETTINGS 32
#define H2_MAX_CONTINUATIONS 8

typedef struct h2s h2s;

typedef struct rete_h2_conn {
    rete_io own_io;          /* client connections own their io */
    rete_io *io;             /* server: the downstream conn's io */
    rete_conn *conn;         /* server only */
    rete_worker *worker;
    rete_pool_entry *pool;   /* client only */
    nghttp2_session *session;
    h2s *streams;            /* every open stream, to fail them on close */
    bool server;
    bool ready;              /* client: connected and handshaken */
    bool dead;               /* no new streams; closing */
    bool in_recv;            /* inside nghttp2_session_mem_recv: defer sends */
    bool want_flush;
    bool tls;
    bool queued;             /* on the worker's flush list */
    bool got_frame;          /* the peer sent at least one frame (its SETTINGS) */
    bool abusive;            /* server: GOAWAY ENHANCE_YOUR_CALM sent, take no new streams */
    bool errors_counted;     /* server: a protocol error of the client's is counted */
    h2s *pend_head;          /* client: requests waiting for a stream slot, oldest first */
    h2s *pend_tail;
    uint32_t n_pending;
    uint32_t n_open;         /* client: streams handed to nghttp2 and not closed */
    uint32_t n_streams;      /* server: streams the client opened */
    uint32_t n_premature;    /* server: of which it reset before the response was done */
    uint32_t held;           /* server: its requests in flight in circuit-breaker budgets */
    struct rete_h2_conn *next_dirty;
    /* client, outbound to a Service: the breaker whose `connections` it
     * holds (NULL: not counted); after max_requests requests (0: none) it
     * leaves the pool and closes when its last stream ends. */
    rete_breaker *breaker;
    uint32_t max_requests;
    uint32_t n_assigned;
    bool retiring;
    rete_pool_idle idle_to;    /* client: connectionPool.http.idleTimeout */
    char key[224];           /* client: its pool key */
    char client[160];        /* server: who it counts against (SPIFFE ID or source IP) */
} rete_h2_conn;

struct h2s {
    h2s *next;
    h2s *prev;
    rete_h2_conn *h2;
    rete_exchange *ex;
    int32_t id;
    bool deferred;          /* data provider returned DEFERRED */
    bool head_done;         /* client: final response head seen */
    bool trailers_submitted;
    bool closed;
    bool too_large;         /* header block over limits.maxHeaderBytes / maxHeaders */
    bool pending;           /* client: on h2->pend_*, not yet given to nghttp2 */
    h2s *pnext;             /* pending FIFO links */
    h2s *pprev;
    size_t unconsumed;      /* DATA received, not yet handed back as window */
    uint32_t header_bytes;
    uint32_t header_count;
    /* server: deadlines (loop ms; see the top of the file) */
    bool resp_started;      /* the response head was submitted */
    bool rst_after_head;    /* a timeout's answer: RST_STREAM(NO_ERROR) once it is sent */
    uint64_t head_start;    /* a header block from the client began; 0: none unfinished */
    uint64_t body_last;     /* last request body byte, or the end of a pause of ours */
    uint64_t resp_wait;     /* response bytes wait for credit since, or last sent */
    uint64_t last_active;   /* last byte either way on the stream */
};

static const rete_side_ops h2_ds_ops;
static const rete_side_ops h2_us_ops;
static void h2_flush(rete_h2_conn *h2);
static void h2_kill(rete_h2_conn *h2, const char *why);
static void h2_submit_pending(rete_h2_conn *h2);
static void h2_premature_reset(rete_h2_conn *h2);
static int on_invalid_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, int err,
                                 void *user_data);
static void h2_sweep(rete_conn *c);
static uint64_t h2_sweep_interval(const rete_h2_conn *h2);

static uint64_t h2_now(const rete_h2_conn *h2)
{
    uint64_t now = uv_now(&h2->worker->loop);
    return now ? now : 1; /* 0 means "not set" in the stream's timestamps */
}

/* ---- stream bookkeeping ---- */

static h2s *h2s_new(rete_h2_conn *h2, rete_exchange *ex)
{
    h2s *s = rete_calloc(1, sizeof(*s));
    s->h2 = h2;
    s->ex = ex;
    s->next = h2->streams;
    if (h2->streams)
        h2->streams->prev = s;
    h2->streams = s;
    return s;
}

static void h2_idle(rete_conn *c)
{
    /* No stream for a whole idle timeout: say goodbye (RFC 9113 §6.8). */
    rete_h2_conn *h2 = c->codec;
    rete_conn_count_timeout(c, RETE_TIMEOUT_IDLE);
    if (c->io.queued) {
        /* it has not even taken what we sent: no goodbye can reach it */
        h2_kill(h2, "idle timeout");
        return;
    }
    nghttp2_session_terminate_session(h2->session, NGHTTP2_NO_ERROR);
    h2_flush(h2);
}

static void h2s_unpend(h2s *s)
{
    rete_h2_conn *h2 = s->h2;
    if (!s->pending)
        return;
    if (s->pprev)
        s->pprev->pnext = s->pnext;
    else
        h2->pend_head = s->pnext;
    if (s->pnext)
        s->pnext->pprev = s->pprev;
    else
        h2->pend_tail = s->pprev;
    s->pnext = s->pprev = NULL;
    s->pending = false;
    h2->n_pending--;
}

static void h2s_free(h2s *s)
{
    rete_h2_conn *h2 = s->h2;
    h2s_unpend(s);
    if (s->prev)
        s->prev->next = s->next;
    else
        h2->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    free(s);
    if (h2->server && !h2->streams && !h2->dead)
        rete_conn_idle_start(h2->conn, h2_idle);
}

/* connectionPool.http.idleTimeout: goodbye to a pooled client connection
 * that had no request for that long (GOAWAY, closed once written). */
static void h2_client_idle_expire(void *owner)
{
    rete_h2_conn *h2 = owner;
    if (h2->dead || h2->n_open || h2->pend_head)
        return;
    rete_debug("h2: upstream connection %s idle: closed (idleTimeout)", h2->key);
    h2->dead = true;
    if (h2->pool && h2->pool->h2 == h2)
        h2->pool->h2 = NULL;
    if (!h2->ready) {
        h2_kill(h2, "idle timeout");
        return;
    }
    nghttp2_session_terminate_session(h2->session, NGHTTP2_NO_ERROR);
    h2_flush(h2);
}

/* ---- sending ---- */

/* Frames are not written as soon as they are made: h2_flush queues the
 * connection and the worker writes every queued connection once per loop
 * iteration (a check handle after the I/O callbacks, a prepare handle
 * before the loop blocks, for frames made by timers), so the frames of many
 * streams leave in one TLS record and one write(2). */
static void h2_flush(rete_h2_conn *h2)
{
    if (h2->in_recv) {
        h2->want_flush = true;
        return;
    }
    if (h2->queued || (h2->dead && h2->io->closing))
        return;
    h2->queued = true;
    h2->next_dirty = h2->worker->h2_dirty;
    h2->worker->h2_dirty = h2;
}

static void h2_write_out(rete_h2_conn *h2)
{
    if (h2->dead && h2->io->closing)
        return;
    if (!h2->server && !h2->ready)
        return;
    if (!h2->server)
        h2_submit_pending(h2);
    if (h2->io->queued >= H2_OUT_HIGH_WATER) {
        h2->io->low_water = H2_OUT_HIGH_WATER / 2; /* on_drain flushes again */
        return;
    }
    rete_outbuf b;
    rete_outbuf_init(&b);
    while (h2->io->queued + b.len < H2_OUT_HIGH_WATER) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h2->session, &data);
        if (n < 0) {
            rete_outbuf_free(&b);
            h2_kill(h2, nghttp2_strerror((int)n));
            return;
        }
        if (n == 0)
            break;
        rete_outbuf_put(&b, (const char *)data, (size_t)n);
        if (b.len >= 65536) {
            uv_buf_t ub = uv_buf_init(b.p, (unsigned)b.len);
            if (rete_io_write(h2->io, &ub, 1) < 0) {
                rete_outbuf_free(&b);
                h2_kill(h2, "write failed");
                return;
            }
            b.len = 0;
        }
    }
    if (b.len) {
        uv_buf_t ub = uv_buf_init(b.p, (unsigned)b.len);
        if (rete_io_write(h2->io, &ub, 1) < 0) {
            rete_outbuf_free(&b);
            h2_kill(h2, "write failed");
            return;
        }
    }
    rete_outbuf_free(&b);
    if (!nghttp2_session_want_read(h2->session) && !nghttp2_session_want_write(h2->session))
        h2_kill(h2, "session finished");
}

/* Body source for both roles: the pipe this side consumes. */
static ssize_t h2_read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    (void)session;
    (void)user_data;
    (void)stream_id;
    h2s *s = source->ptr;
    rete_exchange *ex = s->ex;
    if (!ex)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    rete_side me = s->h2->server ? RETE_DOWNSTREAM : RETE_UPSTREAM;
    rete_pipe *p = rete_ex_in(ex, me);
    if (s->h2->server && p->head)
        s->resp_wait = s->last_active = h2_now(s->h2); /* the client gave credit */
    size_t total = 0;
    while (total < length) {
        const char *d;
        size_t n = rete_ex_peek(ex, me, &d);
        if (n == 0)
            break;
        if (n > length - total)
            n = length - total;
        memcpy(buf + total, d, n);
        total += n;
        rete_ex_consume(ex, me, n);
        if (!s->ex)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (!p->head && p->end) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (p->trailers.n_headers && !s->trailers_submitted) {
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            nghttp2_nv *nva = rete_arena_alloc(ex->arena, p->trailers.n_headers * sizeof(*nva));
            for (uint32_t i = 0; i < p->trailers.n_headers; i++) {
                nva[i] = (nghttp2_nv){(uint8_t *)p->trailers.headers[i].name.p,
                                      (uint8_t *)p->trailers.headers[i].value.p,
                                      p->trailers.headers[i].name.len,
                                      p->trailers.headers[i].value.len, NGHTTP2_NV_FLAG_NONE};
            }
            s->trailers_submitted = true;
            nghttp2_submit_trailer(s->h2->session, s->id, nva, p->trailers.n_headers);
        }
        return (ssize_t)total;
    }
    if (total == 0) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)total;
}

#define NV(n, v)                                                                                   \
    ((nghttp2_nv){(uint8_t *)(n).p, (uint8_t *)(v).p, (n).len, (v).len, NGHTTP2_NV_FLAG_NONE})

/* Headers of m into an arena array after `pre` pseudo-headers. */
static nghttp2_nv *h2_fields(rete_exchange *ex, const rete_msg *m, size_t pre, size_t extra,
                             size_t *count)
{
    nghttp2_nv *nva = rete_arena_alloc(ex->arena, (pre + extra + m->n_headers) * sizeof(*nva));
    size_t n = pre;
    for (uint32_t i = 0; i < m->n_headers; i++) {
        rete_view name = m->headers[i].name;
        if (!rete_h2_field_forwarded(name, m->headers[i].value))
            continue;
        nva[n++] = NV(name, m->headers[i].value);
    }
    *count = n;
    return nva;
}

static bool pipe_is_empty_end(const rete_pipe *p)
{
    return p->end && !p->head && p->trailers.n_headers == 0;
}

/* ---- server role: exchange downstream ops ---- */

static void h2_ds_on_head(rete_exchange *ex)
{
    h2s *s = ex->side[RETE_DOWNSTREAM];
    rete_h2_conn *h2 = s->h2;
    char status[8];
    snprintf(status, sizeof(status), "%d", ex->resp.status);
    rete_view sv = rete_ex_dup(ex, rete_view_cstr(status));
    size_t n;
    nghttp2_nv *nva = h2_fields(ex, &ex->resp, 1, 1, &n);
    nva[0] = NV(RETE_VIEW_LIT(":status"), sv);
    if (ex->resp.content_length >= 0 && !ex->tunnel &&
        rete_msg_get(&ex->resp, RETE_VIEW_LIT("content-length")).p == NULL) {
        char cl[24];
        snprintf(cl, sizeof(cl), "%lld", (long long)ex->resp.content_length);
        rete_view clv = rete_ex_dup(ex, rete_view_cstr(cl));
        nva[n++] = NV(RETE_VIEW_LIT("content-length"), clv);
    }
    s->resp_started = true;
    s->resp_wait = s->last_active = h2_now(h2);
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = h2_read_body};
    int rv = nghttp2_submit_response(h2->session, s->id, nva, n,
                                     pipe_is_empty_end(&ex->resp_body) ? NULL : &prd);
    if (rv != 0)
        rete_warn("h2: submit_response: %s", nghttp2_strerror(rv));
    if (pipe_is_empty_end(&ex->resp_body)) {
        s->ex = NULL;
        rete_ex_detach(ex, RETE_DOWNSTREAM);
    }
    h2_flush(h2);
}

static void h2_on_data_ready(rete_exchange *ex, rete_side me)
{
    h2s *s = ex->side[me];
    if (s->pending)
        return; /* its body goes with it when it is submitted */
    if (s->deferred) {
        s->deferred = false;
        nghttp2_session_resume_data(s->h2->session, s->id);
    }
    h2_flush(s->h2);
}

static void h2_ds_on_data(rete_exchange *ex)
{
    h2_on_data_ready(ex, RETE_DOWNSTREAM);
}

static void h2_on_drained(rete_exchange *ex, rete_side me, size_t consumed)
{
    h2s *s = ex->side[me];
    if (!s->closed && !s->pending) {
        size_t n = consumed < s->unconsumed ? consumed : s->unconsumed;
        s->unconsumed -= n;
        nghttp2_session_consume(s->h2->session, s->id, n);
        h2_flush(s->h2);
    }
}

static void h2_ds_on_drained(rete_exchange *ex, size_t consumed)
{
    h2_on_drained(ex, RETE_DOWNSTREAM, consumed);
}

static void h2_on_abort(rete_exchange *ex, rete_side me)
{
    h2s *s = ex->side[me];
    s->ex = NULL;
    rete_ex_detach(ex, me);
    if (s->pending) {
        /* Never given to nghttp2: nothing to tell the peer. O(1). */
        h2s_free(s);
        return;
    }
    if (!s->closed) {
        nghttp2_submit_rst_stream(s->h2->session, NGHTTP2_FLAG_NONE, s->id,
                                  me == RETE_DOWNSTREAM ? NGHTTP2_INTERNAL_ERROR : NGHTTP2_CANCEL);
        h2_flush(s->h2);
    }
}

static void h2_ds_on_abort(rete_exchange *ex)
{
    h2_on_abort(ex, RETE_DOWNSTREAM);
}

static void h2_ds_on_interim(rete_exchange *ex)
{
    h2s *s = ex->side[RETE_DOWNSTREAM];
    if (ex->resp.status == 100)
        return;
    char status[8];
    snprintf(status, sizeof(status), "%d", ex->resp.status);
    rete_view sv = rete_ex_dup(ex, rete_view_cstr(status));
    size_t n;
    nghttp2_nv *nva = h2_fields(ex, &ex->resp, 1, 0, &n);
    nva[0] = NV(RETE_VIEW_LIT(":status"), sv);
    nghttp2_submit_headers(s->h2->session, NGHTTP2_FLAG_NONE, s->id, NULL, nva, n, NULL);
    h2_flush(s->h2);
}

/* one side table per codec side (exchange.h): the same shape by design. */
static const rete_side_ops h2_ds_ops = {
    .name = "h2-server",
    .on_head = h2_ds_on_head,
    .on_data = h2_ds_on_data,
    .on_drained = h2_ds_on_drained,
    .on_abort = h2_ds_on_abort,
    .on_interim = h2_ds_on_interim,
};

/* ---- client role: exchange upstream ops ---- */

static void h2_us_on_head(rete_exchange *ex) { (void)ex; }
static void h2_us_on_data(rete_exchange *ex)
{
    h2_on_data_ready(ex, RETE_UPSTREAM);
}
static void h2_us_on_drained(rete_exchange *ex, size_t consumed)
{
    h2_on_drained(ex, RETE_UPSTREAM, consumed);
}
static void h2_us_on_abort(rete_exchange *ex)
{
    h2_on_abort(ex, RETE_UPSTREAM);
}

/* one side table per codec side (exchange.h): the same shape by design. */
static const rete_side_ops h2_us_ops = {
    .name = "h2-client",
    .on_head = h2_us_on_head,
    .on_data = h2_us_on_data,
    .on_drained = h2_us_on_drained,
    .on_abort = h2_us_on_abort,
};

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    rete_h2_conn *h2 = user_data;
    if (!h2->server || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        /* trailers: their block must finish in time too */
        h2s *t = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (t)
            t->head_start = h2_now(h2);
        return 0;
    }
    if (h2->abusive)
        return 0; /* GOAWAY sent: the stream gets no exchange and dies with the connection */
    h2->n_streams++;
    rete_conn *c = h2->conn;
    if (c->on_timer != h2_sweep) {
        /* the idle timer gives way to the sweep while streams are open */
        rete_conn_idle_stop(c);
        rete_conn_timer_start(c, h2_sweep_interval(h2), h2_sweep);
    }
    rete_exchange *ex = rete_conn_new_exchange(c, &h2_ds_ops, NULL);
    h2s *s = h2s_new(h2, ex);
    s->id = frame->hd.stream_id;
    s->head_start = s->body_last = s->last_active = h2_now(h2);
    ex->side[RETE_DOWNSTREAM] = s;
    /* Peer proxies multiplex all their callers on one mesh connection:
     * the fair share is for the connections of local callers. */
    if (c->listener->kind != RETE_L_MESH)
        ex->ds_held = &h2->held;
    nghttp2_session_set_stream_user_data(session, s->id, s);
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    (void)flags;
    rete_h2_conn *h2 = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2s *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!s || !s->ex)
        return 0;
    rete_exchange *ex = s->ex;
    rete_view n = rete_view_make((const char *)name, namelen);
    rete_view v = rete_view_make((const char *)value, valuelen);
    /* The same bounds as HTTP/1.1 heads, counted as RFC 9113 §6.5.2 does
     * (32 bytes of overhead per field). Past them, stop storing fields;
     * the stream is answered 431 (requests) or failed (responses). */
    const rete_limits *lim = &ex->gen->cfg->proxy.limits;
    s->header_bytes += (uint32_t)(namelen + valuelen + 32);
    if (++s->header_count > lim->max_headers + 8 || s->header_bytes > lim->max_header_bytes) {
        s->too_large = true;
        return 0;
    }
    if (h2->server) {
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (namelen && name[0] == ':') {
                if (rete_view_eq(n, RETE_VIEW_LIT(":method")))
                    ex->req.method = rete_ex_dup(ex, v);
                else if (rete_view_eq(n, RETE_VIEW_LIT(":scheme")))
                    ex->req.scheme = rete_ex_dup(ex, v);
                else if (rete_view_eq(n, RETE_VIEW_LIT(":authority")))
                    ex->req.authority = rete_ex_dup(ex, v);
                else if (rete_view_eq(n, RETE_VIEW_LIT(":path")))
                    ex->req.path = rete_ex_dup(ex, v);
                else if (rete_view_eq(n, RETE_VIEW_LIT(":protocol")))
                    ex->req.protocol = rete_ex_dup(ex, v);
                return 0;
            }
            if (rete_view_eq(n, RETE_VIEW_LIT("host"))) {
                if (!ex->req.authority.len)
                    ex->req.authority = rete_ex_dup(ex, v);
                return 0;
            }
            if (rete_view_eq(n, RETE_VIEW_LIT("content-length"))) {
                uint64_t cl;
                if (rete_view_to_u64(v, &cl))
                    ex->req.content_length = (int64_t)cl;
                return 0;
            }
            if (h2->conn->listener->kind != RETE_L_MESH && rete_is_internal_header(n))
                return 0;
            rete_msg_add(ex, &ex->req, n, v);
        } else if (!rete_is_internal_header(n)) {
            rete_msg_add(ex, &ex->req_body.trailers, n, v);
        }
        return 0;
    }
    /* client: response head, interim head or trailers */
    if (!s->head_done) {
        if (rete_view_eq(n, RETE_VIEW_LIT(":status"))) {
            uint64_t st = 0;
            rete_view_to_u64(v, &st);
            ex->resp.status = (int)st;
            return 0;
        }
        if (namelen && name[0] == ':')
            return 0;
        if (rete_view_eq(n, RETE_VIEW_LIT("content-length"))) {
            uint64_t cl;
            if (rete_view_to_u64(v, &cl))
                ex->resp.content_length = (int64_t)cl;
            return 0;
        }
        rete_msg_add(ex, &ex->resp, n, v);
    } else {
        rete_msg_add(ex, &ex->resp_body.trailers, n, v);
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    rete_h2_conn *h2 = user_data;
    h2->got_frame = true;
    if (frame->hd.type == NGHTTP2_GOAWAY && !h2->server) {
        h2->dead = true; /* no new streams here; the pool opens another connection */
        return 0;
    }
    if (frame->hd.type == NGHTTP2_RST_STREAM && h2->server) {
        h2s *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (s && s->ex)
            h2_premature_reset(h2);
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    h2s *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s && frame->hd.type == NGHTTP2_HEADERS)
        s->head_start = 0; /* the header block is complete */
    if (!s || !s->ex)
        return 0;
    rete_exchange *ex = s->ex;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (h2->server) {
        if (frame->hd.type == NGHTTP2_HEADERS)
            s->body_last = s->last_active = h2_now(h2);
        if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (end) {
                ex->req_body.end = true;
                if (ex->req.content_length < 0)
                    ex->req.content_length = 0;
            }
            if (s->too_large) {
                ex->req_body.end = true;
                rete_stat(h2->worker, h2->worker->ms.parse_errors, 1);
                rete_ex_local_response(ex, 431, "text/plain", "request header fields too large\n", 32);
                return 0;
            }
            if (rete_view_eq(ex->req.method, RETE_VIEW_LIT("CONNECT")))
                ex->tunnel = true;
            if (!ex->req.method.len || (!ex->tunnel && !ex->req.path.len)) {
                nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_PROTOCOL_ERROR);
                return 0;
            }
            if (!ex->req.scheme.len)
                ex->req.scheme = RETE_VIEW_LIT("http");
            rete_ex_request_ready(ex);
            return 0;
        }
        if (end && s->ex)
            rete_ex_end(ex, RETE_DOWNSTREAM);
        return 0;
    }
    if (frame->hd.type == NGHTTP2_HEADERS && !s->head_done) {
        if (s->too_large) {
            s->ex = NULL;
            rete_ex_fail(ex, RETE_UPSTREAM, RETE_EXE_UPSTREAM_RESET, "response headers too large");
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_CANCEL);
            return 0;
        }
        if (ex->resp.status / 100 == 1) {
            rete_ex_interim(ex);
            memset(&ex->resp, 0, sizeof(ex->resp));
            ex->resp.content_length = -1;
            return 0;
        }
        s->head_done = true;
        if (end)
            ex->resp_body.end = true;
        rete_ex_response_ready(ex);
        return 0;
    }
    if (end && s->ex)
        rete_ex_end(ex, RETE_UPSTREAM);
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    rete_h2_conn *h2 = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY && h2->server && frame->goaway.error_code != NGHTTP2_NO_ERROR &&
        !h2->abusive && !h2->errors_counted) {
        /* nghttp2 ended the connection on its own (a compression error,
         * say) without telling on_invalid_frame_recv */
        h2->errors_counted = true;
        rete_stat(h2->worker, h2->worker->ms.h2_abuse[RETE_H2_ABUSE_PROTOCOL], 1);
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2s *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s && s->rst_after_head) {
        s->rst_after_head = false;
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *user_data)
{
    (void)flags;
    rete_h2_conn *h2 = user_data;
    h2s *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s || !s->ex) {
        /* Nobody will consume it: return the window at once. */
        nghttp2_session_consume(session, stream_id, len);
        return 0;
    }
    s->unconsumed += len;
    if (h2->server)
        s->body_last = s->last_active = h2_now(h2);
    rete_ex_push(s->ex, h2->server ? RETE_DOWNSTREAM : RETE_UPSTREAM, (const char *)data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    rete_h2_conn *h2 = user_data;
    h2s *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!s)
        return 0;
    /* Bytes still waiting in the exchange's pipe will be consumed after the
     * stream is gone, when nobody can hand their window back: return the
     * connection-level credit now, or the connection slowly starves. */
    if (s->unconsumed) {
        nghttp2_session_consume_connection(session, s->unconsumed);
        s->unconsumed = 0;
    }
    s->closed = true;
    rete_exchange *ex = s->ex;
    s->ex = NULL;
    if (ex) {
        if (h2->server) {
            if (error_code != NGHTTP2_NO_ERROR || !ex->req_body.end)
                rete_ex_fail(ex, RETE_DOWNSTREAM, RETE_EXE_DOWNSTREAM_RESET, "stream reset by client");
            else
                rete_ex_detach(ex, RETE_DOWNSTREAM);
        } else {
            if (error_code != NGHTTP2_NO_ERROR || !ex->resp_body.end) {
                char why[64];
                snprintf(why, sizeof(why), "stream reset: %s", nghttp2_http2_strerror(error_code));
                rete_ex_fail(ex, RETE_UPSTREAM, RETE_EXE_UPSTREAM_RESET, why);
            } else {
                rete_ex_detach(ex, RETE_UPSTREAM);
            }
        }
    }
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    if (!h2->server) {
        h2->n_open--;
        if (h2->pend_head)
            h2_flush(h2); /* a slot is free for a waiting request */
        else if (h2->retiring && !h2->n_open && !h2->dead) {
            /* maxRequestsPerConnection: its last request is done */
            h2->dead = true;
            nghttp2_session_terminate_session(session, NGHTTP2_NO_ERROR);
            h2_flush(h2);
        } else if (!h2->n_open && !h2->dead) {
            rete_pool_idle_start(&h2->idle_to);
        }
    }
    h2s_free(s);
    /* nghttp2 calls this from mem_recv/mem_send only, which run from the
     * loop (h2_on_io_data, h2_write_out) with no exchange on the stack:
     * recycle the exchange now, so a read full of opened-and-cancelled
     * streams reuses a few pooled exchanges instead of allocating one per
     * stream. */
    rete_ex_reap(h2->worker);
    return 0;
}

/* Built once per worker thread; rete_h2_thread_cleanup frees them when the
 * worker ends. */
static _Thread_local nghttp2_session_callbacks *cbs;
static _Thread_local nghttp2_option *opt;

void rete_h2_thread_cleanup(void)
{
    nghttp2_session_callbacks_del(cbs);
    cbs = NULL;
    nghttp2_option_del(opt);
    opt = NULL;
}

static nghttp2_session_callbacks *h2_callbacks(void)
{
    if (!cbs) {
        nghttp2_session_callbacks_new(&cbs);
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
        nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
        nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame_recv);
    }
    return cbs;
}

static nghttp2_option *h2_options(void)
{
    if (!opt) {
        nghttp2_option_new(&opt);
        nghttp2_option_set_no_auto_window_update(opt, 1);
        /* RFC 8441 CONNECT with :protocol is not used; plain CONNECT is. */
        nghttp2_option_set_max_send_header_block_length(opt, 256 * 1024);
        /* nghttp2's defaults, stated so they are ours (see H2_RST_BURST) */
        nghttp2_option_set_stream_reset_rate_limit(opt, H2_RST_BURST, H2_RST_RATE);
        nghttp2_option_set_max_outbound_ack(opt, H2_MAX_OUTBOUND_ACK);
        nghttp2_option_set_max_settings(opt, H2_MAX_SETTINGS);
        nghttp2_option_set_max_continuations(opt, H2_MAX_CONTINUATIONS);
        /* nghttp2 keeps closed streams (up to the concurrency limit, per
         * connection) for the RFC 7540 priority tree, which we do not use:
         * under stream churn that is ~30 KB per connection for nothing. */
        nghttp2_option_set_no_closed_streams(opt, 1);
    }
    return opt;
}

static void h2_send_settings(rete_h2_conn *h2, uint32_t max_streams)
{
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, h2->worker->gen->cfg->proxy.limits.max_header_bytes},
    };
    nghttp2_submit_settings(h2->session, NGHTTP2_FLAG_NONE, iv, 3);
    nghttp2_session_set_local_window_size(h2->session, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
}

/* ---- abuse: closing a connection ---- */

/* Stop taking streams from an abusive client connection: GOAWAY
 * (ENHANCE_YOUR_CALM, RFC 9113 §5.4.1) and close once it is written; the
 * streams already open fail with it. Counted in
 * rete_proxy_h2_abuse_total{reason}. */
static void h2_refuse(rete_h2_conn *h2, int reason, const char *why)
{
    if (h2->abusive)
        return;
    h2->abusive = true;
    rete_stat(h2->worker, h2->worker->ms.h2_abuse[reason], 1);
    rete_debug("h2: closing connection from %s: %s", h2->client, why);
    nghttp2_session_terminate_session(h2->session, NGHTTP2_ENHANCE_YOUR_CALM);
    h2_flush(h2);
}

/* nghttp2 refused what a client sent (its own bounds, set in h2_options,
 * or the protocol): counted once per connection for the fatal ones
 * mem_recv returns, once per error for the stream and connection errors
 * it answers with RST_STREAM or GOAWAY (on_invalid_frame_recv). */
static void h2_count_recv_error(rete_h2_conn *h2, int err)
{
    int reason = err == NGHTTP2_ERR_FLOODED                 ? RETE_H2_ABUSE_FLOOD
                 : err == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS ? RETE_H2_ABUSE_CONTINUATION
                                                             : RETE_H2_ABUSE_PROTOCOL;
    h2->errors_counted = true;
    rete_stat(h2->worker, h2->worker->ms.h2_abuse[reason], 1);
    rete_debug("h2: %s: %s", h2->client, nghttp2_strerror(err));
}

static int on_invalid_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, int err,
                                 void *user_data)
{
    (void)session;
    (void)frame;
    rete_h2_conn *h2 = user_data;
    if (h2->server)
        h2_count_recv_error(h2, err);
    return 0;
}

/* The client reset a stream whose response was not done. */
static void h2_premature_reset(rete_h2_conn *h2)
{
    h2->n_premature++;
    int reason = rete_h2_abuse_premature_reset(h2->client, h2->n_streams, h2->n_premature,
                                               uv_now(&h2->worker->loop));
    if (reason == RETE_H2_ABUSE_RAPID_RESET)
        h2_refuse(h2, reason, "too many streams reset by the client");
    else if (reason == RETE_H2_ABUSE_RAPID_RESET_CLIENT)
        h2_refuse(h2, reason, "client over its stream reset budget");
}

/* ---- deadlines (server role; see the top of the file) ---- */

/* A quarter of the shortest stream timeout, between 50 ms and 1 s: a
 * deadline is late by at most that, and a connection with streams costs
 * one timer callback a second at the defaults. */
static uint64_t h2_sweep_interval(const rete_h2_conn *h2)
{
    const rete_limits *l = &h2->conn->gen->cfg->proxy.limits;
    uint64_t m = l->request_header_timeout_ms;
    if (l->request_body_timeout_ms < m)
        m = l->request_body_timeout_ms;
    if (l->response_write_timeout_ms < m)
        m = l->response_write_timeout_ms;
    if (l->stream_idle_timeout_ms < m)
        m = l->stream_idle_timeout_ms;
    m /= 4;
    return m < 50 ? 50 : m > 1000 ? 1000 : m;
}

/* Give up on one stream: its exchange fails (the upstream request is
 * cancelled, the budget returned); the client gets `status` when no
 * response has started (then RST_STREAM NO_ERROR, RFC 9113 §8.1: stop
 * sending the body), else RST_STREAM `code`. */
static void h2_stream_timeout(rete_h2_conn *h2, h2s *s, rete_timeout_kind kind, int status,
                              uint32_t code, const char *why)
{
    rete_conn_count_timeout(h2->conn, kind);
    rete_debug("h2: stream %d from %s: %s", s->id, h2->client, why);
    rete_exchange *ex = s->ex;
    s->ex = NULL;
    rete_ex_fail(ex, RETE_DOWNSTREAM, RETE_EXE_DOWNSTREAM_TIMEOUT, why);
    if (status && !s->resp_started) {
        s->resp_started = true;
        char st[8];
        snprintf(st, sizeof(st), "%d", status);
        nghttp2_nv nv[] = {NV(RETE_VIEW_LIT(":status"), rete_view_cstr(st))}; /* nghttp2 copies */
        nghttp2_submit_response(h2->session, s->id, nv, 1, NULL);
        /* A RST_STREAM submitted now would drop the response (nghttp2
         * sends nothing more on a stream it is resetting): on_frame_send
         * sends it after the head. */
        s->rst_after_head = true;
    } else {
        nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, s->id, code);
    }
    h2_flush(h2);
}

static bool is_grpc(const rete_exchange *ex)
{
    rete_view ct = rete_msg_get(&ex->req, RETE_VIEW_LIT("content-type"));
    return rete_view_has_prefix(ct, RETE_VIEW_LIT("application/grpc"));
}

static void h2_sweep(rete_conn *c)
{
    rete_h2_conn *h2 = c->codec;
    if (h2->dead || c->io.closing || !h2->streams)
        return; /* the last stream's end restarted the idle timer */
    const rete_limits *l = &c->gen->cfg->proxy.limits;
    uint64_t now = h2_now(h2);
    if (c->io.queued && now - c->io.write_progress >= l->response_write_timeout_ms) {
        rete_conn_count_timeout(c, RETE_TIMEOUT_RESPONSE_WRITE);
        rete_debug("h2: %s took no byte in time: closed", h2->client);
        h2_kill(h2, "response write timeout");
        return;
    }
    for (h2s *s = h2->streams, *next; s; s = next) {
        next = s->next;
        if (s->closed)
            continue;
        if (s->head_start && now - s->head_start >= l->request_header_timeout_ms) {
            /* Nothing else can come on this connection until the block
             * ends: the connection goes once its GOAWAY is written (the
             * sweep goes on, so a client that does not read it is closed
             * by the write timeout). */
            s->head_start = 0;
            rete_conn_count_timeout(c, RETE_TIMEOUT_REQUEST_HEADER);
            rete_debug("h2: header block of stream %d from %s not complete in time: closed", s->id,
                       h2->client);
            nghttp2_session_terminate_session(h2->session, NGHTTP2_NO_ERROR);
            h2_flush(h2);
            break;
        }
        rete_exchange *ex = s->ex;
        if (!ex || s->pending)
            continue;
        if (!rete_ex_in(ex, RETE_DOWNSTREAM)->head)
            s->resp_wait = now; /* nothing waits for the client */
        else if (now - s->resp_wait >= l->response_write_timeout_ms) {
            h2_stream_timeout(h2, s, RETE_TIMEOUT_RESPONSE_WRITE, 0, NGHTTP2_CANCEL,
                              "response waits for flow-control credit: response write timeout");
            continue;
        } else {
            s->last_active = now; /* the stall is the write timeout's business */
        }
        if (ex->req_body.end)
            continue; /* waiting for the upstream: route timeouts bound it */
        if (s->unconsumed) {
            /* the pause is ours: the upstream has not taken the bytes */
            s->body_last = s->last_active = now;
            continue;
        }
        if (!s->resp_started && !ex->tunnel && !is_grpc(ex)) {
            if (now - s->body_last >= l->request_body_timeout_ms)
                h2_stream_timeout(h2, s, RETE_TIMEOUT_REQUEST_BODY, 408, NGHTTP2_NO_ERROR,
                                  "request body timeout");
        } else if (s->resp_started || !ex->tunnel) {
            /* A gRPC client stream may pause between messages as long as
             * the application likes: like a stream whose response has
             * started, only limits.streamIdleTimeout bounds it (Envoy's
             * stream_idle_timeout), not the request body timeout. */
            /* A CONNECT stream carries opaque TCP (the mesh listener's
             * tunnels): limits.tcpIdleTimeout, as for TCP from a downstream. */
            uint64_t idle = ex->tunnel ? l->tcp_idle_timeout_ms : l->stream_idle_timeout_ms;
            if (now - s->last_active >= idle)
                h2_stream_timeout(h2, s, ex->tunnel ? RETE_TIMEOUT_IDLE : RETE_TIMEOUT_STREAM_IDLE, 0,
                                  NGHTTP2_CANCEL, "stream idle timeout");
        }
    }
    if (!h2->dead && h2->streams)
        rete_conn_timer_start(c, h2_sweep_interval(h2), h2_sweep);
}

/* ---- connection teardown ---- */

static void h2_fail_streams(rete_h2_conn *h2, const char *why)
{
    while (h2->streams) {
        h2s *s = h2->streams;
        rete_exchange *ex = s->ex;
        s->ex = NULL;
        s->closed = true;
        h2s_free(s);
        if (!ex)
            continue;
        if (h2->server) {
            rete_ex_fail(ex, RETE_DOWNSTREAM, RETE_EXE_DOWNSTREAM_RESET, why);
        } else if (h2->tls && h2->ready && !h2->got_frame) {
            /* The peer proxy completed the handshake, then closed before its
             * SETTINGS: that is how a mesh listener refuses an identity no
             * authorization policy admits (conn.c). Say so as a 403. */
            rete_ex_fail(ex, RETE_UPSTREAM, RETE_EXE_DENIED,
                         "the destination refused this workload's identity (authorization policy)");
        } else {
            rete_ex_fail(ex, RETE_UPSTREAM,
                         h2->ready                     ? RETE_EXE_UPSTREAM_RESET
                         : h2->io->connect_timed_out ? RETE_EXE_CONNECT_TIMEOUT
                                                       : RETE_EXE_CONNECT,
                         why);
        }
    }
}

static void h2_kill(rete_h2_conn *h2, const char *why)
{
    if (h2->dead && h2->io->closing)
        return;
    h2->dead = true;
    if (h2->pool && h2->pool->h2 == h2)
        h2->pool->h2 = NULL;
    rete_debug("h2: closing connection: %s", why);
    h2_fail_streams(h2, why);
    rete_io_close(h2->io);
}

/* ---- io callbacks ---- */

static void h2_on_io_data(rete_io *io, const char *data, size_t len)
{
    rete_h2_conn *h2 = io->owner;
    if (h2->dead)
        return;
    h2->in_recv = true;
    ssize_t n = nghttp2_session_mem_recv(h2->session, (const uint8_t *)data, len);
    h2->in_recv = false;
    if (n < 0) {
        if (h2->server)
            h2_count_recv_error(h2, (int)n);
        h2_kill(h2, nghttp2_strerror((int)n));
        return;
    }
    h2->want_flush = false;
    h2_flush(h2);
    /* One read can open and cancel hundreds of streams: recycle their
     * exchanges now, not after every ready connection of this loop
     * iteration has been read (memory would scale with both). */
    rete_ex_reap(h2->worker);
}

static void h2_on_io_eof(rete_io *io)
{
    h2_kill(io->owner, "peer closed the connection");
}

static void h2_on_io_error(rete_io *io, const char *why)
{
    h2_kill(io->owner, why);
}

static void h2_on_io_ready(rete_io *io, int status, const char *why)
{
    rete_h2_conn *h2 = io->owner;
    if (status < 0) {
        rete_warn("h2: connection to %s failed: %s", h2->key, why ? why : "?");
        h2_kill(h2, why ? why : "connect failed");
        return;
    }
    if (h2->tls) {
        const char *alpn = rete_tls_alpn(io->tls);
        if (!alpn || strcmp(alpn, "h2") != 0) {
            h2_kill(h2, "peer did not negotiate h2");
            return;
        }
    }
    h2->ready = true;
    h2_flush(h2);
}

static void h2_on_io_drain(rete_io *io)
{
    rete_h2_conn *h2 = io->owner;
    h2_flush(h2);
}

void rete_h2_flush_all(rete_worker *w)
{
    while (w->h2_dirty) {
        rete_h2_conn *h2 = w->h2_dirty;
        w->h2_dirty = h2->next_dirty;
        h2->queued = false;
        h2_write_out(h2);
    }
}

static void h2_on_io_close(rete_io *io)
{
    rete_h2_conn *h2 = io->owner;
    if (h2->queued) {
        for (rete_h2_conn **pp = &h2->worker->h2_dirty; *pp; pp = &(*pp)->next_dirty)
            if (*pp == h2) {
                *pp = h2->next_dirty;
                break;
            }
        h2->queued = false;
    }
    h2_fail_streams(h2, "connection closed");
    nghttp2_session_del(h2->session);
    rete_pool_idle_free(&h2->idle_to);
    if (h2->breaker) {
        rete_breaker_give(&h2->breaker->connections);
        rete_upstream_wait_kick(h2->worker);
    }
    rete_conn *c = h2->conn;
    free(h2);
    if (c)
        rete_conn_closed(c);
}

/* one io callback table per owner of a connection (io.h): the same shape by design. */
static const rete_io_cbs h2_io_cbs = {
    .on_data = h2_on_io_data,
    .on_eof = h2_on_io_eof,
    .on_error = h2_on_io_error,
    .on_ready = h2_on_io_ready,
    .on_drain = h2_on_io_drain,
    .on_close = h2_on_io_close,
};

/* ---- entry points ---- */

void rete_h2_server_start(rete_conn *c, const char *data, size_t len)
{
    rete_h2_conn *h2 = rete_calloc(1, sizeof(*h2));
    h2->server = true;
    h2->conn = c;
    h2->io = &c->io;
    h2->worker = c->worker;
    nghttp2_session_server_new2(&h2->session, h2_callbacks(), h2, h2_options());
    h2_send_settings(h2, c->gen->cfg->proxy.limits.max_streams);
    c->io.cbs = &h2_io_cbs;
    c->io.owner = h2;
    c->codec = h2;
    if (c->peer_id[0]) {
        snprintf(h2->client, sizeof(h2->client), "%s", c->peer_id);
    } else {
        /* the source IP: our own "ip:port" text, cut at the last colon */
        const char *colon = strrchr(c->peer_addr, ':');
        int n = colon ? (int)(colon - c->peer_addr) : (int)strlen(c->peer_addr);
        snprintf(h2->client, sizeof(h2->client), "%.*s", n, c->peer_addr);
    }
    if (rete_h2_abuse_client_over_limit(h2->client, uv_now(&h2->worker->loop)))
        h2_refuse(h2, RETE_H2_ABUSE_RAPID_RESET_CLIENT, "client over its stream reset budget");
    rete_conn_idle_start(c, h2_idle);
    rete_io_read_start(&c->io);
    if (len)
        h2_on_io_data(&c->io, data, len);
    else
        h2_flush(h2);
}

/* The pooled connection to t's address, or a new one within the Service's
 * maxConnections. NULL with *full set: at the limit (the caller queues the
 * request); NULL otherwise: it could not be opened. */
static rete_h2_conn *h2_client_get(rete_worker *w, const rete_upstream_target *t, bool *full)
{
    char key[224];
    snprintf(key, sizeof(key), "%s|%s|%u|%s", t->tls ? "mesh" : "h2c", t->ip, t->port,
             t->expected_id ? t->expected_id : "");
    *full = false;
    rete_pool_entry *pool = rete_pool_get(w, key);
    if (pool->h2 && !pool->h2->dead)
        return pool->h2;
    const rete_upstream_limits *lim = t->limits;
    if (lim && !rete_breaker_take(&lim->breaker->connections, lim->max_connections)) {
        *full = true;
        return NULL;
    }
    rete_h2_conn *h2 = rete_calloc(1, sizeof(*h2));
    h2->worker = w;
    h2->pool = pool;
    h2->io = &h2->own_io;
    h2->tls = t->tls;
    snprintf(h2->key, sizeof(h2->key), "%s", key);
    rete_tls_session *sess = NULL;
    if (t->tls) {
        sess = rete_tls_session_new_client(w->gen->tls->mesh_client, t->expected_id, NULL);
        if (!sess)
            goto fail;
    }
    nghttp2_session_client_new2(&h2->session, h2_callbacks(), h2, h2_options());
    h2_send_settings(h2, 1024);
    if (rete_io_connect(h2->io, &w->iol, t->ip, t->port, sess, &h2_io_cbs, h2) < 0) {
        if (sess)
            rete_tls_session_free(sess);
        nghttp2_session_del(h2->session);
        goto fail;
    }
    rete_io_connect_timeout(h2->io, t->connect_timeout_ms);
    rete_pool_idle_init(&h2->idle_to, w, lim, h2_client_idle_expire, h2);
    if (lim) {
        h2->breaker = lim->breaker;
        h2->max_requests = lim->max_requests_per_connection;
    }
    pool->h2 = h2;
    return h2;
fail:
    if (lim)
        rete_breaker_give(&lim->breaker->connections);
    free(h2);
    return NULL;
}

/* Hand one waiting request to nghttp2. Returns false when nghttp2 refused
 * it (the exchange has been failed). */
static bool h2_submit(rete_h2_conn *h2, h2s *s)
{
    rete_exchange *ex = s->ex;
    size_t n;
    nghttp2_nv *nva = h2_fields(ex, &ex->req, 4, 1, &n);
    size_t k = 0;
    nva[k++] = NV(RETE_VIEW_LIT(":method"), ex->req.method);
    nva[k++] = NV(RETE_VIEW_LIT(":authority"), ex->req.authority);
    if (!rete_view_eq(ex->req.method, RETE_VIEW_LIT("CONNECT"))) {
        nva[k++] = NV(RETE_VIEW_LIT(":scheme"), ex->req.scheme.len ? ex->req.scheme : RETE_VIEW_LIT("http"));
        nva[k++] = NV(RETE_VIEW_LIT(":path"), ex->req.path);
    }
    if (k < 4) {
        /* close the gap left for pseudo-headers CONNECT does not carry */
        memmove(nva + k, nva + 4, (n - 4) * sizeof(*nva));
        n -= 4 - k;
    }
    if (ex->req.content_length >= 0 && !ex->tunnel) {
        char cl[24];
        snprintf(cl, sizeof(cl), "%lld", (long long)ex->req.content_length);
        rete_view clv = rete_ex_dup(ex, rete_view_cstr(cl));
        nva[n++] = NV(RETE_VIEW_LIT("content-length"), clv);
    }
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = h2_read_body};
    int32_t id = nghttp2_submit_request(h2->session, NULL, nva, n,
                                        pipe_is_empty_end(&ex->req_body) ? NULL : &prd, s);
    if (id < 0) {
        s->ex = NULL;
        h2s_free(s);
        ex->attached[RETE_UPSTREAM] = false;
        rete_ex_fail(ex, RETE_UPSTREAM, RETE_EXE_OVERFLOW, nghttp2_strerror(id));
        return false;
    }
    s->id = id;
    h2->n_open++;
    return true;
}

/* Client: move waiting requests into free stream slots (the smaller of
 * H2_CLIENT_MAX_OPEN and the peer's SETTINGS_MAX_CONCURRENT_STREAMS). */
static void h2_submit_pending(rete_h2_conn *h2)
{
    if (h2->dead || !nghttp2_session_check_request_allowed(h2->session)) {
        /* GOAWAY received or sent: these will never be sent here. */
        while (h2->pend_head) {
            h2s *s = h2->pend_head;
            rete_exchange *ex = s->ex;
            s->ex = NULL;
            h2s_free(s);
            if (ex)
                rete_ex_fail(ex, RETE_UPSTREAM, RETE_EXE_UPSTREAM_RESET, "upstream connection going away");
        }
        return;
    }
    uint32_t max = nghttp2_session_get_remote_settings(h2->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    if (max > H2_CLIENT_MAX_OPEN)
        max = H2_CLIENT_MAX_OPEN;
    while (h2->pend_head && h2->n_open < max) {
        h2s *s = h2->pend_head;
        h2s_unpend(s);
        h2_submit(h2, s);
    }
}

static void h2_upstream(rete_exchange *ex, const rete_upstream_target *t)
{
    bool full;
    rete_h2_conn *h2 = h2_client_get(ex->worker, t, &full);
    if (!h2) {
        if (full)
            rete_upstream_wait(ex, RETE_CODEC_H2, t);
        else
            rete_ex_fail(ex, RETE_UPSTREAM, RETE_EXE_CONNECT, "cannot open upstream connection");
        return;
    }
    if (h2->n_pending >= H2_CLIENT_MAX_PENDING) {
        rete_ex_fail(ex, RETE_UPSTREAM, RETE_EXE_OVERFLOW, "too many requests waiting for the upstream connection");
        return;
    }
    if (h2->max_requests && ++h2->n_assigned >= h2->max_requests) {
        /* maxRequestsPerConnection: this is its last request; the next
         * one opens another connection. */
        h2->retiring = true;
        if (h2->pool && h2->pool->h2 == h2)
            h2->pool->h2 = NULL;
        h2->pool = NULL;
    }
    rete_pool_idle_busy(&h2->idle_to);
    h2s *s = h2s_new(h2, ex);
    ex->ops[RETE_UPSTREAM] = &h2_us_ops;
    ex->side[RETE_UPSTREAM] = s;
    ex->attached[RETE_UPSTREAM] = true;
    /* Queued, not submitted: h2_write_out submits from the loop's flush
     * phase, so a request its client cancels in the same read never
     * reaches nghttp2 or the peer. */
    s->pending = true;
    s->pprev = h2->pend_tail;
    if (h2->pend_tail)
        h2->pend_tail->pnext = s;
    else
        h2->pend_head = s;
    h2->pend_tail = s;
    h2->n_pending++;
    h2_flush(h2);
}

void rete_h2_upstream_start(rete_exchange *ex, const char *ip, uint16_t port, bool tls,
                            uint32_t connect_timeout_ms, const char *expected_id)
{
    const rete_upstream_target t = {.ip = ip, .port = port, .tls = tls,
                                    .expected_id = expected_id,
                                    .connect_timeout_ms = connect_timeout_ms};
    h2_upstream(ex, &t);
}

static void upstream_start(rete_exchange *ex, const rete_upstream_target *t)
{
    h2_upstream(ex, t);
}

/* A pooled client connection with no request holds a slot that requests
 * of its Service wait for: goodbye (GOAWAY, closed once written). */
static void release_idle(rete_worker *w)
{
    for (rete_pool_entry *p = w->pools; p; p = p->next) {
        rete_h2_conn *h2 = p->h2;
        if (!h2 || h2->dead || h2->n_open || h2->pend_head || !h2->ready || !h2->breaker ||
            !rete_breaker_load(&h2->breaker->pending))
            continue;
        h2->dead = true;
        p->h2 = NULL;
        nghttp2_session_terminate_session(h2->session, NGHTTP2_NO_ERROR);
        h2_flush(h2);
    }
}

const rete_codec rete_codec_h2 = {
    .name = "http/2",
    .server_start = rete_h2_server_start,
    .upstream_start = upstream_start,
    .release_idle = release_idle,
    .flush_all = rete_h2_flush_all,
    .thread_cleanup = rete_h2_thread_cleanup,
};
