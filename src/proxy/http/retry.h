/* Retries, retry budgets and the per-try and request timeouts of an
 * outbound request (filter_retry.c), and what they need from routing
 * (filter_route.c). docs/traffic.md, "Timeouts and retries", is the user's
 * view; this is the contract between the two filters.
 *
 * The route filter matches a rule, picks a backend Service, then calls
 * rete_retry_begin before the first try: a rule with `retry` or `timeouts`,
 * a gRPC request with `grpc-timeout`, or a Service with a DestinationRule
 * responseHeaderTimeout or streamIdleTimeout gets a try state
 * (ex->try_state, in the exchange's arena; NULL for every other request,
 * which then costs nothing more here). Each try picks an
 * endpoint and starts an upstream (rete_route_try); rete_retry_try_started
 * arms the per-try deadline.
 *
 * The core tells the request path when an upstream fails before the
 * response head went downstream and when a response head arrives
 * (rete_request_path.upstream_failed / upstream_response): the retry filter
 * decides there whether to retry (the reason is retryable, tries are left,
 * the request body fits the replay buffer, the method allows it, the
 * service's retry budget has room), ends the try with the balancer
 * (rete_route_try_end), and starts the next one after a jittered backoff
 * from the exchange's timer, preferring another endpoint. */
#ifndef RETE_PROXY_RETRY_H
#define RETE_PROXY_RETRY_H

#include "exchange.h"

/* The replay copy of a request body that may be retried: a body longer than
 * this is sent on but never replayed (its request is not retried). Allocated
 * only for requests of a rule with `retry`, growing to what the body needs. */
#define RETE_RETRY_REPLAY_MAX (64u * 1024u)
/* The backoff before retry n (1, 2...) is drawn from [d/2, d] with
 * d = min(backoff << (n - 1), RETE_RETRY_BACKOFF_CAP_X * backoff). */
#define RETE_RETRY_BACKOFF_CAP_X 10u
/* Retry budget (Linkerd's model), per Service, shared by every worker of
 * the proxy: over the last budget.interval, retries may be at most
 * budget.percent of the requests (of rules with `retry`) plus
 * minRetryRate.count per minRetryRate.interval (DestinationRule
 * retryConstraint; defaults 20%, 10 s, 10 per 1 s). The window is a ring of
 * one-second counters, RETE_RETRY_BUDGET_WINDOW_MAX_S long (the longest
 * interval the loader accepts): 728 bytes a Service, 728 KiB of .bss for
 * the table, whose pages are touched only for Services that retry. */
#define RETE_RETRY_BUDGET_WINDOW_MAX_S 60u
/* Services with a budget of their own (open addressing by FQDN hash); the
 * services beyond share the last slot's. */
#define RETE_RETRY_BUDGET_SLOTS 1024u

/* The request whose rule `rule` chose Service svc, port `port` (0: the
 * port the request came for, resolved by the caller) is about to make its
 * first try. Sets ex->try_state when it needs one (above). */
void rete_retry_begin(rete_exchange *ex, const rete_http_rule *rule, const rete_service *svc,
                      uint16_t port);
/* A try to endpoint ex->endpoint is starting (ex->try_state set). */
void rete_retry_try_started(rete_exchange *ex);
/* The endpoint the last failed try went to (-1: none): the next pick avoids it. */
int rete_retry_exclude(const rete_exchange *ex);

/* rete_request_path hooks (exchange.h), for every exchange. */
bool rete_retry_upstream_failed(rete_exchange *ex);
bool rete_retry_upstream_response(rete_exchange *ex);

/* From filter_route.c: end the current try with the balancer and the
 * circuit breaker (failed: as outlier detection counts it), and start a
 * new one to Service svc port `port`, avoiding endpoint `exclude`. */
void rete_route_try_end(rete_exchange *ex, bool failed);
void rete_route_try(rete_exchange *ex, const rete_service *svc, uint16_t port, int exclude);
/* The end of rete_route_try, with no balancer, breaker or telemetry: send
 * the exchange to endpoint `idx` of svc on service port sp as any request
 * goes (over the mesh to its sidecar, else straight to it), the upstream
 * codec by the port's protocol, a tunnel (ex->tunnel) as one. Health
 * checks (health_check.c) use it. */
void rete_route_send(rete_exchange *ex, const rete_service *svc, const rete_service_port *sp,
                     int idx);

#endif
