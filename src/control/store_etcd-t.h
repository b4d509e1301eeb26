/* The etcd store backend's state and what its two files share:
 * store_etcd.c (resources, tokens, leadership, registrations) and
 * store_etcd_watch.c (the watch thread and its queues). Nothing else
 * includes it: reted sees the backend through store.h. */
#ifndef RETE_CONTROL_STORE_ETCD_T_H
#define RETE_CONTROL_STORE_ETCD_T_H

#include "etcd_http.h"
#include "store.h"

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct watch_item {
    char *key;          /* kind \0 ns \0 name \0 */
    uint64_t revision;
    bool deleted;
} watch_item;

/* A registration's change from the watch (registrations/<ns>/<name>). */
typedef struct reg_item {
    char *ns, *name, *holder;   /* holder "" when deleted */
    bool ready, deleted;
    uint64_t revision;
} reg_item;

typedef struct store_etcd {
    rete_store base; /* first */
    reted_etcd_http http;
    char *prefix;     /* ends with '/' */
    uint64_t revision;
    bool in_list;
    char *out;        /* get()'s strings */
    size_t out_cap;
    /* watch */
    pthread_t thread;
    bool thread_running;
    pthread_mutex_t mu;
    bool stop;                  /* under mu */
    watch_item *q;              /* under mu */
    size_t q_n, q_cap;
    bool q_relist;              /* under mu */
    reg_item *rq;               /* under mu: registrations' changes */
    size_t rq_n, rq_cap;
    uint64_t watch_from;
    void (*notify)(void *);
    void *notify_arg;
    /* leadership (loop thread) */
    char lease[24];             /* the lease's ID, "" when none */
    uint64_t lead_until_ms;     /* monotonic: the lease lasts at least until then */
    bool leading;
    uint64_t lead_retry_ms;     /* monotonic: after a failed renewal, no call to etcd before then */
    uint64_t lease_epoch;       /* leases taken (reg_epoch) */
    bool lease_refused;         /* the last call's error: etcd has no such lease (it expired) */
    char *reg_out;              /* reg_get's strings */
} store_etcd;

static inline store_etcd *to_se(rete_store *s)
{
    return (store_etcd *)s;
}

/* store_etcd.c: base64 of a string as a JSON string; a base64 JSON string
 * decoded (malloc'ed, NUL-terminated; NULL when bad); etcd's int64 fields
 * (JSON strings, absent = 0); the end of a prefix range. */
json_t *etcd_b64s(const char *s);
char *etcd_unb64(json_t *j, size_t *len);
uint64_t etcd_jint(json_t *o, const char *key);
json_t *etcd_prefix_end(const char *prefix);
/* A resource key cut into kind, ns, name (*split to free); false when the
 * key is not a resource's. */
bool etcd_split_key(const store_etcd *se, const char *key, char **split, const char **kind, const char **ns,
                    const char **name);
/* A registration key's "ns/name", cut in place; false when not one. */
bool etcd_reg_split(const store_etcd *se, char *key, const char **ns, const char **name);
/* A registration value's holder (malloc'ed) and readiness; false when damaged. */
bool etcd_reg_value(json_t *kv, char **holder, bool *ready);

/* store_etcd_watch.c: the store ops of the watch (store.h), and freeing a
 * queue of registration changes (se_close). */
rete_rc etcd_watch_start(rete_store *s, void (*notify)(void *), void *arg);
void etcd_watch_drain(rete_store *s, rete_store_change_fn fn, void *arg, bool *relist);
void etcd_watch_drain_registrations(rete_store *s, rete_store_registration_fn fn, void *arg);
void etcd_watch_stop(rete_store *s);
void etcd_reg_items_free(reg_item *q, size_t n);

#endif
