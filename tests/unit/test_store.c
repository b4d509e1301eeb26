/* Unit tests for src/control/store_sqlite.c through the store.h interface. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "store.h"

#include <grp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct fixture {
    char dir[64];
    char path[128];
    rete_store *s;
} fixture;

static void fx_path(fixture *f, const char *suffix, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s", f->path, suffix);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/rete-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/store.db", f->dir);
    rete_error e = {0};
    f->s = rete_store_sqlite_open(f->path, &e);
    if (!f->s)
        fail_msg("open: %s", e.msg);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->s)
        f->s->ops->close(f->s);
    const char *suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char p[160];
        fx_path(f, suffixes[i], p, sizeof p);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static void reopen(fixture *f)
{
    f->s->ops->close(f->s);
    rete_error e = {0};
    f->s = rete_store_sqlite_open(f->path, &e);
    if (!f->s)
        fail_msg("reopen: %s", e.msg);
}

static rete_store_write wr(const char *kind, const char *ns, const char *name, const char *json,
                           uint64_t expected)
{
    rete_store_write w = {
        .kind = kind, .ns = ns, .name = name, .json = json, .expected_version = expected};
    return w;
}

/* Apply one write and return its result code. */
static rete_rc put1(rete_store *s, rete_store_write *w)
{
    size_t fi = 99;
    return s->ops->apply(s, w, 1, &fi);
}

static void test_create_update_unchanged_delete(void **state)
{
    fixture *f = *state;
    rete_store *s = f->s;
    assert_int_equal(s->ops->revision(s), 0);
    assert_string_equal(s->ops->name, "sqlite");

    rete_store_write w = wr("Service", "demo", "web", "{\"v\":1}", 0);
    assert_int_equal(put1(s, &w), RETE_OK);
    assert_true(w.created);
    assert_false(w.unchanged);
    assert_int_equal(w.new_version, 1);
    assert_int_equal(s->ops->revision(s), 1);

    rete_store_resource r;
    assert_int_equal(s->ops->get(s, "Service", "demo", "web", &r), RETE_OK);
    assert_string_equal(r.kind, "Service");
    assert_string_equal(r.ns, "demo");
    assert_string_equal(r.name, "web");
    assert_string_equal(r.json, "{\"v\":1}");
    assert_int_equal(r.resource_version, 1);
    assert_int_equal(r.create_revision, 1);

    /* Same bytes: unchanged, no revision. */
    w = wr("Service", "demo", "web", "{\"v\":1}", 0);
    assert_int_equal(put1(s, &w), RETE_OK);
    assert_true(w.unchanged);
    assert_false(w.created);
    assert_int_equal(w.new_version, 0);
    assert_int_equal(s->ops->revision(s), 1);

    /* Different bytes (even only whitespace): configured. */
    w = wr("Service", "demo", "web", "{\"v\": 1}", 0);
    assert_int_equal(put1(s, &w), RETE_OK);
    assert_false(w.unchanged);
    assert_false(w.created);
    assert_int_equal(w.new_version, 2);
    assert_int_equal(s->ops->get(s, "Service", "demo", "web", &r), RETE_OK);
    assert_string_equal(r.json, "{\"v\": 1}");
    assert_int_equal(r.resource_version, 2);
    assert_int_equal(r.create_revision, 1);

    /* Delete: a new revision, and gone. */
    w = wr("Service", "demo", "web", NULL, 0);
    assert_int_equal(put1(s, &w), RETE_OK);
    assert_int_equal(w.new_version, 3);
    assert_int_equal(s->ops->revision(s), 3);
    assert_int_equal(s->ops->get(s, "Service", "demo", "web", &r), RETE_ENOTFOUND);

    /* Delete of a missing resource: ENOTFOUND, index reported, no revision. */
    rete_store_write ws[2] = {wr("Service", "demo", "other", "{}", 0),
                              wr("Service", "demo", "web", NULL, 0)};
    size_t fi = 99;
    assert_int_equal(s->ops->apply(s, ws, 2, &fi), RETE_ENOTFOUND);
    assert_int_equal(fi, 1);
    assert_int_equal(ws[0].new_version, 0);
    assert_false(ws[0].created);
    assert_int_equal(s->ops->revision(s), 3);
    assert_int_equal(s->ops->get(s, "Service", "demo", "other", &r), RETE_ENOTFOUND);

    /* Invalid writes. */
    w = wr("Service", NULL, "x", "{}", 0);
    assert_int_equal(put1(s, &w), RETE_EINVAL);
    w = wr("", "demo", "x", "{}", 0);
    assert_int_equal(put1(s, &w), RETE_EINVAL);
    assert_int_equal(s->ops->apply(s, NULL, 0, NULL), RETE_OK);
}

static void test_revisions(void **state)
{
    fixture *f = *state;
    rete_store *s = f->s;
    int64_t before = (int64_t)time(NULL);
    rete_store_write ws[3] = {wr("Service", "a", "x", "{}", 0), wr("Service", "a", "y", "{}", 0),
                              wr("Service", "a", "x", "{\"b\":1}", 0)};
    size_t fi;
    assert_int_equal(s->ops->apply(s, ws, 3, &fi), RETE_OK);
    /* Every write of a transaction gets the next revision, in order. */
    assert_int_equal(ws[0].new_version, 1);
    assert_true(ws[0].created);
    assert_int_equal(ws[1].new_version, 2);
    assert_int_equal(ws[2].new_version, 3);
    assert_false(ws[2].created);
    assert_int_equal(s->ops->revision(s), 3);

    rete_store_resource r;
    assert_int_equal(s->ops->get(s, "Service", "a", "x", &r), RETE_OK);
    assert_int_equal(r.resource_version, 3);
    assert_int_equal(r.create_revision, 1);
    assert_true(r.created_unix >= before && r.created_unix <= (int64_t)time(NULL) + 1);
    int64_t created = r.created_unix;

    /* An update keeps create_revision and created_unix. */
    rete_store_write w = wr("Service", "a", "x", "{\"b\":2}", 0);
    assert_int_equal(put1(s, &w), RETE_OK);
    assert_int_equal(s->ops->get(s, "Service", "a", "x", &r), RETE_OK);
    assert_int_equal(r.resource_version, 4);
    assert_int_equal(r.create_revision, 1);
    assert_int_equal(r.created_unix, created);

    /* Delete and re-create: a new create_revision. */
    w = wr("Service", "a", "x", NULL, 0);
    assert_int_equal(put1(s, &w), RETE_OK);
    w = wr("Service", "a", "x", "{}", 0);
    assert_int_equal(put1(s, &w), RETE_OK);
    assert_true(w.created);
    assert_int_equal(s->ops->get(s, "Service", "a", "x", &r), RETE_OK);
    assert_int_equal(r.resource_version, 6);
    assert_int_equal(r.create_revision, 6);

    /* Monotonic across many writes. */
    uint64_t last = s->ops->revision(s);
    for (int i = 0; i < 50; i++) {
        char json[32];
        snprintf(json, sizeof json, "{\"i\":%d}", i);
        w = wr("Workload", "a", i % 2 ? "p" : "q", json, 0);
        assert_int_equal(put1(s, &w), RETE_OK);
        assert_true(w.new_version > last);
        assert_int_equal(s->ops->revision(s), w.new_version);
        last = w.new_version;
    }
}

static void test_conflicts_all_or_nothing(void **state)
{
    fixture *f = *state;
    rete_store *s = f->s;
    rete_store_write w = wr("HTTPRoute", "a", "r", "{\"v\":1}", UINT64_MAX);
    assert_int_equal(put1(s, &w), RETE_OK); /* create-only on a missing key */
    assert_true(w.created);
    uint64_t v1 = w.new_version;

    w = wr("HTTPRoute", "a", "r", "{\"v\":2}", UINT64_MAX);
    assert_int_equal(put1(s, &w), RETE_ECONFLICT); /* create-only, but exists */
    w = wr("HTTPRoute", "a", "r", "{\"v\":2}", v1 + 7);
    assert_int_equal(put1(s, &w), RETE_ECONFLICT); /* stale / wrong version */
    w = wr("HTTPRoute", "a", "missing", "{}", 5);
    assert_int_equal(put1(s, &w), RETE_ECONFLICT); /* versioned update of nothing */
    w = wr("HTTPRoute", "a", "r", "{\"v\":1}", v1 + 1);
    assert_int_equal(put1(s, &w), RETE_ECONFLICT); /* conflict wins over unchanged */
    w = wr("HTTPRoute", "a", "r", NULL, v1 + 1);
    assert_int_equal(put1(s, &w), RETE_ECONFLICT); /* versioned delete */
    assert_int_equal(s->ops->revision(s), v1);

    w = wr("HTTPRoute", "a", "r", "{\"v\":2}", v1);
    assert_int_equal(put1(s, &w), RETE_OK);
    uint64_t v2 = w.new_version;

    /* A transaction whose third write conflicts changes nothing. */
    rete_store_write ws[4] = {
        wr("Service", "a", "new", "{}", 0),
        wr("HTTPRoute", "a", "r", "{\"v\":3}", v2),
        wr("HTTPRoute", "a", "r", "{\"v\":4}", v2), /* stale after ws[1] */
        wr("Service", "a", "new2", "{}", 0),
    };
    size_t fi = 99;
    assert_int_equal(s->ops->apply(s, ws, 4, &fi), RETE_ECONFLICT);
    assert_int_equal(fi, 2);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ws[i].new_version, 0);
        assert_false(ws[i].created);
    }
    assert_int_equal(s->ops->revision(s), v2);
    rete_store_resource r;
    assert_int_equal(s->ops->get(s, "Service", "a", "new", &r), RETE_ENOTFOUND);
    assert_int_equal(s->ops->get(s, "HTTPRoute", "a", "r", &r), RETE_OK);
    assert_string_equal(r.json, "{\"v\":2}");
    assert_int_equal(r.resource_version, v2);

    /* The revision after a failed transaction continues without a gap. */
    w = wr("Service", "a", "new", "{}", 0);
    assert_int_equal(put1(s, &w), RETE_OK);
    assert_int_equal(w.new_version, v2 + 1);

    /* Versioned delete with the current version works. */
    w = wr("HTTPRoute", "a", "r", NULL, v2);
    assert_int_equal(put1(s, &w), RETE_OK);
}

typedef struct collected {
    int n;
    char keys[64][64];
    uint64_t versions[64];
    int stop_after;
    rete_store *s;
    rete_rc nested_list, nested_apply, nested_get;
} collected;

static bool collect(const rete_store_resource *r, void *arg)
{
    collected *c = arg;
    assert_true(c->n < 64);
    snprintf(c->keys[c->n], sizeof c->keys[0], "%s/%s/%s", r->kind, r->ns, r->name);
    c->versions[c->n] = r->resource_version;
    c->n++;
    return c->stop_after == 0 || c->n < c->stop_after;
}

static bool noop(const rete_store_resource *r, void *arg)
{
    (void)r;
    (void)arg;
    return true;
}

static bool reenter(const rete_store_resource *r, void *arg)
{
    collected *c = arg;
    rete_store *s = c->s;
    c->nested_list = s->ops->list(s, NULL, NULL, noop, NULL);
    rete_store_write w = wr("Service", "z", "z", "{}", 0);
    size_t fi;
    c->nested_apply = s->ops->apply(s, &w, 1, &fi);
    rete_store_resource g;
    c->nested_get = s->ops->get(s, "Service", "a", "b", &g);
    /* The row handed to us is still intact after a get. */
    assert_string_equal(r->kind, "HTTPRoute");
    if (c->nested_get == RETE_OK)
        assert_string_equal(g.json, "{\"s\":\"ab\"}");
    return false;
}

static void test_list(void **state)
{
    fixture *f = *state;
    rete_store *s = f->s;
    /* Inserted out of order. */
    rete_store_write ws[] = {
        wr("Service", "b", "a", "{}", 0),
        wr("HTTPRoute", "a", "x", "{}", 0),
        wr("Service", "a", "b", "{\"s\":\"ab\"}", 0),
        wr("Service", "a", "a", "{}", 0),
        wr("Workload", "a", "w1", "{}", 0),
        wr("Service", "", "mesh", "{}", 0),
    };
    size_t n = sizeof ws / sizeof ws[0], fi;
    assert_int_equal(s->ops->apply(s, ws, n, &fi), RETE_OK);

    collected c = {0};
    assert_int_equal(s->ops->list(s, NULL, NULL, collect, &c), RETE_OK);
    const char *all[] = {"HTTPRoute/a/x", "Service//mesh", "Service/a/a",
                         "Service/a/b",   "Service/b/a",   "Workload/a/w1"};
    assert_int_equal(c.n, 6);
    for (int i = 0; i < 6; i++)
        assert_string_equal(c.keys[i], all[i]);
    assert_int_equal(c.versions[0], 2);

    memset(&c, 0, sizeof c);
    assert_int_equal(s->ops->list(s, "Service", NULL, collect, &c), RETE_OK);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.keys[0], "Service//mesh");
    assert_string_equal(c.keys[3], "Service/b/a");

    memset(&c, 0, sizeof c);
    assert_int_equal(s->ops->list(s, NULL, "a", collect, &c), RETE_OK);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.keys[0], "HTTPRoute/a/x");
    assert_string_equal(c.keys[3], "Workload/a/w1");

    memset(&c, 0, sizeof c);
    assert_int_equal(s->ops->list(s, "Service", "a", collect, &c), RETE_OK);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.keys[0], "Service/a/a");
    assert_string_equal(c.keys[1], "Service/a/b");

    memset(&c, 0, sizeof c);
    assert_int_equal(s->ops->list(s, "Nothing", NULL, collect, &c), RETE_OK);
    assert_int_equal(c.n, 0);

    /* The callback stops the walk. */
    memset(&c, 0, sizeof c);
    c.stop_after = 2;
    assert_int_equal(s->ops->list(s, NULL, NULL, collect, &c), RETE_OK);
    assert_int_equal(c.n, 2);

    /* Inside a callback: get works, writes and nested lists are refused. */
    memset(&c, 0, sizeof c);
    c.s = s;
    assert_int_equal(s->ops->list(s, NULL, NULL, reenter, &c), RETE_OK);
    assert_int_equal(c.nested_list, RETE_ESTATE);
    assert_int_equal(c.nested_apply, RETE_ESTATE);
    assert_int_equal(c.nested_get, RETE_OK);
    rete_store_resource r;
    assert_int_equal(s->ops->get(s, "Service", "z", "z", &r), RETE_ENOTFOUND);
    /* And the store works normally afterwards. */
    rete_store_write w = wr("Service", "z", "z", "{}", 0);
    assert_int_equal(put1(s, &w), RETE_OK);
}

static void test_get_buffer(void **state)
{
    fixture *f = *state;
    rete_store *s = f->s;
    /* A large value, then a small one, then large again: the buffer grows. */
    size_t big = 200000;
    char *json = malloc(big + 1);
    assert_non_null(json);
    memset(json, 'x', big);
    json[0] = '"';
    json[big - 1] = '"';
    json[big] = '\0';
    rete_store_write ws[2] = {wr("Service", "a", "big", json, 0), wr("Service", "a", "s", "1", 0)};
    size_t fi;
    assert_int_equal(s->ops->apply(s, ws, 2, &fi), RETE_OK);
    rete_store_resource r;
    assert_int_equal(s->ops->get(s, "Service", "a", "big", &r), RETE_OK);
    assert_int_equal(strlen(r.json), big);
    assert_memory_equal(r.json, json, big);
    assert_int_equal(s->ops->get(s, "Service", "a", "s", &r), RETE_OK);
    assert_string_equal(r.json, "1");
    assert_string_equal(r.name, "s");
    free(json);
    assert_int_equal(s->ops->get(s, "Service", "a", "nope", &r), RETE_ENOTFOUND);
}

static rete_store_token tok(const char *id, const char *ns, const char *sa, int64_t exp,
                            int32_t uses)
{
    rete_store_token t;
    memset(&t, 0, sizeof t);
    snprintf(t.id, sizeof t.id, "%s", id);
    snprintf(t.ns, sizeof t.ns, "%s", ns);
    snprintf(t.sa, sizeof t.sa, "%s", sa);
    t.expires_unix = exp;
    t.uses_left = uses;
    return t;
}

static void test_tokens(void **state)
{
    fixture *f = *state;
    rete_store *s = f->s;
    uint8_t h1[32], h2[32], wrong[32];
    for (int i = 0; i < 32; i++) {
        h1[i] = (uint8_t)i;
        h2[i] = (uint8_t)(0xa0 + i);
        wrong[i] = (uint8_t)i;
    }
    wrong[31] ^= 1; /* differs in the last byte only */
    int64_t now = 1700000000;
    rete_store_token out;

    /* Single use. */
    rete_store_token t = tok("00112233445566778899aabbccddeeff", "demo", "web", now + 3600, 1);
    assert_int_equal(s->ops->token_put(s, &t, h1), RETE_OK);
    assert_int_equal(s->ops->token_put(s, &t, h1), RETE_ECONFLICT);
    assert_int_equal(s->ops->token_use(s, t.id, wrong, now, &out), RETE_ENOTFOUND);
    assert_int_equal(s->ops->token_use(s, t.id, h1, now, &out), RETE_OK);
    assert_string_equal(out.id, t.id);
    assert_string_equal(out.ns, "demo");
    assert_string_equal(out.sa, "web");
    assert_int_equal(out.expires_unix, now + 3600);
    assert_int_equal(out.uses_left, 0);
    assert_int_equal(s->ops->token_use(s, t.id, h1, now, &out), RETE_ELIMIT);
    /* Wrong secret on a used-up token still says not found. */
    assert_int_equal(s->ops->token_use(s, t.id, wrong, now, &out), RETE_ENOTFOUND);

    /* Multi use. */
    t = tok("m", "demo", "db", now + 60, 3);
    assert_int_equal(s->ops->token_put(s, &t, h2), RETE_OK);
    for (int i = 2; i >= 0; i--) {
        assert_int_equal(s->ops->token_use(s, "m", h2, now, &out), RETE_OK);
        assert_int_equal(out.uses_left, i);
    }
    assert_int_equal(s->ops->token_use(s, "m", h2, now, &out), RETE_ELIMIT);

    /* Unlimited, until expiry (expires_unix is the first refused second). */
    t = tok("u", "demo", "web", now + 10, -1);
    assert_int_equal(s->ops->token_put(s, &t, h1), RETE_OK);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(s->ops->token_use(s, "u", h1, now + 9, &out), RETE_OK);
        assert_int_equal(out.uses_left, -1);
    }
    assert_int_equal(s->ops->token_use(s, "u", h1, now + 10, &out), RETE_ELIMIT);
    assert_int_equal(s->ops->token_use(s, "u", h1, now + 100000, NULL), RETE_ELIMIT);

    /* Expired before first use: no use consumed. */
    t = tok("e", "demo", "web", now - 1, 1);
    assert_int_equal(s->ops->token_put(s, &t, h1), RETE_OK);
    assert_int_equal(s->ops->token_use(s, "e", h1, now, &out), RETE_ELIMIT);
    assert_int_equal(s->ops->token_use(s, "e", h1, now - 2, &out), RETE_OK);

    /* Unknown ids, over-long ids, bad arguments. */
    assert_int_equal(s->ops->token_use(s, "nope", h1, now, &out), RETE_ENOTFOUND);
    char longid[100];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    assert_int_equal(s->ops->token_use(s, longid, h1, now, &out), RETE_ENOTFOUND);
    t = tok("bad", "demo", "web", now, -2);
    assert_int_equal(s->ops->token_put(s, &t, h1), RETE_EINVAL);
    t = tok("", "demo", "web", now, 1);
    assert_int_equal(s->ops->token_put(s, &t, h1), RETE_EINVAL);

    /* Tokens do not touch the resource revision. */
    assert_int_equal(s->ops->revision(s), 0);

    /* Uses survive a reopen. */
    t = tok("p", "demo", "web", now + 60, 2);
    assert_int_equal(s->ops->token_put(s, &t, h1), RETE_OK);
    assert_int_equal(s->ops->token_use(s, "p", h1, now, &out), RETE_OK);
    reopen(f);
    s = f->s;
    assert_int_equal(s->ops->token_use(s, "p", h1, now, &out), RETE_OK);
    assert_int_equal(out.uses_left, 0);
    assert_int_equal(s->ops->token_use(s, "p", h1, now, &out), RETE_ELIMIT);
}

static void test_token_prune(void **state)
{
    fixture *f = *state;
    rete_store *s = f->s;
    uint8_t h[32];
    for (int i = 0; i < 32; i++)
        h[i] = (uint8_t)(7 * i);
    int64_t now = 1700000000;
    rete_store_token old = tok("old", "demo", "web", now - 7200, 1);
    rete_store_token used = tok("used", "demo", "web", now + 3600, 1);
    rete_store_token live = tok("live", "demo", "web", now + 3600, -1);
    assert_int_equal(s->ops->token_put(s, &old, h), RETE_OK);
    assert_int_equal(s->ops->token_put(s, &used, h), RETE_OK);
    assert_int_equal(s->ops->token_put(s, &live, h), RETE_OK);
    assert_int_equal(s->ops->token_use(s, "used", h, now, NULL), RETE_OK);
    size_t removed = 99;
    /* Only what expired before the cut goes; a used-up token that has not
     * expired stays (its user still hears "used up", not "unknown"). */
    assert_int_equal(s->ops->token_prune(s, now - 3600, &removed), RETE_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(s->ops->token_use(s, "old", h, now - 7300, NULL), RETE_ENOTFOUND);
    assert_int_equal(s->ops->token_use(s, "used", h, now, NULL), RETE_ELIMIT);
    assert_int_equal(s->ops->token_use(s, "live", h, now, NULL), RETE_OK);
    assert_int_equal(s->ops->token_prune(s, now - 3600, &removed), RETE_OK);
    assert_int_equal(removed, 0);
}

static void test_reopen(void **state)
{
    fixture *f = *state;
    rete_store_write ws[3] = {wr("Service", "a", "x", "{\"x\":1}", 0),
                              wr("Service", "a", "y", "{}", 0), wr("Service", "a", "y", NULL, 0)};
    size_t fi;
    assert_int_equal(f->s->ops->apply(f->s, ws, 3, &fi), RETE_OK);
    assert_int_equal(f->s->ops->revision(f->s), 3);
    reopen(f);
    rete_store *s = f->s;
    assert_int_equal(s->ops->revision(s), 3);
    rete_store_resource r;
    assert_int_equal(s->ops->get(s, "Service", "a", "x", &r), RETE_OK);
    assert_string_equal(r.json, "{\"x\":1}");
    assert_int_equal(r.resource_version, 1);
    assert_int_equal(s->ops->get(s, "Service", "a", "y", &r), RETE_ENOTFOUND);
    rete_store_write w = wr("Service", "a", "x", "{\"x\":2}", 1);
    assert_int_equal(put1(s, &w), RETE_OK);
    assert_int_equal(w.new_version, 4);
}

static mode_t mode_of(const char *p)
{
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    return st.st_mode & 0777;
}

static void test_file_mode(void **state)
{
    fixture *f = *state;
    rete_store_write w = wr("Service", "a", "x", "{}", 0);
    assert_int_equal(put1(f->s, &w), RETE_OK);
    char p[160];
    assert_int_equal(mode_of(f->path), 0600);
    fx_path(f, "-wal", p, sizeof p);
    assert_int_equal(mode_of(p), 0600);
    fx_path(f, "-shm", p, sizeof p);
    assert_int_equal(mode_of(p), 0600);

    /* A file widened by hand is tightened at open. */
    f->s->ops->close(f->s);
    f->s = NULL;
    assert_int_equal(chmod(f->path, 0644), 0);
    rete_error e = {0};
    f->s = rete_store_sqlite_open(f->path, &e);
    if (!f->s)
        fail_msg("open: %s", e.msg);
    assert_int_equal(mode_of(f->path), 0600);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static void test_bad_files(void **state)
{
    fixture *f = *state;
    rete_error e = {0};
    char p[160];

    /* Not a database at all. */
    snprintf(p, sizeof p, "%s/garbage.db", f->dir);
    static char junk[4096 * 4];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 31 + 7);
    write_file(p, junk, sizeof junk);
    e = (rete_error){0};
    assert_null(rete_store_sqlite_open(p, &e));
    print_message("open refused: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "garbage.db"));
    assert_non_null(strstr(e.msg, "not a database"));
    assert_int_equal(e.code, RETE_EIO);
    assert_null(rete_store_sqlite_open("", &e));
    assert_int_equal(e.code, RETE_EINVAL);
    assert_string_equal(e.msg, "store: no database path");
    unlink(p);

    /* A real store with damaged pages. */
    rete_store_write ws[200];
    char names[200][16];
    static char json[2000];
    memset(json, 'j', sizeof json - 1);
    json[0] = '"';
    json[sizeof json - 2] = '"';
    for (int i = 0; i < 200; i++) {
        snprintf(names[i], sizeof names[i], "n%03d", i);
        ws[i] = wr("Service", "a", names[i], json, 0);
    }
    size_t fi;
    assert_int_equal(f->s->ops->apply(f->s, ws, 200, &fi), RETE_OK);
    f->s->ops->close(f->s); /* checkpoints the WAL into the file */
    f->s = NULL;
    FILE *fp = fopen(f->path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 4096 * 3, SEEK_SET), 0);
    assert_int_equal(fwrite(junk, 1, sizeof junk, fp), sizeof junk);
    assert_int_equal(fclose(fp), 0);
    e = (rete_error){0};
    assert_null(rete_store_sqlite_open(f->path, &e));
    print_message("open refused: %s\n", e.msg);
    assert_true(strlen(e.msg) > 0);
    assert_non_null(strstr(e.msg, "store.db"));

    /* Another program's SQLite database. */
    snprintf(p, sizeof p, "%s/other.db", f->dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(a)", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    e = (rete_error){0};
    assert_null(rete_store_sqlite_open(p, &e));
    print_message("open refused: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "not a rete store"));
    unlink(p);

    /* A store from a newer build. */
    snprintf(p, sizeof p, "%s/newer.db", f->dir);
    rete_store *s = rete_store_sqlite_open(p, &e);
    assert_non_null(s);
    s->ops->close(s);
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=99", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    e = (rete_error){0};
    assert_null(rete_store_sqlite_open(p, &e));
    print_message("open refused: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "newer"));
    unlink(p);
    char p2[200];
    snprintf(p2, sizeof p2, "%s-wal", p);
    unlink(p2);
    snprintf(p2, sizeof p2, "%s-shm", p);
    unlink(p2);

    /* A directory that does not exist, and a directory in place of a file. */
    snprintf(p, sizeof p, "%s/no/such/store.db", f->dir);
    e = (rete_error){0};
    assert_null(rete_store_sqlite_open(p, &e));
    print_message("open refused: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "No such file"));
    e = (rete_error){0};
    assert_null(rete_store_sqlite_open(f->dir, &e));
    print_message("open refused: %s\n", e.msg);
    assert_true(strlen(e.msg) > 0);

    /* Unreadable. Root reads anything, so as root (CI, make test) the open
     * runs in a child that has dropped to nobody (65534): this branch runs
     * everywhere. */
    snprintf(p, sizeof p, "%s/locked.db", f->dir);
    write_file(p, "", 0);
    assert_int_equal(chmod(p, 0), 0);
    if (geteuid() != 0) {
        e = (rete_error){0};
        assert_null(rete_store_sqlite_open(p, &e));
        print_message("open refused: %s\n", e.msg);
        assert_non_null(strstr(e.msg, "Permission denied"));
    } else {
        assert_int_equal(chmod(f->dir, 0711), 0); /* nobody may reach the file */
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
                _exit(2);
            e = (rete_error){0};
            if (rete_store_sqlite_open(p, &e))
                _exit(3);
            printf("open refused (as nobody): %s\n", e.msg);
            fflush(stdout);
            _exit(strstr(e.msg, "Permission denied") ? 0 : 4);
        }
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0); /* 2: no setuid, 3: opened, 4: other error */
        assert_int_equal(chmod(f->dir, 0700), 0);
    }
    unlink(p);
}

static bool count_rows(const rete_store_resource *r, void *arg)
{
    (void)r;
    (*(size_t *)arg)++;
    return true;
}

/* Rows damaged behind the store's back (another tool, a bad restore) give
 * errors, never crashes or wrong answers. */
static void tamper(fixture *f, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("tamper: %s", msg ? msg : "?");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_damaged_rows(void **state)
{
    fixture *f = *state;
    rete_store *s = f->s;
    rete_store_write ws[2] = {wr("Service", "a", "x", "{}", 0), wr("Service", "a", "y", "{}", 0)};
    size_t fi;
    assert_int_equal(s->ops->apply(s, ws, 2, &fi), RETE_OK);
    uint8_t h[32] = {1};
    rete_store_token t = tok("t", "demo", "web", INT64_MAX, 5);
    assert_int_equal(s->ops->token_put(s, &t, h), RETE_OK);

    tamper(f, "UPDATE resources SET resource_version = 'abc' WHERE name = 'x';"
              "UPDATE tokens SET secret_hash = x'0102' WHERE id = 't'");
    rete_store_resource r;
    assert_int_equal(s->ops->get(s, "Service", "a", "x", &r), RETE_EIO);
    assert_int_equal(s->ops->get(s, "Service", "a", "y", &r), RETE_OK);
    size_t n = 0;
    assert_int_equal(s->ops->list(s, NULL, NULL, count_rows, &n), RETE_EIO);
    rete_store_write w = wr("Service", "a", "x", "{\"v\":2}", 0);
    assert_int_equal(put1(s, &w), RETE_EIO);
    assert_int_equal(s->ops->revision(s), 2);
    assert_int_equal(s->ops->token_use(s, "t", h, 0, NULL), RETE_EIO);

    tamper(f, "UPDATE resources SET resource_version = -5 WHERE name = 'x';"
              "UPDATE tokens SET secret_hash = zeroblob(32), uses_left = -7 WHERE id = 't'");
    assert_int_equal(s->ops->get(s, "Service", "a", "x", &r), RETE_EIO);
    uint8_t zero[32] = {0};
    assert_int_equal(s->ops->token_use(s, "t", zero, 0, NULL), RETE_EIO);

    /* Repaired, the store carries on. */
    tamper(f, "UPDATE resources SET resource_version = 1 WHERE name = 'x'");
    assert_int_equal(put1(s, &w), RETE_OK);
    assert_int_equal(w.new_version, 3);

    /* A damaged revision counter is refused at open. */
    s->ops->close(s);
    f->s = NULL;
    tamper(f, "UPDATE meta SET value = 'x' WHERE key = 'revision'");
    rete_error e = {0};
    assert_null(rete_store_sqlite_open(f->path, &e));
    print_message("open refused: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "revision"));
}

static double secs_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static bool count(const rete_store_resource *r, void *arg)
{
    (void)r;
    (*(size_t *)arg)++;
    return true;
}

/* Ten thousand resources: single and batched applies, a full list, gets by
 * name and a reopen all see every resource. The timings are printed for
 * the report and never asserted (the machine is noisy). */
static void test_ten_thousand_resources_listed_got_and_reopened(void **state)
{
    fixture *f = *state;
    rete_store *s = f->s;
    const char *json = "{\"apiVersion\":\"rete.dev/v1\",\"kind\":\"Service\",\"metadata\":"
                       "{\"name\":\"svc\",\"namespace\":\"bench\"},\"spec\":{\"ports\":"
                       "[{\"port\":8080,\"protocol\":\"HTTP\"}],\"selector\":{\"app\":\"svc\"}}}";
    static char names[10000][16];
    for (int i = 0; i < 10000; i++)
        snprintf(names[i], sizeof names[i], "svc-%05d", i);
    size_t fi;
    struct timespec t0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 1000; i++) {
        rete_store_write w = wr("Service", "single", names[i], json, 0);
        assert_int_equal(s->ops->apply(s, &w, 1, &fi), RETE_OK);
    }
    double single = secs_since(&t0);

    static rete_store_write ws[10000];
    for (int i = 0; i < 1000; i++)
        ws[i] = wr("Service", "batch", names[i], json, 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(s->ops->apply(s, ws, 1000, &fi), RETE_OK);
    double batch = secs_since(&t0);

    for (int i = 0; i < 8000; i++)
        ws[i] = wr("Workload", "fill", names[i], json, 0);
    assert_int_equal(s->ops->apply(s, ws, 8000, &fi), RETE_OK);
    size_t n = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(s->ops->list(s, NULL, NULL, count, &n), RETE_OK);
    double list = secs_since(&t0);
    assert_int_equal(n, 10000);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    rete_store_resource r;
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(s->ops->get(s, "Workload", "fill", names[i * 7], &r), RETE_OK);
        assert_string_equal(r.name, names[i * 7]);
    }
    double get = secs_since(&t0);

    s->ops->close(s);
    f->s = NULL;
    rete_error e = {0};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    f->s = rete_store_sqlite_open(f->path, &e);
    double open = secs_since(&t0);
    assert_non_null(f->s);
    n = 0;
    assert_int_equal(f->s->ops->list(f->s, NULL, NULL, count, &n), RETE_OK);
    assert_int_equal(n, 10000); /* all of it survived the reopen */

    printf("store timings: 1000 single-write applies %.1f ms (%.1f us each); one 1000-write "
           "apply %.1f ms; list of 10000 %.1f ms; 1000 gets %.1f ms; open with 10000 "
           "resources %.1f ms\n",
           single * 1e3, single * 1e6 / 1000, batch * 1e3, list * 1e3, get * 1e3, open * 1e3);
}

/* A token hash's text form (etcd, the logical dump): every byte value
 * round-trips, anything but exactly 64 hex digits is refused. */
static void test_hash_hex(void **state)
{
    (void)state;
    uint8_t h[32], back[32];
    char hex[65];
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < 32; i++)
            h[i] = (uint8_t)(round * 32 + i);
        rete_store_hash_hex(h, hex);
        assert_int_equal(strlen(hex), 64);
        assert_true(rete_store_hash_from_hex(hex, back));
        assert_memory_equal(h, back, 32);
    }
    assert_string_equal(hex, "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
    hex[10] = 'A'; /* upper case is read too */
    assert_true(rete_store_hash_from_hex(hex, back));
    assert_int_equal(back[5], 0xa5);
    char bad[66];
    memcpy(bad, hex, 65);
    bad[63] = '\0'; /* 63 digits */
    assert_false(rete_store_hash_from_hex(bad, back));
    memcpy(bad, hex, 64);
    bad[64] = '0';
    bad[65] = '\0'; /* 65 */
    assert_false(rete_store_hash_from_hex(bad, back));
    memcpy(bad, hex, 65);
    bad[7] = ' '; /* not a digit (sscanf's %2x took spaces) */
    assert_false(rete_store_hash_from_hex(bad, back));
    bad[7] = 'g';
    assert_false(rete_store_hash_from_hex(bad, back));
    assert_false(rete_store_hash_from_hex(NULL, back));
    assert_false(rete_store_hash_from_hex("", back));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_hex),
        cmocka_unit_test_setup_teardown(test_create_update_unchanged_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revisions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflicts_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_buffer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ten_thousand_resources_listed_got_and_reopened, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
