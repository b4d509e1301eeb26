/* Unit tests for src/control/compiler.c: a proxy's scope (what its snapshot
 * holds), proxies of one scope sharing a snapshot, and the recompile set (a
 * change drops only the cached snapshots it touches), on a fixture reted
 * with a real SQLite store and CA. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "reted_fixture.h"

#include <jansson.h>

static reted_proxy *proxy(fixture *f, const char *ns, const char *name)
{
    (void)f;
    reted_proxy *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->ns = ns; /* string constants: nothing of p's own to free */
    p->name = name;
    return p;
}

/* The snapshot's keys, "Kind ns/name" one a line, in its order. */
static const char *keys(const reted_snapshot *s)
{
    static char buf[4096];
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < s->n_entries; i++) {
        const reted_text *d = s->entries[i].doc;
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s %s/%s\n", d->kind, d->ns, d->name);
        assert_true(n < sizeof buf);
    }
    return buf;
}

static uint64_t compiles(fixture *f)
{
    return rete_metrics_counter_value(f->r.stats.reg, f->r.stats.compiles);
}

static uint64_t patches(fixture *f)
{
    return rete_metrics_counter_value(f->r.stats.reg, f->r.stats.patches);
}

/* A small mesh: shop/web calls db/pg, whose route also sends to bank/pay;
 * unrelated/x is nobody's business. Policies in shop, bank and the root
 * namespace; a WorkloadGroup (reted's own, never a proxy's). */
static void small_mesh(fixture *f)
{
    fx_put(f, "Service", "shop", "web", "{\"selector\":{\"app\":\"web\"}}");
    fx_put(f, "Workload", "shop", "web-1", "{\"labels\":{\"app\":\"web\"},\"egress\":[\"db/pg\"]}");
    fx_put(f, "Service", "db", "pg", "{\"selector\":{\"app\":\"pg\"}}");
    fx_put(f, "Workload", "db", "pg-1", "{\"labels\":{\"app\":\"pg\"}}");
    fx_put(f, "Service", "db", "other", "{\"selector\":{\"app\":\"other\"}}");
    fx_put(f, "Workload", "db", "other-1", "{\"labels\":{\"app\":\"other\"}}");
    fx_put(f, "HTTPRoute", "db", "pg-split",
           "{\"parentRefs\":[{\"name\":\"pg\"}],\"rules\":[{\"backendRefs\":[{\"name\":\"pg\"},"
           "{\"name\":\"pay\",\"namespace\":\"bank\"}]}]}");
    fx_put(f, "HTTPRoute", "db", "other-route", "{\"parentRefs\":[{\"name\":\"other\"}]}");
    fx_put(f, "Service", "bank", "pay", "{\"selector\":{\"app\":\"pay\"}}");
    fx_put(f, "Workload", "bank", "pay-1", "{\"labels\":{\"app\":\"pay\"}}");
    fx_put(f, "DestinationRule", "db", "pg", "{\"host\":\"pg\"}");
    fx_put(f, "DestinationRule", "db", "other", "{\"host\":\"other.db.svc.cluster.local\"}");
    fx_put(f, "Service", "unrelated", "x", "{\"selector\":{\"app\":\"x\"}}");
    fx_put(f, "Workload", "unrelated", "x-1", "{\"labels\":{\"app\":\"x\"}}");
    fx_put(f, "AuthorizationPolicy", "shop", "web-in", "{\"action\":\"ALLOW\"}");
    fx_put(f, "AuthorizationPolicy", "bank", "pay-in", "{\"action\":\"ALLOW\"}");
    fx_put(f, "PeerAuthentication", "rete-system", "strict", "{\"mtls\":{\"mode\":\"STRICT\"}}");
    fx_put(f, "MeshConfig", "rete-system", "mesh", "{}");
    fx_put(f, "WorkloadGroup", "shop", "web", "{}");
}

/* What a proxy's snapshot holds: the Services its egress names, those that
 * select it (it serves them), every Service a route of those names (parent
 * or backend), with their Workloads, routes and DestinationRules; the
 * policies of its own namespace and of the root namespace, the MeshConfig.
 * Nothing else. */
static void test_scope_of_a_proxy(void **state)
{
    fixture *f = *state;
    small_mesh(f);
    reted_proxy *p = proxy(f, "shop", "web-1");
    reted_snapshot *s = reted_snapshot_for(&f->r, p);
    assert_non_null(s);
    assert_false(s->all);
    assert_string_equal(keys(s), "AuthorizationPolicy shop/web-in\n"
                                 "DestinationRule db/pg\n"
                                 "HTTPRoute db/pg-split\n"
                                 "MeshConfig rete-system/mesh\n"
                                 "PeerAuthentication rete-system/strict\n"
                                 "Service bank/pay\n"
                                 "Service db/pg\n"
                                 "Service shop/web\n"
                                 "Workload bank/pay-1\n"
                                 "Workload db/pg-1\n"
                                 "Workload shop/web-1\n");
    /* the entries the stream carries: every one, in order, each with its
     * key, version and the stored document as a JSON object */
    size_t len;
    char *text = reted_snapshot_entries(s, &len);
    assert_int_equal(strlen(text), len);
    json_error_t je;
    json_t *entries = json_loadb(text, len, 0, &je);
    assert_non_null(entries);
    assert_int_equal(json_array_size(entries), s->n_entries);
    for (size_t i = 0; i < s->n_entries; i++) {
        json_t *e = json_array_get(entries, i), *doc = json_object_get(e, "document");
        const reted_text *d = s->entries[i].doc;
        assert_string_equal(json_string_value(json_object_get(e, "kind")), d->kind);
        assert_string_equal(json_string_value(json_object_get(e, "namespace")), d->ns);
        assert_string_equal(json_string_value(json_object_get(e, "name")), d->name);
        assert_int_equal(json_integer_value(json_object_get(e, "version")), d->version);
        assert_string_equal(json_string_value(json_object_get(doc, "kind")), d->kind);
    }
    json_decref(entries);
    assert_null(strstr(text, "unrelated"));
    free(text);
    reted_snapshot_release(&f->r, s);
    free(p);
}

/* Without an egress of its own, a proxy takes MeshConfig's defaultEgress
 * ("." is its own namespace); without that either, the whole mesh (still
 * only its own namespace's and the root's policies). */
static void test_default_egress_then_everything(void **state)
{
    fixture *f = *state;
    small_mesh(f);
    fx_put(f, "Workload", "db", "pg-1", "{\"labels\":{\"app\":\"pg\"}}");
    fx_put(f, "MeshConfig", "rete-system", "mesh", "{\"defaultEgress\":[\"./*\"]}");
    reted_proxy *p = proxy(f, "db", "pg-1");
    reted_snapshot *s = reted_snapshot_for(&f->r, p);
    assert_false(s->all);
    /* the Services of db and what its routes name (bank/pay); not shop or unrelated */
    assert_string_equal(keys(s), "DestinationRule db/other\n"
                                 "DestinationRule db/pg\n"
                                 "HTTPRoute db/other-route\n"
                                 "HTTPRoute db/pg-split\n"
                                 "MeshConfig rete-system/mesh\n"
                                 "PeerAuthentication rete-system/strict\n"
                                 "Service bank/pay\n"
                                 "Service db/other\n"
                                 "Service db/pg\n"
                                 "Workload bank/pay-1\n"
                                 "Workload db/other-1\n"
                                 "Workload db/pg-1\n");
    reted_snapshot_release(&f->r, s);

    fx_put(f, "MeshConfig", "rete-system", "mesh", "{}");
    s = reted_snapshot_for(&f->r, p);
    assert_true(s->all);
    const char *k = keys(s);
    assert_non_null(strstr(k, "Service unrelated/x\n"));
    assert_non_null(strstr(k, "Workload unrelated/x-1\n"));
    assert_non_null(strstr(k, "Service shop/web\n"));
    assert_null(strstr(k, "AuthorizationPolicy")); /* shop's and bank's: not db's */
    assert_null(strstr(k, "WorkloadGroup"));
    reted_snapshot_release(&f->r, s);
    free(p);
}

/* Proxies whose scope is the same share one snapshot (compiled once):
 * with the whole mesh as egress labels do not matter; with a narrower one
 * they do (the Services selecting it differ). */
static void test_same_scope_shares_a_snapshot(void **state)
{
    fixture *f = *state;
    small_mesh(f);
    fx_put(f, "Workload", "shop", "web-2", "{\"labels\":{\"app\":\"web\"},\"egress\":[\"db/pg\"]}");
    fx_put(f, "Workload", "shop", "admin-1", "{\"labels\":{\"app\":\"admin\"},\"egress\":[\"db/pg\"]}");
    fx_put(f, "Workload", "shop", "all-1", "{\"labels\":{\"app\":\"web\"}}");
    fx_put(f, "Workload", "shop", "all-2", "{\"labels\":{\"app\":\"admin\"}}");
    reted_proxy *web1 = proxy(f, "shop", "web-1"), *web2 = proxy(f, "shop", "web-2"),
                *admin = proxy(f, "shop", "admin-1"), *all1 = proxy(f, "shop", "all-1"),
                *all2 = proxy(f, "shop", "all-2"), *other_ns = proxy(f, "bank", "pay-1");
    uint64_t c0 = compiles(f);
    reted_snapshot *s1 = reted_snapshot_for(&f->r, web1), *s2 = reted_snapshot_for(&f->r, web2);
    assert_ptr_equal(s1, s2);
    assert_int_equal(compiles(f), c0 + 1);
    reted_snapshot *sa = reted_snapshot_for(&f->r, admin);
    assert_ptr_not_equal(sa, s1);
    assert_null(strstr(keys(sa), "Service shop/web\n")); /* it serves nothing */
    reted_snapshot *a1 = reted_snapshot_for(&f->r, all1), *a2 = reted_snapshot_for(&f->r, all2);
    assert_true(a1->all);
    assert_ptr_equal(a1, a2);
    reted_snapshot *b = reted_snapshot_for(&f->r, other_ns);
    assert_ptr_not_equal(b, a1); /* another namespace: other policies */
    assert_int_equal(compiles(f), c0 + 4);
    reted_snapshot *all[] = {s1, s2, sa, a1, a2, b};
    for (size_t i = 0; i < 6; i++)
        reted_snapshot_release(&f->r, all[i]);
    /* nobody holds them: the sweep empties the cache */
    reted_snapshots_sweep(&f->r);
    assert_null(f->r.cache.snapshots);
    reted_proxy *ps[] = {web1, web2, admin, all1, all2, other_ns};
    for (size_t i = 0; i < 6; i++)
        free(ps[i]);
}

/* Regression: the same labels written in another key order are the same
 * scope. The index kept a Workload's labels in its document's order and
 * the scope key is made of them, so two such proxies compiled, held and
 * pushed two identical snapshots. */
static void test_label_order_is_one_scope(void **state)
{
    fixture *f = *state;
    small_mesh(f);
    fx_put(f, "Workload", "shop", "a", "{\"labels\":{\"app\":\"web\",\"v\":\"1\"},\"egress\":[\"db/pg\"]}");
    fx_put(f, "Workload", "shop", "b", "{\"labels\":{\"v\":\"1\",\"app\":\"web\"},\"egress\":[\"db/pg\"]}");
    reted_proxy *pa = proxy(f, "shop", "a"), *pb = proxy(f, "shop", "b");
    reted_snapshot *a = reted_snapshot_for(&f->r, pa), *b = reted_snapshot_for(&f->r, pb);
    assert_ptr_equal(a, b);
    reted_snapshot_release(&f->r, a);
    reted_snapshot_release(&f->r, b);
    free(pa);
    free(pb);
}

/* Four scopes compiled and held: A routes to db/pg (and through its route
 * to bank/pay), B serves bank/pay, C sees the whole mesh, D lives in
 * unrelated with egress to its own Service only. */
typedef struct four {
    reted_proxy *p[4];
    reted_snapshot *s[4];
} four;

static void four_scopes(fixture *f, four *x)
{
    small_mesh(f);
    fx_put(f, "Workload", "bank", "pay-1", "{\"labels\":{\"app\":\"pay\"},\"egress\":[\"bank/pay\"]}");
    fx_put(f, "Workload", "shop", "all-1", "{\"labels\":{\"app\":\"web\"}}");
    fx_put(f, "Workload", "unrelated", "x-1", "{\"labels\":{\"app\":\"x\"},\"egress\":[\"./x\"]}");
    const char *who[4][2] = {{"shop", "web-1"}, {"bank", "pay-1"}, {"shop", "all-1"}, {"unrelated", "x-1"}};
    for (size_t i = 0; i < 4; i++) {
        x->p[i] = proxy(f, who[i][0], who[i][1]);
        x->s[i] = reted_snapshot_for(&f->r, x->p[i]);
    }
    assert_true(x->s[2]->all);
    for (size_t i = 0; i < 4; i++)
        for (size_t j = i + 1; j < 4; j++)
            assert_ptr_not_equal(x->s[i], x->s[j]);
}

/* Which of the four were dropped by the changes recorded since the last
 * sync, as "ABCD" letters; each dropped one is asked again (recompiled). */
static const char *recompiled(fixture *f, four *x)
{
    static char out[5];
    size_t n = 0;
    reted_scopes_sync(&f->r);
    for (size_t i = 0; i < 4; i++)
        if (!x->s[i]->cached) {
            out[n++] = (char)('A' + i);
            reted_snapshot_release(&f->r, x->s[i]);
            x->s[i] = reted_snapshot_for(&f->r, x->p[i]);
            assert_true(x->s[i]->cached);
        }
    out[n] = '\0';
    return out;
}

static void four_free(fixture *f, four *x)
{
    for (size_t i = 0; i < 4; i++) {
        reted_snapshot_release(&f->r, x->s[i]);
        free(x->p[i]);
    }
}

/* A change drops the snapshots that held the changed resource or whose
 * scope takes in its new version, and only those. */
static void test_recompile_set(void **state)
{
    fixture *f = *state;
    four x;
    four_scopes(f, &x);
    assert_string_equal(recompiled(f, &x), ""); /* nothing changed */

    fx_put(f, "Service", "db", "pg", "{\"selector\":{\"app\":\"pg\",\"tier\":\"1\"}}");
    assert_string_equal(recompiled(f, &x), "AC");
    /* bank/pay is a backend of A's route: A holds it */
    fx_put(f, "Service", "bank", "pay", "{\"selector\":{\"app\":\"pay\"},\"ports\":[]}");
    assert_string_equal(recompiled(f, &x), "ABC");
    /* an endpoint of bank/pay */
    fx_put(f, "Workload", "bank", "pay-2", "{\"labels\":{\"app\":\"pay\"}}");
    assert_string_equal(recompiled(f, &x), "ABC");
    /* a Workload no Service selects: nobody (a snapshot holds the
     * Workloads its Services select, even the whole mesh's) */
    fx_put(f, "Workload", "bank", "lonely", "{\"labels\":{\"app\":\"lonely\"}}");
    assert_string_equal(recompiled(f, &x), "");
    assert_null(strstr(keys(x.s[2]), "lonely"));
    /* D's own Service and Workload */
    fx_put(f, "Service", "unrelated", "x", "{\"selector\":{\"app\":\"x\"},\"ports\":[]}");
    assert_string_equal(recompiled(f, &x), "CD");
    /* a route attached to a Service outside A's scope, then moved into it */
    fx_put(f, "HTTPRoute", "db", "other-route", "{\"parentRefs\":[{\"name\":\"other\"}],\"rules\":[]}");
    assert_string_equal(recompiled(f, &x), "C");
    fx_put(f, "HTTPRoute", "db", "other-route", "{\"parentRefs\":[{\"name\":\"pg\"}]}");
    assert_string_equal(recompiled(f, &x), "AC");
    assert_non_null(strstr(keys(x.s[0]), "HTTPRoute db/other-route\n"));
    /* ...and out again: A held it */
    fx_put(f, "HTTPRoute", "db", "other-route", "{\"parentRefs\":[{\"name\":\"other\"}]}");
    assert_string_equal(recompiled(f, &x), "AC");
    assert_null(strstr(keys(x.s[0]), "HTTPRoute db/other-route\n"));
    /* policies: the namespace's own proxies, and everyone's for the root's */
    fx_put(f, "AuthorizationPolicy", "shop", "web-in", "{\"action\":\"DENY\"}");
    assert_string_equal(recompiled(f, &x), "AC");
    fx_put(f, "AuthorizationPolicy", "rete-system", "root", "{\"action\":\"DENY\"}");
    assert_string_equal(recompiled(f, &x), "ABCD");
    /* a DestinationRule follows its host */
    fx_put(f, "DestinationRule", "db", "pg", "{\"host\":\"pg.db\"}");
    assert_string_equal(recompiled(f, &x), "AC");
    /* the registry's own kind: nobody */
    fx_put(f, "WorkloadGroup", "shop", "web", "{\"labels\":{}}");
    assert_string_equal(recompiled(f, &x), "");
    /* a new Service: those whose egress names it or covers it */
    fx_put(f, "Service", "unrelated", "y", "{\"selector\":{\"app\":\"y\"}}");
    assert_string_equal(recompiled(f, &x), "C");
    /* a deleted one: those that held it */
    fx_del(f, "Service", "db", "other");
    assert_string_equal(recompiled(f, &x), "C");
    fx_del(f, "Service", "db", "pg");
    assert_string_equal(recompiled(f, &x), "AC");
    assert_null(strstr(keys(x.s[0]), "Service db/pg\n"));
    four_free(f, &x);
}

static const reted_text *entry_of(const reted_snapshot *s, const char *kind, const char *ns, const char *name);

/* A change that keeps its resource's shape (a route's weights, a
 * Workload's address) is patched into the snapshots that hold it, not
 * compiled: the patched snapshot is what a compile gives (same entries,
 * same hash), its delta carries those documents alone, and a change of
 * shape (a route's backends) is still compiled. */
static void test_shape_keeping_change_is_patched(void **state)
{
    fixture *f = *state;
    four x;
    four_scopes(f, &x);
    reted_snapshot *a0 = x.s[0];
    a0->refs++; /* A's proxy still holds it: its delta's base */
    uint64_t c0 = compiles(f), p0 = patches(f);
    fx_put(f, "HTTPRoute", "db", "pg-split",
           "{\"parentRefs\":[{\"name\":\"pg\"}],\"rules\":[{\"backendRefs\":[{\"name\":\"pg\",\"weight\":90},"
           "{\"name\":\"pay\",\"namespace\":\"bank\",\"weight\":10}]}]}");
    fx_put(f, "Workload", "db", "pg-1", "{\"labels\":{\"app\":\"pg\"},\"address\":\"10.0.0.9\"}");
    assert_string_equal(recompiled(f, &x), "AC");
    assert_int_equal(compiles(f), c0);
    assert_int_equal(patches(f), p0 + 2);
    assert_non_null(strstr(entry_of(x.s[0], "HTTPRoute", "db", "pg-split")->data, "\"weight\":90"));
    assert_non_null(strstr(entry_of(x.s[2], "Workload", "db", "pg-1")->data, "10.0.0.9"));
    assert_int_not_equal(x.s[0]->hash, a0->hash);
    size_t len;
    const char *delta = reted_snapshot_delta(&f->r, x.s[0], a0, &len);
    assert_non_null(strstr(delta, "\"name\":\"pg-split\""));
    assert_non_null(strstr(delta, "\"name\":\"pg-1\""));
    assert_null(strstr(delta, "\"kind\":\"Service\""));
    assert_non_null(strstr(delta, "\"deletes\":[]"));
    assert_null(strstr(delta, "trustBundle")); /* the base's bundle: the proxy has it */
    reted_snapshot *whole_base = x.s[0];
    assert_non_null(strstr(reted_snapshot_body(&f->r, whole_base)->data, "\"trustBundle\":\"-----BEGIN"));

    /* what compiling everything from the store gives */
    uint64_t hash[4];
    char held[4][4096];
    for (size_t i = 0; i < 4; i++) {
        hash[i] = x.s[i]->hash;
        snprintf(held[i], sizeof held[i], "%s", keys(x.s[i]));
    }
    reted_changed_key(&f->r, NULL, NULL, NULL);
    assert_string_equal(recompiled(f, &x), "ABCD");
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(x.s[i]->hash, hash[i]);
        assert_string_equal(keys(x.s[i]), held[i]);
    }

    c0 = compiles(f);
    p0 = patches(f);
    fx_put(f, "HTTPRoute", "db", "pg-split", "{\"parentRefs\":[{\"name\":\"pg\"}],\"rules\":[{\"backendRefs\":[{\"name\":\"pg\"}]}]}");
    assert_string_equal(recompiled(f, &x), "AC");
    assert_int_equal(compiles(f), c0 + 2);
    assert_int_equal(patches(f), p0);
    assert_null(strstr(keys(x.s[0]), "Service bank/pay\n")); /* no longer a backend */
    reted_snapshot_release(&f->r, a0);
    four_free(f, &x);
}

/* After each step, the four snapshots as patched equal the four compiled
 * from the store (same entries, same hash); returns the compiles the step
 * itself took. */
static uint64_t same_as_compiled(fixture *f, four *x, const char *moved)
{
    uint64_t c0 = compiles(f);
    assert_string_equal(recompiled(f, x), moved);
    uint64_t step = compiles(f) - c0;
    uint64_t hash[4];
    char held[4][4096];
    for (size_t i = 0; i < 4; i++) {
        hash[i] = x->s[i]->hash;
        snprintf(held[i], sizeof held[i], "%s", keys(x->s[i]));
    }
    reted_changed_key(&f->r, NULL, NULL, NULL);
    assert_string_equal(recompiled(f, x), "ABCD");
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(keys(x->s[i]), held[i]);
        assert_int_equal(x->s[i]->hash, hash[i]);
    }
    return step;
}

/* A Workload is an endpoint: created, relabelled, marked not ready or
 * deleted, it is put in, moved, rewritten or taken out of the snapshots of
 * the Services that select it, without compiling any, and the result is
 * what a compile gives. Past RETED_MEMBER_PATCH_MAX Workloads in one sync
 * they are compiled again. */
static void test_endpoint_changes_are_patched(void **state)
{
    fixture *f = *state;
    four x;
    four_scopes(f, &x);
    uint64_t p0 = patches(f);
    fx_put(f, "Workload", "db", "pg-2", "{\"labels\":{\"app\":\"pg\"},\"address\":\"10.0.0.2\"}");
    assert_int_equal(same_as_compiled(f, &x, "AC"), 0); /* A routes to db/pg; C is the whole mesh */
    assert_non_null(strstr(keys(x.s[0]), "Workload db/pg-2\n"));
    fx_put(f, "Workload", "db", "pg-2", "{\"labels\":{\"app\":\"other\"},\"address\":\"10.0.0.2\"}");
    assert_int_equal(same_as_compiled(f, &x, "AC"), 0); /* out of A's (db/other is not in its scope), still C's */
    assert_null(strstr(keys(x.s[0]), "Workload db/pg-2\n"));
    assert_non_null(strstr(keys(x.s[2]), "Workload db/pg-2\n"));
    fx_put(f, "Workload", "db", "pg-2", "{\"labels\":{\"app\":\"pg\"},\"address\":\"10.0.0.2\"}");
    assert_true(reted_workload_set_ready(&f->r, "db", "pg-1", false));
    reted_changed_key(&f->r, "Workload", "db", "pg-1");
    fx_put(f, "Workload", "bank", "pay-2", "{\"labels\":{\"app\":\"pay\"}}"); /* B serves bank/pay */
    assert_int_equal(same_as_compiled(f, &x, "ABC"), 0);
    assert_non_null(strstr(entry_of(x.s[0], "Workload", "db", "pg-1")->data, "\"ready\":false"));
    fx_del(f, "Workload", "db", "pg-2");
    fx_del(f, "Workload", "bank", "pay-2");
    assert_int_equal(same_as_compiled(f, &x, "ABC"), 0);
    assert_null(strstr(keys(x.s[2]), "Workload db/pg-2\n"));
    assert_true(patches(f) > p0);
    /* a burst: compiled again, the same result */
    for (int i = 0; i < RETED_MEMBER_PATCH_MAX + 1; i++) {
        char name[32];
        snprintf(name, sizeof name, "burst-%d", i);
        fx_put(f, "Workload", "db", name, "{\"labels\":{\"app\":\"pg\"}}");
    }
    assert_int_equal(same_as_compiled(f, &x, "AC"), 2);
    reted_workload_ready_free(&f->r);
    four_free(f, &x);
}

/* A proxy's own Workload decides its scope: changing its egress or labels
 * moves it to another snapshot; the old scope is left to its other holders. */
static void test_workload_change_moves_its_proxy(void **state)
{
    fixture *f = *state;
    four x;
    four_scopes(f, &x);
    fx_put(f, "Workload", "shop", "web-1", "{\"labels\":{\"app\":\"web\"},\"egress\":[\"unrelated/x\"]}");
    assert_string_equal(recompiled(f, &x), "AC");
    const char *k = keys(x.s[0]);
    assert_non_null(strstr(k, "Service unrelated/x\n"));
    assert_null(strstr(k, "Service db/pg\n"));
    /* a MeshConfig change reaches every proxy (it is in every snapshot) */
    fx_put(f, "MeshConfig", "rete-system", "mesh", "{\"defaultEgress\":[\"./*\"]}");
    assert_string_equal(recompiled(f, &x), "ABCD");
    assert_false(x.s[2]->all); /* its Workload names no egress: the default now */
    four_free(f, &x);
}

/* The text of one entry of a snapshot, NULL when it holds no such key. */
static const reted_text *entry_of(const reted_snapshot *s, const char *kind, const char *ns, const char *name)
{
    for (size_t i = 0; i < s->n_entries; i++) {
        const reted_text *d = s->entries[i].doc;
        if (!strcmp(d->kind, kind) && !strcmp(d->ns, ns) && !strcmp(d->name, name))
            return d;
    }
    return NULL;
}

/* A not-ready Workload stays in every snapshot that holds it, its own
 * proxy's too, with spec.ready false and the same version; the delta to
 * it carries that one document, and ready again takes the mark away. */
static void test_not_ready_workload_is_marked(void **state)
{
    fixture *f = *state;
    small_mesh(f);
    reted_proxy *web = proxy(f, "shop", "web-1"), *pg = proxy(f, "db", "pg-1");
    reted_snapshot *w0 = reted_snapshot_for(&f->r, web), *p0 = reted_snapshot_for(&f->r, pg);
    const reted_text *before = entry_of(w0, "Workload", "db", "pg-1");
    assert_non_null(before);
    assert_null(strstr(before->data, "\"ready\""));

    assert_true(reted_workload_set_ready(&f->r, "db", "pg-1", false));
    assert_false(reted_workload_set_ready(&f->r, "db", "pg-1", false)); /* no change */
    reted_changed_key(&f->r, "Workload", "db", "pg-1");
    reted_snapshot *w1 = reted_snapshot_for(&f->r, web), *p1 = reted_snapshot_for(&f->r, pg);
    assert_ptr_not_equal(w1, w0);
    assert_int_not_equal(w1->hash, w0->hash);
    for (int i = 0; i < 2; i++) {
        const reted_text *d = entry_of(i ? p1 : w1, "Workload", "db", "pg-1");
        assert_non_null(d); /* kept, its own proxy's snapshot included */
        assert_int_equal(d->version, before->version);
        json_t *doc = json_loadb(d->data, d->len, 0, NULL);
        assert_true(json_is_false(json_object_get(json_object_get(doc, "spec"), "ready")));
        json_decref(doc);
    }
    size_t len;
    const char *delta = reted_snapshot_delta(&f->r, w1, w0, &len);
    assert_non_null(strstr(delta, "\"upserts\":[{\"kind\":\"Workload\",\"namespace\":\"db\",\"name\":\"pg-1\""));
    assert_non_null(strstr(delta, "\"ready\":false"));
    assert_null(strstr(delta, "Service")); /* nothing else changed */

    assert_true(reted_workload_set_ready(&f->r, "db", "pg-1", true));
    reted_changed_key(&f->r, "Workload", "db", "pg-1");
    reted_snapshot *w2 = reted_snapshot_for(&f->r, web);
    assert_int_equal(w2->hash, w0->hash);
    assert_null(strstr(entry_of(w2, "Workload", "db", "pg-1")->data, "\"ready\""));
    delta = reted_snapshot_delta(&f->r, w2, w1, &len);
    assert_non_null(strstr(delta, "\"name\":\"pg-1\""));
    reted_snapshot *all[] = {w0, p0, w1, p1, w2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        reted_snapshot_release(&f->r, all[i]);
    reted_workload_ready_free(&f->r);
    free(web);
    free(pg);
}

/* A change not given by key, and a CA rotation step, drop every snapshot. */
static void test_everything_recompiles(void **state)
{
    fixture *f = *state;
    four x;
    four_scopes(f, &x);
    reted_changed_key(&f->r, NULL, NULL, NULL);
    assert_string_equal(recompiled(f, &x), "ABCD");
    f->r.ca_generation++;
    assert_string_equal(recompiled(f, &x), "ABCD");
    four_free(f, &x);
}

/* The index a hello reads without a sync: only for keys no pending change
 * touched (a pending one means "read the store"), and never before it is
 * built or after a change not given by key. */
static void test_clean_index_for_a_read(void **state)
{
    fixture *f = *state;
    small_mesh(f);
    assert_null(reted_index_clean(&f->r, "Workload", "db", "pg-1")); /* not built */
    reted_scopes_sync(&f->r); /* builds it */
    assert_ptr_equal(reted_index_clean(&f->r, "Workload", "db", "pg-1"), &f->r.index);
    reted_changed_key(&f->r, "Workload", "db", "pg-1");
    assert_null(reted_index_clean(&f->r, "Workload", "db", "pg-1"));
    assert_null(reted_index_clean(&f->r, "Workload", "db", NULL));   /* a list of db's Workloads */
    assert_non_null(reted_index_clean(&f->r, "Workload", "db", "other-1"));
    assert_non_null(reted_index_clean(&f->r, "Workload", "shop", NULL));
    assert_non_null(reted_index_clean(&f->r, "WorkloadGroup", "db", NULL));
    reted_scopes_sync(&f->r); /* the change applied: clean again */
    assert_ptr_equal(reted_index_clean(&f->r, "Workload", "db", "pg-1"), &f->r.index);
    reted_changed_key(&f->r, NULL, NULL, NULL);
    assert_null(reted_index_clean(&f->r, "MeshConfig", NULL, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scope_of_a_proxy, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_default_egress_then_everything, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_same_scope_shares_a_snapshot, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_label_order_is_one_scope, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_recompile_set, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_shape_keeping_change_is_patched, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_changes_are_patched, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_workload_change_moves_its_proxy, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_everything_recompiles, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_not_ready_workload_is_marked, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_clean_index_for_a_read, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
