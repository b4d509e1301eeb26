/* Changes from the store's watch, applied on the loop thread (replica.h).
 *
 * A change goes through the same path as a local write (reted_changed: the
 * index re-reads the key, the snapshots that held or take it in are
 * recompiled, the proxies concerned get a push). This replica's own writes
 * come back through the watch too: the index already holds them at that
 * revision (the API called reted_changed after the write), so they are
 * skipped rather than applied twice. A compacted or overflowing watch asks
 * for a relist: everything is reloaded from the store. */
#include "replica.h"

#include "ca_shared.h"
#include "compiler.h"
#include "datadir.h"
#include "kinds.h"
#include "log.h"
#include "mesh_index.h"
#include "push.h"
#include "registry.h"
#include "reted.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How often a replica renews its lease and campaigns (the lease lasts 10 s:
 * store_etcd.c, LEASE_TTL_S). */
#define RETED_LEAD_MS 2000

static void notify(void *arg)
{
    uv_async_send(arg); /* from the watch thread: libuv's one thread-safe call */
}

/* Already in the index at this revision (or already gone): nothing to do. */
static bool known(reted *r, const rete_store_change *c)
{
    if (!r->index.built || r->cache.dirty_all)
        return false;
    const reted_ires *e = reted_index_get(&r->index, c->kind, c->ns, c->name);
    return c->deleted ? e == NULL : e && e->version >= c->revision;
}

static bool on_change(const rete_store_change *c, void *arg)
{
    reted *r = arg;
    if (!rete_kind_by_name(c->kind)) {
        rete_warn("replica: a change to %s %s/%s, a kind this reted does not know; ignored", c->kind, c->ns,
                  c->name);
        return true;
    }
    if (known(r, c)) {
        reted_count(&r->stats, r->stats.store_changes_own);
        return true;
    }
    rete_debug("replica: %s %s/%s %s at revision %llu by another replica", c->kind, c->ns, c->name,
               c->deleted ? "deleted" : "changed", (unsigned long long)c->revision);
    reted_count(&r->stats, r->stats.store_changes_remote);
    reted_changed(r, c->kind, c->ns, c->name);
    return true;
}

static void on_async(uv_async_t *a)
{
    reted *r = a->data;
    bool relist = false;
    r->store->ops->watch_drain(r->store, on_change, r, &relist);
    if (relist) {
        rete_info("replica: reloading every resource from the store");
        reted_count(&r->stats, r->stats.store_relists);
        reted_changed(r, NULL, NULL, NULL);
        reted_registration_relist(r);
    }
    reted_registration_changes(r);
}

/* The data directory now holds the store's CA: load it, reissue reted's
 * own certificate, push the bundle; proxies renew when the signing root
 * changed (a rotation's begin elsewhere). */
static void ca_reload(reted *r)
{
    rete_error err = {0};
    char *cadir = reted_datadir_path(r->data_dir, "ca");
    rete_ca *ca = rete_ca_load(cadir, r->trust_domain, &err);
    free(cadir);
    if (!ca) {
        rete_err("ca: the store's CA does not load: %s; keeping the one in memory", err.msg);
        return;
    }
    uint8_t old_id[RETE_CERT_ROOT_ID_LEN] = {0}, new_id[RETE_CERT_ROOT_ID_LEN] = {0};
    bool had = rete_ca_signing_root_id(r->ca, old_id), has = rete_ca_signing_root_id(ca, new_id);
    rete_ca_free(r->ca);
    r->ca = ca;
    if (!had || !has || memcmp(old_id, new_id, sizeof old_id) != 0)
        r->renew_issued_before = reted_now() + 1;
    r->ca_generation++;
    reted_datadir_server_tls_renew(r);
    reted_count(&r->stats, r->stats.ca_reloads);
    rete_info("ca: loaded the CA another replica changed (record revision %llu, rotating: %s); pushing the "
              "bundle to every proxy",
              (unsigned long long)r->ca_rev, rete_ca_rotating(ca) ? "yes" : "no");
    reted_changed(r, NULL, NULL, NULL);
}

static void ca_poll(reted *r)
{
    rete_error err = {0};
    int changed = reted_ca_shared_refresh(r->store, r->ca_kek, r->data_dir, &r->ca_rev, &err);
    if (changed < 0)
        rete_warn("ca: %s", err.msg);
    else if (changed)
        ca_reload(r);
}

int reted_replica_ca_publish(reted *r, rete_error *err)
{
    rete_rc rc = reted_ca_shared_publish(r->store, r->ca_kek, r->data_dir, &r->ca_rev, err);
    if (rc == RETE_OK)
        return 0;
    if (rc == RETE_ECONFLICT) {
        rete_warn("ca: %s: taking the store's CA", err->msg);
        rete_error tmp = {0};
        if (reted_ca_shared_refresh(r->store, r->ca_kek, r->data_dir, &r->ca_rev, &tmp) > 0)
            ca_reload(r);
    }
    return -1;
}

static void on_lead(uv_timer_t *t)
{
    reted *r = t->data;
    if (r->ca_kek)
        ca_poll(r);
    char leader[sizeof(r->leader)];
    bool leading = r->store->ops->lead(r->store, r->replica_id, leader, sizeof(leader));
    if (leading != r->leading)
        rete_info("replica: %s leads%s", leading ? "this replica" : "this replica no longer",
                  leading ? " the jobs that run once" : (leader[0] ? "" : " (no leader known)"));
    else if (!leading && strcmp(leader, r->leader) != 0 && leader[0])
        rete_info("replica: %s leads", leader);
    r->leading = leading;
    snprintf(r->leader, sizeof(r->leader), "%s", leader);
    reted_registration_lease_check(r);
}

int reted_replica_start(reted *r)
{
    char host[64] = "reted";
    gethostname(host, sizeof(host) - 1);
    snprintf(r->replica_id, sizeof(r->replica_id), "%s-%d", host, (int)getpid());
    r->leading = !r->store->ops->lead; /* SQLite: the one process */
    if (r->leading)
        snprintf(r->leader, sizeof(r->leader), "%s", r->replica_id);
    if (!r->store->ops->watch_start)
        return 0;
    uv_async_init(r->loop, &r->store_async, on_async);
    r->store_async.data = r;
    if (r->store->ops->watch_start(r->store, notify, &r->store_async) != RETE_OK) {
        rete_err("replica: cannot start the store's watch");
        uv_close((uv_handle_t *)&r->store_async, NULL);
        return -1;
    }
    r->store_watching = true;
    reted_registration_start(r);
    reted_registration_relist(r); /* the readiness of other replicas' proxies */
    if (r->store->ops->lead) {
        uv_timer_init(r->loop, &r->lead_timer);
        r->lead_timer.data = r;
        uv_timer_start(&r->lead_timer, on_lead, 0, RETED_LEAD_MS);
    }
    return 0;
}

void reted_replica_close(reted *r)
{
    if (!r->store_watching)
        return;
    r->store->ops->watch_stop(r->store);
    uv_close((uv_handle_t *)&r->store_async, NULL);
    reted_registration_stop(r);
    r->store_watching = false;
    if (r->store->ops->lead) {
        uv_timer_stop(&r->lead_timer);
        uv_close((uv_handle_t *)&r->lead_timer, NULL);
        r->store->ops->resign(r->store);
        r->leading = false;
    }
}
