/* The snapshot cache and its compiler: one compiled snapshot
 * per proxy scope in use (namespace, egress, labels), shared by every proxy
 * of that scope, with its whole-snapshot body and a few deltas cached; the
 * changed keys since the last sync, and the sync that drops what they touch.
 * One loop thread: nothing is locked. */
#ifndef RETE_CONTROL_COMPILER_H
#define RETE_CONTROL_COMPILER_H

#include "compiler-t.h"

/* compiler.c: the current snapshot for a proxy (a new reference), and
 * releasing one. changed_key records a changed key (reted_changed calls
 * it); sync applies the recorded changes to the index and drops the cached
 * snapshots they touch; sweep drops those no proxy holds. */
reted_snapshot *reted_snapshot_for(struct reted *r, struct reted_proxy *p);
void reted_snapshot_release(struct reted *r, reted_snapshot *s);
void reted_changed_key(struct reted *r, const char *kind, const char *ns, const char *name);
void reted_scopes_sync(struct reted *r);
/* The index, brought up to the store (a sync, when keys changed since the
 * last one), for validation to read; NULL when only a rebuild from the whole
 * store would make it current (not built yet, or changes not by key). */
const reted_index *reted_index_current(struct reted *r);
/* The index as it stands, without a sync, for a read of the keys of `kind`
 * (in `ns` unless NULL; `name` unless NULL) that no change since the last
 * sync touched; NULL when one did or the index is not built (read the
 * store then). A proxy's hello reads its Workload and its grants here: a
 * sync per hello would recompile the snapshots each registration touches
 * once per hello instead of once per push, and on etcd every store read is
 * a network round trip. */
const reted_index *reted_index_clean(struct reted *r, const char *kind, const char *ns, const char *name);
void reted_snapshots_sweep(struct reted *r);
/* Record a Workload's readiness as its sidecar reports it. A not-ready
 * Workload stays in every snapshot that holds it (its own proxy's too),
 * its pushed document carrying spec.ready false, which the proxies'
 * balancers read as weight 0. True when the state changed: the caller then
 * marks the Workload changed (reted_changed), which recompiles and pushes
 * exactly the snapshots that hold it. */
bool reted_workload_set_ready(struct reted *r, const char *ns, const char *name, bool ready);
/* Free the readiness records (at exit). */
void reted_workload_ready_free(struct reted *r);
/* Free the snapshot cache, the index and the changed keys (at exit; the
 * proxies' references released first). */
void reted_cache_free(struct reted *r);
/* Workload certificate lifetime, seconds: MeshConfig workloadCertificateTTL,
 * else reted --cert-ttl. */
uint32_t reted_cert_ttl(struct reted *r);
/* The tail of a whole-snapshot message (made on first use, shared). */
reted_body *reted_snapshot_body(struct reted *r, reted_snapshot *s);
void reted_body_release(reted_body *b);
/* Drop the cached message bodies (whole and delta) of every snapshot: they
 * serve a burst of pushes; between bursts only the documents are kept. */
void reted_snapshots_drop_bodies(struct reted *r);
/* For /metrics: snapshots cached, and the bytes of every snapshot alive
 * (documents, keys, entries, bodies). */
void reted_snapshot_stats(struct reted *r, size_t *cached, size_t *bytes);
/* The snapshot's entries as the JSON array a whole-snapshot message carries
 * as "resources" (snapshot_wire.h), malloc'ed; *len set. */
char *reted_snapshot_entries(const reted_snapshot *s, size_t *len);
/* The tail of a delta message from `base` to `to` (shared; *len set). */
const char *reted_snapshot_delta(struct reted *r, reted_snapshot *to, reted_snapshot *base, size_t *len);
#endif
