/* The request path as an ordered chain of filters (what Envoy's HTTP filters
 * and HAProxy's actions have in common). dispatch.c is the sequencer: it
 * runs each stage of every filter of the exchange's chain in order.
 *
 * A filter is a static table of functions: no allocation per filter per
 * request; what a filter keeps about a request lives in the exchange. The
 * chains are fixed arrays (filter_chains.c):
 *
 *   outbound (the local app's requests):  route -> telemetry -> access log
 *   inbound  (mesh 15008, plaintext 15006): inbound target -> authz -> app
 *                                           -> telemetry -> access log
 *
 * The last filter of a chain that handles the request (route, app) starts
 * the upstream or answers locally and returns RETE_FILTER_DONE. Body stages
 * are not part of the interface yet: no filter reads bodies; the first one
 * that must (retries with a replay buffer, mirroring) adds them. */
#ifndef RETE_PROXY_FILTER_H
#define RETE_PROXY_FILTER_H

#include "codec.h"
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

typedef struct rete_filter {
    const char *name;
    /* The request head is complete. NULL: nothing to do. */
    rete_filter_verdict (*on_request)(rete_exchange *ex);
    /* The response head is about to go downstream. NULL: nothing to do. */
    void (*on_response)(rete_exchange *ex);
    /* The exchange ended, once, for every exchange the chain saw (even one
     * answered before this filter's on_request ran). NULL: nothing to do. */
    void (*on_finish)(rete_exchange *ex, const rete_filter_end *end);
} rete_filter;

typedef struct rete_filter_chain {
    const rete_filter *const *filters;
    size_t n;
} rete_filter_chain;

extern const rete_filter rete_filter_route;        /* filter_route.c */
extern const rete_filter rete_filter_inbound_port; /* filter_inbound.c */
extern const rete_filter rete_filter_authz;        /* filter_authz.c */
extern const rete_filter rete_filter_app;          /* filter_inbound.c */
extern const rete_filter rete_filter_telemetry;    /* filter_telemetry.c */
extern const rete_filter rete_filter_access_log;   /* filter_access_log.c */

/* Where the access-log filter writes (rete-proxy --access-log); NULL: off. */
extern FILE *rete_access_log;

extern const rete_filter_chain rete_chain_outbound;
extern const rete_filter_chain rete_chain_inbound;

/* The chain an exchange runs: inbound for the mesh and plaintext inbound
 * listeners, outbound otherwise (the admin listener's exchanges run only
 * its finish stages). */
const rete_filter_chain *rete_filter_chain_of(const rete_exchange *ex);

/* Answer the request locally with a one-line text body (a tunnel is closed
 * instead: there is nothing to answer on a raw connection). */
void rete_filter_local_text(rete_exchange *ex, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Start the upstream codec `id` towards ip:port (tls and expected_id: the
 * mesh's HTTP/2 only). */
void rete_filter_upstream(rete_exchange *ex, rete_codec_id id, const char *ip, uint16_t port, bool tls,
                          const char *expected_id);

/* TCP and CONNECT tunnels route with TCPRoute semantics; HTTP/1.1 upgrades
 * (WebSocket) route like the HTTP request they start as. */
static inline bool rete_tunnel_is_raw(const rete_exchange *ex)
{
    return ex->tunnel && rete_view_eq(ex->req.method, RETE_VIEW_LIT("CONNECT"));
}

#endif
