/* Unit tests for src/proxy/codec/h2_abuse.c: the premature-reset verdicts,
 * per connection and per client, with caller-supplied time. The client
 * table is per thread and lives across cases: each case uses its own
 * client names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "h2_abuse.h"
#include "worker.h"

/* Envoy's rule: before 500 streams, 250 premature resets close the
 * connection; from 500 streams on, half of them. */
static void test_connection_rule(void **state)
{
    (void)state;
    uint64_t now = 1000;
    assert_int_equal(rete_h2_abuse_premature_reset("conn-a", 300, 249, now), -1);
    assert_int_equal(rete_h2_abuse_premature_reset("conn-a", 300, 250, now),
                     RETE_H2_ABUSE_RAPID_RESET);
    assert_int_equal(rete_h2_abuse_premature_reset("conn-b", 600, 299, now), -1);
    assert_int_equal(rete_h2_abuse_premature_reset("conn-b", 600, 300, now),
                     RETE_H2_ABUSE_RAPID_RESET);
}

/* More than 1000 resets in 10 s, spread over connections none of which
 * trips the connection rule, refuse the client (and only it) until its
 * window ends. */
static void test_client_rule_and_window(void **state)
{
    (void)state;
    uint64_t t0 = 50000;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(rete_h2_abuse_premature_reset("client-x", 1000, 1, t0 + (uint64_t)i), -1);
    assert_false(rete_h2_abuse_client_over_limit("client-x", t0 + 1000));
    assert_int_equal(rete_h2_abuse_premature_reset("client-x", 1000, 1, t0 + 1000),
                     RETE_H2_ABUSE_RAPID_RESET_CLIENT);
    assert_true(rete_h2_abuse_client_over_limit("client-x", t0 + 9999));
    assert_false(rete_h2_abuse_client_over_limit("client-y", t0 + 9999));
    /* the window ends: refused no more, and a new reset starts a new window */
    assert_false(rete_h2_abuse_client_over_limit("client-x", t0 + 10000));
    assert_int_equal(rete_h2_abuse_premature_reset("client-x", 1000, 1, t0 + 10000), -1);
    assert_false(rete_h2_abuse_client_over_limit("client-x", t0 + 10001));
}

/* The table holds 64 clients; a new one evicts the stalest window, so a
 * client over its budget is forgotten once 64 newer clients reset. */
static void test_stalest_client_evicted(void **state)
{
    (void)state;
    uint64_t t0 = 200000;
    for (int i = 0; i < 1001; i++)
        (void)rete_h2_abuse_premature_reset("client-old", 1000, 1, t0);
    assert_true(rete_h2_abuse_client_over_limit("client-old", t0 + 1));
    char name[32];
    for (int i = 0; i < 63; i++) {
        snprintf(name, sizeof name, "client-%d", i);
        (void)rete_h2_abuse_premature_reset(name, 1000, 1, t0 + 1 + (uint64_t)i);
    }
    assert_true(rete_h2_abuse_client_over_limit("client-old", t0 + 100));
    (void)rete_h2_abuse_premature_reset("client-new", 1000, 1, t0 + 100);
    assert_false(rete_h2_abuse_client_over_limit("client-old", t0 + 101));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connection_rule),
        cmocka_unit_test(test_client_rule_and_window),
        cmocka_unit_test(test_stalest_client_evicted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
