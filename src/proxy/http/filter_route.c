/* Outbound routing and balancing: the service an authority names, the
 * Gateway API route rule that matches, the rule's filters (header
 * modifiers, redirects, rewrites), a weighted backend, circuit breaking,
 * the balancer's endpoint, then the upstream: the pooled mesh connection to
 * the endpoint's proxy, or plaintext to an endpoint outside the mesh. At
 * the end of the exchange it returns the circuit-breaker slot and tells
 * the balancer how the endpoint did. */
#include "filter.h"
#include "dispatch.h"
#include "alloc.h"
#include "breaker.h"
#include "codec.h"
#include "config.h"
#include "lb.h"
#include "log.h"
#include "retry.h"
#include "route.h"
#include "telemetry.h"
#include "worker.h"

#include <stdio.h>
#include <string.h>

static void apply_header_modifier(rete_exchange *ex, rete_msg *m, const rete_header_modifier *h)
{
    for (size_t i = 0; i < h->n_remove; i++)
        rete_msg_remove(m, rete_view_cstr(h->remove[i]));
    for (size_t i = 0; i < h->n_set; i++)
        rete_msg_set(ex, m, rete_view_cstr(h->set[i].name), rete_view_cstr(h->set[i].value));
    for (size_t i = 0; i < h->n_add; i++)
        rete_msg_add(ex, m, rete_view_cstr(h->add[i].name), rete_view_cstr(h->add[i].value));
}

static const rete_service_port *service_port(const rete_service *svc, uint16_t port)
{
    for (size_t i = 0; i < svc->n_ports; i++)
        if (svc->ports[i].port == port)
            return &svc->ports[i];
    return svc->n_ports == 1 && port == 0 ? &svc->ports[0] : NULL;
}

/* The value a consistent-hash policy hashes on (empty: none). */
static rete_view hash_key(rete_exchange *ex, const rete_traffic_policy *p)
{
    switch (p->hash_on) {
    case RETE_HASH_HEADER:
        return rete_msg_get(&ex->req, rete_view_cstr(p->hash_key));
    case RETE_HASH_COOKIE: {
        rete_view cookies = rete_msg_get(&ex->req, RETE_VIEW_LIT("cookie"));
        size_t klen = strlen(p->hash_key);
        size_t i = 0;
        while (i < cookies.len) {
            while (i < cookies.len && (cookies.p[i] == ' ' || cookies.p[i] == ';'))
                i++;
            size_t start = i;
            while (i < cookies.len && cookies.p[i] != ';')
                i++;
            rete_view pair = rete_view_make(cookies.p + start, i - start);
            if (pair.len > klen && pair.p[klen] == '=' && memcmp(pair.p, p->hash_key, klen) == 0)
                return rete_view_sub(pair, klen + 1, pair.len);
        }
        return RETE_VIEW_NULL;
    }
    case RETE_HASH_SOURCE_IP: {
        rete_view a = rete_view_cstr(ex->downstream_addr);
        ptrdiff_t colon = -1;
        for (size_t i = 0; i < a.len; i++)
            if (a.p[i] == ':')
                colon = (ptrdiff_t)i;
        return colon > 0 ? rete_view_make(a.p, (size_t)colon) : a;
    }
    case RETE_HASH_NONE:
    default:
        return RETE_VIEW_NULL;
    }
}

/* Send the exchange to one endpoint of `svc` on service port `port`, not
 * `exclude` when another is available (a retry's). */
void rete_route_try(rete_exchange *ex, const rete_service *svc, uint16_t port, int exclude)
{
    const rete_service_port *sp = service_port(svc, port);
    if (!sp) {
        rete_filter_local_text(ex, 500, "service %s/%s has no port %u", svc->ns, svc->name, port);
        return;
    }
    if (rete_tunnel_is_raw(ex) && sp->protocol != RETE_PROTO_TCP) {
        /* Raw bytes to an HTTP port would reach the app unparsed: no
         * header sanitising, no per-request policy at the destination. */
        ex->error = RETE_EXE_BAD_REQUEST;
        rete_filter_local_text(ex, 400, "port %u of service %s/%s speaks HTTP: send HTTP requests, not a tunnel",
                   port, svc->ns, svc->name);
        return;
    }
    /* Circuit breaking (DestinationRule connectionPool.http.http2MaxRequests):
     * requests in flight to the service, counted across the proxy's
     * workers (breaker.h). */
    const rete_upstream_limits *lim = rete_gen_limits(ex->gen, svc);
    rete_breaker *br = lim->breaker;
    /* Fair share (docs/security.md): once half of the budget is in use, an
     * HTTP/2 downstream connection that already holds 1/64 of it (at least
     * one) is refused, so a few connections of stalled streams cannot take
     * the whole budget from every other caller. */
    uint32_t max = svc->policy.max_requests;
    uint32_t share = max / 64 ? max / 64 : 1;
    if (ex->ds_held && *ex->ds_held >= share && rete_breaker_load(&br->requests) >= max / 2) {
        ex->error = RETE_EXE_OVERFLOW;
        rete_stat(ex->worker, ex->worker->ms.cb_rejections[RETE_BREAKER_SHARE], 1);
        rete_stat(ex->worker, ex->worker->ms.h2_abuse[RETE_H2_ABUSE_BUDGET_SHARE], 1);
        rete_filter_local_text(ex, 503, "circuit breaker: this connection holds its share (%u) of the %u requests "
                   "allowed in flight to %s/%s", share, max, svc->ns, svc->name);
        return;
    }
    if (!rete_breaker_take(&br->requests, max)) {
        ex->error = RETE_EXE_OVERFLOW;
        rete_stat(ex->worker, ex->worker->ms.cb_rejections[RETE_BREAKER_MAX_REQUESTS], 1);
        rete_filter_local_text(ex, 503, "circuit breaker open: %u requests in flight to %s/%s "
                               "(http2MaxRequests)", max, svc->ns, svc->name);
        return;
    }
    struct rete_lb *lb = rete_gen_lb(ex->gen, svc);
    rete_lb_context ctx = {hash_key(ex, &svc->policy), exclude};
    int idx = lb ? rete_lb_pick(lb, &ctx, uv_hrtime()) : -1;
    if (idx < 0) {
        rete_breaker_give(&br->requests);
        ex->error = RETE_EXE_NO_HEALTHY;
        rete_filter_local_text(ex, 503, "no healthy endpoint for service %s/%s", svc->ns, svc->name);
        return;
    }
    rete_lb_start(lb, idx);
    ex->service = svc;
    ex->endpoint = idx;
    ex->in_flight = true;
    ex->limits = lim;
    ex->wait_deadline = 0;
    if (ex->ds_held)
        (*ex->ds_held)++;
    if (ex->try_state)
        rete_retry_try_started(ex);
    ex->target_port = sp->target_port ? sp->target_port : sp->port; /* for the telemetry */
    if (ex->tunnel)
        rete_telemetry_tunnel_open(ex);
    rete_route_send(ex, svc, sp, idx);
}

void rete_route_send(rete_exchange *ex, const rete_service *svc, const rete_service_port *sp,
                     int idx)
{
    const rete_workload *wl = svc->endpoints[idx];
    uint32_t cto = svc->policy.connect_timeout_ms;
    uint16_t target = sp->target_port ? sp->target_port : sp->port;
    ex->target_port = target;
    char addr[80];
    snprintf(addr, sizeof(addr), "%s:%u", wl->address, target);
    if (wl->in_mesh) {
        if (ex->tunnel) {
            /* HBONE: CONNECT to the workload's address:port, carried on
             * the pooled mesh connection. */
            ex->req.method = RETE_VIEW_LIT("CONNECT");
            ex->req.authority = rete_ex_dup(ex, rete_view_cstr(addr));
        } else {
            char p[8];
            snprintf(p, sizeof(p), "%u", target);
            rete_msg_set(ex, &ex->req, RETE_VIEW_LIT(RETE_TARGET_PORT_HEADER),
                         rete_ex_dup(ex, rete_view_cstr(p)));
        }
        /* Who calls, for the peer's metrics (its reporter="destination"). */
        rete_msg_set(ex, &ex->req, RETE_VIEW_LIT(RETE_PEER_HEADER),
                     rete_view_cstr(rete_telemetry_peer_meta(ex->gen)));
        rete_filter_upstream(ex, RETE_CODEC_H2, wl->address, wl->mesh_port, true, wl->spiffe_id,
                             cto);
        return;
    }
    size_t si = (size_t)(svc - ex->gen->cfg->services);
    struct rete_tls_ctx *originate =
        si < ex->gen->tls->n_originate ? ex->gen->tls->originate[si] : NULL;
    if (originate && !ex->tunnel && sp->protocol == RETE_PROTO_HTTP) {
        /* DestinationRule tls SIMPLE: HTTP/1.1 over TLS, verifying the
         * server as `sni`, else the externalName, else the address. */
        const rete_upstream_target t = {
            .ip = wl->address,
            .port = target,
            .connect_timeout_ms = cto,
            .limits = ex->limits,
            .originate = originate,
            .originate_name = svc->policy.tls_sni     ? svc->policy.tls_sni
                              : svc->external_name ? svc->external_name
                                                   : wl->address};
        rete_codec_get(RETE_CODEC_H1_CLIENT)->upstream_start(ex, &t);
    } else if (originate) {
        /* Refused rather than sent in the clear: origination speaks
         * HTTP/1.1 only (docs/traffic.md, External services). */
        rete_ex_fail(ex, RETE_UPSTREAM, RETE_EXE_CONNECT,
                     "TLS origination supports HTTP/1.1 requests only (not tunnels, HTTP/2 or gRPC)");
    } else if (ex->tunnel)
        rete_filter_upstream(ex, RETE_CODEC_TCP, wl->address, target, false, NULL, cto);
    else if (sp->protocol == RETE_PROTO_HTTP2 || sp->protocol == RETE_PROTO_GRPC)
        rete_filter_upstream(ex, RETE_CODEC_H2, wl->address, target, false, NULL, cto);
    else
        rete_filter_upstream(ex, RETE_CODEC_H1_CLIENT, wl->address, target, false, NULL, cto);
}

/* How the try went, for outlier detection: a status or error of the
 * endpoint's, or one this proxy decided (a pool limit, the client leaving),
 * which says nothing of the endpoint's health. */
static rete_lb_outcome try_outcome(const rete_exchange *ex, int status, bool failed)
{
    switch (ex->error) {
    case RETE_EXE_OVERFLOW:
    case RETE_EXE_DOWNSTREAM_RESET:
    case RETE_EXE_DOWNSTREAM_TIMEOUT:
    case RETE_EXE_RATE_LIMITED:
    case RETE_EXE_FAULT:
    case RETE_EXE_NO_HEALTHY:
        return RETE_LB_LOCAL;
    case RETE_EXE_CONNECT:
    case RETE_EXE_CONNECT_TIMEOUT:
    case RETE_EXE_UPSTREAM_RESET:
    case RETE_EXE_TIMEOUT:
        return RETE_LB_GATEWAY;
    default:
        break;
    }
    if (status == 502 || status == 503 || status == 504)
        return RETE_LB_GATEWAY;
    if (status >= 500)
        return RETE_LB_5XX;
    if (failed || status == 0) /* a per-try timeout, or no response at all */
        return RETE_LB_GATEWAY;
    return RETE_LB_SUCCESS;
}

void rete_route_try_end(rete_exchange *ex, bool failed)
{
    if (ex->in_flight) {
        rete_breaker_give(&ex->limits->breaker->requests);
        ex->in_flight = false;
        if (ex->ds_held)
            (*ex->ds_held)--;
    }
    if (ex->service && ex->endpoint >= 0) {
        struct rete_lb *lb = rete_gen_lb(ex->gen, ex->service);
        uint64_t now = uv_hrtime();
        unsigned n = lb ? rete_lb_done(lb, ex->endpoint, now - ex->start_ns,
                                       try_outcome(ex, ex->resp.status, failed), now)
                        : 0;
        if (n)
            rete_telemetry_lb_ejection(ex->worker, ex->service, n);
    }
    ex->endpoint = -1;
}

/* authority without its ":port" when the port is `port`; else unchanged. */
static rete_view strip_port_if(rete_view authority, uint16_t port)
{
    char suffix[8];
    int n = snprintf(suffix, sizeof(suffix), ":%u", port);
    rete_view sv = rete_view_make(suffix, (size_t)n);
    if (authority.len > sv.len && rete_view_eq(rete_view_sub(authority, authority.len - sv.len, sv.len), sv))
        return rete_view_make(authority.p, authority.len - sv.len);
    return authority;
}

/* An intercepted connection (or request) whose original destination is no
 * Service: MeshConfig outboundTrafficPolicy decides. ALLOW_ANY sends it on
 * to that destination as the app sent it, unmeshed (a tunnel's bytes over
 * TCP, a request over HTTP/1.1); REGISTRY_ONLY refuses it (a tunnel is
 * closed: it has no status to carry the 502). */
static void unknown_destination(rete_exchange *ex)
{
    const rete_config *cfg = ex->gen->cfg;
    if (cfg->outbound_policy == RETE_OUTBOUND_REGISTRY_ONLY) {
        rete_stat(ex->worker, ex->worker->ms.unknown_refused, 1);
        ex->error = RETE_EXE_NO_ROUTE;
        rete_debug("outbound: %s:%u is no service of the mesh: refused (REGISTRY_ONLY)", ex->orig_ip,
                   ex->orig_port);
        rete_filter_local_text(ex, 502, "outboundTrafficPolicy REGISTRY_ONLY: %s:%u is no service of the mesh",
                               ex->orig_ip, ex->orig_port);
        return;
    }
    rete_stat(ex->worker, ex->worker->ms.unknown_passthrough, 1);
    if (ex->tunnel) {
        rete_telemetry_tunnel_open(ex);
        rete_filter_upstream(ex, RETE_CODEC_TCP, ex->orig_ip, ex->orig_port, false, NULL,
                             RETE_PASSTHROUGH_CONNECT_TIMEOUT_MS);
    } else {
        rete_filter_upstream(ex, RETE_CODEC_H1_CLIENT, ex->orig_ip, ex->orig_port, false, NULL,
                             RETE_PASSTHROUGH_CONNECT_TIMEOUT_MS);
    }
}

/* Match the request to a rule and apply the rule's request filters.
 * Returns true when the request goes on to the rule's backends (ex->route
 * set): the filters between this one and the backend filter run first
 * (rate limit, fault, mirror); false when it is handled here (answered,
 * redirected, or a tunnel sent on). */
static bool route(rete_exchange *ex)
{
    const rete_config *cfg = ex->gen->cfg;
    const rete_route_table *t = ex->table;
    if (!t) {
        if (!ex->req.authority.len && !ex->orig_port) {
            ex->error = RETE_EXE_BAD_REQUEST;
            rete_filter_local_text(ex, 400, "request has no Host or :authority");
            return false;
        }
        t = rete_config_find_table(cfg, ex->req.authority, 80);
        if (!t) {
            /* An app that addresses the proxy itself (https://echo:15001/)
             * names the proxy's port, not the service's: use the host. */
            rete_view host = strip_port_if(ex->req.authority, cfg->proxy.outbound.port);
            if (host.len != ex->req.authority.len)
                t = rete_config_find_table(cfg, host, 80);
        }
        if (!t && ex->orig_port) {
            /* intercepted: the address the app connected to names the
             * Service (its clusterIP, or an endpoint's own address) */
            t = rete_config_find_by_addr(cfg, ex->orig_ip, ex->orig_port);
            if (!t) {
                unknown_destination(ex);
                return false;
            }
        }
        if (!t) {
            ex->error = RETE_EXE_NO_ROUTE;
            rete_filter_local_text(ex, 404, "no service in the mesh is named \"%.*s\"", (int)ex->req.authority.len,
                       ex->req.authority.p);
            return false;
        }
        ex->table = t;
    }
    uint32_t rnd = (uint32_t)rete_worker_rand(ex->worker);
    if (rete_tunnel_is_raw(ex)) {
        const rete_backend_ref *b =
            rete_route_pick_backend(t->tcp_backends, t->n_tcp_backends, t->tcp_total_weight, rnd);
        if (!b) {
            ex->error = RETE_EXE_NO_ROUTE;
            rete_filter_local_text(ex, 500, "no backend");
            return false;
        }
        rete_route_try(ex, b->service, b->port ? b->port : t->port, -1);
        return false;
    }
    rete_route_request rr = {ex->req.method, ex->req.path, ex->req.headers, ex->req.n_headers};
    const rete_route_entry *e = rete_route_match(t, &rr);
    if (!e) {
        ex->error = RETE_EXE_NO_ROUTE;
        rete_filter_local_text(ex, 404, "no route of service %s/%s matches %.*s %.*s", t->service->ns,
                   t->service->name, (int)ex->req.method.len, ex->req.method.p,
                   (int)ex->req.path.len, ex->req.path.p);
        return false;
    }
    ex->route = e;
    const rete_http_rule *rule = e->rule;
    for (size_t i = 0; i < rule->n_filters; i++) {
        const rete_http_filter *f = &rule->filters[i];
        switch (f->kind) {
        case RETE_FILTER_REQUEST_HEADER:
            apply_header_modifier(ex, &ex->req, &f->headers);
            break;
        case RETE_FILTER_REDIRECT: {
            rete_route_redirect_req rq = {ex->req.scheme, ex->req.authority, t->port, ex->req.path};
            char loc[2048];
            int status = 302;
            int n = rete_route_redirect_location(e, f, &rq, loc, sizeof(loc), &status);
            if (n < 0) {
                rete_filter_local_text(ex, 500, "redirect could not be built");
                return false;
            }
            rete_ex_local_redirect(ex, status, rete_view_make(loc, (size_t)n));
            return false;
        }
        case RETE_FILTER_URL_REWRITE: {
            if (f->hostname)
                ex->req.authority = rete_ex_dup(ex, rete_view_cstr(f->hostname));
            if (f->path_kind != RETE_PATH_KEEP) {
                /* Never forward the path unrewritten: the route decided on
                 * the rewritten one. snprintf-style: size, then write. */
                size_t n = rete_route_rewrite_path(e, f, ex->req.path, NULL, 0);
                char *path = n ? rete_arena_alloc(ex->arena, n + 1) : NULL;
                if (!path || rete_route_rewrite_path(e, f, ex->req.path, path, n + 1) != n) {
                    rete_filter_local_text(ex, 500, "route %s/%s: URLRewrite could not apply", e->route->ns,
                               e->route->name);
                    return false;
                }
                ex->req.path = rete_view_make(path, n);
            }
            break;
        }
        case RETE_FILTER_RESPONSE_HEADER:
        default:
            break;
        }
    }
    return true;
}

/* The backend filter: the rule's weighted backend, then the first try. */
static rete_filter_verdict backend_request(rete_exchange *ex)
{
    const rete_route_entry *e = ex->route;
    const rete_http_rule *rule = e->rule;
    uint32_t rnd = (uint32_t)rete_worker_rand(ex->worker);
    const rete_backend_ref *b =
        rete_route_pick_backend(rule->backends, rule->n_backends, rule->total_weight, rnd);
    if (!b) {
        rete_filter_local_text(ex, 500, "route %s/%s has no backend with weight", e->route->ns,
                               e->route->name);
        return RETE_FILTER_DONE;
    }
    uint16_t port = b->port ? b->port : ex->table->port;
    /* The rule's own circuitBreaker.maxRequests, for the whole request
     * (retries included), given back at its end (route_finish). */
    if (rule->limit_requests && !ex->tunnel) {
        rete_breaker *br = rete_breaker_of_rule(e->route->ns, e->route->name,
                                                (size_t)(rule - e->route->rules));
        if (!rete_breaker_take(&br->requests, rule->max_requests)) {
            ex->error = RETE_EXE_OVERFLOW;
            rete_stat(ex->worker, ex->worker->ms.cb_rejections[RETE_BREAKER_ROUTE_MAX_REQUESTS], 1);
            rete_filter_local_text(ex, 503, "circuit breaker open: %u requests in flight through "
                                   "route %s/%s rule %zu (circuitBreaker.maxRequests)",
                                   rule->max_requests, e->route->ns, e->route->name,
                                   (size_t)(rule - e->route->rules));
            return RETE_FILTER_DONE;
        }
        ex->rule_breaker = br;
    }
    if (!ex->tunnel)
        rete_retry_begin(ex, rule, b->service, port);
    rete_route_try(ex, b->service, port, -1);
    return RETE_FILTER_DONE;
}

const rete_filter rete_filter_backend = {
    .name = "backend",
    .on_request = backend_request,
};


static rete_filter_verdict route_request(rete_exchange *ex)
{
    return route(ex) ? RETE_FILTER_NEXT : RETE_FILTER_DONE;
}

/* The matched rule's response header modifiers. */
static void route_response(rete_exchange *ex)
{
    if (!ex->route)
        return;
    const rete_http_rule *rule = ex->route->rule;
    for (size_t i = 0; i < rule->n_filters; i++)
        if (rule->filters[i].kind == RETE_FILTER_RESPONSE_HEADER)
            apply_header_modifier(ex, &ex->resp, &rule->filters[i].headers);
}

static void route_finish(rete_exchange *ex, const rete_filter_end *end)
{
    if (ex->rule_breaker) {
        rete_breaker_give(&ex->rule_breaker->requests);
        ex->rule_breaker = NULL;
    }
    if (ex->in_flight) {
        rete_dispatch_release_share(ex);
        rete_breaker_give(&ex->limits->breaker->requests);
        ex->in_flight = false;
    }
    if (ex->service && ex->endpoint >= 0) {
        /* A request refused by a pool limit never reached the endpoint:
         * it says nothing of its health (no failure for outlier detection). */
        struct rete_lb *lb = rete_gen_lb(ex->gen, ex->service);
        rete_lb_outcome oc = try_outcome(ex, end->status, false);
        unsigned n = lb ? rete_lb_done(lb, ex->endpoint, oc == RETE_LB_LOCAL ? 0 : end->duration_ns,
                                       oc, end->now_ns)
                        : 0;
        if (n)
            rete_telemetry_lb_ejection(ex->worker, ex->service, n);
    }
}

const rete_filter rete_filter_route = {
    .name = "route",
    .on_request = route_request,
    .on_response = route_response,
    .on_finish = route_finish,
};
