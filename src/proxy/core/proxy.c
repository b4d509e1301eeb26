/* The proxy process (proxy.h): the snapshot in service and its TLS contexts,
 * the worker threads, draining, the app started in run mode, and the
 * process registry's fixed series. main.c (signals, the configuration file)
 * and the control-plane client (agent/cp_client.c, pushed snapshots) both
 * put snapshots in service through rete_proxy_install. */
#include "proxy.h"
#include "alloc.h"
#include "config.h"
#include "csr.h"
#include "log.h"
#include "app_probe.h"
#include "external.h"
#include "outlier.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

rete_proxy *rete_the_proxy;

static uv_process_t child;
static bool child_running;
static int child_exit_code = -1;
static uv_timer_t stop_poll;

/* ---- the process registry ------------------------------------------------ */

static const char *const listener_names[RETE_L_N] = {
    [RETE_L_OUTBOUND] = "outbound", [RETE_L_INBOUND] = "inbound", [RETE_L_MESH] = "mesh",
    [RETE_L_UPSTREAM] = "upstream", [RETE_L_ADMIN] = "admin",       [RETE_L_STATS] = "stats",
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

/* rete_proxy_lb_endpoints_ejected, at scrape time: the outlier table says. */
static double ejected_now(void *arg)
{
    (void)arg;
    return (double)rete_outlier_count_ejected(uv_hrtime());
}

/* rete_proxy_health_check_endpoints_unhealthy, at scrape time. */
static double hc_down_now(void *arg)
{
    (void)arg;
    return (double)rete_outlier_count_hc_down();
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
    for (int i = 0; i < RETE_L_N; i++) {
        s->conns_total[i] = fixed(p, mm->downstream_connections_total, listener_names[i]);
        s->conns_active[i] = fixed(p, mm->downstream_connections_active, listener_names[i]);
    }
    static const char *const refuse_names[RETE_REFUSE_N] = {
        [RETE_REFUSE_MAX_CONNECTIONS] = "max_connections", [RETE_REFUSE_FD_LIMIT] = "fd_limit",
        [RETE_REFUSE_ACCEPT_ERROR] = "accept_error"};
    static const char *const timeout_names[RETE_TIMEOUT_N] = {
        [RETE_TIMEOUT_DETECT] = "detect", [RETE_TIMEOUT_REQUEST_HEADER] = "request_header",
        [RETE_TIMEOUT_REQUEST_BODY] = "request_body", [RETE_TIMEOUT_RESPONSE_WRITE] = "response_write",
        [RETE_TIMEOUT_IDLE] = "idle", [RETE_TIMEOUT_STREAM_IDLE] = "stream_idle"};
    for (int i = 0; i < RETE_L_N; i++)
        for (int r = 0; r < RETE_REFUSE_N; r++) {
            rete_view v[2] = {rete_view_cstr(listener_names[i]), rete_view_cstr(refuse_names[r])};
            if (rete_metrics_series(p->metrics, mm->downstream_connections_refused_total, v, 2,
                                    &s->conns_refused[i][r]) != RETE_OK) {
                rete_err("metrics: cannot resolve a fixed series");
                abort();
            }
        }
    for (int i = 0; i < RETE_TIMEOUT_N; i++)
        s->timeouts[i] = fixed(p, mm->downstream_timeouts_total, timeout_names[i]);
    s->parse_errors = fixed(p, mm->http_parse_errors_total, NULL);
    s->mesh_refused = fixed(p, mm->mesh_refused_total, NULL);
    for (int i = 0; i < RETE_BREAKER_N; i++)
        s->cb_rejections[i] = fixed(p, mm->circuit_breaker_rejections_total,
                                    rete_breaker_limit_name((rete_breaker_limit)i));
    static const char *const h2_abuse_reasons[RETE_H2_ABUSE_N] = {
        "rapid_reset", "rapid_reset_client", "budget_share", "flood", "continuation_flood", "protocol_error"};
    for (int i = 0; i < RETE_H2_ABUSE_N; i++)
        s->h2_abuse[i] = fixed(p, mm->h2_abuse_total, h2_abuse_reasons[i]);
    s->authz_denied = fixed(p, mm->authz_denied_total, NULL);
    s->access_log_dropped = fixed(p, mm->access_log_dropped_total, NULL);
    s->spans_sampled = fixed(p, mm->spans_sampled_total, NULL);
    s->spans_dropped = fixed(p, mm->spans_dropped_total, NULL);
    s->faults[0] = fixed(p, mm->faults_injected_total, "delay");
    s->faults[1] = fixed(p, mm->faults_injected_total, "abort");
    s->rate_limited[0] = fixed(p, mm->rate_limited_total, "route");
    s->rate_limited[1] = fixed(p, mm->rate_limited_total, "total");
    s->rate_limited[2] = fixed(p, mm->rate_limited_total, "identity");
    static const char *const mirror_results[RETE_MIRROR_RESULT_N] = {
        [RETE_MIRROR_SENT] = "sent", [RETE_MIRROR_FAILED] = "failed",
        [RETE_MIRROR_ABORTED] = "aborted", [RETE_MIRROR_SKIPPED_LIMIT] = "skipped_limit",
        [RETE_MIRROR_SKIPPED_BODY] = "skipped_body"};
    for (int i = 0; i < RETE_MIRROR_RESULT_N; i++)
        s->mirror[i] = fixed(p, mm->mirror_requests_total, mirror_results[i]);
    s->mirror_in_flight = fixed(p, mm->mirror_requests_in_flight, NULL);
    s->unknown_passthrough = fixed(p, mm->outbound_unknown_total, "passthrough");
    s->unknown_refused = fixed(p, mm->outbound_unknown_total, "refused");
    s->upstream_tls_failures = fixed(p, mm->upstream_tls_failures_total, NULL);
    s->resolutions_ok = fixed(p, mm->external_resolutions_total, "ok");
    s->resolutions_error = fixed(p, mm->external_resolutions_total, "error");
    for (int r = 1; r < RETE_PATH_RESULT_COUNT; r++)
        s->path_rejected[r] =
            fixed(p, mm->path_rejected_total, rete_path_norm_reason((rete_path_norm_result)r));
    s->config_version = fixed(p, mm->config_version, NULL);
    s->reloads_ok = fixed(p, mm->config_reloads_total, "ok");
    s->reloads_rejected = fixed(p, mm->config_reloads_total, "rejected");
    s->workers = fixed(p, mm->workers, NULL);
    s->build_info = fixed(p, mm->build_info, RETE_VERSION);
    rete_metrics_gauge_set(p->metrics, s->build_info, 1);
    s->cert_expiry = fixed(p, mm->cert_expiry_timestamp_seconds, NULL);
    s->cp_connected = fixed(p, mm->control_plane_connected, NULL);
    if (rete_metrics_gauge_fn(p->metrics, fixed(p, mm->lb_endpoints_ejected, NULL), ejected_now,
                              NULL) != RETE_OK) {
        rete_err("metrics: cannot bind rete_proxy_lb_endpoints_ejected");
        abort();
    }
    if (rete_metrics_gauge_fn(p->metrics, fixed(p, mm->health_check_endpoints_unhealthy, NULL),
                              hc_down_now, NULL) != RETE_OK) {
        rete_err("metrics: cannot bind rete_proxy_health_check_endpoints_unhealthy");
        abort();
    }
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

rete_tls_set *rete_tls_set_build(const rete_config *cfg, rete_error *err)
{
    const rete_proxy_spec *p = &cfg->proxy;
    if (!p->cert_file || !p->key_file || !p->ca_file) {
        rete_error_set(err, RETE_EINVAL, "spec.tls: certFile, keyFile and caFile are required for the mesh listener");
        return NULL;
    }
    rete_tls_set *s = rete_calloc(1, sizeof(*s));
    atomic_init(&s->refs, 1);
    s->mesh_server = rete_tls_mesh_server_ctx(p->cert_file, p->key_file, p->ca_file, err);
    if (!s->mesh_server)
        goto fail;
    s->mesh_client = rete_tls_mesh_client_ctx(p->cert_file, p->key_file, p->ca_file, err);
    if (!s->mesh_client)
        goto fail;
    if (p->server_cert_file) {
        s->app_server = rete_tls_app_server_ctx(p->server_cert_file, p->server_key_file, err);
        if (!s->app_server)
            goto fail;
    }
    s->originate = rete_calloc(cfg->n_services + 1, sizeof(*s->originate));
    s->n_originate = cfg->n_services;
    for (size_t i = 0; i < cfg->n_services; i++) {
        const rete_traffic_policy *tp = &cfg->services[i].policy;
        if (tp->tls_mode != RETE_TLS_ORIG_SIMPLE)
            continue;
        s->originate[i] = rete_tls_originate_ctx(tp->tls_ca, err);
        if (!s->originate[i])
            goto fail;
    }
    return s;
fail:
    if (s->mesh_server)
        rete_tls_ctx_unref(s->mesh_server);
    if (s->mesh_client)
        rete_tls_ctx_unref(s->mesh_client);
    if (s->app_server)
        rete_tls_ctx_unref(s->app_server);
    for (size_t i = 0; i < s->n_originate; i++)
        rete_tls_ctx_unref(s->originate[i]);
    free(s->originate);
    free(s);
    return NULL;
}

static bool same_addr(const rete_socket_addr *a, const rete_socket_addr *b)
{
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

/* spec.dns but its listener: read once when the DNS starts */
static bool same_dns(const rete_dns_spec *a, const rete_dns_spec *b)
{
    if (a->n_upstreams != b->n_upstreams || a->max_in_flight != b->max_in_flight ||
        a->timeout_ms != b->timeout_ms || a->max_tcp_connections != b->max_tcp_connections ||
        a->ttl_s != b->ttl_s || strcmp(a->resolv_conf, b->resolv_conf) != 0)
        return false;
    for (size_t i = 0; i < a->n_upstreams; i++)
        if (strcmp(a->upstreams[i], b->upstreams[i]) != 0)
            return false;
    return true;
}

rete_rc rete_proxy_can_reload(const rete_proxy *p, const rete_config *cfg, rete_error *err)
{
    if (!p->started)
        return RETE_OK;
    const rete_proxy_spec *o = &p->cfg->proxy, *n = &cfg->proxy;
    const char *field = NULL;
    char buf[64];
    if (!same_addr(&o->outbound, &n->outbound))
        field = "spec.listeners.outbound";
    else if (!same_addr(&o->inbound, &n->inbound))
        field = "spec.listeners.inbound";
    else if (!same_addr(&o->mesh, &n->mesh))
        field = "spec.listeners.mesh";
    else if (!same_addr(&o->admin, &n->admin))
        field = "spec.listeners.admin";
    else if (!same_addr(&o->stats, &n->stats))
        field = "spec.listeners.stats";
    else if (o->dns.enabled != n->dns.enabled || !same_addr(&o->dns.listen, &n->dns.listen))
        field = "spec.dns.listen";
    else if (!same_dns(&o->dns, &n->dns))
        field = "spec.dns";
    else if (o->concurrency != n->concurrency)
        field = "spec.concurrency";
    else if (o->n_upstreams != n->n_upstreams)
        field = "spec.upstreams";
    else
        for (size_t i = 0; i < n->n_upstreams && !field; i++)
            if (!same_addr(&o->upstreams[i].listen, &n->upstreams[i].listen)) {
                snprintf(buf, sizeof(buf), "spec.upstreams[%zu].listen", i);
                field = buf;
            }
    if (!field)
        return RETE_OK;
    return rete_error_set(err, RETE_ESTATE,
                          "%s: listeners and workers are set up at start; restart the proxy to change them", field);
}

static int spawn_child(rete_proxy *p, char **argv);


int rete_proxy_install(rete_proxy *p, rete_config *cfg, rete_tls_set *tls)
{
    /* externalName addresses already resolved go in before any worker
     * sees the snapshot (external.h); the first snapshot starts the
     * resolutions. */
    cfg = rete_external_apply(p->external, cfg);
    if (!p->external)
        p->external = rete_external_start(p);
    if (p->started) {
        for (unsigned i = 0; i < p->concurrency; i++)
            rete_worker_post_gen(&p->workers[i], rete_gen_new(cfg, tls));
        rete_config_unref(p->cfg);
        rete_tls_set_unref(p->tls);
        p->cfg = cfg;
        p->tls = tls;
        rete_metrics_gauge_set(p->metrics, p->ms.config_version, (double)cfg->version);
        rete_proxy_metrics_cert(p, cfg->proxy.cert_file);
        rete_proxy_count_reload(p, true);
        rete_app_probe_sync(p);
        return 0;
    }
    p->cfg = cfg;
    p->tls = tls;
    if (!p->concurrency)
        p->concurrency = cfg->proxy.concurrency ? cfg->proxy.concurrency : 1;
    rete_metrics_gauge_set(p->metrics, p->ms.config_version, (double)cfg->version);
    rete_metrics_gauge_set(p->metrics, p->ms.workers, p->concurrency);
    rete_proxy_metrics_cert(p, cfg->proxy.cert_file);
    p->workers = rete_calloc(p->concurrency, sizeof(*p->workers));
    for (unsigned i = 0; i < p->concurrency; i++) {
        rete_worker *w = &p->workers[i];
        w->id = (int)i;
        w->proxy = p;
        atomic_store(&w->incoming, rete_gen_new(cfg, tls)); /* taken at start */
    }
    for (unsigned i = 0; i < p->concurrency; i++)
        if (rete_worker_start(&p->workers[i]) != 0) {
            rete_err("worker %u failed to start", i);
            return -1;
        }
    p->started = true;
    if (p->on_start && p->on_start(p) < 0)
        return -1;
    rete_app_probe_sync(p);
    atomic_store(&p->ready, true);
    rete_info("rete-proxy %s ready: %s/%s, %u worker(s), config version %llu", RETE_VERSION,
              cfg->proxy.ns, cfg->proxy.name, p->concurrency, (unsigned long long)cfg->version);
    if (p->child_argv && spawn_child(p, p->child_argv) != 0)
        rete_proxy_drain(p);
    return 0;
}

static void poll_stopped(uv_timer_t *t)
{
    rete_proxy *p = t->data;
    if (child_running)
        return;
    if (!p->started) {
        uv_stop(p->loop);
        return;
    }
    for (unsigned i = 0; i < p->concurrency; i++)
        if (!atomic_load(&p->workers[i].stopped))
            return;
    uv_stop(p->loop);
}

void rete_proxy_drain(rete_proxy *p)
{
    if (atomic_exchange(&p->draining, true))
        return;
    rete_info("draining: no new connections, finishing in-flight requests");
    if (p->on_drain)
        p->on_drain(p);
    for (unsigned i = 0; p->started && i < p->concurrency; i++)
        rete_worker_drain(&p->workers[i]);
    uv_timer_start(&stop_poll, poll_stopped, 20, 20);
}

static void on_child_exit(uv_process_t *proc, int64_t status, int term_signal)
{
    child_running = false;
    child_exit_code = term_signal ? 128 + term_signal : (int)status;
    rete_info("app exited with %d; draining", child_exit_code);
    uv_close((uv_handle_t *)proc, NULL);
    rete_proxy_drain(rete_the_proxy);
}

static int spawn_child(rete_proxy *p, char **argv)
{
    uv_process_options_t o;
    memset(&o, 0, sizeof(o));
    o.file = argv[0];
    o.args = argv;
    o.exit_cb = on_child_exit;
    uv_stdio_container_t stdio[3] = {{.flags = UV_INHERIT_FD, .data.fd = 0},
                                     {.flags = UV_INHERIT_FD, .data.fd = 1},
                                     {.flags = UV_INHERIT_FD, .data.fd = 2}};
    o.stdio = stdio;
    o.stdio_count = 3;
    int r = uv_spawn(p->loop, &child, &o);
    if (r != 0) {
        rete_err("run: cannot start %s: %s", argv[0], uv_strerror(r));
        return -1;
    }
    child_running = true;
    return 0;
}

void rete_proxy_process_init(rete_proxy *p)
{
    uv_timer_init(p->loop, &stop_poll);
    stop_poll.data = p;
}

void rete_proxy_process_close(rete_proxy *p)
{
    rete_app_probe_close(p);
    rete_external_stop(p->external);
    p->external = NULL;
    uv_close((uv_handle_t *)&stop_poll, NULL);
}

bool rete_proxy_signal_child(rete_proxy *p, int sig)
{
    (void)p;
    if (!child_running)
        return false;
    uv_process_kill(&child, sig);
    return true;
}

int rete_proxy_child_exit_code(void)
{
    return child_exit_code;
}
