/* The pending queue of outbound requests: a request whose Service is at its
 * connection limit (DestinationRule connectionPool.tcp.maxConnections,
 * counted across the proxy's workers) waits here for a connection, in a
 * FIFO per worker, bounded across the proxy by
 * connectionPool.http.http1MaxPendingRequests, each for at most
 * connectionPool.http.pendingTimeout. docs/traffic.md is the user's view.
 *
 * A waiting exchange's upstream side is the queue itself (its on_abort
 * unlinks it: a client that goes away leaves nothing behind). The worker
 * looks at its queue every RETE_UPSTREAM_WAIT_POLL_MS while it is not
 * empty, and at once when one of its own connections closes or goes idle
 * (rete_upstream_wait_kick): a slot freed by another worker is seen at the
 * next poll. While requests wait, every worker is asked (its uv_async) to
 * close its idle connections that hold a slot of a Service with waiting
 * requests (rete_codec.release_idle), at most once a poll. Each look starts the waiting requests again, oldest first,
 * through their codec's upstream_start: it takes an idle connection or a
 * free slot, or puts the request back in the queue. Costs: nothing for a
 * request that does not wait; a waiting one uses its exchange (no other
 * allocation) and one pass of the poll. */
#ifndef RETE_UPSTREAM_WAIT_H
#define RETE_UPSTREAM_WAIT_H

#include "codec.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define RETE_UPSTREAM_WAIT_POLL_MS 5

struct rete_exchange;
struct rete_worker;

/* Codec id's upstream for `ex` found no connection and no free slot: queue
 * it (true), or fail it with 503 UO naming the limit when the pending
 * bound is reached (false; the caller must not touch the upstream side).
 * t->limits must be set. */
bool rete_upstream_wait(struct rete_exchange *ex, rete_codec_id id, const rete_upstream_target *t);

/* A connection of this worker closed or went idle: look at the queue soon. */
void rete_upstream_wait_kick(struct rete_worker *w);

/* Run every codec's release_idle on this worker (on_wakeup, after another
 * worker asked with rete_worker.release_idle). */
void rete_upstream_release_idle(struct rete_worker *w);

/* Worker start-up: the queue's timer. */
void rete_upstream_wait_init(struct rete_worker *w);

/* DestinationRule connectionPool.http.idleTimeout on one pooled upstream
 * connection (HTTP/1.1 and HTTP/2 clients): once it has had no request for
 * `ms`, `expire` closes it, counted in
 * rete_proxy_upstream_timeouts_total{cluster, timeout="connection_idle"}.
 * The timer is malloc'd and closed on its own (the connection need not wait
 * for its close callback), armed when the connection goes idle and not
 * already armed; a request only clears `since`, so a busy connection costs
 * no timer call per request. Embedded in the connection. */
typedef struct rete_pool_idle {
    uv_timer_t *timer;      /* NULL: no idle timeout */
    struct rete_worker *worker;
    void (*expire)(void *owner);
    void *owner;
    char *cluster;          /* the Service that opened it (metric label) */
    uint32_t ms;
    uint64_t since;         /* loop ms it went idle; 0: busy */
} rete_pool_idle;

/* Set up from the Service's limits (NULL, or idle_timeout_ms 0: none). */
void rete_pool_idle_init(rete_pool_idle *pi, struct rete_worker *w,
                         const rete_upstream_limits *lim, void (*expire)(void *owner),
                         void *owner);
/* The connection has no request: start counting. */
void rete_pool_idle_start(rete_pool_idle *pi);
/* A request is assigned to it. */
static inline void rete_pool_idle_busy(rete_pool_idle *pi)
{
    pi->since = 0;
}
/* The connection is being freed. */
void rete_pool_idle_free(rete_pool_idle *pi);

#endif
