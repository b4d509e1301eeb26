/* Services with spec.externalName: resolving their DNS names off the event
 * loop and putting the addresses in service (docs/architecture.md,
 * "External services").
 *
 * Snapshots are immutable and svc->endpoints are Workload pointers every
 * request path reads (balancers, telemetry, access log, traces), so
 * resolved addresses reach the workers the way every other change does: as
 * a new snapshot. The main thread keeps a table host -> addresses; each
 * resolution (uv_getaddrinfo on libuv's thread pool, never on a worker)
 * that changes a host's addresses rebuilds the running snapshot from its
 * own documents with the table (rete_config_rebuild) and installs it as a
 * new generation. Every snapshot installed by other means (a reload, a
 * push) goes through rete_external_apply first, so it starts with the
 * addresses already known.
 *
 * Bounds: RETE_EXTERNAL_ADDRS_MAX addresses per host (the first ones in
 * sorted order), RETE_EXTERNAL_HOSTS_MAX hosts, one resolution in flight per
 * host; every Proxy spec.externalNameRefresh (default 30 s) each host of
 * the running snapshot is resolved again. A failed resolution keeps the last
 * addresses (counted as rete_proxy_external_resolutions_total{result="error"}).
 *
 * Main thread only. */
#ifndef RETE_PROXY_EXTERNAL_H
#define RETE_PROXY_EXTERNAL_H

#include "config-t.h"

#define RETE_EXTERNAL_ADDRS_MAX 16
#define RETE_EXTERNAL_HOSTS_MAX 256

struct rete_proxy;
typedef struct rete_external rete_external;

/* Start resolving for p (its loop and running snapshot): at once, then
 * every spec.externalNameRefresh. Never NULL (OOM aborts). */
rete_external *rete_external_start(struct rete_proxy *p);
/* Stop: no further resolution or install; freed once the resolutions in
 * flight have come back. NULL is a no-op. */
void rete_external_stop(rete_external *x);
/* `cfg` with the externalName addresses known now: cfg itself when it
 * already has them (or has no externalName DNS host), else a rebuilt
 * snapshot (cfg's reference is dropped). Takes and returns one reference.
 * x may be NULL (then cfg). */
rete_config *rete_external_apply(rete_external *x, rete_config *cfg);

#endif
