/* Outlier detection state shared by the workers of a proxy (DestinationRule
 * trafficPolicy.outlierDetection): per endpoint of a Service, its consecutive
 * failures, its ejection and how many times it was ejected.
 *
 * One rete_outlier slot per (Service, endpoint), found by the Service's FQDN
 * and the endpoint's address and mesh port in a fixed table of
 * RETE_OUTLIER_SLOTS slots (.bss, 64 bytes each: 256 KiB, touched only where
 * used). A worker's balancer finds its endpoints' slots once per snapshot and
 * holds a reference on each (rete_outlier_ref / rete_outlier_unref); the
 * request path reads and updates them with relaxed atomics, no lock. Since
 * slots are keyed by name, an endpoint's ejection survives configuration
 * pushes. A slot nobody holds keeps its state until its space is needed by
 * another endpoint: lookups probe RETE_OUTLIER_PROBE slots from the key's
 * home, take the endpoint's own slot, else an empty one, else the first one
 * held by nobody (reclaimed: the departed endpoint's state is forgotten).
 * When all of those are held, the endpoint gets no slot (NULL): it is never
 * ejected, and rete_outlier_overflows() counts it.
 *
 * Each Service also has a slot (keyed by its FQDN alone) whose `lock` makes
 * ejection decisions of one Service one at a time across workers, so
 * maxEjectionPercent holds when workers eject at once. It is a try-lock on the
 * rare path only (a failure that crosses a threshold): a worker that finds it
 * taken does not eject this time and the next failure tries again.
 *
 * Times are monotonic nanoseconds from the caller (uv_hrtime() in the proxy:
 * one clock for every thread). */
#ifndef RETE_OUTLIER_H
#define RETE_OUTLIER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config-t.h"

#define RETE_OUTLIER_SLOTS 4096u
#define RETE_OUTLIER_PROBE 64u

typedef struct rete_outlier {
    /* key hash (high 48 bits) | references (low 16 bits); 0: never used */
    _Atomic uint64_t word;
    _Atomic uint64_t ejected_until_ns; /* ejected while now < it; 0: never ejected */
    _Atomic uint32_t consecutive_5xx;  /* every 5xx-class failure */
    _Atomic uint32_t consecutive_gw;   /* gateway errors only (502/503/504, connect, reset, timeout) */
    _Atomic uint32_t times_ejected;    /* the ejection multiplier, decayed while admitted */
    _Atomic uint32_t lock;             /* Service slots: ejection decisions, a try-lock */
    _Atomic uint64_t ejections;        /* ejections of this endpoint (admin view) */
    _Atomic uint64_t failures;         /* failures reported (admin view) */
    /* Active health checks (healthCheck; written by the proxy's one checker,
     * health_check.c, read by every balancer): 1 while the endpoint has
     * failed unhealthyThreshold checks in a row and not yet passed
     * healthyThreshold since. */
    _Atomic uint32_t hc_down;
    /* > 0: passed checks in a row, < 0: failed checks in a row */
    _Atomic int32_t hc_streak;
    /* Slow start: when the endpoint (re)joined — its slot first used by a
     * balancer, or its checks passing again; 0 = not yet seen. */
    _Atomic uint64_t joined_ns;
} rete_outlier;

_Static_assert(sizeof(rete_outlier) == 64, "one cache line per slot");

/* Success-rate ejection (outlierDetection.successRate): an endpoint's
 * requests and successes since its Service's last evaluation, and for a
 * Service's slot, when its next evaluation is due (0: not started). Kept
 * beside the slot table, one entry per slot (16 bytes: 64 KiB in .bss),
 * written on every request of a Service with successRate only. */
typedef struct rete_outlier_sr {
    _Atomic uint32_t requests;
    _Atomic uint32_t successes;
    _Atomic uint64_t next_ns;
} rete_outlier_sr;

/* The success-rate counts of slot `o` (never NULL for a slot of the table). */
rete_outlier_sr *rete_outlier_sr_of(const rete_outlier *o);

/* The slot of endpoint `id` (address:port) of Service `fqdn`, or of the
 * Service itself when id is NULL, with one reference taken; NULL when the
 * table has no room (see above). */
rete_outlier *rete_outlier_ref(const char *fqdn, const char *id);
void rete_outlier_unref(rete_outlier *o);
/* The slot of endpoint `id` of Service `fqdn` if some balancer holds it,
 * else NULL; takes no reference and claims nothing (a reader's lookup, for
 * reports off the request path). */
const rete_outlier *rete_outlier_find(const char *fqdn, const char *id);
/* One more reference on a slot already held (NULL: nothing). */
void rete_outlier_hold(rete_outlier *o);

static inline bool rete_outlier_ejected(const rete_outlier *o, uint64_t now)
{
    return o && now < atomic_load_explicit(&o->ejected_until_ns, memory_order_relaxed);
}

static inline bool rete_outlier_hc_down(const rete_outlier *o)
{
    return o && atomic_load_explicit(&o->hc_down, memory_order_relaxed);
}

/* "address:mesh_port" (the name without an address) of endpoint `w`, its
 * key in the table under its Service's FQDN (rete_outlier_service_name). */
void rete_outlier_endpoint_key(const rete_workload *w, char *buf, size_t len);
/* The Service's FQDN, or name.ns when the snapshot has none. */
void rete_outlier_service_name(const rete_service *svc, char *buf, size_t len);

/* Endpoints ejected at `now`, over every Service (the gauge
 * rete_proxy_lb_endpoints_ejected). Scans the table: for scrapes. */
uint64_t rete_outlier_count_ejected(uint64_t now);
/* Endpoints failing their active health checks now (the gauge
 * rete_proxy_health_check_endpoints_unhealthy). Scans the table. */
uint64_t rete_outlier_count_hc_down(void);
/* Endpoints that found no slot since start. */
uint64_t rete_outlier_overflows(void);

/* Forget every slot. Unit tests only, with no balancer alive. */
void rete_outlier_clear(void);

#endif
