/* Unit tests for src/proxy/http/trace_ctx.c: traceparent and B3 parsing,
 * every input flush against an unreadable page (guarded.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "guarded.h"
#include "trace_ctx.h"

typedef bool (*parse_fn)(rete_view v, rete_trace_ctx *out);

static bool parse(parse_fn fn, const char *s, rete_trace_ctx *c)
{
    guarded g = guard_copy(s, strlen(s));
    bool ok = fn(rete_view_make(g.p, strlen(s)), c);
    guard_free(&g);
    return ok;
}

static void hex_is(const uint8_t *b, size_t n, const char *want)
{
    char h[33];
    rete_trace_hex(h, b, n);
    assert_string_equal(h, want);
}

static void test_traceparent(void **state)
{
    (void)state;
    rete_trace_ctx c;
    assert_true(parse(rete_trace_parse_traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &c));
    hex_is(c.trace_id, 16, "4bf92f3577b34da6a3ce929d0e0e4736");
    hex_is(c.span_id, 8, "00f067aa0ba902b7");
    assert_true(c.has_ids);
    assert_int_equal(c.sampled, 1);
    assert_true(parse(rete_trace_parse_traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &c));
    assert_int_equal(c.sampled, 0);
    /* a later version: extra fields after a '-' are ignored */
    assert_true(parse(rete_trace_parse_traceparent, "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz", &c));
    static const char *const bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",    /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",  /* version 00 is exactly 55 */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* version ff */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero span id */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(parse(rete_trace_parse_traceparent, bad[i], &c));
}

static void test_b3_single(void **state)
{
    (void)state;
    rete_trace_ctx c;
    assert_true(parse(rete_trace_parse_b3, "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90", &c));
    hex_is(c.trace_id, 16, "80f198ee56343ba864fe8b2a57d3eff7");
    hex_is(c.span_id, 8, "e457b5a2e4d86bd1");
    assert_int_equal(c.sampled, 1);
    assert_true(parse(rete_trace_parse_b3, "80f198ee56343ba8-e457b5a2e4d86bd1", &c));
    hex_is(c.trace_id, 16, "000000000000000080f198ee56343ba8");
    assert_int_equal(c.sampled, -1);
    assert_true(parse(rete_trace_parse_b3, "80f198ee56343ba8-e457b5a2e4d86bd1-d", &c));
    assert_int_equal(c.sampled, 1);
    assert_true(parse(rete_trace_parse_b3, "0", &c));
    assert_false(c.has_ids);
    assert_int_equal(c.sampled, 0);
    assert_true(parse(rete_trace_parse_b3, "d", &c));
    assert_int_equal(c.sampled, 1);
    static const char *const bad[] = {
        "", "x", "2", "80f198ee56343ba8", "80f198ee56343ba8-", "80f198ee56343ba8-e457b5a2e4d86bd1-",
        "80f198ee56343ba8-e457b5a2e4d86bd1-2", "80f198ee56343ba8-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-x",
        "80f198ee56343ba8-e457b5a2e4d86bd1-1-05e3", "80f198ee56343ba-e457b5a2e4d86bd1",
        "0000000000000000-e457b5a2e4d86bd1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(parse(rete_trace_parse_b3, bad[i], &c));
}

static void test_b3_multi(void **state)
{
    (void)state;
    rete_trace_ctx c;
    assert_true(rete_trace_parse_b3_multi(RETE_VIEW_LIT("463ac35c9f6413ad48485a3953bb6124"),
                                          RETE_VIEW_LIT("a2fb4a1d1a96d312"), RETE_VIEW_LIT("1"), RETE_VIEW_NULL,
                                          &c));
    assert_true(c.has_ids);
    assert_int_equal(c.sampled, 1);
    assert_true(rete_trace_parse_b3_multi(RETE_VIEW_NULL, RETE_VIEW_NULL, RETE_VIEW_LIT("false"), RETE_VIEW_NULL, &c));
    assert_false(c.has_ids);
    assert_int_equal(c.sampled, 0);
    assert_true(rete_trace_parse_b3_multi(RETE_VIEW_NULL, RETE_VIEW_NULL, RETE_VIEW_NULL, RETE_VIEW_LIT("1"), &c));
    assert_int_equal(c.sampled, 1);
    /* a span id without a trace id, a bad decision, nothing at all */
    assert_false(rete_trace_parse_b3_multi(RETE_VIEW_NULL, RETE_VIEW_LIT("a2fb4a1d1a96d312"), RETE_VIEW_NULL,
                                           RETE_VIEW_NULL, &c));
    assert_false(rete_trace_parse_b3_multi(RETE_VIEW_NULL, RETE_VIEW_NULL, RETE_VIEW_LIT("yes"), RETE_VIEW_NULL, &c));
    assert_false(rete_trace_parse_b3_multi(RETE_VIEW_NULL, RETE_VIEW_NULL, RETE_VIEW_NULL, RETE_VIEW_NULL, &c));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traceparent),
        cmocka_unit_test(test_b3_single),
        cmocka_unit_test(test_b3_multi),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
