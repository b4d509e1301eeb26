#include "http.h"
#include "alloc.h"
#include "h1_parse.h"
#include "hash.h"
#include "http_status.h"
#include "vec.h"
#include "log.h"

#include <jansson.h>

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HTTP_MAX_HEAD 65536
#define HTTP_MAX_FIELDS 64
/* A connection whose input buffer grew past this gives it back (and asks
 * for a trim) once its request is answered: an idle keep-alive connection
 * must not sit on a 16 MB apply's buffer. */
#define HTTP_BIG_BUF (256u << 10)
#define HTTP_SOURCE_BUCKETS 1024

const char *const rete_http_refusal_names[RETE_HTTP_REFUSED_N] = {
    [RETE_HTTP_REFUSED_UNAUTHORIZED] = "unauthorized",
    [RETE_HTTP_REFUSED_NOT_FOUND] = "not_found",
    [RETE_HTTP_REFUSED_BODY_TOO_LARGE] = "body_too_large",
    [RETE_HTTP_REFUSED_BAD_REQUEST] = "bad_request",
    [RETE_HTTP_REFUSED_HEADER_TIMEOUT] = "header_timeout",
    [RETE_HTTP_REFUSED_BODY_TIMEOUT] = "body_timeout",
    [RETE_HTTP_REFUSED_CONNECTION_LIMIT] = "connection_limit",
    [RETE_HTTP_REFUSED_SOURCE_LIMIT] = "source_limit",
    [RETE_HTTP_REFUSED_ACCEPT_ERROR] = "accept_error",
};

/* Which deadline a connection is under (one at a time). */
typedef enum hc_timer { HT_NONE, HT_HEADER, HT_BODY, HT_IDLE } hc_timer;

/* Open connections from one source address (the per-source cap). */
typedef struct http_source {
    struct http_source *next;
    size_t count;
    uint8_t len;
    uint8_t addr[16];
} http_source;

typedef enum hc_state { HC_HEAD, HC_HANDLING, HC_STREAM, HC_CLOSING } hc_state;

/* One queued stream message: copy_len bytes of its own, then ref_len bytes
 * it only points at (shared with other streams, released once written). */
typedef struct hs_msg {
    struct hs_msg *next;
    const char *ref;
    size_t ref_len;
    rete_http_release release;
    void *arg;
    size_t sent;            /* bytes of copy, then ref, handed to the io */
    size_t copy_len;
    char copy[];
} hs_msg;

struct rete_http_stream {
    rete_http_conn *conn;
    const rete_http_stream_cbs *cbs;
    void *owner;
    void *tag;              /* the owner's, per stream (rete_http_stream_set_tag) */
    size_t max_line;
    hs_msg *head;           /* the outgoing queue, oldest first */
    hs_msg *tail;
    size_t n_msgs;
    size_t copied;          /* copy_len of every queued message */
    size_t shared;          /* ref bytes still to send */
};

struct rete_http_conn {
    rete_io io;
    rete_http_server *srv;
    rete_http_conn *next;
    rete_http_conn *prev;
    hc_state state;
    char *buf;
    size_t len;
    size_t cap;
    size_t consumed;        /* bytes of buf the current request used */
    bool keep_alive;
    bool tls_ready;
    rete_http_req req;
    rete_header *fields;    /* HTTP_MAX_FIELDS, while requests are parsed (not on streams) */
    char *body;
    http_source *source;    /* counted against its source's cap; NULL when refused */
    uint64_t deadline;      /* loop ms at which `timer` expires */
    hc_timer timer;
    bool admitted;          /* the current request's head passed admission */
    size_t max_body;        /* the current request's bound, once admitted */
    char *peer_id;          /* TLS: the client certificate's SPIFFE ID at its own length; NULL: none */
    char peer_addr[64];
    rete_cert_facts peer_cert; /* valid when has_peer_cert */
    bool has_peer_cert;
    rete_http_stream stream;
};

struct rete_http_server {
    uv_tcp_t tcp;
    rete_io_loop *iol;
    rete_tls_ctx *tls;
    size_t max_body;
    rete_http_handler handler;
    rete_http_admit_fn admit;
    void *arg;
    rete_http_conn *conns;
    rete_http_limits lim;
    uv_timer_t sweep;        /* enforces the timeouts, and trims after big buffers */
    http_source *sources[HTTP_SOURCE_BUCKETS];
    size_t n_conns;          /* admitted (counted) connections */
    uint64_t refused[RETE_HTTP_REFUSED_N];
    uint64_t idle_closed;
    bool big_freed;          /* a big input buffer was freed since the last trim */
    uint64_t streams_behind; /* closed for falling too far behind */
    bool closing;
    int handles_open;        /* the listener and the sweep timer; freed once 0 and conns empty */
};

static void hc_process(rete_http_conn *c);
static void hs_drop_all(rete_http_stream *st);

static const char *peer_id_of(const rete_http_conn *c)
{
    return c->peer_id ? c->peer_id : "";
}

static void hc_arm(rete_http_conn *c, hc_timer t)
{
    const rete_http_limits *l = &c->srv->lim;
    uint32_t ms = t == HT_HEADER ? l->header_timeout_ms
                  : t == HT_BODY ? l->body_timeout_ms
                  : t == HT_IDLE ? l->idle_timeout_ms
                                 : 0;
    c->timer = ms ? t : HT_NONE;
    c->deadline = uv_now(c->srv->tcp.loop) + ms;
}

/* Give back a grown input buffer once nothing in it is pending. */
static void hc_release_buf(rete_http_conn *c)
{
    if (c->len != 0)
        return;
    if (c->cap >= HTTP_BIG_BUF)
        c->srv->big_freed = true;
    rete_free(&c->buf);
    c->cap = 0;
}

static void hc_close(rete_http_conn *c)
{
    if (c->state == HC_CLOSING)
        return;
    bool was_stream = c->state == HC_STREAM;
    c->state = HC_CLOSING;
    hs_drop_all(&c->stream);
    if (was_stream && c->stream.cbs && c->stream.cbs->on_close) {
        const rete_http_stream_cbs *cbs = c->stream.cbs;
        c->stream.cbs = NULL;
        cbs->on_close(&c->stream);
    }
    rete_io_close(&c->io);
}

static void hc_write(rete_http_conn *c, const char *p, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    if (rete_io_write(&c->io, &b, 1) < 0)
        hc_close(c);
}

/* RFC 9110 §5.6.7 IMF-fixdate: clients (retectl check) compare clocks with it. */
static void http_date(char *out, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

void rete_http_respond(rete_http_req *req, int status, const char *content_type, const char *body,
                       size_t len, const char *extra_headers)
{
    rete_http_conn *c = req->conn;
    if (c->state != HC_HANDLING)
        return;
    char head[1024], date[64];
    http_date(date, sizeof(date));
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\ndate: %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n%s%s\r\n",
                     status, rete_http_reason(status), date, content_type ? content_type : "text/plain", len,
                     extra_headers ? extra_headers : "", c->keep_alive ? "" : "connection: close\r\n");
    uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned)n), uv_buf_init((char *)body, (unsigned)len)};
    if (rete_io_write(&c->io, bufs, len ? 2 : 1) < 0) {
        hc_close(c);
        return;
    }
    rete_free(&c->body);
    if (!c->keep_alive) {
        c->state = HC_CLOSING;
        rete_io_shutdown(&c->io);
        rete_io_close(&c->io);
        return;
    }
    /* Drop the request's bytes and go on with whatever follows. */
    memmove(c->buf, c->buf + c->consumed, c->len - c->consumed);
    c->len -= c->consumed;
    c->consumed = 0;
    c->state = HC_HEAD;
    c->admitted = false;
    hc_release_buf(c);
    hc_arm(c, c->len ? HT_HEADER : HT_IDLE);
    rete_io_read_start(&c->io);
    hc_process(c);
}

void rete_http_respond_json(rete_http_req *req, int status, const char *json)
{
    rete_http_respond(req, status, "application/json", json, strlen(json), NULL);
}

static rete_view find_param(rete_view q, const char *name)
{
    size_t nl = strlen(name);
    size_t i = 0;
    while (i < q.len) {
        size_t start = i;
        while (i < q.len && q.p[i] != '&')
            i++;
        rete_view pair = rete_view_make(q.p + start, i - start);
        if (pair.len >= nl && memcmp(pair.p, name, nl) == 0 && (pair.len == nl || pair.p[nl] == '='))
            return pair.len == nl ? rete_view_make(pair.p + nl, 0)
                                  : rete_view_make(pair.p + nl + 1, pair.len - nl - 1);
        i++;
    }
    return RETE_VIEW_NULL;
}

void rete_http_respond_jobj(rete_http_req *req, int status, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    rete_http_respond_json(req, status, s ? s : "{}");
    free(s);
    json_decref(obj);
}

rete_view rete_http_query_get(const rete_http_req *req, const char *name)
{
    return find_param(req->query, name);
}

rete_view rete_http_header_get(const rete_http_req *req, const char *name)
{
    rete_view n = rete_view_cstr(name);
    for (size_t i = 0; i < req->n_headers; i++)
        if (rete_view_ieq(req->headers[i].name, n))
            return req->headers[i].value;
    return RETE_VIEW_NULL;
}

/* Answer and close, whatever of the request is still unread (the server
 * refuses it without reading on). */
static void simple_error(rete_http_conn *c, int status, const char *msg, const char *extra)
{
    char body[320];
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", msg);
    if (n < 0 || (size_t)n >= sizeof(body))
        n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", rete_http_reason(status));
    char head[512];
    int h = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                     "%sconnection: close\r\n\r\n",
                     status, rete_http_reason(status), n, extra ? extra : "");
    hc_write(c, head, (size_t)h);
    if (c->state != HC_CLOSING)
        hc_write(c, body, (size_t)n);
    c->state = HC_CLOSING;
    rete_io_shutdown(&c->io);
    rete_io_close(&c->io);
}

static void refuse(rete_http_conn *c, rete_http_refusal why, int status, const char *msg,
                   const char *extra)
{
    c->srv->refused[why]++;
    rete_debug("http: refused %s: %d %s", c->peer_addr, status, msg);
    simple_error(c, status, msg, extra);
}

/* ---- streams ---- */

static void stream_lines(rete_http_conn *c)
{
    if (!c->buf)
        return; /* nothing received since the buffer was last emptied */
    size_t start = 0;
    while (c->state == HC_STREAM) {
        char *nl = memchr(c->buf + start, '\n', c->len - start);
        if (!nl)
            break;
        size_t n = (size_t)(nl - (c->buf + start));
        if (c->stream.cbs && c->stream.cbs->on_line)
            c->stream.cbs->on_line(&c->stream, c->buf + start, n);
        start += n + 1;
    }
    if (c->state != HC_STREAM)
        return;
    memmove(c->buf, c->buf + start, c->len - start);
    c->len -= start;
    if (c->len == 0) {
        /* An idle stream holds no input buffer (most reads are whole lines). */
        rete_free(&c->buf);
        c->cap = 0;
    }
    if (c->len > c->stream.max_line) {
        rete_warn("http: stream line from %s longer than %zu bytes; closing", c->peer_addr,
                  c->stream.max_line);
        hc_close(c);
    }
}

rete_http_stream *rete_http_stream_start(rete_http_req *req, const char *content_type,
                                         const rete_http_stream_cbs *cbs, void *owner,
                                         size_t max_line)
{
    rete_http_conn *c = req->conn;
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncache-control: no-store\r\n\r\n",
                     content_type);
    hc_write(c, head, (size_t)n);
    rete_free(&c->body);
    rete_free(&c->fields); /* a stream parses lines, not heads: 2 KB less per proxy */
    c->stream.conn = c;
    c->stream.cbs = cbs;
    c->stream.owner = owner;
    c->stream.max_line = max_line;
    memmove(c->buf, c->buf + c->consumed, c->len - c->consumed);
    c->len -= c->consumed;
    c->consumed = 0;
    c->state = HC_STREAM;
    c->timer = HT_NONE; /* an authenticated stream lives as long as the proxy */
    rete_io_read_start(&c->io);
    /* A client may send its first lines right behind the request head. */
    stream_lines(c);
    return &c->stream;
}

static size_t hs_ref_left(const hs_msg *m)
{
    return m->ref_len - (m->sent > m->copy_len ? m->sent - m->copy_len : 0);
}

/* Pop the oldest message and let go of what it points at. */
static void hs_pop(rete_http_stream *st)
{
    hs_msg *m = st->head;
    st->head = m->next;
    if (!st->head)
        st->tail = NULL;
    st->n_msgs--;
    st->copied -= m->copy_len;
    st->shared -= hs_ref_left(m);
    if (m->release)
        m->release(st->owner, m->arg);
    free(m);
}

static void hs_drop_all(rete_http_stream *st)
{
    while (st->head)
        hs_pop(st);
}

/* Hand queued bytes to the io, one chunk at a time, while the socket keeps
 * up: the next chunk is encrypted only once what the kernel did not take of
 * the previous one has gone (on_drain). So a stream holds at most one
 * chunk's ciphertext plus the io's low-water mark, whatever the size of its
 * messages. */
static void hs_pump(rete_http_conn *c)
{
    rete_http_stream *st = &c->stream;
    while (c->state == HC_STREAM && st->head && c->io.queued <= c->io.low_water) {
        hs_msg *m = st->head;
        uv_buf_t b[2];
        unsigned n = 0;
        size_t room = RETE_HTTP_STREAM_CHUNK, total = 0;
        if (m->sent < m->copy_len) {
            size_t k = m->copy_len - m->sent < room ? m->copy_len - m->sent : room;
            b[n++] = uv_buf_init(m->copy + m->sent, (unsigned)k);
            total += k;
        }
        size_t roff = m->sent + total - m->copy_len;
        if (total < room && roff < m->ref_len) {
            size_t k = m->ref_len - roff < room - total ? m->ref_len - roff : room - total;
            b[n++] = uv_buf_init((char *)m->ref + roff, (unsigned)k);
            st->shared -= k;
            total += k;
        }
        m->sent += total;
        /* TLS encrypts (and the io copies what the kernel refuses) before
         * this returns: the message may be released right after. */
        if (rete_io_write(&c->io, b, n) < 0) {
            hc_close(c);
            return;
        }
        if (m->sent == m->copy_len + m->ref_len)
            hs_pop(st);
    }
}

static void hc_on_drain(rete_io *io)
{
    rete_http_conn *c = io->owner;
    if (c->state == HC_STREAM)
        hs_pump(c);
}

void rete_http_stream_send_ref(rete_http_stream *st, const char *head, size_t head_len,
                               const char *body, size_t body_len, bool supersedes,
                               rete_http_release release, void *arg)
{
    rete_http_conn *c = st->conn;
    size_t copy_len = head_len + (release ? 0 : body_len);
    if (c->state != HC_STREAM) {
        if (release)
            release(st->owner, arg);
        return;
    }
    if (supersedes) {
        /* Keep only the message already on its way (a line cut short would
         * corrupt the stream); everything queued behind it is moot. */
        hs_msg *keep = st->head && st->head->sent ? st->head : NULL;
        if (keep) {
            st->head = keep->next;
            keep->next = NULL;
            st->n_msgs--;
            st->copied -= keep->copy_len;
            st->shared -= hs_ref_left(keep);
        }
        hs_drop_all(st);
        if (keep) {
            st->head = st->tail = keep;
            st->n_msgs = 1;
            st->copied = keep->copy_len;
            st->shared = hs_ref_left(keep);
        }
    }
    if (st->n_msgs >= RETE_HTTP_STREAM_MAX_MSGS ||
        st->copied + copy_len > RETE_HTTP_STREAM_MAX_COPIED) {
        /* The reader is too far behind: a proxy that reconnects gets one
         * whole snapshot, which costs less than queueing without end. */
        rete_warn("http: stream to %s (%s) is %zu messages, %zu bytes behind; closing it",
                  c->peer_addr, peer_id_of(c), st->n_msgs, st->copied + st->shared);
        c->srv->streams_behind++;
        if (release)
            release(st->owner, arg);
        hc_close(c);
        return;
    }
    hs_msg *m = rete_malloc(sizeof(*m) + copy_len);
    m->next = NULL;
    m->ref = release ? body : NULL;
    m->ref_len = release ? body_len : 0;
    m->release = release;
    m->arg = arg;
    m->sent = 0;
    m->copy_len = copy_len;
    if (head_len)
        memcpy(m->copy, head, head_len);
    if (!release && body_len)
        memcpy(m->copy + head_len, body, body_len);
    if (st->tail)
        st->tail->next = m;
    else
        st->head = m;
    st->tail = m;
    st->n_msgs++;
    st->copied += copy_len;
    st->shared += m->ref_len;
    hs_pump(c);
}

void rete_http_stream_send(rete_http_stream *st, const char *data, size_t len)
{
    rete_http_stream_send_ref(st, data, len, NULL, 0, false, NULL, NULL);
}

char *rete_http_json_line(json_t *obj, size_t *len)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!s)
        return NULL;
    size_t n = strlen(s);
    s = rete_realloc(s, n + 2);
    s[n] = '\n';
    s[n + 1] = '\0';
    *len = n + 1;
    return s;
}

void rete_http_stream_send_json(rete_http_stream *st, json_t *obj)
{
    size_t n;
    char *s = rete_http_json_line(obj, &n);
    if (s)
        rete_http_stream_send(st, s, n);
    free(s);
}

void rete_http_stream_close(rete_http_stream *st)
{
    rete_http_conn *c = st->conn;
    st->cbs = NULL; /* the owner asked: no on_close back */
    if (c->state == HC_STREAM) {
        c->state = HC_CLOSING;
        hs_drop_all(st);
        rete_io_shutdown(&c->io);
        rete_io_close(&c->io);
    }
}

void *rete_http_stream_owner(const rete_http_stream *st)
{
    return st->owner;
}

void rete_http_stream_set_tag(rete_http_stream *st, void *tag)
{
    st->tag = tag;
}

void *rete_http_stream_tag(const rete_http_stream *st)
{
    return st->tag;
}

const char *rete_http_stream_peer_id(const rete_http_stream *st)
{
    return peer_id_of(st->conn);
}

const char *rete_http_stream_peer_addr(const rete_http_stream *st)
{
    return st->conn->peer_addr;
}

const rete_cert_facts *rete_http_stream_peer_cert(const rete_http_stream *st)
{
    return st->conn->has_peer_cert ? &st->conn->peer_cert : NULL;
}

/* ---- requests ---- */

/* What the admission hook and the handler see of a parsed head: views into
 * the connection's buffer, valid while it handles the request. */
static void req_head(rete_http_req *q, rete_http_conn *c, const rete_h1_message *m)
{
    q->method = m->method;
    ptrdiff_t qm = rete_view_find(m->target, '?');
    q->path = qm >= 0 ? rete_view_make(m->target.p, (size_t)qm) : m->target;
    q->query = qm >= 0 ? rete_view_sub(m->target, (size_t)qm + 1, m->target.len) : RETE_VIEW_NULL;
    q->headers = c->fields;
    q->n_headers = m->n_headers;
    q->peer_id = peer_id_of(c);
    q->peer_addr = c->peer_addr;
    q->peer_cert = c->has_peer_cert ? &c->peer_cert : NULL;
    q->conn = c;
}

static void hc_process(rete_http_conn *c)
{
    if (c->state != HC_HEAD || c->len == 0)
        return;
    rete_h1_limits lim = {8192, HTTP_MAX_HEAD, HTTP_MAX_FIELDS};
    rete_h1_message m = {0};
    if (!c->fields)
        c->fields = rete_malloc(HTTP_MAX_FIELDS * sizeof(*c->fields));
    m.headers = c->fields;
    rete_h1_error err = {0};
    int r = rete_h1_parse_request(c->buf, c->len, &lim, &m, &err);
    if (r == RETE_EAGAIN)
        return;
    if (r < 0) {
        refuse(c, RETE_HTTP_REFUSED_BAD_REQUEST, err.status ? err.status : 400,
               err.reason ? err.reason : "bad request", NULL);
        return;
    }
    if (m.body == RETE_H1_BODY_CHUNKED) {
        refuse(c, RETE_HTTP_REFUSED_BAD_REQUEST, 411, "send a content-length", NULL);
        return;
    }
    if (!m.target.len || m.target.p[0] != '/') {
        /* origin-form only: every endpoint is a path (fuzz_reted_http found
         * "POST ?api/v1/apply" reaching a handler with an empty path) */
        refuse(c, RETE_HTTP_REFUSED_BAD_REQUEST, 400, "request-target must be a path", NULL);
        return;
    }
    uint64_t body_len = m.body == RETE_H1_BODY_LENGTH ? m.content_length : 0;
    rete_http_req *q = &c->req;
    memset(q, 0, sizeof(*q));
    if (!c->admitted) {
        /* The head decides: a request without its credential, to no
         * endpoint, or over its route's bound is refused before one more
         * byte of its body is read (and the rest is never read). */
        req_head(q, c, &m);
        rete_http_admit a = {.max_body = c->srv->max_body};
        if (c->srv->admit)
            c->srv->admit(q, c->srv->arg, &a);
        if (a.status) {
            refuse(c, a.reason, a.status, a.error ? a.error : rete_http_reason(a.status), a.extra_headers);
            return;
        }
        if (body_len > a.max_body) {
            char msg[128];
            snprintf(msg, sizeof(msg), "request body of %llu bytes is over this endpoint's limit of %zu",
                     (unsigned long long)body_len, a.max_body);
            refuse(c, RETE_HTTP_REFUSED_BODY_TOO_LARGE, 413, msg, NULL);
            return;
        }
        c->admitted = true;
        c->max_body = a.max_body;
        if ((uint64_t)(c->len - (size_t)r) < body_len) {
            /* Room for exactly this request: no doubling past it. */
            size_t want = (size_t)r + (size_t)body_len;
            if (c->cap < want) {
                c->buf = rete_realloc(c->buf, want);
                c->cap = want;
            }
            hc_arm(c, HT_BODY);
        }
    }
    if ((uint64_t)(c->len - (size_t)r) < body_len)
        return; /* wait for the whole body */
    c->consumed = (size_t)r + (size_t)body_len;
    c->keep_alive = (m.flags & RETE_H1_F_KEEP_ALIVE) != 0;
    c->body = rete_malloc((size_t)body_len + 1);
    memcpy(c->body, c->buf + r, (size_t)body_len);
    c->body[body_len] = '\0';
    req_head(q, c, &m);
    q->body = c->body;
    q->body_len = (size_t)body_len;
    c->state = HC_HANDLING;
    c->timer = HT_NONE; /* our own handler's time is not the client's */
    rete_io_read_stop(&c->io); /* the views point into buf: keep it still */
    c->srv->handler(q, c->srv->arg);
}

static void hc_on_data(rete_io *io, const char *data, size_t len)
{
    rete_http_conn *c = io->owner;
    /* Before admission only a head (and what came with it in one read)
     * is held; after it, that request's body bound. */
    size_t bound = HTTP_MAX_HEAD + (c->admitted ? c->max_body : RETE_IO_BUF);
    if (c->state == HC_STREAM)
        bound = c->stream.max_line + RETE_IO_BUF;
    if (c->state == HC_HEAD && c->timer == HT_IDLE)
        hc_arm(c, HT_HEADER); /* a next request began: its head has header_timeout */
    if (c->len + len > bound) {
        if (c->state == HC_STREAM)
            hc_close(c);
        else
            refuse(c, RETE_HTTP_REFUSED_BODY_TOO_LARGE, 413, "request too large", NULL);
        return;
    }
    RETE_GROW(c->buf, c->cap, c->len + len, 4096);
    memcpy(c->buf + c->len, data, len);
    c->len += len;
    if (c->state == HC_STREAM)
        stream_lines(c);
    else
        hc_process(c);
}

static void hc_on_eof(rete_io *io)
{
    rete_http_conn *c = io->owner;
    if (c->state == HC_HANDLING) {
        c->keep_alive = false; /* answer, then close */
        return;
    }
    hc_close(c);
}

static void hc_on_error(rete_io *io, const char *why)
{
    (void)why;
    hc_close(io->owner);
}

static void hc_on_ready(rete_io *io, int status, const char *why)
{
    rete_http_conn *c = io->owner;
    if (status < 0) {
        rete_debug("http: TLS handshake with %s failed: %s", c->peer_addr, why ? why : "");
        hc_close(c);
        return;
    }
    c->tls_ready = true;
    char id[256]; /* the bound it had as a fixed array: a longer ID counts as none */
    if (rete_tls_peer_spiffe_id(io->tls, id, sizeof(id)) == RETE_OK && id[0])
        c->peer_id = rete_strdup(id);
    /* What the certificate says, kept with the connection: a proxy's
     * claims about its certificate are not taken (docs/control-plane.md). */
    c->has_peer_cert = c->peer_id && rete_tls_peer_cert_facts(io->tls, &c->peer_cert) == RETE_OK;
    /* Nothing reads the peer's certificates again: what they hold beyond
     * this goes (tls.h, rete_tls_session_shed_peer_certs). */
    if (c->peer_id)
        (void)rete_tls_session_shed_peer_certs(io->tls);
}

/* ---- per-source counts ---- */

static uint8_t source_key(const struct sockaddr_storage *ss, uint8_t out[16])
{
    if (ss->ss_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)ss)->sin_addr, 4);
        return 4;
    }
    if (ss->ss_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
        return 16;
    }
    return 0;
}

static size_t source_bucket(const uint8_t *k, uint8_t len)
{
    return (size_t)(rete_fnv1a(RETE_FNV1A_INIT, k, len) % HTTP_SOURCE_BUCKETS);
}

/* The source's entry, made when absent (count 0). */
static http_source *source_get(rete_http_server *s, const uint8_t *k, uint8_t len)
{
    http_source **b = &s->sources[source_bucket(k, len)];
    for (http_source *e = *b; e; e = e->next)
        if (e->len == len && memcmp(e->addr, k, len) == 0)
            return e;
    http_source *e = rete_calloc(1, sizeof(*e));
    e->len = len;
    memcpy(e->addr, k, len);
    e->next = *b;
    *b = e;
    return e;
}

static void source_put(rete_http_server *s, http_source *e)
{
    if (--e->count)
        return;
    for (http_source **pp = &s->sources[source_bucket(e->addr, e->len)]; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            free(e);
            return;
        }
}

static void server_maybe_free(rete_http_server *s)
{
    if (s->handles_open || s->conns)
        return;
    for (size_t i = 0; i < HTTP_SOURCE_BUCKETS; i++)
        while (s->sources[i]) {
            http_source *e = s->sources[i];
            s->sources[i] = e->next;
            free(e);
        }
    free(s);
}

static void hc_on_close(rete_io *io)
{
    rete_http_conn *c = io->owner;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    hs_drop_all(&c->stream);
    rete_http_server *srv = c->srv;
    if (c->source) {
        srv->n_conns--;
        source_put(srv, c->source);
    }
    if (c->cap >= HTTP_BIG_BUF)
        srv->big_freed = true;
    free(c->buf);
    free(c->peer_id);
    free(c->body);
    free(c->fields);
    free(c);
    server_maybe_free(srv);
}

/* one io callback table per owner of a connection (io.h): the same shape by design. */
static const rete_io_cbs hc_cbs = {
    .on_data = hc_on_data,
    .on_eof = hc_on_eof,
    .on_error = hc_on_error,
    .on_ready = hc_on_ready,
    .on_drain = hc_on_drain,
    .on_close = hc_on_close,
};

/* Over a cap the connection is accepted (that is how to learn its source,
 * and a connection left in the backlog would stall the listener) and
 * closed at once: a plaintext client is told 503 first. */
static void refuse_conn(rete_http_conn *c, rete_http_refusal why)
{
    rete_http_server *s = c->srv;
    s->refused[why]++;
    c->state = HC_CLOSING;
    if (!s->tls) {
        static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                                   "content-length: 35\r\nconnection: close\r\n\r\n"
                                   "{\"error\":\"too many connections\"}\n";
        uv_buf_t b = uv_buf_init((char *)busy, sizeof(busy) - 1);
        (void)uv_try_write((uv_stream_t *)&c->io.tcp, &b, 1);
    }
    rete_io_close(&c->io);
}

static void on_connection(uv_stream_t *server, int status)
{
    rete_http_server *s = server->data;
    if (status < 0) {
        /* EMFILE/ENFILE: libuv has already accepted and closed what was
         * pending (its reserve descriptor), so the loop does not spin. */
        s->refused[RETE_HTTP_REFUSED_ACCEPT_ERROR]++;
        rete_warn("http: accept failed: %s", uv_strerror(status));
        return;
    }
    if (s->closing)
        return;
    rete_http_conn *c = rete_calloc(1, sizeof(*c));
    c->srv = s;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    if (rete_io_accept(&c->io, s->iol, server, &hc_cbs, c) < 0) {
        rete_io_close(&c->io);
        return;
    }
    rete_io_peer(&c->io, c->peer_addr, sizeof(c->peer_addr));
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    uint8_t key[16];
    uint8_t klen = 0;
    if (uv_tcp_getpeername(&c->io.tcp, (struct sockaddr *)&ss, &sl) == 0)
        klen = source_key(&ss, key);
    if (s->lim.max_conns && s->n_conns >= s->lim.max_conns) {
        refuse_conn(c, RETE_HTTP_REFUSED_CONNECTION_LIMIT);
        return;
    }
    http_source *src = source_get(s, key, klen);
    if (s->lim.max_conns_per_source && src->count >= s->lim.max_conns_per_source) {
        refuse_conn(c, RETE_HTTP_REFUSED_SOURCE_LIMIT);
        return;
    }
    src->count++;
    s->n_conns++;
    c->source = src;
    hc_arm(c, HT_HEADER); /* the TLS handshake and the first head */
    if (s->tls) {
        rete_tls_session *t = rete_tls_session_new_server(s->tls);
        if (!t) {
            rete_io_close(&c->io);
            return;
        }
        rete_io_start_tls(&c->io, t, NULL, 0);
    }
    rete_io_read_start(&c->io);
}

/* libuv runs close callbacks newest first: the listener's may come before
 * those of the connections closed with it, which still unlink themselves
 * from the server. Whichever comes last frees it. */
static void server_closed(uv_handle_t *h)
{
    rete_http_server *s = h->data;
    s->handles_open--;
    server_maybe_free(s);
}

/* Every few hundred ms: close what overran its deadline, and give the
 * memory of big request buffers back (glibc keeps it resident otherwise:
 * 300 x 1 MB bodies left 320 MB behind). One pass over the connections;
 * there are at most max_conns. */
static void on_sweep(uv_timer_t *t)
{
    rete_http_server *s = t->data;
    uint64_t now = uv_now(t->loop);
    for (rete_http_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state != HC_HEAD || c->timer == HT_NONE || now < c->deadline)
            continue;
        switch (c->timer) {
        case HT_IDLE:
            s->idle_closed++;
            c->timer = HT_NONE;
            hc_close(c);
            break;
        case HT_HEADER:
            c->timer = HT_NONE;
            if (c->len == 0 || (s->tls && !c->tls_ready)) {
                /* Nothing to answer (no request, or no TLS to answer in). */
                s->refused[RETE_HTTP_REFUSED_HEADER_TIMEOUT]++;
                hc_close(c);
            } else {
                refuse(c, RETE_HTTP_REFUSED_HEADER_TIMEOUT, 408, "request head not received in time",
                       NULL);
            }
            break;
        case HT_BODY:
            c->timer = HT_NONE;
            refuse(c, RETE_HTTP_REFUSED_BODY_TIMEOUT, 408, "request body not received in time", NULL);
            break;
        case HT_NONE:
        default:
            break;
        }
    }
    if (s->big_freed) {
        s->big_freed = false;
        rete_alloc_trim();
    }
}

static void sweep_start(rete_http_server *s)
{
    uint32_t ms = 1000;
    const uint32_t t[3] = {s->lim.header_timeout_ms, s->lim.body_timeout_ms, s->lim.idle_timeout_ms};
    for (size_t i = 0; i < 3; i++)
        if (t[i] && t[i] / 4 < ms)
            ms = t[i] / 4;
    if (ms < 50)
        ms = 50;
    uv_timer_start(&s->sweep, on_sweep, ms, ms);
}

void rete_http_server_set_limits(rete_http_server *s, const rete_http_limits *lim)
{
    s->lim = *lim;
    sweep_start(s);
}

void rete_http_server_set_admit(rete_http_server *s, rete_http_admit_fn admit)
{
    s->admit = admit;
}

void rete_http_server_stats_get(const rete_http_server *s, rete_http_server_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->conns = s->n_conns;
    memcpy(out->refused, s->refused, sizeof(out->refused));
    out->idle_closed = s->idle_closed;
}

/* Connections the kernel may queue before reted accepts them (capped by
 * net.core.somaxconn). Every proxy reconnects within a second after a
 * replica restarts: with nginx's 511, 10,000 proxies overflowed the queue,
 * the dropped SYNs were retried by the clients' kernels after 1, 3, 7, 15 s
 * and the reconnect storm took minutes. */
#define RETED_LISTEN_BACKLOG 4096

rete_http_server *rete_http_listen(rete_io_loop *iol, const char *host, uint16_t port,
                                   rete_tls_ctx *tls, size_t max_body, rete_http_handler handler,
                                   void *arg, rete_error *err)
{
    struct sockaddr_storage ss;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        rete_error_set(err, RETE_EINVAL, "bad listen address %s", host);
        return NULL;
    }
    rete_http_server *s = rete_calloc(1, sizeof(*s));
    s->iol = iol;
    s->tls = tls;
    s->max_body = max_body;
    s->handler = handler;
    s->arg = arg;
    uv_tcp_init(iol->loop, &s->tcp);
    s->tcp.data = s;
    uv_timer_init(iol->loop, &s->sweep);
    s->sweep.data = s;
    s->handles_open = 2;
    sweep_start(s);
    int r = uv_tcp_bind(&s->tcp, (struct sockaddr *)&ss, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&s->tcp, RETED_LISTEN_BACKLOG, on_connection);
    if (r != 0) {
        rete_error_set(err, RETE_EIO, "cannot listen on %s:%u: %s", host, port, uv_strerror(r));
        uv_close((uv_handle_t *)&s->sweep, server_closed);
        uv_close((uv_handle_t *)&s->tcp, server_closed);
        return NULL;
    }
    return s;
}


void rete_http_server_set_tls(rete_http_server *s, rete_tls_ctx *tls)
{
    s->tls = tls;
}

void rete_http_server_stream_stats(const rete_http_server *s, rete_http_stream_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->closed_behind = s->streams_behind;
    for (const rete_http_conn *c = s->conns; c; c = c->next) {
        if (c->state != HC_STREAM)
            continue;
        size_t held = c->stream.copied + c->io.queued;
        out->streams++;
        out->queued_msgs += c->stream.n_msgs;
        out->buffered_bytes += held;
        out->shared_bytes += c->stream.shared;
        if (held > out->max_buffered_bytes)
            out->max_buffered_bytes = held;
    }
}

void rete_http_server_close(rete_http_server *s)
{
    s->closing = true;
    for (rete_http_conn *c = s->conns; c; c = c->next)
        hc_close(c);
    uv_timer_stop(&s->sweep);
    uv_close((uv_handle_t *)&s->sweep, server_closed);
    uv_close((uv_handle_t *)&s->tcp, server_closed);
}
