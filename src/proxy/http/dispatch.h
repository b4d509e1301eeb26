/* Where a request goes: the routing decision between a downstream codec and
 * an upstream one. Outbound (from the local app): service lookup by
 * authority, Gateway API route match, filters, weighted backend, load
 * balancer, then the mesh transport to the chosen endpoint's proxy (or
 * plaintext to an endpoint outside the mesh). Inbound (from a peer proxy or
 * from outside the mesh): the target app port, then the local app. */
#ifndef RETE_PROXY_DISPATCH_H
#define RETE_PROXY_DISPATCH_H

#include "exchange.h"

/* Request header a sending proxy adds to tell the receiving proxy which app
 * port the request is for; the receiver removes it. CONNECT tunnels carry
 * the same in :authority (ip:port), as HBONE does. */
#define RETE_TARGET_PORT_HEADER "x-rete-target-port"

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

void rete_dispatch(rete_exchange *ex);
/* Normalise ex->req.path in place under the configuration's MeshConfig
 * pathNormalization (path_norm.h), once: routing, authorization and the
 * forwarded request then all see the same path. Returns false when the path
 * is refused; rete_dispatch then answers 400 (a tunnel is closed) and counts
 * it. Codecs call it where they take the path in when they use the path
 * before rete_ex_request_ready (HTTP/1.1 upgrades re-serialise it);
 * rete_dispatch calls it for everyone else. A NULL path (CONNECT) passes. */
bool rete_dispatch_normalize_path(rete_exchange *ex);
/* Apply the matched rule's response header modifiers to ex->resp. */
void rete_dispatch_response_filters(rete_exchange *ex);
/* Count the exchange in metrics and write its access-log line, once. */
void rete_dispatch_finish(rete_exchange *ex);
/* The downstream connection lets go of the exchange: it no longer counts
 * towards that connection's share of a budget (ex->ds_held). */
void rete_dispatch_release_share(rete_exchange *ex);

/* The admin listener's endpoints (admin.c). */
void rete_admin_handle(rete_exchange *ex);

/* Upstream starters, one per upstream codec. Each attaches itself as the
 * exchange's upstream side or fails it with rete_ex_fail. */
void rete_h2_upstream_start(rete_exchange *ex, const char *ip, uint16_t port, bool tls,
                            const char *expected_id);
void rete_h1_upstream_start(rete_exchange *ex, const char *ip, uint16_t port);
void rete_tcp_upstream_start(rete_exchange *ex, const char *ip, uint16_t port);

#endif
