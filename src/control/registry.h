/* The registry: the proxies reted knows (connected, or gone for less than
 * the grace period) and their streams. Registration rules (who may attach
 * to which Workload) are checked by the proxy API (proxy_api.c) before a
 * proxy enters it. One loop thread: nothing is locked. */
#ifndef RETE_CONTROL_REGISTRY_H
#define RETE_CONTROL_REGISTRY_H

#include "registry-t.h"

#include <jansson.h>

/* Whether a Workload record was created by a proxy's stream (annotation
 * rete.dev/registered-by: proxy), not declared by the operator. */
bool reted_record_by_proxy(json_t *rec);

/* Replicated stores (store.h reg_*; no-ops on SQLite, where this one
 * process holds every stream). Registrations record which replica holds
 * each proxy's stream and the proxy's readiness, under the holder's lease.
 *
 * Apply a proxy's readiness here (its Workload is marked, recompiled and
 * pushed when it changed): true when it changed. */
bool reted_registry_apply_ready(struct reted *r, const char *ns, const char *name, bool ready);
/* Record that this replica holds ns/name's stream, with its readiness:
 * queued, and written with the others queued in the same loop turn
 * (retried after 1 s, doubling to 8 s, while the store fails). start/stop: the queue's
 * timer, with the replica's watch (replica.c). */
void reted_registration_hold(struct reted *r, const char *ns, const char *name, bool ready);
void reted_registration_start(struct reted *r);
/* The queue's timer callback: write what is queued now (on failure the
 * timer is set for the next try). Exposed for tests/unit/test_registry_queue.c,
 * which tries again without waiting for the timer. */
void reted_registration_flush(struct reted *r);
void reted_registration_stop(struct reted *r);
/* A proxy gone (drained, or past the grace period): delete its Workload
 * (only a record its own identity's stream created, sa) and its
 * registration, unless another replica holds it now. */
void reted_registration_release(struct reted *r, const char *ns, const char *name, const char *sa);
/* From the loop, after the store's watch: registrations other replicas
 * changed (readiness; a proxy that moved away is forgotten here). */
void reted_registration_changes(struct reted *r);
/* Every registration again (at start, after a relist). */
void reted_registration_relist(struct reted *r);
/* After lead(): when this replica took a new lease, put its proxies'
 * registrations again (the old lease took them with it). */
void reted_registration_lease_check(struct reted *r);
/* The leader's job: delete the proxy-registered Workloads that no replica
 * has held for the grace period (their replica died, they never
 * re-registered elsewhere). */
void reted_registration_sweep(struct reted *r);

/* The proxy named ns/name, or NULL. */
reted_proxy *reted_proxy_find(struct reted *r, const char *ns, const char *name);
/* Put a new proxy (ns and name set) into the registry; unlink *pp (a link
 * of the registry's list) from it, before reted_proxy_free. */
void reted_proxy_add(struct reted *r, reted_proxy *p);
void reted_proxy_unlink(struct reted *r, reted_proxy **pp);
/* Free one proxy already unlinked (its snapshot reference released). */
void reted_proxy_free(struct reted *r, reted_proxy *p);
/* Free every proxy (at exit, streams already closed). */
void reted_registry_free(struct reted *r);

#endif
