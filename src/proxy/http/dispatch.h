/* Where a request goes: the routing decision between a downstream codec and
 * an upstream one. Outbound (from the local app): service lookup by
 * authority, Gateway API route match, filters, weighted backend, load
 * balancer, then the mesh transport to the chosen endpoint's proxy (or
 * plaintext to an endpoint outside the mesh). Inbound (from a peer proxy or
 * from outside the mesh): the target app port, then the local app. */
#ifndef RETE_PROXY_DISPATCH_H
#define RETE_PROXY_DISPATCH_H

#include "exchange.h"

/* Register the request path with the exchange (rete_request_path_set):
 * main.c calls it once at start-up, before any worker runs. */
void rete_http_register(void);

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

#endif
