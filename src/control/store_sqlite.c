/* The embedded store backend: one SQLite database file (store.h).
 *
 * Schema (versioned by PRAGMA user_version, marked by PRAGMA application_id
 * so that another program's database is refused rather than written into):
 *   resources(kind, ns, name, json, resource_version, create_revision, created_unix)
 *   meta(key, value)            -- 'revision': the one revision counter
 *   tokens(id, secret_hash, ns, sa, expires_unix, uses_left)
 *
 * WAL journal with synchronous=NORMAL: a commit is atomic and the database is
 * never corrupted by a crash; a power loss may forget the last commits before
 * the next checkpoint (SQLite's documented trade-off for WAL + NORMAL).
 *
 * One thread at a time: reted calls the store from its loop thread. The
 * connection is opened SQLITE_OPEN_NOMUTEX and the store keeps one output
 * buffer, so concurrent calls are not allowed.
 *
 * Every sqlite3 call is checked; a failure is logged with SQLite's message
 * (never with a token secret or hash) and reported as RETE_EIO. Values read
 * back are checked too (types, ranges, lengths): a damaged row is an error,
 * never a crash. */
#include "store.h"

#include "alloc.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define STORE_SCHEMA_VERSION 1
#define STORE_APPLICATION_ID 0x72657465 /* "rete" */
#define STORE_BUSY_TIMEOUT_MS 2000

/* The statements kept prepared for the life of the store. */
enum store_stmt {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_REV_GET,
    ST_REV_SET,
    ST_RES_GET,
    ST_RES_INSERT,
    ST_RES_UPDATE,
    ST_RES_DELETE,
    ST_LIST_ALL,
    ST_LIST_KIND,
    ST_LIST_NS,
    ST_LIST_KIND_NS,
    ST_TOK_INSERT,
    ST_TOK_GET,
    ST_TOK_CONSUME,
    ST_TOK_PRUNE,
    ST_TOK_LIST,
    ST__COUNT
};

/* One statement per row (prepared once): the rows share a shape by design. */
static const char *const store_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_REV_GET] = "SELECT value FROM meta WHERE key = 'revision'",
    [ST_REV_SET] = "UPDATE meta SET value = ?1 WHERE key = 'revision'",
    [ST_RES_GET] = "SELECT kind, ns, name, json, resource_version, create_revision, created_unix"
                   " FROM resources WHERE kind = ?1 AND ns = ?2 AND name = ?3",
    [ST_RES_INSERT] = "INSERT INTO resources (kind, ns, name, json, resource_version,"
                      " create_revision, created_unix) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
    [ST_RES_UPDATE] = "UPDATE resources SET json = ?4, resource_version = ?5"
                      " WHERE kind = ?1 AND ns = ?2 AND name = ?3",
    [ST_RES_DELETE] = "DELETE FROM resources WHERE kind = ?1 AND ns = ?2 AND name = ?3",
    /* Ordered by the primary key's index: kind, ns, name (BINARY collation). */
    [ST_LIST_ALL] = "SELECT kind, ns, name, json, resource_version, create_revision, created_unix"
                    " FROM resources ORDER BY kind, ns, name",
    [ST_LIST_KIND] = "SELECT kind, ns, name, json, resource_version, create_revision, created_unix"
                     " FROM resources WHERE kind = ?1 ORDER BY kind, ns, name",
    [ST_LIST_NS] = "SELECT kind, ns, name, json, resource_version, create_revision, created_unix"
                   " FROM resources WHERE ns = ?2 ORDER BY kind, ns, name",
    [ST_LIST_KIND_NS] =
        "SELECT kind, ns, name, json, resource_version, create_revision, created_unix"
        " FROM resources WHERE kind = ?1 AND ns = ?2 ORDER BY kind, ns, name",
    [ST_TOK_INSERT] = "INSERT INTO tokens (id, secret_hash, ns, sa, expires_unix, uses_left)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_TOK_GET] = "SELECT secret_hash, ns, sa, expires_unix, uses_left FROM tokens WHERE id = ?1",
    /* The consumption itself: one statement, so no other writer can take
     * the same use between the check and the decrement. */
    [ST_TOK_CONSUME] = "UPDATE tokens SET uses_left = uses_left - 1"
                       " WHERE id = ?1 AND uses_left > 0 AND expires_unix > ?2 RETURNING uses_left",
    [ST_TOK_PRUNE] = "DELETE FROM tokens WHERE expires_unix <= ?1",
    [ST_TOK_LIST] = "SELECT id, secret_hash, ns, sa, expires_unix, uses_left FROM tokens ORDER BY id",
};

/* Version 1 of the schema, created in one transaction with user_version. */
static const char store_schema_v1[] =
    "CREATE TABLE resources ("
    " kind TEXT NOT NULL, ns TEXT NOT NULL, name TEXT NOT NULL, json TEXT NOT NULL,"
    " resource_version INTEGER NOT NULL, create_revision INTEGER NOT NULL,"
    " created_unix INTEGER NOT NULL, PRIMARY KEY (kind, ns, name)) WITHOUT ROWID;"
    "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;"
    "INSERT INTO meta (key, value) VALUES ('revision', 0);"
    "CREATE TABLE tokens ("
    " id TEXT PRIMARY KEY NOT NULL, secret_hash BLOB NOT NULL, ns TEXT NOT NULL,"
    " sa TEXT NOT NULL, expires_unix INTEGER NOT NULL, uses_left INTEGER NOT NULL);";

typedef struct store_sqlite {
    rete_store base; /* first: rete_store * <-> store_sqlite * */
    sqlite3 *db;
    char *path;
    sqlite3_stmt *st[ST__COUNT];
    uint64_t revision; /* last committed revision (cache for revision()) */
    bool in_list;      /* inside a list callback: no writes, no nested list */
    char *out;         /* get()'s strings live here until the next get() */
    size_t out_cap;
} store_sqlite;

static store_sqlite *to_sq(rete_store *s)
{
    return (store_sqlite *)s;
}

/* Log the connection's last error for `what` and return RETE_EIO. */
static rete_rc sq_fail(store_sqlite *sq, const char *what)
{
    rete_err("store %s: %s: %s (sqlite %d)", sq->path, what, sqlite3_errmsg(sq->db),
             sqlite3_extended_errcode(sq->db));
    return RETE_EIO;
}

/* A statement ready for new bindings. Reset errors repeat the last step's
 * error, which was already handled, so they are ignored here. */
static sqlite3_stmt *sq_stmt(store_sqlite *sq, enum store_stmt which)
{
    sqlite3_stmt *st = sq->st[which];
    (void)sqlite3_reset(st);
    (void)sqlite3_clear_bindings(st);
    return st;
}

static void sq_done(sqlite3_stmt *st)
{
    (void)sqlite3_reset(st);
}

static bool bind_text(sqlite3_stmt *st, int idx, const char *s)
{
    return sqlite3_bind_text(st, idx, s, -1, SQLITE_STATIC) == SQLITE_OK;
}

static bool bind_key(sqlite3_stmt *st, const char *kind, const char *ns, const char *name)
{
    return bind_text(st, 1, kind) && bind_text(st, 2, ns) && bind_text(st, 3, name);
}

/* Run a statement that returns no rows. */
static rete_rc sq_exec(store_sqlite *sq, enum store_stmt which, const char *what)
{
    sqlite3_stmt *st = sq_stmt(sq, which);
    int rc = sqlite3_step(st);
    sq_done(st);
    if (rc != SQLITE_DONE)
        return sq_fail(sq, what);
    return RETE_OK;
}

static void sq_rollback(store_sqlite *sq)
{
    /* Nothing to undo when SQLite already rolled back (some errors do). */
    if (sqlite3_get_autocommit(sq->db))
        return;
    if (sq_exec(sq, ST_ROLLBACK, "rollback") != RETE_OK)
        rete_err("store %s: rollback failed; the connection may be unusable", sq->path);
}

/* Column readers that refuse damaged rows instead of trusting them. */
static bool col_u64(sqlite3_stmt *st, int col, uint64_t *out)
{
    if (sqlite3_column_type(st, col) != SQLITE_INTEGER)
        return false;
    sqlite3_int64 v = sqlite3_column_int64(st, col);
    if (v < 0)
        return false;
    *out = (uint64_t)v;
    return true;
}

static bool col_i64(sqlite3_stmt *st, int col, int64_t *out)
{
    if (sqlite3_column_type(st, col) != SQLITE_INTEGER)
        return false;
    *out = sqlite3_column_int64(st, col);
    return true;
}

/* Text column as pointer + length; NULL (damaged row or out of memory) fails. */
static bool col_text(sqlite3_stmt *st, int col, const char **s, size_t *len)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    if (!t)
        return false;
    *s = (const char *)t;
    *len = (size_t)sqlite3_column_bytes(st, col);
    return true;
}

/* The resource at the current row of a RES_GET or LIST statement. Strings
 * point into the statement: valid until it is stepped or reset. */
static bool row_resource(sqlite3_stmt *st, rete_store_resource *r, size_t len[4])
{
    return col_text(st, 0, &r->kind, &len[0]) && col_text(st, 1, &r->ns, &len[1]) &&
           col_text(st, 2, &r->name, &len[2]) && col_text(st, 3, &r->json, &len[3]) &&
           col_u64(st, 4, &r->resource_version) && col_u64(st, 5, &r->create_revision) &&
           col_i64(st, 6, &r->created_unix);
}

static rete_rc rev_read(store_sqlite *sq, uint64_t *out)
{
    sqlite3_stmt *st = sq_stmt(sq, ST_REV_GET);
    int rc = sqlite3_step(st);
    rete_rc res = RETE_OK;
    if (rc != SQLITE_ROW) {
        res = rc == SQLITE_DONE ? RETE_EIO : sq_fail(sq, "reading the revision");
        if (rc == SQLITE_DONE)
            rete_err("store %s: the revision counter is missing", sq->path);
    } else if (!col_u64(st, 0, out)) {
        rete_err("store %s: the revision counter is damaged", sq->path);
        res = RETE_EIO;
    }
    sq_done(st);
    return res;
}

/* One write inside apply's transaction; *rev is the transaction's running
 * revision, advanced when the write changes something. */
static rete_rc apply_one(store_sqlite *sq, rete_store_write *w, uint64_t *rev, int64_t now)
{
    w->new_version = 0;
    w->created = false;
    w->unchanged = false;
    if (!w->kind || !w->kind[0] || !w->ns || !w->name || !w->name[0])
        return RETE_EINVAL;

    /* The current state of the key. */
    sqlite3_stmt *st = sq_stmt(sq, ST_RES_GET);
    if (!bind_key(st, w->kind, w->ns, w->name))
        return sq_fail(sq, "binding a key");
    int rc = sqlite3_step(st);
    bool exists = rc == SQLITE_ROW;
    bool same = false;
    uint64_t cur = 0;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        sq_done(st);
        return sq_fail(sq, "reading a resource");
    }
    if (exists) {
        const char *json;
        size_t jlen;
        if (!col_text(st, 3, &json, &jlen) || !col_u64(st, 4, &cur)) {
            sq_done(st);
            rete_err("store %s: damaged row for %s/%s/%s", sq->path, w->kind, w->ns, w->name);
            return RETE_EIO;
        }
        same = w->json && strlen(w->json) == jlen && memcmp(w->json, json, jlen) == 0;
    }
    sq_done(st);

    /* Optimistic concurrency (store.h): 0 = unconditional, UINT64_MAX = must
     * not exist, anything else = must be the current resource_version. */
    uint64_t want = w->expected_version;
    if (!w->json) {
        if (!exists)
            return RETE_ENOTFOUND;
        if (want != 0 && want != cur)
            return RETE_ECONFLICT;
        st = sq_stmt(sq, ST_RES_DELETE);
        if (!bind_key(st, w->kind, w->ns, w->name))
            return sq_fail(sq, "binding a key");
    } else if (!exists) {
        if (want != 0 && want != UINT64_MAX)
            return RETE_ECONFLICT;
        st = sq_stmt(sq, ST_RES_INSERT);
        if (!bind_key(st, w->kind, w->ns, w->name) || !bind_text(st, 4, w->json) ||
            sqlite3_bind_int64(st, 5, (sqlite3_int64)(*rev + 1)) != SQLITE_OK ||
            sqlite3_bind_int64(st, 6, now) != SQLITE_OK)
            return sq_fail(sq, "binding a resource");
        w->created = true;
    } else {
        if (want == UINT64_MAX || (want != 0 && want != cur))
            return RETE_ECONFLICT;
        if (same) {
            w->unchanged = true;
            return RETE_OK;
        }
        st = sq_stmt(sq, ST_RES_UPDATE);
        if (!bind_key(st, w->kind, w->ns, w->name) || !bind_text(st, 4, w->json) ||
            sqlite3_bind_int64(st, 5, (sqlite3_int64)(*rev + 1)) != SQLITE_OK)
            return sq_fail(sq, "binding a resource");
    }
    rc = sqlite3_step(st);
    sq_done(st);
    if (rc != SQLITE_DONE)
        return sq_fail(sq, "writing a resource");
    *rev += 1;
    w->new_version = *rev;
    return RETE_OK;
}

static rete_rc sq_apply(rete_store *s, rete_store_write *writes, size_t n, size_t *failed_index)
{
    store_sqlite *sq = to_sq(s);
    if (sq->in_list)
        return RETE_ESTATE;
    if (n == 0)
        return RETE_OK;
    if (!writes)
        return RETE_EINVAL;
    RETE_GUARD(sq_exec(sq, ST_BEGIN, "begin"));

    uint64_t rev = 0;
    rete_rc rc = rev_read(sq, &rev);
    uint64_t start = rev;
    int64_t now = (int64_t)time(NULL);
    size_t i = 0;
    for (; rc == RETE_OK && i < n; i++) {
        rc = apply_one(sq, &writes[i], &rev, now);
        if (rc != RETE_OK && failed_index)
            *failed_index = i;
    }
    if (rc == RETE_OK && rev != start) {
        sqlite3_stmt *st = sq_stmt(sq, ST_REV_SET);
        if (sqlite3_bind_int64(st, 1, (sqlite3_int64)rev) != SQLITE_OK)
            rc = sq_fail(sq, "binding the revision");
        else if (sqlite3_step(st) != SQLITE_DONE)
            rc = sq_fail(sq, "writing the revision");
        sq_done(st);
    }
    if (rc == RETE_OK)
        rc = sq_exec(sq, ST_COMMIT, "commit");
    if (rc != RETE_OK) {
        sq_rollback(sq);
        /* All or nothing: no write reports a version that was rolled back. */
        for (size_t j = 0; j < n; j++) {
            writes[j].new_version = 0;
            writes[j].created = false;
            writes[j].unchanged = false;
        }
        return rc;
    }
    sq->revision = rev;
    return RETE_OK;
}

/* Copy the row's strings into the store's output buffer. */
static void out_copy(store_sqlite *sq, rete_store_resource *r, const size_t len[4])
{
    size_t need = len[0] + len[1] + len[2] + len[3] + 4;
    if (need > sq->out_cap) {
        sq->out = rete_realloc(sq->out, need);
        sq->out_cap = need;
    }
    const char **field[4] = {&r->kind, &r->ns, &r->name, &r->json};
    char *p = sq->out;
    for (int i = 0; i < 4; i++) {
        memcpy(p, *field[i], len[i]);
        p[len[i]] = '\0';
        *field[i] = p;
        p += len[i] + 1;
    }
}

static rete_rc sq_get(rete_store *s, const char *kind, const char *ns, const char *name,
                      rete_store_resource *out)
{
    store_sqlite *sq = to_sq(s);
    if (!kind || !ns || !name || !out)
        return RETE_EINVAL;
    sqlite3_stmt *st = sq_stmt(sq, ST_RES_GET);
    if (!bind_key(st, kind, ns, name))
        return sq_fail(sq, "binding a key");
    int rc = sqlite3_step(st);
    rete_rc res = RETE_OK;
    size_t len[4];
    rete_store_resource r;
    if (rc == SQLITE_DONE) {
        res = RETE_ENOTFOUND;
    } else if (rc != SQLITE_ROW) {
        res = sq_fail(sq, "reading a resource");
    } else if (!row_resource(st, &r, len)) {
        rete_err("store %s: damaged row for %s/%s/%s", sq->path, kind, ns, name);
        res = RETE_EIO;
    } else {
        out_copy(sq, &r, len);
        *out = r;
    }
    sq_done(st);
    return res;
}

static rete_rc sq_list(rete_store *s, const char *kind, const char *ns, rete_store_each_fn fn,
                       void *arg)
{
    store_sqlite *sq = to_sq(s);
    if (sq->in_list)
        return RETE_ESTATE;
    if (!fn)
        return RETE_EINVAL;
    enum store_stmt which =
        kind ? (ns ? ST_LIST_KIND_NS : ST_LIST_KIND) : (ns ? ST_LIST_NS : ST_LIST_ALL);
    sqlite3_stmt *st = sq_stmt(sq, which);
    if ((kind && !bind_text(st, 1, kind)) || (ns && !bind_text(st, 2, ns)))
        return sq_fail(sq, "binding a filter");

    rete_rc res = RETE_OK;
    sq->in_list = true;
    for (;;) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            res = sq_fail(sq, "listing resources");
            break;
        }
        rete_store_resource r;
        size_t len[4];
        if (!row_resource(st, &r, len)) {
            rete_err("store %s: damaged row while listing", sq->path);
            res = RETE_EIO;
            break;
        }
        if (!fn(&r, arg))
            break;
    }
    sq->in_list = false;
    sq_done(st);
    return res;
}

static uint64_t sq_revision(rete_store *s)
{
    store_sqlite *sq = to_sq(s);
    return sq->revision;
}

/* Bounded copy of a text column into a fixed field; false when it does not fit. */
static bool col_copy(sqlite3_stmt *st, int col, char *dst, size_t cap)
{
    const char *t;
    size_t len;
    if (!col_text(st, col, &t, &len) || len >= cap)
        return false;
    memcpy(dst, t, len);
    dst[len] = '\0';
    return true;
}

static bool token_fields_ok(const rete_store_token *t)
{
    return memchr(t->id, '\0', sizeof t->id) && t->id[0] && memchr(t->ns, '\0', sizeof t->ns) &&
           memchr(t->sa, '\0', sizeof t->sa) && t->uses_left >= -1;
}

static rete_rc sq_token_put(rete_store *s, const rete_store_token *t, const uint8_t secret_hash[32])
{
    store_sqlite *sq = to_sq(s);
    if (sq->in_list)
        return RETE_ESTATE;
    if (!t || !secret_hash || !token_fields_ok(t))
        return RETE_EINVAL;
    sqlite3_stmt *st = sq_stmt(sq, ST_TOK_INSERT);
    if (!bind_text(st, 1, t->id) ||
        sqlite3_bind_blob(st, 2, secret_hash, 32, SQLITE_STATIC) != SQLITE_OK ||
        !bind_text(st, 3, t->ns) || !bind_text(st, 4, t->sa) ||
        sqlite3_bind_int64(st, 5, t->expires_unix) != SQLITE_OK ||
        sqlite3_bind_int64(st, 6, t->uses_left) != SQLITE_OK) {
        sq_done(st);
        return sq_fail(sq, "binding a token");
    }
    int rc = sqlite3_step(st);
    int ext = sqlite3_extended_errcode(sq->db);
    sq_done(st);
    if (rc == SQLITE_DONE)
        return RETE_OK;
    if (ext == SQLITE_CONSTRAINT_PRIMARYKEY)
        return RETE_ECONFLICT; /* a token with this id exists */
    return sq_fail(sq, "storing a token");
}

/* Find, check, consume. No explicit transaction: the read is one
 * statement, and the use is taken by one conditional UPDATE that only
 * succeeds while a use is left (atomic on its own, whoever else writes),
 * so an unlimited token costs one read and a limited one a read and a
 * write, without BEGIN IMMEDIATE/COMMIT around them. */
static rete_rc sq_token_use(rete_store *s, const char *id, const uint8_t secret_hash[32],
                            int64_t now, rete_store_token *out)
{
    store_sqlite *sq = to_sq(s);
    if (sq->in_list)
        return RETE_ESTATE;
    if (!id || !secret_hash)
        return RETE_EINVAL;
    if (strlen(id) >= sizeof(((rete_store_token *)0)->id))
        return RETE_ENOTFOUND; /* no stored id is that long */
    sqlite3_stmt *st = sq_stmt(sq, ST_TOK_GET);
    if (!bind_text(st, 1, id))
        return sq_fail(sq, "binding a token id");
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sq_done(st);
        return RETE_ENOTFOUND;
    }
    if (rc != SQLITE_ROW) {
        sq_done(st);
        return sq_fail(sq, "reading a token");
    }
    rete_store_token t;
    memset(&t, 0, sizeof t);
    int64_t uses;
    const void *hash = sqlite3_column_blob(st, 0);
    bool ok = hash && sqlite3_column_bytes(st, 0) == 32 && col_copy(st, 1, t.ns, sizeof t.ns) &&
              col_copy(st, 2, t.sa, sizeof t.sa) && col_i64(st, 3, &t.expires_unix) &&
              col_i64(st, 4, &uses) && uses >= -1 && uses <= INT32_MAX;
    if (!ok) {
        sq_done(st);
        rete_err("store %s: damaged token row (id %s)", sq->path, id);
        return RETE_EIO;
    }
    bool match = CRYPTO_memcmp(hash, secret_hash, 32) == 0;
    sq_done(st);
    /* The secret first: without it a caller learns nothing about the token. */
    if (!match)
        return RETE_ENOTFOUND;
    if (now >= t.expires_unix || uses == 0)
        return RETE_ELIMIT;
    if (uses > 0) {
        st = sq_stmt(sq, ST_TOK_CONSUME);
        if (!bind_text(st, 1, id) || sqlite3_bind_int64(st, 2, now) != SQLITE_OK) {
            sq_done(st);
            return sq_fail(sq, "binding a token use");
        }
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && !col_i64(st, 0, &uses)) {
            sq_done(st);
            rete_err("store %s: damaged token row (id %s)", sq->path, id);
            return RETE_EIO;
        }
        if (rc == SQLITE_ROW)
            rc = sqlite3_step(st); /* to the statement's end: the write is done */
        sq_done(st);
        if (rc == SQLITE_DONE && sqlite3_changes(sq->db) == 0)
            return RETE_ELIMIT; /* the last use went elsewhere */
        if (rc != SQLITE_DONE)
            return sq_fail(sq, "consuming a token use");
    }
    snprintf(t.id, sizeof t.id, "%s", id);
    t.uses_left = (int32_t)uses;
    if (out)
        *out = t;
    return RETE_OK;
}

static rete_rc sq_token_prune(rete_store *s, int64_t expired_before, size_t *removed)
{
    store_sqlite *sq = to_sq(s);
    if (removed)
        *removed = 0;
    if (sq->in_list)
        return RETE_ESTATE;
    sqlite3_stmt *st = sq_stmt(sq, ST_TOK_PRUNE);
    if (sqlite3_bind_int64(st, 1, expired_before) != SQLITE_OK) {
        sq_done(st);
        return sq_fail(sq, "binding a token prune");
    }
    int rc = sqlite3_step(st);
    sq_done(st);
    if (rc != SQLITE_DONE)
        return sq_fail(sq, "pruning tokens");
    if (removed)
        *removed = (size_t)sqlite3_changes(sq->db);
    return RETE_OK;
}

static rete_rc sq_token_list(rete_store *s, rete_store_token_fn fn, void *arg)
{
    store_sqlite *sq = to_sq(s);
    if (sq->in_list)
        return RETE_ESTATE;
    sqlite3_stmt *st = sq_stmt(sq, ST_TOK_LIST);
    int rc;
    sq->in_list = true;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        rete_store_token t;
        memset(&t, 0, sizeof t);
        int64_t uses;
        const void *hash = sqlite3_column_blob(st, 1);
        bool ok = hash && sqlite3_column_bytes(st, 1) == 32 && col_copy(st, 0, t.id, sizeof t.id) &&
                  col_copy(st, 2, t.ns, sizeof t.ns) && col_copy(st, 3, t.sa, sizeof t.sa) &&
                  col_i64(st, 4, &t.expires_unix) && col_i64(st, 5, &uses) && uses >= -1 && uses <= INT32_MAX;
        if (!ok) {
            rete_err("store %s: damaged token row", sq->path);
            rc = SQLITE_CORRUPT;
            break;
        }
        t.uses_left = (int32_t)uses;
        uint8_t h[32];
        memcpy(h, hash, 32);
        if (!fn(&t, h, arg)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sq->in_list = false;
    sq_done(st);
    return rc == SQLITE_DONE ? RETE_OK : (rc == SQLITE_CORRUPT ? RETE_EIO : sq_fail(sq, "listing tokens"));
}

static void sq_close(rete_store *s)
{
    if (!s)
        return;
    store_sqlite *sq = to_sq(s);
    for (int i = 0; i < ST__COUNT; i++)
        (void)sqlite3_finalize(sq->st[i]); /* NULL is a no-op */
    if (sq->db && sqlite3_close(sq->db) != SQLITE_OK)
        rete_err("store %s: close: %s", sq->path, sqlite3_errmsg(sq->db));
    free(sq->out);
    free(sq->path);
    free(sq);
}

/* the store backend's vtable (store.h): a second backend repeats its shape by design. */
static const rete_store_ops sqlite_ops = {
    .name = "sqlite",
    .apply = sq_apply,
    .get = sq_get,
    .list = sq_list,
    .revision = sq_revision,
    .token_put = sq_token_put,
    .token_use = sq_token_use,
    .token_prune = sq_token_prune,
    .token_list = sq_token_list,
    .close = sq_close,
};

/* ---- open ---- */

/* The database's last error, for open-time messages. */
static void db_err(store_sqlite *sq, const char *what, rete_error *err)
{
    int sys = sqlite3_system_errno(sq->db);
    rete_error_set(err, RETE_EIO, "%s: %s: %s%s%s", sq->path, what, sqlite3_errmsg(sq->db), sys ? ": " : "",
            sys ? strerror(sys) : "");
}

/* Create the file 0600 when absent, so SQLite, which gives its -wal and -shm
 * files the main file's mode, never makes a wider one. */
static bool create_file(const char *path, rete_error *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rete_error_set(err, RETE_EIO, "%s: %s", path, strerror(errno));
        return false;
    }
    struct stat stb;
    bool ok = fstat(fd, &stb) == 0;
    if (!ok)
        rete_error_set(err, RETE_EIO, "%s: %s", path, strerror(errno));
    else if (!S_ISREG(stb.st_mode)) {
        rete_error_set(err, RETE_EIO, "%s: not a regular file", path);
        ok = false;
    }
    close(fd);
    return ok;
}

/* An existing store that others may read is tightened once we know it is
 * ours: it holds token hashes. */
static bool tighten_mode(const char *path, rete_error *err)
{
    struct stat stb;
    if (stat(path, &stb) != 0) {
        rete_error_set(err, RETE_EIO, "%s: %s", path, strerror(errno));
        return false;
    }
    if ((stb.st_mode & 077) == 0)
        return true;
    if (chmod(path, 0600) != 0) {
        rete_error_set(err, RETE_EIO, "%s: chmod 0600: %s", path, strerror(errno));
        return false;
    }
    rete_warn("store %s: mode was 0%03o, now 0600", path, (unsigned)(stb.st_mode & 0777));
    return true;
}

/* One integer from a PRAGMA query. */
static bool pragma_int(store_sqlite *sq, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sq->db, sql, -1, &st, NULL) != SQLITE_OK)
        return false;
    int rc = sqlite3_step(st);
    bool ok = rc == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_INTEGER;
    if (ok)
        *out = sqlite3_column_int64(st, 0);
    (void)sqlite3_finalize(st);
    return ok;
}

/* PRAGMA journal_mode answers with the mode in force. */
static bool set_wal(store_sqlite *sq)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sq->db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK)
        return false;
    bool ok = sqlite3_step(st) == SQLITE_ROW;
    const unsigned char *mode = ok ? sqlite3_column_text(st, 0) : NULL;
    ok = mode && strcmp((const char *)mode, "wal") == 0;
    (void)sqlite3_finalize(st);
    return ok;
}

/* A full integrity scan is O(database); quick_check skips index contents
 * but reads every page, which catches a damaged file before we serve from
 * it. Its first rows name the problem; they go into err. */
static bool check_integrity(store_sqlite *sq, rete_error *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sq->db, "PRAGMA quick_check(3)", -1, &st, NULL) != SQLITE_OK) {
        db_err(sq, "integrity check", err);
        return false;
    }
    char what[512] = "";
    size_t used = 0;
    bool ok = false;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *row = (const char *)sqlite3_column_text(st, 0);
        if (!row)
            continue;
        if (strcmp(row, "ok") == 0) {
            ok = true;
            break;
        }
        static const char hdr[] = "*** in database main ***\n";
        if (strncmp(row, hdr, sizeof hdr - 1) == 0)
            row += sizeof hdr - 1;
        int w = snprintf(what + used, sizeof what - used, "%s%s", used ? "; " : "", row);
        if (w > 0)
            used = (size_t)w >= sizeof what - used ? sizeof what - 1 : used + (size_t)w;
    }
    for (char *p = what; *p; p++)
        if (*p == '\n')
            *p = ' ';
    if (!ok && rc != SQLITE_ROW && rc != SQLITE_DONE)
        db_err(sq, "integrity check", err);
    else if (!ok)
        rete_error_set(err, RETE_EIO,
                "%s: database is damaged (%s); restore the data directory from a backup", sq->path,
                used ? what : "quick_check failed");
    (void)sqlite3_finalize(st);
    return ok;
}

/* Create the schema in an empty database, or accept ours at a version this
 * code knows. Another program's database is refused. */
static bool schema_ensure(store_sqlite *sq, rete_error *err)
{
    int64_t app = 0, ver = 0, tables = 0;
    if (!pragma_int(sq, "PRAGMA application_id", &app) ||
        !pragma_int(sq, "PRAGMA user_version", &ver) ||
        !pragma_int(sq, "SELECT count(*) FROM sqlite_schema", &tables)) {
        db_err(sq, "reading the schema", err);
        return false;
    }
    if (app == STORE_APPLICATION_ID && ver == STORE_SCHEMA_VERSION)
        return true;
    if (app == STORE_APPLICATION_ID && ver > STORE_SCHEMA_VERSION) {
        rete_error_set(err, RETE_EIO,
                "%s: store schema version %" PRId64 " is newer than this reted knows (%d)",
                sq->path, ver, STORE_SCHEMA_VERSION);
        return false;
    }
    if (app != STORE_APPLICATION_ID && (app != 0 || ver != 0 || tables != 0)) {
        rete_error_set(err, RETE_EIO,
                "%s: not a rete store (application_id %" PRId64 ", %" PRId64 " tables)", sq->path,
                app, tables);
        return false;
    }
    if (app == STORE_APPLICATION_ID && ver < STORE_SCHEMA_VERSION) {
        /* Migrations from older versions go here. Version 1 is the first. */
        rete_error_set(err, RETE_EIO, "%s: store schema version %" PRId64 " has no migration", sq->path,
                ver);
        return false;
    }

    char sql[sizeof store_schema_v1 + 128];
    snprintf(sql, sizeof sql,
             "BEGIN IMMEDIATE;%sPRAGMA application_id=%d;PRAGMA user_version=%d;COMMIT;",
             store_schema_v1, STORE_APPLICATION_ID, STORE_SCHEMA_VERSION);
    char *msg = NULL;
    if (sqlite3_exec(sq->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        rete_error_set(err, RETE_EIO, "%s: creating the schema: %s", sq->path, msg ? msg : "?");
        sqlite3_free(msg);
        if (!sqlite3_get_autocommit(sq->db))
            (void)sqlite3_exec(sq->db, "ROLLBACK", NULL, NULL, NULL);
        return false;
    }
    return true;
}

rete_store *rete_store_sqlite_open(const char *path, rete_error *err)
{
    if (!path || !path[0]) {
        rete_error_set(err, RETE_EINVAL, "store: no database path");
        return NULL;
    }
    if (!create_file(path, err))
        return NULL;

    store_sqlite *sq = rete_calloc(1, sizeof *sq);
    sq->base.ops = &sqlite_ops;
    sq->path = rete_strdup(path);
    int rc = sqlite3_open_v2(path, &sq->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        if (sq->db)
            db_err(sq, "open", err);
        else
            rete_error_set(err, RETE_EIO, "%s: open: %s", path, sqlite3_errstr(rc));
        goto fail;
    }
    (void)sqlite3_extended_result_codes(sq->db, 1);
    if (sqlite3_busy_timeout(sq->db, STORE_BUSY_TIMEOUT_MS) != SQLITE_OK) {
        db_err(sq, "busy timeout", err);
        goto fail;
    }
    /* The first statements read the header: a file that is not a database
     * (or is damaged) fails here with SQLite's message. */
    if (!schema_ensure(sq, err) || !check_integrity(sq, err) ||
        !tighten_mode(path, err))
        goto fail;
    if (!set_wal(sq)) {
        db_err(sq, "journal_mode=WAL", err);
        goto fail;
    }
    char *msg = NULL;
    if (sqlite3_exec(sq->db, "PRAGMA synchronous=NORMAL", NULL, NULL, &msg) != SQLITE_OK) {
        rete_error_set(err, RETE_EIO, "%s: synchronous=NORMAL: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        goto fail;
    }
    for (int i = 0; i < ST__COUNT; i++) {
        if (sqlite3_prepare_v3(sq->db, store_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &sq->st[i],
                               NULL) != SQLITE_OK) {
            db_err(sq, "preparing statements", err);
            goto fail;
        }
    }
    if (rev_read(sq, &sq->revision) != RETE_OK) {
        rete_error_set(err, RETE_EIO, "%s: the revision counter is missing or damaged", path);
        goto fail;
    }
    return &sq->base;

fail:
    sq_close(&sq->base);
    return NULL;
}

/* The online backup API, all pages in one step: `from` stays readable and
 * writable by a running reted (SQLite restarts the copy if it changes
 * mid-way, which one step makes a single pass). */
rete_rc rete_store_sqlite_backup(const char *from, const char *to, rete_error *err)
{
    if (access(from, R_OK) != 0)
        return rete_error_set(err, RETE_ENOTFOUND, "%s: %s", from, strerror(errno));
    int fd = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return rete_error_set(err, errno == EEXIST ? RETE_ECONFLICT : RETE_EIO, "%s: %s", to, strerror(errno));
    close(fd);
    sqlite3 *src = NULL, *dst = NULL;
    rete_rc rc = RETE_OK;
    if (sqlite3_open_v2(from, &src, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_open_v2(to, &dst, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        rc = rete_error_set(err, RETE_EIO, "open: %s", sqlite3_errmsg(src && !dst ? src : dst ? dst : src));
        goto out;
    }
    (void)sqlite3_busy_timeout(src, STORE_BUSY_TIMEOUT_MS);
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    if (!b) {
        rc = rete_error_set(err, RETE_EIO, "%s: backup: %s", to, sqlite3_errmsg(dst));
        goto out;
    }
    int step = sqlite3_backup_step(b, -1);
    int fin = sqlite3_backup_finish(b);
    if (step != SQLITE_DONE || fin != SQLITE_OK)
        rc = rete_error_set(err, RETE_EIO, "%s -> %s: backup: %s", from, to,
                            sqlite3_errstr(step != SQLITE_DONE ? step : fin));
out:
    sqlite3_close(src);
    sqlite3_close(dst);
    if (rc != RETE_OK)
        unlink(to);
    return rc;
}
