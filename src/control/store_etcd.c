/* The replicated store backend: etcd v3 through its JSON gateway (store.h,
 * docs/architecture.md "Replicas on etcd" for why not gRPC).
 *
 * Keys (under the prefix, "/rete/" by default):
 *   resources/<kind>/<ns>/<name>  {"createdUnix":N,"resource":<the JSON text>}
 *   tokens/<id>                   {"hash":hex,"namespace","serviceAccount","expiresUnix","usesLeft"}
 * resource_version = the key's mod_revision, create_revision = its
 * create_revision, the store revision = the newest header revision seen.
 * The resource's JSON is kept byte for byte inside the envelope (it is cut
 * out, not re-serialised), so "unchanged" compares the exact text.
 *
 * apply reads every key in one transaction, decides each write as SQLite
 * does, then writes in one transaction guarded by a compare per key
 * (mod_revision equal, or create_revision 0 for a key that was absent): a
 * concurrent writer makes the compare fail, and apply reads again (at most
 * APPLY_ROUNDS times), so expected versions are checked against what etcd
 * holds at the moment of the write. etcd refuses a transaction of more than
 * --max-txn-ops operations (128 by default): an apply of more writes is
 * refused with RETE_ELIMIT before anything is sent.
 *
 * The watch is a thread of its own (store_etcd_watch.c). */
#include "store_etcd-t.h"

#include "alloc.h"
#include "etcd_http.h"
#include "kinds.h"
#include "log.h"
#include "vec.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define ETCD_MAX_TXN_OPS 128             /* etcd's --max-txn-ops default */
#define ETCD_MAX_RESPONSE (256u << 20)   /* one answer's body (a whole-store range) */
#define APPLY_ROUNDS 8                   /* reads + compare-and-write before giving up */
#define TOKEN_ROUNDS 16                  /* token_use's compare-and-swap attempts */
#define LEASE_TTL_S 10                   /* the leader's lease (etcd seconds) */
#define LEASE_MARGIN_MS 1000             /* stop leading this long before the lease may expire */
#define LEASE_RETRY_MS 5000              /* after a failed renewal, before the next attempt */


/* ---- JSON and base64 ---- */

static json_t *b64(const char *p, size_t n)
{
    char *out = rete_malloc(4 * ((n + 2) / 3) + 1);
    int len = EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)p, (int)n);
    json_t *j = json_stringn(out, (size_t)len);
    free(out);
    return j;
}

json_t *etcd_b64s(const char *s)
{
    return b64(s, strlen(s));
}

/* Decode a base64 JSON string; malloc'ed, NUL-terminated; NULL when bad. */
char *etcd_unb64(json_t *j, size_t *len)
{
    const char *s = json_string_value(j);
    if (!s)
        return NULL;
    size_t n = json_string_length(j);
    if (n % 4)
        return NULL;
    char *out = rete_malloc(n / 4 * 3 + 1);
    int got = n ? EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n) : 0;
    if (got < 0) {
        free(out);
        return NULL;
    }
    size_t pad = n >= 2 ? (s[n - 1] == '=') + (s[n - 2] == '=') : 0;
    *len = (size_t)got - pad;
    out[*len] = '\0';
    return out;
}

/* etcd's int64 fields come as JSON strings ("12"); absent = 0. */
uint64_t etcd_jint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v))
        return json_integer_value(v) < 0 ? 0 : (uint64_t)json_integer_value(v);
    const char *s = json_string_value(v);
    return s ? strtoull(s, NULL, 10) : 0;
}

/* The end of a prefix range: the prefix with its last byte incremented. */
json_t *etcd_prefix_end(const char *prefix)
{
    size_t n = strlen(prefix);
    char *e = rete_strdup(prefix);
    e[n - 1]++;
    json_t *j = b64(e, n);
    free(e);
    return j;
}

/* POST a request (stolen) to the gateway; *resp the parsed answer. RETE_EIO
 * when etcd cannot be reached or answers an error (logged). */
static rete_rc call(store_etcd *se, const char *path, json_t *req, json_t **resp)
{
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    int status = 0;
    char *out = NULL;
    size_t out_len = 0;
    rete_error err = {0};
    se->lease_refused = false;
    rete_rc rc = reted_etcd_http_post(&se->http, path, body, strlen(body), &status, &out, &out_len, &err);
    free(body);
    if (rc != RETE_OK) {
        rete_err("store etcd: %s: %s", path, err.msg);
        return RETE_EIO;
    }
    json_t *j = json_loadb(out, out_len, 0, NULL);
    if (status != 200 || !j) {
        const char *msg = json_string_value(json_object_get(j, "error"));
        if (!msg)
            msg = json_string_value(json_object_get(j, "message"));
        rete_err("store etcd: %s answered %d: %s", path, status, msg ? msg : "(no JSON)");
        se->lease_refused = msg && strstr(msg, "lease not found");
        json_decref(j);
        free(out);
        return RETE_EIO;
    }
    free(out);
    uint64_t rev = etcd_jint(json_object_get(j, "header"), "revision");
    if (rev > se->revision)
        se->revision = rev;
    *resp = j;
    return RETE_OK;
}

/* Every key under a prefix; *resp as call(). */
static rete_rc range_under(store_etcd *se, const char *prefix, json_t **resp)
{
    return call(se, "/v3/kv/range",
                json_pack("{s:o,s:o}", "key", etcd_b64s(prefix), "range_end", etcd_prefix_end(prefix)), resp);
}

/* ---- guarded transactions ---- */

/* The guard of one key (key stolen, base64): unchanged since it was read,
 * its mod_revision still `mod`; or, when it was absent (!exists), absent
 * still (create_revision 0). */
static json_t *guard(json_t *key, bool exists, uint64_t mod)
{
    char rev[24];
    snprintf(rev, sizeof rev, "%" PRIu64, exists ? mod : 0);
    return json_pack("{s:o,s:s,s:s,s:s}", "key", key, "target", exists ? "MOD" : "CREATE", "result",
                     "EQUAL", exists ? "mod_revision" : "create_revision", rev);
}

/* A transaction's operations; key and value stolen, base64. */
static json_t *put_op(json_t *key, json_t *value)
{
    return json_pack("{s:{s:o,s:o}}", "request_put", "key", key, "value", value);
}

static json_t *delete_op(json_t *key)
{
    return json_pack("{s:{s:o}}", "request_delete_range", "key", key);
}

/* One transaction: the compares, the operations when they all hold and
 * those when one does not (each stolen; failure NULL for none). RETE_OK
 * when every compare held and the success operations were done,
 * RETE_ECONFLICT when one failed, RETE_EIO as call(). *rev (may be NULL)
 * the revision etcd answered at; *resp (may be NULL) the answer, the
 * caller's to decref, set unless RETE_EIO. */
static rete_rc txn(store_etcd *se, json_t *cmp, json_t *success, json_t *failure, uint64_t *rev,
                   json_t **resp)
{
    json_t *req = json_pack("{s:o,s:o}", "compare", cmp, "success", success), *r;
    if (failure)
        json_object_set_new(req, "failure", failure);
    RETE_GUARD(call(se, "/v3/kv/txn", req, &r));
    bool held = json_is_true(json_object_get(r, "succeeded"));
    if (rev)
        *rev = etcd_jint(json_object_get(r, "header"), "revision");
    if (resp)
        *resp = r;
    else
        json_decref(r);
    return held ? RETE_OK : RETE_ECONFLICT;
}

/* ---- keys and values ---- */

static bool key_part_ok(const char *s, bool may_be_empty)
{
    return s && (may_be_empty || s[0]) && !strchr(s, '/');
}

static char *res_key(const store_etcd *se, const char *kind, const char *ns, const char *name)
{
    size_t n = strlen(se->prefix) + strlen(kind) + strlen(ns) + strlen(name) + 16;
    char *k = rete_malloc(n);
    snprintf(k, n, "%sresources/%s/%s/%s", se->prefix, kind, ns, name);
    return k;
}

/* A decoded resource from a range answer's kv. */
typedef struct res_kv {
    char *key;      /* decoded; kind, ns, name point into split (NUL-separated copy) */
    char *split;
    const char *kind, *ns, *name;
    char *value;
    const char *json;
    int64_t created;
    uint64_t mod, create;
} res_kv;

static void res_kv_free(res_kv *r)
{
    free(r->key);
    free(r->split);
    free(r->value);
    memset(r, 0, sizeof *r);
}

/* Cut "kind/ns/name" after the resources prefix. */
bool etcd_split_key(const store_etcd *se, const char *key, char **split, const char **kind, const char **ns,
                      const char **name)
{
    size_t pl = strlen(se->prefix);
    if (strncmp(key, se->prefix, pl) != 0 || strncmp(key + pl, "resources/", 10) != 0)
        return false;
    char *s = rete_strdup(key + pl + 10);
    char *a = strchr(s, '/'), *b = a ? strchr(a + 1, '/') : NULL;
    if (!a || !b || a == s || !b[1] || strchr(b + 1, '/')) {
        free(s);
        return false;
    }
    *a = *b = '\0';
    *split = s;
    *kind = s;
    *ns = a + 1;
    *name = b + 1;
    return true;
}

/* The envelope: {"createdUnix":N,"resource":<json>} with the JSON verbatim. */
static char *envelope(int64_t created, const char *json)
{
    size_t n = strlen(json) + 64;
    char *v = rete_malloc(n);
    snprintf(v, n, "{\"createdUnix\":%" PRId64 ",\"resource\":%s}", created, json);
    return v;
}

static bool unenvelope(char *v, size_t len, int64_t *created, const char **json)
{
    static const char a[] = "{\"createdUnix\":", b[] = ",\"resource\":";
    if (len < sizeof a + sizeof b || strncmp(v, a, sizeof a - 1) != 0 || v[len - 1] != '}')
        return false;
    char *end;
    long long c = strtoll(v + sizeof a - 1, &end, 10);
    if (strncmp(end, b, sizeof b - 1) != 0)
        return false;
    *created = c;
    v[len - 1] = '\0';
    *json = end + sizeof b - 1;
    return true;
}

static bool parse_kv(const store_etcd *se, json_t *kv, res_kv *out)
{
    memset(out, 0, sizeof *out);
    size_t kl, vl;
    out->key = etcd_unb64(json_object_get(kv, "key"), &kl);
    out->value = etcd_unb64(json_object_get(kv, "value"), &vl);
    out->mod = etcd_jint(kv, "mod_revision");
    out->create = etcd_jint(kv, "create_revision");
    if (!out->key || !out->value ||
        !etcd_split_key(se, out->key, &out->split, &out->kind, &out->ns, &out->name) ||
        !unenvelope(out->value, vl, &out->created, &out->json)) {
        rete_err("store etcd: damaged resource %s", out->key ? out->key : "(bad key)");
        res_kv_free(out);
        return false;
    }
    return true;
}

/* ---- apply ---- */

/* What one write found in etcd. */
typedef struct found {
    bool exists;
    uint64_t mod;
    int64_t created;
    bool same;
} found;

/* Read every write's key in one transaction. */
static rete_rc read_keys(store_etcd *se, rete_store_write *w, size_t n, char **keys, found *f)
{
    json_t *ops = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(ops, json_pack("{s:{s:o}}", "request_range", "key", etcd_b64s(keys[i])));
    json_t *resp;
    RETE_GUARD(call(se, "/v3/kv/txn", json_pack("{s:o}", "success", ops), &resp));
    json_t *rs = json_object_get(resp, "responses");
    rete_rc rc = RETE_OK;
    for (size_t i = 0; i < n && rc == RETE_OK; i++) {
        json_t *kvs = json_object_get(json_object_get(json_array_get(rs, i), "response_range"), "kvs");
        f[i] = (found){0};
        if (json_array_size(kvs) == 0)
            continue;
        res_kv kv;
        if (!parse_kv(se, json_array_get(kvs, 0), &kv)) {
            rc = RETE_EIO;
            break;
        }
        f[i].exists = true;
        f[i].mod = kv.mod;
        f[i].created = kv.created;
        f[i].same = w[i].json && strcmp(w[i].json, kv.json) == 0;
        res_kv_free(&kv);
    }
    json_decref(resp);
    return rc;
}

/* Decide a write as store.h says; RETE_OK with *op false when unchanged. */
static rete_rc decide(rete_store_write *w, const found *f, bool *op)
{
    uint64_t want = w->expected_version;
    *op = true;
    if (!w->json) {
        if (!f->exists)
            return RETE_ENOTFOUND;
        return want != 0 && want != f->mod ? RETE_ECONFLICT : RETE_OK;
    }
    if (!f->exists)
        return want != 0 && want != UINT64_MAX ? RETE_ECONFLICT : RETE_OK;
    if (want == UINT64_MAX || (want != 0 && want != f->mod))
        return RETE_ECONFLICT;
    *op = !f->same;
    return RETE_OK;
}

static rete_rc apply_round(store_etcd *se, rete_store_write *w, size_t n, char **keys, found *f, size_t *failed,
                           bool *lost)
{
    *lost = false;
    RETE_GUARD(read_keys(se, w, n, keys, f));
    json_t *cmp = json_array(), *ops = json_array();
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < n; i++) {
        bool op;
        rete_rc rc = decide(&w[i], &f[i], &op);
        if (rc != RETE_OK) {
            if (failed)
                *failed = i;
            json_decref(cmp);
            json_decref(ops);
            return rc;
        }
        json_array_append_new(cmp, guard(etcd_b64s(keys[i]), f[i].exists, f[i].mod));
        if (!op)
            continue;
        if (!w[i].json) {
            json_array_append_new(ops, delete_op(etcd_b64s(keys[i])));
        } else {
            char *v = envelope(f[i].exists ? f[i].created : now, w[i].json);
            json_array_append_new(ops, put_op(etcd_b64s(keys[i]), etcd_b64s(v)));
            free(v);
        }
    }
    if (json_array_size(ops) == 0) { /* every write unchanged */
        json_decref(cmp);
        json_decref(ops);
        for (size_t i = 0; i < n; i++)
            w[i].unchanged = true;
        return RETE_OK;
    }
    uint64_t rev;
    rete_rc rc = txn(se, cmp, ops, NULL, &rev, NULL);
    if (rc == RETE_ECONFLICT) {
        *lost = true;
        return RETE_OK;
    }
    RETE_GUARD(rc);
    for (size_t i = 0; i < n; i++) {
        bool op;
        (void)decide(&w[i], &f[i], &op);
        w[i].unchanged = !op;
        w[i].created = op && w[i].json && !f[i].exists;
        w[i].new_version = op ? rev : 0;
    }
    return RETE_OK;
}

static rete_rc se_apply(rete_store *s, rete_store_write *w, size_t n, size_t *failed)
{
    store_etcd *se = to_se(s);
    if (se->in_list)
        return RETE_ESTATE;
    if (n == 0)
        return RETE_OK;
    if (!w)
        return RETE_EINVAL;
    if (n > ETCD_MAX_TXN_OPS) {
        rete_warn("store etcd: an apply of %zu writes is over etcd's %d operations per transaction", n,
                  ETCD_MAX_TXN_OPS);
        return RETE_ELIMIT;
    }
    char **keys = rete_calloc(n, sizeof *keys);
    found *f = rete_calloc(n, sizeof *f);
    rete_rc rc = RETE_OK;
    for (size_t i = 0; i < n && rc == RETE_OK; i++) {
        w[i].new_version = 0;
        w[i].created = w[i].unchanged = false;
        if (!w[i].kind || !key_part_ok(w[i].kind, false) || !key_part_ok(w[i].ns, true) ||
            !key_part_ok(w[i].name, false)) {
            rc = RETE_EINVAL;
            if (failed)
                *failed = i;
            break;
        }
        keys[i] = res_key(se, w[i].kind, w[i].ns, w[i].name);
        /* etcd refuses a transaction that writes one key twice */
        for (size_t j = 0; j < i && rc == RETE_OK; j++)
            if (strcmp(keys[i], keys[j]) == 0) {
                rc = RETE_EINVAL;
                if (failed)
                    *failed = i;
            }
    }
    bool lost = true;
    for (int round = 0; rc == RETE_OK && lost && round < APPLY_ROUNDS; round++)
        rc = apply_round(se, w, n, keys, f, failed, &lost);
    if (rc == RETE_OK && lost) {
        rete_warn("store etcd: an apply lost %d races in a row to other writers", APPLY_ROUNDS);
        rc = RETE_ECONFLICT;
        if (failed)
            *failed = 0;
    }
    if (rc != RETE_OK)
        for (size_t i = 0; i < n; i++) {
            w[i].new_version = 0;
            w[i].created = w[i].unchanged = false;
        }
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
    free(f);
    return rc;
}

/* ---- get, list ---- */

static void out_copy(store_etcd *se, const res_kv *kv, rete_store_resource *r)
{
    const char *field[4] = {kv->kind, kv->ns, kv->name, kv->json};
    size_t len[4], need = 0;
    for (int i = 0; i < 4; i++)
        need += (len[i] = strlen(field[i])) + 1;
    if (need > se->out_cap) {
        se->out = rete_realloc(se->out, need);
        se->out_cap = need;
    }
    const char **dst[4] = {&r->kind, &r->ns, &r->name, &r->json};
    char *p = se->out;
    for (int i = 0; i < 4; i++) {
        memcpy(p, field[i], len[i] + 1);
        *dst[i] = p;
        p += len[i] + 1;
    }
    r->resource_version = kv->mod;
    r->create_revision = kv->create;
    r->created_unix = kv->created;
}

static rete_rc se_get(rete_store *s, const char *kind, const char *ns, const char *name, rete_store_resource *out)
{
    store_etcd *se = to_se(s);
    if (!key_part_ok(kind, false) || !key_part_ok(ns, true) || !key_part_ok(name, false) || !out)
        return kind && ns && name && out ? RETE_ENOTFOUND : RETE_EINVAL;
    char *key = res_key(se, kind, ns, name);
    json_t *resp;
    rete_rc rc = call(se, "/v3/kv/range", json_pack("{s:o}", "key", etcd_b64s(key)), &resp);
    free(key);
    RETE_GUARD(rc);
    json_t *kvs = json_object_get(resp, "kvs");
    res_kv kv;
    if (json_array_size(kvs) == 0)
        rc = RETE_ENOTFOUND;
    else if (!parse_kv(se, json_array_get(kvs, 0), &kv))
        rc = RETE_EIO;
    else {
        out_copy(se, &kv, out);
        res_kv_free(&kv);
    }
    json_decref(resp);
    return rc;
}

static int kv_cmp(const void *a, const void *b)
{
    const res_kv *x = a, *y = b;
    return rete_resource_key_cmp(x->kind, x->ns, x->name, y->kind, y->ns, y->name);
}

static rete_rc se_list(rete_store *s, const char *kind, const char *ns, rete_store_each_fn fn, void *arg)
{
    store_etcd *se = to_se(s);
    if (se->in_list)
        return RETE_ESTATE;
    if (!fn)
        return RETE_EINVAL;
    if (kind && !key_part_ok(kind, false))
        return RETE_OK; /* no such key can exist */
    size_t n = strlen(se->prefix) + (kind ? strlen(kind) : 0) + 16;
    char *pre = rete_malloc(n);
    snprintf(pre, n, "%sresources/%s%s", se->prefix, kind ? kind : "", kind ? "/" : "");
    json_t *resp;
    rete_rc rc = range_under(se, pre, &resp);
    free(pre);
    RETE_GUARD(rc);
    json_t *kvs = json_object_get(resp, "kvs");
    res_kv *v = rete_calloc(json_array_size(kvs) + 1, sizeof *v);
    size_t m = 0;
    for (size_t i = 0; i < json_array_size(kvs) && rc == RETE_OK; i++) {
        if (!parse_kv(se, json_array_get(kvs, i), &v[m]))
            rc = RETE_EIO;
        else if (ns && strcmp(v[m].ns, ns) != 0)
            res_kv_free(&v[m]);
        else
            m++;
    }
    json_decref(resp);
    /* etcd orders by the whole key; "a-b/x" sorts before "a/y" there, not in
     * the (kind, namespace, name) order every lister expects */
    qsort(v, m, sizeof *v, kv_cmp);
    se->in_list = true;
    for (size_t i = 0; i < m && rc == RETE_OK; i++) {
        rete_store_resource r = {v[i].kind, v[i].ns, v[i].name, v[i].json, v[i].mod, v[i].create, v[i].created};
        if (!fn(&r, arg))
            break;
    }
    se->in_list = false;
    for (size_t i = 0; i < m; i++)
        res_kv_free(&v[i]);
    free(v);
    return rc;
}

static uint64_t se_revision(rete_store *s)
{
    return to_se(s)->revision;
}

/* ---- tokens ---- */

static char *tok_key(const store_etcd *se, const char *id)
{
    size_t n = strlen(se->prefix) + strlen(id) + 8;
    char *k = rete_malloc(n);
    snprintf(k, n, "%stokens/%s", se->prefix, id);
    return k;
}

static char *tok_value(const rete_store_token *t, const uint8_t hash[32])
{
    char hex[65];
    rete_store_hash_hex(hash, hex);
    json_t *j = json_pack("{s:s,s:s,s:s,s:I,s:i}", "hash", hex, "namespace", t->ns, "serviceAccount", t->sa,
                          "expiresUnix", (json_int_t)t->expires_unix, "usesLeft", t->uses_left);
    char *v = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return v;
}

static rete_rc se_token_put(rete_store *s, const rete_store_token *t, const uint8_t hash[32])
{
    store_etcd *se = to_se(s);
    if (se->in_list)
        return RETE_ESTATE;
    if (!t || !hash || !memchr(t->id, '\0', sizeof t->id) || !t->id[0] || strchr(t->id, '/') ||
        !memchr(t->ns, '\0', sizeof t->ns) || !memchr(t->sa, '\0', sizeof t->sa) || t->uses_left < -1)
        return RETE_EINVAL;
    char *key = tok_key(se, t->id), *v = tok_value(t, hash);
    json_t *cmp = json_pack("[o]", guard(etcd_b64s(key), false, 0));
    json_t *ops = json_pack("[o]", put_op(etcd_b64s(key), etcd_b64s(v)));
    free(key);
    free(v);
    return txn(se, cmp, ops, NULL, NULL, NULL);
}

/* A token's stored fields; false when damaged. */
static bool tok_parse(json_t *kv, rete_store_token *t, uint8_t hash[32], uint64_t *mod)
{
    size_t vl;
    char *v = etcd_unb64(json_object_get(kv, "value"), &vl);
    json_t *j = v ? json_loadb(v, vl, 0, NULL) : NULL;
    free(v);
    const char *h = NULL, *ns = NULL, *sa = NULL;
    json_int_t exp = 0, uses = 0;
    bool ok = j && json_unpack(j, "{s:s,s:s,s:s,s:I,s:I}", "hash", &h, "namespace", &ns, "serviceAccount", &sa,
                               "expiresUnix", &exp, "usesLeft", &uses) == 0 &&
              rete_store_hash_from_hex(h, hash) && strlen(ns) < sizeof t->ns && strlen(sa) < sizeof t->sa && uses >= -1 &&
              uses <= INT32_MAX;
    if (ok) {
        snprintf(t->ns, sizeof t->ns, "%s", ns);
        snprintf(t->sa, sizeof t->sa, "%s", sa);
        t->expires_unix = exp;
        t->uses_left = (int32_t)uses;
        *mod = etcd_jint(kv, "mod_revision");
    }
    json_decref(j);
    return ok;
}

/* Consumed exactly once under races: the use is a compare-and-swap on the
 * token's mod_revision; a lost race reads again. */
static rete_rc se_token_use(rete_store *s, const char *id, const uint8_t secret_hash[32], int64_t now,
                            rete_store_token *out)
{
    store_etcd *se = to_se(s);
    if (se->in_list)
        return RETE_ESTATE;
    if (!id || !secret_hash)
        return RETE_EINVAL;
    if (!id[0] || strlen(id) >= sizeof(((rete_store_token *)0)->id) || strchr(id, '/'))
        return RETE_ENOTFOUND;
    char *key = tok_key(se, id);
    rete_rc rc = RETE_EIO;
    for (int round = 0; round < TOKEN_ROUNDS; round++) {
        json_t *resp;
        rc = call(se, "/v3/kv/range", json_pack("{s:o}", "key", etcd_b64s(key)), &resp);
        if (rc != RETE_OK)
            break;
        json_t *kvs = json_object_get(resp, "kvs");
        rete_store_token t = {0};
        uint8_t hash[32];
        uint64_t mod = 0;
        if (json_array_size(kvs) == 0) {
            rc = RETE_ENOTFOUND;
        } else if (!tok_parse(json_array_get(kvs, 0), &t, hash, &mod)) {
            rete_err("store etcd: damaged token (id %s)", id);
            rc = RETE_EIO;
        } else if (CRYPTO_memcmp(hash, secret_hash, 32) != 0) {
            rc = RETE_ENOTFOUND; /* the secret first */
        } else if (now >= t.expires_unix || t.uses_left == 0) {
            rc = RETE_ELIMIT;
        } else {
            rc = RETE_OK;
        }
        json_decref(resp);
        if (rc != RETE_OK)
            break;
        snprintf(t.id, sizeof t.id, "%s", id);
        if (t.uses_left > 0) {
            t.uses_left--;
            char *v = tok_value(&t, hash);
            rc = txn(se, json_pack("[o]", guard(etcd_b64s(key), true, mod)),
                     json_pack("[o]", put_op(etcd_b64s(key), etcd_b64s(v))), NULL, NULL, NULL);
            free(v);
            if (rc == RETE_ECONFLICT) {
                rc = RETE_ELIMIT; /* if every round loses, the uses went elsewhere */
                continue;
            }
            if (rc != RETE_OK)
                break;
        }
        if (out)
            *out = t;
        rc = RETE_OK;
        break;
    }
    free(key);
    return rc;
}

static rete_rc se_token_prune(rete_store *s, int64_t expired_before, size_t *removed)
{
    store_etcd *se = to_se(s);
    if (removed)
        *removed = 0;
    if (se->in_list)
        return RETE_ESTATE;
    char *pre = tok_key(se, ""); /* <prefix>tokens/ */
    json_t *resp;
    rete_rc rc = range_under(se, pre, &resp);
    free(pre);
    RETE_GUARD(rc);
    json_t *kvs = json_object_get(resp, "kvs"), *kv;
    size_t i;
    json_array_foreach(kvs, i, kv) {
        rete_store_token t = {0};
        uint8_t hash[32];
        uint64_t mod = 0;
        if (!tok_parse(kv, &t, hash, &mod) || t.expires_unix > expired_before)
            continue;
        /* one token per transaction, guarded: another replica pruning or a
         * use in between makes this one a no-op, never a wrong delete */
        json_t *key = json_object_get(kv, "key");
        rc = txn(se, json_pack("[o]", guard(json_incref(key), true, mod)),
                 json_pack("[o]", delete_op(json_incref(key))), NULL, NULL, NULL);
        if (rc == RETE_ECONFLICT) {
            rc = RETE_OK;
            continue;
        }
        if (rc != RETE_OK)
            break;
        if (removed)
            (*removed)++;
    }
    json_decref(resp);
    return rc;
}

static rete_rc se_token_list(rete_store *s, rete_store_token_fn fn, void *arg)
{
    store_etcd *se = to_se(s);
    if (se->in_list)
        return RETE_ESTATE;
    char *pre = tok_key(se, ""); /* <prefix>tokens/ */
    json_t *resp;
    rete_rc rc = range_under(se, pre, &resp);
    if (rc != RETE_OK) {
        free(pre);
        return rc;
    }
    json_t *kvs = json_object_get(resp, "kvs"), *kv;
    size_t i, pl = strlen(pre);
    se->in_list = true;
    json_array_foreach(kvs, i, kv) {
        rete_store_token t = {0};
        uint8_t hash[32];
        uint64_t mod = 0;
        size_t kl;
        char *key = etcd_unb64(json_object_get(kv, "key"), &kl);
        bool ok = key && kl > pl && kl - pl < sizeof t.id && tok_parse(kv, &t, hash, &mod);
        if (ok)
            snprintf(t.id, sizeof t.id, "%s", key + pl);
        free(key);
        if (!ok) {
            rete_err("store etcd: a damaged token under %s", pre);
            rc = RETE_EIO;
            break;
        }
        if (!fn(&t, hash, arg))
            break;
    }
    se->in_list = false;
    free(pre);
    json_decref(resp);
    return rc;
}

/* ---- named values beside the resources (the shared CA record) ---- */

static char *meta_key(const store_etcd *se, const char *name)
{
    size_t n = strlen(se->prefix) + strlen(name) + 8;
    char *k = rete_malloc(n);
    snprintf(k, n, "%smeta/%s", se->prefix, name);
    return k;
}

static rete_rc se_meta_get(rete_store *s, const char *name, char **value, size_t *len, uint64_t *rev)
{
    store_etcd *se = to_se(s);
    if (se->in_list)
        return RETE_ESTATE;
    char *key = meta_key(se, name);
    json_t *resp;
    rete_rc rc = call(se, "/v3/kv/range", json_pack("{s:o}", "key", etcd_b64s(key)), &resp);
    free(key);
    RETE_GUARD(rc);
    json_t *kv = json_array_get(json_object_get(resp, "kvs"), 0);
    if (!kv) {
        json_decref(resp);
        return RETE_ENOTFOUND;
    }
    size_t vl = 0;
    char *v = json_object_get(kv, "value") ? etcd_unb64(json_object_get(kv, "value"), &vl) : rete_strdup("");
    if (!v) {
        json_decref(resp);
        rete_err("store etcd: %smeta/%s: not base64", se->prefix, name);
        return RETE_EIO;
    }
    *value = v;
    *len = vl;
    *rev = etcd_jint(kv, "mod_revision");
    json_decref(resp);
    return RETE_OK;
}

static rete_rc se_meta_put(rete_store *s, const char *name, const char *value, size_t len, uint64_t expected_rev,
                           uint64_t *new_rev)
{
    store_etcd *se = to_se(s);
    if (se->in_list)
        return RETE_ESTATE;
    char *key = meta_key(se, name);
    json_t *cmp = json_pack("[o]", guard(etcd_b64s(key), expected_rev != 0, expected_rev));
    json_t *ops = json_pack("[o]", put_op(etcd_b64s(key), b64(value, len)));
    free(key);
    uint64_t rev;
    rete_rc rc = txn(se, cmp, ops, NULL, &rev, NULL);
    if (new_rev && rc != RETE_EIO)
        *new_rev = rc == RETE_OK ? rev : 0;
    return rc;
}

/* ---- leadership ---- */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Keep the lease alive, or get a new one. On success lead_until_ms says
 * until when it lasts at least (measured from before the request). */
static bool lease_renew(store_etcd *se)
{
    uint64_t t0 = mono_ms();
    json_t *resp;
    if (se->lease[0]) {
        if (call(se, "/v3/lease/keepalive", json_pack("{s:s}", "ID", se->lease), &resp) != RETE_OK)
            return false;
        uint64_t ttl = etcd_jint(json_object_get(resp, "result"), "TTL");
        json_decref(resp);
        if (ttl) {
            se->lead_until_ms = t0 + ttl * 1000;
            return true;
        }
        rete_warn("store etcd: lease %s expired; taking a new one", se->lease);
        se->lease[0] = '\0'; /* expired: etcd deleted what it held */
        se->leading = false;
    }
    if (call(se, "/v3/lease/grant", json_pack("{s:i}", "TTL", LEASE_TTL_S), &resp) != RETE_OK)
        return false;
    const char *id = json_string_value(json_object_get(resp, "ID"));
    uint64_t ttl = etcd_jint(resp, "TTL");
    if (id && ttl && strlen(id) < sizeof(se->lease)) {
        snprintf(se->lease, sizeof(se->lease), "%s", id);
        se->lead_until_ms = t0 + ttl * 1000;
        se->lease_epoch++;
    }
    json_decref(resp);
    return se->lease[0] != '\0';
}

static bool se_lead(rete_store *s, const char *id, char *leader, size_t cap)
{
    store_etcd *se = to_se(s);
    if (cap)
        leader[0] = '\0';
    /* etcd unreachable: a renewal blocks the loop up to --etcd-timeout, so
     * after a failure wait LEASE_RETRY_MS before the next; a leader leads
     * on meanwhile only while its lease surely lasts */
    bool renewed = mono_ms() >= se->lead_retry_ms && lease_renew(se);
    if (!renewed && mono_ms() >= se->lead_retry_ms)
        se->lead_retry_ms = mono_ms() + LEASE_RETRY_MS;
    if (!renewed) {
        se->leading = se->leading && mono_ms() + LEASE_MARGIN_MS < se->lead_until_ms;
        if (se->leading && cap)
            snprintf(leader, cap, "%s", id);
        return se->leading;
    }
    size_t n = strlen(se->prefix) + 8;
    char *key = rete_malloc(n);
    snprintf(key, n, "%sleader", se->prefix);
    /* Take the key when nobody holds it (create_revision 0), with our
     * lease: it goes when the lease does. Either way read who holds it. */
    json_t *put = put_op(etcd_b64s(key), etcd_b64s(id));
    json_object_set_new(json_object_get(put, "request_put"), "lease", json_string(se->lease));
    json_t *resp;
    rete_rc rc = txn(se, json_pack("[o]", guard(etcd_b64s(key), false, 0)), json_pack("[o]", put),
                     json_pack("[{s:{s:o}}]", "request_range", "key", etcd_b64s(key)), NULL, &resp);
    free(key);
    if (rc == RETE_EIO) {
        se->leading = se->leading && mono_ms() + LEASE_MARGIN_MS < se->lead_until_ms;
        return se->leading;
    }
    bool won = rc == RETE_OK;
    char *holder = NULL;
    if (won) {
        holder = rete_strdup(id);
    } else {
        json_t *kv = json_array_get(
            json_object_get(json_object_get(json_array_get(json_object_get(resp, "responses"), 0), "response_range"),
                            "kvs"),
            0);
        size_t len = 0;
        holder = kv ? etcd_unb64(json_object_get(kv, "value"), &len) : NULL;
        /* ours only if it is held with this lease (a previous run of the
         * same id holds it with a lease of its own until that expires) */
        const char *lease = json_string_value(json_object_get(kv, "lease"));
        won = holder && strcmp(holder, id) == 0 && lease && strcmp(lease, se->lease) == 0;
    }
    json_decref(resp);
    if (holder && cap)
        snprintf(leader, cap, "%s", holder);
    free(holder);
    se->leading = won && mono_ms() + LEASE_MARGIN_MS < se->lead_until_ms;
    return se->leading;
}

static void se_resign(rete_store *s)
{
    store_etcd *se = to_se(s);
    if (!se->lease[0])
        return;
    json_t *resp;
    if (call(se, "/v3/lease/revoke", json_pack("{s:s}", "ID", se->lease), &resp) == RETE_OK)
        json_decref(resp);
    se->lease[0] = '\0';
    se->leading = false;
}

static rete_rc se_health(rete_store *s)
{
    store_etcd *se = to_se(s);
    json_t *resp;
    size_t n = strlen(se->prefix) + 8;
    char *key = rete_malloc(n);
    snprintf(key, n, "%sleader", se->prefix);
    rete_rc rc = call(se, "/v3/kv/range", json_pack("{s:o,s:b}", "key", etcd_b64s(key), "count_only", 1), &resp);
    free(key);
    if (rc == RETE_OK)
        json_decref(resp);
    return rc;
}

/* ---- registrations ----
 *
 * <prefix>registrations/<ns>/<name> = {"replica":ID,"ready":BOOL}, put with
 * the holding replica's lease: etcd deletes it when that replica's lease
 * expires (the replica died or lost etcd for the lease's TTL). */

static char *reg_key(const store_etcd *se, const char *ns, const char *name)
{
    size_t n = strlen(se->prefix) + strlen(ns) + strlen(name) + 24;
    char *k = rete_malloc(n);
    snprintf(k, n, "%sregistrations/%s/%s", se->prefix, ns, name);
    return k;
}

/* "ns/name" after the registrations prefix, cut in place; false when not one. */
bool etcd_reg_split(const store_etcd *se, char *key, const char **ns, const char **name)
{
    size_t pl = strlen(se->prefix);
    if (strncmp(key, se->prefix, pl) != 0 || strncmp(key + pl, "registrations/", 14) != 0)
        return false;
    char *s = key + pl + 14, *a = strchr(s, '/');
    if (!a || a == s || !a[1] || strchr(a + 1, '/'))
        return false;
    *a = '\0';
    *ns = s;
    *name = a + 1;
    return true;
}

/* The value's holder (malloc'ed) and readiness; false when damaged. */
bool etcd_reg_value(json_t *kv, char **holder, bool *ready)
{
    size_t vl;
    char *v = etcd_unb64(json_object_get(kv, "value"), &vl);
    json_t *j = v ? json_loadb(v, vl, 0, NULL) : NULL;
    free(v);
    const char *h = json_string_value(json_object_get(j, "replica"));
    *holder = h ? rete_strdup(h) : NULL;
    *ready = !json_is_false(json_object_get(j, "ready"));
    json_decref(j);
    return *holder != NULL;
}

/* One transaction of at most ETCD_MAX_TXN_OPS registrations under the lease. */
static rete_rc reg_put_txn(store_etcd *se, const rete_store_registration *regs, size_t n)
{
    json_t *ops = json_array();
    for (size_t i = 0; i < n; i++) {
        char *key = reg_key(se, regs[i].ns, regs[i].name);
        json_t *v = json_pack("{s:s,s:b}", "replica", regs[i].holder, "ready", regs[i].ready);
        char *vs = json_dumps(v, JSON_COMPACT);
        json_decref(v);
        json_array_append_new(ops, json_pack("{s:{s:o,s:o,s:s}}", "request_put", "key", etcd_b64s(key), "value",
                                             etcd_b64s(vs), "lease", se->lease));
        free(key);
        free(vs);
    }
    return txn(se, json_array(), ops, NULL, NULL, NULL);
}

static rete_rc se_reg_put(rete_store *s, const rete_store_registration *regs, size_t n)
{
    store_etcd *se = to_se(s);
    if (se->in_list)
        return RETE_ESTATE;
    for (size_t i = 0; i < n; i++)
        if (!key_part_ok(regs[i].ns, true) || !key_part_ok(regs[i].name, false) || !regs[i].holder)
            return RETE_EINVAL;
    /* no lease yet (a hello before the first campaign), or it was lost */
    if (!se->lease[0] && (mono_ms() < se->lead_retry_ms || !lease_renew(se)))
        return RETE_EIO;
    for (size_t off = 0; off < n; off += ETCD_MAX_TXN_OPS) {
        size_t k = n - off < ETCD_MAX_TXN_OPS ? n - off : ETCD_MAX_TXN_OPS;
        rete_rc rc = reg_put_txn(se, regs + off, k);
        if (rc != RETE_OK && se->lease_refused) {
            /* The lease expired while the loop was busy (no renewal for
             * its TTL): what it held is gone; a new one, and again. */
            rete_warn("store etcd: lease %s is gone; taking a new one", se->lease);
            se->lease[0] = '\0';
            se->leading = false;
            if (!lease_renew(se))
                return RETE_EIO;
            rc = reg_put_txn(se, regs + off, k);
        }
        if (rc != RETE_OK)
            return rc;
    }
    return RETE_OK;
}

static rete_rc se_reg_get(rete_store *s, const char *ns, const char *name, rete_store_registration *out)
{
    store_etcd *se = to_se(s);
    memset(out, 0, sizeof *out);
    if (!key_part_ok(ns, true) || !key_part_ok(name, false))
        return RETE_EINVAL;
    char *key = reg_key(se, ns, name);
    json_t *resp;
    rete_rc rc = call(se, "/v3/kv/range", json_pack("{s:o}", "key", etcd_b64s(key)), &resp);
    free(key);
    RETE_GUARD(rc);
    json_t *kv = json_array_get(json_object_get(resp, "kvs"), 0);
    char *holder = NULL;
    bool ready = true;
    if (!kv || !etcd_reg_value(kv, &holder, &ready)) {
        json_decref(resp);
        return RETE_ENOTFOUND;
    }
    free(se->reg_out);
    size_t a = strlen(ns) + 1, b = strlen(name) + 1, c = strlen(holder) + 1;
    se->reg_out = rete_malloc(a + b + c);
    memcpy(se->reg_out, ns, a);
    memcpy(se->reg_out + a, name, b);
    memcpy(se->reg_out + a + b, holder, c);
    *out = (rete_store_registration){se->reg_out, se->reg_out + a, se->reg_out + a + b, ready,
                                     etcd_jint(kv, "mod_revision"), false};
    free(holder);
    json_decref(resp);
    return RETE_OK;
}

static rete_rc se_reg_list(rete_store *s, rete_store_registration_fn fn, void *arg)
{
    store_etcd *se = to_se(s);
    size_t n = strlen(se->prefix) + 16;
    char *pre = rete_malloc(n);
    snprintf(pre, n, "%sregistrations/", se->prefix);
    json_t *resp;
    rete_rc rc = range_under(se, pre, &resp);
    free(pre);
    RETE_GUARD(rc);
    json_t *kv;
    size_t i;
    json_array_foreach(json_object_get(resp, "kvs"), i, kv) {
        size_t kl;
        char *key = etcd_unb64(json_object_get(kv, "key"), &kl), *holder = NULL;
        const char *ns, *name;
        bool ready = true, go = true;
        if (key && etcd_reg_split(se, key, &ns, &name) && etcd_reg_value(kv, &holder, &ready)) {
            rete_store_registration g = {ns, name, holder, ready, etcd_jint(kv, "mod_revision"), false};
            go = fn(&g, arg);
        }
        free(key);
        free(holder);
        if (!go)
            break;
    }
    json_decref(resp);
    return RETE_OK;
}

/* Expiries per transaction: two compares and two deletes each, and etcd
 * takes at most ETCD_MAX_TXN_OPS of either. */
#define EXPIRE_PER_TXN (ETCD_MAX_TXN_OPS / 2)

/* One transaction expiring items[0..n): every guard of every item holds and
 * all are deleted, or (RETE_ECONFLICT) nothing is. */
static rete_rc expire_txn(store_etcd *se, rete_store_expiry **items, size_t n)
{
    json_t *cmp = json_array(), *ops = json_array();
    for (size_t i = 0; i < n; i++) {
        const rete_store_expiry *e = items[i];
        char *rk = reg_key(se, e->ns, e->name);
        json_array_append_new(cmp, guard(etcd_b64s(rk), e->reg_revision != 0, e->reg_revision));
        json_array_append_new(ops, delete_op(etcd_b64s(rk)));
        free(rk);
        if (e->wl_version) { /* 0: the registration alone */
            char *wk = res_key(se, "Workload", e->ns, e->name);
            json_array_append_new(cmp, guard(etcd_b64s(wk), true, e->wl_version));
            json_array_append_new(ops, delete_op(etcd_b64s(wk)));
            free(wk);
        }
    }
    return txn(se, cmp, ops, NULL, NULL, NULL);
}

/* items[0..n) (n <= EXPIRE_PER_TXN) in one transaction. etcd's transaction
 * is all-or-nothing and does not say which compare failed: on a conflict
 * the batch is cut in halves, each tried on its own, down to single items,
 * so one item that moved (re-registered, its Workload changed) costs about
 * 2*log2(n) more transactions and the others are still expired; k conflicts
 * cost at most about 2*k*log2(n). RETE_EIO: the store failed (the items not
 * decided keep RETE_EIO). */
static rete_rc expire_batch(store_etcd *se, rete_store_expiry **items, size_t n)
{
    rete_rc rc = expire_txn(se, items, n);
    if (rc == RETE_ECONFLICT && n > 1) {
        RETE_GUARD(expire_batch(se, items, n / 2));
        return expire_batch(se, items + n / 2, n - n / 2);
    }
    if (rc == RETE_EIO)
        return rc;
    for (size_t i = 0; i < n; i++)
        items[i]->rc = rc;
    return RETE_OK;
}

static rete_rc se_reg_expire_many(rete_store *s, rete_store_expiry *items, size_t n)
{
    store_etcd *se = to_se(s);
    for (size_t i = 0; i < n; i++)
        items[i].rc = RETE_EIO;
    if (se->in_list)
        return RETE_ESTATE;
    rete_store_expiry **v = rete_calloc(n ? n : 1, sizeof *v);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!key_part_ok(items[i].ns, true) || !key_part_ok(items[i].name, false))
            items[i].rc = RETE_EINVAL;
        else
            v[m++] = &items[i];
    }
    rete_rc rc = RETE_OK;
    for (size_t off = 0; off < m && rc == RETE_OK; off += EXPIRE_PER_TXN)
        rc = expire_batch(se, v + off, m - off < EXPIRE_PER_TXN ? m - off : EXPIRE_PER_TXN);
    free(v);
    return rc;
}

static rete_rc se_reg_expire(rete_store *s, const char *ns, const char *name, uint64_t reg_revision,
                             uint64_t wl_version)
{
    rete_store_expiry e = {ns, name, reg_revision, wl_version, RETE_EIO};
    rete_rc rc = se_reg_expire_many(s, &e, 1);
    return rc == RETE_OK ? e.rc : rc;
}

static uint64_t se_reg_epoch(rete_store *s)
{
    return to_se(s)->lease_epoch;
}

static void se_close(rete_store *s)
{
    if (!s)
        return;
    store_etcd *se = to_se(s);
    etcd_watch_stop(s);
    for (size_t i = 0; i < se->q_n; i++)
        free(se->q[i].key);
    free(se->q);
    etcd_reg_items_free(se->rq, se->rq_n);
    free(se->reg_out);
    pthread_mutex_destroy(&se->mu);
    reted_etcd_http_free(&se->http);
    free(se->prefix);
    free(se->out);
    free(se);
}

/* the store backend's vtable (store.h): the SQLite one's shape, plus the watch. */
static const rete_store_ops etcd_ops = {
    .name = "etcd",
    .apply = se_apply,
    .get = se_get,
    .list = se_list,
    .revision = se_revision,
    .token_put = se_token_put,
    .token_use = se_token_use,
    .token_prune = se_token_prune,
    .token_list = se_token_list,
    .meta_get = se_meta_get,
    .meta_put = se_meta_put,
    .watch_start = etcd_watch_start,
    .watch_drain = etcd_watch_drain,
    .watch_stop = etcd_watch_stop,
    .watch_drain_registrations = etcd_watch_drain_registrations,
    .lead = se_lead,
    .resign = se_resign,
    .health = se_health,
    .reg_put = se_reg_put,
    .reg_get = se_reg_get,
    .reg_list = se_reg_list,
    .reg_expire = se_reg_expire,
    .reg_expire_many = se_reg_expire_many,
    .reg_epoch = se_reg_epoch,
    .close = se_close,
};

rete_store *rete_store_etcd_open(const rete_store_etcd_opts *o, rete_error *err)
{
    const char *prefix = o->prefix && o->prefix[0] ? o->prefix : "/rete/";
    store_etcd *se = rete_calloc(1, sizeof *se);
    se->base.ops = &etcd_ops;
    pthread_mutex_init(&se->mu, NULL);
    size_t pl = strlen(prefix);
    se->prefix = rete_malloc(pl + 2);
    snprintf(se->prefix, pl + 2, "%s%s", prefix, prefix[pl - 1] == '/' ? "" : "/");
    reted_etcd_tls_files files = {o->cacert, o->cert, o->key};
    if (reted_etcd_http_init(&se->http, o->endpoints, &files, o->timeout_ms > 0 ? o->timeout_ms : 5000,
                             ETCD_MAX_RESPONSE, err) != RETE_OK)
        goto fail;
    /* one read: etcd answers, and the revision the watch follows from */
    json_t *resp;
    size_t n = strlen(se->prefix) + 16;
    char *pre = rete_malloc(n);
    snprintf(pre, n, "%sresources/", se->prefix);
    rete_rc rc = call(se, "/v3/kv/range",
                      json_pack("{s:o,s:o,s:b}", "key", etcd_b64s(pre), "range_end", etcd_prefix_end(pre), "count_only", 1),
                      &resp);
    free(pre);
    if (rc != RETE_OK) {
        rete_error_set(err, RETE_EIO, "etcd %s: no member answered (see the log above)", o->endpoints);
        goto fail;
    }
    json_decref(resp);
    return &se->base;
fail:
    se_close(&se->base);
    return NULL;
}
