/* The admin listener (15000, loopback by default): /ready, /live, /metrics
 * (Prometheus text), /config (the effective snapshot as JSON), /stats. Every
 * answer is a local response on the exchange, so admin requests use the
 * same bounded HTTP/1.1 codec as everything else. */
#include "alloc.h"
#include "config.h"
#include "conn.h"
#include "dispatch.h"
#include "exchange.h"
#include "h1_out.h"
#include "log.h"
#include "proxy.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void rete_admin_start(rete_conn *c)
{
    rete_h1_server_start(c, NULL, 0);
}

static uint64_t sum(size_t off)
{
    rete_proxy *p = rete_the_proxy;
    uint64_t total = 0;
    for (unsigned i = 0; i < p->concurrency; i++) {
        atomic_uint_fast64_t *c = (atomic_uint_fast64_t *)((char *)&p->workers[i].counters + off);
        total += atomic_load_explicit(c, memory_order_relaxed);
    }
    return total;
}

#define SUM(field) sum(offsetof(rete_counters, field))

static const char *const listener_names[] = {"outbound", "inbound", "mesh", "upstream", "admin"};

static void render_metrics(rete_outbuf *b, const rete_config *cfg)
{
    char line[512];
#define EMIT(...)                                                                                  \
    do {                                                                                           \
        int n__ = snprintf(line, sizeof(line), __VA_ARGS__);                                       \
        rete_outbuf_put(b, line, (size_t)n__);                                                     \
    } while (0)
    EMIT("# HELP rete_proxy_requests_total HTTP requests received by the proxy.\n"
         "# TYPE rete_proxy_requests_total counter\n"
         "rete_proxy_requests_total %llu\n",
         (unsigned long long)SUM(requests));
    EMIT("# HELP rete_proxy_responses_total HTTP responses sent, by status class (0: none).\n"
         "# TYPE rete_proxy_responses_total counter\n");
    for (int i = 0; i < 6; i++)
        EMIT("rete_proxy_responses_total{code_class=\"%dxx\"} %llu\n", i,
             (unsigned long long)sum(offsetof(rete_counters, responses_by_class) +
                                     (size_t)i * sizeof(atomic_uint_fast64_t)));
    EMIT("# HELP rete_proxy_request_duration_seconds Time from request head to exchange end.\n"
         "# TYPE rete_proxy_request_duration_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < 20; i++) {
        cum += sum(offsetof(rete_counters, latency_buckets) + (size_t)i * sizeof(atomic_uint_fast64_t));
        if (i == 19)
            EMIT("rete_proxy_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        else
            EMIT("rete_proxy_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                 rete_latency_bounds_ms[i] / 1000.0, (unsigned long long)cum);
    }
    EMIT("rete_proxy_request_duration_seconds_sum %.6f\n", (double)SUM(latency_sum_us) / 1e6);
    EMIT("rete_proxy_request_duration_seconds_count %llu\n", (unsigned long long)cum);
    EMIT("# HELP rete_proxy_downstream_connections_total Connections accepted, by listener.\n"
         "# TYPE rete_proxy_downstream_connections_total counter\n");
    for (int i = 0; i < 5; i++)
        EMIT("rete_proxy_downstream_connections_total{listener=\"%s\"} %llu\n", listener_names[i],
             (unsigned long long)sum(offsetof(rete_counters, conns_total) + (size_t)i * sizeof(atomic_uint_fast64_t)));
    EMIT("# HELP rete_proxy_downstream_connections_active Open connections, by listener.\n"
         "# TYPE rete_proxy_downstream_connections_active gauge\n");
    for (int i = 0; i < 5; i++)
        EMIT("rete_proxy_downstream_connections_active{listener=\"%s\"} %lld\n", listener_names[i],
             (long long)sum(offsetof(rete_counters, conns_active) + (size_t)i * sizeof(atomic_uint_fast64_t)));
    EMIT("# HELP rete_proxy_http_parse_errors_total Requests refused as malformed (4xx, connection closed).\n"
         "# TYPE rete_proxy_http_parse_errors_total counter\n"
         "rete_proxy_http_parse_errors_total %llu\n",
         (unsigned long long)SUM(parse_errors));
    EMIT("# HELP rete_proxy_mesh_refused_total Connections refused for identity or mTLS mode.\n"
         "# TYPE rete_proxy_mesh_refused_total counter\n"
         "rete_proxy_mesh_refused_total %llu\n",
         (unsigned long long)SUM(mesh_refused));
    EMIT("# HELP rete_proxy_circuit_breaker_rejections_total Requests refused by a connection-pool limit.\n"
         "# TYPE rete_proxy_circuit_breaker_rejections_total counter\n"
         "rete_proxy_circuit_breaker_rejections_total %llu\n",
         (unsigned long long)SUM(overflow));
    EMIT("# HELP rete_proxy_authz_denied_total Requests and tunnels denied by AuthorizationPolicy.\n"
         "# TYPE rete_proxy_authz_denied_total counter\n"
         "rete_proxy_authz_denied_total %llu\n",
         (unsigned long long)SUM(authz_denied));
    EMIT("# HELP rete_proxy_http_received_bytes_total HTTP bytes received from downstream.\n"
         "# TYPE rete_proxy_http_received_bytes_total counter\n"
         "rete_proxy_http_received_bytes_total %llu\n",
         (unsigned long long)SUM(bytes_in));
    EMIT("# HELP rete_proxy_http_sent_bytes_total HTTP bytes sent to downstream.\n"
         "# TYPE rete_proxy_http_sent_bytes_total counter\n"
         "rete_proxy_http_sent_bytes_total %llu\n",
         (unsigned long long)SUM(bytes_out));
    EMIT("# HELP rete_proxy_tcp_received_bytes_total Opaque TCP bytes received.\n"
         "# TYPE rete_proxy_tcp_received_bytes_total counter\n"
         "rete_proxy_tcp_received_bytes_total %llu\n",
         (unsigned long long)SUM(tcp_bytes_in));
    EMIT("# HELP rete_proxy_tcp_sent_bytes_total Opaque TCP bytes sent.\n"
         "# TYPE rete_proxy_tcp_sent_bytes_total counter\n"
         "rete_proxy_tcp_sent_bytes_total %llu\n",
         (unsigned long long)SUM(tcp_bytes_out));
    EMIT("# HELP rete_proxy_config_version Version of the configuration snapshot in use.\n"
         "# TYPE rete_proxy_config_version gauge\n"
         "rete_proxy_config_version %llu\n",
         (unsigned long long)cfg->version);
    EMIT("# HELP rete_proxy_config_reloads_total Configuration reloads, by result.\n"
         "# TYPE rete_proxy_config_reloads_total counter\n"
         "rete_proxy_config_reloads_total{result=\"ok\"} %llu\n"
         "rete_proxy_config_reloads_total{result=\"rejected\"} %llu\n",
         (unsigned long long)atomic_load(&rete_the_proxy->reloads_ok),
         (unsigned long long)atomic_load(&rete_the_proxy->reloads_failed));
    EMIT("# HELP rete_proxy_workers Worker threads.\n"
         "# TYPE rete_proxy_workers gauge\n"
         "rete_proxy_workers %u\n",
         rete_the_proxy->concurrency);
#undef EMIT
}

void rete_admin_handle(rete_exchange *ex)
{
    rete_proxy *p = rete_the_proxy;
    rete_view path = ex->req.path;
    ptrdiff_t q = rete_view_find(path, '?');
    if (q >= 0)
        path.len = (size_t)q;
    if (rete_view_eq(path, RETE_VIEW_LIT("/ready"))) {
        bool ready = atomic_load(&p->ready) && !atomic_load(&p->draining);
        const char *body = ready ? "ready\n" : "not ready\n";
        rete_ex_local_response(ex, ready ? 200 : 503, "text/plain", body, strlen(body));
        return;
    }
    if (rete_view_eq(path, RETE_VIEW_LIT("/live"))) {
        rete_ex_local_response(ex, 200, "text/plain", "live\n", 5);
        return;
    }
    if (rete_view_eq(path, RETE_VIEW_LIT("/metrics")) || rete_view_eq(path, RETE_VIEW_LIT("/stats/prometheus"))) {
        rete_outbuf b;
        rete_outbuf_init(&b);
        render_metrics(&b, ex->gen->cfg);
        rete_ex_local_response(ex, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len);
        rete_outbuf_free(&b);
        return;
    }
    if (rete_view_eq(path, RETE_VIEW_LIT("/config"))) {
        char *json = rete_config_to_json(ex->gen->cfg);
        rete_ex_local_response(ex, 200, "application/json", json, strlen(json));
        free(json);
        return;
    }
    if (rete_view_eq(path, RETE_VIEW_LIT("/stats"))) {
        char body[1024];
        int n = snprintf(body, sizeof(body),
                         "{\"requests\":%llu,\"parse_errors\":%llu,\"mesh_refused\":%llu,"
                         "\"config_version\":%llu,\"reloads_ok\":%llu,\"reloads_failed\":%llu,"
                         "\"last_reload_error\":\"%s\",\"workers\":%u}\n",
                         (unsigned long long)SUM(requests), (unsigned long long)SUM(parse_errors),
                         (unsigned long long)SUM(mesh_refused),
                         (unsigned long long)ex->gen->cfg->version,
                         (unsigned long long)atomic_load(&p->reloads_ok),
                         (unsigned long long)atomic_load(&p->reloads_failed),
                         p->last_reload_error[0] ? "see log" : "", p->concurrency);
        rete_ex_local_response(ex, 200, "application/json", body, (size_t)n);
        return;
    }
    if (rete_view_eq(path, RETE_VIEW_LIT("/logging"))) {
        rete_view qs = q >= 0 ? rete_view_sub(ex->req.path, (size_t)q + 1, ex->req.path.len) : RETE_VIEW_NULL;
        if (rete_view_has_prefix(qs, RETE_VIEW_LIT("level="))) {
            char lvl[16] = "";
            size_t n = qs.len - 6 < sizeof(lvl) - 1 ? qs.len - 6 : sizeof(lvl) - 1;
            memcpy(lvl, qs.p + 6, n);
            int l = rete_log_level_parse(lvl);
            if (l < 0) {
                rete_ex_local_response(ex, 400, "text/plain", "unknown level\n", 14);
                return;
            }
            rete_log_level = l;
        }
        char body[64];
        int n = snprintf(body, sizeof(body), "level=%s\n", rete_log_level_name(rete_log_level));
        rete_ex_local_response(ex, 200, "text/plain", body, (size_t)n);
        return;
    }
    const char *help = "rete-proxy admin: /ready /live /metrics /config /stats /logging?level=\n";
    rete_ex_local_response(ex, 404, "text/plain", help, strlen(help));
}
