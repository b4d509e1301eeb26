/* An exchange: one request and its response, travelling between a
 * downstream side (the codec that received the request: an HTTP/1.1
 * connection, an HTTP/2 stream, a raw TCP connection) and an upstream side
 * (the codec that carries it on: an HTTP/2 stream to a peer proxy, an
 * HTTP/1.1 connection to the local app, a TCP connection, or a local
 * response). Each side sees the other only through rete_side_ops, so any
 * downstream codec pairs with any upstream codec (HAProxy's mux_ops idea).
 *
 * Bodies travel through two bounded pipes: the request pipe (downstream
 * produces, upstream consumes) and the response pipe. A producer pauses when
 * its pipe holds more than the body buffer limit and resumes on on_drained:
 * that is the whole of flow control, whatever the protocols on each side.
 *
 * Every body chunk and every body's end passes rete_ex_push / rete_ex_end:
 * the one place the request path's body stages are called from
 * (rete_request_path.body), before the pipe's consumer sees the chunk.
 *
 * Tunnels (TCP, CONNECT, HTTP/1.1 upgrades) are exchanges whose method is
 * CONNECT: the pipes carry raw bytes both ways, which no body stage sees.
 *
 * An exchange is freed when both sides have called rete_ex_detach. */
#ifndef RETE_PROXY_EXCHANGE_H
#define RETE_PROXY_EXCHANGE_H

#include "arena.h"
#include "codec.h"
#include "config-t.h"
#include "metrics.h"
#include "view.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct rete_exchange rete_exchange;
struct rete_worker;
struct rete_gen;

/* One message head. Views point into the exchange's arena. Header names are
 * lower-case (HTTP/2 rules), hop-by-hop fields are never stored. */
typedef struct rete_msg {
    rete_view method;
    rete_view scheme;
    rete_view authority;
    rete_view path;
    rete_view protocol;   /* :protocol (RFC 8441), empty otherwise */
    int status;
    rete_header *headers;
    uint32_t n_headers;
    uint32_t cap_headers;
    int64_t content_length; /* -1 when unknown */
} rete_msg;

typedef struct rete_chunk {
    struct rete_chunk *next;
    uint32_t len;
    uint32_t off;
    char data[];
} rete_chunk;

typedef struct rete_pipe {
    rete_chunk *head;
    rete_chunk *tail;
    size_t bytes;
    bool end;             /* producer is done; trailers (if any) are set */
    bool paused;          /* producer paused because the pipe is full */
    size_t no_credit;     /* bytes at the front replayed by a retry (rete_ex_retry_reset): their
                             consumption is not reported to the producer, which was credited
                             for them already */
    rete_msg trailers;    /* n_headers == 0: none */
} rete_pipe;

typedef enum rete_side { RETE_DOWNSTREAM = 0, RETE_UPSTREAM = 1 } rete_side;

typedef struct rete_side_ops {
    const char *name;
    /* upstream: the request head is ready, start sending it.
     * downstream: the response head is ready (ex->resp), send it. */
    void (*on_head)(rete_exchange *ex);
    /* The pipe this side consumes got data, end or trailers. */
    void (*on_data)(rete_exchange *ex);
    /* The pipe this side produces into has room again. */
    void (*on_drained)(rete_exchange *ex, size_t consumed);
    /* The other side failed after the response head was sent (or the
     * exchange was cancelled): reset the stream / close the connection. */
    void (*on_abort)(rete_exchange *ex);
    /* Optional: an interim (1xx) response is in ex->resp for the downstream. */
    void (*on_interim)(rete_exchange *ex);
} rete_side_ops;

/* Why an exchange ended badly: drives the local error status and the
 * Envoy-style response_flags in metrics and logs. */
typedef enum rete_ex_error {
    RETE_EXE_NONE,
    RETE_EXE_NO_ROUTE,        /* NR: 404 */
    RETE_EXE_NO_HEALTHY,      /* UH: 503 */
    RETE_EXE_CONNECT,         /* UF: 503 */
    RETE_EXE_CONNECT_TIMEOUT, /* UF: 503, DestinationRule connectionPool.tcp.connectTimeout */
    RETE_EXE_OVERFLOW,        /* UO: 503, a pool or pending bound */
    RETE_EXE_UPSTREAM_RESET,  /* UR: 502 */
    RETE_EXE_TIMEOUT,         /* UT: 504 */
    RETE_EXE_DOWNSTREAM_RESET,/* DR */
    RETE_EXE_DENIED,          /* 403 */
    RETE_EXE_BAD_REQUEST,     /* 400 */
    RETE_EXE_DOWNSTREAM_TIMEOUT, /* SI: 408, the client stalled its request */
    RETE_EXE_FAULT,           /* FI: the rule's fault.abort answered */
    RETE_EXE_RATE_LIMITED,    /* RL: 429, a local rate limit */
} rete_ex_error;

struct rete_exchange {
    struct rete_worker *worker;
    struct rete_gen *gen;          /* config generation this exchange started with */
    rete_arena *arena;
    rete_msg req;
    rete_msg resp;
    rete_pipe req_body;
    rete_pipe resp_body;
    const rete_side_ops *ops[2];
    void *side[2];                 /* each side's own state */
    bool attached[2];
    bool tunnel;                   /* CONNECT: pipes carry raw bytes */
    bool head_sent;                /* the downstream has been handed the response head */
    bool inbound;                  /* arrived on the mesh or inbound listener */
    bool admin;                    /* arrived on the admin or the stats listener */
    bool stats_only;               /* the stats listener: /metrics, /ready, /live only */
    bool done;                     /* finished, metrics recorded */
    rete_ex_error error;
    char error_detail[96];
    uint64_t start_ns;
    /* Body bytes each way (Istio's request/response sizes, the access log's
     * bytes_in/out): an HTTP body's are counted by the telemetry filter's
     * body stages, a tunnel's raw bytes by rete_ex_push. */
    uint64_t req_bytes;
    uint64_t resp_bytes;
    uv_timer_t timer;              /* route timeout: initialised on first use, closed before free */
    bool timer_inited;
    bool timer_active;
    rete_exchange *next_free;      /* the worker's pool or reap list */
    /* Retries and per-try/request timeouts (http/filter_retry.c): NULL for
     * a request whose route has neither. */
    struct rete_try_state *try_state;
    /* Mirroring (http/filter_mirror.c): on a request being copied, the
     * list of its copies' states (linked by their `next`); on a copy, its
     * state (in the copy's arena); NULL otherwise.
     * mirror_copy: this exchange is a copy, with no downstream connection. */
    struct rete_mirror *mirror;
    bool mirror_copy;
    /* Active health checks (http/health_check.c): on a check, its state (in
     * its arena); a check has no downstream connection either. */
    struct rete_hc_check *hc;
    /* what routing decided */
    const rete_route_table *table;
    const rete_route_entry *route;
    const rete_service *service;
    int endpoint;                  /* index in service->endpoints, -1 */
    bool in_flight;                /* counted in the service's breaker (requests) */
    /* Counted in its route rule's circuitBreaker (requests), NULL: not. */
    struct rete_breaker *rule_breaker;
    /* Outbound to a Service: its pool limits, passed to the upstream codec
     * (rete_filter_upstream); NULL: none. */
    const struct rete_upstream_limits *limits;
    /* Waiting for an upstream connection (upstream_wait.c). */
    bool waiting;
    rete_codec_id wait_codec;
    rete_upstream_target wait_target;
    uint64_t wait_deadline;        /* uv_hrtime ns: pendingTimeout from the first wait */
    rete_exchange *wait_next, *wait_prev;
    uint32_t *ds_held;             /* HTTP/2 downstream: its connection's count of requests
                                      in flight in circuit-breaker budgets (fair share,
                                      dispatch.c); NULL once counted out or for HTTP/1.1 */
    uint16_t target_port;          /* app port at the destination */
    uint16_t orig_port;            /* intercepted connection: original destination port, else 0 */
    char orig_ip[48];              /* and address (canonical IP literal, no brackets) */
    const char *listener;          /* "outbound", "inbound", "mesh", "upstream" */
    char peer_id[160];             /* SPIFFE ID of the downstream peer, mesh only */
    /* What the peer proxy said of its workload (RETE_PEER_HEADER), mesh only,
     * checked against peer_id's namespace; empty when it said nothing. */
    rete_view peer_workload, peer_app, peer_version;
    char downstream_addr[64];
    uint32_t body_limit;
    /* req.path normalisation (rete_dispatch_normalize_path): done once, where
     * the request enters; path_refused is the rete_path_norm_result. */
    bool path_normalized;
    uint8_t path_refused;
    /* Tracing (http/filter_trace.c): the span this proxy makes of the
     * exchange, when sampled; 40 bytes in the exchange, nothing allocated. */
    struct {
        uint8_t trace_id[16];
        uint8_t span_id[8];
        uint8_t parent_id[8];      /* all zero: a root span */
        bool sampled;              /* a span is made and exported */
        uint8_t formats;           /* the header formats the request came with */
    } trace;
    /* tunnels: Istio TCP series, resolved once at open (telemetry.c) */
    bool tcp_open;
    rete_metric tcp_sent, tcp_received, tcp_closed;
};

/* ---- construction and lifetime ---- */
/* Exchanges come from the worker's pool (at most RETE_EX_POOL kept, each
 * with its arena's first block). The one both sides have let go is put on
 * the worker's reap list and recycled from the loop's prepare phase or a
 * codec's safe point (rete_ex_reap), never under the caller's feet. */
#define RETE_EX_POOL 64
rete_exchange *rete_ex_new(struct rete_worker *w, const rete_side_ops *ds_ops, void *ds);
void rete_ex_detach(rete_exchange *ex, rete_side side);
/* Start (or restart) the exchange's one-shot timer. */
void rete_ex_timer_start(rete_exchange *ex, uv_timer_cb cb, uint64_t ms);
/* Recycle the exchanges let go since the last call: the worker's prepare
 * phase, and codecs after processing a read (no exchange on the stack). */
void rete_ex_reap(struct rete_worker *w);
/* Free the pool (worker exit, after the loop has closed every handle). */
void rete_ex_pool_free(struct rete_worker *w);

/* ---- heads ---- */
void rete_msg_add(rete_exchange *ex, rete_msg *m, rete_view name, rete_view value);
rete_view rete_msg_get(const rete_msg *m, rete_view lname);
void rete_msg_remove(rete_msg *m, rete_view lname);
void rete_msg_set(rete_exchange *ex, rete_msg *m, rete_view lname, rete_view value);
rete_view rete_ex_dup(rete_exchange *ex, rete_view v);

/* ---- downstream -> exchange ---- */
/* The request head is complete: route it and start an upstream. */
void rete_ex_request_ready(rete_exchange *ex);
/* Append request body bytes (copied) / end it. Returns true when the pipe is
 * over its limit and the producer should pause until on_drained. */
bool rete_ex_push(rete_exchange *ex, rete_side producer, const char *data, size_t len);
void rete_ex_end(rete_exchange *ex, rete_side producer);

/* ---- upstream -> exchange ---- */
void rete_ex_response_ready(rete_exchange *ex);
void rete_ex_interim(rete_exchange *ex);

/* ---- consumers ---- */
/* Bytes available at the front of the pipe this side consumes. */
size_t rete_ex_peek(rete_exchange *ex, rete_side consumer, const char **data);
void rete_ex_consume(rete_exchange *ex, rete_side consumer, size_t n);
static inline rete_pipe *rete_ex_in(rete_exchange *ex, rete_side consumer)
{
    return consumer == RETE_UPSTREAM ? &ex->req_body : &ex->resp_body;
}

/* ---- failures ---- */
/* `side` failed. Before the response head went downstream, the downstream
 * gets a local error response (status from `err`); after, it is aborted. */
void rete_ex_fail(rete_exchange *ex, rete_side side, rete_ex_error err, const char *detail);
/* Answer locally (404, 403, redirects, admin): becomes the upstream. */
void rete_ex_local_response(rete_exchange *ex, int status, const char *content_type,
                            const char *body, size_t len);
/* The same with extra response headers (n_hdrs views: name, value, ...;
 * the views must live as long as the exchange) and, for a gRPC request
 * (content-type application/grpc), grpc-status `grpc_code` (< 0: mapped
 * from status as rete_ex_local_response does). grpc_force: answer in gRPC's
 * trailers-only shape (HTTP 200) whatever the request's content-type. */
void rete_ex_local_response_with(rete_exchange *ex, int status, int grpc_code, bool grpc_force,
                                 const rete_view *hdrs, size_t n_hdrs, const char *content_type,
                                 const char *body, size_t len);
/* Whether the upstream side is a local answer (rete_ex_local_response):
 * it has produced everything and lets go when the downstream does. */
bool rete_ex_upstream_is_local(const rete_exchange *ex);
/* The same with an empty body and a Location header (copied). */
void rete_ex_local_redirect(rete_exchange *ex, int status, rete_view location);

/* Start over for a retry (from a timer: no codec on the stack): abort the
 * upstream if one is still attached, drop the held response (head, body,
 * error), and put the request body back in the request pipe from `replay`
 * (every body byte received so far, in order; the producer is not credited
 * twice for them). The caller then starts a new upstream. */
void rete_ex_retry_reset(rete_exchange *ex, const char *replay, size_t len);

int rete_ex_error_status(rete_ex_error e);
const char *rete_ex_error_flag(rete_ex_error e);

/* ---- the request path above the core ----
 * The core never names the layer above it: the request path (http/dispatch.c)
 * hands the exchange these entry points once at start-up
 * (rete_request_path_set, from main.c through rete_http_register) and the
 * exchange calls them at the points of its life they name. */
typedef struct rete_request_path {
    /* The request head is complete: route it and start an upstream. */
    void (*request)(rete_exchange *ex);
    /* Normalise ex->req.path once (rete_ex_normalize_path). */
    bool (*normalize_path)(rete_exchange *ex);
    /* The response head is about to go downstream. */
    void (*response)(rete_exchange *ex);
    /* A body chunk (len > 0, the producer's bytes, valid during the call)
     * or a body's end (len 0, end; trailers are in the pipe) entered the
     * request pipe (producer RETE_DOWNSTREAM) or the response pipe; its
     * consumer has not seen it yet. Never for a tunnel's raw bytes. NULL
     * when no filter has a body stage: one branch per chunk. */
    void (*body)(rete_exchange *ex, rete_side producer, const char *data, size_t len, bool end);
    /* The upstream failed (ex->error and error_detail say why) before the
     * response head went downstream; the upstream side has let go. Returns
     * true when the request path takes it from here (a retry): the core
     * then answers nothing. NULL: never. */
    bool (*upstream_failed)(rete_exchange *ex);
    /* The upstream's response head is in ex->resp and about to go
     * downstream. Returns true to hold it back (a retry will replace it:
     * the response body the upstream still produces stays in the pipe,
     * unsent, until rete_ex_retry_reset). NULL: never. */
    bool (*upstream_response)(rete_exchange *ex);
    /* The exchange ended: count it and log it, once. */
    void (*finish)(rete_exchange *ex);
    /* The downstream connection let go of the exchange. */
    void (*release_share)(rete_exchange *ex);
    /* A generation is freed: the request path's per-generation state. */
    void (*gen_free)(struct rete_gen *g);
    /* Worker w installed a new generation (w->gen; at start, from the main
     * thread before the worker's thread runs). NULL: nothing to do. */
    void (*gen_installed)(struct rete_worker *w);
} rete_request_path;

void rete_request_path_set(const rete_request_path *rp);
const rete_request_path *rete_request_path_get(void);

/* Normalise ex->req.path under the MeshConfig's pathNormalization, once
 * (the request path's normalize_path): codecs call it where they use the
 * path before rete_ex_request_ready (HTTP/1.1 upgrades re-serialise it).
 * Returns false when the path is refused. */
bool rete_ex_normalize_path(rete_exchange *ex);

/* Request header a sending proxy adds to tell the receiving proxy which app
 * port the request is for; the receiver removes it. CONNECT tunnels carry
 * the same in :authority (ip:port), as HBONE does. */
#define RETE_TARGET_PORT_HEADER "x-rete-target-port"

/* Request header a sending proxy adds on the mesh hop with its workload's
 * metadata, so the receiving proxy's metrics name the source workload (what
 * Istio's metadata exchange does): "workload=W;namespace=N;app=A;version=V"
 * (values in the Kubernetes label-value charset, at most 253 bytes; keys a
 * receiver does not know are skipped). The receiver believes it only from an
 * authenticated peer whose SPIFFE ID has that namespace, and removes it. */
#define RETE_PEER_HEADER "x-rete-peer"

/* Whether a request field is one that only a proxy may set: the caller
 * identity it vouches for (x-forwarded-client-cert) and every x-rete-*
 * field proxies use between themselves. Codecs drop these from anything an
 * app or a client outside the mesh sends, on every path (plain, upgrade,
 * HTTP/2, trailers); only the mesh listener accepts them, from an
 * authenticated peer proxy. */
static inline bool rete_is_internal_header(rete_view name)
{
    return rete_view_ieq(name, RETE_VIEW_LIT("x-forwarded-client-cert")) ||
           (name.len >= 7 && rete_view_ieq(rete_view_make(name.p, 7), RETE_VIEW_LIT("x-rete-")));
}

#endif
