/* Unit tests for bench/hdr.c, the load generator's latency histogram.
 *
 * tests/unit/meson.build links every test against the proxy library only, and
 * the histogram belongs to the bench, so the module is compiled into this test
 * directly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "../../bench/hdr.c"

/* Assert `got` is `want` give or take the bucket precision (1/128) plus one
 * unit for the rank rounding of a discrete distribution. */
#define assert_near(got, want)                                                                     \
    do {                                                                                           \
        double g__ = (double)(got), w__ = (double)(want);                                         \
        double tol__ = w__ / 128.0 + 1.0;                                                          \
        if (g__ < w__ - tol__ || g__ > w__ + tol__)                                                \
            fail_msg("%s = %.0f, want %.0f +- %.1f", #got, g__, w__, tol__);                       \
    } while (0)

static rete_hdr *new_hdr(void)
{
    rete_hdr *h = malloc(sizeof(*h));
    assert_non_null(h);
    rete_hdr_init(h, RETE_HDR_DEFAULT_HIGHEST);
    return h;
}

/* Every value maps to a bucket whose range holds it, and the range is never
 * wider than 1/128 of its lowest value: the advertised precision. */
static void test_hdr_bucket_geometry(void **state)
{
    (void)state;
    for (uint64_t v = 0; v < 256; v++) {
        unsigned i = rete_hdr_index(v);
        assert_int_equal(rete_hdr_lowest_equiv(i), v);
        assert_int_equal(rete_hdr_highest_equiv(i), v);
    }
    unsigned prev = rete_hdr_index(255);
    for (uint64_t v = 256; v < 70ull * 1000 * 1000; v += 1 + v / 997) {
        unsigned i = rete_hdr_index(v);
        assert_true(i >= prev);
        assert_true(i < RETE_HDR_BUCKETS);
        uint64_t lo = rete_hdr_lowest_equiv(i), hi = rete_hdr_highest_equiv(i);
        assert_true(lo <= v && v <= hi);
        assert_true((double)(hi - lo + 1) <= (double)lo / 128.0 + 1e-9);
        prev = i;
    }
    /* Adjacent buckets tile the line with no gap. */
    for (unsigned i = 0; i + 1 < RETE_HDR_BUCKETS; i++)
        assert_int_equal(rete_hdr_highest_equiv(i) + 1, rete_hdr_lowest_equiv(i + 1));
    assert_int_equal(rete_hdr_index((1ull << 37) - 1), RETE_HDR_BUCKETS - 1);
}

static void test_hdr_empty(void **state)
{
    (void)state;
    rete_hdr *h = new_hdr();
    assert_int_equal(rete_hdr_percentile(h, 50), 0);
    assert_int_equal(rete_hdr_percentile(h, 100), 0);
    assert_true(rete_hdr_mean(h) == 0.0);
    free(h);
}

/* Small values are exact: 1..100 once each. */
static void test_hdr_small_exact(void **state)
{
    (void)state;
    rete_hdr *h = new_hdr();
    for (uint64_t v = 1; v <= 100; v++)
        rete_hdr_record(h, v);
    assert_int_equal(h->total, 100);
    assert_int_equal(rete_hdr_percentile(h, 50), 50);
    assert_int_equal(rete_hdr_percentile(h, 90), 90);
    assert_int_equal(rete_hdr_percentile(h, 99), 99);
    assert_int_equal(rete_hdr_percentile(h, 100), 100);
    assert_int_equal(rete_hdr_percentile(h, 0), 1);
    assert_true(rete_hdr_mean(h) == 50.5);
    free(h);
}

/* Uniform 1..1,000,000 (1 us to 1 s): percentile p is p% of the range. */
static void test_hdr_uniform(void **state)
{
    (void)state;
    rete_hdr *h = new_hdr();
    for (uint64_t v = 1; v <= 1000000; v++)
        rete_hdr_record(h, v);
    assert_near(rete_hdr_percentile(h, 50), 500000);
    assert_near(rete_hdr_percentile(h, 90), 900000);
    assert_near(rete_hdr_percentile(h, 99), 990000);
    assert_near(rete_hdr_percentile(h, 99.9), 999000);
    assert_int_equal(rete_hdr_percentile(h, 100), 1000000);
    assert_int_equal(h->min, 1);
    assert_int_equal(h->max, 1000000);
    free(h);
}

/* Exponential with mean 1000 us, by inverse transform on an even grid so the
 * test is deterministic: percentile p is -1000 ln(1 - p/100). */
static void test_hdr_exponential(void **state)
{
    (void)state;
    rete_hdr *h = new_hdr();
    const unsigned n = 200000;
    for (unsigned i = 0; i < n; i++) {
        double u = ((double)i + 0.5) / n;
        rete_hdr_record(h, (uint64_t)llround(-1000.0 * log(1.0 - u)));
    }
    assert_near(rete_hdr_percentile(h, 50), 693);
    assert_near(rete_hdr_percentile(h, 90), 2303);
    assert_near(rete_hdr_percentile(h, 99), 4605);
    assert_near(rete_hdr_percentile(h, 99.9), 6908);
    double mean = rete_hdr_mean(h);
    assert_true(mean > 990.0 && mean < 1010.0);
    free(h);
}

/* A latency spike: 99 % at 200 us, 1 % at 50 ms. The tail percentiles must
 * see the spike, the body must not. */
static void test_hdr_bimodal(void **state)
{
    (void)state;
    rete_hdr *h = new_hdr();
    for (unsigned i = 0; i < 9900; i++)
        rete_hdr_record(h, 200);
    for (unsigned i = 0; i < 100; i++)
        rete_hdr_record(h, 50000);
    assert_int_equal(rete_hdr_percentile(h, 50), 200);
    assert_int_equal(rete_hdr_percentile(h, 99), 200);
    assert_near(rete_hdr_percentile(h, 99.5), 50000);
    assert_near(rete_hdr_percentile(h, 99.9), 50000);
    assert_int_equal(rete_hdr_percentile(h, 100), 50000);
    free(h);
}

/* Merging two halves gives the same answers as recording everything in one. */
static void test_hdr_merge(void **state)
{
    (void)state;
    rete_hdr *a = new_hdr(), *b = new_hdr(), *all = new_hdr();
    for (uint64_t v = 1; v <= 20000; v++) {
        rete_hdr_record(v % 2 ? a : b, v * 3);
        rete_hdr_record(all, v * 3);
    }
    rete_hdr_merge(a, b);
    assert_int_equal(a->total, all->total);
    assert_int_equal(a->min, all->min);
    assert_int_equal(a->max, all->max);
    const double pcts[] = {10, 50, 90, 99, 99.9, 100};
    for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++)
        assert_int_equal(rete_hdr_percentile(a, pcts[i]), rete_hdr_percentile(all, pcts[i]));
    free(a);
    free(b);
    free(all);
}

/* Values above the ceiling are clamped and counted, never lost. */
static void test_hdr_saturation(void **state)
{
    (void)state;
    rete_hdr *h = malloc(sizeof(*h));
    assert_non_null(h);
    rete_hdr_init(h, 1000000);
    rete_hdr_record(h, 10);
    rete_hdr_record(h, 5000000);
    assert_int_equal(h->total, 2);
    assert_int_equal(h->saturated, 1);
    assert_int_equal(h->max, 1000000);
    assert_int_equal(rete_hdr_percentile(h, 100), 1000000);
    /* A ceiling beyond the buckets is reduced to what they hold. */
    rete_hdr_init(h, UINT64_MAX);
    assert_int_equal(h->highest, (1ull << 37) - 1);
    rete_hdr_record(h, UINT64_MAX);
    assert_int_equal(h->saturated, 1);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hdr_bucket_geometry), cmocka_unit_test(test_hdr_empty),
        cmocka_unit_test(test_hdr_small_exact),     cmocka_unit_test(test_hdr_uniform),
        cmocka_unit_test(test_hdr_exponential),     cmocka_unit_test(test_hdr_bimodal),
        cmocka_unit_test(test_hdr_merge),           cmocka_unit_test(test_hdr_saturation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
