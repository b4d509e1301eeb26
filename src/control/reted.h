/* reted's process state: what main.c wires together. Each module keeps its
 * state in its own struct (registry, snapshot cache, push, stats) embedded
 * here, and declares its functions in its own header; a .c file includes the
 * headers of the modules it calls. One loop thread: nothing here is locked. */
#ifndef RETE_CONTROL_RETED_H
#define RETE_CONTROL_RETED_H

#include "ca.h"
#include "compiler-t.h"
#include "defaults.h"
#include "http.h"
#include "io.h"
#include "mesh_index.h"
#include "push-t.h"
#include "registry-t.h"
#include "scrape-t.h"
#include "stats.h"
#include "golden_agg.h"
#include "tap_relay.h"
#include "store.h"

#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#define RETED_ROOT_NS RETE_ROOT_NS

typedef struct reted {
    uv_loop_t *loop;
    rete_io_loop iol;
    const char *data_dir;
    char trust_domain[254];
    rete_store *store;
    rete_ca *ca;
    char admin_token[128];
    uint32_t cert_ttl;              /* seconds, workload certificates */
    rete_http_server *api;
    rete_http_server *xds;
    rete_http_limits api_limits;    /* connections and timeouts per listener (main.c flags) */
    rete_http_limits xds_limits;
    size_t max_apply_body;          /* --max-apply-body: POST /api/v1/apply */
    size_t max_request_body;        /* --max-request-body: every other request body */
    rete_tls_ctx *xds_tls;
    reted_registry registry;        /* proxies and their streams (registry.h) */
    reted_snapcache cache;          /* compiled snapshots, changed keys (compiler.h) */
    reted_push_state push;          /* push scheduling (push.h) */
    reted_index index;              /* the store, parsed for scoping (mesh_index.h) */
    uint64_t ca_generation;         /* bumped at every CA rotation step */
    uv_timer_t tick;                /* pings, registry expiry */
    uv_signal_t sigterm;
    uv_signal_t sigint;
    int64_t renew_issued_before;    /* proxies with older certificates renew now (CA rotation) */
    reted_stats stats;              /* /metrics: families and counters (stats.h) */
    reted_golden golden;            /* the proxies' stats summaries (golden_agg.h) */
    reted_taps taps;                /* operators' taps (tap_relay.h) */
    reted_scrape scrape;            /* /metrics: what is read at scrape time (scrape.h) */
    int64_t started_unix;
    uv_async_t store_async;         /* the store's watch wakes the loop (replica.c) */
    bool store_watching;
    uv_timer_t lead_timer;          /* leadership on a replicated store (replica.c) */
    bool leading;                   /* this replica runs the jobs that run once */
    char replica_id[128];           /* in the leader key, /api/v1/check: HOSTNAME-PID */
    char leader[128];               /* the leading replica's id as last read, "" unknown */
    struct reted_keyring *ca_kek;   /* --ca-kek (and --ca-kek-previous): the CA is shared through the store (ca_shared.h) */
    uint64_t ca_rev;                /* the shared CA record's revision this replica holds */
} reted;

/* Wall-clock seconds (certificate and token times, the registry's times). */
static inline int64_t reted_now(void)
{
    return (int64_t)time(NULL);
}

#endif
