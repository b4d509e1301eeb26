/* HTTP and TCP routing over a config snapshot: Gateway API v1 HTTPRoute,
 * GRPCRoute and TCPRoute semantics (GAMMA: parentRefs name a Service).
 *
 * Build time (once per snapshot): rete_route_build_tables groups every rule
 * match by the service port it attaches to and sorts them by the precedence
 * the Gateway API spec defines for HTTPRoute rules:
 *   1. Exact path match, 2. longest PathPrefix, (regular expressions after
 *   prefixes, longest pattern first, an implementation-specific choice),
 *   3. method match, 4. most header matches, 5. most query parameter matches,
 *   then the oldest route (`order`), then "{namespace}/{name}" alphabetically,
 *   then rule and match order within the route.
 * Request time: rete_route_match walks that order and returns the first
 * entry that matches; it allocates nothing and takes no lock. */
#ifndef RETE_ROUTE_H
#define RETE_ROUTE_H

#include "config-t.h"
#include "result.h"
#include "view.h"

struct rete_arena;

/* What the router looks at in a request: all views, none owned. */
typedef struct rete_route_request {
    rete_view method;
    rete_view path;          /* :path as received, query string included */
    const rete_header *headers;
    size_t n_headers;
} rete_route_request;

/* Fill cfg->tables / cfg->n_tables from cfg->services and cfg->http_routes
 * (and TCPRoutes), allocating from cfg->arena. */
RETE_MUST_CHECK rete_rc rete_route_build_tables(rete_config *cfg, struct rete_arena *arena);

/* The first entry of `t` that matches `req`, or NULL (then: 404). */
const rete_route_entry *rete_route_match(const rete_route_table *t, const rete_route_request *req);

/* Weighted choice among backends; `rnd` is a uniformly random 32-bit value.
 * Returns NULL when every weight is 0 (then: 500, as the spec says). */
const rete_backend_ref *rete_route_pick_backend(const rete_backend_ref *b, size_t n,
                                                uint32_t total_weight, uint32_t rnd);

#endif
