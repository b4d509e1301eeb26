/* Pass 2 of the configuration loader: the raw resources of one stream
 * (config_raw.h) -> a resolved rete_config. Workloads get their SPIFFE IDs,
 * Services their endpoints and DestinationRule policy, routes their parent
 * and backend Services, the proxy its upstreams, inbound ports, effective
 * mTLS mode and the authorization policies that select it; then route.c
 * builds the route tables.
 *
 * Separate from the document pass (config.c) because it never sees YAML:
 * it works on references between resources that the field tables
 * (config_fields.c) have already validated one by one. */
#include "config_raw.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

#include "alloc.h"
#include "arena.h"
#include "cidr.h"
#include "defaults.h"
#include "route.h"
#include "spiffe.h"

/* The DNS domain of Service names (name.ns.svc.cluster.local), as Kubernetes
 * defaults it; not the trust domain (RETE_DEFAULT_TRUST_DOMAIN). */
#define CLUSTER_DOMAIN RETE_CLUSTER_DOMAIN


/* ---- pass 2: resolution ----------------------------------------------------------- */

static rete_rc res_fail(loader *l, int doc, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static rete_rc res_fail(loader *l, int doc, const char *path, const char *fmt, ...)
{
    va_list ap;
    l->ctx.err->document = doc;
    snprintf(l->ctx.err->path, sizeof(l->ctx.err->path), "%s", path);
    va_start(ap, fmt);
    vsnprintf(l->ctx.err->reason, sizeof(l->ctx.err->reason), fmt, ap);
    va_end(ap);
    return RETE_EINVAL;
}

static bool labels_select(const rete_label *sel, size_t n_sel, const rete_label *labels, size_t n)
{
    for (size_t i = 0; i < n_sel; i++) {
        bool found = false;
        for (size_t j = 0; j < n && !found; j++)
            found = strcmp(sel[i].key, labels[j].key) == 0 &&
                    strcmp(sel[i].value, labels[j].value) == 0;
        if (!found)
            return false;
    }
    return true;
}

static bool view_ieq_cstr(rete_view v, const char *s)
{
    return rete_view_ieq(v, rete_view_cstr(s));
}

/* A service by the host a client (or a resource) names it with: "name", "name.ns",
 * "name.ns.svc", "name.ns.svc.cluster.local", any case, optional trailing dot. */
const rete_service *cfg_service_by_host(const rete_service *svcs, size_t n, rete_view host,
                                        const char *default_ns)
{
    if (host.len && host.p[host.len - 1] == '.')
        host.len--;
    rete_view suffixes[] = {RETE_VIEW_LIT(".svc." CLUSTER_DOMAIN), RETE_VIEW_LIT(".svc")};
    for (size_t i = 0; i < CFG_ARRAY_LEN(suffixes); i++)
        if (rete_view_ihas_suffix(host, suffixes[i])) {
            host.len -= suffixes[i].len;
            if (rete_view_find(host, '.') < 0)
                return NULL; /* "name.svc" is not a form we accept */
            break;
        }
    ptrdiff_t dot = rete_view_find(host, '.');
    rete_view name = dot < 0 ? host : rete_view_sub(host, 0, (size_t)dot);
    rete_view ns =
        dot < 0 ? rete_view_cstr(default_ns) : rete_view_sub(host, (size_t)dot + 1, host.len);
    if (name.len == 0 || rete_view_find(ns, '.') >= 0)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (view_ieq_cstr(name, svcs[i].name) && view_ieq_cstr(ns, svcs[i].ns))
            return &svcs[i];
    return NULL;
}

static const rete_service *service_by_name(const rete_config *cfg, const char *ns, const char *name)
{
    for (size_t i = 0; i < cfg->n_services; i++)
        if (strcmp(cfg->services[i].name, name) == 0 && strcmp(cfg->services[i].ns, ns) == 0)
            return &cfg->services[i];
    return NULL;
}

bool cfg_service_has_port(const rete_service *s, uint16_t port)
{
    for (size_t i = 0; i < s->n_ports; i++)
        if (s->ports[i].port == port)
            return true;
    return false;
}

static char *arena_printf(rete_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static char *arena_printf(rete_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = rete_arena_alloc(a, (size_t)(n > 0 ? n : 0) + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static void resolve_workloads(loader *l, const char *trust_domain)
{
    rete_workload *w = rete_arena_alloc(l->ctx.arena, (l->count[RETE_KIND_WORKLOAD] + 1) * sizeof(*w));
    size_t i = 0;
    for (raw_res *r = l->head[RETE_KIND_WORKLOAD]; r; r = r->next, i++) {
        w[i] = ((raw_workload *)r)->w;
        w[i].name = r->meta.name;
        w[i].ns = r->meta.ns;
        w[i].spiffe_id = arena_printf(l->ctx.arena, RETE_SPIFFE_WORKLOAD_FMT, trust_domain,
                                      w[i].ns, w[i].service_account);
    }
    l->cfg->workloads = w;
    l->cfg->n_workloads = i;
}

/* Workloads ordered by namespace, then by their place in the configuration
 * (they are one array): a Service's endpoints keep the document order the
 * balancers (ring hash, Maglev) were built on. */
static int workload_ns_cmp(const void *a, const void *b)
{
    const rete_workload *x = *(const rete_workload *const *)a, *y = *(const rete_workload *const *)b;
    int c = strcmp(x->ns, y->ns);
    return c ? c : (x < y ? -1 : x > y);
}

/* [*first, *end) of the workloads of namespace ns in by_ns. */
static void ns_range(const rete_workload *const *by_ns, size_t n, const char *ns, size_t *first, size_t *end)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(by_ns[mid]->ns, ns) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *first = lo;
    for (hi = n; lo < hi;) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(by_ns[mid]->ns, ns) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *end = lo;
}

static rete_rc resolve_cluster_ips(loader *l, rete_service *s, size_t n);

/* A Service's externalName (which has no selector, so no other endpoint):
 * an IP literal is its one endpoint; a DNS name has the addresses the
 * proxy resolved (l->ext, from rete_config_rebuild), none until then. Each
 * becomes a synthetic Workload outside the mesh, named after the host, in
 * the Service's namespace. */
static void external_endpoints(loader *l, rete_service *svc, const char *host)
{
    rete_arena *a = l->ctx.arena;
    svc->external_name = host;
    const char *literal[1] = {host};
    const char *const *addrs = literal;
    size_t n = 0;
    if (cfg_is_ip(host)) {
        n = 1;
    } else {
        for (size_t k = 0; k < l->n_ext; k++)
            if (strcmp(l->ext[k].host, host) == 0) {
                addrs = l->ext[k].addrs;
                n = l->ext[k].n_addrs;
                break;
            }
    }
    rete_workload *w = rete_arena_alloc(a, (n + 1) * sizeof(*w));
    const rete_workload **eps = rete_arena_alloc(a, (n + 1) * sizeof(*eps));
    for (size_t k = 0; k < n; k++) {
        w[k] = (rete_workload){.name = host,
                               .ns = svc->ns,
                               .address = rete_arena_strndup(a, addrs[k], strlen(addrs[k])),
                               .service_account = "default",
                               .weight = 1,
                               .in_mesh = false,
                               .ready = true};
        eps[k] = &w[k];
    }
    svc->endpoints = eps;
    svc->n_endpoints = n;
}

static rete_rc resolve_services(loader *l)
{
    rete_config *cfg = l->cfg;
    rete_arena *a = l->ctx.arena;
    raw_dr defaults = {0};
    RETE_GUARD(cfg_decode(&l->ctx, &cfg_policy_schema, NULL, &defaults));

    rete_service *s = rete_arena_alloc(a, (l->count[RETE_KIND_SERVICE] + 1) * sizeof(*s));
    /* Workloads by namespace, so that each Service looks at its own
     * namespace's only (a mesh of 1000 Services and 10000 Workloads made
     * ten million comparisons here). */
    const rete_workload **by_ns = rete_malloc((cfg->n_workloads + 1) * sizeof(*by_ns));
    const rete_workload **scratch = rete_malloc((cfg->n_workloads + 1) * sizeof(*scratch));
    for (size_t w = 0; w < cfg->n_workloads; w++)
        by_ns[w] = &cfg->workloads[w];
    qsort(by_ns, cfg->n_workloads, sizeof(*by_ns), workload_ns_cmp);
    size_t i = 0;
    for (raw_res *r = l->head[RETE_KIND_SERVICE]; r; r = r->next, i++) {
        const raw_service *rs = (const raw_service *)r;
        s[i].name = r->meta.name;
        s[i].ns = r->meta.ns;
        s[i].fqdn = arena_printf(a, "%s.%s.svc." CLUSTER_DOMAIN, s[i].name, s[i].ns);
        rete_service_port *ports = rete_arena_alloc(a, rs->n_ports * sizeof(*ports));
        for (size_t p = 0; p < rs->n_ports; p++)
            ports[p] = rs->ports[p].p;
        s[i].ports = ports;
        s[i].n_ports = rs->n_ports;
        s[i].selector = rs->selector;
        s[i].n_selector = rs->n_selector;
        s[i].policy = defaults.p;
        /* Endpoints: the Workloads of the Service's namespace (a range of
         * by_ns) whose labels it selects. */
        size_t w = 0, end = 0, n_eps = 0;
        if (rs->n_selector)
            ns_range(by_ns, cfg->n_workloads, s[i].ns, &w, &end);
        for (; w < end; w++)
            if (labels_select(rs->selector, rs->n_selector, by_ns[w]->labels, by_ns[w]->n_labels))
                scratch[n_eps++] = by_ns[w];
        const rete_workload **eps = rete_arena_alloc(a, (n_eps + 1) * sizeof(*eps));
        memcpy(eps, scratch, n_eps * sizeof(*eps));
        s[i].endpoints = eps;
        s[i].n_endpoints = n_eps;
        if (rs->external_name)
            external_endpoints(l, &s[i], rs->external_name);
    }
    free(by_ns);
    free(scratch);
    cfg->services = s;
    cfg->n_services = i;
    RETE_GUARD(resolve_cluster_ips(l, s, i));

    int *dr_doc = rete_arena_alloc(a, (i + 1) * sizeof(*dr_doc));
    for (raw_res *r = l->head[RETE_KIND_DESTINATION_RULE]; r; r = r->next) {
        const raw_dr *dr = (const raw_dr *)r;
        const rete_service *svc = cfg_service_by_host(s, i, rete_view_cstr(dr->host), r->meta.ns);
        if (!svc)
            return res_fail(l, r->doc, "spec.host", "unknown service %s (from namespace %s)",
                            dr->host, r->meta.ns);
        size_t idx = (size_t)(svc - s);
        if (dr_doc[idx])
            return res_fail(l, r->doc, "spec.host",
                            "service %s/%s already has a DestinationRule (document %d)", svc->ns,
                            svc->name, dr_doc[idx] - 1);
        dr_doc[idx] = r->doc + 1;
        s[idx].policy = dr->p;
    }
    return RETE_OK;
}

/* A Service's clusterIP, for the uniqueness check. */
typedef struct vip_ent {
    const char *ip;
    int doc;
    const rete_service *svc;
} vip_ent;

static int vip_cmp(const void *a, const void *b)
{
    return strcmp(((const vip_ent *)a)->ip, ((const vip_ent *)b)->ip);
}

/* clusterIP in canonical text (so fd00::1 and fd00:0::1 are one address),
 * inside MeshConfig serviceCIDR when one is set, and unique among the
 * Services: sorted, then neighbours compared. */
static rete_rc resolve_cluster_ips(loader *l, rete_service *s, size_t n)
{
    const raw_mesh *mesh = (const raw_mesh *)l->head[RETE_KIND_MESH];
    rete_cidr range;
    bool ranged = mesh && mesh->service_cidr && rete_cidr_parse(mesh->service_cidr, &range);
    if (ranged) {
        size_t i = 0;
        for (raw_res *r = l->head[RETE_KIND_SERVICE]; r; r = r->next, i++) {
            const char *ip = ((const raw_service *)r)->cluster_ip;
            if (ip && !rete_cidr_contains(&range, ip))
                return res_fail(l, r->doc, "spec.clusterIP",
                                "%s is outside MeshConfig serviceCIDR %s (service %s/%s)", ip,
                                range.text, s[i].ns, s[i].name);
        }
    }
    vip_ent *v = rete_malloc((n + 1) * sizeof(*v));
    size_t k = 0, i = 0;
    for (raw_res *r = l->head[RETE_KIND_SERVICE]; r; r = r->next, i++) {
        const char *ip = ((const raw_service *)r)->cluster_ip;
        if (!ip)
            continue;
        unsigned char bin[16];
        char canon[INET6_ADDRSTRLEN];
        int fam = strchr(ip, ':') ? AF_INET6 : AF_INET;
        if (inet_pton(fam, ip, bin) == 1 && inet_ntop(fam, bin, canon, sizeof(canon)))
            ip = arena_printf(l->ctx.arena, "%s", canon);
        s[i].cluster_ip = ip;
        v[k++] = (vip_ent){ip, r->doc, &s[i]};
    }
    qsort(v, k, sizeof(*v), vip_cmp);
    for (size_t j = 1; j < k; j++)
        if (strcmp(v[j].ip, v[j - 1].ip) == 0) {
            vip_ent a = v[j - 1], b = v[j];
            if (a.doc > b.doc) {
                vip_ent t = a;
                a = b;
                b = t;
            }
            free(v);
            return res_fail(l, b.doc, "spec.clusterIP", "%s is already the clusterIP of service %s/%s",
                            b.ip, a.svc->ns, a.svc->name);
        }
    free(v);
    return RETE_OK;
}

/* parentRefs[] or backendRefs[] entry -> service (+ port check). */
static rete_rc resolve_ref(loader *l, const raw_res *route, const raw_ref *ref, const char *path,
                           bool port_required, const rete_service **out)
{
    const char *ns = ref->ns ? ref->ns : route->meta.ns;
    const rete_service *svc = service_by_name(l->cfg, ns, ref->name);
    char p[160];
    if (!svc) {
        snprintf(p, sizeof(p), "%s.name", path);
        return res_fail(l, route->doc, p, "unknown service %s/%s", ns, ref->name);
    }
    if ((ref->port || port_required) && !cfg_service_has_port(svc, ref->port)) {
        snprintf(p, sizeof(p), "%s.port", path);
        return res_fail(l, route->doc, p, "service %s/%s has no port %u", ns, ref->name, ref->port);
    }
    *out = svc;
    return RETE_OK;
}

static rete_rc resolve_parents(loader *l, const raw_route *rr, const rete_service *const **out,
                               const uint16_t **ports_out, size_t *n)
{
    const rete_service **parents = rete_arena_alloc(l->ctx.arena, rr->n_parents * sizeof(*parents));
    uint16_t *ports = rete_arena_alloc(l->ctx.arena, rr->n_parents * sizeof(*ports));
    for (size_t i = 0; i < rr->n_parents; i++) {
        char path[64];
        snprintf(path, sizeof(path), "spec.parentRefs[%zu]", i);
        RETE_GUARD(resolve_ref(l, &rr->hdr, &rr->parents[i], path, false, &parents[i]));
        ports[i] = rr->parents[i].port;
    }
    *out = parents;
    *ports_out = ports;
    *n = rr->n_parents;
    return RETE_OK;
}

static rete_rc resolve_backends(loader *l, const raw_route *rr, size_t rule,
                                const rete_backend_ref **out, size_t *n, uint32_t *total)
{
    const raw_rule *raw = &rr->rules[rule];
    rete_backend_ref *b = rete_arena_alloc(l->ctx.arena, (raw->n_backends + 1) * sizeof(*b));
    *total = 0;
    for (size_t i = 0; i < raw->n_backends; i++) {
        char path[96];
        snprintf(path, sizeof(path), "spec.rules[%zu].backendRefs[%zu]", rule, i);
        RETE_GUARD(resolve_ref(l, &rr->hdr, &raw->backends[i], path, true, &b[i].service));
        b[i].port = raw->backends[i].port;
        b[i].weight = raw->backends[i].weight;
        *total += b[i].weight;
    }
    *out = b;
    *n = raw->n_backends;
    return RETE_OK;
}

/* A rule's RequestMirror filters name a Service (and a port of it): the
 * rule gets its own copy of its filters with the Service resolved. */
static rete_rc resolve_mirrors(loader *l, const raw_route *rr, size_t rule, rete_http_rule *out)
{
    const raw_rule *raw = &rr->rules[rule];
    rete_http_filter *f = NULL;
    for (size_t i = 0; i < raw->n_filters; i++) {
        if (raw->filters[i].f.kind != RETE_FILTER_MIRROR)
            continue;
        if (!f) {
            f = rete_arena_alloc(l->ctx.arena, (out->n_filters + 1) * sizeof(*f));
            memcpy(f, out->filters, out->n_filters * sizeof(*f));
        }
        char path[96];
        snprintf(path, sizeof(path), "spec.rules[%zu].filters[%zu].requestMirror.backendRef", rule,
                 i);
        RETE_GUARD(resolve_ref(l, &rr->hdr, &raw->filters[i].mirror_ref, path, true,
                               &f[i].mirror_service));
    }
    if (f)
        out->filters = f;
    return RETE_OK;
}

static rete_rc resolve_routes(loader *l)
{
    rete_arena *a = l->ctx.arena;
    size_t n_http = l->count[RETE_KIND_HTTP_ROUTE] + l->count[RETE_KIND_GRPC_ROUTE];
    rete_http_route *routes = rete_arena_alloc(a, (n_http + 1) * sizeof(*routes));
    size_t n = 0;
    /* merge HTTPRoutes and GRPCRoutes back into document order */
    raw_res *h = l->head[RETE_KIND_HTTP_ROUTE], *g = l->head[RETE_KIND_GRPC_ROUTE];
    while (h || g) {
        raw_res *r = (!g || (h && h->doc < g->doc)) ? h : g;
        if (r == h)
            h = h->next;
        else
            g = g->next;
        const raw_route *rr = (const raw_route *)r;
        rete_http_route *out = &routes[n++];
        out->name = r->meta.name;
        out->ns = r->meta.ns;
        out->grpc = r->kind->id == RETE_KIND_GRPC_ROUTE;
        out->hostnames = rr->hostnames;
        out->n_hostnames = rr->n_hostnames;
        out->order = (uint64_t)r->doc;
        RETE_GUARD(resolve_parents(l, rr, &out->parents, &out->parent_ports, &out->n_parents));
        rete_http_rule *rules = rete_arena_alloc(a, (rr->n_rules + 1) * sizeof(*rules));
        for (size_t i = 0; i < rr->n_rules; i++) {
            rules[i] = rr->rules[i].r;
            RETE_GUARD(resolve_backends(l, rr, i, &rules[i].backends, &rules[i].n_backends,
                                        &rules[i].total_weight));
            RETE_GUARD(resolve_mirrors(l, rr, i, &rules[i]));
        }
        out->rules = rules;
        out->n_rules = rr->n_rules;
    }
    l->cfg->http_routes = routes;
    l->cfg->n_http_routes = n;

    /* the model has one parent per TCP route: one entry per parentRef */
    size_t n_tcp = 0;
    for (raw_res *r = l->head[RETE_KIND_TCP_ROUTE]; r; r = r->next)
        n_tcp += ((const raw_route *)r)->n_parents;
    rete_tcp_route *tcp = rete_arena_alloc(a, (n_tcp + 1) * sizeof(*tcp));
    n = 0;
    for (raw_res *r = l->head[RETE_KIND_TCP_ROUTE]; r; r = r->next) {
        const raw_route *rr = (const raw_route *)r;
        const rete_service *const *parents;
        const uint16_t *ports;
        size_t n_parents;
        const rete_backend_ref *backends;
        size_t n_backends;
        uint32_t total;
        RETE_GUARD(resolve_parents(l, rr, &parents, &ports, &n_parents));
        RETE_GUARD(resolve_backends(l, rr, 0, &backends, &n_backends, &total));
        for (size_t i = 0; i < n_parents; i++, n++)
            tcp[n] = (rete_tcp_route){.name = r->meta.name,
                                      .ns = r->meta.ns,
                                      .parent = parents[i],
                                      .parent_port = ports[i],
                                      .backends = backends,
                                      .n_backends = n_backends,
                                      .order = (uint64_t)r->doc};
    }
    l->cfg->tcp_routes = tcp;
    l->cfg->n_tcp_routes = n;
    return RETE_OK;
}

static const rete_workload *self_workload(const rete_config *cfg)
{
    for (size_t i = 0; i < cfg->n_workloads; i++)
        if (strcmp(cfg->workloads[i].name, cfg->proxy.name) == 0 &&
            strcmp(cfg->workloads[i].ns, cfg->proxy.ns) == 0)
            return &cfg->workloads[i];
    return NULL;
}

static rete_rc resolve_proxy(loader *l, const raw_proxy *rp)
{
    rete_config *cfg = l->cfg;
    rete_proxy_spec *p = &cfg->proxy;
    const rete_workload *self = self_workload(cfg);

    rete_upstream_listener *ups =
        rete_arena_alloc(l->ctx.arena, (rp->n_upstreams + 1) * sizeof(*ups));
    for (size_t i = 0; i < rp->n_upstreams; i++) {
        const raw_upstream *u = &rp->upstreams[i];
        char path[64];
        ups[i].listen = u->listen;
        ups[i].port = u->port;
        ups[i].service =
            cfg_service_by_host(cfg->services, cfg->n_services, rete_view_cstr(u->service), p->ns);
        if (!ups[i].service) {
            snprintf(path, sizeof(path), "spec.upstreams[%zu].service", i);
            return res_fail(l, rp->hdr.doc, path, "unknown service %s (from namespace %s)",
                            u->service, p->ns);
        }
        if (!cfg_service_has_port(ups[i].service, u->port)) {
            snprintf(path, sizeof(path), "spec.upstreams[%zu].port", i);
            return res_fail(l, rp->hdr.doc, path, "service %s/%s has no port %u",
                            ups[i].service->ns, ups[i].service->name, u->port);
        }
    }
    p->upstreams = ups;
    p->n_upstreams = rp->n_upstreams;

    if (!rp->has_inbound_ports && self) { /* the target ports of the services selecting us */
        rete_inbound_port *in = NULL;
        size_t n = 0, cap = 0;
        for (size_t s = 0; s < cfg->n_services; s++)
            for (size_t e = 0; e < cfg->services[s].n_endpoints; e++) {
                if (cfg->services[s].endpoints[e] != self)
                    continue;
                for (size_t k = 0; k < cfg->services[s].n_ports; k++) {
                    const rete_service_port *sp = &cfg->services[s].ports[k];
                    bool dup = false;
                    for (size_t j = 0; j < n && !dup; j++)
                        dup = in[j].port == sp->target_port;
                    if (dup)
                        continue;
                    RETE_ARENA_GROW(l->ctx.arena, in, n, cap, n + 1, 8);
                    in[n++] = (rete_inbound_port){sp->target_port, sp->protocol};
                }
            }
        p->inbound_ports = in;
        p->n_inbound_ports = n;
    }
    return RETE_OK;
}

/* Effective PeerAuthentication: workload selector > namespace > root namespace > MeshConfig. */
static void resolve_mtls(loader *l, const rete_workload *self, rete_mtls_mode mesh_default)
{
    const rete_config *cfg = l->cfg;
    int level_mode[3] = {MTLS_UNSET, MTLS_UNSET, MTLS_UNSET}; /* workload, namespace, mesh */
    for (raw_res *r = l->head[RETE_KIND_PEER_AUTHN]; r; r = r->next) {
        const raw_peer_authn *pa = (const raw_peer_authn *)r;
        int level;
        if (strcmp(r->meta.ns, cfg->proxy.ns) == 0 && pa->has_selector)
            level = self && labels_select(pa->selector.labels, pa->selector.n_labels, self->labels,
                                          self->n_labels)
                        ? 0
                        : -1;
        else if (strcmp(r->meta.ns, cfg->proxy.ns) == 0)
            level = 1;
        else if (strcmp(r->meta.ns, RETE_ROOT_NS) == 0 && !pa->has_selector)
            level = 2;
        else
            level = -1;
        if (level >= 0 && level_mode[level] == MTLS_UNSET) /* the first one (oldest) wins */
            level_mode[level] = pa->mode;
    }
    l->cfg->mtls_mode = mesh_default;
    for (int i = 2; i >= 0; i--)
        if (level_mode[i] != MTLS_UNSET)
            l->cfg->mtls_mode = (rete_mtls_mode)level_mode[i];
}

/* Istio semantics: a rule matches when any from[] matches (or there is none) and
 * any to[] matches (or there is none). The model's rete_authz_rule is one source AND
 * one operation, so each rule expands into the product from[] x to[], OR'd. */
static void resolve_authz(loader *l, const rete_workload *self)
{
    rete_config *cfg = l->cfg;
    rete_authz_policy *pol = rete_arena_alloc(l->ctx.arena, (l->count[RETE_KIND_AUTHZ] + 1) * sizeof(*pol));
    size_t n = 0;
    static const rete_authz_rule any = {0};
    for (raw_res *r = l->head[RETE_KIND_AUTHZ]; r; r = r->next) {
        const raw_authz *ap = (const raw_authz *)r;
        bool here = strcmp(r->meta.ns, cfg->proxy.ns) == 0;
        bool root = strcmp(r->meta.ns, RETE_ROOT_NS) == 0;
        bool selects = !ap->has_selector
                           ? (here || root)
                           : (here || root) && self &&
                                 labels_select(ap->selector.labels, ap->selector.n_labels,
                                               self->labels, self->n_labels);
        if (!selects)
            continue;
        size_t total = 0;
        for (size_t i = 0; i < ap->n_rules; i++)
            total += (ap->rules[i].n_from ? ap->rules[i].n_from : 1) *
                     (ap->rules[i].n_to ? ap->rules[i].n_to : 1);
        rete_authz_rule *rules = rete_arena_alloc(l->ctx.arena, (total + 1) * sizeof(*rules));
        size_t k = 0;
        for (size_t i = 0; i < ap->n_rules; i++) {
            const raw_authz_rule *ar = &ap->rules[i];
            for (size_t f = 0; f < (ar->n_from ? ar->n_from : 1); f++)
                for (size_t t = 0; t < (ar->n_to ? ar->n_to : 1); t++) {
                    const rete_authz_rule *src = ar->n_from ? &ar->from[f] : &any;
                    const rete_authz_rule *op = ar->n_to ? &ar->to[t] : &any;
                    rete_authz_rule *out = &rules[k++];
                    *out = *src; /* the source half, then the operation half (the tail) */
                    memcpy(&out->methods, &op->methods, sizeof(*out) - offsetof(rete_authz_rule, methods));
                }
        }
        pol[n++] =
            (rete_authz_policy){r->meta.name, r->meta.ns, (rete_authz_action)ap->action, rules, k};
    }
    cfg->authz = pol;
    cfg->n_authz = n;
}

/* HTTPLocalRateLimitPolicy: those that select this workload (as
 * AuthorizationPolicy does), overrides flattened to (SPIFFE ID, rate). */
static void resolve_rate_limits(loader *l, const rete_workload *self)
{
    rete_config *cfg = l->cfg;
    rete_rate_limit_policy *pol =
        rete_arena_alloc(l->ctx.arena, (l->count[RETE_KIND_RATE_LIMIT] + 1) * sizeof(*pol));
    size_t n = 0;
    for (raw_res *r = l->head[RETE_KIND_RATE_LIMIT]; r; r = r->next) {
        const raw_rate_limit *rl = (const raw_rate_limit *)r;
        bool here = strcmp(r->meta.ns, cfg->proxy.ns) == 0;
        bool root = strcmp(r->meta.ns, RETE_ROOT_NS) == 0;
        bool selects = (here || root) &&
                       (!rl->has_selector ||
                        (self && labels_select(rl->selector.labels, rl->selector.n_labels,
                                               self->labels, self->n_labels)));
        if (!selects)
            continue;
        size_t total = 0;
        for (size_t i = 0; i < rl->n_overrides; i++)
            total += rl->overrides[i].n_refs;
        rete_rate_override *ov = rete_arena_alloc(l->ctx.arena, (total + 1) * sizeof(*ov));
        size_t k = 0;
        for (size_t i = 0; i < rl->n_overrides; i++)
            for (size_t j = 0; j < rl->overrides[i].n_refs; j++) {
                const raw_client_ref *c = &rl->overrides[i].refs[j];
                ov[k].identity = arena_printf(l->ctx.arena, RETE_SPIFFE_WORKLOAD_FMT,
                                              cfg->proxy.trust_domain, c->ns ? c->ns : r->meta.ns,
                                              c->name);
                ov[k++].rps = rl->overrides[i].rps;
            }
        pol[n++] = (rete_rate_limit_policy){r->meta.name, r->meta.ns,  rl->port, rl->total_rps,
                                            rl->identity_rps, ov,          k};
    }
    cfg->rate_limits = pol;
    cfg->n_rate_limits = n;
}

rete_rc cfg_resolve(loader *l)
{
    rete_config *cfg = l->cfg;
    if (!l->head[RETE_KIND_PROXY])
        return res_fail(l, -1, "", "a Proxy document (apiVersion rete.dev/v1alpha1) is required");
    const raw_proxy *rp = (const raw_proxy *)l->head[RETE_KIND_PROXY];
    const raw_mesh *mesh = (const raw_mesh *)l->head[RETE_KIND_MESH];
    cfg->proxy = rp->p;
    cfg->proxy.name = rp->hdr.meta.name;
    cfg->proxy.ns = rp->hdr.meta.ns;
    if (!rp->has_trust_domain)
        cfg->proxy.trust_domain = mesh && mesh->trust_domain ? mesh->trust_domain : RETE_DEFAULT_TRUST_DOMAIN;
    cfg->proxy.spiffe_id =
        arena_printf(l->ctx.arena, RETE_SPIFFE_WORKLOAD_FMT, cfg->proxy.trust_domain,
                     cfg->proxy.ns, cfg->proxy.service_account);
    resolve_workloads(l, cfg->proxy.trust_domain);
    RETE_GUARD(resolve_services(l));
    RETE_GUARD(resolve_routes(l));
    RETE_GUARD(resolve_proxy(l, rp));
    const rete_workload *self = self_workload(cfg);
    resolve_mtls(l, self, mesh ? (rete_mtls_mode)mesh->default_mtls : RETE_MTLS_PERMISSIVE);
    cfg->path_norm = mesh ? (rete_path_norm_mode)mesh->path_norm : RETE_PATH_NORM_BASE;
    cfg->outbound_policy = mesh ? (rete_outbound_policy)mesh->outbound_policy : RETE_OUTBOUND_ALLOW_ANY;
    cfg->trace_collector = mesh ? mesh->trace_collector : NULL;
    cfg->trace_sample_ppm = mesh ? mesh->trace_ppm : 10000;
    cfg->trace_format = mesh ? (rete_trace_format)mesh->trace_format : RETE_TRACE_OTLP;
    resolve_authz(l, self);
    resolve_rate_limits(l, self);
    rete_rc rc = rete_route_build_tables(cfg, l->ctx.arena);
    if (rc)
        return res_fail(l, -1, "", "building route tables: %s", rete_rc_str(rc));
    return RETE_OK;
}
