/* reted as one replica of several on a replicated store (etcd): the
 * changes the other replicas make reach this one's index and proxies
 * through the store's watch (store.h, watch_start), and one replica leads
 * the jobs that must run once (r->leading: token pruning), by the store's
 * lease election (store.h, lead) every RETED_LEAD_MS. With SQLite the one
 * process leads and nothing else happens here. */
#ifndef RETE_CONTROL_REPLICA_H
#define RETE_CONTROL_REPLICA_H

#include "error.h"

struct reted;

/* Start following the store's changes (its watch thread wakes the loop
 * through an async handle). 0, or -1 with the reason logged. */
int reted_replica_start(struct reted *r);
/* Stop the watch thread, then close the async handle (before the loop ends);
 * stop campaigning and give the lease up (another replica leads at once). */
void reted_replica_close(struct reted *r);

/* With --ca-kek: after a CA rotation step on this replica, publish the
 * data directory's CA to the store. When another replica changed it first,
 * this replica takes the store's CA instead and *err (RETE_ECONFLICT) says
 * so. -1 on failure. Every RETED_LEAD_MS each replica also checks the
 * record and loads a CA another replica published (a rotation through any
 * replica reaches all of them within that period). */
int reted_replica_ca_publish(struct reted *r, rete_error *err);

#endif
