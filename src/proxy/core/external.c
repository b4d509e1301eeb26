/* Resolution of Service externalName hosts (external.h). */
#include "external.h"

#include "alloc.h"
#include "config.h"
#include "log.h"
#include "proxy.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct ext_host {
    char *host;
    char addrs[RETE_EXTERNAL_ADDRS_MAX][INET6_ADDRSTRLEN];
    size_t n;
    bool known;    /* resolved at least once */
    bool pending;  /* a uv_getaddrinfo in flight */
} ext_host;

struct rete_external {
    rete_proxy *p;
    uv_timer_t timer;
    ext_host hosts[RETE_EXTERNAL_HOSTS_MAX];
    size_t n_hosts;
    unsigned in_flight;
    bool stopping;
    bool timer_closed;
};

typedef struct ext_req {
    uv_getaddrinfo_t req;
    rete_external *x;
    size_t host; /* index in x->hosts */
} ext_req;

static bool is_dns_host(const rete_service *svc)
{
    unsigned char b[16];
    return svc->external_name && inet_pton(AF_INET, svc->external_name, b) != 1 &&
           inet_pton(AF_INET6, svc->external_name, b) != 1;
}

static ext_host *find_host(rete_external *x, const char *host, bool add)
{
    for (size_t i = 0; i < x->n_hosts; i++)
        if (strcmp(x->hosts[i].host, host) == 0)
            return &x->hosts[i];
    if (!add || x->n_hosts == RETE_EXTERNAL_HOSTS_MAX)
        return NULL;
    ext_host *h = &x->hosts[x->n_hosts++];
    *h = (ext_host){.host = rete_strdup(host)};
    return h;
}

static void maybe_free(rete_external *x)
{
    if (x->stopping && x->timer_closed && x->in_flight == 0) {
        for (size_t i = 0; i < x->n_hosts; i++)
            free(x->hosts[i].host);
        free(x);
    }
}

static int addr_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* The snapshot in service again with the table's addresses. */
static void reinstall(rete_external *x)
{
    rete_proxy *p = x->p;
    if (!p->cfg || atomic_load(&p->draining))
        return;
    rete_config *cfg = rete_external_apply(x, rete_config_ref(p->cfg));
    if (cfg == p->cfg) {
        rete_config_unref(cfg);
        return;
    }
    atomic_fetch_add(&p->tls->refs, 1); /* same Services, same contexts */
    rete_proxy_install(p, cfg, p->tls);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    ext_req *r = (ext_req *)req;
    rete_external *x = r->x;
    ext_host *h = &x->hosts[r->host];
    h->pending = false;
    x->in_flight--;
    free(r);
    if (x->stopping) {
        uv_freeaddrinfo(res);
        maybe_free(x);
        return;
    }
    char got[RETE_EXTERNAL_ADDRS_MAX * 4][INET6_ADDRSTRLEN];
    size_t n = 0;
    for (struct addrinfo *ai = res; status == 0 && ai && n < RETE_EXTERNAL_ADDRS_MAX * 4; ai = ai->ai_next) {
        const void *a = ai->ai_family == AF_INET ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                        : ai->ai_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                            : NULL;
        if (a && inet_ntop(ai->ai_family, a, got[n], sizeof(got[n])))
            n++;
    }
    uv_freeaddrinfo(res);
    if (status != 0 || n == 0) {
        rete_metrics_inc(x->p->main_shard, x->p->ms.resolutions_error, 1);
        rete_warn("externalName %s: %s; keeping %zu address(es)", h->host,
                  status ? uv_strerror(status) : "no address", h->n);
        return;
    }
    rete_metrics_inc(x->p->main_shard, x->p->ms.resolutions_ok, 1);
    /* Sorted and deduplicated, so that the same answer in another order
     * is no change (and ring hash keeps its endpoints' order). */
    qsort(got, n, sizeof(got[0]), addr_cmp);
    size_t m = 0;
    for (size_t i = 0; i < n && m < RETE_EXTERNAL_ADDRS_MAX; i++)
        if (m == 0 || strcmp(got[i], got[m - 1]) != 0)
            memmove(got[m++], got[i], sizeof(got[0]));
    bool same = h->known && h->n == m;
    for (size_t i = 0; same && i < m; i++)
        same = strcmp(h->addrs[i], got[i]) == 0;
    if (same)
        return;
    memcpy(h->addrs, got, m * sizeof(got[0]));
    h->n = m;
    h->known = true;
    rete_info("externalName %s: %zu address(es), first %s", h->host, m, m ? h->addrs[0] : "-");
    reinstall(x);
}

static void resolve_all(uv_timer_t *t)
{
    rete_external *x = t->data;
    const rete_config *cfg = x->p->cfg;
    for (size_t i = 0; cfg && i < cfg->n_services; i++) {
        const rete_service *svc = &cfg->services[i];
        if (!is_dns_host(svc))
            continue;
        ext_host *h = find_host(x, svc->external_name, true);
        if (!h) {
            rete_warn("externalName %s: more than %d hosts, not resolved", svc->external_name,
                      RETE_EXTERNAL_HOSTS_MAX);
            continue;
        }
        if (h->pending)
            continue;
        ext_req *r = rete_calloc(1, sizeof(*r));
        r->x = x;
        r->host = (size_t)(h - x->hosts);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
        if (uv_getaddrinfo(x->p->loop, &r->req, on_resolved, h->host, NULL, &hints) != 0) {
            free(r);
            rete_metrics_inc(x->p->main_shard, x->p->ms.resolutions_error, 1);
            continue;
        }
        h->pending = true;
        x->in_flight++;
    }
    uint32_t every = cfg && cfg->proxy.external_refresh_ms ? cfg->proxy.external_refresh_ms : 30000;
    uv_timer_start(&x->timer, resolve_all, every, 0);
}

rete_external *rete_external_start(rete_proxy *p)
{
    rete_external *x = rete_calloc(1, sizeof(*x));
    x->p = p;
    uv_timer_init(p->loop, &x->timer);
    x->timer.data = x;
    uv_timer_start(&x->timer, resolve_all, 0, 0);
    return x;
}

static void on_timer_closed(uv_handle_t *h)
{
    rete_external *x = h->data;
    x->timer_closed = true;
    maybe_free(x);
}

void rete_external_stop(rete_external *x)
{
    if (!x || x->stopping)
        return;
    x->stopping = true;
    uv_close((uv_handle_t *)&x->timer, on_timer_closed);
}

/* Whether svc's endpoints are the table's addresses for its host. */
static bool endpoints_match(const rete_service *svc, const ext_host *h)
{
    size_t n = h ? h->n : 0;
    if (svc->n_endpoints != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(svc->endpoints[i]->address, h->addrs[i]) != 0)
            return false;
    return true;
}

rete_config *rete_external_apply(rete_external *x, rete_config *cfg)
{
    if (!x)
        return cfg;
    bool match = true;
    for (size_t i = 0; i < cfg->n_services && match; i++)
        if (is_dns_host(&cfg->services[i]))
            match = endpoints_match(&cfg->services[i], find_host(x, cfg->services[i].external_name, false));
    if (match)
        return cfg;
    rete_external_addrs ext[RETE_EXTERNAL_HOSTS_MAX];
    const char *ptrs[RETE_EXTERNAL_HOSTS_MAX][RETE_EXTERNAL_ADDRS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < x->n_hosts; i++) {
        const ext_host *h = &x->hosts[i];
        for (size_t k = 0; k < h->n; k++)
            ptrs[n][k] = h->addrs[k];
        ext[n] = (rete_external_addrs){.host = h->host, .addrs = ptrs[n], .n_addrs = h->n};
        n++;
    }
    rete_config_error err;
    rete_config *next = rete_config_rebuild(cfg, ext, n, &err);
    if (!next) {
        char msg[1024];
        rete_config_error_format(&err, msg, sizeof(msg));
        rete_err("externalName: cannot rebuild the configuration: %s", msg);
        return cfg;
    }
    rete_config_unref(cfg);
    return next;
}
