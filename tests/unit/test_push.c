/* Unit tests for src/control/push.c (change tracking and push scheduling)
 * and src/control/registry.c, on a reted with a real loop and an empty
 * store but no listener. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compiler.h"
#include "push.h"
#include "registry.h"
#include "reted.h"
#include "temp_store.h"

typedef struct fixture {
    char dir[64];
    char path[96];
    uv_loop_t loop;
    reted r;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->r.store = fx_temp_store("push", f->dir, sizeof f->dir, f->path, sizeof f->path);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->r.loop = &f->loop;
    f->r.iol.loop = &f->loop;
    reted_stats_init(&f->r.stats);
    reted_push_init(&f->r);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    reted_push_close(&f->r);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    reted_registry_free(&f->r);
    reted_cache_free(&f->r);
    reted_stats_free(&f->r.stats);
    f->r.store->ops->close(f->r.store);
    const char *suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s%s", f->path, suffixes[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Run the loop until the push timer has fired. */
static void until_pushed(fixture *f)
{
    for (int i = 0; i < 1000 && f->r.push.pending; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_false(f->r.push.pending);
}

/* A burst of changes arms the timer once and costs one sync: every key is
 * remembered until then, and the sync consumes them all. */
static void test_changes_coalesce_into_one_sync(void **state)
{
    fixture *f = *state;
    reted *r = &f->r;
    assert_false(r->push.pending);
    reted_changed(r, "Service", "default", "a");
    assert_true(r->push.pending);
    assert_true(uv_is_active((uv_handle_t *)&r->push.timer));
    reted_changed(r, "HTTPRoute", "default", "b");
    reted_changed(r, "Service", "shop", "c");
    assert_int_equal(r->cache.dirty.n, 9); /* kind, ns, name of each */
    assert_false(r->cache.dirty_all);
    until_pushed(f);
    assert_int_equal(r->cache.dirty.n, 0);
    assert_true(r->index.built);
    /* the burst is over: the bodies and freed heap go back in a second */
    assert_true(r->push.pushed_since_trim);
    assert_true(uv_is_active((uv_handle_t *)&r->push.trim_timer));
    /* the tick trims at most every 30 s while pushes never calm down (never
     * trimmed yet: now) */
    reted_push_tick(r);
    assert_false(r->push.pushed_since_trim);
    assert_true(r->push.trimmed_ms > 0);
    reted_changed(r, "Service", "default", "a");
    until_pushed(f);
    reted_push_tick(r);
    assert_true(r->push.pushed_since_trim);
}

/* A change not given by key (kind NULL), or too many keys, rebuilds
 * everything once. */
static void test_unkeyed_change_rebuilds_all(void **state)
{
    fixture *f = *state;
    reted *r = &f->r;
    reted_changed(r, "Service", "default", "a");
    reted_changed(r, NULL, NULL, NULL);
    assert_true(r->cache.dirty_all);
    until_pushed(f);
    assert_false(r->cache.dirty_all);
    assert_int_equal(r->cache.dirty.n, 0);
    for (size_t i = 0; i < RETED_MAX_DIRTY + 1; i++)
        reted_changed(r, "Service", "default", "x");
    assert_true(r->cache.dirty_all);
    until_pushed(f);
    assert_false(r->cache.dirty_all);
}

/* A disconnected proxy is kept in the registry (until its grace period
 * ends) but never pushed to: a push needs a stream. */
static void test_disconnected_proxy_not_pushed(void **state)
{
    fixture *f = *state;
    reted *r = &f->r;
    reted_proxy *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->ns = "default"; /* constants: p->names stays NULL */
    p->name = "web-1";
    reted_proxy_add(r, p);
    reted_changed(r, "Service", "default", "web");
    until_pushed(f);
    assert_null(p->sent);
    assert_int_equal(p->sent_version, 0);
    assert_int_equal(rete_metrics_counter_value(r->stats.reg, r->stats.pushes), 0);
    assert_int_equal(rete_metrics_counter_value(r->stats.reg, r->stats.compiles), 0);
}

static reted_proxy *add_proxy(reted *r, const char *ns, const char *name)
{
    reted_proxy *p = calloc(1, sizeof *p);
    assert_non_null(p);
    /* as proxy_api.c holds them: "ns\0name\0" in one allocation, freed with p */
    size_t nl = strlen(ns) + 1;
    p->names = malloc(nl + strlen(name) + 1);
    assert_non_null(p->names);
    memcpy(p->names, ns, nl);
    strcpy(p->names + nl, name);
    p->ns = p->names;
    p->name = p->names + nl;
    p->nack_error = strdup("freed with its proxy");
    reted_proxy_add(r, p);
    return p;
}

/* The registry finds a proxy by namespace and name, both: the same name
 * in another namespace is another proxy; past its first 64 buckets (the
 * table doubles) and after one is unlinked, every other one is still found. */
static void test_registry_find(void **state)
{
    fixture *f = *state;
    reted *r = &f->r;
    const char *keys[][2] = {{"default", "web-1"}, {"shop", "web-1"}, {"default", "db-1"}};
    for (size_t i = 0; i < 3; i++)
        add_proxy(r, keys[i][0], keys[i][1]);
    for (size_t i = 0; i < 3; i++) {
        reted_proxy *p = reted_proxy_find(r, keys[i][0], keys[i][1]);
        assert_non_null(p);
        assert_string_equal(p->ns, keys[i][0]);
        assert_string_equal(p->name, keys[i][1]);
    }
    assert_null(reted_proxy_find(r, "shop", "db-1"));
    assert_null(reted_proxy_find(r, "default", "web"));
    char name[32];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "sim-%d", i);
        add_proxy(r, "bulk", name);
    }
    assert_int_equal(r->registry.n_proxies, 303);
    assert_true(r->registry.n_buckets >= 303);
    /* unlink one from the middle of the list */
    reted_proxy **pp = &r->registry.proxies;
    while (strcmp((*pp)->name, "sim-150") != 0)
        pp = &(*pp)->next;
    reted_proxy *gone = *pp;
    reted_proxy_unlink(r, pp);
    reted_proxy_free(r, gone);
    assert_null(reted_proxy_find(r, "bulk", "sim-150"));
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "sim-%d", i);
        if (i != 150)
            assert_non_null(reted_proxy_find(r, "bulk", name));
    }
    for (size_t i = 0; i < 3; i++)
        assert_non_null(reted_proxy_find(r, keys[i][0], keys[i][1]));
    assert_int_equal(r->registry.n_proxies, 302);
    reted_registry_free(r); /* ASan: nothing of them leaks */
    assert_null(r->registry.proxies);
    assert_null(reted_proxy_find(r, "bulk", "sim-1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_changes_coalesce_into_one_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unkeyed_change_rebuilds_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disconnected_proxy_not_pushed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_find, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
