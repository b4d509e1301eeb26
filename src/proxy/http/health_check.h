/* Active health checks (DestinationRule trafficPolicy.healthCheck, a rete
 * extension; docs/traffic.md, "Active health checks", is the user's view).
 *
 * One checker per proxy, on worker 0's loop: a timer every
 * RETE_HC_TICK_MS looks for the endpoints whose next check is due and
 * starts each as an exchange with no downstream connection (the mirror's
 * shape, filter_mirror.c), sent to that one endpoint as any request goes
 * (rete_route_send: over the mesh through its sidecar, mesh TLS; else
 * straight to it; HTTP/1.1, h2c or h2 by the port's protocol):
 *   http  GET path, a status in expectedStatuses (none: 200..399) passes;
 *   tcp   a tunnel: the TCP connect (over the mesh: CONNECT, which the
 *         endpoint's sidecar answers 200 once it has connected to the app);
 *   grpc  POST /grpc.health.v1.Health/Check {service}: grpc-status 0 and
 *         the response's status SERVING (1) pass.
 * Checks bypass the balancer, circuit breakers and outlier detection: they
 * are not requests of the app's.
 *
 * The outcome goes to the endpoint's slot in the proxy-wide outlier table
 * (outlier.h: hc_down, hc_streak), which every worker's balancer reads: an
 * endpoint failing unhealthyThreshold checks in a row is out of every
 * balancer of the proxy (as an ejected one), back after healthyThreshold
 * passes in a row (and slow start ramps it, when configured). Endpoints
 * start in (no check has failed yet).
 *
 * Bounds: at most RETE_HC_MAX_IN_FLIGHT checks at once (the others wait for
 * the next tick), each cut at its timeout; an endpoint is checked every
 * interval +- RETE_HC_JITTER_PERCENT; the first check of an endpoint is
 * drawn in [0, min(interval, 1 s)). Counted per outcome in
 * rete_proxy_health_checks_total{cluster, result}. Worker 0 only; the
 * target table (24 bytes per checked endpoint) is rebuilt at each snapshot. */
#ifndef RETE_PROXY_HEALTH_CHECK_H
#define RETE_PROXY_HEALTH_CHECK_H

#include "filter.h"

#define RETE_HC_MAX_IN_FLIGHT 64u
#define RETE_HC_TICK_MS 50u
#define RETE_HC_JITTER_PERCENT 10u

/* The outcome of one check, its metric label. */
typedef enum rete_hc_result {
    RETE_HC_SUCCESS,
    RETE_HC_FAILURE, /* an answer that does not pass (status, grpc status, not SERVING) */
    RETE_HC_TIMEOUT, /* no answer within the check's timeout */
    RETE_HC_ERROR,   /* connect failure, reset, the endpoint's sidecar unreachable */
    RETE_HC_RESULT_N,
} rete_hc_result;

/* rete_request_path.gen_installed: worker 0 rebuilds its check table. */
void rete_health_check_gen_installed(struct rete_worker *w);

/* The checks' chain (dispatch.c): applies a check's outcome at its end. */
extern const rete_filter rete_filter_health_check;

#endif
