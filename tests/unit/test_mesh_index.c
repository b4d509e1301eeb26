/* Unit tests for src/control/mesh_index.c: the index of the store the
 * compiler scopes by (what it parses of each kind, its order, refreshing one
 * key, the Workloads a Service selects), on a real SQLite store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "reted_fixture.h"

/* The packed strings as one "a,b,c" line, to compare in one assert. */
static const char *joined(const reted_strs *x)
{
    static char buf[1024];
    buf[0] = '\0';
    for (const char *s = reted_strs_first(x); s; s = reted_strs_next(x, s)) {
        if (buf[0])
            strcat(buf, ",");
        strcat(buf, s);
    }
    return buf;
}

static const reted_ires *get(fixture *f, const char *kind, const char *ns, const char *name)
{
    const reted_ires *e = reted_index_get(&f->r.index, kind, ns, name);
    if (!e)
        fail_msg("%s %s/%s not indexed", kind, ns, name);
    return e;
}

/* Each kind's scoping fields, parsed once: a Service's selector, a
 * Workload's labels and egress, a route's parents then backends (the
 * route's namespace when a ref names none, each once; a RequestMirror's
 * backendRef is one), a DestinationRule's
 * host as ns/name in every spelling the loader resolves, MeshConfig's
 * defaultEgress and certificate lifetime. */
static void test_fields_per_kind(void **state)
{
    fixture *f = *state;
    fx_put(f, "Service", "shop", "cart", "{\"selector\":{\"app\":\"cart\"}}");
    fx_put(f, "Workload", "shop", "cart-1",
           "{\"labels\":{\"v\":\"1\",\"app\":\"cart\"},\"egress\":[\"./*\",\"db/pg\"]}");
    fx_put(f, "HTTPRoute", "shop", "r",
           "{\"parentRefs\":[{\"name\":\"cart\"},{\"name\":\"pay\",\"namespace\":\"bank\"}],"
           "\"rules\":[{\"backendRefs\":[{\"name\":\"cart-v2\"},{\"name\":\"cart\"}]},"
           "{\"matches\":[],\"backendRefs\":[{\"name\":\"ledger\",\"namespace\":\"bank\"}],"
           "\"filters\":[{\"type\":\"RequestMirror\",\"requestMirror\":{\"backendRef\":"
           "{\"name\":\"shadow\",\"port\":80}}}]}]}");
    fx_put(f, "DestinationRule", "shop", "d1", "{\"host\":\"cart\"}");
    fx_put(f, "DestinationRule", "shop", "d2", "{\"host\":\"Pay.Bank.svc.cluster.local.\"}");
    fx_put(f, "MeshConfig", "rete-system", "mesh",
           "{\"defaultEgress\":[\"./*\",\"rete-system/*\"],\"workloadCertificateTTL\":\"2h\"}");
    fx_put(f, "AuthorizationPolicy", "shop", "deny", "{\"action\":\"DENY\"}");
    assert_int_equal(reted_index_build(&f->r.index, f->r.store), RETE_OK);
    assert_true(f->r.index.built);

    const reted_ires *svc = get(f, "Service", "shop", "cart");
    assert_int_equal(svc->k, RETE_KC_SERVICE);
    assert_string_equal(joined(&svc->kv), "app,cart");
    const reted_ires *wl = get(f, "Workload", "shop", "cart-1");
    assert_string_equal(joined(&wl->kv), "app,cart,v,1"); /* by key, whatever the document's order */
    assert_string_equal(joined(&wl->refs), "./*,db/pg");
    const reted_ires *route = get(f, "HTTPRoute", "shop", "r");
    assert_int_equal(route->k, RETE_KC_ROUTE);
    assert_int_equal(route->n_parents, 2);
    assert_string_equal(joined(&route->refs), "shop/cart,bank/pay,shop/cart-v2,bank/ledger,shop/shadow");
    assert_string_equal(joined(&get(f, "DestinationRule", "shop", "d1")->refs), "shop/cart");
    assert_string_equal(joined(&get(f, "DestinationRule", "shop", "d2")->refs), "bank/pay");
    const reted_ires *mc = get(f, "MeshConfig", "rete-system", "mesh");
    assert_string_equal(joined(&mc->refs), "./*,rete-system/*");
    assert_int_equal(mc->cert_ttl_ms, 2 * 3600 * 1000);
    const reted_ires *ap = get(f, "AuthorizationPolicy", "shop", "deny");
    assert_int_equal(ap->k, RETE_KC_POLICY);
    assert_int_equal(ap->refs.n, 0);
    /* the document is kept as the store has it, with its key */
    assert_non_null(strstr(ap->json->data, "\"DENY\""));
    assert_string_equal(ap->json->kind, "AuthorizationPolicy");
    assert_string_equal(ap->json->ns, "shop");
    assert_string_equal(ap->json->name, "deny");
    assert_int_equal(ap->json->version, ap->version);
}

/* The index lists as the store does (kind, namespace, name, bytewise);
 * range finds a kind's run, in one namespace or all. */
static void test_order_and_range(void **state)
{
    fixture *f = *state;
    const char *names[][2] = {{"b", "z"}, {"a", "y"}, {"b", "a"}, {"a", "b"}, {"B", "q"}};
    for (size_t i = 0; i < 5; i++)
        fx_put(f, "Service", names[i][0], names[i][1], "{}");
    fx_put(f, "HTTPRoute", "a", "r", "{}");
    fx_put(f, "Workload", "a", "w", "{}");
    assert_int_equal(reted_index_build(&f->r.index, f->r.store), RETE_OK);
    reted_index *ix = &f->r.index;
    for (size_t i = 1; i < ix->n; i++)
        assert_true(reted_ires_cmp(ix->v[i - 1], ix->v[i]) < 0);
    size_t first, end;
    reted_index_range(ix, "Service", NULL, &first, &end);
    assert_int_equal(end - first, 5);
    assert_string_equal(ix->v[first]->ns, "B");
    reted_index_range(ix, "Service", "b", &first, &end);
    assert_int_equal(end - first, 2);
    assert_string_equal(ix->v[first]->name, "a");
    assert_string_equal(ix->v[first + 1]->name, "z");
    reted_index_range(ix, "Service", "c", &first, &end);
    assert_int_equal(end, first);
    reted_index_range(ix, "TCPRoute", NULL, &first, &end);
    assert_int_equal(end, first);
    assert_int_equal(reted_index_position(ix, "Service", "q", "q"), SIZE_MAX);
    size_t at = reted_index_position(ix, "Workload", "a", "w");
    assert_true(at != SIZE_MAX);
    assert_string_equal(ix->v[at]->kind, "Workload");
}

/* Refreshing one key follows the store: a new resource is inserted in
 * order, a changed one re-parsed, a deleted one removed; a Service or
 * Workload change bumps the generation (endpoints are recomputed), a
 * MeshConfig change the mesh generation; a route change neither. */
static void test_refresh_one_key(void **state)
{
    fixture *f = *state;
    reted_index *ix = &f->r.index;
    fx_put(f, "Service", "shop", "cart", "{\"selector\":{\"app\":\"cart\"}}");
    fx_put(f, "Workload", "shop", "cart-1", "{\"labels\":{\"app\":\"cart\"}}");
    fx_put(f, "Workload", "shop", "other", "{\"labels\":{\"app\":\"other\"}}");
    fx_put(f, "Workload", "bank", "cart-x", "{\"labels\":{\"app\":\"cart\"}}"); /* not its namespace */
    assert_int_equal(reted_index_build(ix, f->r.store), RETE_OK);
    reted_ires *svc = (reted_ires *)get(f, "Service", "shop", "cart");
    size_t n;
    reted_ires *const *ep = reted_index_endpoints(ix, svc, &n);
    assert_int_equal(n, 1);
    assert_string_equal(ep[0]->name, "cart-1");

    uint64_t gen = ix->gen, mesh_gen = ix->mesh_gen;
    fx_put(f, "Workload", "shop", "cart-2", "{\"labels\":{\"app\":\"cart\",\"v\":\"2\"}}");
    assert_int_equal(reted_index_refresh(ix, f->r.store, "Workload", "shop", "cart-2"), RETE_OK);
    assert_true(ix->gen > gen);
    ep = reted_index_endpoints(ix, svc, &n);
    assert_int_equal(n, 2);
    for (size_t i = 1; i < ix->n; i++)
        assert_true(reted_ires_cmp(ix->v[i - 1], ix->v[i]) < 0);

    /* relabelled out of the selector */
    fx_put(f, "Workload", "shop", "cart-1", "{\"labels\":{\"app\":\"gone\"}}");
    assert_int_equal(reted_index_refresh(ix, f->r.store, "Workload", "shop", "cart-1"), RETE_OK);
    ep = reted_index_endpoints(ix, svc, &n);
    assert_int_equal(n, 1);
    assert_string_equal(ep[0]->name, "cart-2");

    gen = ix->gen;
    fx_put(f, "HTTPRoute", "shop", "r", "{\"parentRefs\":[{\"name\":\"cart\"}]}");
    assert_int_equal(reted_index_refresh(ix, f->r.store, "HTTPRoute", "shop", "r"), RETE_OK);
    assert_int_equal(ix->gen, gen);
    assert_int_equal(ix->mesh_gen, mesh_gen);
    assert_string_equal(joined(&get(f, "HTTPRoute", "shop", "r")->refs), "shop/cart");

    fx_put(f, "MeshConfig", "rete-system", "mesh", "{\"defaultEgress\":[\"./*\"]}");
    assert_int_equal(reted_index_refresh(ix, f->r.store, "MeshConfig", "rete-system", "mesh"), RETE_OK);
    assert_true(ix->mesh_gen > mesh_gen);

    size_t before = ix->n;
    fx_del(f, "Workload", "shop", "cart-2");
    assert_int_equal(reted_index_refresh(ix, f->r.store, "Workload", "shop", "cart-2"), RETE_OK);
    assert_int_equal(ix->n, before - 1);
    assert_null(reted_index_get(ix, "Workload", "shop", "cart-2"));
    ep = reted_index_endpoints(ix, svc, &n);
    assert_int_equal(n, 0);
    /* refreshing a key that is in neither is nothing */
    assert_int_equal(reted_index_refresh(ix, f->r.store, "Service", "nowhere", "x"), RETE_OK);
    assert_int_equal(ix->n, before - 1);
}

/* A selector selects when every pair is among the labels; an empty one
 * selects nothing (Service semantics). */
static void test_selects(void **state)
{
    (void)state;
    reted_strs sel = {0}, labels = {0}, none = {0};
    reted_strs_add(&labels, "app", 3);
    reted_strs_add(&labels, "web", 3);
    reted_strs_add(&labels, "v", 1);
    reted_strs_add(&labels, "1", 1);
    assert_false(reted_selects(&none, &labels));
    reted_strs_add(&sel, "v", 1);
    reted_strs_add(&sel, "1", 1);
    assert_true(reted_selects(&sel, &labels));
    reted_strs_add(&sel, "app", 3);
    reted_strs_add(&sel, "db", 2);
    assert_false(reted_selects(&sel, &labels));
    assert_false(reted_selects(&sel, &none));
    free(sel.p);
    free(labels.p);
}

/* Regression: a DestinationRule host is read as the proxy's loader reads it
 * (cfg_service_by_host): only a ".svc" or ".svc.cluster.local" suffix is
 * dropped. "pay.svc-team" names Service pay of namespace svc-team; reted
 * cut it at the first ".svc" and filed the rule under the rule's own
 * namespace, so proxies routing to svc-team/pay never got it. */
static void test_dr_host_in_namespace_starting_with_svc(void **state)
{
    fixture *f = *state;
    fx_put(f, "DestinationRule", "shop", "a", "{\"host\":\"pay.svc-team\"}");
    fx_put(f, "DestinationRule", "shop", "b", "{\"host\":\"pay.svcbank.svc\"}");
    fx_put(f, "DestinationRule", "shop", "c", "{\"host\":\"pay.svc-team.svc.cluster.local\"}");
    fx_put(f, "DestinationRule", "shop", "d", "{\"host\":\"pay.bank.SVC.Cluster.Local.\"}");
    assert_int_equal(reted_index_build(&f->r.index, f->r.store), RETE_OK);
    assert_string_equal(joined(&get(f, "DestinationRule", "shop", "a")->refs), "svc-team/pay");
    assert_string_equal(joined(&get(f, "DestinationRule", "shop", "b")->refs), "svcbank/pay");
    assert_string_equal(joined(&get(f, "DestinationRule", "shop", "c")->refs), "svc-team/pay");
    assert_string_equal(joined(&get(f, "DestinationRule", "shop", "d")->refs), "bank/pay");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fields_per_kind, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_order_and_range, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_refresh_one_key, fx_setup, fx_teardown),
        cmocka_unit_test(test_selects),
        cmocka_unit_test_setup_teardown(test_dr_host_in_namespace_starting_with_svc, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
