/* The registry (registry.h). */
#include "registry.h"

#include "compiler.h"
#include "reted.h"

#include <stdlib.h>
#include <string.h>

reted_proxy *reted_proxy_find(reted *r, const char *ns, const char *name)
{
    for (reted_proxy *p = r->registry.proxies; p; p = p->next)
        if (strcmp(p->ns, ns) == 0 && strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

void reted_proxy_free(reted *r, reted_proxy *p)
{
    free(p->nack_error);
    json_decref(p->endpoints_out);
    json_decref(p->budget_exhausted);
    reted_snapshot_release(r, p->sent);
    free(p);
}

void reted_registry_free(reted *r)
{
    for (reted_proxy *p = r->registry.proxies, *n; p; p = n) {
        n = p->next;
        reted_proxy_free(r, p);
    }
    r->registry.proxies = NULL;
}
