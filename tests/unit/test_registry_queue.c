/* Unit tests of the registrations a replica writes (registry.c's queue,
 * store_etcd.c's reg_put), with no etcd:
 *  - the queue, on a reted whose store is a fake (a SQLite store for the
 *    resources, test functions for the registrations: they record what is
 *    written and fail on command): dedupe, one write for a whole turn, the
 *    retry delays read from the queue's timer (never slept), recovery;
 *  - the etcd backend's side, against a fake etcd JSON gateway on loopback
 *    (a thread answering /v3/kv/range, /v3/kv/txn, /v3/lease/grant as etcd
 *    does, refusing a transaction of more than 128 operations): batches of
 *    at most 128 puts, and a put refused with "requested lease not found"
 *    taking a new lease and sent again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "compiler.h"
#include "push.h"
#include "registry.h"
#include "reted.h"
#include "temp_store.h"
#include "vec.h"

/* ---- the fake store ---- */

#define FAKE_MAX 4096

typedef struct fake_put {
    char key[520];   /* ns/name */
    bool ready;
    char holder[64];
} fake_put;

typedef struct fake_store {
    rete_store base; /* first */
    rete_store_ops ops;
    rete_store *inner; /* resources */
    /* reg_put */
    size_t put_calls;
    size_t put_sizes[64];        /* regs per call, the first 64 calls */
    fake_put puts[FAKE_MAX];     /* every registration written, in order */
    size_t n_puts;
    int fail_puts;               /* this many next reg_put calls answer RETE_EIO */
    /* registrations the store holds (reg_list) */
    char held[64][520];
    size_t n_held;
    /* reg_expire, reg_expire_many */
    size_t expire_calls;
    size_t expire_many_calls;
    size_t expire_many_items;    /* items of every reg_expire_many call */
    bool fail_expire;            /* reg_expire_many answers RETE_EIO, nothing decided */
    char conflict[64][520];      /* expiring these answers RETE_ECONFLICT */
    size_t n_conflict;
} fake_store;

static fake_store *to_fake(rete_store *s)
{
    return (fake_store *)s;
}

static rete_rc fk_apply(rete_store *s, rete_store_write *w, size_t n, size_t *failed)
{
    rete_store *in = to_fake(s)->inner;
    return in->ops->apply(in, w, n, failed);
}

static rete_rc fk_get(rete_store *s, const char *kind, const char *ns, const char *name, rete_store_resource *out)
{
    rete_store *in = to_fake(s)->inner;
    return in->ops->get(in, kind, ns, name, out);
}

static rete_rc fk_list(rete_store *s, const char *kind, const char *ns, rete_store_each_fn fn, void *arg)
{
    rete_store *in = to_fake(s)->inner;
    return in->ops->list(in, kind, ns, fn, arg);
}

static uint64_t fk_revision(rete_store *s)
{
    rete_store *in = to_fake(s)->inner;
    return in->ops->revision(in);
}

static rete_rc fk_reg_put(rete_store *s, const rete_store_registration *regs, size_t n)
{
    fake_store *f = to_fake(s);
    if (f->put_calls < 64)
        f->put_sizes[f->put_calls] = n;
    f->put_calls++;
    for (size_t i = 0; i < n; i++) /* no key twice in one call (store.h; etcd refuses it) */
        for (size_t j = 0; j < i; j++)
            if (strcmp(regs[i].ns, regs[j].ns) == 0 && strcmp(regs[i].name, regs[j].name) == 0)
                fail_msg("%s/%s twice in one reg_put", regs[i].ns, regs[i].name);
    if (f->fail_puts > 0) {
        f->fail_puts--;
        return RETE_EIO;
    }
    for (size_t i = 0; i < n; i++) {
        assert_true(f->n_puts < FAKE_MAX);
        fake_put *p = &f->puts[f->n_puts++];
        snprintf(p->key, sizeof p->key, "%s/%s", regs[i].ns, regs[i].name);
        snprintf(p->holder, sizeof p->holder, "%s", regs[i].holder);
        p->ready = regs[i].ready;
    }
    return RETE_OK;
}

static rete_rc fk_reg_list(rete_store *s, rete_store_registration_fn fn, void *arg)
{
    fake_store *f = to_fake(s);
    for (size_t i = 0; i < f->n_held; i++) {
        char ns[520];
        snprintf(ns, sizeof ns, "%s", f->held[i]);
        char *slash = strchr(ns, '/');
        *slash = '\0';
        rete_store_registration g = {ns, slash + 1, "other-replica", true, 7, false};
        if (!fn(&g, arg))
            break;
    }
    return RETE_OK;
}

static bool fk_conflicts(const fake_store *f, const char *ns, const char *name)
{
    char key[520];
    snprintf(key, sizeof key, "%s/%s", ns, name);
    for (size_t i = 0; i < f->n_conflict; i++)
        if (strcmp(f->conflict[i], key) == 0)
            return true;
    return false;
}

/* The guard of store.h: the registration absent (reg_revision 0: this fake
 * holds none but reg_list's), the Workload at wl_version. */
static rete_rc fk_reg_expire(rete_store *s, const char *ns, const char *name, uint64_t reg_revision,
                             uint64_t wl_version)
{
    fake_store *f = to_fake(s);
    f->expire_calls++;
    assert_int_equal(reg_revision, 0);
    if (fk_conflicts(f, ns, name))
        return RETE_ECONFLICT;
    if (!wl_version)
        return RETE_OK;
    rete_store_write w = {"Workload", ns, name, NULL, wl_version};
    size_t failed;
    return f->inner->ops->apply(f->inner, &w, 1, &failed);
}

static rete_rc fk_reg_expire_many(rete_store *s, rete_store_expiry *items, size_t n)
{
    fake_store *f = to_fake(s);
    f->expire_many_calls++;
    f->expire_many_items += n;
    for (size_t i = 0; i < n; i++)
        items[i].rc = RETE_EIO;
    if (f->fail_expire)
        return RETE_EIO;
    size_t calls = f->expire_calls;
    for (size_t i = 0; i < n; i++)
        items[i].rc = fk_reg_expire(s, items[i].ns, items[i].name, items[i].reg_revision, items[i].wl_version);
    f->expire_calls = calls; /* fk_reg_expire counts the single op's calls only */
    return RETE_OK;
}

static uint64_t fk_reg_epoch(rete_store *s)
{
    (void)s;
    return 1;
}

static void fk_close(rete_store *s)
{
    fake_store *f = to_fake(s);
    f->inner->ops->close(f->inner);
    free(f);
}

static fake_store *fake_open(rete_store *inner)
{
    fake_store *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->inner = inner;
    f->ops = (rete_store_ops){.name = "fake",
                              .apply = fk_apply,
                              .get = fk_get,
                              .list = fk_list,
                              .revision = fk_revision,
                              .reg_put = fk_reg_put,
                              .reg_list = fk_reg_list,
                              .reg_expire = fk_reg_expire,
                              .reg_expire_many = fk_reg_expire_many,
                              .reg_epoch = fk_reg_epoch,
                              .close = fk_close};
    f->base.ops = &f->ops;
    return f;
}

/* ---- a reted on the fake store, with a loop ---- */

typedef struct fixture {
    char dir[64];
    char path[96];
    uv_loop_t loop;
    reted r;
    fake_store *fake;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->fake = fake_open(fx_temp_store("regq", f->dir, sizeof f->dir, f->path, sizeof f->path));
    f->r.store = &f->fake->base;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->r.loop = &f->loop;
    f->r.iol.loop = &f->loop;
    snprintf(f->r.replica_id, sizeof f->r.replica_id, "replica-test");
    reted_stats_init(&f->r.stats);
    reted_push_init(&f->r);
    reted_registration_start(&f->r);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    reted_registration_stop(&f->r);
    reted_push_close(&f->r);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    reted_registry_free(&f->r);
    reted_cache_free(&f->r);
    reted_stats_free(&f->r.stats);
    f->r.store->ops->close(f->r.store);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* One turn of the loop: the 0 ms timer a hold armed fires. */
static void one_turn(fixture *f)
{
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static const fake_put *written(const fake_store *s, const char *key)
{
    const fake_put *last = NULL; /* the latest write of the key */
    for (size_t i = 0; i < s->n_puts; i++)
        if (strcmp(s->puts[i].key, key) == 0)
            last = &s->puts[i];
    return last;
}

static size_t writes_of(const fake_store *s, const char *key)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_puts; i++)
        n += strcmp(s->puts[i].key, key) == 0;
    return n;
}

/* Two registrations of one key in one turn: one write, the latest
 * readiness; a key held once is written once. */
static void test_one_key_twice_in_a_turn_is_written_once_the_latest(void **state)
{
    fixture *f = *state;
    reted_registration_hold(&f->r, "ns", "a", true);
    reted_registration_hold(&f->r, "ns", "b", true);
    reted_registration_hold(&f->r, "ns", "a", false);
    assert_int_equal(f->fake->put_calls, 0); /* queued, not written yet */
    one_turn(f);
    assert_int_equal(f->fake->put_calls, 1);
    assert_int_equal(f->fake->put_sizes[0], 2);
    assert_int_equal(writes_of(f->fake, "ns/a"), 1);
    assert_false(written(f->fake, "ns/a")->ready);
    assert_string_equal(written(f->fake, "ns/a")->holder, "replica-test");
    assert_true(written(f->fake, "ns/b")->ready);
    assert_int_equal(f->r.registry.n_pending, 0);
    /* the other order: the latest is ready */
    reted_registration_hold(&f->r, "ns", "a", false);
    reted_registration_hold(&f->r, "ns", "a", true);
    one_turn(f);
    assert_int_equal(f->fake->put_calls, 2);
    assert_int_equal(f->fake->put_sizes[1], 1);
    assert_true(written(f->fake, "ns/a")->ready);
}

/* Everything queued in one turn goes to the store in one call (the etcd
 * backend cuts it in transactions of 128: test_etcd_reg_put_batches). */
static void test_a_turns_registrations_are_written_together(void **state)
{
    fixture *f = *state;
    char name[32];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "p-%03d", i);
        reted_registration_hold(&f->r, "ns", name, i % 2 == 0);
    }
    one_turn(f);
    assert_int_equal(f->fake->put_calls, 1);
    assert_int_equal(f->fake->put_sizes[0], 300);
    for (int i = 0; i < 300; i++) {
        char key[40];
        snprintf(key, sizeof key, "ns/p-%03d", i);
        assert_int_equal(writes_of(f->fake, key), 1);
        assert_int_equal(written(f->fake, key)->ready, i % 2 == 0);
    }
}

/* The queue's timer: armed, and due within ms (libuv's clock in whole ms). */
static void assert_retry_in(fixture *f, uint64_t ms)
{
    assert_true(uv_is_active((uv_handle_t *)&f->r.registry.flush_timer));
    assert_int_equal(f->r.registry.retry_ms, ms);
    uint64_t due = uv_timer_get_due_in(&f->r.registry.flush_timer);
    assert_true(due <= ms);
    assert_true(due + 200 >= ms);
}

/* A failing write stays queued and is tried again after 1 s, 2, 4, then 8 s
 * at most; a hold meanwhile waits for that try (no write per hello against
 * a failing store); the try that works writes everything still queued and
 * the delays start from 1 s again. */
static void test_a_failing_write_is_retried_after_1_2_4_8_seconds(void **state)
{
    fixture *f = *state;
    f->fake->fail_puts = 5;
    reted_registration_hold(&f->r, "ns", "a", true);
    reted_registration_hold(&f->r, "ns", "b", true);
    one_turn(f);
    assert_int_equal(f->fake->put_calls, 1);
    assert_int_equal(f->r.registry.n_pending, 2);
    assert_retry_in(f, 1000);
    /* a hold while failing: queued, no write before the timer */
    reted_registration_hold(&f->r, "ns", "c", false);
    one_turn(f);
    assert_int_equal(f->fake->put_calls, 1);
    assert_retry_in(f, 1000);
    /* the timer's tries, without waiting for it */
    const uint64_t delays[] = {2000, 4000, 8000, 8000};
    for (size_t i = 0; i < 4; i++) {
        reted_registration_flush(&f->r);
        assert_int_equal(f->fake->put_calls, 2 + i);
        assert_retry_in(f, delays[i]);
    }
    assert_int_equal(f->fake->n_puts, 0);
    assert_int_equal(f->r.registry.n_pending, 3);
    /* a, held again not ready while failing: the latest is written */
    reted_registration_hold(&f->r, "ns", "a", false);
    reted_registration_flush(&f->r); /* the store answers again */
    assert_int_equal(f->fake->put_calls, 6);
    assert_int_equal(f->fake->put_sizes[5], 3);
    assert_int_equal(f->fake->n_puts, 3);
    assert_false(written(f->fake, "ns/a")->ready);
    assert_true(written(f->fake, "ns/b")->ready);
    assert_false(written(f->fake, "ns/c")->ready);
    assert_int_equal(f->r.registry.n_pending, 0);
    assert_false(f->r.registry.flush_failing);
    assert_int_equal(f->r.registry.retry_ms, 0);
    /* the timer still armed for the old try finds nothing to do */
    uv_timer_stop(&f->r.registry.flush_timer);
    /* healthy again: the next hold is written at the next turn, and a new
     * failure starts from 1 s */
    reted_registration_hold(&f->r, "ns", "d", true);
    one_turn(f);
    assert_int_equal(f->fake->put_calls, 7);
    assert_int_equal(writes_of(f->fake, "ns/d"), 1);
    f->fake->fail_puts = 1;
    reted_registration_hold(&f->r, "ns", "e", true);
    one_turn(f);
    assert_retry_in(f, 1000);
    reted_registration_flush(&f->r);
    assert_int_equal(writes_of(f->fake, "ns/e"), 1);
    assert_int_equal(f->r.registry.n_pending, 0);
}

/* ---- the leader's sweep ---- */

static void put_workload(fixture *f, const char *name, bool by_proxy)
{
    char json[512];
    snprintf(json, sizeof json,
             "{\"kind\":\"Workload\",\"metadata\":{\"namespace\":\"ns\",\"name\":\"%s\"%s},"
             "\"spec\":{\"serviceAccount\":\"default\",\"address\":\"10.0.0.1\"}}",
             name, by_proxy ? ",\"annotations\":{\"rete.dev/registered-by\":\"proxy\"}" : "");
    rete_store_write w = {.kind = "Workload", .ns = "ns", .name = name, .json = json};
    size_t failed = 0;
    assert_int_equal(f->r.store->ops->apply(f->r.store, &w, 1, &failed), RETE_OK);
}

static bool has_workload(fixture *f, const char *name)
{
    rete_store_resource res;
    return f->r.store->ops->get(f->r.store, "Workload", "ns", name, &res) == RETE_OK;
}

/* Leading, grace 0: a sweep expires every orphan it sees. The index is
 * built again from the store (what the watch does on a replica). */
static void sweep(fixture *f)
{
    reted_index_free(&f->r.index);
    assert_int_equal(reted_index_build(&f->r.index, f->r.store), RETE_OK);
    f->r.leading = true;
    reted_registration_sweep(&f->r);
}

static uint64_t expired_total(fixture *f)
{
    return rete_metrics_counter_value(f->r.stats.reg, f->r.stats.registrations_expired);
}

/* 300 orphans: one store call for all of them (the store cuts it in
 * transactions: test_etcd_reg_expire_many_batches), each judged alone: the
 * held ones and the operator's are never candidates, the ones whose guard
 * fails (registered again meanwhile) stay, the others go, each counted. */
static void test_the_sweep_expires_every_orphan_in_one_store_call(void **state)
{
    fixture *f = *state;
    char name[32];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "orphan-%03d", i);
        put_workload(f, name, true);
    }
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof name, "held-%02d", i);
        put_workload(f, name, true);
        snprintf(f->fake->held[f->fake->n_held++], sizeof f->fake->held[0], "ns/%s", name);
        snprintf(name, sizeof name, "declared-%02d", i);
        put_workload(f, name, false);
    }
    const char *moved[] = {"orphan-000", "orphan-150", "orphan-299"};
    for (size_t i = 0; i < 3; i++)
        snprintf(f->fake->conflict[f->fake->n_conflict++], sizeof f->fake->conflict[0], "ns/%s", moved[i]);
    sweep(f);
    assert_int_equal(f->fake->expire_many_calls, 1);
    assert_int_equal(f->fake->expire_many_items, 300);
    assert_int_equal(f->fake->expire_calls, 0);
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "orphan-%03d", i);
        bool kept = i == 0 || i == 150 || i == 299;
        assert_int_equal(has_workload(f, name), kept);
    }
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof name, "held-%02d", i);
        assert_true(has_workload(f, name));
        snprintf(name, sizeof name, "declared-%02d", i);
        assert_true(has_workload(f, name));
    }
    assert_int_equal(expired_total(f), 297);
}

/* The store fails: nothing is lost, the undecided stay due and the next
 * sweep expires them (without waiting for another grace period). */
static void test_the_sweep_tries_again_what_the_store_did_not_decide(void **state)
{
    fixture *f = *state;
    f->r.registry.grace_seconds = 3600;
    put_workload(f, "b", true);
    put_workload(f, "a", true);
    sweep(f); /* seen: orphans since now */
    assert_int_equal(f->fake->expire_many_calls, 0);
    assert_int_equal(f->r.registry.n_orphans, 2);
    f->r.registry.orphans[0].since_unix -= 7200; /* their grace period is over */
    f->r.registry.orphans[1].since_unix -= 7200;
    f->fake->fail_expire = true;
    sweep(f);
    assert_int_equal(f->fake->expire_many_calls, 1);
    assert_true(has_workload(f, "a") && has_workload(f, "b"));
    assert_int_equal(f->r.registry.n_orphans, 2);
    assert_string_equal(f->r.registry.orphans[0].key, "ns/a"); /* sorted: the sweep's bsearch */
    f->fake->fail_expire = false;
    sweep(f);
    assert_int_equal(f->fake->expire_many_calls, 2);
    assert_false(has_workload(f, "a") || has_workload(f, "b"));
    assert_int_equal(expired_total(f), 2);
    assert_int_equal(f->r.registry.n_orphans, 0);
}

/* ---- a fake etcd JSON gateway ---- */

#define GW_MAX_TXN_OPS 128 /* etcd's --max-txn-ops default */

typedef struct gateway {
    int lfd;
    pthread_t th;
    char ep[64];
    pthread_mutex_t mu;
    /* under mu */
    unsigned next_lease;         /* the next lease grant's ID */
    unsigned refused_lease;      /* a put under this lease: "requested lease not found" */
    char paths[256][32];         /* the requests, in order (the first 256) */
    size_t n_req;
    size_t n_txn;
    size_t txn_ops[256];         /* operations of each transaction (the first 256) */
    RETE_VECTOR(struct gw_put {
        char *key;
        unsigned lease;
    }) puts;                     /* every key put by a transaction that succeeded */
    RETE_VECTOR(char *) dels;    /* every key deleted by a transaction that succeeded */
    char conflict[64][160];      /* a transaction comparing one of these keys fails */
    size_t n_conflict;
} gateway;

static char *gw_unb64(const char *s)
{
    size_t n = strlen(s);
    char *out = calloc(1, n / 4 * 3 + 2);
    assert_non_null(out);
    int got = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    assert_true(got >= 0);
    size_t pad = n >= 2 ? (s[n - 1] == '=') + (s[n - 2] == '=') : 0;
    out[(size_t)got - pad] = '\0';
    return out;
}

/* etcd's answer to one request: status and body (malloc'ed). */
static char *gw_answer(gateway *g, const char *path, const char *body, int *status)
{
    *status = 200;
    json_t *req = json_loads(body, 0, NULL);
    char *out = NULL;
    pthread_mutex_lock(&g->mu);
    if (g->n_req < 256)
        snprintf(g->paths[g->n_req], sizeof g->paths[0], "%s", path);
    g->n_req++;
    if (strcmp(path, "/v3/lease/grant") == 0) {
        unsigned id = g->next_lease++;
        assert_int_equal(asprintf(&out, "{\"header\":{\"revision\":\"5\"},\"ID\":\"%u\",\"TTL\":\"10\"}", id) > 0,
                         true);
    } else if (strcmp(path, "/v3/kv/txn") == 0) {
        json_t *cmp = json_object_get(req, "compare"), *ops = json_object_get(req, "success"), *o;
        size_t i;
        if (g->n_txn < 256)
            g->txn_ops[g->n_txn] = json_array_size(ops);
        g->n_txn++;
        bool held = true, lease_gone = false;
        if (json_array_size(cmp) > GW_MAX_TXN_OPS || json_array_size(ops) > GW_MAX_TXN_OPS) {
            *status = 400;
            out = strdup("{\"error\":\"etcdserver: too many operations in txn request\",\"code\":3}");
            goto done;
        }
        json_array_foreach(cmp, i, o) {
            char *k = gw_unb64(json_string_value(json_object_get(o, "key")));
            for (size_t c = 0; c < g->n_conflict; c++)
                held = held && strcmp(k, g->conflict[c]) != 0;
            free(k);
        }
        json_array_foreach(ops, i, o) {
            const char *lease = json_string_value(json_object_get(json_object_get(o, "request_put"), "lease"));
            lease_gone = lease_gone || (lease && g->refused_lease && strtoul(lease, NULL, 10) == g->refused_lease);
        }
        if (lease_gone) {
            *status = 404;
            out = strdup("{\"error\":\"etcdserver: requested lease not found\",\"code\":5,"
                         "\"message\":\"etcdserver: requested lease not found\"}");
            goto done;
        }
        if (held)
            json_array_foreach(ops, i, o) {
                json_t *put = json_object_get(o, "request_put");
                json_t *del = json_object_get(o, "request_delete_range");
                if (put) {
                    const char *lease = json_string_value(json_object_get(put, "lease"));
                    *rete_vector_push(&g->puts) = (struct gw_put){
                        gw_unb64(json_string_value(json_object_get(put, "key"))),
                        lease ? (unsigned)strtoul(lease, NULL, 10) : 0};
                } else if (del) {
                    *rete_vector_push(&g->dels) = gw_unb64(json_string_value(json_object_get(del, "key")));
                }
            }
        out = strdup(held ? "{\"header\":{\"revision\":\"9\"},\"succeeded\":true}"
                          : "{\"header\":{\"revision\":\"9\"}}");
    } else { /* a range: empty */
        out = strdup("{\"header\":{\"revision\":\"5\"},\"count\":\"0\"}");
    }
done:
    pthread_mutex_unlock(&g->mu);
    json_decref(req);
    return out;
}

/* Serve one connection's requests (keep-alive) until the client closes it. */
static void gw_conn(gateway *g, int fd)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        char *end;
        while (!(end = buf ? memmem(buf, len, "\r\n\r\n", 4) : NULL)) {
            if (len + 4096 > cap) {
                cap = cap ? cap * 2 : 65536;
                buf = realloc(buf, cap);
                assert_non_null(buf);
            }
            ssize_t n = recv(fd, buf + len, 4096, 0);
            if (n <= 0)
                goto out;
            len += (size_t)n;
        }
        size_t head = (size_t)(end - buf) + 4;
        char path[64] = "";
        assert_int_equal(sscanf(buf, "POST %63s HTTP/1.1", path), 1);
        const char *cl = strcasestr(buf, "Content-Length:");
        assert_non_null(cl);
        size_t blen = strtoul(cl + 15, NULL, 10);
        while (len < head + blen) {
            if (head + blen + 1 > cap) {
                cap = head + blen + 1;
                buf = realloc(buf, cap);
                assert_non_null(buf);
            }
            ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
            if (n <= 0)
                goto out;
            len += (size_t)n;
        }
        char *body = strndup(buf + head, blen);
        int status;
        char *ans = gw_answer(g, path, body, &status);
        free(body);
        char *resp;
        int rl = asprintf(&resp, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                          status, strlen(ans), ans);
        assert_true(rl > 0);
        (void)!send(fd, resp, (size_t)rl, MSG_NOSIGNAL);
        free(resp);
        free(ans);
        memmove(buf, buf + head + blen, len - head - blen);
        len -= head + blen;
    }
out:
    free(buf);
    close(fd);
}

static void *gw_serve(void *arg)
{
    gateway *g = arg;
    int fd;
    while ((fd = accept(g->lfd, NULL, NULL)) >= 0)
        gw_conn(g, fd);
    return NULL;
}

static gateway *gw_start(void)
{
    gateway *g = calloc(1, sizeof *g);
    assert_non_null(g);
    pthread_mutex_init(&g->mu, NULL);
    g->next_lease = 1001;
    g->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(g->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(g->lfd, 4), 0);
    assert_int_equal(getsockname(g->lfd, (struct sockaddr *)&a, &al), 0);
    snprintf(g->ep, sizeof g->ep, "127.0.0.1:%u", ntohs(a.sin_port));
    assert_int_equal(pthread_create(&g->th, NULL, gw_serve, g), 0);
    return g;
}

/* After the store that used it is closed (its connection ends). */
static void gw_stop(gateway *g)
{
    shutdown(g->lfd, SHUT_RDWR); /* accept returns */
    pthread_join(g->th, NULL);
    close(g->lfd);
    for (size_t i = 0; i < g->puts.n; i++)
        free(g->puts.v[i].key);
    for (size_t i = 0; i < g->dels.n; i++)
        free(g->dels.v[i]);
    free(g->puts.v);
    free(g->dels.v);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static rete_store *gw_store(gateway *g)
{
    rete_store_etcd_opts o = {.endpoints = g->ep, .prefix = "/t/", .timeout_ms = 5000};
    rete_error e = {0};
    rete_store *s = rete_store_etcd_open(&o, &e);
    if (!s)
        fail_msg("etcd open: %s", e.msg);
    return s;
}

static size_t gw_puts_of(gateway *g, const char *key, unsigned *lease)
{
    size_t n = 0;
    for (size_t i = 0; i < g->puts.n; i++)
        if (strcmp(g->puts.v[i].key, key) == 0) {
            n++;
            *lease = g->puts.v[i].lease;
        }
    return n;
}

static rete_store_registration *some_regs(size_t n)
{
    rete_store_registration *regs = calloc(n, sizeof *regs);
    assert_non_null(regs);
    for (size_t i = 0; i < n; i++) {
        char *name = malloc(16);
        assert_non_null(name);
        snprintf(name, 16, "p-%03zu", i);
        regs[i] = (rete_store_registration){"ns", name, "replica-test", true, 0, false};
    }
    return regs;
}

static void regs_free(rete_store_registration *regs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((char *)regs[i].name);
    free(regs);
}

/* More than 128 registrations: transactions of at most 128 puts (the fake
 * refuses more, as etcd does), every one written, under the lease. */
static void test_etcd_reg_put_batches(void **state)
{
    (void)state;
    gateway *g = gw_start();
    rete_store *s = gw_store(g);
    rete_store_registration *regs = some_regs(300);
    assert_int_equal(s->ops->reg_put(s, regs, 300), RETE_OK);
    assert_int_equal(s->ops->reg_epoch(s), 1);
    s->ops->close(s);
    assert_int_equal(g->n_txn, 3);
    assert_int_equal(g->txn_ops[0], 128);
    assert_int_equal(g->txn_ops[1], 128);
    assert_int_equal(g->txn_ops[2], 44);
    assert_int_equal(g->puts.n, 300);
    for (size_t i = 0; i < 300; i++) {
        char key[64];
        unsigned lease = 0;
        snprintf(key, sizeof key, "/t/registrations/ns/%s", regs[i].name);
        assert_int_equal(gw_puts_of(g, key, &lease), 1);
        assert_int_equal(lease, 1001);
    }
    regs_free(regs, 300);
    gw_stop(g);
}

/* A put refused with "requested lease not found" (the lease expired while
 * the loop was busy): a new lease is taken, the put sent again under it, and
 * reg_epoch says so (the registry puts every held registration again). */
static void test_etcd_reg_put_takes_a_new_lease_when_etcd_lost_it(void **state)
{
    (void)state;
    gateway *g = gw_start();
    rete_store *s = gw_store(g);
    rete_store_registration *regs = some_regs(3);
    assert_int_equal(s->ops->reg_put(s, regs, 1), RETE_OK); /* takes lease 1001 */
    assert_int_equal(s->ops->reg_epoch(s), 1);
    pthread_mutex_lock(&g->mu);
    g->refused_lease = 1001; /* etcd forgets it */
    size_t before = g->n_req;
    pthread_mutex_unlock(&g->mu);
    assert_int_equal(s->ops->reg_put(s, regs, 3), RETE_OK);
    assert_int_equal(s->ops->reg_epoch(s), 2);
    s->ops->close(s);
    /* the refused transaction, a grant, the same transaction again */
    assert_int_equal(g->n_req - before, 3);
    assert_string_equal(g->paths[before], "/v3/kv/txn");
    assert_string_equal(g->paths[before + 1], "/v3/lease/grant");
    assert_string_equal(g->paths[before + 2], "/v3/kv/txn");
    for (size_t i = 0; i < 3; i++) {
        char key[64];
        unsigned lease = 0;
        snprintf(key, sizeof key, "/t/registrations/ns/%s", regs[i].name);
        assert_int_equal(gw_puts_of(g, key, &lease), i == 0 ? 2 : 1);
        assert_int_equal(lease, 1002);
    }
    regs_free(regs, 3);
    gw_stop(g);
}

/* reg_expire_many on etcd: transactions of at most 64 expiries (two
 * compares and two deletes each: etcd takes 128 of either), every guard
 * sent; an item whose guard fails is cut out of its batch (halves) and the
 * others of that batch are still deleted. */
static void test_etcd_reg_expire_many_batches(void **state)
{
    (void)state;
    gateway *g = gw_start();
    rete_store *s = gw_store(g);
    rete_store_registration *names = some_regs(300);
    rete_store_expiry ex[300];
    for (size_t i = 0; i < 300; i++)
        ex[i] = (rete_store_expiry){"ns", names[i].name, 0, 40 + i, RETE_OK};
    assert_int_equal(s->ops->reg_expire_many(s, ex, 300), RETE_OK);
    assert_int_equal(g->n_txn, 5);
    for (size_t t = 0; t < 5; t++)
        assert_int_equal(g->txn_ops[t], t < 4 ? 128 : 88);
    assert_int_equal(g->dels.n, 600);
    for (size_t i = 0; i < 300; i++)
        assert_int_equal(ex[i].rc, RETE_OK);
    /* two items moved: the rest still goes */
    pthread_mutex_lock(&g->mu);
    for (size_t i = 0; i < g->dels.n; i++)
        free(g->dels.v[i]);
    g->dels.n = g->n_txn = 0;
    snprintf(g->conflict[g->n_conflict++], sizeof g->conflict[0], "/t/registrations/ns/%s", names[10].name);
    snprintf(g->conflict[g->n_conflict++], sizeof g->conflict[0], "/t/resources/Workload/ns/%s", names[200].name);
    pthread_mutex_unlock(&g->mu);
    assert_int_equal(s->ops->reg_expire_many(s, ex, 300), RETE_OK);
    assert_int_equal(g->dels.n, 596);
    for (size_t i = 0; i < 300; i++)
        assert_int_equal(ex[i].rc, i == 10 || i == 200 ? RETE_ECONFLICT : RETE_OK);
    assert_true(g->n_txn <= 5 + 2 * 2 * 6); /* each conflict: about 2*log2(64) more */
    /* the single op: the same guards */
    assert_int_equal(s->ops->reg_expire(s, "ns", names[10].name, 0, 7), RETE_ECONFLICT);
    assert_int_equal(s->ops->reg_expire(s, "ns", names[11].name, 0, 7), RETE_OK);
    s->ops->close(s);
    regs_free(names, 300);
    gw_stop(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_key_twice_in_a_turn_is_written_once_the_latest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_turns_registrations_are_written_together, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_failing_write_is_retried_after_1_2_4_8_seconds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_the_sweep_expires_every_orphan_in_one_store_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_the_sweep_tries_again_what_the_store_did_not_decide, setup, teardown),
        cmocka_unit_test(test_etcd_reg_put_batches),
        cmocka_unit_test(test_etcd_reg_put_takes_a_new_lease_when_etcd_lost_it),
        cmocka_unit_test(test_etcd_reg_expire_many_batches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
