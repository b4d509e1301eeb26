/* Proxy metrics: see telemetry.h for the label rules. */
#include "telemetry.h"
#include "alloc.h"
#include "config.h"
#include "csr.h"
#include "golden.h"
#include "hash.h"
#include "oatable.h"
#include "log.h"
#include "proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- label values -------------------------------------------------------- */

#define UNKNOWN RETE_VIEW_LIT("unknown")

static rete_view label_of(const rete_workload *wl, const char *k1, const char *k2)
{
    if (!wl)
        return UNKNOWN;
    for (size_t i = 0; i < wl->n_labels; i++)
        if (strcmp(wl->labels[i].key, k1) == 0)
            return rete_view_cstr(wl->labels[i].value);
    for (size_t i = 0; i < wl->n_labels; i++)
        if (strcmp(wl->labels[i].key, k2) == 0)
            return rete_view_cstr(wl->labels[i].value);
    return UNKNOWN;
}

static rete_view or_unknown(const char *s)
{
    return s && *s ? rete_view_cstr(s) : UNKNOWN;
}

/* The namespace in spiffe://<td>/ns/<ns>/sa/<sa>, "unknown" otherwise. */
static rete_view spiffe_ns(const char *id)
{
    const char *p = strstr(id, "/ns/");
    if (!p)
        return UNKNOWN;
    p += 4;
    const char *e = strchr(p, '/');
    return e > p ? rete_view_make(p, (size_t)(e - p)) : UNKNOWN;
}

typedef struct half {
    rete_view workload, ns, principal, app, version;
} half;

static half own_half(const rete_gen *g)
{
    const rete_proxy_spec *ps = &g->cfg->proxy;
    return (half){
        .workload = or_unknown(ps->name),
        .ns = or_unknown(ps->ns),
        .principal = or_unknown(ps->spiffe_id),
        .app = label_of(g->self, "app", "app.kubernetes.io/name"),
        .version = label_of(g->self, "version", "app.kubernetes.io/version"),
    };
}

static half workload_half(const rete_workload *wl, bool mtls)
{
    return (half){
        .workload = or_unknown(wl->name),
        .ns = or_unknown(wl->ns),
        .principal = mtls ? or_unknown(wl->spiffe_id) : UNKNOWN,
        .app = label_of(wl, "app", "app.kubernetes.io/name"),
        .version = label_of(wl, "version", "app.kubernetes.io/version"),
    };
}

/* The inbound caller: its SPIFFE ID, and what its proxy said of its
 * workload (RETE_PEER_HEADER), when it said it. */
static half peer_half(const rete_exchange *ex)
{
    if (!ex->peer_id[0])
        return (half){UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN};
    half h = {UNKNOWN, spiffe_ns(ex->peer_id), rete_view_cstr(ex->peer_id), UNKNOWN, UNKNOWN};
    if (ex->peer_workload.len)
        h.workload = ex->peer_workload;
    if (ex->peer_app.len)
        h.app = ex->peer_app;
    if (ex->peer_version.len)
        h.version = ex->peer_version;
    return h;
}

/* ---- peer metadata on the mesh hop -------------------------------------- */

#define PEER_VALUE_MAX 253

/* The Kubernetes label-value charset (names are a subset): what a value of
 * RETE_PEER_HEADER may hold, so it cannot carry a separator or a quote. */
static bool peer_value_ok(rete_view v)
{
    if (v.len == 0 || v.len > PEER_VALUE_MAX)
        return false;
    for (size_t i = 0; i < v.len; i++) {
        char c = v.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.'))
            return false;
    }
    return true;
}

const char *rete_telemetry_peer_meta(rete_gen *g)
{
    if (g->peer_meta)
        return g->peer_meta;
    half own = own_half(g);
    const char *keys[] = {"workload", "namespace", "app", "version"};
    rete_view vals[] = {own.workload, own.ns, own.app, own.version};
    char buf[4 * (PEER_VALUE_MAX + 12)];
    size_t n = 0;
    for (size_t i = 0; i < 4; i++)
        if (peer_value_ok(vals[i]) && !rete_view_eq(vals[i], UNKNOWN))
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s=%.*s", n ? ";" : "", keys[i],
                                  (int)vals[i].len, vals[i].p);
    g->peer_meta = rete_strndup(buf, n);
    return g->peer_meta;
}

void rete_telemetry_peer_read(rete_exchange *ex)
{
    rete_view h = rete_msg_get(&ex->req, RETE_VIEW_LIT(RETE_PEER_HEADER));
    if (!h.p || !ex->peer_id[0]) {
        rete_msg_remove(&ex->req, RETE_VIEW_LIT(RETE_PEER_HEADER));
        return;
    }
    rete_view wl = {0}, ns = {0}, app = {0}, ver = {0};
    bool ok = true;
    size_t at = 0;
    while (ok && at < h.len) {
        ptrdiff_t semi = rete_view_find(rete_view_sub(h, at, h.len - at), ';');
        rete_view item = rete_view_sub(h, at, semi < 0 ? h.len - at : (size_t)semi);
        at += item.len + 1;
        ptrdiff_t eq = rete_view_find(item, '=');
        if (eq <= 0)
            ok = false;
        rete_view k = rete_view_sub(item, 0, eq > 0 ? (size_t)eq : 0);
        rete_view v = rete_view_sub(item, eq > 0 ? (size_t)eq + 1 : item.len, item.len);
        ok = ok && peer_value_ok(v);
        if (rete_view_eq(k, RETE_VIEW_LIT("workload")))
            wl = v;
        else if (rete_view_eq(k, RETE_VIEW_LIT("namespace")))
            ns = v;
        else if (rete_view_eq(k, RETE_VIEW_LIT("app")))
            app = v;
        else if (rete_view_eq(k, RETE_VIEW_LIT("version")))
            ver = v;
    }
    /* Believed only for the namespace the peer's certificate names: a
     * workload may describe itself, not another namespace's. */
    if (ok && wl.len && rete_view_eq(ns, spiffe_ns(ex->peer_id))) {
        ex->peer_workload = rete_ex_dup(ex, wl);
        ex->peer_app = app.len ? rete_ex_dup(ex, app) : app;
        ex->peer_version = ver.len ? rete_ex_dup(ex, ver) : ver;
    }
    rete_msg_remove(&ex->req, RETE_VIEW_LIT(RETE_PEER_HEADER));
}

/* The service an inbound request was addressed to: by its authority, else a
 * service that selects this workload. */
static const rete_service *inbound_service(const rete_exchange *ex)
{
    if (ex->req.authority.len && !ex->tunnel) {
        const rete_route_table *t = rete_config_find_table(ex->gen->cfg, ex->req.authority, 80);
        if (t)
            return t->service;
    }
    return ex->gen->self_service;
}

/* Fill the labels shared by HTTP and TCP families (RETE_MESH_TCP_NLABELS). */
static void fill_common(const rete_exchange *ex, rete_view *v, rete_view protocol)
{
    half src, dst;
    const rete_service *svc;
    bool mtls;
    if (ex->inbound) {
        mtls = ex->peer_id[0] != '\0';
        src = peer_half(ex);
        dst = own_half(ex->gen);
        svc = inbound_service(ex);
        v[RETE_MESH_L_REPORTER] = RETE_VIEW_LIT("destination");
    } else {
        const rete_workload *wl =
            ex->service && ex->endpoint >= 0 ? ex->service->endpoints[ex->endpoint] : NULL;
        mtls = wl && wl->in_mesh;
        src = own_half(ex->gen);
        dst = wl ? workload_half(wl, mtls) : (half){UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN};
        svc = ex->service ? ex->service : ex->table ? ex->table->service : NULL;
        v[RETE_MESH_L_REPORTER] = RETE_VIEW_LIT("source");
    }
    v[RETE_MESH_L_SOURCE_WORKLOAD] = src.workload;
    v[RETE_MESH_L_SOURCE_WORKLOAD_NAMESPACE] = src.ns;
    v[RETE_MESH_L_SOURCE_PRINCIPAL] = src.principal;
    v[RETE_MESH_L_SOURCE_APP] = src.app;
    v[RETE_MESH_L_SOURCE_VERSION] = src.version;
    v[RETE_MESH_L_DESTINATION_WORKLOAD] = dst.workload;
    v[RETE_MESH_L_DESTINATION_WORKLOAD_NAMESPACE] = dst.ns;
    v[RETE_MESH_L_DESTINATION_PRINCIPAL] = dst.principal;
    v[RETE_MESH_L_DESTINATION_APP] = dst.app;
    v[RETE_MESH_L_DESTINATION_VERSION] = dst.version;
    v[RETE_MESH_L_DESTINATION_SERVICE] = svc ? or_unknown(svc->fqdn) : UNKNOWN;
    v[RETE_MESH_L_DESTINATION_SERVICE_NAME] = svc ? or_unknown(svc->name) : UNKNOWN;
    v[RETE_MESH_L_DESTINATION_SERVICE_NAMESPACE] = svc ? or_unknown(svc->ns) : UNKNOWN;
    v[RETE_MESH_L_REQUEST_PROTOCOL] = protocol;
    v[RETE_MESH_L_RESPONSE_FLAGS] = rete_view_cstr(rete_ex_error_flag(ex->error));
    v[RETE_MESH_L_CONNECTION_SECURITY_POLICY] =
        mtls ? RETE_VIEW_LIT("mutual_tls") : RETE_VIEW_LIT("none");
}

void rete_telemetry_edge(const rete_exchange *ex, rete_view *v)
{
    fill_common(ex, v, RETE_VIEW_LIT("http"));
}

static bool is_grpc(const rete_msg *req)
{
    rete_view ct = rete_msg_get(req, RETE_VIEW_LIT("content-type"));
    return rete_view_has_prefix(ct, RETE_VIEW_LIT("application/grpc"));
}

/* A resolution can only fail for a bad family or label count: a bug. */
static rete_metric resolve(rete_worker *w, rete_metric_family f, const rete_view *v, size_t n)
{
    rete_metric m;
    if (rete_metrics_shard_series(w->shard, f, v, n, &m) != RETE_OK) {
        rete_err("metrics: cannot resolve a series of family %u", f.id);
        abort();
    }
    return m;
}

/* ---- the request series cache -------------------------------------------- */

/* Every label of an HTTP request series is a function of a few things the
 * exchange already holds: the side, the service and endpoint (pointers into
 * the generation's snapshot, so the cache lives in the generation), the
 * caller's SPIFFE ID (inbound), the protocol, the response flag, the status
 * and the grpc-status. Keyed by those, the four series of a combination are
 * resolved (19 label values hashed and compared, four times) once per
 * generation and worker instead of once per request. */
#define TEL_CACHE_MAX 4096 /* entries per generation; past it, the uncached path */

typedef struct tel_key {
    const rete_service *svc;
    const rete_http_route *route; /* the route that matched; NULL: none (inbound, unrouted) */
    const rete_workload *wl; /* outbound: the endpoint; NULL inbound */
    const char *peer;        /* inbound: the caller's SPIFFE ID ("" none) and peer metadata; NULL outbound */
    int status;
    int grpc_status;         /* -1: the label is "" */
    uint8_t error;
    bool inbound;
    bool grpc;
} tel_key;

typedef struct tel_ent {
    tel_key k;               /* k.peer is the entry's own copy */
    uint64_t hash;           /* 0: free slot */
    rete_metric requests, duration, req_bytes, resp_bytes;
    rete_metric route_requests, route_duration; /* rete_proxy_route_* (golden.h) */
} tel_ent;

struct rete_tel_cache {
    tel_ent *ents;
    size_t cap;              /* power of two */
    size_t n;
};

void rete_telemetry_cache_free(rete_tel_cache **cp)
{
    rete_tel_cache *c = *cp;
    if (!c)
        return;
    for (size_t i = 0; i < c->cap; i++)
        if (c->ents[i].hash)
            free((char *)c->ents[i].k.peer);
    free(c->ents);
    free(c);
    *cp = NULL;
}

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
}

static uint64_t key_hash(const tel_key *k)
{
    uint64_t h = RETE_FNV1A_INIT;
    h = mix(h, (uint64_t)(uintptr_t)k->svc);
    h = mix(h, (uint64_t)(uintptr_t)k->wl);
    h = mix(h, (uint64_t)(uintptr_t)k->route);
    h = mix(h, ((uint64_t)(uint32_t)k->status << 32) | (uint32_t)(k->grpc_status + 1));
    h = mix(h, (uint64_t)k->error << 2 | (uint64_t)k->inbound << 1 | k->grpc);
    if (k->peer)
        h = rete_fnv1a_str(h, k->peer);
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h ? h : 1;
}

static bool key_eq(const tel_key *a, const tel_key *b)
{
    if (a->svc != b->svc || a->wl != b->wl || a->route != b->route || a->status != b->status ||
        a->grpc_status != b->grpc_status || a->error != b->error || a->inbound != b->inbound ||
        a->grpc != b->grpc)
        return false;
    if (!a->peer || !b->peer)
        return a->peer == b->peer;
    return strcmp(a->peer, b->peer) == 0;
}

static tel_ent *cache_find(rete_tel_cache *c, const tel_key *k, uint64_t h)
{
    if (!c || !c->cap)
        return NULL;
    for (size_t j = RETE_OA_FIRST(h, c->cap); c->ents[j].hash; j = RETE_OA_NEXT(j, c->cap))
        if (c->ents[j].hash == h && key_eq(&c->ents[j].k, k))
            return &c->ents[j];
    return NULL;
}

/* key_hash is never 0: 0 marks an empty slot. */
static bool ent_slot_hash(const void *slot, const void *ctx, uint64_t *h)
{
    (void)ctx;
    *h = ((const tel_ent *)slot)->hash;
    return *h != 0;
}

static void cache_put(rete_tel_cache **cp, const tel_ent *e)
{
    if (!*cp)
        *cp = rete_calloc(1, sizeof(**cp));
    rete_tel_cache *c = *cp;
    if (c->n >= TEL_CACHE_MAX)
        return;
    RETE_OA_RESERVE(c->ents, c->cap, c->n + 1, 16, ent_slot_hash, NULL);
    size_t j = RETE_OA_FIRST(e->hash, c->cap);
    while (c->ents[j].hash)
        j = RETE_OA_NEXT(j, c->cap);
    c->ents[j] = *e;
    if (e->k.peer) {
        size_t len = strlen(e->k.peer) + 1;
        char *copy = rete_malloc(len);
        memcpy(copy, e->k.peer, len);
        c->ents[j].k.peer = copy;
    }
    c->n++;
}

/* grpc-status as the key holds it: -1 for none, the number when the value is
 * its canonical decimal spelling (so the label it resolves to is the same
 * text), -2 when it cannot be keyed. */
static int grpc_status_key(rete_view gs)
{
    if (gs.len == 0)
        return -1;
    if (gs.len > 3 || (gs.len > 1 && gs.p[0] == '0'))
        return -2;
    int n = 0;
    for (size_t i = 0; i < gs.len; i++) {
        if (gs.p[i] < '0' || gs.p[i] > '9')
            return -2;
        n = n * 10 + (gs.p[i] - '0');
    }
    return n;
}

/* ---- per exchange -------------------------------------------------------- */

/* A failure for the golden metrics (Linkerd's classification): a 5xx, no
 * response, or a gRPC status other than OK. */
static bool is_failure(int status, bool grpc, rete_view gs)
{
    return status == 0 || status >= 500 || (grpc && gs.len && !rete_view_eq(gs, RETE_VIEW_LIT("0")));
}

/* The rete_proxy_route_* series of an exchange whose Istio labels are v. */
static bool resolve_route(rete_worker *w, const rete_http_route *route, const rete_view *v, bool failure,
                          rete_metric *requests, rete_metric *duration)
{
    rete_view g[RETE_GL_N] = {
        [RETE_GL_REPORTER] = v[RETE_MESH_L_REPORTER],
        [RETE_GL_ROUTE_NAME] = route ? or_unknown(route->name) : UNKNOWN,
        [RETE_GL_ROUTE_NAMESPACE] = route ? or_unknown(route->ns) : UNKNOWN,
        [RETE_GL_SERVICE] = v[RETE_MESH_L_DESTINATION_SERVICE],
        [RETE_GL_SRC_WORKLOAD] = v[RETE_MESH_L_SOURCE_WORKLOAD],
        [RETE_GL_SRC_NAMESPACE] = v[RETE_MESH_L_SOURCE_WORKLOAD_NAMESPACE],
        [RETE_GL_DST_WORKLOAD] = v[RETE_MESH_L_DESTINATION_WORKLOAD],
        [RETE_GL_DST_NAMESPACE] = v[RETE_MESH_L_DESTINATION_WORKLOAD_NAMESPACE],
        [RETE_GL_CLASSIFICATION] = failure ? RETE_VIEW_LIT("failure") : RETE_VIEW_LIT("success"),
    };
    bool s1, s2;
    if (rete_metrics_shard_series_stable(w->shard, w->mm->route_requests_total, g, RETE_GL_N, requests, &s1) !=
            RETE_OK ||
        rete_metrics_shard_series_stable(w->shard, w->mm->route_request_duration_seconds, g, RETE_GL_KEY_N,
                                         duration, &s2) != RETE_OK) {
        rete_err("metrics: cannot resolve a route series");
        abort();
    }
    return s1 && s2;
}

void rete_telemetry_request(rete_exchange *ex, int status, uint64_t dur_ns)
{
    rete_worker *w = ex->worker;
    const rete_mesh_metrics *mm = w->mm;
    bool grpc = is_grpc(&ex->req);
    rete_view gs = RETE_VIEW_LIT("");
    if (grpc) {
        rete_view t = rete_msg_get(&ex->resp_body.trailers, RETE_VIEW_LIT("grpc-status"));
        if (!t.p)
            t = rete_msg_get(&ex->resp, RETE_VIEW_LIT("grpc-status"));
        if (t.p)
            gs = t;
    }
    tel_key k = {.status = status, .grpc_status = grpc_status_key(gs), .error = (uint8_t)ex->error,
                 .inbound = ex->inbound, .grpc = grpc, .route = ex->route ? ex->route->route : NULL};
    /* The caller as the labels see it: its SPIFFE ID and what its proxy
     * said of its workload (peer_half), one string for the cache key. */
    char peer[sizeof(ex->peer_id) + 3 * 256];
    if (ex->inbound) {
        k.svc = inbound_service(ex);
        k.peer = ex->peer_id;
        if (ex->peer_workload.len) {
            snprintf(peer, sizeof(peer), "%s\x1f%.*s\x1f%.*s\x1f%.*s", ex->peer_id, (int)ex->peer_workload.len,
                     ex->peer_workload.p, (int)ex->peer_app.len, ex->peer_app.p, (int)ex->peer_version.len,
                     ex->peer_version.p);
            k.peer = peer;
        }
    } else {
        k.wl = ex->service && ex->endpoint >= 0 ? ex->service->endpoints[ex->endpoint] : NULL;
        k.svc = ex->service ? ex->service : ex->table ? ex->table->service : NULL;
    }
    uint64_t h = key_hash(&k);
    tel_ent *e = k.grpc_status == -2 ? NULL : cache_find(ex->gen->tel, &k, h);
    tel_ent fresh;
    if (!e) {
        rete_view v[RETE_MESH_HTTP_NLABELS];
        fill_common(ex, v, grpc ? RETE_VIEW_LIT("grpc") : RETE_VIEW_LIT("http"));
        char code[12];
        int n = snprintf(code, sizeof(code), "%d", status);
        v[RETE_MESH_L_RESPONSE_CODE] = rete_view_make(code, (size_t)n);
        v[RETE_MESH_L_GRPC_RESPONSE_STATUS] = gs;
        const rete_metric_family fams[4] = {mm->requests_total, mm->request_duration_milliseconds,
                                            mm->request_bytes, mm->response_bytes};
        rete_metric m[4];
        bool all_stable = true;
        for (int i = 0; i < 4; i++) {
            bool stable;
            if (rete_metrics_shard_series_stable(w->shard, fams[i], v, RETE_MESH_HTTP_NLABELS, &m[i],
                                                 &stable) != RETE_OK) {
                rete_err("metrics: cannot resolve a series of family %u", fams[i].id);
                abort();
            }
            all_stable = all_stable && stable;
        }
        fresh = (tel_ent){.k = k, .hash = h, .requests = m[0], .duration = m[1], .req_bytes = m[2],
                          .resp_bytes = m[3]};
        all_stable = resolve_route(w, k.route, v, is_failure(status, grpc, gs), &fresh.route_requests,
                                   &fresh.route_duration) && all_stable;
        /* Overflow series are resolved every time, so each drop is counted. */
        if (all_stable && k.grpc_status != -2)
            cache_put(&ex->gen->tel, &fresh);
        e = &fresh;
    }
    rete_metrics_inc(w->shard, e->requests, 1);
    rete_metrics_observe(w->shard, e->duration, (double)dur_ns / 1e6); /* milliseconds */
    rete_metrics_observe(w->shard, e->req_bytes, (double)ex->req_bytes);
    rete_metrics_observe(w->shard, e->resp_bytes, (double)ex->resp_bytes);
    rete_metrics_inc(w->shard, e->route_requests, 1);
    rete_metrics_observe(w->shard, e->route_duration, (double)dur_ns / 1e9); /* seconds */
}

void rete_telemetry_lb_ejection(rete_worker *w, const rete_service *svc, unsigned n)
{
    rete_view cluster = or_unknown(svc->fqdn);
    rete_metrics_inc(w->shard, resolve(w, w->mm->lb_ejections_total, &cluster, 1), n);
}

void rete_telemetry_health_check(rete_worker *w, const rete_service *svc, const char *result)
{
    rete_view v[2] = {or_unknown(svc->fqdn), rete_view_cstr(result)};
    rete_metrics_inc(w->shard, resolve(w, w->mm->health_checks_total, v, 2), 1);
}

void rete_telemetry_retry(rete_worker *w, const rete_service *svc, const char *reason)
{
    rete_view v[2] = {or_unknown(svc->fqdn), rete_view_cstr(reason)};
    rete_metrics_inc(w->shard, resolve(w, w->mm->retries_total, v, 2), 1);
}

void rete_telemetry_retry_budget_exhausted(rete_worker *w, const rete_service *svc)
{
    rete_view cluster = or_unknown(svc->fqdn);
    rete_metrics_inc(w->shard, resolve(w, w->mm->retry_budget_exhausted_total, &cluster, 1), 1);
}

void rete_telemetry_upstream_timeout(rete_worker *w, const rete_service *svc, const char *timeout)
{
    rete_view v[2] = {or_unknown(svc->fqdn), rete_view_cstr(timeout)};
    rete_metrics_inc(w->shard, resolve(w, w->mm->upstream_timeouts_total, v, 2), 1);
}

void rete_telemetry_tunnel_open(rete_exchange *ex)
{
    if (ex->tcp_open)
        return;
    rete_worker *w = ex->worker;
    const rete_mesh_metrics *mm = w->mm;
    rete_view v[RETE_MESH_TCP_NLABELS];
    fill_common(ex, v, RETE_VIEW_LIT("tcp"));
    ex->tcp_sent = resolve(w, mm->tcp_sent_bytes_total, v, RETE_MESH_TCP_NLABELS);
    ex->tcp_received = resolve(w, mm->tcp_received_bytes_total, v, RETE_MESH_TCP_NLABELS);
    ex->tcp_closed = resolve(w, mm->tcp_connections_closed_total, v, RETE_MESH_TCP_NLABELS);
    rete_metrics_inc(w->shard, resolve(w, mm->tcp_connections_opened_total, v, RETE_MESH_TCP_NLABELS),
                     1);
    ex->tcp_open = true;
}

void rete_telemetry_tunnel_close(rete_exchange *ex)
{
    if (!ex->tcp_open)
        return;
    rete_metric closed = ex->tcp_closed;
    if (ex->error != RETE_EXE_NONE) {
        /* The series resolved at open carries response_flags "-"; a tunnel
         * that ended in failure (UF: the mesh handshake or the connect
         * failed, UR: reset, ...) is counted closed under its flag, as an
         * HTTP request is, so failed tunnels are visible in the metrics. */
        rete_view v[RETE_MESH_TCP_NLABELS];
        fill_common(ex, v, RETE_VIEW_LIT("tcp"));
        closed = resolve(ex->worker, ex->worker->mm->tcp_connections_closed_total, v, RETE_MESH_TCP_NLABELS);
    }
    rete_metrics_inc(ex->worker->shard, closed, 1);
    ex->tcp_open = false;
}
