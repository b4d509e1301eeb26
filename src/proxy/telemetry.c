/* Proxy metrics: see telemetry.h for the label rules. */
#include "telemetry.h"
#include "alloc.h"
#include "config.h"
#include "csr.h"
#include "log.h"
#include "proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the process registry ------------------------------------------------ */

static const char *const listener_names[5] = {
    [RETE_L_OUTBOUND] = "outbound", [RETE_L_INBOUND] = "inbound", [RETE_L_MESH] = "mesh",
    [RETE_L_UPSTREAM] = "upstream", [RETE_L_ADMIN] = "admin",
};

static rete_metric fixed(rete_proxy *p, rete_metric_family f, const char *value)
{
    rete_view v = value ? rete_view_cstr(value) : RETE_VIEW_NULL;
    rete_metric m;
    if (rete_metrics_series(p->metrics, f, value ? &v : NULL, value ? 1 : 0, &m) != RETE_OK) {
        rete_err("metrics: cannot resolve a fixed series");
        abort();
    }
    return m;
}

void rete_proxy_metrics_init(rete_proxy *p)
{
    p->metrics = rete_metrics_new();
    p->mm = rete_mesh_metrics_declare(p->metrics);
    if (!p->mm)
        abort(); /* logged: a programming error in the family table */
    const rete_mesh_metrics *mm = p->mm;
    rete_proxy_series *s = &p->ms;
    s->requests = fixed(p, mm->proxy_requests_total, NULL);
    for (int i = 0; i < 6; i++) {
        char cls[8];
        snprintf(cls, sizeof(cls), "%dxx", i);
        s->responses[i] = fixed(p, mm->responses_total, cls);
    }
    s->duration = fixed(p, mm->proxy_request_duration_seconds, NULL);
    s->http_in = fixed(p, mm->http_received_bytes_total, NULL);
    s->http_out = fixed(p, mm->http_sent_bytes_total, NULL);
    s->tcp_in = fixed(p, mm->proxy_tcp_received_bytes_total, NULL);
    s->tcp_out = fixed(p, mm->proxy_tcp_sent_bytes_total, NULL);
    for (int i = 0; i < 5; i++) {
        s->conns_total[i] = fixed(p, mm->downstream_connections_total, listener_names[i]);
        s->conns_active[i] = fixed(p, mm->downstream_connections_active, listener_names[i]);
    }
    s->parse_errors = fixed(p, mm->http_parse_errors_total, NULL);
    s->mesh_refused = fixed(p, mm->mesh_refused_total, NULL);
    s->cb_rejections = fixed(p, mm->circuit_breaker_rejections_total, NULL);
    s->authz_denied = fixed(p, mm->authz_denied_total, NULL);
    s->config_version = fixed(p, mm->config_version, NULL);
    s->reloads_ok = fixed(p, mm->config_reloads_total, "ok");
    s->reloads_rejected = fixed(p, mm->config_reloads_total, "rejected");
    s->workers = fixed(p, mm->workers, NULL);
    s->build_info = fixed(p, mm->build_info, RETE_VERSION);
    rete_metrics_gauge_set(p->metrics, s->build_info, 1);
    s->cert_expiry = fixed(p, mm->cert_expiry_timestamp_seconds, NULL);
    s->cp_connected = fixed(p, mm->control_plane_connected, NULL);
    p->main_shard = rete_metrics_shard_new(p->metrics);
}

void rete_proxy_metrics_free(rete_proxy *p)
{
    rete_metrics_shard_free(&p->main_shard);
    rete_free(&p->mm);
    rete_metrics_free(p->metrics);
    p->metrics = NULL;
}

void rete_proxy_count_reload(rete_proxy *p, bool ok)
{
    rete_metrics_inc(p->main_shard, ok ? p->ms.reloads_ok : p->ms.reloads_rejected, 1);
}

void rete_proxy_metrics_cert(rete_proxy *p, const char *path)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f)
        return;
    static char pem[65536]; /* main thread only */
    size_t n = fread(pem, 1, sizeof(pem), f);
    fclose(f);
    long long t = rete_cert_not_after_pem(pem, n);
    if (t > 0)
        rete_metrics_gauge_set(p->metrics, p->ms.cert_expiry, (double)t);
}

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

/* The inbound caller: only its SPIFFE ID is known (no peer metadata). */
static half peer_half(const rete_exchange *ex)
{
    if (!ex->peer_id[0])
        return (half){UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN};
    return (half){UNKNOWN, spiffe_ns(ex->peer_id), rete_view_cstr(ex->peer_id), UNKNOWN, UNKNOWN};
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

/* ---- per exchange -------------------------------------------------------- */

void rete_telemetry_request(rete_exchange *ex, int status, uint64_t dur_ns)
{
    rete_worker *w = ex->worker;
    const rete_mesh_metrics *mm = w->mm;
    bool grpc = is_grpc(&ex->req);
    rete_view v[RETE_MESH_HTTP_NLABELS];
    fill_common(ex, v, grpc ? RETE_VIEW_LIT("grpc") : RETE_VIEW_LIT("http"));
    char code[12];
    int n = snprintf(code, sizeof(code), "%d", status);
    v[RETE_MESH_L_RESPONSE_CODE] = rete_view_make(code, (size_t)n);
    rete_view gs = RETE_VIEW_LIT("");
    if (grpc) {
        rete_view t = rete_msg_get(&ex->resp_body.trailers, RETE_VIEW_LIT("grpc-status"));
        if (!t.p)
            t = rete_msg_get(&ex->resp, RETE_VIEW_LIT("grpc-status"));
        if (t.p)
            gs = t;
    }
    v[RETE_MESH_L_GRPC_RESPONSE_STATUS] = gs;
    rete_metrics_inc(w->shard, resolve(w, mm->requests_total, v, RETE_MESH_HTTP_NLABELS), 1);
    rete_metrics_observe(w->shard, resolve(w, mm->request_duration_seconds, v, RETE_MESH_HTTP_NLABELS),
                         (double)dur_ns / 1e9);
    rete_metrics_observe(w->shard, resolve(w, mm->request_bytes, v, RETE_MESH_HTTP_NLABELS),
                         (double)ex->req_bytes);
    rete_metrics_observe(w->shard, resolve(w, mm->response_bytes, v, RETE_MESH_HTTP_NLABELS),
                         (double)ex->resp_bytes);
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
    rete_metrics_inc(ex->worker->shard, ex->tcp_closed, 1);
    ex->tcp_open = false;
}
