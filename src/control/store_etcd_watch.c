/* The etcd backend's watch (store_etcd.c has the rest): a thread holding a
 * streaming /v3/watch request on the whole prefix from the revision the
 * store was opened at. Resource and registration changes queue under a
 * mutex, bounded (past WATCH_QUEUE_MAX the loop relists instead); a
 * compacted revision relists too, then follows from the oldest etcd has.
 * The loop thread drains the queues (watch_drain, watch_drain_registrations). */
#include "store_etcd-t.h"

#include "alloc.h"
#include "log.h"
#include "vec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WATCH_QUEUE_MAX 100000           /* changes waiting for the loop; above: relist */
#define WATCH_BACKOFF_MAX_MS 2000

static void queue_push(store_etcd *se, const char *kind, const char *ns, const char *name, uint64_t rev, bool del)
{
    if (se->q_relist)
        return; /* everything is reloaded anyway */
    if (se->q_n == WATCH_QUEUE_MAX) {
        rete_warn("store etcd: %d changes waiting for the loop; reloading everything instead", WATCH_QUEUE_MAX);
        for (size_t i = 0; i < se->q_n; i++)
            free(se->q[i].key);
        se->q_n = 0;
        se->q_relist = true;
        return;
    }
    RETE_GROW(se->q, se->q_cap, se->q_n + 1, 64);
    size_t a = strlen(kind) + 1, b = strlen(ns) + 1, c = strlen(name) + 1;
    char *k = rete_malloc(a + b + c);
    memcpy(k, kind, a);
    memcpy(k + a, ns, b);
    memcpy(k + a + b, name, c);
    se->q[se->q_n++] = (watch_item){k, rev, del};
}

static void reg_push(store_etcd *se, json_t *kv, const char *ns, const char *name, uint64_t rev, bool del)
{
    if (se->q_relist)
        return;
    if (se->rq_n == WATCH_QUEUE_MAX) {
        rete_warn("store etcd: %d registration changes waiting for the loop; reloading everything instead",
                  WATCH_QUEUE_MAX);
        se->q_relist = true;
        return;
    }
    char *holder = NULL;
    bool ready = true;
    if (!del && !etcd_reg_value(kv, &holder, &ready)) {
        rete_warn("store etcd: watch: a damaged registration %s/%s; ignored", ns, name);
        return;
    }
    RETE_GROW(se->rq, se->rq_cap, se->rq_n + 1, 64);
    se->rq[se->rq_n++] = (reg_item){rete_strdup(ns), rete_strdup(name), holder ? holder : rete_strdup(""), ready,
                                    del, rev};
}

void etcd_reg_items_free(reg_item *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(q[i].ns);
        free(q[i].name);
        free(q[i].holder);
    }
    free(q);
}

/* One watch answer; false ends the stream (canceled, compacted). */
static bool watch_message(store_etcd *se, const char *msg, size_t len)
{
    json_t *j = json_loadb(msg, len, 0, NULL);
    json_t *res = json_object_get(j, "result");
    if (!res) {
        rete_warn("store etcd: watch: %.*s", (int)(len > 300 ? 300 : len), msg);
        json_decref(j);
        return false;
    }
    uint64_t compact = etcd_jint(res, "compact_revision");
    bool keep = !json_is_true(json_object_get(res, "canceled"));
    json_t *evs = json_object_get(res, "events"), *ev;
    size_t i;
    pthread_mutex_lock(&se->mu);
    if (compact) {
        /* the history we asked for is gone: reload, and follow from the
         * oldest revision etcd still has (a change after the reload's read
         * is in it; one before is in the reload) */
        rete_warn("store etcd: watch from revision %" PRIu64 " is compacted (oldest %" PRIu64 "); relisting",
                  se->watch_from, compact);
        se->q_relist = true;
        se->watch_from = compact;
        keep = false;
    }
    json_array_foreach(evs, i, ev) {
        json_t *kv = json_object_get(ev, "kv");
        bool del = json_is_string(json_object_get(ev, "type")) &&
                   strcmp(json_string_value(json_object_get(ev, "type")), "DELETE") == 0;
        size_t kl;
        char *key = etcd_unb64(json_object_get(kv, "key"), &kl), *split = NULL;
        const char *kind, *ns, *name;
        uint64_t rev = etcd_jint(kv, "mod_revision");
        const char *rns, *rname;
        if (key && etcd_split_key(se, key, &split, &kind, &ns, &name))
            queue_push(se, kind, ns, name, rev, del);
        else if (key && etcd_reg_split(se, key, &rns, &rname))
            reg_push(se, kv, rns, rname, rev, del);
        /* else tokens, the leader key...: nothing the loop follows */
        if (rev >= se->watch_from)
            se->watch_from = rev + 1;
        free(key);
        free(split);
    }
    bool any = se->q_n || se->rq_n || se->q_relist;
    pthread_mutex_unlock(&se->mu);
    json_decref(j);
    if (any && se->notify)
        se->notify(se->notify_arg);
    return keep;
}

static bool stopping(store_etcd *se)
{
    pthread_mutex_lock(&se->mu);
    bool s = se->stop;
    pthread_mutex_unlock(&se->mu);
    return s;
}

static void nap_ms(store_etcd *se, int ms)
{
    for (int slept = 0; slept < ms && !stopping(se); slept += 100)
        nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
}

static void *watch_main(void *arg)
{
    store_etcd *se = arg;
    reted_etcd_http h;
    reted_etcd_http_copy(&h, &se->http);
    /* the whole prefix: resources and registrations (tokens and the leader
     * key come too and are skipped) */
    char *pre = rete_strdup(se->prefix);
    int backoff = 100;
    while (!stopping(se)) {
        pthread_mutex_lock(&se->mu);
        char from[24];
        snprintf(from, sizeof from, "%" PRIu64, se->watch_from);
        pthread_mutex_unlock(&se->mu);
        json_t *req = json_pack("{s:{s:o,s:o,s:s}}", "create_request", "key", etcd_b64s(pre), "range_end",
                                etcd_prefix_end(pre), "start_revision", from);
        char *body = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        rete_error err = {0};
        rete_rc rc = reted_etcd_http_stream_open(&h, "/v3/watch", body, strlen(body), &err);
        free(body);
        if (rc != RETE_OK) {
            rete_warn("store etcd: watch: %s; again in %d ms", err.msg, backoff);
            nap_ms(se, backoff);
            backoff = backoff * 2 > WATCH_BACKOFF_MAX_MS ? WATCH_BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        rete_debug("store etcd: watching from revision %s", from);
        backoff = 100;
        while (!stopping(se)) {
            const char *msg;
            size_t len;
            rc = reted_etcd_http_stream_next(&h, 250, &msg, &len, &err);
            if (rc == RETE_EAGAIN)
                continue;
            if (rc != RETE_OK) {
                rete_warn("store etcd: watch: %s; resuming", err.msg);
                break;
            }
            if (len && !watch_message(se, msg, len))
                break;
        }
        reted_etcd_http_close(&h);
    }
    free(pre);
    reted_etcd_http_free(&h);
    return NULL;
}

rete_rc etcd_watch_start(rete_store *s, void (*notify)(void *), void *arg)
{
    store_etcd *se = to_se(s);
    if (se->thread_running)
        return RETE_ESTATE;
    se->notify = notify;
    se->notify_arg = arg;
    se->watch_from = se->revision + 1;
    se->stop = false;
    if (pthread_create(&se->thread, NULL, watch_main, se) != 0)
        return RETE_EIO;
    se->thread_running = true;
    return RETE_OK;
}

void etcd_watch_drain(rete_store *s, rete_store_change_fn fn, void *arg, bool *relist)
{
    store_etcd *se = to_se(s);
    pthread_mutex_lock(&se->mu);
    watch_item *q = se->q;
    size_t n = se->q_n;
    *relist = se->q_relist;
    se->q = NULL;
    se->q_n = se->q_cap = 0;
    se->q_relist = false;
    if (*relist) { /* the caller lists the registrations again too */
        etcd_reg_items_free(se->rq, se->rq_n);
        se->rq = NULL;
        se->rq_n = se->rq_cap = 0;
    }
    pthread_mutex_unlock(&se->mu);
    bool go = !*relist;
    for (size_t i = 0; i < n; i++) {
        const char *kind = q[i].key, *ns = kind + strlen(kind) + 1, *name = ns + strlen(ns) + 1;
        rete_store_change c = {kind, ns, name, q[i].revision, q[i].deleted};
        if (c.revision > se->revision)
            se->revision = c.revision;
        if (go)
            go = fn(&c, arg);
        free(q[i].key);
    }
    free(q);
}

void etcd_watch_drain_registrations(rete_store *s, rete_store_registration_fn fn, void *arg)
{
    store_etcd *se = to_se(s);
    pthread_mutex_lock(&se->mu);
    reg_item *q = se->rq;
    size_t n = se->rq_n;
    se->rq = NULL;
    se->rq_n = se->rq_cap = 0;
    pthread_mutex_unlock(&se->mu);
    bool go = true;
    for (size_t i = 0; i < n && go; i++) {
        rete_store_registration g = {q[i].ns, q[i].name, q[i].holder, q[i].ready, q[i].revision, q[i].deleted};
        go = fn(&g, arg);
    }
    etcd_reg_items_free(q, n);
}

void etcd_watch_stop(rete_store *s)
{
    store_etcd *se = to_se(s);
    if (!se->thread_running)
        return;
    pthread_mutex_lock(&se->mu);
    se->stop = true;
    pthread_mutex_unlock(&se->mu);
    pthread_join(se->thread, NULL);
    se->thread_running = false;
}

