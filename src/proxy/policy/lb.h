/* Per-worker load balancers over one service's endpoints, with passive health
 * (outlier detection).
 *
 * Two halves, so that the big immutable part is built once per snapshot and
 * the pick path never locks:
 *
 *   rete_lb_shared  immutable, built once per (snapshot, service) by whoever
 *                   builds the snapshot: weights, cumulative weights, the hash
 *                   ring, the Maglev table. Reference counted (atomically, but
 *                   only on new/free, never on pick), so workers may drop their
 *                   balancers in any order after a snapshot swap.
 *   rete_lb         one per worker per service: its mutable state (PRNG,
 *                   round-robin weights, outstanding requests, latency
 *                   estimates, counters, the locality levels). Owned by one
 *                   thread; no locks.
 *
 * Outlier detection is not per worker: consecutive failures and ejections
 * live in the proxy-wide table of outlier.h, one slot per (Service,
 * endpoint address), read and updated with atomics by every worker, and
 * kept across snapshots. A worker caches only what it derives from them (how
 * many are ejected, each locality level's share), refreshed at least every
 * RETE_LB_RESCAN_MS and whenever an ejection ends or this worker ejects.
 *
 * Locality (DestinationRule loadBalancer.localityLbSetting, Envoy's
 * priorities): endpoints are put in levels by how their region, zone and
 * subzone labels match the caller's: 0 same subzone, 1 same zone, 2 same
 * region, 3 a `failover` region of the caller's, 4 the rest. Level L takes
 * min(100%, its healthy share x 1.4) of what the levels before it leave
 * (Envoy's overprovisioning factor), the shares scaled up to 100% when they
 * fall short.
 *
 * Endpoint indexes are indexes into svc->endpoints. An endpoint of weight 0 is
 * drained: never picked. Times are caller-supplied monotonic nanoseconds
 * (uv_hrtime()), so tests are deterministic.
 *
 * Memory (bytes; n endpoints, 64-bit, gcc/clang x86-64):
 *   per worker, every kind:  120 + 64 per endpoint (one cache line each:
 *                            outstanding, EWMA, RR weight, ejection, counters)
 *   shared, every kind:      120 + 12 per endpoint (weight, prefix sum)
 *   shared, RING_HASH:       + 16 per ring point. Points = weight/gcd * P, P the
 *                            power of two putting the total in [ring_size,
 *                            2 * ring_size) (more if total_weight/gcd is larger,
 *                            8 Mi at most): 16-32 KiB for the default 1024,
 *                            i.e. ~3-6 KiB per endpoint for 5 endpoints.
 *   shared, MAGLEV:          + 2 per table slot (uint16 endpoint index): 128 KiB
 *                            for the default 65537 slots whatever n is, once per
 *                            snapshot, not per worker (a per-worker uint32
 *                            table would cost 256 KiB per service per worker).
 *                            Building it takes 32 bytes per endpoint of scratch
 *                            and O(M * n) steps at worst, off the pick path.
 */
#ifndef RETE_LB_H
#define RETE_LB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config-t.h"
#include "result.h"
#include "view.h"

typedef struct rete_lb_shared rete_lb_shared;
typedef struct rete_lb rete_lb;

/* What the caller knows about the request. */
typedef struct rete_lb_context {
    /* RING_HASH / MAGLEV: the header value, cookie value or source IP, as
     * svc->policy.hash_on says; empty = no affinity (a weighted random pick).
     * Ignored by the other kinds. */
    rete_view hash_key;
    /* An endpoint to avoid (the one a retry is retrying), or -1. Still returned
     * when it is the only endpoint available. */
    int exclude;
} rete_lb_context;

typedef struct rete_lb_stats {
    uint64_t picks_total;
    uint64_t no_endpoint_total; /* picks that returned -1 */
    uint64_t panic_total;       /* picks made ignoring ejection: all were ejected */
    uint64_t ejections_total;
    uint64_t ejections_overflow_total; /* ejections refused by max_ejection_percent */
    size_t n_endpoints;
    size_t n_ejected; /* at the time asked */
} rete_lb_stats;

typedef struct rete_lb_endpoint_stats {
    uint64_t picks;         /* by this worker */
    uint64_t failures;      /* proxy-wide (0 when outlier detection is off) */
    uint64_t ejections;     /* proxy-wide, since the endpoint got its slot */
    uint64_t ejected_ms;    /* the time left in its ejection */
    uint32_t outstanding;   /* this worker's */
    uint32_t times_ejected; /* the current ejection multiplier (proxy-wide) */
    uint32_t consecutive_5xx, consecutive_gateway;
    int level;              /* its locality level (0 = the caller's subzone) */
    bool ejected;           /* by outlier detection */
    bool hc_down;           /* failing its active health checks (healthCheck) */
    int32_t hc_streak;      /* > 0 checks passed in a row, < 0 failed */
    uint32_t weight_percent; /* slow start: its weight's share now, 100 when not ramping */
    double ewma_ms; /* PEAK_EWMA's latency estimate at `now`; 0 = unsampled */
} rete_lb_endpoint_stats;

/* How a try to an endpoint went, for outlier detection. */
typedef enum rete_lb_outcome {
    RETE_LB_SUCCESS,
    RETE_LB_5XX,     /* a 5xx other than 502/503/504: counts for consecutive5xxErrors */
    RETE_LB_GATEWAY, /* 502, 503, 504, connect failure, reset, timeout: counts for both */
    RETE_LB_LOCAL,   /* decided by this proxy (pool overflow, the client left): not counted */
} rete_lb_outcome;

/* Locality levels (see above). */
#define RETE_LB_LEVELS 5
#define RETE_LB_RESCAN_MS 10

/* Build the immutable half for `svc`, which must outlive it (both belong to
 * the same snapshot). Zero ring_size / maglev_table_size take the defaults
 * (1024, 65537); a table size that is not a prime above the endpoint count is
 * raised to the next one. Returns RETE_ELIMIT for MAGLEV with more than 65534
 * endpoints (slots are uint16) or a table size above 5000011, RETE_EINVAL for
 * an unknown kind. The caller owns one reference. */
RETE_MUST_CHECK rete_rc rete_lb_shared_build(const rete_service *svc, rete_lb_shared **out);
/* Drop one reference; frees on the last and NULLs *sh. */
void rete_lb_shared_unref(rete_lb_shared **sh);
/* The Maglev lookup table's size (the prime it was rounded to), for tests
 * and diagnostics; 0 for other kinds or when no endpoint is live. */
uint32_t rete_lb_shared_maglev_size(const rete_lb_shared *sh);

/* A worker's balancer over `sh`; takes its own reference. `seed` seeds the
 * worker's PRNG (give each worker a different one). Never NULL (OOM aborts). */
rete_lb *rete_lb_new_shared(rete_lb_shared *sh, uint64_t seed);
/* The same, balancing by locality from `self` (the proxy's own Workload;
 * NULL: no locality) when svc->policy.locality is set. */
rete_lb *rete_lb_new_at(rete_lb_shared *sh, const rete_workload *self, uint64_t seed);
/* Convenience: build a private shared half and a balancer over it. NULL only
 * where rete_lb_shared_build fails. */
rete_lb *rete_lb_new(const rete_service *svc, uint64_t seed);
void rete_lb_free(rete_lb **lb);

/* Choose an endpoint: its index in svc->endpoints, or -1 when the service has
 * no endpoint of non-zero weight. Ejected endpoints, and with a healthCheck
 * those failing it, are skipped unless all are (panic: then both are
 * ignored). With slow start (ROUND_ROBIN, LEAST_REQUEST) an endpoint that
 * joined within warmupDurationSecs weighs less (lb.c, warmup_weights). Counts a pick; does not count
 * the request as outstanding (call rete_lb_start when it is sent). */
int rete_lb_pick(rete_lb *lb, const rete_lb_context *ctx, uint64_t now_ns);

/* A request was sent to `idx`: outstanding++. */
void rete_lb_start(rete_lb *lb, int idx);
/* The request to `idx` ended: outstanding--, latency sample (PEAK_EWMA),
 * outlier detection. `failure`: a 5xx, connect failure or reset. A request
 * that never reached the endpoint should not be reported as finished with a
 * latency; report failure with latency 0. Returns how many endpoints were
 * ejected (this one by its failure, or any by a success-rate evaluation the
 * call ran; the caller counts rete_proxy_lb_ejections_total). */
unsigned rete_lb_finish(rete_lb *lb, int idx, uint64_t latency_ns, bool failure, uint64_t now_ns);
/* The same with the outcome told apart: rete_lb_finish's `failure` is
 * RETE_LB_5XX. */
unsigned rete_lb_done(rete_lb *lb, int idx, uint64_t latency_ns, rete_lb_outcome outcome,
                      uint64_t now_ns);

/* Ejected or failing its health checks: not picked (but in panic). */
bool rete_lb_is_ejected(const rete_lb *lb, int idx, uint64_t now_ns);
void rete_lb_get_stats(const rete_lb *lb, uint64_t now_ns, rete_lb_stats *out);
/* false when idx is out of range. */
bool rete_lb_get_endpoint_stats(const rete_lb *lb, int idx, uint64_t now_ns,
                                rete_lb_endpoint_stats *out);
size_t rete_lb_n_endpoints(const rete_lb *lb);

/* "peak_ewma", "round_robin", "least_request", "random", "ring_hash", "maglev". */
const char *rete_lb_kind_name(rete_lb_kind kind);

/* The 64-bit hash used for hash keys and ring points (exposed for tests and for
 * callers that want to pre-hash). */
uint64_t rete_lb_hash(rete_view key);

#endif
