/* The store, indexed for the compiler (mesh_index.h). */
#include "mesh_index.h"

#include "alloc.h"
#include "config_schema.h"
#include "defaults.h"
#include "hash.h"
#include "vec.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void reted_text_release(reted_text *t)
{
    if (t && --t->refs == 0)
        free(t);
}

const char *reted_strs_first(const reted_strs *x)
{
    return x->n ? x->p : NULL;
}

const char *reted_strs_next(const reted_strs *x, const char *s)
{
    s += strlen(s) + 1;
    return s < x->p + x->len ? s : NULL;
}

void reted_strs_add(reted_strs *x, const char *s, size_t n)
{
    x->p = rete_realloc(x->p, x->len + n + 1);
    memcpy(x->p + x->len, s, n);
    x->p[x->len + n] = '\0';
    x->len += n + 1;
    x->n++;
}

static bool strs_has(const reted_strs *x, const char *s)
{
    for (const char *e = reted_strs_first(x); e; e = reted_strs_next(x, e))
        if (strcmp(e, s) == 0)
            return true;
    return false;
}

bool reted_selects(const reted_strs *sel, const reted_strs *labels)
{
    if (!sel->n)
        return false;
    for (const char *k = reted_strs_first(sel); k; k = reted_strs_next(sel, reted_strs_next(sel, k))) {
        const char *v = reted_strs_next(sel, k);
        bool found = false;
        for (const char *lk = reted_strs_first(labels); lk && !found;
             lk = reted_strs_next(labels, reted_strs_next(labels, lk)))
            found = strcmp(lk, k) == 0 && strcmp(reted_strs_next(labels, lk), v) == 0;
        if (!found)
            return false;
    }
    return true;
}

static reted_ikind ikind_of(const char *kind)
{
    const rete_kind *k = rete_kind_by_name(kind);
    return k ? k->index_class : RETE_KC_NONE;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Labels or a selector, sorted by key: the same labels written in another
 * order are the same scope (compiler.c keys scopes by them). */
static void add_kv(reted_strs *x, json_t *obj)
{
    size_t n = json_object_size(obj);
    if (!n)
        return;
    const char **keys = rete_malloc(n * sizeof(*keys));
    size_t m = 0;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        if (json_is_string(v) && m < n)
            keys[m++] = k;
    }
    qsort(keys, m, sizeof(*keys), str_cmp);
    for (size_t i = 0; i < m; i++) {
        v = json_object_get(obj, keys[i]);
        reted_strs_add(x, keys[i], strlen(keys[i]));
        reted_strs_add(x, json_string_value(v), json_string_length(v));
    }
    free(keys);
}

static void add_strings(reted_strs *x, json_t *arr)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (json_is_string(v))
            reted_strs_add(x, json_string_value(v), json_string_length(v));
    }
}

/* A parentRef or backendRef as "ns/name" (namespace defaults to the route's). */
static void add_ref(reted_strs *x, json_t *ref, const char *route_ns)
{
    const char *name = json_string_value(json_object_get(ref, "name"));
    const char *ns = json_string_value(json_object_get(ref, "namespace"));
    if (!name)
        return;
    char buf[520];
    int n = snprintf(buf, sizeof(buf), "%s/%s", ns ? ns : route_ns, name);
    if (n > 0 && (size_t)n < sizeof(buf) && !strs_has(x, buf))
        reted_strs_add(x, buf, (size_t)n);
}

/* Every backendRef of a route, wherever rules nest them: backendRefs[] and
 * a RequestMirror filter's backendRef. */
static void add_backends(reted_strs *x, json_t *node, const char *route_ns)
{
    if (json_is_array(node)) {
        size_t i;
        json_t *v;
        json_array_foreach(node, i, v) add_backends(x, v, route_ns);
        return;
    }
    if (!json_is_object(node))
        return;
    const char *k;
    json_t *v;
    json_object_foreach(node, k, v)
    {
        if (strcmp(k, "backendRefs") == 0 && json_is_array(v)) {
            size_t i;
            json_t *ref;
            json_array_foreach(v, i, ref) add_ref(x, ref, route_ns);
        } else if (strcmp(k, "backendRef") == 0 && json_is_object(v)) {
            add_ref(x, v, route_ns);
        } else {
            add_backends(x, v, route_ns);
        }
    }
}

/* A DestinationRule host (name, name.ns, name.ns.svc, the FQDN) as "ns/name",
 * as the proxy's loader resolves it. */
static void add_host(reted_strs *x, const char *host, const char *dr_ns)
{
    char h[300];
    snprintf(h, sizeof(h), "%s", host);
    for (char *c = h; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    size_t len = strlen(h);
    if (len && h[len - 1] == '.')
        h[--len] = '\0';
    /* Only as a suffix, as cfg_service_by_host drops it: "pay.svc-team" is
     * Service pay of namespace svc-team. */
    static const char *const suffixes[] = {".svc." RETE_CLUSTER_DOMAIN, ".svc"};
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        size_t sl = strlen(suffixes[i]);
        if (len >= sl && strcmp(h + len - sl, suffixes[i]) == 0) {
            h[len -= sl] = '\0';
            break;
        }
    }
    char *dot = strchr(h, '.');
    if (dot)
        *dot = '\0';
    char buf[600];
    int n = snprintf(buf, sizeof(buf), "%s/%s", dot ? dot + 1 : dr_ns, h);
    if (n > 0 && (size_t)n < sizeof(buf))
        reted_strs_add(x, buf, (size_t)n);
}

/* ---- Workloads by label ---- */

#define LABEL_BUCKETS 16384

static size_t label_hash(const char *s, size_t n)
{
    return (size_t)(rete_fnv1a(RETE_FNV1A_INIT, s, n) % LABEL_BUCKETS);
}

static size_t label_key(char *buf, size_t size, const char *ns, const char *k, const char *v)
{
    int n = snprintf(buf, size, "%s\x1f%s\x1f%s", ns, k, v);
    return n < 0 || (size_t)n >= size ? 0 : (size_t)n;
}

static reted_label_list *label_list(const reted_index *ix, const char *key, size_t n)
{
    if (!ix->labels)
        return NULL;
    for (reted_label_list *l = ix->labels[label_hash(key, n)]; l; l = l->next)
        if (strcmp(l->key, key) == 0)
            return l;
    return NULL;
}

/* Add (or remove) a Workload under each of its labels. */
static void labels_update(reted_index *ix, reted_ires *wl, bool add)
{
    if (!ix->labels) {
        ix->n_label_buckets = LABEL_BUCKETS;
        ix->labels = rete_calloc(LABEL_BUCKETS, sizeof(*ix->labels));
    }
    const reted_strs *kv = &wl->kv;
    for (const char *k = reted_strs_first(kv); k; k = reted_strs_next(kv, reted_strs_next(kv, k))) {
        char key[1024];
        size_t n = label_key(key, sizeof(key), wl->ns, k, reted_strs_next(kv, k));
        if (!n)
            continue;
        reted_label_list *l = label_list(ix, key, n);
        if (!add) {
            for (size_t i = 0; l && i < l->n; i++)
                if (l->wl[i] == wl) {
                    l->wl[i] = l->wl[--l->n];
                    break;
                }
            continue;
        }
        if (!l) {
            l = rete_calloc(1, sizeof(*l) + n + 1);
            memcpy(l->key, key, n + 1);
            size_t b = label_hash(key, n);
            l->next = ix->labels[b];
            ix->labels[b] = l;
        }
        RETE_GROW(l->wl, l->cap, l->n + 1, 4);
        l->wl[l->n++] = wl;
    }
}

reted_ires *const *reted_index_endpoints(reted_index *ix, reted_ires *svc, size_t *n)
{
    if (svc->endpoints_gen != ix->gen || !svc->endpoints) {
        size_t cap = 0;
        svc->n_endpoints = 0;
        const char *k = reted_strs_first(&svc->kv);
        char key[1024];
        size_t kn = k ? label_key(key, sizeof(key), svc->ns, k, reted_strs_next(&svc->kv, k)) : 0;
        reted_label_list *l = kn ? label_list(ix, key, kn) : NULL;
        for (size_t i = 0; l && i < l->n; i++) {
            if (!reted_selects(&svc->kv, &l->wl[i]->kv))
                continue;
            RETE_GROW(svc->endpoints, cap, svc->n_endpoints + 1, 8);
            svc->endpoints[svc->n_endpoints++] = l->wl[i];
        }
        if (!svc->endpoints)
            svc->endpoints = rete_malloc(sizeof(*svc->endpoints)); /* computed: none */
        svc->endpoints_gen = ix->gen;
    }
    *n = svc->n_endpoints;
    return svc->endpoints;
}

static void ires_free(reted_ires *e);

static reted_ires *ires_new(const rete_store_resource *res)
{
    size_t lk = strlen(res->kind) + 1, ln = strlen(res->ns) + 1, lm = strlen(res->name) + 1;
    reted_ires *e = rete_calloc(1, sizeof(*e) + lk + ln + lm);
    memcpy(e->key, res->kind, lk);
    memcpy(e->key + lk, res->ns, ln);
    memcpy(e->key + lk + ln, res->name, lm);
    e->kind = e->key;
    e->ns = e->key + lk;
    e->name = e->key + lk + ln;
    e->k = ikind_of(res->kind);
    e->version = res->resource_version;
    size_t len = strlen(res->json);
    e->json = rete_malloc(sizeof(*e->json) + len + 1 + lk + ln + lm);
    e->json->refs = 1;
    e->json->version = res->resource_version;
    e->json->len = len;
    e->json->hash = rete_fnv1a(RETE_FNV1A_INIT, res->json, len);
    memcpy(e->json->data, res->json, len + 1);
    memcpy(e->json->data + len + 1, e->key, lk + ln + lm);
    e->json->kind = e->json->data + len + 1;
    e->json->ns = e->json->kind + lk;
    e->json->name = e->json->ns + ln;
    if (e->k == RETE_KC_NONE || e->k == RETE_KC_POLICY || e->k == RETE_KC_GROUP)
        return e;
    json_t *doc = json_loadb(e->json->data, e->json->len, 0, NULL);
    json_t *spec = json_object_get(doc, "spec");
    switch (e->k) {
    case RETE_KC_SERVICE:
        add_kv(&e->kv, json_object_get(spec, "selector"));
        break;
    case RETE_KC_WORKLOAD:
        add_kv(&e->kv, json_object_get(spec, "labels"));
        add_strings(&e->refs, json_object_get(spec, "egress"));
        break;
    case RETE_KC_ROUTE: {
        size_t i;
        json_t *ref;
        json_array_foreach(json_object_get(spec, "parentRefs"), i, ref) add_ref(&e->refs, ref, e->ns);
        e->n_parents = e->refs.n;
        add_backends(&e->refs, json_object_get(spec, "rules"), e->ns);
        break;
    }
    case RETE_KC_DR: {
        const char *host = json_string_value(json_object_get(spec, "host"));
        if (host)
            add_host(&e->refs, host, e->ns);
        break;
    }
    case RETE_KC_MESH: {
        add_strings(&e->refs, json_object_get(spec, "defaultEgress"));
        const char *ttl = json_string_value(json_object_get(spec, "workloadCertificateTTL"));
        if (!ttl || !cfg_parse_duration(ttl, &e->cert_ttl_ms))
            e->cert_ttl_ms = 0;
        break;
    }
    default:
        break;
    }
    json_decref(doc);
    return e;
}

reted_ires *reted_ires_parse(const char *kind, const char *ns, const char *name, const char *json)
{
    rete_store_resource res = {.kind = kind, .ns = ns, .name = name, .json = json};
    return ires_new(&res);
}

void reted_ires_free(reted_ires *e)
{
    ires_free(e);
}

static void ires_free(reted_ires *e)
{
    if (!e)
        return;
    free(e->endpoints);
    reted_text_release(e->json);
    reted_text_release(e->unready);
    free(e->kv.p);
    free(e->refs.p);
    free(e);
}

static int key_cmp(const char *kind, const char *ns, const char *name, const reted_ires *e)
{
    return rete_resource_key_cmp(kind, ns, name, e->kind, e->ns, e->name);
}

/* The position of the key, or where it would go (*found false). */
static size_t find(const reted_index *ix, const char *kind, const char *ns, const char *name, bool *found)
{
    size_t lo = 0, hi = ix->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = key_cmp(kind, ns, name, ix->v[mid]);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    *found = false;
    return lo;
}

static void insert_at(reted_index *ix, size_t at, reted_ires *e)
{
    RETE_GROW(ix->v, ix->cap, ix->n + 1, 1024);
    memmove(ix->v + at + 1, ix->v + at, (ix->n - at) * sizeof(*ix->v));
    ix->v[at] = e;
    ix->n++;
}

int reted_ires_cmp(const reted_ires *a, const reted_ires *b)
{
    return key_cmp(a->kind, a->ns, a->name, b);
}

/* Put a new resource at `at` (its place), keeping the label table. */
static void put_at(reted_index *ix, size_t at, reted_ires *e)
{
    insert_at(ix, at, e);
    if (e->k == RETE_KC_WORKLOAD)
        labels_update(ix, e, true);
}

static void drop(reted_index *ix, reted_ires *e)
{
    if (e->k == RETE_KC_WORKLOAD)
        labels_update(ix, e, false);
    ires_free(e);
}

static bool build_one(const rete_store_resource *res, void *arg)
{
    reted_index *ix = arg;
    put_at(ix, ix->n, ires_new(res));
    return true;
}

static void labels_free(reted_index *ix)
{
    for (size_t b = 0; b < ix->n_label_buckets; b++)
        for (reted_label_list *l = ix->labels[b], *next; l; l = next) {
            next = l->next;
            free(l->wl);
            free(l);
        }
    free(ix->labels);
    ix->labels = NULL;
    ix->n_label_buckets = 0;
}

void reted_index_free(reted_index *ix)
{
    for (size_t i = 0; i < ix->n; i++)
        ires_free(ix->v[i]); /* the label table goes whole */
    free(ix->v);
    labels_free(ix);
    *ix = (reted_index){0};
}

rete_rc reted_index_build(reted_index *ix, rete_store *st)
{
    /* Generations go on across a rebuild: what was cached against an
     * earlier one must not match. */
    uint64_t gen = ix->gen, mesh_gen = ix->mesh_gen;
    reted_index_free(ix);
    rete_rc rc = st->ops->list(st, NULL, NULL, build_one, ix);
    ix->built = rc == RETE_OK;
    ix->gen = gen + 1;
    ix->mesh_gen = mesh_gen + 1;
    return rc;
}

rete_rc reted_index_refresh(reted_index *ix, rete_store *st, const char *kind, const char *ns,
                            const char *name)
{
    bool found;
    size_t at = find(ix, kind, ns, name, &found);
    rete_store_resource res;
    rete_rc rc = st->ops->get(st, kind, ns, name, &res);
    if (strcmp(kind, "MeshConfig") == 0)
        ix->mesh_gen++;
    if (rc == RETE_ENOTFOUND) {
        if (found) {
            drop(ix, ix->v[at]);
            memmove(ix->v + at, ix->v + at + 1, (ix->n - at - 1) * sizeof(*ix->v));
            ix->n--;
            ix->gen++;
        }
        return RETE_OK;
    }
    if (rc < 0)
        return rc;
    if (found) {
        if (ix->v[at]->version == res.resource_version)
            return RETE_OK;
        drop(ix, ix->v[at]);
        memmove(ix->v + at, ix->v + at + 1, (ix->n - at - 1) * sizeof(*ix->v));
        ix->n--;
    }
    put_at(ix, at, ires_new(&res));
    if (ix->v[at]->k == RETE_KC_SERVICE || ix->v[at]->k == RETE_KC_WORKLOAD)
        ix->gen++;
    return RETE_OK;
}

size_t reted_index_position(const reted_index *ix, const char *kind, const char *ns, const char *name)
{
    bool found;
    size_t at = find(ix, kind, ns, name, &found);
    return found ? at : SIZE_MAX;
}

const reted_ires *reted_index_get(const reted_index *ix, const char *kind, const char *ns, const char *name)
{
    size_t at = reted_index_position(ix, kind, ns, name);
    return at == SIZE_MAX ? NULL : ix->v[at];
}

void reted_index_range(const reted_index *ix, const char *kind, const char *ns, size_t *first, size_t *end)
{
    /* "" sorts before every namespace and name; "\xff" after them (names
     * are RFC 1123: ASCII). */
    bool found;
    *first = find(ix, kind, ns ? ns : "", "", &found);
    *end = find(ix, kind, ns ? ns : "\xff", "\xff", &found);
}

