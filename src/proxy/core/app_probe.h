/* The app's readiness probe (Proxy `readiness`, Kubernetes readinessProbe's
 * shape): the sidecar connects to its app on appAddress every `period`,
 * with tcpSocket a connect that completes within `timeout` is a success,
 * with httpGet a status 200..399 read within it. `failureThreshold`
 * failures in a row make the app not ready, `successThreshold` successes in
 * a row ready again; with a probe the app starts not ready (the first
 * probe runs at once).
 *
 * What reads it: p->app_ready (true without a probe) answers the admin
 * listener's /ready, and p->on_app_ready (set by main.c: the control-plane
 * agent) is called on each change, to tell reted, which takes the
 * Workload out of other proxies' endpoints (docs/traffic.md, Readiness).
 *
 * Main loop only. One probe at a time (timeout <= period, checked at load):
 * at most one connection and one timer per process. */
#ifndef RETE_PROXY_APP_PROBE_H
#define RETE_PROXY_APP_PROBE_H

#include "proxy.h"

/* Start, restart (period changed) or stop the probe after a snapshot is
 * installed, from p->cfg->proxy.readiness. */
void rete_app_probe_sync(rete_proxy *p);
/* Stop and close its handles (at exit, before the loop's last run). */
void rete_app_probe_close(rete_proxy *p);

#endif
