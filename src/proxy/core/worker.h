/* Worker threads: each runs its own libuv loop with its own listeners
 * (SO_REUSEPORT), connection pools, balancers and metrics shard. Nothing here is
 * shared between workers except the immutable config snapshot.
 *
 * A configuration swap reaches a worker as a new generation: the worker keeps
 * serving old exchanges on the generation they started with (a plain,
 * non-atomic count on the worker's own thread) and frees it when the last
 * one ends. */
#ifndef RETE_PROXY_WORKER_H
#define RETE_PROXY_WORKER_H

#include "breaker.h"
#include "config-t.h"
#include "io.h"
#include "mesh_metrics.h"
#include "metrics.h"
#include "tls.h"
#include "view.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct rete_lb;
struct rete_proxy;
struct rete_h2_conn;
struct rete_h1_client;
typedef struct rete_tel_cache rete_tel_cache;


/* The TLS contexts of one snapshot, shared read-only by all workers. */
typedef struct rete_tls_set {
    atomic_uint refs;
    rete_tls_ctx *mesh_server;
    rete_tls_ctx *mesh_client;
    rete_tls_ctx *app_server;   /* NULL unless serverCertFile is set */
    /* one per cfg->services[i]: TLS origination (DestinationRule tls
     * SIMPLE) to its endpoints outside the mesh, NULL for plaintext */
    rete_tls_ctx **originate;
    size_t n_originate;
} rete_tls_set;

typedef struct rete_gen {
    rete_config *cfg;
    rete_tls_set *tls;
    struct rete_lb **lbs;       /* one per cfg->services[i], built lazily */
    struct rete_upstream_limits *limits; /* one per cfg->services[i] (circuit breaking), lazily */
    unsigned users;             /* exchanges and connections using this generation */
    bool retired;
    /* for metric labels, found once per snapshot */
    const rete_workload *self;          /* this proxy's Workload, NULL if the config has none */
    const rete_service *self_service;   /* a service that selects it, NULL if none */
    rete_tel_cache *tel;                /* request series by label key (telemetry.c), lazily */
    char *peer_meta;                    /* RETE_PEER_HEADER's value (telemetry.c), lazily */
} rete_gen;

typedef enum rete_listener_kind {
    RETE_L_OUTBOUND,
    RETE_L_INBOUND,
    RETE_L_MESH,
    RETE_L_UPSTREAM,
    RETE_L_ADMIN, /* loopback only: everything, state changes by POST */
    RETE_L_STATS, /* may face the network: /metrics, /ready, /live */
    RETE_L_N,
} rete_listener_kind;

/* The admin and stats listeners: worker 0 only, no SO_REUSEPORT, their own
 * connection caps (limits.maxAdminConnections each), open while draining. */
static inline bool rete_listener_is_local(rete_listener_kind k)
{
    return k == RETE_L_ADMIN || k == RETE_L_STATS;
}

typedef struct rete_listener {
    uv_tcp_t tcp;
    struct rete_worker *worker;
    rete_listener_kind kind;
    const char *name;
    size_t upstream_index;      /* RETE_L_UPSTREAM: index in proxy.upstreams */
    bool open;
} rete_listener;

/* A pooled upstream connection key: peer address (and SPIFFE ID for mesh). */
typedef struct rete_pool_entry {
    struct rete_pool_entry *next;
    char key[224];
    struct rete_h2_conn *h2;    /* mesh or h2c: one multiplexed connection */
    struct rete_h1_client *idle; /* HTTP/1.1 to the app: idle keep-alive connections */
    unsigned n_h1;              /* HTTP/1.1 connections, busy and idle */
    unsigned n_idle;            /* of which idle */
} rete_pool_entry;

/* Why a downstream connection was closed at accept (the `reason` label). */
typedef enum rete_refuse_reason {
    RETE_REFUSE_MAX_CONNECTIONS, /* limits.maxConnections / maxAdminConnections */
    RETE_REFUSE_FD_LIMIT,        /* this worker's share of RLIMIT_NOFILE */
    RETE_REFUSE_ACCEPT_ERROR,    /* accept(2) failed (EMFILE, ENFILE, ENOBUFS...) */
    RETE_REFUSE_N,
} rete_refuse_reason;

/* Which timeout closed a downstream connection (the `timeout` label). */
typedef enum rete_timeout_kind {
    RETE_TIMEOUT_DETECT,          /* limits.detectTimeout, when it closes (TLS, mesh, unroutable) */
    RETE_TIMEOUT_REQUEST_HEADER,  /* limits.requestHeaderTimeout */
    RETE_TIMEOUT_REQUEST_BODY,    /* limits.requestBodyTimeout */
    RETE_TIMEOUT_RESPONSE_WRITE,  /* limits.responseWriteTimeout */
    RETE_TIMEOUT_IDLE,            /* limits.idleTimeout */
    RETE_TIMEOUT_STREAM_IDLE,     /* limits.streamIdleTimeout (HTTP/2 streams) */
    RETE_TIMEOUT_N,
} rete_timeout_kind;

/* The proxy's fixed series (no per-request label values), resolved once at
 * start-up in the process registry; every worker increments them in its own
 * shard (rete_stat). The listener-indexed arrays follow rete_listener_kind. */
/* Why an HTTP/2 client was cut off (h2.c); label values in telemetry.c. */
enum {
    RETE_H2_ABUSE_RAPID_RESET,        /* connection closed: most of its streams reset early */
    RETE_H2_ABUSE_RAPID_RESET_CLIENT, /* connection refused: its client is over the reset window */
    RETE_H2_ABUSE_BUDGET_SHARE,       /* request refused: its connection holds its share of the budget */
    RETE_H2_ABUSE_FLOOD,              /* connection closed: over H2_MAX_OUTBOUND_ACK queued SETTINGS/PING acks */
    RETE_H2_ABUSE_CONTINUATION,       /* connection closed: a header block of more than H2_MAX_CONTINUATIONS frames */
    RETE_H2_ABUSE_PROTOCOL,           /* a stream or connection error nghttp2 found in what the client sent */
    RETE_H2_ABUSE_N
};

/* What became of a request chosen for mirroring (http/filter_mirror.c);
 * label values in proxy.c. */
enum {
    RETE_MIRROR_SENT,          /* the copy got a response (discarded) */
    RETE_MIRROR_FAILED,        /* the copy's upstream failed or timed out */
    RETE_MIRROR_ABORTED,       /* cut: the request ended early or the copy's pipe was full */
    RETE_MIRROR_SKIPPED_LIMIT, /* not sent: limits.maxMirrorsInFlight copies in flight */
    RETE_MIRROR_SKIPPED_BODY,  /* not sent or cut: body over limits.maxMirrorBody */
    RETE_MIRROR_RESULT_N
};

typedef struct rete_proxy_series {
    rete_metric requests;
    rete_metric responses[6];       /* index: status/100, 0 = reset/no response */
    rete_metric duration;           /* rete_proxy_request_duration_seconds */
    rete_metric http_in, http_out;
    rete_metric tcp_in, tcp_out;
    rete_metric conns_total[RETE_L_N];
    rete_metric conns_active[RETE_L_N];
    rete_metric conns_refused[RETE_L_N][RETE_REFUSE_N];   /* [listener kind][rete_refuse_reason] */
    rete_metric timeouts[RETE_TIMEOUT_N];          /* rete_timeout_kind */
    rete_metric parse_errors;
    rete_metric mesh_refused;       /* handshake or identity refusals */
    rete_metric cb_rejections[RETE_BREAKER_N]; /* refused by a connection-pool limit */
    rete_metric h2_abuse[RETE_H2_ABUSE_N]; /* rete_proxy_h2_abuse_total{reason} */
    rete_metric authz_denied;       /* requests and tunnels denied by AuthorizationPolicy */
    rete_metric access_log_dropped; /* lines the access log's writer had no room for */
    rete_metric spans_sampled, spans_dropped; /* tracing: queued, and no room in the queue */
    rete_metric faults[2];          /* rete_proxy_faults_injected_total: [0] delay, [1] abort */
    rete_metric rate_limited[3];    /* rete_proxy_rate_limited_total: route, total, identity */
    rete_metric mirror[RETE_MIRROR_RESULT_N]; /* rete_proxy_mirror_requests_total{result} */
    rete_metric mirror_in_flight;   /* rete_proxy_mirror_requests_in_flight (gauge_add) */
    rete_metric unknown_passthrough, unknown_refused; /* outboundTrafficPolicy (filter_route.c) */
    rete_metric upstream_tls_failures; /* originated TLS failed (codec/h1_client.c) */
    rete_metric resolutions_ok, resolutions_error; /* externalName (core/external.c, main thread) */
    rete_metric path_rejected[RETE_PATH_RESULT_COUNT]; /* by rete_path_norm_result; [0] unused */
    rete_metric config_version;
    rete_metric reloads_ok, reloads_rejected;
    rete_metric workers;
    rete_metric build_info;
    rete_metric cert_expiry;        /* set by the main thread */
    rete_metric cp_connected;
} rete_proxy_series;

typedef struct rete_worker {
    int id;
    struct rete_proxy *proxy;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wakeup;
    uv_timer_t drain_timer;
    uv_timer_t wait_timer;          /* the pending queue's poll (upstream_wait.c) */
    struct rete_exchange *wait_head, *wait_tail; /* requests waiting for a connection */
    _Atomic(rete_gen *) incoming;   /* set by the main thread, taken by the worker */
    rete_gen *gen;                  /* current generation */
    rete_listener *listeners;
    size_t n_listeners;
    rete_pool_entry *pools;
    struct rete_h2_conn *h2_dirty;  /* HTTP/2 connections with frames to write */
    struct rete_h1_server *h1_dirty; /* HTTP/1.1 downstreams with a response head kept */
    struct rete_exchange *ex_pool;  /* recycled exchanges (exchange.c) */
    unsigned n_ex_pool;
    struct rete_exchange *ex_reap;  /* let go of, recycled in the prepare phase */
    uv_check_t flush_check;         /* after I/O callbacks */
    uv_prepare_t flush_prepare;     /* before blocking: work queued by timers and closes */
    uint64_t rng;
    bool draining;
    atomic_bool drain_requested;
    atomic_bool release_idle;       /* another worker's requests wait: rete_upstream_release_idle */
    atomic_bool stopped;
    uint64_t drain_deadline;
    uint64_t drain_quiet_since;     /* nothing in flight since (loop ms), 0 = busy */
    unsigned active_conns;          /* data listeners (limits.maxConnections) */
    unsigned peak_conns;            /* highest active_conns since the last trim */
    unsigned local_conns[2];        /* admin, stats listeners (limits.maxAdminConnections each) */
    unsigned fd_cap;                /* data connections this worker's share of the file limit allows */
    unsigned active_exchanges;
    rete_metrics_shard *shard;      /* this thread's metrics: created at start, freed at exit */
    const rete_mesh_metrics *mm;    /* families (the proxy's) */
    rete_proxy_series ms;           /* fixed series (a copy of the proxy's) */
    rete_header h1_fields[128];     /* parser scratch: heads are copied into exchanges */
    rete_io_loop iol;               /* this loop's read and TLS buffers */
} rete_worker;

static inline uint64_t rete_worker_rand(rete_worker *w)
{
    /* xorshift64*: cheap, per worker, no lock. */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Count n on one of the worker's series: a relaxed load and store in its own
 * shard, no lock, no read-modify-write. Worker thread only. */
static inline void rete_stat(rete_worker *w, rete_metric m, uint64_t n)
{
    rete_metrics_inc(w->shard, m, n);
}

void rete_gen_hold(rete_gen *g);
void rete_gen_release(rete_worker *w, rete_gen *g);
rete_gen *rete_gen_new(rete_config *cfg, rete_tls_set *tls);
void rete_tls_set_unref(rete_tls_set *s);

/* Start / stop (drain) the worker threads of a proxy. */
int rete_worker_start(rete_worker *w);
void rete_worker_post_gen(rete_worker *w, rete_gen *g);
void rete_worker_drain(rete_worker *w);

/* Pools. */
rete_pool_entry *rete_pool_get(rete_worker *w, const char *key);
struct rete_lb *rete_gen_lb(rete_gen *g, const rete_service *svc);
/* The pool limits of `svc` (a Service of g's snapshot) with its proxy-wide
 * counters; NULL when svc is not one of g's. */
const struct rete_upstream_limits *rete_gen_limits(rete_gen *g, const rete_service *svc);

#endif
