/* Family declarations for rete-proxy: one table, see mesh_metrics.h. */
#include "mesh_metrics.h"
#include "alloc.h"
#include "golden.h"
#include "log.h"

#include <stdlib.h>

const char *const rete_mesh_labels[RETE_MESH_HTTP_NLABELS] = {
    [RETE_MESH_L_REPORTER] = "reporter",
    [RETE_MESH_L_SOURCE_WORKLOAD] = "source_workload",
    [RETE_MESH_L_SOURCE_WORKLOAD_NAMESPACE] = "source_workload_namespace",
    [RETE_MESH_L_SOURCE_PRINCIPAL] = "source_principal",
    [RETE_MESH_L_SOURCE_APP] = "source_app",
    [RETE_MESH_L_SOURCE_VERSION] = "source_version",
    [RETE_MESH_L_DESTINATION_WORKLOAD] = "destination_workload",
    [RETE_MESH_L_DESTINATION_WORKLOAD_NAMESPACE] = "destination_workload_namespace",
    [RETE_MESH_L_DESTINATION_PRINCIPAL] = "destination_principal",
    [RETE_MESH_L_DESTINATION_APP] = "destination_app",
    [RETE_MESH_L_DESTINATION_VERSION] = "destination_version",
    [RETE_MESH_L_DESTINATION_SERVICE] = "destination_service",
    [RETE_MESH_L_DESTINATION_SERVICE_NAME] = "destination_service_name",
    [RETE_MESH_L_DESTINATION_SERVICE_NAMESPACE] = "destination_service_namespace",
    [RETE_MESH_L_REQUEST_PROTOCOL] = "request_protocol",
    [RETE_MESH_L_RESPONSE_FLAGS] = "response_flags",
    [RETE_MESH_L_CONNECTION_SECURITY_POLICY] = "connection_security_policy",
    [RETE_MESH_L_RESPONSE_CODE] = "response_code",
    [RETE_MESH_L_GRPC_RESPONSE_STATUS] = "grpc_response_status",
};

static const char *const l_listener[] = {"listener"};
static const char *const l_code_class[] = {"code_class"};
static const char *const l_result[] = {"result"};
static const char *const l_reason[] = {"reason"};
static const char *const l_limit[] = {"limit"};
static const char *const l_cluster[] = {"cluster"};
static const char *const l_version[] = {"version"};
static const char *const l_listener_reason[] = {"listener", "reason"};
static const char *const l_timeout[] = {"timeout"};
static const char *const l_cluster_timeout[] = {"cluster", "timeout"};
static const char *const l_cluster_result[] = {"cluster", "result"};
static const char *const l_cluster_reason[] = {"cluster", "reason"};
static const char *const l_kind[] = {"kind"};
static const char *const l_action[] = {"action"};

#define HTTP rete_mesh_labels, RETE_MESH_HTTP_NLABELS
#define TCP rete_mesh_labels, RETE_MESH_TCP_NLABELS
#define L(a) a, sizeof(a) / sizeof(a[0])
#define NOLABELS NULL, 0
#define C RETE_METRIC_COUNTER
#define G RETE_METRIC_GAUGE
#define H RETE_METRIC_HISTOGRAM

/* Envoy's default buckets (RETE_METRICS_DEFAULT_BUCKETS, milliseconds) in seconds. */
static const double seconds_buckets[] = {0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                         0.25,   0.5,   1,     2.5,  5,     10,   30,
                                         60,     300,   600,   1800, 3600};

/* RETE_GOLDEN_BOUNDS_MS in seconds (filled at declaration): the route
 * families' buckets are the golden summary's (golden.h). */
static double golden_seconds[RETE_GOLDEN_NBOUNDS];

static const struct {
    size_t offset;
    const char *name;
    rete_metric_type type;
    const char *const *labels;
    size_t nlabels;
    const char *help;
    const double *buckets; /* histograms; NULL: Envoy's default (ms and bytes) */
    size_t nbuckets;
} families[] = { /* one row per family: the rows share one shape, a table by design */
#define F(field, name, type, labels, help)                                                         \
    {                                                                                              \
        offsetof(rete_mesh_metrics, field), name, type, labels, help, NULL, 0                      \
    }
#define FS(field, name, labels, help)                                                              \
    {                                                                                              \
        offsetof(rete_mesh_metrics, field), name, H, labels, help, seconds_buckets,                \
            sizeof(seconds_buckets) / sizeof(seconds_buckets[0])                                   \
    }
    F(requests_total, "istio_requests_total", C, HTTP,
      "Requests handled, by source, destination and response."),
    /* Istio's own name and unit (milliseconds, Envoy's default buckets), so
     * Istio's dashboards and Kiali read it unchanged: see mesh_metrics.h. */
    F(request_duration_milliseconds, "istio_request_duration_milliseconds", H, HTTP,
      "Request duration in milliseconds, from the request head to the end of the exchange."),
    F(request_bytes, "istio_request_bytes", H, HTTP, "Request sizes in bytes (headers and body)."),
    F(response_bytes, "istio_response_bytes", H, HTTP,
      "Response sizes in bytes (headers and body)."),
    F(tcp_sent_bytes_total, "istio_tcp_sent_bytes_total", C, TCP,
      "Bytes sent in responses on TCP connections."),
    F(tcp_received_bytes_total, "istio_tcp_received_bytes_total", C, TCP,
      "Bytes received in requests on TCP connections."),
    F(tcp_connections_opened_total, "istio_tcp_connections_opened_total", C, TCP,
      "TCP connections opened."),
    F(tcp_connections_closed_total, "istio_tcp_connections_closed_total", C, TCP,
      "TCP connections closed."),
    /* Per route and edge (golden.h): the agent's stats summary reads them. */
    F(route_requests_total, "rete_proxy_route_requests_total", C, L(rete_golden_labels),
      "HTTP and gRPC requests by route and edge; classification failure: a 5xx, no response, or a non-zero grpc-status."),
    {offsetof(rete_mesh_metrics, route_request_duration_seconds), "rete_proxy_route_request_duration_seconds", H,
     rete_golden_labels, RETE_GL_KEY_N, "Request duration in seconds by route and edge.", golden_seconds,
     RETE_GOLDEN_NBOUNDS},
    F(proxy_requests_total, "rete_proxy_requests_total", C, NOLABELS,
      "HTTP requests received by the proxy."),
    F(responses_total, "rete_proxy_responses_total", C, L(l_code_class),
      "HTTP responses sent, by status class (0xx: none)."),
    FS(proxy_request_duration_seconds, "rete_proxy_request_duration_seconds", NOLABELS,
       "Time from request head to exchange end."),
    F(http_received_bytes_total, "rete_proxy_http_received_bytes_total", C, NOLABELS,
      "HTTP bytes received from downstream."),
    F(http_sent_bytes_total, "rete_proxy_http_sent_bytes_total", C, NOLABELS,
      "HTTP bytes sent to downstream."),
    F(proxy_tcp_received_bytes_total, "rete_proxy_tcp_received_bytes_total", C, NOLABELS,
      "Opaque TCP bytes received."),
    F(proxy_tcp_sent_bytes_total, "rete_proxy_tcp_sent_bytes_total", C, NOLABELS,
      "Opaque TCP bytes sent."),
    F(mesh_refused_total, "rete_proxy_mesh_refused_total", C, NOLABELS,
      "Connections refused for identity or mTLS mode."),
    F(workers, "rete_proxy_workers", G, NOLABELS, "Worker threads."),
    F(downstream_connections_total, "rete_proxy_downstream_connections_total", C, L(l_listener),
      "Downstream connections accepted, by listener."),
    F(downstream_connections_active, "rete_proxy_downstream_connections_active", G, L(l_listener),
      "Downstream connections currently open, by listener."),
    F(downstream_connections_refused_total, "rete_proxy_downstream_connections_refused_total", C,
      L(l_listener_reason),
      "Downstream connections closed at accept, by listener and reason (max_connections: "
      "the listener's cap; fd_limit: the share of the file limit; accept_error: accept failed)."),
    F(downstream_timeouts_total, "rete_proxy_downstream_timeouts_total", C, L(l_timeout),
      "Downstream connections (HTTP/2: streams) closed by a timeout, by timeout (detect, "
      "request_header, request_body, response_write, idle, stream_idle)."),
    F(http_parse_errors_total, "rete_proxy_http_parse_errors_total", C, NOLABELS,
      "Requests refused as malformed (4xx, connection closed)."),
    F(config_version, "rete_proxy_config_version", G, NOLABELS,
      "Version of the configuration snapshot in use."),
    F(config_reloads_total, "rete_proxy_config_reloads_total", C, L(l_result),
      "Configuration reloads, by result (ok, rejected)."),
    F(cert_expiry_timestamp_seconds, "rete_proxy_cert_expiry_timestamp_seconds", G, NOLABELS,
      "Expiry time of the workload certificate, in seconds since the Unix epoch."),
    F(cert_renewals_total, "rete_proxy_cert_renewals_total", C, L(l_result),
      "Workload certificate renewals, by result."),
    F(control_plane_connected, "rete_proxy_control_plane_connected", G, NOLABELS,
      "1 while the configuration stream to the control plane is up, else 0."),
    F(tap_active, "rete_proxy_tap_active", G, NOLABELS,
      "Taps on now (retectl tap, top and diagnose, started by the control plane)."),
    F(tap_events_total, "rete_proxy_tap_events_total", C, L(l_result),
      "Requests a tap matched, by result (captured; dropped_rate: over the proxy's tap rate; "
      "dropped_queue: the queue to the control plane was full)."),
    F(upstream_pool_connections, "rete_proxy_upstream_pool_connections", G, L(l_cluster),
      "Upstream connections in the connection pools, by cluster."),
    F(upstream_timeouts_total, "rete_proxy_upstream_timeouts_total", C, L(l_cluster_timeout),
      "Upstream tries cut by a timeout, by cluster and timeout (connect: "
      "connectionPool.tcp.connectTimeout, per_try: timeouts.backendRequest, request: "
      "timeouts.request)."),
    F(circuit_breaker_rejections_total, "rete_proxy_circuit_breaker_rejections_total", C,
      L(l_limit),
      "Requests (maxRetries: retries) refused by a connection-pool limit, by limit "
      "(http2MaxRequests, http1MaxPendingRequests, pendingTimeout, maxRetries, connection_share, "
      "route_maxRequests, route_maxRetries)."),
    F(h2_abuse_total, "rete_proxy_h2_abuse_total", C, L(l_reason),
      "HTTP/2 clients cut off, by reason (rapid_reset, rapid_reset_client, budget_share, flood, "
      "continuation_flood, protocol_error)."),
    F(lb_ejections_total, "rete_proxy_lb_ejections_total", C, L(l_cluster),
      "Endpoints ejected by outlier detection, by cluster."),
    F(lb_endpoints_ejected, "rete_proxy_lb_endpoints_ejected", G, NOLABELS,
      "Endpoints ejected by outlier detection now, over every cluster (proxy-wide)."),
    F(health_checks_total, "rete_proxy_health_checks_total", C, L(l_cluster_result),
      "Active health checks (DestinationRule healthCheck) made, by cluster and result (success, "
      "failure, timeout, error)."),
    F(health_check_endpoints_unhealthy, "rete_proxy_health_check_endpoints_unhealthy", G, NOLABELS,
      "Endpoints out of the balancers because they fail their active health checks now "
      "(proxy-wide)."),
    F(retries_total, "rete_proxy_retries_total", C, L(l_cluster_reason),
      "Request retries made, by cluster and reason (connect_failure, reset, status, grpc_status, "
      "per_try_timeout)."),
    F(retry_budget_exhausted_total, "rete_proxy_retry_budget_exhausted_total", C, L(l_cluster),
      "Retries not attempted because the retry budget was exhausted, by cluster."),
    F(access_log_dropped_total, "rete_proxy_access_log_dropped_total", C, NOLABELS,
      "Access log lines dropped because the writer was a full buffer behind."),
    F(spans_sampled_total, "rete_proxy_spans_sampled_total", C, NOLABELS,
      "Trace spans made (requests sampled) and queued for export."),
    F(spans_dropped_total, "rete_proxy_spans_dropped_total", C, NOLABELS,
      "Trace spans dropped because the exporter's queue was full."),
    F(spans_exported_total, "rete_proxy_spans_exported_total", C, NOLABELS,
      "Trace spans the collector accepted (a 2xx answer)."),
    F(spans_failed_total, "rete_proxy_spans_failed_total", C, NOLABELS,
      "Trace spans the collector did not accept (no connection, no answer in time, not a 2xx)."),
    F(faults_injected_total, "rete_proxy_faults_injected_total", C, L(l_kind),
      "Faults injected by a route rule's fault, by kind (delay, abort)."),
    F(rate_limited_total, "rete_proxy_rate_limited_total", C, L(l_limit),
      "Requests refused (429 or gRPC RESOURCE_EXHAUSTED) by a local rate limit, by limit (route: "
      "an outbound rule's rateLimit; total, identity: an inbound HTTPLocalRateLimitPolicy)."),
    F(mirror_requests_total, "rete_proxy_mirror_requests_total", C, L(l_result),
      "Requests chosen by a RequestMirror filter, by what became of their copy (sent: a response "
      "came back and was discarded; failed: the copy's upstream failed or timed out; aborted: "
      "the request ended early or the copy's pipe was full; skipped_limit: too many copies in "
      "flight; skipped_body: the body was over the copy bound)."),
    F(mirror_requests_in_flight, "rete_proxy_mirror_requests_in_flight", G, NOLABELS,
      "Mirrored copies in flight."),
    F(authz_denied_total, "rete_proxy_authz_denied_total", C, NOLABELS,
      "Requests and tunnels denied by AuthorizationPolicy."),
    F(outbound_unknown_total, "rete_proxy_outbound_unknown_destination_total", C, L(l_action),
      "Intercepted outbound connections and requests to a destination that is no Service, by "
      "action (passthrough: MeshConfig outboundTrafficPolicy ALLOW_ANY; refused: REGISTRY_ONLY)."),
    F(upstream_tls_failures_total, "rete_proxy_upstream_tls_failures_total", C, NOLABELS,
      "Connections to endpoints outside the mesh whose originated TLS (DestinationRule tls "
      "SIMPLE) failed: the server's certificate did not verify or the handshake failed."),
    F(external_resolutions_total, "rete_proxy_external_resolutions_total", C, L(l_result),
      "Resolutions of Service externalName hosts, by result (ok, error; an error keeps the last "
      "addresses)."),
    F(path_rejected_total, "rete_proxy_path_rejected_total", C, L(l_reason),
      "Requests refused (400) because their path cannot be normalised safely, by reason."),
    F(build_info, "rete_proxy_build_info", G, L(l_version),
      "Always 1, labelled with the build version."),
#undef F
#undef FS
};

rete_mesh_metrics *rete_mesh_metrics_declare(rete_metrics *reg)
{
    rete_mesh_metrics *mm = rete_calloc(1, sizeof(*mm));
    for (size_t i = 0; i < RETE_GOLDEN_NBOUNDS; i++)
        golden_seconds[i] = rete_golden_bounds_ms[i] / 1000;
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        rete_metric_desc d = {
            .name = families[i].name,
            .help = families[i].help,
            .type = families[i].type,
            .labels = families[i].labels,
            .nlabels = families[i].nlabels,
            .buckets = families[i].buckets,
            .nbuckets = families[i].nbuckets,
        };
        rete_metric_family *out = (rete_metric_family *)((char *)mm + families[i].offset);
        rete_rc rc = rete_metrics_declare(reg, &d, out);
        if (rc < 0) {
            rete_err("metrics: declaring %s: %s", d.name, rete_rc_str(rc));
            rete_free(&mm);
            return NULL;
        }
    }
    return mm;
}
