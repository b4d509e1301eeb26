/* The proxy's metrics: the process registry and its fixed series
 * (proxy.h: rete_proxy_metrics_init), and Istio's standard request and TCP
 * metrics per exchange.
 *
 * Label values follow Istio's (see docs/proxy.md, "Metrics"): the reporter
 * is "source" on the outbound side and "destination" on the inbound side;
 * the proxy's own workload, namespace, principal and app/version labels fill
 * one half, the chosen endpoint (outbound) or the peer's SPIFFE ID (inbound,
 * workload "unknown": no peer metadata exchange yet) the other.
 *
 * Series are resolved through the worker's shard cache: lock-free once the
 * worker has seen the label combination; the registry bounds each family's
 * series count (overflow series beyond it). */
#ifndef RETE_PROXY_TELEMETRY_H
#define RETE_PROXY_TELEMETRY_H

#include "exchange.h"
#include "worker.h"

#include <stdint.h>

/* The request series a generation's worker has resolved (telemetry.c);
 * freed with the generation. */
void rete_telemetry_cache_free(rete_tel_cache **c);

/* An HTTP exchange ended (not admin, not a tunnel): istio_requests_total,
 * istio_request_duration_milliseconds, istio_request_bytes, istio_response_bytes.
 * status 0: no response was sent. */
void rete_telemetry_request(rete_exchange *ex, int status, uint64_t dur_ns);

/* The labels Istio's HTTP and TCP families share (RETE_MESH_TCP_NLABELS
 * views into ex, its generation or constants) for an exchange: both
 * halves of its edge, its Service, its response flag (the tap's). */
void rete_telemetry_edge(const rete_exchange *ex, rete_view *v);

/* RETE_PEER_HEADER's value for this proxy's workload (made once per
 * generation: the workload's name, namespace and app/version labels). */
const char *rete_telemetry_peer_meta(rete_gen *g);
/* Read RETE_PEER_HEADER from a request that came from an authenticated
 * peer (ex->peer_id set) into ex->peer_*, when its namespace is the one
 * peer_id names; the header is removed either way. */
void rete_telemetry_peer_read(rete_exchange *ex);

/* A tunnel is about to be carried upstream (routing chose its destination):
 * istio_tcp_connections_opened_total, and the series its bytes and its close
 * will count in. Worker thread. */
void rete_telemetry_tunnel_open(rete_exchange *ex);

/* Outlier detection ejected n endpoints of `svc`: rete_proxy_lb_ejections_total
 * {cluster=<the Service's FQDN>} (one balancer per Service). Worker thread. */
void rete_telemetry_lb_ejection(rete_worker *w, const rete_service *svc, unsigned n);
/* An active health check of an endpoint of `svc` ended with `result`:
 * rete_proxy_health_checks_total{cluster, result}. */
void rete_telemetry_health_check(rete_worker *w, const rete_service *svc, const char *result);

/* A retry of a request to `svc` was made: rete_proxy_retries_total{cluster, reason}. */
void rete_telemetry_retry(rete_worker *w, const rete_service *svc, const char *reason);
/* A retry was not made, the service's retry budget being spent:
 * rete_proxy_retry_budget_exhausted_total{cluster}. */
void rete_telemetry_retry_budget_exhausted(rete_worker *w, const rete_service *svc);
/* A try was cut by a timeout ("connect", "per_try", "request"):
 * rete_proxy_upstream_timeouts_total{cluster, timeout}. */
void rete_telemetry_upstream_timeout(rete_worker *w, const rete_service *svc, const char *timeout);

/* The tunnel ended: istio_tcp_connections_closed_total. */
void rete_telemetry_tunnel_close(rete_exchange *ex);

#endif
