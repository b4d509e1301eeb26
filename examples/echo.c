/* rete-echo: the sample HTTP service behind every system test, the demo and
 * the benchmarks.
 *
 * One libuv loop. Each accepted connection starts in a detection phase: the
 * HTTP/2 connection preface (RFC 9113 §3.4) selects the HTTP/2 codec
 * (nghttp2), anything else the HTTP/1.1 codec (the project's h1 parser). The
 * two codecs are small vtables (`proto_ops`) over a shared request model
 * (`req`): head -> body -> (optional delay) -> response. Over HTTP/2, a
 * request with content-type application/grpc is a gRPC unary echo (see
 * grpc_head_done).
 *
 * Bounds: a connection reads into one fixed 64 KiB buffer; request bodies are
 * consumed as they arrive (counted and hashed, never stored) except when
 * echoed, and echoing stops reading while more than 256 KiB wait in the write
 * queue (HTTP/1.1) or holds back flow-control credit (HTTP/2). `?size=` bodies
 * are written from one static pattern buffer, never allocated. */
#include "alloc.h"
#include "h1_parse.h"
#include "log.h"
#include "result.h"
#include "view.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#define ECHO_RBUF_CAP 65536u        /* per-connection read buffer = max request head */
#define ECHO_WQ_HIGH (256u * 1024u) /* stop producing above this many queued bytes */
#define ECHO_WBUF_CAP 65536u        /* pooled write buffer size */
#define ECHO_WBUF_POOL 64u          /* pooled write buffers kept for reuse */
#define ECHO_MAX_SIZE (1ull << 30)  /* ?size= cap: 1 GiB */
#define ECHO_MAX_DELAY_MS 600000ull /* ?delay= cap: 10 minutes */
#define ECHO_MAX_EXTRA 32u          /* ?header= and ?trailer= entries per request */
#define ECHO_CALL_TIMEOUT_MS 5000   /* ?call=: connect, send, and the whole answer, each */
#define ECHO_CALL_MAX 65536u        /* ?call=: bytes of the answer kept */
#define ECHO_MAX_LISTEN 16u
#define ECHO_H1_MAX_HEADERS 100u
#define ECHO_H2_MAX_HEADER_BYTES 65536u /* same bound as the HTTP/1.1 head */
#define ECHO_H2_ECHO_BUF 65536u         /* >= the stream's initial window (65535) */
#define ECHO_H2_CONN_WINDOW (1 << 20)
#define ECHO_PATTERN_PERIOD 16u
#define ECHO_LINGER_MS 2000u /* lingering close after an error response */
#define ECHO_LINGER_BYTES (1u << 20)
#define ECHO_NO_SIZE UINT64_MAX

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN (sizeof(h2_preface) - 1)

/* ---------------------------------------------------------------- config */

typedef struct listener {
    uv_tcp_t tcp;
    char addr[64]; /* "ip:port" as bound, reported as "instance" */
} listener;

static struct {
    const char *name;
    const char *version;
    uint64_t latency_ms;
    double failure_rate;
    uint64_t seed;
    bool quiet;
    size_t max_conns;
    listener listeners[ECHO_MAX_LISTEN];
    size_t n_listeners;
} cfg = {
    .name = "echo",
    .version = "v1",
    .seed = 1,
    .max_conns = 10000,
};

static uv_loop_t *loop;
static uv_signal_t sig_term, sig_int;
static nghttp2_session_callbacks *h2_callbacks;
static nghttp2_option *h2_option;
static uint64_t prng_state;
/* `?size=` bodies come from here: a 16-byte period so any offset maps into it. */
static char pattern[ECHO_WBUF_CAP + ECHO_PATTERN_PERIOD];

/* splitmix64: deterministic failure injection from --seed. */
static double prng_next(void)
{
    uint64_t z = (prng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

/* ---------------------------------------------------------------- types */

typedef struct conn conn;
typedef struct req req;

/* One codec. Connection-level hooks plus the two request-level moments that
 * differ between HTTP/1.1 and HTTP/2: starting the response, and the end of
 * an echoed request body once its response has started. */
typedef struct proto_ops {
    const char *name;          /* "HTTP/1.1" | "HTTP/2", reported as "protocol" */
    void (*on_read)(conn *c);  /* bytes in c->rbuf[rstart, rend) */
    void (*on_drain)(conn *c); /* a write completed; queue may have room */
    void (*on_close)(conn *c); /* release codec state; requests are freed by conn_close */
    void (*start_response)(req *r);
    void (*echo_end)(req *r);
} proto_ops;

typedef struct extra_field {
    char *name; /* lower-cased */
    char *value;
} extra_field;

enum req_state { REQ_HEAD, REQ_BODY, REQ_WAIT, REQ_RESP, REQ_DONE };
enum resp_kind { RESP_JSON, RESP_SIZE, RESP_ECHO };

/* A request and its response. HTTP/1.1 keeps one per connection and resets it
 * between requests; HTTP/2 has one per stream. Freed only in the close
 * callback of its timer, so a pending delay can never fire on freed memory. */
struct req {
    conn *c;
    req *prev, *next; /* c->reqs */
    uv_timer_t timer;
    /* Everything from here on is per-request state, cleared by req_reset. */
    int32_t stream_id;
    enum req_state state;
    enum resp_kind kind;
    bool is_head, echo, body_done, resp_started, skip_headers, no_body;
    bool grpc; /* HTTP/2 with content-type application/grpc[+...|;...] */
    int status;
    const char *error; /* static; reported in the JSON when set */
    uint64_t delay_ms, size;
    int ready_set;          /* /ready?set=0|1: 1 + the value asked, 0 none */
    char *method, *path, *query, *authority;
    json_t *headers;
    char *call;     /* ?call=HOST:PORT/PATH, NULL: none */
    json_t *called; /* what the call answered */
    size_t header_bytes;
    uint64_t body_bytes;
    EVP_MD_CTX *sha;
    char sha_hex[65]; /* set by req_build_json; empty until then */
    extra_field extra[ECHO_MAX_EXTRA], trailer[ECHO_MAX_EXTRA];
    size_t n_extra, n_trailer;
    /* response body source */
    char *json;
    size_t json_len, json_off;
    uint64_t size_off;
    /* HTTP/1.1 */
    int minor;
    bool keep_alive, te_trailers, resp_chunked;
    rete_h1_body body_kind;
    uint64_t body_left;
    rete_h1_chunked chunked;
    /* HTTP/2 echo: bytes received but not yet sent, bounded by the stream window */
    char *ebuf;
    size_t elen;
    bool deferred;
};

struct conn {
    uv_tcp_t tcp;      /* first: the handle's data points back here */
    conn *prev, *next; /* all connections, for shutdown */
    const listener *lst;
    const proto_ops *ops;
    char peer[64];
    size_t refs; /* the tcp handle + every req not yet freed */
    size_t wq_bytes;
    bool reading, closing, eof, close_when_flushed;
    bool in_process; /* h1_process or nghttp2_session_mem_recv is on the stack */
    bool linger;     /* after the last write: shut down, drain input, then close */
    bool lingering, linger_timer_open;
    size_t linger_bytes;
    uv_timer_t linger_timer;
    uv_shutdown_t shutdown;
    req *reqs;
    req *h1; /* HTTP/1.1: the one request in progress */
    nghttp2_session *h2;
    size_t rstart, rend;
    char rbuf[ECHO_RBUF_CAP];
};

typedef struct wbuf {
    uv_write_t w;
    conn *c;
    struct wbuf *next_free;
    size_t len, cap, queued;
    uv_buf_t iov[4];
    unsigned niov;
    char *heap; /* owned extra payload (a JSON document), freed on completion */
    char data[];
} wbuf;

static conn *all_conns;
static size_t n_conns;
static wbuf *wbuf_free_list;
static size_t wbuf_free_count;
static bool shutting_down;

static const proto_ops h1_ops, h2_ops, detect_ops;

/* ---------------------------------------------------------------- writes */

/* A write buffer with at least `need` bytes of room. Buffers of the standard
 * size are recycled so a busy connection does not malloc per write. */
static wbuf *wbuf_get(conn *c, size_t need)
{
    wbuf *b;
    if (need <= ECHO_WBUF_CAP && wbuf_free_list) {
        b = wbuf_free_list;
        wbuf_free_list = b->next_free;
        wbuf_free_count--;
    } else {
        size_t cap = need <= ECHO_WBUF_CAP ? ECHO_WBUF_CAP : need;
        b = rete_malloc(sizeof(*b) + cap);
        b->cap = cap;
    }
    b->c = c;
    b->len = 0;
    b->niov = 0;
    b->heap = NULL;
    b->next_free = NULL;
    return b;
}

static void wbuf_put(wbuf *b)
{
    free(b->heap);
    b->heap = NULL;
    if (b->cap == ECHO_WBUF_CAP && wbuf_free_count < ECHO_WBUF_POOL) {
        b->next_free = wbuf_free_list;
        wbuf_free_list = b;
        wbuf_free_count++;
    } else {
        free(b);
    }
}

static size_t wbuf_room(const wbuf *b)
{
    return b->cap - b->len;
}

/* Append formatted text; false when it did not fit (the buffer is sized by
 * the caller from the inputs, so that is a bug, not a peer's doing). */
static bool wbuf_printf(wbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool wbuf_printf(wbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, wbuf_room(b), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= wbuf_room(b))
        return false;
    b->len += (size_t)n;
    return true;
}

static void wbuf_append(wbuf *b, const void *p, size_t n)
{
    if (n > wbuf_room(b))
        abort(); /* callers size buffers from their inputs */
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void conn_close(conn *c);
static void conn_end(conn *c);
static void conn_update_reading(conn *c);

static void on_write(uv_write_t *w, int status)
{
    wbuf *b = (wbuf *)w;
    conn *c = b->c;
    c->wq_bytes -= b->queued;
    wbuf_put(b);
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->close_when_flushed && c->wq_bytes == 0) {
        conn_end(c);
        return;
    }
    c->ops->on_drain(c);
    conn_update_reading(c);
}

/* Queue b: its own data first (when any), then the extra iovecs it carries. */
static void conn_write(conn *c, wbuf *b)
{
    uv_buf_t iov[5];
    unsigned n = 0;
    size_t total = 0;
    if (b->len)
        iov[n++] = uv_buf_init(b->data, (unsigned)b->len);
    for (unsigned i = 0; i < b->niov; i++)
        iov[n++] = b->iov[i];
    for (unsigned i = 0; i < n; i++)
        total += iov[i].len;
    if (c->closing || n == 0) {
        wbuf_put(b);
        return;
    }
    b->queued = total;
    c->wq_bytes += total;
    int rc = uv_write(&b->w, (uv_stream_t *)&c->tcp, iov, n, on_write);
    if (rc < 0) {
        c->wq_bytes -= total;
        wbuf_put(b);
        conn_close(c);
    }
}

/* ---------------------------------------------------------------- requests */

static void req_on_timer_close(uv_handle_t *h);
static void conn_unref(conn *c);

static req *req_new(conn *c)
{
    req *r = rete_calloc(1, sizeof(*r));
    r->c = c;
    r->size = ECHO_NO_SIZE;
    r->status = 200;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    r->next = c->reqs;
    if (c->reqs)
        c->reqs->prev = r;
    c->reqs = r;
    c->refs++;
    return r;
}

static void extra_clear(extra_field *f, size_t *n)
{
    for (size_t i = 0; i < *n; i++) {
        rete_free(&f[i].name);
        rete_free(&f[i].value);
    }
    *n = 0;
}

/* Drop everything a request owns but keep the struct and its timer, so a
 * keep-alive HTTP/1.1 connection reuses them. */
static void req_reset(req *r)
{
    rete_free(&r->method);
    rete_free(&r->path);
    rete_free(&r->query);
    rete_free(&r->call);
    json_decref(r->called);
    r->called = NULL;
    rete_free(&r->authority);
    rete_free(&r->json);
    rete_free(&r->ebuf);
    json_decref(r->headers);
    r->headers = NULL;
    if (r->sha)
        EVP_MD_CTX_free(r->sha);
    r->sha = NULL;
    extra_clear(r->extra, &r->n_extra);
    extra_clear(r->trailer, &r->n_trailer);
    rete_h1_chunked_free(&r->chunked);
    memset((char *)r + offsetof(req, stream_id), 0, sizeof(*r) - offsetof(req, stream_id));
    r->size = ECHO_NO_SIZE;
    r->status = 200;
}

/* Unlink and close the timer; the memory goes in the close callback. */
static void req_free(req *r)
{
    conn *c = r->c;
    if (r->prev)
        r->prev->next = r->next;
    else if (c->reqs == r)
        c->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    if (c->h1 == r)
        c->h1 = NULL;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, req_on_timer_close);
}

static void req_on_timer_close(uv_handle_t *h)
{
    req *r = h->data;
    conn *c = r->c;
    req_reset(r);
    free(r);
    conn_unref(c);
}

static bool is_tchar(char ch)
{
    /* token = 1*tchar (RFC 9110 §5.6.2) */
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* A JSON string from bytes that may not be UTF-8: jansson refuses those, so
 * fall back to a copy with every non-ASCII byte replaced by '?'. */
static json_t *jstr(const char *p, size_t n)
{
    json_t *s = json_stringn(p, n);
    if (s)
        return s;
    char *tmp = rete_malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        tmp[i] = (unsigned char)p[i] < 0x80 ? p[i] : '?';
    s = json_stringn(tmp, n);
    free(tmp);
    return s;
}

/* Record one request header: lower-cased name, repeats joined with ", ". */
static void req_add_header(req *r, rete_view name, rete_view value)
{
    if (r->skip_headers)
        return;
    if (!r->headers)
        r->headers = json_object();
    char lname[256];
    if (name.len >= sizeof(lname))
        return; /* bounded; such names are not worth reporting */
    for (size_t i = 0; i < name.len; i++)
        lname[i] = rete_ascii_lower(name.p[i]);
    lname[name.len] = '\0';
    json_t *old = json_object_get(r->headers, lname);
    if (old && json_is_string(old)) {
        size_t ol = json_string_length(old);
        char *joined = rete_malloc(ol + 2 + value.len);
        memcpy(joined, json_string_value(old), ol);
        memcpy(joined + ol, ", ", 2);
        memcpy(joined + ol + 2, value.p, value.len);
        json_t *s = jstr(joined, ol + 2 + value.len);
        free(joined);
        json_object_set_new(r->headers, lname, s);
    } else {
        json_object_set_new(r->headers, lname, jstr(value.p, value.len));
    }
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decode (and '+' -> space) into out, which has room for v.len + 1. */
static size_t url_decode(rete_view v, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] == '%' && i + 2 < v.len && hexval(v.p[i + 1]) >= 0 && hexval(v.p[i + 2]) >= 0) {
            out[n++] = (char)(hexval(v.p[i + 1]) * 16 + hexval(v.p[i + 2]));
            i += 2;
        } else if (v.p[i] == '+') {
            out[n++] = ' ';
        } else {
            out[n++] = v.p[i];
        }
    }
    out[n] = '\0';
    return n;
}

/* Fields the echo service must not let a query parameter set: they would
 * break the message framing or are connection-specific (RFC 9110 §7.6.1). */
static bool field_is_reserved(rete_view name)
{
    static const rete_view reserved[] = {
        RETE_VIEW_LIT("content-length"), RETE_VIEW_LIT("transfer-encoding"),
        RETE_VIEW_LIT("connection"),     RETE_VIEW_LIT("keep-alive"),
        RETE_VIEW_LIT("upgrade"),        RETE_VIEW_LIT("te"),
        RETE_VIEW_LIT("trailer"),        RETE_VIEW_LIT("proxy-connection"),
    };
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (rete_view_ieq(name, reserved[i]))
            return true;
    return false;
}

/* "Name:Value" -> a validated, lower-cased field. */
static bool parse_field_param(rete_view v, extra_field *f)
{
    ptrdiff_t colon = rete_view_find(v, ':');
    if (colon <= 0)
        return false;
    rete_view name = rete_view_sub(v, 0, (size_t)colon);
    rete_view value = rete_view_trim_ows(rete_view_sub(v, (size_t)colon + 1, v.len));
    for (size_t i = 0; i < name.len; i++)
        if (!is_tchar(name.p[i]))
            return false;
    for (size_t i = 0; i < value.len; i++) {
        unsigned char ch = (unsigned char)value.p[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return false; /* no CR/LF/NUL: no response splitting */
    }
    if (field_is_reserved(name))
        return false;
    f->name = rete_strndup(name.p, name.len);
    for (size_t i = 0; i < name.len; i++)
        f->name[i] = rete_ascii_lower(f->name[i]);
    f->value = rete_strndup(value.p, value.len);
    return true;
}

/* Per-request switches from the query string. A bad value turns the request
 * into a 400 that says which parameter was wrong. */
static void req_parse_query(req *r)
{
    if (!r->query || !*r->query)
        return;
    rete_view q = rete_view_cstr(r->query);
    char *val = rete_malloc(q.len + 1);
    while (q.len) {
        ptrdiff_t amp = rete_view_find(q, '&');
        rete_view pair = amp < 0 ? q : rete_view_sub(q, 0, (size_t)amp);
        q = amp < 0 ? RETE_VIEW_NULL : rete_view_sub(q, (size_t)amp + 1, q.len);
        ptrdiff_t eq = rete_view_find(pair, '=');
        rete_view key = eq < 0 ? pair : rete_view_sub(pair, 0, (size_t)eq);
        rete_view raw = eq < 0 ? RETE_VIEW_NULL : rete_view_sub(pair, (size_t)eq + 1, pair.len);
        size_t vlen = url_decode(raw, val);
        rete_view v = rete_view_make(val, vlen);
        uint64_t n;
        if (rete_view_eq(key, RETE_VIEW_LIT("delay"))) {
            if (!rete_view_to_u64(v, &n) || n > ECHO_MAX_DELAY_MS)
                r->error = "bad ?delay (0..600000 ms)";
            else
                r->delay_ms = n;
        } else if (rete_view_eq(key, RETE_VIEW_LIT("status"))) {
            if (!rete_view_to_u64(v, &n) || n < 200 || n > 599)
                r->error = "bad ?status (200..599)";
            else
                r->status = (int)n;
        } else if (rete_view_eq(key, RETE_VIEW_LIT("size"))) {
            if (!rete_view_to_u64(v, &n) || n > ECHO_MAX_SIZE)
                r->error = "bad ?size (0..1073741824)";
            else
                r->size = n;
        } else if (rete_view_eq(key, RETE_VIEW_LIT("call"))) {
            rete_free(&r->call);
            r->call = rete_strndup(v.p, v.len);
        } else if (rete_view_eq(key, RETE_VIEW_LIT("set"))) {
            if (rete_view_eq(v, RETE_VIEW_LIT("0")) || rete_view_eq(v, RETE_VIEW_LIT("1")))
                r->ready_set = 1 + (v.p[0] == '1');
            else
                r->error = "bad ?set (0 or 1)";
        } else if (rete_view_eq(key, RETE_VIEW_LIT("echo"))) {
            r->echo = rete_view_eq(v, RETE_VIEW_LIT("1")) || rete_view_eq(v, RETE_VIEW_LIT("true"));
        } else if (rete_view_eq(key, RETE_VIEW_LIT("header"))) {
            if (r->n_extra >= ECHO_MAX_EXTRA || !parse_field_param(v, &r->extra[r->n_extra]))
                r->error = "bad ?header (Name:Value, at most 32)";
            else
                r->n_extra++;
        } else if (rete_view_eq(key, RETE_VIEW_LIT("trailer"))) {
            if (r->n_trailer >= ECHO_MAX_EXTRA || !parse_field_param(v, &r->trailer[r->n_trailer]))
                r->error = "bad ?trailer (Name:Value, at most 32)";
            else
                r->n_trailer++;
        }
    }
    free(val);
    if (r->error) {
        r->status = 400;
        r->echo = false;
        r->size = ECHO_NO_SIZE;
    }
    /* A `?size=` response carries no JSON, so the request headers need not be kept. */
    r->skip_headers = r->size != ECHO_NO_SIZE && !r->echo;
}

/* Split a request-target into path and query; absolute-form loses its
 * scheme and authority (RFC 9112 §3.2.2). */
static void req_set_target(req *r, rete_view t)
{
    if (rete_view_has_prefix(t, RETE_VIEW_LIT("http://")) ||
        rete_view_has_prefix(t, RETE_VIEW_LIT("https://"))) {
        rete_view rest = rete_view_sub(t, (size_t)rete_view_find(t, ':') + 3, t.len);
        ptrdiff_t slash = rete_view_find(rest, '/');
        t = slash < 0 ? RETE_VIEW_LIT("/") : rete_view_sub(rest, (size_t)slash, rest.len);
    }
    ptrdiff_t qm = rete_view_find(t, '?');
    if (qm < 0) {
        r->path = rete_strndup(t.p, t.len);
        r->query = rete_strdup("");
    } else {
        r->path = rete_strndup(t.p, (size_t)qm);
        r->query = rete_strndup(t.p + qm + 1, t.len - (size_t)qm - 1);
    }
    req_parse_query(r);
}

static bool status_has_body(int status)
{
    return status != 204 && status != 304;
}

static void req_on_timer(uv_timer_t *t);

/* ?call=HOST:PORT/PATH: before answering, GET http://HOST:PORT/PATH with
 * the request's trace headers (traceparent, tracestate, b3, x-b3-*) and
 * x-request-id, as an app that forwards them must, and put the answer in
 * the reply ("call": {"status", "body"}). For tests of whole traces
 * (client -> a -> b): the call is made with blocking sockets, each step
 * bounded by ECHO_CALL_TIMEOUT_MS, and holds this echo's loop while it
 * lasts. Not for load. */
static const char *const trace_fields[] = {"traceparent",  "tracestate",  "b3",
                                           "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
                                           "x-b3-sampled", "x-b3-flags",  "x-request-id"};

static json_t *call_out(const req *r)
{
    char host[256];
    const char *slash = strchr(r->call, '/');
    size_t hl = slash ? (size_t)(slash - r->call) : strlen(r->call);
    const char *path = slash ? slash : "/";
    char *colon = NULL;
    if (hl == 0 || hl >= sizeof(host))
        return json_string("bad ?call (HOST:PORT/PATH)");
    memcpy(host, r->call, hl);
    host[hl] = '\0';
    colon = strrchr(host, ':');
    if (!colon)
        return json_string("bad ?call (HOST:PORT/PATH)");
    *colon = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai)
        return json_string("call: cannot resolve");
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = ECHO_CALL_TIMEOUT_MS / 1000};
    bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == 0 &&
              setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0 &&
              connect(fd, ai->ai_addr, ai->ai_addrlen) == 0;
    freeaddrinfo(ai);
    char *out = rete_malloc(ECHO_CALL_MAX + 1);
    size_t n = (size_t)snprintf(out, ECHO_CALL_MAX, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", path,
                                host);
    for (size_t i = 0; i < sizeof(trace_fields) / sizeof(trace_fields[0]) && r->headers; i++) {
        const char *v = json_string_value(json_object_get(r->headers, trace_fields[i]));
        if (v && n < ECHO_CALL_MAX)
            n += (size_t)snprintf(out + n, ECHO_CALL_MAX - n, "%s: %s\r\n", trace_fields[i], v);
    }
    if (n < ECHO_CALL_MAX)
        n += (size_t)snprintf(out + n, ECHO_CALL_MAX - n, "\r\n");
    ok = ok && n < ECHO_CALL_MAX && send(fd, out, n, MSG_NOSIGNAL) == (ssize_t)n;
    size_t got = 0;
    while (ok && got < ECHO_CALL_MAX) {
        ssize_t k = recv(fd, out + got, ECHO_CALL_MAX - got, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    if (fd >= 0)
        close(fd);
    out[got] = '\0';
    json_t *res;
    const char *body = strstr(out, "\r\n\r\n");
    if (!ok || got < 12 || memcmp(out, "HTTP/1.", 7) != 0 || !body) {
        res = json_string("call: no answer");
    } else {
        res = json_object();
        json_object_set_new(res, "status", json_integer(atoi(out + 9)));
        json_t *doc = json_loads(body + 4, 0, NULL);
        json_object_set_new(res, "body", doc ? doc : jstr(body + 4, strlen(body + 4)));
    }
    free(out);
    return res;
}

/* Run `start_response` now or after the configured delay. */
static void req_schedule(req *r)
{
    if (r->call && !r->called && !r->error)
        r->called = call_out(r);
    uint64_t delay = cfg.latency_ms + r->delay_ms;
    r->state = r->state == REQ_BODY && r->echo ? REQ_BODY : REQ_WAIT;
    if (delay == 0) {
        r->c->ops->start_response(r);
        return;
    }
    uv_timer_start(&r->timer, req_on_timer, delay, 0);
}

static void req_on_timer(uv_timer_t *t)
{
    req *r = t->data;
    if (!r->c->closing)
        r->c->ops->start_response(r);
}

/* A request header field that makes the request gRPC: content-type
 * application/grpc, alone or with a +format or parameters (gRPC over HTTP/2,
 * grpc/doc/PROTOCOL-HTTP2.md). */
static bool is_grpc_content_type(rete_view name, rete_view value)
{
    static const rete_view grpc = RETE_VIEW_LIT("application/grpc");
    if (!rete_view_ieq(name, RETE_VIEW_LIT("content-type")) || value.len < grpc.len ||
        !rete_view_ieq(rete_view_sub(value, 0, grpc.len), grpc))
        return false;
    return value.len == grpc.len || value.p[grpc.len] == '+' || value.p[grpc.len] == ';';
}

static void extra_add(extra_field *f, size_t *n, const char *name, const char *value)
{
    if (*n >= ECHO_MAX_EXTRA)
        return; /* the query used them all; the reply says less */
    f[*n].name = rete_strdup(name);
    f[*n].value = rete_strdup(value);
    (*n)++;
}

/* gRPC: every method is a unary echo. The request's messages go back as they
 * came (length prefixes included, so the framing stays valid) with
 * content-type application/grpc and the trailer grpc-status 0. An injected
 * failure (`fail`, from --failure-rate) is a trailers-only response (HTTP
 * 200, END_STREAM on the headers) with grpc-status 14, UNAVAILABLE, what a
 * gRPC client retries. Query switches still apply; a bad one makes the
 * request an ordinary 400. */
static void grpc_head_done(req *r, bool fail)
{
    if (r->error) {
        r->grpc = false;
        return;
    }
    if (fail) {
        r->echo = false;
        r->no_body = true;
        r->size = 0;
        extra_add(r->extra, &r->n_extra, "grpc-status", "14");
        extra_add(r->extra, &r->n_extra, "grpc-message", "injected failure (--failure-rate)");
        return;
    }
    r->echo = true;
    extra_add(r->trailer, &r->n_trailer, "grpc-status", "0");
}

/* The head is complete: settle the status and, for echo, start the response
 * (its body follows the request body). */
static void req_head_done(req *r)
{
    /* The app's readiness, for a sidecar's readiness probe: /ready answers
     * 200 until /ready?set=0 (then 503, until /ready?set=1). One loop:
     * a plain static. */
    static bool not_ready;
    r->is_head = r->method && strcmp(r->method, "HEAD") == 0;
    if (!r->error && r->path && strcmp(r->path, "/ready") == 0) {
        if (r->ready_set)
            not_ready = r->ready_set == 1;
        else if (not_ready) {
            r->status = 503;
            r->error = "not ready (/ready?set=0)";
            r->echo = false;
            r->size = ECHO_NO_SIZE;
        }
    }
    bool fail = cfg.failure_rate > 0 && prng_next() < cfg.failure_rate;
    if (fail && !r->grpc) {
        r->status = 503;
        r->error = "injected failure (--failure-rate)";
        r->echo = false;
        r->size = ECHO_NO_SIZE;
    }
    r->no_body = r->is_head || !status_has_body(r->status);
    if (r->grpc)
        grpc_head_done(r, fail);
    r->kind = r->echo ? RESP_ECHO : r->size != ECHO_NO_SIZE ? RESP_SIZE : RESP_JSON;
    r->state = REQ_BODY;
    if (r->echo)
        req_schedule(r);
}

static void req_body_data(req *r, const char *p, size_t n)
{
    if (!n)
        return;
    if (!r->sha) {
        r->sha = EVP_MD_CTX_new();
        if (!r->sha || !EVP_DigestInit_ex(r->sha, EVP_sha256(), NULL))
            abort(); /* allocation policy: OOM is fatal */
    }
    EVP_DigestUpdate(r->sha, p, n);
    r->body_bytes += n;
}

static void req_body_done(req *r)
{
    r->body_done = true;
    if (r->echo) {
        if (r->resp_started)
            r->c->ops->echo_end(r);
        return;
    }
    req_schedule(r);
}

/* The JSON document describing the service and the request. */
static void req_build_json(req *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "service", json_string(cfg.name));
    json_object_set_new(o, "version", json_string(cfg.version));
    json_object_set_new(o, "instance", json_string(r->c->lst->addr));
    json_object_set_new(o, "protocol", json_string(r->c->ops->name));
    json_object_set_new(o, "method",
                        jstr(r->method ? r->method : "", r->method ? strlen(r->method) : 0));
    json_object_set_new(o, "path", jstr(r->path ? r->path : "", r->path ? strlen(r->path) : 0));
    json_object_set_new(o, "query",
                        jstr(r->query ? r->query : "", r->query ? strlen(r->query) : 0));
    if (!r->headers)
        r->headers = json_object();
    if (r->authority && !json_object_get(r->headers, "host"))
        json_object_set_new(r->headers, "host", jstr(r->authority, strlen(r->authority)));
    json_object_set(o, "headers", r->headers);
    json_object_set_new(o, "body_bytes", json_integer((json_int_t)r->body_bytes));
    if (r->sha) {
        unsigned char md[32];
        unsigned mdlen = 0;
        char hex[65];
        EVP_DigestFinal_ex(r->sha, md, &mdlen);
        for (unsigned i = 0; i < 32; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
        json_object_set_new(o, "body_sha256", json_string(hex));
        memcpy(r->sha_hex, hex, sizeof(r->sha_hex));
    }
    json_object_set_new(o, "peer", json_string(r->c->peer));
    json_object_set_new(o, "status", json_integer(r->status));
    if (r->called)
        json_object_set(o, "call", r->called);
    if (r->error)
        json_object_set_new(o, "error", json_string(r->error));
    r->json = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!r->json)
        abort(); /* jansson only fails on allocation */
    r->json_len = strlen(r->json);
    r->json_off = 0;
}

/* One line per request, when its response starts: peer, method, target,
 * status, protocol, then host= and body_bytes= (and body_sha256= for a JSON
 * answer, whose body is complete by then): what tests check of a request
 * whose response nobody reads (a proxy's mirrored copy). */
static void req_log(req *r)
{
    const char *host = r->authority;
    json_t *h = r->headers && !host ? json_object_get(r->headers, "host") : NULL;
    if (json_is_string(h))
        host = json_string_value(h);
    if (!cfg.quiet)
        rete_info("%s %s %s%s%s %d %s host=%s body_bytes=%" PRIu64 "%s%s", r->c->peer,
                  r->method ? r->method : "-", r->path ? r->path : "-",
                  r->query && *r->query ? "?" : "", r->query ? r->query : "", r->status,
                  r->c->ops->name, host ? host : "-", r->body_bytes,
                  r->sha_hex[0] ? " body_sha256=" : "", r->sha_hex);
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Status";
    }
}

/* Fill out[0, n) with pattern bytes for body offset `off`. */
static void pattern_copy(char *out, uint64_t off, size_t n)
{
    while (n) {
        size_t start = (size_t)(off % ECHO_PATTERN_PERIOD);
        size_t k = n < ECHO_WBUF_CAP ? n : ECHO_WBUF_CAP;
        memcpy(out, pattern + start, k);
        out += k;
        off += k;
        n -= k;
    }
}

/* ---------------------------------------------------------------- connections */

static void conn_unref(conn *c)
{
    if (--c->refs == 0)
        free(c);
}

static void conn_on_close(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->prev)
        c->prev->next = c->next;
    else
        all_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    n_conns--;
    c->ops->on_close(c);
    while (c->reqs)
        req_free(c->reqs);
    if (c->linger_timer_open)
        uv_close((uv_handle_t *)&c->linger_timer, conn_on_close);
    uv_close((uv_handle_t *)&c->tcp, conn_on_close);
}

static void on_linger_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *s, int status)
{
    /* Nothing to do: input is drained until EOF or the linger timer. */
}

static void on_linger_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->linger_bytes += (size_t)nread;
    c->rstart = c->rend = 0;
    if (c->linger_bytes > ECHO_LINGER_BYTES)
        conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* Every write is out and the connection is finished. After an error response
 * the peer may still be sending: closing a socket with unread input makes the
 * kernel send RST, which can destroy the response before the peer reads it.
 * So send FIN and discard input for a bounded time first (the "lingering
 * close" of RFC 9112 §9.6). */
static void conn_end(conn *c)
{
    if (c->closing || c->lingering)
        return;
    if (!c->linger || c->eof) {
        conn_close(c);
        return;
    }
    c->lingering = true;
    uv_timer_init(loop, &c->linger_timer);
    c->linger_timer.data = c;
    c->linger_timer_open = true;
    c->refs++;
    uv_timer_start(&c->linger_timer, on_linger_timeout, ECHO_LINGER_MS, 0);
    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->rstart = c->rend = 0;
    c->reading = true;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_linger_read) < 0)
        conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    buf->base = c->rbuf + c->rend;
    buf->len = sizeof(c->rbuf) - c->rend;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    if (nread == UV_EOF) {
        c->eof = true;
        uv_read_stop(s);
        c->reading = false;
        c->ops->on_read(c);
        return;
    }
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->rend += (size_t)nread;
    c->ops->on_read(c);
    conn_update_reading(c);
}

/* Read while there is room in the buffer and the write queue is short: the
 * one place backpressure is decided. */
static void conn_update_reading(conn *c)
{
    if (c->closing || c->lingering)
        return;
    if (c->rstart == c->rend) {
        c->rstart = c->rend = 0;
    } else if (c->rstart > 0 && c->rend == sizeof(c->rbuf)) {
        memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
        c->rend -= c->rstart;
        c->rstart = 0;
    }
    bool want = !c->eof && !c->close_when_flushed && c->rend < sizeof(c->rbuf) &&
                c->wq_bytes < ECHO_WQ_HIGH;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
            conn_close(c);
            return;
        }
        c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void format_addr(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        uv_ip4_name(a, ip, sizeof(ip));
        port = ntohs(a->sin_port);
        snprintf(out, outlen, "%s:%d", ip, port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        uv_ip6_name(a, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
        snprintf(out, outlen, "[%s]:%d", ip, port);
    } else {
        snprintf(out, outlen, "?");
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0 || shutting_down)
        return;
    conn *c = rete_calloc(1, sizeof(*c));
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    c->refs = 1;
    c->lst = server->data;
    c->ops = &detect_ops;
    c->next = all_conns;
    if (all_conns)
        all_conns->prev = c;
    all_conns = c;
    n_conns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 || n_conns > cfg.max_conns) {
        /* Accept then close when over the bound, so the backlog does not fill. */
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
        format_addr(&ss, c->peer, sizeof(c->peer));
    else
        snprintf(c->peer, sizeof(c->peer), "?");
    conn_update_reading(c);
}

/* ---------------------------------------------------------------- detection */

static void detect_on_read(conn *c)
{
    size_t n = c->rend - c->rstart;
    size_t cmp = n < H2_PREFACE_LEN ? n : H2_PREFACE_LEN;
    if (memcmp(c->rbuf + c->rstart, h2_preface, cmp) != 0) {
        c->ops = &h1_ops;
    } else if (n >= H2_PREFACE_LEN) {
        c->ops = &h2_ops;
    } else {
        if (c->eof)
            conn_close(c);
        return; /* a prefix of the preface: wait for more */
    }
    c->ops->on_read(c);
}

static void detect_noop(conn *c) {}

static void detect_req_noop(req *r) {}

static const proto_ops detect_ops = {
    .name = "?",
    .on_read = detect_on_read,
    .on_drain = detect_noop,
    .on_close = detect_noop,
    .start_response = detect_req_noop,
    .echo_end = detect_req_noop,
};

/* ---------------------------------------------------------------- HTTP/1.1 */

static rete_h1_header h1_fields[ECHO_H1_MAX_HEADERS]; /* used synchronously by the parser */

static void h1_process(conn *c);
static void h1_process_loop(conn *c);

/* Close once queued writes are out (a half-closed peer still gets its answer). */
static void conn_close_soon(conn *c)
{
    c->close_when_flushed = true;
    if (c->wq_bytes == 0)
        conn_end(c);
}

/* Answer a request the parser refused, then close (RFC 9112 §9.6 leaves the
 * connection unusable after a framing error). */
static void h1_fail(conn *c, int status, const char *reason)
{
    wbuf *b = wbuf_get(c, 512);
    size_t rlen = strlen(reason);
    if (!wbuf_printf(
            b,
            "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %zu\r\n"
            "x-echo-service: %.64s\r\nx-echo-version: %.64s\r\nconnection: close\r\n\r\n%s\n",
            status, reason_phrase(status), rlen + 1, cfg.name, cfg.version, reason))
        b->len = 0;
    if (!cfg.quiet)
        rete_info("%s bad request: %d %s", c->peer, status, reason);
    c->linger = true;
    conn_write(c, b);
    conn_close_soon(c);
}

static size_t extra_len(const extra_field *f, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += strlen(f[i].name) + strlen(f[i].value) + 4;
    return total;
}

static void h1_append_fields(wbuf *b, const extra_field *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        wbuf_append(b, f[i].name, strlen(f[i].name));
        wbuf_append(b, ": ", 2);
        wbuf_append(b, f[i].value, strlen(f[i].value));
        wbuf_append(b, "\r\n", 2);
    }
}

/* The last chunk and the trailer section (RFC 9112 §7.1.2). */
static void h1_append_last_chunk(req *r, wbuf *b)
{
    wbuf_append(b, "0\r\n", 3);
    h1_append_fields(b, r->trailer, r->n_trailer);
    wbuf_append(b, "\r\n", 2);
}

static void h1_finish(req *r)
{
    r->state = REQ_DONE;
    if (!r->keep_alive)
        r->c->close_when_flushed = true;
}

/* Stream `?size=` pattern bytes until the write queue is full. */
static void h1_pump_size(req *r)
{
    conn *c = r->c;
    while (r->size_off < r->size && c->wq_bytes < ECHO_WQ_HIGH && !c->closing) {
        wbuf *b = wbuf_get(c, 64);
        uint64_t left = r->size - r->size_off;
        if (r->resp_chunked) {
            size_t k = left < ECHO_WBUF_CAP ? (size_t)left : ECHO_WBUF_CAP;
            if (!wbuf_printf(b, "%zx\r\n", k))
                abort();
            b->iov[b->niov++] = uv_buf_init(pattern, (unsigned)k);
            b->iov[b->niov++] = uv_buf_init((char *)"\r\n", 2);
            r->size_off += k;
        } else {
            /* Batch up to three pattern slices into one write. */
            while (b->niov < 3 && r->size_off < r->size) {
                left = r->size - r->size_off;
                size_t k = left < ECHO_WBUF_CAP ? (size_t)left : ECHO_WBUF_CAP;
                b->iov[b->niov++] = uv_buf_init(pattern, (unsigned)k);
                r->size_off += k;
            }
        }
        conn_write(c, b);
    }
    if (r->size_off >= r->size && r->state == REQ_RESP && !c->closing) {
        if (r->resp_chunked) {
            wbuf *t = wbuf_get(c, 16 + extra_len(r->trailer, r->n_trailer));
            h1_append_last_chunk(r, t);
            conn_write(c, t);
        }
        h1_finish(r);
    }
}

static void h1_start_response(req *r)
{
    conn *c = r->c;
    if (r->kind == RESP_JSON)
        req_build_json(r);
    req_log(r);
    bool want_trailers = r->n_trailer > 0 && r->te_trailers && r->minor == 1;
    uint64_t len = r->kind == RESP_JSON                  ? r->json_len
                   : r->kind == RESP_SIZE                ? r->size
                   : r->body_kind == RETE_H1_BODY_LENGTH ? r->body_left
                   : r->body_kind == RETE_H1_BODY_NONE   ? 0
                                                         : UINT64_MAX;
    r->resp_chunked = false;
    const char *framing = "";
    char cl[48] = "";
    if (!status_has_body(r->status)) {
        /* 204/304: no body and no framing fields (RFC 9110 §8.6). */
    } else if (!r->is_head && (want_trailers || (len == UINT64_MAX && r->minor == 1))) {
        r->resp_chunked = true;
        framing = "transfer-encoding: chunked\r\n";
    } else if (len != UINT64_MAX) {
        snprintf(cl, sizeof(cl), "content-length: %" PRIu64 "\r\n", len);
    } else {
        r->keep_alive = false; /* HTTP/1.0 peer, unknown length: delimit by close */
    }
    wbuf *b =
        wbuf_get(c, 512 + strlen(cfg.name) + strlen(cfg.version) + extra_len(r->extra, r->n_extra) +
                        extra_len(r->trailer, r->n_trailer));
    wbuf_printf(b, "HTTP/1.%d %d %s\r\n%s%s%sx-echo-service: %s\r\nx-echo-version: %s\r\n%s",
                r->minor, r->status, reason_phrase(r->status),
                r->kind == RESP_JSON ? "content-type: application/json\r\n"
                                     : "content-type: application/octet-stream\r\n",
                framing, cl, cfg.name, cfg.version,
                r->keep_alive ? (r->minor == 0 ? "connection: keep-alive\r\n" : "")
                              : "connection: close\r\n");
    h1_append_fields(b, r->extra, r->n_extra);
    wbuf_append(b, "\r\n", 2);
    r->resp_started = true;

    if (r->no_body) {
        conn_write(c, b);
        if (r->kind == RESP_ECHO && !r->body_done) {
            r->state = REQ_BODY; /* keep consuming (and dropping) the body */
        } else {
            h1_finish(r);
        }
        return;
    }
    switch (r->kind) {
    case RESP_JSON:
        if (r->resp_chunked) {
            wbuf_printf(b, "%zx\r\n", r->json_len);
            b->iov[b->niov++] = uv_buf_init(r->json, (unsigned)r->json_len);
            wbuf *t = wbuf_get(c, 16 + extra_len(r->trailer, r->n_trailer));
            wbuf_append(t, "\r\n", 2);
            h1_append_last_chunk(r, t);
            b->heap = r->json; /* the write owns the document now */
            r->json = NULL;
            conn_write(c, b);
            conn_write(c, t);
        } else {
            b->iov[b->niov++] = uv_buf_init(r->json, (unsigned)r->json_len);
            b->heap = r->json;
            r->json = NULL;
            conn_write(c, b);
        }
        h1_finish(r);
        break;
    case RESP_SIZE:
        conn_write(c, b);
        r->state = REQ_RESP;
        h1_pump_size(r);
        break;
    case RESP_ECHO:
        conn_write(c, b);
        if (r->body_done)
            r->c->ops->echo_end(r);
        else
            r->state = REQ_BODY; /* h1_process streams the body back */
        break;
    default:
        abort();
    }
}

static void h1_echo_data(req *r, const char *p, size_t n)
{
    if (r->no_body || n == 0)
        return;
    wbuf *b = wbuf_get(r->c, n + 32);
    if (r->resp_chunked)
        wbuf_printf(b, "%zx\r\n", n);
    wbuf_append(b, p, n);
    if (r->resp_chunked)
        wbuf_append(b, "\r\n", 2);
    conn_write(r->c, b);
}

static void h1_echo_end(req *r)
{
    if (!r->no_body && r->resp_chunked) {
        wbuf *b = wbuf_get(r->c, 16 + extra_len(r->trailer, r->n_trailer));
        h1_append_last_chunk(r, b);
        conn_write(r->c, b);
    }
    h1_finish(r);
}

/* Parse one head from the buffer into r. Returns false when the caller should
 * stop (need more bytes, or the connection failed). */
static bool h1_parse_head(conn *c, req *r)
{
    rete_h1_limits limits = RETE_H1_LIMITS_DEFAULT;
    limits.max_headers = ECHO_H1_MAX_HEADERS;
    rete_h1_message msg = {.headers = h1_fields};
    rete_h1_error err = {0};
    size_t avail = c->rend - c->rstart;
    if (avail == 0) {
        if (c->eof)
            conn_close_soon(c);
        return false;
    }
    int n = rete_h1_parse_request(c->rbuf + c->rstart, avail, &limits, &msg, &err);
    if (n == RETE_EAGAIN) {
        if (c->rstart == 0 && c->rend == sizeof(c->rbuf))
            h1_fail(c, 431, "request head too large");
        else if (c->eof)
            conn_close_soon(c);
        return false;
    }
    if (n < 0) {
        h1_fail(c, err.status ? err.status : 400, err.reason ? err.reason : "bad request");
        return false;
    }
    r->method = rete_strndup(msg.method.p, msg.method.len);
    req_set_target(r, msg.target);
    for (size_t i = 0; i < msg.n_headers; i++)
        req_add_header(r, msg.headers[i].name, msg.headers[i].value);
    r->minor = msg.minor_version;
    r->keep_alive = (msg.flags & RETE_H1_F_KEEP_ALIVE) != 0;
    r->te_trailers = (msg.flags & RETE_H1_F_HAS_TRAILER_TE) != 0;
    r->body_kind = msg.body;
    r->body_left = msg.content_length;
    if (msg.body == RETE_H1_BODY_CHUNKED)
        rete_h1_chunked_init(&r->chunked);
    bool has_body = msg.body == RETE_H1_BODY_CHUNKED ||
                    (msg.body == RETE_H1_BODY_LENGTH && msg.content_length > 0);
    c->rstart += (size_t)n;
    if (has_body && (msg.flags & RETE_H1_F_EXPECT_CONTINUE) && r->minor == 1) {
        /* Without this, clients such as curl wait a second before the body. */
        wbuf *b = wbuf_get(c, 32);
        wbuf_append(b, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        conn_write(c, b);
    }
    req_head_done(r);
    if (!has_body && r->state == REQ_BODY)
        req_body_done(r);
    return true;
}

/* Feed buffered body bytes to r. Returns false when no progress is possible. */
static bool h1_consume_body(conn *c, req *r)
{
    if (r->echo && !r->resp_started)
        return false; /* hold the body until the (delayed) response head is out */
    if (r->echo && !r->no_body && c->wq_bytes >= ECHO_WQ_HIGH)
        return false; /* backpressure: on_drain resumes */
    size_t avail = c->rend - c->rstart;
    if (avail == 0) {
        if (c->eof)
            conn_close(c); /* the peer went away mid-body */
        return false;
    }
    const char *p = c->rbuf + c->rstart;
    if (r->body_kind == RETE_H1_BODY_LENGTH) {
        size_t k = avail < r->body_left ? avail : (size_t)r->body_left;
        req_body_data(r, p, k);
        if (r->echo)
            h1_echo_data(r, p, k);
        c->rstart += k;
        r->body_left -= k;
        if (r->body_left == 0)
            req_body_done(r);
        return true;
    }
    size_t used = 0;
    const char *data = NULL;
    size_t dlen = 0;
    int rc = rete_h1_chunked_decode(&r->chunked, p, avail, &used, &data, &dlen);
    if (rc < 0) {
        h1_fail(c, 400, "bad chunked encoding");
        return false;
    }
    if (dlen) {
        req_body_data(r, data, dlen);
        if (r->echo)
            h1_echo_data(r, data, dlen);
    }
    c->rstart += used;
    if (rc == 1) {
        req_body_done(r);
        return true;
    }
    return used > 0 || dlen > 0;
}

/* Drive the HTTP/1.1 state machine over the buffered bytes. Requests are
 * handled one at a time; pipelined ones wait in the buffer. */
static void h1_process(conn *c)
{
    /* Responses can start from inside this loop (no delay); they must not
     * re-enter it and reset the request under the outer frame. */
    if (c->in_process)
        return;
    c->in_process = true;
    h1_process_loop(c);
    c->in_process = false;
}

static void h1_process_loop(conn *c)
{
    while (!c->closing) {
        if (!c->h1)
            c->h1 = req_new(c);
        req *r = c->h1;
        bool progress;
        switch (r->state) {
        case REQ_HEAD:
            if (c->close_when_flushed)
                return;
            progress = h1_parse_head(c, r);
            break;
        case REQ_BODY:
            progress = !r->body_done && h1_consume_body(c, r);
            break;
        case REQ_DONE:
            if (c->close_when_flushed) {
                if (c->wq_bytes == 0)
                    conn_end(c);
                return;
            }
            req_reset(r);
            progress = true;
            break;
        case REQ_WAIT:
        case REQ_RESP:
        default:
            progress = false;
            break;
        }
        if (!progress)
            return;
    }
}

static void h1_on_read(conn *c)
{
    h1_process(c);
}

static void h1_on_drain(conn *c)
{
    req *r = c->h1;
    if (r && r->state == REQ_RESP && r->kind == RESP_SIZE)
        h1_pump_size(r);
    h1_process(c);
}

static void h1_start_response_op(req *r)
{
    h1_start_response(r);
    if (r->c->h1 == r && !r->c->closing) {
        h1_process(r->c);
        conn_update_reading(r->c);
    }
}

static void h1_on_close(conn *c) {}

static const proto_ops h1_ops = {
    .name = "HTTP/1.1",
    .on_read = h1_on_read,
    .on_drain = h1_on_drain,
    .on_close = h1_on_close,
    .start_response = h1_start_response_op,
    .echo_end = h1_echo_end,
};

/* ---------------------------------------------------------------- HTTP/2 */

static void h2_flush(conn *c);

static req *h2_req(nghttp2_session *s, int32_t id)
{
    return nghttp2_session_get_stream_user_data(s, id);
}

static int h2_on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    req *r = req_new(ud);
    r->stream_id = f->hd.stream_id;
    nghttp2_session_set_stream_user_data(s, f->hd.stream_id, r);
    return 0;
}

static int h2_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *ud)
{
    req *r = h2_req(s, f->hd.stream_id);
    if (!r || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;                               /* request trailers are not reported */
    r->header_bytes += namelen + valuelen + 32; /* RFC 9113 §6.5.2 field size */
    if (r->header_bytes > ECHO_H2_MAX_HEADER_BYTES)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets just this stream */
    rete_view n = rete_view_make((const char *)name, namelen);
    rete_view v = rete_view_make((const char *)value, valuelen);
    if (namelen && name[0] == ':') {
        if (rete_view_eq(n, RETE_VIEW_LIT(":method")) && !r->method)
            r->method = rete_strndup(v.p, v.len);
        else if (rete_view_eq(n, RETE_VIEW_LIT(":path")) && !r->path)
            req_set_target(r, v);
        else if (rete_view_eq(n, RETE_VIEW_LIT(":authority")) && !r->authority)
            r->authority = rete_strndup(v.p, v.len);
        return 0;
    }
    if (is_grpc_content_type(n, v))
        r->grpc = true;
    req_add_header(r, n, v);
    return 0;
}

static int h2_on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    req *r = h2_req(s, f->hd.stream_id);
    if (!r)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
        req_head_done(r);
    if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && !r->body_done)
        req_body_done(r);
    return 0;
}

static int h2_on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                            size_t len, void *ud)
{
    req *r = h2_req(s, id);
    if (!r || !r->echo || r->no_body) {
        if (r)
            req_body_data(r, (const char *)data, len);
        /* Not echoed: give the credit back at once (automatic updates are off). */
        nghttp2_session_consume(s, id, len);
        return 0;
    }
    req_body_data(r, (const char *)data, len);
    if (!r->ebuf)
        r->ebuf = rete_malloc(ECHO_H2_ECHO_BUF);
    if (len > ECHO_H2_ECHO_BUF - r->elen)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* peer ignored flow control */
    memcpy(r->ebuf + r->elen, data, len);
    r->elen += len;
    if (r->deferred) {
        r->deferred = false;
        nghttp2_session_resume_data(s, id);
    }
    return 0;
}

static int h2_on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    req *r = h2_req(s, id);
    if (!r)
        return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    if (r->elen) /* echo bytes never sent still hold connection credit */
        nghttp2_session_consume_connection(s, r->elen);
    req_free(r);
    return 0;
}

static void h2_submit_trailers(req *r)
{
    nghttp2_nv nv[ECHO_MAX_EXTRA];
    for (size_t i = 0; i < r->n_trailer; i++)
        nv[i] = (nghttp2_nv){(uint8_t *)r->trailer[i].name, (uint8_t *)r->trailer[i].value,
                             strlen(r->trailer[i].name), strlen(r->trailer[i].value),
                             NGHTTP2_NV_FLAG_NONE};
    nghttp2_submit_trailer(r->c->h2, r->stream_id, nv, r->n_trailer);
}

static ssize_t h2_read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    req *r = src->ptr;
    size_t n = 0;
    bool eof = false;
    switch (r->kind) {
    case RESP_JSON:
        n = r->json_len - r->json_off;
        n = n < length ? n : length;
        memcpy(buf, r->json + r->json_off, n);
        r->json_off += n;
        eof = r->json_off == r->json_len;
        break;
    case RESP_SIZE: {
        uint64_t left = r->size - r->size_off;
        n = left < length ? (size_t)left : length;
        pattern_copy((char *)buf, r->size_off, n);
        r->size_off += n;
        eof = r->size_off == r->size;
        break;
    }
    case RESP_ECHO:
        if (r->elen == 0 && !r->body_done) {
            r->deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
        n = r->elen < length ? r->elen : length;
        memcpy(buf, r->ebuf, n);
        memmove(r->ebuf, r->ebuf + n, r->elen - n);
        r->elen -= n;
        /* Credit returns only as echoed bytes leave: the peer's sending
         * rate follows our writing rate. */
        nghttp2_session_consume(s, id, n);
        eof = r->elen == 0 && r->body_done;
        break;
    default:
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (r->n_trailer) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            h2_submit_trailers(r);
        }
    }
    return (ssize_t)n;
}

static void h2_start_response(req *r)
{
    conn *c = r->c;
    if (c->closing)
        return;
    r->resp_started = true;
    r->state = REQ_RESP;
    if (r->kind == RESP_JSON)
        req_build_json(r);
    req_log(r);
    char status[8], cl[24];
    snprintf(status, sizeof(status), "%d", r->status);
    nghttp2_nv nv[6 + ECHO_MAX_EXTRA];
    size_t n = 0;
#define NV(k, v, vl)                                                                               \
    (nghttp2_nv){(uint8_t *)(k), (uint8_t *)(v), sizeof(k) - 1, (vl), NGHTTP2_NV_FLAG_NONE}
    nv[n++] = NV(":status", status, strlen(status));
    if (r->grpc)
        nv[n++] = NV("content-type", "application/grpc", 16);
    else if (r->kind == RESP_JSON)
        nv[n++] = NV("content-type", "application/json", 16);
    else
        nv[n++] = NV("content-type", "application/octet-stream", 24);
    uint64_t len = r->kind == RESP_JSON ? r->json_len : r->kind == RESP_SIZE ? r->size : UINT64_MAX;
    /* A gRPC reply is framed by its messages and trailers alone. */
    if (len != UINT64_MAX && status_has_body(r->status) && !r->grpc) {
        snprintf(cl, sizeof(cl), "%" PRIu64, len);
        nv[n++] = NV("content-length", cl, strlen(cl));
    }
    nv[n++] = NV("x-echo-service", cfg.name, strlen(cfg.name));
    nv[n++] = NV("x-echo-version", cfg.version, strlen(cfg.version));
#undef NV
    for (size_t i = 0; i < r->n_extra; i++)
        nv[n++] =
            (nghttp2_nv){(uint8_t *)r->extra[i].name, (uint8_t *)r->extra[i].value,
                         strlen(r->extra[i].name), strlen(r->extra[i].value), NGHTTP2_NV_FLAG_NONE};
    nghttp2_data_provider prd = {.source.ptr = r, .read_callback = h2_read_body};
    bool body = !r->no_body && (len != 0 || r->kind == RESP_ECHO || r->n_trailer);
    if (nghttp2_submit_response(c->h2, r->stream_id, nv, n, body ? &prd : NULL) != 0)
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, r->stream_id, NGHTTP2_INTERNAL_ERROR);
    h2_flush(c);
}

static void h2_echo_end(req *r)
{
    if (r->deferred) {
        r->deferred = false;
        nghttp2_session_resume_data(r->c->h2, r->stream_id);
    }
}

/* Move nghttp2's output into write buffers while the queue has room. The
 * pointer mem_send returns is valid only until the next call, so it is
 * copied; small frames are packed into one buffer per write. */
static void h2_flush(conn *c)
{
    /* Never from inside nghttp2's callbacks: h2_on_read flushes after mem_recv. */
    if (c->closing || !c->h2 || c->in_process)
        return;
    wbuf *b = NULL;
    while (c->wq_bytes < ECHO_WQ_HIGH) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->h2, &p);
        if (n < 0) {
            if (b)
                wbuf_put(b);
            conn_close(c);
            return;
        }
        if (n == 0)
            break;
        if (b && wbuf_room(b) < (size_t)n) {
            conn_write(c, b);
            b = NULL;
        }
        if (!b)
            b = wbuf_get(c, (size_t)n);
        wbuf_append(b, p, (size_t)n);
    }
    if (b)
        conn_write(c, b);
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) {
        if (c->wq_bytes == 0)
            conn_close(c);
        else
            c->close_when_flushed = true;
    }
}

static void h2_on_read(conn *c)
{
    if (!c->h2) {
        nghttp2_session_server_new2(&c->h2, h2_callbacks, c, h2_option);
        if (!c->h2)
            abort(); /* nghttp2 fails only on allocation */
        nghttp2_settings_entry iv[] = {
            {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
            {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, ECHO_H2_ECHO_BUF - 1},
        };
        if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
            nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0,
                                                  ECHO_H2_CONN_WINDOW) != 0) {
            conn_close(c);
            return;
        }
    }
    size_t avail = c->rend - c->rstart;
    if (avail) {
        c->in_process = true;
        ssize_t n = nghttp2_session_mem_recv(c->h2, (const uint8_t *)c->rbuf + c->rstart, avail);
        c->in_process = false;
        if (n < 0) {
            conn_close(c);
            return;
        }
        c->rstart += (size_t)n;
    }
    if (c->eof) {
        conn_close(c);
        return;
    }
    h2_flush(c);
}

static void h2_on_drain(conn *c)
{
    h2_flush(c);
}

static void h2_on_close(conn *c)
{
    /* nghttp2_session_del does not call on_stream_close: conn_close frees
     * the requests from c->reqs. */
    nghttp2_session_del(c->h2);
    c->h2 = NULL;
}

static const proto_ops h2_ops = {
    .name = "HTTP/2",
    .on_read = h2_on_read,
    .on_drain = h2_on_drain,
    .on_close = h2_on_close,
    .start_response = h2_start_response,
    .echo_end = h2_echo_end,
};

/* ---------------------------------------------------------------- main */

static void on_handle_closed(uv_handle_t *h) {}

static void on_signal(uv_signal_t *s, int signum)
{
    if (shutting_down)
        return;
    shutting_down = true;
    if (!cfg.quiet)
        fprintf(stderr, "rete-echo %s: signal %d, shutting down\n", cfg.name, signum);
    for (size_t i = 0; i < cfg.n_listeners; i++)
        uv_close((uv_handle_t *)&cfg.listeners[i].tcp, on_handle_closed);
    while (all_conns)
        conn_close(all_conns);
    uv_close((uv_handle_t *)&sig_term, on_handle_closed);
    uv_close((uv_handle_t *)&sig_int, on_handle_closed);
}

/* "IP:PORT" or "[IPv6]:PORT" into a socket address. */
static bool parse_addr(const char *s, struct sockaddr_storage *out)
{
    char host[INET6_ADDRSTRLEN];
    const char *colon = strrchr(s, ':');
    if (!colon)
        return false;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof(host))
        return false;
    memcpy(host, h, hl);
    host[hl] = '\0';
    uint64_t port;
    if (!rete_view_to_u64(rete_view_cstr(colon + 1), &port) || port > 65535)
        return false;
    memset(out, 0, sizeof(*out));
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0)
        return true;
    return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: rete-echo --listen IP:PORT [--listen IP:PORT ...] [options]\n"
            "  --listen IP:PORT        address to serve HTTP/1.1 and h2c on (repeatable)\n"
            "  --name NAME             service name reported in responses (default echo)\n"
            "  --version-label V       version reported in responses (default v1)\n"
            "  --latency MS            delay added to every response (default 0)\n"
            "  --failure-rate F        fraction 0..1 of requests answered 503 (default 0)\n"
            "  --seed N                seed of the failure PRNG (default 1)\n"
            "  --max-connections N     concurrent connection bound (default 10000)\n"
            "  --quiet                 no per-request log lines\n"
            "per request: ?delay=MS ?status=CODE ?size=BYTES ?echo=1 ?header=N:V ?trailer=N:V\n"
            "/ready: 200, or 503 after /ready?set=0 (until /ready?set=1)\n"
            "gRPC (h2c, content-type application/grpc): any method echoes its request\n"
            "  messages with grpc-status 0; --failure-rate answers grpc-status 14 instead\n");
}

static bool parse_u64_arg(const char *s, uint64_t max, uint64_t *out)
{
    return rete_view_to_u64(rete_view_cstr(s), out) && *out <= max;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"name", required_argument, NULL, 'n'},
        {"version-label", required_argument, NULL, 'V'},
        {"latency", required_argument, NULL, 'L'},
        {"failure-rate", required_argument, NULL, 'f'},
        {"seed", required_argument, NULL, 's'},
        {"max-connections", required_argument, NULL, 'm'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *listen_args[ECHO_MAX_LISTEN];
    size_t n_listen = 0;
    int opt;
    uint64_t u;
    char *end;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'l':
            if (n_listen >= ECHO_MAX_LISTEN) {
                fprintf(stderr, "rete-echo: at most %u --listen\n", ECHO_MAX_LISTEN);
                return 2;
            }
            listen_args[n_listen++] = optarg;
            break;
        case 'n':
            if (strlen(optarg) == 0 || strlen(optarg) > 64) {
                fprintf(stderr, "rete-echo: --name must be 1..64 bytes\n");
                return 2;
            }
            cfg.name = optarg;
            break;
        case 'V':
            if (strlen(optarg) == 0 || strlen(optarg) > 64) {
                fprintf(stderr, "rete-echo: --version-label must be 1..64 bytes\n");
                return 2;
            }
            cfg.version = optarg;
            break;
        case 'L':
            if (!parse_u64_arg(optarg, ECHO_MAX_DELAY_MS, &cfg.latency_ms)) {
                fprintf(stderr, "rete-echo: bad --latency %s\n", optarg);
                return 2;
            }
            break;
        case 'f':
            errno = 0;
            cfg.failure_rate = strtod(optarg, &end);
            if (errno || *end || end == optarg ||
                !(cfg.failure_rate >= 0 && cfg.failure_rate <= 1)) {
                fprintf(stderr, "rete-echo: --failure-rate must be in 0..1\n");
                return 2;
            }
            break;
        case 's':
            if (!parse_u64_arg(optarg, UINT64_MAX, &cfg.seed)) {
                fprintf(stderr, "rete-echo: bad --seed %s\n", optarg);
                return 2;
            }
            break;
        case 'm':
            if (!parse_u64_arg(optarg, 1000000, &u) || u == 0) {
                fprintf(stderr, "rete-echo: bad --max-connections %s\n", optarg);
                return 2;
            }
            cfg.max_conns = (size_t)u;
            break;
        case 'q':
            cfg.quiet = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || n_listen == 0) {
        usage(stderr);
        return 2;
    }
    /* Validated here so the response head can never carry CR/LF from a flag. */
    for (const char *p = cfg.name; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            fprintf(stderr, "rete-echo: --name has control characters\n");
            return 2;
        }
    for (const char *p = cfg.version; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            fprintf(stderr, "rete-echo: --version-label has control characters\n");
            return 2;
        }

    signal(SIGPIPE, SIG_IGN);
    prng_state = cfg.seed;
    for (size_t i = 0; i < sizeof(pattern); i++)
        pattern[i] = "0123456789abcdef"[i % ECHO_PATTERN_PERIOD];
    loop = uv_default_loop();

    nghttp2_session_callbacks_new(&h2_callbacks);
    nghttp2_option_new(&h2_option);
    if (!h2_callbacks || !h2_option)
        abort();
    nghttp2_option_set_no_auto_window_update(h2_option, 1);
    nghttp2_session_callbacks_set_on_begin_headers_callback(h2_callbacks, h2_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(h2_callbacks, h2_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(h2_callbacks, h2_on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(h2_callbacks, h2_on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(h2_callbacks, h2_on_stream_close);

    for (size_t i = 0; i < n_listen; i++) {
        listener *l = &cfg.listeners[i];
        struct sockaddr_storage ss;
        if (!parse_addr(listen_args[i], &ss)) {
            fprintf(stderr, "rete-echo: bad --listen %s (want IP:PORT)\n", listen_args[i]);
            return 2;
        }
        uv_tcp_init(loop, &l->tcp);
        l->tcp.data = l;
        cfg.n_listeners++;
        int rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&l->tcp, 1024, on_connection);
        if (rc < 0) {
            fprintf(stderr, "rete-echo: listen on %s: %s\n", listen_args[i], uv_strerror(rc));
            return 1;
        }
        int len = sizeof(ss);
        uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len);
        format_addr(&ss, l->addr, sizeof(l->addr));
    }
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    for (size_t i = 0; i < cfg.n_listeners; i++)
        fprintf(stderr, "rete-echo %s listening on %s\n", cfg.name, cfg.listeners[i].addr);
    fflush(stderr);

    uv_run(loop, UV_RUN_DEFAULT);

    while (wbuf_free_list) {
        wbuf *b = wbuf_free_list;
        wbuf_free_list = b->next_free;
        free(b);
    }
    nghttp2_session_callbacks_del(h2_callbacks);
    nghttp2_option_del(h2_option);
    int rc = uv_loop_close(loop);
    if (rc != 0)
        fprintf(stderr, "rete-echo: loop close: %s\n", uv_strerror(rc));
    return 0;
}
