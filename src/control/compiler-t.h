/* The snapshot cache's types (compiler.h has its functions): snapshots,
 * their bodies and deltas, and the cache that struct reted embeds. */
#ifndef RETE_CONTROL_COMPILER_T_H
#define RETE_CONTROL_COMPILER_T_H

#include "mesh_index.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct reted;
struct reted_proxy;

/* One resource of a snapshot: its document, key and version (shared with
 * the index, reference counted). */
typedef struct reted_entry {
    reted_text *doc;
} reted_entry;

#define RETED_DELTA_CACHE 4
#define RETED_SCOPE_BUCKETS 4096
#define RETED_MAX_DIRTY 8192       /* changed keys between two pushes; past it, recompile all */
/* Workloads changed between two pushes followed as endpoints (patched in,
 * out or over, compiler.c); past it each patched snapshot would search for
 * every one of them, and compiling the touched ones again is cheaper. */
#define RETED_MEMBER_PATCH_MAX 64

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
    bool patch;                     /* it holds a resource that changed but kept its shape (sync) */
    bool cached;                    /* in the cache: current for its scope */
    char ns[254];
    reted_strs egress;              /* in force: the Workload's, else MeshConfig's, else all */
    reted_strs labels;              /* the workload's, when they matter */
    bool all;                       /* the egress covers every Service */
    reted_svcset services;          /* the Services in scope (unless all) */
    uint64_t ca_generation;
    uint64_t hash;                  /* resources + trust bundle + renewal request */
    uint64_t bundle_hash;           /* of the trust bundle it was made with */
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

/* The cache's state (struct reted embeds it as `cache`). */
typedef struct reted_snapcache {
    reted_snapshot *snapshots;      /* compiled, current: one per scope in use */
    reted_snapshot *buckets[RETED_SCOPE_BUCKETS]; /* the same, by scope_hash */
    reted_strs dirty;               /* kind, ns, name of every key changed since the last sync */
    bool dirty_all;                 /* too many, or not by key: rebuild everything */
    uint64_t snapshot_ids;          /* the last snapshot id given */
    uint64_t bundle_hash;           /* of the CA bundle at generation bundle_gen - 1 (0: none yet) */
    uint64_t bundle_gen;
    /* Workloads ("ns/name") whose sidecar last reported not ready: pushed
     * with spec.ready false (reted_workload_set_ready). */
    reted_svcset not_ready;
} reted_snapcache;

#endif
