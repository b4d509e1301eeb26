/* The metric families rete-proxy exports, declared once at start-up.
 *
 * Request and TCP metrics use Istio's standard metric names and labels
 * exactly, so Istio's Grafana dashboards and Kiali queries work unchanged;
 * HTTP families carry all the RETE_MESH_L_* labels, TCP families the first
 * RETE_MESH_TCP_NLABELS of them (Istio's TCP metrics have no response_code or
 * grpc_response_status). Sizes are in bytes on Envoy's default buckets, as
 * Istio does.
 *
 * The request duration is Istio's `istio_request_duration_milliseconds`
 * (milliseconds, Envoy's default buckets), name and unit, so Istio's Grafana
 * dashboards and Kiali work unchanged. `promtool check metrics` has one
 * complaint about it (`use base unit "seconds" instead of "milliseconds"`),
 * accepted on purpose: compatibility with every Istio dashboard is worth
 * more than the lint; every other family is lint-clean (the tests accept
 * that one line and nothing else).
 *
 * The proxy's own health families are prefixed rete_proxy_ and follow the
 * Prometheus naming rules (base units, _total on counters).
 *
 * Fill label values by index: `rete_view v[RETE_MESH_HTTP_NLABELS]` with
 * v[RETE_MESH_L_REPORTER] = "source" or "destination", and so on, then
 * resolve them once (rete_metrics_series or rete_metrics_shard_series). */
#ifndef RETE_MESH_METRICS_H
#define RETE_MESH_METRICS_H

#include "metrics.h"

enum rete_mesh_label {
    RETE_MESH_L_REPORTER, /* "source" (outbound) or "destination" (inbound) */
    RETE_MESH_L_SOURCE_WORKLOAD,
    RETE_MESH_L_SOURCE_WORKLOAD_NAMESPACE,
    RETE_MESH_L_SOURCE_PRINCIPAL, /* spiffe://... as Istio reports it, or "unknown" */
    RETE_MESH_L_SOURCE_APP,
    RETE_MESH_L_SOURCE_VERSION,
    RETE_MESH_L_DESTINATION_WORKLOAD,
    RETE_MESH_L_DESTINATION_WORKLOAD_NAMESPACE,
    RETE_MESH_L_DESTINATION_PRINCIPAL,
    RETE_MESH_L_DESTINATION_APP,
    RETE_MESH_L_DESTINATION_VERSION,
    RETE_MESH_L_DESTINATION_SERVICE, /* host, e.g. echo.demo.svc.cluster.local */
    RETE_MESH_L_DESTINATION_SERVICE_NAME,
    RETE_MESH_L_DESTINATION_SERVICE_NAMESPACE,
    RETE_MESH_L_REQUEST_PROTOCOL,           /* "http", "grpc", "tcp" */
    RETE_MESH_L_RESPONSE_FLAGS,             /* Envoy response flags, "-" when none */
    RETE_MESH_L_CONNECTION_SECURITY_POLICY, /* "mutual_tls", "none", "unknown" */
    RETE_MESH_TCP_NLABELS,
    RETE_MESH_L_RESPONSE_CODE = RETE_MESH_TCP_NLABELS, /* HTTP status, "0" if none */
    RETE_MESH_L_GRPC_RESPONSE_STATUS,                  /* gRPC status code, "" if not gRPC */
    RETE_MESH_HTTP_NLABELS,
};

/* Label names, indexed by enum rete_mesh_label. */
extern const char *const rete_mesh_labels[RETE_MESH_HTTP_NLABELS];

typedef struct rete_mesh_metrics {
    /* Istio standard metrics */
    rete_metric_family requests_total;                /* istio_requests_total */
    rete_metric_family request_duration_milliseconds; /* istio_request_duration_milliseconds */
    rete_metric_family request_bytes;                 /* histogram, bytes */
    rete_metric_family response_bytes;                /* histogram, bytes */
    rete_metric_family tcp_sent_bytes_total;
    rete_metric_family tcp_received_bytes_total;
    rete_metric_family tcp_connections_opened_total;
    rete_metric_family tcp_connections_closed_total;
    /* rete's own per route and edge (golden.h: labels rete_golden_labels) */
    rete_metric_family route_requests_total;             /* rete_proxy_route_requests_total */
    rete_metric_family route_request_duration_seconds;   /* histogram, RETE_GOLDEN_BOUNDS_MS in s */
    /* rete_proxy_ health */
    rete_metric_family proxy_requests_total;             /* every request, admin included */
    rete_metric_family responses_total;                  /* {code_class}: "0xx" (none) .. "5xx" */
    rete_metric_family proxy_request_duration_seconds;   /* histogram, no labels */
    rete_metric_family http_received_bytes_total;
    rete_metric_family http_sent_bytes_total;
    rete_metric_family proxy_tcp_received_bytes_total;   /* opaque TCP sides */
    rete_metric_family proxy_tcp_sent_bytes_total;
    rete_metric_family mesh_refused_total;
    rete_metric_family workers;                          /* gauge */
    rete_metric_family downstream_connections_total;     /* {listener} */
    rete_metric_family downstream_connections_active;    /* gauge {listener}: gauge_add +1/-1 */
    rete_metric_family downstream_connections_refused_total; /* {listener,reason} */
    rete_metric_family downstream_timeouts_total;        /* {timeout}: which timeout closed it */
    rete_metric_family http_parse_errors_total;
    rete_metric_family config_version;                   /* gauge: gauge_set or gauge_fn */
    rete_metric_family config_reloads_total;             /* {result}: "ok", "rejected" */
    rete_metric_family cert_expiry_timestamp_seconds;    /* gauge: notAfter, Unix seconds */
    rete_metric_family cert_renewals_total;              /* {result} */
    rete_metric_family control_plane_connected;          /* gauge 0/1 */
    rete_metric_family tap_active;                       /* gauge (agent: gauge_fn) */
    rete_metric_family tap_events_total;                 /* {result} (agent: counter_fn) */
    rete_metric_family upstream_pool_connections;        /* gauge {cluster} */
    rete_metric_family upstream_timeouts_total;          /* {cluster, timeout} */
    rete_metric_family circuit_breaker_rejections_total;
    rete_metric_family h2_abuse_total;                   /* {reason}: see RETE_H2_ABUSE_* */
    rete_metric_family lb_ejections_total;               /* {cluster} */
    rete_metric_family lb_endpoints_ejected;             /* gauge: scrape-time scan (outlier.h) */
    rete_metric_family health_checks_total;              /* {cluster, result} (health_check.h) */
    rete_metric_family health_check_endpoints_unhealthy; /* gauge: scrape-time scan (outlier.h) */
    rete_metric_family retries_total;                    /* {cluster, reason} */
    rete_metric_family retry_budget_exhausted_total;     /* {cluster} */
    rete_metric_family faults_injected_total;            /* {kind}: delay, abort */
    rete_metric_family rate_limited_total;               /* {limit}: route, total, identity */
    rete_metric_family mirror_requests_total;            /* {result}: see RETE_MIRROR_* */
    rete_metric_family mirror_requests_in_flight;        /* gauge */
    rete_metric_family authz_denied_total;
    rete_metric_family access_log_dropped_total;
    rete_metric_family spans_sampled_total, spans_dropped_total; /* per worker (filter_trace.c) */
    rete_metric_family spans_exported_total, spans_failed_total; /* the exporter's (counter_fn) */
    rete_metric_family path_rejected_total;
    rete_metric_family outbound_unknown_total;           /* {action}: passthrough, refused */
    rete_metric_family upstream_tls_failures_total;      /* originated TLS failed (h1_client.c) */
    rete_metric_family external_resolutions_total;       /* {result}: ok, error (external.c) */
    rete_metric_family build_info;                       /* gauge 1 {version} */
} rete_mesh_metrics;

/* Declare every family above in reg. Returns a malloc'ed struct (free with
 * free()), or NULL if a declaration failed (e.g. the families already exist
 * in reg); the failure is logged. */
rete_mesh_metrics *rete_mesh_metrics_declare(rete_metrics *reg);

#endif
