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
    put(b, "---\n", 4);
    put(b, res->json, strlen(res->json));
    put(b, "\n", 1);
    return true;
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
    /* The trust bundle and a renewal request travel with the resources:
     * a CA rotation changes them without changing any resource. */
    const char *bundle = rete_ca_bundle_pem(r->ca);
    uint64_t h = fnv(0xcbf29ce484222325ULL, b.p, b.len);
    h = fnv(h, bundle, strlen(bundle));
    h ^= (uint64_t)r->renew_issued_before;
    s->hash = h;
    char *res = json_encoded(b.p), *bun = json_encoded(bundle);
    size_t n = strlen(res) + strlen(bun) + 128;
    s->body = rete_malloc(n);
    s->body_len = (size_t)snprintf(s->body, n, "\"renewIssuedBefore\":%lld,\"trustBundle\":%s,\"resources\":%s}\n",
                                   (long long)r->renew_issued_before, bun, res);
    free(res);
    free(bun);
    s->refs = 2; /* the cache's and the caller's */
    s->next = r->snapshots;
    r->snapshots = s;
    return s;
}
