/* The request path as an ordered chain of filters (what Envoy's HTTP filters
 * and HAProxy's actions have in common). dispatch.c is the sequencer: it
 * runs each stage of every filter of the exchange's chain in order.
 *
 * A filter is a static table of functions: no allocation per filter per
 * request; what a filter keeps about a request lives in the exchange. The
 * chains are fixed arrays (dispatch.c):
 *
 *   outbound (the local app's requests):  trace -> route -> rate limit -> fault -> mirror
 *                                           -> backend -> retry -> telemetry -> access log -> tap
 *   inbound  (mesh 15008, plaintext 15006): trace -> inbound target -> authz -> rate limit
 *                                           -> app -> telemetry -> access log -> tap
 *
 * Trace comes first: it must set the propagated headers before the request
 * is sent on, and see even the requests a later filter answers.
 *
 * Stages, in the order an exchange meets them (NULL: the filter skips it):
 *
 *   on_request        the request head is complete (may answer: DONE)
 *   on_request_body   each request body chunk, then its end (+ trailers)
 *   on_response       the response head is about to go downstream
 *   on_response_body  each response body chunk, then its end (+ trailers)
 *   on_finish         the exchange ended, once
 *
 * The last filter of a chain that handles the request (route, app) starts
 * the upstream or answers locally and returns RETE_FILTER_DONE.
 *
 * Body stages are called from the exchange's pipes (rete_ex_push,
 * rete_ex_end in core/exchange.c), the one place every body chunk passes
 * whatever the codecs (HTTP/1.1 content-length or chunked, HTTP/2 DATA),
 * before the pipe's consumer sees the chunk. The contract:
 * - A call carries one chunk (len > 0, end false) or the end (len 0, end
 *   true, trailers when the message has some). Chunks arrive in order, each
 *   once. A message whose end comes with its head (no body: HTTP/2
 *   END_STREAM on HEADERS, HTTP/1.1 without a body) gets no body call: its
 *   pipe's end is already set when its head stage runs. A message cut short
 *   (reset, client gone) gets no end call; on_finish still runs, and no body
 *   stage runs after it (a filter may release what it kept at finish).
 * - A local answer (rete_ex_local_response) fills the response pipe before
 *   its head is sent: its body stage runs before its on_response.
 * - Observe only, for now: a stage may read the chunk (the producer's bytes,
 *   valid during the call: copy what it keeps, e.g. a retry's replay copy of
 *   up to 64 KiB, into the exchange's arena), count, and record in the
 *   exchange. It must not change the chunk, touch the pipes, or end the
 *   exchange: the producing codec is on the stack, mid-read, and the
 *   consumer has not seen the chunk. The first filter that must stop an
 *   exchange on a body (a size limit: 413 before the response head, a reset
 *   after) turns the stage's return into a rete_filter_verdict and teaches
 *   rete_ex_push to act on DONE there, in one place, after the walk.
 * - Tunnels (TCP, CONNECT, HTTP/1.1 upgrades such as WebSocket) carry raw
 *   bytes, not HTTP bodies: no body stage sees them. The core counts them
 *   (ex->req_bytes / resp_bytes, Istio's TCP byte series) in rete_ex_push.
 * - Cost: each chain gathers its filters' body stages once
 *   (rete_filter_chain_prepare); a chunk calls exactly those, the exchange
 *   calls none when no chain has one (one branch per chunk), and a chain
 *   without one is not walked. Nothing is allocated. */
#ifndef RETE_PROXY_FILTER_H
#define RETE_PROXY_FILTER_H

#include "codec.h"
#include "error.h"
#include "exchange.h"

#include <stdio.h>

typedef enum rete_filter_verdict {
    RETE_FILTER_NEXT, /* go on with the next filter */
    RETE_FILTER_DONE, /* the request is handled (answered, or sent upstream) */
} rete_filter_verdict;

/* What the finish stage learns about an exchange that ended. */
typedef struct rete_filter_end {
    int status;           /* the response status sent downstream, 0 when none */
    uint64_t duration_ns; /* from the exchange's start */
    uint64_t now_ns;      /* uv_hrtime() at the end */
} rete_filter_end;

/* What a body stage sees: one chunk, or the end (see the contract above). */
typedef struct rete_filter_body {
    const char *data;         /* the chunk; NULL at the end */
    size_t len;               /* > 0 for a chunk, 0 at the end */
    bool end;                 /* the body is complete */
    const rete_msg *trailers; /* at the end, when the message has trailers; else NULL */
} rete_filter_body;

typedef struct rete_filter {
    const char *name;
    /* The request head is complete. NULL: nothing to do. */
    rete_filter_verdict (*on_request)(rete_exchange *ex);
    /* A request body chunk or its end. NULL: nothing to do. */
    void (*on_request_body)(rete_exchange *ex, const rete_filter_body *b);
    /* The response head is about to go downstream. NULL: nothing to do. */
    void (*on_response)(rete_exchange *ex);
    /* A response body chunk or its end (gRPC's status is in its trailers).
     * NULL: nothing to do. */
    void (*on_response_body)(rete_exchange *ex, const rete_filter_body *b);
    /* The exchange ended, once, for every exchange the chain saw (even one
     * answered before this filter's on_request ran). NULL: nothing to do. */
    void (*on_finish)(rete_exchange *ex, const rete_filter_end *end);
} rete_filter;

typedef void (*rete_filter_body_stage)(rete_exchange *ex, const rete_filter_body *b);

#define RETE_FILTER_CHAIN_MAX 16 /* filters in one chain */

typedef struct rete_filter_chain {
    const rete_filter *const *filters;
    size_t n; /* at most RETE_FILTER_CHAIN_MAX */
    /* The body stages of its filters, in chain order, gathered once by
     * rete_filter_chain_prepare: a chunk calls exactly these, without
     * looking at the filters that have none (256 bytes per chain). */
    rete_filter_body_stage request_body[RETE_FILTER_CHAIN_MAX];
    rete_filter_body_stage response_body[RETE_FILTER_CHAIN_MAX];
    uint8_t n_request_body, n_response_body;
} rete_filter_chain;

/* Gather the chain's body stages from its filters: once, before any
 * exchange runs it (rete_http_register does it for the chains below).
 * Returns whether the chain has any body stage. */
bool rete_filter_chain_prepare(rete_filter_chain *c);

/* Run chain c's request body stages (producer RETE_DOWNSTREAM) or response
 * body stages (RETE_UPSTREAM), in chain order, on one chunk (len > 0) or
 * the end (len 0, end; the trailers are taken from the exchange's pipe).
 * Returns how many stages ran: 0, without a walk, for a chain with none. */
size_t rete_filter_chain_body(const rete_filter_chain *c, rete_exchange *ex, rete_side producer,
                              const char *data, size_t len, bool end);

extern const rete_filter rete_filter_route;        /* filter_route.c */
extern const rete_filter rete_filter_rate_limit;   /* filter_ratelimit.c */
extern const rete_filter rete_filter_fault;        /* filter_fault.c */
extern const rete_filter rete_filter_mirror;       /* filter_mirror.c */
extern const rete_filter rete_filter_backend;      /* filter_route.c */
extern const rete_filter rete_filter_retry;        /* filter_retry.c */
extern const rete_filter rete_filter_inbound_port; /* filter_inbound.c */
extern const rete_filter rete_filter_authz;        /* filter_authz.c */
extern const rete_filter rete_filter_app;          /* filter_inbound.c */
extern const rete_filter rete_filter_telemetry;    /* filter_telemetry.c */
extern const rete_filter rete_filter_access_log;   /* filter_access_log.c */
extern const rete_filter rete_filter_trace;        /* filter_trace.c */
extern const rete_filter rete_filter_tap;          /* filter_tap.c (tap.h) */

/* Tracing's exporter (filter_trace.c): one thread per proxy, a bounded
 * queue of finished spans. What is traced and where it goes is MeshConfig
 * tracing's (per snapshot); the bounds are the process's. */
typedef struct rete_trace_opts {
    size_t queue_spans; /* --trace-queue-spans: spans waiting for export (default 2048) */
    size_t batch_spans; /* --trace-batch-spans: spans per POST at most (default 256) */
} rete_trace_opts;
#define RETE_TRACE_QUEUE_DEFAULT 2048
#define RETE_TRACE_BATCH_DEFAULT 256
/* Start it (main thread, before the workers); fails naming the option. */
RETE_MUST_CHECK rete_rc rete_trace_open(const rete_trace_opts *o, rete_error *err);
/* Export what is queued (best effort) and stop (after the workers stopped). */
void rete_trace_close(void);

/* The access log (filter_access_log.c; rete-proxy --access-log): one JSON
 * line per exchange, written by a writer thread from a bounded buffer. */
typedef struct rete_access_log_opts {
    const char *path;        /* a file (appended), or "-" for stdout */
    const char *fields;      /* comma-separated field names in order; NULL: all (docs/proxy.md) */
    double sample_percent;   /* of successful exchanges; errors are always logged */
} rete_access_log_opts;
/* Start it (main thread, before the workers); fails naming the option. */
RETE_MUST_CHECK rete_rc rete_access_log_open(const rete_access_log_opts *o, rete_error *err);
/* Wait until every line appended so far is written (tests, drain). */
void rete_access_log_flush(void);
/* Write what is left and stop the writer (after the workers stopped). */
void rete_access_log_close(void);

extern rete_filter_chain rete_chain_outbound;
extern rete_filter_chain rete_chain_inbound;

/* The chain an exchange runs: inbound for the mesh and plaintext inbound
 * listeners, outbound otherwise (the admin listener's exchanges run only
 * its finish stages). */
const rete_filter_chain *rete_filter_chain_of(const rete_exchange *ex);

/* Go on with the on_request stages of the filters after `after` in ex's
 * chain: for a filter that held the request (returned DONE without
 * answering, e.g. a fault delay's timer) and now lets it go. Nothing runs
 * when the exchange has ended. */
void rete_filter_chain_resume(rete_exchange *ex, const rete_filter *after);

/* Answer the request locally with a one-line text body (a tunnel is closed
 * instead: there is nothing to answer on a raw connection). */
void rete_filter_local_text(rete_exchange *ex, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Start the upstream codec `id` towards ip:port (tls and expected_id: the
 * mesh's HTTP/2 only), its TCP connect bounded by connect_timeout_ms (0:
 * none). */
void rete_filter_upstream(rete_exchange *ex, rete_codec_id id, const char *ip, uint16_t port, bool tls,
                          const char *expected_id, uint32_t connect_timeout_ms);

/* The connect timeout of the inbound side's connections to the local app
 * (Istio's connectTimeout default). */
#define RETE_APP_CONNECT_TIMEOUT_MS 10000
/* ... and of passthrough connections to destinations outside the mesh
 * (outboundTrafficPolicy ALLOW_ANY): no DestinationRule names them. */
#define RETE_PASSTHROUGH_CONNECT_TIMEOUT_MS 10000

/* TCP and CONNECT tunnels route with TCPRoute semantics; HTTP/1.1 upgrades
 * (WebSocket) route like the HTTP request they start as. */
static inline bool rete_tunnel_is_raw(const rete_exchange *ex)
{
    return ex->tunnel && rete_view_eq(ex->req.method, RETE_VIEW_LIT("CONNECT"));
}

#endif
