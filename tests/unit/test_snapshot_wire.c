/* src/common/snapshot_wire.{h,c} and rete_config_load_docs: the config
 * stream's entries as reted writes them and a proxy keeps them; a whole
 * snapshot and deltas applied to the set (order, refusals, reference
 * counts on commit and abandon); and the loader reading parsed documents
 * exactly as it reads the same documents as text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "config.h"
#include "snapshot_wire.h"
#include "yaml_doc.h"

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j)
        fail_msg("%s: %s", je.text, text);
    return j;
}

/* An entry as reted writes it, for a document {"kind":kind,"n":tag}. */
static void put(rete_buf *b, const char *kind, const char *ns, const char *name, uint64_t version,
                int tag)
{
    char doc[128];
    int n = snprintf(doc, sizeof(doc), "{\"kind\":\"%s\",\"n\":%d}", kind, tag);
    if (b->len > 1)
        rete_buf_append(b, ",", 1);
    rete_wire_put_entry(b, kind, ns, name, version, doc, (size_t)n);
}

static json_t *entries(void (*fill)(rete_buf *b))
{
    rete_buf b = {0};
    rete_buf_append(&b, "[", 1);
    fill(&b);
    rete_buf_append(&b, "]", 1);
    json_t *j = parse(b.p);
    rete_buf_free(&b);
    return j;
}

static void three(rete_buf *b)
{
    /* not in store order: the set sorts */
    put(b, "Service", "demo", "web", 7, 1);
    put(b, "HTTPRoute", "demo", "r", 3, 2);
    put(b, "Service", "bank", "pay", 5, 3);
}

/* The document's "n", from its JSON or from its tree. */
static int doc_n(const rete_wire_entry *e)
{
    if (e->json)
        return (int)json_integer_value(json_object_get(e->json, "n"));
    for (size_t i = 0; i < e->tree->n; i++)
        if (strcmp(e->tree->pairs[i].key->str, "n") == 0)
            return atoi(e->tree->pairs[i].value->str);
    return -1;
}

static void keys_are(const rete_wire_set *set, const char *want)
{
    char got[512] = "";
    for (size_t i = 0; i < set->n; i++)
        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s/%s/%s@%d", i ? " " : "", set->v[i].kind,
                 set->v[i].ns, set->v[i].name, doc_n(&set->v[i]));
    assert_string_equal(got, want);
}

static void test_writer_escapes_and_frames(void **state)
{
    (void)state;
    rete_buf b = {0};
    rete_wire_put_entry(&b, "Service", "de\"mo", "a\nb\x01\xc3\xa9", 42, "{\"x\":1}", 7);
    rete_buf_append(&b, "|", 1);
    rete_wire_put_key(&b, "Service", "demo", "web");
    /* UTF-8 passes through; quotes and control characters are escaped */
    assert_string_equal(b.p, "{\"kind\":\"Service\",\"namespace\":\"de\\\"mo\",\"name\":\"a\\nb\\u0001\xc3\xa9\","
                             "\"version\":42,\"document\":{\"x\":1}}|"
                             "{\"kind\":\"Service\",\"namespace\":\"demo\",\"name\":\"web\"}");
    rete_buf_free(&b);
}

/* What a load does for the set: each added document gets its tree (here
 * in the test's arena, as a configuration's would be). */
static void load_trees(rete_wire_change *ch, rete_arena *arena)
{
    for (size_t i = 0; i < ch->next.n; i++)
        if (ch->next.v[i].json)
            ch->next.v[i].tree = rete_ynode_from_json(ch->next.v[i].json, arena);
}

static void test_whole_snapshot_then_deltas(void **state)
{
    (void)state;
    rete_arena *arena = rete_arena_new(4096);
    rete_wire_set set = {0};
    rete_wire_change ch;
    rete_error err = {0};
    json_t *all = entries(three);
    json_t *web_doc = json_object_get(json_array_get(all, 0), "document");
    assert_int_equal(rete_wire_change_make(NULL, all, NULL, &ch, &err), RETE_OK);
    assert_int_equal(web_doc->refcount, 2); /* the change holds the document, not a copy */
    load_trees(&ch, arena);
    rete_wire_change_commit(&set, &ch);
    assert_int_equal(web_doc->refcount, 1); /* loaded: the set keeps the tree, not the JSON */
    json_decref(all);
    keys_are(&set, "HTTPRoute/demo/r@2 Service/bank/pay@3 Service/demo/web@1");
    assert_int_equal(set.v[2].version, 7);
    for (size_t i = 0; i < set.n; i++)
        assert_null(set.v[i].json);

    /* a delta: one changed, one new (sorting before everything), one deleted */
    json_t *ups = parse("[{\"kind\":\"Service\",\"namespace\":\"demo\",\"name\":\"web\",\"version\":8,"
                        "\"document\":{\"n\":10}},"
                        "{\"kind\":\"AuthorizationPolicy\",\"namespace\":\"demo\",\"name\":\"a\","
                        "\"version\":9,\"document\":{\"n\":11}}]");
    json_t *dels = parse("[{\"kind\":\"Service\",\"namespace\":\"bank\",\"name\":\"pay\"}]");
    const char *kept = set.v[0].key; /* unchanged: carried over, not copied */
    assert_int_equal(rete_wire_change_make(&set, ups, dels, &ch, &err), RETE_OK);
    keys_are(&ch.next, "AuthorizationPolicy/demo/a@11 HTTPRoute/demo/r@2 Service/demo/web@10");
    keys_are(&set, "HTTPRoute/demo/r@2 Service/bank/pay@3 Service/demo/web@1"); /* untouched */
    assert_int_equal(ch.added.n, 2);
    assert_int_equal(ch.dropped.n, 2);
    assert_ptr_equal(ch.next.v[1].key, kept);
    load_trees(&ch, arena);
    rete_wire_change_commit(&set, &ch); /* ASan: the dropped keys freed once */
    json_decref(ups);
    json_decref(dels);
    keys_are(&set, "AuthorizationPolicy/demo/a@11 HTTPRoute/demo/r@2 Service/demo/web@10");

    /* an abandoned change leaves the set and every count as they were */
    ups = parse("[{\"kind\":\"Service\",\"namespace\":\"demo\",\"name\":\"zz\",\"version\":1,"
                "\"document\":{\"n\":12}}]");
    json_t *zz = json_object_get(json_array_get(ups, 0), "document");
    assert_int_equal(rete_wire_change_make(&set, ups, NULL, &ch, &err), RETE_OK);
    assert_int_equal(zz->refcount, 2);
    rete_wire_change_abandon(&ch);
    assert_int_equal(zz->refcount, 1);
    json_decref(ups);
    keys_are(&set, "AuthorizationPolicy/demo/a@11 HTTPRoute/demo/r@2 Service/demo/web@10");

    /* a change committed without a load keeps the JSON (nothing else holds it) */
    ups = parse("[{\"kind\":\"Service\",\"namespace\":\"demo\",\"name\":\"zz\",\"version\":1,"
                "\"document\":{\"n\":\"x\\u00e9\\\"\"}}]");
    assert_int_equal(rete_wire_change_make(&set, ups, NULL, &ch, &err), RETE_OK);
    rete_wire_change_commit(&set, &ch);
    json_decref(ups);
    assert_non_null(set.v[3].json);

    /* what a proxy saves (trees and JSON alike) reads back as the same set */
    rete_buf b = {0};
    rete_wire_set_write(&set, &b);
    json_t *saved = parse(b.p);
    rete_buf_free(&b);
    rete_wire_set back = {0};
    assert_int_equal(rete_wire_change_make(NULL, saved, NULL, &ch, &err), RETE_OK);
    rete_wire_change_commit(&back, &ch);
    assert_int_equal(back.n, set.n);
    for (size_t i = 0; i < set.n; i++) {
        assert_string_equal(back.v[i].key, set.v[i].key);
        assert_string_equal(back.v[i].name, set.v[i].name);
        assert_int_equal(back.v[i].version, set.v[i].version);
    }
    assert_int_equal(json_integer_value(json_object_get(back.v[0].json, "n")), 11);
    assert_string_equal(json_string_value(json_object_get(back.v[3].json, "n")), "x\xc3\xa9\"");
    json_decref(saved);
    rete_wire_set_free(&back);
    rete_wire_set_free(&set);
    rete_arena_free(arena);
}

static void test_refusals_name_the_entry(void **state)
{
    (void)state;
    static const struct {
        const char *ups, *dels, *msg;
    } cases[] = {
        {"{}", NULL, "upserts: must be an array"},
        {"[1]", NULL, "upserts[0]: must be an object"},
        {"[{\"kind\":\"S\",\"namespace\":\"d\",\"version\":1,\"document\":{}}]", NULL,
         "upserts[0].name: must be a non-empty string"},
        {"[{\"kind\":\"S\",\"namespace\":\"\",\"name\":\"n\",\"version\":1,\"document\":{}}]", NULL,
         "upserts[0].namespace: must be a non-empty string"},
        {"[{\"kind\":\"S\",\"namespace\":\"d\",\"name\":\"n\",\"version\":\"1\",\"document\":{}}]", NULL,
         "upserts[0].version: must be a non-negative integer"},
        {"[{\"kind\":\"S\",\"namespace\":\"d\",\"name\":\"n\",\"version\":1,\"document\":\"---\"}]", NULL,
         "upserts[0].document: must be an object"},
        {"[{\"kind\":\"S\",\"namespace\":\"d\",\"name\":\"n\",\"version\":1,\"document\":{}},"
         "{\"kind\":\"S\",\"namespace\":\"d\",\"name\":\"n\",\"version\":2,\"document\":{}}]",
         NULL, "upserts: S d/n appears twice"},
        {NULL, "[{\"kind\":\"S\",\"namespace\":\"d\",\"name\":\"gone\"}]", "deletes: S d/gone is not held"},
        {NULL, "[{\"kind\":\"S\",\"namespace\":\"d\"}]", "deletes[0].name: must be a non-empty string"},
        {"[{\"kind\":\"S\",\"namespace\":\"d\",\"name\":\"n\",\"version\":1,\"document\":{}}]",
         "[{\"kind\":\"S\",\"namespace\":\"d\",\"name\":\"n\"}]", "S d/n is both upserted and deleted"},
    };
    rete_wire_set set = {0};
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        json_t *u = cases[i].ups ? parse(cases[i].ups) : NULL, *d = cases[i].dels ? parse(cases[i].dels) : NULL;
        rete_wire_change ch;
        rete_error err = {0};
        assert_int_equal(rete_wire_change_make(&set, u, d, &ch, &err), RETE_EINVAL);
        assert_string_equal(err.msg, cases[i].msg);
        assert_int_equal(ch.next.n, 0);
        if (u && json_is_array(u))
            for (size_t k = 0; k < json_array_size(u); k++)
                assert_int_equal(json_array_get(u, k)->refcount, 1); /* nothing kept */
        json_decref(u);
        json_decref(d);
    }
}

/* ---- the loader reads parsed documents as it reads their text ---- */

#define PROXY_YAML                                                                                 \
    "apiVersion: rete.dev/v1alpha1\nkind: Proxy\nmetadata: {name: p, namespace: demo}\n"           \
    "spec: {serviceAccount: p}\n"

static const char *const DOCS[] = {
    "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\",\"namespace\":\"demo\","
    "\"labels\":{\"tier\":\"front\"}},\"spec\":{\"selector\":{\"app\":\"web\"},\"ports\":[{\"name\":\"http\","
    "\"port\":80},{\"name\":\"tcp\",\"port\":5432}]}}",
    "{\"apiVersion\":\"networking.rete.dev/v1alpha1\",\"kind\":\"Workload\",\"metadata\":{\"name\":\"web-1\","
    "\"namespace\":\"demo\"},\"spec\":{\"address\":\"10.0.0.2\",\"labels\":{\"app\":\"web\"}}}",
    "{\"apiVersion\":\"gateway.networking.k8s.io/v1\",\"kind\":\"HTTPRoute\",\"metadata\":{\"name\":\"r\","
    "\"namespace\":\"demo\"},\"spec\":{\"parentRefs\":[{\"kind\":\"Service\",\"name\":\"web\"}],\"rules\":"
    "[{\"matches\":[{\"path\":{\"type\":\"PathPrefix\",\"value\":\"/b\"}},{\"headers\":[{\"name\":\"x-v\","
    "\"value\":\"2\"}]}],\"backendRefs\":[{\"name\":\"web\",\"port\":80,\"weight\":3}]}]}}",
    "{\"apiVersion\":\"networking.istio.io/v1\",\"kind\":\"DestinationRule\",\"metadata\":{\"name\":\"d\","
    "\"namespace\":\"demo\"},\"spec\":{\"host\":\"web\",\"trafficPolicy\":{\"loadBalancer\":"
    "{\"consistentHash\":{\"useSourceIp\":true}}}}}",
    "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":\"a\","
    "\"namespace\":\"demo\"},\"spec\":{\"action\":\"DENY\",\"rules\":[{\"to\":[{\"operation\":{\"paths\":"
    "[\"/admin/*\"]}}]}]}}",
    "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"PeerAuthentication\",\"metadata\":{\"name\":\"s\","
    "\"namespace\":\"demo\"},\"spec\":{\"mtls\":{\"mode\":\"STRICT\"}}}",
};
#define N_DOCS (sizeof(DOCS) / sizeof(*DOCS))

/* Both loads of PROXY_YAML + docs: the effective configuration as JSON, or
 * the formatted error, for each. */
static void load_both(const char *const *docs, size_t n, char **as_text, char **as_docs)
{
    rete_buf text = {0};
    rete_buf_append_str(&text, PROXY_YAML);
    rete_config_doc parsed[16];
    for (size_t i = 0; i < n; i++) {
        rete_buf_append_str(&text, "---\n");
        rete_buf_append_str(&text, docs[i]);
        rete_buf_append_str(&text, "\n");
        parsed[i] = (rete_config_doc){parse(docs[i]), NULL};
    }
    char *out[2];
    for (int way = 0; way < 2; way++) {
        rete_config_error e;
        rete_config *cfg = way == 0 ? rete_config_load_buffer(text.p, text.len, "cp", 5, &e)
                                    : rete_config_load_docs(PROXY_YAML, strlen(PROXY_YAML), parsed, n, "cp", 5,
                                                            &e);
        if (cfg) {
            out[way] = rete_config_to_json(cfg);
            rete_config_unref(cfg);
        } else {
            char buf[1200];
            rete_config_error_format(&e, buf, sizeof(buf));
            out[way] = strdup(buf);
        }
    }
    for (size_t i = 0; i < n; i++)
        json_decref(parsed[i].json);
    rete_buf_free(&text);
    *as_text = out[0];
    *as_docs = out[1];
}

static void test_load_docs_reads_what_load_buffer_reads(void **state)
{
    (void)state;
    char *a, *b;
    load_both(DOCS, N_DOCS, &a, &b);
    assert_non_null(strstr(a, "\"web\"")); /* a configuration, not an error */
    assert_null(strstr(a, "cp: "));
    assert_string_equal(a, b);
    free(a);
    free(b);

    /* errors read the same, document index and field path included: a
     * quoted number, an unknown field, a boolean where a string goes */
    static const char *const bad[] = {
        "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"x\",\"namespace\":\"demo\"},"
        "\"spec\":{\"ports\":[{\"name\":\"http\",\"port\":\"80\"}]}}",
        "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"x\",\"namespace\":\"demo\"},"
        "\"spec\":{\"portz\":[]}}",
        "{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\",\"metadata\":{\"name\":"
        "\"a\",\"namespace\":\"demo\"},\"spec\":{\"action\":true}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        const char *docs[] = {DOCS[0], bad[i]};
        load_both(docs, 2, &a, &b);
        assert_non_null(strstr(a, "cp: document 2: spec."));
        assert_string_equal(a, b);
        free(a);
        free(b);
    }
}

/* The next load copies the trees of the snapshot in use instead of
 * converting JSON again: same configuration, and it outlives the first. */
static void test_load_docs_from_an_earlier_snapshots_trees(void **state)
{
    (void)state;
    rete_config_doc docs[N_DOCS];
    for (size_t i = 0; i < N_DOCS; i++)
        docs[i] = (rete_config_doc){parse(DOCS[i]), NULL};
    rete_config_error e;
    rete_config *first = rete_config_load_docs(PROXY_YAML, strlen(PROXY_YAML), docs, N_DOCS, "cp", 1, &e);
    assert_non_null(first);
    for (size_t i = 0; i < N_DOCS; i++) {
        assert_non_null(docs[i].tree);
        json_decref(docs[i].json);
        docs[i].json = NULL;
    }
    rete_config *second = rete_config_load_docs(PROXY_YAML, strlen(PROXY_YAML), docs, N_DOCS, "cp", 1, &e);
    assert_non_null(second);
    char *a = rete_config_to_json(first);
    rete_config_unref(first); /* the second does not point into the first */
    char *b = rete_config_to_json(second);
    assert_string_equal(a, b);
    rete_config_unref(second);
    free(a);
    free(b);
}

static void test_load_docs_bounds_depth(void **state)
{
    (void)state;
    json_t *deep = json_object(), *at = deep;
    for (int i = 0; i < 100; i++) {
        json_t *next = json_object();
        json_object_set_new(at, "a", next);
        at = next;
    }
    rete_config_error e;
    rete_config_doc docs[] = {{deep, NULL}};
    assert_null(rete_config_load_docs(PROXY_YAML, strlen(PROXY_YAML), docs, 1, "cp", 1, &e));
    assert_int_equal(e.document, 1);
    assert_string_equal(e.reason, "document nested too deep or too large");
    json_decref(deep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_escapes_and_frames),
        cmocka_unit_test(test_whole_snapshot_then_deltas),
        cmocka_unit_test(test_refusals_name_the_entry),
        cmocka_unit_test(test_load_docs_reads_what_load_buffer_reads),
        cmocka_unit_test(test_load_docs_from_an_earlier_snapshots_trees),
        cmocka_unit_test(test_load_docs_bounds_depth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
