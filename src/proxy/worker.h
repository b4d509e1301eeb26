/* Worker threads: each runs its own libuv loop with its own listeners
 * (SO_REUSEPORT), connection pools, balancers and counters. Nothing here is
 * shared between workers except the immutable config snapshot.
 *
 * A configuration swap reaches a worker as a new generation: the worker keeps
 * serving old exchanges on the generation they started with (a plain,
 * non-atomic count on the worker's own thread) and frees it when the last
 * one ends. */
#ifndef RETE_PROXY_WORKER_H
#define RETE_PROXY_WORKER_H

#include "config-t.h"
#include "io.h"
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


/* The TLS contexts of one snapshot, shared read-only by all workers. */
typedef struct rete_tls_set {
    atomic_uint refs;
    rete_tls_ctx *mesh_server;
    rete_tls_ctx *mesh_client;
    rete_tls_ctx *app_server;   /* NULL unless serverCertFile is set */
} rete_tls_set;

typedef struct rete_gen {
    rete_config *cfg;
    rete_tls_set *tls;
    struct rete_lb **lbs;       /* one per cfg->services[i], built lazily */
    uint32_t *in_flight;        /* requests in flight per service (circuit breaking) */
    unsigned users;             /* exchanges and connections using this generation */
    bool retired;
} rete_gen;

typedef enum rete_listener_kind {
    RETE_L_OUTBOUND,
    RETE_L_INBOUND,
    RETE_L_MESH,
    RETE_L_UPSTREAM,
    RETE_L_ADMIN,
} rete_listener_kind;

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
    unsigned n_h1;
} rete_pool_entry;

typedef struct rete_counters {
    atomic_uint_fast64_t requests;
    atomic_uint_fast64_t responses_by_class[6]; /* index: status/100, 0 = reset/no response */
    atomic_uint_fast64_t bytes_in;
    atomic_uint_fast64_t bytes_out;
    atomic_uint_fast64_t conns_total[5];        /* by listener kind */
    atomic_uint_fast64_t conns_active[5];
    atomic_uint_fast64_t parse_errors;
    atomic_uint_fast64_t mesh_refused;          /* handshake or identity refusals */
    atomic_uint_fast64_t overflow;              /* refused by a connection-pool limit */
    atomic_uint_fast64_t authz_denied;          /* requests and tunnels denied by AuthorizationPolicy */
    atomic_uint_fast64_t tcp_bytes_in;
    atomic_uint_fast64_t tcp_bytes_out;
    atomic_uint_fast64_t latency_buckets[20];   /* request duration histogram, ms bounds below */
    atomic_uint_fast64_t latency_sum_us;
} rete_counters;

typedef struct rete_worker {
    int id;
    struct rete_proxy *proxy;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wakeup;
    uv_timer_t drain_timer;
    _Atomic(rete_gen *) incoming;   /* set by the main thread, taken by the worker */
    rete_gen *gen;                  /* current generation */
    rete_listener *listeners;
    size_t n_listeners;
    rete_pool_entry *pools;
    struct rete_h2_conn *h2_dirty;  /* HTTP/2 connections with frames to write */
    uv_check_t flush_check;         /* after I/O callbacks */
    uv_prepare_t flush_prepare;     /* before blocking: work queued by timers and closes */
    uint64_t rng;
    bool draining;
    atomic_bool drain_requested;
    atomic_bool stopped;
    uint64_t drain_deadline;
    unsigned active_conns;
    unsigned active_exchanges;
    rete_counters counters;
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

static inline void rete_count(atomic_uint_fast64_t *c, uint64_t n)
{
    /* Single writer (the worker): a relaxed load+store, no locked instruction. */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

extern const double rete_latency_bounds_ms[20];

void rete_gen_hold(rete_gen *g);
void rete_gen_release(rete_worker *w, rete_gen *g);
rete_gen *rete_gen_new(rete_config *cfg, rete_tls_set *tls);
void rete_tls_set_unref(rete_tls_set *s);

/* Start / stop (drain) the worker threads of a proxy. */
int rete_worker_start(rete_worker *w);
void rete_worker_post_gen(rete_worker *w, rete_gen *g);
void rete_worker_drain(rete_worker *w);

/* Write the frames of every HTTP/2 connection that made some (h2.c). */
void rete_h2_flush_all(rete_worker *w);

/* Pools. */
rete_pool_entry *rete_pool_get(rete_worker *w, const char *key);
struct rete_lb *rete_gen_lb(rete_gen *g, const rete_service *svc);

#endif
