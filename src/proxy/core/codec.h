/* The codec table: every wire protocol the proxy speaks, indexed by id.
 * The core (conn.c: a detected connection; worker.c: the loop's flush and
 * thread exit) and the request path (dispatch.c: an upstream to reach) look
 * a codec up here instead of calling it by name, so that neither includes a
 * codec and a codec added later is one more row, not one more branch.
 *
 * Each codec (src/proxy/codec/) defines one `const rete_codec` in its own
 * header; rete_codecs_register (codec/codecs.c) puts them in the table at
 * start-up, before any worker runs. The table is read-only afterwards. */
#ifndef RETE_PROXY_CODEC_H
#define RETE_PROXY_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rete_conn;
struct rete_exchange;
struct rete_worker;

/* Ids in the order the worker flushes them (HTTP/2 frames first, then the
 * HTTP/1.1 heads kept for their body, as before the table). */
typedef enum rete_codec_id {
    RETE_CODEC_H2,        /* HTTP/2: server (h2c, mesh) and client (mesh, h2c to the app) */
    RETE_CODEC_H1_SERVER, /* HTTP/1.1 downstream (apps, clients, the admin listener) */
    RETE_CODEC_H1_CLIENT, /* HTTP/1.1 to the local app or a host outside the mesh */
    RETE_CODEC_TCP,       /* raw TCP: downstream and upstream */
    RETE_CODEC_N,
} rete_codec_id;

struct rete_breaker;

/* The connection-pool limits of the Service an outbound request goes to
 * (DestinationRule connectionPool; docs/traffic.md), one per Service per
 * generation (rete_gen_limits). Counts are in `breaker`, shared by every
 * worker. */
typedef struct rete_upstream_limits {
    struct rete_breaker *breaker;
    uint32_t max_connections;             /* tcp.maxConnections */
    uint32_t max_pending;                 /* http.http1MaxPendingRequests */
    uint32_t pending_timeout_ms;          /* http.pendingTimeout */
    uint32_t max_requests_per_connection; /* http.maxRequestsPerConnection, 0: unbounded */
    const char *cluster;                  /* the Service's FQDN (metric labels; copy it) */
    uint32_t idle_timeout_ms;             /* http.idleTimeout: a pooled connection with no
                                             request this long is closed; 0: never */
} rete_upstream_limits;

/* Where an upstream codec connects: the address, whether to speak mesh TLS
 * and the SPIFFE ID the peer must present (h2 only; others ignore both). */
typedef struct rete_upstream_target {
    const char *ip;
    uint16_t port;
    bool tls;
    const char *expected_id;
    /* Bound on the TCP connect (rete_io_connect_timeout); 0 = none. The
     * outbound side uses the Service's DestinationRule
     * connectionPool.tcp.connectTimeout (default 10 s). */
    uint32_t connect_timeout_ms;
    /* Outbound to a Service: its pool limits (a new connection is opened
     * only within max_connections, else the request waits, see
     * rete_upstream_wait). NULL: unbounded (inbound, passthrough). */
    const rete_upstream_limits *limits;
    /* HTTP/1.1 to an endpoint outside the mesh with DestinationRule tls
     * SIMPLE: the origination context (rete_tls_originate_ctx) and the
     * name verified (and sent as SNI); NULL: plaintext. */
    struct rete_tls_ctx *originate;
    const char *originate_name;
} rete_upstream_target;

typedef struct rete_codec {
    const char *name;
    /* Take over an accepted (and detected) connection; `data` holds bytes
     * already read. NULL: the codec has no server side. */
    void (*server_start)(struct rete_conn *c, const char *data, size_t len);
    /* Attach as the exchange's upstream side, or fail it with rete_ex_fail.
     * NULL: the codec has no client side. */
    void (*upstream_start)(struct rete_exchange *ex, const rete_upstream_target *t);
    /* Write what the codec queued during this loop turn (worker.c calls it
     * after I/O callbacks and before blocking). NULL: nothing queued. */
    void (*flush_all)(struct rete_worker *w);
    /* Close the calling worker's idle upstream connections that hold a
     * connection slot of a Service whose requests wait for one
     * (upstream_wait.h): an idle connection on one worker must not starve
     * the requests queued on another. NULL: the codec pools none. */
    void (*release_idle)(struct rete_worker *w);
    /* Free the calling worker thread's per-thread state at its exit. */
    void (*thread_cleanup)(void);
} rete_codec;

/* Put `codec` at `id` (start-up, main thread, before the workers). */
void rete_codec_register(rete_codec_id id, const rete_codec *codec);
/* The codec at `id`; aborts when none is registered there (a wiring bug). */
const rete_codec *rete_codec_get(rete_codec_id id);
/* The codec at `id` or NULL (for loops over the whole table). */
const rete_codec *rete_codec_at(rete_codec_id id);

#endif
