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
 * Route hostnames are ignored (GAMMA). When a GRPCRoute attaches to a service
 * port, that port's HTTPRoutes are left out (GEP-1426: they conflict).
 * Request time: rete_route_match walks that order and returns the first
 * entry that matches; it allocates nothing and takes no lock. Headers and
 * query parameters match on their first occurrence; query strings are not
 * percent-decoded. route.c's opening comment lists every such choice. */
#ifndef RETE_ROUTE_H
#define RETE_ROUTE_H

#include "config-t.h"
#include "result.h"
#include "view.h"

struct rete_arena;

/* What the router looks at in a request: all views, none owned. */
typedef struct rete_route_request {
    rete_view method;
    rete_view path; /* :path after path normalisation (path_norm.h), query included */
    const rete_header *headers;
    size_t n_headers;
} rete_route_request;

/* Fill cfg->tables / cfg->n_tables from cfg->services and cfg->http_routes
 * (and TCPRoutes), allocating from cfg->arena. */
RETE_MUST_CHECK rete_rc rete_route_build_tables(rete_config *cfg, struct rete_arena *arena);

/* The first entry of `t` that matches `req`, or NULL (then: 404). */
const rete_route_entry *rete_route_match(const rete_route_table *t, const rete_route_request *req);

/* Weighted choice among backends; `rnd` is a uniformly random 32-bit value.
 * `total_weight` must be the sum of the weights. Returns NULL when it is 0
 * (then: 500, as the spec says). Backends of weight 0 are never returned. */
const rete_backend_ref *rete_route_pick_backend(const rete_backend_ref *b, size_t n,
                                                uint32_t total_weight, uint32_t rnd);

/* The path a URLRewrite or RequestRedirect filter `f` makes of `path` (the
 * :path as received, query included) for the entry `e` that matched it.
 * RETE_PATH_KEEP copies path; RETE_PATH_FULL is f->path; RETE_PATH_PREFIX
 * replaces the element-wise prefix e matched with f->path (Gateway API
 * table: prefix "/foo" on "/foo/bar" -> "/" gives "/bar", "/xyz" gives
 * "/xyz/bar", "/xyz/" gives "/xyz/bar"). The query string is kept in every
 * case. Like snprintf: writes at most outlen bytes including a NUL and
 * returns the full length of the result; the caller checks `n < outlen`.
 * Returns 0 (a path is never empty) when the modifier cannot apply:
 * ReplacePrefixMatch on an entry whose path match is not a PathPrefix. */
size_t rete_route_rewrite_path(const rete_route_entry *e, const rete_http_filter *f, rete_view path,
                               char *out, size_t outlen);

/* What the request looked like, for building a redirect. */
typedef struct rete_route_redirect_req {
    rete_view scheme; /* "http" or "https" */
    rete_view host;   /* authority; a ":port" suffix is dropped */
    uint16_t port;    /* the port the request came for (the "listener" port) */
    rete_view path;   /* :path, query included */
} rete_route_redirect_req;

/* Build the Location of a RequestRedirect filter into out (NUL-terminated)
 * and its status into *status (f->status_code, default 302). Gateway API:
 * scheme and hostname default to the request's; the port is f->port, else
 * the well-known port of f->scheme when it is set, else the request's port;
 * it is left out when it is the scheme's default (http 80, https 443).
 * Returns the length written, RETE_ELIMIT when out is too small, RETE_EINVAL
 * when the path modifier cannot apply. */
RETE_MUST_CHECK int rete_route_redirect_location(const rete_route_entry *e,
                                                 const rete_http_filter *f,
                                                 const rete_route_redirect_req *req, char *out,
                                                 size_t outlen, int *status);

/* Free this thread's regex match data (made on its first regex match);
 * worker threads call it before they exit. Safe to call more than once. */
void rete_route_thread_cleanup(void);

#endif
