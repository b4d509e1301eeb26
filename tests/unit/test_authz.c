/* Unit tests for src/proxy/policy/authz.c: connection admission and Istio request
 * semantics (DENY before ALLOW, AUDIT only flags, empty policies, wildcards,
 * not* forms, TCP rules). Most configs are built by hand; the last tests go
 * through the loader to check that from[] x to[] expansion keeps the
 * semantics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "authz.h"
#include "config.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define ID(ns, sa) "spiffe://cluster.local/ns/" ns "/sa/" sa
#define HTTP(m) RETE_VIEW_LIT(m)
#define TCP RETE_VIEW_NULL

static rete_config make_cfg(const rete_authz_policy *pols, size_t n)
{
    rete_config cfg = {0};
    cfg.proxy.trust_domain = "cluster.local";
    cfg.proxy.ns = "test";
    cfg.authz = pols;
    cfg.n_authz = n;
    return cfg;
}

static rete_authz_decision check(const rete_config *cfg, const char *id, rete_view method,
                                 const char *path, uint16_t port)
{
    return rete_authz_check_request(cfg, id, method, rete_view_cstr(path), port, NULL, 0);
}

static bool allowed(const rete_config *cfg, const char *id, const char *method, const char *path,
                    uint16_t port)
{
    return check(cfg, id, rete_view_cstr(method), path, port).action == RETE_AUTHZ_ALLOW;
}

/* ---- matching primitives ------------------------------------------------ */

static void test_str_match(void **state)
{
    (void)state;
    assert_true(rete_authz_str_match("/a", RETE_VIEW_LIT("/a")));
    assert_false(rete_authz_str_match("/a", RETE_VIEW_LIT("/ab")));
    assert_true(rete_authz_str_match("/api/*", RETE_VIEW_LIT("/api/x")));
    assert_true(rete_authz_str_match("/api/*", RETE_VIEW_LIT("/api/")));
    assert_false(rete_authz_str_match("/api/*", RETE_VIEW_LIT("/api")));
    assert_true(rete_authz_str_match("*.json", RETE_VIEW_LIT("/x.json")));
    assert_false(rete_authz_str_match("*.json", RETE_VIEW_LIT("/x.jsonp")));
    assert_true(rete_authz_str_match("*", RETE_VIEW_LIT("x")));
    assert_false(rete_authz_str_match("*", RETE_VIEW_LIT(""))); /* presence match */
    assert_false(rete_authz_str_match(NULL, RETE_VIEW_LIT("x")));
}

static void test_trust_domain(void **state)
{
    (void)state;
    assert_true(rete_authz_in_trust_domain("cluster.local", ID("test", "a")));
    assert_false(rete_authz_in_trust_domain("cluster.local", "spiffe://other.local/ns/test/sa/a"));
    assert_false(rete_authz_in_trust_domain("cluster.local", "spiffe://cluster.localx/ns/test/sa/a"));
    assert_false(rete_authz_in_trust_domain("cluster.local", "spiffe://cluster.local"));
    assert_false(rete_authz_in_trust_domain("cluster.local", "http://cluster.local/ns/a"));
    assert_false(rete_authz_in_trust_domain("cluster.local", NULL));
}

/* ---- connection admission ------------------------------------------------ */

static const char *const p_client[] = {"cluster.local/ns/test/sa/client"};
static const char *const p_intruder[] = {"cluster.local/ns/test/sa/intruder"};
static const char *const ns_test[] = {"test"};
static const char *const ns_prod_wild[] = {"prod-*"};
static const char *const paths_admin[] = {"/admin", "/admin/*"};
static const char *const m_get[] = {"GET", "HEAD"};
static const uint16_t port_9090[] = {9090};

static void test_admit_no_policy_trust_domain_only(void **state)
{
    (void)state;
    rete_config cfg = make_cfg(NULL, 0);
    const char *pol = "x";
    assert_true(rete_authz_admit_peer(&cfg, ID("any", "one"), &pol));
    assert_null(pol);
    assert_false(rete_authz_admit_peer(&cfg, "spiffe://evil.local/ns/test/sa/client", &pol));
    assert_null(pol);
    assert_false(rete_authz_admit_peer(&cfg, NULL, NULL));
}

static void test_admit_allow_principals(void **state)
{
    (void)state;
    const rete_authz_rule rules[] = {{.principals = p_client, .n_principals = 1}};
    const rete_authz_policy pols[] = {{"only-client", "test", RETE_AUTHZ_ALLOW, rules, 1}};
    rete_config cfg = make_cfg(pols, 1);
    const char *pol = NULL;
    assert_true(rete_authz_admit_peer(&cfg, ID("test", "client"), &pol));
    assert_null(pol);
    assert_false(rete_authz_admit_peer(&cfg, ID("test", "intruder"), &pol));
    assert_string_equal(pol, "only-client");
}

static void test_admit_allow_rule_without_source_admits_anyone(void **state)
{
    (void)state;
    /* The second rule only constrains the operation: anyone may match it. */
    const rete_authz_rule rules[] = {{.principals = p_client, .n_principals = 1},
                                     {.paths = paths_admin, .n_paths = 2}};
    const rete_authz_policy pols[] = {{"a", "test", RETE_AUTHZ_ALLOW, rules, 2}};
    rete_config cfg = make_cfg(pols, 1);
    assert_true(rete_authz_admit_peer(&cfg, ID("test", "intruder"), NULL));
    /* but at request level only /admin is open to the intruder */
    assert_true(allowed(&cfg, ID("test", "intruder"), "GET", "/admin/x", 80));
    assert_false(allowed(&cfg, ID("test", "intruder"), "GET", "/", 80));
    assert_true(allowed(&cfg, ID("test", "client"), "GET", "/", 80));
}

static void test_admit_deny_source_only(void **state)
{
    (void)state;
    const rete_authz_rule deny_src[] = {{.principals = p_intruder, .n_principals = 1}};
    const rete_authz_rule deny_op[] = {{.principals = p_client, .n_principals = 1, .paths = paths_admin,
                                        .n_paths = 2}};
    const rete_authz_policy pols[] = {{"no-intruder", "test", RETE_AUTHZ_DENY, deny_src, 1},
                                      {"no-admin", "test", RETE_AUTHZ_DENY, deny_op, 1}};
    rete_config cfg = make_cfg(pols, 2);
    const char *pol = NULL;
    assert_false(rete_authz_admit_peer(&cfg, ID("test", "intruder"), &pol));
    assert_string_equal(pol, "no-intruder");
    /* a DENY rule with operations is left to the request check */
    assert_true(rete_authz_admit_peer(&cfg, ID("test", "client"), &pol));
    assert_false(allowed(&cfg, ID("test", "client"), "GET", "/admin", 80));
    assert_true(allowed(&cfg, ID("test", "client"), "GET", "/", 80));
}

static void test_admit_empty_policies(void **state)
{
    (void)state;
    /* ALLOW with no rules: matches nothing, so nobody is admitted. */
    const rete_authz_policy allow_none[] = {{"allow-nothing", "test", RETE_AUTHZ_ALLOW, NULL, 0}};
    rete_config cfg = make_cfg(allow_none, 1);
    const char *pol = NULL;
    assert_false(rete_authz_admit_peer(&cfg, ID("test", "client"), &pol));
    assert_string_equal(pol, "allow-nothing");
    /* DENY with no rules: matches nothing, everyone is admitted. */
    const rete_authz_policy deny_none[] = {{"deny-nothing", "test", RETE_AUTHZ_DENY, NULL, 0}};
    cfg = make_cfg(deny_none, 1);
    assert_true(rete_authz_admit_peer(&cfg, ID("test", "client"), NULL));
    /* A DENY rule with no conditions at all matches everyone. */
    const rete_authz_rule any[] = {{0}};
    const rete_authz_policy deny_all[] = {{"deny-all", "test", RETE_AUTHZ_DENY, any, 1}};
    cfg = make_cfg(deny_all, 1);
    assert_false(rete_authz_admit_peer(&cfg, ID("test", "client"), &pol));
    assert_string_equal(pol, "deny-all");
    /* AUDIT never refuses. */
    const rete_authz_policy audit[] = {{"audit-all", "test", RETE_AUTHZ_AUDIT, any, 1}};
    cfg = make_cfg(audit, 1);
    assert_true(rete_authz_admit_peer(&cfg, ID("test", "client"), NULL));
}

static void test_admit_namespaces(void **state)
{
    (void)state;
    const rete_authz_rule rules[] = {{.namespaces = ns_prod_wild, .n_namespaces = 1}};
    const rete_authz_policy pols[] = {{"prod", "test", RETE_AUTHZ_ALLOW, rules, 1}};
    rete_config cfg = make_cfg(pols, 1);
    assert_true(rete_authz_admit_peer(&cfg, ID("prod-eu", "x"), NULL));
    assert_false(rete_authz_admit_peer(&cfg, ID("dev", "x"), NULL));
    /* the namespace is the ns segment, not a substring of the id */
    assert_false(rete_authz_admit_peer(&cfg, ID("dev", "prod-x"), NULL));
}

/* ---- request decisions --------------------------------------------------- */

static void test_no_policy_allows(void **state)
{
    (void)state;
    rete_config cfg = make_cfg(NULL, 0);
    rete_authz_decision d = check(&cfg, NULL, HTTP("GET"), "/", 80);
    assert_int_equal(d.action, RETE_AUTHZ_ALLOW);
    assert_null(d.policy);
    assert_false(d.audit);
}

static void test_allow_deny_audit_matrix(void **state)
{
    (void)state;
    const rete_authz_rule allow_client[] = {{.principals = p_client, .n_principals = 1}};
    const rete_authz_rule deny_admin[] = {{.paths = paths_admin, .n_paths = 2}};
    const rete_authz_rule audit_get[] = {{.methods = m_get, .n_methods = 2}};
    const rete_authz_policy pols[] = {{"audit-get", "test", RETE_AUTHZ_AUDIT, audit_get, 1},
                                      {"allow-client", "test", RETE_AUTHZ_ALLOW, allow_client, 1},
                                      {"deny-admin", "istio-system", RETE_AUTHZ_DENY, deny_admin, 1}};
    struct {
        const char *id, *method, *path;
        rete_authz_action want;
        const char *policy;
        bool audit;
    } cases[] = {
        {ID("test", "client"), "GET", "/", RETE_AUTHZ_ALLOW, "allow-client", true},
        {ID("test", "client"), "POST", "/", RETE_AUTHZ_ALLOW, "allow-client", false},
        {ID("test", "client"), "GET", "/admin", RETE_AUTHZ_DENY, "deny-admin", true},
        {ID("test", "client"), "POST", "/admin/users", RETE_AUTHZ_DENY, "deny-admin", false},
        {ID("test", "client"), "GET", "/administrator", RETE_AUTHZ_ALLOW, "allow-client", true},
        {ID("test", "other"), "GET", "/", RETE_AUTHZ_DENY, "allow-client", true},
        {ID("test", "other"), "GET", "/admin", RETE_AUTHZ_DENY, "deny-admin", true},
        {NULL, "GET", "/", RETE_AUTHZ_DENY, "allow-client", true}, /* plaintext: no principal */
    };
    rete_config cfg = make_cfg(pols, N(pols));
    for (size_t i = 0; i < N(cases); i++) {
        rete_authz_decision d = check(&cfg, cases[i].id, rete_view_cstr(cases[i].method), cases[i].path, 80);
        if (d.action != cases[i].want || strcmp(d.policy->name, cases[i].policy) != 0 ||
            d.audit != cases[i].audit)
            fail_msg("case %zu (%s %s %s): action %d policy %s audit %d", i, cases[i].id ? cases[i].id : "-",
                     cases[i].method, cases[i].path, d.action, d.policy ? d.policy->name : "-", d.audit);
        if (d.audit)
            assert_string_equal(d.audit_policy->name, "audit-get");
    }
    rete_authz_decision d = check(&cfg, ID("test", "other"), HTTP("GET"), "/", 80);
    assert_true(d.no_allow_match);
    d = check(&cfg, ID("test", "other"), HTTP("GET"), "/admin", 80);
    assert_false(d.no_allow_match);
    assert_string_equal(d.policy->ns, "istio-system");
}

static void test_audit_only_never_denies(void **state)
{
    (void)state;
    const rete_authz_rule any[] = {{0}};
    const rete_authz_policy pols[] = {{"audit", "test", RETE_AUTHZ_AUDIT, any, 1}};
    rete_config cfg = make_cfg(pols, 1);
    rete_authz_decision d = check(&cfg, NULL, HTTP("DELETE"), "/x", 80);
    assert_int_equal(d.action, RETE_AUTHZ_ALLOW);
    assert_true(d.audit);
    assert_null(d.policy);
}

static void test_empty_policies(void **state)
{
    (void)state;
    const rete_authz_rule any[] = {{0}};
    /* ALLOW with no rules -> deny all */
    const rete_authz_policy a0[] = {{"allow-nothing", "test", RETE_AUTHZ_ALLOW, NULL, 0}};
    rete_config cfg = make_cfg(a0, 1);
    assert_false(allowed(&cfg, ID("test", "client"), "GET", "/", 80));
    /* ... unless another ALLOW policy matches */
    const rete_authz_policy a0a1[] = {{"allow-nothing", "test", RETE_AUTHZ_ALLOW, NULL, 0},
                                      {"allow-all", "test", RETE_AUTHZ_ALLOW, any, 1}};
    cfg = make_cfg(a0a1, 2);
    rete_authz_decision d = check(&cfg, ID("test", "client"), HTTP("GET"), "/", 80);
    assert_int_equal(d.action, RETE_AUTHZ_ALLOW);
    assert_string_equal(d.policy->name, "allow-all");
    /* DENY with no rules -> matches nothing */
    const rete_authz_policy d0[] = {{"deny-nothing", "test", RETE_AUTHZ_DENY, NULL, 0}};
    cfg = make_cfg(d0, 1);
    assert_true(allowed(&cfg, ID("test", "client"), "GET", "/", 80));
    /* DENY with an empty rule -> matches everything */
    const rete_authz_policy d1[] = {{"deny-all", "test", RETE_AUTHZ_DENY, any, 1}};
    cfg = make_cfg(d1, 1);
    assert_false(allowed(&cfg, NULL, "GET", "/", 80));
    assert_int_equal(check(&cfg, NULL, TCP, "", 5432).action, RETE_AUTHZ_DENY);
}

static void test_not_forms(void **state)
{
    (void)state;
    const rete_authz_rule rules[] = {{.not_principals = p_intruder, .n_not_principals = 1,
                                      .not_paths = paths_admin, .n_not_paths = 2,
                                      .not_methods = m_get + 1, .n_not_methods = 1, /* HEAD */
                                      .not_ports = port_9090, .n_not_ports = 1}};
    const rete_authz_policy pols[] = {{"a", "test", RETE_AUTHZ_ALLOW, rules, 1}};
    rete_config cfg = make_cfg(pols, 1);
    assert_true(allowed(&cfg, ID("test", "client"), "GET", "/x", 80));
    assert_true(allowed(&cfg, NULL, "GET", "/x", 80)); /* notPrincipals matches plaintext */
    assert_false(allowed(&cfg, ID("test", "intruder"), "GET", "/x", 80));
    assert_false(allowed(&cfg, ID("test", "client"), "GET", "/admin", 80));
    assert_false(allowed(&cfg, ID("test", "client"), "HEAD", "/x", 80));
    assert_false(allowed(&cfg, ID("test", "client"), "GET", "/x", 9090));
    /* notNamespaces */
    const rete_authz_rule dn[] = {{.not_namespaces = ns_test, .n_not_namespaces = 1}};
    const rete_authz_policy dp[] = {{"outsiders", "test", RETE_AUTHZ_DENY, dn, 1}};
    cfg = make_cfg(dp, 1);
    assert_true(allowed(&cfg, ID("test", "x"), "GET", "/", 80));
    assert_false(allowed(&cfg, ID("other", "x"), "GET", "/", 80));
    assert_false(allowed(&cfg, NULL, "GET", "/", 80)); /* no namespace is not "test" */
    const char *pol = NULL;
    assert_false(rete_authz_admit_peer(&cfg, ID("other", "x"), &pol));
    assert_string_equal(pol, "outsiders");
}

static void test_and_within_rule_or_across_rules(void **state)
{
    (void)state;
    /* rule 0: client AND GET AND port 9090; rule 1: namespace prod-* */
    const rete_authz_rule rules[] = {
        {.principals = p_client, .n_principals = 1, .methods = m_get, .n_methods = 2, .ports = port_9090,
         .n_ports = 1},
        {.namespaces = ns_prod_wild, .n_namespaces = 1}};
    const rete_authz_policy pols[] = {{"a", "test", RETE_AUTHZ_ALLOW, rules, 2}};
    rete_config cfg = make_cfg(pols, 1);
    assert_true(allowed(&cfg, ID("test", "client"), "GET", "/", 9090));
    assert_true(allowed(&cfg, ID("test", "client"), "HEAD", "/", 9090));
    assert_false(allowed(&cfg, ID("test", "client"), "POST", "/", 9090));
    assert_false(allowed(&cfg, ID("test", "client"), "GET", "/", 80));
    assert_true(allowed(&cfg, ID("prod-1", "any"), "POST", "/", 80));
    assert_false(allowed(&cfg, ID("test", "other"), "GET", "/", 9090));
}

static void test_principal_wildcards(void **state)
{
    (void)state;
    static const char *const pats[] = {"cluster.local/ns/test/*", "*/sa/admin"};
    const rete_authz_rule rules[] = {{.principals = pats, .n_principals = 2}};
    const rete_authz_policy pols[] = {{"a", "test", RETE_AUTHZ_ALLOW, rules, 1}};
    rete_config cfg = make_cfg(pols, 1);
    assert_true(allowed(&cfg, ID("test", "x"), "GET", "/", 80));
    assert_true(allowed(&cfg, ID("other", "admin"), "GET", "/", 80));
    assert_false(allowed(&cfg, ID("other", "x"), "GET", "/", 80));
    assert_false(allowed(&cfg, ID("testing", "x"), "GET", "/", 80));
    static const char *const star[] = {"*"};
    const rete_authz_rule any_authn[] = {{.principals = star, .n_principals = 1}};
    const rete_authz_policy p2[] = {{"authn", "test", RETE_AUTHZ_ALLOW, any_authn, 1}};
    cfg = make_cfg(p2, 1);
    assert_true(allowed(&cfg, ID("x", "y"), "GET", "/", 80));
    assert_false(allowed(&cfg, NULL, "GET", "/", 80)); /* "*" needs an identity */
}

/* authz matches the path it is given, which is the path that will be
 * forwarded (normalised by dispatch.c beforehand): it must not normalise
 * again, or what it authorises differs from what the app gets (issue 8 item
 * 4). Only the query is set aside. */
static void test_path_matched_as_forwarded_query_ignored(void **state)
{
    (void)state;
    static const char *const exact[] = {"/admin"};
    const rete_authz_rule rules[] = {{.paths = paths_admin, .n_paths = 2}};
    const rete_authz_rule rules2[] = {{.paths = exact, .n_paths = 1}};
    const rete_authz_policy pols[] = {{"deny-admin", "test", RETE_AUTHZ_DENY, rules, 1},
                                      {"deny-exact", "test", RETE_AUTHZ_DENY, rules2, 1}};
    rete_config cfg = make_cfg(pols, 1);
    const char *denied[] = {"/admin", "/admin?x=1", "/admin/", "/admin/y", "/admin?/../x"};
    for (size_t i = 0; i < N(denied); i++)
        if (allowed(&cfg, NULL, "GET", denied[i], 80))
            fail_msg("%s was let through", denied[i]);
    /* Under NONE these reach the app unchanged: what the app makes of them
     * is the operator's choice (docs/security.md). */
    const char *open[] = {"/", "/adminx", "/x/admin", "/x/../admin", "/%61dmin", "//admin"};
    for (size_t i = 0; i < N(open); i++)
        if (!allowed(&cfg, NULL, "GET", open[i], 80))
            fail_msg("%s was denied", open[i]);
    cfg = make_cfg(pols + 1, 1);
    assert_false(allowed(&cfg, NULL, "GET", "/admin?q", 80));
    assert_true(allowed(&cfg, NULL, "GET", "/admin/", 80));
}

static void test_tcp_semantics(void **state)
{
    (void)state;
    /* ALLOW rule with HTTP fields never matches a tunnel; ports still do. */
    const rete_authz_rule allow[] = {{.methods = m_get, .n_methods = 2},
                                     {.principals = p_client, .n_principals = 1, .ports = port_9090,
                                      .n_ports = 1}};
    const rete_authz_policy pols[] = {{"a", "test", RETE_AUTHZ_ALLOW, allow, 2}};
    rete_config cfg = make_cfg(pols, 1);
    assert_int_equal(check(&cfg, ID("test", "other"), TCP, "", 80).action, RETE_AUTHZ_DENY);
    assert_int_equal(check(&cfg, ID("test", "client"), TCP, "", 9090).action, RETE_AUTHZ_ALLOW);
    assert_int_equal(check(&cfg, ID("test", "client"), TCP, "", 80).action, RETE_AUTHZ_DENY);
    /* DENY rule with HTTP fields: they are ignored on a tunnel (denies more). */
    const rete_authz_rule deny[] = {{.principals = p_intruder, .n_principals = 1, .paths = paths_admin,
                                     .n_paths = 2, .ports = port_9090, .n_ports = 1}};
    const rete_authz_policy dp[] = {{"d", "test", RETE_AUTHZ_DENY, deny, 1}};
    cfg = make_cfg(dp, 1);
    assert_int_equal(check(&cfg, ID("test", "intruder"), TCP, "", 9090).action, RETE_AUTHZ_DENY);
    assert_int_equal(check(&cfg, ID("test", "intruder"), TCP, "", 80).action, RETE_AUTHZ_ALLOW);
    assert_int_equal(check(&cfg, ID("test", "intruder"), HTTP("GET"), "/", 9090).action, RETE_AUTHZ_ALLOW);
    assert_int_equal(check(&cfg, ID("test", "intruder"), HTTP("GET"), "/admin", 9090).action,
                     RETE_AUTHZ_DENY);
}

/* ---- through the loader -------------------------------------------------- */

#define PROXY_DOC                                                                                  \
    "apiVersion: rete.dev/v1alpha1\nkind: Proxy\nmetadata: {name: p, namespace: test}\n"          \
    "spec: {serviceAccount: p}\n"
#define AUTHZ(name, spec)                                                                          \
    "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"                          \
    "metadata: {name: " name ", namespace: test}\nspec: " spec "\n"

static rete_config *load(const char *yaml)
{
    rete_config_error err;
    rete_config *cfg = rete_config_load_buffer(yaml, strlen(yaml), "t.yaml", 1, &err);
    if (!cfg) {
        char buf[1200];
        rete_config_error_format(&err, buf, sizeof(buf));
        fail_msg("%s", buf);
    }
    return cfg;
}

static void test_loader_from_to_product(void **state)
{
    (void)state;
    /* (client OR ns prod) AND (GET /api/... OR POST /upload) */
    rete_config *cfg = load(PROXY_DOC AUTHZ(
        "api", "{rules: [{from: [{source: {principals: [cluster.local/ns/test/sa/client]}},"
               " {source: {namespaces: [prod]}}],"
               " to: [{operation: {methods: [GET], paths: [/api/*]}}, {operation: {methods: [POST],"
               " paths: [/upload]}}]}]}"));
    assert_int_equal(cfg->n_authz, 1);
    assert_int_equal(cfg->authz[0].n_rules, 4);
    assert_true(allowed(cfg, ID("test", "client"), "GET", "/api/v1", 80));
    assert_true(allowed(cfg, ID("prod", "x"), "POST", "/upload", 80));
    assert_false(allowed(cfg, ID("test", "client"), "POST", "/api/v1", 80));
    assert_false(allowed(cfg, ID("test", "client"), "GET", "/upload", 80));
    assert_false(allowed(cfg, ID("test", "other"), "GET", "/api/v1", 80));
    assert_true(rete_authz_admit_peer(cfg, ID("prod", "x"), NULL));
    assert_false(rete_authz_admit_peer(cfg, ID("test", "other"), NULL));
    rete_config_unref(cfg);
}

static void test_loader_empty_spec_and_empty_rule(void **state)
{
    (void)state;
    /* spec: {} is ALLOW with no rules: deny all. */
    rete_config *cfg = load(PROXY_DOC AUTHZ("allow-nothing", "{}"));
    assert_int_equal(cfg->n_authz, 1);
    assert_int_equal(cfg->authz[0].action, RETE_AUTHZ_ALLOW);
    assert_false(allowed(cfg, ID("test", "client"), "GET", "/", 80));
    assert_false(rete_authz_admit_peer(cfg, ID("test", "client"), NULL));
    rete_config_unref(cfg);
    /* rules: [{}] is ALLOW all. */
    cfg = load(PROXY_DOC AUTHZ("allow-all", "{rules: [{}]}"));
    assert_true(allowed(cfg, NULL, "GET", "/", 80));
    assert_true(rete_authz_admit_peer(cfg, ID("test", "client"), NULL));
    rete_config_unref(cfg);
    /* DENY with no rules denies nothing. */
    cfg = load(PROXY_DOC AUTHZ("deny-nothing", "{action: DENY}"));
    assert_true(allowed(cfg, NULL, "GET", "/", 80));
    rete_config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_str_match),
        cmocka_unit_test(test_trust_domain),
        cmocka_unit_test(test_admit_no_policy_trust_domain_only),
        cmocka_unit_test(test_admit_allow_principals),
        cmocka_unit_test(test_admit_allow_rule_without_source_admits_anyone),
        cmocka_unit_test(test_admit_deny_source_only),
        cmocka_unit_test(test_admit_empty_policies),
        cmocka_unit_test(test_admit_namespaces),
        cmocka_unit_test(test_no_policy_allows),
        cmocka_unit_test(test_allow_deny_audit_matrix),
        cmocka_unit_test(test_audit_only_never_denies),
        cmocka_unit_test(test_empty_policies),
        cmocka_unit_test(test_not_forms),
        cmocka_unit_test(test_and_within_rule_or_across_rules),
        cmocka_unit_test(test_principal_wildcards),
        cmocka_unit_test(test_path_matched_as_forwarded_query_ignored),
        cmocka_unit_test(test_tcp_semantics),
        cmocka_unit_test(test_loader_from_to_product),
        cmocka_unit_test(test_loader_empty_spec_and_empty_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
