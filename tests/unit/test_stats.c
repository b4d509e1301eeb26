/* Unit tests for src/control/stats.c: reted's metric families on the
 * shared registry, tested alone (no reted, no listener). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expo_text.h"

#include "stats.h"


/* Every name, label and type that docs/operations.md, the system tests and
 * bench/cpsim.py read is declared, and every series shows from the start. */
static void test_every_family_declared(void **state)
{
    (void)state;
    reted_stats s;
    reted_stats_init(&s);
    char *out = reted_stats_render(&s, NULL);
    static const char *const types[][2] = {
        {"rete_reted_proxies", "gauge"},
        {"rete_reted_config_pushes_total", "counter"},
        {"rete_reted_config_compiles_total", "counter"},
        {"rete_reted_config_responses_total", "counter"},
        {"rete_reted_certificates_total", "counter"},
        {"rete_reted_applies_total", "counter"},
        {"rete_reted_store_revision", "gauge"},
        {"rete_reted_ca_expiry_timestamp_seconds", "gauge"},
        {"rete_reted_stream_messages_queued", "gauge"},
        {"rete_reted_stream_buffered_bytes", "gauge"},
        {"rete_reted_stream_buffered_bytes_limit", "gauge"},
        {"rete_reted_stream_shared_bytes_pending", "gauge"},
        {"rete_reted_streams_closed_behind_total", "counter"},
        {"rete_reted_streams_closed_cert_expired_total", "counter"},
        {"rete_reted_http_connections", "gauge"},
        {"rete_reted_http_connections_limit", "gauge"},
        {"rete_reted_http_refused_total", "counter"},
        {"rete_reted_http_idle_closed_total", "counter"},
        {"rete_reted_snapshots", "gauge"},
        {"rete_reted_snapshot_bytes", "gauge"},
        {"rete_reted_index_resources", "gauge"},
        {"rete_reted_heap_bytes", "gauge"},
        {"rete_reted_registrations_total", "counter"},
        {"rete_reted_registrations_refused_total", "counter"},
    };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        char want[160];
        snprintf(want, sizeof(want), "# TYPE %s %s\n", types[i][0], types[i][1]);
        if (!strstr(out, want))
            fail_msg("missing: %s", want);
    }
    assert_true(value_of(out, "rete_reted_proxies{state=\"registered\"}") == 0);
    assert_true(value_of(out, "rete_reted_http_refused_total{listener=\"xds\",reason=\"not_found\"}") == 0);
    assert_true(value_of(out, "rete_reted_registrations_refused_total{reason=\"egress\"}") == 0);
    assert_true(value_of(out, "rete_reted_stream_buffered_bytes_limit") == RETE_HTTP_STREAM_LIMIT);
    assert_null(strstr(out, "rete_metrics_series_dropped_total"));
    free(out);
    reted_stats_free(&s);
}

/* reted_count adds one to its own series only. */
static void test_counting(void **state)
{
    (void)state;
    reted_stats s;
    reted_stats_init(&s);
    reted_count(&s, s.pushes);
    reted_count(&s, s.pushes);
    reted_count(&s, s.nacks);
    reted_count(&s, s.registrations_refused[RETED_REG_OWNER]);
    char *out = reted_stats_render(&s, NULL);
    assert_true(value_of(out, "rete_reted_config_pushes_total") == 2);
    assert_true(value_of(out, "rete_reted_config_responses_total{result=\"nack\"}") == 1);
    assert_true(value_of(out, "rete_reted_config_responses_total{result=\"ack\"}") == 0);
    assert_true(value_of(out, "rete_reted_registrations_refused_total{reason=\"owner\"}") == 1);
    assert_true(value_of(out, "rete_reted_registrations_refused_total{reason=\"address\"}") == 0);
    assert_int_equal(rete_metrics_counter_value(s.reg, s.pushes), 2);
    free(out);
    reted_stats_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_family_declared),
        cmocka_unit_test(test_counting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
