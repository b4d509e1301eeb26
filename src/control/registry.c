/* The registry (registry.h), and on a replicated store the registrations
 * that tie each proxy to the replica holding its stream. */
#include "registry.h"

#include "alloc.h"
#include "compiler.h"
#include "hash.h"
#include "log.h"
#include "push.h"
#include "reted.h"
#include "vec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t bucket_of(const reted_registry *g, const char *ns, const char *name)
{
    uint64_t h = rete_fnv1a_str(RETE_FNV1A_INIT, ns);
    h = rete_fnv1a(h, "/", 1);
    return (size_t)(rete_fmix64(rete_fnv1a_str(h, name)) & (g->n_buckets - 1));
}

reted_proxy *reted_proxy_find(reted *r, const char *ns, const char *name)
{
    if (!r->registry.n_buckets)
        return NULL;
    for (reted_proxy *p = r->registry.buckets[bucket_of(&r->registry, ns, name)]; p; p = p->hnext)
        if (strcmp(p->ns, ns) == 0 && strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

void reted_proxy_add(reted *r, reted_proxy *p)
{
    reted_registry *g = &r->registry;
    if (g->n_proxies + 1 > g->n_buckets) {
        free(g->buckets);
        g->n_buckets = g->n_buckets ? g->n_buckets * 2 : 64;
        g->buckets = rete_calloc(g->n_buckets, sizeof(*g->buckets));
        for (reted_proxy *q = g->proxies; q; q = q->next) {
            size_t b = bucket_of(g, q->ns, q->name);
            q->hnext = g->buckets[b];
            g->buckets[b] = q;
        }
    }
    size_t b = bucket_of(g, p->ns, p->name);
    p->hnext = g->buckets[b];
    g->buckets[b] = p;
    p->next = g->proxies;
    g->proxies = p;
    g->n_proxies++;
}

void reted_proxy_unlink(reted *r, reted_proxy **pp)
{
    reted_registry *g = &r->registry;
    reted_proxy *p = *pp;
    for (reted_proxy **hp = &g->buckets[bucket_of(g, p->ns, p->name)]; *hp; hp = &(*hp)->hnext)
        if (*hp == p) {
            *hp = p->hnext;
            break;
        }
    *pp = p->next;
    g->n_proxies--;
}

void reted_proxy_free(reted *r, reted_proxy *p)
{
    free(p->names);
    free(p->nack_error);
    json_decref(p->endpoints_out);
    json_decref(p->budget_exhausted);
    reted_snapshot_release(r, p->sent);
    free(p);
}

static void pending_free(reted_registry *g);

static void orphans_free(reted_registry *g)
{
    for (size_t i = 0; i < g->n_orphans; i++)
        free(g->orphans[i].key);
    free(g->orphans);
    g->orphans = NULL;
    g->n_orphans = 0;
}

void reted_registry_free(reted *r)
{
    for (reted_proxy *p = r->registry.proxies, *n; p; p = n) {
        n = p->next;
        reted_proxy_free(r, p);
    }
    r->registry.proxies = NULL;
    rete_free(&r->registry.buckets);
    pending_free(&r->registry);
    rete_free(&r->registry.pending);
    r->registry.cap_pending = 0;
    r->registry.n_buckets = r->registry.n_proxies = 0;
    orphans_free(&r->registry);
}

bool reted_record_by_proxy(json_t *rec)
{
    const char *by = json_string_value(json_object_get(
        json_object_get(json_object_get(rec, "metadata"), "annotations"), "rete.dev/registered-by"));
    return by && strcmp(by, "proxy") == 0;
}

static bool replicated(const reted *r)
{
    return r->store->ops->reg_put != NULL;
}

bool reted_registry_apply_ready(reted *r, const char *ns, const char *name, bool ready)
{
    if (!reted_workload_set_ready(r, ns, name, ready))
        return false;
    reted_changed(r, "Workload", ns, name);
    return true;
}

/* ---- registrations written in batches ----
 *
 * A hello (or a readiness change) queues its proxy's registration; a 0 ms
 * timer writes every queued one at the start of the loop's next turn, so
 * the hellos one turn read go to the store together (etcd: one transaction
 * of up to 128 puts instead of one round trip each: a 10,000-proxy
 * reconnect storm waited on 3,333 sequential puts per replica). What fails
 * stays queued, one entry per proxy, and is tried again after 1 s, then 2,
 * 4 and at most 8 s (with etcd unreachable each try holds the loop for
 * --etcd-timeout). The Workload a hello writes may reach the store a few
 * milliseconds before its registration: the leader's sweep expires a
 * Workload only after nobody has held it for the grace period (60 s by
 * default). */

#define RETED_REG_RETRY_MS 1000
#define RETED_REG_RETRY_MAX_MS 8000

static int pending_cmp(const void *a, const void *b)
{
    const reted_reg_pending *x = a, *y = b;
    int c = strcmp(x->ns, y->ns);
    if (!c)
        c = strcmp(x->name, y->name);
    return c ? c : (x->seq < y->seq ? -1 : x->seq > y->seq); /* one key's in queue order: the latest wins below */
}

static void pending_free(reted_registry *g)
{
    for (size_t i = 0; i < g->n_pending; i++) {
        free(g->pending[i].ns);
        free(g->pending[i].name);
    }
    g->n_pending = 0;
}

static void on_flush(uv_timer_t *t);

void reted_registration_flush(reted *r)
{
    reted_registry *g = &r->registry;
    if (!g->n_pending)
        return;
    /* one write per key, its latest readiness (a key twice in one etcd
     * transaction is refused) */
    qsort(g->pending, g->n_pending, sizeof(*g->pending), pending_cmp);
    size_t n = 0;
    for (size_t i = 0; i < g->n_pending; i++) {
        reted_reg_pending *e = &g->pending[i];
        if (n && strcmp(g->pending[n - 1].ns, e->ns) == 0 && strcmp(g->pending[n - 1].name, e->name) == 0) {
            n--; /* the earlier one of this key goes */
            free(g->pending[n].ns);
            free(g->pending[n].name);
        }
        g->pending[n] = *e;
        g->pending[n].seq = n;
        n++;
    }
    g->n_pending = n;
    rete_store_registration *regs = rete_calloc(n ? n : 1, sizeof(*regs));
    for (size_t i = 0; i < n; i++)
        regs[i] = (rete_store_registration){.ns = g->pending[i].ns, .name = g->pending[i].name,
                                            .holder = r->replica_id, .ready = g->pending[i].ready};
    rete_rc rc = r->store->ops->reg_put(r->store, regs, n);
    free(regs);
    if (rc == RETE_OK) {
        if (g->flush_failing)
            rete_info("registry: registrations written again (%zu)", n);
        g->flush_failing = false;
        g->retry_ms = 0;
        pending_free(g);
        return;
    }
    g->retry_ms = g->retry_ms ? g->retry_ms * 2 : RETED_REG_RETRY_MS;
    if (g->retry_ms > RETED_REG_RETRY_MAX_MS)
        g->retry_ms = RETED_REG_RETRY_MAX_MS;
    if (!g->flush_failing)
        rete_warn("registry: cannot record %zu proxies as held by this replica (the store answered %d): "
                  "trying again after %u ms, then less often",
                  n, rc, g->retry_ms);
    g->flush_failing = true;
    uv_timer_start(&g->flush_timer, on_flush, g->retry_ms, 0);
}

static void on_flush(uv_timer_t *t)
{
    reted_registration_flush(t->data);
}

void reted_registration_hold(reted *r, const char *ns, const char *name, bool ready)
{
    reted_registry *g = &r->registry;
    if (!replicated(r) || !g->flush_ready)
        return;
    RETE_GROW(g->pending, g->cap_pending, g->n_pending + 1, 64);
    g->pending[g->n_pending] = (reted_reg_pending){rete_strdup(ns), rete_strdup(name), g->n_pending, ready};
    g->n_pending++;
    if (!g->flush_failing && !uv_is_active((uv_handle_t *)&g->flush_timer))
        uv_timer_start(&g->flush_timer, on_flush, 0, 0);
}

void reted_registration_start(reted *r)
{
    if (!replicated(r))
        return;
    uv_timer_init(r->loop, &r->registry.flush_timer);
    r->registry.flush_timer.data = r;
    r->registry.flush_ready = true;
}

void reted_registration_stop(reted *r)
{
    reted_registry *g = &r->registry;
    if (!g->flush_ready)
        return;
    uv_timer_stop(&g->flush_timer);
    uv_close((uv_handle_t *)&g->flush_timer, NULL);
    g->flush_ready = false;
    pending_free(g); /* the lease goes with this replica: nothing to record */
}

void reted_registration_release(reted *r, const char *ns, const char *name, const char *sa)
{
    rete_store_resource res;
    uint64_t wl_version = 0;
    bool own = false;
    if (r->store->ops->get(r->store, "Workload", ns, name, &res) == RETE_OK) {
        json_t *rec = json_loads(res.json, 0, NULL);
        const char *rsa = json_string_value(json_object_get(json_object_get(rec, "spec"), "serviceAccount"));
        own = rec && reted_record_by_proxy(rec) && strcmp(rsa ? rsa : "default", sa) == 0;
        wl_version = res.resource_version;
        json_decref(rec);
    }
    if (!replicated(r)) {
        /* Nothing names a Workload (services select by label): removing
         * it cannot leave a dangling reference. */
        rete_store_write w = {"Workload", ns, name, NULL, 0};
        size_t failed;
        if (own && r->store->ops->apply(r->store, &w, 1, &failed) == RETE_OK)
            reted_changed(r, "Workload", ns, name);
        return;
    }
    rete_store_registration g;
    rete_rc rc = r->store->ops->reg_get(r->store, ns, name, &g);
    if (rc == RETE_OK && strcmp(g.holder, r->replica_id) != 0) {
        rete_info("registry: %s/%s is held by replica %s now: its Workload stays", ns, name, g.holder);
        return;
    }
    if (rc != RETE_OK && rc != RETE_ENOTFOUND)
        return; /* the store does not answer: the next tick tries again (the leader's sweep, if this replica dies) */
    uint64_t reg_rev = rc == RETE_OK ? g.revision : 0;
    if (!own && !reg_rev)
        return;
    /* one transaction: the Workload only if still at the version read and
     * nobody registered it meanwhile */
    rc = r->store->ops->reg_expire(r->store, ns, name, reg_rev, own ? wl_version : 0);
    if (rc == RETE_OK && own)
        reted_changed(r, "Workload", ns, name);
    else if (rc == RETE_ECONFLICT)
        rete_info("registry: %s/%s registered again meanwhile: its Workload stays", ns, name);
}

/* A proxy another replica holds now: this replica forgets it (never its Workload). */
static void forget_moved(reted *r, const char *ns, const char *name, const char *holder)
{
    for (reted_proxy **pp = &r->registry.proxies; *pp; pp = &(*pp)->next) {
        reted_proxy *p = *pp;
        if (strcmp(p->ns, ns) != 0 || strcmp(p->name, name) != 0)
            continue;
        if (p->stream)
            return; /* still streaming here (a stale stream, or two processes of one name) */
        rete_info("registry: %s/%s re-registered on replica %s: forgotten here", ns, name, holder);
        reted_proxy_unlink(r, pp);
        reted_proxy_free(r, p);
        return;
    }
}

static bool on_registration(const rete_store_registration *g, void *arg)
{
    reted *r = arg;
    reted_proxy *p = reted_proxy_find(r, g->ns, g->name);
    if (g->deleted) {
        if (p && p->stream) { /* ours went with a lost lease: put it again */
            reted_registration_hold(r, p->ns, p->name, p->ready);
            return true;
        }
        reted_registry_apply_ready(r, g->ns, g->name, true); /* gone: nothing of its readiness is kept */
        return true;
    }
    if (strcmp(g->holder, r->replica_id) == 0)
        return true; /* this replica's own: applied when it was put */
    if (p && p->stream)
        return true; /* this replica holds the live stream; its readiness is the one in force here */
    reted_registry_apply_ready(r, g->ns, g->name, g->ready);
    forget_moved(r, g->ns, g->name, g->holder);
    return true;
}

void reted_registration_changes(reted *r)
{
    if (r->store->ops->watch_drain_registrations)
        r->store->ops->watch_drain_registrations(r->store, on_registration, r);
}

void reted_registration_relist(reted *r)
{
    if (!replicated(r))
        return;
    if (r->store->ops->reg_list(r->store, on_registration, r) != RETE_OK)
        rete_warn("registry: cannot list the registrations: other replicas' proxies' readiness is not known yet");
}

void reted_registration_lease_check(reted *r)
{
    if (!replicated(r))
        return;
    uint64_t epoch = r->store->ops->reg_epoch(r->store);
    if (epoch == r->registry.reg_epoch)
        return;
    size_t n = 0;
    for (reted_proxy *p = r->registry.proxies; p; p = p->next)
        if (p->stream) {
            reted_registration_hold(r, p->ns, p->name, p->ready);
            n++;
        }
    if (r->registry.reg_epoch && n)
        rete_info("registry: a new lease: %zu registrations to put again", n);
    r->registry.reg_epoch = epoch;
}

/* ---- the leader's sweep ---- */

typedef struct held_set {
    char **v;
    size_t n, cap;
} held_set;

static bool collect_held(const rete_store_registration *g, void *arg)
{
    held_set *h = arg;
    RETE_GROW(h->v, h->cap, h->n + 1, 64);
    size_t len = strlen(g->ns) + strlen(g->name) + 2;
    h->v[h->n] = rete_malloc(len);
    snprintf(h->v[h->n++], len, "%s/%s", g->ns, g->name);
    return true;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int orphan_cmp(const void *key, const void *o)
{
    return strcmp(key, ((const reted_orphan *)o)->key);
}

static int orphan_sort_cmp(const void *a, const void *b)
{
    return strcmp(((const reted_orphan *)a)->key, ((const reted_orphan *)b)->key);
}

void reted_registration_sweep(reted *r)
{
    if (!replicated(r) || !r->leading)
        return;
    const reted_index *ix = reted_index_current(r);
    if (!ix || !ix->built)
        return;
    held_set held = {0};
    if (r->store->ops->reg_list(r->store, collect_held, &held) != RETE_OK) {
        for (size_t i = 0; i < held.n; i++)
            free(held.v[i]);
        free(held.v);
        return; /* the store does not answer: nothing is decided without it */
    }
    if (held.n)
        qsort(held.v, held.n, sizeof(*held.v), str_cmp);
    int64_t now = reted_now();
    reted_orphan *next = NULL;
    size_t n_next = 0, cap_next = 0;
    /* the candidates first (the index may change under a write) */
    typedef struct cand {
        char *ns, *name;
        uint64_t version;
        int64_t since;
    } cand;
    cand *due = NULL;
    size_t n_due = 0, cap_due = 0;
    size_t first, end;
    reted_index_range(ix, "Workload", NULL, &first, &end);
    for (size_t i = first; i < end; i++) {
        const reted_ires *e = ix->v[i];
        if (!strstr(e->json->data, "rete.dev/registered-by"))
            continue;
        char key[520];
        snprintf(key, sizeof(key), "%s/%s", e->ns, e->name);
        const char *k = key;
        if (held.n && bsearch(&k, held.v, held.n, sizeof(*held.v), str_cmp))
            continue;
        const reted_proxy *p = reted_proxy_find(r, e->ns, e->name);
        if (p && p->stream)
            continue; /* here, and its registration is being put again */
        json_t *rec = json_loads(e->json->data, 0, NULL);
        bool by_proxy = rec && reted_record_by_proxy(rec);
        json_decref(rec);
        if (!by_proxy)
            continue;
        const reted_orphan *o =
            r->registry.n_orphans ? bsearch(key, r->registry.orphans, r->registry.n_orphans, sizeof(reted_orphan),
                                            orphan_cmp)
                                  : NULL;
        int64_t since = o ? o->since_unix : now;
        if (now - since >= (int64_t)r->registry.grace_seconds) {
            RETE_GROW(due, cap_due, n_due + 1, 16);
            due[n_due++] = (cand){rete_strdup(e->ns), rete_strdup(e->name), e->version, since};
            continue;
        }
        RETE_GROW(next, cap_next, n_next + 1, 16);
        next[n_next++] = (reted_orphan){rete_strdup(key), since};
    }
    for (size_t i = 0; i < held.n; i++)
        free(held.v[i]);
    free(held.v);
    /* All in as few store transactions as the store takes (etcd: 64
     * expiries each; 10,000 orphans when every proxy's replica died were
     * 10,000 sequential transactions), each with its own guard: the
     * Workload still at the version the index has and no registration
     * (one registered again meanwhile stays, the others go). */
    rete_store_expiry *ex = rete_calloc(n_due ? n_due : 1, sizeof *ex);
    for (size_t i = 0; i < n_due; i++)
        ex[i] = (rete_store_expiry){due[i].ns, due[i].name, 0, due[i].version, RETE_EIO};
    if (n_due && r->store->ops->reg_expire_many(r->store, ex, n_due) != RETE_OK)
        rete_warn("registry: the store failed while removing the Workloads of %zu proxies held by no replica: "
                  "the next sweep tries again",
                  n_due);
    for (size_t i = 0; i < n_due; i++) {
        if (ex[i].rc == RETE_EIO) { /* not decided: due again at the next sweep */
            size_t len = strlen(due[i].ns) + strlen(due[i].name) + 2;
            RETE_GROW(next, cap_next, n_next + 1, 16);
            next[n_next].key = rete_malloc(len);
            snprintf(next[n_next].key, len, "%s/%s", due[i].ns, due[i].name);
            next[n_next++].since_unix = due[i].since;
        }
        if (ex[i].rc == RETE_OK) {
            rete_info("registry: %s/%s held by no replica for %u s (its replica is gone, it did not "
                      "re-register): removing its Workload",
                      due[i].ns, due[i].name, r->registry.grace_seconds);
            reted_count(&r->stats, r->stats.registrations_expired);
            reted_changed(r, "Workload", due[i].ns, due[i].name);
        }
        free(due[i].ns);
        free(due[i].name);
    }
    free(ex);
    free(due);
    /* sorted by "ns/name" for bsearch (index order, by ns then name, is
     * not that order when a namespace has a byte below '/'), the undecided
     * among the others */
    if (n_next > 1)
        qsort(next, n_next, sizeof(*next), orphan_sort_cmp);
    orphans_free(&r->registry);
    r->registry.orphans = next;
    r->registry.n_orphans = n_next;
}
