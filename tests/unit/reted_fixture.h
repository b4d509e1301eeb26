/* A reted for unit tests of the control plane's modules: a SQLite store in
 * a temporary directory, a CA (the compiler hashes its bundle into every
 * snapshot), the stats families, no loop and no listener. Resources are put
 * in the store as JSON with fx_put / fx_del, then the index or the snapshot
 * cache is asked. */
#ifndef RETE_TESTS_RETED_FIXTURE_H
#define RETE_TESTS_RETED_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compiler.h"
#include "temp_store.h"
#include "reted.h"

typedef struct fixture {
    char dir[64];
    char path[96];
    reted r;
} fixture;

static inline int fx_setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->r.store = fx_temp_store("reted", f->dir, sizeof f->dir, f->path, sizeof f->path);
    rete_error e = {0};
    char cadir[128];
    snprintf(cadir, sizeof cadir, "%s/ca", f->dir);
    if (rete_ca_init(cadir, "cluster.local", &e) != RETE_OK)
        fail_msg("ca init: %s", e.msg);
    f->r.ca = rete_ca_load(cadir, "cluster.local", &e);
    if (!f->r.ca)
        fail_msg("ca load: %s", e.msg);
    reted_stats_init(&f->r.stats);
    *state = f;
    return 0;
}

static inline int fx_teardown(void **state)
{
    fixture *f = *state;
    reted_cache_free(&f->r);
    reted_stats_free(&f->r.stats);
    rete_ca_free(f->r.ca);
    f->r.store->ops->close(f->r.store);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Put (json != NULL) or delete one resource; the key is recorded as
 * changed (what reted_changed does before the push timer runs). */
static inline void fx_write(fixture *f, const char *kind, const char *ns, const char *name, const char *json)
{
    rete_store_write w = {.kind = kind, .ns = ns, .name = name, .json = json};
    size_t failed = 0;
    assert_int_equal(f->r.store->ops->apply(f->r.store, &w, 1, &failed), RETE_OK);
    reted_changed_key(&f->r, kind, ns, name);
}

/* A resource of `kind` in ns/name with `spec` (a JSON object's text). */
static inline void fx_put(fixture *f, const char *kind, const char *ns, const char *name, const char *spec)
{
    char json[2048];
    int n = snprintf(json, sizeof json,
                     "{\"kind\":\"%s\",\"metadata\":{\"namespace\":\"%s\",\"name\":\"%s\"},\"spec\":%s}",
                     kind, ns, name, spec);
    assert_true(n > 0 && (size_t)n < sizeof json);
    fx_write(f, kind, ns, name, json);
}

static inline void fx_del(fixture *f, const char *kind, const char *ns, const char *name)
{
    fx_write(f, kind, ns, name, NULL);
}

#endif
