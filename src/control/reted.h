/* reted's process state, shared by its modules (api.c, xds.c, resources.c,
 * compiler.c). One loop thread: nothing here is locked. */
#ifndef RETE_CONTROL_RETED_H
#define RETE_CONTROL_RETED_H

#include "ca.h"
#include "defaults.h"
#include "http.h"
#include "io.h"
#include "mesh_index.h"
#include "store.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#define RETED_ROOT_NS RETE_ROOT_NS

/* One resource of a snapshot: its document, key and version (shared with
 * the index, reference counted). */
typedef struct reted_entry {
    reted_text *doc;
} reted_entry;

#define RETED_DELTA_CACHE 4
#define RETED_SCOPE_BUCKETS 4096
#define RETED_MAX_DIRTY 8192       /* changed keys between two pushes; past it, recompile all */

/* A whole-snapshot message tail: shared by the snapshot and the streams
 * still sending it. */
typedef struct reted_body {
    unsigned refs;
    size_t len;
    char data[];
} reted_body;

/* A set of Service keys "ns/name" (compiler.c). */
typedef struct reted_svcset {
    char **keys;
    size_t n;
    size_t cap;
} reted_svcset;

/* The resources compiled for one scope: shared by every proxy whose
 * namespace, egress and (unless the egress is the whole mesh) labels are
 * the same (compiler.c). */
typedef struct reted_snapshot {
    struct reted_snapshot *next;    /* the cache of current snapshots */
    struct reted_snapshot *bucket_next; /* the cache's hash chain (scope_hash) */
    char *scope_key;                /* namespace, egress, labels */
    uint64_t scope_hash;
    bool stale;                     /* a change touched it (sync) */
    bool cached;                    /* in the cache: current for its scope */
    char ns[254];
    reted_strs egress;              /* in force: the Workload's, else MeshConfig's, else all */
    reted_strs labels;              /* the workload's, when they matter */
    bool all;                       /* the egress covers every Service */
    reted_svcset services;          /* the Services in scope (unless all) */
    uint64_t ca_generation;
    uint64_t hash;                  /* resources + trust bundle + renewal request */
    struct reted_body *body;        /* the whole-snapshot message's tail, encoded on first
                                       use, dropped when pushes calm down */
    reted_entry *entries;           /* sorted as the store lists them */
    size_t n_entries;
    uint64_t id;                    /* unique for reted's life: names a delta's base */
    struct reted_delta {            /* deltas to here from a few bases, cached */
        uint64_t base_id;           /* by id, not by reference: a base nobody holds is freed */
        char *body;
        size_t len;
    } deltas[RETED_DELTA_CACHE];
    unsigned next_delta;
    unsigned refs;
} reted_snapshot;

/* One proxy reted knows about: connected now, or seen within the grace period. */
typedef struct reted_proxy {
    struct reted_proxy *next;
    char name[254];
    char ns[254];
    char sa[254];
    char spiffe_id[512];
    char address[64];
    rete_http_stream *stream;       /* NULL while disconnected */
    uint64_t sent_version;
    uint64_t acked_version;
    char nonce[24];
    char *nack_error;               /* NULL unless the last answer was a NACK */
    bool nacked;
    bool ready;
    reted_snapshot *sent;           /* the snapshot last sent (a reference) */
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

typedef struct reted {
    uv_loop_t *loop;
    rete_io_loop iol;
    const char *data_dir;
    char trust_domain[254];
    rete_store *store;
    rete_ca *ca;
    char admin_token[128];
    uint32_t cert_ttl;              /* seconds, workload certificates */
    uint32_t grace_seconds;         /* registry: how long a gone proxy stays */
    rete_http_server *api;
    rete_http_server *xds;
    rete_http_limits api_limits;    /* connections and timeouts per listener (main.c flags) */
    rete_http_limits xds_limits;
    size_t max_apply_body;          /* --max-apply-body: POST /api/v1/apply */
    size_t max_request_body;        /* --max-request-body: every other request body */
    rete_tls_ctx *xds_tls;
    reted_proxy *proxies;
    reted_snapshot *snapshots;      /* compiled, current: one per scope in use */
    reted_snapshot *buckets[RETED_SCOPE_BUCKETS]; /* the same, by scope_hash */
    reted_index index;              /* the store, parsed for scoping */
    reted_strs dirty;               /* kind, ns, name of every key changed since the last sync */
    bool dirty_all;                 /* too many, or not by key: rebuild everything */
    uint64_t ca_generation;         /* bumped at every CA rotation step */
    uv_timer_t push_timer;          /* coalesces recompiles after changes */
    uv_timer_t trim_timer;          /* returns freed memory once pushes calm down */
    uint64_t trimmed_ms;            /* loop time of the last return */
    bool pushed_since_trim;
    uv_timer_t tick;                /* pings, registry expiry */
    uv_signal_t sigterm;
    uv_signal_t sigint;
    bool push_pending;
    int64_t renew_issued_before;    /* proxies with older certificates renew now (CA rotation) */
    /* counters for /metrics */
    uint64_t pushes;
    uint64_t compiles;
    uint64_t snapshot_ids;          /* the last snapshot id given */
    uint64_t acks;
    uint64_t nacks;
    uint64_t certs_issued;
    uint64_t certs_refused;
    uint64_t streams_closed_cert_expired; /* its proxy holds no unexpired certificate */
    uint64_t applies_ok;
    uint64_t applies_rejected;
    uint64_t registrations_ok;      /* hellos that registered or attached a Workload */
    uint64_t registrations_refused[8]; /* by reted_reg_reason (xds.c) */
    bool address_check_off;         /* --registration-address-check off: behind NAT */
    int64_t started_unix;
} reted;

/* resources.c: documents <-> JSON, validation against the whole set, apply. */
typedef struct reted_doc {
    json_t *json;                   /* the resource without server-set metadata */
    const char *kind;               /* canonical kind */
    const char *ns;
    const char *name;
    uint64_t expected_version;      /* from metadata.resourceVersion, 0 when absent */
    int index;                      /* position in the stream, empty documents included,
                                       as the proxy's loader counts (errors name it) */
} reted_doc;

/* Parse a YAML/JSON stream into documents; on error fills *err_json
 * ({"error","details":[...]}) and returns -1. */
int reted_parse_docs(const char *text, size_t len, const char *source, reted_doc **docs,
                     size_t *n_docs, json_t **err_json);
void reted_docs_free(reted_doc *docs, size_t n);
/* Validate `docs` (to be written; deleted ones have json NULL) together with
 * everything stored, with the proxy's own loader. NULL when valid, else an
 * error object naming the document and field path. */
json_t *reted_validate(reted *r, const reted_doc *docs, size_t n, const char *source);
/* Validate one document that nothing else can reference or break (a
 * Workload a proxy registers): its own schema only, without loading the
 * store. */
json_t *reted_validate_alone(reted *r, const reted_doc *doc, const char *source);
/* The canonical kind for a name the user typed ("svc", "httproutes"...), or NULL. */
const char *reted_kind_canonical(const char *name);
/* The stored resource as served by the API: JSON with metadata.resourceVersion
 * and creationTimestamp filled in. */
json_t *reted_resource_json(const rete_store_resource *res);

/* api.c */
void reted_api_handle(rete_http_req *req, void *arg);
/* Admission from the head (http.h): the admin token and each route's body bound. */
void reted_api_admit(const rete_http_req *head, void *arg, rete_http_admit *out);
/* xds.c: the proxy-facing listener (certificates, config streams, registry) */
void reted_xds_handle(rete_http_req *req, void *arg);
/* Admission from the head: known routes only, a client certificate for the
 * stream, small bodies. */
void reted_xds_admit(const rete_http_req *head, void *arg, rete_http_admit *out);
/* The store changed (kind NULL: in a way not given by key, everything is
 * recompiled): remember the key, recompile what it touches and push soon. */
void reted_changed(reted *r, const char *kind, const char *ns, const char *name);
void reted_tick(reted *r);
reted_proxy *reted_proxy_find(reted *r, const char *ns, const char *name);
/* compiler.c: the current snapshot for a proxy (a new reference), and
 * releasing one. changed_key records a changed key (reted_changed calls
 * it); sync applies the recorded changes to the index and drops the cached
 * snapshots they touch; sweep drops those no proxy holds. */
reted_snapshot *reted_snapshot_for(reted *r, reted_proxy *p);
void reted_snapshot_release(reted *r, reted_snapshot *s);
void reted_changed_key(reted *r, const char *kind, const char *ns, const char *name);
void reted_scopes_sync(reted *r);
void reted_snapshots_sweep(reted *r);
/* Workload certificate lifetime, seconds: MeshConfig workloadCertificateTTL,
 * else reted --cert-ttl. */
uint32_t reted_cert_ttl(reted *r);
/* The tail of a whole-snapshot message (made on first use, shared). */
reted_body *reted_snapshot_body(reted *r, reted_snapshot *s);
void reted_body_release(reted_body *b);
/* Drop the cached message bodies (whole and delta) of every snapshot: they
 * serve a burst of pushes; between bursts only the documents are kept. */
void reted_snapshots_drop_bodies(reted *r);
/* For /metrics: snapshots cached, and the bytes of every snapshot alive
 * (documents, keys, entries, bodies). */
void reted_snapshot_stats(reted *r, size_t *cached, size_t *bytes);
/* The snapshot as the document stream a proxy's loader reads ("---\n" doc
 * "\n" ...), malloc'ed; *len set. */
char *reted_snapshot_text(const reted_snapshot *s, size_t *len);
/* The tail of a delta message from `base` to `to` (shared; *len set). */
const char *reted_snapshot_delta(reted *r, reted_snapshot *to, reted_snapshot *base, size_t *len);
/* reted's own certificate for the proxy API, issued by the current CA
 * (main.c); NULL with err. */
rete_tls_ctx *reted_server_tls(reted *r, char *err, size_t errlen);

/* xds.c: the registry's samples of /metrics (registrations by result). */
void reted_registry_metrics(reted *r, FILE *f);
/* metrics text (malloc'ed) */
char *reted_metrics(reted *r, size_t *len);

int64_t reted_now(void);

#endif
