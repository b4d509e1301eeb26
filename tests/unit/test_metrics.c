/* Unit tests for src/common/metrics.c and mesh_metrics.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expo_text.h"
#include <sys/wait.h>
#include <unistd.h>

#include "mesh_metrics.h"
#include "metrics.h"

static rete_metric_family declare(rete_metrics *reg, const char *name, rete_metric_type type,
                                  const char *const *labels, size_t nlabels)
{
    rete_metric_desc d = {
        .name = name, .help = "h", .type = type, .labels = labels, .nlabels = nlabels};
    rete_metric_family f;
    assert_int_equal(rete_metrics_declare(reg, &d, &f), RETE_OK);
    return f;
}

static rete_metric series1(rete_metrics *reg, rete_metric_family f, const char *v)
{
    rete_view val = rete_view_cstr(v);
    rete_metric m;
    assert_int_equal(rete_metrics_series(reg, f, &val, 1, &m), RETE_OK);
    return m;
}


static const char *const l_code[] = {"code"};

static void test_counter_summed_over_shards(void **state)
{
    (void)state;
    rete_metrics *reg = rete_metrics_new();
    rete_metric_family f = declare(reg, "t_requests_total", RETE_METRIC_COUNTER, l_code, 1);
    rete_metric ok = series1(reg, f, "200");
    rete_metric err = series1(reg, f, "500");
    rete_metrics_shard *sh[4];
    for (int i = 0; i < 4; i++)
        sh[i] = rete_metrics_shard_new(reg);
    for (int i = 0; i < 4; i++) {
        rete_metrics_inc(sh[i], ok, (uint64_t)(i + 1));
        rete_metrics_inc(sh[i], err, 10);
    }
    char *out = rete_metrics_render(reg, NULL);
    assert_true(value_of(out, "t_requests_total{code=\"200\"}") == 10);
    assert_true(value_of(out, "t_requests_total{code=\"500\"}") == 40);
    free(out);
    /* A freed shard's counts are folded into the registry. */
    rete_metrics_shard_free(&sh[2]);
    assert_null(sh[2]);
    out = rete_metrics_render(reg, NULL);
    assert_true(value_of(out, "t_requests_total{code=\"200\"}") == 10);
    free(out);
    assert_int_equal(rete_metrics_counter_value(reg, ok), 10);
    assert_int_equal(rete_metrics_counter_value(reg, err), 40);
    /* The same combination resolves to the same handle, via registry or shard cache. */
    rete_metric again;
    rete_view v = RETE_VIEW_LIT("200");
    assert_int_equal(rete_metrics_shard_series(sh[0], f, &v, 1, &again), RETE_OK);
    assert_int_equal(again.cell, ok.cell);
    assert_int_equal(rete_metrics_shard_series(sh[0], f, &v, 1, &again), RETE_OK);
    assert_int_equal(again.cell, ok.cell);
    rete_metrics_shard_free(&sh[0]);
    rete_metrics_shard_free(&sh[1]);
    rete_metrics_shard_free(&sh[3]);
    rete_metrics_free(reg);
}

static void test_histogram_bucket_edges(void **state)
{
    (void)state;
    rete_metrics *reg = rete_metrics_new();
    static const double b[] = {1, 2.5, 5};
    rete_metric_desc d = {.name = "t_latency_seconds",
                          .help = "Latency.",
                          .type = RETE_METRIC_HISTOGRAM,
                          .buckets = b,
                          .nbuckets = 3};
    rete_metric_family f;
    assert_int_equal(rete_metrics_declare(reg, &d, &f), RETE_OK);
    rete_metric m;
    assert_int_equal(rete_metrics_series(reg, f, NULL, 0, &m), RETE_OK);
    rete_metrics_shard *s = rete_metrics_shard_new(reg);
    const double obs[] = {0, 1, 1.0000001, 2.5, 2.5000001, 5, 5.5, 1e9};
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
        rete_metrics_observe(s, m, obs[i]);
    char *out = rete_metrics_render(reg, NULL);
    assert_string_equal(out, "# HELP t_latency_seconds Latency.\n"
                             "# TYPE t_latency_seconds histogram\n"
                             "t_latency_seconds_bucket{le=\"1\"} 2\n"
                             "t_latency_seconds_bucket{le=\"2.5\"} 4\n"
                             "t_latency_seconds_bucket{le=\"5\"} 6\n"
                             "t_latency_seconds_bucket{le=\"+Inf\"} 8\n"
                             "t_latency_seconds_sum 1.0000000175000002e+09\n"
                             "t_latency_seconds_count 8\n");
    free(out);
    rete_metrics_shard_free(&s);
    rete_metrics_free(reg);
}

static void test_default_buckets(void **state)
{
    (void)state;
    rete_metrics *reg = rete_metrics_new();
    rete_metric_family f = declare(reg, "t_duration_milliseconds", RETE_METRIC_HISTOGRAM, NULL, 0);
    rete_metric m;
    assert_int_equal(rete_metrics_series(reg, f, NULL, 0, &m), RETE_OK);
    rete_metrics_shard *s = rete_metrics_shard_new(reg);
    rete_metrics_observe(s, m, 0.5);
    rete_metrics_observe(s, m, 1800000);
    rete_metrics_observe(s, m, 3600001);
    char *out = rete_metrics_render(reg, NULL);
    assert_true(value_of(out, "t_duration_milliseconds_bucket{le=\"0.5\"}") == 1);
    assert_true(value_of(out, "t_duration_milliseconds_bucket{le=\"1000000\"}") == -1);
    assert_true(value_of(out, "t_duration_milliseconds_bucket{le=\"600000\"}") == 1);
    assert_true(value_of(out, "t_duration_milliseconds_bucket{le=\"1.8e+06\"}") == 2);
    assert_true(value_of(out, "t_duration_milliseconds_bucket{le=\"3.6e+06\"}") == 2);
    assert_true(value_of(out, "t_duration_milliseconds_bucket{le=\"+Inf\"}") == 3);
    assert_int_equal(rete_metrics_default_nbuckets, 19);
    free(out);
    rete_metrics_shard_free(&s);
    rete_metrics_free(reg);
}

static void test_label_escaping(void **state)
{
    (void)state;
    rete_metrics *reg = rete_metrics_new();
    rete_metric_desc d = {.name = "t_x_total",
                          .help = "back\\slash and\nnewline \"quoted\"",
                          .type = RETE_METRIC_COUNTER,
                          .labels = l_code,
                          .nlabels = 1};
    rete_metric_family f;
    assert_int_equal(rete_metrics_declare(reg, &d, &f), RETE_OK);
    series1(reg, f, "a\"b\\c\nd");
    rete_view bad = rete_view_make("x\xff\xc3\xa9y\xed\xa0\x80", 8); /* 0xff, é, a surrogate */
    rete_metric m;
    assert_int_equal(rete_metrics_series(reg, f, &bad, 1, &m), RETE_OK);
    char *out = rete_metrics_render(reg, NULL);
    assert_string_equal(
        out, "# HELP t_x_total back\\\\slash and\\nnewline \"quoted\"\n"
             "# TYPE t_x_total counter\n"
             "t_x_total{code=\"a\\\"b\\\\c\\nd\"} 0\n"
             "t_x_total{code=\"x\xef\xbf\xbd\xc3\xa9y\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"} 0\n");
    free(out);
    rete_metrics_free(reg);
}

static void test_long_values_are_cut(void **state)
{
    (void)state;
    rete_metrics *reg = rete_metrics_new();
    rete_metric_family f = declare(reg, "t_long_total", RETE_METRIC_COUNTER, l_code, 1);
    static char a[RETE_METRICS_MAX_VALUE_LEN + 10], b[RETE_METRICS_MAX_VALUE_LEN + 20];
    memset(a, 'x', sizeof(a) - 1);
    memset(b, 'x', sizeof(b) - 1);
    rete_metric ma = series1(reg, f, a), mb = series1(reg, f, b);
    assert_int_equal(ma.cell, mb.cell);
    char *out = rete_metrics_render(reg, NULL);
    const char *q = strstr(out, "{code=\"");
    assert_non_null(q);
    assert_int_equal(strspn(q + 7, "x"), RETE_METRICS_MAX_VALUE_LEN);
    free(out);
    rete_metrics_free(reg);
}

static void test_series_bound_and_overflow(void **state)
{
    (void)state;
    rete_metrics *reg = rete_metrics_new();
    static const char *const l2[] = {"a", "b"};
    rete_metric_desc d = {.name = "t_y_total",
                          .help = "h",
                          .type = RETE_METRIC_COUNTER,
                          .labels = l2,
                          .nlabels = 2,
                          .max_series = 3};
    rete_metric_family f;
    assert_int_equal(rete_metrics_declare(reg, &d, &f), RETE_OK);
    rete_metrics_shard *s = rete_metrics_shard_new(reg);
    char buf[16];
    rete_metric first = {0}, over = {0};
    for (int i = 0; i < 5; i++) {
        snprintf(buf, sizeof(buf), "v%d", i);
        rete_view v[2] = {rete_view_cstr(buf), RETE_VIEW_LIT("x")};
        rete_metric m;
        bool stable = false;
        assert_int_equal(rete_metrics_shard_series_stable(s, f, v, 2, &m, &stable), RETE_OK);
        assert_int_equal(stable, i < 3); /* the overflow series is not the combination's own */
        rete_metrics_inc(s, m, 1);
        if (i == 0)
            first = m;
        if (i == 3)
            over = m;
    }
    /* An existing series stays reachable after the bound is hit. */
    rete_view v0[2] = {RETE_VIEW_LIT("v0"), RETE_VIEW_LIT("x")};
    rete_metric m0;
    assert_int_equal(rete_metrics_series(reg, f, v0, 2, &m0), RETE_OK);
    assert_int_equal(m0.cell, first.cell);
    assert_int_not_equal(over.cell, first.cell);
    bool stable = false;
    assert_int_equal(rete_metrics_shard_series_stable(s, f, v0, 2, &m0, &stable), RETE_OK);
    assert_true(stable); /* from the shard's cache */
    assert_int_equal(m0.cell, first.cell);
    /* Wrong label count. */
    assert_int_equal(rete_metrics_series(reg, f, v0, 1, &m0), RETE_EINVAL);
    char *out = rete_metrics_render(reg, NULL);
    assert_string_equal(out, "# HELP rete_metrics_series_dropped_total Series not created because "
                             "their family reached its series bound; their samples are counted in "
                             "the family's overflow series.\n"
                             "# TYPE rete_metrics_series_dropped_total counter\n"
                             "rete_metrics_series_dropped_total{family=\"t_y_total\"} 2\n"
                             "# HELP t_y_total h\n"
                             "# TYPE t_y_total counter\n"
                             "t_y_total{a=\"v0\",b=\"x\"} 1\n"
                             "t_y_total{a=\"v1\",b=\"x\"} 1\n"
                             "t_y_total{a=\"v2\",b=\"x\"} 1\n"
                             "t_y_total{a=\"overflow\",b=\"overflow\"} 2\n");
    free(out);
    rete_metrics_shard_free(&s);
    rete_metrics_free(reg);
}

static uint64_t cb_calls;
static double cb_value(void *arg)
{
    cb_calls++;
    return *(double *)arg;
}

static void test_gauges(void **state)
{
    (void)state;
    rete_metrics *reg = rete_metrics_new();
    rete_metric_family ver = declare(reg, "t_config_version", RETE_METRIC_GAUGE, NULL, 0);
    rete_metric_family act = declare(reg, "t_active", RETE_METRIC_GAUGE, l_code, 1);
    rete_metric_family set = declare(reg, "t_set", RETE_METRIC_GAUGE, NULL, 0);
    rete_metric_family cnt = declare(reg, "t_c_total", RETE_METRIC_COUNTER, NULL, 0);
    rete_metric mver, mset, mcnt;
    assert_int_equal(rete_metrics_series(reg, ver, NULL, 0, &mver), RETE_OK);
    assert_int_equal(rete_metrics_series(reg, set, NULL, 0, &mset), RETE_OK);
    assert_int_equal(rete_metrics_series(reg, cnt, NULL, 0, &mcnt), RETE_OK);
    double version = 42;
    assert_int_equal(rete_metrics_gauge_fn(reg, mver, cb_value, &version), RETE_OK);
    assert_int_equal(rete_metrics_gauge_fn(reg, mcnt, cb_value, &version), RETE_EINVAL);
    rete_metric ma = series1(reg, act, "l1");
    rete_metrics_shard *s1 = rete_metrics_shard_new(reg), *s2 = rete_metrics_shard_new(reg);
    rete_metrics_gauge_add(s1, ma, 3);
    rete_metrics_gauge_add(s2, ma, -5);
    rete_metrics_gauge_set(reg, mset, 0.25);
    cb_calls = 0;
    char *out = rete_metrics_render(reg, NULL);
    assert_int_equal(cb_calls, 1);
    assert_true(value_of(out, "t_config_version") == 42);
    assert_true(value_of(out, "t_active{code=\"l1\"}") == -2);
    assert_true(value_of(out, "t_set") == 0.25);
    assert_true(value_of(out, "t_c_total") == 0);
    free(out);
    version = 43;
    rete_metrics_gauge_set(reg, mset, 1e300);
    out = rete_metrics_render(reg, NULL);
    assert_true(value_of(out, "t_config_version") == 43);
    assert_non_null(strstr(out, "\nt_set 1e+300\n"));
    free(out);
    rete_metrics_shard_free(&s1);
    rete_metrics_shard_free(&s2);
    rete_metrics_free(reg);
}

static uint64_t cb_count(void *arg)
{
    cb_calls++;
    return *(uint64_t *)arg;
}

/* A counter kept by another module is read at scrape time, labelled like any
 * series; a counter callback on a gauge (or the reverse) is refused. */
static void test_counter_callbacks(void **state)
{
    (void)state;
    rete_metrics *reg = rete_metrics_new();
    rete_metric_family ref = declare(reg, "t_refused_total", RETE_METRIC_COUNTER, l_code, 1);
    rete_metric_family own = declare(reg, "t_own_total", RETE_METRIC_COUNTER, NULL, 0);
    rete_metric_family g = declare(reg, "t_g", RETE_METRIC_GAUGE, NULL, 0);
    rete_metric a = series1(reg, ref, "a"), b = series1(reg, ref, "b");
    rete_metric mown, mg;
    assert_int_equal(rete_metrics_series(reg, own, NULL, 0, &mown), RETE_OK);
    assert_int_equal(rete_metrics_series(reg, g, NULL, 0, &mg), RETE_OK);
    uint64_t na = 7, nb = 0;
    assert_int_equal(rete_metrics_counter_fn(reg, a, cb_count, &na), RETE_OK);
    assert_int_equal(rete_metrics_counter_fn(reg, b, cb_count, &nb), RETE_OK);
    assert_int_equal(rete_metrics_counter_fn(reg, mg, cb_count, &na), RETE_EINVAL);
    assert_int_equal(rete_metrics_counter_fn(reg, mown, NULL, &na), RETE_EINVAL);
    double d = 1;
    assert_int_equal(rete_metrics_gauge_fn(reg, a, cb_value, &d), RETE_EINVAL);
    rete_metrics_shard *s = rete_metrics_shard_new(reg);
    rete_metrics_inc(s, mown, 3);
    cb_calls = 0;
    char *out = rete_metrics_render(reg, NULL);
    assert_int_equal(cb_calls, 2);
    assert_non_null(strstr(out, "# TYPE t_refused_total counter\n"
                                "t_refused_total{code=\"a\"} 7\n"
                                "t_refused_total{code=\"b\"} 0\n"));
    assert_true(value_of(out, "t_own_total") == 3);
    free(out);
    na = 18446744073709551615u; /* counts are rendered as integers, never as floats */
    nb = 5;
    out = rete_metrics_render(reg, NULL);
    assert_non_null(strstr(out, "t_refused_total{code=\"a\"} 18446744073709551615\n"));
    assert_true(value_of(out, "t_refused_total{code=\"b\"}") == 5);
    free(out);
    rete_metrics_shard_free(&s);
    rete_metrics_free(reg);
}

/* Floats are spelled as Go's strconv.FormatFloat(v, 'g', -1, 64). */
static void test_float_format(void **state)
{
    (void)state;
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {0, "0"},
        {0.1, "0.1"},
        {-2.5, "-2.5"},
        {1e-5, "1e-05"},
        {0.0001, "0.0001"},
        {123456, "123456"},
        {999999, "999999"},
        {1234567, "1.234567e+06"},
        {1790000000, "1.79e+09"},
        {1.0 / 3, "0.3333333333333333"},
        {1e300, "1e+300"},
        {NAN, "NaN"},
        {INFINITY, "+Inf"},
        {-INFINITY, "-Inf"},
    };
    rete_metrics *reg = rete_metrics_new();
    rete_metric_family f = declare(reg, "t_g", RETE_METRIC_GAUGE, NULL, 0);
    rete_metric m;
    assert_int_equal(rete_metrics_series(reg, f, NULL, 0, &m), RETE_OK);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rete_metrics_gauge_set(reg, m, cases[i].v);
        char *out = rete_metrics_render(reg, NULL);
        char want[64];
        snprintf(want, sizeof(want), "\nt_g %s\n", cases[i].want);
        if (!strstr(out, want))
            fail_msg("%s: want %s in\n%s", cases[i].want, want, out);
        free(out);
    }
    rete_metrics_free(reg);
}

static void test_render_exact(void **state)
{
    (void)state;
    rete_metrics *reg = rete_metrics_new();
    static const double b[] = {0.5, 10};
    static const char *const l2[] = {"method", "code"};
    rete_metric_desc dh = {.name = "b_duration_milliseconds",
                           .help = "Duration.",
                           .type = RETE_METRIC_HISTOGRAM,
                           .labels = l_code,
                           .nlabels = 1,
                           .buckets = b,
                           .nbuckets = 2};
    rete_metric_desc dc = {.name = "a_requests_total",
                           .help = "Requests.",
                           .type = RETE_METRIC_COUNTER,
                           .labels = l2,
                           .nlabels = 2};
    rete_metric_desc dg = {.name = "c_up", .help = "Up.", .type = RETE_METRIC_GAUGE};
    rete_metric_family fh, fc, fg;
    assert_int_equal(rete_metrics_declare(reg, &dh, &fh), RETE_OK);
    assert_int_equal(rete_metrics_declare(reg, &dc, &fc), RETE_OK);
    assert_int_equal(rete_metrics_declare(reg, &dg, &fg), RETE_OK);
    rete_metrics_shard *s = rete_metrics_shard_new(reg);
    rete_view v[2] = {RETE_VIEW_LIT("GET"), RETE_VIEW_LIT("200")};
    rete_metric mc, mh, mg;
    assert_int_equal(rete_metrics_shard_series(s, fc, v, 2, &mc), RETE_OK);
    assert_int_equal(rete_metrics_shard_series(s, fh, &v[1], 1, &mh), RETE_OK);
    assert_int_equal(rete_metrics_series(reg, fg, NULL, 0, &mg), RETE_OK);
    rete_metrics_inc(s, mc, 7);
    rete_metrics_observe(s, mh, 0.25);
    rete_metrics_observe(s, mh, 10);
    rete_metrics_observe(s, mh, 11);
    rete_metrics_gauge_set(reg, mg, 1);
    size_t len;
    char *out = rete_metrics_render(reg, &len);
    const char *want = "# HELP a_requests_total Requests.\n"
                       "# TYPE a_requests_total counter\n"
                       "a_requests_total{method=\"GET\",code=\"200\"} 7\n"
                       "# HELP b_duration_milliseconds Duration.\n"
                       "# TYPE b_duration_milliseconds histogram\n"
                       "b_duration_milliseconds_bucket{code=\"200\",le=\"0.5\"} 1\n"
                       "b_duration_milliseconds_bucket{code=\"200\",le=\"10\"} 2\n"
                       "b_duration_milliseconds_bucket{code=\"200\",le=\"+Inf\"} 3\n"
                       "b_duration_milliseconds_sum{code=\"200\"} 21.25\n"
                       "b_duration_milliseconds_count{code=\"200\"} 3\n"
                       "# HELP c_up Up.\n"
                       "# TYPE c_up gauge\n"
                       "c_up 1\n";
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    free(out);
    rete_metrics_shard_free(&s);
    rete_metrics_free(reg);
}

static void test_declare_validation(void **state)
{
    (void)state;
    rete_metrics *reg = rete_metrics_new();
    rete_metric_family f;
    static const char *const bad_le[] = {"le"};
    static const char *const bad_dunder[] = {"__x"};
    static const char *const dup[] = {"a", "a"};
    static const char *const bad_char[] = {"a-b"};
    static const double unsorted[] = {1, 1};
    const rete_metric_desc bad[] = {
        {.name = "no_suffix", .help = "h", .type = RETE_METRIC_COUNTER},
        {.name = "1abc_total", .help = "h", .type = RETE_METRIC_COUNTER},
        {.name = "x", .help = NULL, .type = RETE_METRIC_GAUGE},
        {.name = "x", .help = "h", .type = RETE_METRIC_GAUGE, .labels = bad_le, .nlabels = 1},
        {.name = "x", .help = "h", .type = RETE_METRIC_GAUGE, .labels = bad_dunder, .nlabels = 1},
        {.name = "x", .help = "h", .type = RETE_METRIC_GAUGE, .labels = dup, .nlabels = 2},
        {.name = "x", .help = "h", .type = RETE_METRIC_GAUGE, .labels = bad_char, .nlabels = 1},
        {.name = "x",
         .help = "h",
         .type = RETE_METRIC_HISTOGRAM,
         .buckets = unsorted,
         .nbuckets = 2},
        {.name = "x", .help = "h", .type = (rete_metric_type)9},
        {.name = "rete_metrics_series_dropped_total", .help = "h", .type = RETE_METRIC_COUNTER},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(rete_metrics_declare(reg, &bad[i], &f), RETE_EINVAL);
    declare(reg, "ok_total", RETE_METRIC_COUNTER, NULL, 0);
    rete_metric_desc again = {.name = "ok_total", .help = "h", .type = RETE_METRIC_COUNTER};
    assert_int_equal(rete_metrics_declare(reg, &again, &f), RETE_EINVAL);
    rete_metric m;
    assert_int_equal(rete_metrics_series(reg, (rete_metric_family){200}, NULL, 0, &m), RETE_EINVAL);
    rete_metrics_free(reg);
}

/* Enough histogram series to span several segments, created while shards exist. */
static void test_growth_across_segments(void **state)
{
    (void)state;
    rete_metrics *reg = rete_metrics_new();
    rete_metrics_shard *s = rete_metrics_shard_new(reg);
    rete_metric_family f = declare(reg, "t_h", RETE_METRIC_HISTOGRAM, l_code, 1);
    enum { N = 1000 }; /* 21 cells each: about 5 segments */
    static rete_metric ms[N];
    char buf[16];
    for (int i = 0; i < N; i++) {
        snprintf(buf, sizeof(buf), "%d", i);
        rete_view v = rete_view_cstr(buf);
        assert_int_equal(rete_metrics_shard_series(s, f, &v, 1, &ms[i]), RETE_OK);
        for (int k = 0; k <= i % 3; k++)
            rete_metrics_observe(s, ms[i], 7);
    }
    rete_metrics_shard *late = rete_metrics_shard_new(reg);
    rete_metrics_observe(late, ms[N - 1], 7);
    char *out = rete_metrics_render(reg, NULL);
    assert_true(value_of(out, "t_h_count{code=\"0\"}") == 1);
    assert_true(value_of(out, "t_h_count{code=\"998\"}") == 3);
    assert_true(value_of(out, "t_h_bucket{code=\"999\",le=\"5\"}") == 0);
    assert_true(value_of(out, "t_h_bucket{code=\"999\",le=\"10\"}") == 2);
    assert_true(value_of(out, "t_h_sum{code=\"999\"}") == 14);
    free(out);
    rete_metrics_shard_free(&late);
    rete_metrics_shard_free(&s);
    rete_metrics_free(reg);
}

/* ---- concurrency ---- */

enum { WRITERS = 4, ITERS = 1000000 };

/* cmocka asserts longjmp on the main thread only: threads record failures. */
static atomic_int scraping, thread_failures;

struct writer {
    rete_metrics *reg;
    rete_metric_family fc, fh;
    rete_metric total;
    int id;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    rete_metrics_shard *s = rete_metrics_shard_new(w->reg);
    char buf[32];
    rete_metric dyn = {0};
    for (int i = 0; i < ITERS; i++) {
        rete_metrics_inc(s, w->total, 1);
        if (i % 4096 == 0) { /* new series while the scraper runs: segments grow */
            snprintf(buf, sizeof(buf), "w%d-%d", w->id, i / 4096);
            rete_view v = rete_view_cstr(buf);
            if (rete_metrics_shard_series(s, w->fh, &v, 1, &dyn) != RETE_OK)
                atomic_fetch_add(&thread_failures, 1);
        }
        rete_metrics_observe(s, dyn, (double)(i % 100));
    }
    /* A worker that exits: its counts must survive. */
    if (w->id == 0)
        rete_metrics_shard_free(&s);
    return s;
}

static void *scraper_main(void *arg)
{
    rete_metrics *reg = arg;
    double last = 0;
    int renders = 0;
    while (scraping || renders < 3) {
        size_t len;
        char *out = rete_metrics_render(reg, &len);
        double v = value_of(out, "t_ops_total{code=\"all\"}");
        if (v < last) /* counters never go backwards */
            atomic_fetch_add(&thread_failures, 1);
        last = v;
        free(out);
        renders++;
    }
    return NULL;
}

static void test_concurrent_writers_and_scraper(void **state)
{
    (void)state;
    rete_metrics *reg = rete_metrics_new();
    struct writer w[WRITERS];
    rete_metric_family fc = declare(reg, "t_ops_total", RETE_METRIC_COUNTER, l_code, 1);
    rete_metric_family fh = declare(reg, "t_lat", RETE_METRIC_HISTOGRAM, l_code, 1);
    rete_metric total = series1(reg, fc, "all");
    pthread_t tw[WRITERS], ts;
    scraping = 1;
    assert_int_equal(pthread_create(&ts, NULL, scraper_main, reg), 0);
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (struct writer){.reg = reg, .fc = fc, .fh = fh, .total = total, .id = i};
        assert_int_equal(pthread_create(&tw[i], NULL, writer_main, &w[i]), 0);
    }
    rete_metrics_shard *shards[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        void *ret;
        assert_int_equal(pthread_join(tw[i], &ret), 0);
        shards[i] = ret;
    }
    scraping = 0;
    assert_int_equal(pthread_join(ts, NULL), 0);
    assert_int_equal(thread_failures, 0);
    char *out = rete_metrics_render(reg, NULL);
    assert_true(value_of(out, "t_ops_total{code=\"all\"}") == (double)WRITERS * ITERS);
    /* Each writer created ITERS/4096 + 1 histogram series, 4096 observations each but the last. */
    assert_true(value_of(out, "t_lat_count{code=\"w1-0\"}") == 4096);
    assert_true(value_of(out, "t_lat_count{code=\"w0-3\"}") == 4096);
    free(out);
    for (int i = 0; i < WRITERS; i++)
        rete_metrics_shard_free(&shards[i]);
    rete_metrics_free(reg);
}

/* ---- mesh families and promtool ---- */

static int run_promtool(const char *text, char *report, size_t cap)
{
    char path[] = "/tmp/rete-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t got = fread(report, 1, cap - 1, p);
    report[got] = '\0';
    int status = pclose(p);
    unlink(path);
    return status;
}

static bool have_promtool(void)
{
    return system("command -v promtool >/dev/null 2>&1") == 0;
}

static void fill_mesh(rete_metrics *reg, rete_mesh_metrics *mm, rete_metrics_shard *s)
{
    rete_view v[RETE_MESH_HTTP_NLABELS];
    for (int i = 0; i < RETE_MESH_HTTP_NLABELS; i++)
        v[i] = RETE_VIEW_LIT("unknown");
    v[RETE_MESH_L_REPORTER] = RETE_VIEW_LIT("source");
    v[RETE_MESH_L_SOURCE_PRINCIPAL] = RETE_VIEW_LIT("spiffe://cluster.local/ns/demo/sa/web");
    v[RETE_MESH_L_REQUEST_PROTOCOL] = RETE_VIEW_LIT("http");
    v[RETE_MESH_L_RESPONSE_CODE] = RETE_VIEW_LIT("200");
    v[RETE_MESH_L_GRPC_RESPONSE_STATUS] = RETE_VIEW_LIT("");
    v[RETE_MESH_L_CONNECTION_SECURITY_POLICY] = RETE_VIEW_LIT("mutual_tls");
    rete_metric m;
    assert_int_equal(
        rete_metrics_shard_series(s, mm->requests_total, v, RETE_MESH_HTTP_NLABELS, &m), RETE_OK);
    rete_metrics_inc(s, m, 3);
    assert_int_equal(rete_metrics_shard_series(s, mm->request_duration_milliseconds, v,
                                               RETE_MESH_HTTP_NLABELS, &m),
                     RETE_OK);
    rete_metrics_observe(s, m, 12.5);
    assert_int_equal(rete_metrics_shard_series(s, mm->request_bytes, v, RETE_MESH_HTTP_NLABELS, &m),
                     RETE_OK);
    rete_metrics_observe(s, m, 300);
    assert_int_equal(
        rete_metrics_shard_series(s, mm->response_bytes, v, RETE_MESH_HTTP_NLABELS, &m), RETE_OK);
    rete_metrics_observe(s, m, 4000);
    v[RETE_MESH_L_REQUEST_PROTOCOL] = RETE_VIEW_LIT("tcp");
    assert_int_equal(
        rete_metrics_shard_series(s, mm->tcp_sent_bytes_total, v, RETE_MESH_TCP_NLABELS, &m),
        RETE_OK);
    rete_metrics_inc(s, m, 1000);
    rete_view cl = RETE_VIEW_LIT("outbound|80||echo.demo");
    assert_int_equal(rete_metrics_shard_series(s, mm->upstream_pool_connections, &cl, 1, &m),
                     RETE_OK);
    rete_metrics_gauge_add(s, m, 2);
    rete_view cr[2] = {cl, RETE_VIEW_LIT("connect_failure")};
    assert_int_equal(rete_metrics_shard_series(s, mm->retries_total, cr, 2, &m), RETE_OK);
    rete_metrics_inc(s, m, 1);
    rete_view ver = RETE_VIEW_LIT(RETE_VERSION);
    assert_int_equal(rete_metrics_series(reg, mm->build_info, &ver, 1, &m), RETE_OK);
    rete_metrics_gauge_set(reg, m, 1);
    assert_int_equal(rete_metrics_series(reg, mm->cert_expiry_timestamp_seconds, NULL, 0, &m),
                     RETE_OK);
    rete_metrics_gauge_set(reg, m, 1790000000);
}

static void test_mesh_metrics_declare(void **state)
{
    (void)state;
    rete_metrics *reg = rete_metrics_new();
    rete_mesh_metrics *mm = rete_mesh_metrics_declare(reg);
    assert_non_null(mm);
    assert_null(rete_mesh_metrics_declare(reg)); /* second time: names taken */
    rete_metrics_shard *s = rete_metrics_shard_new(reg);
    fill_mesh(reg, mm, s);
    char *out = rete_metrics_render(reg, NULL);
    assert_non_null(strstr(out, "# TYPE istio_requests_total counter\n"));
    assert_non_null(
        strstr(out, "istio_requests_total{reporter=\"source\",source_workload=\"unknown\","));
    assert_non_null(strstr(out, ",response_code=\"200\",grpc_response_status=\"\"} 3\n"));
    assert_non_null(strstr(out, "# TYPE istio_request_duration_milliseconds histogram\n"));
    assert_non_null(strstr(out, "istio_request_duration_milliseconds_bucket{"));
    assert_non_null(strstr(out, "le=\"25\"} 1\n"));
    assert_null(strstr(out, "rete_request_duration_seconds"));
    assert_non_null(strstr(out, "connection_security_policy=\"mutual_tls\"} 1000\n"));
    assert_non_null(strstr(
        out, "rete_proxy_upstream_pool_connections{cluster=\"outbound|80||echo.demo\"} 2\n"));
    assert_non_null(strstr(out, "\nrete_proxy_config_version 0\n"));
    free(out);
    rete_metrics_shard_free(&s);
    free(mm);
    rete_metrics_free(reg);
}

/* promtool accepts the output and reports one thing only: the Istio
 * duration histogram's unit (mesh_metrics.h says why it stays). */
static void test_promtool_check_metrics(void **state)
{
    (void)state;
    /* promtool (Debian prometheus) is in DEB_PACKAGES: absent, this fails
     * rather than skipping (a skip here would pass on every machine). */
    if (!have_promtool())
        fail_msg("promtool not on PATH (Debian package 'prometheus'; make deps installs it)");
    rete_metrics *reg = rete_metrics_new();
    rete_mesh_metrics *mm = rete_mesh_metrics_declare(reg);
    assert_non_null(mm);
    rete_metrics_shard *s = rete_metrics_shard_new(reg);
    fill_mesh(reg, mm, s);
    /* Overflow and escaping in the output too. */
    static const char *const l_path[] = {"path"};
    rete_metric_desc d = {.name = "rete_test_paths_total",
                          .help = "Paths \\ with\nescapes.",
                          .type = RETE_METRIC_COUNTER,
                          .labels = l_path,
                          .nlabels = 1,
                          .max_series = 1};
    rete_metric_family f;
    assert_int_equal(rete_metrics_declare(reg, &d, &f), RETE_OK);
    series1(reg, f, "/a\"b\\c\nd");
    series1(reg, f, "/overflowing");
    char *out = rete_metrics_render(reg, NULL);
    char report[4096];
    int status = run_promtool(out, report, sizeof(report));
    free(out);
    assert_string_equal(report, "istio_request_duration_milliseconds use base unit \"seconds\" instead of "
                                "\"milliseconds\"\n");
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 3); /* promtool: lint findings */

    /* Without the Istio histogram (rete's own families only): fully clean. */
    rete_metrics *own = rete_metrics_new();
    rete_metric_desc dh = {.name = "rete_test_duration_seconds",
                           .help = "Durations.",
                           .type = RETE_METRIC_HISTOGRAM,
                           .labels = l_path,
                           .nlabels = 1};
    rete_metric_family fh;
    assert_int_equal(rete_metrics_declare(own, &dh, &fh), RETE_OK);
    assert_int_equal(rete_metrics_declare(own, &d, &f), RETE_OK);
    series1(own, f, "/x");
    series1(own, f, "/y"); /* overflow + dropped counter */
    series1(own, fh, "/x");
    out = rete_metrics_render(own, NULL);
    status = run_promtool(out, report, sizeof(report));
    free(out);
    assert_string_equal(report, "");
    assert_int_equal(status, 0);
    rete_metrics_free(own);

    rete_metrics_shard_free(&s);
    free(mm);
    rete_metrics_free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_summed_over_shards),
        cmocka_unit_test(test_counter_callbacks),
        cmocka_unit_test(test_histogram_bucket_edges),
        cmocka_unit_test(test_default_buckets),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_long_values_are_cut),
        cmocka_unit_test(test_series_bound_and_overflow),
        cmocka_unit_test(test_gauges),
        cmocka_unit_test(test_float_format),
        cmocka_unit_test(test_render_exact),
        cmocka_unit_test(test_declare_validation),
        cmocka_unit_test(test_growth_across_segments),
        cmocka_unit_test(test_concurrent_writers_and_scraper),
        cmocka_unit_test(test_mesh_metrics_declare),
        cmocka_unit_test(test_promtool_check_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
