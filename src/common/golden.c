/* Golden metrics' shared definitions: see golden.h. */
#include "golden.h"

const double rete_golden_bounds_ms[RETE_GOLDEN_NBOUNDS] = {RETE_GOLDEN_BOUNDS_MS};

const char *const rete_golden_labels[RETE_GL_N] = {
    [RETE_GL_REPORTER] = "reporter",
    [RETE_GL_ROUTE_NAME] = "route_name",
    [RETE_GL_ROUTE_NAMESPACE] = "route_namespace",
    [RETE_GL_SERVICE] = "destination_service",
    [RETE_GL_SRC_WORKLOAD] = "source_workload",
    [RETE_GL_SRC_NAMESPACE] = "source_workload_namespace",
    [RETE_GL_DST_WORKLOAD] = "destination_workload",
    [RETE_GL_DST_NAMESPACE] = "destination_workload_namespace",
    [RETE_GL_CLASSIFICATION] = "classification",
};

double rete_golden_quantile(const uint64_t *counts, double q)
{
    uint64_t total = 0;
    for (size_t i = 0; i < RETE_GOLDEN_NBUCKETS; i++)
        total += counts[i];
    if (total == 0)
        return -1;
    double rank = q * (double)total;
    uint64_t below = 0;
    for (size_t i = 0; i < RETE_GOLDEN_NBOUNDS; i++) {
        if (counts[i] && (double)(below + counts[i]) >= rank) {
            double lo = i ? rete_golden_bounds_ms[i - 1] : 0;
            double hi = rete_golden_bounds_ms[i];
            return lo + (hi - lo) * ((rank - (double)below) / (double)counts[i]);
        }
        below += counts[i];
    }
    return rete_golden_bounds_ms[RETE_GOLDEN_NBOUNDS - 1];
}
