/* The registry's types (registry.h has its functions): one proxy, and the
 * registry that struct reted embeds. */
#ifndef RETE_CONTROL_REGISTRY_T_H
#define RETE_CONTROL_REGISTRY_T_H

#include "ca.h"
#include "http.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct reted;
struct reted_snapshot;

/* What a proxy record keeps of its names at most (bytes, the NUL excluded;
 * longer ones are cut, as the fixed arrays that held them did). */
#define RETED_PROXY_NAME_MAX 253     /* name, ns, sa: a DNS subdomain name (RFC 1123) */
#define RETED_PROXY_SPIFFE_ID_MAX 511
#define RETED_PROXY_ADDRESS_MAX 63

/* One proxy reted knows about: connected now, or seen within the grace period. */
typedef struct reted_proxy {
    struct reted_proxy *next;
    struct reted_proxy *hnext;      /* its bucket's chain (registry.buckets) */
    /* Its names, each NUL-terminated at its own length in one allocation
     * (names; proxy_api.c's set_names makes it): ns and name never change
     * for a record; sa, spiffe_id and address are its latest hello's. Each
     * is bounded by the RETED_PROXY_*_MAX above: about 100 bytes where
     * fixed arrays took 1.3 KB. */
    const char *name;
    const char *ns;
    const char *sa;
    const char *spiffe_id;
    const char *address;
    char *names;
    rete_http_stream *stream;       /* NULL while disconnected */
    uint64_t sent_version;
    uint64_t acked_version;
    char nonce[24];
    char *nack_error;               /* NULL unless the last answer was a NACK */
    /* The endpoints its balancers hold out (outlier detection, health
     * checks), as its last "endpoints" message said; NULL: none said, or none out. */
    json_t *endpoints_out;
    json_t *budget_exhausted;       /* cluster -> retries its budget refused, as it last said; NULL: none */
    bool nacked;
    bool ready;
    struct reted_snapshot *sent;           /* the snapshot last sent (a reference) */
    uint64_t scope_wl_version;      /* its Workload's version when its scope was worked out */
    uint64_t scope_mesh_gen;        /* and the index's MeshConfig generation */
    int64_t connected_unix;
    int64_t last_seen_unix;
    int64_t disconnected_unix;      /* 0 while connected */
    /* Its certificates, as reted knows them, never as the proxy claims
     * them: stream_cert is the client certificate its stream was verified
     * with; cert the newest it holds, that one or the one reted issued when
     * it renewed presenting stream_cert or cert (docs/control-plane.md,
     * "What reted knows of a proxy's certificate"). */
    rete_cert_facts stream_cert;
    rete_cert_facts cert;
} reted_proxy;

/* A proxy-registered Workload that no live replica holds (the leader's
 * sweep, registry.c): since when it has been seen so. */
typedef struct reted_orphan {
    char *key;                      /* "ns/name" */
    int64_t since_unix;
} reted_orphan;

/* A registration waiting to be written (registry.c). */
typedef struct reted_reg_pending {
    char *ns, *name;
    size_t seq;                     /* queue order: of one key, the latest is written */
    bool ready;
} reted_reg_pending;

/* The registry's state (struct reted embeds it as `registry`). */
typedef struct reted_registry {
    reted_proxy *proxies;
    /* The same proxies by ns/name (FNV-1a, chained; doubled when there are
     * more proxies than buckets): a hello, an ACK, a registration another
     * replica made each find their proxy without a walk of 10,000. */
    reted_proxy **buckets;
    size_t n_buckets, n_proxies;
    uint32_t grace_seconds;         /* how long a gone proxy stays */
    bool address_check_off;         /* --registration-address-check off: behind NAT */
    uint64_t reg_epoch;             /* the store's lease epoch the held registrations were put under */
    reted_orphan *orphans;          /* the leader's sweep, sorted by key */
    size_t n_orphans;
    /* Replicated stores: the registrations this replica holds that are not
     * written yet, and the timer that writes them (registry.c). */
    reted_reg_pending *pending;
    size_t n_pending, cap_pending;
    uv_timer_t flush_timer;
    bool flush_ready;               /* flush_timer initialised */
    bool flush_failing;             /* the last write failed (warned once) */
    uint32_t retry_ms;              /* the next try's delay while failing: 1 s doubling to 8 s */
} reted_registry;

#endif
