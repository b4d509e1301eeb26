/* The config compiler: for one proxy, the resources it needs, as the
 * document stream its loader reads. Today every Service, Workload, route and
 * DestinationRule of the mesh (Istio's default visibility) and the security
 * policies of the proxy's own namespace and of the root namespace — never
 * another namespace's policies. */
#include "alloc.h"
#include "reted.h"

#include <stdlib.h>
#include <string.h>

typedef struct cbuf {
    char *p;
    size_t len;
    size_t cap;
    const reted_proxy *proxy;
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

static bool wanted(const rete_store_resource *res, const reted_proxy *p)
{
    if (strcmp(res->kind, "AuthorizationPolicy") == 0 || strcmp(res->kind, "PeerAuthentication") == 0)
        return strcmp(res->ns, p->ns) == 0 || strcmp(res->ns, RETED_ROOT_NS) == 0;
    return true;
}

static bool add(const rete_store_resource *res, void *arg)
{
    cbuf *b = arg;
    if (!wanted(res, b->proxy))
        return true;
    put(b, "---\n", 4);
    put(b, res->json, strlen(res->json));
    put(b, "\n", 1);
    return true;
}

char *reted_compile(reted *r, const reted_proxy *p, uint64_t *hash)
{
    cbuf b = {.proxy = p};
    put(&b, "", 0);
    r->store->ops->list(r->store, NULL, NULL, add, &b);
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a 64 */
    for (size_t i = 0; i < b.len; i++) {
        h ^= (unsigned char)b.p[i];
        h *= 0x100000001b3ULL;
    }
    *hash = h;
    return b.p;
}
