/* Unit tests for src/proxy/policy/lb.c: algorithms with fixed seeds, outlier
 * detection with caller-supplied time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb.h"
#include "outlier.h"

#define MS 1000000ull
#define SEC 1000000000ull
#define MAX_EP 16

/* A hand-built service: workloads live in the fixture, addresses 10.0.0.<id>. */
typedef struct fixture {
    rete_workload wl[MAX_EP];
    const rete_workload *eps[MAX_EP];
    char addr[MAX_EP][32];
    rete_service svc;
} fixture;

static void fixture_init(fixture *f, rete_lb_kind kind, const uint32_t *weights, size_t n)
{
    memset(f, 0, sizeof *f);
    for (size_t i = 0; i < n; i++) {
        snprintf(f->addr[i], sizeof f->addr[i], "10.0.0.%zu", i + 1);
        f->wl[i] = (rete_workload){.name = f->addr[i],
                                   .ns = "default",
                                   .address = f->addr[i],
                                   .mesh_port = 15008,
                                   .weight = weights ? weights[i] : 1,
                                   .in_mesh = true,
                                   .ready = true};
        f->eps[i] = &f->wl[i];
    }
    f->svc = (rete_service){.name = "echo", .ns = "default", .endpoints = f->eps, .n_endpoints = n};
    f->svc.policy.lb = kind;
    f->svc.policy.ring_size = 1024;
    f->svc.policy.maglev_table_size = 65537;
    f->svc.policy.max_ejection_percent = 100;
    f->svc.policy.base_ejection_ms = 1000;
    f->svc.policy.outlier_interval_ms = 1000;
}

/* Copy of `src` without endpoint `drop` (same addresses for the others). */
static void fixture_without(fixture *dst, const fixture *src, size_t drop)
{
    *dst = *src;
    size_t k = 0;
    for (size_t i = 0; i < src->svc.n_endpoints; i++) {
        if (i == drop)
            continue;
        memcpy(dst->addr[k], src->addr[i], sizeof dst->addr[k]);
        dst->wl[k] = src->wl[i];
        dst->wl[k].address = dst->addr[k];
        dst->wl[k].name = dst->addr[k];
        dst->eps[k] = &dst->wl[k];
        k++;
    }
    dst->svc.endpoints = dst->eps;
    dst->svc.n_endpoints = k;
}

static const rete_lb_context no_ctx = {.exclude = -1};

/* Outlier state is proxy-wide and keyed by name (outlier.h): tests reuse the
 * same names, so each starts from an empty table. */
static int clear_outlier_table(void **state)
{
    (void)state;
    rete_outlier_clear();
    return 0;
}

static rete_lb_context key_ctx(char *buf, size_t cap, unsigned k)
{
    int len = snprintf(buf, cap, "user-%u", k);
    return (rete_lb_context){.hash_key = rete_view_make(buf, (size_t)len), .exclude = -1};
}

/* Picks `total` times (each request finishing at once) and counts per endpoint. */
static void count_picks(rete_lb *lb, unsigned total, unsigned *counts, size_t n)
{
    memset(counts, 0, n * sizeof *counts);
    for (unsigned i = 0; i < total; i++) {
        int idx = rete_lb_pick(lb, &no_ctx, 0);
        assert_true(idx >= 0 && (size_t)idx < n);
        counts[idx]++;
        rete_lb_start(lb, idx);
        rete_lb_finish(lb, idx, 0, false, 0);
    }
}

static void assert_share(unsigned got, unsigned total, double share, double rel_tol)
{
    double expect = total * share;
    if (got < expect * (1 - rel_tol) || got > expect * (1 + rel_tol))
        fail_msg("got %u, expected %.0f +- %.0f%%", got, expect, rel_tol * 100);
}

static void fail_n(rete_lb *lb, int idx, unsigned n, uint64_t now)
{
    for (unsigned i = 0; i < n; i++) {
        rete_lb_start(lb, idx);
        rete_lb_finish(lb, idx, 1 * MS, true, now);
    }
}

/* ---- generic ------------------------------------------------------------------ */

static void test_kind_names(void **state)
{
    (void)state;
    assert_string_equal(rete_lb_kind_name(RETE_LB_PEAK_EWMA), "peak_ewma");
    assert_string_equal(rete_lb_kind_name(RETE_LB_ROUND_ROBIN), "round_robin");
    assert_string_equal(rete_lb_kind_name(RETE_LB_LEAST_REQUEST), "least_request");
    assert_string_equal(rete_lb_kind_name(RETE_LB_RANDOM), "random");
    assert_string_equal(rete_lb_kind_name(RETE_LB_RING_HASH), "ring_hash");
    assert_string_equal(rete_lb_kind_name(RETE_LB_MAGLEV), "maglev");
    assert_string_equal(rete_lb_kind_name((rete_lb_kind)99), "unknown");
}

static void test_no_endpoints_and_zero_weight(void **state)
{
    (void)state;
    for (int kind = RETE_LB_PEAK_EWMA; kind <= RETE_LB_MAGLEV; kind++) {
        fixture f;
        fixture_init(&f, (rete_lb_kind)kind, NULL, 0);
        rete_lb *lb = rete_lb_new(&f.svc, 1);
        assert_non_null(lb);
        assert_int_equal(rete_lb_pick(lb, &no_ctx, 0), -1);
        rete_lb_stats st;
        rete_lb_get_stats(lb, 0, &st);
        assert_int_equal(st.no_endpoint_total, 1);
        rete_lb_free(&lb);
        assert_null(lb);

        uint32_t w[3] = {0, 3, 0};
        fixture_init(&f, (rete_lb_kind)kind, w, 3);
        lb = rete_lb_new(&f.svc, 1);
        char buf[32];
        for (unsigned k = 0; k < 200; k++) {
            rete_lb_context ctx = key_ctx(buf, sizeof buf, k);
            assert_int_equal(rete_lb_pick(lb, &ctx, k * MS), 1);
        }
        rete_lb_free(&lb);

        uint32_t z[2] = {0, 0};
        fixture_init(&f, (rete_lb_kind)kind, z, 2);
        lb = rete_lb_new(&f.svc, 1);
        assert_int_equal(rete_lb_pick(lb, &no_ctx, 0), -1);
        rete_lb_free(&lb);
    }
}

/* A Workload not ready (reted's push while its sidecar's probe fails) is
 * never picked, by any algorithm; none ready is no endpoint. */
static void test_not_ready_never_picked(void **state)
{
    (void)state;
    for (int kind = RETE_LB_PEAK_EWMA; kind <= RETE_LB_MAGLEV; kind++) {
        fixture f;
        fixture_init(&f, (rete_lb_kind)kind, NULL, 3);
        f.wl[0].ready = false;
        f.wl[2].ready = false;
        rete_lb *lb = rete_lb_new(&f.svc, 1);
        char buf[32];
        for (unsigned k = 0; k < 200; k++) {
            rete_lb_context ctx = key_ctx(buf, sizeof buf, k);
            assert_int_equal(rete_lb_pick(lb, &ctx, k * MS), 1);
        }
        rete_lb_free(&lb);
        f.wl[1].ready = false;
        lb = rete_lb_new(&f.svc, 1);
        assert_int_equal(rete_lb_pick(lb, &no_ctx, 0), -1);
        rete_lb_free(&lb);
    }
}

static void test_exclude(void **state)
{
    (void)state;
    for (int kind = RETE_LB_PEAK_EWMA; kind <= RETE_LB_MAGLEV; kind++) {
        fixture f;
        fixture_init(&f, (rete_lb_kind)kind, NULL, 3);
        rete_lb *lb = rete_lb_new(&f.svc, 7);
        char buf[32];
        for (unsigned k = 0; k < 300; k++) {
            rete_lb_context ctx = key_ctx(buf, sizeof buf, k);
            int first = rete_lb_pick(lb, &ctx, 0);
            ctx.exclude = first;
            int retry = rete_lb_pick(lb, &ctx, 0);
            assert_true(retry >= 0 && retry != first);
        }
        rete_lb_free(&lb);

        fixture_init(&f, (rete_lb_kind)kind, NULL, 1);
        lb = rete_lb_new(&f.svc, 7);
        rete_lb_context ctx = {.hash_key = RETE_VIEW_LIT("k"), .exclude = 0};
        assert_int_equal(rete_lb_pick(lb, &ctx, 0), 0); /* the only one */
        rete_lb_free(&lb);
    }
}

static void test_shared_across_workers(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, RETE_LB_MAGLEV, NULL, 5);
    rete_lb_shared *sh = NULL;
    assert_int_equal(rete_lb_shared_build(&f.svc, &sh), RETE_OK);
    rete_lb *w1 = rete_lb_new_shared(sh, 1);
    rete_lb *w2 = rete_lb_new_shared(sh, 2);
    rete_lb_shared_unref(&sh); /* the snapshot lets go first */
    assert_null(sh);
    char buf[32];
    for (unsigned k = 0; k < 1000; k++) {
        rete_lb_context ctx = key_ctx(buf, sizeof buf, k);
        assert_int_equal(rete_lb_pick(w1, &ctx, 0), rete_lb_pick(w2, &ctx, 0));
    }
    /* Picks stay per worker; outlier state is the proxy's. */
    rete_lb_endpoint_stats es, es2;
    assert_true(rete_lb_get_endpoint_stats(w1, 0, 0, &es));
    assert_true(rete_lb_get_endpoint_stats(w2, 0, 0, &es2));
    assert_true(es.picks > 0 && es.picks == es2.picks); /* each counted its own */
    fail_n(w1, 0, 1, 0);
    assert_true(rete_lb_get_endpoint_stats(w1, 0, 0, &es));
    assert_int_equal(es.failures, 0); /* outlier detection off: no slot, nothing kept */
    assert_false(rete_lb_get_endpoint_stats(w2, 5, 0, &es));
    assert_false(rete_lb_get_endpoint_stats(w2, 5, 0, &es));
    rete_lb_free(&w1);
    rete_lb_free(&w2);
}

/* ---- round robin, random, least request --------------------------------------- */

static void test_rr_smooth_sequence(void **state)
{
    (void)state;
    fixture f;
    uint32_t w[3] = {5, 1, 1};
    fixture_init(&f, RETE_LB_ROUND_ROBIN, w, 3);
    rete_lb *lb = rete_lb_new(&f.svc, 1);
    static const int expect[7] = {0, 0, 1, 0, 2, 0, 0}; /* a a b a c a a */
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 7; i++)
            assert_int_equal(rete_lb_pick(lb, &no_ctx, 0), expect[i]);
    rete_lb_free(&lb);
}

static void test_rr_skips_ejected(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, RETE_LB_ROUND_ROBIN, NULL, 3);
    f.svc.policy.consecutive_5xx = 1;
    rete_lb *lb = rete_lb_new(&f.svc, 1);
    fail_n(lb, 1, 1, 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(rete_lb_pick(lb, &no_ctx, 10 * MS), i % 2 == 0 ? 0 : 2);
    rete_lb_free(&lb);
}

static void test_random_weighted(void **state)
{
    (void)state;
    fixture f;
    uint32_t w[4] = {1, 2, 3, 4};
    fixture_init(&f, RETE_LB_RANDOM, w, 4);
    rete_lb *lb = rete_lb_new(&f.svc, 42);
    unsigned c[4];
    count_picks(lb, 100000, c, 4);
    for (int i = 0; i < 4; i++)
        assert_share(c[i], 100000, w[i] / 10.0, 0.05);
    rete_lb_stats st;
    rete_lb_get_stats(lb, 0, &st);
    assert_int_equal(st.picks_total, 100000);
    rete_lb_free(&lb);
}

static void test_least_request_weighted(void **state)
{
    (void)state;
    fixture f;
    uint32_t w[4] = {1, 2, 3, 4};
    fixture_init(&f, RETE_LB_LEAST_REQUEST, w, 4);
    rete_lb *lb = rete_lb_new(&f.svc, 43);
    unsigned c[4];
    count_picks(lb, 100000, c, 4);
    for (int i = 0; i < 4; i++)
        assert_share(c[i], 100000, w[i] / 10.0, 0.05);
    rete_lb_free(&lb);
}

static void test_least_request_prefers_less_loaded(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, RETE_LB_LEAST_REQUEST, NULL, 3);
    rete_lb *lb = rete_lb_new(&f.svc, 44);
    for (int i = 0; i < 10; i++)
        rete_lb_start(lb, 0); /* endpoint 0 is busy */
    unsigned c[3] = {0};
    for (int i = 0; i < 3000; i++) {
        int idx = rete_lb_pick(lb, &no_ctx, 0);
        c[idx]++;
        rete_lb_start(lb, idx);
        rete_lb_finish(lb, idx, 0, false, 0);
    }
    /* Two distinct candidates: the busiest never wins. */
    assert_int_equal(c[0], 0);
    assert_share(c[1], 3000, 0.5, 0.1);

    /* Outstanding builds up without finishes: load evens out by weight. */
    rete_lb_free(&lb);
    uint32_t w[2] = {1, 3};
    fixture_init(&f, RETE_LB_LEAST_REQUEST, w, 2);
    lb = rete_lb_new(&f.svc, 45);
    for (int i = 0; i < 400; i++)
        rete_lb_start(lb, rete_lb_pick(lb, &no_ctx, 0));
    rete_lb_endpoint_stats e0, e1;
    rete_lb_get_endpoint_stats(lb, 0, 0, &e0);
    rete_lb_get_endpoint_stats(lb, 1, 0, &e1);
    assert_true(e0.outstanding >= 95 && e0.outstanding <= 105);
    assert_int_equal(e0.outstanding + e1.outstanding, 400);
    rete_lb_free(&lb);
}

/* ---- peak EWMA ---------------------------------------------------------------- */

static void test_peak_ewma_avoids_slow_and_recovers(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, RETE_LB_PEAK_EWMA, NULL, 3);
    rete_lb *lb = rete_lb_new(&f.svc, 46);
    uint64_t now = 0;
    unsigned c[3] = {0};
    /* Phase 0, 1 s: all answer in 1 ms and share the load. */
    for (int i = 0; i < 1000; i++, now += MS) {
        int idx = rete_lb_pick(lb, &no_ctx, now);
        c[idx]++;
        rete_lb_start(lb, idx);
        rete_lb_finish(lb, idx, 1 * MS, false, now);
    }
    assert_share(c[0], 1000, 1.0 / 3, 0.25);
    /* Phase 1, 2 s: endpoint 0 turns slow (100 ms): one sample is enough. */
    memset(c, 0, sizeof c);
    for (int i = 0; i < 2000; i++, now += MS) {
        int idx = rete_lb_pick(lb, &no_ctx, now);
        c[idx]++;
        rete_lb_start(lb, idx);
        rete_lb_finish(lb, idx, idx == 0 ? 100 * MS : 1 * MS, false, now);
    }
    assert_true(c[0] >= 1 && c[0] <= 2);
    rete_lb_endpoint_stats es;
    rete_lb_get_endpoint_stats(lb, 0, now, &es);
    assert_true(es.ewma_ms > 50.0);

    /* Phase 2, 120 s: endpoint 0 is fast again. Its estimate decays (10 s time
     * constant) until it is tried, then it takes its share. */
    memset(c, 0, sizeof c);
    for (int i = 0; i < 12000; i++, now += 10 * MS) {
        int idx = rete_lb_pick(lb, &no_ctx, now);
        if (i >= 9000)
            c[idx]++;
        rete_lb_start(lb, idx);
        rete_lb_finish(lb, idx, 1 * MS, false, now);
    }
    assert_share(c[0], 3000, 1.0 / 3, 0.25);
    rete_lb_get_endpoint_stats(lb, 0, now, &es);
    assert_true(es.ewma_ms < 1.5);
    rete_lb_free(&lb);
}

static void test_peak_ewma_counts_outstanding(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, RETE_LB_PEAK_EWMA, NULL, 2);
    rete_lb *lb = rete_lb_new(&f.svc, 47);
    /* Same latency; endpoint 1 holds 5 requests: cost 6x, so 0 wins. */
    for (int i = 0; i < 5; i++)
        rete_lb_start(lb, 1);
    for (int i = 0; i < 100; i++)
        assert_int_equal(rete_lb_pick(lb, &no_ctx, 0), 0);
    rete_lb_free(&lb);
}

/* A new endpoint is probed at once, but not flooded before it answers
 * (Finagle's unsampled cost). */
static void test_peak_ewma_probes_new_endpoint(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, RETE_LB_PEAK_EWMA, NULL, 3);
    rete_lb *lb = rete_lb_new(&f.svc, 48);
    for (int i = 0; i < 2; i++) { /* 0 and 1 known at 1 ms */
        rete_lb_start(lb, i);
        rete_lb_finish(lb, i, MS, false, 0);
    }
    unsigned c[3] = {0};
    for (int i = 0; i < 300; i++) {
        int idx = rete_lb_pick(lb, &no_ctx, MS);
        c[idx]++;
        if (idx == 2)
            rete_lb_start(lb, idx); /* its first request hangs */
    }
    assert_int_equal(c[2], 1);
    rete_lb_endpoint_stats es;
    rete_lb_get_endpoint_stats(lb, 2, MS, &es);
    assert_true(es.ewma_ms == 0.0);
    assert_int_equal(es.outstanding, 1);
    rete_lb_finish(lb, 2, 2 * MS, false, 2 * MS); /* it answers: judged on latency now */
    rete_lb_get_endpoint_stats(lb, 2, 2 * MS, &es);
    assert_true(es.ewma_ms > 1.9 && es.ewma_ms <= 2.0);
    rete_lb_free(&lb);
}

/* ---- consistent hashing ------------------------------------------------------- */

static void hash_distribution(rete_lb_kind kind, uint32_t ring_size, double tol)
{
    fixture f;
    uint32_t w[5] = {1, 1, 2, 2, 4};
    fixture_init(&f, kind, w, 5);
    f.svc.policy.ring_size = ring_size;
    rete_lb *lb = rete_lb_new(&f.svc, 1);
    rete_lb *lb2 = rete_lb_new(&f.svc, 99);
    unsigned c[5] = {0};
    char buf[32];
    for (unsigned k = 0; k < 10000; k++) {
        rete_lb_context ctx = key_ctx(buf, sizeof buf, k);
        int idx = rete_lb_pick(lb, &ctx, 0);
        assert_int_equal(rete_lb_pick(lb, &ctx, 0), idx);  /* sticky */
        assert_int_equal(rete_lb_pick(lb2, &ctx, 0), idx); /* same on every worker */
        c[idx]++;
    }
    for (int i = 0; i < 5; i++)
        assert_share(c[i], 10000, w[i] / 10.0, tol);
    rete_lb_free(&lb);
    rete_lb_free(&lb2);
}

/* Remove one endpoint of five: about a fifth of the keys move. */
static unsigned hash_disruption(rete_lb_kind kind, unsigned *moved_from_kept)
{
    static fixture f, g;
    fixture_init(&f, kind, NULL, 5);
    f.svc.policy.ring_size = 4096;
    fixture_without(&g, &f, 2);
    rete_lb *a = rete_lb_new(&f.svc, 1);
    rete_lb *b = rete_lb_new(&g.svc, 1);
    unsigned moved = 0;
    *moved_from_kept = 0;
    char buf[32];
    for (unsigned k = 0; k < 10000; k++) {
        rete_lb_context ctx = key_ctx(buf, sizeof buf, k);
        const char *before = f.svc.endpoints[rete_lb_pick(a, &ctx, 0)]->address;
        const char *after = g.svc.endpoints[rete_lb_pick(b, &ctx, 0)]->address;
        if (strcmp(before, after) != 0) {
            moved++;
            if (strcmp(before, f.addr[2]) != 0)
                (*moved_from_kept)++;
        }
    }
    rete_lb_free(&a);
    rete_lb_free(&b);
    print_message("%s: %u of 10000 keys moved, %u from kept endpoints\n", rete_lb_kind_name(kind),
                  moved, *moved_from_kept);
    return moved;
}

static void hash_ejection_walk(rete_lb_kind kind)
{
    fixture f;
    fixture_init(&f, kind, NULL, 5);
    f.svc.policy.consecutive_5xx = 2;
    f.svc.policy.max_ejection_percent = 50;
    rete_lb *lb = rete_lb_new(&f.svc, 1);
    rete_lb_context ctx = {.hash_key = RETE_VIEW_LIT("session-1234"), .exclude = -1};
    int home = rete_lb_pick(lb, &ctx, 0);
    fail_n(lb, home, 2, 0);
    assert_true(rete_lb_is_ejected(lb, home, 1));
    int away = rete_lb_pick(lb, &ctx, 1);
    assert_true(away >= 0 && away != home);
    for (int i = 0; i < 20; i++)
        assert_int_equal(rete_lb_pick(lb, &ctx, 2 + (uint64_t)i), away); /* stable while away */
    assert_int_equal(rete_lb_pick(lb, &ctx, 1000 * MS), home);           /* back home */
    rete_lb_free(&lb);
}

static void test_ring_hash(void **state)
{
    (void)state;
    hash_distribution(RETE_LB_RING_HASH, 16384, 0.10);
    hash_distribution(RETE_LB_RING_HASH, 1024, 0.20);
    unsigned from_kept;
    unsigned moved = hash_disruption(RETE_LB_RING_HASH, &from_kept);
    assert_true(moved >= 1500 && moved <= 2500);
    assert_int_equal(from_kept, 0); /* only the removed endpoint's keys move */
    hash_ejection_walk(RETE_LB_RING_HASH);
}

/* Scaling all weights changes nothing: ring points come from weight / gcd. */
static void test_ring_hash_weight_scale_invariant(void **state)
{
    (void)state;
    fixture f, g;
    uint32_t w1[3] = {1, 1, 2}, w100[3] = {100, 100, 200};
    fixture_init(&f, RETE_LB_RING_HASH, w1, 3);
    fixture_init(&g, RETE_LB_RING_HASH, w100, 3);
    rete_lb *a = rete_lb_new(&f.svc, 1);
    rete_lb *b = rete_lb_new(&g.svc, 2);
    char buf[32];
    for (unsigned k = 0; k < 2000; k++) {
        rete_lb_context ctx = key_ctx(buf, sizeof buf, k);
        assert_int_equal(rete_lb_pick(a, &ctx, 0), rete_lb_pick(b, &ctx, 0));
    }
    rete_lb_free(&a);
    rete_lb_free(&b);
}

static void test_maglev(void **state)
{
    (void)state;
    hash_distribution(RETE_LB_MAGLEV, 0, 0.10);
    unsigned from_kept;
    unsigned moved = hash_disruption(RETE_LB_MAGLEV, &from_kept);
    assert_true(moved >= 1500 && moved <= 2500);
    assert_true(from_kept <= 300); /* Maglev: a little more than the minimum */
    hash_ejection_walk(RETE_LB_MAGLEV);
}

static void test_hash_empty_key_is_random(void **state)
{
    (void)state;
    for (int kind = RETE_LB_RING_HASH; kind <= RETE_LB_MAGLEV; kind++) {
        fixture f;
        fixture_init(&f, (rete_lb_kind)kind, NULL, 4);
        rete_lb *lb = rete_lb_new(&f.svc, 5);
        unsigned c[4];
        count_picks(lb, 40000, c, 4);
        for (int i = 0; i < 4; i++)
            assert_share(c[i], 40000, 0.25, 0.05);
        rete_lb_free(&lb);
    }
}

static void test_maglev_table_size_rounded_to_prime(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, RETE_LB_MAGLEV, NULL, 3);
    f.svc.policy.maglev_table_size = 1000; /* -> 1009 */
    rete_lb *lb = rete_lb_new(&f.svc, 1);
    assert_non_null(lb);
    char buf[32];
    unsigned c[3] = {0};
    for (unsigned k = 0; k < 3000; k++) {
        rete_lb_context ctx = key_ctx(buf, sizeof buf, k);
        c[rete_lb_pick(lb, &ctx, 0)]++;
    }
    for (int i = 0; i < 3; i++)
        assert_share(c[i], 3000, 1.0 / 3, 0.15);
    rete_lb_free(&lb);

    /* The size itself: rounded up to the next prime, a prime kept, the
     * default 65537, and never below the endpoint count + 1. */
    static const struct {
        uint32_t asked, got;
    } sizes[] = {{1000, 1009}, {1009, 1009}, {1010, 1013}, {0, 65537}, {2, 5}};
    rete_lb_shared *sh = NULL;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        f.svc.policy.maglev_table_size = sizes[i].asked;
        assert_int_equal(rete_lb_shared_build(&f.svc, &sh), RETE_OK);
        assert_int_equal(rete_lb_shared_maglev_size(sh), sizes[i].got);
        rete_lb_shared_unref(&sh);
    }

    f.svc.policy.maglev_table_size = 6000000; /* above the bound */
    assert_int_equal(rete_lb_shared_build(&f.svc, &sh), RETE_ELIMIT);
    assert_null(sh);
}

/* ---- outlier detection -------------------------------------------------------- */

static void test_ejection_after_consecutive_failures(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, RETE_LB_RANDOM, NULL, 4);
    f.svc.policy.consecutive_5xx = 3;
    rete_lb *lb = rete_lb_new(&f.svc, 8);
    uint64_t now = 5 * SEC;
    fail_n(lb, 1, 2, now);
    rete_lb_start(lb, 1);
    rete_lb_finish(lb, 1, MS, false, now); /* a success resets the streak */
    fail_n(lb, 1, 2, now);
    assert_false(rete_lb_is_ejected(lb, 1, now));
    rete_lb_start(lb, 1);
    assert_true(rete_lb_finish(lb, 1, 0, true, now)); /* the ejecting failure says so */
    assert_true(rete_lb_is_ejected(lb, 1, now));
    rete_lb_start(lb, 1);
    assert_false(rete_lb_finish(lb, 1, 0, true, now)); /* already ejected: no second count */
    for (int i = 0; i < 1000; i++)
        assert_int_not_equal(rete_lb_pick(lb, &no_ctx, now + MS), 1);
    rete_lb_stats st;
    rete_lb_get_stats(lb, now, &st);
    assert_int_equal(st.ejections_total, 1);
    assert_int_equal(st.n_ejected, 1);
    assert_int_equal(st.n_endpoints, 4);

    /* Re-admitted after base_ejection_ms * 1. */
    assert_true(rete_lb_is_ejected(lb, 1, now + 999 * MS));
    assert_false(rete_lb_is_ejected(lb, 1, now + 1000 * MS));
    now += 1000 * MS;
    unsigned c[4] = {0};
    for (int i = 0; i < 1000; i++)
        c[rete_lb_pick(lb, &no_ctx, now)]++;
    assert_true(c[1] > 150);

    /* Second ejection right away: twice as long. */
    fail_n(lb, 1, 3, now);
    assert_true(rete_lb_is_ejected(lb, 1, now + 1999 * MS));
    assert_false(rete_lb_is_ejected(lb, 1, now + 2000 * MS));
    rete_lb_endpoint_stats es;
    rete_lb_get_endpoint_stats(lb, 1, now, &es);
    assert_int_equal(es.times_ejected, 2);
    assert_true(es.ejected);
    assert_int_equal(es.failures, 9); /* 2 + 2 + 1 + the one while ejected + 3 */

    /* Healthy for several intervals: the multiplier decays back. */
    now += 2000 * MS + 5 * SEC;
    rete_lb_start(lb, 1);
    rete_lb_finish(lb, 1, MS, false, now);
    rete_lb_get_endpoint_stats(lb, 1, now, &es);
    assert_int_equal(es.times_ejected, 0);
    fail_n(lb, 1, 3, now);
    assert_false(rete_lb_is_ejected(lb, 1, now + 1000 * MS));
    rete_lb_free(&lb);
}

static void test_outlier_off(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, RETE_LB_RANDOM, NULL, 2);
    f.svc.policy.consecutive_5xx = 0;
    rete_lb *lb = rete_lb_new(&f.svc, 8);
    fail_n(lb, 0, 100, 0);
    assert_false(rete_lb_is_ejected(lb, 0, 0));
    rete_lb_free(&lb);
}

static void test_max_ejection_percent(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, RETE_LB_ROUND_ROBIN, NULL, 10);
    f.svc.policy.consecutive_5xx = 1;
    f.svc.policy.max_ejection_percent = 20;
    rete_lb *lb = rete_lb_new(&f.svc, 9);
    for (int i = 0; i < 10; i++)
        fail_n(lb, i, 1, 0);
    rete_lb_stats st;
    rete_lb_get_stats(lb, 0, &st);
    assert_int_equal(st.n_ejected, 2);
    assert_int_equal(st.ejections_total, 2);
    assert_int_equal(st.ejections_overflow_total, 8);
    rete_lb_free(&lb);

    /* 10% of 4 is less than one host: one is ejected anyway (Envoy). */
    rete_outlier_clear();
    fixture_init(&f, RETE_LB_ROUND_ROBIN, NULL, 4);
    f.svc.policy.consecutive_5xx = 1;
    f.svc.policy.max_ejection_percent = 10;
    lb = rete_lb_new(&f.svc, 9);
    for (int i = 0; i < 4; i++)
        fail_n(lb, i, 1, 0);
    rete_lb_get_stats(lb, 0, &st);
    assert_int_equal(st.n_ejected, 1);
    rete_lb_free(&lb);
}

static void test_all_ejected_panic(void **state)
{
    (void)state;
    for (int kind = RETE_LB_PEAK_EWMA; kind <= RETE_LB_MAGLEV; kind++) {
        fixture f;
        fixture_init(&f, (rete_lb_kind)kind, NULL, 2);
        f.svc.policy.consecutive_5xx = 1;
        f.svc.policy.max_ejection_percent = 100;
        rete_lb *lb = rete_lb_new(&f.svc, 10);
        fail_n(lb, 0, 1, 0);
        fail_n(lb, 1, 1, 0);
        assert_true(rete_lb_is_ejected(lb, 0, 1));
        assert_true(rete_lb_is_ejected(lb, 1, 1));
        unsigned c[2] = {0};
        char buf[32];
        for (unsigned k = 0; k < 400; k++) {
            rete_lb_context ctx = key_ctx(buf, sizeof buf, k);
            int idx = rete_lb_pick(lb, &ctx, 1);
            assert_true(idx == 0 || idx == 1);
            c[idx]++;
        }
        assert_true(c[0] > 0 && c[1] > 0); /* ejection ignored: both serve */
        rete_lb_stats st;
        rete_lb_get_stats(lb, 1, &st);
        assert_int_equal(st.panic_total, 400);
        rete_lb_free(&lb);
    }

    /* A single endpoint stays reachable while ejected. */
    fixture f;
    fixture_init(&f, RETE_LB_PEAK_EWMA, NULL, 1);
    f.svc.policy.consecutive_5xx = 1;
    rete_lb *lb = rete_lb_new(&f.svc, 11);
    fail_n(lb, 0, 1, 0);
    assert_true(rete_lb_is_ejected(lb, 0, 1));
    assert_int_equal(rete_lb_pick(lb, &no_ctx, 1), 0);
    rete_lb_free(&lb);
}


/* Two workers' balancers over one Service: a streak of failures seen by
 * both ejects the endpoint for both, maxEjectionPercent counts the other
 * worker's ejections, and the state outlives both balancers (a new
 * snapshot's balancer finds it by name). */
static void test_outlier_shared_across_workers(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, RETE_LB_ROUND_ROBIN, NULL, 4);
    f.svc.policy.consecutive_5xx = 4;
    f.svc.policy.max_ejection_percent = 25;
    rete_lb_shared *sh = NULL;
    assert_int_equal(rete_lb_shared_build(&f.svc, &sh), RETE_OK);
    rete_lb *w1 = rete_lb_new_shared(sh, 1), *w2 = rete_lb_new_shared(sh, 2);
    uint64_t now = SEC;
    fail_n(w1, 2, 2, now);
    fail_n(w2, 2, 1, now);
    assert_false(rete_lb_is_ejected(w2, 2, now));
    rete_lb_start(w2, 2);
    assert_true(rete_lb_finish(w2, 2, MS, true, now)); /* the 4th, on the other worker */
    assert_true(rete_lb_is_ejected(w1, 2, now));
    for (int i = 0; i < 100; i++)
        assert_int_not_equal(rete_lb_pick(w1, &no_ctx, now), 2);
    /* 25% of 4: one at a time, whichever worker asks. */
    fail_n(w1, 0, 4, now);
    assert_false(rete_lb_is_ejected(w2, 0, now));
    rete_lb_stats st;
    rete_lb_get_stats(w1, now, &st);
    assert_int_equal(st.n_ejected, 1);
    assert_int_equal(st.ejections_overflow_total, 1);
    rete_lb_free(&w1);
    rete_lb_free(&w2);
    /* A config push: new balancers, same names, same ejection. */
    rete_lb *w3 = rete_lb_new_shared(sh, 3);
    assert_true(rete_lb_is_ejected(w3, 2, now + 999 * MS));
    assert_false(rete_lb_is_ejected(w3, 2, now + 1000 * MS));
    rete_lb_endpoint_stats es;
    assert_true(rete_lb_get_endpoint_stats(w3, 2, now, &es));
    assert_int_equal(es.times_ejected, 1);
    assert_int_equal(es.ejections, 1);
    assert_int_equal(es.failures, 4);
    rete_lb_free(&w3);
    rete_lb_shared_unref(&sh);
}

/* consecutiveGatewayErrors counts gateway errors only, a 500 breaks the
 * streak; local outcomes (pool overflow) count for nothing. */
static void test_outlier_gateway_and_local(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, RETE_LB_RANDOM, NULL, 2);
    f.svc.policy.consecutive_gateway = 2;
    rete_lb *lb = rete_lb_new(&f.svc, 4);
    for (int i = 0; i < 10; i++) {
        rete_lb_start(lb, 0);
        assert_false(rete_lb_done(lb, 0, MS, RETE_LB_LOCAL, SEC));
    }
    rete_lb_start(lb, 0);
    assert_false(rete_lb_done(lb, 0, MS, RETE_LB_GATEWAY, SEC));
    rete_lb_start(lb, 0);
    assert_false(rete_lb_done(lb, 0, MS, RETE_LB_5XX, SEC)); /* 500: not a gateway error */
    rete_lb_start(lb, 0);
    assert_false(rete_lb_done(lb, 0, MS, RETE_LB_GATEWAY, SEC));
    rete_lb_start(lb, 0);
    assert_true(rete_lb_done(lb, 0, MS, RETE_LB_GATEWAY, SEC));
    rete_lb_endpoint_stats es;
    assert_true(rete_lb_get_endpoint_stats(lb, 0, SEC, &es));
    assert_int_equal(es.failures, 4);
    rete_lb_free(&lb);
}

/* minHealthPercent: below it, ejected endpoints are picked again. */
static void test_panic_threshold(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, RETE_LB_ROUND_ROBIN, NULL, 4);
    f.svc.policy.consecutive_5xx = 1;
    f.svc.policy.min_health_percent = 50;
    rete_lb *lb = rete_lb_new(&f.svc, 5);
    fail_n(lb, 0, 1, SEC);
    fail_n(lb, 1, 1, SEC);
    unsigned c[4];
    memset(c, 0, sizeof c);
    for (int i = 0; i < 400; i++)
        c[rete_lb_pick(lb, &no_ctx, SEC)]++;
    assert_true(c[0] == 0 && c[1] == 0); /* 50% healthy: not below */
    fail_n(lb, 2, 1, SEC);
    memset(c, 0, sizeof c);
    for (int i = 0; i < 400; i++)
        c[rete_lb_pick(lb, &no_ctx, SEC)]++;
    assert_true(c[0] == 100 && c[1] == 100 && c[2] == 100 && c[3] == 100); /* 25%: all */
    rete_lb_stats st;
    rete_lb_get_stats(lb, SEC, &st);
    assert_int_equal(st.panic_total, 400);
    rete_lb_free(&lb);
}

/* Locality: the caller's zone while it is healthy, then the other zone of
 * its region, then the failover region, then the rest. */
static void test_locality_failover(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, RETE_LB_ROUND_ROBIN, NULL, 6);
    static const rete_label loc[6][2] = {
        {{"topology.kubernetes.io/region", "r1"}, {"topology.kubernetes.io/zone", "a"}},
        {{"topology.kubernetes.io/region", "r1"}, {"topology.kubernetes.io/zone", "a"}},
        {{"topology.kubernetes.io/region", "r1"}, {"topology.kubernetes.io/zone", "b"}},
        {{"topology.kubernetes.io/region", "r3"}, {"topology.kubernetes.io/zone", "x"}},
        {{"topology.kubernetes.io/region", "r2"}, {"topology.kubernetes.io/zone", "c"}},
        {{"topology.kubernetes.io/region", "r2"}, {"topology.kubernetes.io/zone", "c"}},
    };
    for (int i = 0; i < 6; i++) {
        f.wl[i].labels = loc[i];
        f.wl[i].n_labels = 2;
    }
    static const rete_locality_failover fo[] = {{"r1", "r2"}};
    f.svc.policy.consecutive_5xx = 1;
    f.svc.policy.locality = true;
    f.svc.policy.failover = fo;
    f.svc.policy.n_failover = 1;
    rete_workload self = {.name = "me", .labels = loc[0], .n_labels = 2};
    rete_lb_shared *sh = NULL;
    assert_int_equal(rete_lb_shared_build(&f.svc, &sh), RETE_OK);
    rete_lb *lb = rete_lb_new_at(sh, &self, 6);
    rete_lb_shared_unref(&sh);
    unsigned c[6];
#define PICKS(now)                                                                                 \
    do {                                                                                           \
        memset(c, 0, sizeof c);                                                                    \
        for (int i = 0; i < 600; i++)                                                              \
            c[rete_lb_pick(lb, &no_ctx, now)]++;                                                   \
    } while (0)
    PICKS(SEC);
    assert_true(c[0] == 300 && c[1] == 300);
    fail_n(lb, 0, 1, SEC); /* half of zone a: 70% stays, 30% to zone b */
    PICKS(SEC);
    assert_true(c[0] == 0 && c[1] > 350 && c[1] < 490 && c[2] > 110 && c[2] < 250);
    fail_n(lb, 1, 1, SEC);
    PICKS(SEC);
    assert_int_equal(c[2], 600);
    fail_n(lb, 2, 1, SEC); /* region r1 gone: the failover region, not r3 */
    PICKS(SEC);
    assert_true(c[3] == 0 && c[4] == 300 && c[5] == 300);
    PICKS(SEC + 1000 * MS); /* readmitted: home again */
    assert_true(c[0] == 300 && c[1] == 300);
#undef PICKS
    rete_lb_free(&lb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_kind_names, clear_outlier_table),
        cmocka_unit_test_setup(test_no_endpoints_and_zero_weight, clear_outlier_table),
        cmocka_unit_test_setup(test_not_ready_never_picked, clear_outlier_table),
        cmocka_unit_test_setup(test_exclude, clear_outlier_table),
        cmocka_unit_test_setup(test_shared_across_workers, clear_outlier_table),
        cmocka_unit_test_setup(test_rr_smooth_sequence, clear_outlier_table),
        cmocka_unit_test_setup(test_rr_skips_ejected, clear_outlier_table),
        cmocka_unit_test_setup(test_random_weighted, clear_outlier_table),
        cmocka_unit_test_setup(test_least_request_weighted, clear_outlier_table),
        cmocka_unit_test_setup(test_least_request_prefers_less_loaded, clear_outlier_table),
        cmocka_unit_test_setup(test_peak_ewma_avoids_slow_and_recovers, clear_outlier_table),
        cmocka_unit_test_setup(test_peak_ewma_counts_outstanding, clear_outlier_table),
        cmocka_unit_test_setup(test_peak_ewma_probes_new_endpoint, clear_outlier_table),
        cmocka_unit_test_setup(test_ring_hash, clear_outlier_table),
        cmocka_unit_test_setup(test_ring_hash_weight_scale_invariant, clear_outlier_table),
        cmocka_unit_test_setup(test_maglev, clear_outlier_table),
        cmocka_unit_test_setup(test_hash_empty_key_is_random, clear_outlier_table),
        cmocka_unit_test_setup(test_maglev_table_size_rounded_to_prime, clear_outlier_table),
        cmocka_unit_test_setup(test_ejection_after_consecutive_failures, clear_outlier_table),
        cmocka_unit_test_setup(test_outlier_off, clear_outlier_table),
        cmocka_unit_test_setup(test_max_ejection_percent, clear_outlier_table),
        cmocka_unit_test_setup(test_all_ejected_panic, clear_outlier_table),
        cmocka_unit_test_setup(test_outlier_shared_across_workers, clear_outlier_table),
        cmocka_unit_test_setup(test_outlier_gateway_and_local, clear_outlier_table),
        cmocka_unit_test_setup(test_panic_threshold, clear_outlier_table),
        cmocka_unit_test_setup(test_locality_failover, clear_outlier_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
