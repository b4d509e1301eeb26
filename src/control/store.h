/* The control plane's store: resources, tokens and the revision counter,
 * behind one small interface (a vtable) so that the embedded SQLite backend
 * and the etcd backend (store_etcd.c) are interchangeable. Synchronous:
 * reted calls it on its loop thread; SQLite on local disk answers in
 * microseconds, etcd in a network round trip (bounded by its timeout).
 *
 * Resources are JSON text keyed by (kind, namespace, name). Every change
 * takes the next value of one global revision counter; a resource's
 * resource_version is the revision of its last change. */
#ifndef RETE_CONTROL_STORE_H
#define RETE_CONTROL_STORE_H

#include "error.h"
#include "result.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rete_store rete_store;

typedef struct rete_store_resource {
    const char *kind;        /* canonical kind: "Service", "HTTPRoute", ... */
    const char *ns;
    const char *name;
    const char *json;        /* the whole resource as JSON text */
    uint64_t resource_version;
    uint64_t create_revision;
    int64_t created_unix;    /* creation time, seconds */
} rete_store_resource;

/* One write of a transaction. json == NULL deletes. expected_version: 0 =
 * unconditional, else the write fails with RETE_ECONFLICT unless the
 * resource's current resource_version equals it (for a create: the resource
 * must not exist when expected_version is given as UINT64_MAX). */
typedef struct rete_store_write {
    const char *kind;
    const char *ns;
    const char *name;
    const char *json;
    uint64_t expected_version;
    /* out */
    uint64_t new_version;    /* the revision the write got (0 if unchanged) */
    bool created;
    bool unchanged;          /* same JSON as stored: no new revision */
} rete_store_write;

typedef bool (*rete_store_each_fn)(const rete_store_resource *r, void *arg); /* false stops */

typedef struct rete_store_token {
    char id[33];             /* public half, hex */
    char ns[254];
    char sa[254];
    int64_t expires_unix;
    int32_t uses_left;       /* -1 = unlimited */
} rete_store_token;

/* A change another writer made (a replicated store: other reted replicas,
 * and this one's own writes too, which come back the same way). */
typedef struct rete_store_change {
    const char *kind;
    const char *ns;
    const char *name;
    uint64_t revision;       /* the resource_version it got (its deletion's, when deleted) */
    bool deleted;
} rete_store_change;

typedef bool (*rete_store_change_fn)(const rete_store_change *c, void *arg); /* false stops */

typedef bool (*rete_store_token_fn)(const rete_store_token *t, const uint8_t secret_hash[32],
                                    void *arg); /* false stops */

/* A token's secret hash as text, where etcd and the logical dump
 * (store_tool.c) keep it: 64 lowercase hex digits. from_hex: false unless
 * exactly 64 hex digits. */
static inline void rete_store_hash_hex(const uint8_t hash[32], char out[65])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[hash[i] >> 4];
        out[2 * i + 1] = digits[hash[i] & 15];
    }
    out[64] = '\0';
}

static inline bool rete_store_hash_from_hex(const char *s, uint8_t out[32])
{
    for (int i = 0; i < 64; i++) {
        char c = s ? s[i] : '\0';
        int v = -1;
        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v = c - 'A' + 10;
        if (v < 0)
            return false;
        out[i / 2] = (uint8_t)(i % 2 ? (out[i / 2] << 4) | v : v);
    }
    return s[64] == '\0';
}

/* A proxy's registration on a replicated store: which replica holds its
 * config stream and whether the proxy reports itself ready. Kept under the
 * holding replica's lease, so it goes when that replica does. */
typedef struct rete_store_registration {
    const char *ns;
    const char *name;
    const char *holder;      /* the holding replica's id */
    bool ready;
    uint64_t revision;       /* its mod_revision (0: absent) */
    bool deleted;            /* (watch) removed: expired with its lease, or deregistered */
} rete_store_registration;

typedef bool (*rete_store_registration_fn)(const rete_store_registration *g, void *arg); /* false stops */

/* One expiry of reg_expire_many: the guards of reg_expire (the
 * registration ns/name still at reg_revision, 0: still absent; the Workload
 * at wl_version, 0: left alone). rc (out): RETE_OK (deleted), RETE_ECONFLICT
 * (either moved: nothing of this one deleted), RETE_EINVAL (a bad name),
 * RETE_EIO (the store failed before deciding it). */
typedef struct rete_store_expiry {
    const char *ns;
    const char *name;
    uint64_t reg_revision;
    uint64_t wl_version;
    rete_rc rc;
} rete_store_expiry;

typedef struct rete_store_ops {
    const char *name;
    /* Apply every write or none, in order (a later write sees an earlier
     * one). Returns RETE_OK, or with nothing changed: RETE_ECONFLICT (the
     * write that conflicted in *failed_index), RETE_ENOTFOUND (a delete of a
     * missing resource, in *failed_index), RETE_EINVAL (a write without
     * kind or name, or ns NULL; in *failed_index), RETE_ELIMIT (more
     * writes than the backend takes in one transaction: etcd's 128), RETE_EIO
     * (the store is unreachable or failed). On failure every write's out
     * fields are zero. A backend may give every write of one apply the same
     * new_version (etcd: one transaction, one revision). */
    rete_rc (*apply)(rete_store *s, rete_store_write *writes, size_t n, size_t *failed_index);
    /* Get one; RETE_ENOTFOUND when absent. The resource's strings stay
     * valid until the next call on the store. */
    rete_rc (*get)(rete_store *s, const char *kind, const char *ns, const char *name,
                   rete_store_resource *out);
    /* Every resource of a kind (kind NULL: all kinds), in one namespace
     * (ns NULL: all), ordered by kind, namespace, name (bytewise). The
     * resource passed to fn is valid only during that call. fn may call get;
     * any other call on the store from fn returns RETE_ESTATE (collect
     * first, then write). */
    rete_rc (*list)(rete_store *s, const char *kind, const char *ns, rete_store_each_fn fn, void *arg);
    uint64_t (*revision)(rete_store *s);
    /* Join tokens: the secret is stored hashed (SHA-256), never in clear.
     * RETE_ECONFLICT when a token with that id exists. */
    rete_rc (*token_put)(rete_store *s, const rete_store_token *t, const uint8_t secret_hash[32]);
    /* Find the token by id, check the hash in constant time, expiry and uses;
     * on success consume one use (atomically) and fill *out. RETE_ENOTFOUND
     * (unknown or wrong secret), RETE_ELIMIT (expired or used up). */
    rete_rc (*token_use)(rete_store *s, const char *id, const uint8_t secret_hash[32], int64_t now_unix,
                         rete_store_token *out);
    /* Delete the tokens that expired before `expired_before` (used up or
     * not); *removed says how many. */
    rete_rc (*token_prune)(rete_store *s, int64_t expired_before, size_t *removed);
    /* Every join token with its secret's hash, in id order (migration and
     * backup: store_tool.c). fn may not call the store. */
    rete_rc (*token_list)(rete_store *s, rete_store_token_fn fn, void *arg);
    /* Replicated backends only (NULL for SQLite, whose CA lives in the data
     * directory's files): a named value beside the resources, outside the
     * watch (the shared CA record: ca_shared.c). meta_get fills *value
     * (malloc'ed, NUL-terminated), *len and *rev (a revision that changes at
     * every put); RETE_ENOTFOUND when absent. meta_put with expected_rev 0
     * creates (RETE_ECONFLICT when it exists), else replaces only while the
     * value is still at expected_rev (RETE_ECONFLICT otherwise); *new_rev
     * the revision it got. */
    rete_rc (*meta_get)(rete_store *s, const char *name, char **value, size_t *len, uint64_t *rev);
    rete_rc (*meta_put)(rete_store *s, const char *name, const char *value, size_t len, uint64_t expected_rev,
                        uint64_t *new_rev);
    /* Replicated backends only (NULL for SQLite, whose one writer is this
     * process). watch_start follows every change from the store's current
     * revision on another thread and calls notify(arg) from that thread
     * when changes are waiting; watch_drain (the caller's thread) hands them
     * to fn in revision order and sets *relist when changes could not be
     * followed (a compacted revision, an overflowing queue): the caller then
     * reloads everything. watch_stop joins the thread; no notify after it. */
    rete_rc (*watch_start)(rete_store *s, void (*notify)(void *arg), void *arg);
    void (*watch_drain)(rete_store *s, rete_store_change_fn fn, void *arg, bool *relist);
    /* Registrations' changes since the last call (other replicas' and this
     * one's), in revision order; called by watch_drain's caller right after
     * it. (A relist also lists them again: reg_list.) */
    void (*watch_drain_registrations)(rete_store *s, rete_store_registration_fn fn, void *arg);
    void (*watch_stop)(rete_store *s);
    /* Replicated backends only (NULL for SQLite: the one process leads).
     * Leadership of the jobs that must run once, by a lease and a
     * transaction: lead() keeps this replica's lease alive (granting one
     * when it has none or it expired) and campaigns for the leader key with
     * it; call it every few seconds. It fills leader (the leading replica's
     * id, "" when none is known) and returns true while `id` leads: never
     * past the lease's expiry as last renewed, so a leader that cannot renew
     * stops leading within the TTL. resign() revokes the lease (a clean stop
     * hands leadership over at once). health(): one cheap read, RETE_OK when
     * the store answers. */
    bool (*lead)(rete_store *s, const char *id, char *leader, size_t cap);
    void (*resign)(rete_store *s);
    rete_rc (*health)(rete_store *s);
    /* Replicated backends only (NULL for SQLite: the one process holds every
     * stream). Registrations (rete_store_registration): reg_put writes n of
     * them (ns/name held by holder, with ready) under this replica's lease
     * (taking a lease when it has none, a new one when the store lost it),
     * in as few transactions as the backend takes (etcd: 128 puts each);
     * not RETE_OK: some may be written, and putting them all again is
     * harmless. No key twice in one call. reg_get fills *out (strings valid until the next call;
     * revision 0 and RETE_ENOTFOUND when absent). reg_list calls fn for
     * every registration. reg_expire deletes the Workload ns/name and its
     * registration in one transaction, only if the registration is still at
     * reg_revision (0: still absent) and the Workload at wl_version (0:
     * the registration alone, the Workload untouched):
     * RETE_ECONFLICT (nothing deleted) when either moved. reg_expire_many
     * does n of them, each with its own guards and result (items[i].rc), in
     * as few transactions as the backend takes (etcd: 64 expiries of two
     * compares and two deletes each); one item that conflicts costs the
     * others nothing (no ns/name twice in one call). RETE_OK when every item was decided, RETE_EIO when the
     * store failed (the items not decided say RETE_EIO). reg_epoch counts
     * the leases this replica took: when it changes, the registrations put
     * under the old one are gone and must be put again. */
    rete_rc (*reg_put)(rete_store *s, const rete_store_registration *regs, size_t n);
    rete_rc (*reg_get)(rete_store *s, const char *ns, const char *name, rete_store_registration *out);
    rete_rc (*reg_list)(rete_store *s, rete_store_registration_fn fn, void *arg);
    rete_rc (*reg_expire)(rete_store *s, const char *ns, const char *name, uint64_t reg_revision,
                          uint64_t wl_version);
    rete_rc (*reg_expire_many)(rete_store *s, rete_store_expiry *items, size_t n);
    uint64_t (*reg_epoch)(rete_store *s);
    void (*close)(rete_store *s);
} rete_store_ops;

struct rete_store {
    const rete_store_ops *ops;
};

/* The embedded backend: SQLite database at `path` (created 0600 if absent;
 * an existing file readable by others is tightened to 0600). Returns NULL
 * with *err set ("<path>: <what>: <SQLite's reason>") when the file cannot
 * be opened, is not a rete store, is damaged, or has a schema newer than
 * this build knows. One thread at a time. */
rete_store *rete_store_sqlite_open(const char *path, rete_error *err);

/* A consistent copy of the SQLite store at `from` into `to` with SQLite's
 * online backup API (a reted may be writing `from` meanwhile). `to` must
 * not exist (RETE_ECONFLICT when it does). *err says why on
 * failure. Restore is the same copy the other way, into a path no reted
 * has open. */
rete_rc rete_store_sqlite_backup(const char *from, const char *to, rete_error *err);

/* The replicated backend: etcd's v3 JSON gateway at `endpoints`
 * ("host:port[,host:port...]"), keys under `prefix` ("/rete/" by default),
 * TLS when cacert is given (cert and key: a client certificate). Each call
 * waits at most timeout_ms. Returns NULL with *err set when no member
 * answers or the options are wrong. */
typedef struct rete_store_etcd_opts {
    const char *endpoints;
    const char *prefix;
    const char *cacert, *cert, *key;
    int timeout_ms;
} rete_store_etcd_opts;
rete_store *rete_store_etcd_open(const rete_store_etcd_opts *o, rete_error *err);

#endif
