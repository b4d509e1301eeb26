/* Change tracking and push scheduling: what happens between "the store
 * changed" and "every proxy concerned has its new snapshot queued".
 * reted_changed records the key with the snapshot cache (compiler.c,
 * reted_changed_key) and arms one 10 ms timer, so an apply of many
 * documents or many proxies registering at once cost one recompile; the
 * timer syncs the cache and pushes to every connected proxy whose snapshot
 * hash changed. One loop thread: nothing is locked. */
#ifndef RETE_CONTROL_PUSH_H
#define RETE_CONTROL_PUSH_H

#include "push-t.h"

/* Timers on r->loop; close them (reted_push_close) before the loop ends. */
void reted_push_init(struct reted *r);
void reted_push_close(struct reted *r);
/* The store changed (kind NULL: in a way not given by key, everything is
 * recompiled): remember the key, recompile what it touches and push soon. */
void reted_changed(struct reted *r, const char *kind, const char *ns, const char *name);
/* Push the proxy's current snapshot now: whole when force (a new stream, a
 * resync), else a delta from what it was last sent, or nothing when its
 * snapshot did not change. */
void reted_push(struct reted *r, struct reted_proxy *p, bool force);
/* A new stream: when the proxy holds this replica's current snapshot for it
 * (the hash its hello names, from any replica: their snapshots hash alike
 * at the same store revision and CA), an empty delta keeps its set and
 * version; else a whole snapshot (reted_push forced). */
void reted_push_resume(struct reted *r, struct reted_proxy *p, uint64_t held_version, uint64_t held_hash);
/* From the registry's tick: return freed memory at most every 30 s while
 * pushes never calm down. */
void reted_push_tick(struct reted *r);

#endif
