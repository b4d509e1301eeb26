/* The registry: the proxies reted knows (connected, or gone for less than
 * the grace period) and their streams. Registration rules (who may attach
 * to which Workload) are checked by the proxy API (proxy_api.c) before a
 * proxy enters it. One loop thread: nothing is locked. */
#ifndef RETE_CONTROL_REGISTRY_H
#define RETE_CONTROL_REGISTRY_H

#include "registry-t.h"

/* The proxy named ns/name, or NULL. */
reted_proxy *reted_proxy_find(struct reted *r, const char *ns, const char *name);
/* Free one proxy already unlinked (its snapshot reference released). */
void reted_proxy_free(struct reted *r, reted_proxy *p);
/* Free every proxy (at exit, streams already closed). */
void reted_registry_free(struct reted *r);

#endif
