/* src/common/spiffe.c: writing, parsing and checking workload IDs. (The
 * SPIFFE ID grammar itself, rete_spiffe_id_valid, is walked in test_tls.c.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "defaults.h"
#include "spiffe.h"

static void assert_view(rete_view v, const char *want)
{
    assert_int_equal(v.len, strlen(want));
    assert_memory_equal(v.p, want, v.len);
}

static void test_format(void **state)
{
    (void)state;
    char buf[128];
    assert_true(rete_spiffe_format(buf, sizeof(buf), "cluster.local", "demo", "web"));
    assert_string_equal(buf, "spiffe://cluster.local/ns/demo/sa/web");
    assert_true(rete_spiffe_format(buf, sizeof(buf), RETE_DEFAULT_TRUST_DOMAIN, RETE_ROOT_NS,
                                   RETE_CONTROL_SA));
    assert_string_equal(buf, "spiffe://cluster.local/ns/rete-system/sa/reted");
    /* exactly fits, one short */
    size_t need = strlen("spiffe://td/ns/n/sa/s") + 1;
    assert_true(rete_spiffe_format(buf, need, "td", "n", "s"));
    assert_false(rete_spiffe_format(buf, need - 1, "td", "n", "s"));
    assert_string_equal(buf, "spiffe://td/ns/n/sa/"); /* truncated, terminated */
}

static void test_parse_good(void **state)
{
    (void)state;
    static const struct {
        const char *id, *td, *ns, *sa;
    } good[] = {
        {"spiffe://cluster.local/ns/demo/sa/web", "cluster.local", "demo", "web"},
        {"spiffe://td/ns/rete-system/sa/reted", "td", "rete-system", "reted"},
        {"spiffe://a.b-c_d/ns/N_s.1/sa/Sa-2", "a.b-c_d", "N_s.1", "Sa-2"},
        {"spiffe://td/ns/sa/sa/ns", "td", "sa", "ns"},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        rete_spiffe_parts p;
        if (!rete_spiffe_parse(good[i].id, strlen(good[i].id), &p))
            fail_msg("refused %s", good[i].id);
        assert_view(p.td, good[i].td);
        assert_view(p.ns, good[i].ns);
        assert_view(p.sa, good[i].sa);
        /* and back */
        char buf[256];
        assert_true(rete_spiffe_format(buf, sizeof(buf), good[i].td, good[i].ns, good[i].sa));
        assert_string_equal(buf, good[i].id);
    }
}

static void test_parse_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "spiffe://",
        "spiffe://td",
        "spiffe://td/",
        "spiffe://td/ns/demo",
        "spiffe://td/ns/demo/sa",
        "spiffe://td/ns/demo/sa/",
        "spiffe://td/ns//sa/web",
        "spiffe://td/ns/demo/sa/web/",
        "spiffe://td/ns/demo/sa/web/x",
        "spiffe://td/ns/a/b/sa/web",
        "spiffe://td/NS/demo/sa/web",
        "spiffe://td/ns/demo/SA/web",
        "spiffe://td/ns/demo/account/web",
        "spiffe://TD/ns/demo/sa/web",
        "spiffe://td/ns/../sa/web",
        "spiffe://td/ns/demo/sa/web?x",
        "spiffe://td/ns/de%20mo/sa/web",
        "SPIFFE://td/ns/demo/sa/web",
        "http://td/ns/demo/sa/web",
        "td/ns/demo/sa/web",
        "spiffe:///ns/demo/sa/web",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rete_spiffe_parts p = {RETE_VIEW_LIT("untouched"), RETE_VIEW_NULL, RETE_VIEW_NULL};
        if (rete_spiffe_parse(bad[i], strlen(bad[i]), &p))
            fail_msg("accepted %s", bad[i]);
        assert_view(p.td, "untouched");
    }
    /* the length given, not the NUL, ends the ID */
    const char *id = "spiffe://td/ns/demo/sa/web";
    rete_spiffe_parts p;
    assert_false(rete_spiffe_parse(id, strlen(id) - 4, &p)); /* ".../sa" */
    assert_true(rete_spiffe_parse(id, strlen(id) - 1, &p));
    assert_view(p.sa, "we");
    assert_false(rete_spiffe_parse(NULL, 0, &p));
}

static void test_trust_domain(void **state)
{
    (void)state;
    assert_true(rete_spiffe_in_trust_domain("spiffe://cluster.local/ns/a/sa/b", "cluster.local"));
    assert_false(rete_spiffe_in_trust_domain("spiffe://cluster.local.evil/ns/a/sa/b", "cluster.local"));
    assert_false(rete_spiffe_in_trust_domain("spiffe://cluster/ns/a/sa/b", "cluster.local"));
    assert_false(rete_spiffe_in_trust_domain("spiffe://cluster.local", "cluster.local"));
    assert_false(rete_spiffe_in_trust_domain("cluster.local/ns/a/sa/b", "cluster.local"));
    assert_false(rete_spiffe_in_trust_domain("spiffe:///ns/a", ""));
    assert_false(rete_spiffe_in_trust_domain(NULL, "td"));
    assert_false(rete_spiffe_in_trust_domain("spiffe://td/x", NULL));
    /* a trust domain given either way */
    assert_string_equal(rete_spiffe_principal("spiffe://td"), "td");
    assert_string_equal(rete_spiffe_principal("td"), "td");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_trust_domain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
