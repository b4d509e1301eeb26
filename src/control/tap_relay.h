/* Tap in reted (docs/observability.md, "Tap"; docs/control-plane.md,
 * "Tap"): GET /api/v1/tap answers a stream of JSON lines to the operator
 * (retectl tap, top, diagnose); reted tells the proxies of the target to
 * start a tap on their config streams and relays their records to every
 * client of that tap.
 *
 * Clients asking for the same target and filters share one tap (one id at
 * the proxies). When its last client leaves, reted sends "tap-stop" to the
 * proxies it told: they stop capturing at once. A proxy that connects while
 * a tap is on and is in its target is told at its hello.
 *
 * Bounds: RETED_TAP_MAX taps, RETED_TAP_MAX_CLIENTS clients per tap (a
 * request over either gets 429); what a client has not read yet is bounded
 * by its stream's queue (http.h: RETE_HTTP_STREAM_MAX_COPIED bytes,
 * RETE_HTTP_STREAM_MAX_MSGS lines): a client that falls behind is cut off.
 * The proxies bound the rate (tap.h in the proxy: 100 records/s each).
 *
 * Threading: reted's loop only. */
#ifndef RETE_CONTROL_TAP_RELAY_H
#define RETE_CONTROL_TAP_RELAY_H

#include "http.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define RETED_TAP_MAX 16
#define RETED_TAP_MAX_CLIENTS 8

struct reted;
struct reted_proxy;
typedef struct reted_tap reted_tap;

typedef struct reted_taps {
    reted_tap *list;
    size_t n;
    uint64_t next_id;
    uint64_t clients_total, clients_cut; /* /metrics */
} reted_taps;

/* GET /api/v1/tap?kind=deploy|service|workload&name=N&namespace=NS
 * [&path=PREFIX][&method=M][&status=CODE][&headers=true] (the token was
 * checked): 400 on a bad query, 429 over a bound, else the stream. */
void reted_tap_api(struct reted *r, rete_http_req *req);
/* A proxy's "tap-started", "tap-error" or "tap-events" line. */
void reted_tap_on_proxy(struct reted *r, struct reted_proxy *p, const char *type, json_t *msg);
/* A proxy said hello: start the taps whose target it is in. */
void reted_tap_on_hello(struct reted *r, struct reted_proxy *p);
/* Taps on now. */
size_t reted_tap_count(const struct reted *r);

#endif
