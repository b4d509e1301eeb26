/* A reted store in a temporary directory, for the unit tests that need one
 * (reted_fixture.h, test_push.c). cmocka.h comes first in every includer. */
#ifndef RETE_TEST_TEMP_STORE_H
#define RETE_TEST_TEMP_STORE_H

#include <stdio.h>
#include <stdlib.h>

#include "error.h"
#include "store.h"

/* A store in a new temporary directory (dir: "/tmp/rete-<name>-XXXXXX",
 * filled in; path: dir/store.db). */
static inline rete_store *fx_temp_store(const char *name, char *dir, size_t dirlen, char *path, size_t pathlen)
{
    snprintf(dir, dirlen, "/tmp/rete-%s-XXXXXX", name);
    assert_non_null(mkdtemp(dir));
    snprintf(path, pathlen, "%s/store.db", dir);
    rete_error e = {0};
    rete_store *st = rete_store_sqlite_open(path, &e);
    if (!st)
        fail_msg("open: %s", e.msg);
    return st;
}

#endif
