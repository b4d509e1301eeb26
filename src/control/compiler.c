/* The config compiler: for one proxy, the resources it needs, as the
 * document stream its loader reads. Today every Service, Workload, route and
 * DestinationRule of the mesh (Istio's default visibility) and the security
 * policies of the proxy's own namespace and of the root namespace — never
 * another namespace's policies.
 *
 * What a proxy gets therefore depends only on its namespace: a snapshot is
 * compiled once per namespace and store revision, shared (reference
 * counted) by every proxy of that namespace, and its push message body is
 * JSON-encoded once. reted's memory per proxy stays a few hundred bytes
 * whatever the size of the mesh; a push round costs one compile per
 * namespace, not one per proxy. */
#include "alloc.h"
#include "reted.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cbuf {
    char *p;
    size_t len;
    size_t cap;
    const char *ns;
    reted_entry *entries;
    size_t n_entries;
    size_t cap_entries;
} cbuf;

static void put(cbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16384;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = rete_realloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static bool wanted(const rete_store_resource *res, const char *ns)
{
    if (strcmp(res->kind, "AuthorizationPolicy") == 0 || strcmp(res->kind, "PeerAuthentication") == 0)
        return strcmp(res->ns, ns) == 0 || strcmp(res->ns, RETED_ROOT_NS) == 0;
    return true;
}

static bool add(const rete_store_resource *res, void *arg)
{
    cbuf *b = arg;
    if (!wanted(res, b->ns))
        return true;
    if (b->n_entries == b->cap_entries) {
        b->cap_entries = b->cap_entries ? b->cap_entries * 2 : 256;
        b->entries = rete_realloc(b->entries, b->cap_entries * sizeof(*b->entries));
    }
    reted_entry *e = &b->entries[b->n_entries++];
    snprintf(e->kind, sizeof(e->kind), "%s", res->kind);
    snprintf(e->ns, sizeof(e->ns), "%s", res->ns);
    snprintf(e->name, sizeof(e->name), "%s", res->name);
    e->version = res->resource_version;
    put(b, "---\n", 4);
    e->off = b->len;
    put(b, res->json, strlen(res->json));
    e->len = b->len - e->off;
    put(b, "\n", 1);
    return true;
}

/* The store lists by (kind, namespace, name), bytewise: the order of a
 * snapshot's entries, and the order a proxy rebuilds its set in. */
static int entry_cmp(const reted_entry *a, const reted_entry *b)
{
    int c = strcmp(a->kind, b->kind);
    if (c == 0)
        c = strcmp(a->ns, b->ns);
    if (c == 0)
        c = strcmp(a->name, b->name);
    return c;
}

static uint64_t fnv(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static char *json_encoded(const char *s)
{
    json_t *j = json_string(s);
    char *out = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(j);
    return out;
}

void reted_snapshot_release(reted *r, reted_snapshot *s)
{
    (void)r;
    if (!s || --s->refs > 0)
        return;
    free(s->text);
    free(s->body);
    free(s->entries);
    for (size_t i = 0; i < RETED_DELTA_CACHE; i++) {
        free(s->deltas[i].body);
        if (s->deltas[i].base)
            reted_snapshot_release(r, s->deltas[i].base);
    }
    free(s);
}

/* Drop the cache's hold on snapshots that can no longer be current. */
void reted_snapshots_expire(reted *r)
{
    uint64_t rev = r->store->ops->revision(r->store);
    reted_snapshot **pp = &r->snapshots;
    while (*pp) {
        reted_snapshot *s = *pp;
        if (s->revision != rev || s->ca_generation != r->ca_generation) {
            *pp = s->next;
            /* No delta will be asked of it any more: let its bases go, so
             * old snapshots do not stay chained to the current one. */
            for (size_t i = 0; i < RETED_DELTA_CACHE; i++) {
                rete_free(&s->deltas[i].body);
                if (s->deltas[i].base)
                    reted_snapshot_release(r, s->deltas[i].base);
                s->deltas[i].base = NULL;
            }
            reted_snapshot_release(r, s);
            continue;
        }
        pp = &s->next;
    }
}

reted_snapshot *reted_snapshot_for(reted *r, const char *ns)
{
    uint64_t rev = r->store->ops->revision(r->store);
    for (reted_snapshot *s = r->snapshots; s; s = s->next)
        if (s->revision == rev && s->ca_generation == r->ca_generation && strcmp(s->ns, ns) == 0) {
            s->refs++;
            return s;
        }
    cbuf b = {.ns = ns};
    put(&b, "", 0);
    r->store->ops->list(r->store, NULL, NULL, add, &b);
    reted_snapshot *s = rete_calloc(1, sizeof(*s));
    snprintf(s->ns, sizeof(s->ns), "%s", ns);
    s->revision = rev;
    s->ca_generation = r->ca_generation;
    s->text = b.p;
    s->text_len = b.len;
    s->entries = b.entries;
    s->n_entries = b.n_entries;
    /* The trust bundle and a renewal request travel with the resources:
     * a CA rotation changes them without changing any resource. */
    const char *bundle = rete_ca_bundle_pem(r->ca);
    uint64_t h = fnv(0xcbf29ce484222325ULL, b.p, b.len);
    h = fnv(h, bundle, strlen(bundle));
    h ^= (uint64_t)r->renew_issued_before;
    s->hash = h;
    /* The whole-snapshot message body (megabytes of escaped text in a large
     * mesh) is encoded when a proxy first needs it: deltas do not. */
    s->refs = 2; /* the cache's and the caller's */
    s->next = r->snapshots;
    r->snapshots = s;
    return s;
}

static void jput(cbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* The delta that takes a proxy from `base` (the snapshot it acknowledged)
 * to `to`: the documents added or changed, the keys removed. Computed once
 * per (base, to) pair and kept with `to`, since the proxies of a namespace
 * mostly share their base. Returns the message tail (shared; do not free). */
const char *reted_snapshot_delta(reted *r, reted_snapshot *to, reted_snapshot *base, size_t *len)
{
    for (size_t i = 0; i < RETED_DELTA_CACHE; i++)
        if (to->deltas[i].base == base) {
            *len = to->deltas[i].len;
            return to->deltas[i].body;
        }
    cbuf up = {0}, del = {0};
    put(&up, "", 0);
    jput(&del, "[");
    size_t i = 0, j = 0, n_del = 0;
    while (i < base->n_entries || j < to->n_entries) {
        int c = i == base->n_entries ? 1
                : j == to->n_entries ? -1
                                     : entry_cmp(&base->entries[i], &to->entries[j]);
        if (c < 0) { /* gone */
            const reted_entry *e = &base->entries[i++];
            char key[800];
            snprintf(key, sizeof(key), "%s\"%s/%s/%s\"", n_del++ ? "," : "", e->kind, e->ns, e->name);
            jput(&del, key);
            continue;
        }
        const reted_entry *e = &to->entries[j++];
        if (c == 0 && base->entries[i++].version == e->version)
            continue; /* unchanged */
        put(&up, "---\n", 4);
        put(&up, to->text + e->off, e->len);
        put(&up, "\n", 1);
    }
    jput(&del, "]");
    char *ups = json_encoded(up.p), *bun = json_encoded(rete_ca_bundle_pem(r->ca));
    size_t n = strlen(ups) + strlen(bun) + del.len + 200;
    char *body = rete_malloc(n);
    size_t blen = (size_t)snprintf(body, n,
                                   "\"renewIssuedBefore\":%lld,\"trustBundle\":%s,\"upserts\":%s,\"deletes\":%s}\n",
                                   (long long)r->renew_issued_before, bun, ups, del.p);
    free(ups);
    free(bun);
    free(up.p);
    free(del.p);
    /* Keep it (round robin over a few slots), holding the base alive. */
    size_t slot = to->next_delta++ % RETED_DELTA_CACHE;
    free(to->deltas[slot].body);
    if (to->deltas[slot].base)
        reted_snapshot_release(r, to->deltas[slot].base);
    base->refs++;
    to->deltas[slot] = (struct reted_delta){base, body, blen};
    *len = blen;
    return body;
}

const char *reted_snapshot_body(reted *r, reted_snapshot *s, size_t *len)
{
    if (!s->body) {
        char *res = json_encoded(s->text), *bun = json_encoded(rete_ca_bundle_pem(r->ca));
        size_t n = strlen(res) + strlen(bun) + 128;
        s->body = rete_malloc(n);
        s->body_len = (size_t)snprintf(s->body, n,
                                       "\"renewIssuedBefore\":%lld,\"trustBundle\":%s,\"resources\":%s}\n",
                                       (long long)r->renew_issued_before, bun, res);
        free(res);
        free(bun);
    }
    *len = s->body_len;
    return s->body;
}
