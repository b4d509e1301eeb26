/* Unit tests for src/control/resources.c: documents parsed from a stream as
 * the API receives them, and validation with the proxy's own loader (a bad
 * document refused whole, naming its field path; a change that breaks a
 * stored resource, a delete that would leave a reference dangling,
 * refused), on a fixture reted with a real SQLite store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "reted_fixture.h"
#include "resources.h"

#define SVC(name)                                                                                  \
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: " name ", namespace: demo}\n"            \
    "spec: {selector: {app: " name "}, ports: [{name: http, port: 80}]}\n"
#define ROUTE(name, parent, backend)                                                               \
    "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"                             \
    "metadata: {name: " name ", namespace: demo}\n"                                                \
    "spec: {parentRefs: [{kind: Service, name: " parent "}], "                                     \
    "rules: [{backendRefs: [{name: " backend ", port: 80}]}]}\n"

static reted_doc *parse(const char *yaml, size_t *n)
{
    reted_doc *docs = NULL;
    json_t *err = NULL;
    if (reted_parse_docs(yaml, strlen(yaml), "t.yaml", &docs, n, &err) != 0) {
        char *s = json_dumps(err, JSON_COMPACT);
        fail_msg("parse: %s", s);
    }
    return docs;
}

/* Validate as the API does, both ways: with the index (incremental: the
 * stored resources the change can break or needs) and against the whole
 * store; the two answers must be the same. */
static json_t *validate_docs(fixture *f, const reted_doc *docs, size_t n, const char *source)
{
    json_t *whole = reted_validate(&f->r, docs, n, source, NULL);
    if (!f->r.index.built)
        reted_scopes_sync(&f->r);
    const reted_index *ix = reted_index_current(&f->r);
    assert_non_null(ix);
    json_t *picked = reted_validate(&f->r, docs, n, source, ix);
    if (!(whole == NULL && picked == NULL) && !(whole && picked && json_equal(whole, picked))) {
        char *a = whole ? json_dumps(whole, JSON_COMPACT) : NULL, *b = picked ? json_dumps(picked, JSON_COMPACT) : NULL;
        fail_msg("whole store: %s\nincremental: %s", a ? a : "valid", b ? b : "valid");
    }
    json_decref(picked);
    return whole;
}

/* Store a stream as an apply would (after validating it). */
static void store(fixture *f, const char *yaml)
{
    size_t n;
    reted_doc *docs = parse(yaml, &n);
    json_t *verr = validate_docs(f, docs, n, "t.yaml");
    if (verr) {
        char *s = json_dumps(verr, JSON_COMPACT);
        fail_msg("stored resources must be valid: %s", s);
    }
    for (size_t i = 0; i < n; i++) {
        char *json = json_dumps(docs[i].json, JSON_COMPACT);
        rete_store_write w = {docs[i].kind, docs[i].ns, docs[i].name, json, 0};
        size_t failed;
        assert_int_equal(f->r.store->ops->apply(f->r.store, &w, 1, &failed), RETE_OK);
        reted_changed_key(&f->r, docs[i].kind, docs[i].ns, docs[i].name);
        free(json);
    }
    reted_docs_free(docs, n);
}

/* The one detail of an error object, as "error|document|path|reason". */
static const char *detail(json_t *e)
{
    static char buf[1024];
    assert_non_null(e);
    json_t *d = json_array_get(json_object_get(e, "details"), 0);
    snprintf(buf, sizeof buf, "%s|%lld|%s|%s", json_string_value(json_object_get(e, "error")),
             (long long)json_integer_value(json_object_get(d, "document")),
             json_string_value(json_object_get(d, "path")), json_string_value(json_object_get(d, "reason")));
    json_decref(e);
    return buf;
}

static json_t *validate(fixture *f, const char *yaml)
{
    size_t n;
    reted_doc *docs = parse(yaml, &n);
    json_t *e = validate_docs(f, docs, n, "t.yaml");
    reted_docs_free(docs, n);
    return e;
}

static json_t *parse_error(const char *yaml)
{
    reted_doc *docs = NULL;
    size_t n = 0;
    json_t *err = NULL;
    assert_int_equal(reted_parse_docs(yaml, strlen(yaml), "t.yaml", &docs, &n, &err), RETE_EINVAL);
    assert_null(docs);
    return err;
}

/* ---- parsing ---- */

/* Documents keep their place in the stream (empty ones counted, as the
 * proxy's loader counts them); kinds are canonical; the namespace defaults;
 * a resourceVersion becomes the expected version and leaves the document. */
static void test_parse_docs(void **state)
{
    (void)state;
    size_t n;
    reted_doc *docs = parse("---\n---\napiVersion: v1\nkind: svc\n"
                            "metadata: {name: a, resourceVersion: \"17\", creationTimestamp: x}\n"
                            "spec: {}\n---\n---\napiVersion: security.istio.io/v1\nkind: ap\n"
                            "metadata: {name: p, namespace: shop}\nspec: {}\n",
                            &n);
    assert_int_equal(n, 2);
    assert_string_equal(docs[0].kind, "Service");
    assert_string_equal(docs[0].ns, "default");
    assert_string_equal(docs[0].name, "a");
    assert_int_equal(docs[0].expected_version, 17);
    assert_int_equal(docs[0].index, 1);
    json_t *meta = json_object_get(docs[0].json, "metadata");
    assert_null(json_object_get(meta, "resourceVersion"));
    assert_null(json_object_get(meta, "creationTimestamp"));
    assert_string_equal(json_string_value(json_object_get(docs[0].json, "kind")), "Service");
    assert_string_equal(docs[1].kind, "AuthorizationPolicy");
    assert_string_equal(docs[1].ns, "shop");
    assert_int_equal(docs[1].index, 3);
    reted_docs_free(docs, n);
}

static void test_parse_errors_name_document_and_field(void **state)
{
    (void)state;
    assert_string_equal(detail(parse_error(SVC("a") "---\nkind: Nope\nmetadata: {name: x}\n")),
                        "invalid resource|1|kind|unknown kind Nope");
    assert_string_equal(detail(parse_error(SVC("a") "---\napiVersion: v1\nmetadata: {name: x}\n")),
                        "invalid resource|1|kind|required");
    assert_string_equal(detail(parse_error("---\nkind: Service\nmetadata: {namespace: x}\n")),
                        "invalid resource|0|metadata.name|required");
    assert_string_equal(detail(parse_error("---\nkind: Service\n")), "invalid resource|0|metadata|required");
    assert_string_equal(detail(parse_error("---\n- a\n- b\n")),
                        "invalid resource|0||a resource must be a mapping");
    json_t *e = parse_error("---\nkind: [unclosed\n");
    assert_string_equal(json_string_value(json_object_get(e, "error")), "invalid YAML");
    json_decref(e);
}

/* The kinds the API accepts by every name retectl accepts (kinds.c). */
static void test_kind_names(void **state)
{
    (void)state;
    const char *names[][2] = {{"svc", "Service"},         {"services", "Service"},
                              {"Service", "Service"},     {"httproutes", "HTTPRoute"},
                              {"ap", "AuthorizationPolicy"}, {"mc", "MeshConfig"},
                              {"dr", "DestinationRule"},  {"wl", "Workload"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *c = reted_kind_canonical(names[i][0]);
        if (!c || strcmp(c, names[i][1]) != 0)
            fail_msg("%s: %s, want %s", names[i][0], c ? c : "NULL", names[i][1]);
    }
    assert_null(reted_kind_canonical("nope"));
    assert_null(reted_kind_canonical(""));
}

/* ---- validation ---- */

/* One bad field refuses the whole stream, naming the document (its place
 * in the stream the user sent) and the field path. */
static void test_bad_document_refused_whole(void **state)
{
    fixture *f = *state;
    assert_null(validate(f, SVC("a") SVC("b")));
    assert_string_equal(detail(validate(f, SVC("a") "---\n" SVC("b") "---\napiVersion: v1\nkind: Service\n"
                                        "metadata: {name: c, namespace: demo}\n"
                                        "spec: {ports: [{name: http, port: 0}]}\n")),
                        "invalid resource|3|spec.ports[0].port|must be an integer between 1 and 65535");
    assert_string_equal(detail(validate(f, SVC("a") "---\napiVersion: v1\nkind: Service\n"
                                        "metadata: {name: c, namespace: demo}\n"
                                        "spec: {colour: blue}\n")),
                        "invalid resource|1|spec.colour|unknown field");
    /* a reference to what neither the stream nor the store holds */
    json_t *e = validate(f, SVC("a") ROUTE("r", "a", "missing"));
    const char *d = detail(e);
    assert_non_null(strstr(d, "invalid resource|1|spec.rules[0].backendRefs[0]"));
    assert_non_null(strstr(d, "missing"));
    /* the same with what the store holds */
    store(f, SVC("missing"));
    assert_null(validate(f, SVC("a") ROUTE("r", "a", "missing")));
}

/* A change that breaks a stored resource is refused, naming that one. */
static void test_change_breaking_stored_refused(void **state)
{
    fixture *f = *state;
    store(f, SVC("a") SVC("b") ROUTE("r", "a", "b"));
    const char *d = detail(validate(f, "---\napiVersion: v1\nkind: Service\n"
                                       "metadata: {name: b, namespace: demo}\n"
                                       "spec: {selector: {app: b}, ports: [{name: http, port: 81}]}\n"));
    assert_non_null(strstr(d, "change conflicts with stored resources|-1|"));
    assert_non_null(strstr(d, "(in stored HTTPRoute demo/r, which this change breaks)"));
    /* changing the route with it in the same stream is fine */
    assert_null(validate(f, "---\napiVersion: v1\nkind: Service\n"
                            "metadata: {name: b, namespace: demo}\n"
                            "spec: {selector: {app: b}, ports: [{name: http, port: 81}]}\n"
                            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
                            "metadata: {name: r, namespace: demo}\n"
                            "spec: {parentRefs: [{kind: Service, name: a}], "
                            "rules: [{backendRefs: [{name: b, port: 81}]}]}\n"));
}

/* The loader's rules across documents of other kinds, checked with what the
 * change needs from the store: one DestinationRule per Service, one
 * MeshConfig. */
static void test_one_per_service_and_mesh(void **state)
{
    fixture *f = *state;
    store(f, SVC("a") "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                      "metadata: {name: d1, namespace: demo}\nspec: {host: a}\n"
                      "---\napiVersion: rete.dev/v1alpha1\nkind: MeshConfig\n"
                      "metadata: {name: mesh, namespace: rete-system}\nspec: {}\n");
    const char *d = detail(validate(f, "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                                       "metadata: {name: d2, namespace: demo}\nspec: {host: a.demo.svc}\n"));
    assert_non_null(strstr(d, "|spec.host|"));
    d = detail(validate(f, "---\napiVersion: rete.dev/v1alpha1\nkind: MeshConfig\n"
                           "metadata: {name: other, namespace: rete-system}\nspec: {}\n"));
    assert_non_null(strstr(d, "MeshConfig"));
    /* replacing the one there is fine */
    assert_null(validate(f, "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                            "metadata: {name: d1, namespace: demo}\nspec: {host: a.demo}\n"));
}

/* A delete (a document with no JSON, as the API's DELETE makes it) that
 * would leave a reference dangling is refused; deleting the referrer
 * first, or both at once, is not. */
static void test_dangling_delete_refused(void **state)
{
    fixture *f = *state;
    store(f, SVC("a") SVC("b") ROUTE("r", "a", "b"));
    reted_doc del_b = {NULL, "Service", "demo", "b", 0, 0};
    const char *d = detail(validate_docs(f, &del_b, 1, "delete"));
    assert_string_equal(d, "change conflicts with stored resources|-1|spec.rules[0].backendRefs[0].name|"
                           "unknown service demo/b (in stored HTTPRoute demo/r, which this change breaks)");
    reted_doc del_a = {NULL, "Service", "demo", "a", 0, 0};
    d = detail(validate_docs(f, &del_a, 1, "delete"));
    assert_non_null(strstr(d, "spec.parentRefs[0]"));
    reted_doc del_r = {NULL, "HTTPRoute", "demo", "r", 0, 0};
    assert_null(validate_docs(f, &del_r, 1, "delete"));
    reted_doc both[] = {del_r, del_b};
    assert_null(validate_docs(f, both, 2, "delete"));
    /* deleting what is not stored breaks nothing (the store says 404) */
    reted_doc del_x = {NULL, "Service", "demo", "x", 0, 0};
    assert_null(validate_docs(f, &del_x, 1, "delete"));
}

/* A Workload a proxy registers is checked alone: its own schema, not the
 * store (nothing can reference it by name). */
static void test_validate_alone(void **state)
{
    fixture *f = *state;
    store(f, SVC("a") ROUTE("r", "a", "a"));
    size_t n;
    reted_doc *docs = parse("---\napiVersion: networking.rete.dev/v1alpha1\nkind: Workload\n"
                            "metadata: {name: w, namespace: demo}\nspec: {address: 10.0.0.1, labels: {app: a}}\n",
                            &n);
    assert_null(reted_validate_alone(&f->r, &docs[0], "register"));
    reted_docs_free(docs, n);
    docs = parse("---\napiVersion: networking.rete.dev/v1alpha1\nkind: Workload\n"
                 "metadata: {name: w, namespace: demo}\nspec: {address: not-an-ip}\n",
                 &n);
    const char *d = detail(reted_validate_alone(&f->r, &docs[0], "register"));
    assert_non_null(strstr(d, "invalid resource|0|spec.address|"));
    reted_docs_free(docs, n);
}

/* A stored resource as the API serves it: with its version and creation
 * time in metadata. */
static void test_resource_json(void **state)
{
    (void)state;
    rete_store_resource res = {.kind = "Service", .ns = "demo", .name = "a",
                               .json = "{\"kind\":\"Service\",\"metadata\":{\"name\":\"a\"}}",
                               .resource_version = 42, .created_unix = 86400};
    json_t *j = reted_resource_json(&res);
    json_t *meta = json_object_get(j, "metadata");
    assert_string_equal(json_string_value(json_object_get(meta, "resourceVersion")), "42");
    assert_string_equal(json_string_value(json_object_get(meta, "creationTimestamp")), "1970-01-02T00:00:00Z");
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_docs),
        cmocka_unit_test(test_parse_errors_name_document_and_field),
        cmocka_unit_test(test_kind_names),
        cmocka_unit_test_setup_teardown(test_bad_document_refused_whole, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_change_breaking_stored_refused, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_one_per_service_and_mesh, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_dangling_delete_refused, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_validate_alone, fx_setup, fx_teardown),
        cmocka_unit_test(test_resource_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
