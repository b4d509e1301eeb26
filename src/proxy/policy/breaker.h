/* Circuit breaking: the connection-pool limits of a Service (Istio
 * DestinationRule connectionPool, Envoy's per-cluster circuit breakers),
 * counted once per proxy, by every worker thread.
 *
 * One rete_breaker per Service, found by its FQDN in a fixed table of
 * RETE_BREAKER_SLOTS slots (open addressing, set up on first use, never
 * freed: a pointer to a slot stays valid for the life of the process, and
 * a count survives configuration swaps, so requests of an old snapshot give
 * back what they took). Services beyond the table share its last slot.
 *
 * Costs: 64 bytes a slot (one cache line), 64 KiB in all, in .bss. Taking
 * and giving back is one atomic read-modify-write on the Service's line, no
 * lock; a worker finds a Service's slot once per snapshot (rete_gen). */
#ifndef RETE_BREAKER_H
#define RETE_BREAKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RETE_BREAKER_SLOTS 1024u

/* Which limit refused (the `limit` label of
 * rete_proxy_circuit_breaker_rejections_total). */
typedef enum rete_breaker_limit {
    RETE_BREAKER_MAX_REQUESTS,    /* http.http2MaxRequests */
    RETE_BREAKER_MAX_PENDING,     /* http.http1MaxPendingRequests */
    RETE_BREAKER_PENDING_TIMEOUT, /* http.pendingTimeout: waited too long */
    RETE_BREAKER_MAX_RETRIES,     /* http.maxRetries */
    RETE_BREAKER_SHARE,           /* the HTTP/2 fair share of http2MaxRequests */
    RETE_BREAKER_ROUTE_MAX_REQUESTS, /* a route rule's circuitBreaker.maxRequests */
    RETE_BREAKER_ROUTE_MAX_RETRIES,  /* a route rule's circuitBreaker.maxRetries */
    RETE_BREAKER_N,
} rete_breaker_limit;

typedef struct rete_breaker {
    _Atomic uint64_t key;         /* FQDN hash | 1; 0: free */
    _Atomic uint32_t requests;    /* requests in flight to an endpoint */
    _Atomic uint32_t pending;     /* requests waiting for a connection */
    _Atomic uint32_t retries;     /* retries in flight */
    _Atomic uint32_t connections; /* upstream connections open */
    char pad[40];
} rete_breaker;

/* The slot of the Service named `fqdn`. Never NULL. */
rete_breaker *rete_breaker_of(const char *fqdn);
/* The slot of rule `rule` of route ns/name (its circuitBreaker; the same
 * table as the Services'). Never NULL. */
rete_breaker *rete_breaker_of_rule(const char *ns, const char *name, size_t rule);

/* Take one unit of `count` when fewer than `max` are taken. Never lets
 * racing workers exceed max (the add comes first, a refused one is given
 * back). */
static inline bool rete_breaker_take(_Atomic uint32_t *count, uint32_t max)
{
    uint32_t old = atomic_fetch_add_explicit(count, 1, memory_order_acq_rel);
    if (old < max)
        return true;
    atomic_fetch_sub_explicit(count, 1, memory_order_acq_rel);
    return false;
}

static inline void rete_breaker_give(_Atomic uint32_t *count)
{
    atomic_fetch_sub_explicit(count, 1, memory_order_acq_rel);
}

static inline uint32_t rete_breaker_load(_Atomic uint32_t *count)
{
    return atomic_load_explicit(count, memory_order_acquire);
}

/* "http2MaxRequests", ... (label values). */
const char *rete_breaker_limit_name(rete_breaker_limit l);

#endif
