/* Golden metrics (docs/observability.md, "Golden metrics"): what both ends
 * of the summary a proxy sends reted on its config stream agree on.
 *
 * A proxy counts every HTTP request in two families keyed per edge and route
 * (rete_proxy_route_requests_total, rete_proxy_route_request_duration_seconds:
 * the labels below, the duration on RETE_GOLDEN_BOUNDS_MS). Every
 * RETE_GOLDEN_PERIOD_S its agent reads their growth since the last report
 * and sends it as one "stats" message; reted sums those into its windows
 * (src/control/golden.h). The latency histogram of a report is the family's
 * buckets as they are: no conversion on either side. */
#ifndef RETE_GOLDEN_H
#define RETE_GOLDEN_H

#include <stddef.h>
#include <stdint.h>

#define RETE_GOLDEN_PERIOD_S 10
/* Latency bucket upper bounds in milliseconds; a last bucket (+Inf) follows. */
#define RETE_GOLDEN_BOUNDS_MS 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000
#define RETE_GOLDEN_NBOUNDS 13
#define RETE_GOLDEN_NBUCKETS (RETE_GOLDEN_NBOUNDS + 1)
extern const double rete_golden_bounds_ms[RETE_GOLDEN_NBOUNDS];

/* A report's bounds: entries beyond either are not sent and are counted in
 * the report's "dropped" (and by reted). */
#define RETE_GOLDEN_MAX_ENTRIES 256
/* Endpoints held out (ejected or failing health checks) one "endpoints"
 * message lists; the rest are counted in its "dropped". */
#define RETE_GOLDEN_MAX_OUT_ENDPOINTS 64
#define RETE_GOLDEN_MAX_REPORT_BYTES (48u << 10)

/* The labels of rete_proxy_route_requests_total, in order; the duration
 * family has the first RETE_GL_KEY_N (all but classification). One report
 * entry is one combination of those RETE_GL_KEY_N values. */
enum rete_golden_label {
    RETE_GL_REPORTER,        /* "source" (outbound) or "destination" (inbound) */
    RETE_GL_ROUTE_NAME,      /* the HTTPRoute/GRPCRoute; "default"; "unknown" */
    RETE_GL_ROUTE_NAMESPACE,
    RETE_GL_SERVICE,         /* destination_service: the Service's FQDN */
    RETE_GL_SRC_WORKLOAD,
    RETE_GL_SRC_NAMESPACE,
    RETE_GL_DST_WORKLOAD,
    RETE_GL_DST_NAMESPACE,
    RETE_GL_KEY_N,
    RETE_GL_CLASSIFICATION = RETE_GL_KEY_N, /* "success" or "failure" */
    RETE_GL_N,
};
extern const char *const rete_golden_labels[RETE_GL_N];

/* The q-quantile (0 < q < 1) of a latency histogram of
 * RETE_GOLDEN_NBUCKETS counts (not cumulative), in milliseconds: linear
 * interpolation inside the bucket the rank falls in, as Prometheus'
 * histogram_quantile does (the first bucket starts at 0; a rank in the +Inf
 * bucket answers the last finite bound). -1 when the histogram is empty. */
double rete_golden_quantile(const uint64_t *counts, double q);

#endif
