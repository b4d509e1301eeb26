/* src/common/golden.c (percentiles) and src/control/golden_agg.c (reted's
 * windows): quantile interpolation, window sums and ageing, grouping, the
 * trust rule and the bounds; plus the CPU cost of ingesting reports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "golden.h"
#include "golden_agg.h"

static void test_quantile(void **state)
{
    (void)state;
    uint64_t h[RETE_GOLDEN_NBUCKETS] = {0};
    assert_true(rete_golden_quantile(h, 0.5) < 0); /* empty */
    /* 100 requests all in (5, 10] ms: p50 halfway, p99 near the top */
    h[3] = 100;
    assert_true(fabs(rete_golden_quantile(h, 0.5) - 7.5) < 1e-9);
    assert_true(fabs(rete_golden_quantile(h, 0.99) - 9.95) < 1e-9);
    /* 90 in [0, 1], 10 in (100, 250]: p50 in the first bucket, p95 in the other */
    memset(h, 0, sizeof(h));
    h[0] = 90;
    h[7] = 10;
    assert_true(fabs(rete_golden_quantile(h, 0.5) - 50.0 / 90) < 1e-9);
    assert_true(fabs(rete_golden_quantile(h, 0.95) - 175) < 1e-9);
    /* past the last bound: the last finite bound */
    memset(h, 0, sizeof(h));
    h[RETE_GOLDEN_NBUCKETS - 1] = 5;
    assert_true(rete_golden_quantile(h, 0.5) == 10000);
}

/* One entry of a report: reporter, route, service, src, dst, counts, all
 * latencies in the bucket `b`. */
static json_t *entry(const char *rep, const char *route, const char *svc, const char *src, const char *dst,
                     int req, int fail, int b)
{
    json_t *h = json_array();
    for (int i = 0; i < RETE_GOLDEN_NBUCKETS; i++)
        json_array_append_new(h, json_integer(i == b ? req : 0));
    return json_pack("[s,s,s,s,s,s,s,s,i,i,o]", rep, route, "demo", svc, src, "demo", dst, "demo", req, fail, h);
}

static json_t *report(json_t *e)
{
    json_t *a = json_array();
    json_array_append_new(a, e);
    return json_pack("{s:s,s:o}", "type", "stats", "entries", a);
}

static void ingest(reted_golden *g, json_t *msg, const char *proxy, int64_t now, reted_golden_result *res)
{
    assert_true(reted_golden_ingest(g, msg, "demo", proxy, now, res));
    json_decref(msg);
}

static const json_t *row(const json_t *q, size_t i)
{
    return json_array_get(json_object_get(q, "items"), i);
}

static json_int_t num(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static void test_windows(void **state)
{
    (void)state;
    reted_golden g;
    reted_golden_init(&g, 10);
    reted_golden_result res;
    /* echo-0 (destination) saw 40 from client-0 and 10 from web-0, over two buckets */
    ingest(&g, report(entry("destination", "unknown", "echo.demo.svc.cluster.local", "client-0", "echo-0", 30, 10, 3)),
           "echo-0", 1000, &res);
    assert_int_equal(res.accepted, 1);
    ingest(&g, report(entry("destination", "unknown", "echo.demo.svc.cluster.local", "web-0", "echo-0", 10, 0, 5)),
           "echo-0", 1010, &res);
    /* client-0 (source) saw its 40 under route r1 */
    ingest(&g, report(entry("source", "r1", "echo.demo.svc.cluster.local", "client-0", "echo-0", 40, 10, 3)),
           "client-0", 1010, &res);

    reted_golden_query q = {.by = RETED_GOLDEN_BY_SERVICE};
    json_t *r = reted_golden_query_run(&g, &q, 1015);
    assert_int_equal(json_array_size(json_object_get(r, "items")), 1);
    assert_string_equal(json_string_value(json_object_get(row(r, 0), "name")), "echo");
    assert_string_equal(json_string_value(json_object_get(row(r, 0), "namespace")), "demo");
    assert_int_equal(num(row(r, 0), "requests"), 40); /* destination's view, not the source's too */
    assert_int_equal(num(row(r, 0), "failures"), 10);
    assert_true(fabs(json_real_value(json_object_get(row(r, 0), "successRate")) - 0.75) < 1e-9);
    assert_true(fabs(json_real_value(json_object_get(row(r, 0), "rps")) - 40.0 / 60) < 1e-3);
    assert_int_equal(num(r, "windowSeconds"), 60);
    json_decref(r);

    q.by = RETED_GOLDEN_BY_EDGE;
    r = reted_golden_query_run(&g, &q, 1015);
    assert_int_equal(json_array_size(json_object_get(r, "items")), 2); /* client-0 and web-0 -> echo-0 */
    assert_string_equal(json_string_value(json_object_get(json_object_get(row(r, 0), "source"), "workload")),
                        "client-0");
    assert_int_equal(num(row(r, 0), "requests"), 30);
    json_t *svcs = json_object_get(row(r, 0), "services"); /* the dashboard's graph joins on it */
    assert_int_equal(json_array_size(svcs), 1);
    assert_string_equal(json_string_value(json_array_get(svcs, 0)), "echo.demo.svc.cluster.local");
    json_decref(r);

    q.by = RETED_GOLDEN_BY_ROUTE; /* the source's view by default */
    r = reted_golden_query_run(&g, &q, 1015);
    assert_int_equal(json_array_size(json_object_get(r, "items")), 1);
    assert_string_equal(json_string_value(json_object_get(row(r, 0), "name")), "r1");
    assert_int_equal(num(row(r, 0), "requests"), 40);
    json_decref(r);

    /* 1 m later the first bucket (t=1000) left the short window, not the long one */
    q.by = RETED_GOLDEN_BY_SERVICE;
    r = reted_golden_query_run(&g, &q, 1065);
    assert_int_equal(num(row(r, 0), "requests"), 10);
    json_decref(r);
    q.long_window = true;
    r = reted_golden_query_run(&g, &q, 1065);
    assert_int_equal(num(row(r, 0), "requests"), 40);
    assert_int_equal(num(r, "windowSeconds"), 600);
    json_decref(r);
    /* after 10 m nothing is left, and a sweep forgets the combinations */
    r = reted_golden_query_run(&g, &q, 1000 + 605); /* t=1000's bucket out, t=1010's in */
    assert_int_equal(num(row(r, 0), "requests"), 10);
    json_decref(r);
    r = reted_golden_query_run(&g, &q, 1010 + 610);
    assert_int_equal(json_array_size(json_object_get(r, "items")), 0);
    json_decref(r);
    reted_golden_sweep(&g, 1010 + 610);
    assert_int_equal(g.n_keys, 0);
    reted_golden_free(&g);
}

/* An edge row names the destination Services it carries, each once (the
 * dashboard draws Services as its graph's nodes). */
static void test_edge_services(void **state)
{
    (void)state;
    reted_golden g;
    reted_golden_init(&g, 10);
    reted_golden_result res;
    ingest(&g, report(entry("destination", "unknown", "echo.demo.svc.cluster.local", "client-0", "echo-0", 3, 0, 3)),
           "echo-0", 1000, &res);
    ingest(&g, report(entry("destination", "unknown", "admin.demo.svc.cluster.local", "client-0", "echo-0", 2, 0, 3)),
           "echo-0", 1000, &res);
    ingest(&g, report(entry("destination", "unknown", "echo.demo.svc.cluster.local", "client-0", "echo-0", 1, 0, 3)),
           "echo-0", 1010, &res);
    reted_golden_query q = {.by = RETED_GOLDEN_BY_EDGE};
    json_t *r = reted_golden_query_run(&g, &q, 1015);
    assert_int_equal(json_array_size(json_object_get(r, "items")), 1);
    assert_int_equal(num(row(r, 0), "requests"), 6);
    const json_t *svcs = json_object_get(row(r, 0), "services");
    assert_int_equal(json_array_size(svcs), 2);
    assert_string_equal(json_string_value(json_array_get(svcs, 0)), "echo.demo.svc.cluster.local");
    assert_string_equal(json_string_value(json_array_get(svcs, 1)), "admin.demo.svc.cluster.local");
    json_decref(r);
    q.by = RETED_GOLDEN_BY_SERVICE; /* other groupings carry no such list */
    r = reted_golden_query_run(&g, &q, 1015);
    assert_null(json_object_get(row(r, 0), "services"));
    json_decref(r);
    reted_golden_free(&g);
}

static void test_refusals_and_bounds(void **state)
{
    (void)state;
    reted_golden g;
    reted_golden_init(&g, 10);
    reted_golden_result res;
    /* a proxy speaks for its own half only */
    ingest(&g, report(entry("destination", "unknown", "s", "client-0", "echo-0", 1, 0, 0)), "other-0", 0, &res);
    ingest(&g, report(entry("source", "r", "s", "client-0", "echo-0", 1, 0, 0)), "echo-0", 0, &res);
    assert_int_equal(res.refused, 1);
    /* malformed: failures above requests, a wrong histogram, a bad reporter */
    ingest(&g, report(entry("source", "r", "s", "client-0", "e", 1, 2, 0)), "client-0", 0, &res);
    assert_int_equal(res.refused, 1);
    ingest(&g, report(entry("nobody", "r", "s", "client-0", "e", 1, 0, 0)), "client-0", 0, &res);
    assert_int_equal(res.refused, 1);
    json_t *bad = json_pack("{s:[[s,s,s,s,s,s,s,s,i,i,[i]]]}", "entries", "source", "r", "demo", "s", "client-0",
                            "demo", "e", "demo", 1, 0, 1);
    ingest(&g, bad, "client-0", 0, &res);
    assert_int_equal(res.refused, 1);
    json_t *empty = json_object();
    reted_golden_ingest(&g, empty, "demo", "x", 0, &res); /* no entries: nothing kept */
    json_decref(empty);
    assert_int_equal(g.n_keys, 0);
    /* the key bound: new combinations past it are dropped and counted */
    for (int i = 0; i < RETED_GOLDEN_MAX_KEYS + 3; i++) {
        char dst[32];
        snprintf(dst, sizeof(dst), "d-%d", i);
        ingest(&g, report(entry("source", "r", "s", "client-0", dst, 1, 0, 0)), "client-0", 0, &res);
    }
    assert_int_equal(g.n_keys, RETED_GOLDEN_MAX_KEYS);
    assert_int_equal(res.dropped, 1);
    reted_golden_free(&g);
}

/* The CPU a report costs reted: 1000 proxies' reports of 20 entries each
 * (the target: under 5% of a core at 1000 proxies, one report per
 * proxy every 10 s, i.e. 100 reports/s). Printed, not asserted. */
static void test_ingest_cost(void **state)
{
    (void)state;
    reted_golden g;
    reted_golden_init(&g, 10);
    enum { PROXIES = 1000, ENTRIES = 4 }; /* 4000 edges: within RETED_GOLDEN_MAX_KEYS */
    char *lines[PROXIES];
    for (int p = 0; p < PROXIES; p++) {
        json_t *a = json_array();
        char src[32], dst[32];
        snprintf(src, sizeof(src), "w-%d", p);
        for (int e = 0; e < ENTRIES; e++) {
            snprintf(dst, sizeof(dst), "w-%d", (p + e + 1) % PROXIES);
            json_array_append_new(a, entry("source", "r", "svc.demo.svc.cluster.local", src, dst, 100, 1, e % 10));
        }
        json_t *m = json_pack("{s:s,s:I,s:o,s:I}", "type", "stats", "interval", (json_int_t)10, "entries", a,
                              "dropped", (json_int_t)0);
        lines[p] = json_dumps(m, JSON_COMPACT);
        json_decref(m);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    for (int round = 0; round < 2; round++) /* the first makes the combinations, the second finds them */
    for (int p = 0; p < PROXIES; p++) {
        char name[32];
        snprintf(name, sizeof(name), "w-%d", p);
        json_t *m = json_loads(lines[p], 0, NULL); /* as proxy_api.c does: parse, then ingest */
        reted_golden_result res;
        reted_golden_ingest(&g, m, "demo", name, 100 + round * 10, &res);
        json_decref(m);
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
    double s = ((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9) / 2;
    reted_golden_query q = {.by = RETED_GOLDEN_BY_EDGE, .reporter = "source", .long_window = true};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    json_t *r = reted_golden_query_run(&g, &q, 115);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
    double qs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("golden: %d reports of %d entries: %.1f ms CPU (%.1f%% of a core at one report per proxy per 10 s); "
           "a 10m edge query over %zu combinations: %.1f ms\n",
           PROXIES, ENTRIES, s * 1e3, s / 10 * 100, g.n_keys, qs * 1e3);
    assert_int_equal(json_array_size(json_object_get(r, "items")), PROXIES * ENTRIES);
    json_decref(r);
    for (int p = 0; p < PROXIES; p++)
        free(lines[p]);
    reted_golden_free(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantile),
        cmocka_unit_test(test_windows),
        cmocka_unit_test(test_edge_services),
        cmocka_unit_test(test_refusals_and_bounds),
        cmocka_unit_test(test_ingest_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
