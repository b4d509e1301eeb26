/* Resources in reted: YAML/JSON documents in, JSON out, and validation of
 * every change, with the stored resources it can break, by the very loader
 * the proxies run — so what reted accepts, every proxy accepts, and a document is
 * rejected with the same file / document / field path / reason a proxy would
 * give. */
#include "alloc.h"
#include "arena.h"
#include "config.h"
#include "hash.h"
#include "kinds.h"
#include "log.h"
#include "mesh_index.h"
#include "cidr.h"
#include "resources.h"
#include "reted.h"
#include "yaml_doc.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The kinds table (kinds.h) resolves the names: retectl resolves with the
 * same function, so both accept the same words. */
const char *reted_kind_canonical(const char *name)
{
    const rete_kind *k = rete_kind_lookup(name);
    return k ? k->kind : NULL;
}

/* A plain YAML scalar's JSON type, as YAML 1.2's core schema reads it. */
static json_t *scalar_json(const rete_ynode *n)
{
    if (n->quoted)
        return json_stringn(n->str, n->len);
    const char *s = n->str;
    if (n->len == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
        strcmp(s, "NULL") == 0)
        return json_null();
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
        return json_true();
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
        return json_false();
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (end && *end == '\0' && end != s && (s[0] != '0' || n->len == 1) &&
        !(s[0] == '-' && s[1] == '0'))
        return json_integer(v);
    double d = strtod(s, &end);
    if (end && *end == '\0' && end != s && strspn(s, "0123456789.-+eE") == n->len)
        return json_real(d);
    return json_stringn(s, n->len);
}

static json_t *ynode_json(const rete_ynode *n)
{
    if (!n)
        return json_null();
    switch (n->kind) {
    case RETE_YNODE_SCALAR:
        return scalar_json(n);
    case RETE_YNODE_MAP: {
        json_t *o = json_object();
        for (size_t i = 0; i < n->n; i++) {
            const rete_ynode *k = n->pairs[i].key;
            if (!k || k->kind != RETE_YNODE_SCALAR)
                continue;
            json_object_setn_new_nocheck(o, k->str, k->len, ynode_json(n->pairs[i].value));
        }
        return o;
    }
    case RETE_YNODE_SEQ: {
        json_t *a = json_array();
        for (size_t i = 0; i < n->n; i++)
            json_array_append_new(a, ynode_json(n->items[i]));
        return a;
    }
    default:
        return json_null();
    }
}

static json_t *error_obj(const char *msg, const char *source, int doc, const char *path,
                         const char *reason)
{
    json_t *e = json_pack("{s:s,s:[{s:s,s:i,s:s,s:s}]}", "error", msg, "details", "source",
                          source ? source : "-", "document", doc, "path", path ? path : "",
                          "reason", reason);
    return e;
}

void reted_docs_free(reted_doc *docs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_decref(docs[i].json);
    free(docs);
}

rete_rc reted_parse_docs(const char *text, size_t len, const char *source, reted_doc **out,
                     size_t *n_out, json_t **err_json)
{
    rete_arena *a = rete_arena_new(65536);
    rete_ystream ys;
    char err[256];
    int err_doc = -1;
    *out = NULL;
    *n_out = 0;
    if (rete_yaml_parse(text, len, a, &ys, err, sizeof(err), &err_doc) < 0) {
        *err_json = error_obj("invalid YAML", source, err_doc, "", err);
        rete_arena_free(a);
        return RETE_EINVAL;
    }
    reted_doc *docs = rete_calloc(ys.n_docs ? ys.n_docs : 1, sizeof(*docs));
    size_t n = 0;
    for (size_t i = 0; i < ys.n_docs; i++) {
        const rete_ynode *d = ys.docs[i];
        if (!d || rete_ynode_is_null(d))
            continue; /* empty document between separators */
        char reason[256] = "";
        const char *path = "";
        json_t *j = d->kind == RETE_YNODE_MAP ? ynode_json(d) : NULL;
        json_t *kind = j ? json_object_get(j, "kind") : NULL;
        json_t *meta = j ? json_object_get(j, "metadata") : NULL;
        json_t *name = meta ? json_object_get(meta, "name") : NULL;
        if (!j)
            snprintf(reason, sizeof(reason), "a resource must be a mapping");
        else if (!json_is_string(kind))
            path = "kind", snprintf(reason, sizeof(reason), "required");
        else if (!reted_kind_canonical(json_string_value(kind)))
            path = "kind", snprintf(reason, sizeof(reason), "unknown kind %s", json_string_value(kind));
        else if (!json_is_object(meta))
            path = "metadata", snprintf(reason, sizeof(reason), "required");
        else if (!json_is_string(name))
            path = "metadata.name", snprintf(reason, sizeof(reason), "required");
        if (reason[0]) {
            *err_json = error_obj("invalid resource", source, (int)i, path, reason);
            json_decref(j);
            reted_docs_free(docs, n);
            rete_arena_free(a);
            return RETE_EINVAL;
        }
        const char *canon = reted_kind_canonical(json_string_value(kind));
        json_object_set_new(j, "kind", json_string(canon));
        if (!json_is_string(json_object_get(meta, "namespace")))
            json_object_set_new(meta, "namespace", json_string("default"));
        json_t *rv = json_object_get(meta, "resourceVersion");
        uint64_t expected = 0;
        if (json_is_string(rv))
            expected = strtoull(json_string_value(rv), NULL, 10);
        else if (json_is_integer(rv))
            expected = (uint64_t)json_integer_value(rv);
        json_object_del(meta, "resourceVersion");
        json_object_del(meta, "creationTimestamp");
        json_object_del(meta, "uid");
        docs[n].json = j;
        docs[n].kind = canon;
        docs[n].ns = json_string_value(json_object_get(meta, "namespace"));
        docs[n].name = json_string_value(json_object_get(meta, "name"));
        docs[n].expected_version = expected;
        docs[n].index = (int)i;
        n++;
    }
    rete_arena_free(a);
    *out = docs;
    *n_out = n;
    return RETE_OK;
}

/* ---- validation ---- */

typedef struct vctx {
    const reted_doc *docs;
    size_t n;
    char *buf;
    size_t len;
    size_t cap;
    /* stream index -> where the document came from */
    int *origin;            /* >= 0: docs[i]; -1 - k: the k-th stored resource */
    size_t n_origin;
    size_t cap_origin;
    char **stored_keys;
    size_t n_stored;
} vctx;

static void vput(vctx *v, const char *s, size_t n)
{
    if (v->len + n + 1 > v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 65536;
        while (cap < v->len + n + 1)
            cap *= 2;
        v->buf = rete_realloc(v->buf, cap);
        v->cap = cap;
    }
    memcpy(v->buf + v->len, s, n);
    v->len += n;
    v->buf[v->len] = '\0';
}

static void vdoc(vctx *v, const char *json, int origin)
{
    vput(v, "---\n", 4);
    vput(v, json, strlen(json));
    vput(v, "\n", 1);
    if (v->n_origin == v->cap_origin) {
        v->cap_origin = v->cap_origin ? v->cap_origin * 2 : 64;
        v->origin = rete_realloc(v->origin, v->cap_origin * sizeof(int));
    }
    v->origin[v->n_origin++] = origin;
}

static bool replaced(const vctx *v, const rete_store_resource *r)
{
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->docs[i].kind, r->kind) == 0 && strcmp(v->docs[i].ns, r->ns) == 0 &&
            strcmp(v->docs[i].name, r->name) == 0)
            return true;
    return false;
}

static bool add_stored(const rete_store_resource *r, void *arg)
{
    vctx *v = arg;
    if (replaced(v, r))
        return true;
    char key[800];
    snprintf(key, sizeof(key), "%s %s/%s", r->kind, r->ns, r->name);
    v->stored_keys = rete_realloc(v->stored_keys, (v->n_stored + 1) * sizeof(char *));
    v->stored_keys[v->n_stored] = rete_strdup(key);
    vdoc(v, r->json, -1 - (int)v->n_stored);
    v->n_stored++;
    return true;
}

/* The Proxy document validation runs with: an imaginary proxy in the root
 * namespace, so every resource is parsed and cross-checked. */
static const char validation_proxy[] =
    "{\"apiVersion\":\"rete.dev/v1alpha1\",\"kind\":\"Proxy\",\"metadata\":{\"name\":\"reted-validation\","
    "\"namespace\":\"" RETED_ROOT_NS "\"},\"spec\":{\"serviceAccount\":\"reted\",\"address\":\"127.0.0.1\"}}";

/* What a change can break, read from the index instead of the whole store
 * (the loader's cross-document rules, config_resolve.c): a route's
 * parentRefs and backendRefs and a DestinationRule's host name a Service
 * (which must exist, with the port); a Service has at most one
 * DestinationRule; there is at most one MeshConfig. So the documents to load
 * with the change are: the changed ones; for a changed Service, the stored
 * routes and DestinationRules naming it; for a changed DestinationRule, the
 * stored ones on the same Service; the Services that all of these name; every
 * stored MeshConfig. Workloads, policies and WorkloadGroups name nothing the
 * loader resolves. A kind outside these rules (a MeshConfig, a Proxy
 * document, an unknown kind) takes the whole store. Returns false for "load
 * the whole store". */
typedef struct vpick {
    const reted_index *ix;
    unsigned char *taken;   /* by index position */
    const reted_doc *docs;
    size_t n;
} vpick;

static bool changed_key(const vpick *p, const char *kind, const char *ns, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->docs[i].kind, kind) == 0 && strcmp(p->docs[i].ns, ns) == 0 &&
            strcmp(p->docs[i].name, name) == 0)
            return true;
    return false;
}

static void take(vpick *p, size_t pos)
{
    const reted_ires *e = p->ix->v[pos];
    if (!changed_key(p, e->kind, e->ns, e->name))
        p->taken[pos] = 1;
}

/* The stored Service "ns/name" (a ref), when there is one. */
static void take_service(vpick *p, const char *ref)
{
    const char *slash = strchr(ref, '/');
    char ns[256];
    if (!slash || (size_t)(slash - ref) >= sizeof(ns))
        return;
    memcpy(ns, ref, (size_t)(slash - ref));
    ns[slash - ref] = '\0';
    size_t pos = reted_index_position(p->ix, "Service", ns, slash + 1);
    if (pos != SIZE_MAX)
        take(p, pos);
}

static bool has_ref(const reted_ires *e, const char *ref)
{
    for (const char *s = reted_strs_first(&e->refs); s; s = reted_strs_next(&e->refs, s))
        if (strcmp(s, ref) == 0)
            return true;
    return false;
}

/* Every stored resource of class `k` whose refs hold `ref`. */
static void take_referrers(vpick *p, rete_kind_class k, const char *ref)
{
    for (size_t id = 0; id < RETE_KIND_COUNT; id++) {
        if (rete_kinds[id].index_class != k)
            continue;
        size_t first, end;
        reted_index_range(p->ix, rete_kinds[id].kind, NULL, &first, &end);
        for (size_t i = first; i < end; i++)
            if (has_ref(p->ix->v[i], ref))
                take(p, i);
    }
}

static bool pick_affected(vpick *p)
{
    for (size_t i = 0; i < p->n; i++) {
        const rete_kind *k = rete_kind_by_name(p->docs[i].kind);
        if (!k || k->index_class == RETE_KC_NONE || k->index_class == RETE_KC_MESH)
            return false;
    }
    /* the changed documents' referrers, and what the new versions name */
    for (size_t i = 0; i < p->n; i++) {
        const reted_doc *d = &p->docs[i];
        rete_kind_class k = rete_kind_by_name(d->kind)->index_class;
        char ref[520];
        snprintf(ref, sizeof(ref), "%s/%s", d->ns, d->name);
        if (k == RETE_KC_SERVICE) {
            take_referrers(p, RETE_KC_ROUTE, ref);
            take_referrers(p, RETE_KC_DR, ref);
        }
        if (!d->json || (k != RETE_KC_ROUTE && k != RETE_KC_DR))
            continue;
        char *text = json_dumps(d->json, JSON_COMPACT);
        reted_ires *e = reted_ires_parse(d->kind, d->ns, d->name, text);
        free(text);
        for (const char *s = reted_strs_first(&e->refs); s; s = reted_strs_next(&e->refs, s)) {
            take_service(p, s);
            if (k == RETE_KC_DR)
                take_referrers(p, RETE_KC_DR, s);
        }
        reted_ires_free(e);
    }
    /* what the stored referrers name, so that they resolve */
    for (size_t i = 0; i < p->ix->n; i++) {
        const reted_ires *e = p->ix->v[i];
        if (!p->taken[i] || (e->k != RETE_KC_ROUTE && e->k != RETE_KC_DR))
            continue;
        for (const char *s = reted_strs_first(&e->refs); s; s = reted_strs_next(&e->refs, s))
            take_service(p, s);
    }
    size_t first, end;
    reted_index_range(p->ix, rete_kinds[RETE_KIND_MESH].kind, NULL, &first, &end);
    for (size_t i = first; i < end; i++)
        take(p, i);
    return true;
}

static void add_indexed(vctx *v, const reted_ires *e)
{
    char key[800];
    snprintf(key, sizeof(key), "%s %s/%s", e->kind, e->ns, e->name);
    v->stored_keys = rete_realloc(v->stored_keys, (v->n_stored + 1) * sizeof(char *));
    v->stored_keys[v->n_stored] = rete_strdup(key);
    vdoc(v, e->json->data, -1 - (int)v->n_stored);
    v->n_stored++;
}

static json_t *validate(reted *r, const reted_doc *docs, size_t n, const char *source, bool with_store,
                        const reted_index *ix);

json_t *reted_validate(reted *r, const reted_doc *docs, size_t n, const char *source,
                       const reted_index *ix)
{
    return validate(r, docs, n, source, true, ix);
}

json_t *reted_validate_alone(reted *r, const reted_doc *doc, const char *source)
{
    return validate(r, doc, 1, source, false, NULL);
}

static json_t *validate(reted *r, const reted_doc *docs, size_t n, const char *source, bool with_store,
                        const reted_index *ix)
{
    vctx v = {.docs = docs, .n = n};
    vdoc(&v, validation_proxy, -1000000);
    for (size_t i = 0; i < n; i++) {
        if (!docs[i].json)
            continue;
        char *s = json_dumps(docs[i].json, JSON_COMPACT | JSON_PRESERVE_ORDER);
        vdoc(&v, s, (int)i);
        free(s);
    }
    vpick pick = {.ix = ix, .docs = docs, .n = n};
    if (with_store && ix)
        pick.taken = rete_calloc(ix->n ? ix->n : 1, 1);
    if (with_store && ix && pick_affected(&pick)) {
        for (size_t i = 0; i < ix->n; i++) /* in the store's order, as a full load */
            if (pick.taken[i])
                add_indexed(&v, ix->v[i]);
    } else if (with_store && r->store->ops->list(r->store, NULL, NULL, add_stored, &v) < 0) {
        free(pick.taken);
        free(v.buf);
        free(v.origin);
        return json_pack("{s:s}", "error", "store unavailable");
    }
    free(pick.taken);
    rete_config_error err;
    rete_config *cfg = rete_config_load_buffer(v.buf, v.len, source ? source : "-", 1, &err);
    json_t *result = NULL;
    if (cfg) {
        rete_config_unref(cfg);
    } else {
        int origin = err.document >= 0 && (size_t)err.document < v.n_origin ? v.origin[err.document]
                                                                             : -1000000;
        if (origin >= 0) {
            result = error_obj("invalid resource", source, docs[origin].index, err.path, err.reason);
        } else if (origin > -1000000) {
            char reason[1024];
            snprintf(reason, sizeof(reason), "%s (in stored %s, which this change breaks)", err.reason,
                     v.stored_keys[-1 - origin]);
            result = error_obj("change conflicts with stored resources", source, -1, err.path, reason);
        } else {
            result = error_obj("invalid resource", source, -1, err.path, err.reason);
        }
    }
    for (size_t i = 0; i < v.n_stored; i++)
        free(v.stored_keys[i]);
    free(v.stored_keys);
    free(v.buf);
    free(v.origin);
    return result;
}

json_t *reted_resource_json(const rete_store_resource *res)
{
    json_t *j = json_loads(res->json, 0, NULL);
    if (!j)
        return json_null();
    json_t *meta = json_object_get(j, "metadata");
    if (json_is_object(meta)) {
        char rv[24];
        snprintf(rv, sizeof(rv), "%llu", (unsigned long long)res->resource_version);
        json_object_set_new(meta, "resourceVersion", json_string(rv));
        char ts[32];
        time_t t = (time_t)res->created_unix;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_object_set_new(meta, "creationTimestamp", json_string(ts));
    }
    return j;
}

/* ---- clusterIP assignment ---- */

/* The 16-byte form of an IP literal (IPv4 in the first 4 bytes, the family
 * in the last of `out`'s 17), for comparing addresses however written. */
static bool ip_key(const char *ip, unsigned char out[17])
{
    memset(out, 0, 17);
    int fam = strchr(ip, ':') ? AF_INET6 : AF_INET;
    out[16] = fam == AF_INET6 ? 6 : 4;
    return inet_pton(fam, ip, out) == 1;
}

static int key_cmp(const void *a, const void *b)
{
    return memcmp(a, b, 17);
}

typedef struct vip_set {
    unsigned char (*k)[17];
    const char **owner;     /* "ns/name" of the Service holding it (strings live in the docs) */
    size_t n, cap;
} vip_set;

static void vip_add(vip_set *s, const char *ip, const char *owner)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->k = rete_realloc(s->k, s->cap * sizeof(*s->k));
        s->owner = rete_realloc(s->owner, s->cap * sizeof(*s->owner));
    }
    if (ip_key(ip, s->k[s->n]))
        s->owner[s->n++] = owner;
}

static const char *json_cluster_ip(json_t *doc)
{
    json_t *ip = json_object_get(json_object_get(doc, "spec"), "clusterIP");
    return json_is_string(ip) && json_string_length(ip) ? json_string_value(ip) : NULL;
}

/* The serviceCIDR in effect after this change: a MeshConfig among the
 * documents, else the stored one. Stored JSON is parsed into *hold. */
static const char *service_cidr(const reted_doc *docs, size_t n, const reted_index *ix, json_t **hold)
{
    for (size_t i = 0; i < n; i++)
        if (docs[i].json && strcmp(docs[i].kind, rete_kinds[RETE_KIND_MESH].kind) == 0)
            return json_string_value(json_object_get(json_object_get(docs[i].json, "spec"), "serviceCIDR"));
    size_t first, end;
    reted_index_range(ix, rete_kinds[RETE_KIND_MESH].kind, NULL, &first, &end);
    if (first == end)
        return NULL;
    *hold = json_loads(ix->v[first]->json->data, 0, NULL);
    return json_string_value(json_object_get(json_object_get(*hold, "spec"), "serviceCIDR"));
}

static bool is_service(const reted_doc *d)
{
    return d->json && strcmp(d->kind, rete_kinds[RETE_KIND_SERVICE].kind) == 0;
}

/* FNV-1a of "ns/name": where a Service's search for a free address starts,
 * so one re-created Service gets its old address back when it is free. */
static uint64_t name_hash(const char *ns, const char *name)
{
    return rete_fnv1a_str(rete_fnv1a(rete_fnv1a_str(RETE_FNV1A_INIT, ns), "/", 1), name);
}

static json_t *assign_fail(const char *source, const reted_doc *d, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static json_t *assign_fail(const char *source, const reted_doc *d, const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    return error_obj("invalid resource", source, d->index, "spec.clusterIP", reason);
}

json_t *reted_assign_cluster_ips(const reted_doc *docs, size_t n, const char *source,
                                 const reted_index *ix)
{
    bool any = false;
    for (size_t i = 0; i < n; i++)
        any |= is_service(&docs[i]);
    if (!any)
        return NULL;
    /* Every clusterIP held after the change: the documents' own, and the
     * stored Services' the change does not replace. */
    vip_set used = {0};
    json_t *result = NULL, *mesh_hold = NULL;
    char **owners = rete_calloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        if (!is_service(&docs[i]))
            continue;
        owners[i] = rete_malloc(strlen(docs[i].ns) + strlen(docs[i].name) + 2);
        sprintf(owners[i], "%s/%s", docs[i].ns, docs[i].name);
    }
    size_t first, end;
    reted_index_range(ix, rete_kinds[RETE_KIND_SERVICE].kind, NULL, &first, &end);
    json_t **stored = rete_calloc(end - first + 1, sizeof(json_t *));
    char **stored_owner = rete_calloc(end - first + 1, sizeof(char *));
    for (size_t i = first; i < end; i++) {
        const reted_ires *e = ix->v[i];
        if (!strstr(e->json->data, "\"clusterIP\""))
            continue; /* most Services: no parse */
        stored[i - first] = json_loads(e->json->data, 0, NULL);
        const char *ip = json_cluster_ip(stored[i - first]);
        bool replaced = false;
        for (size_t d = 0; d < n && !replaced; d++)
            replaced = is_service(&docs[d]) && strcmp(docs[d].ns, e->ns) == 0 &&
                       strcmp(docs[d].name, e->name) == 0;
        if (!ip || replaced)
            continue;
        stored_owner[i - first] = rete_malloc(strlen(e->ns) + strlen(e->name) + 2);
        sprintf(stored_owner[i - first], "%s/%s", e->ns, e->name);
        vip_add(&used, ip, stored_owner[i - first]);
    }
    /* Given ones: not another stored Service's (the validation load holds
     * only what the change touches, so it cannot see that). Missing ones:
     * the stored version's, kept across applies. */
    for (size_t i = 0; i < n && !result; i++) {
        if (!is_service(&docs[i]))
            continue;
        const char *ip = json_cluster_ip(docs[i].json);
        if (!ip) {
            size_t pos = reted_index_position(ix, docs[i].kind, docs[i].ns, docs[i].name);
            ip = pos != SIZE_MAX ? json_cluster_ip(stored[pos - first]) : NULL;
            if (ip)
                json_object_set_new(json_object_get(docs[i].json, "spec"), "clusterIP", json_string(ip));
            continue;
        }
        unsigned char k[17];
        if (!ip_key(ip, k))
            continue; /* the loader names it */
        for (size_t j = 0; j < used.n; j++)
            if (memcmp(used.k[j], k, 17) == 0)
                result = assign_fail(source, &docs[i], "%s is already the clusterIP of service %s",
                                     ip, used.owner[j]);
        vip_add(&used, ip, owners[i]);
    }
    const char *cidr_text = result ? NULL : service_cidr(docs, n, ix, &mesh_hold);
    rete_cidr range;
    if (cidr_text && rete_cidr_parse(cidr_text, &range)) {
        /* The range's first address (the network's) and an IPv4 range's
         * last (its broadcast) are never assigned; among the n_used + 3
         * addresses from any start, one is free unless the range is full. */
        uint64_t size = rete_cidr_size(&range, UINT64_C(1) << 62);
        for (size_t i = 0; i < n && !result; i++) {
            if (!is_service(&docs[i]) || json_cluster_ip(docs[i].json))
                continue;
            if (used.n)
                qsort(used.k, used.n, sizeof(*used.k), key_cmp);
            uint64_t start = name_hash(docs[i].ns, docs[i].name) % size;
            char ip[INET6_ADDRSTRLEN] = "";
            for (uint64_t t = 0; t < used.n + 3 && t < size && !ip[0]; t++) {
                uint64_t off = (start + t) % size;
                if (off == 0 || (range.family == AF_INET && size > 2 && off == size - 1))
                    continue;
                unsigned char k[17];
                if (!rete_cidr_nth(&range, off, ip, sizeof(ip)) || !ip_key(ip, k))
                    ip[0] = '\0';
                else if (used.n && bsearch(k, used.k, used.n, sizeof(*used.k), key_cmp))
                    ip[0] = '\0';
            }
            if (!ip[0]) {
                result = assign_fail(source, &docs[i],
                                     "no clusterIP given and MeshConfig serviceCIDR %s is full "
                                     "(%zu addresses taken): widen it or give one",
                                     range.text, used.n);
                break;
            }
            json_object_set_new(json_object_get(docs[i].json, "spec"), "clusterIP", json_string(ip));
            vip_add(&used, ip, owners[i]);
        }
    }
    for (size_t i = 0; i < end - first; i++) {
        json_decref(stored[i]);
        free(stored_owner[i]);
    }
    for (size_t i = 0; i < n; i++)
        free(owners[i]);
    free(owners);
    free(stored);
    free(stored_owner);
    free(used.k);
    free(used.owner);
    json_decref(mesh_hold);
    return result;
}
