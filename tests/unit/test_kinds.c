/* The kinds table (src/common/kinds.h) walked row by row: every kind has a
 * schema and names no other kind uses, and reted and retectl resolve every
 * word to the same kind — including each word either of them accepted
 * before the table was shared. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config_schema.h"
#include "ctl_kinds.h"
#include "kinds.h"
#include "reted.h"
#include "resources.h"

/* Every word of kind k: kind, plural, short names; n returned. */
static size_t words_of(const rete_kind *k, const char **w, size_t cap)
{
    size_t n = 0;
    w[n++] = k->kind;
    w[n++] = k->plural;
    for (size_t a = 0; a < RETE_KIND_MAX_SHORT && k->short_names[a] && n < cap; a++)
        w[n++] = k->short_names[a];
    return n;
}

static void test_every_row_complete(void **state)
{
    (void)state;
    for (size_t i = 0; i < RETE_KIND_COUNT; i++) {
        const rete_kind *k = &rete_kinds[i];
        assert_int_equal(k->id, i);
        assert_non_null(k->kind);
        assert_non_null(k->plural);
        assert_non_null(k->doc);
        assert_non_null(k->api_versions[0]);
        assert_non_null(k->spec);
        assert_string_equal(k->spec->name, k->kind);
        assert_true(k->spec->size > 0);
        assert_ptr_equal(rete_kind_by_name(k->kind), k);
    }
    assert_null(rete_kind_by_name("service")); /* a document's kind is exact */
    assert_null(rete_kind_by_name(NULL));
}

static void test_names_unique(void **state)
{
    (void)state;
    const char *all[RETE_KIND_COUNT * (2 + RETE_KIND_MAX_SHORT)];
    size_t n = 0;
    for (size_t i = 0; i < RETE_KIND_COUNT; i++)
        n += words_of(&rete_kinds[i], all + n, sizeof(all) / sizeof(all[0]) - n);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcasecmp(all[i], all[j]) == 0)
                fail_msg("kind name %s used twice", all[i]);
}

static void upper(const char *s, char *buf, size_t len)
{
    size_t i = 0;
    for (; s[i] && i + 1 < len; i++)
        buf[i] = (s[i] >= 'a' && s[i] <= 'z') ? (char)(s[i] - 32) : s[i];
    buf[i] = '\0';
}

/* reted's API and retectl: the same kind for every word of the table. */
static void test_reted_and_retectl_agree(void **state)
{
    (void)state;
    for (size_t i = 0; i < RETE_KIND_COUNT; i++) {
        const rete_kind *k = &rete_kinds[i];
        const char *w[2 + RETE_KIND_MAX_SHORT];
        size_t n = words_of(k, w, sizeof(w) / sizeof(w[0]));
        for (size_t j = 0; j < n; j++) {
            char up[64];
            upper(w[j], up, sizeof(up));
            const char *forms[] = {w[j], up};
            for (size_t f = 0; f < 2; f++) {
                const rete_ctl_kind *ck = rete_ctl_kind_lookup(forms[f]);
                const char *canon = reted_kind_canonical(forms[f]);
                if (k->index_class == RETE_KC_NONE) {
                    assert_null(ck);
                    assert_null(canon);
                    continue;
                }
                if (!ck || !canon)
                    fail_msg("%s: retectl %s, reted %s", forms[f], ck ? "knows it" : "does not",
                             canon ? "does" : "does not");
                assert_ptr_equal(ck->def, k);
                assert_string_equal(canon, k->kind);
            }
        }
    }
    /* every stored kind has its retectl columns */
    for (size_t i = 0; i < RETE_KIND_COUNT; i++) {
        if (rete_kinds[i].index_class == RETE_KC_NONE)
            continue;
        size_t rows = 0;
        for (size_t c = 0; c < rete_ctl_n_kinds; c++)
            rows += rete_ctl_kinds[c].def == &rete_kinds[i];
        assert_int_equal(rows, 1);
        assert_non_null(rete_ctl_kind_lookup(rete_kinds[i].kind)->cols[0].header);
    }
    assert_null(rete_ctl_kind_lookup("pods"));
    assert_null(reted_kind_canonical("pods"));
    assert_null(rete_kind_lookup(""));
    assert_null(rete_kind_lookup(NULL));
}

/* Each word reted's or retectl's own list accepted before the shared table:
 * the table may add words, never drop one. */
static void test_old_words_still_accepted(void **state)
{
    (void)state;
    static const struct {
        const char *word, *kind;
    } old[] = {
        {"service", "Service"},
        {"services", "Service"},
        {"svc", "Service"},
        {"workload", "Workload"},
        {"workloads", "Workload"},
        {"wl", "Workload"},
        {"workloadentry", "Workload"},
        {"httproute", "HTTPRoute"},
        {"httproutes", "HTTPRoute"},
        {"grpcroute", "GRPCRoute"},
        {"grpcroutes", "GRPCRoute"},
        {"tcproute", "TCPRoute"},
        {"tcproutes", "TCPRoute"},
        {"destinationrule", "DestinationRule"},
        {"destinationrules", "DestinationRule"},
        {"dr", "DestinationRule"},
        {"authorizationpolicy", "AuthorizationPolicy"},
        {"authorizationpolicies", "AuthorizationPolicy"},
        {"authz", "AuthorizationPolicy"},
        {"ap", "AuthorizationPolicy"},
        {"peerauthentication", "PeerAuthentication"},
        {"peerauthentications", "PeerAuthentication"},
        {"pa", "PeerAuthentication"},
        {"meshconfig", "MeshConfig"},
        {"meshconfigs", "MeshConfig"},
        {"mc", "MeshConfig"},
        {"workloadgroup", "WorkloadGroup"},
        {"workloadgroups", "WorkloadGroup"},
        {"wg", "WorkloadGroup"},
    };
    for (size_t i = 0; i < sizeof(old) / sizeof(old[0]); i++) {
        const char *canon = reted_kind_canonical(old[i].word);
        const rete_ctl_kind *ck = rete_ctl_kind_lookup(old[i].word);
        if (!canon || !ck)
            fail_msg("%s no longer accepted", old[i].word);
        assert_string_equal(canon, old[i].kind);
        assert_string_equal(ck->def->kind, old[i].kind);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_row_complete),
        cmocka_unit_test(test_names_unique),
        cmocka_unit_test(test_reted_and_retectl_agree),
        cmocka_unit_test(test_old_words_still_accepted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
