#include "dispatch.h"
#include "alloc.h"
#include "authz.h"
#include "codec.h"
#include "config.h"
#include "json_out.h"
#include "lb.h"
#include "log.h"
#include "path_norm.h"
#include "route.h"
#include "telemetry.h"
#include "worker.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

FILE *rete_access_log;

static void local_text(rete_exchange *ex, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void local_text(rete_exchange *ex, int status, const char *fmt, ...)
{
    char body[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof(body) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof(body) - 2)
        n = sizeof(body) - 2;
    body[n++] = '\n';
    if (ex->tunnel) {
        /* Nothing to answer on a raw connection: close it. */
        rete_ex_fail(ex, RETE_UPSTREAM, ex->error ? ex->error : RETE_EXE_NO_ROUTE, body);
        return;
    }
    rete_ex_local_response(ex, status, "text/plain; charset=utf-8", body, (size_t)n);
}

static void on_route_timeout(uv_timer_t *t)
{
    rete_exchange *ex = t->data;
    ex->timer_active = false;
    if (ex->head_sent || !ex->attached[RETE_DOWNSTREAM]) {
        /* Too late for a 504: abort both sides. */
        ex->error = RETE_EXE_TIMEOUT;
        if (ex->attached[RETE_UPSTREAM])
            ex->ops[RETE_UPSTREAM]->on_abort(ex);
        if (ex->attached[RETE_DOWNSTREAM])
            ex->ops[RETE_DOWNSTREAM]->on_abort(ex);
        return;
    }
    ex->error = RETE_EXE_TIMEOUT;
    snprintf(ex->error_detail, sizeof(ex->error_detail), "route timeout");
    if (ex->attached[RETE_UPSTREAM])
        ex->ops[RETE_UPSTREAM]->on_abort(ex);
    if (ex->attached[RETE_DOWNSTREAM])
        local_text(ex, 504, "upstream request timeout");
}

static void apply_header_modifier(rete_exchange *ex, rete_msg *m, const rete_header_modifier *h)
{
    for (size_t i = 0; i < h->n_remove; i++)
        rete_msg_remove(m, rete_view_cstr(h->remove[i]));
    for (size_t i = 0; i < h->n_set; i++)
        rete_msg_set(ex, m, rete_view_cstr(h->set[i].name), rete_view_cstr(h->set[i].value));
    for (size_t i = 0; i < h->n_add; i++)
        rete_msg_add(ex, m, rete_view_cstr(h->add[i].name), rete_view_cstr(h->add[i].value));
}

/* Start the upstream codec `id` towards ip:port (tls and expected_id: mesh h2 only). */
static void upstream(rete_exchange *ex, rete_codec_id id, const char *ip, uint16_t port, bool tls,
                     const char *expected_id)
{
    const rete_upstream_target t = {.ip = ip, .port = port, .tls = tls, .expected_id = expected_id};
    rete_codec_get(id)->upstream_start(ex, &t);
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

static bool tunnel_is_raw(const rete_exchange *ex)
{
    /* TCP and CONNECT tunnels route with TCPRoute semantics; HTTP/1.1
     * upgrades (WebSocket) route like the HTTP request they start as. */
    return ex->tunnel && rete_view_eq(ex->req.method, RETE_VIEW_LIT("CONNECT"));
}

/* Send the exchange to one endpoint of `svc` on service port `port`. */
static void to_service(rete_exchange *ex, const rete_service *svc, uint16_t port)
{
    const rete_service_port *sp = service_port(svc, port);
    if (!sp) {
        local_text(ex, 500, "service %s/%s has no port %u", svc->ns, svc->name, port);
        return;
    }
    if (tunnel_is_raw(ex) && sp->protocol != RETE_PROTO_TCP) {
        /* Raw bytes to an HTTP port would reach the app unparsed: no
         * header sanitising, no per-request policy at the destination. */
        ex->error = RETE_EXE_BAD_REQUEST;
        local_text(ex, 400, "port %u of service %s/%s speaks HTTP: send HTTP requests, not a tunnel",
                   port, svc->ns, svc->name);
        return;
    }
    /* Circuit breaking (DestinationRule connectionPool.http.http2MaxRequests):
     * requests in flight to the service, counted per worker. */
    size_t si = (size_t)(svc - ex->gen->cfg->services);
    /* Fair share (docs/security.md): once half of the budget is in use, an
     * HTTP/2 downstream connection that already holds 1/64 of it (at least
     * one) is refused, so a few connections of stalled streams cannot take
     * the whole budget from every other caller. */
    uint32_t max = svc->policy.max_requests;
    uint32_t share = max / 64 ? max / 64 : 1;
    if (ex->ds_held && *ex->ds_held >= share && ex->gen->in_flight[si] >= max / 2) {
        ex->error = RETE_EXE_OVERFLOW;
        rete_stat(ex->worker, ex->worker->ms.cb_rejections, 1);
        rete_stat(ex->worker, ex->worker->ms.h2_abuse[RETE_H2_ABUSE_BUDGET_SHARE], 1);
        local_text(ex, 503, "circuit breaker: this connection holds its share (%u) of the %u requests "
                   "allowed in flight to %s/%s", share, max, svc->ns, svc->name);
        return;
    }
    if (ex->gen->in_flight[si] >= svc->policy.max_requests) {
        ex->error = RETE_EXE_OVERFLOW;
        rete_stat(ex->worker, ex->worker->ms.cb_rejections, 1);
        local_text(ex, 503, "circuit breaker open: %u requests in flight to %s/%s", ex->gen->in_flight[si],
                   svc->ns, svc->name);
        return;
    }
    struct rete_lb *lb = rete_gen_lb(ex->gen, svc);
    rete_lb_context ctx = {hash_key(ex, &svc->policy), -1};
    int idx = lb ? rete_lb_pick(lb, &ctx, uv_hrtime()) : -1;
    if (idx < 0) {
        ex->error = RETE_EXE_NO_HEALTHY;
        local_text(ex, 503, "no healthy endpoint for service %s/%s", svc->ns, svc->name);
        return;
    }
    rete_lb_start(lb, idx);
    ex->service = svc;
    ex->endpoint = idx;
    ex->gen->in_flight[si]++;
    ex->in_flight = true;
    if (ex->ds_held)
        (*ex->ds_held)++;
    const rete_workload *wl = svc->endpoints[idx];
    uint16_t target = sp->target_port ? sp->target_port : sp->port;
    ex->target_port = target;
    char addr[80];
    snprintf(addr, sizeof(addr), "%s:%u", wl->address, target);
    if (ex->tunnel)
        rete_telemetry_tunnel_open(ex);
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
        upstream(ex, RETE_CODEC_H2, wl->address, wl->mesh_port, true, wl->spiffe_id);
        return;
    }
    if (ex->tunnel)
        upstream(ex, RETE_CODEC_TCP, wl->address, target, false, NULL);
    else if (sp->protocol == RETE_PROTO_HTTP2 || sp->protocol == RETE_PROTO_GRPC)
        upstream(ex, RETE_CODEC_H2, wl->address, target, false, NULL);
    else
        upstream(ex, RETE_CODEC_H1_CLIENT, wl->address, target, false, NULL);
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

static void dispatch_outbound(rete_exchange *ex)
{
    const rete_config *cfg = ex->gen->cfg;
    const rete_route_table *t = ex->table;
    if (!t) {
        if (!ex->req.authority.len) {
            ex->error = RETE_EXE_BAD_REQUEST;
            local_text(ex, 400, "request has no Host or :authority");
            return;
        }
        t = rete_config_find_table(cfg, ex->req.authority, 80);
        if (!t) {
            /* An app that addresses the proxy itself (https://echo:15001/)
             * names the proxy's port, not the service's: use the host. */
            rete_view host = strip_port_if(ex->req.authority, cfg->proxy.outbound.port);
            if (host.len != ex->req.authority.len)
                t = rete_config_find_table(cfg, host, 80);
        }
        if (!t) {
            ex->error = RETE_EXE_NO_ROUTE;
            local_text(ex, 404, "no service in the mesh is named \"%.*s\"", (int)ex->req.authority.len,
                       ex->req.authority.p);
            return;
        }
        ex->table = t;
    }
    uint32_t rnd = (uint32_t)rete_worker_rand(ex->worker);
    if (tunnel_is_raw(ex)) {
        const rete_backend_ref *b =
            rete_route_pick_backend(t->tcp_backends, t->n_tcp_backends, t->tcp_total_weight, rnd);
        if (!b) {
            ex->error = RETE_EXE_NO_ROUTE;
            local_text(ex, 500, "no backend");
            return;
        }
        to_service(ex, b->service, b->port ? b->port : t->port);
        return;
    }
    rete_route_request rr = {ex->req.method, ex->req.path, ex->req.headers, ex->req.n_headers};
    const rete_route_entry *e = rete_route_match(t, &rr);
    if (!e) {
        ex->error = RETE_EXE_NO_ROUTE;
        local_text(ex, 404, "no route of service %s/%s matches %.*s %.*s", t->service->ns,
                   t->service->name, (int)ex->req.method.len, ex->req.method.p,
                   (int)ex->req.path.len, ex->req.path.p);
        return;
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
                local_text(ex, 500, "redirect could not be built");
                return;
            }
            rete_ex_local_redirect(ex, status, rete_view_make(loc, (size_t)n));
            return;
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
                    local_text(ex, 500, "route %s/%s: URLRewrite could not apply", e->route->ns,
                               e->route->name);
                    return;
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
    const rete_backend_ref *b =
        rete_route_pick_backend(rule->backends, rule->n_backends, rule->total_weight, rnd);
    if (!b) {
        local_text(ex, 500, "route %s/%s has no backend with weight", e->route->ns, e->route->name);
        return;
    }
    /* Without retries the one try is the whole request: the shorter of
     * timeouts.request and timeouts.backendRequest bounds it. */
    uint32_t timeout = rule->timeout_ms;
    if (rule->backend_timeout_ms && (!timeout || rule->backend_timeout_ms < timeout))
        timeout = rule->backend_timeout_ms;
    if (timeout && !ex->tunnel) {
        ex->timer_active = true;
        rete_ex_timer_start(ex, on_route_timeout, timeout);
    }
    to_service(ex, b->service, b->port ? b->port : t->port);
}

static bool parse_port(rete_view v, uint16_t *port)
{
    uint64_t n;
    if (!rete_view_to_u64(v, &n) || n == 0 || n > 65535)
        return false;
    *port = (uint16_t)n;
    return true;
}

/* AuthorizationPolicy for one inbound request or tunnel, before any byte goes
 * to the app. Returns false when it was denied (and answered: 403 naming the
 * policy, or a closed tunnel). */
static bool authorize_inbound(rete_exchange *ex, uint16_t port)
{
    const rete_config *cfg = ex->gen->cfg;
    if (cfg->n_authz == 0)
        return true;
    const char *id = ex->peer_id[0] ? ex->peer_id : NULL;
    rete_view method = tunnel_is_raw(ex) ? RETE_VIEW_NULL : ex->req.method;
    rete_authz_decision d = rete_authz_check_request(cfg, id, method, ex->req.path, port,
                                                     ex->req.headers, ex->req.n_headers);
    if (d.audit)
        rete_info("authz: audit policy %s/%s matched %.*s %.*s from %s", d.audit_policy->ns,
                  d.audit_policy->name, (int)ex->req.method.len, ex->req.method.p,
                  (int)ex->req.path.len, ex->req.path.p, id ? id : ex->downstream_addr);
    if (d.action == RETE_AUTHZ_ALLOW)
        return true;
    rete_stat(ex->worker, ex->worker->ms.authz_denied, 1);
    rete_info("authz: denied %.*s %.*s port %u from %s by policy %s/%s%s", (int)ex->req.method.len,
              ex->req.method.p, (int)ex->req.path.len, ex->req.path.p, port,
              id ? id : ex->downstream_addr, d.policy->ns, d.policy->name,
              d.no_allow_match ? " (no ALLOW policy matched)" : "");
    ex->error = RETE_EXE_DENIED;
    local_text(ex, 403, "RBAC: access denied by policy %s/%s", d.policy->ns, d.policy->name);
    return false;
}

static void dispatch_inbound(rete_exchange *ex)
{
    const rete_config *cfg = ex->gen->cfg;
    const rete_proxy_spec *p = &cfg->proxy;
    uint16_t port = 0;
    if (tunnel_is_raw(ex) && ex->req.authority.len) {
        ptrdiff_t colon = -1;
        for (size_t i = 0; i < ex->req.authority.len; i++)
            if (ex->req.authority.p[i] == ':')
                colon = (ptrdiff_t)i;
        if (colon < 0 || !parse_port(rete_view_sub(ex->req.authority, (size_t)colon + 1,
                                                   ex->req.authority.len), &port)) {
            local_text(ex, 400, "CONNECT authority must be ip:port");
            return;
        }
    } else {
        rete_view h = rete_msg_get(&ex->req, RETE_VIEW_LIT(RETE_TARGET_PORT_HEADER));
        if (h.p && !parse_port(h, &port)) {
            local_text(ex, 400, "bad " RETE_TARGET_PORT_HEADER);
            return;
        }
        rete_msg_remove(&ex->req, RETE_VIEW_LIT(RETE_TARGET_PORT_HEADER));
    }
    if (!port)
        port = ex->target_port;
    if (!port && p->n_inbound_ports == 1)
        port = p->inbound_ports[0].port;
    if (!authorize_inbound(ex, port))
        return;
    const rete_inbound_port *ip = NULL;
    for (size_t i = 0; i < p->n_inbound_ports; i++)
        if (p->inbound_ports[i].port == port)
            ip = &p->inbound_ports[i];
    if (!ip) {
        /* Never a relay: only ports this workload declared. */
        ex->error = RETE_EXE_NO_ROUTE;
        local_text(ex, 404, "workload %s/%s serves no port %u", p->ns, p->name, port);
        return;
    }
    if (tunnel_is_raw(ex) && !ex->peer_id[0] && ip->protocol != RETE_PROTO_TCP) {
        /* From outside the mesh, an HTTP port gets HTTP: raw bytes would
         * reach the app with whatever headers they carry. (From a peer
         * proxy, a tunnel to an HTTP port is an upgrade it has vetted.) */
        ex->error = RETE_EXE_BAD_REQUEST;
        local_text(ex, 400, "port %u speaks HTTP: send HTTP requests, not a tunnel", port);
        return;
    }
    ex->target_port = port;
    /* Only this proxy vouches for a caller: whatever the client claimed is
     * dropped (Envoy's SANITIZE_SET), on plaintext and on tunnels alike. */
    rete_msg_remove(&ex->req, RETE_VIEW_LIT("x-forwarded-client-cert"));
    if (ex->peer_id[0] && !ex->tunnel) {
        /* Tell the app who called, as Envoy's XFCC does. */
        char xfcc[400];
        snprintf(xfcc, sizeof(xfcc), "By=%s;URI=%s", p->spiffe_id, ex->peer_id);
        rete_msg_set(ex, &ex->req, RETE_VIEW_LIT("x-forwarded-client-cert"),
                     rete_ex_dup(ex, rete_view_cstr(xfcc)));
    }
    if (ex->tunnel) {
        rete_telemetry_tunnel_open(ex);
        upstream(ex, RETE_CODEC_TCP, p->app_address, port, false, NULL);
    } else if (ip->protocol == RETE_PROTO_HTTP2 || ip->protocol == RETE_PROTO_GRPC)
        upstream(ex, RETE_CODEC_H2, p->app_address, port, false, NULL);
    else if (ip->protocol == RETE_PROTO_TCP)
        local_text(ex, 400, "port %u is a TCP port", port);
    else
        upstream(ex, RETE_CODEC_H1_CLIENT, p->app_address, port, false, NULL);
}

bool rete_dispatch_normalize_path(rete_exchange *ex)
{
    if (ex->path_normalized)
        return ex->path_refused == RETE_PATH_OK;
    ex->path_normalized = true;
    if (!ex->req.path.p)
        return true; /* CONNECT (authority-form) and raw TCP have no path */
    rete_view in = ex->req.path;
    /* The result is never longer than the input (path_norm.h). */
    char *out = rete_arena_alloc(ex->arena, in.len ? in.len : 1);
    size_t n = 0;
    rete_path_norm_result r = rete_path_normalize(in, ex->gen->cfg->path_norm, out, in.len, &n);
    if (r != RETE_PATH_OK) {
        ex->path_refused = (uint8_t)r;
        rete_stat(ex->worker, ex->worker->ms.path_rejected[r], 1);
        rete_debug("path refused (%s) on %s from %s", rete_path_norm_reason(r),
                   ex->listener ? ex->listener : "-", ex->downstream_addr);
        return false;
    }
    ex->req.path = rete_view_make(out, n);
    return true;
}

void rete_dispatch(rete_exchange *ex)
{
    if (!rete_dispatch_normalize_path(ex)) {
        /* Nothing downstream of here may see a path other than the one
         * authorised: refuse what cannot be normalised safely. */
        ex->error = RETE_EXE_BAD_REQUEST;
        local_text(ex, 400, "bad request path: %s",
                   rete_path_norm_reason((rete_path_norm_result)ex->path_refused));
        return;
    }
    if (ex->admin)
        rete_admin_handle(ex);
    else if (ex->inbound)
        dispatch_inbound(ex);
    else
        dispatch_outbound(ex);
}

void rete_dispatch_response_filters(rete_exchange *ex)
{
    if (!ex->route)
        return;
    const rete_http_rule *rule = ex->route->rule;
    for (size_t i = 0; i < rule->n_filters; i++)
        if (rule->filters[i].kind == RETE_FILTER_RESPONSE_HEADER)
            apply_header_modifier(ex, &ex->resp, &rule->filters[i].headers);
}

static void access_log(const rete_exchange *ex, int status, double ms)
{
    if (!rete_access_log)
        return;
    const rete_config *cfg = ex->gen->cfg;
    rete_view rid = rete_msg_get(&ex->req, RETE_VIEW_LIT("x-request-id"));
    /* Every value an app or a client chose goes through the escaper: a
     * quote in a path or a request id can never add or override a key.
     * Each client-chosen field has a length cap, so the worst case (every
     * byte escaped to 6) fits the line and nothing is dropped. */
    char line[8192], who[256];
    snprintf(who, sizeof(who), "%s/%s", cfg->proxy.ns, cfg->proxy.name);
    const char *upstream = ex->service ? ex->service->name : "-";
    const char *peer = ex->peer_id[0] ? ex->peer_id : ex->downstream_addr;
    const char *listener = ex->listener ? ex->listener : "-";
    const char *flags = rete_ex_error_flag(ex->error);
    rete_jbuf b;
    rete_jbuf_init(&b, line, sizeof(line), 32);
    rete_jbuf_raw(&b, "{");
    rete_jbuf_str(&b, "proxy", who, strlen(who), 0);
    rete_jbuf_str(&b, "listener", listener, strlen(listener), 0);
    rete_jbuf_str(&b, "method", ex->req.method.p, ex->req.method.len, 32);
    rete_jbuf_str(&b, "authority", ex->req.authority.p, ex->req.authority.len, 256);
    rete_jbuf_str(&b, "path", ex->req.path.p, ex->req.path.len, 512);
    rete_jbuf_int(&b, "status", status);
    rete_jbuf_str(&b, "flags", flags, strlen(flags), 0);
    rete_jbuf_num(&b, "duration_ms", ms);
    rete_jbuf_int(&b, "bytes_in", (long long)ex->req_bytes);
    rete_jbuf_int(&b, "bytes_out", (long long)ex->resp_bytes);
    rete_jbuf_str(&b, "upstream", upstream, strlen(upstream), 0);
    rete_jbuf_str(&b, "peer", peer, strlen(peer), 0);
    rete_jbuf_str(&b, "request_id", rid.p, rid.len, 128);
    if (b.truncated)
        rete_jbuf_raw(&b, ",\"truncated\":true");
    rete_jbuf_raw_end(&b, "}\n");
    fputs(line, rete_access_log);
    fflush(rete_access_log);
}

void rete_dispatch_release_share(rete_exchange *ex)
{
    if (ex->ds_held && ex->in_flight)
        (*ex->ds_held)--;
    ex->ds_held = NULL;
}

void rete_dispatch_finish(rete_exchange *ex)
{
    if (ex->done)
        return;
    ex->done = true;
    if (ex->timer_active) {
        uv_timer_stop(&ex->timer);
        ex->timer_active = false;
    }
    uint64_t now = uv_hrtime();
    uint64_t dur = now - ex->start_ns;
    int status = ex->head_sent ? ex->resp.status : 0;
    rete_worker *w = ex->worker;
    int cls = status / 100;
    if (cls < 0 || cls > 5)
        cls = 0;
    rete_stat(w, w->ms.responses[cls], 1);
    rete_metrics_observe(w->shard, w->ms.duration, (double)dur / 1e9);
    if (ex->tunnel)
        rete_telemetry_tunnel_close(ex);
    else if (!ex->admin)
        rete_telemetry_request(ex, status, dur);
    double ms = (double)dur / 1e6;
    if (ex->in_flight) {
        rete_dispatch_release_share(ex);
        ex->gen->in_flight[ex->service - ex->gen->cfg->services]--;
        ex->in_flight = false;
    }
    if (ex->service && ex->endpoint >= 0) {
        struct rete_lb *lb = rete_gen_lb(ex->gen, ex->service);
        if (lb && rete_lb_finish(lb, ex->endpoint, dur,
                                 status >= 500 || status == 0 || ex->error == RETE_EXE_CONNECT, now))
            rete_telemetry_lb_ejection(ex->worker, ex->service);
    }
    access_log(ex, status, ms);
}

static void gen_free(rete_gen *g)
{
    rete_telemetry_cache_free(&g->tel);
}

static const rete_request_path request_path = {
    .request = rete_dispatch,
    .normalize_path = rete_dispatch_normalize_path,
    .response = rete_dispatch_response_filters,
    .finish = rete_dispatch_finish,
    .release_share = rete_dispatch_release_share,
    .gen_free = gen_free,
};

void rete_http_register(void)
{
    rete_request_path_set(&request_path);
}
